# A Redis that went back in time without changing its identity is
# repaired, also under an allkeys-* policy that evicts the generation
# marker (found by a review of issue 20's first memory-pressure code).
#
# The rule that code had: a missing generation marker on the same run_id and
# master_replid, under an allkeys-* policy, with evicted_keys grown since
# the worker connected, is "evicted": the marker is set again and nothing
# is resynced.  But DEBUG RELOAD (NOSAVE) replaces the whole dataset by an
# older snapshot in the same process: run_id, master_replid and the
# evicted_keys counter all stay.  A snapshot taken while the marker was
# missing (evicted, which is what the rule is for) holds older row values
# and no marker, so the worker finds the marker missing, counts it as an
# eviction and leaves the older rows in Redis: stale reads that never heal.
# This test asserts the correct outcome (a resync, Redis equal to the
# table); it failed on that code (markers.c now always resyncs).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis(
	args => [
		'--maxmemory-policy', 'allkeys-lru',
		'--enable-debug-command', 'yes'
	]);
my $rp = $redis->port;
# a long idle poll: the worker touches Redis only when we write
my $node = new_wtcache_node('review_marker', redis_port => $rp,
	extra_conf => "wtcache.poll_interval = '1h'\n");
my $db = 'postgres';
END { $redis->stop if $redis; }

sub sql { return $node->safe_psql($db, $_[0]); }

sub info_field
{
	my ($section, $field) = @_;
	my $info = redis_cmd($rp, 'INFO', $section);
	return $info =~ /^\Q$field\E:(\S+)/m ? $1 : undef;
}

my $marker = 'wtc:{postgres}:gen';
my $wal = "$marker:wal";

sql(q{CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL);
SELECT wtcache.watch('t');
CREATE TABLE other (id int PRIMARY KEY);
SELECT wtcache.watch('other');
INSERT INTO t SELECT i, 1 FROM generate_series(1, 20) i;});
ok(wait_drained($node, $db), 't delivered with n = 1');
is(redis_cmd($rp, 'EXISTS', $marker), 1, 'the marker is there');

# A snapshot of a moment the marker was missing (as evicted): rows n = 1.
redis_cmd($rp, 'RENAME', $marker, 'hidden:gen');
redis_cmd($rp, 'RENAME', $wal, 'hidden:wal');
redis_cmd($rp, 'SAVE');
redis_cmd($rp, 'RENAME', 'hidden:gen', $marker);
redis_cmd($rp, 'RENAME', 'hidden:wal', $wal);

sql(q{UPDATE t SET n = 2});
ok(wait_drained($node, $db), 'n = 2 delivered');
compare_table_ok($node, $db, 't', $rp, 'Redis holds n = 2');
my $resyncs0 = sql(q{SELECT resyncs FROM wtcache.worker_status()
  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});

# Memory pressure evicts some keys (junk in another database; wtcache's keys
# are used more recently, so they stay).
my $junk = 'x' x 20000;
redis_pipeline($rp, [ [ 'SELECT', '9' ], map { [ 'SET', "junk$_", $junk ] } 1 .. 300 ]);
is(sql(q{SELECT count(*) FROM t WHERE (wtcache.get('t', id::text)->>'n')::int = 2}), 20,
	'every row read, n = 2');
redis_cmd($rp, 'GET', $marker);
my $used = info_field('memory', 'used_memory');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', $used - 2_000_000);
redis_cmd($rp, 'PING');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', '0');
cmp_ok(info_field('stats', 'evicted_keys'), '>', 0, 'Redis evicted keys');
# (the marker may be among them: LRU's clock has a resolution of a second)
note('marker present after the evictions: ' . redis_cmd($rp, 'EXISTS', $marker));
my $run_id = info_field('server', 'run_id');

# The dataset goes back to the snapshot, in the same process.
redis_cmd($rp, 'DEBUG', 'RELOAD', 'NOSAVE');
is(info_field('server', 'run_id'), $run_id, 'DEBUG RELOAD keeps the run_id');
is(redis_cmd($rp, 'EXISTS', $marker), 0, 'the marker is missing after the reload');

# Any change makes the worker check the marker.
sql(q{INSERT INTO other VALUES (1)});
ok(wait_drained($node, $db), 'a change delivered after the reload');
note('marker evictions counted: '
	  . sql(q{SELECT redis_marker_evictions FROM wtcache.status WHERE table_name = 't'::regclass}));
cmp_ok(sql(q{SELECT resyncs FROM wtcache.worker_status()
  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'>', $resyncs0, 'a Redis that went back in time is resynced');
ok(wait_drained($node, $db), 'drained');
is(sql(q{SELECT count(*) FROM t WHERE (wtcache.get('t', id::text)->>'n')::int IS DISTINCT FROM 2}), 0,
	'no read returns the older n = 1');
compare_table_ok($node, $db, 't', $rp, 'Redis equals t');

$node->stop;
done_testing();
