/*-------------------------------------------------------------------------
 * fence.h
 *		What these offer the other modules:
 *		fence.c: wait(): the read-your-writes fence
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_FENCE_H
#define WTCACHE_FENCE_H

#include "wtcache.h"
#include "shmem.h"

extern bool wtcache_fence(int64 timeout_ms);
extern uint64 wtcache_fence_ticket_to_serve(WorkerSlot *slot);
extern bool wtcache_fence_waiting(WorkerSlot *slot);
extern void wtcache_fence_confirmed(WorkerSlot *slot, uint64 ticket);
extern void wtcache_fence_repaired(WorkerSlot *slot, uint64 ticket);

#endif							/* WTCACHE_FENCE_H */
