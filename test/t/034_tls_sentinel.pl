# Redis Sentinel over TLS: a master, a replica and a Sentinel, each with a
# TLS port and mutual TLS (replication and the Sentinel's own links are TLS
# too); the Sentinel requires a password, for an ACL user.  The worker and
# the reads ask the Sentinel over TLS, logged in with
# wtcache.redis_sentinel_user and its password file, and verify the
# certificate of the master it names; a failover in the middle of a write
# load loses nothing, and the worker follows the master to its new TLS
# address.  The test's own checks use the plain ports.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;
use RedisTopology;

my $dir = PostgreSQL::Test::Utils::tempdir('tls');
my $certs = make_tls_certs($dir);
my $sent_pw = 'Tls-sentinel-pass-51c0e7a9';

my @tls = (tls => $certs, tls_auth_clients => 'yes');
my $first = start_redis(name => 'first', @tls, args => [ '--tls-replication', 'yes' ]);
my $second = start_redis(
	name => 'second',
	@tls,
	args => [ '--tls-replication', 'yes', '--replicaof', '127.0.0.1', $first->tls_port ]);
my $sentinel = start_sentinel(
	master_port => $first->tls_port,
	@tls,
	requirepass => 'Unused-sentinel-default-3b8d',
	acl_user => [ 'wtsent', $sent_pw ],
	helper_auth => [ 'wtsent', $sent_pw ]);

# The Sentinel names servers by their TLS ports: the replica announces its
# TLS port (tls-replication), and the master is monitored at its own.
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
			$h{port} == $replica->tls_port && $h{flags} eq 'slave'
		} @$list;
		return 1 if $seen && defined $info && $info =~ /master_link_status:up/;
		usleep(100_000);
	}
	return 0;
}

sub wait_for_master
{
	my ($server) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my $named = eval { sentinel_master_port($sentinel) } // 0;
		my ($role) = redis_try($server->port, 'ROLE');
		return 1 if $named == $server->tls_port && ref($role) eq 'ARRAY' && $role->[0] eq 'master';
		usleep(100_000);
	}
	return 0;
}

ok(wait_for_replica($second), 'the Sentinel sees the replica, over TLS');

my $pwfile = write_secret("$dir/sentinel.pw", "$sent_pw\n", 0600);

my $node = new_wtcache_node(
	'tls_sentinel',
	# the URL says TLS; its host and port are not used with Sentinels
	redis_url => 'rediss://127.0.0.1:' . $first->tls_port,
	extra_conf => "wtcache.redis_sentinels = '127.0.0.1:" . $sentinel->tls_port . "'\n"
	  . "wtcache.redis_master_name = 'mymaster'\n"
	  . "wtcache.redis_sentinel_user = 'wtsent'\n"
	  . "wtcache.redis_sentinel_password_file = '$pwfile'\n"
	  . tls_client_conf($certs)
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i, 0 FROM generate_series(1, 3000) i;
});
ok(wait_drained($node, $db), 'the rows reach the master the Sentinel names, over TLS');
my $first_tls = $first->tls_port;
like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}),
	qr/^127\.0\.0\.1:$first_tls \(master "mymaster", TLS\)$/,
	'the status names the master at its TLS port');
compare_table_ok($node, $db, 't', $first->port);
is( sql(q{SELECT wtcache.get('t', '7') = (SELECT row_to_json(t)::jsonb FROM t WHERE id = 7)}),
	't', 'a cached read through the Sentinel, over TLS');
cmp_ok(sql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 't'::regclass}), '>=', 1,
	'and it was a hit');
like(slurp_file($node->logfile), qr/wtcache: connected to Redis at 127\.0\.0\.1:$first_tls \(master "mymaster", TLS\)/,
	'the log names the master and TLS');

#### A failover in the middle of a write load

my $before = sql(q{SELECT captured FROM wtcache.status WHERE table_name = 't'::regclass});
my ($load, $out, $err) = start_write_load($node, $db, 'tls_sentinel', <<'EOS', clients => 2, seconds => 8);
\set id random(1001, 3500)
INSERT INTO t VALUES (:id, 'new', 0) ON CONFLICT (id) DO UPDATE SET v = md5(random()::text), n = t.n + 1;
\set id2 random(1001, 3500)
DELETE FROM t WHERE id = :id2 AND n % 4 = 3;
EOS
ok($node->poll_query_until($db,
		"SELECT captured > $before + 200 FROM wtcache.status WHERE table_name = 't'::regclass"),
	'the write load is running');
redis_cmd($sentinel->port, 'SENTINEL', 'FAILOVER', 'mymaster');
ok(wait_for_master($second), 'the Sentinel promoted the replica');
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
my $second_tls = $second->tls_port;
like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}),
	qr/^127\.0\.0\.1:$second_tls \(master "mymaster", TLS\)$/,
	'the worker follows the new master, over TLS');
compare_table_ok($node, $db, 't', $second->port, 'the new master matches the table');
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$sent_pw\E/, 'the log shows no Sentinel password');
unlike($log, qr/could not connect to Redis[^\n]*(?:TLS|certificate)/, 'no TLS connection was refused');

#### A Sentinel that cannot be verified is not asked

my $offset = -s $node->logfile;
sql(qq{ALTER SYSTEM SET wtcache.redis_tls_ca_file = '$certs->{other_ca}'; SELECT pg_reload_conf();});
ok($node->wait_for_log(qr/could not connect to Redis at [^\n]*: Sentinel 127\.0\.0\.1:\d+: TLS handshake failed: the server's certificate was refused/, $offset),
	'with a CA that did not sign it, the Sentinel is refused, and the log says which and why');
sql(q{UPDATE t SET v = 'after the refusal' WHERE id = 1});
sql(q{ALTER SYSTEM RESET wtcache.redis_tls_ca_file; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'delivery resumes once the CA is set back and reloaded');
compare_table_ok($node, $db, 't', $second->port, 'the master matches the table');

$node->stop;
done_testing();
