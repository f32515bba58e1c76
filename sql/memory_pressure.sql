-- Redis under memory pressure (issue 20): the SQL surface.  The temp
-- instance points wtcache at a closed port: Redis is unreachable, so only
-- what needs no Redis answers, and the rest fails with a clear error.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE mp (id int PRIMARY KEY, v text);
CREATE TABLE mp_empty (id int PRIMARY KEY, v text);
CREATE TABLE mp_unwatched (id int PRIMARY KEY);
SELECT wtcache.watch('mp');
SELECT wtcache.watch('mp_empty');
INSERT INTO mp VALUES (1, 'a'), (2, 'b');

-- redis_bytes_per_row: arguments
SELECT * FROM wtcache.redis_bytes_per_row(NULL);
SELECT * FROM wtcache.redis_bytes_per_row('mp', NULL);
SELECT * FROM wtcache.redis_bytes_per_row('mp', 0);
SELECT * FROM wtcache.redis_bytes_per_row('mp', -5);
SELECT * FROM wtcache.redis_bytes_per_row('mp', 10001);
SELECT * FROM wtcache.redis_bytes_per_row('mp_unwatched');
SELECT * FROM wtcache.redis_bytes_per_row(4000000000::oid::regclass);
-- no rows: nothing to ask Redis
SELECT * FROM wtcache.redis_bytes_per_row('mp_empty', 10);
-- rows, and Redis unreachable
SELECT * FROM wtcache.redis_bytes_per_row('mp');

-- only for roles that may read the whole table, as the caller (row security)
CREATE ROLE mp_reader;
CREATE ROLE mp_nobody;
GRANT USAGE ON SCHEMA wtcache TO mp_reader, mp_nobody;
GRANT SELECT (id) ON mp TO mp_nobody;
GRANT SELECT ON mp TO mp_reader;
ALTER TABLE mp ENABLE ROW LEVEL SECURITY;
CREATE POLICY mp_none ON mp FOR SELECT TO mp_reader USING (false);
SET ROLE mp_nobody;
SELECT * FROM wtcache.redis_bytes_per_row('mp');
RESET ROLE;
SET ROLE mp_reader;
-- sees no row: samples none, counts none, asks Redis nothing
SELECT * FROM wtcache.redis_bytes_per_row('mp');
RESET ROLE;

-- redis_memory() and its columns in status and metrics()
SELECT pg_get_function_arguments('wtcache.redis_memory()'::regprocedure);
SELECT redis_memory_state, redis_oom_since, redis_oom_episodes, redis_oom_refusals,
       redis_maxmemory, redis_maxmemory_policy, redis_marker_evictions
  FROM wtcache.status WHERE false;
SELECT m[1] AS metric
  FROM regexp_matches(wtcache.metrics(), '# TYPE (wtcache_redis_(?:oom|marker)\S*) ', 'g') m
 ORDER BY m[1] COLLATE "C";

DROP POLICY mp_none ON mp;
DROP TABLE mp, mp_empty, mp_unwatched;
REVOKE USAGE ON SCHEMA wtcache FROM mp_reader, mp_nobody;
DROP ROLE mp_reader, mp_nobody;
