-- watch() options of 1.3: the projection (columns, exclude_columns).
-- Redis is out of reach (test/regress.conf): reads go to the table, which
-- must return exactly what Redis would hold.  What reaches Redis is tested
-- in test/t/041_key_options.pl.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE acct (id int PRIMARY KEY, email text NOT NULL, pw_hash text,
                   org_id int, note text);
INSERT INTO acct VALUES (1, 'ada@example.com', 'SECRET-1', 7, 'n1'), (2, 'bob@example.com', 'SECRET-2', 8, NULL);
CREATE TABLE pick (org text, n int, a text, b text, PRIMARY KEY (org, n));
INSERT INTO pick VALUES ('acme', 1, 'x', 'y');

-- exclusion list: every column but those
SELECT wtcache.watch('acct', exclude_columns => ARRAY['pw_hash']);
SELECT rel, columns, exclude_columns FROM wtcache.watched WHERE rel = 'acct'::regclass;
SELECT table_name, columns, exclude_columns FROM wtcache.status WHERE table_name = 'acct'::regclass;
SELECT wtcache.get('acct', '1');
SELECT * FROM wtcache.get_many('acct', ARRAY['2', '1', '3']);
-- get_row: the table's row type, NULL for a column outside the projection
SELECT (wtcache.get_row(NULL::acct, '1')).*;

-- column list: those columns and the key columns (listed or not)
SELECT wtcache.watch('pick', columns => ARRAY['b']);
SELECT wtcache.get('pick', 'acme', '1');
SELECT table_name, columns, exclude_columns FROM wtcache.status WHERE table_name = 'pick'::regclass;
-- key columns only
SELECT wtcache.watch('pick', columns => '{}');
SELECT wtcache.get('pick', 'acme', '1');

-- re-running watch() without a projection keeps the one it has: a change
-- of TTL must not start sending a column that was kept out
DELETE FROM wtcache.queue;
SELECT wtcache.watch('acct', ttl => '1 hour');
SELECT wtcache.get('acct', '1');
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'acct'::regclass;
-- another projection rewrites the table's keys, in the watch's transaction:
-- the removal of its keys, then every row
SELECT wtcache.watch('acct', exclude_columns => ARRAY['pw_hash', 'note']);
SELECT keys IS NULL AS whole_table, per_table, cardinality(keys) AS nkeys
  FROM wtcache.queue WHERE relid = 'acct'::regclass ORDER BY id;
SELECT wtcache.get('acct', '1');
-- the same projection again is no rewrite
DELETE FROM wtcache.queue;
SELECT wtcache.watch('acct', exclude_columns => ARRAY['note', 'pw_hash']);
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'acct'::regclass;
-- and a rollback takes the rewrite back with the watch change
BEGIN;
SELECT wtcache.watch('acct', columns => ARRAY['email']);
ROLLBACK;
SELECT count(*) AS queued_nothing FROM wtcache.queue WHERE relid = 'acct'::regclass;
SELECT wtcache.get('acct', '1');

-- DDL: a renamed column stays out (the projection is renamed with it, in
-- the DDL's transaction), a new column joins an exclusion list, a dropped
-- one is skipped, and a new column under an excluded name stays out
ALTER TABLE acct RENAME COLUMN pw_hash TO password_hash;
SELECT table_name, columns, exclude_columns FROM wtcache.status WHERE table_name = 'acct'::regclass;
SELECT wtcache.get('acct', '1');
ALTER TABLE acct ADD COLUMN plan text DEFAULT 'free';
SELECT wtcache.get('acct', '1');
ALTER TABLE acct DROP COLUMN note;
SELECT wtcache.get('acct', '1');
SELECT table_name, columns, exclude_columns FROM wtcache.status WHERE table_name = 'acct'::regclass;
ALTER TABLE acct ADD COLUMN note text DEFAULT 'SECRET-note';
SELECT wtcache.get('acct', '1');
BEGIN;
ALTER TABLE acct RENAME COLUMN password_hash TO pw;
ROLLBACK;
SELECT exclude_columns FROM wtcache.watched WHERE rel = 'acct'::regclass;
-- re-running watch() keeps the lists as they are, a dropped name included
SELECT wtcache.watch('acct', ttl => '2 hours');
SELECT exclude_columns FROM wtcache.watched WHERE rel = 'acct'::regclass;
-- a column list: a new column stays out, a dropped listed column is skipped
ALTER TABLE pick ADD COLUMN c text DEFAULT 'new';
SELECT wtcache.watch('pick', columns => ARRAY['a', 'b']);
ALTER TABLE pick DROP COLUMN a;
SELECT wtcache.get('pick', 'acme', '1');
SELECT table_name, columns, exclude_columns FROM wtcache.status WHERE table_name = 'pick'::regclass;

-- exclude nothing: every column again, stored as no projection
SELECT wtcache.watch('pick', exclude_columns => '{}');
SELECT columns, exclude_columns FROM wtcache.watched WHERE rel = 'pick'::regclass;
SELECT wtcache.get('pick', 'acme', '1');

-- refusals
SELECT wtcache.watch('acct', columns => ARRAY['email'], exclude_columns => ARRAY['password_hash']);
SELECT wtcache.watch('acct', columns => ARRAY['no_such']);
SELECT wtcache.watch('acct', exclude_columns => ARRAY['ctid']);
SELECT wtcache.watch('acct', exclude_columns => ARRAY['gone']);
SELECT wtcache.watch('acct', columns => ARRAY['email', NULL]);
SELECT wtcache.watch('acct', columns => ARRAY['email', 'email']);
SELECT wtcache.watch('acct', exclude_columns => ARRAY['id']);
-- tag names reach Redis: a template may not use a column kept out
SELECT wtcache.watch('acct', tags => ARRAY['org:{org_id}'], exclude_columns => ARRAY['org_id']);
SELECT wtcache.watch('acct', tags => ARRAY['org:{org_id}'], columns => ARRAY['email']);
SELECT wtcache.watch('acct', tags => ARRAY['org:{org_id}']);
SELECT rel, tags, columns, exclude_columns FROM wtcache.watched WHERE rel = 'acct'::regclass;
-- and the refusals changed nothing
SELECT wtcache.get('acct', '2');

SELECT wtcache.unwatch('acct', purge => false);
SELECT wtcache.unwatch('pick', purge => false);
DROP TABLE acct, pick;
DELETE FROM wtcache.queue;
