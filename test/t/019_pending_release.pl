# A TRUNCATE that was not first in its claim releases its table's pending
# counter once: released twice (a bug it once had), the counter wraps and
# reads of the table never use Redis again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('repro', redis_port => $rp);
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }
sub stat_of { sql("SELECT $_[1] FROM wtcache.status WHERE table_name = '$_[0]'::regclass") }

sql(q{CREATE TABLE t1 (id int PRIMARY KEY, v text);
      CREATE TABLE t2 (id int PRIMARY KEY, v text);
      SELECT wtcache.watch('t1'); SELECT wtcache.watch('t2');
      INSERT INTO t2 SELECT i, 'v' FROM generate_series(1, 5) i;});
ok(wait_drained($node, $db), 'delivered');
sql(q{SELECT wtcache.get('t2', '1')});
my $h0 = stat_of('t2', 'read_hits');
sql(q{SELECT wtcache.get('t2', '1')});
is(stat_of('t2', 'read_hits') - $h0, 1, 'before: a read of t2 is a Redis hit');

sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
$node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1});
sql(join('', map { "INSERT INTO t1 VALUES ($_, 'x');\n" } 1 .. 65));
sql(q{TRUNCATE t2});
sql(q{INSERT INTO t2 VALUES (7, 'after')});
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'delivered');
compare_table_ok($node, $db, 't2', $rp, 't2 matches Redis');
sql(q{SELECT wtcache.get('t2', '7')});
$h0 = stat_of('t2', 'read_hits');
my $b0 = stat_of('t2', 'read_bypasses');
sql(q{SELECT wtcache.get('t2', '7')}) for 1 .. 5;
is(stat_of('t2', 'read_hits') - $h0, 5, 'after: reads of t2 are Redis hits again')
  or diag('read_bypasses grew by ' . (stat_of('t2', 'read_bypasses') - $b0));
done_testing();
