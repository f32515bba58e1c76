# The worker's memory does not grow with the reconnections of an OOM
# episode (found by a review of issue 20's first memory-pressure code).
#
# redis_failed() drops the connection at every refusal, and each new
# connection reads INFO (read_memory_settings -> redis_info), whose reply
# (some kB) is copied with palloc into the worker's current context, the
# TopMemoryContext, and never freed; the marker check did the same at
# every marker found missing.  A long episode (retry_max apart) leaked
# without bound; the replies now go to a context reset before each.  This
# test counts the worker's memory between 20 and 220
# refusals and fails when it grew by more than 100 kB.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis(args => [ '--maxmemory-policy', 'noeviction' ]);
my $rp = $redis->port;
my $node = new_wtcache_node('review_leak', redis_port => $rp,
	extra_conf => "wtcache.retry_interval = 10\nwtcache.retry_max = 10\n");
my $db = 'postgres';
END { $redis->stop if $redis; }

sub sql { return $node->safe_psql($db, $_[0]); }

sub refusals
{
	return sql(q{SELECT oom_refusals FROM wtcache.redis_memory()
	  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

# The worker's memory, as pg_log_backend_memory_contexts() logs it.
sub worker_bytes
{
	my $pid = worker_pid($node, $db);
	my $at = -s $node->logfile;
	sql("SELECT pg_log_backend_memory_contexts($pid)");
	$node->wait_for_log(qr/\[$pid\] LOG:  Grand total: \d+ bytes/, $at);
	my ($bytes) = slurp_file($node->logfile, $at) =~ /\[$pid\] LOG:  Grand total: (\d+) bytes/;
	return $bytes;
}

sql(q{CREATE TABLE t (id int PRIMARY KEY, pad text);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'x' FROM generate_series(1, 10) i;});
ok(wait_drained($node, $db), 'delivered');

my ($used) = redis_cmd($rp, 'INFO', 'memory') =~ /^used_memory:(\d+)/m;
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', int($used / 2));
sql(q{INSERT INTO t SELECT i, repeat('y', 100) FROM generate_series(11, 20) i});
ok($node->poll_query_until($db, q{SELECT oom_refusals >= 20 FROM wtcache.redis_memory()
  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'Redis refuses the worker');
my $before = worker_bytes();
my $r0 = refusals();
ok($node->poll_query_until($db, qq{SELECT oom_refusals >= $r0 + 200 FROM wtcache.redis_memory()
  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'200 more refusals, each with a new connection');
my $after = worker_bytes();
my $r1 = refusals();
note("worker memory: $before bytes at $r0 refusals, $after at $r1");
cmp_ok($after - $before, '<', 100_000,
	'the worker\'s memory does not grow with the reconnections of an OOM episode');

redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', '0');
ok(wait_drained($node, $db), 'drained once Redis has room');
$node->stop;
done_testing();
