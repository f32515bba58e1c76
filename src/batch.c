/*-------------------------------------------------------------------------
 * batch.c
 *		Claiming a batch: queue rows to keys, keys to rows, rows to Redis
 *		writes.
 *
 * A claim runs in one read-only transaction, so one snapshot: the queue
 * rows and the table rows they name are read in it, and the value pushed
 * with a version is at least as new as the change that version names.
 * Everything a batch keeps lives in its own memory context (Batch.cxt),
 * reset at its next claim; nothing of a batch outlives the batch after it.
 *
 * A queue row is one of four kinds, each claimed by its own function:
 *	discarded	given up by a DBA: only acknowledged
 *	tags		wtcache.invalidate(): tags only, no table
 *	whole table	TRUNCATE, or a requeue after DDL: delivered alone, so it
 *				ends a batch that has rows and a batch it starts
 *	keys		changes of rows: each key once, at its highest version
 * Every claimed row's pending-filter counters are kept with it, to be
 * released once it is acknowledged (deliver.c).  Rows of the batch in
 * flight are skipped: they are acknowledged soon.
 *
 * A table's rows are read as its owner, in a subtransaction: a table whose
 * rows cannot be read is set aside, and never stops the others.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "keys.h"
#include "partition.h"
#include "pending.h"
#include "plans.h"
#include "progress.h"
#include "push.h"
#include "rights.h"
#include "setaside.h"
#include "settings.h"
#include "tags.h"
#include "watch.h"
#include "keyspace.h"
#include "queue.h"

#include <math.h>

#include "access/relation.h"
#include "access/twophase.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timeout.h"

typedef struct KeyHashEntry
{
	char	   *suffix;
	int			index;
} KeyHashEntry;

/*
 * How long the read of one batch's rows of one table may take: the table's
 * owner controls code that runs in it (index expressions), and a read that
 * never ends would hold back every other table.
 */
#define WTCACHE_TABLE_READ_TIMEOUT_MS 60000

/* ---------------------------------------------------------------------
 * Claiming a batch
 * ---------------------------------------------------------------------
 */

static uint32
suffix_hash(const void *key, Size keysize)
{
	const char *s = *(char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
suffix_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* A hash of C strings (KeyHashEntry), in the batch's memory. */
static HTAB *
string_set_create(const char *name, long size, MemoryContext cxt)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(KeyHashEntry);
	ctl.hash = suffix_hash;
	ctl.match = suffix_match;
	ctl.hcxt = cxt;
	return hash_create(name, size, &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/*
 * What a batch needs to know about one table.  The table is locked first
 * (AccessShareLock, until the claim commits), so that a concurrent DROP or
 * RENAME cannot pull its names away while they are read; a table that is
 * gone, or no longer watched, stays unwatched and its entries are dropped.
 */
static void
load_table(TableBatch *tb, Batch *b, Oid relid)
{
	WatchConfig config;
	MemoryContext spicxt;
	Relation	rel;
	char	   *relname;
	char	   *nspname;

	memset(tb, 0, sizeof(*tb));
	tb->batch = b;
	tb->relid = relid;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return;
	/*
	 * After an ATTACH or DETACH has fully ended (partition.c); once the
	 * table is locked, since a DETACH holds its lock and then this one.
	 */
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		wtcache_partition_read_barrier(relid);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
	{
		relation_close(rel, AccessShareLock);
		return;
	}
	spicxt = MemoryContextSwitchTo(b->cxt);
	if (!wtcache_load_watch(relid, &config))
	{
		MemoryContextSwitchTo(spicxt);
		relation_close(rel, NoLock);
		return;
	}
	{
		int16	   *attnums = config.key_attnums;
		StringInfoData tk;

		relname = pstrdup(RelationGetRelationName(rel));
		nspname = get_namespace_name(RelationGetNamespace(rel));
		tb->ttl_ms = config.ttl_ms;
		tb->invalidate = config.invalidate_mode;
		tb->hash = config.hash_format;
		tb->nkeys = config.nkeys;
		tb->qname = quote_qualified_identifier(nspname, relname);
		initStringInfo(&tk);
		wtcache_append_table_key(&tk, Worker.dbname, nspname, relname);
		tb->table_key = tk.data;
		if (config.key_template != NULL)
		{
			KeyTemplateError err;

			tb->tmpl = wtcache_watch_key_template(relid, &config, &err);
			/* watch() checked it, RENAME COLUMN follows it: can't happen */
			if (tb->tmpl == NULL)
				tb->failure = psprintf("its key template \"%s\" does not fit its key now: %s",
									   config.key_template, err.message);
		}
		tb->table_tag = wtcache_format_table_tag(nspname, relname);
		tb->event_head = event_row_head(nspname, relname);
		tb->binary = palloc(sizeof(bool) * tb->nkeys);
		tb->recv = palloc(sizeof(FmgrInfo) * tb->nkeys);
		tb->out = palloc(sizeof(FmgrInfo) * tb->nkeys);
		tb->ioparams = palloc(sizeof(Oid) * tb->nkeys);
		for (int i = 0; i < tb->nkeys; i++)
		{
			/*
			 * The base type's functions: a domain's would check its
			 * constraints, code the table's owner wrote, as this
			 * superuser session; the values were checked when written.
			 */
			Oid			typid = getBaseType(TupleDescAttr(RelationGetDescr(rel), attnums[i] - 1)->atttypid);
			Oid			recvfn,
						outfn;
			bool		isvarlena;

			tb->binary[i] = !wtcache_key_type_is_stable(typid);
			getTypeOutputInfo(typid, &outfn, &isvarlena);
			fmgr_info_cxt(outfn, &tb->out[i], b->cxt);
			if (tb->binary[i])
			{
				getTypeBinaryInputInfo(typid, &recvfn, &tb->ioparams[i]);
				fmgr_info_cxt(recvfn, &tb->recv[i], b->cxt);
			}
		}
		{
			int16	   *valcols;
			int			nvalcols = wtcache_value_columns(rel, &config, &valcols);

			/* a hash's fields, or the JSON, never both: the worker sends one */
			wtcache_key_lookup_init(&tb->lookup, rel, tb->nkeys, attnums, valcols, nvalcols,
									tb->hash ? LOOKUP_FIELDS : LOOKUP_JSON, b->cxt);
		}

		tb->keyhash = string_set_create("wtcache batch keys", 1024, b->cxt);
		tb->maxbatchkeys = 256;
		tb->keys = palloc(sizeof(BatchKey) * tb->maxbatchkeys);
		/* a table whose keys cannot be named is set aside (ack_batch) */
		tb->watched = tb->failure == NULL;
	}
	MemoryContextSwitchTo(spicxt);
	relation_close(rel, NoLock);
}

static bool
batch_has_table(Batch *b, Oid relid)
{
	for (int i = 0; i < b->ntables; i++)
		if (b->tables[i].relid == relid)
			return true;
	return false;
}

static TableBatch *
batch_table(Batch *b, Oid relid)
{
	for (int i = 0; i < b->ntables; i++)
		if (b->tables[i].relid == relid)
			return &b->tables[i];
	if (b->ntables == b->maxtables)
	{
		b->maxtables *= 2;
		b->tables = repalloc(b->tables, sizeof(TableBatch) * b->maxtables);
	}
	load_table(&b->tables[b->ntables], b, relid);
	return &b->tables[b->ntables++];
}

/* Canonical text of one captured value (see keys.c). */
static char *
canonical_value(TableBatch *tb, int col, char *captured)
{
	StringInfoData buf;
	Datum		d;
	size_t		hexlen;

	if (!tb->binary[col] || strncmp(captured, "\\x", 2) != 0)
		return captured;
	hexlen = strlen(captured) - 2;
	initStringInfo(&buf);
	enlargeStringInfo(&buf, hexlen / 2 + 1);
	buf.len = hex_decode(captured + 2, hexlen, buf.data);
	buf.data[buf.len] = '\0';
	d = ReceiveFunctionCall(&tb->recv[col], &buf, tb->ioparams[col], -1);
	return OutputFunctionCall(&tb->out[col], d);
}

/* Remember a tag for the batch's invalidations (each tag once). */
static void
batch_add_tag(Batch *b, char *tag)
{
	KeyHashEntry *entry;
	bool		found;

	entry = hash_search(b->tagset, &tag, HASH_ENTER, &found);
	if (found)
		return;
	if (b->ntags == b->maxtags)
	{
		b->maxtags = b->maxtags ? b->maxtags * 2 : 64;
		b->tags = b->tags ? repalloc(b->tags, sizeof(char *) * b->maxtags)
			: palloc(sizeof(char *) * b->maxtags);
	}
	entry->suffix = tag;
	entry->index = b->ntags;
	b->tags[b->ntags++] = tag;
}

static void
add_key(TableBatch *tb, char **captured, int64 version, List *tags)
{
	char	  **values = palloc(sizeof(char *) * tb->nkeys);
	StringInfo	suffix = &Worker.suffix_buf;
	char	   *probe;
	KeyHashEntry *entry;
	bool		found;

	for (int i = 0; i < tb->nkeys; i++)
		values[i] = canonical_value(tb, i, captured[i]);
	resetStringInfo(suffix);
	wtcache_append_key_values(suffix, tb->nkeys, values);
	probe = suffix->data;
	entry = hash_search(tb->keyhash, &probe, HASH_ENTER, &found);
	if (found)
	{
		BatchKey   *k = &tb->keys[entry->index];
		ListCell   *lc;

		k->version = Max(k->version, version);
		foreach(lc, tags)
		{
			ListCell   *lc2;
			bool		dup = false;

			foreach(lc2, k->tags)
				if (strcmp(lfirst(lc2), lfirst(lc)) == 0)
					dup = true;
			if (!dup)
				k->tags = lappend(k->tags, lfirst(lc));
		}
		pfree(values);
		return;
	}
	if (tb->nbatchkeys == tb->maxbatchkeys)
	{
		tb->maxbatchkeys *= 2;
		tb->keys = repalloc(tb->keys, sizeof(BatchKey) * tb->maxbatchkeys);
	}
	entry->suffix = pnstrdup(suffix->data, suffix->len);
	entry->index = tb->nbatchkeys;
	tb->keys[tb->nbatchkeys].suffix = entry->suffix;
	tb->keys[tb->nbatchkeys].values = values;
	tb->keys[tb->nbatchkeys].version = version;
	tb->keys[tb->nbatchkeys].payload = NULL;
	tb->keys[tb->nbatchkeys].payload_len = 0;
	tb->keys[tb->nbatchkeys].fields = NULL;
	tb->keys[tb->nbatchkeys].tags = list_copy(tags);
	tb->nbatchkeys++;
}

/* pending_start: b->npending before the row's counters were added */
static void
batch_add_id(Batch *b, int64 id, Oid relid, int pending_start, TransactionId xmin)
{
	batch_note_writer(b, xmin);
	if (b->nids == b->maxids)
	{
		b->maxids *= 2;
		b->ids = repalloc(b->ids, sizeof(Datum) * b->maxids);
		b->id_relids = repalloc(b->id_relids, sizeof(Oid) * b->maxids);
		b->id_pending = repalloc(b->id_pending, sizeof(int) * b->maxids);
		b->id_since = repalloc(b->id_since, sizeof(TimestampTz) * b->maxids);
		b->id_changes = repalloc(b->id_changes, sizeof(int64) * b->maxids);
	}
	b->id_relids[b->nids] = relid;
	b->id_pending[b->nids] = pending_start;
	b->id_since[b->nids] = 0;
	b->id_changes[b->nids] = 0;
	b->ids[b->nids++] = Int64GetDatum(id);
	b->max_version = Max(b->max_version, id);
	(void) hash_search(b->idset, &id, HASH_ENTER, NULL);
}

/*
 * Read the committed rows of a table's keys, in the claim's snapshot, as
 * the table's owner (rights.c): whatever the table makes a read run (its
 * index expressions, the functions of its key types) runs with no more
 * than the owner's rights, never as this superuser session.
 */
static void
fetch_rows(TableBatch *tb, const bool *skip)
{
	Datum	   *args = palloc(sizeof(Datum) * tb->nkeys);
	char	  **texts = palloc(sizeof(char *) * tb->nbatchkeys);
	int		   *map = palloc(sizeof(int) * tb->nbatchkeys);
	int			n = 0;
	WtcRights	rights;
	int			rc;
	MemoryContext old;

	for (int i = 0; i < tb->nbatchkeys; i++)
		if (skip == NULL || !skip[i])
			map[n++] = i;
	if (n == 0)
		return;
	/* a partition's code must not run as the owner of its parent */
	wtcache_check_tree_owner(tb->relid);
	wtcache_rights_enter_table_owner(&rights, tb->relid);
	for (int c = 0; c < tb->nkeys; c++)
	{
		for (int i = 0; i < n; i++)
			texts[i] = tb->keys[map[i]].values[c];
		args[c] = wtcache_key_lookup_array(&tb->lookup, c, texts, n);
	}
	/* the owner's code (an index expression) must not stall every table */
	enable_timeout_after(STATEMENT_TIMEOUT, WTCACHE_TABLE_READ_TIMEOUT_MS);
	/* a kept plan: joins other than a nested loop are off (worker_main) */
	rc = SPI_execute_plan(wtcache_kept_plan(tb->lookup.sql_many, tb->nkeys, tb->lookup.arraytypes),
						  args, NULL, true, 0);
	disable_timeout(STATEMENT_TIMEOUT, false);
	wtcache_rights_leave(&rights);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache: reading rows of %s failed", tb->qname);

	old = MemoryContextSwitchTo(tb->batch->cxt);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		ord = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
		text	   *json = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull));
		BatchKey   *bk;

		if (ord < 1 || ord > n || isnull)
			continue;
		/* the value sent may be from a later commit than any queue row claimed */
		{
			bool		xmin_null;
			Datum		xmin = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
											 tb->nkeys + 3, &xmin_null);

			if (xmin_null)
				tb->batch->writer_unknown = true;	/* not a heap table (keys.c) */
			else
				batch_note_writer(tb->batch, DatumGetTransactionId(xmin));
		}
		bk = &tb->keys[map[ord - 1]];
		/*
		 * Found by the type's equality under another spelling (numeric
		 * 1.0 for 1.00): not this key's row, which is gone, and changes
		 * of the row are pushed under its own spelling only.
		 */
		if (!wtcache_key_lookup_same_key(&tb->lookup, SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
										 bk->values))
			continue;

		/* the worker runs under the canonical settings: fields render so */
		if (tb->hash)
			bk->fields = wtcache_key_lookup_fields(&tb->lookup, SPI_tuptable->vals[r],
												   SPI_tuptable->tupdesc, false);
		else
			bk->payload = wtcache_encode_value(bk->version, VARDATA_ANY(json),
											   VARSIZE_ANY_EXHDR(json), &bk->payload_len);
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);

	/*
	 * A key without a row is sent as deleted; the delete may be a later
	 * commit than any row here names, and nothing is left to name it.
	 */
	for (int i = 0; i < n && !tb->batch->writer_unknown; i++)
		if (tb->keys[map[i]].payload == NULL && tb->keys[map[i]].fields == NULL)
			tb->batch->writer_unknown = true;
}

typedef struct FetchArgs
{
	TableBatch *tb;
	const bool *skip;
	int			key;			/* >= 0: only parse this key's values */
} FetchArgs;

static void
fetch_or_parse(void *arg)
{
	FetchArgs  *a = (FetchArgs *) arg;

	if (a->key >= 0)
		for (int c = 0; c < a->tb->nkeys; c++)
			(void) wtcache_key_lookup_value(&a->tb->lookup, c, a->tb->keys[a->key].values[c]);
	else
		fetch_rows(a->tb, a->skip);
}

/*
 * fetch_rows(tb, skip), or the parsing of one key's values alone (key >=
 * 0), in a subtransaction.  False, with the error's message (in
 * the batch's memory), when it failed.
 */
static bool
try_fetch(TableBatch *tb, const bool *skip, int key, char **message)
{
	FetchArgs	a = {tb, skip, key};
	MemoryContext old = MemoryContextSwitchTo(tb->batch->cxt);
	bool		ok = wtcache_run_in_subxact(fetch_or_parse, &a, message);

	MemoryContextSwitchTo(old);
	/* an error during the read leaves its timeout armed */
	if (!ok)
		disable_timeout(STATEMENT_TIMEOUT, false);
	return ok;
}

/*
 * fetch_rows(), in a subtransaction: a table whose rows cannot be read (its
 * owner lost the right to read it, its policies apply to its owner, its
 * owner's code raised an error or ran past WTCACHE_TABLE_READ_TIMEOUT_MS...)
 * must not stop the delivery of
 * every other table.  Its queue rows are set aside with the reason instead
 * (ack_batch), which wtcache.status shows and a DBA retries or discards;
 * their keys stay pending, so reads of them go to the table meanwhile.
 * Every ERROR counts: the owner's code chooses its SQLSTATE, so none can
 * be trusted to mean "not about this table".  A shutdown of the worker is
 * FATAL and never lands here.
 */
static void
fetch_rows_or_set_aside(TableBatch *tb)
{
	char	   *message = NULL;
	bool	   *skip;
	int			nskip = 0;

	if (try_fetch(tb, NULL, -1, &message))
		return;

	/*
	 * A key value its type no longer reads (an enum label renamed after
	 * the change was queued; the rename queued the table again) names no
	 * row: leave it out of the read, and its key gets a tombstone, as for a
	 * deleted row.  The other keys are read again.  Each key is tried in a
	 * subtransaction of its own, on this slow path only.
	 */
	skip = palloc0(sizeof(bool) * tb->nbatchkeys);
	for (int i = 0; i < tb->nbatchkeys; i++)
		if (!try_fetch(tb, NULL, i, NULL))
		{
			skip[i] = true;
			nskip++;
		}
	for (int i = 0; i < tb->nbatchkeys; i++)
	{
		tb->keys[i].payload = NULL;
		tb->keys[i].fields = NULL;
	}
	if (nskip > 0)
	{
		/* the type read the value under a rename the snapshot may not see */
		batch_covers_wal_now(tb->batch);
	}
	if (nskip > 0 && try_fetch(tb, skip, -1, &message))
		return;
	for (int i = 0; i < tb->nbatchkeys; i++)
	{
		tb->keys[i].payload = NULL;
		tb->keys[i].fields = NULL;
	}
	tb->failure = MemoryContextStrdup(tb->batch->cxt,
									  psprintf("reading the rows of %s failed: %s",
											   tb->qname, message));
	tb->watched = false;		/* nothing of it is pushed */
}

/* The tags of the tag groups left in a queue row, each once in the batch. */
static void
batch_add_tag_groups(Batch *b, QueueTagIter *it)
{
	const Datum *names;
	int			nnames;

	while (wtcache_queue_tags_next(it, &names, &nnames))
		for (int j = 0; j < nnames; j++)
			batch_add_tag(b, TextDatumGetCString(names[j]));
}

/*
 * The claim's cursor over the queue.  In id order, through the queue's
 * primary key and no further than one batch can take: with a backlog,
 * sorting the whole queue at every claim would cost more the further behind
 * the worker is.  Rows set aside wait for a DBA (wtcache.retry_set_aside()),
 * unless discarded.
 *
 * after > 0: the second cursor of a claim (claim_batch), the rows after id
 * "after" that are not long work's, in id order.  Those of long work are
 * skipped by the filter without being decoded; the walk over them, in the
 * primary key, costs a heap visit per 1,000 of their rows.  Both cursors
 * select the same columns: one text builds both.
 *
 * The statement depends on the queue's version: 1.1 added set_aside and
 * discard, 1.3 key_template.  Kept plans are found by their text, so
 * building it each time costs a string, not a plan.
 */
static Portal
claim_open_queue(bool can_set_aside, int64 after)
{
	Oid			queue = wtcache_queue_relid();
	bool		has_template = can_set_aside &&
		get_attnum(queue, "key_template") != InvalidAttrNumber;
	StringInfoData sql;
	Datum		args[2];
	const char *where = "WHERE";

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT id, relid, keys, table_key, key_width, per_table, tags, %s, %sxmin, enqueued_at "
					 "FROM wtcache.queue q ",
					 can_set_aside ? "discard" : "false AS discard",
					 has_template ? "key_template, " : "");
	if (after > 0)
	{
		appendStringInfoString(&sql, "WHERE id OPERATOR(pg_catalog.>) $2 "
							   "AND (per_table IS NOT TRUE OR keys IS NULL) ");
		where = "AND";
	}
	/*
	 * Those of a table dropped since: nothing left to deliver.  NULL for an
	 * OID no relation has (the worker, a superuser, may read any other): a
	 * NOT EXISTS subquery on pg_class cost a plan to start at every claim,
	 * 3% of the worker's CPU.
	 */
	if (can_set_aside)
		appendStringInfo(&sql, "%s (set_aside IS NULL OR discard "
						 "OR pg_catalog.has_table_privilege(q.relid, 'SELECT') IS NULL) ",
						 where);
	appendStringInfoString(&sql, "ORDER BY id LIMIT $1");
	args[0] = Int64GetDatum(wtcache_batch_size);
	args[1] = Int64GetDatum(after);
	return SPI_cursor_open(NULL,
						   wtcache_kept_plan(sql.data, after > 0 ? 2 : 1, (Oid[]) {INT8OID, INT8OID}),
						   args, NULL, true);
}

/*
 * Keep a claimed row's pending-filter counters, to be released once it is
 * acknowledged.  Returns where they start in b->pending: they end where the
 * next row's do.
 */
static int
claim_pending_counters(Batch *b, const QueueRow *row)
{
	int			start = b->npending;

	if (b->npending + wtcache_queue_max_indexes(row) > b->maxpending)
	{
		b->maxpending = Max(b->maxpending * 2, b->npending + wtcache_queue_max_indexes(row));
		b->pending = repalloc_huge(b->pending, sizeof(uint32) * b->maxpending);
	}
	b->npending += wtcache_pending_row_indexes(MyDatabaseId, row, b->pending + b->npending);
	return start;
}

/*
 * wtcache.invalidate(): tags only.  A table tag brings its table-wide tag
 * (tags.c): whoever invalidates a table by its tag expects every entry over
 * it to go, also those narrowed to template tags.  True when the batch is
 * full.
 */
static bool
claim_tags_row(Batch *b, const QueueRow *row, QueueTagIter *tagit, int pending_start)
{
	const Datum *names;
	int			nnames;

	batch_add_id(b, row->id, row->relid, pending_start, row->xmin);
	while (wtcache_queue_tags_next(tagit, &names, &nnames))
		for (int j = 0; j < nnames; j++)
		{
			char	   *tag = TextDatumGetCString(names[j]);
			char	   *wide = wtcache_table_wide_tag_of(tag);

			batch_add_tag(b, tag);
			if (wide != NULL)
				batch_add_tag(b, wide);
		}
	b->nrecords++;
	return b->nrecords >= b->record_limit;
}

/*
 * Does a table of this database have a key template of the same key space
 * as key_template?  Then the claim of that key space stays its after a
 * purge of it (a resync, or another table's watch gone).
 */
static bool
key_space_watched(const char *key_template)
{
	KeyTemplateError err;
	KeyTemplate *t = wtcache_key_template_parse(key_template, &err);
	char	   *space;
	bool		found = false;
	MemoryContext caller = CurrentMemoryContext;

	if (t == NULL)
		return false;
	space = wtcache_key_template_space(t);
	if (SPI_execute("SELECT key_template FROM wtcache.watched WHERE key_template IS NOT NULL",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: reading wtcache.watched failed");
	for (uint64 i = 0; i < SPI_processed && !found; i++)
	{
		KeyTemplate *o = wtcache_key_template_parse(SPI_getvalue(SPI_tuptable->vals[i],
																  SPI_tuptable->tupdesc, 1),
												  &err);

		found = o != NULL && strcmp(wtcache_key_template_space(o), space) == 0;
	}
	SPI_freetuptable(SPI_tuptable);

	/*
	 * SPI_execute() leaves SPI's procedure context current, which ends
	 * with the claim's transaction: the caller's allocations after this
	 * call (the truncate event) must not land there.
	 */
	MemoryContextSwitchTo(caller);
	return found;
}

/*
 * A whole-table entry: the batch holds it alone, so it ends the batch.
 */
static void
claim_whole_table_row(Batch *b, const QueueRow *row, int pending_start)
{
	batch_add_id(b, row->id, row->relid, pending_start, row->xmin);
	b->purge_relid = row->relid;

	/*
	 * A whole-table entry is queued by DDL (TRUNCATE, or a requeue after
	 * DDL), and the rows that follow it must be read with the catalogs as
	 * that DDL left them.  DDL on a type (ALTER TYPE ... ADD ATTRIBUTE,
	 * RENAME VALUE) holds no lock on the tables whose rows it requeued, and
	 * the worker kept, now and then, an enum label as it was before the
	 * rename (AcceptInvalidationMessages() did not drop it), then pushed
	 * rows under the old key (test/t/029_postgres_corners.pl).  So drop every cache
	 * here; the DDL's commit is in our snapshot, so what is read again sees
	 * it.  A rebuild costs a few milliseconds and the kept plans, once per
	 * TRUNCATE or DDL of a watched table.
	 */
	InvalidateSystemCaches();
	{
		/* every row may be gone: narrowed entries too (tags.c) */
		char	   *tt = wtcache_table_tag(row->relid);

		if (tt)
		{
			batch_add_tag(b, tt);
			batch_add_tag(b, wtcache_table_wide_tag_of(tt));
		}
	}
	b->purge_table_key = row->table_key;
	b->purge_key_template = row->key_template;
	if (row->key_template != NULL)
		b->purge_release = !key_space_watched(row->key_template);
	if (wtcache_publish_events != WTC_PUBLISH_OFF)
	{
		/* published after the claim's transaction ended: the batch's */
		MemoryContext old = MemoryContextSwitchTo(b->cxt);

		b->purge_event = event_truncate(row->relid, row->table_key, row->key_template, row->id);
		MemoryContextSwitchTo(old);
	}
}

/*
 * The keys of a row of changes, each with the tags of its group; then the
 * tags of changes that name no row (a null key value: width 0).
 */
static void
claim_keys(Batch *b, TableBatch *tb, const QueueRow *row, QueueTagIter *tagit)
{
	/* rows captured under another key definition name no row now */
	if (tb->watched && (row->key_width == 0 || row->key_width == tb->nkeys))
	{
		char	  **captured = palloc(sizeof(char *) * tb->nkeys);

		for (int i = 0; i + tb->nkeys <= row->nvalues; i += tb->nkeys)
		{
			List	   *keytags = NIL;
			const Datum *names;
			int			nnames;

			for (int c = 0; c < tb->nkeys; c++)
				captured[c] = TextDatumGetCString(row->keys[i + c]);
			if (wtcache_queue_tags_next(tagit, &names, &nnames))
				for (int j = 0; j < nnames; j++)
				{
					char	   *tag = TextDatumGetCString(names[j]);

					keytags = lappend(keytags, tag);
					batch_add_tag(b, tag);
				}
			add_key(tb, captured, row->id, keytags);
			tb->records++;
			b->nrecords++;
		}
	}
	batch_add_tag_groups(b, tagit);
}

/*
 * The row just claimed (the batch's last id) carries changes of the
 * application's: their delivery lag is counted from its enqueued_at once
 * it is acknowledged (lag.c says why rows of warm, resync and requeues are
 * not).
 */
static void
note_lag(Batch *b, const QueueRow *row, int64 changes)
{
	if (row->per_table || row->enqueued_at == 0 || changes <= 0)
		return;
	b->id_since[b->nids - 1] = row->enqueued_at;
	b->id_changes[b->nids - 1] = changes;
}

/*
 * A row of long work was claimed: for wtcache.progress once it is
 * acknowledged, and against wtcache.bulk_rate.
 */
static void
note_bulk_row(Batch *b, const QueueRow *row, int64 records)
{
	if (b->nbulk == b->maxbulk)
	{
		b->maxbulk = b->maxbulk ? b->maxbulk * 2 : 16;
		b->bulk = b->bulk ? repalloc(b->bulk, sizeof(ProgressDelivery) * b->maxbulk)
			: palloc(sizeof(ProgressDelivery) * b->maxbulk);
	}
	b->bulk[b->nbulk].relid = row->relid;
	b->bulk[b->nbulk].id = row->id;
	b->bulk[b->nbulk].rows = records;
	b->nbulk++;
	if (wtcache_bulk_rate > 0)
		Worker.bulk_tokens -= records;
}

/*
 * Claim one queue row, in the batch's memory: its pending-filter counters,
 * then what its kind asks for.  True when the batch ends with it.
 * spicxt: the context to read its table's watch in (batch_table runs SPI).
 */
static bool
claim_row(Batch *b, QueueRow *row, MemoryContext spicxt)
{
	QueueTagIter tagit;
	int			pending_start;
	TableBatch *tb;
	bool		full;

	wtcache_queue_expand(row);
	wtcache_queue_tags_begin(&tagit, row);
	pending_start = claim_pending_counters(b, row);
	if (row->discard)
	{
		/* given up by a DBA (wtcache.discard_set_aside()): only acknowledged */
		batch_add_id(b, row->id, row->relid, pending_start, row->xmin);
		return false;
	}
	if (row->relid == WTCACHE_TAGS_ONLY)
	{
		full = claim_tags_row(b, row, &tagit, pending_start);
		note_lag(b, row, 1);
		return full;
	}
	if (!row->has_keys)
	{
		claim_whole_table_row(b, row, pending_start);
		note_lag(b, row, 1);
		return true;
	}

	MemoryContextSwitchTo(spicxt);
	tb = batch_table(b, row->relid);
	MemoryContextSwitchTo(b->cxt);
	batch_add_id(b, row->id, row->relid, pending_start, row->xmin);
	if (tb->table_tag)
	{
		batch_add_tag(b, tb->table_tag);

		/*
		 * A resync, requeue or partition DDL queues keys without their
		 * template tags: entries narrowed to template tags (tags.c) must
		 * go with the table tag's.
		 */
		if (row->per_table)
			batch_add_tag(b, wtcache_table_wide_tag_of(tb->table_tag));
	}
	{
		int64		before = b->nrecords;

		claim_keys(b, tb, row, &tagit);
		note_lag(b, row, b->nrecords - before);
		if (row->per_table)
			note_bulk_row(b, row, b->nrecords - before);
	}
	return b->nrecords >= b->record_limit;
}

/* Why claim_rows stopped: may live rows after it still be claimed? */
typedef enum ClaimStop
{
	CLAIM_STOP_END,				/* the cursor had no more */
	CLAIM_STOP_FULL,			/* the batch is full */
	CLAIM_STOP_BULK,			/* a row of long work waits for the rate */
	CLAIM_STOP_BARRIER			/* a whole-table entry, or a table to wait for */
} ClaimStop;

/*
 * May a row of long work be claimed now?  Within wtcache.bulk_rate; and
 * while live changes come (claimed within the last LIVE_RECENT_MS), one
 * chunk a batch and every other batch at most: a change committed while a
 * batch is claimed waits for that batch and the one in flight, and then
 * for its own, so their long work bounds its lag (10,000 rows a batch made
 * it half a second here, a chunk a batch 8 ms at the median and 26 ms at
 * p99 during a 10M-row warm; test/README.md has the figures with batches
 * alternating).  With no live changes, long work fills batches.
 */
#define LIVE_RECENT_MS 1000

static bool
live_changes_come(const Batch *b)
{
	return Worker.live_claimed_at != 0 &&
		!TimestampDifferenceExceeds(Worker.live_claimed_at, b->claimed_at, LIVE_RECENT_MS);
}

static bool
bulk_row_allowed(const Batch *b)
{
	if (wtcache_bulk_rate > 0 && Worker.bulk_tokens <= 0)
		return false;
	if (b->live_only)
		return false;
	return b->nbulk == 0 || !live_changes_come(b);
}

/*
 * Claim queue rows until the batch is full, a whole-table entry ends it,
 * or the queue has no more.  Returns false when it claimed none.  *stop:
 * why it stopped; *last: the id of the last row it looked at.
 */
static bool
claim_rows(Batch *b, Batch *inflight, Portal portal, ClaimStop *stop, int64 *last)
{
	bool		done = false;
	bool		any = false;
	QueueColumns cols;
	bool		mapped = false;

	*stop = CLAIM_STOP_END;

	while (!done)
	{
		SPITupleTable *chunk;
		uint64		nchunk;

		SPI_cursor_fetch(portal, true, 64);
		/* batch_table() below runs SPI queries, which replace these globals */
		chunk = SPI_tuptable;
		nchunk = SPI_processed;
		if (nchunk == 0)
			break;
		if (!mapped)
		{
			wtcache_queue_columns(chunk->tupdesc, &cols);
			mapped = true;
		}
		for (uint64 r = 0; r < nchunk && !done; r++)
		{
			QueueRow	row;
			MemoryContext spicxt;

			wtcache_queue_decode(chunk->vals[r], chunk->tupdesc, &cols, &row);
			*last = row.id;

			/* sent to Redis already, acknowledged soon */
			if (inflight && hash_search(inflight->idset, &row.id, HASH_FIND, NULL))
				continue;

			/*
			 * A whole-table entry goes alone: it ends a batch that has rows.
			 * Nothing passes it (claim_batch), so its purge never removes a
			 * value pushed after it from a change before it.
			 */
			if (!row.has_keys && OidIsValid(row.relid) && (b->nids > 0 || b->bulk_deferred))
			{
				*stop = CLAIM_STOP_BARRIER;
				done = true;
				break;
			}

			/* long work over its rate waits; live rows after it may go */
			if (row.per_table && row.has_keys && !bulk_row_allowed(b))
			{
				b->bulk_deferred = true;
				*stop = CLAIM_STOP_BULK;
				done = true;
				break;
			}

			/*
			 * A table the batch has not locked yet, while it holds others:
			 * waiting for it could deadlock with a transaction that locks
			 * them in another order (TRUNCATE a, b; in another session b
			 * was claimed first), and the deadlock detector would end the
			 * claim with an error.  So the batch ends before it, and the
			 * next claim, which holds no table yet, waits for it.
			 */
			if (row.has_keys && OidIsValid(row.relid) && b->ntables > 0 &&
				!batch_has_table(b, row.relid) &&
				!ConditionalLockRelationOid(row.relid, AccessShareLock))
			{
				*stop = CLAIM_STOP_BARRIER;
				done = true;
				break;
			}

			spicxt = MemoryContextSwitchTo(b->cxt);
			done = claim_row(b, &row, spicxt);
			MemoryContextSwitchTo(spicxt);
			any = true;
			if (done)
				*stop = b->purge_table_key != NULL ? CLAIM_STOP_BARRIER : CLAIM_STOP_FULL;
		}
		SPI_freetuptable(chunk);
	}
	return any;
}

/*
 * Where the second cursor of a claim starts, after the rows in id order
 * stopped at last.  Walking from last over long work's rows to the live
 * ones costs a heap visit per row of long work, at every claim (a 10M-row
 * warm is 40,000 of them, 15 ms), so it resumes where the last walk ended.
 * A live row behind that point may commit later: its id was drawn before
 * a row the walk passed committed, as happens all the time between
 * concurrent writers and to a long transaction's first chunks.  So each
 * committing writer lowers its worker slot's live_committed_from to the
 * lowest id of such rows it queued (capture.c), after its commit is
 * visible; the worker takes it before each claim's snapshot (claim_next)
 * and keeps the lowest until a walk, which then starts there: at its own
 * rows, not at the long work before them.  A PREPAREd transaction's rows
 * commit in another session, which knows nothing of them: with
 * max_prepared_transactions above 0 the walk starts from last again once
 * every LIVE_REWALK_MS too.  A batch dropped unsent walks from last at once
 * (batch_unclaimed).  A whole-table entry that committed behind the walk
 * must not be passed: a TRUNCATE's id is drawn before any later change of
 * its table commits, so once it is visible, changes after it may be too,
 * and pushing them before its purge would lose them.  The partial index
 * queue_whole_table_idx (1.4) finds one at once.
 */
#define LIVE_REWALK_MS 1000

static int64
resume_live_scan(int64 last)
{
	Datum		args[2];
	int			rc;
	int64		from = Worker.live_scan_from;

	if (Worker.live_committed_from <= from)
		from = Worker.live_committed_from - 1;
	Worker.live_committed_from = PG_INT64_MAX;
	if (max_prepared_xacts > 0)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (TimestampDifferenceExceeds(Worker.live_scan_walked_at, now, LIVE_REWALK_MS))
		{
			Worker.live_scan_walked_at = now;
			from = last;
		}
	}
	if (from <= last)
		return last;
	args[0] = Int64GetDatum(last);
	args[1] = Int64GetDatum(from);
	rc = SPI_execute_plan(wtcache_kept_plan("SELECT 1 FROM wtcache.queue WHERE keys IS NULL "
											"AND id OPERATOR(pg_catalog.>) $1 "
											"AND id OPERATOR(pg_catalog.<=) $2 LIMIT 1",
											2, (Oid[]) {INT8OID, INT8OID}),
						  args, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache: reading the queue failed");
	if (SPI_processed > 0)
		from = last;
	SPI_freetuptable(SPI_tuptable);
	return from;
}

/*
 * The generation marker holds the highest version Redis acknowledged, and
 * Redis lost data when it shows less (markers.c, read.c).  That holds
 * only if every batch raises it: a batch that does not, because its rows
 * are older than a change already delivered (long work that live changes
 * passed, claim_batch), could be lost with the marker still where the
 * worker left it, and its removals (a DETACH's rows, a requeue's old
 * shape) never made, while reads trust Redis.  Such a batch carries a new
 * queue id as its version instead: higher than any row queued so far, so
 * the marker goes up with it, and still one the database handed out, so
 * a Redis with a higher marker is still one from another history.
 */
static void
raise_batch_version(Batch *b, const Batch *inflight)
{
	int64		floor = acked_version();
	bool		isnull;

	if (inflight != NULL && inflight->max_version > floor)
		floor = inflight->max_version;
	if (b->max_version > floor)
		return;
	if (SPI_execute_plan(wtcache_kept_plan("SELECT pg_catalog.nextval('wtcache.queue_id_seq'::pg_catalog.regclass)",
										   0, NULL),
						 NULL, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "wtcache: drawing a batch version from wtcache.queue_id_seq failed");
	b->max_version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Claim the next batch.  Runs inside the claim transaction; everything kept
 * goes to the batch's memory (b->cxt).  Returns false when the queue is
 * empty.  In three phases: open the queue, claim its rows, read the rows
 * of their keys.
 */
static bool
claim_batch(Batch *b, Batch *inflight)
{
	bool		can_set_aside = wtcache_queue_can_set_aside();
	Portal		portal = claim_open_queue(can_set_aside, 0);
	ClaimStop	stop;
	int64		last = 0;
	bool		any;

	b->record_limit = wtcache_batch_size;
	b->live_only = Worker.last_claim_bulk && live_changes_come(b);
	any = claim_rows(b, inflight, portal, &stop, &last);
	SPI_cursor_close(portal);

	/*
	 * Live changes go ahead of long work (a warm, a resync, a requeue):
	 * when the rows in id order stopped at, or filled the batch with, rows
	 * of long work, the rows after them that are not long work's are
	 * claimed too, up to a batch more, so a change committed during a
	 * 10M-row warm is in the next batch rather than behind the warm.
	 * Passing them is safe: every push carries its queue id as version
	 * and Redis keeps the higher (push.c), and a push sends the row as it
	 * is at its claim, so a row of long work delivered after a newer
	 * change of its key is refused, or carries a value as new.  Nothing
	 * passes a whole-table entry (claim_rows stops there), so a purge
	 * still comes after everything queued before it and before everything
	 * queued after it.  The batches of long work delivered after a
	 * change that passed them still raise the generation marker
	 * (raise_batch_version).
	 */
	if ((stop == CLAIM_STOP_BULK || (stop == CLAIM_STOP_FULL && b->nbulk > 0)) && last > 0)
	{
		ClaimStop	stop2;
		int64		from = resume_live_scan(last);
		int64		last2 = 0;

		b->record_limit = b->nrecords + wtcache_batch_size;
		portal = claim_open_queue(can_set_aside, from);
		if (claim_rows(b, inflight, portal, &stop2, &last2))
			any = true;
		SPI_cursor_close(portal);

		/*
		 * Stopped short of the end (a whole-table entry, a table locked):
		 * the rows past the stop that committed late were told of by
		 * their writers already, so the next walk starts where this one
		 * did, not past them.
		 */
		if (stop2 == CLAIM_STOP_END || stop2 == CLAIM_STOP_FULL)
			Worker.live_scan_from = Max(from, last2);
		else
			Worker.live_scan_from = from;
	}

	/* no live change came after all: long work need not wait out a batch */
	if (!any && b->live_only && b->bulk_deferred)
	{
		b->live_only = false;
		b->bulk_deferred = false;
		portal = claim_open_queue(can_set_aside, 0);
		any = claim_rows(b, inflight, portal, &stop, &last);
		SPI_cursor_close(portal);
	}
	Worker.last_claim_bulk = b->nbulk > 0;
	b->queue_empty = !any && !b->bulk_deferred;
	if (any)
		raise_batch_version(b, inflight);
	{
		int64		bulk = 0;

		for (int i = 0; i < b->nbulk; i++)
			bulk += b->bulk[i].rows;
		if (b->nrecords > bulk)
			Worker.live_claimed_at = b->claimed_at;
	}

	for (int i = 0; i < b->ntables; i++)
		if (b->tables[i].watched && b->tables[i].nbatchkeys > 0)
		{
			if (can_set_aside)
				fetch_rows_or_set_aside(&b->tables[i]);
			else
				fetch_rows(&b->tables[i], NULL);
		}
	return any;
}

/* Once per table and worker: a row too large for Redis. */
static void
log_oversized(TableBatch *tb, size_t len)
{
	/* local: this message's log-once list, read by nothing else */
	static List *logged = NIL;
	MemoryContext old;

	if (list_member_oid(logged, tb->relid))
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	logged = lappend_oid(logged, tb->relid);
	MemoryContextSwitchTo(old);
	ereport(LOG,
			(errmsg("wtcache: a row of %s is %zu bytes, more than Redis accepts in one value; its key is removed from Redis instead",
					tb->qname, len),
			 errdetail("Reads of such rows go to the table.  Redis's proto-max-bulk-len sets the limit."),
			 errhint("Raise proto-max-bulk-len in Redis, or keep such rows out of a watched table.")));
}

/* Turn the claimed keys into Redis writes. */
static PushItem *
build_items(Batch *b, int *nitems)
{
	int			total = 0;
	int			n = 0;
	PushItem   *items;

	for (int i = 0; i < b->ntables; i++)
		if (b->tables[i].watched)
			total += b->tables[i].nbatchkeys;
	items = palloc(sizeof(PushItem) * Max(total, 1));

	for (int i = 0; i < b->ntables; i++)
	{
		TableBatch *tb = &b->tables[i];

		if (!tb->watched)
			continue;
		for (int k = 0; k < tb->nbatchkeys; k++)
		{
			BatchKey   *bk = &tb->keys[k];
			PushItem   *it = &items[n++];
			bool		exists = bk->payload != NULL || bk->fields != NULL;
			size_t		size = bk->fields ? bk->fields->size : bk->payload_len;

			/*
			 * A row larger than Redis accepts in one value would make it drop
			 * the connection, and the batch be sent again for ever: its key
			 * is removed instead, as in invalidate mode, and reads of it go
			 * to the table (they never fill what is this large either).  A
			 * hash counts the bytes of all its fields.
			 */
			bool		oversized = exists && !tb->invalidate &&
				(int64) size > wtcache_max_value_bytes;

			if (oversized)
				log_oversized(tb, size);

			if (tb->tmpl != NULL)
			{
				StringInfoData rk;

				initStringInfo(&rk);
				wtcache_append_templated_row_key(&rk, wtcache_key_prefix, tb->tmpl, bk->values);
				it->row_key = rk.data;
				it->row_key_len = rk.len;
				it->tomb_key = wtcache_templated_companion(wtcache_key_prefix, rk.data, rk.len, false);
				it->lease_key = wtcache_templated_companion(wtcache_key_prefix, rk.data, rk.len, true);
			}
			else
			{
				it->row_key = wtcache_row_key_from_values(wtcache_key_prefix, tb->table_key,
														  bk->suffix);
				it->row_key_len = strlen(it->row_key);
				it->tomb_key = NULL;
				it->lease_key = NULL;
			}
			it->relid = tb->relid;
			it->version = bk->version;
			it->ttl_ms = 0;
			it->event = NULL;
			it->event_len = 0;
			it->hash = tb->hash;
			it->fields = NULL;
			if (wtcache_publish_events != WTC_PUBLISH_OFF)
				event_row(it, tb, bk,
						  !exists ? "delete" :
						  (tb->invalidate || oversized) ? "invalidate" : "upsert");
			if (exists && !tb->invalidate && !oversized)
			{
				it->payload = bk->payload;
				it->payload_len = bk->payload_len;
				it->fields = bk->fields;
				if (tb->ttl_ms > 0)
				{
					double		spread = wtcache_ttl_jitter * (2.0 * pg_prng_double(&pg_global_prng_state) - 1.0);

					it->ttl_ms = Max((int64) 1, (int64) (tb->ttl_ms * (1.0 + spread)));
				}
			}
			else
			{
				it->payload = NULL;
				it->payload_len = 0;
			}
		}
	}
	*nitems = n;
	return items;
}

/* The batch's tags as Redis keys, and the event that lists them. */
static void
build_tag_bumps(Batch *b)
{
	TagBumps   *tb = &b->bumps;

	tb->ntags = b->ntags;
	tb->clock_key = Worker.clock_key;
	tb->event = NULL;
	tb->event_len = 0;
	if (b->ntags == 0)
		return;
	tb->keys = palloc(sizeof(char *) * b->ntags);
	tb->lens = palloc(sizeof(size_t) * b->ntags);
	for (int i = 0; i < b->ntags; i++)
	{
		StringInfoData key;

		initStringInfo(&key);
		wtcache_append_tag_key(&key, Worker.dbname, b->tags[i]);
		tb->keys[i] = key.data;
		tb->lens[i] = key.len;
	}
	if (wtcache_publish_events != WTC_PUBLISH_OFF)
		event_tags(tb, b->tags, b->ntags, b->max_version);
}

/*
 * wtcache.bulk_rate: the bucket fills at the rate, up to a second's worth,
 * and a deferred row may go once it is above zero again.
 */
static void
bulk_refill(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (wtcache_bulk_rate <= 0)
	{
		Worker.bulk_tokens = 0;
		Worker.bulk_refilled_at = 0;
		Worker.bulk_wait_until = 0;
		return;
	}
	if (Worker.bulk_refilled_at == 0)
		Worker.bulk_tokens = wtcache_bulk_rate;
	else if (now > Worker.bulk_refilled_at)
		Worker.bulk_tokens = Min(Worker.bulk_tokens +
								 (double) wtcache_bulk_rate * (now - Worker.bulk_refilled_at) / USECS_PER_SEC,
								 (double) wtcache_bulk_rate);
	Worker.bulk_refilled_at = now;
}

/*
 * A claimed batch that will not be acknowledged: dropped unsent (a reload,
 * a marker check, Redis lost before its turn) or lost in flight.  Its rows
 * are claimed again, so the second cursor walks from the start again (its
 * live rows lie behind where the walk ended) and its long work gives back
 * what it took of the rate.  b may be NULL, or acknowledged after all (a
 * resync that failed after its batch was: finish_batch).
 */
void
batch_unclaimed(const Batch *b)
{
	if (b == NULL || b->acked)
		return;
	Worker.live_scan_from = 0;
	if (wtcache_bulk_rate > 0)
	{
		int64		bulk = 0;

		for (int i = 0; i < b->nbulk; i++)
			bulk += b->bulk[i].rows;
		Worker.bulk_tokens = Min(Worker.bulk_tokens + bulk, (double) wtcache_bulk_rate);
	}
}

/* When the rows of long work left by the last claim may go (0: none left). */
TimestampTz
bulk_resume_at(const Batch *b)
{
	if (!b->bulk_deferred || wtcache_bulk_rate <= 0)
		return 0;
	return TimestampTzPlusMilliseconds(Worker.bulk_refilled_at,
									   (int64) ceil(Max(-Worker.bulk_tokens, 0) * 1000.0 / wtcache_bulk_rate) + 1);
}

/*
 * Claim the next batch into cxt, skipping what is in flight.  False when
 * there is nothing to deliver (or DROP EXTENSION holds the queue).
 */
bool
claim_next(Batch *b, MemoryContext cxt, Batch *inflight)
{
	HASHCTL		ctl;
	bool		any;
	Oid			queue;
	int64		committed_from;

	MemoryContextReset(cxt);
	MemoryContextSwitchTo(cxt);
	memset(b, 0, sizeof(*b));
	b->cxt = cxt;
	b->maxtables = 4;
	b->tables = palloc(sizeof(TableBatch) * b->maxtables);
	b->maxids = 64;
	b->ids = palloc(sizeof(Datum) * b->maxids);
	b->id_relids = palloc(sizeof(Oid) * b->maxids);
	b->id_pending = palloc(sizeof(int) * b->maxids);
	b->id_since = palloc(sizeof(TimestampTz) * b->maxids);
	b->id_changes = palloc(sizeof(int64) * b->maxids);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = cxt;
	b->idset = hash_create("wtcache batch ids", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	b->tagset = string_set_create("wtcache batch tags", 64, cxt);
	b->maxpending = 1024;
	b->pending = palloc(sizeof(uint32) * b->maxpending);

	bulk_refill();
	b->claimed_at = GetCurrentTimestamp();
	/* before the snapshot: the rows of what it says are in it */
	committed_from = wtcache_take_live_committed_from(Worker.slot);
	Worker.live_committed_from = Min(Worker.live_committed_from, committed_from);
	begin_xact(true);
	batch_wal_at_claim(b);
	queue = queue_relid_or_exit();
	b->queue = queue;
	if (!ConditionalLockRelationOid(queue, AccessShareLock))
	{
		/* DROP EXTENSION in progress: let it finish */
		end_xact();
		MemoryContextSwitchTo(TopMemoryContext);
		return false;
	}
	any = claim_batch(b, inflight);
	if (any && b->purge_table_key == NULL)
	{
		MemoryContextSwitchTo(cxt);
		b->items = build_items(b, &b->nitems);
	}
	if (any)
	{
		MemoryContextSwitchTo(cxt);
		build_tag_bumps(b);
		batch_catalog_at_claim(b);
	}
	end_xact();
	MemoryContextSwitchTo(TopMemoryContext);
	return any;
}
