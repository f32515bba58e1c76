/*-------------------------------------------------------------------------
 * keys.c
 *		Key columns: how their values are rendered, and reading a watched
 *		table's rows by key.
 *
 * Key values are the column's text output; the Redis key they make up,
 * and why it must not change, are keyspace.h's.  Outputs that depend on
 * session settings (timestamps, floats, intervals, bytea...) would give
 * one row two keys, so for those types the trigger records the binary send
 * format and the worker renders it under the canonical settings
 * (keyspace.c).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "keys.h"
#include "keyspace.h"

#include "access/htup_details.h"
#include "access/stratnum.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

/* Types whose text output is the same whatever the session's settings. */
bool
wtcache_key_type_is_stable(Oid typid)
{
	Oid			base = getBaseType(typid);

	switch (base)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case NAMEOID:
		case CHAROID:
		case UUIDOID:
		case BOOLOID:
		case NUMERICOID:
			return true;
		default:
			return type_is_enum(base);
	}
}

/* How the capture path renders a key value of this type. */
void
wtcache_init_key_type(KeyColumn *col, Oid typid, MemoryContext mcxt)
{
	Oid			funcid;
	bool		isvarlena;

	col->attnum = InvalidAttrNumber;
	col->typid = typid;
	get_typlenbyval(typid, &col->typlen, &col->typbyval);
	col->binary = !wtcache_key_type_is_stable(typid);
	if (col->binary)
		getTypeBinaryOutputInfo(typid, &funcid, &isvarlena);
	else
		getTypeOutputInfo(typid, &funcid, &isvarlena);
	fmgr_info_cxt(funcid, &col->out, mcxt);
}

void
wtcache_init_key_column(KeyColumn *col, Relation rel, AttrNumber attnum,
						MemoryContext mcxt)
{
	wtcache_init_key_type(col, TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid, mcxt);
	col->attnum = attnum;
}

/*
 * "\x" and the hex of a value's binary send format: how the capture
 * trigger records a key value of a type whose text output is not stable.
 */
char *
wtcache_send_hex(FmgrInfo *send, Datum value, int *len)
{
	bytea	   *b = SendFunctionCall(send, value);
	int			blen = VARSIZE_ANY_EXHDR(b);
	char	   *hex = palloc(blen * 2 + 3);

	hex[0] = '\\';
	hex[1] = 'x';
	*len = (int) hex_encode(VARDATA_ANY(b), blen, hex + 2) + 2;
	hex[*len] = '\0';
	return hex;
}

/* A key value's text as the capture trigger records it (palloc'd). */
char *
wtcache_render_key_value(KeyColumn *col, Datum value)
{
	int			len;

	if (col->binary)
		return wtcache_send_hex(&col->out, value, &len);
	return OutputFunctionCall(&col->out, value);
}

/*
 * The error for a key given with the wrong number of values.
 */
void
wtcache_check_key_count(Oid relid, int nkeys, int given)
{
	if (given != nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table \"%s\" has %d key column%s, but %d key value%s given",
						get_rel_name(relid), nkeys, nkeys == 1 ? "" : "s",
						given, given == 1 ? " was" : "s were"),
				 errhint("Give one text value per key column, in key order.")));
}

/*
 * A unique, immediate, valid, non-partial index on plain columns whose key
 * columns are exactly attnums (in any order); InvalidOid if none.
 */
Oid
wtcache_key_index(Relation rel, int nkeys, const AttrNumber *attnums)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index idx;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indisunique && idx->indimmediate && idx->indisvalid &&
			idx->indnkeyatts == nkeys &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL))
		{
			bool		all = true;

			for (int i = 0; i < nkeys && all; i++)
			{
				bool		in = false;

				for (int j = 0; j < nkeys; j++)
					if (idx->indkey.values[j] == attnums[i])
						in = true;
				all = in;
			}
			if (all)
				found = idx->indexrelid;
		}
		ReleaseSysCache(tup);
		if (OidIsValid(found))
			break;
	}
	list_free(indexes);
	return found;
}

/*
 * The equality operator the key index uses for column attnum, and the type
 * a value is compared as.  The statement casts both sides to that type, so
 * that the operator named with its schema is an exact match there: an
 * operator with other argument types that someone created in the same
 * schema (public, where citext's operators live) is never a better match.
 * Falls back to the column's base type and pg_catalog's "=" when no index
 * covers the key (it was dropped), or when the opclass takes a pseudo-type
 * (anyenum, anyarray, record) and its operator lives outside pg_catalog,
 * where an exact match for the concrete type could be planted.
 */
static void
key_column_equality(Relation rel, Oid indexoid, AttrNumber attnum,
					Oid *argtype, char **opsql)
{
	Oid			base = getBaseType(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid);
	Oid			opno = InvalidOid;
	bool		pseudo = false;
	HeapTuple	tup;

	*argtype = base;
	tup = OidIsValid(indexoid) ? SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid)) : NULL;
	if (tup != NULL && HeapTupleIsValid(tup))
	{
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);
		bool		isnull;
		oidvector  *indclass = (oidvector *) DatumGetPointer(SysCacheGetAttr(INDEXRELID, tup,
																		   Anum_pg_index_indclass,
																		   &isnull));

		for (int j = 0; !isnull && j < idx->indnkeyatts; j++)
		{
			Oid			opfamily;
			Oid			opcintype;

			if (idx->indkey.values[j] != attnum)
				continue;
			opfamily = get_opclass_family(indclass->values[j]);
			opcintype = get_opclass_input_type(indclass->values[j]);
			opno = get_opfamily_member(opfamily, opcintype, opcintype, BTEqualStrategyNumber);
			pseudo = get_typtype(opcintype) == TYPTYPE_PSEUDO;
			/* anyenum, anyarray, record...: the column's own type */
			if (OidIsValid(opno) && !pseudo)
				*argtype = opcintype;
			break;
		}
		ReleaseSysCache(tup);
	}
	if (OidIsValid(opno))
	{
		HeapTuple	optup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));

		if (HeapTupleIsValid(optup))
		{
			Form_pg_operator op = (Form_pg_operator) GETSTRUCT(optup);

			if (!pseudo || op->oprnamespace == PG_CATALOG_NAMESPACE)
			{
				*opsql = psprintf("OPERATOR(%s.%s)",
								  quote_identifier(get_namespace_name(op->oprnamespace)),
								  NameStr(op->oprname));
				ReleaseSysCache(optup);
				return;
			}
			ReleaseSysCache(optup);
		}
	}
	*opsql = pstrdup("OPERATOR(pg_catalog.=)");
}

/* ", t.<key1>, t.<key2>...": each row's own key values, after its JSON */
static void
append_key_columns(StringInfo sql, Relation rel, int nkeys, const int16 *attnums)
{
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(sql, ", t.%s",
						 quote_identifier(get_attname(RelationGetRelid(rel), attnums[c], false)));
}

/*
 * Is this row's key, as sql_many or sql_one returned it (columns 3 on),
 * spelled as canon?  A key type whose equality is looser than its text
 * (numeric '1.00' = 1.0, float -0 = 0, a nondeterministic collation, citext)
 * finds the row under another spelling; a value stored under that spelling
 * would never be updated, since changes are pushed under the row's own.
 * Call under the settings canon was rendered with.
 */
bool
wtcache_key_lookup_same_key(KeyLookup *kl, HeapTuple tup, TupleDesc desc, char **canon)
{
	for (int c = 0; c < kl->nkeys; c++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, c + 3, &isnull);

		if (isnull || strcmp(OutputFunctionCall(&kl->output[c], d), canon[c]) != 0)
			return false;
	}
	return true;
}

/*
 * Prepare reading the rows of a watched table by key.  Key values are
 * given as typed parameters, made from their canonical text by the input
 * function of the type the key index compares (never a cast: pg_cast is
 * not schema-bound, and a cast the type's owner created would run as
 * whoever reads), and compared with that index's own equality operator,
 * named with its schema.  The statements name every function with its
 * schema too, so they mean the same whatever the search_path; still, run
 * them with it pinned (rights.c).  "t.*": a column named t must not be
 * taken for the row.  Everything is allocated in mcxt.
 */
/*
 * What a watched table's rows are read FROM: a plain table ONLY (its
 * legacy inheritance children are not its rows), a partitioned table with
 * its partitions (all of them are).
 */
const char *
wtcache_only(Oid relid)
{
	return get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ";
}

/* Do the table's rows carry xmin?  Heap does; so do partitions of heap. */
static bool
rows_have_xmin(Relation rel)
{
	ListCell   *lc;

	if (rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		return rel->rd_rel->relam == HEAP_TABLE_AM_OID;
	foreach(lc, find_all_inheritors(RelationGetRelid(rel), NoLock, NULL))
	{
		Oid			part = lfirst_oid(lc);
		HeapTuple	tup;
		bool		heap;

		if (get_rel_relkind(part) == RELKIND_PARTITIONED_TABLE)
			continue;
		tup = SearchSysCache1(RELOID, ObjectIdGetDatum(part));
		if (!HeapTupleIsValid(tup))
			return false;
		heap = ((Form_pg_class) GETSTRUCT(tup))->relam == HEAP_TABLE_AM_OID;
		ReleaseSysCache(tup);
		if (!heap)
			return false;
	}
	return true;
}

/*
 * What a read of a watched table selects as the row's value: *expr, the
 * row JSON as text, over the row "t" and, for a projection, the FROM item
 * *lateral to append after t's (or "").  nvalcols < 0: every column, as
 * row_to_json(t.*) renders it, byte for byte what wtcache always wrote.
 * Otherwise the value is the row_to_json of a LATERAL sub-select of just
 * those columns (valcols, live attnums in table order): the same JSON
 * form, with only their members, and the columns outside the projection
 * are never read at all, so no value of theirs can reach a payload, an
 * error message or a log line.  A simple sub-select: the planner pulls it
 * up into the scan, so it costs nothing per row.
 */
void
wtcache_row_json_sql(Relation rel, const int16 *valcols, int nvalcols,
					 char **expr, char **lateral)
{
	StringInfoData sub;

	if (nvalcols < 0)
	{
		*expr = "pg_catalog.row_to_json(t.*)::pg_catalog.text";
		*lateral = "";
		return;
	}
	initStringInfo(&sub);
	appendStringInfoString(&sub, " CROSS JOIN LATERAL (SELECT ");
	for (int c = 0; c < nvalcols; c++)
		appendStringInfo(&sub, "%st.%s", c ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																valcols[c] - 1)->attname)));
	/* a projection keeps the key columns, so it is never empty */
	Assert(nvalcols > 0);
	appendStringInfoString(&sub, ") v");
	*expr = "pg_catalog.row_to_json(v.*)::pg_catalog.text";
	*lateral = sub.data;
}

void
wtcache_key_lookup_init(KeyLookup *kl, Relation rel, int nkeys, const int16 *attnums,
						const int16 *valcols, int nvalcols, KeyLookupValue what,
						MemoryContext mcxt)
{
	char	   *rowexpr;
	char	   *lateral;
	StringInfoData fields;

	MemoryContext old = MemoryContextSwitchTo(mcxt);
	AttrNumber	cols[INDEX_MAX_KEYS];
	Oid			indexoid;
	char	   *qname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												   RelationGetRelationName(rel));
	char	   *ops[INDEX_MAX_KEYS];
	char	   *typnames[INDEX_MAX_KEYS];
	const char *colnames[INDEX_MAX_KEYS];
	StringInfoData many;
	StringInfoData one;

	Assert(nkeys >= 1 && nkeys <= INDEX_MAX_KEYS);
	kl->nkeys = nkeys;
	for (int c = 0; c < nkeys; c++)
		cols[c] = attnums[c];
	indexoid = wtcache_key_index(rel, nkeys, cols);
	for (int c = 0; c < nkeys; c++)
	{
		Oid			infunc;

		key_column_equality(rel, indexoid, attnums[c], &kl->argtypes[c], &ops[c]);
		typnames[c] = format_type_be_qualified(kl->argtypes[c]);
		colnames[c] = quote_identifier(get_attname(RelationGetRelid(rel), attnums[c], false));
		/*
		 * Arrays have no array type of their own, and unnest() in FROM
		 * spreads a composite over columns: such keys travel as text, cast
		 * in the statement (an I/O conversion, through the type's input
		 * function, not pg_cast).
		 */
		kl->arraytypes[c] = get_array_type(kl->argtypes[c]);
		kl->bytext[c] = !OidIsValid(kl->arraytypes[c]) ||
			get_typtype(kl->argtypes[c]) == TYPTYPE_COMPOSITE;
		if (kl->bytext[c])
			kl->arraytypes[c] = TEXTARRAYOID;
		get_typlenbyvalalign(kl->argtypes[c], &kl->typlen[c], &kl->typbyval[c], &kl->typalign[c]);
		getTypeInputInfo(kl->argtypes[c], &infunc, &kl->ioparams[c]);
		fmgr_info_cxt(infunc, &kl->input[c], mcxt);
		{
			Oid			outfunc;
			bool		isvarlena;

			getTypeOutputInfo(getBaseType(TupleDescAttr(RelationGetDescr(rel), attnums[c] - 1)->atttypid),
							  &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &kl->output[c], mcxt);
		}
	}

	wtcache_row_json_sql(rel, valcols, nvalcols, &rowexpr, &lateral);
	/*
	 * A hash's columns (keyspace.h), as they are: keys.c renders each with
	 * its output function (wtcache_key_lookup_fields), never a cast to
	 * text, which pg_cast may define otherwise (inet's drops nothing its
	 * output drops).  A hash always lists its columns.
	 */
	initStringInfo(&fields);
	kl->nfields = 0;
	if (what != LOOKUP_JSON)
	{
		Assert(nvalcols >= 0);
		kl->field_names = palloc(sizeof(char *) * Max(nvalcols, 1));
		kl->field_out = palloc(sizeof(FmgrInfo) * Max(nvalcols, 1));
		for (int c = 0; c < nvalcols; c++)
		{
			Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), valcols[c] - 1);
			Oid			outfunc;
			bool		isvarlena;

			kl->field_names[c] = pstrdup(NameStr(att->attname));
			getTypeOutputInfo(getBaseType(att->atttypid), &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &kl->field_out[c], mcxt);
			appendStringInfo(&fields, ", t.%s", quote_identifier(kl->field_names[c]));
		}
		kl->nfields = nvalcols;
		if (what == LOOKUP_FIELDS)
			rowexpr = "''::pg_catalog.text";
	}
	kl->fields_many = nkeys + 4;	/* after ord, the value, the keys, xmin */
	kl->fields_one = nkeys + 3;		/* after 1, the value, the keys */

	initStringInfo(&many);
	appendStringInfo(&many, "SELECT k.ord, %s", rowexpr);
	append_key_columns(&many, rel, nkeys, attnums);
	/*
	 * Who wrote it: the worker sends only durable commits.  A table access
	 * method other than heap may have no xmin: NULL, and the worker
	 * assumes the latest commit.
	 */
	appendStringInfo(&many, ", %s%s FROM ROWS FROM (",
					 rows_have_xmin(rel) ? "t.xmin" : "NULL::pg_catalog.xid", fields.data);
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(&many, "%spg_catalog.unnest($%d)", c ? ", " : "", c + 1);
	appendStringInfoString(&many, ") WITH ORDINALITY AS k(");
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(&many, "c%d, ", c);
	appendStringInfo(&many, "ord) JOIN %s%s t ON ", wtcache_only(RelationGetRelid(rel)), qname);
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(&many, "%st.%s::%s %s k.c%d::%s", c ? " AND " : "",
						 colnames[c], typnames[c], ops[c], c, typnames[c]);
	appendStringInfoString(&many, lateral);
	kl->sql_many = many.data;

	initStringInfo(&one);
	appendStringInfo(&one, "SELECT 1::pg_catalog.int8, %s", rowexpr);
	append_key_columns(&one, rel, nkeys, attnums);
	appendStringInfo(&one, "%s FROM %s%s t%s WHERE ", fields.data,
					 wtcache_only(RelationGetRelid(rel)), qname, lateral);
	for (int c = 0; c < nkeys; c++)
		appendStringInfo(&one, "%st.%s::%s %s $%d::%s", c ? " AND " : "",
						 colnames[c], typnames[c], ops[c], c + 1, typnames[c]);
	kl->sql_one = one.data;
	MemoryContextSwitchTo(old);
}

/*
 * The hash of a row that sql_many (one: sql_one) returned: each column's
 * text output, NULL for a NULL column (keyspace.h).  Call under the
 * canonical settings: a timestamp's or a float's output depends on them.
 */
HashValue *
wtcache_key_lookup_fields(KeyLookup *kl, HeapTuple tup, TupleDesc desc, bool one)
{
	char	  **values = palloc(sizeof(char *) * Max(kl->nfields, 1));
	int			first = one ? kl->fields_one : kl->fields_many;

	for (int c = 0; c < kl->nfields; c++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, first + c, &isnull);

		values[c] = isnull ? NULL : OutputFunctionCall(&kl->field_out[c], d);
	}
	return wtcache_encode_hash(kl->nfields, kl->field_names, values);
}

/* A key value, from its canonical text, as the parameter of column col. */
Datum
wtcache_key_lookup_value(KeyLookup *kl, int col, char *text)
{
	return InputFunctionCall(&kl->input[col], text, kl->ioparams[col], -1);
}

/* The values of column col of n keys, as sql_many's array parameter. */
Datum
wtcache_key_lookup_array(KeyLookup *kl, int col, char **texts, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	if (kl->bytext[col])
	{
		for (int i = 0; i < n; i++)
			elems[i] = CStringGetTextDatum(texts[i]);
		return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
	}
	for (int i = 0; i < n; i++)
		elems[i] = wtcache_key_lookup_value(kl, col, texts[i]);
	return PointerGetDatum(construct_array(elems, n, kl->argtypes[col], kl->typlen[col],
										   kl->typbyval[col], kl->typalign[col]));
}

/* ["a","b",...]: strings as a JSON array (tag lists of events and entries). */
void
wtcache_append_json_strings(StringInfo buf, char *const *items, int n)
{
	appendStringInfoChar(buf, '[');
	for (int i = 0; i < n; i++)
	{
		if (i)
			appendStringInfoChar(buf, ',');
		escape_json(buf, items[i]);
	}
	appendStringInfoChar(buf, ']');
}
