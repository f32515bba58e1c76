# The events channel: one JSON message per change applied to Redis, none
# for a rolled-back one; the near-cache protocol (a per-database sequence
# number without gaps, the row's Redis key, unambiguous table names, version
# order within a batch, a table reset for DROP TABLE, messages published
# again rather than lost when publishing fails after Redis applied the
# rows); TTLs spread by wtcache.ttl_jitter; invalidate mode (changes delete
# the key, readers fill it).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('events', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE item (org text, n int, label text, PRIMARY KEY (org, n));
SELECT wtcache.watch('item');
});
ok(wait_drained($node, $db), 'ready');

my $sub = WtcacheTest::RedisConn->new($rp, timeout => 5);
my $ack = $sub->command('SUBSCRIBE', 'wtc:events');
is($ack->[0], 'subscribe', 'subscribed to wtc:events');

# Each step is delivered before the next, so each change is its own push.
my @steps = (
	q{INSERT INTO item VALUES ('acme', 1, 'one')},
	q{INSERT INTO item VALUES ('a"b\\c:{x}', 2, 'odd key')},
	q{UPDATE item SET label = 'uno' WHERE org = 'acme' AND n = 1},
	q{BEGIN; INSERT INTO item VALUES ('acme', 3, 'rolled back'); ROLLBACK},
	q{DELETE FROM item WHERE org = 'acme' AND n = 1},
	q{TRUNCATE item},
);
for my $s (@steps)
{
	sql($s);
	ok(wait_drained($node, $db), "delivered: $s");
}

# Row events, and the tag invalidations each batch publishes after them.
my (@events, @invalidations, @all);
while (1)
{
	my $m = eval { $sub->read_reply };
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	my $e = decode_json($m->[2]);
	push @all, $e;
	if ($e->{op} eq 'invalidate' && !exists $e->{key}) { push @invalidations, $e; }
	else { push @events, $e; }
	last if @events >= 5 && $events[-1]{op} eq 'truncate' && @invalidations >= 5;
}
$sub->close;

is(scalar(@events), 5, 'five messages for five committed changes, none for the rolled-back insert')
  or diag(explain \@events);
is_deeply([ map { $_->{op} } @events ], [qw(upsert upsert upsert delete truncate)],
	'ops in commit order');
is_deeply($events[0]{key}, [ 'acme', '1' ], 'the key, one value per key column');
is($events[0]{db}, 'postgres', 'the database');
is($events[0]{table}, 'public.item', 'the schema-qualified table');
is_deeply($events[1]{key}, [ 'a"b\\c:{x}', '2' ], 'key values with quotes, backslashes and braces survive JSON');
cmp_ok($events[2]{v}, '>', $events[0]{v}, 'versions increase per key');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'item', 'acme', '1') . ':t') // '', qr/^$events[3]{v}$/,
	'the delete event carries the tombstone version');
ok(!exists $events[4]{key}, 'a truncate names the table, not a key');
is_deeply($events[0]{tags}, ['table:public.item'], 'a row event lists its tags: the table tag');
is(scalar(@invalidations), 5, 'one tag invalidation per delivered change, none for the rollback')
  or diag(explain \@invalidations);
is_deeply($invalidations[0]{tags}, ['table:public.item'], 'the invalidation names the table tag');
is($invalidations[0]{db}, 'postgres', 'and the database');

#### the near-cache protocol

my $seq_key = 'wtc:{postgres}:event_seq';
is_deeply([ map { $_->{seq} - $all[0]{seq} } @all ], [ 0 .. $#all ],
	'every message carries the next number of the database\'s sequence');
is(redis_cmd($rp, 'GET', $seq_key), $all[-1]{seq}, 'and the last one handed out is in <prefix>{<db>}:event_seq');
is($events[0]{redis_key}, redis_key_of($node, $db, 'item', 'acme', '1'), 'a row event names its Redis key');
is($events[1]{redis_key}, redis_key_of($node, $db, 'item', 'a"b\\c:{x}', '2'), '... escaped as in Redis');
is_deeply([ @{ $events[0] }{qw(schema relname)} ], [ 'public', 'item' ], 'schema and table name apart');
is_deeply([ @{ $events[4] }{qw(schema relname)} ], [ 'public', 'item' ], 'a truncate names them too');

# A message per change also while nobody listens: a subscriber that reads
# the sequence after subscribing knows the next number.
my $before = redis_cmd($rp, 'GET', $seq_key);
sql(q{INSERT INTO item VALUES ('acme', 4, 'nobody listens')});
ok(wait_drained($node, $db), 'delivered without a subscriber');
is(redis_cmd($rp, 'GET', $seq_key), $before + 2, 'the row and its tag invalidation took two numbers');

# Names that hold dots, and what a subscriber sees of one batch.
sql(q{
CREATE SCHEMA "we.ird";
CREATE TABLE "we.ird"."ta.ble" (id int PRIMARY KEY, v text);
SELECT wtcache.watch('"we.ird"."ta.ble"');
});
ok(wait_drained($node, $db), 'a table with dots in its names');
$sub = WtcacheTest::RedisConn->new($rp, timeout => 5);
$sub->command('SUBSCRIBE', 'wtc:events');
# Three transactions while delivery is paused, so they are one batch: the
# later commit updates the key that sorts first.
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
$node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1})
  or die 'delivery did not pause';
sql(q{INSERT INTO "we.ird"."ta.ble" VALUES (9, 'first')});
sql(q{INSERT INTO "we.ird"."ta.ble" VALUES (5, 'second')});
sql(q{INSERT INTO "we.ird"."ta.ble" VALUES (1, 'third')});
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'the three delivered');
sql(q{DROP TABLE "we.ird"."ta.ble"});
ok(wait_drained($node, $db), 'the watched table dropped');
my @batch;
while (1)
{
	my $m = eval { $sub->read_reply };
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	my $e = decode_json($m->[2]);
	push @batch, $e if ($e->{relname} // '') eq 'ta.ble';
	last if $e->{op} eq 'truncate';
}
is_deeply([ map { $_->{key}[0] // 'truncate' } @batch ], [ 9, 5, 1, 'truncate' ],
	'rows in version order, then the DROP TABLE as a table reset');
is_deeply([ @{ $batch[0] }{qw(schema relname table)} ], [ 'we.ird', 'ta.ble', 'we.ird.ta.ble' ],
	'schema and relname say what "table" cannot');
is_deeply([ @{ $batch[-1] }{qw(schema relname)} ], [ 'we.ird', 'ta.ble' ],
	'the reset of a dropped table names it');

# Publishing fails after Redis applied the rows (PUBLISH refused while
# someone listens): the batch is not acknowledged, and once publishing works
# again its message comes, with the version Redis holds.  Before 1.3 the
# event was published inside the script that wrote the row, which Redis
# had applied up to the failure: sent again, the row was no longer new,
# and its event was never published.
redis_cmd($rp, 'ACL', 'SETUSER', 'default', '-publish');
sql(q{INSERT INTO item VALUES ('acme', 5, 'published late')});
my $rk5 = redis_key_of($node, $db, 'item', 'acme', '5');
$node->poll_query_until($db, q{SELECT worker_last_error LIKE '%publish%' FROM wtcache.status LIMIT 1})
  or diag('the worker did not report the refused PUBLISH');
ok(defined redis_cmd($rp, 'GET', $rk5), 'the row is in Redis');
ok(!scalar(grep { ($_->{key}[1] // '') eq '5' } @batch), 'no message yet');
redis_cmd($rp, 'ACL', 'SETUSER', 'default', '+publish');
ok(wait_drained($node, $db), 'delivered once publishing works');
my $late;
while (!$late)
{
	my $m = eval { $sub->read_reply };
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	my $e = decode_json($m->[2]);
	$late = $e if ($e->{redis_key} // '') eq $rk5;
}
ok($late, 'the message of the row applied before the failure came');
is($late->{v}, (redis_row_version(redis_cmd($rp, 'GET', $rk5)))[0], '... with the version Redis holds');
$sub->close;

#### TTL spread

sql(q{
CREATE TABLE session (id int PRIMARY KEY, v text);
SELECT wtcache.watch('session', ttl => '1 hour');
INSERT INTO session SELECT i, 'v' || i FROM generate_series(1, 1000) i;
});
ok(wait_drained($node, $db), 'sessions delivered');
my @session_keys = split /\n/,
  sql(q{SELECT wtcache.redis_key('session', i::text) FROM generate_series(1, 1000) i ORDER BY i});
is(scalar(@session_keys), 1000, '1,000 session keys');
my $pipe = redis_pipeline($rp, [ map { [ 'PTTL', $_ ] } @session_keys ]);
my @ttl = sort { $a <=> $b } @$pipe;
my $hour = 3_600_000;
note("PTTL of 1,000 keys written together: min $ttl[0] ms, max $ttl[-1] ms");
cmp_ok($ttl[0], '>', 0, 'every key has an expiry');
cmp_ok($ttl[0], '<=', 0.95 * $hour, 'some expire at least 5% before the TTL');
cmp_ok($ttl[-1], '>=', 1.05 * $hour, 'some expire at least 5% after it');
cmp_ok($ttl[-1], '<=', 1.10 * $hour + 1000, 'none later than the jitter allows');

#### invalidate mode

sql(q{
CREATE TABLE profile (id int PRIMARY KEY, name text);
SELECT wtcache.watch('profile', mode => 'invalidate');
INSERT INTO profile VALUES (1, 'first');
});
ok(wait_drained($node, $db), 'profile delivered');
my $pk = redis_key_of($node, $db, 'profile', 1);
is(redis_cmd($rp, 'GET', $pk), undef, 'invalidate mode: a change writes no value');
is(sql(q{SELECT wtcache.get('profile', '1')->>'name'}), 'first', 'a read returns the row');
like(redis_cmd($rp, 'GET', $pk), qr/"name":"first"/, '... and fills Redis');
sql(q{UPDATE profile SET name = 'second' WHERE id = 1});
ok(wait_drained($node, $db), 'update delivered');
is(redis_cmd($rp, 'GET', $pk), undef, 'the change deleted the filled value');
is(sql(q{SELECT wtcache.get('profile', '1')->>'name'}), 'second', 'the next read fills the new row');
my ($ver) = redis_row_version(redis_cmd($rp, 'GET', $pk));
is($ver, redis_cmd($rp, 'GET', "$pk:t"), 'the fill carries the version of the change that invalidated it');

$node->stop;
done_testing();
