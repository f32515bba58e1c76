/*-------------------------------------------------------------------------
 * fence.c
 *		wtcache.wait(timeout): the read-your-writes fence.
 *
 * wait() returns true once Redis holds everything committed before the
 * call.  That takes two things:
 *
 *	1. Every change committed before the call was acknowledged by Redis.
 *	   The worker deletes queue rows only after Redis acknowledged them, so
 *	   this is "every queue row visible at the call is gone".  Rows this
 *	   transaction wrote itself are not committed yet and are left out.
 *	2. Redis did not lose any of them since.  A FLUSHALL, a restart without
 *	   persistence or a failover to a replica that missed writes takes
 *	   acknowledged changes away; the worker notices from the generation
 *	   markers, but only when it next checks them.  So the waiter asks the
 *	   worker for a check that starts after step 1, and takes its answer:
 *	   Redis whole, and the fence holds; or Redis lost data, and then the
 *	   worker has queued every watched row again before answering, so the
 *	   waiter goes back to step 1 with those rows in view.
 *
 * The handshake uses three counters in the worker's slot (wtcache.h):
 * a waiter takes a ticket (fence_requested + 1) and wakes the worker; the
 * worker notes the newest ticket before it sends a marker check (an
 * explicit one, or the marker updates at the end of a batch) and, once the
 * replies are in, publishes it as confirmed or, after queueing a resync,
 * as repaired.  Many waiters share one check.  Tickets only grow, so a
 * waiter compares numbers and never misses an answer.
 *
 * A standby has no worker to ask: there wait() is step 1 alone, on the
 * queue replicated from the primary.
 *
 * Each poll runs with a fresh snapshot, so the fence needs READ COMMITTED.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "fence.h"
#include "rights.h"
#include "setaside.h"
#include "settings.h"
#include "shmem.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

/* ---------------------------------------------------------------------
 * The worker's side
 * ---------------------------------------------------------------------
 */

/* The newest ticket a check that starts now answers. */
uint64
wtcache_fence_ticket_to_serve(WorkerSlot *slot)
{
	uint64		ticket;

	SpinLockAcquire(&slot->mutex);
	ticket = slot->fence_requested;
	SpinLockRelease(&slot->mutex);
	return ticket;
}

/* Is a waiter waiting for a ticket no check has answered yet? */
bool
wtcache_fence_waiting(WorkerSlot *slot)
{
	bool		waiting;

	SpinLockAcquire(&slot->mutex);
	waiting = slot->fence_requested > Max(slot->fence_confirmed, slot->fence_repaired);
	SpinLockRelease(&slot->mutex);
	return waiting;
}

void
wtcache_fence_confirmed(WorkerSlot *slot, uint64 ticket)
{
	SpinLockAcquire(&slot->mutex);
	if (ticket > slot->fence_confirmed)
		slot->fence_confirmed = ticket;
	SpinLockRelease(&slot->mutex);
}

/* Call once the resync's rows are committed, before anything is confirmed after it. */
void
wtcache_fence_repaired(WorkerSlot *slot, uint64 ticket)
{
	SpinLockAcquire(&slot->mutex);
	if (ticket > slot->fence_repaired)
		slot->fence_repaired = ticket;
	SpinLockRelease(&slot->mutex);
}

/* ---------------------------------------------------------------------
 * The waiter's side
 * ---------------------------------------------------------------------
 */

typedef enum FenceAnswer
{
	FENCE_WAITING,
	FENCE_CONFIRMED,
	FENCE_REPAIRED				/* Redis lost data: look at the queue again */
} FenceAnswer;

/*
 * Take a ticket from this database's worker and wake it.  False when the
 * database has no worker slot yet; ask_for_worker: then ask for one.
 */
static bool
fence_take_ticket(uint64 *ticket, bool ask_for_worker)
{
	WorkerSlot *slot;
	Latch	   *latch = NULL;

	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	slot = wtcache_find_slot(MyDatabaseId);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		*ticket = ++slot->fence_requested;
		if (slot->pid != 0)
			latch = slot->latch;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(WtcacheSharedState->lock);
	if (slot == NULL)
	{
		if (ask_for_worker)
			wtcache_request_worker(MyDatabaseId);
		return false;
	}
	if (latch != NULL)
		SetLatch(latch);
	return true;
}

/*
 * The worker's answer to a ticket (0: none asked yet).  While there is
 * none, flush the WAL the worker waits for the WAL writer to flush
 * (durable.c, batch_durable): it sends asynchronous commits, and the marker
 * check that answers a ticket, up to twice wal_writer_delay later, and a
 * caller waiting for changes should not wait for that.  What the worker
 * waits for covers the caller's changes if they are in its batch.
 */
static FenceAnswer
fence_poll_worker(uint64 ticket)
{
	WorkerSlot *slot;
	FenceAnswer answer = FENCE_WAITING;
	XLogRecPtr	awaited = InvalidXLogRecPtr;

	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	slot = wtcache_find_slot(MyDatabaseId);
	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		/* repaired first: a check after the repair confirms the marker it set */
		if (ticket > 0 && slot->fence_repaired >= ticket)
			answer = FENCE_REPAIRED;
		else if (ticket > 0 && slot->fence_confirmed >= ticket)
			answer = FENCE_CONFIRMED;
		awaited = slot->wal_awaited;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(WtcacheSharedState->lock);
	if (answer == FENCE_WAITING && awaited > GetFlushRecPtr(NULL))
		XLogFlush(awaited);
	return answer;
}

/*
 * The queue rows visible now that are not this transaction's own: the
 * changes committed before this moment that Redis may not have yet.
 */
static ArrayType *
fence_visible_queue_ids(int *nids)
{
	Datum	   *ids;
	int			n = 0;

	if (SPI_execute("SELECT id, xmin FROM wtcache.queue", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.queue scan failed");
	ids = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		TransactionId xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 2, &isnull));

		if (!TransactionIdIsCurrentTransactionId(xmin))
			ids[n++] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
	}
	*nids = n;
	return construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * Are some of these queue rows still there?  *set_aside: the table of one
 * that the worker set aside (it waits for a DBA, not for Redis), or
 * InvalidOid.
 */
static bool
fence_queue_rows_remain(ArrayType *idarr, bool can_set_aside, Oid *set_aside)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1] = {PointerGetDatum(idarr)};
	bool		isnull;

	*set_aside = InvalidOid;
	if (SPI_execute_with_args(can_set_aside ?
							  "SELECT relid, set_aside IS NOT NULL AND NOT discard AS aside FROM wtcache.queue "
							  "WHERE id OPERATOR(pg_catalog.=) ANY($1) ORDER BY aside DESC LIMIT 1" :
							  "SELECT relid, false FROM wtcache.queue WHERE id OPERATOR(pg_catalog.=) ANY($1) LIMIT 1",
							  1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.queue scan failed");
	if (SPI_processed == 0)
		return false;
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		*set_aside = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return true;
}

/*
 * True once Redis holds every change committed before the call (and not
 * this transaction's own), false at the timeout.  Also used by verify() to
 * let changes in flight land before it reports a difference.
 */
bool
wtcache_fence(int64 timeout_ms)
{
	TimestampTz deadline;
	WtcRights	rights;
	ArrayType  *idarr;
	int			nids;
	uint64		ticket = 0;
	bool		have_ticket = false;
	long		sleep_ms = 1;
	bool		held = false;
	bool		asked_for_worker = false;
	bool		can_set_aside;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wtcache cannot see delivery progress in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Call it after COMMIT, or in a READ COMMITTED transaction.")));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	/* the queue is not the caller's to read: read it as its owner, immune to the caller's objects */
	wtcache_rights_enter(&rights, wtcache_owner(), false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	idarr = fence_visible_queue_ids(&nids);
	can_set_aside = wtcache_queue_can_set_aside();

	for (;;)
	{
		Oid			set_aside;

		if (nids > 0 && !fence_queue_rows_remain(idarr, can_set_aside, &set_aside))
			nids = 0;
		else if (nids > 0 && !OidIsValid(set_aside) && !RecoveryInProgress())
			(void) fence_poll_worker(0);
		else if (nids > 0 && OidIsValid(set_aside))
		{
			/* Redis will not have it before a DBA acts: say so, do not wait */
			char	   *relname = get_rel_name(set_aside);

			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("wtcache: changes of table \"%s\" committed before this call are set aside",
							relname ? relname : "(dropped)"),
					 errdetail("The worker could not read that table's rows; wtcache.status shows why. Redis does not hold those changes, and cached reads of them go to the table."),
					 errhint("Fix the cause and run wtcache.retry_set_aside(), or give them up with wtcache.discard_set_aside().")));
			break;
		}
		if (nids == 0 && RecoveryInProgress())
		{
			/* a standby has no worker to ask: the replicated queue is all it sees */
			held = true;
			break;
		}
		if (nids == 0)
		{
			/* step 2: a marker check that starts after the rows were acknowledged */
			if (!have_ticket)
			{
				have_ticket = fence_take_ticket(&ticket, !asked_for_worker);
				asked_for_worker = true;
			}
			if (have_ticket)
			{
				FenceAnswer answer = fence_poll_worker(ticket);

				if (answer == FENCE_CONFIRMED)
				{
					held = true;
					break;
				}
				if (answer == FENCE_REPAIRED)
				{
					/* the resync's rows are committed: wait for them, then ask again */
					idarr = fence_visible_queue_ids(&nids);
					have_ticket = false;
					sleep_ms = 1;
					continue;
				}
			}
		}
		if (GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		sleep_ms = Min(sleep_ms * 2, 20);
	}
	SPI_finish();
	wtcache_rights_leave(&rights);
	return held;
}

PG_FUNCTION_INFO_V1(wtcache_wait);
Datum
wtcache_wait(PG_FUNCTION_ARGS)
{
	int64		timeout_ms = wtcache_interval_ms(PG_GETARG_INTERVAL_P(0));

	wtcache_require_preload();
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	PG_RETURN_BOOL(wtcache_fence(timeout_ms));
}
