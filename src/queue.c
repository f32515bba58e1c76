/*-------------------------------------------------------------------------
 * queue.c
 *		The row of wtcache.queue: its columns, decoder, tag groups, writer.
 *
 * Everything that writes or reads a queue row goes through here, so the
 * writers, the worker and the pending filter's count agree on what a row
 * means (queue.h, and the table's comment in wtcache--1.0.sql).
 *
 * Columns are found by name and type, never by position: upgrade scripts
 * add columns at the end of the table, a superuser may alter it, and the
 * worker reads it through a SELECT of its own.  The readers map a tuple
 * descriptor once per scan or claim; the writer maps the relation's at
 * every write, a dozen comparisons, so nothing goes stale when the queue
 * is altered, or given a trigger or rule, in the middle of a session.
 *
 * The writer counts the row in the pending filter before the insert draws
 * its id (pending.c), and inserts it as the queue's owner: writers of
 * watched tables need no rights on wtcache's own tables.  The insert goes
 * straight to the heap and indexes, as logical replication's apply does,
 * so a commit pays no parse, plan or executor start-up for its queue row;
 * a queue with anything the executor would have to run (a trigger, a rule,
 * row security, a column we do not know) gets a plain INSERT instead.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "pending.h"
#include "rights.h"
#include "queue.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"


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
	{"key_template", TEXTOID, offsetof(QueueColumns, key_template)},
	{"xmin", XIDOID, offsetof(QueueColumns, xmin)},
};

/*
 * Plain INSERTs: without set_aside (which 1.0 and 1.1 lack) or key_template
 * (1.3), with set_aside (a hold), with key_template (a whole-table row of
 * a table with a key template).
 */
static SPIPlanPtr insert_plans[3] = {NULL, NULL, NULL};

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
	d = queue_getattr(tup, desc, cols->key_template, &isnull);
	row->key_template_text = isnull ? (Datum) 0 : d;
	d = queue_getattr(tup, desc, cols->xmin, &isnull);
	row->xmin = isnull ? InvalidTransactionId : DatumGetTransactionId(d);
	d = queue_getattr(tup, desc, cols->enqueued_at, &isnull);
	row->enqueued_at = isnull ? 0 : DatumGetTimestampTz(d);
}

/* The decoded row's arrays and texts, in CurrentMemoryContext. */
void
wtcache_queue_expand(QueueRow *row)
{
	if (row->keys_array != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(row->keys_array), TEXTOID, -1, false,
						  TYPALIGN_INT, &row->keys, NULL, &row->nvalues);
	if (row->tags_array != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(row->tags_array), TEXTOID, -1, false,
						  TYPALIGN_INT, &row->tags, NULL, &row->ntags);
	if (row->table_key_text != (Datum) 0)
		row->table_key = TextDatumGetCString(row->table_key_text);
	if (row->set_aside_text != (Datum) 0)
		row->set_aside = TextDatumGetCString(row->set_aside_text);
	if (row->key_template_text != (Datum) 0)
		row->key_template = TextDatumGetCString(row->key_template_text);
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

/* The head of a tag group of count names. */
Datum
wtcache_queue_tag_count(int count)
{
	char		buf[12];

	pg_ltoa(count, buf);
	return CStringGetTextDatum(buf);
}

/*
 * The queue's columns, if this backend may write its rows itself; seq is
 * the sequence its id's default draws from.
 */
static bool
direct_layout(Relation rel, QueueColumns *cols, Oid *seq)
{
	/* the executor would run triggers, rules and row security; INSERT does */
	if (rel->trigdesc != NULL || rel->rd_rules != NULL || rel->rd_rel->relrowsecurity)
		return false;
	map_columns(RelationGetDescr(rel), cols);
	/* a column whose default we would not apply, or of a type we do not write */
	if (cols->foreign)
		return false;
	*seq = get_relname_relid(WTCACHE_QUEUE_SEQ, RelationGetNamespace(rel));
	return OidIsValid(*seq) && cols->id && cols->relid && cols->keys &&
		cols->table_key && cols->key_width && cols->per_table && cols->tags &&
		cols->enqueued_at;
}

/*
 * The row, with what the table's defaults would give (the id from its
 * sequence, drawn now: see capture.c), inserted and indexed as logical
 * replication's apply does it.
 */
static void
insert_direct(Relation rel, Datum *values, bool *nulls)
{
	EState	   *estate = CreateExecutorState();
	MemoryContext old = MemoryContextSwitchTo(estate->es_query_cxt);
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	int			natts = RelationGetDescr(rel)->natts;
	TupleTableSlot *slot;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(rel), &TTSOpsVirtual);
	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * natts);
	ExecStoreVirtualTuple(slot);
	ExecSimpleRelationInsert(rri, estate, slot);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	MemoryContextSwitchTo(old);
	FreeExecutorState(estate);
}

static int64
insert_spi(const QueueRow *row, Datum keys, Datum tags)
{
	/* a hold (set_aside) removes nothing: it has no key template */
	int			variant = row->set_aside != NULL ? 1 : row->key_template != NULL ? 2 : 0;
	Datum		args[7];
	char		argnulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (insert_plans[variant] == NULL)
	{
		Oid			argtypes[7] = {OIDOID, TEXTARRAYOID, TEXTOID, INT2OID, TEXTARRAYOID, BOOLOID, TEXTOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare(variant == 1 ?
						   "INSERT INTO wtcache.queue (relid, keys, table_key, key_width, tags, per_table, set_aside) "
						   "VALUES ($1, $2, $3, $4, $5, $6, $7)" :
						   variant == 2 ?
						   "INSERT INTO wtcache.queue (relid, keys, table_key, key_width, tags, per_table, key_template) "
						   "VALUES ($1, $2, $3, $4, $5, $6, $7)" :
						   "INSERT INTO wtcache.queue (relid, keys, table_key, key_width, tags, per_table) "
						   "VALUES ($1, $2, $3, $4, $5, $6)",
						   variant > 0 ? 7 : 6, argtypes);
		if (plan == NULL)
			elog(ERROR, "could not prepare the wtcache queue insert: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		insert_plans[variant] = plan;
	}
	args[0] = ObjectIdGetDatum(row->relid);
	args[1] = keys;
	if (keys == (Datum) 0)
		argnulls[1] = argnulls[3] = 'n';
	args[2] = row->table_key ? CStringGetTextDatum(row->table_key) : (Datum) 0;
	if (row->table_key == NULL)
		argnulls[2] = 'n';
	args[3] = Int16GetDatum((int16) row->key_width);
	args[4] = tags;
	if (tags == (Datum) 0)
		argnulls[4] = 'n';
	args[5] = BoolGetDatum(row->per_table);
	args[6] = variant == 1 ? CStringGetTextDatum(row->set_aside) :
		variant == 2 ? CStringGetTextDatum(row->key_template) : (Datum) 0;
	rc = SPI_execute_plan(insert_plans[variant], args, argnulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "wtcache queue insert failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	/* a queue with rules or triggers may not hand the id back: unknown */
	return 0;
}

/* keys and tags: the arrays, or (Datum) 0 for NULL.  Returns the id, or 0 if unknown. */
static int64
insert_row(const QueueRow *row, Datum keys, Datum tags)
{
	int64		id = 0;
	Oid			owner;
	WtcRights	rights;
	Oid			queue;
	Relation	rel;
	QueueColumns cols;
	Oid			seq = InvalidOid;
	bool		pushed_snapshot = false;

	/* opening takes no privilege; the queue's owner is wtcache_owner() */
	queue = wtcache_queue_relid();
	rel = OidIsValid(queue) ? try_relation_open(queue, RowExclusiveLock) : NULL;
	owner = rel != NULL ? rel->rd_rel->relowner : wtcache_owner();	/* the latter: its ERROR */
	wtcache_rights_enter_unpinned(&rights, owner);

	/* at PRE_COMMIT no snapshot is active any more */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed_snapshot = true;
	}

	/* a set_aside the table lacks is the plain INSERT's to report */
	if (rel != NULL && direct_layout(rel, &cols, &seq) &&
		(row->set_aside == NULL || cols.set_aside != InvalidAttrNumber) &&
		(row->key_template == NULL || cols.key_template != InvalidAttrNumber))
	{
		int			natts = RelationGetDescr(rel)->natts;
		Datum	   *values = palloc0(sizeof(Datum) * natts);
		bool	   *nulls = palloc(sizeof(bool) * natts);

		memset(nulls, true, sizeof(bool) * natts);
#define SET_COLUMN(att, datum) (values[(att) - 1] = (datum), nulls[(att) - 1] = false)
		SET_COLUMN(cols.relid, ObjectIdGetDatum(row->relid));
		if (keys != (Datum) 0)
		{
			SET_COLUMN(cols.keys, keys);
			SET_COLUMN(cols.key_width, Int16GetDatum((int16) row->key_width));
		}
		if (row->table_key)
			SET_COLUMN(cols.table_key, CStringGetTextDatum(row->table_key));
		if (tags != (Datum) 0)
			SET_COLUMN(cols.tags, tags);
		SET_COLUMN(cols.per_table, BoolGetDatum(row->per_table));
		SET_COLUMN(cols.enqueued_at, TimestampTzGetDatum(GetCurrentTimestamp()));
		if (row->set_aside)
			SET_COLUMN(cols.set_aside, CStringGetTextDatum(row->set_aside));
		if (row->key_template)
			SET_COLUMN(cols.key_template, CStringGetTextDatum(row->key_template));
		if (cols.discard)
			SET_COLUMN(cols.discard, BoolGetDatum(false));
		/* last, as the executor evaluates the id's default after the others */
		id = nextval_internal(seq, false);
		SET_COLUMN(cols.id, Int64GetDatum(id));
#undef SET_COLUMN
		insert_direct(rel, values, nulls);
		pfree(values);
		pfree(nulls);
	}
	else
		id = insert_spi(row, keys, tags);
	if (rel != NULL)
		relation_close(rel, NoLock);
	if (pushed_snapshot)
		PopActiveSnapshot();

	wtcache_rights_leave(&rights);
	return id;
}

/*
 * Count the row in the pending filter, before the insert draws its id:
 * whoever sees the id handed out (a fill takes the sequence's last_value as
 * its version: read.c) must also see the keys pending.  Counted first, an
 * insert that fails takes its counts back with the (sub)transaction's
 * abort.
 */
static void
count_row(const QueueRow *row)
{
	uint32	   *indexes;
	int			n;

	if (!wtcache_pending_ready(MyDatabaseId))
		return;
	indexes = palloc(sizeof(uint32) * wtcache_queue_max_indexes(row));
	n = wtcache_pending_row_indexes(MyDatabaseId, row, indexes);
	for (int i = 0; i < n; i++)
		wtcache_pending_add(indexes[i]);
	pfree(indexes);
}

/*
 * Write one queue row (id, discard and xmin are not the writer's), counted
 * in the pending filter.  Wakes no worker: capture.c does that at commit.
 * Returns the id it drew, or 0 when the queue's layout made it go through
 * a plain INSERT that does not say (progress.c then matches by table).
 */
int64
wtcache_queue_write(const QueueRow *row)
{
	Datum		keys = (Datum) 0;
	Datum		tags = (Datum) 0;
	int64		id;

	if (row->has_keys)
		keys = PointerGetDatum(construct_array(row->keys, row->nvalues, TEXTOID,
											   -1, false, TYPALIGN_INT));
	if (row->ntags > 0)
		tags = PointerGetDatum(construct_array(row->tags, row->ntags, TEXTOID,
											   -1, false, TYPALIGN_INT));
	wtcache_pending_before_queue_write();
	count_row(row);
	id = insert_row(row, keys, tags);
	wtcache_pending_after_queue_write();
	return id;
}
