/*-------------------------------------------------------------------------
 * watch.c
 *		wtcache.watch(), wtcache.unwatch(), wtcache.resync()/warm().
 *
 * Watching needs ownership of the table.  The triggers are created as the
 * caller (who owns the table); the configuration row is written as the
 * owner of wtcache.watched, so callers need no rights on wtcache's tables.
 *
 * A watched table's key must be enforced by a unique, non-partial,
 * immediate index over NOT NULL columns: the queue's ordering argument (see
 * capture.c) relies on the writer of a key holding its row lock or index
 * entry until commit.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "keys.h"
#include "partition.h"
#include "plans.h"
#include "progress.h"
#include "rights.h"
#include "settings.h"
#include "tags.h"
#include "watch.h"
#include "keyspace.h"
#include "redis.h"
#include "session.h"
#include "shmem.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/pg_list.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "storage/lmgr.h"


/*
 * Act as the owner of wtcache's own tables, immune to the caller's
 * objects (rights.c), until as_owner_end().
 */
static void
as_owner_begin(WtcRights *s)
{
	wtcache_rights_enter(s, wtcache_owner(), false);
}

static void
as_owner_end(WtcRights *s)
{
	wtcache_rights_leave(s);
}

static Relation
open_watchable(Oid relid, LOCKMODE lockmode, const char *action)
{
	Relation	rel;

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	rel = relation_open(relid, lockmode);
	/* its own tables: capturing the queue into the queue would never end */
	if (RelationGetNamespace(rel) == get_namespace_oid(WTCACHE_SCHEMA, true))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s \"%s\": it belongs to wtcache", action,
						RelationGetRelationName(rel)),
				 errhint("Watch your own tables; wtcache's are maintained by wtcache.")));

	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot %s \"%s\": it is not a table", action,
						RelationGetRelationName(rel)),
				 errhint("Only ordinary and partitioned tables can be watched.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_UNLOGGED && strcmp(action, "watch") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot watch unlogged table \"%s\"", RelationGetRelationName(rel)),
				 errdetail("Crash recovery empties an unlogged table, and a promoted standby has it empty, while Redis would keep serving its rows."),
				 errhint("ALTER TABLE ... SET LOGGED first.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s temporary table \"%s\"", action,
						RelationGetRelationName(rel)),
				 errhint("The delivery worker cannot read another session's temporary tables.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, RelationGetRelationName(rel));
	if (strcmp(action, "watch") == 0)
		wtcache_check_watchable_tree(rel);
	/* its rows are read as its owner (rights.c), who must see them all */
	if (strcmp(action, "watch") == 0 && rel->rd_rel->relforcerowsecurity &&
		!has_bypassrls_privilege(rel->rd_rel->relowner))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot watch table \"%s\": its row-level security policies apply to its owner",
						RelationGetRelationName(rel)),
				 errdetail("wtcache reads a watched table's rows as the table's owner, and must see every row; the table has FORCE ROW LEVEL SECURITY."),
				 errhint("ALTER TABLE ... NO FORCE ROW LEVEL SECURITY, or give the owner BYPASSRLS.")));
	return rel;
}

/* Does a unique, usable index cover exactly these columns? (keys.c) */
static bool
has_unique_index_on(Relation rel, int nkeys, const AttrNumber *attnums)
{
	return OidIsValid(wtcache_key_index(rel, nkeys, attnums));
}

/* Resolve and check the key columns; returns how many. */
static int
resolve_key(Relation rel, ArrayType *keyarr, AttrNumber *attnums)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			nkeys = 0;

	if (keyarr == NULL)
	{
		Oid			pk = RelationGetPrimaryKeyIndex(rel);
		HeapTuple	tup;
		Form_pg_index idx;

		if (!OidIsValid(pk))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("table \"%s\" has no primary key", RelationGetRelationName(rel)),
					 errdetail("wtcache names each row in Redis by its key."),
					 errhint("Add a primary key, or pass key => ARRAY['column', ...] naming the columns of a unique index.")));
		tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pk));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for index %u", pk);
		idx = (Form_pg_index) GETSTRUCT(tup);
		nkeys = idx->indnkeyatts;
		for (int i = 0; i < nkeys; i++)
			attnums[i] = idx->indkey.values[i];
		ReleaseSysCache(tup);
	}
	else
	{
		Datum	   *elems;
		bool	   *nulls;
		int			nelems;

		deconstruct_array(keyarr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
		if (nelems < 1 || nelems > INDEX_MAX_KEYS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key must name from 1 to %d columns", INDEX_MAX_KEYS),
					 errhint("Pass NULL to use the primary key.")));
		for (int i = 0; i < nelems; i++)
		{
			char	   *colname;
			AttrNumber	attnum;

			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("key column names must not be null")));
			colname = TextDatumGetCString(elems[i]);
			attnum = get_attnum(RelationGetRelid(rel), colname);
			if (attnum == InvalidAttrNumber || attnum < 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of table \"%s\" does not exist",
								colname, RelationGetRelationName(rel)),
						 errhint("Key columns are given by name, as in key => ARRAY['id'].")));
			for (int j = 0; j < i; j++)
				if (attnums[j] == attnum)
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_COLUMN),
							 errmsg("key column \"%s\" is given twice", colname)));
			attnums[i] = attnum;
		}
		nkeys = nelems;
		if (!has_unique_index_on(rel, nkeys, attnums))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("no unique index of table \"%s\" covers exactly the given key columns",
							RelationGetRelationName(rel)),
					 errdetail("Two rows with one key would share a Redis key."),
					 errhint("Create a unique index (not partial, not deferrable) on those columns, or watch the table by its primary key.")));
	}

	for (int i = 0; i < nkeys; i++)
	{
		Form_pg_attribute att;
		HeapTuple	typtup;
		bool		has_send;

		if (attnums[i] <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the key of table \"%s\" uses an expression", RelationGetRelationName(rel)),
					 errhint("Pass key => ARRAY[...] naming plain columns of a unique index.")));
		att = TupleDescAttr(desc, attnums[i] - 1);
		if (!att->attnotnull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("key column \"%s\" of table \"%s\" may be null",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errhint("ALTER TABLE ... ALTER COLUMN %s SET NOT NULL.", quote_identifier(NameStr(att->attname)))));
		typtup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(att->atttypid));
		if (!HeapTupleIsValid(typtup))
			elog(ERROR, "cache lookup failed for type %u", att->atttypid);
		has_send = OidIsValid(((Form_pg_type) GETSTRUCT(typtup))->typsend);
		ReleaseSysCache(typtup);
		if (!wtcache_key_type_is_stable(att->atttypid) && !has_send)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("key column \"%s\" has type %s, which cannot be used as a wtcache key",
							NameStr(att->attname), format_type_be(att->atttypid)),
					 errdetail("Its text form depends on session settings and it has no binary form."),
					 errhint("Key the table by columns of a type such as integer, bigint, text or uuid.")));
	}
	return nkeys;
}

static char *
qualified_name(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/* The table's schema-qualified, quoted name, the table locked first. */
static char *
qualified_name_of(Oid relid)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	char	   *qname = qualified_name(rel);

	relation_close(rel, NoLock);
	return qname;
}

static bool
trigger_exists(Oid relid, const char *name)
{
	Oid			argtypes[2] = {OIDOID, NAMEOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), CStringGetDatum(name)};
	int			rc;

	rc = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2",
							   2, argtypes, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "trigger lookup failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/*
 * True while watch()/unwatch() drop and create the capture triggers, so
 * that the sql_drop handler does not take that for a user dropping them.
 * Reset at the end of the transaction in case of an error in between.
 */
bool		wtcache_changing_triggers = false;

static void
spi_exec_or_error(const char *sql, int expected)
{
	int			rc;

	/* reset on an error too: a caller may catch it in a subtransaction */
	wtcache_changing_triggers = true;
	PG_TRY();
	{
		rc = SPI_execute(sql, false, 0);
	}
	PG_FINALLY();
	{
		wtcache_changing_triggers = false;
	}
	PG_END_TRY();
	if (rc != expected)
		elog(ERROR, "wtcache: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

static void enable_always(const char *qname, const char *trigger);
static bool watched_has_column(const char *name);

static const struct
{
	const char *name;
	const char *event;
	char		op;
}			row_triggers[] = {
	{"wtcache_capture_ins", "INSERT", 'i'},
	{"wtcache_capture_upd", "UPDATE", 'u'},
	{"wtcache_capture_del", "DELETE", 'd'},
};

/* Drop the row capture triggers of a table, those that exist.  Needs SPI. */
static void
drop_row_triggers(Oid relid, const char *qname)
{
	for (int t = 0; t < lengthof(row_triggers); t++)
		if (trigger_exists(relid, row_triggers[t].name))
			spi_exec_or_error(psprintf("DROP TRIGGER %s ON %s", row_triggers[t].name, qname),
							  SPI_OK_UTILITY);
}

/*
 * Create the row capture triggers: their WHEN clause hands the key columns'
 * (and tag columns') old and new values to _capture_when[_tagged]().  Needs
 * SPI; the caller owns the table.
 */
static void
create_row_triggers(Relation rel, const char *qname, int nkeys, const AttrNumber *attnums,
					ArrayType *tags)
{
	char	   *relliteral = quote_literal_cstr(qname);
	TupleDesc	desc = RelationGetDescr(rel);
	int			ntemplates = ArrayGetNItems(ARR_NDIM(tags), ARR_DIMS(tags));
	AttrNumber	tagcols[WTCACHE_MAX_TAG_COLUMNS];
	int			ntagcols = 0;
	StringInfoData templates_sql;
	StringInfoData sql;

	initStringInfo(&templates_sql);
	if (ntemplates > 0)
	{
		ArrayType  *compiled = wtcache_compile_tag_templates(rel, tags, tagcols, &ntagcols);
		Datum	   *elems;
		int			n;

		deconstruct_array(compiled, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
		appendStringInfoString(&templates_sql, "ARRAY[");
		for (int i = 0; i < n; i++)
			appendStringInfo(&templates_sql, "%s%s", i ? ", " : "",
							 quote_literal_cstr(TextDatumGetCString(elems[i])));
		appendStringInfoString(&templates_sql, "]::text[]");
	}

	for (int t = 0; t < lengthof(row_triggers); t++)
	{
		const char *rows[2];
		int			nrows = 0;

		if (row_triggers[t].op != 'i')
			rows[nrows++] = "OLD";
		if (row_triggers[t].op != 'd')
			rows[nrows++] = "NEW";

		/*
		 * OR REPLACE: around an ALTER COLUMN TYPE (ddl.c), an event trigger
		 * of the DBA's may have called watch() while they were away.
		 */
		initStringInfo(&sql);
		if (ntemplates > 0)
			appendStringInfo(&sql,
							 "CREATE OR REPLACE TRIGGER %s AFTER %s ON %s FOR EACH ROW "
							 "WHEN (wtcache._capture_when_tagged(%s::regclass, '%c', %d::int2, %s",
							 row_triggers[t].name, row_triggers[t].event, qname,
							 relliteral, row_triggers[t].op, nkeys, templates_sql.data);
		else
			appendStringInfo(&sql,
							 "CREATE OR REPLACE TRIGGER %s AFTER %s ON %s FOR EACH ROW "
							 "WHEN (wtcache._capture_when(%s::regclass, '%c'",
							 row_triggers[t].name, row_triggers[t].event, qname,
							 relliteral, row_triggers[t].op);
		for (int r = 0; r < nrows; r++)
			for (int i = 0; i < nkeys; i++)
				appendStringInfo(&sql, ", %s.%s", rows[r],
								 quote_identifier(NameStr(TupleDescAttr(desc, attnums[i] - 1)->attname)));
		for (int r = 0; r < nrows; r++)
			for (int i = 0; i < ntagcols; i++)
				appendStringInfo(&sql, ", %s.%s", rows[r],
								 quote_identifier(NameStr(TupleDescAttr(desc, tagcols[i] - 1)->attname)));
		appendStringInfoString(&sql, ")) EXECUTE FUNCTION wtcache._capture_row(");
		for (int i = 0; i < nkeys; i++)
			appendStringInfo(&sql, "%s'%d'", i ? ", " : "", attnums[i]);
		appendStringInfoString(&sql, ")");
		spi_exec_or_error(sql.data, SPI_OK_UTILITY);
	}
}

/*
 * ALTER TABLE ... ALTER COLUMN ... TYPE of a column the row capture
 * triggers name (a key or tag column) is refused by PostgreSQL while they
 * exist: ddl.c drops them just before such a statement and creates them
 * again right after, in its transaction, from the table's watch.  The
 * int to bigint key migration then works as on an unwatched table.
 */
void
wtcache_drop_row_triggers(Oid relid)
{
	char	   *qname = qualified_name_of(relid);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	drop_row_triggers(relid, qname);
	SPI_finish();
}

void
wtcache_create_row_triggers(Oid relid)
{
	Relation	rel;
	WatchConfig config;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	char	   *qname;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!wtcache_load_watch(relid, &config))
	{
		SPI_finish();
		return;
	}
	for (int i = 0; i < config.nkeys; i++)
		attnums[i] = config.key_attnums[i];
	rel = relation_open(relid, AccessShareLock);
	qname = qualified_name(rel);
	create_row_triggers(rel, qname, config.nkeys, attnums, config.tags);
	relation_close(rel, NoLock);
	for (int t = 0; t < lengthof(row_triggers); t++)
		enable_always(qname, row_triggers[t].name);
	SPI_finish();
}

/* The table's capture triggers fire ALWAYS again (ddl.c, after ENABLE TRIGGER ALL). */
void
wtcache_enable_capture_always(Oid relid)
{
	char	   *qname = qualified_name_of(relid);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int t = 0; t < lengthof(row_triggers); t++)
		if (trigger_exists(relid, row_triggers[t].name))
			enable_always(qname, row_triggers[t].name);
	if (trigger_exists(relid, "wtcache_truncate"))
		enable_always(qname, "wtcache_truncate");
	SPI_finish();
}

/*
 * A capture trigger fires whatever session_replication_role says: changes
 * applied by a logical replication subscriber, or by pg_restore as
 * replica, must reach Redis like any other.
 */
static void
enable_always(const char *qname, const char *trigger)
{
	char	   *sql = psprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", qname, trigger);

	spi_exec_or_error(sql, SPI_OK_UTILITY);
}

/* What a call of watch() asks for, checked before any lock is taken. */
typedef struct WatchRequest
{
	Oid			relid;
	ArrayType  *keyarr;			/* NULL: the primary key */
	ArrayType  *tags;			/* tag templates, never NULL */
	Interval   *ttl;			/* NULL: keys do not expire */
	char	   *mode;
	bool		warm;
	ArrayType  *columns;		/* columns => ..., NULL: not given */
	ArrayType  *exclude;		/* exclude_columns => ..., NULL: not given */
	char	   *format;			/* format => ..., NULL: not given */
	char	   *key_template;	/* key_template => ..., NULL: not given, "":
								 * the default layout */
} WatchRequest;

static void
watch_request_from_args(FunctionCallInfo fcinfo, WatchRequest *req)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the table to watch must not be null")));
	req->relid = PG_GETARG_OID(0);
	req->keyarr = PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1);
	req->tags = PG_ARGISNULL(2) ? construct_empty_array(TEXTOID) : PG_GETARG_ARRAYTYPE_P(2);
	if (array_contains_nulls(req->tags))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tags must not contain nulls")));
	req->mode = PG_ARGISNULL(4) ? "write_through" : text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (strcmp(req->mode, "write_through") != 0 && strcmp(req->mode, "invalidate") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown wtcache mode \"%s\"", req->mode),
				 errhint("Use 'write_through' (Redis holds each row) or 'invalidate' (a change deletes the row's key).")));
	req->ttl = PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3);
	if (req->ttl != NULL && wtcache_interval_ms(req->ttl) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be positive"),
				 errhint("Pass NULL for keys that do not expire.")));
	req->warm = PG_ARGISNULL(5) ? false : PG_GETARG_BOOL(5);
	/* 1.3's options; the SQL of 1.2 (before ALTER EXTENSION UPDATE) has none */
	req->columns = (PG_NARGS() > 6 && !PG_ARGISNULL(6)) ? PG_GETARG_ARRAYTYPE_P(6) : NULL;
	req->exclude = (PG_NARGS() > 7 && !PG_ARGISNULL(7)) ? PG_GETARG_ARRAYTYPE_P(7) : NULL;
	if (req->columns != NULL && req->exclude != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("columns and exclude_columns cannot both be given"),
				 errdetail("columns names the columns Redis gets; exclude_columns the columns it must never get."),
				 errhint("Give one of them; exclude_columns => '{}' goes back to every column.")));
	req->format = (PG_NARGS() > 8 && !PG_ARGISNULL(8)) ? text_to_cstring(PG_GETARG_TEXT_PP(8)) : NULL;
	if (req->format != NULL && strcmp(req->format, WTC_FORMAT_JSON) != 0 &&
		strcmp(req->format, WTC_FORMAT_HASH) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown wtcache format \"%s\"", req->format),
				 errdetail("format says how a row is stored in Redis."),
				 errhint("Use 'json' (a string of the row's JSON) or 'hash' (a Redis hash, a field per column).")));
	req->key_template = (PG_NARGS() > 9 && !PG_ARGISNULL(9)) ? text_to_cstring(PG_GETARG_TEXT_PP(9)) : NULL;
}

/*
 * A hash names its version "_v" (keyspace.h): a column of that name would
 * be overwritten by it, or overwrite it.
 */
static void
check_hash_columns(Relation rel, const WatchConfig *config)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), WTC_VALUE_VERSION);
	WatchConfig as_json = *config;
	int16	   *valcols;
	int			n;
	bool		in;

	if (!config->hash_format || attnum <= 0)
		return;
	/* the columns the value would hold, "_v" not left out */
	as_json.hash_format = false;
	n = wtcache_value_columns(rel, &as_json, &valcols);
	in = (n < 0);				/* every column */
	for (int i = 0; i < n && !in; i++)
		in = (valcols[i] == attnum);
	if (in)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table \"%s\" has a column named \"%s\", which format 'hash' cannot store",
						RelationGetRelationName(rel), WTC_VALUE_VERSION),
				 errdetail("A row's hash holds its version in the field \"%s\".", WTC_VALUE_VERSION),
				 errhint("Rename the column, keep it out with exclude_columns, or use format 'json'.")));
}

/*
 * The projection a watch() asks for, resolved against the table into
 * config->nproj/proj_attnums/proj_exclude; false if the call gives none
 * (a new watch then has every column, an existing one keeps its own:
 * re-running watch() to change a TTL must not start sending a column
 * that was kept out of Redis).
 *
 * Key columns are always in the value.  Their values are part of the
 * row's Redis key and of every event about it, so they reach Redis
 * whatever the projection: excluding one would promise a secrecy that
 * does not exist, and is refused; columns => need not list them.
 */
static bool
resolve_projection(Relation rel, const WatchRequest *req, int nkeys,
				   const AttrNumber *keyatts, WatchConfig *config)
{
	ArrayType  *arr = req->columns ? req->columns : req->exclude;
	const char *argname = req->columns ? "columns" : "exclude_columns";
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (arr == NULL)
		return false;
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	config->proj_exclude = (req->exclude != NULL);
	config->proj_attnums = palloc(sizeof(int16) * Max(n, 1));
	config->nproj = 0;
	for (int i = 0; i < n; i++)
	{
		char	   *colname;
		AttrNumber	attnum;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", argname)));
		colname = TextDatumGetCString(elems[i]);
		attnum = get_attnum(RelationGetRelid(rel), colname);
		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" does not exist",
							colname, RelationGetRelationName(rel)),
					 errhint("%s names columns of the table, as in %s => ARRAY['name'].",
							 argname, argname)));
		for (int j = 0; j < config->nproj; j++)
			if (config->proj_attnums[j] == attnum)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("column \"%s\" is given twice in %s", colname, argname)));
		for (int k = 0; k < nkeys; k++)
			if (keyatts[k] == attnum && config->proj_exclude)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("cannot exclude key column \"%s\" of table \"%s\"",
								colname, RelationGetRelationName(rel)),
						 errdetail("A row's key values are part of its Redis key and of every event about it: they reach Redis whatever the projection."),
						 errhint("Exclude other columns, or watch the table by another key (key => ...).")));
		config->proj_attnums[config->nproj++] = attnum;
	}
	/* excluding nothing is every column, stored as no projection at all */
	if (config->proj_exclude && config->nproj == 0)
		config->nproj = -1;
	return true;
}

/* Do two configurations give the values the same columns? */
static bool
same_projection(Relation rel, const WatchConfig *a, const WatchConfig *b)
{
	int16	   *ca;
	int16	   *cb;
	int			na = wtcache_value_columns(rel, a, &ca);
	int			nb = wtcache_value_columns(rel, b, &cb);

	if (na != nb)
		return false;
	for (int i = 0; i < na; i++)
		if (ca[i] != cb[i])
			return false;
	/* exclude_columns also decides what columns added later do */
	return na < 0 || a->proj_exclude == b->proj_exclude;
}

/*
 * Tag names are Redis key names and part of every event: a template may
 * not use a column the projection keeps out of Redis.
 */
static void
check_tags_in_projection(Relation rel, ArrayType *tags, const WatchConfig *config)
{
	AttrNumber	tagcols[WTCACHE_MAX_TAG_COLUMNS];
	int			ntagcols = 0;
	int16	   *valcols;
	int			nvalcols = wtcache_value_columns(rel, config, &valcols);

	if (nvalcols < 0 || ArrayGetNItems(ARR_NDIM(tags), ARR_DIMS(tags)) == 0)
		return;
	(void) wtcache_compile_tag_templates(rel, tags, tagcols, &ntagcols);
	for (int i = 0; i < ntagcols; i++)
	{
		bool		in = false;

		for (int j = 0; j < nvalcols && !in; j++)
			in = valcols[j] == tagcols[i];
		if (!in)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a tag template of table \"%s\" uses column \"%s\", which the projection keeps out of Redis",
							RelationGetRelationName(rel),
							NameStr(TupleDescAttr(RelationGetDescr(rel), tagcols[i] - 1)->attname)),
					 errdetail("Tags are part of Redis key names and of every event: the column's values would reach Redis."),
					 errhint("Keep the column in the projection, or drop the template that names it.")));
	}
}

static void
report_template_error(const KeyTemplateError *err)
{
	ereport(ERROR,
			(errcode(err->sqlstate),
			 errmsg_internal("%s", err->message),
			 err->detail ? errdetail_internal("%s", err->detail) : 0,
			 err->hint ? errhint("%s", err->hint) : 0));
}

/*
 * No two tables of this database may have templates that can render one
 * key (wtcache_key_templates_overlap): their rows would share it.  One
 * such check at a time (a lock on wtcache.watched that only they take,
 * with the rows and the worker's counters still written), each seeing
 * every template committed before it, whatever the caller's isolation.
 */
static void
check_template_overlaps(Relation rel, const KeyTemplate *t)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(RelationGetRelid(rel))};
	Oid			nsp = get_namespace_oid(WTCACHE_SCHEMA, false);
	int			rc;

	LockRelationOid(get_relname_relid(WTCACHE_WATCHED_TABLE, nsp), ShareUpdateExclusiveLock);
	CommandCounterIncrement();
	PushActiveSnapshot(GetLatestSnapshot());
	rc = wtcache_spi_as_extension_owner("SELECT rel::pg_catalog.regclass::pg_catalog.text, key_template "
										"FROM wtcache.watched WHERE key_template IS NOT NULL "
										"AND rel OPERATOR(pg_catalog.<>) $1",
										1, argtypes, values, NULL, true, 0);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *other = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *text = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		KeyTemplateError err;
		KeyTemplate *o = wtcache_key_template_parse(text, &err);

		if (o != NULL && wtcache_key_templates_overlap(t, o))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key template \"%s\" of table \"%s\" overlaps key template \"%s\" of table %s",
							t->text, RelationGetRelationName(rel), text, other),
					 errdetail("Some key values would give a row of each table the same Redis key."),
					 errhint("Give the templates literal text that tells them apart, as in 'user:{id}' and 'team:{id}'.")));
	}
}

/*
 * The worker claims a template's key space in Redis for this database
 * before its first push (deliver.c): a key space another database claimed
 * would have its rows share keys with that database's.  Refused here
 * already when Redis says so; best effort (Redis may be out of reach, or
 * the claim made later): the worker's check is the one that holds.
 */
static void
check_template_claim(const KeyTemplate *t)
{
	WtcRedis   *r;
	StringInfoData key;
	StringInfoData mine;
	WtcReply	reply;
	char	   *owner;

	if (WtcacheSharedState == NULL || (r = wtcache_session_redis()) == NULL)
		return;
	initStringInfo(&key);
	wtcache_append_claim_key(&key, wtcache_key_prefix, t);
	wtcache_session_set_busy(true);
	if (!wtc_redis_commandv(r, &reply, 2, "GET", key.data))
	{
		wtcache_session_lost();
		return;
	}
	wtcache_session_set_busy(false);
	if (reply.type != WTC_REPLY_STRING)
		return;
	initStringInfo(&mine);
	wtcache_append_claim_owner_head(&mine, get_database_name(MyDatabaseId));
	if (reply.len >= (size_t) mine.len && memcmp(reply.str, mine.data, mine.len) == 0)
		return;
	owner = pnstrdup(reply.str, reply.len);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_IN_USE),
			 errmsg("the keys of key template \"%s\" belong to another database", t->text),
			 errdetail("Redis key \"%s\" says that table %s (database:schema.table) has them: the rows of both tables would share keys.",
					   key.data, owner),
			 errhint("Choose another template, or another wtcache.key_prefix; if that table is no longer watched, DEL %s in Redis.",
					 key.data)));
}

/*
 * The template a watch() gives, checked against the table: its syntax,
 * its placeholders the key columns, each once; not overlapping another
 * table's; not claimed by another database.
 */
static void
check_key_template(Relation rel, const WatchConfig *config)
{
	KeyTemplateError err;
	KeyTemplate *t = wtcache_key_template_parse(config->key_template, &err);
	char	  **names;

	if (t == NULL)
		report_template_error(&err);
	/* a name no column has, first: the usual typo, and its own errcode */
	for (int i = 0; i < t->nparts; i++)
		if (t->parts[i].literal == NULL &&
			get_attnum(RelationGetRelid(rel), t->parts[i].name) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" does not exist",
							t->parts[i].name, RelationGetRelationName(rel)),
					 errhint("A key template's placeholders name the key columns, as in 'user:{id}'.")));
	names = palloc(sizeof(char *) * config->nkeys);
	for (int k = 0; k < config->nkeys; k++)
		names[k] = NameStr(TupleDescAttr(RelationGetDescr(rel), config->key_attnums[k] - 1)->attname);
	if (!wtcache_key_template_bind(t, config->nkeys, names, &err))
		report_template_error(&err);
	check_template_overlaps(rel, t);
	check_template_claim(t);
}

/*
 * An existing watch keeps its key: its rows' Redis keys are made from it,
 * and a different key would leave every one of them behind, unmaintained.
 */
static void
refuse_other_key(Relation rel, const char *qname, int nkeys, const AttrNumber *attnums)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(RelationGetRelid(rel))};
	int			rc;
	bool		isnull;
	ArrayType  *old;
	int			nold;
	int16	   *oldatt;
	bool		same;

	/* wtcache.watched is readable by its owner only */
	rc = wtcache_spi_as_extension_owner("SELECT key_attnums FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
										1, argtypes, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	if (SPI_processed == 0)
		return;

	old = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	nold = ArrayGetNItems(ARR_NDIM(old), ARR_DIMS(old));
	oldatt = (int16 *) ARR_DATA_PTR(old);
	same = (nold == nkeys);
	for (int i = 0; same && i < nkeys; i++)
		same = (oldatt[i] == attnums[i]);
	if (!same)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is already watched with another key", RelationGetRelationName(rel)),
				 errdetail("Its rows' Redis keys are made from the key columns."),
				 errhint("Call wtcache.unwatch('%s') first, then watch it with the new key.", qname)));
}

/*
 * Row triggers, created as the caller, who owns the table.  Re-created on
 * every watch(): the tag templates decide their arguments.
 */
static void
install_capture_triggers(Relation rel, const char *qname, int nkeys,
						 const AttrNumber *attnums, ArrayType *tags)
{
	drop_row_triggers(RelationGetRelid(rel), qname);
	create_row_triggers(rel, qname, nkeys, attnums, tags);
	if (!trigger_exists(RelationGetRelid(rel), "wtcache_truncate"))
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql,
						 "CREATE TRIGGER wtcache_truncate AFTER TRUNCATE ON %s "
						 "FOR EACH STATEMENT EXECUTE FUNCTION wtcache._capture_truncate()", qname);
		spi_exec_or_error(sql.data, SPI_OK_UTILITY);
	}
}

/*
 * The watch's row in wtcache.watched, written as wtcache's owner.  True if
 * the table was not watched before.
 */
static bool
record_watch(Relation rel, const WatchRequest *req, int nkeys, const AttrNumber *attnums,
			 const WatchConfig *config)
{
	Oid			argtypes[11] = {OIDOID, NAMEARRAYOID, INT2ARRAYOID, TEXTARRAYOID, INTERVALOID, TEXTOID,
	NAMEARRAYOID, NAMEARRAYOID, BOOLOID, TEXTOID, TEXTOID};
	Datum		values[11];
	char		nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', 'n', 'n', ' ', ' ', 'n'};
	bool		options = watched_has_column("exclude_columns");
	bool		templates = options && watched_has_column("key_template");
	Datum		keynames[INDEX_MAX_KEYS];
	Datum		attnum_datums[INDEX_MAX_KEYS];
	int			rc;
	bool		isnull;
	bool		newly_watched;

	for (int i = 0; i < nkeys; i++)
	{
		keynames[i] = NameGetDatum(&TupleDescAttr(RelationGetDescr(rel), attnums[i] - 1)->attname);
		attnum_datums[i] = Int16GetDatum(attnums[i]);
	}
	values[0] = ObjectIdGetDatum(RelationGetRelid(rel));
	values[1] = PointerGetDatum(construct_array(keynames, nkeys, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR));
	values[2] = PointerGetDatum(construct_array(attnum_datums, nkeys, INT2OID, 2, true, TYPALIGN_SHORT));
	values[3] = PointerGetDatum(req->tags);
	values[4] = req->ttl ? IntervalPGetDatum(req->ttl) : (Datum) 0;
	if (!req->ttl)
		nulls[4] = 'n';
	values[5] = CStringGetTextDatum(req->mode);
	/*
	 * Not given: an existing watch keeps its lists as they are, names of
	 * dropped columns included (one added again under such a name stays
	 * out); a new one has none.
	 */
	values[8] = BoolGetDatum(req->columns != NULL || req->exclude != NULL);
	/* the format as resolved: given, or the watch's own */
	values[9] = CStringGetTextDatum(config->hash_format ? WTC_FORMAT_HASH : WTC_FORMAT_JSON);
	/* the key template as resolved: given, or the watch's own; NULL: none */
	if (config->key_template != NULL)
	{
		values[10] = CStringGetTextDatum(config->key_template);
		nulls[10] = ' ';
	}
	if (config->nproj >= 0)
	{
		Datum	   *d = palloc(sizeof(Datum) * Max(config->nproj, 1));

		for (int i = 0; i < config->nproj; i++)
			d[i] = NameGetDatum(&TupleDescAttr(RelationGetDescr(rel), config->proj_attnums[i] - 1)->attname);
		values[config->proj_exclude ? 7 : 6] =
			PointerGetDatum(construct_array(d, config->nproj, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR));
		nulls[config->proj_exclude ? 7 : 6] = ' ';
	}

	if (templates)
		rc = wtcache_spi_as_extension_owner("INSERT INTO wtcache.watched AS w (rel, key_columns, key_attnums, tags, ttl, mode, "
											"columns, exclude_columns, format, key_template) "
											"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $11) "
											"ON CONFLICT (rel) DO UPDATE SET tags = EXCLUDED.tags, ttl = EXCLUDED.ttl, mode = EXCLUDED.mode, "
											"columns = CASE WHEN $9 THEN EXCLUDED.columns ELSE w.columns END, "
											"exclude_columns = CASE WHEN $9 THEN EXCLUDED.exclude_columns ELSE w.exclude_columns END, "
											"format = EXCLUDED.format, key_template = EXCLUDED.key_template "
											"RETURNING (xmax OPERATOR(pg_catalog.=) 0)",
											11, argtypes, values, nulls, false, 0);
	else if (options)
		rc = wtcache_spi_as_extension_owner("INSERT INTO wtcache.watched AS w (rel, key_columns, key_attnums, tags, ttl, mode, "
											"columns, exclude_columns, format) "
											"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10) "
											"ON CONFLICT (rel) DO UPDATE SET tags = EXCLUDED.tags, ttl = EXCLUDED.ttl, mode = EXCLUDED.mode, "
											"columns = CASE WHEN $9 THEN EXCLUDED.columns ELSE w.columns END, "
											"exclude_columns = CASE WHEN $9 THEN EXCLUDED.exclude_columns ELSE w.exclude_columns END, "
											"format = EXCLUDED.format "
											"RETURNING (xmax OPERATOR(pg_catalog.=) 0)",
											10, argtypes, values, nulls, false, 0);
	else
		rc = wtcache_spi_as_extension_owner("INSERT INTO wtcache.watched AS w (rel, key_columns, key_attnums, tags, ttl, mode) "
											"VALUES ($1, $2, $3, $4, $5, $6) "
											"ON CONFLICT (rel) DO UPDATE SET tags = EXCLUDED.tags, ttl = EXCLUDED.ttl, mode = EXCLUDED.mode "
											"RETURNING (xmax OPERATOR(pg_catalog.=) 0)",
											6, argtypes, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "wtcache.watched insert failed: %s", SPI_result_code_string(rc));
	newly_watched = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return newly_watched;
}

PG_FUNCTION_INFO_V1(wtcache_watch);
Datum
wtcache_watch(PG_FUNCTION_ARGS)
{
	WatchRequest req;
	Relation	rel;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	int			nkeys;
	char	   *qname;
	WatchConfig old;
	WatchConfig new;
	bool		was_watched;
	bool		rewrite;
	MemoryContext fn_cxt = CurrentMemoryContext;

	watch_request_from_args(fcinfo, &req);

	/* same lock as CREATE TRIGGER: no concurrent DDL, writers still run */
	rel = open_watchable(req.relid, ShareRowExclusiveLock, "watch");
	nkeys = resolve_key(rel, req.keyarr, attnums);
	qname = qualified_name(rel);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	refuse_other_key(rel, qname, nkeys, attnums);
	/* the options the watch will have: those given, else its current ones */
	was_watched = wtcache_load_watch(req.relid, &old);
	if (!was_watched)
	{
		old.nproj = -1;
		old.proj_attnums = NULL;
		old.proj_exclude = false;
		old.hash_format = false;
		old.key_template = NULL;
	}
	/* the old template names the keys to remove, after SPI_finish below */
	if (old.key_template != NULL)
		old.key_template = MemoryContextStrdup(fn_cxt, old.key_template);
	new = old;
	new.nkeys = nkeys;
	new.key_attnums = palloc(sizeof(int16) * nkeys);
	for (int i = 0; i < nkeys; i++)
		new.key_attnums[i] = attnums[i];
	(void) resolve_projection(rel, &req, nkeys, attnums, &new);
	/* not given: a new watch is JSON, an existing one keeps its format */
	if (req.format != NULL)
		new.hash_format = strcmp(req.format, WTC_FORMAT_HASH) == 0;
	/* not given: a new watch has the default layout, an existing one keeps its own */
	if (req.key_template != NULL)
		new.key_template = req.key_template[0] != '\0' ? req.key_template : NULL;
	if ((new.nproj >= 0 || new.hash_format || new.key_template != NULL) &&
		!(watched_has_column("exclude_columns") && watched_has_column("key_template")))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("watch options need wtcache 1.3"),
				 errhint("ALTER EXTENSION wtcache UPDATE.")));
	check_tags_in_projection(rel, req.tags, &new);
	check_hash_columns(rel, &new);
	if (new.key_template != NULL)
		check_key_template(rel, &new);
	rewrite = was_watched &&
		(old.hash_format != new.hash_format || !same_projection(rel, &old, &new) ||
		 (old.key_template == NULL) != (new.key_template == NULL) ||
		 (old.key_template != NULL && strcmp(old.key_template, new.key_template) != 0));
	install_capture_triggers(rel, qname, nkeys, attnums, req.tags);
	/*
	 * Keys Redis may still hold from an earlier watch of this table (unwatch
	 * without purge, a dropped and re-created extension) were not kept up to
	 * date meanwhile: reads must not serve them.  Queue the removal of the
	 * table's keys first; until it is done, reads of the table go to it.
	 */
	if (record_watch(rel, &req, nkeys, attnums, &new))
		wtcache_enqueue_whole_relation(rel);
	else
	{
		/* the templates may have changed: entries narrowed to them go */
		wtcache_invalidate_table_wide(RelationGetRelid(rel));
	}
	SPI_finish();

	/* backends' cached read settings of this table (read.c) go stale */
	CacheInvalidateRelcache(rel);
	relation_close(rel, NoLock);

	/* once the table is closed: ALTER TABLE refuses a table in use */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	enable_always(qname, "wtcache_capture_ins");
	enable_always(qname, "wtcache_capture_upd");
	enable_always(qname, "wtcache_capture_del");
	enable_always(qname, "wtcache_truncate");
	SPI_finish();
	if (get_rel_relkind(req.relid) == RELKIND_PARTITIONED_TABLE)
		wtcache_partition_truncate_triggers(req.relid, true);

	/*
	 * Another projection, format or key template: every value in Redis has
	 * the old shape, or every key the old name.  As resync() does, in this
	 * transaction: the removal of the table's keys, by the layout they have
	 * (the old template's, or the default one), then every row, read with
	 * the new options; until both are delivered reads of the table go to
	 * the table (they count per table), so no value of the old shape is
	 * served once this commits.  A new template's keys are removed too:
	 * what an earlier watch with it left there (unwatch without purge) was
	 * not kept up to date since, as a new watch's removal says below.
	 */
	if (rewrite)
	{
		char	   *table_key = wtcache_current_table_key(req.relid);
		bool		renamed = (old.key_template == NULL) != (new.key_template == NULL) ||
			(old.key_template != NULL && strcmp(old.key_template, new.key_template) != 0);

		wtcache_enqueue_whole_table(req.relid, table_key, old.key_template);
		if (renamed)
			wtcache_enqueue_whole_table(req.relid, table_key, new.key_template);
		(void) wtcache_enqueue_all_rows(req.relid);
	}
	else if (req.warm)
	{
		WtcProgressOp op = wtcache_progress_set_op(WTC_PROGRESS_WARM);

		(void) wtcache_enqueue_all_rows(req.relid);
		(void) wtcache_progress_set_op(op);
	}

	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(wtcache_unwatch);
Datum
wtcache_unwatch(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	bool		purge = PG_GETARG_BOOL(1);
	Relation	rel;
	char	   *qname;
	StringInfoData sql;
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	int			rc;
	char	   *key_template;

	rel = open_watchable(relid, ShareRowExclusiveLock, "unwatch");
	qname = qualified_name(rel);

	/*
	 * The keys to remove are named by the template it had; read before
	 * SPI_connect, so that it is in this function's memory, not in SPI's,
	 * which SPI_finish frees before the removal is queued.
	 */
	key_template = wtcache_current_key_template(relid);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = wtcache_spi_as_extension_owner("DELETE FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
										1, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "wtcache.watched delete failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not watched by wtcache", RelationGetRelationName(rel)),
				 errhint("SELECT table_name FROM wtcache.status lists the watched tables you can see.")));

	{
		static const char *const names[] = {
			"wtcache_capture_ins", "wtcache_capture_upd", "wtcache_capture_del", "wtcache_truncate"
		};

		initStringInfo(&sql);
		for (int t = 0; t < lengthof(names); t++)
		{
			resetStringInfo(&sql);
			appendStringInfo(&sql, "DROP TRIGGER IF EXISTS %s ON %s", names[t], qname);
			spi_exec_or_error(sql.data, SPI_OK_UTILITY);
		}
	}
	SPI_finish();
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		wtcache_partition_truncate_triggers(relid, false);

	if (purge)
		wtcache_enqueue_whole_table(relid, wtcache_current_table_key(relid), key_template);
	CacheInvalidateRelcache(rel);
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

/* Is wtcache installed here, its watch list still in place? */
static bool
watch_list_exists(void)
{
	Oid			nsp;

	if (!IsTransactionState() || !OidIsValid(get_extension_oid("wtcache", true)))
		return false;
	nsp = get_namespace_oid(WTCACHE_SCHEMA, true);
	return OidIsValid(nsp) && OidIsValid(get_relname_relid(WTCACHE_WATCHED_TABLE, nsp));
}

/*
 * Which of these tables are watched, allocated in the caller's memory
 * context; none while wtcache is not installed (or is being dropped).
 * One lookup as wtcache's owner: wtcache.watched is not readable by
 * PUBLIC, and callers run before any check of theirs (the DDL hooks).
 */
List *
wtcache_watched_among(List *relids)
{
	Oid			argtypes[1] = {OIDARRAYOID};
	Datum		values[1];
	Datum	   *oids;
	int			n = 0;
	ListCell   *lc;
	List	   *watched = NIL;
	MemoryContext outer = CurrentMemoryContext;

	if (relids == NIL || !watch_list_exists())
		return NIL;
	oids = palloc(sizeof(Datum) * list_length(relids));
	foreach(lc, relids)
		oids[n++] = ObjectIdGetDatum(lfirst_oid(lc));
	values[0] = PointerGetDatum(construct_array(oids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (wtcache_spi_as_extension_owner("SELECT rel::pg_catalog.oid FROM wtcache.watched "
									   "WHERE rel OPERATOR(pg_catalog.=) ANY ($1)",
									   1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r],
														   SPI_tuptable->tupdesc, 1, &isnull));
		MemoryContext spi = MemoryContextSwitchTo(outer);

		watched = lappend_oid(watched, relid);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return watched;
}

bool
wtcache_is_watched(Oid relid)
{
	return wtcache_watched_among(list_make1_oid(relid)) != NIL;
}

/*
 * The names of every live column of every watched table, ordered by table
 * and attribute number, in the current memory context: what a statement
 * that renames columns is compared against (ddl.c).  NIL when nothing is
 * watched.  Not read-only: that would read the catalogs in the snapshot of
 * the statement, from before the renames it made.
 */
List *
wtcache_watched_column_names(void)
{
	List	   *out = NIL;
	MemoryContext outer = CurrentMemoryContext;

	if (!watch_list_exists())
		return NIL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (wtcache_spi_as_extension_owner("SELECT w.rel::pg_catalog.oid, a.attnum, a.attname::pg_catalog.text "
									   "FROM wtcache.watched w JOIN pg_catalog.pg_attribute a "
									   "ON a.attrelid OPERATOR(pg_catalog.=) w.rel::pg_catalog.oid "
									   "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped "
									   "ORDER BY 1, 2",
									   0, NULL, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext spi = MemoryContextSwitchTo(outer);
		WatchedColumn *c = palloc(sizeof(WatchedColumn));

		c->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		c->attnum = DatumGetInt16(SPI_getbinval(tup, desc, 2, &isnull));
		c->name = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		out = lappend(out, c);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	return out;
}

/*
 * Does wtcache.watched have this column?  The library of a version runs
 * with the SQL objects of the version before until ALTER EXTENSION UPDATE
 * (README, Upgrades): the options 1.3 added are then absent, and every
 * watch has the defaults.
 */
static bool
watched_has_column(const char *name)
{
	Oid			nsp = get_namespace_oid(WTCACHE_SCHEMA, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(WTCACHE_WATCHED_TABLE, nsp) : InvalidOid;

	return OidIsValid(relid) && get_attnum(relid, name) != InvalidAttrNumber;
}

/*
 * Read a table's watch configuration into *config, allocated in the
 * current memory context.  False if the table is not watched.  Needs SPI.
 */
bool
wtcache_load_watch(Oid relid, WatchConfig *config)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	MemoryContext outer = CurrentMemoryContext;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	ArrayType  *arr;
	Datum		ttl;
	Datum		d;
	char	   *mode;
	WtcRights	rights;
	bool		options = watched_has_column("exclude_columns");
	bool		templates = options && watched_has_column("key_template");
	int			rc;

	/* wtcache's own table, read as its owner whoever asks (rights.c) */
	as_owner_begin(&rights);
	/* not read-only: a watch() earlier in this statement (warm => true) must be seen */
	rc = SPI_execute_plan(templates ?
						  wtcache_kept_plan("SELECT key_attnums, mode, ttl, tags, columns, exclude_columns, "
											"format OPERATOR(pg_catalog.=) '" WTC_FORMAT_HASH "', key_template "
											"FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
											1, argtypes) :
						  options ?
						  wtcache_kept_plan("SELECT key_attnums, mode, ttl, tags, columns, exclude_columns, "
											"format OPERATOR(pg_catalog.=) '" WTC_FORMAT_HASH "' "
											"FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
											1, argtypes) :
						  wtcache_kept_plan("SELECT key_attnums, mode, ttl, tags FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
											1, argtypes),
						  values, NULL, false, 1);
	as_owner_end(&rights);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	MemoryContextSwitchTo(outer);	/* SPI left its own current */
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	arr = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 1, &isnull));
	mode = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	ttl = SPI_getbinval(tup, desc, 3, &isnull);
	config->ttl_ms = isnull ? 0 : wtcache_interval_ms(DatumGetIntervalP(ttl));
	config->invalidate_mode = strcmp(mode, "invalidate") == 0;
	config->nkeys = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	config->key_attnums = (int16 *) ARR_DATA_PTR(arr);
	config->tags = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 4, &isnull));
	config->nproj = -1;
	config->proj_attnums = NULL;
	config->proj_exclude = false;
	config->hash_format = false;
	config->key_template = NULL;
	if (options)
	{
		d = SPI_getbinval(tup, desc, 7, &isnull);
		config->hash_format = !isnull && DatumGetBool(d);
	}
	if (templates)
	{
		d = SPI_getbinval(tup, desc, 8, &isnull);
		config->key_template = isnull ? NULL : TextDatumGetCString(d);
	}
	for (int col = 5; options && col <= 6; col++)
	{
		d = SPI_getbinval(tup, desc, col, &isnull);
		if (isnull)
			continue;
		{
			Datum	   *names;
			int			n;

			/* by name: a dropped column's name resolves to nothing */
			deconstruct_array(DatumGetArrayTypeP(d), NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR,
							  &names, NULL, &n);
			config->proj_attnums = palloc(sizeof(int16) * Max(n, 1));
			config->nproj = 0;
			for (int i = 0; i < n; i++)
			{
				AttrNumber	attnum = get_attnum(relid, NameStr(*DatumGetName(names[i])));

				if (attnum > 0)
					config->proj_attnums[config->nproj++] = attnum;
			}
			config->proj_exclude = (col == 6);
		}
	}
	return true;
}

/*
 * The columns a watched table's values hold, in table order: *valcols
 * gets their attnums (palloc'd) and the count is returned; -1 (and NULL)
 * when a JSON watch has no projection, every column, as row_to_json(t.*)
 * renders them.  A projection always keeps the key columns (watch() says
 * why); a listed column that was dropped was not resolved
 * (wtcache_load_watch), so a DROP COLUMN of it never breaks delivery.  A
 * hash's columns are always listed, and never one named "_v", the
 * version's field (keyspace.h): watch() refuses such a column, and one
 * added or renamed later stays out of the hash, from Redis and from the
 * table alike, so both give one row.
 */
int
wtcache_value_columns(Relation rel, const WatchConfig *config, int16 **valcols)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			n = 0;

	*valcols = NULL;
	if (config->nproj < 0 && !config->hash_format)
		return -1;
	*valcols = palloc(sizeof(int16) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		listed = false;
		bool		key = false;

		if (att->attisdropped)
			continue;
		if (config->hash_format && strcmp(NameStr(att->attname), WTC_VALUE_VERSION) == 0)
			continue;
		if (config->nproj < 0)
		{
			(*valcols)[n++] = att->attnum;
			continue;
		}
		for (int k = 0; k < config->nkeys && !key; k++)
			key = config->key_attnums[k] == att->attnum;
		for (int p = 0; p < config->nproj && !listed; p++)
			listed = config->proj_attnums[p] == att->attnum;
		if (key || listed != config->proj_exclude)
			(*valcols)[n++] = att->attnum;
	}
	return n;
}

/*
 * "the columns a, b, c", naming what a projected table's values hold (for
 * verify()'s notice); NULL without a projection.
 */
char *
wtcache_projection_desc(Relation rel, const WatchConfig *config)
{
	int16	   *valcols;
	int			n = wtcache_value_columns(rel, config, &valcols);
	StringInfoData buf;

	if (n < 0 || config->nproj < 0)
		return NULL;
	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																valcols[i] - 1)->attname)));
	return buf.data;
}

/*
 * The watch's key template, parsed and bound to its key columns by their
 * names now (palloc'd); NULL when it has none, or, with *err saying why,
 * when it no longer matches them (watch() checked it, and RENAME COLUMN
 * renames its placeholders: can't happen, but what reads a watch must not
 * fail for it).
 */
KeyTemplate *
wtcache_watch_key_template(Oid relid, const WatchConfig *config, KeyTemplateError *err)
{
	KeyTemplate *t;
	char	  **names;

	memset(err, 0, sizeof(*err));
	if (config->key_template == NULL)
		return NULL;
	t = wtcache_key_template_parse(config->key_template, err);
	if (t == NULL)
		return NULL;
	names = palloc(sizeof(char *) * Max(config->nkeys, 1));
	for (int i = 0; i < config->nkeys; i++)
	{
		names[i] = get_attname(relid, config->key_attnums[i], true);
		if (names[i] == NULL)
			names[i] = "";
	}
	if (!wtcache_key_template_bind(t, config->nkeys, names, err))
		return NULL;
	return t;
}

/*
 * The key template a table is watched with now, NULL if none (or if it is
 * not watched), in the caller's memory context.  Whoever queues the
 * removal of a table's keys names them by it (capture.c).
 */
char *
wtcache_current_key_template(Oid relid)
{
	MemoryContext outer = CurrentMemoryContext;
	WatchConfig config;
	char	   *result = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(outer);
	if (wtcache_load_watch(relid, &config))
		result = config.key_template;
	SPI_finish();
	MemoryContextSwitchTo(outer);
	return result;
}

/*
 * warm()'s predicate: one boolean expression, as in a WHERE clause, and
 * nothing else.  Parsed alone, as PL/pgSQL parses an expression, so that
 * the text cannot close the clause it is put in and add its own (a UNION,
 * a second statement, a comment that hides the closing parenthesis: those
 * are syntax errors here, or more than one expression); sub-selects are
 * refused, so it reads no other table.  Whatever it calls runs as the
 * caller (enqueue_rows), so functions it may not execute are refused by
 * PostgreSQL's own check, and columns are resolved against the table.
 */
static bool
predicate_has_sublink(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
		return true;
	return raw_expression_tree_walker(node, predicate_has_sublink, context);
}

static void
predicate_error_callback(void *arg)
{
	errcontext("predicate of wtcache.warm(): %s", (const char *) arg);
}

static void
check_warm_predicate(Relation rel, const char *predicate)
{
	ErrorContextCallback errcb;
	List	   *raw;
	SelectStmt *sel = NULL;
	const char *problem = NULL;

	errcb.callback = predicate_error_callback;
	errcb.arg = (void *) predicate;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	raw = raw_parser(predicate, RAW_PARSE_PLPGSQL_EXPR);
	error_context_stack = errcb.previous;

	if (list_length(raw) == 1 && IsA(linitial_node(RawStmt, raw)->stmt, SelectStmt))
		sel = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	if (sel == NULL || sel->op != SETOP_NONE)
		problem = "It is not an expression.";
	else if (sel->targetList == NIL)
		problem = "It is empty.";
	else if (list_length(sel->targetList) != 1 ||
			 linitial_node(ResTarget, sel->targetList)->name != NULL ||
			 sel->distinctClause || sel->intoClause || sel->fromClause ||
			 sel->whereClause || sel->groupClause || sel->havingClause ||
			 sel->windowClause || sel->sortClause || sel->limitOffset ||
			 sel->limitCount || sel->lockingClause || sel->withClause)
		problem = "It is more than one expression.";
	else if (predicate_has_sublink(linitial_node(ResTarget, sel->targetList)->val, NULL))
		problem = "It holds a sub-select.";
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid predicate for wtcache.warm() of \"%s\": %s",
						RelationGetRelationName(rel), predicate),
				 errdetail("%s", problem),
				 errhint("Give one boolean expression over the columns of \"%s\", as in a WHERE clause, without sub-selects, such as: last_seen > now() - interval '1 day'",
						 RelationGetRelationName(rel))));
}

/*
 * Queue every row of a watched table: the worker then pushes each row's
 * committed value with a fresh version, so this is safe while writers run.
 * The rows are read as the table's owner, restricted, every row whatever
 * row-level security would show the caller (rights.c); the key values are
 * rendered here, as the capture trigger renders them, so no cast runs.
 * The queue rows are written as wtcache's owner (capture.c).
 */
static uint64 enqueue_rows(Oid relid, const char *predicate);

uint64
wtcache_enqueue_all_rows(Oid relid)
{
	return enqueue_rows(relid, NULL);
}

/*
 * With a predicate (warm()'s, checked by check_warm_predicate), the rows
 * it selects, read as the caller, not as the owner: the predicate is the
 * caller's code and runs with the caller's rights, privileges and
 * row-level security, as the caller's own SELECT would (warm() needs the
 * table's ownership, so that SELECT is the owner's or a superuser's).
 * Nothing of it is kept: the worker reads the rows by key, as it reads
 * any change.
 */
static uint64
enqueue_rows(Oid relid, const char *predicate)
{
	Relation	rel;
	WatchConfig config;
	StringInfoData sql;
	WtcRights	rights;
	KeyColumn  *cols;
	SPIPlanPtr	plan;
	Portal		portal;
	uint64		nrows = 0;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext chunk_cxt;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(outer);
	if (!wtcache_load_watch(relid, &config))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not watched by wtcache", get_rel_name(relid)),
				 errhint("Call wtcache.watch() on it first.")));

	rel = relation_open(relid, AccessShareLock);
	cols = palloc(sizeof(KeyColumn) * config.nkeys);
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < config.nkeys; i++)
	{
		/* with a predicate, no alias: it names columns as the table does */
		wtcache_init_key_column(&cols[i], rel, config.key_attnums[i], outer);
		appendStringInfo(&sql, "%s%s%s", i ? ", " : "", predicate ? "" : "t.",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																config.key_attnums[i] - 1)->attname)));
	}
	appendStringInfo(&sql, " FROM %s%s%s", wtcache_only(relid), qualified_name(rel),
					 predicate ? "" : " t");
	if (predicate)
	{
		check_warm_predicate(rel, predicate);
		/* on lines of their own: a trailing -- comment ends with its line */
		appendStringInfo(&sql, " WHERE (\n%s\n)", predicate);
	}
	relation_close(rel, NoLock);

	chunk_cxt = AllocSetContextCreate(outer, "wtcache enqueue chunk", ALLOCSET_DEFAULT_SIZES);
	wtcache_check_tree_owner(relid);
	if (predicate == NULL)
	{
		wtcache_rights_enter_table_owner(&rights, relid);
		/* every row: the worker prefers index scans for itself (worker.c) */
		(void) set_config_option("enable_seqscan", "on", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		plan = SPI_prepare(sql.data, 0, NULL);
	}
	else
	{
		ErrorContextCallback errcb;

		errcb.callback = predicate_error_callback;
		errcb.arg = (void *) predicate;
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;
		plan = SPI_prepare(sql.data, 0, NULL);
		error_context_stack = errcb.previous;
	}
	if (plan == NULL)
		elog(ERROR, "wtcache: could not prepare the scan of \"%s\": %s",
			 get_rel_name(relid), SPI_result_code_string(SPI_result));
	/*
	 * Every row there is now: those this transaction wrote (a rewrite by
	 * ALTER TABLE) and those other sessions committed before this point,
	 * which a REPEATABLE READ transaction's snapshot may not see although
	 * they reached Redis in a shape this DDL changes.  Read-only, so SPI
	 * takes this snapshot rather than the transaction's.
	 */
	CommandCounterIncrement();
	PushActiveSnapshot(GetLatestSnapshot());
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	PopActiveSnapshot();
	{
		/* the planner's estimate, until every row is listed */
		PlannedStmt *ps = PortalGetPrimaryStmt(portal);

		wtcache_progress_begin(relid, ps && ps->planTree ? ps->planTree->plan_rows : -1);
	}
	for (;;)
	{
		Datum	   *elems;
		int			nelems = 0;
		uint64		n;

		SPI_cursor_fetch(portal, true, WTCACHE_BULK_CHUNK_KEYS);
		n = SPI_processed;
		if (n == 0)
			break;
		MemoryContextReset(chunk_cxt);
		MemoryContextSwitchTo(chunk_cxt);
		elems = palloc(sizeof(Datum) * n * config.nkeys);
		for (uint64 r = 0; r < n; r++)
		{
			int			first = nelems;

			for (int c = 0; c < config.nkeys; c++)
			{
				bool		isnull;
				Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1, &isnull);

				/* a key column that lost NOT NULL: such a row has no key */
				if (isnull)
				{
					nelems = first;
					break;
				}
				elems[nelems++] = CStringGetTextDatum(wtcache_render_key_value(&cols[c], d));
			}
		}
		SPI_freetuptable(SPI_tuptable);
		if (nelems > 0)
			wtcache_queue_insert_per_table(relid, elems, nelems, config.nkeys);
		nrows += nelems / config.nkeys;
		MemoryContextSwitchTo(outer);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	if (predicate == NULL)
		wtcache_rights_leave(&rights);
	SPI_finish();
	MemoryContextSwitchTo(outer);
	MemoryContextDelete(chunk_cxt);
	wtcache_progress_listed(relid);

	wtcache_note_enqueued();
	return nrows;
}

/*
 * Queue the removal of the table's keys under its current name.  A table
 * dropped meanwhile (by a concurrent DROP TABLE) is left to the drop
 * handler, which removes its keys.
 */
void
wtcache_enqueue_table_removal(Oid relid)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);

	if (rel == NULL)
		return;
	wtcache_enqueue_whole_relation(rel);
	relation_close(rel, NoLock);
}

/*
 * Queue the removal of the table's keys, then every row: what resync
 * repairs includes keys of rows that no longer exist.  Reads of the table
 * go to the table until both are delivered (both count per table).
 */
uint64
wtcache_resync_table(Oid relid)
{
	wtcache_enqueue_table_removal(relid);
	return wtcache_enqueue_all_rows(relid);
}

/*
 * wtcache_resync_table() (purge_first) or wtcache_enqueue_all_rows(), or,
 * when the table's rows cannot be read as its
 * owner (its owner lost SELECT, its policies apply to its owner...), the
 * removal of its keys alone: nothing older than the table stays in Redis,
 * and reads fill the keys again from the table.  For the paths that must
 * not fail because of one table: the DDL requeue (PostgreSQL accepts the
 * DDL on an unwatched table) and the worker's resync after data loss
 * (which removed every key already: no purge_first, and no removal).
 * *failure: the reason, or NULL.
 */
typedef struct RequeueArgs
{
	Oid			relid;
	bool		purge_first;
	uint64		rows;
} RequeueArgs;

static void
requeue_table(void *arg)
{
	RequeueArgs *a = (RequeueArgs *) arg;

	a->rows = a->purge_first ? wtcache_resync_table(a->relid) : wtcache_enqueue_all_rows(a->relid);
}

uint64
wtcache_resync_table_or_purge(Oid relid, bool purge_first, char **failure)
{
	RequeueArgs a = {relid, purge_first, 0};

	*failure = NULL;
	if (!wtcache_run_in_subxact(requeue_table, &a, failure) && purge_first)
		wtcache_enqueue_table_removal(relid);
	return a.rows;
}

PG_FUNCTION_INFO_V1(wtcache_resync);
Datum
wtcache_resync(PG_FUNCTION_ARGS)
{
	uint64		total = 0;
	WtcProgressOp op = wtcache_progress_set_op(WTC_PROGRESS_RESYNC);

	if (!PG_ARGISNULL(0))
	{
		Relation	rel = open_watchable(PG_GETARG_OID(0), AccessShareLock, "resync");

		relation_close(rel, NoLock);
		total = wtcache_resync_table(PG_GETARG_OID(0));
	}
	else
	{
		List	   *rels = NIL;
		ListCell   *lc;
		MemoryContext outer = CurrentMemoryContext;
		int			rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = wtcache_spi_as_extension_owner("SELECT rel::pg_catalog.oid FROM wtcache.watched ORDER BY rel",
											0, NULL, NULL, NULL, true, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "wtcache.watched lookup failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

			/* every table the caller owns; superusers own them all */
			if (pg_class_ownercheck(relid, GetUserId()))
			{
				/* the list must outlive SPI_finish */
				MemoryContext spi = MemoryContextSwitchTo(outer);

				rels = lappend_oid(rels, relid);
				MemoryContextSwitchTo(spi);
			}
		}
		SPI_finish();
		foreach(lc, rels)
			total += wtcache_resync_table(lfirst_oid(lc));
	}
	(void) wtcache_progress_set_op(op);
	ereport(NOTICE,
			(errmsg("wtcache: " UINT64_FORMAT " rows queued for Redis, after the removal of the keys there", total),
			 errdetail("The column pending of wtcache.status shows how many are left; wtcache.wait() waits for them.")));
	PG_RETURN_INT64((int64) total);
}

/*
 * wtcache.warm(rel, predicate default null): push every existing row, or
 * those the predicate selects; keys in Redis stay.  The one-argument form
 * of 1.3 and before calls this with one argument.
 */
PG_FUNCTION_INFO_V1(wtcache_warm);
Datum
wtcache_warm(PG_FUNCTION_ARGS)
{
	Relation	rel;
	uint64		rows;
	char	   *predicate = NULL;
	WtcProgressOp op;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_NARGS() > 1 && !PG_ARGISNULL(1))
		predicate = text_to_cstring(PG_GETARG_TEXT_PP(1));
	rel = open_watchable(PG_GETARG_OID(0), AccessShareLock, "warm");
	relation_close(rel, NoLock);
	op = wtcache_progress_set_op(WTC_PROGRESS_WARM);
	rows = enqueue_rows(PG_GETARG_OID(0), predicate);
	(void) wtcache_progress_set_op(op);
	ereport(NOTICE,
			(errmsg("wtcache: " UINT64_FORMAT " rows of \"%s\" queued for Redis", rows,
					get_rel_name(PG_GETARG_OID(0))),
			 errdetail("The column pending of wtcache.status shows how many are left; wtcache.wait() waits for them.")));
	PG_RETURN_INT64((int64) rows);
}

/*
 * After DDL that may have dropped the index a watch relies on: warn when
 * no unique index covers the key any more.  Capture goes on (refusing the
 * DDL would break the user's migration), but two rows could then share a
 * key and its order of versions is no longer guaranteed.
 */
bool
wtcache_key_enforced(Oid relid)
{
	WatchConfig config;
	Relation	rel;
	AttrNumber	attnums[INDEX_MAX_KEYS];
	bool		enforced;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!wtcache_load_watch(relid, &config))
	{
		SPI_finish();
		return true;
	}
	for (int i = 0; i < config.nkeys; i++)
		attnums[i] = config.key_attnums[i];
	SPI_finish();
	rel = relation_open(relid, AccessShareLock);
	enforced = has_unique_index_on(rel, config.nkeys, attnums);
	relation_close(rel, NoLock);
	return enforced;
}

void
wtcache_warn_if_key_unenforced(Oid relid)
{
	if (!wtcache_key_enforced(relid))
		ereport(WARNING,
				(errmsg("the key of watched table \"%s\" is no longer enforced by a unique index",
						get_rel_name(relid)),
				 errdetail("wtcache names rows in Redis by their key and orders a key's changes by its row lock; without a unique index two rows may share a key."),
				 errhint("Create a unique index on the key columns again, or run wtcache.unwatch() and watch the table with another key.")));
}

/*
 * Does the table's watch capture this column (a key column, or one a tag
 * template names), so that the capture triggers' WHEN clause names it?
 */
bool
wtcache_column_is_captured(Oid relid, const char *colname)
{
	WatchConfig config;
	AttrNumber	attnum = get_attnum(relid, colname);
	bool		captured = false;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	   *braced = psprintf("{%s}", colname);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (wtcache_load_watch(relid, &config))
	{
		for (int i = 0; i < config.nkeys && !captured; i++)
			captured = config.key_attnums[i] == attnum;
		deconstruct_array(config.tags, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n && !captured; i++)
			captured = !nulls[i] && strstr(TextDatumGetCString(elems[i]), braced) != NULL;
	}
	SPI_finish();
	return captured;
}

/*
 * ALTER TABLE ... RENAME COLUMN of a watched table (ddl.c, in the DDL's
 * transaction, before its requeue).  Everything the watch says by name
 * follows the rename: the key columns, the columns of the tag templates
 * (whose capture, by attribute number, already follows), and the
 * projection, so that a column kept out stays out under its new name.
 * The names are what a restore maps back to attribute numbers
 * (wtcache_watch_restored), and what query() reads templates by.
 */
void
wtcache_watch_rename_column(Oid relid, const char *oldname, const char *newname)
{
	Oid			argtypes[3] = {OIDOID, NAMEOID, NAMEOID};
	Datum		values[3];
	NameData	oldn;
	NameData	newn;

	namestrcpy(&oldn, oldname);
	namestrcpy(&newn, newname);
	values[0] = ObjectIdGetDatum(relid);
	values[1] = NameGetDatum(&oldn);
	values[2] = NameGetDatum(&newn);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (wtcache_spi_as_extension_owner("UPDATE wtcache.watched SET "
									   "key_columns = pg_catalog.array_replace(key_columns, $2, $3), "
									   "tags = ARRAY(SELECT pg_catalog.replace(t.tmpl, "
									   "'{' OPERATOR(pg_catalog.||) $2::pg_catalog.text OPERATOR(pg_catalog.||) '}', "
									   "'{' OPERATOR(pg_catalog.||) $3::pg_catalog.text OPERATOR(pg_catalog.||) '}') "
									   "FROM pg_catalog.unnest(tags) WITH ORDINALITY AS t(tmpl, ord) ORDER BY t.ord) "
									   "WHERE rel OPERATOR(pg_catalog.=) $1",
									   3, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wtcache.watched update failed");
	if (watched_has_column("exclude_columns") &&
		wtcache_spi_as_extension_owner("UPDATE wtcache.watched SET "
									   "columns = pg_catalog.array_replace(columns, $2, $3), "
									   "exclude_columns = pg_catalog.array_replace(exclude_columns, $2, $3) "
									   "WHERE rel OPERATOR(pg_catalog.=) $1 "
									   "AND (columns IS NOT NULL OR exclude_columns IS NOT NULL)",
									   3, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wtcache.watched update failed");
	/* a placeholder is the only brace of a template: {old} is one */
	if (watched_has_column("key_template") &&
		wtcache_spi_as_extension_owner("UPDATE wtcache.watched SET "
									   "key_template = pg_catalog.replace(key_template, "
									   "'{' OPERATOR(pg_catalog.||) $2::pg_catalog.text OPERATOR(pg_catalog.||) '}', "
									   "'{' OPERATOR(pg_catalog.||) $3::pg_catalog.text OPERATOR(pg_catalog.||) '}') "
									   "WHERE rel OPERATOR(pg_catalog.=) $1 AND key_template IS NOT NULL",
									   3, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wtcache.watched update failed");
	SPI_finish();
}

/*
 * A watched table's capture triggers re-created by pg_restore (ddl.c).
 * The watch came back as data, with the attribute numbers of the dumped
 * table, and a table that had dropped columns is renumbered by the
 * restore: map the key columns' names, which the dump kept, to the
 * restored table's numbers.  Capture and the worker find the key by
 * number, and a number that now names another column would make every
 * write to the table fail (or read the wrong column).
 */
void
wtcache_watch_restored(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (wtcache_spi_as_extension_owner("UPDATE wtcache.watched w SET key_attnums = n.attnums "
									   "FROM (SELECT pg_catalog.array_agg(a.attnum ORDER BY k.ord) AS attnums, "
									   "pg_catalog.count(a.attnum) AS found, pg_catalog.count(*) AS wanted "
									   "FROM wtcache.watched ww, pg_catalog.unnest(ww.key_columns) WITH ORDINALITY AS k(name, ord) "
									   "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) $1 "
									   "AND a.attname OPERATOR(pg_catalog.=) k.name AND NOT a.attisdropped "
									   "WHERE ww.rel OPERATOR(pg_catalog.=) $1) n "
									   "WHERE w.rel OPERATOR(pg_catalog.=) $1 AND n.found OPERATOR(pg_catalog.=) n.wanted "
									   "AND w.key_attnums IS DISTINCT FROM n.attnums",
									   1, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "wtcache.watched update failed");
	SPI_finish();
}
