/*-------------------------------------------------------------------------
 * verify.h
 *		What these offer the other modules:
 *		verify.c: does Redis hold what the table holds?  verify(), and the
 *		pieces the worker's live audit (audit.c) compares with, so that
 *		both read a row and judge a Redis value the same way
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_VERIFY_H
#define WTCACHE_VERIFY_H

#include "wtcache.h"
#include "keys.h"
#include "redis.h"
#include "watch.h"

#include "executor/spi.h"
#include "utils/rel.h"

/* A watched table as a comparison reads it (wtcache_verify_table_init) */
typedef struct VerifyTable
{
	Oid			relid;
	int			nkeys;
	char	  **colnames;
	FmgrInfo   *keyout;			/* key columns' output functions */
	KeyLookup	lookup;			/* reading rows by key (keys.c) */
	Relation	rel;			/* open, locked by the caller */
	int16	   *valcols;		/* the projection (wtcache_value_columns) */
	int			nvalcols;		/* -1: every column */
	char	   *projection;		/* its column names, NULL: every column */
	char	   *qname;
	char	   *table_key;
	struct KeyTemplate *tmpl;	/* its key template; NULL: the default layout */
	bool		keys_optional;	/* invalidate mode or TTL: keys may be absent */
	bool		hash;			/* format 'hash': fields compared (HGETALL) */
} VerifyTable;

extern void wtcache_verify_table_init(VerifyTable *vt, Relation rel,
									  const WatchConfig *config, MemoryContext cxt);
extern void wtcache_verify_scan_sql(VerifyTable *vt, StringInfo sql, bool with_ctid);
extern void wtcache_verify_scan_row(VerifyTable *vt, HeapTuple tup, TupleDesc desc,
									char **values, char **row,
									struct HashValue **fields);
extern char *wtcache_verify_row_key(VerifyTable *vt, char **values);
extern char **wtcache_verify_rows_of(VerifyTable *vt, char ***values, int n,
									 struct HashValue ***fields);
extern const char *wtcache_verify_classify(VerifyTable *vt, const char *row,
										   const struct HashValue *fields,
										   const WtcReply *value);

#endif							/* WTCACHE_VERIFY_H */
