# A prepared transaction may outlive any number of restarts.  After a
# restart the pending filter (src/pending.c) is empty until the worker has
# counted the queue, and reads go to the tables meanwhile; the count must
# not wait for prepared transactions (it once did, forever), must count
# their queue rows (their keys must not be served from Redis while they are
# prepared), and must take those counts back on ROLLBACK PREPARED.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('prepared', redis_port => $rp,
	extra_conf => "max_prepared_transactions = 4\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sub reads_use_redis
{
	return $node->poll_query_until($db,
		q{SELECT reads_use_redis FROM wtcache.worker_status()
		  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

# A get() of the key that Redis answered, told by the table's hit counter.
sub is_hit
{
	my ($id) = @_;
	my $before = sql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 't'::regclass});
	my $v = sql("SELECT wtcache.get('t', '$id')->>'v'");
	my $after = sql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 't'::regclass});
	return ($after > $before, $v);
}

sql(q{CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
      INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g;
      SELECT wtcache.watch('t');});
ok(wait_drained($node, $db), 'rows delivered');
ok(reads_use_redis(), 'reads use Redis');

sql(q{BEGIN; UPDATE t SET v = 'prepared' WHERE id = 1; PREPARE TRANSACTION 'p1'});
sql(q{BEGIN; UPDATE t SET v = 'rolled back' WHERE id = 2; PREPARE TRANSACTION 'p2'});

$node->restart;
ok(reads_use_redis(), 'after a restart, reads use Redis again while transactions are prepared');
my ($hit, $v) = is_hit(3);
($hit, $v) = is_hit(3) unless $hit;    # the first read may fill it
ok($hit && $v eq 'v3', 'a key no prepared transaction touched is served from Redis');
($hit, $v) = is_hit(1);
ok(!$hit && $v eq 'v1', 'a key a prepared transaction changed is read from the table');

# the same after a crash restart
$node->stop('immediate');
$node->start;
ok(reads_use_redis(), 'after a crash restart too');
($hit, $v) = is_hit(1);
ok(!$hit && $v eq 'v1', 'and the prepared key is still read from the table');

sql(q{COMMIT PREPARED 'p1'});
ok(wait_drained($node, $db), 'the prepared change is delivered once committed');
is(sql(q{SELECT wtcache.get('t', '1')->>'v'}), 'prepared', 'and read as committed');
ok($node->poll_query_until($db,
	q{SELECT read_hits > 0 FROM wtcache.status WHERE table_name = 't'::regclass}), 'hits counted');
($hit, $v) = is_hit(1);
ok($hit && $v eq 'prepared', 'the committed key is a Redis hit again');

sql(q{ROLLBACK PREPARED 'p2'});
# the worker settles the rolled-back rows at one of its next wake-ups
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
$hit = 0;
while (!$hit && time() < $deadline)
{
	($hit, $v) = is_hit(2);
	usleep(100_000) unless $hit;
}
ok($hit, 'after ROLLBACK PREPARED the key is served from Redis again');
is(sql(q{SELECT wtcache.get('t', '2')->>'v'}), 'v2', 'with the value that stands');
compare_table_ok($node, $db, 't', $rp, 'Redis equals the table');

#### The count under a steady load of writers

# While the filter is not ready, writers hold the filter lock a row at a
# time; the count must get its moment while they keep writing (a mere try
# once a poll interval found it held nearly every time: cached reads stayed
# off Redis as long as a bulk load lasted).  Redis is down across the
# restart and comes back empty, as after a restart without persistence:
# the worker counts only once the writers run, and right after the resync
# it then queues (which once left the filter uncounted until the next
# marker check, after the whole backlog was delivered).
sql(q{CREATE TABLE load (id bigint PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('load');
      CREATE TABLE load_stop (); });
$redis->stop;
$node->restart;
my @writers;
for my $w (1 .. 4)
{
	my ($out, $err) = ('', '');
	push @writers, IPC::Run::start([ 'psql', '-X', '-q', '-d', $node->connstr($db), '-c', qq{
DO \$load_writer\$
BEGIN
    FOR i IN 0 .. 499 LOOP
        INSERT INTO load SELECT g, 'w$w' FROM generate_series($w * 10000000 + i * 1000, $w * 10000000 + i * 1000 + 999) g;
        COMMIT;
        EXIT WHEN EXISTS (SELECT FROM load_stop);
    END LOOP;
END \$load_writer\$;} ], '<', \'', '>', \$out, '2>', \$err);
}
my $writing = q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%load_writer%' AND pid <> pg_backend_pid()};
ok($node->poll_query_until($db, q{SELECT count(*) > 0 FROM wtcache.queue WHERE relid = 'load'::regclass}),
	'the writers are writing while Redis is down');
$redis->start;
# ready, or every writer done
$node->poll_query_until($db, qq{SELECT (SELECT reads_use_redis FROM wtcache.worker_status()
                                        WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database()))
                                       OR ($writing) = 0});
my $still_writing = sql($writing);
ok(sql(q{SELECT reads_use_redis FROM wtcache.worker_status()
         WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}) eq 't'
	  && $still_writing > 0,
	"the count had its moment while the writers kept writing ($still_writing still writing)");
sql(q{INSERT INTO load_stop DEFAULT VALUES});
$_->finish for @writers;
ok(wait_drained($node, $db, '300s'), 'their rows are delivered');
is(sql(q{SELECT count(*) FROM load l WHERE l.id % 101 = 0 AND wtcache.get('load', l.id::text)->>'v' IS DISTINCT FROM l.v}), '0',
	'and reads return the table\'s rows');
compare_table_ok($node, $db, 'load', $rp, 'Redis equals the table');

$node->stop;
done_testing();
