# The live consistency audit (wtcache.audit_rate): under concurrent writers
# that update the same keys, many checks and not one mismatch; then a value
# changed behind wtcache's back in Redis (same version, another value) and
# a deleted key are found, confirmed, counted, logged without values, and
# repaired; a table in invalidate mode may lack keys; the figures are in
# wtcache.status, audit_stats() and metrics(); off means off.
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
my $node = new_wtcache_node('audit', redis_port => $rp, extra_conf => q{
wtcache.poll_interval = '1s'
});
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# the database's audit figures: checked|mismatched|missing|skipped|repaired|unresolved
sub audit
{
	return sql(q{SELECT checked, mismatched, missing, skipped, repaired, oldest_mismatch_at IS NOT NULL
	             FROM wtcache.audit_stats()
	             WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

# wait until the SQL condition on audit_stats() holds; false at the deadline
sub wait_audit
{
	my ($cond) = @_;
	return $node->poll_query_until($db, qq{SELECT $cond FROM wtcache.audit_stats()
	    WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

# wait until verify() finds no difference in the table (its NOTICE aside)
sub wait_verified
{
	my ($table) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		return 1 if sql(qq{SELECT count(*) FROM wtcache.verify('$table')}) eq '0';
		usleep(100_000);
	}
	return 0;
}

sub set_rate
{
	sql("ALTER SYSTEM SET wtcache.audit_rate = $_[0]; SELECT pg_reload_conf();");
	$node->poll_query_until($db, qq{SELECT current_setting('wtcache.audit_rate') = '$_[0]'});
}

ok(wait_drained($node, $db), 'the worker has checked Redis');
is(sql(q{SHOW wtcache.audit_rate}), '0', 'the audit is off by default');
sql(q{
CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL,
                   secret text NOT NULL);
INSERT INTO acct SELECT i, 'owner ' || i, i, 'pin-' || (7000 + i) FROM generate_series(1, 2000) i;
SELECT wtcache.watch('acct');
SELECT wtcache.warm('acct');
CREATE TABLE inv (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO inv SELECT i, 'v' || i FROM generate_series(1, 300) i;
SELECT wtcache.watch('inv', mode => 'invalidate');
CREATE TABLE h (a text, b int, v text, PRIMARY KEY (a, b));
INSERT INTO h SELECT 'k' || (i % 7), i, 'h' || i FROM generate_series(1, 300) i;
SELECT wtcache.watch('h', format => 'hash');
SELECT wtcache.warm('h');
});
ok(wait_drained($node, $db), 'rows delivered');
is(audit(), '0|0|0|0|0|f', 'nothing audited while off');

#### a healthy run under concurrent writers: many checks, no mismatch

# Writers that commit every change, to the same few hundred keys, with
# deletes and inserts, until told to stop (no duration: the test waits
# for the audit's count).
sql(q{
CREATE TABLE ctl (stop boolean NOT NULL);
INSERT INTO ctl VALUES (false);
CREATE PROCEDURE churn(seed int) LANGUAGE plpgsql AS $$
DECLARE
    i int := 0;
    k int;
BEGIN
    PERFORM setseed(seed / 10.0);
    LOOP
        EXIT WHEN (SELECT stop FROM ctl);
        k := 1 + floor(random() * 300)::int;
        UPDATE acct SET balance = balance + 1, owner = 'w' || seed || '.' || i WHERE id = k;
        IF i % 20 = 0 THEN
            DELETE FROM acct WHERE id = k;
            INSERT INTO acct VALUES (k, 'again', 0, 'pin-' || k);
        END IF;
        IF i % 5 = 0 THEN
            UPDATE inv SET v = v || '.' WHERE id = 1 + (k % 300);
            UPDATE h SET v = 'w' || i WHERE b = 1 + (k % 300);
        END IF;
        COMMIT;
        i := i + 1;
    END LOOP;
END $$;
});
my @writers = map { $node->background_psql($db) } 1 .. 2;
$writers[$_]->query_until(qr/churning\n/, "\\echo churning\nCALL churn($_ + 1);\n") for 0 .. 1;
# and a reader whose misses fill the invalidate-mode table's keys
my $reader = $node->background_psql($db);
$reader->query_until(qr/reading\n/, "\\echo reading\n"
	  . "DO \$\$ BEGIN WHILE NOT (SELECT stop FROM ctl) LOOP PERFORM wtcache.get('inv', (1 + floor(random() * 300)::int)::text); END LOOP; END \$\$;\n");

set_rate(2000);
# three passes over the 2,600 rows, while the writers write
ok(wait_audit('checked >= 8000'), 'the audit compared thousands of keys under the write load')
  or diag(audit());
my ($checked, $mismatched, $missing, $skipped) = split /\|/, audit();
sql(q{UPDATE ctl SET stop = true});
$_->query_until(qr/stopped\n/, "\\echo stopped\n") for @writers, $reader;
$_->quit for @writers, $reader;
ok(wait_drained($node, $db), 'the writes are delivered');
is("$mismatched|$missing", '0|0', "no mismatch and no missing key in $checked checks under the writers ($skipped keys in flight passed by)");
is(sql(q{SELECT count(*) FROM wtcache.verify('acct')}) + sql(q{SELECT count(*) FROM wtcache.verify('h')}),
	0, 'verify() agrees: Redis equals the tables');
my $after_load = audit();
ok(wait_audit("checked >= " . ((split /\|/, $after_load)[0] + 2600)), 'another pass once the writers stopped');
like(audit(), qr/^\d+\|0\|0\|/, 'still no mismatch');

# The worker's memory over a hundred more steps: what a step allocates
# (rows, Redis replies) goes with it.
my $wpid = worker_pid($node, $db);
sub worker_bytes
{
	my $offset = -s $node->logfile;
	sql(qq{SELECT pg_log_backend_memory_contexts($wpid)});
	$node->wait_for_log(qr/Grand total: \d+ bytes/, $offset);
	my ($bytes) = slurp_file($node->logfile, $offset) =~ /Grand total: (\d+) bytes/;
	return $bytes;
}
my $w_before = worker_bytes();
ok(wait_audit("checked >= " . ((split /\|/, audit())[0] + 20000)), 'a hundred more steps');
my $w_after = worker_bytes();
note("worker memory: $w_before bytes, then $w_after after 20,000 more keys audited");
cmp_ok($w_after - $w_before, '<', 256 * 1024, 'the worker does not grow while it audits');

#### a value changed behind wtcache's back, and a key deleted

my $k7 = redis_key_of($node, $db, 'acct', 7);
my $k8 = redis_key_of($node, $db, 'acct', 8);
my $v7 = redis_cmd($rp, 'GET', $k7);
my ($ver7) = $v7 =~ /^\{"_v":(\d+),/;
ok(defined $ver7, "the row's value carries its version ($ver7)");
my $forged = qq({"_v":$ver7,"id":7,"owner":"mallory","balance":1000000,"secret":"forged-secret"});
my $log_offset = -s $node->logfile;
redis_cmd($rp, 'SET', $k7, $forged);
redis_cmd($rp, 'DEL', $k8);
ok(wait_audit('mismatched >= 1 AND missing >= 1'), 'the audit found both, within the deadline')
  or diag(audit());
like(audit(), qr/^\d+\|1\|1\|/, 'each counted once: one mismatch, one missing key');
ok($node->wait_for_log(qr/LOG:  wtcache: the audit found a key of table public\.acct holding another value than the row in Redis/, $log_offset),
	'the mismatch is logged');
ok($node->wait_for_log(qr/LOG:  wtcache: the audit found a key of table public\.acct missing in Redis/, $log_offset),
	'the missing key is logged');

# repaired: the key queued again, pushed with a newer version
ok(wait_verified('acct'),
	'the audit repaired both keys');
my $new7 = redis_cmd($rp, 'GET', $k7);
my ($newver7) = $new7 =~ /^\{"_v":(\d+),/;
ok($newver7 > $ver7, "with a newer version ($newver7 > $ver7)");
ok(wait_audit('repaired >= 2 AND oldest_mismatch_at IS NULL'),
	'both are found right again: no unresolved mismatch left') or diag(audit());

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/mallory|forged-secret|pin-7\b|pin-7007|"owner"/, 'no value of the row or of Redis in the log');

#### where a DBA sees it

my $st = sql(q{SELECT audit_checked > 0, audit_mismatched, audit_missing, audit_oldest_mismatch_age IS NULL
               FROM wtcache.status WHERE table_name = 'acct'::regclass});
is($st, 't|1|1|t', 'wtcache.status shows the database\'s audit figures');
my $metrics = sql(q{SELECT wtcache.metrics()});
like($metrics, qr/^wtcache_audit_mismatched_total\{database="postgres"\} 1$/m, 'metrics(): the mismatches');
like($metrics, qr/^wtcache_audit_missing_total\{database="postgres"\} 1$/m, 'metrics(): the missing keys');
like($metrics, qr/^wtcache_audit_checked_total\{database="postgres"\} \d+$/m, 'metrics(): the checks');
like($metrics, qr/^wtcache_audit_oldest_mismatch_seconds\{database="postgres"\} 0$/m, 'metrics(): no unresolved mismatch');

#### invalidate mode may lack keys: not missing; a wrong value there is found

my $ki = redis_key_of($node, $db, 'inv', 5);
sql(q{SELECT wtcache.get('inv', '5')});
ok(defined redis_cmd($rp, 'GET', $ki), 'a read filled a key of the invalidate-mode table');
my ($c0) = split /\|/, audit();
redis_cmd($rp, 'DEL', $ki);
ok(wait_audit("checked >= $c0 + 2600"), 'a pass over every table');
like(audit(), qr/^\d+\|1\|1\|/, 'a key an invalidate-mode table lacks is not missing');
sql(q{SELECT wtcache.get('inv', '5')});
my $vi = redis_cmd($rp, 'GET', $ki);
$vi =~ s/"v":"[^"]*"/"v":"wrong"/;
redis_cmd($rp, 'SET', $ki, $vi);
ok(wait_audit('mismatched >= 2'), 'a wrong value it holds is found') or diag(audit());
ok(wait_verified('inv'), 'and removed');

#### a hash-format table's field changed

my $kh = redis_key_of($node, $db, 'h', 'k3', '3');
redis_cmd($rp, 'HSET', $kh, 'v', 'not the row');
ok(wait_audit('mismatched >= 3'), 'a changed field of a hash is found') or diag(audit());
ok(wait_verified('h'), 'and repaired');

#### a partitioned table: its partitions' blocks walked through the parent

sql(q{
CREATE TABLE pt (id int, b int, v text NOT NULL, PRIMARY KEY (id, b)) PARTITION BY RANGE (b);
CREATE TABLE pt_lo PARTITION OF pt FOR VALUES FROM (0) TO (50);
CREATE TABLE pt_hi PARTITION OF pt FOR VALUES FROM (50) TO (100);
INSERT INTO pt SELECT i, i % 100, 'p' || i FROM generate_series(1, 1000) i;
SELECT wtcache.watch('pt');
SELECT wtcache.warm('pt');
});
ok(wait_drained($node, $db), 'the partitioned table delivered');
my $kp = redis_key_of($node, $db, 'pt', '999', '99');
my $vp = redis_cmd($rp, 'GET', $kp);
$vp =~ s/"v":"p999"/"v":"wrong"/;
redis_cmd($rp, 'SET', $kp, $vp);
ok(wait_audit('mismatched >= 4'), 'a wrong value of a row in a partition is found') or diag(audit());
ok(wait_verified('pt'), 'and repaired');

# A partition whose columns are in another order (created apart, with a
# dropped column, then attached): the audit walks each partition's heap
# alone, and must render its rows as a read through pt does.
sql(q{
CREATE TABLE pt_odd (v text NOT NULL, dropme int, b int NOT NULL, id int NOT NULL);
ALTER TABLE pt_odd DROP COLUMN dropme;
INSERT INTO pt_odd SELECT 'o' || i, 100 + i % 50, i FROM generate_series(1, 300) i;
ALTER TABLE pt ATTACH PARTITION pt_odd FOR VALUES FROM (100) TO (150);
});
ok(wait_drained($node, $db), 'the attached partition delivered');
my ($checked0, $mismatched0) = split /\|/, audit();
my $ko = redis_key_of($node, $db, 'pt', '150', '100');
my $vo = redis_cmd($rp, 'GET', $ko);
like($vo, qr/"id":150,"b":100,"v":"o150"\}$/, "the partition's row in Redis in pt's column order");
$vo =~ s/"v":"o150"/"v":"wrong"/;
redis_cmd($rp, 'SET', $ko, $vo);
ok(wait_audit('mismatched > ' . $mismatched0), "a wrong value in that partition is found") or diag(audit());
# two passes over every watched row since: nothing else found different
my $rows = sql(q{SELECT sum((xpath('/row/c/text()',
                   query_to_xml(format('SELECT count(*) AS c FROM %s', rel), false, true, '')))[1]::text::int)
                 FROM wtcache.watched});
ok(wait_audit('checked >= ' . ($checked0 + 2 * $rows)), "two passes over the $rows rows") or diag(audit());
is((split /\|/, audit())[1], $mismatched0 + 1, 'and only that value was found different');
ok(wait_verified('pt'), 'and repaired');

#### off means off

set_rate(0);
# the setting reached the worker once wait() round trips passed through it
ok(wait_drained($node, $db) && wait_drained($node, $db), 'the worker went round its loop');
my $frozen = audit();
redis_cmd($rp, 'SET', $k7, $forged);
ok(wait_drained($node, $db), 'the worker went round its loop again');
is(audit(), $frozen, 'off: nothing more is checked');
is(sql(q{SELECT count(*) FROM wtcache.verify('acct')}), '1', 'and the planted value stays (verify() sees it)');

$node->stop;
$redis->stop;
done_testing();
