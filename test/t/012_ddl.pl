# DDL on watched tables: column changes requeue the rows in their new
# shape; a rename moves the keys to the new name; dropping the table, its
# schema or its capture triggers removes its keys; no DDL is refused.
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
my $node = new_wtcache_node('ddl', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub clean
{
	my ($rel, $what) = @_;
	ok(wait_drained($node, $db), "$what: delivered");
	is(sql(qq{SELECT count(*) FROM wtcache.verify('$rel')}), '0', "$what: Redis equals the table");
}

sub nkeys
{
	my ($pattern) = @_;
	return scalar(@{ redis_scan_keys($rp, $pattern) });
}

sql(q{
CREATE SCHEMA app;
CREATE TABLE app.acct (id int PRIMARY KEY, owner text NOT NULL, note text);
INSERT INTO app.acct SELECT i, 'owner ' || i, NULL FROM generate_series(1, 200) i;
SELECT wtcache.watch('app.acct', warm => true);
});
clean('app.acct', 'watched');

#### the row's shape

my ($ret, $out, $err) = $node->psql($db, q{BEGIN; ALTER TABLE app.acct ADD COLUMN level int NOT NULL DEFAULT 3;
SELECT pending FROM wtcache.status WHERE table_name = 'app.acct'::regclass; COMMIT;});
is($out, '201', 'ADD COLUMN queues the removal of its keys and its 200 rows, in its own transaction');
is($err, '', 'and says nothing: a routine requeue needs no action');
clean('app.acct', 'ADD COLUMN with a default');

($ret, $out, $err) = $node->psql($db, q{BEGIN; ALTER TABLE app.acct SET SCHEMA app;
SELECT pending FROM wtcache.status WHERE table_name = 'app.acct'::regclass; COMMIT;});
is($out, '0', 'SET SCHEMA to the schema it is in queues nothing');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'app.acct', 5)), qr/"level":3/, 'rows in Redis have the new column');

sql(q{ALTER TABLE app.acct DROP COLUMN note});
clean('app.acct', 'DROP COLUMN');
unlike(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'app.acct', 5)), qr/"note"/, 'and lose a dropped one');

sql(q{ALTER TABLE app.acct ALTER COLUMN level TYPE numeric USING level * 1.5});
clean('app.acct', 'ALTER COLUMN TYPE');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'app.acct', 5)), qr/"level":4\.5/, 'values in the new type');

sql(q{ALTER TABLE app.acct RENAME COLUMN owner TO holder});
clean('app.acct', 'RENAME COLUMN');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'app.acct', 5)), qr/"holder":"owner 5"/, 'under the new column name');

sql(q{BEGIN; ALTER TABLE app.acct ADD COLUMN gone int DEFAULT 1; ROLLBACK});
ok(wait_drained($node, $db), 'a rolled-back ALTER queues nothing that is delivered');
unlike(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'app.acct', 5)), qr/"gone"/, 'and leaves Redis alone');

# other ALTERs do not requeue anything
my $captured = sql(q{SELECT captured FROM wtcache.status WHERE table_name = 'app.acct'::regclass});
sql(q{ALTER TABLE app.acct SET (fillfactor = 90); ALTER TABLE app.acct ALTER COLUMN holder SET STATISTICS 200});
is(sql(q{SELECT captured FROM wtcache.status WHERE table_name = 'app.acct'::regclass}), $captured,
	'storage parameters and statistics targets requeue nothing');

#### the key's unique index dropped: allowed, with a warning

sql(q{CREATE TABLE keyed (id int NOT NULL, email text NOT NULL);
      ALTER TABLE keyed ADD CONSTRAINT keyed_pkey PRIMARY KEY (id);
      CREATE UNIQUE INDEX keyed_email ON keyed (email);
      SELECT wtcache.watch('keyed');});
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE keyed DROP CONSTRAINT keyed_pkey});
is($ret, 0, 'dropping the primary key of a watched table is not refused');
like($err, qr/WARNING:  the key of watched table "keyed" is no longer enforced by a unique index.*HINT:  Create a unique index on the key columns again/s,
	'but warns that the key is no longer enforced');
sql(q{CREATE UNIQUE INDEX keyed_id ON keyed (id)});
($ret, $out, $err) = $node->psql($db, q{DROP INDEX keyed_email});
unlike($err, qr/WARNING/, 'dropping an index the key does not need says nothing');
($ret, $out, $err) = $node->psql($db, q{DROP INDEX keyed_id});
like($err, qr/WARNING:  the key of watched table "keyed" is no longer enforced/, 'DROP INDEX of the one that enforced it warns');
sql(q{INSERT INTO keyed VALUES (1, 'a')});
ok(wait_drained($node, $db), 'capture goes on');

#### renames

my $old_pattern = table_key_pattern($node, $db, 'app.acct');
sql(q{ALTER TABLE app.acct RENAME TO account});
clean('app.account', 'RENAME TO');
is(nkeys($old_pattern), 0, 'no key is left under the old name');
is(nkeys(table_key_pattern($node, $db, 'app.account')), 200, 'every row is under the new name');
sql(q{UPDATE app.account SET holder = 'after the rename' WHERE id = 7});
ok(wait_drained($node, $db), 'delivered');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'app.account', 7)), qr/after the rename/, 'changes keep flowing');

sql(q{CREATE SCHEMA other; ALTER TABLE app.account SET SCHEMA other});
clean('other.account', 'SET SCHEMA');
is(nkeys(table_key_pattern($node, $db, 'other.account')), 200, 'every row under the new schema');
is(nkeys("wtc:{postgres:app.account:*}"), 0, 'none under the old one');

#### drops

sql(q{
CREATE TABLE doomed (id int PRIMARY KEY);
INSERT INTO doomed SELECT generate_series(1, 50);
SELECT wtcache.watch('doomed', warm => true);
});
ok(wait_drained($node, $db), 'delivered');
my $doomed = table_key_pattern($node, $db, 'doomed');
is(nkeys($doomed), 50, 'the table is in Redis');
sql(q{BEGIN; DROP TABLE doomed; ROLLBACK});
ok(wait_drained($node, $db), 'nothing to deliver');
is(nkeys($doomed), 50, 'a rolled-back DROP TABLE keeps the keys');
sql(q{DROP TABLE doomed});
ok(wait_drained($node, $db), 'drop delivered');
is(nkeys($doomed), 0, 'DROP TABLE removes the keys');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel::text = 'doomed'}), '0', 'and the watch');

sql(q{
CREATE SCHEMA scratch;
CREATE TABLE scratch.t (id int PRIMARY KEY);
INSERT INTO scratch.t SELECT generate_series(1, 20);
SELECT wtcache.watch('scratch.t', warm => true);
});
ok(wait_drained($node, $db), 'delivered');
my $scratch = table_key_pattern($node, $db, 'scratch.t');
is(nkeys($scratch), 20, 'in Redis');
sql(q{DROP SCHEMA scratch CASCADE});
ok(wait_drained($node, $db), 'delivered');
is(nkeys($scratch), 0, 'DROP SCHEMA ... CASCADE removes the keys of its watched tables');

#### capture triggers dropped by hand

my $acc_pattern = table_key_pattern($node, $db, 'other.account');
($ret, $out, $err) = $node->psql($db, q{DROP TRIGGER wtcache_capture_upd ON other.account});
is($ret, 0, 'dropping a capture trigger is not refused');
like($err, qr/WARNING:  wtcache: table other.account is no longer watched: its capture trigger wtcache_capture_upd was dropped/,
	'but warns that the table is no longer watched');
ok(wait_drained($node, $db), 'delivered');
is(nkeys($acc_pattern), 0, 'its keys are removed: nobody keeps them current');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'other.account'::regclass}), '0', 'the watch is gone');
($ret, $out, $err) = $node->psql($db, q{SELECT wtcache.get('other.account', '7')});
like($err, qr/not watched/, 'cached reads of it say it is not watched');

# watch() and unwatch() replacing their own triggers are not mistaken for it
sql(q{SELECT wtcache.watch('other.account'); SELECT wtcache.watch('other.account', ttl => '1 hour')});
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'other.account'::regclass}), '1', 're-running watch() keeps the watch');
sql(q{SELECT wtcache.unwatch('other.account')});
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel::text = 'other.account'}), '0', 'unwatch() removes it, without a warning');

#### drops by a table owner who is not a superuser

# The sql_drop handler runs with the rights of whoever runs the DDL (it is
# not SECURITY DEFINER); wtcache's own rows are changed as their owner.
is(sql(q{SELECT prosecdef FROM pg_proc WHERE oid = 'wtcache._on_sql_drop'::regproc}), 'f',
	'_on_sql_drop is not SECURITY DEFINER');
sql(q{CREATE ROLE tab_owner LOGIN; GRANT CREATE ON SCHEMA public TO tab_owner; CREATE ROLE intruder LOGIN});
sub as_role
{
	my ($role, $q) = @_;
	return $node->psql($db, $q, extra_params => [ '-U', $role ]);
}
($ret, $out, $err) = as_role('tab_owner', q{
CREATE TABLE owned (id int PRIMARY KEY);
INSERT INTO owned SELECT generate_series(1, 10);
SELECT wtcache.watch('owned', warm => true);
CREATE TABLE owned2 (id int PRIMARY KEY);
INSERT INTO owned2 SELECT generate_series(1, 10);
SELECT wtcache.watch('owned2', warm => true);
});
is($ret, 0, 'a table owner watches two tables') or diag($err);
ok(wait_drained($node, $db), 'delivered');
my $owned = table_key_pattern($node, $db, 'owned');
my $owned2 = table_key_pattern($node, $db, 'owned2');
is(nkeys($owned) + nkeys($owned2), 20, 'both in Redis');
my $owned_oid = sql(q{SELECT 'owned'::regclass::oid});
my $owned2_oid = sql(q{SELECT 'owned2'::regclass::oid});

# someone else cannot make wtcache forget them, even given EXECUTE
($ret, $out, $err) = as_role('intruder', qq{SELECT wtcache._forget_table($owned_oid, 'public', 'owned')});
like($err, qr/permission denied for function _forget_table/, 'a non-owner calling _forget_table is refused');
sql(q{GRANT EXECUTE ON FUNCTION wtcache._forget_table(oid, text, text) TO intruder});
($ret, $out, $err) = as_role('intruder', qq{SELECT wtcache._forget_table($owned_oid, 'public', 'owned')});
isnt($ret, 0, 'even with EXECUTE, _forget_table refuses a table that was not dropped');
sql(q{REVOKE EXECUTE ON FUNCTION wtcache._forget_table(oid, text, text) FROM intruder});
($ret, $out, $err) = as_role('intruder', q{DROP TABLE owned});
like($err, qr/must be owner of table owned/, 'nor can it drop the table');
ok(wait_drained($node, $db), 'delivered');
is(nkeys($owned), 10, 'the keys are still in Redis');
is(sql(qq{SELECT count(*) FROM wtcache.watched WHERE rel::oid = $owned_oid}), '1', 'and the watch is kept');

($ret, $out, $err) = as_role('tab_owner', q{DROP TABLE owned});
is($ret, 0, 'the owner drops the table') or diag($err);
ok(wait_drained($node, $db), 'drop delivered');
is(nkeys($owned), 0, 'DROP TABLE by its owner removes the keys');
is(sql(qq{SELECT count(*) FROM wtcache.watched WHERE rel::oid = $owned_oid}), '0', 'and the watch');

($ret, $out, $err) = as_role('tab_owner', q{DROP TRIGGER wtcache_capture_del ON owned2});
like($err, qr/WARNING:  wtcache: table public.owned2 is no longer watched: its capture trigger wtcache_capture_del was dropped/,
	'the owner dropping a capture trigger gets the warning');
ok(wait_drained($node, $db), 'delivered');
is(nkeys($owned2), 0, 'its keys are removed');
is(sql(qq{SELECT count(*) FROM wtcache.watched WHERE rel::oid = $owned2_oid}), '0', 'and the watch');
sql(q{DROP TABLE owned2; REVOKE CREATE ON SCHEMA public FROM tab_owner; DROP ROLE tab_owner, intruder});

#### A requeue inside a REPEATABLE READ transaction
# Its snapshot predates rows other sessions committed before the DDL took
# its lock; those rows reached Redis in the old shape, and must be queued
# again in the new one like every other.

sql(q{CREATE TABLE rr (id int PRIMARY KEY, v text);
      INSERT INTO rr SELECT i, 'v' || i FROM generate_series(1, 5) i;
      SELECT wtcache.watch('rr', warm => true);});
ok(wait_drained($node, $db), 'rr delivered');
my $rr = $node->background_psql($db);
$rr->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM rr;});
sql(q{INSERT INTO rr VALUES (6, 'after the snapshot')});
ok(wait_drained($node, $db), 'a row committed after that snapshot is delivered, in the old shape');
$rr->query_safe(q{ALTER TABLE rr ADD COLUMN extra int NOT NULL DEFAULT 7; COMMIT;});
$rr->quit;
ok(wait_drained($node, $db), 'the requeue delivered');
like(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'rr', 6)), qr/"extra":7/,
	'the row the REPEATABLE READ snapshot did not see is in the new shape too');
is(sql(q{SELECT count(*) FROM wtcache.verify('rr')}), '0', 'Redis equals the table');

$node->stop;
done_testing();
