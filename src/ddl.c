/*-------------------------------------------------------------------------
 * ddl.c
 *		Keep the delivery worker out of the way of database-level DDL.
 *
 * The worker stays connected to its database, and PostgreSQL refuses
 * DROP DATABASE, ALTER DATABASE ... RENAME TO / SET TABLESPACE and
 * CREATE DATABASE ... TEMPLATE while anyone else is connected to the
 * database concerned.  Without this hook a DBA would have to find and
 * terminate our worker first, only to see the launcher start it again.
 *
 * Before such a statement runs, the database's worker slot is held: the
 * worker is stopped and no new one starts.  When the transaction ends the
 * slot is freed (database dropped) or the worker comes back; a database
 * created from a served template gets a worker too (it has the extension,
 * but no CREATE EXTENSION ran to ask for one).  Nothing
 * captured is lost: the queue is in the database itself, and a worker that
 * is stopped mid-batch leaves its batch unacknowledged, to be sent again.
 *
 * Table-level DDL on a watched table, so that Redis never serves rows in an
 * old shape or under an old name for longer than a resync:
 *	- ALTER TABLE ... ADD / DROP COLUMN, ALTER COLUMN TYPE, RENAME COLUMN:
 *	  every row is queued again (the row JSON changed);
 *	- ALTER TABLE ... RENAME TO / SET SCHEMA: the keys under the old name
 *	  are queued for removal, and every row is queued under the new one.
 * All of it in the DDL's own transaction, so it rolls back with it.  Drops
 * (of the table, or of its capture triggers) are handled by the sql_drop
 * event trigger (wtcache._on_sql_drop).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

static ProcessUtility_hook_type prev_utility_hook = NULL;

static bool
has_option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);

		if (strcmp(opt->defname, name) == 0)
			return true;
	}
	return false;
}

static const char *
template_option(List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *opt = lfirst_node(DefElem, lc);

		if (strcmp(opt->defname, "template") == 0)
			return defGetString(opt);
	}
	return NULL;
}

/*
 * The database that the statement needs free of other connections, or
 * NULL.  *dropping tells whether it goes away on success.
 */
static const char *
database_needing_exclusivity(Node *parsetree, bool *dropping)
{
	*dropping = false;
	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			*dropping = true;
			return ((DropdbStmt *) parsetree)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) parsetree)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			if (has_option(((AlterDatabaseStmt *) parsetree)->options, "tablespace"))
				return ((AlterDatabaseStmt *) parsetree)->dbname;
			return NULL;
		case T_CreatedbStmt:
			return template_option(((CreatedbStmt *) parsetree)->options);
		default:
			return NULL;
	}
}

static void
run_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			ProcessUtilityContext context, ParamListInfo params,
			QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/*
 * Databases held by this transaction.  Held until it ends, not just until
 * the statement does: a worker started before a RENAME commits would take
 * the old name for its keys, and one started before DROP DATABASE commits
 * would find nothing to connect to.
 */
typedef struct HeldDatabase
{
	Oid			dboid;
	bool		dropping;		/* DROP DATABASE that completed */
	bool		restart;		/* there was a worker to bring back */
	Oid			copy;			/* CREATE DATABASE copy of a served template */
} HeldDatabase;

static HeldDatabase *held = NULL;
static int	nheld = 0;
static int	maxheld = 0;

static HeldDatabase *
remember_hold(Oid dboid, bool restart)
{
	if (nheld == maxheld)
	{
		int			newmax = Max(4, maxheld * 2);

		held = held ? repalloc(held, newmax * sizeof(HeldDatabase))
			: MemoryContextAlloc(TopMemoryContext, newmax * sizeof(HeldDatabase));
		maxheld = newmax;
	}
	held[nheld].dboid = dboid;
	held[nheld].dropping = false;
	held[nheld].restart = restart;
	held[nheld].copy = InvalidOid;
	return &held[nheld++];
}

static void
ddl_xact_callback(XactEvent event, void *arg)
{
	bool		committed;

	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		wtcache_changing_triggers = false;
	if (nheld == 0)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		committed = true;
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		committed = false;
	else
		return;

	for (int i = 0; i < nheld; i++)
	{
		HeldDatabase *h = &held[i];

		wtcache_release_database(h->dboid, committed && h->dropping,
								 h->restart && !(committed && h->dropping));
		if (committed && OidIsValid(h->copy))
			wtcache_request_worker(h->copy);
	}
	nheld = 0;
}

typedef enum TableChange
{
	TABLE_UNCHANGED,
	TABLE_RESHAPED,				/* the row JSON changes */
	TABLE_RENAMED,				/* its keys' names change */
	TABLE_INDEX_DROPPED			/* the key's unique index may be gone */
} TableChange;

/* What a statement does to a table, and which table (InvalidOid: none). */
static TableChange
table_change(Node *parsetree, Oid *relid)
{
	RangeVar   *rv = NULL;
	TableChange change = TABLE_UNCHANGED;

	*relid = InvalidOid;
	if (IsA(parsetree, AlterTableStmt))
	{
		AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
		ListCell   *lc;

		if (stmt->objtype != OBJECT_TABLE)
			return TABLE_UNCHANGED;
		foreach(lc, stmt->cmds)
		{
			AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

			if (cmd->subtype == AT_AddColumn || cmd->subtype == AT_AddColumnRecurse ||
				cmd->subtype == AT_DropColumn || cmd->subtype == AT_DropColumnRecurse ||
				cmd->subtype == AT_AlterColumnType)
				change = TABLE_RESHAPED;
			else if ((cmd->subtype == AT_DropConstraint || cmd->subtype == AT_DropConstraintRecurse) &&
					 change == TABLE_UNCHANGED)
				change = TABLE_INDEX_DROPPED;
		}
		rv = stmt->relation;
	}
	else if (IsA(parsetree, RenameStmt))
	{
		RenameStmt *stmt = (RenameStmt *) parsetree;

		if (stmt->renameType == OBJECT_TABLE)
			change = TABLE_RENAMED;
		else if (stmt->renameType == OBJECT_COLUMN && stmt->relationType == OBJECT_TABLE)
			change = TABLE_RESHAPED;
		rv = stmt->relation;
	}
	else if (IsA(parsetree, DropStmt) && ((DropStmt *) parsetree)->removeType == OBJECT_INDEX &&
			 list_length(((DropStmt *) parsetree)->objects) == 1)
	{
		/* DROP INDEX of one index: its table */
		RangeVar   *index = makeRangeVarFromNameList(linitial(((DropStmt *) parsetree)->objects));
		Oid			indexoid = RangeVarGetRelid(index, NoLock, true);

		*relid = OidIsValid(indexoid) ? IndexGetRelation(indexoid, true) : InvalidOid;
		return OidIsValid(*relid) ? TABLE_INDEX_DROPPED : TABLE_UNCHANGED;
	}
	else if (IsA(parsetree, AlterObjectSchemaStmt))
	{
		AlterObjectSchemaStmt *stmt = (AlterObjectSchemaStmt *) parsetree;

		if (stmt->objectType == OBJECT_TABLE)
			change = TABLE_RENAMED;
		rv = stmt->relation;
	}
	if (change == TABLE_UNCHANGED || rv == NULL)
		return TABLE_UNCHANGED;
	*relid = RangeVarGetRelid(rv, NoLock, true);
	return OidIsValid(*relid) ? change : TABLE_UNCHANGED;
}

static bool
is_watched(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		watched;

	WtcRights	rights;

	if (!OidIsValid(get_extension_oid("wtcache", true)))
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* wtcache.watched is not readable by PUBLIC; this runs before any check */
	wtcache_rights_enter(&rights, wtcache_owner(), false);
	if (SPI_execute_with_args("SELECT 1 FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	wtcache_rights_leave(&rights);
	watched = SPI_processed > 0;
	SPI_finish();
	return watched;
}

static char *
current_table_key(Oid relid)
{
	StringInfoData tk;

	initStringInfo(&tk);
	wtcache_append_table_key(&tk, get_database_name(MyDatabaseId),
							 get_namespace_name(get_rel_namespace(relid)),
							 get_rel_name(relid));
	return tk.data;
}

/* Run a statement that changes a watched table, then requeue the table. */
static void
run_table_ddl(TableChange change, Oid relid, PlannedStmt *pstmt, const char *queryString,
			  bool readOnlyTree, ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	char	   *old_key = current_table_key(relid);
	uint64		rows;

	run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	if (get_rel_name(relid) == NULL || !is_watched(relid))
		return;
	CommandCounterIncrement();
	if (change == TABLE_INDEX_DROPPED)
	{
		wtcache_warn_if_key_unenforced(relid);
		return;
	}
	if (change == TABLE_RENAMED)
		wtcache_enqueue_whole_table(relid, old_key);
	rows = wtcache_resync_table(relid);
	ereport(NOTICE,
			(errmsg("wtcache: %s \"%s\"; its " UINT64_FORMAT " rows are queued for Redis again",
					change == TABLE_RENAMED ? "renamed watched table" : "changed the columns of watched table",
					get_rel_name(relid), rows),
			 change == TABLE_RENAMED ?
			 errdetail("The keys under its old name are removed.") : 0));
}

static void
wtcache_process_utility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		drops;
	const char *dbname = database_needing_exclusivity(parsetree, &drops);
	Oid			dboid = dbname ? get_database_oid(dbname, true) : InvalidOid;
	HeldDatabase *h;
	int			index;

	if (!OidIsValid(dboid) || dboid == MyDatabaseId || WtcacheSharedState == NULL)
	{
		Oid			relid;
		TableChange change = dbname == NULL ? table_change(parsetree, &relid) : TABLE_UNCHANGED;

		if (change != TABLE_UNCHANGED && IsTransactionState() && is_watched(relid))
			run_table_ddl(change, relid, pstmt, queryString, readOnlyTree, context,
						  params, queryEnv, dest, qc);
		else
			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
		return;
	}

	/*
	 * Recorded before the wait, so that an error or a cancel during it
	 * still releases the slot when the transaction aborts.
	 */
	index = nheld;
	h = remember_hold(dboid, true);
	h->restart = !wtcache_hold_database(dboid);

	run_utility(pstmt, queryString, readOnlyTree, context, params,
				queryEnv, dest, qc);

	h = &held[index];
	h->dropping = drops;
	if (IsA(parsetree, CreatedbStmt) && h->restart)
		h->copy = get_database_oid(((CreatedbStmt *) parsetree)->dbname, true);
}

void
wtcache_install_utility_hook(void)
{
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = wtcache_process_utility;
	RegisterXactCallback(ddl_xact_callback, NULL);
}
