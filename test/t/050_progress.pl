# Long work, seen and bounded: wtcache.progress follows a warm of 200,000
# rows under a concurrent write load, from delivering to finished at its
# total; wtcache.bulk_rate makes that warm last long enough that a change
# committed after it is seen in Redis while the warm is still being
# delivered (live changes pass long work), and Redis ends equal to the
# table (no older warm value overwrote a live change); warm() with a
# predicate pushes exactly the rows it selects, runs with its caller's
# rights, and cannot be made to run anything else; a role that cannot see a table sees none of its
# operations; a resync shows its purge and its rows.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('progress', redis_port => $rp,
	extra_conf => "wtcache.bulk_rate = 10000\n");
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# poll_until($what, $sub): $sub's true value, or undef once the deadline passed
my $rows = 200_000;
sql(qq{
CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0);
INSERT INTO big SELECT i, 'v' || i, 0 FROM generate_series(1, $rows) i;
SELECT wtcache.watch('big');
CREATE TABLE stop_load (x int);
CREATE ROLE nobody LOGIN;
CREATE ROLE reader LOGIN;
GRANT SELECT ON big TO reader;
});
ok(wait_drained($node, $db), 'nothing queued before the warm');
is(scalar @{ redis_row_keys($rp, table_key_pattern($node, $db, 'big')) }, 0,
	'watch() pushed no existing row');

# A write load on the table for the whole warm: updates of existing rows
# (some of which the warm has yet to deliver) and new rows.
my ($lout, $lerr) = ('', '');
my $load = IPC::Run::start(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', q{
DO $$
DECLARE i int := 0;
BEGIN
  LOOP
    i := i + 1;
    UPDATE big SET n = n + 1, v = 'load ' || i WHERE id = 1 + (i * 7919) % 200000;
    INSERT INTO big (id, v) VALUES (300000 + i, 'new ' || i);
    COMMIT;
    EXIT WHEN EXISTS (SELECT FROM stop_load);
    PERFORM pg_sleep(0.005);
  END LOOP;
END $$;}
	],
	'>', \$lout, '2>', \$lerr);

my $warmed = sql(q{SELECT wtcache.warm('big')});
cmp_ok($warmed, '>=', $rows, "warm queued every row ($warmed)");

my $progress = q{SELECT phase, rows_total, rows_queued, rows_delivered, total_is_estimate
                 FROM wtcache.progress WHERE operation = 'warm' AND table_name = 'big'::regclass};

# Observations while it is delivered: rows_delivered grows, never backwards.
my @seen;
my $midway = poll_until(sub {
	my $r = sql($progress);
	return 0 if $r eq '';
	my ($phase, $total, $queued, $delivered) = split /\|/, $r;
	push @seen, $delivered if !@seen || $seen[-1] != $delivered;
	return $phase eq 'delivering' && @seen >= 3 && $delivered > 0 && $delivered < $total
	  ? $r : 0;
});
ok($midway, 'the warm is seen being delivered, its count growing')
  or diag("observations: @seen");
my ($phase, $total, $queued, $delivered, $estimated) = split /\|/, ($midway // '||||');
is($total, $warmed, 'rows_total is what warm() queued, once committed');
is($queued, $warmed, 'rows_queued too');
is($estimated, 'f', 'and is exact, no estimate');
my @sorted = sort { $a <=> $b } @seen;
is("@seen", "@sorted", 'rows_delivered never went backwards');

# A change committed now has a higher queue id than every row of the warm;
# without priority it would wait for all of them.  The ordering fact: when
# it is seen in Redis, less than half of the warm's rows left at its commit
# were delivered (at wtcache.bulk_rate the rest take many seconds more).
my $live_id = $rows - 1;
my $lag_changes = q{SELECT changes FROM wtcache.delivery_lag()
                     WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
my $c0 = sql($lag_changes);
sql(qq{UPDATE big SET v = 'live change' WHERE id = $live_id});
my (undef, undef, undef, $d1) = split /\|/, sql($progress);
my $live_key = redis_key_of($node, $db, 'big', $live_id);
ok(poll_until(sub { (redis_cmd($rp, 'GET', $live_key) // '') =~ /"live change"/ }),
	'a change committed during the warm reaches Redis');
my $after = sql($progress);
my (undef, $t2, undef, $d2) = split /\|/, $after;
ok($after ne '' && $d2 < $t2, "... while the warm is still being delivered ($d2 of $t2)");
# the changes that passed the warm count in the delivery lag (they are
# claimed by the worker's second cursor, which must read their enqueued_at)
cmp_ok(sql($lag_changes), '>', $c0, '... and it counts in the delivery lag');
cmp_ok($d2 - $d1, '<', ($t2 - $d1) / 2,
	"... ahead of the warm's rows queued before it ($d1 delivered at its commit, $d2 when seen)");

# Progress is visible only to roles that can see the table.
is($node->safe_psql($db, q{SET ROLE nobody; SELECT count(*) FROM wtcache.progress}),
	'0', 'a role that cannot see the table sees no progress row');
is($node->safe_psql($db, q{SET ROLE reader; SELECT count(*) FROM wtcache.progress WHERE table_name = 'big'::regclass}),
	'1', 'a role with SELECT on it sees it');

# Lift the limit: the rest goes at full speed, and the entry ends at its total.
sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 0; SELECT pg_reload_conf();});
ok(poll_until(sub { sql($progress) eq '' }), 'the warm leaves wtcache.progress once delivered');
is(sql(q{SELECT rows_total || ' ' || rows_queued || ' ' || rows_delivered
         FROM wtcache.progress_finished WHERE operation = 'warm' AND table_name = 'big'::regclass}),
	"$warmed $warmed $warmed", 'and wtcache.progress_finished shows it ended at its total');

sql(q{INSERT INTO stop_load VALUES (1)});
ok($load->finish, 'the write load ran without error') or diag($lerr);
ok(wait_drained($node, $db), 'everything delivered');
compare_table_ok($node, $db, 'big', $rp,
	'Redis equals the table: no warm value overwrote a newer change');

# Live changes never pass a TRUNCATE, also one whose queue row becomes
# visible behind the point where the worker's walk to live rows resumes.
# A warm of big is held back by bulk_rate; a TRUNCATE of trunc_t draws its
# queue id and stays open while live changes of live_t are delivered past
# it (so the walk resumes beyond it); then it commits, and rows inserted
# into trunc_t after it must reach Redis after its purge, not before.
sql(q{
CREATE TABLE trunc_t (id int PRIMARY KEY, v text);
INSERT INTO trunc_t SELECT i, 'old ' || i FROM generate_series(1, 100) i;
SELECT wtcache.watch('trunc_t', warm => true);
CREATE TABLE live_t (id int PRIMARY KEY, v int);
INSERT INTO live_t VALUES (1, 0);
SELECT wtcache.watch('live_t', warm => true);
});
ok(wait_drained($node, $db), 'trunc_t and live_t delivered');
sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 1000; SELECT pg_reload_conf();});
sql(q{SELECT wtcache.warm('big')});
my ($tin, $tout, $terr) = ('', '', '');
my $trunc = IPC::Run::start([ 'psql', '-X', '-qAt', '-d', $node->connstr($db) ],
	'<', \$tin, '>', \$tout, '2>', \$terr);
$tin .= "BEGIN; TRUNCATE trunc_t; SELECT 'truncated';\n";
ok(poll_until(sub { $trunc->pump_nb; $tout =~ /truncated/ }), 'a TRUNCATE of trunc_t is open');
my $live_t_key = redis_key_of($node, $db, 'live_t', 1);
for my $i (1 .. 3)
{
	sql(qq{UPDATE live_t SET v = $i WHERE id = 1});
	ok(poll_until(sub { (redis_cmd($rp, 'GET', $live_t_key) // '') =~ /"v":$i\}/ }),
		"live change $i delivered past the open TRUNCATE and the held-back warm");
}
$tin .= "COMMIT; SELECT 'committed';\n";
ok(poll_until(sub { $trunc->pump_nb; $tout =~ /committed/ }), 'the TRUNCATE committed');
sql(q{INSERT INTO trunc_t SELECT i, 'new ' || i FROM generate_series(1, 10) i});
my $batches = q{SELECT batches FROM wtcache.worker_status()
                WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
my $b0 = sql($batches);
ok(poll_until(sub { sql($batches) >= $b0 + 2 }), 'the worker claimed again after the inserts');
sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 0; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'everything delivered');
compare_table_ok($node, $db, 'trunc_t', $rp,
	'trunc_t in Redis: the rows inserted after the TRUNCATE survived its purge');
$tin .= "\\q\n";
$trunc->finish;

# warm() with a predicate: exactly the rows it selects, run by the table's
# owner (no superuser); what it may not run is refused.  (Row-level
# security applying to the predicate's read is in sql/progress.sql: a
# policy that applies to the owner also keeps the worker from reading.)
sql(q{
CREATE ROLE tenant LOGIN;
GRANT CREATE ON SCHEMA public TO tenant;
});
$node->safe_psql($db, q{
SET ROLE tenant;
CREATE TABLE hot (id int PRIMARY KEY, last_seen date NOT NULL);
INSERT INTO hot SELECT i, date '2024-01-01' + (i % 30) FROM generate_series(1, 3000) i;
SELECT wtcache.watch('hot');
});
ok(wait_drained($node, $db), 'nothing queued for hot yet');
my $n = $node->safe_psql($db, q{SET ROLE tenant; SELECT wtcache.warm('hot', $$last_seen >= date '2024-01-28'$$)});
ok(wait_drained($node, $db), 'the predicate warm delivered');
my $want = sql(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM hot
                 WHERE last_seen >= date '2024-01-28'});
my @ids = sort { $a <=> $b } map { /:(\d+)\}\z/ ? $1 : () }
  @{ redis_row_keys($rp, table_key_pattern($node, $db, 'hot')) };
is(join(',', @ids), $want, 'warm(predicate) pushed exactly the matching rows');
is($n, scalar @ids, 'and returned their number');
my ($ret, $out, $err) = $node->psql($db,
	q{SET ROLE tenant; SELECT wtcache.warm('hot', 'id IN (SELECT id FROM big)')});
like($err, qr/invalid predicate.*\n.*DETAIL:  It holds a sub-select/s, 'a sub-select in a predicate is refused');
($ret, $out, $err) = $node->psql($db,
	q{SET ROLE tenant; SELECT wtcache.warm('hot', 'true); DROP TABLE big; SELECT (true')});
isnt($ret, 0, 'a predicate that tries to end its clause is refused');
is(sql(q{SELECT count(*) > 0 FROM big}), 't', '... and ran nothing');
($ret, $out, $err) = $node->psql($db,
	q{SET ROLE tenant; SELECT wtcache.warm('hot', 'pg_catalog.pg_read_file(''postgresql.conf'') IS NOT NULL')});
like($err, qr/permission denied for function pg_read_file/,
	'the predicate runs with its caller\'s rights, not wtcache\'s');

# A resync: its purge, then its rows, each an operation of its own (the
# watch() of hot had its own purge: left out by time).
my $t0 = sql(q{SELECT clock_timestamp()});
my $r = sql(q{SELECT wtcache.resync('hot')});
ok(wait_drained($node, $db), 'the resync delivered');
ok(poll_until(sub { sql(q{SELECT count(*) FROM wtcache.progress WHERE table_name = 'hot'::regclass}) eq '0' }),
	'no operation of hot still running');
is(sql(qq{SELECT string_agg(operation || ':' || rows_delivered, ' ' ORDER BY finished_at)
         FROM wtcache.progress_finished WHERE table_name = 'hot'::regclass AND started_at > '$t0'}),
	"purge:" . scalar(@ids) . " resync:$r",
	'the resync shows its purge (keys removed) and its rows (delivered)');

$node->stop;
$redis->stop;
done_testing();

END
{
	$redis->stop if $redis;
}
