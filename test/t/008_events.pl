# The events channel: one JSON message per change applied to Redis, none
# for a rolled-back one; TTLs spread by wtcache.ttl_jitter; invalidate mode
# (changes delete the key, readers fill it).
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
my (@events, @invalidations);
while (1)
{
	my $m = eval { $sub->read_reply };
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	my $e = decode_json($m->[2]);
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
