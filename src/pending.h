/*-------------------------------------------------------------------------
 * pending.h
 *		What these offer the other modules:
 *		pending.c: shared filter of keys whose changes Redis lacks
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_PENDING_H
#define WTCACHE_PENDING_H

#include "wtcache.h"
#include "shmem.h"

extern void wtcache_pending_shmem_request(void);
extern void wtcache_pending_shmem_startup(void);
extern uint32 wtcache_pending_key_index(Oid dboid, Oid relid, int nvalues,
										const char *const *values, const int *lens);
extern uint32 wtcache_pending_table_index(Oid dboid, Oid relid);
extern uint32 wtcache_pending_changed_index(Oid dboid, Oid relid);
extern uint32 wtcache_pending_tag_index(Oid dboid, const char *tag, int len);
extern bool wtcache_pending_is_zero(uint32 index);
extern bool wtcache_pending_ready(Oid dboid);
extern bool wtcache_pending_clear(uint32 key_index, uint32 table_index);
extern void wtcache_pending_add(uint32 index);
extern void wtcache_pending_release(const uint32 *indexes, int n);
struct QueueRow;
extern int	wtcache_pending_row_indexes(Oid dboid, const struct QueueRow *row, uint32 *out);
extern bool wtcache_pending_rebuild(WorkerSlot *slot, Oid queue, int wait_ms);
extern bool wtcache_pending_settle(void);
extern void wtcache_pending_before_queue_write(void);
extern void wtcache_pending_after_queue_write(void);

#endif							/* WTCACHE_PENDING_H */
