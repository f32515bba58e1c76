# wait() means "Redis now holds everything committed before the call", also
# when Redis lost data the worker has not noticed yet.  The worker's idle
# marker check is slowed to once a minute, so only wait() itself can make
# it look: a fence that trusted the empty queue alone returns at once,
# with the keys gone.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;
use RedisTopology;    # set_delivery_paused

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('fence', redis_port => $rp,
	extra_conf => "wtcache.poll_interval = 60000\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 2000) i;
});
ok(wait_drained($node, $db), 'the rows are delivered');
compare_table_ok($node, $db, 't', $rp, 'Redis matches the table');

#### Redis emptied behind the worker's back

# a near cache fed by the events channel must learn that everything went
my $sub = WtcacheTest::RedisConn->new($rp, timeout => 30);
is($sub->command('SUBSCRIBE', 'wtc:events')->[0], 'subscribe', 'subscribed to the events');

for my $round (1 .. 3)
{
	my $offset = -s $node->logfile;
	redis_cmd($rp, 'FLUSHALL');
	ok(wait_drained($node, $db, '120s'), "round $round: wait() returns true after the FLUSHALL");
	my $reset;
	while (!defined $reset)
	{
		my $m = eval { $sub->read_reply };
		last unless ref $m eq 'ARRAY';
		next unless $m->[0] eq 'message';
		$reset = $m->[2] if $m->[2] =~ /"op":"reset"/;
	}
	like($reset // '', qr/^\{"seq":\d+,"db":"postgres","op":"reset","v":\d+,"reason":"generation marker missing"\}$/,
		"round $round: the repair announced that every key of the database was removed");
	compare_table_ok($node, $db, 't', $rp, "round $round: and Redis then holds every row");
	like(slurp_file($node->logfile, $offset), qr/generation marker missing/,
		"round $round: because the worker looked, found the marker missing and resynced");
}

$sub->close;

#### Redis restarted empty, with a change committed just before

sql(q{UPDATE t SET v = 'after' WHERE id <= 10});
$redis->restart(keep_data => 0);
ok(wait_drained($node, $db, '120s'), 'wait() returns true after Redis came back empty');
compare_table_ok($node, $db, 't', $rp, 'and Redis holds every row, the update included');

#### What wait() does not fence

is(sql(q{
BEGIN;
INSERT INTO t VALUES (100001, 'mine, not committed');
SELECT wtcache.wait('30s');
ROLLBACK;
}), 't', "the caller's own uncommitted changes are not waited for");

ok(set_delivery_paused($node, $db, 1), 'delivery paused');
is(sql(q{SELECT wtcache.wait('300ms')}), 'f',
	'with delivery paused the fence cannot be confirmed, even with nothing queued');
ok(set_delivery_paused($node, $db, 0), 'delivery resumed');
ok(wait_drained($node, $db), 'and wait() holds again');

$node->stop;
done_testing();
