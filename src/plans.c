/*-------------------------------------------------------------------------
 * plans.c
 *		SPI plans kept for the life of the backend, found by their text.
 *
 * The worker runs the same few statements at every batch (claim, read the
 * rows of a table, acknowledge) and a batch is often one or two changes:
 * parsing and planning each statement anew cost more than running it.
 * A kept plan is revalidated by the plan cache after DDL on what it reads,
 * a change of search_path, role or row_security, so keeping it changes
 * nothing but the cost.  Statements are found by their text; callers pass
 * the same argument types with the same text.  The cache is bounded: a
 * worker that has seen many tables come and go starts it over.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "plans.h"

#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#define KEPT_PLANS_MAX	1024

typedef struct KeptPlan
{
	uint32		hash;			/* of the text: the hash table's key */
	int			nentries;		/* texts under this hash (a list, rarely > 1) */
	char	  **texts;
	SPIPlanPtr *plans;
} KeptPlan;

static HTAB *kept_plans = NULL;
static int	nkept = 0;

static void
forget_all(void)
{
	HASH_SEQ_STATUS seq;
	KeptPlan   *kp;

	hash_seq_init(&seq, kept_plans);
	while ((kp = hash_seq_search(&seq)) != NULL)
		for (int i = 0; i < kp->nentries; i++)
		{
			SPI_freeplan(kp->plans[i]);
			pfree(kp->texts[i]);
		}
	hash_destroy(kept_plans);
	kept_plans = NULL;
	nkept = 0;
}

/*
 * The kept plan of sql, prepared now if it was not.  Needs SPI.  An error
 * in preparing it is the caller's, as SPI_prepare's would be.
 */
SPIPlanPtr
wtcache_kept_plan(const char *sql, int nargs, Oid *argtypes)
{
	uint32		hash = string_hash(sql, strlen(sql) + 1);
	KeptPlan   *kp;
	bool		found;
	SPIPlanPtr	plan;
	MemoryContext old;

	if (kept_plans != NULL && nkept >= KEPT_PLANS_MAX)
		forget_all();
	if (kept_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(KeptPlan);
		ctl.hcxt = TopMemoryContext;
		kept_plans = hash_create("wtcache kept plans", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	kp = hash_search(kept_plans, &hash, HASH_ENTER, &found);
	if (!found)
	{
		kp->nentries = 0;
		kp->texts = NULL;
		kp->plans = NULL;
	}
	for (int i = 0; i < kp->nentries; i++)
		if (strcmp(kp->texts[i], sql) == 0)
			return kp->plans[i];

	old = CurrentMemoryContext;
	plan = SPI_prepare(sql, nargs, argtypes);
	MemoryContextSwitchTo(old);	/* as on a hit: SPI left its own current */
	if (plan == NULL)
		elog(ERROR, "wtcache: could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	old = MemoryContextSwitchTo(TopMemoryContext);
	kp->texts = kp->texts ? repalloc(kp->texts, sizeof(char *) * (kp->nentries + 1))
		: palloc(sizeof(char *));
	kp->plans = kp->plans ? repalloc(kp->plans, sizeof(SPIPlanPtr) * (kp->nentries + 1))
		: palloc(sizeof(SPIPlanPtr));
	kp->texts[kp->nentries] = pstrdup(sql);
	kp->plans[kp->nentries] = plan;
	kp->nentries++;
	MemoryContextSwitchTo(old);
	nkept++;
	return plan;
}
