/*-------------------------------------------------------------------------
 * session.c
 *		The backend's Redis session: one connection with its circuit
 *		breaker and the backend's scripts, the mechanics of fills, and
 *		per-call scratch memory, shared by cached reads (read.c), cached
 *		queries (query.c) and verify() (verify.c).  What to read and how to
 *		fill it (the scripts' Lua) stays with them; session.h is what they
 *		see.
 *
 * The connection goes through the transport (redis.c: one server, the
 * master Sentinel names, a Cluster; TLS under any of them) with
 * wtcache.connect_timeout and, for each reply, wtcache.read_timeout.
 * Invariants:
 *	- it is handed out only with every script of the registry below loaded,
 *	  and only while the Redis settings are those it was made for: a reload
 *	  that changes them reconnects at the next use;
 *	- a connection that may have replies left unread (an error between a
 *	  client's flush and its last read: clients mark that window with
 *	  wtcache_session_set_busy), or whose scripts Redis lost (NOSCRIPT after
 *	  a restart, seen by a client as a reply its script never gives), is
 *	  dropped before its next use, never reused;
 *	- when Redis fails, the circuit breaker hands out no connection for
 *	  wtcache.read_retry_interval, so reads go to the tables without paying
 *	  a timeout each (or fail, wtcache.read_fallback = off); a failure while
 *	  it is open does not keep it open longer.
 * A client keeps the connection it was given only until it runs user code
 * (a table read, a query): a nested call may drop it, or make another.
 *
 * Fills, in read.c and query.c alike, take a lease whose token is unique
 * to the call, wait for another holder's fill at most wtcache.fill_wait,
 * and give what they store a TTL spread by wtcache.ttl_jitter.
 *
 * A call's working memory (Redis replies, keys, rows on their way out) is
 * one context whose first block is kept between calls, so that a cached
 * read does not go to malloc (and glibc does not hand memory back to the
 * kernel and fault it in again) every time; it is reset when the
 * outermost call begins and ends.  Calls nest: a table read runs user
 * code (a row-level security policy, a function in a view, the SQL of
 * query()) that may call get() or query() again, so a nested call gets a
 * context of its own under its caller's, and never frees what the outer
 * call still uses.  Results are copied to the caller's context before the
 * call ends.  An error may skip a call's end: the nesting depth is
 * forgotten at the end of the transaction, and the context, left as the
 * error found it, is reset by the next outermost call.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "redis.h"
#include "settings.h"
#include "xact.h"
#include "session.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

int			wtcache_read_timeout_ms = 250;
int			wtcache_read_retry_interval_ms = 1000;
bool		wtcache_read_fallback = true;
int			wtcache_fill_lease_ms = 2000;
int			wtcache_fill_wait_ms = 50;
int			wtcache_debug_fill_delay_ms = 0;

/*
 * The backend's scripts, loaded in this order into every connection (and,
 * in a Cluster, into every node met later: redis.c keeps the texts).  A
 * client's script left out of this list would never be loaded.
 */
static SessionScript *const session_scripts[] = {
	&wtcache_row_lease_script,
	&wtcache_row_fill_script,
	&wtcache_row_lease_hash_script,
	&wtcache_row_fill_hash_script,
	&wtcache_query_read_script,
	&wtcache_query_fill_script,
};

/* EVALSHA's arguments fit on the stack up to this many */
#define EVAL_STACK_ARGS 16

/* ---------------------------------------------------------------------
 * The connection and the circuit breaker
 * ---------------------------------------------------------------------
 */
static WtcRedis *session = NULL;
static uint32 session_settings_hash;	/* of the Redis settings it was made for */
static bool session_busy = false;	/* replies may be unread: drop it */
static bool session_reload = false; /* scripts gone (Redis restarted) */
static TimestampTz breaker_open_until = 0;

static void
session_drop(void)
{
	wtc_redis_free(session);
	session = NULL;
	session_busy = false;
	session_reload = false;
}

/* Redis failed: drop the connection and open the breaker. */
void
wtcache_session_failed(void)
{
	TimestampTz now = GetCurrentTimestamp();

	session_drop();
	/* a read while the breaker is open does not keep it open */
	if (breaker_open_until == 0 || now >= breaker_open_until)
		breaker_open_until = TimestampTzPlusMilliseconds(now, wtcache_read_retry_interval_ms);
}

/* A usable connection, or NULL while Redis is failing. */
WtcRedis *
wtcache_session_redis(void)
{
	RedisTarget target;
	const char *problem;
	char		err[256];

	if (session_busy || session_reload)
		session_drop();			/* replies left unread, or scripts lost */
	if (session != NULL && session_settings_hash == wtcache_redis_settings_hash())
		return session;
	session_drop();
	if (breaker_open_until != 0 && GetCurrentTimestamp() < breaker_open_until)
		return NULL;
	session_settings_hash = wtcache_redis_settings_hash();
	if (!wtcache_redis_target(&target, &problem))
	{
		wtcache_session_failed();
		return NULL;
	}
	session = wtc_redis_connect(&target, wtcache_connect_timeout_ms, wtcache_read_timeout_ms,
								err, sizeof(err));
	if (session == NULL)
	{
		wtcache_session_failed();
		return NULL;
	}
	for (int i = 0; i < lengthof(session_scripts); i++)
		if (!wtc_redis_load_script(session, session_scripts[i]->text,
								   session_scripts[i]->sha, err, sizeof(err)))
		{
			wtcache_session_failed();
			return NULL;
		}
	breaker_open_until = 0;
	return session;
}

/*
 * The connection as it is, without connecting: for a client that took
 * leases on it and has run user code since (a nested call may have dropped
 * it, or made another).
 */
WtcRedis *
wtcache_session_connected(void)
{
	return session;
}

/* Replies may be left unread if what follows fails: then drop it. */
void
wtcache_session_set_busy(bool busy)
{
	session_busy = busy;
}

/*
 * Redis failed during a read: open the breaker, and raise an error unless
 * reads fall back to the tables.
 */
void
wtcache_session_lost(void)
{
	wtcache_session_failed();
	if (!wtcache_read_fallback)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("wtcache: Redis is not available for reads"),
				 errdetail("wtcache.read_fallback is off, so reads do not fall back to the table."),
				 errhint("Check that Redis is running and that wtcache.redis_url points to it, or set wtcache.read_fallback = on.")));
}

/* ---------------------------------------------------------------------
 * The scripts
 * ---------------------------------------------------------------------
 */

/* Append EVALSHA of script with these keys and arguments to the pipeline. */
bool
wtcache_session_eval_append(WtcRedis *r, const SessionScript *script,
							int nkeys, const char *const *keys,
							int nargs, const char *const *args)
{
	const char *stack_argv[EVAL_STACK_ARGS];
	size_t		stack_lens[EVAL_STACK_ARGS];
	const char **argv = stack_argv;
	size_t	   *lens = stack_lens;
	char		numkeys[12];
	int			argc = 0;
	bool		ok;

	if (3 + nkeys + nargs > EVAL_STACK_ARGS)
	{
		argv = palloc(sizeof(char *) * (3 + nkeys + nargs));
		lens = palloc(sizeof(size_t) * (3 + nkeys + nargs));
	}
	snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
	argv[argc++] = "EVALSHA";
	argv[argc++] = script->sha;
	argv[argc++] = numkeys;
	for (int i = 0; i < nkeys; i++)
		argv[argc++] = keys[i];
	for (int i = 0; i < nargs; i++)
		argv[argc++] = args[i];
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	ok = wtc_redis_append(r, argc, argv, lens);
	if (argv != stack_argv)
	{
		pfree(argv);
		pfree(lens);
	}
	return ok;
}

/* EVALSHA and its reply.  False when Redis failed: the caller decides. */
bool
wtcache_session_eval(WtcRedis *r, const SessionScript *script,
					 int nkeys, const char *const *keys,
					 int nargs, const char *const *args, WtcReply *reply)
{
	session_busy = true;
	if (!wtcache_session_eval_append(r, script, nkeys, keys, nargs, args) ||
		!wtc_redis_flush(r) || !wtc_redis_read(r, reply))
		return false;
	session_busy = false;
	return true;
}

/*
 * A script answered what it never answers: NOSCRIPT (Redis restarted, or
 * a failover to a server that never had them) or a foreign value.  The
 * next use reconnects, which loads them again.
 */
void
wtcache_session_reload_scripts(void)
{
	session_reload = true;
}

/* ---------------------------------------------------------------------
 * Fills: leases, the TTL spread, waiting for another reader's fill
 * ---------------------------------------------------------------------
 */
static uint64 lease_counter = 0;

/*
 * A lease for one call's fills.  The token tells this call's leases from
 * every other holder's, in this backend or another, so that a fill or a
 * give-back whose lease expired and was taken again touches nothing.
 */
void
wtcache_session_new_lease(SessionLease *lease)
{
	snprintf(lease->token, sizeof(lease->token), "%d:" UINT64_FORMAT ":%08x", MyProcPid,
			 ++lease_counter, (uint32) pg_prng_uint32(&pg_global_prng_state));
	snprintf(lease->ms, sizeof(lease->ms), "%d", wtcache_fill_lease_ms);
}

/*
 * The TTL of a filled value: spread by wtcache.ttl_jitter either way, so
 * that values filled together do not all expire, and miss, together.
 */
int64
wtcache_session_fill_ttl(int64 ttl_ms)
{
	double		spread = wtcache_ttl_jitter * (2.0 * pg_prng_double(&pg_global_prng_state) - 1.0);

	return Max((int64) 1, (int64) (ttl_ms * (1.0 + spread)));
}

/* Lets tests hold a fill between its read of the tables and its write. */
void
wtcache_session_debug_fill_delay(void)
{
	if (wtcache_debug_fill_delay_ms <= 0)
		return;
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	pg_usleep(wtcache_debug_fill_delay_ms * 1000L);
	pgstat_report_wait_end();
	CHECK_FOR_INTERRUPTS();
}

/*
 * Someone else holds the lease: poll for their fill, up to
 * wtcache.fill_wait from now.  The first polls come soon, as a fill is
 * usually one table read away; later ones back off, so that many waiters
 * do not hammer Redis.
 */
void
wtcache_session_wait_start(SessionWait *wait)
{
	wait->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wtcache_fill_wait_ms);
	wait->sleep_us = 200;
}

/* Sleep before the next poll; false once the wait is over: read the tables. */
bool
wtcache_session_wait(SessionWait *wait)
{
	if (GetCurrentTimestamp() >= wait->deadline)
		return false;
	pg_usleep(wait->sleep_us);
	CHECK_FOR_INTERRUPTS();
	wait->sleep_us = Min(wait->sleep_us * 2, 2000);
	return true;
}

/* ---------------------------------------------------------------------
 * Per-call scratch memory
 * ---------------------------------------------------------------------
 */
static MemoryContext SessionCallContext = NULL;
static int	call_depth = 0;

/* Switch to the call's scratch memory. */
void
wtcache_session_call_begin(SessionCall *call)
{
	call->caller = CurrentMemoryContext;
	/* a first block large enough for a hit's reply and a modest result */
	if (SessionCallContext == NULL)
		SessionCallContext = AllocSetContextCreate(TopMemoryContext, "wtcache call",
												   256 * 1024, 256 * 1024,
												   8 * 1024 * 1024);
	if (call_depth++ == 0)
	{
		MemoryContextReset(SessionCallContext);
		call->scratch = SessionCallContext;
	}
	else
		call->scratch = AllocSetContextCreate(call->caller, "wtcache nested call",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(call->scratch);
}

/* Back to the caller's memory; the call's is freed. */
void
wtcache_session_call_end(SessionCall *call)
{
	call_depth--;
	MemoryContextSwitchTo(call->caller);
	if (call->scratch == SessionCallContext)
		MemoryContextReset(SessionCallContext);
	else
		MemoryContextDelete(call->scratch);
}

void
wtcache_session_xact_event(XactEvent event)
{
	/* an error may have skipped wtcache_session_call_end */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		call_depth = 0;
}
