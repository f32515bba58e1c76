# Redis's own distributed setups on loopback, for the TAP tests: a Redis
# Cluster made with redis-cli --cluster, and a master with a replica watched
# by a Sentinel.  Every process started here is stopped by its object, at
# the latest in the END block, also when a test dies.
package RedisTopology;

use strict;
use warnings;
use Carp;
use Exporter 'import';
use IPC::Run;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use WtcacheTest;

our @EXPORT = qw(
  start_redis_cluster
  cluster_wait_ok
  cluster_node_id
  cluster_compare_opts
  start_sentinel
  sentinel_master_port
  start_write_load
  set_delivery_paused
);

my @live_sentinels;

# start_redis_cluster(masters => 3, replicas => 0): that many redis-servers
# in cluster mode, joined by redis-cli --cluster create.  Returns the
# WtcacheTest::Redis objects, masters first.
#   tls => $certs            every node also listens with TLS (->tls_port),
#                            the cluster bus is TLS (tls-cluster) and the
#                            cluster is made over the TLS ports, so CLUSTER
#                            SLOTS and MOVED name TLS ports to TLS clients
#   tls_auth_clients => 'yes'   as start_redis's
sub start_redis_cluster
{
	my (%opts) = @_;
	my $masters = $opts{masters} // 3;
	my $replicas = $opts{replicas} // 0;
	my @nodes;
	for my $i (1 .. $masters * (1 + $replicas))
	{
		# The bus port defaults to the node's port + 10000, which lands in
		# the kernel's ephemeral range (32768 and up) where any outgoing
		# connection may hold it: reserve one like every other port.
		push @nodes,
		  start_redis(
			name => "cluster$i",
			($opts{tls} ? (tls => $opts{tls}, tls_auth_clients => $opts{tls_auth_clients}) : ()),
			args => [
				'--cluster-enabled' => 'yes',
				'--cluster-config-file' => 'nodes.conf',
				'--cluster-node-timeout' => '2000',
				'--cluster-port' => PostgreSQL::Test::Cluster::get_free_port(),
				($opts{tls} ? ('--tls-cluster' => 'yes', '--tls-replication' => 'yes') : ())
			]);
	}
	my $log = "$PostgreSQL::Test::Utils::log_path/redis_cluster_create.log";
	my @addrs = map { '127.0.0.1:' . ($opts{tls} ? $_->tls_port : $_->port) } @nodes;
	my $tls = $opts{tls} ? join(' ', redis_cli_tls_args($opts{tls})) : '';
	system("redis-cli $tls --cluster create @addrs --cluster-replicas $replicas "
		  . "--cluster-yes >>'$log' 2>&1") == 0
	  or croak "redis-cli --cluster create failed, see $log";
	cluster_wait_ok(@nodes);
	return @nodes;
}

# Wait until every node says cluster_state:ok (30 s at most).
sub cluster_wait_ok
{
	my (@nodes) = @_;
	my $deadline = time() + 30;
	for my $n (@nodes)
	{
		while (1)
		{
			my ($info) = redis_try($n->port, 'CLUSTER', 'INFO');
			last if defined $info && $info =~ /cluster_state:ok/;
			croak "cluster node " . $n->port . " is not ok after 30 s"
			  if time() > $deadline;
			usleep(100_000);
		}
	}
	return;
}

sub cluster_node_id
{
	my ($node) = @_;
	return redis_cmd($node->port, 'CLUSTER', 'MYID');
}

# Options for compare_table against a cluster: every key is asked of every
# master and the one that does not answer MOVED has it; SCAN on each.
# Independent of wtcache's own routing on purpose.
sub cluster_compare_opts
{
	my (@nodes) = @_;
	my @ports = map { $_->port } @nodes;
	my $fetch = sub {
		my ($cmds) = @_;
		my @keys = map { @{$_}[ 1 .. $#$_ ] } @$cmds;
		my %value;
		my %owned;
		for my $p (@ports)
		{
			my $replies = redis_pipeline($p, [ map { [ 'GET', $_ ] } @keys ]);
			for my $i (0 .. $#keys)
			{
				my $r = $replies->[$i];
				next if ref($r) && ref($r) eq 'WtcacheTest::RedisError';
				$owned{ $keys[$i] }++;
				$value{ $keys[$i] } = $r;
			}
		}
		for my $k (@keys)
		{
			die "key $k is served by " . ($owned{$k} // 0) . " masters\n"
			  unless ($owned{$k} // 0) == 1;
		}
		my @out;
		my $i = 0;
		for my $c (@$cmds)
		{
			my $n = @$c - 1;
			push @out, [ map { $value{$_} } @keys[ $i .. $i + $n - 1 ] ];
			$i += $n;
		}
		return \@out;
	};
	my $scan = sub {
		my ($pattern) = @_;
		my %all;
		for my $p (@ports)
		{
			$all{$_} = 1 for @{ redis_row_keys($p, $pattern) };
		}
		return [ sort keys %all ];
	};
	return (fetch => $fetch, scan => $scan);
}

# start_sentinel(master_port => P, name => 'mymaster'): a Sentinel on a
# free port that monitors 127.0.0.1:P with quorum 1 and declares it down
# after 1 s.  Returns an object with ->port and ->stop.
#   requirepass => 'pw'         clients must log in (AUTH pw); the helpers
#                               of WtcacheTest do not: send AUTH yourself
#   acl_user => [user, pw]      an ACL user allowed every command
#   master_auth => [user, pw]   what the Sentinel sends to the master it
#                               monitors (auth-user, if user is defined, and
#                               auth-pass)
#   helper_auth => [user, pw]   what the helpers of WtcacheTest send (AUTH)
#                               on their connections to it
#   tls => $certs               also listen with TLS (->tls_port), and reach
#                               the servers it monitors with TLS (their TLS
#                               ports: master_port must be one)
#   tls_auth_clients => 'yes'   require a client certificate (default no)
sub start_sentinel
{
	my (%opts) = @_;
	my $name = $opts{name} // 'mymaster';
	my $auth_conf = '';
	my $tls_port;
	if (my $c = $opts{tls})
	{
		$tls_port = PostgreSQL::Test::Cluster::get_free_port();
		$auth_conf .= "tls-port $tls_port\ntls-cert-file $c->{server_crt}\n"
		  . "tls-key-file $c->{server_key}\ntls-ca-cert-file $c->{ca}\n"
		  . 'tls-auth-clients ' . ($opts{tls_auth_clients} // 'no') . "\n"
		  . "tls-replication yes\n";
	}
	$auth_conf .= "requirepass $opts{requirepass}\n" if defined $opts{requirepass};
	$auth_conf .= "user $opts{acl_user}[0] on >$opts{acl_user}[1] +\@all\n"
	  if $opts{acl_user};
	if (my $ma = $opts{master_auth})
	{
		$auth_conf .= "sentinel auth-user $name $ma->[0]\n" if defined $ma->[0];
		$auth_conf .= "sentinel auth-pass $name $ma->[1]\n";
	}
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $dir = PostgreSQL::Test::Utils::tempdir('sentinel');
	my $log = "$PostgreSQL::Test::Utils::log_path/sentinel_$port.log";
	# Sentinel rewrites its configuration file: it must be its own
	open(my $fh, '>', "$dir/sentinel.conf") or croak "sentinel.conf: $!";
	print $fh <<"EOC";
port $port
bind 127.0.0.1
protected-mode no
daemonize no
dir $dir
logfile $log
sentinel monitor $name 127.0.0.1 $opts{master_port} 1
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 5000
sentinel parallel-syncs $name 1
$auth_conf
EOC
	close $fh;
	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log);
		open(STDERR, '>&', \*STDOUT);
		exec('redis-server', "$dir/sentinel.conf", '--sentinel')
		  or POSIX::_exit(127);
	}
	my $self = bless { port => $port, tls_port => $tls_port, pid => $pid, owner => $$ },
	  'RedisTopology::Sentinel';
	set_port_auth($port, $opts{helper_auth}) if $opts{helper_auth};
	push @live_sentinels, $self;
	my $deadline = time() + 30;
	# one that requires a password answers NOAUTH: it is up all the same
	until (defined((redis_try($port, 'PING'))[0])
		  || (defined $opts{requirepass} && ((redis_try($port, 'PING'))[1] // '') =~ /NOAUTH/))
	{
		croak "sentinel did not start, see $log" if time() > $deadline;
		usleep(50_000);
	}
	return $self;
}

# The port of the master the Sentinel names now.
sub sentinel_master_port
{
	my ($sentinel, $name) = @_;
	my $r = redis_cmd($sentinel->port, 'SENTINEL', 'get-master-addr-by-name',
		$name // 'mymaster');
	return ref($r) eq 'ARRAY' ? $r->[1] : undef;
}

# start_write_load($node, $db, $name, $sql, %opts): pgbench running the
# script $sql (seconds => 10, clients => 2) in the background.  Returns the
# IPC::Run harness and references to its stdout and stderr.
sub start_write_load
{
	my ($node, $db, $name, $sql, %opts) = @_;
	my $script = "$PostgreSQL::Test::Utils::tmp_check/${name}_load.sql";
	open(my $fh, '>', $script) or croak "$script: $!";
	print $fh $sql;
	close $fh;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'pgbench', '-n', '-c', $opts{clients} // 2, '-j', '1',
		  '-T', $opts{seconds} // 10, '-f', $script,
		  '-h', $node->host, '-p', $node->port, $db ],
		'>', \$out, '2>', \$err);
	return ($h, \$out, \$err);
}

# set_delivery_paused($node, $db, 1|0): wtcache.enabled off (and wait until
# the worker says it is paused) or back on.  True once done.
sub set_delivery_paused
{
	my ($node, $db, $paused) = @_;
	if (!$paused)
	{
		$node->safe_psql($db, q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
		return 1;
	}
	$node->safe_psql($db, q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
	for (1 .. 100)
	{
		return 1
		  if $node->safe_psql($db, q{SELECT worker_state FROM wtcache.status LIMIT 1}) eq 'paused';
		usleep(100_000);
	}
	return 0;
}

END
{
	my $exit = $?;
	$_->stop for @live_sentinels;
	$? = $exit;
}

package RedisTopology::Sentinel;

sub port { return $_[0]->{port} }
sub tls_port { return $_[0]->{tls_port} }

sub stop
{
	my ($self) = @_;
	return unless defined $self->{pid} && $self->{owner} == $$;
	kill 'KILL', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
	return;
}

1;
