/*-------------------------------------------------------------------------
 * stats.h
 *		What these offer the other modules:
 *		stats.c: shared read counters per table
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_STATS_H
#define WTCACHE_STATS_H

#include "wtcache.h"

typedef struct ReadStats
{
	Oid			dboid;			/* hash key: dboid, relid */
	Oid			relid;
	pg_atomic_uint64 hits;		/* served from Redis */
	pg_atomic_uint64 misses;	/* Redis had no value */
	pg_atomic_uint64 fallbacks; /* Redis failed: read the table */
	pg_atomic_uint64 bypasses;	/* change pending, RLS...: read the table */
	pg_atomic_uint64 fills;		/* misses written to Redis */
	pg_atomic_uint64 fills_rejected;	/* fills refused as stale */
	pg_atomic_uint64 stampede_waits;	/* waited for another reader's fill */
	pg_atomic_uint64 table_reads;	/* keys read from the table */
} ReadStats;

extern void wtcache_stats_shmem_request(void);
extern void wtcache_stats_shmem_startup(void);
/* the counters of cached queries (query.c): no table has this OID */
#define WTCACHE_QUERY_STATS_RELID ((Oid) 1)

extern ReadStats *wtcache_read_stats_entry(Oid dboid, Oid relid);
extern bool wtcache_can_see_table(Oid relid, Oid roleid);

#endif							/* WTCACHE_STATS_H */
