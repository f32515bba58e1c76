# A streaming standby runs no delivery worker and writes nothing to Redis,
# even with changes queued; once promoted, it drains the queue it
# replicated, and Redis matches the tables.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis_primary = start_redis(name => 'redis_primary');
my $redis_standby = start_redis(name => 'redis_standby');
my ($pp, $sp) = ($redis_primary->port, $redis_standby->port);

my $primary = new_wtcache_node('primary', redis_port => $pp,
	extra_conf => "wal_level = replica\nmax_wal_senders = 4");
my $db = 'postgres';

$primary->safe_psql($db, q{
CREATE TABLE acct (id bigint PRIMARY KEY, owner text, balance numeric);
SELECT wtcache.watch('acct');
INSERT INTO acct SELECT i, 'owner ' || i, i * 10 FROM generate_series(1, 1000) i;
});
ok(wait_drained($primary, $db), 'primary drained its first changes');
compare_table_ok($primary, $db, 'acct', $pp, 'primary Redis matches');

$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
# The standby points at its own Redis: whatever it wrote would show there.
$standby->append_conf('postgresql.conf', "wtcache.redis_url = 'redis://127.0.0.1:$sp'");
$standby->start;

#### Changes queued on the primary while its Redis is down

$redis_primary->stop;
$primary->safe_psql($db, q{
UPDATE acct SET balance = balance + 1 WHERE id % 2 = 0;
DELETE FROM acct WHERE id > 900;
INSERT INTO acct SELECT i, 'late ' || i, 0 FROM generate_series(2001, 2100) i;
});
my $queued = $primary->safe_psql($db, 'SELECT count(*) FROM wtcache.queue');
cmp_ok($queued, '>', 0, "primary has $queued changes queued");
$primary->wait_for_catchup($standby, 'replay');

is($standby->safe_psql($db, 'SELECT count(*) FROM wtcache.queue'), $queued,
	'the queue is replicated to the standby');
is($standby->safe_psql($db, q{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type IN ('wtcache worker', 'wtcache launcher')}), '0',
	'no wtcache launcher or worker runs on the standby');
is(redis_cmd($sp, 'DBSIZE'), 0, 'the standby wrote nothing to its Redis');
my ($ret, $out, $err) = $standby->psql($db, q{SELECT wtcache.wait('0s')});
is($out, 'f', 'wait() on the standby says the queue is not drained');

#### Promotion

$primary->stop('immediate');
$standby->promote;
ok(wait_drained($standby, $db, '60s'), 'the promoted standby drains the replicated queue');
compare_table_ok($standby, $db, 'acct', $sp, 'Redis matches the promoted server');
ok(defined worker_pid($standby, $db), 'the promoted server runs a delivery worker');

$standby->safe_psql($db, q{UPDATE acct SET owner = 'after promotion' WHERE id <= 10});
ok(wait_drained($standby, $db), 'new writes on the promoted server drain');
compare_table_ok($standby, $db, 'acct', $sp, 'and reach Redis');

$standby->stop;
done_testing();
