# Self-test of the harness (test/lib/WtcacheTest.pm): the RESP client is
# binary-safe, the Redis helper restarts with or without its data, and
# compare_table() does fail when Redis differs from the table, so a
# passing comparison in the other tests means something.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

#### RESP client and Redis process control (no PostgreSQL involved)

my $redis = start_redis();
my $rp = $redis->port;
is(redis_cmd($rp, 'PING'), 'PONG', 'PING answers PONG');
my $bin = "a\r\nb\0c\x{ff}\$3\r\n";
is(redis_cmd($rp, 'SET', "k\r\n{x}:%", $bin), 'OK', 'SET with binary key and value');
is(redis_cmd($rp, 'GET', "k\r\n{x}:%"), $bin, 'GET returns the value byte for byte');
is(redis_cmd($rp, 'GET', 'no such key'), undef, 'nil reply is undef');
is(redis_cmd($rp, 'INCRBY', 'counter', 41), 41, 'integer reply');
is_deeply(redis_cmd($rp, 'MGET', 'counter', 'nope'), [ '41', undef ], 'array reply with nil');
eval { redis_cmd($rp, 'NOSUCHCOMMAND') };
like($@, qr/^Redis error: ERR/, 'error reply dies with the message');
my $replies = redis_pipeline($rp,
	[ map { [ 'SET', "p:$_", "v$_" ] } 1 .. 5000 ], chunk => 700);
is(scalar(grep { $_ eq 'OK' } @$replies), 5000, 'pipeline of 5000 SETs');
$replies = redis_pipeline($rp, [ [ 'GET', 'p:7' ], ['NOSUCHCOMMAND'], [ 'GET', 'p:8' ] ]);
is($replies->[0] . '|' . $replies->[2], 'v7|v8', 'pipeline replies in order');
like("$replies->[1]", qr/^ERR/, 'pipeline error reply is returned, not thrown');
is(scalar @{ redis_scan_keys($rp, 'p:*') }, 5000, 'SCAN finds all 5000 keys');
redis_cmd($rp, 'SET', $_, 1) for 'g*[1]?', 'gx[1]?', 'g*1?', 'g*[1]x';
is_deeply(redis_scan_keys($rp, glob_escape('g*[1]?')), ['g*[1]?'],
	'glob_escape makes * [ ] ? match only themselves');

$redis->restart(keep_data => 1);
is(redis_cmd($rp, 'GET', 'p:42'), 'v42', 'restart(keep_data => 1) keeps the data');
$redis->restart;
is(redis_cmd($rp, 'DBSIZE'), 0, 'restart() starts empty');
$redis->stop;
my ($r, $e) = redis_try($rp, 'PING');
ok(!defined $r && $e =~ /could not connect/, 'stop() stopped it');
$redis->start;
my $pid = $redis->pid;
$redis->kill9;
ok(!kill(0, $pid), 'kill9() killed it');
$redis->start;

my $aof = start_redis(appendonly => 1, name => 'aof');
redis_cmd($aof->port, 'SET', 'durable', 'yes');
$aof->kill9;
$aof->start;
is(redis_cmd($aof->port, 'GET', 'durable'), 'yes', 'appendonly Redis keeps its data across kill -9');
$aof->stop;

#### compare_table() notices every kind of difference

my $node = new_wtcache_node('harness', redis_port => $rp);
my $db = 'postgres';
$node->safe_psql($db, q{
CREATE TABLE t (id int PRIMARY KEY, v text, at timestamptz DEFAULT '2020-02-02 02:02:02+05');
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 300) i;
CREATE TABLE other (id int PRIMARY KEY, v text);
SELECT wtcache.watch('other');
INSERT INTO other VALUES (1, 'x');
});
ok(wait_drained($node, $db), 'drained');
my ($ok, $diag) = compare_table($node, $db, 't', $rp);
ok($ok, 'compare_table passes when Redis matches') or diag($diag);

sub expect_failure
{
	my ($what, $pattern) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $diag) = compare_table($node, $db, 't', $rp);
	ok(!$ok, "compare_table fails: $what");
	like($diag, $pattern, "... and says so ($what)");
	return;
}

sub fix
{
	$node->safe_psql($db, q{SELECT wtcache.resync('t')});
	wait_drained($node, $db);
	my ($ok, $diag) = compare_table($node, $db, 't', $rp);
	return ok($ok, 'resync repairs it') || diag($diag);
}

my $k5 = redis_key_of($node, $db, 't', 5);
my $k6 = redis_key_of($node, $db, 't', 6);
my $orig5 = redis_cmd($rp, 'GET', $k5);

redis_cmd($rp, 'DEL', $k5);
expect_failure('a row key missing', qr/missing in Redis/);
fix();

(my $bad = redis_cmd($rp, 'GET', $k5)) =~ s/"v":"v5"/"v":"V5"/;
redis_cmd($rp, 'SET', $k5, $bad);
expect_failure('a different value', qr/different value/);
fix();

(my $nov = $orig5) =~ s/^\{"_v":\d+,/{/;
redis_cmd($rp, 'SET', $k5, $nov);
expect_failure('a value without "_v"', qr/without leading "_v"/);
fix();

# ("_v":0 is valid: a reader's fill of a row never changed since it was
# watched carries it)
(my $vneg = $orig5) =~ s/^\{"_v":\d+,/{"_v":-1,/;
redis_cmd($rp, 'SET', $k5, $vneg);
expect_failure('a value with a negative "_v"', qr/without leading "_v"/);
fix();

(my $tz = redis_cmd($rp, 'GET', $k6)) =~ s/"at":"2020-02-01T21:02:02\+00:00"/"at":"2020-02-02T02:02:02+05:00"/;
redis_cmd($rp, 'SET', $k6, $tz);
expect_failure('a timestamptz not rendered in UTC', qr/different value/);
fix();

my $extra = redis_key_of($node, $db, 't', 100000);
redis_cmd($rp, 'SET', $extra, '{"_v":1,"id":100000,"v":"ghost","at":null}');
expect_failure('an extra row key', qr/extra key in Redis/);
redis_cmd($rp, 'DEL', $extra);

# (a change that bypasses capture cannot be made any more: disabled
# capture triggers requeue the table when they are enabled again)
my $k7 = redis_key_of($node, $db, 't', 7);
(my $sneaky = redis_cmd($rp, 'GET', $k7)) =~ s/"v":"[^"]*"/"v":"sneaky"/;
redis_cmd($rp, 'SET', $k7, $sneaky);
expect_failure('a row changed behind wtcache\'s back', qr/different value/);
fix();

redis_cmd($rp, 'SET', "$k5:t", 'tombstone-ish');
($ok, $diag) = compare_table($node, $db, 't', $rp);
ok($ok, 'keys ending in ":t" are not counted as rows') or diag($diag);
redis_cmd($rp, 'DEL', "$k5:t");

# The table's pattern does not reach rows of another table.
is(scalar @{ redis_row_keys($rp, table_key_pattern($node, $db, 't')) }, 300,
	'table_key_pattern matches only this table\'s rows');

$node->stop;
done_testing();
