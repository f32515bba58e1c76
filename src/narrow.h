/*-------------------------------------------------------------------------
 * narrow.h
 *		What these offer the other modules:
 *		narrow.c: the template tags a cached query depends on instead of
 *		a table tag
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_NARROW_H
#define WTCACHE_NARROW_H

#include "wtcache.h"

#include "nodes/parsenodes.h"

/* The parameters of the query, as query.c bound them. */
typedef struct NarrowParams
{
	int			nparams;
	const Oid  *types;
	const Datum *values;
	const char *nulls;			/* SPI style: 'n' or ' ' */
} NarrowParams;

/* A watched table the query depends on through template tags only. */
typedef struct NarrowedTable
{
	Oid			watched;
	List	   *tags;			/* rendered template tags (char *), each once */
} NarrowedTable;

/*
 * rtes: every relation entry of the query at any depth (views, sublinks,
 * CTEs included); rte_watched: for each, the watched table it belongs to
 * (itself, or the watched ancestor of a partition), or InvalidOid.
 * Returns a List of NarrowedTable for the watched tables that narrow.
 */
extern List *wtcache_narrow_query(Query *query, const NarrowParams *params,
								  List *rtes, List *rte_watched);

#endif							/* WTCACHE_NARROW_H */
