# Partitioned tables (issue 18): watch('parent') follows every partition at
# any depth, now and later, under the parent's keys.  A table partitioned by
# day with a DEFAULT partition goes through a partition created and another
# attached while a write load runs, the DEFAULT partition detached and a day
# detached CONCURRENTLY under the same load, then one re-attached, one
# dropped, one truncated, rows moved between partitions, capture disabled on
# one partition (as pg_restore --disable-triggers does) and the reads,
# warm/resync, tags and cached queries of the parent.  A hash-partitioned
# table with list and range sub-partitions three levels deep goes through
# moves, partitions created later below an intermediate level, TRUNCATE and
# DETACH of a sub-tree.  After every step, once delivered, verify() and an
# independent key-by-key comparison (every row under the key the parent
# names, its fields equal, and no other row key under the parent's name)
# must find no drift.  Then what is refused (a partition of a watched tree,
# a tree with a watched partition, legacy inheritance) and what stops the
# watch (an unlogged partition).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('partitions', redis_port => $rp);
my $db = 'postgres';
my $json = JSON::PP->new->canonical;

# A failing statement is a failed test, not the end of the script: the
# sections are independent enough that one bug should not hide the others.
sub sql
{
	my ($q) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ret, $out, $err) = $node->psql($db, $q);
	if ($ret != 0)
	{
		fail("SQL succeeds: " . substr($q =~ s/\s+/ /gr, 0, 120));
		diag($err);
	}
	return $out;
}

sub try_sql { return $node->psql($db, $_[0]); }

# The row keys Redis has under a table's name (tombstones ":t" and leases
# ":l" end after the closing brace and are not counted).
sub pattern { return "wtc:{postgres:public.$_[0]:*}"; }
sub nkeys { return scalar @{ redis_row_keys($rp, pattern($_[0])) }; }

# tree_ok($rel, [key columns], $what): every row read through $rel (for a
# parent: the rows of all its partitions) is in Redis under
# wtc:{postgres:public.<rel>:<key>}, a key built here rather than by
# wtcache.redis_key(), with a leading "_v" and the row's fields (compared
# as JSON, whatever the order); and Redis has no other row key under that
# name.
sub tree_ok
{
	my ($rel, $keycols, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $keyexpr = join(q{ || ':' || }, map { "($_)::text" } @$keycols);
	my $out = sql(qq{COPY (SELECT $keyexpr, to_jsonb(r)::text FROM $rel r) TO STDOUT});
	my %want;
	for my $line (split /\n/, $out)
	{
		my ($k, $j) = split /\t/, $line, 2;
		$want{"wtc:{postgres:public.$rel:$k}"} = $j;
	}
	my @keys = sort keys %want;
	my $replies = @keys ? redis_pipeline($rp, [ map { [ 'GET', $_ ] } @keys ]) : [];
	my @diffs;
	for my $i (0 .. $#keys)
	{
		my ($key, $value) = ($keys[$i], $replies->[$i]);
		if (!defined $value)
		{
			push @diffs, "missing in Redis: $key";
			next;
		}
		my ($v, $rest) = redis_row_version($value);
		if (!defined $v)
		{
			push @diffs, "not a row value (no leading _v): $key = $value";
			next;
		}
		my $got = eval { $json->encode($json->decode('{' . $rest)) } // "(bad JSON) $value";
		my $exp = $json->encode($json->decode($want{$key}));
		push @diffs, "differs: $key\n    redis: $value\n    table: $want{$key}"
		  if $got ne $exp;
	}
	my $inredis = redis_row_keys($rp, pattern($rel));
	push @diffs, "extra key in Redis: $_" for grep { !exists $want{$_} } @$inredis;
	my $summary = scalar(@keys) . " rows, " . scalar(@$inredis) . " row keys in Redis";
	my $ok = !@diffs && @$inredis == @keys;
	ok($ok, "$what: Redis holds every row of $rel under the parent's key and nothing else ($summary)")
	  or diag("$summary\n  " . join("\n  ", grep { defined } @diffs[ 0 .. 9 ]));
	return $ok;
}

# After a step: delivered, verify() clean, and the independent comparison.
sub check_tree
{
	my ($rel, $keycols, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok(wait_drained($node, $db), "$what: delivered");
	is(sql(qq{SELECT count(*) FROM wtcache.verify('$rel')}), '0', "$what: verify('$rel') finds no difference");
	tree_ok($rel, $keycols, $what);
}

sub check_events { check_tree('events', [ 'day', 'id' ], $_[0]); }

# wtcache.get() of a row of events as text, '' for NULL.
sub get_v
{
	my ($day, $id, $field) = @_;
	$field //= 'v';
	return sql(qq{SELECT wtcache.get('events', '$day', '$id')->>'$field'});
}

#### The table partitioned by day

# ids are unique across days (rows 1-100 on day 1, 101-200 on day 2,
# 201-300 on day 3, then 301+ elsewhere), so a row moved to another day
# never meets another row's key.  Rows whose id ends in 0 are never touched
# by the write load: reads of them must equal the table whatever the DDL.
sql(q{
CREATE TABLE events (day date NOT NULL, id int NOT NULL, org_id int NOT NULL,
                     n int NOT NULL DEFAULT 0, v text,
                     PRIMARY KEY (day, id)) PARTITION BY RANGE (day);
CREATE TABLE events_d1 PARTITION OF events FOR VALUES FROM ('2026-03-01') TO ('2026-03-02');
CREATE TABLE events_d2 PARTITION OF events FOR VALUES FROM ('2026-03-02') TO ('2026-03-03');
CREATE TABLE events_d3 PARTITION OF events FOR VALUES FROM ('2026-03-03') TO ('2026-03-04');
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE SEQUENCE event_ids START 1001;
INSERT INTO events SELECT date '2026-03-01' + (i - 1) / 100, i, 1 + i % 3, 0, 'row ' || i
  FROM generate_series(1, 300) i;
-- a far day without a partition of its own
INSERT INTO events SELECT date '2026-12-31', i, 1 + i % 3, 0, 'later ' || i FROM generate_series(301, 320) i;
SELECT wtcache.watch('events', tags => ARRAY['org:{org_id}'], warm => true);
});
is(sql(q{SELECT count(DISTINCT tableoid) FROM events}), '4', 'rows in the three days and the DEFAULT partition');
check_events('watch(parent, warm)');
is(sql(q{SELECT wtcache.redis_key('events', '2026-03-02', '150')}), 'wtc:{postgres:public.events:2026-03-02:150}',
	'a row of a partition is keyed by the parent');
like(redis_cmd($rp, 'GET', 'wtc:{postgres:public.events:2026-12-31:305}') // '', qr/^\{"_v":\d+,.*"later 305"/,
	'a row of the DEFAULT partition is in Redis under the parent\'s name');
is(nkeys('events_d1') + nkeys('events_default'), 0, 'nothing under the names of the partitions');
is(get_v('2026-03-01', '7'), 'row 7', 'get() on the parent reads a partition\'s row');

#### DDL under a write load

# Two writers loop until load_stop has a row: each transaction updates a
# row, inserts one and moves one to a random day, only on days whose
# partition is attached (a row of a day without one would land in the
# DEFAULT partition and block creating that day's partition).
sql(q{
CREATE TABLE load_days (day date PRIMARY KEY, part text NOT NULL);
INSERT INTO load_days VALUES ('2026-03-01', 'events_d1'), ('2026-03-02', 'events_d2'),
  ('2026-03-03', 'events_d3'), ('2026-03-04', 'events_d4'), ('2026-03-05', 'events_d5'),
  ('2026-12-31', 'events_default');
CREATE TABLE load_stop ();
CREATE TABLE load_progress (w int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO load_progress VALUES (1, 0), (2, 0);
});

sub load_sql
{
	my ($w) = @_;
	return qq{
DO \$wtc_load_writer\$
DECLARE
    days date[];
    x int;
BEGIN
    LOOP
        EXIT WHEN EXISTS (SELECT FROM load_stop);
        BEGIN
            SELECT array_agg(l.day) INTO days FROM load_days l
             WHERE EXISTS (SELECT FROM pg_inherits i
                            WHERE i.inhparent = 'events'::regclass
                              AND i.inhrelid = to_regclass(l.part)
                              AND NOT i.inhdetachpending);
            x := 1 + floor(random() * 300)::int;
            IF x % 10 <> 0 THEN
                UPDATE events SET n = n + 1, v = md5(random()::text) WHERE id = x;
            END IF;
            INSERT INTO events VALUES (days[1 + floor(random() * cardinality(days))::int],
                                       nextval('event_ids'), 1 + x % 3, 0, 'writer $w');
            x := 1 + floor(random() * 300)::int;
            IF x % 10 <> 0 THEN
                UPDATE events SET day = days[1 + floor(random() * cardinality(days))::int] WHERE id = x;
            END IF;
        EXCEPTION
            -- PostgreSQL's own answers to a partition detached meanwhile
            -- (no partition for the row) and to two writers moving one row
            WHEN check_violation OR deadlock_detected OR serialization_failure THEN NULL;
        END;
        UPDATE load_progress SET n = n + 1 WHERE w = $w;
        COMMIT;
    END LOOP;
END
\$wtc_load_writer\$;};
}

sub progress { return sql(q{SELECT sum(n) FROM load_progress}) || 0; }

sub start_load
{
	sql(q{DELETE FROM load_stop; UPDATE load_progress SET n = 0});
	my @writers;
	for my $w (1 .. 2)
	{
		my %wr = (out => '', err => '', w => $w);
		$wr{h} = IPC::Run::start(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', load_sql($w) ],
			'<', \'', '>', \$wr{out}, '2>', \$wr{err});
		push @writers, \%wr;
	}
	return \@writers;
}

# Wait until the writers together committed $target transactions; false if
# they all ended before (an error) or after three minutes.
sub load_until
{
	my ($load, $target) = @_;
	my $deadline = time() + 180;
	while (1)
	{
		return 1 if progress() >= $target;
		$_->{h}->pump_nb for grep { $_->{h}->pumpable } @$load;
		return 0 unless grep { $_->{h}->pumpable } @$load;
		return 0 if time() > $deadline;
		usleep(20_000);
	}
}

sub stop_load
{
	my ($load, $what) = @_;
	sql(q{INSERT INTO load_stop DEFAULT VALUES});
	for my $wr (@$load)
	{
		my $fine = eval { $wr->{h}->finish };
		ok($fine && $wr->{err} eq '', "$what: writer $wr->{w} ended without an error")
		  or diag("writer $wr->{w}: $wr->{err}");
	}
}

# Rows the load never touches, in partitions no DDL under load touches:
# reads must equal the table while partitions come and go around them.
sub stable_reads_ok
{
	my ($what) = @_;
	is(sql(q{SELECT count(*) FILTER (WHERE wtcache.get('events', e.day::text, e.id::text) IS DISTINCT FROM to_jsonb(e))
	                || '/' || count(*)
	         FROM events e WHERE e.id <= 300 AND e.id % 10 = 0 AND e.day IN ('2026-03-02', '2026-03-03')}),
		'0/20', "$what: reads of 20 rows during the load return the table's rows");
}

sub under_load
{
	my ($what, $step) = @_;
	my $load = start_load();
	ok(load_until($load, 30), "$what: the write load runs");
	$step->();
	ok(load_until($load, progress() + 30), "$what: the load went on after it");
	stable_reads_ok($what);
	stop_load($load, $what);
	check_events($what);
}

# A day loaded on its own before it is attached, as bulk loads are: its
# columns in another order and a dropped column, so its rows' own shape is
# not the parent's.
sql(q{
CREATE TABLE events_d5 (v text, junk int, org_id int NOT NULL, id int NOT NULL, day date NOT NULL,
                        n int NOT NULL DEFAULT 0, PRIMARY KEY (day, id),
                        CHECK (day >= '2026-03-05' AND day < '2026-03-06'));
ALTER TABLE events_d5 DROP COLUMN junk;
INSERT INTO events_d5 (day, id, org_id, v) SELECT '2026-03-05', i, 1 + i % 3, 'loaded ' || i FROM generate_series(501, 550) i;
});
is(get_v('2026-03-05', '501'), '', 'a row of a table not yet attached is not a row of the parent');

under_load('CREATE TABLE ... PARTITION OF', sub {
	my ($ret, $out, $err) = try_sql(q{CREATE TABLE events_d4 PARTITION OF events FOR VALUES FROM ('2026-03-04') TO ('2026-03-05')});
	is($ret, 0, 'a new day\'s partition is created while the writers write') or diag($err);
});
cmp_ok(sql(q{SELECT count(*) FROM events_d4}), '>', 0, 'the load wrote into the new partition from its start');

under_load('ATTACH PARTITION', sub {
	my ($ret, $out, $err) = try_sql(q{ALTER TABLE events ATTACH PARTITION events_d5 FOR VALUES FROM ('2026-03-05') TO ('2026-03-06')});
	is($ret, 0, 'a loaded table is attached while the writers write') or diag($err);
	is(get_v('2026-03-05', '502'), 'loaded 502', 'right after ATTACH, get() returns a row the table already had');
});
like(redis_cmd($rp, 'GET', 'wtc:{postgres:public.events:2026-03-05:503}') // '',
	qr/^\{"_v":\d+,"day":"2026-03-05","id":503,"org_id":\d,"n":0,"v":"loaded 503"\}$/,
	'an attached row is in the parent\'s shape (its columns in the parent\'s order)');

under_load('DETACH PARTITION of the DEFAULT partition', sub {
	my ($ret, $out, $err) = try_sql(q{ALTER TABLE events DETACH PARTITION events_default});
	is($ret, 0, 'the DEFAULT partition is detached while the writers write') or diag($err);
	is(get_v('2026-12-31', '305'), '', 'right after DETACH, its rows are no rows of the parent');
});

# CONCURRENTLY is refused while a DEFAULT partition exists: hence after it.
under_load('DETACH PARTITION CONCURRENTLY', sub {
	my ($ret, $out, $err) = try_sql(q{ALTER TABLE events DETACH PARTITION events_d1 CONCURRENTLY});
	is($ret, 0, 'a day is detached concurrently while the writers write') or diag($err);
	is(get_v('2026-03-01', '7'), '', 'right after it, its rows are no rows of the parent');
});

# A detached table is on its own: writing it puts nothing under the
# parent's name.
sql(q{UPDATE events_d1 SET v = 'detached'; UPDATE events_default SET v = 'detached';
      INSERT INTO events_d1 VALUES ('2026-03-01', 999, 1, 0, 'detached');});
check_events('writes to the detached tables');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel IN ('events_d1'::regclass, 'events_default'::regclass)}), '0',
	'detached tables are not watched');
is(nkeys('events_d1') + nkeys('events_default'), 0, 'nor in Redis under their own names');

#### One step at a time

my ($ret, $out, $err) = try_sql(q{ALTER TABLE events ATTACH PARTITION events_default DEFAULT});
is($ret, 0, 'the DEFAULT partition is attached again') or diag($err);
is(get_v('2026-12-31', '306'), 'detached', 'its rows are read at once, as they are now');
check_events('ATTACH of the DEFAULT partition');

# A rolling window detaches and attaches partitions again and again, here
# on a small tree of its own; each DETACH must take the partition's rows
# away and each ATTACH bring them back.  (ATTACH
# locks the parent in SHARE UPDATE EXCLUSIVE mode only, so the worker may
# read the parent while the ATTACH commits; reading it as it was before the
# ATTACH would write tombstones instead of the rows, some of the time:
# hence twelve rounds.)
sql(q{
CREATE TABLE roll (k int NOT NULL, id int NOT NULL, v text, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
CREATE TABLE roll_a PARTITION OF roll FOR VALUES IN (1);
CREATE TABLE roll_b PARTITION OF roll FOR VALUES IN (2);
INSERT INTO roll VALUES (1, 1, 'a'), (2, 1, 'b'), (2, 2, 'c');
SELECT wtcache.watch('roll', warm => true);
});
my @lost;
for my $round (1 .. 12)
{
	# every other round CONCURRENTLY, whose first transaction also leaves
	# the parent locked in SHARE UPDATE EXCLUSIVE mode only
	my $how = $round % 2 ? ' CONCURRENTLY' : '';
	sql(qq{ALTER TABLE roll DETACH PARTITION roll_b$how});
	ok(wait_drained($node, $db), "round $round: DETACH$how delivered") or last;
	my $after_detach = nkeys('roll');
	sql(q{ALTER TABLE roll ATTACH PARTITION roll_b FOR VALUES IN (2)});
	ok(wait_drained($node, $db), "round $round: ATTACH delivered") or last;
	my $after_attach = nkeys('roll');
	push @lost, "round $round: $after_detach row keys after DETACH$how (1 row), $after_attach after ATTACH (3 rows)"
	  if $after_detach != 1 || $after_attach != 3;
}
is(join("\n", @lost), '', 'in 12 rounds of DETACH and ATTACH, Redis always held exactly the rows of the parent');
check_tree('roll', [ 'k', 'id' ], '12 rounds of DETACH and ATTACH');

sql(q{DROP TABLE events_d2});
is(get_v('2026-03-02', '150'), '', 'right after DROP TABLE of a partition, its rows are gone');
check_events('DROP TABLE of a partition');

my $before = sql(q{SELECT count(*) FROM events WHERE day <> '2026-03-03'});
sql(q{TRUNCATE events_d3});
is(get_v('2026-03-03', '250'), '', 'right after TRUNCATE of a partition, its rows are gone');
is(get_v('2026-03-05', '504'), 'loaded 504', 'and another partition\'s are not');
is(sql(q{SELECT count(*) FROM events}), $before, 'TRUNCATE of a partition emptied only it');
check_events('TRUNCATE of a partition');

# Moves: an UPDATE of the partition key moves the row to another partition
# (a delete there, an insert here). Redis must end with the row under its
# new key, never a tombstone where the row now is.
sql(q{INSERT INTO events SELECT '2026-03-04', i, 1 + i % 3, 0, 'mover ' || i FROM generate_series(901, 910) i});
ok(wait_drained($node, $db), 'movers delivered');
sql(q{UPDATE events SET day = '2026-03-05', v = 'moved' WHERE id IN (901, 902, 903)});
is(get_v('2026-03-05', '901'), 'moved', 'right after a move, get() of the new key returns the row');
is(get_v('2026-03-04', '901'), '', 'and of the old key nothing');
sql(q{BEGIN;
      UPDATE events SET day = '2026-03-05', v = 'there' WHERE id = 904;
      UPDATE events SET day = '2026-03-04', v = 'and back' WHERE id = 904;
      COMMIT;});
sql(q{UPDATE events SET day = '2026-03-05', v = 'there' WHERE id = 905});
sql(q{UPDATE events SET day = '2026-03-04', v = 'and back' WHERE id = 905});
sql(q{UPDATE events SET day = '2026-12-31', v = 'to the default' WHERE id = 906});
sql(q{UPDATE events SET day = '2026-03-05', v = 'out of the default' WHERE id = 906});
is(get_v('2026-03-04', '905'), 'and back', 'a row moved away and back reads back');
check_events('rows moved between partitions');
for my $id (901, 904, 905, 906)
{
	my $day = $id == 904 || $id == 905 ? '2026-03-04' : '2026-03-05';
	my $gone = $day eq '2026-03-04' ? '2026-03-05' : '2026-03-04';
	like(redis_cmd($rp, 'GET', "wtc:{postgres:public.events:$day:$id}") // '(absent)', qr/^\{"_v":\d+,/,
		"moved row $id: its key holds the row");
	is(redis_cmd($rp, 'GET', "wtc:{postgres:public.events:$gone:$id}"), undef, "moved row $id: no row under its other day");
}

#### Reads, warm, resync on the parent

is(sql(q{SELECT (wtcache.get_row(NULL::events, '2026-03-05', '507')).v}), 'loaded 507',
	'get_row(NULL::parent, ...) returns a row of a partition as the parent\'s row type');
is(sql(q{SELECT string_agg(coalesce(g."row"->>'v', 'none'), ',' ORDER BY o)
         FROM wtcache.get_many('events', ARRAY[['2026-03-05','508'], ['2026-03-02','150'], ['2026-03-04','907']])
              WITH ORDINALITY AS g(key, "row", o)}),
	'loaded 508,none,mover 907', 'get_many() on the parent, in order, across partitions and a dropped one');

my $rows = sql(q{SELECT count(*) FROM events});
is(sql(q{SELECT wtcache.warm('events')}), $rows, 'warm() on the parent queues the rows of every partition');
check_events('warm()');

my $wrong = 'wtc:{postgres:public.events:2026-03-05:509}';
redis_cmd($rp, 'SET', $wrong, '{"_v":1,"day":"2026-03-05","id":509,"org_id":1,"n":0,"v":"wrong"}');
redis_cmd($rp, 'DEL', 'wtc:{postgres:public.events:2026-03-04:907}');
redis_cmd($rp, 'SET', 'wtc:{postgres:public.events:2026-03-04:77777}', '{"_v":1,"day":"2026-03-04","id":77777}');
is(sql(q{SELECT string_agg(problem, ',' ORDER BY problem) FROM wtcache.verify('events')}), 'differs,extra,missing',
	'verify() on the parent reports a changed value, a missing key and a key without a row');
is(sql(q{SELECT wtcache.resync('events')}), $rows, 'resync() on the parent requeues every row');
check_events('resync()');

#### Tags and cached queries over the parent and over one partition

sub qrun
{
	my ($q) = @_;
	$q =~ s/'/''/g;
	return sql(qq{SELECT q->>'n' FROM wtcache.query('$q') q});
}
sub runs { return sql(q{SELECT runs FROM wtcache.query_stats()}); }

my $qparent = q{SELECT count(*) AS n FROM events};
my $qpart = q{SELECT count(*) AS n FROM events_d4};
my $qpart_lit = $qpart =~ s/'/''/gr;
like(sql(qq{SELECT array_to_string(tag_keys, ',') FROM wtcache.query_key('$qpart_lit')}),
	qr/(^|,)wtc:\{postgres\}:tag:table%3Apublic\.events(,|$)/,
	'a query over one partition depends on the parent\'s table tag');

ok(wait_drained($node, $db), 'settled');
my %n = (parent => sql(q{SELECT count(*) FROM events}), part => sql(q{SELECT count(*) FROM events_d4}));
for my $case ([ 'parent', $qparent ], [ 'part', $qpart ])
{
	my ($name, $q) = @$case;
	is(qrun($q), $n{$name}, "query() over the $name");
	my $r0 = runs();
	is(qrun($q), $n{$name}, "query() over the $name again");
	is(runs() - $r0, 0, "... is served from Redis");
}

# Inserts into another partition (for the query over the parent) and into
# the queried partition, each through the parent and into the partition
# directly: the cached result is never the one from before the commit.
my @inserts = (
	[ 'parent', q{INSERT INTO events VALUES ('2026-03-05', 920, 1, 0, 'via parent')}, 'another partition through the parent' ],
	[ 'parent', q{INSERT INTO events_d5 (day, id, org_id, v) VALUES ('2026-03-05', 921, 1, 'direct')}, 'another partition directly' ],
	[ 'part', q{INSERT INTO events VALUES ('2026-03-04', 922, 1, 0, 'via parent')}, 'that partition through the parent' ],
	[ 'part', q{INSERT INTO events_d4 VALUES ('2026-03-04', 923, 1, 0, 'direct')}, 'that partition directly' ]);
for my $ins (@inserts)
{
	my ($name, $stmt, $what) = @$ins;
	my $q = $name eq 'parent' ? $qparent : $qpart;
	sql($stmt);
	$n{$_} = sql($_ eq 'parent' ? q{SELECT count(*) FROM events} : q{SELECT count(*) FROM events_d4}) for keys %n;
	is(qrun($q), $n{$name}, "query() over the $name right after an insert into $what");
	ok(wait_drained($node, $db), 'delivered');
	is(qrun($q), $n{$name}, "query() over the $name once delivered");
	my $r0 = runs();
	is(qrun($q), $n{$name}, "... cached again");
	is(runs() - $r0, 0, "... served from Redis");
}

# The parent's tag template, from a change made in a partition directly.
sub stamp { return redis_cmd($rp, 'GET', "wtc:{postgres}:tag:org%3A$_[0]") // '(none)'; }
my %stamp = map { $_ => stamp($_) } 1 .. 3;
sql(q{UPDATE events_d4 SET n = n + 1 WHERE id = 922});    # org 1
sql(q{UPDATE events_d5 SET org_id = 2 WHERE id = 921});   # org 1 to org 2
ok(wait_drained($node, $db), 'delivered');
isnt(stamp(1), $stamp{1}, 'a change in a partition invalidates the parent\'s org:{org_id} tag of its row');
isnt(stamp(2), $stamp{2}, 'a row moving to another org invalidates its new org too');
is(stamp(3), $stamp{3}, 'and not the tag of an org no change touched');

#### Capture disabled on one partition, as pg_restore --disable-triggers does

sql(q{ALTER TABLE events_d4 DISABLE TRIGGER ALL});
sql(q{UPDATE events SET v = 'while disabled' WHERE day = '2026-03-04' AND id = 908});
is(get_v('2026-03-04', '908'), 'while disabled', 'while a partition\'s triggers are disabled, reads return the table\'s row');
($ret, $out, $err) = try_sql(q{SELECT wtcache.wait('30s')});
is($out, 'f', 'and wait() cannot say Redis holds everything');
like($err, qr/set aside/, 'it says why') or diag($err);
sql(q{ALTER TABLE events_d4 ENABLE TRIGGER ALL});
check_events('ENABLE TRIGGER ALL on the partition');
is(get_v('2026-03-04', '908'), 'while disabled', 'the change made while disabled is read back');
sql(q{UPDATE events_d4 SET v = 'after enable' WHERE id = 909});
is(get_v('2026-03-04', '909'), 'after enable', 'and capture goes on');
check_events('a change after ENABLE TRIGGER ALL');

#### Attaching a table that is itself watched

sql(q{
CREATE TABLE events_d6 (day date NOT NULL, id int NOT NULL, org_id int NOT NULL, n int NOT NULL DEFAULT 0, v text,
                        PRIMARY KEY (day, id));
INSERT INTO events_d6 SELECT '2026-03-06', i, 1, 0, 'own ' || i FROM generate_series(601, 620) i;
SELECT wtcache.watch('events_d6', warm => true);
});
ok(wait_drained($node, $db), 'the table watched on its own is delivered');
is(nkeys('events_d6'), 20, 'under its own name');
($ret, $out, $err) = try_sql(q{ALTER TABLE events ATTACH PARTITION events_d6 FOR VALUES FROM ('2026-03-06') TO ('2026-03-07')});
is($ret, 0, 'a watched table is attached to a watched parent') or diag($err);
like($err, qr/NOTICE:.*events_d6/, 'with a NOTICE that its own watch ends');
is(get_v('2026-03-06', '605'), 'own 605', 'its rows are the parent\'s at once');
check_events('ATTACH of a watched table');
is(nkeys('events_d6'), 0, 'its keys under its own name are removed');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'events_d6'::regclass}), '0', 'and its own watch');

#### Refused: a partition of a watched tree

for my $part ('events_d4', 'events_default')
{
	($ret, $out, $err) = try_sql(qq{SELECT wtcache.watch('$part')});
	like($err, qr/ERROR:.*"events"/, "watch('$part') is refused, naming the watched parent") or diag($err);
}
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel <> 'events'::regclass
         AND rel IN (SELECT relid FROM pg_partition_tree('events'))}), '0', 'no partition got a watch');

#### unwatch() and watch() again

sql(q{SELECT wtcache.unwatch('events')});
ok(wait_drained($node, $db), 'unwatch delivered');
is(nkeys('events'), 0, 'unwatch() of the parent removes the keys of every partition');
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'wtcache%'
         AND tgrelid IN (SELECT relid FROM pg_partition_tree('events'))}), '0', 'and the capture triggers of the tree');
sql(q{INSERT INTO events VALUES ('2026-03-04', 930, 1, 0, 'unwatched')});
ok(wait_drained($node, $db), 'settled');
is(nkeys('events'), 0, 'a change after unwatch() reaches nothing');
sql(q{SELECT wtcache.watch('events', tags => ARRAY['org:{org_id}'], warm => true)});
check_events('watch() again');

#### TRUNCATE of the parent

sql(q{TRUNCATE events});
is(get_v('2026-03-05', '510'), '', 'right after TRUNCATE of the parent, its rows are gone');
check_events('TRUNCATE of the parent');
is(nkeys('events'), 0, 'no row key left');

#### Hash partitions with list and range sub-partitions, three levels deep

sql(q{
CREATE TABLE acc (org_id int NOT NULL, region text NOT NULL, id int NOT NULL, v text,
                  PRIMARY KEY (org_id, region, id)) PARTITION BY HASH (org_id);
CREATE TABLE acc_h0 PARTITION OF acc FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE acc_h1 PARTITION OF acc FOR VALUES WITH (MODULUS 3, REMAINDER 1) PARTITION BY LIST (region);
CREATE TABLE acc_h1_eu PARTITION OF acc_h1 FOR VALUES IN ('eu');
CREATE TABLE acc_h1_rest PARTITION OF acc_h1 DEFAULT;
CREATE TABLE acc_h2 PARTITION OF acc FOR VALUES WITH (MODULUS 3, REMAINDER 2) PARTITION BY RANGE (id);
CREATE TABLE acc_h2_lo PARTITION OF acc_h2 FOR VALUES FROM (MINVALUE) TO (500) PARTITION BY LIST (region);
CREATE TABLE acc_h2_lo_eu PARTITION OF acc_h2_lo FOR VALUES IN ('eu');
CREATE TABLE acc_h2_lo_rest PARTITION OF acc_h2_lo DEFAULT;
CREATE TABLE acc_h2_hi PARTITION OF acc_h2 FOR VALUES FROM (500) TO (MAXVALUE);
-- every org in every region
INSERT INTO acc SELECT 1 + i % 12, (ARRAY['eu', 'us', 'apac'])[1 + (i / 12) % 3], i, 'v' || i FROM generate_series(1, 1000) i;
SELECT wtcache.watch('acc', tags => ARRAY['org:{org_id}'], warm => true);
});
my @acc = ('org_id', 'region', 'id');
is(sql(q{SELECT count(DISTINCT tableoid) FROM acc}), '6', 'rows in all six leaves, down to the third level');
check_tree('acc', \@acc, 'watch() of a hash-partitioned tree');

sql(q{UPDATE acc SET v = 'changed' WHERE id % 7 = 0});
check_tree('acc', \@acc, 'updates in every leaf');

# one id per kind of move: across hash partitions, across list partitions
# of one hash partition, across the range partitions of another
my ($org_move) = split /\n/, sql(q{SELECT org_id || ':' || region || ':' || id FROM acc WHERE id = 11});
sql(q{UPDATE acc SET org_id = org_id + 1, v = 'other org' WHERE id % 11 = 0});
sql(q{UPDATE acc SET region = 'eu', v = 'to eu' WHERE region = 'us' AND id % 5 = 0});
sql(q{UPDATE acc SET id = id + 2000, v = 'hi' WHERE id BETWEEN 100 AND 140 AND id % 11 <> 0});
my ($o, $r, $i) = split /:/, $org_move;
is(sql(qq{SELECT wtcache.get('acc', '@{[$o + 1]}', '$r', '$i')->>'v'}), 'other org', 'right after a move across hash partitions, the new key reads');
is(sql(qq{SELECT wtcache.get('acc', '$o', '$r', '$i')}), '', 'and the old one is gone');
check_tree('acc', \@acc, 'moves between leaves at every level');

# Partitions created later below an intermediate level: a leaf, and a
# partitioned partition with its own leaf (four levels).
sql(q{
CREATE TABLE acc_h1_latam PARTITION OF acc_h1 FOR VALUES IN ('latam');
CREATE TABLE acc_h2_lo_latam PARTITION OF acc_h2_lo FOR VALUES IN ('latam') PARTITION BY RANGE (id);
CREATE TABLE acc_h2_lo_latam_all PARTITION OF acc_h2_lo_latam FOR VALUES FROM (MINVALUE) TO (MAXVALUE);
INSERT INTO acc SELECT o, 'latam', 3000 + o, 'latam ' || o FROM generate_series(1, 12) o;
INSERT INTO acc SELECT o, 'latam', 400 - o, 'latam lo ' || o FROM generate_series(1, 12) o;
});
ok(sql(q{SELECT count(*) FROM acc_h1_latam}) > 0 && sql(q{SELECT count(*) FROM acc_h2_lo_latam_all}) > 0,
	'the new partitions got rows');
check_tree('acc', \@acc, 'partitions created later at depth 3 and 4');

my $h1 = sql(q{SELECT count(*) FROM acc_h1});
sql(q{TRUNCATE acc_h1});
check_tree('acc', \@acc, 'TRUNCATE of an intermediate partitioned partition');
is(sql(q{SELECT count(*) FROM acc_h1}), '0', "it emptied its $h1 rows");
cmp_ok(nkeys('acc'), '>', 0, 'and only those');

($ret, $out, $err) = try_sql(q{ALTER TABLE acc_h2 DETACH PARTITION acc_h2_lo});
is($ret, 0, 'a partitioned sub-tree is detached') or diag($err);
check_tree('acc', \@acc, 'DETACH of a sub-tree');
sql(q{UPDATE acc_h2_lo SET v = 'detached'});
check_tree('acc', \@acc, 'writes to the detached sub-tree');
($ret, $out, $err) = try_sql(q{ALTER TABLE acc_h2 ATTACH PARTITION acc_h2_lo FOR VALUES FROM (MINVALUE) TO (500)});
is($ret, 0, 'and attached again') or diag($err);
check_tree('acc', \@acc, 'ATTACH of a sub-tree with rows at two levels');

# A cached query over the tree, invalidated by a write to a deep leaf
my ($qo, $leaf) = split /\|/, sql(q{SELECT org_id, tableoid::regclass FROM acc WHERE region = 'eu' AND id < 500 ORDER BY id LIMIT 1});
my $qorg = qq{SELECT count(*) AS n FROM acc WHERE org_id = $qo AND region = 'eu'};
my $n_org = sql(qq{SELECT count(*) FROM acc WHERE org_id = $qo AND region = 'eu'});
is(qrun($qorg), $n_org, 'query() over the hash tree');
ok(wait_drained($node, $db), 'settled');
is(qrun($qorg), $n_org, 'query() over the hash tree, cached');
sql(qq{INSERT INTO $leaf VALUES ($qo, 'eu', 0, 'directly into $leaf')});
is(qrun($qorg), $n_org + 1, "a row inserted directly into the leaf $leaf is counted at once");

for my $part ('acc_h2', 'acc_h2_lo_eu')
{
	($ret, $out, $err) = try_sql(qq{SELECT wtcache.watch('$part')});
	like($err, qr/ERROR:.*"acc"/, "watch('$part') is refused, naming the watched ancestor") or diag($err);
}
check_tree('acc', \@acc, 'after the refusals');

# DDL on the parent reaches every partition: a new column requeues every
# row in its new shape, a rename moves every key, a dropped sub-tree takes
# its keys with it.
sql(q{ALTER TABLE acc ADD COLUMN note text NOT NULL DEFAULT 'noted'});
check_tree('acc', \@acc, 'ADD COLUMN on the parent');
like(redis_cmd($rp, 'GET', "wtc:{postgres:public.acc:$qo:eu:0}") // '', qr/"note":"noted"/, 'rows of every partition have the new column');
sql(q{ALTER TABLE acc RENAME TO acc2});
check_tree('acc2', \@acc, 'RENAME of the parent');
is(nkeys('acc'), 0, 'no key left under the old name');
my $lo_rows = sql(q{SELECT count(*) FROM acc_h2_lo});
sql(q{DROP TABLE acc_h2_lo});
check_tree('acc2', \@acc, "DROP TABLE of a partitioned partition and its $lo_rows rows");

#### A leaf watched on its own; its parent then refused until it is unwatched

sql(q{
CREATE TABLE solo (k int NOT NULL, id int NOT NULL, v text, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
CREATE TABLE solo_a PARTITION OF solo FOR VALUES IN (1);
CREATE TABLE solo_b PARTITION OF solo FOR VALUES IN (2);
INSERT INTO solo SELECT 1 + i % 2, i, 'v' || i FROM generate_series(1, 40) i;
SELECT wtcache.watch('solo_a', warm => true);
UPDATE solo SET v = 'through the parent' WHERE id = 4;
});
check_tree('solo_a', [ 'k', 'id' ], 'a leaf watched on its own');
like(redis_cmd($rp, 'GET', 'wtc:{postgres:public.solo_a:1:4}') // '', qr/through the parent/,
	'keyed by the partition, also for a change made through the parent');
is(nkeys('solo'), 0, 'nothing under the parent\'s name');
($ret, $out, $err) = try_sql(q{SELECT wtcache.watch('solo')});
like($err, qr/ERROR:.*solo_a/, 'watch() of the parent is refused, naming the watched partition') or diag($err);
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'solo'::regclass}), '0', 'the parent is not watched');
is(nkeys('solo_a'), 20, 'the partition keeps its keys');
sql(q{SELECT wtcache.unwatch('solo_a'); SELECT wtcache.watch('solo', warm => true);});
check_tree('solo', [ 'k', 'id' ], 'the parent watched once the partition is unwatched');
is(nkeys('solo_a'), 0, 'and no key left under the partition\'s name');

#### Legacy inheritance: refused, not followed

sql(q{CREATE TABLE legacy (id int PRIMARY KEY, v text); CREATE TABLE legacy_child () INHERITS (legacy);});
($ret, $out, $err) = try_sql(q{SELECT wtcache.watch('legacy')});
like($err, qr/ERROR:.*inherit/i, 'watch() of a table with inheritance children is refused') or diag($err);
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'legacy'::regclass}), '0', 'it is not watched');

sql(q{CREATE TABLE plainw (id int PRIMARY KEY, v text); INSERT INTO plainw VALUES (1, 'a');
      SELECT wtcache.watch('plainw', warm => true);});
($ret, $out, $err) = try_sql(q{CREATE TABLE plainw_child () INHERITS (plainw)});
isnt($ret, 0, 'CREATE TABLE ... INHERITS (a watched table) is refused');
like($err, qr/ERROR:.*(watched|wtcache)/i, 'by wtcache, saying why') or diag($err);
is(sql(q{SELECT to_regclass('plainw_child') IS NULL}), 't', 'the child does not exist');
sql(q{CREATE TABLE loose (id int NOT NULL, v text)});
($ret, $out, $err) = try_sql(q{ALTER TABLE loose INHERIT plainw});
isnt($ret, 0, 'ALTER TABLE ... INHERIT a watched table is refused');
like($err, qr/ERROR:.*(watched|wtcache)/i, 'by wtcache, saying why') or diag($err);
is(sql(q{SELECT count(*) FROM pg_inherits WHERE inhparent = 'plainw'::regclass}), '0', 'no child was added');
sql(q{INSERT INTO plainw VALUES (2, 'b')});
check_tree('plainw', ['id'], 'the watched table goes on');

#### Unlogged partitions: crash recovery empties them, Redis would keep their rows

sql(q{
CREATE TABLE ul (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
CREATE TABLE ul_a PARTITION OF ul FOR VALUES IN (1);
INSERT INTO ul VALUES (1, 1), (1, 2);
SELECT wtcache.watch('ul', warm => true);
});
check_tree('ul', [ 'k', 'id' ], 'a tree of logged partitions');

sub unlogged_stops
{
	my ($stmt, $what) = @_;
	my ($ret, $out, $err) = try_sql($stmt);
	is($ret, 0, "$what is accepted") or diag($err);
	like($err, qr/WARNING:.*no longer watched.*unlogged/s, "$what: a WARNING that the tree is no longer watched")
	  or diag($err);
	is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'ul'::regclass}), '0', "$what: the watch is gone");
	ok(wait_drained($node, $db), "$what: delivered");
	is(nkeys('ul'), 0, "$what: the tree's keys are removed");
}

unlogged_stops(q{CREATE UNLOGGED TABLE ul_b PARTITION OF ul FOR VALUES IN (2)}, 'CREATE UNLOGGED TABLE ... PARTITION OF');
($ret, $out, $err) = try_sql(q{SELECT wtcache.watch('ul')});
like($err, qr/ERROR:.*unlogged/, 'watch() of a tree with an unlogged partition is refused') or diag($err);

sql(q{ALTER TABLE ul_b SET LOGGED; SELECT wtcache.watch('ul', warm => true);});
check_tree('ul', [ 'k', 'id' ], 'watched again once every partition is logged');
unlogged_stops(q{ALTER TABLE ul_a SET UNLOGGED}, 'SET UNLOGGED of a partition');

sql(q{ALTER TABLE ul_a SET LOGGED; SELECT wtcache.watch('ul', warm => true);
      CREATE UNLOGGED TABLE ul_c (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id));
      INSERT INTO ul_c VALUES (3, 1);});
check_tree('ul', [ 'k', 'id' ], 'watched again');
unlogged_stops(q{ALTER TABLE ul ATTACH PARTITION ul_c FOR VALUES IN (3)}, 'ATTACH of an unlogged table');

#### One owner per tree
# wtcache reads a watched table as its owner, and a read through a
# partitioned table runs its partitions' index predicates: a partition's
# owner must not get its code run with the root owner's rights.

sql(q{CREATE ROLE tree_owner; CREATE ROLE part_owner; GRANT CREATE ON SCHEMA public TO tree_owner, part_owner;
      CREATE TABLE own (k int NOT NULL, id int NOT NULL, v text, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE own_a PARTITION OF own FOR VALUES IN (1);
      CREATE TABLE own_b PARTITION OF own FOR VALUES IN (2);
      INSERT INTO own VALUES (1, 1, 'a'), (2, 1, 'b');
      ALTER TABLE own OWNER TO tree_owner; ALTER TABLE own_a OWNER TO tree_owner;
      ALTER TABLE own_b OWNER TO part_owner;});
($ret, $out, $err) = $node->psql($db, q{SELECT wtcache.watch('own')});
like($err, qr/partition "own_b" of watched table "own" has another owner/, 'a tree of two owners is refused');
sql(q{ALTER TABLE own_b OWNER TO tree_owner; SELECT wtcache.watch('own', warm => true)});
check_tree('own', [ 'k', 'id' ], 'a tree of one owner');
($ret, $out, $err) = $node->psql($db, q{ALTER TABLE own_b OWNER TO part_owner});
like($err, qr/table "own" is no longer watched: its partition "own_b" has another owner/,
	'a partition given to another owner ends the watch, with a WARNING');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'own'::regclass}), '0', 'the watch is gone');
ok(wait_drained($node, $db), 'its removal delivered');
is(nkeys('own'), 0, 'and its keys');
sql(q{ALTER TABLE own_b OWNER TO tree_owner; SELECT wtcache.watch('own', warm => true)});
check_tree('own', [ 'k', 'id' ], 'watched again');
# what goes around the statement hooks (here a superuser's catalog edit)
# meets the worker's own check
sql(q{UPDATE pg_class SET relowner = 'part_owner'::regrole WHERE oid = 'own_a'::regclass});
sql(q{UPDATE own SET v = 'after' WHERE k = 2});
$node->poll_query_until($db, q{SELECT count(*) > 0 FROM wtcache.status WHERE table_name = 'own'::regclass AND set_aside > 0})
  or diag(sql(q{SELECT * FROM wtcache.status}));
like(slurp_file($node->logfile), qr/changes of public\.own set aside: .*partition "own_a" of watched table "own" has another owner/,
	'the worker does not read a tree of two owners: its changes are set aside');
is(get_own(2, 1), 'after', 'and reads of it go to the table');
sql(q{UPDATE pg_class SET relowner = 'tree_owner'::regrole WHERE oid = 'own_a'::regclass});
sql(q{SELECT wtcache.retry_set_aside('own')});
check_tree('own', [ 'k', 'id' ], 'one owner again, retried');

sub get_own { return sql(qq{SELECT wtcache.get('own', '$_[0]', '$_[1]')->>'v'}); }

#### TRUNCATE of a sub-tree by a role granted TRUNCATE on it only
# PostgreSQL checks the right on the named table, not on its partitions.

sql(q{CREATE TABLE tr (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY RANGE (k);
      CREATE TABLE tr_a PARTITION OF tr FOR VALUES FROM (1) TO (2);
      CREATE TABLE tr_m PARTITION OF tr FOR VALUES FROM (2) TO (4) PARTITION BY RANGE (k);
      CREATE TABLE tr_m1 PARTITION OF tr_m FOR VALUES FROM (2) TO (3);
      CREATE TABLE tr_m2 PARTITION OF tr_m FOR VALUES FROM (3) TO (4);
      INSERT INTO tr SELECT 1 + i % 3, i FROM generate_series(1, 30) i;
      SELECT wtcache.watch('tr', warm => true);
      CREATE ROLE truncator; GRANT TRUNCATE ON tr_m TO truncator;});
check_tree('tr', [ 'k', 'id' ], 'before TRUNCATE');
sql(q{SET ROLE truncator; TRUNCATE tr_m; RESET ROLE});
check_tree('tr', [ 'k', 'id' ], 'TRUNCATE of a sub-tree by its grantee');

#### DROP SCHEMA of a whole tree reads none of its partitions

sql(q{CREATE SCHEMA gone; CREATE TABLE gone.t (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE gone.t_a PARTITION OF gone.t FOR VALUES IN (1);
      INSERT INTO gone.t SELECT 1, i FROM generate_series(1, 50) i;
      SELECT wtcache.watch('gone.t', warm => true);});
ok(wait_drained($node, $db), 'a tree in its own schema delivered');
is(sql(q{BEGIN; DROP SCHEMA gone CASCADE;
         SELECT count(*) FROM wtcache.queue WHERE keys IS NOT NULL AND xmin::text = txid_current()::text; ROLLBACK;}),
	'0', 'DROP SCHEMA ... CASCADE of the whole tree queues no partition key: the table\'s own removal covers them');
sql(q{DROP SCHEMA gone CASCADE});
ok(wait_drained($node, $db), 'the drop delivered');
is(scalar @{ redis_row_keys($rp, 'wtc:{postgres:gone.t:*}') }, 0, 'and its keys are gone');

#### DETACH CONCURRENTLY cancelled during its wait
# Its first transaction hides the partition from the parent; a writer of
# the partition that commits around it must not leave its row in Redis
# when the second transaction never runs.

sql(q{CREATE TABLE dc (k int NOT NULL, id int NOT NULL, v text, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE dc_a PARTITION OF dc FOR VALUES IN (1);
      CREATE TABLE dc_b PARTITION OF dc FOR VALUES IN (2);
      INSERT INTO dc SELECT 1 + i % 2, i FROM generate_series(1, 10) i;
      SELECT wtcache.watch('dc', warm => true);});
check_tree('dc', [ 'k', 'id' ], 'before DETACH CONCURRENTLY');
my $locker = $node->background_psql($db);
$locker->query_safe(q{BEGIN; LOCK TABLE dc IN SHARE UPDATE EXCLUSIVE MODE;});
my $detacher = $node->background_psql($db, on_error_stop => 0);
$detacher->query_until(qr/go\n/, "\\echo go\nALTER TABLE dc DETACH PARTITION dc_a CONCURRENTLY;\n\\echo detach-done\n");
$node->poll_query_until($db, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE dc DETACH%' AND wait_event_type = 'Lock'})
  or die 'DETACH does not wait for the locker';
# a writer of the partition commits while DETACH waits for the parent:
# DETACH reads the partition's keys only once it has the parent
sql(q{UPDATE dc SET v = 'late' WHERE k = 1 AND id = 2});
ok(wait_drained($node, $db), 'the late update is delivered');
# an older transaction holds DETACH in its second phase, where it is cancelled
my $older = $node->background_psql($db);
$older->query_safe(q{BEGIN; SELECT count(*) FROM dc;});
$locker->query_safe(q{COMMIT;});
$node->poll_query_until($db, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE dc DETACH%' AND wait_event = 'virtualxid'})
  or die 'DETACH does not wait for the older transaction';
sql(q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE dc DETACH%' AND pid <> pg_backend_pid()});
$detacher->query_until(qr/detach-done\n/, '');
$older->query_safe(q{COMMIT;});
is(sql(q{SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'dc_a'::regclass}), 't', 'the cancelled DETACH left dc_a pending');
check_tree('dc', [ 'k', 'id' ], 'DETACH CONCURRENTLY cancelled in its wait');
is(sql(q{SELECT wtcache.get('dc', '1', '2')}), '', 'get() of the late-updated row of the detached partition is null');
$_->quit for ($locker, $detacher, $older);
sql(q{ALTER TABLE dc DETACH PARTITION dc_a FINALIZE});
check_tree('dc', [ 'k', 'id' ], 'DETACH ... FINALIZE');

#### A subscriber's partition emptied by a replicated TRUNCATE
# The apply worker truncates with no object access hook call; the
# partition's own BEFORE TRUNCATE trigger, enabled for replica mode, queues
# its keys.

my $pub = PostgreSQL::Test::Cluster->new('publisher');
$pub->init(allows_streaming => 'logical');
$pub->start;
$pub->safe_psql($db, q{CREATE TABLE rep_a (id int, day int, v text, PRIMARY KEY (id, day));
    INSERT INTO rep_a SELECT i, 1, 'v' || i FROM generate_series(1, 10) i;
    CREATE PUBLICATION rep_pub FOR TABLE rep_a;});
sql(q{CREATE TABLE rep (id int, day int, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
      CREATE TABLE rep_a PARTITION OF rep FOR VALUES FROM (1) TO (2);
      CREATE TABLE rep_b PARTITION OF rep FOR VALUES FROM (2) TO (3);
      INSERT INTO rep_b VALUES (100, 2, 'b');
      SELECT wtcache.watch('rep', warm => true);});
is(sql(q{SELECT string_agg(tgrelid::regclass::text || ':' || tgenabled::text, ' ' ORDER BY tgrelid::regclass::text)
         FROM pg_trigger WHERE tgname = 'wtcache_truncate_replica' AND tgrelid::regclass::text LIKE 'rep%'}),
	'rep_a:R rep_b:R', 'every leaf partition has a TRUNCATE trigger for replica mode');
my $connstr = $pub->connstr($db);
sql(qq{CREATE SUBSCRIPTION rep_sub CONNECTION \$cs\$$connstr\$cs\$ PUBLICATION rep_pub});
$node->wait_for_subscription_sync($pub, 'rep_sub');
$pub->safe_psql($db, q{INSERT INTO rep_a VALUES (11, 1, 'v11')});
$pub->wait_for_catchup('rep_sub');
is(sql(q{SELECT count(*) FROM rep}), '12', 'replicated rows arrived in the partition');
check_tree('rep', [ 'id', 'day' ], 'replicated rows');
$pub->safe_psql($db, q{TRUNCATE rep_a});
$pub->wait_for_catchup('rep_sub');
is(sql(q{SELECT count(*) FROM rep}), '1', 'the replicated TRUNCATE emptied the partition');
check_tree('rep', [ 'id', 'day' ], 'a replicated TRUNCATE of a partition');
sql(q{DROP SUBSCRIPTION rep_sub});
$pub->stop;
sql(q{ALTER TABLE rep DETACH PARTITION rep_b});
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgname = 'wtcache_truncate_replica' AND tgrelid = 'rep_b'::regclass}), '0',
	'a detached partition loses it');
sql(q{SELECT wtcache.unwatch('rep')});
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'wtcache%' AND tgrelid IN ('rep'::regclass, 'rep_a'::regclass)}), '0',
	'unwatch() leaves no trigger in the tree');

#### A transaction left open after an ATTACH stalls nothing
# The tree lock is taken at its commit: the worker never waits for a user
# who keeps the transaction open, and the transaction's later DDL on the
# tree does not deadlock with the worker.

sql(q{CREATE TABLE rot (k int NOT NULL, id int NOT NULL, v text, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE rot_1 PARTITION OF rot FOR VALUES IN (1);
      CREATE TABLE rot_2 PARTITION OF rot FOR VALUES IN (2);
      CREATE TABLE rot_3 (LIKE rot); INSERT INTO rot_3 VALUES (3, 1, 'new');
      CREATE TABLE other_t (id int PRIMARY KEY, v text);
      INSERT INTO rot VALUES (1, 1, 'a'), (2, 1, 'b');
      SELECT wtcache.watch('rot', warm => true); SELECT wtcache.watch('other_t');});
check_tree('rot', [ 'k', 'id' ], 'before the rotation');
my $rotator = $node->background_psql($db, on_error_stop => 0);
$rotator->query_safe(q{BEGIN; ALTER TABLE rot ATTACH PARTITION rot_3 FOR VALUES IN (3);});
sql(q{INSERT INTO rot VALUES (1, 2, 'during'); INSERT INTO other_t VALUES (1, 'during')});
is(sql(q{SELECT wtcache.wait('20s')}), 't', 'changes of the tree and of another table are delivered while the ATTACH transaction stays open');
my $rot_out = $rotator->query(q{ALTER TABLE rot DETACH PARTITION rot_1; COMMIT;});
is($rotator->{stderr}, '', 'its DETACH in the same transaction is not refused');
$rotator->quit;
check_tree('rot', [ 'k', 'id' ], 'ATTACH and DETACH in one transaction');

#### DETACH CONCURRENTLY waits in PostgreSQL's lock order

sql(q{CREATE TABLE lo (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE lo_1 PARTITION OF lo FOR VALUES IN (1);
      CREATE TABLE lo_2 PARTITION OF lo FOR VALUES IN (2);
      INSERT INTO lo VALUES (1, 1), (2, 1);
      SELECT wtcache.watch('lo', warm => true);});
my $holder = $node->background_psql($db);
$holder->query_safe(q{BEGIN; LOCK TABLE ONLY lo IN ACCESS EXCLUSIVE MODE;});
my $lo_detacher = $node->background_psql($db, on_error_stop => 0);
$lo_detacher->query_until(qr/go\n/, "\\echo go\nALTER TABLE lo DETACH PARTITION lo_1 CONCURRENTLY;\n\\echo lo-done\n");
$node->poll_query_until($db, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE lo DETACH%' AND wait_event_type = 'Lock'})
  or die 'DETACH does not wait';
is(sql(q{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE a.query LIKE 'ALTER TABLE lo DETACH%' AND l.granted AND l.relation = 'lo_1'::regclass}),
	'0', 'while it waits for the parent, DETACH CONCURRENTLY holds nothing on the partition');
$holder->query_safe(q{TRUNCATE lo; COMMIT;});
$lo_detacher->query_until(qr/lo-done\n/, '');
$holder->quit; $lo_detacher->quit;
check_tree('lo', [ 'k', 'id' ], 'a TRUNCATE of the parent that DETACH CONCURRENTLY waited for');

#### The partitions' replica-mode TRUNCATE triggers are guarded like the others

sql(q{CREATE TABLE rg (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE rg_1 PARTITION OF rg FOR VALUES IN (1);
      INSERT INTO rg VALUES (1, 1), (1, 2);
      SELECT wtcache.watch('rg', warm => true);});
sql(q{ALTER TABLE rg_1 DISABLE TRIGGER ALL; ALTER TABLE rg_1 ENABLE TRIGGER ALL});
is(sql(q{SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'rg_1'::regclass AND tgname = 'wtcache_truncate_replica'}), 'R',
	'ENABLE TRIGGER ALL gives it back its replica mode');
sql(q{ALTER TABLE rg_1 DISABLE TRIGGER wtcache_truncate_replica});
is(sql(q{SELECT wtcache.wait('1s')}), 'f', 'disabling it holds the tree\'s reads to the table, as for a capture trigger');
sql(q{ALTER TABLE rg_1 ENABLE TRIGGER wtcache_truncate_replica});
check_tree('rg', [ 'k', 'id' ], 'enabled again');
is(sql(q{SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'rg_1'::regclass AND tgname = 'wtcache_truncate_replica'}), 'R',
	'in replica mode again');
is(sql(q{BEGIN; SET LOCAL session_replication_role = replica; TRUNCATE rg_1;
         SELECT count(*) FROM wtcache.queue WHERE keys IS NOT NULL AND xmin::text = txid_current()::text; ROLLBACK;}),
	'1', 'a TRUNCATE in replica mode reads the partition once');
($ret, $out, $err) = $node->psql($db, q{DROP TRIGGER wtcache_truncate_replica ON rg_1});
like($err, qr/table public\.rg is no longer watched: its capture trigger wtcache_truncate_replica was dropped/,
	'dropping it ends the watch of the tree, with a WARNING');
ok(wait_drained($node, $db), 'and its keys are removed');
is(nkeys('rg'), 0, 'all of them');

#### CREATE TABLE IF NOT EXISTS ... PARTITION OF an existing table does nothing

sql(q{CREATE TABLE ine (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE ine_1 PARTITION OF ine FOR VALUES IN (1);
      CREATE UNLOGGED TABLE lonely (k int, id int);
      SELECT wtcache.watch('ine');});
($ret, $out, $err) = $node->psql($db, q{CREATE TABLE IF NOT EXISTS lonely PARTITION OF ine FOR VALUES IN (2)});
unlike($err, qr/no longer watched/, 'an unrelated existing table is left alone');
is(sql(q{SELECT count(*) FROM wtcache.watched WHERE rel = 'ine'::regclass}), '1', 'and the watch stays');
is(sql(q{SELECT count(*) FROM pg_trigger WHERE tgrelid = 'lonely'::regclass}), '0', 'no trigger lands on it');

#### A partition a superuser creates in a tree of another owner keeps the watch

sql(q{CREATE ROLE app_owner; GRANT CREATE ON SCHEMA public TO app_owner;
      CREATE TABLE su (k int NOT NULL, id int NOT NULL, PRIMARY KEY (k, id)) PARTITION BY LIST (k);
      CREATE TABLE su_1 PARTITION OF su FOR VALUES IN (1);
      ALTER TABLE su OWNER TO app_owner; ALTER TABLE su_1 OWNER TO app_owner;
      SELECT wtcache.watch('su');});
($ret, $out, $err) = $node->psql($db, q{CREATE TABLE su_2 PARTITION OF su FOR VALUES IN (2); INSERT INTO su VALUES (2, 1)});
unlike($err, qr/no longer watched/, 'a superuser\'s partition keeps the watch: its code has the owner\'s rights anyway');
check_tree('su', [ 'k', 'id' ], 'a superuser\'s partition');

#### Nothing went wrong in the worker

unlike(slurp_file($node->logfile), qr/terminated by signal|wtcache: could not deliver/,
	'no process crashed and no batch failed');

$node->stop;
done_testing();
