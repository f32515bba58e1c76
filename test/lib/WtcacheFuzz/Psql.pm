# WtcacheFuzz::Psql: a psql session for the consistency fuzzer's writers
# and readers (test/t/014_fuzz.pl, WtcacheFuzz::Sessions) that survives
# errors and reports a lost connection.
#
# Like PostgreSQL::Test::BackgroundPsql, but quiet (no note() per query:
# thousands of statements would drown the test log), tolerant of errors
# (ON_ERROR_STOP off: the caller decides) and telling apart an error, a
# lost connection (psql exits when the server goes away, as in a crash
# restart) and a statement that hangs.
package WtcacheFuzz::Psql;

use strict;
use warnings;

use IPC::Run ();

sub new
{
	my ($class, %opts) = @_;
	return bless { %opts, h => undef, seq => 0, in => '', out => '', err => '' }, $class;
}

sub connected { return defined $_[0]->{h}; }

sub connect
{
	my ($self) = @_;
	$self->disconnect;
	my @cmd = ($self->{psql}, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-v', 'VERBOSITY=verbose',
		($self->{quiet} ? ('-q') : ()), '-d', $self->{connstr}, '-f', '-');
	$self->{in} = $self->{out} = $self->{err} = '';
	$self->{timer} = IPC::Run::timeout($self->{timeout}, exception => 'fuzz session timeout');
	my $h = eval {
		IPC::Run::start(\@cmd, '<', \$self->{in}, '>', \$self->{out}, '2>', \$self->{err}, $self->{timer});
	};
	return 0 unless $h;
	$self->{h} = $h;
	my $r = $self->run('');
	return $r->{lost} ? 0 : 1;
}

# run($text): send SQL (or a psql meta-command line) and wait for its end.
# Returns { out, err, error (ERROR in stderr), sqlstate, lost, timeout }.
sub run
{
	my ($self, $text) = @_;
	my $h = $self->{h};
	return { lost => 1, out => '', err => 'not connected' } unless $h;
	my $mark = '@@fuzz ' . ++$self->{seq} . '@@';
	my $re = qr/\Q$mark\E\n/;
	$self->{out} = '';
	$self->{err} = '';
	$self->{in} .= ($text eq '' ? '' : "$text\n") . "\\echo '$mark'\n\\warn '$mark'\n";
	$self->{timer}->start($self->{timeout});
	while (!($self->{out} =~ $re && $self->{err} =~ $re))
	{
		my $ok = eval { $h->pumpable && $h->pump; 1 };
		if (!$ok || !$h->pumpable)
		{
			my $timeout = (!$ok && $@ =~ /fuzz session timeout/) ? 1 : 0;
			my $r = { lost => 1, timeout => $timeout, out => $self->{out}, err => $self->{err} };
			$self->_reap;
			return $r;
		}
	}
	(my $out = $self->{out}) =~ s/$re//;
	(my $err = $self->{err}) =~ s/$re//;
	# A connection lost in the middle of a query does not always make psql
	# exit before it runs the next lines (the markers): it does at the next
	# query.  Its messages say so.
	if ($err =~ /server closed the connection unexpectedly|connection to server was lost|no connection to the server|terminating connection because|could not (?:receive|send) data (?:from|to) server/)
	{
		$self->_reap;
		return { lost => 1, timeout => 0, out => $out, err => $err };
	}
	# ERROR and worse from the server; anything psql itself reports
	# without a severity of NOTICE or less is an error too.
	my $error = ($err =~ /(?:^|: )(?:ERROR|FATAL|PANIC):/m
		  || $err =~ /^psql:<stdin>:\d+: (?!(?:NOTICE|WARNING|INFO|LOG|DEBUG)\b)/m) ? 1 : 0;
	my ($state) = $err =~ /(?:ERROR|FATAL|PANIC):\s+([0-9A-Z]{5}):/;
	return { out => $out, err => $err, error => $error, sqlstate => $state // '', lost => 0 };
}

sub _reap
{
	my ($self) = @_;
	my $h = $self->{h} or return;
	$self->{h} = undef;
	eval { $h->kill_kill(grace => 2); };
	return;
}

sub disconnect
{
	my ($self) = @_;
	my $h = $self->{h} or return;
	$self->{in} .= "\\q\n";
	$self->{timer}->start(10);
	if (!eval { $h->finish; 1 })
	{
		eval { $h->kill_kill(grace => 1); };
	}
	$self->{h} = undef;
	return;
}

1;
