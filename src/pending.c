/*-------------------------------------------------------------------------
 * pending.c
 *		Which keys have committed changes that Redis does not have yet.
 *
 * A cached read may serve Redis only if no change to its key committed
 * before the read is still on its way.  Every change still on its way is a
 * row of wtcache.queue, so this file keeps, in shared memory, a counting
 * filter over the queue: an array of counters indexed by a hash of
 * (database, table, key values).  A key's counter is non-zero while a queue
 * row holds that key; a table's own counter is non-zero while a queue row
 * stands for the whole table (TRUNCATE, resync).  Cached query results
 * (query.c) depend on whole tables and on tags, so every queue row also
 * counts under its table's "changed" counter and under each tag it
 * invalidates.  Collisions only make readers go to the table needlessly; a
 * counter that reads zero is exact.
 *
 * The counts follow the queue rows exactly:
 *	- a writer adds one per key when it writes a queue row, before the
 *	  row draws its id (so whoever sees the id handed out sees the key
 *	  pending: read.c's fills rely on it) and before it commits, and takes
 *	  them back if that row is rolled back (a savepoint, or the whole
 *	  transaction, even after PRE_COMMIT);
 *	- the worker takes one per key off after the transaction that deleted
 *	  acknowledged queue rows committed, with nothing that can fail between
 *	  the commit and the subtraction.
 *
 * Shared memory starts empty (server start, crash restart) while the queue
 * may hold rows.  Until this database's worker has counted them the filter
 * is not "ready": writers add nothing, and readers treat every key as
 * pending (they read the table).  So that each queue row is counted once,
 * by its writer or by the worker, a writer that finds the filter not ready
 * holds the filter lock (a share lock, see filter_locktag) from that look
 * through its count and its insert; the worker counts holding that lock
 * exclusively, then sets ready.  A writer's row is thus either written
 * before the count began (the count sees it) or counted by a writer that
 * found ready set.
 *
 * The count sees the rows of transactions still in progress too, with a
 * dirty snapshot: a prepared transaction may stay in progress across any
 * number of restarts, and it must neither keep the filter from getting
 * ready nor have its keys served from Redis while it is pending.  The
 * worker remembers which transactions those rows belong to and takes their
 * counts back if they abort (ROLLBACK PREPARED); if they commit, their rows
 * are delivered and released like any other.  The filter lock, unlike a
 * lock on wtcache.queue, is held for moments and never by a prepared
 * transaction, so nothing can hold the count off for long.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "pending.h"
#include "settings.h"
#include "shmem.h"
#include "xact.h"
#include "queue.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

int			wtcache_pending_slots = 1048576;

static pg_atomic_uint32 *pending_counters = NULL;
static uint32 pending_mask = 0;

/* This transaction's additions, so a rollback can take them back. */
typedef struct PendingAdd
{
	uint32		index;
	SubTransactionId subid;
} PendingAdd;

static PendingAdd *adds = NULL;
static int	nadds = 0;
static int	maxadds = 0;

/* This backend holds the filter lock for a queue write (see the header). */
static bool holding_filter_lock = false;

/*
 * The worker's: counts its last count made for rows of transactions then
 * in progress, to be taken back if they abort.  Entry i owns
 * unsettled_indexes[unsettled[i].first .. + n).
 */
typedef struct UnsettledRows
{
	TransactionId xid;
	int64		first;
	int			n;
} UnsettledRows;

static UnsettledRows *unsettled = NULL;
static int	nunsettled = 0;
static uint32 *unsettled_indexes = NULL;
static int64 nunsettled_indexes = 0;

static Size
pending_shmem_size(void)
{
	return mul_size(sizeof(pg_atomic_uint32), wtcache_pending_slots);
}

void
wtcache_pending_shmem_request(void)
{
	RequestAddinShmemSpace(pending_shmem_size());
}

/* Caller holds AddinShmemInitLock. */
void
wtcache_pending_shmem_startup(void)
{
	bool		found;

	pending_counters = ShmemInitStruct("wtcache pending keys", pending_shmem_size(), &found);
	if (!found)
		for (int i = 0; i < wtcache_pending_slots; i++)
			pg_atomic_init_u32(&pending_counters[i], 0);
	pending_mask = (uint32) wtcache_pending_slots - 1;
}

static inline uint32
table_hash(Oid dboid, Oid relid)
{
	return hash_combine(murmurhash32((uint32) dboid), murmurhash32((uint32) relid));
}

uint32
wtcache_pending_key_index(Oid dboid, Oid relid, int nvalues,
						  const char *const *values, const int *lens)
{
	uint32		h = table_hash(dboid, relid);

	for (int i = 0; i < nvalues; i++)
		h = hash_combine(h, hash_bytes((const unsigned char *) values[i], lens[i]));
	return h & pending_mask;
}

uint32
wtcache_pending_table_index(Oid dboid, Oid relid)
{
	/* the 0x5bd1e995 keeps it apart from a key of zero values */
	return hash_combine(table_hash(dboid, relid), 0x5bd1e995) & pending_mask;
}

/* Non-zero while any change to the table is on its way (query.c). */
uint32
wtcache_pending_changed_index(Oid dboid, Oid relid)
{
	return hash_combine(table_hash(dboid, relid), 0x1b873593) & pending_mask;
}

/* Non-zero while an invalidation of the tag is on its way. */
uint32
wtcache_pending_tag_index(Oid dboid, const char *tag, int len)
{
	return hash_combine(hash_combine(murmurhash32((uint32) dboid), 0xcc9e2d51),
						hash_bytes((const unsigned char *) tag, len)) & pending_mask;
}

/* True if nothing is counted under this index. */
bool
wtcache_pending_is_zero(uint32 index)
{
	return pg_atomic_read_u32(&pending_counters[index]) == 0;
}

/* Is the filter of this database counting?  Lock-free: see the header. */
bool
wtcache_pending_ready(Oid dboid)
{
	bool		ready = false;

	if (WtcacheSharedState == NULL || pending_counters == NULL)
		return false;
	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		volatile WorkerSlot *slot = &WtcacheSharedState->slots[i];

		if (slot->dboid == dboid)
		{
			ready = slot->pending_ready;
			break;
		}
	}
	pg_read_barrier();
	return ready;
}

/* True if no change to this key (nor to its whole table) is pending. */
bool
wtcache_pending_clear(uint32 key_index, uint32 table_index)
{
	return pg_atomic_read_u32(&pending_counters[key_index]) == 0 &&
		pg_atomic_read_u32(&pending_counters[table_index]) == 0;
}

/*
 * The filter lock of this database.  An advisory lock tag, with a fourth
 * field that pg_advisory_lock() never uses (1 and 2 are its own), so no
 * user's advisory lock can collide with it.
 */
static void
filter_locktag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, 0x77746361, 0x70656e64, 7);
}

void
wtcache_pending_xact_event(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			for (int i = 0; i < nadds; i++)
				pg_atomic_fetch_sub_u32(&pending_counters[adds[i].index], 1);
			nadds = 0;
			holding_filter_lock = false;	/* released with the transaction */
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			nadds = 0;
			Assert(!holding_filter_lock);
			holding_filter_lock = false;
			break;
		default:
			break;
	}
	if (nadds == 0 && maxadds > 64 * 1024)
	{
		/* a huge transaction's list is not kept for the next one */
		pfree(adds);
		adds = NULL;
		maxadds = 0;
	}
}

void
wtcache_pending_subxact_event(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid)
{
	int			i = nadds;

	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			while (i > 0 && adds[i - 1].subid >= mySubid)
				adds[--i].subid = parentSubid;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			while (nadds > 0 && adds[nadds - 1].subid >= mySubid)
				pg_atomic_fetch_sub_u32(&pending_counters[adds[--nadds].index], 1);
			/* taken in this subtransaction (nothing starts one in between) */
			holding_filter_lock = false;
			break;
		default:
			break;
	}
}

/*
 * A queue row holding this key (or whole table) is about to be written by
 * this transaction, which found the filter ready (capture.c).
 */

/*
 * Before counting and writing a queue row: if the filter is not ready,
 * take the filter lock in share mode, so the worker cannot count between
 * this transaction's look at ready and its insert; released once the row
 * is written (wtcache_pending_after_queue_write).
 */
void
wtcache_pending_before_queue_write(void)
{
	LOCKTAG		tag;

	if (holding_filter_lock || wtcache_pending_ready(MyDatabaseId))
		return;
	filter_locktag(&tag);
	(void) LockAcquire(&tag, ShareLock, false, false);
	holding_filter_lock = true;
}

/* The queue row was written and counted, or not: let the worker count. */
void
wtcache_pending_after_queue_write(void)
{
	LOCKTAG		tag;

	if (!holding_filter_lock)
		return;
	filter_locktag(&tag);
	LockRelease(&tag, ShareLock, false);
	holding_filter_lock = false;
}

void
wtcache_pending_add(uint32 index)
{
	if (nadds == maxadds)
	{
		int			newmax = maxadds ? maxadds * 2 : 1024;

		adds = adds ? repalloc_huge(adds, sizeof(PendingAdd) * newmax)
			: MemoryContextAllocHuge(TopMemoryContext, sizeof(PendingAdd) * newmax);
		maxadds = newmax;
	}
	/* recorded first: an abort must never take back what was not added */
	adds[nadds].index = index;
	adds[nadds].subid = GetCurrentSubTransactionId();
	nadds++;
	pg_atomic_fetch_add_u32(&pending_counters[index], 1);
}

/* The worker: these queue rows were acknowledged and their delete committed. */
void
wtcache_pending_release(const uint32 *indexes, int n)
{
	for (int i = 0; i < n; i++)
		pg_atomic_fetch_sub_u32(&pending_counters[indexes[i]], 1);
}

static int
cmp_uint32(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a;
	uint32		y = *(const uint32 *) b;

	return (x > y) - (x < y);
}

/*
 * The indexes a queue row counts under: one per key, or its table's for a
 * whole-table or resync row; its table's "changed" counter; and each tag
 * it names, once.  Writers (queue.c) and the worker both go through here,
 * so they agree.  out needs room for wtcache_queue_max_indexes(row).
 */
int
wtcache_pending_row_indexes(Oid dboid, const QueueRow *row, uint32 *out)
{
	const char *vals[INDEX_MAX_KEYS];
	int			lens[INDEX_MAX_KEYS];
	int			width = row->key_width;
	int			n = 0;
	int			first_tag;
	QueueTagIter tagit;
	const Datum *names;
	int			nnames;

	if (row->relid != WTCACHE_TAGS_ONLY)
	{
		if (row->per_table || !row->has_keys || width <= 0 || width > INDEX_MAX_KEYS)
			out[n++] = wtcache_pending_table_index(dboid, row->relid);
		else
		{
			for (int i = 0; i + width <= row->nvalues; i += width)
			{
				for (int c = 0; c < width; c++)
				{
					text	   *t = DatumGetTextPP(row->keys[i + c]);

					vals[c] = VARDATA_ANY(t);
					lens[c] = VARSIZE_ANY_EXHDR(t);
				}
				out[n++] = wtcache_pending_key_index(dboid, row->relid, width, vals, lens);
			}
		}
		out[n++] = wtcache_pending_changed_index(dboid, row->relid);
	}

	first_tag = n;
	wtcache_queue_tags_begin(&tagit, row);
	while (wtcache_queue_tags_next(&tagit, &names, &nnames))
		for (int j = 0; j < nnames; j++)
		{
			text	   *t = DatumGetTextPP(names[j]);

			out[n++] = wtcache_pending_tag_index(dboid, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		}
	if (n - first_tag > 1)
	{
		int			k = first_tag;

		qsort(out + first_tag, n - first_tag, sizeof(uint32), cmp_uint32);
		for (int i = first_tag; i < n; i++)
			if (i == first_tag || out[i] != out[k - 1])
				out[k++] = out[i];
		n = k;
	}
	return n;
}

static void
remember_unsettled(TransactionId xid, int64 first, int n, MemoryContext cxt)
{
	static int	maxunsettled = 0;

	if (nunsettled > 0 && unsettled[nunsettled - 1].xid == xid)
	{
		unsettled[nunsettled - 1].n += n;
		return;
	}
	if (nunsettled == maxunsettled)
	{
		maxunsettled = maxunsettled ? maxunsettled * 2 : 16;
		unsettled = unsettled ? repalloc(unsettled, sizeof(UnsettledRows) * maxunsettled)
			: MemoryContextAlloc(cxt, sizeof(UnsettledRows) * maxunsettled);
	}
	unsettled[nunsettled].xid = xid;
	unsettled[nunsettled].first = first;
	unsettled[nunsettled].n = n;
	nunsettled++;
}

/*
 * The filter lock, exclusively, for the count.  Writers hold it a row at a
 * time while the filter is not ready, so under a steady load (a bulk load
 * of a single row after another) a mere try finds it held nearly every
 * time, and cached reads would stay off Redis as long as the load lasts.
 * Waiting in the lock's queue instead gets it at the next release: writers
 * that ask after us queue behind us for the moment of the count.  The wait
 * is bounded (wait_ms): a writer holding it while its insert waits for a
 * lock on the queue, say, must stall neither delivery nor the writers
 * queued behind us.  False if it was not had in time, or a deadlock was
 * found (this side gives way; PostgreSQL reports nothing).
 */
static bool
lock_filter_for_count(const LOCKTAG *tag, int wait_ms)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	int			nest = NewGUCNestLevel();
	char		timeout[16];
	volatile bool got = false;

	snprintf(timeout, sizeof(timeout), "%d", Max(wait_ms, 1));
	(void) set_config_option("lock_timeout", timeout, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* a lock timeout is an ERROR: contained in a subtransaction */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) LockAcquire(tag, ExclusiveLock, false, false);
		got = true;
		/* the lock passes to the transaction around us */
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (got || (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE &&
					edata->sqlerrcode != ERRCODE_T_R_DEADLOCK_DETECTED))
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	AtEOXact_GUC(true, nest);
	return got;
}

/*
 * The worker, in a transaction of its own: count the queue and make the
 * filter ready.  Returns false (nothing changed) when writers kept the
 * filter lock for longer than wait_ms; the worker tries again later.
 */
bool
wtcache_pending_rebuild(WorkerSlot *slot, Oid queue, int wait_ms)
{
	uint32	   *indexes;
	int64		nindexes = 0;
	int64		maxindexes = 1024;
	LOCKTAG		tag;
	QueueColumns cols;
	SnapshotData dirty;
	Relation	rel;
	TupleDesc	desc;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext rowcxt;
	MemoryContext oldcxt;

	filter_locktag(&tag);
	if (!lock_filter_for_count(&tag, wait_ms))
		return false;

	rel = table_open(queue, AccessShareLock);
	desc = RelationGetDescr(rel);
	wtcache_queue_columns(desc, &cols);
	/* rows still to settle from an earlier count are counted again below */
	if (unsettled_indexes != NULL)
		pfree(unsettled_indexes);
	unsettled_indexes = NULL;
	nunsettled = 0;
	nunsettled_indexes = 0;

	/* Count everything first; nothing can fail once counters move. */
	indexes = MemoryContextAllocHuge(TopMemoryContext, sizeof(uint32) * maxindexes);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "wtcache queue count", ALLOCSET_SMALL_SIZES);
	InitDirtySnapshot(dirty);
	scan = table_beginscan(rel, &dirty, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		TransactionId in_progress = dirty.xmin;
		QueueRow	row;
		int			n;

		/*
		 * A new version written by an UPDATE in progress (retry or discard
		 * of set-aside rows): its old version, still live, is the one
		 * counted.
		 */
		if (TransactionIdIsValid(in_progress) && (tup->t_data->t_infomask & HEAP_UPDATED))
			continue;

		oldcxt = MemoryContextSwitchTo(rowcxt);
		wtcache_queue_decode(tup, desc, &cols, &row);
		wtcache_queue_expand(&row);
		MemoryContextSwitchTo(oldcxt);
		if (nindexes + wtcache_queue_max_indexes(&row) > maxindexes)
		{
			maxindexes = Max(maxindexes * 2, nindexes + wtcache_queue_max_indexes(&row));
			indexes = repalloc_huge(indexes, sizeof(uint32) * maxindexes);
		}
		n = wtcache_pending_row_indexes(MyDatabaseId, &row, indexes + nindexes);
		if (TransactionIdIsValid(in_progress))
			remember_unsettled(in_progress, nindexes, n, TopMemoryContext);
		nindexes += n;
		MemoryContextReset(rowcxt);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	MemoryContextDelete(rowcxt);

	for (int64 i = 0; i < nindexes; i++)
		pg_atomic_fetch_add_u32(&pending_counters[indexes[i]], 1);
	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	slot->pending_ready = true;
	LWLockRelease(WtcacheSharedState->lock);
	LockRelease(&tag, ExclusiveLock, false);

	if (nunsettled > 0)
		unsettled_indexes = indexes;	/* kept for wtcache_pending_settle() */
	else
		pfree(indexes);
	return true;
}

/*
 * The worker, in a transaction: take back the counts of rows whose
 * transactions were in progress at the count and have since aborted.
 * Those that committed are delivered and released as any other row.
 * True while some are still in progress (prepared transactions).
 */
bool
wtcache_pending_settle(void)
{
	int			kept = 0;

	for (int i = 0; i < nunsettled; i++)
	{
		UnsettledRows *u = &unsettled[i];

		if (TransactionIdIsInProgress(u->xid))
			unsettled[kept++] = *u;
		else if (!TransactionIdDidCommit(u->xid))
			wtcache_pending_release(unsettled_indexes + u->first, u->n);
	}
	nunsettled = kept;
	if (nunsettled == 0 && unsettled_indexes != NULL)
	{
		pfree(unsettled_indexes);
		unsettled_indexes = NULL;
	}
	return nunsettled > 0;
}
