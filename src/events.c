/*-------------------------------------------------------------------------
 * events.c
 *		The messages the worker publishes on the events channel.
 *
 * Near caches parse them (README, "The events channel"), so their form is a
 * contract, and this file is the only one that writes it.  Every message is
 * one JSON object whose members come in this order, each only in the kinds
 * of message named:
 *
 *	{"db":D				always
 *	 ,"table":T			a row change, a truncate
 *	 ,"key":[K...]		a row change
 *	 ,"op":O,"v":N		always
 *	 ,"tags":[G...]		a row change (the table's tag first), an invalidation
 *	 ,"reason":R}		a reset
 *
 * event_begin() and event_op() write the members every message has; the
 * rest is each kind's own.  A row change's start is rendered once per table
 * and batch (event_row_head), for the messages of its keys to copy.
 *
 * Messages are built when the batch is claimed and sent with its writes,
 * so that Redis publishes only what it applied (push.c); a truncate and a
 * reset are published by the worker itself, after what they announce.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "keys.h"
#include "push.h"
#include "redis.h"
#include "keyspace.h"

#include "utils/json.h"
#include "utils/lsyscache.h"

/* {"db":D, and ,"table":T when there is one */
static void
event_begin(StringInfo ev, const char *table)
{
	appendStringInfoString(ev, "{\"db\":");
	escape_json(ev, Worker.dbname);
	if (table != NULL)
	{
		appendStringInfoString(ev, ",\"table\":");
		escape_json(ev, table);
	}
}

/* ,"op":O,"v":N */
static void
event_op(StringInfo ev, const char *op, int64 version)
{
	appendStringInfo(ev, ",\"op\":\"%s\",\"v\":" INT64_FORMAT, op, version);
}

/* The start of every row change of a table, up to its key values. */
char *
event_row_head(const char *nspname, const char *relname)
{
	StringInfoData ev;
	char	   *qualified = psprintf("%s.%s", nspname, relname);

	initStringInfo(&ev);
	event_begin(&ev, qualified);
	appendStringInfoString(&ev, ",\"key\":[");
	return ev.data;
}

/* A change of one key of a batch: op is upsert, delete or invalidate. */
void
event_row(PushItem *it, const TableBatch *tb, const BatchKey *bk, const char *op)
{
	StringInfoData ev;
	ListCell   *lc;

	initStringInfo(&ev);
	appendStringInfoString(&ev, tb->event_head);
	for (int c = 0; c < tb->nkeys; c++)
	{
		if (c)
			appendStringInfoChar(&ev, ',');
		escape_json(&ev, bk->values[c]);
	}
	appendStringInfoChar(&ev, ']');
	event_op(&ev, op, bk->version);
	appendStringInfoString(&ev, ",\"tags\":[");
	escape_json(&ev, tb->table_tag);
	foreach(lc, bk->tags)
	{
		appendStringInfoChar(&ev, ',');
		escape_json(&ev, lfirst(lc));
	}
	appendStringInfoString(&ev, "]}");
	it->event = ev.data;
	it->event_len = ev.len;
}

/* Every row of a table removed; NULL when the table is gone and has no name. */
char *
event_truncate(Oid relid, int64 version)
{
	StringInfoData ev;

	if (get_rel_name(relid) == NULL)
		return NULL;
	initStringInfo(&ev);
	event_begin(&ev, psprintf("%s.%s",
							  get_namespace_name(get_rel_namespace(relid)),
							  get_rel_name(relid)));
	event_op(&ev, "truncate", version);
	appendStringInfoChar(&ev, '}');
	return ev.data;
}

/* The tags a batch invalidated, after its rows. */
void
event_tags(TagBumps *bumps, char *const *tags, int ntags, int64 version)
{
	StringInfoData ev;

	initStringInfo(&ev);
	event_begin(&ev, NULL);
	event_op(&ev, "invalidate", version);
	appendStringInfoString(&ev, ",\"tags\":");
	wtcache_append_json_strings(&ev, tags, ntags);
	appendStringInfoChar(&ev, '}');
	bumps->event = ev.data;
	bumps->event_len = ev.len;
}

/* PUBLISH a message on the events channel; false when Redis failed. */
bool
event_publish(const char *message)
{
	StringInfoData channel;
	WtcReply	reply;

	initStringInfo(&channel);
	wtcache_events_channel(&channel);
	return wtc_redis_commandv(Worker.redis, &reply, 3, "PUBLISH", channel.data, message);
}

/*
 * Announce that every key of the database was removed (a repair after
 * Redis lost data), as a TRUNCATE is announced for one table: a near cache
 * fed by the events channel must drop all it holds of the database.  On a
 * failure, the next repair announces again.
 */
void
publish_reset(const char *why)
{
	StringInfoData ev;

	if (!wtcache_publish_events || Worker.redis == NULL)
		return;
	initStringInfo(&ev);
	event_begin(&ev, NULL);
	event_op(&ev, "reset", acked_version());
	appendStringInfoString(&ev, ",\"reason\":");
	escape_json(&ev, why);
	appendStringInfoChar(&ev, '}');
	(void) event_publish(ev.data);
}
