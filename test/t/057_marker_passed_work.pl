# Live changes may pass long work (batch.c, claim_batch), and Redis losing
# the long work delivered after them is still noticed.  The generation
# marker holds the highest version Redis acknowledged, and a loss shows as
# a marker below it.  A batch of long work delivered after a live change
# with a higher queue id would not raise the marker: Redis losing it
# (restart from an older snapshot, failover to a replica that missed it)
# left the marker equal to what was acknowledged, no resync, and the rows
# it delivered lost: a DETACH PARTITION's removals never made, so the
# detached rows were served from Redis as if still in the table (found by
# a review; failed before such batches carried a new queue id as their
# version, raise_batch_version()).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('marker_passed', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO big SELECT i, 'v' || i FROM generate_series(1, 5000) i;
SELECT wtcache.watch('big');
CREATE TABLE pt (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (1) TO (101);
CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (101) TO (201);
INSERT INTO pt SELECT i, 'p' || i FROM generate_series(1, 200) i;
SELECT wtcache.watch('pt', warm => true);
CREATE TABLE live2 (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO live2 VALUES (1, 0);
SELECT wtcache.watch('live2', warm => true);
});
ok(wait_drained($node, $db), 'set up and delivered');
compare_table_ok($node, $db, 'pt', $rp, 'pt in Redis before the detach');

# Long work held back: a warm of big, then the requeue of a detach.
sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 10; SELECT pg_reload_conf();});
sql(q{SELECT wtcache.warm('big')});
sql(q{ALTER TABLE pt DETACH PARTITION pt2});

# A live change passes them: the marker is raised to its id.
my $k2 = redis_key_of($node, $db, 'live2', 1);
sql(q{UPDATE live2 SET v = 1 WHERE id = 1});
ok(poll_until(sub { (redis_cmd($rp, 'GET', $k2) // '') =~ /"v":1\}/ }), 'live change passed the long work');
is(sql(q{SELECT count(*) > 0 FROM wtcache.progress}), 't', 'long work still queued');
my $detached = redis_key_of($node, $db, 'pt', 150);
ok(defined redis_cmd($rp, 'GET', $detached), "the detach's tombstones are not delivered yet");

# Redis's state now, as a replica or a snapshot would keep it.
is(redis_cmd($rp, 'SAVE'), 'OK', 'snapshot taken');

# The long work is delivered and acknowledged (its rows leave the queue).
sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 0; SELECT pg_reload_conf();});
ok(wait_drained($node, $db, '120s'), 'long work delivered');
compare_table_ok($node, $db, 'big', $rp, 'big complete in Redis once delivered');

# Redis comes back with the snapshot: it lost acknowledged batches.
my $resyncs = q{SELECT resyncs FROM wtcache.worker_status()
                WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
my $r0 = sql($resyncs);
$redis->kill9;
$redis->start;
sql(q{UPDATE live2 SET v = 2 WHERE id = 1});
ok(poll_until(sub { (redis_cmd($rp, 'GET', $k2) // '') =~ /"v":2\}/ }), 'the worker delivers again');
ok(wait_drained($node, $db, '120s'), 'drained after the restart');

cmp_ok(sql($resyncs), '>', $r0, 'the worker noticed the lost batches and resynced');
compare_table_ok($node, $db, 'big', $rp, 'big in Redis equals the table after the loss');
compare_table_ok($node, $db, 'pt', $rp,
	'pt in Redis equals the table: no detached row served from Redis');

$node->stop;
$redis->stop;
done_testing();

END
{
	$redis->stop if $redis;
}
