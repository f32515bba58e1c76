/*-------------------------------------------------------------------------
 * tags.c
 *		Tags: templates over row columns, their Redis keys, invalidate().
 *
 * A tag is a name that cached entries depend on.  Every watched table has
 * one, "table:<schema>.<table>"; watch(..., tags => '{org:{org_id}}')
 * adds templates whose {column} parts are filled from each changed row.
 * A change invalidates the tags of its old and its new row.
 *
 * Invalidating a tag is one write, whatever depends on it: the tag's key
 *		<prefix>{<database>}:tag:<tag>
 * holds a stamp that the worker replaces with a new, never-before-used
 * one.  A cached entry records the stamps of its tags when it was computed
 * and is valid only while they all still hold (query.c).  A missing tag
 * key matches no entry, so an evicted or expired tag key only causes
 * misses.  The tag keys and query entries of a database share the
 * "{<database>}" hash tag, so one Lua script can check them together in
 * Redis Cluster.
 *
 * Templates are compiled at watch() time: "{org_id}" becomes "{1}", the
 * position of the column among the table's tag columns, and the trigger
 * passes those columns' old and new values to _capture_when_tagged().
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "keys.h"
#include "settings.h"
#include "shmem.h"
#include "tags.h"
#include "xact.h"
#include "keyspace.h"
#include "queue.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/* Tags invalidated by this transaction (query.c must not serve them). */
static List *xact_invalidated = NIL;

/*
 * Compile a table's templates.  Returns the compiled text[] and fills
 * cols[] (up to WTCACHE_MAX_TAG_COLUMNS attnums) and *ncols.
 */
ArrayType *
wtcache_compile_tag_templates(Relation rel, ArrayType *templates,
							  AttrNumber *cols, int *ncols)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Datum	   *out;
	TupleDesc	desc = RelationGetDescr(rel);

	*ncols = 0;
	deconstruct_array(templates, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	out = palloc(sizeof(Datum) * Max(n, 1));
	for (int t = 0; t < n; t++)
	{
		char	   *tmpl = TextDatumGetCString(elems[t]);
		StringInfoData buf;

		if (nulls[t] || tmpl[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tag templates must not be null or empty")));
		initStringInfo(&buf);
		for (const char *p = tmpl; *p; p++)
		{
			const char *close;
			char	   *colname;
			AttrNumber	attnum;
			int			pos = -1;

			if (*p == '}')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("tag template \"%s\" has a \"}\" without a \"{\"", tmpl),
						 errhint("Write {column} to insert a column's value, as in 'org:{org_id}'.")));
			if (*p != '{')
			{
				appendStringInfoChar(&buf, *p);
				continue;
			}
			close = strchr(p + 1, '}');
			if (close == NULL || close == p + 1 || memchr(p + 1, '{', close - p - 1) != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("tag template \"%s\" has an unclosed or empty \"{\"", tmpl),
						 errhint("Write {column} to insert a column's value, as in 'org:{org_id}'.")));
			colname = pnstrdup(p + 1, close - p - 1);
			attnum = InvalidAttrNumber;
			for (int a = 0; a < desc->natts; a++)
			{
				Form_pg_attribute att = TupleDescAttr(desc, a);

				if (!att->attisdropped && strcmp(NameStr(att->attname), colname) == 0)
				{
					attnum = att->attnum;
					break;
				}
			}
			if (attnum == InvalidAttrNumber)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("tag template \"%s\" names column \"%s\", which table \"%s\" does not have",
								tmpl, colname, RelationGetRelationName(rel)),
						 errhint("Column names in templates are case-sensitive and unquoted: {org_id}.")));
			if (!wtcache_key_type_is_stable(TupleDescAttr(desc, attnum - 1)->atttypid))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("tag template \"%s\" uses column \"%s\" of type %s",
								tmpl, colname, format_type_be(TupleDescAttr(desc, attnum - 1)->atttypid)),
						 errdetail("The text form of that type depends on session settings, so one row could get two tag names."),
						 errhint("Use columns of integer, numeric, text, uuid, boolean or enum types in tag templates.")));
			for (int c = 0; c < *ncols; c++)
				if (cols[c] == attnum)
					pos = c;
			if (pos < 0)
			{
				if (*ncols >= WTCACHE_MAX_TAG_COLUMNS)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("tag templates of table \"%s\" use more than %d columns",
									RelationGetRelationName(rel), WTCACHE_MAX_TAG_COLUMNS)));
				pos = (*ncols)++;
				cols[pos] = attnum;
			}
			appendStringInfo(&buf, "{%d}", pos + 1);
			p = close;
		}
		out[t] = CStringGetTextDatum(buf.data);
	}
	return construct_array(out, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/* Parse compiled templates ("org:{1}") into parts, in mcxt. */
TagTemplate *
wtcache_parse_tag_templates(ArrayType *compiled, int *ntemplates, MemoryContext mcxt)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	TagTemplate *t;

	deconstruct_array(compiled, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	t = MemoryContextAllocZero(mcxt, sizeof(TagTemplate) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		char	   *s = nulls[i] ? "" : TextDatumGetCString(elems[i]);
		int			maxparts = 1;

		for (const char *p = s; *p; p++)
			if (*p == '{')
				maxparts += 2;
		t[i].parts = MemoryContextAllocZero(mcxt, sizeof(TagPart) * maxparts);
		for (const char *p = s; *p;)
		{
			TagPart    *part = &t[i].parts[t[i].nparts++];

			if (*p == '{')
			{
				part->col = atoi(p + 1) - 1;
				p = strchr(p, '}');
				if (p == NULL)
					elog(ERROR, "wtcache: malformed compiled tag template \"%s\"", s);
				p++;
			}
			else
			{
				const char *end = strchr(p, '{');

				if (end == NULL)
					end = p + strlen(p);
				part->col = -1;
				part->lit = MemoryContextStrdup(mcxt, pnstrdup(p, end - p));
				p = end;
			}
		}
	}
	*ntemplates = n;
	return t;
}

/*
 * Render each template from one row's tag column values (text, or NULL).
 * A template naming a NULL column gives no tag.  Returns the number of
 * tags written to out (palloc'd in the current context).
 */
int
wtcache_render_tags(const TagTemplate *templates, int ntemplates,
					char **colvals, char **out)
{
	int			n = 0;

	for (int t = 0; t < ntemplates; t++)
	{
		StringInfoData buf;
		bool		skip = false;

		initStringInfo(&buf);
		for (int p = 0; p < templates[t].nparts && !skip; p++)
		{
			const TagPart *part = &templates[t].parts[p];

			if (part->col < 0)
				appendStringInfoString(&buf, part->lit);
			else if (colvals[part->col] == NULL)
				skip = true;
			else
				appendStringInfoString(&buf, colvals[part->col]);
		}
		if (skip)
			pfree(buf.data);
		else
			out[n++] = buf.data;
	}
	return n;
}

/* The tag every watched table has (keyspace.h), or NULL if it is gone. */
char *
wtcache_table_tag(Oid relid)
{
	char	   *relname = get_rel_name(relid);

	if (relname == NULL)
		return NULL;
	return wtcache_format_table_tag(get_namespace_name(get_rel_namespace(relid)), relname);
}

/*
 * The table-wide companion of a table tag (keyspace.h), or NULL if the tag
 * is not a table tag.  The worker derives it from the name alone: users
 * invalidate a table tag by name, and expect every entry over the table to
 * go, narrowed ones too.
 */
char *
wtcache_table_wide_tag_of(const char *tag)
{
	size_t		plen = strlen(WTC_TABLE_TAG_PREFIX);

	if (strncmp(tag, WTC_TABLE_TAG_PREFIX, plen) != 0 || tag[plen] == '\0')
		return NULL;
	return psprintf("%s%s", WTC_TABLE_WIDE_TAG_PREFIX, tag + plen);
}

/* The table-wide tag of a table, or NULL if it is gone. */
char *
wtcache_table_wide_tag(Oid relid)
{
	char	   *tt = wtcache_table_tag(relid);

	return tt ? wtcache_table_wide_tag_of(tt) : NULL;
}

/*
 * A queue row of relid WTCACHE_TAGS_ONLY invalidating these tags when the
 * transaction commits; this transaction's cached queries stop serving them.
 */
static void
queue_invalidation(Datum *names, int n)
{
	Datum	   *group = palloc(sizeof(Datum) * (n + 1));
	QueueRow	row = {0};
	MemoryContext old;

	group[0] = wtcache_queue_tag_count(n);
	memcpy(group + 1, names, sizeof(Datum) * n);
	row.relid = WTCACHE_TAGS_ONLY;
	row.tags = group;
	row.ntags = n + 1;
	wtcache_note_live_enqueued(wtcache_queue_write(&row));

	old = MemoryContextSwitchTo(TopTransactionContext);
	for (int i = 0; i < n; i++)
		xact_invalidated = lappend(xact_invalidated, TextDatumGetCString(names[i]));
	MemoryContextSwitchTo(old);
}

/*
 * watch() of a table already watched may change its templates, so what
 * its changes render from now on: entries narrowed to the old templates'
 * tags would miss changes that render other tags, or none (narrow.c).
 */
void
wtcache_invalidate_table_wide(Oid relid)
{
	char	   *tag = wtcache_table_wide_tag(relid);
	Datum		name;

	if (tag == NULL)
		return;
	name = CStringGetTextDatum(tag);
	queue_invalidation(&name, 1);
}

void
wtcache_tags_xact_event(XactEvent event)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		xact_invalidated = NIL;	/* its memory went with the transaction */
}

/* Did this transaction invalidate the tag (not yet delivered)? */
bool
wtcache_xact_invalidated(const char *tag)
{
	ListCell   *lc;

	foreach(lc, xact_invalidated)
		if (strcmp((const char *) lfirst(lc), tag) == 0)
			return true;
	return false;
}

/*
 * The tags a caller names in one call of invalidate() or query().  Each may
 * become a Redis key that lives WTCACHE_TAG_TTL_S, and any role can call
 * both, so how many and how long is the DBA's to bound
 * (wtcache.max_tags_per_call, wtcache.max_tag_length, superuser-only).
 */
void
wtcache_check_call_tags(ArrayType *tags)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n = ArrayGetNItems(ARR_NDIM(tags), ARR_DIMS(tags));

	if (n > wtcache_max_tags_per_call)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many tags: %d, at most %d are allowed in one call", n,
						wtcache_max_tags_per_call),
				 errhint("Pass the tags in several calls, or ask a superuser to raise wtcache.max_tags_per_call.")));
	deconstruct_array(tags, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		int			len;

		if (nulls[i])
			continue;			/* the callers say what is wrong with it */
		len = VARSIZE_ANY_EXHDR(DatumGetTextPP(elems[i]));
		if (len > wtcache_max_tag_length)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("tag %d is %d bytes long, longer than the %d bytes allowed",
							i + 1, len, wtcache_max_tag_length),
					 errhint("Use short tag names such as 'org:42', or ask a superuser to raise wtcache.max_tag_length.")));
	}
}

/*
 * wtcache.invalidate(tags text[]): a queue row of relid WTCACHE_TAGS_ONLY
 * with the tags.
 * Like a captured change, it commits or rolls back with the caller, and
 * the worker delivers it after the changes queued before it.
 */
PG_FUNCTION_INFO_V1(wtcache_invalidate);
Datum
wtcache_invalidate(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	wtcache_require_preload();
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("tags must be a one-dimensional array")));
	wtcache_check_call_tags(arr);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		PG_RETURN_VOID();
	for (int i = 0; i < n; i++)
		if (nulls[i] || VARSIZE_ANY_EXHDR(DatumGetTextPP(elems[i])) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("tag %d is null or empty", i + 1),
					 errhint("Pass tag names as in wtcache.invalidate(ARRAY['org:42']).")));
	queue_invalidation(elems, n);
	PG_RETURN_VOID();
}
