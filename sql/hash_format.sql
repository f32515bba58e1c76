-- watch(format => 'hash') of 1.3: the option, its errors, that re-running
-- watch() keeps it, that changing it rewrites the table's keys, and that
-- reads of a hash-format table return exactly what a JSON-format table
-- returns for the same rows.  Redis is out of reach (test/regress.conf):
-- reads go to the table.  Hashes in Redis, their fills and their decoding
-- are tested in test/t/043_hash_format.pl.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN pos AS int CHECK (VALUE > 0);
-- one column of each kind whose JSON a hash must give back, twice
CREATE TABLE hj (id int PRIMARY KEY, t text, looks_num text, n numeric, f float8, r real,
                 b boolean, j json, jb jsonb, arr int[], tarr text[], ts timestamp,
                 tstz timestamptz, d date, tm time, iv interval, by bytea, u uuid,
                 e mood, c pair, dom pos, ch char(4), vc varchar(10), big bigint, secret text);
CREATE TABLE hh (LIKE hj INCLUDING ALL);
INSERT INTO hj VALUES
  (1, 'plain', '42', 10.10, 1.1, 0.5, true, '{"a": [1, 2], "b": null}', '{"z": 1, "a": "x"}',
   '{1,NULL,3}', '{"a b","c,d",NULL}', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15+05',
   '2024-02-29', '13:14:15', '1 year 2 mons 3 days 04:05:06', '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
   'happy', '(7,"x y")', 5, 'ab', 'vc', 9007199254740993, 'SECRET'),
  (2, NULL, '007', 'NaN', 'Infinity', '-0', false, 'null', '[]', '{}', '{}', '-infinity',
   'infinity', '0001-01-01 BC', '00:00', '-1 day', '\x', '00000000-0000-0000-0000-000000000000',
   'sad', '(,)', 1, NULL, '', -1, NULL),
  (3, E'tab\there "quote" \\ back', '1e3', -0.000, 1e-300, 3.4e38, NULL, '"str"', '3.5', '{{1,2},{3,4}}',
   '{}', '1999-12-31 23:59:59', '1999-12-31 23:59:59.999999+00', '1999-12-31', '23:59:59.999999',
   '0', NULL, NULL, NULL, NULL, NULL, 'abcd', 'ünïcødé', 0, 'x'),
  (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO hh SELECT * FROM hj;

SELECT wtcache.watch('hj', exclude_columns => ARRAY['secret']);
SELECT wtcache.watch('hh', exclude_columns => ARRAY['secret'], format => 'hash');
SELECT table_name, format, exclude_columns FROM wtcache.status
 WHERE table_name IN ('hj'::regclass, 'hh'::regclass) ORDER BY table_name::text;

-- the same rows read from either table: the same jsonb, the same row
SELECT i, wtcache.get('hh', i::text) IS NOT DISTINCT FROM wtcache.get('hj', i::text) AS same
  FROM generate_series(1, 5) i;
SELECT wtcache.get('hh', '1');
SELECT (SELECT array_agg(row ORDER BY key) FROM wtcache.get_many('hh', ARRAY['4', '1', '2', '3', '9']))
     = (SELECT array_agg(row ORDER BY key) FROM wtcache.get_many('hj', ARRAY['4', '1', '2', '3', '9'])) AS same_many;
SELECT (wtcache.get_row(NULL::hh, '3')).* ;
SELECT row_to_json(wtcache.get_row(NULL::hh, i::text))::text = row_to_json(wtcache.get_row(NULL::hj, i::text))::text AS same_row
  FROM generate_series(1, 4) i;

-- re-running watch() without format keeps the one stored, and rewrites nothing
DELETE FROM wtcache.queue;
SELECT wtcache.watch('hh', ttl => '1 hour');
SELECT format, exclude_columns FROM wtcache.watched WHERE rel = 'hh'::regclass;
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'hh'::regclass;
-- the same format given again: no rewrite either
SELECT wtcache.watch('hh', format => 'hash');
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'hh'::regclass;

-- another format rewrites the table's keys in the watch's transaction: the
-- removal of its keys, then every row; a rollback takes both back
BEGIN;
SELECT wtcache.watch('hh', format => 'json');
SELECT format FROM wtcache.watched WHERE rel = 'hh'::regclass;
SELECT keys IS NULL AS whole_table, cardinality(keys) AS nkeys
  FROM wtcache.queue WHERE relid = 'hh'::regclass ORDER BY id;
ROLLBACK;
SELECT format FROM wtcache.watched WHERE rel = 'hh'::regclass;
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'hh'::regclass;
SELECT wtcache.watch('hj', format => 'hash');
SELECT keys IS NULL AS whole_table, cardinality(keys) AS nkeys
  FROM wtcache.queue WHERE relid = 'hj'::regclass ORDER BY id;
SELECT wtcache.get('hj', '2') = wtcache.get('hh', '2') AS same;

-- refusals, each changing nothing
SELECT wtcache.watch('hh', format => 'xml');
SELECT wtcache.watch('hh', format => 'HASH');
SELECT wtcache.watch('hh', format => '');
CREATE TABLE hv (id int PRIMARY KEY, "_v" int, other text);
SELECT wtcache.watch('hv', format => 'hash');
SELECT wtcache.watch('hv', format => 'hash', columns => ARRAY['_v']);
SELECT count(*) AS not_watched FROM wtcache.watched WHERE rel = 'hv'::regclass;
-- kept out of the projection, it is no trouble
SELECT wtcache.watch('hv', format => 'hash', exclude_columns => ARRAY['_v']);
INSERT INTO hv VALUES (1, 2, 'x');
SELECT wtcache.get('hv', '1');
-- nor may a projection that takes it in
SELECT wtcache.watch('hv', exclude_columns => '{}');
-- a column named _v that comes later (the excluded one renamed, the list
-- follows it; another renamed to _v) stays out of the hash, also when read
-- from the table, so both give one row
ALTER TABLE hv RENAME COLUMN other TO "_v2";
ALTER TABLE hv RENAME COLUMN "_v" TO was_v;
ALTER TABLE hv RENAME COLUMN "_v2" TO "_v";
SELECT wtcache.get('hv', '1');
SELECT exclude_columns, format FROM wtcache.watched WHERE rel = 'hv'::regclass;

SELECT wtcache.unwatch('hj', purge => false);
SELECT wtcache.unwatch('hh', purge => false);
SELECT wtcache.unwatch('hv', purge => false);
DROP TABLE hj, hh, hv;
DROP TYPE mood, pair;
DROP DOMAIN pos;
DELETE FROM wtcache.queue;
