# Cached reads: wtcache.get / get_row / get_many return current rows;
# never older than what committed before the read, 1,000 times in a row;
# a fill that raced with a writer leaves the newer value; concurrent
# misses of one key read the table once; with Redis down reads fall back
# without a connection attempt per call; privileges and row-level
# security are respected; a transaction's own uncommitted rows are
# returned to it and never published.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('reads', redis_port => $rp,
	extra_conf => "wtcache.fill_lease = '30s'");
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub stat_of
{
	my ($col) = @_;
	return sql("SELECT $col FROM wtcache.status WHERE table_name = 'acct'::regclass");
}

sub row_in_redis
{
	my ($id) = @_;
	return redis_cmd($rp, 'GET', redis_key_of($node, $db, 'acct', $id));
}

sql(q{
CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL,
                   opened timestamptz NOT NULL DEFAULT '2026-01-02 03:04:05+00');
SELECT wtcache.watch('acct');
INSERT INTO acct SELECT i, 'owner ' || i, i * 10 FROM generate_series(1, 200) i;
CREATE TABLE two (org text, n int, v text, PRIMARY KEY (org, n));
SELECT wtcache.watch('two');
INSERT INTO two VALUES ('acme', 1, 'a1'), ('acme', 2, 'a2'), ('a:b{c}', 1, 'odd');
});
ok(wait_drained($node, $db), 'rows delivered');

#### The three read functions

my $table_json = sql(q{SET TimeZone = 'UTC';
	SELECT row_to_json(a)::jsonb FROM acct a WHERE id = 7});
is(sql(q{SET TimeZone = 'Asia/Tokyo'; SELECT wtcache.get('acct', '7')}), $table_json,
	'get() returns the row as jsonb, without "_v", whatever the session time zone');
my $hits0 = stat_of('read_hits');
sql(q{SELECT wtcache.get('acct', '8')});
cmp_ok(stat_of('read_hits'), '>', $hits0, 'a key delivered by the worker is a hit');
is(sql(q{SELECT wtcache.get('acct', '0042')}), sql(q{SELECT wtcache.get('acct', '42')}),
	'key text goes through the column type ("0042" is 42)');
is(sql(q{SELECT wtcache.get('acct', '9999')}), '', 'no row: NULL');
is(sql(q{SELECT (r).owner || '/' || (r).balance || '/' || (r).opened
	FROM (SELECT wtcache.get_row(NULL::acct, '9') AS r) s}),
	sql(q{SELECT owner || '/' || balance || '/' || opened FROM acct WHERE id = 9}),
	'get_row() returns the table row type');
is(sql(q{SELECT wtcache.get_row(NULL::acct, '9999') IS NULL}), 't', 'get_row() of no row is NULL');
is(sql(q{SELECT string_agg(key[1] || '=' || coalesce("row"->>'owner', 'NULL'), ',')
	FROM wtcache.get_many('acct', ARRAY['3', '9999', '1', '3'])}),
	'3=owner 3,9999=NULL,1=owner 1,3=owner 3',
	'get_many() returns every key in the order given, NULL for no row');
is(sql(q{SELECT string_agg("row"->>'v', ',')
	FROM wtcache.get_many('two', ARRAY[['acme', '2'], ['a:b{c}', '1']])}),
	'a2,odd', 'get_many() with a two-column key (two-dimensional array)');
is(sql(q{SELECT wtcache.get('two', 'a:b{c}', '1')->>'v'}), 'odd',
	'get() with a two-column key and special characters');

#### Read after commit, 1,000 times, from another session, no wait()

my $writer = $node->background_psql($db);
my $reader = $node->background_psql($db);
my $older = 0;
my $bypass0 = stat_of('read_bypasses');
$hits0 = stat_of('read_hits');
for my $i (1 .. 1000)
{
	my $id = 1 + $i % 20;
	$writer->query_safe("UPDATE acct SET balance = $i WHERE id = $id");
	my $got = $reader->query_safe("SELECT wtcache.get('acct', '$id')->>'balance'");
	$older++ if $got ne $i;
}
is($older, 0, '1,000 reads right after the commit: none older than the commit');
my $bypasses = stat_of('read_bypasses') - $bypass0;
my $hits = stat_of('read_hits') - $hits0;
note("reads right after a commit: $bypasses went to the table (change pending), $hits were Redis hits");
cmp_ok($bypasses, '>', 0, 'some reads found their change still pending and read the table');

# Reads of keys whose changes are delivered are hits again.
ok(wait_drained($node, $db), 'drained');
$hits0 = stat_of('read_hits');
$reader->query_safe(q{SELECT wtcache.get('acct', '2')});
is(stat_of('read_hits') - $hits0, 1, 'once delivered, the key is served from Redis');

#### Stale-set protection: a fill computed before a concurrent update

my $k50 = redis_key_of($node, $db, 'acct', 50);
redis_cmd($rp, 'DEL', $k50);
my $filler = $node->background_psql($db);
$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
my $rejected0 = stat_of('fills_rejected');
$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('acct', '50')->>'owner';\n");
# the filler holds the lease and has read the table: now a writer commits
my $lease_seen = 0;
for (1 .. 200)
{
	if (redis_cmd($rp, 'EXISTS', "$k50:l")) { $lease_seen = 1; last; }
	usleep(10_000);
}
ok($lease_seen, 'the reader took the fill lease');
sql(q{UPDATE acct SET owner = 'newer owner' WHERE id = 50});
ok(wait_drained($node, $db), 'the update was delivered while the fill was held');
my $out = $filler->query_until(qr/finished\n/, "\\echo finished\n");
like($out, qr/owner 50/, 'the racing reader got the row as it read it (it started first)');
like(row_in_redis(50), qr/"owner":"newer owner"/, 'Redis keeps the newer value: the stale fill was refused');
is(stat_of('fills_rejected') - $rejected0, 1, 'fills_rejected counted it');
$filler->query_safe(q{RESET wtcache.debug_fill_delay});

# The same with a delete: the late fill must not bring the row back.
my $k51 = redis_key_of($node, $db, 'acct', 51);
redis_cmd($rp, 'DEL', $k51);
$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('acct', '51')->>'owner';\n");
for (1 .. 200) { last if redis_cmd($rp, 'EXISTS', "$k51:l"); usleep(10_000); }
sql(q{DELETE FROM acct WHERE id = 51});
ok(wait_drained($node, $db), 'the delete was delivered while the fill was held');
$filler->query_until(qr/finished\n/, "\\echo finished\n");
is(row_in_redis(51), undef, 'a fill that raced with a delete does not bring the row back');
ok(defined redis_cmd($rp, 'GET', "$k51:t"), 'the tombstone stays');
$filler->query_safe(q{RESET wtcache.debug_fill_delay});

# The same with an update, and Redis evicts the pushed value before the
# held fill is written: the key is missing again and no tombstone changed,
# so only the push taking the lease away keeps the older row out.
my $k52 = redis_key_of($node, $db, 'acct', 52);
redis_cmd($rp, 'DEL', $k52);
$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('acct', '52')->>'owner';\n");
for (1 .. 200) { last if redis_cmd($rp, 'EXISTS', "$k52:l"); usleep(10_000); }
sql(q{UPDATE acct SET owner = 'owner 52 changed' WHERE id = 52});
ok(wait_drained($node, $db), 'the update was delivered while the fill was held');
like(row_in_redis(52) // '', qr/owner 52 changed/, 'Redis had the update');
redis_cmd($rp, 'DEL', $k52);    # as an eviction would
$filler->query_until(qr/finished\n/, "\\echo finished\n");
unlike(row_in_redis(52) // '', qr/"owner":"owner 52"/,
	'a fill held across a push and an eviction does not write the older row');
is(sql(q{SELECT wtcache.get('acct', '52')->>'owner'}), 'owner 52 changed', 'reads return the update');
$filler->query_safe(q{RESET wtcache.debug_fill_delay});

# The same with a TRUNCATE, whose purge neither writes a tombstone nor
# removes leases: the reader holds its lock on the table until the fill
# is written, so the TRUNCATE waits for it, and its purge removes the fill.
sql(q{CREATE TABLE trunc_fill (id int PRIMARY KEY, v text); SELECT wtcache.watch('trunc_fill');
	  INSERT INTO trunc_fill VALUES (1, 'before the truncate')});
ok(wait_drained($node, $db), 'trunc_fill delivered');
my $kt = redis_key_of($node, $db, 'trunc_fill', 1);
redis_cmd($rp, 'DEL', $kt);
$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('trunc_fill', '1')->>'v';\n");
for (1 .. 200) { last if redis_cmd($rp, 'EXISTS', "$kt:l"); usleep(10_000); }
sql(q{TRUNCATE trunc_fill});
ok(wait_drained($node, $db), 'the TRUNCATE was delivered while the fill was held');
$filler->query_until(qr/finished\n/, "\\echo finished\n");
is(redis_cmd($rp, 'GET', $kt), undef, 'a fill that raced with a TRUNCATE does not bring the row back');
is(sql(q{SELECT wtcache.get('trunc_fill', '1')}), '', 'reads find no row');
$filler->query_safe(q{RESET wtcache.debug_fill_delay});

#### Stampede: concurrent misses of one cold key read the table once

my $k60 = redis_key_of($node, $db, 'acct', 60);
redis_cmd($rp, 'DEL', $k60);
my $table_reads0 = stat_of('read_table_reads');
my $waits0 = stat_of('stampede_waits');
$filler->query_safe(q{SET wtcache.debug_fill_delay = '1500ms'});
$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('acct', '60')->>'owner';\n");
for (1 .. 200) { last if redis_cmd($rp, 'EXISTS', "$k60:l"); usleep(10_000); }
my @crowd = map { $node->background_psql($db) } 1 .. 6;
for my $s (@crowd)
{
	$s->query_safe(q{SET wtcache.fill_wait = '20s'});
	$s->query_until(qr/go\n/, "\\echo go\nSELECT wtcache.get('acct', '60')->>'owner';\n");
}
my @answers = map { $_->query_until(qr/done\n/, "\\echo done\n") } ($filler, @crowd);
is(scalar(grep { /owner 60/ } @answers), 7, 'all seven concurrent readers got the row');
is(stat_of('read_table_reads') - $table_reads0, 1, 'the table was read once for seven concurrent misses');
is(stat_of('stampede_waits') - $waits0, 6, 'six readers waited for the fill (stampede_waits)');
$_->quit for @crowd;
$filler->query_safe(q{RESET wtcache.debug_fill_delay});

#### A transaction's own writes

is($reader->query_safe(q{BEGIN; UPDATE acct SET owner = 'uncommitted' WHERE id = 70;
	SELECT wtcache.get('acct', '70')->>'owner'}), 'uncommitted',
	'get() in a transaction that changed the row returns its own change');
redis_cmd($rp, 'DEL', redis_key_of($node, $db, 'acct', 71));
$reader->query_safe(q{UPDATE acct SET owner = 'uncommitted too' WHERE id = 71;
	SELECT wtcache.get('acct', '71'); ROLLBACK});
is(row_in_redis(71), undef, 'an uncommitted row is never filled into Redis');
like(sql(q{SELECT wtcache.get('acct', '71')->>'owner'}), qr/^owner 71$/, 'after the rollback the committed row is read');

#### Privileges and row-level security

sql(q{
CREATE ROLE reader_none LOGIN;
CREATE ROLE reader_cols LOGIN;
CREATE ROLE reader_rls LOGIN;
GRANT SELECT (id, owner) ON acct TO reader_cols;
GRANT SELECT ON acct TO reader_rls;
CREATE TABLE secret (id int PRIMARY KEY, tenant text NOT NULL, data text);
SELECT wtcache.watch('secret');
INSERT INTO secret VALUES (1, 'reader_rls', 'mine'), (2, 'other', 'not mine');
ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON secret USING (tenant = current_user);
GRANT SELECT ON secret TO reader_rls;
});
ok(wait_drained($node, $db), 'secret delivered');
ok(defined redis_cmd($rp, 'GET', redis_key_of($node, $db, 'secret', 2)),
	'the hidden row is in Redis (the worker sees every row)');
my ($ret, $stdout, $stderr) = $node->psql($db,
	q{SET ROLE reader_none; SELECT wtcache.get('acct', '1')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/42501/, 'no SELECT privilege: SQLSTATE 42501');
($ret, $stdout, $stderr) = $node->psql($db,
	q{SET ROLE reader_cols; SELECT wtcache.get('acct', '1')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/42501/, 'SELECT on some columns only: 42501 (get returns whole rows)');
($ret, $stdout, $stderr) = $node->psql($db,
	q{SET ROLE reader_none; SELECT * FROM wtcache.get_many('acct', ARRAY['1'])},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/42501/, 'get_many() checks the privilege too');
my $secret_bypass0 = sql(q{SELECT read_bypasses FROM wtcache.status WHERE table_name = 'secret'::regclass});
is(sql(q{SET ROLE reader_rls; SELECT wtcache.get('secret', '1')->>'data'}), 'mine',
	'RLS: a visible row is returned');
is(sql(q{SET ROLE reader_rls; SELECT wtcache.get('secret', '2') IS NULL}), 't',
	'RLS: a row the policy hides is not returned, though Redis has it');
is(sql(q{SET ROLE reader_rls; SELECT count(*) FROM wtcache.get_many('secret', ARRAY['1', '2']) WHERE "row" IS NOT NULL}), '1',
	'RLS: get_many() returns only the visible row');
is(sql(q{SELECT read_bypasses FROM wtcache.status WHERE table_name = 'secret'::regclass}) - $secret_bypass0, 4,
	'RLS: those reads went to the table, not to the shared cache');

# A policy that itself reads through wtcache: reads nest inside a read.
sql(q{
CREATE TABLE nested (id int PRIMARY KEY, note text);
SELECT wtcache.watch('nested');
INSERT INTO nested SELECT i, 'n' || i FROM generate_series(1, 30) i;
ALTER TABLE nested ENABLE ROW LEVEL SECURITY;
CREATE POLICY via_cache ON nested USING (id % 3 <> 0 AND
    (SELECT count("row") FROM wtcache.get_many('acct', ARRAY(SELECT (id + g)::text FROM generate_series(0, 99) g))) > 0);
GRANT SELECT ON nested TO reader_rls;
});
ok(wait_drained($node, $db), 'nested delivered');
my ($nret, $nout, $nerr) = $node->psql($db, q{SET ROLE reader_rls;
	SELECT string_agg("row"->>'note', ',') FROM wtcache.get_many('nested', ARRAY(SELECT i::text FROM generate_series(1, 30) i))});
is($nout, join(',', map { "n$_" } grep { $_ % 3 != 0 } 1 .. 30),
	'a read whose table read runs cached reads (an RLS policy calling get_many) returns the right rows');
is($nerr, '', '... with no warning (each nested read keeps its own SPI connection and memory)');

#### Keys left by an earlier watch are never served

my $k90 = redis_key_of($node, $db, 'acct', 90);
sql(q{SELECT wtcache.unwatch('acct', purge => false)});
sql(q{UPDATE acct SET owner = 'changed while unwatched' WHERE id = 90});
like(redis_cmd($rp, 'GET', $k90), qr/"owner":"owner 90"/, 'Redis still holds the row from before the unwatch');
my $rewatch = $node->background_psql($db);
$rewatch->query_safe(q{SELECT wtcache.watch('acct')});
is($rewatch->query_safe(q{SELECT wtcache.get('acct', '90')->>'owner'}), 'changed while unwatched',
	'right after watching again, a read returns the table row, not the stale key');
ok(wait_drained($node, $db), 'the new watch removed the old keys');
# (the read above may have come after the removal, and filled the current row)
unlike(row_in_redis(90) // '', qr/"owner":"owner 90"/, 'the stale value is gone');
is($rewatch->query_safe(q{SELECT wtcache.get('acct', '90')->>'owner'}), 'changed while unwatched',
	'and a read fills the current row');
$rewatch->quit;

#### A crash empties the shared pending filter: reads stay current

ok($node->poll_query_until($db,
		q{SELECT reads_use_redis FROM wtcache.worker_status() w JOIN pg_database d
		  ON d.oid = w.database_oid WHERE d.datname = current_database()}),
	'worker_status says reads use Redis (the pending filter counts the queue)');
sql(q{SELECT wtcache.get('acct', '80')});    # fills it: the re-watch removed it
like(row_in_redis(80), qr/"owner":"owner 80"/, 'row 80 is in Redis');
# Redis answers reads but holds every write (the worker's), so the change
# stays queued across the crash while the old row stays readable.
redis_cmd($rp, 'CLIENT', 'PAUSE', '20000', 'WRITE');
sql(q{UPDATE acct SET owner = 'changed before the crash' WHERE id = 80});
my $pid = worker_pid($node, $db);
my $log_offset = -s $node->logfile;
kill 'KILL', $pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok($node->poll_query_until($db, 'SELECT 1', '1'), 'server back after the crash');
like(row_in_redis(80), qr/"owner":"owner 80"/, 'Redis still has the row as it was before the change');
is(sql(q{SELECT wtcache.get('acct', '80')->>'owner'}), 'changed before the crash',
	'after the crash restart, a read of the queued change returns it, not the old Redis value');
redis_cmd($rp, 'CLIENT', 'UNPAUSE');
ok($node->poll_query_until($db,
		q{SELECT reads_use_redis FROM wtcache.worker_status() w JOIN pg_database d
		  ON d.oid = w.database_oid WHERE d.datname = current_database()}),
	'the worker counted the queue again');
ok(wait_drained($node, $db), 'drained after the crash');
like(row_in_redis(80), qr/"owner":"changed before the crash"/, 'the change reached Redis');
$hits0 = stat_of('read_hits');
is(sql(q{SELECT wtcache.get('acct', '80')->>'owner'}), 'changed before the crash', 'and reads return it');
is(stat_of('read_hits') - $hits0, 1, '... from Redis');

#### Redis down: fallback, the circuit breaker, and read_fallback = off

$redis->stop;
is(sql(q{SELECT wtcache.get('acct', '5')->>'owner'}), 'owner 5', 'Redis stopped: get() reads the table');
($ret, $stdout, $stderr) = $node->psql($db,
	q{SET wtcache.read_fallback = off; SELECT wtcache.get('acct', '5')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/08006/, 'read_fallback = off: SQLSTATE 08006');
like($stderr, qr/HINT:.*wtcache.read_fallback/, '... with a hint');
$redis->start;

# A Redis that accepts connections and never answers: each read would wait
# for wtcache.read_timeout.  Count the connections it receives.
my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 64, ReuseAddr => 1) or die "listen: $!";
my $hole_port = $hole->sockport;
my $count_file = $node->basedir . '/hole_connections';
my $hole_pid = fork();
die "fork: $!" unless defined $hole_pid;
if ($hole_pid == 0)
{
	my @held;
	my $n = 0;
	while (my $c = $hole->accept)
	{
		push @held, $c;
		$n++;
		open(my $fh, '>', $count_file) or die;
		print $fh $n;
		close $fh;
	}
	exit 0;
}
close $hole;
sql("ALTER SYSTEM SET wtcache.redis_url = 'redis://127.0.0.1:$hole_port'");
sql('SELECT pg_reload_conf()');
usleep(300_000);
my $before = -e $count_file ? slurp_file($count_file) : 0;
my $fallback0 = stat_of('read_fallbacks');
my $many = sql(q{SET wtcache.read_timeout = '200ms'; SET wtcache.read_retry_interval = '1h';
	SELECT count(*) FROM (SELECT wtcache.get('acct', (1 + i % 40)::text) AS r
	                      FROM generate_series(1, 300) i) s WHERE (r->>'id') IS NOT NULL});
is($many, '300', 'Redis not answering: 300 reads all return their row from the table');
my $after = -e $count_file ? slurp_file($count_file) : 0;
cmp_ok($after - $before, '<=', 3,
	'the circuit breaker: ' . ($after - $before) . ' connection(s) for 300 reads, not one per read');
is(stat_of('read_fallbacks') - $fallback0, 300, 'read_fallbacks counts them');
kill 'KILL', $hole_pid;
waitpid($hole_pid, 0);
sql("ALTER SYSTEM RESET wtcache.redis_url");
sql('SELECT pg_reload_conf()');

$writer->quit;
$reader->quit;
$filler->quit;
$node->stop;
done_testing();
