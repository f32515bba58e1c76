-- A watch of a partitioned table covers every partition (src/partition.c):
-- the triggers, what each partition DDL queues, and what is refused.
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE ev (id int, day int, note text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (1) TO (2);
CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (2) TO (3) PARTITION BY HASH (id);
CREATE TABLE ev_2a PARTITION OF ev_2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE ev_2b PARTITION OF ev_2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO ev SELECT i, 1 + i % 2, 'n' || i FROM generate_series(1, 10) i;
SELECT wtcache.watch('ev');

-- every partition, at any depth, captures with the parent's name; ALWAYS;
-- a leaf's own TRUNCATE trigger fires in replica mode (a subscriber's apply)
SELECT tgrelid::regclass, tgname, tgenabled FROM pg_trigger
 WHERE tgname LIKE 'wtcache%' ORDER BY tgrelid::regclass::text COLLATE "C", tgname COLLATE "C";
SELECT pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'ev_2b'::regclass AND tgname = 'wtcache_capture_upd';

-- a change in a partition is queued as the parent's, named by its key;
-- a row moved to another partition is one key (no worker runs here)
SELECT coalesce(max(id), 0) AS before FROM wtcache.queue \gset
UPDATE ev_1 SET note = 'x' WHERE id = 1;
UPDATE ev SET day = 2 WHERE id = 3;          -- from ev_1 to ev_2b
SELECT relid::regclass, keys FROM wtcache.queue WHERE id > :before ORDER BY id;

-- a partition created later: captured from its first change
CREATE TABLE ev_3 PARTITION OF ev FOR VALUES FROM (3) TO (4);
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ev_3'::regclass AND tgname LIKE 'wtcache_capture%' AND tgenabled = 'A';

-- ATTACH queues the rows the table brings, DETACH and TRUNCATE and DROP
-- of a partition those it takes away: each in the statement's transaction
CREATE TABLE ev_4 (LIKE ev);
INSERT INTO ev_4 VALUES (40, 4, 'a'), (41, 4, 'b');
SELECT max(id) AS before, 'ev'::regclass::oid AS ev_oid FROM wtcache.queue \gset
BEGIN;
ALTER TABLE ev ATTACH PARTITION ev_4 FOR VALUES FROM (4) TO (5);
SELECT relid::regclass, keys FROM wtcache.queue WHERE id > :before AND keys IS NOT NULL ORDER BY id;
ROLLBACK;
BEGIN;
ALTER TABLE ev DETACH PARTITION ev_1;
SELECT relid::regclass, keys FROM wtcache.queue WHERE id > :before AND keys IS NOT NULL ORDER BY id;
ROLLBACK;
BEGIN;
TRUNCATE ev_2a;
SELECT relid::regclass, pg_catalog.array_length(keys, 1) FROM wtcache.queue WHERE id > :before AND keys IS NOT NULL ORDER BY id;
ROLLBACK;
BEGIN;
DROP TABLE ev_2;
SELECT relid::regclass, pg_catalog.array_length(keys, 1) FROM wtcache.queue WHERE id > :before AND keys IS NOT NULL ORDER BY id;
ROLLBACK;
-- TRUNCATE of the parent: its trigger removes every key at once
BEGIN;
TRUNCATE ev;
SELECT relid::regclass, keys, table_key FROM wtcache.queue WHERE id > :before ORDER BY id;
ROLLBACK;
-- so does DROP of the parent: no partition is read for nothing
BEGIN;
DROP TABLE ev;
SELECT relid = :ev_oid AS ev, keys, table_key FROM wtcache.queue WHERE id > :before ORDER BY id;
ROLLBACK;

-- reads and functions take the parent
SELECT wtcache.redis_key('ev', '3', '1');
SELECT * FROM wtcache.get_row(NULL::ev, '3', '2');

-- one watch per tree
SELECT wtcache.watch('ev_1');
SELECT wtcache.watch('ev_2');
SELECT wtcache.unwatch('ev');
SELECT wtcache.watch('ev_2a');
SELECT wtcache.watch('ev');
SELECT wtcache.unwatch('ev_2a');

-- a table watched on its own that joins a watched tree leaves its watch
SELECT wtcache.watch('ev');
CREATE TABLE ev_5 (LIKE ev INCLUDING INDEXES);
SELECT wtcache.watch('ev_5');
ALTER TABLE ev ATTACH PARTITION ev_5 FOR VALUES FROM (5) TO (6);
SELECT rel FROM wtcache.watched ORDER BY rel::text COLLATE "C";

-- partitions wtcache cannot keep
CREATE UNLOGGED TABLE ev_6 PARTITION OF ev FOR VALUES FROM (6) TO (7);
SELECT rel FROM wtcache.watched ORDER BY rel::text COLLATE "C";
SELECT wtcache.watch('ev');
DROP TABLE ev_6;
SELECT wtcache.watch('ev');
ALTER TABLE ev_5 SET UNLOGGED;
SELECT rel FROM wtcache.watched ORDER BY rel::text COLLATE "C";
ALTER TABLE ev_5 SET LOGGED;

-- legacy inheritance: refused both ways
CREATE TABLE base (id int PRIMARY KEY);
CREATE TABLE child () INHERITS (base);
SELECT wtcache.watch('base');
DROP TABLE child;
SELECT wtcache.watch('base');
CREATE TABLE child () INHERITS (base);
CREATE TABLE child (id int PRIMARY KEY);
ALTER TABLE child INHERIT base;
-- a child may be watched: it is its own table
SELECT wtcache.unwatch('base');
ALTER TABLE child INHERIT base;
SELECT wtcache.watch('child');

DROP TABLE ev, base CASCADE;
SELECT count(*) FROM wtcache.watched;
