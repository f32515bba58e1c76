/*-------------------------------------------------------------------------
 * queue.h
 *		The row of wtcache.queue: its struct, decoder, tag groups, writer.
 *
 * Capture, resync, invalidate() and the hold of a table write queue rows;
 * the worker (from an SPI result) and the pending filter's count (from a
 * heap scan) read them.  They agree on the row through this header only.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_QUEUE_H
#define WTCACHE_QUEUE_H

#include "wtcache.h"

#include "access/htup.h"
#include "access/tupdesc.h"

/* The relid of a queue row that only invalidates tags (wtcache.invalidate()) */
#define WTCACHE_TAGS_ONLY InvalidOid

/*
 * One queue row.  Rows are either the keys of a chunk of changes (has_keys:
 * key_width values per key, flattened, as text), the whole table relid
 * (keys NULL: TRUNCATE, unwatch with purge, a hold; table_key names it,
 * and key_template the layout of its keys), or
 * for relid WTCACHE_TAGS_ONLY an invalidate() of tags alone.  tags holds tag
 * groups (see QueueTagIter).  per_table: rows of resync/warm, pending per
 * table (pending.c).
 */
typedef struct QueueRow
{
	int64		id;				/* read only: writers draw it from the
								 * sequence */
	Oid			relid;
	bool		has_keys;		/* false: keys is NULL */
	Datum	   *keys;
	int			nvalues;		/* elements of keys: key_width per key */
	int			key_width;		/* 0 when NULL */
	char	   *table_key;
	bool		per_table;
	Datum	   *tags;
	int			ntags;			/* elements of tags, counts and names */
	char	   *set_aside;		/* the reason the worker skips the row */
	char	   *key_template;	/* a whole-table row: the key template of
								 * the keys it removes, NULL: the default
								 * layout's (1.3) */
	bool		discard;		/* read only: given up by a DBA */
	TransactionId xmin;			/* read only, if the reader's SELECT has it */
	TimestampTz enqueued_at;	/* read only, if the reader's SELECT has
								 * it, else 0 (the delivery lag's start) */

	/* as stored, (Datum) 0 for NULL: decoded, not yet expanded */
	Datum		keys_array;
	Datum		tags_array;
	Datum		table_key_text;
	Datum		set_aside_text;
	Datum		key_template_text;
} QueueRow;

/* Where each column is in a tuple of the queue, or of a SELECT from it. */
typedef struct QueueColumns
{
	AttrNumber	id;
	AttrNumber	relid;
	AttrNumber	keys;
	AttrNumber	table_key;
	AttrNumber	key_width;
	AttrNumber	per_table;
	AttrNumber	tags;
	AttrNumber	enqueued_at;
	AttrNumber	set_aside;		/* 1.2 on */
	AttrNumber	discard;		/* 1.2 on */
	AttrNumber	key_template;	/* 1.3 on */
	AttrNumber	xmin;			/* a reader's SELECT only */
	bool		foreign;		/* a column of a name or type not above */
} QueueColumns;

extern void wtcache_queue_columns(TupleDesc desc, QueueColumns *cols);
extern void wtcache_queue_decode(HeapTuple tup, TupleDesc desc,
								 const QueueColumns *cols, QueueRow *row);
extern void wtcache_queue_expand(QueueRow *row);

/*
 * A row's tags array is one group per key, in key order (for an
 * invalidate() row, one group): the count of tag names as text, then that
 * many names.  Keys without tags have a group of "0"; a row none of whose
 * keys has tags stores NULL.
 */
typedef struct QueueTagIter
{
	const Datum *elems;
	int			nelems;
	int			pos;
} QueueTagIter;

static inline void
wtcache_queue_tags_begin(QueueTagIter *it, const QueueRow *row)
{
	it->elems = row->tags;
	it->nelems = row->ntags;
	it->pos = 0;
}

extern bool wtcache_queue_tags_next(QueueTagIter *it, const Datum **names, int *count);
extern Datum wtcache_queue_tag_count(int count);

/* The pending-filter indexes of a row (pending.c) need at most this many. */
static inline int
wtcache_queue_max_indexes(const QueueRow *row)
{
	return row->nvalues / Max(row->key_width, 1) + row->ntags + 2;
}

extern int64 wtcache_queue_write(const QueueRow *row);

#endif							/* WTCACHE_QUEUE_H */
