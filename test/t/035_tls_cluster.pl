# Redis Cluster over TLS: 3 masters with mutual TLS and a TLS cluster bus
# (tls-cluster yes), made over their TLS ports, so CLUSTER SLOTS and MOVED
# announce TLS ports to TLS clients.  wtcache connects to the seeds and to
# every announced master over TLS, verifying each certificate; rows spread
# over every master, reads work, and a resharding in the middle of a write
# load (MOVED and ASK to announced addresses) loses nothing and needs no
# reconnection.  The test's own checks use the plain ports.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;
use RedisTopology;

my $dir = PostgreSQL::Test::Utils::tempdir('tls');
my $certs = make_tls_certs($dir);
my @masters = start_redis_cluster(masters => 3, tls => $certs, tls_auth_clients => 'yes');
my @ports = map { $_->port } @masters;
my @tls_ports = map { $_->tls_port } @masters;
my %cmp = cluster_compare_opts(@masters);

# only the first seed is given: the other masters are met through
# CLUSTER SLOTS, at the TLS addresses it announces
my $node = new_wtcache_node(
	'tls_cluster',
	redis_url => "rediss://127.0.0.1:$tls_ports[0]",
	extra_conf => "wtcache.redis_cluster_nodes = '127.0.0.1:$tls_ports[0]'\n"
	  . tls_client_conf($certs)
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

# clients of a master on its TLS port, as CLIENT LIST says
sub tls_clients
{
	my ($i) = @_;
	return grep { /\bladdr=127\.0\.0\.1:$tls_ports[$i]\b/ } split /\n/,
	  redis_cmd($ports[$i], 'CLIENT', 'LIST');
}

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, md5(i::text), 0 FROM generate_series(1, 5000) i;
});
ok(wait_drained($node, $db), 'the rows reach the cluster over TLS');
like(sql(q{SELECT redis_address FROM wtcache.worker_status() WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	qr/^cluster of 3 masters \(seed 127\.0\.0\.1:$tls_ports[0], TLS\)$/, 'the status names the cluster and TLS');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);
for my $i (0 .. 2)
{
	cmp_ok(redis_cmd($ports[$i], 'DBSIZE'), '>', 1000, "master $i holds its share of the keys");
	cmp_ok(scalar(tls_clients($i)), '>=', 1, "master $i has wtcache's connection on its TLS port");
}
is( sql(q{SELECT count(*) FROM wtcache.get_many('t', ARRAY(SELECT i::text FROM generate_series(1, 300) i)) g
          JOIN t ON g.row = row_to_json(t)::jsonb}),
	'300', 'get_many() of 300 keys over every master, over TLS');
cmp_ok(sql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 't'::regclass}), '>=', 300,
	'and they were hits');

#### Resharding in the middle of a write load

my $before = sql(q{SELECT captured FROM wtcache.status WHERE table_name = 't'::regclass});
my ($load, $out, $err) = start_write_load($node, $db, 'tls_cluster', <<'EOS', clients => 2, seconds => 6);
\set id random(1001, 6000)
INSERT INTO t VALUES (:id, 'new', 0) ON CONFLICT (id) DO UPDATE SET v = md5(random()::text), n = t.n + 1;
\set id2 random(1001, 6000)
DELETE FROM t WHERE id = :id2 AND n % 5 = 3;
EOS
ok($node->poll_query_until($db,
		"SELECT captured > $before + 200 FROM wtcache.status WHERE table_name = 't'::regclass"),
	'the write load is running');
my $from = cluster_node_id($masters[0]);
my $to = cluster_node_id($masters[1]);
my $reshard_log = "$PostgreSQL::Test::Utils::log_path/tls_cluster_reshard.log";
my $reshard = fork() // die "fork: $!";
if ($reshard == 0)
{
	open(STDOUT, '>>', $reshard_log);
	open(STDERR, '>&', \*STDOUT);
	exec('redis-cli', redis_cli_tls_args($certs), '--cluster', 'reshard', "127.0.0.1:$tls_ports[0]",
		'--cluster-from', $from, '--cluster-to', $to, '--cluster-slots', '3000', '--cluster-yes')
	  or POSIX::_exit(127);
}
# rows 1-1000, which the load leaves alone: a read must equal the table
my ($reads, $reads_ok) = (0, 0);
while (waitpid($reshard, POSIX::WNOHANG()) == 0)
{
	my $ids = join(',', map { 1 + int(rand(1000)) } 1 .. 20);
	my ($ret, $got, $stderr) = $node->psql($db,
		"SELECT count(*) FROM unnest(ARRAY[$ids]) i
		 WHERE wtcache.get('t', i::text) IS DISTINCT FROM (SELECT row_to_json(t)::jsonb FROM t WHERE id = i)");
	$reads++;
	if ($ret == 0 && $got eq '0') { $reads_ok++ }
	else { diag("read of ids $ids: exit $ret, $got differ, $stderr") }
}
is($?, 0, 'redis-cli moved 3,000 slots and their keys over TLS while the load ran');
cmp_ok($reads, '>', 0, "reads ran during the resharding ($reads)");
is($reads_ok, $reads, 'every read during the resharding returned the row of the table');
IPC::Run::finish($load);
like($$out, qr/number of transactions actually processed: [1-9]/, 'the write load committed transactions')
  or diag($$err);
cluster_wait_ok(@masters);
ok(wait_drained($node, $db, '120s'), 'everything is delivered after the resharding');
my $log = slurp_file($node->logfile);
is(scalar(() = $log =~ /wtcache: connected to Redis/g), 1,
	'the worker followed MOVED and ASK over TLS inline: it never had to reconnect');
unlike($log, qr/could not (?:connect|deliver)/, 'no connection or push failed');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);
is(sql(q{SELECT count(*) FROM wtcache.verify('t')}), '0', 'verify() finds nothing on any master');
cmp_ok(redis_cmd($ports[1], 'DBSIZE'), '>', redis_cmd($ports[0], 'DBSIZE'),
	'the keys moved with their slots');

$node->stop;
done_testing();
