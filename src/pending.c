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
 * pending (they read the table).  The worker counts under a SHARE lock on
 * the queue, which waits for every transaction that wrote queue rows
 * before and holds back new ones, then sets ready; so each queue row is
 * counted once, by its writer or by the worker.
 *
 * A prepared transaction keeps its counts; ROLLBACK PREPARED leaves them
 * behind, which only sends readers of those keys to the table.  While a
 * prepared transaction of the database exists the worker does not count
 * (it could not see that transaction's rows), and readers read tables.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lmgr.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

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
static bool callbacks_registered = false;

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

static void
pending_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			for (int i = 0; i < nadds; i++)
				pg_atomic_fetch_sub_u32(&pending_counters[adds[i].index], 1);
			nadds = 0;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			nadds = 0;
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

static void
pending_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
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
			break;
		default:
			break;
	}
}

/*
 * A queue row holding this key (or whole table) is written by this
 * transaction (counted before or after the insert: see its caller).  Caller checked wtcache_pending_ready() holding the lock
 * that writing it takes on the queue.
 */
void
wtcache_pending_add(uint32 index)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(pending_xact_callback, NULL);
		RegisterSubXactCallback(pending_subxact_callback, NULL);
		callbacks_registered = true;
	}
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
 * it names, once.  tags is the queue row's tags array (count, names...).
 * Writers and the worker both go through here, so they agree.  out needs
 * room for nelems / width + ntags + 2 indexes.
 */
int
wtcache_pending_row_indexes(Oid dboid, Oid relid, bool per_table, int width,
							Datum *elems, int nelems, Datum *tags, int ntags,
							uint32 *out)
{
	const char *vals[INDEX_MAX_KEYS];
	int			lens[INDEX_MAX_KEYS];
	int			n = 0;
	int			first_tag;

	if (OidIsValid(relid))
	{
		if (per_table || width <= 0 || width > INDEX_MAX_KEYS)
			out[n++] = wtcache_pending_table_index(dboid, relid);
		else
		{
			for (int i = 0; i + width <= nelems; i += width)
			{
				for (int c = 0; c < width; c++)
				{
					text	   *t = DatumGetTextPP(elems[i + c]);

					vals[c] = VARDATA_ANY(t);
					lens[c] = VARSIZE_ANY_EXHDR(t);
				}
				out[n++] = wtcache_pending_key_index(dboid, relid, width, vals, lens);
			}
		}
		out[n++] = wtcache_pending_changed_index(dboid, relid);
	}

	first_tag = n;
	for (int i = 0; i < ntags;)
	{
		int			count = atoi(TextDatumGetCString(tags[i]));

		for (int j = 1; j <= count && i + j < ntags; j++)
		{
			text	   *t = DatumGetTextPP(tags[i + j]);

			out[n++] = wtcache_pending_tag_index(dboid, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		}
		i += count + 1;
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

/*
 * LOCK wtcache.queue IN SHARE MODE, giving up after a second: a lock
 * timeout must not take the worker down, so it is caught.
 */
static bool
lock_queue_briefly(void)
{
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool locked = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(outer);
	PG_TRY();
	{
		int			nestlevel = NewGUCNestLevel();

		(void) set_config_option("lock_timeout", "1000", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		if (SPI_execute("LOCK TABLE wtcache.queue IN SHARE MODE", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "wtcache: could not lock wtcache.queue");
		AtEOXact_GUC(true, nestlevel);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = oldowner;
		locked = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = oldowner;
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		FreeErrorData(edata);
	}
	PG_END_TRY();

	return locked;
}

/*
 * The worker, in a transaction of its own: count the queue and make the
 * filter ready.  Returns false (nothing changed) when a prepared
 * transaction of this database exists or the lock could not be had within
 * a second; the worker tries again later.
 */
bool
wtcache_pending_rebuild(WorkerSlot *slot)
{
	uint32	   *indexes;
	int64		nindexes = 0;
	int64		maxindexes = 1024;
	Portal		portal;
	SPIPlanPtr	plan;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext oldcxt;

	if (SPI_execute("SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE database = current_database() LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: pg_prepared_xacts lookup failed");
	if (SPI_processed > 0)
		return false;

	if (!lock_queue_briefly())
		return false;

	/* Count everything first; nothing can fail once counters move. */
	indexes = palloc(sizeof(uint32) * maxindexes);
	plan = SPI_prepare("SELECT relid, keys, key_width, per_table, tags FROM wtcache.queue", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "wtcache: could not prepare the queue count");
	/* not read-only: a new snapshot, which sees what committed during the lock wait */
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, false);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 256);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull,
						keys_null,
						width_null;
			Oid			relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
			Datum		keys = SPI_getbinval(tup, desc, 2, &keys_null);
			int			width = DatumGetInt16(SPI_getbinval(tup, desc, 3, &width_null));
			bool		per_table = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
			bool		tags_null;
			Datum		tagarr = SPI_getbinval(tup, desc, 5, &tags_null);
			Datum	   *elems = NULL;
			int			nelems = 0;
			Datum	   *tags = NULL;
			int			ntags = 0;

			if (!keys_null)
				deconstruct_array(DatumGetArrayTypeP(keys), TEXTOID, -1, false,
								  TYPALIGN_INT, &elems, NULL, &nelems);
			if (!tags_null)
				deconstruct_array(DatumGetArrayTypeP(tagarr), TEXTOID, -1, false,
								  TYPALIGN_INT, &tags, NULL, &ntags);
			oldcxt = MemoryContextSwitchTo(outer);
			if (nindexes + nelems + ntags + 2 > maxindexes)
			{
				maxindexes = Max(maxindexes * 2, nindexes + nelems + ntags + 2);
				indexes = repalloc_huge(indexes, sizeof(uint32) * maxindexes);
			}
			MemoryContextSwitchTo(oldcxt);
			nindexes += wtcache_pending_row_indexes(MyDatabaseId, relid,
													per_table || keys_null,
													width_null ? 0 : width,
													elems, nelems, tags, ntags,
													indexes + nindexes);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);

	for (int64 i = 0; i < nindexes; i++)
		pg_atomic_fetch_add_u32(&pending_counters[indexes[i]], 1);
	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	slot->pending_ready = true;
	LWLockRelease(WtcacheSharedState->lock);
	pfree(indexes);
	return true;
}
