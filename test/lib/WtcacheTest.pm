# WtcacheTest: helpers shared by wtcache's TAP tests (test/t/*.pl).
#
#  - start_redis(): a throwaway redis-server on a free loopback port, tracked
#    by PID and stopped at exit (END block), also when the test dies;
#  - redis_cmd() / redis_pipeline() / redis_scan_keys(): a small binary-safe
#    RESP2 client, enough to check what the worker wrote;
#  - new_wtcache_node(): a PostgreSQL::Test::Cluster with wtcache preloaded
#    and pointed at a Redis port, extension created in 'postgres';
#  - compare_table(): every row of a table against its Redis key, and no
#    extra row keys in Redis; compare_hash_table(): the same for a table
#    watched with format 'hash'; wait_drained(): wtcache.wait() returned true;
#  - start_redis_proxy(): a TCP proxy (test/lib/redis_proxy.pl) in front of
#    a Redis that can stall or cut every connection on demand, stopped at
#    exit (END block) like the Redis servers;
#  - make_tls_certs(): a CA and certificates made with openssl, for Redis
#    servers started with start_redis(tls => ...), which then listen on a
#    TLS port besides the plain one the helpers here use.

package WtcacheTest;

use strict;
use warnings;

use Carp;
use Errno qw(EINTR EAGAIN);
use Exporter 'import';
use File::Path qw(remove_tree);
use IO::Socket::INET;
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(usleep time);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  start_redis
  start_redis_proxy
  redis_cmd
  redis_try
  redis_pipeline
  redis_scan_keys
  redis_row_keys
  redis_row_version
  new_wtcache_node
  table_key_pattern
  compare_table
  compare_table_ok
  compare_hash_table
  compare_hash_table_ok
  redis_key_of
  row_json
  wait_drained
  poll_until
  worker_pid
  wait_for_worker
  glob_escape
  make_tls_certs
  redis_cli_tls_args
  tls_client_conf
  write_secret
  set_port_auth
);

# Key values and JSON travel as UTF-8 bytes both ways.
$ENV{PGCLIENTENCODING} = 'UTF8';

# Every Redis started by this process, by PID (weak enough: the objects
# hold no reference back to this hash).
my %live_redis;

# Credentials to send on connections to a port (see start_redis's auth).
my %port_auth;

# Every proxy started by this process, by PID.
my %live_proxy;

############################################################################
# Redis server
############################################################################

# start_redis(%opts): start a redis-server on a free loopback port.
#   appendonly => 1     persist with AOF (appendfsync always), so a restart
#                       or a SIGKILL keeps the data
#   port => N           use this port instead of a free one
#   args => [...]       extra redis-server arguments
#   name => 'redis'     used for the directory and log names
#   auth => [user, pw]  credentials the helpers here send (AUTH) on every
#                       connection to this port, e.g. for a server started
#                       with args => ['--user', 'u', 'on', '>pw', ...]
#   tls => $certs       also listen with TLS (make_tls_certs' certificates:
#                       the server certificate, the CA for clients') on a
#                       free port, ->tls_port; the plain port stays, for the
#                       helpers here
#   tls_auth_clients => 'yes'   require a client certificate (default no)
# Returns an object: ->port, ->tls_port, ->dir, ->logfile, ->pid, ->stop,
# ->kill9, ->restart(keep_data => 0|1), ->start.
sub start_redis
{
	my (%opts) = @_;
	my $name = $opts{name} // 'redis';
	my @args = @{ $opts{args} // [] };
	my $tls_port;
	if (my $certs = $opts{tls})
	{
		$tls_port = PostgreSQL::Test::Cluster::get_free_port();
		unshift @args,
		  '--tls-port' => $tls_port,
		  '--tls-cert-file' => $certs->{server_crt},
		  '--tls-key-file' => $certs->{server_key},
		  '--tls-ca-cert-file' => $certs->{ca},
		  '--tls-auth-clients' => $opts{tls_auth_clients} // 'no';
	}
	my $self = bless {
		name => $name,
		port => $opts{port} // PostgreSQL::Test::Cluster::get_free_port(),
		tls_port => $tls_port,
		dir => PostgreSQL::Test::Utils::tempdir($name),
		appendonly => $opts{appendonly} ? 1 : 0,
		args => \@args,
		pid => undef,
		owner => $$,
	}, 'WtcacheTest::Redis';
	$port_auth{ $self->{port} } = $opts{auth} if $opts{auth};
	$self->{logfile} = "$PostgreSQL::Test::Utils::log_path/"
	  . _test_basename() . "_${name}_$self->{port}.log";
	$self->start;
	return $self;
}

# start_redis_proxy(target_port => $p, %opts): start test/lib/redis_proxy.pl
# on a free loopback port, relaying to 127.0.0.1:$p.
#   name => 'proxy'     used for the log and state file names
#   auth                as start_redis's, for connections the helpers here
#                       make to the proxy's port
# Returns an object: ->port, ->pid, ->logfile, ->stats (a hash of the
# proxy's counters: stalled, stalls, cuts, cut_conns, accepted, open,
# refused, up, down, delay_ms), ->stall(1|0) (begin or end a stall, returns
# once the proxy says so), ->cut (close every connection; returns how many
# were open), ->delay($ms) (hold every reply from Redis $ms ms; 0: none),
# ->stop.
sub start_redis_proxy
{
	my (%opts) = @_;
	croak "start_redis_proxy: target_port is required" unless $opts{target_port};
	my $name = $opts{name} // 'proxy';
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $dir = PostgreSQL::Test::Utils::tempdir($name);
	my $self = bless {
		name => $name,
		port => $port,
		target => $opts{target_port},
		state => "$dir/state",
		logfile => "$PostgreSQL::Test::Utils::log_path/" . _test_basename() . "_${name}_$port.log",
		pid => undef,
		owner => $$,
	}, 'WtcacheTest::Proxy';
	$port_auth{$port} = $opts{auth} if $opts{auth};
	(my $script = __FILE__) =~ s{[^/]*\z}{redis_proxy.pl};
	$script = "./$script" unless $script =~ m{/};
	croak "start_redis_proxy: $script not found" unless -f $script;

	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $self->{logfile});
		open(STDERR, '>&', \*STDOUT);
		exec($^X, $script, '--listen', $port, '--target', $opts{target_port},
			'--state', $self->{state}, '--parent', $self->{owner})
		  or POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	$live_proxy{$pid} = $self;
	print "### started redis proxy (pid $pid) on port $port for port $opts{target_port}\n";
	my $deadline = time() + 30;
	until (-f $self->{state})
	{
		if (waitpid($pid, WNOHANG) == $pid)
		{
			delete $live_proxy{$pid};
			$self->{pid} = undef;
			my $log = -f $self->{logfile} ? PostgreSQL::Test::Utils::slurp_file($self->{logfile}) : '';
			croak "redis proxy exited at start:\n$log";
		}
		if (time() > $deadline)
		{
			$self->stop;
			croak "redis proxy on port $port did not start";
		}
		usleep(20_000);
	}
	return $self;
}

# set_port_auth($port, [user, pw]): the helpers here send AUTH user pw on
# every connection to $port (a Sentinel started with requirepass, say).
sub set_port_auth
{
	my ($port, $auth) = @_;
	$port_auth{$port} = $auth;
	return;
}

# make_tls_certs($dir): with the openssl command, into $dir, EC P-256 keys
# (mode 0600) and certificates valid for 2 days unless said otherwise:
#   ca              the CA that signs the others (ca.crt)
#   other_ca        a CA that signed none of them
#   server          for IP 127.0.0.1 and DNS localhost (also used by Redis
#                   servers as their client certificate, for replication,
#                   Sentinel and the cluster bus)
#   client          CN=wtcache, for wtcache's mutual TLS
#   expired         like server, but its validity ended before it began
#   wrong_name      like server, but for DNS other.example only
# Returns a hash of paths: ca, other_ca, and NAME_crt, NAME_key for each.
sub make_tls_certs
{
	my ($dir) = @_;
	my $log = "$PostgreSQL::Test::Utils::log_path/" . _test_basename() . '_openssl.log';
	my $run = sub {
		my @cmd = @_;
		system("@cmd >>'$log' 2>&1") == 0 or croak "openssl failed (see $log): @cmd";
	};
	my $newkey = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';
	my %c;
	for my $ca ('ca', 'other_ca')
	{
		$run->("openssl req -x509 $newkey -keyout $dir/$ca.key -out $dir/$ca.crt"
			  . " -days 2 -subj /CN=wtcache-test-$ca");
		$c{$ca} = "$dir/$ca.crt";
	}
	my %san = (
		server => 'IP:127.0.0.1,DNS:localhost',
		client => 'DNS:wtcache',
		expired => 'IP:127.0.0.1,DNS:localhost',
		wrong_name => 'DNS:other.example');
	for my $name (sort keys %san)
	{
		my $cn = $name eq 'wrong_name' ? 'other.example' : $name eq 'client' ? 'wtcache' : '127.0.0.1';
		open(my $fh, '>', "$dir/$name.ext") or croak "$dir/$name.ext: $!";
		print $fh "subjectAltName=$san{$name}\n";
		close $fh;
		$run->("openssl req $newkey -keyout $dir/$name.key -out $dir/$name.csr -subj /CN=$cn");
		# a negative validity ends before it starts: expired at once
		my $days = $name eq 'expired' ? -1 : 2;
		$run->("openssl x509 -req -in $dir/$name.csr -CA $dir/ca.crt -CAkey $dir/ca.key"
			  . " -CAcreateserial -out $dir/$name.crt -days $days -extfile $dir/$name.ext");
		chmod(0600, "$dir/$name.key") or croak "chmod $dir/$name.key: $!";
		$c{"${name}_crt"} = "$dir/$name.crt";
		$c{"${name}_key"} = "$dir/$name.key";
	}
	return \%c;
}

# redis_cli_tls_args($certs): what redis-cli needs to talk to a TLS port
# of those servers (with the server certificate as its client certificate).
sub redis_cli_tls_args
{
	my ($certs) = @_;
	return ('--tls', '--cacert', $certs->{ca}, '--cert', $certs->{server_crt},
		'--key', $certs->{server_key});
}

# tls_client_conf($certs): the postgresql.conf lines that give wtcache the
# CA and the client certificate of make_tls_certs(), for mutual TLS.
sub tls_client_conf
{
	my ($certs) = @_;
	return "wtcache.redis_tls_ca_file = '$certs->{ca}'\n"
	  . "wtcache.redis_tls_cert_file = '$certs->{client_crt}'\n"
	  . "wtcache.redis_tls_key_file = '$certs->{client_key}'\n";
}

# write_secret($file, $content, $mode): write a password file with that
# mode (0600 for one wtcache accepts); returns $file.
sub write_secret
{
	my ($file, $content, $mode) = @_;
	open(my $fh, '>', $file) or croak "$file: $!";
	print $fh $content;
	close $fh;
	chmod($mode, $file) or croak "chmod $file: $!";
	return $file;
}

# terminate_child($pid, $timeout_s): SIGTERM a child of this process and
# reap it; SIGKILL if it is still there after $timeout_s seconds.
sub terminate_child
{
	my ($pid, $timeout_s) = @_;
	kill 'TERM', $pid;
	my $deadline = time() + $timeout_s;
	while (1)
	{
		my $r = waitpid($pid, POSIX::WNOHANG());
		last if $r == $pid || $r == -1;    # -1: reaped elsewhere
		if (time() > $deadline)
		{
			kill 'KILL', $pid;
			waitpid($pid, 0);
			last;
		}
		usleep(20_000);
	}
	return;
}

sub _test_basename
{
	my $b = $0;
	$b =~ s{.*/}{};
	$b =~ s{\.[^.]+$}{};
	return $b;
}

# redis_cmd($port, @args): run one command on a new connection and return
# the decoded reply: status and bulk strings as byte strings, integers as
# numbers, nil as undef, arrays as array references.  Dies on an error reply
# (message starts with "Redis error: ") or when Redis cannot be reached.
sub redis_cmd
{
	my ($port, @args) = @_;
	my $conn = WtcacheTest::RedisConn->new($port);
	my $reply = $conn->command(@args);
	$conn->close;
	die "Redis error: $$reply\n" if _is_error($reply);
	return $reply;
}

# redis_try($port, @args): like redis_cmd but never dies; returns
# (reply, undef) or (undef, error message).
sub redis_try
{
	my ($port, @args) = @_;
	my $reply = eval { redis_cmd($port, @args) };
	return (undef, $@ || 'unknown error') if $@;
	return ($reply, undef);
}

# redis_pipeline($port, [[cmd, args...], ...]): send many commands on one
# connection (in chunks, so neither side's buffers grow without bound) and
# return an array reference of the replies in order.  Error replies are
# returned as WtcacheTest::RedisError objects (they stringify to the
# message), not thrown.
sub redis_pipeline
{
	my ($port, $cmds, %opts) = @_;
	my $chunk = $opts{chunk} // 1000;
	my $conn = WtcacheTest::RedisConn->new($port);
	my @replies;
	for (my $i = 0; $i < @$cmds; $i += $chunk)
	{
		my $end = $i + $chunk - 1;
		$end = $#$cmds if $end > $#$cmds;
		push @replies, @{ $conn->pipeline(@{$cmds}[ $i .. $end ]) };
	}
	$conn->close;
	return \@replies;
}

# redis_scan_keys($port, $pattern): every key matching the glob pattern,
# using SCAN (never KEYS), as an array reference (no duplicates).
sub redis_scan_keys
{
	my ($port, $pattern, %opts) = @_;
	my $count = $opts{count} // 5000;
	my $conn = WtcacheTest::RedisConn->new($port);
	my $cursor = '0';
	my %seen;
	do
	{
		my $r = $conn->command('SCAN', $cursor, 'MATCH', $pattern, 'COUNT',
			$count);
		die "Redis error: $$r\n" if _is_error($r);
		($cursor, my $keys) = @$r;
		$seen{$_} = 1 for @$keys;
	} while ($cursor ne '0');
	$conn->close;
	return [ sort keys %seen ];
}

# Escape glob metacharacters so a literal string can be used in MATCH.
sub glob_escape
{
	my ($s) = @_;
	$s =~ s/([\\*?\[\]])/\\$1/g;
	return $s;
}

# The row keys of a table (from redis_key's layout: they end with '}';
# tombstones "<rowkey>:t" and the ":gen" marker do not).
sub redis_row_keys
{
	my ($port, $pattern) = @_;
	return [ grep { /\}\z/ } @{ redis_scan_keys($port, $pattern) } ];
}

# redis_row_version($value): (version, rest) of a row value
# '{"_v":N,<rest of row_to_json without its leading {>', or () if the value
# does not have that shape.
sub redis_row_version
{
	my ($value) = @_;
	return () unless defined $value;
	return ($1, $2) if $value =~ /\A\{"_v":(0|[1-9][0-9]*),(.*)\z/s;
	return ();
}

sub _is_error
{
	my ($r) = @_;
	return ref($r) && ref($r) eq 'WtcacheTest::RedisError';
}

############################################################################
# PostgreSQL node
############################################################################

# new_wtcache_node($name, redis_port => $p, %opts): initdb (UTF8, C locale),
# preload wtcache pointed at redis://127.0.0.1:$p, start, and CREATE
# EXTENSION wtcache in 'postgres'.
#   redis_url => '...'      use this URL instead
#   extra_conf => '...'     appended to postgresql.conf last
#   no_extension => 1       do not CREATE EXTENSION
#   no_start => 1           do not start (implies no_extension)
sub new_wtcache_node
{
	my ($name, %opts) = @_;
	my $url = $opts{redis_url};
	if (!defined $url)
	{
		croak "new_wtcache_node: redis_port or redis_url is required"
		  unless defined $opts{redis_port};
		$url = "redis://127.0.0.1:$opts{redis_port}";
	}

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf(
		'postgresql.conf', qq{
# wtcache tests
shared_preload_libraries = 'wtcache'
wtcache.redis_url = '$url'
wtcache.connect_timeout = 1000
wtcache.command_timeout = 5000
# A reply later than wtcache.read_timeout (250 ms by default) makes a cached
# read fall back to the table without filling Redis: right for users, but
# on a loaded test machine it turns checks of hits and fills into checks of
# the scheduler.  Tests of the timeout itself set their own.
wtcache.read_timeout = 5000
wtcache.retry_interval = 100
wtcache.retry_max = 500
restart_after_crash = on
log_min_messages = info
log_connections = off
log_statement = ddl
max_connections = 40
});
	$node->append_conf('postgresql.conf', $opts{extra_conf})
	  if defined $opts{extra_conf};
	return $node if $opts{no_start};

	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION wtcache')
	  unless $opts{no_extension};
	return $node;
}

# worker_pid($node, $db): pid of the delivery worker of that database, or
# undef if there is none (yet).
sub worker_pid
{
	my ($node, $db) = @_;
	my $pid = $node->safe_psql($db,
		q{SELECT pid FROM wtcache.worker_status()
		  WHERE database_oid = (SELECT oid FROM pg_database
		                        WHERE datname = current_database())
		    AND pid IS NOT NULL});
	return ($pid =~ /^\d+$/ && $pid > 0) ? $pid : undef;
}

# wait_for_worker($node, $db, $timeout_s): the pid of the delivery worker of
# that database once one runs, or undef after $timeout_s seconds (30).
sub wait_for_worker
{
	my ($node, $db, $timeout_s) = @_;
	my $deadline = time() + ($timeout_s // 30);
	while (1)
	{
		my $pid = worker_pid($node, $db);
		return $pid if defined $pid;
		return undef if time() > $deadline;
		usleep(50_000);
	}
}

# poll_until($sub): $sub's first true value, asked every 20 ms, or undef
# once PG_TEST_TIMEOUT_DEFAULT passed.
sub poll_until
{
	my ($sub) = @_;
	my $deadline = Time::HiRes::time() + $PostgreSQL::Test::Utils::timeout_default;
	while (Time::HiRes::time() < $deadline)
	{
		my $v = $sub->();
		return $v if $v;
		Time::HiRes::usleep(20_000);
	}
	return undef;
}

# wait_drained($node, $db, $timeout): true if wtcache.wait($timeout) returns
# true.  On false, prints the status view as diagnostics.
sub wait_drained
{
	my ($node, $db, $timeout) = @_;
	$db //= 'postgres';
	$timeout //= '60s';
	my ($ret, $out, $err) = $node->psql($db,
		"SELECT wtcache.wait(" . _quote_literal($timeout) . ")");
	return 1 if $ret == 0 && $out eq 't';
	my ($r2, $status, $err2) = $node->psql($db,
		q{SELECT table_name, captured, pushed, pending, oldest_pending_age,
		         connected, worker_pid, worker_state, redis_address,
		         worker_last_error
		  FROM wtcache.status},
		extra_params => [ '-P', 'footer=off', '--no-align', '-F', ' | ' ]);
	diag("wtcache.wait('$timeout') returned '$out' (psql exit $ret) $err\n"
		  . "wtcache.status:\n$status $err2");
	return 0;
}

# table_key_pattern($node, $db, $table): the SCAN MATCH glob for the row
# keys of a table: "<key_prefix>{<db>:<schema>.<table>:" then "*}".  When
# the table has a row, the prefix is checked against wtcache.redis_key()
# of that row.
sub table_key_pattern
{
	my ($node, $db, $table, $ncols) = @_;
	my $lit = _quote_literal($table);
	my $prefix64 = $node->safe_psql($db,
		qq[SELECT translate(encode(convert_to(
		          current_setting('wtcache.key_prefix') || '{' || current_database()
		          || ':' || n.nspname || '.' || c.relname || ':', 'UTF8'), 'base64'), E'\\n', '')
		   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		   WHERE c.oid = ${lit}::regclass]);
	my $prefix = decode_base64($prefix64);

	my $cols = _key_columns($node, $db, $table);
	my $keyexpr = join(', ', map { "($_)::text" } @$cols);
	my $alias = 'wtc_cmp_row__';
	my $sample64 = $node->safe_psql($db,
		qq{SELECT translate(encode(convert_to(wtcache.redis_key(${lit}::regclass, $keyexpr), 'UTF8'), 'base64'), E'\\n', '')
		   FROM $table AS $alias LIMIT 1});
	if ($sample64 ne '')
	{
		my $sample = decode_base64($sample64);
		croak "redis_key() gives '$sample', which does not start with '$prefix'"
		  unless substr($sample, 0, length $prefix) eq $prefix
		  && $sample =~ /\}\z/;
	}
	return glob_escape($prefix) . '*}';
}

# redis_key_of($node, $db, $table, @keyvals): the Redis key (bytes) of the
# row with these key values, from wtcache.redis_key().  Key values are
# given as text, any characters.
sub redis_key_of
{
	my ($node, $db, $table, @vals) = @_;
	my $args = join(', ', map { _quote_literal($_) . '::text' } @vals);
	my $out = $node->safe_psql($db,
		    "SELECT translate(encode(convert_to(wtcache.redis_key("
		  . _quote_literal($table)
		  . "::regclass, $args), 'UTF8'), 'base64'), E'\\n', '')");
	return decode_base64($out);
}

# row_json($node, $db, $table, $where): row_to_json(row)::text (bytes,
# timestamptz in UTC) of the one row matching the SQL condition, or undef
# if there is none.
sub row_json
{
	my ($node, $db, $table, $where) = @_;
	my $alias = 'wtc_cmp_row__';
	my $out = $node->safe_psql($db,
		qq{SET timezone = 'UTC';
SELECT translate(encode(convert_to(row_to_json($alias)::text, 'UTF8'), 'base64'), E'\\n', '')
FROM $table AS $alias WHERE $where});
	return undef if $out eq '';
	croak "row_json: more than one row in $table where $where"
	  if $out =~ /\n/;
	return decode_base64($out);
}

# Key columns of a watched table from wtcache.watched, quoted for SQL.
sub _key_columns
{
	my ($node, $db, $table) = @_;
	my $lit = _quote_literal($table);
	my $out = $node->safe_psql($db,
		qq{SELECT quote_ident(c)
		   FROM wtcache.watched w,
		        unnest(w.key_columns) WITH ORDINALITY AS u(c, n)
		   WHERE w.rel = ${lit}::regclass
		   ORDER BY n});
	my @cols = split /\n/, $out;
	croak "table $table is not watched (no key columns in wtcache.watched)"
	  unless @cols;
	return \@cols;
}

# compare_table($node, $db, $table, $redis_port, %opts)
#   key_columns => ['a', 'b']   SQL expressions for the key columns (default:
#                               wtcache.watched.key_columns of the table)
#   max_diffs => 10             how many differences to describe
#   columns => ['id', 'name']   the watch's projection: the value holds these
#                               columns only (in table order, as listed)
#   key_sql => "..."            the row's Redis key as an SQL expression over
#                               the row (alias wtc_cmp_row__), for a table
#                               with a key template, instead of
#                               wtcache.redis_key(); give pattern and scan
# Every row must be in Redis under wtcache.redis_key(table, key...) with the
# value '{"_v":N,' || substr(row_to_json(row)::text, 2) (timestamptz in UTC),
# and the number of row keys of the table in Redis must equal the row count.
# Returns (ok, diagnostics) in list context, ok in scalar context.
sub compare_table
{
	my ($node, $db, $table, $port, %opts) = @_;
	my $max_diffs = $opts{max_diffs} // 10;
	my $cols = $opts{key_columns} // _key_columns($node, $db, $table);
	my $lit = _quote_literal($table);

	# Both fields travel base64-encoded (newlines removed), so key values
	# and JSON may contain any character.
	my $keyexpr = join(', ', map { "($_)::text" } @$cols);
	my $alias = 'wtc_cmp_row__';
	my $keysql = $opts{key_sql} // "wtcache.redis_key(${lit}::regclass, $keyexpr)";
	my $rowexpr = $opts{columns}
	  ? "(SELECT row_to_json(p) FROM (SELECT "
	  . join(', ', map { "$alias.$_" } @{ $opts{columns} }) . ") p)"
	  : "row_to_json($alias)";
	my $sql = qq{SET timezone = 'UTC';
COPY (SELECT translate(encode(convert_to($keysql, 'UTF8'), 'base64'), E'\\n', ''),
             translate(encode(convert_to(${rowexpr}::text, 'UTF8'), 'base64'), E'\\n', '')
      FROM $table AS $alias) TO STDOUT;
};
	my ($ret, $out, $err) = $node->psql($db, $sql);
	return _cmp_result(0, "could not read table $table: $err")
	  if $ret != 0;

	my %want;    # redis key (bytes) => value wanted without the _v field
	my @order;
	my @diffs;
	my $rows = 0;
	for my $line (split /\n/, $out)
	{
		next if $line eq '';
		my ($k64, $j64) = split /\t/, $line, -1;
		my $key = decode_base64($k64);
		my $json = decode_base64($j64);
		$rows++;
		if (exists $want{$key})
		{
			push @diffs, "two rows map to the same Redis key "
			  . _show($key);
			next;
		}
		$want{$key} = $json;
		push @order, $key;
	}

	# Values: MGET in chunks, pipelined.
	my $mget = 500;
	my @cmds;
	for (my $i = 0; $i < @order; $i += $mget)
	{
		my $end = $i + $mget - 1;
		$end = $#order if $end > $#order;
		push @cmds, [ 'MGET', @order[ $i .. $end ] ];
	}
	# a Redis Cluster passes its own fetch (opts fetch: MGET commands =>
	# replies in order; opts scan: pattern => keys)
	my $replies = eval {
		$opts{fetch}
		  ? $opts{fetch}->(\@cmds)
		  : redis_pipeline($port, \@cmds, chunk => 50);
	};
	return _cmp_result(0, "could not read Redis on port $port: $@")
	  unless defined $replies;

	my ($missing, $wrong) = (0, 0);
	my $i = 0;
	for my $r (@$replies)
	{
		return _cmp_result(0, "MGET failed: $$r") if _is_error($r);
		for my $value (@$r)
		{
			my $key = $order[ $i++ ];
			my $expected = $want{$key};
			if (!defined $value)
			{
				$missing++;
				push @diffs, "missing in Redis: " . _show($key)
				  . " (row " . _show($expected) . ")";
				next;
			}
			my ($v, $rest) = redis_row_version($value);
			if (!defined $v)
			{
				$wrong++;
				push @diffs, "value without leading \"_v\":N, for "
				  . _show($key) . ": " . _show($value);
			}
			elsif ('{' . $rest ne $expected)
			{
				$wrong++;
				push @diffs, "different value for " . _show($key)
				  . ":\n      redis: " . _show($value)
				  . "\n      table: " . _show($expected);
			}
		}
	}

	# Row keys of this table in Redis: no more than the rows.
	my $pattern = $opts{pattern}
	  // eval { table_key_pattern($node, $db, $table) };
	return _cmp_result(0, "could not derive key pattern: $@")
	  unless defined $pattern;
	my $keys = eval {
		$opts{scan} ? $opts{scan}->($pattern) : redis_row_keys($port, $pattern);
	};
	return _cmp_result(0, "SCAN failed on port $port: $@")
	  unless defined $keys;
	my @extra = grep { !exists $want{$_} } @$keys;
	push @diffs, "extra key in Redis: " . _show($_) for @extra;

	my $nkeys = scalar @$keys;
	my $ok = (!@diffs && $nkeys == $rows) ? 1 : 0;
	my $summary = "$table: $rows rows, $nkeys Redis row keys ($pattern), "
	  . "$missing missing, $wrong wrong, " . scalar(@extra) . " extra";
	my $diag = $summary;
	if (@diffs)
	{
		my $n = @diffs > $max_diffs ? $max_diffs : scalar @diffs;
		$diag .= "\n  first $n of " . scalar(@diffs) . " differences:\n  "
		  . join("\n  ", @diffs[ 0 .. $n - 1 ]);
	}
	return _cmp_result($ok, $diag);
}

sub _cmp_result
{
	my ($ok, $diag) = @_;
	return wantarray ? ($ok, $diag) : $ok;
}

# compare_table_ok(..., $test_name): compare_table as one Test::More test.
sub compare_table_ok
{
	my ($node, $db, $table, $port, $name, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $diag) = compare_table($node, $db, $table, $port, %opts);
	$name //= "Redis matches table $table";
	ok($ok, $name) or diag($diag);
	note($diag) if $ok;
	return $ok;
}

# compare_hash_table($node, $db, $table, $redis_port, %opts): as
# compare_table, for a table watched with format 'hash'.  Every row must be
# a Redis hash under wtcache.redis_key(table, key...) whose fields are,
# besides "_v" (a version), exactly its columns that are not NULL, each
# holding the column's text output under the canonical settings (rendered
# here by format('%s', column), which calls the output function: not by
# wtcache; num_nulls() tells a NULL from a composite of NULLs), and the
# number of row keys of the table must equal the rows.
#   columns => ['id', 'name']   the projection (default: every column)
#   ports => [p1, p2...]        a Redis Cluster's masters: each key is asked
#                               of every one, the one not answering MOVED
#                               has it
#   max_diffs => 10
# Returns (ok, diagnostics) in list context, ok in scalar context.
sub compare_hash_table
{
	my ($node, $db, $table, $port, %opts) = @_;
	my $max_diffs = $opts{max_diffs} // 10;
	my $keycols = _key_columns($node, $db, $table);
	my $lit = _quote_literal($table);
	my $cols = $opts{columns};
	if (!$cols)
	{
		$cols = [ split /\n/, $node->safe_psql($db,
				qq{SELECT quote_ident(attname) FROM pg_attribute
				   WHERE attrelid = ${lit}::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum}) ];
	}
	my $alias = 'wtc_cmp_row__';
	my $b64 = sub { "translate(encode(convert_to($_[0], 'UTF8'), 'base64'), E'\\n', '')" };
	my $keyexpr = join(', ', map { "($_)::text" } @$keycols);
	# field name, then value (or \N), for every column
	my $fields = join(",\n             ",
		map { $b64->(_quote_literal($_ =~ s/^"(.*)"$/$1/r =~ s/""/"/gr)) . ", " . $b64->("CASE WHEN num_nulls($alias.$_) = 0 THEN format('%s', $alias.$_) END") }
		  @$cols);
	my $sql = qq{SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
SET extra_float_digits = 1; SET bytea_output = 'hex';
COPY (SELECT @{[ $b64->("wtcache.redis_key(${lit}::regclass, $keyexpr)") ]},
             $fields
      FROM $table AS $alias) TO STDOUT;
};
	my ($ret, $out, $err) = $node->psql($db, $sql);
	return _cmp_result(0, "could not read table $table: $err") if $ret != 0;

	my (%want, @order, @diffs);
	my $rows = 0;
	for my $line (split /\n/, $out)
	{
		next if $line eq '';
		my ($k64, @f) = split /\t/, $line, -1;
		my $key = decode_base64($k64);
		my %h;
		while (my ($n64, $v64) = splice(@f, 0, 2))
		{
			$h{ decode_base64($n64) } = decode_base64($v64) unless $v64 eq '\N';
		}
		$rows++;
		push @diffs, "two rows map to the same Redis key " . _show($key) if exists $want{$key};
		$want{$key} = \%h;
		push @order, $key;
	}

	my @ports = $opts{ports} ? @{ $opts{ports} } : ($port);
	my %got;
	for my $p (@ports)
	{
		my $replies = eval { redis_pipeline($p, [ map { [ 'HGETALL', $_ ] } @order ], chunk => 500) };
		return _cmp_result(0, "could not read Redis on port $p: $@") unless defined $replies;
		for my $i (0 .. $#order)
		{
			my $r = $replies->[$i];
			next if @ports > 1 && _is_error($r) && "$$r" =~ /^(MOVED|ASK) /;
			$got{ $order[$i] } = $r;
		}
	}
	my ($missing, $wrong) = (0, 0);
	for my $key (@order)
	{
		my $r = $got{$key};
		my $want = $want{$key};
		if (_is_error($r))
		{
			$wrong++;
			push @diffs, "not a hash: " . _show($key) . ": $$r";
			next;
		}
		if (!@$r)
		{
			$missing++;
			push @diffs, "missing in Redis: " . _show($key);
			next;
		}
		my %h = @$r;
		my $v = delete $h{_v};
		my $show = sub { my %x = %{ $_[0] }; join(', ', map { "$_=" . _show($x{$_}) } sort keys %x) };
		if (!defined $v || $v !~ /\A[1-9][0-9]*\z/)
		{
			$wrong++;
			push @diffs, "no version \"_v\" in " . _show($key) . ": " . $show->(\%h);
		}
		elsif (join("\0", map { "$_\0$h{$_}" } sort keys %h) ne join("\0", map { "$_\0$want->{$_}" } sort keys %$want))
		{
			$wrong++;
			push @diffs, "different fields for " . _show($key) . ":\n      redis: " . $show->(\%h)
			  . "\n      table: " . $show->($want);
		}
	}

	my $pattern = eval { table_key_pattern($node, $db, $table) };
	return _cmp_result(0, "could not derive key pattern: $@") unless defined $pattern;
	my %keys;
	$keys{$_} = 1 for map { @{ redis_row_keys($_, $pattern) } } @ports;
	my @extra = grep { !exists $want{$_} } sort keys %keys;
	push @diffs, "extra key in Redis: " . _show($_) for @extra;
	my $nkeys = scalar keys %keys;
	my $ok = (!@diffs && $nkeys == $rows) ? 1 : 0;
	my $diag = "$table (hash): $rows rows, $nkeys Redis row keys ($pattern), "
	  . "$missing missing, $wrong wrong, " . scalar(@extra) . " extra";
	if (@diffs)
	{
		my $n = @diffs > $max_diffs ? $max_diffs : scalar @diffs;
		$diag .= "\n  first $n of " . scalar(@diffs) . " differences:\n  "
		  . join("\n  ", @diffs[ 0 .. $n - 1 ]);
	}
	return _cmp_result($ok, $diag);
}

# compare_hash_table_ok(..., $test_name, %opts): as one Test::More test.
sub compare_hash_table_ok
{
	my ($node, $db, $table, $port, $name, %opts) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ok, $diag) = compare_hash_table($node, $db, $table, $port, %opts);
	ok($ok, $name // "Redis matches table $table (hash)") or diag($diag);
	note($diag) if $ok;
	return $ok;
}

# A printable rendering of a byte string, shortened.
sub _show
{
	my ($s) = @_;
	return '(undef)' unless defined $s;
	my $max = 200;
	my $t = length($s) > $max ? substr($s, 0, $max) . '...' : $s;
	$t =~ s/([\x00-\x1f\x7f\\])/sprintf('\\x%02x', ord($1))/ge;
	return "'$t'";
}

sub _quote_literal
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

# Stop every Redis this process started, whatever happened to the test.
END
{
	my $exit = $?;
	for my $pid (keys %live_proxy)
	{
		my $p = $live_proxy{$pid};
		next unless defined $p;
		$p->stop if $p->{owner} == $$;
	}
	for my $pid (keys %live_redis)
	{
		my $r = $live_redis{$pid};
		next unless defined $r;
		$r->stop if $r->{owner} == $$;
	}
	$? = $exit;
}

############################################################################
# WtcacheTest::Redis: one redis-server child process
############################################################################

package WtcacheTest::Redis;

use strict;
use warnings;
use Carp;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep time);
use Test::More;

sub port { return $_[0]->{port} }
sub tls_port { return $_[0]->{tls_port} }
sub dir { return $_[0]->{dir} }
sub pid { return $_[0]->{pid} }
sub logfile { return $_[0]->{logfile} }
sub running { return defined $_[0]->{pid} }

sub start
{
	my ($self) = @_;
	croak "redis on port $self->{port} already running"
	  if defined $self->{pid};
	my @cmd = (
		'redis-server',
		'--port' => $self->{port},
		'--bind' => '127.0.0.1',
		'--save' => '',
		'--appendonly' => ($self->{appendonly} ? 'yes' : 'no'),
		'--appendfsync' => 'always',
		'--dir' => $self->{dir},
		'--daemonize' => 'no',
		'--logfile' => $self->{logfile},
		'--protected-mode' => 'no',
		@{ $self->{args} });

	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $self->{logfile});
		open(STDERR, '>&', \*STDOUT);
		exec(@cmd) or POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	$live_redis{$pid} = $self;
	print "### started redis (pid $pid) on port $self->{port}\n";

	# Wait until it answers PING.
	my $deadline = time() + 30;
	while (1)
	{
		my ($r, $e) = WtcacheTest::redis_try($self->{port}, 'PING');
		last if defined $r && $r eq 'PONG';
		if (waitpid($pid, WNOHANG) == $pid)
		{
			my $st = $?;
			delete $live_redis{$pid};
			$self->{pid} = undef;
			my $log = -f $self->{logfile}
			  ? PostgreSQL::Test::Utils::slurp_file($self->{logfile})
			  : '';
			croak "redis-server exited (status $st) at start:\n$log";
		}
		if (time() > $deadline)
		{
			$self->kill9;
			croak "redis-server on port $self->{port} did not answer PING";
		}
		usleep(20_000);
	}
	return $self;
}

# SIGTERM, then wait for exit (SIGKILL after 30 s).
sub stop
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return unless defined $pid;
	return if $self->{owner} != $$;
	WtcacheTest::terminate_child($pid, 30);
	delete $live_redis{$pid};
	$self->{pid} = undef;
	print "### stopped redis (pid $pid) on port $self->{port}\n";
	return;
}

sub kill9
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return unless defined $pid;
	kill 'KILL', $pid;
	waitpid($pid, 0);
	delete $live_redis{$pid};
	$self->{pid} = undef;
	print "### killed redis (pid $pid) on port $self->{port}\n";
	return;
}

# restart(keep_data => 0|1): stop (if running) and start on the same port.
# keep_data => 0 (default) starts empty; keep_data => 1 keeps the data: with
# appendonly the AOF is replayed, without it a SAVE writes dump.rdb first.
sub restart
{
	my ($self, %opts) = @_;
	my $keep = $opts{keep_data} ? 1 : 0;
	if ($keep && !$self->{appendonly} && defined $self->{pid})
	{
		WtcacheTest::redis_cmd($self->{port}, 'SAVE');
	}
	$self->stop;
	$self->wipe unless $keep;
	$self->start;
	return $self;
}

# Remove the data files (Redis must be stopped).
sub wipe
{
	my ($self) = @_;
	croak "wipe: redis is running" if defined $self->{pid};
	opendir(my $dh, $self->{dir}) or croak "opendir $self->{dir}: $!";
	for my $f (readdir $dh)
	{
		next if $f eq '.' || $f eq '..';
		File::Path::remove_tree("$self->{dir}/$f");
	}
	closedir $dh;
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $@, $!);
	$self->stop if defined $self->{pid} && $self->{owner} == $$;
	return;
}

############################################################################
# WtcacheTest::Proxy: one redis_proxy.pl child process
############################################################################

package WtcacheTest::Proxy;

use strict;
use warnings;
use Carp;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep time);

sub port { return $_[0]->{port} }
sub pid { return $_[0]->{pid} }
sub logfile { return $_[0]->{logfile} }

# The proxy's counters, from its state file.
sub stats
{
	my ($self) = @_;
	open(my $fh, '<', $self->{state}) or return {};
	my $line = <$fh> // '';
	close $fh;
	chomp $line;
	return { map { split /=/, $_, 2 } split / /, $line };
}

# Signal the proxy and wait until its state says $done->(stats) is true.
sub _tell
{
	my ($self, $sig, $done, $what) = @_;
	croak "redis proxy is not running" unless defined $self->{pid};
	kill $sig, $self->{pid} or croak "could not signal the redis proxy (pid $self->{pid}): $!";
	my $deadline = time() + 10;
	while (1)
	{
		my $s = $self->stats;
		return $s if $done->($s);
		croak "redis proxy (pid $self->{pid}) did not $what within 10 s" if time() > $deadline;
		usleep(10_000);
	}
}

# stall(1): stop relaying anything until stall(0).  Returns the number of
# connections open when the stall began (or ended).
sub stall
{
	my ($self, $on) = @_;
	$on = $on ? 1 : 0;
	my $s = $self->stats;
	return $s->{open} if ($s->{stalled} // 0) == $on;
	$s = $self->_tell('USR1', sub { ($_[0]{stalled} // -1) == $on }, $on ? 'stall' : 'end its stall');
	return $s->{open};
}

# delay($ms): hold what Redis sends, on every connection, $ms ms before
# relaying it (0: relay at once again).  Returns once the proxy says the
# delay is in force; replies already held keep the delay they got.
sub delay
{
	my ($self, $ms) = @_;
	$ms = int($ms);
	croak "delay: $ms is not a number of milliseconds" if $ms < 0;
	my $control = "$self->{state}.control";
	my $tmp = "$control.tmp.$$";
	open(my $fh, '>', $tmp) or croak "open $tmp: $!";
	print $fh "delay_ms=$ms\n";
	close($fh) or croak "close $tmp: $!";
	rename($tmp, $control) or croak "rename $tmp: $!";
	$self->_tell('HUP', sub { ($_[0]{delay_ms} // -1) == $ms }, "delay its replies by $ms ms");
	return;
}

# cut: close every open connection.  Returns how many it closed.
sub cut
{
	my ($self) = @_;
	my $before = $self->stats;
	my $cuts = $before->{cuts} // 0;
	my $s = $self->_tell('USR2', sub { ($_[0]{cuts} // 0) > $cuts }, 'cut its connections');
	return $s->{cut_conns} - ($before->{cut_conns} // 0);
}

# SIGTERM, then wait for exit (SIGKILL after 10 s).
sub stop
{
	my ($self) = @_;
	my $pid = $self->{pid};
	return unless defined $pid;
	return if $self->{owner} != $$;
	WtcacheTest::terminate_child($pid, 10);
	delete $live_proxy{$pid};
	$self->{pid} = undef;
	print "### stopped redis proxy (pid $pid) on port $self->{port}\n";
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $@, $!);
	$self->stop if defined $self->{pid} && $self->{owner} == $$;
	return;
}

############################################################################
# WtcacheTest::RedisConn: RESP2 over one TCP connection
############################################################################

package WtcacheTest::RedisConn;

use strict;
use warnings;
use Carp;
use Errno qw(EINTR);
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);

sub new
{
	my ($class, $port, %opts) = @_;
	my $timeout = $opts{timeout} // 30;
	my $sock = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $port,
		Proto => 'tcp',
		Timeout => 5)
	  or die "could not connect to Redis on 127.0.0.1:$port: $@\n";
	binmode($sock);
	setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
	# A reply that never comes must not hang the test forever.
	my $tv = pack('l!l!', $timeout, 0);
	setsockopt($sock, SOL_SOCKET, SO_RCVTIMEO, $tv);
	setsockopt($sock, SOL_SOCKET, SO_SNDTIMEO, $tv);
	my $self = bless { sock => $sock, buf => '', port => $port }, $class;
	if (my $auth = $port_auth{$port})
	{
		my $r = $self->command('AUTH', @$auth);
		die "Redis AUTH on port $port failed: $$r\n"
		  if ref($r) && ref($r) eq 'WtcacheTest::RedisError';
	}
	return $self;
}

sub close
{
	my ($self) = @_;
	close($self->{sock}) if $self->{sock};
	$self->{sock} = undef;
	return;
}

sub _encode
{
	my (@args) = @_;
	my $out = '*' . scalar(@args) . "\r\n";
	for my $a (@args)
	{
		my $b = defined $a ? "$a" : '';
		utf8::encode($b) if utf8::is_utf8($b);
		$out .= '$' . length($b) . "\r\n" . $b . "\r\n";
	}
	return $out;
}

sub _write
{
	my ($self, $data) = @_;
	my $off = 0;
	while ($off < length $data)
	{
		my $n = syswrite($self->{sock}, $data, length($data) - $off, $off);
		if (!defined $n)
		{
			next if $! == EINTR;
			die "write to Redis on port $self->{port} failed: $!\n";
		}
		$off += $n;
	}
	return;
}

sub _fill
{
	my ($self) = @_;
	while (1)
	{
		my $n = sysread($self->{sock}, $self->{buf}, 1 << 20,
			length $self->{buf});
		if (!defined $n)
		{
			next if $! == EINTR;
			die "read from Redis on port $self->{port} failed: $!\n";
		}
		die "Redis on port $self->{port} closed the connection\n"
		  if $n == 0;
		return;
	}
}

sub _line
{
	my ($self) = @_;
	my $i;
	$self->_fill while ($i = index($self->{buf}, "\r\n")) < 0;
	my $line = substr($self->{buf}, 0, $i);
	substr($self->{buf}, 0, $i + 2, '');
	return $line;
}

sub _bytes
{
	my ($self, $n) = @_;
	$self->_fill while length($self->{buf}) < $n + 2;
	my $s = substr($self->{buf}, 0, $n);
	substr($self->{buf}, 0, $n + 2, '');
	return $s;
}

# One reply; arrays are read iteratively-recursively (depth is small).
sub read_reply
{
	my ($self) = @_;
	my $line = $self->_line;
	my $type = substr($line, 0, 1);
	my $rest = substr($line, 1);
	if ($type eq '+') { return $rest; }
	if ($type eq '-') { return bless \$rest, 'WtcacheTest::RedisError'; }
	if ($type eq ':') { return 0 + $rest; }
	if ($type eq '$')
	{
		return undef if $rest < 0;
		return $self->_bytes($rest);
	}
	if ($type eq '*')
	{
		return undef if $rest < 0;
		my @a;
		push @a, $self->read_reply for 1 .. $rest;
		return \@a;
	}
	die "unexpected Redis reply line: '$line'\n";
}

sub command
{
	my ($self, @args) = @_;
	$self->_write(_encode(@args));
	return $self->read_reply;
}

sub pipeline
{
	my ($self, @cmds) = @_;
	$self->_write(join('', map { _encode(@$_) } @cmds));
	my @r;
	push @r, $self->read_reply for @cmds;
	return \@r;
}

package WtcacheTest::RedisError;

use overload '""' => sub { ${ $_[0] } }, fallback => 1;

1;
