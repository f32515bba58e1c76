/*-------------------------------------------------------------------------
 * fence.c
 *		wtcache.wait(timeout): the read-your-writes fence.
 *
 * The worker deletes queue rows only after Redis acknowledged them, so
 * "everything committed before the call is in Redis" is "every queue row
 * visible at the call is gone".  Rows this transaction wrote itself are not
 * committed yet and are left out.  Each poll runs with a fresh snapshot, so
 * the fence needs READ COMMITTED.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

/*
 * True once every queue row visible now (and not this transaction's own)
 * is gone, false at the timeout.  Also used by verify() to let changes in
 * flight land before it reports a difference.
 */
bool
wtcache_fence(int64 timeout_ms)
{
	TimestampTz deadline;
	Oid			save_userid;
	int			save_sec;
	Oid			queue_owner;
	Datum	   *ids;
	int			nids = 0;
	ArrayType  *idarr;
	long		sleep_ms = 1;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wtcache cannot see delivery progress in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errhint("Call it after COMMIT, or in a READ COMMITTED transaction.")));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	queue_owner = wtcache_owner();
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(queue_owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT id, xmin FROM wtcache.queue", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "wtcache.queue scan failed");
	ids = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		TransactionId xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 2, &isnull));

		if (!TransactionIdIsCurrentTransactionId(xmin))
			ids[nids++] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
	}
	idarr = construct_array(ids, nids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);

	while (nids > 0)
	{
		Oid			argtypes[1] = {INT8ARRAYOID};
		Datum		values[1] = {PointerGetDatum(idarr)};

		if (SPI_execute_with_args("SELECT 1 FROM wtcache.queue WHERE id = ANY($1) LIMIT 1",
								  1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "wtcache.queue scan failed");
		if (SPI_processed == 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			SPI_finish();
			SetUserIdAndSecContext(save_userid, save_sec);
			return false;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		sleep_ms = Min(sleep_ms * 2, 20);
	}
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	return true;
}

PG_FUNCTION_INFO_V1(wtcache_wait);
Datum
wtcache_wait(PG_FUNCTION_ARGS)
{
	int64		timeout_ms = wtcache_interval_ms(PG_GETARG_INTERVAL_P(0));

	wtcache_require_preload();
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	PG_RETURN_BOOL(wtcache_fence(timeout_ms));
}
