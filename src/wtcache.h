/*-------------------------------------------------------------------------
 * wtcache.h
 *		Declarations shared by the wtcache modules.
 *
 * Files and their concerns:
 *	wtcache.c	module entry point, preload gate
 *	settings.c	wtcache.* settings and Redis URL parsing
 *	shmem.c		shared state: worker slots, launcher latch, status SRF
 *	keyspace.c	the Redis layout: key names, value codec, canonical
 *				settings (keyspace.h is the contract)
 *	keys.c		key columns: rendering, reading rows by key, redis_key()
 *	capture.c	row/TRUNCATE triggers, per-transaction key buffer, wake
 *	watch.c		watch(), unwatch(), resync()/warm()
 *	rights.c	running SQL as another role, immune to the caller's objects
 *	fence.c		wait(): the read-your-writes fence
 *	redis.c		connections to Redis (one server, Sentinel, Cluster masters)
 *	tls.c		TLS under those connections (OpenSSL), certificate checks
 *	cluster.c	Redis Cluster slot map, routing and redirects
 *	push.c		turning a claimed batch into pipelined Redis commands
 *	worker.c	per-database delivery worker: the process, its loop
 *				(worker_int.h: what the worker's files share)
 *	batch.c		the worker claiming a batch: queue rows to Redis writes
 *	durable.c	the worker: what must be durable before a batch is sent
 *	deliver.c	the worker: a batch sent, acknowledged or set aside
 *	events.c	the worker: messages on the events channel
 *	markers.c	the worker: generation markers, resync
 *	launcher.c	launcher that starts one worker per database
 *	ddl.c		moving the worker out of the way of DROP DATABASE & co.
 *	pending.c	shared filter of keys whose changes Redis lacks
 *	session.c	the backend's Redis session: connection, circuit breaker,
 *				scripts, fill leases and waits, per-call scratch memory
 *				(session.h)
 *	read.c		cached reads: get(), get_many()
 *	stats.c		shared read counters per table
 *	tags.c		tag templates, tag keys, invalidate()
 *	query.c		cached query results: query(), query_key()
 *	verify.c	verify(): Redis against the table
 *	setaside.c	queue rows the worker could not deliver: retry, discard
 *	queue.c		the queue row: columns, decoder, tag groups, writer (queue.h)
 *	plans.c		SPI plans kept for the life of the backend
 *	xact.c		transaction and subtransaction ends, in one stated order
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_H
#define WTCACHE_H

#include "postgres.h"

#include "access/attnum.h"
#include "access/htup.h"
#include "access/xact.h"
#include "access/xlogdefs.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/relcache.h"
#include "datatype/timestamp.h"
#include "utils/timestamp.h"

#define WTCACHE_SCHEMA			"wtcache"
#define WTCACHE_QUEUE_TABLE		"queue"
#define WTCACHE_QUEUE_SEQ		"queue_id_seq"
#define WTCACHE_WATCHED_TABLE	"watched"

/* Keys per queue row: large enough to make the queue cheap, small enough
 * that a worker batch boundary never has to split a row. */
#define WTCACHE_CHUNK_KEYS		1000

/* ---- settings.c ---- */
typedef struct RedisAddress
{
	char		host[256];
	int			port;
	int			db;
	bool		tls;			/* rediss:// */
	char		user[128];
	char		password[256];
} RedisAddress;

extern char *wtcache_redis_url;
extern char *wtcache_redis_sentinels;
extern char *wtcache_redis_master_name;
extern char *wtcache_redis_cluster_nodes;
extern char *wtcache_key_prefix;
extern int	wtcache_batch_size;
extern int	wtcache_connect_timeout_ms;
extern int	wtcache_command_timeout_ms;
extern int	wtcache_retry_interval_ms;
extern int	wtcache_retry_max_ms;
extern int	wtcache_max_databases;
extern int	wtcache_tombstone_ttl_s;
extern int	wtcache_pending_slots;
extern int	wtcache_read_timeout_ms;
extern int	wtcache_read_retry_interval_ms;
extern bool wtcache_read_fallback;
extern int	wtcache_fill_lease_ms;
extern int	wtcache_fill_wait_ms;
extern int	wtcache_debug_fill_delay_ms;
extern int	wtcache_poll_interval_ms;
extern double wtcache_ttl_jitter;
extern bool wtcache_enabled;
extern int	wtcache_backlog_warning;
extern int	wtcache_max_value_kb;
extern int64 wtcache_max_value_bytes;	/* the setting, less room for a script's
										 * other arguments */

extern void wtcache_define_settings(void);
extern int64 wtcache_interval_ms(const Interval *iv);
extern void wtcache_install_log_redaction(void);
extern bool wtcache_parse_redis_url(const char *url, RedisAddress *addr,
									const char **problem);
extern void wtcache_describe_address(const RedisAddress *addr, char *buf,
									 size_t buflen);

/* How to reach Redis: one server, a Sentinel-managed master, or a Cluster. */
typedef enum WtcRedisMode
{
	WTC_REDIS_SINGLE,
	WTC_REDIS_SENTINEL,
	WTC_REDIS_CLUSTER
} WtcRedisMode;

#define WTC_MAX_SEEDS 16

typedef struct RedisHostPort
{
	char		host[256];
	int			port;
} RedisHostPort;

/* How much of the server's certificate TLS verifies (wtcache.redis_tls_verify). */
typedef enum WtcTlsVerify
{
	WTC_TLS_VERIFY_FULL,		/* chain to a trusted CA, and the name */
	WTC_TLS_VERIFY_CA,			/* chain only */
	WTC_TLS_VERIFY_NONE			/* nothing: encryption without authentication */
} WtcTlsVerify;

/* TLS to every server, Sentinel and Cluster node, when the URL is rediss:// */
typedef struct RedisTls
{
	bool		enabled;
	WtcTlsVerify verify;
	int			min_version;	/* TLS1_2_VERSION or TLS1_3_VERSION's value */
	char		ca_file[MAXPGPATH];
	char		ca_dir[MAXPGPATH];
	char		cert_file[MAXPGPATH];
	char		key_file[MAXPGPATH];
	char		server_name[256];	/* "": the host connected to */
} RedisTls;

typedef struct RedisTarget
{
	WtcRedisMode mode;
	RedisAddress addr;			/* credentials and db; host:port in SINGLE */
	int			nseeds;			/* Sentinels, or Cluster seed nodes */
	RedisHostPort seeds[WTC_MAX_SEEDS];
	char		master_name[128];
	/* AUTH sent to every Sentinel before asking it (none if no password) */
	char		sentinel_user[128];
	char		sentinel_password[256];
	RedisTls	tls;
} RedisTarget;

extern bool wtcache_redis_target(RedisTarget *target, const char **problem);
extern uint32 wtcache_redis_settings_hash(void);
extern void wtcache_describe_target(const RedisTarget *target, char *buf, size_t buflen);
extern const char *wtcache_tls_label(const RedisTls *tls);
struct stat;
extern const char *wtcache_secret_file_problem(const struct stat *st);

/* Bounds on what any caller can make wtcache keep in Redis (settings.c). */
#define WTCACHE_QUERY_TTL_MAX_S (7 * 86400)
#define WTCACHE_QUERY_MAX_SIZE_MAX_KB (64 * 1024)
extern int	wtcache_max_tags_per_call;
extern int	wtcache_max_tag_length;

/* ---- shmem.c ---- */
typedef enum WorkerState
{
	WORKER_STARTING = 0,
	WORKER_CONNECTING,
	WORKER_CONNECTED,
	WORKER_BACKOFF,
	WORKER_RESYNCING,
	WORKER_PAUSED				/* wtcache.enabled = off */
} WorkerState;

/*
 * One slot per database that has (or had) a worker.  See the locking rules
 * at the top of shmem.c.
 */
typedef struct WorkerSlot
{
	/* assigned under WtcacheShared->lock (exclusive) */
	Oid			dboid;
	bool		absent;			/* worker found no extension there */
	bool		requested;		/* a backend asked for a worker */
	pid_t		held_by;		/* backend running DDL that needs the
								 * database to itself (DROP DATABASE...) */
	bool		pending_ready;	/* the pending filter counts this database's
								 * queue (pending.c) */

	/* written by the worker of this slot, under mutex */
	slock_t		mutex;
	pid_t		pid;
	Latch	   *latch;
	WorkerState state;
	bool		connected;
	char		redis_address[300];
	char		last_error[256];
	TimestampTz last_error_at;
	TimestampTz last_push;
	TimestampTz next_retry;		/* while waiting to retry Redis */
	char		redis_role[16]; /* ROLE of the Redis it is connected to */
	uint64		pushed;
	uint64		batches;
	uint64		resyncs;
	int64		acked_version;	/* highest version Redis acknowledged */
	XLogRecPtr	durable_lsn;	/* WAL flushed, and on the synchronous
								 * standbys, this far (read.c's fills) */
	XLogRecPtr	wal_awaited;	/* asynchronous commits' WAL the worker
								 * waits for the WAL writer to flush, or
								 * invalid; wait() flushes it (fence.c) */

	/*
	 * The wait() fence's handshake (fence.c).  fence_requested: tickets
	 * handed to waiters; fence_confirmed: the highest ticket that a
	 * generation marker check started after, and found Redis whole;
	 * fence_repaired: the highest ticket such a check found Redis had lost
	 * data for, published once the resync's rows were queued.
	 */
	uint64		fence_requested;
	uint64		fence_confirmed;
	uint64		fence_repaired;

	/* the wtcache.key_prefix the worker writes under ("": none yet) */
	char		key_prefix[65];
} WorkerSlot;

typedef struct WtcacheShared
{
	LWLock	   *lock;
	slock_t		mutex;			/* protects launcher_* */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	WorkerSlot	slots[FLEXIBLE_ARRAY_MEMBER];
} WtcacheShared;

extern WtcacheShared *WtcacheSharedState;

extern void wtcache_shmem_request(void);
extern void wtcache_shmem_startup(void);
extern void wtcache_require_preload(void);
extern WorkerSlot *wtcache_find_slot(Oid dboid);
extern int64 wtcache_acked_version(Oid dboid);
extern XLogRecPtr wtcache_durable_lsn(Oid dboid);
extern WorkerSlot *wtcache_assign_slot(Oid dboid);
extern void wtcache_request_worker(Oid dboid);
extern void wtcache_wake_worker(Oid dboid);
extern bool wtcache_slot_is_held(WorkerSlot *slot);
extern bool wtcache_worker_uses_prefix(Oid dboid, const char *prefix);
extern bool wtcache_hold_database(Oid dboid);
extern void wtcache_release_database(Oid dboid, bool dropped, bool restart);
extern void wtcache_slot_set_error(WorkerSlot *slot, const char *msg);
extern void wtcache_slot_set_state(WorkerSlot *slot, WorkerState state,
								   bool connected);

/* ---- keys.c ---- */

/* How a key column is written into the queue. */
typedef struct KeyColumn
{
	AttrNumber	attnum;
	Oid			typid;
	int16		typlen;
	bool		typbyval;
	bool		binary;			/* output depends on session settings, so
								 * the trigger records the send format as
								 * \x-hex and the worker renders it */
	FmgrInfo	out;			/* output, or send when binary */
} KeyColumn;

extern bool wtcache_key_type_is_stable(Oid typid);
extern void wtcache_init_key_type(KeyColumn *col, Oid typid, MemoryContext mcxt);
extern void wtcache_init_key_column(KeyColumn *col, Relation rel,
									AttrNumber attnum, MemoryContext mcxt);
extern char *wtcache_send_hex(FmgrInfo *send, Datum value, int *len);
extern char *wtcache_render_key_value(KeyColumn *col, Datum value);
extern void wtcache_check_key_count(Oid relid, int nkeys, int given);
/* Reading a watched table's rows by key (see keys.c) */
typedef struct KeyLookup
{
	int			nkeys;
	char	   *sql_many;		/* $1..$n: arrays of key values; returns
								 * (position, row JSON, key columns...,
								 * xmin) per row found */
	char	   *sql_one;		/* $1..$n: one key's values; (1, row JSON) */
	Oid			argtypes[INDEX_MAX_KEYS];	/* the type a key value is given as */
	Oid			arraytypes[INDEX_MAX_KEYS];	/* sql_many's parameter types */
	bool		bytext[INDEX_MAX_KEYS]; /* argtype has no array type: sql_many
										 * takes text[] and casts */
	int16		typlen[INDEX_MAX_KEYS];
	bool		typbyval[INDEX_MAX_KEYS];
	char		typalign[INDEX_MAX_KEYS];
	FmgrInfo	input[INDEX_MAX_KEYS];
	Oid			ioparams[INDEX_MAX_KEYS];
	FmgrInfo	output[INDEX_MAX_KEYS];	/* of the key columns' base types */
} KeyLookup;

extern Oid	wtcache_key_index(Relation rel, int nkeys, const AttrNumber *attnums);
extern void wtcache_key_lookup_init(KeyLookup *kl, Relation rel, int nkeys,
									const int16 *attnums, MemoryContext mcxt);
extern Datum wtcache_key_lookup_value(KeyLookup *kl, int col, char *text);
extern Datum wtcache_key_lookup_array(KeyLookup *kl, int col, char **texts, int n);
extern bool wtcache_key_lookup_same_key(KeyLookup *kl, HeapTuple tup, TupleDesc desc,
										char **canon);
extern void wtcache_append_json_strings(StringInfo buf, char *const *items, int n);

/* ---- xact.c: each module's part of a transaction's end, called in the
 * order xact.c states ---- */
extern void wtcache_xact_callbacks_init(void);
extern void wtcache_capture_xact_event(XactEvent event);
extern void wtcache_capture_subxact_event(SubXactEvent event, SubTransactionId mySubid,
										  SubTransactionId parentSubid);
extern void wtcache_pending_xact_event(XactEvent event);
extern void wtcache_pending_subxact_event(SubXactEvent event, SubTransactionId mySubid,
										  SubTransactionId parentSubid);
extern void wtcache_ddl_xact_event(XactEvent event);
extern void wtcache_tags_xact_event(XactEvent event);
extern void wtcache_session_xact_event(XactEvent event);
extern void wtcache_read_xact_event(XactEvent event);

/* ---- capture.c ---- */
extern void wtcache_capture_init(void);
extern void wtcache_note_enqueued(void);
extern void wtcache_request_worker_at_commit(void);
extern bool wtcache_xact_wrote(Oid relid);
extern void wtcache_enqueue_whole_table(Oid relid, const char *table_key);
extern void wtcache_queue_insert_per_table(Oid relid, Datum *keys, int nvalues, int width);

/* ---- tags.c ---- */
/* tag columns per table: the UPDATE trigger passes each twice, plus keys */
#define WTCACHE_MAX_TAG_COLUMNS 16

typedef struct TagPart
{
	int			col;			/* index among the tag columns, or -1 */
	char	   *lit;			/* literal text when col < 0 */
} TagPart;

typedef struct TagTemplate
{
	int			nparts;
	TagPart    *parts;
} TagTemplate;

extern ArrayType *wtcache_compile_tag_templates(Relation rel, ArrayType *templates,
												AttrNumber *cols, int *ncols);
extern TagTemplate *wtcache_parse_tag_templates(ArrayType *compiled, int *ntemplates,
												MemoryContext mcxt);
extern int	wtcache_render_tags(const TagTemplate *templates, int ntemplates,
								char **colvals, char **out);
extern char *wtcache_table_tag(Oid relid);
extern bool wtcache_xact_invalidated(const char *tag);
extern void wtcache_check_call_tags(ArrayType *tags);

/* ---- rights.c ---- */
typedef struct WtcRights
{
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
} WtcRights;

extern void wtcache_rights_enter(WtcRights *rights, Oid userid, bool restricted);
extern void wtcache_rights_enter_table_owner(WtcRights *rights, Oid relid);
extern void wtcache_rights_enter_unpinned(WtcRights *rights, Oid userid);
extern int	wtcache_spi_as_extension_owner(const char *sql, int nargs, Oid *argtypes,
										   Datum *values, const char *nulls,
										   bool read_only, long count);
extern void wtcache_rights_leave(WtcRights *rights);
extern int	wtcache_pin_search_path(void);
extern void wtcache_unpin_search_path(int nestlevel);
extern bool wtcache_run_in_subxact(void (*fn) (void *arg), void *arg, char **message);

/* ---- plans.c ---- */
struct _SPI_plan;
extern struct _SPI_plan *wtcache_kept_plan(const char *sql, int nargs, Oid *argtypes);

/* ---- fence.c ---- */
extern bool wtcache_fence(int64 timeout_ms);
extern uint64 wtcache_fence_ticket_to_serve(WorkerSlot *slot);
extern bool wtcache_fence_waiting(WorkerSlot *slot);
extern void wtcache_fence_confirmed(WorkerSlot *slot, uint64 ticket);
extern void wtcache_fence_repaired(WorkerSlot *slot, uint64 ticket);

/* ---- setaside.c ---- */
#define WTCACHE_HOLD_REASON "its capture triggers are disabled (ALTER TABLE ... DISABLE TRIGGER): changes are not captured until they are enabled again"
extern bool wtcache_queue_can_set_aside(void);
extern void wtcache_hold_table(Oid relid, const char *table_key);
extern bool wtcache_release_table(Oid relid);

/* ---- watch.c ---- */
/* A table's watch configuration, as wtcache.watched holds it. */
typedef struct WatchConfig
{
	int			nkeys;
	int16	   *key_attnums;
	bool		invalidate_mode;
	int64		ttl_ms;			/* 0: no expiry */
	ArrayType  *tags;			/* tag templates as given to watch() */
} WatchConfig;

extern bool wtcache_load_watch(Oid relid, WatchConfig *config);
extern Oid	wtcache_queue_relid(void);
extern Oid	wtcache_owner(void);
extern uint64 wtcache_enqueue_all_rows(Oid relid);
extern uint64 wtcache_resync_table(Oid relid);
extern void wtcache_enqueue_table_removal(Oid relid);
extern void wtcache_drop_row_triggers(Oid relid);
extern void wtcache_create_row_triggers(Oid relid);
extern void wtcache_enable_capture_always(Oid relid);
extern uint64 wtcache_resync_table_or_purge(Oid relid, bool purge_first, char **failure);
extern void wtcache_warn_if_key_unenforced(Oid relid);
extern bool wtcache_key_enforced(Oid relid);
extern bool wtcache_column_is_captured(Oid relid, const char *colname);
extern bool wtcache_changing_triggers;

/* ---- pending.c ---- */
extern void wtcache_pending_shmem_request(void);
extern void wtcache_pending_shmem_startup(void);
extern uint32 wtcache_pending_key_index(Oid dboid, Oid relid, int nvalues,
										const char *const *values, const int *lens);
extern uint32 wtcache_pending_table_index(Oid dboid, Oid relid);
extern uint32 wtcache_pending_changed_index(Oid dboid, Oid relid);
extern uint32 wtcache_pending_tag_index(Oid dboid, const char *tag, int len);
extern bool wtcache_pending_is_zero(uint32 index);
extern bool wtcache_pending_ready(Oid dboid);
extern bool wtcache_pending_clear(uint32 key_index, uint32 table_index);
extern void wtcache_pending_add(uint32 index);
extern void wtcache_pending_release(const uint32 *indexes, int n);
struct QueueRow;
extern int	wtcache_pending_row_indexes(Oid dboid, const struct QueueRow *row, uint32 *out);
extern bool wtcache_pending_rebuild(WorkerSlot *slot, Oid queue, int wait_ms);
extern bool wtcache_pending_settle(void);
extern void wtcache_pending_before_queue_write(void);
extern void wtcache_pending_after_queue_write(void);

/* ---- stats.c ---- */
typedef struct ReadStats
{
	Oid			dboid;			/* hash key: dboid, relid */
	Oid			relid;
	pg_atomic_uint64 hits;		/* served from Redis */
	pg_atomic_uint64 misses;	/* Redis had no value */
	pg_atomic_uint64 fallbacks; /* Redis failed: read the table */
	pg_atomic_uint64 bypasses;	/* change pending, RLS...: read the table */
	pg_atomic_uint64 fills;		/* misses written to Redis */
	pg_atomic_uint64 fills_rejected;	/* fills refused as stale */
	pg_atomic_uint64 stampede_waits;	/* waited for another reader's fill */
	pg_atomic_uint64 table_reads;	/* keys read from the table */
} ReadStats;

extern void wtcache_stats_shmem_request(void);
extern void wtcache_stats_shmem_startup(void);
/* the counters of cached queries (query.c): no table has this OID */
#define WTCACHE_QUERY_STATS_RELID ((Oid) 1)

extern ReadStats *wtcache_read_stats_entry(Oid dboid, Oid relid);
extern bool wtcache_can_see_table(Oid relid, Oid roleid);

/* ---- read.c ---- */
extern text *wtcache_row_key_text(Oid relid, ArrayType *keyarr);

/* ---- query.c ---- */
extern int	wtcache_query_ttl_s;
extern int	wtcache_query_max_kb;
extern char *wtcache_query_safe_functions;
extern bool wtcache_query_safe_functions_check(char **newval, void **extra, GucSource source);

/* ---- ddl.c ---- */
extern void wtcache_install_utility_hook(void);

/* ---- redis.c ---- */
typedef struct WtcRedis WtcRedis;

typedef enum WtcReplyType
{
	WTC_REPLY_STATUS,
	WTC_REPLY_NIL,
	WTC_REPLY_INTEGER,
	WTC_REPLY_STRING,
	WTC_REPLY_ERROR,
	WTC_REPLY_ARRAY
} WtcReplyType;

/* A reply copied into palloc'd memory: hiredis objects never escape redis.c */
typedef struct WtcReply
{
	WtcReplyType type;
	long long	integer;
	char	   *str;
	size_t		len;
	int			nelem;
	struct WtcReply *elem;
} WtcReply;

extern WtcRedis *wtc_redis_connect(const RedisTarget *target, int connect_timeout_ms,
								   int command_timeout_ms, char *err, size_t errlen);
extern bool wtc_redis_load_script(WtcRedis *r, const char *text, char *sha,
								  char *err, size_t errlen);
extern WtcRedisMode wtc_redis_mode(WtcRedis *r);
extern const char *wtc_redis_address(WtcRedis *r);
extern bool wtc_redis_master_moved(WtcRedis *r);
extern int	wtc_redis_key_slot(const char *key, size_t len);
extern int	wtc_redis_node_count(WtcRedis *r);
extern int	wtc_redis_node_of_slot(WtcRedis *r, int slot);
extern uint64 wtc_redis_map_epoch(WtcRedis *r);
extern bool wtc_redis_scan(WtcRedis *r, int node, const char *cursor,
						   const char *pattern, WtcReply *page);
extern void wtc_redis_free(WtcRedis *r);
extern bool wtc_redis_append(WtcRedis *r, int argc, const char **argv, const size_t *lens);
extern bool wtc_redis_append_spanning(WtcRedis *r, int argc, const char **argv, const size_t *lens);
extern bool wtc_redis_flush(WtcRedis *r);
extern bool wtc_redis_read(WtcRedis *r, WtcReply *out);
extern bool wtc_redis_command(WtcRedis *r, WtcReply *out, int argc, const char **argv,
							  const size_t *lens);
extern bool wtc_redis_commandv(WtcRedis *r, WtcReply *out, int argc, ...);
extern const char *wtc_redis_errstr(WtcRedis *r);

/* ---- tls.c ---- */
extern const char *wtc_redis_error_hint(const char *err);

/* ---- push.c ---- */
typedef struct PushItem
{
	char	   *row_key;
	size_t		row_key_len;
	int64		version;
	char	   *payload;		/* NULL: the row is gone, or invalidate mode */
	size_t		payload_len;
	int64		ttl_ms;			/* 0: no expiry */
	char	   *event;			/* JSON published on the events channel if
								 * the change is applied; NULL: none */
	size_t		event_len;
} PushItem;

typedef struct RedisScripts
{
	char		apply_sha[41];
	char		tags_sha[41];
	char		marker_sha[41];
} RedisScripts;

/* Tags to give new stamps, and the event that announces it. */
typedef struct TagBumps
{
	int			ntags;
	char	  **keys;
	size_t	   *lens;
	const char *clock_key;
	char	   *event;			/* NULL: none */
	size_t		event_len;
} TagBumps;

/* How long a tag key lives after its last invalidation: a missing tag key
 * only turns the entries that depend on it into misses (tags.c). */
#define WTCACHE_TAG_TTL_S (7 * 86400)

typedef enum MarkerCheck
{
	MARKER_OK,
	MARKER_LOST,				/* Redis lost data we pushed: resync */
	MARKER_ERROR
} MarkerCheck;

extern bool wtcache_publish_events;
extern bool wtcache_load_scripts(WtcRedis *r, RedisScripts *scripts, char *err, size_t errlen);
typedef enum PushResult
{
	PUSH_OK,
	PUSH_FAILED,				/* connection or Redis error: retry later */
	PUSH_RESEND,				/* a Cluster call spanning slots failed:
								 * send the batch again, now by slot */
	PUSH_MARKER_LOST			/* applied, but Redis had lost data: resync */
} PushResult;

/* Generation markers: the database's, and in a Cluster one per master */
typedef struct MarkerSet
{
	int			n;
	char	  **keys;
	char	  **wal_keys;		/* per marker: where in the database's WAL
								 * history it was last raised (markers.c) */
} MarkerSet;

extern void wtcache_marker_set(WtcRedis *r, const char *dbname, MarkerSet *set);
extern bool wtcache_push_send(WtcRedis *r, const RedisScripts *scripts, PushItem *items,
							  int nitems, const TagBumps *bumps, const MarkerSet *markers,
							  int64 acked, int64 new_version, const char *position,
							  int *ncalls, char *err, size_t errlen);
extern bool wtcache_bump_tags(WtcRedis *r, const RedisScripts *scripts, const TagBumps *bumps,
							  char *err, size_t errlen);
extern PushResult wtcache_push_receive(WtcRedis *r, int ncalls, int nmarkers, int64 *applied,
									   int64 *marker_seen, char *err, size_t errlen);
extern bool wtcache_purge_pattern(WtcRedis *r, const char *pattern, int64 *removed,
								  char *err, size_t errlen);
extern MarkerCheck wtcache_check_markers(WtcRedis *r, const RedisScripts *scripts,
										 const MarkerSet *markers, int64 acked,
										 int64 new_version, const char *position,
										 int64 *seen, char **positions,
										 char *err, size_t errlen);
extern bool wtcache_set_marker(WtcRedis *r, const char *marker_key, const char *wal_key,
							   int64 version, const char *position,
							   char *err, size_t errlen);
extern bool wtcache_set_markers(WtcRedis *r, const MarkerSet *markers, int64 version,
								const char *position, char *err, size_t errlen);

/* ---- worker.c (worker_int.h: its other files) / launcher.c ---- */
extern PGDLLEXPORT void wtcache_worker_main(Datum main_arg);
extern PGDLLEXPORT void wtcache_launcher_main(Datum main_arg);
extern void wtcache_register_launcher(void);

#endif							/* WTCACHE_H */
