# No memory growth across calls and transactions: a backend's memory after
# thousands of cached reads, queries and fills is what it was after the
# first few hundred, and so is the delivery worker's after hundreds of
# batches (pg_log_backend_memory_contexts: its grand total in the log).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
# jit_above_cost = 0: every statement that may be compiled is, so a
# worker that left JIT on would load LLVM at once.
# A long poll interval: the worker gives its batches' memory back only once
# idle for one, which must not happen between two readings below.
my $node = new_wtcache_node('memory', redis_port => $rp,
	extra_conf => "jit_above_cost = 0\nwtcache.poll_interval = 600000\n");
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE acct (id int PRIMARY KEY, org_id int NOT NULL, owner text, payload jsonb);
INSERT INTO acct SELECT i, i % 10, 'owner ' || i, jsonb_build_object('n', i, 'tags', ARRAY['a', 'b'])
  FROM generate_series(1, 2000) i;
SELECT wtcache.watch('acct', tags => ARRAY['org:{org_id}'], warm => true);
});
ok(wait_drained($node, $db), 'warmed');

# One session does a round of every kind of cached read, N times over.
my $round = q{
SELECT wtcache.get('acct', (1 + (random() * 1999)::int)::text);
SELECT count(*) FROM wtcache.get_many('acct', ARRAY['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);
SELECT count(*) FROM wtcache.query('SELECT org_id, count(*) FROM acct GROUP BY org_id');
SELECT count(*) FROM wtcache.query('SELECT owner FROM acct WHERE id = $1', ARRAY[(1 + (random() * 1999)::int)::text]);
SELECT wtcache.redis_key('acct', '7');
};
my $session = $node->background_psql($db);
sub backend_bytes
{
	return $session->query_safe(q{SELECT sum(total_bytes) FROM pg_backend_memory_contexts});
}
$session->query_safe($round) for 1 .. 300;
my $before = backend_bytes();
$session->query_safe($round) for 1 .. 1500;
my $after = backend_bytes();
note("backend memory: $before bytes after 300 rounds, $after after 1,800");
cmp_ok($after - $before, '<', 256 * 1024, 'a backend does not grow over 1,500 more rounds of get, get_many, query and fills');
$session->quit;

# The worker: its grand total, logged on request, before and after batches.
my $pid = worker_pid($node, $db);
# what the worker logs of its memory contexts, asked now
sub worker_contexts
{
	my $offset = -s $node->logfile;
	sql(qq{SELECT pg_log_backend_memory_contexts($pid)});
	$node->wait_for_log(qr/Grand total: \d+ bytes/, $offset);
	return slurp_file($node->logfile, $offset);
}
sub worker_bytes { my ($bytes) = worker_contexts() =~ /Grand total: (\d+) bytes/; return $bytes; }
for (1 .. 50) { sql(q{UPDATE acct SET owner = owner || '.' WHERE id % 4 = 0}); }
ok(wait_drained($node, $db), 'first 50 batches delivered');
my $w_before = worker_bytes();
for (1 .. 300)
{
	sql(q{UPDATE acct SET owner = left(owner, 20) || '.', org_id = (org_id + 1) % 10 WHERE id % 4 = 1});
	sql(q{SELECT wtcache.invalidate(ARRAY['org:1'])}) if $_ % 10 == 0;
}
ok(wait_drained($node, $db), '300 more delivered');
my $w_after = worker_bytes();
note("worker memory: $w_before bytes, then $w_after after 300 more batches");
cmp_ok($w_after - $w_before, '<', 512 * 1024, 'the worker does not grow over 300 more batches');
is($node->safe_psql($db, q{SELECT count(*) FROM wtcache.verify('acct')}), '0', 'and Redis equals the table');

# Each wait() has the worker check its markers, from its top context: the
# replies of 300 checks must not stay there (they did: 320 bytes a
# check, in TopMemoryContext, for as long as the worker lives).
sub worker_top_used
{
	my ($used) = worker_contexts() =~ /TopMemoryContext: .*?; (\d+) used/;
	return $used;
}
sql(q{SELECT wtcache.wait()}) for 1 .. 20;
my $top_before = worker_top_used();
sql(q{SELECT wtcache.wait()}) for 1 .. 300;
my $top_after = worker_top_used();
cmp_ok($top_after - $top_before, '<', 16 * 1024,
	"300 marker checks for wait() leave nothing in the worker's top context ($top_before, then $top_after bytes used)");

# A burst (a whole table requeued, an UPDATE of every row) is delivered in
# large batches whose memory the worker keeps for the next ones; once it
# was idle for a poll interval, it gives that back.
sub worker_private_kb
{
	open(my $fh, '<', "/proc/$pid/status") or die "worker $pid: $!";
	my ($kb) = join('', <$fh>) =~ /^RssAnon:\s+(\d+) kB/m;
	return $kb;
}
sql(q{
CREATE TABLE burst (id int PRIMARY KEY, payload text NOT NULL);
INSERT INTO burst SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 100000) i;
SELECT wtcache.watch('burst');
UPDATE burst SET payload = payload || '.';
});
ok(wait_drained($node, $db, '120s'), 'a table of 100,000 rows watched and updated whole is delivered');
my $busy = worker_private_kb();
cmp_ok($busy, '>', 20 * 1024, "the worker's private memory after the burst: $busy kB");
sql(q{ALTER SYSTEM SET wtcache.poll_interval = 1000});
sql(q{SELECT pg_reload_conf()});
my $idle = $busy;
for (1 .. 300)
{
	$idle = worker_private_kb();
	last if $idle < $busy / 2;
	usleep(100_000);
}
cmp_ok($idle, '<', $busy / 2, "and once idle, less than half of it: $idle kB");
unlike(slurp_file("/proc/$pid/maps"), qr/llvm/i, 'the worker never loaded the JIT compiler');

$node->stop;
done_testing();
