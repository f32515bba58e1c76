# With synchronous standbys, only changes they have flushed reach Redis:
# a writer committing with synchronous_commit = local makes its change
# visible on the primary before any standby has it, and a failover then
# would lose it while Redis kept it.  The worker waits for the standbys as
# a synchronous commit would.
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
my $primary = new_wtcache_node('primary', redis_port => $rp,
	extra_conf => "wal_level = replica\nmax_wal_senders = 4\n");
my $db = 'postgres';
sub sql { return $primary->safe_psql($db, $_[0]); }

sql(q{CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('t');});
$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = 'standby'");
$primary->reload;
ok($primary->poll_query_until($db, q{SELECT sync_state = 'sync' FROM pg_stat_replication}),
	'the standby is synchronous');

sql(q{INSERT INTO t VALUES (1, 'with the standby')});
ok(wait_drained($primary, $db), 'delivered while the standby is there');

$standby->stop;
sql(q{SET synchronous_commit = local; INSERT INTO t VALUES (2, 'primary only')});
ok($primary->poll_query_until($db,
	q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'wtcache worker' AND wait_event = 'SyncRep'}),
	'the worker waits for the standby, as a synchronous commit would');
is(redis_cmd($rp, 'EXISTS', redis_key_of($primary, $db, 't', 2)), 0,
	'and Redis does not have the change the standby lacks');

# A reader's fill gives the row the last queue id handed out as its
# version; while that id's WAL is not on the standby, a failover could
# hand the id out again, and the next change of the row would be refused.
my $k1 = redis_key_of($primary, $db, 't', 1);
# more queue ids than the sequence logs ahead (32), one per transaction:
# at least one new sequence record the standby lacks
sql(q{SET synchronous_commit = local;} . join('', map { "INSERT INTO t VALUES ($_, 'more');" } 3 .. 50));
redis_cmd($rp, 'DEL', $k1);    # as an eviction would
is(sql(q{SELECT wtcache.get('t', '1')->>'v'}), 'with the standby',
	'a read of an evicted row while the standby is away returns it');
is(redis_cmd($rp, 'EXISTS', $k1), 0, 'but does not fill it with a version the standby lacks');

$standby->start;
ok(wait_drained($primary, $db), 'once the standby is back, it is delivered');
is(sql(q{SELECT wtcache.get('t', '1')->>'v'}), 'with the standby', 'the evicted row is read again');
ok(defined((redis_row_version(redis_cmd($rp, 'GET', $k1)))[0]), 'and filled now');
compare_table_ok($primary, $db, 't', $rp, 'Redis equals the table');

$standby->stop;
$primary->stop;
done_testing();
