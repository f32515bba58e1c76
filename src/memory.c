/*-------------------------------------------------------------------------
 * memory.c
 *		Redis under memory pressure, seen from SQL (issue 20):
 *		wtcache.redis_memory(), the worker's view of Redis's memory (its
 *		OOM episodes, maxmemory and policy, generation markers evicted),
 *		and
 *		wtcache.redis_bytes_per_row(), what a watched table's rows take in
 *		Redis, measured, for sizing maxmemory.
 *
 * What the worker does when Redis is out of memory is in worker.c
 * (oom_refused, oom_recovered); why every kind of key wtcache writes may be
 * evicted without a stale read is in src/README.md ("Redis under memory
 * pressure").
 *
 * redis_bytes_per_row() reads the table as the caller (not SECURITY
 * DEFINER: its privileges and row-level security apply), with search_path
 * pinned, and needs SELECT on the whole table, since a value's size tells
 * something of every column in it.  It names only keys of that table
 * (wtcache.redis_key(), from key values it read), so it tells nothing of
 * keys the caller could not name.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "redis.h"
#include "rights.h"
#include "session.h"
#include "shmem.h"
#include "stats.h"
#include "watch.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

/* the most rows one call samples: each is a MEMORY USAGE in one pipeline */
#define BYTES_PER_ROW_MAX_SAMPLE 10000

extern Datum wtcache_redis_key(PG_FUNCTION_ARGS);

/*
 * wtcache.redis_memory(): per worker, what it knows of Redis's memory.
 * Other databases' workers only for pg_read_all_stats, as worker_status().
 */
PG_FUNCTION_INFO_V1(wtcache_redis_memory);
Datum
wtcache_redis_memory(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all_databases = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	wtcache_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];
		Oid			dboid;
		pid_t		pid;
		bool		connected;
		TimestampTz oom_since;
		uint64		episodes,
					refusals,
					marker_evictions;
		int64		maxmemory;
		char		policy[32];
		Datum		values[8];
		bool		nulls[8] = {0};

		if (!wtcache_slot_shown(slot, all_databases, &dboid))
			continue;

		SpinLockAcquire(&slot->mutex);
		pid = slot->pid;
		connected = slot->connected;
		oom_since = slot->oom_since;
		episodes = slot->oom_episodes;
		refusals = slot->oom_refusals;
		maxmemory = slot->maxmemory;
		memcpy(policy, slot->maxmemory_policy, sizeof(policy));
		marker_evictions = slot->marker_evictions;
		SpinLockRelease(&slot->mutex);

		values[0] = ObjectIdGetDatum(dboid);
		/* out of memory outlasts the connections of its episode */
		if (pid != 0 && oom_since != 0)
			values[1] = CStringGetTextDatum("out of memory");
		else if (pid != 0 && connected)
			values[1] = CStringGetTextDatum("ok");
		else
			nulls[1] = true;
		if (pid != 0 && oom_since != 0)
			values[2] = TimestampTzGetDatum(oom_since);
		else
			nulls[2] = true;
		values[3] = Int64GetDatum((int64) episodes);
		values[4] = Int64GetDatum((int64) refusals);
		if (pid != 0 && maxmemory >= 0)
			values[5] = Int64GetDatum(maxmemory);
		else
			nulls[5] = true;
		if (pid != 0 && policy[0])
			values[6] = CStringGetTextDatum(policy);
		else
			nulls[6] = true;
		values[7] = Int64GetDatum((int64) marker_evictions);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * Key values of up to nsample rows of the table, read as the caller, each
 * made into its Redis key.  Returned in the caller's memory context.
 */
static char **
sample_row_keys(Oid relid, int nsample, int *nkeys, int64 *table_rows)
{
	WatchConfig configdata;
	WatchConfig *config = &configdata;
	MemoryContext caller = CurrentMemoryContext;
	Relation	rel;
	TupleDesc	desc;
	float4		reltuples;
	bool		plain;
	char	   *qname;
	StringInfoData sql;
	Oid		   *outfuncs;
	char	  **keys;
	int			nested;
	int			n = 0;
	char	  **texts;

	/* the watch is read through SPI, as the extension's owner */
	nested = wtcache_pin_search_path();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!wtcache_load_watch(relid, config))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not watched by wtcache", get_rel_name(relid)),
				 errhint("Call wtcache.watch() on it first.")));
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	reltuples = rel->rd_rel->reltuples;
	plain = rel->rd_rel->relkind == RELKIND_RELATION;
	qname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									   RelationGetRelationName(rel));
	outfuncs = palloc(sizeof(Oid) * config->nkeys);

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < config->nkeys; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, config->key_attnums[i] - 1);
		bool		varlena;

		appendStringInfo(&sql, "%st.%s", i ? ", " : "", quote_identifier(NameStr(att->attname)));
		getTypeOutputInfo(att->atttypid, &outfuncs[i], &varlena);
	}
	appendStringInfo(&sql, " FROM %s t", qname);
	/* past a few times the sample, a spread of the table rather than its head */
	if (plain && reltuples > 2.0 * nsample)
		appendStringInfo(&sql, " TABLESAMPLE bernoulli (%.6f)",
						 Min(100.0, 200.0 * nsample / reltuples));
	appendStringInfo(&sql, " LIMIT %d", nsample);
	table_close(rel, AccessShareLock);

	if (SPI_execute(sql.data, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: sampling the keys of %s failed", qname);
	keys = MemoryContextAlloc(caller, sizeof(char *) * Max(SPI_processed, 1));
	texts = palloc(sizeof(char *) * config->nkeys);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull = false;
		MemoryContext spi = MemoryContextSwitchTo(caller);

		for (int i = 0; i < config->nkeys && !isnull; i++)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, i + 1, &isnull);

			if (!isnull)
				texts[i] = OidOutputFunctionCall(outfuncs[i], d);
		}
		/* a row with a null key has no Redis key */
		if (!isnull)
		{
			Datum	   *elems = palloc(sizeof(Datum) * config->nkeys);

			for (int i = 0; i < config->nkeys; i++)
				elems[i] = CStringGetTextDatum(texts[i]);
			/* a text[], made into a key after SPI_finish */
			keys[n++] = (char *) construct_array(elems, config->nkeys, TEXTOID, -1, false, TYPALIGN_INT);
		}
		MemoryContextSwitchTo(spi);
	}
	*table_rows = (int64) reltuples;
	/* never analyzed (-1): count what the caller sees */
	if (reltuples < 0)
	{
		resetStringInfo(&sql);
		appendStringInfo(&sql, "SELECT count(*) FROM %s", qname);
		if (SPI_execute(sql.data, true, 0) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			*table_rows = isnull ? 0 : DatumGetInt64(d);
		}
	}
	SPI_finish();
	wtcache_unpin_search_path(nested);

	/* the key names, by the path every read takes (wtcache.redis_key()) */
	for (int i = 0; i < n; i++)
	{
		Datum		key = DirectFunctionCall2(wtcache_redis_key, ObjectIdGetDatum(relid),
											  PointerGetDatum(keys[i]));

		keys[i] = text_to_cstring(DatumGetTextPP(key));
	}
	*nkeys = n;
	return keys;
}

/*
 * wtcache.redis_bytes_per_row(rel, sample): MEMORY USAGE of the Redis keys
 * of up to sample rows of the table, averaged over those Redis holds, and
 * that average times the table's rows.
 */
PG_FUNCTION_INFO_V1(wtcache_redis_bytes_per_row);
Datum
wtcache_redis_bytes_per_row(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int32		nsample = PG_GETARG_INT32(1);
	TupleDesc	tupdesc;
	char	  **keys;
	int			nkeys;
	int64		table_rows;
	int			cached = 0;
	int64		bytes = 0;
	WtcRedis   *r;
	Datum		values[5];
	bool		nulls[5] = {0};

	wtcache_require_preload();
	if (nsample < 1 || nsample > BYTES_PER_ROW_MAX_SAMPLE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample must be between 1 and %d, not %d", BYTES_PER_ROW_MAX_SAMPLE, nsample),
				 errhint("A few hundred rows give a useful average.")));
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to measure the Redis keys of table %s", get_rel_name(relid)),
				 errdetail("The size of a row's value tells something of every column in it."),
				 errhint("Measuring needs SELECT on the whole table.")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	keys = sample_row_keys(relid, nsample, &nkeys, &table_rows);

	r = nkeys > 0 ? wtcache_session_redis() : NULL;
	if (nkeys > 0 && r == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("wtcache: Redis is not available to measure %s", get_rel_name(relid)),
				 errhint("Check that Redis is running and that wtcache.redis_url points to it.")));
	if (nkeys > 0)
	{
		bool		ok = true;
		WtcReply	reply;

		/* SAMPLES 0: every element of a hash, not an estimate from five */
		for (int i = 0; i < nkeys && ok; i++)
		{
			const char *argv[5] = {"MEMORY", "USAGE", keys[i], "SAMPLES", "0"};
			size_t		lens[5] = {6, 5, strlen(keys[i]), 7, 1};

			ok = wtc_redis_append(r, 5, argv, lens);
		}
		wtcache_session_set_busy(true);
		ok = ok && wtc_redis_flush(r);
		for (int i = 0; i < nkeys && ok; i++)
		{
			ok = wtc_redis_read(r, &reply);
			/* nil: not cached now (evicted, expired, or never filled) */
			if (ok && reply.type == WTC_REPLY_INTEGER)
			{
				cached++;
				bytes += reply.integer;
			}
			else if (ok && reply.type == WTC_REPLY_ERROR)
			{
				/* still busy: the replies left unread drop the connection */
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("wtcache: Redis refused MEMORY USAGE: %s", reply.str),
						 errhint("The Redis user of wtcache.redis_url needs the MEMORY command (ACL +memory).")));
			}
		}
		if (!ok)
		{
			wtcache_session_failed();
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("wtcache: lost the connection to Redis while measuring %s", get_rel_name(relid))));
		}
		wtcache_session_set_busy(false);
	}

	values[0] = Int32GetDatum(nkeys);
	values[1] = Int32GetDatum(cached);
	if (cached > 0)
	{
		double		avg = (double) bytes / cached;

		values[2] = Float8GetDatum(avg);
		values[3] = Int64GetDatum(table_rows);
		values[4] = Int64GetDatum((int64) (avg * Max(table_rows, 0) + 0.5));
	}
	else
	{
		nulls[2] = nulls[4] = true;
		values[3] = Int64GetDatum(table_rows);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
