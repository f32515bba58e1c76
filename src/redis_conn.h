/*-------------------------------------------------------------------------
 * redis_conn.h
 *		What redis.c (connections, pipelines, Sentinel) and cluster.c
 *		(slot map, routing, redirects) share; no other file includes it,
 *		so hiredis stays inside those two.  TLS (tls.c) sits under them.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_REDIS_CONN_H
#define WTCACHE_REDIS_CONN_H

#include "wtcache.h"
#include "redis.h"
#include "settings.h"

#include <hiredis/hiredis.h>

#include "tls.h"

#define CLUSTER_SLOTS 16384
#define MAX_NODES 64
#define MAX_REDIRECTS 16
#define MAX_SCRIPTS 16

typedef struct RedisNode
{
	char		host[256];
	int			port;
	redisContext *ctx;			/* NULL until first used */
	WtcTlsConn *tls;			/* its TLS session (rediss://), or NULL */
	char		err[256];		/* why TLS failed (hiredis's errstr is short) */
	int			outstanding;	/* replies sent for and not yet read */
	redisReply **held;			/* replies read ahead, oldest first */
	int			heldhead;
	int			nheld;
	int			heldcap;
} RedisNode;

/* Cluster: a command whose reply the caller has not read yet */
typedef struct PendingCommand
{
	int			node;
	int			slot;			/* -1: no key */
	char	   *cmd;			/* RESP text, for a redirect */
	int			len;
	bool		spanning;		/* touches keys of other slots than its
								 * first: an ASK is not followed */
} PendingCommand;

struct WtcRedis
{
	RedisTarget target;
	WtcTls	   *tls;			/* rediss://: shared by every connection */
	int			connect_ms;
	int			command_ms;
	bool		broken;			/* a connection failed: free and reconnect */
	char		err[256];
	char		address[300];
	int			nnodes;
	RedisNode	nodes[MAX_NODES];
	/* Cluster only */
	int16		slot_node[CLUSTER_SLOTS];	/* node index, -1 = not served */
	int			masters[MAX_NODES];
	int			nmasters;
	bool		map_stale;
	uint64		map_epoch;		/* counts slot maps learned */
	PendingCommand *pend;
	int			pendhead;
	int			npend;
	int			pendcap;
	const char *scripts[MAX_SCRIPTS];	/* texts, loaded into every node */
	int			nscripts;
};

extern bool wtc_fail(WtcRedis *r, const char *fmt,...) pg_attribute_printf(2, 3);
extern bool wtc_node_failed(WtcRedis *r, RedisNode *n);
extern int	wtc_node_index(WtcRedis *r, const char *host, int port);
extern bool wtc_node_connect(WtcRedis *r, int idx);
extern redisReply *wtc_node_take_reply(WtcRedis *r, RedisNode *n);
extern redisReply *wtc_node_sync(WtcRedis *r, int idx, bool asking, const char *cmd, size_t len);
extern bool wtc_node_load_script(WtcRedis *r, int idx, const char *text);
extern const char *wtc_reply_text(redisReply *reply);
extern const char *wtc_tls_note(WtcRedis *r);

/* cluster.c */
extern int	wtc_command_slot(int argc, const char **argv, const size_t *lens);
extern bool wtc_cluster_refresh(WtcRedis *r);
extern bool wtc_cluster_refresh_if_stale(WtcRedis *r);
extern redisReply *wtc_follow_redirects(WtcRedis *r, PendingCommand *p, redisReply *raw);

#endif
