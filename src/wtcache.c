/*-------------------------------------------------------------------------
 * wtcache.c
 *		Module entry point.
 *
 * Everything that needs the postmaster (shared memory, the launcher) is set
 * up only when the library is preloaded; loaded later, the capture triggers
 * still record changes durably and the SQL functions that need the worker
 * say so (wtcache_require_preload).
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "capture.h"
#include "ddl.h"
#include "partition.h"
#include "settings.h"
#include "shmem.h"
#include "worker.h"
#include "xact.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
wtcache_shmem_request_chain(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	wtcache_shmem_request();
}

static void
wtcache_shmem_startup_chain(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	wtcache_shmem_startup();
}

void
_PG_init(void)
{
	wtcache_define_settings();
	wtcache_capture_init();
	wtcache_xact_callbacks_init();

	/* pg_upgrade runs the server without our workers' business */
	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	/* the postmaster logs reloaded settings: keep the Redis password out */
	wtcache_install_log_redaction();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wtcache_shmem_request_chain;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wtcache_shmem_startup_chain;

	wtcache_install_utility_hook();
	wtcache_install_object_access_hook();
	wtcache_register_launcher();
}
