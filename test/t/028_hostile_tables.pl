# Hostile tables: what a table's owner (or a role with CREATE on a schema)
# can make the worker, the key lookup, set-aside and the wait() fence do
# with the objects it controls.  Found by a hostile review of issue 13's
# work (d3633e8) and of the fence handshake (ef7affc); each section is one
# finding: the attack or the situation, then the invariant it breaks.
# Every section repairs what it broke, so that the next is judged alone.
#
#   creator_r  CREATE on schema public
#   owner_r    owns schema owner_s and the tables in it
#   reader_r   SELECT on public.users only
#
# "Delivery goes on" is judged by a change of public.victim reaching Redis,
# not by wait(): wait() skips set-aside rows (section G questions that).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;

# Redis refuses arguments over 1 MB here (512 MB by default): section I
my $redis = start_redis(args => [ '--proto-max-bulk-len', '1mb' ]);
my $rp = $redis->port;
# ... and wtcache.max_value_size says so, as a DBA who lowers it must
my $node = new_wtcache_node('review', redis_port => $rp,
	extra_conf => "autovacuum = off\nwtcache.max_value_size = '1MB'\n");
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub as_ok
{
	my ($role, $q) = @_;
	return $node->safe_psql($db, $q, extra_params => [ '-U', $role ]);
}

sub as_try
{
	my ($role, $q) = @_;
	my ($ret, $out, $err) = $node->psql($db, $q, extra_params => [ '-U', $role ], timeout => 120);
	return ($ret // -1, $out // '', $err // '');
}

sql(q{
CREATE ROLE creator_r LOGIN;
CREATE ROLE owner_r LOGIN;
CREATE ROLE reader_r LOGIN;
GRANT CREATE ON SCHEMA public TO creator_r;
CREATE SCHEMA owner_s AUTHORIZATION owner_r;

CREATE TABLE public.evidence (id bigserial PRIMARY KEY, ctx text, who text, su boolean);
GRANT INSERT ON public.evidence TO PUBLIC;
GRANT USAGE ON SEQUENCE public.evidence_id_seq TO PUBLIC;

CREATE TABLE public.victim (id int PRIMARY KEY, note text);
INSERT INTO public.victim SELECT i, 'n' || i FROM generate_series(1, 5) i;
SELECT wtcache.watch('public.victim', warm => true);
});

# creator_r's probe: records who runs it, tries to become a superuser
as_ok('creator_r', q{
CREATE FUNCTION public.hostile(ctx text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    BEGIN
        INSERT INTO public.evidence (ctx, who, su)
        SELECT ctx, current_user, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        EXECUTE 'ALTER ROLE creator_r SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN true;
END $f$;
});
ok(wait_drained($node, $db), 'setup delivered');

my $last_evidence = 0;

# creator_r is no superuser and its probe never ran as one; repairs after.
sub no_escalation
{
	my ($what) = @_;
	is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'creator_r'}), 'f',
		"$what: creator_r did not become a superuser");
	is(sql(qq{SELECT coalesce(string_agg(ctx || ' as ' || who, '; '), '')
	          FROM public.evidence WHERE id > $last_evidence AND su}), '',
		"$what: creator_r's code never ran as a superuser");
	note("$what: creator_r's code ran: "
		  . sql(qq{SELECT coalesce(string_agg(ctx || ' as ' || who, '; '), 'never')
		           FROM public.evidence WHERE id > $last_evidence}));
	$last_evidence = sql('SELECT coalesce(max(id), 0) FROM public.evidence');
	sql('ALTER ROLE creator_r NOSUPERUSER');
	return;
}

# A change of public.victim reaches Redis within 20 s.
my $tick = 0;

sub delivery_goes_on
{
	my ($what) = @_;
	$tick++;
	sql("UPDATE public.victim SET note = 'tick $tick' WHERE id = 1");
	my $key = redis_key_of($node, $db, 'public.victim', '1');
	my $deadline = time() + 20;
	my $value;
	while (time() < $deadline)
	{
		$value = redis_cmd($rp, 'GET', $key);
		last if defined $value && $value =~ /"tick $tick"/;
		usleep(100_000);
	}
	ok(defined $value && $value =~ /"tick $tick"/, "$what: delivery of other tables goes on")
	  or diag('victim 1 in Redis: ' . ($value // '(nil)') . "\n"
		  . sql(q{SELECT string_agg(table_name || ' ' || worker_state || ' ' || coalesce(worker_last_error, ''), E'\n') FROM wtcache.status}));
	return;
}

############################################################################
# A. The key index's operator is named by its schema, not by its types.
# A domain over citext (citext_ops lives in public): in public, creator_r
# adds "=(email, citext)", an exact match for "t.e OPERATOR(public.=)
# k.c0".  The worker runs it as the table's owner (here a superuser),
# get() fills Redis with what it says, verify() runs it as the owner.
############################################################################

sql(q{
CREATE EXTENSION citext;
CREATE DOMAIN public.email AS public.citext;
CREATE TABLE public.users (e public.email PRIMARY KEY, v text NOT NULL);
INSERT INTO public.users VALUES ('a@x', 'A'), ('b@x', 'B'), ('c@x', 'C');
GRANT SELECT ON public.users TO reader_r;
SELECT wtcache.watch('public.users', warm => true);
});
ok(wait_drained($node, $db), 'A: users delivered');
as_ok('creator_r', q{
CREATE FUNCTION public.email_eq(a public.email, b public.citext) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.hostile('=(email, citext) in public');
    RETURN pg_catalog.lower(a::pg_catalog.text) OPERATOR(pg_catalog.=) 'a@x';
END $$;
CREATE OPERATOR public.= (LEFTARG = public.email, RIGHTARG = public.citext, FUNCTION = public.email_eq);
});
sql(q{UPDATE public.users SET v = 'B2' WHERE v = 'B'});
ok(wait_drained($node, $db), 'A: the change of b@x is delivered');
redis_cmd($rp, 'DEL', redis_key_of($node, $db, 'public.users', 'c@x'));
as_try('reader_r', q{SELECT wtcache.get('public.users', 'c@x')});
$node->psql($db, q{SELECT count(*) FROM wtcache.verify('public.users')});
as_ok('creator_r', q{DROP OPERATOR public.= (public.email, public.citext); DROP FUNCTION public.email_eq(public.email, public.citext)});
no_escalation('A: =(email, citext) in public');
compare_table_ok($node, $db, 'public.users', $rp, 'A: no forged row of public.users in Redis');
sql(q{SELECT wtcache.resync('public.users')});
ok(wait_drained($node, $db), 'A: repaired');

############################################################################
# B. SQL wtcache runs in the caller's session with the caller's
# search_path: is_watched() on every ALTER TABLE (ddl.c), watch()'s look at
# wtcache.watched, query()'s.  "rel = $1" is regclass = oid, and
# creator_r's =(regclass, oid) in public is an exact match: a DBA's
# ALTER TABLE, watch() or query() runs it as a superuser.
############################################################################

as_ok('creator_r', q{
CREATE FUNCTION public.regclass_oid_eq(a regclass, b oid) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.hostile('=(regclass, oid) in public');
    RETURN a::pg_catalog.oid OPERATOR(pg_catalog.=) b;
END $$;
CREATE OPERATOR public.= (LEFTARG = regclass, RIGHTARG = oid, FUNCTION = public.regclass_oid_eq);
});
sql(q{CREATE TABLE public.scratch (id int PRIMARY KEY)});
$node->psql($db, q{ALTER TABLE public.scratch ADD COLUMN x int});
$node->psql($db, q{SELECT wtcache.watch('public.scratch')});
$node->psql($db, q{SELECT * FROM wtcache.query('SELECT count(*) FROM public.victim')});
as_ok('creator_r', q{DROP OPERATOR public.= (regclass, oid); DROP FUNCTION public.regclass_oid_eq(regclass, oid)});
no_escalation('B: =(regclass, oid) in public, then a DBA runs ALTER TABLE, watch(), query()');
sql(q{DROP TABLE public.scratch});

############################################################################
# C. A table's owner picks the SQLSTATE of an error the worker's read of
# its table raises (an index expression folded when the read is planned,
# here only in the worker): an "internal" one is rethrown instead of
# setting the table aside, and no table of the database is delivered.
############################################################################

as_ok('owner_r', q{
CREATE FUNCTION owner_s.stop_worker(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF pg_catalog.current_setting('application_name') OPERATOR(pg_catalog.=) 'wtcache worker' THEN
        RAISE EXCEPTION 'the owner stops the worker' USING ERRCODE = 'XX000';
    END IF;
    RETURN i;
END $$;
CREATE TABLE owner_s.trap (id int PRIMARY KEY, v text);
CREATE INDEX trap_expr ON owner_s.trap ((id OPERATOR(pg_catalog.+) owner_s.stop_worker(0)));
SELECT wtcache.watch('owner_s.trap');
INSERT INTO owner_s.trap VALUES (1, 'a');
});
delivery_goes_on('C: an owner raising XX000 from its index expression in the worker');
as_ok('owner_r', q{DROP TABLE owner_s.trap});
ok(wait_drained($node, $db), 'C: repaired');

############################################################################
# D. Key types whose index opclass takes a pseudo-type: an array key
# (array_ops, anyarray: the lookup wants an array of the array type, which
# does not exist, and load_table() fails outside the subtransaction) and a
# composite key (record_ops: record_in cannot read an anonymous record).
############################################################################

sql(q{
CREATE TABLE public.arrkey (k int[] PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('public.arrkey');
INSERT INTO public.arrkey VALUES ('{1,2}', 'a'), ('{3}', 'b');
});
delivery_goes_on('D: an array key');
compare_table_ok($node, $db, 'public.arrkey', $rp, 'D: the rows of an array-keyed table reach Redis');
{
	my ($ret, $out, $err) = $node->psql($db, q{SELECT wtcache.get('public.arrkey', '{1,2}')->>'v'});
	is("$ret|$out", '0|a', 'D: get() of an array key') or diag($err);
}
sql(q{DROP TABLE public.arrkey});
ok(wait_drained($node, $db), 'D: repaired after the array key');

sql(q{
CREATE TYPE public.pair AS (a int, b int);
CREATE TABLE public.compkey (k public.pair PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('public.compkey');
INSERT INTO public.compkey VALUES (ROW(1, 2), 'a');
});
delivery_goes_on('D: a composite key');
compare_table_ok($node, $db, 'public.compkey', $rp, 'D: the rows of a composite-keyed table reach Redis');
{
	my ($ret, $out, $err) = $node->psql($db, q{SELECT wtcache.get('public.compkey', '(1,2)')->>'v'});
	is("$ret|$out", '0|a', 'D: get() of a composite key') or diag($err);
}
sql(q{DROP TABLE public.compkey});

############################################################################
# E. A table its owner cannot read outside the batch path: the resync
# after Redis lost its data (worker), and the requeue of ALTER TABLE.
############################################################################

as_ok('owner_r', q{
CREATE TABLE owner_s.mine (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO owner_s.mine SELECT i, 'm' || i FROM generate_series(1, 5) i;
SELECT wtcache.watch('owner_s.mine', warm => true);
});
ok(wait_drained($node, $db), 'E: mine delivered');
as_ok('owner_r', q{REVOKE SELECT ON owner_s.mine FROM owner_r});
redis_cmd($rp, 'FLUSHALL');
# a fence ticket makes the worker check the markers, and find them gone, now
$node->psql($db, q{SELECT wtcache.wait('3s')});
delivery_goes_on('E: Redis lost its data while one table is unreadable to its owner');
as_ok('owner_r', q{GRANT SELECT ON owner_s.mine TO owner_r});
ok(wait_drained($node, $db, '60s'), 'E: repaired after the resync');

as_ok('owner_r', q{
CREATE TABLE owner_s.forced (id int PRIMARY KEY, v text);
INSERT INTO owner_s.forced VALUES (1, 'a');
SELECT wtcache.watch('owner_s.forced');
ALTER TABLE owner_s.forced ENABLE ROW LEVEL SECURITY;
ALTER TABLE owner_s.forced FORCE ROW LEVEL SECURITY;
});
{
	my ($ret, $out, $err) = as_try('owner_r', q{ALTER TABLE owner_s.forced ADD COLUMN extra int});
	is($ret, 0, 'E: ALTER TABLE ADD COLUMN works on a watched FORCE ROW LEVEL SECURITY table, as on an unwatched one')
	  or diag($err);
}
as_ok('owner_r', q{DROP TABLE owner_s.forced});

############################################################################
# F. Keys are compared with the type's equality, not its text: numeric
# 1.0 and 1.00 are equal.  After the key changes spelling, the worker
# pushes the row under its old spelling too, which nothing updates again.
############################################################################

sql(q{
CREATE TABLE public.num (id numeric PRIMARY KEY, v text NOT NULL);
INSERT INTO public.num VALUES (1.0, 'a');
SELECT wtcache.watch('public.num', warm => true);
});
ok(wait_drained($node, $db), 'F: num delivered');
sql(q{UPDATE public.num SET id = 1.00 WHERE v = 'a'});
ok(wait_drained($node, $db), 'F: the new spelling of the key is delivered');
sql(q{UPDATE public.num SET v = 'b' WHERE v = 'a'});
ok(wait_drained($node, $db), 'F: the later change is delivered');
{
	my $got = sql(q{SELECT coalesce(wtcache.get('public.num', '1.0')->>'v', '(none)')});
	isnt($got, 'a', 'F: get() of key 1.0 does not serve the value overwritten by a committed change');
}
compare_table_ok($node, $db, 'public.num', $rp, 'F: no key of an old spelling is left in Redis');
sql(q{DROP TABLE public.num});

############################################################################
# G. wait() says Redis holds everything committed before the call (SPEC
# guarantee 11); it returns true while a change committed before it is
# set aside and Redis still holds the older value.
############################################################################

as_ok('owner_r', q{REVOKE SELECT ON owner_s.mine FROM owner_r});
sql(q{UPDATE owner_s.mine SET v = 'after' WHERE id = 1});
{
	my $waited = sql(q{SELECT wtcache.wait('15s')});
	my $value = redis_cmd($rp, 'GET', redis_key_of($node, $db, 'owner_s.mine', '1')) // '(nil)';
	ok($waited eq 'f' || $value =~ /"after"/,
		'G: when wait() returns true, Redis holds the change committed before the call')
	  or diag("wait() returned $waited; Redis holds $value");
}
as_ok('owner_r', q{GRANT SELECT ON owner_s.mine TO owner_r; SELECT wtcache.retry_set_aside('owner_s.mine')});
ok(wait_drained($node, $db), 'G: repaired');

############################################################################
# H. Set-aside rows of a table that is then dropped: they stay in the
# queue for ever (keeping their pending counters, tags included), and
# make retry_set_aside() with NULL fail for every role but superusers.
############################################################################

as_ok('owner_r', q{
CREATE TABLE owner_s.gone (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO owner_s.gone VALUES (1, 'a');
SELECT wtcache.watch('owner_s.gone', warm => true);
});
ok(wait_drained($node, $db), 'H: gone delivered');
my $gone = sql(q{SELECT 'owner_s.gone'::regclass::oid});
as_ok('owner_r', q{REVOKE SELECT ON owner_s.gone FROM owner_r});
sql(q{UPDATE owner_s.gone SET v = 'b'});
ok($node->poll_query_until($db, qq{SELECT count(*) > 0 FROM wtcache.queue WHERE relid = $gone AND set_aside IS NOT NULL}),
	'H: (precondition) the change is set aside');
as_ok('owner_r', q{DROP TABLE owner_s.gone});
{
	my ($ret, $out, $err) = as_try('owner_r', q{SELECT wtcache.retry_set_aside()});
	is($ret, 0, 'H: retry_set_aside() works for a table owner after a table with set-aside rows was dropped')
	  or diag($err);
}
ok(wait_drained($node, $db), 'H: the drop is delivered');
{
	my $left;
	my $deadline = time() + 20;
	while (time() < $deadline)
	{
		$left = sql(qq{SELECT count(*) FROM wtcache.queue WHERE relid = $gone});
		last if $left eq '0';
		usleep(100_000);
	}
	is($left, '0', 'H: no queue row of the dropped table is left');
}
sql(qq{DELETE FROM wtcache.queue WHERE relid = $gone});

############################################################################
# I. A row Redis refuses (a value over proto-max-bulk-len, 512 MB by
# default, 1 MB here): the batch fails and is sent again for ever, and
# nothing after it is delivered.  Any role that may INSERT does it.
############################################################################

sql(q{
CREATE TABLE public.big (id int PRIMARY KEY, v text);
SELECT wtcache.watch('public.big');
INSERT INTO public.big VALUES (1, repeat('x', 2 * 1024 * 1024));
});
delivery_goes_on('I: a row larger than Redis accepts');
sql(q{DELETE FROM public.big});
ok(wait_drained($node, $db), 'I: repaired');

$node->stop;
done_testing();
