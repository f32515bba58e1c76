/*-------------------------------------------------------------------------
 * markers.c
 *		The generation-marker protocol, as the worker runs it.
 *
 * A marker holds the highest version Redis acknowledged for the database
 * (push.c has the scripts; keyspace.h the keys), so that the worker can
 * tell that Redis lost data (a marker missing or behind: resync_all) or is
 * ahead of the database (a marker's WAL position beyond this server's
 * history, or a version the queue never handed out: resync_all too).
 *
 *	- A marker is raised only with the writes of the versions it names, or
 *	  after a resync to what Redis acknowledged; the WAL position raised
 *	  with it is WAL made durable before they were sent.
 *	- In a Cluster every master has a marker, chosen again when the slot
 *	  map changes; the old ones are checked where they are now first, so a
 *	  slot that moved is not taken for lost data.
 *	- A resync removes every key of the database, queues every watched row
 *	  again, then sets the markers, in that order: a crash in between finds
 *	  a marker missing and resyncs again.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "progress.h"
#include "fence.h"
#include "push.h"
#include "redis.h"
#include "shmem.h"
#include "watch.h"
#include "keyspace.h"

#include "access/timeline.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

static bool purge_database_keys(int64 *removed);

/*
 * Redis lost data we had pushed: what it kept may be older than the tables
 * (a failover to a replica that missed changes keeps rows deleted since),
 * so remove every key of the database, queue every watched row again, then
 * set the marker.  In that order: a crash in between finds the marker
 * missing and resyncs again.  Reads meanwhile see the marker missing, or
 * the rows pending, and read the tables.
 */
void
resync_all(const char *why, bool versions_restart)
{
	uint64		rows = 0;
	int			tables = 0;
	int64		removed = 0;
	char		err[256];
	char		position[MARKER_POSITION_LEN];

	wtcache_slot_set_state(Worker.slot, WORKER_RESYNCING, true);
	/* the marker stays missing until the end: a failure repairs again */
	wtcache_progress_purge_begin(Worker.slot, WTC_PROGRESS_REPAIR, InvalidOid);
	if (!purge_database_keys(&removed))
	{
		wtcache_progress_purge_end();
		return;
	}
	wtcache_progress_purge_end();
	if (!publish_reset(why, versions_restart))
		return;
	begin_xact(false);
	(void) wtcache_progress_set_op(WTC_PROGRESS_REPAIR);
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
	(void) wtcache_progress_set_op(WTC_PROGRESS_REQUEUE);
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

/*
 * Was a missing marker probably evicted?  Under an allkeys-* policy Redis
 * may evict any key, the marker too.  That is only a guess, never a
 * reason to skip the repair: the same server, with the same run_id and
 * replication history and a growing evicted_keys, can also have reloaded
 * an older snapshot (DEBUG RELOAD keeps all three) or taken writes from
 * elsewhere, and then holds values older than what it acknowledged, which
 * only a resync takes away.  The guess only words the log line and counts
 * (status.redis_marker_evictions), so that a DBA sees why resyncs repeat
 * and what to change (README, "Redis memory").
 */
static bool
marker_probably_evicted(void)
{
	RedisInfo	now;
	const RedisInfo *then = &Worker.redis_at_connect;

	if (wtc_redis_mode(Worker.redis) == WTC_REDIS_CLUSTER || then->run_id[0] == '\0' ||
		then->evicted_keys < 0 || !redis_info(&now))
		return false;
	return strncmp(now.policy, "allkeys-", 8) == 0 &&
		strcmp(now.run_id, then->run_id) == 0 &&
		now.evicted_keys > then->evicted_keys;
}

/*
 * The markers were found missing (seen < 0) or behind: Redis lost data,
 * and is resynced.  False when Redis failed (the connection is then gone).
 */
bool
markers_lost(int64 seen)
{
	if (seen < 0 && marker_probably_evicted())
	{
		SpinLockAcquire(&Worker.slot->mutex);
		Worker.slot->marker_evictions++;
		SpinLockRelease(&Worker.slot->mutex);
		if (!Worker.marker_eviction_logged)
		{
			ereport(LOG,
					(errmsg("wtcache: Redis at %s has probably evicted the generation marker of database \"%s\"; resyncing",
							Worker.redis_address, Worker.dbname),
					 errdetail("Its maxmemory-policy evicts any key. A missing marker cannot be told apart from lost data (a reload of an older snapshot keeps the server's identity), so the tables are written to Redis again."),
					 errhint("Give Redis room for the watched tables (see \"Redis memory\" in wtcache's README), or use a volatile-* policy or noeviction, which never evict wtcache's own keys.")));
			Worker.marker_eviction_logged = true;
		}
	}
	resync_all(seen < 0 ? "generation marker missing" : "generation marker behind", false);
	return Worker.redis != NULL;
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
	/* the keys of its tables with key templates, which name no database */
	forget_claims();
	if (!purge_templates_of_database(removed))
		return false;
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

void
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
bool
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
		return markers_lost(seen);
	return true;
}

/*
 * Check the generation markers and raise them to new_version.  Returns
 * false when Redis failed (the connection is then gone).
 */
bool
check_marker(int64 new_version)
{
	char		err[256];
	char		position[MARKER_POSITION_LEN];
	char	  **positions = NULL;
	bool		ahead = false;
	int64		seen;
	MarkerCheck mc;
	uint64		fence_ticket = wtcache_fence_ticket_to_serve(Worker.slot);
	MemoryContext old;

	if (!markers_follow_map())
		return false;
	marker_position(position, sizeof(position));

	/*
	 * A check comes from the top context (after every wait(), purge and
	 * connection): its replies must not stay there.
	 */
	old = MemoryContextSwitchTo(worker_replies_context());
	/* the first check also reads where the markers were raised */
	if (!Worker.redis_verified)
		positions = palloc0(sizeof(char *) * Worker.markers.n);
	mc = wtcache_check_markers(Worker.redis, &Worker.scripts, &Worker.markers, acked_version(), new_version,
							   position, &seen, positions, err, sizeof(err));
	if (positions != NULL)
	{
		for (int i = 0; i < Worker.markers.n && mc == MARKER_OK && !ahead; i++)
			ahead = position_not_ours(positions[i]);
	}
	MemoryContextSwitchTo(old);
	if (mc == MARKER_ERROR)
	{
		redis_failed("lost the connection to Redis", err);
		return false;
	}
	if (mc == MARKER_LOST)
	{
		/* what Redis kept is gone with it: nothing in it can be ahead of us */
		Worker.redis_verified = markers_lost(seen);
		return Worker.redis_verified;
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
			resync_all("Redis held versions of commits this server's WAL history does not have", true);
			Worker.redis_verified = (Worker.redis != NULL);
			return Worker.redis != NULL;
		}
		if (seen > queue_last_id())
		{
			resync_all("Redis held versions this database never handed out: it was restored or recreated", true);
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
