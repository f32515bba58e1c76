# WtcacheFuzz::Sessions: the consistency fuzzer's writers and readers
# (test/t/014_fuzz.pl), each a forked process with its own psql session
# (WtcacheFuzz::Psql) and its own seed.
#
# A writer runs random transactions (WtcacheFuzz::Generate) until the end
# of the run; a reader checks, read after read, that wtcache's cached
# reads are never older than what had committed before the read started.
# A session reports to the parent through files in the run's directory:
# <name>.stats (its counters and the problems it met) at its end, written
# by session_main and read by collect_stats.  The parent's faults talk to
# the writers through flag files there (see writer_settings).
#
# What a session needs from the test comes in the run context, a hash:
#   seed      the test's seed (each session's own is derived from it)
#   logdir    where the sessions' logs go (<logname>_<name>.log)
#   logname   the test's name (014_fuzz, or 042_near_cache, which runs it)
#   psql      the psql binary, connstr: the database to connect to
#   copydir   a directory of the test's own: COPY files, flag files, stats
#   stop_file when it exists, the sessions stop beginning transactions and
#             reads (the parent makes it once the run's time has passed and
#             every planned fault was injected)
#   reconnect_limit  seconds after the stop a session keeps trying to
#             connect again
package WtcacheFuzz::Sessions;

use strict;
use warnings;

use Exporter 'import';
use POSIX ();
use Time::HiRes qw(time usleep);

use WtcacheFuzz::Generate;
use WtcacheFuzz::Psql;

our @EXPORT = qw(spawn_session collect_stats);

# Expected errors of concurrent writers; anything else is reported.
my %EXPECTED_STATE = (
	'40P01' => 'deadlock',
	'23505' => 'unique violation',
	'21000' => 'ON CONFLICT DO UPDATE twice',
	'40001' => 'serialization failure',
);

my %PART_STATE = (
	'42P01' => 'partition gone',
	'23514' => 'no partition for the row',
	# a row inserted into a hash partition it does not hash to: PostgreSQL
	# checks the partition constraint after the BEFORE trigger (fz_track)
	# and says so
	'0A000' => 'row not for the partition named',
);

# Time of day in UTC to the millisecond, as in the server log.
sub stamp
{
	my $t = time();
	return POSIX::strftime('%H:%M:%S', gmtime($t)) . sprintf('.%03d', ($t - int($t)) * 1000);
}

# Each session keeps its last statements in a ring, written to its log on
# anything unexpected and at the end.
sub ring_add
{
	my ($ctx, $text, $r) = @_;
	my $t = length($text) > 400 ? substr($text, 0, 400) . '...(' . length($text) . ' chars)' : $text;
	my $res = $r->{lost} ? ($r->{timeout} ? 'TIMEOUT' : 'LOST') : $r->{error} ? "ERROR $r->{sqlstate}" : 'ok';
	my $out = $r->{out} // '';
	$out = substr($out, 0, 300) . '...' if length($out) > 300;
	push @{ $ctx->{ring} }, sprintf('%s %s => %s%s', stamp(), $t, $res, $out ne '' ? " [$out]" : '');
	shift @{ $ctx->{ring} } if @{ $ctx->{ring} } > 200;
	return;
}

sub ctx_log
{
	my ($ctx, $msg) = @_;
	print { $ctx->{log} } stamp() . " $msg\n";
	return;
}

# Something that must fail the test: kept for the parent, logged with the
# statements that led to it.
sub ctx_problem
{
	my ($ctx, $kind, $msg) = @_;
	$ctx->{st}{$kind}++;
	push @{ $ctx->{problems} }, "$kind: $msg" if @{ $ctx->{problems} } < 20;
	ctx_log($ctx, "PROBLEM $kind: $msg\n  last statements:\n    " . join("\n    ", @{ $ctx->{ring} }));
	return;
}

sub run_over
{
	my ($run) = @_;
	return -e $run->{stop_file};
}

sub connect_session
{
	my ($ctx) = @_;
	my $s = $ctx->{s};
	# A fault (pg_restart, a crash) may take the server away again right
	# after a connection succeeds, even during the session's setup: that
	# is one more try, not a problem.  Only a server that stays away long
	# after the run ended is one; the limit is the harness timeout.
	my $stopped_at;
	while (1)
	{
		while (!$s->connect)
		{
			$stopped_at //= time() if run_over($ctx->{run});
			return 0 if defined $stopped_at && time() > $stopped_at + $ctx->{run}{reconnect_limit};
			usleep(50_000 + int(rand(100_000)));
		}
		$ctx->{st}{connects}++;
		$ctx->{settings} = '00';    # a new session: origin role, synchronous commits
		# Session settings wtcache must not depend on: keys and JSON are
		# rendered under fixed ones.
		my $setup = "SET TimeZone = '" . pick('UTC', 'Asia/Kolkata', 'America/St_Johns', 'Pacific/Chatham', 'Europe/Paris')
		  . "'; SET DateStyle = '" . pick('ISO, MDY', 'SQL, DMY', 'German', 'Postgres, YMD') . "'; "
		  . "SET extra_float_digits = " . pick(0, 1, 3) . ';';
		my $r = $s->run($setup);
		ring_add($ctx, $setup, $r);
		if ($r->{lost})
		{
			$ctx->{st}{setup_lost}++;
			next;
		}
		ctx_problem($ctx, 'unexpected_errors', "session setup failed: $r->{err}") if $r->{error};
		return 1;
	}
}

# Run one step; classify its outcome.  Returns the run() result with rows
# (rows changed, from the command tags) and kind ('ok', 'error', 'lost').
sub w_step
{
	my ($ctx, $step) = @_;
	my $text = $step;
	if (ref $step)
	{
		my $file = "$ctx->{run}{copydir}/$ctx->{name}.copy";
		open(my $fh, '>', $file) or die "open $file: $!";
		print $fh join("\t", map { copy_field($_) } @$_) . "\n" for @{ $step->{rows} };
		close $fh;
		$text = "\\copy $step->{copy} (" . join(', ', @{ $step->{cols} }) . ") FROM '$file'";
	}
	my $r = $ctx->{s}->run($text);
	ring_add($ctx, $text, $r);
	$ctx->{st}{statements}++;
	if ($r->{lost})
	{
		if ($r->{timeout})
		{
			ctx_problem($ctx, 'hangs', "no answer in $ctx->{s}{timeout} s to: " . substr($text, 0, 300));
			$ctx->{stop} = 1;
		}
		$r->{kind} = 'lost';
		return $r;
	}
	if ($r->{error})
	{
		my $what = $EXPECTED_STATE{ $r->{sqlstate} };
		# A partition a fault detached, dropped or has not created (yet):
		# a statement naming it finds no table, a row finds no partition
		# (or breaks the partition constraint of the one named).
		$what //= $PART_STATE{ $r->{sqlstate} }
		  if $text =~ /\bfz_p(?:art|l)(?:_|\b)/ && ($r->{sqlstate} ne '0A000' || $r->{err} =~ /moving row to another partition/);
		if (defined $what)
		{
			$ctx->{st}{errors_tolerated}++;
			$ctx->{st}{"error $r->{sqlstate} ($what)"}++;
		}
		else
		{
			ctx_problem($ctx, 'unexpected_errors', "$r->{err}\n  statement: " . substr($text, 0, 500));
		}
		$r->{kind} = 'error';
		return $r;
	}
	my $rows = 0;
	$rows += $1 for $r->{out} =~ /^(?:INSERT \d+|UPDATE|DELETE|COPY) (\d+)$/mg;
	$r->{rows} = $rows;
	$r->{kind} = 'ok';
	return $r;
}

sub w_control
{
	my ($ctx, $sql) = @_;
	my $r = $ctx->{s}->run($sql);
	ring_add($ctx, $sql, $r);
	if (!$r->{lost} && $r->{error})
	{
		ctx_problem($ctx, 'unexpected_errors', "$r->{err}\n  statement: $sql");
		$r->{kind} = 'error';
	}
	$r->{kind} //= $r->{lost} ? 'lost' : 'ok';
	return $r;
}

# Statements of a transaction, with nested savepoints.  Returns (status,
# rows) with status 'ok', 'error' (the transaction is aborted) or 'lost'.
sub w_block
{
	my ($ctx, $depth) = @_;
	my $rows = 0;
	for (0 .. int(rand(4)))
	{
		if ($depth < 3 && chance(0.2))
		{
			my $sp = "sp$depth";
			my $r = w_control($ctx, "SAVEPOINT $sp;");
			return ('lost') if $r->{kind} eq 'lost';
			my ($status, $inner) = w_block($ctx, $depth + 1);
			return ('lost') if $status eq 'lost';
			if ($status eq 'error' || chance(0.3))
			{
				$r = w_control($ctx, "ROLLBACK TO SAVEPOINT $sp;");
				return ('lost') if $r->{kind} eq 'lost';
				$ctx->{st}{savepoint_rollbacks}++;
				$ctx->{st}{changes_rolled_back} += $inner;
			}
			else
			{
				$rows += $inner;
			}
			if (chance(0.6))
			{
				$r = w_control($ctx, "RELEASE SAVEPOINT $sp;");
				return ('lost') if $r->{kind} eq 'lost';
			}
			next;
		}
		# Sometimes hold the locks a little: more waits, more deadlocks.
		usleep(int(rand(20_000))) if chance(0.1);
		my ($kind, @steps) = random_statement();
		$ctx->{st}{"statement $kind"}++;
		for my $step (@steps)
		{
			my $r = w_step($ctx, $step);
			return ('lost') if $r->{kind} eq 'lost';
			return ('error', $rows) if $r->{kind} eq 'error';
			$rows += $r->{rows};
		}
	}
	return ('ok', $rows);
}

# The session settings of a writer's next transaction.  Some
# transactions run as a logical replication apply worker does
# (session_replication_role = replica: only ENABLE ALWAYS triggers fire),
# a few always and most of them while the parent's replica_role fault has
# its flag file up; while the async_crash fault has its flag up, most
# commit with synchronous_commit = off (visible before their WAL is
# flushed, lost by a crash).  The settings are sent only when they change.
sub writer_settings
{
	my ($ctx) = @_;
	my $replica = chance(-e "$ctx->{run}{copydir}/replica" ? 0.8 : 0.03) ? 1 : 0;
	my $async = (-e "$ctx->{run}{copydir}/async" && chance(0.7)) ? 1 : 0;
	my $want = "$replica$async";
	return 1 if ($ctx->{settings} // '00') eq $want;
	my $r = w_control($ctx, 'SET session_replication_role = ' . ($replica ? 'replica' : 'origin')
		  . '; SET synchronous_commit = ' . ($async ? 'off' : 'on') . ';');
	return 0 if $r->{kind} ne 'ok';
	$ctx->{settings} = $want;
	return 1;
}

# Count a commit of $rows changes under the session's settings.
sub count_commit
{
	my ($ctx, $rows) = @_;
	my $st = $ctx->{st};
	$st->{commits}++;
	$st->{changes_committed} += $rows;
	my $set = $ctx->{settings} // '00';
	$st->{commits_replica}++ if substr($set, 0, 1);
	$st->{commits_async}++ if substr($set, 1, 1);
	return;
}

sub writer_transaction
{
	my ($ctx) = @_;
	my $st = $ctx->{st};
	if (!writer_settings($ctx)) { $st->{interrupted}++; return; }
	if (chance(0.4))
	{
		# autocommit: each step commits on its own
		my ($kind, @steps) = random_statement();
		$st->{"statement $kind"}++;
		for my $step (@steps)
		{
			my $r = w_step($ctx, $step);
			if ($r->{kind} eq 'lost') { $st->{interrupted}++; return; }
			last if $r->{kind} eq 'error';
			count_commit($ctx, $r->{rows});
		}
		return;
	}
	my $r = w_control($ctx, 'BEGIN;');
	if ($r->{kind} eq 'lost') { $st->{interrupted}++; return; }
	my ($status, $rows) = w_block($ctx, 0);
	if ($status eq 'lost') { $st->{interrupted}++; return; }
	if ($status eq 'error' || chance(0.15))
	{
		$r = w_control($ctx, 'ROLLBACK;');
		if ($r->{kind} eq 'lost') { $st->{interrupted}++; return; }
		$st->{rollbacks}++;
		$st->{changes_rolled_back} += $rows;
		return;
	}
	$r = w_control($ctx, 'COMMIT;');
	# A connection lost during COMMIT leaves its outcome unknown.
	if ($r->{kind} eq 'lost') { $st->{interrupted}++; return; }
	if ($r->{out} =~ /^COMMIT$/m)
	{
		count_commit($ctx, $rows);
	}
	else
	{
		ctx_problem($ctx, 'unexpected_errors', "COMMIT answered '$r->{out}' $r->{err}");
	}
	return;
}

# One freshness check of 1 to 8 keys of one table, three statements:
#   A  the committed state of each key (inc, ver, or no row) and the
#      statement's snapshot, pg_current_snapshot();
#   B  wtcache.get() / get_many() / get_row() of the same keys, in a later
#      statement, so everything A saw committed before B started;
#   C  the state again, and for the row B returned: whether its death
#      (DELETE, key change, TRUNCATE: a row of fz_dead written by the same
#      transaction) is committed, and whether it was already visible in A's
#      snapshot.
# A read is stale only when one of these holds (each is impossible for a
# read that is not older than A, whatever the writers did meanwhile):
#   - B returned a row whose death A's snapshot already saw;
#   - B returned the incarnation A saw, with a smaller ver;
#   - A and C saw the same incarnation (so it was there throughout) and B
#     returned no row, or another incarnation.
# And B returned something that never committed when:
#   - B's incarnation is neither in C nor dead (never committed), or it
#     is in C with a smaller ver than B's (B is ahead of the database);
#   - the row B returned has other key values than asked.
sub reader_check
{
	my ($ctx) = @_;
	my $st = $ctx->{st};
	my $tn = pick(fuzz_tables());
	my $t = fuzz_table($tn);
	my $nkc = scalar @{ $t->{keycols} };
	my @keys = some_keys($tn, chance(0.6) ? 1 : 2 + int(rand(7)));
	my $method = pick('get', 'get', 'get', 'get_many', 'get_many', 'get_row');
	my @kcols = map { "k$_" } 1 .. $nkc;
	my $kalias = 'k(i, ' . join(', ', @kcols) . ')';
	my $values = join(', ', map { my $i = $_; '(' . join(', ', $i + 1, map { sql_quote($_) } @{ $keys[$i] }) . ')' } 0 .. $#keys);
	my $join = join(' AND ', map { "t.$t->{keycols}[$_] = k.k" . ($_ + 1) . "::$t->{keytypes}[$_]" } 0 .. $nkc - 1);
	my $kargs = join(', ', map { "k.$_" } @kcols);

	my $sql_a = "SELECT pg_current_snapshot(), k.i, t.inc, t.ver FROM (VALUES $values) $kalias LEFT JOIN $tn t ON $join ORDER BY k.i;";
	my $sql_b;
	if ($method eq 'get_row')
	{
		my $match = join(' AND ', map { "r.$t->{keycols}[$_]::text = k.k" . ($_ + 1) } 0 .. $nkc - 1);
		$sql_b = "SELECT k.i, r.inc IS NULL, r.inc, r.ver, $match FROM (VALUES $values) $kalias "
		  . "CROSS JOIN LATERAL wtcache.get_row(NULL::$tn, $kargs) r ORDER BY k.i;";
	}
	else
	{
		my $match = join(' AND ', map { "(g.j->>'$t->{keycols}[$_]') = k.k" . ($_ + 1) } 0 .. $nkc - 1);
		my $cols = "k.i, g.j IS NULL, g.j->>'inc', g.j->>'ver', $match";
		if ($method eq 'get')
		{
			$sql_b = "SELECT $cols FROM (VALUES $values) $kalias CROSS JOIN LATERAL "
			  . "(SELECT wtcache.get('$tn', $kargs) AS j OFFSET 0) g ORDER BY k.i;";
		}
		else
		{
			my $arr = $nkc == 1
			  ? 'ARRAY[' . join(', ', map { sql_quote($_->[0]) } @keys) . ']'
			  : 'ARRAY[' . join(', ', map { my $k = $_; '[' . join(', ', map { sql_quote($_) } @$k) . ']' } @keys) . ']';
			$sql_b = "SELECT $cols FROM wtcache.get_many('$tn', $arr) WITH ORDINALITY g(gk, j, i) "
			  . "JOIN (VALUES $values) $kalias ON k.i = g.i ORDER BY k.i;";
		}
	}

	my $ra = $ctx->{s}->run($sql_a);
	ring_add($ctx, $sql_a, $ra);
	return if reader_failed($ctx, $ra, $sql_a);
	my $rb = $ctx->{s}->run($sql_b);
	ring_add($ctx, $sql_b, $rb);
	return if reader_failed($ctx, $rb, $sql_b);

	my @a = map { [ split /\|/, $_, -1 ] } split /\n/, $ra->{out};
	my @b = map { [ split /\|/, $_, -1 ] } split /\n/, $rb->{out};
	if (@a != @keys || @b != @keys)
	{
		ctx_problem($ctx, 'unexpected_errors', "reader: " . scalar(@keys) . " keys, A gave " . scalar(@a)
			  . " rows, B gave " . scalar(@b) . " rows:\n  $sql_a\n  $sql_b\n  A: $ra->{out}\n  B: $rb->{out}");
		return;
	}
	my $snap = $a[0][0];
	my $cvalues = join(', ', map {
		my $i = $_;
		my $binc = ($b[$i][1] eq 'f' && $b[$i][2] =~ /^\d+$/) ? $b[$i][2] : 'NULL';
		'(' . join(', ', $i + 1, (map { sql_quote($_) } @{ $keys[$i] }), "$binc\::bigint") . ')'
	} 0 .. $#keys);
	my $sql_c = "SELECT k.i, t.inc, t.ver, "
	  . "(SELECT bool_or(pg_visible_in_snapshot(d.xid, '$snap'::pg_snapshot)) FROM fz_dead d WHERE d.inc = k.binc), "
	  . "EXISTS (SELECT 1 FROM fz_dead d WHERE d.inc = k.binc) "
	  . "FROM (VALUES $cvalues) k(i, " . join(', ', @kcols) . ", binc) LEFT JOIN $tn t ON $join ORDER BY k.i;";
	my $rc = $ctx->{s}->run($sql_c);
	ring_add($ctx, $sql_c, $rc);
	return if reader_failed($ctx, $rc, $sql_c);
	my @c = map { [ split /\|/, $_, -1 ] } split /\n/, $rc->{out};
	if (@c != @keys)
	{
		ctx_problem($ctx, 'unexpected_errors', "reader: C gave " . scalar(@c) . " rows for " . scalar(@keys) . " keys: $rc->{out}");
		return;
	}

	for my $i (0 .. $#keys)
	{
		my (undef, undef, $ai, $av) = @{ $a[$i] };
		my (undef, $bnull, $bi, $bv, $bmatch) = @{ $b[$i] };
		my (undef, $ci, $cv, $dead_in_a, $dead_now) = @{ $c[$i] };
		my $A = $ai ne '';
		my $B = $bnull eq 'f';
		my $C = $ci ne '';
		my $why;
		if ($B && $bmatch ne 't') { $why = 'returned a row with other key values'; }
		elsif ($B && $dead_in_a eq 't') { $why = 'returned a row deleted (or moved, or truncated) before the read started'; }
		elsif ($B && $A && $bi eq $ai && $bv < $av) { $why = "returned ver $bv of the row, older than ver $av committed before the read"; }
		elsif (!$B && $A && $C && $ai eq $ci) { $why = 'returned no row while the row existed throughout'; }
		elsif ($B && $A && $C && $ai eq $ci && $bi ne $ai) { $why = 'returned another incarnation while the row existed throughout'; }
		elsif ($B && !($C && $ci eq $bi) && $dead_now ne 't') { $why = 'returned a row that never committed (neither there nor deleted)'; }
		elsif ($B && $C && $ci eq $bi && $bv > $cv) { $why = "returned ver $bv, ahead of the committed ver $cv"; }
		$st->{reads_checked}++;
		$st->{"reads_checked $method"}++;
		$st->{reads_null}++ unless $B;
		next unless defined $why;
		my $key = join(', ', map { "'$_'" } @{ $keys[$i] });
		ctx_problem($ctx, 'stale_reads', "$tn ($key) by $method: $why\n"
			  . "  A (before): " . ($A ? "inc $ai ver $av" : 'no row') . ", snapshot $snap\n"
			  . "  B (wtcache): " . ($B ? "inc $bi ver $bv" : 'NULL') . "\n"
			  . "  C (after): " . ($C ? "inc $ci ver $cv" : 'no row') . ", B's row dead: " . ($dead_now eq 't' ? 'yes' : 'no')
			  . ($dead_in_a eq 't' ? ' (visible in A\'s snapshot)' : '') . "\n"
			  . "  statements:\n    $sql_a\n    $sql_b\n    $sql_c");
	}
	return;
}

sub reader_failed
{
	my ($ctx, $r, $sql) = @_;
	if ($r->{lost})
	{
		if ($r->{timeout})
		{
			ctx_problem($ctx, 'hangs', "no answer in $ctx->{s}{timeout} s to: $sql");
			$ctx->{stop} = 1;
		}
		$ctx->{st}{reads_interrupted}++;
		return 1;
	}
	# A read can be the victim of a deadlock without holding any lock
	# anybody waits for: queued behind the AccessExclusiveLock a TRUNCATE
	# or an ALTER TABLE (the alter_key fault) waits for, it closes a cycle
	# of waits of the writers' transactions, and PostgreSQL cancels it.
	# Without wtcache too; the check is skipped.
	if ($r->{error} && $r->{sqlstate} eq '40P01')
	{
		$ctx->{st}{reads_deadlocked}++;
		return 1;
	}
	# get_row(NULL::t, ...) names t's row type, which takes no lock on t:
	# an ALTER COLUMN TYPE of t (the alter_key fault) that commits after
	# the statement was parsed, before get_row() ran, makes PostgreSQL
	# refuse the row it builds with the new type, as it does for any SQL
	# function returning a table's row type.  Without wtcache too.
	if ($r->{error} && $r->{sqlstate} eq '42804' &&
		$r->{err} =~ /function return row and query-specified return row do not match/)
	{
		$ctx->{st}{reads_interrupted}++;
		return 1;
	}
	if ($r->{error})
	{
		ctx_problem($ctx, 'unexpected_errors', "reader: $r->{err}\n  statement: $sql");
		return 1;
	}
	return 0;
}

sub session_main
{
	my ($run, $role, $idx) = @_;
	my $name = ($role eq 'w' ? 'writer' : 'reader') . $idx;
	open(my $log, '>>', "$run->{logdir}/$run->{logname}_$name.log") or die "open log: $!";
	$log->autoflush(1);
	my $ctx = {
		name => $name,
		run => $run,
		log => $log,
		st => {},
		ring => [],
		problems => [],
		s => WtcacheFuzz::Psql->new(psql => $run->{psql}, connstr => $run->{connstr}, quiet => ($role eq 'r'), timeout => 60),
	};
	ctx_log($ctx, "$name starts, seed $run->{seed}");
	while (!run_over($run) && !$ctx->{stop})
	{
		if (!$ctx->{s}->connected)
		{
			if (!connect_session($ctx))
			{
				ctx_problem($ctx, 'unexpected_errors', "could not connect again within $run->{reconnect_limit} s after the end of the run");
				last;
			}
		}
		$role eq 'w' ? writer_transaction($ctx) : reader_check($ctx);
	}
	$ctx->{s}->disconnect;
	ctx_log($ctx, "$name ends; last statements:\n    " . join("\n    ", @{ $ctx->{ring} }));
	open(my $out, '>', "$run->{copydir}/$name.stats") or die "open stats: $!";
	for my $k (sort keys %{ $ctx->{st} })
	{
		print $out "stat\t$k\t$ctx->{st}{$k}\n";
	}
	for my $p (@{ $ctx->{problems} })
	{
		(my $one = $p) =~ s/\n/\\n/g;
		print $out "problem\t$name\t$one\n";
	}
	close $out;
	return;
}

sub spawn_session
{
	my ($run, $role, $idx) = @_;
	my $name = ($role eq 'w' ? 'writer' : 'reader') . $idx;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# The child must never run the test's END blocks (they would stop
		# the node and Redis) nor write TAP: it leaves with _exit.
		$SIG{__DIE__} = 'DEFAULT';
		$SIG{PIPE} = 'IGNORE';
		untie *STDOUT;
		untie *STDERR;
		open(STDOUT, '>>', "$run->{logdir}/$run->{logname}_$name.log");
		open(STDERR, '>&', \*STDOUT);
		srand(($run->{seed} * 1009 + ($role eq 'w' ? 1 : 500) + $idx) % 4294967296);
		my $ok = eval { session_main($run, $role, $idx); 1 };
		print STDERR "session died: $@\n" unless $ok;
		POSIX::_exit($ok ? 0 : 1);
	}
	return ($pid, $name);
}


# What the sessions counted, summed per role, and the problems they
# reported: (\%writers, \%readers, \@problems).
sub collect_stats
{
	my ($copydir) = @_;
	my (%w, %r, @problems);
	for my $f (glob("$copydir/*.stats"))
	{
		my $role = $f =~ m{/writer\d+\.stats$} ? \%w : \%r;
		open(my $fh, '<', $f) or die "open $f: $!";
		while (my $line = <$fh>)
		{
			chomp $line;
			my ($type, $k, $v) = split /\t/, $line, 3;
			if ($type eq 'stat') { $role->{$k} += $v; }
			else { $v =~ s/\\n/\n/g; push @problems, "$k: $v"; }
		}
		close $fh;
	}
	return (\%w, \%r, \@problems);
}

1;
