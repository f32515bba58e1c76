# WtcacheFuzz::Schema: the tables of the consistency fuzzer
# (test/t/014_fuzz.pl) and the bookkeeping its checks rest on.
package WtcacheFuzz::Schema;

use strict;
use warnings;

use Exporter 'import';

use WtcacheFuzz::Generate qw(fuzz_table fuzz_tables);

our @EXPORT = qw(create_tables create_queue_audit);

# The watched tables of WtcacheFuzz::Generate (not watched yet; fz_part
# and fz_pl with their partitions, whose row triggers PostgreSQL clones
# to every partition, now and later),
# fz_inc and fz_dead, and the triggers that keep inc, ver and fz_dead.
sub create_tables
{
	my ($node, $db) = @_;
	my $sql = sub { return $node->safe_psql($db, $_[0]); };

	# fz_dead: every incarnation that died (deleted, moved by a key change,
	# truncated), with the top-level transaction that killed it.  The readers'
	# check compares it with their snapshots.
	$sql->(q{
CREATE SEQUENCE fz_inc;
CREATE TABLE fz_dead (tbl text NOT NULL, inc bigint NOT NULL, xid xid8 NOT NULL);
CREATE INDEX ON fz_dead (inc);
CREATE TABLE fz_int (id int PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                     name text, qty int, price numeric, tags int[], doc jsonb, at timestamptz, big text);
CREATE TABLE fz_comp (org text, n int, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                      v text, note text, amount numeric, at timestamptz, PRIMARY KEY (org, n));
CREATE TABLE fz_text (k text PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                      payload jsonb, amount numeric, at timestamptz, tags int[], big text);
CREATE TABLE fz_hash (id int PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                      name text, qty int, price numeric, tags int[], doc jsonb, at timestamptz, secret text);
CREATE TABLE fz_inv (id int PRIMARY KEY, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                     v text, doc jsonb, at timestamptz, qty int);
CREATE TABLE fz_part (id int, bucket int, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                      v text, qty int, doc jsonb, at timestamptz, PRIMARY KEY (id, bucket)) PARTITION BY RANGE (bucket);
CREATE TABLE fz_part_b0 PARTITION OF fz_part FOR VALUES FROM (0) TO (10);
CREATE TABLE fz_part_b10 PARTITION OF fz_part FOR VALUES FROM (10) TO (20) PARTITION BY HASH (id);
CREATE TABLE fz_part_b10_h0 PARTITION OF fz_part_b10 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE fz_part_b10_h1 PARTITION OF fz_part_b10 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE fz_part_def PARTITION OF fz_part DEFAULT;
CREATE TABLE fz_pl (id int, bucket int, inc bigint NOT NULL DEFAULT 0, ver int NOT NULL DEFAULT 0,
                    v text, qty int, amount numeric, PRIMARY KEY (id, bucket)) PARTITION BY RANGE (bucket);
CREATE TABLE fz_pl_b0 PARTITION OF fz_pl FOR VALUES FROM (0) TO (10);
CREATE TABLE fz_pl_b10 PARTITION OF fz_pl FOR VALUES FROM (10) TO (20);
CREATE TABLE fz_pl_b20 PARTITION OF fz_pl FOR VALUES FROM (20) TO (30);
CREATE TABLE fz_pl_b30 PARTITION OF fz_pl FOR VALUES FROM (30) TO (40);
-- DETACH PARTITION ... CONCURRENTLY (the part_detach_conc fault) runs
-- outside a transaction block, in two transactions: its rows leave the
-- parent when the first one commits, so they are written to fz_dead in
-- it, here, once no writer can change them (SHARE lock, held to its
-- commit).  The plain DETACH, DROP and TRUNCATE faults write fz_dead
-- themselves, in the statement's transaction.
CREATE FUNCTION fz_detach_concurrently() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
    m text[];
BEGIN
    m := regexp_match(current_query(), '^ALTER TABLE (\w+) DETACH PARTITION (\w+) CONCURRENTLY');
    IF m IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %I IN SHARE MODE', m[2]);
        EXECUTE format('INSERT INTO fz_dead SELECT %L, inc, pg_current_xact_id() FROM %I', m[1], m[2]);
    END IF;
END $$;
CREATE EVENT TRIGGER fz_detach_concurrently ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION fz_detach_concurrently();
CREATE FUNCTION fz_track_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO fz_dead SELECT %L, inc, pg_current_xact_id() FROM %I', TG_TABLE_NAME, TG_TABLE_NAME);
    RETURN NULL;
END $$;
});

	# inc and ver are set by a BEFORE trigger, not by the statements, so that
	# every path (ON CONFLICT DO UPDATE, an UPDATE re-checked after a
	# concurrent one, COPY) counts exactly once: INSERT starts an incarnation
	# at ver 0, an UPDATE that keeps the key adds 1 to ver, one that changes
	# the key ends the incarnation and starts another.  (A user trigger that
	# rewrites NEW is also something wtcache's capture must live with.)  The
	# key comparison is dynamic SQL: the alter_key fault changes the type of
	# a key column, and PL/pgSQL's cached plan of NEW.id would then fail in
	# every session that ran it before ("type of parameter ... does not match
	# that when preparing the plan").  The triggers fire whatever
	# session_replication_role says (ENABLE ALWAYS), as wtcache's do, so that
	# inc, ver and fz_dead are kept by the writers' replica-role transactions
	# too.
	for my $tn (fuzz_tables())
	{
		my $t = fuzz_table($tn);
		my $new = join(', ', map { "(\$1).$_" } @{ $t->{keycols} });
		my $old = join(', ', map { "(\$2).$_" } @{ $t->{keycols} });
		$sql->(qq{
CREATE FUNCTION fz_track_$tn() RETURNS trigger LANGUAGE plpgsql AS \$\$
DECLARE
    moved boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.inc := nextval('fz_inc');
        NEW.ver := 0;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE 'SELECT ROW($new) IS DISTINCT FROM ROW($old)' INTO moved USING NEW, OLD;
        IF moved THEN
            INSERT INTO fz_dead VALUES ('$tn', OLD.inc, pg_current_xact_id());
            NEW.inc := nextval('fz_inc');
            NEW.ver := 0;
        ELSE
            NEW.inc := OLD.inc;
            NEW.ver := OLD.ver + 1;
        END IF;
        RETURN NEW;
    END IF;
    INSERT INTO fz_dead VALUES ('$tn', OLD.inc, pg_current_xact_id());
    RETURN OLD;
END \$\$;
CREATE TRIGGER fz_track BEFORE INSERT OR UPDATE OR DELETE ON $tn
    FOR EACH ROW EXECUTE FUNCTION fz_track_$tn();
CREATE TRIGGER fz_track_truncate BEFORE TRUNCATE ON $tn
    FOR EACH STATEMENT EXECUTE FUNCTION fz_track_truncate();
ALTER TABLE $tn ENABLE ALWAYS TRIGGER fz_track;
ALTER TABLE $tn ENABLE ALWAYS TRIGGER fz_track_truncate;
});
	}
	return;
}

# FUZZ_AUDIT: every row written to wtcache.queue copied, with its
# transaction, to fz_queue_audit, and every row the worker deletes
# (acknowledges) recorded in fz_queue_acked, for a post-mortem.
sub create_queue_audit
{
	my ($node, $db) = @_;
	my $sql = sub { return $node->safe_psql($db, $_[0]); };
	$sql->(q{
CREATE TABLE fz_queue_audit (id bigint, relid oid, keys text[], table_key text, per_table boolean,
                             xid xid8, at timestamptz);
CREATE FUNCTION fz_queue_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fz_queue_audit VALUES (NEW.id, NEW.relid, NEW.keys, NEW.table_key, NEW.per_table,
                                       pg_current_xact_id(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER fz_queue_audit AFTER INSERT ON wtcache.queue FOR EACH ROW EXECUTE FUNCTION fz_queue_audit();
CREATE TABLE fz_queue_acked (id bigint, pid int, xid xid8, at timestamptz);
CREATE FUNCTION fz_queue_acked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fz_queue_acked VALUES (OLD.id, pg_backend_pid(), pg_current_xact_id(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER fz_queue_acked AFTER DELETE ON wtcache.queue FOR EACH ROW EXECUTE FUNCTION fz_queue_acked();
ALTER TABLE wtcache.queue ENABLE ALWAYS TRIGGER fz_queue_audit;
ALTER TABLE wtcache.queue ENABLE ALWAYS TRIGGER fz_queue_acked;
});
	return;
}

1;
