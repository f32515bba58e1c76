# DROP EXTENSION wtcache as README says it goes: refused while tables are
# watched, unless CASCADE (which drops the capture triggers, not the
# tables); the worker goes away; writes go on uncaptured; a later CREATE
# EXTENSION finds in Redis versions it never handed out, clears the
# database's keys, and a new watch delivers from scratch.
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
my $node = new_wtcache_node('dropext', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL);
SELECT wtcache.watch('acct');
INSERT INTO acct SELECT i, i FROM generate_series(1, 100) i;
UPDATE acct SET balance = balance + 1;
});
ok(wait_drained($node, $db, '30s'), 'delivered before the drop');
my $pattern = table_key_pattern($node, $db, 'acct');
is(scalar @{ redis_row_keys($rp, $pattern) }, 100, '100 row keys in Redis');
my $worker = wait_for_worker($node, $db);
ok(defined $worker, 'the database has a worker');

my ($ret, $out, $err) = $node->psql($db, 'DROP EXTENSION wtcache');
isnt($ret, 0, 'DROP EXTENSION without CASCADE is refused while a table is watched');
like($err, qr/trigger wtcache_capture_upd on table acct depends on/,
	'the error names the capture triggers');

sql('DROP EXTENSION wtcache CASCADE');
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'acct'::regclass}), '0',
	'CASCADE dropped the capture triggers');
is(sql('SELECT count(*) FROM acct'), '100', 'and kept the table');
ok($node->poll_query_until($db,
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $worker"),
	'the worker exits');
sql('UPDATE acct SET balance = 0 WHERE id = 1');
is(scalar @{ redis_row_keys($rp, $pattern) }, 100,
	'Redis keeps the keys (nothing purges them)');

# Again: the new extension's versions start low, Redis holds higher ones.
my $log_offset = -s $node->logfile;
sql('CREATE EXTENSION wtcache');
ok(defined wait_for_worker($node, $db), 'a new worker starts');
ok($node->wait_for_log(qr/wtcache: Redis at \S+ lost data \(Redis held versions this database never handed out: it was restored or recreated\); removed \d+ keys/, $log_offset),
	'the new worker finds Redis ahead, clears its keys and logs it');
is(scalar @{ redis_row_keys($rp, $pattern) }, 0,
	'the keys from before the drop are gone');

sql(q{SELECT wtcache.watch('acct', warm => true)});
ok(wait_drained($node, $db, '30s'), 'a new watch delivers');
compare_table_ok($node, $db, 'acct', $rp, 'Redis matches the table, the uncaptured write included');
is(sql(q{SELECT wtcache.get('acct', '1')->>'balance'}), '0', 'get() serves the row written while unwatched');

done_testing();
