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

/* ---------------------------------------------------------------------
 * Key templates (keyspace.h)
 * ---------------------------------------------------------------------
 */

static KeyTemplate *
template_error(KeyTemplateError *err, int sqlstate, const char *message,
			   const char *detail, const char *hint)
{
	err->sqlstate = sqlstate;
	err->message = message;
	err->detail = detail;
	err->hint = hint;
	return NULL;
}

#define TEMPLATE_EXAMPLE_HINT "Write literal text and {column} placeholders, as in 'user:{id}' or 'org:{org_id}:user:{id}'."

static bool
template_literal_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr(WTC_KEY_TEMPLATE_PUNCT, c) != NULL);
}

/*
 * Parse a key template (palloc'd); NULL, with *err saying why, if it is
 * not one.  Only its syntax: wtcache_key_template_bind() matches its
 * placeholders with the table's key.
 */
KeyTemplate *
wtcache_key_template_parse(const char *text, KeyTemplateError *err)
{
	KeyTemplate *t = palloc0(sizeof(KeyTemplate));
	const char *p = text;

	memset(err, 0, sizeof(*err));
	if (strlen(text) > WTC_KEY_TEMPLATE_MAX)
		return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							  psprintf("key template is longer than %d bytes", WTC_KEY_TEMPLATE_MAX),
							  NULL, TEMPLATE_EXAMPLE_HINT);
	t->text = pstrdup(text);
	t->parts = palloc0(sizeof(KeyTemplatePart) * (strlen(text) + 1));
	while (*p)
	{
		KeyTemplatePart *part = &t->parts[t->nparts];

		if (*p == WTC_KEY_TAG_OPEN[0])
		{
			const char *close = strchr(p + 1, WTC_KEY_TAG_CLOSE[0]);
			const char *open = strchr(p + 1, WTC_KEY_TAG_OPEN[0]);

			if (close == NULL || (open != NULL && open < close))
				return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									  psprintf("key template \"%s\" has a \"{\" without its \"}\"", text),
									  "A placeholder is a column name between braces; braces appear nowhere else.",
									  TEMPLATE_EXAMPLE_HINT);
			if (close == p + 1)
				return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									  psprintf("key template \"%s\" has an empty placeholder", text),
									  "A placeholder names a key column, as in {id}.",
									  TEMPLATE_EXAMPLE_HINT);
			if (t->nparts == 0)
				return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									  psprintf("key template \"%s\" must start with literal text", text),
									  "wtcache finds a table's keys with SCAN by the text they start with.",
									  TEMPLATE_EXAMPLE_HINT);
			if (t->parts[t->nparts - 1].literal == NULL ||
				(t->nparts >= 2 && strchr(t->parts[t->nparts - 1].literal, WTC_KEY_SEP[0]) == NULL))
			{
				/* the placeholder before, and the literal between them if any */
				const char *before = t->parts[t->nparts - 1].literal == NULL ?
				t->parts[t->nparts - 1].name : t->parts[t->nparts - 2].name;

				return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
									  psprintf("placeholders {%s} and {%s} of key template \"%s\" must be separated by text holding a \":\"",
											   before, pnstrdup(p + 1, close - p - 1), text),
									  "Values are escaped so that they never hold \":\"; so a \":\" between two values is what tells them apart, and no two rows share a key.",
									  "Write, for example, '{a}:{b}' or 'x:{a}:y:{b}'.");
			}
			part->name = pnstrdup(p + 1, close - p - 1);
			part->key = -1;
			p = close + 1;
		}
		else
		{
			const char *start = p;

			for (; *p && *p != WTC_KEY_TAG_OPEN[0]; p++)
				if (!template_literal_char(*p))
				{
					if (*p == WTC_KEY_TAG_CLOSE[0])
						return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
											  psprintf("key template \"%s\" has a \"}\" without its \"{\"", text),
											  "A placeholder is a column name between braces; braces appear nowhere else.",
											  TEMPLATE_EXAMPLE_HINT);
					return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
										  (unsigned char) *p < 0x20 || *p == 0x7f || (unsigned char) *p >= 0x80 ?
										  psprintf("key template \"%s\" holds a character its literal text may not hold", text) :
										  psprintf("key template \"%s\" holds \"%c\", which its literal text may not hold", text, *p),
										  "Literal text may hold only ASCII letters, digits and : _ - /: no \".\" (it would make a key look like one of the default layout), no glob character (wtcache finds keys with SCAN patterns), no \"%\" (the escape character of values), no space.",
										  TEMPLATE_EXAMPLE_HINT);
				}
			part->literal = pnstrdup(start, p - start);
			part->key = -1;
		}
		t->nparts++;
	}
	if (t->nparts == 0)
		return template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							  "key template must not be empty here",
							  NULL, "Pass '' to go back to the default layout, or a template such as 'user:{id}'.");
	return t;
}

/*
 * Match the placeholders with the key columns, named in key order: each
 * key column exactly once, and no other column (a row's key must not
 * change when a column that is not in it does).  False, with *err, if
 * they do not match.
 */
bool
wtcache_key_template_bind(KeyTemplate *t, int nkeys, char *const *keynames,
						  KeyTemplateError *err)
{
	memset(err, 0, sizeof(*err));
	for (int i = 0; i < t->nparts; i++)
	{
		KeyTemplatePart *part = &t->parts[i];

		if (part->literal != NULL)
			continue;
		part->key = -1;
		for (int k = 0; k < nkeys; k++)
			if (strcmp(part->name, keynames[k]) == 0)
				part->key = k;
		if (part->key < 0)
		{
			template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
						   psprintf("key template \"%s\" names column \"%s\", which is not a key column",
									t->text, part->name),
						   "A row's Redis key is made of its key values alone, so that it never changes while the row lives.",
						   "Name each key column once, and no other column.");
			return false;
		}
		for (int j = 0; j < i; j++)
			if (t->parts[j].literal == NULL && t->parts[j].key == part->key)
			{
				template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
							   psprintf("key template \"%s\" names key column \"%s\" twice",
										t->text, part->name),
							   NULL, "Name each key column once, and no other column.");
				return false;
			}
	}
	for (int k = 0; k < nkeys; k++)
	{
		bool		found = false;

		for (int i = 0; i < t->nparts && !found; i++)
			found = t->parts[i].literal == NULL && t->parts[i].key == k;
		if (!found)
		{
			template_error(err, ERRCODE_INVALID_PARAMETER_VALUE,
						   psprintf("key template \"%s\" does not name key column \"%s\"",
									t->text, keynames[k]),
						   "Rows that differ only in that column would share a Redis key.",
						   "Name each key column once, and no other column.");
			return false;
		}
	}
	return true;
}

/*
 * Bind the placeholders to positions in their order, whatever they name;
 * returns how many.  For what only tells a template's keys from others
 * (the worker's purge, which may outlive the table): the values land at
 * other positions, but a key parses, and renders back, all the same.
 */
int
wtcache_key_template_bind_in_order(KeyTemplate *t)
{
	int			n = 0;

	for (int i = 0; i < t->nparts; i++)
		if (t->parts[i].literal == NULL)
			t->parts[i].key = n++;
	return n;
}

/*
 * The template's key space: its text with every placeholder written "{}",
 * so that templates differing only in column names have one (palloc'd).
 */
char *
wtcache_key_template_space(const KeyTemplate *t)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < t->nparts; i++)
		appendStringInfoString(&buf, t->parts[i].literal ? t->parts[i].literal :
							   WTC_KEY_TAG_OPEN WTC_KEY_TAG_CLOSE);
	return buf.data;
}

/* A template as symbols: its literal characters, and STAR per placeholder. */
#define TEMPLATE_STAR (-1)

static int *
template_symbols(const KeyTemplate *t, int *n)
{
	int		   *sym = palloc(sizeof(int) * (strlen(t->text) + 1));

	*n = 0;
	for (int i = 0; i < t->nparts; i++)
	{
		if (t->parts[i].literal == NULL)
			sym[(*n)++] = TEMPLATE_STAR;
		else
			for (const char *c = t->parts[i].literal; *c; c++)
				sym[(*n)++] = (unsigned char) *c;
	}
	return sym;
}

/*
 * Can two templates render one key?  A placeholder renders any string
 * without ":" (values escape it), and literal text is itself, so each is a
 * pattern with stars that match no ":"; they overlap when some string
 * matches both.  f[i][j]: the rests from symbol i of a and j of b have a
 * common string.  A star may end, or take the other's next symbol (a star
 * of the other, whose string it then contains, or a character but ":").
 */
bool
wtcache_key_templates_overlap(const KeyTemplate *a, const KeyTemplate *b)
{
	int			n,
				m;
	int		   *x = template_symbols(a, &n);
	int		   *y = template_symbols(b, &m);
	bool	   *f = palloc0(sizeof(bool) * (n + 1) * (m + 1));
	bool		result;

#define F(i, j) f[(i) * (m + 1) + (j)]
	for (int i = n; i >= 0; i--)
		for (int j = m; j >= 0; j--)
		{
			bool		r = (i == n && j == m);

			if (!r && i < n && x[i] == TEMPLATE_STAR)
				r = F(i + 1, j) ||
					(j < m && (y[j] == TEMPLATE_STAR || y[j] != WTC_KEY_SEP[0]) && F(i, j + 1));
			if (!r && j < m && y[j] == TEMPLATE_STAR)
				r = F(i, j + 1) ||
					(i < n && (x[i] == TEMPLATE_STAR || x[i] != WTC_KEY_SEP[0]) && F(i + 1, j));
			if (!r && i < n && j < m && x[i] != TEMPLATE_STAR && y[j] != TEMPLATE_STAR)
				r = x[i] == y[j] && F(i + 1, j + 1);
			F(i, j) = r;
		}
	result = F(0, 0);
#undef F
	pfree(x);
	pfree(y);
	pfree(f);
	return result;
}

/* "PR": a templated row key, from a row's canonical key text (bound t). */
void
wtcache_append_templated_row_key(StringInfo buf, const char *prefix,
								 const KeyTemplate *t, char *const *values)
{
	appendStringInfoString(buf, prefix);
	for (int i = 0; i < t->nparts; i++)
	{
		if (t->parts[i].literal != NULL)
			appendStringInfoString(buf, t->parts[i].literal);
		else
			append_escaped(buf, values[t->parts[i].key], false);
	}
}

/*
 * The nkeys values of a templated row key of t under prefix, unescaped
 * into palloc'd values[]; false for a key that is not one.  Only a key
 * the template renders from those values, byte for byte, is: not "%34%32"
 * for "42", which would name the row of "42" a second time.  Values hold
 * no ":" and the text between two placeholders holds one, so the first
 * ":" after a value tells where it ends: the parse is unique.
 */
bool
wtcache_parse_templated_row_key(const KeyTemplate *t, const char *prefix,
								const char *key, size_t len, int nkeys, char **values)
{
	size_t		plen = strlen(prefix);
	size_t		pos;
	StringInfoData again;

	if (key == NULL || len < plen || memcmp(key, prefix, plen) != 0)
		return false;
	for (int k = 0; k < nkeys; k++)
		values[k] = NULL;
	pos = plen;
	for (int i = 0; i < t->nparts; i++)
	{
		const KeyTemplatePart *part = &t->parts[i];
		const char *next;
		size_t		end;
		StringInfoData v;

		if (part->literal != NULL)
		{
			size_t		llen = strlen(part->literal);

			if (len - pos < llen || memcmp(key + pos, part->literal, llen) != 0)
				return false;
			pos += llen;
			continue;
		}
		next = i + 1 < t->nparts ? t->parts[i + 1].literal : NULL;
		if (next == NULL)
			end = len;
		else
		{
			const char *colon = strchr(next, WTC_KEY_SEP[0]);

			if (colon == NULL)
			{
				/* only the last part has no ":": it ends the key */
				if (len - pos < strlen(next))
					return false;
				end = len - strlen(next);
			}
			else
			{
				const char *c = memchr(key + pos, WTC_KEY_SEP[0], len - pos);

				if (c == NULL || (size_t) (c - key) < pos + (colon - next))
					return false;
				end = (c - key) - (colon - next);
			}
		}
		for (size_t j = pos; j < end; j++)
			if (strchr(KEY_RESERVED, key[j]) != NULL && key[j] != WTC_KEY_ESCAPE[0])
				return false;
		initStringInfo(&v);
		if (part->key < 0 || part->key >= nkeys || !unescape(key + pos, end - pos, &v))
			return false;
		values[part->key] = v.data;
		pos = end;
	}
	if (pos != len)
		return false;
	for (int k = 0; k < nkeys; k++)
		if (values[k] == NULL)
			return false;
	initStringInfo(&again);
	wtcache_append_templated_row_key(&again, prefix, t, values);
	return (size_t) again.len == len && memcmp(again.data, key, len) == 0;
}

/*
 * A companion of a templated row key: "P{PR}:tomb", or with lease
 * "P{PR}:lease" (palloc'd).  PR has no brace, so it is the hash tag: the
 * companion is in the row's slot.
 */
char *
wtcache_templated_companion(const char *prefix, const char *row_key, size_t len, bool lease)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, prefix);
	appendStringInfoString(&buf, WTC_KEY_TAG_OPEN);
	appendBinaryStringInfo(&buf, row_key, len);
	appendStringInfoString(&buf, WTC_KEY_TAG_CLOSE);
	appendStringInfoString(&buf, lease ? WTC_KEY_TEMPLATED_LEASE_SUFFIX :
						   WTC_KEY_TEMPLATED_TOMBSTONE_SUFFIX);
	return buf.data;
}

/* Is key a companion of a row key of t under prefix? */
bool
wtcache_parse_templated_companion(const KeyTemplate *t, const char *prefix,
								  const char *key, size_t len, int nkeys)
{
	static const char *const suffixes[] = {
		WTC_KEY_TAG_CLOSE WTC_KEY_TEMPLATED_TOMBSTONE_SUFFIX,
		WTC_KEY_TAG_CLOSE WTC_KEY_TEMPLATED_LEASE_SUFFIX
	};
	size_t		plen = strlen(prefix);

	if (key == NULL || len < plen + 1 || memcmp(key, prefix, plen) != 0 ||
		key[plen] != WTC_KEY_TAG_OPEN[0])
		return false;
	for (int s = 0; s < lengthof(suffixes); s++)
	{
		size_t		slen = strlen(suffixes[s]);
		char	  **values;

		if (len < plen + 1 + slen || memcmp(key + len - slen, suffixes[s], slen) != 0)
			continue;
		values = palloc(sizeof(char *) * Max(nkeys, 1));
		return wtcache_parse_templated_row_key(t, prefix, key + plen + 1,
											   len - plen - 1 - slen, nkeys, values);
	}
	return false;
}

/* SCAN pattern of a template's row keys, "P<head>*": parse what it finds. */
void
wtcache_append_template_rows_pattern(StringInfo buf, const char *prefix, const KeyTemplate *t)
{
	append_glob_escaped(buf, prefix);
	append_glob_escaped(buf, t->parts[0].literal);
	appendStringInfoChar(buf, '*');
}

/* SCAN pattern of their companions, "P{P<head>*" */
void
wtcache_append_template_companions_pattern(StringInfo buf, const char *prefix,
										   const KeyTemplate *t)
{
	append_glob_escaped(buf, prefix);
	appendStringInfoString(buf, WTC_KEY_TAG_OPEN);
	append_glob_escaped(buf, prefix);
	append_glob_escaped(buf, t->parts[0].literal);
	appendStringInfoChar(buf, '*');
}

/*
 * The claim of a template's key space, "P{template}:<space>" (the space
 * escaped, so it holds "%7B%7D" and no ":"): one key per key space and
 * prefix, whichever database asks.
 */
void
wtcache_append_claim_key(StringInfo buf, const char *prefix, const KeyTemplate *t)
{
	char	   *space = wtcache_key_template_space(t);

	appendStringInfoString(buf, prefix);
	appendStringInfoString(buf, WTC_KEY_TAG_OPEN WTC_KEY_CLAIM_TAG WTC_KEY_TAG_CLOSE WTC_KEY_SEP);
	append_escaped(buf, space, false);
	pfree(space);
}

/*
 * "D:", what the value of a claim a database holds starts with: the claim
 * holds the table key (D:S.T) of the table that made it, whose name may
 * change since; a claim is its database's whichever table made it.
 */
void
wtcache_append_claim_owner_head(StringInfo buf, const char *dbname)
{
	append_escaped(buf, dbname, true);
	appendStringInfoString(buf, WTC_KEY_SEP);
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

/*
 * The key each round of WAIT writes first on a marker's master
 * (replicas.c): a companion of the marker, so in its slot, and never the
 * marker itself, whose absence must stay for the marker checks to see.
 */
char *
wtcache_marker_ack_key(const char *marker_key)
{
	return psprintf("%s" WTC_KEY_ACK_SUFFIX, marker_key);
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
 * Is this string a row value wtcache wrote (the codec's head, then the
 * version's digits)?  Under a key template the key space is shared with
 * the application, whose own strings there are not rows.
 */
bool
wtcache_is_row_value(const char *value, size_t len)
{
	size_t		head = strlen(WTC_VALUE_HEAD);

	return len > head && memcmp(value, WTC_VALUE_HEAD, head) == 0 &&
		value[head] >= '0' && value[head] <= '9';
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
