/*-------------------------------------------------------------------------
 * tags.h
 *		What these offer the other modules:
 *		tags.c: tag templates, tag keys, invalidate()
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_TAGS_H
#define WTCACHE_TAGS_H

#include "wtcache.h"

/* tag columns per table: the UPDATE trigger passes each twice, plus keys */
#define WTCACHE_MAX_TAG_COLUMNS 16

typedef struct TagPart
{
	int			col;			/* index among the tag columns, or -1 */
	char	   *lit;			/* literal text when col < 0 */
} TagPart;

typedef struct TagTemplate
{
	int			nparts;
	TagPart    *parts;
} TagTemplate;

extern ArrayType *wtcache_compile_tag_templates(Relation rel, ArrayType *templates,
												AttrNumber *cols, int *ncols);
extern TagTemplate *wtcache_parse_tag_templates(ArrayType *compiled, int *ntemplates,
												MemoryContext mcxt);
extern int	wtcache_render_tags(const TagTemplate *templates, int ntemplates,
								char **colvals, char **out);
extern char *wtcache_table_tag(Oid relid);
extern char *wtcache_table_wide_tag(Oid relid);
extern char *wtcache_table_wide_tag_of(const char *tag);
extern void wtcache_invalidate_table_wide(Oid relid);
extern bool wtcache_xact_invalidated(const char *tag);
extern void wtcache_check_call_tags(ArrayType *tags);

#endif							/* WTCACHE_TAGS_H */
