# wtcache.verify(): Redis compared with the table, key for key; warm() under
# concurrent writes verifies clean; corruption of every kind is reported
# and wtcache.resync() repairs it.
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
my $node = new_wtcache_node('verify', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# problems found, as "key:problem" lines sorted
sub problems
{
	my ($rel, $sample) = @_;
	my $arg = defined $sample ? ", $sample" : '';
	return sql(qq{SELECT array_to_string(key, ',') || ':' || problem
	              FROM wtcache.verify('$rel'$arg) ORDER BY 1});
}

#### rows that existed before the watch, warmed while writers run

# The worker's first look at an empty Redis (no generation marker) queues
# every watched table for resync: let it happen before the table is
# watched, or the rows would reach Redis before warm().
ok(wait_drained($node, $db), 'the worker has checked Redis');
sql(q{
CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL,
                   opened timestamptz NOT NULL DEFAULT '2026-01-02 03:04:05+00');
INSERT INTO acct SELECT i, 'owner ' || i, i FROM generate_series(1, 5000) i;
SELECT wtcache.watch('acct');
});
ok(wait_drained($node, $db), 'watch delivered');
is(sql(q{SELECT count(*) FROM wtcache.verify('acct') WHERE problem = 'missing'}), '5000',
	'before warm(), every existing row is reported missing');

my $writer = $node->background_psql($db);
my $writes = join('', map {
	my $id = 1 + ($_ * 37) % 5000;
	"UPDATE acct SET balance = balance + 1 WHERE id = $id;\n"
	  . ($_ % 10 == 0 ? "DELETE FROM acct WHERE id = $id;\nINSERT INTO acct (id, owner, balance) VALUES ($id, 'again', 0);\n" : '')
} 1 .. 600);
$writer->query_until(qr/writing\n/, "\\echo writing\n$writes\\echo written\n");
my $warmed = sql(q{SELECT wtcache.warm('acct')});
ok($warmed >= 4990, "warm() queued the rows while writers run ($warmed)");
$writer->query_until(qr/written\n/, '');
$writer->quit;
ok(wait_drained($node, $db), 'writes and warm-up delivered');
is(problems('acct'), '', 'verify: Redis equals the table after warm() under concurrent writes');
like(
	(
		$node->psql($db, q{SELECT count(*) FROM wtcache.verify('acct')})
	)[2],
	qr/NOTICE:  wtcache.verify\(\): 5000 rows of "acct" checked and every key Redis has for it, 0 differences/,
	'verify says what it checked');

#### every kind of difference, then repaired

my $k7 = redis_key_of($node, $db, 'acct', 7);
my $k8 = redis_key_of($node, $db, 'acct', 8);
my $k9 = redis_key_of($node, $db, 'acct', 9);
my $kx = $k9 =~ s/:9\}$/:99999}/r;
redis_cmd($rp, 'SET', $k7, '{"_v":1,"id":7,"owner":"someone else","balance":7,"opened":"2026-01-02T03:04:05+00:00"}');
redis_cmd($rp, 'DEL', $k8);
redis_cmd($rp, 'SET', $kx, '{"_v":1,"id":99999,"owner":"ghost"}');
is(problems('acct'), "7:differs\n8:missing\n99999:extra", 'a changed value, a missing key and a key without a row are reported');
is(sql(q{SELECT in_table->>'owner' || ' / ' || in_redis FROM wtcache.verify('acct') WHERE problem = 'differs'}),
	'owner 7 / {"_v":1,"id":7,"owner":"someone else","balance":7,"opened":"2026-01-02T03:04:05+00:00"}',
	'with the row and the Redis value side by side');
my $sampled = sql(q{SELECT count(*) FROM wtcache.verify('acct', 100)});
ok($sampled <= 2, 'a sample of 100 rows checks rows only (no key scan), and finds at most the two');

sql(q{SELECT wtcache.resync('acct')});
ok(wait_drained($node, $db), 'resync delivered');
is(problems('acct'), '', 'resync() repaired all three (the key without a row is gone)');
is(redis_cmd($rp, 'EXISTS', $kx), 0, 'the ghost key was removed');

#### a change in flight is not a difference

my $slow = $node->background_psql($db);
$slow->query_safe(q{UPDATE acct SET owner = 'changed just now' WHERE id = 3});
is(problems('acct'), '', 'a change committed right before verify() is waited for, not reported');
$slow->quit;

#### invalidate mode and TTL: keys may be missing, never wrong

sql(q{
CREATE TABLE prof (id int PRIMARY KEY, name text);
INSERT INTO prof SELECT i, 'p' || i FROM generate_series(1, 50) i;
SELECT wtcache.watch('prof', mode => 'invalidate');
});
ok(wait_drained($node, $db), 'delivered');
is(problems('prof'), '', 'invalidate mode: absent keys are fine');
sql(q{SELECT wtcache.get('prof', '5')});
redis_cmd($rp, 'SET', redis_key_of($node, $db, 'prof', 5), '{"_v":0,"id":5,"name":"stale"}');
is(problems('prof'), '5:differs', 'but a key that is there must hold the row');

#### wtcache.enabled = off pauses delivery, loses nothing

sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
my $paused = 0;
for (1 .. 100)
{
	if (sql(q{SELECT worker_state FROM wtcache.status LIMIT 1}) eq 'paused') { $paused = 1; last; }
	select(undef, undef, undef, 0.1);
}
ok($paused, 'the worker says it is paused');
sql(q{UPDATE acct SET owner = 'while paused' WHERE id = 11});
is(sql(q{SELECT wtcache.wait('1s')}), 'f', 'nothing is delivered while paused');
is(sql(q{SELECT pending FROM wtcache.status WHERE table_name = 'acct'::regclass}), '1', 'the change waits in the queue');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'acct', 11)), qr/"owner":"owner 11"/, 'Redis still has the old row');
is(sql(q{SELECT wtcache.get('acct', '11')->>'owner'}), 'while paused', 'cached reads still return the change (from the table)');
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'delivery resumes after the reload');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'acct', 11)), qr/"owner":"while paused"/, 'and the change reaches Redis');
is(problems('acct'), '', 'verify: clean');

#### FLUSHALL: the worker notices and repairs Redis on its own

my $flush_offset = -s $node->logfile;
redis_cmd($rp, 'FLUSHALL');
sql(q{UPDATE acct SET owner = 'after the flush' WHERE id = 12});
ok(wait_drained($node, $db), 'the change after FLUSHALL is delivered');
ok($node->wait_for_log(qr/lost data \(generation marker missing\); removed \d+ keys it kept and queued \d+ rows of \d+ watched tables for resync/, $flush_offset),
	'the worker logs that Redis lost data and resyncs');
ok(wait_drained($node, $db), 'the resync is delivered');
is(problems('acct'), '', 'verify: Redis is whole again');
my $since = slurp_file($node->logfile, $flush_offset);
my $resyncs = () = $since =~ /lost data \(generation marker/g;
is($resyncs, 1, 'one resync for one FLUSHALL (none for the batches in flight meanwhile)');

#### metrics(): the same figures in the Prometheus text format

# one statement: the figures of one snapshot (the worker may still push)
my ($metrics, $status_pushed) = split /\|SPLIT\|/,
  sql(q{SELECT wtcache.metrics() || '|SPLIT|' || (SELECT pushed FROM wtcache.status WHERE table_name = 'acct'::regclass)});
my @bad = grep { !/^# (HELP|TYPE) wtcache_\w+ .+$/ && !/^wtcache_\w+\{(\w+="(?:[^"\\]|\\.)*",?)+\} -?[0-9.e+]+$/ } split /\n/, $metrics;
is_deeply(\@bad, [], 'every line of metrics() is a HELP, a TYPE or a sample');
my ($pushed) = $metrics =~ /^wtcache_pushed_total\{database="postgres",table="public.acct"\} (\d+)$/m;
is($pushed, $status_pushed, 'wtcache_pushed_total is the pushed count of wtcache.status');
like($metrics, qr/^wtcache_worker_up\{database="postgres"\} 1$/m, 'the worker is up');

#### errors

my ($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.verify('acct', 0)});
like($err, qr/sample must be positive/, 'sample must be positive');
sql(q{CREATE TABLE nope (id int PRIMARY KEY)});
($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.verify('nope')});
like($err, qr/not watched by wtcache/, 'an unwatched table');
sql(q{CREATE ROLE someone LOGIN});
($ret, $out, $err) = $node->psql($db, q{SET ROLE someone; SELECT * FROM wtcache.verify('acct')});
like($err, qr/must be owner of table acct/, 'verify needs ownership');
is(sql(q{SELECT redis_role FROM wtcache.status WHERE table_name = 'acct'::regclass}), 'master',
	'the status shows the role of the Redis the worker writes to');
sql(q{ALTER SYSTEM SET wtcache.backlog_warning = 100; SELECT pg_reload_conf();});
$redis->stop;
($ret, $out, $err) = $node->psql($db, q{SELECT * FROM wtcache.verify('acct')});
like($err, qr/cannot reach Redis|could not read from Redis/, 'Redis down: a clear error');

#### Redis down: the retry, and a backlog past wtcache.backlog_warning in the log

my $log_offset = -s $node->logfile;
sql(q{UPDATE acct SET owner = owner || '.' WHERE id <= 300});
my $retry = '';
for (1 .. 100)
{
	$retry = sql(q{SELECT worker_state || ' ' || (worker_next_retry IS NOT NULL) FROM wtcache.status WHERE table_name = 'acct'::regclass});
	last if $retry eq 'waiting to retry true';
	select(undef, undef, undef, 0.1);
}
is($retry, 'waiting to retry true', 'the status says the worker waits to retry, and until when');
ok($node->wait_for_log(qr/WARNING:  wtcache: \d+ changes of database "postgres" wait for Redis/, $log_offset),
	'a backlog past wtcache.backlog_warning is logged');
$redis->start;
ok(wait_drained($node, $db), 'the backlog drains when Redis is back');
ok($node->wait_for_log(qr/LOG:  wtcache: the backlog of database "postgres" is down to \d+ changes/, $log_offset),
	'and that is logged too');
is(problems('acct'), '', 'verify: clean');

$node->stop;
done_testing();
