/*-------------------------------------------------------------------------
 * setaside.c
 *		Queue rows the worker could not deliver: retry or discard them.
 *
 * When the rows of a watched table cannot be read (its owner lost the
 * right to read it, its policies came to apply to its owner...), the worker
 * marks that table's queue rows with the reason (wtcache.queue.set_aside)
 * and goes on with the others (batch.c, deliver.c).  Such rows stay queue rows: their
 * keys stay pending (pending.c), so cached reads of them go to the table,
 * and wtcache.status counts them.  The DBA, or the table's owner, then
 *	- retries them once the cause is fixed: the mark is cleared and the
 *	  worker claims them again, in id order as ever;
 *	- or discards them: the worker acknowledges them without pushing, and
 *	  since Redis may then hold older values of their keys, the table's keys
 *	  are removed from Redis first (a whole-table entry, as TRUNCATE
 *	  queues), to be refilled from the table by reads.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "rights.h"
#include "setaside.h"
#include "watch.h"
#include "queue.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

/*
 * Does this database's wtcache.queue have the set_aside column?  Not before
 * ALTER EXTENSION wtcache UPDATE to 1.2: until then the worker stops at a
 * table it cannot read, as before.
 */
bool
wtcache_queue_can_set_aside(void)
{
	Oid			queue = wtcache_queue_relid();

	return OidIsValid(queue) && get_attnum(queue, "set_aside") != InvalidAttrNumber;
}

/* Rows the worker set aside, given up by nobody yet, and not a hold ($1: the hold's reason) */
#define SET_ASIDE_BY_THE_WORKER \
	"set_aside IS NOT NULL AND NOT discard AND set_aside OPERATOR(pg_catalog.<>) $1"

/*
 * The tables whose set-aside rows the caller may act on: rel alone (the
 * caller must own it), or, for NULL, every table with set-aside rows that
 * the caller owns (a superuser owns them all).
 */
static List *
set_aside_tables(FunctionCallInfo fcinfo)
{
	List	   *rels = NIL;
	MemoryContext outer = CurrentMemoryContext;

	if (!PG_ARGISNULL(0))
	{
		Oid			relid = PG_GETARG_OID(0);

		wtcache_check_table_owner(relid);
		return list_make1_oid(relid);
	}
	if (wtcache_spi_as_extension_owner("SELECT DISTINCT relid FROM wtcache.queue WHERE " SET_ASIDE_BY_THE_WORKER,
									   1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(WTCACHE_HOLD_REASON)},
									   NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.queue lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		/* a table dropped since: the worker acknowledges its rows by itself */
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			continue;
		if (pg_class_ownercheck(relid, GetUserId()))
		{
			MemoryContext spi = MemoryContextSwitchTo(outer);

			rels = lappend_oid(rels, relid);
			MemoryContextSwitchTo(spi);
		}
	}
	return rels;
}

/*
 * Retry (clear the mark) or discard the set-aside rows of the tables the
 * caller may act on; returns how many queue rows.  Rows that hold a table
 * whose capture triggers are disabled (wtcache_hold_table) are not the
 * worker's set-aside rows: only enabling the triggers releases them.
 */
static int64
act_on_set_aside(FunctionCallInfo fcinfo, bool discard)
{
	List	   *rels;
	ListCell   *lc;
	int64		total = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rels = set_aside_tables(fcinfo);
	foreach(lc, rels)
	{
		Oid			relid = lfirst_oid(lc);
		Datum		values[2] = {CStringGetTextDatum(WTCACHE_HOLD_REASON), ObjectIdGetDatum(relid)};
		int			rc;

		rc = wtcache_spi_as_extension_owner(discard ?
											"UPDATE wtcache.queue SET discard = true "
											"WHERE relid OPERATOR(pg_catalog.=) $2 AND " SET_ASIDE_BY_THE_WORKER :
											"UPDATE wtcache.queue SET set_aside = NULL "
											"WHERE relid OPERATOR(pg_catalog.=) $2 AND " SET_ASIDE_BY_THE_WORKER,
											2, (Oid[]) {TEXTOID, OIDOID}, values, NULL, false, 0);
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "wtcache: updating set-aside queue rows failed: %s", SPI_result_code_string(rc));
		/* Redis may hold older values of those keys: remove the table's keys */
		if (discard && SPI_processed > 0)
			wtcache_enqueue_table_removal(relid);
		total += (int64) SPI_processed;
	}
	SPI_finish();
	if (total > 0)
		wtcache_note_live_enqueued(0);	/* claimable again: walk to them */
	return total;
}

/* wtcache.retry_set_aside(rel regclass DEFAULT NULL) RETURNS bigint */
PG_FUNCTION_INFO_V1(wtcache_retry_set_aside);
Datum
wtcache_retry_set_aside(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(act_on_set_aside(fcinfo, false));
}

/* wtcache.discard_set_aside(rel regclass DEFAULT NULL) RETURNS bigint */
PG_FUNCTION_INFO_V1(wtcache_discard_set_aside);
Datum
wtcache_discard_set_aside(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(act_on_set_aside(fcinfo, true));
}

/*
 * Capture triggers disabled (ALTER TABLE ... DISABLE TRIGGER, as
 * pg_restore --disable-triggers does): the table's changes are no longer
 * captured, so Redis must not be served for it.  A whole-table queue row,
 * set aside with WTCACHE_HOLD_REASON, keeps the table's pending counter
 * raised: reads of the table go to the table and wait() says why it cannot
 * be true, until the triggers are enabled again (wtcache_release_table).
 * Needs SPI.
 */
void
wtcache_hold_table(Oid relid, const char *table_key)
{
	WtcRights	rights;
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		values[2];
	int			rc;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(WTCACHE_HOLD_REASON);
	wtcache_rights_enter(&rights, wtcache_owner(), false);
	rc = SPI_execute_with_args("SELECT FROM wtcache.queue WHERE relid OPERATOR(pg_catalog.=) $1 "
							   "AND set_aside OPERATOR(pg_catalog.=) $2 AND NOT discard",
							   2, argtypes, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache: holding the reads of a table failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		QueueRow	row = {0};

		row.relid = relid;
		row.table_key = unconstify(char *, table_key);
		row.per_table = true;
		row.set_aside = WTCACHE_HOLD_REASON;
		wtcache_queue_write(&row);
	}
	wtcache_rights_leave(&rights);
}

/*
 * The capture triggers are enabled again: the hold goes (the worker
 * acknowledges it), and the caller requeues the table, whose changes made
 * meanwhile were not captured.  True if there was a hold.  Needs SPI.
 */
bool
wtcache_release_table(Oid relid)
{
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		values[2];
	int			rc;

	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(WTCACHE_HOLD_REASON);
	rc = wtcache_spi_as_extension_owner("UPDATE wtcache.queue SET discard = true WHERE relid OPERATOR(pg_catalog.=) $1 "
										"AND set_aside OPERATOR(pg_catalog.=) $2 AND NOT discard",
										2, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "wtcache: releasing the reads of a table failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		wtcache_note_live_enqueued(0);
	return SPI_processed > 0;
}
