# Corners of cached queries found by the hostile review of narrowing
# (issue 19): a long IN list; an enum label renamed under a domain over a
# domain (the requeue found one level of types only, so entries over the
# table kept the old label); FOR UPDATE below the top level (cached, so
# hits returned rows without locking them).  The last two failed before
# their fixes.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $node = new_wtcache_node('query_corners', redis_port => $redis->port);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE members (id int PRIMARY KEY, org_id int NOT NULL, name text NOT NULL);
SELECT wtcache.watch('members', tags => ARRAY['org:{org_id}']);
INSERT INTO members SELECT i, 1 + i % 10, 'm' || i FROM generate_series(1, 200) i;
});
ok(wait_drained($node, $db), 'rows delivered');

#### a long IN list: not narrowed (more values than wtcache.max_tags_per_call),
#### and not rendered either: the analysis used to render and compare every
#### value with every other, minutes of a backend for a statement anyone
#### may send (the figures are in the closing note of issue 19)
my $in = join(',', 1 .. 150000);
is(sql("SELECT count(*) FROM wtcache.query('SELECT count(*) AS n FROM members WHERE org_id IN ($in)')"),
	'1', 'a query with a 150,000-value IN list runs');

#### stale: an enum label renamed under a domain over a domain
#
# ALTER TYPE ... RENAME VALUE changes the text of every row that holds the
# label, without a row change.  ddl.c requeue_tables_using_type() finds
# columns of the enum, of a domain over it or of an array of it, one
# level only: a column of a domain over a domain over the enum (or an
# array of such a domain, or a composite holding it) is not requeued, so
# neither its table tag nor its table-wide tag is bumped, and a narrowed
# entry (as any entry over the table) keeps serving the old label.
sql(q{
CREATE TYPE label AS ENUM ('a', 'b');
CREATE DOMAIN label_d1 AS label;
CREATE DOMAIN label_d2 AS label_d1;
CREATE TABLE labelled (id int PRIMARY KEY, org_id int NOT NULL, l label_d2 NOT NULL);
SELECT wtcache.watch('labelled', tags => ARRAY['org:{org_id}']);
INSERT INTO labelled VALUES (1, 1, 'a'), (2, 1, 'b');
});
ok(wait_drained($node, $db), 'labelled rows delivered');
my $lq = q{SELECT string_agg(l::text, ',' ORDER BY id) AS ls FROM labelled WHERE org_id = $1};
(my $lql = $lq) =~ s/'/''/g;
sub lcached { return sql("SELECT q->>'ls' FROM wtcache.query('$lql', ARRAY['1']) q"); }
is(lcached(), 'a,b', 'org 1 labels');
is(lcached(), 'a,b', '... cached');
sql(q{ALTER TYPE label RENAME VALUE 'a' TO 'z'});
ok(wait_drained($node, $db), 'the rename (and any requeue) delivered');
is(sql(q{SELECT string_agg(l::text, ',' ORDER BY id) FROM labelled WHERE org_id = 1}), 'z,b',
	'the table now reads z,b');
is(lcached(), 'z,b', 'the narrowed entry is not older than the rename');

#### wrong acceptance: FOR UPDATE below the top level is cached
#
# analyze_cacheable() refuses rowMarks of the top query only: FOR UPDATE
# (or FOR SHARE) in a sub-select, a CTE or a sublink runs, locks rows,
# and is cached; every hit then returns the rows without locking them,
# which the refusal ("Statements that write or lock rows ... cannot be
# cached") promises never happens.
my ($rc, $out, $err) = $node->psql($db,
	q{SELECT count(*) FROM wtcache.query('SELECT * FROM (SELECT * FROM members WHERE org_id = 1 FOR UPDATE) s')});
isnt($rc, 0, 'FOR UPDATE in a sub-select is refused like FOR UPDATE at the top');
like($err, qr/caches only plain SELECT/, '... with the same message');

$node->stop;
$redis->stop;
done_testing();
