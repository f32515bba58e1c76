/*-------------------------------------------------------------------------
 * deliver.c
 *		A claimed batch to Redis and back: send, replies, purge,
 *		acknowledgement, set-aside.
 *
 * In this order, always: the batch's commits are made durable
 * (batch_durable), the markers follow the slot map, the writes, tag
 * invalidations and marker updates are pipelined (push.c), the replies are
 * read, the replicas waited for (replicas.c, when asked for), and only then
 * the queue rows are deleted in a transaction of their own, whose commit
 * releases their pending-filter counts.  A whole-table
 * entry is not pipelined: its keys are removed synchronously and the
 * markers checked before it is acknowledged.  A Redis failure anywhere
 * leaves the batch in the queue, to be claimed and sent again.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "progress.h"
#include "fence.h"
#include "lag.h"
#include "pending.h"
#include "plans.h"
#include "push.h"
#include "redis.h"
#include "settings.h"
#include "keyspace.h"

#include "capture.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

static const char *
table_failure(Batch *b, Oid relid)
{
	for (int t = 0; t < b->ntables; t++)
		if (b->tables[t].relid == relid)
			return b->tables[t].failure;
	return NULL;
}

/*
 * In the acknowledging transaction: mark the queue rows of tables whose
 * rows could not be read, with the reason, and log it once per table until
 * that table delivers again.
 */
static void
set_aside_failed(Batch *b)
{
	/* local: this message's log-once list (relids, in TopMemoryContext) */
	static List *logged = NIL;

	for (int t = 0; t < b->ntables; t++)
	{
		TableBatch *tb = &b->tables[t];
		Datum	   *ids;
		int			n = 0;
		Oid			argtypes[2] = {INT8ARRAYOID, TEXTOID};
		Datum		values[2];

		if (tb->failure == NULL)
		{
			if (list_member_oid(logged, tb->relid))
			{
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				logged = list_delete_oid(logged, tb->relid);
				MemoryContextSwitchTo(old);
			}
			continue;
		}
		ids = palloc(sizeof(Datum) * b->nids);
		for (int i = 0; i < b->nids; i++)
			if (b->id_relids[i] == tb->relid)
				ids[n++] = b->ids[i];
		values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[1] = CStringGetTextDatum(tb->failure);
		if (SPI_execute_with_args("UPDATE wtcache.queue SET set_aside = $2 WHERE id OPERATOR(pg_catalog.=) ANY($1)",
								  2, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "wtcache: setting aside queue rows failed");
		if (!list_member_oid(logged, tb->relid))
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			ereport(LOG,
					(errmsg("wtcache: changes of %s set aside: %s", tb->qname, tb->failure),
					 errdetail("Changes of other tables are still delivered; reads of this table's changed keys read the table."),
					 errhint("Fix the cause, then run wtcache.retry_set_aside('%s'), or wtcache.discard_set_aside('%s') to give them up and remove the table's keys from Redis.",
							 tb->qname, tb->qname)));
			logged = lappend_oid(logged, tb->relid);
			MemoryContextSwitchTo(old);
		}
	}
}

/*
 * The queue rows to delete and the pending-filter counters to release: all
 * of the batch's, but those of a table whose rows could not be read, which
 * are set aside, not acknowledged.
 */
static void
ack_rows(Batch *b, Datum **done, int *ndone, uint32 **release, int *nrelease)
{
	*done = b->ids;
	*ndone = b->nids;
	*release = b->pending;
	*nrelease = b->npending;

	for (int t = 0; t < b->ntables; t++)
		if (b->tables[t].failure != NULL)
		{
			*done = MemoryContextAlloc(b->cxt, sizeof(Datum) * Max(b->nids, 1));
			*release = MemoryContextAlloc(b->cxt, sizeof(uint32) * Max(b->npending, 1));
			*ndone = *nrelease = 0;
			for (int i = 0; i < b->nids; i++)
			{
				int			end = (i + 1 < b->nids) ? b->id_pending[i + 1] : b->npending;

				if (table_failure(b, b->id_relids[i]) != NULL)
					continue;
				(*done)[(*ndone)++] = b->ids[i];
				for (int j = b->id_pending[i]; j < end; j++)
					(*release)[(*nrelease)++] = b->pending[j];
			}
			break;
		}
}

/* In the acknowledging transaction: each watched table's counters. */
static void
count_pushed(Batch *b)
{
	for (int i = 0; i < b->ntables; i++)
	{
		TableBatch *tb = &b->tables[i];
		Oid			uargtypes[2] = {OIDOID, INT8OID};
		Datum		uvalues[2] = {ObjectIdGetDatum(tb->relid), Int64GetDatum(tb->records)};

		if (!tb->watched)
			continue;
		if (SPI_execute_plan(wtcache_kept_plan("UPDATE wtcache.watched SET pushed = pushed + $2, last_push = clock_timestamp() WHERE rel = $1",
											   2, uargtypes),
							 uvalues, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "wtcache: updating counters failed");
	}
}

/*
 * The delivery lag of the batch's changes (lag.c), those set aside left
 * out.  Once per batch: a pass over its queue rows, no lock.
 */
static void
record_lag(Batch *b)
{
	TimestampTz acked_at = b->replied_at != 0 ? b->replied_at : GetCurrentTimestamp();
	bool		failures = false;

	for (int t = 0; t < b->ntables; t++)
		failures |= b->tables[t].failure != NULL;
	wtcache_lag_begin(&Worker.slot->lag);
	for (int i = 0; i < b->nids; i++)
		if (b->id_changes[i] > 0 &&
			(!failures || table_failure(b, b->id_relids[i]) == NULL))
			wtcache_lag_add(&Worker.slot->lag, acked_at, b->id_since[i], b->id_changes[i]);
	wtcache_lag_end(&Worker.slot->lag);
}

/*
 * Delete the batch's queue rows (set aside those of tables that failed),
 * count them, commit, and only then release their pending-filter counts.
 */
static void
ack_batch(Batch *b)
{
	Oid			argtypes[3] = {INT8ARRAYOID, INT8OID, INT8OID};
	Datum		values[3];
	Datum	   *done;
	int			ndone;
	uint32	   *release;
	int			nrelease;
	TimestampTz now;

	b->acked = true;
	ack_rows(b, &done, &ndone, &release, &nrelease);

	begin_xact(false);
	/*
	 * DROP EXTENSION and CREATE EXTENSION between the claim and now: the
	 * new queue hands out the same ids again, and deleting them would lose
	 * changes never sent.  The batch's rows went with the old queue.
	 */
	if (queue_relid_or_exit() != b->queue)
	{
		end_xact();
		return;
	}
	values[0] = PointerGetDatum(construct_array(done, ndone, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	/*
	 * The range, which the ids of a batch (claimed in id order) span, lets
	 * the kept plan's estimate favour the primary key over a scan of the
	 * whole queue, whose dead rows between vacuums can be many.
	 */
	{
		int64		lo = PG_INT64_MAX,
					hi = PG_INT64_MIN;

		for (int i = 0; i < ndone; i++)
		{
			lo = Min(lo, DatumGetInt64(done[i]));
			hi = Max(hi, DatumGetInt64(done[i]));
		}
		values[1] = Int64GetDatum(lo);
		values[2] = Int64GetDatum(hi);
	}
	if (SPI_execute_plan(wtcache_kept_plan("DELETE FROM wtcache.queue WHERE id OPERATOR(pg_catalog.=) ANY($1) "
										   "AND id OPERATOR(pg_catalog.>=) $2 AND id OPERATOR(pg_catalog.<=) $3",
										   3, argtypes),
						 values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "wtcache: acknowledging the batch failed");
	set_aside_failed(b);
	count_pushed(b);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	note_own_commit();
	/* right after the commit, before anything that could fail (pending.c) */
	if (Worker.slot->pending_ready)
		wtcache_pending_release(release, nrelease);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	record_lag(b);

	now = GetCurrentTimestamp();	/* not under the spinlock */
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->pushed += b->nrecords;
	Worker.slot->batches++;
	Worker.slot->last_push = now;
	if (b->max_version > Worker.slot->acked_version)
		Worker.slot->acked_version = b->max_version;
	SpinLockRelease(&Worker.slot->mutex);
	oom_recovered();
	/* long work's rows, for wtcache.progress: those of tables delivered */
	if (b->nbulk > 0)
	{
		int			n = 0;

		for (int i = 0; i < b->nbulk; i++)
		{
			bool		delivered = false;

			for (int t = 0; t < b->ntables; t++)
				if (b->tables[t].relid == b->bulk[i].relid)
					delivered = b->tables[t].failure == NULL;
			if (delivered)
				b->bulk[n++] = b->bulk[i];
		}
		wtcache_progress_delivered(Worker.slot, b->bulk, n);
	}
}

/* Read a sent batch's replies and acknowledge it.  False on Redis failure. */
bool
finish_batch(Batch *b)
{
	int64		applied;
	int64		seen = -1;
	char		err[256];
	PushResult	res;

	MemoryContextSwitchTo(b->cxt);
	res = wtcache_push_receive(Worker.redis, b->items, b->nitems, b->sent_order, b->ncalls,
							   b->nmarkers, &applied, &seen, err, sizeof(err));
	MemoryContextSwitchTo(TopMemoryContext);
	if (res == PUSH_RESEND)
	{
		if (!send_batch(b))
			return false;
		MemoryContextSwitchTo(b->cxt);
		res = wtcache_push_receive(Worker.redis, b->items, b->nitems, b->sent_order, b->ncalls,
								   b->nmarkers, &applied, &seen, err, sizeof(err));
		MemoryContextSwitchTo(TopMemoryContext);
		/* sent a slot at a time, it cannot ask for that again */
		if (res == PUSH_RESEND)
			res = PUSH_FAILED;
	}
	if (res == PUSH_FAILED)
	{
		redis_failed("could not deliver changes to Redis", err);
		return false;
	}
	/* before the events too: they announce only what a failover keeps */
	if (!replicas_acknowledged())
		return false;
	/* Redis, and the replicas asked for, hold the changes: their lag ends */
	b->replied_at = GetCurrentTimestamp();
	/* before the acknowledgement: a failure sends the batch, and them, again */
	MemoryContextSwitchTo(b->cxt);
	if (!events_publish_batch(b->items, b->nitems, &b->bumps))
	{
		MemoryContextSwitchTo(TopMemoryContext);
		return false;
	}
	MemoryContextSwitchTo(TopMemoryContext);
	if (res == PUSH_MARKER_LOST)
	{
		/*
		 * The rows were applied; what Redis lost before them is resynced.
		 * Acknowledge them first: the marker the resync sets must cover
		 * this batch, or the next batch finds it behind and resyncs again,
		 * batch after batch.  A crash in between finds the marker behind.
		 */
		ack_batch(b);
		return markers_lost(seen);
	}
	ack_batch(b);
	wtcache_fence_confirmed(Worker.slot, b->fence_ticket);
	return true;
}

/* ---------------------------------------------------------------------
 * Key templates' key spaces
 *
 * Keys made from a key template name no database, so two databases (of
 * one server, or of two sharing a Redis and a prefix) whose tables have
 * templates of one key space would share keys, each overwriting the
 * other's rows.  The worker claims a key space for its database in Redis
 * (keyspace.h: P{template}:<space>, holding the claiming table's table
 * key) before the first push of a table with such a template, and sets
 * aside the changes of a table whose key space another database holds,
 * as for a table whose rows cannot be read: nothing of it reaches Redis,
 * reads of its changed keys go to the table, wtcache.status says why.
 * Within a database, watch() refuses templates that overlap.  A claim is
 * given back when the purge of its key space leaves no watch of the
 * database with it (unwatch, a changed template, a dropped table).
 * ---------------------------------------------------------------------
 */

/* Forget the claims made: Redis may have lost them (a connection, resync_all). */
void
forget_claims(void)
{
	list_free_deep(Worker.claimed);
	Worker.claimed = NIL;
}

static bool
claimed(const char *claim_key)
{
	ListCell   *lc;

	foreach(lc, Worker.claimed)
		if (strcmp(lfirst(lc), claim_key) == 0)
			return true;
	return false;
}

/*
 * Claim t's key space for this database, as table owner (a table key).
 * *conflict: NULL, or why the table's changes are set aside: another
 * database holds it.  False when Redis failed.
 */
static bool
ensure_claim(const KeyTemplate *t, const char *owner, char **conflict)
{
	StringInfoData key;
	StringInfoData head;
	char	   *holder;
	char		err[256];

	*conflict = NULL;
	initStringInfo(&key);
	wtcache_append_claim_key(&key, wtcache_key_prefix, t);
	/*
	 * Asked of Redis before every batch, not remembered: a claim key can
	 * go (evicted, deleted by hand) and another database take the key
	 * space, and both would then write the same keys.
	 */
	initStringInfo(&head);
	wtcache_append_claim_owner_head(&head, Worker.dbname);
	if (!wtcache_claim_key_space(Worker.redis, &Worker.scripts, key.data, owner, head.data,
								 &holder, err, sizeof(err)))
	{
		redis_failed("could not claim the keys of a key template in Redis", err);
		return false;
	}
	if (strncmp(holder, head.data, head.len) == 0)
	{
		if (!claimed(key.data))
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			Worker.claimed = lappend(Worker.claimed, pstrdup(key.data));
			MemoryContextSwitchTo(old);
		}
		return true;
	}
	*conflict = psprintf("the keys of its key template \"%s\" belong to table %s of another database, "
						 "as Redis key \"%s\" says: the rows of both would share keys.  "
						 "Unwatch one of them, or give it another template; if %s is no longer watched, "
						 "DEL %s in Redis; then retry",
						 t->text, holder, key.data, holder, key.data);
	return true;
}

/*
 * Before a batch is sent: the claims of its tables with key templates.
 * The items of a table that cannot have its key space are taken out of
 * the batch, its queue rows set aside (ack_batch).  False when Redis
 * failed.
 */
static bool
claim_templates(Batch *b)
{
	bool		dropped = false;

	for (int t = 0; t < b->ntables; t++)
	{
		TableBatch *tb = &b->tables[t];
		char	   *conflict;

		if (!tb->watched || tb->tmpl == NULL || tb->nbatchkeys == 0)
			continue;
		if (!ensure_claim(tb->tmpl, tb->table_key, &conflict))
			return false;
		if (conflict != NULL)
		{
			tb->failure = conflict;
			tb->watched = false;
			dropped = true;
		}
	}
	if (dropped)
	{
		int			n = 0;

		for (int i = 0; i < b->nitems; i++)
			if (table_failure(b, b->items[i].relid) == NULL)
				b->items[n++] = b->items[i];
		b->nitems = n;
	}
	return true;
}

bool
send_batch(Batch *b)
{
	char		err[256];
	char		position[MARKER_POSITION_LEN];
	bool		ok;

	MemoryContextSwitchTo(b->cxt);
	ok = claim_templates(b);
	MemoryContextSwitchTo(TopMemoryContext);
	if (!ok)
		return false;
	batch_durable(b);
	if (!markers_follow_map())
		return false;
	MemoryContextSwitchTo(b->cxt);
	b->nmarkers = Worker.markers.n;
	b->fence_ticket = wtcache_fence_ticket_to_serve(Worker.slot);
	marker_position(position, sizeof(position));
	ok = wtcache_push_send(Worker.redis, &Worker.scripts, b->items, b->nitems, &b->bumps, &Worker.markers,
						   acked_version(), b->max_version, position, &b->ncalls,
						   &b->sent_order, err, sizeof(err));
	MemoryContextSwitchTo(TopMemoryContext);
	if (!ok)
		redis_failed("could not deliver changes to Redis", err);
	return ok;
}

/*
 * The removal of a key template's keys: only with the claim of its key
 * space, which this database keeps or, when no watch of it has that key
 * space any more (release), gives back.  *conflict: another database
 * holds it (nothing is removed: those are its keys).  False when Redis
 * failed.
 */
static bool
purge_template(const char *key_template, const char *owner, bool release, char **conflict)
{
	KeyTemplateError terr;
	KeyTemplate *t = wtcache_key_template_parse(key_template, &terr);
	int			nvalues;
	int64		removed;
	char		err[256];

	*conflict = NULL;
	/* a queue row is not trusted: one that names no template removes nothing */
	if (t == NULL)
		return true;
	nvalues = wtcache_key_template_bind_in_order(t);
	if (!ensure_claim(t, owner, conflict))
		return false;
	if (*conflict != NULL)
		return true;
	if (!wtcache_purge_template(Worker.redis, &Worker.scripts, t, nvalues, wtcache_key_prefix,
								&removed, err, sizeof(err)))
	{
		redis_failed("lost the connection to Redis", err);
		return false;
	}
	if (release)
	{
		StringInfoData key;
		StringInfoData head;
		ListCell   *lc;

		initStringInfo(&key);
		wtcache_append_claim_key(&key, wtcache_key_prefix, t);
		initStringInfo(&head);
		wtcache_append_claim_owner_head(&head, Worker.dbname);
		if (!wtcache_release_key_space(Worker.redis, &Worker.scripts, key.data, head.data,
									   err, sizeof(err)))
		{
			redis_failed("could not give back the claim of a key template in Redis", err);
			return false;
		}
		foreach(lc, Worker.claimed)
			if (strcmp(lfirst(lc), key.data) == 0)
			{
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				pfree(lfirst(lc));
				Worker.claimed = foreach_delete_current(Worker.claimed, lc);
				MemoryContextSwitchTo(old);
			}
	}
	return true;
}

/*
 * Remove the keys of every key template a table of this database is
 * watched with (resync_all: every key of the database goes).  Not those
 * of a key space another database holds: they are not this database's.
 * False when Redis failed.
 */
bool
purge_templates_of_database(int64 *removed)
{
	List	   *templates = NIL;
	List	   *owners = NIL;
	ListCell   *lc,
			   *lc2;
	MemoryContext outer = CurrentMemoryContext;

	*removed = 0;
	begin_xact(true);
	(void) queue_relid_or_exit();
	if (get_attnum(get_relname_relid(WTCACHE_WATCHED_TABLE, get_namespace_oid(WTCACHE_SCHEMA, false)),
				   "key_template") != InvalidAttrNumber)
	{
		if (SPI_execute("SELECT key_template, rel::oid FROM wtcache.watched WHERE key_template IS NOT NULL",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "wtcache.watched lookup failed");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 2, &isnull));
			char	   *tmpl = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			char	   *owner = wtcache_current_table_key(relid);
			MemoryContext spi = MemoryContextSwitchTo(outer);

			templates = lappend(templates, pstrdup(tmpl));
			owners = lappend(owners, pstrdup(owner));
			MemoryContextSwitchTo(spi);
		}
	}
	end_xact();
	forboth(lc, templates, lc2, owners)
	{
		char	   *conflict;

		if (!purge_template(lfirst(lc), lfirst(lc2), false, &conflict))
			return false;
	}
	return true;
}

/*
 * A whole-table entry whose keys another database holds: set aside, as a
 * table whose rows cannot be read (ack_batch), with the reason.
 */
static void
set_aside_purge(Batch *b, const char *conflict)
{
	TableBatch *tb;

	b->tables = repalloc(b->tables, sizeof(TableBatch) * (b->ntables + 1));
	tb = &b->tables[b->ntables++];
	memset(tb, 0, sizeof(*tb));
	tb->batch = b;
	tb->relid = b->purge_relid;
	tb->failure = pstrdup(conflict);
	/* no transaction is open: named by its queue row */
	{
		char	   *nspname;
		char	   *relname;

		tb->qname = b->purge_table_key != NULL &&
			wtcache_parse_table_key(b->purge_table_key, &nspname, &relname) ?
			quote_qualified_identifier(nspname, relname) :
			psprintf("table %u", b->purge_relid);
	}
}

static bool run_purge_keys(Batch *b);

/*
 * A whole-table entry: remove the table's row keys, synchronously; shown
 * in wtcache.progress while it runs.
 */
bool
run_purge(Batch *b)
{
	bool		ok;

	wtcache_progress_purge_begin(Worker.slot, WTC_PROGRESS_PURGE, b->purge_relid);
	ok = run_purge_keys(b);
	wtcache_progress_purge_end();
	return ok;
}

static bool
run_purge_keys(Batch *b)
{
	StringInfoData pattern;
	int64		removed;
	char		err[256];

	batch_durable(b);

	MemoryContextSwitchTo(b->cxt);
	if (b->purge_key_template != NULL)
	{
		char	   *conflict;

		if (!purge_template(b->purge_key_template, b->purge_table_key ? b->purge_table_key : "",
							b->purge_release, &conflict))
		{
			MemoryContextSwitchTo(TopMemoryContext);
			return false;
		}
		if (conflict != NULL)
		{
			set_aside_purge(b, conflict);
			MemoryContextSwitchTo(TopMemoryContext);
			ack_batch(b);
			return true;
		}
	}
	initStringInfo(&pattern);
	wtcache_append_table_rows_pattern(&pattern, wtcache_key_prefix, b->purge_table_key);
	if (b->purge_key_template == NULL &&
		!wtcache_purge_pattern(Worker.redis, pattern.data, &removed, err, sizeof(err)))
	{
		MemoryContextSwitchTo(TopMemoryContext);
		redis_failed("lost the connection to Redis", err);
		return false;
	}
	if (!wtcache_bump_tags(Worker.redis, &Worker.scripts, &b->bumps, err, sizeof(err)))
	{
		MemoryContextSwitchTo(TopMemoryContext);
		redis_failed("could not invalidate tags in Redis", err);
		return false;
	}
	if (b->purge_event != NULL && !event_publish(b->purge_event))
	{
		MemoryContextSwitchTo(TopMemoryContext);
		return false;
	}
	/* and the tags it invalidated, after it */
	if (!events_publish_batch(NULL, 0, &b->bumps))
	{
		MemoryContextSwitchTo(TopMemoryContext);
		return false;
	}
	MemoryContextSwitchTo(TopMemoryContext);
	if (!check_marker(b->max_version))
		return false;
	if (!replicas_acknowledged())
		return false;
	ack_batch(b);
	return true;
}
