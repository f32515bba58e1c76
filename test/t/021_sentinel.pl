# Redis Sentinel: a master, a replica and a Sentinel on loopback.  The
# worker and the reads find the master through the Sentinel; a failover in
# the middle of a write load loses nothing and the worker follows it; and
# after a failover to a replica that missed writes, reads never serve what
# it missed (the generation marker is behind) and the worker resyncs it.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;
use RedisTopology;

my $first = start_redis(name => 'first');
my $second = start_redis(name => 'second', args => [ '--replicaof', '127.0.0.1', $first->port ]);
my $sentinel = start_sentinel(master_port => $first->port);
my %by_port = ($first->port => $first, $second->port => $second);

# Until a Sentinel has seen a healthy replica it cannot fail over to it.
sub wait_for_replica
{
	my ($replica) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my ($info) = redis_try($replica->port, 'INFO', 'replication');
		my ($list) = redis_try($sentinel->port, 'SENTINEL', 'replicas', 'mymaster');
		my $seen = ref($list) eq 'ARRAY' && grep {
			my %h = @$_;
			$h{port} == $replica->port && $h{flags} eq 'slave'
		} @$list;
		return 1 if $seen && defined $info && $info =~ /master_link_status:up/;
		usleep(100_000);
	}
	return 0;
}

sub wait_for_master
{
	my ($port) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my $named = eval { sentinel_master_port($sentinel) } // 0;
		my ($role) = redis_try($port, 'ROLE');
		return 1 if $named == $port && ref($role) eq 'ARRAY' && $role->[0] eq 'master';
		usleep(100_000);
	}
	return 0;
}

ok(wait_for_replica($second), 'the Sentinel sees the replica');

my $node = new_wtcache_node(
	'sentinel',
	redis_port => $first->port,
	extra_conf => "wtcache.redis_sentinels = '127.0.0.1:" . $sentinel->port . "'\n"
	  . "wtcache.redis_master_name = 'mymaster'\n"
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i, 0 FROM generate_series(1, 3000) i;
});
ok(wait_drained($node, $db), 'the rows reach the master the Sentinel names');
my $first_port = $first->port;
like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}),
	qr/:$first_port \(master "mymaster"\)/, 'the status names the master and its Sentinel name');
compare_table_ok($node, $db, 't', $first->port);

#### A failover in the middle of a write load

my ($load, $out, $err) = start_write_load($node, $db, 'sentinel', <<'EOS', clients => 2, seconds => 10);
\set id random(1001, 3500)
INSERT INTO t VALUES (:id, 'new', 0) ON CONFLICT (id) DO UPDATE SET v = md5(random()::text), n = t.n + 1;
\set id2 random(1001, 3500)
DELETE FROM t WHERE id = :id2 AND n % 4 = 3;
EOS
sleep 2;
redis_cmd($sentinel->port, 'SENTINEL', 'FAILOVER', 'mymaster');
ok(wait_for_master($second->port), 'the Sentinel promoted the replica');
my ($reads, $reads_ok) = (0, 0);
while ($load->pumpable)
{
	my $ids = join(',', map { 1 + int(rand(1000)) } 1 .. 20);
	my ($ret, $got) = $node->psql($db,
		"SELECT count(*) FROM unnest(ARRAY[$ids]) i
		 WHERE wtcache.get('t', i::text) IS DISTINCT FROM (SELECT row_to_json(t)::jsonb FROM t WHERE id = i)");
	$reads++;
	$reads_ok++ if $ret == 0 && $got eq '0';
	eval { $load->pump_nb };
}
$load->finish;
like($$out, qr/number of transactions actually processed: [1-9]/, 'the write load committed transactions')
  or diag($$err);
cmp_ok($reads, '>', 0, "reads ran after the failover ($reads)");
is($reads_ok, $reads, 'every one of them returned the rows of the table');
ok(wait_drained($node, $db, '120s'), 'everything is delivered after the failover');
my $second_port = $second->port;
like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}),
	qr/:$second_port \(master "mymaster"\)/, 'the worker follows the new master');
compare_table_ok($node, $db, 't', $second->port, 'the new master matches the table');

#### A failover to a replica that missed writes

ok(wait_for_replica($first), 'the old master now replicates the new one');
# from now on it misses every write: stopped, and its link cut (what the
# master already sent is in its socket and would still arrive)
kill 'STOP', $first->pid;
redis_cmd($second->port, 'CLIENT', 'KILL', 'TYPE', 'replica');
sql(q{UPDATE t SET v = 'missed by the replica' WHERE id <= 100});
ok(wait_drained($node, $db), 'the master acknowledged the update');

# pause delivery, so only the reads' own check stands between a reader and
# the rows the replica missed
ok(set_delivery_paused($node, $db, 1), 'delivery is paused');
$second->kill9;
kill 'CONT', $first->pid;
ok(wait_for_master($first->port), 'the Sentinel promoted the replica that missed the update');
like(redis_cmd($first->port, 'GET', redis_key_of($node, $db, 't', 1)), qr/"v":"v1"/,
	'the promoted replica holds the row from before the update');
is(sql(q{SELECT count(*) FROM t WHERE id <= 100 AND wtcache.get('t', id::text)->>'v' IS DISTINCT FROM v}),
	'0', 'reads never return what the promoted replica missed');
cmp_ok(sql(q{SELECT read_bypasses FROM wtcache.status WHERE table_name = 't'::regclass}), '>=', 100,
	'they read the table: the generation marker is behind');

set_delivery_paused($node, $db, 0);
ok(wait_drained($node, $db, '120s'), 'delivery resumes on the promoted replica');
like(slurp_file($node->logfile), qr/generation marker behind/, 'the worker saw the marker behind and resynced');
compare_table_ok($node, $db, 't', $first->port, 'the promoted replica matches the table again');
is(sql(q{SELECT wtcache.get('t', '1')->>'v'}), 'missed by the replica', 'and reads use it again');

done_testing();
