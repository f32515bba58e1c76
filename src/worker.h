/*-------------------------------------------------------------------------
 * worker.h
 *		What these offer the other modules:
 *		worker.c: per-database delivery worker: the process, its loop
 *		launcher.c: launcher that starts one worker per database
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_WORKER_H
#define WTCACHE_WORKER_H

#include "wtcache.h"

extern PGDLLEXPORT void wtcache_worker_main(Datum main_arg);
extern PGDLLEXPORT void wtcache_launcher_main(Datum main_arg);
extern void wtcache_register_launcher(void);

#endif							/* WTCACHE_WORKER_H */
