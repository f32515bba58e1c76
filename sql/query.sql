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
SELECT count(*) FROM wtcache.queue WHERE relid = 0 AND tags[2] NOT LIKE 'tablewide:%';
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

-- results shared by every session of a role: what reads the session is refused
SET app.tenant = 'one';
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = current_setting(''app.tenant'')');
CREATE VIEW tenant_org AS SELECT id, name FROM org WHERE name = current_setting('app.tenant');
SELECT * FROM wtcache.query('SELECT id FROM tenant_org');
CREATE VIEW tenant_org_names AS SELECT name FROM tenant_org;
SELECT * FROM wtcache.query('SELECT count(*) FROM tenant_org_names');
CREATE FUNCTION tenant() RETURNS text STABLE LANGUAGE sql
  AS $$ SELECT current_setting('app.tenant') $$;                    -- inlinable
CREATE FUNCTION tenant_opaque() RETURNS text STABLE LANGUAGE sql SET search_path = pg_catalog
  AS $$ SELECT current_setting('app.tenant') $$;                    -- not inlinable
CREATE FUNCTION tenant_plpgsql() RETURNS text STABLE LANGUAGE plpgsql
  AS $$ BEGIN RETURN current_setting('app.tenant'); END $$;
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant()');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant_opaque()');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant_plpgsql()');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE now() > ''2000-01-01''');
SELECT * FROM wtcache.query('SELECT CURRENT_TIMESTAMP AS t FROM org');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE CURRENT_DATE > ''2000-01-01''');
SELECT * FROM wtcache.query('SELECT age(''2000-01-01''::timestamptz) AS a FROM org');
SELECT * FROM wtcache.query('SELECT session_user AS u FROM org');
SELECT * FROM wtcache.query('SELECT current_schema AS s FROM org');
SELECT * FROM wtcache.query('SELECT has_table_privilege(''org'', ''SELECT'') AS p FROM org');
SELECT * FROM wtcache.query('SELECT pg_has_role(''pg_monitor'', ''MEMBER'') AS p FROM org');
SELECT * FROM wtcache.query('SELECT inet_client_addr() AS a FROM org');
SELECT * FROM wtcache.query('SELECT pg_backend_pid() AS p FROM org');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE txid_current() > 0');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE ''now''::text::timestamptz > ''2000-01-01''');
SELECT * FROM wtcache.query('SELECT tableoid::regclass AS t FROM org');
SELECT * FROM wtcache.query('SELECT concat(id, tableoid::regclass) AS c FROM org');
SELECT * FROM wtcache.query_key('SELECT id FROM tenant_org');
CREATE TEMP TABLE scratch (id int);
SELECT * FROM wtcache.query('SELECT id FROM scratch', ttl => '1 minute');

-- what is the same for every session of the role is accepted
SELECT * FROM wtcache.query('SELECT id, upper(name) AS up, length(name) AS len FROM org ORDER BY id');
SELECT * FROM wtcache.query('SELECT current_user = CURRENT_ROLE AS role, current_database() AS db');
SET TimeZone = 'UTC';
SELECT * FROM wtcache.query('SELECT to_char(''2024-01-01 23:30+00''::timestamptz, ''YYYY-MM-DD'') AS d,
                                    date_trunc(''day'', ''2024-01-01 23:30+00''::timestamptz) AS t,
                                    ''2024-01-01 23:30+00''::timestamptz + interval ''1 hour'' AS later,
                                    format(''%s-%s'', 1, ''2024-01-01''::date) AS f');
-- values are rendered through arrays, ranges, composites, enums and ROW()
CREATE TYPE query_mood AS ENUM ('calm', 'busy');
SELECT * FROM wtcache.query('SELECT ARRAY[''2024-01-01 00:00+00''::timestamptz] AS a,
                                    tstzrange(''2024-01-01 00:00+00'', ''2024-01-02 00:00+00'') AS r,
                                    ''busy''::query_mood AS m,
                                    (SELECT jsonb_agg(o ORDER BY o.id) FROM org o) AS j');
SELECT * FROM wtcache.query('SELECT ROW(id, tableoid::regclass) AS r FROM org');
SELECT * FROM wtcache.query('SELECT to_json(ARRAY[tableoid::regclass]) AS j FROM org');
-- the settings that shape a result are part of its key
SELECT key AS utc_key FROM wtcache.query_key('SELECT * FROM org') \gset
SET TimeZone = 'Asia/Tokyo';
SELECT key <> :'utc_key' AS other_key FROM wtcache.query_key('SELECT * FROM org');
SET TimeZone = 'UTC';
SELECT key = :'utc_key' AS same_key FROM wtcache.query_key('SELECT * FROM org');
SET extra_float_digits = 0;
SELECT key <> :'utc_key' AS other_key FROM wtcache.query_key('SELECT * FROM org');
RESET extra_float_digits;
RESET TimeZone;

-- under row-level security nothing is cached, so policies may read the session
CREATE TABLE tenant_doc (id int PRIMARY KEY, tenant text NOT NULL);
SELECT wtcache.watch('tenant_doc');
INSERT INTO tenant_doc VALUES (1, 'one'), (2, 'two');
ALTER TABLE tenant_doc ENABLE ROW LEVEL SECURITY;
CREATE POLICY by_tenant ON tenant_doc USING (tenant = current_setting('app.tenant'));
CREATE ROLE wtcache_query_tenant;
GRANT SELECT ON tenant_doc TO wtcache_query_tenant;
SET ROLE wtcache_query_tenant;
SELECT * FROM wtcache.query('SELECT id FROM tenant_doc');
RESET ROLE;

-- wtcache.query_safe_functions: a superuser vouches for a function
SHOW wtcache.query_safe_functions;
SET wtcache.query_safe_functions = 'public.tenant';
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant()');
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant_opaque()');
SET wtcache.query_safe_functions = 'public.tenant_plpgsql(), "public".tenant_opaque ( )';
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant_plpgsql() AND name = tenant_opaque()');
SET wtcache.query_safe_functions = 'public.tenant(integer)';
SELECT * FROM wtcache.query('SELECT id FROM org WHERE name = tenant()');
SET wtcache.query_safe_functions = 'public.tenant(no_such_type), pg_catalog.has_table_privilege';
SELECT * FROM wtcache.query('SELECT has_table_privilege(''org'', ''SELECT'') AS p FROM org WHERE id = 1');
SET wtcache.query_safe_functions = 'pg_catalog.regclassout(regclass)';
SELECT * FROM wtcache.query('SELECT tableoid::regclass AS t FROM org WHERE id = 1');
SET wtcache.query_safe_functions = 'tenant';
SET wtcache.query_safe_functions = 'public.tenant(';
SET wtcache.query_safe_functions = 'a.b.c';
RESET wtcache.query_safe_functions;
SET ROLE wtcache_query_tenant;
SET wtcache.query_safe_functions = 'public.tenant';
RESET ROLE;
DROP TABLE tenant_doc;
DROP ROLE wtcache_query_tenant;
DROP TYPE query_mood;
RESET app.tenant;
