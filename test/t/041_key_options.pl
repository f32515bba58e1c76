# watch() options of 1.3 (issue 19 part 2): the projection (columns,
# exclude_columns).  Redis holds, key for key, the projected rows under
# concurrent writers; a column kept out never reaches Redis by any path
# (INSERT, UPDATE, COPY, a DDL requeue, warm, resync, a fill from get(),
# events, the log); changing the projection under writers rewrites the
# table's keys in the new shape.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";    # WtcacheTest (PGXS resets PROVE_FLAGS)

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use WtcacheTest;

my $redis = start_redis();
my $rp = $redis->port;
my $node = new_wtcache_node('key_options', redis_port => $rp);
my $db = 'postgres';

sub sql { return $node->safe_psql($db, $_[0]); }

# Every key in Redis and every value (strings, hashes), as one text to
# search: nothing wtcache wrote may hold a secret.
sub redis_dump
{
	my @all;
	for my $k (@{ redis_scan_keys($rp, '*') })
	{
		my $type = redis_cmd($rp, 'TYPE', $k);
		my $v = $type eq 'string' ? redis_cmd($rp, 'GET', $k)
		  : $type eq 'hash' ? join("\n", @{ redis_cmd($rp, 'HGETALL', $k) })
		  : "($type)";
		push @all, "$k => " . ($v // '');
	}
	return join("\n", @all);
}

sub no_secret_ok
{
	my ($what) = @_;
	my $dump = redis_dump();
	unlike($dump, qr/SECRET/, "$what: no excluded value anywhere in Redis");
	like($dump, qr/\@example\.com/, "$what: (the projected columns are there)")
	  if $what !~ /purge/;
}

ok(wait_drained($node, $db), 'the worker has checked Redis');

my $sub = WtcacheTest::RedisConn->new($rp, timeout => 10);
is($sub->command('SUBSCRIBE', 'wtc:events')->[0], 'subscribe', 'listening to the events');
my $log_start = -s $node->logfile;

#### a projection by exclusion, every write path

sql(q{
CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, pw_hash text NOT NULL,
                    org_id int, bio text);
CREATE TABLE sessions (id int PRIMARY KEY, who text, token text);
INSERT INTO users SELECT i, 'u' || i || '@example.com', 'SECRET-pw-' || i, i % 3, 'bio ' || i
  FROM generate_series(1, 200) i;
INSERT INTO sessions SELECT i, 'u' || i || '@example.com', 'SECRET-token-' || i FROM generate_series(1, 20) i;
SELECT wtcache.watch('users', exclude_columns => ARRAY['pw_hash'], tags => ARRAY['org:{org_id}'], warm => true);
SELECT wtcache.watch('sessions', columns => ARRAY['who'], mode => 'invalidate');
});
ok(wait_drained($node, $db), 'warm delivered');
my @proj = (columns => [qw(id email org_id bio)]);
compare_table_ok($node, $db, 'users', $rp, 'warm: Redis holds the projected rows', @proj);
no_secret_ok('warm');

# the same check fails on the rows as they are: it can tell
my ($whole_ok) = compare_table($node, $db, 'users', $rp);
ok(!$whole_ok, 'Redis does not hold the whole rows');

sql(q{INSERT INTO users VALUES (1001, 'new@example.com', 'SECRET-new', 1, 'b')});
sql(q{UPDATE users SET pw_hash = 'SECRET-changed', bio = 'changed' WHERE id <= 50});
sql(q{UPDATE users SET pw_hash = 'SECRET-only-the-secret' WHERE id = 60});
sql(q{COPY users FROM PROGRAM 'printf "2001\tcopy@example.com\tSECRET-copy\t2\tx\n"'});
ok(wait_drained($node, $db), 'INSERT, UPDATE, COPY delivered');
compare_table_ok($node, $db, 'users', $rp, 'INSERT, UPDATE, COPY: Redis holds the projected rows', @proj);
no_secret_ok('INSERT, UPDATE, COPY');

sql(q{ALTER TABLE users ALTER COLUMN bio TYPE varchar(100)});
ok(wait_drained($node, $db), 'DDL requeue delivered');
compare_table_ok($node, $db, 'users', $rp, 'DDL requeue: the projected rows', @proj);
sql(q{SELECT wtcache.resync('users')});
ok(wait_drained($node, $db), 'resync delivered');
compare_table_ok($node, $db, 'users', $rp, 'resync: the projected rows', @proj);
no_secret_ok('DDL requeue and resync');

# fills: a missing key read through get() (write-through), and a table in
# invalidate mode, whose keys only fills write
redis_cmd($rp, 'DEL', redis_key_of($node, $db, 'users', 7));
is(sql(q{SELECT wtcache.get('users', '7')}), '{"id": 7, "bio": "changed", "email": "u7@example.com", "org_id": 1}',
	'get() of a missing key: the projected row');
is(redis_cmd($rp, 'GET', redis_key_of($node, $db, 'users', 7)) =~ s/^\{"_v":\d+,/{/r,
	'{"id":7,"email":"u7@example.com","org_id":1,"bio":"changed"}', 'and its fill wrote the projection');
sql(q{SELECT wtcache.get('sessions', i::text) FROM generate_series(1, 20) i});
is(scalar(grep { /\}\z/ } @{ redis_scan_keys($rp, redis_key_of($node, $db, 'sessions', 1) =~ s/:1\}$/:*}/r) }), 20,
	'invalidate mode: every session filled by get()');
is(sql(q{SELECT wtcache.get('sessions', '3')}), '{"id": 3, "who": "u3@example.com"}',
	'a hit returns the projection too');
is(sql(q{SELECT read_fills > 0 AND read_hits > 0 FROM wtcache.status WHERE table_name = 'sessions'::regclass}), 't',
	'(those were fills and hits)');
is(sql(q{SELECT (wtcache.get_row(NULL::sessions, '3')).token IS NULL}), 't',
	'get_row: an excluded column is NULL');
no_secret_ok('fills from get()');

my ($rc, $out, $err) = $node->psql($db, q{SELECT count(*) FROM wtcache.verify('users')});
is($out, '0', 'verify: no difference');
like($err, qr/comparing the columns id, email, org_id, bio/, 'verify names the projection');

#### a partitioned table: the projection holds for every partition

sql(q{
CREATE TABLE visit (id int, day int, page text, ip text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE visit_1 PARTITION OF visit FOR VALUES FROM (1) TO (2);
CREATE TABLE visit_2 (ip text, page text, day int NOT NULL, id int NOT NULL);
ALTER TABLE visit ATTACH PARTITION visit_2 FOR VALUES FROM (2) TO (3);
INSERT INTO visit SELECT i, 1 + i % 2, 'page ' || i, 'SECRET-ip-' || i FROM generate_series(1, 100) i;
SELECT wtcache.watch('visit', exclude_columns => ARRAY['ip'], warm => true);
UPDATE visit SET day = 2, ip = 'SECRET-moved' WHERE id = 1;
});
ok(wait_drained($node, $db), 'partitioned table delivered');
compare_table_ok($node, $db, 'visit', $rp, 'every partition\'s rows, projected (columns in another order in one)',
	columns => [qw(id day page)]);
no_secret_ok('partitioned table');

#### changing the projection under writers rewrites the keys

sql(q{
CREATE TABLE profile (id int PRIMARY KEY, email text, ssn text, score int);
INSERT INTO profile SELECT i, 'p' || i || '@example.com', 'SECRET-ssn-' || i, 0 FROM generate_series(1, 2000) i;
SELECT wtcache.watch('profile', warm => true);
});
ok(wait_drained($node, $db), 'profile delivered whole');
like(redis_dump(), qr/SECRET-ssn-/, 'before: the whole rows, ssn included');

my $writer = $node->background_psql($db);
my $writes = join('', map {
	my $id = 1 + ($_ * 37) % 2000;
	"UPDATE profile SET score = score + 1, ssn = 'SECRET-ssn-w$_' WHERE id = $id;\n"
	  . ($_ % 7 == 0 ? "DELETE FROM profile WHERE id = $id;\n" : '')
	  . ($_ % 11 == 0 ? "INSERT INTO profile VALUES (5000 + $_, 'n$_\@example.com', 'SECRET-n$_', 1);\n" : '')
} 1 .. 1500);
$writer->query_until(qr/writing\n/, "\\echo writing\n$writes\\echo written\n");
sql(q{SELECT wtcache.watch('profile', exclude_columns => ARRAY['ssn'])});
# reads between the change and its delivery go to the table: never the old shape
is(sql(q{SELECT count(*) FROM generate_series(1, 300) i WHERE wtcache.get('profile', i::text) ? 'ssn'}), '0',
	'no read after the change returns the old shape');
$writer->query_until(qr/written\n/, '');
$writer->quit;
ok(wait_drained($node, $db), 'writes and the rewrite delivered');
compare_table_ok($node, $db, 'profile', $rp, 'after the change under writers: Redis holds the new projection',
	columns => [qw(id email score)]);
no_secret_ok('after the projection change');

#### unwatch with purge removes the keys; nothing secret ever left the database

sql(q{SELECT wtcache.unwatch('profile')});
ok(wait_drained($node, $db), 'purge delivered');
is(scalar(@{ redis_row_keys($rp, redis_key_of($node, $db, 'users', 1) =~ s/users:1\}$/profile:*}/r) }), 0,
	'purge removed the keys');

# the events: keys, versions and tags only, never an excluded value
redis_cmd($rp, 'PUBLISH', 'wtc:events', 'END-OF-TEST');
my $events = '';
while (1)
{
	my $m = $sub->read_reply;
	last unless ref $m eq 'ARRAY';
	next unless $m->[0] eq 'message';
	last if $m->[2] eq 'END-OF-TEST';
	$events .= "$m->[2]\n";
}
$sub->close;
like($events, qr/"table":"public.users"/, 'events were published');
unlike($events, qr/SECRET/, 'no excluded value in any event');

my $log = slurp_file($node->logfile, $log_start);
unlike(join("\n", grep { /wtcache/ } split /\n/, $log), qr/SECRET/, 'nor in a log line of wtcache');

$node->stop;
done_testing();
