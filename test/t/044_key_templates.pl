# watch(key_template => 'user:{id}') (issue 19 part 2): the application's
# names for a table's rows.  With wtcache.key_prefix = '' a row is at
# user:42, as the application names it.  Under concurrent writers Redis
# equals the table key for key, the keys built here from the table, not by
# wtcache.redis_key(); json and hash formats, a projection, a TTL; get()
# hits, fills under a lease, and a fill that raced with a writer is refused
# (the companions {user:42}:tomb and {user:42}:lease); verify(); events
# name the templated keys and a truncate its template; the application's
# own look-alike keys (user:42:prefs, user:x, usernames) survive TRUNCATE,
# resync, a template change under writers (which leaves no key of the old
# layout) and unwatch, which gives the key space's claim back; two
# databases with one template: the second's changes are set aside with the
# reason, the first's keys stay, and once the first unwatched the second
# delivers; and a 3-master Redis Cluster, where a row's companions are in
# its slot (CLUSTER KEYSLOT).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use WtcacheTest;
use RedisTopology;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('key_templates', redis_port => $rp,
	extra_conf => "wtcache.key_prefix = ''\n");
my $db = 'postgres';

sub sql { my ($q, $d) = @_; return $node->safe_psql($d // $db, $q); }

sub stat_of
{
	my ($t, $col, $d) = @_;
	return sql(qq{SELECT $col FROM wtcache.status WHERE table_name = '$t'::regclass}, $d);
}

# The escaping of a key value in a templated key, in SQL (keyspace.c):
# % : { } as %XX.
sub esc
{
	my ($e) = @_;
	return "replace(replace(replace(replace(($e)::text, '%', '%25'), ':', '%3A'), '{', '%7B'), '}', '%7D')";
}

# compare_templated($node, $db, $table, $key_sql, $pattern, $key_re, %opts):
# every row of the table at the key $key_sql (SQL over the row, alias t)
# renders, holding its row_to_json (columns => [...]: of those columns)
# after "_v" (hash => 1: a hash of the columns' text and "_v"); and no other
# key matching $key_re among those SCAN finds with $pattern.  ports => [...]:
# a Cluster's masters, each key asked of all (one answers).
sub compare_templated
{
	my ($n, $d, $table, $key_sql, $pattern, $key_re, %o) = @_;
	my @ports = @{ $o{ports} // [$rp] };
	my $cols = $o{columns};
	my $rowexpr = $cols
	  ? "(SELECT row_to_json(p) FROM (SELECT " . join(', ', map { "t.$_" } @$cols) . ") p)"
	  : 'row_to_json(t)';
	my $fieldexpr = $cols
	  ? "(SELECT jsonb_strip_nulls(to_jsonb(p)) FROM (SELECT " . join(', ', map { "t.${_}::text AS $_" } @$cols) . ") p)"
	  : undef;
	my $out = $n->safe_psql($d, qq{SET TimeZone = 'UTC';
COPY (SELECT $key_sql, @{[ $o{hash} ? $fieldexpr : $rowexpr ]} FROM $table t) TO STDOUT});
	my %want;
	for (split /\n/, $out)
	{
		my ($k, $v) = split /\t/, $_, 2;
		$v =~ s/\\\\/\\/g;
		$want{$k} = $v;
	}
	my @keys = sort keys %want;
	my @diffs;
	my %got;
	for my $p (@ports)
	{
		my $r = redis_pipeline($p, [ map { [ $o{hash} ? 'HGETALL' : 'GET', $_ ] } @keys ]);
		for my $i (0 .. $#keys)
		{
			next if ref($r->[$i]) && ref($r->[$i]) eq 'WtcacheTest::RedisError';    # MOVED
			$got{ $keys[$i] } = $r->[$i];
		}
	}
	for my $k (@keys)
	{
		my $g = $got{$k};
		if ($o{hash})
		{
			my %h = @{ $g // [] };
			push(@diffs, "missing: $k"), next unless %h;
			push(@diffs, "no _v: $k"), next unless ($h{_v} // '') =~ /^[1-9][0-9]*$/;
			delete $h{_v};
			my $json = '{' . join(', ', map { "\"$_\": \"$h{$_}\"" } sort keys %h) . '}';
			my $w = $want{$k};
			# jsonb's text: members sorted by length, then bytes
			my %wh = $w =~ /"([^"]+)": "((?:[^"\\]|\\.)*)"/g;
			my $same = join("\0", map { "$_=$wh{$_}" } sort keys %wh) eq join("\0", map { "$_=$h{$_}" } sort keys %h);
			push @diffs, "differs: $k: redis $json, table $w" unless $same;
		}
		else
		{
			push(@diffs, "missing: $k"), next unless defined $g;
			my ($v, $rest) = redis_row_version($g);
			push @diffs, "differs: $k: redis $g, table $want{$k}"
			  unless defined $v && '{' . $rest eq $want{$k};
		}
	}
	my %all;
	for my $p (@ports) { $all{$_} = 1 for grep { /$key_re/ } @{ redis_scan_keys($p, $pattern) }; }
	push @diffs, "extra key: $_" for grep { !exists $want{$_} } sort keys %all;
	my $diag = "$table: " . scalar(@keys) . " rows, " . scalar(keys %all) . " keys like $key_re";
	$diag .= "\n  " . join("\n  ", @diffs[ 0 .. ($#diffs > 9 ? 9 : $#diffs) ]) if @diffs;
	return (!@diffs, $diag);
}

sub compare_templated_ok
{
	my ($name, @args) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $diag) = compare_templated(@args);
	ok($ok, $name) or diag($diag);
	return $ok;
}

# the application's own keys, beside and inside the templates' key spaces
my %app = ('user:42:prefs' => 'dark', 'user:x' => 'not a row', 'usernames' => 'ada,bob',
	'user:' => 'empty', 'user:7:' => 'x', 'u:1:extra' => 'y', '{user:x}' => 'z');
sub plant_app_keys { redis_cmd($rp, 'SET', $_, $app{$_}) for keys %app; }
sub app_keys_ok
{
	my ($when) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @lost = grep { (redis_cmd($rp, 'GET', $_) // '') ne $app{$_} } sort keys %app;
	ok(!@lost, "$when: the application's look-alike keys are intact") or diag("lost: @lost");
}

ok(wait_drained($node, $db), 'the worker has checked Redis');
my $sub = WtcacheTest::RedisConn->new($rp, timeout => 10);
is($sub->command('SUBSCRIBE', 'events')->[0], 'subscribe', 'listening to the events (the channel "events": prefix "")');
plant_app_keys();

#### json and hash formats, a projection, a TTL, under writers

sql(q{
CREATE TABLE users (id int PRIMARY KEY, name text, org int, secret text);
INSERT INTO users SELECT i, 'u' || i, i % 7, 'SECRET-' || i FROM generate_series(1, 600) i;
SELECT wtcache.watch('users', key_template => 'user:{id}', exclude_columns => ARRAY['secret'], warm => true);
CREATE TABLE seats (org text, n int, who text, note text, PRIMARY KEY (org, n));
INSERT INTO seats SELECT (ARRAY['acme', 'a:b{c}%', 'x.y'])[1 + i % 3], i, 'w' || i, NULL FROM generate_series(1, 300) i;
SELECT wtcache.watch('seats', key_template => 'org:{org}:seat:{n}', format => 'hash', warm => true);
CREATE TABLE sess (token text PRIMARY KEY, v text);
INSERT INTO sess SELECT md5(i::text), 'v' || i FROM generate_series(1, 100) i;
SELECT wtcache.watch('sess', key_template => 'sess/{token}', ttl => '1 hour', warm => true);
});
ok(wait_drained($node, $db), 'warm delivered');
my $ucols = [qw(id name org)];
my @users = ('users', q{'user:' || } . esc('t.id'), 'user:*', qr/^user:-?[0-9]+$/, columns => $ucols);
my @seats = ('seats', q{'org:' || } . esc('t.org') . q{ || ':seat:' || t.n}, 'org:*', qr/^org:[^:]*:seat:[0-9]+$/,
	hash => 1, columns => [qw(org n who note)]);
my @sess = ('sess', q{'sess/' || } . esc('t.token'), 'sess/*', qr/^sess\//);
compare_templated_ok('warm: users at user:<id> (json, projection)', $node, $db, @users);
compare_templated_ok('warm: seats at org:<org>:seat:<n> (hash, values escaped)', $node, $db, @seats);
compare_templated_ok('warm: sess at sess/<token> (a TTL)', $node, $db, @sess);
# the comparison can tell: a missing key, an extra one
redis_cmd($rp, 'DEL', 'user:1');
my ($cmp_ok) = compare_templated($node, $db, @users);
ok(!$cmp_ok, 'compare_templated tells a missing key');
is(sql(q{SELECT wtcache.get('users', '1')->>'name'}), 'u1', 'which a read fills again');
redis_cmd($rp, 'SET', 'user:100000', '{"_v":1,"id":100000}');
($cmp_ok) = compare_templated($node, $db, @users);
ok(!$cmp_ok, 'compare_templated tells an extra key');
redis_cmd($rp, 'DEL', 'user:100000');
compare_templated_ok('and agrees again', $node, $db, @users);
is(redis_cmd($rp, 'HGET', 'org:a%3Ab%7Bc%7D%25:seat:1', 'who'), 'w1', 'an escaped value, as documented');
is(redis_cmd($rp, 'GET', 'user:42:prefs'), 'dark', 'the application\'s user:42:prefs beside user:42');
my $pttl = redis_cmd($rp, 'PTTL', 'sess/c4ca4238a0b923820dcc509a6f75849b');    # md5('1')
ok($pttl > 0.89 * 3600_000 && $pttl <= 1.1 * 3600_000, "a TTL on a templated key ($pttl ms)");

my @writers = map { $node->background_psql($db) } 1 .. 3;
for my $w (0 .. $#writers)
{
	my $stmts = join('', map {
		my $id = 1 + ($_ * 37 + $w * 101) % 700;
		my $s = $_ % 9 == 0 ? "DELETE FROM users WHERE id = $id;\n"
		  : $_ % 5 == 0 ? "INSERT INTO users VALUES ($id, 'ins $_', $w, 's') ON CONFLICT (id) DO UPDATE SET name = NULL, org = EXCLUDED.org;\n"
		  : "UPDATE users SET name = name || '+', org = org + 1 WHERE id = $id;\n";
		$s .= "UPDATE seats SET who = who || '!', note = CASE WHEN note IS NULL THEN 'n' END WHERE n = $id;\n" if $_ % 3 == 0;
		$s .= "DELETE FROM seats WHERE n = $id;\n" if $_ % 17 == 0;
		"BEGIN;\n$s" . ($_ % 13 == 0 ? "ROLLBACK;\n" : "COMMIT;\n");
	} 1 .. 400);
	$writers[$w]->query_until(qr/writing\n/, "\\echo writing\n$stmts\\echo written\n");
}
$_->query_until(qr/written\n/, '') for @writers;
$_->quit for @writers;
ok(wait_drained($node, $db), 'concurrent writes delivered');
compare_templated_ok('after writers: Redis equals users, key for key', $node, $db, @users);
compare_templated_ok('after writers: and seats', $node, $db, @seats);
app_keys_ok('after writers');

#### reads: hits, fills under a lease, a stale fill refused

my $n = sql(q{SELECT count(*) FROM users});
my $hits0 = stat_of('users', 'read_hits');
is(sql(q{SELECT count(*) FROM users u WHERE wtcache.get('users', id::text) = to_jsonb(u) - 'secret'}), $n,
	"get() of every row ($n)");
cmp_ok(stat_of('users', 'read_hits') - $hits0, '>=', $n, '(hits)');
is(sql(q{SELECT count(*) FROM wtcache.get_many('users', ARRAY(SELECT i::text FROM generate_series(1, 800) i)) WHERE row IS NOT NULL}),
	$n, 'get_many()');
is(sql(q{SELECT (wtcache.get_row(NULL::seats, 'a:b{c}%', '1')).who}), sql(q{SELECT who FROM seats WHERE n = 1}),
	'get_row() of a hash at an escaped key');
is(sql(q{SELECT wtcache.redis_key('users', '42')}), 'user:42', 'redis_key(): the application\'s name');
my $some = sql(q{SELECT min(id) FROM users WHERE id > 100});
redis_cmd($rp, 'DEL', "user:$some");
my $fills0 = stat_of('users', 'read_fills');
is(sql(qq{SELECT wtcache.get('users', '$some')->>'id'}), $some, 'a miss reads the table');
is(stat_of('users', 'read_fills') - $fills0, 1, 'and fills');
ok(defined redis_cmd($rp, 'GET', "user:$some"), "the fill wrote user:$some");
is(redis_cmd($rp, 'EXISTS', "{user:$some}:lease"), 0, 'and gave its lease {user:N}:lease back');

my $filler = $node->background_psql($db);
for my $case (['update', 'UPDATE users SET name = \'newer\' WHERE id = %d', 'newer'],
	['delete', 'DELETE FROM users WHERE id = %d', undef])
{
	my ($what, $stmt, $want) = @$case;
	my $id = sql(q{SELECT min(id) FROM users WHERE id > 200 AND name IS DISTINCT FROM 'newer'});
	my $k = "user:$id";
	redis_cmd($rp, 'DEL', $k);
	my $rejected0 = stat_of('users', 'fills_rejected');
	$filler->query_safe(q{SET wtcache.debug_fill_delay = '3s'});
	$filler->query_until(qr/started\n/, "\\echo started\nSELECT wtcache.get('users', '$id')->>'name';\n");
	my $leased = 0;
	for (1 .. 300) { if (redis_cmd($rp, 'EXISTS', "{$k}:lease")) { $leased = 1; last; } usleep(10_000); }
	ok($leased, "$what: the reader took the lease {$k}:lease");
	sql(sprintf($stmt, $id));
	ok(wait_drained($node, $db), "$what: delivered while the fill was held");
	$filler->query_until(qr/finished\n/, "\\echo finished\n");
	my $got = redis_cmd($rp, 'GET', $k);
	is(defined $got ? ($got =~ /"name":"([^"]*)"/)[0] : undef, $want, "$what: the stale fill was refused");
	is(stat_of('users', 'fills_rejected') - $rejected0, 1, "$what: fills_rejected counted it");
	like(redis_cmd($rp, 'GET', "{$k}:tomb") // '', qr/^[1-9][0-9]*$/, "$what: the tombstone is {$k}:tomb")
	  if $what eq 'delete';
	is(redis_cmd($rp, 'EXISTS', "$k:t"), 0, "$what: no default-layout companion") if $what eq 'delete';
	$filler->query_safe(q{RESET wtcache.debug_fill_delay});
}
$filler->quit;

#### verify(): no difference, the application's keys are not the table's

is(sql(q{SELECT count(*) FROM wtcache.verify('users')}), '0', 'verify(users): no difference (user:x is no row of it)');
is(sql(q{SELECT count(*) FROM wtcache.verify('seats')}), '0', 'verify(seats): no difference');
redis_cmd($rp, 'SET', 'user:99999', '{"_v":1,"id":99999}');
redis_cmd($rp, 'SET', 'user:5', '{"_v":1,"id":5,"name":"planted","org":0}');
is(sql(q{SELECT string_agg(redis_key || ' ' || problem, ', ' ORDER BY redis_key) FROM wtcache.verify('users')}),
	sql(q{SELECT CASE WHEN EXISTS (SELECT FROM users WHERE id = 5) THEN 'user:5 differs, ' ELSE 'user:5 extra, ' END}) . 'user:99999 extra',
	'verify(users): a planted value and a key of no row, by their templated names')
  or diag(sql(q{SELECT redis_key, problem FROM wtcache.verify('users')}));
sql(q{SELECT wtcache.resync('users')});
ok(wait_drained($node, $db), 'resync delivered');
compare_templated_ok('resync repaired every key, removed the extra one', $node, $db, @users);
app_keys_ok('after resync');

#### TRUNCATE removes the table's keys, not the application's

sql(q{TRUNCATE users});
ok(wait_drained($node, $db), 'TRUNCATE delivered');
is(scalar(grep { /^user:[0-9]+$/ } @{ redis_scan_keys($rp, 'user:*') }), 0, 'no row key of users left');
app_keys_ok('after TRUNCATE');
sql(q{INSERT INTO users SELECT i, 'again' || i, i % 5, 's' FROM generate_series(1, 500) i});
ok(wait_drained($node, $db), 'rows again');
compare_templated_ok('after TRUNCATE and INSERT', $node, $db, @users);

#### a partitioned table, and invalidate mode

sql(q{
CREATE TABLE ev (id int, day int, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE ev_a PARTITION OF ev FOR VALUES FROM (0) TO (10);
CREATE TABLE ev_b PARTITION OF ev FOR VALUES FROM (10) TO (20);
INSERT INTO ev SELECT i, i % 20, 'v' || i FROM generate_series(1, 400) i;
SELECT wtcache.watch('ev', key_template => 'ev:{day}:{id}', warm => true);
CREATE TABLE inv (id int PRIMARY KEY, v text);
INSERT INTO inv SELECT i, 'v' || i FROM generate_series(1, 50) i;
SELECT wtcache.watch('inv', key_template => 'inv:{id}', mode => 'invalidate');
});
ok(wait_drained($node, $db), 'a partitioned table warmed');
sql(q{UPDATE ev SET v = v || '!' WHERE id % 3 = 0; UPDATE ev SET day = 19 - day WHERE id % 7 = 0;
      DELETE FROM ev WHERE id % 11 = 0; TRUNCATE ev_a;});
ok(wait_drained($node, $db), 'its changes, a row moved between partitions, a partition truncated, delivered');
my @ev = ('ev', q{'ev:' || t.day || ':' || t.id}, 'ev:*', qr/^ev:[0-9]+:[0-9]+$/);
compare_templated_ok('partitioned: Redis equals the tree', $node, $db, @ev);
is(sql(q{SELECT count(*) FROM inv WHERE wtcache.get('inv', id::text) = to_jsonb(inv)}), '50', 'invalidate mode: get() fills');
my @inv = ('inv', q{'inv:' || t.id}, 'inv:*', qr/^inv:[0-9]+$/);
compare_templated_ok('invalidate mode: the fills are at inv:<id>', $node, $db, @inv);
sql(q{UPDATE inv SET v = 'changed' WHERE id = 3});
ok(wait_drained($node, $db), 'an update in invalidate mode delivered');
is(redis_cmd($rp, 'EXISTS', 'inv:3'), 0, 'it deleted the key');
like(redis_cmd($rp, 'GET', '{inv:3}:tomb') // '', qr/^[1-9][0-9]*$/, 'and left its tombstone at {inv:3}:tomb');
is(sql(q{SELECT wtcache.get('inv', '3')->>'v'}), 'changed', 'the next read fills the new row');
compare_templated_ok('invalidate mode: Redis equals the table again', $node, $db, @inv);

#### a template change under writers leaves no key of the old layout

my $writer = $node->background_psql($db);
my $writes = join('', map {
	my $id = 1 + ($_ * 37) % 600;
	"UPDATE users SET org = org + 1 WHERE id = $id;\n" . ($_ % 7 == 0 ? "DELETE FROM users WHERE id = $id;\n" : '')
	  . ($_ % 11 == 0 ? "INSERT INTO users VALUES (1000 + $_, 'n', 1, 's') ON CONFLICT DO NOTHING;\n" : '')
} 1 .. 1500);
$writer->query_until(qr/writing\n/, "\\echo writing\n$writes\\echo written\n");
sql(q{SELECT wtcache.watch('users', key_template => 'member:{id}')});
is(sql(q{SELECT wtcache.redis_key('users', '42')}), 'member:42', 'redis_key() follows at once');
# the writer only raises org: a read after the statement's snapshot never
# returns a lower one (older than what had committed before it)
is(sql(q{SELECT count(*) FROM users u WHERE id <= 300
         AND (wtcache.get('users', id::text)->>'org')::int < u.org}),
	'0', 'reads during the rewrite are never older than the table');
is(sql(q{SELECT count(*) FROM users u WHERE id <= 300 AND wtcache.get('users', id::text) ? 'secret'}),
	'0', '(nor of another shape)');
$writer->query_until(qr/written\n/, '');
$writer->quit;
ok(wait_drained($node, $db), 'writes and the rewrite delivered');
my @members = ('users', q{'member:' || } . esc('t.id'), 'member:*', qr/^member:-?[0-9]+$/, columns => $ucols);
compare_templated_ok('the new layout: Redis equals the table', $node, $db, @members);
my @old = grep { /^user:[0-9]+$/ || /^\{user:[0-9]+\}:(tomb|lease)$/ } @{ redis_scan_keys($rp, '*user:*') };
is(scalar(@old), 0, 'no key of the old layout, rows or companions') or diag("left: @old[0 .. ($#old > 9 ? 9 : $#old)]");
ok(defined redis_cmd($rp, 'GET', '{template}:member%3A%7B%7D'), 'the new key space is claimed');
is(redis_cmd($rp, 'GET', '{template}:user%3A%7B%7D'), undef, 'the old one\'s claim was given back');
app_keys_ok('after the template change');

#### events name templated keys; a truncate names the template

sql(q{UPDATE users SET name = 'evt' WHERE id = 3; TRUNCATE sess;});
ok(wait_drained($node, $db), 'an update and a TRUNCATE delivered');
redis_cmd($rp, 'PUBLISH', 'events', 'END-OF-TEST');
my ($row_events, $bad, $trunc, $ended, @sess_events) = (0, 0, undef, 0);
while (1)
{
	my $m = $sub->read_reply;
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	if ($m->[2] eq 'END-OF-TEST') { $ended = 1; last; }
	push @sess_events, $m->[2] if $m->[2] =~ /"table":"public\.sess"/;
	if ($m->[2] =~ /"table":"public\.users".*"op":"(upsert|delete)"/)
	{
		$row_events++;
		$bad++ unless $m->[2] =~ /"redis_key":"(user|member):[0-9]+"/;
	}
	$trunc = $m->[2] if $m->[2] =~ /"table":"public\.sess".*"op":"truncate"/;
}
cmp_ok($row_events, '>', 500, "row events of users ($row_events)");
is($bad, 0, 'each names its templated key');
like($trunc // '', qr/"key_template":"sess\/\{token\}","op":"truncate"/, 'a truncate names the key template')
  or diag(($ended ? 'read up to END-OF-TEST' : 'the subscription ended before END-OF-TEST')
	  . "; events of sess: @sess_events");
is(scalar(@{ redis_scan_keys($rp, 'sess/*') }), 0, 'and removed its keys');

#### unwatch removes the keys and gives the claim back

sql(q{SELECT wtcache.unwatch('users')});
ok(wait_drained($node, $db), 'unwatch delivered');
is(scalar(grep { /^member:[0-9]+$/ || /^\{member:[0-9]+\}:(tomb|lease)$/ } @{ redis_scan_keys($rp, '*member:*') }), 0,
	'unwatch removed every key of users, companions too');
is(redis_cmd($rp, 'GET', '{template}:member%3A%7B%7D'), undef, 'and gave the claim back');
app_keys_ok('after unwatch');

#### two databases, one template

sql(q{CREATE DATABASE other});
sql(q{CREATE EXTENSION wtcache}, 'other');
for my $d ($db, 'other')
{
	sql(qq{CREATE TABLE acct (id int PRIMARY KEY, who text);
	       INSERT INTO acct SELECT i, '$d ' || i FROM generate_series(1, 50) i;}, $d);
}
ok(wait_drained($node, 'other'), 'the second database\'s worker runs');
# the second database watches first, its worker held off (it cannot take
# the queue while this transaction holds it), so that watch() finds no
# claim; the first then watches and claims
my $held = $node->background_psql('other');
$held->query_safe(q{BEGIN; LOCK TABLE wtcache.queue IN ACCESS EXCLUSIVE MODE;
                    SELECT wtcache.watch('acct', key_template => 'acct:{id}', warm => true);});
sql(q{SELECT wtcache.watch('acct', key_template => 'acct:{id}', warm => true)});
ok(wait_drained($node, $db), 'the first database delivered');
like(redis_cmd($rp, 'GET', '{template}:acct%3A%7B%7D'), qr/^postgres:public\.acct$/, 'its claim names it');
my $offset = -s $node->logfile;
$held->query_safe(q{COMMIT});
$held->quit;
ok($node->poll_query_until('other', q{SELECT set_aside > 0 FROM wtcache.status WHERE table_name = 'acct'::regclass}),
	'the second database\'s changes are set aside');
like(stat_of('acct', 'set_aside_reason', 'other'), qr/belong to table postgres:public\.acct of another database.*DEL \{template\}:acct%3A%7B%7D/,
	'with the reason, naming the other table and the claim');
ok($node->wait_for_log(qr/changes of public\.acct set aside: the keys of its key template "acct:\{id\}" belong to table postgres:public\.acct/, $offset),
	'and logged');
my @acct = ('acct', q{'acct:' || t.id}, 'acct:*', qr/^acct:[0-9]+$/);
compare_templated_ok('the first database\'s keys are intact', $node, $db, @acct);
my ($rc, $o, $e) = $node->psql('other', q{SELECT wtcache.watch('acct', key_template => 'acct:{id}')});
like($e, qr/the keys of key template "acct:\{id\}" belong to another database/, 'watch() of the second refuses, Redis reachable');
sql(q{SELECT wtcache.unwatch('acct')});
ok(wait_drained($node, $db), 'the first unwatched');
is(redis_cmd($rp, 'GET', '{template}:acct%3A%7B%7D'), undef, 'its claim is given back');
sql(q{UPDATE acct SET who = 'later ' || id WHERE id <= 10}, 'other');
sql(q{SELECT wtcache.retry_set_aside('acct')}, 'other');
ok(wait_drained($node, 'other'), 'the second database delivers');
is(stat_of('acct', 'set_aside', 'other'), '0', 'nothing set aside any more');
compare_templated_ok('Redis equals the second database\'s table', $node, 'other', @acct);
like(redis_cmd($rp, 'GET', '{template}:acct%3A%7B%7D'), qr/^other:public\.acct$/, 'which holds the claim now');

$node->stop;

#### a Redis Cluster: companions in the row's slot

my @masters = start_redis_cluster(masters => 3);
my @ports = map { $_->port } @masters;
my $cnode = new_wtcache_node(
	'templates_cluster',
	redis_port => $ports[0],
	extra_conf => "wtcache.redis_cluster_nodes = '127.0.0.1:$ports[0], 127.0.0.1:$ports[1]'\n");
sub csql { return $cnode->safe_psql($db, $_[0]); }
csql(q{
CREATE TABLE cu (id int PRIMARY KEY, v text);
INSERT INTO cu SELECT i, 'v' || i FROM generate_series(1, 3000) i;
SELECT wtcache.watch('cu', key_template => 'user:{id}', warm => true);
CREATE TABLE ch (id int PRIMARY KEY, v text, n int);
INSERT INTO ch SELECT i, 'v' || i, i FROM generate_series(1, 1000) i;
SELECT wtcache.watch('ch', key_template => 'h:{id}', format => 'hash', warm => true);
});
ok(wait_drained($cnode, $db), 'cluster: warm delivered');
csql(q{UPDATE cu SET v = v || '!' WHERE id % 3 = 0; DELETE FROM cu WHERE id % 10 = 1;
       UPDATE ch SET n = NULL WHERE id % 2 = 0; DELETE FROM ch WHERE id % 7 = 0;});
ok(wait_drained($cnode, $db), 'cluster: updates and deletes delivered');
compare_templated_ok('cluster: Redis equals cu on every master', $cnode, $db,
	'cu', q{'wtc:user:' || t.id}, 'wtc:user:*', qr/^wtc:user:[0-9]+$/, ports => \@ports);
compare_templated_ok('cluster: and ch, hashes', $cnode, $db,
	'ch', q{'wtc:h:' || t.id}, 'wtc:h:*', qr/^wtc:h:[0-9]+$/, ports => \@ports, hash => 1, columns => [qw(id v n)]);
cmp_ok(redis_cmd($_, 'DBSIZE'), '>', 500, "cluster: master $_ holds its share") for @ports;
my $same = 0;
for my $id (1 .. 50)
{
	my $row = redis_cmd($ports[0], 'CLUSTER', 'KEYSLOT', "wtc:user:$id");
	$same++ if $row == redis_cmd($ports[0], 'CLUSTER', 'KEYSLOT', "wtc:{wtc:user:$id}:tomb")
	  && $row == redis_cmd($ports[0], 'CLUSTER', 'KEYSLOT', "wtc:{wtc:user:$id}:lease");
}
is($same, 50, 'cluster: a row\'s tombstone and lease keys are in its slot (CLUSTER KEYSLOT)');
my $tombs = 0;
for my $p (@ports) { $tombs += grep { /^wtc:\{wtc:user:[0-9]*1\}:tomb$/ } @{ redis_scan_keys($p, 'wtc:{wtc:user:*') }; }
is($tombs, 300, 'cluster: every deleted row has its tombstone');
is(csql(q{SELECT count(*) FROM cu WHERE wtcache.get('cu', id::text) = to_jsonb(cu)}), csql(q{SELECT count(*) FROM cu}),
	'cluster: get() of every row');
cmp_ok(csql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 'cu'::regclass}), '>=', 2000, 'cluster: (hits)');
is(csql(q{SELECT count(*) FROM wtcache.verify('cu')}), '0', 'cluster: verify() finds no difference');
csql(q{SELECT wtcache.unwatch('ch')});
ok(wait_drained($cnode, $db), 'cluster: unwatch delivered');
my $left = 0;
$left += scalar(grep { /^wtc:h:[0-9]+$/ || /^wtc:\{wtc:h:/ } @{ redis_scan_keys($_, 'wtc:*h:*') }) for @ports;
is($left, 0, 'cluster: unwatch removed every key of ch on every master');
$cnode->stop;

done_testing();
