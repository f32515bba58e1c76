/*-------------------------------------------------------------------------
 * keyspace.c
 *		Building the Redis key names of keyspace.h, and the value codec.
 *
 * Everything here is part of the public layout (keyspace.h says why it
 * must not change): a key or a value built differently here is a cache
 * that other clients, and earlier versions of wtcache, no longer find.
 *
 * Escaping makes the names unambiguous: in every component the characters
 * that structure a key (the escape itself, the separator, the hash tag's
 * braces) become %XX, and in the names of database, schema and table the
 * "." between schema and table too.  So no two rows share a key, the
 * first "{...}" of a row key is always its hash tag, and a row key parses
 * back into its values (verify.c does).  Control characters pass through:
 * Redis keys are binary safe.
 *
 * Key values are the column's text output.  Outputs that depend on session
 * settings (timestamps, floats, intervals, bytea...) would give one row two
 * keys, and its JSON two forms, so both are rendered under the fixed
 * settings of canonical_settings below: the worker for its whole life, a
 * backend around the rendering (read.c, verify.c).
 *-------------------------------------------------------------------------
 */
#include "keyspace.h"
#include "redis.h"
#include "settings.h"

#include "utils/builtins.h"
#include "utils/guc.h"

/* what every component escapes; names also escape WTC_KEY_NAME_SEP */
#define KEY_RESERVED	WTC_KEY_ESCAPE WTC_KEY_SEP WTC_KEY_TAG_OPEN WTC_KEY_TAG_CLOSE
#define NAME_RESERVED	KEY_RESERVED WTC_KEY_NAME_SEP

/* Redis glob metacharacters, backslashed in SCAN MATCH patterns */
#define GLOB_SPECIAL	"*?[]\\^"

/*
 * Escape one component.  is_name: a database, schema or table name, which
 * also escapes the "." that separates schema and table.
 */
static void
append_escaped(StringInfo buf, const char *s, bool is_name)
{
	const char *reserved = is_name ? NAME_RESERVED : KEY_RESERVED;

	for (const char *p = s; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (strchr(reserved, c) != NULL)
		{
			appendStringInfoString(buf, WTC_KEY_ESCAPE);
			appendStringInfo(buf, "%02X", c);
		}
		else
			appendStringInfoChar(buf, (char) c);
	}
}

/* Decode one escaped component into out; false if malformed. */
static bool
unescape(const char *s, size_t len, StringInfo out)
{
	for (size_t i = 0; i < len; i++)
	{
		if (s[i] == WTC_KEY_ESCAPE[0])
		{
			char		hex[3];
			char	   *end;
			long		v;

			if (i + 2 >= len)
				return false;
			hex[0] = s[i + 1];
			hex[1] = s[i + 2];
			hex[2] = '\0';
			v = strtol(hex, &end, 16);
			if (*end != '\0')
				return false;
			appendStringInfoChar(out, (char) v);
			i += 2;
		}
		else
			appendStringInfoChar(out, s[i]);
	}
	return true;
}

/* For SCAN MATCH patterns: Redis glob metacharacters get a backslash. */
static void
append_glob_escaped(StringInfo buf, const char *s)
{
	for (const char *p = s; *p; p++)
	{
		if (strchr(GLOB_SPECIAL, *p))
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
}

/* "D:S.T", the part of a row key that names a table. */
void
wtcache_append_table_key(StringInfo buf, const char *dbname,
						 const char *nspname, const char *relname)
{
	append_escaped(buf, dbname, true);
	appendStringInfoString(buf, WTC_KEY_SEP);
	append_escaped(buf, nspname, true);
	appendStringInfoString(buf, WTC_KEY_NAME_SEP);
	append_escaped(buf, relname, true);
}

/*
 * The schema and table a table key names, unescaped (palloc'd); false for
 * a string that is not one.  Names are escaped with their dots, so the
 * separators are the only ones.
 */
bool
wtcache_parse_table_key(const char *table_key, char **nspname, char **relname)
{
	const char *sep = strchr(table_key, WTC_KEY_SEP[0]);
	const char *dot = sep ? strchr(sep + 1, WTC_KEY_NAME_SEP[0]) : NULL;
	StringInfoData nsp;
	StringInfoData rel;

	if (dot == NULL || strchr(dot + 1, WTC_KEY_NAME_SEP[0]) != NULL)
		return false;
	initStringInfo(&nsp);
	initStringInfo(&rel);
	if (!unescape(sep + 1, dot - sep - 1, &nsp) ||
		!unescape(dot + 1, strlen(dot + 1), &rel))
		return false;
	*nspname = nsp.data;
	*relname = rel.data;
	return true;
}

/* "P{D:S.T:", what every row key of a table starts with. */
void
wtcache_append_row_key_head(StringInfo buf, const char *prefix, const char *table_key)
{
	appendStringInfoString(buf, prefix);
	appendStringInfoString(buf, WTC_KEY_TAG_OPEN);
	appendStringInfoString(buf, table_key);
	appendStringInfoString(buf, WTC_KEY_SEP);
}

/*
 * "K1:K2...", the escaped key values of a row: what tells the rows of one
 * table apart (the worker hashes a batch's keys by it).
 */
void
wtcache_append_key_values(StringInfo buf, int nkeys, char **values)
{
	for (int i = 0; i < nkeys; i++)
	{
		if (i > 0)
			appendStringInfoString(buf, WTC_KEY_SEP);
		append_escaped(buf, values[i], false);
	}
}

/* "P{D:S.T:K1...}", the key of a row, from its canonical key text. */
void
wtcache_append_row_key(StringInfo buf, const char *prefix,
					   const char *table_key, int nkeys, char **values)
{
	wtcache_append_row_key_head(buf, prefix, table_key);
	wtcache_append_key_values(buf, nkeys, values);
	appendStringInfoString(buf, WTC_KEY_TAG_CLOSE);
}

/* The same from key values already escaped and joined (palloc'd). */
char *
wtcache_row_key_from_values(const char *prefix, const char *table_key,
							const char *key_values)
{
	return psprintf("%s" WTC_KEY_TAG_OPEN "%s" WTC_KEY_SEP "%s" WTC_KEY_TAG_CLOSE,
					prefix, table_key, key_values);
}

/*
 * The nkeys values of a row key whose first headlen bytes are its table's
 * head (wtcache_append_row_key_head), unescaped into palloc'd values[].
 * False for a key that is not a row key of that table with that many key
 * columns (a companion, another key definition, not wtcache's).
 */
bool
wtcache_parse_row_key(const char *key, size_t len, size_t headlen,
					  int nkeys, char **values)
{
	const char *p;
	const char *end;
	int			c = 0;

	if (key == NULL || len <= headlen || key[len - 1] != WTC_KEY_TAG_CLOSE[0])
		return false;
	p = key + headlen;
	end = key + len - 1;		/* the closing brace */
	for (;;)
	{
		const char *sep = memchr(p, WTC_KEY_SEP[0], end - p);
		const char *stop = sep ? sep : end;
		StringInfoData s;

		if (c == nkeys)
			return false;		/* more components than key columns */
		initStringInfo(&s);
		if (!unescape(p, stop - p, &s))
			return false;
		values[c++] = s.data;
		if (sep == NULL)
			break;
		p = sep + 1;
	}
	return c == nkeys;
}

/*
 * The fill lease of a row or of a query result: the key and a suffix, so
 * it is in the key's slot (palloc'd).
 */
char *
wtcache_lease_key(const char *key)
{
	return psprintf("%s" WTC_KEY_LEASE_SUFFIX, key);
}

/* "P{D}:", under which a database's tags, clock, marker and queries live. */
static void
append_db_prefix(StringInfo buf, const char *dbname)
{
	appendStringInfoString(buf, wtcache_key_prefix);
	appendStringInfoString(buf, WTC_KEY_TAG_OPEN);
	append_escaped(buf, dbname, true);
	appendStringInfoString(buf, WTC_KEY_TAG_CLOSE WTC_KEY_SEP);
}

/* The counter that keeps tag stamps unique (WTCACHE_LUA_NEW_STAMP). */
void
wtcache_append_clock_key(StringInfo buf, const char *dbname)
{
	append_db_prefix(buf, dbname);
	appendStringInfoString(buf, WTC_KEY_CLOCK);
}

/*
 * The sequence number of the database's last event (push.c): consecutive
 * numbers let a subscriber see that it missed a message.
 */
void
wtcache_append_event_seq_key(StringInfo buf, const char *dbname)
{
	append_db_prefix(buf, dbname);
	appendStringInfoString(buf, WTC_KEY_EVENT_SEQ);
}

/*
 * The generation marker: the highest version Redis acknowledged (push.c).
 * Lower than what the worker knows was acknowledged means Redis lost data.
 */
void
wtcache_append_marker_key(StringInfo buf, const char *dbname)
{
	append_db_prefix(buf, dbname);
	appendStringInfoString(buf, WTC_KEY_MARKER);
}

/*
 * The marker of the m-th master of a Cluster, "P{D:gen<n>}" with the
 * smallest n whose slot that master serves, so that a failover that loses
 * writes on any master is noticed (push.c).  NULL if none of the first
 * names hash to it.  (Never a row key: those name a schema-qualified
 * table, with a dot.)
 */
char *
wtcache_master_marker_key(WtcRedis *r, const char *dbname, int master)
{
	StringInfoData key;
	int			tag_start;

	initStringInfo(&key);
	appendStringInfoString(&key, wtcache_key_prefix);
	appendStringInfoString(&key, WTC_KEY_TAG_OPEN);
	tag_start = key.len;
	append_escaped(&key, dbname, true);
	appendStringInfoString(&key, WTC_KEY_SEP WTC_KEY_MARKER);
	for (int n = 0; n < 1000000; n++)
	{
		int			len = key.len;
		int			slot;

		appendStringInfo(&key, "%d", n);
		slot = wtc_redis_key_slot(key.data + tag_start, key.len - tag_start);
		if (wtc_redis_node_of_slot(r, slot) == master)
		{
			appendStringInfoString(&key, WTC_KEY_TAG_CLOSE);
			return key.data;
		}
		key.len = len;
		key.data[len] = '\0';
	}
	pfree(key.data);
	return NULL;
}

/*
 * The key that holds a marker's WAL position: the marker's name and a
 * suffix, so that it shares the marker's hash tag, and its Cluster slot.
 */
char *
wtcache_marker_wal_key(const char *marker_key)
{
	return psprintf("%s" WTC_KEY_WAL_SUFFIX, marker_key);
}

/* A tag's key, holding its stamp (tags.c). */
void
wtcache_append_tag_key(StringInfo buf, const char *dbname, const char *tag)
{
	append_db_prefix(buf, dbname);
	appendStringInfoString(buf, WTC_KEY_TAG);
	append_escaped(buf, tag, false);
}

/* A cached query result's key, from the hex digest of what keys it (query.c). */
void
wtcache_append_query_key(StringInfo buf, const char *dbname, const char *digest_hex)
{
	append_db_prefix(buf, dbname);
	appendStringInfoString(buf, WTC_KEY_QUERY);
	appendStringInfoString(buf, digest_hex);
}

/* The tag every watched table has (palloc'd). */
char *
wtcache_format_table_tag(const char *nspname, const char *relname)
{
	return psprintf(WTC_TABLE_TAG_FORMAT, nspname, relname);
}

/* The Redis channel that applied changes are published on. */
void
wtcache_events_channel(StringInfo buf)
{
	appendStringInfoString(buf, wtcache_key_prefix);
	appendStringInfoString(buf, WTC_EVENTS_CHANNEL);
}

/* SCAN pattern of every row key of a table: not its tombstones or leases. */
void
wtcache_append_table_rows_pattern(StringInfo buf, const char *prefix,
								  const char *table_key)
{
	StringInfoData head;

	initStringInfo(&head);
	wtcache_append_row_key_head(&head, prefix, table_key);
	append_glob_escaped(buf, head.data);
	appendStringInfoString(buf, "*" WTC_KEY_TAG_CLOSE);
	pfree(head.data);
}

/*
 * SCAN pattern of a database's keys under the current prefix: own_keys
 * false, "P{D:*", its rows with their companions and the masters'
 * markers; true, "P{D}:*", its tags, clock, marker and query results.
 */
void
wtcache_append_database_pattern(StringInfo buf, const char *dbname, bool own_keys)
{
	StringInfoData head;

	initStringInfo(&head);
	appendStringInfoString(&head, wtcache_key_prefix);
	appendStringInfoString(&head, WTC_KEY_TAG_OPEN);
	append_escaped(&head, dbname, true);
	if (own_keys)
		appendStringInfoString(&head, WTC_KEY_TAG_CLOSE);
	appendStringInfoString(&head, WTC_KEY_SEP);
	append_glob_escaped(buf, head.data);
	appendStringInfoChar(buf, '*');
	pfree(head.data);
}

/*
 * A row value: json, a row_to_json object of len bytes, with the version
 * spliced in as its first member (palloc'd, NUL-terminated; *outlen, if
 * not NULL, gets its length).
 */
char *
wtcache_encode_value(int64 version, const char *json, size_t len, size_t *outlen)
{
	char		head[sizeof(WTC_VALUE_HEAD) + MAXINT8LEN + 1];
	const char *body = json + 1;	/* past the '{' */
	size_t		bodylen = len - 1;
	int			headlen;
	char	   *value;

	Assert(len >= 2 && json[0] == '{');
	headlen = snprintf(head, sizeof(head), WTC_VALUE_HEAD INT64_FORMAT "%s",
					   version, bodylen > 1 ? "," : "");
	value = palloc(headlen + bodylen + 1);
	memcpy(value, head, headlen);
	memcpy(value + headlen, body, bodylen);
	value[headlen + bodylen] = '\0';
	if (outlen != NULL)
		*outlen = headlen + bodylen;
	return value;
}

/*
 * The row JSON of a row value: without its "_v" (palloc'd).  A value
 * without one (not written by wtcache) is returned as it is.
 */
char *
wtcache_decode_value(const char *value, size_t len)
{
	const size_t headlen = sizeof(WTC_VALUE_HEAD) - 1;
	const char *p;
	const char *end = value + len;
	char	   *json;

	if (len < headlen || memcmp(value, WTC_VALUE_HEAD, headlen) != 0)
		return pnstrdup(value, len);
	p = value + headlen;
	while (p < end && (*p == '-' || (*p >= '0' && *p <= '9')))
		p++;
	if (p < end && *p == ',')
		p++;
	json = palloc(end - p + 2);
	json[0] = '{';
	memcpy(json + 1, p, end - p);
	json[end - p + 1] = '\0';
	return json;
}

/*
 * The fields of a row of a hash-format table (keyspace.h): values[i] is
 * column names[i]'s canonical text output, NULL for a NULL column, which
 * gets no field.  The strings are referenced, not copied (palloc'd).
 */
HashValue *
wtcache_encode_hash(int ncols, char *const *names, char *const *values)
{
	HashValue  *h = palloc(sizeof(HashValue));

	h->args = palloc(sizeof(char *) * Max(2 * ncols, 1));
	h->lens = palloc(sizeof(size_t) * Max(2 * ncols, 1));
	h->nargs = 0;
	h->size = 0;
	for (int i = 0; i < ncols; i++)
	{
		if (values[i] == NULL)
			continue;
		h->args[h->nargs] = names[i];
		h->lens[h->nargs] = strlen(names[i]);
		h->args[h->nargs + 1] = values[i];
		h->lens[h->nargs + 1] = strlen(values[i]);
		h->size += h->lens[h->nargs] + h->lens[h->nargs + 1];
		h->nargs += 2;
	}
	return h;
}

/*
 * Fixed settings under which key values and row JSON are rendered, so a row
 * has one Redis key and one JSON form whoever wrote it.
 */
static const char *const canonical_settings[][2] = {
	{"DateStyle", "ISO, YMD"},
	{"IntervalStyle", "postgres"},
	{"TimeZone", "UTC"},
	{"extra_float_digits", "1"},
	{"bytea_output", "hex"},
};

/* A backend: the canonical settings until wtcache_canonical_settings_pop. */
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

/*
 * The worker: the canonical settings for its whole life, whatever
 * postgresql.conf says or a reload changes.
 */
void
wtcache_canonical_settings_fix(void)
{
	for (int i = 0; i < lengthof(canonical_settings); i++)
		SetConfigOption(canonical_settings[i][0], canonical_settings[i][1],
						PGC_SUSET, PGC_S_OVERRIDE);
}
