-- Who may change what bounds Redis memory, and who may read the Redis
-- secrets' settings (the files themselves are tested in test/t/025_secrets.pl).
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE ROLE wtc_plain;
CREATE ROLE wtc_monitor IN ROLE pg_monitor;

-- the bounds on what query() and invalidate() may store are the DBA's
SET ROLE wtc_plain;
SET wtcache.query_ttl = '22280d';
SET wtcache.query_ttl = '1h';
SET wtcache.query_max_size = '8MB';
SET wtcache.max_tags_per_call = 10000;
SET wtcache.max_tag_length = 8192;
SELECT set_config('wtcache.query_ttl', '3600', false);
ALTER ROLE wtc_plain SET wtcache.query_ttl = '1d';
SHOW wtcache.query_ttl;
RESET ROLE;

-- ... and capped, for superusers too
SET wtcache.query_ttl = '8d';
SET wtcache.query_max_size = '65MB';
SET wtcache.max_tags_per_call = 10001;
SET wtcache.max_tag_length = 8193;
SET wtcache.query_ttl = '7d';
SET wtcache.query_max_size = '64MB';
SHOW wtcache.query_ttl;
SHOW wtcache.query_max_size;
RESET wtcache.query_ttl;
RESET wtcache.query_max_size;
-- a superuser may set them for a role
ALTER ROLE wtc_plain SET wtcache.query_ttl = '1d';
SELECT unnest(setconfig) FROM pg_db_role_setting WHERE setrole = 'wtc_plain'::regrole;
ALTER ROLE wtc_plain RESET wtcache.query_ttl;

-- tags per call and their length
SHOW wtcache.max_tags_per_call;
SHOW wtcache.max_tag_length;
SELECT wtcache.invalidate(array_fill('t'::text, ARRAY[101]));
SELECT wtcache.invalidate(ARRAY['org:1', repeat('x', 257)]);
SELECT * FROM wtcache.query('SELECT 1', tags => array_fill('t'::text, ARRAY[101]));
SELECT * FROM wtcache.query('SELECT 1', tags => ARRAY['org:1', repeat('x', 257)]);
SELECT * FROM wtcache.query('SELECT 1', ttl => '8 days');
SELECT * FROM wtcache.query('SELECT 1', ttl => '61 years');
SET ROLE wtc_plain;
SELECT wtcache.invalidate(array_fill('t'::text, ARRAY[101]));
SELECT wtcache.invalidate(ARRAY[repeat('x', 100000)]);
SELECT * FROM wtcache.query('SELECT 1', tags => array_fill('t'::text, ARRAY[101]));
SELECT * FROM wtcache.query('SELECT 1', ttl => '61 years');
RESET ROLE;
-- at the bounds it works
BEGIN;
SELECT wtcache.invalidate(array_fill('t'::text, ARRAY[100]));
SELECT wtcache.invalidate(ARRAY[repeat('x', 256)]);
ROLLBACK;
-- a superuser sets tighter bounds
SET wtcache.max_tags_per_call = 2;
SET wtcache.max_tag_length = 16;
SELECT wtcache.invalidate(ARRAY['a', 'b', 'c']);
SELECT wtcache.invalidate(ARRAY['seventeen-bytes-x']);
RESET wtcache.max_tags_per_call;
RESET wtcache.max_tag_length;

-- the secrets' settings: superusers and pg_read_all_settings members see
-- them; nobody can change them in a session
SET ROLE wtc_plain;
SHOW wtcache.redis_password_file;
SHOW wtcache.redis_sentinel_password_file;
SHOW wtcache.redis_user;
SHOW wtcache.redis_tls_key_file;
SELECT count(*) FROM pg_settings WHERE name LIKE 'wtcache.redis%';
SHOW wtcache.redis_tls_ca_file;
RESET ROLE;
SET ROLE wtc_monitor;
SHOW wtcache.redis_password_file;
SELECT name, setting FROM pg_settings
 WHERE name IN ('wtcache.redis_password_file', 'wtcache.redis_user',
                'wtcache.redis_sentinel_password_file', 'wtcache.redis_sentinel_user')
 ORDER BY name COLLATE "C";
RESET ROLE;
SET wtcache.redis_password_file = '/tmp/pw';
ALTER SYSTEM SET wtcache.redis_user = 'two words';
ALTER SYSTEM SET wtcache.redis_sentinel_user = 'two words';
SET ROLE wtc_plain;
ALTER SYSTEM SET wtcache.redis_password_file = '/tmp/pw';
RESET ROLE;

DROP ROLE wtc_plain;
DROP ROLE wtc_monitor;
