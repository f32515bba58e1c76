/*-------------------------------------------------------------------------
 * wtcache.h
 *		What every wtcache file needs: PostgreSQL's basics and the names of
 *		wtcache's own catalog objects.  Each module declares what it offers
 *		in a header of its own (x.c: x.h; the worker's files share the
 *		private worker_int.h, redis.c and cluster.c the private
 *		redis_conn.h, under the public redis.h), and a file includes the
 *		headers of what it uses, so an edit of one module's interface
 *		rebuilds its users only.
 *
 * Files and their concerns:
 *	wtcache.c	module entry point, preload gate
 *	settings.c	wtcache.* settings and Redis URL parsing
 *	shmem.c		shared state: worker slots, launcher latch, status SRF
 *	keyspace.c	the Redis layout: key names, value codec, canonical
 *				settings (keyspace.h is the contract)
 *	keys.c		key columns: rendering, reading rows by key
 *	capture.c	row/TRUNCATE triggers, per-transaction key buffer, wake
 *	watch.c		watch(), unwatch(), resync()/warm()
 *	partition.c	a watch of a partitioned table covers its whole tree
 *	rights.c	running SQL as another role, immune to the caller's objects
 *	fence.c		wait(): the read-your-writes fence
 *	redis.c		connections to Redis (one server, Sentinel, Cluster masters)
 *	tls.c		TLS under those connections (OpenSSL), certificate checks
 *	cluster.c	Redis Cluster slot map, routing and redirects
 *	push.c		turning a claimed batch into pipelined Redis commands
 *	worker.c	per-database delivery worker: the process, its loop
 *				(worker_int.h: what the worker's files share)
 *	batch.c		the worker claiming a batch: queue rows to Redis writes
 *	durable.c	the worker: what must be durable before a batch is sent
 *	deliver.c	the worker: a batch sent, acknowledged or set aside
 *	events.c	the worker: messages on the events channel
 *	markers.c	the worker: generation markers, resync
 *	replicas.c	the worker: WAIT for Redis replicas before a batch counts
 *				as delivered; replica_acks()
 *	audit.c		the worker: the live consistency audit (audit_rate),
 *				and audit_stats()
 *	launcher.c	launcher that starts one worker per database
 *	ddl.c		moving the worker out of the way of DROP DATABASE & co.
 *	pending.c	shared filter of keys whose changes Redis lacks
 *	session.c	the backend's Redis session: connection, circuit breaker,
 *				scripts, fill leases and waits, per-call scratch memory
 *				(session.h)
 *	read.c		cached reads: get(), get_many(), get_row(), redis_key()
 *	stats.c		shared read counters per table
 *	lag.c		delivery lag histogram per database, delivery_lag()
 *	tags.c		tag templates, tag keys, invalidate()
 *	query.c		cached query results: query(), query_key()
 *	narrow.c	the template tags a cached query depends on instead of a
 *				table tag
 *	verify.c	verify(): Redis against the table
 *	memory.c	Redis under memory pressure: redis_memory(), redis_bytes_per_row()
 *	verify.c	verify(): Redis against the table; the comparison the
 *				audit shares (verify.h)
 *	setaside.c	queue rows the worker could not deliver: retry, discard
 *	queue.c		the queue row: columns, decoder, tag groups, writer (queue.h)
 *	plans.c		SPI plans kept for the life of the backend
 *	xact.c		transaction and subtransaction ends, in one stated order
 *	progress.c	the progress of long operations (wtcache.progress)
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_H
#define WTCACHE_H

#include "postgres.h"

#include "access/attnum.h"
#include "access/htup.h"
#include "access/xact.h"
#include "access/xlogdefs.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "port/atomics.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/relcache.h"
#include "datatype/timestamp.h"
#include "utils/timestamp.h"

#define WTCACHE_SCHEMA			"wtcache"
#define WTCACHE_QUEUE_TABLE		"queue"
#define WTCACHE_QUEUE_SEQ		"queue_id_seq"
#define WTCACHE_WATCHED_TABLE	"watched"

/* Keys per queue row: large enough to make the queue cheap, small enough
 * that a worker batch boundary never has to split a row. */
#define WTCACHE_CHUNK_KEYS		1000
/*
 * Keys per queue row of long work (warm, resync, requeues): smaller, as
 * the worker takes such rows whole, a row a batch while live changes
 * come, and a live change may wait for two batches (batch.c).
 */
#define WTCACHE_BULK_CHUNK_KEYS	250

#endif							/* WTCACHE_H */
