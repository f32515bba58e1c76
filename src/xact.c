/*-------------------------------------------------------------------------
 * xact.c
 *		The one place wtcache hears of transaction ends.
 *
 * Seven modules keep state for the length of a transaction.  PostgreSQL calls
 * registered callbacks newest first, and most of them used to register at
 * their first use, so the order they ran in depended on what a backend
 * happened to call first.  Instead there is one callback of each kind,
 * registered once when the library is loaded, and it calls them in this
 * order:
 *
 *	capture		pre-commit (and pre-prepare): writes the keys still
 *				buffered as queue rows, which counts them in the pending
 *				filter; so it runs while everything else still holds its
 *				state.  At commit it wakes the worker, once the commit is
 *				visible.
 *	pending		at commit the filter counts become the worker's to take
 *				back; at abort this backend takes back its own.  After
 *				capture, whose pre-commit writes add counts.
 *	partition	pre-commit: a transaction that attached or detached a
 *				partition of a watched tree takes the tree's lock, held
 *				until its invalidations are sent (partition.c); after
 *				capture, so the worker never waits for a flush.
 *	ddl			at commit or abort, lets a database's worker come back
 *				(or go, if its database was dropped) once the DDL that held
 *				it off is over.
 *	progress	at commit the long operations this transaction listed rows
 *				for become the worker's to deliver; at abort (of the
 *				transaction, or of the savepoint they began in) they are
 *				forgotten (progress.c).  Touches only its own entries.
 *	tags, session, read
 *				forget per-transaction state: tags invalidated by this
 *				transaction, the nesting depth and SPI state an error may
 *				have left behind.
 *				Each only resets itself, so their order among themselves
 *				does not matter.
 *
 * Subtransaction events go to capture (its buffer's savepoint marks),
 * pending (the counts of a rolled-back savepoint) and progress, in that
 * order.
 *
 * Past pre-commit none of them may fail: at commit the commit record is
 * written, and an error could no longer undo what it describes.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "xact.h"
#include "progress.h"

#include "access/xact.h"

static bool registered = false;

static void
wtcache_xact_callback(XactEvent event, void *arg)
{
	wtcache_capture_xact_event(event);
	wtcache_pending_xact_event(event);
	wtcache_partition_xact_event(event);
	wtcache_ddl_xact_event(event);
	wtcache_progress_xact_event(event);
	wtcache_tags_xact_event(event);
	wtcache_session_xact_event(event);
	wtcache_read_xact_event(event);
}

static void
wtcache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	wtcache_capture_subxact_event(event, mySubid, parentSubid);
	wtcache_pending_subxact_event(event, mySubid, parentSubid);
	wtcache_progress_subxact_event(event, mySubid, parentSubid);
}

void
wtcache_xact_callbacks_init(void)
{
	if (registered)
		return;
	RegisterXactCallback(wtcache_xact_callback, NULL);
	RegisterSubXactCallback(wtcache_subxact_callback, NULL);
	registered = true;
}
