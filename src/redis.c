/*-------------------------------------------------------------------------
 * redis.c
 *		The one file that talks to hiredis.
 *
 * hiredis allocates with malloc and is not written for longjmp: nothing in
 * here calls ereport while hiredis state is in flight.  Replies are copied
 * into palloc'd WtcReply trees and the hiredis objects freed at once.  Every
 * connection has a connect timeout and a per-reply timeout; a connection
 * that failed (c->err) is never reused: callers free it and reconnect.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include <stdarg.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

struct WtcRedis
{
	redisContext *ctx;
	char		err[256];
};

static struct timeval
ms_to_timeval(int ms)
{
	struct timeval tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	return tv;
}

const char *
wtc_redis_errstr(WtcRedis *r)
{
	if (r->ctx && r->ctx->err)
		return r->ctx->errstr;
	return r->err;
}

/* Copy a hiredis reply into palloc'd memory; frees nothing. */
static void
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

bool
wtc_redis_append(WtcRedis *r, int argc, const char **argv, const size_t *lens)
{
	return redisAppendCommandArgv(r->ctx, argc, argv, lens) == REDIS_OK;
}

/* Write everything appended so far; replies are read later. */
bool
wtc_redis_flush(WtcRedis *r)
{
	int			done = 0;

	while (!done)
		if (redisBufferWrite(r->ctx, &done) != REDIS_OK)
			return false;
	return true;
}

bool
wtc_redis_read(WtcRedis *r, WtcReply *out)
{
	void	   *raw = NULL;

	if (redisGetReply(r->ctx, &raw) != REDIS_OK || raw == NULL)
		return false;
	PG_TRY();
	{
		copy_reply((redisReply *) raw, out);
	}
	PG_FINALLY();
	{
		freeReplyObject(raw);
	}
	PG_END_TRY();
	return true;
}

bool
wtc_redis_command(WtcRedis *r, WtcReply *out, int argc, const char **argv,
				  const size_t *lens)
{
	return wtc_redis_append(r, argc, argv, lens) && wtc_redis_read(r, out);
}

/* Convenience for commands made of C strings only (no row data). */
bool
wtc_redis_commandv(WtcRedis *r, WtcReply *out, int argc, ...)
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

void
wtc_redis_free(WtcRedis *r)
{
	if (r == NULL)
		return;
	if (r->ctx)
		redisFree(r->ctx);
	free(r);
}

/*
 * Connect, authenticate and select the database.  On failure returns NULL
 * with a message in err that never contains the password.
 */
WtcRedis *
wtc_redis_connect(const RedisAddress *addr, int connect_timeout_ms,
				  int command_timeout_ms, char *err, size_t errlen)
{
	WtcRedis   *r;
	WtcReply	reply = {.type = WTC_REPLY_NIL};

	r = calloc(1, sizeof(WtcRedis));
	if (r == NULL)
	{
		strlcpy(err, "out of memory", errlen);
		return NULL;
	}
	r->ctx = redisConnectWithTimeout(addr->host, addr->port, ms_to_timeval(connect_timeout_ms));
	if (r->ctx == NULL || r->ctx->err)
	{
		snprintf(err, errlen, "%s", r->ctx ? r->ctx->errstr : "cannot allocate a Redis context");
		wtc_redis_free(r);
		return NULL;
	}
	if (redisSetTimeout(r->ctx, ms_to_timeval(command_timeout_ms)) != REDIS_OK ||
		redisEnableKeepAlive(r->ctx) != REDIS_OK)
	{
		snprintf(err, errlen, "%s", r->ctx->errstr);
		wtc_redis_free(r);
		return NULL;
	}

	if (addr->password[0])
	{
		bool		ok;

		if (addr->user[0])
			ok = wtc_redis_commandv(r, &reply, 3, "AUTH", addr->user, addr->password);
		else
			ok = wtc_redis_commandv(r, &reply, 2, "AUTH", addr->password);
		if (!ok || reply.type == WTC_REPLY_ERROR)
		{
			snprintf(err, errlen, "authentication failed: %s",
					 ok ? reply.str : wtc_redis_errstr(r));
			wtc_redis_free(r);
			return NULL;
		}
	}
	if (addr->db != 0)
	{
		char		db[16];

		snprintf(db, sizeof(db), "%d", addr->db);
		if (!wtc_redis_commandv(r, &reply, 2, "SELECT", db) || reply.type == WTC_REPLY_ERROR)
		{
			snprintf(err, errlen, "SELECT %s failed: %s", db,
					 reply.type == WTC_REPLY_ERROR ? reply.str : wtc_redis_errstr(r));
			wtc_redis_free(r);
			return NULL;
		}
	}
	return r;
}
