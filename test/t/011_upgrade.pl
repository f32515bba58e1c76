# ALTER EXTENSION wtcache UPDATE from the previous version: a database
# created with 1.0 and watching a table keeps delivering across the update,
# and ends with exactly the objects of a fresh install of the new version.
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
my $node = new_wtcache_node('upgrade', redis_port => $rp, no_extension => 1);

sub sql { return $node->safe_psql($_[0], $_[1]); }

my $latest = sql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'wtcache'});
my @path = split /\n/, sql('postgres',
	qq{SELECT unnest(string_to_array(path, '--')) FROM pg_extension_update_paths('wtcache') WHERE source = '1.0' AND target = '$latest'});
ok(@path >= 2, "an update path from 1.0 to $latest: @path");

sql('postgres', q{CREATE DATABASE fresh});
sql('fresh', q{CREATE EXTENSION wtcache});
is(sql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'wtcache'}), $latest, "a fresh install is $latest");

sql('postgres', q{
CREATE EXTENSION wtcache VERSION '1.0';
CREATE TABLE item (id int PRIMARY KEY, name text);
SELECT wtcache.watch('item');
INSERT INTO item VALUES (1, 'before the update');
});
ok(wait_drained($node, 'postgres'), 'delivered under 1.0');
like(redis_cmd($rp, 'GET', redis_key_of($node, 'postgres', 'item', 1)), qr/before the update/, 'row in Redis');

# each step of the path, with writes between the steps
for my $v (@path[ 1 .. $#path ])
{
	sql('postgres', qq{ALTER EXTENSION wtcache UPDATE TO '$v'; INSERT INTO item VALUES (100 + (SELECT count(*) FROM item), 'after $v')});
	is(sql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'wtcache'}), $v, "updated to $v");
	ok(wait_drained($node, 'postgres'), "writes after the update to $v delivered");
}
sql('postgres', q{UPDATE item SET name = 'changed after the update' WHERE id = 1});
ok(wait_drained($node, 'postgres'), 'delivered');
like(redis_cmd($rp, 'GET', redis_key_of($node, 'postgres', 'item', 1)), qr/changed after the update/,
	'the watch made under 1.0 keeps working');
is(sql('postgres', q{SELECT count(*) FROM wtcache.verify('item')}), '0', 'verify: Redis equals the table');
is(redis_cmd($rp, 'GET', redis_key_of($node, 'postgres', 'item', 1)) =~ s/^\{"_v":\d+,/{/r,
	'{"id":1,"name":"changed after the update"}', 'the row key and its value keep their layout');

# the options of 1.3 on a table watched before the update: its keys are
# rewritten in the new shape
if (grep { $_ eq '1.3' } @path)
{
	sql('postgres', q{SELECT wtcache.watch('item', exclude_columns => ARRAY['name'])});
	ok(wait_drained($node, 'postgres'), 'the projection delivered');
	is(redis_cmd($rp, 'GET', redis_key_of($node, 'postgres', 'item', 1)) =~ s/^\{"_v":\d+,/{/r,
		'{"id":1}', 'a watch made under 1.0 takes a projection after the update');
	is(sql('postgres', q{SELECT count(*) FROM wtcache.verify('item')}), '0', 'verify agrees');
}

# what 1.4 shows of a database watched before the update: its delivery lag
# (changes delivered after the update counted), the memory and replica
# state, and the status columns
if (grep { $_ eq '1.4' } @path)
{
	sql('postgres', q{UPDATE item SET name = 'after 1.4' WHERE id = 1});
	ok(wait_drained($node, 'postgres'), 'delivered after the update to 1.4');
	ok( $node->poll_query_until('postgres',
			q{SELECT changes > 0 AND p50 IS NOT NULL FROM wtcache.delivery_lag()
			   WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
		'delivery_lag() counts the changes delivered after the update');
	is( sql('postgres',
			q{SELECT lag_p50 IS NOT NULL, replica_ack_state, redis_memory_state FROM wtcache.status WHERE table_name = 'item'::regclass}),
		't|off|ok', 'status shows the lag, the replica and the memory state of a table watched under 1.0');
}

# the same objects as a fresh install
my $objects = q{SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
                 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
                   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'wtcache') ORDER BY 1};
is(sql('postgres', $objects), sql('fresh', $objects), 'the updated extension has the objects of a fresh install');
my $signatures = q{SELECT p.oid::regprocedure::text || ' ' || pg_get_function_result(p.oid) || ' ' || p.provolatile::text || p.proisstrict::text
                     FROM pg_proc p WHERE p.pronamespace = 'wtcache'::regnamespace ORDER BY 1};
is(sql('postgres', $signatures), sql('fresh', $signatures), 'and the same function signatures');
like(sql('postgres', q{SELECT wtcache.metrics()}), qr/^wtcache_pushed_total\{database="postgres",table="public.item"\} \d+$/m,
	'metrics() works after the update');

$node->stop;
done_testing();
