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
 * FLUSHALL, failover to a stale replica): the worker then resyncs.  Next
 * to each marker, in the same slot, "<marker>:wal" says where in the
 * database's WAL history the marker was last raised, so that the worker
 * can tell a Redis that is ahead of the database (markers.c).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "push.h"
#include "progress.h"
#include "redis.h"
#include "settings.h"
#include "keyspace.h"

/* rows per EVALSHA: bounds Lua's time per call and the argument vector */
#define ROWS_PER_CALL 128
/* above this, a call reads its values a row at a time (apply_script) */
#define MGET_MAX_AVG_PAYLOAD 1024
#define TAGS_PER_CALL 512

/*
 * KEYS: row keys (but see "m" below).  ARGV[1]: tombstone TTL in
 * seconds; ARGV[2]: flags, "t" when rows carry a TTL, "g" to read and
 * write the values a call at a time (see below).  Then per row: ["m": row
 * key,] version, payload ("" = delete)[, ttl_ms].  Returns the number of
 * rows applied and a string with a character per row, "1" where Redis now
 * holds that row's version (applied now, or by an earlier send of the same
 * batch), "0" where it holds a newer one: the rows whose events the worker
 * then publishes (publish_script).  A row's
 * tombstone is its key plus ":t": same hash tag, same slot.  A row written
 * with a TTL gets one too, which outlives it, so that a reader's fill
 * leased before the row expired sees it changed and is refused.  An
 * applied change also deletes the row's fill lease "<row key>:l": a fill
 * whose table read missed it must be refused even if the value it wrote
 * was evicted meanwhile (read.c).  Only a change that finds no value does:
 * a lease is taken only while the row key is missing (in one script with
 * the check), the fill that holds it deletes it, and whatever else writes
 * the key is a change applied here, so the first one after a lease finds
 * the key missing.  That saves a call a row where values are kept.
 * (pcall: while its slot migrates, Redis refuses to touch a key that is
 * not on this node, as for the tombstone; but see "m" below.)
 * In a Cluster the rows of one call may be of one slot ("k" in ARGV[2]):
 * the tombstone and lease keys are then KEYS too, three per row, so that
 * while a slot migrates Redis answers ASK or TRYAGAIN for the whole call,
 * which cluster.c follows, before anything ran.  Or they may be of every
 * slot one master serves ("m"): KEYS is then only the first row key, which
 * routes the call, and each row's key leads its ARGV, with "c" followed by
 * its tombstone and lease keys.  (Rows of a table with a key template name
 * their companions so, since those are not the row key and a suffix
 * (keyspace.h): as KEYS, "k", also outside a Cluster, or in ARGV, "m" and
 * "c"; a call holds rows of one kind.)  Redis declares keys
 * of one slot at most, but lets a script without flags touch undeclared
 * keys of any slot its node serves; one that is not (moved, or migrating
 * and gone) stops the script with an error, the rows before it applied.
 * So in such a call a row writes nothing before its lease is deleted (not
 * with pcall there) and its tombstone before its value: a row stopped half
 * way still has its old value (or none), which the batch sent again
 * replaces.  (A missing key stops it before that: pcall's GETRANGE fails,
 * and the DEL that follows raises.)  Its first key may be of a migrating
 * slot and missing: the ASK that Redis then answers is not followed
 * (redis.c), since the importing node, asked, would serve every key of
 * that slot, moved yet or not.
 * With "g" in ARGV[2] the row keys' values are read with one MGET and the
 * plain values written with one MSET: a call into Redis from Lua costs more
 * than the command, and a GETRANGE and a SET a row were most of Redis's
 * time in a drain (3.6 µs a row, 2.8 µs with these).  Not in "m" calls
 * (one command may not span slots), nor for rows of more than
 * MGET_MAX_AVG_PAYLOAD bytes on average, where copying whole values into
 * Lua costs more than the calls.  A value MGET did not return or that
 * carries no version is looked at as before.  A batch carries each key
 * once, but a key met again in a call (two tables' names swapped between
 * their loads) first writes what is pending and reads it anew.  Without the
 * rights to MGET or MSET (a Redis ACL older than this script) the call
 * falls back to a command a row.
 */
/*
 * Lua, at the first row of an apply call: refuse the whole call when Redis
 * is out of memory (maxmemory reached, nothing to evict), before it writes
 * anything.  Redis refuses a script's first command that may add data
 * (SET, HSET: "denyoom"), but once the script wrote anything, even a DEL,
 * it lets it finish: so a call whose first write is the DEL of a lease (a
 * row new to Redis) or of a hash being rewritten would go past maxmemory
 * by a whole call, and an insert-heavy load would never be stopped by it.
 * SETRANGE of nothing on the row's lease key is such a command that
 * changes nothing (it creates no key and leaves a value as it is).  Any
 * other error (a NOPERM from an ACL without SETRANGE, a key its node does
 * not serve) is left to the row's own commands, as before.
 */
#define LUA_OOM_PROBE \
"  if i == 1 then\n" \
"    local p = pcall('SETRANGE', lk, 0, '')\n" \
"    if type(p) == 'table' and p.err and string.find(p.err, 'OOM', 1, true) then return redis.error_reply(p.err) end\n" \
"  end\n"

static const char apply_script[] =
"local call, pcall, match, tonumber = redis.call, redis.pcall, string.match, tonumber\n"
"local tomb_ttl = ARGV[1]\n"
"local stride = string.find(ARGV[2], 't', 1, true) and 3 or 2\n"
"local kstride = string.find(ARGV[2], 'k', 1, true) and 3 or 1\n"
"local keyed = string.find(ARGV[2], 'm', 1, true) and 1 or 0\n"
"local named = keyed == 1 and string.find(ARGV[2], 'c', 1, true) and 2 or 0\n"
"local companion = keyed == 1 and call or pcall\n"
"local applied = 0\n"
"local step = stride + keyed + named\n"
"local nrows = keyed == 1 and (#ARGV - 2) / step or #KEYS / kstride\n"
"local heads = false\n"
"if string.find(ARGV[2], 'g', 1, true) then\n"
"  local rks = {}\n"
"  for i = 1, nrows do rks[i] = KEYS[(i - 1) * kstride + 1] end\n"
"  heads = pcall('MGET', unpack(rks))\n"
"  if heads.err then heads = false end\n"
"end\n"
"local sets, seen, held = {}, {}, {}\n"
"local function flush_sets()\n"
"  if #sets > 0 then\n"
"    local r = pcall('MSET', unpack(sets))\n"
"    if type(r) == 'table' and r.err then\n"
"      for j = 1, #sets, 2 do call('SET', sets[j], sets[j + 1]) end\n"
"    end\n"
"    sets = {}\n"
"  end\n"
"end\n"
"for i = 1, nrows do\n"
"  local a = 3 + (i - 1) * step\n"
"  local rk = keyed == 1 and ARGV[a] or KEYS[(i - 1) * kstride + 1]\n"
"  local tk = kstride == 3 and KEYS[(i - 1) * 3 + 2] or named == 2 and ARGV[a + 1] or rk .. " WTC_LUA_STR(WTC_KEY_TOMBSTONE_SUFFIX) "\n"
"  local lk = kstride == 3 and KEYS[(i - 1) * 3 + 3] or named == 2 and ARGV[a + 2] or rk .. " WTC_LUA_STR(WTC_KEY_LEASE_SUFFIX) "\n"
"  a = a + keyed + named\n"
LUA_OOM_PROBE
"  local v = tonumber(ARGV[a])\n"
"  local cur\n"
"  if seen[rk] then flush_sets() elseif heads and heads[i] then cur = match(heads[i], " WTC_LUA_VALUE_VERSION ") end\n"
"  if not cur then\n"
"    local head = pcall('GETRANGE', rk, 0, 24)\n"
"    if type(head) == 'string' then cur = match(head, " WTC_LUA_VALUE_VERSION ") else call('DEL', rk) end\n"
"  end\n"
"  local has_value = cur ~= nil\n"
"  if cur then cur = tonumber(cur) else\n"
"    local t = pcall('GET', tk)\n"
"    cur = (type(t) == 'string' and tonumber(t)) or 0\n"
"  end\n"
"  if v > cur then\n"
"    local payload = ARGV[a + 1]\n"
"    if not has_value then companion('DEL', lk) end\n"
"    if payload == '' then\n"
"      call('SET', tk, ARGV[a], 'EX', tomb_ttl)\n"
"      call('DEL', rk)\n"
"    elseif stride == 3 and ARGV[a + 2] ~= '0' then\n"
"      call('SET', tk, ARGV[a], 'EX', tomb_ttl + math.ceil(tonumber(ARGV[a + 2]) / 1000))\n"
"      call('SET', rk, payload, 'PX', ARGV[a + 2])\n"
"    elseif heads then\n"
"      sets[#sets + 1] = rk\n"
"      sets[#sets + 1] = payload\n"
"    else\n"
"      call('SET', rk, payload)\n"
"    end\n"
"    seen[rk] = true\n"
"    applied = applied + 1\n"
"  end\n"
"  held[i] = v >= cur and '1' or '0'\n"
"end\n"
"flush_sets()\n"
"return {applied, table.concat(held)}\n";

/*
 * The rows of hash-format tables (keyspace.h): the same compare-and-set,
 * call modes ("k", "m"), flags ("t"), companions and reply as
 * apply_script's, with a row's fields in place of its payload.  Per row:
 * ["m": row key,] version, the number of field arguments that follow ("0"
 * = delete)[, ttl_ms], then field, value, field, value...  So rows have no
 * fixed stride, and the script walks ARGV.
 * The version Redis holds is the hash's "_v" (HMGET: an ACL set up for
 * 1.2 allows it), or, when the key holds a string (the JSON of a format
 * change not yet delivered, or a stale fill of it), the "_v" at its head,
 * so a key of either form is compared by its version, then replaced: DEL
 * then HSET of "_v" and every field (a field of a column now NULL must
 * go), with PEXPIRE for a TTL.  All of it in this one script, so no reader
 * ever sees a hash half written, without "_v", or of two versions.  A key
 * of another type is not wtcache's: removed, as apply_script removes it.
 * No MGET fast path: MGET sees only strings.  (A key its node does not
 * serve, in an "m" call: both pcalls fail, and the DEL raises, before this
 * row wrote anything.)
 */
static const char apply_hash_script[] =
"local call, pcall, match, tonumber = redis.call, redis.pcall, string.match, tonumber\n"
"local tomb_ttl = ARGV[1]\n"
"local with_ttl = string.find(ARGV[2], 't', 1, true) and 1 or 0\n"
"local kstride = string.find(ARGV[2], 'k', 1, true) and 3 or 1\n"
"local keyed = string.find(ARGV[2], 'm', 1, true) and 1 or 0\n"
"local named = keyed == 1 and string.find(ARGV[2], 'c', 1, true) and 2 or 0\n"
"local companion = keyed == 1 and call or pcall\n"
"local applied, held = 0, {}\n"
"local a, i = 3, 0\n"
"while a <= #ARGV do\n"
"  i = i + 1\n"
"  local rk = keyed == 1 and ARGV[a] or KEYS[(i - 1) * kstride + 1]\n"
"  local tk = kstride == 3 and KEYS[(i - 1) * 3 + 2] or named == 2 and ARGV[a + 1] or rk .. " WTC_LUA_STR(WTC_KEY_TOMBSTONE_SUFFIX) "\n"
"  local lk = kstride == 3 and KEYS[(i - 1) * 3 + 3] or named == 2 and ARGV[a + 2] or rk .. " WTC_LUA_STR(WTC_KEY_LEASE_SUFFIX) "\n"
"  a = a + keyed + named\n"
LUA_OOM_PROBE
"  local va = a\n"
"  local v = tonumber(ARGV[a])\n"
"  local n = tonumber(ARGV[a + 1])\n"
"  local ttl = with_ttl == 1 and ARGV[a + 2] or '0'\n"
"  local f = a + 2 + with_ttl\n"
"  a = f + n\n"
"  local cur\n"
"  local h = pcall('HMGET', rk, " WTC_LUA_STR(WTC_VALUE_VERSION) ")\n"
"  if h.err == nil then cur = h[1] or nil else\n"
"    local head = pcall('GETRANGE', rk, 0, 24)\n"
"    if type(head) == 'string' then cur = match(head, " WTC_LUA_VALUE_VERSION ") else call('DEL', rk) end\n"
"  end\n"
"  cur = cur and tonumber(cur)\n"
"  local has_value = cur ~= nil\n"
"  if not cur then\n"
"    local t = pcall('GET', tk)\n"
"    cur = (type(t) == 'string' and tonumber(t)) or 0\n"
"  end\n"
"  if v > cur then\n"
"    if not has_value then companion('DEL', lk) end\n"
"    if n == 0 then\n"
"      call('SET', tk, ARGV[va], 'EX', tomb_ttl)\n"
"      call('DEL', rk)\n"
"    else\n"
"      if ttl ~= '0' then call('SET', tk, ARGV[va], 'EX', tomb_ttl + math.ceil(tonumber(ttl) / 1000)) end\n"
"      call('DEL', rk)\n"
"      call('HSET', rk, " WTC_LUA_STR(WTC_VALUE_VERSION) ", ARGV[va], unpack(ARGV, f, f + n - 1))\n"
"      if ttl ~= '0' then call('PEXPIRE', rk, ttl) end\n"
"    end\n"
"    applied = applied + 1\n"
"  end\n"
"  held[i] = v >= cur and '1' or '0'\n"
"end\n"
"return {applied, table.concat(held)}\n";

/*
 * KEYS: the clock key, then tag keys.  ARGV: tag key TTL in seconds.
 * Gives every tag a new stamp (tags.c).
 */
static const char tags_script[] =
WTCACHE_LUA_NEW_STAMP
"local stamp = new_stamp(KEYS[1])\n"
"for i = 2, #KEYS do redis.call('SET', KEYS[i], stamp, 'EX', ARGV[1]) end\n"
"return 0\n";

/*
 * KEYS: the database's event sequence key (P{D}:event_seq).  ARGV[1]: the
 * events channel; ARGV[2]: "p" to publish without asking whether anyone
 * listens (in a Cluster PUBSUB NUMSUB counts only the subscribers of one
 * node, and a master's count leaves out its replicas' subscribers), "s"
 * to publish nothing and advance the sequence by one (publishing is off:
 * a subscriber sees the gap when it comes back on); then the messages,
 * each a JSON object.  Numbers them on from the sequence key and
 * publishes each with "seq" as its first member.  The sequence advances
 * also when nobody listens, so that a subscriber that reads it after
 * subscribing knows the number the next message carries.  One script, on
 * the database's slot: the numbers are handed out and published in one
 * order, which is every subscriber's.  GET and SET, not INCRBY, which a
 * Redis ACL set up for an earlier version does not allow.  A key that is
 * not a number below 2^53 (another type, a value someone wrote) starts the
 * numbering again at 1, which subscribers see as a gap, rather than stop
 * delivery; numbers are written with %.0f, since Lua turns numbers of 15
 * digits and more into text in exponent form.  Returns the first number.
 */
static const char publish_script[] =
"local cur = redis.pcall('GET', KEYS[1])\n"
"if type(cur) == 'table' then redis.call('DEL', KEYS[1]) cur = nil end\n"
"cur = tonumber(cur)\n"
"if not cur or cur < 0 or cur >= 9007199254740992 or cur ~= math.floor(cur) then cur = 0 end\n"
"local first = cur + 1\n"
"if ARGV[2] == 's' then\n"
"  redis.call('SET', KEYS[1], string.format('%.0f', first))\n"
"  return first\n"
"end\n"
"local n = #ARGV - 2\n"
"if n <= 0 then return 0 end\n"
"redis.call('SET', KEYS[1], string.format('%.0f', first + n - 1))\n"
"local chan = ARGV[1]\n"
"if ARGV[2] == 'p' or redis.call('PUBSUB', 'NUMSUB', chan)[2] > 0 or redis.call('PUBSUB', 'NUMPAT') > 0 then\n"
"  for i = 1, n do\n"
"    redis.call('PUBLISH', chan, '{\"seq\":' .. string.format('%.0f', first + i - 1) .. ',' .. string.sub(ARGV[i + 2], 2))\n"
"  end\n"
"end\n"
"return first\n";

/*
 * KEYS: marker, its WAL position.  ARGV: acked (highest version we know
 * Redis has), new, the WAL position to record with new.  Returns {ok,
 * seen, at}: ok = 0 when the marker is missing or behind (and then leaves
 * it alone), seen = the marker's value or -1, at = the WAL position it had
 * ("" if none: written by a version without them).  The position changes
 * only with the marker, in the same script: the two always agree, on a
 * replica too.
 */
static const char marker_script[] =
"local cur = redis.call('GET', KEYS[1])\n"
"local at = redis.call('GET', KEYS[2]) or ''\n"
"if not cur then return {0, -1, at} end\n"
"cur = tonumber(cur) or -1\n"
"if cur < tonumber(ARGV[1]) then return {0, cur, at} end\n"
"if tonumber(ARGV[2]) > cur then\n"
"  redis.call('SET', KEYS[1], ARGV[2])\n"
"  redis.call('SET', KEYS[2], ARGV[3])\n"
"end\n"
"return {1, cur, at}\n";

/*
 * Key templates (keyspace.h).  KEYS[1]: the claim of a key space.  ARGV:
 * the claiming table's table key, its database's head ("D:").  Claims it
 * for the database unless another database holds it; returns the holder
 * (the table key of the table that claimed it).  A claim the database
 * holds already is written again under the table's name now.
 */
static const char claim_script[] =
"local v = redis.pcall('GET', KEYS[1])\n"
"if type(v) == 'table' then return 'a key that is no claim' end\n"
"if v and string.sub(v, 1, #ARGV[2]) ~= ARGV[2] then return v end\n"
"if v ~= ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end\n"
"return ARGV[1]\n";

/* KEYS[1]: a claim; ARGV[1]: a database's head.  Deletes the claim if that database holds it. */
static const char release_script[] =
"local v = redis.pcall('GET', KEYS[1])\n"
"if type(v) == 'string' and string.sub(v, 1, #ARGV[1]) == ARGV[1] then\n"
"  redis.call('DEL', KEYS[1])\n"
"  return 1\n"
"end\n"
"return 0\n";

/*
 * KEYS: keys a template renders, found by SCAN.  Removes those that hold
 * a row wtcache wrote: a string with the value head, or a hash with "_v".
 * An application's key that only looks like one (the key space is shared
 * with the application under an empty prefix) stays.  Returns how many.
 */
static const char purge_rows_script[] =
"local n = 0\n"
"local head = '" WTC_VALUE_HEAD "'\n"
"for i = 1, #KEYS do\n"
"  local h = redis.pcall('GETRANGE', KEYS[i], 0, #head - 1)\n"
"  local ours = h == head\n"
"  if type(h) == 'table' then\n"
"    local m = redis.pcall('HMGET', KEYS[i], " WTC_LUA_STR(WTC_VALUE_VERSION) ")\n"
"    ours = m.err == nil and m[1] ~= false and m[1] ~= nil\n"
"  end\n"
"  if ours then n = n + redis.call('UNLINK', KEYS[i]) end\n"
"end\n"
"return n\n";

bool
wtcache_load_scripts(WtcRedis *r, RedisScripts *scripts, char *err, size_t errlen)
{
	return wtc_redis_load_script(r, claim_script, scripts->claim_sha, err, errlen) &&
		wtc_redis_load_script(r, release_script, scripts->release_sha, err, errlen) &&
		wtc_redis_load_script(r, purge_rows_script, scripts->purge_rows_sha, err, errlen) &&
		wtc_redis_load_script(r, apply_script, scripts->apply_sha, err, errlen) &&
		wtc_redis_load_script(r, apply_hash_script, scripts->apply_hash_sha, err, errlen) &&
		wtc_redis_load_script(r, tags_script, scripts->tags_sha, err, errlen) &&
		wtc_redis_load_script(r, publish_script, scripts->publish_sha, err, errlen) &&
		wtc_redis_load_script(r, marker_script, scripts->marker_sha, err, errlen);
}

/* Queue the EVALSHAs that give the batch's tags new stamps; *ncalls counts them. */
static bool
append_tag_bumps(WtcRedis *r, const RedisScripts *scripts, const TagBumps *bumps,
				 int *ncalls, char *err, size_t errlen)
{
	const char **argv;
	size_t	   *lens;
	char		ttl[16];
	char		nkeys_buf[16];

	if (bumps == NULL || bumps->ntags == 0)
		return true;
	snprintf(ttl, sizeof(ttl), "%d", WTCACHE_TAG_TTL_S);
	argv = palloc(sizeof(char *) * (TAGS_PER_CALL + 6));
	lens = palloc(sizeof(size_t) * (TAGS_PER_CALL + 6));
	for (int start = 0; start < bumps->ntags; start += TAGS_PER_CALL)
	{
		int			n = Min(TAGS_PER_CALL, bumps->ntags - start);
		int			argc = 0;

		argv[argc] = "EVALSHA";
		lens[argc++] = 7;
		argv[argc] = scripts->tags_sha;
		lens[argc++] = 40;
		snprintf(nkeys_buf, sizeof(nkeys_buf), "%d", n + 1);
		argv[argc] = nkeys_buf;
		lens[argc++] = strlen(nkeys_buf);
		argv[argc] = bumps->clock_key;
		lens[argc++] = strlen(bumps->clock_key);
		for (int i = 0; i < n; i++)
		{
			argv[argc] = bumps->keys[start + i];
			lens[argc++] = bumps->lens[start + i];
		}
		argv[argc] = ttl;
		lens[argc++] = strlen(ttl);
		if (!wtc_redis_append(r, argc, argv, lens))
		{
			snprintf(err, errlen, "could not queue a command: %s", wtc_redis_errstr(r));
			return false;
		}
		(*ncalls)++;
	}
	return true;
}

/* Give tags new stamps now (after a whole-table purge). */
bool
wtcache_bump_tags(WtcRedis *r, const RedisScripts *scripts, const TagBumps *bumps,
				  char *err, size_t errlen)
{
	int			ncalls = 0;
	WtcReply	reply;
	bool		ok = true;

	if (!append_tag_bumps(r, scripts, bumps, &ncalls, err, errlen))
		return false;
	if (ncalls == 0)
		return true;
	if (!wtc_redis_flush(r))
	{
		snprintf(err, errlen, "could not send to Redis: %s", wtc_redis_errstr(r));
		return false;
	}
	for (int i = 0; i < ncalls; i++)
	{
		if (!wtc_redis_read(r, &reply))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return false;
		}
		if (reply.type == WTC_REPLY_ERROR && ok)
		{
			snprintf(err, errlen, "Redis refused a tag invalidation: %s", reply.str);
			ok = false;
		}
	}
	return ok;
}

/*
 * Queue one marker script call per marker: check against acked, raise to
 * new_version, recording position with it.
 */
static bool
append_marker_updates(WtcRedis *r, const RedisScripts *scripts, const MarkerSet *markers,
					  int64 acked, int64 new_version, const char *position)
{
	char		acked_buf[24];
	char		new_buf[24];

	snprintf(acked_buf, sizeof(acked_buf), INT64_FORMAT, acked);
	snprintf(new_buf, sizeof(new_buf), INT64_FORMAT, Max(acked, new_version));
	for (int m = 0; m < markers->n; m++)
	{
		const char *argv[8] = {"EVALSHA", scripts->marker_sha, "2", markers->keys[m],
		markers->wal_keys[m], acked_buf, new_buf, position};
		size_t		lens[8];

		for (int i = 0; i < 8; i++)
			lens[i] = strlen(argv[i]);
		if (!wtc_redis_append(r, 8, argv, lens))
			return false;
	}
	return true;
}

/*
 * Read the replies of append_marker_updates, all of them.  *seen: the
 * lowest value a marker had (-1: one is missing).  positions, if not NULL:
 * per marker, the WAL position it had (palloc'd), NULL if none.
 */
static MarkerCheck
read_marker_replies(WtcRedis *r, int nmarkers, int64 *seen, char **positions,
					char *err, size_t errlen)
{
	MarkerCheck result = MARKER_OK;

	for (int m = 0; m < nmarkers; m++)
	{
		WtcReply	reply;
		int64		one = -1;

		if (!wtc_redis_read(r, &reply))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return MARKER_ERROR;
		}
		if (result == MARKER_ERROR)
			continue;
		if (reply.type != WTC_REPLY_ARRAY || reply.nelem != 3 ||
			reply.elem[0].type != WTC_REPLY_INTEGER || reply.elem[1].type != WTC_REPLY_INTEGER ||
			reply.elem[2].type != WTC_REPLY_STRING)
		{
			snprintf(err, errlen, "generation marker update failed: %s",
					 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
			result = MARKER_ERROR;
			continue;
		}
		one = reply.elem[1].integer;
		if (positions != NULL)
			positions[m] = reply.elem[2].len > 0 ? pnstrdup(reply.elem[2].str, reply.elem[2].len) : NULL;
		if (m == 0 || one < *seen)
			*seen = one;
		if (reply.elem[0].integer != 1)
			result = MARKER_LOST;
	}
	return result;
}

typedef struct GroupOrder
{
	int			group;
	int			pos;
} GroupOrder;

static int
group_order_cmp(const void *a, const void *b)
{
	const GroupOrder *x = a;
	const GroupOrder *y = b;

	if (x->group != y->group)
		return x->group < y->group ? -1 : 1;
	return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

/*
 * Calls that span slots are paused after one of them failed: a slot
 * moved or is migrating, and rows are delivered a slot at a time, through
 * the redirects cluster.c follows, until this time.  The worker reads a
 * batch's replies before it sends the next, so sent_by_master says how
 * the batch being read was sent.
 */
#define BY_MASTER_PAUSE_MS	10000

static TimestampTz by_master_paused_until = 0;
static bool sent_by_master = false;
static bool resend_by_slot = false;	/* the next send: the batch again */

/* What a call spanning slots fails with when a slot moved or migrates. */
static bool
slot_moved_error(const char *msg)
{
	return strstr(msg, "non local key") != NULL ||
		strncmp(msg, "ASK ", 4) == 0 || strncmp(msg, "MOVED ", 6) == 0 ||
		strncmp(msg, "TRYAGAIN", 8) == 0 || strncmp(msg, "CROSSSLOT", 9) == 0;
}

/*
 * In a Cluster a call goes to one master: the items again, grouped by the
 * master that serves their slot (*by_master) or by slot, each key's
 * changes still in their order.  *groups gets the group of each, *order
 * the position in items of each.  *by_master is cleared when a slot has no
 * known master.
 */
static PushItem *
group_for_cluster(WtcRedis *r, PushItem *items, int nitems, bool *by_master, int **groups,
				  int **order_out)
{
	GroupOrder *order = palloc(sizeof(GroupOrder) * Max(nitems, 1));
	PushItem   *grouped = palloc(sizeof(PushItem) * Max(nitems, 1));

	*groups = palloc(sizeof(int) * Max(nitems, 1));
	*order_out = palloc(sizeof(int) * Max(nitems, 1));
	for (int i = 0; i < nitems; i++)
	{
		int			slot = wtc_redis_key_slot(items[i].row_key, items[i].row_key_len);
		int			master = *by_master ? wtc_redis_node_of_slot(r, slot) : -1;

		if (*by_master && master < 0)
		{
			*by_master = false;
			i = -1;				/* again, by slot */
			continue;
		}
		order[i].group = *by_master ? master : slot;
		order[i].pos = i;
	}
	qsort(order, nitems, sizeof(GroupOrder), group_order_cmp);
	for (int i = 0; i < nitems; i++)
	{
		grouped[i] = items[order[i].pos];
		(*groups)[i] = order[i].group;
		(*order_out)[i] = order[i].pos;
	}
	pfree(order);
	return grouped;
}

/*
 * Queue the batch's EVALSHAs, its tag invalidations, then the generation marker update, and write
 * them all to the socket without waiting for replies, so the worker can
 * claim its next batch while Redis works.  *ncalls tells
 * wtcache_push_receive how many replies to read, *sent_order in which order
 * the items went (NULL: as given).
 */
bool
wtcache_push_send(WtcRedis *r, const RedisScripts *scripts, PushItem *items,
				  int nitems, const TagBumps *bumps, const MarkerSet *markers,
				  int64 acked, int64 new_version, const char *position, int *ncalls,
				  int **sent_order, char *err, size_t errlen)
{
	const char **argv;
	size_t	   *lens;
	char	   *numbuf;
	char		tomb_ttl[16];
	char		nkeys_buf[16];
	char		flags[8];		/* ARGV[2] of the call being built: up to 5 */
	int			start = 0;
	int			maxargs;
	bool		in_cluster = wtc_redis_mode(r) == WTC_REDIS_CLUSTER;
	bool		by_master = in_cluster && !resend_by_slot &&
		GetCurrentTimestamp() >= by_master_paused_until;
	int		   *groups = NULL;
	StringInfoData companions;

	*ncalls = 0;
	*sent_order = NULL;
	for (int i = 0; i < nitems; i++)
		items[i].held = false;
	if (in_cluster)
		items = group_for_cluster(r, items, nitems, &by_master, &groups, sent_order);
	sent_by_master = by_master;
	resend_by_slot = false;
	/*
	 * A tombstone must outlive any fill lease taken before it was written:
	 * a fill checks the tombstone it saw with its lease, and one that
	 * expired meanwhile would let a stale fill in.  Whatever the settings.
	 */
	snprintf(tomb_ttl, sizeof(tomb_ttl), "%d",
			 Max(wtcache_tombstone_ttl_s, 2 * (wtcache_fill_lease_ms / 1000 + 1)));
	maxargs = 6 + ROWS_PER_CALL * 6;
	argv = palloc(sizeof(char *) * maxargs);
	lens = palloc(sizeof(size_t) * maxargs);
	/* a Cluster's companion keys, tombstone and lease, alive until sent */
	if (in_cluster)
		initStringInfo(&companions);
	/*
	 * version and ttl digits of every row, and a hash's count of field
	 * arguments, alive until the buffer is sent
	 */
	numbuf = palloc((size_t) Max(nitems, 1) * 72);

	while (start < nitems)
	{
		bool		with_ttl = items[start].ttl_ms > 0;
		bool		hash = items[start].hash;
		bool		templated = items[start].tomb_key != NULL;
		/* companions as KEYS ("k"): a Cluster's calls of one slot, templates' */
		bool		by_key = !by_master && (in_cluster || templated);
		int			n = 0;
		int			argc = 0;

		/*
		 * one call: up to ROWS_PER_CALL rows of one master or slot that
		 * agree on carrying a TTL, on their format and on how their
		 * companions are named
		 */
		while (start + n < nitems && n < ROWS_PER_CALL &&
			   (items[start + n].ttl_ms > 0) == with_ttl &&
			   items[start + n].hash == hash &&
			   (items[start + n].tomb_key != NULL) == templated &&
			   (groups == NULL || groups[start + n] == groups[start]))
			n++;
		if (hash)
		{
			/* rows of any width: room for every field */
			int			need = 6 + n * 6;

			for (int i = 0; i < n; i++)
				if (items[start + i].fields != NULL)
					need += items[start + i].fields->nargs;
			if (need > maxargs)
			{
				maxargs = need;
				argv = repalloc(argv, sizeof(char *) * maxargs);
				lens = repalloc(lens, sizeof(size_t) * maxargs);
			}
		}

		argv[argc] = "EVALSHA";
		lens[argc++] = 7;
		argv[argc] = hash ? scripts->apply_hash_sha : scripts->apply_sha;
		lens[argc++] = 40;
		snprintf(nkeys_buf, sizeof(nkeys_buf), "%d", by_master ? 1 : by_key ? 3 * n : n);
		argv[argc] = nkeys_buf;
		lens[argc++] = strlen(nkeys_buf);
		if (by_master)
		{
			/* routes the call: to the master of the first row's slot */
			argv[argc] = items[start].row_key;
			lens[argc++] = items[start].row_key_len;
		}
		else if (by_key && templated)
			for (int i = 0; i < n; i++)
			{
				PushItem   *it = &items[start + i];

				argv[argc] = it->row_key;
				lens[argc++] = it->row_key_len;
				argv[argc] = it->tomb_key;
				lens[argc++] = strlen(it->tomb_key);
				argv[argc] = it->lease_key;
				lens[argc++] = strlen(it->lease_key);
			}
		else if (by_key)
		{
			int			first = 0;	/* offsets: the buffer moves while it grows */

			/* each with its NUL: sizeof, not strlen */
			resetStringInfo(&companions);
			for (int i = 0; i < n; i++)
			{
				appendBinaryStringInfo(&companions, items[start + i].row_key, items[start + i].row_key_len);
				appendBinaryStringInfo(&companions, WTC_KEY_TOMBSTONE_SUFFIX,
									   sizeof(WTC_KEY_TOMBSTONE_SUFFIX));
				appendBinaryStringInfo(&companions, items[start + i].row_key, items[start + i].row_key_len);
				appendBinaryStringInfo(&companions, WTC_KEY_LEASE_SUFFIX,
									   sizeof(WTC_KEY_LEASE_SUFFIX));
			}
			for (int i = 0; i < n; i++)
			{
				int			klen = items[start + i].row_key_len;

				argv[argc] = items[start + i].row_key;
				lens[argc++] = klen;
				argv[argc] = companions.data + first;
				lens[argc++] = klen + sizeof(WTC_KEY_TOMBSTONE_SUFFIX) - 1;
				first += klen + sizeof(WTC_KEY_TOMBSTONE_SUFFIX);
				argv[argc] = companions.data + first;
				lens[argc++] = klen + sizeof(WTC_KEY_LEASE_SUFFIX) - 1;
				first += klen + sizeof(WTC_KEY_LEASE_SUFFIX);
			}
		}
		else
			for (int i = 0; i < n; i++)
			{
				argv[argc] = items[start + i].row_key;
				lens[argc++] = items[start + i].row_key_len;
			}
		argv[argc] = tomb_ttl;
		lens[argc++] = strlen(tomb_ttl);
		{
			/*
			 * The new values' sizes stand for the current ones; a row
			 * without one (a delete, a table in invalidate mode) says
			 * nothing of what MGET would copy.
			 */
			bool		small = !by_master && !hash;
			size_t		payload = 0;
			int			f = 0;

			for (int i = 0; i < n && small; i++)
			{
				small = items[start + i].payload != NULL;
				payload += items[start + i].payload_len;
			}
			small = small && payload <= (size_t) n * MGET_MAX_AVG_PAYLOAD;
			if (with_ttl)
				flags[f++] = 't';
			if (in_cluster)
				flags[f++] = 'p';
			if (by_master)
				flags[f++] = 'm';
			else if (by_key)
				flags[f++] = 'k';
			if (by_master && templated)
				flags[f++] = 'c';
			if (small)
				flags[f++] = 'g';
			argv[argc] = flags;
			lens[argc++] = f;
		}
		for (int i = 0; i < n; i++)
		{
			PushItem   *it = &items[start + i];
			char	   *vbuf = numbuf + (size_t) (start + i) * 72;
			char	   *tbuf = vbuf + 24;
			char	   *nbuf = vbuf + 48;

			if (by_master)
			{
				argv[argc] = it->row_key;
				lens[argc++] = it->row_key_len;
				if (templated)
				{
					argv[argc] = it->tomb_key;
					lens[argc++] = strlen(it->tomb_key);
					argv[argc] = it->lease_key;
					lens[argc++] = strlen(it->lease_key);
				}
			}
			snprintf(vbuf, 24, INT64_FORMAT, it->version);
			argv[argc] = vbuf;
			lens[argc++] = strlen(vbuf);
			if (hash)
			{
				/* the count of field arguments ("0": delete), the fields after */
				snprintf(nbuf, 24, "%d", it->fields ? it->fields->nargs : 0);
				argv[argc] = nbuf;
				lens[argc++] = strlen(nbuf);
			}
			else
			{
				argv[argc] = it->payload ? it->payload : "";
				lens[argc++] = it->payload ? it->payload_len : 0;
			}
			if (with_ttl)
			{
				snprintf(tbuf, 24, INT64_FORMAT, it->ttl_ms);
				argv[argc] = tbuf;
				lens[argc++] = strlen(tbuf);
			}
			if (hash && it->fields != NULL)
				for (int j = 0; j < it->fields->nargs; j++)
				{
					argv[argc] = it->fields->args[j];
					lens[argc++] = it->fields->lens[j];
				}
		}
		if (!(by_master ? wtc_redis_append_spanning(r, argc, argv, lens) :
			  wtc_redis_append(r, argc, argv, lens)))
		{
			snprintf(err, errlen, "could not queue a command: %s", wtc_redis_errstr(r));
			return false;
		}
		(*ncalls)++;
		start += n;
	}
	/* after the rows: a reader that sees the new stamp sees the rows too */
	if (!append_tag_bumps(r, scripts, bumps, ncalls, err, errlen))
		return false;

	if (!append_marker_updates(r, scripts, markers, acked, new_version, position) ||
		!wtc_redis_flush(r))
	{
		snprintf(err, errlen, "could not send to Redis: %s", wtc_redis_errstr(r));
		return false;
	}
	return true;
}

/*
 * Read the replies of a batch sent by wtcache_push_send.  Every reply is
 * read, even after an error reply, so the connection stays in step.
 * *marker_seen: the lowest value a marker had.
 */
PushResult
wtcache_push_receive(WtcRedis *r, PushItem *items, int nitems, const int *sent_order,
					 int ncalls, int nmarkers, int64 *applied,
					 int64 *marker_seen, char *err, size_t errlen)
{
	PushResult	result = PUSH_OK;
	WtcReply	reply;
	int			pos = 0;		/* sent position of the next call's first row */

	*applied = 0;
	for (int i = 0; i < ncalls; i++)
	{
		if (!wtc_redis_read(r, &reply))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return PUSH_FAILED;
		}
		if (reply.type == WTC_REPLY_ARRAY && reply.nelem == 2 &&
			reply.elem[0].type == WTC_REPLY_INTEGER && reply.elem[1].type == WTC_REPLY_STRING &&
			pos + reply.elem[1].len <= (size_t) nitems && result == PUSH_OK)
		{
			/*
			 * A row push: what it applied, and which rows Redis holds.
			 * After a failed call the positions are unknown, and the batch
			 * is sent again anyway.
			 */
			*applied += reply.elem[0].integer;
			for (size_t j = 0; j < reply.elem[1].len; j++, pos++)
				items[sent_order ? sent_order[pos] : pos].held = reply.elem[1].str[j] == '1';
		}
		else if (reply.type == WTC_REPLY_INTEGER)
			continue;			/* a tag invalidation */
		else if (result == PUSH_OK)
		{
			snprintf(err, errlen, "Redis refused a row push: %s",
					 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
			/*
			 * A call that spans slots stops at a key its master no longer
			 * serves (a slot moved or migrating), the rows before it
			 * applied.  Rows pushed twice are no-ops, so the batch can be
			 * sent again, a slot at a time, which follows the redirects.
			 */
			result = sent_by_master && reply.type == WTC_REPLY_ERROR &&
				slot_moved_error(reply.str) ? PUSH_RESEND : PUSH_FAILED;
		}
	}
	if (result == PUSH_RESEND)
	{
		resend_by_slot = true;
		by_master_paused_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															 BY_MASTER_PAUSE_MS);
		ereport(LOG,
				(errmsg("wtcache: a script call spanning the slots of one Redis Cluster master failed; delivering slot by slot for %d s",
						BY_MASTER_PAUSE_MS / 1000),
				 errdetail_internal("%s", err)));
	}
	{
		char		marker_err[256];
		MarkerCheck mc = read_marker_replies(r, nmarkers, marker_seen, NULL,
											 marker_err, sizeof(marker_err));

		if (result != PUSH_OK)
			return result;
		if (mc == MARKER_ERROR)
		{
			strlcpy(err, marker_err, errlen);
			return PUSH_FAILED;
		}
		if (mc == MARKER_LOST)
			return PUSH_MARKER_LOST;
	}
	return result;
}

/* Messages per call of publish_script: bounds the time Redis spends in one. */
#define EVENTS_PER_CALL 1024

/*
 * Publish messages on the events channel, numbered from the database's
 * sequence key (publish_script), in the order given; with skip, publish
 * nothing and advance the sequence by one.  False when Redis failed; some
 * may have been published then, and are published again, with new
 * numbers, when the caller retries.
 */
bool
wtcache_publish_messages(WtcRedis *r, const RedisScripts *scripts, const char *seq_key,
						 char *const *messages, const size_t *lens, int n, bool skip,
						 char *err, size_t errlen)
{
	const char **argv;
	size_t	   *argl;
	StringInfoData channel;
	const char *mode = skip ? "s" :
		(wtc_redis_mode(r) == WTC_REDIS_CLUSTER ||
		 wtcache_publish_events == WTC_PUBLISH_ALWAYS) ? "p" : "";
	int			ncalls = 0;
	bool		ok = true;

	if (skip)
		n = 0;
	else if (n == 0)
		return true;
	initStringInfo(&channel);
	wtcache_events_channel(&channel);
	argv = palloc(sizeof(char *) * (EVENTS_PER_CALL + 6));
	argl = palloc(sizeof(size_t) * (EVENTS_PER_CALL + 6));
	for (int start = 0; start < n || (skip && start == 0); start += EVENTS_PER_CALL)
	{
		int			m = Min(EVENTS_PER_CALL, n - start);
		int			argc = 0;

		argv[argc] = "EVALSHA";
		argl[argc++] = 7;
		argv[argc] = scripts->publish_sha;
		argl[argc++] = 40;
		argv[argc] = "1";
		argl[argc++] = 1;
		argv[argc] = seq_key;
		argl[argc++] = strlen(seq_key);
		argv[argc] = channel.data;
		argl[argc++] = channel.len;
		argv[argc] = mode;
		argl[argc++] = strlen(mode);
		for (int i = 0; i < m; i++)
		{
			argv[argc] = messages[start + i];
			argl[argc++] = lens[start + i];
		}
		if (!wtc_redis_append(r, argc, argv, argl))
		{
			snprintf(err, errlen, "could not queue a command: %s", wtc_redis_errstr(r));
			return false;
		}
		ncalls++;
	}
	if (!wtc_redis_flush(r))
	{
		snprintf(err, errlen, "could not send to Redis: %s", wtc_redis_errstr(r));
		return false;
	}
	for (int i = 0; i < ncalls; i++)
	{
		WtcReply	reply;

		if (!wtc_redis_read(r, &reply))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return false;
		}
		if (reply.type != WTC_REPLY_INTEGER && ok)
		{
			snprintf(err, errlen, "Redis refused to publish events: %s",
					 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
			ok = false;
		}
	}
	return ok;
}

/*
 * Read the replies of ncalls removals, all of them, so the connection
 * stays in step; *removed adds what they removed.  False when one failed:
 * not all removed, so the purge must not be acknowledged.
 */
static bool
read_removals(WtcRedis *r, int ncalls, int64 *removed, char *err, size_t errlen)
{
	bool		ok = true;

	for (int i = 0; i < ncalls; i++)
	{
		WtcReply	reply;

		if (!wtc_redis_read(r, &reply))
		{
			snprintf(err, errlen, "%s", wtc_redis_errstr(r));
			return false;
		}
		if (reply.type == WTC_REPLY_ERROR && ok)
		{
			snprintf(err, errlen, "removing keys failed: %s", reply.str);
			ok = false;
		}
		if (reply.type == WTC_REPLY_INTEGER)
			*removed += reply.integer;
	}
	return ok;
}

/*
 * UNLINK keys that SCAN returned.  In a Cluster each key on its own (they
 * may be of any slot), pipelined.
 */
static bool
unlink_keys(WtcRedis *r, const WtcReply *keys, int64 *removed, char *err, size_t errlen)
{
	const char **argv = palloc(sizeof(char *) * (keys->nelem + 1));
	size_t	   *lens = palloc(sizeof(size_t) * (keys->nelem + 1));
	int			ncalls = 0;

	argv[0] = "UNLINK";
	lens[0] = 6;
	if (wtc_redis_mode(r) == WTC_REDIS_CLUSTER)
	{
		for (int i = 0; i < keys->nelem; i++)
		{
			argv[1] = keys->elem[i].str;
			lens[1] = keys->elem[i].len;
			if (!wtc_redis_append(r, 2, argv, lens))
				break;
			ncalls++;
		}
	}
	else
	{
		for (int i = 0; i < keys->nelem; i++)
		{
			argv[i + 1] = keys->elem[i].str;
			lens[i + 1] = keys->elem[i].len;
		}
		if (wtc_redis_append(r, keys->nelem + 1, argv, lens))
			ncalls = 1;
	}
	if (ncalls == 0 || !wtc_redis_flush(r))
	{
		snprintf(err, errlen, "%s", wtc_redis_errstr(r));
		return false;
	}
	return read_removals(r, ncalls, removed, err, errlen);
}

/* Remove every key matching pattern (SCAN + UNLINK on every master, a page at a time). */
bool
wtcache_purge_pattern(WtcRedis *r, const char *pattern, int64 *removed,
					  char *err, size_t errlen)
{
	*removed = 0;
	for (int node = 0; node < wtc_redis_node_count(r); node++)
	{
		char		cursor[32] = "0";

		do
		{
			WtcReply	reply;

			if (!wtc_redis_scan(r, node, cursor, pattern, &reply))
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
			if (reply.elem[1].nelem > 0 &&
				!unlink_keys(r, &reply.elem[1], removed, err, errlen))
				return false;
			wtcache_progress_removed(*removed);
		} while (strcmp(cursor, "0") != 0);
	}
	return true;
}

/*
 * Check every marker and raise it to new_version, recording position with
 * it.  *seen: the lowest value a marker had (-1: one is missing).
 * positions, if not NULL, gets the WAL position each marker had (see
 * read_marker_replies).
 */
MarkerCheck
wtcache_check_markers(WtcRedis *r, const RedisScripts *scripts, const MarkerSet *markers,
					  int64 acked, int64 new_version, const char *position,
					  int64 *seen, char **positions, char *err, size_t errlen)
{
	if (!append_marker_updates(r, scripts, markers, acked, new_version, position) ||
		!wtc_redis_flush(r))
	{
		snprintf(err, errlen, "%s", wtc_redis_errstr(r));
		return MARKER_ERROR;
	}
	return read_marker_replies(r, markers->n, seen, positions, err, errlen);
}

/* Set every marker (after a resync, or to start the markers of new masters). */
bool
wtcache_set_markers(WtcRedis *r, const MarkerSet *markers, int64 version,
					const char *position, char *err, size_t errlen)
{
	for (int m = 0; m < markers->n; m++)
		if (!wtcache_set_marker(r, markers->keys[m], markers->wal_keys[m], version, position,
								err, errlen))
			return false;
	return true;
}

/*
 * The markers to keep: the database's, next to its tags and query results;
 * in a Cluster also one on every master (wtcache_master_marker_key), so a
 * failover that loses writes on any master is noticed.
 */
void
wtcache_marker_set(WtcRedis *r, const char *dbname, MarkerSet *set)
{
	int			nmasters = wtc_redis_mode(r) == WTC_REDIS_CLUSTER ? wtc_redis_node_count(r) : 0;
	StringInfoData key;

	set->keys = palloc(sizeof(char *) * (1 + nmasters));
	set->wal_keys = palloc(sizeof(char *) * (1 + nmasters));
	set->ack_keys = palloc(sizeof(char *) * (1 + nmasters));
	initStringInfo(&key);
	wtcache_append_marker_key(&key, dbname);
	set->keys[0] = key.data;
	set->n = 1;
	for (int m = 0; m < nmasters; m++)
	{
		char	   *k = wtcache_master_marker_key(r, dbname, m);

		if (k != NULL)
			set->keys[set->n++] = k;
	}
	for (int m = 0; m < set->n; m++)
	{
		set->wal_keys[m] = wtcache_marker_wal_key(set->keys[m]);
		set->ack_keys[m] = wtcache_marker_ack_key(set->keys[m]);
	}
}

/*
 * Set a marker and its WAL position: the position first, so that a marker
 * is never seen with a position older than the one it was set with.  Two
 * SETs, not an MSET: an ACL user set up before 1.2 lacks MSET (README.md,
 * Security), and markers have no fallback.  A position without its marker (a failure in
 * between) is a marker missing, which is repaired as such.
 */
bool
wtcache_set_marker(WtcRedis *r, const char *marker_key, const char *wal_key, int64 version,
				   const char *position, char *err, size_t errlen)
{
	WtcReply	reply = {.type = WTC_REPLY_NIL};
	char		vbuf[24];

	snprintf(vbuf, sizeof(vbuf), INT64_FORMAT, version);
	if (!wtc_redis_commandv(r, &reply, 3, "SET", wal_key, position) ||
		reply.type == WTC_REPLY_ERROR ||
		!wtc_redis_commandv(r, &reply, 3, "SET", marker_key, vbuf) ||
		reply.type == WTC_REPLY_ERROR)
	{
		snprintf(err, errlen, "could not set the generation marker: %s",
				 reply.type == WTC_REPLY_ERROR ? reply.str : wtc_redis_errstr(r));
		return false;
	}
	return true;
}

/*
 * Claim the key space of a key template for owner, a table key, of the
 * database whose head (wtcache_append_claim_owner_head) it starts with.
 * *holder: who holds it now (palloc'd): owner, or a table of another
 * database.  False on Redis failure.
 */
bool
wtcache_claim_key_space(WtcRedis *r, const RedisScripts *scripts, const char *claim_key,
						const char *owner, const char *owner_head, char **holder,
						char *err, size_t errlen)
{
	WtcReply	reply;

	if (!wtc_redis_commandv(r, &reply, 6, "EVALSHA", scripts->claim_sha, "1", claim_key,
							owner, owner_head))
	{
		snprintf(err, errlen, "%s", wtc_redis_errstr(r));
		return false;
	}
	if (reply.type != WTC_REPLY_STRING)
	{
		snprintf(err, errlen, "Redis refused the claim of a key template: %s",
				 reply.type == WTC_REPLY_ERROR ? reply.str : "unexpected reply");
		return false;
	}
	*holder = pnstrdup(reply.str, reply.len);
	return true;
}

/* Give a claim back, if the database of owner_head holds it.  False on Redis failure. */
bool
wtcache_release_key_space(WtcRedis *r, const RedisScripts *scripts, const char *claim_key,
						  const char *owner_head, char *err, size_t errlen)
{
	WtcReply	reply;

	if (!wtc_redis_commandv(r, &reply, 5, "EVALSHA", scripts->release_sha, "1", claim_key,
							owner_head) ||
		reply.type == WTC_REPLY_ERROR)
	{
		snprintf(err, errlen, "could not give back the claim of a key template: %s",
				 reply.type == WTC_REPLY_ERROR ? reply.str : wtc_redis_errstr(r));
		return false;
	}
	return true;
}

/*
 * Remove keys: with rows, those that hold a row wtcache wrote
 * (purge_rows_script), else all.  In a Cluster a call per key, which may
 * be of any slot, pipelined.
 */
static bool
remove_keys(WtcRedis *r, const RedisScripts *scripts, char **keys, size_t *lens, int n,
			bool rows, int64 *removed, char *err, size_t errlen)
{
	bool		in_cluster = wtc_redis_mode(r) == WTC_REDIS_CLUSTER;
	int			per_call = in_cluster ? 1 : n;
	const char **argv = palloc(sizeof(char *) * (n + 4));
	size_t	   *argl = palloc(sizeof(size_t) * (n + 4));
	char		nkeys_buf[16];
	int			ncalls = 0;

	for (int start = 0; start < n; start += per_call)
	{
		int			m = Min(per_call, n - start);
		int			argc = 0;

		if (rows)
		{
			argv[argc] = "EVALSHA";
			argl[argc++] = 7;
			argv[argc] = scripts->purge_rows_sha;
			argl[argc++] = 40;
			snprintf(nkeys_buf, sizeof(nkeys_buf), "%d", m);
			argv[argc] = nkeys_buf;
			argl[argc++] = strlen(nkeys_buf);
		}
		else
		{
			argv[argc] = "UNLINK";
			argl[argc++] = 6;
		}
		for (int i = 0; i < m; i++)
		{
			argv[argc] = keys[start + i];
			argl[argc++] = lens[start + i];
		}
		if (!wtc_redis_append(r, argc, argv, argl))
		{
			snprintf(err, errlen, "could not queue a command: %s", wtc_redis_errstr(r));
			return false;
		}
		ncalls++;
	}
	if (!wtc_redis_flush(r))
	{
		snprintf(err, errlen, "%s", wtc_redis_errstr(r));
		return false;
	}
	return read_removals(r, ncalls, removed, err, errlen);
}

/*
 * Remove the keys of a key template under prefix, on every master: its
 * rows (SCAN "P<head>*") and their companions (SCAN "P{P<head>*"), only
 * keys that parse as its keys (keyspace.c) and, for rows, hold a value
 * wtcache wrote.  An application's keys beside them (user:42:prefs next
 * to user:{id}) stay.  These patterns have no hash tag: each SCAN walks
 * the whole keyspace of a master.  t is bound in order
 * (wtcache_key_template_bind_in_order), nvalues its placeholders.
 */
bool
wtcache_purge_template(WtcRedis *r, const RedisScripts *scripts, const KeyTemplate *t,
					   int nvalues, const char *prefix, int64 *removed,
					   char *err, size_t errlen)
{
	*removed = 0;
	for (int pass = 0; pass < 2; pass++)
	{
		StringInfoData pattern;
		char	  **values = palloc(sizeof(char *) * Max(nvalues, 1));

		initStringInfo(&pattern);
		if (pass == 0)
			wtcache_append_template_rows_pattern(&pattern, prefix, t);
		else
			wtcache_append_template_companions_pattern(&pattern, prefix, t);
		for (int node = 0; node < wtc_redis_node_count(r); node++)
		{
			char		cursor[32] = "0";

			do
			{
				WtcReply	reply;
				char	  **keys;
				size_t	   *lens;
				int			n = 0;

				if (!wtc_redis_scan(r, node, cursor, pattern.data, &reply))
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
				keys = palloc(sizeof(char *) * Max(reply.elem[1].nelem, 1));
				lens = palloc(sizeof(size_t) * Max(reply.elem[1].nelem, 1));
				for (int i = 0; i < reply.elem[1].nelem; i++)
				{
					const WtcReply *k = &reply.elem[1].elem[i];
					bool		match;

					if (k->type != WTC_REPLY_STRING)
						continue;
					match = pass == 0 ?
						wtcache_parse_templated_row_key(t, prefix, k->str, k->len, nvalues, values) :
						wtcache_parse_templated_companion(t, prefix, k->str, k->len, nvalues);
					if (!match)
						continue;
					keys[n] = pnstrdup(k->str, k->len);
					lens[n++] = k->len;
				}
				if (n > 0 && !remove_keys(r, scripts, keys, lens, n, pass == 0, removed,
										  err, errlen))
					return false;
				wtcache_progress_removed(*removed);
			} while (strcmp(cursor, "0") != 0);
		}
	}
	return true;
}
