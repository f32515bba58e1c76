-- watch(key_template => ...) of 1.3: the application's names for a
-- table's rows in Redis.  Redis is out of reach (test/regress.conf): this
-- tests what watch() accepts, stores and queues, and the names redis_key()
-- gives.  What reaches Redis is tested in test/t/044_key_templates.pl.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE kt_member (id int PRIMARY KEY, name text NOT NULL, org text);
INSERT INTO kt_member VALUES (42, 'ada', 'acme'), (7, 'bob', NULL);
CREATE TABLE kt_seat (org text, n int, who text, PRIMARY KEY (org, n));
INSERT INTO kt_seat VALUES ('acme', 1, 'ada'), ('a:b{c}%', 2, 'bob');
CREATE TABLE kt_other (id int PRIMARY KEY);

-- every refusal, with its SQLSTATE
CREATE FUNCTION try_template(rel regclass, tmpl text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM wtcache.watch(rel, key_template => tmpl);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT t AS template, try_template('kt_member', t) AS result
  FROM unnest(ARRAY[
    '{id}',                 -- no literal head
    'user:{id}.json',       -- a dot
    'user:*{id}',           -- a glob character
    'user {id}',            -- a space
    'user%{id}',            -- the escape character
    E'user\t{id}',          -- a control character
    'user:{id',             -- unclosed
    'user:}{id}',           -- a stray brace
    'user:{}',              -- empty placeholder
    'user:{id}{name}',      -- consecutive placeholders
    'user:{nope}',          -- no such column
    'user:{name}',          -- not a key column
    'user:{id}:{id}',       -- a key column twice
    repeat('x', 300) || '{id}'
  ]) AS t;
SELECT try_template('kt_seat', 'kt_seat:{org}') AS missing_key_column;
SELECT try_template('kt_seat', 'kt_seat:{org}-{n}') AS no_colon_between;
SELECT count(*) AS nothing_watched FROM wtcache.watched WHERE rel::text LIKE 'kt%';

-- accepted: stored, shown, used by redis_key()
SELECT wtcache.watch('kt_member', key_template => 'user:{id}');
SELECT rel, key_template FROM wtcache.watched WHERE rel::text LIKE 'kt%';
SELECT table_name, key_template FROM wtcache.status WHERE table_name::text LIKE 'kt%';
SELECT wtcache.redis_key('kt_member', '42');
-- a new watch removes what Redis holds of its key space first: the queue
-- row names the template
SELECT keys IS NULL AS whole_table, table_key, key_template
  FROM wtcache.queue WHERE relid = 'kt_member'::regclass ORDER BY id;
-- key values are escaped (% : { } as %XX), the separators between
-- placeholders need a ":"
SELECT wtcache.watch('kt_seat', key_template => 'org:{org}:seat:{n}');
SELECT wtcache.redis_key('kt_seat', 'acme', '1'), wtcache.redis_key('kt_seat', 'a:b{c}%', '2');
-- reads go to the table (Redis is away), whatever the layout
SELECT wtcache.get('kt_member', '42');
SELECT (wtcache.get_row(NULL::kt_seat, 'a:b{c}%', '2')).*;

-- re-running watch() without key_template keeps the template, and queues
-- nothing
DELETE FROM wtcache.queue;
SELECT wtcache.watch('kt_member', ttl => '1 hour');
SELECT key_template FROM wtcache.watched WHERE rel = 'kt_member'::regclass;
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'kt_member'::regclass;
-- the same template again is no rewrite either
SELECT wtcache.watch('kt_member', key_template => 'user:{id}');
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'kt_member'::regclass;

-- another template rewrites the table's keys in the watch's transaction:
-- the removal of the old template's keys, of the new one's, then every row
SELECT wtcache.watch('kt_member', key_template => 'kt_member:{id}');
SELECT keys IS NULL AS whole_table, key_template, per_table, cardinality(keys) AS nkeys
  FROM wtcache.queue WHERE relid = 'kt_member'::regclass ORDER BY id;
SELECT wtcache.redis_key('kt_member', '42');
-- a rollback takes the rewrite back with the template
DELETE FROM wtcache.queue;
BEGIN;
SELECT wtcache.watch('kt_member', key_template => 'm:{id}');
SELECT wtcache.redis_key('kt_member', '42');
ROLLBACK;
SELECT key_template FROM wtcache.watched WHERE rel = 'kt_member'::regclass;
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'kt_member'::regclass;
SELECT wtcache.redis_key('kt_member', '42');

-- '' goes back to the default layout, removing the template's keys
SELECT wtcache.watch('kt_member', key_template => '');
SELECT key_template FROM wtcache.watched WHERE rel = 'kt_member'::regclass;
SELECT keys IS NULL AS whole_table, key_template, per_table
  FROM wtcache.queue WHERE relid = 'kt_member'::regclass AND keys IS NULL ORDER BY id;
SELECT wtcache.redis_key('kt_member', '42');

-- templates of one database that could name one key are refused: equal
-- but for the column names, or overlapping (use{org}:{n} renders user:42
-- for org 'r' and n 42, us{org}:{n} for org 'er'); user:{id} and user{id}
-- cannot meet, nor u{id} (a value holds no ":"), but us{id} and u{id} can
DELETE FROM wtcache.queue;
SELECT wtcache.watch('kt_member', key_template => 'user:{id}');
SELECT try_template('kt_other', 'user:{id}') AS same_key_space;
SELECT try_template('kt_other', 'user:{id}:x') AS no_overlap;
SELECT try_template('kt_other', '') AS back_to_default;
SELECT try_template('kt_other', 'user{id}') AS no_overlap_either;
SELECT try_template('kt_other', 'u{id}') AS nor_this;
SELECT try_template('kt_seat', 'use{org}:{n}') AS overlaps_user_id;
SELECT try_template('kt_seat', 'us{org}:{n}') AS overlaps_too;
SELECT try_template('kt_seat', 'seat:{org}:{n}') AS no_overlap_at_all;
SELECT try_template('kt_seat', 'us{org}') AS missing_key_column;
SELECT try_template('kt_member', 'us{id}') AS overlaps_u_id;
SELECT rel, key_template FROM wtcache.watched WHERE rel::text LIKE 'kt%' ORDER BY rel::text;

-- a renamed key column is renamed in the template too
ALTER TABLE kt_member RENAME COLUMN id TO member_id;
SELECT key_template FROM wtcache.watched WHERE rel = 'kt_member'::regclass;
SELECT wtcache.redis_key('kt_member', '42');

-- TRUNCATE and unwatch remove the template's keys: their queue rows say so
DELETE FROM wtcache.queue;
TRUNCATE kt_member;
SELECT wtcache.unwatch('kt_seat');
SELECT relid::regclass, keys IS NULL AS whole_table, key_template
  FROM wtcache.queue WHERE relid::regclass::text LIKE 'kt%' ORDER BY id;

SELECT wtcache.unwatch('kt_member');
SELECT wtcache.unwatch('kt_other');
DROP TABLE kt_member, kt_seat, kt_other;
DROP FUNCTION try_template(regclass, text);
DELETE FROM wtcache.queue;
