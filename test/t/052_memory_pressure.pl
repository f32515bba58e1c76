# Redis under memory pressure (issue 20).
#
# (a) maxmemory with noeviction: Redis refuses the worker's writes (OOM).
#     Writes keep committing; the worker keeps the queue, says so once in
#     the log and in wtcache.status / metrics(), keeps retrying; reads
#     never return an older value than the reader committed (a key updated
#     during the episode still holds its old value in Redis); a miss cannot
#     be filled, which is a miss and no error, also with read_fallback off,
#     for get() and query(); when memory frees, everything drains in order.
# (b) allkeys-lru with a maxmemory that forces evictions under a write and
#     read load: no stale read, no key holding a value other than its
#     row's; evicted keys are misses; afterwards a resync makes Redis equal
#     the table.
# (c) volatile-lru with tables watched with a TTL: only keys with a TTL
#     are evicted, never wtcache's own keys (generation marker, tag
#     stamps), so no resync; same checks.
# (d) wtcache.redis_bytes_per_row() gives plausible numbers, to the roles
#     that may read the table only.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

my $redis = start_redis(args => [ '--maxmemory-policy', 'noeviction' ]);
my $rp = $redis->port;
my $node = new_wtcache_node('memory', redis_port => $rp);
my $db = 'postgres';

END { $redis->stop if $redis; }

sub sql { return $node->safe_psql($db, $_[0]); }

# Poll an SQL query until it returns 't', up to the default timeout.
sub poll_true
{
	my ($query, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok($node->poll_query_until($db, $query), $name);
	return;
}

sub info_field
{
	my ($section, $field) = @_;
	my $info = redis_cmd($rp, 'INFO', $section);
	return $info =~ /^\Q$field\E:(\S+)/m ? $1 : undef;
}

# In one session: update a key, commit, read it through get(), commit;
# $iters times over keys 1..$nkeys of $table.  Only this session writes
# column n of those keys, so the value it committed last is the oldest a
# read may return (guarantee 4).  Also inserts a new row per round when
# $insert_base is given, so that Redis is asked for more memory.  Returns
# the number of reads older than the reader's own commit.
sub stale_reads
{
	my ($table, $nkeys, $iters, $insert_base, $per_iter) = @_;
	$per_iter //= 1;
	my $insert = defined $insert_base
	  ? "INSERT INTO $table (id, n, pad) SELECT $insert_base + i * $per_iter + g, 0, repeat('x', 300)"
	  . " FROM generate_series(0, $per_iter - 1) g;"
	  : '';
	# asynchronous commits: quicker, and wtcache must keep the guarantee
	my $out = sql(qq{SET synchronous_commit = off;
DO \$\$
DECLARE
    stale int := 0;
    want int;
    got int;
    k int;
BEGIN
    FOR i IN 1..$iters LOOP
        k := (i % $nkeys) + 1;
        UPDATE $table SET n = n + 1 WHERE id = k RETURNING n INTO want;
        $insert
        COMMIT;
        got := (wtcache.get('$table', k::text)->>'n')::int;
        IF got IS NULL OR got < want THEN
            stale := stale + 1;
        END IF;
        COMMIT;
    END LOOP;
    RAISE NOTICE 'stale=%', stale;
    PERFORM set_config('wtc.stale', stale::text, false);
END
\$\$;
SELECT current_setting('wtc.stale');});
	return $out;
}

# Every key of $table that Redis holds holds its row's current value
# (missing keys are allowed: evicted).  Returns (present, wrong, diag).
sub present_keys_current
{
	my ($table) = @_;
	my $rows = sql(qq{SET timezone = 'UTC';
SELECT wtcache.redis_key('$table', id::text) || E'\\t' || row_to_json(x)::text
  FROM $table x ORDER BY id});
	my @rows = map { [ split /\t/, $_, 2 ] } split /\n/, $rows;
	my $replies = redis_pipeline($rp, [ map { [ 'GET', $_->[0] ] } @rows ]);
	my ($present, $wrong, @diag) = (0, 0);
	for my $i (0 .. $#rows)
	{
		my $got = $replies->[$i];
		next unless defined $got;
		$present++;
		my ($v, $rest) = redis_row_version($got);
		if (!defined $v || '{' . $rest ne $rows[$i][1])
		{
			$wrong++;
			push @diag, "$rows[$i][0]: Redis has $got, the table $rows[$i][1]"
			  if @diag < 5;
		}
	}
	return ($present, $wrong, join("\n", @diag));
}

sub log_count
{
	my ($offset, $re) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my @m = $log =~ /$re/g;
	return scalar @m;
}

############################################################################
# (a) noeviction
############################################################################

sql(q{
CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL, pad text);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 0, repeat('p', 100) FROM generate_series(1, 200) i;
CREATE TABLE u (id int PRIMARY KEY, n int NOT NULL, pad text);
SELECT wtcache.watch('u');
INSERT INTO u SELECT i, i, 'u' FROM generate_series(1, 20) i;
});
ok(wait_drained($node, $db), 'initial rows delivered');
compare_table_ok($node, $db, 't', $rp, 'Redis matches t before the memory runs out');
is(sql(q{SELECT redis_memory_state || ' ' || redis_maxmemory_policy
           FROM wtcache.status WHERE table_name = 't'::regclass}),
	'ok noeviction', 'status: memory ok, the policy as Redis says');

# A row key that is missing, to be read (and not filled) while Redis is out
# of memory.
my $missing_key = redis_key_of($node, $db, 't', '150');
redis_cmd($rp, 'DEL', $missing_key);
my $key1 = redis_key_of($node, $db, 't', '1');
my ($v1_before) = redis_row_version(redis_cmd($rp, 'GET', $key1));

my $log_offset = -s $node->logfile;
# Half of what it uses now: every write that adds data is refused.
my $used = info_field('memory', 'used_memory');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', int($used / 2));
is(ref(redis_try($rp, 'SET', 'wtc-test-probe', 'x')), '',
	'Redis refuses writes now');
like((redis_try($rp, 'SET', 'wtc-test-probe', 'x'))[1] // '', qr/OOM/,
	'with OOM');

# Writes commit, reads never older than the reader's own commit.
is(stale_reads('t', 50, 200, 10000), 0,
	'noeviction: no read older than the reader\'s commit while Redis refuses writes');
poll_true(q{SELECT redis_memory_state = 'out of memory' AND redis_oom_since IS NOT NULL
              AND redis_oom_episodes = 1 FROM wtcache.status WHERE table_name = 't'::regclass},
	'status shows Redis out of memory');
# Several attempts refused: one episode, one line.
poll_true(q{SELECT oom_refusals >= 3 FROM wtcache.redis_memory()
             WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())},
	'the worker keeps retrying');
is(sql(q{SELECT pending > 0 FROM wtcache.status WHERE table_name = 't'::regclass}),
	't', 'the changes wait in the queue');
my ($v1_during) = redis_row_version(redis_cmd($rp, 'GET', $key1));
is($v1_during, $v1_before, 'Redis still holds the old value of a key updated during the episode');
cmp_ok(sql(q{SELECT (wtcache.get('t', '1')->>'n')::int}), '>', 0,
	'get() of that key returns the committed value, not Redis\'s');
like(sql(q{SELECT wtcache.metrics()}), qr/^wtcache_redis_oom\{database="postgres"\} 1$/m,
	'metrics(): wtcache_redis_oom is 1');

# A miss cannot be filled: a miss read from the table, no error, also with
# read_fallback off; the same for a cached query of a table with no
# change in flight.
is(sql(q{SET wtcache.read_fallback = off;
         SELECT wtcache.get('t', '150')->>'id'}), '150',
	'get() of a missing key under OOM reads the table, without an error');
is(redis_cmd($rp, 'EXISTS', $missing_key), 0, 'and fills nothing');
my ($ret, $out, $err) = $node->psql($db, q{SET wtcache.read_fallback = off;
  SELECT q->>'s' FROM wtcache.query('SELECT sum(n) AS s FROM u') q});
is($ret, 0, 'query() of a miss under OOM runs the query, without an error')
  or diag($err);
is($out, '210', 'and returns its result');
is(sql(q{SET wtcache.read_fallback = off;
         SELECT (wtcache.get('u', '3')->>'n')}), '3', 'hits still served under OOM');

is(log_count($log_offset, qr/is out of memory and refuses writes/), 1,
	'the episode is logged once');
is(log_count($log_offset, qr/connected to Redis at/), 0,
	'the reconnections within the episode are not logged');

# Memory frees: everything drains, in order, by itself.
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', '0');
ok(wait_drained($node, $db), 'the backlog drains once Redis has memory');
# write_through refills a key on its next change or read
is(sql(q{SELECT wtcache.get('t', '150')->>'id'}), '150', 'the key evicted by hand is read again');
ok(redis_cmd($rp, 'EXISTS', $missing_key), 'and filled, now that Redis has room');
compare_table_ok($node, $db, 't', $rp, 'Redis matches t after the episode');
poll_true(q{SELECT redis_memory_state = 'ok' AND redis_oom_episodes = 1 AND redis_oom_since IS NULL
              FROM wtcache.status WHERE table_name = 't'::regclass},
	'status: memory ok again, one episode');
ok($node->wait_for_log(qr/accepts writes again after/, $log_offset),
	'the end of the episode is logged');
is(log_count($log_offset, qr/is out of memory and refuses writes/), 1,
	'one warning for the whole episode');
is(stale_reads('t', 50, 50), 0, 'no stale read after the episode');

############################################################################
# (d) bytes per row
############################################################################

my ($sampled, $cached, $bpr, $rows, $est) = split /\|/,
  sql(q{SELECT sampled, cached, round(bytes_per_row), table_rows, estimated_bytes
          FROM wtcache.redis_bytes_per_row('t', 50)});
is($sampled, 50, 'redis_bytes_per_row: sampled 50 rows');
is($cached, 50, 'all of them in Redis');
my $value_len = length(redis_cmd($rp, 'GET', $key1));
cmp_ok($bpr, '>=', $value_len, "bytes per row ($bpr) at least the value's length ($value_len)");
cmp_ok($bpr, '<', $value_len + 400, 'and within Redis\'s overhead of it');
is($rows, sql('SELECT count(*) FROM t'), 'table_rows: the rows the caller sees');
cmp_ok(abs($est - $bpr * $rows), '<=', $rows, 'estimated_bytes = rows x bytes per row');
sql(q{CREATE ROLE nosel LOGIN; GRANT USAGE ON SCHEMA wtcache TO nosel;});
($ret, $out, $err) = $node->psql($db, q{SET ROLE nosel;
  SELECT * FROM wtcache.redis_bytes_per_row('t')});
like($err, qr/permission denied to measure the Redis keys of table t/,
	'a role without SELECT on the table cannot measure it');

############################################################################
# (b) allkeys-lru: evictions under a write and read load
############################################################################

sql(q{
CREATE TABLE e (id int PRIMARY KEY, n int NOT NULL, pad text);
SELECT wtcache.watch('e');
INSERT INTO e SELECT i, 0, repeat('e', 300) FROM generate_series(1, 100) i;
});
ok(wait_drained($node, $db), 'e delivered');
my $evicted0 = info_field('stats', 'evicted_keys');
$used = info_field('memory', 'used_memory');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', $used + 1024 * 1024);
my $resyncs0 = sql(q{SELECT resyncs FROM wtcache.worker_status()
                     WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});

# About 3 MB of new rows into 1 MB of room, read and written meanwhile.
is(stale_reads('e', 100, 800, 1000, 10), 0,
	'allkeys-lru: no read older than the reader\'s commit under evictions');
ok(wait_drained($node, $db), 'allkeys-lru: everything delivered');
cmp_ok(info_field('stats', 'evicted_keys') - $evicted0, '>', 0, 'Redis evicted keys');
my ($present, $wrong, $diag) = present_keys_current('e');
is($wrong, 0, "allkeys-lru: every key Redis kept ($present) holds its row's current value")
  or diag($diag);
is(stale_reads('e', 100, 300), 0, 'allkeys-lru: evicted keys read as misses, never stale');
# An evicted generation marker cannot be told from lost data (a reload
# of an older snapshot keeps the server's identity: 053's case), so it is
# repaired like a loss, and counted apart so that a DBA sees why.
# The marker is counted found evicted before its resync is counted done:
# both are read in one query, until the resyncs caught up.  The reads'
# fills may evict the marker again after that, so its presence is waited
# for too: the worker's next marker check finds it gone and sets it.
my ($resyncs, $marker_evictions, $marker) = (0, 0, 0);
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	($resyncs, $marker_evictions) = split /\|/, sql(qq{
	  SELECT w.resyncs - $resyncs0, m.marker_evictions
	  FROM wtcache.worker_status() w JOIN wtcache.redis_memory() m USING (database_oid)
	  WHERE w.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
	$marker = redis_cmd($rp, 'EXISTS', 'wtc:{postgres}:gen');
	last if $resyncs >= $marker_evictions && $marker == 1;
	usleep(50_000);
}
cmp_ok($resyncs, '>=', $marker_evictions,
	"allkeys-lru: every marker found evicted ($marker_evictions) was repaired by a resync ($resyncs)");
is($marker, 1, 'the marker is there after the load');

# The live audit under allkeys-lru: evicted row keys are misses by
# design, not findings (it asks Redis its policy again, which CONFIG SET
# changed after the worker connected).
sql(q{ALTER SYSTEM SET wtcache.audit_rate = 5000; SELECT pg_reload_conf()});
my $audit_q = q{SELECT checked || ' ' || missing || ' ' || mismatched FROM wtcache.audit_stats()
                 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
my ($checked0) = split / /, sql($audit_q);
ok($node->poll_query_until($db, qq{SELECT checked >= $checked0 + 800 FROM wtcache.audit_stats()
                 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'allkeys-lru: the audit compared every row of e again');
my (undef, $audit_missing, $audit_mismatched) = split / /, sql($audit_q);
is("$audit_missing $audit_mismatched", '0 0', 'allkeys-lru: evicted keys are no finding of the audit');
sql(q{ALTER SYSTEM RESET wtcache.audit_rate; SELECT pg_reload_conf()});

# Room again: a resync makes Redis equal the table.
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', '0');
sql(q{SELECT wtcache.resync('e')});
ok(wait_drained($node, $db), 'resync after the evictions delivered');
compare_table_ok($node, $db, 'e', $rp, 'allkeys-lru: Redis matches e after the resync');

############################################################################
# (c) volatile-lru: keys with a TTL go, wtcache's own keys stay
############################################################################

sql(q{
CREATE TABLE v (id int PRIMARY KEY, n int NOT NULL, pad text);
SELECT wtcache.watch('v', ttl => '1 hour');
INSERT INTO v SELECT i, 0, repeat('v', 300) FROM generate_series(1, 100) i;
SELECT wtcache.resync('t');
});
ok(wait_drained($node, $db), 'v delivered, t (evicted under allkeys-lru) resynced');
compare_table_ok($node, $db, 't', $rp, 't whole before volatile-lru');
$evicted0 = info_field('stats', 'evicted_keys');
$resyncs0 = sql(q{SELECT resyncs FROM wtcache.worker_status()
                  WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
$used = info_field('memory', 'used_memory');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory-policy', 'volatile-lru');
redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', $used + 1024 * 1024);

is(stale_reads('v', 100, 800, 1000, 10), 0,
	'volatile-lru: no read older than the reader\'s commit under evictions');
ok(wait_drained($node, $db), 'volatile-lru: everything delivered');
cmp_ok(info_field('stats', 'evicted_keys') - $evicted0, '>', 0, 'Redis evicted keys');
($present, $wrong, $diag) = present_keys_current('v');
is($wrong, 0, "volatile-lru: every key Redis kept ($present) holds its row's current value")
  or diag($diag);
is(sql(q{SELECT resyncs FROM wtcache.worker_status()
         WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	$resyncs0, 'volatile-lru: the generation marker was never evicted (no resync)');
is(redis_cmd($rp, 'EXISTS', 'wtc:{postgres}:gen'), 1, 'the marker is there');
($present) = present_keys_current('t');
is($present, 200 + 200, 't (no TTL) lost no key under volatile-lru');

redis_cmd($rp, 'CONFIG', 'SET', 'maxmemory', '0');
sql(q{SELECT wtcache.resync('v')});
ok(wait_drained($node, $db), 'resync of v delivered');
compare_table_ok($node, $db, 'v', $rp, 'volatile-lru: Redis matches v after the resync');
compare_table_ok($node, $db, 't', $rp, 'and t');

$node->stop;
done_testing();
