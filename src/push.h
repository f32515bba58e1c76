/*-------------------------------------------------------------------------
 * push.h
 *		What these offer the other modules:
 *		push.c: turning a claimed batch into pipelined Redis commands
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_PUSH_H
#define WTCACHE_PUSH_H

#include "wtcache.h"
#include "redis.h"

typedef struct PushItem
{
	char	   *row_key;
	size_t		row_key_len;
	char	   *tomb_key;		/* of a table with a key template, its
								 * companions (keyspace.h); NULL: the row
								 * key and a suffix */
	char	   *lease_key;
	Oid			relid;			/* its table */
	int64		version;
	char	   *payload;		/* NULL: the row is gone, or invalidate mode */
	size_t		payload_len;
	bool		hash;			/* of a hash-format table: apply_hash_script,
								 * which reads "_v" from a hash */
	const struct HashValue *fields; /* with hash: the row's fields, NULL as
									 * payload is */
	int64		ttl_ms;			/* 0: no expiry */
	char	   *event;			/* JSON published on the events channel once
								 * Redis holds the change; NULL: none */
	size_t		event_len;
	bool		held;			/* set by wtcache_push_receive: Redis holds
								 * this version (not a newer one) */
} PushItem;

typedef struct RedisScripts
{
	char		apply_sha[41];
	char		apply_hash_sha[41];
	char		tags_sha[41];
	char		marker_sha[41];
	char		publish_sha[41];
	char		claim_sha[41];	/* key templates' key spaces */
	char		release_sha[41];
	char		purge_rows_sha[41];
} RedisScripts;

/* Tags to give new stamps, and the event that announces it (events.c). */
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

/* wtcache.publish_events */
typedef enum WtcPublishEvents
{
	WTC_PUBLISH_OFF,
	WTC_PUBLISH_ON,				/* when someone subscribes on the master */
	WTC_PUBLISH_ALWAYS			/* also for subscribers on its replicas */
} WtcPublishEvents;

extern int	wtcache_publish_events;
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
	char	  **ack_keys;		/* per marker: what a round of WAIT writes
								 * on its master (replicas.c) */
} MarkerSet;

extern void wtcache_marker_set(WtcRedis *r, const char *dbname, MarkerSet *set);
extern bool wtcache_push_send(WtcRedis *r, const RedisScripts *scripts, PushItem *items,
							  int nitems, const TagBumps *bumps, const MarkerSet *markers,
							  int64 acked, int64 new_version, const char *position,
							  int *ncalls, int **sent_order, char *err, size_t errlen);
extern bool wtcache_bump_tags(WtcRedis *r, const RedisScripts *scripts, const TagBumps *bumps,
							  char *err, size_t errlen);
extern PushResult wtcache_push_receive(WtcRedis *r, PushItem *items, int nitems,
									   const int *sent_order, int ncalls, int nmarkers,
									   int64 *applied, int64 *marker_seen,
									   char *err, size_t errlen);
extern bool wtcache_publish_messages(WtcRedis *r, const RedisScripts *scripts,
									 const char *seq_key, char *const *messages,
									 const size_t *lens, int n, bool skip,
									 char *err, size_t errlen);
extern bool wtcache_purge_pattern(WtcRedis *r, const char *pattern, int64 *removed,
								  char *err, size_t errlen);
struct KeyTemplate;
extern bool wtcache_purge_template(WtcRedis *r, const RedisScripts *scripts,
								   const struct KeyTemplate *t, int nvalues,
								   const char *prefix, int64 *removed,
								   char *err, size_t errlen);
extern bool wtcache_claim_key_space(WtcRedis *r, const RedisScripts *scripts,
									const char *claim_key, const char *owner,
									const char *owner_head, char **holder,
									char *err, size_t errlen);
extern bool wtcache_release_key_space(WtcRedis *r, const RedisScripts *scripts,
									  const char *claim_key, const char *owner_head,
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

#endif							/* WTCACHE_PUSH_H */
