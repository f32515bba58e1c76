# Redis outages: writes keep committing without waiting for Redis, wait()
# reports false, status shows the worker disconnected; when Redis comes
# back (empty, or with its data) everything committed meanwhile is
# delivered, and an empty Redis is refilled on the worker's own initiative
# (generation marker).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

# AOF with appendfsync always: a kill -9 or a stop keeps the data unless
# the test wipes it.
my $redis = start_redis(appendonly => 1);
my $rp = $redis->port;
my $node = new_wtcache_node('outage', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub row_in_redis
{
	my ($id, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $want = row_json($node, $db, 't', "id = $id");
	my $got = redis_cmd($rp, 'GET', redis_key_of($node, $db, 't', $id));
	my ($v, $rest) = redis_row_version($got);
	is(defined $v ? '{' . $rest : $got, $want, $name);
	return;
}

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0,
                at timestamptz NOT NULL DEFAULT now());
SELECT wtcache.watch('t');
INSERT INTO t (id, v) SELECT i, 'v' || i FROM generate_series(1, 1000) i;
});
ok(wait_drained($node, $db), 'initial 1000 rows delivered');
compare_table_ok($node, $db, 't', $rp, 'Redis matches before any outage');

# Writes with Redis down: each transaction must commit under a 5 s
# statement_timeout, i.e. nothing waits for Redis.
sub write_while_down
{
	my ($round, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @failures;
	my $max = 0;
	for my $i (1 .. 20)
	{
		my $new = $round * 100000 + $i;
		my $del = ($round - 1) * 20 + $i;    # rows 1..60 over 3 rounds
		my $upd = 200 + ($round - 1) * 100;  # a slice of 100 rows per round
		my $t0 = time();
		my ($ret, $out, $err) = $node->psql(
			$db, qq{SET statement_timeout = '5s';
BEGIN;
INSERT INTO t (id, v) VALUES ($new, 'inserted in round $round');
UPDATE t SET n = n + 1, v = 'round $round txn $i'
 WHERE id BETWEEN $upd AND $upd + 99 AND id % 20 = $i % 20;
DELETE FROM t WHERE id = $del;
COMMIT;},
			timeout => 60);
		my $elapsed = time() - $t0;
		$max = $elapsed if $elapsed > $max;
		push @failures, "transaction $i: psql exit $ret: $err" if $ret != 0;
	}
	is(scalar @failures, 0, "$label: 20 write transactions committed while Redis is down")
	  or diag(join("\n", @failures));
	cmp_ok($max, '<', 5, "$label: the slowest write transaction took under 5 s");
	note(sprintf('%s: slowest write transaction %.3f s', $label, $max));

	my $upd = 200 + ($round - 1) * 100;
	my ($ret, $out, $err) = $node->psql($db, qq{SET statement_timeout = '5s';
UPDATE t SET n = n + 10 WHERE id BETWEEN $upd AND $upd + 99;},
		timeout => 60);
	is($ret, 0, "$label: a 100-row UPDATE committed while Redis is down") or diag($err);
	return;
}

sub check_down
{
	my ($label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $t0 = time();
	is(sql(q{SELECT wtcache.wait('500ms')}), 'f', "$label: wait('500ms') returns false while Redis is down");
	cmp_ok(time() - $t0, '<', 10, "$label: wait('500ms') returned promptly");
	ok($node->poll_query_until($db,
			q{SELECT NOT connected FROM wtcache.status WHERE table_name = 't'::regclass}),
		"$label: wtcache.status shows connected = false");
	is(sql(q{SELECT coalesce(bool_or(connected), false) FROM wtcache.worker_status()}), 'f',
		"$label: worker_status() shows connected = false");
	cmp_ok(sql(q{SELECT pending FROM wtcache.status WHERE table_name = 't'::regclass}),
		'>', 0, "$label: changes are pending in wtcache.status");
	cmp_ok(sql('SELECT count(*) FROM wtcache.queue'), '>', 0, "$label: wtcache.queue holds the changes");
	return;
}

#### 1. Redis stops, comes back empty

$redis->stop;
write_while_down(1, 'outage 1 (Redis stopped)');
check_down('outage 1');

# (DBSIZE right after the restart would race with the worker refilling it:
# the worker's own finding that the marker is gone shows Redis came back empty)
my $empty_offset = -s $node->logfile;
$redis->restart(keep_data => 0);
ok($node->wait_for_log(qr/lost data \(generation marker missing\)/, $empty_offset),
	'Redis restarted empty (the worker found its generation marker gone)');
ok(wait_drained($node, $db, '60s'), 'outage 1: wait() returns true once Redis is back (empty)');
compare_table_ok($node, $db, 't', $rp, 'outage 1: Redis refilled from empty matches the table');
row_in_redis(900, 'row 900, untouched during the outage, is back in the emptied Redis');
row_in_redis(250, 'row 250, updated during the outage, has its latest value');
is(redis_cmd($rp, 'GET', redis_key_of($node, $db, 't', 5)), undef,
	'row 5, deleted during the outage, is absent');
ok(scalar @{ redis_scan_keys($rp, 'wtc:{*}:gen') } >= 1, 'the generation marker is back in Redis');
ok($node->poll_query_until($db, 'SELECT count(*) = 0 FROM wtcache.queue'), 'outage 1: queue drained');

#### 2. Redis killed (kill -9), comes back with its data (AOF)

$redis->kill9;
write_while_down(2, 'outage 2 (Redis killed)');
check_down('outage 2');
$redis->start;
cmp_ok(redis_cmd($rp, 'DBSIZE'), '>', 900, 'Redis restarted with its data');
ok(wait_drained($node, $db, '60s'), 'outage 2: wait() returns true once Redis is back with its data');
compare_table_ok($node, $db, 't', $rp, 'outage 2: Redis matches after restart with its data');
row_in_redis(350, 'row 350, updated during outage 2, has its latest value');

#### 3. Redis stopped cleanly, restarted with its data

$redis->stop;
write_while_down(3, 'outage 3 (Redis stopped, data kept)');
check_down('outage 3');
$redis->start;
ok(wait_drained($node, $db, '60s'), 'outage 3: wait() returns true once Redis is back');
compare_table_ok($node, $db, 't', $rp, 'outage 3: Redis matches after restart with its data');

#### After the outages the worker is healthy

is(sql(q{SELECT connected FROM wtcache.status WHERE table_name = 't'::regclass}), 't',
	'wtcache.status shows connected = true again');
sql(q{UPDATE t SET v = 'after the outages' WHERE id = 999});
ok(wait_drained($node, $db, '30s'), 'a new change is delivered after the outages');
row_in_redis(999, 'row 999 has its post-outage value');

$node->stop;
done_testing();
