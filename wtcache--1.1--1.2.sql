/* wtcache--1.1--1.2.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.2'" to load this file. \quit

-- 1.2: safe in a database shared by roles that do not trust each other.

-- Queue rows the worker could not deliver (the rows of their table could
-- not be read) are set aside with the reason instead of stopping delivery
-- of everything else; they stay in the queue, so their keys stay pending
-- and reads of them go to the table.  discard: given up by the DBA, to be
-- acknowledged without a push (after the removal of the table's keys).
ALTER TABLE wtcache.queue ADD COLUMN set_aside text;
ALTER TABLE wtcache.queue ADD COLUMN discard boolean NOT NULL DEFAULT false;

CREATE FUNCTION wtcache.retry_set_aside(rel regclass DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_retry_set_aside' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.retry_set_aside(regclass) IS
    'deliver again the changes of a table (all tables you own when NULL) that the worker set aside; returns how many queue rows';

CREATE FUNCTION wtcache.discard_set_aside(rel regclass DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_discard_set_aside' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.discard_set_aside(regclass) IS
    'give up the changes of a table (all tables you own when NULL) that the worker set aside, and remove the table''s keys from Redis; returns how many queue rows';

-- Capture triggers fire whatever session_replication_role says (a logical
-- replication subscriber applies changes as replica): watch() creates them
-- ENABLE ALWAYS from 1.2 on; the triggers of existing watches follow.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT tg.tgrelid::regclass AS rel, tg.tgname
          FROM pg_catalog.pg_trigger tg
          JOIN wtcache.watched w ON w.rel OPERATOR(pg_catalog.=) tg.tgrelid
         WHERE tg.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['wtcache_capture_ins', 'wtcache_capture_upd',
                                                          'wtcache_capture_del', 'wtcache_truncate']::pg_catalog.name[])
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.rel, t.tgname);
    END LOOP;
END
$$;

-- Immutable and safe in parallel workers: it only looks at its argument's type.
ALTER FUNCTION wtcache._row_type_table(anyelement) PARALLEL SAFE;

-- Who sees what (issue 13, metadata).
--
-- A watched table's configuration, counters and metrics are shown only to
-- roles that can see the table: its owner's rights, or any privilege on
-- the table or one of its columns (information_schema.tables' rule), or
-- pg_read_all_stats (pg_monitor) -- see wtcache_can_see_table() in
-- src/stats.c, which read_stats() applies too.  worker_status() shows
-- other databases' workers only to pg_read_all_stats (in C).
--
-- wtcache.watched itself is no longer readable by PUBLIC; wtcache.status,
-- which reads it as its owner, filters it and now shows the watch's
-- configuration too.  Row-level security on wtcache.watched would keep the
-- table readable, but pg_dump dumps the policies of an extension's tables
-- as if they were the user's (CREATE POLICY then fails on restore:
-- citusdata/pg_cron#113), and a path reading it as the caller would see
-- rows silently missing; without SELECT such a path fails loudly.  wtcache
-- reads it as its owner (src/rights.c), the worker as a superuser.
REVOKE SELECT ON wtcache.watched FROM PUBLIC;

CREATE FUNCTION wtcache._can_see_table(rel regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'wtcache_can_see_table_sql' LANGUAGE C STRICT STABLE PARALLEL SAFE;
COMMENT ON FUNCTION wtcache._can_see_table(regclass) IS
    'whether the current role may see wtcache''s information about this table';

DROP VIEW wtcache.status;
CREATE VIEW wtcache.status AS
SELECT w.rel                                   AS table_name,
       w.mode,
       w.pushed + coalesce(q.pending, 0)       AS captured,
       w.pushed,
       coalesce(q.pending, 0)                  AS pending,
       clock_timestamp() - q.oldest            AS oldest_pending_age,
       w.errors,
       w.last_error,
       w.last_push,
       k.pid                                   AS worker_pid,
       k.state                                 AS worker_state,
       coalesce(k.connected, false)            AS connected,
       k.redis_address,
       k.last_error                            AS worker_last_error,
       coalesce(r.hits, 0)                     AS read_hits,
       coalesce(r.misses, 0)                   AS read_misses,
       coalesce(r.fallbacks, 0)                AS read_fallbacks,
       coalesce(r.bypasses, 0)                 AS read_bypasses,
       coalesce(r.fills, 0)                    AS read_fills,
       coalesce(r.fills_rejected, 0)           AS fills_rejected,
       coalesce(r.stampede_waits, 0)           AS stampede_waits,
       coalesce(r.table_reads, 0)              AS read_table_reads,
       k.redis_role,
       k.next_retry                            AS worker_next_retry,
       k.last_push                             AS worker_last_push,
       w.key_columns,
       w.tags,
       w.ttl,
       w.watched_at,
       coalesce(q.set_aside, 0)                AS set_aside,
       q.set_aside_reason
FROM wtcache.watched w
LEFT JOIN (
    SELECT qq.relid,
           sum(coalesce(cardinality(qq.keys), 1)
               / greatest(cardinality(ww.key_attnums), 1))::bigint AS pending,
           min(qq.enqueued_at) AS oldest,
           sum(coalesce(cardinality(qq.keys), 1)
               / greatest(cardinality(ww.key_attnums), 1))
               FILTER (WHERE qq.set_aside IS NOT NULL AND NOT qq.discard)::bigint AS set_aside,
           max(qq.set_aside) FILTER (WHERE NOT qq.discard) AS set_aside_reason
    FROM wtcache.queue qq
    JOIN wtcache.watched ww ON ww.rel = qq.relid
    GROUP BY qq.relid) q ON q.relid = w.rel
LEFT JOIN wtcache.worker_status() k
       ON k.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN wtcache.read_stats() r ON r.table_name = w.rel
-- evaluated as the querying role (a view changes the rights tables are
-- read with, not the current user)
WHERE wtcache._can_see_table(w.rel);
COMMENT ON VIEW wtcache.status IS
    'per watched table you can see: configuration, captured, pushed, pending and lag; with this database''s delivery worker';
GRANT SELECT ON wtcache.status TO PUBLIC;

-- The sql_drop handler becomes a C function that runs with the DDL user's
-- rights (not SECURITY DEFINER): see the end of src/ddl.c for why that
-- cannot be abused, and how it changes wtcache.watched as its owner.
DROP EVENT TRIGGER wtcache_sql_drop;
DROP FUNCTION wtcache._on_sql_drop();
CREATE FUNCTION wtcache._on_sql_drop() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'wtcache_on_sql_drop' LANGUAGE C;
REVOKE ALL ON FUNCTION wtcache._on_sql_drop() FROM PUBLIC;
CREATE EVENT TRIGGER wtcache_sql_drop ON sql_drop EXECUTE FUNCTION wtcache._on_sql_drop();

-- metrics(): the set-aside changes, per table, as a gauge to alert on.
CREATE OR REPLACE FUNCTION wtcache.metrics() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
WITH db AS (
    SELECT wtcache._prom_label(current_database()) AS name
), tables AS (
    SELECT format('database="%s",table="%s"', db.name,
                  wtcache._prom_label(s.table_name::text)) AS labels, s.*
      FROM wtcache.status s, db
), workers AS (
    SELECT format('database="%s"', wtcache._prom_label(d.datname)) AS labels, w.*
      FROM wtcache.worker_status() w
      JOIN pg_database d ON d.oid = w.database_oid
), q AS (
    SELECT format('database="%s"', db.name) AS labels, s.* FROM wtcache.query_stats() s, db
), metric(name, type, help, ord) AS (VALUES
    ('wtcache_captured_total', 'counter', 'Changed keys captured for a watched table', 1),
    ('wtcache_pushed_total', 'counter', 'Changed keys delivered to Redis', 2),
    ('wtcache_pending', 'gauge', 'Changed keys waiting in wtcache.queue', 3),
    ('wtcache_oldest_pending_seconds', 'gauge', 'Age of the oldest queued change (delivery lag)', 4),
    ('wtcache_table_errors_total', 'counter', 'Delivery errors of a watched table', 5),
    ('wtcache_read_hits_total', 'counter', 'Cached reads served from Redis', 6),
    ('wtcache_read_misses_total', 'counter', 'Cached reads that found no value in Redis', 7),
    ('wtcache_read_bypasses_total', 'counter', 'Cached reads sent to the table without asking Redis', 8),
    ('wtcache_read_fallbacks_total', 'counter', 'Cached reads sent to the table because Redis failed', 9),
    ('wtcache_read_fills_total', 'counter', 'Misses written to Redis', 10),
    ('wtcache_read_fills_rejected_total', 'counter', 'Fills refused as stale', 11),
    ('wtcache_worker_up', 'gauge', '1 while the delivery worker of a database is connected to Redis', 12),
    ('wtcache_worker_pushed_total', 'counter', 'Changed keys the worker delivered since it started', 13),
    ('wtcache_worker_batches_total', 'counter', 'Batches the worker delivered since it started', 14),
    ('wtcache_worker_resyncs_total', 'counter', 'Full resyncs after Redis lost data', 15),
    ('wtcache_worker_last_push_timestamp_seconds', 'gauge', 'When the worker last delivered a batch', 16),
    ('wtcache_reads_use_redis', 'gauge', '1 when cached reads of the database may use Redis', 17),
    ('wtcache_query_hits_total', 'counter', 'Cached query results served from Redis', 18),
    ('wtcache_query_misses_total', 'counter', 'Cached query results not in Redis', 19),
    ('wtcache_query_bypasses_total', 'counter', 'Cached queries run against the tables without asking Redis', 20),
    ('wtcache_query_runs_total', 'counter', 'Cached queries actually executed', 21),
    ('wtcache_redis_master', 'gauge', '1 while the worker is connected to a Redis master (0: a replica, or not connected)', 22),
    ('wtcache_set_aside', 'gauge', 'Changed keys set aside because the worker could not read their table (wtcache.retry_set_aside())', 23)
), sample(name, labels, value) AS (
    SELECT 'wtcache_captured_total', labels, captured::float8 FROM tables
    UNION ALL SELECT 'wtcache_pushed_total', labels, pushed FROM tables
    UNION ALL SELECT 'wtcache_pending', labels, pending FROM tables
    UNION ALL SELECT 'wtcache_oldest_pending_seconds', labels,
                     coalesce(extract(epoch FROM oldest_pending_age), 0) FROM tables
    UNION ALL SELECT 'wtcache_table_errors_total', labels, errors FROM tables
    UNION ALL SELECT 'wtcache_read_hits_total', labels, read_hits FROM tables
    UNION ALL SELECT 'wtcache_read_misses_total', labels, read_misses FROM tables
    UNION ALL SELECT 'wtcache_read_bypasses_total', labels, read_bypasses FROM tables
    UNION ALL SELECT 'wtcache_read_fallbacks_total', labels, read_fallbacks FROM tables
    UNION ALL SELECT 'wtcache_read_fills_total', labels, read_fills FROM tables
    UNION ALL SELECT 'wtcache_read_fills_rejected_total', labels, fills_rejected FROM tables
    UNION ALL SELECT 'wtcache_worker_up', labels, CASE WHEN connected THEN 1 ELSE 0 END FROM workers
    UNION ALL SELECT 'wtcache_worker_pushed_total', labels, pushed FROM workers
    UNION ALL SELECT 'wtcache_worker_batches_total', labels, batches FROM workers
    UNION ALL SELECT 'wtcache_worker_resyncs_total', labels, resyncs FROM workers
    UNION ALL SELECT 'wtcache_worker_last_push_timestamp_seconds', labels,
                     coalesce(extract(epoch FROM last_push), 0) FROM workers
    UNION ALL SELECT 'wtcache_reads_use_redis', labels, CASE WHEN reads_use_redis THEN 1 ELSE 0 END FROM workers
    UNION ALL SELECT 'wtcache_query_hits_total', labels, hits FROM q
    UNION ALL SELECT 'wtcache_query_misses_total', labels, misses FROM q
    UNION ALL SELECT 'wtcache_query_bypasses_total', labels, bypasses FROM q
    UNION ALL SELECT 'wtcache_query_runs_total', labels, runs FROM q
    UNION ALL SELECT 'wtcache_redis_master', labels, CASE WHEN redis_role = 'master' THEN 1 ELSE 0 END FROM workers
    UNION ALL SELECT 'wtcache_set_aside', labels, set_aside FROM tables
)
SELECT coalesce(string_agg(block, ''  ORDER BY ord), '')
  FROM (SELECT m.ord,
               format(E'# HELP %s %s\n# TYPE %s %s\n', m.name, m.help, m.name, m.type)
               || coalesce(string_agg(format(E'%s{%s} %s\n', s.name, s.labels, s.value), '' ORDER BY s.labels), '')
               AS block
          FROM metric m LEFT JOIN sample s ON s.name = m.name
         GROUP BY m.ord, m.name, m.help, m.type) b
$$;
COMMENT ON FUNCTION wtcache.metrics() IS
    'wtcache''s counters and gauges in the Prometheus text exposition format';
