/*-------------------------------------------------------------------------
 * keyspace.h
 *		The Redis layout: every key name, key suffix and SCAN pattern
 *		wtcache uses, the format of the values it stores, and the settings
 *		values are rendered under.  keyspace.c builds the names.
 *
 * This layout is a contract, not an internal detail.  Users' Redis holds
 * keys and values in this form, written by earlier versions, and
 * applications in any language GET row keys and decode their JSON
 * themselves (README, "Redis layout"); during an upgrade a worker of one
 * version and backends of another share the same keys.  A byte changed
 * here orphans every cached row (never updated again, served stale until
 * it expires), loses the tombstones and leases that keep fills from going
 * back in time, and breaks every reader that decodes a value.  So each
 * part is spelled here once, the Lua scripts are put together from the
 * same macros, and no other file writes a ':', a brace or "_v" of a key or
 * a value.
 *
 * With P the key prefix (wtcache.key_prefix), D the database, S.T the
 * table and K1... the key column values in key order, each escaped by
 * keyspace.c (% : { } as %XX, and . too in D, S and T):
 *
 *	P{D:S.T:K1[:K2...]}		a row: its row_to_json with "_v" first (the
 *							value codec below), or for a table watched
 *							with format 'hash' a hash of its columns and
 *							"_v"; missing means not cached
 *	<row key>:t				its tombstone: the version of its delete, or
 *							of a write with a TTL, outliving the row
 *	<row key>:l				a reader's fill lease (read.c)
 *	P{D}:tag:<tag>			a tag's stamp (tags.c)
 *	P{D}:clock				the counter that keeps tag stamps unique
 *	P{D}:query:<sha256>		a cached query result, a hash (query.c)
 *	<query key>:l			the lease of its fill
 *	P{D}:gen				the generation marker (push.c)
 *	P{D:gen<n>}				in a Cluster, the marker of one master
 *	<marker>:wal			where in the WAL a marker was last raised
 *	<marker>:ack			a counter each round of WAIT increments first
 *							(replicas.c); its value means nothing
 *	P{D}:event_seq			the sequence number of the database's last event
 *	Pevents					the channel applied changes are published on
 *
 * Why this shape: the first "{...}" is the Redis Cluster hash tag, so a
 * row's companions, written after its closing brace, live in its slot,
 * and a database's tags, clock, markers and query results share one slot,
 * where one script can read them together.  A row key always ends in "}";
 * the only other keys that do, the masters' markers, name no table (no
 * unescaped "."), so a plain GET of a row key returns a live row or
 * nothing.  The prefix may hold no brace (it would move the hash tag) and
 * no glob character (the SCAN patterns below would match other keys).
 *
 * A table watched with a key template (watch(key_template => 'user:{id}'),
 * 1.3) names its rows by the application's layout instead, with R the
 * rendered template (its literal text, each {column} replaced by the
 * column's value escaped as above, % : { } as %XX):
 *
 *	PR						a row, as above: e.g. wtc:user:42
 *	P{PR}:tomb				its tombstone
 *	P{PR}:lease				its fill lease
 *	P{template}:<space>		the claim of the template's key space by one
 *							database (<space>: the template with every
 *							placeholder written "{}", escaped); holds the
 *							table key D:S.T of its owner
 *
 * A templated row key holds no brace (the literal text may not, values
 * escape them), so its slot is that of the whole key, which is its
 * companions' hash tag: same slot.  Its companions' suffixes are their
 * own, so that no companion is ever a key of the default layout: after
 * "P{...}" a default-layout key goes on with "", ":t", ":l", ":wal",
 * ":ack" or ":" and a word of its database's keys, a claim with an escaped key
 * space (which has a "%"), a templated companion with ":tomb" or ":lease"
 * (with ":t", a row value holding a "." could make "P{PR}:t" the
 * tombstone of some "P{D:S.T:K...}").  And a templated row key, without
 * braces, is none of wtcache's other keys.  Templates of one database
 * never overlap (watch()), databases claim their key spaces (the worker),
 * and every value is escaped, so no two rows share a key.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_KEYSPACE_H
#define WTCACHE_KEYSPACE_H

#include "wtcache.h"
#include "redis.h"

#define WTC_KEY_PREFIX_DEFAULT	"wtc:"
/* what wtcache.key_prefix may not hold: hash tag braces, glob characters */
#define WTC_KEY_PREFIX_FORBIDDEN "{}*?[]\\"

/* The grammar of a key name */
#define WTC_KEY_TAG_OPEN	"{"		/* the Redis Cluster hash tag */
#define WTC_KEY_TAG_CLOSE	"}"
#define WTC_KEY_SEP			":"		/* between components */
#define WTC_KEY_NAME_SEP	"."		/* between schema and table */
#define WTC_KEY_ESCAPE		"%"		/* then two hex digits */

/* Companions of a row key (the lease, of a query result key too) */
#define WTC_KEY_TOMBSTONE_SUFFIX	WTC_KEY_SEP "t"
#define WTC_KEY_LEASE_SUFFIX		WTC_KEY_SEP "l"
/* Companions of a generation marker */
#define WTC_KEY_WAL_SUFFIX			WTC_KEY_SEP "wal"
#define WTC_KEY_ACK_SUFFIX			WTC_KEY_SEP "ack"

/* Companions of a templated row key P R: "P{PR}" and one of these */
#define WTC_KEY_TEMPLATED_TOMBSTONE_SUFFIX	WTC_KEY_SEP "tomb"
#define WTC_KEY_TEMPLATED_LEASE_SUFFIX		WTC_KEY_SEP "lease"

/* The claims of template key spaces: "P{template}:<space>" */
#define WTC_KEY_CLAIM_TAG	"template"

/*
 * Key templates: literal text of these characters and {column}
 * placeholders.  No "." (see above), no brace but a placeholder's, no
 * glob character (SCAN patterns), no "%" (the escape), no space.
 */
#define WTC_KEY_TEMPLATE_PUNCT	":_-/"
#define WTC_KEY_TEMPLATE_MAX	256

/* A database's own keys: "P{D}:" and one of these */
#define WTC_KEY_CLOCK		"clock"
#define WTC_KEY_MARKER		"gen"
#define WTC_KEY_TAG			"tag" WTC_KEY_SEP
#define WTC_KEY_QUERY		"query" WTC_KEY_SEP
#define WTC_KEY_EVENT_SEQ	"event_seq"

/* The events channel: P and this */
#define WTC_EVENTS_CHANNEL	"events"

/*
 * The tag every watched table has, from its unescaped schema and table
 * names: users invalidate it by this name.
 */
#define WTC_TABLE_TAG_FORMAT "table:%s.%s"

/*
 * Its table-wide companion, "tablewide:<schema>.<table>": what a cached
 * query narrowed to template tags depends on besides them (narrow.c).  The
 * worker bumps it for what changes the table's rows without rendering its
 * templates (TRUNCATE, a resync or requeue, a partition's DDL, a changed
 * watch) and with every invalidation of the table tag; a row change alone
 * does not.  The prefix is the table tag's format's own.
 */
#define WTC_TABLE_TAG_PREFIX		"table:"
#define WTC_TABLE_WIDE_TAG_PREFIX	"tablewide:"

/*
 * The value codec.  A row value is the row's row_to_json text with the
 * member "_v", its version, spliced in first:
 *		{"_v":42,"id":1,"name":"x"}
 * First, so that a script reads the version with a GETRANGE of a few bytes;
 * a JSON member, so that readers that GET and decode JSON keep working.
 */
#define WTC_VALUE_VERSION	"_v"
#define WTC_VALUE_HEAD		"{\"" WTC_VALUE_VERSION "\":"

/*
 * The hash codec (a table watched with format => 'hash'): the row is a
 * Redis hash with a field per column of the value (the projection, in
 * table order), named as the column and holding its text output under the
 * canonical settings below, and the field "_v" holding the version.  A
 * NULL column has no field.  So a reader HGETs one column, or "_v", and
 * gets what psql would print for it.  A column named "_v" is never a
 * field (watch() refuses one; wtcache_value_columns leaves out one that
 * comes later).  The scripts write "_v" themselves, from the version they
 * compare; the fields of a row travel as a HashValue.
 */
#define WTC_FORMAT_JSON		"json"
#define WTC_FORMAT_HASH		"hash"

typedef struct HashValue
{
	int			nargs;			/* field, value, field, value...: 2 per
								 * column that is not NULL */
	const char **args;
	size_t	   *lens;
	size_t		size;			/* bytes of every field name and value: what
								 * wtcache.max_value_size bounds */
} HashValue;

/* A cached query result: a hash of these fields (query.c) */
#define WTC_QUERY_ROWS		"rows"		/* the rows, a JSON array */
#define WTC_QUERY_TAGS		"tags"		/* its tag keys, a JSON array */
#define WTC_QUERY_VERSIONS	"versions"	/* their stamps, joined by: */
#define WTC_QUERY_VERSIONS_SEP ","

/*
 * The same parts as Lua string literals, to be pasted into script text by
 * string-literal concatenation.  None of them holds a quote or backslash.
 */
#define WTC_LUA_STR(s)		"'" s "'"
/* a Lua pattern capturing the version at the head of a row value */
#define WTC_LUA_VALUE_VERSION	WTC_LUA_STR("^" WTC_VALUE_HEAD "(%d+)")

/*
 * Lua: a tag stamp never handed out before, from Redis's clock and a
 * counter (P{D}:clock), so that even a tag key that expired or was
 * evicted never comes back with a value an old entry recorded.
 */
#define WTCACHE_LUA_NEW_STAMP \
	"local function new_stamp(clock)\n" \
	"  local t = redis.call('TIME')\n" \
	"  return t[1] .. string.format('%06d', tonumber(t[2])) .. '-' .. redis.call('INCR', clock)\n" \
	"end\n"

/*
 * A key template, parsed (wtcache_key_template_parse): literal parts and
 * placeholders, in order.  A placeholder names a column (name); once bound
 * to the table's key (wtcache_key_template_bind), key is the position of
 * that column in the key, as in every array of key values.
 */
typedef struct KeyTemplatePart
{
	const char *literal;		/* NULL: a placeholder */
	const char *name;			/* a placeholder's column */
	int			key;			/* a placeholder's position in the key; -1
								 * until bound */
} KeyTemplatePart;

typedef struct KeyTemplate
{
	const char *text;			/* as given, e.g. "user:{id}" */
	int			nparts;
	KeyTemplatePart *parts;		/* parts[0] is a literal, never empty */
} KeyTemplate;

/* Why a template was refused: for the caller's ereport */
typedef struct KeyTemplateError
{
	int			sqlstate;
	const char *message;
	const char *detail;
	const char *hint;
} KeyTemplateError;

/* Rows and their companions */
extern void wtcache_append_table_key(StringInfo buf, const char *dbname,
									 const char *nspname, const char *relname);
extern bool wtcache_parse_table_key(const char *table_key, char **nspname,
									char **relname);
extern void wtcache_append_row_key_head(StringInfo buf, const char *prefix,
										const char *table_key);
extern void wtcache_append_key_values(StringInfo buf, int nkeys, char **values);
extern void wtcache_append_row_key(StringInfo buf, const char *prefix,
								   const char *table_key, int nkeys,
								   char **values);
extern char *wtcache_row_key_from_values(const char *prefix, const char *table_key,
										 const char *key_values);
extern bool wtcache_parse_row_key(const char *key, size_t len, size_t headlen,
								  int nkeys, char **values);
extern char *wtcache_lease_key(const char *key);

/* Key templates */
extern KeyTemplate *wtcache_key_template_parse(const char *text, KeyTemplateError *err);
extern bool wtcache_key_template_bind(KeyTemplate *t, int nkeys, char *const *keynames,
									  KeyTemplateError *err);
extern int	wtcache_key_template_bind_in_order(KeyTemplate *t);
extern char *wtcache_key_template_space(const KeyTemplate *t);
extern bool wtcache_key_templates_overlap(const KeyTemplate *a, const KeyTemplate *b);
extern void wtcache_append_templated_row_key(StringInfo buf, const char *prefix,
											 const KeyTemplate *t, char *const *values);
extern bool wtcache_parse_templated_row_key(const KeyTemplate *t, const char *prefix,
											const char *key, size_t len, int nkeys,
											char **values);
extern char *wtcache_templated_companion(const char *prefix, const char *row_key,
										 size_t len, bool lease);
extern bool wtcache_parse_templated_companion(const KeyTemplate *t, const char *prefix,
											  const char *key, size_t len, int nkeys);
extern void wtcache_append_template_rows_pattern(StringInfo buf, const char *prefix,
												 const KeyTemplate *t);
extern void wtcache_append_template_companions_pattern(StringInfo buf, const char *prefix,
													   const KeyTemplate *t);
extern void wtcache_append_claim_key(StringInfo buf, const char *prefix,
									 const KeyTemplate *t);
extern void wtcache_append_claim_owner_head(StringInfo buf, const char *dbname);

/* A database's keys */
extern void wtcache_append_clock_key(StringInfo buf, const char *dbname);
extern void wtcache_append_event_seq_key(StringInfo buf, const char *dbname);
extern void wtcache_append_marker_key(StringInfo buf, const char *dbname);
extern char *wtcache_master_marker_key(WtcRedis *r, const char *dbname, int master);
extern char *wtcache_marker_wal_key(const char *marker_key);
extern char *wtcache_marker_ack_key(const char *marker_key);
extern void wtcache_append_tag_key(StringInfo buf, const char *dbname, const char *tag);
extern void wtcache_append_query_key(StringInfo buf, const char *dbname,
									 const char *digest_hex);
extern char *wtcache_format_table_tag(const char *nspname, const char *relname);
extern void wtcache_events_channel(StringInfo buf);

/* SCAN MATCH patterns */
extern void wtcache_append_table_rows_pattern(StringInfo buf, const char *prefix,
											  const char *table_key);
extern void wtcache_append_database_pattern(StringInfo buf, const char *dbname,
											bool own_keys);

/* The value codec */
extern char *wtcache_encode_value(int64 version, const char *json, size_t len,
								  size_t *outlen);
extern char *wtcache_decode_value(const char *value, size_t len);
extern bool wtcache_is_row_value(const char *value, size_t len);
extern HashValue *wtcache_encode_hash(int ncols, char *const *names, char *const *values);

/* Canonical rendering */
extern int	wtcache_canonical_settings_push(void);
extern void wtcache_canonical_settings_pop(int nestlevel);
extern void wtcache_canonical_settings_fix(void);

#endif							/* WTCACHE_KEYSPACE_H */
