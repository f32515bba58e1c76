# The least-privilege Redis ACL user of the README's Security section is
# enough for everything wtcache does: delivery, tags, events, cached reads
# and queries, verify, resync, purges and a repair after FLUSHALL; Redis
# denies nothing (ACL LOG stays empty).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

# keep in step with README.md, "Security"
my @acl = qw(~wtc:* &wtc:events -@all
  +get +set +del +unlink +exists +getrange +mget +mset +incr +hmget +hset +pexpire +scan
  +evalsha +script|load +publish +pubsub|numsub +pubsub|numpat +time +role
  +select +ping +setrange +info +memory|usage);
my $password = 'acl-Pw-91c2e7';
my $redis = start_redis(args => [ '--user', 'wtcache', 'on', ">$password", @acl ]);
my $rp = $redis->port;
my $node = new_wtcache_node('acl', redis_url => "redis://wtcache:$password\@127.0.0.1:$rp");
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE item (id int PRIMARY KEY, org_id int NOT NULL, name text);
SELECT wtcache.watch('item', tags => ARRAY['org:{org_id}']);
INSERT INTO item SELECT i, i % 3, 'item ' || i FROM generate_series(1, 200) i;
});
ok(wait_drained($node, $db), 'delivered as the ACL user');
compare_table_ok($node, $db, 'item', $rp, 'Redis matches the table');

my $sub = WtcacheTest::RedisConn->new($rp, timeout => 5);
$sub->command('SUBSCRIBE', 'wtc:events');
sql(q{UPDATE item SET name = 'changed', org_id = 2 WHERE id = 1});
ok(wait_drained($node, $db), 'a change with a subscriber listening');
my $m = $sub->read_reply;
is($m->[0], 'message', 'the event was published');
$sub->close;

is(sql(q{SELECT wtcache.get('item', '1')->>'name'}), 'changed', 'cached read');
is(sql(q{SELECT wtcache.get('item', '1')->>'name'}), 'changed', 'cached read again');
is(sql(q{SELECT q->>'n' FROM wtcache.query('SELECT count(*) AS n FROM item WHERE org_id = 2') q}), '68', 'cached query, filled');
is(sql(q{SELECT q->>'n' FROM wtcache.query('SELECT count(*) AS n FROM item WHERE org_id = 2') q}), '68', 'cached query, hit');
is(sql(q{SELECT hits FROM wtcache.query_stats()}), '1', 'the second was a hit');
sql(q{SELECT wtcache.invalidate(ARRAY['org:2'])});
ok(wait_drained($node, $db), 'invalidation delivered');
is(sql(q{SELECT count(*) FROM wtcache.verify('item')}), '0', 'verify');
sql(q{SELECT wtcache.resync('item')});
ok(wait_drained($node, $db), 'resync delivered (purge by SCAN and UNLINK)');
sql(q{TRUNCATE item; INSERT INTO item VALUES (1, 1, 'after truncate')});
ok(wait_drained($node, $db), 'truncate delivered');
redis_cmd($rp, 'FLUSHALL');
sql(q{UPDATE item SET name = 'after flush' WHERE id = 1});
ok(wait_drained($node, $db) && wait_drained($node, $db), 'repair after FLUSHALL delivered');
compare_table_ok($node, $db, 'item', $rp, 'Redis matches the table after all of it');
is(sql(q{SELECT redis_role FROM wtcache.status LIMIT 1}), 'master', 'ROLE is allowed');
is(sql(q{SELECT count(*) FROM wtcache.status WHERE worker_last_error IS NOT NULL}), '0', 'the worker saw no error');
is_deeply(redis_cmd($rp, 'ACL', 'LOG'), [], 'Redis denied nothing (ACL LOG is empty)');
sql(q{SELECT wtcache.unwatch('item')});
ok(wait_drained($node, $db), 'unwatch with purge delivered');
is(scalar(@{ redis_scan_keys($rp, 'wtc:{postgres:public.item:*}') }), 0, 'the keys are gone');
is_deeply(redis_cmd($rp, 'ACL', 'LOG'), [], 'still nothing denied');

# The ACL of earlier releases lacks MGET and MSET, which the worker uses
# to read and write the values of many rows at once: it still delivers,
# a command a row (src/push.c).
sql(q{SELECT wtcache.watch('item')});
ok(wait_drained($node, $db), 'watched again');
redis_cmd($rp, 'ACL', 'SETUSER', 'wtcache', '-mget', '-mset');
my $sub2 = WtcacheTest::RedisConn->new($rp, timeout => 5);
$sub2->command('SUBSCRIBE', 'wtc:events');
sql(q{INSERT INTO item SELECT i, i % 3, 'again ' || i FROM generate_series(2, 50) i;
	  UPDATE item SET name = 'older ACL'});
ok(wait_drained($node, $db), 'delivered by a user without MGET and MSET');
compare_table_ok($node, $db, 'item', $rp, 'Redis matches the table');
my %events;
for (1 .. 50)
{
	my $e = $sub2->read_reply;
	$events{$e->[2]}++ if ref $e eq 'ARRAY' && $e->[0] eq 'message';
}
is(scalar(keys %events), 50, 'every row changed was announced');
$sub2->close;
like(join(' ', map { ref $_ eq 'ARRAY' ? join(' ', @$_) : '' } @{ redis_cmd($rp, 'ACL', 'LOG') }),
	qr/\bmget\b/, 'Redis refused the MGET, nothing else stopped delivery');
is(sql(q{SELECT count(*) FROM wtcache.status WHERE worker_last_error IS NOT NULL}), '0', 'the worker saw no error');

$node->stop;
done_testing();
