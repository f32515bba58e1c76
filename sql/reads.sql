-- Cached reads: the SQL surface and its errors.  The temp instance points
-- wtcache at a closed port, so nothing is delivered: a new watch queues the
-- removal of keys an earlier watch may have left in Redis, and until that is
-- done every read of the table goes to the table without asking Redis.
-- (Redis failures and read_fallback = off are tested in test/t/007_reads.pl.)
\set VERBOSITY default
\set SHOW_CONTEXT never
SET TimeZone = 'America/New_York';
CREATE TABLE item (id bigint PRIMARY KEY, name text NOT NULL, price numeric(8,2),
                   added timestamptz DEFAULT '2026-03-04 05:06:07+00');
INSERT INTO item (id, name, price) VALUES (1, 'one', 1.50), (2, 'two', NULL), (3, 'a:b{c}%', 3);
CREATE TABLE pair (org text, n int, v text, PRIMARY KEY (org, n));
INSERT INTO pair VALUES ('acme', 1, 'x'), ('acme', 2, 'y');

-- a table that is not watched
SELECT wtcache.get('item', '1');
SELECT wtcache.watch('item');
SELECT wtcache.watch('pair');

-- rows come back as jsonb without "_v", rendered in UTC whatever the session says
SELECT wtcache.get('item', '1');
SELECT wtcache.get('item', '3');
SELECT wtcache.get('item', '0003') = wtcache.get('item', '3') AS same_row;
SELECT wtcache.get('item', '99') IS NULL AS no_row;
SELECT (wtcache.get_row(NULL::item, '2')).*;
SELECT wtcache.get_row(NULL::item, '99') IS NULL AS no_row;
SELECT * FROM wtcache.get_many('item', ARRAY['2', '99', '1']);
SELECT * FROM wtcache.get_many('item', '{}');
SELECT * FROM wtcache.get_many('pair', ARRAY[['acme', '2'], ['acme', '1'], ['none', '1']]);
SELECT wtcache.get('pair', 'acme', '1');

-- bad input
SELECT wtcache.get('item', '1', '2');
SELECT wtcache.get('pair', 'acme');
SELECT wtcache.get('item', NULL::text);
SELECT wtcache.get('item', 'not a number');
SELECT * FROM wtcache.get_many('pair', ARRAY['acme', '1']);
SELECT * FROM wtcache.get_many('pair', ARRAY[['acme', '1', 'x']]);
SELECT wtcache.get_row(NULL::int, '1');

-- privileges: whole rows need SELECT on the table or on every column
CREATE ROLE wtc_nobody;
CREATE ROLE wtc_some_columns;
GRANT SELECT (id, name) ON item TO wtc_some_columns;
CREATE ROLE wtc_all_columns;
GRANT SELECT (id, name, price, added) ON item TO wtc_all_columns;
SET ROLE wtc_nobody;
SELECT wtcache.get('item', '1');
SELECT * FROM wtcache.get_many('item', ARRAY['1']);
SET ROLE wtc_some_columns;
SELECT wtcache.get('item', '1');
SET ROLE wtc_all_columns;
SELECT wtcache.get('item', '1')->>'name' AS name;
RESET ROLE;

-- the pending removal keeps reads away from Redis, even with fallback off
SET wtcache.read_fallback = off;
SELECT wtcache.get('item', '2')->>'name' AS name;
RESET wtcache.read_fallback;
SELECT read_bypasses > 0 AS bypassed, read_hits = 0 AS no_hits, read_fallbacks = 0 AS no_fallbacks
  FROM wtcache.status WHERE table_name = 'item'::regclass;

-- reads never change what is queued: only the removal is there
SELECT keys IS NULL AS whole_table, count(*) FROM wtcache.queue
 WHERE relid = 'item'::regclass GROUP BY 1;

RESET ROLE;
DROP OWNED BY wtc_nobody, wtc_some_columns, wtc_all_columns;
DROP ROLE wtc_nobody, wtc_some_columns, wtc_all_columns;
SELECT wtcache.unwatch('item', purge => false);
SELECT wtcache.unwatch('pair', purge => false);
DROP TABLE item, pair;

-- a column named like the alias wtcache reads the table under
CREATE TABLE named_t (id int PRIMARY KEY, t text, k int);
INSERT INTO named_t VALUES (1, 'column t', 7);
SELECT wtcache.watch('named_t');
SELECT wtcache.get('named_t', '1');
SELECT * FROM wtcache.get_many('named_t', ARRAY['1']);
