# A table whose rows the worker cannot read must not stop delivery: its
# queue rows are set aside with the reason, every other table keeps
# flowing, reads of its changed keys go to the table, and its owner (or a
# superuser) retries or discards them.  The worker reads a watched table as
# the table's owner, so an owner who revoked its own SELECT makes it fail.
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
my $node = new_wtcache_node('setaside', redis_port => $rp);
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }
sub as_role { my ($role, $q) = @_; return $node->safe_psql($db, "SET ROLE $role; $q"); }

sql(q{
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
GRANT CREATE ON SCHEMA public TO alice;
});
as_role('alice', q{
CREATE TABLE mine (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO mine SELECT i, 'v' || i FROM generate_series(1, 50) i;
SELECT wtcache.watch('mine', warm => true);
});
sql(q{
CREATE TABLE other (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO other SELECT i, 'v' || i FROM generate_series(1, 50) i;
SELECT wtcache.watch('other', warm => true);
});
ok(wait_drained($node, $db), 'both tables delivered');
compare_table_ok($node, $db, 'mine', $rp, 'Redis has the rows of the table alice owns');

#### alice's table becomes unreadable to its owner

my $offset = -s $node->logfile;
as_role('alice', q{REVOKE SELECT ON mine FROM alice});
sql(q{UPDATE mine SET v = 'changed' WHERE id <= 10});
sql(q{UPDATE other SET v = 'flows' WHERE id <= 10});
my ($ret, $out, $err) = $node->psql($db, q{SELECT wtcache.wait('60s')});
is($out, 'f', 'wait() is false: Redis does not hold a change committed before it');
like($err, qr/WARNING:  wtcache: changes of table "mine" committed before this call are set aside/,
	'and it says why, at once');
ok($node->poll_query_until($db, q{SELECT count(*) = 0 FROM wtcache.queue WHERE set_aside IS NULL}),
	'everything else is delivered');
compare_table_ok($node, $db, 'other', $rp, 'the other table is delivered');
$node->wait_for_log(qr/changes of public\.mine set aside: reading the rows of public\.mine failed: permission denied/,
	$offset);
pass('the worker logged why it set the changes aside');
is(sql(q{SELECT count(*) > 0 FROM wtcache.queue WHERE relid = 'mine'::regclass AND set_aside LIKE '%permission denied%'}),
	't', 'the queue rows carry the reason');
is(sql(q{SELECT wtcache.get('mine', '3')->>'v'}), 'changed',
	'a read of a set-aside key returns the committed row (from the table)');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'mine', 3)), qr/"v":"v3"/,
	'while Redis still has the old value, which nobody is served');

sql(q{UPDATE other SET v = 'flows again' WHERE id = 20});
ok($node->poll_query_until($db, q{SELECT count(*) = 0 FROM wtcache.queue WHERE set_aside IS NULL}),
	'later changes of other tables are delivered too');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'other', 20)), qr/flows again/, 'one of them');

#### who may act on them

($ret, $out, $err) = $node->psql($db, q{SET ROLE bob; SELECT wtcache.retry_set_aside('mine')});
like($err, qr/must be owner of table mine/, 'another role cannot retry them');
is(as_role('bob', q{SELECT wtcache.retry_set_aside()}), '0', 'nor sees them with NULL');

#### retry once fixed

as_role('alice', q{GRANT SELECT ON mine TO alice});
cmp_ok(as_role('alice', q{SELECT wtcache.retry_set_aside('mine')}), '>', 0, 'the owner retries them');
ok(wait_drained($node, $db), 'and they are delivered');
compare_table_ok($node, $db, 'mine', $rp, 'Redis has the changed rows');
is(sql(q{SELECT count(*) FROM wtcache.queue}), '0', 'nothing is left in the queue');

#### discard

as_role('alice', q{REVOKE SELECT ON mine FROM alice});
$offset = -s $node->logfile;
sql(q{UPDATE mine SET v = 'lost' WHERE id = 1});
$node->wait_for_log(qr/changes of public\.mine set aside/, $offset);
is(sql(q{SELECT count(*) > 0 FROM wtcache.queue WHERE set_aside IS NOT NULL}), 't', 'rows are set aside');
cmp_ok(as_role('alice', q{SELECT wtcache.discard_set_aside('mine')}), '>', 0, 'the owner discards them');
ok(wait_drained($node, $db), 'the discard is carried out');
is(sql(q{SELECT count(*) FROM wtcache.queue}), '0', 'nothing is left in the queue');
is(scalar @{ redis_row_keys($rp, table_key_pattern($node, $db, 'mine')) }, 0,
	'the table\'s keys are removed from Redis: no older value can be served');
is(sql(q{SELECT wtcache.get('mine', '1')->>'v'}), 'lost', 'reads return the committed row');

#### FORCE ROW LEVEL SECURITY is refused: the owner could not see every row

as_role('alice', q{GRANT SELECT ON mine TO alice});
($ret, $out, $err) = $node->psql($db, q{
SET ROLE alice;
CREATE TABLE forced (id int PRIMARY KEY);
ALTER TABLE forced ENABLE ROW LEVEL SECURITY;
ALTER TABLE forced FORCE ROW LEVEL SECURITY;
SELECT wtcache.watch('forced');});
like($err, qr/cannot watch table "forced": its row-level security policies apply to its owner/,
	'watch() refuses a table whose policies apply to its owner');

$node->stop;
done_testing();
