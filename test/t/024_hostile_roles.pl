# Hostile roles (issue 13): roles that do not trust each other share one
# database with wtcache, and each tries what it can against the others:
#
#   owner_r    owns tables in its own schema owner_s and watches them
#   reader_r   SELECT only on public.accounts; owns reader_schema
#   writer_r   UPDATE on one column only of public.victim
#   mon_r      member of pg_monitor
#   rs_r       member of pg_read_all_settings
#   creator_r  CREATE on schema public
#
# None is a superuser.  Every attack is silent when it fails (the hostile
# functions swallow their own errors), so each check asserts an invariant,
# never an error message: after each vector no hostile role gained a role
# attribute or a membership, hostile code never ran as a superuser (the
# hostile functions log who ran them in public.evidence), the postmaster
# did not restart, and the "victim" tables (public.victim and
# public.accounts owned by the bootstrap superuser, owner_s.plain owned by
# owner_r) are still delivered to Redis.
#
# Checks the code before issue 13's fixes passes on purpose, because it
# was already safe there: wait() with an operator on the caller's
# search_path (fence.c already pins search_path and qualifies its
# operator), watch(warm => true) of a domain key (a domain over text is
# made text without running its CHECK; the worker and verify() do run it,
# and fail), and _capture_when_tagged() templates that happen not to crash.
#
# The test itself never reads a hostile table as a superuser: PostgreSQL
# would evaluate the owner's index expressions in the superuser's session
# when it plans such a read, and that is not wtcache's doing.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;
use RedisTopology qw(set_delivery_paused);

my $pw = 'Hostile-Pw-7f3a9c51';
my $redis = start_redis(args => [ '--requirepass', $pw ], auth => [$pw]);
my $rp = $redis->port;
my $node = new_wtcache_node(
	'hostile',
	redis_url => "redis://default:$pw\@127.0.0.1:$rp",
	# no autovacuum: its ANALYZE would run the hostile index expressions
	# (as the table's owner, harmlessly) at moments the test does not choose
	extra_conf => "autovacuum = off\n");
my $db = 'postgres';

my @hostile = qw(owner_r reader_r writer_r mon_r rs_r creator_r);
my $hostile_list = join(', ', map { "'$_'" } @hostile);

sub sql { return $node->safe_psql($db, $_[0]); }

# Run SQL in a session connected as a role: as_ok dies on error, as_try
# returns (exit code, stdout, stderr).
sub as_ok
{
	my ($role, $sql) = @_;
	return $node->safe_psql($db, $sql, extra_params => [ '-U', $role ]);
}

sub as_try
{
	my ($role, $sql, %opts) = @_;
	my ($ret, $out, $err) = $node->psql($db, $sql,
		extra_params => [ '-U', $role ], timeout => 120, %opts);
	return ($ret // -1, $out // '', $err // '');
}

sub quote_lit
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

############################################################################
# Roles, victim tables, the evidence table
############################################################################

sql(qq{
CREATE ROLE owner_r LOGIN;
CREATE ROLE reader_r LOGIN;
CREATE ROLE writer_r LOGIN;
CREATE ROLE mon_r LOGIN IN ROLE pg_monitor;
CREATE ROLE rs_r LOGIN IN ROLE pg_read_all_settings;
CREATE ROLE creator_r LOGIN;
CREATE SCHEMA owner_s AUTHORIZATION owner_r;
CREATE SCHEMA reader_schema AUTHORIZATION reader_r;
GRANT CREATE ON SCHEMA public TO creator_r;

-- written by the hostile functions: who ran them, with which rights, where
CREATE TABLE public.evidence (id bigserial PRIMARY KEY, ctx text, who text,
    su boolean, backend text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.evidence TO PUBLIC;
GRANT USAGE ON SEQUENCE public.evidence_id_seq TO PUBLIC;

CREATE TABLE public.victim (id bigint PRIMARY KEY, val text, note text);
INSERT INTO public.victim SELECT i, 'v' || i, NULL FROM generate_series(1, 9) i;
GRANT UPDATE (val) ON public.victim TO writer_r;
SELECT wtcache.watch('public.victim', warm => true);

CREATE TABLE public.accounts (id int PRIMARY KEY, owner text NOT NULL, balance int NOT NULL);
INSERT INTO public.accounts SELECT i, 'owner ' || i, 100 * i FROM generate_series(1, 20) i;
GRANT SELECT ON public.accounts TO reader_r;
SELECT wtcache.watch('public.accounts', warm => true);

CREATE TABLE public.secret_ledger (id int PRIMARY KEY, amount int);
INSERT INTO public.secret_ledger VALUES (1, 10), (2, 20);
SELECT wtcache.watch('public.secret_ledger');
});

as_ok('owner_r', q{
CREATE TABLE owner_s.plain (id int PRIMARY KEY, v text);
INSERT INTO owner_s.plain SELECT i, 'p' || i FROM generate_series(1, 5) i;
SELECT wtcache.watch('owner_s.plain', warm => true);
});

# hostile(ctx): logs who runs it, then tries to make ROLE a superuser and a
# member of pg_write_server_files; every failure is swallowed, so an attack
# that does not work is silent.
sub hostile_fn
{
	my ($schema, $role) = @_;
	my $f = <<'SQL';
CREATE FUNCTION @SCHEMA@.hostile(ctx text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    BEGIN
        INSERT INTO public.evidence (ctx, who, su, backend)
        SELECT ctx, current_user, r.rolsuper,
               (SELECT a.backend_type FROM pg_stat_activity a WHERE a.pid = pg_backend_pid())
          FROM pg_roles r WHERE r.rolname = current_user;
    EXCEPTION WHEN OTHERS THEN
        RAISE LOG 'hostile(%): evidence not written: %', ctx, SQLERRM;
    END;
    BEGIN
        EXECUTE 'ALTER ROLE @ROLE@ SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        RAISE LOG 'hostile(%): ALTER ROLE failed: %', ctx, SQLERRM;
    END;
    BEGIN
        EXECUTE 'GRANT pg_write_server_files TO @ROLE@';
    EXCEPTION WHEN OTHERS THEN
        RAISE LOG 'hostile(%): GRANT failed: %', ctx, SQLERRM;
    END;
    RETURN true;
END
$f$;
SQL
	$f =~ s/\@SCHEMA\@/$schema/g;
	$f =~ s/\@ROLE\@/$role/g;
	return $f;
}
as_ok('owner_r', hostile_fn('owner_s', 'owner_r'));
as_ok('creator_r', hostile_fn('public', 'creator_r'));

ok(wait_drained($node, $db), 'initial rows delivered');
compare_table_ok($node, $db, $_, $rp, "setup: Redis matches $_")
  for qw(public.victim public.accounts owner_s.plain);

############################################################################
# The invariants checked after every vector
############################################################################

my $membership_sql = qq{
SELECT coalesce(string_agg(g.rolname || ' > ' || m.rolname, ', ' ORDER BY 1), '')
  FROM pg_auth_members a
  JOIN pg_roles g ON g.oid = a.roleid
  JOIN pg_roles m ON m.oid = a.member
 WHERE m.rolname IN ($hostile_list)};
my $baseline_members = sql($membership_sql);
is($baseline_members, 'pg_monitor > mon_r, pg_read_all_settings > rs_r', 'membership baseline');
my $last_evidence = 0;

# ok if no hostile role has a role attribute or a membership it did not
# have, and no hostile code ran as a superuser since the last check.  On
# failure it repairs, so that the next vector is judged on its own.
sub no_escalation
{
	my ($what) = @_;
	my $attrs = sql(qq{
SELECT coalesce(string_agg(rolname, ', ' ORDER BY rolname), '') FROM pg_roles
 WHERE rolname IN ($hostile_list)
   AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)});
	is($attrs, '', "$what: no hostile role became superuser (or gained a role attribute)");
	my $members = sql($membership_sql);
	is($members, $baseline_members, "$what: no hostile role gained a role membership");
	my $ran_as_su = sql(qq{
SELECT coalesce(string_agg(format('%s (as %s in %s)', ctx, who, coalesce(backend, '?')), '; ' ORDER BY id), '')
  FROM public.evidence WHERE id > $last_evidence AND su});
	is($ran_as_su, '', "$what: hostile code never ran as a superuser");
	my $all = sql(qq{
SELECT coalesce(string_agg(format('%s (as %s in %s)', ctx, who, coalesce(backend, '?')), '; ' ORDER BY id), '')
  FROM public.evidence WHERE id > $last_evidence});
	note("$what: hostile code ran: " . ($all eq '' ? 'never' : $all));
	$last_evidence = sql('SELECT coalesce(max(id), 0) FROM public.evidence');

	# repair (only the code before the fix needs it)
	sql("ALTER ROLE $_ NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS") for @hostile;
	my $extra = sql(qq{
SELECT string_agg(format('REVOKE %I FROM %I;', g.rolname, m.rolname), ' ')
  FROM pg_auth_members a
  JOIN pg_roles g ON g.oid = a.roleid
  JOIN pg_roles m ON m.oid = a.member
 WHERE m.rolname IN ($hostile_list)
   AND (g.rolname, m.rolname) NOT IN (('pg_monitor', 'mon_r'), ('pg_read_all_settings', 'rs_r'))});
	sql($extra) if $extra ne '';
	return;
}

# The postmaster did not restart: no child was terminated by a signal, a
# session opened at the start (or after the last failure) is still there,
# and the postmaster's start time did not change.
my ($keeper, $keeper_pid, $pm_start);
my $log_offset = -s $node->logfile;

sub new_keeper
{
	$keeper = $node->background_psql($db);
	$keeper_pid = $keeper->query_safe('SELECT pg_backend_pid()');
	$pm_start = sql('SELECT pg_postmaster_start_time()');
	return;
}
new_keeper();

sub server_survived
{
	my ($what) = @_;
	my $log = slurp_file($node->logfile, $log_offset);
	my $crashed = $log =~ /terminated by signal|terminating any other active server processes/;
	if ($crashed)
	{
		# the code before the fix: let the postmaster finish its restart
		$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
		$node->poll_query_until($db, 'SELECT true');
	}
	my $alive = sql("SELECT count(*) FROM pg_stat_activity WHERE pid = $keeper_pid");
	my $start = sql('SELECT pg_postmaster_start_time()');
	my $ok = ok(!$crashed && $alive eq '1' && $start eq $pm_start,
		"$what: no server process crashed, the postmaster did not restart");
	if (!$ok)
	{
		diag("crashed: " . ($crashed ? 'yes' : 'no')
			  . ", long-lived session alive: $alive, start time $pm_start -> $start");
		eval { $keeper->quit; };
		new_keeper();
	}
	$log_offset = -s $node->logfile;
	return;
}

# Delivery goes on: a change to each victim table reaches Redis and Redis
# matches the tables.  On failure (the code before the fix) the queue is
# emptied and the victims resynced, so the next vector starts clean.
my $tick = 0;

sub delivery_goes_on
{
	my ($what) = @_;
	$tick++;
	sql(qq{UPDATE public.victim SET note = 'tick $tick' WHERE id = 9;
	       UPDATE public.accounts SET balance = balance + 1 WHERE id = 20;});
	as_ok('owner_r', qq{UPDATE owner_s.plain SET v = 'tick $tick' WHERE id = 5});
	my $ok = ok(wait_drained($node, $db, '15s'), "$what: delivery goes on (wait() is true)");
	for my $t (qw(public.victim public.accounts owner_s.plain))
	{
		$ok = 0
		  unless compare_table_ok($node, $db, $t, $rp, "$what: Redis matches $t");
	}
	return if $ok;
	sql(q{DELETE FROM wtcache.queue;
	      SELECT wtcache.resync('public.victim'), wtcache.resync('public.accounts'),
	             wtcache.resync('owner_s.plain');});
	diag("$what: repaired delivery: " . (wait_drained($node, $db, '30s') ? 'drained' : 'still not drained'));
	return;
}

sub after_vector
{
	my ($what) = @_;
	server_survived($what);
	no_escalation($what);
	delivery_goes_on($what);
	return;
}

after_vector('setup');

############################################################################
# Vector 5: the Redis password and roles that may read settings
############################################################################

for my $role (qw(mon_r rs_r reader_r))
{
	my @probes = (
		q{SELECT string_agg(concat_ws(' ', name, setting, reset_val, boot_val), E'\n') FROM pg_settings},
		q{SHOW wtcache.redis_url},
		q{SHOW ALL},
		q{SELECT current_setting('wtcache.redis_url', true)},
		q{SELECT string_agg(concat_ws(' ', name, setting), E'\n') FROM pg_file_settings},
		q{SELECT * FROM wtcache.worker_status()},
		q{SELECT * FROM wtcache.status},
		q{SELECT wtcache.metrics()});
	my @leaks;
	for my $p (@probes)
	{
		my ($ret, $out, $err) = as_try($role, $p);
		push @leaks, $p if index("$out\n$err", $pw) >= 0;
	}
	is(join(' | ', @leaks), '', "password: $role sees no Redis password (pg_settings, SHOW, current_setting, ...)");
}

# A failed ALTER SYSTEM must not log the password it was given.
{
	my $leak = 'Leak-Pw-2b8e41d0';
	my $offset = -s $node->logfile;
	my ($ret) = $node->psql($db, qq{SET log_statement = 'none';
ALTER SYSTEM SET wtcache.redis_url = 'redis://default:$leak\@127.0.0.1:notaport'});
	isnt($ret, 0, 'password: ALTER SYSTEM with a malformed URL fails');
	sql('ALTER SYSTEM RESET wtcache.redis_url');
	my $log = slurp_file($node->logfile, $offset);
	ok(index($log, $leak) < 0, 'password: the failed ALTER SYSTEM did not log the password')
	  or diag(join("\n", grep { index($_, $leak) >= 0 } split /\n/, $log));
}
after_vector('password');

############################################################################
# Vector 7: metadata of tables a role cannot see, other databases' workers
############################################################################

{
	my $oid = sql(q{SELECT 'public.secret_ledger'::regclass::oid});
	# a cached read, so that read_stats() has a row for it
	sql(q{SELECT wtcache.get('public.secret_ledger', '1')});
	is(sql(qq{SELECT count(*) FROM wtcache.read_stats() WHERE table_name::oid = $oid}), '1',
		'metadata: (precondition) read_stats() has a row for secret_ledger');

	sql('CREATE DATABASE otherdb');
	$node->safe_psql('otherdb', 'CREATE EXTENSION wtcache');
	my $otherdb = sql(q{SELECT oid FROM pg_database WHERE datname = 'otherdb'});
	ok($node->poll_query_until($db,
			qq{SELECT count(*) > 0 FROM wtcache.worker_status() WHERE database_oid = $otherdb}),
		'metadata: (precondition) a superuser sees the worker of otherdb');

	my %probe = (
		'wtcache.watched' => qq{SELECT count(*) FROM wtcache.watched WHERE rel::oid = $oid},
		'wtcache.status' => qq{SELECT count(*) FROM wtcache.status WHERE table_name::oid = $oid},
		'wtcache.read_stats()' => qq{SELECT count(*) FROM wtcache.read_stats() WHERE table_name::oid = $oid},
		'wtcache.metrics()' => q{SELECT count(*) FROM wtcache.metrics() m WHERE strpos(m, 'secret_ledger') > 0},
		'wtcache.worker_status() of another database' =>
		  q{SELECT count(*) FROM wtcache.worker_status()
		     WHERE database_oid <> (SELECT oid FROM pg_database WHERE datname = current_database())},
		'wtcache.metrics() of another database' =>
		  q{SELECT count(*) FROM wtcache.metrics() m WHERE strpos(m, 'otherdb') > 0});
	for my $what (sort keys %probe)
	{
		my ($ret, $out, $err) = as_try('creator_r', $probe{$what});
		# refused, or no row
		ok($ret != 0 || $out eq '0', "metadata: a role without privileges sees nothing in $what")
		  or diag("got '$out'");
	}
}
after_vector('metadata');

############################################################################
# Vector 1a: wait() and an operator on the caller's search_path
############################################################################

as_ok('creator_r', q{
CREATE FUNCTION public.int8eq_hostile(a bigint, b bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.hostile('wait(): =(bigint, bigint) in public');
    RETURN pg_catalog.int8eq(a, b);
END $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.int8eq_hostile);
});
ok(set_delivery_paused($node, $db, 1), 'wait(): delivery paused');
sql(q{UPDATE public.victim SET note = 'queued' WHERE id = 1});
{
	my ($ret, $out, $err) = as_try('creator_r', q{SET search_path = public, pg_catalog;
SELECT wtcache.wait('1s');});
	note("wait() as creator_r: exit $ret, '$out' $err");
}
set_delivery_paused($node, $db, 0);
as_ok('creator_r', q{DROP OPERATOR public.= (bigint, bigint); DROP FUNCTION public.int8eq_hostile(bigint, bigint)});
after_vector('wait() with =(bigint, bigint) in public');

############################################################################
# Vector 1b: watch()/unwatch() and operators on the owner's search_path
############################################################################

as_ok('owner_r', q{
CREATE TABLE owner_s.plain2 (id int PRIMARY KEY, v text);
INSERT INTO owner_s.plain2 VALUES (1, 'x');
CREATE FUNCTION owner_s.xideq_hostile(a xid, b integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM owner_s.hostile('watch(): =(xid, integer) in owner_s');
    RETURN pg_catalog.xideqint4(a, b);
END $$;
CREATE OPERATOR owner_s.= (LEFTARG = xid, RIGHTARG = integer, FUNCTION = owner_s.xideq_hostile);
CREATE FUNCTION owner_s.regclass_oid_hostile(a regclass, b oid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM owner_s.hostile('watch()/unwatch(): =(regclass, oid) in owner_s');
    RETURN pg_catalog.oideq(a::oid, b);
END $$;
CREATE OPERATOR owner_s.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = owner_s.regclass_oid_hostile);
});
{
	my ($ret, $out, $err) = as_try('owner_r', q{SET search_path = owner_s, pg_catalog;
SELECT wtcache.watch('owner_s.plain2');});
	note("watch() as owner_r: exit $ret $err");
}
server_survived('watch() with =(xid, integer) in owner_s');
no_escalation('watch() with =(xid, integer) in owner_s');
{
	my ($ret, $out, $err) = as_try('owner_r', q{SET search_path = owner_s, pg_catalog;
SELECT wtcache.unwatch('owner_s.plain2');});
	note("unwatch() as owner_r: exit $ret $err");
}
as_ok('owner_r', q{
DROP OPERATOR owner_s.= (xid, integer);
DROP OPERATOR owner_s.= (regclass, oid);
DROP TABLE owner_s.plain2;
});
after_vector('unwatch() with =(regclass, oid) in owner_s');

############################################################################
# Vector 2: cache poisoning by a reader
############################################################################

# Redis holds no value for the key, or the true row.
sub redis_row_true
{
	my ($table, $id, $what) = @_;
	my $value = redis_cmd($rp, 'GET', redis_key_of($node, $db, $table, $id));
	my $truth = row_json($node, $db, $table, "id = $id");
	my ($v, $rest) = redis_row_version($value);
	my $ok = !defined $value || (defined $v && '{' . $rest eq $truth);
	ok($ok, "$what: Redis holds the true row of $table $id, or nothing")
	  or diag("redis: " . ($value // '(nil)') . "\ntable: $truth");
	return;
}

# The superuser's cached reads of these keys work and return the true rows.
sub reads_true
{
	my ($what, @ids) = @_;
	for my $id (@ids)
	{
		my ($ret, $out, $err) = $node->psql($db,
			qq{SELECT wtcache.get('public.accounts', '$id')->>'owner'});
		is("$ret|$out", "0|owner $id", "$what: get() of accounts $id as superuser returns the true row")
		  or diag($err);
	}
	my $arr = join(',', @ids);
	my ($ret, $out, $err) = $node->psql($db,
		qq{SELECT string_agg(row->>'owner', ',' ORDER BY key[1]::int) FROM wtcache.get_many('public.accounts', '{$arr}')});
	is("$ret|$out", '0|' . join(',', map { "owner $_" } sort { $a <=> $b } @ids),
		"$what: get_many() as superuser returns the true rows")
	  or diag($err);
	return;
}

sub cold
{
	redis_cmd($rp, 'DEL', redis_key_of($node, $db, 'public.accounts', $_)) for @_;
	return;
}

my $reader_path = 'SET search_path = reader_schema, public, pg_catalog;';

# forged JSON from an exact-type row_to_json()
as_ok('reader_r', q{
CREATE FUNCTION reader_schema.row_to_json(r public.accounts) RETURNS json
LANGUAGE sql AS $$ SELECT json_build_object('id', r.id, 'owner', 'FORGED', 'balance', 1000000) $$;
});
cold(1, 2, 3);
as_try('reader_r', "$reader_path SELECT wtcache.get('public.accounts', '1')");
as_try('reader_r', "$reader_path SELECT * FROM wtcache.get_many('public.accounts', '{2,3}')");
redis_row_true('public.accounts', $_, 'poisoning: forged row_to_json()') for 1 .. 3;
reads_true('poisoning: forged row_to_json()', 1, 2, 3);

# a row_to_json() that returns text that is not JSON
as_ok('reader_r', q{
DROP FUNCTION reader_schema.row_to_json(public.accounts);
CREATE FUNCTION reader_schema.row_to_json(r public.accounts) RETURNS text
LANGUAGE sql AS $$ SELECT 'this is not json' $$;
});
cold(4, 5);
as_try('reader_r', "$reader_path SELECT wtcache.get('public.accounts', '4')");
as_try('reader_r', "$reader_path SELECT * FROM wtcache.get_many('public.accounts', '{5}')");
redis_row_true('public.accounts', $_, 'poisoning: row_to_json() that is not JSON') for 4, 5;
reads_true('poisoning: row_to_json() that is not JSON', 4, 5);
as_ok('reader_r', q{DROP FUNCTION reader_schema.row_to_json(public.accounts)});

# an =(integer, integer) that is true for every pair: a fill of one key
# could store another row
as_ok('reader_r', q{
CREATE FUNCTION reader_schema.int4_all(a integer, b integer) RETURNS boolean
LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR reader_schema.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = reader_schema.int4_all);
});
cold(6, 7, 8);
as_try('reader_r', "$reader_path SELECT wtcache.get('public.accounts', '6')");
as_try('reader_r', "$reader_path SELECT * FROM wtcache.get_many('public.accounts', '{7,8}')");
redis_row_true('public.accounts', $_, 'poisoning: =(integer, integer) always true') for 6 .. 8;
reads_true('poisoning: =(integer, integer) always true', 6, 7, 8);
as_ok('reader_r', q{DROP OPERATOR reader_schema.= (integer, integer); DROP FUNCTION reader_schema.int4_all(integer, integer)});
after_vector('cache poisoning by a reader');

############################################################################
# Vector 8: query() and session state (one role, two tenants)
############################################################################

as_ok('owner_r', q{
CREATE TABLE owner_s.tenant_rows (id int PRIMARY KEY, tenant text NOT NULL, v text);
INSERT INTO owner_s.tenant_rows VALUES (1, 'a', 'a1'), (2, 'a', 'a2'), (3, 'a', 'a3'), (4, 'b', 'b1'), (5, 'b', 'b2');
SELECT wtcache.watch('owner_s.tenant_rows');
CREATE VIEW owner_s.my_rows AS
    SELECT id, tenant, v FROM owner_s.tenant_rows WHERE tenant = current_setting('app.tenant');
});
ok(wait_drained($node, $db), 'tenants: rows delivered');
for my $q (
	q{SELECT id, tenant FROM owner_s.my_rows ORDER BY id},
	q{SELECT id, tenant FROM owner_s.tenant_rows WHERE tenant = current_setting('app.tenant') ORDER BY id})
{
	my $ql = quote_lit($q);
	my $call = qq{SELECT coalesce(string_agg(q->>'tenant', ',' ORDER BY (q->>'id')::int), '') FROM wtcache.query($ql) q};
	my ($ra, $oa) = as_try('owner_r', "SET app.tenant = 'a'; $call; $call");
	note("tenant a: exit $ra, '$oa'");
	my ($rb, $ob, $eb) = as_try('owner_r', "SET app.tenant = 'b'; $call");
	ok($rb != 0 || $ob eq 'b,b', "tenants: tenant b gets only its own rows, or a refusal ($q)")
	  or diag("tenant b got '$ob' $eb");
}
after_vector('query() across tenants');

############################################################################
# Vector 6: any role filling Redis
############################################################################

for my $set (
	q{SET wtcache.query_max_size = '8MB'},
	q{SET wtcache.query_ttl = '1900000000'},
	q{SELECT set_config('wtcache.query_ttl', '1900000000', false)},
	q{ALTER ROLE reader_r SET wtcache.query_max_size = '8MB'})
{
	my ($ret, $out, $err) = as_try('reader_r', $set);
	isnt($ret, 0, "redis memory: a plain role cannot run $set");
}
sql('ALTER ROLE reader_r RESET ALL');
{
	my $before = redis_cmd($rp, 'DBSIZE');
	my ($ret, $out, $err) = as_try('reader_r',
		q{SELECT wtcache.invalidate(array_agg('flood:' || i)) FROM generate_series(1, 100000) i});
	note("invalidate() of 100,000 tags: exit $ret $err");
	wait_drained($node, $db, '30s');
	my $grown = redis_cmd($rp, 'DBSIZE') - $before;
	cmp_ok($grown, '<', 100000, 'redis memory: invalidate() of 100,000 new tags does not make 100,000 keys');
}
after_vector('settings and invalidate() that fill Redis');

############################################################################
# Vector 1c: key types, domains and index expressions run by wtcache
############################################################################

# Run something that must not run hostile code as a superuser, then check.
sub step
{
	my ($what, $role, $sql) = @_;
	my ($ret, $out, $err) = as_try($role, $sql);
	note("$what: exit $ret $err");
	server_survived($what);
	no_escalation($what);
	return;
}

as_ok('owner_r', q{
CREATE TYPE owner_s.mood AS ENUM ('sad', 'ok', 'happy');
CREATE FUNCTION owner_s.mood_text(m owner_s.mood) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM owner_s.hostile('cast (mood AS text)');
    RETURN pg_catalog.format('%s', m);
END $$;
CREATE FUNCTION owner_s.text_mood(t text) RETURNS owner_s.mood LANGUAGE plpgsql AS $$
DECLARE r owner_s.mood;
BEGIN
    PERFORM owner_s.hostile('cast (text AS mood)');
    SELECT e INTO r FROM pg_catalog.unnest(pg_catalog.enum_range(NULL::owner_s.mood)) AS e
     WHERE pg_catalog.format('%s', e) OPERATOR(pg_catalog.=) t;
    RETURN r;
END $$;
CREATE CAST (owner_s.mood AS text) WITH FUNCTION owner_s.mood_text(owner_s.mood);
CREATE CAST (text AS owner_s.mood) WITH FUNCTION owner_s.text_mood(text);
CREATE TABLE owner_s.moods (k owner_s.mood PRIMARY KEY, v text);
INSERT INTO owner_s.moods VALUES ('sad', 'a'), ('ok', 'b');

CREATE FUNCTION owner_s.code_ok(v text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM owner_s.hostile('domain CHECK constraint');
    RETURN true;
END $$;
CREATE DOMAIN owner_s.code AS text CHECK (owner_s.code_ok(VALUE));
CREATE TABLE owner_s.coded (k owner_s.code PRIMARY KEY, v text);
INSERT INTO owner_s.coded VALUES ('c1', 'a'), ('c2', 'b');

CREATE FUNCTION owner_s.imm(i integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM owner_s.hostile('index expression');
    RETURN i;
END $$;
CREATE FUNCTION owner_s.imm_pred(b boolean) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT owner_s.hostile('partial index predicate') AND b
$$;
CREATE TABLE owner_s.indexed (id int PRIMARY KEY, v text);
CREATE INDEX indexed_expr ON owner_s.indexed ((id + owner_s.imm(0)));
CREATE INDEX indexed_pred ON owner_s.indexed (v) WHERE v IS NOT NULL OR owner_s.imm_pred(false);
INSERT INTO owner_s.indexed VALUES (1, 'a'), (2, 'b');
});
# what ran while the owner set it up ran as the owner: not a finding
no_escalation('key types: setup');

# The backend paths, with delivery paused so that the worker runs nothing.
ok(set_delivery_paused($node, $db, 1), 'key types: delivery paused');
step('watch(warm => true) of an enum key with casts', 'owner_r',
	q{SELECT wtcache.watch('owner_s.moods', warm => true)});
step('warm() of an enum key with casts', 'owner_r', q{SELECT wtcache.warm('owner_s.moods')});
step('resync() of an enum key with casts', 'owner_r', q{SELECT wtcache.resync('owner_s.moods')});
step('DDL requeue (RENAME) of an enum key with casts', 'owner_r',
	q{ALTER TABLE owner_s.moods RENAME TO moods_r});
step('watch(warm => true) of a domain key', 'owner_r',
	q{SELECT wtcache.watch('owner_s.coded', warm => true)});
step('watch(warm => true) of a table with hostile index expressions', 'owner_r',
	q{SELECT wtcache.watch('owner_s.indexed', warm => true)});
step('resync() of a table with hostile index expressions', 'owner_r',
	q{SELECT wtcache.resync('owner_s.indexed')});

# The worker: the rows queued above, then plain changes.
set_delivery_paused($node, $db, 0);
ok(wait_drained($node, $db, '30s'), 'key types: the queued rows are delivered');
step('the worker delivering the queued rows', 'owner_r', 'SELECT 1');
as_ok('owner_r', q{
INSERT INTO owner_s.moods_r VALUES ('happy', 'c');
UPDATE owner_s.moods_r SET v = 'a2' WHERE k = 'sad';
INSERT INTO owner_s.coded VALUES ('c3', 'c');
UPDATE owner_s.coded SET v = 'a2' WHERE k = 'c1';
INSERT INTO owner_s.indexed VALUES (3, 'c');
UPDATE owner_s.indexed SET v = 'a2' WHERE id = 1;
});
ok(wait_drained($node, $db, '30s'), 'key types: the changes are delivered');
step('the worker delivering INSERTs and UPDATEs', 'owner_r', 'SELECT 1');

step('verify() of an enum key with casts', 'owner_r', q{SELECT count(*) FROM wtcache.verify('owner_s.moods_r')});
step('verify() of a domain key', 'owner_r', q{SELECT count(*) FROM wtcache.verify('owner_s.coded')});
step('verify() of a table with hostile index expressions', 'owner_r',
	q{SELECT count(*) FROM wtcache.verify('owner_s.indexed')});
as_ok('owner_r', q{
DROP TABLE owner_s.moods_r, owner_s.coded, owner_s.indexed;
DROP CAST (owner_s.mood AS text);
DROP CAST (text AS owner_s.mood);
});

# The worker's search_path holds public, where creator_r may create: an
# operator on its own key type, and a row_to_json() of a table it cannot
# even read.
as_ok('creator_r', q{
CREATE TYPE public.cmood AS ENUM ('x', 'y', 'z');
CREATE FUNCTION public.cmood_eq(a public.cmood, b public.cmood) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.hostile('=(cmood, cmood) in public');
    RETURN pg_catalog.enum_eq(a, b);
END $$;
CREATE OPERATOR public.= (LEFTARG = public.cmood, RIGHTARG = public.cmood, FUNCTION = public.cmood_eq);
CREATE TABLE public.creator_t (k public.cmood PRIMARY KEY, v text);
});
as_try('creator_r', q{SELECT wtcache.watch('public.creator_t')});
as_ok('creator_r', q{INSERT INTO public.creator_t VALUES ('x', 'a'), ('y', 'b')});
ok(wait_drained($node, $db, '30s'), 'key types: creator_t delivered');
step('the worker comparing keys with =(cmood, cmood) from public', 'creator_r', 'SELECT 1');

as_ok('creator_r', q{
CREATE FUNCTION public.row_to_json(r public.victim) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.hostile('row_to_json(victim) in public');
    RETURN pg_catalog.json_build_object('id', r.id, 'val', 'FORGED', 'note', NULL);
END $$;
});
sql(q{UPDATE public.victim SET val = 'changed under a forged row_to_json' WHERE id = 2});
ok(wait_drained($node, $db, '30s'), 'key types: victim change delivered');
# dropped before anything of the test's own renders a victim row
as_ok('creator_r', q{DROP FUNCTION public.row_to_json(public.victim)});
step('the worker rendering victim rows with a row_to_json() from public', 'creator_r', 'SELECT 1');
compare_table_ok($node, $db, 'public.victim', $rp,
	'key types: no forged row of public.victim reached Redis');
as_ok('creator_r', q{
DROP TABLE public.creator_t;
DROP OPERATOR public.= (public.cmood, public.cmood);
DROP FUNCTION public.cmood_eq(public.cmood, public.cmood);
DROP TYPE public.cmood;
});
after_vector('key types, domains and index expressions');

############################################################################
# Vector 4: delivery stopped, or a change hidden, by a writer
############################################################################

{
	my ($ret, $out, $err) = as_try('writer_r',
		q{SELECT wtcache._capture_when('public.victim'::regclass, 'u', 'not-a-number'::text, 'nan'::text);
		  SELECT wtcache._capture_when('public.victim'::regclass, 'i', 'not-a-number'::text);},
		on_error_stop => 0);
	note("_capture_when with a text value for a bigint key: exit $ret $err");
}
after_vector('_capture_when() with a value that is not a bigint');

{
	# the UPDATE commits whether the call is refused or not
	my ($ret, $out, $err) = as_try('writer_r', q{\set ON_ERROR_ROLLBACK on
BEGIN;
SELECT wtcache._capture_when('public.victim'::regclass, 'i', 1::bigint, 2::bigint);
UPDATE public.victim SET val = 'real update';
COMMIT;}, on_error_stop => 0);
	note("_capture_when with two values for a one-column key, then a real UPDATE: exit $ret $err");
	is(sql(q{SELECT count(*) FROM public.victim WHERE val = 'real update'}), '9',
		'hidden change: (precondition) the real UPDATE committed');
	ok(wait_drained($node, $db, '15s'), 'hidden change: delivery goes on');
	my ($r2, $got) = $node->psql($db, q{SELECT wtcache.get('public.victim', '1')->>'val'});
	is($got, 'real update', 'hidden change: get() returns the real UPDATE after wait()');
	compare_table_ok($node, $db, 'public.victim', $rp, 'hidden change: Redis has the real UPDATE');
}
after_vector('_capture_when() with two values for a one-column key');

############################################################################
# Vector 3: a crash by any writer through _capture_when_tagged()
############################################################################

for my $templates ("ARRAY['{0}']", "ARRAY['{}']", "ARRAY['{-1}']", "ARRAY['{2}']",
	"ARRAY['{99999}']", "ARRAY[NULL, 'a{1}']::text[]", "ARRAY['{1']", "ARRAY['{1}{0}x']")
{
	my ($ret, $out, $err) = as_try('writer_r', qq{BEGIN;
SELECT wtcache._capture_when_tagged('public.victim'::regclass, 'i', 1::int2, $templates, 1::bigint, 'x'::text);
ROLLBACK;});
	note("_capture_when_tagged with templates $templates: exit $ret $err");
	server_survived("_capture_when_tagged() with templates $templates");
}
after_vector('_capture_when_tagged() with malformed templates');

############################################################################

ok(index(slurp_file($node->logfile), $pw) < 0, 'the server log never shows the Redis password');

eval { $keeper->quit; };
$node->stop;
done_testing();
