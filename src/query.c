/*-------------------------------------------------------------------------
 * query.c
 *		Cached query results: wtcache.query(), wtcache.query_key().
 *
 * A result is cached in a Redis hash
 *		<prefix>{<database>}:query:<sha256 of role, search_path, SQL, params>
 * with fields rows (a JSON array of the rows), tags (a JSON array of the
 * tag keys it depends on) and versions (their stamps when it was computed,
 * joined by ",").  It depends on the table tag of every watched table the
 * query reads, found in its own range table after view expansion, and on
 * the tags the caller names; a table the query restricts by equality on a
 * tag template's columns is depended on through the rendered template tags
 * and its table-wide tag instead of its table tag (narrow.c).  An entry is
 * valid while every one of its tag keys still holds the stamp it recorded:
 * invalidation is one SET per tag, however many entries depend on it
 * (tags.c).
 *
 * Never stale, by the same argument as cached row reads (read.c):
 *	1. the pending filter says no change to the query's tables and no
 *	   invalidation of its tags is on its way; otherwise the query runs
 *	   against the tables and nothing is cached.  For a narrowed table,
 *	   "a change to it" is a change to a row it reads: every such change
 *	   renders one of its template tags (the old or the new row has the
 *	   bound value), and its queue row counts under that tag; what changes
 *	   rows without rendering them (TRUNCATE, resync, requeue, partition
 *	   DDL, a hold) counts under the table's own counter, and an
 *	   invalidate() of the table tag under that tag's name: all checked;
 *	2. one script reads the tags' stamps and returns the entry if it
 *	   recorded exactly those; else it takes the lease (stampede
 *	   protection) and returns the stamps it read;
 *	3. the query runs with a snapshot taken after step 2, and the fill
 *	   script stores the result only if the stamps are still those of
 *	   step 2.
 * A change committed before step 1 is delivered (its tags stamped: the
 * table's, its rows' template tags, and for the kinds above the table-wide
 * tag) before the filter lets step 1 pass, so the stamps of step 2 are
 * newer than it;
 * a change stamped after step 2 makes step 3 refuse, or, stamped after the
 * fill, makes the entry invalid.  So a fill never stores a result older
 * than an invalidation it missed.
 *
 * Entries are per role (the key includes the current user), privileges
 * (SELECT on what it reads, EXECUTE on what it calls) are checked on every
 * call, hits included, and queries over tables where
 * row-level security applies to the caller are never cached: policies may
 * depend on more than the role.
 *
 * An entry is shared by every session of its role, so a query whose result
 * could differ between two of them is refused (a STABLE function that
 * reads a setting, the clock, the client, privileges; a temporary table:
 * see check_session_independent), and the key holds what makes two
 * sessions read, compute or render the same query differently: the
 * analysed query with its constants, the parameters' values and the
 * settings in session_key_settings (TimeZone, DateStyle...).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "keys.h"
#include "narrow.h"
#include "pending.h"
#include "push.h"
#include "query.h"
#include "redis.h"
#include "rights.h"
#include "settings.h"
#include "shmem.h"
#include "stats.h"
#include "watch.h"
#include "tags.h"
#include "keyspace.h"
#include "session.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parse_type.h"
#include "parser/parser.h"
#include "parser/scansup.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "utils/varlena.h"

int			wtcache_query_ttl_s = 3600;
int			wtcache_query_max_kb = 1024;

/*
 * KEYS: entry, lease, clock, generation marker, tag keys...  ARGV: tags
 * JSON, lease token, lease ms, tag key TTL s, the version the worker knows
 * Redis acknowledged.  A tag key that is missing gets a new stamp (which no
 * entry recorded).
 * {1, rows} | {2, versions} (lease is ours) | {3, versions} (someone
 * else's) | {4, ''} (Redis lost data: a failover to a replica that missed
 * writes, a restart from an old snapshot; entries may be older than their
 * tags' invalidations, until the worker resyncs)
 */
static const char query_read_script[] =
WTCACHE_LUA_NEW_STAMP
"if (tonumber(redis.call('GET', KEYS[4]) or '') or -1) < tonumber(ARGV[5]) then return {4, ''} end\n"
"local stamps = {}\n"
"for i = 5, #KEYS do\n"
"  local v = redis.call('GET', KEYS[i])\n"
"  if not v then v = new_stamp(KEYS[3]); redis.call('SET', KEYS[i], v, 'EX', ARGV[4]) end\n"
"  stamps[#stamps + 1] = v\n"
"end\n"
"local versions = table.concat(stamps, " WTC_LUA_STR(WTC_QUERY_VERSIONS_SEP) ")\n"
"local e = redis.call('HMGET', KEYS[1], " WTC_LUA_STR(WTC_QUERY_VERSIONS) ", "
WTC_LUA_STR(WTC_QUERY_TAGS) ", " WTC_LUA_STR(WTC_QUERY_ROWS) ")\n"
"if e[1] then\n"
"  if e[1] == versions and e[2] == ARGV[1] and e[3] then return {1, e[3]} end\n"
"  redis.call('DEL', KEYS[1])\n"
"end\n"
"if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {2, versions} end\n"
"return {3, versions}\n";

/*
 * KEYS: entry, lease, tag keys...  ARGV: versions, tags JSON, rows ("" =
 * just give the lease back), ttl ms, lease token.  1 stored, 0 refused.
 */
static const char query_fill_script[] =
"local stamps = {}\n"
"for i = 3, #KEYS do\n"
"  local v = redis.call('GET', KEYS[i])\n"
"  if not v then stamps = nil; break end\n"
"  stamps[#stamps + 1] = v\n"
"end\n"
"local ok = 0\n"
"if ARGV[3] ~= '' and stamps and table.concat(stamps, " WTC_LUA_STR(WTC_QUERY_VERSIONS_SEP) ") == ARGV[1] then\n"
"  redis.call('DEL', KEYS[1])\n"
"  redis.call('HSET', KEYS[1], " WTC_LUA_STR(WTC_QUERY_ROWS) ", ARGV[3], "
WTC_LUA_STR(WTC_QUERY_TAGS) ", ARGV[2], " WTC_LUA_STR(WTC_QUERY_VERSIONS) ", ARGV[1])\n"
"  redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
"  ok = 1\n"
"end\n"
"if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end\n"
"return ok\n";

SessionScript wtcache_query_read_script = {query_read_script};
SessionScript wtcache_query_fill_script = {query_fill_script};

/* What a query reads and depends on. */
typedef struct QueryPlan
{
	char	   *sql;
	int			nparams;
	Oid		   *paramtypes;
	Datum	   *paramvalues;
	char	   *paramnulls;		/* SPI style: 'n' or ' ' */
	List	   *relids;			/* base tables read, each once */
	List	   *rtes;			/* their range-table entries, at any depth */
	bool		rls;			/* row-level security applies somewhere */
	bool		vouched;		/* calls a wtcache.query_safe_functions entry */
	List	   *watched;		/* the watched ones among relids */
	List	   *unwatched;
	List	   *rte_watched;	/* per entry of rtes: its watched table, or 0 */
	List	   *narrowed;		/* NarrowedTable: watched tables depended on
								 * through template tags, not the table tag */
	List	   *tags;			/* tag names it depends on (char *) */
	char	  **tag_keys;		/* their Redis keys, sorted */
	int			ntags;
	char	   *tags_json;		/* JSON array of tag_keys */
	char	   *key;			/* the entry's Redis key */
	char	   *lease_key;
	char	   *clock_key;		/* for stamps of tags found missing */
	char	   *marker_key;
} QueryPlan;

/* A hit runs nothing, so EXECUTE on the query's functions is checked here. */
static bool
check_execute(Oid funcid, void *context)
{
	if (pg_proc_aclcheck(funcid, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(funcid));
	return false;
}

static bool
collect_relations(Node *node, QueryPlan *qp)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		Query	   *q = (Query *) node;
		ListCell   *lc;

		if (q->hasRowSecurity)
			qp->rls = true;
		foreach(lc, q->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

			if (rte->rtekind == RTE_RELATION && rte->relkind != RELKIND_VIEW)
			{
				qp->relids = list_append_unique_oid(qp->relids, rte->relid);
				qp->rtes = lappend(qp->rtes, rte);
			}
		}
		/* the executor's own check: views as their owner, columns too */
		(void) ExecCheckRTPerms(q->rtable, true);
		return query_tree_walker(q, collect_relations, qp, 0);
	}
	(void) check_functions_in_node(node, check_execute, NULL);
	return expression_tree_walker(node, collect_relations, qp);
}

/*
 * ---- What may be cached: results that are the same for every session ----
 *
 * An entry is shared by every session of a role, so a query is cached only
 * if its result depends on nothing else than what the key names: the role,
 * the database, the search_path, the analysed query (constants included),
 * the parameters' values, the settings in session_key_settings below, and
 * the tables it reads (whose changes invalidate it).  Everything a query
 * can call is checked, through views (which the rewriter has expanded) and
 * sub-selects:
 *
 *	- IMMUTABLE functions: fine.  (An IMMUTABLE function that does read
 *	  session state is already a bug that breaks indexes; it is trusted.)
 *	- VOLATILE functions: refused above (contain_volatile_functions).
 *	- STABLE functions: refused, unless in the allow-list below or listed
 *	  by a superuser in wtcache.query_safe_functions.  An allow-list and not
 *	  a deny-list: PostgreSQL has some 600 STABLE built-ins, extensions add
 *	  more every release, and missing one from a deny-list would leak rows
 *	  silently, while missing one from an allow-list only refuses a query
 *	  with a message that says how to pass the value as a parameter or mark
 *	  the function.  A STABLE function in SQL or PL/pgSQL is opaque (its
 *	  body, inlinable or not, reads what it likes: current_setting(), the
 *	  clock, tables whose changes would not invalidate the entry), so only
 *	  the DBA can vouch for it.
 *	- SQLValueFunction: the clock (CURRENT_DATE, CURRENT_TIMESTAMP,
 *	  LOCALTIME...), SESSION_USER and CURRENT_SCHEMA (which can name the
 *	  session's own temporary schema) are refused; CURRENT_USER, USER,
 *	  CURRENT_ROLE are the role the entry is kept for, and CURRENT_CATALOG
 *	  the database: both are in the key.
 *	- Temporary tables are private to a session: refused.
 *	- Values are rendered (to JSON, to text by a cast, by concat(), format(),
 *	  to_json()...) with their type's output function: that too must be
 *	  IMMUTABLE or allowed, through arrays, composites, ranges and domains.
 *
 * Refused, not run uncached: a cache that quietly stops caching hides the
 * problem until the database is under load, and a refusal names the
 * function and the way out.  Queries under row-level security are the
 * exception: they are never cached anyway (see query_bypass_reason), so
 * their policies may read what they like.
 *
 * What the CURRENT_USER of a query is needs no check: the query runs as
 * GetUserId() of the call, which the key holds.
 */

/*
 * Settings that change how the same query text and parameters are read,
 * computed or rendered, so part of the key: two sessions that differ in one
 * of them get two entries, each rendered as its session renders it.  The
 * allow-list below admits STABLE functions whose only dependence on the
 * session is through these (and the search_path and role, also keyed).
 */
static const char *const session_key_settings[] = {
	"DateStyle",				/* date/time input and output */
	"IntervalStyle",
	"TimeZone",
	"timezone_abbreviations",
	"extra_float_digits",		/* float output */
	"bytea_output",
	"lc_monetary",				/* money, to_char */
	"lc_numeric",
	"lc_time",
	"xmlbinary",
	"xmloption",
	"default_text_search_config",	/* to_tsvector(text)... */
	"quote_all_identifiers",	/* quote_ident() */
	"array_nulls",				/* array input */
	"standard_conforming_strings",
	"transform_null_equals",
	"gin_fuzzy_search_limit",	/* truncates GIN index scans */
};

/*
 * Built-in STABLE functions whose result depends only on their arguments
 * and on what the key holds (the settings above, the role, the database).
 * Most are STABLE because of TimeZone, DateStyle, IntervalStyle, lc_* or
 * default_text_search_config; the ones that render arguments of any type
 * (concat, format, to_json...) also get their arguments' types checked.
 * Left out on purpose: the clock (now(), age(timestamp), the date/time
 * input functions, which read 'now' and 'today' at run time), settings
 * (current_setting), the client and the backend (inet_client_addr,
 * pg_backend_pid, txid_current), privileges and roles (has_*_privilege,
 * pg_has_role: a GRANT does not invalidate an entry), the catalogs (reg*
 * types, to_regclass, pg_get_*, format_type: DDL does not invalidate an
 * entry, and visibility depends on the session's temporary schema),
 * statistics, and the functions that run input functions of any type
 * (record_in, array_in, json_populate_record).  enum_in and enum_out read
 * the enum's labels, which only DDL (ALTER TYPE ... RENAME VALUE) changes:
 * allowed, as enum columns are everywhere.
 */
static const Oid session_safe_builtins[] = {
	/* date and time, under TimeZone, DateStyle, IntervalStyle, lc_time */
	F_DATE_OUT, F_TIMESTAMP_OUT, F_TIMESTAMPTZ_OUT, F_INTERVAL_IN, F_INTERVAL_OUT,
	F_DATE_PART_TEXT_TIMESTAMPTZ, F_EXTRACT_TEXT_TIMESTAMPTZ,
	F_TIMESTAMPTZ_DATE, F_TIMESTAMPTZ_DATE_TIME, F_DATE_TIMESTAMPTZ,
	F_TIMESTAMPTZ_PL_INTERVAL, F_TIMESTAMPTZ_MI_INTERVAL, F_INTERVAL_PL_TIMESTAMPTZ,
	F_DATE_TRUNC_TEXT_TIMESTAMPTZ, F_DATE_TRUNC_TEXT_TIMESTAMPTZ_TEXT,
	F_TIMETZ_TIMESTAMPTZ, F_TIME_TIMESTAMPTZ, F_TIMESTAMP_TIMESTAMPTZ,
	F_TIMESTAMPTZ_TIMESTAMP, F_TIMEZONE_TEXT_TIMETZ, F_TIMETZ_TIME,
	F_IN_RANGE_TIMESTAMPTZ_TIMESTAMPTZ_INTERVAL_BOOL_BOOL,
	F_TO_CHAR_TIMESTAMPTZ_TEXT, F_TO_CHAR_TIMESTAMP_TEXT, F_TO_CHAR_INTERVAL_TEXT,
	F_TO_TIMESTAMP_TEXT_TEXT, F_TO_DATE,
	F_MAKE_TIMESTAMPTZ_INT4_INT4_INT4_INT4_INT4_FLOAT8,
	F_MAKE_TIMESTAMPTZ_INT4_INT4_INT4_INT4_INT4_FLOAT8_TEXT,
	F_GENERATE_SERIES_TIMESTAMPTZ_TIMESTAMPTZ_INTERVAL,
	F_OVERLAPS_TIMESTAMPTZ_TIMESTAMPTZ_TIMESTAMPTZ_INTERVAL,
	F_OVERLAPS_TIMESTAMPTZ_INTERVAL_TIMESTAMPTZ_INTERVAL,
	F_OVERLAPS_TIMESTAMPTZ_INTERVAL_TIMESTAMPTZ_TIMESTAMPTZ,
	F_DATE_LT_TIMESTAMPTZ, F_DATE_LE_TIMESTAMPTZ, F_DATE_EQ_TIMESTAMPTZ,
	F_DATE_GT_TIMESTAMPTZ, F_DATE_GE_TIMESTAMPTZ, F_DATE_NE_TIMESTAMPTZ,
	F_DATE_CMP_TIMESTAMPTZ,
	F_TIMESTAMPTZ_LT_DATE, F_TIMESTAMPTZ_LE_DATE, F_TIMESTAMPTZ_EQ_DATE,
	F_TIMESTAMPTZ_GT_DATE, F_TIMESTAMPTZ_GE_DATE, F_TIMESTAMPTZ_NE_DATE,
	F_TIMESTAMPTZ_CMP_DATE,
	F_TIMESTAMP_LT_TIMESTAMPTZ, F_TIMESTAMP_LE_TIMESTAMPTZ, F_TIMESTAMP_EQ_TIMESTAMPTZ,
	F_TIMESTAMP_GT_TIMESTAMPTZ, F_TIMESTAMP_GE_TIMESTAMPTZ, F_TIMESTAMP_NE_TIMESTAMPTZ,
	F_TIMESTAMP_CMP_TIMESTAMPTZ,
	F_TIMESTAMPTZ_LT_TIMESTAMP, F_TIMESTAMPTZ_LE_TIMESTAMP, F_TIMESTAMPTZ_EQ_TIMESTAMP,
	F_TIMESTAMPTZ_GT_TIMESTAMP, F_TIMESTAMPTZ_GE_TIMESTAMP, F_TIMESTAMPTZ_NE_TIMESTAMP,
	F_TIMESTAMPTZ_CMP_TIMESTAMP,
	F_JSONB_PATH_EXISTS_TZ, F_JSONB_PATH_MATCH_TZ, F_JSONB_PATH_QUERY_TZ,
	F_JSONB_PATH_QUERY_ARRAY_TZ, F_JSONB_PATH_QUERY_FIRST_TZ,
	/* numbers and money, under lc_numeric and lc_monetary */
	F_TO_CHAR_NUMERIC_TEXT, F_TO_CHAR_INT4_TEXT, F_TO_CHAR_INT8_TEXT,
	F_TO_CHAR_FLOAT4_TEXT, F_TO_CHAR_FLOAT8_TEXT, F_TO_NUMBER,
	F_CASH_IN, F_CASH_OUT, F_NUMERIC_MONEY, F_MONEY_NUMERIC, F_MONEY_INT4, F_MONEY_INT8,
	/* rendering values of any type: their types are checked too */
	F_CONCAT, F_CONCAT_WS, F_FORMAT_TEXT_ANY, F_FORMAT_TEXT,
	F_ARRAY_TO_STRING_ANYARRAY_TEXT, F_ARRAY_TO_STRING_ANYARRAY_TEXT_TEXT,
	F_QUOTE_LITERAL_ANYELEMENT, F_QUOTE_NULLABLE_ANYELEMENT, F_TEXTANYCAT, F_ANYTEXTCAT,
	F_TO_JSON, F_TO_JSONB, F_ROW_TO_JSON_RECORD, F_ROW_TO_JSON_RECORD_BOOL,
	F_ARRAY_TO_JSON_ANYARRAY, F_ARRAY_TO_JSON_ANYARRAY_BOOL,
	F_JSON_AGG, F_JSONB_AGG, F_JSON_OBJECT_AGG, F_JSONB_OBJECT_AGG,
	F_JSON_BUILD_ARRAY_ANY, F_JSON_BUILD_ARRAY_, F_JSON_BUILD_OBJECT_ANY, F_JSON_BUILD_OBJECT_,
	F_JSONB_BUILD_ARRAY_ANY, F_JSONB_BUILD_ARRAY_, F_JSONB_BUILD_OBJECT_ANY, F_JSONB_BUILD_OBJECT_,
	F_ENUM_IN, F_ENUM_OUT,
	/* text search with the default configuration */
	F_TO_TSVECTOR_TEXT, F_TO_TSQUERY_TEXT, F_PLAINTO_TSQUERY_TEXT,
	F_PHRASETO_TSQUERY_TEXT, F_WEBSEARCH_TO_TSQUERY_TEXT,
	F_TO_TSVECTOR_JSONB, F_TO_TSVECTOR_JSON,
	F_JSONB_TO_TSVECTOR_JSONB_JSONB, F_JSON_TO_TSVECTOR_JSON_JSONB,
	F_TS_HEADLINE_TEXT_TSQUERY_TEXT, F_TS_HEADLINE_TEXT_TSQUERY,
	F_TS_HEADLINE_JSONB_TSQUERY_TEXT, F_TS_HEADLINE_JSONB_TSQUERY,
	F_TS_HEADLINE_JSON_TSQUERY_TEXT, F_TS_HEADLINE_JSON_TSQUERY,
	F_TS_MATCH_TT, F_TS_MATCH_TQ,
	/* the role and the database, both in the key */
	F_CURRENT_USER, F_GETPGUSERNAME, F_CURRENT_DATABASE, F_GETDATABASEENCODING,
	F_CONVERT_FROM, F_CONVERT_TO, F_CONVERT, F_LENGTH_BYTEA_NAME,
	/* XML, under xmloption */
	F_XML_IN, F_XML, F_XML_IS_WELL_FORMED,
};

char	   *wtcache_query_safe_functions = NULL;

/*
 * Split wtcache.query_safe_functions into its entries: commas outside
 * parentheses and double quotes separate them.  Entries are trimmed; the
 * string is modified.
 */
static List *
split_safe_functions(char *s)
{
	List	   *entries = NIL;
	int			depth = 0;
	bool		quoted = false;
	char	   *start = s;

	for (char *p = s;; p++)
	{
		if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == '(')
			depth++;
		else if (!quoted && *p == ')')
			depth--;
		if (*p == '\0' || (*p == ',' && !quoted && depth == 0))
		{
			bool		last = (*p == '\0');
			char	   *end = p;

			while (start < end && scanner_isspace(*start))
				start++;
			while (end > start && scanner_isspace(end[-1]))
				end--;
			*end = '\0';
			entries = lappend(entries, start);
			if (last)
				break;
			start = p + 1;
		}
	}
	return entries;
}

/*
 * The schema-qualified name of an entry ("schema.name" before any "("),
 * or NIL if it is not one.  *args: what is inside the parentheses, or NULL.
 */
static List *
safe_function_name(const char *entry, char **args)
{
	char	   *name = pstrdup(entry);
	char	   *paren = NULL;
	bool		quoted = false;
	List	   *parts;

	*args = NULL;
	for (char *p = name; *p; p++)
	{
		if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == '(')
		{
			paren = p;
			break;
		}
	}
	if (paren != NULL)
	{
		size_t		len = strlen(paren);

		if (len < 2 || paren[len - 1] != ')')
			return NIL;
		paren[len - 1] = '\0';
		*args = pstrdup(paren + 1);
		*paren = '\0';
	}
	if (!SplitIdentifierString(name, '.', &parts) || list_length(parts) != 2)
		return NIL;
	return parts;
}

/* GUC check hook of wtcache.query_safe_functions: syntax only (no catalog) */
bool
wtcache_query_safe_functions_check(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval ? *newval : "");
	ListCell   *lc;

	if (copy[0] == '\0')
		return true;
	foreach(lc, split_safe_functions(copy))
	{
		char	   *entry = lfirst(lc);
		char	   *args;

		if (safe_function_name(entry, &args) == NIL)
		{
			GUC_check_errdetail("\"%s\" is not a schema-qualified function name or signature.", entry);
			GUC_check_errhint("List functions as schema.name (every overload) or schema.name(argtype, ...), separated by commas.");
			return false;
		}
	}
	return true;
}

typedef struct SafeEntryContext
{
	const char *entry;
} SafeEntryContext;

static void
safe_entry_error_context(void *arg)
{
	errcontext("wtcache.query_safe_functions entry \"%s\"", ((SafeEntryContext *) arg)->entry);
}

/*
 * Is the function listed in wtcache.query_safe_functions?  Resolved at
 * each use, so a function created or renamed later is found; argument
 * types are resolved with search_path pinned to pg_catalog, so that an
 * unqualified type name can only mean a built-in type.
 */
static bool
function_marked_safe(Oid funcid)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	char	   *nspname;
	char	   *copy;
	ListCell   *lc;
	bool		found = false;

	if (wtcache_query_safe_functions == NULL || wtcache_query_safe_functions[0] == '\0')
		return false;
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tup))
		return false;
	proc = (Form_pg_proc) GETSTRUCT(tup);
	nspname = get_namespace_name(proc->pronamespace);
	copy = pstrdup(wtcache_query_safe_functions);
	foreach(lc, split_safe_functions(copy))
	{
		char	   *entry = lfirst(lc);
		char	   *args;
		List	   *name = safe_function_name(entry, &args);

		if (name == NIL || nspname == NULL ||
			strcmp(linitial(name), nspname) != 0 ||
			strcmp(lsecond(name), NameStr(proc->proname)) != 0)
			continue;
		if (args == NULL)
			found = true;
		else
		{
			List	   *types = split_safe_functions(args);
			SafeEntryContext ectx = {entry};
			ErrorContextCallback errcb = {error_context_stack, safe_entry_error_context, &ectx};
			int			nestlevel;
			int			i = 0;
			ListCell   *tc;

			if (list_length(types) == 1 && ((char *) linitial(types))[0] == '\0')
				types = NIL;
			if (list_length(types) != proc->pronargs)
				continue;
			error_context_stack = &errcb;
			nestlevel = wtcache_pin_search_path();
			found = true;
			foreach(tc, types)
			{
				Oid			typid;
				int32		typmod;

				parseTypeString(lfirst(tc), &typid, &typmod, true);
				if (typid != proc->proargtypes.values[i++])
				{
					found = false;
					break;
				}
			}
			wtcache_unpin_search_path(nestlevel);
			error_context_stack = errcb.previous;
		}
		if (found)
			break;
	}
	ReleaseSysCache(tup);
	return found;
}

typedef struct SessionCheck
{
	const char *view;			/* the view whose body is being walked */
	List	   *types_ok;		/* types whose rendering was checked */
	bool		vouched;		/* a wtcache.query_safe_functions entry was
								 * needed: it may read tables unseen */
} SessionCheck;

/*
 * The function as an entry of wtcache.query_safe_functions: schema.name
 * with its argument types, qualified unless built-in (entries are resolved
 * with search_path = pg_catalog).
 */
static char *
safe_function_entry(Oid funcid)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	Form_pg_proc proc;
	StringInfoData buf;

	if (!HeapTupleIsValid(tup))
		return format_procedure_qualified(funcid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	initStringInfo(&buf);
	appendStringInfo(&buf, "%s(",
					 quote_qualified_identifier(get_namespace_name(proc->pronamespace),
												NameStr(proc->proname)));
	for (int i = 0; i < proc->pronargs; i++)
	{
		Oid			t = proc->proargtypes.values[i];
		HeapTuple	ttup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(t));
		bool		builtin = HeapTupleIsValid(ttup) &&
			((Form_pg_type) GETSTRUCT(ttup))->typnamespace == PG_CATALOG_NAMESPACE;

		if (HeapTupleIsValid(ttup))
			ReleaseSysCache(ttup);
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "",
						 builtin ? format_type_be(t) : format_type_be_qualified(t));
	}
	appendStringInfoChar(&buf, ')');
	ReleaseSysCache(tup);
	return buf.data;
}

/*
 * Refuse the query: what (a function's signature or an SQL keyword) makes
 * its result depend on the session.  funcid: the function, to name it in
 * the hint as wtcache.query_safe_functions takes it, or InvalidOid.
 */
static void refuse_call(SessionCheck *sc, const char *what, const char *detail,
						Oid funcid) pg_attribute_noreturn();

static void
refuse_call(SessionCheck *sc, const char *what, const char *detail, Oid funcid)
{
	const char *param_hint = "Compute the value outside the cached query and pass it as a "
		"parameter, as in wtcache.query('... WHERE tenant = $1', ARRAY[current_setting('app.tenant')])";
	char	   *hint;

	if (OidIsValid(funcid))
		hint = psprintf("%s; or, if the result of %s depends only on its arguments and on tables "
						"the query reads, have a superuser list it in wtcache.query_safe_functions.",
						param_hint, safe_function_entry(funcid));
	else
		hint = psprintf("%s.", param_hint);
	if (sc->view)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wtcache.query() cannot cache a query that calls %s through view \"%s\"",
						what, sc->view),
				 errdetail_internal("%s", detail),
				 errhint("%s", hint)));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("wtcache.query() cannot cache a query that calls %s", what),
			 errdetail_internal("%s", detail),
			 errhint("%s", hint)));
}

/*
 * Check one function.  Returns true if it was admitted by the built-in
 * allow-list: then the caller checks how its arguments are rendered.
 */
static bool
check_session_function(SessionCheck *sc, Oid funcid)
{
	char		vol = func_volatile(funcid);
	char	   *name;

	if (vol == PROVOLATILE_IMMUTABLE)
		return false;
	for (int i = 0; i < lengthof(session_safe_builtins); i++)
		if (session_safe_builtins[i] == funcid)
			return true;
	if (function_marked_safe(funcid))
	{
		sc->vouched = true;
		return false;
	}
	name = format_procedure(funcid);
	if (funcid < FirstNormalObjectId)
	{
		const char *proname = get_func_name(funcid);

		if (funcid == F_NOW || funcid == F_TRANSACTION_TIMESTAMP ||
			funcid == F_STATEMENT_TIMESTAMP || funcid == F_AGE_TIMESTAMPTZ ||
			funcid == F_AGE_TIMESTAMP || funcid == F_DATE_IN || funcid == F_TIME_IN ||
			funcid == F_TIMETZ_IN || funcid == F_TIMESTAMP_IN || funcid == F_TIMESTAMPTZ_IN)
			refuse_call(sc, name,
						psprintf("%s reads the clock (date and time input does for 'now' and 'today'): "
								 "a cached result would be served after the moment it was computed for.",
								 name),
						InvalidOid);
		if (funcid == F_CURRENT_SETTING_TEXT || funcid == F_CURRENT_SETTING_TEXT_BOOL)
			refuse_call(sc, name,
						psprintf("%s reads a setting of the session (as SET app.tenant = ...), and "
								 "cached results are shared by every session of the role, whatever "
								 "its settings.", name),
						InvalidOid);
		if (proname != NULL &&
			((strncmp(proname, "has_", 4) == 0 && strstr(proname, "_privilege") != NULL) ||
			 strcmp(proname, "pg_has_role") == 0))
			refuse_call(sc, name,
						psprintf("%s reads privileges and role memberships, which GRANT and REVOKE "
								 "change without invalidating cached results.", name),
						InvalidOid);
		refuse_call(sc, name,
					psprintf("%s is %s: its result can depend on the session (its settings, the clock, "
							 "the client, the backend, the session user), on privileges or on the "
							 "catalogs, which neither the cache key nor invalidation covers, so one "
							 "session could be served another's result, or a stale one.",
							 name, vol == PROVOLATILE_STABLE ? "STABLE" : "VOLATILE"),
					InvalidOid);
	}
	else
	{
		HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
		char	   *lang = "an unknown language";

		if (HeapTupleIsValid(tup))
		{
			lang = get_language_name(((Form_pg_proc) GETSTRUCT(tup))->prolang, true);
			ReleaseSysCache(tup);
		}
		refuse_call(sc, name,
					psprintf("%s is %s and written in %s: wtcache cannot see what it reads "
							 "(settings, the clock, tables), so its result could depend on the "
							 "session, and one session could be served another's result.",
							 name, vol == PROVOLATILE_STABLE ? "STABLE" : "VOLATILE",
							 lang ? lang : "an unknown language"),
					funcid);
	}
	return false;				/* not reached */
}

/*
 * Values of this type are rendered by its output function (to JSON, or to
 * text by a cast or by concat(), format()...): refuse it if that reads the
 * session.  Arrays, composites, ranges and domains are rendered through
 * their parts.
 */
static void
check_type_rendering(SessionCheck *sc, Oid typid)
{
	Oid			elem;
	Oid			out;
	bool		isvarlena;

	check_stack_depth();
	if (!OidIsValid(typid))
		return;
	typid = getBaseType(typid);
	if (list_member_oid(sc->types_ok, typid))
		return;
	sc->types_ok = lappend_oid(sc->types_ok, typid);

	if ((elem = get_element_type(typid)) != InvalidOid)
	{
		check_type_rendering(sc, elem);
		return;
	}
	switch (get_typtype(typid))
	{
		case TYPTYPE_COMPOSITE:
			{
				TupleDesc	desc = lookup_rowtype_tupdesc(typid, -1);
				List	   *atts = NIL;
				ListCell   *lc;

				for (int i = 0; i < desc->natts; i++)
					if (!TupleDescAttr(desc, i)->attisdropped)
						atts = lappend_oid(atts, TupleDescAttr(desc, i)->atttypid);
				ReleaseTupleDesc(desc);
				foreach(lc, atts)
					check_type_rendering(sc, lfirst_oid(lc));
				return;
			}
		case TYPTYPE_RANGE:
			check_type_rendering(sc, get_range_subtype(typid));
			return;
		case TYPTYPE_MULTIRANGE:
			check_type_rendering(sc, get_multirange_range(typid));
			return;
		case TYPTYPE_PSEUDO:
			/* an anonymous record: its columns are checked where they are built */
			return;
		default:
			break;
	}
	getTypeOutputInfo(typid, &out, &isvarlena);
	if (func_volatile(out) == PROVOLATILE_IMMUTABLE)
		return;
	for (int i = 0; i < lengthof(session_safe_builtins); i++)
		if (session_safe_builtins[i] == out)
			return;
	if (function_marked_safe(out))
	{
		sc->vouched = true;
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("wtcache.query() cannot cache a query that renders values of type %s",
					format_type_be(typid)),
			 errdetail("Its output function %s is STABLE: the text it gives can depend on the "
					   "session or on the catalogs, which neither the cache key nor invalidation "
					   "covers.", format_procedure(out)),
			 errhint("Return another type (a cast to text goes through the same function), or have "
					 "a superuser list %s in wtcache.query_safe_functions.",
					 safe_function_entry(out))));
}

/* the type an expression renders; ROW(...) through its fields */
static void
check_expr_rendering(SessionCheck *sc, Node *expr)
{
	if (IsA(expr, TargetEntry))
		expr = (Node *) ((TargetEntry *) expr)->expr;
	if (IsA(expr, RowExpr) && ((RowExpr *) expr)->row_typeid == RECORDOID)
	{
		ListCell   *lc;

		foreach(lc, ((RowExpr *) expr)->args)
			check_expr_rendering(sc, lfirst(lc));
		return;
	}
	check_type_rendering(sc, exprType(expr));
}

static bool
check_function_cb(Oid funcid, void *context)
{
	(void) check_session_function((SessionCheck *) context, funcid);
	return false;
}

static const char *
sql_value_function_name(SQLValueFunctionOp op)
{
	switch (op)
	{
		case SVFOP_CURRENT_DATE:
			return "CURRENT_DATE";
		case SVFOP_CURRENT_TIME:
		case SVFOP_CURRENT_TIME_N:
			return "CURRENT_TIME";
		case SVFOP_CURRENT_TIMESTAMP:
		case SVFOP_CURRENT_TIMESTAMP_N:
			return "CURRENT_TIMESTAMP";
		case SVFOP_LOCALTIME:
		case SVFOP_LOCALTIME_N:
			return "LOCALTIME";
		case SVFOP_LOCALTIMESTAMP:
		case SVFOP_LOCALTIMESTAMP_N:
			return "LOCALTIMESTAMP";
		case SVFOP_SESSION_USER:
			return "SESSION_USER";
		case SVFOP_CURRENT_SCHEMA:
			return "CURRENT_SCHEMA";
		default:
			return NULL;		/* the role or the database: in the key */
	}
}

static bool
session_walker(Node *node, SessionCheck *sc)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		Query	   *q = (Query *) node;
		const char *outer_view = sc->view;
		ListCell   *lc;
		bool		r;

		foreach(lc, q->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

			if (rte->rtekind != RTE_RELATION)
				continue;
			/* a view's body keeps the view as a relation entry of its own */
			if (rte->relkind == RELKIND_VIEW)
				sc->view = get_rel_name(rte->relid);
			else if (get_rel_persistence(rte->relid) == RELPERSISTENCE_TEMP)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("wtcache.query() cannot cache a query that reads temporary table \"%s\"",
								get_rel_name(rte->relid)),
						 errdetail("A temporary table belongs to one session, but cached results are shared by every session of the role."),
						 errhint("Read it without wtcache.query().")));
		}
		r = query_tree_walker(q, session_walker, sc, 0);
		sc->view = outer_view;
		return r;
	}
	if (IsA(node, SQLValueFunction))
	{
		SQLValueFunction *svf = (SQLValueFunction *) node;
		const char *name = sql_value_function_name(svf->op);

		if (name != NULL)
			refuse_call(sc, name,
						svf->op == SVFOP_SESSION_USER ?
						"SESSION_USER differs between sessions of one role, and cached results are shared by every session of the role." :
						svf->op == SVFOP_CURRENT_SCHEMA ?
						"CURRENT_SCHEMA can name the session's own temporary schema." :
						psprintf("%s reads the clock: a cached result would be served after the moment it was computed for.", name),
						InvalidOid);
	}
	else if (IsA(node, CoerceViaIO))
	{
		/* the source's output function, through its parts; the target's input */
		CoerceViaIO *io = (CoerceViaIO *) node;
		Oid			in;
		Oid			ioparam;

		check_expr_rendering(sc, (Node *) io->arg);
		getTypeInputInfo(io->resulttype, &in, &ioparam);
		(void) check_session_function(sc, in);
	}
	else
	{
		Oid			funcid = InvalidOid;
		List	   *args = NIL;

		switch (nodeTag(node))
		{
			case T_FuncExpr:
				funcid = ((FuncExpr *) node)->funcid;
				args = ((FuncExpr *) node)->args;
				break;
			case T_OpExpr:
			case T_DistinctExpr:
			case T_NullIfExpr:
				set_opfuncid((OpExpr *) node);
				funcid = ((OpExpr *) node)->opfuncid;
				args = ((OpExpr *) node)->args;
				break;
			case T_Aggref:
				funcid = ((Aggref *) node)->aggfnoid;
				args = ((Aggref *) node)->args;
				break;
			case T_WindowFunc:
				funcid = ((WindowFunc *) node)->winfnoid;
				args = ((WindowFunc *) node)->args;
				break;
			default:
				break;
		}
		if (OidIsValid(funcid))
		{
			if (check_session_function(sc, funcid))
			{
				ListCell   *lc;

				foreach(lc, args)
					check_expr_rendering(sc, lfirst(lc));
			}
		}
		else
			(void) check_functions_in_node(node, check_function_cb, sc);
	}
	return expression_tree_walker(node, session_walker, sc);
}

/*
 * Refuse a query whose result could differ between sessions of the role
 * with the same key (see the comment above session_key_settings).  True if
 * it calls a function only wtcache.query_safe_functions admits: such a
 * function may read tables the query does not show (narrow.c).
 */
static bool
check_session_independent(Query *query)
{
	SessionCheck sc = {NULL, NIL, false};
	ListCell   *lc;

	(void) session_walker((Node *) query, &sc);
	/* what run_query renders: every column of the result */
	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (!tle->resjunk)
			check_expr_rendering(&sc, (Node *) tle->expr);
	}
	return sc.vouched;
}

static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Does any level of the query lock rows (FOR UPDATE / SHARE in a
 * sub-select, a CTE, a sublink, a view)?  A hit would return rows without
 * locking them.
 */
static bool
locks_rows(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		if (((Query *) node)->rowMarks != NIL)
			return true;
		return query_tree_walker((Query *) node, locks_rows, context, 0);
	}
	return expression_tree_walker(node, locks_rows, context);
}

static void
refuse_not_plain_select(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("wtcache.query() caches only plain SELECT statements"),
			 errdetail("Statements that write or lock rows (FOR UPDATE, data-modifying WITH) cannot be cached."),
			 errhint("Run the statement directly.")));
}

/*
 * Parse, analyse and rewrite the query, find the relations it reads, and
 * refuse what cannot be cached.  *types and *ntypes: the parameters' types
 * as the query gave them; ngiven values must match them.
 */
static Query *
analyze_cacheable(QueryPlan *qp, int ngiven, Oid **types, int *ntypes)
{
	List	   *raw;
	RawStmt    *stmt;
	Query	   *query;
	List	   *rewritten;

	raw = raw_parser(qp->sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wtcache.query() takes exactly one statement, not %d", list_length(raw))));
	stmt = linitial_node(RawStmt, raw);
	query = parse_analyze_varparams(stmt, qp->sql, types, ntypes, NULL);
	if (query->commandType != CMD_SELECT || query->utilityStmt != NULL ||
		query->hasModifyingCTE || locks_rows((Node *) query, NULL))
		refuse_not_plain_select();
	if (*ntypes != ngiven)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the query has %d parameter%s, but %d value%s given",
						*ntypes, *ntypes == 1 ? "" : "s", ngiven, ngiven == 1 ? " was" : "s were"),
				 errhint("Pass one text value per $n parameter in params, in order.")));

	rewritten = QueryRewrite(query);
	if (list_length(rewritten) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wtcache.query() cannot cache a statement that rules rewrite into several")));
	query = linitial_node(Query, rewritten);
	/* a view's own FOR UPDATE appears once it is expanded */
	if (locks_rows((Node *) query, NULL))
		refuse_not_plain_select();
	(void) collect_relations((Node *) query, qp);
	if (contain_volatile_functions((Node *) query))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wtcache.query() cannot cache a query that calls volatile functions"),
				 errdetail("Its result could differ on every run (random(), clock_timestamp(), nextval()...)."),
				 errhint("Compute volatile values outside the cached query and pass them as parameters.")));
	/* under row-level security nothing is cached: policies may read the session */
	if (!qp->rls)
		qp->vouched = check_session_independent(query);

	return query;
}

/* The parameters' text values, read in the types the query gave them. */
static void
bind_params(QueryPlan *qp, Datum *pelems, bool *pnulls, int ngiven, Oid *types, int ntypes)
{
	qp->nparams = ngiven;
	qp->paramtypes = palloc(sizeof(Oid) * Max(ngiven, 1));
	qp->paramvalues = palloc(sizeof(Datum) * Max(ngiven, 1));
	qp->paramnulls = palloc(Max(ngiven, 1));
	for (int i = 0; i < ngiven; i++)
	{
		Oid			typ = (i >= ntypes || types[i] == InvalidOid || types[i] == UNKNOWNOID) ? TEXTOID : types[i];
		Oid			input;
		Oid			ioparam;

		qp->paramtypes[i] = typ;
		qp->paramnulls[i] = pnulls[i] ? 'n' : ' ';
		if (pnulls[i])
			qp->paramvalues[i] = (Datum) 0;
		else
		{
			getTypeInputInfo(typ, &input, &ioparam);
			qp->paramvalues[i] = OidInputFunctionCall(input, TextDatumGetCString(pelems[i]),
													  ioparam, -1);
		}
	}
}

/*
 * Which of the relations it reads wtcache watches.  A partition of a
 * watched partitioned table counts as that table: its changes are
 * captured, and stamp tags, as the watched table's.
 */
static void
find_watched(QueryPlan *qp)
{
	ListCell   *lc;
	List	   *chains = NIL;
	List	   *all = NIL;
	List	   *watched;
	List	   *found_of = NIL; /* per relids: its watched table, or 0 */

	foreach(lc, qp->relids)
	{
		Oid			relid = lfirst_oid(lc);
		List	   *chain = list_make1_oid(relid);

		if (get_rel_relispartition(relid))
			chain = list_concat(chain, get_partition_ancestors(relid));
		chains = lappend(chains, chain);
		all = list_concat_unique_oid(all, chain);
	}
	/* as its owner: the caller may read a watched table through a view */
	watched = wtcache_watched_among(all);
	foreach(lc, chains)
	{
		List	   *chain = lfirst(lc);
		ListCell   *lc2;
		Oid			found = InvalidOid;

		foreach(lc2, chain)
			if (list_member_oid(watched, lfirst_oid(lc2)))
			{
				found = lfirst_oid(lc2);
				break;
			}
		if (OidIsValid(found))
			qp->watched = list_append_unique_oid(qp->watched, found);
		else
			qp->unwatched = lappend_oid(qp->unwatched, linitial_oid(chain));
		found_of = lappend_oid(found_of, found);
	}
	/* each range-table entry's watched table, for narrow.c */
	foreach(lc, qp->rtes)
	{
		Oid			relid = ((RangeTblEntry *) lfirst(lc))->relid;
		ListCell   *r,
				   *f;

		forboth(r, qp->relids, f, found_of)
			if (lfirst_oid(r) == relid)
			{
				qp->rte_watched = lappend_oid(qp->rte_watched, lfirst_oid(f));
				break;
			}
	}
}

static NarrowedTable *
narrowed_table(QueryPlan *qp, Oid relid)
{
	ListCell   *lc;

	foreach(lc, qp->narrowed)
		if (((NarrowedTable *) lfirst(lc))->watched == relid)
			return lfirst(lc);
	return NULL;
}

/*
 * Its tags: the watched tables' (a table's tag, or, narrowed, its rendered
 * template tags and its table-wide tag), then the caller's; their keys,
 * sorted, once each.
 */
static void
collect_tags(QueryPlan *qp, ArrayType *tags, const char *dbname)
{
	ListCell   *lc;

	foreach(lc, qp->watched)
	{
		NarrowedTable *nt = narrowed_table(qp, lfirst_oid(lc));

		if (nt == NULL)
			qp->tags = lappend(qp->tags, wtcache_table_tag(lfirst_oid(lc)));
		else
		{
			qp->tags = list_concat(qp->tags, nt->tags);
			qp->tags = lappend(qp->tags, wtcache_table_wide_tag(nt->watched));
		}
	}
	if (tags != NULL)
	{
		Datum	   *telems;
		bool	   *tnulls;
		int			nt;

		deconstruct_array(tags, TEXTOID, -1, false, TYPALIGN_INT, &telems, &tnulls, &nt);
		for (int i = 0; i < nt; i++)
		{
			if (tnulls[i] || VARSIZE_ANY_EXHDR(DatumGetTextPP(telems[i])) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("tag %d is null or empty", i + 1)));
			qp->tags = lappend(qp->tags, TextDatumGetCString(telems[i]));
		}
	}
	qp->tag_keys = palloc(sizeof(char *) * Max(list_length(qp->tags), 1));
	foreach(lc, qp->tags)
	{
		StringInfoData k;

		initStringInfo(&k);
		wtcache_append_tag_key(&k, dbname, lfirst(lc));
		qp->tag_keys[qp->ntags++] = k.data;
	}
	if (qp->ntags > 1)
	{
		int			k = 1;

		qsort(qp->tag_keys, qp->ntags, sizeof(char *), cmp_cstring);
		for (int i = 1; i < qp->ntags; i++)
			if (strcmp(qp->tag_keys[i], qp->tag_keys[k - 1]) != 0)
				qp->tag_keys[k++] = qp->tag_keys[i];
		qp->ntags = k;
	}
	{
		StringInfoData j;

		initStringInfo(&j);
		wtcache_append_json_strings(&j, qp->tag_keys, qp->ntags);
		qp->tags_json = j.data;
	}
}

/*
 * The entry's key: the role, what resolves names, the text, the settings,
 * the analysed query and the parameters' values; and its companion keys.
 */
static void
name_entry(QueryPlan *qp, Query *query, const char *dbname)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		hex[PG_SHA256_DIGEST_LENGTH * 2 + 1];
	Oid			role = GetUserId();
	const char *path = namespace_search_path ? namespace_search_path : "";
	uint32		len;
	StringInfoData k;

#define HASH_BYTES(p, n) \
	do { if (pg_cryptohash_update(ctx, (const uint8 *) (p), (n)) < 0) \
			elog(ERROR, "wtcache: could not hash the query: %s", pg_cryptohash_error(ctx)); } while (0)
#define HASH_STRING(s) \
	do { len = strlen(s); HASH_BYTES(&len, sizeof(len)); HASH_BYTES((s), len); } while (0)

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "wtcache: could not hash the query");
	HASH_STRING("wtcache query 2");
	HASH_BYTES(&role, sizeof(role));
	HASH_STRING(path);
	HASH_STRING(qp->sql);
	/* the settings that change how it is read, computed and rendered */
	for (int i = 0; i < lengthof(session_key_settings); i++)
	{
		const char *v = GetConfigOption(session_key_settings[i], true, false);

		HASH_STRING(session_key_settings[i]);
		HASH_STRING(v ? v : "");
	}

	/*
	 * The analysed query: its constants were read by input functions in
	 * this session's settings ('2024-01-01 15:00' is another instant in
	 * another TimeZone; 'now' is another instant every time), and it
	 * holds the views' current definitions.  queryId depends on
	 * compute_query_id, not on the query.
	 */
	{
		uint64		saved_id = query->queryId;
		char	   *tree;

		query->queryId = 0;
		tree = nodeToString(query);
		query->queryId = saved_id;
		HASH_STRING(tree);
		pfree(tree);
	}

	/*
	 * The parameters' values, not their text: read in the session's
	 * settings too, so the same text can be two values ('03/04/2024'
	 * under DateStyle MDY and DMY, 'now').  Equal images are equal
	 * values; equal values with different images only cost a miss.
	 */
	HASH_BYTES(&qp->nparams, sizeof(qp->nparams));
	for (int i = 0; i < qp->nparams; i++)
	{
		int16		typlen;
		bool		typbyval;

		HASH_BYTES(&qp->paramtypes[i], sizeof(Oid));
		if (qp->paramnulls[i] == 'n')
		{
			HASH_STRING("n");
			continue;
		}
		HASH_STRING("v");
		get_typlenbyval(qp->paramtypes[i], &typlen, &typbyval);
		if (typbyval)
		{
			char		image[sizeof(Datum)];

			store_att_byval(image, qp->paramvalues[i], typlen);
			len = typlen;
			HASH_BYTES(&len, sizeof(len));
			HASH_BYTES(image, typlen);
		}
		else if (typlen == -1)
		{
			struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(qp->paramvalues[i]));

			len = VARSIZE_ANY_EXHDR(v);
			HASH_BYTES(&len, sizeof(len));
			HASH_BYTES(VARDATA_ANY(v), len);
		}
		else if (typlen == -2)
			HASH_STRING(DatumGetCString(qp->paramvalues[i]));
		else
		{
			len = typlen;
			HASH_BYTES(&len, sizeof(len));
			HASH_BYTES(DatumGetPointer(qp->paramvalues[i]), typlen);
		}
	}
	if (pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "wtcache: could not hash the query: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
#undef HASH_BYTES
#undef HASH_STRING
	hex_encode((const char *) digest, sizeof(digest), hex);
	hex[sizeof(hex) - 1] = '\0';

	initStringInfo(&k);
	wtcache_append_query_key(&k, dbname, hex);
	qp->key = k.data;
	qp->lease_key = wtcache_lease_key(k.data);
	initStringInfo(&k);
	wtcache_append_clock_key(&k, dbname);
	qp->clock_key = k.data;
	initStringInfo(&k);
	wtcache_append_marker_key(&k, dbname);
	qp->marker_key = k.data;
}

/*
 * Parse and check the query, find its tables, and name its Redis keys.
 * Needs SPI (for the wtcache.watched lookup).
 */
static void
plan_query(QueryPlan *qp, text *sqltext, ArrayType *params, ArrayType *tags)
{
	Query	   *query;
	Datum	   *pelems = NULL;
	bool	   *pnulls = NULL;
	int			ngiven = 0;
	Oid		   *types = NULL;
	int			ntypes = 0;
	char	   *dbname = get_database_name(MyDatabaseId);

	memset(qp, 0, sizeof(*qp));
	qp->sql = text_to_cstring(sqltext);

	if (params != NULL)
	{
		if (ARR_NDIM(params) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("params must be a one-dimensional array")));
		deconstruct_array(params, TEXTOID, -1, false, TYPALIGN_INT, &pelems, &pnulls, &ngiven);
	}

	query = analyze_cacheable(qp, ngiven, &types, &ntypes);
	bind_params(qp, pelems, pnulls, ngiven, types, ntypes);
	find_watched(qp);

	/*
	 * Under row-level security nothing is cached; a function vouched for
	 * may read any table unseen, which only the table tags the query
	 * shows could have covered.
	 */
	if (!qp->rls && !qp->vouched && qp->watched != NIL)
	{
		NarrowParams np = {qp->nparams, qp->paramtypes, qp->paramvalues, qp->paramnulls};

		qp->narrowed = wtcache_narrow_query(query, &np, qp->rtes, qp->rte_watched);
	}
	collect_tags(qp, tags, dbname);
	name_entry(qp, query, dbname);
}

/*
 * Why this call may not use the cache, or NULL.  Checked before Redis is
 * read (see the header: a change delivered between the check and the
 * read would otherwise go unnoticed).
 */
static const char *
query_bypass_reason(QueryPlan *qp)
{
	ListCell   *lc;

	if (qp->rls)
		return "row-level security";
	if (IsolationUsesXactSnapshot())
		return "isolation";
	/* its own uncommitted writes must neither be missed nor cached */
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		return "own writes";
	if (!wtcache_pending_ready(MyDatabaseId))
		return "not ready";
	foreach(lc, qp->watched)
	{
		Oid			relid = lfirst_oid(lc);

		/* TRUNCATE, resync, requeue, partition DDL, a hold: per table */
		if (!wtcache_pending_is_zero(wtcache_pending_table_index(MyDatabaseId, relid)))
			return "change pending";
		if (narrowed_table(qp, relid) == NULL)
		{
			/* any change of a row */
			if (!wtcache_pending_is_zero(wtcache_pending_changed_index(MyDatabaseId, relid)))
				return "change pending";
		}
		else
		{
			/*
			 * Narrowed: a change of a row it reads counts under one of its
			 * template tags, checked with its other tags below.  What bumps
			 * its table-wide tag counts under the table's counter (above),
			 * or that tag (below), but for an invalidate() of the table
			 * tag, which counts under the table tag's name.
			 */
			char	   *tt = wtcache_table_tag(relid);

			if (tt != NULL &&
				!wtcache_pending_is_zero(wtcache_pending_tag_index(MyDatabaseId, tt, strlen(tt))))
				return "invalidation pending";
			if (tt != NULL && wtcache_xact_invalidated(tt))
				return "own writes";
		}
	}
	foreach(lc, qp->tags)
	{
		const char *tag = lfirst(lc);

		if (!wtcache_pending_is_zero(wtcache_pending_tag_index(MyDatabaseId, tag, strlen(tag))))
			return "invalidation pending";
		if (wtcache_xact_invalidated(tag))
			return "own writes";
	}
	return NULL;
}

typedef enum QueryLookup
{
	LOOKUP_HIT,
	LOOKUP_FILL,				/* miss, the lease is ours */
	LOOKUP_BUSY,				/* miss, someone else fills */
	LOOKUP_FAILED,				/* Redis failed */
	LOOKUP_BEHIND,				/* Redis lost data: run the query, store nothing */
	LOOKUP_NO_ROOM				/* a miss Redis has no memory to lease: run
								 * the query, store nothing */
} QueryLookup;

/*
 * One of the scripts above: KEYS are the entry, its lease, the clock and
 * marker keys when with_clock, and the tag keys; then ARGV.  False when
 * Redis failed (the caller decides what that means for the read).
 */
static bool
call_entry_script(WtcRedis *r, QueryPlan *qp, const SessionScript *script, bool with_clock,
				  const char **args, int nargs, WtcReply *reply)
{
	int			nkeys = 0;
	const char **keys = palloc(sizeof(char *) * (qp->ntags + 4));

	keys[nkeys++] = qp->key;
	keys[nkeys++] = qp->lease_key;
	if (with_clock)
	{
		keys[nkeys++] = qp->clock_key;
		keys[nkeys++] = qp->marker_key;
	}
	for (int i = 0; i < qp->ntags; i++)
		keys[nkeys++] = qp->tag_keys[i];
	return wtcache_session_eval(r, script, nkeys, keys, nargs, args, reply);
}

static QueryLookup
lookup(QueryPlan *qp, const SessionLease *lease, char **rows, size_t *rows_len,
	   char **versions)
{
	WtcRedis   *r = wtcache_session_redis();
	char		tag_ttl[16];
	char		acked[24];
	const char *args[5];
	WtcReply	reply;

	if (r == NULL)
		return LOOKUP_FAILED;
	snprintf(tag_ttl, sizeof(tag_ttl), "%d", WTCACHE_TAG_TTL_S);
	snprintf(acked, sizeof(acked), INT64_FORMAT, wtcache_acked_version(MyDatabaseId));
	args[0] = qp->tags_json;
	args[1] = lease->token;
	args[2] = lease->ms;
	args[3] = tag_ttl;
	args[4] = acked;
	if (!call_entry_script(r, qp, &wtcache_query_read_script, true, args, 5, &reply))
		return LOOKUP_FAILED;
	if (reply.type != WTC_REPLY_ARRAY || reply.nelem != 2 ||
		reply.elem[0].type != WTC_REPLY_INTEGER || reply.elem[1].type != WTC_REPLY_STRING)
	{
		/*
		 * Out of memory (maxmemory, noeviction): the lease or a missing
		 * tag's new stamp was refused before the script wrote anything.
		 * Redis still serves hits, so this is a miss, not a failure.
		 */
		if (reply.type == WTC_REPLY_ERROR && wtc_redis_error_is_oom(reply.str))
			return LOOKUP_NO_ROOM;
		/* NOSCRIPT after a Redis restart: the next call loads them again */
		wtcache_session_reload_scripts();
		return LOOKUP_FAILED;
	}
	switch (reply.elem[0].integer)
	{
		case 1:
			*rows = reply.elem[1].str;
			*rows_len = reply.elem[1].len;
			return LOOKUP_HIT;
		case 2:
			*versions = reply.elem[1].str;
			return LOOKUP_FILL;
		case 4:
			return LOOKUP_BEHIND;
		default:
			*versions = reply.elem[1].str;
			return LOOKUP_BUSY;
	}
}

/* Store the result if the stamps still are those read before the query ran. */
static void
store(QueryPlan *qp, const char *versions, const char *rows, int64 ttl_ms,
	  const SessionLease *lease, ReadStats *st)
{
	WtcRedis   *r = wtcache_session_redis();
	char		ttl[24];
	const char *args[5];
	WtcReply	reply;
	int64		fill_ttl = wtcache_session_fill_ttl(ttl_ms);

	if (r == NULL)
		return;
	snprintf(ttl, sizeof(ttl), INT64_FORMAT, fill_ttl);
	args[0] = versions;
	args[1] = qp->tags_json;
	args[2] = rows;
	args[3] = ttl;
	args[4] = lease->token;
	if (!call_entry_script(r, qp, &wtcache_query_fill_script, false, args, 5, &reply))
	{
		wtcache_session_lost();
		return;
	}
	if (rows[0] == '\0')
		return;
	if (reply.type == WTC_REPLY_INTEGER && reply.integer == 1)
		pg_atomic_fetch_add_u64(&st->fills, 1);
	else
		pg_atomic_fetch_add_u64(&st->fills_rejected, 1);
}

/* Run the query in a fresh snapshot; its rows as a JSON array, and returned. */
static char *
run_query(QueryPlan *qp, Tuplestorestate *store_out, TupleDesc outdesc, MemoryContext outcxt)
{
	StringInfoData json;
	TupleDesc	desc;
	MemoryContext old;
	int			rc;

	initStringInfo(&json);
	appendStringInfoChar(&json, '[');
	rc = SPI_execute_with_args(qp->sql, qp->nparams, qp->paramtypes, qp->paramvalues,
							   qp->paramnulls, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache: running the cached query failed: %s", SPI_result_code_string(rc));
	old = MemoryContextSwitchTo(outcxt);
	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	desc = BlessTupleDesc(desc);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		composite = heap_copy_tuple_as_datum(SPI_tuptable->vals[i], desc);
		text	   *row = DatumGetTextPP(DirectFunctionCall1(row_to_json, composite));
		char	   *s = text_to_cstring(row);
		Datum		jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
		bool		isnull = false;

		if (i > 0)
			appendStringInfoChar(&json, ',');
		appendStringInfoString(&json, s);
		tuplestore_putvalues(store_out, outdesc, &jb, &isnull);
		pfree(s);
	}
	appendStringInfoChar(&json, ']');
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return json.data;
}

/*
 * Return the cached rows (a JSON array) one by one.  Each row is parsed on
 * its own, in memory reset row after row: parsing the whole array at once
 * would hold a tree of the whole result.
 */
static void
return_cached(const char *rows, size_t len, Tuplestorestate *ts, TupleDesc outdesc)
{
	const char *p = rows;
	const char *end = rows + len;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "wtcache cached row",
												 ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;

#define SKIP_SPACE() while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++
	SKIP_SPACE();
	if (p >= end || *p++ != '[')
		goto corrupt;
	for (;;)
	{
		const char *start;
		int			depth = 0;
		bool		in_string = false;
		Datum		jb;
		bool		isnull = false;

		SKIP_SPACE();
		if (p < end && *p == ']')
			break;
		start = p;
		for (; p < end; p++)
		{
			char		c = *p;

			if (in_string)
			{
				if (c == '\\')
					p++;
				else if (c == '"')
					in_string = false;
			}
			else if (c == '"')
				in_string = true;
			else if (c == '{' || c == '[')
				depth++;
			else if (c == '}' || c == ']')
			{
				if (depth == 0)
					break;		/* the array's own ']' */
				if (--depth == 0)
				{
					p++;
					break;
				}
			}
			else if (c == ',' && depth == 0)
				break;
		}
		if (p > end || p == start || depth != 0 || in_string)
			goto corrupt;
		old = MemoryContextSwitchTo(rowcxt);
		jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(start, p - start)));
		tuplestore_putvalues(ts, outdesc, &jb, &isnull);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
		SKIP_SPACE();
		if (p < end && *p == ',')
			p++;
		else if (!(p < end && *p == ']'))
			goto corrupt;
	}
#undef SKIP_SPACE
	MemoryContextDelete(rowcxt);
	return;

corrupt:
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("wtcache: the cached query result in Redis is not a JSON array of rows"),
			 errhint("Delete the key; the next call computes the result again.")));
}

PG_FUNCTION_INFO_V1(wtcache_query);
Datum
wtcache_query(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext per_query;
	MemoryContext old;
	SessionCall call;
	TupleDesc	outdesc;
	Tuplestorestate *ts;
	QueryPlan	qp;
	Interval   *ttl = PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3);
	int64		ttl_ms;
	const char *bypass;
	SessionLease lease;
	char	   *rows = NULL;
	size_t		rows_len = 0;
	char	   *versions = NULL;
	QueryLookup found = LOOKUP_FAILED;
	ReadStats  *st;

	wtcache_require_preload();
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the query must not be null")));
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wtcache.query() must be called where a set of rows is accepted")));
	if (ttl != NULL && wtcache_interval_ms(ttl) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be positive")));
	if (ttl != NULL && wtcache_interval_ms(ttl) > (int64) WTCACHE_QUERY_TTL_MAX_S * 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be at most 7 days"),
				 errhint("Results are invalidated by changes; the TTL only bounds how long unused ones take space in Redis.")));
	if (!PG_ARGISNULL(2))
		wtcache_check_call_tags(PG_GETARG_ARRAYTYPE_P(2));
	ttl_ms = ttl ? wtcache_interval_ms(ttl) : (int64) wtcache_query_ttl_s * 1000;

	per_query = rsinfo->econtext->ecxt_per_query_memory;
	old = MemoryContextSwitchTo(per_query);
	outdesc = CreateTemplateTupleDesc(1);
	TupleDescInitEntry(outdesc, (AttrNumber) 1, "query", JSONBOID, -1, 0);
	ts = tuplestore_begin_heap(rsinfo->allowedModes & SFRM_Materialize_Random, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = outdesc;
	MemoryContextSwitchTo(old);

	wtcache_session_call_begin(&call);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(call.scratch);
	plan_query(&qp, PG_GETARG_TEXT_PP(0),
			   PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1),
			   PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2));
	if (qp.unwatched != NIL && ttl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the query reads table \"%s\", which wtcache does not watch",
						get_rel_name(linitial_oid(qp.unwatched))),
				 errdetail("Changes to it would not invalidate the cached result."),
				 errhint("Watch it with wtcache.watch('%s'), or pass ttl => '...' to cache the result for a fixed time.",
						 quote_qualified_identifier(get_namespace_name(get_rel_namespace(linitial_oid(qp.unwatched))),
													get_rel_name(linitial_oid(qp.unwatched))))));

	st = wtcache_read_stats_entry(MyDatabaseId, WTCACHE_QUERY_STATS_RELID);
	bypass = query_bypass_reason(&qp);
	wtcache_session_new_lease(&lease);
	if (bypass == NULL)
	{
		found = lookup(&qp, &lease, &rows, &rows_len, &versions);
		if (found == LOOKUP_BUSY)
			pg_atomic_fetch_add_u64(&st->stampede_waits, 1);
		if (found == LOOKUP_BUSY)
		{
			/* someone else runs it: wait a little for their result */
			SessionWait wait;

			wtcache_session_wait_start(&wait);
			while (found == LOOKUP_BUSY && wtcache_session_wait(&wait))
				found = lookup(&qp, &lease, &rows, &rows_len, &versions);
		}
		if (found == LOOKUP_FAILED)
		{
			pg_atomic_fetch_add_u64(&st->fallbacks, 1);
			wtcache_session_lost();
		}
		else if (found == LOOKUP_HIT)
			pg_atomic_fetch_add_u64(&st->hits, 1);
		else if (found == LOOKUP_BEHIND)
			pg_atomic_fetch_add_u64(&st->bypasses, 1);
		else
			pg_atomic_fetch_add_u64(&st->misses, 1);
	}
	else
		pg_atomic_fetch_add_u64(&st->bypasses, 1);

	if (found == LOOKUP_HIT)
		return_cached(rows, rows_len, ts, outdesc);
	else
	{
		char	   *json;

		pg_atomic_fetch_add_u64(&st->table_reads, 1);
		json = run_query(&qp, ts, outdesc, call.scratch);

		/* BUSY past the wait: fill too, the stamps guard it */
		if (found == LOOKUP_FILL || found == LOOKUP_BUSY)
		{
			wtcache_session_debug_fill_delay();
			if (strlen(json) > (size_t) wtcache_query_max_kb * 1024)
				json = "";		/* too big to cache: give the lease back */
			store(&qp, versions, json, ttl_ms, &lease, st);
		}
	}

	SPI_finish();
	wtcache_session_call_end(&call);
	return (Datum) 0;
}

/* wtcache.query_key(sql, params, tags): where an application finds the entry. */
PG_FUNCTION_INFO_V1(wtcache_query_key);
Datum
wtcache_query_key(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	QueryPlan	qp;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Datum	   *keys;
	MemoryContext caller = CurrentMemoryContext;

	wtcache_require_preload();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "wtcache.query_key() must return a record");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(caller);
	plan_query(&qp, PG_GETARG_TEXT_PP(0), PG_GETARG_ARRAYTYPE_P(1), PG_GETARG_ARRAYTYPE_P(2));
	SPI_finish();
	MemoryContextSwitchTo(caller);
	keys = palloc(sizeof(Datum) * Max(qp.ntags, 1));
	for (int i = 0; i < qp.ntags; i++)
		keys[i] = CStringGetTextDatum(qp.tag_keys[i]);
	values[0] = CStringGetTextDatum(qp.key);
	values[1] = PointerGetDatum(construct_array(keys, qp.ntags, TEXTOID, -1, false, TYPALIGN_INT));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
