/*-------------------------------------------------------------------------
 * stats.c
 *		Read counters per watched table, shared by all backends.
 *
 * A shared hash keyed by (database, table) whose entries are never removed,
 * so a backend can keep a pointer to its entry and count with atomic adds
 * and no lock.  When the hash is full, further tables share one entry of
 * table 0 ("other tables").  Counters start at zero with the server.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"

#define MAX_READ_STATS 4096

typedef struct ReadStatsKey
{
	Oid			dboid;
	Oid			relid;
} ReadStatsKey;

static HTAB *read_stats = NULL;

void
wtcache_stats_shmem_request(void)
{
	RequestAddinShmemSpace(hash_estimate_size(MAX_READ_STATS + 1, sizeof(ReadStats)));
}

static void
init_counters(ReadStats *s)
{
	pg_atomic_init_u64(&s->hits, 0);
	pg_atomic_init_u64(&s->misses, 0);
	pg_atomic_init_u64(&s->fallbacks, 0);
	pg_atomic_init_u64(&s->bypasses, 0);
	pg_atomic_init_u64(&s->fills, 0);
	pg_atomic_init_u64(&s->fills_rejected, 0);
	pg_atomic_init_u64(&s->stampede_waits, 0);
	pg_atomic_init_u64(&s->table_reads, 0);
}

/* Caller holds AddinShmemInitLock. */
void
wtcache_stats_shmem_startup(void)
{
	HASHCTL		info;

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(ReadStatsKey);
	info.entrysize = sizeof(ReadStats);
	read_stats = ShmemInitHash("wtcache read stats", MAX_READ_STATS + 1, MAX_READ_STATS + 1,
							   &info, HASH_ELEM | HASH_BLOBS);
}

ReadStats *
wtcache_read_stats_entry(Oid dboid, Oid relid)
{
	ReadStatsKey key = {dboid, relid};
	ReadStats  *s;
	bool		found;

	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	s = hash_search(read_stats, &key, HASH_FIND, NULL);
	LWLockRelease(WtcacheSharedState->lock);
	if (s != NULL)
		return s;

	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	if (hash_get_num_entries(read_stats) >= MAX_READ_STATS)
		key.relid = InvalidOid;
	s = hash_search(read_stats, &key, HASH_ENTER_NULL, &found);
	if (s != NULL && !found)
		init_counters(s);
	LWLockRelease(WtcacheSharedState->lock);
	if (s == NULL)
		elog(ERROR, "wtcache: read statistics table is full");
	return s;
}

/* wtcache.read_stats(): this database's counters, one row per table. */
PG_FUNCTION_INFO_V1(wtcache_read_stats);
Datum
wtcache_read_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	ReadStats  *s;

	InitMaterializedSRF(fcinfo, 0);
	if (read_stats == NULL)
		return (Datum) 0;

	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	hash_seq_init(&seq, read_stats);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		Datum		values[9];
		bool		nulls[9] = {false};

		if (s->dboid != MyDatabaseId || s->relid == WTCACHE_QUERY_STATS_RELID)
			continue;
		values[0] = ObjectIdGetDatum(s->relid);
		values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&s->hits));
		values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&s->misses));
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fallbacks));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&s->bypasses));
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fills));
		values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fills_rejected));
		values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&s->stampede_waits));
		values[8] = Int64GetDatum((int64) pg_atomic_read_u64(&s->table_reads));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(WtcacheSharedState->lock);
	return (Datum) 0;
}

/* wtcache.query_stats(): this database's cached query counters. */
PG_FUNCTION_INFO_V1(wtcache_query_stats);
Datum
wtcache_query_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	ReadStats  *s;
	Datum		values[8];
	bool		nulls[8] = {false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "wtcache.query_stats() must return a record");
	wtcache_require_preload();
	s = wtcache_read_stats_entry(MyDatabaseId, WTCACHE_QUERY_STATS_RELID);
	values[0] = Int64GetDatum((int64) pg_atomic_read_u64(&s->hits));
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&s->misses));
	values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fallbacks));
	values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&s->bypasses));
	values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fills));
	values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fills_rejected));
	values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&s->stampede_waits));
	values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&s->table_reads));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
