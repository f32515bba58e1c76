# A TRUNCATE is delivered in its place among its table's changes, never
# after later ones (found as a bug: it once was).  And the worker never
# waits for a table's lock while it holds another's, so a transaction
# that truncates two watched tables in the other order cannot deadlock
# with it (found by the fuzzer: the deadlock detector ended the claim).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
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

#### the worker holds t1 and needs t2 while a transaction holds t2 and wants t1

sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
$node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1});
sql(q{INSERT INTO t1 VALUES (2000, 'first in the queue')});
sql(q{INSERT INTO t2 VALUES (2000, 'second')});
my $s1 = $node->background_psql($db);
$s1->query_safe(q{BEGIN; TRUNCATE t2;});
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
# The worker has claimed t1's row: it waits for t2 (before the fix), or
# it delivered t1's row without t2's (after).
my $t1_key = redis_key_of($node, $db, 't1', 2000);
my $waiting = q{SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
	WHERE a.backend_type = 'wtcache worker' AND NOT l.granted AND l.relation = 't2'::regclass)};
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
until (defined redis_cmd($rp, 'GET', $t1_key) || sql($waiting) eq 't')
{
	die 'the worker neither delivered t1 nor waited for t2' if time > $deadline;
	usleep(20_000);
}
my $offset = -s $node->logfile;
my $ok = eval { $s1->query_safe(q{TRUNCATE t1; COMMIT;}); 1 };
ok($ok, 'the transaction truncating t2 then t1 commits') or diag($@);
$s1->quit;
ok(wait_drained($node, $db), 'and everything is delivered');
unlike(slurp_file($node->logfile, $offset), qr/deadlock detected/, 'no deadlock');
compare_table_ok($node, $db, 't1', $rp, 't1 matches Redis after the truncates');
compare_table_ok($node, $db, 't2', $rp, 't2 matches Redis after the truncates');
$node->stop;
done_testing();
