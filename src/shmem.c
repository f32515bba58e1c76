/*-------------------------------------------------------------------------
 * shmem.c
 *		Shared state: one slot per database worker, and the launcher latch.
 *
 * Locking rules:
 *	- WtcacheShared->lock (a named LWLock) guards which database a slot
 *	  belongs to (dboid) and the absent/requested/held_by flags.  Take it exclusive
 *	  to assign, free or flag a slot, shared to look one up when you also
 *	  need those flags to be stable.
 *	- Each slot's mutex (a spinlock) guards the worker-reported fields
 *	  (pid, latch, state, counters, error text).  The worker of the slot is
 *	  the only writer; readers copy under the spinlock.  Never call anything
 *	  that can fail while holding it.
 *	- Each slot's lag histogram is written by its worker only, and read
 *	  without a lock under its change count (lag.h).
 *	- Each slot's progress_mutex (a spinlock) guards its progress[]
 *	  entries, which backends and the worker both write (progress.c).
 *	- WtcacheShared->mutex guards launcher_pid/launcher_latch.
 *	- The commit-time wake (wtcache_wake_worker) reads dboid and latch
 *	  without a lock: the worst a race can do is set a latch that a new
 *	  process now owns, which is a harmless spurious wake-up, and missing a
 *	  slot being assigned only sends the request down the slow path.  It
 *	  lowers live_committed_from atomically; a slot given to another
 *	  database keeps what it held, which costs that worker one walk.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "pending.h"
#include "settings.h"
#include "shmem.h"
#include "stats.h"

#include <signal.h>

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

WtcacheShared *WtcacheSharedState = NULL;

static Size
shared_size(void)
{
	return add_size(offsetof(WtcacheShared, slots),
					mul_size(sizeof(WorkerSlot), wtcache_max_databases));
}

void
wtcache_shmem_request(void)
{
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche("wtcache", 1);
	wtcache_pending_shmem_request();
	wtcache_stats_shmem_request();
}

void
wtcache_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	WtcacheSharedState = ShmemInitStruct("wtcache", shared_size(), &found);
	if (!found)
	{
		memset(WtcacheSharedState, 0, shared_size());
		WtcacheSharedState->lock = &(GetNamedLWLockTranche("wtcache"))->lock;
		SpinLockInit(&WtcacheSharedState->mutex);
		WtcacheSharedState->nslots = wtcache_max_databases;
		for (int i = 0; i < wtcache_max_databases; i++)
		{
			SpinLockInit(&WtcacheSharedState->slots[i].mutex);
			wtcache_lag_init(&WtcacheSharedState->slots[i].lag);
			SpinLockInit(&WtcacheSharedState->slots[i].progress_mutex);
			pg_atomic_init_u64(&WtcacheSharedState->slots[i].live_committed_from, PG_UINT64_MAX);
		}
	}
	wtcache_pending_shmem_startup();
	wtcache_stats_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

/* SQL functions that need the worker call this first. */
void
wtcache_require_preload(void)
{
	if (WtcacheSharedState == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("wtcache must be loaded via \"shared_preload_libraries\""),
				 errdetail("Changes are still captured, but no worker delivers them to Redis."),
				 errhint("Add wtcache to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Does the worker of this database write under this key prefix?  Right
 * after a reload of wtcache.key_prefix a backend may see the new prefix
 * before the worker does (or the other way round): a value read or filled
 * under a prefix the worker does not update would go stale.
 */
bool
wtcache_worker_uses_prefix(Oid dboid, const char *prefix)
{
	bool		same = false;

	if (WtcacheSharedState == NULL)
		return false;
	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];

		if (slot->dboid == dboid)
		{
			SpinLockAcquire(&slot->mutex);
			same = strcmp(slot->key_prefix, prefix) == 0;
			SpinLockRelease(&slot->mutex);
			break;
		}
	}
	return same;
}

/*
 * The worker: the lowest live_from committed since it last asked, or
 * PG_INT64_MAX for none; asked before the claim's snapshot is taken.
 */
int64
wtcache_take_live_committed_from(WorkerSlot *slot)
{
	uint64		from = pg_atomic_exchange_u64(&slot->live_committed_from, PG_UINT64_MAX);

	return from > (uint64) PG_INT64_MAX ? PG_INT64_MAX : (int64) from;
}

/* Caller holds the lock (any mode). */
WorkerSlot *
wtcache_find_slot(Oid dboid)
{
	for (int i = 0; i < WtcacheSharedState->nslots; i++)
		if (WtcacheSharedState->slots[i].dboid == dboid)
			return &WtcacheSharedState->slots[i];
	return NULL;
}

/*
 * Flag a slot for dboid as wanting a worker: its own slot, a free one, or
 * one whose database turned out to have no extension.  Caller holds the
 * lock exclusive.  NULL when every slot is busy.
 */
WorkerSlot *
wtcache_assign_slot(Oid dboid)
{
	WorkerSlot *slot = wtcache_find_slot(dboid);

	if (slot == NULL)
		slot = wtcache_find_slot(InvalidOid);
	for (int i = 0; slot == NULL && i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *s = &WtcacheSharedState->slots[i];

		if (s->absent && !s->requested && s->pid == 0)
			slot = s;
	}
	if (slot != NULL)
	{
		if (slot->dboid != dboid)
		{
			slot->pending_ready = false;
			/* another database's versions say nothing about this one's */
			SpinLockAcquire(&slot->mutex);
			slot->acked_version = 0;
			slot->audit_checked = slot->audit_mismatched = slot->audit_missing = 0;
			slot->audit_skipped = slot->audit_repaired = 0;
			slot->audit_oldest_mismatch = 0;
			SpinLockRelease(&slot->mutex);
			SpinLockAcquire(&slot->progress_mutex);
			memset(slot->progress, 0, sizeof(slot->progress));
			SpinLockRelease(&slot->progress_mutex);
		}
		slot->dboid = dboid;
		slot->absent = false;
		slot->requested = true;
	}
	return slot;
}

static void
wake_launcher(void)
{
	Latch	   *latch;

	SpinLockAcquire(&WtcacheSharedState->mutex);
	latch = WtcacheSharedState->launcher_latch;
	SpinLockRelease(&WtcacheSharedState->mutex);
	if (latch)
		SetLatch(latch);
}

/*
 * Ask the launcher for a worker in this database: from CREATE EXTENSION,
 * resync, and commits that find no worker.  A database the launcher has no
 * free slot for is reported by the launcher, once.
 */
void
wtcache_request_worker(Oid dboid)
{
	WorkerSlot *slot;

	if (WtcacheSharedState == NULL)
		return;

	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	slot = wtcache_assign_slot(dboid);
	LWLockRelease(WtcacheSharedState->lock);
	if (slot == NULL)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("wtcache has no free worker slot for this database"),
				 errdetail("Changes are kept in wtcache.queue until a worker can start."),
				 errhint("Raise wtcache.max_databases and restart the server.")));
	wake_launcher();
}

/*
 * Called at commit of a transaction that queued changes: keep it cheap.
 * live_from: the lowest id of the rows it queued that the worker's second
 * claim cursor must find, 0 for none.  XACT_EVENT_COMMIT comes after the
 * commit is visible to new snapshots, so a worker that took the id before
 * its snapshot sees the rows.
 */
void
wtcache_wake_worker(Oid dboid, int64 live_from)
{
	if (WtcacheSharedState == NULL)
		return;

	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		volatile WorkerSlot *slot = &WtcacheSharedState->slots[i];

		if (slot->dboid == dboid)
		{
			Latch	   *latch = slot->latch;

			if (latch != NULL && slot->pid != 0)
			{
				if (live_from > 0)
				{
					WorkerSlot *s = (WorkerSlot *) slot;
					uint64		seen = pg_atomic_read_u64(&s->live_committed_from);

					while ((uint64) live_from < seen &&
						   !pg_atomic_compare_exchange_u64(&s->live_committed_from, &seen,
														   (uint64) live_from))
						;
				}
				SetLatch(latch);
				return;
			}
			break;
		}
	}
	wtcache_request_worker(dboid);
}

/*
 * Is a backend running DDL that needs this slot's database free of
 * connections?  A holder that died without releasing no longer counts.
 * Caller holds the lock.
 */
bool
wtcache_slot_is_held(WorkerSlot *slot)
{
	return slot->held_by != 0 &&
		(slot->held_by == MyProcPid || kill(slot->held_by, 0) == 0);
}

/*
 * Keep dboid's worker out of its database for the current statement: no
 * new worker starts there, the running one is told to stop, and we wait
 * (interruptibly, up to 5 s) for it to leave.  Returns whether the slot
 * was absent before, i.e. there was no extension to serve.
 */
bool
wtcache_hold_database(Oid dboid)
{
	WorkerSlot *slot;
	bool		was_absent;
	pid_t		pid;
	TimestampTz give_up;

	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	slot = wtcache_find_slot(dboid);
	if (slot == NULL)
	{
		LWLockRelease(WtcacheSharedState->lock);
		return true;
	}
	slot->held_by = MyProcPid;
	was_absent = slot->absent && !slot->requested;
	LWLockRelease(WtcacheSharedState->lock);

	give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 5000);
	for (;;)
	{
		SpinLockAcquire(&slot->mutex);
		pid = slot->pid;
		SpinLockRelease(&slot->mutex);
		if (pid == 0 || GetCurrentTimestamp() >= give_up)
			break;
		(void) kill(pid, SIGTERM);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return was_absent;
}

/*
 * End of the transaction that held dboid.  A dropped database frees its
 * slot; otherwise the worker comes back if there was one to serve.
 */
void
wtcache_release_database(Oid dboid, bool dropped, bool restart)
{
	WorkerSlot *slot;

	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	slot = wtcache_find_slot(dboid);
	if (slot != NULL && slot->held_by == MyProcPid)
	{
		slot->held_by = 0;
		if (dropped)
		{
			slot->dboid = InvalidOid;
			slot->pending_ready = false;
			slot->absent = false;
			slot->requested = false;
		}
		else if (restart)
		{
			slot->absent = false;
			slot->requested = true;
		}
	}
	LWLockRelease(WtcacheSharedState->lock);
	wake_launcher();
}

void
wtcache_slot_set_error(WorkerSlot *slot, const char *msg)
{
	TimestampTz now = GetCurrentTimestamp();	/* not under the spinlock */

	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->last_error, msg, sizeof(slot->last_error));
	slot->last_error_at = now;
	SpinLockRelease(&slot->mutex);
}

/* The slot of dboid's worker, or NULL, found without the lock as wtcache_pending_ready() finds it. */
static WorkerSlot *
slot_of_database(Oid dboid)
{
	if (WtcacheSharedState == NULL)
		return NULL;
	for (int i = 0; i < WtcacheSharedState->nslots; i++)
		if (WtcacheSharedState->slots[i].dboid == dboid)
			return &WtcacheSharedState->slots[i];
	return NULL;
}

/*
 * The highest version the worker of dboid knows Redis acknowledged (0 if
 * none).  A Redis whose generation marker is lower lost data that reads
 * must not serve.
 */
int64
wtcache_acked_version(Oid dboid)
{
	WorkerSlot *slot = slot_of_database(dboid);
	int64		acked = 0;

	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		acked = slot->acked_version;
		SpinLockRelease(&slot->mutex);
	}
	return acked;
}

/*
 * How far the worker of dboid has made WAL durable as it makes what it
 * pushes durable: flushed, and on the synchronous standbys when there are
 * some (InvalidXLogRecPtr if it has not yet).
 */
XLogRecPtr
wtcache_durable_lsn(Oid dboid)
{
	WorkerSlot *slot = slot_of_database(dboid);
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	if (slot != NULL)
	{
		SpinLockAcquire(&slot->mutex);
		lsn = slot->durable_lsn;
		SpinLockRelease(&slot->mutex);
	}
	return lsn;
}

void
wtcache_slot_set_state(WorkerSlot *slot, WorkerState state, bool connected)
{
	SpinLockAcquire(&slot->mutex);
	slot->state = state;
	slot->connected = connected;
	SpinLockRelease(&slot->mutex);
}

static const char *
state_name(WorkerState state)
{
	switch (state)
	{
		case WORKER_STARTING:
			return "starting";
		case WORKER_CONNECTING:
			return "connecting";
		case WORKER_CONNECTED:
			return "connected";
		case WORKER_BACKOFF:
			return "waiting to retry";
		case WORKER_RESYNCING:
			return "resyncing";
		case WORKER_PAUSED:
			return "paused";
	}
	return "unknown";
}

/*
 * Is the slot a worker's that the caller may see: its own database's, or
 * any for all_databases (pg_read_all_stats)?  The per-worker functions
 * (worker_status(), delivery_lag(), replica_acks(), redis_memory(),
 * audit_stats()) show exactly these.  *dboid: the slot's database.
 */
bool
wtcache_slot_shown(WorkerSlot *slot, bool all_databases, Oid *dboid)
{
	bool		absent;

	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	*dboid = slot->dboid;
	absent = slot->absent;
	LWLockRelease(WtcacheSharedState->lock);
	return OidIsValid(*dboid) && !absent && (*dboid == MyDatabaseId || all_databases);
}

/*
 * wtcache.worker_status(): one row per database worker.  Everyone sees the
 * worker of the database they are connected to (wtcache.status shows it
 * too); other databases' workers, like other sessions' activity in
 * pg_stat_activity, only members of pg_read_all_stats (pg_monitor) and
 * superusers.  redis_address is host:port (wtcache_describe_target()),
 * never the URL: no user name or password.
 */
PG_FUNCTION_INFO_V1(wtcache_worker_status);
Datum
wtcache_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all_databases = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	wtcache_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];
		WorkerSlot	copy;
		/* 1.0 declares the first 12 columns: the rest are ignored there */
		Datum		values[14];
		bool		nulls[14] = {0};

		LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
		copy.dboid = slot->dboid;
		copy.absent = slot->absent;
		copy.pending_ready = slot->pending_ready;
		LWLockRelease(WtcacheSharedState->lock);
		if (!OidIsValid(copy.dboid) || copy.absent)
			continue;
		if (copy.dboid != MyDatabaseId && !all_databases)
			continue;

		SpinLockAcquire(&slot->mutex);
		copy.pid = slot->pid;
		copy.state = slot->state;
		copy.connected = slot->connected;
		memcpy(copy.redis_address, slot->redis_address, sizeof(copy.redis_address));
		memcpy(copy.last_error, slot->last_error, sizeof(copy.last_error));
		copy.last_error_at = slot->last_error_at;
		copy.last_push = slot->last_push;
		copy.pushed = slot->pushed;
		copy.batches = slot->batches;
		copy.resyncs = slot->resyncs;
		copy.next_retry = slot->next_retry;
		memcpy(copy.redis_role, slot->redis_role, sizeof(copy.redis_role));
		SpinLockRelease(&slot->mutex);

		values[0] = ObjectIdGetDatum(copy.dboid);
		if (copy.pid != 0)
			values[1] = Int32GetDatum(copy.pid);
		else
			nulls[1] = true;
		values[2] = CStringGetTextDatum(copy.pid != 0 ? state_name(copy.state) : "stopped");
		values[3] = BoolGetDatum(copy.pid != 0 && copy.connected);
		if (copy.redis_address[0])
			values[4] = CStringGetTextDatum(copy.redis_address);
		else
			nulls[4] = true;
		if (copy.last_error[0])
		{
			values[5] = CStringGetTextDatum(copy.last_error);
			values[6] = TimestampTzGetDatum(copy.last_error_at);
		}
		else
			nulls[5] = nulls[6] = true;
		if (copy.last_push != 0)
			values[7] = TimestampTzGetDatum(copy.last_push);
		else
			nulls[7] = true;
		values[8] = Int64GetDatum((int64) copy.pushed);
		values[9] = Int64GetDatum((int64) copy.batches);
		values[10] = Int64GetDatum((int64) copy.resyncs);
		values[11] = BoolGetDatum(copy.pending_ready);
		if (copy.pid != 0 && copy.connected && copy.redis_role[0])
			values[12] = CStringGetTextDatum(copy.redis_role);
		else
			nulls[12] = true;
		if (copy.pid != 0 && copy.state == WORKER_BACKOFF && copy.next_retry != 0)
			values[13] = TimestampTzGetDatum(copy.next_retry);
		else
			nulls[13] = true;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(wtcache_start_worker);
Datum
wtcache_start_worker(PG_FUNCTION_ARGS)
{
	/*
	 * CREATE EXTENSION without preload is allowed: capture still works.  The
	 * request is made at commit: a worker started now would not see the
	 * extension yet and would leave again.
	 */
	if (WtcacheSharedState != NULL)
		wtcache_request_worker_at_commit();
	PG_RETURN_VOID();
}
