/*-------------------------------------------------------------------------
 * session.h
 *		The backend's Redis session (session.c), for its clients: cached
 *		reads (read.c), cached queries (query.c) and verify() (verify.c).
 *		The worker has a connection of its own and does not use this.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_SESSION_H
#define WTCACHE_SESSION_H

#include "wtcache.h"
#include "redis.h"
#include "xact.h"

/* ---- The connection and its circuit breaker ---- */
extern WtcRedis *wtcache_session_redis(void);
extern WtcRedis *wtcache_session_connected(void);
extern void wtcache_session_set_busy(bool busy);
extern void wtcache_session_failed(void);
extern void wtcache_session_lost(void);

/* ---- The script registry ---- */

/*
 * One of the backend's scripts: its Lua, kept by the client whose logic it
 * is, and its SHA1 once loaded.  The session loads every one of them into
 * each connection it makes, in the order session.c lists them.
 */
typedef struct SessionScript
{
	const char *text;			/* a static string: the transport keeps the
								 * pointer (redis.c) */
	char		sha[41];
} SessionScript;

extern SessionScript wtcache_row_lease_script;	/* read.c */
extern SessionScript wtcache_row_fill_script;
extern SessionScript wtcache_row_lease_hash_script;
extern SessionScript wtcache_row_fill_hash_script;
extern SessionScript wtcache_query_read_script; /* query.c */
extern SessionScript wtcache_query_fill_script;

extern bool wtcache_session_eval_append(WtcRedis *r, const SessionScript *script,
										int nkeys, const char *const *keys,
										int nargs, const char *const *args);
extern bool wtcache_session_eval(WtcRedis *r, const SessionScript *script,
								 int nkeys, const char *const *keys,
								 int nargs, const char *const *args, WtcReply *reply);
extern void wtcache_session_reload_scripts(void);

/* ---- Fills: leases, the TTL spread, waiting for another's fill ---- */
typedef struct SessionLease
{
	char		token[64];		/* only its holder fills or gives it back */
	char		ms[16];			/* wtcache.fill_lease, as the scripts take it */
} SessionLease;

typedef struct SessionWait
{
	TimestampTz deadline;		/* now + wtcache.fill_wait */
	long		sleep_us;
} SessionWait;

extern void wtcache_session_new_lease(SessionLease *lease);
extern int64 wtcache_session_fill_ttl(int64 ttl_ms);
extern void wtcache_session_debug_fill_delay(void);
extern void wtcache_session_wait_start(SessionWait *wait);
extern bool wtcache_session_wait(SessionWait *wait);

/* ---- Per-call scratch memory ---- */
typedef struct SessionCall
{
	MemoryContext caller;		/* results go here */
	MemoryContext scratch;		/* the call's working memory */
} SessionCall;

extern void wtcache_session_call_begin(SessionCall *call);
extern void wtcache_session_call_end(SessionCall *call);

extern void wtcache_session_xact_event(XactEvent event);

#endif							/* WTCACHE_SESSION_H */
