-- The live consistency audit's surface: its setting, its figures, and
-- where they show (status, metrics()).  Its behaviour needs Redis:
-- test/t/049_audit.pl.
\set VERBOSITY terse
SHOW wtcache.audit_rate;
-- reloadable, per server: not a session's to set
SET wtcache.audit_rate = 100;
ALTER SYSTEM SET wtcache.audit_rate = -1;
ALTER SYSTEM SET wtcache.audit_rate = 100001;
ALTER SYSTEM SET wtcache.audit_rate = 1000;
ALTER SYSTEM RESET wtcache.audit_rate;

-- counts only, no table's data: readable by anyone, like worker_status()
CREATE ROLE audit_reader;
SET ROLE audit_reader;
SELECT count(*) <= 1 AS one_row_at_most,
       coalesce(sum(checked + mismatched + missing + skipped + repaired), 0) AS nothing_while_off,
       bool_and(oldest_mismatch_at IS NULL) IS NOT false AS no_mismatch
  FROM wtcache.audit_stats();
RESET ROLE;
DROP ROLE audit_reader;
SELECT pg_catalog.pg_get_function_arguments('wtcache.audit_stats()'::regprocedure);

-- the status view's columns (the database's figures, on every table's row)
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'wtcache.status'::regclass AND attname LIKE 'audit%'
 ORDER BY attnum;

-- metrics(): the counters and the gauge, declared
SELECT m[1] AS metric, m[2] AS type
  FROM regexp_matches(wtcache.metrics(), '# TYPE (wtcache_audit_\w+) (\w+)', 'g') AS m;
