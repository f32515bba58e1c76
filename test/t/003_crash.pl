# Crashes while draining a large backlog: the delivery worker is killed
# with SIGKILL (the postmaster reinitialises), later the whole server stops
# in immediate mode; nothing committed is lost or delivered out of order.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
# Small batches make the drain take long enough to be interrupted.
my $node = new_wtcache_node('crash', redis_port => $rp,
	extra_conf => 'wtcache.batch_size = 200');
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }
sub queued { return sql('SELECT count(*) FROM wtcache.queue'); }

sql(q{
CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text);
SELECT wtcache.watch('big');
});
ok(wait_drained($node, $db, '30s'), 'queue empty');
ok(defined wait_for_worker($node, $db), 'delivery worker running before the backlog is written');

#### A backlog of ~210k changes with Redis down

$redis->stop;
my $t0 = time();
sql(q{INSERT INTO big SELECT i, 0, repeat('x', 20) || i FROM generate_series(1, 100000) i});
sql(q{UPDATE big SET v = v + 1});
sql(q{DELETE FROM big WHERE id % 10 = 0});
note(sprintf('backlog written in %.1f s', time() - $t0));
my $pending = sql(q{SELECT pending FROM wtcache.status WHERE table_name = 'big'::regclass});
cmp_ok($pending, '>=', 200000, "backlog of $pending changes queued while Redis is down");

#### Redis back (empty); SIGKILL the worker while it drains

my $pid1 = worker_pid($node, $db);
ok(defined $pid1, 'delivery worker is running (worker_status gives its pid)');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE pid = } . ($pid1 // 0)), '1',
	'the worker pid is a live server process');

$redis->start;
# Kill once the worker has written a few thousand keys, well before all
# 90,000 rows are in.
my $deadline = time() + 120;
my $dbsize = 0;
while (time() < $deadline)
{
	$dbsize = redis_cmd($rp, 'DBSIZE');
	last if $dbsize >= 2000;
	usleep(2_000);
}
cmp_ok($dbsize, '>=', 2000, 'worker started delivering to Redis');
# (Read the pid again: the worker may have been restarted meanwhile.)
$pid1 = worker_pid($node, $db) // 0;
my $log_offset = -s $node->logfile;
ok($pid1 && kill('KILL', $pid1), "SIGKILL sent to the delivery worker (pid $pid1)");
my $keys_at_kill = redis_cmd($rp, 'DBSIZE');
note("killed the worker with $keys_at_kill keys in Redis");
cmp_ok($keys_at_kill, '<', 90000, 'the worker was killed before it had delivered every row');

$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
pass('postmaster reinitialised after the worker was killed');
ok($node->poll_query_until($db, 'SELECT 1', '1'), 'server accepts connections after the crash');
ok($node->poll_query_until($db,
		q{SELECT count(*) > 0 FROM wtcache.worker_status() WHERE pid IS NOT NULL AND pid <> } . $pid1),
	'a new delivery worker started after the crash');

#### More changes; stop in immediate mode while draining again

sql(q{UPDATE big SET v = v + 1, pad = 'second pass' WHERE id % 2 = 0});
my $queued_after_update = queued();
$deadline = time() + 120;
my $q = $queued_after_update;
while (time() < $deadline)
{
	$q = queued();
	last if $q < $queued_after_update;
	usleep(20_000);
}
cmp_ok($q, '<', $queued_after_update, 'worker is draining again');
cmp_ok($q, '>', 0, 'queue not yet empty when the server is stopped');
note("immediate stop with $q queue rows left");
$node->stop('immediate');
$node->start;
pass('server restarted after an immediate stop');

ok(wait_drained($node, $db, '300s'), 'wait() returns true after both crashes');
compare_table_ok($node, $db, 'big', $rp, 'Redis matches the table after both crashes');
ok($node->poll_query_until($db, 'SELECT count(*) = 0 FROM wtcache.queue'), 'queue drained');

# Every surviving row carries the results of both updates.
is(sql(q{SELECT count(*) FROM big WHERE v <> CASE WHEN id % 2 = 0 THEN 2 ELSE 1 END}),
	'0', 'the table itself holds both updates');
my $k = redis_key_of($node, $db, 'big', 4);
like(redis_cmd($rp, 'GET', $k), qr/"v":2,"pad":"second pass"/, 'row 4 in Redis has the latest update');
is(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'big', 10)), undef, 'deleted row 10 is absent');

# A change after all this is still delivered.
sql(q{UPDATE big SET v = 100 WHERE id = 1});
ok(wait_drained($node, $db, '30s'), 'a new change is delivered after the crashes');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'big', 1)), qr/"v":100,/, 'row 1 has its new value');

#### Redis ahead of the database (as after restoring it from a backup)

# Versions this database never handed out: the marker, a row, a tombstone.
my $future = 10_000_000_000;
my $k2 = redis_key_of($node, $db, 'big', 2);
my $k3 = redis_key_of($node, $db, 'big', 3);
my $marker = redis_cmd($rp, 'KEYS', 'wtc:{postgres}:gen')->[0];
$node->stop;
redis_cmd($rp, 'SET', $marker, $future);
redis_cmd($rp, 'SET', $k2, qq({"_v":$future,"id":2,"v":-1,"pad":"from the future"}));
redis_cmd($rp, 'DEL', $k3);
redis_cmd($rp, 'SET', "$k3:t", $future);
$log_offset = -s $node->logfile;
$node->start;
$node->wait_for_log(qr/held versions this database never handed out/, $log_offset);
pass('the worker noticed versions from the future');
# wait() fences what is queued when it is called: let the resync be queued
$node->wait_for_log(qr/it was restored or recreated\); removed \d+ keys it kept and queued \d+ rows/, $log_offset);
ok(wait_drained($node, $db, '300s'), 'resync delivered');
compare_table_ok($node, $db, 'big', $rp, 'Redis matches the table again');
sql(q{UPDATE big SET v = 7 WHERE id IN (2, 3)});
ok(wait_drained($node, $db, '30s'), 'changes after it are delivered');
like(redis_cmd($rp, 'GET', $k2), qr/"v":7,/, 'a row that had a future version takes new changes');
like(redis_cmd($rp, 'GET', $k3), qr/"v":7,/, 'a row that had a future tombstone takes new changes');
is(sql(q{SELECT wtcache.get('big', '2')->>'v'}), '7', 'and reads return them');

$node->stop;
done_testing();
