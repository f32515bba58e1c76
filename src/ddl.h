/*-------------------------------------------------------------------------
 * ddl.h
 *		What these offer the other modules:
 *		ddl.c: moving the worker out of the way of DROP DATABASE & co.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_DDL_H
#define WTCACHE_DDL_H

#include "wtcache.h"

extern void wtcache_install_utility_hook(void);

#endif							/* WTCACHE_DDL_H */
