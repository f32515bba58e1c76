# With synchronous_commit off a commit is visible before its WAL is
# flushed, and a crash can take it back.  The worker sends such commits
# only once they are durable; it waits for the WAL writer to flush them
# instead of flushing itself a batch at a time (src/worker.c,
# batch_durable), and wait() flushes what the worker waits for, so that
# read-your-writes does not wait for the WAL writer (src/fence.c).
# Synchronous commits never wait: their WAL was flushed before they were
# visible, and what the worker's own asynchronous acknowledgements left
# unflushed, which the commit log cannot tell from a writer's, is flushed
# by the worker at once.  A batch sends rows as its snapshot sees them, so
# a value may come from a later commit than any queue row in the batch:
# that commit must be durable too, and so must a delete that no row is
# left to name.
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
	extra_conf => "wal_writer_delay = 10s\nautovacuum = off\nwtcache.batch_size = 100\n");
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{CREATE TABLE pad (n int);
      CREATE TYPE mood AS ENUM ('happy', 'sad');
      CREATE TABLE e (id int PRIMARY KEY, m mood NOT NULL);
      SELECT wtcache.watch('e');
      INSERT INTO e VALUES (1, 'sad');
      CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
      SELECT wtcache.watch('t');
      INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 300) g;});
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

# --- a value or a delete from a commit beyond the batch --------------------
# Delivery paused, key 3 changed and key 4 written by synchronous commits,
# then 150 commits of other keys, then (in another commit-log group) an
# asynchronous commit that changes key 3 and deletes key 4.  The first
# batch (batch_size 100) claims the synchronous changes of keys 3 and 4
# but reads key 3's row as the asynchronous commit left it, and finds key
# 4 gone.
sub worker_state { return sql(q{SELECT worker_state FROM wtcache.status LIMIT 1}); }
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
my $paused = 0;
for (my $deadline = time() + 60; time() < $deadline;)
{
	$paused = 1, last if worker_state() eq 'paused';
	usleep(20_000);
}
ok($paused, 'delivery paused');
sql(q{UPDATE t SET v = 'sync' WHERE id IN (3, 4)});
sql(join("\n", map { "UPDATE t SET v = 'other' WHERE id = $_;" } 101 .. 250));
# synchronous commits of an unwatched table: the next commit-log group
# (a transaction that writes no WAL before its commit record commits
# asynchronously, whatever synchronous_commit says)
sql(join("\n", map { "INSERT INTO pad VALUES ($_);" } 1 .. 40));
my $later_lsn = sql(q{SET synchronous_commit = off;
                      BEGIN;
                      DELETE FROM t WHERE id = 4;
                      UPDATE t SET v = 'later' WHERE id = 3 RETURNING pg_current_wal_insert_lsn();
                      COMMIT;});
my ($key3, $key4) = map { redis_key_of($node, $db, 't', $_) } 3, 4;
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
my ($early3, $early4, $seen3, $seen4) = (0, 0, 0, 0);
for (my $deadline = time() + 60; time() < $deadline && !($seen3 && $seen4);)
{
	my $v3 = redis_cmd($rp, 'GET', $key3) // '';
	my $v4 = redis_cmd($rp, 'GET', $key4);
	my $flushed = sql(qq{SELECT pg_current_wal_flush_lsn() >= '$later_lsn'::pg_lsn});
	if ($v3 =~ /"v":"later"/) { $seen3 = 1; $early3++ if $flushed ne 't'; }
	if (!defined $v4) { $seen4 = 1; $early4++ if $flushed ne 't'; }
	# once the worker waits, let wait() end it
	sql(q{SELECT wtcache.wait('15s')})
	  if worker_activity() eq 'wtcache: waiting for the WAL writer';
	usleep(5_000);
}
ok($seen3 && $seen4, 'the later change and the delete are delivered');
is($early3, 0, 'a value from an asynchronous commit beyond the batch was not in Redis before its WAL was flushed');
is($early4, 0, 'nor was a delete of one');

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

# --- a value rendered after a catalog change ------------------------------
# An enum label renamed asynchronously after a synchronous change of a row
# that uses it: the batch of that change renders the row with the new
# label (the worker's catalog caches have it), while the rename's own
# queue entry (a requeue of the table) comes in a later batch, which
# waits for the WAL writer.  The label must not reach Redis before the
# rename's WAL is flushed.
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
$paused = 0;
for (my $deadline = time() + 60; time() < $deadline;)
{
	$paused = 1, last if worker_state() eq 'paused';
	usleep(20_000);
}
ok($paused, 'delivery paused again');
sql(q{UPDATE e SET m = 'happy' WHERE id = 1});
# the rename's requeue of the table beyond the first batch (batch_size 100)
sql(join("\n", map { "UPDATE t SET v = 'other again' WHERE id = $_;" } 101 .. 210));
# into another commit-log group than the rename's
sql(join("\n", map { "INSERT INTO pad VALUES ($_);" } 1 .. 40));
my $rename_lsn = sql(q{SET synchronous_commit = off;
                       BEGIN;
                       ALTER TYPE mood RENAME VALUE 'happy' TO 'glad';
                       SELECT pg_current_wal_insert_lsn();
                       COMMIT;});
my $ekey = redis_key_of($node, $db, 'e', 1);
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
my ($early_label, $seen_label) = (0, 0);
for (my $deadline = time() + 60; time() < $deadline && !$seen_label;)
{
	my $v = redis_cmd($rp, 'GET', $ekey) // '';
	my $flushed = sql(qq{SELECT pg_current_wal_flush_lsn() >= '$rename_lsn'::pg_lsn});
	if ($v =~ /"m":"glad"/) { $seen_label = 1; $early_label++ if $flushed ne 't'; }
	sql(q{SELECT wtcache.wait('15s')})
	  if !$seen_label && worker_activity() eq 'wtcache: waiting for the WAL writer';
	usleep(5_000);
}
ok($seen_label, 'the renamed label is delivered');
is($early_label, 0, 'a label renamed asynchronously was not in Redis before the rename was flushed');

# --- synchronous commits never wait for the WAL writer ----------------------
# Two sessions commit one row at a time, synchronously, while the WAL
# writer is still stopped; the worker's own acknowledgements (asynchronous)
# share commit-log groups with their commits, and the last commits of the
# burst have no later commit to flush what the worker's came after them.
my @writers = map { $node->background_psql($db) } 1 .. 2;
my @keys = map { redis_key_of($node, $db, 't', $_) } 10, 11;
my $waited = 0;
my $delivered = 0;
# in rounds: the end of each burst is where a wait would last
for my $round (1 .. 8)
{
	for my $w (0 .. 1)
	{
		my $id = 10 + $w;
		$writers[$w]->query_until(qr/go\n/, qq{\\echo go
DO \$\$ BEGIN FOR i IN 1 .. 50 LOOP
  UPDATE t SET v = 'sync $round ' || i WHERE id = $id; COMMIT;
END LOOP; END \$\$;
});
	}
	my $done = 0;
	for (my $deadline = time() + 60; time() < $deadline;)
	{
		$waited++ if worker_activity() eq 'wtcache: waiting for the WAL writer';
		$done = grep { (redis_cmd($rp, 'GET', $_) // '') =~ /"v":"sync $round 50"/ } @keys;
		last if $done == 2;
		usleep(2_000);
	}
	$delivered++ if $done == 2;
	$_->query_safe('SELECT 1') for @writers;
}
$_->quit for @writers;
is($delivered, 8, 'every burst of synchronous commits delivered with the WAL writer stopped');
is($waited, 0, 'the worker never waited for the WAL writer for them');

kill 'CONT', $walwriter;
ok(wait_drained($node, $db), 'drained with the WAL writer running');
compare_table_ok($node, $db, 't', $rp);

$node->stop;
done_testing();
