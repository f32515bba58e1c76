# Live changes keep their priority over long work throttled by
# wtcache.bulk_rate, whatever happens between their claim and their send:
#
# 1. A claimed batch dropped unsent (here a configuration reload that lands
#    while the claim runs) is claimed again with its live rows: they do not
#    wait for the warm.  The claim is made to wait for a lock on the live
#    table, the reload lands meanwhile, then the lock is released: no race.
# 2. A live change whose queue id was drawn before a walk of the second
#    claim cursor passed it, but that committed after (a transaction writing
#    its first queue chunk long before its commit), is delivered as soon
#    as it is committed (its writer tells the worker where its rows
#    are), not behind every row of the warm.  And the live changes
#    delivered past the warm count in delivery_lag().
#
# 3. The same for a PREPAREd transaction, whose COMMIT PREPARED in another
#    session knows nothing of its rows (max_prepared_transactions > 0).
#
# Each part polls until the live change is in Redis or the warm ended, and
# asserts the warm was still running: fixed, the change arrives within a
# couple of seconds; broken, only with the warm's end (about a minute).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('live_cursor', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# A psql session kept open, fed a line at a time.
sub session
{
	my %s = (in => '', out => '', err => '');
	$s{h} = IPC::Run::start([ 'psql', '-X', '-qAt', '-d', $node->connstr($db) ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err});
	return \%s;
}

sub session_run
{
	my ($s, $cmds, $tag) = @_;
	$s->{in} .= "$cmds SELECT '$tag';\n";
	return poll_until(sub { $s->{h}->pump_nb; $s->{out} =~ /\b$tag\b/ });
}

# 3,000 rows at 50 a second: three chunks of 1,000, a minute in all.
sql(q{
CREATE TABLE big (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO big SELECT i, 'v' || i FROM generate_series(1, 3000) i;
SELECT wtcache.watch('big');
CREATE TABLE live_t (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO live_t SELECT i, 0 FROM generate_series(1, 1000) i;
SELECT wtcache.watch('live_t', warm => true);
CREATE TABLE live2 (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO live2 VALUES (1, 0);
SELECT wtcache.watch('live2', warm => true);
});
ok(wait_drained($node, $db), 'set up and delivered');

my $k1 = redis_key_of($node, $db, 'live_t', 1);
my $k2 = redis_key_of($node, $db, 'live2', 1);

# 'live' once Redis holds $re at $key while the warm of big still had a
# chunk to deliver (read before the key: a change delivered with the
# warm's last chunks is 'done'), 'done' once it had not
sub live_or_warm_done
{
	my ($key, $re) = @_;
	return poll_until(sub {
		my $left = sql(q{SELECT coalesce(max(rows_total - rows_delivered), 0) FROM wtcache.progress
		                 WHERE operation = 'warm' AND table_name = 'big'::regclass});
		return 'done' if $left < 1000;
		return 'live' if (redis_cmd($rp, 'GET', $key) // '') =~ $re;
		return 0;
	}) // 'timeout';
}

sub start_warm
{
	sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 50; SELECT pg_reload_conf();});
	sql(q{SELECT wtcache.warm('big')});
}

sub finish_warm
{
	sql(q{ALTER SYSTEM RESET wtcache.bulk_rate; SELECT pg_reload_conf();});
	ok(wait_drained($node, $db, '120s'), 'everything delivered');
}

# --- 1. a batch dropped for a reload keeps its live rows' priority ---
start_warm();
sql(q{ALTER SYSTEM SET wtcache.enabled = off; SELECT pg_reload_conf();});
ok($node->poll_query_until($db, q{SELECT worker_state = 'paused' FROM wtcache.status LIMIT 1}),
	'delivery paused');
sql(q{UPDATE live2 SET v = 1 WHERE id = 1});
my $s = session();
ok(session_run($s, 'BEGIN; LOCK TABLE live2 IN ACCESS EXCLUSIVE MODE;', 'locked'),
	'live2 locked');
sql(q{ALTER SYSTEM RESET wtcache.enabled; SELECT pg_reload_conf();});
ok($node->poll_query_until($db,
		q{SELECT count(*) > 0 FROM pg_locks WHERE relation = 'live2'::regclass AND NOT granted}),
	'the worker claims the live change and waits for live2');
# a new session sees the setting once the postmaster signalled the worker
sql(q{ALTER SYSTEM SET wtcache.bulk_rate = 49; SELECT pg_reload_conf();});
ok($node->poll_query_until($db, q{SHOW wtcache.bulk_rate}, '49'),
	'the reload reached the postmaster, and the worker through it');
ok(session_run($s, 'COMMIT;', 'unlocked'), 'live2 unlocked');
is(live_or_warm_done($k2, qr/"v":1\}/), 'live',
	'the change in the batch dropped for the reload passed the warm');
$s->{in} .= "\\q\n";
$s->{h}->finish;
finish_warm();

# --- 2. a change committed after a walk passed its queue id ---
start_warm();
my $lagsql = q{SELECT coalesce(sum(changes), 0) FROM wtcache.delivery_lag()
               WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
my $lag0 = sql($lagsql);

# A changes 1,000 rows: its chunk is in the queue (its id drawn), uncommitted.
my $a = session();
ok(session_run($a, 'BEGIN; UPDATE live_t SET v = 1;', 'a_open'), 'A queued its chunk');

# B: a later id, committed first; the walk to it passes A's id.
sql(q{UPDATE live2 SET v = 2 WHERE id = 1});
is(live_or_warm_done($k2, qr/"v":2\}/), 'live', 'B passed the warm');
ok(poll_until(sub { sql($lagsql) > $lag0 }),
	'delivery_lag() counted B, a change delivered past the warm');

ok(session_run($a, 'COMMIT;', 'a_committed'), 'A committed');
is(live_or_warm_done($k1, qr/"v":1\}/), 'live',
	'A, its id drawn before the walk that passed it, passed the warm too');
$a->{in} .= "\\q\n";
$a->{h}->finish;
finish_warm();

# --- 3. a PREPAREd change, committed after a walk passed its queue id ---
$node->append_conf('postgresql.conf', "max_prepared_transactions = 2\n");
$node->restart;
start_warm();
sql(q{BEGIN; UPDATE live_t SET v = 3 WHERE id = 1; PREPARE TRANSACTION 'late';});
sql(q{UPDATE live2 SET v = 3 WHERE id = 1});
is(live_or_warm_done($k2, qr/"v":3\}/), 'live', 'C passed the warm');
sql(q{COMMIT PREPARED 'late'});
is(live_or_warm_done($k1, qr/"v":3\}/), 'live',
	'the prepared change, committed after the walk that passed it, passed the warm too');
finish_warm();

compare_table_ok($node, $db, 'live_t', $rp, 'live_t in Redis equals the table');
compare_table_ok($node, $db, 'big', $rp, 'big in Redis equals the table');

$node->stop;
$redis->stop;
done_testing();

END
{
	$redis->stop if $redis;
}
