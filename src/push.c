/*-------------------------------------------------------------------------
 * push.c
 *		Pipelined, versioned writes to Redis.
 *
 * Each row push is a compare-and-set in Lua: the row's current version is
 * the "_v" at the head of its JSON (written first, so GETRANGE of a few
 * bytes reads it) or, if the row key is missing, its tombstone.  A push
 * whose version is not newer is a no-op, so redelivery after a crash or a
 * late push can never move a key back.  Many rows go in one EVALSHA and
 * all EVALSHAs of a batch in one pipeline.
 *
 * The generation marker <prefix>{<database>}:gen holds the highest version
 * Redis acknowledged.  Missing, or lower than what the worker knows it
 * acknowledged, means Redis lost data (restart without persistence,
 * FLUSHALL, failover to a stale replica): the worker then resyncs.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

/* rows per EVALSHA: bounds Lua's time per call and the argument vector */
#define ROWS_PER_CALL 128

/*
 * KEYS: row1, tomb1, row2, tomb2, ...
 * ARGV: tombstone_ttl_s, then per row: version, payload ("" = delete), ttl_ms
 */
static const char apply_script[] =
"local tomb_ttl = tonumber(ARGV[1])\n"
"local applied = 0\n"
"for i = 1, #KEYS / 2 do\n"
"  local rk, tk = KEYS[2 * i - 1], KEYS[2 * i]\n"
"  local v = tonumber(ARGV[3 * i - 1])\n"
"  local payload = ARGV[3 * i]\n"
"  local ttl = tonumber(ARGV[3 * i + 1])\n"
"  local cur = 0\n"
"  local head = redis.pcall('GETRANGE', rk, 0, 24)\n"
"  if type(head) == 'table' then\n"
"    redis.call('DEL', rk)\n"
"    head = ''\n"
"  end\n"
"  local hv = string.match(head, '^{\"_v\":(%d+)')\n"
"  if hv then\n"
"    cur = tonumber(hv)\n"
"  else\n"
"    local t = redis.pcall('GET', tk)\n"
"    if type(t) == 'string' then cur = tonumber(t) or 0 end\n"
"  end\n"
"  if v > cur then\n"
"    if payload == '' then\n"
"      redis.call('DEL', rk)\n"
"      redis.call('SET', tk, ARGV[3 * i - 1], 'EX', tomb_ttl)\n"
"    elseif ttl > 0 then\n"
"      redis.call('SET', rk, payload, 'PX', ttl)\n"
"    else\n"
"      redis.call('SET', rk, payload)\n"
"    end\n"
"    applied = applied + 1\n"
"  end\n"
"end\n"
"return applied\n";

/*
 * KEYS: marker.  ARGV: acked (highest version we know Redis has), new.
 * Returns {ok, seen}: ok = 0 when the marker is missing or behind (and then
 * leaves it alone), seen = the marker's value or -1.
 */
static const char marker_script[] =
"local cur = redis.call('GET', KEYS[1])\n"
"if not cur then return {0, -1} end\n"
"cur = tonumber(cur) or -1\n"
"if cur < tonumber(ARGV[1]) then return {0, cur} end\n"
"if tonumber(ARGV[2]) > cur then redis.call('SET', KEYS[1], ARGV[2]) end\n"
"return {1, cur}\n";

static bool
load_one(WtcRedis *r, const char *script, char *sha, char *err, size_t errlen)
{
	WtcReply	reply;

	if (!wtc_redis_commandv(r, &reply, 3, "SCRIPT", "LOAD", script))
	{
		snprintf(err, errlen, "SCRIPT LOAD failed: %s", wtc_redis_errstr(r));
		return false;
	}
	if (reply.type != WTC_REPLY_STRING || reply.len != 40)
	{
		snprintf(err, errlen, "SCRIPT LOAD failed: %s",
				 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
		return false;
	}
	memcpy(sha, reply.str, 41);
	return true;
}

bool
wtcache_load_scripts(WtcRedis *r, RedisScripts *scripts, char *err, size_t errlen)
{
	return load_one(r, apply_script, scripts->apply_sha, err, errlen) &&
		load_one(r, marker_script, scripts->marker_sha, err, errlen);
}

bool
wtcache_push_items(WtcRedis *r, const RedisScripts *scripts, PushItem *items,
				   int nitems, int64 *applied, char *err, size_t errlen)
{
	int			ncalls = 0;
	const char **argv;
	size_t	   *lens;
	char	   *numbuf;
	char		tomb_ttl[16];
	char		nkeys_buf[16];
	bool		ok = true;

	*applied = 0;
	if (nitems == 0)
		return true;

	snprintf(tomb_ttl, sizeof(tomb_ttl), "%d", wtcache_tombstone_ttl_s);
	argv = palloc(sizeof(char *) * (4 + ROWS_PER_CALL * 5));
	lens = palloc(sizeof(size_t) * (4 + ROWS_PER_CALL * 5));
	/* version and ttl digits for every row, kept until the pipeline is sent */
	numbuf = palloc((size_t) nitems * 48);

	for (int start = 0; start < nitems; start += ROWS_PER_CALL)
	{
		int			n = Min(ROWS_PER_CALL, nitems - start);
		int			argc = 0;
		int			karg;

		argv[argc] = "EVALSHA";
		lens[argc++] = 7;
		argv[argc] = scripts->apply_sha;
		lens[argc++] = 40;
		snprintf(nkeys_buf, sizeof(nkeys_buf), "%d", n * 2);
		argv[argc] = nkeys_buf;
		lens[argc++] = strlen(nkeys_buf);

		/* keys: row key, then its tombstone (row key + ":t") */
		karg = argc;
		for (int i = 0; i < n; i++)
		{
			PushItem   *it = &items[start + i];
			char	   *tomb = palloc(it->row_key_len + 3);

			memcpy(tomb, it->row_key, it->row_key_len);
			memcpy(tomb + it->row_key_len, ":t", 3);
			argv[karg] = it->row_key;
			lens[karg++] = it->row_key_len;
			argv[karg] = tomb;
			lens[karg++] = it->row_key_len + 2;
		}
		argc = karg;
		argv[argc] = tomb_ttl;
		lens[argc++] = strlen(tomb_ttl);
		for (int i = 0; i < n; i++)
		{
			PushItem   *it = &items[start + i];
			char	   *vbuf = numbuf + (size_t) (start + i) * 48;
			char	   *tbuf = vbuf + 24;

			snprintf(vbuf, 24, INT64_FORMAT, it->version);
			snprintf(tbuf, 24, INT64_FORMAT, it->ttl_ms);
			argv[argc] = vbuf;
			lens[argc++] = strlen(vbuf);
			argv[argc] = it->payload ? it->payload : "";
			lens[argc++] = it->payload ? it->payload_len : 0;
			argv[argc] = tbuf;
			lens[argc++] = strlen(tbuf);
		}
		if (!wtc_redis_append(r, argc, argv, lens))
		{
			snprintf(err, errlen, "could not queue a command: %s", wtc_redis_errstr(r));
			return false;
		}
		ncalls++;
	}

	/* read every reply, even after an error reply, to keep the stream in step */
	for (int i = 0; i < ncalls; i++)
	{
		WtcReply	reply;

		if (!wtc_redis_read(r, &reply))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return false;
		}
		if (reply.type == WTC_REPLY_INTEGER)
			*applied += reply.integer;
		else if (ok)
		{
			snprintf(err, errlen, "Redis refused a row push: %s",
					 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
			ok = false;
		}
	}
	return ok;
}

/* Remove every key matching pattern (SCAN + UNLINK, a page at a time). */
bool
wtcache_purge_pattern(WtcRedis *r, const char *pattern, int64 *removed,
					  char *err, size_t errlen)
{
	char		cursor[32] = "0";

	*removed = 0;
	do
	{
		WtcReply	reply;
		WtcReply   *keys;

		if (!wtc_redis_commandv(r, &reply, 6, "SCAN", cursor, "MATCH", pattern, "COUNT", "1000"))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return false;
		}
		if (reply.type != WTC_REPLY_ARRAY || reply.nelem != 2 ||
			reply.elem[0].type != WTC_REPLY_STRING || reply.elem[1].type != WTC_REPLY_ARRAY)
		{
			snprintf(err, errlen, "SCAN failed: %s",
					 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
			return false;
		}
		strlcpy(cursor, reply.elem[0].str, sizeof(cursor));
		keys = &reply.elem[1];
		if (keys->nelem > 0)
		{
			const char **argv = palloc(sizeof(char *) * (keys->nelem + 1));
			size_t	   *lens = palloc(sizeof(size_t) * (keys->nelem + 1));
			WtcReply	del;

			argv[0] = "UNLINK";
			lens[0] = 6;
			for (int i = 0; i < keys->nelem; i++)
			{
				argv[i + 1] = keys->elem[i].str;
				lens[i + 1] = keys->elem[i].len;
			}
			if (!wtc_redis_command(r, &del, keys->nelem + 1, argv, lens))
			{
				snprintf(err, errlen, "%s", wtc_redis_errstr(r));
				return false;
			}
			if (del.type == WTC_REPLY_INTEGER)
				*removed += del.integer;
		}
	} while (strcmp(cursor, "0") != 0);
	return true;
}

MarkerCheck
wtcache_check_marker(WtcRedis *r, const RedisScripts *scripts, const char *marker_key,
					 int64 acked, int64 new_version, int64 *seen, char *err, size_t errlen)
{
	WtcReply	reply;
	char		acked_buf[24];
	char		new_buf[24];

	snprintf(acked_buf, sizeof(acked_buf), INT64_FORMAT, acked);
	snprintf(new_buf, sizeof(new_buf), INT64_FORMAT, Max(acked, new_version));
	if (!wtc_redis_commandv(r, &reply, 6, "EVALSHA", scripts->marker_sha, "1",
							marker_key, acked_buf, new_buf))
	{
		snprintf(err, errlen, "%s", wtc_redis_errstr(r));
		return MARKER_ERROR;
	}
	if (reply.type != WTC_REPLY_ARRAY || reply.nelem != 2 ||
		reply.elem[0].type != WTC_REPLY_INTEGER || reply.elem[1].type != WTC_REPLY_INTEGER)
	{
		snprintf(err, errlen, "generation marker check failed: %s",
				 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
		return MARKER_ERROR;
	}
	*seen = reply.elem[1].integer;
	return reply.elem[0].integer == 1 ? MARKER_OK : MARKER_LOST;
}

bool
wtcache_set_marker(WtcRedis *r, const char *marker_key, int64 version,
				   char *err, size_t errlen)
{
	WtcReply	reply = {.type = WTC_REPLY_NIL};
	char		vbuf[24];

	snprintf(vbuf, sizeof(vbuf), INT64_FORMAT, version);
	if (!wtc_redis_commandv(r, &reply, 3, "SET", marker_key, vbuf) ||
		reply.type == WTC_REPLY_ERROR)
	{
		snprintf(err, errlen, "could not set the generation marker: %s",
				 reply.type == WTC_REPLY_ERROR ? reply.str : wtc_redis_errstr(r));
		return false;
	}
	return true;
}
