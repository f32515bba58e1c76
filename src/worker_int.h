/*-------------------------------------------------------------------------
 * worker_int.h
 *		What the files of the delivery worker share; nothing else
 *		includes it.
 *
 * One worker process per database.  Its files, by concern:
 *	worker.c	the process: start, signals, the latch loop, the connection
 *				to Redis and its backoff, drain(), idle time, the pending
 *				filter's count, the backlog warning, its transactions
 *	batch.c		claiming a batch: the queue rows by kind, repeated keys
 *				collapsed, rows read in the claim's snapshot, the Redis
 *				writes built
 *	durable.c	what must be durable before a batch is sent, and the wait
 *				for it
 *	deliver.c	sending a batch and reading its replies, a whole table's
 *				purge, acknowledging, setting aside
 *	events.c	the messages of the events channel: their one encoder
 *	markers.c	the generation-marker protocol: WAL positions, checks,
 *				markers following a Cluster's slot map, the resync
 *	replicas.c	replica acknowledgements: WAIT before a batch counts as
 *				delivered (wtcache.redis_wait_replicas)
 *	audit.c		the live consistency audit (wtcache.audit_rate), between
 *				batches
 *
 * What they keep between steps is in one struct, Worker (below).
 *
 * Invariants all of them keep:
 *	- Only durable commits reach Redis: batch_durable() runs before
 *	  anything of a batch is sent (durable.c).
 *	- Redis sees changes in queue order: a batch is sent only once the one
 *	  before it was acknowledged (drain), and a whole-table entry alone.
 *	- A queue row is deleted only once Redis applied its batch, and its
 *	  pending-filter counts are released right after that commit, before
 *	  anything that could fail (ack_batch).
 *	- Redis is never waited for inside a transaction: a claim and an
 *	  acknowledgement are short transactions of their own.
 *	- A failed Redis call goes through redis_failed(), which counts the
 *	  outage and drops the connection: a function that reports a Redis
 *	  failure by returning false leaves Worker.redis NULL, and the loop
 *	  backs off.  The one other false, with Worker.redis kept: a batch
 *	  too few Redis replicas acknowledged (replicas.c, 'retry'), which
 *	  stays queued; the loop pauses as after a failure.
 *
 * Every declaration here is hidden: PostgreSQL loads libraries with
 * RTLD_GLOBAL, where an exported name like another library's would be
 * taken for it.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_WORKER_INT_H
#define WTCACHE_WORKER_INT_H

#include "wtcache.h"
#include "keys.h"
#include "push.h"
#include "redis.h"
#include "shmem.h"

#include "access/xlogdefs.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"

#pragma GCC visibility push(hidden)

/* One distinct key of one table in a batch. */
typedef struct BatchKey
{
	char	   *suffix;			/* its part of the row key (hash key) */
	char	  **values;			/* canonical text, one per key column */
	int64		version;
	char	   *payload;		/* the value (keyspace.h), NULL if the row
								 * is gone */
	size_t		payload_len;
	struct HashValue *fields;	/* or, for a hash-format table, its fields;
								 * NULL if the row is gone */
	List	   *tags;			/* tags of its changes (template tables) */
} BatchKey;

struct Batch;

/* What a batch holds for one table. */
typedef struct TableBatch
{
	struct Batch *batch;		/* that it is part of */
	Oid			relid;
	bool		watched;		/* false: entries are dropped */
	bool		invalidate;
	bool		hash;			/* format 'hash' (keyspace.h) */
	int64		ttl_ms;
	int			nkeys;
	char	   *qname;
	char	   *table_key;
	struct KeyTemplate *tmpl;	/* its key template, bound to its key;
								 * NULL: the default layout (keyspace.h) */
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
	TimestampTz *id_since;		/* per id: when its changes were queued,
								 * 0: not counted in the delivery lag */
	int64	   *id_changes;		/* per id: its changes, for the lag */
	TimestampTz replied_at;		/* when Redis answered it (the lag's end) */
	int64		max_version;
	int64		nrecords;
	char	   *purge_table_key;	/* a whole-table entry, delivered alone */
	char	   *purge_key_template; /* and the key template of its keys, or
									 * NULL: the default layout */
	bool		purge_release;	/* no watch of this database has the
								 * template's key space any more: give its
								 * claim back after the purge */
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
	int		   *sent_order;		/* the order items went to Redis (push.c) */
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
	/*
	 * Long work's rows (per_table keys: warm, resync, requeues, repairs),
	 * which live changes may pass (claim_batch): the ones claimed, for
	 * wtcache.progress once acknowledged, and whether one was left for
	 * wtcache.bulk_rate.
	 */
	struct ProgressDelivery *bulk;
	int			nbulk;
	int			maxbulk;
	bool		bulk_deferred;	/* a bulk row waits for the rate limit */
	bool		live_only;		/* long work waits out this batch
								 * (bulk_row_allowed) */
	bool		queue_empty;	/* the claim found nothing to deliver */
	bool		acked;			/* its rows were acknowledged (ack_batch) */
	int64		record_limit;	/* the claim of this phase ends at it */
	TimestampTz claimed_at;		/* before the claim's snapshot */
	uint32	   *pending;		/* pending-filter counters of the claimed
								 * rows, released once they are acked */
	int			npending;
	int			maxpending;
	MemoryContext cxt;			/* all of the batch; reset at its claim */
} Batch;

/*
 * The ends of the worker's own latest commits are kept (note_own_commit):
 * a commit-log group spans 32 transactions.
 */
#define OWN_COMMITS_KEPT 32

/* What INFO says of a Redis (worker.c, redis_info) */
typedef struct RedisInfo
{
	char		run_id[48];		/* "": unknown */
	char		replid[48];		/* master_replid */
	char		policy[32];		/* maxmemory_policy */
	int64		maxmemory;		/* -1: unknown */
	int64		evicted_keys;	/* -1: unknown */
} RedisInfo;

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
	 * Redis out of memory (noeviction, or nothing left to evict): its
	 * refusals are no outage.  redis_failed starts the episode (logged
	 * once, shown in the slot), the connections made while it lasts keep
	 * its backoff growing and log nothing, and the first batch Redis
	 * acknowledges ends it (oom_recovered, from ack_batch).
	 */
	TimestampTz oom_since;		/* 0: no episode */

	/*
	 * What INFO said when the worker connected (read_memory_settings): a
	 * generation marker found missing on the same server process, with the
	 * same replication history, under an allkeys-* policy that evicted
	 * keys since, was evicted (markers.c).
	 */
	RedisInfo	redis_at_connect;
	bool		marker_eviction_logged; /* once per connection */

	/*
	 * Generation markers.  markers: for this connection, in markers_cxt;
	 * chosen by markers_follow_map, dropped by disconnect_redis.
	 */
	MarkerSet	markers;
	uint64		markers_epoch;	/* of the slot map they were chosen for */
	MemoryContext markers_cxt;
	MemoryContext replies_cxt;	/* replies read at a connection or a marker
								 * check (INFO, ROLE, markers): reset
								 * before each (worker_replies_context) */
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
	 * The claims of key templates' key spaces this database holds in Redis
	 * (deliver.c), their claim keys, in TopMemoryContext: claimed before
	 * the first push of a table with a key template, not again.  Emptied
	 * at each connection and by resync_all (Redis may have lost them).
	 */
	List	   *claimed;

	/*
	 * Batches: drain() claims into one while the other is in flight.  The
	 * contexts are made at the first drain and deleted by
	 * release_batch_memory when idle; each claim resets its own.
	 */
	Batch		batches[2];
	MemoryContext batch_cxts[2];
	int			coalesce_us;	/* the pause after a small batch; 0 when a
								 * batch was large or the queue empty */

	/*
	 * Replica acknowledgements (replicas.c).  replicas_short: the last
	 * batch's WAIT counted too few replicas and its acknowledgement was
	 * held ('retry'), so the loop paces the next attempt; reset by the
	 * next WAIT.  replicas_short_logged: that was logged, once per run of
	 * short WAITs.
	 */
	bool		replicas_short;
	bool		replicas_short_logged;

	/*
	 * wtcache.bulk_rate's token bucket (claim_batch): rows of long work
	 * that may be claimed now; may go below zero, as rows come in chunks.
	 * bulk_wait_until: when a deferred bulk row may go (0: none waits).
	 */
	double		bulk_tokens;
	TimestampTz bulk_refilled_at;
	TimestampTz bulk_wait_until;
	int64		live_scan_from; /* the second cursor of a claim starts after
								 * it (claim_batch) */
	int64		live_committed_from;	/* lowest id of live rows committed
										 * since its last walk; PG_INT64_MAX:
										 * none (resume_live_scan) */
	TimestampTz live_scan_walked_at;	/* its last walk from the first
										 * cursor's stop */
	bool		last_claim_bulk;	/* the last claim took long work */
	TimestampTz live_claimed_at;	/* the last claim that had live changes
									 * (claim_batch): long work then goes a
									 * chunk a batch */

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

extern WorkerProcess Worker;

/* "<system identifier>/<timeline>/<LSN>" and its NUL */
#define MARKER_POSITION_LEN 64

/* worker.c */
extern void begin_xact(bool read_only);
extern MemoryContext worker_replies_context(void);
extern void end_xact(void);
extern Oid	queue_relid_or_exit(void);
extern void redis_failed(const char *what, const char *detail);
extern void oom_recovered(void);
extern bool redis_info(RedisInfo *info);
extern int64 acked_version(void);

/* batch.c */
extern bool claim_next(Batch *b, MemoryContext cxt, Batch *inflight);
extern TimestampTz bulk_resume_at(const Batch *b);
extern void batch_unclaimed(const Batch *b);

/* durable.c */
extern void note_own_commit(void);
extern void durable_watch_catalog(void);
extern void batch_wal_at_claim(Batch *b);
extern void batch_catalog_at_claim(Batch *b);
extern void batch_note_writer(Batch *b, TransactionId xmin);
extern void batch_covers_wal_now(Batch *b);
extern void batch_durable(Batch *b);

/* deliver.c */
extern bool send_batch(Batch *b);
extern bool finish_batch(Batch *b);
extern bool run_purge(Batch *b);
extern void forget_claims(void);
extern bool purge_templates_of_database(int64 *removed);

/* events.c */
extern char *event_row_head(const char *nspname, const char *relname);
extern void event_row(PushItem *it, const TableBatch *tb, const BatchKey *bk, const char *op);
extern char *event_truncate(Oid relid, const char *table_key, const char *key_template,
							int64 version);
extern void event_tags(TagBumps *bumps, char *const *tags, int ntags, int64 version);
extern bool event_publish(char *message);
extern bool events_publish_batch(PushItem *items, int nitems, const TagBumps *bumps);
extern bool publish_reset(const char *why, bool versions_restart);

/* replicas.c */
extern void replicas_note_settings(bool starting);
extern bool replicas_acknowledged(void);

/* audit.c */
extern bool audit_due(void);
extern void audit_step(void);
extern long audit_timeout_ms(long timeout_ms);
extern void audit_worker_start(void);

/* markers.c */
extern void marker_position(char *buf, size_t len);
extern bool markers_follow_map(void);
extern bool check_marker(int64 new_version);
extern void resync_all(const char *why, bool versions_restart);
extern bool markers_lost(int64 seen);

#pragma GCC visibility pop

#endif							/* WTCACHE_WORKER_INT_H */
