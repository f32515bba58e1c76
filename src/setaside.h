/*-------------------------------------------------------------------------
 * setaside.h
 *		What these offer the other modules:
 *		setaside.c: queue rows the worker could not deliver: retry, discard
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_SETASIDE_H
#define WTCACHE_SETASIDE_H

#include "wtcache.h"

#define WTCACHE_HOLD_REASON "its capture triggers are disabled (ALTER TABLE ... DISABLE TRIGGER): changes are not captured until they are enabled again"
extern bool wtcache_queue_can_set_aside(void);
extern void wtcache_hold_table(Oid relid, const char *table_key);
extern bool wtcache_release_table(Oid relid);

#endif							/* WTCACHE_SETASIDE_H */
