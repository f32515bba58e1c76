-- Tags and cached queries: the SQL surface and its errors.  The temp
-- instance points wtcache at a closed port, so nothing is delivered and
-- every cached query runs against the tables (the behaviour with Redis is
-- tested in test/t/009_query.pl).
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE org (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE member (id int PRIMARY KEY, org_id int, team text, name text NOT NULL,
                     joined timestamptz DEFAULT now());
INSERT INTO org VALUES (1, 'one'), (2, 'two');
INSERT INTO member (id, org_id, team, name) VALUES (1, 1, 'red', 'ann'), (2, 1, NULL, 'bo'), (3, NULL, 'blue', 'cy');

-- tag templates: {column} parts, checked against the table
SELECT wtcache.watch('member', tags => ARRAY['org:{nope}']);
SELECT wtcache.watch('member', tags => ARRAY['org:{org_id']);
SELECT wtcache.watch('member', tags => ARRAY['org:org_id}']);
SELECT wtcache.watch('member', tags => ARRAY['org:{}']);
SELECT wtcache.watch('member', tags => ARRAY['']);
SELECT wtcache.watch('member', tags => ARRAY['day:{joined}']);
SELECT wtcache.watch('member', tags => ARRAY[NULL]);
SELECT wtcache.watch('member', tags => ARRAY['org:{org_id}', 'team:{org_id}:{team}', 'members']);
SELECT wtcache.watch('org');
SELECT tags FROM wtcache.watched WHERE rel = 'member'::regclass;

-- each captured key carries the tags of its old and new row; a template
-- naming a NULL column gives no tag
UPDATE member SET org_id = 2 WHERE id = 1;
DELETE FROM member WHERE id = 3;
INSERT INTO member (id, org_id, team, name) VALUES (4, 2, 'red', 'di');
SELECT keys, tags FROM wtcache.queue WHERE relid = 'member'::regclass AND keys IS NOT NULL ORDER BY id;

-- re-watching with other templates changes what the triggers capture
SELECT wtcache.watch('member', tags => ARRAY['team:{team}']);
UPDATE member SET team = 'green' WHERE id = 4;
SELECT keys, tags FROM wtcache.queue WHERE relid = 'member'::regclass AND keys IS NOT NULL ORDER BY id DESC LIMIT 1;
SELECT wtcache.watch('member');
UPDATE member SET name = 'dee' WHERE id = 4;
SELECT keys, tags FROM wtcache.queue WHERE relid = 'member'::regclass AND keys IS NOT NULL ORDER BY id DESC LIMIT 1;

-- invalidate(): a queue row of its own, only when the transaction commits
BEGIN;
SELECT wtcache.invalidate(ARRAY['org:1', 'reports']);
ROLLBACK;
SELECT count(*) FROM wtcache.queue WHERE relid = 0;
SELECT wtcache.invalidate(ARRAY['org:1', 'reports']);
SELECT wtcache.invalidate('{}');
SELECT keys, tags FROM wtcache.queue WHERE relid = 0;
SELECT wtcache.invalidate(ARRAY['ok', NULL]);
SELECT wtcache.invalidate(ARRAY['']);
SELECT wtcache.invalidate(ARRAY[['a'], ['b']]);

-- query(): rows as jsonb, run against the tables while changes are pending
SELECT * FROM wtcache.query('SELECT o.name, count(*) AS n FROM org o JOIN member m ON m.org_id = o.id GROUP BY o.name ORDER BY o.name');
SELECT * FROM wtcache.query('SELECT name FROM member WHERE org_id = $1 AND team = $2', ARRAY['2', 'red']);
SELECT jsonb_populate_record(NULL::org, q) FROM wtcache.query('SELECT * FROM org ORDER BY id') q;
SELECT * FROM wtcache.query('SELECT 1 AS one WHERE false');
SELECT * FROM wtcache.query('SELECT $1 AS untyped', ARRAY[NULL]);

-- query_key(): where an application finds the entry, and what it depends on
SELECT key ~ '^wtc:\{contrib_regression\}:query:[0-9a-f]{64}$' AS key_ok, tag_keys
  FROM wtcache.query_key('SELECT * FROM org o JOIN member m ON m.org_id = o.id', tags => ARRAY['reports', 'a:b{c}']);
SELECT a.key = b.key AS same_key
  FROM wtcache.query_key('SELECT * FROM org WHERE id = $1', ARRAY['1']) a,
       wtcache.query_key('SELECT * FROM org WHERE id = $1', ARRAY['2']) b;
CREATE VIEW member_names AS SELECT m.name, o.name AS org FROM member m JOIN org o ON o.id = m.org_id;
SELECT tag_keys FROM wtcache.query_key('SELECT * FROM member_names');

-- errors
CREATE TABLE plain (id int PRIMARY KEY);
SELECT * FROM wtcache.query('SELECT * FROM plain');
SELECT count(*) FROM wtcache.query('SELECT * FROM plain', ttl => '1 minute');
SELECT * FROM wtcache.query('SELECT * FROM org', ttl => '-1 minute');
SELECT * FROM wtcache.query('DELETE FROM org');
SELECT * FROM wtcache.query('SELECT * FROM org FOR UPDATE');
SELECT * FROM wtcache.query('WITH d AS (DELETE FROM org RETURNING *) SELECT * FROM d');
SELECT * FROM wtcache.query('SELECT random() AS r FROM org');
SELECT * FROM wtcache.query('SELECT 1; SELECT 2');
SELECT * FROM wtcache.query('');
SELECT * FROM wtcache.query('SELECT * FROM org WHERE id = $1');
SELECT * FROM wtcache.query('SELECT * FROM org', ARRAY['1']);
SELECT * FROM wtcache.query('SELECT * FROM org WHERE id = $1', ARRAY['x']);
SELECT * FROM wtcache.query('SELECT * FROM org', tags => ARRAY[NULL]);
SELECT * FROM wtcache.query(NULL);
SELECT wtcache.query('SELECT 1');
CREATE ROLE wtcache_query_nobody;
SET ROLE wtcache_query_nobody;
SELECT * FROM wtcache.query('SELECT * FROM org');
SELECT * FROM wtcache.query('SELECT * FROM member_names');
RESET ROLE;
DROP ROLE wtcache_query_nobody;
