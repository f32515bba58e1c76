# WtcacheFuzz::Faults: the consistency fuzzer's faults (test/t/014_fuzz.pl):
# their kinds and the seed's schedule of them, their injection, what each
# saw (checked by the test at the end), and the FUZZ_SELFTEST's planted
# stale values.
#
# The parent of the test holds one WtcacheFuzz::Faults object: the servers
# it acts on, and the state the faults keep between them (fz_drop's
# rounds, the key types alter_key changed, the read counters).  The
# writers learn of a replica_role or async_crash window through flag files
# in the run's directory (WtcacheFuzz::Sessions' writer_settings).
#
# Only rand() is used, in the parent, in the order the original test had:
# plan_faults() right after the initial rows, then the rand() calls of
# inject() and plant_stale() as the run meets them.
package WtcacheFuzz::Faults;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run ();
use Time::HiRes qw(time usleep);

use WtcacheFuzz::Generate qw(pick chance part_tables part_slots);
use WtcacheTest;

our @EXPORT = qw(fault_kinds plan_faults);

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
#   part_create  a partition of fz_part (or fz_pl) created for a range of
#                ten buckets none has (range 10 of fz_part hash-partitioned
#                in two), or a hash partition of fz_part_b10 that is
#                missing; the rows fz_part's default partition holds in
#                that range are moved out of it first (deleted, and
#                inserted again through the parent once the partition is
#                there: PostgreSQL refuses the partition otherwise);
#   part_attach  ATTACH PARTITION of a table a fault detached before (its
#                rows renumbered: it may have been written to directly
#                meanwhile), or of a new table filled with 20 to 200 rows;
#                the default's rows in its range go first;
#   part_detach  DETACH PARTITION (in a transaction) of a partition of
#                fz_part at any level, the default included;
#   part_detach_conc  DETACH PARTITION ... CONCURRENTLY of a partition of
#                fz_pl (no default), then, a moment later, its ATTACH;
#   part_drop    DROP TABLE of a partition of fz_part or fz_pl at any
#                level but the default;
#   part_truncate TRUNCATE of a partition of either, at any level.
#                The rows a DETACH, DROP or TRUNCATE takes out of the parent
#                are written to fz_dead in its transaction (for
#                CONCURRENTLY by an event trigger, WtcacheFuzz::Schema), so
#                that the readers' checks hold; Redis must equal each
#                parent at the end (a detached table's rows are no row of
#                it).
# Each kind once at a random moment (in random order), then, in longer
# runs, one more about every 12 s; all between 10% and 85% of the run, so
# that the sessions work before, between and after them.  Faults are
# injected one after the other: one that runs late delays the next.
my @FAULT_KINDS = qw(redis_empty redis_kill9 redis_aof worker_kill pg_restart proxy_stall proxy_cut
  drop_table alter_key replica_role async_crash
  part_create part_attach part_detach part_detach_conc part_drop part_truncate);
my @PART_KINDS = grep { /^part_/ } @FAULT_KINDS;

sub fault_kinds { return @FAULT_KINDS; }

# The schedule of a run of $secs seconds: [ { at (s from the start), kind,
# pause, variant } ], in order.  pause and variant are the seed's choices
# for the fault (how long Redis stays down, whether a stall ends in a cut,
# how many drop rounds...).
sub plan_faults
{
	my ($secs) = @_;
	my @plan;
	my @kinds = @FAULT_KINDS;
	my $extra = $secs > 30 ? int(($secs - 30) / 12) : 0;
	push @kinds, pick('redis_empty', 'redis_kill9', 'redis_aof', 'worker_kill', 'worker_kill', 'redis_empty', 'pg_restart',
		'proxy_stall', 'proxy_cut', 'drop_table', 'alter_key', 'replica_role', 'async_crash', pick(@PART_KINDS),
		pick(@PART_KINDS)) for 1 .. $extra;
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
		push @plan, { at => 0.1 * $secs + $slot * ($i + rand()), kind => $kinds[$i], pause => rand(1.5), variant => rand() };
	}
	return @plan;
}

# table => the key column alter_key retypes
my %ALTER_KEY = (fz_int => 'id', fz_inv => 'id', fz_comp => 'n');

# new(node, db, redis (the Redis the checks use, rp its port), proxy (the
# one PostgreSQL reaches it through), copydir (flag files), psql and
# connstr (async_crash's loop of commits), command_timeout_ms (as set in
# the server), marker_key (the generation marker in Redis), progress (a
# sub that reports a line)).
sub new
{
	my ($class, %args) = @_;
	return bless {
		%args,
		read_counters => {},    # summed over server restarts (they reset the counters)
		read_last => {},
		fault_log => [],
		fault_count => {},      # kind => faults of that kind injected
		done_faults => [],      # the faults injected, in order
		aof_faults => [],       # the redis_aof faults, with what they saw
		proxy_faults => [],     # the proxy_stall and proxy_cut faults, with what they saw
		# State of the drop_table, alter_key, replica_role and async_crash faults.
		key_type => { map { $_ => 'int' } keys %ALTER_KEY },    # the type of alter_key's column now
		drop_exists => 0,       # fz_drop exists (and is watched)
		drop_round => 0,
		tables_dropped => 0,
		replica_round => 0,
		replica_until => 0,     # when the writers' replica-role window ends
		async_lost => 0,        # acknowledged commits of fz_own the crashes took back
		part_detached => [],    # tables the part_* faults detached: { name, parent, bound }
		part_fresh => 40,       # the next range of the new tables part_attach fills, beyond the writers'
		part_rows_moved => 0,   # rows moved out of fz_part's default partition by part_create and part_attach
		part_rows_attached => 0,
		part_rows_removed => 0, # rows a detach, drop or truncate took out of a parent
		plant_pattern => {},
		planted => 0,           # FUZZ_SELFTEST: stale values planted in Redis
	}, $class;
}

# The end of the writers' replica-role window, when it is due.
sub end_replica_window
{
	my ($self) = @_;
	if ($self->{replica_until} && time() >= $self->{replica_until})
	{
		$self->flag_file('replica', 0);
		$self->{replica_until} = 0;
	}
	return;
}

sub sample_read_counters
{
	my ($self) = @_;
	my ($ret, $out) = eval { $self->{node}->psql($self->{db},
		q{SELECT coalesce(sum(read_hits), 0), coalesce(sum(read_misses), 0), coalesce(sum(read_bypasses), 0),
		         coalesce(sum(read_fallbacks), 0), coalesce(sum(read_fills), 0), coalesce(sum(fills_rejected), 0)
		  FROM wtcache.status}, timeout => 10, timed_out => \my $timed_out) };
	return unless defined $ret && $ret == 0 && $out =~ /^[0-9|]+$/;
	my @v = split /\|/, $out;
	my @names = qw(hits misses bypasses fallbacks fills fills_rejected);
	for my $i (0 .. $#names)
	{
		my $last = $self->{read_last}{ $names[$i] } // 0;
		$self->{read_counters}{ $names[$i] } += $v[$i] >= $last ? $v[$i] - $last : $v[$i];
		$self->{read_last}{ $names[$i] } = $v[$i];
	}
	return;
}

# (Not poll_query_until: its psql may die of a broken pipe when the
# server refuses connections while it recovers, and that croaks.)
sub server_up
{
	my ($self) = @_;
	my $deadline = time() + 180;
	while (time() < $deadline)
	{
		my ($ret, $out) = eval { $self->{node}->psql($self->{db}, 'SELECT 1', timeout => 10, timed_out => \my $t) };
		return 1 if defined $ret && $ret == 0 && defined $out && $out eq '1';
		usleep(100_000);
	}
	return 0;
}

# SQL that may fail (the server may be restarting): (ok, stdout, stderr).
sub try_sql
{
	my ($self, $sql, $timeout) = @_;
	my ($ret, $out, $err) = eval { $self->{node}->psql($self->{db}, $sql, timeout => $timeout // 60, timed_out => \my $t) };
	return (defined $ret && $ret == 0 ? 1 : 0, $out // '', $err // $@ // '');
}

# The delivery worker's view: (connected, whether its last error came
# after the timestamp $since, that error), or () when there is no worker.
sub worker_view
{
	my ($self, $since) = @_;
	my $after = defined $since ? "coalesce(last_error_at >= '$since'::timestamptz, false)" : 'false';
	my ($ret, $out) = eval { $self->{node}->psql($self->{db},
		qq{SELECT connected, $after, coalesce(last_error, '') FROM wtcache.worker_status()
		   WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())},
		timeout => 10, timed_out => \my $timed_out) };
	return () unless defined $ret && $ret == 0 && defined $out && $out =~ /^([tf])\|([tf])\|(.*)$/s;
	return ($1 eq 't', $2 eq 't', $3);
}

sub pg_now
{
	my ($self) = @_;
	my ($ret, $out) = eval { $self->{node}->psql($self->{db}, 'SELECT clock_timestamp()', timeout => 10, timed_out => \my $t) };
	return (defined $ret && $ret == 0) ? $out : undef;
}

# Wait up to $secs for the worker to be connected to Redis (through the
# proxy); returns whether it is.
sub wait_worker_connected
{
	my ($self, $secs) = @_;
	my $deadline = time() + $secs;
	while (1)
	{
		my ($connected) = $self->worker_view();
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
	my ($self, $since, $secs, $quiet) = @_;
	my $start = time();
	my ($connected, $failed, $error);
	while (1)
	{
		($connected, $failed, $error) = $self->worker_view($since);
		last if $connected && ($failed || time() - $start > $quiet);
		last if time() - $start > $secs;
		usleep(100_000);
	}
	return { failed => $failed ? 1 : 0, connected => $connected ? 1 : 0, error => $error // '' };
}

sub flag_file
{
	my ($self, $name, $on) = @_;
	if ($on)
	{
		open(my $fh, '>', "$self->{copydir}/$name") or die "create $self->{copydir}/$name: $!";
		close $fh;
	}
	else
	{
		unlink "$self->{copydir}/$name";
	}
	return;
}

# fz_drop created and watched, then $rows rows written to it; returns
# undef or what failed.
sub drop_table_create
{
	my ($self, $rows) = @_;
	my ($ok, undef, $err) = $self->try_sql(qq{
CREATE TABLE fz_drop (id int PRIMARY KEY, round int NOT NULL, v text);
SELECT wtcache.watch('fz_drop');
INSERT INTO fz_drop SELECT g, $self->{drop_round}, 'round $self->{drop_round} row ' || g FROM generate_series(1, $rows) g;
});
	$self->{drop_exists} = 1 if $ok;
	return $ok ? undef : "round $self->{drop_round}: create and fill: $err";
}

sub fault_counts
{
	my ($self) = @_;
	return join(', ', map { "$_ " . ($self->{fault_count}{$_} // 0) } @FAULT_KINDS);
}

############################################################################
# The partition faults (part_*)
############################################################################

# The partitions attached now, at any level: { name => { parent, bound,
# kind ('r' or 'p'), root } }.
sub part_state
{
	my ($self) = @_;
	my ($ok, $out, $err) = $self->try_sql(q{SELECT c.relname, pc.relname, pg_get_expr(c.relpartbound, c.oid), c.relkind
		FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid JOIN pg_class pc ON pc.oid = i.inhparent
		WHERE c.relname ~ '^fz_p(art|l)_' AND c.relkind IN ('r', 'p') ORDER BY 1}, 20);
	die "partition state: $err" unless $ok;
	my %st;
	for my $line (split /\n/, $out)
	{
		my ($name, $parent, $bound, $kind) = split /\|/, $line;
		my ($root) = $name =~ /^(fz_part|fz_pl)_/;
		$st{$name} = { parent => $parent, bound => $bound, kind => $kind, root => $root };
	}
	return \%st;
}

sub rel_exists
{
	my ($self, $name) = @_;
	my (undef, $out) = $self->try_sql("SELECT to_regclass('$name') IS NOT NULL", 20);
	return ($out // '') eq 't';
}

# The top-level range partitions of $root in $st: [ from, to ], ...
sub part_ranges
{
	my ($st, $root) = @_;
	return map { $st->{$_}{bound} =~ /FROM \((\d+)\) TO \((\d+)\)/ ? [ $1, $2 ] : () }
	  grep { $st->{$_}{parent} eq $root } sort keys %$st;
}

# Run $sql in a transaction that waits at most 3 s for a lock, again on a
# lock timeout or a deadlock: (ok, error, tries).
sub part_txn
{
	my ($self, $sql) = @_;
	my ($ok, $err, $tries) = (0, '', 0);
	while (!$ok && $tries < 10)
	{
		$tries++;
		(my $done, undef, $err) = $self->try_sql("BEGIN; SET LOCAL lock_timeout = '3s';\n$sql\nCOMMIT;");
		$ok = $done;
		last unless $ok || $err =~ /lock timeout|deadlock detected/;
	}
	return ($ok, $err, $tries);
}

sub part_count
{
	my ($self, $table) = @_;
	my ($ok, $n) = $self->try_sql("SELECT count(*) FROM $table", 20);
	return ($ok && $n =~ /^(\d+)$/) ? $1 : 0;
}

# ATTACH of the standalone table $t ({ name, parent, bound }), in the
# transaction that first takes the rows its range would share out of
# the parent's default partition (or, for a default, out of the table
# the rows other partitions hold), and renumbers its rows' incarnations
# (those of a table detached before are dead in fz_dead, and it may have
# been written to directly without fz_track).
sub part_attach_table
{
	my ($self, $t) = @_;
	my $st = $self->part_state;
	my ($root) = $t->{name} =~ /^(fz_part|fz_pl)_/;
	# the table too: writers write to it by name, and one that commits a
	# row its bound does not take after the DELETE below, before ATTACH
	# locks the table, makes the ATTACH fail
	my @sql = ("LOCK TABLE $root, $t->{name} IN ACCESS EXCLUSIVE MODE;");
	my $moved = 0;
	if ($t->{bound} eq 'DEFAULT')
	{
		push @sql, "DELETE FROM $t->{name} WHERE bucket >= $_->[0] AND bucket < $_->[1];" for part_ranges($st, $t->{parent});
	}
	elsif ($t->{parent} eq $root && $st->{"${root}_def"} && $t->{bound} =~ /FROM \((\d+)\) TO \((\d+)\)/)
	{
		push @sql, "DELETE FROM ${root}_def WHERE bucket >= $1 AND bucket < $2;";
		(undef, $moved) = $self->try_sql("SELECT count(*) FROM ${root}_def WHERE bucket >= $1 AND bucket < $2", 20);
	}
	# rows written to it by name while it stood alone that its bound
	# does not take (a bucket moved out of its range, an id of the other
	# hash partition)
	if ($t->{bound} =~ /FROM \((\d+)\) TO \((\d+)\)/)
	{
		push @sql, "DELETE FROM $t->{name} WHERE NOT (bucket >= $1 AND bucket < $2);";
	}
	elsif ($t->{bound} =~ /modulus (\d+), remainder (\d+)/)
	{
		push @sql, "DELETE FROM $t->{name} WHERE NOT satisfies_hash_partition('$t->{parent}'::regclass, $1, $2, id);";
	}
	push @sql, "UPDATE $t->{name} SET inc = nextval('fz_inc'), ver = 0;",
	  "ALTER TABLE $t->{parent} ATTACH PARTITION $t->{name} $t->{bound};";
	my $rows = $self->part_count($t->{name});
	my ($ok, $err, $tries) = $self->part_txn(join("\n", @sql));
	$self->{part_rows_attached} += $rows if $ok;
	return ($ok, $err, sprintf('ATTACH PARTITION %s %s to %s (%d rows; %s rows of the default deleted first; %d tr%s)',
		$t->{name}, $t->{bound}, $t->{parent}, $rows, $moved // '?', $tries, $tries == 1 ? 'y' : 'ies'));
}

# A DETACH (in a transaction), DROP or TRUNCATE of $name, its rows written
# to fz_dead first, under a lock of the whole tree.
sub part_remove
{
	my ($self, $how, $name, $p) = @_;
	my $root = $p->{root};
	my $rows = $self->part_count($name);
	my $lock = $how eq 'truncate' ? "LOCK TABLE $name IN ACCESS EXCLUSIVE MODE;" : "LOCK TABLE $root IN ACCESS EXCLUSIVE MODE;";
	my $ddl = $how eq 'detach' ? "ALTER TABLE $p->{parent} DETACH PARTITION $name;" : $how eq 'drop' ? "DROP TABLE $name;" : "TRUNCATE $name;";
	my ($ok, $err, $tries) = $self->part_txn("$lock\nINSERT INTO fz_dead SELECT '$root', inc, pg_current_xact_id() FROM $name;\n$ddl");
	$self->{part_rows_removed} += $rows if $ok;
	return ($ok, $err, sprintf('%s of %s (%s, %d rows; %d tr%s)', uc($how), $name, $p->{bound}, $rows, $tries, $tries == 1 ? 'y' : 'ies'));
}

# One part_* fault: (ok, error, what).
sub part_fault
{
	my ($self, $kind, $f) = @_;
	my $st = $self->part_state;
	my @attached = sort keys %$st;
	if ($kind eq 'part_truncate')
	{
		my $name = pick(@attached);
		return (0, 'no partition to truncate', '') unless defined $name;
		return $self->part_remove('truncate', $name, $st->{$name});
	}
	if ($kind eq 'part_drop')
	{
		my @c = grep { !/_def\z/ } @attached;
		my $name = pick(@c);
		return (0, 'no partition to drop', '') unless defined $name;
		my @r = $self->part_remove('drop', $name, $st->{$name});
		# tables detached from it go too (their parent is gone)
		if ($r[0])
		{
			for my $t (grep { $_->{parent} eq $name } @{ $self->{part_detached} })
			{
				$self->try_sql("DROP TABLE IF EXISTS $t->{name}");
			}
			$self->{part_detached} = [ grep { $_->{parent} ne $name } @{ $self->{part_detached} } ];
		}
		return @r;
	}
	if ($kind eq 'part_detach')
	{
		my $name = pick(grep { $st->{$_}{root} eq 'fz_part' } @attached);
		return (0, 'no partition of fz_part to detach', '') unless defined $name;
		my @r = $self->part_remove('detach', $name, $st->{$name});
		push @{ $self->{part_detached} }, { name => $name, parent => $st->{$name}{parent}, bound => $st->{$name}{bound} } if $r[0];
		return @r;
	}
	if ($kind eq 'part_detach_conc')
	{
		my $name = pick(grep { $st->{$_}{root} eq 'fz_pl' } @attached);
		return (0, 'no partition of fz_pl to detach', '') unless defined $name;
		my $rows = $self->part_count($name);
		my $t = { name => $name, parent => 'fz_pl', bound => $st->{$name}{bound} };
		my $t0 = time();
		my ($ok, undef, $err) = $self->try_sql("ALTER TABLE fz_pl DETACH PARTITION $name CONCURRENTLY", 120);
		my $secs = time() - $t0;
		if (!$ok)
		{
			# interrupted in its second transaction: finish it
			my ($fin, undef, $ferr) = $self->try_sql("ALTER TABLE fz_pl DETACH PARTITION $name FINALIZE", 120);
			return (0, "DETACH CONCURRENTLY of $name: $err" . ($fin ? ' (FINALIZE done)' : "; FINALIZE: $ferr"), '');
		}
		$self->{part_rows_removed} += $rows;
		push @{ $self->{part_detached} }, $t;
		usleep(int($f->{pause} * 1e6 / 3));
		my ($aok, $aerr, $awhat) = $self->part_attach_table($t);
		$self->{part_detached} = [ grep { $_ != $t } @{ $self->{part_detached} } ] if $aok;
		$self->{part_detach_conc_attached}++ if $aok;
		return ($aok, $aerr, sprintf('DETACH PARTITION %s CONCURRENTLY (%d rows, %.1f s), then %s', $name, $rows, $secs, $awhat));
	}
	if ($kind eq 'part_attach')
	{
		my @det = @{ $self->{part_detached} };
		my $t;
		if (@det && $f->{variant} < 0.75)
		{
			$t = pick(@det);
			if (!$self->rel_exists($t->{parent}))
			{
				$self->try_sql("DROP TABLE IF EXISTS $t->{name}");
				$self->{part_detached} = [ grep { $_ != $t } @det ];
				$t = undef;
			}
		}
		my $fresh = '';
		if (!$t)
		{
			my $s = $self->{part_fresh};
			$self->{part_fresh} += 10;
			my $n = 20 + int(rand(181));
			$t = { name => "fz_part_b$s", parent => 'fz_part', bound => "FOR VALUES FROM ($s) TO (" . ($s + 10) . ")" };
			my ($ok, undef, $err) = $self->try_sql(qq{CREATE TABLE $t->{name} (LIKE fz_part INCLUDING DEFAULTS);
INSERT INTO $t->{name} (id, bucket, v, qty) SELECT g, $s + g % 10, 'attached ' || g, g FROM generate_series(1, $n) g;});
			return (0, "create $t->{name}: $err", '') unless $ok;
			$fresh = "a new table, ";
		}
		my ($ok, $err, $what) = $self->part_attach_table($t);
		$self->{part_detached} = [ grep { $_ != $t } @{ $self->{part_detached} } ] if $ok;
		return ($ok, $err, "$fresh$what");
	}
	if ($kind eq 'part_create')
	{
		# free ranges of ten (no partition, no table of that name), and
		# missing hash partitions of fz_part_b10
		my @c;
		for my $root (part_tables())
		{
			my @ranges = part_ranges($st, $root);
			for my $s (part_slots())
			{
				next if grep { $s < $_->[1] && $s + 10 > $_->[0] } @ranges;
				my @names = ("${root}_b$s", ($root eq 'fz_part' && $s == 10 ? ('fz_part_b10_h0', 'fz_part_b10_h1') : ()));
				next if grep { $self->rel_exists($_) } @names;
				push @c, [ $root, $s ];
			}
		}
		if ($st->{fz_part_b10} && $st->{fz_part_b10}{kind} eq 'p')
		{
			for my $r (0, 1)
			{
				push @c, [ 'leaf', $r ] unless $st->{"fz_part_b10_h$r"} || $self->rel_exists("fz_part_b10_h$r");
			}
		}
		if (!@c)
		{
			push @c, [ 'fz_part', $self->{part_fresh} ];
			$self->{part_fresh} += 10;
		}
		my ($root, $s) = @{ pick(@c) };
		if ($root eq 'leaf')
		{
			my ($ok, $err, $tries) = $self->part_txn("LOCK TABLE fz_part IN ACCESS EXCLUSIVE MODE;\n"
				  . "CREATE TABLE fz_part_b10_h$s PARTITION OF fz_part_b10 FOR VALUES WITH (MODULUS 2, REMAINDER $s);");
			return ($ok, $err, "CREATE TABLE fz_part_b10_h$s PARTITION OF fz_part_b10 ($tries tr" . ($tries == 1 ? 'y' : 'ies') . ')');
		}
		my $e = $s + 10;
		my $name = "${root}_b$s";
		my $moved = 0;
		my @sql = ("LOCK TABLE $root IN ACCESS EXCLUSIVE MODE;");
		my $def = $st->{"${root}_def"};
		if ($def)
		{
			(undef, $moved) = $self->try_sql("SELECT count(*) FROM ${root}_def WHERE bucket >= $s AND bucket < $e", 20);
			push @sql, "CREATE TEMP TABLE fz_mv ON COMMIT DROP AS SELECT id, bucket, v, qty, doc, at FROM ${root}_def WHERE bucket >= $s AND bucket < $e;",
			  "DELETE FROM ${root}_def WHERE bucket >= $s AND bucket < $e;";
		}
		push @sql, "CREATE TABLE $name PARTITION OF $root FOR VALUES FROM ($s) TO ($e)" . ($name eq 'fz_part_b10' ? ' PARTITION BY HASH (id);' : ';');
		push @sql, map { "CREATE TABLE fz_part_b10_h$_ PARTITION OF fz_part_b10 FOR VALUES WITH (MODULUS 2, REMAINDER $_);" } (0, 1)
		  if $name eq 'fz_part_b10';
		push @sql, "INSERT INTO $root (id, bucket, v, qty, doc, at) SELECT * FROM fz_mv;" if $def;
		my ($ok, $err, $tries) = $self->part_txn(join("\n", @sql));
		$self->{part_rows_moved} += $moved if $ok && $moved =~ /^\d+$/;
		return ($ok, $err, sprintf('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%d) TO (%d)%s (%s rows moved out of the default; %d tr%s)',
			$name, $root, $s, $e, $name eq 'fz_part_b10' ? ' PARTITION BY HASH (id), with its two partitions' : '',
			$def ? $moved : 'no default, 0', $tries, $tries == 1 ? 'y' : 'ies'));
	}
	die "unknown partition fault $kind";
}

sub inject
{
	my ($self, $f, $t0) = @_;
	my ($node, $redis, $proxy, $rp) = @{$self}{qw(node redis proxy rp)};
	my $kind = $f->{kind};
	my $what;
	$self->sample_read_counters;
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
		$self->wait_worker_connected(10) and usleep(300_000);
		$f->{log_from} = -s $node->logfile;
		my ($m0) = redis_try($rp, 'GET', $self->{marker_key});
		my ($n0) = redis_try($rp, 'DBSIZE');
		$redis->kill9;
		usleep(int($f->{pause} * 1e6));
		$redis->start;    # same directory, no wipe: Redis replays its AOF
		my ($m1) = redis_try($rp, 'GET', $self->{marker_key});
		my ($n1) = redis_try($rp, 'DBSIZE');
		my $kept = (!defined $m0 || (defined $m1 && $m1 >= $m0)) && (!$n0 || ($n1 // 0) > 0);
		$f->{aof} = { marker_before => $m0, marker_after => $m1, keys_before => $n0, keys_after => $n1, kept => $kept };
		push @{ $self->{aof_faults} }, $f;
		$what = sprintf('Redis killed (kill -9), restarted after %.1f s with its AOF: %s keys before, %s after, '
			  . 'generation marker %s before, %s after%s', $f->{pause}, $n0 // '?', $n1 // '?',
			$m0 // 'missing', $m1 // 'missing', $kept ? '' : ' (DATA NOT KEPT)');
	}
	elsif ($kind eq 'proxy_stall')
	{
		# From the seed: 1 s past wtcache.command_timeout, plus up to 3 s.
		my $stall = $self->{command_timeout_ms} / 1000 + 1 + 2 * $f->{pause};
		my $end_cut = $f->{variant} < 0.3;
		# The worker's connection is to be among those stalled (it may
		# still be recovering from the fault before).
		$self->wait_worker_connected(10);
		my $since = $self->pg_now;
		my $fb0 = $self->{read_counters}{fallbacks} // 0;
		my $open = $proxy->stall(1);
		usleep(int($stall * 1e6));
		# What the worker reported while nothing reached Redis: only its
		# timeout can have ended a command.
		my (undef, $timed_out, $stall_error) = $self->worker_view($since);
		my $cut = $end_cut ? $proxy->cut : 0;
		$proxy->stall(0);
		my $w = $self->worker_after_proxy_fault($since, 15, 1);
		$self->sample_read_counters;
		$w->{fallbacks} = ($self->{read_counters}{fallbacks} // 0) - $fb0;
		$w->{open} = $open;
		$w->{timed_out} = $timed_out ? 1 : 0;
		$f->{proxy} = $w;
		push @{ $self->{proxy_faults} }, $f;
		$what = sprintf('proxy stalled all %d connections for %.1f s, then %s; worker %s%s; %d reads fell back to the table',
			$open, $stall, $end_cut ? "cut them ($cut)" : 'relayed what it held',
			$timed_out ? "timed out during the stall ($stall_error)" : 'reported no failure during the stall',
			$w->{connected} ? ', connected again after it' : ', NOT connected again after it', $w->{fallbacks});
	}
	elsif ($kind eq 'proxy_cut')
	{
		my $times = 1 + int($f->{pause} * 2);    # 1 to 3 cuts
		$self->wait_worker_connected(10);    # the worker's connection is to be among those cut
		my $since = $self->pg_now;
		my $fb0 = $self->{read_counters}{fallbacks} // 0;
		my @closed;
		for my $i (1 .. $times)
		{
			push @closed, $proxy->cut;
			usleep(200_000) if $i < $times;
		}
		my $w = $self->worker_after_proxy_fault($since, 10, 3);
		$self->sample_read_counters;
		$w->{fallbacks} = ($self->{read_counters}{fallbacks} // 0) - $fb0;
		$w->{open} = $closed[0];
		$f->{proxy} = $w;
		push @{ $self->{proxy_faults} }, $f;
		$what = sprintf('proxy cut every connection %d time%s (%s closed); worker %s%s; %d reads fell back to the table',
			$times, $times > 1 ? 's' : '', join(' + ', @closed),
			$w->{failed} ? "failed ($w->{error})" : 'reported no failure',
			$w->{connected} ? ' and is connected again' : ' and is NOT connected again', $w->{fallbacks});
	}
	elsif ($kind eq 'worker_kill')
	{
		my $pid = wait_for_worker($node, $self->{db}, 30);
		if (!defined $pid)
		{
			push @{ $self->{fault_log} }, 'no delivery worker to kill';
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
		my (undef, $start0) = $self->try_sql('SELECT pg_postmaster_start_time()');
		my (@errors, @how);
		for my $round (1 .. $rounds)
		{
			$self->{drop_round}++;
			if ($self->{drop_exists})
			{
				# the incarnation left by the fault before: changed, dropped
				my ($ok, undef, $err) = $self->try_sql("UPDATE fz_drop SET v = v || ' changed' WHERE id % 3 = $round % 3; DROP TABLE fz_drop;");
				push @errors, "round $self->{drop_round}: update and drop of the old table: $err" unless $ok;
				next unless $ok;
				$self->{drop_exists} = 0;
				$self->{tables_dropped}++;
			}
			my $err = $self->drop_table_create(200 + int(rand(2800)));
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
					my ($ok, $out) = $self->try_sql(q{SELECT pushed FROM wtcache.status WHERE table_name = 'fz_drop'::regclass}, 10);
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
			my ($ok, undef, $derr) = $self->try_sql('DROP TABLE fz_drop');
			push @errors, "round $self->{drop_round}: drop: $derr" unless $ok;
			next unless $ok;
			$self->{drop_exists} = 0;
			$self->{tables_dropped}++;
		}
		# Once more, kept until the next drop_table fault and compared at
		# the end.
		$self->{drop_round}++;
		if (!$self->{drop_exists})
		{
			my $err = $self->drop_table_create(100 + int(rand(400)));
			push @errors, $err if defined $err;
		}
		$self->server_up or die "the server did not come back after: $kind";
		my (undef, $start1) = $self->try_sql('SELECT pg_postmaster_start_time()');
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
		my $to = $self->{key_type}{$tn} eq 'int' ? 'bigint' : 'int';
		my (undef, $mark) = $self->try_sql('SELECT last_value FROM fz_inc');
		my ($ok, $err, $tries) = (0, '', 0);
		while (!$ok && $tries < 10)
		{
			$tries++;
			(my $done, undef, $err) = $self->try_sql("SET lock_timeout = '3s'; ALTER TABLE $tn ALTER COLUMN $col TYPE $to;");
			$ok = $done;
			last unless $ok || $err =~ /lock timeout|deadlock detected/;
		}
		$self->{key_type}{$tn} = $to if $ok;
		my (undef, $type) = $self->try_sql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '$tn'::regclass AND attname = '$col'");
		my (undef, $trig) = $self->try_sql("SELECT string_agg(tgname || ' ' || tgenabled::text, ', ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = '$tn'::regclass AND tgname LIKE 'wtcache%'");
		# The writers go on writing the table: a row written after the
		# ALTER (an incarnation numbered after it, alive or dead).
		my $writes = 0;
		my $deadline = time() + 20;
		while ($ok && $mark =~ /^\d+$/ && time() < $deadline)
		{
			my ($q, $n) = $self->try_sql("SELECT (SELECT count(*) FROM $tn WHERE inc > $mark) + (SELECT count(*) FROM fz_dead WHERE tbl = '$tn' AND inc > $mark)", 10);
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
		$self->flag_file('replica', 1);
		$self->{replica_until} = time() + $window;
		$self->{replica_round}++;
		my $r = $self->{replica_round} % 3;
		my ($ok, undef, $err) = $self->try_sql(qq{
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE fz_own SET v = 'replica $self->{replica_round} ' || id, at = clock_timestamp() WHERE id BETWEEN 1001 AND 1020 AND id % 3 <> $r;
DELETE FROM fz_own WHERE id BETWEEN 1001 AND 1020 AND id % 3 = $r;
INSERT INTO fz_own SELECT g, NULL, 'replica insert $self->{replica_round}', clock_timestamp() FROM generate_series(1001, 1020) g
 WHERE g % 3 = ($r + 1) % 3 ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v;
COMMIT;
});
		$f->{replica} = { ok => $ok, err => $err };
		$what = sprintf('writers run with session_replication_role = replica for %.1f s; the replica-role change of fz_own %s',
			$window, $ok ? 'committed' : "FAILED ($err)");
	}
	elsif ($kind eq 'async_crash')
	{
		$self->flag_file('async', 1);
		my (undef, $n0) = $self->try_sql('SELECT coalesce(max(n), 0) FROM fz_own');
		$n0 = 0 unless $n0 =~ /^\d+$/;
		# One-row commits, each asynchronous, until the crash: row
		# 1 + i % 50 gets n = i, rows 51 to 70 come and go; max(n) is the
		# last commit.  A NOTICE after each COMMIT tells the test which
		# commits were acknowledged (a NOTICE is sent at once).
		my ($lout, $lerr) = ('', '');
		my $loop = IPC::Run::start([ $self->{psql}, '-X', '-q', '-d', $self->{connstr}, '-c', 'SET synchronous_commit = off', '-c', qq{
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
			my ($ok, $out) = $self->try_sql('SELECT coalesce(max(n), 0) > ' . $n0 . ', pg_current_wal_insert_lsn() - pg_current_wal_flush_lsn() FROM fz_own', 10);
			$gap = $1 if $ok && $out =~ /^t\|(\d+)$/;
			last if $gap > 0;
			usleep(10_000);
		}
		$node->stop('immediate');
		$self->flag_file('async', 0);
		# What psql received before the crash: the last acknowledged commit.
		eval { $loop->finish; };
		eval { $loop->kill_kill(grace => 1); };
		my @acked = $lerr =~ /fz_own commit (\d+)/g;
		my $acked = @acked ? $acked[-1] : $n0;
		$node->start;
		$self->server_up or die "the server did not come back after: $kind";
		my (undef, $after) = $self->try_sql('SELECT coalesce(max(n), 0) FROM fz_own');
		$after = 0 unless $after =~ /^\d+$/;
		my $lost = $acked > $after ? $acked - $after : 0;
		$self->{async_lost} += $lost;
		# Nothing the crash took back may be in Redis: once what committed
		# is delivered, fz_own (which only this fault and replica_role
		# write) equals Redis key for key.
		my $drained = wait_drained($node, $self->{db}, '60s');
		my ($same, $diag) = compare_table($node, $self->{db}, 'fz_own', $rp);
		$f->{async} = { drained => $drained, same => $same, diag => $diag };
		$what = sprintf('%d commits of fz_own acknowledged with synchronous_commit = off (WAL %d bytes past the flushed end '
			  . 'at the last look), then PostgreSQL stopped in immediate mode and started: %d of them lost; fz_own and Redis %s',
			$acked - $n0, $gap, $lost, !$drained ? 'NOT DRAINED' : $same ? 'equal' : "DIFFER: $diag");
	}
	elsif ($kind =~ /^part_/)
	{
		my ($ok, $err, $did) = $self->part_fault($kind, $f);
		$f->{part} = { ok => $ok, err => $err };
		$what = $ok ? $did : "$kind FAILED: $err" . ($did ne '' ? " ($did)" : '');
	}
	$self->server_up or die "the server did not come back after: $kind";
	$self->{fault_count}{$kind}++;
	my $line = sprintf('%5.1f s: %s', time() - $t0, $what);
	$f->{line} = $line;
	push @{ $self->{done_faults} }, $f;
	push @{ $self->{fault_log} }, $line;
	$self->{progress}->("fault $line");
	return 1;
}

# FUZZ_SELFTEST: what a bug would leave in Redis.  A row value with its
# ver lowered (an older version of the row), or, for a row not updated
# yet, with an incarnation that never existed; "_v" is kept, so the
# worker replaces it only at the row's next change.

sub plant_stale
{
	my ($self, $n) = @_;
	my $done = 0;
	for my $tn (qw(fz_int fz_text))
	{
		$self->{plant_pattern}{$tn} //= table_key_pattern($self->{node}, $self->{db}, $tn);
		my $keys = eval { redis_row_keys($self->{rp}, $self->{plant_pattern}{$tn}) } or next;
		for (1 .. $n)
		{
			last unless @$keys;
			my $key = $keys->[ int(rand(scalar @$keys)) ];
			my ($value) = redis_try($self->{rp}, 'GET', $key);
			next unless defined $value;
			next unless $value =~ s/"ver":([1-9][0-9]*)/'"ver":' . ($1 - 1)/e
			  || $value =~ s/"inc":([0-9]+)/'"inc":' . ($1 + 1_000_000_000_000)/e;
			my ($ok) = redis_try($self->{rp}, 'SET', $key, $value);
			$done++ if defined $ok;
		}
	}
	$self->{planted} += $done;
	return $done;
}

1;
