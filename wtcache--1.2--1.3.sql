/* wtcache--1.2--1.3.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.3'" to load this file. \quit

-- 1.3: the application's own key names and value shapes (issue 19).

-- The projection: which columns of a watched table reach Redis, by name
-- (names survive pg_dump and pg_restore; attribute numbers shift when the
-- table had dropped columns, and an exclusion list must never come to
-- mean another column).  RENAME COLUMN renames them here too (src/ddl.c).
-- At most one of the two is set; neither: every column.  columns: those
-- and the key columns; exclude_columns: every column but those (also
-- columns added later).
ALTER TABLE wtcache.watched ADD COLUMN columns name[];
ALTER TABLE wtcache.watched ADD COLUMN exclude_columns name[];
ALTER TABLE wtcache.watched ADD CONSTRAINT watched_one_projection
    CHECK (columns IS NULL OR exclude_columns IS NULL);

-- The value format: 'json', the row's JSON in a string, as before 1.3;
-- 'hash', a Redis hash with a field per column and "_v" (src/keyspace.h),
-- so that a reader can HGET one column.
ALTER TABLE wtcache.watched ADD COLUMN format text NOT NULL DEFAULT 'json';
ALTER TABLE wtcache.watched ADD CONSTRAINT watched_format
    CHECK (format IN ('json', 'hash'));

-- The key template: the application's names for the table's rows in
-- Redis, literal text and {column} placeholders of its key columns
-- ('user:{id}'); NULL: the default layout <prefix>{<db>:<schema>.<table>:
-- <key>} (src/keyspace.h).  Placeholders are column names, which RENAME
-- COLUMN renames here too (src/ddl.c).
ALTER TABLE wtcache.watched ADD COLUMN key_template text;
ALTER TABLE wtcache.watched ADD CONSTRAINT watched_key_template
    CHECK (key_template <> '');

-- A whole-table row (TRUNCATE, purge, the rewrite of a table's keys) names
-- the keys to remove by its table_key and, for a table with a key template
-- when it was queued, by that template: a changed template removes the
-- keys of the old one.
ALTER TABLE wtcache.queue ADD COLUMN key_template text;

DROP FUNCTION wtcache.watch(regclass, text[], text[], interval, text, boolean);
CREATE FUNCTION wtcache.watch(
    rel             regclass,
    key             text[]   DEFAULT NULL,
    tags            text[]   DEFAULT '{}',
    ttl             interval DEFAULT NULL,
    mode            text     DEFAULT 'write_through',
    warm            boolean  DEFAULT false,
    columns         text[]   DEFAULT NULL,
    exclude_columns text[]   DEFAULT NULL,
    format          text     DEFAULT NULL,
    key_template    text     DEFAULT NULL)
RETURNS void
    AS 'MODULE_PATHNAME', 'wtcache_watch' LANGUAGE C CALLED ON NULL INPUT;
COMMENT ON FUNCTION wtcache.watch(regclass, text[], text[], interval, text, boolean, text[], text[], text, text) IS
    'start delivering committed changes of a table to Redis; re-running it changes the options';

-- status shows the projection, the format and the key template.
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
       w.key_template
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
