# Narrowed cached queries (issue 19): a query() that restricts a watched
# table by equality on a tag template's columns depends on the rendered
# template tags and the table-wide tag, not on the table tag.  It stays a
# hit while other orgs are written, delivered or in flight; a change in its
# org, a row moved in or out, and every path that changes rows without a
# per-row tag (TRUNCATE, resync, invalidate() of the table tag, a requeue
# after ALTER TABLE, partition DETACH / DROP / TRUNCATE, a re-watch)
# invalidate it.  Then concurrent writers move rows between orgs while
# readers check every cached result against the history of their org.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $node = new_wtcache_node('narrow', redis_port => $redis->port);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }
sub qstat { return sql("SELECT $_[0] FROM wtcache.query_stats()"); }

sql(q{
CREATE TABLE members (id int PRIMARY KEY, org_id int NOT NULL, name text NOT NULL, v int NOT NULL DEFAULT 0);
SELECT wtcache.watch('members', tags => ARRAY['org:{org_id}']);
INSERT INTO members SELECT i, 1 + i % 10, 'm' || i FROM generate_series(1, 200) i;
});
ok(wait_drained($node, $db), 'initial rows delivered');

my $q = q{SELECT count(*) AS n, sum(v) AS v, string_agg(name, ',' ORDER BY id) AS names FROM members WHERE org_id = $1};
my $ql = $q =~ s/'/''/gr;
sub cached { return sql("SELECT q->>'n', q->>'v', q->>'names' FROM wtcache.query('$ql', ARRAY['$_[0]']) q"); }
sub direct { my $d = $q =~ s/\$1/$_[0]/r; return sql("SELECT n, v, names FROM ($d) d"); }

is(sql("SELECT array_to_string(tag_keys, ' ') FROM wtcache.query_key('$ql', ARRAY['1'])"),
	'wtc:{postgres}:tag:org%3A1 wtc:{postgres}:tag:tablewide%3Apublic.members',
	'the per-org query depends on its org tag and the table-wide tag');

#### a hit while other orgs are written

is(cached(1), direct(1), 'first call: the rows of org 1');
my $runs = qstat('runs');
my $hits = qstat('hits');
for my $i (1 .. 20)
{
	my $org = 2 + $i % 9;
	sql("UPDATE members SET v = v + 1 WHERE org_id = $org AND id % 7 = $i % 7");
	wait_drained($node, $db) or die "write $i to org $org was not delivered";
	cached(1);
}
is(qstat('runs') - $runs, 0, 'twenty writes to other orgs, each delivered: org 1 never ran again');
is(qstat('hits') - $hits, 20, '... twenty hits');

# writes to other orgs still on their way do not send it to the table
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
$node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1})
  or die 'the worker did not pause';
sql(q{UPDATE members SET v = v + 1 WHERE org_id IN (2, 3)});
is(sql(q{SELECT pending > 0 FROM wtcache.status WHERE table_name = 'members'::regclass}), 't',
	'changes of orgs 2 and 3 are pending');
$runs = qstat('runs');
is(cached(1), direct(1), 'org 1 while they are pending');
is(qstat('runs') - $runs, 0, '... is a hit, not a read of the table');
$runs = qstat('runs');
is(cached(2), direct(2), 'org 2 while its change is pending: the committed rows');
is(qstat('runs') - $runs, 1, '... read from the table');
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'delivery resumed');

#### what must invalidate it

# each event: run it, wait for delivery, then the cached result must be
# the table's, and computed again (member i is in org 1 + i % 10)
sub invalidated_by
{
	my ($what, $sql, @orgs) = @_;
	@orgs = (1) unless @orgs;
	cached($_) for @orgs;
	my $r = qstat('runs');
	cached($_) for @orgs;
	is(qstat('runs') - $r, 0, "$what: cached before");
	sql($sql);
	ok(wait_drained($node, $db), "$what: delivered");
	$r = qstat('runs');
	is(cached($_), direct($_), "$what: org $_ as in the table") for @orgs;
	is(qstat('runs') - $r, scalar(@orgs), "$what: computed again");
}

invalidated_by('a change in org 1', q{UPDATE members SET v = v + 1 WHERE id = 10});
invalidated_by('a row moved from org 1 to org 2', q{UPDATE members SET org_id = 2 WHERE id = 20}, 1, 2);
invalidated_by('a row moved from org 3 into org 1', q{UPDATE members SET org_id = 1 WHERE id = 32}, 1, 3);
invalidated_by('a delete in org 1', q{DELETE FROM members WHERE id = 40});
invalidated_by('an insert into org 1', q{INSERT INTO members VALUES (1001, 1, 'new', 0)});
invalidated_by('invalidate() of the table tag', q{SELECT wtcache.invalidate(ARRAY['table:public.members'])});
invalidated_by('invalidate() of the org tag', q{SELECT wtcache.invalidate(ARRAY['org:1'])});
invalidated_by('resync', q{SELECT wtcache.resync('members')});
invalidated_by('a requeue after ALTER TABLE', q{ALTER TABLE members ADD COLUMN note text});
invalidated_by('a re-watch', q{SELECT wtcache.watch('members', tags => ARRAY['org:{org_id}'])});
invalidated_by('TRUNCATE', q{TRUNCATE members});
is(cached(1), '0||', 'org 1 is empty after TRUNCATE');
invalidated_by('rows written back', q{INSERT INTO members SELECT i, 1 + i % 10, 'm' || i FROM generate_series(1, 200) i});

# a change its triggers did not see (they were disabled) reaches the
# entry when they are enabled again, which requeues the table
cached(1);
sql(q{ALTER TABLE members DISABLE TRIGGER ALL; UPDATE members SET v = v + 100 WHERE id = 50; ALTER TABLE members ENABLE TRIGGER ALL});
ok(wait_drained($node, $db), 'requeue after the triggers are enabled again delivered');
is(cached(1), direct(1), 'a change made with the triggers disabled is in the result');

#### a partitioned tree: the DDL that takes rows away invalidates narrowed entries

sql(q{
CREATE TABLE events (id int, org_id int, body text, PRIMARY KEY (org_id, id)) PARTITION BY LIST (org_id);
CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1);
CREATE TABLE events_2 PARTITION OF events FOR VALUES IN (2);
CREATE TABLE events_3 PARTITION OF events FOR VALUES IN (3);
SELECT wtcache.watch('events', tags => ARRAY['org:{org_id}']);
INSERT INTO events SELECT i, 1 + i % 3, 'e' || i FROM generate_series(1, 90) i;
});
ok(wait_drained($node, $db), 'events delivered');
my $eq = q{SELECT count(*) AS n FROM events WHERE org_id = $1};
sub ecached { return sql("SELECT q->>'n' FROM wtcache.query('$eq', ARRAY['$_[0]']) q"); }
is(sql("SELECT array_to_string(tag_keys, ' ') FROM wtcache.query_key('$eq', ARRAY['1'])"),
	'wtc:{postgres}:tag:org%3A1 wtc:{postgres}:tag:tablewide%3Apublic.events',
	'a query of the tree is narrowed');
for my $case ([ 'TRUNCATE of a partition', 'TRUNCATE events_1', 1 ],
	[ 'DETACH of a partition', 'ALTER TABLE events DETACH PARTITION events_2', 2 ],
	[ 'DROP of a partition', 'DROP TABLE events_3', 3 ])
{
	my ($what, $ddl, $org) = @$case;
	is(ecached($org), '30', "$what: org $org has its rows");
	my $r = qstat('runs');
	is(ecached($org), '30', "$what: ... cached");
	is(qstat('runs') - $r, 0, "$what: ... a hit");
	sql($ddl);
	ok(wait_drained($node, $db), "$what: delivered");
	is(ecached($org), '0', "$what: the cached result lost the partition's rows");
}

#### concurrent writers moving rows between orgs, readers checking every result

# Stamp rows (negative ids, one per org, never moved) count the
# transactions that changed the org; each writer transaction locks the
# stamps of the old and the new org (in id order, after its member row),
# and records, in an unwatched history, each org's members at its new
# stamp.  A cached result's stamp must be at least the stamp read just
# before the call, and its members those of the history at its stamp.
sql(q{
CREATE TABLE board (id int PRIMARY KEY, org_id int NOT NULL, v int NOT NULL DEFAULT 0);
CREATE TABLE history (org int, stamp int, ids text, PRIMARY KEY (org, stamp));
INSERT INTO board SELECT -o, o, 0 FROM generate_series(1, 8) o;
INSERT INTO board SELECT i, 1 + i % 8, 0 FROM generate_series(1, 120) i;
INSERT INTO history SELECT o, 0, (SELECT string_agg(id::text, ',' ORDER BY id) FROM board WHERE org_id = o AND id > 0)
  FROM generate_series(1, 8) o;
SELECT wtcache.watch('board', tags => ARRAY['org:{org_id}']);

CREATE PROCEDURE mover(n int) LANGUAGE plpgsql AS $$
DECLARE
  pid int; old int; new int;
BEGIN
  FOR i IN 1 .. n LOOP
    pid := 1 + floor(random() * 120)::int;
    new := 1 + floor(random() * 8)::int;
    SELECT org_id INTO old FROM board WHERE id = pid FOR UPDATE;
    PERFORM 1 FROM board WHERE id IN (-old, -new) ORDER BY id FOR UPDATE;
    UPDATE board SET org_id = new, v = v + 1 WHERE id = pid;
    UPDATE board SET v = v + 1 WHERE id IN (-old, -new);
    INSERT INTO history
      SELECT o, (SELECT v FROM board WHERE id = -o),
             (SELECT string_agg(id::text, ',' ORDER BY id) FROM board WHERE org_id = o AND id > 0)
        FROM (SELECT DISTINCT unnest(ARRAY[old, new]) AS o) os;
    COMMIT;
    -- a pace, not a wait: the worker delivers between moves, so that
    -- readers find orgs with nothing pending and read Redis
    PERFORM pg_sleep(0.002);
  END LOOP;
END $$;

CREATE FUNCTION check_reads(n int, OUT reads int, OUT stale int, OUT inconsistent int) LANGUAGE plpgsql AS $$
DECLARE
  k int; s0 int; s int; ids text; want text;
BEGIN
  reads := 0; stale := 0; inconsistent := 0;
  FOR i IN 1 .. n LOOP
    k := 1 + floor(random() * 8)::int;
    SELECT v INTO s0 FROM board WHERE id = -k;
    SELECT max((q->>'v')::int) FILTER (WHERE (q->>'id')::int < 0),
           string_agg(q->>'id', ',' ORDER BY (q->>'id')::int) FILTER (WHERE (q->>'id')::int > 0)
      INTO s, ids
      FROM wtcache.query('SELECT id, v FROM board WHERE org_id = $1', ARRAY[k::text]) q;
    reads := reads + 1;
    IF s IS NULL OR s < s0 THEN
      stale := stale + 1;
      RAISE WARNING 'stale: org % stamp % read before the call, % cached', k, s0, s;
    ELSE
      SELECT h.ids INTO want FROM history h WHERE h.org = k AND h.stamp = s;
      IF want IS DISTINCT FROM ids THEN
        inconsistent := inconsistent + 1;
        RAISE WARNING 'inconsistent: org % at stamp %: % cached, % in history', k, s, ids, want;
      END IF;
    END IF;
  END LOOP;
END $$;
});
ok(wait_drained($node, $db), 'board delivered');
is(sql(q{SELECT array_to_string(tag_keys, ' ') FROM wtcache.query_key('SELECT id, v FROM board WHERE org_id = $1', ARRAY['3'])}),
	'wtc:{postgres}:tag:org%3A3 wtc:{postgres}:tag:tablewide%3Apublic.board', 'the board query is narrowed');

my $hits0 = qstat('hits');
my @procs;
for my $w (1 .. 3)
{
	my ($out, $err) = ('', '');
	push @procs, [ "writer $w", \$out, \$err,
		IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', 'CALL mover(400)' ],
			'>', \$out, '2>', \$err) ];
}
for my $r (1 .. 3)
{
	my ($out, $err) = ('', '');
	push @procs, [ "reader $r", \$out, \$err,
		IPC::Run::start([ 'psql', '-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db),
			-c => "SELECT reads || ' ' || stale || ' ' || inconsistent FROM check_reads(400)" ],
			'>', \$out, '2>', \$err) ];
}
my ($reads, $stale, $inconsistent) = (0, 0, 0);
for my $p (@procs)
{
	my ($name, $out, $err, $h) = @$p;
	ok($h->finish, "$name finished") or diag($$err);
	next unless $name =~ /reader/;
	my ($n, $s, $i) = split / /, $$out;
	$reads += $n // 0;
	$stale += $s // 0;
	$inconsistent += $i // 0;
	diag($$err) if $$err =~ /stale|inconsistent/;
}
is($reads, 1200, 'every read checked');
is($stale, 0, 'no result older than what was committed before the call');
is($inconsistent, 0, 'every result is its org as some committed transaction left it');
# how many were hits depends on how the writers and readers interleave:
# shown, not asserted (the hits under writes are asserted above)
diag('hits among the checked reads: ' . (qstat('hits') - $hits0));
ok(wait_drained($node, $db), 'everything delivered');
is(sql(q{SELECT (SELECT string_agg(q->>'id', ',' ORDER BY (q->>'id')::int) FROM wtcache.query('SELECT id FROM board WHERE org_id = $1', ARRAY[o::text]) q)
                IS NOT DISTINCT FROM (SELECT string_agg(id::text, ',' ORDER BY id) FROM board WHERE org_id = o)
           FROM generate_series(1, 8) o GROUP BY 1}), 't', 'after the writers, every org as in the table');

$node->stop;
$redis->stop;
done_testing();
