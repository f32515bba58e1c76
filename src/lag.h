/*-------------------------------------------------------------------------
 * lag.h
 *		What these offer the other modules:
 *		lag.c: the delivery lag histogram of a worker slot
 *
 * A database's worker records, per acknowledged batch, how long each of
 * its changes took from commit to Redis's reply (lag.c says how "commit"
 * is read).  Two views of the same samples live in the slot:
 *	- cumulative counts since the worker started, in the buckets that
 *	  metrics() prints as a Prometheus histogram (le: LAG_BOUNDS_US);
 *	- a ring of LAG_WINDOWS windows of LAG_WINDOW_US each, in finer
 *	  log-spaced buckets (4 per doubling from 250 us), from which p50, p99
 *	  and the max over the last minute are computed.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_LAG_H
#define WTCACHE_LAG_H

#include "wtcache.h"

#include "port/atomics.h"

/* the Prometheus buckets' finite upper bounds, and +Inf after them */
#define LAG_PROM_BOUNDS 17
#define LAG_PROM_BUCKETS (LAG_PROM_BOUNDS + 1)

/* fine buckets: upper bounds 250 us * 2^(k/4), k = 0 .. 72 (65.5 s), then the rest */
#define LAG_FINE_BOUNDS 73
#define LAG_FINE_BUCKETS (LAG_FINE_BOUNDS + 1)

#define LAG_WINDOWS 12
#define LAG_WINDOW_US INT64CONST(5000000)

typedef struct LagWindow
{
	int64		number;			/* acknowledgement time / LAG_WINDOW_US;
								 * 0: never used */
	int64		min_us;
	int64		max_us;
	uint32		counts[LAG_FINE_BUCKETS];
} LagWindow;

/*
 * One per worker slot.  One writer, the slot's worker; readers copy it
 * whole between two equal, even readings of changecount (the protocol of
 * PostgreSQL's PgBackendStatus.st_changecount), so neither side waits on
 * a lock and no reader sees half a batch.
 */
typedef struct LagHistogram
{
	pg_atomic_uint32 changecount;
	Oid			dboid;			/* the database whose worker reset it last:
								 * a slot given to another database shows
								 * nothing until its worker resets it */
	TimestampTz since;			/* the worker's start: counts begin there */
	uint64		count;			/* changes acknowledged */
	uint64		sum_us;			/* their lags, summed */
	uint64		buckets[LAG_PROM_BUCKETS];	/* not cumulative */
	LagWindow	windows[LAG_WINDOWS];
} LagHistogram;

extern void wtcache_lag_init(LagHistogram *h);

/* The slot's worker only. */
extern void wtcache_lag_reset(LagHistogram *h, TimestampTz now, Oid dboid);
extern void wtcache_lag_begin(LagHistogram *h);
extern void wtcache_lag_add(LagHistogram *h, TimestampTz acked_at, TimestampTz since,
							int64 changes);
extern void wtcache_lag_end(LagHistogram *h);

#endif							/* WTCACHE_LAG_H */
