# Consistency fuzzer: concurrent writers run random DML from a seeded PRNG
# against six watched tables (two of them partitioned, written through the
# parent and by partition name) while readers check, read after read, that
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
# synchronous_commit = off are visible but not flushed; and partition DDL:
# CREATE ... PARTITION OF, ATTACH, DETACH [CONCURRENTLY], DROP and TRUNCATE
# of a partition under the write load; see the fault
# kinds in test/lib/WtcacheFuzz/Faults.pm).  At the end Redis must equal
# every table, key for key (compare_table, verify(), a get() of every
# row), with nothing left counted as pending (reads of every row are
# served by Redis), and a session that kept reading through
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
# FUZZ_NEAR_CACHE=1 runs the reference near cache (test/near_cache.py)
# alongside, through the proxy, so that the faults take its subscription
# too (test/t/042_near_cache.pl sets it): at the end, once everything is
# delivered, each of its entries must equal its table's row and the value
# Redis holds, it must never have served a version lower than one it had
# served, and it must have served many reads from memory (see
# WtcacheFuzz::NearCache).  NEAR_CACHE_SELFTEST=1 makes it ignore every
# 20th row message, as a bug would: the comparison must then fail (TODO).
#
# FUZZ_AUDIT=1 is for post-mortems: every row written to wtcache.queue is
# copied, with its transaction, to fz_queue_audit, and commit timestamps
# are tracked (pg_xact_commit_timestamp()); every row the worker deletes
# (acknowledges) is recorded in fz_queue_acked.  The data directory, the Redis
# AOF and the logs stay in tmp_check/ after a failure.
#
# FUZZ_LIVE_AUDIT (keys per second, 500; 0: off) runs the live consistency
# audit (wtcache.audit_rate) through the whole run, faults included: it
# must confirm no mismatch and no missing key, ever (no such line in the
# server log, which outlives the restarts that reset its counters).  Off
# with FUZZ_SELFTEST, whose planted values it would find and repair.
#
# The seed fixes the configuration, each session's statement stream and the
# fault schedule; which statements meet each other depends on timing, so a
# replay explores the same neighbourhood rather than the same interleaving.
#
# This file is the scenario: setup, the run, the checks.  The parts live
# in test/lib/WtcacheFuzz/: Generate.pm (values, keys, the watched tables,
# statements), Schema.pm (the tables and the triggers the checks rest on),
# Psql.pm and Sessions.pm (the writers and readers), Faults.pm (the
# faults and their schedule), Checks.pm (comparisons of the end state),
# NearCache.pm (the near cache run alongside).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest, WtcacheFuzz::* (PGXS resets PROVE_FLAGS)

use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;
use WtcacheFuzz::Checks;
use WtcacheFuzz::Faults;
use WtcacheFuzz::Generate;
use WtcacheFuzz::NearCache;
use WtcacheFuzz::Schema;
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
my $near = $ENV{FUZZ_NEAR_CACHE} // 0;
my $near_selftest = $ENV{NEAR_CACHE_SELFTEST} // 0;
my $live_audit = $selftest ? 0 : $ENV{FUZZ_LIVE_AUDIT} // 500;
for ([ FUZZ_SECONDS => $secs ], [ FUZZ_SESSIONS => $nwriters ], [ FUZZ_READERS => $nreaders ], [ FUZZ_FAULTS => $faults_on ],
	[ FUZZ_LIVE_AUDIT => $live_audit ])
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
  . ($near ? ' FUZZ_NEAR_CACHE=1' : '')
  . ($near_selftest ? ' NEAR_CACHE_SELFTEST=1' : '')
  . ($live_audit != 500 && !$selftest ? " FUZZ_LIVE_AUDIT=$live_audit" : '')
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
  . ($faults_on ? 'on' : 'off') . ($near ? ', near cache alongside' : '') . " (replay: $replay)");
note("fuzz: seed $seed (replay: $replay)");

my $parent_pid = $$;
my $logdir = $PostgreSQL::Test::Utils::log_path;
my $logname = $0 =~ m{([^/]+)\.pl\z} ? $1 : '014_fuzz';    # (042_near_cache.pl runs this file)
my %children;    # pid => name, of the sessions forked below
my $nc;          # the near cache, with FUZZ_NEAR_CACHE

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
		$nc->stop if $nc;
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
wtcache.audit_rate = $live_audit
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

# The watched tables (not watched yet) and the triggers that keep the
# readers' bookkeeping: see WtcacheFuzz::Schema.
create_tables($node, $db);
create_queue_audit($node, $db) if $audit;

# Initial rows: fz_int's exist before its watch (warm => true pushes
# them), the others are inserted under the watch.
sql(initial_rows('fz_int', 200));
sql(q{SELECT wtcache.watch('fz_int', warm => true)});
sql(q{SELECT wtcache.watch('fz_comp', key_template => 'comp:{org}:n:{n}')});
sql(q{SELECT wtcache.watch('fz_text')});
sql(q{SELECT wtcache.watch('fz_inv', mode => 'invalidate')});
sql(q{SELECT wtcache.watch('fz_part')});
sql(q{SELECT wtcache.watch('fz_pl')});
sql(q{SELECT wtcache.watch('fz_hash', format => 'hash', exclude_columns => ARRAY['secret'])});
sql(initial_rows($_, 150)) for qw(fz_comp fz_text fz_inv fz_part fz_pl fz_hash);

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
                         + (SELECT count(*) FROM fz_text) + (SELECT count(*) FROM fz_inv)
                         + (SELECT count(*) FROM fz_part) + (SELECT count(*) FROM fz_pl)});
progress("initial rows: $initial");

my $psql_bin = $node->installed_command('psql');
my $connstr = $node->connstr($db);
my $copydir = PostgreSQL::Test::Utils::tempdir('fuzz');

############################################################################
# Faults
############################################################################

# The seed's schedule: each kind once, in random order, then more in
# longer runs (see WtcacheFuzz::Faults for the kinds).
my @fault_plan = $faults_on ? plan_faults($secs) : ();

# The generation marker of the database in Redis (the worker raises it
# with every batch; see src/README.md, "Redis losing data").
my $marker_key;
{
	my @m = grep { /\}:gen\z/ } @{ redis_scan_keys($rp, '*gen') };
	fz_ok(@m == 1, 'the generation marker is in Redis', 'keys ending in }:gen: ' . join(', ', @m));
	$marker_key = $m[0];
}

my $fz = WtcacheFuzz::Faults->new(
	node => $node,
	db => $db,
	redis => $redis,
	rp => $rp,
	proxy => $proxy,
	copydir => $copydir,
	psql => $psql_bin,
	connstr => $connstr,
	command_timeout_ms => $command_timeout_ms,
	marker_key => $marker_key,
	progress => \&progress);
my $read_counters = $fz->{read_counters};    # summed over server restarts (they reset the counters)

# The near cache reads Redis through the proxy, as PostgreSQL does; it has
# begun once it has subscribed.
if ($near)
{
	my $ncdir = PostgreSQL::Test::Utils::tempdir('near_cache');
	my $nclog = "$logdir/${logname}_near_cache.log";
	$nc = WtcacheFuzz::NearCache->start(port => $pp, db => $db, dir => $ncdir, logfile => $nclog, seed => $seed,
		selftest => $near_selftest);
	my $deadline = time() + 60;
	usleep(50_000) while time() < $deadline && !(-f $nclog && slurp_file($nclog) =~ /subscribed;/);
	fz_ok(-f $nclog && slurp_file($nclog) =~ /subscribed;/, 'the near cache subscribed to the events channel',
		"near cache log: $nclog");
	progress("near cache running (pid " . $nc->pid . "), log $nclog");
}

############################################################################
# The run
############################################################################

my $t0 = time();
my $end_time = $t0 + $secs;
my $run = { seed => $seed, logdir => $logdir, logname => $logname, psql => $psql_bin, connstr => $connstr, copydir => $copydir,
	stop_file => "$copydir/run_over",
	# How long after the end a session keeps trying to connect: the
	# faults' own recovery (a restart under load) is bounded by the
	# harness timeout, never by a guess shorter than it.
	reconnect_limit => 3 * $PostgreSQL::Test::Utils::timeout_default };
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
# The run lasts its seconds and until every planned fault was injected: on
# a slow or busy machine the faults (each waits for the recovery of the one
# before) can take longer than their schedule, and a run that ended with
# faults left over would test less than the seed says.  The cap only keeps
# a stuck fault from hanging the test.
my $cap = $end_time + 3 * $PostgreSQL::Test::Utils::timeout_default;
while ((time() < $end_time || @fault_plan) && time() < $cap)
{
	while ((my $pid = waitpid(-1, WNOHANG)) > 0)
	{
		$exited{$pid} = $?;
	}
	if (@fault_plan && time() - $t0 >= $fault_plan[0]{at})
	{
		$faults += $fz->inject(shift(@fault_plan), $t0);
		next;
	}
	$fz->end_replica_window;
	if ($selftest && time() >= $next_plant)
	{
		$fz->plant_stale(10);
		$next_plant = time() + 0.5;
	}
	if (time() >= $next_sample)
	{
		$fz->sample_read_counters;
		$next_sample = time() + 1;
	}
	if ($verbose && time() >= $next_progress)
	{
		progress(sprintf('%3.0f s: %d faults so far, read counters: %s', time() - $t0, $faults,
			join(', ', map { "$_ $read_counters->{$_}" } sort keys %$read_counters)));
		$next_progress += 10;
	}
	usleep(50_000);
}
my $ran = time() - $t0;
$fz->flag_file('replica', 0);
{
	open(my $fh, '>', $run->{stop_file}) or die "create $run->{stop_file}: $!";
	close $fh;
}

# Sessions finish the transaction they are in, then leave.
my $session_grace = $run->{reconnect_limit} + $PostgreSQL::Test::Utils::timeout_default;
my $wait_until = time() + $session_grace;
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
	(map { "session $children{$_} did not end within $session_grace s after the run (killed); see $logdir/${logname}_$children{$_}.log" } @stuck),
	(map { "session $children{$_} exited with status $exited{$_}; see $logdir/${logname}_$children{$_}.log" } @bad_exit));
%children = ();
$fz->sample_read_counters;

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
note("faults:\n  " . join("\n  ", @{ $fz->{fault_log} })) if @{ $fz->{fault_log} };
note("read counters (wtcache.status, summed over restarts): " . join(', ', map { "$_ $read_counters->{$_}" } sort keys %$read_counters));

our $TODO;
my $todo = $selftest ? 'FUZZ_SELFTEST planted stale values: this check must fail' : undef;
my @stale_problems = grep { /stale_reads:/ } @problems;
my @other_problems = grep { !/stale_reads:/ } @problems;
{
	local $TODO = $todo;
	fz_ok($stale == 0, "no stale read in $reads reads checked", @stale_problems,
		"session logs: $logdir/${logname}_reader*.log");
}
fz_ok($unexpected == 0 && $hangs == 0, 'no unexpected error and no statement that hung in the sessions',
	@other_problems, "session logs: $logdir/${logname}_*.log");
fz_ok($changes > 0 && ($w{commits} // 0) > 0, "writers committed changes ($changes)");
fz_ok($nreaders == 0 || $reads > 0, "readers checked reads ($reads)");
fz_ok(($read_counters->{hits} // 0) > 0 || $nreaders == 0,
	'some reads were served from Redis (the check is not only of table reads)',
	'read counters: ' . join(', ', map { "$_ $read_counters->{$_}" } sort keys %$read_counters));
if ($faults_on)
{
	my @kinds = fault_kinds();
	fz_ok($faults >= @kinds && !@fault_plan && !grep({ !$fz->{fault_count}{$_} } @kinds),
		"faults injected: $faults, every kind at least once (" . $fz->fault_counts . ')',
		(@fault_plan ? scalar(@fault_plan) . ' planned faults were not injected before the end of the run' : ()), @{ $fz->{fault_log} });

	# A restart with the AOF keeps everything Redis acknowledged: the
	# generation marker is back, not lower, and the worker, which checks
	# it when it reconnects, finds nothing lost (until the next fault).
	my $log_all = slurp_file($node->logfile);
	my $done_faults = $fz->{done_faults};
	my (@lost, @aof_bad);
	for my $i (0 .. $#$done_faults)
	{
		my $f = $done_faults->[$i];
		next unless $f->{aof};
		push @aof_bad, "at $f->{line}" unless $f->{aof}{kept};
		my $seg = log_after_fault($log_all, $done_faults, $i);
		# From the worker's first connection to the restarted Redis on
		# (the kill cut its connection; what it logged before is about
		# the Redis before the kill).
		next unless $seg =~ s/\A.*?wtcache: connected to Redis[^\n]*\n//s;
		push @lost, "after the fault at $f->{line}:\n    $1" while $seg =~ /^(.*wtcache: Redis at .* lost data.*)$/mg;
	}
	if (@{ $fz->{aof_faults} })
	{
		fz_ok(!@aof_bad, 'Redis restarted with its AOF came back with its data (' . scalar(@{ $fz->{aof_faults} }) . ' restarts)', @aof_bad);
		fz_ok(!@lost, 'after a restart with the AOF the worker found no data lost (no resync)', @lost);
	}

	# The proxy faults fired: a stall outlasted the worker's
	# wtcache.command_timeout (the worker reported a failure while it
	# lasted), a cut closed connections and the worker noticed, and after
	# each the worker was connected again.
	my @stalls = grep { $_->{kind} eq 'proxy_stall' } @{ $fz->{proxy_faults} };
	my @cuts = grep { $_->{kind} eq 'proxy_cut' } @{ $fz->{proxy_faults} };
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
	my @not_back = grep { !$_->{proxy}{connected} } @{ $fz->{proxy_faults} };
	fz_ok(!@not_back, 'the worker was connected again after every proxy fault', map { $_->{line} } @not_back);

	# drop_table: no crash, no failure of the worker on a dropped table
	# (from the fault to the next one), no restart, and the test's own
	# statements (create, fill, drop) worked.
	my (@drop_bad, $drops);
	for my $i (0 .. $#$done_faults)
	{
		my $f = $done_faults->[$i];
		next unless $f->{drop};
		$drops++;
		my $seg = log_after_fault($log_all, $done_faults, $i);
		push @drop_bad, "after the fault at $f->{line}:\n    $1"
		  while $seg =~ /^(.*(?:terminated by signal|fz_drop.* does not exist|could not open relation with OID|cache lookup failed).*)$/mg;
		push @drop_bad, "the server restarted during the fault at $f->{line}" if $f->{drop}{restarted};
		push @drop_bad, map { "in the fault at $f->{line}: $_" } @{ $f->{drop}{errors} };
	}
	fz_ok(!@drop_bad, "tables dropped while their changes were delivered ($fz->{tables_dropped} tables in "
		  . ($drops // 0) . ' faults): no crash, no restart, no failure of the worker', @drop_bad);

	# alter_key: done, the capture triggers back and firing always, the
	# writers writing the table after it (the final comparison checks
	# Redis).
	my @alters = grep { $_->{alter} } @$done_faults;
	my @alter_bad = map { $_->{line} } grep { !$_->{alter}{ok} || !$_->{alter}{triggers_ok} || !$_->{alter}{writes} } @alters;
	fz_ok(!@alter_bad, 'ALTER COLUMN TYPE of a key under load: done, capture triggers back (ENABLE ALWAYS), the writers went on ('
		  . scalar(@alters) . ' times)', @alter_bad);

	# replica_role: replica-role transactions committed (the readers and
	# the final comparison check that they reached Redis).
	my @replica_bad = map { $_->{line} } grep { $_->{replica} && !$_->{replica}{ok} } @$done_faults;
	fz_ok(($w{commits_replica} // 0) > 0 && !@replica_bad,
		'transactions committed with session_replication_role = replica (' . ($w{commits_replica} // 0) . ' by the writers)',
		@replica_bad);

	# async_crash: after each crash, with what committed delivered, Redis
	# held exactly fz_own: nothing the crash took back.
	my @asyncs = grep { $_->{async} } @$done_faults;
	my @async_bad = map { $_->{line} } grep { !$_->{async}{drained} || !$_->{async}{same} } @asyncs;
	fz_ok(!@async_bad, 'after each crash with synchronous_commit = off Redis held nothing the crash took back ('
		  . scalar(@asyncs) . " crashes, $fz->{async_lost} acknowledged commits of fz_own lost in all)", @async_bad);
	fz_ok(($w{commits_async} // 0) > 0, 'writers committed with synchronous_commit = off (' . ($w{commits_async} // 0) . ')');

	# part_*: each partition DDL done (the final comparisons check Redis
	# against each parent), and the writers wrote to partitions by name.
	my @parts = grep { $_->{part} } @$done_faults;
	my @part_bad = map { $_->{line} } grep { !$_->{part}{ok} } @parts;
	fz_ok(@parts && !@part_bad, 'partition DDL under load: ' . scalar(@parts) . " faults, all done ($fz->{part_rows_removed} rows "
		  . "taken out of a parent by a detach, drop or truncate, $fz->{part_rows_attached} brought by an attach, "
		  . "$fz->{part_rows_moved} moved out of the default partition)", @part_bad);
	fz_ok(($w{'statement part_direct'} // 0) > 0, 'writers wrote to partitions by name (' . ($w{'statement part_direct'} // 0) . ' statements)');
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
$fz->plant_stale(5) if $selftest;
$TODO = $todo;

my $compared = 0;
my $drift = 0;

for my $tn (write_through_tables(), 'fz_own', $fz->{drop_exists} ? ('fz_drop') : ())
{
	my ($ok, $diag) = compare_fuzz_table($node, $db, $rp, $tn);
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
for my $tn (grep { fuzz_table($_)->{mode} } fuzz_tables())
{
	my $keyargs = join(', ', map { "$_\::text" } @{ fuzz_table($tn)->{keycols} });
	sql("SELECT count(wtcache.get('$tn', $keyargs)) FROM $tn");
	my ($n, $rows, $diffs) = compare_present_keys($node, $db, $rp, $tn);
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
	# a projection: the row without the columns kept out
	my $want = join('', 'to_jsonb(t)', map { " - '$_'" } @{ fuzz_table($tn)->{exclude} // [] });
	my ($bad, $rows) = split /\|/, sql(qq{SET TimeZone = 'UTC';
		SELECT count(*) FILTER (WHERE wtcache.get('$tn', $keyargs) IS DISTINCT FROM $want), count(*) FROM $tn t});
	my $bypasses = sql($bypass_sql) - $bypasses0;
	$drift += $bad;
	fz_ok($bad == 0, "wtcache.get() of each of the $rows rows of $tn returns the row", "$bad rows differ");
	fz_ok($bypasses == 0, "with nothing pending, those reads of $tn did not go around Redis",
		"$bypasses of $rows reads were bypasses: a pending counter of $tn stayed above zero");
}

$TODO = undef;

# The live audit compared keys all along, faults included, and never
# confirmed a difference: its counters (since the last restart of
# PostgreSQL) and its log lines (since the start) say so.
if ($live_audit > 0)
{
	my $q = q{SELECT checked || '|' || mismatched || '|' || missing || '|' || skipped FROM wtcache.audit_stats()
	          WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
	fz_ok($node->poll_query_until($db, "SELECT split_part(($q), '|', 1)::int8 > 0"),
		'the live audit compared keys (wtcache.audit_rate)');
	my ($checked, $mismatched, $missing, $skipped) = split /\|/, sql($q);
	my @found = slurp_file($node->logfile) =~ /^.*wtcache: the audit found a key.*$/mg;
	$drift += $mismatched + $missing + @found;
	fz_ok($mismatched == 0 && $missing == 0 && !@found,
		"the live audit confirmed no mismatch and no missing key ($checked checked, $skipped in flight passed by)",
		"mismatched $mismatched, missing $missing", @found[ 0 .. ($#found > 9 ? 9 : $#found) ]);
}

# The near cache: told to stop once everything committed is in Redis, it
# applies every message up to the last number handed out, and dumps what
# it holds, which must be the tables' rows, exactly the values Redis holds.
if ($near)
{
	$nc->reaped($exited{ $nc->pid }) if exists $exited{ $nc->pid };
	my $seq_key = "wtc:{$db}:event_seq";
	my ($target) = redis_try($rp, 'GET', $seq_key);
	my ($dump, $problem) = $nc->finish($target // 0, 90);
	my $nclog = "$logdir/${logname}_near_cache.log";
	fz_ok(defined $dump && !defined $problem, "the near cache applied every message up to $seq_key ("
		  . ($target // 'missing') . ') and dumped its entries', $problem, "near cache log: $nclog");
	$dump //= { counters => {}, entries => {} };
	my $c = $dump->{counters};
	my %tables = map { $_ => fuzz_table($_)->{keycols} } fuzz_tables();
	$tables{fz_own} = ['id'];
	$tables{fz_drop} = ['id'] if $fz->{drop_exists};
	my ($n, $diffs, $not_in_redis, $stale_entries) = WtcacheFuzz::NearCache::compare_entries($node, $db, $rp, $dump, \%tables);
	my ($served_lines, $served_bad) = WtcacheFuzz::NearCache::check_served_log("$nc->{dir}/served.log");
	my $restarts = 0;
	$restarts += $fz->{fault_count}{$_} // 0 for qw(redis_empty redis_kill9 redis_aof);
	my $summary = sprintf('near cache: %d reads, %d from memory, %d filled from Redis, %d misses, %d untrusted '
		  . '(%d refused as older than served), %d entries at the end (%d not in Redis); messages %d (%d row, %d truncate, '
		  . '%d reset, %d tag, %d of another database), gaps %d, numbers going back %d, subscriptions %d '
		  . '(%d lost, %d of them silent), everything dropped %d times (%d entries), Redis errors %d; '
		  . '%d Redis restarts, %d served version changes logged',
		map({ $c->{$_} // 0 } qw(reads hits fills misses untrusted refused_older)), $n, $not_in_redis,
		map({ $c->{$_} // 0 } qw(messages applied_rows truncates resets tag_invalidations other_db gaps seq_back subscribes
			subscriptions_lost silent_subscriptions drops_all dropped_entries redis_errors)), $restarts, $served_lines);
	note($summary);
	to_terminal("fuzz: $summary");
	{
		local $TODO = $near_selftest ? 'NEAR_CACHE_SELFTEST ignored messages: this check must fail'
		  : $selftest ? 'FUZZ_SELFTEST planted stale values, which the near cache may hold' : undef;
		fz_ok(!@$diffs, "each of the near cache's $n entries equals its table's row and the value Redis holds ($stale_entries differ)",
			@$diffs > 10 ? (@$diffs[ 0 .. 9 ], '... (' . scalar(@$diffs) . ' in all)') : @$diffs, "near cache log: $nclog");
	}
	fz_ok(($c->{older_than_served} // -1) == 0 && ($c->{same_version_other_value} // -1) == 0,
		'the near cache never served a version lower than one it had served, nor two values for one version ('
		  . ($c->{older_than_served} // '?') . ', ' . ($c->{same_version_other_value} // '?') . ')', "near cache log: $nclog");
	fz_ok($served_lines > 0 && !@$served_bad, "its log of $served_lines served versions, read apart, never goes back",
		@$served_bad > 10 ? @$served_bad[ 0 .. 9 ] : @$served_bad);
	fz_ok(($c->{hits} // 0) >= 1000 && $n >= 50,
		"the near cache served reads from memory (" . ($c->{hits} // 0) . " hits, at least 1000) and held entries ($n, at least 50)");
	# Each Redis restart (and proxy cut) takes its subscription, unless it
	# had not got it back from the fault before: with faults it lost it,
	# and it got it back after every loss (it ended subscribed).
	# wtcache publishes JSON objects only: anything else on the channel is
	# a message it garbled (or another writer's), which the near cache
	# survives (rule 4) but which must not happen.
	fz_ok(($c->{malformed} // 0) == 0, 'every message on the events channel was JSON ('
		  . ($c->{malformed} // 0) . ' were not)', "near cache log: $nclog");
	fz_ok((!$faults_on || ($c->{subscriptions_lost} // 0) > 0) && ($c->{subscribes} // 0) == ($c->{subscriptions_lost} // 0) + 1,
		'the near cache lost its subscription ' . ($c->{subscriptions_lost} // 0) . " times ($restarts Redis restarts) "
		  . 'and subscribed again after each loss (' . ($c->{subscribes} // 0) . ' subscriptions)', "near cache log: $nclog");
	if ($near_selftest)
	{
		fz_ok(($c->{ignored_selftest} // 0) > 0 && $stale_entries > 0, 'selftest: the near cache ignored '
			  . ($c->{ignored_selftest} // 0) . ' row messages and the comparison found ' . $stale_entries . ' stale entries');
	}
	$nc = undef;
}

if ($selftest)
{
	fz_ok($fz->{planted} > 0, "selftest: planted $fz->{planted} older row values in Redis");
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
	$seed, $secs, $changes, $rollbacks, $tolerated, $reads, $stale, $compared, $drift, $faults, $fz->fault_counts);
note($summary);
to_terminal($summary);
my $detail = sprintf('fuzz: details: ran %.1f s, %d transactions committed, %d savepoint rollbacks, %d changes rolled back, '
	  . '%d transactions cut by a fault, %d reads cut by a fault, %d reads cancelled by a deadlock, %d reads of no row, %d reconnects, read counters %s; '
	  . 'proxy: %d connections, %d closed by cuts, %d stalls, %.1f MB to Redis and %.1f MB back; '
	  . 'the worker timed out in %d of %d stalls and failed after %d of %d cuts, '
	  . '%d reads fell back to the table during proxy faults; %d commits with session_replication_role = replica, '
	  . '%d with synchronous_commit = off, %d acknowledged async commits of fz_own lost by crashes, %d tables dropped; '
	  . 'partitions: %d statements on a partition by name (%d of them failed on a missing partition or its constraint), '
	  . '%d rows taken out of a parent by a detach, drop or truncate, %d brought by an attach, %d moved out of the default',
	$ran, $w{commits} // 0, $w{savepoint_rollbacks} // 0, $w{changes_rolled_back} // 0, $w{interrupted} // 0,
	$r{reads_interrupted} // 0, $r{reads_deadlocked} // 0, $r{reads_null} // 0,
	($w{connects} // 0) + ($r{connects} // 0) - $nwriters - $nreaders,
	join(', ', map { "$_ $read_counters->{$_}" } sort keys %$read_counters),
	$pstats->{accepted} // 0, $pstats->{cut_conns} // 0, $pstats->{stalls} // 0,
	($pstats->{up} // 0) / 1e6, ($pstats->{down} // 0) / 1e6,
	scalar(grep { $_->{kind} eq 'proxy_stall' && $_->{proxy}{timed_out} } @{ $fz->{proxy_faults} }),
	scalar(grep { $_->{kind} eq 'proxy_stall' } @{ $fz->{proxy_faults} }),
	scalar(grep { $_->{kind} eq 'proxy_cut' && $_->{proxy}{failed} } @{ $fz->{proxy_faults} }),
	scalar(grep { $_->{kind} eq 'proxy_cut' } @{ $fz->{proxy_faults} }),
	eval { my $n = 0; $n += $_->{proxy}{fallbacks} for @{ $fz->{proxy_faults} }; $n },
	$w{commits_replica} // 0, $w{commits_async} // 0, $fz->{async_lost}, $fz->{tables_dropped},
	$w{'statement part_direct'} // 0, ($w{'error 42P01 (partition gone)'} // 0) + ($w{'error 23514 (no partition for the row)'} // 0)
	  + ($w{'error 0A000 (row not for the partition named)'} // 0),
	$fz->{part_rows_removed}, $fz->{part_rows_attached}, $fz->{part_rows_moved});
note($detail);
to_terminal($detail) if $verbose;

$node->stop;
done_testing();
