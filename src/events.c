/*-------------------------------------------------------------------------
 * events.c
 *		The messages the worker publishes on the events channel.
 *
 * Near caches parse them (README, "Reading Redis directly and near
 * caches"), so their form is a contract, and this file is the only one
 * that writes it.  Every message is one JSON object whose members come in
 * this order, each only in the kinds of message named:
 *
 *	{"seq":S			always: added by the publishing script (push.c)
 *	 ,"db":D			always
 *	 ,"table":"S.T"		a row change, a truncate (unescaped, as before 1.3)
 *	 ,"schema":S,"relname":T	the same, unambiguous
 *	 ,"key_template":K	a truncate of a table with a key template (1.3):
 *						its row keys are the prefix and K rendered
 *	 ,"key":[K...]		a row change: the key column values
 *	 ,"redis_key":K		a row change: the Redis key of the row
 *	 ,"op":O,"v":N		always
 *	 ,"tags":[G...]		a row change (the table's tag first), an invalidation
 *	 ,"reason":R		a reset
 *	 ,"versions_restart":true}	a reset after Redis was ahead of the database
 *
 * event_begin() and event_op() write the members every message has; the
 * rest is each kind's own.  A row change's start is rendered once per table
 * and batch (event_row_head), for the messages of its keys to copy.
 *
 * Messages are built when the batch is claimed and published once Redis
 * has answered the batch and before it is acknowledged: those of the rows
 * Redis holds at their version, in version order, then the batch's tag
 * invalidation.  A crash or a Redis failure before the acknowledgement
 * sends the batch again and publishes them again, so a subscriber may see
 * a change twice (same "v") but never miss one it could not tell it
 * missed: every message takes the next number of the database's sequence
 * (P{D}:event_seq), in one script, so a gap or a number going back tells a
 * subscriber it lost messages.  A truncate and a reset are published by
 * the worker after what they announce, in the same sequence.
 *-------------------------------------------------------------------------
 */
#include "worker_int.h"
#include "keys.h"
#include "push.h"
#include "redis.h"
#include "keyspace.h"

#include "utils/json.h"
#include "utils/lsyscache.h"

/* {"db":D, and the table's members when there is one */
static void
event_begin(StringInfo ev, const char *nspname, const char *relname)
{
	appendStringInfoString(ev, "{\"db\":");
	escape_json(ev, Worker.dbname);
	if (relname != NULL)
	{
		appendStringInfoString(ev, ",\"table\":");
		escape_json(ev, psprintf("%s.%s", nspname, relname));
		appendStringInfoString(ev, ",\"schema\":");
		escape_json(ev, nspname);
		appendStringInfoString(ev, ",\"relname\":");
		escape_json(ev, relname);
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

	initStringInfo(&ev);
	event_begin(&ev, nspname, relname);
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
	appendStringInfoString(&ev, "],\"redis_key\":");
	escape_json(&ev, it->row_key);
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

/*
 * Every row of a table removed.  Named by the table key its queue row
 * recorded, which names the keys removed, also of a table renamed or
 * dropped since; by its relid when there is none.  With a key template,
 * the one its queue row recorded: the keys removed are the template's,
 * which a near cache cannot tell by the table's name.
 */
char *
event_truncate(Oid relid, const char *table_key, const char *key_template, int64 version)
{
	StringInfoData ev;
	char	   *nspname = NULL;
	char	   *relname = NULL;

	if (table_key == NULL || !wtcache_parse_table_key(table_key, &nspname, &relname))
	{
		relname = get_rel_name(relid);
		nspname = relname ? get_namespace_name(get_rel_namespace(relid)) : NULL;
		if (relname == NULL || nspname == NULL)
			return NULL;
	}
	initStringInfo(&ev);
	event_begin(&ev, nspname, relname);
	if (key_template != NULL)
	{
		appendStringInfoString(&ev, ",\"key_template\":");
		escape_json(&ev, key_template);
	}
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
	event_begin(&ev, NULL, NULL);
	event_op(&ev, "invalidate", version);
	appendStringInfoString(&ev, ",\"tags\":");
	wtcache_append_json_strings(&ev, tags, ntags);
	appendStringInfoChar(&ev, '}');
	bumps->event = ev.data;
	bumps->event_len = ev.len;
}

/*
 * Publish messages in this order, numbered; false when Redis failed.
 * With publishing off, advance the numbers by one instead: a subscriber
 * that missed what was not published then sees a gap when it resumes.
 */
static bool
publish(char *const *messages, const size_t *lens, int n)
{
	StringInfoData seq_key;
	char		err[256];
	bool		skip = wtcache_publish_events == WTC_PUBLISH_OFF;

	initStringInfo(&seq_key);
	wtcache_append_event_seq_key(&seq_key, Worker.dbname);
	if (wtcache_publish_messages(Worker.redis, &Worker.scripts, seq_key.data,
								 messages, lens, n, skip, err, sizeof(err)))
		return true;
	redis_failed("could not publish events", err);
	return false;
}

/* A message on its own (a truncate); false when Redis failed. */
bool
event_publish(char *message)
{
	size_t		len = strlen(message);

	return publish(&message, &len, 1);
}

static int
item_version_cmp(const void *a, const void *b)
{
	const PushItem *x = *(PushItem *const *) a;
	const PushItem *y = *(PushItem *const *) b;

	if (x->version != y->version)
		return x->version < y->version ? -1 : 1;
	return x < y ? -1 : (x > y);
}

/*
 * A batch's messages, once Redis answered it: the rows it holds at their
 * version, in version order (one key is in a batch once), then the tags.
 * False when Redis failed: the batch is not acknowledged, and publishes
 * again when it is sent again.
 */
bool
events_publish_batch(PushItem *items, int nitems, const TagBumps *bumps)
{
	PushItem  **held = palloc(sizeof(PushItem *) * Max(nitems, 1));
	char	  **messages = palloc(sizeof(char *) * (nitems + 1));
	size_t	   *lens = palloc(sizeof(size_t) * (nitems + 1));
	int			nheld = 0;
	int			n = 0;

	if (wtcache_publish_events == WTC_PUBLISH_OFF)
	{
		/* nothing was built to publish: only a gap, if anything changed */
		bool		any = bumps != NULL && bumps->ntags > 0;

		for (int i = 0; i < nitems && !any; i++)
			any = items[i].held;
		return !any || publish(NULL, NULL, 0);
	}
	for (int i = 0; i < nitems; i++)
		if (items[i].held && items[i].event != NULL)
			held[nheld++] = &items[i];
	qsort(held, nheld, sizeof(PushItem *), item_version_cmp);
	for (int i = 0; i < nheld; i++)
	{
		messages[n] = held[i]->event;
		lens[n++] = held[i]->event_len;
	}
	if (bumps != NULL && bumps->event != NULL)
	{
		messages[n] = bumps->event;
		lens[n++] = bumps->event_len;
	}
	return publish(messages, lens, n);
}

/*
 * Announce that every key of the database was removed (a repair after
 * Redis lost data), as a TRUNCATE is announced for one table: a near cache
 * fed by the events channel must drop all it holds of the database.
 * versions_restart: Redis was ahead of the database (restored, recreated,
 * back in time), so the versions handed out from now on may be lower than
 * ones a subscriber has seen, and it must forget those.
 * False when Redis failed: the caller repairs again, and announces again.
 */
bool
publish_reset(const char *why, bool versions_restart)
{
	StringInfoData ev;
	size_t		len;

	if (Worker.redis == NULL)
		return false;
	if (wtcache_publish_events == WTC_PUBLISH_OFF)
		return publish(NULL, NULL, 0);
	initStringInfo(&ev);
	event_begin(&ev, NULL, NULL);
	event_op(&ev, "reset", acked_version());
	appendStringInfoString(&ev, ",\"reason\":");
	escape_json(&ev, why);
	if (versions_restart)
		appendStringInfoString(&ev, ",\"versions_restart\":true");
	appendStringInfoChar(&ev, '}');
	len = ev.len;
	return publish(&ev.data, &len, 1);
}
