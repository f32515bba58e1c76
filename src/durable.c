/*-------------------------------------------------------------------------
 * durable.c
 *		What must be durable before a batch is sent, and the wait for it.
 *
 * Only durable commits reach Redis.  A batch records, while it is claimed,
 * every commit it depends on: those of its queue rows, of the table rows it
 * read, and, where it sends something no row names (a key whose row is
 * gone, a value rendered under catalog changes), all WAL written by then.
 * batch_durable() makes that durable (flushed, and on the synchronous
 * standbys) before the batch is sent, and advances Worker.durable_lsn, the
 * WAL position the generation markers record (markers.c).
 *
 * The worker's own commits are asynchronous; the commit ends it noted
 * (note_own_commit) let it flush at once what only they left unflushed.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"

#include "access/xlog_internal.h"
#include "pgstat.h"
#include "postmaster/walwriter.h"
#include "replication/syncrep.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/pmsignal.h"
#include "utils/inval.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/*
 * The ends of the worker's own latest commits.  They are asynchronous
 * (see wtcache_worker_main), and the commit log keeps one commit end per
 * group of transactions, the latest asynchronous one: a group of
 * synchronous writers' commits and one of the worker's carries the
 * worker's.  Telling them apart lets batch_durable() flush at once what
 * only the worker's own commits left unflushed, instead of waiting for
 * the WAL writer as for asynchronous writers.  A group spans 32
 * transactions, so the last few of the worker's commits are enough.
 */
void
note_own_commit(void)
{
	int			last = (Worker.own_commit_next + OWN_COMMITS_KEPT - 1) % OWN_COMMITS_KEPT;

	if (XactLastCommitEnd != Worker.own_commit_ends[last])
	{
		Worker.own_commit_ends[Worker.own_commit_next] = XactLastCommitEnd;
		Worker.own_commit_next = (Worker.own_commit_next + 1) % OWN_COMMITS_KEPT;
	}
}

static bool
is_own_commit_end(XLogRecPtr commit_end)
{
	for (int i = 0; i < OWN_COMMITS_KEPT; i++)
		if (Worker.own_commit_ends[i] == commit_end)
			return true;
	return false;
}

/*
 * Values and keys are rendered with the catalog as the worker's caches
 * have it, not as of the claim's snapshot: a table, schema or column
 * renamed, an enum label or a composite type's attribute renamed (no lock
 * on the tables that use them) by a commit the snapshot does not see, or
 * one whose queue rows come in a later batch.  Such a commit is durable
 * only once flushed like any other, and nothing in the batch names it.
 * So count the invalidations the worker's caches take in: when any came
 * in since the last claim, the batch takes all WAL written by the end of
 * its claim (claim_next), which holds every commit those caches show.
 */
static void
count_catalog_change(Datum arg, Oid relid)
{
	Worker.catalog_changes++;
}

static void
count_syscache_change(Datum arg, int cacheid, uint32 hashvalue)
{
	Worker.catalog_changes++;
}

/* Once per process: count the invalidations of the catalogs keys and values are rendered with. */
void
durable_watch_catalog(void)
{
	CacheRegisterRelcacheCallback(count_catalog_change, (Datum) 0);
	CacheRegisterSyscacheCallback(ENUMOID, count_syscache_change, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, count_syscache_change, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, count_syscache_change, (Datum) 0);
}

/*
 * The WAL insert position, as a position XLogFlush() accepts: at a page
 * boundary it points past the header of a page nothing was written to
 * yet, which XLogFlush() refuses; the boundary covers every record before
 * it.
 */
static XLogRecPtr
wal_inserted(void)
{
	XLogRecPtr	pos = GetXLogInsertRecPtr();
	uint32		page_offset = pos % XLOG_BLCKSZ;

	if (page_offset == SizeOfXLogShortPHD ||
		(page_offset == SizeOfXLogLongPHD && XLogSegmentOffset(pos, wal_segment_size) == page_offset))
		pos -= page_offset;
	return pos;
}

/*
 * The batch renders something under the catalog as the worker's caches
 * have it now, which may show a commit no row of the batch names: it
 * takes all WAL written by now, which holds every such commit.
 */
void
batch_covers_wal_now(Batch *b)
{
	b->writer_unknown = true;
	b->inserted_at_claim = Max(b->inserted_at_claim, wal_inserted());
}

/*
 * At the start of a claim, in its transaction, once its snapshot is taken.
 * A commit is visible only once its commit record is in WAL, and a
 * synchronous one only once it is flushed: every commit this claim's
 * snapshot sees ends before the insert position read now, and every
 * synchronous one before the flush position.  Asynchronous ones are
 * looked up row by row (batch_note_writer).
 */
void
batch_wal_at_claim(Batch *b)
{
	b->flushed_at_claim = GetFlushRecPtr(NULL);
	b->inserted_at_claim = wal_inserted();
	b->last_xmin = InvalidTransactionId;
	b->visible_below = GetActiveSnapshot()->xmax;
}

/* At the end of a claim that took rows, once its items are built. */
void
batch_catalog_at_claim(Batch *b)
{
	/* rendered with catalog changes no batch has made durable yet */
	b->catalog_changes = Worker.catalog_changes;
	if (Worker.catalog_changes != Worker.catalog_changes_claimed)
		batch_covers_wal_now(b);
}

/*
 * Where the WAL must be flushed to for a committed transaction to be
 * durable: InvalidXLogRecPtr once it is.  An asynchronous commit leaves
 * its commit record's end in the commit log (for a group of transactions:
 * an upper bound), for hint bits to wait for; a synchronous one was
 * flushed before anyone could see it and leaves none.  The xmin column
 * is the raw one: a row frozen long ago may name a transaction whose
 * commit log is truncated (and flushed long since); truncation holds
 * XactTruncationLock, as pg_xact_status() relies on.  A prepared
 * transaction's COMMIT PREPARED is always flushed.
 */
static XLogRecPtr
async_commit_end(TransactionId xid, TransactionId visible_below)
{
	XLogRecPtr	commit_end = InvalidXLogRecPtr;

	/*
	 * Both bounds: an xid 2^31 older than the truncation point wraps past
	 * it.  visible_below: the claim snapshot's xmax, which every xid the
	 * claim sees precedes, and no lock to read.
	 */
	LWLockAcquire(XactTruncationLock, LW_SHARED);
	if (TransactionIdIsNormal(xid) &&
		!TransactionIdPrecedes(xid, ShmemVariableCache->oldestClogXid) &&
		TransactionIdPrecedes(xid, visible_below))
		commit_end = TransactionIdGetCommitLSN(xid);
	LWLockRelease(XactTruncationLock);
	return commit_end;
}

/*
 * A row of the batch (a queue row, or a table row it sends) was written by
 * xmin: its commit must be durable before the batch is sent.  One
 * transaction's rows are usually adjacent.
 */
void
batch_note_writer(Batch *b, TransactionId xmin)
{
	XLogRecPtr	commit_end;

	if (xmin == b->last_xmin)
		return;
	commit_end = async_commit_end(xmin, b->visible_below);
	/* after the lookup, which can fail: a retry must look again */
	b->last_xmin = xmin;
	if (commit_end > b->commits_end)
		b->commits_end = commit_end;
	/* flushed by the claim: nothing to wait for */
	if (commit_end > b->flushed_at_claim && !is_own_commit_end(commit_end))
		b->others_async = true;
}

/*
 * Only durable commits reach Redis: with synchronous_commit off, a commit
 * is visible before its WAL is flushed, and a crash then loses it while
 * Redis would keep a value no committed transaction wrote.  So the WAL of
 * the batch's asynchronous commits must be flushed before it is sent:
 * those of its queue rows, of the table rows it read (a row may have
 * changed again since, by a commit whose queue row is in a later batch),
 * and, for a key whose row is gone or after catalog changes
 * (catalog_changes), whatever was in WAL at the claim.
 *
 * The WAL writer flushes it within wal_writer_delay, which is also when
 * logical decoding first sees those commits.  Flushing it here instead
 * cost an fsync a batch, a batch every millisecond or so under a load of
 * asynchronous commits: I/O and CPU that the writers asked to spare by
 * turning synchronous_commit off (the bench's TPS ratio with it off rose
 * from about 0.70x to 0.82x-0.91x once the worker waited instead).  So
 * wait for the WAL writer, polling, and flush only if it did not within
 * twice its delay.  A wait() caller flushes what the worker waits for
 * (fence.c), so read-your-writes does not wait for the WAL writer.
 * Synchronous commits were flushed before they became visible: batches of
 * them wait only if another session's asynchronous commit shares their
 * commit-log group; what the worker's own commits left unflushed there is
 * flushed at once (note_own_commit).
 */
#define ASYNC_FLUSH_POLL_US		1000

void
batch_durable(Batch *b)
{
	XLogRecPtr	upto = b->commits_end;
	XLogRecPtr	durable;

	/* a delete's commit is known only to be visible: in WAL by the claim */
	if (b->writer_unknown)
		upto = Max(upto, b->inserted_at_claim);
	/* every commit the batch's rows come from ends before this */
	durable = Max(upto, b->flushed_at_claim);

	/*
	 * Wait for what asynchronous commits left; the WAL writer flushes no
	 * further than them, so the rest (upto) is flushed here.
	 */
	if (b->commits_end > GetFlushRecPtr(NULL) && b->others_async)
	{
		/* counted, not timed: a clock set back must not stretch it */
		long		polls = 2000L * WalWriterDelay / ASYNC_FLUSH_POLL_US;

		SpinLockAcquire(&Worker.slot->mutex);
		Worker.slot->wal_awaited = b->commits_end;
		SpinLockRelease(&Worker.slot->mutex);
		pgstat_report_activity(STATE_RUNNING, "wtcache: waiting for the WAL writer");
		/*
		 * Not on the latch: every commit sets it, and a worker asleep on it
		 * costs each committer a signal.
		 */
		while (b->commits_end > GetFlushRecPtr(NULL) && polls-- > 0)
		{
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			pg_usleep(ASYNC_FLUSH_POLL_US);
			pgstat_report_wait_end();
			CHECK_FOR_INTERRUPTS();
			if (!PostmasterIsAlive())
				proc_exit(1);
		}
		pgstat_report_activity(STATE_IDLE, NULL);
		SpinLockAcquire(&Worker.slot->mutex);
		Worker.slot->wal_awaited = InvalidXLogRecPtr;
		SpinLockRelease(&Worker.slot->mutex);
	}
	XLogFlush(upto);
	Worker.catalog_changes_claimed = b->catalog_changes;

	/*
	 * With synchronous standbys, durable means on them too: a failover to
	 * one that lacks a change must not leave it in Redis.  The worker's own
	 * commits are asynchronous (see wtcache_worker_main), so ask for the
	 * standbys' flush as a synchronous commit would; this waits as the
	 * writers' commits do while the standbys are away; a shutdown or a
	 * cancel ends the wait with a WARNING, not an error.
	 */
	if (SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0')
	{
		/* through the setting: its assign hook sets the wait mode */
		SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
		SyncRepWaitForLSN(durable, false);
		SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
		/* a shutdown that ended the wait: exit before anything is sent */
		CHECK_FOR_INTERRUPTS();
	}
	/* recorded with the markers this batch raises (marker_position) */
	if (durable > Worker.durable_lsn)
		Worker.durable_lsn = durable;
	/* readers' fills take versions only from WAL this durable (read.c) */
	SpinLockAcquire(&Worker.slot->mutex);
	if (durable > Worker.slot->durable_lsn)
		Worker.slot->durable_lsn = durable;
	SpinLockRelease(&Worker.slot->mutex);
}
