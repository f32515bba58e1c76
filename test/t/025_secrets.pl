# Secrets: the Redis password kept out of every setting, in a file only the
# server's user can read (wtcache.redis_password_file, with an ACL user in
# wtcache.redis_user); a file others could read is refused with a clear log
# line, and delivery resumes once it is fixed and the configuration
# reloaded; a new password in the file is picked up at reload; a pg_monitor
# member sees no password in pg_settings, SHOW or current_setting(); no
# statement that sets a URL with a password puts it in the server log; and
# Sentinels that require a password (requirepass, or an ACL user) are used
# with wtcache.redis_sentinel_password_file.
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

# Every secret is distinct, so a leak names itself.
my $pw = 'Req-pass-9d31c7e2';             # requirepass of the default user
my $acl_pw = 'Acl-pass-62f0d5b3';         # the ACL user wtc, then rotated
my $acl_pw2 = 'Acl-pass2-0c7e94aa';
my $url_secret = 'Url-secret-4be8a1f0';    # only ever typed into statements
my $sent_pw = 'Sentinel-pass-7a5e13c4';    # requirepass of the Sentinel
my $sent_acl_pw = 'Sentinel-acl-31d9b6e5'; # its ACL user wtsent
my %secrets = (
	'the requirepass password' => $pw,
	'the ACL password' => $acl_pw,
	'the rotated ACL password' => $acl_pw2,
	'the password typed in statements' => $url_secret,
	'the Sentinel password' => $sent_pw,
	'the Sentinel ACL password' => $sent_acl_pw);

my $redis = start_redis(
	name => 'auth',
	auth => [ 'default', $pw ],
	args => [ '--requirepass', $pw ]);
my $port = $redis->port;

my $dir = PostgreSQL::Test::Utils::tempdir('secrets');

my $pwfile = write_secret("$dir/redis.pw", "$pw\n", 0600);

my $node = new_wtcache_node(
	'secrets',
	redis_port => $port,    # a URL without a password
	extra_conf => "wtcache.redis_password_file = '$pwfile'\n"
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

# A statement that may fail (on code without these settings it does):
# its output, or its error text.
sub try_sql
{
	my ($q, %opts) = @_;
	my ($ret, $out, $err) = $node->psql($db, $q, %opts);
	return $ret == 0 ? $out : "ERROR: $err";
}

# ALTER SYSTEM SETs then a reload, checked.
sub set_and_reload
{
	my (@settings) = @_;
	my $q = join('', map { "ALTER SYSTEM SET $_;\n" } @settings) . 'SELECT pg_reload_conf();';
	my ($ret, $out, $err) = $node->psql($db, $q, on_error_stop => 1);
	is($ret, 0, "ALTER SYSTEM SET @settings") or diag($err);
	return;
}

# Wait (60 s at most) for a log line after $offset; true if it came.
sub log_has
{
	my ($re, $offset) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		return 1 if slurp_file($node->logfile, $offset) =~ $re;
		usleep(100_000);
	}
	return 0;
}

# Wait (60 s at most) until the worker is connected to the master that
# the Sentinel names.
sub wait_connected_via_sentinel
{
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		return 1 if sql(q{SELECT count(*) > 0 FROM wtcache.worker_status()
		                  WHERE connected AND redis_address LIKE '%(master "mymaster")'}) eq 't';
		usleep(100_000);
	}
	return 0;
}

# A read with wtcache.get() answered by Redis, not by the table: a new
# backend's own connection logged in.  The value read, or an error.
sub read_from_redis
{
	my ($id) = @_;
	my $hits = q{(SELECT coalesce(sum(read_hits), 0) FROM wtcache.status)};
	my $out = try_sql(qq{SET wtcache.read_fallback = off;
		CREATE TEMP TABLE before AS SELECT $hits AS n;
		CREATE TEMP TABLE got AS SELECT wtcache.get('t', '$id')->>'v' AS v;
		SELECT v || CASE WHEN $hits > (SELECT n FROM before) THEN '' ELSE ' (not from Redis)' END
		  FROM got});
	return $out;
}

sub worker_error
{
	return sql(q{SELECT coalesce(string_agg(coalesce(last_error, ''), ' '), '')
	             FROM wtcache.worker_status()});
}

sub wait_for_worker_error
{
	my ($re) = @_;
	my $deadline = time() + 30;
	while (time() < $deadline)
	{
		my $e = worker_error();
		return $e if $e =~ $re;
		usleep(100_000);
	}
	return worker_error();
}

#### The password from a file

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;
});
ok(wait_drained($node, $db, '30s'), 'delivery works with the password from wtcache.redis_password_file');
compare_table_ok($node, $db, 't', $port, 'Redis (requirepass) matches the table');
is(read_from_redis(7), 'v7',
	'a reading backend logs in with the file too (no fallback to the table)');

#### A pg_monitor member sees no password

sql(q{CREATE ROLE mon LOGIN IN ROLE pg_monitor});
my $mon = $node->connstr($db) . ' user=mon';
for my $q (
	'SHOW wtcache.redis_url',
	'SHOW wtcache.redis_password_file',
	q{SELECT current_setting('wtcache.redis_url')},
	q{SELECT string_agg(name || '=' || coalesce(setting, '') || ' ' || coalesce(reset_val, '')
	                    || ' ' || coalesce(boot_val, ''), E'\n')
	    FROM pg_settings WHERE name LIKE 'wtcache.%'})
{
	my ($ret, $out, $err) = $node->psql($db, $q, connstr => $mon);
	is($ret, 0, "a pg_monitor member may run: $q") or diag($err);
	like($out, qr/127\.0\.0\.1:$port|\Q$pwfile\E/, "... and sees the setting ($q)");
	unlike($out, qr/\Q$pw\E/, "... but not the password ($q)");
}

#### A file others could read is refused

my $offset = -s $node->logfile;
chmod(0644, $pwfile) or die;
$node->reload;
ok(log_has(qr/wtcache: password file "\Q$pwfile\E" \(wtcache\.redis_password_file\) has group or world access/,
		$offset),
	'a world-readable password file is refused with a log line that says why');
like(wait_for_worker_error(qr/group or world access/), qr/group or world access/,
	'worker_status() says why too');
sql(q{INSERT INTO t VALUES (101, 'while refused')});
is(sql(q{SELECT wtcache.wait('500ms')}), 'f', 'nothing is delivered while the file is refused');
is(redis_cmd($port, 'GET', redis_key_of($node, $db, 't', 101)), undef, '... and row 101 is not in Redis');

$offset = -s $node->logfile;
write_secret($pwfile, '', 0600);
$node->reload;
ok(log_has(qr/password file "\Q$pwfile\E" \(wtcache\.redis_password_file\) is empty/, $offset),
	'an empty password file is refused with a log line that says why');

write_secret($pwfile, "$pw\r\n", 0600);
$node->reload;
ok(wait_drained($node, $db, '30s'), 'delivery resumes once the file is fixed and the configuration reloaded');
compare_table_ok($node, $db, 't', $port, 'Redis matches the table again');

#### An ACL user, and a new password picked up at reload

redis_cmd($port, 'ACL', 'SETUSER', 'wtc', 'on', ">$acl_pw", '~*', '&*', '+@all');
write_secret($pwfile, "$acl_pw\n", 0600);
$node->append_conf('postgresql.conf', "wtcache.redis_user = 'wtc'\n");
$node->reload;

sub wtc_clients
{
	my $list = redis_cmd($port, 'CLIENT', 'LIST');
	return scalar(() = $list =~ /\buser=wtc\b/g);
}
my $deadline = time() + 30;
usleep(100_000) until wtc_clients() > 0 || time() > $deadline;
cmp_ok(wtc_clients(), '>', 0, 'the worker logs in as the ACL user of wtcache.redis_user');
sql(q{INSERT INTO t VALUES (102, 'as wtc')});
ok(wait_drained($node, $db, '30s'), 'and delivers as it');

# Rotation: Redis takes the new password, the file gets it, a reload.  The
# worker reads the file again at the reload and reconnects; the old
# password is then refused, so what follows can only work with the new one.
redis_cmd($port, 'ACL', 'SETUSER', 'wtc', 'resetpass', ">$acl_pw2");
write_secret($pwfile, "$acl_pw2\n", 0600);
$offset = -s $node->logfile;
$node->reload;
ok(log_has(qr/the Redis settings changed, reconnecting/, $offset),
	'a new password in the same file makes the worker reconnect at reload');
redis_cmd($port, 'CLIENT', 'KILL', 'USER', 'wtc');
sql(q{INSERT INTO t VALUES (103, 'after rotation')});
ok(wait_drained($node, $db, '30s'), 'delivery goes on with the rotated password');
is(read_from_redis(103), 'after rotation',
	'and a new reading backend logs in with it');

#### Statements that carry a password in a URL

# Everything that can log a statement: log_statement (DDL by default in
# these tests, all here), log_min_duration_statement, and the STATEMENT:
# line of an error (log_min_error_statement = error, the default).
sql(q{ALTER SYSTEM SET log_statement = 'all'; ALTER SYSTEM SET log_min_duration_statement = 0;
      SELECT pg_reload_conf()});
$node->poll_query_until($db, q{SELECT current_setting('log_statement') = 'all'})
  or die 'log_statement was not reloaded';
$offset = -s $node->logfile;
my @failing = (
	"ALTER SYSTEM SET wtcache.redis_url = 'redis://u:$url_secret\@127.0.0.1:notaport'",
	"ALTER SYSTEM SET wtcache.redis_url = 'REDIS://u:$url_secret\@127.0.0.1:1'",
	"ALTER SYSTEM SET wtcache.redis_url = 'u:$url_secret\@127.0.0.1:1'",
	"ALTER SYSTEM SET wtcache.redis_url = 'redis://u:it''s a $url_secret\@127.0.0.1:1/x'",
	"ALTER SYSTEM SET wtcache.redis_url = 'redis://:$url_secret\@127.0.0.1:1' garbage",
	"SET wtcache.redis_url = 'redis://u:$url_secret\@127.0.0.1:1'",
	"SELECT set_config('wtcache.redis_url', 'redis://:$url_secret\@h:1', false)",
	"DO \$\$BEGIN PERFORM set_config('wtcache.redis_url', 'redis://:$url_secret\@h:1', false); END\$\$");
for my $stmt (@failing)
{
	my ($ret, $out, $err) = $node->psql($db, $stmt);
	isnt($ret, 0, "refused: $stmt");
}
my ($ret, $out, $err) = $node->psql($db,
	"ALTER SYSTEM SET wtcache.redis_url = 'redis://u:$url_secret\@127.0.0.1:1'",
	connstr => $mon);
like($err, qr/permission denied/, 'a pg_monitor member may not ALTER SYSTEM the URL');
# one that succeeds (then taken back before any reload)
sql("ALTER SYSTEM SET wtcache.redis_url = 'redis://u:$url_secret\@127.0.0.1:$port'");
sql('ALTER SYSTEM RESET wtcache.redis_url');
# a marker, logged after all of the above
sql(q{SELECT 'end of the statements with passwords'});
ok(log_has(qr/end of the statements with passwords/, $offset), 'the statements are logged');

my $log = slurp_file($node->logfile, $offset);
unlike($log, qr/\Q$url_secret\E/, 'no log line shows the password of any of these statements');
like($log, qr/ERROR:  invalid value for parameter "wtcache\.redis_url"/, 'the refusals are logged');
like($log, qr/statement: ALTER SYSTEM SET wtcache\.redis_url = 'redis:\/\/\*\*\*\@127\.0\.0\.1:notaport'/,
	'log_statement shows the statement with the credentials masked');
like($log, qr/CONTEXT:  .*set_config/, 'the CONTEXT of the DO block is logged, masked');
unlike($log, qr/STATEMENT:  [^\n]*redis_url/i, 'no STATEMENT: line repeats a statement that carries a password');
unlike(slurp_file($node->data_dir . '/postgresql.auto.conf'), qr/\Q$url_secret\E/,
	'and holds no password once the URL is reset');
sql(q{ALTER SYSTEM RESET log_statement; ALTER SYSTEM RESET log_min_duration_statement;
      SELECT pg_reload_conf()});

#### Sentinels that require a password

my $sentinel = start_sentinel(
	master_port => $port,
	requirepass => $sent_pw,
	acl_user => [ 'wtsent', $sent_acl_pw ],
	master_auth => [ undef, $pw ]);
my $sport = $sentinel->port;
my $sentfile = write_secret("$dir/sentinel.pw", "$sent_pw\n", 0600);

set_and_reload("wtcache.redis_sentinels = '127.0.0.1:$sport'", "wtcache.redis_master_name = 'mymaster'");
like(wait_for_worker_error(qr/Sentinel .*password/), qr/Sentinel 127\.0\.0\.1:$sport requires a password/,
	'without wtcache.redis_sentinel_password_file the Sentinel refuses, and the worker says so');

set_and_reload("wtcache.redis_sentinel_password_file = '$sentfile'");
ok(wait_connected_via_sentinel(), 'with it, the worker finds the master through the Sentinel');
sql(q{INSERT INTO t VALUES (104, 'through the Sentinel')});
ok(wait_drained($node, $db, '30s'), 'and delivers to it');
is(read_from_redis(104), 'through the Sentinel',
	'reads find the master through the Sentinel too');

# the Sentinel's ACL user, whose password is not the requirepass one
write_secret($sentfile, "$sent_acl_pw\n", 0600);
set_and_reload("wtcache.redis_sentinel_user = 'nosuchuser'");
like(wait_for_worker_error(qr/authentication failed/), qr/Sentinel 127\.0\.0\.1:$sport: authentication failed/,
	'a wrong Sentinel user is refused by the Sentinel');
set_and_reload("wtcache.redis_sentinel_user = 'wtsent'");
ok(wait_connected_via_sentinel(), 'the Sentinel ACL user of wtcache.redis_sentinel_user logs in');
sql(q{INSERT INTO t VALUES (105, 'as wtsent')});
ok(wait_drained($node, $db, '30s'), 'and delivery goes on');
compare_table_ok($node, $db, 't', $port, 'Redis matches the table at the end');

#### Nowhere a password

($ret, $out, $err) = $node->psql($db,
	q{SELECT string_agg(name || '=' || coalesce(setting, ''), E'\n') FROM pg_settings WHERE name LIKE 'wtcache.%'},
	connstr => $mon);
like($out, qr/redis_sentinel_password_file=\Q$sentfile\E/, 'a pg_monitor member sees the file names');
my $status = sql(q{SELECT string_agg(coalesce(last_error, '') || ' ' || coalesce(redis_address, ''), ' ')
                   FROM wtcache.worker_status()});
my $whole_log = slurp_file($node->logfile);
for my $what (sort keys %secrets)
{
	unlike($out, qr/\Q$secrets{$what}\E/, "pg_settings shows a pg_monitor member not $what");
	unlike($status, qr/\Q$secrets{$what}\E/, "worker_status() does not show $what");
	unlike($whole_log, qr/\Q$secrets{$what}\E/, "the server log does not show $what");
}

$node->stop;
done_testing();
