/*-------------------------------------------------------------------------
 * queue.c
 *		The row of wtcache.queue: its columns, decoder, tag groups.
 *
 * Everything that reads a queue row goes through here, so the worker and
 * the pending filter's count agree on what a row means (queue.h, and the
 * table's comment in wtcache--1.0.sql).
 *
 * Columns are found by name and type, never by position: upgrade scripts
 * add columns at the end of the table, a superuser may alter it, and the
 * worker reads it through a SELECT of its own.  The readers map a tuple
 * descriptor once per scan or claim.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "queue.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"

/* The columns, in the table's order (1.2); xmin only a SELECT has. */
typedef struct QueueColumnDef
{
	const char *name;
	Oid			type;
	size_t		offset;			/* of its AttrNumber in QueueColumns */
} QueueColumnDef;

static const QueueColumnDef queue_column_defs[] = {
	{"id", INT8OID, offsetof(QueueColumns, id)},
	{"relid", OIDOID, offsetof(QueueColumns, relid)},
	{"keys", TEXTARRAYOID, offsetof(QueueColumns, keys)},
	{"table_key", TEXTOID, offsetof(QueueColumns, table_key)},
	{"key_width", INT2OID, offsetof(QueueColumns, key_width)},
	{"per_table", BOOLOID, offsetof(QueueColumns, per_table)},
	{"tags", TEXTARRAYOID, offsetof(QueueColumns, tags)},
	{"enqueued_at", TIMESTAMPTZOID, offsetof(QueueColumns, enqueued_at)},
	{"set_aside", TEXTOID, offsetof(QueueColumns, set_aside)},
	{"discard", BOOLOID, offsetof(QueueColumns, discard)},
	{"xmin", XIDOID, offsetof(QueueColumns, xmin)},
};

static void
map_columns(TupleDesc desc, QueueColumns *cols)
{
	memset(cols, 0, sizeof(*cols));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const QueueColumnDef *def = NULL;

		if (att->attisdropped)
			continue;
		/* in the table's own order, each is found at the first comparison */
		if (i < lengthof(queue_column_defs) &&
			strcmp(NameStr(att->attname), queue_column_defs[i].name) == 0)
			def = &queue_column_defs[i];
		for (int d = 0; def == NULL && d < lengthof(queue_column_defs); d++)
			if (strcmp(NameStr(att->attname), queue_column_defs[d].name) == 0)
				def = &queue_column_defs[d];
		if (def == NULL || att->atttypid != def->type)
			cols->foreign = true;
		else
			*(AttrNumber *) ((char *) cols + def->offset) = (AttrNumber) (i + 1);
	}
}

/*
 * For a reader: the columns of the queue, or of a SELECT from it, that
 * every reader decodes must be there (a superuser may have altered the
 * table); the others are optional.
 */
void
wtcache_queue_columns(TupleDesc desc, QueueColumns *cols)
{
	const char *missing = NULL;

	map_columns(desc, cols);
	if (cols->id == InvalidAttrNumber)
		missing = "id";
	else if (cols->relid == InvalidAttrNumber)
		missing = "relid";
	else if (cols->keys == InvalidAttrNumber)
		missing = "keys";
	else if (cols->table_key == InvalidAttrNumber)
		missing = "table_key";
	else if (cols->key_width == InvalidAttrNumber)
		missing = "key_width";
	else if (cols->per_table == InvalidAttrNumber)
		missing = "per_table";
	else if (cols->tags == InvalidAttrNumber)
		missing = "tags";
	if (missing)
		elog(ERROR, "wtcache: wtcache.queue lacks its column \"%s\", or it has another type",
			 missing);
}

static inline Datum
queue_getattr(HeapTuple tup, TupleDesc desc, AttrNumber attnum, bool *isnull)
{
	if (attnum == InvalidAttrNumber)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return heap_getattr(tup, attnum, desc, isnull);
}

/*
 * Decode a queue row from a tuple described by desc (cols mapped from it).
 * Allocates nothing: the arrays and texts stay in the tuple until
 * wtcache_queue_expand(), which the worker spares rows it skips.
 */
void
wtcache_queue_decode(HeapTuple tup, TupleDesc desc, const QueueColumns *cols,
					 QueueRow *row)
{
	bool		isnull;
	Datum		d;

	memset(row, 0, sizeof(*row));
	row->id = DatumGetInt64(heap_getattr(tup, cols->id, desc, &isnull));
	row->relid = DatumGetObjectId(heap_getattr(tup, cols->relid, desc, &isnull));
	d = heap_getattr(tup, cols->keys, desc, &isnull);
	row->has_keys = !isnull;
	row->keys_array = isnull ? (Datum) 0 : d;
	d = heap_getattr(tup, cols->key_width, desc, &isnull);
	row->key_width = isnull ? 0 : DatumGetInt16(d);
	d = heap_getattr(tup, cols->table_key, desc, &isnull);
	row->table_key_text = isnull ? (Datum) 0 : d;
	d = heap_getattr(tup, cols->per_table, desc, &isnull);
	row->per_table = !isnull && DatumGetBool(d);
	d = heap_getattr(tup, cols->tags, desc, &isnull);
	row->tags_array = isnull ? (Datum) 0 : d;
	d = queue_getattr(tup, desc, cols->set_aside, &isnull);
	row->set_aside_text = isnull ? (Datum) 0 : d;
	d = queue_getattr(tup, desc, cols->discard, &isnull);
	row->discard = !isnull && DatumGetBool(d);
	d = queue_getattr(tup, desc, cols->xmin, &isnull);
	row->xmin = isnull ? InvalidTransactionId : DatumGetTransactionId(d);
}

/* The decoded row's arrays and texts, in CurrentMemoryContext. */
void
wtcache_queue_expand(QueueRow *row)
{
	if (row->keys_array != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(row->keys_array), TEXTOID, -1, false,
						  TYPALIGN_INT, &row->keys, NULL, &row->nkeys);
	if (row->tags_array != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(row->tags_array), TEXTOID, -1, false,
						  TYPALIGN_INT, &row->tags, NULL, &row->ntags);
	if (row->table_key_text != (Datum) 0)
		row->table_key = TextDatumGetCString(row->table_key_text);
	if (row->set_aside_text != (Datum) 0)
		row->set_aside = TextDatumGetCString(row->set_aside_text);
}

/*
 * The next tag group: its names are (*names)[0 .. *count).  False when
 * none is left.  A count past the end of the array takes what there is.
 */
bool
wtcache_queue_tags_next(QueueTagIter *it, const Datum **names, int *count)
{
	char		buf[16];
	int			n;

	if (it->pos >= it->nelems)
		return false;
	/* a small number: parsed without a palloc, as this runs per key */
	text_to_cstring_buffer(DatumGetTextPP(it->elems[it->pos]), buf, sizeof(buf));
	n = Max(atoi(buf), 0);
	*names = it->elems + it->pos + 1;
	*count = Min(n, it->nelems - it->pos - 1);
	it->pos += 1 + *count;
	return true;
}
