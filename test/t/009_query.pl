# Tags and cached query results: wtcache.query() over watched tables is
# invalidated by any committed change to them (batch UPDATEs included) and
# never by a rolled-back one; tag templates invalidate old and new tags;
# wtcache.invalidate() is transactional; results are per role and never
# cached under row-level security; stampede and stale-fill protection.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('query', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub qstat
{
	my ($col) = @_;
	return sql("SELECT $col FROM wtcache.query_stats()");
}

sql(q{
CREATE TABLE org (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE member (id int PRIMARY KEY, org_id int NOT NULL, name text NOT NULL, score int NOT NULL DEFAULT 0);
SELECT wtcache.watch('org');
SELECT wtcache.watch('member', tags => ARRAY['org:{org_id}']);
INSERT INTO org SELECT i, 'org ' || i FROM generate_series(1, 3) i;
INSERT INTO member SELECT i, 1 + i % 3, 'member ' || i FROM generate_series(1, 300) i;
});
ok(wait_drained($node, $db), 'initial rows delivered');

my $q = q{SELECT o.name, count(*) AS members, sum(m.score) AS score
          FROM org o JOIN member m ON m.org_id = o.id
          WHERE o.id = $1 GROUP BY o.name};
my $ql = $q =~ s/'/''/gr;

sub cached { return sql("SELECT q->>'members', q->>'score', q->>'name' FROM wtcache.query('$ql', ARRAY['$_[0]']) q"); }

my ($entry, $tag_keys) = split /\|/, sql("SELECT key, array_to_string(tag_keys, ',') FROM wtcache.query_key('$ql', ARRAY['1'])");
my @tag_keys = split /,/, $tag_keys;
like($entry, qr/^wtc:\{postgres\}:query:[0-9a-f]{64}$/, 'query_key names the entry');
is_deeply(\@tag_keys,
	[ 'wtc:{postgres}:tag:org%3A1', 'wtc:{postgres}:tag:table%3Apublic.org', 'wtc:{postgres}:tag:tablewide%3Apublic.member' ],
	'the entry depends on its tables, found from the query itself: org by its table tag, member, restricted '
	  . 'to org 1 through the join, by its template tag and table-wide tag (040_narrow_queries.pl)');

#### hits and misses

my $runs0 = qstat('runs');
is(cached(1), '100|0|org 1', 'first call runs the query');
is(qstat('runs') - $runs0, 1, '... once');
is(cached(1), '100|0|org 1', 'second call');
is(qstat('runs') - $runs0, 1, '... is served from Redis');
is(qstat('hits'), 1, 'one hit counted');

# What an application in another language sees
my $h = redis_cmd($rp, 'HGETALL', $entry);
my %fields = @$h;
is_deeply(decode_json($fields{rows}), [ { name => 'org 1', members => 100, score => 0 } ],
	'the entry holds the rows as a JSON array');
is_deeply(decode_json($fields{tags}), \@tag_keys, 'and its tag keys');
my $stamps = join(',', map { redis_cmd($rp, 'GET', $_) } @tag_keys);
is($fields{versions}, $stamps, 'and the stamps of its tags: equal means valid');

#### invalidated by a change to either table, never by a rollback

sub entry_versions { return redis_cmd($rp, 'HGET', $entry, 'versions'); }

my $v0 = entry_versions();
sql(q{BEGIN; UPDATE member SET score = score + 1000; ROLLBACK});
sql(q{BEGIN; SAVEPOINT s; UPDATE org SET name = 'rolled back' WHERE id = 1; ROLLBACK TO s; COMMIT});
ok(wait_drained($node, $db), 'nothing to deliver');
is(entry_versions(), $v0, 'rolled-back changes (transaction, savepoint) leave the entry valid');
is(join(',', map { redis_cmd($rp, 'GET', $_) } @tag_keys), $stamps, 'and the tag stamps unchanged');
$runs0 = qstat('runs');
is(cached(1), '100|0|org 1', 'still served');
is(qstat('runs') - $runs0, 0, '... from Redis');

# A migration-style batch UPDATE from another session
sql(q{UPDATE member SET score = score + 1 WHERE org_id = 1});
ok(wait_drained($node, $db), 'delivered');
isnt(join(',', map { redis_cmd($rp, 'GET', $_) } @tag_keys), $stamps, 'the member table tag got a new stamp');
$runs0 = qstat('runs');
is(cached(1), '100|100|org 1', 'the result is computed again');
is(qstat('runs') - $runs0, 1, '... once');
is(cached(1), '100|100|org 1', 'and cached again');
is(qstat('runs') - $runs0, 1, '... served from Redis');

# Read right after the commit, whether or not the worker delivered it yet
sql(q{UPDATE org SET name = 'renamed' WHERE id = 1});
is(cached(1), '100|100|renamed', 'a change to the other table is seen at once');
sql(q{UPDATE member SET score = score + 1 WHERE id = 3});
is(cached(1), '100|101|renamed', 'and the next one too');
ok(wait_drained($node, $db), 'delivered');
is(cached(1), '100|101|renamed', 'after delivery');
$runs0 = qstat('runs');
is(cached(1), '100|101|renamed', 'cached again');
is(qstat('runs') - $runs0, 0, '... served from Redis');

# A change committed but not delivered (Redis down) is never hidden by the cache
$redis->stop;
sql(q{UPDATE member SET score = score + 1 WHERE id = 6});
is(cached(1), '100|102|renamed', 'Redis down: the query runs against the tables');
$redis->start;
ok(wait_drained($node, $db), 'backlog delivered after Redis came back');
is(cached(1), '100|102|renamed', 'and the cache serves the new result');

#### tag templates: a row moving from org 1 to org 2 invalidates both

my %tag = map { $_ => "wtc:{postgres}:tag:org%3A$_" } 1 .. 3;
sql(q{SELECT wtcache.invalidate(ARRAY['org:1', 'org:2', 'org:3'])});
ok(wait_drained($node, $db), 'invalidation delivered');
my %before = map { $_ => redis_cmd($rp, 'GET', $tag{$_}) } 1 .. 3;
ok(defined $before{$_}, "tag org:$_ has a stamp") for 1 .. 3;
sql(q{UPDATE member SET org_id = 2 WHERE id = 3});    # 3 % 3 = 0: org 1 -> 2
ok(wait_drained($node, $db), 'move delivered');
isnt(redis_cmd($rp, 'GET', $tag{1}), $before{1}, 'the old tag org:1 is invalidated');
isnt(redis_cmd($rp, 'GET', $tag{2}), $before{2}, 'the new tag org:2 is invalidated');
is(redis_cmd($rp, 'GET', $tag{3}), $before{3}, 'org:3 is not');

# a query that names a tag depends on it
my $tq = q{SELECT count(*) AS n FROM member WHERE org_id = 3};
my $tql = $tq =~ s/'/''/gr;
sub tagged { return sql("SELECT q->>'n' FROM wtcache.query('$tql', tags => ARRAY['org:3', 'reports']) q"); }
is(tagged(), '100', 'tagged query');
$runs0 = qstat('runs');
is(tagged(), '100', 'tagged query again');
is(qstat('runs') - $runs0, 0, '... cached');

#### invalidate(): transactional

sql(q{BEGIN; SELECT wtcache.invalidate(ARRAY['reports']); ROLLBACK});
ok(wait_drained($node, $db), 'nothing delivered');
$runs0 = qstat('runs');
is(tagged(), '100', 'after a rolled-back invalidate()');
is(qstat('runs') - $runs0, 0, '... the entry is still valid');

my $rstamp = redis_cmd($rp, 'GET', 'wtc:{postgres}:tag:reports');
my $inside = sql(q{BEGIN;
	SELECT 'invalidated' FROM wtcache.invalidate(ARRAY['reports']);
	SELECT runs FROM wtcache.query_stats();
	SELECT count(*) FROM wtcache.query('SELECT count(*) AS n FROM member WHERE org_id = 3', tags => ARRAY['reports']);
	SELECT runs FROM wtcache.query_stats();
	COMMIT;});
my @inside = split /\n/, $inside;
is($inside[3] - $inside[1], 1, 'inside the invalidating transaction the query is not served from the cache');
ok(wait_drained($node, $db), 'invalidation delivered');
isnt(redis_cmd($rp, 'GET', 'wtc:{postgres}:tag:reports'), $rstamp, 'commit gave the tag a new stamp');
$runs0 = qstat('runs');
is(tagged(), '100', 'after the invalidation');
is(qstat('runs') - $runs0, 1, '... the query ran again');

#### the events channel: invalidations and tagged row changes

my $sub = WtcacheTest::RedisConn->new($rp, timeout => 5);
$sub->command('SUBSCRIBE', 'wtc:events');
sql(q{UPDATE member SET org_id = 3 WHERE id = 3});
ok(wait_drained($node, $db), 'delivered');
sql(q{SELECT wtcache.invalidate(ARRAY['reports', 'org:7'])});
ok(wait_drained($node, $db), 'delivered');
my (@rows, @inv);
while (@rows < 1 || @inv < 2)
{
	my $m = eval { $sub->read_reply };
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	my $e = decode_json($m->[2]);
	if (exists $e->{key}) { push @rows, $e; } else { push @inv, $e; }
}
$sub->close;
is_deeply([ sort @{ $rows[0]{tags} } ], [ 'org:2', 'org:3', 'table:public.member' ],
	'a row event carries the tags of its old and new row and its table');
is_deeply([ sort @{ $inv[0]{tags} } ], [ 'org:2', 'org:3', 'table:public.member' ],
	'the batch publishes one invalidation listing them');
is_deeply([ sort @{ $inv[1]{tags} } ], [ 'org:7', 'reports' ], 'invalidate() is published too');

#### a hit returns exactly the rows the query returns, whatever they hold

sql(<<'SQL');
CREATE TABLE odd (id int PRIMARY KEY, t text, j jsonb, a int[]);
SELECT wtcache.watch('odd');
INSERT INTO odd VALUES
  (1, 'brackets ] } , [ { and "quotes" \ backslash', '{"x": [1, {"y": "]"}], "z": "a,b"}', '{1,2}'),
  (2, NULL, '[]', '{}'),
  (3, E'new\nline \u00e9', 'null', NULL);
SQL
ok(wait_drained($node, $db), 'delivered');
my $oq = q{SELECT * FROM odd ORDER BY id};
my $direct = sql(q{SELECT to_jsonb(o)::text FROM odd o ORDER BY id});
my $miss = sql(qq{SELECT q::text FROM wtcache.query('$oq') q});
$runs0 = qstat('runs');
my $hit = sql(qq{SELECT q::text FROM wtcache.query('$oq') q});
is(qstat('runs') - $runs0, 0, 'served from Redis');
is($hit, $direct, 'a hit returns the rows as the query does (strings with brackets, quotes, nested JSON)');
is($miss, $direct, 'and so does the call that ran it');
is(sql(q{SELECT count(*) FROM wtcache.query('SELECT * FROM odd WHERE id < 0')}), '0', 'an empty result');
is(sql(q{SELECT count(*) FROM wtcache.query('SELECT * FROM odd WHERE id < 0')}), '0', 'an empty result, cached');

#### unwatched tables

sql(q{CREATE TABLE plain (id int PRIMARY KEY, v text); INSERT INTO plain VALUES (1, 'one')});
my ($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.query('SELECT v FROM plain')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/55000.*which wtcache does not watch.*HINT:.*wtcache\.watch\('public\.plain'\).*ttl/s,
	'reading an unwatched table is an error with a hint');
is(sql(q{SELECT q->>'v' FROM wtcache.query('SELECT v FROM plain', ttl => '1 minute') q}), 'one',
	'with an explicit ttl it is cached for that time');
my ($pkey) = sql(q{SELECT key FROM wtcache.query_key('SELECT v FROM plain')});
my $pttl = redis_cmd($rp, 'PTTL', $pkey);
ok($pttl > 50_000 && $pttl <= 66_000, "its TTL is the minute, with jitter ($pttl ms)");

($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.query('UPDATE plain SET v = v')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/0A000.*only plain SELECT/s, 'a write is refused');
($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.query('SELECT random() FROM org')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/0A000.*volatile/s, 'a volatile function is refused');
($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.query('SELECT * FROM org WHERE id = $1', ARRAY['1', '2'])},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/22023.*1 parameter, but 2 values/s, 'a wrong parameter count is refused');
($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.query('SELECT 1; SELECT 2')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/22023.*exactly one statement/s, 'several statements are refused');

#### roles: per-role entries, privileges on every call, no caching under RLS

sql(q{
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
CREATE VIEW my_members AS SELECT m.* FROM member m JOIN org o ON o.id = m.org_id
  WHERE o.name = 'org ' || current_user::text;
GRANT SELECT ON my_members TO alice, bob;
INSERT INTO org VALUES (10, 'org alice'), (11, 'org bob');
INSERT INTO member VALUES (1001, 10, 'a1'), (1002, 10, 'a2'), (1003, 11, 'b1');
});
ok(wait_drained($node, $db), 'delivered');
my $vq = q{SELECT q->>'name' FROM wtcache.query('SELECT name FROM my_members ORDER BY name') q};
is(sql("SET ROLE alice; $vq"), "a1\na2", 'alice sees her rows') for 1 .. 2;
is(sql("SET ROLE bob; $vq"), "b1", 'bob, same query text, sees his rows, not alice\'s cached result') for 1 .. 2;
isnt(sql(q{SET ROLE alice; SELECT key FROM wtcache.query_key('SELECT name FROM my_members ORDER BY name')}),
	sql(q{SET ROLE bob; SELECT key FROM wtcache.query_key('SELECT name FROM my_members ORDER BY name')}),
	'the entries are per role');
is(sql(q{SET ROLE alice; SELECT array_to_string(tag_keys, ',') FROM wtcache.query_key('SELECT name FROM my_members')}),
	'wtc:{postgres}:tag:table%3Apublic.member,wtc:{postgres}:tag:table%3Apublic.org',
	'dependencies are found through the view');

sql(q{REVOKE SELECT ON my_members FROM bob});
($ret, $out, $err) = $node->psql($db, "SET ROLE bob; $vq", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501/, 'a revoked privilege applies to the cached result at once');

sql(q{CREATE FUNCTION member_total() RETURNS bigint STABLE SECURITY DEFINER LANGUAGE sql AS 'SELECT count(*) FROM member';
      REVOKE EXECUTE ON FUNCTION member_total() FROM PUBLIC;
      GRANT EXECUTE ON FUNCTION member_total() TO alice;});
# a STABLE SQL function is opaque to query(): the DBA vouches for these two
# (their results depend on their arguments and the member table only)
sql(q{ALTER DATABASE postgres SET wtcache.query_safe_functions = 'public.member_total, public.slow_count(integer)'});
my $fq0 = q{SELECT q->>'n' FROM wtcache.query('SELECT member_total() AS n', tags => ARRAY['members']) q};
my $total = sql(q{SELECT count(*) FROM member});
is(sql("SET ROLE alice; $fq0"), $total, 'alice may call the function') for 1 .. 2;
sql(q{REVOKE EXECUTE ON FUNCTION member_total() FROM alice});
($ret, $out, $err) = $node->psql($db, "SET ROLE alice; $fq0", extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501.*member_total/s, 'a revoked EXECUTE applies to the cached result at once');

sql(q{
CREATE TABLE note (id int PRIMARY KEY, owner text NOT NULL, body text);
SELECT wtcache.watch('note');
INSERT INTO note VALUES (1, 'alice', 'for alice'), (2, 'bob', 'for bob');
ALTER TABLE note ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON note USING (owner = current_user);
GRANT SELECT ON note TO alice, bob;
});
ok(wait_drained($node, $db), 'delivered');
my $nq = q{SELECT q->>'body' FROM wtcache.query('SELECT body FROM note ORDER BY id') q};
is(sql($nq), "for alice\nfor bob", 'the owner sees every note');
my $bypass0 = qstat('bypasses');
is(sql("SET ROLE alice; $nq"), 'for alice', 'under row-level security alice sees hers');
is(sql("SET ROLE bob; $nq"), 'for bob', 'and bob his');
is(qstat('bypasses') - $bypass0, 2, 'queries under row-level security are not cached');

#### stampede: concurrent misses run the query once

sql(q{CREATE FUNCTION slow_count(int) RETURNS bigint STABLE LANGUAGE sql
      AS $$ SELECT count(*) FROM member, pg_sleep(0.5) WHERE org_id = $1 $$});
my $sq = q{SELECT wtcache.query('SELECT slow_count(2) AS n')->>'n'};
$runs0 = qstat('runs');
my @crowd = map { $node->background_psql($db) } 1 .. 5;
for my $s (@crowd)
{
	$s->query_safe(q{SET wtcache.fill_wait = '20s'});
	$s->query_until(qr/go\n/, "\\echo go\n$sq;\n");
}
my @answers = map { $_->query_until(qr/done\n/, "\\echo done\n") } @crowd;
my $expect = sql(q{SELECT count(*) FROM member WHERE org_id = 2});
is(scalar(grep { /^$expect$/m } @answers), 5, 'five concurrent callers got the result');
is(qstat('runs') - $runs0, 1, 'the query ran once for five concurrent misses');
$_->quit for @crowd;

#### a fill never stores a result older than an invalidation it missed

my $fq = q{SELECT count(*) AS n FROM member WHERE org_id = 1};
my ($fkey) = sql(qq{SELECT key FROM wtcache.query_key('$fq')});
redis_cmd($rp, 'DEL', $fkey);
my $filler = $node->background_psql($db);
$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
my $n1 = sql($fq);
$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.query('$fq')->>'n';\n");
my $lease = 0;
for (1 .. 300) { if (redis_cmd($rp, 'EXISTS', "$fkey:l")) { $lease = 1; last; } usleep(10_000); }
ok($lease, 'the filler holds the lease');
usleep(300_000);    # it has run the query and now waits before storing
sql(q{INSERT INTO member VALUES (2001, 1, 'late')});
ok(wait_drained($node, $db), 'the insert was delivered while the fill was held');
my $rej0 = qstat('fills_rejected');
my $fout = $filler->query_until(qr/finished\n/, "\\echo finished\n");
like($fout, qr/^$n1$/m, 'the racing caller got the result of its own snapshot');
is(qstat('fills_rejected') - $rej0, 1, 'its fill was refused: a tag changed after it read the stamps');
is(redis_cmd($rp, 'EXISTS', $fkey), 0, 'nothing was stored');
is(sql(qq{SELECT wtcache.query('$fq')->>'n'}), $n1 + 1, 'the next call sees the insert');
$filler->quit;

#### a tag whose key vanished (eviction) never revives an old entry

my $ek = sql(qq{SELECT key FROM wtcache.query_key('$fq')});
sql(qq{SELECT wtcache.query('$fq')});
my $old_versions = redis_cmd($rp, 'HGET', $ek, 'versions');
my ($first_tag) = split /,/, sql(qq{SELECT array_to_string(tag_keys, ',') FROM wtcache.query_key('$fq')});
is($first_tag, 'wtc:{postgres}:tag:org%3A1', 'the entry depends on the tag of org 1');
redis_cmd($rp, 'DEL', $first_tag);
$runs0 = qstat('runs');
sql(qq{SELECT wtcache.query('$fq')});
is(qstat('runs') - $runs0, 1, 'a missing tag key turns the entry into a miss');
isnt(redis_cmd($rp, 'HGET', $ek, 'versions'), $old_versions, 'and the refill records a new stamp');

$node->stop;
done_testing();
