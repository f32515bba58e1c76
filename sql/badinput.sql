-- Bad input through every SQL function: each gets a clear error (with an
-- SQLSTATE) or a defined answer, and nothing crashes.  The temp instance
-- points wtcache at a closed port: Redis is unreachable throughout.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE bad (id int PRIMARY KEY, v text);
CREATE TABLE bad2 (a text NOT NULL, b int NOT NULL, PRIMARY KEY (a, b));
SELECT wtcache.watch('bad');
SELECT wtcache.watch('bad2');

-- NULLs
SELECT wtcache.watch(NULL);
SELECT wtcache.watch('bad', key => ARRAY[NULL]);
SELECT wtcache.watch('bad', mode => NULL);
SELECT wtcache.unwatch(NULL);
SELECT wtcache.resync(NULL::regclass) >= 0 AS resync_all_ok;
SELECT wtcache.warm(NULL);
SELECT wtcache.redis_key(NULL, '1');
SELECT wtcache.redis_key('bad', NULL);
SELECT wtcache.redis_key('bad', VARIADIC ARRAY[NULL]::text[]);
SELECT wtcache.wait(NULL);
SELECT wtcache.get(NULL, '1');
SELECT wtcache.get('bad', NULL);
SELECT wtcache.get('bad', VARIADIC ARRAY[NULL]::text[]);
SELECT * FROM wtcache.get_many('bad', NULL);
SELECT * FROM wtcache.get_many('bad', ARRAY['1', NULL]);
SELECT wtcache.get_row(NULL::bad, NULL);
SELECT * FROM wtcache.query(NULL);
SELECT * FROM wtcache.query('SELECT 1', NULL, NULL, NULL);
SELECT * FROM wtcache.query_key(NULL);
SELECT wtcache.invalidate(NULL);
SELECT * FROM wtcache.verify(NULL);

-- empty arrays and wrong arity
SELECT wtcache.redis_key('bad', VARIADIC '{}'::text[]);
SELECT wtcache.redis_key('bad', '1', '2');
SELECT wtcache.redis_key('bad2', 'only one');
SELECT wtcache.get('bad', VARIADIC '{}'::text[]);
SELECT wtcache.get('bad2', 'a', '1', 'extra');
SELECT * FROM wtcache.get_many('bad', '{}');
SELECT * FROM wtcache.get_many('bad2', ARRAY['a', 'b']);
SELECT * FROM wtcache.get_many('bad2', ARRAY[['a', '1', 'x']]);
SELECT * FROM wtcache.get_many('bad', ARRAY[['1', '2']]);
SELECT wtcache.watch('bad', key => '{}');
SELECT wtcache.invalidate('{}');

-- values of the wrong type, or huge
SELECT wtcache.get('bad', 'not a number');
SELECT wtcache.get('bad', '99999999999');
SELECT wtcache.redis_key('bad', repeat('9', 100));
SELECT length(wtcache.redis_key('bad2', repeat('k', 100000), '1'));
SELECT wtcache.get('bad2', repeat('k', 100000), '1') IS NULL AS no_row;
SELECT wtcache.invalidate(ARRAY[repeat('t', 100000)]);
SELECT wtcache.wait('-1 day');
SELECT * FROM wtcache.verify('bad', -5);
SELECT * FROM wtcache.query('SELECT $1::int AS n', ARRAY['x']);
SELECT * FROM wtcache.query('SELEC 1');
SELECT * FROM wtcache.query('SELECT 1', ttl => '0 seconds');
SELECT * FROM wtcache.query('SELECT 1', tags => ARRAY['']);

-- unknown or unsuitable relations
SELECT wtcache.watch(0);
SELECT wtcache.watch(12345678);
SELECT wtcache.get(0, '1');
SELECT wtcache.get('pg_class', '1');
SELECT wtcache.redis_key('pg_class', '1');
SELECT wtcache.unwatch('pg_class');
SELECT wtcache.warm('pg_class');
SELECT * FROM wtcache.verify('pg_class');
SELECT wtcache.watch('wtcache.queue');
SELECT wtcache.watch('wtcache.status');

-- internal functions called by hand
SELECT wtcache._capture_when('bad', 'x', 1);
SELECT wtcache._capture_when('bad', 'u', 1);
SELECT wtcache._capture_when_tagged('bad', 'i', 0::int2, '{}', 1);
SELECT wtcache._capture_when_tagged('bad', 'i', 1::int2, NULL, 1);
SELECT wtcache._capture_when_tagged('bad', 'u', 1::int2, '{}', 1, 2, 3);
SELECT wtcache._row_type_table(1);
-- ... checked against the watch: count, types and templates of the table's
SELECT wtcache._capture_when('bad', 'i', 'not-a-number'::text);
SELECT wtcache._capture_when('bad', 'i', 1, 2);
SELECT wtcache._capture_when('bad', 'u', 1, 2::bigint);
SELECT wtcache._capture_when_tagged('bad', 'i', 1::int2, ARRAY['{0}'], 1, 'x'::text);
SELECT wtcache._capture_when('bad', 'i', 1) AS a_valid_call_answers_false;
CREATE TABLE unwatched_bad (id int PRIMARY KEY);
SELECT wtcache._capture_when('unwatched_bad', 'i', 1) AS unwatched_records_nothing;
SELECT count(*) AS queued_for_unwatched FROM wtcache.queue WHERE relid = 'unwatched_bad'::regclass;
-- set-aside changes: only the table's owner acts on them
SELECT wtcache.retry_set_aside(12345678);
SELECT wtcache.retry_set_aside('bad') AS none_set_aside;
SELECT wtcache.discard_set_aside('bad') AS none_discarded;
-- a table whose policies apply to its owner: wtcache reads rows as the owner
ALTER TABLE unwatched_bad ENABLE ROW LEVEL SECURITY;
ALTER TABLE unwatched_bad FORCE ROW LEVEL SECURITY;
CREATE ROLE wtc_bad_owner;
ALTER TABLE unwatched_bad OWNER TO wtc_bad_owner;
SET ROLE wtc_bad_owner;
SELECT wtcache.watch('unwatched_bad');
RESET ROLE;
DROP TABLE unwatched_bad;
DROP ROLE wtc_bad_owner;

-- without privileges
CREATE ROLE wtc_bad_nobody;
SET ROLE wtc_bad_nobody;
SELECT wtcache.watch('bad');
SELECT wtcache.unwatch('bad');
SELECT wtcache.resync('bad');
SELECT wtcache.warm('bad');
SELECT wtcache.get('bad', '1');
SELECT * FROM wtcache.get_many('bad', ARRAY['1']);
SELECT * FROM wtcache.verify('bad');
SELECT * FROM wtcache.query('SELECT * FROM bad');
SELECT wtcache._capture_when('bad', 'i', 1);
SELECT wtcache.retry_set_aside('bad');
SELECT wtcache.discard_set_aside();
SELECT wtcache._forget_table('bad'::regclass, 'public', 'bad');
SELECT wtcache._start_worker();
SELECT count(*) >= 0 AS can_read_status FROM wtcache.status;
RESET ROLE;
DROP ROLE wtc_bad_nobody;

SELECT wtcache.unwatch('bad', purge => false);
SELECT wtcache.unwatch('bad2', purge => false);
DROP TABLE bad, bad2;
