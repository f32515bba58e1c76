/*-------------------------------------------------------------------------
 * shmem.h
 *		What these offer the other modules:
 *		shmem.c: shared state: worker slots, launcher latch, status SRF
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_SHMEM_H
#define WTCACHE_SHMEM_H

#include "wtcache.h"
#include "lag.h"

#include "port/atomics.h"

typedef enum WorkerState
{
	WORKER_STARTING = 0,
	WORKER_CONNECTING,
	WORKER_CONNECTED,
	WORKER_BACKOFF,
	WORKER_RESYNCING,
	WORKER_PAUSED				/* wtcache.enabled = off */
} WorkerState;

/*
 * One long operation of a database (progress.c): a warm, resync, repair,
 * requeue after DDL, or a purge.  Its rows are the queue rows it wrote
 * (per_table, ids id_lo..id_hi), counted as queued by the backend that
 * wrote them and as delivered by the worker when Redis acknowledged them.
 */
#define WTCACHE_PROGRESS_ENTRIES 16

typedef struct ProgressEntry
{
	bool		in_use;
	uint8		op;				/* WtcProgressOp */
	uint8		phase;			/* WtcProgressPhase */
	bool		total_estimated;	/* total is the planner's estimate */
	pid_t		pid;			/* the backend queueing it; 0: the worker */
	Oid			relid;
	SubTransactionId subid;		/* of the queueing backend's subxact */
	int64		total;			/* rows it will queue; -1: unknown */
	int64		queued;
	int64		delivered;
	int64		id_lo;			/* queue ids of its rows; 0: unknown */
	int64		id_hi;
	TimestampTz started_at;
	TimestampTz committed_at;	/* its rows became visible; 0: not yet */
	TimestampTz finished_at;	/* 0: running */
} ProgressEntry;

/*
 * One slot per database that has (or had) a worker.  See the locking rules
 * at the top of shmem.c.
 */
typedef struct WorkerSlot
{
	/* assigned under WtcacheShared->lock (exclusive) */
	Oid			dboid;
	bool		absent;			/* worker found no extension there */
	bool		requested;		/* a backend asked for a worker */
	pid_t		held_by;		/* backend running DDL that needs the
								 * database to itself (DROP DATABASE...) */
	bool		pending_ready;	/* the pending filter counts this database's
								 * queue (pending.c) */

	/* written by the worker of this slot, under mutex */
	slock_t		mutex;
	pid_t		pid;
	Latch	   *latch;
	WorkerState state;
	bool		connected;
	char		redis_address[300];
	char		last_error[256];
	TimestampTz last_error_at;
	TimestampTz last_push;
	TimestampTz next_retry;		/* while waiting to retry Redis */
	char		redis_role[16]; /* ROLE of the Redis it is connected to */
	uint64		pushed;
	uint64		batches;
	uint64		resyncs;
	int64		acked_version;	/* highest version Redis acknowledged */
	XLogRecPtr	durable_lsn;	/* WAL flushed, and on the synchronous
								 * standbys, this far (read.c's fills) */
	XLogRecPtr	wal_awaited;	/* asynchronous commits' WAL the worker
								 * waits for the WAL writer to flush, or
								 * invalid; wait() flushes it (fence.c) */

	/*
	 * The wait() fence's handshake (fence.c).  fence_requested: tickets
	 * handed to waiters; fence_confirmed: the highest ticket that a
	 * generation marker check started after, and found Redis whole;
	 * fence_repaired: the highest ticket such a check found Redis had lost
	 * data for, published once the resync's rows were queued.
	 */
	uint64		fence_requested;
	uint64		fence_confirmed;
	uint64		fence_repaired;

	/* the wtcache.key_prefix the worker writes under ("": none yet) */
	char		key_prefix[65];

	/*
	 * Delivery lag (issue 20, lag.c): written by the worker of this slot
	 * without the mutex, read under its own change count (lag.h).
	 */
	LagHistogram lag;

	/*
	 * Replica acknowledgements (replicas.c, issue 20): written by the
	 * worker under mutex, read by wtcache.replica_acks().  The settings
	 * are the worker's, which a reload reaches later than a backend.
	 */
	int			wait_replicas;	/* wtcache.redis_wait_replicas in force */
	int			wait_action;	/* wtcache.redis_wait_timeout_action */
	int			wait_acked;		/* fewest replicas any master counted in
								 * the last WAIT; -1: none since start */
	uint64		wait_calls;		/* rounds of WAIT sent */
	uint64		wait_timeouts;	/* rounds that counted too few replicas */
	uint64		wait_accepted;	/* of those, batches delivered anyway */
	uint64		wait_us;		/* time spent in WAIT, microseconds */
	TimestampTz wait_short_since;	/* first round of the current run of
									 * short ones; 0: the last was enough */

	/*
	 * Redis's memory (issue 20; worker.c, memory.c's wtcache.redis_memory()),
	 * written by the worker of this slot, under mutex.  An OOM episode runs
	 * from the first write Redis refused for want of memory to the next
	 * batch it acknowledged.
	 */
	TimestampTz oom_since;		/* in an episode since; 0: not */
	uint64		oom_episodes;	/* episodes since the worker started */
	uint64		oom_refusals;	/* attempts Redis refused with OOM */
	int64		maxmemory;		/* INFO memory at the last connection; -1:
								 * unknown (INFO refused, a Cluster) */
	char		maxmemory_policy[32];	/* "": unknown */
	uint64		marker_evictions;	/* generation markers found evicted
									 * and set again (markers.c) */

	/*
	 * The live consistency audit (audit.c), written by the worker under
	 * mutex once per step, read by wtcache.audit_stats().  The counters
	 * live as long as the server, like pushed; the oldest unresolved
	 * mismatch is the worker's own memory, so a new worker starts it over.
	 */
	uint64		audit_checked;	/* keys compared (in-flight ones excluded) */
	uint64		audit_mismatched;	/* confirmed: Redis held another value */
	uint64		audit_missing;	/* confirmed: Redis held none, and must */
	uint64		audit_skipped;	/* sampled keys with a change in flight */
	uint64		audit_repaired;	/* confirmed keys found right after their
								 * redelivery */
	TimestampTz audit_oldest_mismatch;	/* first seen, of the oldest
										 * confirmed one not yet found
										 * right again; 0: none */

	/*
	 * The lowest queue id of a row the worker's second claim cursor must
	 * find (a live change, a whole-table entry) committed since the worker
	 * last took it; PG_UINT64_MAX: none.  Lowered by committing backends
	 * (wtcache_wake_worker), taken by the worker before its claim's
	 * snapshot (batch.c's resume_live_scan says why).
	 */
	pg_atomic_uint64 live_committed_from;

	/*
	 * Long operations (progress.c): written by backends and by the worker,
	 * so under a spinlock of their own, progress_mutex, never slot->mutex
	 * (whose only writer is the worker).
	 */
	slock_t		progress_mutex;
	ProgressEntry progress[WTCACHE_PROGRESS_ENTRIES];
} WorkerSlot;

typedef struct WtcacheShared
{
	LWLock	   *lock;
	slock_t		mutex;			/* protects launcher_* */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WtcacheShared;

extern WtcacheShared *WtcacheSharedState;

extern void wtcache_shmem_request(void);
extern void wtcache_shmem_startup(void);
extern void wtcache_require_preload(void);
extern WorkerSlot *wtcache_find_slot(Oid dboid);
extern int64 wtcache_acked_version(Oid dboid);
extern XLogRecPtr wtcache_durable_lsn(Oid dboid);
extern WorkerSlot *wtcache_assign_slot(Oid dboid);
extern void wtcache_request_worker(Oid dboid);
extern void wtcache_wake_worker(Oid dboid, int64 live_from);
extern int64 wtcache_take_live_committed_from(WorkerSlot *slot);
extern bool wtcache_slot_is_held(WorkerSlot *slot);
extern bool wtcache_slot_shown(WorkerSlot *slot, bool all_databases, Oid *dboid);
extern bool wtcache_worker_uses_prefix(Oid dboid, const char *prefix);
extern bool wtcache_hold_database(Oid dboid);
extern void wtcache_release_database(Oid dboid, bool dropped, bool restart);
extern void wtcache_slot_set_error(WorkerSlot *slot, const char *msg);
extern void wtcache_slot_set_state(WorkerSlot *slot, WorkerState state,
								   bool connected);

#endif							/* WTCACHE_SHMEM_H */
