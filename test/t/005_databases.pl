# One worker per database that has the extension, and database-level DDL:
# CREATE EXTENSION in a database created while the server runs gets a
# worker; the same table name in two databases gives two sets of keys;
# DROP DATABASE, ALTER DATABASE ... RENAME TO and CREATE DATABASE ...
# TEMPLATE of a served database succeed (the worker steps aside) and the
# worker comes back or its slot is freed.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
# Three slots: enough for postgres and two more, so that a slot left
# behind by a dropped database would leave the next one without a worker.
my $node = new_wtcache_node('dbs', redis_port => $rp,
	extra_conf => 'wtcache.max_databases = 3');

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }

sub setup_items
{
	my ($db, $n) = @_;
	sql($db, qq{
CREATE TABLE items (id int PRIMARY KEY, label text);
SELECT wtcache.watch('items');
INSERT INTO items SELECT i, '$db ' || i FROM generate_series(1, $n) i;
});
	return;
}

sub worker_backends
{
	my ($db) = @_;
	return sql('postgres', qq{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'wtcache worker' AND datname = '$db'});
}

#### Two databases, same table name, distinct keys

sql('postgres', 'CREATE DATABASE shop');
sql('postgres', 'CREATE DATABASE plain');    # never gets the extension
sql('shop', 'CREATE EXTENSION wtcache');
ok(defined wait_for_worker($node, 'shop'), 'CREATE EXTENSION in a new database starts its worker');

setup_items('postgres', 50);
setup_items('shop', 70);
ok(wait_drained($node, 'postgres'), 'postgres drained');
ok(wait_drained($node, 'shop'), 'shop drained');
compare_table_ok($node, 'postgres', 'items', $rp, 'postgres.items in Redis');
compare_table_ok($node, 'shop', 'items', $rp, 'shop.items in Redis, under its own keys');
isnt(redis_key_of($node, 'postgres', 'items', 1), redis_key_of($node, 'shop', 'items', 1),
	'the same row key in two databases names two Redis keys');
like(redis_cmd($rp, 'GET', redis_key_of($node, 'shop', 'items', 1)), qr/"shop 1"/,
	'the shop row holds shop data');

is(worker_backends('plain'), '0', 'no worker stays in a database without the extension');

#### DROP DATABASE of a served database

# Changes still queued when the database goes: nothing to deliver anymore.
$redis->stop;
sql('shop', q{UPDATE items SET label = 'unsent'});
my $shop_pid = worker_pid($node, 'shop');
ok(defined $shop_pid, 'shop has a running worker');
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE shop');
is($ret, 0, 'DROP DATABASE of a database with a running worker succeeds')
  or diag($err);
$redis->start;
is(sql('postgres', q{SELECT count(*) FROM pg_database WHERE datname = 'shop'}), '0',
	'the database is gone');
is(sql('postgres', q{SELECT count(*) FROM wtcache.worker_status() w
	LEFT JOIN pg_database d ON d.oid = w.database_oid WHERE d.oid IS NULL}), '0',
	'no worker slot is left for the dropped database');

# Its slot is free again: a third database gets a worker.
sql('postgres', 'CREATE DATABASE shop2');
sql('shop2', 'CREATE EXTENSION wtcache');
ok(defined wait_for_worker($node, 'shop2'), 'a database created after the drop gets a worker (slot reused)');
setup_items('shop2', 30);
ok(wait_drained($node, 'shop2'), 'shop2 drained');
compare_table_ok($node, 'shop2', 'items', $rp, 'shop2.items in Redis');

#### A failed DROP DATABASE brings the worker back

my $blocker = $node->background_psql('shop2');
$blocker->query_safe('SELECT 1');
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE shop2');
isnt($ret, 0, 'DROP DATABASE fails while a client session is connected');
like($err, qr/being accessed by other users/, '... for that reason');
$blocker->quit;
ok(defined wait_for_worker($node, 'shop2'), 'the worker is back after the failed DROP');
sql('shop2', q{UPDATE items SET label = 'after failed drop' WHERE id <= 5});
ok(wait_drained($node, 'shop2'), 'and delivers again');
compare_table_ok($node, 'shop2', 'items', $rp, 'shop2.items in Redis after the failed DROP');

#### ALTER DATABASE ... RENAME TO

($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE shop2 RENAME TO shop3');
is($ret, 0, 'ALTER DATABASE RENAME of a served database succeeds') or diag($err);
ok(defined wait_for_worker($node, 'shop3'), 'the worker is back after the rename');
sql('shop3', q{UPDATE items SET label = 'renamed' WHERE id % 3 = 0});
ok(wait_drained($node, 'shop3'), 'shop3 drained');
# A new database name is a new key space: the worker fills it in full.
compare_table_ok($node, 'shop3', 'items', $rp, 'shop3.items in Redis under the new name');
is(redis_key_of($node, 'shop3', 'items', 1) =~ /shop3/ ? 1 : 0, 1,
	'keys carry the new database name');

#### CREATE DATABASE ... TEMPLATE of a served database

sql('shop3', q{UPDATE items SET label = 'template' WHERE id = 1});
($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE branch TEMPLATE shop3');
is($ret, 0, 'CREATE DATABASE with a served database as template succeeds') or diag($err);
ok(defined wait_for_worker($node, 'branch'), 'the copy gets a worker of its own');
ok(defined wait_for_worker($node, 'shop3'), 'the template gets its worker back');
ok(wait_drained($node, 'branch'), 'branch drained');
compare_table_ok($node, 'branch', 'items', $rp, 'branch.items in Redis (resynced under its name)');
sql('shop3', q{UPDATE items SET label = 'template 2' WHERE id = 2});
ok(wait_drained($node, 'shop3'), 'shop3 drained');
compare_table_ok($node, 'shop3', 'items', $rp, 'shop3.items still in step');

#### The postgres database was served throughout

sql('postgres', q{UPDATE items SET label = 'end'});
ok(wait_drained($node, 'postgres'), 'postgres drained');
compare_table_ok($node, 'postgres', 'items', $rp, 'postgres.items in Redis at the end');

#### Who sees which database's worker

# A plain role sees its own database's worker, a pg_monitor member and a
# superuser every database's; the address never carries credentials.
sql('postgres', q{CREATE ROLE plain_user LOGIN; CREATE ROLE monitor_user LOGIN IN ROLE pg_monitor});
my $own_db = q{(SELECT oid FROM pg_database WHERE datname = current_database())};
sub workers_seen
{
	my ($user, $which) = @_;
	return $node->safe_psql('postgres',
		qq{SELECT count(*) FROM wtcache.worker_status() WHERE database_oid $which $own_db},
		extra_params => [ '-U', $user ]);
}
is(workers_seen('plain_user', '='), '1', 'a plain role sees its own database\'s worker');
is(workers_seen('plain_user', '<>'), '0', 'but no other database\'s');
is(workers_seen('monitor_user', '<>'), '2', 'a pg_monitor member sees the other databases\' workers');
is(workers_seen($node->safe_psql('postgres', 'SELECT current_user'), '<>'), '2', 'so does a superuser');
unlike($node->safe_psql('postgres', 'SELECT wtcache.metrics()', extra_params => [ '-U', 'plain_user' ]),
	qr/database="(shop3|branch)"/, 'metrics() shows a plain role no other database');
like($node->safe_psql('postgres', 'SELECT wtcache.metrics()', extra_params => [ '-U', 'monitor_user' ]),
	qr/wtcache_worker_up\{database="shop3"\}/, 'and a pg_monitor member every one');

# With credentials in the URL (wrong ones: the worker keeps failing), no
# column of worker_status() shows them, to anyone.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET wtcache.redis_url = 'redis://md_user:s3cr3t_pw\@127.0.0.1:$rp'; SELECT pg_reload_conf()");
ok($node->poll_query_until('postgres',
		qq{SELECT last_error IS NOT NULL AND redis_address IS NOT NULL FROM wtcache.worker_status()
		    WHERE database_oid = $own_db AND last_error_at > now() - interval '1 minute'
		      AND last_error LIKE '%WRONGPASS%'}),
	'the worker fails to authenticate with the wrong credentials');
for my $user ('plain_user', 'monitor_user')
{
	is($node->safe_psql('postgres',
			q{SELECT count(*) FROM wtcache.worker_status() w WHERE w::text ~ 's3cr3t_pw|md_user'},
			extra_params => [ '-U', $user ]),
		'0', "no credentials in worker_status() for $user");
}
is($node->safe_psql('postgres', qq{SELECT redis_address FROM wtcache.worker_status() WHERE database_oid = $own_db}),
	"127.0.0.1:$rp", 'redis_address is host:port');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET wtcache.redis_url; SELECT pg_reload_conf()');

my $log = slurp_file($node->logfile);
unlike($log, qr/database \d+ does not exist/, 'no worker tried to connect to a dropped database');

$node->stop;
done_testing();
