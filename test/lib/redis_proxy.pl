#!/usr/bin/perl
# A TCP proxy for tests: listens on 127.0.0.1:LISTEN and relays every
# connection to 127.0.0.1:TARGET (a Redis), until told to misbehave.
#
#   perl redis_proxy.pl --listen PORT --target PORT --state FILE [--parent PID]
#
# Signals:
#   SIGUSR1  toggle a stall: while stalled nothing is read or written on any
#            connection, in either direction (connections are still accepted
#            and connected upstream, and the kernel keeps queueing what the
#            clients send), as in a network partition.  When the stall ends,
#            everything held is relayed, late: commands a client gave up on
#            still reach Redis, as they would over TCP.
#   SIGUSR2  cut: close every open connection at once (both sides), dropping
#            whatever was held; the peers see a reset or an end of stream.
#   SIGHUP   read FILE.control (FILE: the --state file), lines of
#            "name=value": delay_ms=N holds every chunk read from the target
#            for N ms before it is relayed to the client (0: none), as a
#            slow network or a slow Redis would; chunks keep their order.
#   SIGTERM / SIGINT  close everything and exit.
# The proxy also exits on its own when the process --parent names is gone,
# so that a test killed without running its END blocks leaves nothing behind.
#
# After every change it rewrites FILE (atomically) with one line of
# "name=value" fields: stalled (0/1), stalls (stalls begun), cuts (cuts
# done), cut_conns (connections closed by cuts), accepted, open, refused
# (clients closed because the target refused them), up / down (bytes relayed
# to and from the target), delay_ms (the delay in force).  The WtcacheTest::Proxy helper reads it.
#
# Core modules only (IO::Select, IO::Socket::INET).
use strict;
use warnings;

use Errno qw(EAGAIN EINTR EWOULDBLOCK EINPROGRESS);
use Getopt::Long;
use IO::Select;
use IO::Socket::INET;
use List::Util ();
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_NODELAY SHUT_WR);
use Time::HiRes qw(time);

my ($listen_port, $target_port, $state_file, $parent);
GetOptions(
	'listen=i' => \$listen_port,
	'target=i' => \$target_port,
	'state=s' => \$state_file,
	'parent=i' => \$parent)
  or die "usage: $0 --listen PORT --target PORT --state FILE [--parent PID]\n";
die "--listen, --target and --state are required\n"
  unless $listen_port && $target_port && defined $state_file;

$| = 1;
$SIG{PIPE} = 'IGNORE';

my $BUF_MAX = 4 << 20;    # stop reading a side whose peer is this far behind

my %st = (stalled => 0, stalls => 0, cuts => 0, cut_conns => 0, accepted => 0,
	open => 0, refused => 0, up => 0, down => 0, delay_ms => 0);
my ($toggles, $cut_requests, $reloads, $stop) = (0, 0, 0, 0);
$SIG{USR1} = sub { $toggles++ };
$SIG{USR2} = sub { $cut_requests++ };
$SIG{HUP} = sub { $reloads++ };
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };

sub logmsg
{
	my $t = time();
	printf "%s.%03d redis_proxy %d: %s\n", POSIX::strftime('%H:%M:%S', gmtime($t)),
	  ($t - int($t)) * 1000, $$, $_[0];
	return;
}

sub write_state
{
	my $tmp = "$state_file.tmp.$$";
	open(my $fh, '>', $tmp) or die "open $tmp: $!";
	print $fh join(' ', map { "$_=$st{$_}" } sort keys %st) . "\n";
	close($fh) or die "close $tmp: $!";
	rename($tmp, $state_file) or die "rename $tmp: $!";
	return;
}

my $listener = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => $listen_port,
	Proto => 'tcp',
	Listen => 128,
	ReuseAddr => 1)
  or die "redis_proxy: cannot listen on 127.0.0.1:$listen_port: $@\n";
$listener->blocking(0);

# One relayed connection: client side c, target side u, and what each
# direction holds (c2u: from the client, for the target; held: chunks from
# the target waiting out the delay, [release time, bytes], oldest first).
my @pairs;

sub read_control
{
	my $file = "$state_file.control";
	open(my $fh, '<', $file) or return;
	while (my $line = <$fh>)
	{
		chomp $line;
		$st{delay_ms} = $1 if $line =~ /^delay_ms=(\d+)$/;
	}
	close $fh;
	return;
}

# Chunks whose delay is over go to the client's buffer.
sub release_held
{
	my ($p, $now) = @_;
	while (@{ $p->{held} } && $p->{held}[0][0] <= $now)
	{
		my $chunk = shift @{ $p->{held} };
		$p->{u2c} .= $chunk->[1];
		$p->{held_bytes} -= length $chunk->[1];
	}
	return;
}

sub close_pair
{
	my ($p, $why) = @_;
	return if $p->{closed};
	$p->{closed} = 1;
	for my $s ($p->{c}, $p->{u})
	{
		next unless $s;
		close($s);
	}
	$st{open}--;
	logmsg("connection $p->{id} closed: $why") if $why;
	return;
}

sub accept_one
{
	my $c = $listener->accept or return;
	$st{accepted}++;
	my $id = $st{accepted};
	my $u = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $target_port,
		Proto => 'tcp',
		Timeout => 2);
	if (!$u)
	{
		# Target down: the client sees its connection closed at once.
		$st{refused}++;
		close($c);
		return;
	}
	for my $s ($c, $u)
	{
		$s->blocking(0);
		binmode($s);
		setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
	}
	push @pairs, { id => $id, c => $c, u => $u, c2u => '', u2c => '', c_eof => 0, u_eof => 0,
		held => [], held_bytes => 0 };
	$st{open}++;
	return;
}

# Read what one side has into the buffer for the other.  Returns false when
# the side reached its end (or failed).
sub pull
{
	my ($p, $from, $buf, $count) = @_;
	my $delayed = $from eq 'u' && ($st{delay_ms} > 0 || @{ $p->{held} });
	my $chunk = '';
	my $n = $delayed ? sysread($p->{$from}, $chunk, 65536)
	  : sysread($p->{$from}, $p->{$buf}, 65536, length $p->{$buf});
	if (!defined $n)
	{
		return 1 if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
		return 0;
	}
	return 0 if $n == 0;
	$st{$count} += $n;
	if ($delayed)
	{
		push @{ $p->{held} }, [ time() + $st{delay_ms} / 1000, $chunk ];
		$p->{held_bytes} += $n;
	}
	return 1;
}

sub push_out
{
	my ($p, $to, $buf) = @_;
	return 1 if $p->{$buf} eq '';
	my $n = syswrite($p->{$to}, $p->{$buf});
	if (!defined $n)
	{
		return 1 if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
		return 0;
	}
	substr($p->{$buf}, 0, $n, '');
	return 1;
}

write_state();
my $next_state = time() + 1;
logmsg("listening on 127.0.0.1:$listen_port, relaying to 127.0.0.1:$target_port");

while (!$stop)
{
	if ($parent && (getppid() != $parent || !kill(0, $parent)))
	{
		logmsg("parent $parent is gone, exiting");
		last;
	}
	my $changed = 0;
	if ($reloads > 0)
	{
		$reloads = 0;
		my $was = $st{delay_ms};
		read_control();
		logmsg("delay $st{delay_ms} ms (was $was ms)");
		$changed = 1;
	}
	while ($toggles > 0)
	{
		$toggles--;
		$st{stalled} = $st{stalled} ? 0 : 1;
		$st{stalls}++ if $st{stalled};
		logmsg(($st{stalled} ? 'stall begins' : 'stall ends') . ", $st{open} connections open");
		$changed = 1;
	}
	while ($cut_requests > 0)
	{
		$cut_requests--;
		my $n = 0;
		for my $p (@pairs)
		{
			next if $p->{closed};
			close_pair($p, '');
			$n++;
		}
		@pairs = ();
		$st{cuts}++;
		$st{cut_conns} += $n;
		logmsg("cut: closed $n connections");
		$changed = 1;
	}

	my $rsel = IO::Select->new($listener);
	my $wsel = IO::Select->new;
	my $wait = 0.2;
	if (!$st{stalled})
	{
		my $now = time();
		for my $p (@pairs)
		{
			release_held($p, $now);
			$wait = List::Util::max(0, List::Util::min($wait, $p->{held}[0][0] - $now))
			  if @{ $p->{held} };
			$rsel->add($p->{c}) if !$p->{c_eof} && length($p->{c2u}) < $BUF_MAX;
			$rsel->add($p->{u}) if !$p->{u_eof} && length($p->{u2c}) + $p->{held_bytes} < $BUF_MAX;
			$wsel->add($p->{u}) if $p->{c2u} ne '';
			$wsel->add($p->{c}) if $p->{u2c} ne '';
		}
	}
	my ($r, $w) = IO::Select->select($rsel, $wsel, undef, $wait);
	my %readable = map { ($_ => 1) } @{ $r // [] };
	my %writable = map { ($_ => 1) } @{ $w // [] };

	accept_one() if $readable{$listener};
	# A signal that came during select is handled before anything is
	# relayed (a stall begins at once).
	next if $toggles || $cut_requests || $reloads || $stop;

	if (!$st{stalled})
	{
		my $now = time();
		for my $p (@pairs)
		{
			next if $p->{closed};
			release_held($p, $now);
			if ($readable{ $p->{c} } && !pull($p, 'c', 'c2u', 'up')) { $p->{c_eof} = 1; }
			if ($readable{ $p->{u} } && !pull($p, 'u', 'u2c', 'down')) { $p->{u_eof} = 1; }
			if (($writable{ $p->{u} } || $p->{c2u} ne '') && !push_out($p, 'u', 'c2u'))
			{
				close_pair($p, 'write to the target failed');
				next;
			}
			if (($writable{ $p->{c} } || $p->{u2c} ne '') && !push_out($p, 'c', 'u2c'))
			{
				close_pair($p, '');    # the client went away
				next;
			}
			# One side ended: what it sent is relayed, then both are closed
			# (as Redis does when a client leaves, and a client when Redis
			# goes away).
			if ($p->{c_eof} && $p->{c2u} eq '') { close_pair($p, ''); next; }
			if ($p->{u_eof} && $p->{u2c} eq '' && !@{ $p->{held} })
			{
				close_pair($p, 'the target closed it');
				next;
			}
		}
		@pairs = grep { !$_->{closed} } @pairs;
	}
	if ($changed || $readable{$listener} || time() >= $next_state)
	{
		write_state();
		$next_state = time() + 1;
	}
}

for my $p (@pairs) { close_pair($p, ''); }
close($listener);
write_state();
logmsg('exits');
exit 0;
