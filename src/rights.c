/*-------------------------------------------------------------------------
 * rights.c
 *		Running SQL with rights the caller does not have.
 *
 * wtcache reads its own tables as the extension's owner, and users' tables
 * as their owners, from functions any role may call and from the worker
 * (a superuser session).  Whatever runs there must be immune to objects
 * the caller or a table owner created: an operator or function earlier on
 * the search_path, a cast, an index expression.  So, for the duration:
 *
 *	- search_path is pg_catalog, pg_temp, and every statement names
 *	  wtcache's objects with their schema and operators as
 *	  OPERATOR(pg_catalog.=);
 *	- the user id is switched with SECURITY_LOCAL_USERID_CHANGE, and when
 *	  a user's table is read, as its owner inside a security-restricted
 *	  operation, as REFRESH MATERIALIZED VIEW, ANALYZE and autovacuum do:
 *	  code the owner controls then runs with no more than the owner's
 *	  rights and cannot change session state.
 *
 * One exception, the queue row every capturing transaction writes, skips
 * the search_path pin (wtcache_rights_enter_unpinned says why it may).
 *
 * An error inside unwinds both: transaction abort restores the user id
 * and security context and AtEOXact_GUC pops the nest level.
 *
 * wtcache_run_in_subxact() runs such work where one table's error must not
 * fail the rest (the worker's reads, requeues after DDL and data loss).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "rights.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

/* wtcache.queue, found by schema and name; InvalidOid when not installed. */
Oid
wtcache_queue_relid(void)
{
	Oid			nsp = get_namespace_oid(WTCACHE_SCHEMA, true);

	return OidIsValid(nsp) ? get_relname_relid(WTCACHE_QUEUE_TABLE, nsp) : InvalidOid;
}

/*
 * The functions that act on a table for its owner (verify(),
 * retry_set_aside(), discard_set_aside()) refuse anyone else, as ALTER
 * TABLE would.
 */
void
wtcache_check_table_owner(Oid relid)
{
	if (get_rel_name(relid) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(relid));
}

static Oid
relation_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * The role that owns wtcache's tables (whoever ran CREATE EXTENSION).
 * Errors out when the extension is not installed in this database.
 */
Oid
wtcache_owner(void)
{
	Oid			queue = wtcache_queue_relid();

	if (!OidIsValid(queue))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the wtcache extension is not installed in this database"),
				 errhint("Run CREATE EXTENSION wtcache, or drop leftover wtcache_capture triggers.")));
	return relation_owner(queue);
}

/*
 * Become userid with search_path pinned.  restricted: also forbid the
 * session-state changes a security-restricted operation forbids (for
 * reading a user's table as its owner).
 */
void
wtcache_rights_enter(WtcRights *rights, Oid userid, bool restricted)
{
	int			sec;

	GetUserIdAndSecContext(&rights->save_userid, &rights->save_sec);
	sec = rights->save_sec | SECURITY_LOCAL_USERID_CHANGE;
	if (restricted)
		sec |= SECURITY_RESTRICTED_OPERATION;
	SetUserIdAndSecContext(userid, sec);
	rights->nestlevel = wtcache_pin_search_path();
}

/*
 * Read a user's table as its owner, restricted, every row: row_security is
 * off, so a table whose policies apply to its owner (FORCE ROW LEVEL
 * SECURITY) makes the read fail rather than hide rows, which wtcache would
 * take for deleted ones.  The caller has the table locked.
 */
void
wtcache_rights_enter_table_owner(WtcRights *rights, Oid relid)
{
	Oid			owner = relation_owner(relid);

	wtcache_rights_enter(rights, owner, true);
	(void) set_config_option("row_security", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Become userid, restricted, without pinning search_path: for the queue
 * row every capturing transaction writes (queue.c), where a GUC nest level
 * per chunk would cost more than the insert.  Safe without the pin because
 * that write resolves no name through search_path: its heap insert is
 * direct, and its fallback INSERT was planned once with every object
 * schema-qualified; what that can run (the queue's own triggers and
 * defaults) is the queue owner's, run as the owner, restricted.
 */
void
wtcache_rights_enter_unpinned(WtcRights *rights, Oid userid)
{
	GetUserIdAndSecContext(&rights->save_userid, &rights->save_sec);
	SetUserIdAndSecContext(userid, rights->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	rights->nestlevel = -1;
}

void
wtcache_rights_leave(WtcRights *rights)
{
	if (rights->nestlevel >= 0)
		wtcache_unpin_search_path(rights->nestlevel);
	SetUserIdAndSecContext(rights->save_userid, rights->save_sec);
}

/*
 * One statement on wtcache's own tables, as the extension's owner: they
 * are not readable by the roles that call wtcache's functions.  SPI's
 * result code; an error inside unwinds the rights with the transaction.
 */
int
wtcache_spi_as_extension_owner(const char *sql, int nargs, Oid *argtypes, Datum *values,
							   const char *nulls, bool read_only, long count)
{
	WtcRights	rights;
	int			rc;

	wtcache_rights_enter(&rights, wtcache_owner(), false);
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, read_only, count);
	wtcache_rights_leave(&rights);
	return rc;
}

/* search_path = pg_catalog, pg_temp until wtcache_unpin_search_path(). */
int
wtcache_pin_search_path(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

void
wtcache_unpin_search_path(int nestlevel)
{
	AtEOXact_GUC(false, nestlevel);
}

/*
 * Run fn(arg) in a subtransaction: true once it completed; false if it
 * raised an ERROR, which is rolled back with everything the subtransaction
 * did (the rights and settings above included) and its message left in
 * *message (in the caller's memory context; message may be NULL).  For the
 * paths that must not fail because of one table.  A FATAL (a shutdown)
 * goes through.
 */
bool
wtcache_run_in_subxact(void (*fn) (void *arg), void *arg, char **message)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (message != NULL)
			*message = edata->message;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}
