/*-------------------------------------------------------------------------
 * read.h
 *		What these offer the other modules:
 *		read.c: cached reads: get(), get_many()
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_READ_H
#define WTCACHE_READ_H

#include "wtcache.h"

extern text *wtcache_row_key_text(Oid relid, ArrayType *keyarr);

#endif							/* WTCACHE_READ_H */
