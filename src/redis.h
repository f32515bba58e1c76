/*-------------------------------------------------------------------------
 * redis.h
 *		What these offer the other modules:
 *		redis.c: connections to Redis (one server, Sentinel, Cluster masters)
 *		tls.c: TLS under those connections (OpenSSL), certificate checks
 *
 *		The public side of the transport; redis_conn.h is its private side,
 *		shared by redis.c and cluster.c only, so hiredis stays inside them.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_REDIS_H
#define WTCACHE_REDIS_H

#include "wtcache.h"
#include "settings.h"

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
extern bool wtc_redis_wait_replicas(WtcRedis *r, char *const *keys, int nkeys,
									int numreplicas, int timeout_ms,
									bool (*keep_waiting) (void), int *acked,
									bool *interrupted, char *err, size_t errlen);

extern const char *wtc_redis_error_hint(const char *err);
extern bool wtc_redis_error_is_oom(const char *err);

#endif							/* WTCACHE_REDIS_H */
