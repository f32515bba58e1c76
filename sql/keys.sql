-- redis_key(): the Redis key of a row, exactly as the worker writes it.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE TABLE accounts (id bigint PRIMARY KEY, balance int);
CREATE SCHEMA "we.ird:schema";
CREATE TABLE "we.ird:schema"."ta{b}le" (k text PRIMARY KEY);
CREATE TABLE events (source text NOT NULL, at timestamptz NOT NULL, seq int NOT NULL,
                     PRIMARY KEY (source, at, seq));
CREATE TABLE by_uuid (id uuid PRIMARY KEY);
SELECT wtcache.watch('accounts');
SELECT wtcache.watch('"we.ird:schema"."ta{b}le"');
SELECT wtcache.watch('events');
SELECT wtcache.watch('by_uuid');

SELECT wtcache.redis_key('accounts', '42');
-- the value goes through the column's type: one row, one key
SELECT wtcache.redis_key('accounts', '042') = wtcache.redis_key('accounts', '42') AS same;
SELECT wtcache.redis_key('"we.ird:schema"."ta{b}le"', 'a:b{c}%d');
SELECT wtcache.redis_key('"we.ird:schema"."ta{b}le"', 'a:b') <> wtcache.redis_key('"we.ird:schema"."ta{b}le"', 'a%3Ab') AS distinct_keys;
SELECT wtcache.redis_key('by_uuid', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11');

-- session settings do not change a key
SET timezone = 'Asia/Tokyo';
SELECT wtcache.redis_key('events', 'src', '2024-01-02 12:04:05+09', '7');
SET timezone = 'UTC';
SET datestyle = 'SQL, DMY';
SELECT wtcache.redis_key('events', 'src', '2024-01-02 03:04:05+00', '7');
RESET datestyle;
RESET timezone;

-- bad input
SELECT wtcache.redis_key('accounts', '1', '2');
SELECT wtcache.redis_key('accounts', VARIADIC ARRAY[]::text[]);
SELECT wtcache.redis_key('accounts', 'forty-two');
SELECT wtcache.redis_key('accounts', VARIADIC ARRAY[NULL]::text[]);
CREATE TABLE unwatched (id int PRIMARY KEY);
SELECT wtcache.redis_key('unwatched', '1');

DELETE FROM wtcache.queue;
DROP TABLE accounts, "we.ird:schema"."ta{b}le", events, by_uuid, unwatched;
DROP SCHEMA "we.ird:schema";
