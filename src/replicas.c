/*-------------------------------------------------------------------------
 * replicas.c
 *		Replica acknowledgements: a batch counts as delivered only once
 *		wtcache.redis_wait_replicas Redis replicas have it (WAIT).
 *
 * Redis replicates asynchronously: a master that acknowledged a write and
 * then failed over may take it away.  wtcache notices that afterwards
 * (the generation marker of the promoted replica is behind what the
 * worker acknowledged) and repairs it with a full resync.  With
 * wtcache.redis_wait_replicas = N, the worker asks each master, once a
 * batch's replies are in, to WAIT until N replicas have everything the
 * worker wrote, and only then publishes the batch's events, deletes its
 * queue rows and raises the version it knows Redis acknowledged.  So a
 * failover to a replica that acknowledged loses nothing the worker called
 * delivered: no resync, and wait() true meant the replicas had it.
 *
 * Why each step:
 *	- WAIT counts the replicas that have this connection's last write.  A
 *	  batch sent again after a reconnection (a failure, a WAIT that timed
 *	  out) may write nothing new, its rows applied the first time through
 *	  another connection, so each round first writes, on the master of
 *	  every generation marker, the marker's companion "<marker>:ack"
 *	  (INCR; keyspace.h).  That write follows, in each master's
 *	  replication stream, every write made before it, through any
 *	  connection.  Not the marker itself: a touch that wrote the marker
 *	  only when present wrote nothing when it was missing, and WAIT on a
 *	  fresh connection then counted every replica at once; one that
 *	  recreated it would hide the data loss its absence reports.  The
 *	  markers are one per master in a Cluster, so every master is asked,
 *	  also one the batch did not write to: cheaper to reason about than
 *	  following redirects, and the masters wait side by side.
 *	- After the replies, not in the batch's pipeline: a Cluster redirect
 *	  (MOVED, ASK) re-sends a command to another master, which a WAIT
 *	  pipelined with the batch would not cover.
 *	- Before the events: a message announces only what a failover keeps.
 *	- At the timeout (wtcache.redis_wait_timeout_action): 'retry' keeps
 *	  the batch queued, to be sent again (no-ops where applied) and waited
 *	  for again, paced by wtcache.retry_interval; delivery stalls, reads
 *	  of its keys go to the tables (pending filter) and wait() is false.
 *	  'accept' delivers it, counted and logged once per run of short
 *	  WAITs; a failover then may lose it, and the generation marker
 *	  repairs that as without WAIT.
 *
 * What WAIT does not promise (Redis says so): a replica that acknowledged
 * can still lose the write if it restarts without persistence, and Sentinel
 * may promote a replica that did not acknowledge.  Backends' fills are not
 * waited for: a lost fill is a miss, and a fill checks a lease and a
 * tombstone the worker wrote, which the batches' WAITs covered.
 *
 * The SQL side, wtcache.replica_acks(), shows the worker's slot fields
 * (shmem.h) to the roles worker_status() shows them to.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "settings.h"
#include "shmem.h"

#include "catalog/pg_authid.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "portability/instr_time.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/acl.h"
#include "utils/builtins.h"

/* ---------------------------------------------------------------------
 * The worker's side
 * ---------------------------------------------------------------------
 */

/* The settings in force, for status: at the start and after each reload. */
void
replicas_note_settings(bool starting)
{
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->wait_replicas = wtcache_redis_wait_replicas;
	Worker.slot->wait_action = wtcache_redis_wait_timeout_action;
	if (starting)
		Worker.slot->wait_acked = -1;
	if (starting || wtcache_redis_wait_replicas == 0)
		Worker.slot->wait_short_since = 0;
	SpinLockRelease(&Worker.slot->mutex);
}

/*
 * Between the slices of a WAIT (redis.c): go on unless the worker was asked
 * to stop or to reload, or lost its postmaster.  Flags only: the WAIT's
 * caller acts on them.
 */
static bool
keep_waiting(void)
{
	return !ProcDiePending && !ConfigReloadPending && PostmasterIsAlive();
}

/*
 * Once a batch's writes are applied, before its events and its
 * acknowledgement: wait for the replicas.  True: acknowledge it (enough
 * replicas, none asked for, or too few and 'accept').  False: do not;
 * Worker.redis is NULL after a Redis failure, or Worker.replicas_short is
 * set (too few, 'retry'): the batch stays queued.
 */
bool
replicas_acknowledged(void)
{
	int			want = wtcache_redis_wait_replicas;
	int			acked;
	char		err[256];
	instr_time	start,
				took;
	uint64		took_us;
	TimestampTz now;
	bool		ok;
	bool		interrupted;
	bool		was_short = Worker.replicas_short;

	Worker.replicas_short = false;
	if (want == 0)
	{
		if (was_short || Worker.replicas_short_logged)
			replicas_note_settings(false);
		Worker.replicas_short_logged = false;
		return true;
	}
	INSTR_TIME_SET_CURRENT(start);
	ok = wtc_redis_wait_replicas(Worker.redis, Worker.markers.ack_keys, Worker.markers.n,
								 want, wtcache_redis_wait_timeout_ms, keep_waiting, &acked, &interrupted, err, sizeof(err));
	INSTR_TIME_SET_CURRENT(took);
	INSTR_TIME_SUBTRACT(took, start);
	if (!ok)
	{
		redis_failed("could not wait for Redis replicas", err);
		return false;
	}

	/*
	 * Cut short by a signal before enough replicas answered: neither a
	 * timeout nor an acknowledgement.  The batch stays queued; a shutdown
	 * ends here, a reload is taken in and the batch sent again.
	 */
	if (interrupted && acked < want)
	{
		CHECK_FOR_INTERRUPTS();
		if (!PostmasterIsAlive())
			proc_exit(1);
		return false;
	}

	/* read before the spinlock: nothing but assignments under it */
	now = GetCurrentTimestamp();
	took_us = INSTR_TIME_GET_MICROSEC(took);
	SpinLockAcquire(&Worker.slot->mutex);
	Worker.slot->wait_replicas = want;
	Worker.slot->wait_action = wtcache_redis_wait_timeout_action;
	Worker.slot->wait_acked = acked;
	Worker.slot->wait_calls++;
	Worker.slot->wait_us += took_us;
	if (acked < want)
	{
		Worker.slot->wait_timeouts++;
		if (wtcache_redis_wait_timeout_action == WTC_WAIT_ACCEPT)
			Worker.slot->wait_accepted++;
		if (Worker.slot->wait_short_since == 0)
			Worker.slot->wait_short_since = now;
	}
	else
		Worker.slot->wait_short_since = 0;
	SpinLockRelease(&Worker.slot->mutex);

	if (acked >= want)
	{
		if (Worker.replicas_short_logged)
			ereport(LOG,
					(errmsg("wtcache: Redis replicas at %s acknowledge delivery again (%d of %d asked for)",
							Worker.redis_address, acked, want)));
		Worker.replicas_short_logged = false;
		return true;
	}

	/* once per run of short rounds: each round takes the whole timeout */
	if (!Worker.replicas_short_logged)
	{
		bool		accept = wtcache_redis_wait_timeout_action == WTC_WAIT_ACCEPT;

		ereport(accept ? WARNING : LOG,
				(errmsg("wtcache: only %d of the %d Redis replicas wtcache.redis_wait_replicas asks for acknowledged a batch within %d ms",
						acked, want, wtcache_redis_wait_timeout_ms),
				 accept ?
				 errdetail("wtcache.redis_wait_timeout_action is 'accept': the batch is delivered anyway, and a failover to a replica that lacks it makes the worker resync.") :
				 errdetail("wtcache.redis_wait_timeout_action is 'retry': the batch stays in wtcache.queue and is sent again until enough replicas acknowledge it; reads of its keys read the tables meanwhile."),
				 errhint("INFO replication on the masters of %s lists their replicas; wtcache.redis_wait_replicas must not exceed the replicas connected to each master.",
						 Worker.redis_address)));
		Worker.replicas_short_logged = true;
	}
	if (wtcache_redis_wait_timeout_action == WTC_WAIT_ACCEPT)
		return true;
	Worker.replicas_short = true;
	return false;
}

/* ---------------------------------------------------------------------
 * The SQL side
 * ---------------------------------------------------------------------
 */

/*
 * wtcache.replica_acks(): one row per database worker, to the roles
 * worker_status() shows it to.  state: off, acknowledged (the last WAIT
 * counted enough), waiting for replicas ('retry': delivery stalls),
 * accepting without replicas ('accept'), or none yet.
 */
PG_FUNCTION_INFO_V1(wtcache_replica_acks);
Datum
wtcache_replica_acks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all_databases = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);

	wtcache_require_preload();
	InitMaterializedSRF(fcinfo, 0);

	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];
		Oid			dboid;
		pid_t		pid;
		int			wait_replicas;
		int			wait_action;
		int			wait_acked;
		uint64		wait_calls;
		uint64		wait_timeouts;
		uint64		wait_accepted;
		uint64		wait_us;
		TimestampTz short_since;
		const char *state;
		Datum		values[10];
		bool		nulls[10] = {0};

		if (!wtcache_slot_shown(slot, all_databases, &dboid))
			continue;

		SpinLockAcquire(&slot->mutex);
		pid = slot->pid;
		wait_replicas = slot->wait_replicas;
		wait_action = slot->wait_action;
		wait_acked = slot->wait_acked;
		wait_calls = slot->wait_calls;
		wait_timeouts = slot->wait_timeouts;
		wait_accepted = slot->wait_accepted;
		wait_us = slot->wait_us;
		short_since = slot->wait_short_since;
		SpinLockRelease(&slot->mutex);

		if (wait_replicas == 0)
			state = "off";
		else if (short_since != 0)
			state = wait_action == WTC_WAIT_ACCEPT ? "accepting without replicas" : "waiting for replicas";
		else if (wait_acked < 0 || wait_calls == 0)
			state = "no batch yet";
		else
			state = "acknowledged";

		values[0] = ObjectIdGetDatum(dboid);
		values[1] = Int32GetDatum(wait_replicas);
		values[2] = CStringGetTextDatum(wait_action == WTC_WAIT_ACCEPT ? "accept" : "retry");
		values[3] = CStringGetTextDatum(pid != 0 ? state : "stopped");
		/* -1 since the worker started; 0 in a slot no worker ever used */
		if (wait_acked >= 0 && wait_calls > 0)
			values[4] = Int32GetDatum(wait_acked);
		else
			nulls[4] = true;
		if (short_since != 0)
			values[5] = TimestampTzGetDatum(short_since);
		else
			nulls[5] = true;
		values[6] = Int64GetDatum((int64) wait_calls);
		values[7] = Int64GetDatum((int64) wait_timeouts);
		values[8] = Int64GetDatum((int64) wait_accepted);
		values[9] = Float8GetDatum((double) wait_us / 1000000.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
