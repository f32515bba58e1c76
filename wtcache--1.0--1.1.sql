/* wtcache--1.0--1.1.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.1'" to load this file. \quit

-- The worker's Redis role, and when it retries after a failure.
DROP VIEW wtcache.status;
DROP FUNCTION wtcache.worker_status();
CREATE FUNCTION wtcache.worker_status(
    OUT database_oid oid, OUT pid integer, OUT state text, OUT connected boolean,
    OUT redis_address text, OUT last_error text, OUT last_error_at timestamptz,
    OUT last_push timestamptz, OUT pushed bigint, OUT batches bigint,
    OUT resyncs bigint, OUT reads_use_redis boolean,
    OUT redis_role text, OUT next_retry timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_worker_status' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.worker_status() IS
    'delivery workers of this cluster, one row per database that has wtcache';

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
       k.last_push                             AS worker_last_push
FROM wtcache.watched w
LEFT JOIN (
    SELECT qq.relid,
           sum(coalesce(cardinality(qq.keys), 1)
               / greatest(cardinality(ww.key_attnums), 1))::bigint AS pending,
           min(qq.enqueued_at) AS oldest
    FROM wtcache.queue qq
    JOIN wtcache.watched ww ON ww.rel = qq.relid
    GROUP BY qq.relid) q ON q.relid = w.rel
LEFT JOIN wtcache.worker_status() k
       ON k.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN wtcache.read_stats() r ON r.table_name = w.rel;
COMMENT ON VIEW wtcache.status IS
    'per watched table: captured, pushed, pending and lag; with this database''s delivery worker';
GRANT SELECT ON wtcache.status TO PUBLIC;

-- A label value in the Prometheus text format: backslash, double quote and
-- newline escaped.
CREATE FUNCTION wtcache._prom_label(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT replace(replace(replace(v, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
$$;

-- Everything wtcache.status and the statistics functions show, in the
-- Prometheus text exposition format (version 0.0.4), for a scrape through
-- postgres_exporter, a sidecar, or COPY (SELECT wtcache.metrics()) TO ...
CREATE FUNCTION wtcache.metrics() RETURNS text
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
    ('wtcache_redis_master', 'gauge', '1 while the worker is connected to a Redis master (0: a replica, or not connected)', 22)
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
GRANT EXECUTE ON FUNCTION wtcache.metrics() TO PUBLIC;

-- Dropping a watched table, or only its capture triggers, removes its keys
-- from Redis too (and, for the triggers, the watch, with a warning): a
-- table nobody captures must not be served from Redis.
CREATE FUNCTION wtcache._forget_table(relid oid, schema_name text, table_name text)
RETURNS boolean
    AS 'MODULE_PATHNAME', 'wtcache_forget_table' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION wtcache._forget_table(oid, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION wtcache._on_sql_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d record;
    relid oid;
BEGIN
    FOR d IN
        SELECT w.rel::oid AS relid, o.address_names
          FROM wtcache.watched w
          JOIN pg_event_trigger_dropped_objects() o
            ON o.classid = 'pg_class'::regclass AND o.objsubid = 0 AND o.objid = w.rel::oid
    LOOP
        PERFORM wtcache._forget_table(d.relid, d.address_names[1], d.address_names[2]);
        DELETE FROM wtcache.watched WHERE rel::oid = d.relid;
    END LOOP;

    FOR d IN
        SELECT o.address_names
          FROM pg_event_trigger_dropped_objects() o
         WHERE o.object_type = 'trigger'
           AND o.address_names[3] IN ('wtcache_capture_ins', 'wtcache_capture_upd',
                                      'wtcache_capture_del', 'wtcache_truncate')
    LOOP
        relid := to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]));
        CONTINUE WHEN relid IS NULL
                   OR NOT EXISTS (SELECT 1 FROM wtcache.watched WHERE rel::oid = relid);
        IF wtcache._forget_table(relid, d.address_names[1], d.address_names[2]) THEN
            DELETE FROM wtcache.watched WHERE rel::oid = relid;
            RAISE WARNING 'wtcache: table %.% is no longer watched: its capture trigger % was dropped',
                quote_ident(d.address_names[1]), quote_ident(d.address_names[2]), d.address_names[3]
                USING DETAIL = 'Its keys are removed from Redis; its changes are no longer captured.',
                      HINT = format('Run wtcache.watch(%L) to watch it again.',
                                    format('%I.%I', d.address_names[1], d.address_names[2]));
        END IF;
    END LOOP;
END
$$;
