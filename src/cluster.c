/*-------------------------------------------------------------------------
 * cluster.c
 *		Redis Cluster routing over the packaged hiredis, which has none:
 *		key slots, the slot map, and following MOVED, ASK, TRYAGAIN and
 *		NOSCRIPT answers.  redis.c sends each command to the node this
 *		file names and hands it the replies that need following.
 *-------------------------------------------------------------------------
 */
#include "redis_conn.h"
#include "redis.h"
#include "settings.h"

#include "miscadmin.h"

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
int
wtc_command_slot(int argc, const char **argv, const size_t *lens)
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
	/* MEMORY USAGE <key> (memory.c) */
	if (pg_strcasecmp(argv[0], "MEMORY") == 0)
		return argc >= 3 ? wtc_redis_key_slot(argv[2], lens[2]) : -1;
	return wtc_redis_key_slot(argv[1], lens[1]);
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

	if (!wtc_node_connect(r, asked))
		return false;
	reply = wtc_node_sync(r, asked, false, "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", 28);
	if (reply == NULL)
		return false;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0)
	{
		wtc_fail(r, "CLUSTER SLOTS at %s:%d: %s", r->nodes[asked].host, r->nodes[asked].port,
			 reply->type == REDIS_REPLY_ARRAY ? "no slots are served" : wtc_reply_text(reply));
		freeReplyObject(reply);
		return false;
	}
	map = malloc(sizeof(int16) * CLUSTER_SLOTS);
	if (map == NULL)
	{
		freeReplyObject(reply);
		return wtc_fail(r, "out of memory");
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
			ok = wtc_fail(r, "CLUSTER SLOTS at %s:%d: a reply wtcache cannot read",
					  r->nodes[asked].host, r->nodes[asked].port);
			break;
		}
		master = range->element[2];
		/* an empty or unknown endpoint means "where you asked" */
		host = master->element[0]->str;
		if (host[0] == '\0' || strcmp(host, "?") == 0)
			host = r->nodes[asked].host;
		idx = wtc_node_index(r, host, (int) master->element[1]->integer);
		if (idx < 0)
		{
			ok = wtc_fail(r, "the cluster has more than %d nodes", MAX_NODES);
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
		snprintf(r->address, sizeof(r->address), "cluster of %d masters (seed %s:%d%s)",
				 r->nmasters, r->target.seeds[0].host, r->target.seeds[0].port,
				 wtc_tls_note(r));
	}
	free(map);
	return ok;
}

/* The map from a master we know, else from a seed. */
bool
wtc_cluster_refresh(WtcRedis *r)
{
	for (int m = 0; m < r->nmasters; m++)
		if (r->nodes[r->masters[m]].ctx != NULL && !r->nodes[r->masters[m]].ctx->err &&
			cluster_map_from(r, r->masters[m]))
			return true;
	for (int i = 0; i < r->target.nseeds; i++)
	{
		int			idx = wtc_node_index(r, r->target.seeds[i].host, r->target.seeds[i].port);

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
	return wtc_node_index(r, host, atoi(colon + 1));
}

/*
 * Follow MOVED, ASK, TRYAGAIN and NOSCRIPT answers to a pipelined command
 * until a real reply comes back (not ASK for a command spanning slots:
 * wtc_redis_append_spanning).  TRYAGAIN (a slot half migrated) is
 * retried for at most the command timeout.
 */
redisReply *
wtc_follow_redirects(WtcRedis *r, PendingCommand *p, redisReply *raw)
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
			/* the caller sends such a command again, a slot at a time */
			if (asking && p->spanning)
				break;
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
				if (!wtc_node_load_script(r, p->node, r->scripts[i]))
				{
					freeReplyObject(raw);
					return NULL;
				}
		}
		else
			break;

		freeReplyObject(raw);
		if (!wtc_node_connect(r, target))
			return NULL;
		raw = wtc_node_sync(r, target, asking, p->cmd, p->len);
		if (raw == NULL)
			return NULL;
		p->node = target;
	}
	return raw;
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
 * Learn the slot map again if a redirect said it changed, at a moment
 * without replies on their way.  False when no node could say (the
 * connection is then broken).
 */
bool
wtc_cluster_refresh_if_stale(WtcRedis *r)
{
	if (!r->map_stale || r->npend > 0)
		return true;
	return wtc_cluster_refresh(r);
}

/*
 * Cluster: the slot map's epoch, which changes whenever the map is
 * learned (again, if it went stale).
 */
uint64
wtc_redis_map_epoch(WtcRedis *r)
{
	if (r->target.mode == WTC_REDIS_CLUSTER && !r->broken)
		(void) wtc_cluster_refresh_if_stale(r);
	return r->map_epoch;
}
