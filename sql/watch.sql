-- watch() / unwatch(): configuration, triggers, and every way to get them wrong.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION wtcache;

CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, org_id int);
CREATE TABLE memberships (org text NOT NULL, member bigint NOT NULL, role text,
                          PRIMARY KEY (org, member));
CREATE TABLE by_email (email text NOT NULL UNIQUE, note text);
CREATE TABLE nokey (a int, b text);
CREATE TABLE nullable_unique (a int UNIQUE, b text);
CREATE TABLE partial_unique (a int NOT NULL, b text);
CREATE UNIQUE INDEX ON partial_unique (a) WHERE a > 0;
CREATE VIEW users_v AS SELECT * FROM users;

SELECT wtcache.watch('users');
SELECT wtcache.watch('memberships');
SELECT wtcache.watch('by_email', key => ARRAY['email']);
SELECT rel, key_columns, key_attnums, tags, ttl, mode FROM wtcache.watched ORDER BY rel::text COLLATE "C";
SELECT tgrelid::regclass, tgname, tgtype, tgnargs FROM pg_trigger
 WHERE tgname LIKE 'wtcache%' ORDER BY tgrelid::regclass::text COLLATE "C", tgname COLLATE "C";

-- capture happens in the WHEN clause (see src/capture.c)
SELECT pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'memberships'::regclass AND tgname = 'wtcache_capture_upd';

-- re-running changes options, not the key
SELECT wtcache.watch('users', ttl => '1 hour', mode => 'invalidate', tags => ARRAY['org:{org_id}']);
SELECT rel, tags, ttl, mode FROM wtcache.watched WHERE rel = 'users'::regclass;
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'users'::regclass AND tgname LIKE 'wtcache%';

-- bad input
SELECT wtcache.watch('no_such_table');
SELECT wtcache.watch(NULL);
SELECT wtcache.watch('nokey');
SELECT wtcache.watch('nokey', key => ARRAY['a']);
SELECT wtcache.watch('nokey', key => ARRAY['zzz']);
SELECT wtcache.watch('nullable_unique', key => ARRAY['a']);
SELECT wtcache.watch('partial_unique', key => ARRAY['a']);
SELECT wtcache.watch('by_email', key => ARRAY['email', 'email']);
SELECT wtcache.watch('users_v');
SELECT wtcache.watch('users', mode => 'write_behind');
SELECT wtcache.watch('users', ttl => '-1 second');
SELECT wtcache.watch('memberships', key => ARRAY['org']);
SELECT wtcache.unwatch('nokey');

-- ownership is needed to watch, not to write
CREATE ROLE wtc_stranger;
GRANT SELECT, INSERT, UPDATE, DELETE ON users TO wtc_stranger;
SET ROLE wtc_stranger;
SELECT wtcache.watch('users');
SELECT wtcache.unwatch('users');
INSERT INTO users VALUES (100, 'written by a stranger', 1);
SELECT count(*) FROM wtcache.queue;
-- nor can a role queue rows of a table it may not write
SELECT wtcache._capture_when('by_email', 'i', 'x'::text);
RESET ROLE;
-- (each new watch queued the removal of the table's old keys: keys NULL)
SELECT relid::regclass, keys FROM wtcache.queue ORDER BY id;

-- unwatch drops triggers and configuration; purge queues the table's removal
SELECT wtcache.unwatch('by_email');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'by_email'::regclass AND tgname LIKE 'wtcache%';
SELECT count(*) FROM wtcache.watched WHERE rel = 'by_email'::regclass;
SELECT relid::regclass, keys, table_key FROM wtcache.queue WHERE keys IS NULL ORDER BY id;
-- without purge, nothing more is queued (the row there is the watch's own)
SELECT count(*) FROM wtcache.queue WHERE relid = 'memberships'::regclass;
SELECT wtcache.unwatch('memberships', purge => false);
SELECT count(*) FROM wtcache.queue WHERE relid = 'memberships'::regclass;

-- dropping a watched table removes its configuration
CREATE TABLE doomed (id int PRIMARY KEY);
SELECT wtcache.watch('doomed');
DROP TABLE doomed;
SELECT count(*) FROM wtcache.watched WHERE rel::text = 'doomed';

DELETE FROM wtcache.queue;
DROP TABLE users, memberships, by_email, nokey, nullable_unique, partial_unique CASCADE;
REVOKE ALL ON SCHEMA public FROM wtc_stranger;
DROP ROLE wtc_stranger;
