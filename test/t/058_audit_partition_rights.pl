# The live audit reads a partition of a watched table as delivery does,
# through the watched table, with its owner's rights and its policies:
# not the partition's own, which may differ.  wtcache_tree_stranger()
# accepts a partition owned by a role with the owner's rights (here the
# superuser), of which the watched table's owner is no reader; and a
# partition of the owner's may FORCE ROW LEVEL SECURITY of its own, which
# a read as the owner with row_security off refuses.  Read FROM the
# partition itself, both failed every pass, silently (DEBUG1), and a
# wrong value there was never found.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('audit_partition_rights', redis_port => $rp, extra_conf => q{
wtcache.poll_interval = '1s'
});
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

sub audit
{
	return sql(q{SELECT checked, mismatched, missing, skipped, repaired
	             FROM wtcache.audit_stats()
	             WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

sub wait_audit
{
	my ($cond) = @_;
	return $node->poll_query_until($db, qq{SELECT $cond FROM wtcache.audit_stats()
	    WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())});
}

ok(wait_drained($node, $db), 'the worker has checked Redis');

# pt is alice's; pt_a hers too (the control), pt_b the superuser's (a
# DBA's partition: has alice's rights, so the tree is accepted), pt_c
# hers with FORCE ROW LEVEL SECURITY and a policy that hides nothing.
sql(q{
CREATE ROLE alice;
CREATE TABLE pt (id int PRIMARY KEY, v text NOT NULL) PARTITION BY RANGE (id);
ALTER TABLE pt OWNER TO alice;
CREATE TABLE pt_a PARTITION OF pt FOR VALUES FROM (1) TO (1001);
ALTER TABLE pt_a OWNER TO alice;
CREATE TABLE pt_b PARTITION OF pt FOR VALUES FROM (1001) TO (2001);
CREATE TABLE pt_c PARTITION OF pt FOR VALUES FROM (2001) TO (3001);
ALTER TABLE pt_c OWNER TO alice;
ALTER TABLE pt_c ENABLE ROW LEVEL SECURITY;
ALTER TABLE pt_c FORCE ROW LEVEL SECURITY;
CREATE POLICY everything ON pt_c USING (true);
INSERT INTO pt SELECT i, 'v' || i FROM generate_series(1, 3000) i;
SELECT wtcache.watch('pt');
SELECT wtcache.warm('pt');
});
ok(wait_drained($node, $db), 'every partition delivered (delivery reads through pt)');
is(sql(q{SELECT count(*) FROM wtcache.verify('pt')}), '0', 'verify() finds Redis equal to pt');

# one wrong value in each partition, behind wtcache's back
my %key;
for my $id (500, 1500, 2500)
{
	$key{$id} = redis_key_of($node, $db, 'pt', $id);
	my $v = redis_cmd($rp, 'GET', $key{$id});
	like($v, qr/"v":"v$id"/, "row $id in Redis");
	$v =~ s/"v":"v$id"/"v":"wrong"/;
	redis_cmd($rp, 'SET', $key{$id}, $v);
}

my ($c0) = split /\|/, audit();
sql("ALTER SYSTEM SET wtcache.audit_rate = 2000; SELECT pg_reload_conf();");
ok(wait_audit('mismatched >= 1'), 'the audit found the wrong value in pt_a (control)') or diag(audit());
# Four passes' worth of checks over the 3,000 rows (more passes if
# partitions are passed by: the count only grows with the rows compared).
ok(wait_audit('checked >= ' . ($c0 + 4 * 3000)), 'the audit compared four passes of keys') or diag(audit());

my $rights_denied = $node->log_contains(qr/permission denied for table pt_b/) ? 'yes' : 'no (DEBUG1 only)';
note("a permission error logged: $rights_denied");
unlike(redis_cmd($rp, 'GET', $key{500}), qr/"v":"wrong"/, "pt_a's wrong value was found and repaired");
unlike(redis_cmd($rp, 'GET', $key{1500}), qr/"v":"wrong"/,
	"pt_b's (a superuser's partition, accepted in alice's tree) was found and repaired too");
unlike(redis_cmd($rp, 'GET', $key{2500}), qr/"v":"wrong"/,
	"pt_c's (FORCE ROW LEVEL SECURITY on the partition only) was found and repaired too");
is((split /\|/, audit())[1], '3', 'three mismatches counted') or diag(audit());

$node->stop;
$redis->stop;
done_testing();

END
{
	$redis->stop if $redis;
}
