# With synchronous_commit off a commit is visible before its WAL is
# flushed, and a crash can take it back.  The worker sends such commits
# only once they are durable; it waits for the WAL writer to flush them
# instead of flushing itself a batch at a time (src/worker.c,
# batch_durable), and wait() flushes what the worker waits for, so that
# read-your-writes does not wait for the WAL writer (src/fence.c).
# Synchronous commits never wait: their WAL was flushed before they were
# visible, and what the worker's own asynchronous acknowledgements left
# unflushed, which the commit log cannot tell from a writer's, is flushed
# by the worker at once.
#
# The WAL writer is stopped (SIGSTOP) while the test runs, so that nothing
# but the worker and wait() flushes WAL; with wal_writer_delay = 10s the
# worker waits up to 20 s before it flushes on its own.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('async', redis_port => $rp,
	extra_conf => "wal_writer_delay = 10s\nautovacuum = off\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
      SELECT wtcache.watch('t');
      INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g;});
ok(wait_drained($node, $db), 'rows delivered');
my $key = redis_key_of($node, $db, 't', 1);

sub worker_activity
{
	return sql(q{SELECT coalesce(query, '') FROM pg_stat_activity
	             WHERE application_name = 'wtcache worker' AND datname = current_database()});
}

my $walwriter = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'});
like($walwriter, qr/^\d+$/, 'found the WAL writer');
kill 'STOP', $walwriter;
END { kill 'CONT', $walwriter if $walwriter; }

# --- an asynchronous commit: the worker waits for its WAL --------------------
# A position inside the transaction, past its UPDATE: its commit record
# comes after it.  (Taken after the commit, it would also cover WAL others
# wrote since, the worker's own acknowledgement included.)
my $commit_lsn = sql(q{SET synchronous_commit = off;
                       UPDATE t SET v = 'async' WHERE id = 1
                       RETURNING pg_current_wal_insert_lsn()});
my $seen_waiting = 0;
my $sent_early = 0;
for (my $deadline = time() + 60; time() < $deadline;)
{
	# the value first, then the flush position, which only grows
	my $value = redis_cmd($rp, 'GET', $key) // '';
	my $flushed = sql(qq{SELECT pg_current_wal_flush_lsn() >= '$commit_lsn'::pg_lsn});
	$sent_early++ if $value =~ /"v":"async"/ && $flushed ne 't';
	if (worker_activity() eq 'wtcache: waiting for the WAL writer')
	{
		$seen_waiting = 1;
		last;
	}
	usleep(10_000);
}
ok($seen_waiting, 'the worker waits for the WAL writer to flush an asynchronous commit');
is($sent_early, 0, 'the asynchronous commit was not in Redis before its WAL was flushed');
like(redis_cmd($rp, 'GET', $key), qr/"v":"v1"/, 'Redis still holds the value before it');

# wait() flushes what the worker waits for: well before the worker's own
# flush, 2 x wal_writer_delay = 20 s after it began to wait
my $t0 = time();
is(sql(q{SELECT wtcache.wait('15s')}), 't', 'wait() returns without waiting for the WAL writer');
note(sprintf('wait() took %.3f s', time() - $t0));
like(redis_cmd($rp, 'GET', $key), qr/"v":"async"/, 'the asynchronous commit is in Redis after wait()');
is(sql(qq{SELECT pg_current_wal_flush_lsn() >= '$commit_lsn'::pg_lsn}), 't',
	'and its WAL is flushed');

# --- synchronous commits never wait for the WAL writer ----------------------
# Each is delivered while the WAL writer is still stopped, and the worker's
# own acknowledgements (asynchronous) share commit-log groups with them.
my $waited = 0;
my $delivered = 0;
for my $i (1 .. 20)
{
	sql(qq{UPDATE t SET v = 'sync $i' WHERE id = 2});
	my $key2 = redis_key_of($node, $db, 't', 2);
	for (my $deadline = time() + 60; time() < $deadline;)
	{
		$waited++ if worker_activity() eq 'wtcache: waiting for the WAL writer';
		if ((redis_cmd($rp, 'GET', $key2) // '') =~ /"v":"sync $i"/)
		{
			$delivered++;
			last;
		}
		usleep(5_000);
	}
}
is($delivered, 20, 'every synchronous commit delivered with the WAL writer stopped');
is($waited, 0, 'the worker never waited for the WAL writer for them');

kill 'CONT', $walwriter;
ok(wait_drained($node, $db), 'drained with the WAL writer running');
compare_table_ok($node, $db, 't', $rp);

$node->stop;
done_testing();
