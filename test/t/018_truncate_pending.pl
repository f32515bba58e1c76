# A batch that stops before a whole-table (TRUNCATE) entry must not release
# that entry's pending counters when it is acknowledged (found as a bug:
# it once did).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WtcacheTest;

# The worker's Redis user loses SCAN after the setup: a TRUNCATE's purge
# fails (and is retried) while row changes are delivered.
my @acl = qw(~wtc:* &wtc:events -@all
  +get +set +del +unlink +exists +getrange +mget +mset +incr +hmget +hset +pexpire +scan
  +evalsha +script|load +publish +pubsub|numsub +pubsub|numpat +time +role
  +select +ping);
my $redis = start_redis(args => [ '--user', 'wtcache', 'on', '>pw', @acl ]);
my $rp = $redis->port;
my $node = new_wtcache_node('repro', redis_url => "redis://wtcache:pw\@127.0.0.1:$rp");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }
sub pause { sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
	$node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1}); }
sub resume { sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();}); }

sql(q{CREATE TABLE t1 (id int PRIMARY KEY, v text);
      CREATE TABLE t2 (id int PRIMARY KEY, v text);
      SELECT wtcache.watch('t1'); SELECT wtcache.watch('t2');
      INSERT INTO t2 SELECT i, 'before the truncate' FROM generate_series(1, 5) i;});
ok(wait_drained($node, $db), 'rows of t2 delivered');
is(sql(q{SELECT wtcache.get('t2', '1')->>'v'}), 'before the truncate', 'read of t2 row 1');

redis_cmd($rp, 'ACL', 'SETUSER', 'wtcache', '-scan');
pause();
# a queue row of tags only (wtcache.invalidate()), then the TRUNCATE
sql(q{SELECT wtcache.invalidate(ARRAY['some tag'])});
sql(q{TRUNCATE t2});
resume();
# the worker delivers t1's change, then fails on the purge, again and again
$node->poll_query_until($db, q{SELECT count(*) = 1 FROM wtcache.queue});
usleep(500_000);
is(sql(q{SELECT string_agg(coalesce(array_to_string(keys, ','), 'whole table ' || table_key), ' ') FROM wtcache.queue}),
	'whole table postgres:public.t2', 'the TRUNCATE is still queued (its purge fails)');
is(sql(q{SELECT count(*) FROM t2}), '0', 't2 is empty');
note(sql(q{SELECT string_agg(table_name || ' hits ' || read_hits || ' bypasses ' || read_bypasses || ' fallbacks ' || read_fallbacks || ' ' || worker_state, '; ') FROM wtcache.status}));
is(sql(q{SELECT wtcache.get('t2', '1')}), '', 'a read after the TRUNCATE committed returns no row');
note(sql(q{SELECT string_agg(table_name || ' hits ' || read_hits || ' bypasses ' || read_bypasses || ' fallbacks ' || read_fallbacks || ' ' || worker_state, '; ') FROM wtcache.status}));
done_testing();
