/*-------------------------------------------------------------------------
 * audit.c
 *		The live consistency audit: the worker compares sampled Redis
 *		values with the committed rows, at wtcache.audit_rate keys a second.
 *
 * Between batches (no batch in flight: after one was acknowledged, before
 * the next, already claimed, is sent; or once the queue is empty), while
 * Redis is verified (the generation marker check passed) and the pending
 * filter counts this database's queue, one step:
 *	1. reads, in one short read-only transaction, the rows of a range of
 *	   heap blocks of one watched table (a cursor over its blocks, table
 *	   after table), as the table's owner, restricted, rendered as the
 *	   worker renders them (verify.c owns the scan and the comparison);
 *	2. with no transaction open, reads their keys from Redis, pipelined;
 *	3. only then asks the pending filter about each key, and compares the
 *	   keys that have no change in flight.
 *
 * Why that order never calls a right value wrong: only this process
 * delivers, and it is not delivering while it audits.  A change whose
 * commit the row read saw was counted in the pending filter before that
 * commit, and stays counted until the worker acknowledges its delivery,
 * which happens after this step at the earliest; so if the filter reads
 * zero after the Redis read, every change committed before it was
 * delivered before the step began, and Redis must hold exactly the row
 * read (a reader's fill, too, writes only a row with no change in flight,
 * under a lease).  The filter is asked after Redis answered, so a change
 * that committed between the two reads is seen as in flight.
 *
 * What still differs is a suspect, not yet a finding: Redis may have lost
 * its data a moment ago (a restart, a FLUSHALL), which the next marker
 * check notices and repairs.  So a suspect asks for a marker check and is
 * read again, both sides, in a later step after that check passed; only
 * then, still different and still with nothing in flight, is it counted
 * (mismatched, or missing: a write-through table without a TTL must have
 * every row), logged once, without key or values (rows may hold secrets
 * the server log must not), and repaired: its key is queued, so the
 * worker pushes the row with a new version (which wins the compare-and-set
 * over any version Redis holds) and announces it on the events channel,
 * which a near cache holding the wrong value needs too.  A repaired key is
 * read again once delivered: right, it leaves the oldest-mismatch gauge;
 * still wrong (Redis refused the new version), it stays there until a
 * later pass finds it right.
 *
 * Keys of the batch claimed but not yet sent are counted in the pending
 * filter like any other change on its way, so they are passed by.
 *
 * Cost: a step reads at most AUDIT_STEP_MAX keys (a tenth of a second's
 * worth), in block ranges sized from the rows the last range held and cut
 * at the step's keys (dense blocks after a run of empty ones), in one
 * read and one pipeline, so a batch waits for it a few milliseconds at
 * most; the latch wait ends when the next step is due.  While batches come
 * full (a backlog) drain() runs no step: the audit takes what time the
 * worker has to spare, and its rate is a ceiling, not a promise.
 *
 * Why heap blocks and not the key order: a range of ctids is read by a
 * TID range scan with built-in operators on the tid type, whatever the key
 * columns' types are and whatever operators their owners made; a pass
 * visits every row that stayed in place during it, which is what a
 * long-lived wrong value does.  A row moved by an update is compared when
 * it is found again, and was just delivered anyway.
 *
 * Not sampled: Redis keys of rows that no longer exist (verify() scans
 * for those); keys of tables in invalidate mode or with a TTL that Redis
 * lacks (legal there).
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "capture.h"
#include "keyspace.h"
#include "partition.h"
#include "pending.h"
#include "queue.h"
#include "rights.h"
#include "settings.h"
#include "verify.h"

#include "access/relation.h"
#include "catalog/partition.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

/* keys one step compares at most */
#define AUDIT_STEP_MAX			256
/* heap blocks one step reads at most */
#define AUDIT_MAX_BLOCKS		1024
/* suspects and confirmed keys followed at once */
#define AUDIT_MAX_TRACKED		256
/* a step's read of a table gives up after this long (then skips it) */
#define AUDIT_READ_TIMEOUT_MS	5000

typedef enum TrackState
{
	TRACK_SUSPECT,				/* found different once, to be read again */
	TRACK_REPAIRING,			/* confirmed, its key queued */
	TRACK_UNRESOLVED			/* still different after its redelivery */
} TrackState;

/* A key the audit follows (Audit.tracked) */
typedef struct TrackedKey
{
	Oid			relid;
	int			nkeys;
	char	  **canon;			/* canonical key text (row key, read by key) */
	char	  **recorded;		/* as the trigger records it (pending
								 * filter, queue): keys.c */
	char	   *row_key;
	TrackState	state;
	TimestampTz first_seen;		/* confirmed at */
	MemoryContext cxt;			/* all of the above */
} TrackedKey;

/* One compared key of a step */
typedef struct AuditRow
{
	char	  **canon;
	char	  **recorded;
	char	   *row;			/* the row's JSON, NULL: no row */
	HashValue  *fields;
	char	   *row_key;
	WtcReply	reply;
} AuditRow;

/*
 * A heap the audit walks: a watched table, or a leaf partition of a
 * watched partitioned table (each has its own ctids).
 */
typedef struct AuditTable
{
	Oid			relid;			/* the watched table */
	Oid			leaf;			/* the heap: relid itself, or a partition */
} AuditTable;

/* The worker's audit state, in this process only */
static struct
{
	double		tokens;			/* keys the rate allows now */
	TimestampTz refilled_at;
	AuditTable *tables;			/* in oid order */
	int			ntables;
	int			table_pos;		/* the one being walked */
	AuditTable	walk;			/* whose blocks next_block counts */
	BlockNumber next_block;
	OffsetNumber next_offset;	/* within next_block: where a cut step stopped */
	BlockNumber nblocks;		/* its size when its pass began */
	int			blocks_per_step;
	bool		check_asked;	/* suspects wait for a marker check */
	uint64		resyncs_seen;	/* Worker.slot->resyncs when they were found */
	TrackedKey	tracked[AUDIT_MAX_TRACKED];
	int			ntracked;
	MemoryContext cxt;			/* tables, and tracked keys' contexts */
	MemoryContext step_cxt;		/* reset at each step */
	/* this step's figures, added to the slot at its end */
	uint64		checked;
	uint64		mismatched;
	uint64		missing;
	uint64		skipped;
	uint64		repaired;
} Audit;

static int
step_target(void)
{
	return Max(1, Min(AUDIT_STEP_MAX, wtcache_audit_rate / 10));
}

static void
refill(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (Audit.refilled_at == 0)
		Audit.tokens = step_target();
	else
		Audit.tokens += (double) (now - Audit.refilled_at) * wtcache_audit_rate / USECS_PER_SEC;
	/* no bursts after idle time: at most one step's worth */
	Audit.tokens = Min(Audit.tokens, (double) step_target());
	Audit.refilled_at = now;
}

/* How long until the next step is due, at most timeout_ms. */
long
audit_timeout_ms(long timeout_ms)
{
	double		wait_ms;

	/* a step waits for these anyway: no wake-ups for nothing meanwhile */
	if (wtcache_audit_rate <= 0 || Worker.redis == NULL || !Worker.redis_verified ||
		!Worker.slot->pending_ready)
		return timeout_ms;
	refill();
	wait_ms = (step_target() - Audit.tokens) * 1000.0 / wtcache_audit_rate;
	return Min(timeout_ms, Max(1, (long) wait_ms + 1));
}

/* Publish this step's figures and the oldest unresolved mismatch. */
static void
publish(void)
{
	TimestampTz oldest = 0;

	for (int i = 0; i < Audit.ntracked; i++)
		if (Audit.tracked[i].state != TRACK_SUSPECT &&
			(oldest == 0 || Audit.tracked[i].first_seen < oldest))
			oldest = Audit.tracked[i].first_seen;
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->audit_checked += Audit.checked;
	Worker.slot->audit_mismatched += Audit.mismatched;
	Worker.slot->audit_missing += Audit.missing;
	Worker.slot->audit_skipped += Audit.skipped;
	Worker.slot->audit_repaired += Audit.repaired;
	Worker.slot->audit_oldest_mismatch = oldest;
	SpinLockRelease(&Worker.slot->mutex);
	Audit.checked = Audit.mismatched = Audit.missing = Audit.skipped = Audit.repaired = 0;
}

static void
untrack(int i)
{
	MemoryContextDelete(Audit.tracked[i].cxt);
	Audit.tracked[i] = Audit.tracked[--Audit.ntracked];
}

static int
find_tracked(Oid relid, const char *row_key)
{
	for (int i = 0; i < Audit.ntracked; i++)
		if (Audit.tracked[i].relid == relid && strcmp(Audit.tracked[i].row_key, row_key) == 0)
			return i;
	return -1;
}

static void
track(Oid relid, int nkeys, const AuditRow *r)
{
	TrackedKey *t;

	if (Audit.ntracked >= AUDIT_MAX_TRACKED || find_tracked(relid, r->row_key) >= 0)
		return;
	t = &Audit.tracked[Audit.ntracked++];
	t->cxt = AllocSetContextCreate(Audit.cxt, "wtcache audit key", ALLOCSET_SMALL_SIZES);
	t->relid = relid;
	t->nkeys = nkeys;
	t->canon = MemoryContextAlloc(t->cxt, sizeof(char *) * nkeys);
	t->recorded = MemoryContextAlloc(t->cxt, sizeof(char *) * nkeys);
	for (int c = 0; c < nkeys; c++)
	{
		t->canon[c] = MemoryContextStrdup(t->cxt, r->canon[c]);
		t->recorded[c] = MemoryContextStrdup(t->cxt, r->recorded[c]);
	}
	t->row_key = MemoryContextStrdup(t->cxt, r->row_key);
	t->state = TRACK_SUSPECT;
	t->first_seen = 0;
}

/*
 * Is a change of this key on its way, or of its whole table?  Asked after
 * Redis answered (see the header).  Not ready: everything is.
 */
static bool
in_flight(Oid relid, int nkeys, char **recorded)
{
	const char *vals[INDEX_MAX_KEYS];
	int			lens[INDEX_MAX_KEYS];

	if (!Worker.slot->pending_ready)
		return true;
	for (int c = 0; c < nkeys; c++)
	{
		vals[c] = recorded[c];
		lens[c] = strlen(recorded[c]);
	}
	return !wtcache_pending_clear(wtcache_pending_key_index(MyDatabaseId, relid, nkeys, vals, lens),
								  wtcache_pending_table_index(MyDatabaseId, relid));
}

/* GET (of a hash: HGETALL) each row's key, pipelined.  False: Redis failed. */
static bool
read_redis(bool hash, AuditRow *rows, int n)
{
	WtcRedis   *r = Worker.redis;
	bool		ok = (r != NULL);

	for (int i = 0; i < n && ok; i++)
	{
		const char *argv[2] = {hash ? "HGETALL" : "GET", rows[i].row_key};
		size_t		lens[2] = {strlen(argv[0]), strlen(rows[i].row_key)};

		ok = wtc_redis_append(r, 2, argv, lens);
	}
	ok = ok && wtc_redis_flush(r);
	for (int i = 0; i < n && ok; i++)
		ok = wtc_redis_read(r, &rows[i].reply);
	if (!ok && Worker.redis != NULL)
		redis_failed("could not read Redis for the audit", wtc_redis_errstr(Worker.redis));
	return ok;
}

/*
 * The watched tables' heaps, refreshed at the start of each round over
 * them: a plain table's own, a partitioned table's leaf partitions (found
 * in the catalogs, so no lock on them is waited for here).  Foreign
 * partitions have no heap to walk.
 */
static void
refresh_tables(void)
{
	MemoryContext old;

	if (SPI_execute("WITH RECURSIVE tree(root, rel) AS ("
					" SELECT w.rel::pg_catalog.oid, w.rel::pg_catalog.oid FROM wtcache.watched w"
					" UNION ALL"
					" SELECT tree.root, i.inhrelid FROM tree"
					" JOIN pg_catalog.pg_class p ON p.oid OPERATOR(pg_catalog.=) tree.rel"
					"  AND p.relkind OPERATOR(pg_catalog.=) 'p'"
					" JOIN pg_catalog.pg_inherits i ON i.inhparent OPERATOR(pg_catalog.=) tree.rel)"
					" SELECT tree.root, tree.rel FROM tree"
					" JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.rel"
					"  AND c.relkind OPERATOR(pg_catalog.=) 'r'"
					" ORDER BY 1, 2", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: listing the watched tables failed");
	old = MemoryContextSwitchTo(Audit.cxt);
	if (Audit.tables != NULL)
		pfree(Audit.tables);
	Audit.ntables = (int) SPI_processed;
	Audit.tables = palloc(sizeof(AuditTable) * Max(Audit.ntables, 1));
	MemoryContextSwitchTo(old);
	for (int i = 0; i < Audit.ntables; i++)
	{
		bool		isnull;

		Audit.tables[i].relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		Audit.tables[i].leaf = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	Audit.table_pos = 0;

	/* keys of tables no longer watched are no longer anyone's concern */
	for (int i = Audit.ntracked - 1; i >= 0; i--)
	{
		bool		found = false;

		for (int t = 0; t < Audit.ntables && !found; t++)
			found = Audit.tables[t].relid == Audit.tracked[i].relid;
		if (!found)
			untrack(i);
	}
}

/*
 * The end of one of a step's transactions, back in the step's memory (a
 * commit leaves CurrentMemoryContext at TopMemoryContext).
 */
static void
step_end_xact(void)
{
	end_xact();
	MemoryContextSwitchTo(Audit.step_cxt);
}

/* What a table's step reads: filled by read_table() inside a subtransaction */
typedef struct TableRead
{
	Oid			relid;
	Oid			leaf;			/* the heap walked (sample): AuditTable */
	/* in: the keys to read again (confirm), or NULL to read blocks */
	TrackedKey **again;
	int			nagain;
	ItemPointerData from;
	BlockNumber last;			/* exclusive */
	int			limit;			/* rows read at most */
	bool		size_only;		/* only its size into nblocks */
	/* out */
	BlockNumber nblocks;
	ItemPointerData resume;		/* when limit rows were read: after the last */
	bool		hash;
	bool		keys_optional;
	int			nkeys;
	AuditRow   *rows;
	int			nrows;
	char	   *qname;
} TableRead;

static char *
render_recorded(KeyColumn *col, HeapTuple tup, TupleDesc desc, int attno)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, attno, &isnull);

	return isnull ? pstrdup("") : wtcache_render_key_value(col, d);
}

/*
 * Read the rows, as the owner, restricted.  In a subtransaction: the
 * owner's code may fail, or run past AUDIT_READ_TIMEOUT_MS; a concurrent
 * DDL may have changed what the watch names.
 */
static void
read_table(void *arg)
{
	TableRead  *tr = (TableRead *) arg;
	MemoryContext keep = CurrentMemoryContext;
	WatchConfig config;
	VerifyTable vt;
	Relation	rel;
	WtcRights	rights;
	KeyColumn  *cols;

	if (!wtcache_load_watch(tr->relid, &config))
		return;
	MemoryContextSwitchTo(keep);
	rel = relation_open(tr->relid, NoLock);
	wtcache_verify_table_init(&vt, rel, &config, keep);
	tr->hash = vt.hash;
	tr->keys_optional = vt.keys_optional;
	tr->nkeys = vt.nkeys;
	tr->qname = vt.qname;
	cols = palloc(sizeof(KeyColumn) * vt.nkeys);
	for (int c = 0; c < vt.nkeys; c++)
		wtcache_init_key_column(&cols[c], rel, config.key_attnums[c], keep);

	wtcache_check_tree_owner(tr->relid);
	wtcache_rights_enter_table_owner(&rights, tr->relid);
	enable_timeout_after(STATEMENT_TIMEOUT, AUDIT_READ_TIMEOUT_MS);
	if (tr->size_only)
	{
		/* the leaf is locked (read_in_xact) */
		Relation	leaf = tr->leaf == tr->relid ? rel : relation_open(tr->leaf, NoLock);

		tr->nblocks = RelationGetNumberOfBlocks(leaf);
		if (leaf != rel)
			relation_close(leaf, NoLock);
	}
	else if (tr->again == NULL)
	{
		StringInfoData sql;
		Oid			argtypes[3] = {TIDOID, TIDOID, OIDOID};
		Datum		args[3];
		ItemPointerData to;
		bool		partition = tr->leaf != tr->relid;

		/*
		 * The ctid range: built-in operators of built-in types.  A TID
		 * range scan returns its rows in ctid order, so a read that stops
		 * at the limit resumes after its last row: a range of dense
		 * blocks after empty ones costs a step no more than a step's keys.
		 * So the plan is pinned to one (a sequential scan may start where
		 * another session's is, synchronize_seqscans).  A partition is
		 * read through the watched table, as delivery reads it: its
		 * owner's rights and the watched table's policies, not the
		 * partition's, which may differ (wtcache_tree_stranger); the other
		 * partitions' rows in the range are passed over by tableoid.
		 */
		(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("enable_tidscan", "on", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("synchronize_seqscans", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		ItemPointerSet(&to, tr->last, 0);
		args[0] = PointerGetDatum(&tr->from);
		args[1] = PointerGetDatum(&to);
		args[2] = ObjectIdGetDatum(tr->leaf);
		initStringInfo(&sql);
		wtcache_verify_scan_sql(&vt, &sql, true);
		appendStringInfoString(&sql, " WHERE t.ctid OPERATOR(pg_catalog.>=) $1 AND t.ctid OPERATOR(pg_catalog.<) $2");
		if (partition)
			appendStringInfoString(&sql, " AND t.tableoid OPERATOR(pg_catalog.=) $3");
		if (SPI_execute_with_args(sql.data, partition ? 3 : 2, argtypes, args, NULL, true,
								  tr->limit) != SPI_OK_SELECT)
			elog(ERROR, "wtcache: reading rows of %s failed", vt.qname);
		MemoryContextSwitchTo(keep);
		tr->nrows = (int) SPI_processed;
		ItemPointerSetInvalid(&tr->resume);
		if (tr->nrows > 0 && tr->nrows >= tr->limit)
		{
			bool		isnull;
			ItemPointer last_tid;

			last_tid = (ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[tr->nrows - 1],
																   SPI_tuptable->tupdesc,
																   SPI_tuptable->tupdesc->natts,
																   &isnull));
			ItemPointerSet(&tr->resume, ItemPointerGetBlockNumberNoCheck(last_tid),
						   ItemPointerGetOffsetNumberNoCheck(last_tid) + 1);
		}
		tr->rows = palloc0(sizeof(AuditRow) * Max(tr->nrows, 1));
		for (int i = 0; i < tr->nrows; i++)
		{
			AuditRow   *r = &tr->rows[i];
			HeapTuple	tup = SPI_tuptable->vals[i];

			r->canon = palloc(sizeof(char *) * vt.nkeys);
			r->recorded = palloc(sizeof(char *) * vt.nkeys);
			wtcache_verify_scan_row(&vt, tup, SPI_tuptable->tupdesc, r->canon, &r->row, &r->fields);
			for (int c = 0; c < vt.nkeys; c++)
				r->recorded[c] = render_recorded(&cols[c], tup, SPI_tuptable->tupdesc, c + 1);
			r->row_key = wtcache_verify_row_key(&vt, r->canon);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	else
	{
		char	 ***values = palloc(sizeof(char **) * tr->nagain);
		char	  **rows;
		HashValue **fields;

		for (int i = 0; i < tr->nagain; i++)
			values[i] = tr->again[i]->canon;
		rows = wtcache_verify_rows_of(&vt, values, tr->nagain, &fields);
		MemoryContextSwitchTo(keep);
		tr->nrows = tr->nagain;
		tr->rows = palloc0(sizeof(AuditRow) * tr->nrows);
		for (int i = 0; i < tr->nrows; i++)
		{
			tr->rows[i].canon = tr->again[i]->canon;
			tr->rows[i].recorded = tr->again[i]->recorded;
			tr->rows[i].row_key = tr->again[i]->row_key;
			tr->rows[i].row = rows[i];
			tr->rows[i].fields = fields[i];
		}
	}
	disable_timeout(STATEMENT_TIMEOUT, false);
	wtcache_rights_leave(&rights);
	relation_close(rel, NoLock);
}

/*
 * The partition walked, locked without waiting (its size is read), is
 * still one of the watched table's: listed at the start of the round, it
 * may have been detached or dropped since.
 */
static bool
leaf_still_of(TableRead *tr)
{
	if (!ConditionalLockRelationOid(tr->leaf, AccessShareLock))
		return false;
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(tr->leaf)) ||
		!get_rel_relispartition(tr->leaf))
		return false;
	return list_member_oid(get_partition_ancestors(tr->leaf), tr->relid);
}

/*
 * Read in a transaction of its own.  False if the table could not be read
 * now (locked by DDL, no longer watched, its owner's code failed): the
 * step passes it by.
 */
static bool
read_in_xact(TableRead *tr)
{
	bool		ok = false;
	char	   *message = NULL;

	begin_xact(true);
	(void) queue_relid_or_exit();
	/* DDL waiting for the table must not make delivery wait behind it */
	if (ConditionalLockRelationOid(tr->relid, AccessShareLock) &&
		(!OidIsValid(tr->leaf) || tr->leaf == tr->relid || leaf_still_of(tr)))
	{
		if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(tr->relid)))
		{
			MemoryContext old = MemoryContextSwitchTo(Audit.step_cxt);

			ok = wtcache_run_in_subxact(read_table, tr, &message);
			/* an error may have left the read's timeout armed */
			disable_timeout(STATEMENT_TIMEOUT, false);
			MemoryContextSwitchTo(old);
			ok = ok && tr->qname != NULL;
		}
	}
	if (message != NULL)
		ereport(DEBUG1, (errmsg("wtcache: the audit passed table %u by: %s", tr->relid, message)));
	step_end_xact();
	return ok;
}

/*
 * Does Redis evict keys without a TTL?  Then a missing row key is a miss
 * by design (README, "Redis memory"), not a finding.  The policy can be
 * changed at any time (CONFIG SET), so it is asked again, at most once a
 * second, when a key is found missing; an unknown policy (INFO refused)
 * counts as not evicting.
 */
static bool
redis_evicts_any_key(void)
{
	static TimestampTz asked_at = 0;
	static bool evicts = false;
	TimestampTz now = GetCurrentTimestamp();

	if (asked_at == 0 || TimestampDifferenceExceeds(asked_at, now, 1000))
	{
		RedisInfo	info;

		evicts = redis_info(&info) && strncmp(info.policy, "allkeys-", 8) == 0;
		asked_at = now;
	}
	return evicts;
}

/*
 * verify()'s judgement (verify.c), which reads only these two of the
 * table; except that a missing key is no finding when it is kept out of
 * Redis on purpose: a row larger than wtcache.max_value_size (batch.c), or
 * any row under a policy that evicts keys without a TTL.
 */
static const char *
classify(const TableRead *tr, const AuditRow *r)
{
	VerifyTable vt = {0};
	const char *problem;

	vt.hash = tr->hash;
	vt.keys_optional = tr->keys_optional;
	problem = wtcache_verify_classify(&vt, r->row, r->fields, &r->reply);
	if (problem != NULL && strcmp(problem, "missing") == 0 && r->row != NULL &&
		((int64) (r->fields ? r->fields->size : strlen(r->row)) > wtcache_max_value_bytes ||
		 redis_evicts_any_key()))
		return NULL;
	return problem;
}

static void
log_confirmed(const TableRead *tr, bool missing)
{
	ereport(LOG,
			(errmsg("wtcache: the audit found a key of table %s %s in Redis; its row is queued again",
					tr->qname, missing ? "missing" : "holding another value than the row"),
			 errdetail("The key and the values are not logged.  Redis changed behind wtcache's back, or a delivery went wrong."),
			 errhint("wtcache.verify('%s') lists the keys that differ; wtcache.status shows audit_mismatched and audit_missing.",
					 tr->qname)));
}

/* Queue a confirmed key again, so its row is pushed with a new version. */
static bool
queue_again(TrackedKey *t)
{
	QueueRow	row = {0};
	Datum	   *keys = palloc(sizeof(Datum) * t->nkeys);

	for (int c = 0; c < t->nkeys; c++)
		keys[c] = CStringGetTextDatum(t->recorded[c]);
	begin_xact(false);
	(void) queue_relid_or_exit();
	row.relid = t->relid;
	row.has_keys = true;
	row.keys = keys;
	row.nvalues = t->nkeys;
	row.key_width = t->nkeys;
	row.table_key = wtcache_current_table_key(t->relid);
	wtcache_queue_write(&row);
	step_end_xact();
	/* delivered by the next drain, this iteration's or the next one's */
	SetLatch(MyLatch);
	return true;
}

/*
 * Read the tracked keys of one table again, both sides, and move each on:
 * a suspect still different with nothing in flight is confirmed, counted
 * and queued; a repaired key found right leaves the gauge.
 */
static bool
follow_tracked(Oid relid, bool suspects)
{
	TableRead	tr = {0};
	TrackedKey *again[AUDIT_MAX_TRACKED];
	int			idx[AUDIT_MAX_TRACKED];

	for (int i = 0; i < Audit.ntracked; i++)
		if (Audit.tracked[i].relid == relid && Audit.tracked[i].state != TRACK_UNRESOLVED &&
			(suspects || Audit.tracked[i].state != TRACK_SUSPECT))
		{
			idx[tr.nagain] = i;
			again[tr.nagain++] = &Audit.tracked[i];
		}
	if (tr.nagain == 0)
		return true;
	tr.relid = relid;
	tr.again = again;
	if (!read_in_xact(&tr))
		return true;
	if (!read_redis(tr.hash, tr.rows, tr.nrows))
		return false;
	/* from the last: untrack() moves the last entry into the hole */
	for (int j = tr.nagain - 1; j >= 0; j--)
	{
		TrackedKey *t = &Audit.tracked[idx[j]];
		AuditRow   *r = &tr.rows[j];
		const char *problem;

		if (in_flight(relid, t->nkeys, t->recorded))
		{
			/* the change on its way writes the row; a pass looks again later */
			if (t->state == TRACK_SUSPECT)
				untrack(idx[j]);
			continue;
		}
		problem = classify(&tr, r);
		if (t->state == TRACK_SUSPECT)
		{
			if (problem == NULL)
			{
				untrack(idx[j]);
				continue;
			}
			if (strcmp(problem, "missing") == 0)
				Audit.missing++;
			else
				Audit.mismatched++;
			log_confirmed(&tr, strcmp(problem, "missing") == 0);
			t->first_seen = GetCurrentTimestamp();
			t->state = TRACK_REPAIRING;
			queue_again(t);
		}
		else if (problem == NULL)
		{
			Audit.repaired++;
			untrack(idx[j]);
		}
		else
		{
			t->state = TRACK_UNRESOLVED;
			ereport(LOG,
					(errmsg("wtcache: a key of table %s still differs in Redis after it was delivered again",
							tr.qname),
					 errhint("Look for another writer of wtcache's keys in Redis; wtcache.verify('%s') lists them.",
							 tr.qname)));
		}
	}
	return true;
}

/*
 * Compare the rows of the next range of blocks of the table being walked.
 * Charges the keys compared to the rate, and at least one.
 */
static bool
sample(void)
{
	TableRead	tr = {0};
	int			target = step_target();
	BlockNumber nblocks;
	int			got;

	if (Audit.ntables == 0 || Audit.table_pos >= Audit.ntables)
	{
		begin_xact(true);
		(void) queue_relid_or_exit();
		refresh_tables();
		step_end_xact();
		if (Audit.ntables == 0)
		{
			Audit.tokens -= target;
			return true;
		}
	}
	tr.relid = Audit.tables[Audit.table_pos].relid;
	tr.leaf = Audit.tables[Audit.table_pos].leaf;
	if (tr.relid != Audit.walk.relid || tr.leaf != Audit.walk.leaf)
	{
		Audit.walk = Audit.tables[Audit.table_pos];
		Audit.next_block = 0;
		Audit.next_offset = 0;
		Audit.nblocks = InvalidBlockNumber;
		Audit.blocks_per_step = 1;
	}
	if (Audit.nblocks == InvalidBlockNumber)
	{
		tr.size_only = true;
		if (!read_in_xact(&tr))
		{
			Audit.table_pos++;
			Audit.walk.relid = InvalidOid;
			Audit.tokens -= 1;
			return true;
		}
		Audit.nblocks = tr.nblocks;
		tr.size_only = false;
	}
	nblocks = Audit.nblocks;
	if (Audit.next_block >= nblocks)
	{
		/* this pass is over: the next table, or this one again */
		Audit.table_pos++;
		Audit.walk.relid = InvalidOid;
		Audit.tokens -= 1;
		return true;
	}
	ItemPointerSet(&tr.from, Audit.next_block, Audit.next_offset);
	tr.last = Min(nblocks, Audit.next_block + Audit.blocks_per_step);
	tr.limit = target;
	/* the last block range of a pass takes whatever was added since */
	if (tr.last == nblocks)
		tr.last = MaxBlockNumber;
	if (!read_in_xact(&tr))
	{
		Audit.table_pos++;
		Audit.walk.relid = InvalidOid;
		Audit.tokens -= 1;
		return true;
	}
	/* the next range: as many blocks as hold about a step's keys */
	got = tr.nrows;
	if (ItemPointerIsValid(&tr.resume))
	{
		/* cut at the limit: the blocks it covered held a step's keys */
		Audit.blocks_per_step = (int) Max(1, Min((int64) ItemPointerGetBlockNumber(&tr.resume) -
												 Audit.next_block + 1, AUDIT_MAX_BLOCKS));
		Audit.next_block = ItemPointerGetBlockNumber(&tr.resume);
		Audit.next_offset = ItemPointerGetOffsetNumberNoCheck(&tr.resume);
	}
	else if (got == 0)
	{
		Audit.next_block = tr.last;
		Audit.next_offset = 0;
		Audit.blocks_per_step = Min(Audit.blocks_per_step * 2, AUDIT_MAX_BLOCKS);
	}
	else
	{
		int64		want = (int64) Audit.blocks_per_step * target / got;

		Audit.next_block = tr.last;
		Audit.next_offset = 0;
		Audit.blocks_per_step = (int) Max(1, Min(want, AUDIT_MAX_BLOCKS));
	}
	Audit.tokens -= Max(got, 1);
	if (got == 0)
		return true;

	if (!read_redis(tr.hash, tr.rows, tr.nrows))
		return false;
	for (int i = 0; i < tr.nrows; i++)
	{
		AuditRow   *r = &tr.rows[i];
		int			t;

		if (in_flight(tr.relid, tr.nkeys, r->recorded))
		{
			Audit.skipped++;
			continue;
		}
		Audit.checked++;
		t = find_tracked(tr.relid, r->row_key);
		if (classify(&tr, r) == NULL)
		{
			/* a key that stayed wrong after its redelivery is right now */
			if (t >= 0 && Audit.tracked[t].state == TRACK_UNRESOLVED)
			{
				Audit.repaired++;
				untrack(t);
			}
		}
		else if (t < 0 || Audit.tracked[t].state == TRACK_SUSPECT)
		{
			if (t < 0)
				track(tr.relid, tr.nkeys, r);
			/* Redis may have lost data just now: have the marker checked first */
			Audit.check_asked = true;
			Worker.need_marker_check = true;
		}
	}
	return true;
}

/*
 * Is a step due?  Only against a verified Redis and a counted queue does
 * the comparison mean something.
 */
bool
audit_due(void)
{
	if (wtcache_audit_rate <= 0 || Worker.redis == NULL || !Worker.redis_verified ||
		Worker.need_marker_check || !Worker.slot->pending_ready)
		return false;
	refill();
	return Audit.tokens >= step_target();
}

/*
 * One step of the audit, when one is due.  Called with no batch in flight
 * on the connection: by drain() between the acknowledgement of one batch
 * and the sending of the next, and by the worker's loop after drain().
 */
void
audit_step(void)
{
	MemoryContext caller;

	if (wtcache_audit_rate <= 0)
	{
		/* off: nothing followed, nothing to show as unresolved */
		if (Audit.ntracked > 0)
		{
			while (Audit.ntracked > 0)
				untrack(Audit.ntracked - 1);
			publish();
		}
		Audit.refilled_at = 0;
		return;
	}
	if (Audit.cxt == NULL)
	{
		Audit.cxt = AllocSetContextCreate(TopMemoryContext, "wtcache audit", ALLOCSET_SMALL_SIZES);
		Audit.step_cxt = AllocSetContextCreate(Audit.cxt, "wtcache audit step", ALLOCSET_DEFAULT_SIZES);
		Audit.resyncs_seen = Worker.slot->resyncs;
	}
	if (!audit_due())
		return;

	MemoryContextReset(Audit.step_cxt);
	/* what a step allocates outside its transactions: Redis replies, keys */
	caller = MemoryContextSwitchTo(Audit.step_cxt);
	/* a resync queued every row again: what was suspected is being rewritten */
	if (Worker.slot->resyncs != Audit.resyncs_seen)
	{
		Audit.resyncs_seen = Worker.slot->resyncs;
		for (int i = Audit.ntracked - 1; i >= 0; i--)
			if (Audit.tracked[i].state == TRACK_SUSPECT)
				untrack(i);
		Audit.check_asked = false;
	}
	/* suspects found before the marker check that just passed, and repairs */
	if (Audit.ntracked > 0)
	{
		Oid			done[AUDIT_MAX_TRACKED];
		int			ndone = 0;
		bool		check_passed = Audit.check_asked;

		for (int i = 0; i < Audit.ntracked && Worker.redis != NULL; i++)
		{
			Oid			relid = Audit.tracked[i].relid;
			bool		seen = false;

			for (int d = 0; d < ndone && !seen; d++)
				seen = done[d] == relid;
			if (seen)
				continue;
			done[ndone++] = relid;
			if (!follow_tracked(relid, check_passed))
				break;
			/* follow_tracked() may have reordered them: start again */
			i = -1;
		}
		Audit.check_asked = false;
	}
	if (Worker.redis != NULL)
		(void) sample();
	publish();
	MemoryContextSwitchTo(caller);
	MemoryContextReset(Audit.step_cxt);
}

/*
 * A new worker follows no key: the gauge of the oldest unresolved
 * mismatch starts over with it.
 */
void
audit_worker_start(void)
{
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->audit_oldest_mismatch = 0;
	SpinLockRelease(&Worker.slot->mutex);
}

/*
 * wtcache.audit_stats(): the audit's figures per database worker; like
 * worker_status(), another database's only for pg_read_all_stats.  No
 * table's data: counts only.
 */
PG_FUNCTION_INFO_V1(wtcache_audit_stats);
Datum
wtcache_audit_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all_databases = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	wtcache_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];
		Oid			dboid;
		uint64		checked,
					mismatched,
					missing,
					skipped,
					repaired;
		TimestampTz oldest;
		Datum		values[7];
		bool		nulls[7] = {0};

		if (!wtcache_slot_shown(slot, all_databases, &dboid))
			continue;
		SpinLockAcquire(&slot->mutex);
		checked = slot->audit_checked;
		mismatched = slot->audit_mismatched;
		missing = slot->audit_missing;
		skipped = slot->audit_skipped;
		repaired = slot->audit_repaired;
		oldest = slot->audit_oldest_mismatch;
		SpinLockRelease(&slot->mutex);

		values[0] = ObjectIdGetDatum(dboid);
		values[1] = Int64GetDatum((int64) checked);
		values[2] = Int64GetDatum((int64) mismatched);
		values[3] = Int64GetDatum((int64) missing);
		values[4] = Int64GetDatum((int64) skipped);
		values[5] = Int64GetDatum((int64) repaired);
		if (oldest != 0)
			values[6] = TimestampTzGetDatum(oldest);
		else
			nulls[6] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
