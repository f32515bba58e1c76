-- wtcache.progress and warm() with a predicate.  The worker cannot reach
-- Redis here (test/regress.conf), so committed operations stay in their
-- delivering phase with nothing delivered: what each step listed is
-- deterministic.
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- the views' columns
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'wtcache.progress'::regclass AND attnum > 0 ORDER BY attnum;
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'wtcache.progress_finished'::regclass AND attnum > 0 ORDER BY attnum;
-- the one-argument form of 1.3 is the same function, with a default
SELECT pg_get_function_arguments('wtcache.warm'::regproc);

CREATE TABLE pr_items (id int PRIMARY KEY, day int, secret boolean DEFAULT false);
INSERT INTO pr_items SELECT g, g % 10, g % 7 = 0 FROM generate_series(1, 100) g;
SELECT wtcache.watch('pr_items');

-- listed in an open transaction: waiting for its commit, total exact
BEGIN;
SELECT wtcache.warm('pr_items', 'day >= 7');
SELECT operation, table_name, phase, rows_total, total_is_estimate, rows_queued,
       rows_delivered, pid = pg_backend_pid() AS by_me, eta IS NULL AS no_eta
  FROM wtcache.progress WHERE table_name = 'pr_items'::regclass;
COMMIT;
-- committed: the worker's to deliver
SELECT operation, phase, rows_total, rows_queued, rows_delivered,
       pid = pg_backend_pid() AS by_me
  FROM wtcache.progress WHERE table_name = 'pr_items'::regclass;

-- rolled back, or in a savepoint rolled back: never shown again
BEGIN;
SELECT wtcache.warm('pr_items');
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT wtcache.resync('pr_items');
ROLLBACK TO SAVEPOINT s;
SELECT count(*) FROM wtcache.progress WHERE table_name = 'pr_items'::regclass;
COMMIT;
SELECT operation, rows_queued FROM wtcache.progress
 WHERE table_name = 'pr_items'::regclass ORDER BY started_at;

-- the one-argument call, and resync
SELECT wtcache.warm('pr_items');
SELECT wtcache.resync('pr_items');
SELECT operation, rows_total, rows_queued FROM wtcache.progress
 WHERE table_name = 'pr_items'::regclass ORDER BY started_at;
SELECT wtcache.warm(NULL, 'true');

-- predicates: one boolean expression over the table's columns
\set VERBOSITY default
SELECT wtcache.warm('pr_items', 'id <= 5 OR id = 50');
SELECT wtcache.warm('pr_items', 'day = 3 -- a comment ends with its line');
SELECT wtcache.warm('pr_items', 'true; DROP TABLE pr_items');
SELECT wtcache.warm('pr_items', 'true) UNION SELECT 1 FROM pg_authid WHERE (true');
SELECT wtcache.warm('pr_items', 'id IN (SELECT 1)');
SELECT wtcache.warm('pr_items', 'EXISTS (SELECT FROM pg_authid)');
SELECT wtcache.warm('pr_items', 'true FROM pg_authid');
SELECT wtcache.warm('pr_items', 'id > 1 AS x');
SELECT wtcache.warm('pr_items', 'id > 1, true');
SELECT wtcache.warm('pr_items', '');
SELECT wtcache.warm('pr_items', 'true /* unclosed');
SELECT wtcache.warm('pr_items', 'nope > 1');
SELECT wtcache.warm('pr_items', 'id');
SELECT wtcache.warm('pr_items', 'count(*) > 1');
SELECT wtcache.warm('pr_items', 'pr_items.id = 1');
SELECT * FROM pr_items WHERE id = 0;	-- the table is still there
\set VERBOSITY terse

-- as a table's owner who is no superuser: a function it may not execute
-- is refused, and row-level security applies to the predicate's read
CREATE FUNCTION pr_guarded(int) RETURNS boolean LANGUAGE sql AS 'SELECT true';
REVOKE ALL ON FUNCTION pr_guarded(int) FROM PUBLIC;
CREATE ROLE pr_owner;
GRANT CREATE ON SCHEMA public TO pr_owner;
CREATE ROLE pr_nobody;
SET ROLE pr_owner;
CREATE TABLE pr_owned (id int PRIMARY KEY, secret boolean);
INSERT INTO pr_owned SELECT g, g % 4 = 0 FROM generate_series(1, 40) g;
SELECT wtcache.watch('pr_owned');
SELECT wtcache.warm('pr_owned', 'pr_guarded(id)');
ALTER TABLE pr_owned ENABLE ROW LEVEL SECURITY;
ALTER TABLE pr_owned FORCE ROW LEVEL SECURITY;
CREATE POLICY pr_visible ON pr_owned USING (NOT secret);
SELECT wtcache.warm('pr_owned', 'true');
SELECT wtcache.warm('pr_owned', 'secret');
SELECT operation, rows_queued FROM wtcache.progress WHERE table_name = 'pr_owned'::regclass
 ORDER BY started_at;
-- not the other table's
SELECT count(*) FROM wtcache.progress WHERE table_name = 'pr_items'::regclass;
RESET ROLE;

-- a role that cannot see a table does not see its operations
SET ROLE pr_nobody;
SELECT count(*) FROM wtcache.progress;
SELECT count(*) FROM wtcache.operations();
RESET ROLE;
SELECT count(*) > 0 AS superuser_sees FROM wtcache.progress;

-- the setting
SHOW wtcache.bulk_rate;
ALTER SYSTEM SET wtcache.bulk_rate = -1;

SELECT wtcache.unwatch('pr_items', purge => false);
DROP TABLE pr_items;
SET ROLE pr_owner;
SELECT wtcache.unwatch('pr_owned', purge => false);
DROP TABLE pr_owned;
RESET ROLE;
DROP FUNCTION pr_guarded(int);
REVOKE CREATE ON SCHEMA public FROM pr_owner;
DROP ROLE pr_owner;
DROP ROLE pr_nobody;
