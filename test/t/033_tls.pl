# TLS to one Redis (rediss://), with mutual TLS and an ACL user whose
# password is in a file: the demo workload arrives with zero drift, and the
# cached reads go over TLS too.  A wrong CA, a certificate for another name,
# an expired certificate, no client certificate and a client key others
# could read are each refused with the reason and a hint in the log, while
# writes commit and reads fall back to the table; delivery resumes once the
# setting is fixed and the configuration reloaded (for a certificate for
# another name: wtcache.redis_tls_server_name; for an expired one, the
# opt-out wtcache.redis_tls_verify = none, which logs a warning).  Redis
# killed and restarted in the middle of a drain: everything arrives.
#
# The Redis server listens on a TLS port for wtcache and on a plain port
# for the test's own checks (WtcacheTest's client has no TLS).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;

my $dir = PostgreSQL::Test::Utils::tempdir('tls');
my $certs = make_tls_certs($dir);
my $acl_pw = 'Tls-acl-pass-4c1e9b27';

# only the ACL user wtc may do anything: a connection that skipped AUTH fails
# (the default user has a password nobody uses; turned off, Redis 7.0 could
# not replay its own AOF)
my $redis = start_redis(
	name => 'tls',
	appendonly => 1,
	tls => $certs,
	tls_auth_clients => 'yes',
	auth => [ 'wtc', $acl_pw ],
	args => [ '--requirepass', 'Unused-default-pass-8e2f', '--user', 'wtc', 'on', ">$acl_pw", '~*', '&*', '+@all' ]);
my $rp = $redis->port;
my $tls_port = $redis->tls_port;

my $pwfile = write_secret("$dir/redis.pw", "$acl_pw\n", 0600);

my $node = new_wtcache_node(
	'tls',
	redis_url => "rediss://127.0.0.1:$tls_port",
	extra_conf => "wtcache.redis_user = 'wtc'\n"
	  . "wtcache.redis_password_file = '$pwfile'\n"
	  . tls_client_conf($certs)
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub set_and_reload
{
	my (@settings) = @_;
	sql(join('', map { /=/ ? "ALTER SYSTEM SET $_;\n" : "ALTER SYSTEM RESET $_;\n" } @settings)
		  . 'SELECT pg_reload_conf();');
	return;
}

# the worker's connections: every client of the TLS port, as CLIENT LIST says
sub tls_clients
{
	return grep { /\bladdr=127\.0\.0\.1:$tls_port\b/ } split /\n/, redis_cmd($rp, 'CLIENT', 'LIST');
}

#### The demo workload over TLS

sql(q{
CREATE TABLE accounts (
    id         integer PRIMARY KEY,
    owner      text NOT NULL,
    balance    numeric(12,2) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO accounts (id, owner, balance)
  SELECT i, 'owner ' || i, (i % 1000) * 1.5 FROM generate_series(1, 20000) i;
SELECT wtcache.watch('accounts', warm => true);
});
ok(wait_drained($node, $db), 'the warm-up arrives over TLS');
sql(q{UPDATE accounts SET balance = balance + 1, updated_at = now()});
ok(wait_drained($node, $db), 'a 20,000-row UPDATE arrives');
sql(q{DELETE FROM accounts WHERE id % 10 = 0});
ok(wait_drained($node, $db), 'a 2,000-row DELETE arrives');
compare_table_ok($node, $db, 'accounts', $rp, 'Redis matches the table: zero drift over TLS');

like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}), qr/^127\.0\.0\.1:$tls_port \(TLS\)$/,
	'the status says the connection is TLS');
my @worker_conns = grep { /\buser=wtc\b/ } tls_clients();
cmp_ok(scalar @worker_conns, '>=', 1, 'Redis sees the worker on its TLS port, logged in as wtc');
is( sql(q{SELECT wtcache.get('accounts', '42') = (SELECT row_to_json(a)::jsonb FROM accounts a WHERE id = 42)}),
	't', 'a cached read over TLS returns the row');
cmp_ok(sql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 'accounts'::regclass}), '>=', 1,
	'and it was a hit: the reading backend reached Redis over TLS');
my $log = slurp_file($node->logfile);
like($log, qr/wtcache: connected to Redis at 127\.0\.0\.1:$tls_port \(TLS\)/, 'the log names the TLS connection');
unlike($log, qr/could not connect to Redis/, 'no connection failed so far');

# a reload that changes nothing keeps the connection (the worker has
# processed it once it delivered a change committed after it) ...
{
	my $offset = -s $node->logfile;
	sql('SELECT pg_reload_conf()');
	sql(q{UPDATE accounts SET owner = 'after a reload' WHERE id = 1});
	ok(wait_drained($node, $db), 'a change after a reload that changes nothing is delivered');
	unlike(substr(slurp_file($node->logfile), $offset), qr/settings changed|connected to Redis/,
		'on the same connection');
}
# ... and a renewed client certificate (the same file, written again) is
# used from the next reload on
{
	my $offset = -s $node->logfile;
	utime(undef, undef, $certs->{client_crt}) or die "utime: $!";
	sql('SELECT pg_reload_conf()');
	ok($node->wait_for_log(qr/wtcache: the Redis settings changed, reconnecting\n[^\n]*wtcache: connected to Redis at 127\.0\.0\.1:$tls_port \(TLS\)/,
			$offset),
		'a certificate file written again makes the worker reconnect at the reload');
}

#### Refusals: each with its reason and a hint; writes and reads go on

my $round = 0;

# Break something with $break; the worker must refuse Redis with $reason and
# $hint in one log line; then $fix, and delivery resumes.
sub refused_then_fixed
{
	my ($label, $break, $reason, $hint, $fix) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$round++;
	my $offset = -s $node->logfile;
	$break->();
	ok($node->wait_for_log(qr/wtcache: could not connect to Redis at [^\n]*: [^\n]*$reason/, $offset),
		"$label: the worker refuses the connection, with the reason in the log");
	my $log = substr(slurp_file($node->logfile), $offset);
	like($log, qr/$reason[^\n]*\n[^\n]*DETAIL:[^\n]*\n[^\n]*HINT:  [^\n]*$hint/, "$label: and a hint");
	unlike($log, qr/\Q$acl_pw\E/, "$label: the log shows no password");
	like(sql(q{SELECT worker_last_error FROM wtcache.status WHERE table_name = 'accounts'::regclass}),
		qr/$reason/, "$label: wtcache.status shows the reason");

	my ($ret, $out, $err) = $node->psql($db,
		"SET statement_timeout = '5s'; UPDATE accounts SET balance = balance + 1, owner = 'round $round' WHERE id % 13 = $round",
		timeout => 60);
	is($ret, 0, "$label: writes commit meanwhile") or diag($err);
	is(sql(q{SELECT wtcache.wait('200ms')}), 'f', "$label: and are not delivered");
	is( sql(qq{SELECT wtcache.get('accounts', '$round') = (SELECT row_to_json(a)::jsonb FROM accounts a WHERE id = $round)}),
		't', "$label: a cached read returns the new row (from the table)");

	$fix->();
	ok(wait_drained($node, $db, '60s'), "$label: delivery resumes once it is fixed and reloaded");
	compare_table_ok($node, $db, 'accounts', $rp, "$label: Redis matches the table again");
	return;
}

# Restore something with $restore, and wait until the worker connected
# again (to $port, by default Redis's TLS port).
sub restored
{
	my ($label, $restore, $port) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$port //= $tls_port;
	my $offset = -s $node->logfile;
	$restore->();
	ok($node->wait_for_log(qr/wtcache: connected to Redis at 127\.0\.0\.1:$port \(TLS\)\n/, $offset),
		"$label: the worker connects again, verifying the certificate fully");
	return;
}

# Make the worker (and readers) connect again, to see a server-side change.
sub drop_connections
{
	redis_cmd($rp, 'CLIENT', 'KILL', 'TYPE', 'normal');
	return;
}

refused_then_fixed(
	'wrong CA',
	sub { set_and_reload("wtcache.redis_tls_ca_file = '$certs->{other_ca}'") },
	qr/certificate was refused: (?:unable to get local issuer certificate|self-signed certificate in certificate chain)/,
	qr/not signed by a CA wtcache trusts/,
	sub { set_and_reload('wtcache.redis_tls_ca_file') });

refused_then_fixed(
	'no client certificate',
	sub { set_and_reload("wtcache.redis_tls_cert_file = ''", "wtcache.redis_tls_key_file = ''") },
	qr/certificate required/,
	qr/requires a client certificate/,
	sub { set_and_reload('wtcache.redis_tls_cert_file', 'wtcache.redis_tls_key_file') });

refused_then_fixed(
	'a certificate for another name',
	sub {
		redis_cmd($rp, 'CONFIG', 'SET', 'tls-cert-file', $certs->{wrong_name_crt},
			'tls-key-file', $certs->{wrong_name_key});
		drop_connections();
	},
	qr/certificate was refused: IP address mismatch \(it is not for "127\.0\.0\.1"\)/,
	qr/does not name the address wtcache connects to/,
	sub { set_and_reload("wtcache.redis_tls_server_name = 'other.example'") });
like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}), qr/\(TLS\)$/,
	'wtcache.redis_tls_server_name: the certificate was verified for that name');
restored(
	'the certificate for 127.0.0.1 back',
	sub {
		redis_cmd($rp, 'CONFIG', 'SET', 'tls-cert-file', $certs->{server_crt},
			'tls-key-file', $certs->{server_key});
		set_and_reload('wtcache.redis_tls_server_name');
	});

my $warn_offset = -s $node->logfile;
refused_then_fixed(
	'an expired certificate',
	sub {
		redis_cmd($rp, 'CONFIG', 'SET', 'tls-cert-file', $certs->{expired_crt},
			'tls-key-file', $certs->{expired_key});
		drop_connections();
	},
	qr/certificate was refused: certificate has expired/,
	qr/certificate has expired: renew it/,
	sub { set_and_reload("wtcache.redis_tls_verify = 'none'") });
like(substr(slurp_file($node->logfile), $warn_offset),
	qr/WARNING:  wtcache: wtcache\.redis_tls_verify is none: Redis servers' certificates are not verified/,
	'wtcache.redis_tls_verify = none: the worker warns that nothing is verified');
like(sql(q{SELECT redis_address FROM wtcache.status LIMIT 1}), qr/\(TLS, unverified\)$/,
	'and the status says so');
restored(
	'a valid certificate back',
	sub {
		redis_cmd($rp, 'CONFIG', 'SET', 'tls-cert-file', $certs->{server_crt},
			'tls-key-file', $certs->{server_key});
		set_and_reload('wtcache.redis_tls_verify');
	});

refused_then_fixed(
	'a client key others can read',
	sub { chmod(0640, $certs->{client_key}) or die "chmod: $!"; drop_connections(); },
	qr/TLS key file "[^"]*" \(wtcache\.redis_tls_key_file\) has group or world access/,
	qr/readable by it alone/,
	sub { chmod(0600, $certs->{client_key}) or die "chmod: $!"; sql('SELECT pg_reload_conf()'); });

is(sql(q{SELECT redis_address ~ '\(TLS\)$' AND connected FROM wtcache.status LIMIT 1}), 't',
	'after the repairs the worker is connected with full verification again');

#### A server that stops answering: the handshake and reads time out

# a TCP proxy in front of the TLS port, which can stall (it still accepts)
my $proxy = start_redis_proxy(target_port => $tls_port, name => 'tls_proxy');
my $pp = $proxy->port;
restored('through a TCP proxy',
	sub { set_and_reload("wtcache.redis_url = 'rediss://127.0.0.1:$pp'") }, $pp);
my $stall_offset = -s $node->logfile;
$proxy->stall(1);
$proxy->cut;
ok($node->wait_for_log(qr/wtcache: could not connect to Redis at 127\.0\.0\.1:$pp \(TLS\): TLS handshake failed: timed out/,
		$stall_offset),
	'a handshake that gets no answer fails at wtcache.connect_timeout');
like(substr(slurp_file($node->logfile), $stall_offset), qr/handshake failed: timed out\n[^\n]*DETAIL:[^\n]*\n[^\n]*HINT:  The server did not complete the TLS handshake within wtcache\.connect_timeout/,
	'with a hint');
my $t0 = time();
my ($ret, $out, $err) = $node->psql($db,
	"SET statement_timeout = '5s'; UPDATE accounts SET owner = 'stalled' WHERE id % 17 = 1", timeout => 60);
is($ret, 0, 'writes commit while the server does not answer') or diag($err);
cmp_ok(time() - $t0, '<', 5, 'without waiting for it');
$t0 = time();
is( sql(q{SELECT count(*) FROM generate_series(1, 50) i
          WHERE wtcache.get('accounts', i::text) IS NOT DISTINCT FROM
                (SELECT row_to_json(a)::jsonb FROM accounts a WHERE id = i)}),
	'50', 'cached reads return the rows of the table meanwhile');
cmp_ok(time() - $t0, '<', 5,
	'50 reads in one session pay one connect timeout: the circuit breaker opens, as on TCP');
$proxy->stall(0);
ok(wait_drained($node, $db, '60s'), 'delivery resumes when the server answers again');
compare_table_ok($node, $db, 'accounts', $rp, 'Redis matches the table after the stall');
restored('straight to Redis again', sub { set_and_reload('wtcache.redis_url') });
$proxy->stop;

#### Redis killed and restarted in the middle of a drain

# Writes paused in Redis: the worker sends its first batch and waits for the
# replies; Redis dies then, with the batch in flight.
redis_cmd($rp, 'CLIENT', 'PAUSE', '30000', 'WRITE');
my $offset = -s $node->logfile;
sql(q{UPDATE accounts SET balance = balance * 2, updated_at = now()});
my $in_flight = 0;
my $deadline = time() + 30;
while (time() < $deadline)
{
	if (grep { /\bflags=b\b/ && /\bcmd=evalsha\b/ } tls_clients()) { $in_flight = 1; last }
	usleep(20_000);
}
ok($in_flight, 'the worker has a batch in flight over TLS');
$redis->kill9;
$redis->start;
ok(wait_drained($node, $db, '60s'), 'after the restart everything is delivered');
compare_table_ok($node, $db, 'accounts', $rp, 'Redis matches the table after a restart mid-drain');
$log = substr(slurp_file($node->logfile), $offset);
like($log, qr/wtcache: (?:lost the connection to Redis|could not [^\n]*Redis)[^\n]*/,
	'the worker saw the connection go');
like($log, qr/wtcache: connected to Redis at 127\.0\.0\.1:$tls_port \(TLS\)/, 'and connected again over TLS');
unlike($log, qr/lost data/, 'Redis kept its data (AOF): the batch in flight was simply sent again');

$node->stop;
done_testing();
