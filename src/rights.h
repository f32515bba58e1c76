/*-------------------------------------------------------------------------
 * rights.h
 *		What these offer the other modules:
 *		rights.c: running SQL as another role, immune to the caller's objects
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_RIGHTS_H
#define WTCACHE_RIGHTS_H

#include "wtcache.h"

typedef struct WtcRights
{
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
} WtcRights;

extern void wtcache_rights_enter(WtcRights *rights, Oid userid, bool restricted);
extern void wtcache_rights_enter_table_owner(WtcRights *rights, Oid relid);
extern void wtcache_rights_enter_unpinned(WtcRights *rights, Oid userid);
extern int	wtcache_spi_as_extension_owner(const char *sql, int nargs, Oid *argtypes,
										   Datum *values, const char *nulls,
										   bool read_only, long count);
extern void wtcache_rights_leave(WtcRights *rights);
extern int	wtcache_pin_search_path(void);
extern void wtcache_unpin_search_path(int nestlevel);
extern bool wtcache_run_in_subxact(void (*fn) (void *arg), void *arg, char **message);

/* wtcache's own tables: where the queue is, and who owns them */
extern Oid	wtcache_queue_relid(void);
extern Oid	wtcache_owner(void);
extern void wtcache_check_table_owner(Oid relid);

#endif							/* WTCACHE_RIGHTS_H */
