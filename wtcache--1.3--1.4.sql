/* wtcache--1.3--1.4.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.4'" to load this file. \quit

-- 1.4: see it, measure it, bound it (issue 20): delivery lag percentiles
-- and hit ratios, a live consistency audit, the progress of long work,
-- replica acknowledgements, Redis under memory pressure.

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
