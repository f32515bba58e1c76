# The live audit's step reads at most a step's keys (AUDIT_STEP_MAX), also
# the first range of full blocks after a run of empty ones (a bulk DELETE
# then VACUUM, which does not truncate a table whose tail is live): the
# range of a step is sized from the rows the last one held and doubles over
# empty blocks, so without a cut it would read every row of up to 1,024
# full blocks at once, and owe the rate for hours.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('audit_step', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# ~1,060 empty pages, then ~270 full ones (a live tail keeps VACUUM from
# truncating the empty ones).
sql(q{
CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL);
ALTER TABLE a SET (autovacuum_enabled = off);
INSERT INTO a SELECT i, 0 FROM generate_series(1, 300000) i;
DELETE FROM a WHERE id <= 240000;
});
sql(q{VACUUM a});
cmp_ok(sql(q{SELECT pg_relation_size('a') / 8192}), '>', 1200, 'the empty pages stay');
sql(q{SELECT wtcache.watch('a', warm => true)});
ok(wait_drained($node, $db, '120s'), 'the live rows delivered');

my $stats = q{SELECT checked + skipped FROM wtcache.audit_stats()
              WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())};
# The first 30 rows of the full blocks lose their keys behind wtcache's
# back: steps cut within a block must resume at the next row, neither
# skipping one nor reading one again forever.
my @gone = map { redis_key_of($node, $db, 'a', $_) } 240001 .. 240030;
redis_cmd($rp, 'DEL', $_) for @gone;
sql(q{ALTER SYSTEM SET wtcache.audit_rate = 10; SELECT pg_reload_conf();});
# Every step, seen as the counter's moves: at 10 keys a second a step
# compares one key, and the steps go on at that pace (no debt).
my ($last, $biggest) = (0, 0);
ok(poll_until(sub {
	my $n = sql($stats);
	$n = 0 if $n eq '';
	$biggest = $n - $last if $n - $last > $biggest;
	$last = $n;
	return $n >= 20;
}), 'the audit compared 20 keys');
cmp_ok($biggest, '<=', 256,
	"no step compared more than AUDIT_STEP_MAX keys (the largest move: $biggest)");

ok($node->poll_query_until($db, q{SELECT missing >= 30 FROM wtcache.audit_stats()
		WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'the audit found each of the 30 keys missing');
ok(poll_until(sub { !grep { !defined redis_cmd($rp, 'GET', $_) } @gone }),
	'and each was delivered again');
is(sql(q{SELECT missing FROM wtcache.audit_stats()
         WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())}),
	'30', 'no key counted twice');

$node->stop;
$redis->stop;
done_testing();

END
{
	$redis->stop if $redis;
}
