/*-------------------------------------------------------------------------
 * progress.c
 *		The progress of long operations: wtcache.progress, in the spirit
 *		of PostgreSQL's pg_stat_progress_* views.
 *
 * A warm, a resync, the requeue after DDL and the worker's repair after
 * Redis lost data list a table's rows into the queue (per_table rows of up
 * to 1,000 keys, capture.c) in one transaction, and the worker delivers
 * them later; purges are the worker's SCAN + UNLINK.  Each operation is an
 * entry of its database's WorkerSlot (shmem.h): the backend that lists the
 * rows adds each chunk it writes (rows_queued, and the range of queue ids
 * drawn), the worker adds each acknowledged batch's per-table rows whose
 * id falls in an entry's range (rows_delivered).  So one update per 1,000
 * rows on one side and one per batch on the other, never per row.
 *
 * Life of an entry:
 *	queueing			the backend lists the rows (pid: the backend)
 *	waiting for commit	listed, its transaction still open
 *	delivering			committed: the worker delivers (pid: the worker)
 *	removing keys		a purge (the worker)
 *	finished			every row delivered, or the queue found empty after
 *						its commit (rows set aside or discarded never
 *						arrive), or the purge done.  Kept, for
 *						wtcache.progress_finished, until its entry is
 *						needed again.
 * An abort (of the transaction, or of the subtransaction it began in)
 * forgets the entry: its rows were never committed.
 *
 * Locking: slot->progress_mutex, a spinlock, guards slot->progress[];
 * held only to copy or to change a few fields, never across anything that
 * can fail or allocate.  The slot itself is found under the shared lock.
 *
 * An operation on a table that another operation on the same table is
 * also delivering (two warms at once) is matched by its queue ids, so the
 * two are told apart; when the queue's layout hides the ids
 * (queue.c: a queue with triggers or rules), by table alone.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "progress.h"
#include "shmem.h"
#include "stats.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

static const char *const op_names[] = {"requeue", "warm", "resync", "repair", "purge"};
static const char *const phase_names[] = {"queueing", "waiting for commit", "delivering",
"removing keys", "finished"};

/* what the next rows this backend lists are for (set_op) */
static WtcProgressOp current_op = WTC_PROGRESS_REQUEUE;

/* this backend has entries in queueing or waiting for commit */
static bool have_entries = false;

/* the worker's purge in progress: its entry, or -1 */
static WorkerSlot *purge_slot = NULL;
static int	purge_entry = -1;

static WorkerSlot *
my_slot(void)
{
	WorkerSlot *slot;

	if (WtcacheSharedState == NULL || !OidIsValid(MyDatabaseId))
		return NULL;
	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	slot = wtcache_find_slot(MyDatabaseId);
	LWLockRelease(WtcacheSharedState->lock);
	return slot;
}

/*
 * A free entry, or the one that finished first, or else the one the
 * worker has been delivering the longest (a Redis outage keeps operations
 * delivering: the newest are the ones to show).  Caller holds the mutex.
 * -1 when every entry is being listed: the operation runs without
 * progress.
 */
static int
entry_alloc(WorkerSlot *slot)
{
	int			finished = -1;
	int			delivering = -1;

	for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
	{
		ProgressEntry *e = &slot->progress[i];

		if (!e->in_use)
			return i;
		if (e->phase == WTC_PHASE_FINISHED &&
			(finished < 0 || e->finished_at < slot->progress[finished].finished_at))
			finished = i;
		/* a prepared transaction's (pid 0) may never be committed */
		if ((e->phase == WTC_PHASE_DELIVERING ||
			 (e->phase == WTC_PHASE_WAITING_COMMIT && e->pid == 0)) &&
			(delivering < 0 || e->started_at < slot->progress[delivering].started_at))
			delivering = i;
	}
	return finished >= 0 ? finished : delivering;
}

static void
entry_start(ProgressEntry *e, WtcProgressOp op, WtcProgressPhase phase, pid_t pid,
			Oid relid, TimestampTz now)
{
	memset(e, 0, sizeof(*e));
	e->in_use = true;
	e->op = (uint8) op;
	e->phase = (uint8) phase;
	e->pid = pid;
	e->relid = relid;
	e->total = -1;
	e->started_at = now;
	e->subid = GetCurrentSubTransactionId();
}

/* This backend's entry of relid still being listed; caller holds the mutex. */
static ProgressEntry *
my_queueing_entry(WorkerSlot *slot, Oid relid)
{
	for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
	{
		ProgressEntry *e = &slot->progress[i];

		if (e->in_use && e->pid == MyProcPid && e->relid == relid &&
			e->phase == WTC_PHASE_QUEUEING)
			return e;
	}
	return NULL;
}

/* ---------------------------------------------------------------------
 * The backend that lists the rows
 * ---------------------------------------------------------------------
 */

/*
 * What the rows listed from now on are for; returns what it was, for the
 * caller to put back.  An error in between is reset by the transaction's
 * end.
 */
WtcProgressOp
wtcache_progress_set_op(WtcProgressOp op)
{
	WtcProgressOp old = current_op;

	current_op = op;
	return old;
}

/*
 * This backend's entry listing relid, or a new one started now (NULL: all
 * taken).  Under progress_mutex.
 */
static ProgressEntry *
queueing_entry_or_start(WorkerSlot *slot, Oid relid, TimestampTz now)
{
	ProgressEntry *e = my_queueing_entry(slot, relid);

	if (e == NULL)
	{
		int			i = entry_alloc(slot);

		if (i >= 0)
		{
			e = &slot->progress[i];
			entry_start(e, current_op, WTC_PHASE_QUEUEING, MyProcPid, relid, now);
		}
	}
	return e;
}

/*
 * An operation on relid starts listing about estimate rows (the planner's
 * estimate of its scan; negative: unknown).
 */
void
wtcache_progress_begin(Oid relid, double estimate)
{
	WorkerSlot *slot = my_slot();
	TimestampTz now = GetCurrentTimestamp();
	ProgressEntry *e;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->progress_mutex);
	e = queueing_entry_or_start(slot, relid, now);
	if (e != NULL && estimate >= 0)
	{
		e->total = (int64) estimate;
		e->total_estimated = true;
	}
	SpinLockRelease(&slot->progress_mutex);
	if (e != NULL)
		have_entries = true;
}

/*
 * A chunk of rows rows of relid was written to the queue with id (0:
 * unknown).  Rows listed without wtcache_progress_begin (partition DDL)
 * start an operation of their own.
 */
void
wtcache_progress_queued(Oid relid, int64 rows, int64 id)
{
	WorkerSlot *slot = my_slot();
	TimestampTz now = GetCurrentTimestamp();
	ProgressEntry *e;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->progress_mutex);
	e = queueing_entry_or_start(slot, relid, now);
	if (e != NULL)
	{
		e->queued += rows;
		if (e->total >= 0 && e->queued > e->total)
			e->total = e->queued;
		if (id <= 0 || e->id_lo < 0)
			e->id_lo = -1;		/* unknown from now on: matched by table */
		else
		{
			if (e->id_lo == 0 || id < e->id_lo)
				e->id_lo = id;
			if (id > e->id_hi)
				e->id_hi = id;
		}
	}
	SpinLockRelease(&slot->progress_mutex);
	if (e != NULL)
		have_entries = true;
}

/* Every row of relid is listed: the total is known now. */
void
wtcache_progress_listed(Oid relid)
{
	WorkerSlot *slot = my_slot();
	ProgressEntry *e;

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->progress_mutex);
	e = my_queueing_entry(slot, relid);
	if (e != NULL)
	{
		e->phase = WTC_PHASE_WAITING_COMMIT;
		e->total = e->queued;
		e->total_estimated = false;
	}
	SpinLockRelease(&slot->progress_mutex);
}

/*
 * At commit the listed rows become the worker's to deliver; at abort they
 * never existed.  A prepared transaction's rows wait for COMMIT PREPARED,
 * which may come from any session: its entries become the worker's, and
 * finish when their rows are delivered.
 */
void
wtcache_progress_xact_event(XactEvent event)
{
	WorkerSlot *slot;
	TimestampTz now;
	bool		commit = event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT;
	bool		abort = event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT;
	bool		prepare = event == XACT_EVENT_PREPARE;

	if (!(commit || abort || prepare))
		return;
	current_op = WTC_PROGRESS_REQUEUE;
	if (!have_entries)
		return;
	have_entries = false;
	slot = my_slot();
	if (slot == NULL)
		return;
	now = GetCurrentTimestamp();
	SpinLockAcquire(&slot->progress_mutex);
	for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
	{
		ProgressEntry *e = &slot->progress[i];

		if (!e->in_use || e->pid != MyProcPid ||
			(e->phase != WTC_PHASE_QUEUEING && e->phase != WTC_PHASE_WAITING_COMMIT))
			continue;
		if (abort)
		{
			e->in_use = false;
			continue;
		}
		e->total = e->queued;
		e->total_estimated = false;
		e->pid = 0;
		if (prepare)
		{
			e->phase = WTC_PHASE_WAITING_COMMIT;
			continue;
		}
		e->committed_at = now;
		e->phase = WTC_PHASE_DELIVERING;
		/* nothing to deliver, or the worker was quicker than this callback */
		if (e->delivered >= e->queued)
		{
			e->phase = WTC_PHASE_FINISHED;
			e->finished_at = now;
		}
	}
	SpinLockRelease(&slot->progress_mutex);
}

void
wtcache_progress_subxact_event(SubXactEvent event, SubTransactionId mySubid,
							   SubTransactionId parentSubid)
{
	WorkerSlot *slot;

	if (!have_entries || (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB))
		return;
	slot = my_slot();
	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->progress_mutex);
	for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
	{
		ProgressEntry *e = &slot->progress[i];

		if (!e->in_use || e->pid != MyProcPid || e->subid != mySubid ||
			(e->phase != WTC_PHASE_QUEUEING && e->phase != WTC_PHASE_WAITING_COMMIT))
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			e->in_use = false;
		else
			e->subid = parentSubid;
	}
	SpinLockRelease(&slot->progress_mutex);
}

/* ---------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------
 */

/*
 * A batch's per-table queue rows were acknowledged (deliver.c), once per
 * batch.  Each counts for the operation whose ids it is among.
 */
void
wtcache_progress_delivered(WorkerSlot *slot, const ProgressDelivery *d, int n)
{
	TimestampTz now;

	if (n == 0)
		return;
	now = GetCurrentTimestamp();
	SpinLockAcquire(&slot->progress_mutex);
	for (int k = 0; k < n; k++)
	{
		ProgressEntry *match = NULL;

		for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
		{
			ProgressEntry *e = &slot->progress[i];

			if (!e->in_use || e->relid != d[k].relid || e->phase == WTC_PHASE_QUEUEING ||
				e->phase == WTC_PHASE_FINISHED || e->phase == WTC_PHASE_REMOVING)
				continue;
			if (e->id_lo > 0 && d[k].id >= e->id_lo && d[k].id <= e->id_hi)
			{
				match = e;
				break;
			}
			if (e->id_lo <= 0 && match == NULL)
				match = e;
		}
		if (match == NULL)
			continue;
		match->delivered += d[k].rows;
		/* a prepared transaction's rows (pid 0) arrive once it committed */
		if ((match->phase == WTC_PHASE_DELIVERING || match->pid == 0) &&
			match->delivered >= match->queued)
		{
			match->phase = WTC_PHASE_FINISHED;
			match->finished_at = now;
		}
	}
	SpinLockRelease(&slot->progress_mutex);
}

/*
 * A claim that started at claimed_at found nothing to deliver: every
 * operation whose rows were visible to it is over (its rows set aside,
 * discarded, or gone with their table never arrive).
 */
void
wtcache_progress_queue_empty(WorkerSlot *slot, TimestampTz claimed_at)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->progress_mutex);
	for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
	{
		ProgressEntry *e = &slot->progress[i];

		if (e->in_use && e->phase == WTC_PHASE_DELIVERING &&
			e->committed_at != 0 && e->committed_at < claimed_at)
		{
			e->phase = WTC_PHASE_FINISHED;
			e->finished_at = now;
		}
	}
	SpinLockRelease(&slot->progress_mutex);
}

/* The worker starts removing keys (relid: a table's, or 0: the database's). */
void
wtcache_progress_purge_begin(WorkerSlot *slot, WtcProgressOp op, Oid relid)
{
	TimestampTz now = GetCurrentTimestamp();

	wtcache_progress_purge_end();
	SpinLockAcquire(&slot->progress_mutex);
	purge_entry = entry_alloc(slot);
	if (purge_entry >= 0)
	{
		entry_start(&slot->progress[purge_entry], op, WTC_PHASE_REMOVING, 0, relid, now);
		slot->progress[purge_entry].committed_at = now;
	}
	SpinLockRelease(&slot->progress_mutex);
	purge_slot = slot;
}

/* Keys removed so far by the purge in progress; a no-op without one. */
void
wtcache_progress_removed(int64 removed)
{
	if (purge_slot == NULL || purge_entry < 0)
		return;
	SpinLockAcquire(&purge_slot->progress_mutex);
	purge_slot->progress[purge_entry].delivered = removed;
	SpinLockRelease(&purge_slot->progress_mutex);
}

/* The purge is over (done, or failed and to be run again as a new one). */
void
wtcache_progress_purge_end(void)
{
	if (purge_slot != NULL && purge_entry >= 0)
	{
		TimestampTz now = GetCurrentTimestamp();
		ProgressEntry *e = &purge_slot->progress[purge_entry];

		SpinLockAcquire(&purge_slot->progress_mutex);
		if (e->in_use && e->phase == WTC_PHASE_REMOVING)
		{
			e->phase = WTC_PHASE_FINISHED;
			e->total = e->delivered;
			e->finished_at = now;
		}
		SpinLockRelease(&purge_slot->progress_mutex);
	}
	purge_slot = NULL;
	purge_entry = -1;
}

/* ---------------------------------------------------------------------
 * wtcache.operations(): the SRF behind wtcache.progress
 * ---------------------------------------------------------------------
 */

static Datum
seconds_interval(double secs)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = (int64) (secs * USECS_PER_SEC);
	return IntervalPGetDatum(iv);
}

/*
 * Every operation of this database, running or finished, on a table the
 * caller can see (wtcache_can_see_table); the database-wide purge of a
 * repair to pg_read_all_stats only.
 */
PG_FUNCTION_INFO_V1(wtcache_operations);
Datum
wtcache_operations(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ProgressEntry copy[WTCACHE_PROGRESS_ENTRIES];
	WorkerSlot *slot;
	pid_t		worker_pid;
	TimestampTz now = GetCurrentTimestamp();
	Oid			user = GetUserId();

	InitMaterializedSRF(fcinfo, 0);
	slot = my_slot();
	if (slot == NULL)
		return (Datum) 0;
	SpinLockAcquire(&slot->progress_mutex);
	memcpy(copy, slot->progress, sizeof(copy));
	SpinLockRelease(&slot->progress_mutex);
	SpinLockAcquire(&slot->mutex);
	worker_pid = slot->pid;
	SpinLockRelease(&slot->mutex);

	/* the privilege checks read catalogs: after the copy */
	for (int i = 0; i < WTCACHE_PROGRESS_ENTRIES; i++)
	{
		ProgressEntry *e = &copy[i];
		Datum		values[12];
		bool		nulls[12] = {false};
		int64		done;
		TimestampTz since;
		TimestampTz until;
		double		secs;
		double		rate = 0;

		if (!e->in_use)
			continue;
		if (OidIsValid(e->relid) ? !wtcache_can_see_table(e->relid, user)
			: !has_privs_of_role(user, ROLE_PG_READ_ALL_STATS))
			continue;

		/* the rate of the phase it is in: listing, or delivering/removing */
		if (e->phase == WTC_PHASE_QUEUEING || e->phase == WTC_PHASE_WAITING_COMMIT)
		{
			done = e->queued;
			since = e->started_at;
		}
		else
		{
			done = e->delivered;
			since = e->committed_at ? e->committed_at : e->started_at;
		}
		until = e->phase == WTC_PHASE_FINISHED ? e->finished_at : now;
		secs = (double) (until - since) / USECS_PER_SEC;
		if (secs > 0 && done > 0)
			rate = done / secs;

		/* a prepared transaction's: nobody's until COMMIT PREPARED */
		if (e->pid != 0)
			values[0] = Int32GetDatum(e->pid);
		else if (worker_pid != 0 && e->phase != WTC_PHASE_WAITING_COMMIT)
			values[0] = Int32GetDatum(worker_pid);
		else
			nulls[0] = true;
		values[1] = CStringGetTextDatum(op_names[e->op]);
		if (OidIsValid(e->relid))
			values[2] = ObjectIdGetDatum(e->relid);
		else
			nulls[2] = true;
		values[3] = CStringGetTextDatum(phase_names[e->phase]);
		if (e->total >= 0)
			values[4] = Int64GetDatum(e->total);
		else
			nulls[4] = true;
		values[5] = BoolGetDatum(e->total_estimated || e->total < 0);
		values[6] = Int64GetDatum(e->queued);
		values[7] = Int64GetDatum(e->delivered);
		values[8] = TimestampTzGetDatum(e->started_at);
		if (rate > 0)
			values[9] = Float8GetDatum(rate);
		else
			nulls[9] = true;
		/* time left in this phase at its rate; none once finished or waiting */
		if (rate > 0 && e->total >= 0 && e->phase != WTC_PHASE_FINISHED &&
			e->phase != WTC_PHASE_WAITING_COMMIT)
			values[10] = seconds_interval(Max(e->total - done, 0) / rate);
		else
			nulls[10] = true;
		if (e->phase == WTC_PHASE_FINISHED)
			values[11] = TimestampTzGetDatum(e->finished_at);
		else
			nulls[11] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
