# Redis Cluster: a 3-master cluster on loopback.  The worker routes by slot
# (rows spread over every master), the consistency check passes, reads and
# cached queries work, a resharding in the middle of a write load (slots
# with their keys moved between masters: MOVED, ASK and TRYAGAIN answers)
# loses nothing, TRUNCATE purges keys on every master, verify() scans them
# all, and a FLUSHALL of every master is noticed and repaired.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use IPC::Run;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use WtcacheTest;
use RedisTopology;

my @masters = start_redis_cluster(masters => 3);
my @ports = map { $_->port } @masters;
my $node = new_wtcache_node(
	'cluster',
	redis_port => $ports[0],
	extra_conf => "wtcache.redis_cluster_nodes = '127.0.0.1:$ports[0], 127.0.0.1:$ports[1]'\n"
	  . "wtcache.poll_interval = 500\n");
my $db = 'postgres';
my %cmp = cluster_compare_opts(@masters);

sub sql { return $node->safe_psql($db, $_[0]); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL DEFAULT 0,
                org int NOT NULL DEFAULT 1);
SELECT wtcache.watch('t', tags => ARRAY['org:{org}']);
INSERT INTO t SELECT i, md5(i::text), 0, i % 5 FROM generate_series(1, 5000) i;
CREATE TABLE t2 (a text, b int, payload jsonb, PRIMARY KEY (a, b));
SELECT wtcache.watch('t2');
INSERT INTO t2 SELECT 'k:{' || (i % 37) || '}%', i, jsonb_build_object('i', i)
  FROM generate_series(1, 2000) i;
});
ok(wait_drained($node, $db), 'the first rows reach the cluster');
like(sql(q{SELECT redis_address FROM wtcache.worker_status() WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	qr/^cluster of 3 masters/, 'the status names the cluster');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);
compare_table_ok($node, $db, 't2', $ports[0], undef, %cmp);
for my $p (@ports)
{
	cmp_ok(redis_cmd($p, 'DBSIZE'), '>', 500, "master $p holds its share of the keys");
}

#### One script call per master, and a slot half migrated

sub evalsha_calls
{
	my $n = 0;
	for my $p (@ports)
	{
		my $stats = redis_cmd($p, 'INFO', 'commandstats');
		$n += $1 if $stats =~ /^cmdstat_evalsha:calls=(\d+)/m;
	}
	return $n;
}
redis_cmd($_, 'CONFIG', 'RESETSTAT') for @ports;
sql(q{UPDATE t SET n = n + 1});
ok(wait_drained($node, $db), 'an update of 5,000 rows is delivered');
# a call per slot would be about one a row: the rows' keys are of ~4,300 slots
cmp_ok(evalsha_calls(), '<', 500, 'the rows went in calls that span the slots of a master');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);

# A slot moved behind the worker's back (its keys and then the slot, as
# the last steps of a resharding do): a call spanning the slots of the
# master the worker still takes for the slot's stops at its first key
# there ("non local key"), and the batch is sent again, a slot at a time,
# which follows the MOVED.  Without a reconnect (checked below).
my ($mig_id, $mig_key, $mig_from);
for my $id (1 .. 1000)
{
	my $key = redis_key_of($node, $db, 't', $id);
	for my $m (0 .. 2)
	{
		my ($exists) = redis_try($ports[$m], 'EXISTS', $key);
		($mig_id, $mig_key, $mig_from) = ($id, $key, $m) if defined $exists && $exists eq '1';
	}
	last if defined $mig_id;
}
my $mig_to = ($mig_from + 1) % 3;
my $slot = redis_cmd($ports[0], 'CLUSTER', 'KEYSLOT', $mig_key);
redis_cmd($ports[$mig_to], 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', cluster_node_id($masters[$mig_from]));
redis_cmd($ports[$mig_from], 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', cluster_node_id($masters[$mig_to]));
my $in_slot = redis_cmd($ports[$mig_from], 'CLUSTER', 'GETKEYSINSLOT', $slot, 1000);
redis_cmd($ports[$mig_from], 'MIGRATE', '127.0.0.1', $ports[$mig_to], '', 0, 5000, 'KEYS', @$in_slot);
redis_cmd($_, 'CLUSTER', 'SETSLOT', $slot, 'NODE', cluster_node_id($masters[$mig_to])) for @ports;
cluster_wait_ok(@masters);
my (undef, $moved) = redis_try($ports[$mig_from], 'EXISTS', $mig_key);
like($moved, qr/\bMOVED $slot /, "the slot of row ${mig_id}'s key moved to another master with its keys");
my $others = join(',', 1 .. 200);
sql(qq{UPDATE t SET n = n + 1 WHERE id = $mig_id OR id IN ($others)});
ok(wait_drained($node, $db), 'a batch with a key of the moved slot is delivered');
like(slurp_file($node->logfile), qr/spanning the slots of one Redis Cluster master failed; delivering slot by slot/,
	'the call that met the moved key was sent again, a slot at a time');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);

#### Reads through the cluster

is(sql(q{SELECT wtcache.get('t', '42') = (SELECT row_to_json(t)::jsonb FROM t WHERE id = 42)}),
	't', 'get() through the cluster');
is( sql(q{SELECT count(*) FROM wtcache.get_many('t', ARRAY(SELECT i::text FROM generate_series(1, 300) i)) g
          JOIN t ON g.row = row_to_json(t)::jsonb}),
	'300', 'get_many() of 300 keys spread over every master');
my $hits = sql(q{SELECT read_hits FROM wtcache.status WHERE table_name = 't'::regclass});
cmp_ok($hits, '>=', 300, 'and they were hits');
my $q = q{SELECT * FROM wtcache.query('SELECT org, count(*) AS n FROM t GROUP BY org ORDER BY org')};
my $direct = sql(q{SELECT jsonb_build_object('org', org, 'n', count(*)) FROM t GROUP BY org ORDER BY org});
is(sql($q), $direct, 'a cached query: first call');
is(sql($q), $direct, 'a cached query: second call');
cmp_ok(sql(q{SELECT hits FROM wtcache.query_stats()}), '>=', 1, 'the second call was a hit');
sql(q{UPDATE t SET org = 9 WHERE id <= 10});
ok(wait_drained($node, $db), 'an update that moves rows to another org is delivered');
is(sql($q), sql(q{SELECT jsonb_build_object('org', org, 'n', count(*)) FROM t GROUP BY org ORDER BY org}),
	'the cached query was invalidated');

#### Resharding in the middle of a write load

my ($load, $out, $err) = start_write_load($node, $db, 'cluster', <<'EOS', clients => 3, seconds => 12);
\set id random(1001, 6000)
UPDATE t SET v = md5(random()::text), n = n + 1 WHERE id = :id;
\set id2 random(5001, 6000)
INSERT INTO t VALUES (:id2, 'new', 0, :id2 % 5) ON CONFLICT (id) DO UPDATE SET n = t.n + 1;
\set id3 random(1001, 6000)
DELETE FROM t WHERE id = :id3 AND n % 5 = 3;
\set b random(1, 2500)
INSERT INTO t2 VALUES ('k:{' || (:b % 37) || '}%', :b, '{"r": 1}') ON CONFLICT (a, b) DO UPDATE SET payload = jsonb_build_object('r', random());
EOS
sleep 2;
my $from = cluster_node_id($masters[0]);
my $to = cluster_node_id($masters[1]);
my $reshard_log = "$PostgreSQL::Test::Utils::log_path/cluster_reshard.log";
my $reshard = fork() // die "fork: $!";
if ($reshard == 0)
{
	open(STDOUT, '>>', $reshard_log);
	open(STDERR, '>&', \*STDOUT);
	exec('redis-cli', '--cluster', 'reshard', "127.0.0.1:$ports[0]", '--cluster-from', $from,
		'--cluster-to', $to, '--cluster-slots', '2500', '--cluster-yes')
	  or POSIX::_exit(127);
}
# reads keep working while slots move: rows 1-1000, which the load leaves
# alone, so a read must equal the table exactly
my ($reads, $reads_ok) = (0, 0);
while (waitpid($reshard, POSIX::WNOHANG()) == 0)
{
	my $ids = join(',', map { 1 + int(rand(1000)) } 1 .. 20);
	my ($ret, $got, $stderr) = $node->psql($db,
		"SELECT count(*) FROM unnest(ARRAY[$ids]) i
		 WHERE wtcache.get('t', i::text) IS DISTINCT FROM (SELECT row_to_json(t)::jsonb FROM t WHERE id = i)");
	$reads++;
	if ($ret == 0 && $got eq '0') { $reads_ok++ }
	else { diag("read of ids $ids: exit $ret, $got differ, $stderr") }
}
is($?, 0, 'redis-cli moved 2,500 slots and their keys while the load ran');
# how many fit in depends on the machine (5 to 40 here): at least one did
cmp_ok($reads, '>', 0, "reads ran during the resharding ($reads)");
is($reads_ok, $reads, 'every read during the resharding returned the row of the table');
IPC::Run::finish($load);
like($$out, qr/number of transactions actually processed: [1-9]/, 'the write load committed transactions')
  or diag($$err);
cluster_wait_ok(@masters);
ok(wait_drained($node, $db, '120s'), 'everything is delivered after the resharding');
my $log = slurp_file($node->logfile);
is(scalar(() = $log =~ /wtcache: connected to Redis/g), 1,
	'the worker followed MOVED and ASK inline: it never had to reconnect');
unlike($log, qr/could not deliver changes/, 'no push failed');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);
compare_table_ok($node, $db, 't2', $ports[0], undef, %cmp);
is(sql(q{SELECT count(*) FROM wtcache.verify('t')}), '0', 'verify() finds nothing on any master');
cmp_ok(redis_cmd($ports[1], 'DBSIZE'), '>', redis_cmd($ports[0], 'DBSIZE'),
	'the keys moved with their slots');

#### TRUNCATE purges every master

sql(q{TRUNCATE t2});
ok(wait_drained($node, $db), 'TRUNCATE delivered');
compare_table_ok($node, $db, 't2', $ports[0], undef, %cmp);

#### A call per master whose first key is of a half migrated slot

# Rows a and b share slot S on one master; a's key is missing there (never
# filled, or evicted), and S is being migrated, no key moved yet.  The call
# for that master is routed by a's key, so Redis answers ASK: followed,
# the importing master, asked, would write b there while b's key still
# lives on the source (a stale read, and a MIGRATE refused with BUSYKEY).
# The worker instead sends the batch again a slot at a time, which waits
# for the migration (TRYAGAIN) and then follows the slot.
# (keys of ids of one length never share a slot: CRC16 tells apart strings
# that differ in two bytes, so the ids are taken from the whole table)
my (%first_of_slot, $row_a, $row_b, $half_slot);
for my $id (split /\n/, sql(q{SELECT id FROM t ORDER BY id}))
{
	my $s = redis_cmd($ports[0], 'CLUSTER', 'KEYSLOT', redis_key_of($node, $db, 't', $id));
	if (exists $first_of_slot{$s}) { ($row_a, $row_b, $half_slot) = ($first_of_slot{$s}, $id, $s); last }
	$first_of_slot{$s} = $id;
}
my ($key_a, $key_b) = map { redis_key_of($node, $db, 't', $_) } ($row_a, $row_b);
my $src;
for my $m (0 .. 2)
{
	my ($e) = redis_try($ports[$m], 'EXISTS', $key_b);
	$src = $m if defined $e && $e eq '1';
}
my $dst = ($src + 1) % 3;
redis_cmd($ports[$src], 'DEL', $key_a);
redis_cmd($ports[$dst], 'CLUSTER', 'SETSLOT', $half_slot, 'IMPORTING', cluster_node_id($masters[$src]));
redis_cmd($ports[$src], 'CLUSTER', 'SETSLOT', $half_slot, 'MIGRATING', cluster_node_id($masters[$dst]));
my $log_at = -s $node->logfile;
sql(qq{BEGIN; UPDATE t SET n = 111 WHERE id = $row_a; UPDATE t SET n = 222 WHERE id = $row_b; COMMIT;});
ok($node->wait_for_log(qr/spanning the slots of one Redis Cluster master failed.*\n.*ASK $half_slot /, $log_at),
	"the call routed by row ${row_a}'s missing key got ASK, and the batch went again slot by slot");
is(redis_pipeline($ports[$dst], [['ASKING'], ['GET', $key_b]])->[1], undef,
	"row ${row_b} was not written on the importing master while its key is on the source");
my $slot_keys = redis_cmd($ports[$src], 'CLUSTER', 'GETKEYSINSLOT', $half_slot, 1000);
is(redis_cmd($ports[$src], 'MIGRATE', '127.0.0.1', $ports[$dst], '', 0, 5000, 'KEYS', @$slot_keys), 'OK',
	'the migration moves the slot\'s keys');
redis_cmd($_, 'CLUSTER', 'SETSLOT', $half_slot, 'NODE', cluster_node_id($masters[$dst])) for @ports;
cluster_wait_ok(@masters);
ok(wait_drained($node, $db, '120s'), 'the batch is delivered once the slot moved');
is(sql(qq{SELECT wtcache.get('t', '$row_b')::jsonb ->> 'n'}), '222', 'and reads return the change');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);

#### FLUSHALL of every master: the generation marker notices

my $rows = sql(q{SELECT count(*) FROM t});
redis_cmd($_, 'FLUSHALL') for @ports;
my $deadline = time() + 60;
my $back = 0;
while (time() < $deadline)
{
	my $n = 0;
	$n += scalar @{ redis_row_keys($_, table_key_pattern($node, $db, 't')) } for @ports;
	if ($n >= $rows) { $back = 1; last }
	usleep(200_000);
}
ok($back, 'the worker resynced the emptied cluster on its own');
ok(wait_drained($node, $db), 'the resync is delivered');
compare_table_ok($node, $db, 't', $ports[0], undef, %cmp);
like(slurp_file($node->logfile), qr/generation marker missing/, 'and said why');

done_testing();
