# pg_upgrade of a cluster with watched tables and a backlog waiting for
# Redis: the watches, the capture triggers, the queue and the version
# sequence come across, so the new cluster's worker delivers the backlog
# with versions above what Redis holds, and keeps what Redis has (no
# resync), although the generation marker names the old cluster's WAL
# history (README, "Upgrades, DROP EXTENSION, pg_upgrade").
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use Cwd qw(getcwd);
use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $old = new_wtcache_node('old', redis_port => $rp);
my $db = 'postgres';

$old->safe_psql($db, q{
CREATE TABLE acct (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
CREATE TABLE member (org int NOT NULL, id int NOT NULL, name text, PRIMARY KEY (org, id));
SELECT wtcache.watch('acct');
SELECT wtcache.watch('member', tags => ARRAY['org:{org}'], mode => 'invalidate');
INSERT INTO acct SELECT i, 'o' || i, i FROM generate_series(1, 200) i;
INSERT INTO member SELECT i % 5, i, 'm' || i FROM generate_series(1, 50) i;
});
ok(wait_drained($old, $db, '60s'), 'old cluster: everything delivered');
compare_table_ok($old, $db, 'acct', $rp, 'old cluster: Redis matches acct');

my $pattern = table_key_pattern($old, $db, 'acct');
my %before;
for my $k (@{ redis_row_keys($rp, $pattern) })
{
	my ($v) = redis_row_version(redis_cmd($rp, 'GET', $k));
	$before{$k} = $v;
}
is(scalar(keys %before), 200, 'old cluster: 200 row keys in Redis');
my $max_before = (sort { $b <=> $a } values %before)[0];
my $marker_key = $old->safe_psql($db,
	q[SELECT replace(wtcache.redis_key('acct', '1'), ':public.acct:1}', '}:gen')]);
my $old_position = redis_cmd($rp, 'GET', "$marker_key:wal");
like($old_position, qr{^\d+/\d+/[0-9A-F]+/[0-9A-F]+$},
	"the marker names the old cluster's WAL history ($old_position)");

# A backlog the old cluster never delivers: delivery paused, then changes.
$old->append_conf('postgresql.conf', 'wtcache.enabled = off');
$old->reload;
$old->poll_query_until($db,
	q{SELECT worker_state = 'paused' FROM wtcache.status WHERE table_name = 'acct'::regclass})
  or die 'the worker did not pause';
$old->safe_psql($db, q{
UPDATE acct SET balance = balance + 1000 WHERE id <= 50;
DELETE FROM acct WHERE id BETWEEN 191 AND 200;
UPDATE member SET name = name || '!' WHERE org = 1;
});
my $pending = $old->safe_psql($db, q{SELECT sum(pending) FROM wtcache.status});
cmp_ok($pending, '>=', 70, "old cluster: $pending changes wait in the queue");
$old->stop;

# The new cluster: the same settings, delivery on again.
my $new = new_wtcache_node('new', redis_port => $rp, no_start => 1);
my $bindir = $new->config_data('--bindir');
# pg_upgrade writes its logs and scripts where it runs
my $workdir = tempdir(CLEANUP => 1);
my $cwd = getcwd();
chdir $workdir or die "chdir $workdir: $!";
command_ok(
	[
		'pg_upgrade', '--no-sync',
		'-d', $old->data_dir, '-D', $new->data_dir,
		'-b', $bindir, '-B', $bindir,
		'-s', $new->host, '-p', $old->port, '-P', $new->port,
	],
	'pg_upgrade of a cluster with watched tables and a backlog');
chdir $cwd or die "chdir $cwd: $!";
$new->start;

ok(wait_drained($new, $db, '60s'), 'new cluster: the backlog is delivered');
is($new->safe_psql($db, q{SELECT sum(pending) FROM wtcache.status}), '0',
	'new cluster: nothing pending');
compare_table_ok($new, $db, 'acct', $rp, 'new cluster: Redis matches acct');
is($new->safe_psql($db, q{SELECT count(*) FROM wtcache.verify('member')}), '0',
	'new cluster: verify() finds nothing wrong with member (invalidate mode)');
is($new->safe_psql($db, q{SELECT wtcache.get('member', '1', '1')->>'name'}), 'm1!',
	'new cluster: get() of an invalidated member reads its new name');

# Redis was kept, not rewritten: untouched rows keep their versions, changed
# ones got versions above anything the old cluster handed out.
my ($kept, $raised, $gone) = (0, 0, 0);
for my $k (sort keys %before)
{
	my $value = redis_cmd($rp, 'GET', $k);
	if (!defined $value)
	{
		$gone++;
		next;
	}
	my ($v) = redis_row_version($value);
	$kept++ if $v == $before{$k};
	$raised++ if $v > $max_before;
}
is($kept, 140, 'new cluster: the 140 untouched rows keep their versions (no resync)');
is($raised, 50, 'new cluster: the 50 updated rows carry versions above the old ones');
is($gone, 10, 'new cluster: the 10 deleted rows are gone');
is($new->safe_psql($db, q{SELECT resyncs FROM wtcache.worker_status()
	WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'0', 'new cluster: the worker did not resync');
my $log = slurp_file($new->logfile);
unlike($log, qr/lost data/, 'new cluster: no repair of Redis logged');

# New changes keep going, with versions still above.
$new->safe_psql($db, q{UPDATE acct SET balance = -1 WHERE id = 150});
ok(wait_drained($new, $db, '30s'), 'new cluster: a new change is delivered');
my ($v150) = redis_row_version(redis_cmd($rp, 'GET',
	$new->safe_psql($db, q{SELECT wtcache.redis_key('acct', '150')})));
cmp_ok($v150, '>', $max_before, 'its version is above the old cluster\'s');
is($new->safe_psql($db, q{SELECT wtcache.get('acct', '150')->>'balance'}), '-1',
	'new cluster: get() serves it');
isnt(redis_cmd($rp, 'GET', "$marker_key:wal"), $old_position,
	"the marker's WAL position now names the new cluster");

$new->stop;
done_testing();
