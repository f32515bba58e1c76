-- Capture: what reaches wtcache.queue, and what never does.  The regression
-- instance's worker points at a closed port, so the queue only grows.
\set VERBOSITY default
\set SHOW_CONTEXT never
DELETE FROM wtcache.queue;  -- what earlier tests left (the keys of tables they dropped)
CREATE TABLE t (id int PRIMARY KEY, v text);
SELECT wtcache.watch('t');
CREATE VIEW q AS SELECT relid::regclass AS rel, keys, keys IS NULL AS whole_table
                   FROM wtcache.queue ORDER BY id;

-- (a new watch first queues the removal of keys an earlier watch may have
-- left in Redis: the whole_table row)
INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');
SELECT * FROM q;
DELETE FROM wtcache.queue;

-- a rolled-back transaction leaves nothing
BEGIN;
INSERT INTO t VALUES (4, 'rolled back');
UPDATE t SET v = 'rolled back' WHERE id = 1;
ROLLBACK;
SELECT * FROM q;

-- savepoints: only what survives is queued
BEGIN;
UPDATE t SET v = 'kept' WHERE id = 1;
SAVEPOINT s1;
UPDATE t SET v = 'undone' WHERE id = 2;
SAVEPOINT s2;
INSERT INTO t VALUES (5, 'undone too');
ROLLBACK TO s1;
INSERT INTO t VALUES (6, 'after rollback to');
SAVEPOINT s3;
INSERT INTO t VALUES (7, 'released');
RELEASE s3;
COMMIT;
SELECT * FROM q;
DELETE FROM wtcache.queue;

-- an UPDATE that changes the key queues the old and the new key
UPDATE t SET id = 60 WHERE id = 6;
-- DELETE, multi-row UPDATE, COPY
DELETE FROM t WHERE id = 7;
UPDATE t SET v = v || '!' WHERE id IN (1, 2);
COPY t FROM stdin;
8	copied
9	copied
\.
SELECT * FROM q;
DELETE FROM wtcache.queue;

-- TRUNCATE queues the whole table
TRUNCATE t;
SELECT * FROM q;
DELETE FROM wtcache.queue;

-- big statements are written in chunks of 1000 keys
INSERT INTO t SELECT g, 'bulk' FROM generate_series(1, 2500) g;
SELECT rel, cardinality(keys) FROM q;
DELETE FROM wtcache.queue;

-- a chunk written inside a savepoint that is rolled back goes with it,
-- and never takes the parent's keys along
BEGIN;
UPDATE t SET v = 'parent' WHERE id <= 10;
SAVEPOINT big;
UPDATE t SET v = 'child' WHERE id > 1000;
ROLLBACK TO big;
COMMIT;
SELECT rel, cardinality(keys) FROM q;
DELETE FROM wtcache.queue;

BEGIN;
UPDATE t SET v = 'parent' WHERE id <= 10;
SAVEPOINT big;
UPDATE t SET v = 'child' WHERE id > 1000;
RELEASE big;
COMMIT;
SELECT rel, sum(cardinality(keys)) FROM q GROUP BY rel;
DELETE FROM wtcache.queue;

-- PL/pgSQL exception blocks are subtransactions too
DO $$
BEGIN
  FOR i IN 1..3 LOOP
    BEGIN
      UPDATE t SET v = 'in block' WHERE id = i;
      IF i = 2 THEN RAISE EXCEPTION 'undo %', i; END IF;
    EXCEPTION WHEN raise_exception THEN NULL;
    END;
  END LOOP;
END $$;
SELECT * FROM q;
DELETE FROM wtcache.queue;

-- keys of any type: composite, text with separators, session-dependent types
CREATE TABLE odd (k text NOT NULL, at timestamptz NOT NULL, n numeric NOT NULL,
                  payload jsonb, PRIMARY KEY (k, at, n));
SELECT wtcache.watch('odd');
SET timezone = 'America/New_York';
INSERT INTO odd VALUES ('a:b{c}%d e', '2024-01-02 03:04:05+00', 1.50, '{"x": 1}');
SELECT rel, keys FROM q;
DELETE FROM wtcache.queue;
RESET timezone;

-- writers need no rights on wtcache's own tables
CREATE ROLE wtc_writer;
GRANT SELECT, INSERT, UPDATE ON t TO wtc_writer;
SET ROLE wtc_writer;
INSERT INTO t VALUES (5000, 'from a plain role');
SELECT * FROM wtcache.queue;
RESET ROLE;
SELECT * FROM q;
DELETE FROM wtcache.queue;

-- the queue row is written without INSERT's executor, with the table's
-- defaults; a queue whose columns someone changed gets a plain INSERT
INSERT INTO t VALUES (5003, 'direct');
SELECT count(*) AS queued, bool_and(enqueued_at > now() - interval '1 hour') AS stamped,
       bool_and(NOT per_table AND NOT discard AND set_aside IS NULL AND key_width = 1) AS defaults,
       bool_and(id <= (SELECT last_value FROM wtcache.queue_id_seq)) AS ids_from_sequence
FROM wtcache.queue;
ALTER TABLE wtcache.queue ADD COLUMN note text DEFAULT 'from the default';
INSERT INTO t VALUES (5001, 'with a column added to the queue');
SELECT note FROM wtcache.queue ORDER BY id;
ALTER TABLE wtcache.queue DROP COLUMN note;
INSERT INTO t VALUES (5002, 'with a column dropped from the queue');
SELECT * FROM q;
DELETE FROM wtcache.queue;
-- ... and so does a queue given a trigger, a rule or another column type,
-- also in a session that wrote directly before
CREATE TABLE queue_audit (what text);
CREATE FUNCTION queue_audit() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN INSERT INTO public.queue_audit VALUES ('trigger'); RETURN NEW; END$$;
CREATE TRIGGER queue_audit AFTER INSERT ON wtcache.queue FOR EACH ROW EXECUTE FUNCTION queue_audit();
INSERT INTO t VALUES (5004, 'with a trigger on the queue');
DROP TRIGGER queue_audit ON wtcache.queue;
CREATE RULE queue_audit AS ON INSERT TO wtcache.queue DO ALSO INSERT INTO public.queue_audit VALUES ('rule');
INSERT INTO t VALUES (5005, 'with a rule on the queue');
DROP RULE queue_audit ON wtcache.queue;
ALTER TABLE wtcache.queue ALTER COLUMN key_width TYPE numeric;
INSERT INTO t VALUES (5006, 'with another type of a queue column');
ALTER TABLE wtcache.queue ALTER COLUMN key_width TYPE int2;
SELECT * FROM queue_audit;
SELECT rel, keys, key_width FROM q JOIN wtcache.queue USING (keys);
DELETE FROM wtcache.queue;
DROP TABLE queue_audit;
DROP FUNCTION queue_audit();

-- the trigger functions refuse to be misused
SELECT wtcache._capture_row();
SELECT wtcache._capture_when('t', 'x', 1);
SELECT wtcache._capture_when('t', 'u', 1);
CREATE TABLE wrong (id int PRIMARY KEY);
CREATE TRIGGER wrong_before BEFORE INSERT ON wrong FOR EACH ROW EXECUTE FUNCTION wtcache._capture_row('1');
INSERT INTO wrong VALUES (1);

-- a table that is no longer watched is not captured
SELECT wtcache.unwatch('t', purge => false);
INSERT INTO t VALUES (6000, 'unwatched');
SELECT count(*) FROM wtcache.queue;

DROP VIEW q;
DROP TABLE t, odd, wrong;
DROP ROLE wtc_writer;
