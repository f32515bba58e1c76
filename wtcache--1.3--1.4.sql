/* wtcache--1.3--1.4.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.4'" to load this file. \quit

-- 1.4: see it, measure it, bound it (issue 20): delivery lag percentiles
-- and hit ratios, a live consistency audit, the progress of long work,
-- replica acknowledgements, Redis under memory pressure.

-- Part: the live consistency audit (wtcache.audit_rate).  The worker's figures
-- per database, counts only (no table's data), shown like worker_status().
CREATE FUNCTION wtcache.audit_stats(
    OUT database_oid oid, OUT checked bigint, OUT mismatched bigint,
    OUT missing bigint, OUT skipped bigint, OUT repaired bigint,
    OUT oldest_mismatch_at timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_audit_stats' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.audit_stats() IS
    'the live consistency audit of each database''s worker: keys compared, confirmed mismatches and missing keys, in-flight keys skipped, repairs seen, the oldest unresolved mismatch';

-- (each part adds its objects above this line, in its own section)

-- status and metrics(), recreated with every part's columns (the end of
-- the script, where the parts' versions are merged)

-- audit: status gains audit_checked, audit_mismatched, audit_missing,
-- audit_oldest_mismatch_age (the database's figures, on every row)
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
       q.set_aside_reason,
       w.columns,
       w.exclude_columns,
       w.format,
       w.key_template,
       coalesce(a.checked, 0)                  AS audit_checked,
       coalesce(a.mismatched, 0)               AS audit_mismatched,
       coalesce(a.missing, 0)                  AS audit_missing,
       clock_timestamp() - a.oldest_mismatch_at AS audit_oldest_mismatch_age
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
LEFT JOIN wtcache.audit_stats() a
       ON a.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
-- evaluated as the querying role (a view changes the rights tables are
-- read with, not the current user)
WHERE wtcache._can_see_table(w.rel);
COMMENT ON VIEW wtcache.status IS
    'per watched table you can see: configuration, captured, pushed, pending and lag; with this database''s delivery worker';
GRANT SELECT ON wtcache.status TO PUBLIC;

-- audit: metrics() gains the audit's counters and the oldest mismatch's age
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
), audit AS (
    SELECT format('database="%s"', wtcache._prom_label(d.datname)) AS labels, a.*
      FROM wtcache.audit_stats() a
      JOIN pg_database d ON d.oid = a.database_oid
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
    ('wtcache_set_aside', 'gauge', 'Changed keys set aside because the worker could not read their table (wtcache.retry_set_aside())', 23),
    ('wtcache_audit_checked_total', 'counter', 'Keys the live audit compared between Redis and the tables (wtcache.audit_rate)', 24),
    ('wtcache_audit_mismatched_total', 'counter', 'Keys the audit confirmed Redis held another value for than the row', 25),
    ('wtcache_audit_missing_total', 'counter', 'Keys the audit confirmed missing from Redis although their table keeps every row there', 26),
    ('wtcache_audit_skipped_total', 'counter', 'Sampled keys the audit passed by because a change of them was on its way', 27),
    ('wtcache_audit_oldest_mismatch_seconds', 'gauge', 'Age of the oldest confirmed mismatch not yet found right again (0: none)', 28)
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
    UNION ALL SELECT 'wtcache_audit_checked_total', labels, checked FROM audit
    UNION ALL SELECT 'wtcache_audit_mismatched_total', labels, mismatched FROM audit
    UNION ALL SELECT 'wtcache_audit_missing_total', labels, missing FROM audit
    UNION ALL SELECT 'wtcache_audit_skipped_total', labels, skipped FROM audit
    UNION ALL SELECT 'wtcache_audit_oldest_mismatch_seconds', labels,
                     coalesce(extract(epoch FROM clock_timestamp() - oldest_mismatch_at), 0) FROM audit
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
