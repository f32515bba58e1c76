/* wtcache--1.1--1.2.sql */

\echo Use "ALTER EXTENSION wtcache UPDATE TO '1.2'" to load this file. \quit

-- 1.2: safe in a database shared by roles that do not trust each other.

-- Queue rows the worker could not deliver (the rows of their table could
-- not be read) are set aside with the reason instead of stopping delivery
-- of everything else; they stay in the queue, so their keys stay pending
-- and reads of them go to the table.  discard: given up by the DBA, to be
-- acknowledged without a push (after the removal of the table's keys).
ALTER TABLE wtcache.queue ADD COLUMN set_aside text;
ALTER TABLE wtcache.queue ADD COLUMN discard boolean NOT NULL DEFAULT false;

CREATE FUNCTION wtcache.retry_set_aside(rel regclass DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_retry_set_aside' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.retry_set_aside(regclass) IS
    'deliver again the changes of a table (all tables you own when NULL) that the worker set aside; returns how many queue rows';

CREATE FUNCTION wtcache.discard_set_aside(rel regclass DEFAULT NULL)
RETURNS bigint
    AS 'MODULE_PATHNAME', 'wtcache_discard_set_aside' LANGUAGE C CALLED ON NULL INPUT VOLATILE;
COMMENT ON FUNCTION wtcache.discard_set_aside(regclass) IS
    'give up the changes of a table (all tables you own when NULL) that the worker set aside, and remove the table''s keys from Redis; returns how many queue rows';

-- Capture triggers fire whatever session_replication_role says (a logical
-- replication subscriber applies changes as replica): watch() creates them
-- ENABLE ALWAYS from 1.2 on; the triggers of existing watches follow.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT tg.tgrelid::regclass AS rel, tg.tgname
          FROM pg_catalog.pg_trigger tg
          JOIN wtcache.watched w ON w.rel OPERATOR(pg_catalog.=) tg.tgrelid
         WHERE tg.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['wtcache_capture_ins', 'wtcache_capture_upd',
                                                          'wtcache_capture_del', 'wtcache_truncate']::pg_catalog.name[])
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.rel, t.tgname);
    END LOOP;
END
$$;

-- Immutable and safe in parallel workers: it only looks at its argument's type.
ALTER FUNCTION wtcache._row_type_table(anyelement) PARALLEL SAFE;
