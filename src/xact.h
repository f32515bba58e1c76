/*-------------------------------------------------------------------------
 * xact.h
 *		What these offer the other modules:
 *		xact.c: transaction and subtransaction ends, in one stated order
 *		xact.c: transaction and subtransaction ends, in one stated order
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_XACT_H
#define WTCACHE_XACT_H

#include "wtcache.h"

extern void wtcache_xact_callbacks_init(void);
extern void wtcache_capture_xact_event(XactEvent event);
extern void wtcache_partition_xact_event(XactEvent event);
extern void wtcache_capture_subxact_event(SubXactEvent event, SubTransactionId mySubid,
										  SubTransactionId parentSubid);
extern void wtcache_pending_xact_event(XactEvent event);
extern void wtcache_pending_subxact_event(SubXactEvent event, SubTransactionId mySubid,
										  SubTransactionId parentSubid);
extern void wtcache_ddl_xact_event(XactEvent event);
extern void wtcache_tags_xact_event(XactEvent event);
extern void wtcache_session_xact_event(XactEvent event);
extern void wtcache_read_xact_event(XactEvent event);

#endif							/* WTCACHE_XACT_H */
