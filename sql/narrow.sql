-- Narrowed cached queries: which tags a query() entry depends on.  A query
-- that restricts a watched table by equality on the columns of one of its
-- tag templates depends on the rendered template tags and the table's
-- table-wide tag; every shape the analysis cannot prove keeps the table tag.
-- query_key() shows the tag keys an entry depends on.
\set VERBOSITY terse
CREATE TABLE orgs (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE members (id int PRIMARY KEY, org_id int, team text, name text NOT NULL);
CREATE TABLE teams (id int PRIMARY KEY, org_id bigint, team varchar(20), amount numeric, code char(3));
SELECT wtcache.watch('orgs');
SELECT wtcache.watch('members', tags => ARRAY['org:{org_id}', 'team:{org_id}:{team}']);
SELECT wtcache.watch('teams', tags => ARRAY['team:{org_id}:{team}', 'amount:{amount}', 'code:{code}']);

-- the tags an entry depends on, unescaped
CREATE FUNCTION deps(q text, p text[] DEFAULT '{}') RETURNS text LANGUAGE sql AS $$
  SELECT string_agg(replace(replace(replace(replace(substr(k, length('wtc:{contrib_regression}:tag:') + 1),
                                                     '%3A', ':'), '%7B', '{'), '%7D', '}'), '%25', '%'),
                    ' ' ORDER BY k COLLATE "C")
    FROM wtcache.query_key(q, p) qk, unnest(qk.tag_keys) k
$$;

-- narrowed: a parameter, a constant, an IN list, = ANY of an array parameter
SELECT deps('SELECT * FROM members WHERE org_id = $1', ARRAY['7']);
SELECT deps('SELECT name FROM members WHERE org_id = 7 AND name <> ''x''');
SELECT deps('SELECT * FROM members WHERE org_id IN (1, 2, 3)');
SELECT deps('SELECT * FROM members WHERE org_id = ANY ($1)', ARRAY['{4,5,NULL}']);
SELECT deps('SELECT * FROM members WHERE org_id IN (1, NULL)');
-- a constant of another integer width renders the same text
SELECT deps('SELECT * FROM members WHERE org_id = 7::bigint');
SELECT deps('SELECT * FROM members WHERE org_id::bigint = 7');
SELECT deps('SELECT * FROM teams WHERE org_id = $1::int2 AND team = ''red''', ARRAY['3']);
SELECT deps('SELECT * FROM teams WHERE org_id IN (1, 2) AND team = ''red''');
-- through joins the equalities prove; the other table keeps its own tag
SELECT deps('SELECT o.name, count(*) FROM orgs o JOIN members m ON m.org_id = o.id WHERE o.id = $1 GROUP BY o.name', ARRAY['1']);
SELECT deps('SELECT * FROM orgs o, members m WHERE m.org_id = o.id AND o.id = 2');
SELECT deps('SELECT * FROM members m JOIN orgs o ON o.id = m.org_id AND o.id IN (8, 9)');
SELECT deps('SELECT * FROM members m JOIN (orgs o JOIN orgs p USING (id)) j ON m.org_id = j.id WHERE j.id = 4');
-- the preserved side of an outer join, restricted by WHERE
SELECT deps('SELECT * FROM members m LEFT JOIN orgs o ON o.id = m.org_id WHERE m.org_id = 5');
-- a self-join restricted on both sides: both orgs
SELECT deps('SELECT * FROM members a JOIN members b ON a.name = b.name WHERE a.org_id = 1 AND b.org_id = 2');
-- a template of several columns narrows when all are bound; the fewest tags win
SELECT deps('SELECT * FROM teams WHERE org_id = 1 AND team IN (''red'', ''blue'')');
SELECT deps('SELECT * FROM members WHERE org_id = 1 AND team IN (''red'', ''blue'')');
-- text equality under a deterministic collation
SELECT deps('SELECT * FROM teams WHERE org_id = 1 AND team = $1 COLLATE "C"', ARRAY['a:b{c}%']);

-- keeps the table tag
-- no restriction, OR, NOT, inequality, a NULL parameter, = NULL
SELECT deps('SELECT count(*) FROM members');
SELECT deps('SELECT * FROM members WHERE org_id = 1 OR org_id = 2');
SELECT deps('SELECT * FROM members WHERE NOT (org_id <> 1)');
SELECT deps('SELECT * FROM members WHERE org_id >= 1 AND org_id <= 1');
SELECT deps('SELECT * FROM members WHERE org_id = $1', ARRAY[NULL]);
SELECT deps('SELECT * FROM members WHERE org_id = NULL');
-- an aggregate restricted after grouping only
SELECT deps('SELECT org_id, count(*) FROM members GROUP BY org_id HAVING org_id = 1');
-- the nullable side of an outer join, restricted in its ON clause or not
SELECT deps('SELECT * FROM orgs o LEFT JOIN members m ON m.org_id = o.id AND m.org_id = 1 WHERE o.id = 1');
SELECT deps('SELECT * FROM orgs o FULL JOIN members m ON m.org_id = o.id WHERE m.org_id = 1');
-- sub-selects, sublinks, CTEs, set operations
SELECT deps('SELECT * FROM (SELECT * FROM members WHERE org_id = 1) s');
SELECT deps('SELECT * FROM members WHERE org_id = 1 AND id IN (SELECT id FROM members WHERE name = ''x'')');
SELECT deps('SELECT * FROM members WHERE org_id = 1 AND EXISTS (SELECT FROM members x WHERE x.org_id = 1)');
SELECT deps('WITH m AS (SELECT * FROM members WHERE org_id = 1) SELECT * FROM m');
SELECT deps('SELECT name FROM members WHERE org_id = 1 UNION SELECT name FROM members WHERE org_id = 2');
-- a view, even restricted outside and inside
CREATE VIEW org1_members AS SELECT * FROM members WHERE org_id = 1;
SELECT deps('SELECT * FROM org1_members WHERE org_id = 1');
-- a self-join with one side unrestricted
SELECT deps('SELECT * FROM members a JOIN members b ON a.name = b.name WHERE a.org_id = 1');
-- a template with a column left unbound
SELECT deps('SELECT * FROM teams WHERE org_id = 1');
-- equality that does not mean equal text: numeric, bpchar
SELECT deps('SELECT * FROM teams WHERE amount = 1.0');
SELECT deps('SELECT * FROM teams WHERE code = ''ab''');
-- a column or a value under a cast that changes its text
SELECT deps('SELECT * FROM members WHERE org_id::text = ''1''');
SELECT deps('SELECT * FROM members WHERE org_id = ''1''::numeric');
SELECT deps('SELECT * FROM teams WHERE org_id::int4 = 1');
-- a user-defined operator, even over the same types
CREATE FUNCTION same_int(int, int) RETURNS boolean IMMUTABLE LANGUAGE sql AS 'SELECT $1 = $2';
CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = same_int);
SELECT deps('SELECT * FROM members WHERE org_id === 1');
-- a nondeterministic collation: 'A' = 'a', two texts
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE tagged (id int PRIMARY KEY, code text COLLATE ci);
SELECT wtcache.watch('tagged', tags => ARRAY['code:{code}']);
SELECT deps('SELECT * FROM tagged WHERE code = ''ab''');
SELECT deps('SELECT * FROM tagged WHERE code = ''ab'' COLLATE "C"');
-- a function vouched for may read any table: nothing narrows
CREATE FUNCTION member_count() RETURNS bigint STABLE LANGUAGE sql AS 'SELECT count(*) FROM members';
SET wtcache.query_safe_functions = 'public.member_count()';
SELECT deps('SELECT *, member_count() FROM members WHERE org_id = 1');
RESET wtcache.query_safe_functions;
-- more values than wtcache.max_tags_per_call
SET wtcache.max_tags_per_call = 2;
SELECT deps('SELECT * FROM members WHERE org_id IN (1, 2, 3)');
RESET wtcache.max_tags_per_call;

-- partitions: the watched tree's rows, read through it or a partition
-- directly, whose columns may sit elsewhere
CREATE TABLE events (id int, org_id int, body text, PRIMARY KEY (org_id, id)) PARTITION BY LIST (org_id);
CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1);
CREATE TABLE events_2 (body text, id int NOT NULL, org_id int NOT NULL);
ALTER TABLE events_2 ADD PRIMARY KEY (org_id, id);
ALTER TABLE events ATTACH PARTITION events_2 FOR VALUES IN (2);
SELECT wtcache.watch('events', tags => ARRAY['org:{org_id}']);
SELECT deps('SELECT * FROM events WHERE org_id = 2');
SELECT deps('SELECT * FROM events_2 WHERE org_id = 2');
SELECT deps('SELECT * FROM events_2 WHERE id = 2');
SELECT deps('SELECT * FROM events_2 e2 JOIN events e ON e.id = e2.id WHERE e2.org_id = 2 AND e.org_id = 1');

-- what capture renders is what narrows: a renamed tag column keeps its
-- place in the triggers, whatever wtcache.watched's template text says
ALTER TABLE members RENAME COLUMN org_id TO org_ref;
SELECT deps('SELECT * FROM members WHERE org_ref = 3');
ALTER TABLE members RENAME COLUMN team TO org_id;
SELECT deps('SELECT * FROM members WHERE org_id = ''3''');
ALTER TABLE members RENAME COLUMN org_id TO team;
ALTER TABLE members RENAME COLUMN org_ref TO org_id;

-- a watch() of a watched table may change its templates: it invalidates
-- the table-wide tag, so entries narrowed to the old templates go
SELECT wtcache.watch('members', tags => ARRAY['org:{org_id}']);
SELECT tags FROM wtcache.queue WHERE relid = 0 ORDER BY id DESC LIMIT 1;
-- without templates nothing narrows
SELECT wtcache.watch('members');
SELECT deps('SELECT * FROM members WHERE org_id = 7');

-- query() itself runs the query, narrowed or not (nothing is delivered here)
INSERT INTO members VALUES (1, 1, 'red', 'ann'), (2, 2, 'blue', 'bo');
SELECT wtcache.watch('members', tags => ARRAY['org:{org_id}']);
SELECT * FROM wtcache.query('SELECT name FROM members WHERE org_id = $1', ARRAY['2']);
SELECT * FROM wtcache.query('SELECT name FROM members WHERE org_id IN (1, 2) ORDER BY name');

-- leave the database as the tests after this one expect it
SELECT count(*) FROM (SELECT wtcache.unwatch(t) FROM unnest(ARRAY['orgs', 'members', 'teams', 'tagged', 'events']::regclass[]) t) u;
DROP TABLE orgs, members, teams, tagged, events CASCADE;
DELETE FROM wtcache.queue;
