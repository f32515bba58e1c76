# watch(format => 'hash') (issue 19 part 2): a row as a Redis hash, a
# field per column and "_v".  Under concurrent writers Redis equals the
# table key for key (compare_hash_table renders the table itself, with
# format('%s')); HGET of one field; get(), get_many(), get_row() decode
# hashes into exactly what a JSON-format twin returns; verify() compares
# fields; TTL with jitter; invalidate mode fills hashes; a stale fill is
# refused; an oversized row is removed; a format change under writers
# leaves no key of the old type and no read of the old shape; events name
# hash rows; and all of it through a 3-master Redis Cluster.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WtcacheTest;
use RedisTopology;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('hash_format', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub stat_of
{
	my ($t, $col) = @_;
	return sql(qq{SELECT $col FROM wtcache.status WHERE table_name = '$t'::regclass});
}

ok(wait_drained($node, $db), 'the worker has checked Redis');
my $sub = WtcacheTest::RedisConn->new($rp, timeout => 10);
is($sub->command('SUBSCRIBE', 'wtc:events')->[0], 'subscribe', 'listening to the events');

#### every type, twice: a hash-format table and its JSON-format twin

my @cols = qw(id t looks_num n f r b j jb arr tarr ts tstz d tm iv by u e c dom ch vc big);
sql(q{
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN pos AS int CHECK (VALUE > 0);
CREATE TABLE hh (id int PRIMARY KEY, t text, looks_num text, n numeric, f float8, r real,
                 b boolean, j json, jb jsonb, arr int[], tarr text[], ts timestamp,
                 tstz timestamptz, d date, tm time, iv interval, by bytea, u uuid,
                 e mood, c pair, dom pos, ch char(4), vc varchar(10), big bigint, secret text);
CREATE TABLE hj (LIKE hh INCLUDING ALL);
INSERT INTO hh VALUES
  (1, 'plain', '42', 10.10, 1.1, 0.5, true, '{"a": [1, 2], "b": null}', '{"z": 1, "a": "x"}',
   '{1,NULL,3}', '{"a b","c,d",NULL}', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+05',
   '2024-02-29', '13:14:15', '1 year 2 mons 3 days 04:05:06', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   'happy', '(7,"x y")', 5, 'ab', 'vc', 9007199254740993, 'SECRET'),
  (2, NULL, '007', 'NaN', 'Infinity', '-0', false, 'null', '[]', '{}', '{}', '-infinity',
   'infinity', '0001-01-01 BC', '00:00', '-1 day', '\x', '00000000-0000-0000-0000-000000000000',
   'sad', '(,)', 1, NULL, '', -1, NULL),
  (3, E'tab\there "quote" \\\\ back\nline', '1e3', -0.000, 1e-300, 3.4e38, NULL, '"str"', '3.5', '{{1,2},{3,4}}',
   '{}', '1999-12-31 23:59:59', '1999-12-31 23:59:59.999999+00', '1999-12-31', '23:59:59.999999',
   '0', NULL, NULL, NULL, NULL, NULL, 'abcd', 'ünïcødé ☃', 0, 'x'),
  (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO hh SELECT i, 'row ' || i, (i * 7)::text, i / 7.0, i / 3.0, i / 9.0, i % 2 = 0,
                      json_build_object('i', i), jsonb_build_object('k', i, 'a', ARRAY[i]),
                      ARRAY[i, -i], ARRAY['x' || i], '2020-01-01'::timestamp + i * interval '1 hour 1 sec',
                      '2020-01-01 00:00+00'::timestamptz + i * interval '1 day 1 ms', '2020-01-01'::date + i,
                      '00:00'::time + i * interval '1 min', i * interval '1 day 1 sec', decode(md5(i::text), 'hex'),
                      md5(i::text)::uuid, (ARRAY['sad', 'ok', 'happy']::mood[])[1 + i % 3], ROW(i, 'p' || i)::pair,
                      i, 'c' || (i % 10), 'v' || i, i::bigint * 1000000007, 'SECRET-' || i
  FROM generate_series(5, 400) i;
INSERT INTO hj SELECT * FROM hh;
SELECT wtcache.watch('hh', exclude_columns => ARRAY['secret'], format => 'hash', warm => true);
SELECT wtcache.watch('hj', exclude_columns => ARRAY['secret'], warm => true);
});
ok(wait_drained($node, $db), 'warm delivered');
compare_hash_table_ok($node, $db, 'hh', $rp, 'warm: every row a hash of its columns', columns => \@cols);
compare_table_ok($node, $db, 'hj', $rp, '(its JSON twin: JSON strings)', columns => \@cols);

# the comparison can tell: the whole row (secret included) is not what Redis holds
my ($whole_ok) = compare_hash_table($node, $db, 'hh', $rp);
ok(!$whole_ok, 'Redis does not hold the excluded column (compare_hash_table can tell)');

# concurrent writers: the same statements on both tables
my @writers = map { $node->background_psql($db) } 1 .. 3;
for my $w (0 .. $#writers)
{
	my $stmts = join('', map {
		my $id = 5 + ($_ * 37 + $w * 101) % 420;
		my $s = $_ % 9 == 0 ? "DELETE FROM %T WHERE id = $id;\n"
		  : $_ % 5 == 0 ? "INSERT INTO %T (id, t, n, jb, tstz) VALUES ($id, 'ins $_', $_.5, '{\"w\": $w}', now())"
			. " ON CONFLICT (id) DO UPDATE SET t = NULL, n = EXCLUDED.n, arr = NULL;\n"
		  : "UPDATE %T SET t = t || '+', f = f * 2, arr = arr || $_, ts = NULL, tstz = tstz + interval '1 us', c = ROW($_, NULL) WHERE id = $id;\n";
		(my $a = $s) =~ s/%T/hh/g;
		(my $b = $s) =~ s/%T/hj/g;
		"BEGIN;\n$a$b" . ($_ % 13 == 0 ? "ROLLBACK;\n" : "COMMIT;\n");
	} 1 .. 400);
	$writers[$w]->query_until(qr/writing\n/, "\\echo writing\n$stmts\\echo written\n");
}
$_->query_until(qr/written\n/, '') for @writers;
$_->quit for @writers;
ok(wait_drained($node, $db), 'concurrent writes delivered');
compare_hash_table_ok($node, $db, 'hh', $rp, 'after concurrent writers: Redis equals the table, key for key', columns => \@cols);
compare_table_ok($node, $db, 'hj', $rp, '(and the twin)', columns => \@cols);

#### what a direct reader does

my $k1 = redis_key_of($node, $db, 'hh', 1);
is(redis_cmd($rp, 'TYPE', $k1), 'hash', 'a row key holds a hash');
is(redis_cmd($rp, 'HGET', $k1, 't'), 'plain', 'HGET of one field: the column\'s text');
is(redis_cmd($rp, 'HGET', $k1, 'tstz'), '2024-02-29 08:14:15+00', 'a timestamptz in UTC, its text output');
is(redis_cmd($rp, 'HGET', $k1, 'b'), 't', 'a boolean as PostgreSQL prints it');
is(redis_cmd($rp, 'HGET', $k1, 'by'), '\x00ff10', 'bytea in hex');
is(redis_cmd($rp, 'HGET', $k1, 'secret'), undef, 'no field for an excluded column');
is(redis_cmd($rp, 'HEXISTS', redis_key_of($node, $db, 'hh', 4), 't'), 0, 'no field for a NULL column');
like(redis_cmd($rp, 'HGET', $k1, '_v'), qr/^[1-9][0-9]*$/, 'the version in "_v"');
is(redis_cmd($rp, 'TYPE', redis_key_of($node, $db, 'hj', 1)), 'string', 'the JSON twin\'s key holds a string');

#### reads decode hashes into what the JSON twin returns

my $hits0 = stat_of('hh', 'read_hits');
my $n = sql(q{SELECT count(*) FROM hh});
is(sql(q{SELECT count(*) FROM hh WHERE wtcache.get('hh', id::text) IS NOT DISTINCT FROM wtcache.get('hj', id::text)}),
	$n, "get(): all $n rows equal their JSON twin's");
cmp_ok(stat_of('hh', 'read_hits') - $hits0, '>=', $n, '(they were hits: decoded from the hashes)');
is(sql(q{SET TimeZone = 'UTC'; SELECT count(*) FROM hh x WHERE wtcache.get('hh', id::text) = to_jsonb(x) - 'secret'}),
	$n, 'and equal the rows themselves (numbers, booleans, json, arrays, timestamps, bytea, NULLs)');
is(sql(q{SELECT wtcache.get('hh', '2')->>'looks_num'}), '007', 'text that looks like a number stays text');
is(sql(q{SELECT jsonb_typeof(wtcache.get('hh', '2')->'n') || ' ' || jsonb_typeof(wtcache.get('hh', '1')->'n')}),
	'string number', 'NaN as JSON renders it (a string), a number as a number');
is(sql(q{SELECT (SELECT array_agg(row ORDER BY key) FROM wtcache.get_many('hh', ARRAY(SELECT i::text FROM generate_series(0, 450) i)))
              = (SELECT array_agg(row ORDER BY key) FROM wtcache.get_many('hj', ARRAY(SELECT i::text FROM generate_series(0, 450) i)))}),
	't', 'get_many(): the same rows, NULL for the same missing keys');
is(sql(q{SELECT count(*) FROM hh WHERE row_to_json(wtcache.get_row(NULL::hh, id::text))::text
                                     = row_to_json(wtcache.get_row(NULL::hj, id::text))::text}),
	$n, 'get_row(): the same typed rows');

#### verify() compares fields

my ($rc, $out, $err) = $node->psql($db, q{SELECT count(*) FROM wtcache.verify('hh')});
is($out, '0', 'verify: no difference');
redis_cmd($rp, 'HSET', $k1, 't', 'planted');
redis_cmd($rp, 'HSET', redis_key_of($node, $db, 'hh', 5), 'extra_field', 'x');
redis_cmd($rp, 'DEL', redis_key_of($node, $db, 'hh', 6));
redis_cmd($rp, 'SET', redis_key_of($node, $db, 'hh', 6), '{"_v":1,"id":6}');
is(sql(q{SELECT string_agg(key[1] || ' ' || problem, ', ' ORDER BY key[1]::int) FROM wtcache.verify('hh')}),
	'1 differs, 5 differs, 6 differs', 'verify: a changed field, an extra field, a string at a hash key');
is(sql(q{SELECT in_redis::jsonb->>'t' FROM wtcache.verify('hh') WHERE key = '{1}'}), 'planted',
	'in_redis shows the hash\'s fields');
# a read of a key holding a value of the other format goes to the table
is(sql(q{SELECT wtcache.get('hh', '6') = wtcache.get('hj', '6')}), 't', 'get() of a key holding a string reads the table');
is(redis_cmd($rp, 'TYPE', redis_key_of($node, $db, 'hh', 6)), 'string', '(and fills nothing over it)');
sql(q{SELECT wtcache.resync('hh')});
ok(wait_drained($node, $db), 'resync delivered');
compare_hash_table_ok($node, $db, 'hh', $rp, 'resync repaired every key', columns => \@cols);

#### TTL with jitter, and invalidate mode

sql(q{
CREATE TABLE ht (id int PRIMARY KEY, v text, n int);
INSERT INTO ht SELECT i, 'v' || i, i FROM generate_series(1, 200) i;
SELECT wtcache.watch('ht', format => 'hash', ttl => '1 hour', warm => true);
CREATE TABLE hi (id int PRIMARY KEY, v text, n int);
INSERT INTO hi SELECT i, 'v' || i, i FROM generate_series(1, 100) i;
SELECT wtcache.watch('hi', format => 'hash', mode => 'invalidate');
});
ok(wait_drained($node, $db), 'TTL table warmed');
compare_hash_table_ok($node, $db, 'ht', $rp, 'TTL: the rows');
my @ttl_keys = map { redis_key_of($node, $db, 'ht', $_) } 1 .. 200;
my @pttl = @{ redis_pipeline($rp, [ map { [ 'PTTL', $_ ] } @ttl_keys ]) };
is(scalar(grep { $_ >= 0.89 * 3600_000 && $_ <= 1.1 * 3600_000 } @pttl), 200, 'every hash expires within an hour ± 10%');
my %distinct = map { int($_ / 1000) => 1 } @pttl;
cmp_ok(scalar(keys %distinct), '>', 50, 'spread by the jitter (' . scalar(keys %distinct) . ' distinct seconds)');
cmp_ok(redis_cmd($rp, 'TTL', "$ttl_keys[0]:t"), '>', 3600, 'its tombstone outlives it');
redis_cmd($rp, 'DEL', $ttl_keys[9]);
is(sql(q{SELECT wtcache.get('ht', '10')->>'v'}), 'v10', 'a miss reads the table');
is(redis_cmd($rp, 'TYPE', $ttl_keys[9]), 'hash', 'and fills a hash');
my $fill_ttl = redis_cmd($rp, 'PTTL', $ttl_keys[9]);
ok($fill_ttl > 0.89 * 3600_000 && $fill_ttl <= 1.1 * 3600_000, "the fill has the TTL too ($fill_ttl ms)");

is(scalar(@{ redis_row_keys($rp, table_key_pattern($node, $db, 'hi')) }), 0, 'invalidate mode: no key until read');
my $fills0 = stat_of('hi', 'read_fills');
is(sql(q{SELECT count(*) FROM hi WHERE wtcache.get('hi', id::text) = to_jsonb(hi)}), '100', 'get() of every row');
is(stat_of('hi', 'read_fills') - $fills0, 100, 'each a fill');
compare_hash_table_ok($node, $db, 'hi', $rp, 'invalidate mode: the fills wrote hashes');
is(sql(q{SELECT count(*) FROM hi WHERE wtcache.get('hi', id::text) = to_jsonb(hi)}), '100', 'then hits');
sql(q{UPDATE hi SET v = 'changed' WHERE id <= 10});
ok(wait_drained($node, $db), 'an update in invalidate mode delivered');
is(redis_cmd($rp, 'EXISTS', redis_key_of($node, $db, 'hi', 3)), 0, 'it deleted the key');
ok(defined redis_cmd($rp, 'GET', redis_key_of($node, $db, 'hi', 3) . ':t'), 'and left a tombstone');
is(sql(q{SELECT wtcache.get('hi', '3')->>'v'}), 'changed', 'the next read fills the new row');
is(redis_cmd($rp, 'HGET', redis_key_of($node, $db, 'hi', 3), 'v'), 'changed', '(as a hash)');

#### a fill that raced with a writer is refused

my $filler = $node->background_psql($db);
for my $case (['update', 'UPDATE hh SET t = \'newer\' WHERE id = 50', 'newer'],
	['delete', 'DELETE FROM hh WHERE id = 51', undef])
{
	my ($what, $stmt, $want) = @$case;
	my $id = $what eq 'update' ? 50 : 51;
	my $k = redis_key_of($node, $db, 'hh', $id);
	redis_cmd($rp, 'DEL', $k);
	my $rejected0 = stat_of('hh', 'fills_rejected');
	$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
	$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('hh', '$id')->>'t';\n");
	my $leased = 0;
	for (1 .. 300) { if (redis_cmd($rp, 'EXISTS', "$k:l")) { $leased = 1; last; } usleep(10_000); }
	ok($leased, "$what: the reader took the fill lease");
	sql($stmt);
	ok(wait_drained($node, $db), "$what: delivered while the fill was held");
	$filler->query_until(qr/finished\n/, "\\echo finished\n");
	is(redis_cmd($rp, 'HGET', $k, 't'), $want, "$what: Redis keeps the newer state, the stale fill was refused");
	is(stat_of('hh', 'fills_rejected') - $rejected0, 1, "$what: fills_rejected counted it");
	$filler->query_safe(q{RESET wtcache.debug_fill_delay});
}
$filler->quit;

#### a row larger than max_value_size (every field counted) is removed

sql(q{ALTER SYSTEM SET wtcache.max_value_size = '1MB'; SELECT pg_reload_conf();});
$node->poll_query_until($db, q{SELECT current_setting('wtcache.max_value_size') = '1MB'});
sql(q{UPDATE ht SET v = repeat('a', 600000), n = 0 WHERE id = 7;
      UPDATE ht SET v = repeat('b', 500000) WHERE id = 8;});
ok(wait_drained($node, $db), 'large rows delivered');
is(length(redis_cmd($rp, 'HGET', $ttl_keys[6], 'v')), 600000, 'a row below the bound is written');
sql(q{ALTER TABLE ht ADD COLUMN w text; UPDATE ht SET w = repeat('c', 600000) WHERE id = 7;});
ok(wait_drained($node, $db), 'a row above the bound only with both fields counted');
is(redis_cmd($rp, 'EXISTS', $ttl_keys[6]), 0, 'its key is removed: the fields together are too large');
is(sql(q{SELECT length(wtcache.get('ht', '7')->>'w')}), '600000', 'and reads of it go to the table');
is(redis_cmd($rp, 'EXISTS', $ttl_keys[6]), 0, '(which fill nothing that large)');
sql(q{ALTER SYSTEM RESET wtcache.max_value_size; SELECT pg_reload_conf();});

#### a format change under writers: json -> hash -> json

sql(q{
CREATE TABLE hp (id int PRIMARY KEY, email text, ssn text, score int);
INSERT INTO hp SELECT i, 'p' || i || '@example.com', 'SECRET-' || i, 0 FROM generate_series(1, 2000) i;
SELECT wtcache.watch('hp', warm => true);
});
ok(wait_drained($node, $db), 'hp delivered as JSON');
compare_table_ok($node, $db, 'hp', $rp, 'hp: JSON strings');
for my $step (['hash', q{format => 'hash', exclude_columns => ARRAY['ssn']}, 'ssn', [qw(id email score)]],
	['json', q{format => 'json', columns => ARRAY['ssn']}, 'email', [qw(id ssn)]])
{
	my ($format, $args, $gone, $proj) = @$step;
	my $writer = $node->background_psql($db);
	my $writes = join('', map {
		my $id = 1 + ($_ * 37) % 2000;
		"UPDATE hp SET score = score + 1, ssn = 'SECRET-w$_' WHERE id = $id;\n"
		  . ($_ % 7 == 0 ? "DELETE FROM hp WHERE id = $id;\n" : '')
		  . ($_ % 11 == 0 ? "INSERT INTO hp VALUES (5000 + $_, 'n$_\@example.com', 'SECRET-n$_', 1) ON CONFLICT DO NOTHING;\n" : '')
	} 1 .. 1500);
	$writer->query_until(qr/writing\n/, "\\echo writing\n$writes\\echo written\n");
	sql(qq{SELECT wtcache.watch('hp', $args)});
	# reads between the change and its delivery go to the table: never the
	# old shape, and never a value that is not the row's
	is(sql(qq{SELECT count(*) FROM generate_series(1, 400) i WHERE wtcache.get('hp', i::text) ? '$gone'}), '0',
		"to $format: no read after the change returns the old shape");
	# (two reads of a key the writer changes may differ: a commit can land
	# between them; keys it leaves alone must read the same, twice)
	my %touched = map { (1 + ($_ * 37) % 2000 => 1) } 1 .. 1500;
	my $still = join(',', grep { !$touched{$_} } 1 .. 2000);
	is(sql(qq{SELECT count(*) FROM unnest('{$still}'::int[]) i
	          WHERE wtcache.get('hp', i::text) IS DISTINCT FROM wtcache.get('hp', i::text)}), '0',
		"to $format: reads meanwhile agree with each other");
	$writer->query_until(qr/written\n/, '');
	$writer->quit;
	ok(wait_drained($node, $db), "to $format: writes and the rewrite delivered");
	if ($format eq 'hash')
	{
		compare_hash_table_ok($node, $db, 'hp', $rp, 'to hash: every key a hash of the new projection (none of the old type)',
			columns => $proj);
	}
	else
	{
		compare_table_ok($node, $db, 'hp', $rp, 'to json: every key a JSON string again (none of the old type)',
			columns => $proj);
	}
	my $types = redis_pipeline($rp, [ map { [ 'TYPE', $_ ] } @{ redis_row_keys($rp, table_key_pattern($node, $db, 'hp')) } ]);
	my %types;
	$types{$_}++ for @$types;
	is(join(',', sort keys %types), $format eq 'hash' ? 'hash' : 'string', "to $format: one type of key left");
	is(sql(qq{SET TimeZone = 'UTC'; SELECT count(*) FROM hp WHERE wtcache.get('hp', id::text) IS DISTINCT FROM
	          (SELECT to_jsonb(p) FROM (SELECT @{[ join(', ', map { "hp.$_" } @$proj) ]}) p)}), '0',
		"to $format: get() of every row returns the new shape");
}

#### unwatch's purge removes hashes like strings (SCAN + UNLINK)

my $ht_pattern = table_key_pattern($node, $db, 'ht');
cmp_ok(scalar(@{ redis_row_keys($rp, $ht_pattern) }), '>', 100, 'ht has its hashes');
sql(q{SELECT wtcache.unwatch('ht')});
ok(wait_drained($node, $db), 'unwatch delivered');
is(scalar(@{ redis_row_keys($rp, $ht_pattern) }), 0, 'unwatch removed every hash of the table');

#### events name hash rows, as any

redis_cmd($rp, 'PUBLISH', 'wtc:events', 'END-OF-TEST');
my ($upserts, $deletes) = (0, 0);
my $hh_key = quotemeta(redis_key_of($node, $db, 'hh', 1) =~ s/:1\}$//r);
while (1)
{
	my $m = $sub->read_reply;
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	last if $m->[2] eq 'END-OF-TEST';
	next unless $m->[2] =~ /"table":"public\.hh"/;
	$upserts++ if $m->[2] =~ /"op":"upsert"/;
	$deletes++ if $m->[2] =~ /"op":"delete"/;
	fail("an event of hh names a row key: $m->[2]") unless $m->[2] =~ /"redis_key":"$hh_key:/ || $m->[2] =~ /"op":"truncate"/;
}
$sub->close;
cmp_ok($upserts, '>', 400, "upserts of hash rows were published ($upserts)");
cmp_ok($deletes, '>', 0, "deletes too ($deletes)");

$node->stop;

#### the same through a Redis Cluster

my @masters = start_redis_cluster(masters => 3);
my @ports = map { $_->port } @masters;
my $cnode = new_wtcache_node(
	'hash_cluster',
	redis_port => $ports[0],
	extra_conf => "wtcache.redis_cluster_nodes = '127.0.0.1:$ports[0], 127.0.0.1:$ports[1]'\n");
sub csql { return $cnode->safe_psql($db, $_[0]); }
csql(q{
CREATE TABLE ch (id int PRIMARY KEY, v text, n numeric, at timestamptz, secret text);
INSERT INTO ch SELECT i, 'v' || i, i / 3.0, '2024-01-01 00:00+00'::timestamptz + i * interval '1 min', 'SECRET'
  FROM generate_series(1, 3000) i;
SELECT wtcache.watch('ch', format => 'hash', exclude_columns => ARRAY['secret'], warm => true);
CREATE TABLE cht (id int PRIMARY KEY, v text);
INSERT INTO cht SELECT i, 'v' || i FROM generate_series(1, 500) i;
SELECT wtcache.watch('cht', format => 'hash', ttl => '1 day', warm => true);
});
ok(wait_drained($cnode, $db), 'cluster: warm delivered');
csql(q{UPDATE ch SET v = v || '!', n = NULL WHERE id % 3 = 0;
       DELETE FROM ch WHERE id % 10 = 1;
       UPDATE cht SET v = 'x' WHERE id % 2 = 0;});
ok(wait_drained($cnode, $db), 'cluster: updates and deletes delivered');
compare_hash_table_ok($cnode, $db, 'ch', $ports[0], 'cluster: Redis equals the table, key for key, on every master',
	columns => [qw(id v n at)], ports => \@ports);
compare_hash_table_ok($cnode, $db, 'cht', $ports[0], 'cluster: a TTL table too', ports => \@ports);
cmp_ok(redis_cmd($_, 'DBSIZE'), '>', 500, "cluster: master $_ holds its share") for @ports;
is(csql(q{SET TimeZone = 'UTC'; SELECT count(*) FROM ch WHERE wtcache.get('ch', id::text) = to_jsonb(ch) - 'secret'}),
	csql(q{SELECT count(*) FROM ch}), 'cluster: get() of every row decodes its hash');
cmp_ok(csql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 'ch'::regclass}), '>=', 2000,
	'cluster: (hits)');
is(csql(q{SELECT count(*) FROM wtcache.verify('ch')}), '0', 'cluster: verify() finds no difference');
$cnode->stop;

done_testing();
