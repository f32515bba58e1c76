# Redis ahead of the database: a failover to an asynchronous standby that
# missed the last commits leaves Redis holding versions of commits the new
# primary never had.  The queue sequence cannot tell (it is WAL-logged 32
# values ahead, so the standby's last_value is past the lost ids); the WAL
# position recorded with the generation marker can: it is beyond the point
# where the new primary's timeline left the old one.  Its worker removes
# the keys and resyncs.  A plain restart, clean or after a crash, must not.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
# no timed checkpoint: one would WAL-log the sequence again in the middle
my $primary = new_wtcache_node('primary', redis_port => $rp,
	extra_conf => "wal_level = replica\nmax_wal_senders = 4\ncheckpoint_timeout = '1h'\n");
my $db = 'postgres';

my $ahead_log = qr/from commits this server does not have/;
my $repair_log = qr/wtcache: Redis at \S+ lost data/;

sub resyncs
{
	my ($node) = @_;
	return $node->safe_psql($db, q{SELECT resyncs FROM wtcache.worker_status()
		WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

# After a restart: a change is delivered (so the worker checked the
# markers after the call), and no repair was logged or counted.
sub no_repair_after
{
	my ($node, $offset, $what, $id) = @_;
	$node->safe_psql($db, "UPDATE t SET v = '$what' WHERE id = $id");
	ok(wait_drained($node, $db), "$what: a change is delivered");
	my $log = slurp_file($node->logfile, $offset);
	unlike($log, $repair_log, "$what: the worker repaired nothing");
	unlike($log, $ahead_log, "$what: Redis is not taken to be ahead");
	is(resyncs($node), '0', "$what: no resync counted");
	like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 't', $id)), qr/"v":"\Q$what\E"/,
		"$what: Redis has the change");
}

$primary->safe_psql($db, q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v1' FROM generate_series(1, 10) i;
});
ok(wait_drained($primary, $db), 'first rows delivered');
my $marker = 'wtc:{postgres}:gen';
like(redis_cmd($rp, 'GET', "$marker:wal"), qr{^\d+/1/[0-9A-F]+/[0-9A-F]+$},
	'the marker records where in WAL history it was raised');

#### Restarts: Redis is never ahead, nothing is repaired

my $offset = -s $primary->logfile;
$primary->restart;
no_repair_after($primary, $offset, 'after a clean restart', 3);

$primary->safe_psql($db, q{SET synchronous_commit = off; UPDATE t SET v = 'async' WHERE id = 4});
ok(wait_drained($primary, $db), 'an asynchronous commit is delivered');
$offset = -s $primary->logfile;
$primary->stop('immediate');
$primary->start;
no_repair_after($primary, $offset, 'after an immediate stop', 4);

# The repairs' announcements: a near cache learns from them whether the
# versions it kept still mean anything.
my $sub = WtcacheTest::RedisConn->new($rp, timeout => 30);
$sub->command('SUBSCRIBE', 'wtc:events');
sub next_reset
{
	while (1)
	{
		my $m = eval { $sub->read_reply };
		return undef unless ref $m eq 'ARRAY';
		next unless $m->[0] eq 'message';
		my $e = decode_json($m->[2]);
		return $e if $e->{op} eq 'reset';
	}
}

# Redis lost everything while the server was down: one repair, and the
# positions it writes while it refills Redis are not taken for Redis ahead
# at the check after it.
$primary->stop;
redis_cmd($rp, 'FLUSHALL');
$offset = -s $primary->logfile;
$primary->start;
ok(wait_drained($primary, $db), 'after Redis lost everything: wait() returns');
ok(wait_drained($primary, $db), 'and again, after one more marker check');
is(resyncs($primary), '1', 'one resync');
unlike(slurp_file($primary->logfile, $offset), $ahead_log, 'Redis is not taken to be ahead');
compare_table_ok($primary, $db, 't', $rp, 'Redis equals the table');
my $reset = next_reset();
is($reset->{seq}, 1, 'the repair is announced, first in the numbering Redis lost');
ok(!exists $reset->{versions_restart}, 'versions go on from where they were');

#### A standby that misses the last commits

$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;

# The sequence is WAL-logged 32 values ahead at its first use after a
# checkpoint; the standby replays that record, and the next ids are taken
# without WAL of their own.
$primary->safe_psql($db, q{CHECKPOINT; INSERT INTO t VALUES (100, 'both')});
ok(wait_drained($primary, $db), 'a change both servers have is delivered');
$primary->wait_for_catchup($standby, 'replay');

# An asynchronous standby that falls behind: these commits never reach it.
# (Pausing its replay is not enough: promotion replays every WAL record it
# has already received.)
$standby->stop;
$primary->safe_psql($db, q{UPDATE t SET v = 'lost' WHERE id = 1});
$primary->safe_psql($db, q{INSERT INTO t VALUES (200, 'lost')});
$primary->safe_psql($db, q{DELETE FROM t WHERE id = 2});
ok(wait_drained($primary, $db), 'the primary delivered the commits the standby lacks');
like(redis_cmd($rp, 'GET', redis_key_of($primary, $db, 't', 1)), qr/"v":"lost"/,
	'Redis holds a commit the standby lacks');
my $gen = redis_cmd($rp, 'GET', $marker);

$primary->stop('immediate');
$standby->start;
$standby->promote;
ok($standby->poll_query_until($db, 'SELECT NOT pg_is_in_recovery()'), 'the standby is promoted');
is($standby->safe_psql($db, 'SELECT v FROM t WHERE id = 1'), 'v1',
	'the promoted standby does not have the lost commits');
cmp_ok($standby->safe_psql($db, 'SELECT last_value FROM wtcache.queue_id_seq'), '>=', $gen,
	"its queue sequence is past the marker ($gen): the sequence cannot tell");

#### The new primary's worker finds Redis ahead and repairs it

ok(wait_drained($standby, $db), 'wait() returns on the new primary');
ok($standby->poll_query_until($db, q{SELECT reads_use_redis FROM wtcache.worker_status()
	WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'cached reads use Redis');
like(slurp_file($standby->logfile), $ahead_log, 'the worker logs that Redis was ahead');
is(resyncs($standby), '1', 'and resyncs once');
is($standby->safe_psql($db, q{SELECT wtcache.get('t', '1')->>'v'}), 'v1',
	'get() of a key a lost commit updated returns the new primary\'s value');
is(redis_cmd($rp, 'EXISTS', redis_key_of($standby, $db, 't', 200)), 0,
	'a row only a lost commit inserted is gone from Redis');
is($standby->safe_psql($db, q{SELECT wtcache.get('t', '2')->>'v'}), 'v1',
	'a row a lost commit deleted is served again');
is($standby->safe_psql($db, q{SELECT count(*) FROM wtcache.verify('t')}), '0',
	'verify() finds no difference');
compare_table_ok($standby, $db, 't', $rp, 'Redis equals the new primary\'s table');
$reset = next_reset();
like($reset->{reason} // '', qr/WAL history/, 'the repair of Redis ahead is announced');
ok($reset->{versions_restart}, '... saying that versions start again lower');
$sub->close;
like(redis_cmd($rp, 'GET', "$marker:wal"), qr{^\d+/2/[0-9A-F]+/[0-9A-F]+$},
	'the marker now records the new timeline');

#### A crash of the promoted server: its own markers are on its history

$offset = -s $standby->logfile;
$standby->stop('immediate');
$standby->start;
no_repair_after($standby, $offset, 'after an immediate stop of the new primary', 5);

#### Positions this server cannot place, and one past its end of WAL

my $sysid = $standby->safe_psql($db, 'SELECT system_identifier FROM pg_control_system()');
my $n = 6;
foreach my $case (['another database system', '1/2/FFFFFFFF/0'],
	['no position at all', 'not/a/position'])
{
	my ($what, $pos) = @$case;
	$standby->stop;
	redis_cmd($rp, 'SET', "$marker:wal", $pos);
	$offset = -s $standby->logfile;
	$standby->start;
	no_repair_after($standby, $offset, "a marker position of $what", $n++);
}

# As after a restore from a file-level copy by crash recovery: the same
# timeline, but the marker was raised past where this server's WAL ends.
$standby->stop;
redis_cmd($rp, 'SET', "$marker:wal", "$sysid/2/FFFFFFFF/0");
$offset = -s $standby->logfile;
$standby->start;
$standby->safe_psql($db, q{UPDATE t SET v = 'past the end' WHERE id = 9});
ok(wait_drained($standby, $db), 'a marker raised past the end of WAL: wait() returns');
like(slurp_file($standby->logfile, $offset), $ahead_log, 'Redis is found ahead');
is(resyncs($standby), '1', 'and resynced');
compare_table_ok($standby, $db, 't', $rp, 'Redis equals the table');

$standby->stop;
done_testing();
