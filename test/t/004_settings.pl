# Settings: wtcache.redis_url reloads to another Redis; bad URLs are
# refused; an unreachable Redis is logged with a hint; the password in the
# URL stays out of the log, out of the status views and hidden from
# non-superusers.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $user = 'wtuser';
my $password = 'Pw-s3cret-7f2b9c';
my $wrong_password = 'Wrong-pw-5e81d0';

my $redis1 = start_redis(name => 'redis1');
my $redis2 = start_redis(name => 'redis2');
# Only the ACL user can do anything on redis3: the worker must AUTH.
my $redis3 = start_redis(
	name => 'redis3',
	auth => [ $user, $password ],
	args => [
		'--user', $user, 'on', ">$password", '~*', '&*', '+@all',
		'--user', 'default', 'off'
	]);
my ($p1, $p2, $p3) = map { $_->port } $redis1, $redis2, $redis3;
my $closed_port = PostgreSQL::Test::Cluster::get_free_port();    # nothing listens

my $node = new_wtcache_node('settings', redis_port => $p1);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub in_redis
{
	my ($port, $id) = @_;
	my $v = redis_cmd($port, 'GET', redis_key_of($node, $db, 't', $id));
	my ($ver, $rest) = redis_row_version($v);
	return defined $ver ? '{' . $rest : $v;
}

sub set_url
{
	my ($url) = @_;
	sql("ALTER SYSTEM SET wtcache.redis_url = '$url'");
	sql('SELECT pg_reload_conf()');
	return;
}

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;
});
ok(wait_drained($node, $db), 'rows delivered to the first Redis');
compare_table_ok($node, $db, 't', $p1, 'first Redis matches the table');

#### Reload to a second Redis

set_url("redis://127.0.0.1:$p2");
ok($node->poll_query_until($db, qq{SELECT EXISTS (SELECT 1 FROM wtcache.worker_status()
	               WHERE redis_address LIKE '%$p2%' AND connected)}),
	'after pg_reload_conf() the worker is connected to the second Redis');
sql(q{INSERT INTO t VALUES (101, 'after reload'); UPDATE t SET v = 'updated after reload' WHERE id = 1});
ok(wait_drained($node, $db), 'wait() true after the reload');
is(in_redis($p2, 101), row_json($node, $db, 't', 'id = 101'), 'a new row lands in the second Redis');
is(in_redis($p2, 1), row_json($node, $db, 't', 'id = 1'), 'an update lands in the second Redis');
is(in_redis($p1, 101), undef, 'the new row is not written to the first Redis');
like(in_redis($p1, 1), qr/"v":"v1"/, 'the first Redis keeps the old value of row 1');
compare_table_ok($node, $db, 't', $p2, 'second (empty) Redis is filled with every row');
like(sql(q{SELECT redis_address FROM wtcache.status WHERE table_name = 't'::regclass}),
	qr/$p2/, 'wtcache.status shows the new address');

#### Bad URLs are refused

for my $bad (
	'http://127.0.0.1:6379',
	'redis://127.0.0.1:notaport',
	'redis://127.0.0.1:70000',
	'redis://127.0.0.1:6379/notadb',
	'redis://127.0.0.1:6379 trailing')
{
	my ($ret, $out, $err) = $node->psql($db,
		"ALTER SYSTEM SET wtcache.redis_url = '$bad'");
	isnt($ret, 0, "ALTER SYSTEM refuses the URL '$bad'");
	like($err, qr/ERROR:.*(invalid|redis_url)/i, "... with an error about the value ('$bad')");
}
unlike(slurp_file($node->data_dir . '/postgresql.auto.conf'), qr/notaport|70000|http:/,
	'no refused URL was written to postgresql.auto.conf');
my ($ret, $out, $err) = $node->psql($db, "SET wtcache.redis_url = 'redis://127.0.0.1:$p1'");
isnt($ret, 0, 'wtcache.redis_url cannot be changed with SET in a session');

#### Unreachable Redis: log line with a hint

my $offset = -s $node->logfile;
set_url("redis://127.0.0.1:$closed_port");
my $log_end = $node->wait_for_log(qr/could not connect to Redis/, $offset);
my $log = slurp_file($node->logfile, $offset);
# The message with its DETAIL/HINT/CONTEXT lines.
my ($message) = $log =~ /(could not connect to Redis[^\n]*(?:\n[^\n]*(?:DETAIL|HINT|CONTEXT):  [^\n]*)*)/;
note("logged: $message");
like($message, qr/\n[^\n]*HINT:  \S/, '"could not connect to Redis" is logged with a HINT');
like($message, qr/$closed_port/, 'the logged message names the unreachable port');
ok($node->poll_query_until($db,
		q{SELECT NOT connected FROM wtcache.status WHERE table_name = 't'::regclass}),
	'wtcache.status shows connected = false for an unreachable Redis');
sql(q{INSERT INTO t VALUES (102, 'while unreachable')});
is(sql(q{SELECT wtcache.wait('300ms')}), 'f', 'wait() returns false while Redis is unreachable');

#### A password in the URL

# Set in postgresql.conf and applied by a restart here; the wrong password
# below arrives by a reload, whose "parameter ... changed to ..." line the
# postmaster logs and wtcache redacts.
sql('ALTER SYSTEM RESET wtcache.redis_url');
$node->append_conf('postgresql.conf',
	"wtcache.redis_url = 'redis://$user:$password\@127.0.0.1:$p3'");
$node->restart;
ok(wait_drained($node, $db), 'wait() true with an authenticated Redis (user:password in the URL)');
compare_table_ok($node, $db, 't', $p3, 'the password-protected Redis matches the table');

sql(q{CREATE ROLE alice LOGIN});
my $alice = $node->connstr($db) . ' user=alice';
($ret, $out, $err) = $node->psql($db, 'SHOW wtcache.redis_url', connstr => $alice);
isnt($ret, 0, 'a non-superuser cannot SHOW wtcache.redis_url');
like($err, qr/must be superuser|permission denied|pg_read_all_settings/,
	'... refused for lack of privilege');
unlike($out, qr/\Q$password\E/, '... and sees no password');
($ret, $out, $err) = $node->psql($db, q{SELECT current_setting('wtcache.redis_url')},
	connstr => $alice);
isnt($ret, 0, 'a non-superuser cannot read wtcache.redis_url with current_setting()');
($ret, $out, $err) = $node->psql($db,
	q{SELECT coalesce(string_agg(setting || reset_val || coalesce(boot_val, ''), ' '), '')
	  FROM pg_settings WHERE name = 'wtcache.redis_url'},
	connstr => $alice);
unlike($out, qr/\Q$password\E/, 'pg_settings shows a non-superuser no password');
# wtcache.status shows a table's row to roles that can see the table
sql(q{GRANT SELECT ON t TO alice});
($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.status}, connstr => $alice);
is($ret, 0, 'a non-superuser can read wtcache.status') or diag($err);
unlike($out, qr/\Q$password\E/, 'wtcache.status shows no password');
like($out, qr/$p3/, 'wtcache.status shows the address of the password-protected Redis');

# Failures with a password in the URL: Redis down, and a wrong password.
$offset = -s $node->logfile;
$redis3->stop;
sql(q{INSERT INTO t VALUES (103, 'while redis3 is down')});
$node->wait_for_log(qr/could not (connect to|deliver changes to) Redis/, $offset);
pass('the lost connection to the password-protected Redis is logged');
is(sql(q{SELECT wtcache.wait('300ms')}), 'f', 'wait() false while it is down');
$redis3->start;
ok(wait_drained($node, $db), 'delivery resumes when it is back');

$node->append_conf('postgresql.conf',
	"wtcache.redis_url = 'redis://$user:$wrong_password\@127.0.0.1:$p3'");
$offset = -s $node->logfile;
$node->reload;
$node->wait_for_log(qr/wtcache\.redis_url" changed to/, $offset);
sql(q{INSERT INTO t VALUES (104, 'wrong password')});
is(sql(q{SELECT wtcache.wait('2s')}), 'f', 'wait() false with a wrong password');
ok($node->poll_query_until($db,
		q{SELECT count(*) > 0 FROM wtcache.worker_status() WHERE last_error IS NOT NULL}),
	'worker_status() reports an error for the wrong password');
my $last_error = sql(q{SELECT string_agg(coalesce(last_error, '') || ' ' || coalesce(redis_address, ''), ' ')
                       FROM wtcache.worker_status()});
note("worker_status with a wrong password: $last_error");
unlike($last_error, qr/\Q$wrong_password\E|\Q$password\E/, 'worker_status() shows no password');
is(in_redis($p3, 104), undef, 'nothing is written with a wrong password');

my $whole_log = slurp_file($node->logfile);
unlike($whole_log, qr/\Q$password\E/, 'the password never appears in the server log');
unlike($whole_log, qr/\Q$wrong_password\E/, 'the wrong password never appears in the server log');
like($whole_log, qr/could not connect to Redis/, 'the log does have the connection errors');
like($whole_log, qr{"wtcache\.redis_url" changed to "redis://\*\*\*\@127\.0\.0\.1:$p3"},
	'the reload is logged with the credentials masked');

$node->stop;
done_testing();
