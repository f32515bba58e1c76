/*-------------------------------------------------------------------------
 * keys.c
 *		Redis key names and the rendering of key column values.
 *
 * A row lives at
 *		<prefix>{<database>:<schema>.<table>:<key1>[:<key2>...]}
 * Every component is escaped (% : { } as %XX, and . too inside schema and
 * table names) so that no two rows share a key and the first "{...}" is
 * always the Redis Cluster hash tag.  Everything else wtcache stores for a
 * row (its tombstone) appends to the row key after the closing brace, so it
 * sits in the same cluster slot and a row key (which always ends in "}") is
 * never anything but a live row.
 *
 * Key values are the column's text output.  Outputs that depend on session
 * settings (timestamps, floats, intervals, bytea...) would give one row two
 * keys, so for those types the trigger records the binary send format and
 * the worker renders it under fixed settings (canonical_settings below).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

/* Types whose text output is the same whatever the session's settings. */
bool
wtcache_key_type_is_stable(Oid typid)
{
	Oid			base = getBaseType(typid);

	switch (base)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case CHAROID:
		case UUIDOID:
		case BOOLOID:
		case NUMERICOID:
			return true;
		default:
			return type_is_enum(base);
	}
}

/* How the capture path renders a key value of this type. */
void
wtcache_init_key_type(KeyColumn *col, Oid typid, MemoryContext mcxt)
{
	Oid			funcid;
	bool		isvarlena;

	col->attnum = InvalidAttrNumber;
	col->typid = typid;
	get_typlenbyval(typid, &col->typlen, &col->typbyval);
	col->binary = !wtcache_key_type_is_stable(typid);
	if (col->binary)
		getTypeBinaryOutputInfo(typid, &funcid, &isvarlena);
	else
		getTypeOutputInfo(typid, &funcid, &isvarlena);
	fmgr_info_cxt(funcid, &col->out, mcxt);
}

void
wtcache_init_key_column(KeyColumn *col, Relation rel, AttrNumber attnum,
						MemoryContext mcxt)
{
	wtcache_init_key_type(col, TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid, mcxt);
	col->attnum = attnum;
}

/*
 * "\x" and the hex of a value's binary send format: how the capture
 * trigger records a key value of a type whose text output is not stable.
 */
char *
wtcache_send_hex(FmgrInfo *send, Datum value, int *len)
{
	bytea	   *b = SendFunctionCall(send, value);
	int			blen = VARSIZE_ANY_EXHDR(b);
	char	   *hex = palloc(blen * 2 + 3);

	hex[0] = '\\';
	hex[1] = 'x';
	*len = (int) hex_encode(VARDATA_ANY(b), blen, hex + 2) + 2;
	hex[*len] = '\0';
	return hex;
}

/*
 * The error for a key given with the wrong number of values.
 */
void
wtcache_check_key_count(Oid relid, int nkeys, int given)
{
	if (given != nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table \"%s\" has %d key column%s, but %d key value%s given",
						get_rel_name(relid), nkeys, nkeys == 1 ? "" : "s",
						given, given == 1 ? " was" : "s were"),
				 errhint("Give one text value per key column, in key order.")));
}

/*
 * The query that reads the rows of many keys: $1..$n are text arrays, one
 * per key column, holding the canonical key text; it returns each found
 * row's position in the arrays and its row_to_json ("t.*": a column named
 * t must not be taken for the row).  Used by the worker
 * and by cached reads, so both render rows the same way.
 */
void
wtcache_append_rows_by_keys_sql(StringInfo sql, const char *qname, int nkeys,
								char **colnames, char **typnames)
{
	appendStringInfoString(sql, "SELECT k.ord, row_to_json(t.*)::text FROM unnest(");
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(sql, "%s$%d::text[]", c ? ", " : "", c + 1);
	appendStringInfoString(sql, ") WITH ORDINALITY AS k(");
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(sql, "c%d, ", c);
	appendStringInfo(sql, "ord) JOIN ONLY %s t ON ", qname);
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(sql, "%st.%s = k.c%d::%s", c ? " AND " : "",
						 quote_identifier(colnames[c]), c, typnames[c]);
}

/* ["a","b",...]: strings as a JSON array (tag lists of events and entries). */
void
wtcache_append_json_strings(StringInfo buf, char *const *items, int n)
{
	appendStringInfoChar(buf, '[');
	for (int i = 0; i < n; i++)
	{
		if (i)
			appendStringInfoChar(buf, ',');
		escape_json(buf, items[i]);
	}
	appendStringInfoChar(buf, ']');
}

/* The Redis channel that applied changes are published on. */
void
wtcache_events_channel(StringInfo buf)
{
	appendStringInfoString(buf, wtcache_key_prefix);
	appendStringInfoString(buf, "events");
}

/*
 * Escape one component.  Names also escape '.', which separates schema and
 * table.  Control characters pass through: Redis keys are binary safe.
 */
void
wtcache_append_escaped(StringInfo buf, const char *s, bool is_name)
{
	for (const char *p = s; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c == '%' || c == ':' || c == '{' || c == '}' || (is_name && c == '.'))
			appendStringInfo(buf, "%%%02X", c);
		else
			appendStringInfoChar(buf, (char) c);
	}
}

/* "<database>:<schema>.<table>", the part of a row key that names a table. */
void
wtcache_append_table_key(StringInfo buf, const char *dbname,
						 const char *nspname, const char *relname)
{
	wtcache_append_escaped(buf, dbname, true);
	appendStringInfoChar(buf, ':');
	wtcache_append_escaped(buf, nspname, true);
	appendStringInfoChar(buf, '.');
	wtcache_append_escaped(buf, relname, true);
}

void
wtcache_append_row_key(StringInfo buf, const char *prefix,
					   const char *table_key, int nkeys, char **values)
{
	appendStringInfoString(buf, prefix);
	appendStringInfoChar(buf, '{');
	appendStringInfoString(buf, table_key);
	for (int i = 0; i < nkeys; i++)
	{
		appendStringInfoChar(buf, ':');
		wtcache_append_escaped(buf, values[i], false);
	}
	appendStringInfoChar(buf, '}');
}

/* For SCAN MATCH patterns: Redis glob metacharacters get a backslash. */
void
wtcache_append_glob_escaped(StringInfo buf, const char *s)
{
	for (const char *p = s; *p; p++)
	{
		if (strchr("*?[]\\^", *p))
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
}

/*
 * Fixed settings under which key values and row JSON are rendered, so a row
 * has one Redis key and one JSON form whoever wrote it.  The worker keeps
 * them for its whole life; a backend wraps redis_key() in push/pop.
 */
static const char *const canonical_settings[][2] = {
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"TimeZone", "UTC"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
};

int
wtcache_canonical_settings_push(void)
{
	int			nestlevel = NewGUCNestLevel();

	for (int i = 0; i < lengthof(canonical_settings); i++)
		(void) set_config_option(canonical_settings[i][0], canonical_settings[i][1],
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
wtcache_canonical_settings_pop(int nestlevel)
{
	AtEOXact_GUC(true, nestlevel);
}

/* wtcache.redis_key(rel, VARIADIC key text[]) */
PG_FUNCTION_INFO_V1(wtcache_redis_key);
Datum
wtcache_redis_key(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(wtcache_row_key_text(PG_GETARG_OID(0), PG_GETARG_ARRAYTYPE_P(1)));
}
