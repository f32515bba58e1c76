/* wtcache--1.0.sql */

\echo Use "CREATE EXTENSION wtcache" to load this file. \quit

-- What is watched, and how.  Written only through watch()/unwatch(), which
-- check ownership of the watched table and then act as the extension owner.
CREATE TABLE wtcache.watched (
    rel          regclass PRIMARY KEY,
    key_columns  name[]   NOT NULL,
    key_attnums  int2[]   NOT NULL,
    tags         text[]   NOT NULL DEFAULT '{}',
    ttl          interval,
    mode         text     NOT NULL DEFAULT 'write_through'
                 CHECK (mode IN ('write_through', 'invalidate')),
    pushed       bigint   NOT NULL DEFAULT 0,
    errors       bigint   NOT NULL DEFAULT 0,
    last_error   text,
    last_push    timestamptz,
    watched_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE wtcache.watched IS
    'tables whose committed changes wtcache delivers to Redis; change it with wtcache.watch()/wtcache.unwatch()';

-- The durable queue of changed keys.  Capture triggers buffer keys in memory
-- and write them here in chunks, inside the writing transaction, so an entry
-- commits, rolls back (savepoints included) and survives a crash exactly like
-- the change it records.  The id is taken while the writer still holds the
-- row locks of every key in the chunk, so for any one key ids follow commit
-- order: the id is the version Redis sees.  keys holds the key column values
-- flattened (key_width values per key); NULL keys means "the whole table"
-- (TRUNCATE, unwatch with purge), and then table_key names it.  per_table
-- marks rows queued by resync/warm: until they are delivered, cached reads
-- of that table read the table (see src/pending.c).  tags, for tables with
-- tag templates, holds each key's tags in key order as a count followed by
-- that many tag names.  A row with relid 0 is wtcache.invalidate(): no
-- keys, and tags holds one such group.
CREATE SEQUENCE wtcache.queue_id_seq;
CREATE TABLE wtcache.queue (
    id           bigint PRIMARY KEY DEFAULT nextval('wtcache.queue_id_seq'),
    relid        oid    NOT NULL,
    keys         text[],
    table_key    text,
    key_width    int2,
    per_table    boolean NOT NULL DEFAULT false,
    tags         text[],
    enqueued_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER SEQUENCE wtcache.queue_id_seq OWNED BY wtcache.queue.id;
COMMENT ON TABLE wtcache.queue IS
    'captured changes not yet acknowledged by Redis (one row per chunk of keys)';

-- Watch configuration survives pg_dump/pg_restore; the queue does not need to:
-- a restored database is resynced by the generation marker check.
SELECT pg_catalog.pg_extension_config_dump('wtcache.watched', '');

GRANT USAGE ON SCHEMA wtcache TO PUBLIC;
REVOKE ALL ON wtcache.watched, wtcache.queue, wtcache.queue_id_seq FROM PUBLIC;
GRANT SELECT ON wtcache.watched TO PUBLIC;

-- Capture triggers.  Their arguments are the key column numbers.
CREATE FUNCTION wtcache._capture_row() RETURNS trigger
    AS 'MODULE_PATHNAME', 'wtcache_capture_row' LANGUAGE C;
CREATE FUNCTION wtcache._capture_truncate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'wtcache_capture_truncate' LANGUAGE C;
-- The row triggers capture in their WHEN clause and then answer false, so
-- PostgreSQL never queues an event (see src/capture.c); _capture_row is
-- their function in name, and captures too if ever called.
CREATE FUNCTION wtcache._capture_when(rel regclass, op "char", VARIADIC keys "any")
RETURNS boolean
    AS 'MODULE_PATHNAME', 'wtcache_capture_when' LANGUAGE C VOLATILE;
-- The same for tables with tag templates: after the nkeys key values (old,
-- then new for 'u') come the tag columns' values (old, then new for 'u');
-- templates name those columns by position, {1}, {2}...
CREATE FUNCTION wtcache._capture_when_tagged(rel regclass, op "char", nkeys int2,
    templates text[], VARIADIC args "any")
RETURNS boolean
    AS 'MODULE_PATHNAME', 'wtcache_capture_when_tagged' LANGUAGE C VOLATILE;

CREATE FUNCTION wtcache.watch(
    rel   regclass,
    key   text[]   DEFAULT NULL,
    tags  text[]   DEFAULT '{}',
    ttl   interval DEFAULT NULL,
    mode  text     DEFAULT 'write_through',
    warm  boolean  DEFAULT false)
RETURNS void
    AS 'MODULE_PATHNAME', 'wtcache_watch' LANGUAGE C CALLED ON NULL INPUT;
COMMENT ON FUNCTION wtcache.watch(regclass, text[], text[], interval, text, boolean) IS
    'start delivering committed changes of a table to Redis; re-running it changes the options';

CREATE FUNCTION wtcache.unwatch(rel regclass, purge boolean DEFAULT true)
RETURNS void
    AS 'MODULE_PATHNAME', 'wtcache_unwatch' LANGUAGE C STRICT;
COMMENT ON FUNCTION wtcache.unwatch(regclass, boolean) IS
    'stop delivering a table''s changes; with purge, remove its rows from Redis';

CREATE FUNCTION wtcache.resync(rel regclass DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_resync' LANGUAGE C CALLED ON NULL INPUT;
COMMENT ON FUNCTION wtcache.resync(regclass) IS
    'repair Redis from a watched table (all watched tables you own when NULL): remove its keys, then push every row; returns the number of rows';

CREATE FUNCTION wtcache.warm(rel regclass)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_warm' LANGUAGE C STRICT;
COMMENT ON FUNCTION wtcache.warm(regclass) IS
    'push every existing row of a watched table to Redis; returns the number of rows';

CREATE FUNCTION wtcache.verify(rel regclass, sample integer DEFAULT NULL,
    OUT key text[], OUT redis_key text, OUT problem text,
    OUT in_table jsonb, OUT in_redis text)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_verify' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.verify(regclass, integer) IS
    'compare Redis with a watched table (every row and key, or a random sample of rows): the keys that differ, and how';

CREATE FUNCTION wtcache.redis_key(rel regclass, VARIADIC key text[])
RETURNS text
    AS 'MODULE_PATHNAME', 'wtcache_redis_key' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION wtcache.redis_key(regclass, text[]) IS
    'the Redis key that holds the row with this key (one text value per key column, in key order)';

CREATE FUNCTION wtcache.wait(timeout interval DEFAULT '10 seconds')
RETURNS boolean
    AS 'MODULE_PATHNAME', 'wtcache_wait' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.wait(interval) IS
    'wait until every change committed before the call is in Redis; false at timeout';

CREATE FUNCTION wtcache.get(rel regclass, VARIADIC key text[])
RETURNS jsonb
    AS 'MODULE_PATHNAME', 'wtcache_get' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.get(regclass, text[]) IS
    'the row with this key as jsonb (without "_v"), from Redis when it is current, else from the table; NULL if there is none';

CREATE FUNCTION wtcache.get_many(rel regclass, keys text[])
RETURNS TABLE (key text[], "row" jsonb)
    AS 'MODULE_PATHNAME', 'wtcache_get_many' LANGUAGE C STRICT VOLATILE ROWS 100;
COMMENT ON FUNCTION wtcache.get_many(regclass, text[]) IS
    'rows of many keys in one Redis round trip, in the order given: a one-dimensional array for a one-column key, else one array row per key';

-- The typed form: get_row(NULL::tbl, '42') returns a tbl, or NULL.
CREATE FUNCTION wtcache._row_type_table(anyelement) RETURNS regclass
    AS 'MODULE_PATHNAME', 'wtcache_row_type_table' LANGUAGE C IMMUTABLE;
CREATE FUNCTION wtcache.get_row(rel_type anyelement, VARIADIC key text[])
RETURNS anyelement
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN j IS NULL THEN NULL ELSE jsonb_populate_record(rel_type, j) END
      FROM wtcache.get(wtcache._row_type_table(rel_type), VARIADIC key) AS j
$$;
COMMENT ON FUNCTION wtcache.get_row(anyelement, text[]) IS
    'wtcache.get() as the table''s row type: get_row(NULL::tbl, key...)';

CREATE FUNCTION wtcache.invalidate(tags text[])
RETURNS void
    AS 'MODULE_PATHNAME', 'wtcache_invalidate' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.invalidate(text[]) IS
    'invalidate these tags (cached query results and application caches that depend on them) when the calling transaction commits';

CREATE FUNCTION wtcache.query(sql text, params text[] DEFAULT '{}',
    tags text[] DEFAULT '{}', ttl interval DEFAULT NULL)
RETURNS SETOF jsonb
    AS 'MODULE_PATHNAME', 'wtcache_query' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.query(text, text[], text[], interval) IS
    'the rows of a read-only query as jsonb, from Redis while no table it reads (nor any of tags) changed, else run and cached per role';

CREATE FUNCTION wtcache.query_key(sql text, params text[] DEFAULT '{}',
    tags text[] DEFAULT '{}', OUT key text, OUT tag_keys text[])
    AS 'MODULE_PATHNAME', 'wtcache_query_key' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION wtcache.query_key(text, text[], text[]) IS
    'the Redis key of the calling role''s cached result of a query, and the tag version keys it depends on';

CREATE FUNCTION wtcache.read_stats(
    OUT table_name regclass, OUT hits bigint, OUT misses bigint,
    OUT fallbacks bigint, OUT bypasses bigint, OUT fills bigint,
    OUT fills_rejected bigint, OUT stampede_waits bigint, OUT table_reads bigint)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_read_stats' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.read_stats() IS
    'cached read counters of this database since the server started, one row per table';

CREATE FUNCTION wtcache.query_stats(
    OUT hits bigint, OUT misses bigint, OUT fallbacks bigint, OUT bypasses bigint,
    OUT fills bigint, OUT fills_rejected bigint, OUT stampede_waits bigint,
    OUT runs bigint)
    AS 'MODULE_PATHNAME', 'wtcache_query_stats' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.query_stats() IS
    'cached query counters of this database since the server started: runs counts the queries actually executed';

CREATE FUNCTION wtcache.worker_status(
    OUT database_oid oid, OUT pid integer, OUT state text, OUT connected boolean,
    OUT redis_address text, OUT last_error text, OUT last_error_at timestamptz,
    OUT last_push timestamptz, OUT pushed bigint, OUT batches bigint,
    OUT resyncs bigint, OUT reads_use_redis boolean)
RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'wtcache_worker_status' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION wtcache.worker_status() IS
    'delivery workers of this cluster, one row per database that has wtcache';

-- Asks the launcher to start this database's worker now (used by CREATE
-- EXTENSION below and by resync; commits that capture changes do it too).
CREATE FUNCTION wtcache._start_worker() RETURNS void
    AS 'MODULE_PATHNAME', 'wtcache_start_worker' LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION wtcache._start_worker() FROM PUBLIC;

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
       coalesce(r.table_reads, 0)              AS read_table_reads
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

-- A view reads its tables with its owner's rights: anyone may watch progress.
GRANT SELECT ON wtcache.status TO PUBLIC;

-- A dropped watched table leaves no configuration behind.
CREATE FUNCTION wtcache._on_sql_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM wtcache.watched w
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass
       AND d.objsubid = 0
       AND d.objid = w.rel::oid;
END
$$;
REVOKE ALL ON FUNCTION wtcache._on_sql_drop() FROM PUBLIC;
CREATE EVENT TRIGGER wtcache_sql_drop ON sql_drop EXECUTE FUNCTION wtcache._on_sql_drop();

SELECT wtcache._start_worker();
