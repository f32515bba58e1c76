/*-------------------------------------------------------------------------
 * stats.c
 *		Read counters per watched table, shared by all backends.
 *
 * A shared hash keyed by (database, table) whose entries are never removed,
 * so a backend can keep a pointer to its entry and count with atomic adds
 * and no lock.  When the hash is full, further tables share one entry of
 * table 0 ("other tables").  Counters start at zero with the server.
 *
 * Also the rule for who may see what wtcache knows of a table (its watch,
 * its counters, its metrics): wtcache_can_see_table().
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "shmem.h"
#include "stats.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/syscache.h"

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

/*
 * May roleid see what wtcache shows of table relid: its row in
 * wtcache.watched and wtcache.status, its read counters, its metrics?
 *
 * The rule of information_schema.tables, the SQL standard's idea of a
 * table a role can see: the rights of the table's owner (its owner and the
 * members of the owner's role), or any privilege on the table, or any on
 * one of its columns.  Whoever can read or change a table (an UPDATE of one
 * column included) can see how it is delivered; a role that cannot even
 * name its columns learns nothing about its traffic.  Plus
 * pg_read_all_stats (so pg_monitor, and superusers), the role PostgreSQL's
 * own statistics views require to show other roles' activity.
 *
 * A table that no longer exists is seen only through pg_read_all_stats.
 */
bool
wtcache_can_see_table(Oid relid, Oid roleid)
{
	HeapTuple	tup;
	Oid			owner;
	bool		missing = false;

	if (has_privs_of_role(roleid, ROLE_PG_READ_ALL_STATS))
		return true;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return false;
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	if (has_privs_of_role(roleid, owner))
		return true;
	if (pg_class_aclmask_ext(relid, roleid,
							 ACL_SELECT | ACL_INSERT | ACL_UPDATE | ACL_DELETE |
							 ACL_TRUNCATE | ACL_REFERENCES | ACL_TRIGGER,
							 ACLMASK_ANY, &missing) != 0)
		return true;
	if (missing)
		return false;
	return pg_attribute_aclcheck_all(relid, roleid,
									 ACL_SELECT | ACL_INSERT | ACL_UPDATE | ACL_REFERENCES,
									 ACLMASK_ANY) == ACLCHECK_OK;
}

/*
 * wtcache._can_see_table(rel): the same for the current user, for the
 * filter of wtcache.status (which reads wtcache.watched as its owner).
 */
PG_FUNCTION_INFO_V1(wtcache_can_see_table_sql);
Datum
wtcache_can_see_table_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(wtcache_can_see_table(PG_GETARG_OID(0), GetUserId()));
}

/*
 * wtcache.read_stats(): this database's counters, one row per table the
 * caller can see (wtcache_can_see_table).  The entry of table 0, where
 * tables beyond MAX_READ_STATS share counters, mixes tables: it is shown
 * only to pg_read_all_stats.
 */
PG_FUNCTION_INFO_V1(wtcache_read_stats);
Datum
wtcache_read_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS seq;
	ReadStats  *s;
	Oid		   *relids;
	uint64	  (*counters)[8];
	int			n = 0;
	int			max;
	Oid			user = GetUserId();

	InitMaterializedSRF(fcinfo, 0);
	if (read_stats == NULL)
		return (Datum) 0;

	/* copied under the lock; the privilege checks read catalogs, after it */
	LWLockAcquire(WtcacheSharedState->lock, LW_SHARED);
	max = (int) hash_get_num_entries(read_stats);
	relids = palloc(sizeof(Oid) * Max(max, 1));
	counters = palloc(sizeof(*counters) * Max(max, 1));
	hash_seq_init(&seq, read_stats);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		if (s->dboid != MyDatabaseId || s->relid == WTCACHE_QUERY_STATS_RELID || n >= max)
			continue;
		relids[n] = s->relid;
		counters[n][0] = pg_atomic_read_u64(&s->hits);
		counters[n][1] = pg_atomic_read_u64(&s->misses);
		counters[n][2] = pg_atomic_read_u64(&s->fallbacks);
		counters[n][3] = pg_atomic_read_u64(&s->bypasses);
		counters[n][4] = pg_atomic_read_u64(&s->fills);
		counters[n][5] = pg_atomic_read_u64(&s->fills_rejected);
		counters[n][6] = pg_atomic_read_u64(&s->stampede_waits);
		counters[n][7] = pg_atomic_read_u64(&s->table_reads);
		n++;
	}
	LWLockRelease(WtcacheSharedState->lock);

	for (int i = 0; i < n; i++)
	{
		Datum		values[9];
		bool		nulls[9] = {false};

		if (OidIsValid(relids[i]) ? !wtcache_can_see_table(relids[i], user)
			: !has_privs_of_role(user, ROLE_PG_READ_ALL_STATS))
			continue;
		values[0] = ObjectIdGetDatum(relids[i]);
		for (int c = 0; c < 8; c++)
			values[c + 1] = Int64GetDatum((int64) counters[i][c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
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
