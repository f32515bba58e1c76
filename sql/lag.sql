-- Delivery lag and hit ratios: the SQL surface.  The worker of this
-- instance reaches no Redis (test/regress.conf), so nothing is delivered
-- and no lag is measured; the behaviour is tested in test/t/048.
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE TABLE lag_t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('lag_t');

-- status gains four columns
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'wtcache.status'::regclass AND attnum > 0
   AND attname IN ('lag_p50', 'lag_p99', 'lag_max', 'read_hit_ratio')
 ORDER BY attnum DESC;

SELECT pg_get_function_result('wtcache.delivery_lag()'::regprocedure);

-- no read yet: the hit ratio is NULL, not 0; nothing delivered: no lag
SELECT table_name, read_hits, read_hit_ratio, lag_p50, lag_p99, lag_max
  FROM wtcache.status WHERE table_name = 'lag_t'::regclass;

-- this database's worker: no change delivered, every bucket empty; the
-- buckets are Prometheus's le values, +Inf last
SELECT count(*) AS rows, bool_and(p50 IS NULL AND p99 IS NULL AND max IS NULL) AS no_lag,
       min(changes_last_minute) AS last_minute, min(changes) AS changes,
       min(sum_seconds) AS sum_seconds,
       min(bucket_le::text) AS le, min(bucket_count::text) AS counts
  FROM wtcache.delivery_lag()
 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database());

-- Redis is unreachable: a read goes to the table, the ratio is 0; and so
-- for a cached query
SELECT wtcache.get('lag_t', '1');
SELECT count(*) FROM wtcache.query('SELECT id FROM lag_t');
SELECT read_hits, read_hit_ratio FROM wtcache.status WHERE table_name = 'lag_t'::regclass;

-- metrics(): one histogram family, its buckets ascending and +Inf last,
-- then _sum and _count; the hit ratio gauges
SELECT line
  FROM regexp_split_to_table(wtcache.metrics(), E'\n') WITH ORDINALITY AS m(line, n)
 WHERE line ~ '(wtcache_delivery_lag_|hit_ratio)'
   AND line !~ 'table="(?!public\.lag_t")'
 ORDER BY n;

-- a role that cannot see the table sees neither its row nor its ratio
CREATE ROLE lag_nobody;
SET ROLE lag_nobody;
SELECT count(*) FROM wtcache.status WHERE table_name = 'lag_t'::regclass;
SELECT count(*) FROM regexp_split_to_table(wtcache.metrics(), E'\n') AS line
 WHERE line LIKE 'wtcache_read_hit_ratio{%lag_t%';
-- but the database's lag, as worker_status(), is everyone's to see
SELECT count(*) FROM wtcache.delivery_lag()
 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database());
RESET ROLE;
DROP ROLE lag_nobody;

SELECT wtcache.unwatch('lag_t', purge => false);
DROP TABLE lag_t;
