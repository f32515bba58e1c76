/*-------------------------------------------------------------------------
 * read.c
 *		Cached reads: wtcache.get(), wtcache.get_many() (get_row() is SQL
 *		over get()).
 *
 * A read serves Redis only when doing so cannot return something older
 * than what the database had committed when the read started:
 *	- the pending filter (pending.c) says no change to the key is on its
 *	  way, so whatever Redis holds is the latest committed version;
 *	- otherwise (a change pending, the filter not ready, row-level security
 *	  applying to the caller, this transaction having written the table,
 *	  REPEATABLE READ or SERIALIZABLE) the row is read from the table and
 *	  Redis is left alone.
 *
 * A miss fills Redis under a lease, in steps that make a fill that raced
 * with a writer harmless and keep the versions a reader sees from going
 * back:
 *	1. the lease script, atomically: return the value if there is one now;
 *	   else take the lease <row key>:l (SET NX PX) and return the row's
 *	   tombstone version T (or nothing);
 *	2. read the table with a snapshot S taken after the lease (READ
 *	   COMMITTED takes a new one per query);
 *	3. read F, the last id wtcache.queue_id_seq handed out, made durable;
 *	4. check the pending filter again: a key with a change pending is not
 *	   filled;
 *	5. the fill script writes the row, with "_v" = max(F, T), only if our
 *	   lease is still there, the key is still missing and the tombstone is
 *	   still T.
 * Versions are queue ids.  A writer counts its keys in the pending filter
 * before its queue row draws its id (capture.c), and commits after both.
 * So a change with an id <= F counted its key before step 3: at step 4 it
 * is still pending (no fill), or it is in S, or it committed after S and
 * was pushed since, after the lease, and every push deletes the lease
 * (push.c), so step 5 refuses.  A change with an id > F replaces the fill
 * when it is pushed: a fill never refuses a later change.  And every
 * version Redis held for the key, pushed or filled before, is <= F (the
 * id was handed out before), so "_v" never goes back, even after the key
 * was evicted: nothing in Redis needs to remember it.  F must survive a
 * crash or a failover, or ids <= F would be handed out again: its WAL is
 * flushed, and with synchronous standbys a fill waits for nothing but is
 * skipped until the worker has seen that WAL on them.  Readers that find
 * the lease taken wait up to wtcache.fill_wait for the value (stampede
 * protection), then read the table without filling.
 *
 * Redis is reached through the backend's session (session.c): when its
 * circuit breaker is open, reads go to the table (or raise an error,
 * wtcache.read_fallback = off).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "keys.h"
#include "pending.h"
#include "redis.h"
#include "rights.h"
#include "settings.h"
#include "shmem.h"
#include "stats.h"
#include "watch.h"
#include "xact.h"
#include "keyspace.h"
#include "session.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/tupdesc.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_type.h"
#include "replication/syncrep.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"

/*
 * KEYS[1]: row key; of a table with a key template, KEYS[2] and KEYS[3]:
 * its tombstone and lease keys (keyspace.h), else they are the row key
 * and a suffix.  ARGV: lease token, lease ms.
 * {1, value} | {2, tombstone or ""} (lease is ours) | {3} (someone else's)
 * | {4}: a string wtcache did not write (no "_v" at its head: under a key
 * template the key space is the application's too), read the table and
 * fill nothing over it.  A key of another type raises WRONGTYPE: the same.
 */
static const char lease_script[] =
"local v = redis.call('GET', KEYS[1])\n"
"if v then\n"
"  if string.match(v, " WTC_LUA_VALUE_VERSION ") then return {1, v} end\n"
"  return {4, ''}\n"
"end\n"
"local t = redis.call('GET', KEYS[2] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_TOMBSTONE_SUFFIX) ") or ''\n"
"if redis.call('SET', KEYS[3] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_LEASE_SUFFIX) ", ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, t} end\n"
"return {3, ''}\n";

SessionScript wtcache_row_lease_script = {lease_script};

/*
 * KEYS[1]: row key[, tombstone, lease keys] (lease_script).  ARGV: lease
 * token, tombstone seen with the lease, payload ("" = just give the lease
 * back), ttl ms ("0" = none).
 * 1 filled, 0 refused (stale), -1 lease given back.
 */
static const char fill_script[] =
"local l = KEYS[3] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_LEASE_SUFFIX) "\n"
"if redis.call('GET', l) ~= ARGV[1] then return 0 end\n"
"redis.call('DEL', l)\n"
"if ARGV[3] == '' then return -1 end\n"
"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
"if (redis.call('GET', KEYS[2] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_TOMBSTONE_SUFFIX) ") or '') ~= ARGV[2] then return 0 end\n"
"if ARGV[4] ~= '0' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])\n"
"else redis.call('SET', KEYS[1], ARGV[3]) end\n"
"return 1\n";

SessionScript wtcache_row_fill_script = {fill_script};

/*
 * The same two for a hash-format table (keyspace.h).  The lease script
 * reads the hash with HMGET of "_v" and the columns, as a plain read does:
 * KEYS[1]: row key[, tombstone, lease keys].  ARGV: lease token, lease
 * ms, "_v", the columns.
 * {1, values} | {2, tombstone or ""} | {3} | {4}: the key holds something
 * that is not this format's (a string of the JSON format, before a format
 * change was delivered): read the table, fill nothing.
 */
static const char lease_hash_script[] =
"local h = redis.pcall('HMGET', KEYS[1], unpack(ARGV, 3))\n"
"if h.err then return {4, ''} end\n"
"if h[1] then return {1, h} end\n"
"if redis.call('EXISTS', KEYS[1]) == 1 then return {4, ''} end\n"
"local t = redis.call('GET', KEYS[2] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_TOMBSTONE_SUFFIX) ") or ''\n"
"if redis.call('SET', KEYS[3] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_LEASE_SUFFIX) ", ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, t} end\n"
"return {3, ''}\n";

SessionScript wtcache_row_lease_hash_script = {lease_hash_script};

/*
 * KEYS[1]: row key[, tombstone, lease keys].  ARGV: lease token, tombstone
 * seen with the lease, ttl ms ("0" = none), the version ("" = just give the lease back), then the
 * fields: field, value...  The checks of fill_script, then "_v" and the
 * fields in one HSET (and PEXPIRE), in this one script: no reader sees the
 * hash without its version.
 */
static const char fill_hash_script[] =
"local l = KEYS[3] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_LEASE_SUFFIX) "\n"
"if redis.call('GET', l) ~= ARGV[1] then return 0 end\n"
"redis.call('DEL', l)\n"
"if ARGV[4] == '' then return -1 end\n"
"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
"if (redis.call('GET', KEYS[2] or KEYS[1] .. " WTC_LUA_STR(WTC_KEY_TOMBSTONE_SUFFIX) ") or '') ~= ARGV[2] then return 0 end\n"
"redis.call('HSET', KEYS[1], " WTC_LUA_STR(WTC_VALUE_VERSION) ", ARGV[4], unpack(ARGV, 5))\n"
"if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end\n"
"return 1\n";

SessionScript wtcache_row_fill_hash_script = {fill_hash_script};

/*
 * SPI is connected only when a call needs it (a table read, or a table's
 * settings to load): a hit does not pay for it.  An error aborts the
 * transaction, which disconnects SPI, so each call starts afresh.
 */
static bool spi_open = false;

static void
need_spi(void)
{
	if (!spi_open)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		spi_open = true;
	}
}

static void
end_spi(void)
{
	if (spi_open)
		SPI_finish();
	spi_open = false;
}

/* ---------------------------------------------------------------------
 * What a backend knows about a watched table, until it is invalidated
 * ---------------------------------------------------------------------
 */
typedef struct ReadTable
{
	Oid			relid;			/* hash key */
	bool		valid;
	MemoryContext cxt;
	int			nkeys;
	char	   *table_key;		/* "<db>:<schema>.<table>", escaped */
	KeyTemplate *tmpl;			/* its key template, NULL: the default layout */
	char	   *qname;
	Oid		   *typids;
	Oid		   *ioparams;
	int32	   *typmods;
	bool	   *binary;			/* see keys.c */
	FmgrInfo   *in;
	FmgrInfo   *out;
	FmgrInfo   *send;
	bool		all_stable;
	bool		invalidate_mode;
	int64		ttl_ms;
	KeyLookup	lookup;			/* the reads by key and their parameters */
	SPIPlanPtr	fetch_plan;		/* lookup.sql_many */
	SPIPlanPtr	fetch_one_plan; /* lookup.sql_one */
	bool		render_canonical;	/* row JSON depends on session settings */
	ReadStats  *stats;
	/*
	 * Format 'hash' (keyspace.h): the value's columns, lookup.field_names,
	 * are read with HMGET and made back into the row JSON a JSON-format
	 * table gives: each field through its base type's input function into
	 * a row of field_desc, then row_to_json, as the worker renders a JSON
	 * value; so get() returns the same jsonb from either format.
	 */
	bool		hash;
	int			nfields;
	FmgrInfo   *field_in;
	Oid		   *field_ioparams;
	TupleDesc	field_desc;		/* blessed: row_to_json looks it up */
	bool		field_canonical;	/* a field's text depends on settings */
	const char **hmget_argv;	/* HMGET, the key (per read), "_v", fields */
	size_t	   *hmget_lens;
} ReadTable;

static HTAB *read_tables = NULL;

static void
invalidate_read_table(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	ReadTable  *rt;

	if (read_tables == NULL)
		return;
	hash_seq_init(&seq, read_tables);
	while ((rt = hash_seq_search(&seq)) != NULL)
		if (relid == InvalidOid || rt->relid == relid)
			rt->valid = false;
}

static void
invalidate_all_read_tables(Datum arg, int cacheid, uint32 hashvalue)
{
	invalidate_read_table(arg, InvalidOid);
}

static SPIPlanPtr
prepare_kept(ReadTable *rt, const char *sql, const Oid *argtypes)
{
	SPIPlanPtr	plan;
	int			nestlevel = wtcache_pin_search_path();

	plan = SPI_prepare(sql, rt->nkeys, (Oid *) argtypes);
	wtcache_unpin_search_path(nestlevel);
	if (plan == NULL)
		elog(ERROR, "wtcache: could not prepare the read of %s: %s",
			 rt->qname, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/*
 * How a hash's fields become a row again (ReadTable): the columns' base
 * types, whose input functions run no code of a domain's owner; JSON
 * renders a domain as its base type anyway.  Typmods are left out: the
 * text came from a value that met them.
 */
static void
build_hash_reader(ReadTable *rt, Relation rel, const int16 *valcols, int n)
{
	MemoryContext old = MemoryContextSwitchTo(rt->cxt);
	TupleDesc	desc = CreateTemplateTupleDesc(n);

	rt->hash = true;
	rt->nfields = n;
	rt->field_in = palloc(sizeof(FmgrInfo) * Max(n, 1));
	rt->field_ioparams = palloc(sizeof(Oid) * Max(n, 1));
	rt->field_canonical = false;
	rt->hmget_argv = palloc(sizeof(char *) * (n + 3));
	rt->hmget_lens = palloc(sizeof(size_t) * (n + 3));
	rt->hmget_argv[0] = "HMGET";
	rt->hmget_lens[0] = 5;
	rt->hmget_argv[2] = WTC_VALUE_VERSION;
	rt->hmget_lens[2] = strlen(WTC_VALUE_VERSION);
	for (int c = 0; c < n; c++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), valcols[c] - 1);
		Oid			base = getBaseType(att->atttypid);
		Oid			fn;

		TupleDescInitEntry(desc, c + 1, NameStr(att->attname), base, -1, 0);
		getTypeInputInfo(base, &fn, &rt->field_ioparams[c]);
		fmgr_info_cxt(fn, &rt->field_in[c], rt->cxt);
		/* a date's text follows DateStyle, as its JSON does not */
		rt->field_canonical |= !(wtcache_key_type_is_stable(base) ||
								 base == JSONOID || base == JSONBOID);
		rt->hmget_argv[c + 3] = rt->lookup.field_names[c];
		rt->hmget_lens[c + 3] = strlen(rt->lookup.field_names[c]);
	}
	rt->field_desc = BlessTupleDesc(desc);
	MemoryContextSwitchTo(old);
}

/*
 * The reads of a table by key (keys.c): statements whose meaning the
 * caller cannot change, whatever it created or put on its search_path,
 * since what they return may be stored in Redis and served to everyone.
 */
static void
build_fetch_plan(ReadTable *rt, Relation rel, const WatchConfig *config)
{
	int16	   *valcols;
	int			nvalcols = wtcache_value_columns(rel, config, &valcols);

	/*
	 * The projection: a table read returns what Redis would hold; of a
	 * hash, also its fields, to fill it with.
	 */
	wtcache_key_lookup_init(&rt->lookup, rel, rt->nkeys, config->key_attnums, valcols, nvalcols,
							config->hash_format ? LOOKUP_JSON_AND_FIELDS : LOOKUP_JSON, rt->cxt);
	rt->fetch_plan = prepare_kept(rt, rt->lookup.sql_many, rt->lookup.arraytypes);
	rt->fetch_one_plan = prepare_kept(rt, rt->lookup.sql_one, rt->lookup.argtypes);
	if (config->hash_format)
		build_hash_reader(rt, rel, valcols, nvalcols);
}

/*
 * Does row_to_json() of this table depend on session settings (TimeZone,
 * IntervalStyle, extra_float_digits, bytea_output, lc_monetary...)?  Only
 * then must a table read switch to the canonical settings, which costs
 * more than the read itself.
 */
static bool
rendering_depends_on_settings(Oid relid)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	bool		depends = false;

	for (int i = 0; i < desc->natts && !depends; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		Oid			base;

		if (att->attisdropped)
			continue;
		base = getBaseType(att->atttypid);
		/* JSON renders dates and timestamps in ISO form whatever DateStyle says */
		depends = !(wtcache_key_type_is_stable(base) || base == DATEOID ||
					base == TIMESTAMPOID || base == JSONOID || base == JSONBOID);
	}
	relation_close(rel, AccessShareLock);
	return depends;
}

/* Called with SPI connected. */
static ReadTable *
read_table(Oid relid)
{
	ReadTable  *rt;
	bool		found;
	WatchConfig config;
	Relation	rel;
	MemoryContext old;

	if (read_tables == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(ReadTable);
		ctl.hcxt = CacheMemoryContext;
		read_tables = hash_create("wtcache read tables", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(invalidate_read_table, (Datum) 0);
		/* schema renames change the key names */
		CacheRegisterSyscacheCallback(NAMESPACEOID, invalidate_all_read_tables, (Datum) 0);
	}
	rt = hash_search(read_tables, &relid, HASH_ENTER, &found);
	if (found && rt->valid)
		return rt;
	if (found)
	{
		if (rt->fetch_plan)
			SPI_freeplan(rt->fetch_plan);
		if (rt->fetch_one_plan)
			SPI_freeplan(rt->fetch_one_plan);
		MemoryContextDelete(rt->cxt);
	}
	memset(((char *) rt) + sizeof(Oid), 0, sizeof(ReadTable) - sizeof(Oid));
	rt->cxt = AllocSetContextCreate(CacheMemoryContext, "wtcache read table",
									ALLOCSET_SMALL_SIZES);

	old = MemoryContextSwitchTo(rt->cxt);
	if (!wtcache_load_watch(relid, &config))
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(rt->cxt);
		hash_search(read_tables, &relid, HASH_REMOVE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not watched by wtcache", get_rel_name(relid)),
				 errhint("Call wtcache.watch() on it first.")));
	}

	rel = relation_open(relid, AccessShareLock);
	{
		int16	   *attnums = config.key_attnums;
		char	   *nspname = get_namespace_name(RelationGetNamespace(rel));
		char	   *relname = RelationGetRelationName(rel);
		StringInfoData tk;

		rt->ttl_ms = config.ttl_ms;
		rt->invalidate_mode = config.invalidate_mode;
		rt->nkeys = config.nkeys;
		rt->qname = quote_qualified_identifier(nspname, relname);
		initStringInfo(&tk);
		wtcache_append_table_key(&tk, get_database_name(MyDatabaseId), nspname, relname);
		rt->table_key = tk.data;
		if (config.key_template != NULL)
		{
			KeyTemplateError err;

			rt->tmpl = wtcache_watch_key_template(relid, &config, &err);
			if (rt->tmpl == NULL)
				elog(ERROR, "wtcache: the key template of \"%s\" does not fit its key: %s",
					 relname, err.message);
		}
		rt->typids = palloc(sizeof(Oid) * rt->nkeys);
		rt->ioparams = palloc(sizeof(Oid) * rt->nkeys);
		rt->typmods = palloc(sizeof(int32) * rt->nkeys);
		rt->binary = palloc(sizeof(bool) * rt->nkeys);
		rt->in = palloc(sizeof(FmgrInfo) * rt->nkeys);
		rt->out = palloc(sizeof(FmgrInfo) * rt->nkeys);
		rt->send = palloc(sizeof(FmgrInfo) * rt->nkeys);
		rt->all_stable = true;
		for (int i = 0; i < rt->nkeys; i++)
		{
			Oid			fn;
			bool		isvarlena;
			Oid			collation;

			get_atttypetypmodcoll(relid, attnums[i], &rt->typids[i], &rt->typmods[i], &collation);
			rt->binary[i] = !wtcache_key_type_is_stable(rt->typids[i]);
			rt->all_stable &= !rt->binary[i];
			getTypeInputInfo(rt->typids[i], &fn, &rt->ioparams[i]);
			fmgr_info_cxt(fn, &rt->in[i], rt->cxt);
			getTypeOutputInfo(rt->typids[i], &fn, &isvarlena);
			fmgr_info_cxt(fn, &rt->out[i], rt->cxt);
			if (rt->binary[i])
			{
				getTypeBinaryOutputInfo(rt->typids[i], &fn, &isvarlena);
				fmgr_info_cxt(fn, &rt->send[i], rt->cxt);
			}
		}
	}
	MemoryContextSwitchTo(old);
	build_fetch_plan(rt, rel, &config);
	relation_close(rel, NoLock);
	rt->render_canonical = rendering_depends_on_settings(relid);
	/* redis_key() comes here too, also without shared_preload_libraries */
	rt->stats = WtcacheSharedState ? wtcache_read_stats_entry(MyDatabaseId, relid) : NULL;
	rt->valid = true;
	return rt;
}

/* ---------------------------------------------------------------------
 * One read of many keys
 * ---------------------------------------------------------------------
 */
typedef enum ReadSource
{
	FROM_REDIS,
	FROM_TABLE,					/* read the table, do not fill */
	FROM_TABLE_FILL,			/* lease is ours: read the table, fill */
} ReadSource;

typedef struct ReadKey
{
	char	  **canon;			/* canonical text per key column */
	char	   *row_key;
	const char *companions[3];	/* KEYS of its lease and fill: the row key,
								 * and with a key template its tombstone
								 * and lease keys */
	int			ncompanions;	/* 1 or 3 */
	uint32		pending_index;
	ReadSource	source;
	bool		waited;			/* someone else's lease: waited for it */
	bool		lease_held;		/* ours: fill, or give back */
	char	   *tombstone;		/* with the lease: "" or the version */
	char	   *json;			/* result: the row as stored, with its
								 * version (keyspace.h) */
	int			json_len;
	bool		found;
	WtcReply   *hash_reply;		/* a hash read from Redis: "_v" and the
								 * fields (HMGET), made into json once read */
	HashValue  *fields;			/* a hash-format row read from the table:
								 * its fields, to fill */
} ReadKey;

/*
 * One call: the session's scratch memory (session.c), and SPI of its own.
 * Calls nest (a table read runs user code that may call get() again): a
 * nested call keeps its SPI connection apart from the outer call's, so it
 * never finishes what the outer call still uses.
 */
typedef struct ReadCall
{
	SessionCall mem;
	bool		outer_spi_open;
} ReadCall;

static bool hash_reply_ok(ReadTable *rt, const WtcReply *reply);
static bool hash_reply_missing(ReadTable *rt, const WtcReply *reply);

/* Where a row key is put together, before the call keeps a copy. */
static StringInfoData row_key_scratch;

void
wtcache_read_xact_event(XactEvent event)
{
	/* an error may have skipped read_call_end */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		spi_open = false;
}

static void
read_call_begin(ReadCall *call)
{
	call->outer_spi_open = spi_open;
	spi_open = false;
	if (row_key_scratch.data == NULL)
	{
		row_key_scratch.data = MemoryContextAlloc(TopMemoryContext, 1024);
		row_key_scratch.maxlen = 1024;
		resetStringInfo(&row_key_scratch);
	}
	wtcache_session_call_begin(&call->mem);
}

static void
read_call_end(ReadCall *call)
{
	end_spi();
	spi_open = call->outer_spi_open;
	wtcache_session_call_end(&call->mem);
}

/* The key text the trigger records (keys.c): output, or \x-hex of send. */
static void
key_from_text(ReadTable *rt, text **vals, ReadKey *k)
{
	const char *hashvals[INDEX_MAX_KEYS];
	int			hashlens[INDEX_MAX_KEYS];
	StringInfo	rk;
	int			nestlevel = -1;

	k->canon = palloc(sizeof(char *) * rt->nkeys);
	if (!rt->all_stable)
		nestlevel = wtcache_canonical_settings_push();
	for (int i = 0; i < rt->nkeys; i++)
	{
		Datum		d = InputFunctionCall(&rt->in[i], text_to_cstring(vals[i]),
										  rt->ioparams[i], rt->typmods[i]);

		k->canon[i] = OutputFunctionCall(&rt->out[i], d);
		if (rt->binary[i])
			hashvals[i] = wtcache_send_hex(&rt->send[i], d, &hashlens[i]);
		else
		{
			hashvals[i] = k->canon[i];
			hashlens[i] = strlen(k->canon[i]);
		}
	}
	if (nestlevel >= 0)
		wtcache_canonical_settings_pop(nestlevel);
	k->pending_index = wtcache_pending_key_index(MyDatabaseId, rt->relid, rt->nkeys,
												 hashvals, hashlens);
	rk = &row_key_scratch;
	resetStringInfo(rk);
	if (rt->tmpl != NULL)
		wtcache_append_templated_row_key(rk, wtcache_key_prefix, rt->tmpl, k->canon);
	else
		wtcache_append_row_key(rk, wtcache_key_prefix, rt->table_key, rt->nkeys, k->canon);
	k->row_key = pnstrdup(rk->data, rk->len);
	k->companions[0] = k->row_key;
	k->ncompanions = 1;
	if (rt->tmpl != NULL)
	{
		k->companions[1] = wtcache_templated_companion(wtcache_key_prefix, rk->data, rk->len, false);
		k->companions[2] = wtcache_templated_companion(wtcache_key_prefix, rk->data, rk->len, true);
		k->ncompanions = 3;
	}
}

/*
 * Read the rows of keys whose source is FROM_TABLE[_FILL] with one query.
 * In READ COMMITTED the query takes a new snapshot: after the leases.
 */
static void
read_from_table(ReadTable *rt, ReadKey *keys, int nkeys)
{
	Datum	   *args = palloc(sizeof(Datum) * rt->nkeys);
	char	  **texts = palloc(sizeof(char *) * nkeys);
	int		   *map = palloc(sizeof(int) * nkeys);
	int			n = 0;
	int			nestlevel = 0;
	int			pathlevel;
	bool		canonical;

	for (int i = 0; i < nkeys; i++)
		if (keys[i].source != FROM_REDIS)
			map[n++] = i;
	if (n == 0)
		return;
	need_spi();
	pg_atomic_fetch_add_u64(&rt->stats->table_reads, n);
	for (int c = 0; c < rt->nkeys; c++)
	{
		if (n == 1)
		{
			args[c] = wtcache_key_lookup_value(&rt->lookup, c, keys[map[0]].canon[c]);
			continue;
		}
		for (int j = 0; j < n; j++)
			texts[j] = keys[map[j]].canon[c];
		args[c] = wtcache_key_lookup_array(&rt->lookup, c, texts, n);
	}
	/* the statement's meaning must not depend on the caller's search_path */
	pathlevel = wtcache_pin_search_path();
	canonical = rt->render_canonical || !rt->all_stable || rt->field_canonical;
	if (canonical)
		nestlevel = wtcache_canonical_settings_push();
	if (SPI_execute_plan(n == 1 ? rt->fetch_one_plan : rt->fetch_plan, args, NULL,
						 false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: reading %s failed", rt->qname);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		ord = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		ReadKey    *k;
		text	   *json;

		if (ord < 1 || ord > n)
			continue;
		k = &keys[map[ord - 1]];
		json = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
		k->json = text_to_cstring(json);
		k->json_len = strlen(k->json);
		k->found = true;
		/* what a fill of a hash writes, rendered under the same settings */
		if (rt->hash && k->source == FROM_TABLE_FILL)
			k->fields = wtcache_key_lookup_fields(&rt->lookup, SPI_tuptable->vals[r],
												  SPI_tuptable->tupdesc, n == 1);
		/* found under another spelling of its key: serve it, never fill it */
		if (k->source == FROM_TABLE_FILL &&
			!wtcache_key_lookup_same_key(&rt->lookup, SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
										 k->canon))
			k->source = FROM_TABLE;
	}
	if (canonical)
		wtcache_canonical_settings_pop(nestlevel);
	wtcache_unpin_search_path(pathlevel);
	SPI_freetuptable(SPI_tuptable);
}

/*
 * A row value without its version (keyspace.h), as jsonb in memory context
 * dest.  The parser's working memory (several times the row) stays in a
 * context of its own, reset after each row, so 100 rows cost one row's
 * worth.
 */
static Datum
row_jsonb(const char *json, int len, MemoryContext dest)
{
	static MemoryContext ParseContext = NULL;
	char	   *text;
	Datum		parsed;
	MemoryContext old;
	Size		size;
	void	   *copy;

	if (ParseContext == NULL)
		ParseContext = AllocSetContextCreate(TopMemoryContext, "wtcache jsonb parse",
											 32 * 1024, 32 * 1024, 1024 * 1024);
	old = MemoryContextSwitchTo(ParseContext);
	text = wtcache_decode_value(json, len);
	parsed = DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
	size = VARSIZE(DatumGetPointer(parsed));
	copy = MemoryContextAlloc(dest, size);
	memcpy(copy, DatumGetPointer(parsed), size);
	MemoryContextSwitchTo(old);
	MemoryContextReset(ParseContext);
	return PointerGetDatum(copy);
}

/* Send one EVALSHA of the lease script per FROM_REDIS miss; read replies. */
static bool
take_leases(WtcRedis *r, ReadTable *rt, ReadKey *keys, int nkeys, int *misses, int nmisses,
			const SessionLease *lease)
{
	WtcReply	reply;

	for (int j = 0; j < nmisses; j++)
	{
		ReadKey    *k = &keys[misses[j]];

		if (rt->hash)
		{
			/* token, lease, then "_v" and the fields, as a plain read asks */
			const char **args = palloc(sizeof(char *) * (rt->nfields + 3));

			args[0] = lease->token;
			args[1] = lease->ms;
			for (int c = 0; c <= rt->nfields; c++)
				args[c + 2] = rt->hmget_argv[c + 2];
			if (!wtcache_session_eval_append(r, &wtcache_row_lease_hash_script, k->ncompanions,
											 k->companions, rt->nfields + 3, args))
				return false;
		}
		else
		{
			const char *args[2] = {lease->token, lease->ms};

			if (!wtcache_session_eval_append(r, &wtcache_row_lease_script, k->ncompanions,
											 k->companions, 2, args))
				return false;
		}
	}
	wtcache_session_set_busy(true);
	if (!wtc_redis_flush(r))
		return false;
	for (int j = 0; j < nmisses; j++)
	{
		ReadKey    *k = &keys[misses[j]];

		if (!wtc_redis_read(r, &reply))
			return false;
		if (reply.type == WTC_REPLY_ERROR && wtc_redis_error_is_oom(reply.str))
		{
			/*
			 * Redis is out of memory (maxmemory, noeviction): it refused
			 * the lease before the script wrote anything.  A miss without
			 * a fill; the connection and the scripts are fine, and hits
			 * still work.
			 */
			k->source = FROM_TABLE;
			continue;
		}
		if (reply.type != WTC_REPLY_ARRAY || reply.nelem != 2 ||
			reply.elem[0].type != WTC_REPLY_INTEGER)
		{
			/* NOSCRIPT after a Redis restart, or a foreign value: read the
			 * table; the next call reconnects and loads the scripts */
			k->source = FROM_TABLE;
			wtcache_session_reload_scripts();
			continue;
		}
		switch (reply.elem[0].integer)
		{
			case 1:
				if (rt->hash)
				{
					if (!hash_reply_ok(rt, &reply.elem[1]))
					{
						k->source = FROM_TABLE;
						break;
					}
					k->hash_reply = palloc(sizeof(WtcReply));
					*k->hash_reply = reply.elem[1];
				}
				else
				{
					k->json = reply.elem[1].str;
					k->json_len = reply.elem[1].len;
				}
				k->found = true;
				break;
			case 2:
				k->source = FROM_TABLE_FILL;
				k->tombstone = reply.elem[1].type == WTC_REPLY_STRING ? reply.elem[1].str : "";
				break;
			case 4:
				/* a value of the other format: the table, no fill */
				k->source = FROM_TABLE;
				break;
			default:
				k->waited = true;
				break;
		}
	}
	wtcache_session_set_busy(false);
	return true;
}

/*
 * Someone else holds the lease of these keys: poll for their fill, up to
 * wtcache.fill_wait; what does not show up is read from the table.
 */
static bool
wait_for_fills(WtcRedis *r, ReadTable *rt, ReadKey *keys, int nkeys,
			   const SessionLease *lease)
{
	SessionWait wait;
	int		   *waiting = palloc(sizeof(int) * nkeys);
	int			nwaiting = 0;

	wtcache_session_wait_start(&wait);
	for (int i = 0; i < nkeys; i++)
		if (keys[i].waited && !keys[i].found && keys[i].source == FROM_REDIS)
		{
			waiting[nwaiting++] = i;
			pg_atomic_fetch_add_u64(&rt->stats->stampede_waits, 1);
		}
	while (nwaiting > 0)
	{
		int			still = 0;

		if (!wtcache_session_wait(&wait))
		{
			for (int j = 0; j < nwaiting; j++)
				keys[waiting[j]].source = FROM_TABLE;
			break;
		}
		for (int j = 0; j < nwaiting; j++)
			keys[waiting[j]].waited = false;
		if (!take_leases(r, rt, keys, nkeys, waiting, nwaiting, lease))
			return false;
		for (int j = 0; j < nwaiting; j++)
		{
			ReadKey    *k = &keys[waiting[j]];

			if (!k->found && k->source == FROM_REDIS)
				waiting[still++] = waiting[j];
		}
		nwaiting = still;
	}
	for (int i = 0; i < nkeys; i++)
		keys[i].waited = false;
	return true;
}

/*
 * F of the top of the file: the last id wtcache.queue_id_seq handed out,
 * read from the sequence's page (no SQL, so no rights on the sequence are
 * needed), made durable.  False: no fill now.
 */
static bool
fill_version(int64 *version)
{
	Oid			nsp = get_namespace_oid(WTCACHE_SCHEMA, true);
	Oid			seqid = OidIsValid(nsp) ? get_relname_relid(WTCACHE_QUEUE_SEQ, nsp) : InvalidOid;
	Relation	seqrel;
	Buffer		buf;
	Page		page;
	XLogRecPtr	lsn = InvalidXLogRecPtr;
	int64		last = 0;
	bool		called = false;
	bool		ok = false;

	/* a standby's ids are not the primary's */
	if (!OidIsValid(seqid) || RecoveryInProgress())
		return false;
	seqrel = try_relation_open(seqid, AccessShareLock);
	if (seqrel == NULL)
		return false;
	if (seqrel->rd_rel->relkind == RELKIND_SEQUENCE &&
		seqrel->rd_rel->relpersistence == RELPERSISTENCE_PERMANENT)
	{
		/* nextval() changes the page under an exclusive lock */
		buf = ReadBuffer(seqrel, 0);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (PageGetMaxOffsetNumber(page) >= FirstOffsetNumber)
		{
			HeapTupleHeader tup = (HeapTupleHeader) PageGetItem(page, PageGetItemId(page, FirstOffsetNumber));
			Form_pg_sequence_data seq = (Form_pg_sequence_data) ((char *) tup + tup->t_hoff);

			/* the page's LSN is that of the record covering last_value */
			lsn = PageGetLSN(page);
			last = seq->last_value;
			called = seq->is_called;
			ok = true;
		}
		UnlockReleaseBuffer(buf);
	}
	relation_close(seqrel, AccessShareLock);
	if (!ok)
		return false;

	/*
	 * Crash recovery or a failover must not hand out ids <= F again.  The
	 * record is usually flushed already (by the commit of the writer that
	 * drew the id); with synchronous standbys, rather than wait for them in
	 * a read, fill only once the worker has seen the record reach them.
	 */
	if (lsn > GetFlushRecPtr(NULL))
		XLogFlush(lsn);
	if (SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0' &&
		lsn > wtcache_durable_lsn(MyDatabaseId))
		return false;
	*version = called ? last : last - 1;
	return true;
}

/*
 * Queue the fill of one leased key of a hash-format table (fill_hash_script),
 * or the give-back of its lease: the same rules as fill() below.
 */
static bool
fill_hash(WtcRedis *r, ReadTable *rt, ReadKey *k, const SessionLease *lease, int64 version)
{
	const char **args;
	int			nargs = 4;
	char		ttl[24] = "0";
	char		vbuf[24] = "";

	args = palloc(sizeof(char *) * (4 + (k->fields ? k->fields->nargs : 0)));
	/* a row too large for Redis (wtcache.max_value_size) is only given back the lease */
	if (k->found && k->source == FROM_TABLE_FILL && k->fields != NULL &&
		(int64) k->fields->size <= wtcache_max_value_bytes)
	{
		int64		tombstone = k->tombstone[0] ? strtoi64(k->tombstone, NULL, 10) : 0;

		/* the tombstone too: never below a version Redis has shown */
		snprintf(vbuf, sizeof(vbuf), INT64_FORMAT, Max(version, tombstone));
		if (rt->ttl_ms > 0)
			snprintf(ttl, sizeof(ttl), INT64_FORMAT, wtcache_session_fill_ttl(rt->ttl_ms));
		for (int j = 0; j < k->fields->nargs; j++)
			args[nargs++] = k->fields->args[j];
	}
	args[0] = lease->token;
	args[1] = k->tombstone;
	args[2] = ttl;
	args[3] = vbuf;
	return wtcache_session_eval_append(r, &wtcache_row_fill_hash_script, k->ncompanions,
									   k->companions, nargs, args);
}

static void
fill(WtcRedis *r, ReadTable *rt, ReadKey *keys, int nkeys, const SessionLease *lease,
	 int64 version)
{
	int			nfills = 0;
	WtcReply	reply;

	wtcache_session_debug_fill_delay();

	for (int i = 0; i < nkeys; i++)
	{
		ReadKey    *k = &keys[i];
		char	   *payload = "";
		char		ttl[24] = "0";
		const char *args[4];

		if (!k->lease_held)
			continue;
		if (rt->hash)
		{
			if (!fill_hash(r, rt, k, lease, version))
			{
				wtcache_session_failed();
				return;
			}
			nfills++;
			continue;
		}
		/* a row too large for Redis (wtcache.max_value_size) is only given back the lease */
		if (k->found && k->source == FROM_TABLE_FILL && k->json_len <= wtcache_max_value_bytes)
		{
			int64		tombstone = k->tombstone[0] ? strtoi64(k->tombstone, NULL, 10) : 0;

			/* the tombstone too: never below a version Redis has shown */
			payload = wtcache_encode_value(Max(version, tombstone), k->json, k->json_len, NULL);
			if (rt->ttl_ms > 0)
				snprintf(ttl, sizeof(ttl), INT64_FORMAT, wtcache_session_fill_ttl(rt->ttl_ms));
		}
		args[0] = lease->token;
		args[1] = k->tombstone;
		args[2] = payload;
		args[3] = ttl;
		if (!wtcache_session_eval_append(r, &wtcache_row_fill_script, k->ncompanions,
										 k->companions, 4, args))
		{
			wtcache_session_failed();
			return;
		}
		nfills++;
	}
	if (nfills == 0)
		return;
	wtcache_session_set_busy(true);
	if (!wtc_redis_flush(r))
	{
		wtcache_session_failed();
		return;
	}
	for (int j = 0; j < nfills; j++)
	{
		if (!wtc_redis_read(r, &reply))
		{
			wtcache_session_failed();
			return;
		}
		if (reply.type == WTC_REPLY_INTEGER && reply.integer == 1)
			pg_atomic_fetch_add_u64(&rt->stats->fills, 1);
		else if (reply.type == WTC_REPLY_INTEGER && reply.integer == 0)
			pg_atomic_fetch_add_u64(&rt->stats->fills_rejected, 1);
	}
	wtcache_session_set_busy(false);
}

/*
 * Why this read may not use the shared cache at all, or NULL.  Checked per
 * call: the role, row security and the transaction can change any time.
 */
static const char *
cache_bypass_reason(ReadTable *rt)
{
	if (check_enable_rls(rt->relid, InvalidOid, false) != RLS_NONE)
		return "row-level security";
	if (IsolationUsesXactSnapshot())
		return "isolation";
	if (wtcache_xact_wrote(rt->relid))
		return "own writes";
	if (!wtcache_pending_ready(MyDatabaseId))
		return "not ready";
	if (!wtcache_worker_uses_prefix(MyDatabaseId, wtcache_key_prefix))
		return "key prefix";
	return NULL;
}

static void
check_read_privilege(Oid relid)
{
	Oid			user = GetUserId();

	if (pg_class_aclcheck(relid, user, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(relid, user, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid)),
				 errdetail("wtcache returns whole rows: it needs SELECT on the table or on all of its columns.")));
}

/*
 * The generation markers that vouch for these keys: the database's, or in
 * a Cluster the marker of each master that serves one of them (push.c).
 */
static char **
reader_markers(WtcRedis *r, ReadKey *keys, int *which, int n, int *nmarkers)
{
	static char *dbname = NULL;
	char	  **out;

	/* its name cannot change while we are connected to it */
	if (dbname == NULL)
		dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	if (wtc_redis_mode(r) != WTC_REDIS_CLUSTER)
	{
		/* built once per key prefix: every read needs it */
		static char *marker_key = NULL;
		static char *marker_prefix = NULL;

		if (marker_prefix == NULL || strcmp(marker_prefix, wtcache_key_prefix) != 0)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
			StringInfoData key;

			if (marker_key != NULL)
			{
				pfree(marker_key);
				pfree(marker_prefix);
			}
			initStringInfo(&key);
			wtcache_append_marker_key(&key, dbname);
			marker_key = key.data;
			marker_prefix = pstrdup(wtcache_key_prefix);
			MemoryContextSwitchTo(old);
		}
		out = palloc(sizeof(char *));
		out[0] = marker_key;
		*nmarkers = 1;
		return out;
	}
	{
		int			nmasters = wtc_redis_node_count(r);
		bool	   *used = palloc0(sizeof(bool) * Max(nmasters, 1));

		out = palloc(sizeof(char *) * Max(nmasters, 1));
		*nmarkers = 0;
		for (int j = 0; j < n; j++)
		{
			const char *k = keys[which[j]].row_key;
			int			m = wtc_redis_node_of_slot(r, wtc_redis_key_slot(k, strlen(k)));
			char	   *marker;

			if (m < 0 || used[m])
				continue;
			used[m] = true;
			marker = wtcache_master_marker_key(r, dbname, m);
			if (marker != NULL)
				out[(*nmarkers)++] = marker;
		}
		return out;
	}
}

/* HMGET's reply of a hash wtcache wrote: "_v" and a value or nil per field. */
static bool
hash_reply_ok(ReadTable *rt, const WtcReply *reply)
{
	if (reply->type != WTC_REPLY_ARRAY || reply->nelem != rt->nfields + 1 ||
		reply->elem[0].type != WTC_REPLY_STRING)
		return false;
	for (int c = 1; c < reply->nelem; c++)
		if (reply->elem[c].type != WTC_REPLY_STRING && reply->elem[c].type != WTC_REPLY_NIL)
			return false;
	return true;
}

/* HMGET's reply of a missing key: all nil (also a hash without "_v"). */
static bool
hash_reply_missing(ReadTable *rt, const WtcReply *reply)
{
	if (reply->type != WTC_REPLY_ARRAY || reply->nelem != rt->nfields + 1)
		return false;
	for (int c = 0; c < reply->nelem; c++)
		if (reply->elem[c].type != WTC_REPLY_NIL)
			return false;
	return true;
}

/*
 * The hashes read from Redis, as the row JSON a JSON-format table holds
 * (ReadTable): each field through its type's input function, the row
 * through row_to_json, under the canonical settings the worker rendered
 * the fields with (a timestamptz in UTC, as in a JSON value).
 */
static void
decode_hash_hits(ReadTable *rt, ReadKey *keys, int nkeys)
{
	Datum	   *values = palloc(sizeof(Datum) * Max(rt->nfields, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(rt->nfields, 1));
	int			nestlevel = -1;

	for (int i = 0; i < nkeys; i++)
	{
		ReadKey    *k = &keys[i];
		HeapTuple	tuple;
		text	   *json;

		if (!k->found || k->hash_reply == NULL)
			continue;
		if (nestlevel < 0 && (rt->field_canonical || rt->render_canonical))
			nestlevel = wtcache_canonical_settings_push();
		for (int c = 0; c < rt->nfields; c++)
		{
			const WtcReply *f = &k->hash_reply->elem[c + 1];

			nulls[c] = (f->type != WTC_REPLY_STRING);
			values[c] = nulls[c] ? (Datum) 0 :
				InputFunctionCall(&rt->field_in[c], pnstrdup(f->str, f->len),
								  rt->field_ioparams[c], -1);
		}
		tuple = heap_form_tuple(rt->field_desc, values, nulls);
		json = DatumGetTextPP(DirectFunctionCall1(row_to_json, HeapTupleGetDatum(tuple)));
		k->json = text_to_cstring(json);
		k->json_len = strlen(k->json);
	}
	if (nestlevel >= 0)
		wtcache_canonical_settings_pop(nestlevel);
}

/*
 * Fill keys[i].json/found for every key.  vals: nkeys x rt->nkeys texts.
 */
static void
read_keys(ReadTable *rt, ReadKey *keys, int nkeys)
{
	SessionLease lease;
	int		   *misses = palloc(sizeof(int) * Max(nkeys, 1));
	int			nmisses = 0;
	bool		use_redis = (cache_bypass_reason(rt) == NULL);
	bool		any_fill = false;
	int64		version;
	WtcReply	reply;
	uint32		table_index = wtcache_pending_table_index(MyDatabaseId, rt->relid);
	WtcRedis   *r = NULL;

	for (int i = 0; i < nkeys; i++)
	{
		keys[i].source = FROM_TABLE;
		if (use_redis && wtcache_pending_clear(keys[i].pending_index, table_index))
			keys[i].source = FROM_REDIS;
		else
			pg_atomic_fetch_add_u64(&rt->stats->bypasses, 1);
	}

	for (int i = 0; i < nkeys; i++)
		if (keys[i].source == FROM_REDIS)
			misses[nmisses++] = i;
	if (nmisses > 0 && (r = wtcache_session_redis()) == NULL)
	{
		wtcache_session_lost();
		for (int j = 0; j < nmisses; j++)
			keys[misses[j]].source = FROM_TABLE;
		pg_atomic_fetch_add_u64(&rt->stats->fallbacks, nmisses);
		nmisses = 0;
	}

	if (nmisses > 0)
	{
		/*
		 * Plain GETs first: the common case, one round trip.  With them the
		 * generation marker: lower than what the worker knows Redis
		 * acknowledged, Redis lost changes (a failover to a replica that
		 * missed them, a restart from an old snapshot) and may hold rows
		 * older than the table's until the worker has resynced.
		 */
		bool		ok = true;
		bool		behind = false;
		int			nget = nmisses;
		int64		acked = wtcache_acked_version(MyDatabaseId);
		int			nmarkers;
		char	  **markers = reader_markers(r, keys, misses, nget, &nmarkers);

		for (int m = 0; m < nmarkers && ok; m++)
		{
			const char *margv[2] = {"GET", markers[m]};
			size_t		mlens[2] = {3, strlen(markers[m])};

			ok = wtc_redis_append(r, 2, margv, mlens);
		}
		for (int j = 0; j < nget && ok; j++)
		{
			const char *argv[2] = {"GET", keys[misses[j]].row_key};
			size_t		lens[2] = {3, strlen(keys[misses[j]].row_key)};

			if (rt->hash)
			{
				/* HMGET of "_v" and the fields, in the order they are decoded */
				rt->hmget_argv[1] = keys[misses[j]].row_key;
				rt->hmget_lens[1] = lens[1];
				ok = wtc_redis_append(r, rt->nfields + 3, rt->hmget_argv, rt->hmget_lens);
			}
			else
				ok = wtc_redis_append(r, 2, argv, lens);
		}
		wtcache_session_set_busy(true);
		ok = ok && wtc_redis_flush(r);
		for (int m = 0; m < nmarkers && ok; m++)
		{
			ok = wtc_redis_read(r, &reply);
			if (ok)
			{
				char	   *end = NULL;
				long long	seen = reply.type == WTC_REPLY_STRING ? strtoll(reply.str, &end, 10) : -1;

				if (seen < acked || (end != NULL && *end != '\0'))
					behind = true;
			}
		}
		nmisses = 0;
		for (int j = 0; j < nget && ok; j++)
		{
			ReadKey    *k = &keys[misses[j]];

			ok = wtc_redis_read(r, &reply);
			if (ok && behind)
			{
				k->source = FROM_TABLE;
				pg_atomic_fetch_add_u64(&rt->stats->bypasses, 1);
			}
			else if (ok && !rt->hash && reply.type == WTC_REPLY_STRING &&
					 wtcache_is_row_value(reply.str, reply.len))
			{
				k->json = reply.str;
				k->json_len = reply.len;
				k->found = true;
				pg_atomic_fetch_add_u64(&rt->stats->hits, 1);
			}
			else if (ok && rt->hash && hash_reply_ok(rt, &reply))
			{
				k->hash_reply = palloc(sizeof(WtcReply));
				*k->hash_reply = reply;
				k->found = true;
				pg_atomic_fetch_add_u64(&rt->stats->hits, 1);
			}
			else if (ok && (reply.type == WTC_REPLY_ERROR ||
							(!rt->hash && reply.type == WTC_REPLY_STRING) ||
							(rt->hash && !hash_reply_missing(rt, &reply))))
			{
				/*
				 * A value of the other format (WRONGTYPE), which a format
				 * change is about to replace, or not wtcache's (a string
				 * without "_v" at its head: under a key template the key
				 * space is the application's too): read the table, and
				 * fill nothing over it.
				 */
				k->source = FROM_TABLE;
				pg_atomic_fetch_add_u64(&rt->stats->bypasses, 1);
			}
			else if (ok)
				misses[nmisses++] = misses[j];
		}
		if (ok)
			wtcache_session_set_busy(false);
		if (ok && nmisses > 0)
		{
			wtcache_session_new_lease(&lease);
			pg_atomic_fetch_add_u64(&rt->stats->misses, nmisses);
			ok = take_leases(r, rt, keys, nkeys, misses, nmisses, &lease) &&
				wait_for_fills(r, rt, keys, nkeys, &lease);
		}
		if (!ok)
		{
			wtcache_session_lost();
			for (int i = 0; i < nkeys; i++)
				if (keys[i].source == FROM_TABLE_FILL || (keys[i].source == FROM_REDIS && !keys[i].found))
				{
					keys[i].source = FROM_TABLE;
					pg_atomic_fetch_add_u64(&rt->stats->fallbacks, 1);
				}
		}
	}

	if (rt->hash)
		decode_hash_hits(rt, keys, nkeys);

	for (int i = 0; i < nkeys; i++)
		if (keys[i].source == FROM_TABLE_FILL)
		{
			keys[i].lease_held = true;
			any_fill = true;
		}

	read_from_table(rt, keys, nkeys);
	/* the table read ran user code, which may have dropped the connection */
	r = wtcache_session_connected();
	if (!any_fill || r == NULL)
		return;

	/*
	 * After the snapshot, the version; after the version, the filter (see
	 * the top of the file).  A key that became pending, or every key when
	 * the version cannot be had, is not filled: the lease is given back, so
	 * waiters stop waiting.
	 */
	if (!fill_version(&version))
		version = -1;
	pg_memory_barrier();
	for (int i = 0; i < nkeys; i++)
		if (keys[i].source == FROM_TABLE_FILL &&
			(version < 0 || !wtcache_pending_clear(keys[i].pending_index, table_index)))
			keys[i].source = FROM_TABLE;
	fill(r, rt, keys, nkeys, &lease, version);
}

/* The table's settings, from this backend's cache or loaded. */
static ReadTable *
find_read_table(Oid relid)
{
	ReadTable  *rt;

	if (read_tables != NULL)
	{
		rt = hash_search(read_tables, &relid, HASH_FIND, NULL);
		if (rt != NULL && rt->valid)
			return rt;
	}
	need_spi();
	return read_table(relid);
}

/* Check the caller and find the table's read settings. */
static ReadTable *
begin_read(Oid relid)
{
	wtcache_require_preload();
	check_read_privilege(relid);
	return find_read_table(relid);
}

static void
check_key_count(ReadTable *rt, int given)
{
	wtcache_check_key_count(rt->relid, rt->nkeys, given);
}

static text **
array_texts(ArrayType *arr, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	text	  **out;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(text *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("key value %d is null", i + 1),
					 errhint("Key columns of a watched table are never null.")));
		out[i] = DatumGetTextPP(elems[i]);
	}
	return out;
}

PG_FUNCTION_INFO_V1(wtcache_get);
Datum
wtcache_get(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	ReadCall	call;
	int			n;
	text	  **vals;
	ReadTable  *rt;
	ReadKey		key;
	Datum		result = (Datum) 0;

	vals = array_texts(PG_GETARG_ARRAYTYPE_P(1), &n);
	read_call_begin(&call);
	rt = begin_read(relid);
	check_key_count(rt, n);
	memset(&key, 0, sizeof(key));
	key_from_text(rt, vals, &key);
	read_keys(rt, &key, 1);
	if (key.found)
		result = row_jsonb(key.json, key.json_len, call.mem.caller);
	read_call_end(&call);
	if (!key.found)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * get_many(rel, keys text[]): a one-dimensional array for a one-column key,
 * else one row of key values per key.  Returns (key, row) in input order;
 * row is NULL where no row has that key.
 */
PG_FUNCTION_INFO_V1(wtcache_get_many);
Datum
wtcache_get_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid = PG_GETARG_OID(0);
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	int			nvals;
	text	  **vals;
	ReadTable  *rt;
	ReadKey    *keys;
	int			nkeys;
	int			width;
	Datum	   *results;
	bool	   *found;
	ReadCall	call;

	InitMaterializedSRF(fcinfo, 0);
	vals = array_texts(arr, &nvals);
	read_call_begin(&call);
	rt = begin_read(relid);
	if (nvals == 0)
	{
		read_call_end(&call);
		return (Datum) 0;
	}
	if (ARR_NDIM(arr) == 2)
		width = ARR_DIMS(arr)[1];
	else if (rt->nkeys == 1)
		width = 1;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table \"%s\" has a key of %d columns", get_rel_name(relid), rt->nkeys),
				 errhint("Give the keys as a two-dimensional array, one row of %d values per key: ARRAY[['a', '1'], ['b', '2']].",
						 rt->nkeys)));
	check_key_count(rt, width);
	nkeys = nvals / width;
	keys = palloc0(sizeof(ReadKey) * nkeys);
	for (int i = 0; i < nkeys; i++)
		key_from_text(rt, vals + i * width, &keys[i]);
	read_keys(rt, keys, nkeys);

	/* built in the caller's memory: the call's scratch and SPI's go */
	results = MemoryContextAlloc(call.mem.caller, sizeof(Datum) * nkeys);
	found = MemoryContextAlloc(call.mem.caller, sizeof(bool) * nkeys);
	for (int i = 0; i < nkeys; i++)
	{
		found[i] = keys[i].found;
		if (found[i])
			results[i] = row_jsonb(keys[i].json, keys[i].json_len, call.mem.caller);
	}
	read_call_end(&call);

	for (int i = 0; i < nkeys; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, !found[i]};
		Datum	   *kd = palloc(sizeof(Datum) * width);

		for (int c = 0; c < width; c++)
			kd[c] = PointerGetDatum(vals[i * width + c]);
		values[0] = PointerGetDatum(construct_array(kd, width, TEXTOID, -1, false, TYPALIGN_INT));
		values[1] = found[i] ? results[i] : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * wtcache._row_type_table(anyelement): the table whose row type the
 * argument has, for get_row(NULL::tbl, ...).
 */
PG_FUNCTION_INFO_V1(wtcache_row_type_table);
Datum
wtcache_row_type_table(PG_FUNCTION_ARGS)
{
	Oid			typid = get_fn_expr_argtype(fcinfo->flinfo, 0);
	Oid			relid = OidIsValid(typid) ? typeidTypeRelid(typid) : InvalidOid;

	if (!OidIsValid(relid) || (get_rel_relkind(relid) != RELKIND_RELATION &&
							   get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("wtcache.get_row() needs a value of a table's row type, not %s",
						OidIsValid(typid) ? format_type_be(typid) : "an unknown type"),
				 errhint("Pass NULL cast to the table: wtcache.get_row(NULL::my_table, '42').")));
	PG_RETURN_OID(relid);
}

/*
 * The Redis key of the row with these key values (wtcache.redis_key()):
 * each value goes through the column's input and canonical output, exactly
 * as for a read, so '042' and '42' name one row.
 */
static text *
row_key_text(Oid relid, ArrayType *keyarr)
{
	ReadCall	call;
	ReadTable  *rt;
	text	  **vals;
	int			n;
	ReadKey		key;
	text	   *result;

	read_call_begin(&call);
	rt = find_read_table(relid);
	vals = array_texts(keyarr, &n);
	check_key_count(rt, n);
	memset(&key, 0, sizeof(key));
	key_from_text(rt, vals, &key);
	result = (text *) MemoryContextAlloc(call.mem.caller, VARHDRSZ + strlen(key.row_key));
	SET_VARSIZE(result, VARHDRSZ + strlen(key.row_key));
	memcpy(VARDATA(result), key.row_key, strlen(key.row_key));
	read_call_end(&call);
	return result;
}

/*
 * wtcache.redis_key(rel, VARIADIC key text[]): the key a read of that row
 * would look up, made by the same path.
 */
PG_FUNCTION_INFO_V1(wtcache_redis_key);
Datum
wtcache_redis_key(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(row_key_text(PG_GETARG_OID(0), PG_GETARG_ARRAYTYPE_P(1)));
}
