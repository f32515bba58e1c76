# Delivery lag and hit ratios: the lag of each delivered change (commit to
# Redis's reply) per database, p50 / p99 / max over the last minute in
# wtcache.delivery_lag() and wtcache.status, the cumulative histogram in
# metrics(); read and query hit ratios; who sees what.
#
# The worker reaches Redis through the test proxy, which can hold every
# reply from Redis for a while (->delay): the percentiles must follow.
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
my $proxy = start_redis_proxy(target_port => $rp, name => 'lag_proxy');
my $node = new_wtcache_node('lag', redis_port => $proxy->port);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

my $this_db = q{database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};

# The lines of metrics() for the lag histogram, parsed.
sub lag_histogram
{
	my ($text) = @_;
	my %h = (types => 0, buckets => [], other => []);
	for my $line (split /\n/, $text)
	{
		next unless $line =~ /wtcache_delivery_lag_seconds/;
		if ($line =~ /^# TYPE wtcache_delivery_lag_seconds (\w+)$/) { $h{types}++; $h{type} = $1; }
		elsif ($line =~ /^# HELP /) { }
		elsif ($line =~ /^wtcache_delivery_lag_seconds_bucket\{database="postgres",le="([^"]+)"\} (\S+)$/)
		{
			push @{ $h{buckets} }, [ $1, $2 ];
		}
		elsif ($line =~ /^wtcache_delivery_lag_seconds_sum\{database="postgres"\} (\S+)$/) { $h{sum} = $1; }
		elsif ($line =~ /^wtcache_delivery_lag_seconds_count\{database="postgres"\} (\S+)$/) { $h{count} = $1; }
		else { push @{ $h{other} }, $line; }
	}
	return \%h;
}

# The histogram is valid Prometheus: one family typed histogram, buckets
# by ascending le ending with +Inf, cumulative, +Inf = _count = the
# changes delivery_lag() counts.
sub histogram_consistent
{
	my ($label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $h = lag_histogram(sql('SELECT wtcache.metrics()'));
	my $changes = sql("SELECT changes FROM wtcache.delivery_lag() WHERE $this_db");
	my @problems;
	push @problems, "$h->{types} TYPE lines" if $h->{types} != 1;
	push @problems, "type $h->{type}" if ($h->{type} // '') ne 'histogram';
	push @problems, "lines of no known form: @{ $h->{other} }" if @{ $h->{other} };
	my @b = @{ $h->{buckets} };
	push @problems, scalar(@b) . ' buckets' if @b < 2;
	push @problems, 'the last bucket is not +Inf' if !@b || $b[-1][0] ne '+Inf';
	for my $i (1 .. $#b)
	{
		push @problems, "le $b[$i][0] after $b[$i-1][0]"
		  if $b[$i][0] ne '+Inf' && $b[$i][0] <= $b[ $i - 1 ][0];
		push @problems, "bucket le=$b[$i][0] ($b[$i][1]) below le=$b[$i-1][0] ($b[$i-1][1])"
		  if $b[$i][1] < $b[ $i - 1 ][1];
	}
	push @problems, "+Inf $b[-1][1] != _count " . ($h->{count} // 'none')
	  if !defined $h->{count} || !@b || $b[-1][1] != $h->{count};
	push @problems, "_count $h->{count} != delivery_lag().changes $changes"
	  if defined $h->{count} && $h->{count} != $changes;
	push @problems, 'no _sum' if !defined $h->{sum} || $h->{sum} < 0;
	is(join('; ', @problems), '', "$label: the histogram in metrics() is consistent");
	return $h;
}

# Nothing delivered yet: no figures for the last minute.
is(sql("SELECT count(*) || ' ' || bool_and(p50 IS NULL AND changes = 0) FROM wtcache.delivery_lag() WHERE $this_db"),
	'1 true', 'before any change: no lag, no change counted');

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('t');
CREATE TABLE h (id int PRIMARY KEY, v text);
SELECT wtcache.watch('h');
CREATE ROLE lag_nobody LOGIN;
CREATE ROLE lag_reader LOGIN;
GRANT SELECT ON h TO lag_reader;
});

# 20 transactions of 10 keys, and 5 of one key: the lag counts changes,
# not batches or transactions.  Each watch() queued one more: the removal
# of keys an earlier watch may have left (as a TRUNCATE would).
for my $i (0 .. 19)
{
	sql("INSERT INTO t SELECT g, 'v' FROM generate_series($i * 10 + 1, $i * 10 + 10) g");
}
sql("INSERT INTO h VALUES ($_, 'h$_')") for 1 .. 5;
ok(wait_drained($node, $db), 'the first changes are delivered');

my ($n, $p50, $p99, $max, $total) = split /\|/, sql(
	"SELECT changes_last_minute, extract(epoch FROM p50) * 1000, extract(epoch FROM p99) * 1000,
	        extract(epoch FROM max) * 1000, changes
	   FROM wtcache.delivery_lag() WHERE $this_db");
is($total, 207, 'every delivered change is counted once');
# the last minute's count depends on how long the above took: only bounds
ok($n > 0 && $n <= $total, "the last minute counts some of them, no more ($n)");
note("no injected latency: p50 $p50 ms, p99 $p99 ms, max $max ms");
ok($p50 > 0 && $p50 <= $p99 && $p99 <= $max, 'p50 <= p99 <= max');
is(sql(q{SELECT count(DISTINCT (lag_p50, lag_p99, lag_max)) || ' ' || bool_and(lag_p99 IS NOT NULL)
           FROM wtcache.status}),
	'1 true', 'status shows the database\'s lag on every table\'s row');
histogram_consistent('no injected latency');

# Every reply from Redis now comes 200 ms late: the lag of what is
# delivered from now on is above 200 ms, so once those changes are more
# than half of the last minute's, the p50 is above 200 ms.
$proxy->delay(200);
ok( $node->poll_query_until(
		$db, qq{
WITH more AS (INSERT INTO t SELECT m + g, 'slow' FROM (SELECT max(id) AS m FROM t) s,
                                                   generate_series(1, 10) g RETURNING 1)
SELECT p50 > interval '200 ms' FROM wtcache.delivery_lag(), (SELECT count(*) FROM more) m
 WHERE $this_db}),
	'with 200 ms injected the p50 over the last minute moves above 200 ms');
($p50, $p99, $max) = split /\|/, sql(
	"SELECT extract(epoch FROM p50) * 1000, extract(epoch FROM p99) * 1000, extract(epoch FROM max) * 1000
	   FROM wtcache.delivery_lag() WHERE $this_db");
note("200 ms injected: p50 $p50 ms, p99 $p99 ms, max $max ms");
cmp_ok($p99, '>', 200, 'and the p99 too');
cmp_ok($max, '>=', $p99, 'max >= p99');
my $slow = histogram_consistent('200 ms injected');
my ($p50_gauge) = sql('SELECT wtcache.metrics()') =~ /^wtcache_delivery_lag_p50_seconds\{database="postgres"\} (\S+)$/m;
cmp_ok($p50_gauge // 0, '>', 0.2, 'metrics(): the p50 gauge of the last minute too');
my %le = map { $_->[0] => $_->[1] } @{ $slow->{buckets} };
cmp_ok($slow->{count} - $le{'0.1'}, '>', 0, 'the histogram has changes above 100 ms');

$proxy->delay(0);
ok(wait_drained($node, $db), 'the delayed changes are delivered');
histogram_consistent('after the delay');

# The lag runs from the commit, not from when the worker sent the change:
# a change committed while delivery is paused, delivered once at least a
# second has passed since its commit, has a lag of a second or more, which
# a measurement from the send to Redis's reply (no latency injected now)
# would not give it.  Counted in the cumulative buckets (above le 1), so
# that the delayed changes of the last minute do not count.
sub above_one_second
{
	my $h = lag_histogram(sql('SELECT wtcache.metrics()'));
	my %le = map { $_->[0] => $_->[1] } @{ $h->{buckets} };
	return $h->{count} - $le{'1'};
}
my $above_before = above_one_second();
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
ok( $node->poll_query_until(
		$db, qq{SELECT state = 'paused' FROM wtcache.worker_status() WHERE $this_db}),
	'delivery paused');
my $committed = sql(q{INSERT INTO t SELECT max(id) + 1, 'paused' FROM t; SELECT clock_timestamp()});
ok( $node->poll_query_until(
		$db, qq{SELECT clock_timestamp() - '$committed'::timestamptz >= interval '1 s'}),
	'a second has passed since the commit');
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok(wait_drained($node, $db), 'delivery resumed: the change is delivered');
is(above_one_second() - $above_before, 1,
	'its lag, from the commit, is above 1 s: the histogram counts one more change there');
cmp_ok(sql(qq{SELECT extract(epoch FROM max) FROM wtcache.delivery_lag() WHERE $this_db}), '>=', 1,
	'and the max over the last minute is at least 1 s');

# Hit ratios after a known mix: h holds 5 rows in Redis; one is removed
# behind wtcache's back.  Reads: 1, 2, 3 (hits), 4 (a miss, filled), 4
# again (a hit): 4 hits of 5 reads.
ok( $node->poll_query_until(
		$db, q{SELECT reads_use_redis FROM wtcache.worker_status() w
		         JOIN pg_database d ON d.oid = w.database_oid WHERE d.datname = current_database()}),
	'cached reads use Redis');
redis_cmd($rp, 'DEL', redis_key_of($node, $db, 'h', 4));
is(sql(q{SELECT read_hits || ' ' || coalesce(read_hit_ratio::text, 'null') FROM wtcache.status
          WHERE table_name = 'h'::regclass}),
	'0 null', 'no read yet: the hit ratio is NULL');
sql("SELECT wtcache.get('h', '$_')") for (1, 2, 3, 4, 4);
is(sql(q{SELECT read_hits || ' ' || read_misses || ' ' || read_bypasses || ' ' || read_fallbacks
               || ' ' || read_hit_ratio
          FROM wtcache.status WHERE table_name = 'h'::regclass}),
	'4 1 0 0 0.8', 'hits 4, misses 1: read_hit_ratio 0.8');
is(sql(q{SELECT coalesce(read_hit_ratio::text, 'null') FROM wtcache.status WHERE table_name = 't'::regclass}),
	'null', 'a table never read has no hit ratio');

# A cached query: the first call runs it, the second is served from Redis.
sql(q{SELECT count(*) FROM wtcache.query('SELECT count(*) FROM h')}) for 1 .. 2;
my $metrics = sql('SELECT wtcache.metrics()');
like($metrics, qr/^wtcache_query_hit_ratio\{database="postgres"\} 0\.5$/m,
	'metrics(): the query hit ratio is 0.5 after a miss and a hit');
like($metrics, qr/^wtcache_read_hit_ratio\{database="postgres",table="public\.h"\} 0\.8$/m,
	'metrics(): the read hit ratio of h');
unlike($metrics, qr/^wtcache_read_hit_ratio\{[^}]*table="public\.t"/m,
	'metrics(): no ratio for a table never read');

# The postgres_exporter queries file: every query runs, and its histogram
# (buckets without +Inf, which the exporter adds from the count) agrees
# with metrics().
{
	my $yaml = slurp_file("$FindBin::RealBin/../postgres_exporter_queries.yaml");
	my %queries;
	while ($yaml =~ /^(\w+):\n  query: (?:\|\n((?:    .*\n)+)|"([^"]+)")/mg)
	{
		$queries{$1} = $2 // $3;
	}
	ok(exists $queries{wtcache_delivery} && exists $queries{wtcache_query},
		'the exporter file has the delivery lag and query queries');
	for my $name (sort keys %queries)
	{
		my ($ret, $out, $err) = $node->psql($db, $queries{$name});
		is($ret . $err, '0', "exporter query $name runs");
	}
	my ($buckets, $counts, $count) = split /\|/,
	  sql(qq{SELECT cardinality(lag_seconds), lag_seconds_bucket[cardinality(lag_seconds_bucket)],
	                lag_seconds_count FROM ($queries{wtcache_delivery}) e});
	my $h = lag_histogram(sql('SELECT wtcache.metrics()'));
	is("$buckets $counts $count",
		scalar(@{ $h->{buckets} }) - 1 . " $h->{buckets}[-2][1] $h->{count}",
		'exporter: the finite buckets, the last of them and the count agree with metrics()');
	like(sql(qq{SELECT hit_ratio FROM ($queries{wtcache_query}) e}), qr/^0\.5$/,
		'exporter: the query hit ratio');
}

# Who sees what: the database's lag is everyone's (as worker_status());
# a table's row and ratio only its readers'.
my $as = sub {
	my ($role, $q) = @_;
	return $node->safe_psql($db, $q, connstr => $node->connstr($db) . " user=$role");
};
is($as->('lag_nobody', "SELECT count(*) FROM wtcache.delivery_lag() WHERE $this_db AND p50 IS NOT NULL"),
	'1', 'a role with no rights on any table sees the database\'s lag');
is($as->('lag_nobody', q{SELECT count(*) FROM wtcache.status}),
	'0', 'but no row of a table it cannot see');
unlike($as->('lag_nobody', 'SELECT wtcache.metrics()'), qr/wtcache_read_hit_ratio\{/,
	'nor its hit ratio in metrics()');
is($as->('lag_reader', q{SELECT string_agg(table_name || ' ' || read_hit_ratio, ',') FROM wtcache.status}),
	'h 0.8', 'a role that can read h sees h\'s ratio, not t\'s row');

# A slot given to another database shows nothing of the last one's lag.
# lag_a's worker delivers, lag_a is dropped, its slot freed; with the
# launcher stopped, lag_b's CREATE EXTENSION is given that slot, but no
# worker starts in it to reset the histogram.
$node->safe_psql('postgres', 'CREATE DATABASE lag_a');
$node->safe_psql('lag_a', q{
CREATE EXTENSION wtcache;
CREATE TABLE a (id int PRIMARY KEY);
SELECT wtcache.watch('a');
INSERT INTO a SELECT generate_series(1, 50);
});
ok(wait_drained($node, 'lag_a'), 'lag_a\'s changes are delivered');
cmp_ok($node->safe_psql('lag_a', "SELECT changes FROM wtcache.delivery_lag() WHERE $this_db"), '>', 0,
	'lag_a\'s worker counted them');
$node->safe_psql('postgres', 'DROP DATABASE lag_a');
our $launcher;
END { kill 'CONT', $launcher if $launcher; }
$launcher = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'wtcache launcher'});
ok($launcher =~ /^\d+$/, 'the launcher runs') or $launcher = undef;
kill 'STOP', $launcher if $launcher;
$node->safe_psql('postgres', 'CREATE DATABASE lag_b');
$node->safe_psql('lag_b', 'CREATE EXTENSION wtcache');
is($node->safe_psql('lag_b',
		"SELECT changes || ' ' || changes_last_minute || ' ' || (p50 IS NULL) || ' ' || (since IS NULL)
		   FROM wtcache.delivery_lag() WHERE $this_db"),
	'0 0 true true', 'lag_b\'s slot, before its worker starts, shows no lag of lag_a');
kill 'CONT', $launcher if $launcher;
ok( $node->poll_query_until(
		'lag_b', qq{SELECT since IS NOT NULL FROM wtcache.delivery_lag() WHERE $this_db}),
	'once lag_b\'s worker runs, its histogram starts');
is($node->safe_psql('lag_b', "SELECT changes FROM wtcache.delivery_lag() WHERE $this_db"), '0',
	'with none of lag_a\'s changes');

done_testing();
