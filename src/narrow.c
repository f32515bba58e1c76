/*-------------------------------------------------------------------------
 * narrow.c
 *		Which template tags a cached query depends on instead of a table tag.
 *
 * A cached query result (query.c) depends on the table tag of every
 * watched table it reads, which every change of the table invalidates.
 * When the query restricts a table by equality on the columns of one of
 * its tag templates, the result can only change when a row whose template
 * tags are among the restricted values changes:
 *		watch('members', tags => ARRAY['org:{org_id}'])
 *		SELECT ... FROM members m WHERE m.org_id = $1		-- $1 = 7
 * depends on the rows of org 7 alone, and every change of such a row,
 * before or after it, renders the tag "org:7" (capture.c renders the old
 * and the new row).  Such an entry depends on those rendered tags, plus
 * the table's table-wide tag (tags.c), which the worker bumps for
 * everything that changes rows without rendering templates: TRUNCATE, a
 * resync, a requeue after DDL, a partition's DDL, a watch() that changes
 * the templates, an invalidate() of the table tag.  Row changes keep
 * bumping the table tag as before.
 *
 * The analysis narrows only what it can prove; anything else keeps the
 * table tag.  A watched table narrows when:
 *	- every range-table entry of it, at any depth, is an entry of the top
 *	  query reached from its FROM list through inner joins and the
 *	  preserved side of outer joins: not in a sub-select, CTE, view,
 *	  set operation or the nullable side of an outer join;
 *	- for each such entry, every column of one template is bound by the
 *	  top-level AND-ed conjuncts of WHERE and of the inner joins' ON
 *	  clauses: col = constant or $n, col IN (...) / col = ANY (array), or
 *	  col = other_col with the other bound (equivalence classes, a
 *	  union-find over those conjuncts).  Every output row satisfies each
 *	  such conjunct, so a row of the table that contributes to the result
 *	  has the bound value in that column.
 * Equality must mean equal text: the tag is the value's text.  Only the
 * built-in equality functions of types whose equal values have one text
 * (integers across widths, text and varchar under a deterministic
 * collation, name, "char", uuid, boolean, oid, enums) bind; numeric (1.0 =
 * 1.00), bpchar (padding), user-defined operators, nondeterministic
 * collations do not.  A constant or parameter is rendered by its type's
 * output function (these types' output depends on no setting) through the
 * templates' own renderer (tags.c), as the capture trigger renders the
 * column.  A NULL binds nothing.
 *
 * What capture renders is read from the capture triggers themselves (their
 * WHEN clause names the compiled templates and the tag columns; watch.c
 * writes them), not from wtcache.watched, whose template text names
 * columns as they were called at watch() time: a renamed column keeps its
 * place in the trigger.  A partition read directly is read through its
 * own cloned trigger, whose columns are the partition's.  What was read is
 * kept per relation until a relcache invalidation of it (a trigger's
 * change sends one).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "narrow.h"
#include "settings.h"
#include "tags.h"

#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/reltrigger.h"

/* ---------------------------------------------------------------------
 * What the capture triggers of a relation render
 * ---------------------------------------------------------------------
 */

/* The row capture triggers, as watch.c names them, and their operation. */
static const struct
{
	const char *name;
	char		op;
}			capture_triggers[] = {
	{"wtcache_capture_ins", 'i'},
	{"wtcache_capture_upd", 'u'},
	{"wtcache_capture_del", 'd'},
};

typedef struct CaptureShape
{
	Oid			relid;			/* hash key: a watched table or a partition */
	Oid			watched;		/* what its triggers capture for; invalid:
								 * nothing to narrow with */
	int			ntemplates;
	TagTemplate *templates;
	int			ncols;
	AttrNumber	cols[WTCACHE_MAX_TAG_COLUMNS];	/* relid's attnums */
} CaptureShape;

static HTAB *shape_cache = NULL;
static MemoryContext shape_cxt = NULL;
static bool shape_cache_stale = false;

/* A relcache callback only notes that the cache must be emptied. */
static void
shape_cache_callback(Datum arg, Oid relid)
{
	if (shape_cache == NULL)
		return;
	if (!OidIsValid(relid) || hash_search(shape_cache, &relid, HASH_FIND, NULL) != NULL)
		shape_cache_stale = true;
}

static void
shape_cache_reset(void)
{
	static bool registered = false;
	HASHCTL		ctl;

	if (!registered)
	{
		CacheRegisterRelcacheCallback(shape_cache_callback, (Datum) 0);
		registered = true;
	}
	if (shape_cxt == NULL)
		shape_cxt = AllocSetContextCreate(CacheMemoryContext, "wtcache capture shapes",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(shape_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(CaptureShape);
	ctl.hcxt = shape_cxt;
	shape_cache = hash_create("wtcache capture shapes", 16, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	shape_cache_stale = false;
}

/*
 * The compiled templates ("org:{1}") of a WHEN clause's argument: an
 * ARRAY[...] of text constants, or a text[] constant.  NIL if it is
 * neither.
 */
static List *
template_texts(Node *arg)
{
	List	   *texts = NIL;
	ListCell   *lc;

	while (arg && IsA(arg, RelabelType))
		arg = (Node *) ((RelabelType *) arg)->arg;
	if (arg && IsA(arg, ArrayExpr))
	{
		foreach(lc, ((ArrayExpr *) arg)->elements)
		{
			Const	   *c = (Const *) lfirst(lc);

			if (!IsA(c, Const) || c->consttype != TEXTOID || c->constisnull)
				return NIL;
			texts = lappend(texts, TextDatumGetCString(c->constvalue));
		}
	}
	else if (arg && IsA(arg, Const) && ((Const *) arg)->consttype == TEXTARRAYOID &&
			 !((Const *) arg)->constisnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(((Const *) arg)->constvalue), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
		{
			if (nulls[i])
				return NIL;
			texts = lappend(texts, TextDatumGetCString(elems[i]));
		}
	}
	return texts;
}

/*
 * The number of tag columns the compiled templates use ({1} .. {n}, each
 * once at least, as tags.c numbers them), or -1 if one is malformed.
 */
static int
template_columns(List *texts)
{
	int			ncols = 0;
	ListCell   *lc;

	foreach(lc, texts)
	{
		for (const char *p = lfirst(lc); *p; p++)
		{
			int			pos = 0;

			if (*p == '}')
				return -1;
			if (*p != '{')
				continue;
			for (p++; *p >= '0' && *p <= '9'; p++)
				pos = pos * 10 + (*p - '0');
			if (*p != '}' || pos < 1 || pos > WTCACHE_MAX_TAG_COLUMNS)
				return -1;
			ncols = Max(ncols, pos);
		}
	}
	return ncols;
}

/*
 * One capture trigger's WHEN clause, as watch.c's create_row_triggers()
 * writes it:
 *		wtcache._capture_when_tagged(<watched>::regclass, '<op>', <nkeys>,
 *			ARRAY[<compiled templates>]::text[], <keys of each row>,
 *			<tag columns of each row>)
 * (OLD for a delete, NEW for an insert, OLD then NEW for an update).
 * False if it is anything else.
 */
static bool
read_capture_qual(const char *qual, char op, Oid *watched, List **texts,
				  AttrNumber *cols, int *ncols)
{
	Node	   *node = stringToNode(qual);
	FuncExpr   *f;
	Const	   *c;
	int			rows = (op == 'u') ? 2 : 1;
	int			nargs;
	int			nkeys;
	Oid			nsp = get_namespace_oid(WTCACHE_SCHEMA, true);
	char	   *fname;

	if (node == NULL || !IsA(node, FuncExpr))
		return false;
	f = (FuncExpr *) node;
	fname = get_func_name(f->funcid);
	if (fname == NULL || strcmp(fname, "_capture_when_tagged") != 0 ||
		!OidIsValid(nsp) || get_func_namespace(f->funcid) != nsp || list_length(f->args) < 4)
		return false;
	c = (Const *) linitial(f->args);
	if (!IsA(c, Const) || c->consttype != REGCLASSOID || c->constisnull)
		return false;
	*watched = DatumGetObjectId(c->constvalue);
	c = (Const *) lsecond(f->args);
	if (!IsA(c, Const) || c->consttype != CHAROID || c->constisnull || DatumGetChar(c->constvalue) != op)
		return false;
	*texts = template_texts(lfourth(f->args));
	*ncols = template_columns(*texts);
	if (*texts == NIL || *ncols < 0)
		return false;
	nargs = list_length(f->args) - 4;
	if ((nargs - rows * *ncols) % rows != 0)
		return false;
	nkeys = (nargs - rows * *ncols) / rows;
	if (nkeys < 1)
		return false;
	for (int r = 0; r < rows; r++)
		for (int i = 0; i < *ncols; i++)
		{
			Var		   *v = (Var *) list_nth(f->args, 4 + rows * nkeys + r * *ncols + i);
			int			varno = (op == 'd' || (op == 'u' && r == 0)) ? PRS2_OLD_VARNO : PRS2_NEW_VARNO;

			if (!IsA(v, Var) || v->varno != varno || v->varlevelsup != 0 || v->varattno <= 0)
				return false;
			if (r == 0)
				cols[i] = v->varattno;
			else if (cols[i] != v->varattno)
				return false;
		}
	return true;
}

/*
 * Fill shape from the relation's three row capture triggers, which must
 * agree.  Leaves shape->watched invalid when they do not, or render no
 * template tags.
 */
static void
read_capture_shape(CaptureShape *shape)
{
	Relation	rel = try_relation_open(shape->relid, NoLock);
	List	   *texts = NIL;
	Oid			watched = InvalidOid;
	AttrNumber	cols[WTCACHE_MAX_TAG_COLUMNS];
	int			ncols = 0;

	if (rel == NULL)
		return;
	for (int t = 0; t < lengthof(capture_triggers) && rel->trigdesc != NULL; t++)
	{
		const Trigger *found = NULL;
		List	   *t_texts;
		Oid			t_watched;
		AttrNumber	t_cols[WTCACHE_MAX_TAG_COLUMNS];
		int			t_ncols;
		bool		same;
		ListCell   *a,
				   *b;

		for (int i = 0; i < rel->trigdesc->numtriggers; i++)
			if (strcmp(rel->trigdesc->triggers[i].tgname, capture_triggers[t].name) == 0)
				found = &rel->trigdesc->triggers[i];
		if (found == NULL || found->tgqual == NULL ||
			!read_capture_qual(found->tgqual, capture_triggers[t].op, &t_watched, &t_texts,
							   t_cols, &t_ncols))
		{
			relation_close(rel, NoLock);
			return;
		}
		if (t == 0)
		{
			texts = t_texts;
			watched = t_watched;
			ncols = t_ncols;
			memcpy(cols, t_cols, sizeof(AttrNumber) * t_ncols);
			continue;
		}
		same = t_watched == watched && t_ncols == ncols &&
			memcmp(cols, t_cols, sizeof(AttrNumber) * ncols) == 0 &&
			list_length(t_texts) == list_length(texts);
		forboth(a, texts, b, t_texts)
			same = same && strcmp(lfirst(a), lfirst(b)) == 0;
		if (!same)
		{
			relation_close(rel, NoLock);
			return;
		}
	}
	relation_close(rel, NoLock);
	if (texts == NIL)
		return;
	{
		Datum	   *elems = palloc(sizeof(Datum) * list_length(texts));
		int			n = 0;
		ListCell   *lc;

		foreach(lc, texts)
			elems[n++] = CStringGetTextDatum(lfirst(lc));
		shape->templates = wtcache_parse_tag_templates(construct_array(elems, n, TEXTOID, -1, false,
																	   TYPALIGN_INT),
													   &shape->ntemplates, shape_cxt);
	}
	shape->ncols = ncols;
	memcpy(shape->cols, cols, sizeof(AttrNumber) * ncols);
	shape->watched = watched;	/* last: an error above leaves it unusable */
}

static CaptureShape *
capture_shape(Oid relid)
{
	CaptureShape *shape;
	bool		found;

	if (shape_cache == NULL || shape_cache_stale)
		shape_cache_reset();
	shape = hash_search(shape_cache, &relid, HASH_ENTER, &found);
	if (!found)
	{
		shape->watched = InvalidOid;
		shape->ntemplates = 0;
		shape->templates = NULL;
		shape->ncols = 0;
		read_capture_shape(shape);
	}
	return shape;
}

/* ---------------------------------------------------------------------
 * Equalities of the top query
 * ---------------------------------------------------------------------
 */

/* Kinds of equality whose equal values have one text. */
typedef enum EqKind
{
	EQ_NONE,
	EQ_INT,						/* int2, int4, int8, across widths */
	EQ_TEXT,					/* text, varchar: bytes, under a
								 * deterministic collation */
	EQ_NAME,
	EQ_CHAR,
	EQ_UUID,
	EQ_BOOL,
	EQ_OID,
	EQ_ENUM
} EqKind;

static EqKind
eq_kind(Oid funcid)
{
	switch (funcid)
	{
		case F_INT2EQ:
		case F_INT4EQ:
		case F_INT8EQ:
		case F_INT24EQ:
		case F_INT42EQ:
		case F_INT28EQ:
		case F_INT82EQ:
		case F_INT48EQ:
		case F_INT84EQ:
			return EQ_INT;
		case F_TEXTEQ:
			return EQ_TEXT;
		case F_NAMEEQ:
			return EQ_NAME;
		case F_CHAREQ:
			return EQ_CHAR;
		case F_UUID_EQ:
			return EQ_UUID;
		case F_BOOLEQ:
			return EQ_BOOL;
		case F_OIDEQ:
			return EQ_OID;
		case F_ENUM_EQ:
			return EQ_ENUM;
		default:
			return EQ_NONE;
	}
}

/* Is a value of this (base) type compared as the kind says? */
static bool
type_fits(EqKind kind, Oid typid)
{
	switch (kind)
	{
		case EQ_INT:
			return typid == INT2OID || typid == INT4OID || typid == INT8OID;
		case EQ_TEXT:
			return typid == TEXTOID || typid == VARCHAROID;
		case EQ_NAME:
			return typid == NAMEOID;
		case EQ_CHAR:
			return typid == CHAROID;
		case EQ_UUID:
			return typid == UUIDOID;
		case EQ_BOOL:
			return typid == BOOLOID;
		case EQ_OID:
			return typid == OIDOID;
		case EQ_ENUM:
			return type_is_enum(typid);
		default:
			return false;
	}
}

static bool
collation_ok(Oid collid)
{
	return !OidIsValid(collid) || get_collation_isdeterministic(collid);
}

/* A column of the top query's range table, a member of an equivalence class. */
typedef struct EqVar
{
	Index		varno;
	AttrNumber	attno;
	int			parent;			/* union-find */
	List	   *values;			/* smallest binding of this column, or NIL */
} EqVar;

typedef struct NarrowState
{
	Query	   *query;
	const NarrowParams *params;
	Bitmapset  *covered;		/* top range table entries whose every
								 * contributing row satisfies the conjuncts */
	List	   *conjuncts;
	EqVar	   *vars;
	int			nvars;
	int			maxvars;
} NarrowState;

/*
 * One side of an equality: a column, or a value with its type (the
 * innermost type under binary relabelings, whose output renders it).
 */
typedef struct Operand
{
	int			var;			/* index in vars, or -1 for a value */
	Oid			type;			/* base type */
	Datum		value;
	bool		isnull;
} Operand;

/*
 * What leaves a value's text as it is: a binary relabeling (varchar as
 * text, a domain as its base type), a COLLATE (the comparison's collation
 * is checked on its own), a widening integer cast, and an array coercion
 * made of these.
 */
static Node *
strip_relabel(Node *node)
{
	for (;;)
	{
		if (node == NULL)
			return NULL;
		if (IsA(node, RelabelType))
			node = (Node *) ((RelabelType *) node)->arg;
		else if (IsA(node, CollateExpr))
			node = (Node *) ((CollateExpr *) node)->arg;
		else if (IsA(node, FuncExpr) && list_length(((FuncExpr *) node)->args) == 1 &&
				 (((FuncExpr *) node)->funcid == F_INT4_INT2 ||
				  ((FuncExpr *) node)->funcid == F_INT8_INT2 ||
				  ((FuncExpr *) node)->funcid == F_INT8_INT4))
			node = linitial(((FuncExpr *) node)->args);
		else if (IsA(node, ArrayCoerceExpr) &&
				 IsA(strip_relabel((Node *) ((ArrayCoerceExpr *) node)->elemexpr), CaseTestExpr))
			node = (Node *) ((ArrayCoerceExpr *) node)->arg;
		else
			return node;
	}
}

/* The base column a Var of the top query stands for, through joins' aliases. */
static Var *
base_var(NarrowState *st, Node *node, int depth)
{
	Var		   *v;
	RangeTblEntry *rte;

	node = strip_relabel(node);
	if (node == NULL || !IsA(node, Var) || depth > 64)
		return NULL;
	v = (Var *) node;
	if (v->varlevelsup != 0 || v->varattno <= 0 || v->varno < 1 ||
		v->varno > list_length(st->query->rtable))
		return NULL;
	rte = rt_fetch(v->varno, st->query->rtable);
	if (rte->rtekind == RTE_JOIN)
	{
		if (v->varattno > list_length(rte->joinaliasvars))
			return NULL;
		return base_var(st, list_nth(rte->joinaliasvars, v->varattno - 1), depth + 1);
	}
	return v;
}

static int
eq_var(NarrowState *st, Index varno, AttrNumber attno, bool add)
{
	for (int i = 0; i < st->nvars; i++)
		if (st->vars[i].varno == varno && st->vars[i].attno == attno)
			return i;
	if (!add)
		return -1;
	if (st->nvars == st->maxvars)
	{
		st->maxvars = st->maxvars ? st->maxvars * 2 : 16;
		st->vars = st->vars ? repalloc(st->vars, sizeof(EqVar) * st->maxvars)
			: palloc(sizeof(EqVar) * st->maxvars);
	}
	st->vars[st->nvars].varno = varno;
	st->vars[st->nvars].attno = attno;
	st->vars[st->nvars].parent = st->nvars;
	st->vars[st->nvars].values = NIL;
	return st->nvars++;
}

static int
eq_root(NarrowState *st, int i)
{
	while (st->vars[i].parent != i)
		i = st->vars[i].parent = st->vars[st->vars[i].parent].parent;
	return i;
}

static bool
operand(NarrowState *st, Node *node, Operand *op)
{
	Var		   *v = base_var(st, node, 0);

	op->var = -1;
	op->isnull = true;
	op->value = (Datum) 0;
	if (v != NULL)
	{
		op->var = eq_var(st, v->varno, v->varattno, true);
		op->type = getBaseType(v->vartype);
		return true;
	}
	node = strip_relabel(node);
	if (node != NULL && IsA(node, Const))
	{
		op->type = getBaseType(((Const *) node)->consttype);
		op->isnull = ((Const *) node)->constisnull;
		op->value = ((Const *) node)->constvalue;
		return true;
	}
	if (node != NULL && IsA(node, Param) && ((Param *) node)->paramkind == PARAM_EXTERN)
	{
		Param	   *p = (Param *) node;
		int			i = p->paramid - 1;

		if (i < 0 || i >= st->params->nparams || st->params->types[i] != p->paramtype)
			return false;
		op->type = getBaseType(p->paramtype);
		op->isnull = st->params->nulls[i] == 'n';
		op->value = st->params->values[i];
		return true;
	}
	return false;
}

/* A value's text, as the capture trigger renders the column (capture.c). */
static char *
render_value(Oid typid, Datum value)
{
	Oid			out;
	bool		isvarlena;

	getTypeOutputInfo(typid, &out, &isvarlena);
	return OidOutputFunctionCall(out, value);
}

/* This column's values are among these: keep the smallest such set. */
static void
bind(NarrowState *st, int var, List *values)
{
	if (values == NIL)
		return;					/* = NULL matches nothing: binds nothing */
	if (st->vars[var].values == NIL || list_length(values) < list_length(st->vars[var].values))
		st->vars[var].values = values;
}

static List *
add_value(List *values, char *text)
{
	ListCell   *lc;

	foreach(lc, values)
		if (strcmp(lfirst(lc), text) == 0)
			return values;
	return lappend(values, text);
}

/* col IN (...), col = ANY (array): the array's non-null elements. */
static bool
array_values(NarrowState *st, EqKind kind, Oid coltype, Node *arr, List **values)
{
	arr = strip_relabel(arr);
	*values = NIL;
	if (arr != NULL && IsA(arr, ArrayExpr))
	{
		ListCell   *lc;

		/*
		 * Too many to narrow to, before any is rendered: anyone may call
		 * query(), and the duplicates check below is quadratic.
		 */
		if (list_length(((ArrayExpr *) arr)->elements) > wtcache_max_tags_per_call)
			return false;
		foreach(lc, ((ArrayExpr *) arr)->elements)
		{
			Operand		e;

			CHECK_FOR_INTERRUPTS();
			if (!operand(st, lfirst(lc), &e) || e.var >= 0 || !type_fits(kind, e.type) ||
				(kind == EQ_ENUM && e.type != coltype))
				return false;
			if (!e.isnull)
				*values = add_value(*values, render_value(e.type, e.value));
		}
		return true;
	}
	else
	{
		Operand		a;
		Oid			elemtype;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		if (!operand(st, arr, &a) || a.var >= 0 || a.isnull)
			return false;
		elemtype = get_element_type(a.type);
		if (!OidIsValid(elemtype) || !type_fits(kind, getBaseType(elemtype)) ||
			(kind == EQ_ENUM && getBaseType(elemtype) != coltype))
			return false;
		get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
		deconstruct_array(DatumGetArrayTypeP(a.value), elemtype, typlen, typbyval, typalign,
						  &elems, &nulls, &n);
		if (n > wtcache_max_tags_per_call)
			return false;
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				*values = add_value(*values, render_value(getBaseType(elemtype), elems[i]));
		return true;
	}
}

/* What one top-level conjunct proves, if anything. */
static void
take_conjunct(NarrowState *st, Node *clause)
{
	if (IsA(clause, OpExpr) && list_length(((OpExpr *) clause)->args) == 2)
	{
		OpExpr	   *opx = (OpExpr *) clause;
		EqKind		kind;
		Operand		a,
					b;

		set_opfuncid(opx);
		kind = eq_kind(opx->opfuncid);
		if (kind == EQ_NONE || !collation_ok(opx->inputcollid) ||
			!operand(st, linitial(opx->args), &a) || !operand(st, lsecond(opx->args), &b) ||
			!type_fits(kind, a.type) || !type_fits(kind, b.type) ||
			(kind == EQ_ENUM && a.type != b.type))
			return;
		if (a.var >= 0 && b.var >= 0)
			st->vars[eq_root(st, a.var)].parent = eq_root(st, b.var);
		else if (a.var >= 0 && !b.isnull)
			bind(st, a.var, list_make1(render_value(b.type, b.value)));
		else if (b.var >= 0 && !a.isnull)
			bind(st, b.var, list_make1(render_value(a.type, a.value)));
	}
	else if (IsA(clause, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *sa = (ScalarArrayOpExpr *) clause;
		EqKind		kind;
		Operand		a;
		List	   *values;

		if (!sa->useOr || list_length(sa->args) != 2)
			return;
		set_sa_opfuncid(sa);
		kind = eq_kind(sa->opfuncid);
		if (kind == EQ_NONE || !collation_ok(sa->inputcollid) ||
			!operand(st, linitial(sa->args), &a) || a.var < 0 || !type_fits(kind, a.type) ||
			!array_values(st, kind, a.type, lsecond(sa->args), &values) ||
			list_length(values) > wtcache_max_tags_per_call)
			return;
		bind(st, a.var, values);
	}
}

static void
add_conjuncts(NarrowState *st, Node *quals)
{
	ListCell   *lc;

	if (quals == NULL)
		return;
	if (IsA(quals, List))
	{
		foreach(lc, (List *) quals)
			add_conjuncts(st, lfirst(lc));
	}
	else if (is_andclause(quals))
	{
		foreach(lc, ((BoolExpr *) quals)->args)
			add_conjuncts(st, lfirst(lc));
	}
	else
		st->conjuncts = lappend(st->conjuncts, quals);
}

/*
 * The entries of the join tree whose every contributing row satisfies
 * the conjuncts collected (WHERE, inner joins' ON): what is reached
 * through inner joins and the preserved side of outer joins.  The
 * nullable side of an outer join, and a full join, are left out with
 * their ON clauses.
 */
static void
walk_jointree(NarrowState *st, Node *node)
{
	if (node == NULL)
		return;
	if (IsA(node, RangeTblRef))
		st->covered = bms_add_member(st->covered, ((RangeTblRef *) node)->rtindex);
	else if (IsA(node, FromExpr))
	{
		ListCell   *lc;

		foreach(lc, ((FromExpr *) node)->fromlist)
			walk_jointree(st, lfirst(lc));
		add_conjuncts(st, ((FromExpr *) node)->quals);
	}
	else if (IsA(node, JoinExpr))
	{
		JoinExpr   *j = (JoinExpr *) node;

		if (j->jointype == JOIN_INNER)
		{
			walk_jointree(st, j->larg);
			walk_jointree(st, j->rarg);
			add_conjuncts(st, j->quals);
		}
		else if (j->jointype == JOIN_LEFT)
			walk_jointree(st, j->larg);
		else if (j->jointype == JOIN_RIGHT)
			walk_jointree(st, j->rarg);
	}
}

/* The values a column of the top query is bound to, or NIL. */
static List *
column_values(NarrowState *st, Index varno, AttrNumber attno)
{
	int			v = eq_var(st, varno, attno, false);
	int			root;
	List	   *best = NIL;

	if (v < 0)
		return NIL;
	root = eq_root(st, v);
	for (int i = 0; i < st->nvars; i++)
		if (eq_root(st, i) == root && st->vars[i].values != NIL &&
			(best == NIL || list_length(st->vars[i].values) < list_length(best)))
			best = st->vars[i].values;
	return best;
}

/*
 * The tags of one entry of the range table: those of the template whose
 * columns are all bound, the fewest; false if there is none.
 */
static bool
entry_tags(NarrowState *st, Index rti, const CaptureShape *shape, List **tags)
{
	int			best = -1;
	double		best_count = 0;
	int			ucols[WTCACHE_MAX_TAG_COLUMNS];
	List	   *uvals[WTCACHE_MAX_TAG_COLUMNS];
	int			nu = 0;
	int			idx[WTCACHE_MAX_TAG_COLUMNS];
	char	   *colvals[WTCACHE_MAX_TAG_COLUMNS];

	for (int t = 0; t < shape->ntemplates; t++)
	{
		double		count = 1;
		bool		used[WTCACHE_MAX_TAG_COLUMNS] = {false};
		bool		any = false;
		bool		bound = true;

		for (int p = 0; p < shape->templates[t].nparts && bound; p++)
		{
			int			c = shape->templates[t].parts[p].col;
			List	   *vals;

			if (c < 0 || c >= shape->ncols || used[c])
			{
				bound = bound && c < shape->ncols;
				continue;
			}
			used[c] = true;
			any = true;
			vals = column_values(st, rti, shape->cols[c]);
			if (vals == NIL)
				bound = false;
			else
				count *= list_length(vals);
		}
		/* a template without columns names every row: nothing narrower */
		if (bound && any && (best < 0 || count < best_count))
		{
			best = t;
			best_count = count;
		}
	}
	if (best < 0 || best_count > wtcache_max_tags_per_call)
		return false;

	/* every combination of the bound values, through the templates' renderer */
	for (int c = 0; c < shape->ncols; c++)
		colvals[c] = NULL;
	for (int p = 0; p < shape->templates[best].nparts; p++)
	{
		int			c = shape->templates[best].parts[p].col;
		bool		seen = false;

		if (c < 0)
			continue;
		for (int u = 0; u < nu; u++)
			seen = seen || ucols[u] == c;
		if (seen)
			continue;
		ucols[nu] = c;
		uvals[nu] = column_values(st, rti, shape->cols[c]);
		idx[nu] = 0;
		nu++;
	}
	for (;;)
	{
		char	   *tag;
		int			u;
		ListCell   *lc;
		bool		dup = false;

		for (u = 0; u < nu; u++)
			colvals[ucols[u]] = list_nth(uvals[u], idx[u]);
		if (wtcache_render_tags(&shape->templates[best], 1, colvals, &tag) != 1 ||
			strlen(tag) > (size_t) wtcache_max_tag_length)
			return false;
		foreach(lc, *tags)
			dup = dup || strcmp(lfirst(lc), tag) == 0;
		if (!dup)
			*tags = lappend(*tags, tag);
		for (u = 0; u < nu; u++)
		{
			if (++idx[u] < list_length(uvals[u]))
				break;
			idx[u] = 0;
		}
		if (u == nu)
			break;
	}
	return true;
}

/* The index of an entry in the top query's range table, or 0. */
static Index
top_index(Query *query, RangeTblEntry *rte)
{
	Index		i = 0;
	ListCell   *lc;

	foreach(lc, query->rtable)
	{
		i++;
		if (lfirst(lc) == rte)
			return i;
	}
	return 0;
}

List *
wtcache_narrow_query(Query *query, const NarrowParams *params, List *rtes, List *rte_watched)
{
	NarrowState st;
	List	   *tables = NIL;
	List	   *result = NIL;
	ListCell   *lc;

	if (query->commandType != CMD_SELECT || query->jointree == NULL)
		return NIL;
	memset(&st, 0, sizeof(st));
	st.query = query;
	st.params = params;
	walk_jointree(&st, (Node *) query->jointree);
	foreach(lc, st.conjuncts)
		take_conjunct(&st, lfirst(lc));

	foreach(lc, rte_watched)
		if (OidIsValid(lfirst_oid(lc)))
			tables = list_append_unique_oid(tables, lfirst_oid(lc));
	foreach(lc, tables)
	{
		Oid			watched = lfirst_oid(lc);
		List	   *tags = NIL;
		bool		ok = true;
		ListCell   *r,
				   *w;

		forboth(r, rtes, w, rte_watched)
		{
			RangeTblEntry *rte = lfirst(r);
			Index		rti;
			CaptureShape *shape;

			if (lfirst_oid(w) != watched)
				continue;
			rti = top_index(query, rte);
			if (rti == 0 || !bms_is_member(rti, st.covered))
			{
				ok = false;		/* in a sub-select, a view, an outer join... */
				break;
			}
			shape = capture_shape(rte->relid);
			if (shape->watched != watched || !entry_tags(&st, rti, shape, &tags))
			{
				ok = false;
				break;
			}
		}
		if (ok && tags != NIL && list_length(tags) <= wtcache_max_tags_per_call)
		{
			NarrowedTable *nt = palloc(sizeof(NarrowedTable));

			nt->watched = watched;
			nt->tags = tags;
			result = lappend(result, nt);
		}
	}
	return result;
}
