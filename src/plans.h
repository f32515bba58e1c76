/*-------------------------------------------------------------------------
 * plans.h
 *		What these offer the other modules:
 *		plans.c: SPI plans kept for the life of the backend
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_PLANS_H
#define WTCACHE_PLANS_H

#include "wtcache.h"

struct _SPI_plan;
extern struct _SPI_plan *wtcache_kept_plan(const char *sql, int nargs, Oid *argtypes);

#endif							/* WTCACHE_PLANS_H */
