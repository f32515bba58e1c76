/*-------------------------------------------------------------------------
 * keys.h
 *		What these offer the other modules:
 *		keys.c: key columns: rendering, reading rows by key, redis_key()
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_KEYS_H
#define WTCACHE_KEYS_H

#include "wtcache.h"

/* How a key column is written into the queue. */
typedef struct KeyColumn
{
	AttrNumber	attnum;
	Oid			typid;
	int16		typlen;
	bool		typbyval;
	bool		binary;			/* output depends on session settings, so
								 * the trigger records the send format as
								 * \x-hex and the worker renders it */
	FmgrInfo	out;			/* output, or send when binary */
} KeyColumn;

extern bool wtcache_key_type_is_stable(Oid typid);
extern void wtcache_init_key_type(KeyColumn *col, Oid typid, MemoryContext mcxt);
extern void wtcache_init_key_column(KeyColumn *col, Relation rel,
									AttrNumber attnum, MemoryContext mcxt);
extern char *wtcache_send_hex(FmgrInfo *send, Datum value, int *len);
extern char *wtcache_render_key_value(KeyColumn *col, Datum value);
extern void wtcache_check_key_count(Oid relid, int nkeys, int given);
/* What a read by key selects as a row's value (wtcache_key_lookup_init) */
typedef enum KeyLookupValue
{
	LOOKUP_JSON,				/* its JSON (column 2) */
	LOOKUP_FIELDS,				/* a hash's columns (after the others);
								 * column 2 is empty text */
	LOOKUP_JSON_AND_FIELDS		/* both: a read of a hash-format table that
								 * returns the row and fills Redis */
} KeyLookupValue;

struct HashValue;

/* Reading a watched table's rows by key (see keys.c) */
typedef struct KeyLookup
{
	int			nkeys;
	char	   *sql_many;		/* $1..$n: arrays of key values; returns
								 * (position, row JSON, key columns...,
								 * xmin) per row found */
	char	   *sql_one;		/* $1..$n: one key's values; (1, row JSON) */
	Oid			argtypes[INDEX_MAX_KEYS];	/* the type a key value is given as */
	Oid			arraytypes[INDEX_MAX_KEYS];	/* sql_many's parameter types */
	bool		bytext[INDEX_MAX_KEYS]; /* argtype has no array type: sql_many
										 * takes text[] and casts */
	int16		typlen[INDEX_MAX_KEYS];
	bool		typbyval[INDEX_MAX_KEYS];
	char		typalign[INDEX_MAX_KEYS];
	FmgrInfo	input[INDEX_MAX_KEYS];
	Oid			ioparams[INDEX_MAX_KEYS];
	FmgrInfo	output[INDEX_MAX_KEYS];	/* of the key columns' base types */
	/* a hash's columns: LOOKUP_FIELDS and LOOKUP_JSON_AND_FIELDS only */
	int			nfields;
	int			fields_many;	/* where the first is in sql_many's rows */
	int			fields_one;		/* and in sql_one's (1-based) */
	char	  **field_names;
	FmgrInfo   *field_out;		/* their base types' output functions */
} KeyLookup;

extern const char *wtcache_only(Oid relid);
extern Oid	wtcache_key_index(Relation rel, int nkeys, const AttrNumber *attnums);
extern void wtcache_key_lookup_init(KeyLookup *kl, Relation rel, int nkeys,
									const int16 *attnums, const int16 *valcols,
									int nvalcols, KeyLookupValue what,
									MemoryContext mcxt);
extern struct HashValue *wtcache_key_lookup_fields(KeyLookup *kl, HeapTuple tup,
												   TupleDesc desc, bool one);
extern void wtcache_row_json_sql(Relation rel, const int16 *valcols, int nvalcols,
								 char **expr, char **lateral);
extern Datum wtcache_key_lookup_value(KeyLookup *kl, int col, char *text);
extern Datum wtcache_key_lookup_array(KeyLookup *kl, int col, char **texts, int n);
extern bool wtcache_key_lookup_same_key(KeyLookup *kl, HeapTuple tup, TupleDesc desc,
										char **canon);
extern void wtcache_append_json_strings(StringInfo buf, char *const *items, int n);

#endif							/* WTCACHE_KEYS_H */
