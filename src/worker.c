/*-------------------------------------------------------------------------
 * worker.c
 *		The per-database delivery worker: the process and its loop.
 *
 * One iteration:
 *	1. claim: in one short read-only transaction (one snapshot), read the
 *	   oldest queue rows up to wtcache.batch_size keys, collapse repeated keys
 *	   to their highest version, and read each key's committed row
 *	   (batch.c);
 *	2. push: with no transaction open, once the batch's commits are durable
 *	   (durable.c), pipeline the versioned writes to Redis (deliver.c,
 *	   push.c);
 *	3. ack: in a second short transaction, delete the queue rows Redis
 *	   acknowledged and count them (deliver.c).
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
 *
 * This file holds the process: its start, signals and settings, the
 * connection to Redis and the backoff after a failure, drain() (which
 * overlaps the claim of one batch with Redis applying the one before),
 * idle time, the count of the pending filter, the backlog warning, and the
 * transactions every part runs in.  The files of the worker and the
 * invariants they share are listed in worker_int.h.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "progress.h"
#include "rights.h"
#include "fence.h"
#include "lag.h"
#include "pending.h"
#include "push.h"
#include "redis.h"
#include "settings.h"
#include "shmem.h"
#include "watch.h"
#include "worker.h"
#include "keyspace.h"

#include <malloc.h>

#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* the first pause between counts of the pending filter (count_pending_if_needed) */
#define PENDING_COUNT_RETRY_MS	100

WorkerProcess Worker = {
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
 * Redis refused a write for want of memory (maxmemory reached under
 * noeviction, or a volatile-* policy with no key left to evict).  That is
 * no outage: reads still work, and so do deletes.  Nothing it refused was
 * applied (wtc_redis_error_is_oom), the batch stays in the queue and is
 * sent again, whole, after the backoff, which keeps growing across the
 * episode's reconnections up to wtcache.retry_max; the episode is logged
 * once, when it begins, and once when it ends (oom_recovered).
 */
static void
oom_refused(const char *detail)
{
	char		policy[32];
	TimestampTz now = GetCurrentTimestamp();	/* not under the spinlock */

	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->oom_refusals++;
	if (Worker.oom_since == 0)
	{
		Worker.oom_since = now;
		Worker.slot->oom_since = Worker.oom_since;
		Worker.slot->oom_episodes++;
	}
	else
	{
		SpinLockRelease(&Worker.slot->mutex);
		return;
	}
	strlcpy(policy, Worker.slot->maxmemory_policy, sizeof(policy));
	SpinLockRelease(&Worker.slot->mutex);

	ereport(WARNING,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("wtcache: Redis at %s is out of memory and refuses writes; delivery waits until it has room",
					Worker.redis_address),
			 errdetail("Redis said: %s (maxmemory-policy %s).  Captured changes stay in wtcache.queue and are delivered, in order, when Redis accepts writes again; until then reads of changed keys read the tables.",
					   detail, policy[0] ? policy : "unknown"),
			 errhint("Raise Redis's maxmemory, free memory in Redis, or let it evict (see \"Sizing Redis\" in wtcache's README).")));
}

/* A batch was acknowledged: the OOM episode, if any, is over. */
void
oom_recovered(void)
{
	TimestampTz since = Worker.oom_since;
	uint64		refusals;

	if (since == 0)
		return;
	Worker.oom_since = 0;
	Worker.consecutive_failures = 0;
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->oom_since = 0;
	refusals = Worker.slot->oom_refusals;
	SpinLockRelease(&Worker.slot->mutex);
	ereport(LOG,
			(errmsg("wtcache: Redis at %s accepts writes again after %.1f s out of memory; delivery resumed",
					Worker.redis_address,
					(double) (GetCurrentTimestamp() - since) / USECS_PER_SEC),
			 errdetail("Redis has refused " UINT64_FORMAT " attempts for want of memory since the worker started.",
					   refusals)));
}

/*
 * Log a failure once per outage, then count retries quietly.  An outage
 * that began with a lost connection also logs its first failure to
 * connect again: why Redis cannot be reached (a refused certificate, a
 * wrong password) is what the operator needs, not only that it went.
 */
void
redis_failed(const char *what, const char *detail)
{
	char		msg[256];
	bool		connecting = strncmp(what, "could not connect", 17) == 0;

	snprintf(msg, sizeof(msg), "%s: %s", what, detail);
	wtcache_slot_set_error(Worker.slot, msg);
	if (wtc_redis_error_is_oom(detail))
	{
		oom_refused(detail);
		Worker.consecutive_failures++;
		/* its replies may not all have been read: a new connection is cheap */
		disconnect_redis();
		return;
	}
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
		replicas_note_settings(false);
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

/* The value of "name:" in an INFO reply, or false. */
static bool
info_field(const char *info, const char *name, char *out, size_t outlen)
{
	size_t		namelen = strlen(name);
	const char *p = info;

	while ((p = strstr(p, name)) != NULL)
	{
		/* at the start of a line, and the whole name */
		if ((p == info || p[-1] == '\n') && p[namelen] == ':')
		{
			size_t		n = strcspn(p + namelen + 1, "\r\n");

			strlcpy(out, p + namelen + 1, Min(n + 1, outlen));
			return true;
		}
		p += namelen;
	}
	return false;
}

/*
 * An empty context for the replies of one connection-time or marker-check
 * call, read from the worker's top context: what it held before is gone.
 */
MemoryContext
worker_replies_context(void)
{
	if (Worker.replies_cxt == NULL)
		Worker.replies_cxt = AllocSetContextCreate(TopMemoryContext, "wtcache replies",
												   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(Worker.replies_cxt);
	return Worker.replies_cxt;
}

/*
 * What INFO says of the Redis the worker is connected to: its identity
 * (the server process, its replication history), its memory settings and
 * how many keys it evicted.  False when INFO is refused (an ACL without
 * it): all unknown then.  In a Cluster, INFO goes to one master.
 */
bool
redis_info(RedisInfo *info)
{
	WtcReply	reply;
	char		num[32];
	MemoryContext old;
	bool		ok;

	memset(info, 0, sizeof(*info));
	info->maxmemory = info->evicted_keys = -1;
	/* a worker reconnecting for hours must not keep every reply */
	old = MemoryContextSwitchTo(worker_replies_context());
	ok = wtc_redis_commandv(Worker.redis, &reply, 1, "INFO") && reply.type == WTC_REPLY_STRING;
	MemoryContextSwitchTo(old);
	if (!ok)
		return false;
	(void) info_field(reply.str, "run_id", info->run_id, sizeof(info->run_id));
	(void) info_field(reply.str, "master_replid", info->replid, sizeof(info->replid));
	(void) info_field(reply.str, "maxmemory_policy", info->policy, sizeof(info->policy));
	if (info_field(reply.str, "maxmemory", num, sizeof(num)))
		info->maxmemory = strtoi64(num, NULL, 10);
	if (info_field(reply.str, "evicted_keys", num, sizeof(num)))
		info->evicted_keys = strtoi64(num, NULL, 10);
	return info->run_id[0] != '\0';
}

/*
 * At each connection: maxmemory and its policy for wtcache.status (which
 * policy applies decides what an operator must expect: README, "Sizing
 * Redis"), and the identity an evicted generation marker is told from
 * lost data by (markers.c, marker_evicted).
 */
static void
read_memory_settings(void)
{
	RedisInfo	info;

	(void) redis_info(&info);
	Worker.redis_at_connect = info;
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->maxmemory = info.maxmemory;
	strlcpy(Worker.slot->maxmemory_policy, info.policy, sizeof(Worker.slot->maxmemory_policy));
	SpinLockRelease(&Worker.slot->mutex);
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
	/* another Redis, or one that lost data: claim key templates again */
	forget_claims();
	{
		WtcReply	role;
		const char *name = "";
		MemoryContext old = MemoryContextSwitchTo(worker_replies_context());

		/* "master" or "slave": a worker writing to a replica fails, and says so */
		if (wtc_redis_commandv(Worker.redis, &role, 1, "ROLE") && role.type == WTC_REPLY_ARRAY &&
			role.nelem > 0 && role.elem[0].type == WTC_REPLY_STRING)
			name = role.elem[0].str;
		MemoryContextSwitchTo(old);
		SpinLockAcquire(&Worker.slot->mutex);
		strlcpy(Worker.slot->redis_role, name, sizeof(Worker.slot->redis_role));
		SpinLockRelease(&Worker.slot->mutex);
	}
	read_memory_settings();
	Worker.marker_eviction_logged = false;
	wtcache_slot_set_state(Worker.slot, WORKER_CONNECTED, true);
	Worker.failure_logged = Worker.connect_failure_logged = false;
	/* a reconnection within an OOM episode is part of it: quiet, and no reset */
	if (Worker.oom_since == 0)
	{
		ereport(LOG, (errmsg("wtcache: connected to Redis at %s", Worker.redis_address)));
		Worker.consecutive_failures = 0;
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Transactions
 * ---------------------------------------------------------------------
 */

void
begin_xact(bool read_only)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, read_only ? "wtcache: reading changes" : "wtcache: acknowledging");
}

void
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

Oid
queue_relid_or_exit(void)
{
	/* local: registered once per process, and nothing else asks */
	static bool callback_registered = false;
	Oid			queue = wtcache_queue_relid();

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(verified_queue_inval, (Datum) 0);
		durable_watch_catalog();
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

int64
acked_version(void)
{
	int64		v;

	SpinLockAcquire(&Worker.slot->mutex);
	v = Worker.slot->acked_version;
	SpinLockRelease(&Worker.slot->mutex);
	return v;
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
		{
			batch_unclaimed(inflight);
			return;
		}
		have_next = claim_next(next, Worker.batch_cxts[cur], inflight);
		if (inflight != NULL)
		{
			if (!finish_batch(inflight))
			{
				batch_unclaimed(inflight);
				if (have_next)
					batch_unclaimed(next);
				return;
			}
			inflight = NULL;
		}
		if (!have_next)
		{
			Worker.coalesce_us = 0;
			/* rows of long work over wtcache.bulk_rate: wake for them then */
			Worker.bulk_wait_until = bulk_resume_at(next);
			if (next->queue_empty)
				wtcache_progress_queue_empty(Worker.slot, next->claimed_at);
			return;
		}
		/*
		 * Here no batch is in flight, and a steady load would never let the
		 * queue run empty: a reload (SIGHUP) is taken in by the loop now,
		 * not once the load stops, and the live audit's step runs when due
		 * (audit.c), unless the batch is full: a backlog is delivered
		 * first, the audit takes only the time the worker has to spare.  A
		 * difference it found asks for a marker check first, also the
		 * loop's.  The batch claimed is claimed again after them, at once
		 * (the latch).
		 */
		if (ConfigReloadPending)
		{
			batch_unclaimed(next);
			SetLatch(MyLatch);
			return;
		}
		if (next->nrecords < wtcache_batch_size && audit_due())
		{
			audit_step();
			if (Worker.redis == NULL)
			{
				batch_unclaimed(next);
				return;
			}
			if (Worker.need_marker_check)
			{
				batch_unclaimed(next);
				SetLatch(MyLatch);
				return;
			}
		}
		if (next->purge_table_key != NULL)
		{
			if (!run_purge(next))
			{
				batch_unclaimed(next);
				return;
			}
		}
		else
		{
			if (!send_batch(next))
			{
				batch_unclaimed(next);
				return;
			}
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

	long		timeout = wtcache_poll_interval_ms;

	/* past: no count is due (not ready only until Redis is verified) */
	if (!Worker.slot->pending_ready && now < Worker.pending.next_try)
	{
		TimestampDifference(now, Worker.pending.next_try, &secs, &usecs);
		timeout = Min(timeout, secs * 1000 + usecs / 1000 + 1);
	}
	/* rows of long work wait for wtcache.bulk_rate (batch.c) */
	if (Worker.bulk_wait_until != 0)
	{
		TimestampDifference(now, Worker.bulk_wait_until, &secs, &usecs);
		timeout = Min(timeout, secs * 1000 + usecs / 1000 + 1);
	}
	return timeout;
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
	slot->oom_since = 0;
	slot->oom_episodes = slot->oom_refusals = slot->marker_evictions = 0;
	slot->maxmemory = -1;
	slot->maxmemory_policy[0] = '\0';
	SpinLockRelease(&slot->mutex);
	LWLockRelease(WtcacheSharedState->lock);
	Worker.slot = slot;
	/* the histogram counts this worker's deliveries (lag.c) */
	wtcache_lag_reset(&slot->lag, GetCurrentTimestamp(), dboid);
}

/*
 * The session settings the worker runs under, set once at its start.
 */
static void
worker_settings(void)
{
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
}

/*
 * One turn of the loop: settings, the pending filter, the backlog, then
 * Redis: connect, check the markers when due, deliver what is queued, and
 * sleep until a commit or the poll interval.
 */
static void
worker_iteration(void)
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
		return;
	}
	if (Worker.slot->state == WORKER_PAUSED)
		ereport(LOG, (errmsg("wtcache: delivery resumed (wtcache.enabled = on)")));

	if (Worker.redis == NULL)
	{
		if (!ensure_connected())
		{
			backoff_sleep();
			return;
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
			return;
		}
		Worker.need_marker_check = false;
		/* Redis is verified now: let cached reads use it without waiting a poll */
		count_pending_if_needed();
	}

	drain();

	/*
	 * A batch too few replicas acknowledged is sent again after a pause:
	 * not at every commit, each attempt holding the worker for the whole
	 * WAIT timeout.
	 */
	if (Worker.redis == NULL || Worker.replicas_short)
	{
		backoff_sleep();
		return;
	}
	wtcache_slot_set_state(Worker.slot, WORKER_CONNECTED, true);
	/* between batches: the live audit, when a step is due (audit.c) */
	audit_step();
	{
		/* local: when the worker last had work, for the idle tasks below */
		static TimestampTz quiet_since = 0;
		long		idle_ms = idle_timeout_ms();
		/* the audit's next step may be due before a wake-up */
		long		timeout_ms = audit_timeout_ms(idle_ms);

		if (quiet_since == 0)
			quiet_since = GetCurrentTimestamp();
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   timeout_ms, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			quiet_since = GetCurrentTimestamp();
		/* idle: notice a FLUSHALL or a restarted Redis without waiting for a write */
		else if ((rc & WL_TIMEOUT) && idle_ms >= wtcache_poll_interval_ms &&
				 TimestampDifferenceExceeds(quiet_since, GetCurrentTimestamp(),
											wtcache_poll_interval_ms - 1))
		{
			Worker.need_marker_check = true;
			release_batch_memory();
			quiet_since = GetCurrentTimestamp();
		}
	}
	/* and a Sentinel failover: a demoted master refuses only writes */
	(void) master_moved();
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
	audit_worker_start();
	publish_key_prefix();
	replicas_note_settings(true);

	worker_settings();

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
		worker_iteration();
}
