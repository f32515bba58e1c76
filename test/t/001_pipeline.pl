# Capture and delivery of every kind of change: INSERT/UPDATE/DELETE, COPY,
# multi-row statements, TRUNCATE, primary key changes, composite and
# explicit keys, awkward text keys, uuid and bigint keys; rolled-back work
# (transactions, savepoints, failed subtransactions) never reaches Redis;
# versions increase; resync and unwatch.
#
# This file is UTF-8 and deliberately has no "use utf8": strings are bytes,
# as they come back from psql and Redis.
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
my $node = new_wtcache_node('pipeline', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub drained
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return ok(wait_drained($node, $db, '60s'), "wait() returns true after $what");
}

sub key_of { return redis_key_of($node, $db, @_); }

# Redis value of the row with these key values.
sub rget { my ($table, @key) = @_; return redis_cmd($rp, 'GET', key_of($table, @key)); }

# The version of a Redis row value, or undef.
sub version_of { my ($v) = redis_row_version($_[0]); return $v; }

# Redis holds exactly this row (per row_to_json) under the row's key.
sub row_in_redis
{
	my ($table, $where, $key, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $want = row_json($node, $db, $table, $where);
	my $got = rget($table, @$key);
	my ($v, $rest) = redis_row_version($got);
	if (!defined $want)
	{
		fail("$name (no row $where in $table)");
		return;
	}
	if (!defined $v)
	{
		fail($name);
		diag("Redis value: " . (defined $got ? "'$got'" : 'absent'));
		return;
	}
	is('{' . $rest, $want, $name);
	return;
}

sub absent
{
	my ($table, $key, $name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $got = rget($table, @$key);
	is($got, undef, $name);
	return;
}

# Quote a Perl string as an SQL literal.
sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }

#### Plain DML on a table with a serial-ish integer key

sql(q{
CREATE TABLE items (
    id     int PRIMARY KEY,
    name   text NOT NULL,
    qty    int,
    price  numeric(10,2),
    tags   text[],
    meta   jsonb,
    seen   timestamptz DEFAULT '2024-01-02 03:04:05+02'
);
SELECT wtcache.watch('public.items');
});

is(sql(q{SELECT array_to_string(key_columns, ',') FROM wtcache.watched
         WHERE rel = 'items'::regclass}),
	'id', 'watch() took the primary key as the key');

sql(q{INSERT INTO items (id, name, qty, price, tags, meta)
      VALUES (1, 'one', 1, 1.50, '{a,b}', '{"k": [1, 2, {"x": null}]}')});
sql(q{INSERT INTO items (id, name, qty, price)
      SELECT i, 'item ' || i, i % 17, i / 3.0 FROM generate_series(2, 2000) i});
sql(q{INSERT INTO items (id, name, qty) VALUES
      (3001, 'multi a', 1), (3002, 'multi b', 2), (3003, 'multi c', 3)});
sql(q{UPDATE items SET qty = qty + 100, tags = ARRAY['updated']
      WHERE id % 3 = 0});
sql(q{DELETE FROM items WHERE id % 7 = 0});

# COPY FROM STDIN through psql, with escapes and non-ASCII text.
my @copy_rows = (
	[ 5001, "copy plain", 1, '2.50', '{x}', '{"a":1}' ],
	[ 5002, "copy tab\\there", 2, '\N', '\N', '\N' ],
	[ 5003, "copy newline\\nhere", 3, '0.01', '{"y z"}', '{"b":"c"}' ],
	[ 5004, "copy back\\\\slash and ünïcødé ☃", 4, '99.99', '{}', '[]' ],
	[ 5005, "copy {braces}:colons%", 5, '\N', '\N', '"s"' ],);
my $copy = "COPY items (id, name, qty, price, tags, meta) FROM STDIN;\n"
  . join('', map { join("\t", @$_) . "\n" } @copy_rows) . "\\.\n";
sql($copy);
is(sql('SELECT count(*) FROM items WHERE id BETWEEN 5001 AND 5005'),
	'5', 'COPY FROM STDIN loaded 5 rows');

drained('INSERT, multi-row INSERT, UPDATE, DELETE and COPY');
compare_table_ok($node, $db, 'items', $rp, 'items: Redis matches after DML and COPY');
row_in_redis('items', 'id = 1', [1], 'single-row INSERT with array and jsonb is in Redis');
row_in_redis('items', 'id = 3', [3], 'multi-row UPDATE reached Redis');
row_in_redis('items', 'id = 5004', [5004], 'COPY row with backslash and unicode is in Redis');
absent('items', [7], 'deleted row 7 is gone from Redis');
absent('items', [1400], 'deleted row 1400 is gone from Redis');
is(scalar @{ redis_row_keys($rp, table_key_pattern($node, $db, 'items')) },
	sql('SELECT count(*) FROM items'), 'items: one Redis row key per row');
like(redis_cmd($rp, 'GET', key_of('items', 1)), qr/\A\{"_v":[1-9][0-9]*,"id":1,/,
	'value starts with "_v":N then the row');

# A lease exists only while a row's value is missing (src/push.c), so a
# change to a row whose value is in Redis deletes none.
redis_cmd($rp, 'CONFIG', 'RESETSTAT');
sql(q{UPDATE items SET qty = qty + 1 WHERE id <= 500});
drained('an UPDATE of rows whose values are in Redis');
my ($lease_dels) = redis_cmd($rp, 'INFO', 'commandstats') =~ /^cmdstat_del:calls=(\d+)/m;
is($lease_dels // 0, 0, 'its apply deleted no fill lease');
# ... and reads and writes their values with one MGET and one MSET a call
# (of up to 128 rows), not a GETRANGE and a SET a row.
my %calls = map { /^cmdstat_(\w+):calls=(\d+)/ ? ($1 => $2) : () }
  split /\r?\n/, redis_cmd($rp, 'INFO', 'commandstats');
note(join ', ', map { "$_ $calls{$_}" } sort keys %calls);
is($calls{getrange} // 0, 0, 'its apply read no value a row at a time');
cmp_ok($calls{set} // 0, '<', 50, 'nor wrote one a row at a time');
cmp_ok($calls{mset} // 0, '>=', 4, 'it wrote them in calls of many rows');
compare_table_ok($node, $db, 'items', $rp, 'items: Redis matches after it');

#### Primary key changes

my $v2_before = rget('items', 2);
sql('UPDATE items SET id = 100001 WHERE id = 1');
sql('UPDATE items SET id = id + 1000000 WHERE id BETWEEN 10 AND 20');
drained('primary key updates');
absent('items', [1], 'old key 1 is gone after UPDATE of the primary key');
row_in_redis('items', 'id = 100001', [100001], 'new key 100001 holds the row');
absent('items', [12], 'old key 12 is gone after a multi-row key change');
row_in_redis('items', 'id = 1000012', [1000012], 'new key 1000012 holds the row');
is(rget('items', 2), $v2_before, 'untouched row 2 was not rewritten');
compare_table_ok($node, $db, 'items', $rp, 'items: Redis matches after key changes');

#### Composite primary key, and explicit key columns

sql(q{
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
SELECT wtcache.watch('pairs');
INSERT INTO pairs SELECT i % 10, 'b' || i, 'v' || i FROM generate_series(1, 200) i;
UPDATE pairs SET v = 'changed' WHERE a = 3;
DELETE FROM pairs WHERE a = 4;
UPDATE pairs SET b = b || '-moved' WHERE a = 5;
});
sql(q{
CREATE TABLE ekey (id serial PRIMARY KEY, region int NOT NULL, code text NOT NULL,
                   val int, UNIQUE (region, code));
SELECT wtcache.watch('ekey', key => ARRAY['region', 'code']);
INSERT INTO ekey (region, code, val) SELECT i % 5, 'c' || i, i FROM generate_series(1, 300) i;
UPDATE ekey SET val = -val WHERE region = 1;
UPDATE ekey SET code = code || 'x' WHERE region = 2;
DELETE FROM ekey WHERE region = 3;
});
is(sql(q{SELECT array_to_string(key_columns, ',') FROM wtcache.watched
         WHERE rel = 'ekey'::regclass}),
	'region,code', 'watch(key => ...) stored the explicit key columns');
drained('composite-key changes');
compare_table_ok($node, $db, 'pairs', $rp, 'pairs (composite primary key): Redis matches');
compare_table_ok($node, $db, 'ekey', $rp, 'ekey (explicit 2-column key): Redis matches');
is(key_of('pairs', 3, 'b13'), sql(q{SELECT wtcache.redis_key('pairs', 3::text, 'b13')}),
	'redis_key takes one text argument per key column');
row_in_redis('pairs', q{a = 3 AND b = 'b13'}, [ 3, 'b13' ], 'composite key row (3, b13) updated in Redis');
absent('pairs', [ 4, 'b14' ], 'deleted composite key (4, b14) is gone');
absent('pairs', [ 5, 'b15' ], 'old composite key (5, b15) is gone after key change');
row_in_redis('pairs', q{a = 5 AND b = 'b15-moved'}, [ 5, 'b15-moved' ], 'new composite key (5, b15-moved) is present');
row_in_redis('ekey', q{region = 2 AND code = 'c2x'}, [ 2, 'c2x' ], 'explicit key row (2, c2x) is present');
absent('ekey', [ 2, 'c2' ], 'explicit key (2, c2) is gone after its code changed');
absent('ekey', [ 3, 'c3' ], 'explicit key (3, c3) is gone after DELETE');

#### Text keys with separators, escapes, unicode

my @text_keys = (
	'plain', 'a:b', 'a:b:c', ':', '::', '{braces}', '}{', 'wtc:{x}', '{',
	'}', '100%', '%', '%3A', '%7B', 'with space', ' leading space',
	'trailing space ', 'ünïcødé ☃ 日本語', "line\nbreak", "tab\there",
	'back\\slash', q{quote'd}, '"double"', '*', '?', '[x]', 'x' x 300);
sql(q{CREATE TABLE texts (k text PRIMARY KEY, v int);
      SELECT wtcache.watch('texts');});
sql('INSERT INTO texts VALUES '
	  . join(', ', map { '(' . lit($text_keys[$_]) . ", $_)" } 0 .. $#text_keys));
sql(q[UPDATE texts SET v = v + 1000 WHERE k LIKE '%:%' OR k LIKE '%}%']);
sql(q{DELETE FROM texts WHERE k = '%3A'});

sql(q[CREATE TABLE ctext (a text, b text, v text, PRIMARY KEY (a, b));
      SELECT wtcache.watch('ctext');
      INSERT INTO ctext VALUES
        ('a:b', 'c', '1'), ('a', 'b:c', '2'), ('a:b:c', 'x', '3'),
        ('a%3Ab', 'c', '4'), ('a', 'b%3Ac', '5'), ('a}', '{b', '6'),
        ('a', '', '7'), ('', 'a', '8'), ('ü:', ':ü', '9');]);
drained('inserts with awkward text keys');
compare_table_ok($node, $db, 'texts', $rp, 'texts (keys with : { } % spaces unicode newlines): Redis matches');
compare_table_ok($node, $db, 'ctext', $rp, 'ctext (composite text keys that could collide): Redis matches');
for my $k ('a:b', '{braces}', '100%', 'with space', 'ünïcødé ☃ 日本語', "line\nbreak")
{
	(my $show = $k) =~ s/\n/\\n/g;
	row_in_redis('texts', 'k = ' . lit($k), [$k], "text key '$show' is in Redis");
}
absent('texts', ['%3A'], q{deleted text key '%3A' is gone});
isnt(key_of('ctext', 'a:b', 'c'), key_of('ctext', 'a', 'b:c'),
	q{keys ('a:b','c') and ('a','b:c') differ});
isnt(key_of('ctext', 'a:b', 'c'), key_of('ctext', 'a%3Ab', 'c'),
	q{keys ('a:b','c') and ('a%3Ab','c') differ});

#### uuid and bigint keys

sql(q{
CREATE TABLE uu (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), v text);
SELECT wtcache.watch('uu');
INSERT INTO uu (v) SELECT 'u' || i FROM generate_series(1, 100) i;
INSERT INTO uu VALUES ('00000000-0000-0000-0000-000000000000', 'zero'),
                      ('ffffffff-ffff-ffff-ffff-ffffffffffff', 'max');
UPDATE uu SET v = v || '!' WHERE v LIKE 'u1%';
DELETE FROM uu WHERE v LIKE 'u2%';
CREATE TABLE bi (id bigint PRIMARY KEY, v text);
SELECT wtcache.watch('bi');
INSERT INTO bi VALUES (9223372036854775807, 'max'), (-9223372036854775808, 'min'),
                      (0, 'zero'), (-1, 'minus one'), (4294967296, 'two to the 32');
DELETE FROM bi WHERE id = -1;
UPDATE bi SET v = 'MAX' WHERE id = 9223372036854775807;
});
drained('uuid and bigint changes');
compare_table_ok($node, $db, 'uu', $rp, 'uu (uuid key): Redis matches');
compare_table_ok($node, $db, 'bi', $rp, 'bi (bigint key): Redis matches');
row_in_redis('uu', q{id = 'ffffffff-ffff-ffff-ffff-ffffffffffff'},
	['ffffffff-ffff-ffff-ffff-ffffffffffff'], 'uuid key row is in Redis');
row_in_redis('bi', 'id = 9223372036854775807', ['9223372036854775807'], 'bigint max key row is in Redis');
row_in_redis('bi', 'id = -9223372036854775808', ['-9223372036854775808'], 'bigint min key row is in Redis');
absent('bi', ['-1'], 'deleted bigint key -1 is gone');

#### TRUNCATE

sql(q{CREATE TABLE trunc_t (id int PRIMARY KEY, v text);
      SELECT wtcache.watch('trunc_t');
      INSERT INTO trunc_t SELECT i, 'v' || i FROM generate_series(1, 500) i;});
drained('500 inserts into trunc_t');
my $trunc_pattern = table_key_pattern($node, $db, 'trunc_t');
is(scalar @{ redis_row_keys($rp, $trunc_pattern) }, 500, 'trunc_t: 500 row keys before TRUNCATE');
sql('TRUNCATE trunc_t');
drained('TRUNCATE');
is(scalar @{ redis_row_keys($rp, $trunc_pattern) }, 0, 'TRUNCATE removed every row key of trunc_t');
compare_table_ok($node, $db, 'trunc_t', $rp, 'trunc_t: Redis matches after TRUNCATE');
sql(q{BEGIN;
      INSERT INTO trunc_t SELECT i, 'before' FROM generate_series(1, 3) i;
      TRUNCATE trunc_t;
      INSERT INTO trunc_t SELECT i, 'after' FROM generate_series(10, 12) i;
      COMMIT;});
sql(q{BEGIN; TRUNCATE trunc_t; ROLLBACK;});
drained('INSERT, TRUNCATE, INSERT in one transaction, and a rolled-back TRUNCATE');
is(join(',', map { version_of($_) ? 'row' : 'none' } map { rget('trunc_t', $_) } 1, 10, 11, 12),
	'none,row,row,row', 'only rows inserted after the TRUNCATE are in Redis');
compare_table_ok($node, $db, 'trunc_t', $rp, 'trunc_t: Redis matches after TRUNCATE in a transaction');

#### Rolled-back work never reaches Redis

my %before = map { $_ => rget('items', $_) } (2, 4, 9, 22, 24, 25);
ok(defined $before{$_}, "row $_ is in Redis before the rollback tests") for sort { $a <=> $b } keys %before;

sql(q{BEGIN;
      INSERT INTO items (id, name) VALUES (900001, 'rolled back insert');
      UPDATE items SET name = 'rolled back update' WHERE id = 2;
      DELETE FROM items WHERE id = 4;
      ROLLBACK;});
sql(q{BEGIN;
      UPDATE items SET name = 'kept before savepoint' WHERE id = 8;
      SAVEPOINT s1;
      INSERT INTO items (id, name) VALUES (900002, 'savepoint insert');
      UPDATE items SET name = 'savepoint update' WHERE id = 9;
      DELETE FROM items WHERE id = 22;
      ROLLBACK TO SAVEPOINT s1;
      INSERT INTO items (id, name) VALUES (900003, 'after rollback to savepoint');
      SAVEPOINT s2;
      UPDATE items SET name = 'released savepoint' WHERE id = 23;
      RELEASE SAVEPOINT s2;
      COMMIT;});
sql(q{DO $$
BEGIN
    BEGIN
        INSERT INTO items (id, name) VALUES (900004, 'failed subtransaction');
        UPDATE items SET name = 'failed subtransaction' WHERE id = 24;
        RAISE EXCEPTION 'boom';
    EXCEPTION WHEN others THEN
        NULL;
    END;
    INSERT INTO items (id, name) VALUES (900005, 'survivor');
END
$$;});
my ($ret, $out, $err) = $node->psql($db, q{BEGIN;
      UPDATE items SET name = 'aborted by error' WHERE id = 25;
      INSERT INTO items (id, name) VALUES (25, 'duplicate key');
      COMMIT;});
isnt($ret, 0, 'transaction failing on a duplicate key aborted');
sql(q{UPDATE items SET qty = 42 WHERE id = 5});
drained('rolled-back transactions and savepoints');

absent('items', [900001], 'INSERT of a rolled-back transaction is not in Redis');
is(rget('items', 2), $before{2}, 'UPDATE of a rolled-back transaction left the Redis value (and _v) unchanged');
is(rget('items', 4), $before{4}, 'DELETE of a rolled-back transaction left the Redis value unchanged');
absent('items', [900002], 'INSERT rolled back to a savepoint is not in Redis');
is(rget('items', 9), $before{9}, 'UPDATE rolled back to a savepoint left the Redis value unchanged');
is(rget('items', 22), $before{22}, 'DELETE rolled back to a savepoint left the Redis value unchanged');
absent('items', [900004], 'INSERT of a failed PL/pgSQL subtransaction is not in Redis');
is(rget('items', 24), $before{24}, 'UPDATE of a failed PL/pgSQL subtransaction left the Redis value unchanged');
is(rget('items', 25), $before{25}, 'UPDATE of a transaction aborted by an error left the Redis value unchanged');
row_in_redis('items', 'id = 8', [8], 'change made before the savepoint is in Redis');
row_in_redis('items', 'id = 900003', [900003], 'INSERT after ROLLBACK TO SAVEPOINT is in Redis');
row_in_redis('items', 'id = 23', [23], 'change under a released savepoint is in Redis');
row_in_redis('items', 'id = 900005', [900005], 'INSERT after the failed subtransaction is in Redis');
row_in_redis('items', 'id = 5', [5], 'later committed UPDATE is in Redis');
compare_table_ok($node, $db, 'items', $rp, 'items: Redis matches after the rollback tests');

#### Versions increase

my @versions = (version_of(rget('items', 5)));
for my $i (1 .. 5)
{
	sql("UPDATE items SET qty = $i WHERE id = 5");
	wait_drained($node, $db, '60s') or fail("wait() after update $i of row 5");
	my $val = rget('items', 5);
	push @versions, version_of($val);
	like($val, qr/"qty":$i,/, "update $i of row 5 is in Redis");
}
my $increasing = !grep { !defined $versions[$_] || ($_ > 0 && $versions[$_] <= $versions[ $_ - 1 ]) } 0 .. $#versions;
ok($increasing, '_v strictly increases over successive updates of one key')
  or diag('versions: ' . join(' ', map { $_ // 'undef' } @versions));

sql(q{BEGIN;
      UPDATE items SET qty = 1001 WHERE id = 5;
      UPDATE items SET qty = 1002 WHERE id = 5;
      UPDATE items SET qty = 1003 WHERE id = 5;
      COMMIT;});
drained('three updates of one row in one transaction');
like(rget('items', 5), qr/"qty":1003,/, 'the last of several updates in one transaction wins');
cmp_ok(version_of(rget('items', 5)) // 0, '>', $versions[-1], '_v increased again');

my $v6 = version_of(rget('items', 6));
sql('DELETE FROM items WHERE id = 6');
drained('DELETE of row 6');
absent('items', [6], 'row 6 deleted');
sql(q{INSERT INTO items (id, name) VALUES (6, 'reborn')});
drained('re-INSERT of row 6');
row_in_redis('items', 'id = 6', [6], 're-inserted row 6 is in Redis');
cmp_ok(version_of(rget('items', 6)) // 0, '>', $v6 // 0,
	'_v of a key re-inserted after a delete is higher than before the delete');

#### The queue drains; status agrees

ok($node->poll_query_until($db, 'SELECT count(*) = 0 FROM wtcache.queue'),
	'wtcache.queue is empty once drained');
ok($node->poll_query_until($db,
		'SELECT bool_and(pending = 0 AND captured = pushed) FROM wtcache.status'),
	'wtcache.status: nothing pending, captured = pushed for every table');
is(sql('SELECT bool_and(connected) FROM wtcache.status'), 't', 'wtcache.status shows the worker connected');

#### resync() restores keys lost in Redis

redis_cmd($rp, 'DEL', key_of('items', 2), key_of('items', 3));
absent('items', [2], 'row 2 deleted behind wtcache\'s back');
is(sql(q{SELECT wtcache.resync('items')}), sql('SELECT count(*) FROM items'),
	'resync(items) returns the number of rows queued');
drained('resync');
row_in_redis('items', 'id = 2', [2], 'resync restored row 2');
compare_table_ok($node, $db, 'items', $rp, 'items: Redis matches after resync');

#### unwatch(purge => true)

my $texts_pattern = table_key_pattern($node, $db, 'texts');
ok(scalar @{ redis_row_keys($rp, $texts_pattern) } > 0, 'texts has row keys before unwatch');
sql(q{SELECT wtcache.unwatch('texts', purge => true)});
drained('unwatch with purge');
is(scalar @{ redis_row_keys($rp, $texts_pattern) }, 0, 'unwatch(purge => true) removed every row key of texts');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'texts'::regclass}), '0',
	'texts is no longer in wtcache.watched');
sql(q{INSERT INTO texts VALUES ('after unwatch', 1)});
drained('an insert into an unwatched table');
is(scalar @{ redis_row_keys($rp, $texts_pattern) }, 0, 'changes to an unwatched table are not delivered');

#### Final check of every watched table

for my $t (qw(items pairs ekey ctext uu bi trunc_t))
{
	compare_table_ok($node, $db, $t, $rp, "final: Redis matches $t");
}
my $gens = redis_scan_keys($rp, 'wtc:{*}:gen');
is(scalar @$gens, 1, 'one generation marker key wtc:{<db>}:gen exists in Redis')
  or diag('markers: ' . join(' ', @$gens));

$node->stop;
done_testing();
