# Consistency fuzzer: concurrent writers run random DML from a seeded PRNG
# against four watched tables while readers check, read after read, that
# wtcache.get() / get_many() / get_row() never return anything older than
# what had committed before the read started, and faults are injected
# (Redis stopped and restarted empty, Redis killed with kill -9 and
# restarted with or without its AOF, the delivery worker SIGKILLed,
# PostgreSQL stopped in immediate mode, and the connections between
# PostgreSQL and Redis stalled past wtcache.command_timeout or cut: all of
# PostgreSQL's Redis traffic goes through test/lib/redis_proxy.pl, while
# the checks read Redis directly; and the corners of PostgreSQL's own
# behaviour: a watched table dropped while its changes are delivered,
# ALTER COLUMN TYPE of a key under the write load, writes under
# session_replication_role = replica, and a crash while commits with
# synchronous_commit = off are visible but not flushed; see "Faults"
# below).  At the
# end Redis must equal every table, key for key (compare_table, verify(),
# a get() of every row), with nothing left counted as pending (reads of
# every row are served by Redis), and a session that kept reading through
# a Redis outage must read Redis again once wtcache.read_retry_interval
# has passed.  The delivery worker must never fail (no ERROR of its own in
# the server log: it reports Redis trouble as LOG lines and goes on).
#
# Knobs (environment): FUZZ_SEED (default random, printed), FUZZ_SECONDS
# (40: the short form of the test suite), FUZZ_SESSIONS (writers, 4),
# FUZZ_READERS (2), FUZZ_FAULTS (1 = inject faults, 0 = none), FUZZ_VERBOSE
# (1: progress on stderr, as test/fuzz.sh sets it).  test/fuzz.sh runs this
# file standalone for longer; every failure says how to replay its seed.
#
# FUZZ_SELFTEST=1 checks the checker: the test plants older versions of
# rows in Redis during the run and after the drain (as a bug would), and
# passes only if the readers report stale reads and the final comparison
# reports drift (the checks that then fail are marked TODO).
#
# FUZZ_AUDIT=1 is for post-mortems: every row written to wtcache.queue is
# copied, with its transaction, to fz_queue_audit, and commit timestamps
# are tracked (pg_xact_commit_timestamp()); every row the worker deletes
# (acknowledges) is recorded in fz_queue_acked.  The data directory, the Redis
# AOF and the logs stay in tmp_check/ after a failure.
#
# The seed fixes the configuration, each session's statement stream and the
# fault schedule; which statements meet each other depends on timing, so a
# replay explores the same neighbourhood rather than the same interleaving.
#
# This file is UTF-8 and deliberately has no "use utf8": strings are bytes,
# as they go to psql and come back from it.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run ();
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;
use WtcacheFuzz::Generate;
use WtcacheFuzz::Sessions;

############################################################################
# Knobs, seed, replay line
############################################################################

my $seed = $ENV{FUZZ_SEED};
$seed = 1 + int(rand(2**31 - 2)) if !defined $seed || $seed eq '';
die "FUZZ_SEED must be a positive integer, not '$seed'\n" unless $seed =~ /^[1-9][0-9]{0,9}$/;
my $secs = $ENV{FUZZ_SECONDS} // 40;
my $nwriters = $ENV{FUZZ_SESSIONS} // 4;
my $nreaders = $ENV{FUZZ_READERS} // 2;
my $faults_on = $ENV{FUZZ_FAULTS} // 1;
my $verbose = $ENV{FUZZ_VERBOSE} // 0;
my $selftest = $ENV{FUZZ_SELFTEST} // 0;
my $audit = $ENV{FUZZ_AUDIT} // 0;
for ([ FUZZ_SECONDS => $secs ], [ FUZZ_SESSIONS => $nwriters ], [ FUZZ_READERS => $nreaders ], [ FUZZ_FAULTS => $faults_on ])
{
	die "$_->[0] must be a non-negative integer, not '$_->[1]'\n" unless $_->[1] =~ /^[0-9]+$/;
}
die "FUZZ_SESSIONS must be at least 1\n" if $nwriters < 1;

my $replay = "FUZZ_SEED=$seed FUZZ_SECONDS=$secs"
  . ($nwriters != 4 ? " FUZZ_SESSIONS=$nwriters" : '')
  . ($nreaders != 2 ? " FUZZ_READERS=$nreaders" : '')
  . ($faults_on ? '' : ' FUZZ_FAULTS=0')
  . ($selftest ? ' FUZZ_SELFTEST=1' : '')
  . ($audit ? ' FUZZ_AUDIT=1' : '')
  . ' bash test/fuzz.sh';

# The test's STDERR goes to its log file; Test::More's failure output goes
# to the terminal too (prove shows it), and to the log.
sub to_terminal
{
	my $fh = Test::More->builder->failure_output;
	print $fh "$_[0]\n";
	return;
}

# Shown at once, also when prove hides the notes, so that a run that hangs
# or is interrupted can still be replayed.
to_terminal("fuzz: seed $seed, $secs s, $nwriters writers, $nreaders readers, faults "
  . ($faults_on ? 'on' : 'off') . " (replay: $replay)");
note("fuzz: seed $seed (replay: $replay)");

my $parent_pid = $$;
my $logdir = $PostgreSQL::Test::Utils::log_path;
my %children;    # pid => name, of the sessions forked below

# A die anywhere in the parent (a helper croaking, a psql that fails) still
# says how to replay, and the forked sessions do not outlive the test.
$SIG{__DIE__} = sub {
	return if !defined $^S || $^S || $$ != $parent_pid;
	diag("fuzz died: seed $seed; replay: $replay");
};
END
{
	if ($$ == $parent_pid)
	{
		kill 'KILL', $_ for keys %children;
	}
}

# ok() that adds the seed and the replay line to the diagnostics of a failure.
sub fz_ok
{
	my ($ok, $name, @diag) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok($ok, $name) or diag(join("\n", grep { defined && $_ ne '' } @diag), "\nseed $seed; replay: $replay");
	return $ok;
}

sub progress
{
	my ($msg) = @_;
	note($msg);
	to_terminal("fuzz: $msg") if $verbose;
	return;
}

############################################################################
# Setup
############################################################################

srand($seed);

# AOF with appendfsync always: Redis writes and fsyncs the AOF before it
# answers, so a kill -9 keeps everything it acknowledged, and "killed and
# restarted" is a restart with the data (or, when the fault says so,
# without it: the fault then wipes the files).
my $redis = start_redis(appendonly => 1);
my $rp = $redis->port;    # the checks and the selftest talk to Redis here

# PostgreSQL (the worker and every backend's cached reads) reaches Redis
# only through this proxy, which the proxy faults stall or cut.
my $proxy = start_redis_proxy(target_port => $rp);
my $pp = $proxy->port;

# A stall must outlast wtcache.command_timeout (the worker's limit per
# Redis reply) and wtcache.read_timeout (250 ms, the readers'), so that
# both run into their limits; it is shorter here than the 5 s of the other
# tests to keep stalls short.
my $command_timeout_ms = 1500;

# Part of the configuration comes from the seed: small batches interleave
# the worker with the writers more; a tiny pending filter makes collisions
# (which must only send reads to the table) common.
my $batch = pick(100, 1000, 10000);
my $poll = pick('500ms', '5s');
my $slots = pick(1024, 1048576);
my $node = new_wtcache_node('fuzz', redis_port => $pp, extra_conf => qq{
wtcache.batch_size = $batch
wtcache.poll_interval = '$poll'
wtcache.pending_slots = $slots
wtcache.command_timeout = $command_timeout_ms
wtcache.read_timeout = 250
# expected errors (duplicate keys, deadlocks) without their statements,
# which may carry values of tens of kB
deadlock_timeout = '100ms'
log_min_error_statement = fatal
track_commit_timestamp = } . ($audit ? 'on' : 'off') . qq{
max_connections = } . (20 + $nwriters + $nreaders) . qq{
log_min_messages = info
# The WAL writer flushes async commits (the async_crash fault's) only
# every 2 s, so that some are visible and not yet durable when the crash
# comes.
wal_writer_delay = '2s'
});
my $db = 'postgres';
progress("config: batch_size $batch, poll_interval $poll, pending_slots $slots; "
	  . "Redis on port $rp (AOF, appendfsync always), PostgreSQL through the proxy on port $pp");

sub sql { return $node->safe_psql($db, $_[0]); }

# fz_dead: every incarnation that died (deleted, moved by a key change,
# truncated), with the top-level transaction that killed it.  The readers'
# check compares it with their snapshots.
sql(q{
CREATE SEQUENCE fz_inc;
CREATE TABLE fz_dead (tbl text NOT NULL, inc bigint NOT NULL, xid xid8 NOT NULL);
CREATE INDEX ON fz_dead (inc);
CREATE TABLE fz_int (id int PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                     name text, qty int, price numeric, tags int[], doc jsonb, at timestamptz, big text);
CREATE TABLE fz_comp (org text, n int, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                      v text, note text, amount numeric, at timestamptz, PRIMARY KEY (org, n));
CREATE TABLE fz_text (k text PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                      payload jsonb, amount numeric, at timestamptz, tags int[], big text);
CREATE TABLE fz_inv (id int PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                     v text, doc jsonb, at timestamptz, qty int);
CREATE FUNCTION fz_track_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO fz_dead SELECT %L, inc, pg_current_xact_id() FROM %I', TG_TABLE_NAME, TG_TABLE_NAME);
    RETURN NULL;
END $$;
});

# inc and ver are set by a BEFORE trigger, not by the statements, so that
# every path (ON CONFLICT DO UPDATE, an UPDATE re-checked after a
# concurrent one, COPY) counts exactly once: INSERT starts an incarnation
# at ver 0, an UPDATE that keeps the key adds 1 to ver, one that changes
# the key ends the incarnation and starts another.  (A user trigger that
# rewrites NEW is also something wtcache's capture must live with.)  The
# key comparison is dynamic SQL: the alter_key fault changes the type of
# a key column, and PL/pgSQL's cached plan of NEW.id would then fail in
# every session that ran it before ("type of parameter ... does not match
# that when preparing the plan").  The triggers fire whatever
# session_replication_role says (ENABLE ALWAYS), as wtcache's do, so that
# inc, ver and fz_dead are kept by the writers' replica-role transactions
# too.
for my $tn (fuzz_tables())
{
	my $t = fuzz_table($tn);
	my $new = join(', ', map { "(\$1).$_" } @{ $t->{keycols} });
	my $old = join(', ', map { "(\$2).$_" } @{ $t->{keycols} });
	sql(qq{
CREATE FUNCTION fz_track_$tn() RETURNS trigger LANGUAGE plpgsql AS \$\$
DECLARE
    moved boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.inc := nextval('fz_inc');
        NEW.ver := 0;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE 'SELECT ROW($new) IS DISTINCT FROM ROW($old)' INTO moved USING NEW, OLD;
        IF moved THEN
            INSERT INTO fz_dead VALUES ('$tn', OLD.inc, pg_current_xact_id());
            NEW.inc := nextval('fz_inc');
            NEW.ver := 0;
        ELSE
            NEW.inc := OLD.inc;
            NEW.ver := OLD.ver + 1;
        END IF;
        RETURN NEW;
    END IF;
    INSERT INTO fz_dead VALUES ('$tn', OLD.inc, pg_current_xact_id());
    RETURN OLD;
END \$\$;
CREATE TRIGGER fz_track BEFORE INSERT OR UPDATE OR DELETE ON $tn
    FOR EACH ROW EXECUTE FUNCTION fz_track_$tn();
CREATE TRIGGER fz_track_truncate BEFORE TRUNCATE ON $tn
    FOR EACH STATEMENT EXECUTE FUNCTION fz_track_truncate();
ALTER TABLE $tn ENABLE ALWAYS TRIGGER fz_track;
ALTER TABLE $tn ENABLE ALWAYS TRIGGER fz_track_truncate;
});
}

if ($audit)
{
	sql(q{
CREATE TABLE fz_queue_audit (id bigint, relid oid, keys text[], table_key text, per_table boolean,
                             xid xid8, at timestamptz);
CREATE FUNCTION fz_queue_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fz_queue_audit VALUES (NEW.id, NEW.relid, NEW.keys, NEW.table_key, NEW.per_table,
                                       pg_current_xact_id(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER fz_queue_audit AFTER INSERT ON wtcache.queue FOR EACH ROW EXECUTE FUNCTION fz_queue_audit();
CREATE TABLE fz_queue_acked (id bigint, pid int, xid xid8, at timestamptz);
CREATE FUNCTION fz_queue_acked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fz_queue_acked VALUES (OLD.id, pg_backend_pid(), pg_current_xact_id(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER fz_queue_acked AFTER DELETE ON wtcache.queue FOR EACH ROW EXECUTE FUNCTION fz_queue_acked();
ALTER TABLE wtcache.queue ENABLE ALWAYS TRIGGER fz_queue_audit;
ALTER TABLE wtcache.queue ENABLE ALWAYS TRIGGER fz_queue_acked;
});
}

# Initial rows: fz_int's exist before its watch (warm => true pushes
# them), the others are inserted under the watch.
sql(initial_rows('fz_int', 200));
sql(q{SELECT wtcache.watch('fz_int', warm => true)});
sql(q{SELECT wtcache.watch('fz_comp')});
sql(q{SELECT wtcache.watch('fz_text')});
sql(q{SELECT wtcache.watch('fz_inv', mode => 'invalidate')});
sql(initial_rows($_, 150)) for qw(fz_comp fz_text fz_inv);

# fz_own: a watched table only the test itself writes (the sessions do
# not), so that Redis can be compared with it exactly in the middle of the
# run: the async_crash fault commits into rows 1 to 70 with
# synchronous_commit = off up to the crash, the replica_role fault changes
# rows 1001 to 1020 under session_replication_role = replica.
sql(q{
CREATE TABLE fz_own (id int PRIMARY KEY, n int, v text, at timestamptz);
SELECT wtcache.watch('fz_own');
INSERT INTO fz_own SELECT g, 0, 'own ' || g, now() FROM generate_series(1, 50) g;
INSERT INTO fz_own SELECT g, NULL, 'own ' || g, now() FROM generate_series(1001, 1020) g;
});
fz_ok(wait_drained($node, $db, '60s'), 'initial rows delivered');
my $initial = sql(q{SELECT (SELECT count(*) FROM fz_int) + (SELECT count(*) FROM fz_comp)
                         + (SELECT count(*) FROM fz_text) + (SELECT count(*) FROM fz_inv)});
progress("initial rows: $initial");

my $psql_bin = $node->installed_command('psql');
my $connstr = $node->connstr($db);
my $copydir = PostgreSQL::Test::Utils::tempdir('fuzz');

############################################################################
# Faults
############################################################################

# The kinds of fault (see inject() below):
#   redis_empty  Redis stopped (SIGTERM), restarted empty;
#   redis_kill9  Redis killed (kill -9), restarted with its AOF or, at
#                random, without it;
#   redis_aof    Redis killed (kill -9), restarted with its AOF
#                (appendfsync always): it must come back with everything it
#                acknowledged, and the worker must not take it for a Redis
#                that lost data;
#   worker_kill  the delivery worker SIGKILLed (a crash restart);
#   pg_restart   PostgreSQL stopped in immediate mode and started;
#   proxy_stall  the proxy between PostgreSQL and Redis relays nothing for
#                longer than wtcache.command_timeout (the worker and the
#                readers run into their timeouts), then relays what it held,
#                late, or (at random) cuts every connection instead;
#   proxy_cut    the proxy closes every open connection at once, one to
#                three times 200 ms apart;
#   drop_table   three to seven rounds of: fz_drop (a fifth watched table,
#                the sessions do not use it) created and watched, hundreds
#                to thousands of rows written to it, and the table dropped
#                at once, once the worker has begun pushing them, or after
#                a random pause (its changes queued or in the worker's
#                hands); then created once more with rows, which must be
#                in Redis at the end without the dropped ones' keys (the
#                name is reused).  The worker must neither crash nor fail
#                on the dropped table (its log lines, the postmaster's start
#                time) and delivery goes on;
#   alter_key    ALTER TABLE ... ALTER COLUMN <key column> TYPE of fz_int,
#                fz_inv or fz_comp (int to bigint, or back) under the
#                writers' load, retried on a lock timeout or deadlock; the
#                capture triggers must be back, ENABLE ALWAYS, and the
#                writers must go on writing the table;
#   replica_role for 2 to 5 s most writer transactions run with
#                session_replication_role = replica, as a logical
#                replication apply worker does (3% do at any time), and
#                the fault itself changes rows of fz_own (written only by
#                the test) under that role; the capture triggers fire
#                ENABLE ALWAYS, so the readers and the final comparisons
#                see those changes;
#   async_crash  most writer transactions, and a loop of one-row commits
#                into fz_own, commit with synchronous_commit = off; once
#                some of them are visible but not flushed (the WAL writer
#                runs only every 2 s here), PostgreSQL is stopped in
#                immediate mode and started: the crash takes back commits
#                that were acknowledged, and Redis must hold none of them (the
#                worker flushes the WAL a batch saw before sending it):
#                once delivery is done, fz_own equals Redis key for key.
# Each kind once at a random moment (in random order), then, in longer
# runs, one more about every 12 s; all between 10% and 85% of the run, so
# that the sessions work before, between and after them.  Faults are
# injected one after the other: one that runs late delays the next.
my @FAULT_KINDS = qw(redis_empty redis_kill9 redis_aof worker_kill pg_restart proxy_stall proxy_cut
  drop_table alter_key replica_role async_crash);
my @fault_plan;
if ($faults_on)
{
	my @kinds = @FAULT_KINDS;
	my $extra = $secs > 30 ? int(($secs - 30) / 12) : 0;
	push @kinds, pick('redis_empty', 'redis_kill9', 'redis_aof', 'worker_kill', 'worker_kill', 'redis_empty', 'pg_restart',
		'proxy_stall', 'proxy_cut', 'drop_table', 'alter_key', 'replica_role', 'async_crash') for 1 .. $extra;
	for (my $i = $#kinds; $i > 0; $i--)
	{
		my $j = int(rand($i + 1));
		@kinds[ $i, $j ] = @kinds[ $j, $i ];
	}
	# (In a short run the last one is planned 10 s before the end at the
	# latest: a fault takes a few seconds, and a late one waits for it.)
	my $last = $secs - 10 < 0.85 * $secs ? $secs - 10 : 0.85 * $secs;
	$last = 0.5 * $secs if $last < 0.5 * $secs;
	my $slot = ($last - 0.1 * $secs) / @kinds;
	for my $i (0 .. $#kinds)
	{
		push @fault_plan, { at => 0.1 * $secs + $slot * ($i + rand()), kind => $kinds[$i], pause => rand(1.5), variant => rand() };
	}
}

# The generation marker of the database in Redis (the worker raises it
# with every batch; see src/README.md, "Redis losing data").
my $marker_key;
{
	my @m = grep { /\}:gen\z/ } @{ redis_scan_keys($rp, '*gen') };
	fz_ok(@m == 1, 'the generation marker is in Redis', 'keys ending in }:gen: ' . join(', ', @m));
	$marker_key = $m[0];
}

my %read_counters;    # summed over server restarts (they reset the counters)
my %read_last;

sub sample_read_counters
{
	my ($ret, $out) = eval { $node->psql($db,
		q{SELECT coalesce(sum(read_hits), 0), coalesce(sum(read_misses), 0), coalesce(sum(read_bypasses), 0),
		         coalesce(sum(read_fallbacks), 0), coalesce(sum(read_fills), 0), coalesce(sum(fills_rejected), 0)
		  FROM wtcache.status}, timeout => 10, timed_out => \my $timed_out) };
	return unless defined $ret && $ret == 0 && $out =~ /^[0-9|]+$/;
	my @v = split /\|/, $out;
	my @names = qw(hits misses bypasses fallbacks fills fills_rejected);
	for my $i (0 .. $#names)
	{
		my $last = $read_last{ $names[$i] } // 0;
		$read_counters{ $names[$i] } += $v[$i] >= $last ? $v[$i] - $last : $v[$i];
		$read_last{ $names[$i] } = $v[$i];
	}
	return;
}

# (Not poll_query_until: its psql may die of a broken pipe when the
# server refuses connections while it recovers, and that croaks.)
sub server_up
{
	my $deadline = time() + 180;
	while (time() < $deadline)
	{
		my ($ret, $out) = eval { $node->psql($db, 'SELECT 1', timeout => 10, timed_out => \my $t) };
		return 1 if defined $ret && $ret == 0 && defined $out && $out eq '1';
		usleep(100_000);
	}
	return 0;
}

# SQL that may fail (the server may be restarting): (ok, stdout, stderr).
sub try_sql
{
	my ($sql, $timeout) = @_;
	my ($ret, $out, $err) = eval { $node->psql($db, $sql, timeout => $timeout // 60, timed_out => \my $t) };
	return (defined $ret && $ret == 0 ? 1 : 0, $out // '', $err // $@ // '');
}

my @fault_log;
my %fault_count;    # kind => faults of that kind injected
my @done_faults;    # the faults injected, in order
my @aof_faults;     # the redis_aof faults, with what they saw
my @proxy_faults;   # the proxy_stall and proxy_cut faults, with what they saw

# The delivery worker's view: (connected, whether its last error came
# after the timestamp $since, that error), or () when there is no worker.
sub worker_view
{
	my ($since) = @_;
	my $after = defined $since ? "coalesce(last_error_at >= '$since'::timestamptz, false)" : 'false';
	my ($ret, $out) = eval { $node->psql($db,
		qq{SELECT connected, $after, coalesce(last_error, '') FROM wtcache.worker_status()
		   WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())},
		timeout => 10, timed_out => \my $timed_out) };
	return () unless defined $ret && $ret == 0 && defined $out && $out =~ /^([tf])\|([tf])\|(.*)$/s;
	return ($1 eq 't', $2 eq 't', $3);
}

sub pg_now
{
	my ($ret, $out) = eval { $node->psql($db, 'SELECT clock_timestamp()', timeout => 10, timed_out => \my $t) };
	return (defined $ret && $ret == 0) ? $out : undef;
}

# Wait up to $secs for the worker to be connected to Redis (through the
# proxy); returns whether it is.
sub wait_worker_connected
{
	my ($secs) = @_;
	my $deadline = time() + $secs;
	while (1)
	{
		my ($connected) = worker_view();
		return 1 if $connected;
		return 0 if time() > $deadline;
		usleep(100_000);
	}
}

# After a proxy fault: wait up to $secs for the worker to be connected
# again and to have failed on Redis since $since (an error reported after
# that time), or to be connected for $quiet s without a failure (it may
# not have used Redis); what it reported, for the fault log.
sub worker_after_proxy_fault
{
	my ($since, $secs, $quiet) = @_;
	my $start = time();
	my ($connected, $failed, $error);
	while (1)
	{
		($connected, $failed, $error) = worker_view($since);
		last if $connected && ($failed || time() - $start > $quiet);
		last if time() - $start > $secs;
		usleep(100_000);
	}
	return { failed => $failed ? 1 : 0, connected => $connected ? 1 : 0, error => $error // '' };
}

# State of the drop_table, alter_key, replica_role and async_crash faults.
my %ALTER_KEY = (fz_int => 'id', fz_inv => 'id', fz_comp => 'n');    # table => the key column alter_key retypes
my %key_type = map { $_ => 'int' } keys %ALTER_KEY;                 # its type now
my $drop_exists = 0;      # fz_drop exists (and is watched)
my $drop_round = 0;
my $tables_dropped = 0;
my $replica_round = 0;
my $replica_until = 0;    # when the writers' replica-role window ends
my $async_lost = 0;       # acknowledged commits of fz_own the crashes took back

sub flag_file
{
	my ($name, $on) = @_;
	if ($on)
	{
		open(my $fh, '>', "$copydir/$name") or die "create $copydir/$name: $!";
		close $fh;
	}
	else
	{
		unlink "$copydir/$name";
	}
	return;
}

# fz_drop created and watched, then $rows rows written to it; returns
# undef or what failed.
sub drop_table_create
{
	my ($rows) = @_;
	my ($ok, undef, $err) = try_sql(qq{
CREATE TABLE fz_drop (id int PRIMARY KEY, round int NOT NULL, v text);
SELECT wtcache.watch('fz_drop');
INSERT INTO fz_drop SELECT g, $drop_round, 'round $drop_round row ' || g FROM generate_series(1, $rows) g;
});
	$drop_exists = 1 if $ok;
	return $ok ? undef : "round $drop_round: create and fill: $err";
}

sub fault_counts
{
	return join(', ', map { "$_ " . ($fault_count{$_} // 0) } @FAULT_KINDS);
}

sub inject
{
	my ($f, $t0) = @_;
	my $kind = $f->{kind};
	my $what;
	sample_read_counters();
	$f->{log_from} = -s $node->logfile;
	if ($kind eq 'redis_empty')
	{
		$redis->stop;
		usleep(int($f->{pause} * 1e6));
		$redis->restart(keep_data => 0);
		$what = sprintf('Redis stopped for %.1f s, restarted empty', $f->{pause});
	}
	elsif ($kind eq 'redis_kill9')
	{
		my $keep = $f->{pause} < 0.9;    # from the seed, like the pause
		$redis->kill9;
		usleep(int($f->{pause} * 1e6));
		$redis->wipe unless $keep;
		$redis->start;
		$what = sprintf('Redis killed (kill -9), restarted after %.1f s %s', $f->{pause},
			$keep ? 'with its data (AOF)' : 'empty');
	}
	elsif ($kind eq 'redis_aof')
	{
		# So that what the worker logs after the restart is about this
		# restart, not an earlier fault it is still recovering from.
		wait_worker_connected(10) and usleep(300_000);
		$f->{log_from} = -s $node->logfile;
		my ($m0) = redis_try($rp, 'GET', $marker_key);
		my ($n0) = redis_try($rp, 'DBSIZE');
		$redis->kill9;
		usleep(int($f->{pause} * 1e6));
		$redis->start;    # same directory, no wipe: Redis replays its AOF
		my ($m1) = redis_try($rp, 'GET', $marker_key);
		my ($n1) = redis_try($rp, 'DBSIZE');
		my $kept = (!defined $m0 || (defined $m1 && $m1 >= $m0)) && (!$n0 || ($n1 // 0) > 0);
		$f->{aof} = { marker_before => $m0, marker_after => $m1, keys_before => $n0, keys_after => $n1, kept => $kept };
		push @aof_faults, $f;
		$what = sprintf('Redis killed (kill -9), restarted after %.1f s with its AOF: %s keys before, %s after, '
			  . 'generation marker %s before, %s after%s', $f->{pause}, $n0 // '?', $n1 // '?',
			$m0 // 'missing', $m1 // 'missing', $kept ? '' : ' (DATA NOT KEPT)');
	}
	elsif ($kind eq 'proxy_stall')
	{
		# From the seed: 1 s past wtcache.command_timeout, plus up to 3 s.
		my $stall = $command_timeout_ms / 1000 + 1 + 2 * $f->{pause};
		my $end_cut = $f->{variant} < 0.3;
		# The worker's connection is to be among those stalled (it may
		# still be recovering from the fault before).
		wait_worker_connected(10);
		my $since = pg_now();
		my $fb0 = $read_counters{fallbacks} // 0;
		my $open = $proxy->stall(1);
		usleep(int($stall * 1e6));
		# What the worker reported while nothing reached Redis: only its
		# timeout can have ended a command.
		my (undef, $timed_out, $stall_error) = worker_view($since);
		my $cut = $end_cut ? $proxy->cut : 0;
		$proxy->stall(0);
		my $w = worker_after_proxy_fault($since, 15, 1);
		sample_read_counters();
		$w->{fallbacks} = ($read_counters{fallbacks} // 0) - $fb0;
		$w->{open} = $open;
		$w->{timed_out} = $timed_out ? 1 : 0;
		$f->{proxy} = $w;
		push @proxy_faults, $f;
		$what = sprintf('proxy stalled all %d connections for %.1f s, then %s; worker %s%s; %d reads fell back to the table',
			$open, $stall, $end_cut ? "cut them ($cut)" : 'relayed what it held',
			$timed_out ? "timed out during the stall ($stall_error)" : 'reported no failure during the stall',
			$w->{connected} ? ', connected again after it' : ', NOT connected again after it', $w->{fallbacks});
	}
	elsif ($kind eq 'proxy_cut')
	{
		my $times = 1 + int($f->{pause} * 2);    # 1 to 3 cuts
		wait_worker_connected(10);    # the worker's connection is to be among those cut
		my $since = pg_now();
		my $fb0 = $read_counters{fallbacks} // 0;
		my @closed;
		for my $i (1 .. $times)
		{
			push @closed, $proxy->cut;
			usleep(200_000) if $i < $times;
		}
		my $w = worker_after_proxy_fault($since, 10, 3);
		sample_read_counters();
		$w->{fallbacks} = ($read_counters{fallbacks} // 0) - $fb0;
		$w->{open} = $closed[0];
		$f->{proxy} = $w;
		push @proxy_faults, $f;
		$what = sprintf('proxy cut every connection %d time%s (%s closed); worker %s%s; %d reads fell back to the table',
			$times, $times > 1 ? 's' : '', join(' + ', @closed),
			$w->{failed} ? "failed ($w->{error})" : 'reported no failure',
			$w->{connected} ? ' and is connected again' : ' and is NOT connected again', $w->{fallbacks});
	}
	elsif ($kind eq 'worker_kill')
	{
		my $pid = wait_for_worker($node, $db, 30);
		if (!defined $pid)
		{
			push @fault_log, 'no delivery worker to kill';
			return 0;
		}
		my $offset = -s $node->logfile;
		kill 'KILL', $pid;
		$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
		$what = "delivery worker (pid $pid) SIGKILLed: crash restart";
	}
	elsif ($kind eq 'pg_restart')
	{
		$node->stop('immediate');
		usleep(int($f->{pause} * 1e6 / 3));
		$node->start;
		$what = 'PostgreSQL stopped in immediate mode and started';
	}
	elsif ($kind eq 'drop_table')
	{
		my $rounds = 3 + int($f->{variant} * 5);
		my (undef, $start0) = try_sql('SELECT pg_postmaster_start_time()');
		my (@errors, @how);
		for my $round (1 .. $rounds)
		{
			$drop_round++;
			if ($drop_exists)
			{
				# the incarnation left by the fault before: changed, dropped
				my ($ok, undef, $err) = try_sql("UPDATE fz_drop SET v = v || ' changed' WHERE id % 3 = $round % 3; DROP TABLE fz_drop;");
				push @errors, "round $drop_round: update and drop of the old table: $err" unless $ok;
				next unless $ok;
				$drop_exists = 0;
				$tables_dropped++;
			}
			my $err = drop_table_create(200 + int(rand(2800)));
			if (defined $err) { push @errors, $err; next; }
			my $when = rand();
			if ($when < 0.35)
			{
				push @how, 'at once';
			}
			elsif ($when < 0.7)
			{
				# once the worker has pushed some of its rows
				my $deadline = time() + 3;
				my $pushed = 0;
				while (time() < $deadline)
				{
					my ($ok, $out) = try_sql(q{SELECT pushed FROM wtcache.status WHERE table_name = 'fz_drop'::regclass}, 10);
					last if $ok && $out =~ /^(\d+)$/ && ($pushed = $1) > 0;
					usleep(10_000);
				}
				push @how, "after $pushed pushed";
			}
			else
			{
				my $pause = rand(0.3);
				usleep(int($pause * 1e6));
				push @how, sprintf('after %.2f s', $pause);
			}
			my ($ok, undef, $derr) = try_sql('DROP TABLE fz_drop');
			push @errors, "round $drop_round: drop: $derr" unless $ok;
			next unless $ok;
			$drop_exists = 0;
			$tables_dropped++;
		}
		# Once more, kept until the next drop_table fault and compared at
		# the end.
		$drop_round++;
		if (!$drop_exists)
		{
			my $err = drop_table_create(100 + int(rand(400)));
			push @errors, $err if defined $err;
		}
		server_up() or die "the server did not come back after: $kind";
		my (undef, $start1) = try_sql('SELECT pg_postmaster_start_time()');
		my $restarted = ($start0 // '') ne ($start1 // '');
		$f->{drop} = { errors => \@errors, restarted => $restarted };
		$what = sprintf('fz_drop dropped in %d rounds with its changes queued or being pushed (%s)%s%s', $rounds,
			join(', ', @how), $restarted ? "; THE SERVER RESTARTED ($start0, then $start1)" : '',
			@errors ? '; FAILED: ' . join('; ', @errors) : '');
	}
	elsif ($kind eq 'alter_key')
	{
		my $tn = pick(sort keys %ALTER_KEY);
		my $col = $ALTER_KEY{$tn};
		my $to = $key_type{$tn} eq 'int' ? 'bigint' : 'int';
		my (undef, $mark) = try_sql('SELECT last_value FROM fz_inc');
		my ($ok, $err, $tries) = (0, '', 0);
		while (!$ok && $tries < 10)
		{
			$tries++;
			(my $done, undef, $err) = try_sql("SET lock_timeout = '3s'; ALTER TABLE $tn ALTER COLUMN $col TYPE $to;");
			$ok = $done;
			last unless $ok || $err =~ /lock timeout|deadlock detected/;
		}
		$key_type{$tn} = $to if $ok;
		my (undef, $type) = try_sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '$tn'::regclass AND attname = '$col'");
		my (undef, $trig) = try_sql("SELECT string_agg(tgname || ' ' || tgenabled::text, ', ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = '$tn'::regclass AND tgname LIKE 'wtcache%'");
		# The writers go on writing the table: a row written after the
		# ALTER (an incarnation numbered after it, alive or dead).
		my $writes = 0;
		my $deadline = time() + 20;
		while ($ok && $mark =~ /^\d+$/ && time() < $deadline)
		{
			my ($q, $n) = try_sql("SELECT (SELECT count(*) FROM $tn WHERE inc > $mark) + (SELECT count(*) FROM fz_dead WHERE tbl = '$tn' AND inc > $mark)", 10);
			last if $q && $n =~ /^(\d+)$/ && ($writes = $1) > 0;
			usleep(50_000);
		}
		my $want_trig = join(', ', map { "$_ A" } qw(wtcache_capture_del wtcache_capture_ins wtcache_capture_upd wtcache_truncate));
		$f->{alter} = { ok => $ok && ($type // '') eq ($to eq 'int' ? 'integer' : 'bigint'), triggers_ok => ($trig // '') eq $want_trig, writes => $writes };
		$what = sprintf('ALTER TABLE %s ALTER COLUMN %s TYPE %s under load: %s after %d tr%s, the column is %s; capture triggers: %s; '
			  . '%d rows written after it', $tn, $col, $to, $ok ? 'done' : "FAILED ($err)", $tries, $tries == 1 ? 'y' : 'ies',
			$type // '?', $trig // '?', $writes);
	}
	elsif ($kind eq 'replica_role')
	{
		my $window = 2 + 2 * $f->{pause};    # 2 to 5 s, from the seed
		flag_file('replica', 1);
		$replica_until = time() + $window;
		$replica_round++;
		my $r = $replica_round % 3;
		my ($ok, undef, $err) = try_sql(qq{
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE fz_own SET v = 'replica $replica_round ' || id, at = clock_timestamp() WHERE id BETWEEN 1001 AND 1020 AND id % 3 <> $r;
DELETE FROM fz_own WHERE id BETWEEN 1001 AND 1020 AND id % 3 = $r;
INSERT INTO fz_own SELECT g, NULL, 'replica insert $replica_round', clock_timestamp() FROM generate_series(1001, 1020) g
 WHERE g % 3 = ($r + 1) % 3 ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;
COMMIT;
});
		$f->{replica} = { ok => $ok, err => $err };
		$what = sprintf('writers run with session_replication_role = replica for %.1f s; the replica-role change of fz_own %s',
			$window, $ok ? 'committed' : "FAILED ($err)");
	}
	elsif ($kind eq 'async_crash')
	{
		flag_file('async', 1);
		my (undef, $n0) = try_sql('SELECT coalesce(max(n), 0) FROM fz_own');
		$n0 = 0 unless $n0 =~ /^\d+$/;
		# One-row commits, each asynchronous, until the crash: row
		# 1 + i % 50 gets n = i, rows 51 to 70 come and go; max(n) is the
		# last commit.  A NOTICE after each COMMIT tells the test which
		# commits were acknowledged (a NOTICE is sent at once).
		my ($lout, $lerr) = ('', '');
		my $loop = IPC::Run::start([ $psql_bin, '-X', '-q', '-d', $connstr, '-c', 'SET synchronous_commit = off', '-c', qq{
DO \$\$
DECLARE
    i int := $n0;
BEGIN
    FOR j IN 1 .. 10000000 LOOP
        i := i + 1;
        UPDATE fz_own SET n = i, v = 'async ' || i, at = clock_timestamp() WHERE id = 1 + i % 50;
        IF i % 4 = 0 THEN
            DELETE FROM fz_own WHERE id = 51 + i % 20;
        ELSIF i % 4 = 2 THEN
            INSERT INTO fz_own VALUES (51 + (i / 2) % 20, i, 'async insert ' || i, clock_timestamp())
            ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n, v = EXCLUDED.v;
        END IF;
        COMMIT;
        RAISE NOTICE 'fz_own commit %', i;
    END LOOP;
END \$\$;} ], '<', \'', '>', \$lout, '2>', \$lerr);
		# The writers' async commits flow for 0.5 to 1.5 s (from the seed),
		# then until some commit is visible and WAL is written past the
		# flushed end.
		my $flow_until = time() + 0.5 + 2 * $f->{pause} / 3;
		my $deadline = $flow_until + 10;
		my $gap = 0;
		while (time() < $deadline)
		{
			eval { $loop->pump_nb; };
			$lerr = substr($lerr, -4096) if length($lerr) > 65536;    # only the last NOTICE counts
			if (time() < $flow_until)
			{
				usleep(20_000);
				next;
			}
			my ($ok, $out) = try_sql('SELECT coalesce(max(n), 0) > ' . $n0 . ', pg_current_wal_insert_lsn() - pg_current_wal_flush_lsn() FROM fz_own', 10);
			$gap = $1 if $ok && $out =~ /^t\|(\d+)$/;
			last if $gap > 0;
			usleep(10_000);
		}
		$node->stop('immediate');
		flag_file('async', 0);
		# What psql received before the crash: the last acknowledged commit.
		eval { $loop->finish; };
		eval { $loop->kill_kill(grace => 1); };
		my @acked = $lerr =~ /fz_own commit (\d+)/g;
		my $acked = @acked ? $acked[-1] : $n0;
		$node->start;
		server_up() or die "the server did not come back after: $kind";
		my (undef, $after) = try_sql('SELECT coalesce(max(n), 0) FROM fz_own');
		$after = 0 unless $after =~ /^\d+$/;
		my $lost = $acked > $after ? $acked - $after : 0;
		$async_lost += $lost;
		# Nothing the crash took back may be in Redis: once what committed
		# is delivered, fz_own (which only this fault and replica_role
		# write) equals Redis key for key.
		my $drained = wait_drained($node, $db, '60s');
		my ($same, $diag) = compare_table($node, $db, 'fz_own', $rp);
		$f->{async} = { drained => $drained, same => $same, diag => $diag };
		$what = sprintf('%d commits of fz_own acknowledged with synchronous_commit = off (WAL %d bytes past the flushed end '
			  . 'at the last look), then PostgreSQL stopped in immediate mode and started: %d of them lost; fz_own and Redis %s',
			$acked - $n0, $gap, $lost, !$drained ? 'NOT DRAINED' : $same ? 'equal' : "DIFFER: $diag");
	}
	server_up() or die "the server did not come back after: $kind";
	$fault_count{$kind}++;
	my $line = sprintf('%5.1f s: %s', time() - $t0, $what);
	$f->{line} = $line;
	push @done_faults, $f;
	push @fault_log, $line;
	progress("fault $line");
	return 1;
}

# FUZZ_SELFTEST: what a bug would leave in Redis.  A row value with its
# ver lowered (an older version of the row), or, for a row not updated
# yet, with an incarnation that never existed; "_v" is kept, so the
# worker replaces it only at the row's next change.
my %plant_pattern;
my $planted = 0;

sub plant_stale
{
	my ($n) = @_;
	my $done = 0;
	for my $tn (qw(fz_int fz_text))
	{
		$plant_pattern{$tn} //= table_key_pattern($node, $db, $tn);
		my $keys = eval { redis_row_keys($rp, $plant_pattern{$tn}) } or next;
		for (1 .. $n)
		{
			last unless @$keys;
			my $key = $keys->[ int(rand(scalar @$keys)) ];
			my ($value) = redis_try($rp, 'GET', $key);
			next unless defined $value;
			next unless $value =~ s/"ver":([1-9][0-9]*)/'"ver":' . ($1 - 1)/e
			  || $value =~ s/"inc":([0-9]+)/'"inc":' . ($1 + 1_000_000_000_000)/e;
			my ($ok) = redis_try($rp, 'SET', $key, $value);
			$done++ if defined $ok;
		}
	}
	$planted += $done;
	return $done;
}

############################################################################
# The run
############################################################################

my $t0 = time();
my $end_time = $t0 + $secs;
my $run = { seed => $seed, logdir => $logdir, psql => $psql_bin, connstr => $connstr, copydir => $copydir,
	end_time => $end_time };
for my $role ('w', 'r')
{
	for my $i (1 .. ($role eq 'w' ? $nwriters : $nreaders))
	{
		my ($pid, $name) = spawn_session($run, $role, $i);
		$children{$pid} = $name;
	}
}
progress("running $nwriters writers and $nreaders readers for $secs s");

my $faults = 0;
my %exited;    # pid => exit status
my $next_sample = 0;
my $next_progress = $t0 + 10;
my $next_plant = $t0 + 1;
while (time() < $end_time)
{
	while ((my $pid = waitpid(-1, WNOHANG)) > 0)
	{
		$exited{$pid} = $?;
	}
	if (@fault_plan && time() - $t0 >= $fault_plan[0]{at})
	{
		$faults += inject(shift(@fault_plan), $t0);
		next;
	}
	if ($replica_until && time() >= $replica_until)
	{
		flag_file('replica', 0);
		$replica_until = 0;
	}
	if ($selftest && time() >= $next_plant)
	{
		plant_stale(10);
		$next_plant = time() + 0.5;
	}
	if (time() >= $next_sample)
	{
		sample_read_counters();
		$next_sample = time() + 1;
	}
	if ($verbose && time() >= $next_progress)
	{
		progress(sprintf('%3.0f s: %d faults so far, read counters: %s', time() - $t0, $faults,
			join(', ', map { "$_ $read_counters{$_}" } sort keys %read_counters)));
		$next_progress += 10;
	}
	usleep(50_000);
}
my $ran = time() - $t0;
flag_file('replica', 0);

# Sessions finish the transaction they are in, then leave.
my $wait_until = time() + 150;
while (grep { !exists $exited{$_} } keys %children)
{
	while ((my $pid = waitpid(-1, WNOHANG)) > 0) { $exited{$pid} = $?; }
	last if time() > $wait_until;
	usleep(50_000);
}
my @stuck = grep { !exists $exited{$_} } keys %children;
kill 'KILL', $_ for @stuck;
waitpid($_, 0) for @stuck;
my @bad_exit = grep { exists $exited{$_} && $exited{$_} != 0 } keys %children;
fz_ok(!@stuck && !@bad_exit, 'every session ran to the end and left',
	(map { "session $children{$_} did not end within 150 s after the run (killed); see $logdir/014_fuzz_$children{$_}.log" } @stuck),
	(map { "session $children{$_} exited with status $exited{$_}; see $logdir/014_fuzz_$children{$_}.log" } @bad_exit));
%children = ();
sample_read_counters();

# Gather what the sessions counted.
my ($wstats, $rstats, $problems) = collect_stats($copydir);
my %w = %$wstats;
my %r = %$rstats;
my @problems = @$problems;
my $changes = $w{changes_committed} // 0;
my $rollbacks = $w{rollbacks} // 0;
my $tolerated = ($w{errors_tolerated} // 0);
my $reads = $r{reads_checked} // 0;
my $stale = $r{stale_reads} // 0;
my $unexpected = ($w{unexpected_errors} // 0) + ($r{unexpected_errors} // 0);
my $hangs = ($w{hangs} // 0) + ($r{hangs} // 0);

note("writers: " . join(', ', map { "$_ $w{$_}" } sort keys %w));
note("readers: " . join(', ', map { "$_ $r{$_}" } sort keys %r));
note("faults:\n  " . join("\n  ", @fault_log)) if @fault_log;
note("read counters (wtcache.status, summed over restarts): " . join(', ', map { "$_ $read_counters{$_}" } sort keys %read_counters));

our $TODO;
my $todo = $selftest ? 'FUZZ_SELFTEST planted stale values: this check must fail' : undef;
my @stale_problems = grep { /stale_reads:/ } @problems;
my @other_problems = grep { !/stale_reads:/ } @problems;
{
	local $TODO = $todo;
	fz_ok($stale == 0, "no stale read in $reads reads checked", @stale_problems,
		"session logs: $logdir/014_fuzz_reader*.log");
}
fz_ok($unexpected == 0 && $hangs == 0, 'no unexpected error and no statement that hung in the sessions',
	@other_problems, "session logs: $logdir/014_fuzz_*.log");
fz_ok($changes > 0 && ($w{commits} // 0) > 0, "writers committed changes ($changes)");
fz_ok($nreaders == 0 || $reads > 0, "readers checked reads ($reads)");
fz_ok(($read_counters{hits} // 0) > 0 || $nreaders == 0,
	'some reads were served from Redis (the check is not only of table reads)',
	'read counters: ' . join(', ', map { "$_ $read_counters{$_}" } sort keys %read_counters));
if ($faults_on)
{
	fz_ok($faults >= @FAULT_KINDS && !@fault_plan && !grep({ !$fault_count{$_} } @FAULT_KINDS),
		"faults injected: $faults, every kind at least once (" . fault_counts() . ')',
		(@fault_plan ? scalar(@fault_plan) . ' planned faults were not injected before the end of the run' : ()), @fault_log);

	# A restart with the AOF keeps everything Redis acknowledged: the
	# generation marker is back, not lower, and the worker, which checks
	# it when it reconnects, finds nothing lost (until the next fault).
	my $log_all = slurp_file($node->logfile);
	my (@lost, @aof_bad);
	for my $i (0 .. $#done_faults)
	{
		my $f = $done_faults[$i];
		next unless $f->{aof};
		push @aof_bad, "at $f->{line}" unless $f->{aof}{kept};
		my $to = $i < $#done_faults ? $done_faults[ $i + 1 ]{log_from} : length($log_all);
		my $seg = substr($log_all, $f->{log_from}, $to - $f->{log_from});
		# From the worker's first connection to the restarted Redis on
		# (the kill cut its connection; what it logged before is about
		# the Redis before the kill).
		next unless $seg =~ s/\A.*?wtcache: connected to Redis[^\n]*\n//s;
		push @lost, "after the fault at $f->{line}:\n    $1" while $seg =~ /^(.*wtcache: Redis at .* lost data.*)$/mg;
	}
	if (@aof_faults)
	{
		fz_ok(!@aof_bad, 'Redis restarted with its AOF came back with its data (' . scalar(@aof_faults) . ' restarts)', @aof_bad);
		fz_ok(!@lost, 'after a restart with the AOF the worker found no data lost (no resync)', @lost);
	}

	# The proxy faults fired: a stall outlasted the worker's
	# wtcache.command_timeout (the worker reported a failure while it
	# lasted), a cut closed connections and the worker noticed, and after
	# each the worker was connected again.
	my @stalls = grep { $_->{kind} eq 'proxy_stall' } @proxy_faults;
	my @cuts = grep { $_->{kind} eq 'proxy_cut' } @proxy_faults;
	if (@stalls)
	{
		my $timed_out = grep { $_->{proxy}{timed_out} } @stalls;
		fz_ok($timed_out > 0, "a proxy stall made the worker run into wtcache.command_timeout (in $timed_out of "
			  . scalar(@stalls) . ' stalls)', map { $_->{line} } @stalls);
	}
	if (@cuts)
	{
		my $closed = 0;
		$closed += $_->{proxy}{open} for @cuts;
		my $failed = grep { $_->{proxy}{failed} } @cuts;
		fz_ok($closed > 0 && $failed > 0,
			"proxy cuts closed connections ($closed in " . scalar(@cuts) . " cuts) and the worker noticed ($failed cuts)",
			map { $_->{line} } @cuts);
	}
	my @not_back = grep { !$_->{proxy}{connected} } @proxy_faults;
	fz_ok(!@not_back, 'the worker was connected again after every proxy fault', map { $_->{line} } @not_back);

	# drop_table: no crash, no failure of the worker on a dropped table
	# (from the fault to the next one), no restart, and the test's own
	# statements (create, fill, drop) worked.
	my (@drop_bad, $drops);
	for my $i (0 .. $#done_faults)
	{
		my $f = $done_faults[$i];
		next unless $f->{drop};
		$drops++;
		my $to = $i < $#done_faults ? $done_faults[ $i + 1 ]{log_from} : length($log_all);
		my $seg = substr($log_all, $f->{log_from}, $to - $f->{log_from});
		push @drop_bad, "after the fault at $f->{line}:\n    $1"
		  while $seg =~ /^(.*(?:terminated by signal|fz_drop.* does not exist|could not open relation with OID|cache lookup failed).*)$/mg;
		push @drop_bad, "the server restarted during the fault at $f->{line}" if $f->{drop}{restarted};
		push @drop_bad, map { "in the fault at $f->{line}: $_" } @{ $f->{drop}{errors} };
	}
	fz_ok(!@drop_bad, "tables dropped while their changes were delivered ($tables_dropped tables in "
		  . ($drops // 0) . ' faults): no crash, no restart, no failure of the worker', @drop_bad);

	# alter_key: done, the capture triggers back and firing always, the
	# writers writing the table after it (the final comparison checks
	# Redis).
	my @alters = grep { $_->{alter} } @done_faults;
	my @alter_bad = map { $_->{line} } grep { !$_->{alter}{ok} || !$_->{alter}{triggers_ok} || !$_->{alter}{writes} } @alters;
	fz_ok(!@alter_bad, 'ALTER COLUMN TYPE of a key under load: done, capture triggers back (ENABLE ALWAYS), the writers went on ('
		  . scalar(@alters) . ' times)', @alter_bad);

	# replica_role: replica-role transactions committed (the readers and
	# the final comparison check that they reached Redis).
	my @replica_bad = map { $_->{line} } grep { $_->{replica} && !$_->{replica}{ok} } @done_faults;
	fz_ok(($w{commits_replica} // 0) > 0 && !@replica_bad,
		'transactions committed with session_replication_role = replica (' . ($w{commits_replica} // 0) . ' by the writers)',
		@replica_bad);

	# async_crash: after each crash, with what committed delivered, Redis
	# held exactly fz_own: nothing the crash took back.
	my @asyncs = grep { $_->{async} } @done_faults;
	my @async_bad = map { $_->{line} } grep { !$_->{async}{drained} || !$_->{async}{same} } @asyncs;
	fz_ok(!@async_bad, 'after each crash with synchronous_commit = off Redis held nothing the crash took back ('
		  . scalar(@asyncs) . " crashes, $async_lost acknowledged commits of fz_own lost in all)", @async_bad);
	fz_ok(($w{commits_async} // 0) > 0, 'writers committed with synchronous_commit = off (' . ($w{commits_async} // 0) . ')');
}
my $via = sql(q{SELECT redis_address FROM wtcache.worker_status()
                WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
my $pstats = $proxy->stats;
fz_ok($via =~ /:\Q$pp\E\b/ && ($pstats->{accepted} // 0) > 0,
	"PostgreSQL reached Redis through the proxy (worker's address $via; proxy accepted " . ($pstats->{accepted} // 0) . ' connections)');

############################################################################
# The end state: Redis equal to every table, key for key
############################################################################

fz_ok(wait_drained($node, $db, '180s'), 'everything committed reached Redis (wait() returned true)');
plant_stale(5) if $selftest;
$TODO = $todo;

my $compared = 0;
my $drift = 0;

for my $tn (write_through_tables(), 'fz_own', $drop_exists ? ('fz_drop') : ())
{
	my ($ok, $diag) = compare_table($node, $db, $tn, $rp);
	my ($rows, $missing, $wrong, $extra) = $diag =~ /: (\d+) rows, \d+ Redis row keys .*?, (\d+) missing, (\d+) wrong, (\d+) extra/;
	$compared += $rows // 0;
	$drift += ($missing // 0) + ($wrong // 0) + ($extra // 0);
	$drift++ if !$ok && !($missing || $wrong || $extra);
	fz_ok($ok, "Redis matches $tn key for key", $diag);
	note($diag) if $ok;
}

# invalidate mode: keys may be missing (a change deletes them, a read
# fills them), but a key that is there holds the row.  Read every row
# first so that most keys are there to compare.
sub compare_present_keys
{
	my ($tn) = @_;
	my $t = fuzz_table($tn);
	my $keyexpr = join(', ', map { "($_)::text" } @{ $t->{keycols} });
	my $out = sql(qq{SET TimeZone = 'UTC';
COPY (SELECT translate(encode(convert_to(wtcache.redis_key('$tn'::regclass, $keyexpr), 'UTF8'), 'base64'), E'\\n', ''),
             translate(encode(convert_to(row_to_json(r)::text, 'UTF8'), 'base64'), E'\\n', '')
      FROM $tn r) TO STDOUT;});
	my %want;
	for my $line (split /\n/, $out)
	{
		my ($k, $j) = split /\t/, $line;
		$want{ decode_base64($k) } = decode_base64($j);
	}
	my $keys = redis_row_keys($rp, table_key_pattern($node, $db, $tn));
	my @cmds;
	for (my $i = 0; $i < @$keys; $i += 500)
	{
		my $e = $i + 499 > $#$keys ? $#$keys : $i + 499;
		push @cmds, [ 'MGET', @{$keys}[ $i .. $e ] ];
	}
	my @values = map { @$_ } @{ redis_pipeline($rp, \@cmds) };
	my ($n, @diffs) = (0);
	for my $i (0 .. $#$keys)
	{
		my ($key, $value) = ($keys->[$i], $values[$i]);
		next unless defined $value;
		$n++;
		my ($v, $rest) = redis_row_version($value);
		if (!exists $want{$key}) { push @diffs, "key without a row: $key = " . substr($value, 0, 200); }
		elsif (!defined $v || '{' . $rest ne $want{$key})
		{
			push @diffs, "differs: $key\n    redis: " . substr($value, 0, 200) . "\n    table: " . substr($want{$key}, 0, 200);
		}
	}
	return ($n, scalar(keys %want), \@diffs);
}

for my $tn (grep { fuzz_table($_)->{mode} } fuzz_tables())
{
	my $keyargs = join(', ', map { "$_\::text" } @{ fuzz_table($tn)->{keycols} });
	sql("SELECT count(wtcache.get('$tn', $keyargs)) FROM $tn");
	my ($n, $rows, $diffs) = compare_present_keys($tn);
	$compared += $n;
	$drift += @$diffs;
	fz_ok(!@$diffs, "$tn (invalidate mode): the $n keys Redis holds equal their rows ($rows rows)",
		@$diffs > 10 ? (@$diffs[ 0 .. 9 ], '...') : @$diffs);
	fz_ok($n > 0 || $rows == 0, "$tn: reads filled keys to compare ($n of $rows)");
}

# wtcache.verify() says the same (it also rechecks what looks different
# once everything committed is delivered), and cached reads of every row
# return the row.  With everything delivered, no key and no table has a
# change on its way, so none of those reads may go around Redis (a
# bypass): a counter of the pending filter left above zero would send
# reads of its keys to the table for good.
fz_ok($node->poll_query_until($db,
		q{SELECT reads_use_redis FROM wtcache.worker_status() w JOIN pg_database d
		  ON d.oid = w.database_oid WHERE d.datname = current_database()}),
	'the worker counted the queue (reads_use_redis)');
for my $tn (fuzz_tables())
{
	my $problems = sql(qq{SELECT count(*) || E'\\n' || coalesce(string_agg(array_to_string(key, ',') || ': ' || problem, E'\\n'), '')
	                      FROM (SELECT * FROM wtcache.verify('$tn') LIMIT 20) v});
	my ($count, @lines) = split /\n/, $problems;
	$drift += $count;
	fz_ok($count == 0, "wtcache.verify('$tn') finds no difference", @lines);

	my $keyargs = join(', ', map { "$_\::text" } @{ fuzz_table($tn)->{keycols} });
	my $bypass_sql = qq{SELECT read_bypasses FROM wtcache.status WHERE table_name = '$tn'::regclass};
	my $bypasses0 = sql($bypass_sql);
	my ($bad, $rows) = split /\|/, sql(qq{SET TimeZone = 'UTC';
		SELECT count(*) FILTER (WHERE wtcache.get('$tn', $keyargs) IS DISTINCT FROM to_jsonb(t)), count(*) FROM $tn t});
	my $bypasses = sql($bypass_sql) - $bypasses0;
	$drift += $bad;
	fz_ok($bad == 0, "wtcache.get() of each of the $rows rows of $tn returns the row", "$bad rows differ");
	fz_ok($bypasses == 0, "with nothing pending, those reads of $tn did not go around Redis",
		"$bypasses of $rows reads were bypasses: a pending counter of $tn stayed above zero");
}

$TODO = undef;
if ($selftest)
{
	fz_ok($planted > 0, "selftest: planted $planted older row values in Redis");
	fz_ok($stale > 0, "selftest: the readers reported $stale stale reads");
	fz_ok($drift > 0, "selftest: the final comparison reported drift ($drift)");
}

# The readers above kept reading through every Redis outage.  A backend
# whose reads fell back to the table must go back to Redis once
# wtcache.read_retry_interval (1 s) has passed, also while it keeps
# reading (a connection pool's sessions never pause): here one session
# reads every 100 ms through a short outage, and in its last 1.5 s of
# reads, 2 s after Redis is back, none may fall back.
{
	my $probe = $node->background_psql($db);
	# (a key no writer uses: its reads ask Redis, whatever the tables hold)
	my $get = q{SELECT wtcache.get('fz_int', '-1000000') IS NULL};
	my $fallbacks = q{SELECT read_fallbacks FROM wtcache.status WHERE table_name = 'fz_int'::regclass};
	$probe->query_safe($get);
	$redis->stop;
	$probe->query_safe($get) for 1 .. 3;
	$redis->start;
	my $back = time();
	my ($f0, $reads) = (undef, 0);
	while (time() - $back < 3.5)
	{
		$f0 = sql($fallbacks) if !defined $f0 && time() - $back >= 2;
		$probe->query_safe($get);
		$reads++ if defined $f0;
		usleep(100_000);
	}
	my $late = sql($fallbacks) - $f0;
	$probe->quit;
	fz_ok($late == 0, 'a session that kept reading through a Redis outage reads Redis again after wtcache.read_retry_interval',
		"$late of its last $reads reads, 2 to 3.5 s after Redis came back, still fell back to the table");
}

# The server crashed only where the fuzzer crashed it.
my $log = slurp_file($node->logfile);
my @crashes = grep { !/terminated by signal 9\b/ } ($log =~ /^.*(?:terminated by signal \d+|PANIC:|TRAP:|server process .* exited with exit code [^01]).*$/mg);
fz_ok(!@crashes, 'no crash other than the injected ones in the server log', @crashes[ 0 .. ($#crashes > 9 ? 9 : $#crashes) ],
	'server log: ' . $node->logfile);
# The delivery worker reports what Redis does to it as LOG lines and
# carries on; an ERROR of its own ends it (the launcher starts another),
# delivery stalls meanwhile, and whatever it was doing is left half done.
# Its pids: those the postmaster reported ending, and the one running now.
{
	my %wpids = map { $_ => 1 } $log =~ /background worker "wtcache worker[^"]*" \(PID (\d+)\)/g;
	my $now = worker_pid($node, $db);
	$wpids{$now} = 1 if defined $now;
	my @failed = grep { /^\S+ \S+ \S+ \[(\d+)\] (?:\S+ )?ERROR:/ && $wpids{$1} } split /\n/, $log;
	fz_ok(!@failed, 'the delivery worker never failed (no ERROR of its own in the server log: ' . scalar(@failed) . ')',
		@failed[ 0 .. ($#failed > 9 ? 9 : $#failed) ], 'server log: ' . $node->logfile);
}
my @worker_errors = $log =~ /^.*(?:ERROR|WARNING):\s+.*wtcache.*$/mg;
note(scalar(@worker_errors) . " wtcache ERROR/WARNING lines in the server log" . (@worker_errors ? ", the first:\n  " . join("\n  ", @worker_errors[ 0 .. ($#worker_errors > 4 ? 4 : $#worker_errors) ]) : ''));

my $summary = sprintf('fuzz: seed %d, %d s, changes committed %d, rollbacks %d, errors tolerated %d, '
	  . 'reads checked %d, stale reads %d, keys compared %d, drift %d, faults %d (%s)',
	$seed, $secs, $changes, $rollbacks, $tolerated, $reads, $stale, $compared, $drift, $faults, fault_counts());
note($summary);
to_terminal($summary);
my $detail = sprintf('fuzz: details: ran %.1f s, %d transactions committed, %d savepoint rollbacks, %d changes rolled back, '
	  . '%d transactions cut by a fault, %d reads cut by a fault, %d reads cancelled by a deadlock, %d reads of no row, %d reconnects, read counters %s; '
	  . 'proxy: %d connections, %d closed by cuts, %d stalls, %.1f MB to Redis and %.1f MB back; '
	  . 'the worker timed out in %d of %d stalls and failed after %d of %d cuts, '
	  . '%d reads fell back to the table during proxy faults; %d commits with session_replication_role = replica, '
	  . '%d with synchronous_commit = off, %d acknowledged async commits of fz_own lost by crashes, %d tables dropped',
	$ran, $w{commits} // 0, $w{savepoint_rollbacks} // 0, $w{changes_rolled_back} // 0, $w{interrupted} // 0,
	$r{reads_interrupted} // 0, $r{reads_deadlocked} // 0, $r{reads_null} // 0,
	($w{connects} // 0) + ($r{connects} // 0) - $nwriters - $nreaders,
	join(', ', map { "$_ $read_counters{$_}" } sort keys %read_counters),
	$pstats->{accepted} // 0, $pstats->{cut_conns} // 0, $pstats->{stalls} // 0,
	($pstats->{up} // 0) / 1e6, ($pstats->{down} // 0) / 1e6,
	scalar(grep { $_->{kind} eq 'proxy_stall' && $_->{proxy}{timed_out} } @proxy_faults),
	scalar(grep { $_->{kind} eq 'proxy_stall' } @proxy_faults),
	scalar(grep { $_->{kind} eq 'proxy_cut' && $_->{proxy}{failed} } @proxy_faults),
	scalar(grep { $_->{kind} eq 'proxy_cut' } @proxy_faults),
	eval { my $n = 0; $n += $_->{proxy}{fallbacks} for @proxy_faults; $n },
	$w{commits_replica} // 0, $w{commits_async} // 0, $async_lost, $tables_dropped);
note($detail);
to_terminal($detail) if $verbose;

$node->stop;
done_testing();
