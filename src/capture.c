/*-------------------------------------------------------------------------
 * capture.c
 *		Capture triggers and the per-transaction key buffer.
 *
 * The row trigger runs once per changed row, so it only renders the key
 * columns and appends them to a buffer in backend memory.  The buffer goes
 * to wtcache.queue, one row per chunk of keys, inside the same transaction:
 * when a chunk fills up, and for the rest just before commit.  The queue is
 * an ordinary logged table, so what was captured commits, rolls back and
 * survives a crash with the change itself.
 *
 * Savepoints: every subtransaction start pushes a mark (the buffer length).
 * Aborting the subtransaction truncates the buffer back to its mark; keys
 * already written to the queue inside it are rolled back by PostgreSQL.  To
 * keep that true, a chunk written while subtransactions are open holds only
 * keys recorded since the innermost mark, so it never carries a parent's keys
 * into a subtransaction that might abort.
 *
 * Only keys are recorded, not row images: the worker reads the committed row
 * when it delivers, so several changes to one key collapse into one push,
 * and a rolled-back change can never reach Redis.  The queue id is taken
 * while this transaction still holds the row locks of every key in the chunk,
 * so for any one key ids follow commit order and serve as its version.
 *
 * Tables with tag templates (tags.c) also record each changed row's tags,
 * rendered from the old and the new row: the worker reads only the final
 * row, and an UPDATE that moves a row from one tag to another must
 * invalidate both.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "keys.h"
#include "partition.h"
#include "progress.h"
#include "shmem.h"
#include "tags.h"
#include "watch.h"
#include "xact.h"
#include "keyspace.h"
#include "queue.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/inval.h"
#include "utils/rel.h"

/* Per trigger call site (lives for one statement in fn_extra). */
/*
 * What a capture entry point keeps in its fn_extra for the table it last
 * served: one shape for the three of them.  The row trigger fills the key
 * columns from its trigger's attnums, the WHEN functions from their
 * arguments' types; only _capture_when_tagged() has tag columns (after the
 * key columns in cols) and templates.
 */
typedef struct CaptureCall
{
	Oid			relid;
	bool		watched;		/* false: record nothing */
	int			nkeys;
	int			ncols;
	int			ntemplates;
	TagTemplate *templates;
	KeyColumn	cols[FLEXIBLE_ARRAY_MEMBER];
} CaptureCall;

static CaptureCall *
new_capture_call(FunctionCallInfo fcinfo, Oid relid, int nkeys, int ncols)
{
	CaptureCall *call = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
											   offsetof(CaptureCall, cols) +
											   sizeof(KeyColumn) * (nkeys + ncols));

	call->relid = relid;
	call->nkeys = nkeys;
	call->ncols = ncols;
	return call;
}

typedef struct SubxactMark
{
	SubTransactionId subid;
	int			offset;
	int			nrecords;
} SubxactMark;

/*
 * The buffer is a byte string of records:
 *		Oid relid, uint16 nvalues, nvalues x (uint32 len, bytes),
 *		uint16 ntags (UNTAGGED for a table without templates),
 *		ntags x (uint32 len, bytes)
 */
#define UNTAGGED 0xFFFF

static MemoryContext CaptureContext = NULL;
static StringInfoData capture_buf;
static bool capture_buf_ready = false;
static int	capture_nrecords = 0;
static SubxactMark *marks = NULL;
static int	nmarks = 0;
static int	maxmarks = 0;
static bool enqueued_this_xact = false;
static bool worker_wanted_at_commit = false;
/* the lowest id of the rows queued that the worker's second claim cursor
 * must find (batch.c's resume_live_scan): told to it at commit; 0: none */
static int64 live_from_this_xact = 0;

/* Tables this transaction captured changes of: cached reads of them go to
 * the table (they must see, and never publish, uncommitted rows). */
static Oid *wrote_relids = NULL;
static int	nwrote = 0;
static int	maxwrote = 0;


static void
reset_capture_state(void)
{
	if (CaptureContext)
		MemoryContextReset(CaptureContext);
	capture_buf_ready = false;
	capture_nrecords = 0;
	nmarks = 0;
	maxmarks = 0;
	marks = NULL;
	enqueued_this_xact = false;
	worker_wanted_at_commit = false;
	live_from_this_xact = 0;
	wrote_relids = NULL;
	nwrote = 0;
	maxwrote = 0;
}

static void
note_wrote(Oid relid)
{
	if (nwrote > 0 && wrote_relids[nwrote - 1] == relid)
		return;
	for (int i = 0; i < nwrote; i++)
		if (wrote_relids[i] == relid)
			return;
	if (nwrote == maxwrote)
	{
		maxwrote = maxwrote ? maxwrote * 2 : 8;
		wrote_relids = wrote_relids ? repalloc(wrote_relids, sizeof(Oid) * maxwrote)
			: MemoryContextAlloc(CaptureContext, sizeof(Oid) * maxwrote);
	}
	wrote_relids[nwrote++] = relid;
}

bool
wtcache_xact_wrote(Oid relid)
{
	for (int i = 0; i < nwrote; i++)
		if (wrote_relids[i] == relid)
			return true;
	return false;
}

/*
 * Called from _PG_init, with the transaction callbacks' registration
 * (xact.c), so that every backend tracks savepoints from its first
 * transaction on.  Loaded without shared_preload_libraries, that is at
 * the first capture: a savepoint opened before has no mark, and rolling it
 * back leaves its keys in the buffer, harmless (the worker delivers the
 * committed row) but a wasted push.
 */
void
wtcache_capture_init(void)
{
	if (CaptureContext != NULL)
		return;
	CaptureContext = AllocSetContextCreate(TopMemoryContext,
										   "wtcache capture",
										   ALLOCSET_SMALL_SIZES);
}

static void
ensure_capture_state(void)
{
	wtcache_capture_init();
	if (!capture_buf_ready)
	{
		MemoryContext old = MemoryContextSwitchTo(CaptureContext);

		initStringInfo(&capture_buf);
		MemoryContextSwitchTo(old);
		capture_buf_ready = true;
	}
}

/* Write a queue row (queue.c); the worker is woken when this transaction commits. */
static int64
enqueue(const QueueRow *row)
{
	int64		id;

	ensure_capture_state();
	id = wtcache_queue_write(row);
	if (row->per_table && row->has_keys)
		enqueued_this_xact = true;
	else
		wtcache_note_live_enqueued(id);
	return id;
}

/*
 * A chunk of keys queued by resync/warm: counted per table (pending.c),
 * and in the progress of the long operation it belongs to (progress.c).
 */
void
wtcache_queue_insert_per_table(Oid relid, Datum *keys, int nvalues, int width)
{
	QueueRow	row = {0};

	row.relid = relid;
	row.has_keys = true;
	row.keys = keys;
	row.nvalues = nvalues;
	row.key_width = width;
	row.per_table = true;
	wtcache_progress_queued(relid, width > 0 ? nvalues / width : 0, enqueue(&row));
}

typedef struct KeyGroup
{
	Oid			relid;
	int			nvalues;
	int			nrecords;
	Datum	   *elems;
	int			nelems;
	int			maxelems;
	/* tags: per record a count, then the names; empty while no record of
	 * the chunk has any */
	Datum	   *tagelems;
	int			ntagelems;
	int			maxtagelems;
	int			ntagnames;
} KeyGroup;

static void
group_add_tag_elem(KeyGroup *g, Datum d)
{
	if (g->ntagelems == g->maxtagelems)
	{
		g->maxtagelems = g->maxtagelems ? g->maxtagelems * 2 : 256;
		g->tagelems = g->tagelems ? repalloc(g->tagelems, sizeof(Datum) * g->maxtagelems)
			: palloc(sizeof(Datum) * g->maxtagelems);
	}
	g->tagelems[g->ntagelems++] = d;
}

static void
write_group_chunk(KeyGroup *g)
{
	QueueRow	row = {0};

	if (g->nrecords == 0)
		return;
	row.relid = g->relid;
	row.has_keys = true;
	row.keys = g->elems;
	row.nvalues = g->nelems;
	row.key_width = g->nvalues;
	if (g->ntagnames > 0)
	{
		row.tags = g->tagelems;
		row.ntags = g->ntagelems;
	}
	enqueue(&row);
	g->nelems = 0;
	g->nrecords = 0;
	g->ntagelems = 0;
	g->ntagnames = 0;
}

/* Write the records from byte offset start on, then drop them. */
static void
flush_from(int start_offset, int start_nrecords)
{
	MemoryContext flushcxt;
	MemoryContext old;
	KeyGroup   *groups = NULL;
	int			ngroups = 0;
	int			maxgroups = 0;
	int			pos = start_offset;

	if (!capture_buf_ready || capture_buf.len <= start_offset)
		return;

	flushcxt = AllocSetContextCreate(CurrentMemoryContext, "wtcache flush",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(flushcxt);

	while (pos < capture_buf.len)
	{
		Oid			relid;
		uint16		nvalues;
		KeyGroup   *g = NULL;

		memcpy(&relid, capture_buf.data + pos, sizeof(Oid));
		pos += sizeof(Oid);
		memcpy(&nvalues, capture_buf.data + pos, sizeof(uint16));
		pos += sizeof(uint16);

		/* by width too: a key definition changed within the transaction */
		for (int i = ngroups - 1; i >= 0; i--)
			if (groups[i].relid == relid && groups[i].nvalues == nvalues)
			{
				g = &groups[i];
				break;
			}
		if (g == NULL)
		{
			if (ngroups == maxgroups)
			{
				maxgroups = maxgroups ? maxgroups * 2 : 4;
				groups = groups ? repalloc(groups, sizeof(KeyGroup) * maxgroups)
					: palloc(sizeof(KeyGroup) * maxgroups);
			}
			g = &groups[ngroups++];
			g->relid = relid;
			g->nvalues = nvalues;
			g->nrecords = 0;
			g->nelems = 0;
			g->maxelems = 256;
			g->elems = palloc(sizeof(Datum) * g->maxelems);
			g->tagelems = NULL;
			g->ntagelems = 0;
			g->maxtagelems = 0;
			g->ntagnames = 0;
		}
		for (int i = 0; i < nvalues; i++)
		{
			uint32		len;

			memcpy(&len, capture_buf.data + pos, sizeof(uint32));
			pos += sizeof(uint32);
			if (g->nelems == g->maxelems)
			{
				g->maxelems *= 2;
				g->elems = repalloc(g->elems, sizeof(Datum) * g->maxelems);
			}
			g->elems[g->nelems++] =
				PointerGetDatum(cstring_to_text_with_len(capture_buf.data + pos, len));
			pos += len;
		}
		{
			uint16		ntags;

			memcpy(&ntags, capture_buf.data + pos, sizeof(uint16));
			pos += sizeof(uint16);
			if (ntags != UNTAGGED && ntags > 0 && g->ntagnames == 0)
			{
				/* the chunk's first tags: earlier records had none */
				for (int i = 0; i < g->nrecords; i++)
					group_add_tag_elem(g, wtcache_queue_tag_count(0));
			}
			if (g->ntagnames > 0 || (ntags != UNTAGGED && ntags > 0))
				group_add_tag_elem(g, wtcache_queue_tag_count(ntags == UNTAGGED ? 0 : ntags));
			for (int i = 0; ntags != UNTAGGED && i < ntags; i++)
			{
				uint32		len;

				memcpy(&len, capture_buf.data + pos, sizeof(uint32));
				pos += sizeof(uint32);
				group_add_tag_elem(g, PointerGetDatum(cstring_to_text_with_len(capture_buf.data + pos, len)));
				g->ntagnames++;
				pos += len;
			}
		}
		if (++g->nrecords >= WTCACHE_CHUNK_KEYS)
			write_group_chunk(g);
	}
	for (int i = 0; i < ngroups; i++)
		write_group_chunk(&groups[i]);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(flushcxt);

	capture_buf.len = start_offset;
	capture_buf.data[start_offset] = '\0';
	capture_nrecords = start_nrecords;
}

void
wtcache_capture_xact_event(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			nmarks = 0;
			flush_from(0, 0);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (worker_wanted_at_commit)
				wtcache_request_worker(MyDatabaseId);
			/* a running worker must still hear of live rows behind its walk */
			if (enqueued_this_xact)
				wtcache_wake_worker(MyDatabaseId, live_from_this_xact);
			reset_capture_state();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction's keys are in the queue already; its
			 * COMMIT PREPARED is seen by the worker's poll */
			reset_capture_state();
			break;
	}
}

void
wtcache_capture_subxact_event(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid)
{
	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			if (nmarks == maxmarks)
			{
				int			newmax = maxmarks ? maxmarks * 2 : 16;

				marks = marks ? repalloc(marks, sizeof(SubxactMark) * newmax)
					: MemoryContextAlloc(CaptureContext, sizeof(SubxactMark) * newmax);
				maxmarks = newmax;
			}
			marks[nmarks].subid = mySubid;
			marks[nmarks].offset = capture_buf_ready ? capture_buf.len : 0;
			marks[nmarks].nrecords = capture_nrecords;
			nmarks++;
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
			while (nmarks > 0 && marks[nmarks - 1].subid >= mySubid)
				nmarks--;
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			{
				int			keep = nmarks;

				while (keep > 0 && marks[keep - 1].subid >= mySubid)
					keep--;
				if (keep < nmarks && capture_buf_ready)
				{
					capture_buf.len = marks[keep].offset;
					capture_buf.data[capture_buf.len] = '\0';
					capture_nrecords = marks[keep].nrecords;
				}
				nmarks = keep;
			}
			break;
		case SUBXACT_EVENT_PRE_COMMIT_SUB:
			break;
	}
}

/* ---------------------------------------------------------------------
 * What the capture functions may be given
 *
 * _capture_when() and _capture_when_tagged() are called from the WHEN
 * clause of the triggers watch() creates, as the writer, so any role that
 * may write a watched table can also call them directly, with whatever
 * arguments it likes.  They therefore take nothing on trust: the number
 * and the types of the key values, the tag templates and the types of the
 * tag columns must be exactly what the table's watch says.  A call for a
 * table that is not watched records nothing (the worker would drop it).
 * The watch is looked up once per backend and table, and looked up again
 * after an invalidation of the table's relcache entry, which watch() and
 * unwatch() send.
 * ---------------------------------------------------------------------
 */
typedef struct CaptureWatch
{
	Oid			relid;			/* hash key */
	bool		valid;
	bool		watched;
	int			nkeys;
	Oid			keytypes[INDEX_MAX_KEYS];
	int			ntemplates;
	int			ncols;			/* distinct columns the templates name */
} CaptureWatch;

static HTAB *capture_watches = NULL;

static void
invalidate_capture_watch(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	CaptureWatch *w;

	hash_seq_init(&seq, capture_watches);
	while ((w = hash_seq_search(&seq)) != NULL)
		if (relid == InvalidOid || w->relid == relid)
			w->valid = false;
}

/*
 * The number of templates and of distinct column names in them, counted
 * by name as watch() was given them: a column renamed since keeps its
 * place in the compiled templates the triggers carry.
 */
static void
count_template_columns(ArrayType *tags, int *ntemplates, int *ncols)
{
	Datum	   *elems;
	bool	   *nulls;
	List	   *names = NIL;

	deconstruct_array(tags, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, ntemplates);
	for (int t = 0; t < *ntemplates; t++)
	{
		char	   *s = nulls[t] ? "" : TextDatumGetCString(elems[t]);

		for (char *open = strchr(s, '{'); open != NULL; open = strchr(open + 1, '{'))
		{
			char	   *close = strchr(open, '}');
			char	   *name;
			ListCell   *lc;
			bool		seen = false;

			if (close == NULL)
				break;
			name = pnstrdup(open + 1, close - open - 1);
			foreach(lc, names)
				seen |= strcmp(lfirst(lc), name) == 0;
			if (!seen)
				names = lappend(names, name);
		}
	}
	*ncols = list_length(names);
}

static CaptureWatch *
capture_watch(Oid relid)
{
	CaptureWatch *w;
	bool		found;
	WatchConfig config;
	Relation	rel;

	if (capture_watches == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CaptureWatch);
		ctl.hcxt = CacheMemoryContext;
		capture_watches = hash_create("wtcache capture watches", 64, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(invalidate_capture_watch, (Datum) 0);
	}
	w = hash_search(capture_watches, &relid, HASH_ENTER, &found);
	if (found && w->valid)
		return w;
	memset(w, 0, sizeof(*w));
	w->relid = relid;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return w;				/* not valid: looked up again next time */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	w->watched = wtcache_load_watch(relid, &config);
	if (w->watched)
	{
		TupleDesc	desc = RelationGetDescr(rel);

		w->nkeys = config.nkeys;
		for (int i = 0; i < config.nkeys; i++)
			w->keytypes[i] = (config.key_attnums[i] >= 1 && config.key_attnums[i] <= desc->natts) ?
				TupleDescAttr(desc, config.key_attnums[i] - 1)->atttypid : InvalidOid;
		count_template_columns(config.tags, &w->ntemplates, &w->ncols);
	}
	SPI_finish();
	relation_close(rel, AccessShareLock);
	w->valid = true;
	return w;
}

/*
 * Compiled templates as watch() makes them: literal text and {n} with
 * 1 <= n <= ncols, nothing else between braces.
 */
static bool
templates_well_formed(ArrayType *templates, int ntemplates, int ncols)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(templates) > 1)
		return false;
	deconstruct_array(templates, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n != ntemplates)
		return false;
	for (int t = 0; t < n; t++)
	{
		const char *p;

		if (nulls[t])
			return false;
		p = TextDatumGetCString(elems[t]);
		if (*p == '\0')
			return false;
		for (; *p; p++)
		{
			char	   *end;
			long		col;

			if (*p == '}')
				return false;
			if (*p != '{')
				continue;
			if (p[1] < '1' || p[1] > '9')
				return false;
			col = strtol(p + 1, &end, 10);
			if (*end != '}' || col < 1 || col > ncols)
				return false;
			p = end;
		}
	}
	return true;
}

/*
 * Check a capture call against the table's watch.  first: the position of
 * the first key value; rows: 2 for an UPDATE (old, then new values), else
 * 1; ncols and templates: the tag columns per row and the compiled
 * templates given (0 and NULL for _capture_when).  False when the table is
 * not watched: record nothing.
 */
static bool
check_capture_call(FunctionCallInfo fcinfo, const char *fname, Oid relid, int first,
				   int rows, int nkeys, int ncols, ArrayType *templates)
{
	CaptureWatch *w = capture_watch(relid);
	bool		ok;

	if (!w->valid || !w->watched)
		return false;
	ok = (nkeys == w->nkeys && ncols == w->ncols &&
		  (templates != NULL) == (w->ntemplates > 0));
	for (int r = 0; ok && r < rows; r++)
		for (int i = 0; ok && i < nkeys; i++)
			ok = get_fn_expr_argtype(fcinfo->flinfo, first + r * nkeys + i) == w->keytypes[i];
	if (ok && templates != NULL)
		ok = templates_well_formed(templates, w->ntemplates, w->ncols);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wtcache.%s() arguments do not match the watch of table \"%s\"",
						fname, get_rel_name(relid)),
				 errdetail("The watch has %d key column%s and %d tag template%s over %d column%s; the call gave other counts, types or templates.",
						   w->nkeys, w->nkeys == 1 ? "" : "s", w->ntemplates, w->ntemplates == 1 ? "" : "s",
						   w->ncols, w->ncols == 1 ? "" : "s"),
				 errhint("It belongs in the WHEN clause of the triggers wtcache.watch() creates; call wtcache.watch() again to re-create them.")));
	return true;
}

static CaptureCall *
get_capture_cache(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	CaptureCall *cache = (CaptureCall *) fcinfo->flinfo->fn_extra;
	Relation	rel = trigdata->tg_relation;
	Trigger    *trigger = trigdata->tg_trigger;
	TupleDesc	desc = RelationGetDescr(rel);

	if (cache != NULL && cache->relid == RelationGetRelid(rel))
		return cache;

	if (trigger->tgnargs < 1 || trigger->tgnargs > INDEX_MAX_KEYS)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wtcache capture trigger on \"%s\" has no key columns",
						RelationGetRelationName(rel)),
				 errhint("Re-create it with wtcache.watch().")));

	cache = new_capture_call(fcinfo, RelationGetRelid(rel), trigger->tgnargs, 0);
	{
		/* as for the WHEN functions: the watch says what a key is */
		CaptureWatch *w = capture_watch(cache->relid);

		cache->watched = w->valid && w->watched;
		if (cache->watched && w->nkeys != trigger->tgnargs)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("wtcache capture trigger \"%s\" on \"%s\" does not match the watch of the table",
							trigger->tgname, RelationGetRelationName(rel)),
					 errhint("Call wtcache.watch() again to re-create the triggers.")));
	}
	for (int i = 0; i < trigger->tgnargs; i++)
	{
		int			attnum = atoi(trigger->tgargs[i]);

		if (attnum < 1 || attnum > desc->natts || TupleDescAttr(desc, attnum - 1)->attisdropped)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("wtcache capture trigger on \"%s\" names a key column that no longer exists",
							RelationGetRelationName(rel)),
					 errhint("Run wtcache.unwatch() and wtcache.watch() on the table again.")));
		wtcache_init_key_column(&cache->cols[i], rel, attnum, fcinfo->flinfo->fn_mcxt);
		if (cache->watched && cache->cols[i].typid != capture_watch(cache->relid)->keytypes[i])
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("wtcache capture trigger \"%s\" on \"%s\" does not match the watch of the table",
							trigger->tgname, RelationGetRelationName(rel)),
					 errhint("Call wtcache.watch() again to re-create the triggers.")));
	}
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

static void
append_value(const char *s, uint32 len)
{
	appendBinaryStringInfo(&capture_buf, (const char *) &len, sizeof(uint32));
	appendBinaryStringInfo(&capture_buf, s, len);
}

/*
 * Append one key (one value per key column) to the buffer, and write a
 * chunk when the innermost (sub)transaction's share reaches the chunk size.
 */
static void
record_values(Oid relid, int nkeys, KeyColumn *cols, Datum *values, bool *nulls,
			  char **tags, int ntags)
{
	uint16		nvalues = (uint16) nkeys;
	uint16		ntags16 = ntags < 0 ? UNTAGGED : (uint16) ntags;
	int			innermost_nrecords;

	/*
	 * A null key value (the DBA dropped the key's NOT NULL): no key names
	 * such a row, so nothing in Redis is it; PostgreSQL accepts the write,
	 * and so does wtcache.  The change is still recorded, without values,
	 * so that its table's and its own tags are invalidated (the worker
	 * takes a record of width 0 for that).
	 */
	for (int i = 0; i < nkeys; i++)
		if (nulls[i])
			nvalues = 0;

	ensure_capture_state();
	note_wrote(relid);
	appendBinaryStringInfo(&capture_buf, (const char *) &relid, sizeof(Oid));
	appendBinaryStringInfo(&capture_buf, (const char *) &nvalues, sizeof(uint16));
	for (int i = 0; i < nvalues; i++)
	{
		KeyColumn  *col = &cols[i];

		if (col->binary)
		{
			int			hexlen;
			char	   *hex = wtcache_send_hex(&col->out, values[i], &hexlen);

			append_value(hex, (uint32) hexlen);
			pfree(hex);
		}
		else if (col->typid == INT4OID || col->typid == INT8OID || col->typid == INT2OID)
		{
			/* the common case, without fmgr and palloc */
			char		buf[MAXINT8LEN + 1];
			int64		v = col->typid == INT4OID ? DatumGetInt32(values[i]) :
				col->typid == INT8OID ? DatumGetInt64(values[i]) : DatumGetInt16(values[i]);
			int			len = pg_lltoa(v, buf);

			append_value(buf, (uint32) len);
		}
		else
		{
			char	   *s = OutputFunctionCall(&col->out, values[i]);

			append_value(s, (uint32) strlen(s));
		}
	}
	appendBinaryStringInfo(&capture_buf, (const char *) &ntags16, sizeof(uint16));
	for (int i = 0; i < ntags; i++)
		append_value(tags[i], (uint32) strlen(tags[i]));
	capture_nrecords++;

	innermost_nrecords = nmarks > 0 ? marks[nmarks - 1].nrecords : 0;
	if (capture_nrecords - innermost_nrecords >= WTCACHE_CHUNK_KEYS)
	{
		if (nmarks > 0)
			flush_from(marks[nmarks - 1].offset, marks[nmarks - 1].nrecords);
		else
			flush_from(0, 0);
	}
}

static void
record_key(CaptureCall *cache, Relation rel, HeapTuple tuple)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Datum		values[INDEX_MAX_KEYS];
	bool		nulls[INDEX_MAX_KEYS];

	for (int i = 0; i < cache->nkeys; i++)
		values[i] = heap_getattr(tuple, cache->cols[i].attnum, desc, &nulls[i]);
	record_values(cache->relid, cache->nkeys, cache->cols, values, nulls, NULL, -1);
}

static bool
key_changed(CaptureCall *cache, TupleDesc desc, HeapTuple oldtup, HeapTuple newtup)
{
	for (int i = 0; i < cache->nkeys; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, cache->cols[i].attnum - 1);
		bool		n1,
					n2;
		Datum		d1 = heap_getattr(oldtup, att->attnum, desc, &n1);
		Datum		d2 = heap_getattr(newtup, att->attnum, desc, &n2);

		if (n1 != n2)
			return true;
		if (!n1 && !datumIsEqual(d1, d2, att->attbyval, att->attlen))
			return true;
	}
	return false;
}

PG_FUNCTION_INFO_V1(wtcache_capture_row);
Datum
wtcache_capture_row(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	CaptureCall *cache;
	Relation	rel;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wtcache._capture_row() is a trigger function"),
				 errhint("Use wtcache.watch() to install it.")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wtcache._capture_row() must run AFTER ... FOR EACH ROW"),
				 errhint("Use wtcache.watch() to install it.")));

	rel = trigdata->tg_relation;
	cache = get_capture_cache(fcinfo, trigdata);
	if (!cache->watched)
		return PointerGetDatum(NULL);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		record_key(cache, rel, trigdata->tg_trigtuple);
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		record_key(cache, rel, trigdata->tg_trigtuple);
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		record_key(cache, rel, trigdata->tg_trigtuple);
		if (key_changed(cache, RelationGetDescr(rel), trigdata->tg_trigtuple,
						trigdata->tg_newtuple))
			record_key(cache, rel, trigdata->tg_newtuple);
	}
	return PointerGetDatum(NULL);
}

/*
 * A WHEN function's preparation, the first time its call site serves a
 * table: the arguments' shape (shape_ok, computed by the caller), the
 * caller's right to write the table, the watch.  first: the position of
 * the first key value; rows: 2 for an UPDATE, else 1; ncols tag columns
 * per row follow the key values, with their templates.
 */
static CaptureCall *
prepare_when_call(FunctionCallInfo fcinfo, const char *fname, Oid relid, int first, int rows,
				  int nkeys, int ncols, bool shape_ok, ArrayType *templates)
{
	AclMode		write = ACL_INSERT | ACL_UPDATE | ACL_DELETE;
	CaptureCall *call;

	if (!shape_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wtcache.%s() called with the wrong arguments", fname),
				 errhint("It belongs in the WHEN clause of triggers made by wtcache.watch().")));

	/* only someone who may write the table can make wtcache push it */
	if (pg_class_aclmask(relid, GetUserId(), write, ACLMASK_ANY) == 0 &&
		pg_attribute_aclcheck_all(relid, GetUserId(), ACL_INSERT | ACL_UPDATE, ACLMASK_ANY) != ACLCHECK_OK &&
		!wtcache_writer_may_write_tree(relid))
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, get_rel_name(relid));

	call = new_capture_call(fcinfo, relid, nkeys, ncols);
	/* the templates too: they were checked when watch() compiled them */
	call->watched = check_capture_call(fcinfo, fname, relid, first, rows, nkeys, ncols, templates);
	for (int i = 0; i < nkeys; i++)
		wtcache_init_key_type(&call->cols[i], get_fn_expr_argtype(fcinfo->flinfo, first + i),
							  fcinfo->flinfo->fn_mcxt);
	for (int i = 0; i < ncols; i++)
	{
		KeyColumn  *col = &call->cols[nkeys + i];
		Oid			funcid;
		bool		isvarlena;

		col->typid = get_fn_expr_argtype(fcinfo->flinfo, first + rows * nkeys + i);
		getTypeOutputInfo(col->typid, &funcid, &isvarlena);
		fmgr_info_cxt(funcid, &col->out, fcinfo->flinfo->fn_mcxt);
	}
	if (templates != NULL)
		call->templates = wtcache_parse_tag_templates(templates, &call->ntemplates,
													  fcinfo->flinfo->fn_mcxt);
	fcinfo->flinfo->fn_extra = call;
	return call;
}

/*
 * Record the key in the WHEN function's arguments first .. first+nkeys-1
 * and, for an UPDATE that changed it, the new key that follows.
 */
static inline void
record_when_keys(FunctionCallInfo fcinfo, Oid relid, char op, int first, int nkeys,
				 KeyColumn *cols, char **tags, int ntags)
{
	Datum		values[INDEX_MAX_KEYS];
	bool		nulls[INDEX_MAX_KEYS];
	bool		changed = false;

	for (int i = 0; i < nkeys; i++)
	{
		values[i] = PG_GETARG_DATUM(first + i);
		nulls[i] = PG_ARGISNULL(first + i);
	}
	record_values(relid, nkeys, cols, values, nulls, tags, ntags);
	if (op != 'u')
		return;
	for (int i = 0; i < nkeys && !changed; i++)
	{
		if (PG_ARGISNULL(first + i) != PG_ARGISNULL(first + nkeys + i))
			changed = true;
		else if (!PG_ARGISNULL(first + i))
			changed = !datumIsEqual(values[i], PG_GETARG_DATUM(first + nkeys + i),
									cols[i].typbyval, cols[i].typlen);
	}
	if (!changed)
		return;
	for (int i = 0; i < nkeys; i++)
	{
		values[i] = PG_GETARG_DATUM(first + nkeys + i);
		nulls[i] = PG_ARGISNULL(first + nkeys + i);
	}
	record_values(relid, nkeys, cols, values, nulls, tags, ntags);
}

/*
 * wtcache._capture_when(rel, op, VARIADIC keys "any"): the capture path
 * used by watch().  It sits in the WHEN clause of the AFTER ROW triggers,
 * which PostgreSQL evaluates right after each row is written, with the old
 * and new row at hand; it records the key and answers false, so no trigger
 * event is ever queued.  That spares the deferred event queue and the
 * re-fetch of both row versions at the end of the statement, most of what
 * an AFTER ROW trigger costs.  For 'u' the arguments are the old key
 * values, then the new ones.
 */

PG_FUNCTION_INFO_V1(wtcache_capture_when);
Datum
wtcache_capture_when(PG_FUNCTION_ARGS)
{
	CaptureCall *cache = (CaptureCall *) fcinfo->flinfo->fn_extra;
	Oid			relid = PG_GETARG_OID(0);
	char		op = PG_GETARG_CHAR(1);
	int			nargs = PG_NARGS() - 2;
	int			nkeys = (op == 'u') ? nargs / 2 : nargs;

	if (cache == NULL || cache->relid != relid)
		cache = prepare_when_call(fcinfo, "_capture_when", relid, 2, op == 'u' ? 2 : 1, nkeys, 0,
								  nkeys >= 1 && nkeys <= INDEX_MAX_KEYS &&
								  (op != 'u' || nargs % 2 == 0) &&
								  (op == 'i' || op == 'u' || op == 'd'),
								  NULL);

	if (cache->watched)
		record_when_keys(fcinfo, relid, op, 2, nkeys, cache->cols, NULL, -1);
	PG_RETURN_BOOL(false);
}

/* A value's text for a tag (tag columns are of stable types). */
static char *
tag_value_text(KeyColumn *col, Datum value)
{
	if (col->typid == INT4OID)
		return psprintf("%d", DatumGetInt32(value));
	if (col->typid == INT8OID)
		return psprintf(INT64_FORMAT, DatumGetInt64(value));
	return OutputFunctionCall(&col->out, value);
}

/*
 * wtcache._capture_when_tagged(rel, op, nkeys, templates, VARIADIC args):
 * _capture_when() for tables with tag templates.  args: the key values
 * (old, then new for 'u'), then the tag columns' values (old, then new for
 * 'u').  Each recorded key carries the tags of the old and the new row.
 */

PG_FUNCTION_INFO_V1(wtcache_capture_when_tagged);
Datum
wtcache_capture_when_tagged(PG_FUNCTION_ARGS)
{
	CaptureCall *cache = (CaptureCall *) fcinfo->flinfo->fn_extra;
	Oid			relid = PG_GETARG_OID(0);
	char		op = PG_GETARG_CHAR(1);
	int			nkeys = PG_GETARG_INT16(2);
	int			nargs = PG_NARGS() - 4;
	int			rows = (op == 'u') ? 2 : 1;
	int			ncols = (nargs - rows * nkeys) / rows;
	char	   *colvals[WTCACHE_MAX_TAG_COLUMNS];
	char	  **tags;
	int			ntags = 0;

	if (cache == NULL || cache->relid != relid)
		cache = prepare_when_call(fcinfo, "_capture_when_tagged", relid, 4, rows, nkeys, ncols,
								  nkeys >= 1 && nkeys <= INDEX_MAX_KEYS && ncols >= 0 &&
								  ncols <= WTCACHE_MAX_TAG_COLUMNS &&
								  nargs == rows * (nkeys + ncols) && !PG_ARGISNULL(3) &&
								  (op == 'i' || op == 'u' || op == 'd'),
								  PG_ARGISNULL(3) ? NULL : PG_GETARG_ARRAYTYPE_P(3));

	if (!cache->watched)
		PG_RETURN_BOOL(false);

	/* the tags of the row(s): old and new for an UPDATE, once if equal */
	tags = palloc(sizeof(char *) * (cache->ntemplates * rows + 1));
	for (int r = 0; r < rows; r++)
	{
		int			base = 4 + rows * nkeys + r * ncols;
		int			first = ntags;
		int			nrendered;

		for (int c = 0; c < ncols; c++)
			colvals[c] = PG_ARGISNULL(base + c) ? NULL :
				tag_value_text(&cache->cols[nkeys + c], PG_GETARG_DATUM(base + c));
		nrendered = wtcache_render_tags(cache->templates, cache->ntemplates, colvals, tags + ntags);
		for (int i = 0; i < nrendered; i++)
		{
			char	   *candidate = tags[first + i];
			bool		dup = false;

			for (int j = 0; j < first && !dup; j++)
				dup = strcmp(tags[j], candidate) == 0;
			if (!dup)
				tags[ntags++] = candidate;
		}
	}

	record_when_keys(fcinfo, relid, op, 4, nkeys, cache->cols, tags, ntags);
	PG_RETURN_BOOL(false);
}

/*
 * Someone wrote queue rows by other means (resync, warm): wake the worker
 * when this transaction commits, as for captured changes.
 */
void
wtcache_note_enqueued(void)
{
	ensure_capture_state();
	enqueued_this_xact = true;
}

/*
 * As wtcache_note_enqueued(), for rows the worker's second claim cursor
 * must find soon: live changes, whole-table entries, and queue rows made
 * claimable again (setaside.c).  id: the lowest such row's, or 0 when
 * unknown, which has the worker walk the whole queue past long work.
 */
void
wtcache_note_live_enqueued(int64 id)
{
	if (id <= 0)
		id = 1;
	wtcache_note_enqueued();
	if (live_from_this_xact == 0 || id < live_from_this_xact)
		live_from_this_xact = id;
}

/* CREATE EXTENSION: a worker for this database once the extension exists. */
void
wtcache_request_worker_at_commit(void)
{
	ensure_capture_state();
	worker_wanted_at_commit = true;
}

/*
 * Queue "the whole table": TRUNCATE, or unwatch with purge.  The keys
 * removed are those of table_key in the default layout, or, with a
 * key_template, that template's (keyspace.h).
 */
void
wtcache_enqueue_whole_table(Oid relid, const char *table_key, const char *key_template)
{
	QueueRow	row = {0};

	ensure_capture_state();
	note_wrote(relid);
	row.relid = relid;
	row.table_key = unconstify(char *, table_key);
	row.key_template = unconstify(char *, key_template);
	enqueue(&row);
}

/* The table key (keyspace.h) of a table of this database, by its name now. */
char *
wtcache_current_table_key(Oid relid)
{
	StringInfoData table_key;

	initStringInfo(&table_key);
	wtcache_append_table_key(&table_key, get_database_name(MyDatabaseId),
							 get_namespace_name(get_rel_namespace(relid)),
							 get_rel_name(relid));
	return table_key.data;
}

/* The same for an open table, under the name and key template it has now. */
void
wtcache_enqueue_whole_relation(Relation rel)
{
	wtcache_enqueue_whole_table(RelationGetRelid(rel),
								wtcache_current_table_key(RelationGetRelid(rel)),
								wtcache_current_key_template(RelationGetRelid(rel)));
}

PG_FUNCTION_INFO_V1(wtcache_capture_truncate);
Datum
wtcache_capture_truncate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wtcache._capture_truncate() must run as a TRUNCATE trigger"),
				 errhint("Use wtcache.watch() to install it.")));

	/* BEFORE: a partition's, in replica mode (partition.c) */
	if (TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		wtcache_partition_truncating(RelationGetRelid(trigdata->tg_relation));
	else
		wtcache_enqueue_whole_relation(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
