/*-------------------------------------------------------------------------
 * redis.c
 *		Connections to Redis through hiredis: one server, the master that
 *		Sentinels name, or the masters of a Redis Cluster (whose routing is
 *		in cluster.c; only these two files see hiredis).
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
 * failover.  A Sentinel that requires a password (requirepass, or an ACL
 * user) is sent AUTH first.  Nothing authenticates a Sentinel to us
 * without TLS: whoever answers at a Sentinel's address names the server
 * that then receives the master's password (README.md, "Sentinel, Cluster and TLS").
 *
 * TLS (a rediss:// URL): every connection, to a server, a Sentinel or a
 * Cluster node, is connected by hiredis and then carries a TLS session
 * (tls.c).  hiredis still formats the commands into its output buffer and
 * parses the replies from its reader; only the bytes take another way:
 * node_write() and node_get_reply() stand for redisBufferWrite() and
 * redisGetReply(), and a TLS failure is recorded in the context as a
 * hiredis I/O error, so everything above (retries, the circuit breaker,
 * the worker's backoff) treats it as any lost connection.  The names
 * verified are the hosts connected to: the URL's, the one a Sentinel
 * names, the ones CLUSTER SLOTS and MOVED announce.
 *
 * Cluster: pipelines stay pipelines.  Commands are appended to the
 * connection of the node cluster.c names and the replies read back in the
 * order the caller appended them.  Each command is kept, formatted, until
 * its reply is read, so cluster.c can send it again after a MOVED, ASK,
 * TRYAGAIN or NOSCRIPT answer: the replies already on their way from the
 * target node are read ahead and held meanwhile.
 *-------------------------------------------------------------------------
 */
#include "redis_conn.h"
#include "redis.h"
#include "settings.h"

#include <stdarg.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/sds.h>

#include "miscadmin.h"

static struct timeval
ms_to_timeval(int ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return tv;
}

bool
wtc_fail(WtcRedis *r, const char *fmt,...) pg_attribute_printf(2, 3);

bool
wtc_fail(WtcRedis *r, const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return false;
}

/* Why a node's connection failed: TLS's reason, else hiredis's. */
static const char *
node_errstr(RedisNode *n)
{
	if (n->err[0] != '\0')
		return n->err;
	return n->ctx && n->ctx->err ? n->ctx->errstr : "connection lost";
}

/* A node's connection failed: keep its message, never use it again. */
bool
wtc_node_failed(WtcRedis *r, RedisNode *n)
{
	r->broken = true;
	if (r->target.mode == WTC_REDIS_CLUSTER)
		return wtc_fail(r, "%s:%d: %s", n->host, n->port, node_errstr(n));
	return wtc_fail(r, "%s", node_errstr(n));
}

/* ", TLS" after the other notes of an address, for status and logs */
const char *
wtc_tls_note(WtcRedis *r)
{
	if (!r->target.tls.enabled)
		return "";
	return r->target.tls.verify == WTC_TLS_VERIFY_NONE ? ", TLS, unverified" : ", TLS";
}

const char *
wtc_redis_errstr(WtcRedis *r)
{
	return r->err;
}

/*
 * Is this error Redis's refusal to grow past maxmemory ("-OOM command not
 * allowed when used memory > 'maxmemory'")?  Given a reply's text, or a
 * message that quotes one after a ": ".  A script without flags (all of
 * wtcache's) gets it from its first command that adds data, before it
 * wrote anything: once a script wrote, Redis lets it finish (it cannot
 * stop half way).  So a refused call applied nothing.  Redis 6 wraps a
 * script's error as "ERR Error running script ...: -OOM ...", hence the
 * search for the message rather than the error code alone.
 */
bool
wtc_redis_error_is_oom(const char *err)
{
	if (err == NULL)
		return false;
	return strncmp(err, "OOM ", 4) == 0 ||
		strstr(err, ": OOM ") != NULL ||
		strstr(err, "command not allowed when used memory") != NULL;
}

WtcRedisMode
wtc_redis_mode(WtcRedis *r)
{
	return r->target.mode;
}

const char *
wtc_redis_address(WtcRedis *r)
{
	return r->address;
}

/* ---------------------------------------------------------------------
 * Bytes to and from a node: hiredis's socket, or TLS on it
 * ---------------------------------------------------------------------
 */

/* TLS failed (n->err says why): the context is in error, as hiredis's own. */
static void
node_tls_failed(RedisNode *n)
{
	n->ctx->err = REDIS_ERR_IO;
	strlcpy(n->ctx->errstr, n->err, sizeof(n->ctx->errstr));
}

/* Write everything appended to a node's connection. */
static bool
node_write(WtcRedis *r, RedisNode *n)
{
	redisContext *c = n->ctx;
	size_t		len;

	if (n->tls == NULL)
	{
		int			done = 0;

		while (!done)
			if (redisBufferWrite(c, &done) != REDIS_OK)
				return false;
		return true;
	}
	if (c->err)
		return false;
	len = sdslen(c->obuf);
	if (len == 0)
		return true;
	if (!wtc_tls_write(n->tls, c->obuf, len, r->command_ms, n->err, sizeof(n->err)))
	{
		node_tls_failed(n);
		return false;
	}
	/* as hiredis does once all is written: a big pipeline's buffer goes */
	sdsfree(c->obuf);
	c->obuf = sdsempty();
	if (c->obuf == NULL)
	{
		strlcpy(n->err, "out of memory", sizeof(n->err));
		node_tls_failed(n);
		return false;
	}
	return true;
}

/* The next reply on a node's connection, as redisGetReply() gives it. */
static int
node_get_reply(WtcRedis *r, RedisNode *n, void **reply)
{
	redisContext *c = n->ctx;

	*reply = NULL;
	if (n->tls == NULL)
		return redisGetReply(c, reply);
	if (c->err)
		return REDIS_ERR;
	if (redisGetReplyFromReader(c, reply) != REDIS_OK)
		return REDIS_ERR;
	if (*reply != NULL)
		return REDIS_OK;
	if (!node_write(r, n))
		return REDIS_ERR;
	while (*reply == NULL)
	{
		char		buf[16 * 1024];
		ssize_t		got = wtc_tls_read(n->tls, buf, sizeof(buf), r->command_ms,
									   n->err, sizeof(n->err));

		if (got <= 0)
		{
			node_tls_failed(n);
			return REDIS_ERR;
		}
		/* a protocol error is reported by the reader, into c->err */
		(void) redisReaderFeed(c->reader, buf, got);
		if (redisGetReplyFromReader(c, reply) != REDIS_OK)
			return REDIS_ERR;
	}
	return REDIS_OK;
}

/* A command and its reply, now: redisCommand(), through TLS when on. */
static redisReply *
node_commandf(WtcRedis *r, RedisNode *n, const char *fmt,...)
{
	va_list		ap;
	int			rc;
	void	   *reply = NULL;

	va_start(ap, fmt);
	rc = redisvAppendCommand(n->ctx, fmt, ap);
	va_end(ap);
	if (rc != REDIS_OK || node_get_reply(r, n, &reply) != REDIS_OK)
		return NULL;
	return reply;
}

static int64
elapsed_ms_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64) (now.tv_sec - start->tv_sec) * 1000 +
		(now.tv_nsec - start->tv_nsec) / 1000000;
}

/*
 * Connect a node's socket (host and port set), within the connect timeout
 * for TCP and TLS together.  False with the reason in the node (its ctx
 * in error) or, if no context could be made, in r.
 */
static bool
node_open(WtcRedis *r, RedisNode *n)
{
	struct timespec start;
	int64		left;
	redisReply *pong;

	clock_gettime(CLOCK_MONOTONIC, &start);
	n->err[0] = '\0';
	n->ctx = redisConnectWithTimeout(n->host, n->port, ms_to_timeval(r->connect_ms));
	if (n->ctx == NULL)
		return wtc_fail(r, "cannot allocate a Redis context");
	if (n->ctx->err ||
		redisSetTimeout(n->ctx, ms_to_timeval(r->command_ms)) != REDIS_OK ||
		redisEnableKeepAlive(n->ctx) != REDIS_OK)
		return false;
	if (r->tls == NULL)
		return true;

	left = r->connect_ms - elapsed_ms_since(&start);
	n->tls = wtc_tls_connect(r->tls, n->ctx->fd, n->host, (int) Max(left, 0),
							 n->err, sizeof(n->err));
	if (n->tls == NULL)
	{
		node_tls_failed(n);
		return false;
	}

	/*
	 * In TLS 1.3 the client's handshake ends before the server has judged
	 * the client's certificate: a server that wants one, or refuses ours,
	 * says so on the first read.  One round trip now makes that a failure
	 * to connect, with its reason, rather than of whatever comes next.
	 * Any reply will do (NOAUTH too: AUTH follows).
	 */
	pong = node_commandf(r, n, "PING");
	if (pong == NULL)
		return false;
	freeReplyObject(pong);
	return true;
}

static void
node_close(RedisNode *n)
{
	wtc_tls_close(n->tls);
	n->tls = NULL;
	if (n->ctx)
		redisFree(n->ctx);
	n->ctx = NULL;
}

/* ---------------------------------------------------------------------
 * Nodes
 * ---------------------------------------------------------------------
 */

int
wtc_node_index(WtcRedis *r, const char *host, int port)
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
redisReply *
wtc_node_take_reply(WtcRedis *r, RedisNode *n)
{
	void	   *raw = NULL;

	if (n->nheld > 0)
	{
		raw = n->held[n->heldhead++];
		if (--n->nheld == 0)
			n->heldhead = 0;
		return raw;
	}
	if (n->ctx == NULL || node_get_reply(r, n, &raw) != REDIS_OK || raw == NULL)
	{
		wtc_node_failed(r, n);
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
				return wtc_fail(r, "out of memory");
			n->held = held;
			n->heldcap = cap;
		}
		if (node_get_reply(r, n, &raw) != REDIS_OK || raw == NULL)
			return wtc_node_failed(r, n);
		n->outstanding--;
		n->held[n->heldhead + n->nheld++] = raw;
	}
	return true;
}

/* One command on one node, now; the node's earlier replies are held. */
redisReply *
wtc_node_sync(WtcRedis *r, int idx, bool asking, const char *cmd, size_t len)
{
	RedisNode  *n = &r->nodes[idx];
	void	   *raw = NULL;

	if (!node_read_ahead(r, n))
		return NULL;
	if ((asking && redisAppendCommand(n->ctx, "ASKING") != REDIS_OK) ||
		redisAppendFormattedCommand(n->ctx, cmd, len) != REDIS_OK)
	{
		wtc_node_failed(r, n);
		return NULL;
	}
	if (asking)
	{
		if (node_get_reply(r, n, &raw) != REDIS_OK || raw == NULL)
		{
			wtc_node_failed(r, n);
			return NULL;
		}
		freeReplyObject(raw);
		raw = NULL;
	}
	if (node_get_reply(r, n, &raw) != REDIS_OK || raw == NULL)
	{
		wtc_node_failed(r, n);
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
		wtc_fail(r, "out of memory");
		return NULL;
	}
	reply = wtc_node_sync(r, idx, false, cmd, len);
	redisFreeCommand(cmd);
	return reply;
}

/* A short status or error message of a reply, for err. */
const char *
wtc_reply_text(redisReply *reply)
{
	if (reply->type == REDIS_REPLY_ERROR || reply->type == REDIS_REPLY_STATUS)
		return reply->str;
	return "unexpected reply";
}

bool
wtc_node_load_script(WtcRedis *r, int idx, const char *text)
{
	const char *argv[3] = {"SCRIPT", "LOAD", text};
	size_t		lens[3] = {6, 4, strlen(text)};
	redisReply *reply = node_sync_argv(r, idx, 3, argv, lens);
	bool		ok;

	if (reply == NULL)
		return wtc_fail(r, "SCRIPT LOAD failed: %s", r->err);
	ok = reply->type == REDIS_REPLY_STRING && reply->len == 40;
	if (!ok)
		wtc_fail(r, "SCRIPT LOAD failed: %s", wtc_reply_text(reply));
	freeReplyObject(reply);
	return ok;
}

/* Connect (once), log in, select the database, load the known scripts. */
bool
wtc_node_connect(WtcRedis *r, int idx)
{
	RedisNode  *n = &r->nodes[idx];
	const RedisAddress *auth = &r->target.addr;
	redisReply *reply;

	if (n->ctx != NULL)
		return !n->ctx->err || wtc_node_failed(r, n);

	if (!node_open(r, n))
		return n->ctx == NULL ? false : wtc_node_failed(r, n);

	if (auth->password[0])
	{
		if (auth->user[0])
			reply = node_commandf(r, n, "AUTH %s %s", auth->user, auth->password);
		else
			reply = node_commandf(r, n, "AUTH %s", auth->password);
		if (reply == NULL)
			return wtc_node_failed(r, n);
		if (reply->type == REDIS_REPLY_ERROR)
		{
			/* the reply names no password; it is safe to show */
			wtc_fail(r, "authentication failed: %s", reply->str);
			freeReplyObject(reply);
			r->broken = true;
			return false;
		}
		freeReplyObject(reply);
	}
	if (auth->db != 0)
	{
		reply = node_commandf(r, n, "SELECT %d", auth->db);
		if (reply == NULL)
			return wtc_node_failed(r, n);
		if (reply->type == REDIS_REPLY_ERROR)
		{
			wtc_fail(r, "SELECT %d failed: %s", auth->db, reply->str);
			freeReplyObject(reply);
			r->broken = true;
			return false;
		}
		freeReplyObject(reply);
	}
	for (int i = 0; i < r->nscripts; i++)
		if (!wtc_node_load_script(r, idx, r->scripts[i]))
			return false;
	return true;
}

/* ---------------------------------------------------------------------
 * Sentinel
 * ---------------------------------------------------------------------
 */

/* Log in to a Sentinel, if wtcache.redis_sentinel_password_file is set. */
static bool
sentinel_auth(WtcRedis *r, RedisNode *sn, const RedisHostPort *s)
{
	redisReply *reply;

	if (r->target.sentinel_password[0] == '\0')
		return true;
	if (r->target.sentinel_user[0])
		reply = node_commandf(r, sn, "AUTH %s %s", r->target.sentinel_user,
							  r->target.sentinel_password);
	else
		reply = node_commandf(r, sn, "AUTH %s", r->target.sentinel_password);
	if (reply == NULL)
		return wtc_fail(r, "Sentinel %s:%d: %s", s->host, s->port, node_errstr(sn));
	if (reply->type == REDIS_REPLY_ERROR)
	{
		/* the reply names no password; it is safe to show */
		wtc_fail(r, "Sentinel %s:%d: authentication failed: %s", s->host, s->port, reply->str);
		freeReplyObject(reply);
		return false;
	}
	freeReplyObject(reply);
	return true;
}

/* Ask the Sentinels, in order, where the master is. */
static bool
sentinel_master(WtcRedis *r, RedisHostPort *master)
{
	for (int i = 0; i < r->target.nseeds; i++)
	{
		const RedisHostPort *s = &r->target.seeds[i];
		RedisNode	sn = {.port = s->port};
		redisReply *reply = NULL;

		/* a Sentinel is a connection like any other: TLS too, with rediss:// */
		strlcpy(sn.host, s->host, sizeof(sn.host));
		if (!node_open(r, &sn))
		{
			if (sn.ctx != NULL)
				wtc_fail(r, "Sentinel %s:%d: %s", s->host, s->port, node_errstr(&sn));
			node_close(&sn);
			continue;
		}
		if (!sentinel_auth(r, &sn, s))
		{
			node_close(&sn);
			continue;
		}
		reply = node_commandf(r, &sn, "SENTINEL get-master-addr-by-name %s", r->target.master_name);
		if (reply == NULL)
			wtc_fail(r, "Sentinel %s:%d: %s", s->host, s->port, node_errstr(&sn));
		else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
				 reply->element[0]->type == REDIS_REPLY_STRING &&
				 reply->element[1]->type == REDIS_REPLY_STRING &&
				 reply->element[0]->len < sizeof(master->host))
		{
			strlcpy(master->host, reply->element[0]->str, sizeof(master->host));
			master->port = atoi(reply->element[1]->str);
			freeReplyObject(reply);
			node_close(&sn);
			return true;
		}
		else if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOAUTH", 6) == 0)
			wtc_fail(r, "Sentinel %s:%d requires a password (wtcache.redis_sentinel_password_file): %s",
					 s->host, s->port, reply->str);
		else
			wtc_fail(r, "Sentinel %s:%d does not know master \"%s\"%s%s", s->host, s->port,
				 r->target.master_name, reply->type == REDIS_REPLY_ERROR ? ": " : "",
				 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
		if (reply)
			freeReplyObject(reply);
		node_close(&sn);
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
		node_close(n);
	}
	for (int p = 0; p < r->npend; p++)
		redisFreeCommand(r->pend[r->pendhead + p].cmd);
	free(r->pend);
	wtc_tls_free(r->tls);
	/* the passwords do not outlive the connection in freed memory */
	explicit_bzero(&r->target, sizeof(r->target));
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

	/* the CA, certificate and key files, read now: what they hold now is used */
	if (target->tls.enabled &&
		(r->tls = wtc_tls_new(&target->tls, r->err, sizeof(r->err))) == NULL)
		goto failed;

	switch (target->mode)
	{
		case WTC_REDIS_SINGLE:
			r->nnodes = 1;
			strlcpy(r->nodes[0].host, target->addr.host, sizeof(r->nodes[0].host));
			r->nodes[0].port = target->addr.port;
			if (!wtc_node_connect(r, 0))
				break;
			wtcache_describe_address(&target->addr, r->address, sizeof(r->address));
			if (target->tls.enabled)
			{
				size_t		len = strlen(r->address);

				snprintf(r->address + len, sizeof(r->address) - len, " (%s)",
						 wtcache_tls_label(&target->tls));
			}
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
				if (!wtc_node_connect(r, 0))
					break;
				/* a Sentinel can name a master that has just been demoted */
				role = node_commandf(r, &r->nodes[0], "ROLE");
				if (role == NULL)
				{
					wtc_node_failed(r, &r->nodes[0]);
					break;
				}
				is_master = role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
					role->element[0]->type == REDIS_REPLY_STRING &&
					strcmp(role->element[0]->str, "master") == 0;
				freeReplyObject(role);
				if (!is_master)
				{
					wtc_fail(r, "Sentinel named %s:%d as master \"%s\", but it is not a master (failover in progress)",
						 master.host, master.port, target->master_name);
					break;
				}
				snprintf(r->address, sizeof(r->address), "%s:%d (master \"%s\"%s)",
						 master.host, master.port, target->master_name, wtc_tls_note(r));
					return r;
			}

		case WTC_REDIS_CLUSTER:
			for (int s = 0; s < CLUSTER_SLOTS; s++)
				r->slot_node[s] = -1;
			if (!wtc_cluster_refresh(r))
				break;
			r->broken = false;
			for (int m = 0; m < r->nmasters; m++)
				if (!wtc_node_connect(r, r->masters[m]))
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
			snprintf(err, errlen, "SCRIPT LOAD failed: %s", wtc_reply_text(reply));
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

static bool
redis_append(WtcRedis *r, int argc, const char **argv, const size_t *lens, bool spanning)
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
			wtc_node_failed(r, &r->nodes[0]);

	/* a redirect told us the map changed: learn it before the next pipeline */
	if (!wtc_cluster_refresh_if_stale(r))
		return false;
	slot = wtc_command_slot(argc, argv, lens);
	idx = slot >= 0 ? r->slot_node[slot] : (r->nmasters > 0 ? r->masters[0] : -1);
	if (idx < 0)
		return wtc_fail(r, "no cluster node serves slot %d", slot);
	if (!wtc_node_connect(r, idx))
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
				return wtc_fail(r, "out of memory");
			r->pend = grown;
			r->pendcap = cap;
		}
	}
	len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0)
		return wtc_fail(r, "out of memory");
	if (redisAppendFormattedCommand(r->nodes[idx].ctx, cmd, len) != REDIS_OK)
	{
		redisFreeCommand(cmd);
		return wtc_node_failed(r, &r->nodes[idx]);
	}
	p = &r->pend[r->pendhead + r->npend++];
	p->node = idx;
	p->slot = slot;
	p->cmd = cmd;
	p->len = len;
	p->spanning = spanning;
	r->nodes[idx].outstanding++;
	return true;
}

bool
wtc_redis_append(WtcRedis *r, int argc, const char **argv, const size_t *lens)
{
	return redis_append(r, argc, argv, lens, false);
}

/*
 * A command routed by its first key that touches keys of other slots its
 * node serves (push.c's calls per master): an ASK is answered to the
 * caller instead of followed, since the importing node, asked, would
 * serve every key of the migrating slot, moved yet or not.
 */
bool
wtc_redis_append_spanning(WtcRedis *r, int argc, const char **argv, const size_t *lens)
{
	return redis_append(r, argc, argv, lens, true);
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

		if (n->ctx == NULL)
			continue;
		if (!node_write(r, n))
			return wtc_node_failed(r, n);
	}
	return true;
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

		if (node_get_reply(r, &r->nodes[0], &reply) != REDIS_OK || reply == NULL)
			return wtc_node_failed(r, &r->nodes[0]);
		hand_over(reply, out);
		return true;
	}

	if (r->npend == 0)
		return wtc_fail(r, "no reply is expected");
	p = &r->pend[r->pendhead];
	raw = wtc_node_take_reply(r, &r->nodes[p->node]);
	if (raw != NULL && raw->type == REDIS_REPLY_ERROR)
		raw = wtc_follow_redirects(r, p, raw);
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
		return wtc_fail(r, "no such cluster node");
	idx = r->masters[node];
	if (!wtc_node_connect(r, idx))
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


/* ---------------------------------------------------------------------
 * Replica acknowledgements (replicas.c)
 * ---------------------------------------------------------------------
 */

/*
 * On the master serving each of keys: INCR <key>, a write of this
 * connection that follows everything before it in that master's
 * replication stream (WAIT counts the replicas that have the calling
 * connection's last write), then, once per master, WAIT numreplicas.  The
 * masters wait side by side.
 *
 * The WAIT is sent in slices of at most WAIT_SLICE_MS until timeout_ms
 * has passed, each time only to the masters still short: a WAIT blocks the
 * connection, and a worker stuck in a read for the whole timeout (up to a
 * minute) would act on SIGTERM or a reload only afterwards, past pg_ctl's
 * patience.  Between slices every reply has been read and the timeouts are
 * back, so the caller's keep_waiting() may look at its signal flags; when
 * it says no, *interrupted is set and the count so far returned.  A WAIT
 * sent again without a write counts the same offset: this connection's
 * last write, the touch.  Replies are read with the reply timeout
 * stretched by the slice, since WAIT answers only then when the replicas
 * do not.
 *
 * *acked: the fewest replicas a master counted.  False with err when the
 * connection failed (r is broken then) or a reply was an error (the
 * connection is still in step: every reply was read).
 */
#define WAIT_SLICE_MS	100

bool
wtc_redis_wait_replicas(WtcRedis *r, char *const *keys, int nkeys,
						int numreplicas, int timeout_ms, bool (*keep_waiting) (void),
						int *acked, bool *interrupted, char *err, size_t errlen)
{
	int			node_of[MAX_NODES];
	int			nnodes = 0;
	int			evals[MAX_NODES] = {0};
	int			node_acked[MAX_NODES];
	char		nbuf[16];
	char		tbuf[16];
	const char *wait_argv[3] = {"WAIT", nbuf, tbuf};
	size_t		wait_lens[3];
	int			saved_ms = r->command_ms;
	struct timespec start;
	bool		ok = true;
	bool		first = true;

	*acked = -1;
	*interrupted = false;
	err[0] = '\0';
	if (r->broken)
	{
		snprintf(err, errlen, "%s", r->err);
		return false;
	}
	if (r->target.mode == WTC_REDIS_CLUSTER && !wtc_cluster_refresh_if_stale(r))
	{
		snprintf(err, errlen, "%s", r->err);
		return false;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	snprintf(nbuf, sizeof(nbuf), "%d", numreplicas);

	for (int k = 0; k < nkeys && ok; k++)
	{
		const char *argv[2] = {"INCR", keys[k]};
		size_t		lens[2] = {4, strlen(keys[k])};
		int			idx = 0;
		int			j;
		RedisNode  *n;

		if (r->target.mode == WTC_REDIS_CLUSTER)
		{
			idx = r->slot_node[wtc_redis_key_slot(keys[k], lens[1])];
			if (idx < 0)
			{
				wtc_fail(r, "no cluster node serves the slot of %s", keys[k]);
				r->broken = true;
				ok = false;
				break;
			}
			if (!wtc_node_connect(r, idx) || !node_read_ahead(r, &r->nodes[idx]))
			{
				ok = false;
				break;
			}
		}
		n = &r->nodes[idx];
		for (j = 0; j < nnodes; j++)
			if (node_of[j] == idx)
				break;
		if (j == nnodes)
		{
			node_acked[nnodes] = -1;
			node_of[nnodes++] = idx;
		}
		if (redisAppendCommandArgv(n->ctx, 2, argv, lens) != REDIS_OK)
			ok = wtc_node_failed(r, n);
		evals[j]++;
	}
	if (!ok)
	{
		snprintf(err, errlen, "%s", r->err);
		return false;
	}

	for (;;)
	{
		int			slice = (int) Min(Max(timeout_ms - elapsed_ms_since(&start), 1),
									  WAIT_SLICE_MS);
		bool		short_left = false;

		snprintf(tbuf, sizeof(tbuf), "%d", slice);
		for (int i = 0; i < 3; i++)
			wait_lens[i] = strlen(wait_argv[i]);
		for (int j = 0; j < nnodes && ok; j++)
		{
			RedisNode  *n = &r->nodes[node_of[j]];

			if (!first && node_acked[j] >= numreplicas)
				continue;
			if (redisAppendCommandArgv(n->ctx, 3, wait_argv, wait_lens) != REDIS_OK ||
				!node_write(r, n))
				ok = wtc_node_failed(r, n);
		}
		if (!ok)
			break;

		/* stretched for the replies of WAIT (tls.c reads with r->command_ms) */
		r->command_ms = saved_ms + slice;
		for (int j = 0; j < nnodes; j++)
			(void) redisSetTimeout(r->nodes[node_of[j]].ctx, ms_to_timeval(r->command_ms));
		for (int j = 0; j < nnodes && ok; j++)
		{
			RedisNode  *n = &r->nodes[node_of[j]];
			int			nreplies = first ? evals[j] + 1 : 1;

			if (!first && node_acked[j] >= numreplicas)
				continue;
			for (int e = 0; e < nreplies && ok; e++)
			{
				void	   *raw = NULL;
				redisReply *reply;
				bool		is_wait = e == nreplies - 1;

				if (node_get_reply(r, n, &raw) != REDIS_OK || raw == NULL)
				{
					ok = wtc_node_failed(r, n);
					break;
				}
				reply = raw;
				if (reply->type == REDIS_REPLY_ERROR && err[0] == '\0')
					snprintf(err, errlen, "%s%s%s: %s",
							 r->target.mode == WTC_REDIS_CLUSTER ? n->host : "",
							 r->target.mode == WTC_REDIS_CLUSTER ? ":" : "",
							 is_wait ? "WAIT failed" : "a write before WAIT failed",
							 reply->str);
				else if (is_wait && reply->type == REDIS_REPLY_INTEGER)
					node_acked[j] = (int) Min(reply->integer, INT_MAX);
				else if (is_wait && reply->type != REDIS_REPLY_ERROR && err[0] == '\0')
					snprintf(err, errlen, "WAIT gave an unexpected reply");
				freeReplyObject(reply);
			}
		}
		r->command_ms = saved_ms;
		for (int j = 0; j < nnodes; j++)
			if (r->nodes[node_of[j]].ctx != NULL)
				(void) redisSetTimeout(r->nodes[node_of[j]].ctx, ms_to_timeval(saved_ms));
		first = false;
		if (!ok || err[0] != '\0')
			break;

		for (int j = 0; j < nnodes; j++)
			if (node_acked[j] < numreplicas)
				short_left = true;
		if (!short_left || elapsed_ms_since(&start) >= timeout_ms)
			break;
		/* every reply is read: the caller may act on a signal now */
		if (!keep_waiting())
		{
			*interrupted = true;
			break;
		}
	}
	if (!ok)
	{
		snprintf(err, errlen, "%s", r->err);
		return false;
	}
	for (int j = 0; j < nnodes; j++)
		if (*acked < 0 || node_acked[j] < *acked)
			*acked = node_acked[j];
	return err[0] == '\0';
}
