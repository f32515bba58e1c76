# pg_dump / pg_restore of a database with watched tables: the watches (key,
# tags, ttl, mode) and the capture triggers come back in a fresh cluster,
# whose worker fills its own Redis and delivers new changes.  A watched
# partitioned table comes back whole: pg_dump writes the triggers of the
# parent only, and PostgreSQL clones them to the restored partitions.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis_a = start_redis(name => 'redis_a');
my $redis_b = start_redis(name => 'redis_b');
my $node_a = new_wtcache_node('source', redis_port => $redis_a->port);
my $node_b = new_wtcache_node('target', redis_port => $redis_b->port);
my $rb = $redis_b->port;

$node_a->safe_psql('postgres', q{CREATE DATABASE shop});
$node_a->safe_psql('shop', q{
CREATE EXTENSION wtcache;
CREATE TABLE item (id int PRIMARY KEY, org_id int NOT NULL, name text);
CREATE TABLE session (token text PRIMARY KEY, data text);
INSERT INTO item SELECT i, i % 5, 'item ' || i FROM generate_series(1, 300) i;
SELECT wtcache.watch('item', tags => ARRAY['org:{org_id}']);
SELECT wtcache.watch('session', ttl => '1 hour', mode => 'invalidate');
CREATE TABLE visit (id int, day int, page text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE visit_1 PARTITION OF visit FOR VALUES FROM (1) TO (2);
CREATE TABLE visit_2 PARTITION OF visit FOR VALUES FROM (2) TO (3) PARTITION BY HASH (id);
CREATE TABLE visit_2a PARTITION OF visit_2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE visit_2b PARTITION OF visit_2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO visit SELECT i, 1 + i % 2, 'page ' || i FROM generate_series(1, 100) i;
SELECT wtcache.watch('visit', warm => true);
-- a projection over a table with a dropped column: attribute numbers
-- shift in the restored table, names do not
CREATE TABLE member (id int PRIMARY KEY, old text, email text, pw_hash text);
ALTER TABLE member DROP COLUMN old;
INSERT INTO member SELECT i, 'm' || i || '@example.com', 'SECRET-' || i FROM generate_series(1, 10) i;
SELECT wtcache.watch('member', exclude_columns => ARRAY['pw_hash'], warm => true);
-- a key column whose attribute number shifts in the restored table onto a
-- column of another type
CREATE TABLE shifted (x int, k text PRIMARY KEY, n int NOT NULL);
ALTER TABLE shifted DROP COLUMN x;
INSERT INTO shifted VALUES ('a', 1), ('b', 2);
SELECT wtcache.watch('shifted', tags => ARRAY['n:{n}'], warm => true);
-- key and template columns renamed after the watch
CREATE TABLE renamed (id int PRIMARY KEY, org int NOT NULL);
INSERT INTO renamed VALUES (1, 10);
SELECT wtcache.watch('renamed', tags => ARRAY['org:{org}'], warm => true);
ALTER TABLE renamed RENAME COLUMN id TO rid;
ALTER TABLE renamed RENAME COLUMN org TO org_id;
});
is($node_a->safe_psql('shop', q{SELECT key_columns, tags FROM wtcache.watched WHERE rel = 'renamed'::regclass}),
	'{rid}|{"org:{org_id}"}', 'a rename of a key or template column renames it in the watch');
ok(wait_drained($node_a, 'shop'), 'source delivered');
my $config = q{SELECT rel::text, key_columns, tags, ttl, mode FROM wtcache.watched ORDER BY 1};
my $source_config = $node_a->safe_psql('shop', $config);

my $dump = $node_a->basedir . '/shop.dump';
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node_a->connstr('shop') ], 'pg_dump');
$node_b->safe_psql('postgres', q{CREATE DATABASE shop});
command_ok([ 'pg_restore', '--exit-on-error', '-d', $node_b->connstr('shop'), $dump ], 'pg_restore into a fresh cluster');

is($node_b->safe_psql('shop', $config), $source_config, 'the watches came back: key, tags, ttl, mode');
is($node_b->safe_psql('shop', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'wtcache%' AND tgrelid = 'item'::regclass}),
	'4', 'and the capture triggers');
is($node_b->safe_psql('shop', q{SELECT count(*) FROM wtcache.queue WHERE keys IS NOT NULL AND NOT per_table}), '0',
	'the queue is not dumped: what is queued is the restored rows, queued again when their triggers came back');

ok(defined wait_for_worker($node_b, 'shop'), 'the restored database gets a worker');
ok(wait_drained($node_b, 'shop'), 'it delivered what it had to');
$node_b->safe_psql('shop', q{UPDATE item SET name = 'after the restore', org_id = 9 WHERE id = 7});
ok(wait_drained($node_b, 'shop'), 'a change after the restore is delivered');
like(redis_cmd($rb, 'GET', redis_key_of($node_b, 'shop', 'item', 7)), qr/after the restore/, 'it reached the new Redis');
ok(defined redis_cmd($rb, 'GET', 'wtc:{shop}:tag:org%3A9'), 'and its tag templates work');

is($node_b->safe_psql('shop', q{SELECT string_agg(tgrelid::regclass::text || ':' || tgenabled::text, ' ' ORDER BY tgrelid::regclass::text)
  FROM pg_trigger WHERE tgname = 'wtcache_capture_upd'}),
	'item:A member:A renamed:A session:A shifted:A visit:A visit_1:A visit_2:A visit_2a:A visit_2b:A',
	'every restored partition of the watched tree captures, ALWAYS');
$node_b->safe_psql('shop', q{UPDATE visit SET day = 2, page = 'moved' WHERE id = 2});
ok(wait_drained($node_b, 'shop'), 'a row moved between restored partitions is delivered');
like(redis_cmd($rb, 'GET', redis_key_of($node_b, 'shop', 'visit', 2, 2)), qr/moved/, 'under the parent\'s key');
ok(compare_table_ok($node_b, 'shop', 'visit', $rb, 'the restored partitioned table equals Redis'),
	'every row of every partition is there');
is($node_b->safe_psql('shop', q{SELECT exclude_columns FROM wtcache.watched WHERE rel = 'member'::regclass}),
	'{pw_hash}', 'the projection came back by name');
is($node_b->safe_psql('shop', q{SELECT wtcache.get('member', '3')}), '{"id": 3, "email": "m3@example.com"}',
	'and keeps the same column out of the restored table');
unlike(join(',', map { redis_cmd($rb, 'GET', $_) // '' } @{ redis_row_keys($rb, 'wtc:{shop:public.member:*}') }),
	qr/SECRET/, 'also out of the new Redis');
is($node_b->safe_psql('shop', q{SELECT key_attnums FROM wtcache.watched WHERE rel = 'shifted'::regclass}),
	'{1}', 'a key column\'s attribute number follows the restored table');
$node_b->safe_psql('shop', q{UPDATE shifted SET n = 20 WHERE k = 'b'; INSERT INTO shifted VALUES ('c', 3)});
$node_b->safe_psql('shop', q{UPDATE renamed SET org_id = 11 WHERE rid = 1});
ok(wait_drained($node_b, 'shop'), 'changes to the shifted and renamed tables delivered');
like(redis_cmd($rb, 'GET', redis_key_of($node_b, 'shop', 'shifted', 'c')) // '', qr/"n":3/,
	'a new row of the shifted table is under its key');
is($node_b->safe_psql('shop', q{SELECT wtcache.get('shifted', 'b')->>'n'}), '20', 'and get() reads it');
ok(compare_table_ok($node_b, 'shop', 'shifted', $rb, 'the shifted table equals Redis'), 'every row of it');
ok(defined redis_cmd($rb, 'GET', 'wtc:{shop}:tag:org%3A11'), 'the renamed template column renders its tag');
# the new Redis has none of it yet: the worker found no generation marker and resynced
is($node_b->safe_psql('shop', q{SELECT count(*) FROM wtcache.verify('item')}), '0', 'Redis equals the restored table');

$node_a->stop;
$node_b->stop;
done_testing();
