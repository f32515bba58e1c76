# A TRUNCATE is delivered in its place among its table's changes, never
# after later ones (found as a bug: it once was).
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

sql(q{CREATE TABLE t1 (id int PRIMARY KEY, v text);
      CREATE TABLE t2 (id int PRIMARY KEY, v text);
      SELECT wtcache.watch('t1'); SELECT wtcache.watch('t2');
      INSERT INTO t1 SELECT i, 'old' FROM generate_series(1000, 1010) i;});
ok(wait_drained($node, $db), 'initial rows delivered');

# Pause delivery, queue: one change of t2, the TRUNCATE of t1, then 70
# single-row inserts into t1, each its own transaction (its own queue row).
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
$node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1});
sql(q{INSERT INTO t2 VALUES (1, 'x')});
sql(q{TRUNCATE t1});
sql(join('', map { "INSERT INTO t1 VALUES ($_, 'after the truncate');\n" } 1 .. 70));
note(sql(q{SELECT string_agg(id || ':' || coalesce(array_length(keys, 1)::text, 'whole table'), ' ' ORDER BY id) FROM wtcache.queue}));
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'queue delivered');
is(sql(q{SELECT count(*) FROM wtcache.verify('t1')}), '0', 'verify(t1): no difference')
  or diag(sql(q{SELECT string_agg(array_to_string(key, ',') || ' ' || problem, '; ') FROM wtcache.verify('t1')}));
compare_table_ok($node, $db, 't1', $rp, 't1 matches Redis');
$node->stop;
done_testing();
