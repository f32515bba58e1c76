/*-------------------------------------------------------------------------
 * progress.h
 *		What these offer the other modules:
 *		progress.c: the progress of long operations (wtcache.progress)
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_PROGRESS_H
#define WTCACHE_PROGRESS_H

#include "wtcache.h"
#include "shmem.h"

/* What a long operation is; the names are wtcache.progress.operation's. */
typedef enum WtcProgressOp
{
	WTC_PROGRESS_REQUEUE = 0,	/* rows queued again by DDL, partition DDL */
	WTC_PROGRESS_WARM,
	WTC_PROGRESS_RESYNC,
	WTC_PROGRESS_REPAIR,		/* the worker's resync after Redis lost data */
	WTC_PROGRESS_PURGE			/* the worker's removal of a table's keys */
} WtcProgressOp;

typedef enum WtcProgressPhase
{
	WTC_PHASE_QUEUEING = 0,		/* a backend lists the rows into the queue */
	WTC_PHASE_WAITING_COMMIT,	/* listed; its transaction is still open */
	WTC_PHASE_DELIVERING,		/* the worker pushes them */
	WTC_PHASE_REMOVING,			/* the worker removes keys (SCAN + UNLINK) */
	WTC_PHASE_FINISHED
} WtcProgressPhase;

/* A queue row of per-table keys that Redis acknowledged (the worker's). */
typedef struct ProgressDelivery
{
	Oid			relid;
	int64		id;
	int64		rows;
} ProgressDelivery;

/* Queueing side: the calling backend, or the worker's repair. */
extern WtcProgressOp wtcache_progress_set_op(WtcProgressOp op);
extern void wtcache_progress_begin(Oid relid, double estimate);
extern void wtcache_progress_queued(Oid relid, int64 rows, int64 id);
extern void wtcache_progress_listed(Oid relid);
extern void wtcache_progress_xact_event(XactEvent event);
extern void wtcache_progress_subxact_event(SubXactEvent event, SubTransactionId mySubid,
										   SubTransactionId parentSubid);

/* Delivering side: the worker. */
extern void wtcache_progress_delivered(WorkerSlot *slot, const ProgressDelivery *d, int n);
extern void wtcache_progress_queue_empty(WorkerSlot *slot, TimestampTz claimed_at);
extern void wtcache_progress_purge_begin(WorkerSlot *slot, WtcProgressOp op, Oid relid);
extern void wtcache_progress_removed(int64 removed);
extern void wtcache_progress_purge_end(void);

#endif							/* WTCACHE_PROGRESS_H */
