/*-------------------------------------------------------------------------
 * partition.c
 *		A watch of a partitioned table covers its whole tree.
 *
 * watch() of a partitioned table creates the capture triggers on it, and
 * PostgreSQL clones row triggers to every partition, at any depth, now and
 * later (CREATE TABLE ... PARTITION OF, ATTACH PARTITION), with the WHEN
 * clause's column references mapped to each partition's columns.  The
 * clause names the watched table as a constant, so every partition
 * captures its keys as the watched table's: a row keeps its Redis key
 * wherever it lives, and an UPDATE that moves it to another partition (a
 * DELETE there, an INSERT here) records the one key twice.  The worker
 * reads the key's committed row through the watched table, so it pushes
 * the row where it now is, never a delete that lands after it.
 *
 * What changes a tree's rows without a row trigger firing is taken care
 * of here, always in the statement's own transaction:
 *	- ATTACH PARTITION: the rows the table brings are queued (after);
 *	  a table that was watched on its own is unwatched first, its keys
 *	  removed: from now on its rows are the tree's;
 *	- DETACH PARTITION: the partition's keys are queued after it; with
 *	  CONCURRENTLY also in its first transaction, which already hides
 *	  the partition from the parent's readers;
 *	- DROP of a partition (by any command: DROP TABLE, DROP SCHEMA ...
 *	  CASCADE, DROP OWNED): the object access hook queues its keys just
 *	  before PostgreSQL deletes it, when its rows can still be read;
 *	- TRUNCATE of a partition (named, a partition of a named one, or
 *	  reached by CASCADE): the object access hook queues its keys once
 *	  the table is locked, before it is emptied.  TRUNCATE of the watched
 *	  table itself is its TRUNCATE trigger's, which removes all its keys.
 * Each queued key is read through the watched table when it is
 * delivered: a row that is no longer there becomes a tombstone.  The keys
 * are read from the partition with a snapshot taken after its lock, so a
 * row committed by a writer just before the DDL is not missed.
 *
 * A tree with a partition wtcache cannot keep (an unlogged one, which
 * crash recovery empties, or a foreign table, written elsewhere) is not
 * watchable; a watched tree that gains one stops being watched, with a
 * WARNING, as a watched table made unlogged does (ddl.c).  Legacy
 * inheritance children are refused, not followed: a query of the parent
 * reads them, but their changes fire no trigger of the parent.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "keys.h"
#include "partition.h"
#include "rights.h"
#include "watch.h"
#include "xact.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

enum
{
	PARTITION_DDL_NONE = 0,
	PARTITION_DDL_ATTACH,
	PARTITION_DDL_DETACH,
	PARTITION_DDL_CREATE,
	PARTITION_DDL_OWNER
};

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * Per statement (reset when each utility statement starts): the watched
 * tables a DROP TABLE names, whose partitions need no keys queued (the
 * table's own drop removes them all), and the tables a TRUNCATE reached so
 * far, for the same reason.  A fixed array: past its end, partitions are
 * scanned for nothing, which costs time, never correctness.
 */
#define MAX_STATEMENT_TABLES 64
static Oid	dropping_watched[MAX_STATEMENT_TABLES];
static int	ndropping_watched = 0;
static Oid	dropping_schemas[MAX_STATEMENT_TABLES];	/* DROP SCHEMA */
static int	ndropping_schemas = 0;
static Oid	dropping_owners[MAX_STATEMENT_TABLES];	/* DROP OWNED BY */
static int	ndropping_owners = 0;
static Oid	truncating[MAX_STATEMENT_TABLES];
static int	ntruncating = 0;

static bool
oid_in(const Oid *oids, int n, Oid oid)
{
	for (int i = 0; i < n; i++)
		if (oids[i] == oid)
			return true;
	return false;
}

/* The first of these tables that is watched, or InvalidOid. */
static Oid
first_watched(List *relids)
{
	List	   *watched = wtcache_watched_among(relids);
	ListCell   *lc;

	foreach(lc, relids)
		if (list_member_oid(watched, lfirst_oid(lc)))
			return lfirst_oid(lc);
	return InvalidOid;
}

/*
 * The watched table whose tree holds relid: relid itself (include_self) or
 * the nearest watched one among the tables it is a partition of.  There is
 * at most one: watch() refuses a second in one tree.
 */
Oid
wtcache_watched_tree(Oid relid, bool include_self)
{
	List	   *chain = NIL;

	if (include_self)
		chain = lappend_oid(chain, relid);
	if (get_rel_relispartition(relid))
		chain = list_concat(chain, get_partition_ancestors(relid));
	return first_watched(chain);
}

/*
 * Queue, as keys of the watched table root, the key of every row of part
 * and of its partitions (a DROP, TRUNCATE, DETACH or ATTACH of part).  The
 * rows are read straight from the heap, with a snapshot taken now: the
 * caller holds a lock that keeps writers out (or, for DETACH CONCURRENTLY,
 * reads again once they are gone), so no row committed before the DDL is
 * missed.  Nothing of the caller's runs: no privilege, policy or function
 * but the key types' output functions.  Returns the rows queued.
 */
uint64
wtcache_enqueue_partition_rows(Oid root, Oid part)
{
	WatchConfig config;
	Relation	rootrel;
	KeyColumn  *cols;
	char	  **names;
	List	   *leaves;
	ListCell   *lc;
	Snapshot	snapshot;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext chunk_cxt;
	Datum	   *elems;
	int			nelems = 0;
	uint64		nrows = 0;
	bool		watched;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(outer);
	watched = wtcache_load_watch(root, &config);
	SPI_finish();
	if (!watched)
		return 0;

	rootrel = relation_open(root, AccessShareLock);
	cols = palloc(sizeof(KeyColumn) * config.nkeys);
	names = palloc(sizeof(char *) * config.nkeys);
	for (int i = 0; i < config.nkeys; i++)
	{
		wtcache_init_key_column(&cols[i], rootrel, config.key_attnums[i], outer);
		names[i] = pstrdup(NameStr(TupleDescAttr(RelationGetDescr(rootrel),
												 config.key_attnums[i] - 1)->attname));
	}
	relation_close(rootrel, NoLock);

	chunk_cxt = AllocSetContextCreate(outer, "wtcache partition keys", ALLOCSET_DEFAULT_SIZES);
	elems = palloc(sizeof(Datum) * WTCACHE_CHUNK_KEYS * config.nkeys);
	leaves = find_all_inheritors(part, NoLock, NULL);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	foreach(lc, leaves)
	{
		Oid			leaf = lfirst_oid(lc);
		Relation	rel;
		AttrNumber	attnums[INDEX_MAX_KEYS];
		TableScanDesc scan;
		TupleTableSlot *slot;

		if (get_rel_relkind(leaf) != RELKIND_RELATION)
			continue;			/* no rows of its own */
		/* dropped since it was listed: its own drop queued its keys */
		rel = try_relation_open(leaf, AccessShareLock);
		if (rel == NULL)
			continue;
		/* a partition has its parent's columns, by name, maybe elsewhere */
		for (int i = 0; i < config.nkeys; i++)
		{
			attnums[i] = get_attnum(leaf, names[i]);
			if (attnums[i] == InvalidAttrNumber)
				elog(ERROR, "partition \"%s\" has no column \"%s\"",
					 RelationGetRelationName(rel), names[i]);
		}
		slot = table_slot_create(rel, NULL);
		scan = table_beginscan(rel, snapshot, 0, NULL);
		MemoryContextSwitchTo(chunk_cxt);
		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			int			first = nelems;

			for (int i = 0; i < config.nkeys; i++)
			{
				bool		isnull;
				Datum		d = slot_getattr(slot, attnums[i], &isnull);

				/* a key column that lost NOT NULL: such a row has no key */
				if (isnull)
				{
					nelems = first;
					break;
				}
				elems[nelems++] = CStringGetTextDatum(wtcache_render_key_value(&cols[i], d));
			}
			if (nelems > first)
				nrows++;
			if (nelems >= WTCACHE_CHUNK_KEYS * config.nkeys)
			{
				MemoryContextSwitchTo(outer);
				wtcache_queue_insert_per_table(root, elems, nelems, config.nkeys);
				nelems = 0;
				MemoryContextReset(chunk_cxt);
				MemoryContextSwitchTo(chunk_cxt);
			}
			CHECK_FOR_INTERRUPTS();
		}
		MemoryContextSwitchTo(outer);
		table_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		relation_close(rel, NoLock);
	}
	if (nelems > 0)
		wtcache_queue_insert_per_table(root, elems, nelems, config.nkeys);
	UnregisterSnapshot(snapshot);
	MemoryContextDelete(chunk_cxt);
	if (nrows > 0)
		wtcache_note_enqueued();
	return nrows;
}

/*
 * ATTACH PARTITION and DETACH ... CONCURRENTLY change a tree under a lock
 * that lets readers in, and their commit is visible before PostgreSQL
 * sends the invalidation of the parent's partition list: a worker woken
 * by that commit could read the keys it queued through a partition list
 * from before it, find no row, and write tombstones over the rows just
 * attached (or push rows just detached).  So such a DDL holds this lock
 * until its end, which comes after the invalidation is sent, and the
 * worker takes it, then takes in the invalidations, before it reads a
 * partitioned table.  The DDL takes it at pre-commit, and the worker
 * after its lock on the table (a plain DETACH holds ACCESS EXCLUSIVE on
 * the parent), for an instant only: neither waits for anything else while
 * it holds it.  An advisory lock tag of
 * wtcache's own (field 4, where pg_advisory_lock() puts 1 or 2).
 */
#define WTCACHE_TREE_LOCK	0x7774

/* The trees this transaction attached or detached a partition of. */
static List *trees_to_lock = NIL;	/* in TopTransactionContext */

static void
tree_lock_tag(LOCKTAG *tag, Oid root)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, root, 0, WTCACHE_TREE_LOCK);
}

static void
hold_tree_until_commit(Oid root)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	trees_to_lock = list_append_unique_oid(trees_to_lock, root);
	MemoryContextSwitchTo(old);
}

/*
 * Taken at pre-commit, not when the DDL runs: held from just before the
 * commit is visible until just after the invalidations are sent, it
 * makes the worker wait for a commit, never for a transaction a user
 * keeps open after an ATTACH (which would stall delivery of every table,
 * and make a later DDL of that transaction deadlock with the worker).  A
 * prepared transaction takes none: its invalidations go at COMMIT
 * PREPARED, with no callback of ours to cover them.
 */
void
wtcache_partition_xact_event(XactEvent event)
{
	ListCell   *lc;
	LOCKTAG		tag;

	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PARALLEL_PRE_COMMIT)
		foreach(lc, trees_to_lock)
		{
			tree_lock_tag(&tag, lfirst_oid(lc));
			(void) LockAcquire(&tag, ExclusiveLock, false, false);
		}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		trees_to_lock = NIL;	/* its memory goes with the transaction */
}

/*
 * Wait for the DDL that holds the lock, if any, and let go at once: the
 * worker must not hold it while its read waits for the locks such a DDL
 * holds (an ATTACH holds the DEFAULT partition), or the two would wait for
 * each other.  A DDL whose commit the worker's snapshot sees took it
 * before that commit, so a wait here ends after its invalidation.
 */
void
wtcache_partition_read_barrier(Oid root)
{
	LOCKTAG		tag;

	tree_lock_tag(&tag, root);
	(void) LockAcquire(&tag, ShareLock, false, false);
	LockRelease(&tag, ShareLock, false);
	AcceptInvalidationMessages();
}

/*
 * A partition of root owned by another role than root, or InvalidOid.
 * wtcache reads a watched table as its owner (the worker, warm(),
 * resync(), verify()), and a read through a partitioned table runs code of
 * every partition: the planner evaluates their partial index predicates
 * and index expressions.  A partition's owner must not have that run with
 * the root owner's rights, so a watched tree has one owner (or owners
 * that have the root owner's rights anyway: a superuser, a member).
 */
Oid
wtcache_tree_stranger(Oid root)
{
	Oid			owner;
	ListCell   *lc;
	HeapTuple	tup;

	if (get_rel_relkind(root) != RELKIND_PARTITIONED_TABLE)
		return InvalidOid;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(root));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	foreach(lc, find_all_inheritors(root, NoLock, NULL))
	{
		Oid			member = lfirst_oid(lc);
		Oid			member_owner;

		tup = SearchSysCache1(RELOID, ObjectIdGetDatum(member));
		if (!HeapTupleIsValid(tup))
			continue;
		member_owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		ReleaseSysCache(tup);
		/* code run as the owner by a role that has its rights anyway */
		if (member_owner != owner && !has_privs_of_role(member_owner, owner))
			return member;
	}
	return InvalidOid;
}

/* Before a read of root as its owner: refuse a tree of several owners. */
void
wtcache_check_tree_owner(Oid root)
{
	Oid			stranger = wtcache_tree_stranger(root);

	if (OidIsValid(stranger))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("partition \"%s\" of watched table \"%s\" has another owner",
						get_rel_name(stranger), get_rel_name(root)),
				 errdetail("wtcache reads a watched table as its owner, and a read through a partitioned table runs code of its partitions (index predicates and expressions)."),
				 errhint("ALTER TABLE ... OWNER TO the owner of \"%s\".", get_rel_name(root))));
}

/*
 * watch() of rel: refuse a second watch in one partition tree, legacy
 * inheritance children, and partitions wtcache cannot keep.
 */
void
wtcache_check_watchable_tree(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			other;

	if (rel->rd_rel->relispartition &&
		OidIsValid(other = wtcache_watched_tree(relid, false)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot watch \"%s\": it is a partition of watched table \"%s\"",
						RelationGetRelationName(rel), get_rel_name(other)),
				 errdetail("The watch of \"%s\" covers every partition of it, under its keys.",
						   get_rel_name(other)),
				 errhint("Read its rows through \"%s\".", get_rel_name(other))));

	/* not has_subclass(): relhassubclass stays set after the last child goes */
	if (rel->rd_rel->relkind == RELKIND_RELATION &&
		find_inheritance_children(relid, NoLock) != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot watch \"%s\": it has inheritance children", RelationGetRelationName(rel)),
				 errdetail("A query of \"%s\" reads its children's rows too, and their changes fire none of its triggers.",
						   RelationGetRelationName(rel)),
				 errhint("Watch each table of the hierarchy on its own, or make \"%s\" a partitioned table.",
						 RelationGetRelationName(rel))));

	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		List	   *tree = find_all_inheritors(relid, NoLock, NULL);
		List	   *below = list_delete_first(list_copy(tree));
		ListCell   *lc;

		wtcache_check_tree_owner(relid);
		if (OidIsValid(other = first_watched(below)))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot watch \"%s\": its partition \"%s\" is watched on its own",
							RelationGetRelationName(rel), get_rel_name(other)),
					 errdetail("Its keys are named by the partition; the watch of \"%s\" would name them by \"%s\".",
							   RelationGetRelationName(rel), RelationGetRelationName(rel)),
					 errhint("Call wtcache.unwatch('%s') first.",
							 quote_qualified_identifier(get_namespace_name(get_rel_namespace(other)),
														get_rel_name(other)))));
		foreach(lc, below)
		{
			Oid			part = lfirst_oid(lc);

			if (get_rel_relkind(part) == RELKIND_FOREIGN_TABLE)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot watch \"%s\": its partition \"%s\" is a foreign table",
								RelationGetRelationName(rel), get_rel_name(part)),
						 errdetail("Its rows change on another server, where no trigger of wtcache's fires.")));
			if (get_rel_persistence(part) == RELPERSISTENCE_UNLOGGED)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot watch \"%s\": its partition \"%s\" is unlogged",
								RelationGetRelationName(rel), get_rel_name(part)),
						 errdetail("Crash recovery empties an unlogged table, and a promoted standby has it empty, while Redis would keep serving its rows."),
						 errhint("ALTER TABLE ... SET LOGGED the partition first.")));
		}
	}
}

/*
 * The capture call of a partitioned table runs in the triggers of its
 * partitions: someone who may write one of them may write through it.
 */
static Oid	may_write_root = InvalidOid;
static Oid	may_write_user = InvalidOid;
static bool may_write_callback = false;

static void
forget_may_write(Datum arg, Oid relid)
{
	/* any table's rights may have changed: a GRANT invalidates its relcache */
	may_write_root = InvalidOid;
}

bool
wtcache_writer_may_write_tree(Oid root)
{
	AclMode		write = ACL_INSERT | ACL_UPDATE | ACL_DELETE;
	ListCell   *lc;

	if (get_rel_relkind(root) != RELKIND_PARTITIONED_TABLE)
		return false;
	/* asked per partition and statement: the last yes is kept */
	if (root == may_write_root && GetUserId() == may_write_user)
		return true;
	foreach(lc, find_all_inheritors(root, NoLock, NULL))
	{
		Oid			part = lfirst_oid(lc);

		if (pg_class_aclmask(part, GetUserId(), write, ACLMASK_ANY) != 0 ||
			pg_attribute_aclcheck_all(part, GetUserId(), ACL_INSERT | ACL_UPDATE, ACLMASK_ANY) == ACLCHECK_OK)
		{
			if (!may_write_callback)
			{
				CacheRegisterRelcacheCallback(forget_may_write, (Datum) 0);
				may_write_callback = true;
			}
			may_write_root = root;
			may_write_user = GetUserId();
			return true;
		}
	}
	return false;
}

/*
 * Unwatch a table, its keys removed, as its owner: the DDL that calls for
 * it needs only to own a partition or the parent it is attached to.
 */
void
wtcache_unwatch_as_owner(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	WtcRights	rights;
	int			rc;

	CommandCounterIncrement();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wtcache_rights_enter_table_owner(&rights, relid);
	rc = SPI_execute_with_args("SELECT wtcache.unwatch($1::pg_catalog.regclass, true)",
							   1, argtypes, values, NULL, false, 0);
	wtcache_rights_leave(&rights);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "wtcache.unwatch() failed: %s", SPI_result_code_string(rc));
	SPI_finish();
}

/*
 * A watched tree that gained a partition it cannot keep (unlogged,
 * foreign, or another role's) stops being watched.
 */
static bool
unwatch_if_unkeepable(Oid root, Oid part)
{
	ListCell   *lc;
	Oid			stranger = wtcache_tree_stranger(root);

	if (OidIsValid(stranger))
	{
		wtcache_unwatch_as_owner(root);
		ereport(WARNING,
				(errmsg("wtcache: table \"%s\" is no longer watched: its partition \"%s\" has another owner",
						get_rel_name(root), get_rel_name(stranger)),
				 errdetail("wtcache reads a watched table as its owner, and a read through a partitioned table runs code of its partitions. Its keys are removed from Redis."),
				 errhint("ALTER TABLE ... OWNER TO the owner of \"%s\", then call wtcache.watch() again.",
						 get_rel_name(root))));
		return true;
	}

	foreach(lc, find_all_inheritors(part, NoLock, NULL))
	{
		Oid			leaf = lfirst_oid(lc);
		bool		foreign = get_rel_relkind(leaf) == RELKIND_FOREIGN_TABLE;

		if (!foreign && get_rel_persistence(leaf) != RELPERSISTENCE_UNLOGGED)
			continue;
		wtcache_unwatch_as_owner(root);
		ereport(WARNING,
				(errmsg("wtcache: table \"%s\" is no longer watched: its partition \"%s\" is %s",
						get_rel_name(root), get_rel_name(leaf),
						foreign ? "a foreign table" : "unlogged"),
				 foreign ?
				 errdetail("A foreign table's rows change on another server, where no trigger of wtcache's fires. Its keys are removed from Redis.") :
				 errdetail("Crash recovery empties an unlogged table, and a promoted standby has it empty, while Redis would keep its rows. Its keys are removed from Redis."),
				 errhint("Make the partition an ordinary logged table, then call wtcache.watch() again.")));
		return true;
	}
	return false;
}

static Oid
relid_of(RangeVar *rv)
{
	return rv == NULL ? InvalidOid : RangeVarGetRelid(rv, NoLock, true);
}

static void
refuse_inheritance_child(Oid parent)
{
	if (!OidIsValid(parent) || get_rel_relkind(parent) != RELKIND_RELATION ||
		!wtcache_is_watched(parent))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot inherit from \"%s\": wtcache watches it", get_rel_name(parent)),
			 errdetail("A query of \"%s\" would read the child's rows too, and their changes fire none of its triggers.",
					   get_rel_name(parent)),
			 errhint("Make it a partitioned table, or call wtcache.unwatch('%s') first.",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(parent)),
												get_rel_name(parent)))));
}

/*
 * A logical replication subscriber applies a TRUNCATE with no object
 * access hook call, and TRUNCATE triggers are not cloned to partitions:
 * every leaf partition of a watched tree gets a BEFORE TRUNCATE trigger of
 * its own that fires only in replica mode (as the apply worker runs),
 * where wtcache._capture_truncate() queues the partition's keys.  In
 * origin mode the hook does that.  Made and dropped as the tree's owner,
 * with the DDL hook looking away.
 */
#define REPLICA_TRUNCATE_TRIGGER "wtcache_truncate_replica"

void
wtcache_partition_truncate_triggers(Oid part, bool create)
{
	WtcRights	rights;
	ListCell   *lc;
	List	   *leaves = find_all_inheritors(part, NoLock, NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wtcache_changing_triggers = true;
	PG_TRY();
	{
		foreach(lc, leaves)
		{
			Oid			leaf = lfirst_oid(lc);
			char	   *qname;

			if (get_rel_relkind(leaf) != RELKIND_RELATION)
				continue;
			qname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(leaf)),
											   get_rel_name(leaf));
			/* as its owner: a tree whose watch ends may have several */
			wtcache_rights_enter_table_owner(&rights, leaf);
			if ((OidIsValid(get_trigger_oid(leaf, REPLICA_TRUNCATE_TRIGGER, true)) &&
				 SPI_execute(psprintf("DROP TRIGGER " REPLICA_TRUNCATE_TRIGGER " ON %s", qname),
							 false, 0) != SPI_OK_UTILITY) ||
				(create &&
				 (SPI_execute(psprintf("CREATE TRIGGER " REPLICA_TRUNCATE_TRIGGER
									   " BEFORE TRUNCATE ON %s FOR EACH STATEMENT"
									   " EXECUTE FUNCTION wtcache._capture_truncate()", qname),
							  false, 0) != SPI_OK_UTILITY ||
				  SPI_execute(psprintf("ALTER TABLE %s ENABLE REPLICA TRIGGER " REPLICA_TRUNCATE_TRIGGER,
									   qname), false, 0) != SPI_OK_UTILITY)))
				elog(ERROR, "wtcache: the TRUNCATE trigger of \"%s\" could not be %s",
					 get_rel_name(leaf), create ? "created" : "dropped");
			wtcache_rights_leave(&rights);
		}
	}
	PG_FINALLY();
	{
		wtcache_changing_triggers = false;
	}
	PG_END_TRY();
	SPI_finish();
}

/*
 * The BEFORE TRUNCATE trigger of a partition fired (replica mode): queue
 * its keys as its watched table's.  The table is locked.
 */
void
wtcache_partition_truncating(Oid part)
{
	Oid			root;

	/* a TRUNCATE statement of this session: the hook queued them already */
	if (oid_in(truncating, ntruncating, part))
		return;
	root = wtcache_watched_tree(part, false);
	if (OidIsValid(root) && !oid_in(truncating, ntruncating, root))
		(void) wtcache_enqueue_partition_rows(root, part);
}

/*
 * Before a utility statement: what it will do to a watched tree, and what
 * must happen first.  True if wtcache_partition_ddl_after() must follow
 * it.  Legacy inheritance children of a watched table are refused here.
 */
bool
wtcache_partition_ddl_before(Node *parsetree, PartitionDdl *pd)
{
	memset(pd, 0, sizeof(*pd));
	if (IsA(parsetree, CreateStmt) || IsA(parsetree, CreateForeignTableStmt))
	{
		CreateStmt *stmt = (CreateStmt *) parsetree;
		ListCell   *lc;

		if (stmt->partbound == NULL)
		{
			foreach(lc, stmt->inhRelations)
				refuse_inheritance_child(relid_of(lfirst_node(RangeVar, lc)));
			return false;
		}
		if (list_length(stmt->inhRelations) != 1)
			return false;
		pd->root = wtcache_watched_tree(relid_of(linitial_node(RangeVar, stmt->inhRelations)), true);
		/* IF NOT EXISTS of a table that exists: nothing is created */
		pd->kind = OidIsValid(pd->root) && !OidIsValid(relid_of(stmt->relation)) ?
			PARTITION_DDL_CREATE : PARTITION_DDL_NONE;
		return pd->kind != PARTITION_DDL_NONE;
	}
	if (IsA(parsetree, AlterTableStmt) && ((AlterTableStmt *) parsetree)->objtype == OBJECT_TABLE)
	{
		AlterTableStmt *stmt = (AlterTableStmt *) parsetree;
		ListCell   *lc;

		foreach(lc, stmt->cmds)
		{
			AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);
			Oid			parent;

			if (cmd->subtype == AT_AddInherit)
			{
				refuse_inheritance_child(relid_of(castNode(RangeVar, cmd->def)));
				continue;
			}
			if (cmd->subtype == AT_ChangeOwner)
			{
				Oid			relid = relid_of(stmt->relation);

				pd->root = OidIsValid(relid) ? wtcache_watched_tree(relid, true) : InvalidOid;
				if (OidIsValid(pd->root) && get_rel_relkind(pd->root) == RELKIND_PARTITIONED_TABLE)
					pd->kind = PARTITION_DDL_OWNER;
				continue;
			}
			if (cmd->subtype != AT_AttachPartition && cmd->subtype != AT_DetachPartition &&
				cmd->subtype != AT_DetachPartitionFinalize)
				continue;
			parent = relid_of(stmt->relation);
			if (!OidIsValid(parent) || get_rel_relkind(parent) != RELKIND_PARTITIONED_TABLE)
				return false;
			pd->root = wtcache_watched_tree(parent, true);
			pd->part = relid_of(castNode(PartitionCmd, cmd->def)->name);
			if (!OidIsValid(pd->root) || !OidIsValid(pd->part))
				return false;
			pd->kind = cmd->subtype == AT_AttachPartition ? PARTITION_DDL_ATTACH : PARTITION_DDL_DETACH;
			pd->concurrent = castNode(PartitionCmd, cmd->def)->concurrent;
			break;
		}
		if (pd->kind == PARTITION_DDL_ATTACH)
		{
			/* what was watched on its own joins the tree: its own keys go */
			ListCell   *lc2;

			foreach(lc2, find_all_inheritors(pd->part, NoLock, NULL))
			{
				Oid			member = lfirst_oid(lc2);

				if (!wtcache_is_watched(member))
					continue;
				wtcache_unwatch_as_owner(member);
				ereport(NOTICE,
						(errmsg("wtcache: table \"%s\" is no longer watched on its own: it joins watched table \"%s\"",
								get_rel_name(member), get_rel_name(pd->root)),
						 errdetail("Its keys are removed from Redis; its rows are pushed under the keys of \"%s\".",
								   get_rel_name(pd->root))));
			}
		}
		else if (pd->kind == PARTITION_DDL_DETACH && pd->concurrent)
		{
			/*
			 * Its first transaction hides the partition from the parent's
			 * readers, the worker's among them: its keys must go then,
			 * not only once the wait for older transactions is over (a
			 * cancel there would leave them).  Writers of the partition
			 * are kept out for that short transaction, so none commits a
			 * row after the scan that the worker could still push as the
			 * parent's; those that come after it are captured, and read
			 * through the parent that no longer has the partition.
			 */
			if (pg_class_ownercheck(relid_of(stmt->relation), GetUserId()))
			{
				/* in PostgreSQL's order: the parent, then the partition */
				LockRelationOid(relid_of(stmt->relation), ShareUpdateExclusiveLock);
				LockRelationOid(pd->part, ShareLock);
			}
			(void) wtcache_enqueue_partition_rows(pd->root, pd->part);
			hold_tree_until_commit(pd->root);
		}
		return pd->kind != PARTITION_DDL_NONE;
	}
	return false;
}

/* After the statement (for DETACH CONCURRENTLY, in its second transaction). */
void
wtcache_partition_ddl_after(Node *parsetree, PartitionDdl *pd)
{
	CommandCounterIncrement();
	switch (pd->kind)
	{
		case PARTITION_DDL_ATTACH:
			(void) wtcache_enqueue_partition_rows(pd->root, pd->part);
			if (!unwatch_if_unkeepable(pd->root, pd->part))
				wtcache_partition_truncate_triggers(pd->part, true);
			hold_tree_until_commit(pd->root);
			break;
		case PARTITION_DDL_DETACH:
			if (get_rel_name(pd->part) != NULL)
			{
				(void) wtcache_enqueue_partition_rows(pd->root, pd->part);
				if (!get_rel_relispartition(pd->part))
					wtcache_partition_truncate_triggers(pd->part, false);
			}
			hold_tree_until_commit(pd->root);
			break;
		case PARTITION_DDL_OWNER:
			(void) unwatch_if_unkeepable(pd->root, pd->root);
			break;
		case PARTITION_DDL_CREATE:
			{
				CreateStmt *stmt = (CreateStmt *) parsetree;
				Oid			part = relid_of(stmt->relation);

				if (OidIsValid(part) && !unwatch_if_unkeepable(pd->root, part))
					wtcache_partition_truncate_triggers(part, true);
			}
			break;
		default:
			break;
	}
}

/*
 * A statement that drops or empties tables starts with empty lists; others
 * leave them alone (a DDL run by an event trigger in the middle of a DROP
 * must not make its partitions be read for nothing).
 */
void
wtcache_partition_statement_start(Node *parsetree)
{
	ListCell   *lc;

	if (IsA(parsetree, TruncateStmt))
		ntruncating = 0;
	if (!IsA(parsetree, DropStmt) && !IsA(parsetree, DropOwnedStmt))
		return;
	ndropping_watched = ndropping_schemas = ndropping_owners = 0;
	if (IsA(parsetree, DropOwnedStmt))
	{
		foreach(lc, ((DropOwnedStmt *) parsetree)->roles)
		{
			Oid			role = get_rolespec_oid(lfirst(lc), true);

			if (OidIsValid(role) && ndropping_owners < MAX_STATEMENT_TABLES)
				dropping_owners[ndropping_owners++] = role;
		}
		return;
	}
	foreach(lc, ((DropStmt *) parsetree)->objects)
	{
		if (((DropStmt *) parsetree)->removeType == OBJECT_SCHEMA)
		{
			Oid			nsp = get_namespace_oid(strVal(lfirst(lc)), true);

			if (OidIsValid(nsp) && ndropping_schemas < MAX_STATEMENT_TABLES)
				dropping_schemas[ndropping_schemas++] = nsp;
		}
		else if (((DropStmt *) parsetree)->removeType == OBJECT_TABLE)
		{
			Oid			relid = relid_of(makeRangeVarFromNameList(lfirst(lc)));

			if (OidIsValid(relid) && get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE &&
				ndropping_watched < MAX_STATEMENT_TABLES &&
				wtcache_is_watched(relid))
				dropping_watched[ndropping_watched++] = relid;
		}
	}
}

/* Does the statement drop root itself?  Then its partitions need no scan. */
static bool
statement_drops(Oid root)
{
	HeapTuple	tup;
	bool		drops;

	if (oid_in(dropping_watched, ndropping_watched, root))
		return true;
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(root));
	if (!HeapTupleIsValid(tup))
		return false;
	drops = oid_in(dropping_schemas, ndropping_schemas, ((Form_pg_class) GETSTRUCT(tup))->relnamespace) ||
		oid_in(dropping_owners, ndropping_owners, ((Form_pg_class) GETSTRUCT(tup))->relowner);
	ReleaseSysCache(tup);
	return drops;
}

/*
 * A partition of a watched tree about to be dropped or emptied: queue its
 * keys while its rows are there.  Cheap for every other object: a syscache
 * lookup says it is no partition.
 */
static void
wtcache_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	Oid			root;

	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (classId != RelationRelationId || subId != 0 ||
		(access != OAT_DROP && access != OAT_TRUNCATE) || !IsTransactionState())
		return;
	if (access == OAT_TRUNCATE && ntruncating < MAX_STATEMENT_TABLES)
		truncating[ntruncating++] = objectId;
	if (!get_rel_relispartition(objectId) || get_rel_relkind(objectId) != RELKIND_RELATION)
		return;
	root = wtcache_watched_tree(objectId, false);
	if (!OidIsValid(root))
		return;
	if (access == OAT_DROP)
	{
		if (statement_drops(root))
			return;
	}
	else
	{
		Relation	rel;
		bool		locked;

		/* all of the tree goes, by its own TRUNCATE trigger */
		if (oid_in(truncating, ntruncating, root))
			return;

		/*
		 * PostgreSQL asks before it locks a table TRUNCATE names: take its
		 * lock first, so no writer commits a row between the scan and the
		 * truncation, but only for a caller PostgreSQL will let through.
		 * Partitions below a named table, and tables reached by CASCADE,
		 * come locked, and need no right of their own.
		 */
		rel = RelationIdGetRelation(objectId);
		locked = rel != NULL && CheckRelationLockedByMe(rel, AccessExclusiveLock, true);
		if (rel != NULL)
			RelationClose(rel);
		if (!locked)
		{
			if (pg_class_aclcheck(objectId, GetUserId(), ACL_TRUNCATE) != ACLCHECK_OK)
				return;
			LockRelationOid(objectId, AccessExclusiveLock);
		}
	}
	(void) wtcache_enqueue_partition_rows(root, objectId);
}

void
wtcache_install_object_access_hook(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = wtcache_object_access;
}
