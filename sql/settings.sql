-- Settings, the fence, and the status view with Redis out of reach.
\set VERBOSITY default
\set SHOW_CONTEXT never
SHOW wtcache.key_prefix;
SHOW wtcache.batch_size;

-- invalid values are refused with a reason and an example
ALTER SYSTEM SET wtcache.redis_url = 'http://127.0.0.1:6379';
ALTER SYSTEM SET wtcache.redis_url = 'redis://127.0.0.1:99999';
ALTER SYSTEM SET wtcache.redis_url = 'redis://:secret@:6379';
ALTER SYSTEM SET wtcache.redis_url = 'redis://h:6379/x';
ALTER SYSTEM SET wtcache.key_prefix = 'a{b}';
-- empty is allowed (1.3: key templates then give the application's own names)
ALTER SYSTEM SET wtcache.key_prefix = '';
ALTER SYSTEM RESET wtcache.key_prefix;
ALTER SYSTEM SET wtcache.batch_size = 0;
ALTER SYSTEM SET wtcache.redis_sentinels = '127.0.0.1';
ALTER SYSTEM SET wtcache.redis_sentinels = '127.0.0.1:26379; 127.0.0.1:26380';
ALTER SYSTEM SET wtcache.redis_cluster_nodes = '127.0.0.1:0';
ALTER SYSTEM SET wtcache.redis_cluster_nodes = '[::1:7000';
-- valid lists are accepted (and taken back)
ALTER SYSTEM SET wtcache.redis_sentinels = '127.0.0.1:26379, [::1]:26380 localhost:26381';
ALTER SYSTEM RESET wtcache.redis_sentinels;
ALTER SYSTEM SET wtcache.redis_cluster_nodes = '127.0.0.1:7000,127.0.0.1:7001';
ALTER SYSTEM RESET wtcache.redis_cluster_nodes;
-- a valid one is accepted (and taken back)
ALTER SYSTEM SET wtcache.redis_url = 'redis://user:pa%40ss@[::1]:6380/2';
ALTER SYSTEM RESET wtcache.redis_url;
-- TLS: rediss:// and its settings
ALTER SYSTEM SET wtcache.redis_url = 'rediss://redis.internal:6380';
ALTER SYSTEM RESET wtcache.redis_url;
ALTER SYSTEM SET wtcache.redis_url = 'redisss://redis.internal:6380';
ALTER SYSTEM SET wtcache.redis_tls_server_name = 'two words';
ALTER SYSTEM SET wtcache.redis_tls_verify = 'maybe';
ALTER SYSTEM SET wtcache.redis_tls_min_protocol_version = 'TLSv1.1';
SHOW wtcache.redis_tls_verify;
SHOW wtcache.redis_tls_min_protocol_version;
SET wtcache.redis_tls_verify = 'none';
-- reloadable settings cannot be changed per session
SET wtcache.redis_url = 'redis://127.0.0.1:6379';
SET wtcache.batch_size = 5;
SET wtcache.max_databases = 4;

-- the password never shows to ordinary roles
CREATE ROLE wtc_reader;
SET ROLE wtc_reader;
SHOW wtcache.redis_url;
SELECT count(*) FROM pg_settings WHERE name = 'wtcache.redis_url';
RESET ROLE;

-- with Redis out of reach, writes commit and the fence times out
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('t');
INSERT INTO t VALUES (1, 'pending');
SELECT wtcache.wait('200 milliseconds');
SELECT wtcache.wait('-1 second');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT wtcache.wait('1 second');
ROLLBACK;
-- an empty queue is not enough: the worker must confirm that Redis
-- holds what was delivered, and Redis is out of reach
DELETE FROM wtcache.queue;
SELECT wtcache.wait('100 milliseconds');

INSERT INTO t VALUES (3, 'pending');
SELECT table_name, captured, pushed, pending, oldest_pending_age > '0' AS lagging,
       connected, worker_state IN ('connecting', 'waiting to retry') AS retrying,
       redis_address
  FROM wtcache.status;
SET ROLE wtc_reader;
SELECT table_name, pending FROM wtcache.status;
SELECT count(*) FROM wtcache.queue;
RESET ROLE;

DELETE FROM wtcache.queue;
DROP TABLE t;
DROP ROLE wtc_reader;
