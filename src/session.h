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
extern SessionScript wtcache_query_read_script; /* query.c */
extern SessionScript wtcache_query_fill_script;

extern bool wtcache_session_eval_append(WtcRedis *r, const SessionScript *script,
										int nkeys, const char *const *keys,
										int nargs, const char *const *args);
extern bool wtcache_session_eval(WtcRedis *r, const SessionScript *script,
								 int nkeys, const char *const *keys,
								 int nargs, const char *const *args, WtcReply *reply);
extern void wtcache_session_reload_scripts(void);

#endif							/* WTCACHE_SESSION_H */
