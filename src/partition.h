/*-------------------------------------------------------------------------
 * partition.h
 *		What these offer the other modules:
 *		partition.c: a watch of a partitioned table covers its whole tree
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_PARTITION_H
#define WTCACHE_PARTITION_H

#include "wtcache.h"

#include "nodes/nodes.h"

extern Oid	wtcache_watched_tree(Oid relid, bool include_self);
extern uint64 wtcache_enqueue_partition_rows(Oid root, Oid part);
extern void wtcache_check_watchable_tree(Relation rel);
extern bool wtcache_writer_may_write_tree(Oid root);
extern void wtcache_unwatch_as_owner(Oid relid);
extern Oid	wtcache_tree_stranger(Oid root);
extern void wtcache_check_tree_owner(Oid root);
extern void wtcache_partition_read_barrier(Oid root);
extern void wtcache_partition_truncate_triggers(Oid part, bool create);
extern void wtcache_partition_truncating(Oid part);

/* A statement's effect on a watched partition tree (ddl.c's hook) */
typedef struct PartitionDdl
{
	int			kind;			/* PARTITION_DDL_* in partition.c; 0: none */
	Oid			root;			/* the watched relation of the tree */
	Oid			part;			/* the partition attached or detached */
	bool		concurrent;		/* DETACH ... CONCURRENTLY */
} PartitionDdl;

extern bool wtcache_partition_ddl_before(Node *parsetree, PartitionDdl *pd);
extern void wtcache_partition_ddl_after(Node *parsetree, PartitionDdl *pd);
extern void wtcache_partition_statement_start(Node *parsetree);
extern void wtcache_install_object_access_hook(void);

#endif							/* WTCACHE_PARTITION_H */
