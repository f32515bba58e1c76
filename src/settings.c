/*-------------------------------------------------------------------------
 * settings.c
 *		The wtcache.* settings, and parsing of wtcache.redis_url.
 *
 * Only wtcache.max_databases sizes shared memory and needs a restart; the
 * rest are PGC_SIGHUP and take effect at the next pg_reload_conf(): the
 * worker re-reads them and reconnects when the Redis address changed.
 * wtcache.redis_url may carry a password, so it is GUC_SUPERUSER_ONLY and
 * is never logged: messages name host:port only.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"

#include <ctype.h>
#include <limits.h>

#include "common/hashfn.h"
#include "datatype/timestamp.h"
#include "utils/elog.h"
#include "utils/guc.h"

char	   *wtcache_redis_url = NULL;
char	   *wtcache_redis_sentinels = NULL;
char	   *wtcache_redis_master_name = NULL;
char	   *wtcache_redis_cluster_nodes = NULL;
char	   *wtcache_key_prefix = NULL;
int			wtcache_batch_size = 10000;
int			wtcache_connect_timeout_ms = 1000;
int			wtcache_command_timeout_ms = 5000;
int			wtcache_retry_interval_ms = 200;
int			wtcache_retry_max_ms = 10000;
int			wtcache_max_databases = 16;
int			wtcache_tombstone_ttl_s = 86400;
int			wtcache_poll_interval_ms = 5000;
double		wtcache_ttl_jitter = 0.1;
bool		wtcache_publish_events = true;
bool		wtcache_enabled = true;
int			wtcache_backlog_warning = 1000000;

/* An interval in milliseconds, a month counted as 30 days. */
int64
wtcache_interval_ms(const Interval *iv)
{
	return iv->time / 1000 + ((int64) iv->day + (int64) iv->month * 30) * 86400000;
}

static bool
check_power_of_two(int *newval, void **extra, GucSource source)
{
	if ((*newval & (*newval - 1)) != 0)
	{
		GUC_check_errdetail("wtcache.pending_slots must be a power of two, such as 1048576.");
		return false;
	}
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Copy [s, s+len) into dst with %XX decoding; false if it does not fit. */
static bool
copy_decoded(char *dst, size_t dstlen, const char *s, size_t len)
{
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0)
		{
			c = (char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		if (o + 1 >= dstlen)
			return false;
		dst[o++] = c;
	}
	dst[o] = '\0';
	return true;
}

/*
 * Parse redis://[user:password@]host[:port][/db].  On failure *problem says
 * what is wrong, without quoting the URL (it may hold a password).
 */
bool
wtcache_parse_redis_url(const char *url, RedisAddress *addr, const char **problem)
{
	const char *p;
	const char *at;
	const char *hostend;
	const char *end;

	memset(addr, 0, sizeof(*addr));
	addr->port = 6379;

	if (url == NULL || strncmp(url, "redis://", 8) != 0)
	{
		*problem = "The URL must start with \"redis://\".";
		return false;
	}
	p = url + 8;
	end = p + strlen(p);

	/* credentials end at the last '@' before the path */
	at = NULL;
	for (const char *q = p; q < end && *q != '/'; q++)
		if (*q == '@')
			at = q;
	if (at)
	{
		const char *colon = memchr(p, ':', at - p);

		if (colon)
		{
			if (!copy_decoded(addr->user, sizeof(addr->user), p, colon - p) ||
				!copy_decoded(addr->password, sizeof(addr->password), colon + 1, at - colon - 1))
			{
				*problem = "The user name or password is too long.";
				return false;
			}
		}
		else if (!copy_decoded(addr->password, sizeof(addr->password), p, at - p))
		{
			*problem = "The password is too long.";
			return false;
		}
		p = at + 1;
	}

	/* host, possibly [ipv6] */
	if (*p == '[')
	{
		const char *close = strchr(p, ']');

		if (!close)
		{
			*problem = "An IPv6 address must be closed with \"]\".";
			return false;
		}
		if ((size_t) (close - p - 1) >= sizeof(addr->host))
		{
			*problem = "The host name is too long.";
			return false;
		}
		memcpy(addr->host, p + 1, close - p - 1);
		hostend = close + 1;
	}
	else
	{
		hostend = p;
		while (*hostend && *hostend != ':' && *hostend != '/')
			hostend++;
		if ((size_t) (hostend - p) >= sizeof(addr->host))
		{
			*problem = "The host name is too long.";
			return false;
		}
		memcpy(addr->host, p, hostend - p);
	}
	if (addr->host[0] == '\0')
	{
		*problem = "The URL names no host.";
		return false;
	}
	for (const char *h = addr->host; *h; h++)
		if (isspace((unsigned char) *h) || *h == '@')
		{
			*problem = "The host name contains a character a host name cannot have.";
			return false;
		}

	p = hostend;
	if (*p == ':')
	{
		char	   *num_end;
		long		port;

		p++;
		port = strtol(p, &num_end, 10);
		if (num_end == p || port < 1 || port > 65535)
		{
			*problem = "The port must be a number from 1 to 65535.";
			return false;
		}
		addr->port = (int) port;
		p = num_end;
	}
	if (*p == '/')
	{
		p++;
		if (*p)
		{
			char	   *num_end;
			long		db = strtol(p, &num_end, 10);

			if (num_end == p || *num_end != '\0' || db < 0 || db > INT_MAX)
			{
				*problem = "The database after \"/\" must be a non-negative number.";
				return false;
			}
			addr->db = (int) db;
			p = num_end;
		}
	}
	if (*p != '\0')
	{
		*problem = "Unexpected text after the host and port.";
		return false;
	}
	return true;
}

/* host:port[/db] for status and logs; never the credentials. */
void
wtcache_describe_address(const RedisAddress *addr, char *buf, size_t buflen)
{
	if (strchr(addr->host, ':'))
		snprintf(buf, buflen, "[%s]:%d", addr->host, addr->port);
	else
		snprintf(buf, buflen, "%s:%d", addr->host, addr->port);
	if (addr->db != 0)
	{
		size_t		len = strlen(buf);

		snprintf(buf + len, buflen - len, "/%d", addr->db);
	}
}

/*
 * Parse "host:port, host:port, [v6]:port" into out[]; the port is required
 * (Sentinels and Cluster nodes rarely listen on 6379 both).
 */
static bool
parse_host_list(const char *list, RedisHostPort *out, int *n, const char **problem)
{
	const char *p = list ? list : "";

	*n = 0;
	for (;;)
	{
		const char *start;
		const char *hostend;
		char	   *num_end;
		long		port;

		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		if (*n >= WTC_MAX_SEEDS)
		{
			*problem = "The list names more than 16 servers.";
			return false;
		}
		if (*p == '[')
		{
			start = p + 1;
			hostend = strchr(start, ']');
			if (hostend == NULL)
			{
				*problem = "An IPv6 address must be closed with \"]\".";
				return false;
			}
			p = hostend + 1;
		}
		else
		{
			start = p;
			while (*p && *p != ':' && *p != ',' && *p != ' ')
				p++;
			hostend = p;
		}
		if (hostend == start || (size_t) (hostend - start) >= sizeof(out->host))
		{
			*problem = "Every entry must be host:port, with a host name of at most 255 bytes.";
			return false;
		}
		if (*p != ':')
		{
			*problem = "Every entry must be host:port: a port is missing.";
			return false;
		}
		p++;
		port = strtol(p, &num_end, 10);
		if (num_end == p || port < 1 || port > 65535)
		{
			*problem = "The port must be a number from 1 to 65535.";
			return false;
		}
		p = num_end;
		if (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t')
		{
			*problem = "Entries must be separated by commas.";
			return false;
		}
		memcpy(out[*n].host, start, hostend - start);
		out[*n].host[hostend - start] = '\0';
		out[*n].port = (int) port;
		(*n)++;
	}
	return true;
}

/*
 * Where Redis is, from the settings: wtcache.redis_cluster_nodes makes it a
 * Cluster, wtcache.redis_sentinels a Sentinel-managed master; either way
 * wtcache.redis_url still gives the credentials (and the database, which a
 * Cluster only has as 0).
 */
bool
wtcache_redis_target(RedisTarget *target, const char **problem)
{
	RedisHostPort sentinels[WTC_MAX_SEEDS];
	int			nsentinels;

	memset(target, 0, sizeof(*target));
	if (!wtcache_parse_redis_url(wtcache_redis_url, &target->addr, problem))
		return false;
	if (!parse_host_list(wtcache_redis_cluster_nodes, target->seeds, &target->nseeds, problem) ||
		!parse_host_list(wtcache_redis_sentinels, sentinels, &nsentinels, problem))
		return false;
	if (target->nseeds > 0)
	{
		if (nsentinels > 0)
		{
			*problem = "wtcache.redis_cluster_nodes and wtcache.redis_sentinels are both set.";
			return false;
		}
		if (target->addr.db != 0)
		{
			*problem = "A Redis Cluster has only database 0, but wtcache.redis_url names another.";
			return false;
		}
		target->mode = WTC_REDIS_CLUSTER;
		return true;
	}
	if (nsentinels > 0)
	{
		if (wtcache_redis_master_name == NULL || wtcache_redis_master_name[0] == '\0')
		{
			*problem = "wtcache.redis_sentinels is set but wtcache.redis_master_name is empty.";
			return false;
		}
		target->mode = WTC_REDIS_SENTINEL;
		target->nseeds = nsentinels;
		memcpy(target->seeds, sentinels, sizeof(sentinels));
		strlcpy(target->master_name, wtcache_redis_master_name, sizeof(target->master_name));
		return true;
	}
	target->mode = WTC_REDIS_SINGLE;
	return true;
}

/* Changes when any setting that says where Redis is, or how to log in, changes. */
uint32
wtcache_redis_settings_hash(void)
{
	const char *parts[4] = {wtcache_redis_url, wtcache_redis_sentinels,
	wtcache_redis_master_name, wtcache_redis_cluster_nodes};
	uint32		h = 0;

	for (int i = 0; i < 4; i++)
		h = hash_combine(h, parts[i] ? hash_bytes((const unsigned char *) parts[i], strlen(parts[i])) : 0);
	return h;
}

/* For status and logs: never the credentials. */
void
wtcache_describe_target(const RedisTarget *target, char *buf, size_t buflen)
{
	switch (target->mode)
	{
		case WTC_REDIS_SINGLE:
			wtcache_describe_address(&target->addr, buf, buflen);
			break;
		case WTC_REDIS_SENTINEL:
			snprintf(buf, buflen, "master \"%s\" of %d sentinel%s", target->master_name,
					 target->nseeds, target->nseeds == 1 ? "" : "s");
			break;
		case WTC_REDIS_CLUSTER:
			snprintf(buf, buflen, "cluster (seed %s:%d)", target->seeds[0].host, target->seeds[0].port);
			break;
	}
}

static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * On reload the postmaster logs 'parameter "wtcache.redis_url" changed to
 * "<the whole URL>"', password included.  Rewrite that one message with the
 * credentials masked before it reaches any log destination.
 */
static void
redact_redis_url(ErrorData *edata)
{
	/* matched loosely: the message may be translated */
	if (edata->message != NULL && strstr(edata->message, "\"wtcache.redis_url\"") != NULL)
	{
		char	   *at = strrchr(edata->message, '@');
		char	   *scheme = strstr(edata->message, "redis://");

		if (at != NULL && scheme != NULL && scheme < at)
		{
			StringInfoData buf;

			initStringInfo(&buf);
			appendBinaryStringInfo(&buf, edata->message, scheme + 8 - edata->message);
			appendStringInfoString(&buf, "***");
			appendStringInfoString(&buf, at);
			edata->message = buf.data;
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
wtcache_install_log_redaction(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_redis_url;
}

static bool
check_redis_url(char **newval, void **extra, GucSource source)
{
	RedisAddress addr;
	const char *problem = NULL;

	if (!wtcache_parse_redis_url(*newval, &addr, &problem))
	{
		GUC_check_errmsg("invalid value for parameter \"wtcache.redis_url\"");
		GUC_check_errdetail("%s", problem);
		GUC_check_errhint("Use redis://[user:password@]host:port[/db], for example redis://127.0.0.1:6379/0.");
		return false;
	}
	return true;
}

static bool
check_host_list(char **newval, void **extra, GucSource source)
{
	RedisHostPort hosts[WTC_MAX_SEEDS];
	int			n;
	const char *problem = NULL;

	if (!parse_host_list(*newval, hosts, &n, &problem))
	{
		GUC_check_errdetail("%s", problem);
		GUC_check_errhint("Use a comma-separated list of host:port, for example 127.0.0.1:26379, 127.0.0.1:26380.");
		return false;
	}
	return true;
}

static bool
check_key_prefix(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (s == NULL || s[0] == '\0')
	{
		GUC_check_errdetail("The key prefix must not be empty.");
		GUC_check_errhint("Use a short namespace such as \"wtc:\".");
		return false;
	}
	if (strpbrk(s, "{}*?[]\\") != NULL)
	{
		GUC_check_errdetail("The key prefix must not contain { } * ? [ ] or \\.");
		GUC_check_errhint("Braces are reserved for Redis Cluster hash tags in row keys.");
		return false;
	}
	if (strlen(s) > 64)
	{
		GUC_check_errdetail("The key prefix must be at most 64 bytes long.");
		return false;
	}
	return true;
}

void
wtcache_define_settings(void)
{
	DefineCustomStringVariable("wtcache.redis_url",
							   "Redis server that wtcache keeps in step, as redis://[user:password@]host:port[/db].",
							   "Visible to superusers only: it may hold a password.",
							   &wtcache_redis_url,
							   "redis://127.0.0.1:6379",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_redis_url, NULL, NULL);

	DefineCustomStringVariable("wtcache.redis_sentinels",
							   "Redis Sentinels to ask for the master, as a list of host:port.",
							   "When set, the host and port of wtcache.redis_url are not used; its credentials and database are.",
							   &wtcache_redis_sentinels,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_host_list, NULL, NULL);

	DefineCustomStringVariable("wtcache.redis_master_name",
							   "Name of the master that wtcache.redis_sentinels monitor.",
							   NULL,
							   &wtcache_redis_master_name,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("wtcache.redis_cluster_nodes",
							   "Redis Cluster nodes to learn the slot map from, as a list of host:port.",
							   "When set, the host and port of wtcache.redis_url are not used; its credentials are.",
							   &wtcache_redis_cluster_nodes,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_host_list, NULL, NULL);

	DefineCustomStringVariable("wtcache.key_prefix",
							   "Prefix of every Redis key wtcache writes.",
							   NULL,
							   &wtcache_key_prefix,
							   "wtc:",
							   PGC_SIGHUP,
							   0,
							   check_key_prefix, NULL, NULL);

	DefineCustomIntVariable("wtcache.batch_size",
							"Changed keys the worker claims and pipelines to Redis at a time.",
							NULL,
							&wtcache_batch_size,
							10000, 100, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.connect_timeout",
							"Time limit for connecting to Redis.",
							NULL,
							&wtcache_connect_timeout_ms,
							1000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.command_timeout",
							"Time limit for each Redis reply.",
							NULL,
							&wtcache_command_timeout_ms,
							5000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.retry_interval",
							"First wait before retrying Redis after a failure; doubles up to wtcache.retry_max, with jitter.",
							NULL,
							&wtcache_retry_interval_ms,
							200, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.retry_max",
							"Longest wait between retries of Redis.",
							NULL,
							&wtcache_retry_max_ms,
							10000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.poll_interval",
							"Longest time the worker sleeps without a wake-up before looking at the queue (a backstop: commits wake it).",
							NULL,
							&wtcache_poll_interval_ms,
							5000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.tombstone_ttl",
							"How long the versioned tombstone of a deleted row stays in Redis.",
							NULL,
							&wtcache_tombstone_ttl_s,
							86400, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomRealVariable("wtcache.ttl_jitter",
							 "Fraction by which a row's TTL is randomly spread, so keys written together do not expire together.",
							 NULL,
							 &wtcache_ttl_jitter,
							 0.1, 0.0, 1.0,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.max_databases",
							"Most databases that can have a wtcache worker at once.",
							NULL,
							&wtcache_max_databases,
							16, 1, 1024,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("wtcache.publish_events",
							 "Whether every change applied to Redis is also published on the channel <key_prefix>events.",
							 NULL,
							 &wtcache_publish_events,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.pending_slots",
							"Counters of the shared filter of keys whose changes are on their way to Redis (a power of two).",
							"More counters mean fewer reads sent to the table by a colliding key; each takes 4 bytes of shared memory.",
							&wtcache_pending_slots,
							1048576, 1024, 1 << 28,
							PGC_POSTMASTER, 0,
							check_power_of_two, NULL, NULL);

	DefineCustomIntVariable("wtcache.read_timeout",
							"Time limit for each Redis reply to a cached read.",
							NULL,
							&wtcache_read_timeout_ms,
							250, 1, 600000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.read_retry_interval",
							"After Redis failed a read, how long reads go to the table before Redis is tried again.",
							NULL,
							&wtcache_read_retry_interval_ms,
							1000, 0, 3600000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("wtcache.read_fallback",
							 "Whether cached reads fall back to the table when Redis is unavailable (otherwise they raise an error).",
							 NULL,
							 &wtcache_read_fallback,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.fill_lease",
							"How long a reader that missed may take to fill the key before others stop waiting for it.",
							NULL,
							&wtcache_fill_lease_ms,
							2000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.fill_wait",
							"How long a reader waits for another reader's fill of the same key before reading the table itself.",
							NULL,
							&wtcache_fill_wait_ms,
							50, 0, 600000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("wtcache.enabled",
							 "Whether the workers deliver captured changes to Redis.",
							 "Off pauses delivery: changes are still captured and queued, cached reads stay correct (keys with changes queued are read from the tables), and delivery resumes where it stopped.",
							 &wtcache_enabled,
							 true,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.backlog_warning",
							"Changes waiting for Redis above which the worker logs a warning (0: never).",
							"Logged once when the backlog grows past it, and once when it is back under half of it.",
							&wtcache_backlog_warning,
							1000000, 0, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.query_ttl",
							"How long a cached query result lives when wtcache.query() is given no ttl.",
							"Results are invalidated by changes; the TTL only bounds how long unused ones take space.",
							&wtcache_query_ttl_s,
							3600, 1, INT_MAX,
							PGC_USERSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.query_max_size",
							"Largest query result (as JSON) that wtcache.query() caches; larger ones are returned but not cached.",
							NULL,
							&wtcache_query_max_kb,
							1024, 1, INT_MAX / 1024,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("wtcache.query_safe_functions",
							   "STABLE functions that wtcache.query() may cache results of: schema.name or schema.name(argtypes), comma-separated.",
							   "List a function only if its result depends on nothing but its arguments and tables the query reads or the tags it names: not on settings, the clock, the client or privileges.",
							   &wtcache_query_safe_functions,
							   "",
							   PGC_SUSET, 0,
							   wtcache_query_safe_functions_check, NULL, NULL);

	DefineCustomIntVariable("wtcache.debug_fill_delay",
							"Testing aid: pause between a cached read's table read and its fill.",
							NULL,
							&wtcache_debug_fill_delay_ms,
							0, 0, 600000,
							PGC_SUSET, GUC_UNIT_MS | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("wtcache");
}
