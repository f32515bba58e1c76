/*-------------------------------------------------------------------------
 * worker.c
 *		The per-database delivery worker.
 *
 * One iteration:
 *	1. claim: in one short read-only transaction (one snapshot), read the
 *	   oldest queue rows up to wtcache.batch_size keys, collapse repeated keys
 *	   to their highest version, and read each key's committed row;
 *	2. push: with no transaction open, pipeline the versioned writes to
 *	   Redis (push.c);
 *	3. ack: in a second short transaction, delete the queue rows Redis
 *	   acknowledged and count them.
 * A crash or Redis failure between 2 and 3 redelivers the batch, which the
 * versions turn into no-ops.  A queue row whose keys Redis has not
 * acknowledged is never deleted, so nothing is lost.
 *
 * Rows are read in the same snapshot as the queue rows, so the value pushed
 * with a version is at least as new as the change that version names.  A
 * TRUNCATE (a queue row for a whole table) is delivered alone, between the
 * batches before and after it.
 *
 * Commits wake the worker through its latch; wtcache.poll_interval is only a
 * backstop (and the pace of the generation marker check when idle).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "keyspace.h"
#include "queue.h"

#include <malloc.h>

#include "access/relation.h"
#include "access/timeline.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "utils/resowner.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "common/hashfn.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/walwriter.h"
#include "replication/syncrep.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/inval.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

/* One distinct key of one table in a batch. */
typedef struct BatchKey
{
	char	   *suffix;			/* its part of the row key (hash key) */
	char	  **values;			/* canonical text, one per key column */
	int64		version;
	char	   *payload;		/* the value (keyspace.h), NULL if the row
								 * is gone */
	size_t		payload_len;
	List	   *tags;			/* tags of its changes (template tables) */
} BatchKey;

typedef struct KeyHashEntry
{
	char	   *suffix;
	int			index;
} KeyHashEntry;

struct Batch;

/* What a batch holds for one table. */
typedef struct TableBatch
{
	struct Batch *batch;		/* that it is part of */
	Oid			relid;
	bool		watched;		/* false: entries are dropped */
	bool		invalidate;
	int64		ttl_ms;
	int			nkeys;
	char	   *qname;
	char	   *table_key;
	char	   *event_head;		/* {"db":..,"table":..,"key":[ for events */
	char	   *table_tag;		/* "table:<schema>.<table>" */
	KeyLookup	lookup;			/* how to read its rows by key (keys.c) */
	bool	   *binary;
	FmgrInfo   *recv;
	FmgrInfo   *out;
	Oid		   *ioparams;
	HTAB	   *keyhash;
	BatchKey   *keys;
	int			nbatchkeys;
	int			maxbatchkeys;
	int64		records;		/* captured keys in the batch, repeats included */
	char	   *failure;		/* reading its rows failed: its queue rows
								 * are set aside with this reason */
} TableBatch;

typedef struct Batch
{
	TableBatch *tables;
	int			ntables;
	int			maxtables;
	Datum	   *ids;
	int			nids;
	int			maxids;
	Oid		   *id_relids;		/* per id: its table */
	int		   *id_pending;		/* per id: where its counters start in
								 * pending[]; they end where the next's do */
	int64		max_version;
	int64		nrecords;
	char	   *purge_table_key;	/* a whole-table entry, delivered alone */
	Oid			purge_relid;
	char	   *purge_event;	/* published after the purge, or NULL */
	HTAB	   *idset;			/* ids claimed, so the next claim skips them */
	HTAB	   *tagset;			/* tags to invalidate, each once */
	char	  **tags;
	int			ntags;
	int			maxtags;
	TagBumps	bumps;			/* the tags, as Redis keys */
	PushItem   *items;
	int			nitems;
	int			ncalls;			/* EVALSHAs sent, replies still to read */
	int			nmarkers;		/* and marker updates after them */
	uint64		fence_ticket;	/* wait() tickets its marker updates answer */
	/*
	 * What must be durable before it is sent (batch_durable): the commits
	 * its queue rows and the table rows it read come from.
	 */
	XLogRecPtr	commits_end;	/* the end of the latest asynchronous one */
	bool		others_async;	/* commits_end is not the worker's own */
	bool		writer_unknown;	/* something sent names no commit: a key
								 * with no row (its delete may be a later
								 * commit than any known here), a key left
								 * out (below) */
	XLogRecPtr	flushed_at_claim;	/* WAL flushed when it was claimed */
	XLogRecPtr	inserted_at_claim;	/* WAL inserted then, or when a key was
									 * left out */
	TransactionId last_xmin;	/* of the last row whose commit was looked at */
	TransactionId visible_below;	/* the claim snapshot's xmax */
	uint64		catalog_changes;	/* counted by the end of its claim */
	Oid			queue;			/* the wtcache.queue it was claimed from */
	uint32	   *pending;		/* pending-filter counters of the claimed
								 * rows, released once they are acked */
	int			npending;
	int			maxpending;
	MemoryContext cxt;			/* all of the batch; reset at its claim */
} Batch;

/*
 * How long the read of one batch's rows of one table may take: the table's
 * owner controls code that runs in it (index expressions), and a read that
 * never ends would hold back every other table.
 */
#define WTCACHE_TABLE_READ_TIMEOUT_MS 60000

/*
 * The ends of the worker's own latest commits are kept (note_own_commit):
 * a commit-log group spans 32 transactions.
 */
#define OWN_COMMITS_KEPT 32

/* the first pause between counts of the pending filter (count_pending_if_needed) */
#define PENDING_COUNT_RETRY_MS	100

/*
 * Everything the worker process keeps between one step and the next, in
 * one place, so that what a function changes for the others is visible at
 * its use (Worker.x) and each field's owner and reset are stated once.
 * One instance, Worker; nothing in it is shared with other processes (that
 * is the WorkerSlot, slot below).  Functions whose static is a private
 * rate limit or log-once list of their own keep it local.
 */
typedef struct WorkerProcess
{
	/* Set once at start (claim_slot, wtcache_worker_main), never reset */
	WorkerSlot *slot;			/* this database's slot in shared memory */
	char	   *dbname;			/* in TopMemoryContext */
	char	   *clock_key;		/* <prefix>{<db>}:clock, for tag stamps */
	StringInfoData suffix_buf;	/* scratch for add_key, in TopMemoryContext */

	/*
	 * The connection to Redis.  ensure_connected sets them; redis is NULL
	 * when there is none (disconnect_redis, a pause); redis_address keeps
	 * the last one for messages.
	 */
	WtcRedis   *redis;
	RedisScripts scripts;		/* loaded at each connection */
	char		redis_address[300];
	uint32		connected_settings_hash;	/* the settings it was made with */

	/*
	 * The outage: redis_failed counts and logs, a connection
	 * (ensure_connected) or a change of settings (reload_config_if_needed)
	 * resets.
	 */
	int			consecutive_failures;	/* paces backoff_sleep */
	bool		failure_logged; /* once per outage */
	bool		connect_failure_logged; /* and its first failure to connect */

	/*
	 * Generation markers.  markers: for this connection, in markers_cxt;
	 * chosen by markers_follow_map, dropped by disconnect_redis.
	 */
	MarkerSet	markers;
	uint64		markers_epoch;	/* of the slot map they were chosen for */
	MemoryContext markers_cxt;
	bool		need_marker_check;	/* set by a connection, wait() or idle
									 * time; cleared by a check (main loop) */
	bool		redis_verified; /* first marker check passed (check_marker) */
	XLogRecPtr	durable_lsn;	/* WAL flushed when the worker started, or
								 * made durable since before a batch was
								 * sent (batch_durable); only grows */

	/* Durability of what a batch sends (batch_durable); never reset */
	XLogRecPtr	own_commit_ends[OWN_COMMITS_KEPT];	/* ring, note_own_commit */
	int			own_commit_next;
	uint64		catalog_changes;	/* invalidations taken in (the cache
									 * callbacks count) */
	uint64		catalog_changes_claimed;	/* as of the last batch made
											 * durable; PG_UINT64_MAX: none
											 * yet, caches loaded at start */

	/* the queue known to be the extension's; a relcache invalidation of it resets */
	Oid			verified_queue;

	/*
	 * Batches: drain() claims into one while the other is in flight.  The
	 * contexts are made at the first drain and deleted by
	 * release_batch_memory when idle; each claim resets its own.
	 */
	Batch		batches[2];
	MemoryContext batch_cxts[2];
	int			coalesce_us;	/* the pause after a small batch; 0 when a
								 * batch was large or the queue empty */

	/* Counting the pending filter (count_pending_if_needed) */
	struct
	{
		TimestampTz next_try;	/* the next count, or settling of its
								 * counts once ready (idle_timeout_ms) */
		int			retry_ms;	/* the pause after a failed count */
		bool		waiting_logged;
		bool		unsettled;	/* counted rows of transactions in progress */
	}			pending;
} WorkerProcess;

static WorkerProcess Worker = {
	.need_marker_check = true,
	.catalog_changes_claimed = PG_UINT64_MAX,
	.pending.retry_ms = PENDING_COUNT_RETRY_MS,
};

static void
worker_shmem_exit(int code, Datum arg)
{
	if (Worker.slot)
	{
		SpinLockAcquire(&Worker.slot->mutex);
		Worker.slot->pid = 0;
		Worker.slot->latch = NULL;
		Worker.slot->connected = false;
		SpinLockRelease(&Worker.slot->mutex);
	}
	wtc_redis_free(Worker.redis);
	Worker.redis = NULL;
}

/*
 * No extension here, as far as this worker's snapshot shows.  A request
 * that arrived after the worker claimed its slot (CREATE EXTENSION committed
 * meanwhile) keeps the slot wanted, so the launcher starts a new worker that
 * sees the extension.
 */
static void
mark_absent_and_exit(void)
{
	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	if (!Worker.slot->requested)
		Worker.slot->absent = true;
	LWLockRelease(WtcacheSharedState->lock);
	proc_exit(0);
}

static void
update_slot_address(void)
{
	SpinLockAcquire(&Worker.slot->mutex);
	strlcpy(Worker.slot->redis_address, Worker.redis_address, sizeof(Worker.slot->redis_address));
	SpinLockRelease(&Worker.slot->mutex);
}

/* ---------------------------------------------------------------------
 * Redis connection state
 * ---------------------------------------------------------------------
 */

static void
disconnect_redis(void)
{
	Worker.markers.keys = NULL;		/* chosen again for the next connection */
	if (Worker.markers_cxt != NULL)
		MemoryContextReset(Worker.markers_cxt);
	wtc_redis_free(Worker.redis);
	Worker.redis = NULL;
	wtcache_slot_set_state(Worker.slot, WORKER_BACKOFF, false);
}

/*
 * Log a failure once per outage, then count retries quietly.  An outage
 * that began with a lost connection also logs its first failure to
 * connect again: why Redis cannot be reached (a refused certificate, a
 * wrong password) is what the operator needs, not only that it went.
 */
static void
redis_failed(const char *what, const char *detail)
{
	char		msg[256];
	bool		connecting = strncmp(what, "could not connect", 17) == 0;

	snprintf(msg, sizeof(msg), "%s: %s", what, detail);
	wtcache_slot_set_error(Worker.slot, msg);
	if (!Worker.failure_logged || (connecting && !Worker.connect_failure_logged))
	{
		const char *hint = wtc_redis_error_hint(detail);

		ereport(LOG,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("wtcache: %s at %s: %s", what, Worker.redis_address, detail),
				 errdetail("Captured changes stay in wtcache.queue and are delivered when Redis answers again."),
				 errhint("%s", hint ? hint : "Check that Redis is running and that wtcache.redis_url points to it.")));
		Worker.failure_logged = true;
		Worker.connect_failure_logged |= connecting;
	}
	Worker.consecutive_failures++;
	disconnect_redis();
}

/* Tell readers which key prefix this worker writes under. */
static void
publish_key_prefix(void)
{
	SpinLockAcquire(&Worker.slot->mutex);
	strlcpy(Worker.slot->key_prefix, wtcache_key_prefix, sizeof(Worker.slot->key_prefix));
	SpinLockRelease(&Worker.slot->mutex);
}

static void
reload_config_if_needed(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		publish_key_prefix();
		/* a changed address (or credentials) means a new connection */
		if (wtcache_redis_settings_hash() != Worker.connected_settings_hash && Worker.redis != NULL)
		{
			ereport(LOG, (errmsg("wtcache: the Redis settings changed, reconnecting")));
			disconnect_redis();
			Worker.consecutive_failures = 0;
		}
		/* new settings that fail too fail anew: say why, once */
		else if (wtcache_redis_settings_hash() != Worker.connected_settings_hash)
		{
			Worker.failure_logged = Worker.connect_failure_logged = false;
			Worker.consecutive_failures = 0;
		}
	}
}

/* Sleep for the backoff delay; commits do not cut it short, SIGHUP does. */
static void
backoff_sleep(void)
{
	int64		delay = wtcache_retry_interval_ms;
	TimestampTz deadline;

	for (int i = 1; i < Worker.consecutive_failures && delay < wtcache_retry_max_ms; i++)
		delay *= 2;
	delay = Min(delay, wtcache_retry_max_ms);
	/* jitter: between half and all of the delay */
	delay = delay / 2 + (int64) (pg_prng_double(&pg_global_prng_state) * (delay / 2 + 1));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->next_retry = deadline;
	SpinLockRelease(&Worker.slot->mutex);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			reload_config_if_needed();
			break;
		}
	}
}

static bool
ensure_connected(void)
{
	RedisTarget target;
	const char *problem;
	char		err[256];

	if (Worker.redis != NULL)
		return true;

	Worker.connected_settings_hash = wtcache_redis_settings_hash();
	if (!wtcache_redis_target(&target, &problem))
	{
		/* the check hooks cannot see every combination of settings */
		redis_failed("invalid Redis settings", problem);
		return false;
	}
	wtcache_describe_target(&target, Worker.redis_address, sizeof(Worker.redis_address));
	update_slot_address();
	wtcache_slot_set_state(Worker.slot, WORKER_CONNECTING, false);

	Worker.redis = wtc_redis_connect(&target, wtcache_connect_timeout_ms, wtcache_command_timeout_ms,
							  err, sizeof(err));
	if (Worker.redis == NULL)
	{
		redis_failed("could not connect to Redis", err);
		return false;
	}
	/* the master a Sentinel named, or the cluster's size */
	strlcpy(Worker.redis_address, wtc_redis_address(Worker.redis), sizeof(Worker.redis_address));
	update_slot_address();
	if (!wtcache_load_scripts(Worker.redis, &Worker.scripts, err, sizeof(err)))
	{
		redis_failed("could not load wtcache's scripts into Redis", err);
		return false;
	}
	{
		WtcReply	role;
		const char *name = "";

		/* "master" or "slave": a worker writing to a replica fails, and says so */
		if (wtc_redis_commandv(Worker.redis, &role, 1, "ROLE") && role.type == WTC_REPLY_ARRAY &&
			role.nelem > 0 && role.elem[0].type == WTC_REPLY_STRING)
			name = role.elem[0].str;
		SpinLockAcquire(&Worker.slot->mutex);
		strlcpy(Worker.slot->redis_role, name, sizeof(Worker.slot->redis_role));
		SpinLockRelease(&Worker.slot->mutex);
	}
	ereport(LOG, (errmsg("wtcache: connected to Redis at %s", Worker.redis_address)));
	wtcache_slot_set_state(Worker.slot, WORKER_CONNECTED, true);
	Worker.consecutive_failures = 0;
	Worker.failure_logged = Worker.connect_failure_logged = false;
	return true;
}

/* ---------------------------------------------------------------------
 * Transactions
 * ---------------------------------------------------------------------
 */

/*
 * The ends of the worker's own latest commits.  They are asynchronous
 * (see wtcache_worker_main), and the commit log keeps one commit end per
 * group of transactions, the latest asynchronous one: a group of
 * synchronous writers' commits and one of the worker's carries the
 * worker's.  Telling them apart lets batch_durable() flush at once what
 * only the worker's own commits left unflushed, instead of waiting for
 * the WAL writer as for asynchronous writers.  A group spans 32
 * transactions, so the last few of the worker's commits are enough.
 */

static void
note_own_commit(void)
{
	int			last = (Worker.own_commit_next + OWN_COMMITS_KEPT - 1) % OWN_COMMITS_KEPT;

	if (XactLastCommitEnd != Worker.own_commit_ends[last])
	{
		Worker.own_commit_ends[Worker.own_commit_next] = XactLastCommitEnd;
		Worker.own_commit_next = (Worker.own_commit_next + 1) % OWN_COMMITS_KEPT;
	}
}

static bool
is_own_commit_end(XLogRecPtr commit_end)
{
	for (int i = 0; i < OWN_COMMITS_KEPT; i++)
		if (Worker.own_commit_ends[i] == commit_end)
			return true;
	return false;
}

/*
 * Values and keys are rendered with the catalog as the worker's caches
 * have it, not as of the claim's snapshot: a table, schema or column
 * renamed, an enum label or a composite type's attribute renamed (no lock
 * on the tables that use them) by a commit the snapshot does not see, or
 * one whose queue rows come in a later batch.  Such a commit is durable
 * only once flushed like any other, and nothing in the batch names it.
 * So count the invalidations the worker's caches take in: when any came
 * in since the last claim, the batch takes all WAL written by the end of
 * its claim (claim_next), which holds every commit those caches show.
 */
static void
count_catalog_change(Datum arg, Oid relid)
{
	Worker.catalog_changes++;
}

static void
count_syscache_change(Datum arg, int cacheid, uint32 hashvalue)
{
	Worker.catalog_changes++;
}

static void
begin_xact(bool read_only)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, read_only ? "wtcache: reading changes" : "wtcache: acknowledging");
}

static void
end_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	note_own_commit();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Is the extension (still) here?  Exits the worker if not.  A table named
 * like the queue is the extension's only if the extension is there too
 * (after a DROP EXTENSION, a role with CREATE on the database could make
 * one); pg_extension has no catalog cache, so that is asked once per
 * queue, until its relcache entry is invalidated (a DROP does).
 */

static void
verified_queue_inval(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == Worker.verified_queue)
		Worker.verified_queue = InvalidOid;
}

static Oid
queue_relid_or_exit(void)
{
	/* local: registered once per process, and nothing else asks */
	static bool callback_registered = false;
	Oid			queue = wtcache_queue_relid();

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(verified_queue_inval, (Datum) 0);
		CacheRegisterRelcacheCallback(count_catalog_change, (Datum) 0);
		CacheRegisterSyscacheCallback(ENUMOID, count_syscache_change, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, count_syscache_change, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, count_syscache_change, (Datum) 0);
		callback_registered = true;
	}
	if (OidIsValid(queue) && queue == Worker.verified_queue)
		return queue;
	if (!OidIsValid(get_extension_oid("wtcache", true)) || !OidIsValid(queue))
	{
		ereport(DEBUG1, (errmsg("wtcache: extension not installed in database \"%s\", worker exits",
								get_database_name(MyDatabaseId))));
		end_xact();
		mark_absent_and_exit();
	}
	Worker.verified_queue = queue;
	return queue;
}

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
	if (rel->rd_rel->relkind != RELKIND_RELATION)
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
		tb->nkeys = config.nkeys;
		tb->qname = quote_qualified_identifier(nspname, relname);
		initStringInfo(&tk);
		wtcache_append_table_key(&tk, Worker.dbname, nspname, relname);
		tb->table_key = tk.data;
		tb->table_tag = wtcache_format_table_tag(nspname, relname);
		{
			StringInfoData ev;
			char	   *qualified = psprintf("%s.%s", nspname, relname);

			initStringInfo(&ev);
			appendStringInfoString(&ev, "{\"db\":");
			escape_json(&ev, Worker.dbname);
			appendStringInfoString(&ev, ",\"table\":");
			escape_json(&ev, qualified);
			appendStringInfoString(&ev, ",\"key\":[");
			tb->event_head = ev.data;
		}
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
		wtcache_key_lookup_init(&tb->lookup, rel, tb->nkeys, attnums, b->cxt);

		tb->keyhash = string_set_create("wtcache batch keys", 1024, b->cxt);
		tb->maxbatchkeys = 256;
		tb->keys = palloc(sizeof(BatchKey) * tb->maxbatchkeys);
		tb->watched = true;
	}
	MemoryContextSwitchTo(spicxt);
	relation_close(rel, NoLock);
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
	tb->keys[tb->nbatchkeys].tags = list_copy(tags);
	tb->nbatchkeys++;
}

/*
 * The WAL insert position, as a position XLogFlush() accepts: at a page
 * boundary it points past the header of a page nothing was written to
 * yet, which XLogFlush() refuses; the boundary covers every record before
 * it.
 */
static XLogRecPtr
wal_inserted(void)
{
	XLogRecPtr	pos = GetXLogInsertRecPtr();
	uint32		page_offset = pos % XLOG_BLCKSZ;

	if (page_offset == SizeOfXLogShortPHD ||
		(page_offset == SizeOfXLogLongPHD && XLogSegmentOffset(pos, wal_segment_size) == page_offset))
		pos -= page_offset;
	return pos;
}

/*
 * The batch renders something under the catalog as the worker's caches
 * have it now, which may show a commit no row of the batch names: it
 * takes all WAL written by now, which holds every such commit.
 */
static void
batch_covers_wal_now(Batch *b)
{
	b->writer_unknown = true;
	b->inserted_at_claim = Max(b->inserted_at_claim, wal_inserted());
}

/*
 * Where the WAL must be flushed to for a committed transaction to be
 * durable: InvalidXLogRecPtr once it is.  An asynchronous commit leaves
 * its commit record's end in the commit log (for a group of transactions:
 * an upper bound), for hint bits to wait for; a synchronous one was
 * flushed before anyone could see it and leaves none.  The xmin column
 * is the raw one: a row frozen long ago may name a transaction whose
 * commit log is truncated (and flushed long since); truncation holds
 * XactTruncationLock, as pg_xact_status() relies on.  A prepared
 * transaction's COMMIT PREPARED is always flushed.
 */
static XLogRecPtr
async_commit_end(TransactionId xid, TransactionId visible_below)
{
	XLogRecPtr	commit_end = InvalidXLogRecPtr;

	/*
	 * Both bounds: an xid 2^31 older than the truncation point wraps past
	 * it.  visible_below: the claim snapshot's xmax, which every xid the
	 * claim sees precedes, and no lock to read.
	 */
	LWLockAcquire(XactTruncationLock, LW_SHARED);
	if (TransactionIdIsNormal(xid) &&
		!TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid) &&
		TransactionIdPrecedes(xid, visible_below))
		commit_end = TransactionIdGetCommitLSN(xid);
	LWLockRelease(XactTruncationLock);
	return commit_end;
}

/*
 * A row of the batch (a queue row, or a table row it sends) was written by
 * xmin: its commit must be durable before the batch is sent.  One
 * transaction's rows are usually adjacent.
 */
static void
batch_note_writer(Batch *b, TransactionId xmin)
{
	XLogRecPtr	commit_end;

	if (xmin == b->last_xmin)
		return;
	commit_end = async_commit_end(xmin, b->visible_below);
	/* after the lookup, which can fail: a retry must look again */
	b->last_xmin = xmin;
	if (commit_end > b->commits_end)
		b->commits_end = commit_end;
	/* flushed by the claim: nothing to wait for */
	if (commit_end > b->flushed_at_claim && !is_own_commit_end(commit_end))
		b->others_async = true;
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
	}
	b->id_relids[b->nids] = relid;
	b->id_pending[b->nids] = pending_start;
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
		if (tb->keys[map[i]].payload == NULL)
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
		tb->keys[i].payload = NULL;
	if (nskip > 0)
	{
		/* the type read the value under a rename the snapshot may not see */
		batch_covers_wal_now(tb->batch);
	}
	if (nskip > 0 && try_fetch(tb, skip, -1, &message))
		return;
	for (int i = 0; i < tb->nbatchkeys; i++)
		tb->keys[i].payload = NULL;
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
 * Claim the next batch.  Runs inside the claim transaction; everything kept
 * goes to the batch's memory (b->cxt).  Returns false when the queue is empty.
 */
static bool
claim_batch(Batch *b, Batch *inflight)
{
	Portal		portal;
	SPIPlanPtr	plan;
	bool		done = false;
	bool		any = false;
	bool		can_set_aside;
	Datum		limit;
	MemoryContext spicxt;
	QueueColumns cols;
	bool		mapped = false;

	/*
	 * In id order, through the queue's primary key and no further than one
	 * batch can take: with a backlog, sorting the whole queue at every
	 * claim would cost more the further behind the worker is.  Rows set
	 * aside wait for a DBA (wtcache.retry_set_aside()), unless discarded.
	 */
	can_set_aside = wtcache_queue_can_set_aside();
	if (can_set_aside)
		plan = wtcache_kept_plan("SELECT id, relid, keys, table_key, key_width, per_table, tags, discard, xmin "
								 "FROM wtcache.queue q WHERE set_aside IS NULL OR discard "
								 /*
								  * those of a table dropped since: nothing left to
								  * deliver.  NULL for an OID no relation has (the
								  * worker, a superuser, may read any other): a
								  * NOT EXISTS subquery on pg_class cost a plan to
								  * start at every claim, 3% of the worker's CPU
								  */
								 "OR pg_catalog.has_table_privilege(q.relid, 'SELECT') IS NULL "
								 "ORDER BY id LIMIT $1",
								 1, (Oid[]) {INT8OID});
	else
		plan = wtcache_kept_plan("SELECT id, relid, keys, table_key, key_width, per_table, tags, false AS discard, xmin "
								 "FROM wtcache.queue ORDER BY id LIMIT $1", 1, (Oid[]) {INT8OID});
	limit = Int64GetDatum(wtcache_batch_size);
	portal = SPI_cursor_open(NULL, plan, &limit, NULL, true);

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
			QueueTagIter tagit;
			int			pending_start;
			TableBatch *tb;

			wtcache_queue_decode(chunk->vals[r], chunk->tupdesc, &cols, &row);

			/* sent to Redis already, acknowledged soon */
			if (inflight && hash_search(inflight->idset, &row.id, HASH_FIND, NULL))
				continue;

			/* a whole-table entry goes alone: it ends a batch that has rows */
			if (!row.has_keys && OidIsValid(row.relid) && any)
			{
				done = true;
				break;
			}
			spicxt = MemoryContextSwitchTo(b->cxt);
			wtcache_queue_expand(&row);
			wtcache_queue_tags_begin(&tagit, &row);
			if (b->npending + wtcache_queue_max_indexes(&row) > b->maxpending)
			{
				b->maxpending = Max(b->maxpending * 2, b->npending + wtcache_queue_max_indexes(&row));
				b->pending = repalloc_huge(b->pending, sizeof(uint32) * b->maxpending);
			}
			pending_start = b->npending;
			b->npending += wtcache_pending_row_indexes(MyDatabaseId, &row,
													   b->pending + b->npending);
			if (row.discard)
			{
				/* given up by a DBA (wtcache.discard_set_aside()): only acknowledged */
				batch_add_id(b, row.id, row.relid, pending_start, row.xmin);
				any = true;
				MemoryContextSwitchTo(spicxt);
				continue;
			}
			if (!OidIsValid(row.relid))
			{
				/* wtcache.invalidate(): tags only */
				batch_add_id(b, row.id, row.relid, pending_start, row.xmin);
				any = true;
				batch_add_tag_groups(b, &tagit);
				b->nrecords++;
				MemoryContextSwitchTo(spicxt);
				if (b->nrecords >= wtcache_batch_size)
					done = true;
				continue;
			}
			if (!row.has_keys)
			{
				/* a whole-table entry goes alone */
				if (any)
				{
					MemoryContextSwitchTo(spicxt);
					done = true;
					break;
				}
				batch_add_id(b, row.id, row.relid, pending_start, row.xmin);
				b->purge_relid = row.relid;

				/*
				 * A whole-table entry is queued by DDL (TRUNCATE, or a
				 * requeue after DDL), and the rows that follow it must be
				 * read with the catalogs as that DDL left them.  DDL on a
				 * type (ALTER TYPE ... ADD ATTRIBUTE, RENAME VALUE) holds
				 * no lock on the tables whose rows it requeued, and the
				 * worker kept, now and then, an enum label as it was
				 * before the rename (AcceptInvalidationMessages() did not
				 * drop it), then pushed rows under the old key
				 * (test/t/029_corners.pl).  So drop every cache here; the
				 * DDL's commit is in our snapshot, so what is read again
				 * sees it.  A rebuild costs a few milliseconds and the
				 * kept plans, once per TRUNCATE or DDL of a watched table.
				 */
				InvalidateSystemCaches();
				{
					char	   *tt = wtcache_table_tag(row.relid);

					if (tt)
						batch_add_tag(b, tt);
				}
				b->purge_table_key = row.table_key;
				if (wtcache_publish_events && get_rel_name(row.relid) != NULL)
				{
					StringInfoData ev;

					initStringInfo(&ev);
					appendStringInfoString(&ev, "{\"db\":");
					escape_json(&ev, Worker.dbname);
					appendStringInfoString(&ev, ",\"table\":");
					escape_json(&ev, psprintf("%s.%s",
											  get_namespace_name(get_rel_namespace(row.relid)),
											  get_rel_name(row.relid)));
					appendStringInfo(&ev, ",\"op\":\"truncate\",\"v\":" INT64_FORMAT "}", row.id);
					b->purge_event = ev.data;
				}
				MemoryContextSwitchTo(spicxt);
				done = true;
				any = true;
				break;
			}

			MemoryContextSwitchTo(spicxt);
			tb = batch_table(b, row.relid);
			MemoryContextSwitchTo(b->cxt);
			batch_add_id(b, row.id, row.relid, pending_start, row.xmin);
			any = true;
			if (tb->table_tag)
				batch_add_tag(b, tb->table_tag);
			/* rows captured under another key definition name no row now */
			if (tb->watched && (row.key_width == 0 || row.key_width == tb->nkeys))
			{
				char	  **captured = palloc(sizeof(char *) * tb->nkeys);

				for (int i = 0; i + tb->nkeys <= row.nvalues; i += tb->nkeys)
				{
					List	   *keytags = NIL;
					const Datum *names;
					int			nnames;

					for (int c = 0; c < tb->nkeys; c++)
						captured[c] = TextDatumGetCString(row.keys[i + c]);
					if (wtcache_queue_tags_next(&tagit, &names, &nnames))
						for (int j = 0; j < nnames; j++)
						{
							char	   *tag = TextDatumGetCString(names[j]);

							keytags = lappend(keytags, tag);
							batch_add_tag(b, tag);
						}
					add_key(tb, captured, row.id, keytags);
					tb->records++;
					b->nrecords++;
				}
			}
			/* the tags of changes that name no row (a null key value: width 0) */
			batch_add_tag_groups(b, &tagit);
			MemoryContextSwitchTo(spicxt);
			if (b->nrecords >= wtcache_batch_size)
				done = true;
		}
		SPI_freetuptable(chunk);
	}
	SPI_cursor_close(portal);

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

			/*
			 * A row larger than Redis accepts in one value would make it drop
			 * the connection, and the batch be sent again for ever: its key
			 * is removed instead, as in invalidate mode, and reads of it go
			 * to the table (they never fill what is this large either).
			 */
			bool		oversized = bk->payload != NULL && !tb->invalidate &&
				(int64) bk->payload_len > wtcache_max_value_bytes;

			if (oversized)
				log_oversized(tb, bk->payload_len);

			it->row_key = wtcache_row_key_from_values(wtcache_key_prefix, tb->table_key,
													  bk->suffix);
			it->row_key_len = strlen(it->row_key);
			it->version = bk->version;
			it->ttl_ms = 0;
			it->event = NULL;
			it->event_len = 0;
			if (wtcache_publish_events)
			{
				StringInfoData ev;

				initStringInfo(&ev);
				appendStringInfoString(&ev, tb->event_head);
				for (int c = 0; c < tb->nkeys; c++)
				{
					if (c)
						appendStringInfoChar(&ev, ',');
					escape_json(&ev, bk->values[c]);
				}
				appendStringInfo(&ev, "],\"op\":\"%s\",\"v\":" INT64_FORMAT ",\"tags\":[",
								 bk->payload == NULL ? "delete" :
								 (tb->invalidate || oversized) ? "invalidate" : "upsert",
								 bk->version);
				escape_json(&ev, tb->table_tag);
				{
					ListCell   *lc;

					foreach(lc, bk->tags)
					{
						appendStringInfoChar(&ev, ',');
						escape_json(&ev, lfirst(lc));
					}
				}
				appendStringInfoString(&ev, "]}");
				it->event = ev.data;
				it->event_len = ev.len;
			}
			if (bk->payload != NULL && !tb->invalidate && !oversized)
			{
				it->payload = bk->payload;
				it->payload_len = bk->payload_len;
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
	if (wtcache_publish_events)
	{
		StringInfoData ev;

		initStringInfo(&ev);
		appendStringInfoString(&ev, "{\"db\":");
		escape_json(&ev, Worker.dbname);
		appendStringInfo(&ev, ",\"op\":\"invalidate\",\"v\":" INT64_FORMAT ",\"tags\":",
						 b->max_version);
		wtcache_append_json_strings(&ev, b->tags, b->ntags);
		appendStringInfoChar(&ev, '}');
		tb->event = ev.data;
		tb->event_len = ev.len;
	}
}

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

static void
ack_batch(Batch *b)
{
	Oid			argtypes[3] = {INT8ARRAYOID, INT8OID, INT8OID};
	Datum		values[3];

	Datum	   *done = b->ids;
	int			ndone = b->nids;
	uint32	   *release = b->pending;
	int			nrelease = b->npending;

	/* a table whose rows could not be read: its rows are set aside, not acknowledged */
	for (int t = 0; t < b->ntables; t++)
		if (b->tables[t].failure != NULL)
		{
			done = MemoryContextAlloc(b->cxt, sizeof(Datum) * Max(b->nids, 1));
			release = MemoryContextAlloc(b->cxt, sizeof(uint32) * Max(b->npending, 1));
			ndone = nrelease = 0;
			for (int i = 0; i < b->nids; i++)
			{
				int			end = (i + 1 < b->nids) ? b->id_pending[i + 1] : b->npending;

				if (table_failure(b, b->id_relids[i]) != NULL)
					continue;
				done[ndone++] = b->ids[i];
				for (int j = b->id_pending[i]; j < end; j++)
					release[nrelease++] = b->pending[j];
			}
			break;
		}

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
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	note_own_commit();
	/* right after the commit, before anything that could fail (pending.c) */
	if (Worker.slot->pending_ready)
		wtcache_pending_release(release, nrelease);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->pushed += b->nrecords;
	Worker.slot->batches++;
	Worker.slot->last_push = GetCurrentTimestamp();
	if (b->max_version > Worker.slot->acked_version)
		Worker.slot->acked_version = b->max_version;
	SpinLockRelease(&Worker.slot->mutex);
}

static int64
acked_version(void)
{
	int64		v;

	SpinLockAcquire(&Worker.slot->mutex);
	v = Worker.slot->acked_version;
	SpinLockRelease(&Worker.slot->mutex);
	return v;
}

static bool purge_database_keys(int64 *removed);

/* "<system identifier>/<timeline>/<LSN>" and its NUL */
#define MARKER_POSITION_LEN 64
static void marker_position(char *buf, size_t len);

/*
 * Announce that every key of the database was removed (a repair after
 * Redis lost data), as a TRUNCATE is announced for one table: a near cache
 * fed by the events channel must drop all it holds of the database.  On a
 * failure, the next repair announces again.
 */
static void
publish_reset(const char *why)
{
	StringInfoData channel;
	StringInfoData ev;
	WtcReply	reply;

	if (!wtcache_publish_events || Worker.redis == NULL)
		return;
	initStringInfo(&channel);
	wtcache_events_channel(&channel);
	initStringInfo(&ev);
	appendStringInfoString(&ev, "{\"db\":");
	escape_json(&ev, Worker.dbname);
	appendStringInfo(&ev, ",\"op\":\"reset\",\"v\":" INT64_FORMAT ",\"reason\":", acked_version());
	escape_json(&ev, why);
	appendStringInfoChar(&ev, '}');
	(void) wtc_redis_commandv(Worker.redis, &reply, 3, "PUBLISH", channel.data, ev.data);
}

/*
 * Redis lost data we had pushed: what it kept may be older than the tables
 * (a failover to a replica that missed changes keeps rows deleted since),
 * so remove every key of the database, queue every watched row again, then
 * set the marker.  In that order: a crash in between finds the marker
 * missing and resyncs again.  Reads meanwhile see the marker missing, or
 * the rows pending, and read the tables.
 */
static void
resync_all(const char *why)
{
	uint64		rows = 0;
	int			tables = 0;
	int64		removed = 0;
	char		err[256];
	char		position[MARKER_POSITION_LEN];

	wtcache_slot_set_state(Worker.slot, WORKER_RESYNCING, true);
	if (!purge_database_keys(&removed))
		return;
	publish_reset(why);
	begin_xact(false);
	(void) queue_relid_or_exit();
	if (SPI_execute("SELECT rel::oid FROM wtcache.watched", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	{
		int			n = SPI_processed;
		Oid		   *rels = palloc(sizeof(Oid) * Max(n, 1));

		for (int i = 0; i < n; i++)
		{
			bool		isnull;

			rels[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		}
		for (int i = 0; i < n; i++)
		{
			char	   *failure;

			/* the keys are gone already; a table whose rows cannot be read stays so */
			rows += wtcache_resync_table_or_purge(rels[i], false, &failure);
			if (failure != NULL)
				ereport(LOG,
						(errmsg("wtcache: could not queue the rows of table \"%s\" for the resync: %s",
								get_rel_name(rels[i]), failure),
						 errdetail("Its keys are not in Redis; cached reads fill them from the table.")));
		}
		tables = n;
	}
	end_xact();
	/* waiters now look at the queue again, and find these rows */
	wtcache_fence_repaired(Worker.slot, wtcache_fence_ticket_to_serve(Worker.slot));

	/* silent only where there was nothing to repair: a first start */
	if (tables > 0 || removed > 0)
		ereport(LOG,
				(errmsg("wtcache: Redis at %s lost data (%s); removed " INT64_FORMAT " keys it kept and queued " UINT64_FORMAT " rows of %d watched tables for resync",
						Worker.redis_address, why, removed, rows, tables)));
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->resyncs++;
	SpinLockRelease(&Worker.slot->mutex);

	/* the rows must outlive a crash before the marker says Redis is whole */
	XLogFlush(XactLastCommitEnd);
	marker_position(position, sizeof(position));
	if (!wtcache_set_markers(Worker.redis, &Worker.markers, acked_version(), position, err, sizeof(err)))
		redis_failed("could not write to Redis", err);
	else
		wtcache_slot_set_state(Worker.slot, WORKER_CONNECTED, true);
}

/* The highest queue id this database has handed out. */
static int64
queue_last_id(void)
{
	int64		last = 0;
	bool		isnull;

	begin_xact(true);
	if (SPI_execute("SELECT last_value FROM wtcache.queue_id_seq", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "wtcache: reading wtcache.queue_id_seq failed");
	if (SPI_processed == 1)
		last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	end_xact();
	return last;
}

/*
 * Remove every key of this database: rows, tombstones, leases, tags, query
 * results, the marker.  False when Redis failed (the connection is gone).
 */
static bool
purge_database_keys(int64 *removed)
{
	StringInfoData pattern;
	char		err[256];

	*removed = 0;
	initStringInfo(&pattern);
	/* its rows and their companions, then its tags and query results */
	for (int pass = 0; pass < 2; pass++)
	{
		int64		more;

		resetStringInfo(&pattern);
		wtcache_append_database_pattern(&pattern, Worker.dbname, pass == 1);
		if (!wtcache_purge_pattern(Worker.redis, pattern.data, &more, err, sizeof(err)))
		{
			redis_failed("lost the connection to Redis", err);
			return false;
		}
		*removed += more;
	}
	return true;
}

/*
 * Sentinel: a failover named another master.  Asked at most once a second,
 * also while changes keep coming: until the old master is demoted it still
 * accepts writes, which it loses when it is (the generation marker then
 * has the worker resync the new one).
 */
static bool
master_moved(void)
{
	/* local: the pace of this question alone */
	static TimestampTz next_check = 0;
	TimestampTz now;

	if (Worker.redis == NULL || wtc_redis_mode(Worker.redis) != WTC_REDIS_SENTINEL)
		return false;
	now = GetCurrentTimestamp();
	if (now < next_check)
		return false;
	next_check = TimestampTzPlusMilliseconds(now, Min(wtcache_poll_interval_ms, 1000));
	if (!wtc_redis_master_moved(Worker.redis))
		return false;
	ereport(LOG, (errmsg("wtcache: the Sentinels name another master than %s, reconnecting", Worker.redis_address)));
	disconnect_redis();
	return true;
}

/* ---------------------------------------------------------------------
 * Where in WAL history the generation markers were raised
 *
 * With every raise, a marker records "<system identifier>/<timeline>/<LSN>":
 * LSN is WAL this worker made durable (flushed, and acknowledged by the
 * synchronous standbys: batch_durable) before it sent anything with a
 * version up to the marker's, so every commit behind those versions ends
 * before it.  A server whose WAL history does not reach that position
 * lacks some of those commits: a backup restored to an earlier point, a
 * standby promoted before it received them (the worker never runs during
 * recovery, so a standby records nothing).  A position of another
 * database system says nothing: the sequence check decides (check_marker).
 * ---------------------------------------------------------------------
 */

static void
marker_position(char *buf, size_t len)
{
	snprintf(buf, len, UINT64_FORMAT "/%u/%X/%X", GetSystemIdentifier(),
			 GetWALInsertionTimeLine(), LSN_FORMAT_ARGS(Worker.durable_lsn));
}

/* Parse a marker's position; false if it is not one (Redis is not trusted). */
static bool
parse_marker_position(const char *pos, uint64 *sysid, TimeLineID *tli, XLogRecPtr *lsn)
{
	const char *p = pos;
	char	   *end;
	unsigned long long parts[4];
	const int	bases[4] = {10, 10, 16, 16};

	for (int i = 0; i < 4; i++)
	{
		if (!isdigit((unsigned char) *p) && !(bases[i] == 16 && isxdigit((unsigned char) *p)))
			return false;
		errno = 0;
		parts[i] = strtoull(p, &end, bases[i]);
		if (errno != 0 || *end != (i < 3 ? '/' : '\0'))
			return false;
		p = end + 1;
	}
	if (parts[1] == 0 || parts[1] > PG_UINT32_MAX || parts[2] > PG_UINT32_MAX ||
		parts[3] > PG_UINT32_MAX)
		return false;
	*sysid = (uint64) parts[0];
	*tli = (TimeLineID) parts[1];
	*lsn = ((uint64) parts[2] << 32) | (uint64) parts[3];
	return true;
}

/*
 * Is a marker's position beyond this server's WAL history?  Logs why when
 * it is.  False when unknown (no position: written by an older version;
 * another database system; not a position).
 */
static bool
position_not_ours(const char *pos)
{
	uint64		sysid;
	TimeLineID	tli;
	TimeLineID	our_tli;
	XLogRecPtr	lsn;
	XLogRecPtr	reached;
	List	   *history;
	char		detail[256];
	bool		beyond;

	if (pos == NULL || !parse_marker_position(pos, &sysid, &tli, &lsn) ||
		sysid != GetSystemIdentifier())
		return false;
	our_tli = GetWALInsertionTimeLine();
	history = readTimeLineHistory(our_tli);
	if (!tliInHistory(tli, history))
	{
		beyond = true;
		snprintf(detail, sizeof(detail),
				 "It was raised at %X/%X on timeline %u, which is not in the history of this server's timeline %u.",
				 LSN_FORMAT_ARGS(lsn), tli, our_tli);
	}
	else
	{
		/*
		 * On our timeline, the WAL this worker knows durable: flushed when
		 * it started (what earlier workers raised markers at, in this
		 * server's life or before a crash or restart), or made durable
		 * since (what it raised them at itself, e.g. while refilling Redis
		 * after a resync).  Not the flush of the moment: a server restored
		 * from a file-level copy by crash recovery keeps its timeline, and
		 * the WAL unrelated writers add after the start must not cover the
		 * lost positions.
		 */
		reached = (tli == our_tli) ? Worker.durable_lsn : tliSwitchPoint(tli, history, NULL);
		beyond = lsn > reached;
		snprintf(detail, sizeof(detail),
				 tli == our_tli ?
				 "It was raised at %X/%X on timeline %u; this server's WAL was durable up to %X/%X." :
				 "It was raised at %X/%X on timeline %u; this server's history left that timeline at %X/%X.",
				 LSN_FORMAT_ARGS(lsn), tli, LSN_FORMAT_ARGS(reached));
	}
	list_free_deep(history);
	if (beyond)
		ereport(LOG,
				(errmsg("wtcache: Redis at %s holds versions of database \"%s\" from commits this server does not have",
						Worker.redis_address, Worker.dbname),
				 errdetail("%s The database was restored to an earlier point, or a standby that missed commits was promoted; its keys in Redis are removed and resynced.",
						   detail)));
	return beyond;
}

static bool
marker_in_set(const MarkerSet *set, const char *key)
{
	for (int i = 0; i < set->n; i++)
		if (strcmp(set->keys[i], key) == 0)
			return true;
	return false;
}

/*
 * Choose the markers for the connection, and again when a Cluster's slot
 * map changed (a resharding, a failover): then the markers kept so far are
 * checked where they are now, and the new ones start at what Redis
 * acknowledged.  A master that lost writes is noticed; a slot that merely
 * moved is not taken for lost data.  False when Redis failed.  May resync.
 */
static bool
markers_follow_map(void)
{
	uint64		epoch = wtc_redis_map_epoch(Worker.redis);
	MemoryContext fresh_cxt;
	MemoryContext old;
	MarkerSet	fresh;
	MarkerCheck mc;
	int64		seen = 0;
	char		err[256];
	char		position[MARKER_POSITION_LEN];

	if (Worker.markers.keys != NULL && epoch == Worker.markers_epoch)
		return true;
	marker_position(position, sizeof(position));
	fresh_cxt = AllocSetContextCreate(TopMemoryContext, "wtcache markers", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(fresh_cxt);
	wtcache_marker_set(Worker.redis, Worker.dbname, &fresh);
	MemoryContextSwitchTo(old);

	mc = MARKER_OK;
	if (Worker.markers.keys != NULL)
		mc = wtcache_check_markers(Worker.redis, &Worker.scripts, &Worker.markers, acked_version(), 0,
								   position, &seen, NULL, err, sizeof(err));
	if (mc == MARKER_ERROR)
	{
		MemoryContextDelete(fresh_cxt);
		redis_failed("lost the connection to Redis", err);
		return false;
	}
	for (int i = 0; mc == MARKER_OK && Worker.markers.keys != NULL && i < fresh.n; i++)
		if (!marker_in_set(&Worker.markers, fresh.keys[i]) &&
			!wtcache_set_marker(Worker.redis, fresh.keys[i], fresh.wal_keys[i], acked_version(),
								position, err, sizeof(err)))
		{
			MemoryContextDelete(fresh_cxt);
			redis_failed("could not write to Redis", err);
			return false;
		}
	if (Worker.markers_cxt != NULL)
		MemoryContextDelete(Worker.markers_cxt);
	Worker.markers_cxt = fresh_cxt;
	Worker.markers = fresh;
	Worker.markers_epoch = epoch;
	if (mc == MARKER_LOST)
	{
		resync_all(seen < 0 ? "generation marker missing" : "generation marker behind");
		return Worker.redis != NULL;
	}
	return true;
}

/*
 * Check the generation markers and raise them to new_version.  Returns
 * false when Redis failed (the connection is then gone).
 */
static bool
check_marker(int64 new_version)
{
	char		err[256];
	char		position[MARKER_POSITION_LEN];
	char	  **positions = NULL;
	bool		ahead = false;
	int64		seen;
	MarkerCheck mc;
	uint64		fence_ticket = wtcache_fence_ticket_to_serve(Worker.slot);

	if (!markers_follow_map())
		return false;
	marker_position(position, sizeof(position));
	/* the first check also reads where the markers were raised */
	if (!Worker.redis_verified)
		positions = palloc0(sizeof(char *) * Worker.markers.n);
	mc = wtcache_check_markers(Worker.redis, &Worker.scripts, &Worker.markers, acked_version(), new_version,
							   position, &seen, positions, err, sizeof(err));
	if (positions != NULL)
	{
		for (int i = 0; i < Worker.markers.n; i++)
		{
			if (mc == MARKER_OK && !ahead)
				ahead = position_not_ours(positions[i]);
			if (positions[i] != NULL)
				pfree(positions[i]);
		}
		pfree(positions);
	}
	if (mc == MARKER_ERROR)
	{
		redis_failed("lost the connection to Redis", err);
		return false;
	}
	if (mc == MARKER_LOST)
	{
		/* what Redis kept is gone with it: nothing in it can be ahead of us */
		resync_all(seen < 0 ? "generation marker missing" : "generation marker behind");
		Worker.redis_verified = (Worker.redis != NULL);
		return Worker.redis != NULL;
	}
	if (!Worker.redis_verified)
	{
		/*
		 * Redis ahead of the database: it holds versions of commits this
		 * database does not have.  Its changes would carry lower versions
		 * and be refused, and reads would serve rows from a future that
		 * never happened here: clear its keys, resync.
		 *
		 * First the WAL position the markers were raised at: not on this
		 * server's history means the database went back in time (restored
		 * from a backup, promoted standby that missed commits).  Then the
		 * sequence, for what WAL cannot tell: a database restored with
		 * pg_restore or recreated under the same name, another cluster.  The
		 * sequence alone misses the first kind: WAL-logged 32 values ahead,
		 * it comes back past ids the lost commits took.
		 */
		if (ahead)
		{
			resync_all("Redis held versions of commits this server's WAL history does not have");
			Worker.redis_verified = (Worker.redis != NULL);
			return Worker.redis != NULL;
		}
		if (seen > queue_last_id())
		{
			resync_all("Redis held versions this database never handed out: it was restored or recreated");
			Worker.redis_verified = (Worker.redis != NULL);
			return Worker.redis != NULL;
		}
		Worker.redis_verified = true;
	}
	/* after a server restart, learn what Redis already has */
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->acked_version = Max(Worker.slot->acked_version, Max(seen, new_version));
	SpinLockRelease(&Worker.slot->mutex);
	wtcache_fence_confirmed(Worker.slot, fence_ticket);
	return true;
}

/*
 * Claim the next batch into cxt, skipping what is in flight.  False when
 * there is nothing to deliver (or DROP EXTENSION holds the queue).
 */
static bool
claim_next(Batch *b, MemoryContext cxt, Batch *inflight)
{
	HASHCTL		ctl;
	bool		any;
	Oid			queue;

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
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	ctl.hcxt = cxt;
	b->idset = hash_create("wtcache batch ids", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	b->tagset = string_set_create("wtcache batch tags", 64, cxt);
	b->maxpending = 1024;
	b->pending = palloc(sizeof(uint32) * b->maxpending);

	begin_xact(true);
	/*
	 * A commit is visible only once its commit record is in WAL, and a
	 * synchronous one only once it is flushed: every commit this claim's
	 * snapshot sees ends before the insert position read now, and every
	 * synchronous one before the flush position.  Asynchronous ones are
	 * looked up row by row (batch_note_writer).
	 */
	b->flushed_at_claim = GetFlushRecPtr(NULL);
	b->inserted_at_claim = wal_inserted();
	b->last_xmin = InvalidTransactionId;
	b->visible_below = GetActiveSnapshot()->xmax;
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
		/* rendered with catalog changes no batch has made durable yet */
		b->catalog_changes = Worker.catalog_changes;
		if (Worker.catalog_changes != Worker.catalog_changes_claimed)
			batch_covers_wal_now(b);
	}
	end_xact();
	MemoryContextSwitchTo(TopMemoryContext);
	return any;
}

static bool send_batch(Batch *b);

/* Read a sent batch's replies and acknowledge it.  False on Redis failure. */
static bool
finish_batch(Batch *b)
{
	int64		applied;
	int64		seen = -1;
	char		err[256];
	PushResult	res;

	MemoryContextSwitchTo(b->cxt);
	res = wtcache_push_receive(Worker.redis, b->ncalls, b->nmarkers, &applied, &seen, err, sizeof(err));
	MemoryContextSwitchTo(TopMemoryContext);
	if (res == PUSH_RESEND)
	{
		if (!send_batch(b))
			return false;
		MemoryContextSwitchTo(b->cxt);
		res = wtcache_push_receive(Worker.redis, b->ncalls, b->nmarkers, &applied, &seen, err, sizeof(err));
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
	if (res == PUSH_MARKER_LOST)
	{
		/*
		 * The rows were applied; what Redis lost before them is resynced.
		 * Acknowledge them first: the marker the resync sets must cover
		 * this batch, or the next batch finds it behind and resyncs again,
		 * batch after batch.  A crash in between finds the marker behind.
		 */
		ack_batch(b);
		resync_all(seen < 0 ? "generation marker missing" : "generation marker behind");
		return Worker.redis != NULL;
	}
	ack_batch(b);
	wtcache_fence_confirmed(Worker.slot, b->fence_ticket);
	return true;
}

/*
 * Only durable commits reach Redis: with synchronous_commit off, a commit
 * is visible before its WAL is flushed, and a crash then loses it while
 * Redis would keep a value no committed transaction wrote.  So the WAL of
 * the batch's asynchronous commits must be flushed before it is sent:
 * those of its queue rows, of the table rows it read (a row may have
 * changed again since, by a commit whose queue row is in a later batch),
 * and, for a key whose row is gone or after catalog changes
 * (catalog_changes), whatever was in WAL at the claim.
 *
 * The WAL writer flushes it within wal_writer_delay, which is also when
 * logical decoding first sees those commits.  Flushing it here instead
 * cost an fsync a batch, a batch every millisecond or so under a load of
 * asynchronous commits: I/O and CPU that the writers asked to spare by
 * turning synchronous_commit off (the bench's TPS ratio with it off rose
 * from about 0.70x to 0.82x-0.91x once the worker waited instead).  So
 * wait for the WAL writer, polling, and flush only if it did not within
 * twice its delay.  A wait() caller flushes what the worker waits for
 * (fence.c), so read-your-writes does not wait for the WAL writer.
 * Synchronous commits were flushed before they became visible: batches of
 * them wait only if another session's asynchronous commit shares their
 * commit-log group; what the worker's own commits left unflushed there is
 * flushed at once (note_own_commit).
 */
#define ASYNC_FLUSH_POLL_US		1000

static void
batch_durable(Batch *b)
{
	XLogRecPtr	upto = b->commits_end;
	XLogRecPtr	durable;

	/* a delete's commit is known only to be visible: in WAL by the claim */
	if (b->writer_unknown)
		upto = Max(upto, b->inserted_at_claim);
	/* every commit the batch's rows come from ends before this */
	durable = Max(upto, b->flushed_at_claim);

	/*
	 * Wait for what asynchronous commits left; the WAL writer flushes no
	 * further than them, so the rest (upto) is flushed here.
	 */
	if (b->commits_end > GetFlushRecPtr(NULL) && b->others_async)
	{
		/* counted, not timed: a clock set back must not stretch it */
		long		polls = 2000L * WalWriterDelay / ASYNC_FLUSH_POLL_US;

		SpinLockAcquire(&Worker.slot->mutex);
		Worker.slot->wal_awaited = b->commits_end;
		SpinLockRelease(&Worker.slot->mutex);
		pgstat_report_activity(STATE_RUNNING, "wtcache: waiting for the WAL writer");
		/*
		 * Not on the latch: every commit sets it, and a worker asleep on it
		 * costs each committer a signal.
		 */
		while (b->commits_end > GetFlushRecPtr(NULL) && polls-- > 0)
		{
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			pg_usleep(ASYNC_FLUSH_POLL_US);
			pgstat_report_wait_end();
			CHECK_FOR_INTERRUPTS();
			if (!PostmasterIsAlive())
				proc_exit(1);
		}
		pgstat_report_activity(STATE_IDLE, NULL);
		SpinLockAcquire(&Worker.slot->mutex);
		Worker.slot->wal_awaited = InvalidXLogRecPtr;
		SpinLockRelease(&Worker.slot->mutex);
	}
	XLogFlush(upto);
	Worker.catalog_changes_claimed = b->catalog_changes;

	/*
	 * With synchronous standbys, durable means on them too: a failover to
	 * one that lacks a change must not leave it in Redis.  The worker's own
	 * commits are asynchronous (see wtcache_worker_main), so ask for the
	 * standbys' flush as a synchronous commit would; this waits as the
	 * writers' commits do while the standbys are away; a shutdown or a
	 * cancel ends the wait with a WARNING, not an error.
	 */
	if (SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0')
	{
		/* through the setting: its assign hook sets the wait mode */
		SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
		SyncRepWaitForLSN(durable, false);
		SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
		/* a shutdown that ended the wait: exit before anything is sent */
		CHECK_FOR_INTERRUPTS();
	}
	/* recorded with the markers this batch raises (marker_position) */
	if (durable > Worker.durable_lsn)
		Worker.durable_lsn = durable;
	/* readers' fills take versions only from WAL this durable (read.c) */
	SpinLockAcquire(&Worker.slot->mutex);
	if (durable > Worker.slot->durable_lsn)
		Worker.slot->durable_lsn = durable;
	SpinLockRelease(&Worker.slot->mutex);
}

static bool
send_batch(Batch *b)
{
	char		err[256];
	char		position[MARKER_POSITION_LEN];
	bool		ok;

	batch_durable(b);
	if (!markers_follow_map())
		return false;
	MemoryContextSwitchTo(b->cxt);
	b->nmarkers = Worker.markers.n;
	b->fence_ticket = wtcache_fence_ticket_to_serve(Worker.slot);
	marker_position(position, sizeof(position));
	ok = wtcache_push_send(Worker.redis, &Worker.scripts, b->items, b->nitems, &b->bumps, &Worker.markers,
						   acked_version(), b->max_version, position, &b->ncalls,
						   err, sizeof(err));
	MemoryContextSwitchTo(TopMemoryContext);
	if (!ok)
		redis_failed("could not deliver changes to Redis", err);
	return ok;
}

/* A whole-table entry: remove the table's row keys, synchronously. */
static bool
run_purge(Batch *b)
{
	StringInfoData pattern;
	int64		removed;
	char		err[256];

	batch_durable(b);

	MemoryContextSwitchTo(b->cxt);
	initStringInfo(&pattern);
	wtcache_append_table_rows_pattern(&pattern, wtcache_key_prefix, b->purge_table_key);
	if (!wtcache_purge_pattern(Worker.redis, pattern.data, &removed, err, sizeof(err)))
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
	if (b->purge_event != NULL)
	{
		StringInfoData channel;
		WtcReply	reply;

		initStringInfo(&channel);
		wtcache_events_channel(&channel);
		if (!wtc_redis_commandv(Worker.redis, &reply, 3, "PUBLISH", channel.data, b->purge_event))
		{
			MemoryContextSwitchTo(TopMemoryContext);
			redis_failed("lost the connection to Redis", wtc_redis_errstr(Worker.redis));
			return false;
		}
	}
	MemoryContextSwitchTo(TopMemoryContext);
	if (!check_marker(b->max_version))
		return false;
	ack_batch(b);
	return true;
}

/*
 * Writers set our latch at every commit, and drain() claims whatever has
 * committed since its last claim.  When commits come one at a time and
 * fast, that is a claim, a Redis round trip and an acknowledgement per
 * change or two: on a machine the writers share, CPU
 * taken from them.  So after a small batch, wait a moment before the next
 * claim: commits that arrive meanwhile make one batch.  The wait doubles
 * while batches stay small (up to COALESCE_MAX_US, well under the lag a
 * reader would notice) and is dropped as soon as a batch is large enough
 * or the queue is empty.
 */
#define COALESCE_SMALL_BATCH	64
#define COALESCE_MIN_US			25
#define COALESCE_MAX_US			800

static void
coalesce_after_claim(int64 claimed)
{
	if (claimed == 0 || claimed >= COALESCE_SMALL_BATCH)
	{
		Worker.coalesce_us = 0;
		return;
	}
	Worker.coalesce_us = Min(Max(Worker.coalesce_us * 2, COALESCE_MIN_US), COALESCE_MAX_US);
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	pg_usleep(Worker.coalesce_us);
	pgstat_report_wait_end();
}

/*
 * Give the batches' memory back, once the worker was idle for a poll
 * interval.  Their keeper blocks stay across resets so that batch after
 * batch touches no new page, but then a burst (a big UPDATE, a resync)
 * leaves what its largest batches touched resident, in every database's
 * worker, for good.  What malloc kept of freed memory goes back too.
 * Between drains: no batch is in flight.
 */
static void
release_batch_memory(void)
{
	for (int i = 0; i < 2; i++)
		if (Worker.batch_cxts[i] != NULL)
		{
			MemoryContextDelete(Worker.batch_cxts[i]);
			Worker.batch_cxts[i] = NULL;
		}
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/*
 * Deliver until the queue is empty or Redis fails.  While Redis applies
 * one batch the next is claimed, so PostgreSQL's work and Redis's overlap;
 * a batch is sent only after the one before it was acknowledged, so Redis
 * sees changes in queue order.
 */
static void
drain(void)
{
	Batch	   *inflight = NULL;
	int			cur = 0;

	if (Worker.batch_cxts[0] == NULL)
	{
		/* large keeper blocks survive resets: no page faults batch after batch */
		for (int i = 0; i < 2; i++)
			Worker.batch_cxts[i] = AllocSetContextCreate(TopMemoryContext, "wtcache batch",
											16 * 1024 * 1024, 16 * 1024 * 1024,
											64 * 1024 * 1024);
	}

	for (;;)
	{
		Batch	   *next = &Worker.batches[cur];
		bool		have_next;

		CHECK_FOR_INTERRUPTS();
		/* a batch in flight is acknowledged by nobody: claimed again later */
		if (master_moved())
			return;
		have_next = claim_next(next, Worker.batch_cxts[cur], inflight);
		if (inflight != NULL)
		{
			if (!finish_batch(inflight))
				return;
			inflight = NULL;
		}
		if (!have_next)
		{
			Worker.coalesce_us = 0;
			return;
		}
		if (next->purge_table_key != NULL)
		{
			if (!run_purge(next))
				return;
		}
		else
		{
			if (!send_batch(next))
				return;
			inflight = next;
		}
		cur = 1 - cur;
		coalesce_after_claim(next->nrecords);
	}
}

/*
 * Until the pending filter counts this database's queue, cached reads go
 * to the tables.  Counting waits up to PENDING_COUNT_WAIT_MS for the
 * writers of the queue to let it (pending.c); if they did not, it is tried
 * again after PENDING_COUNT_RETRY_MS, a pause that doubles up to the poll
 * interval, so that a writer stuck while holding them off costs the others
 * little.  Once
 * counted, the rows of transactions then in progress are settled once a
 * poll interval until they are all committed or aborted.
 */
#define PENDING_COUNT_WAIT_MS	20

static void
count_pending_if_needed(void)
{
	bool		counted;

	if (Worker.slot->pending_ready)
	{
		/* a transaction each poll interval at most, not each wake-up */
		if (Worker.pending.unsettled && GetCurrentTimestamp() >= Worker.pending.next_try)
		{
			begin_xact(true);
			Worker.pending.unsettled = wtcache_pending_settle();
			end_xact();
			Worker.pending.next_try = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wtcache_poll_interval_ms);
		}
		return;
	}
	/* not before Redis is known not to be ahead of us (check_marker) */
	if (!Worker.redis_verified || GetCurrentTimestamp() < Worker.pending.next_try)
		return;
	begin_xact(false);
	counted = wtcache_pending_rebuild(Worker.slot, queue_relid_or_exit(), PENDING_COUNT_WAIT_MS);
	end_xact();
	Worker.pending.unsettled = counted;
	if (counted)
	{
		if (Worker.pending.waiting_logged)
			ereport(LOG, (errmsg("wtcache: cached reads of database \"%s\" use Redis again", Worker.dbname)));
		Worker.pending.waiting_logged = false;
		Worker.pending.retry_ms = PENDING_COUNT_RETRY_MS;
		return;
	}
	Worker.pending.next_try = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Worker.pending.retry_ms);
	Worker.pending.retry_ms = Min(Worker.pending.retry_ms * 2, Max(wtcache_poll_interval_ms, PENDING_COUNT_RETRY_MS));
	if (!Worker.pending.waiting_logged)
		ereport(LOG,
				(errmsg("wtcache: cached reads of database \"%s\" read the tables for now", Worker.dbname),
				 errdetail("The worker could not yet count the changes still queued: writers kept the queue busy.")));
	Worker.pending.waiting_logged = true;
}

/* How long to sleep without a wake-up: a poll interval, or until the next count of the filter. */
static long
idle_timeout_ms(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		secs;
	int			usecs;

	/* past: no count is due (not ready only until Redis is verified) */
	if (Worker.slot->pending_ready || now >= Worker.pending.next_try)
		return wtcache_poll_interval_ms;
	TimestampDifference(now, Worker.pending.next_try, &secs, &usecs);
	return Min((long) wtcache_poll_interval_ms, secs * 1000 + usecs / 1000 + 1);
}

/*
 * Log once when the changes waiting for Redis pass wtcache.backlog_warning,
 * and once when they are back under half of it.  At most once per poll
 * interval: the count reads the queue (one row per thousand changes).
 */
static void
check_backlog(void)
{
	/* local: this warning's own pace and state, read by nothing else */
	static TimestampTz next_check = 0;
	static bool warned = false;
	int64		backlog = 0;
	double		oldest_s = 0;
	bool		isnull;

	if (wtcache_backlog_warning <= 0 || GetCurrentTimestamp() < next_check)
		return;
	next_check = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wtcache_poll_interval_ms);
	begin_xact(true);
	(void) queue_relid_or_exit();
	if (SPI_execute("SELECT coalesce(sum(coalesce(cardinality(keys), 1) / greatest(coalesce(key_width, 1), 1)), 0)::int8, "
					"coalesce(extract(epoch FROM clock_timestamp() - min(enqueued_at)), 0)::float8 FROM wtcache.queue",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "wtcache: counting wtcache.queue failed");
	backlog = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	oldest_s = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	end_xact();

	if (!warned && backlog > wtcache_backlog_warning)
	{
		ereport(WARNING,
				(errmsg("wtcache: " INT64_FORMAT " changes of database \"%s\" wait for Redis, the oldest for %.0f s",
						backlog, Worker.dbname, oldest_s),
				 errdetail("wtcache.backlog_warning is %d.", wtcache_backlog_warning),
				 errhint("See wtcache.status for the worker's state and last error.")));
		warned = true;
	}
	else if (warned && backlog < wtcache_backlog_warning / 2)
	{
		ereport(LOG,
				(errmsg("wtcache: the backlog of database \"%s\" is down to " INT64_FORMAT " changes",
						Worker.dbname, backlog)));
		warned = false;
	}
}

static void
claim_slot(Oid dboid)
{
	WorkerSlot *slot;

	LWLockAcquire(WtcacheSharedState->lock, LW_EXCLUSIVE);
	slot = wtcache_find_slot(dboid);
	if (slot == NULL)
	{
		LWLockRelease(WtcacheSharedState->lock);
		ereport(LOG, (errmsg("wtcache: no worker slot for database %u", dboid)));
		proc_exit(0);
	}
	if ((slot->pid != 0 && slot->pid != MyProcPid && kill(slot->pid, 0) == 0) ||
		wtcache_slot_is_held(slot))
	{
		LWLockRelease(WtcacheSharedState->lock);
		proc_exit(0);
	}
	slot->requested = false;
	SpinLockAcquire(&slot->mutex);
	slot->pid = MyProcPid;
	slot->latch = &MyProc->procLatch;
	slot->state = WORKER_STARTING;
	slot->connected = false;
	slot->last_error[0] = '\0';
	SpinLockRelease(&slot->mutex);
	LWLockRelease(WtcacheSharedState->lock);
	Worker.slot = slot;
}

void
wtcache_worker_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	claim_slot(dboid);
	before_shmem_exit(worker_shmem_exit, (Datum) 0);
	publish_key_prefix();

	/* keys and JSON rendered the same whatever postgresql.conf says */
	wtcache_canonical_settings_fix();
	SetConfigOption("application_name", "wtcache worker", PGC_SUSET, PGC_S_OVERRIDE);
	/* no object a user created is ever found by name in this superuser session */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Rows are read by key, a batch's keys joined to the table.  For a batch
	 * of thousands of keys the planner's estimates favour a merge or hash
	 * join over the whole table, with parallel workers: reading a table of
	 * millions of rows to find a few thousand, on CPUs the writers need,
	 * which makes the worker fall further behind and its next batch larger
	 * still.  Key lookups through the key's unique index stay proportional
	 * to the batch.
	 */
	SetConfigOption("enable_hashjoin", "off", PGC_USERSET, PGC_S_OVERRIDE);
	SetConfigOption("enable_mergejoin", "off", PGC_USERSET, PGC_S_OVERRIDE);
	SetConfigOption("max_parallel_workers_per_gather", "0", PGC_USERSET, PGC_S_OVERRIDE);
	/*
	 * The worker's statements are simple and planned once; a resync's scan
	 * of a large table passes jit_above_cost, and compiling it loaded LLVM
	 * for good: about 25 MB of private memory in every database's worker.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_OVERRIDE);

	/*
	 * The statements run at every batch keep their plans (plans.c), made
	 * once, maybe while the queue was empty; between vacuums its dead rows
	 * make a scan of it cost more every batch, while its primary key finds
	 * a batch's rows at once.  Reading a whole table (resync) turns scans
	 * back on for itself (wtcache_enqueue_all_rows), hence PGC_S_SESSION.
	 */
	SetConfigOption("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION);

	/*
	 * The worker's commits acknowledge batches Redis already has.  One lost
	 * in a crash only redelivers those batches, which their versions make
	 * harmless; and WAL is flushed in order, so a lost acknowledgement takes
	 * every later one with it and the replay keeps commit order (a
	 * TRUNCATE's purge included).  Waiting for the flush of each one cost
	 * writers a third of their throughput.  resync_all() flushes its own.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Each batch allocates and frees tens of megabytes (SPI results, the
	 * pipeline).  Left to its defaults glibc hands that back to the kernel
	 * every time and the next batch page-faults it in again, which costs
	 * more than the work itself.  Keep it.
	 */
	mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
	mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024);

	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&Worker.suffix_buf);
		MemoryContextSwitchTo(old);
	}

	begin_xact(true);
	(void) queue_relid_or_exit();
	{
		StringInfoData mk;
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		Worker.dbname = get_database_name(MyDatabaseId);
		initStringInfo(&mk);
		wtcache_append_clock_key(&mk, Worker.dbname);
		Worker.clock_key = mk.data;
		MemoryContextSwitchTo(old);
	}
	end_xact();
	/* the WAL every marker raised so far lies within (position_not_ours) */
	Worker.durable_lsn = GetFlushRecPtr(NULL);
	ereport(LOG, (errmsg("wtcache: worker started for database \"%s\"", Worker.dbname)));

	for (;;)
	{
		int			rc;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		reload_config_if_needed();
		count_pending_if_needed();
		check_backlog();

		if (!wtcache_enabled)
		{
			/* paused: the queue keeps everything; a reload wakes us */
			if (Worker.slot->state != WORKER_PAUSED)
			{
				ereport(LOG, (errmsg("wtcache: delivery paused (wtcache.enabled = off); changes stay queued")));
				wtc_redis_free(Worker.redis);
				Worker.redis = NULL;
				wtcache_slot_set_state(Worker.slot, WORKER_PAUSED, false);
			}
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wtcache_poll_interval_ms, PG_WAIT_EXTENSION);
			continue;
		}
		if (Worker.slot->state == WORKER_PAUSED)
			ereport(LOG, (errmsg("wtcache: delivery resumed (wtcache.enabled = on)")));

		if (Worker.redis == NULL)
		{
			if (!ensure_connected())
			{
				backoff_sleep();
				continue;
			}
			Worker.need_marker_check = true;
		}
		/* a wait() caller needs a check that starts after its call (fence.c) */
		if (wtcache_fence_waiting(Worker.slot))
			Worker.need_marker_check = true;
		if (Worker.need_marker_check)
		{
			if (!check_marker(0))
			{
				backoff_sleep();
				continue;
			}
			Worker.need_marker_check = false;
			/* Redis is verified now: let cached reads use it without waiting a poll */
			count_pending_if_needed();
		}

		drain();

		if (Worker.redis == NULL)
		{
			backoff_sleep();
			continue;
		}
		wtcache_slot_set_state(Worker.slot, WORKER_CONNECTED, true);
		{
			long		timeout_ms = idle_timeout_ms();

			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						   timeout_ms, PG_WAIT_EXTENSION);
			/* idle: notice a FLUSHALL or a restarted Redis without waiting for a write */
			if ((rc & WL_TIMEOUT) && timeout_ms >= wtcache_poll_interval_ms)
			{
				Worker.need_marker_check = true;
				release_batch_memory();
			}
		}
		/* and a Sentinel failover: a demoted master refuses only writes */
		if (master_moved())
			continue;
	}
}
