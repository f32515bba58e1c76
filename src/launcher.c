/*-------------------------------------------------------------------------
 * launcher.c
 *		Starts one delivery worker per database that has wtcache.
 *
 * The launcher is a static background worker that connects to no database
 * (it reads only the shared catalog pg_database).  It runs on a primary only
 * (BgWorkerStart_RecoveryFinished), so on a standby nothing is delivered and
 * after promotion the launcher starts and the queue, replicated with the
 * tables, drains.
 *
 * At start it probes every database that accepts connections: a worker
 * whose database has no wtcache extension marks its slot absent and exits.
 * Afterwards workers are started on request: CREATE EXTENSION, resync, or a
 * commit that queued changes and found no worker.  A worker that exits for
 * any other reason is restarted after a short delay.  A slot held by a
 * backend running DROP DATABASE and the like (ddl.c) gets no worker until
 * the statement ends.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "shmem.h"
#include "worker.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#define WORKER_RESTART_DELAY_MS 1000

void
wtcache_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "wtcache", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "wtcache_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "wtcache launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "wtcache launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* Launcher-local: one handle per slot index. */
typedef struct LocalWorker
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
	TimestampTz last_start;
} LocalWorker;

static LocalWorker *local = NULL;
static List *to_probe = NIL;
static bool slots_full_logged = false;

static void
launcher_shmem_exit(int code, Datum arg)
{
	SpinLockAcquire(&WtcacheSharedState->mutex);
	WtcacheSharedState->launcher_pid = 0;
	WtcacheSharedState->launcher_latch = NULL;
	SpinLockRelease(&WtcacheSharedState->mutex);
}

static List *
list_databases(void)
{
	List	   *dbs = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext outer = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate)
		{
			MemoryContext old = MemoryContextSwitchTo(outer);

			dbs = lappend_oid(dbs, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return dbs;
}

/* Give queued probes a slot while there are free or absent ones. */
static void
assign_probes(void)
{
	while (to_probe != NIL)
	{
		Oid			dboid = linitial_oid(to_probe);
		WorkerSlot *slot;

		LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
		slot = wtcache_assign_slot(dboid);
		LWLockRelease(WtcacheSharedState->lock);
		if (slot == NULL)
			break;
		to_probe = list_delete_first(to_probe);
	}
}

static void
start_worker(int i, WorkerSlot *slot)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "wtcache", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "wtcache_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "wtcache worker for database %u", slot->dboid);
	strlcpy(worker.bgw_type, "wtcache worker", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(slot->dboid);
	worker.bgw_notify_pid = MyProcPid;

	if (local[i].handle)
		pfree(local[i].handle);
	local[i].handle = NULL;
	local[i].dboid = slot->dboid;
	local[i].last_start = GetCurrentTimestamp();
	if (!RegisterDynamicBackgroundWorker(&worker, &local[i].handle))
	{
		if (!slots_full_logged)
			ereport(LOG,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("wtcache: could not start a worker for database %u", slot->dboid),
					 errhint("Raise max_worker_processes.")));
		slots_full_logged = true;
		local[i].handle = NULL;
	}
}

/*
 * A slot can outlive its database (dropped while no backend of ours saw
 * it, or while the server was down): starting a worker there would fail
 * at connect, again and again.
 */
static bool
database_exists(Oid dboid)
{
	bool		exists;

	StartTransactionCommand();
	exists = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid));
	CommitTransactionCommand();
	return exists;
}

static void
free_slot_of_dropped_database(WorkerSlot *slot, Oid dboid)
{
	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	if (slot->dboid == dboid)
	{
		slot->dboid = InvalidOid;
		slot->pending_ready = false;
		slot->absent = false;
		slot->requested = false;
	}
	LWLockRelease(WtcacheSharedState->lock);
}

/*
 * Start the workers that should run and do not.  A worker that went away
 * is restarted after WORKER_RESTART_DELAY_MS, one that was asked for
 * (CREATE EXTENSION, a commit that found no worker) after a tenth of that:
 * soon, yet no tight loop if it cannot start.  Returns how long until the
 * next start is due, capped at WORKER_RESTART_DELAY_MS.
 */
static long
tend_workers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		next_due_ms = WORKER_RESTART_DELAY_MS;

	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];
		Oid			dboid;
		bool		absent;
		bool		requested;
		bool		held;
		bool		running = false;
		pid_t		pid;
		TimestampTz due;

		LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
		dboid = slot->dboid;
		absent = slot->absent;
		requested = slot->requested;
		held = wtcache_slot_is_held(slot);
		LWLockRelease(WtcacheSharedState->lock);
		if (!OidIsValid(dboid) || held)
			continue;

		if (local[i].handle != NULL && local[i].dboid == dboid)
		{
			BgwHandleStatus st = GetBackgroundWorkerPid(local[i].handle, &pid);

			running = (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED);
		}
		if (running || (absent && !requested))
			continue;
		if (local[i].dboid == dboid)
		{
			due = TimestampTzPlusMilliseconds(local[i].last_start,
											  requested ? WORKER_RESTART_DELAY_MS / 10
											  : WORKER_RESTART_DELAY_MS);
			if (now < due)
			{
				long		ms = (long) ((due - now) / 1000) + 1;

				next_due_ms = Min(next_due_ms, ms);
				continue;
			}
		}
		if (!database_exists(dboid))
		{
			free_slot_of_dropped_database(slot, dboid);
			continue;
		}
		start_worker(i, slot);
	}
	return next_due_ms;
}

void
wtcache_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SpinLockAcquire(&WtcacheSharedState->mutex);
	WtcacheSharedState->launcher_pid = MyProcPid;
	WtcacheSharedState->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&WtcacheSharedState->mutex);
	before_shmem_exit(launcher_shmem_exit, (Datum) 0);

	local = MemoryContextAllocZero(TopMemoryContext,
								   sizeof(LocalWorker) * WtcacheSharedState->nslots);
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		to_probe = list_databases();
		MemoryContextSwitchTo(old);
	}

	for (;;)
	{
		long		timeout_ms;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		assign_probes();
		timeout_ms = tend_workers();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout_ms, PG_WAIT_EXTENSION);
	}
}
