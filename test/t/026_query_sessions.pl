# Cached query results are never shared between sessions that could see
# different rows.  Sessions of one role differ in their settings (the
# multi-tenant app.tenant, TimeZone, DateStyle, extra_float_digits...), in
# their session user, in their temporary tables and in time; wtcache.query()
# either gives each of them what running the query there gives, or refuses
# the query.  Every check here that a session does not get another's result
# failed before query() learnt which functions read session state.
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
my $node = new_wtcache_node('query_sessions', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# one new session: ($stdout, $stderr) of the statements
sub session
{
	my ($stmts) = @_;
	my ($ret, $out, $err) = $node->psql($db, $stmts,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}

sub runs { return sql(q{SELECT runs FROM wtcache.query_stats()}); }

sql(q{
CREATE ROLE app LOGIN;
CREATE ROLE alice LOGIN IN ROLE app;
CREATE ROLE bob LOGIN IN ROLE app;
CREATE TABLE account (id int PRIMARY KEY, tenant text NOT NULL, v text NOT NULL);
SELECT wtcache.watch('account');
INSERT INTO account VALUES (1, 'a', 'secret of a'), (2, 'a', 'more of a'), (3, 'b', 'of b');
CREATE VIEW tenant_account AS SELECT id, v FROM account WHERE tenant = current_setting('app.tenant');
GRANT SELECT ON account, tenant_account TO app;
});
ok(wait_drained($node, $db), 'rows delivered');

#### one role, several tenants: app.tenant

my $vq = q{SELECT string_agg(q->>'v', ',') FROM wtcache.query('SELECT v FROM tenant_account ORDER BY id') q};
my ($a1, $a1err) = session("SET ROLE app; SET app.tenant = 'a'; $vq");
my ($b1, $b1err) = session("SET ROLE app; SET app.tenant = 'b'; $vq");
unlike($b1, qr/of a/, 'through a view on current_setting(app.tenant), tenant b never gets tenant a\'s rows');
like($b1err, qr/0A000.*current_setting\(text\).*view "tenant_account".*HINT:.*parameter.*\$1/s,
	'... the query is refused, naming the function, the view and the way out');
like($a1err, qr/0A000.*current_setting/s, '... for tenant a too');

my $dq = q{SELECT string_agg(q->>'v', ',') FROM wtcache.query('SELECT v FROM account WHERE tenant = current_setting(''app.tenant'') ORDER BY id') q};
session("SET ROLE app; SET app.tenant = 'a'; $dq");
my ($b2, $b2err) = session("SET ROLE app; SET app.tenant = 'b'; $dq");
unlike($b2, qr/of a/, 'current_setting(app.tenant) in the query text: tenant b never gets a\'s rows');
like($b2err, qr/0A000.*current_setting/s, '... refused');

# the way that is cached: the tenant as a parameter
my $pq = q{SELECT string_agg(q->>'v', ',') FROM wtcache.query('SELECT v FROM account WHERE tenant = $1 ORDER BY id', ARRAY[current_setting('app.tenant')]) q};
is((session("SET ROLE app; SET app.tenant = 'a'; $pq"))[0], 'secret of a,more of a', 'the tenant as $1: a gets its rows');
is((session("SET ROLE app; SET app.tenant = 'b'; $pq"))[0], 'of b', '... b its own');
my $runs0 = runs();
is((session("SET ROLE app; SET app.tenant = 'a'; $pq"))[0], 'secret of a,more of a', '... again');
is((session("SET ROLE app; SET app.tenant = 'b'; $pq"))[0], 'of b', '... again');
is(runs() - $runs0, 0, '... both served from Redis');

#### the session user differs between sessions of one role

my $sq = q{SELECT q->>'s' FROM wtcache.query('SELECT session_user AS s, count(*) AS n FROM account') q};
sub as_user
{
	my ($user, $stmts) = @_;
	my ($ret, $out, $err) = $node->psql($db, $stmts, connstr => $node->connstr($db) . " user=$user",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	return ($out, $err);
}
as_user('bob', "SET ROLE app; $sq");
my ($s1, $s1err) = as_user('alice', "SET ROLE app; $sq");
isnt($s1, 'bob', 'SESSION_USER: alice, as app, never gets the session user of bob\'s session');
like($s1err, qr/0A000.*SESSION_USER/s, '... refused');

# CURRENT_USER is the role the entry is kept for: cached, per role
my $cq = q{SELECT q->>'u' FROM wtcache.query('SELECT current_user AS u, count(*) AS n FROM account') q};
is((session("SET ROLE alice; $cq"))[0], 'alice', 'CURRENT_USER is cached per role: alice');
is((session("SET ROLE bob; $cq"))[0], 'bob', '... bob');
$runs0 = runs();
is((session("SET ROLE alice; $cq"))[0], 'alice', '... alice again');
is(runs() - $runs0, 0, '... from Redis');

#### temporary tables are per session

my $tq = q{SELECT string_agg(q->>'x', ',') FROM wtcache.query('SELECT x FROM tmp', ttl => '1 minute') q};
session("CREATE TEMP TABLE tmp (x text); INSERT INTO tmp VALUES ('first session'); $tq");
my ($t2, $t2err) = session("CREATE TEMP TABLE tmp (x text); INSERT INTO tmp VALUES ('second session'); $tq");
unlike($t2, qr/first session/, 'a temporary table of the same name in another session: never the first one\'s rows');
like($t2err, qr/0A000.*temporary table "tmp"/s, '... refused');

#### privileges read by has_table_privilege() are not the same tomorrow

sql(q{CREATE TABLE secret (id int PRIMARY KEY); SELECT wtcache.watch('secret')});
my $hq = q{SELECT q->>'p' FROM wtcache.query('SELECT has_table_privilege(''secret'', ''SELECT'') AS p, count(*) AS n FROM account') q};
session("SET ROLE app; $hq");
sql(q{GRANT SELECT ON secret TO app});
my ($h2, $h2err) = session("SET ROLE app; $hq");
isnt($h2, 'false', 'has_table_privilege() after a GRANT: never the answer from before it');
like($h2err, qr/0A000.*has_table_privilege/s, '... refused');

#### time: now() and 'now' are never served stale

sql(q{
CREATE TABLE offer (id int PRIMARY KEY, ends timestamptz NOT NULL);
SELECT wtcache.watch('offer');
INSERT INTO offer VALUES (1, clock_timestamp() + interval '1 second');
});
ok(wait_drained($node, $db), 'delivered');
my $ends = sql(q{SELECT ends FROM offer WHERE id = 1});
my $nq = q{SELECT count(*) FROM wtcache.query('SELECT id FROM offer WHERE ends > now()') q};
my $lq = q{SELECT count(*) FROM wtcache.query('SELECT id FROM offer WHERE ends > ''now''::timestamptz') q};
my ($n1) = session($nq);
my ($l1) = session($lq);
is($l1, '1', 'the offer is open (the \'now\' literal)');
ok($node->poll_query_until($db, "SELECT clock_timestamp() > '$ends'"), 'the offer has ended');
my ($n2, $n2err) = session($nq);
my ($l2, $l2err) = session($lq);
isnt($n2, '1', 'now(): an ended offer is never served from before its end');
like($n2err, qr/0A000.*now\(\).*clock/s, '... refused');
is($l2, '0', 'a \'now\' literal (parsed into a constant) is not served stale either');
is($l2err, '', '... and needs no refusal: the constant is part of the key');

#### settings that change how values are read and rendered

sql(q{
CREATE TABLE ev (id int PRIMARY KEY, at timestamptz NOT NULL, d interval NOT NULL,
                 f float8 NOT NULL, b bytea NOT NULL, day date NOT NULL);
SELECT wtcache.watch('ev');
INSERT INTO ev VALUES (1, '2024-01-01 12:00:00+00', '1 day 02:03:04', 0.1::float8 + 0.2::float8, '\x00ff', '2024-03-04');
});
ok(wait_drained($node, $db), 'delivered');
my $eq = q{SELECT wtcache.query('SELECT *, at::text AS at_text, day::text AS day_text FROM ev')::text};
my $direct = q{SELECT (to_jsonb(e) || jsonb_build_object('at_text', at::text, 'day_text', day::text))::text FROM ev e};
my @settings = (
	q{SET TimeZone = 'UTC'},
	q{SET TimeZone = 'Asia/Tokyo'},
	q{SET DateStyle = 'SQL, DMY'},
	q{SET IntervalStyle = 'iso_8601'},
	q{SET extra_float_digits = 0},
	q{SET bytea_output = 'escape'});
for my $set (@settings)
{
	my ($got) = session("$set; $eq");
	my ($want) = session("$set; $direct");
	is($got, $want, "$set: query() renders as the session does");
}
$runs0 = runs();
for my $set (@settings)
{
	my ($got) = session("$set; $eq");
	my ($want) = session("$set; $direct");
	is($got, $want, "$set: again");
}
is(runs() - $runs0, 0, '... each served from its own entry');

# values read in the session's settings: a parameter and a literal
my $cut = q{SELECT q->>'n' FROM wtcache.query('SELECT count(*) AS n FROM ev WHERE at < $1', ARRAY['2024-01-01 15:00'])};
my $lit = q{SELECT q->>'n' FROM wtcache.query('SELECT count(*) AS n FROM ev WHERE at < ''2024-01-01 15:00''')};
is((session("SET TimeZone = 'UTC'; $cut q"))[0], '1', 'a timestamptz parameter read in UTC');
is((session("SET TimeZone = 'Asia/Tokyo'; $cut q"))[0], '0', '... and in Tokyo, from the same text: another instant');
is((session("SET TimeZone = 'UTC'; $lit q"))[0], '1', 'a timestamptz literal read in UTC');
is((session("SET TimeZone = 'Asia/Tokyo'; $lit q"))[0], '0', '... and in Tokyo');
is((session("SET DateStyle = 'ISO, MDY'; SELECT q->>'n' FROM wtcache.query('SELECT count(*) AS n FROM ev WHERE day = \$1', ARRAY['03/04/2024']) q"))[0],
	'1', 'a date parameter read as month/day');
is((session("SET DateStyle = 'ISO, DMY'; SELECT q->>'n' FROM wtcache.query('SELECT count(*) AS n FROM ev WHERE day = \$1', ARRAY['03/04/2024']) q"))[0],
	'0', '... and as day/month');

#### a function the DBA marks safe

sql(q{CREATE FUNCTION account_count(text) RETURNS bigint STABLE LANGUAGE sql
      AS $$ SELECT count(*) FROM account WHERE tenant = $1 $$});
my $fq = q{SELECT q->>'n' FROM wtcache.query('SELECT account_count($1) AS n', ARRAY['a'], tags => ARRAY['accounts']) q};
my (undef, $ferr) = session($fq);
like($ferr, qr/0A000.*account_count\(text\).*STABLE.*HINT:.*public\.account_count\(text\).*wtcache\.query_safe_functions/s,
	'a STABLE SQL function is opaque: refused, with the entry that would mark it safe');
my (undef, $serr) = session(q{SET ROLE app; SET wtcache.query_safe_functions = 'public.account_count'});
like($serr, qr/42501.*wtcache\.query_safe_functions/s, 'only a superuser marks functions safe');
sql(q{ALTER DATABASE postgres SET wtcache.query_safe_functions = 'public.account_count(text)'});
is((session($fq))[0], '2', 'marked safe by its signature: accepted');
$runs0 = runs();
is((session($fq))[0], '2', '... and cached');
is(runs() - $runs0, 0, '... served from Redis');
sql(q{ALTER DATABASE postgres SET wtcache.query_safe_functions = 'public.account_count'});
is((session($fq))[0], '2', 'marked safe by its name');

$node->stop;
$redis->stop;
done_testing();
