# Redis Cluster failovers: 3 masters with a replica each.  A manual
# failover in the middle of a write load loses nothing; a master that dies
# after its replica missed writes is replaced by that replica, and then
# reads never return what it missed (its master's generation marker is
# behind) and the worker resyncs.
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

my @all = start_redis_cluster(masters => 3, replicas => 1);
my %by_port = map { $_->port => $_ } @all;

sub role_of
{
	my ($n) = @_;
	return undef unless $n->running;
	my ($role) = redis_try($n->port, 'ROLE');
	return ref($role) eq 'ARRAY' ? $role->[0] : undef;
}
sub masters { return grep { (role_of($_) // '') eq 'master' } @all; }

# The replica of a master, by asking the master who replicates it.
sub replica_of
{
	my ($master) = @_;
	my $deadline = time() + 30;
	while (time() < $deadline)
	{
		my ($info) = redis_try($master->port, 'INFO', 'replication');
		if (defined $info && $info =~ /slave0:ip=[^,]+,port=(\d+),state=online/)
		{
			return $by_port{$1};
		}
		usleep(100_000);
	}
	return undef;
}

sub wait_until_master
{
	my ($n) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		if ((role_of($n) // '') eq 'master')
		{
			my ($info) = redis_try($n->port, 'CLUSTER', 'INFO');
			return 1 if defined $info && $info =~ /cluster_state:ok/;
		}
		usleep(100_000);
	}
	return 0;
}

my $seeds = join(', ', map { '127.0.0.1:' . $_->port } @all);
my $node = new_wtcache_node(
	'cfail',
	redis_port => $all[0]->port,
	extra_conf => "wtcache.redis_cluster_nodes = '$seeds'\nwtcache.poll_interval = 500\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }
sub compare { compare_table_ok($node, $db, 't', $all[0]->port, $_[0], cluster_compare_opts(masters())); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i, 0 FROM generate_series(1, 3000) i;
});
ok(wait_drained($node, $db), 'the rows reach the cluster');
compare('the cluster matches the table');

#### A manual failover in the middle of a write load

my ($load, $out, $err) = start_write_load($node, $db, 'cfail', <<'EOS', clients => 2, seconds => 8);
\set id random(1001, 3500)
INSERT INTO t VALUES (:id, 'new', 0) ON CONFLICT (id) DO UPDATE SET v = md5(random()::text), n = t.n + 1;
\set id2 random(1001, 3500)
DELETE FROM t WHERE id = :id2 AND n % 4 = 3;
EOS
sleep 2;
my ($m1) = masters();
my $r1 = replica_of($m1);
ok(defined $r1, 'found the replica of a master');
redis_cmd($r1->port, 'CLUSTER', 'FAILOVER');
ok(wait_until_master($r1), 'the replica took over from its master');
$load->finish;
like($$out, qr/number of transactions actually processed: [1-9]/, 'the write load committed transactions')
  or diag($$err);
ok(wait_drained($node, $db, '120s'), 'everything is delivered after the failover');
compare('the cluster matches the table after the manual failover');

#### A master dies after its replica missed writes

my ($victim) = masters();
my $heir = replica_of($victim);
ok(defined $heir, 'found the replica of the master that will die');
kill 'STOP', $heir->pid;
redis_cmd($victim->port, 'CLIENT', 'KILL', 'TYPE', 'replica');
sql(q{UPDATE t SET v = 'missed' WHERE id <= 1000});
ok(wait_drained($node, $db), 'the masters acknowledged the update');
ok(set_delivery_paused($node, $db, 1), 'delivery is paused');
$victim->kill9;
kill 'CONT', $heir->pid;
ok(wait_until_master($heir), 'the replica that missed the update took over');
cluster_wait_ok(masters());

my @stale = grep { my ($v) = redis_try($heir->port, "GET", $_); defined $v && $v =~ /"v":"v\d+"/ }
  @{ redis_row_keys($heir->port, table_key_pattern($node, $db, 't')) };
cmp_ok(scalar @stale, '>', 0, 'the new master holds rows from before the update (' . scalar(@stale) . ')');
is(sql(q{SELECT count(*) FROM t WHERE id <= 1000 AND wtcache.get('t', id::text)->>'v' IS DISTINCT FROM v}),
	'0', 'reads never return what the new master missed');

set_delivery_paused($node, $db, 0);
ok(wait_drained($node, $db, '120s'), 'delivery resumes');
like(slurp_file($node->logfile), qr/generation marker (behind|missing)/, 'the worker saw that master\'s marker behind and resynced');
compare('the cluster matches the table after the lossy failover');
is(sql(q{SELECT count(*) FROM t WHERE id <= 1000 AND wtcache.get('t', id::text)->>'v' <> 'missed'}),
	'0', 'and reads agree');

done_testing();
