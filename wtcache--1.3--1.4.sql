/* wtcache--1.3--1.4.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.4'" to load this file. \quit

-- 1.4: see it, measure it, bound it (issue 20): delivery lag percentiles
-- and hit ratios, a live consistency audit, the progress of long work,
-- replica acknowledgements, Redis under memory pressure.

-- ---------------------------------------------------------------------
-- Part: delivery lag percentiles and hit ratios (src/lag.c)
-- ---------------------------------------------------------------------

-- Commit to Redis's acknowledgement, per database worker: p50 / p99 / max
-- over the last minute, and the cumulative Prometheus buckets since the
-- worker started (bucket_le ends with Infinity, bucket_count is
-- cumulative: its last element equals changes).  Shown to whoever sees the
-- worker in worker_status(): the connected database's to everyone, the
-- others' to pg_read_all_stats.
CREATE FUNCTION wtcache.delivery_lag(
    OUT database_oid oid, OUT p50 interval, OUT p99 interval, OUT max interval,
    OUT changes_last_minute bigint, OUT bucket_le float8[], OUT bucket_count bigint[],
    OUT sum_seconds float8, OUT changes bigint, OUT since timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_delivery_lag' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.delivery_lag() IS
    'delivery lag (commit to Redis acknowledgement) per database worker: percentiles over the last minute, histogram since the worker started';

-- ---------------------------------------------------------------------
-- Replica acknowledgements (issue 20): wtcache.redis_wait_replicas makes
-- a batch count as delivered only once that many Redis replicas have it
-- (WAIT).  replica_acks() shows, per database worker, the settings in
-- force, the last count and the timeouts (src/replicas.c); status and
-- metrics() show them (recreated at the end of this script).
-- ---------------------------------------------------------------------
CREATE FUNCTION wtcache.replica_acks(
    OUT database_oid oid, OUT wait_replicas integer, OUT timeout_action text,
    OUT state text, OUT acked_replicas integer, OUT waiting_since timestamptz,
    OUT waits bigint, OUT wait_timeouts bigint, OUT accepted bigint,
    OUT wait_seconds float8)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_replica_acks' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.replica_acks() IS
    'per database worker: Redis replicas asked to acknowledge each batch (WAIT), the last count, timeouts, and whether delivery waits for them';

-- ---------------------------------------------------------------------
-- Redis under memory pressure (issue 20, part "oom"): src/memory.c
-- ---------------------------------------------------------------------

-- What the worker knows of Redis's memory: whether Redis refuses its
-- writes for want of memory now (state 'out of memory', since when), how
-- often it did, maxmemory / maxmemory-policy as INFO said at the last
-- connection (NULL: unknown, e.g. an ACL without INFO), and how often an
-- allkeys-* policy probably evicted the generation marker (repaired by a
-- resync, as any loss: a missing marker cannot be told from lost data).  Other
-- databases' workers only for pg_read_all_stats, as worker_status().
CREATE FUNCTION wtcache.redis_memory(
    OUT database_oid oid,
    OUT state text,
    OUT oom_since timestamptz,
    OUT oom_episodes bigint,
    OUT oom_refusals bigint,
    OUT maxmemory bigint,
    OUT maxmemory_policy text,
    OUT marker_evictions bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_redis_memory' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.redis_memory() IS
    'Redis''s memory as the delivery workers see it: out-of-memory episodes, maxmemory and its policy';

-- Bytes a watched table's rows take in Redis, measured (MEMORY USAGE of
-- the keys of a sample of its rows), for sizing maxmemory.  Runs as the
-- caller, who needs SELECT on the table (row security applies).
CREATE FUNCTION wtcache.redis_bytes_per_row(
    rel regclass,
    sample integer DEFAULT 100,
    OUT sampled integer,
    OUT cached integer,
    OUT bytes_per_row float8,
    OUT table_rows bigint,
    OUT estimated_bytes bigint)
    RETURNS record
    AS 'MODULE_PATHNAME', 'wtcache_redis_bytes_per_row' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.redis_bytes_per_row(regclass, integer) IS
    'average Redis memory of a watched table''s row (MEMORY USAGE of a sample of its keys), and that times its rows';

-- ---------------------------------------------------------------------
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
-- ---------------------------------------------------------------------
-- Progress and control of long work (issue 20, part "progress"):
-- wtcache.progress, warm() with a predicate; the setting
-- wtcache.bulk_rate needs no SQL object.
-- ---------------------------------------------------------------------

-- warm() takes an optional predicate: a new signature, so the function is
-- made again (the one-argument call keeps working through the default).
DROP FUNCTION wtcache.warm(regclass);
CREATE FUNCTION wtcache.warm(rel regclass, predicate text DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_warm' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.warm(regclass, text) IS
    'push the existing rows of a watched table to Redis, or those the predicate (a boolean expression over its columns, evaluated as you) selects; returns the number of rows';

-- The worker lets live changes pass long work's queue rows, never a
-- whole-table entry (TRUNCATE, a purge).  Its second claim cursor resumes
-- where the last one ended; this index finds, at once, a whole-table entry
-- that became visible behind that point (src/batch.c).  Only rows with no
-- keys are in it: the capture's rows never are.
CREATE INDEX queue_whole_table_idx ON wtcache.queue (id) WHERE keys IS NULL;

-- Every long operation of this database, running or finished, on tables
-- the caller can see (the filter is in C, per caller, as read_stats()'s).
CREATE FUNCTION wtcache.operations(
    OUT pid integer,
    OUT operation text,
    OUT table_name regclass,
    OUT phase text,
    OUT rows_total bigint,
    OUT total_is_estimate boolean,
    OUT rows_queued bigint,
    OUT rows_delivered bigint,
    OUT started_at timestamptz,
    OUT rate double precision,
    OUT eta interval,
    OUT finished_at timestamptz)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_operations' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.operations() IS
    'long operations (warm, resync, repair, purge, requeue) of this database on tables you can see, running and recently finished';

CREATE VIEW wtcache.progress AS
SELECT pid, operation, table_name, phase, rows_total, total_is_estimate,
       rows_queued, rows_delivered, started_at, rate, eta
FROM wtcache.operations()
WHERE finished_at IS NULL;
COMMENT ON VIEW wtcache.progress IS
    'one row per long operation running in this database (warm, resync, repair, purge, requeue), as pg_stat_progress_* do for PostgreSQL''s own';
GRANT SELECT ON wtcache.progress TO PUBLIC;

CREATE VIEW wtcache.progress_finished AS
SELECT pid, operation, table_name, rows_total, rows_queued, rows_delivered,
       started_at, finished_at, rate
FROM wtcache.operations()
WHERE finished_at IS NOT NULL;
COMMENT ON VIEW wtcache.progress_finished IS
    'the last long operations that finished in this database (kept in shared memory until their entry is needed, and not across a restart)';
GRANT SELECT ON wtcache.progress_finished TO PUBLIC;

-- (each part adds its objects above this line, in its own section)


-- ---------------------------------------------------------------------
-- status and metrics(), recreated last (each part appends its columns and
-- metrics; see the parts' sections above)
-- ---------------------------------------------------------------------

-- status: the database's delivery lag on each table's row (lag part), and
-- each table's read hit ratio (NULL before its first cached read).
-- And replica acknowledgements (the WAIT part).
-- And what the worker knows of Redis's memory (the oom part).
-- And the live audit's figures (the audit part).
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
       l.p50                                   AS lag_p50,
       l.p99                                   AS lag_p99,
       l.max                                   AS lag_max,
       CASE WHEN r.hits + r.misses + r.bypasses + r.fallbacks > 0
            THEN r.hits::float8 / (r.hits + r.misses + r.bypasses + r.fallbacks)
       END                                     AS read_hit_ratio,
       a.wait_replicas                         AS redis_wait_replicas,
       a.timeout_action                        AS redis_wait_timeout_action,
       a.state                                 AS replica_ack_state,
       a.acked_replicas                        AS replica_acks_last,
       a.waiting_since                         AS replica_waiting_since,
       a.wait_timeouts                         AS replica_wait_timeouts,
       m.state                                 AS redis_memory_state,
       m.oom_since                             AS redis_oom_since,
       m.oom_episodes                          AS redis_oom_episodes,
       m.oom_refusals                          AS redis_oom_refusals,
       m.maxmemory                             AS redis_maxmemory,
       m.maxmemory_policy                      AS redis_maxmemory_policy,
       m.marker_evictions                      AS redis_marker_evictions,
       coalesce(au.checked, 0)                 AS audit_checked,
       coalesce(au.mismatched, 0)              AS audit_mismatched,
       coalesce(au.missing, 0)                 AS audit_missing,
       clock_timestamp() - au.oldest_mismatch_at AS audit_oldest_mismatch_age
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
LEFT JOIN wtcache.delivery_lag() l
       ON l.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN wtcache.replica_acks() a
       ON a.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN wtcache.redis_memory() m
       ON m.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
LEFT JOIN wtcache.audit_stats() au
       ON au.database_oid = (SELECT oid FROM pg_database WHERE datname = current_database())
-- evaluated as the querying role (a view changes the rights tables are
-- read with, not the current user)
WHERE wtcache._can_see_table(w.rel);
COMMENT ON VIEW wtcache.status IS
    'per watched table you can see: configuration, captured, pushed, pending and lag; with this database''s delivery worker';
GRANT SELECT ON wtcache.status TO PUBLIC;

-- metrics(): the delivery lag histogram and its last minute's percentiles,
-- read and query hit ratios (lag part).
-- metrics(): replica acknowledgements.
-- metrics(): Redis's memory.
-- metrics(): the live audit.
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
), lag AS (
    SELECT format('database="%s"', wtcache._prom_label(d.datname)) AS labels, l.*
      FROM wtcache.delivery_lag() l
      JOIN pg_database d ON d.oid = l.database_oid
), hist(name, labels, pos, line) AS (
    -- a histogram's lines, in the order the text format wants them: the
    -- buckets by ascending le (+Inf last), then _sum and _count
    SELECT 'wtcache_delivery_lag_seconds', lag.labels, b.pos,
           format(E'wtcache_delivery_lag_seconds_bucket{%s,le="%s"} %s\n', lag.labels,
                  CASE WHEN b.le = 'Infinity'::float8 THEN '+Inf' ELSE b.le::text END, b.n)
      FROM lag, unnest(lag.bucket_le, lag.bucket_count) WITH ORDINALITY b(le, n, pos)
    UNION ALL SELECT 'wtcache_delivery_lag_seconds', labels, 1000001,
                     format(E'wtcache_delivery_lag_seconds_sum{%s} %s\n', labels, sum_seconds) FROM lag
    UNION ALL SELECT 'wtcache_delivery_lag_seconds', labels, 1000002,
                     format(E'wtcache_delivery_lag_seconds_count{%s} %s\n', labels, changes) FROM lag
), acks AS (
    SELECT format('database="%s"', wtcache._prom_label(d.datname)) AS labels, a.*
      FROM wtcache.replica_acks() a
      JOIN pg_database d ON d.oid = a.database_oid
), mem AS (
    SELECT format('database="%s"', wtcache._prom_label(d.datname)) AS labels, m.*
      FROM wtcache.redis_memory() m
      JOIN pg_database d ON d.oid = m.database_oid
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
    ('wtcache_delivery_lag_seconds', 'histogram', 'Time from commit to Redis''s acknowledgement of each delivered change, since the worker started', 24),
    ('wtcache_read_hit_ratio', 'gauge', 'Share of cached reads served from Redis: hits / (hits + misses + bypasses + fallbacks)', 25),
    ('wtcache_query_hit_ratio', 'gauge', 'Share of cached query calls served from Redis: hits / (hits + misses + bypasses + fallbacks)', 26),
    ('wtcache_delivery_lag_p50_seconds', 'gauge', 'Median delivery lag over the last minute (absent: nothing delivered in it)', 27),
    ('wtcache_delivery_lag_p99_seconds', 'gauge', '99th percentile of the delivery lag over the last minute', 28),
    ('wtcache_delivery_lag_max_seconds', 'gauge', 'Longest delivery lag over the last minute', 29),
    ('wtcache_redis_wait_replicas', 'gauge', 'Redis replicas that must acknowledge a batch before it counts as delivered (wtcache.redis_wait_replicas)', 30),
    ('wtcache_replica_acks_last', 'gauge', 'Fewest replicas any Redis master counted in the last WAIT', 31),
    ('wtcache_replica_waiting', 'gauge', '1 while the last WAIT counted too few replicas (retry: delivery stalls; accept: batches go unprotected)', 32),
    ('wtcache_replica_waits_total', 'counter', 'Rounds of WAIT the worker sent', 33),
    ('wtcache_replica_wait_timeouts_total', 'counter', 'Rounds of WAIT that counted too few replicas within wtcache.redis_wait_timeout', 34),
    ('wtcache_replica_wait_accepted_total', 'counter', 'Batches delivered with too few replica acknowledgements (wtcache.redis_wait_timeout_action = accept)', 35),
    ('wtcache_replica_wait_seconds_total', 'counter', 'Time the worker spent waiting for replicas', 36),
    ('wtcache_redis_oom', 'gauge', '1 while Redis refuses the worker''s writes for want of memory (maxmemory)', 37),
    ('wtcache_redis_oom_episodes_total', 'counter', 'Episodes of Redis refusing writes for want of memory since the worker started', 38),
    ('wtcache_redis_oom_refusals_total', 'counter', 'Deliveries Redis refused for want of memory since the worker started', 39),
    ('wtcache_redis_marker_evictions_total', 'counter', 'Generation markers found missing while an allkeys-* policy was evicting (each repaired by a resync)', 40),
    ('wtcache_audit_checked_total', 'counter', 'Keys the live audit compared between Redis and the tables (wtcache.audit_rate)', 41),
    ('wtcache_audit_mismatched_total', 'counter', 'Keys the audit confirmed Redis held another value for than the row', 42),
    ('wtcache_audit_missing_total', 'counter', 'Keys the audit confirmed missing from Redis although their table keeps every row there', 43),
    ('wtcache_audit_skipped_total', 'counter', 'Sampled keys the audit passed by because a change of them was on its way', 44),
    ('wtcache_audit_oldest_mismatch_seconds', 'gauge', 'Age of the oldest confirmed mismatch not yet found right again (0: none)', 45)
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
    UNION ALL SELECT 'wtcache_read_hit_ratio', labels, read_hit_ratio FROM tables
                     WHERE read_hit_ratio IS NOT NULL
    UNION ALL SELECT 'wtcache_query_hit_ratio', labels,
                     hits::float8 / (hits + misses + bypasses + fallbacks) FROM q
                     WHERE hits + misses + bypasses + fallbacks > 0
    UNION ALL SELECT 'wtcache_delivery_lag_p50_seconds', labels, extract(epoch FROM p50) FROM lag
                     WHERE p50 IS NOT NULL
    UNION ALL SELECT 'wtcache_delivery_lag_p99_seconds', labels, extract(epoch FROM p99) FROM lag
                     WHERE p99 IS NOT NULL
    UNION ALL SELECT 'wtcache_delivery_lag_max_seconds', labels, extract(epoch FROM max) FROM lag
                     WHERE max IS NOT NULL
    UNION ALL SELECT 'wtcache_redis_wait_replicas', labels, wait_replicas FROM acks
    UNION ALL SELECT 'wtcache_replica_acks_last', labels, acked_replicas FROM acks WHERE acked_replicas IS NOT NULL
    UNION ALL SELECT 'wtcache_replica_waiting', labels, CASE WHEN waiting_since IS NOT NULL THEN 1 ELSE 0 END FROM acks
    UNION ALL SELECT 'wtcache_replica_waits_total', labels, waits FROM acks
    UNION ALL SELECT 'wtcache_replica_wait_timeouts_total', labels, wait_timeouts FROM acks
    UNION ALL SELECT 'wtcache_replica_wait_accepted_total', labels, accepted FROM acks
    UNION ALL SELECT 'wtcache_replica_wait_seconds_total', labels, wait_seconds FROM acks
    UNION ALL SELECT 'wtcache_redis_oom', labels, CASE WHEN oom_since IS NOT NULL THEN 1 ELSE 0 END FROM mem
    UNION ALL SELECT 'wtcache_redis_oom_episodes_total', labels, oom_episodes FROM mem
    UNION ALL SELECT 'wtcache_redis_oom_refusals_total', labels, oom_refusals FROM mem
    UNION ALL SELECT 'wtcache_redis_marker_evictions_total', labels, marker_evictions FROM mem
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
               -- (a metric without samples, such as a gauge of an empty
               -- minute or the histogram, whose lines are hist's, has none)
               || coalesce(string_agg(format(E'%s{%s} %s\n', s.name, s.labels, s.value), '' ORDER BY s.labels)
                            FILTER (WHERE s.name IS NOT NULL), '')
               || coalesce((SELECT string_agg(h.line, '' ORDER BY h.labels, h.pos)
                              FROM hist h WHERE h.name = m.name), '')
               AS block
          FROM metric m LEFT JOIN sample s ON s.name = m.name
         GROUP BY m.ord, m.name, m.help, m.type) b
$$;
COMMENT ON FUNCTION wtcache.metrics() IS
    'wtcache''s counters and gauges in the Prometheus text exposition format';

