/*-------------------------------------------------------------------------
 * capture.h
 *		What these offer the other modules:
 *		capture.c: row/TRUNCATE triggers, per-transaction key buffer, wake
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_CAPTURE_H
#define WTCACHE_CAPTURE_H

#include "wtcache.h"

extern void wtcache_capture_init(void);
extern void wtcache_note_enqueued(void);
extern void wtcache_note_live_enqueued(int64 id);
extern void wtcache_request_worker_at_commit(void);
extern bool wtcache_xact_wrote(Oid relid);
extern void wtcache_enqueue_whole_table(Oid relid, const char *table_key,
										const char *key_template);
extern void wtcache_enqueue_whole_relation(Relation rel);
extern char *wtcache_current_table_key(Oid relid);
extern void wtcache_queue_insert_per_table(Oid relid, Datum *keys, int nvalues, int width);

#endif							/* WTCACHE_CAPTURE_H */
