/*-------------------------------------------------------------------------
 * verify.c
 *		wtcache.verify(rel, sample): does Redis hold what the table holds?
 *
 * Three passes:
 *	1. every row of the table (or a random sample of them), read under the
 *	   canonical settings the worker renders with, against its Redis key
 *	   (pipelined GETs, a thousand at a time);
 *	2. without a sample, every row key Redis has for the table (SCAN)
 *	   against the table, to find keys of rows that no longer exist;
 *	3. what looked different is looked at again once every change
 *	   committed so far has been delivered (the wait() fence), so that
 *	   changes in flight while verify() runs are not reported.
 * Write-through tables without a TTL must have every row; tables in
 * invalidate mode or with a TTL may lack keys, but a key they have must
 * hold the row.  Values are compared as text, without their "_v".
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "fence.h"
#include "capture.h"
#include "keys.h"
#include "partition.h"
#include "redis.h"
#include "rights.h"
#include "settings.h"
#include "shmem.h"
#include "watch.h"
#include "keyspace.h"
#include "session.h"
#include "verify.h"

#include "access/relation.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#define VERIFY_BATCH 1000
#define VERIFY_SETTLE_MS 10000

typedef struct Candidate
{
	char	  **values;			/* canonical key text, one per key column */
	char	   *row_key;
} Candidate;

typedef struct CandidateList
{
	Candidate  *items;
	int			n;
	int			max;
} CandidateList;

/* What outlives a batch: the candidates.  SPI calls switch contexts. */
static MemoryContext verify_cxt = NULL;

static void
add_candidate(CandidateList *l, VerifyTable *vt, char **values, const char *row_key)
{
	MemoryContext old = MemoryContextSwitchTo(verify_cxt);

	if (l->n == l->max)
	{
		l->max = l->max ? l->max * 2 : 64;
		l->items = l->items ? repalloc(l->items, sizeof(Candidate) * l->max)
			: palloc(sizeof(Candidate) * l->max);
	}
	l->items[l->n].values = palloc(sizeof(char *) * vt->nkeys);
	for (int c = 0; c < vt->nkeys; c++)
		l->items[l->n].values[c] = pstrdup(values[c]);
	l->items[l->n].row_key = pstrdup(row_key);
	l->n++;
	MemoryContextSwitchTo(old);
}

/*
 * Does a hash (HGETALL's reply) hold exactly these fields, and a "_v"?
 * Field order does not matter: a hash has none to speak of.
 */
static bool
same_fields(const HashValue *want, const WtcReply *pairs)
{
	bool		has_version = false;
	int			nfields = 0;

	for (int i = 0; i + 1 < pairs->nelem; i += 2)
	{
		const WtcReply *f = &pairs->elem[i];
		const WtcReply *v = &pairs->elem[i + 1];
		bool		match = false;

		if (f->type != WTC_REPLY_STRING || v->type != WTC_REPLY_STRING)
			return false;
		if (f->len == strlen(WTC_VALUE_VERSION) && memcmp(f->str, WTC_VALUE_VERSION, f->len) == 0)
		{
			has_version = true;
			continue;
		}
		nfields++;
		for (int j = 0; j < want->nargs && !match; j += 2)
			match = want->lens[j] == f->len && memcmp(want->args[j], f->str, f->len) == 0 &&
				want->lens[j + 1] == v->len && memcmp(want->args[j + 1], v->str, v->len) == 0;
		if (!match)
			return false;
	}
	return has_version && nfields * 2 == want->nargs;
}

/*
 * What is wrong with this key, or NULL: "missing", "differs" or "extra".
 * row: the table's row JSON or NULL; fields: of a hash-format table, the
 * row's fields; value: Redis's reply to GET (of a hash: HGETALL).  A value
 * of the other format (Redis answers WRONGTYPE) differs from the row.
 */
const char *
wtcache_verify_classify(VerifyTable *vt, const char *row, const HashValue *fields,
						const WtcReply *value)
{
	bool		in_redis = vt->hash ?
		(value->type == WTC_REPLY_ARRAY && value->nelem > 0) : value->type == WTC_REPLY_STRING;

	if (value->type == WTC_REPLY_ERROR)
		return row != NULL ? "differs" : "extra";
	if (row != NULL && !in_redis)
		return vt->keys_optional ? NULL : "missing";
	if (row == NULL && in_redis)
		return "extra";
	if (row != NULL && vt->hash && !same_fields(fields, value))
		return "differs";
	if (row != NULL && !vt->hash && strcmp(row, wtcache_decode_value(value->str, value->len)) != 0)
		return "differs";
	return NULL;
}

/* A hash as verify() shows it: its fields as a JSON object of strings. */
static char *
hash_text(const WtcReply *pairs)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i + 1 < pairs->nelem; i += 2)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, pnstrdup(pairs->elem[i].str, pairs->elem[i].len));
		appendStringInfoChar(&buf, ':');
		escape_json(&buf, pnstrdup(pairs->elem[i + 1].str, pairs->elem[i + 1].len));
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * The fields of a hash-format row from the columns at position first of a
 * tuple (keys.c's output functions; the caller holds the canonical
 * settings).
 */
static HashValue *
fields_at(VerifyTable *vt, HeapTuple tup, TupleDesc desc, int first)
{
	char	  **values = palloc(sizeof(char *) * Max(vt->lookup.nfields, 1));

	for (int c = 0; c < vt->lookup.nfields; c++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, first + c, &isnull);

		values[c] = isnull ? NULL : OutputFunctionCall(&vt->lookup.field_out[c], d);
	}
	return wtcache_encode_hash(vt->lookup.nfields, vt->lookup.field_names, values);
}

/*
 * GET (of a hash: HGETALL) every key; replies[i] for keys[i].  Errors out
 * if Redis fails.
 */
static void
get_values(VerifyTable *vt, char **keys, int n, WtcReply *replies)
{
	WtcRedis   *r = wtcache_session_redis();
	bool		ok = (r != NULL);

	for (int i = 0; i < n && ok; i++)
	{
		const char *argv[2] = {vt->hash ? "HGETALL" : "GET", keys[i]};
		size_t		lens[2] = {strlen(argv[0]), strlen(keys[i])};

		ok = wtc_redis_append(r, 2, argv, lens);
	}
	wtcache_session_set_busy(true);
	ok = ok && wtc_redis_flush(r);
	for (int i = 0; i < n && ok; i++)
		ok = wtc_redis_read(r, &replies[i]);
	if (!ok)
	{
		wtcache_session_lost();
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("wtcache.verify() could not read from Redis"),
				 errhint("Check that Redis is running and that wtcache.redis_url points to it.")));
	}
	wtcache_session_set_busy(false);
}

/* The Redis key of the row with these canonical key values. */
char *
wtcache_verify_row_key(VerifyTable *vt, char **values)
{
	StringInfoData k;

	initStringInfo(&k);
	if (vt->tmpl != NULL)
		wtcache_append_templated_row_key(&k, wtcache_key_prefix, vt->tmpl, values);
	else
		wtcache_append_row_key(&k, wtcache_key_prefix, vt->table_key, vt->nkeys, values);
	return k.data;
}

/*
 * Do a key's values read as the key columns' types?  A templated key
 * space is shared with the application's keys (user:x next to user:{id}
 * with an integer id), which parse as the template but name no row: not
 * the table's keys, and not a difference.  In a subtransaction: the
 * type's input function reports a bad value with an ERROR.
 */
typedef struct ParseArgs
{
	VerifyTable *vt;
	char	  **values;
} ParseArgs;

static void
parse_values(void *arg)
{
	ParseArgs  *a = (ParseArgs *) arg;

	for (int c = 0; c < a->vt->nkeys; c++)
		(void) wtcache_key_lookup_value(&a->vt->lookup, c, a->values[c]);
}

static bool
values_parse(VerifyTable *vt, char **values)
{
	ParseArgs	a = {vt, values};
	MemoryContext old = CurrentMemoryContext;
	bool		ok = wtcache_run_in_subxact(parse_values, &a, NULL);

	MemoryContextSwitchTo(old);
	return ok;
}

/*
 * The rows of these keys (canonical key values; NULL where there is none),
 * read now; of a hash-format table also their fields, into *fields.  The
 * caller is connected to SPI, with the rights the read needs.
 */
char **
wtcache_verify_rows_of(VerifyTable *vt, char ***values, int n, HashValue ***fields)
{
	Datum	   *args = palloc(sizeof(Datum) * vt->nkeys);
	char	  **texts = palloc(sizeof(char *) * Max(n, 1));
	char	  **rows = palloc0(sizeof(char *) * Max(n, 1));
	MemoryContext outer = CurrentMemoryContext;

	*fields = palloc0(sizeof(HashValue *) * Max(n, 1));

	for (int c = 0; c < vt->nkeys; c++)
	{
		for (int i = 0; i < n; i++)
			texts[i] = values[i][c];
		args[c] = wtcache_key_lookup_array(&vt->lookup, c, texts, n);
	}
	if (SPI_execute_with_args(vt->lookup.sql_many, vt->nkeys, vt->lookup.arraytypes, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: reading rows of %s failed", vt->qname);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		ord = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		Datum		json = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);

		if (ord >= 1 && ord <= n && !isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(outer);

			rows[ord - 1] = TextDatumGetCString(json);
			if (vt->hash)
				(*fields)[ord - 1] = wtcache_key_lookup_fields(&vt->lookup, SPI_tuptable->vals[r],
															   SPI_tuptable->tupdesc, false);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_freetuptable(SPI_tuptable);
	MemoryContextSwitchTo(outer);
	return rows;
}

/*
 * A scan of the whole table as a comparison reads it: the key columns,
 * then what Redis must hold (the projection's JSON, as the worker reads
 * it), then a hash's fields (wtcache_verify_scan_row decodes it).  The
 * alias is t; the caller may append a WHERE clause.  with_ctid: the row's
 * ctid last, after the fields (the live audit resumes after it).
 */
void
wtcache_verify_scan_sql(VerifyTable *vt, StringInfo sql, bool with_ctid)
{
	char	   *rowexpr;
	char	   *lateral;

	/* key values as they are, rendered here: no cast the type's owner made runs */
	appendStringInfoString(sql, "SELECT ");
	for (int c = 0; c < vt->nkeys; c++)
		appendStringInfo(sql, "t.%s, ", quote_identifier(vt->colnames[c]));
	wtcache_row_json_sql(vt->rel, vt->valcols, vt->nvalcols, &rowexpr, &lateral);
	appendStringInfoString(sql, rowexpr);
	/* a hash's fields, after the JSON (fields_at) */
	for (int c = 0; c < vt->lookup.nfields; c++)
		appendStringInfo(sql, ", t.%s", quote_identifier(vt->lookup.field_names[c]));
	if (with_ctid)
		appendStringInfoString(sql, ", t.ctid");
	appendStringInfo(sql, " FROM %s%s t%s", wtcache_only(vt->relid), vt->qname, lateral);
}

/*
 * One row of that scan: its canonical key values into values[nkeys], its
 * JSON into *row, a hash-format table's fields into *fields (else NULL).
 * Under the canonical settings.
 */
void
wtcache_verify_scan_row(VerifyTable *vt, HeapTuple tup, TupleDesc desc,
						char **values, char **row, HashValue **fields)
{
	bool		isnull;

	for (int c = 0; c < vt->nkeys; c++)
	{
		Datum		d = SPI_getbinval(tup, desc, c + 1, &isnull);

		values[c] = isnull ? pstrdup("") : OutputFunctionCall(&vt->keyout[c], d);
	}
	*row = TextDatumGetCString(SPI_getbinval(tup, desc, vt->nkeys + 1, &isnull));
	*fields = vt->hash ? fields_at(vt, tup, desc, vt->nkeys + 2) : NULL;
}

/*
 * Everything a comparison needs to know about a watched table, in cxt.
 * rel is open and locked by the caller, which keeps it so while vt is in
 * use.
 */
void
wtcache_verify_table_init(VerifyTable *vt, Relation rel, const WatchConfig *config,
						  MemoryContext cxt)
{
	Oid			relid = RelationGetRelid(rel);
	MemoryContext old = MemoryContextSwitchTo(cxt);

	memset(vt, 0, sizeof(*vt));
	vt->relid = relid;
	vt->nkeys = config->nkeys;
	vt->keys_optional = config->invalidate_mode || config->ttl_ms > 0;
	vt->hash = config->hash_format;
	vt->colnames = palloc(sizeof(char *) * vt->nkeys);
	vt->keyout = palloc(sizeof(FmgrInfo) * vt->nkeys);
	for (int c = 0; c < vt->nkeys; c++)
	{
		Oid			outfn;
		bool		isvarlena;

		vt->colnames[c] = get_attname(relid, config->key_attnums[c], false);
		getTypeOutputInfo(getBaseType(get_atttype(relid, config->key_attnums[c])), &outfn, &isvarlena);
		fmgr_info_cxt(outfn, &vt->keyout[c], cxt);
	}
	vt->nvalcols = wtcache_value_columns(rel, config, &vt->valcols);
	vt->projection = wtcache_projection_desc(rel, config);
	wtcache_key_lookup_init(&vt->lookup, rel, vt->nkeys, config->key_attnums, vt->valcols, vt->nvalcols,
							vt->hash ? LOOKUP_JSON_AND_FIELDS : LOOKUP_JSON, cxt);
	vt->rel = rel;
	vt->qname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid));
	vt->table_key = wtcache_current_table_key(relid);
	if (config->key_template != NULL)
	{
		KeyTemplateError err;

		vt->tmpl = wtcache_watch_key_template(relid, config, &err);
		if (vt->tmpl == NULL)
			elog(ERROR, "wtcache: the key template of \"%s\" does not fit its key: %s",
				 get_rel_name(relid), err.message);
	}
	MemoryContextSwitchTo(old);
}

/* Pass 1: the table's rows (or a sample) against Redis. */
static void
check_rows(VerifyTable *vt, int sample, CandidateList *out, int64 *checked)
{
	StringInfoData sql;
	Portal		portal;
	SPIPlanPtr	plan;
	MemoryContext batch_cxt = AllocSetContextCreate(verify_cxt, "wtcache verify batch",
													ALLOCSET_DEFAULT_SIZES);

	initStringInfo(&sql);
	wtcache_verify_scan_sql(vt, &sql, false);
	if (sample > 0)
		appendStringInfo(&sql, " ORDER BY pg_catalog.random() LIMIT %d", sample);
	plan = SPI_prepare(sql.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "wtcache: could not prepare the scan of %s", vt->qname);
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		int			n;
		char	  **keys;
		char	 ***values;
		char	  **rows;
		HashValue **fields;
		WtcReply   *replies;

		SPI_cursor_fetch(portal, true, VERIFY_BATCH);
		n = (int) SPI_processed;
		if (n == 0)
			break;
		MemoryContextReset(batch_cxt);
		MemoryContextSwitchTo(batch_cxt);
		keys = palloc(sizeof(char *) * n);
		values = palloc(sizeof(char **) * n);
		rows = palloc(sizeof(char *) * n);
		fields = palloc0(sizeof(HashValue *) * n);
		replies = palloc0(sizeof(WtcReply) * n);
		for (int i = 0; i < n; i++)
		{
			values[i] = palloc(sizeof(char *) * vt->nkeys);
			wtcache_verify_scan_row(vt, SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
									values[i], &rows[i], &fields[i]);
			keys[i] = wtcache_verify_row_key(vt, values[i]);
		}
		SPI_freetuptable(SPI_tuptable);
		get_values(vt, keys, n, replies);
		for (int i = 0; i < n; i++)
			if (wtcache_verify_classify(vt, rows[i], fields[i], &replies[i]) != NULL)
				add_candidate(out, vt, values[i], keys[i]);
		*checked += n;
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	MemoryContextSwitchTo(verify_cxt);
	MemoryContextDelete(batch_cxt);
}

/* Pass 2: Redis's row keys of the table against the table. */
static void
check_keys(VerifyTable *vt, CandidateList *out)
{
	WtcRedis   *r = wtcache_session_redis();
	StringInfoData pattern;
	StringInfoData head;
	char		cursor[32] = "0";
	int			node = 0;
	MemoryContext page_cxt = AllocSetContextCreate(verify_cxt, "wtcache verify scan",
												   ALLOCSET_DEFAULT_SIZES);

	initStringInfo(&head);
	wtcache_append_row_key_head(&head, wtcache_key_prefix, vt->table_key);
	initStringInfo(&pattern);
	if (vt->tmpl != NULL)
		wtcache_append_template_rows_pattern(&pattern, wtcache_key_prefix, vt->tmpl);
	else
		wtcache_append_table_rows_pattern(&pattern, wtcache_key_prefix, vt->table_key);
	do
	{
		WtcReply	reply;
		WtcReply   *keys;
		char	 ***values;
		char	  **rows;
		int			n = 0;

		MemoryContextReset(page_cxt);
		MemoryContextSwitchTo(page_cxt);
		if (r == NULL || !wtc_redis_scan(r, node, cursor, pattern.data, &reply) ||
			reply.type != WTC_REPLY_ARRAY || reply.nelem != 2 ||
			reply.elem[0].type != WTC_REPLY_STRING || reply.elem[1].type != WTC_REPLY_ARRAY)
		{
			wtcache_session_lost();
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("wtcache.verify() could not scan Redis")));
		}
		strlcpy(cursor, reply.elem[0].str, sizeof(cursor));
		keys = &reply.elem[1];
		values = palloc(sizeof(char **) * Max(keys->nelem, 1));
		for (int i = 0; i < keys->nelem; i++)
		{
			char	  **v = palloc(sizeof(char *) * vt->nkeys);

			/* a key of another key definition, or not wtcache's */
			if (keys->elem[i].type != WTC_REPLY_STRING)
				continue;
			if (vt->tmpl != NULL ?
				!wtcache_parse_templated_row_key(vt->tmpl, wtcache_key_prefix, keys->elem[i].str,
												 keys->elem[i].len, vt->nkeys, v) ||
				!values_parse(vt, v) :
				!wtcache_parse_row_key(keys->elem[i].str, keys->elem[i].len, head.len,
									   vt->nkeys, v))
				continue;
			values[n++] = v;
		}
		if (n > 0)
		{
			HashValue **fields;

			rows = wtcache_verify_rows_of(vt, values, n, &fields);
			for (int i = 0; i < n; i++)
				if (rows[i] == NULL)
					add_candidate(out, vt, values[i], wtcache_verify_row_key(vt, values[i]));
		}
		CHECK_FOR_INTERRUPTS();
		/* a Cluster: every master in turn */
		if (strcmp(cursor, "0") == 0)
			node++;
	} while (node < wtc_redis_node_count(r));
	MemoryContextSwitchTo(verify_cxt);
	MemoryContextDelete(page_cxt);
}

PG_FUNCTION_INFO_V1(wtcache_verify);
Datum
wtcache_verify(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid;
	int			sample = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	VerifyTable vt;
	WatchConfig config;
	CandidateList cands = {0};
	int64		checked = 0;
	int			reported = 0;
	WtcRights	rights;
	Relation	rel;
	int			nestlevel;
	char	  **rows = NULL;
	HashValue **fields = NULL;
	WtcReply   *replies = NULL;
	MemoryContext caller = CurrentMemoryContext;

	wtcache_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the table to verify must not be null")));
	relid = PG_GETARG_OID(0);
	if (!PG_ARGISNULL(1) && sample < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample must be positive"),
				 errhint("Pass NULL to check every row, and every key Redis has for the table.")));
	wtcache_check_table_owner(relid);
	InitMaterializedSRF(fcinfo, 0);
	verify_cxt = caller;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(caller);
	if (!wtcache_load_watch(relid, &config))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not watched by wtcache", get_rel_name(relid)),
				 errhint("Call wtcache.watch() on it first.")));
	if (wtcache_session_redis() == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("wtcache.verify() cannot reach Redis"),
				 errhint("Check that Redis is running and that wtcache.redis_url points to it.")));

	rel = relation_open(relid, AccessShareLock);
	wtcache_verify_table_init(&vt, rel, &config, caller);

	/*
	 * Every row, whatever row-level security would show the caller: as the
	 * table's owner, restricted (rights.c), so that nothing the table makes
	 * a read run has more than its owner's rights.
	 */
	wtcache_check_tree_owner(relid);
	wtcache_rights_enter_table_owner(&rights, relid);
	nestlevel = wtcache_canonical_settings_push();

	check_rows(&vt, sample, &cands, &checked);
	if (sample == 0)
		check_keys(&vt, &cands);

	/* changes in flight while we looked: let them land, then look again */
	if (cands.n > 0)
	{
		char	 ***values = palloc(sizeof(char **) * cands.n);
		char	  **keys = palloc(sizeof(char *) * cands.n);

		MemoryContextSwitchTo(caller);
		if (!wtcache_fence(VERIFY_SETTLE_MS))
			ereport(NOTICE,
					(errmsg("wtcache.verify(): changes were still being delivered after %d s; differences may be changes in flight",
							VERIFY_SETTLE_MS / 1000)));
		for (int i = 0; i < cands.n; i++)
		{
			values[i] = cands.items[i].values;
			keys[i] = cands.items[i].row_key;
		}
		MemoryContextSwitchTo(caller);
		rows = wtcache_verify_rows_of(&vt, values, cands.n, &fields);
		replies = palloc0(sizeof(WtcReply) * cands.n);
		get_values(&vt, keys, cands.n, replies);
	}

	wtcache_canonical_settings_pop(nestlevel);
	wtcache_rights_leave(&rights);
	SPI_finish();
	relation_close(rel, NoLock);
	MemoryContextSwitchTo(caller);

	for (int i = 0; i < cands.n; i++)
	{
		const char *problem = wtcache_verify_classify(&vt, rows[i], fields[i], &replies[i]);
		Datum		out[5];
		bool		nulls[5] = {false, false, false, false, false};
		Datum	   *kv = palloc(sizeof(Datum) * vt.nkeys);

		if (problem == NULL)
			continue;
		for (int c = 0; c < vt.nkeys; c++)
			kv[c] = CStringGetTextDatum(cands.items[i].values[c]);
		out[0] = PointerGetDatum(construct_array(kv, vt.nkeys, TEXTOID, -1, false, TYPALIGN_INT));
		out[1] = CStringGetTextDatum(cands.items[i].row_key);
		out[2] = CStringGetTextDatum(problem);
		if (rows[i])
			out[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(rows[i]));
		else
			nulls[3] = true;
		if (replies[i].type == WTC_REPLY_STRING)
			out[4] = PointerGetDatum(cstring_to_text_with_len(replies[i].str, replies[i].len));
		else if (vt.hash && replies[i].type == WTC_REPLY_ARRAY && replies[i].nelem > 0)
			out[4] = CStringGetTextDatum(hash_text(&replies[i]));
		else
			nulls[4] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
		reported++;
	}
	if (vt.projection != NULL)
		ereport(NOTICE,
				(errmsg("wtcache.verify(): " INT64_FORMAT " rows of \"%s\" checked%s, %d difference%s, comparing the columns %s",
						checked, get_rel_name(relid),
						sample == 0 ? " and every key Redis has for it" : "",
						reported, reported == 1 ? "" : "s", vt.projection),
				 errdetail("The table is watched with a projection: Redis holds only these columns, and in_table shows them alone.")));
	else
		ereport(NOTICE,
				(errmsg("wtcache.verify(): " INT64_FORMAT " rows of \"%s\" checked%s, %d difference%s",
						checked, get_rel_name(relid),
						sample == 0 ? " and every key Redis has for it" : "",
						reported, reported == 1 ? "" : "s")));
	return (Datum) 0;
}
