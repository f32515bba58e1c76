/*-------------------------------------------------------------------------
 * lag.c
 *		Delivery lag: how long a committed change took to be in Redis.
 *
 * What is measured, per change (per captured key, a TRUNCATE, an
 * invalidate()): from its queue row's enqueued_at to the moment Redis
 * answered the batch that carried it.  enqueued_at is the writer's clock
 * when the row was written, and the capture writes the keys of a
 * transaction just before its commit (the pre-commit flush, capture.c),
 * so for a transaction that changed up to 1,000 keys it is the start of
 * its commit: the lag includes the commit's own WAL flush and any wait
 * for synchronous standbys, which a reader of Redis waits for too.  A
 * larger transaction also writes chunks of 1,000 keys while it runs; the
 * lag of those keys includes the rest of the transaction.  We take that
 * approximation rather than add work to the writers' commit: rewriting
 * the earlier chunks, or asking for track_commit_timestamp, would cost
 * every watched write, and the figure a DBA alerts on (p99 of a steady
 * load of short transactions) is exact.
 *
 * Left out: rows queued by warm(), resync(), the requeue after DDL and the
 * repair after Redis lost data (per_table rows).  They are not commits of
 * the application's: a 10M-row warm would fill the last minute with the
 * warm's own duration and hide the lag of live changes, which is what an
 * alert on this figure is for (the progress of long work is shown apart).
 *
 * The histogram lives in the worker's slot (lag.h).  The worker writes it
 * once per acknowledged batch, in one change-count bracket, with no lock:
 * nothing between wtcache_lag_begin() and wtcache_lag_end() can fail.
 * Readers (wtcache.delivery_lag()) copy it and retry if the count moved.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "lag.h"
#include "shmem.h"

#include <math.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/timestamp.h"

/* Prometheus's le values, in microseconds: 250 us to 60 s */
static const int64 prom_bounds_us[LAG_PROM_BOUNDS] = {
	250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000
};

/* fine bucket k holds lags in (bound(k - 1), bound(k)] */
static double
fine_bound_us(int k)
{
	return 250.0 * pow(2.0, k / 4.0);
}

static int
fine_bucket(int64 us)
{
	int			k;

	if (us <= 250)
		return 0;
	k = (int) ceil(4.0 * log2((double) us / 250.0));
	return Min(k, LAG_FINE_BOUNDS);
}

static int
prom_bucket(int64 us)
{
	for (int i = 0; i < LAG_PROM_BOUNDS; i++)
		if (us <= prom_bounds_us[i])
			return i;
	return LAG_PROM_BOUNDS;
}

/* At shared memory creation. */
void
wtcache_lag_init(LagHistogram *h)
{
	pg_atomic_init_u32(&h->changecount, 0);
}

void
wtcache_lag_begin(LagHistogram *h)
{
	pg_atomic_write_u32(&h->changecount, pg_atomic_read_u32(&h->changecount) + 1);
	pg_write_barrier();
}

void
wtcache_lag_end(LagHistogram *h)
{
	pg_write_barrier();
	pg_atomic_write_u32(&h->changecount, pg_atomic_read_u32(&h->changecount) + 1);
}

/*
 * At the worker's start: the counts are those of this worker (Prometheus
 * takes a counter going back to zero as a restart).  A count left odd by a
 * predecessor killed inside a bracket is made even again here.  The
 * histogram is tagged with the database: a slot given to another database
 * (launcher, shmem.c) keeps the last one's until its new worker gets here,
 * and readers show nothing of it meanwhile rather than the old database's
 * figures under the new one's oid.  Reset here and not where the slot is
 * given, under the lock: this way the histogram has a single writer, even
 * while a worker of the old database is still on its way out.
 */
void
wtcache_lag_reset(LagHistogram *h, TimestampTz now, Oid dboid)
{
	uint32		odd = pg_atomic_read_u32(&h->changecount) | 1;

	pg_atomic_write_u32(&h->changecount, odd);
	pg_write_barrier();
	h->dboid = dboid;
	h->since = now;
	h->count = 0;
	h->sum_us = 0;
	memset(h->buckets, 0, sizeof(h->buckets));
	memset(h->windows, 0, sizeof(h->windows));
	pg_write_barrier();
	pg_atomic_write_u32(&h->changecount, odd + 1);
}

/*
 * changes changes, acknowledged at acked_at, that entered the queue at
 * since.  Between wtcache_lag_begin() and wtcache_lag_end().
 */
void
wtcache_lag_add(LagHistogram *h, TimestampTz acked_at, TimestampTz since, int64 changes)
{
	/* a clock set back between the two readings counts as no lag */
	int64		us = Max(acked_at - since, 0);
	int64		number = acked_at / LAG_WINDOW_US;
	LagWindow  *w = &h->windows[number % LAG_WINDOWS];

	if (changes <= 0 || number <= 0)
		return;
	if (w->number != number)
	{
		memset(w, 0, sizeof(*w));
		w->number = number;
		w->min_us = us;
		w->max_us = us;
	}
	w->counts[fine_bucket(us)] += (uint32) Min(changes, PG_INT32_MAX);
	w->min_us = Min(w->min_us, us);
	w->max_us = Max(w->max_us, us);
	h->count += changes;
	h->sum_us += (uint64) us * changes;
	h->buckets[prom_bucket(us)] += changes;
}

/* A consistent copy of a slot's histogram, taken without a lock. */
static void
read_histogram(LagHistogram *h, LagHistogram *copy)
{
	for (;;)
	{
		uint32		before = pg_atomic_read_u32(&h->changecount);

		pg_read_barrier();
		memcpy(copy, h, sizeof(LagHistogram));
		pg_read_barrier();
		if ((before & 1) == 0 && before == pg_atomic_read_u32(&h->changecount))
			return;
		CHECK_FOR_INTERRUPTS();
	}
}

/* The windows of the last minute, merged. */
typedef struct LagMinute
{
	uint64		n;
	int64		min_us;
	int64		max_us;
	uint64		counts[LAG_FINE_BUCKETS];
} LagMinute;

static void
last_minute(const LagHistogram *h, TimestampTz now, LagMinute *m)
{
	int64		current = now / LAG_WINDOW_US;

	memset(m, 0, sizeof(*m));
	for (int i = 0; i < LAG_WINDOWS; i++)
	{
		const LagWindow *w = &h->windows[i];
		uint64		n = 0;

		if (w->number <= current - LAG_WINDOWS || w->number > current)
			continue;
		for (int k = 0; k < LAG_FINE_BUCKETS; k++)
		{
			m->counts[k] += w->counts[k];
			n += w->counts[k];
		}
		if (n == 0)
			continue;
		m->min_us = m->n == 0 ? w->min_us : Min(m->min_us, w->min_us);
		m->max_us = m->n == 0 ? w->max_us : Max(m->max_us, w->max_us);
		m->n += n;
	}
}

/*
 * The q-quantile, interpolated within its bucket as Prometheus's
 * histogram_quantile() does, and kept within the lags actually seen (so
 * that a minute of lags all above 200 ms never reports a p50 below it).
 */
static int64
quantile(const LagMinute *m, double q)
{
	double		rank = q * (double) m->n;
	uint64		below = 0;

	for (int k = 0; k < LAG_FINE_BUCKETS; k++)
	{
		double		lower,
					upper,
					v;

		if (m->counts[k] == 0)
			continue;
		if ((double) (below + m->counts[k]) < rank)
		{
			below += m->counts[k];
			continue;
		}
		lower = k == 0 ? 0.0 : fine_bound_us(k - 1);
		upper = k < LAG_FINE_BOUNDS ? fine_bound_us(k) : (double) m->max_us;
		v = lower + (upper - lower) * (rank - (double) below) / (double) m->counts[k];
		return Max(Min((int64) v, m->max_us), m->min_us);
	}
	return m->max_us;
}

static Datum
interval_us(int64 us)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = us;
	return IntervalPGetDatum(iv);
}

/*
 * wtcache.delivery_lag(): one row per database worker, shown to whoever
 * worker_status() shows it to (the worker of the connected database to
 * everyone; the others to pg_read_all_stats).  It holds no per-table
 * figure: a table's traffic is not told apart here.
 */
PG_FUNCTION_INFO_V1(wtcache_delivery_lag);
Datum
wtcache_delivery_lag(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all_databases = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	LagHistogram *copy;
	LagMinute  *minute;

	wtcache_require_preload();
	InitMaterializedSRF(fcinfo, 0);
	copy = palloc(sizeof(LagHistogram));
	minute = palloc(sizeof(LagMinute));

	for (int i = 0; i < WtcacheSharedState->nslots; i++)
	{
		WorkerSlot *slot = &WtcacheSharedState->slots[i];
		Oid			dboid;
		Datum		values[10];
		bool		nulls[10] = {0};
		Datum		le[LAG_PROM_BUCKETS];
		Datum		cumulative[LAG_PROM_BUCKETS];
		uint64		total = 0;

		if (!wtcache_slot_shown(slot, all_databases, &dboid))
			continue;

		read_histogram(&slot->lag, copy);
		/* another database's, until this one's worker resets it */
		if (copy->dboid != dboid)
			memset(copy, 0, sizeof(LagHistogram));
		last_minute(copy, GetCurrentTimestamp(), minute);

		values[0] = ObjectIdGetDatum(dboid);
		if (minute->n > 0)
		{
			values[1] = interval_us(quantile(minute, 0.50));
			values[2] = interval_us(quantile(minute, 0.99));
			values[3] = interval_us(minute->max_us);
		}
		else
			nulls[1] = nulls[2] = nulls[3] = true;
		values[4] = Int64GetDatum((int64) minute->n);
		for (int b = 0; b < LAG_PROM_BUCKETS; b++)
		{
			total += copy->buckets[b];
			le[b] = Float8GetDatum(b < LAG_PROM_BOUNDS ? prom_bounds_us[b] / 1e6
								   : get_float8_infinity());
			cumulative[b] = Int64GetDatum((int64) total);
		}
		values[5] = PointerGetDatum(construct_array(le, LAG_PROM_BUCKETS, FLOAT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[6] = PointerGetDatum(construct_array(cumulative, LAG_PROM_BUCKETS, INT8OID, 8,
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[7] = Float8GetDatum(copy->sum_us / 1e6);
		values[8] = Int64GetDatum((int64) copy->count);
		if (copy->since != 0)
			values[9] = TimestampTzGetDatum(copy->since);
		else
			nulls[9] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
