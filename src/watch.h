/*-------------------------------------------------------------------------
 * watch.h
 *		What these offer the other modules:
 *		watch.c: watch(), unwatch(), resync()/warm()
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_WATCH_H
#define WTCACHE_WATCH_H

#include "wtcache.h"

#include "utils/relcache.h"

/* A table's watch configuration, as wtcache.watched holds it. */
typedef struct WatchConfig
{
	int			nkeys;
	int16	   *key_attnums;
	bool		invalidate_mode;
	int64		ttl_ms;			/* 0: no expiry */
	ArrayType  *tags;			/* tag templates as given to watch() */
	/*
	 * The projection (1.3): which columns Redis gets.  nproj < 0: every
	 * column.  Else proj_attnums lists nproj attnums, the columns named in
	 * wtcache.watched.columns (proj_exclude false: those and the key
	 * columns) or exclude_columns (true: every column but those), resolved
	 * by name when loaded; a name no column has any more is skipped.
	 */
	int			nproj;
	int16	   *proj_attnums;
	bool		proj_exclude;
	/*
	 * The value format (1.3): false, the JSON string of keyspace.h; true,
	 * a Redis hash of the columns (keyspace.h's hash codec).
	 */
	bool		hash_format;
	/*
	 * The key template (1.3): the application's names for the rows in
	 * Redis, as stored (keyspace.h); NULL: the default layout.
	 */
	char	   *key_template;
} WatchConfig;

struct KeyTemplate;
struct KeyTemplateError;

extern bool wtcache_load_watch(Oid relid, WatchConfig *config);
extern int	wtcache_value_columns(Relation rel, const WatchConfig *config,
								  int16 **valcols);
extern char *wtcache_projection_desc(Relation rel, const WatchConfig *config);
extern struct KeyTemplate *wtcache_watch_key_template(Oid relid, const WatchConfig *config,
													  struct KeyTemplateError *err);
extern char *wtcache_current_key_template(Oid relid);
extern List *wtcache_watched_among(List *relids);
extern bool wtcache_is_watched(Oid relid);
extern uint64 wtcache_enqueue_all_rows(Oid relid);
extern uint64 wtcache_resync_table(Oid relid);
extern void wtcache_enqueue_table_removal(Oid relid);
extern void wtcache_drop_row_triggers(Oid relid);
extern void wtcache_create_row_triggers(Oid relid);
extern void wtcache_enable_capture_always(Oid relid);
extern uint64 wtcache_resync_table_or_purge(Oid relid, bool purge_first, char **failure);
extern void wtcache_warn_if_key_unenforced(Oid relid);
extern bool wtcache_key_enforced(Oid relid);
extern bool wtcache_column_is_captured(Oid relid, const char *colname);
extern void wtcache_watch_rename_column(Oid relid, const char *oldname, const char *newname);
extern void wtcache_watch_restored(Oid relid);

/* A watched table's column, by number, with its name (ddl.c) */
typedef struct WatchedColumn
{
	Oid			relid;
	int16		attnum;
	char	   *name;
} WatchedColumn;

extern List *wtcache_watched_column_names(void);
extern bool wtcache_changing_triggers;

#endif							/* WTCACHE_WATCH_H */
