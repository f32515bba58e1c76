/*-------------------------------------------------------------------------
 * query.h
 *		What these offer the other modules:
 *		query.c: cached query results: query(), query_key()
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_QUERY_H
#define WTCACHE_QUERY_H

#include "wtcache.h"

extern int	wtcache_query_ttl_s;
extern int	wtcache_query_max_kb;
extern char *wtcache_query_safe_functions;
extern bool wtcache_query_safe_functions_check(char **newval, void **extra, GucSource source);

#endif							/* WTCACHE_QUERY_H */
