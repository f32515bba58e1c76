# Key templates and a shared key space, found by the hostile review of
# 1.3 (both failed before their fixes):
#
#  A. The worker cached a template's claim for its whole life: once the
#     claim key was gone from Redis (evicted, or DEL'd as the set-aside
#     hint says) and another database claimed the key space, the first
#     kept pushing into it: the two databases' rows shared keys, and each
#     read the other's.  The claim is now asked of Redis before every
#     batch; a lost one sets the table's changes aside (README's Limits
#     say what is left: the keys without a change pending).
#  B. get() of a json-format templated table served any string at the
#     row's key, though the key space is shared with the application: a
#     value the application wrote (before the watch, or beside it) was
#     returned as the row, even for a row the table does not have, and one
#     that is not JSON made get() fail.  Only a value with "_v" at its
#     head is a row now.
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
my $node = new_wtcache_node('key_corners', redis_port => $rp,
	extra_conf => "wtcache.key_prefix = ''\n");
my $db = 'postgres';

sub sql { my ($q, $d) = @_; return $node->safe_psql($d // $db, $q); }

ok(wait_drained($node, $db), 'the worker runs');
sql(q{CREATE DATABASE other});
sql(q{CREATE EXTENSION wtcache}, 'other');
ok(wait_drained($node, 'other'), 'the second database\'s worker runs');

#### A. a claim the worker cached, gone from Redis

sql(q{CREATE TABLE bal (id int PRIMARY KEY, who text);
      INSERT INTO bal SELECT i, 'postgres ' || i FROM generate_series(1, 200) i;
      SELECT wtcache.watch('bal', key_template => 'bal:{id}', warm => true);});
ok(wait_drained($node, $db), 'bal delivered');
is(redis_cmd($rp, 'GET', '{template}:bal%3A%7B%7D'), 'postgres:public.bal', 'claimed by the first database');
# what an eviction does (the claim is read once per worker life: the
# coldest key there is), or a DEL of it
redis_cmd($rp, 'DEL', '{template}:bal%3A%7B%7D');
sql(q{CREATE TABLE bal (id int PRIMARY KEY, who text);
      INSERT INTO bal SELECT i, 'other ' || i FROM generate_series(1, 5) i;
      SELECT wtcache.watch('bal', key_template => 'bal:{id}', warm => true);}, 'other');
ok(wait_drained($node, 'other'), 'the second database delivered bal');
is(redis_cmd($rp, 'GET', '{template}:bal%3A%7B%7D'), 'other:public.bal', 'and holds the claim now');
# a row the second database does not have, so that no version compare
# decides
sql(q{UPDATE bal SET who = 'postgres changed' WHERE id = 100});
ok($node->poll_query_until($db, q{SELECT set_aside > 0 FROM wtcache.status WHERE table_name = 'bal'::regclass}),
	'the first database sets its change aside');
like(sql(q{SELECT set_aside_reason FROM wtcache.status WHERE table_name = 'bal'::regclass}),
	qr/belong to table other:public\.bal of another database/, '... saying why');
is(redis_cmd($rp, 'GET', 'bal:100'), undef,
	'A: the first database does not write into the key space the second holds');
is(sql(q{SELECT wtcache.get('bal', '100')}, 'other'), '',
	'A: the second database, which has no row 100, reads none');
is(sql(q{SELECT wtcache.get('bal', '100')->>'who'}), 'postgres changed',
	'A: the first database reads its change set aside from its table');

#### B. the application's values at templated keys (json format)

# the application cached profiles at prof:<id> itself, before wtcache
redis_cmd($rp, 'SET', 'prof:a', '{"name":"legacy alice"}');
redis_cmd($rp, 'SET', 'prof:ghost', '{"name":"ghost"}');
redis_cmd($rp, 'SET', 'prof:junk', 'plain text');
sql(q{CREATE TABLE prof (id text PRIMARY KEY, name text);
      INSERT INTO prof VALUES ('a', 'alice');
      SELECT wtcache.watch('prof', key_template => 'prof:{id}');}, 'other');
ok(wait_drained($node, 'other'), 'prof watched (in the second database: the first has changes set aside)');
is(sql(q{SELECT wtcache.get('prof', 'a')->>'name'}, 'other'), 'alice',
	'B: get() returns the row, not the application\'s value at its key');
is(sql(q{SELECT wtcache.get('prof', 'ghost')}, 'other'), '', 'B: nor a row the table does not have');
my ($rc, $out, $err) = $node->psql('other', q{SELECT wtcache.get('prof', 'junk')});
is($rc, 0, 'B: a value that is not JSON at the key does not make get() fail') or diag($err);

$node->stop;
done_testing();
