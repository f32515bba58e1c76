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
 * event trigger (wtcache._on_sql_drop, at the end of this file).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "ddl.h"
#include "partition.h"
#include "rights.h"
#include "setaside.h"
#include "shmem.h"
#include "watch.h"
#include "xact.h"
#include "keyspace.h"

#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "nodes/value.h"
#include "parser/parse_type.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

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

void
wtcache_ddl_xact_event(XactEvent event)
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

		/* column renames: follow_column_renames */
		if (stmt->renameType == OBJECT_TABLE)
			change = TABLE_RENAMED;
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

/*
 * Queue a watched table's removal and rows again after DDL, in the DDL's
 * transaction; when its rows cannot be read as its owner, its keys are
 * removed instead, with a WARNING (PostgreSQL accepts the DDL all the
 * same).  Returns the rows queued.
 */
static uint64
requeue_table(Oid relid)
{
	char	   *failure;
	uint64		rows = wtcache_resync_table_or_purge(relid, true, &failure);

	if (failure != NULL)
		ereport(WARNING,
				(errmsg("wtcache: could not queue the rows of watched table \"%s\" again: %s",
						get_rel_name(relid), failure),
				 errdetail("Its keys are removed from Redis instead; cached reads fill them again from the table."),
				 errhint("wtcache reads a watched table as its owner, who must be able to read every row.")));
	return rows;
}

/*
 * A capture trigger created by anyone but watch(): pg_restore re-creating
 * a watched table's triggers after it loaded the table's rows without them
 * (and the worker may have resynced the database before the rows were
 * there).  Queue the table's rows, so that a restored database ends up
 * whole in Redis with no hand work.
 */
static void
requeue_if_restored(CreateTrigStmt *stmt)
{
	Oid			relid;

	if (strcmp(stmt->trigname, "wtcache_capture_ins") != 0)
		return;
	relid = RangeVarGetRelid(stmt->relation, NoLock, true);
	if (!OidIsValid(relid) || !wtcache_is_watched(relid))
		return;
	wtcache_watch_restored(relid);
	CommandCounterIncrement();
	(void) requeue_table(relid);
}

/*
 * DDL that changes the values of a type without touching the tables that
 * use it: ALTER TYPE ... RENAME VALUE of an enum, and ALTER TYPE ...
 * ADD/DROP/ALTER/RENAME ATTRIBUTE of a composite type.  *typid: the type.
 */
static bool
changes_type_values(Node *parsetree, Oid *typid)
{
	List	   *names = NIL;

	if (IsA(parsetree, AlterEnumStmt) && ((AlterEnumStmt *) parsetree)->oldVal != NULL)
		names = ((AlterEnumStmt *) parsetree)->typeName;
	else if (IsA(parsetree, AlterTableStmt) && ((AlterTableStmt *) parsetree)->objtype == OBJECT_TYPE)
	{
		RangeVar   *rv = ((AlterTableStmt *) parsetree)->relation;

		names = rv->schemaname ? list_make2(makeString(rv->schemaname), makeString(rv->relname))
			: list_make1(makeString(rv->relname));
	}
	else if (IsA(parsetree, RenameStmt) && ((RenameStmt *) parsetree)->renameType == OBJECT_ATTRIBUTE)
	{
		RangeVar   *rv = ((RenameStmt *) parsetree)->relation;

		names = rv->schemaname ? list_make2(makeString(rv->schemaname), makeString(rv->relname))
			: list_make1(makeString(rv->relname));
	}
	if (names == NIL)
		return false;
	*typid = LookupTypeNameOid(NULL, makeTypeNameFromNameList(names), true);
	return OidIsValid(*typid);
}

/*
 * Queue again every watched table with a column of type typid, or of a
 * domain or an array over it: the rows' JSON (and the keys, if a key
 * column uses it) changed.  Read as the extension's owner, search_path
 * pinned.
 */
static void
requeue_tables_using_type(Oid typid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(typid)};
	List	   *rels = NIL;
	ListCell   *lc;
	MemoryContext outer = CurrentMemoryContext;
	int			rc;

	if (!OidIsValid(get_extension_oid("wtcache", true)))
		return;
	CommandCounterIncrement();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/*
	 * Every type whose values are built of it, at any depth: domains
	 * (over domains), arrays, composite types (a table's row type too),
	 * ranges and multiranges.
	 */
	rc = wtcache_spi_as_extension_owner("WITH RECURSIVE deps(oid) AS ("
							   "SELECT $1::pg_catalog.oid UNION "
							   "SELECT t.oid FROM pg_catalog.pg_type t JOIN deps d ON "
							   "t.typbasetype OPERATOR(pg_catalog.=) d.oid OR t.typelem OPERATOR(pg_catalog.=) d.oid "
							   "OR EXISTS (SELECT FROM pg_catalog.pg_attribute ca "
							   "WHERE t.typrelid OPERATOR(pg_catalog.<>) 0 AND ca.attrelid OPERATOR(pg_catalog.=) t.typrelid "
							   "AND ca.attnum OPERATOR(pg_catalog.>) 0 AND NOT ca.attisdropped "
							   "AND ca.atttypid OPERATOR(pg_catalog.=) d.oid) "
							   "OR EXISTS (SELECT FROM pg_catalog.pg_range r "
							   "WHERE (r.rngtypid OPERATOR(pg_catalog.=) t.oid OR r.rngmultitypid OPERATOR(pg_catalog.=) t.oid) "
							   "AND r.rngsubtype OPERATOR(pg_catalog.=) d.oid)) "
							   "SELECT w.rel::pg_catalog.oid FROM wtcache.watched w "
							   "WHERE EXISTS (SELECT FROM pg_catalog.pg_attribute a "
							   "WHERE a.attrelid OPERATOR(pg_catalog.=) w.rel AND a.attnum OPERATOR(pg_catalog.>) 0 "
							   "AND NOT a.attisdropped AND a.atttypid OPERATOR(pg_catalog.=) ANY (SELECT d.oid FROM deps d))",
							   1, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache.watched lookup failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		MemoryContext spi = MemoryContextSwitchTo(outer);

		rels = lappend_oid(rels, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 1, &isnull)));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	foreach(lc, rels)
		(void) requeue_table(lfirst_oid(lc));
}

/* ALTER TABLE ... ENABLE / DISABLE TRIGGER (any form)? */
static bool
toggles_triggers(Node *parsetree)
{
	ListCell   *lc;

	if (!IsA(parsetree, AlterTableStmt) || ((AlterTableStmt *) parsetree)->objtype != OBJECT_TABLE)
		return false;
	foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
	{
		switch (lfirst_node(AlterTableCmd, lc)->subtype)
		{
			case AT_EnableTrig:
			case AT_EnableAlwaysTrig:
			case AT_EnableReplicaTrig:
			case AT_DisableTrig:
			case AT_EnableTrigAll:
			case AT_DisableTrigAll:
			case AT_EnableTrigUser:
			case AT_DisableTrigUser:
				return true;
			default:
				break;
		}
	}
	return false;
}

/*
 * A watched table and, when it is partitioned, every partition of it: the
 * capture triggers of the partitions are clones of its own.
 */
static ArrayType *
tree_oids(Oid relid)
{
	List	   *tree = get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ?
		find_all_inheritors(relid, NoLock, NULL) : list_make1_oid(relid);
	Datum	   *oids = palloc(sizeof(Datum) * list_length(tree));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, tree)
		oids[n++] = ObjectIdGetDatum(lfirst_oid(lc));
	return construct_array(oids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT);
}

/*
 * After ALTER TABLE ... ENABLE / DISABLE TRIGGER on a watched table (or on
 * a partition of one, as pg_restore --disable-triggers does): while
 * a capture trigger is disabled, changes bypass capture, so the table's
 * reads are held to the table (setaside.c); once they are all enabled
 * again, they fire ALWAYS again (ENABLE TRIGGER ALL makes them fire on
 * origin only, and a replica's apply worker would bypass them), the hold
 * goes and the table is requeued: what changed meanwhile reaches Redis.
 * pg_restore --disable-triggers does exactly this around a table's data.
 */
static void
follow_trigger_state(Oid relid)
{
	int			disabled = 0;
	int			not_always = 0;
	int			not_replica = 0;

	CommandCounterIncrement();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			argtypes[1] = {OIDARRAYOID};
		Datum		values[1];
		int			nestlevel = wtcache_pin_search_path();

		values[0] = PointerGetDatum(tree_oids(relid));
		/* the partitions' replica-mode TRUNCATE triggers fire 'R', the rest 'A' */
		if (SPI_execute_with_args("SELECT pg_catalog.count(*) FILTER (WHERE tgenabled OPERATOR(pg_catalog.=) 'D'), "
								  "pg_catalog.count(*) FILTER (WHERE tgenabled OPERATOR(pg_catalog.<>) 'A' "
								  "AND tgname OPERATOR(pg_catalog.<>) 'wtcache_truncate_replica'), "
								  "pg_catalog.count(*) FILTER (WHERE tgenabled OPERATOR(pg_catalog.<>) 'R' "
								  "AND tgname OPERATOR(pg_catalog.=) 'wtcache_truncate_replica') "
								  "FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) ANY ($1) "
								  "AND tgname OPERATOR(pg_catalog.=) ANY (ARRAY['wtcache_capture_ins', 'wtcache_capture_upd', "
								  "'wtcache_capture_del', 'wtcache_truncate', 'wtcache_truncate_replica']::pg_catalog.name[])",
								  1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "pg_trigger lookup failed");
		wtcache_unpin_search_path(nestlevel);
		if (SPI_processed == 1)
		{
			bool		isnull;

			disabled = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			not_always = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			not_replica = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		}
	}
	if (disabled > 0)
	{
		wtcache_hold_table(relid, wtcache_current_table_key(relid));
		SPI_finish();
		return;
	}
	SPI_finish();
	if (not_always > 0)
		wtcache_enable_capture_always(relid);
	if (not_replica > 0)
		wtcache_partition_truncate_triggers(relid, true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (wtcache_release_table(relid))
	{
		SPI_finish();
		(void) requeue_table(relid);
		return;
	}
	SPI_finish();
}

/* ALTER TABLE ... SET UNLOGGED? */
static bool
sets_unlogged(Node *parsetree)
{
	ListCell   *lc;

	if (!IsA(parsetree, AlterTableStmt) || ((AlterTableStmt *) parsetree)->objtype != OBJECT_TABLE)
		return false;
	foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
		if (lfirst_node(AlterTableCmd, lc)->subtype == AT_SetUnLogged)
			return true;
	return false;
}

/*
 * An unlogged table is emptied by crash recovery and is empty on a
 * promoted standby, while Redis would keep serving its rows: watch()
 * refuses one, and a watched table made unlogged (or whose partition was)
 * stops being watched, its keys removed, with a WARNING (PostgreSQL
 * accepts the statement).  It is unwatched as its owner: the DDL user may
 * own only the partition.
 */
static void
unwatch_unlogged(Oid watched, Oid unlogged)
{
	wtcache_unwatch_as_owner(watched);
	ereport(WARNING,
			(watched == unlogged ?
			 errmsg("wtcache: table \"%s\" is no longer watched: it is unlogged now",
					get_rel_name(watched)) :
			 errmsg("wtcache: table \"%s\" is no longer watched: its partition \"%s\" is unlogged now",
					get_rel_name(watched), get_rel_name(unlogged)),
			 errdetail("Crash recovery empties an unlogged table, and a promoted standby has it empty, while Redis would keep its rows. Its keys are removed from Redis."),
			 errhint("ALTER TABLE ... SET LOGGED, then call wtcache.watch() again.")));
}

/* Does an ALTER TABLE change the type of a column the capture triggers name? */
static bool
alters_captured_column_type(Node *parsetree, Oid relid)
{
	ListCell   *lc;

	if (!IsA(parsetree, AlterTableStmt))
		return false;
	foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		if (cmd->subtype == AT_AlterColumnType && cmd->name != NULL &&
			wtcache_column_is_captured(relid, cmd->name))
			return true;
	}
	return false;
}

/* Run a statement that changes a watched table, then requeue the table. */
static void
run_table_ddl(TableChange change, Oid relid, PlannedStmt *pstmt, const char *queryString,
			  bool readOnlyTree, ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	char	   *old_key = wtcache_current_table_key(relid);
	uint64		rows;
	bool		retype = alters_captured_column_type(pstmt->utilityStmt, relid);
	bool		enforced = change != TABLE_INDEX_DROPPED || wtcache_key_enforced(relid);

	/*
	 * PostgreSQL refuses to change the type of a column a trigger's WHEN
	 * clause names (the key and tag columns): the capture triggers make way
	 * for the statement and are created again from the watch after it, in
	 * its transaction.  A watch that is lost meanwhile could not be.
	 */
	if (retype)
		wtcache_drop_row_triggers(relid);
	run_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	if (retype)
	{
		CommandCounterIncrement();
		wtcache_create_row_triggers(relid);
	}
	if (get_rel_name(relid) == NULL || !wtcache_is_watched(relid))
		return;
	CommandCounterIncrement();
	if (change == TABLE_INDEX_DROPPED)
	{
		/* once, when the statement took the key's last unique index away */
		if (enforced)
			wtcache_warn_if_key_unenforced(relid);
		return;
	}
	if (change == TABLE_RENAMED)
	{
		/* SET SCHEMA to the schema it is in, RENAME to its own name */
		if (strcmp(old_key, wtcache_current_table_key(relid)) == 0)
			return;
		/* keys made from a template do not change with the name */
		if (wtcache_current_key_template(relid) == NULL)
			wtcache_enqueue_whole_table(relid, old_key, NULL);
	}
	rows = requeue_table(relid);
	/* routine, and wtcache.status shows the rows pending: no NOTICE */
	ereport(DEBUG1,
			(errmsg("wtcache: %s \"%s\"; its " UINT64_FORMAT " rows are queued for Redis again",
					change == TABLE_RENAMED ? "renamed watched table" : "changed the columns of watched table",
					get_rel_name(relid), rows),
			 change == TABLE_RENAMED ?
			 errdetail("The keys under its old name are removed.") : 0));
}

/*
 * A statement that may rename columns of watched tables: RENAME COLUMN
 * under any of the names PostgreSQL accepts for a table (ALTER TABLE,
 * VIEW, MATERIALIZED VIEW, FOREIGN TABLE), which also renames it in
 * partitions and inheritance children, and ALTER TYPE ... RENAME
 * ATTRIBUTE ... CASCADE, which renames it in typed tables.  Any of them
 * can reach a watched table that the statement does not name.
 */
static bool
renames_columns(Node *parsetree)
{
	RenameStmt *stmt = (RenameStmt *) parsetree;

	return IsA(parsetree, RenameStmt) &&
		(stmt->renameType == OBJECT_COLUMN || stmt->renameType == OBJECT_ATTRIBUTE);
}

/*
 * After such a statement: every watched table whose column (by number) has
 * a new name.  The watch names its key columns, tag template columns and
 * projection, and a projection that kept a name no column has any more
 * would send the renamed column to Redis: rename them in the watch, then
 * queue the table's rows (their JSON names the column).
 */
static void
follow_column_renames(List *before)
{
	List	   *after;
	List	   *changed = NIL;
	ListCell   *b;
	ListCell   *a;

	if (before == NIL)
		return;
	CommandCounterIncrement();
	after = wtcache_watched_column_names();
	a = list_head(after);
	foreach(b, before)
	{
		WatchedColumn *old = lfirst(b);

		/* both are ordered by table and number */
		while (a != NULL)
		{
			WatchedColumn *now = lfirst(a);

			if (now->relid > old->relid ||
				(now->relid == old->relid && now->attnum >= old->attnum))
				break;
			a = lnext(after, a);
		}
		if (a != NULL)
		{
			WatchedColumn *now = lfirst(a);

			if (now->relid == old->relid && now->attnum == old->attnum &&
				strcmp(now->name, old->name) != 0)
			{
				wtcache_watch_rename_column(old->relid, old->name, now->name);
				changed = list_append_unique_oid(changed, old->relid);
			}
		}
	}
	if (changed == NIL)
		return;
	CommandCounterIncrement();
	foreach(b, changed)
		(void) requeue_table(lfirst_oid(b));
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
		Oid			relid = InvalidOid;
		TableChange change = dbname == NULL ? table_change(parsetree, &relid) : TABLE_UNCHANGED;

		Oid			typid = InvalidOid;
		PartitionDdl partition_ddl;

		wtcache_partition_statement_start(parsetree);
		if (IsTransactionState() && renames_columns(parsetree))
		{
			List	   *before = wtcache_watched_column_names();
			bool		retyped = changes_type_values(parsetree, &typid);

			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
			follow_column_renames(before);
			if (retyped)
				requeue_tables_using_type(typid);
			return;
		}
		if (IsTransactionState() && wtcache_partition_ddl_before(parsetree, &partition_ddl))
		{
			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
			wtcache_partition_ddl_after(parsetree, &partition_ddl);
			return;
		}
		if (IsTransactionState() && changes_type_values(parsetree, &typid))
		{
			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
			requeue_tables_using_type(typid);
			return;
		}
		/* not while watch() and this hook set their own triggers' state */
		if (toggles_triggers(parsetree) && !wtcache_changing_triggers && IsTransactionState())
		{
			Oid			toggled = RangeVarGetRelid(((AlterTableStmt *) parsetree)->relation, NoLock, true);
			Oid			watched = OidIsValid(toggled) ? wtcache_watched_tree(toggled, true) : InvalidOid;

			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
			if (OidIsValid(watched) && wtcache_queue_can_set_aside())
				follow_trigger_state(watched);
			return;
		}
		if (sets_unlogged(parsetree) && IsTransactionState())
		{
			Oid			unlogged = RangeVarGetRelid(((AlterTableStmt *) parsetree)->relation, NoLock, true);
			Oid			watched = OidIsValid(unlogged) ? wtcache_watched_tree(unlogged, true) : InvalidOid;

			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
			if (OidIsValid(watched))
				unwatch_unlogged(watched, unlogged);
			return;
		}
		if (IsA(parsetree, CreateTrigStmt) && !wtcache_changing_triggers && IsTransactionState())
		{
			run_utility(pstmt, queryString, readOnlyTree, context, params,
						queryEnv, dest, qc);
			requeue_if_restored((CreateTrigStmt *) parsetree);
			return;
		}

		if (change != TABLE_UNCHANGED && IsTransactionState() && wtcache_is_watched(relid))
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
}

/* ---------------------------------------------------------------------
 * The sql_drop event trigger
 *
 * A dropped watched table leaves no watch behind and its keys are queued
 * for removal; a watched table that lost one of its capture triggers is no
 * longer kept current, so the same happens, with a warning.
 *
 * wtcache._on_sql_drop() is this C function, not SECURITY DEFINER: an
 * event trigger function runs as whoever ran the DDL, and every role that
 * can drop a table or a trigger can run it.  What it acts on comes only
 * from pg_event_trigger_dropped_objects(), which PostgreSQL fills with what
 * the command really dropped (a table or trigger the DDL user owned); it
 * changes wtcache.watched as the extension's owner (src/rights.c,
 * search_path pinned), and queues the removal as capture does.  Nothing a
 * caller passes is trusted, so there is no entry point to abuse: a plpgsql
 * SECURITY DEFINER handler would run the whole body as a superuser, and a
 * helper it called would have to be callable by PUBLIC.
 *
 * wtcache._forget_table(relid, schema, table), the 1.1 helper, stays
 * REVOKEd from PUBLIC and refuses anything but a table the current command
 * dropped or took a capture trigger from, whoever calls it.
 * ---------------------------------------------------------------------
 */

typedef struct DroppedWatch
{
	Oid			relid;
	char	   *nspname;
	char	   *relname;
	char	   *trigger;		/* the capture trigger dropped, or NULL: the table */
	bool		column;			/* a column of the table was dropped */
	char	   *key_template;	/* its watch's, once forgotten (keyspace.h) */
} DroppedWatch;

static bool
is_capture_trigger(const char *name)
{
	return strcmp(name, "wtcache_capture_ins") == 0 ||
		strcmp(name, "wtcache_capture_upd") == 0 ||
		strcmp(name, "wtcache_capture_del") == 0 ||
		strcmp(name, "wtcache_truncate") == 0 ||
		strcmp(name, "wtcache_truncate_replica") == 0;
}

/*
 * The tables the current command dropped, and those it dropped a capture
 * trigger of (watched or not: the caller checks).  Needs SPI; the list
 * lives until SPI_finish().  Errors out unless called inside an sql_drop
 * event trigger: pg_event_trigger_dropped_objects() refuses.
 */
static List *
dropped_tables_and_triggers(void)
{
	List	   *result = NIL;
	int			nestlevel = wtcache_pin_search_path();
	SPITupleTable *tuptable;
	uint64		ntuples;

	if (SPI_execute("SELECT classid, objid, objsubid, object_type, address_names "
					"FROM pg_catalog.pg_event_trigger_dropped_objects()",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_event_trigger_dropped_objects() failed");
	wtcache_unpin_search_path(nestlevel);
	tuptable = SPI_tuptable;
	ntuples = SPI_processed;

	for (uint64 i = 0; i < ntuples; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		Oid			classid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		Oid			objid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		int32		objsubid = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *type = SPI_getvalue(tup, desc, 4);
		Datum		names = SPI_getbinval(tup, desc, 5, &isnull);
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		DroppedWatch *d;

		if (isnull || type == NULL)
			continue;
		deconstruct_array(DatumGetArrayTypeP(names), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		if (n < 2 || nulls[0] || nulls[1])
			continue;
		d = palloc0(sizeof(DroppedWatch));
		d->nspname = TextDatumGetCString(elems[0]);
		d->relname = TextDatumGetCString(elems[1]);
		if (classid == RelationRelationId && objsubid == 0 && n == 2 &&
			strcmp(type, "table") == 0)
			d->relid = objid;
		else if (classid == RelationRelationId && objsubid > 0 && strcmp(type, "table column") == 0)
		{
			d->relid = objid;
			d->column = true;
		}
		else if (strcmp(type, "trigger") == 0 && n == 3 && !nulls[2] &&
				 is_capture_trigger(TextDatumGetCString(elems[2])))
		{
			/* the table that lost it, if it was not dropped too */
			Oid			nsp = get_namespace_oid(d->nspname, true);

			d->trigger = TextDatumGetCString(elems[2]);
			d->relid = OidIsValid(nsp) ? get_relname_relid(d->relname, nsp) : InvalidOid;
			if (!OidIsValid(d->relid))
				continue;
		}
		else
			continue;
		result = lappend(result, d);
	}
	return result;
}

static void
queue_removal(const DroppedWatch *d)
{
	StringInfoData table_key;

	initStringInfo(&table_key);
	wtcache_append_table_key(&table_key, get_database_name(MyDatabaseId),
							 d->nspname, d->relname);
	wtcache_enqueue_whole_table(d->relid, table_key.data, d->key_template);
}

/*
 * Delete the watch of d's table, as the extension's owner; false if none.
 * d->key_template gets its key template, which names its keys.
 */
static bool
forget_watch(DroppedWatch *d)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(d->relid)};
	int			rc;

	d->key_template = wtcache_current_key_template(d->relid);
	rc = wtcache_spi_as_extension_owner("DELETE FROM wtcache.watched WHERE rel OPERATOR(pg_catalog.=) $1",
										1, argtypes, values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "wtcache.watched delete failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

PG_FUNCTION_INFO_V1(wtcache_on_sql_drop);
Datum
wtcache_on_sql_drop(PG_FUNCTION_ARGS)
{
	List	   *dropped;
	ListCell   *lc;
	Oid			nsp;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wtcache._on_sql_drop() must run as an sql_drop event trigger")));

	/* watch() and unwatch() replacing their own triggers */
	if (wtcache_changing_triggers)
		PG_RETURN_VOID();
	/* DROP EXTENSION wtcache, or DROP SCHEMA wtcache CASCADE */
	nsp = get_namespace_oid(WTCACHE_SCHEMA, true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid(WTCACHE_WATCHED_TABLE, nsp)) ||
		!OidIsValid(get_relname_relid(WTCACHE_QUEUE_TABLE, nsp)))
		PG_RETURN_VOID();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	dropped = dropped_tables_and_triggers();
	foreach(lc, dropped)
	{
		DroppedWatch *d = lfirst(lc);

		if (d->column)
		{
			/*
			 * A column dropped by another command than ALTER TABLE (whose
			 * requeue the utility hook makes): DROP DOMAIN or DROP TYPE ...
			 * CASCADE.  Its table's rows lost it: queue them again, unless
			 * the table goes too.
			 */
			EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;

			if (trigdata->tag == CMDTAG_ALTER_TABLE ||
				!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(d->relid)) ||
				!wtcache_is_watched(d->relid))
				continue;
			(void) requeue_table(d->relid);
			continue;
		}
		/* a partition's own TRUNCATE trigger: the watch of its tree ends */
		if (d->trigger != NULL && strcmp(d->trigger, "wtcache_truncate_replica") == 0)
		{
			Oid			root = wtcache_watched_tree(d->relid, false);

			if (!OidIsValid(root))
				continue;
			d->relid = root;
			d->nspname = get_namespace_name(get_rel_namespace(root));
			d->relname = get_rel_name(root);
		}
		if (!forget_watch(d))
			continue;
		queue_removal(d);
		if (d->trigger != NULL)
			ereport(WARNING,
					(errmsg("wtcache: table %s is no longer watched: its capture trigger %s was dropped",
							quote_qualified_identifier(d->nspname, d->relname), d->trigger),
					 errdetail("Its keys are removed from Redis; its changes are no longer captured."),
					 errhint("Run wtcache.watch(%s) to watch it again.",
							 quote_literal_cstr(quote_qualified_identifier(d->nspname, d->relname)))));
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * wtcache._forget_table(relid, schema, table): 1.1's helper of the plpgsql
 * handler, kept for it (a 1.1 install runs it until ALTER EXTENSION
 * UPDATE).  Queues the removal of the table's keys, only for a table that
 * the current command dropped or took a capture trigger from; false, doing
 * nothing, while watch() or unwatch() themselves replace the triggers.
 */
PG_FUNCTION_INFO_V1(wtcache_forget_table);
Datum
wtcache_forget_table(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *nspname = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *relname = text_to_cstring(PG_GETARG_TEXT_PP(2));
	DroppedWatch *found = NULL;
	List	   *dropped;
	ListCell   *lc;

	if (wtcache_changing_triggers)
		PG_RETURN_BOOL(false);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	dropped = dropped_tables_and_triggers();
	foreach(lc, dropped)
	{
		DroppedWatch *d = lfirst(lc);

		if (d->relid == relid && strcmp(d->nspname, nspname) == 0 &&
			strcmp(d->relname, relname) == 0)
			found = d;
	}
	if (found == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("wtcache._forget_table() forgets only a table that the current command dropped, or dropped a capture trigger of"),
				 errdetail("Table %u (%s) was not.", relid,
						   quote_qualified_identifier(nspname, relname))));
	queue_removal(found);
	SPI_finish();
	PG_RETURN_BOOL(true);
}
