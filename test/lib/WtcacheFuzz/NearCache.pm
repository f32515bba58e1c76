# WtcacheFuzz::NearCache: the reference near cache (test/near_cache.py)
# run alongside the consistency fuzzer (FUZZ_NEAR_CACHE=1 in
# test/t/014_fuzz.pl, which test/t/042_near_cache.pl sets): started before
# the writers, told to stop once everything is delivered, and its entries
# compared with the tables.
#
# The consumer reads Redis through the same proxy as PostgreSQL, so the
# fuzzer's Redis restarts, proxy stalls and cuts take its subscription
# too.  It is a child of the test (no rand() here: the fuzzer's seed
# replays the same run with or without it) and exits on its own when the
# test is gone; stop() kills it.
package WtcacheFuzz::NearCache;

use strict;
use warnings;

use FindBin;
use JSON::PP ();
use MIME::Base64 qw(decode_base64);
use POSIX ();
use Time::HiRes qw(time usleep);

use WtcacheTest;

# start(port (Redis, or the proxy to it), db, dir (the consumer's control
# and dump files), logfile, seed, selftest): the running consumer.
sub start
{
	my ($class, %args) = @_;
	my $script = "$FindBin::RealBin/../near_cache.py";
	die "no $script" unless -f $script;
	unlink "$args{dir}/stop", "$args{dir}/dump.json";
	my $parent = $$;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# (exec, or _exit: never the test's END blocks)
		$SIG{__DIE__} = 'DEFAULT';
		open(STDOUT, '>>', $args{logfile}) or POSIX::_exit(127);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
		$ENV{NEAR_CACHE_SELFTEST} = $args{selftest} ? 1 : 0;
		exec('/usr/bin/python3', $script, '--port', $args{port}, '--db', $args{db}, '--dir', $args{dir},
			'--seed', $args{seed}, '--parent', $parent)
		  or POSIX::_exit(127);
	}
	return bless { %args, pid => $pid, status => undef }, $class;
}

sub pid { return $_[0]->{pid} }

# The consumer's exit status, once it has exited (the caller's own
# waitpid(-1) may have reaped it: it then passes the status here).
sub reaped
{
	my ($self, $status) = @_;
	$self->{status} = $status;
	return;
}

# Ask it to apply every message up to $target_seq and dump; wait for it to
# exit (up to $secs).  Returns (dump or undef, problem or undef).
sub finish
{
	my ($self, $target_seq, $secs) = @_;
	open(my $fh, '>', "$self->{dir}/stop.tmp") or die "create $self->{dir}/stop.tmp: $!";
	print $fh $target_seq // '';
	close $fh;
	rename("$self->{dir}/stop.tmp", "$self->{dir}/stop") or die "rename: $!";
	my $deadline = time() + $secs;
	while (!defined $self->{status} && time() < $deadline)
	{
		my $r = waitpid($self->{pid}, POSIX::WNOHANG());
		if ($r == $self->{pid}) { $self->{status} = $?; }
		elsif ($r < 0) { $self->{status} = -1; }    # reaped by the caller's waitpid(-1), status unknown
		else { usleep(50_000); }
	}
	return (undef, "the consumer did not exit within $secs s after it was told to stop") unless defined $self->{status};
	$self->{pid} = undef;
	my $file = "$self->{dir}/dump.json";
	return (undef, "the consumer exited with status $self->{status} and no $file") unless -f $file;
	open(my $in, '<:raw', $file) or return (undef, "open $file: $!");
	my $dump = JSON::PP->new->utf8->decode(do { local $/; <$in> });
	close $in;
	return ($dump, $dump->{in_step} ? undef
		: "the consumer did not apply every message up to $target_seq (last $dump->{last_seq}), exit status $self->{status}");
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'KILL', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
	return;
}

sub DESTROY
{
	my ($self) = @_;
	kill 'KILL', $self->{pid} if $self->{pid};
	return;
}

# { redis_key => row_to_json } of table $tn (key columns @$keycols), as
# cached reads render it (TimeZone UTC).
sub table_rows_by_key
{
	my ($node, $db, $tn, $keycols) = @_;
	my $keyexpr = join(', ', map { "($_)::text" } @$keycols);
	my $out = $node->safe_psql($db, qq{SET TimeZone = 'UTC';
COPY (SELECT translate(encode(convert_to(wtcache.redis_key('$tn'::regclass, $keyexpr), 'UTF8'), 'base64'), E'\\n', ''),
             translate(encode(convert_to(row_to_json(r)::text, 'UTF8'), 'base64'), E'\\n', '')
      FROM $tn r) TO STDOUT;});
	my %rows;
	for my $line (split /\n/, $out)
	{
		my ($k, $j) = split /\t/, $line;
		$rows{ decode_base64($k) } = decode_base64($j);
	}
	return \%rows;
}

# Compare the dump's entries with the tables ({ table => [key columns] })
# and with what Redis (port $rp) holds now: (entries compared, \@diffs,
# entries whose key Redis does not hold, entries that differ).  An entry must be its table's row
# as it is now, and the very value Redis holds where it holds one.
sub compare_entries
{
	my ($node, $db, $rp, $dump, $tables) = @_;
	my %want;
	for my $tn (sort keys %$tables)
	{
		my $rows = table_rows_by_key($node, $db, $tn, $tables->{$tn});
		@want{ keys %$rows } = values %$rows;
	}
	my @keys = sort keys %{ $dump->{entries} };
	my @cmds;
	for (my $i = 0; $i < @keys; $i += 500)
	{
		my $e = $i + 499 > $#keys ? $#keys : $i + 499;
		push @cmds, [ 'MGET', @keys[ $i .. $e ] ];
	}
	my @now = map { @$_ } @{ redis_pipeline($rp, \@cmds) };
	my (@diffs, $not_in_redis, $bad);
	$not_in_redis = $bad = 0;
	for my $i (0 .. $#keys)
	{
		my $before = @diffs;
		my $key = $keys[$i];
		my $held = decode_base64($dump->{entries}{$key}{value_b64});
		utf8::encode($key);    # (JSON gave characters; the tables and Redis give bytes)
		my ($v, $rest) = redis_row_version($held);
		if (!defined $v) { push @diffs, "not a row value: $key = " . substr($held, 0, 200); }
		elsif (!exists $want{$key}) { push @diffs, "an entry without a row: $key = " . substr($held, 0, 200); }
		elsif ('{' . $rest ne $want{$key})
		{
			push @diffs, "differs from the table: $key\n    held:  " . substr($held, 0, 200) . "\n    table: " . substr($want{$key}, 0, 200);
		}
		if (!defined $now[$i]) { $not_in_redis++; }
		elsif ($now[$i] ne $held)
		{
			push @diffs, "differs from Redis: $key\n    held:  " . substr($held, 0, 200) . "\n    Redis: " . substr($now[$i], 0, 200);
		}
		$bad++ if @diffs > $before;
	}
	return (scalar(@keys), \@diffs, $not_in_redis, $bad);
}

# The consumer's log of served versions ("<key> <_v>" each time the version
# served for a key changed), checked on its own: (lines, \@problems) where
# a problem is a version lower than one served before for that key.
sub check_served_log
{
	my ($file) = @_;
	open(my $fh, '<', $file) or return (0, ["cannot open $file: $!"]);
	my (%max, @problems);
	my $lines = 0;
	while (my $line = <$fh>)
	{
		chomp $line;
		my ($key, $v) = $line =~ /\A(.*) ([0-9]+)\z/ or next;
		$lines++;
		if (defined $max{$key} && $v < $max{$key}) { push @problems, "$key: _v $v served after $max{$key}"; }
		else { $max{$key} = $v; }
	}
	close $fh;
	return ($lines, \@problems);
}

1;
