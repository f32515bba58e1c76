# Replica acknowledgements (wtcache.redis_wait_replicas): a master with two
# replicas behind a Sentinel.  A batch counts as delivered only once a
# replica acknowledged it (WAIT): with the replicas stopped it stays queued
# ('retry'), wait() is false and no event announces it, and delivery
# resumes when they come back; asking for more replicas than there are
# stalls the same way; 'accept' delivers anyway and counts it; and a
# failover to a replica right after acknowledged batches (and one that was
# not) loses nothing: no resync is needed.  In a Redis Cluster, the
# replicas of every master are waited for.  A shutdown does not wait for
# a WAIT's timeout.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;
use RedisTopology;

my $first = start_redis(name => 'first');
my $second = start_redis(name => 'second', args => [ '--replicaof', '127.0.0.1', $first->port ]);
my $third = start_redis(name => 'third', args => [ '--replicaof', '127.0.0.1', $first->port ]);
my $sentinel = start_sentinel(master_port => $first->port);
my %by_port = map { $_->port => $_ } ($first, $second, $third);

my @cluster;
END
{
	for my $r ($first, $second, $third, @cluster)
	{
		kill 'CONT', $r->pid if defined $r && $r->running;
	}
}

# Polls until the block returns true, for at most the default timeout.
sub poll_until
{
	my ($check) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		return 1 if $check->();
		usleep(50_000);
	}
	return 0;
}

# A replica in sync with the master it follows, and seen by the Sentinel.
sub replica_ready
{
	my ($replica) = @_;
	return poll_until(sub {
		my ($info) = redis_try($replica->port, 'INFO', 'replication');
		my ($list) = redis_try($sentinel->port, 'SENTINEL', 'replicas', 'mymaster');
		my $seen = ref($list) eq 'ARRAY' && grep {
			my %h = @$_;
			$h{port} == $replica->port && $h{flags} eq 'slave'
		} @$list;
		return $seen && defined $info && $info =~ /master_link_status:up/;
	});
}

ok(replica_ready($second) && replica_ready($third), 'both replicas follow the master');

my $node = new_wtcache_node(
	'wait_replicas',
	redis_port => $first->port,
	extra_conf => "wtcache.redis_sentinels = '127.0.0.1:" . $sentinel->port . "'\n"
	  . "wtcache.redis_master_name = 'mymaster'\n"
	  . "wtcache.redis_wait_replicas = 1\n"
	  . "wtcache.redis_wait_timeout = 300\n"
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sub acks
{
	my $row = sql(q{SELECT wait_replicas, timeout_action, state, coalesce(acked_replicas, -1),
	                       waiting_since IS NOT NULL, waits, wait_timeouts, accepted
	                FROM wtcache.replica_acks()
	                WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
	my %a;
	@a{qw(want action state acked since waits timeouts accepted)} = split /\|/, $row;
	return \%a;
}

sub set_conf
{
	my ($name, $value, $check) = @_;
	sql("ALTER SYSTEM SET $name = '$value'");
	sql('SELECT pg_reload_conf()');
	# the worker shows the settings it took in (replicas.c)
	return poll_until($check);
}

my $event_seq_key = 'wtc:{postgres}:event_seq';
my $resyncs;
sub event_seq { return redis_cmd($_[0]->port, 'GET', $event_seq_key) // 0 }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
SELECT wtcache.watch('t');
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 2000) i;
});
ok(wait_drained($node, $db), 'the rows are delivered, acknowledged by a replica');
compare_table_ok($node, $db, 't', $first->port, 'the master holds every row');
my $a = acks();
is($a->{state}, 'acknowledged', 'replica_acks() says the batches were acknowledged');
cmp_ok($a->{acked}, '>=', 1, "a replica acknowledged the last batch ($a->{acked})");
cmp_ok($a->{waits}, '>', 0, "rounds of WAIT were sent ($a->{waits})");
is($a->{timeouts}, 0, 'none of them timed out');
is(sql(q{SELECT replica_ack_state || ' ' || redis_wait_replicas FROM wtcache.status WHERE table_name = 't'::regclass}),
	'acknowledged 1', 'wtcache.status shows it');

#### Replicas away: the batch stays queued ('retry')

my $log_at = -s $node->logfile;
my $seq_before = event_seq($first);
kill 'STOP', $second->pid, $third->pid;
sql(q{UPDATE t SET v = 'while the replicas are away' WHERE id <= 10});
ok(poll_until(sub { my $x = acks(); $x->{timeouts} > 0 && $x->{state} eq 'waiting for replicas' }),
	'WAIT timed out: replica_acks() says delivery waits for replicas');
$a = acks();
is($a->{acked}, 0, 'no replica acknowledged it');
is($a->{since}, 't', 'and says since when');
is(sql(q{SELECT wtcache.wait('200ms')}), 'f', 'wait() is false: the change is not delivered');
cmp_ok(sql(q{SELECT pending FROM wtcache.status WHERE table_name = 't'::regclass}), '>', 0,
	'the change stays pending in wtcache.queue');
is(sql(q{SELECT count(*) FROM t WHERE id <= 10 AND wtcache.get('t', id::text)->>'v' IS DISTINCT FROM v}),
	'0', 'reads of its keys return the committed rows');
is(event_seq($first), $seq_before, 'no event announced it');
my $timeouts = acks()->{timeouts};
ok(poll_until(sub { acks()->{timeouts} > $timeouts }), 'the worker keeps trying');
ok($node->wait_for_log(qr/only 0 of the 1 Redis replicas wtcache.redis_wait_replicas asks for acknowledged a batch within 300 ms/, $log_at),
	'the log says so');

kill 'CONT', $second->pid, $third->pid;
ok(wait_drained($node, $db), 'delivery resumes once the replicas are back');
is(acks()->{state}, 'acknowledged', 'replica_acks() says acknowledged again');
cmp_ok(event_seq($first), '>', $seq_before, 'and the events are published then');
ok($node->wait_for_log(qr/Redis replicas at .* acknowledge delivery again \(\d+ of 1 asked for\)/, $log_at),
	'the log says delivery is acknowledged again');
compare_table_ok($node, $db, 't', $first->port, 'the master matches the table');
compare_table_ok($node, $db, 't', $second->port, 'so does a replica');

#### A missing marker: each round still writes, and leaves it missing

# WAIT counts the replicas that have the connection's last write; a batch
# sent again may write nothing (its rows applied before), so each round
# writes the marker's companion :ack first.  It must do so when the marker
# is missing too (a touch of the marker wrote nothing then), and never
# recreate the marker, whose absence tells the worker to resync.  Two
# replicas asked for, one stopped: the third shows what each round wrote.
my $marker = 'wtc:{postgres}:gen';
ok(set_conf('wtcache.redis_wait_replicas', 2, sub { acks()->{want} == 2 }),
	'wtcache.redis_wait_replicas = 2');
$resyncs = sql(q{SELECT resyncs FROM wtcache.worker_status()
                 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
kill 'STOP', $second->pid;
$timeouts = acks()->{timeouts};
sql(q{UPDATE t SET v = 'the marker goes missing' WHERE id = 12});
ok(poll_until(sub { my $x = acks(); $x->{timeouts} > $timeouts && $x->{state} eq 'waiting for replicas' }),
	'with one replica stopped, delivery waits');
redis_cmd($first->port, 'DEL', $marker);
my $ack_at = redis_cmd($first->port, 'GET', "$marker:ack") // 0;
ok(poll_until(sub { (redis_cmd($third->port, 'GET', "$marker:ack") // 0) > $ack_at + 1 }),
	'rounds of WAIT after the marker went missing wrote to the replication stream');
is(redis_cmd($first->port, 'GET', $marker), undef, 'and did not recreate the marker');
is(acks()->{state}, 'waiting for replicas', 'delivery still waits');
kill 'CONT', $second->pid;
ok(wait_drained($node, $db), 'delivered once the replica is back');
ok(poll_until(sub {
		sql(q{SELECT resyncs FROM wtcache.worker_status()
		      WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}) > $resyncs
	}), 'and the missing marker resynced');
ok(wait_drained($node, $db), 'the resync is delivered');
compare_table_ok($node, $db, 't', $first->port, 'the master matches the table');
ok(set_conf('wtcache.redis_wait_replicas', 1, sub { acks()->{want} == 1 }),
	'wtcache.redis_wait_replicas = 1');

#### More replicas asked for than there are: the same wait

ok(set_conf('wtcache.redis_wait_replicas', 3, sub { acks()->{want} == 3 }),
	'wtcache.redis_wait_replicas = 3, with two replicas');
sql(q{UPDATE t SET v = 'three replicas asked for' WHERE id = 11});
ok(poll_until(sub { my $x = acks(); $x->{state} eq 'waiting for replicas' && $x->{acked} == 2 }),
	'delivery waits: WAIT counts the two replicas there are');
is(sql(q{SELECT wtcache.wait('200ms')}), 'f', 'wait() is false');
ok(set_conf('wtcache.redis_wait_replicas', 2, sub { acks()->{want} == 2 }),
	'wtcache.redis_wait_replicas = 2');
ok(wait_drained($node, $db), 'the change is delivered');
is(acks()->{acked}, 2, 'both replicas acknowledged it');

#### 'accept': delivered anyway, counted

ok(set_conf('wtcache.redis_wait_timeout_action', 'accept', sub { acks()->{action} eq 'accept' }),
	"wtcache.redis_wait_timeout_action = 'accept'");
$log_at = -s $node->logfile;
kill 'STOP', $second->pid, $third->pid;
sql(q{UPDATE t SET v = 'accepted without replicas' WHERE id <= 20});
ok(wait_drained($node, $db), 'wait() is true: the change is delivered without the replicas');
$a = acks();
is($a->{state}, 'accepting without replicas', 'replica_acks() says batches go without replicas');
cmp_ok($a->{accepted}, '>', 0, "and counts them ($a->{accepted})");
ok($node->wait_for_log(qr/WARNING: .*Redis replicas wtcache.redis_wait_replicas asks for acknowledged a batch/, $log_at),
	'a warning is logged');
like(sql(q{SELECT wtcache.metrics()}), qr/^wtcache_replica_wait_accepted_total\{database="postgres"\} [1-9]/m,
	'metrics() counts them');
kill 'CONT', $second->pid, $third->pid;
sql(q{UPDATE t SET v = 'replicas back' WHERE id = 21});
ok(wait_drained($node, $db), 'delivered');
ok(poll_until(sub { acks()->{state} eq 'acknowledged' }), 'acknowledged by the replicas again');
compare_table_ok($node, $db, 't', $first->port, 'the master matches the table');

ok(set_conf('wtcache.redis_wait_timeout_action', 'retry', sub { acks()->{action} eq 'retry' })
	  && set_conf('wtcache.redis_wait_replicas', 1, sub { acks()->{want} == 1 }),
	"back to 'retry', one replica");

#### A failover right after acknowledged batches loses nothing

ok(replica_ready($second) && replica_ready($third), 'the Sentinel sees both replicas');
sql(q{UPDATE t SET v = 'acknowledged before the failover' WHERE id BETWEEN 100 AND 199});
ok(wait_drained($node, $db), 'an update is acknowledged by a replica');
$resyncs = sql(q{SELECT resyncs FROM wtcache.worker_status()
                    WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
$log_at = -s $node->logfile;
# the replicas miss what comes now: stopped, and their links cut (what the
# master already sent is in their sockets and would still arrive)
kill 'STOP', $second->pid, $third->pid;
redis_cmd($first->port, 'CLIENT', 'KILL', 'TYPE', 'replica');
sql(q{UPDATE t SET v = 'never acknowledged' WHERE id BETWEEN 200 AND 299});
ok(poll_until(sub { acks()->{state} eq 'waiting for replicas' }), 'that update waits for the replicas');
like(redis_cmd($first->port, 'GET', redis_key_of($node, $db, 't', 200)), qr/never acknowledged/,
	'the master applied it');

$first->kill9;
kill 'CONT', $second->pid, $third->pid;
my $promoted;
ok(poll_until(sub {
		my $p = eval { sentinel_master_port($sentinel) } // 0;
		return 0 unless $by_port{$p} && $p != $first->port;
		my ($role) = redis_try($p, 'ROLE');
		$promoted = $by_port{$p} if ref($role) eq 'ARRAY' && $role->[0] eq 'master';
		return defined $promoted;
	}), 'the Sentinel promoted a replica');
like(redis_cmd($promoted->port, 'GET', redis_key_of($node, $db, 't', 100)), qr/acknowledged before the failover/,
	'it holds the acknowledged update');
ok(wait_drained($node, $db, '120s'), 'everything is delivered to the promoted replica');
compare_table_ok($node, $db, 't', $promoted->port, 'the promoted replica matches the table');
is(sql(q{SELECT resyncs FROM wtcache.worker_status()
         WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	$resyncs, 'without a resync');
unlike(substr(slurp_file($node->logfile), $log_at), qr/generation marker (behind|missing)/,
	'the generation marker never found Redis behind');

#### Redis Cluster: every master's replicas are waited for

@cluster = start_redis_cluster(masters => 3, replicas => 1);
my @masters = @cluster[0 .. 2];
my %cmp = cluster_compare_opts(@masters);
ok(poll_until(sub {
		!grep { my ($info) = redis_try($_->port, 'INFO', 'replication');
				!defined $info || $info !~ /master_link_status:up/ } @cluster[3 .. 5];
	}), 'each cluster master has a replica in sync');
sql("ALTER SYSTEM SET wtcache.redis_sentinels = ''");
sql("ALTER SYSTEM SET wtcache.redis_master_name = ''");
sql("ALTER SYSTEM SET wtcache.redis_cluster_nodes = '127.0.0.1:" . $masters[0]->port . "'");
sql('SELECT pg_reload_conf()');
ok(poll_until(sub {
		sql(q{SELECT redis_address FROM wtcache.worker_status()
		      WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}) =~ /^cluster/
	}), 'the worker moves to the cluster');
sql(q{UPDATE t SET v = 'in the cluster' WHERE id <= 300});
ok(wait_drained($node, $db, '120s'), 'the rows reach the cluster, acknowledged by replicas');
compare_table_ok($node, $db, 't', $masters[0]->port, 'the cluster matches the table', %cmp);
$a = acks();
is($a->{state}, 'acknowledged', 'replica_acks() says acknowledged');
cmp_ok($a->{acked}, '>=', 1, 'by a replica of every master');

# one master's replica away stops delivery, whichever master a change goes to
kill 'STOP', $cluster[3]->pid;
$timeouts = acks()->{timeouts};
sql(q{UPDATE t SET v = 'one replica away' WHERE id <= 300});
ok(poll_until(sub { my $x = acks(); $x->{timeouts} > $timeouts && $x->{state} eq 'waiting for replicas' }),
	'delivery waits for the replica of that master');
is(acks()->{acked}, 0, 'the fewest any master counted is 0');
is(sql(q{SELECT wtcache.wait('200ms')}), 'f', 'wait() is false');
kill 'CONT', $cluster[3]->pid;
ok(wait_drained($node, $db, '120s'), 'delivery resumes once it is back');
compare_table_ok($node, $db, 't', $masters[0]->port, 'the cluster matches the table', %cmp);

#### A shutdown does not wait for the WAIT's timeout

# Two replicas asked of masters that have one, with the longest timeout:
# every WAIT lasts the whole minute.  Both settings come in one reload, so
# the worker showing the one shows the other in force.
sql("ALTER SYSTEM SET wtcache.redis_wait_replicas = 2");
sql("ALTER SYSTEM SET wtcache.redis_wait_timeout = '60s'");
sql('SELECT pg_reload_conf()');
ok(poll_until(sub { acks()->{want} == 2 }), 'wtcache.redis_wait_replicas = 2 with a timeout of a minute');
$log_at = -s $node->logfile;
sql(q{UPDATE t SET v = 'waited for at the shutdown' WHERE id <= 300});
ok(poll_until(sub {
		grep {
			my $clients = redis_cmd($_->port, 'CLIENT', 'LIST') // '';
			$clients =~ /^(?=.*\bflags=\w*b)(?=.*\bcmd=wait\b)/m
		} @masters
	}), 'the worker waits in a WAIT');
# pg_ctl gives up after 60 s, before the minute of the WAIT plus a reply
# timeout: a worker that acted on SIGTERM only once the WAIT returned fails it
ok($node->stop('fast', fail_ok => 1), 'a fast shutdown ends the worker while it waits');
my $log = substr(slurp_file($node->logfile), $log_at);
like($log, qr/terminating background worker "wtcache worker" due to administrator command/,
	'the worker acted on SIGTERM');
unlike($log, qr/acknowledged a batch within 60000 ms/, 'before its WAIT timed out');

done_testing();
