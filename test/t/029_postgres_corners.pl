# The corners PostgreSQL's own behaviour opens (issue 14), one section each:
# a watched table dropped while its changes are delivered; key spellings
# that a type's equality accepts but its text does not keep; writes applied
# as a replica (logical replication apply, pg_restore); key types whose
# typmod matters; versions that must not go back when a row's key expired
# or was evicted.
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
my $node = new_wtcache_node('corners', redis_port => $rp);
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

my $start = sql(q{SELECT pg_postmaster_start_time()});

#### DROP TABLE while its changes are delivered

# Each round leaves changes queued (delivery paused) and drops the table in
# the middle of the worker's claim once delivery resumes; the worker must
# neither crash nor stop.
sql(q{CREATE TABLE keep (id int PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('keep');});
for my $round (1 .. 15)
{
	sql(qq{
CREATE TABLE gone$round (id int PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('gone$round');
INSERT INTO gone$round SELECT i, 'v' || i FROM generate_series(1, 2000) i;
INSERT INTO keep VALUES ($round, 'round $round');
DROP TABLE gone$round;
});
}
ok(wait_drained($node, $db), 'after 15 tables dropped with changes queued, delivery goes on');
compare_table_ok($node, $db, 'keep', $rp, 'and the table that stays is in Redis');
is(sql(q{SELECT pg_postmaster_start_time()}), $start, 'the server did not restart');
unlike(slurp_file($node->logfile), qr/terminated by signal|wtcache: .*does not exist/,
	'no worker crashed or failed on a dropped table');

#### Key spellings the type's equality accepts

sql(q{
CREATE TABLE price (amount numeric PRIMARY KEY, label text NOT NULL);
INSERT INTO price VALUES (1.0, 'one'), (0, 'zero');
CREATE TABLE fl (x float8 PRIMARY KEY, label text NOT NULL);
INSERT INTO fl VALUES (0, 'zero');
SELECT wtcache.watch('price', warm => true);
SELECT wtcache.watch('fl', warm => true);
});
ok(wait_drained($node, $db), 'warmed');
for my $spelling ('1.00', '1.000', '1.0')
{
	is(sql(qq{SELECT wtcache.get('price', '$spelling')->>'label'}), 'one', "get('$spelling') finds the row");
}
is(sql(q{SELECT wtcache.get('fl', '-0')->>'label'}), 'zero', "get('-0') of a float key finds 0");
sql(q{UPDATE price SET label = 'uno' WHERE amount = 1; UPDATE fl SET label = 'nil' WHERE x = 0;});
ok(wait_drained($node, $db), 'the changes are delivered');
for my $spelling ('1.00', '1.000', '1.0')
{
	is(sql(qq{SELECT wtcache.get('price', '$spelling')->>'label'}), 'uno',
		"get('$spelling') after the change returns the new value");
}
is(sql(q{SELECT wtcache.get('fl', '-0')->>'label'}), 'nil', "get('-0') too");
is(redis_cmd($rp, 'EXISTS', redis_key_of($node, $db, 'price', '1.00')), 0,
	'no value was ever stored under another spelling');

#### Writes applied as a replica

sql(q{CREATE TABLE repl (id int PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('repl');});
sql(q{SET session_replication_role = replica; INSERT INTO repl VALUES (1, 'applied as replica');});
ok(wait_drained($node, $db), 'delivered');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'repl', 1)) // '', qr/applied as replica/,
	'a change applied with session_replication_role = replica reaches Redis');
sql(q{SET session_replication_role = replica; UPDATE repl SET v = 'updated as replica'; });
ok(wait_drained($node, $db), 'delivered');
is(sql(q{SELECT wtcache.get('repl', '1')->>'v'}), 'updated as replica', 'and reads return it');

#### Capture triggers disabled, as pg_restore --disable-triggers does

sql(q{CREATE TABLE toggled (id int PRIMARY KEY, v text NOT NULL);
      INSERT INTO toggled SELECT i, 'v' || i FROM generate_series(1, 20) i;
      SELECT wtcache.watch('toggled', warm => true);});
ok(wait_drained($node, $db), 'toggled delivered');
sql(q{ALTER TABLE toggled DISABLE TRIGGER ALL; UPDATE toggled SET v = 'while disabled' WHERE id <= 5;});
is(sql(q{SELECT wtcache.get('toggled', '3')->>'v'}), 'while disabled',
	'while its capture triggers are disabled, reads of the table go to the table');
my ($ret, $out, $err) = $node->psql($db, q{SELECT wtcache.wait('30s')});
is($out, 'f', 'and wait() cannot say Redis holds everything');
like($err, qr/changes of table "toggled" committed before this call are set aside/, 'it says why');
is(sql(q{SELECT wtcache.retry_set_aside('toggled') + wtcache.discard_set_aside('toggled')}), '0',
	'retry and discard leave that hold alone: only enabling the triggers ends it');
is(sql(q{SELECT wtcache.get('toggled', '4')->>'v'}), 'while disabled', 'reads still go to the table');
sql(q{ALTER TABLE toggled ENABLE TRIGGER ALL});
ok(wait_drained($node, $db), 'once enabled again, everything is delivered');
compare_table_ok($node, $db, 'toggled', $rp, 'including the changes made while they were disabled');
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'toggled'::regclass AND tgname LIKE 'wtcache%' AND tgenabled = 'A'}),
	'4', 'and the capture triggers fire ALWAYS again, for replicas too');

#### A key type whose typmod matters

sql(q{
CREATE TABLE flags (b bit(3) PRIMARY KEY, v text NOT NULL);
INSERT INTO flags VALUES (B'101', 'five'), (B'001', 'one');
SELECT wtcache.watch('flags', warm => true);
});
ok(wait_drained($node, $db), 'bit(3) keys delivered');
compare_table_ok($node, $db, 'flags', $rp, 'Redis holds the rows of bit(3) keys, not tombstones');
is(sql(q{SELECT wtcache.get('flags', '101')->>'v'}), 'five', "get('101') of a bit(3) key");

#### ALTER COLUMN TYPE of the key (the int to bigint migration) and of a tag column

sql(q{
CREATE TABLE mig (id int PRIMARY KEY, org int NOT NULL, v text NOT NULL);
INSERT INTO mig SELECT i, i % 3, 'v' || i FROM generate_series(1, 300) i;
SELECT wtcache.watch('mig', tags => ARRAY['org:{org}'], warm => true);
});
ok(wait_drained($node, $db), 'mig delivered');
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE mig ALTER COLUMN id TYPE bigint});
is($ret, 0, 'ALTER COLUMN TYPE bigint of the key column works on a watched table') or diag($err);
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE mig ALTER COLUMN org TYPE bigint});
is($ret, 0, 'and of a tag column') or diag($err);
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'mig'::regclass AND tgname LIKE 'wtcache_capture_%' AND tgenabled = 'A'}),
	'3', 'the capture triggers are back, always enabled');
sql(q{INSERT INTO mig VALUES (5000000000, 1, 'big'); UPDATE mig SET v = 'after' WHERE id <= 10});
ok(wait_drained($node, $db), 'delivered after the migration');
compare_table_ok($node, $db, 'mig', $rp, 'Redis equals the migrated table');
is(sql(q{SELECT wtcache.get('mig', '5000000000')->>'v'}), 'big', 'a key past int4 reads back');
($ret, $out, $err) = $node->psql($db, q{BEGIN; ALTER TABLE mig ALTER COLUMN id TYPE numeric; ROLLBACK;});
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'mig'::regclass AND tgname LIKE 'wtcache_capture_%'}),
	'3', 'a migration rolled back leaves the triggers as they were');

#### A key column that lost its unique index and NOT NULL

sql(q{CREATE TABLE nk (id int PRIMARY KEY, v text); INSERT INTO nk VALUES (1, 'a');
      SELECT wtcache.watch('nk', warm => true);});
ok(wait_drained($node, $db), 'nk delivered');
$node->psql($db, q{ALTER TABLE nk DROP CONSTRAINT nk_pkey; ALTER TABLE nk ALTER COLUMN id DROP NOT NULL;});
my $count = q{SELECT r->>'n' FROM wtcache.query('SELECT count(*) AS n FROM nk') r};
is(sql($count), '1', 'a cached query over it');
ok(wait_drained($node, $db), 'settled');
($ret, $out, $err) = $node->psql($db, q{INSERT INTO nk VALUES (NULL, 'no key')});
is($ret, 0, 'a row with a null key is written, as without wtcache') or diag($err);
ok(wait_drained($node, $db), 'delivered');
is(sql($count), '2', 'and it invalidates what depends on the table');
($ret, $out, $err) = $node->psql($db, q{UPDATE nk SET id = NULL WHERE id = 1});
is($ret, 0, 'a key set to null is written too');
ok(wait_drained($node, $db), 'delivered');
is(sql(q{SELECT wtcache.get('nk', '1')}), '', 'and the row under the old key is gone');

#### ... also with a DBA's event trigger that watches tables as they change

sql(q{
CREATE FUNCTION rewatch() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE object_type = 'table' LOOP
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = r.objid AND tgname = 'wtcache_capture_ins') THEN
      PERFORM wtcache.watch(r.objid::regclass);
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER rewatch ON ddl_command_end WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION rewatch();
CREATE TABLE mig2 (id int PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('mig2');
INSERT INTO mig2 VALUES (1, 'a');
});
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE mig2 ALTER COLUMN v TYPE varchar(10)});
is($ret, 0, 'ALTER COLUMN TYPE of another column, with an event trigger that re-watches') or diag($err);
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE mig2 ALTER COLUMN id TYPE bigint});
is($ret, 0, 'and of the key column') or diag($err);
sql(q{DROP EVENT TRIGGER rewatch; UPDATE mig2 SET v = 'b'});
ok(wait_drained($node, $db), 'delivered');
compare_table_ok($node, $db, 'mig2', $rp, 'Redis equals the table');

#### UNLOGGED tables: emptied by crash recovery, while Redis would keep them

($ret, $out, $err) = $node->psql($db, q{CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY); SELECT wtcache.watch('scratch');});
like($err, qr/cannot watch unlogged table "scratch"/, 'watch() refuses an unlogged table');
sql(q{CREATE TABLE soon_unlogged (id int PRIMARY KEY, v text); INSERT INTO soon_unlogged VALUES (1, 'a');
      SELECT wtcache.watch('soon_unlogged', warm => true);});
ok(wait_drained($node, $db), 'delivered');
my $unlogged_keys = table_key_pattern($node, $db, 'soon_unlogged');
is(scalar @{ redis_row_keys($rp, $unlogged_keys) }, 1, 'its row is in Redis');
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE soon_unlogged SET UNLOGGED});
is($ret, 0, 'SET UNLOGGED of a watched table is accepted');
like($err, qr/WARNING:  wtcache: table "soon_unlogged" is no longer watched: it is unlogged now/, 'with a warning');
ok(wait_drained($node, $db), 'the removal is delivered');
is(scalar @{ redis_row_keys($rp, $unlogged_keys) }, 0,
	'and its keys are gone from Redis');

#### DDL that changes values without touching the table

sql(q{
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE DOMAIN note AS text;
CREATE TYPE point2 AS (x int, y int);
CREATE TABLE moods (id int PRIMARY KEY, m mood NOT NULL, n note, p point2);
INSERT INTO moods VALUES (1, 'sad', 'a note', ROW(1, 2));
CREATE TABLE moodkey (m mood PRIMARY KEY, v text NOT NULL);
INSERT INTO moodkey VALUES ('ok', 'fine');
SELECT wtcache.watch('moods', warm => true);
SELECT wtcache.watch('moodkey', warm => true);
});
ok(wait_drained($node, $db), 'delivered');
sql(q{ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'; ALTER TYPE mood RENAME VALUE 'ok' TO 'good';});
ok(wait_drained($node, $db), 'the enum rename is delivered');
compare_table_ok($node, $db, 'moods', $rp, 'rows show the renamed enum value');
compare_table_ok($node, $db, 'moodkey', $rp, 'a key of the renamed value has its new key, the old one is gone');
sql(q{ALTER TYPE point2 ADD ATTRIBUTE z int});
ok(wait_drained($node, $db), 'the composite change is delivered');
compare_table_ok($node, $db, 'moods', $rp, 'rows show the new attribute');
sql(q{DROP DOMAIN note CASCADE});
ok(wait_drained($node, $db), 'the column dropped with its domain is delivered');
compare_table_ok($node, $db, 'moods', $rp, 'rows lose the column dropped by DROP DOMAIN ... CASCADE');

# ... also when such DDL follows DDL: the worker must read the rows each
# one requeued with the catalogs as it left them, never with a cache of
# the type from before (it once pushed rows under an enum label renamed
# away, or without an attribute just added, now and then).
sql(q{CREATE TYPE tag AS ENUM ('t0'); CREATE TYPE pair AS (a int, b int);
      CREATE TABLE tagged (t tag PRIMARY KEY, p pair);
      INSERT INTO tagged VALUES ('t0', ROW(1, 2));
      SELECT wtcache.watch('tagged', warm => true);});
ok(wait_drained($node, $db), 'tagged delivered');
my @stale_rounds;
for my $round (1 .. 40)
{
	my $prev = $round - 1;
	sql($round % 2 ? "ALTER TYPE pair ADD ATTRIBUTE c$round int" : "ALTER TYPE pair DROP ATTRIBUTE c$prev");
	sql("ALTER TYPE tag RENAME VALUE 't$prev' TO 't$round'");
	wait_drained($node, $db) or push(@stale_rounds, "$round (not drained)"), next;
	my $in_redis = redis_cmd($rp, 'GET', redis_key_of($node, $db, 'tagged', "t$round")) // '';
	$in_redis =~ s/^\{"_v":\d+,/{/;
	push @stale_rounds, $round if $in_redis ne sql(q{SELECT row_to_json(r)::text FROM tagged r});
}
is(join(', ', @stale_rounds), '', 'after each of 40 rounds of type DDL, Redis holds the row as the table has it, under its key');

#### A version a reader sees never goes back, also after a TTL expired

sql(q{CREATE TABLE short (id int PRIMARY KEY, v text NOT NULL);
      SELECT wtcache.watch('short', ttl => '2 seconds');
      INSERT INTO short VALUES (1, 'one'); UPDATE short SET v = 'uno';});
ok(wait_drained($node, $db), 'short delivered');
my $skey = redis_key_of($node, $db, 'short', 1);
my ($v_before) = (redis_cmd($rp, 'GET', $skey) // '') =~ /^\{"_v":(\d+)/;
ok(defined $v_before && $v_before > 0, "the row carries its version ($v_before)");
my $expired = 0;
for (1 .. 200)
{
	$expired = 1, last unless redis_cmd($rp, 'EXISTS', $skey);
	usleep(50_000);
}
ok($expired, 'the row expired');
is(sql(q{SELECT wtcache.get('short', '1')->>'v'}), 'uno', 'a read refills it');
my ($v_after) = (redis_cmd($rp, 'GET', $skey) // '') =~ /^\{"_v":(\d+)/;
cmp_ok($v_after // 0, '>=', $v_before, 'with a version no lower than the one it had');

#### ... and after a row of a table without a TTL was evicted

# Nothing in Redis remembers the version of such a row once its key is
# gone; the reader's fill must still not write it back with a lower "_v",
# nor with one that refuses the next change.
sql(q{CREATE TABLE kept (id int PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('kept');
      INSERT INTO kept VALUES (1, 'v0'), (2, 'w0');});
sql(qq{UPDATE kept SET v = 'v$_' WHERE id = 1}) for 1 .. 5;
ok(wait_drained($node, $db), 'kept delivered');
my $kkey = redis_key_of($node, $db, 'kept', 1);
my ($v_pushed) = redis_row_version(redis_cmd($rp, 'GET', $kkey));
ok(defined $v_pushed && $v_pushed > 0, 'the row carries its version (' . ($v_pushed // 'none') . ')');
redis_cmd($rp, 'DEL', $kkey);    # as an eviction would
is(sql(q{SELECT wtcache.get('kept', '1')->>'v'}), 'v5', 'a read after the eviction returns the row');
my ($v_filled) = redis_row_version(redis_cmd($rp, 'GET', $kkey));
ok(defined $v_filled, 'and fills it into Redis');
cmp_ok($v_filled // 0, '>=', $v_pushed // 1, 'with a version no lower than the one pushed before');
sql(q{UPDATE kept SET v = 'v6' WHERE id = 1});
ok(wait_drained($node, $db), 'a later change is delivered');
my ($v_next, $rest) = redis_row_version(redis_cmd($rp, 'GET', $kkey));
like($rest // '', qr/"v":"v6"/, 'and replaces the filled row: a fill never refuses a later change');
cmp_ok($v_next // 0, '>', $v_filled // 0, 'with a higher version');
# get_many() fills the same way
my $k2 = redis_key_of($node, $db, 'kept', 2);
my ($v2_pushed) = redis_row_version(redis_cmd($rp, 'GET', $k2));
redis_cmd($rp, 'DEL', $kkey, $k2);
is(sql(q{SELECT string_agg("row"->>'v', ',') FROM wtcache.get_many('kept', ARRAY['1', '2'])}),
	'v6,w0', 'get_many() after the eviction returns the rows');
my ($v1_many) = redis_row_version(redis_cmd($rp, 'GET', $kkey));
my ($v2_many) = redis_row_version(redis_cmd($rp, 'GET', $k2));
ok(defined $v1_many && $v1_many >= $v_next && defined $v2_many && $v2_many >= $v2_pushed,
	'and fills them with versions no lower than before');

#### Only durable commits reach Redis

# With synchronous_commit off a commit is visible before its WAL is
# flushed; the WAL writer flushes it within wal_writer_delay (10 s here),
# and the worker waits for it up to twice that.
# Once Redis has the change, a crash must not lose it.
sql(q{ALTER SYSTEM SET wal_writer_delay = '10s'; SELECT pg_reload_conf();
      CREATE TABLE durable (id int PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('durable');});
ok(wait_drained($node, $db), 'ready');
sql(q{SET synchronous_commit = off; INSERT INTO durable VALUES (1, 'async commit');});
my $dkey = redis_key_of($node, $db, 'durable', 1);
my $seen = 0;
for (1 .. 1200)
{
	$seen = 1, last if (redis_cmd($rp, 'GET', $dkey) // '') =~ /async commit/;
	usleep(50_000);
}
ok($seen, 'Redis has the asynchronously committed row');
is(sql(q{SELECT pg_postmaster_start_time()}), $start, 'the server never restarted until now');
$node->stop('immediate');
$node->start;
is(sql(q{SELECT v FROM durable WHERE id = 1}), 'async commit',
	'after a crash the row Redis has is still committed: it was flushed before it was sent');
sql(q{ALTER SYSTEM RESET wal_writer_delay; SELECT pg_reload_conf();});
$node->stop;

#### Without shared_preload_libraries, capture still works

my $plain = PostgreSQL::Test::Cluster->new('no_preload');
$plain->init;
$plain->start;
($ret, $out, $err) = $plain->psql('postgres', q{
CREATE EXTENSION wtcache;
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('t');
INSERT INTO t VALUES (1, 'captured');
SELECT count(*) FROM wtcache.queue WHERE relid = 't'::regclass AND keys IS NOT NULL;});
is($ret, 0, 'the library loads in a session of a server that did not preload it') or diag($err);
is((split /\n/, $out)[-1], '1', 'and the capture triggers queue the change');
$plain->stop;

#### A real eviction: maxmemory with allkeys-lru

# A Redis of its own, so that the row is the only key idle long enough for
# LRU to choose it, and the generation marker stays.
my $eredis = start_redis(name => 'evict');
my $erp = $eredis->port;
my $enode = new_wtcache_node('evict', redis_port => $erp);
$enode->safe_psql($db, q{
CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL); SELECT wtcache.watch('big');
INSERT INTO big VALUES (1, repeat('a', 200000));
UPDATE big SET v = repeat('b', 200000); UPDATE big SET v = repeat('c', 200000);});
ok(wait_drained($enode, $db), 'big delivered');
my $bkey = redis_key_of($enode, $db, 'big', 1);
my ($v_big) = redis_row_version(redis_cmd($erp, 'GET', $bkey));
ok(defined $v_big && $v_big > 0, 'the big row carries its version');
my $idle = 0;
for (1 .. 100)
{
	$idle = 1, last if redis_cmd($erp, 'OBJECT', 'IDLETIME', $bkey) >= 2;
	usleep(100_000);
}
ok($idle, 'the row has been idle for two seconds');
my @others = grep { $_ ne $bkey } @{ redis_scan_keys($erp, '*') };
redis_cmd($erp, 'TOUCH', @others) if @others;
my ($used) = redis_cmd($erp, 'INFO', 'memory') =~ /^used_memory:(\d+)/m;
redis_cmd($erp, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru');
redis_cmd($erp, 'CONFIG', 'SET', 'maxmemory-samples', '10');
redis_cmd($erp, 'CONFIG', 'SET', 'maxmemory', $used - 100_000);
redis_cmd($erp, 'PING');    # a command runs the eviction
redis_cmd($erp, 'CONFIG', 'SET', 'maxmemory', '0');
my ($evicted) = redis_cmd($erp, 'INFO', 'stats') =~ /^evicted_keys:(\d+)/m;
is($evicted, 1, 'Redis evicted one key');
is(redis_cmd($erp, 'EXISTS', $bkey), 0, 'the row');
is($enode->safe_psql($db, q{SELECT left(wtcache.get('big', '1')->>'v', 3)}), 'ccc',
	'a read after the eviction returns the row');
my ($v_big_filled) = redis_row_version(redis_cmd($erp, 'GET', $bkey));
cmp_ok($v_big_filled // 0, '>=', $v_big, 'and fills it with a version no lower than the evicted one');
$enode->safe_psql($db, q{UPDATE big SET v = 'd'});
ok(wait_drained($enode, $db), 'a later change is delivered');
my ($v_big_next, $big_rest) = redis_row_version(redis_cmd($erp, 'GET', $bkey));
like($big_rest // '', qr/"v":"d"/, 'and replaces the filled row');
cmp_ok($v_big_next // 0, '>', $v_big_filled // 0, 'with a higher version');
$enode->stop;
done_testing();
