/*-------------------------------------------------------------------------
 * settings.h
 *		What these offer the other modules:
 *		settings.c: wtcache.* settings and Redis URL parsing
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_SETTINGS_H
#define WTCACHE_SETTINGS_H

#include "wtcache.h"

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
extern int	wtcache_audit_rate;
extern int	wtcache_bulk_rate;
extern int	wtcache_max_value_kb;
extern int64 wtcache_max_value_bytes;	/* the setting, less room for a script's
										 * other arguments */

/* Replica acknowledgements (replicas.c): wtcache.redis_wait_* */
typedef enum WtcWaitTimeoutAction
{
	WTC_WAIT_RETRY,				/* the batch stays queued, sent again */
	WTC_WAIT_ACCEPT				/* delivered anyway, counted and logged */
} WtcWaitTimeoutAction;

extern int	wtcache_redis_wait_replicas;
extern int	wtcache_redis_wait_timeout_ms;
extern int	wtcache_redis_wait_timeout_action;

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

#endif							/* WTCACHE_SETTINGS_H */
