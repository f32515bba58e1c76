-- Replica acknowledgements (wtcache.redis_wait_replicas): the settings'
-- validation, and where status and metrics() show them.  Redis is out of
-- reach here, so no WAIT was ever sent.
\set VERBOSITY default
\set SHOW_CONTEXT never
SHOW wtcache.redis_wait_replicas;
SHOW wtcache.redis_wait_timeout;
SHOW wtcache.redis_wait_timeout_action;

-- refused, with the reason
ALTER SYSTEM SET wtcache.redis_wait_timeout = 0;
ALTER SYSTEM SET wtcache.redis_wait_timeout = '2min';
ALTER SYSTEM SET wtcache.redis_wait_replicas = -1;
ALTER SYSTEM SET wtcache.redis_wait_replicas = 65;
ALTER SYSTEM SET wtcache.redis_wait_timeout_action = 'drop';
-- reloadable, not per session
SET wtcache.redis_wait_replicas = 1;
SET wtcache.redis_wait_timeout_action = 'accept';

-- accepted (and taken back)
ALTER SYSTEM SET wtcache.redis_wait_replicas = 1;
ALTER SYSTEM SET wtcache.redis_wait_timeout = '250ms';
ALTER SYSTEM SET wtcache.redis_wait_timeout_action = 'accept';
ALTER SYSTEM RESET wtcache.redis_wait_replicas;
ALTER SYSTEM RESET wtcache.redis_wait_timeout;
ALTER SYSTEM RESET wtcache.redis_wait_timeout_action;

-- this database's worker: off, nothing counted
SELECT wait_replicas, timeout_action, state IN ('off', 'stopped') AS off,
       acked_replicas, waiting_since, waits, wait_timeouts, accepted, wait_seconds
  FROM wtcache.replica_acks()
 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database());

-- status: per watched table, the worker's figures
CREATE TABLE rp_t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('rp_t');
SELECT redis_wait_replicas, redis_wait_timeout_action, replica_ack_state IN ('off', 'stopped') AS off,
       replica_acks_last, replica_waiting_since, replica_wait_timeouts
  FROM wtcache.status WHERE table_name = 'rp_t'::regclass;

-- metrics(): the gauges and counters, with this database's label
SELECT line COLLATE "C"
  FROM regexp_split_to_table(wtcache.metrics(), E'\n') AS line
 WHERE line ~ '^(# TYPE )?wtcache_(redis_wait|replica)'
 ORDER BY 1;

SELECT wtcache.unwatch('rp_t');
DROP TABLE rp_t;
