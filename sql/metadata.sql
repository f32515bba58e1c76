-- Who sees what: a watched table's configuration, counters and metrics
-- only to roles that can see the table (a privilege on it or on one of its
-- columns, or its owner's rights), to pg_read_all_stats / pg_monitor and
-- to superusers; the worker of this database to everyone.
\set VERBOSITY terse
\set SHOW_CONTEXT never

CREATE TABLE md_secret (id int PRIMARY KEY, v text);
CREATE TABLE md_shared (id int PRIMARY KEY, v text);
CREATE TABLE md_column (id int PRIMARY KEY, v text);
SELECT wtcache.watch('md_secret');
SELECT wtcache.watch('md_shared');
SELECT wtcache.watch('md_column', ttl => '1 hour');
-- one read of each, so that read_stats() has a row for each
SELECT wtcache.get('md_secret', '1'), wtcache.get('md_shared', '1'), wtcache.get('md_column', '1');

CREATE ROLE md_nobody;
CREATE ROLE md_reader;
GRANT SELECT ON md_shared TO md_reader;
CREATE ROLE md_colwriter;
GRANT UPDATE (v) ON md_column TO md_colwriter;
CREATE ROLE md_monitor IN ROLE pg_monitor;
CREATE ROLE md_owner;
GRANT CREATE ON SCHEMA public TO md_owner;
CREATE ROLE md_owner_member IN ROLE md_owner;

-- a table watched by its owner, who is not a superuser
SET ROLE md_owner;
CREATE TABLE md_owned (id int PRIMARY KEY, v text);
SELECT wtcache.watch('md_owned', tags => ARRAY['owned']);
SELECT wtcache.get('md_owned', '1');
RESET ROLE;

-- the md_ tables each source shows to the current role
CREATE VIEW md_seen WITH (security_invoker = true) AS
SELECT 'status' AS source, table_name::text AS tbl
  FROM wtcache.status WHERE table_name::text LIKE 'md\_%'
UNION ALL
SELECT 'read_stats', table_name::text
  FROM wtcache.read_stats() WHERE table_name::text LIKE 'md\_%'
UNION ALL
SELECT 'metrics', m[1]
  FROM regexp_matches(wtcache.metrics(), E'\nwtcache_pending\\{database="[^"]*",table="public\\.(md_[a-z0-9_]+)"\\}', 'g') AS m;
GRANT SELECT ON md_seen TO PUBLIC;
\set seen 'SELECT s.source, coalesce(string_agg(v.tbl, $$, $$ ORDER BY v.tbl COLLATE "C"), $$$$) AS tables FROM (VALUES ($$metrics$$), ($$read_stats$$), ($$status$$)) s(source) LEFT JOIN md_seen v USING (source) GROUP BY s.source ORDER BY 1'

-- a superuser sees them all, in wtcache.watched too
:seen;
SELECT rel FROM wtcache.watched WHERE rel::text LIKE 'md\_%' ORDER BY rel::text COLLATE "C";

-- a role without any privilege on them sees none, and cannot read
-- wtcache.watched directly
SET ROLE md_nobody;
:seen;
SELECT count(*) FROM wtcache.watched;
RESET ROLE;

-- SELECT on a table shows that table
SET ROLE md_reader;
:seen;
RESET ROLE;

-- so does a privilege on one of its columns (here UPDATE of one column:
-- whoever can change a table can see how it is delivered)
SET ROLE md_colwriter;
:seen;
RESET ROLE;

-- the owner, and members of the owner's role, see its configuration
SET ROLE md_owner;
:seen;
SELECT table_name, key_columns, tags, ttl, mode FROM wtcache.status
 WHERE table_name::text LIKE 'md\_%' ORDER BY 1;
SET ROLE md_owner_member;
:seen;
RESET ROLE;

-- pg_monitor (through pg_read_all_stats) sees every table
SET ROLE md_monitor;
:seen;
RESET ROLE;

-- this database's worker is shown to everyone, with host:port only;
-- other databases' workers only to pg_read_all_stats members and superusers
SET ROLE md_nobody;
SELECT count(*) AS own_worker, bool_and(redis_address = '127.0.0.1:1') AS address_only
  FROM wtcache.worker_status()
 WHERE database_oid = (SELECT oid FROM pg_database WHERE datname = current_database());
SELECT count(*) AS other_workers FROM wtcache.worker_status()
 WHERE database_oid <> (SELECT oid FROM pg_database WHERE datname = current_database());
RESET ROLE;

-- the sql_drop handler runs with the rights of whoever runs the DDL
SELECT p.prosecdef, l.lanname
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.oid = 'wtcache._on_sql_drop'::regproc;
-- ... and a table owner who is not a superuser still has a dropped
-- table's watch forgotten, and its keys queued for removal
SELECT 'md_owned'::regclass::oid AS owned_oid \gset
DELETE FROM wtcache.queue;
SET ROLE md_owner;
DROP TABLE md_owned;
RESET ROLE;
SELECT count(*) AS watches_left FROM wtcache.watched WHERE rel::oid = :owned_oid;
SELECT count(*) AS removals_queued FROM wtcache.queue WHERE relid = :owned_oid AND keys IS NULL;
-- ... or dropping one of its capture triggers
SET ROLE md_owner;
CREATE TABLE md_owned2 (id int PRIMARY KEY);
SELECT wtcache.watch('md_owned2');
SELECT count(*) AS watches FROM wtcache.status WHERE table_name = 'md_owned2'::regclass;
DROP TRIGGER wtcache_capture_upd ON md_owned2;
SELECT count(*) AS watches_left FROM wtcache.status WHERE table_name = 'md_owned2'::regclass;
RESET ROLE;
SELECT count(*) AS watches_left FROM wtcache.watched WHERE rel = 'md_owned2'::regclass;

-- nobody can make wtcache forget a table that was not dropped: not a role
-- without EXECUTE, not one that was granted it, not a superuser
SELECT 'md_secret'::regclass::oid AS secret_oid \gset
DELETE FROM wtcache.queue;
SET ROLE md_nobody;
SELECT wtcache._forget_table(:secret_oid, 'public', 'md_secret');
RESET ROLE;
GRANT EXECUTE ON FUNCTION wtcache._forget_table(oid, text, text) TO md_nobody;
SET ROLE md_nobody;
SELECT wtcache._forget_table(:secret_oid, 'public', 'md_secret');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION wtcache._forget_table(oid, text, text) FROM md_nobody;
SELECT wtcache._forget_table(:secret_oid, 'public', 'md_secret');
SELECT wtcache._on_sql_drop();
SELECT count(*) AS removals_queued FROM wtcache.queue WHERE relid = :secret_oid;
SELECT count(*) AS still_watched FROM wtcache.watched WHERE rel = 'md_secret'::regclass;

DELETE FROM wtcache.queue;
DROP VIEW md_seen;
DROP TABLE md_secret, md_shared, md_column, md_owned2;
DELETE FROM wtcache.queue;
REVOKE CREATE ON SCHEMA public FROM md_owner;
DROP ROLE md_nobody, md_reader, md_colwriter, md_monitor, md_owner_member, md_owner;
