/*-------------------------------------------------------------------------
 * redis.c
 *		The one file that talks to hiredis: one Redis server, the master
 *		that Sentinels name, or a Redis Cluster.
 *
 * hiredis allocates with malloc and is not written for longjmp: nothing in
 * here calls ereport while hiredis state is in flight.  Replies are copied
 * into palloc'd WtcReply trees and the hiredis objects freed at once.  Every
 * connection has a connect timeout and a per-reply timeout; a connection
 * that failed is never reused: callers free the whole WtcRedis and connect
 * again.
 *
 * Sentinel: the master's address comes from the first Sentinel that
 * answers, and the server must say it is a master (ROLE) before anything
 * is written to it; wtc_redis_master_moved() lets the worker notice a
 * failover while it is idle.
 *
 * Cluster: the packaged hiredis (0.14) has no cluster support, so routing
 * is done here.  The slot map comes from CLUSTER SLOTS; each command goes
 * to the master of its first key's slot (callers keep every multi-key
 * command and script inside one slot, see push.c).  Pipelines stay
 * pipelines: commands are appended to each node's connection and the
 * replies read back in the order the caller appended them.  Each command
 * is kept, formatted, until its reply is read, so a MOVED, ASK, TRYAGAIN
 * or NOSCRIPT answer is followed transparently: the replies already on
 * their way from the target node are read ahead and held, the command is
 * sent again there, and the map is refreshed at the next quiet moment.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include <stdarg.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "miscadmin.h"

#define CLUSTER_SLOTS 16384
#define MAX_NODES 64
#define MAX_REDIRECTS 16
#define MAX_SCRIPTS 8

typedef struct RedisNode
{
	char		host[256];
	int			port;
	redisContext *ctx;			/* NULL until first used */
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
} PendingCommand;

struct WtcRedis
{
	RedisTarget target;
	int			connect_ms;
	int			command_ms;
	bool		broken;			/* a connection failed: free and reconnect */
	char		err[256];
	char		identity[48];	/* run_id (SINGLE, SENTINEL) or "cluster" */
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

static struct timeval
ms_to_timeval(int ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return tv;
}

static bool
fail(WtcRedis *r, const char *fmt,...) pg_attribute_printf(2, 3);

static bool
fail(WtcRedis *r, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return false;
}

/* A node's connection failed: keep its message, never use it again. */
static bool
node_failed(WtcRedis *r, RedisNode *n)
{
	r->broken = true;
	if (r->target.mode == WTC_REDIS_CLUSTER)
		return fail(r, "%s:%d: %s", n->host, n->port,
					n->ctx && n->ctx->err ? n->ctx->errstr : "connection lost");
	return fail(r, "%s", n->ctx && n->ctx->err ? n->ctx->errstr : "connection lost");
}

const char *
wtc_redis_errstr(WtcRedis *r)
{
	return r->err;
}

WtcRedisMode
wtc_redis_mode(WtcRedis *r)
{
	return r->target.mode;
}

const char *
wtc_redis_identity(WtcRedis *r)
{
	return r->identity;
}

const char *
wtc_redis_address(WtcRedis *r)
{
	return r->address;
}

/* ---------------------------------------------------------------------
 * Cluster key slots: CRC16 (XMODEM) of the hash tag, modulo 16384
 * ---------------------------------------------------------------------
 */
static uint16
crc16_xmodem(const char *buf, size_t len)
{
	uint16		crc = 0;

	for (size_t i = 0; i < len; i++)
	{
		crc ^= (uint16) ((unsigned char) buf[i]) << 8;
		for (int bit = 0; bit < 8; bit++)
			crc = (crc & 0x8000) ? (uint16) ((crc << 1) ^ 0x1021) : (uint16) (crc << 1);
	}
	return crc;
}

/* The slot of a key: of its first non-empty {...}, as Redis Cluster does. */
int
wtc_redis_key_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len);

	if (open != NULL)
	{
		const char *after = open + 1;
		const char *close = memchr(after, '}', len - (after - key));

		if (close != NULL && close > after)
			return crc16_xmodem(after, close - after) & (CLUSTER_SLOTS - 1);
	}
	return crc16_xmodem(key, len) & (CLUSTER_SLOTS - 1);
}

/* The slot a command's keys live in, or -1 when it has none. */
static int
command_slot(int argc, const char **argv, const size_t *lens)
{
	if (argc < 2)
		return -1;
	if (pg_strcasecmp(argv[0], "EVALSHA") == 0 || pg_strcasecmp(argv[0], "EVAL") == 0)
	{
		if (argc < 4 || atoi(argv[2]) <= 0)
			return -1;
		return wtc_redis_key_slot(argv[3], lens[3]);
	}
	if (pg_strcasecmp(argv[0], "PUBLISH") == 0 || pg_strcasecmp(argv[0], "SCAN") == 0 ||
		pg_strcasecmp(argv[0], "SCRIPT") == 0 || pg_strcasecmp(argv[0], "INFO") == 0 ||
		pg_strcasecmp(argv[0], "CLUSTER") == 0 || pg_strcasecmp(argv[0], "PUBSUB") == 0)
		return -1;
	return wtc_redis_key_slot(argv[1], lens[1]);
}

/* ---------------------------------------------------------------------
 * Nodes
 * ---------------------------------------------------------------------
 */

static int
node_index(WtcRedis *r, const char *host, int port)
{
	for (int i = 0; i < r->nnodes; i++)
		if (r->nodes[i].port == port && strcmp(r->nodes[i].host, host) == 0)
			return i;
	if (r->nnodes >= MAX_NODES || strlen(host) >= sizeof(r->nodes[0].host))
		return -1;
	strlcpy(r->nodes[r->nnodes].host, host, sizeof(r->nodes[0].host));
	r->nodes[r->nnodes].port = port;
	return r->nnodes++;
}

/* Read one reply of a node: a held one first, they came earlier. */
static redisReply *
node_take_reply(WtcRedis *r, RedisNode *n)
{
	void	   *raw = NULL;

	if (n->nheld > 0)
	{
		raw = n->held[n->heldhead++];
		if (--n->nheld == 0)
			n->heldhead = 0;
		return raw;
	}
	if (n->ctx == NULL || redisGetReply(n->ctx, &raw) != REDIS_OK || raw == NULL)
	{
		node_failed(r, n);
		return NULL;
	}
	n->outstanding--;
	return raw;
}

/* Read every reply on its way from a node, so it can be used synchronously. */
static bool
node_read_ahead(WtcRedis *r, RedisNode *n)
{
	while (n->outstanding > 0)
	{
		void	   *raw = NULL;

		if (n->heldhead + n->nheld >= n->heldcap)
		{
			int			cap = Max(16, n->heldcap * 2);
			redisReply **held;

			if (n->heldhead > 0)
			{
				memmove(n->held, n->held + n->heldhead, sizeof(redisReply *) * n->nheld);
				n->heldhead = 0;
			}
			if (n->nheld < n->heldcap)
				continue;
			held = realloc(n->held, sizeof(redisReply *) * cap);
			if (held == NULL)
				return fail(r, "out of memory");
			n->held = held;
			n->heldcap = cap;
		}
		if (redisGetReply(n->ctx, &raw) != REDIS_OK || raw == NULL)
			return node_failed(r, n);
		n->outstanding--;
		n->held[n->heldhead + n->nheld++] = raw;
	}
	return true;
}

/* One command on one node, now; the node's earlier replies are held. */
static redisReply *
node_sync(WtcRedis *r, int idx, bool asking, const char *cmd, size_t len)
{
	RedisNode  *n = &r->nodes[idx];
	void	   *raw = NULL;

	if (!node_read_ahead(r, n))
		return NULL;
	if ((asking && redisAppendCommand(n->ctx, "ASKING") != REDIS_OK) ||
		redisAppendFormattedCommand(n->ctx, cmd, len) != REDIS_OK)
	{
		node_failed(r, n);
		return NULL;
	}
	if (asking)
	{
		if (redisGetReply(n->ctx, &raw) != REDIS_OK || raw == NULL)
		{
			node_failed(r, n);
			return NULL;
		}
		freeReplyObject(raw);
		raw = NULL;
	}
	if (redisGetReply(n->ctx, &raw) != REDIS_OK || raw == NULL)
	{
		node_failed(r, n);
		return NULL;
	}
	return raw;
}

static redisReply *
node_sync_argv(WtcRedis *r, int idx, int argc, const char **argv, const size_t *lens)
{
	char	   *cmd = NULL;
	int			len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	redisReply *reply;

	if (len < 0)
	{
		fail(r, "out of memory");
		return NULL;
	}
	reply = node_sync(r, idx, false, cmd, len);
	redisFreeCommand(cmd);
	return reply;
}

/* A short status or error message of a reply, for err. */
static const char *
reply_text(redisReply *reply)
{
	if (reply->type == REDIS_REPLY_ERROR || reply->type == REDIS_REPLY_STATUS)
		return reply->str;
	return "unexpected reply";
}

static bool
node_load_script(WtcRedis *r, int idx, const char *text)
{
	const char *argv[3] = {"SCRIPT", "LOAD", text};
	size_t		lens[3] = {6, 4, strlen(text)};
	redisReply *reply = node_sync_argv(r, idx, 3, argv, lens);
	bool		ok;

	if (reply == NULL)
		return fail(r, "SCRIPT LOAD failed: %s", r->err);
	ok = reply->type == REDIS_REPLY_STRING && reply->len == 40;
	if (!ok)
		fail(r, "SCRIPT LOAD failed: %s", reply_text(reply));
	freeReplyObject(reply);
	return ok;
}

/* Connect (once), log in, select the database, load the known scripts. */
static bool
node_connect(WtcRedis *r, int idx)
{
	RedisNode  *n = &r->nodes[idx];
	const RedisAddress *auth = &r->target.addr;
	redisReply *reply;

	if (n->ctx != NULL)
		return !n->ctx->err || node_failed(r, n);

	n->ctx = redisConnectWithTimeout(n->host, n->port, ms_to_timeval(r->connect_ms));
	if (n->ctx == NULL)
		return fail(r, "cannot allocate a Redis context");
	if (n->ctx->err ||
		redisSetTimeout(n->ctx, ms_to_timeval(r->command_ms)) != REDIS_OK ||
		redisEnableKeepAlive(n->ctx) != REDIS_OK)
		return node_failed(r, n);

	if (auth->password[0])
	{
		if (auth->user[0])
			reply = redisCommand(n->ctx, "AUTH %s %s", auth->user, auth->password);
		else
			reply = redisCommand(n->ctx, "AUTH %s", auth->password);
		if (reply == NULL)
			return node_failed(r, n);
		if (reply->type == REDIS_REPLY_ERROR)
		{
			/* the reply names no password; it is safe to show */
			fail(r, "authentication failed: %s", reply->str);
			freeReplyObject(reply);
			r->broken = true;
			return false;
		}
		freeReplyObject(reply);
	}
	if (auth->db != 0)
	{
		reply = redisCommand(n->ctx, "SELECT %d", auth->db);
		if (reply == NULL)
			return node_failed(r, n);
		if (reply->type == REDIS_REPLY_ERROR)
		{
			fail(r, "SELECT %d failed: %s", auth->db, reply->str);
			freeReplyObject(reply);
			r->broken = true;
			return false;
		}
		freeReplyObject(reply);
	}
	for (int i = 0; i < r->nscripts; i++)
		if (!node_load_script(r, idx, r->scripts[i]))
			return false;
	return true;
}

/* ---------------------------------------------------------------------
 * Cluster slot map
 * ---------------------------------------------------------------------
 */

/* Ask one node for the slot map; false (map unchanged) if it cannot say. */
static bool
cluster_map_from(WtcRedis *r, int asked)
{
	redisReply *reply;
	int16	   *map;
	bool		ok = true;

	if (!node_connect(r, asked))
		return false;
	reply = node_sync(r, asked, false, "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", 28);
	if (reply == NULL)
		return false;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0)
	{
		fail(r, "CLUSTER SLOTS at %s:%d: %s", r->nodes[asked].host, r->nodes[asked].port,
			 reply->type == REDIS_REPLY_ARRAY ? "no slots are served" : reply_text(reply));
		freeReplyObject(reply);
		return false;
	}
	map = malloc(sizeof(int16) * CLUSTER_SLOTS);
	if (map == NULL)
	{
		freeReplyObject(reply);
		return fail(r, "out of memory");
	}
	for (int s = 0; s < CLUSTER_SLOTS; s++)
		map[s] = -1;
	for (size_t i = 0; i < reply->elements && ok; i++)
	{
		redisReply *range = reply->element[i];
		redisReply *master;
		const char *host;
		int			idx;

		if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
			range->element[0]->type != REDIS_REPLY_INTEGER ||
			range->element[1]->type != REDIS_REPLY_INTEGER ||
			range->element[2]->type != REDIS_REPLY_ARRAY ||
			range->element[2]->elements < 2 ||
			range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
			range->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
		{
			ok = fail(r, "CLUSTER SLOTS at %s:%d: a reply wtcache cannot read",
					  r->nodes[asked].host, r->nodes[asked].port);
			break;
		}
		master = range->element[2];
		/* an empty or unknown endpoint means "where you asked" */
		host = master->element[0]->str;
		if (host[0] == '\0' || strcmp(host, "?") == 0)
			host = r->nodes[asked].host;
		idx = node_index(r, host, (int) master->element[1]->integer);
		if (idx < 0)
		{
			ok = fail(r, "the cluster has more than %d nodes", MAX_NODES);
			break;
		}
		for (long long s = range->element[0]->integer;
			 s <= range->element[1]->integer && s < CLUSTER_SLOTS; s++)
			if (s >= 0)
				map[s] = (int16) idx;
	}
	freeReplyObject(reply);
	if (ok)
	{
		memcpy(r->slot_node, map, sizeof(int16) * CLUSTER_SLOTS);
		r->nmasters = 0;
		for (int s = 0; s < CLUSTER_SLOTS; s++)
		{
			bool		known = false;

			if (map[s] < 0)
				continue;
			for (int m = 0; m < r->nmasters && !known; m++)
				known = r->masters[m] == map[s];
			if (!known)
				r->masters[r->nmasters++] = map[s];
		}
		r->map_stale = false;
		r->map_epoch++;
		snprintf(r->address, sizeof(r->address), "cluster of %d masters (seed %s:%d)",
				 r->nmasters, r->target.seeds[0].host, r->target.seeds[0].port);
	}
	free(map);
	return ok;
}

/* The map from a master we know, else from a seed. */
static bool
cluster_refresh(WtcRedis *r)
{
	for (int m = 0; m < r->nmasters; m++)
		if (r->nodes[r->masters[m]].ctx != NULL && !r->nodes[r->masters[m]].ctx->err &&
			cluster_map_from(r, r->masters[m]))
			return true;
	for (int i = 0; i < r->target.nseeds; i++)
	{
		int			idx = node_index(r, r->target.seeds[i].host, r->target.seeds[i].port);

		if (idx < 0)
			break;
		/* a seed that is down is no reason to give up on the next */
		if (r->nodes[idx].ctx != NULL && r->nodes[idx].ctx->err)
			continue;
		r->broken = false;
		if (cluster_map_from(r, idx))
			return true;
	}
	r->broken = true;
	return false;
}

/* ---------------------------------------------------------------------
 * Sentinel
 * ---------------------------------------------------------------------
 */

/* Ask the Sentinels, in order, where the master is. */
static bool
sentinel_master(WtcRedis *r, RedisHostPort *master)
{
	for (int i = 0; i < r->target.nseeds; i++)
	{
		const RedisHostPort *s = &r->target.seeds[i];
		redisContext *ctx = redisConnectWithTimeout(s->host, s->port, ms_to_timeval(r->connect_ms));
		redisReply *reply = NULL;

		if (ctx == NULL || ctx->err ||
			redisSetTimeout(ctx, ms_to_timeval(r->command_ms)) != REDIS_OK)
		{
			fail(r, "Sentinel %s:%d: %s", s->host, s->port, ctx ? ctx->errstr : "cannot allocate a context");
			if (ctx)
				redisFree(ctx);
			continue;
		}
		reply = redisCommand(ctx, "SENTINEL get-master-addr-by-name %s", r->target.master_name);
		if (reply == NULL)
			fail(r, "Sentinel %s:%d: %s", s->host, s->port, ctx->errstr);
		else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
				 reply->element[0]->type == REDIS_REPLY_STRING &&
				 reply->element[1]->type == REDIS_REPLY_STRING &&
				 reply->element[0]->len < sizeof(master->host))
		{
			strlcpy(master->host, reply->element[0]->str, sizeof(master->host));
			master->port = atoi(reply->element[1]->str);
			freeReplyObject(reply);
			redisFree(ctx);
			return true;
		}
		else
			fail(r, "Sentinel %s:%d does not know master \"%s\"%s%s", s->host, s->port,
				 r->target.master_name, reply->type == REDIS_REPLY_ERROR ? ": " : "",
				 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
		if (reply)
			freeReplyObject(reply);
		redisFree(ctx);
	}
	return false;
}

/* Sentinel mode: has the master moved since we connected?  False if unsure. */
bool
wtc_redis_master_moved(WtcRedis *r)
{
	RedisHostPort master;
	char		saved[sizeof(r->err)];
	bool		known;

	if (r->target.mode != WTC_REDIS_SENTINEL)
		return false;
	strlcpy(saved, r->err, sizeof(saved));
	known = sentinel_master(r, &master);
	strlcpy(r->err, saved, sizeof(r->err));
	return known && (master.port != r->nodes[0].port || strcmp(master.host, r->nodes[0].host) != 0);
}

/* ---------------------------------------------------------------------
 * Connect and free
 * ---------------------------------------------------------------------
 */

/* The server's run_id: it changes when Redis restarts or another takes over. */
static void
read_identity(WtcRedis *r)
{
	redisReply *reply = redisCommand(r->nodes[0].ctx, "INFO server");

	r->identity[0] = '\0';
	if (reply != NULL && reply->type == REDIS_REPLY_STRING)
	{
		const char *id = strstr(reply->str, "run_id:");

		if (id != NULL)
		{
			size_t		len = strcspn(id + 7, "\r\n");

			if (len < sizeof(r->identity))
			{
				memcpy(r->identity, id + 7, len);
				r->identity[len] = '\0';
			}
		}
	}
	if (reply)
		freeReplyObject(reply);
}

void
wtc_redis_free(WtcRedis *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->nnodes; i++)
	{
		RedisNode  *n = &r->nodes[i];

		for (int h = 0; h < n->nheld; h++)
			freeReplyObject(n->held[n->heldhead + h]);
		free(n->held);
		if (n->ctx)
			redisFree(n->ctx);
	}
	for (int p = 0; p < r->npend; p++)
		redisFreeCommand(r->pend[r->pendhead + p].cmd);
	free(r->pend);
	free(r);
}

/*
 * Connect, authenticate and select the database.  On failure returns NULL
 * with a message in err that never contains the password.
 */
WtcRedis *
wtc_redis_connect(const RedisTarget *target, int connect_timeout_ms,
				  int command_timeout_ms, char *err, size_t errlen)
{
	WtcRedis   *r = calloc(1, sizeof(WtcRedis));

	if (r == NULL)
	{
		strlcpy(err, "out of memory", errlen);
		return NULL;
	}
	r->target = *target;
	r->connect_ms = connect_timeout_ms;
	r->command_ms = command_timeout_ms;

	switch (target->mode)
	{
		case WTC_REDIS_SINGLE:
			r->nnodes = 1;
			strlcpy(r->nodes[0].host, target->addr.host, sizeof(r->nodes[0].host));
			r->nodes[0].port = target->addr.port;
			if (!node_connect(r, 0))
				break;
			wtcache_describe_address(&target->addr, r->address, sizeof(r->address));
			read_identity(r);
			return r;

		case WTC_REDIS_SENTINEL:
			{
				RedisHostPort master;
				redisReply *role;
				bool		is_master;

				if (!sentinel_master(r, &master))
					break;
				r->nnodes = 1;
				r->nodes[0] = (RedisNode) {.port = master.port};
				strlcpy(r->nodes[0].host, master.host, sizeof(r->nodes[0].host));
				if (!node_connect(r, 0))
					break;
				/* a Sentinel can name a master that has just been demoted */
				role = redisCommand(r->nodes[0].ctx, "ROLE");
				if (role == NULL)
				{
					node_failed(r, &r->nodes[0]);
					break;
				}
				is_master = role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
					role->element[0]->type == REDIS_REPLY_STRING &&
					strcmp(role->element[0]->str, "master") == 0;
				freeReplyObject(role);
				if (!is_master)
				{
					fail(r, "Sentinel named %s:%d as master \"%s\", but it is not a master (failover in progress)",
						 master.host, master.port, target->master_name);
					break;
				}
				snprintf(r->address, sizeof(r->address), "%s:%d (master \"%s\")",
						 master.host, master.port, target->master_name);
				read_identity(r);
				return r;
			}

		case WTC_REDIS_CLUSTER:
			for (int s = 0; s < CLUSTER_SLOTS; s++)
				r->slot_node[s] = -1;
			if (!cluster_refresh(r))
				break;
			r->broken = false;
			strlcpy(r->identity, "cluster", sizeof(r->identity));
			for (int m = 0; m < r->nmasters; m++)
				if (!node_connect(r, r->masters[m]))
					goto failed;
			return r;
	}
failed:
	strlcpy(err, r->err, errlen);
	wtc_redis_free(r);
	return NULL;
}

/*
 * Load a script into every node (and into nodes met later).  text must
 * stay valid as long as r: scripts are static strings.
 */
bool
wtc_redis_load_script(WtcRedis *r, const char *text, char *sha, char *err, size_t errlen)
{
	bool		known = false;
	const char *argv[3] = {"SCRIPT", "LOAD", text};
	size_t		lens[3] = {6, 4, strlen(text)};
	redisReply *reply;

	for (int i = 0; i < r->nscripts && !known; i++)
		known = r->scripts[i] == text;
	if (!known && r->nscripts < MAX_SCRIPTS)
		r->scripts[r->nscripts++] = text;

	for (int i = 0; i < r->nnodes; i++)
	{
		if (r->nodes[i].ctx == NULL)
			continue;
		reply = node_sync_argv(r, i, 3, argv, lens);
		if (reply == NULL)
		{
			snprintf(err, errlen, "SCRIPT LOAD failed: %s", r->err);
			return false;
		}
		if (reply->type != REDIS_REPLY_STRING || reply->len != 40)
		{
			snprintf(err, errlen, "SCRIPT LOAD failed: %s", reply_text(reply));
			freeReplyObject(reply);
			return false;
		}
		memcpy(sha, reply->str, 40);
		sha[40] = '\0';
		freeReplyObject(reply);
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Commands
 * ---------------------------------------------------------------------
 */

/* Copy a hiredis reply into palloc'd memory; frees nothing. */
static pg_noinline void
copy_reply(redisReply *src, WtcReply *dst)
{
	memset(dst, 0, sizeof(*dst));
	switch (src->type)
	{
		case REDIS_REPLY_STATUS:
		case REDIS_REPLY_STRING:
		case REDIS_REPLY_ERROR:
			dst->type = src->type == REDIS_REPLY_STATUS ? WTC_REPLY_STATUS :
				src->type == REDIS_REPLY_STRING ? WTC_REPLY_STRING : WTC_REPLY_ERROR;
			dst->str = palloc(src->len + 1);
			memcpy(dst->str, src->str, src->len);
			dst->str[src->len] = '\0';
			dst->len = src->len;
			break;
		case REDIS_REPLY_INTEGER:
			dst->type = WTC_REPLY_INTEGER;
			dst->integer = src->integer;
			break;
		case REDIS_REPLY_ARRAY:
			dst->type = WTC_REPLY_ARRAY;
			dst->nelem = (int) src->elements;
			dst->elem = palloc0(sizeof(WtcReply) * Max(dst->nelem, 1));
			for (int i = 0; i < dst->nelem; i++)
				copy_reply(src->element[i], &dst->elem[i]);
			break;
		default:
			dst->type = WTC_REPLY_NIL;
			break;
	}
}

/* Copy then free, also when palloc fails. */
static pg_noinline void
hand_over(redisReply *raw, WtcReply *out)
{
	redisReply *volatile held = raw;

	PG_TRY();
	{
		copy_reply(held, out);
	}
	PG_CATCH();
	{
		freeReplyObject(held);
		PG_RE_THROW();
	}
	PG_END_TRY();
	freeReplyObject(held);
}

bool
wtc_redis_append(WtcRedis *r, int argc, const char **argv, const size_t *lens)
{
	int			slot;
	int			idx;
	char	   *cmd = NULL;
	int			len;
	PendingCommand *p;

	if (r->broken)
		return false;
	if (r->target.mode != WTC_REDIS_CLUSTER)
		return redisAppendCommandArgv(r->nodes[0].ctx, argc, argv, lens) == REDIS_OK ||
			node_failed(r, &r->nodes[0]);

	/* a redirect told us the map changed: learn it before the next pipeline */
	if (r->map_stale && r->npend == 0 && !cluster_refresh(r))
		return false;
	slot = command_slot(argc, argv, lens);
	idx = slot >= 0 ? r->slot_node[slot] : (r->nmasters > 0 ? r->masters[0] : -1);
	if (idx < 0)
		return fail(r, "no cluster node serves slot %d", slot);
	if (!node_connect(r, idx))
		return false;

	if (r->pendhead + r->npend >= r->pendcap)
	{
		if (r->pendhead > 0)
		{
			memmove(r->pend, r->pend + r->pendhead, sizeof(PendingCommand) * r->npend);
			r->pendhead = 0;
		}
		if (r->npend >= r->pendcap)
		{
			int			cap = Max(64, r->pendcap * 2);
			PendingCommand *grown = realloc(r->pend, sizeof(PendingCommand) * cap);

			if (grown == NULL)
				return fail(r, "out of memory");
			r->pend = grown;
			r->pendcap = cap;
		}
	}
	len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0)
		return fail(r, "out of memory");
	if (redisAppendFormattedCommand(r->nodes[idx].ctx, cmd, len) != REDIS_OK)
	{
		redisFreeCommand(cmd);
		return node_failed(r, &r->nodes[idx]);
	}
	p = &r->pend[r->pendhead + r->npend++];
	p->node = idx;
	p->slot = slot;
	p->cmd = cmd;
	p->len = len;
	r->nodes[idx].outstanding++;
	return true;
}

/* Write everything appended so far; replies are read later. */
bool
wtc_redis_flush(WtcRedis *r)
{
	if (r->broken)
		return false;
	for (int i = 0; i < r->nnodes; i++)
	{
		RedisNode  *n = &r->nodes[i];
		int			done = 0;

		if (n->ctx == NULL)
			continue;
		while (!done)
			if (redisBufferWrite(n->ctx, &done) != REDIS_OK)
				return node_failed(r, n);
	}
	return true;
}

static bool
error_is(redisReply *reply, const char *prefix)
{
	return reply->type == REDIS_REPLY_ERROR &&
		strncmp(reply->str, prefix, strlen(prefix)) == 0;
}

/* "MOVED 3999 127.0.0.1:6381": the node index of the address, or -1. */
static int
redirect_target(WtcRedis *r, const char *msg, int *slot)
{
	const char *sp = strchr(msg, ' ');
	const char *addr;
	const char *colon;
	char		host[256];

	if (sp == NULL)
		return -1;
	*slot = atoi(sp + 1);
	addr = strchr(sp + 1, ' ');
	if (addr == NULL || *slot < 0 || *slot >= CLUSTER_SLOTS)
		return -1;
	addr++;
	colon = strrchr(addr, ':');
	if (colon == NULL || (size_t) (colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, colon - addr);
	host[colon - addr] = '\0';
	return node_index(r, host, atoi(colon + 1));
}

/*
 * Follow MOVED, ASK, TRYAGAIN and NOSCRIPT answers to a pipelined command
 * until a real reply comes back.  TRYAGAIN (a slot half migrated) is
 * retried for at most the command timeout.
 */
static redisReply *
follow_redirects(WtcRedis *r, PendingCommand *p, redisReply *raw)
{
	int			tries = 0;
	long		waited_ms = 0;

	while (raw->type == REDIS_REPLY_ERROR && tries++ < MAX_REDIRECTS)
	{
		int			target = p->node;
		bool		asking = false;

		if (error_is(raw, "MOVED ") || error_is(raw, "ASK "))
		{
			int			slot;

			asking = error_is(raw, "ASK ");
			target = redirect_target(r, raw->str, &slot);
			if (target < 0)
				break;
			if (!asking)
			{
				r->slot_node[slot] = (int16) target;
				r->map_stale = true;
			}
		}
		else if (error_is(raw, "TRYAGAIN"))
		{
			long		pause_ms = Min(100, 5L << Min(tries, 5));

			if (waited_ms + pause_ms > r->command_ms)
				break;
			pg_usleep(pause_ms * 1000L);
			waited_ms += pause_ms;
			tries--;			/* bounded by time, not count */
			if (p->slot >= 0 && r->slot_node[p->slot] >= 0)
				target = r->slot_node[p->slot];
		}
		else if (error_is(raw, "NOSCRIPT"))
		{
			/* a replica promoted, or a node restarted: it lacks our scripts */
			for (int i = 0; i < r->nscripts; i++)
				if (!node_load_script(r, p->node, r->scripts[i]))
				{
					freeReplyObject(raw);
					return NULL;
				}
		}
		else
			break;

		freeReplyObject(raw);
		if (!node_connect(r, target))
			return NULL;
		raw = node_sync(r, target, asking, p->cmd, p->len);
		if (raw == NULL)
			return NULL;
		p->node = target;
	}
	return raw;
}

bool
wtc_redis_read(WtcRedis *r, WtcReply *out)
{
	PendingCommand *p;
	redisReply *raw;

	if (r->broken)
		return false;
	if (r->target.mode != WTC_REDIS_CLUSTER)
	{
		void	   *reply = NULL;

		if (redisGetReply(r->nodes[0].ctx, &reply) != REDIS_OK || reply == NULL)
			return node_failed(r, &r->nodes[0]);
		hand_over(reply, out);
		return true;
	}

	if (r->npend == 0)
		return fail(r, "no reply is expected");
	p = &r->pend[r->pendhead];
	raw = node_take_reply(r, &r->nodes[p->node]);
	if (raw != NULL && raw->type == REDIS_REPLY_ERROR)
		raw = follow_redirects(r, p, raw);
	redisFreeCommand(p->cmd);
	r->pendhead++;
	if (--r->npend == 0)
		r->pendhead = 0;
	if (raw == NULL)
	{
		r->broken = true;
		return false;
	}
	hand_over(raw, out);
	return true;
}

bool
wtc_redis_command(WtcRedis *r, WtcReply *out, int argc, const char **argv,
				  const size_t *lens)
{
	return wtc_redis_append(r, argc, argv, lens) && wtc_redis_flush(r) &&
		wtc_redis_read(r, out);
}

/* Convenience for commands made of C strings only (no row data). */
bool
wtc_redis_commandv(WtcRedis *r, WtcReply *out, int argc,...)
{
	const char *argv[16];
	size_t		lens[16];
	va_list		ap;

	Assert(argc <= 16);
	va_start(ap, argc);
	for (int i = 0; i < argc; i++)
	{
		argv[i] = va_arg(ap, const char *);
		lens[i] = strlen(argv[i]);
	}
	va_end(ap);
	return wtc_redis_command(r, out, argc, argv, lens);
}

/* Masters to visit one by one (SCAN): 1 outside a Cluster. */
int
wtc_redis_node_count(WtcRedis *r)
{
	return r->target.mode == WTC_REDIS_CLUSTER ? r->nmasters : 1;
}

/* A command on the i-th master, whatever keys it names. */
static bool
node_command(WtcRedis *r, int node, WtcReply *out, int argc,
			 const char **argv, const size_t *lens)
{
	redisReply *raw;
	int			idx;

	if (r->target.mode != WTC_REDIS_CLUSTER)
		return wtc_redis_command(r, out, argc, argv, lens);
	if (r->broken || node < 0 || node >= r->nmasters)
		return fail(r, "no such cluster node");
	idx = r->masters[node];
	if (!node_connect(r, idx))
		return false;
	raw = node_sync_argv(r, idx, argc, argv, lens);
	if (raw == NULL)
		return false;
	hand_over(raw, out);
	return true;
}

/* One page of SCAN ... MATCH pattern on the i-th master (0 outside a Cluster). */
bool
wtc_redis_scan(WtcRedis *r, int node, const char *cursor, const char *pattern,
			   WtcReply *page)
{
	const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
	size_t		lens[6];

	for (int i = 0; i < 6; i++)
		lens[i] = strlen(argv[i]);
	return node_command(r, node, page, 6, argv, lens);
}

/* Cluster: which master (0 .. node_count - 1) serves slot; -1 if none, or outside a Cluster. */
int
wtc_redis_node_of_slot(WtcRedis *r, int slot)
{
	if (r->target.mode != WTC_REDIS_CLUSTER || slot < 0 || slot >= CLUSTER_SLOTS ||
		r->slot_node[slot] < 0)
		return -1;
	for (int m = 0; m < r->nmasters; m++)
		if (r->masters[m] == r->slot_node[slot])
			return m;
	return -1;
}

/*
 * Cluster: learn the slot map again if a redirect said it changed, at a
 * moment without replies on their way.  Returns the map's epoch, which
 * changes whenever the map is learned.
 */
uint64
wtc_redis_map_epoch(WtcRedis *r)
{
	if (r->target.mode == WTC_REDIS_CLUSTER && r->map_stale && r->npend == 0 && !r->broken)
		(void) cluster_refresh(r);
	return r->map_epoch;
}
