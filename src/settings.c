/*-------------------------------------------------------------------------
 * settings.c
 *		The wtcache.* settings, and parsing of wtcache.redis_url.
 *
 * Only wtcache.max_databases sizes shared memory and needs a restart; the
 * rest are PGC_SIGHUP and take effect at the next pg_reload_conf(): the
 * worker re-reads them and reconnects when the Redis address changed.
 * wtcache.redis_url may carry a password, so it is GUC_SUPERUSER_ONLY and
 * is never logged: messages name host:port only.  GUC_SUPERUSER_ONLY still
 * shows it to members of pg_read_all_settings (pg_monitor), so the password
 * can be kept out of every setting instead: wtcache.redis_password_file
 * (and wtcache.redis_sentinel_password_file) name a file that only the
 * server's operating system user can read, checked as PostgreSQL checks
 * ssl_key_file.  The files are read when a connection is made and after
 * every configuration reload; their contents are never logged.
 *
 * The log hook below masks the credentials of any Redis URL in every log
 * line, and hides the STATEMENT: line of a statement that carries one.
 *
 * TLS (a rediss:// URL) is configured by the wtcache.redis_tls_* settings,
 * gathered here into the RedisTarget that every connection is made from;
 * tls.c loads the files when it connects, the client key checked as the
 * password files are.
 *-------------------------------------------------------------------------
 */
#include "wtcache.h"
#include "push.h"
#include "query.h"
#include "settings.h"
#include "keyspace.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hashfn.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"

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
int			wtcache_publish_events = WTC_PUBLISH_ON;
bool		wtcache_enabled = true;
int			wtcache_backlog_warning = 1000000;
int			wtcache_audit_rate = 0;
int			wtcache_bulk_rate = 0;
int			wtcache_max_value_kb = 512 * 1024;
int64		wtcache_max_value_bytes = (int64) 512 * 1024 * 1024 - 64 * 1024;
int			wtcache_max_tags_per_call = 100;
int			wtcache_max_tag_length = 256;
int			wtcache_redis_wait_replicas = 0;
int			wtcache_redis_wait_timeout_ms = 1000;
int			wtcache_redis_wait_timeout_action = WTC_WAIT_RETRY;

static char *redis_password_file = NULL;
static char *redis_user = NULL;
static char *redis_sentinel_password_file = NULL;
static char *redis_sentinel_user = NULL;
static char *redis_tls_ca_file = NULL;
static char *redis_tls_ca_dir = NULL;
static char *redis_tls_cert_file = NULL;
static char *redis_tls_key_file = NULL;
static char *redis_tls_server_name = NULL;
static int	redis_tls_verify = WTC_TLS_VERIFY_FULL;
static int	redis_tls_min_version = 0x0303;	/* TLS1_2_VERSION */

/* on and off in every spelling a boolean setting takes, as before 1.3 */
static const struct config_enum_entry publish_events_options[] = {
	{"off", WTC_PUBLISH_OFF, false},
	{"on", WTC_PUBLISH_ON, false},
	{"always", WTC_PUBLISH_ALWAYS, false},
	{"false", WTC_PUBLISH_OFF, true},
	{"true", WTC_PUBLISH_ON, true},
	{"no", WTC_PUBLISH_OFF, true},
	{"yes", WTC_PUBLISH_ON, true},
	{"0", WTC_PUBLISH_OFF, true},
	{"1", WTC_PUBLISH_ON, true},
	{NULL, 0, false}
};

static const struct config_enum_entry wait_timeout_action_options[] = {
	{"retry", WTC_WAIT_RETRY, false},
	{"accept", WTC_WAIT_ACCEPT, false},
	{NULL, 0, false}
};

static const struct config_enum_entry tls_verify_options[] = {
	{"full", WTC_TLS_VERIFY_FULL, false},
	{"ca", WTC_TLS_VERIFY_CA, false},
	{"none", WTC_TLS_VERIFY_NONE, false},
	{NULL, 0, false}
};

/* the values are OpenSSL's TLS1_2_VERSION and TLS1_3_VERSION */
static const struct config_enum_entry tls_version_options[] = {
	{"TLSv1.2", 0x0303, false},
	{"TLSv1.3", 0x0304, false},
	{NULL, 0, false}
};

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

/*
 * WAIT's timeout 0 means for ever: the worker would hang in it while a
 * replica is away, deaf to reloads and to its own delivery.
 */
static bool
check_wait_timeout(int *newval, void **extra, GucSource source)
{
	if (*newval == 0)
	{
		GUC_check_errdetail("Redis's WAIT with a timeout of 0 blocks until enough replicas answer, however long that takes.");
		GUC_check_errhint("Give a time limit, such as 1000 (ms); wtcache.redis_wait_timeout_action says what happens when it passes.");
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
 * Parse redis[s]://[user:password@]host[:port][/db].  On failure *problem says
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

	if (url != NULL && strncmp(url, "rediss://", 9) == 0)
	{
		addr->tls = true;
		p = url + 9;
	}
	else if (url != NULL && strncmp(url, "redis://", 8) == 0)
		p = url + 8;
	else
	{
		*problem = "The URL must start with \"redis://\", or \"rediss://\" for TLS.";
		return false;
	}
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

/* ---------------------------------------------------------------------
 * Passwords kept in files
 * ---------------------------------------------------------------------
 */

/* a password file larger than this cannot hold a usable first line */
#define PASSWORD_FILE_READ_MAX 1024

/*
 * Settings reloads seen by this process, and the reload whose files the
 * settings hash last read.  The assign hooks of the password file settings
 * bump the counter: guc.c runs them at every reload that finds the setting
 * in a configuration file, changed or not, so a new password in the same
 * file changes the hash and makes the worker reconnect with it.
 */
static uint64 secrets_epoch = 1;
static uint64 secrets_hashed_epoch = 0;
static uint32 secrets_hash = 0;

/* what the last refusal of a password file logged, so it is logged once */
static char secret_problem_logged[MAXPGPATH + 256];

static void
assign_password_file(const char *newval, void *extra)
{
	secrets_epoch++;
}

/*
 * Why a file holding a secret (a password, a TLS client key) may not be
 * used, or NULL if it may: the rule PostgreSQL applies to ssl_key_file.  A
 * regular file owned by the server's user with no group or other access
 * (0600 or less), or owned by root with at most group read (0640).  Given
 * the stat of the file opened, not of its name.  The text follows the
 * file's name in a message.
 */
const char *
wtcache_secret_file_problem(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "is not a regular file";
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return "must be owned by the operating system user the server runs as, or by root";
	if ((st->st_uid == geteuid() && (st->st_mode & (S_IRWXG | S_IRWXO)) != 0) ||
		(st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0))
		return "has group or world access: it must have permissions u=rw (0600) or less if owned by the server's user, or u=rw,g=r (0640) or less if owned by root";
	return NULL;
}

/*
 * The first line of the file named by setting: the password.  The file is
 * refused as PostgreSQL refuses an ssl_key_file others could read: it must
 * be a regular file owned by the server's user with no group or other
 * access (0600 or less), or owned by root with at most group read (0640).
 * The checks are made on the file opened, not on its name.  On failure
 * *problem (static storage) says why, never what the file holds.
 */
static bool
read_password_file(const char *setting, const char *path, char *password,
				   size_t passlen, const char **problem)
{
	static char msg[MAXPGPATH + 256];
	char		buf[PASSWORD_FILE_READ_MAX];
	struct stat st;
	size_t		n = 0;
	size_t		len;
	const char *eol;
	const char *unusable;
	int			fd;
	bool		ok = false;

	password[0] = '\0';
	*problem = msg;
	fd = open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
	{
		snprintf(msg, sizeof(msg), "could not open password file \"%s\" (%s): %s",
				 path, setting, strerror(errno));
		return false;
	}
	if (fstat(fd, &st) != 0)
		snprintf(msg, sizeof(msg), "could not stat password file \"%s\" (%s): %s",
				 path, setting, strerror(errno));
	else if ((unusable = wtcache_secret_file_problem(&st)) != NULL)
		snprintf(msg, sizeof(msg), "password file \"%s\" (%s) %s", path, setting, unusable);
	else
	{
		for (;;)
		{
			ssize_t		got = read(fd, buf + n, sizeof(buf) - n);

			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
			{
				snprintf(msg, sizeof(msg), "could not read password file \"%s\" (%s): %s",
						 path, setting, strerror(errno));
				break;
			}
			n += got;
			if (got == 0 || n == sizeof(buf) || memchr(buf, '\n', n) != NULL)
			{
				ok = true;
				break;
			}
		}
	}
	close(fd);
	if (!ok)
		return false;

	ok = false;
	eol = memchr(buf, '\n', n);
	len = eol ? (size_t) (eol - buf) : n;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (eol == NULL && n == sizeof(buf))
		snprintf(msg, sizeof(msg), "the first line of password file \"%s\" (%s) is too long",
				 path, setting);
	else if (len == 0)
		snprintf(msg, sizeof(msg), "password file \"%s\" (%s) is empty: its first line must be the password",
				 path, setting);
	else if (len >= passlen)
		snprintf(msg, sizeof(msg), "the password in \"%s\" (%s) is longer than %d bytes",
				 path, setting, (int) passlen - 1);
	else if (memchr(buf, '\0', len) != NULL)
		snprintf(msg, sizeof(msg), "the password in \"%s\" (%s) contains a zero byte",
				 path, setting);
	else
	{
		memcpy(password, buf, len);
		password[len] = '\0';
		*problem = NULL;
		ok = true;
	}
	explicit_bzero(buf, sizeof(buf));
	return ok;
}

/*
 * The passwords the files set hold now ("" where no file is set).  The
 * Sentinels' only when asked for: a Sentinel file nobody uses must not
 * stop a connection.
 */
static bool
read_password_files(char *redis_pw, char *sentinel_pw, bool want_sentinel,
					const char **problem)
{
	redis_pw[0] = '\0';
	sentinel_pw[0] = '\0';
	if (redis_password_file != NULL && redis_password_file[0] != '\0' &&
		!read_password_file("wtcache.redis_password_file", redis_password_file,
							redis_pw, sizeof(((RedisAddress *) NULL)->password), problem))
		return false;
	if (want_sentinel && redis_sentinel_password_file != NULL &&
		redis_sentinel_password_file[0] != '\0' &&
		!read_password_file("wtcache.redis_sentinel_password_file", redis_sentinel_password_file,
							sentinel_pw, sizeof(((RedisTarget *) NULL)->sentinel_password), problem))
	{
		explicit_bzero(redis_pw, sizeof(((RedisAddress *) NULL)->password));
		return false;
	}
	return true;
}

/*
 * A refused password file is logged once per process and problem: the
 * worker retries with backoff, and every reading backend may try too.
 */
static void
report_password_file_problem(const char *problem)
{
	if (strcmp(secret_problem_logged, problem) == 0)
		return;
	strlcpy(secret_problem_logged, problem, sizeof(secret_problem_logged));
	ereport(LOG,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("wtcache: %s", problem),
			 errdetail("wtcache does not connect to Redis until the file can be used."),
			 errhint("The file must belong to the operating system user the server runs as and be readable by it alone (chmod 0600), with the password on its first line; then run SELECT pg_reload_conf().")));
}

/* ---------------------------------------------------------------------
 * TLS
 * ---------------------------------------------------------------------
 */

/* a TLS file setting changed, or a reload found it: look at the files again */
static void
assign_tls_file(const char *newval, void *extra)
{
	secrets_epoch++;
}

static bool
check_tls_path(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && strlen(*newval) >= MAXPGPATH)
	{
		GUC_check_errdetail("A path must be shorter than %d bytes.", MAXPGPATH);
		return false;
	}
	return true;
}

static bool
check_tls_server_name(char **newval, void **extra, GucSource source)
{
	const char *s = *newval ? *newval : "";

	if (strlen(s) >= sizeof(((RedisTls *) NULL)->server_name))
	{
		GUC_check_errdetail("The server name must be at most %d bytes long.",
							(int) sizeof(((RedisTls *) NULL)->server_name) - 1);
		return false;
	}
	for (; *s; s++)
		if (isspace((unsigned char) *s) || iscntrl((unsigned char) *s) || *s == '/' || *s == '@')
		{
			GUC_check_errdetail("A server name is a DNS name or an IP address, without spaces, \"/\" or \"@\".");
			GUC_check_errhint("Use the name the Redis server's certificate has, for example redis.internal.");
			return false;
		}
	return true;
}

/*
 * The TLS part of the target, for a rediss:// URL.  The files are not
 * opened here: tls.c does, at every connection, so what they hold now is
 * what is used.  Turning verification off is logged by the worker once,
 * as a WARNING: the server is then whoever answers at its address.
 */
static bool
tls_target(RedisTls *tls, const char **problem)
{
	static bool unverified_warned = false;

	tls->enabled = true;
	tls->verify = (WtcTlsVerify) redis_tls_verify;
	tls->min_version = redis_tls_min_version;
	strlcpy(tls->ca_file, redis_tls_ca_file ? redis_tls_ca_file : "", sizeof(tls->ca_file));
	strlcpy(tls->ca_dir, redis_tls_ca_dir ? redis_tls_ca_dir : "", sizeof(tls->ca_dir));
	strlcpy(tls->cert_file, redis_tls_cert_file ? redis_tls_cert_file : "", sizeof(tls->cert_file));
	strlcpy(tls->key_file, redis_tls_key_file ? redis_tls_key_file : "", sizeof(tls->key_file));
	strlcpy(tls->server_name, redis_tls_server_name ? redis_tls_server_name : "",
			sizeof(tls->server_name));
	if ((tls->cert_file[0] == '\0') != (tls->key_file[0] == '\0'))
	{
		*problem = "wtcache.redis_tls_cert_file and wtcache.redis_tls_key_file must be set together: a client certificate needs its key.";
		return false;
	}
	if (tls->verify != WTC_TLS_VERIFY_NONE)
		unverified_warned = false;
	else if (!unverified_warned && MyBackendType == B_BG_WORKER)
	{
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("wtcache: wtcache.redis_tls_verify is none: Redis servers' certificates are not verified"),
				 errdetail("The connections are encrypted, but whoever answers at a Redis address, or on the path to it, receives the Redis password and every row sent."),
				 errhint("Set wtcache.redis_tls_ca_file to the CA that signed the servers' certificates and wtcache.redis_tls_verify to full.")));
		unverified_warned = true;
	}
	return true;
}

/* Is an ACL user name usable?  Redis user names have no spaces. */
static bool
check_acl_user(char **newval, void **extra, GucSource source)
{
	const char *s = *newval ? *newval : "";

	if (strlen(s) >= sizeof(((RedisAddress *) NULL)->user))
	{
		GUC_check_errdetail("The user name must be at most %d bytes long.",
							(int) sizeof(((RedisAddress *) NULL)->user) - 1);
		return false;
	}
	for (; *s; s++)
		if (isspace((unsigned char) *s) || iscntrl((unsigned char) *s))
		{
			GUC_check_errdetail("A Redis user name cannot contain spaces or control characters.");
			return false;
		}
	return true;
}

/*
 * Where Redis is, from the settings: wtcache.redis_cluster_nodes makes it a
 * Cluster, wtcache.redis_sentinels a Sentinel-managed master; either way
 * wtcache.redis_url still gives the database (which a Cluster only has as
 * 0).  The password is wtcache.redis_password_file's when it is set, else
 * the URL's; the ACL user wtcache.redis_user's when it is set, else the
 * URL's.  The password files are read again on every call: a connection
 * always uses what they hold now.
 */
bool
wtcache_redis_target(RedisTarget *target, const char **problem)
{
	RedisHostPort sentinels[WTC_MAX_SEEDS];
	int			nsentinels;
	char		redis_pw[sizeof(target->addr.password)];
	char		sentinel_pw[sizeof(target->sentinel_password)];

	memset(target, 0, sizeof(*target));
	if (!wtcache_parse_redis_url(wtcache_redis_url, &target->addr, problem))
		return false;
	if (target->addr.tls && !tls_target(&target->tls, problem))
		return false;
	if (!parse_host_list(wtcache_redis_cluster_nodes, target->seeds, &target->nseeds, problem) ||
		!parse_host_list(wtcache_redis_sentinels, sentinels, &nsentinels, problem))
		return false;

	if (!read_password_files(redis_pw, sentinel_pw, nsentinels > 0 && target->nseeds == 0, problem))
	{
		report_password_file_problem(*problem);
		return false;
	}
	secret_problem_logged[0] = '\0';
	if (redis_pw[0] != '\0')
		strlcpy(target->addr.password, redis_pw, sizeof(target->addr.password));
	if (sentinel_pw[0] != '\0')
		strlcpy(target->sentinel_password, sentinel_pw, sizeof(target->sentinel_password));
	explicit_bzero(redis_pw, sizeof(redis_pw));
	explicit_bzero(sentinel_pw, sizeof(sentinel_pw));
	if (redis_user != NULL && redis_user[0] != '\0')
	{
		if (target->addr.password[0] == '\0')
		{
			*problem = "wtcache.redis_user is set but there is no password: set wtcache.redis_password_file.";
			return false;
		}
		strlcpy(target->addr.user, redis_user, sizeof(target->addr.user));
	}

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
		if (redis_sentinel_user != NULL && redis_sentinel_user[0] != '\0')
		{
			if (target->sentinel_password[0] == '\0')
			{
				*problem = "wtcache.redis_sentinel_user is set but there is no password: set wtcache.redis_sentinel_password_file.";
				return false;
			}
			strlcpy(target->sentinel_user, redis_sentinel_user, sizeof(target->sentinel_user));
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

/*
 * Changes when any setting that says where Redis is, or how to log in,
 * changes, including what the password files hold: those are read again
 * after each reload (not on every call: readers call this on every read).
 */
uint32
wtcache_redis_settings_hash(void)
{
	const char *parts[13] = {wtcache_redis_url, wtcache_redis_sentinels,
		wtcache_redis_master_name, wtcache_redis_cluster_nodes,
		redis_password_file, redis_user,
		redis_sentinel_password_file, redis_sentinel_user,
		redis_tls_ca_file, redis_tls_ca_dir, redis_tls_cert_file,
	redis_tls_key_file, redis_tls_server_name};
	const char *tls_files[4] = {redis_tls_ca_file, redis_tls_ca_dir,
	redis_tls_cert_file, redis_tls_key_file};
	uint32		h = 0;

	for (int i = 0; i < lengthof(parts); i++)
		h = hash_combine(h, parts[i] ? hash_bytes((const unsigned char *) parts[i], strlen(parts[i])) : 0);
	h = hash_combine(h, hash_uint32((uint32) redis_tls_verify));
	h = hash_combine(h, hash_uint32((uint32) redis_tls_min_version));

	if (secrets_hashed_epoch != secrets_epoch)
	{
		char		redis_pw[sizeof(((RedisAddress *) NULL)->password)];
		char		sentinel_pw[sizeof(((RedisTarget *) NULL)->sentinel_password)];
		const char *problem = NULL;

		if (read_password_files(redis_pw, sentinel_pw, true, &problem))
			secrets_hash = hash_combine(hash_bytes((const unsigned char *) redis_pw, strlen(redis_pw)),
										hash_bytes((const unsigned char *) sentinel_pw, strlen(sentinel_pw)));
		else
			secrets_hash = hash_bytes((const unsigned char *) problem, strlen(problem)) ^ 0x5bd1e995;
		explicit_bzero(redis_pw, sizeof(redis_pw));
		explicit_bzero(sentinel_pw, sizeof(sentinel_pw));

		/*
		 * A renewed certificate, key or CA bundle is a new file (or the same
		 * one rewritten): which file, and when it was written, are enough to
		 * reconnect with it at the reload that follows.  Nothing of a key's
		 * contents goes into the hash.
		 */
		for (int i = 0; i < lengthof(tls_files); i++)
		{
			struct stat st;

			if (tls_files[i] == NULL || tls_files[i][0] == '\0' || stat(tls_files[i], &st) != 0)
				continue;
			secrets_hash = hash_combine(secrets_hash, hash_bytes((const unsigned char *) &st.st_ino, sizeof(st.st_ino)));
			secrets_hash = hash_combine(secrets_hash, hash_bytes((const unsigned char *) &st.st_size, sizeof(st.st_size)));
			secrets_hash = hash_combine(secrets_hash, hash_bytes((const unsigned char *) &st.st_mtim, sizeof(st.st_mtim)));
		}
		secrets_hashed_epoch = secrets_epoch;
	}
	return hash_combine(h, secrets_hash);
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
	if (target->tls.enabled)
	{
		size_t		len = strlen(buf);

		snprintf(buf + len, buflen - len, " (%s)", wtcache_tls_label(&target->tls));
	}
}

/* "TLS", or "TLS, unverified": how status and logs say a connection is made */
const char *
wtcache_tls_label(const RedisTls *tls)
{
	return tls->verify == WTC_TLS_VERIFY_NONE ? "TLS, unverified" : "TLS";
}

static emit_log_hook_type prev_emit_log_hook = NULL;
static bool log_redaction_installed = false;

/* The first occurrence of word in s, ignoring case, or NULL. */
static const char *
find_word_ci(const char *s, const char *word)
{
	size_t		len = strlen(word);
	char		first = pg_tolower((unsigned char) word[0]);

	/* the first letter alone rules out most places of a long statement */
	for (; *s; s++)
		if (pg_tolower((unsigned char) *s) == first && pg_strncasecmp(s, word, len) == 0)
			return s;
	return NULL;
}

/* Just after the "://" of the first redis://, rediss://... in s, or NULL. */
static const char *
find_redis_scheme(const char *s)
{
	for (const char *p = strstr(s, "://"); p != NULL; p = strstr(p + 3, "://"))
	{
		const char *b = p;

		while (b > s && (isalnum((unsigned char) b[-1]) || b[-1] == '+' ||
						 b[-1] == '-' || b[-1] == '.'))
			b--;
		if (p - b >= 5 && pg_strncasecmp(b, "redis", 5) == 0)
			return p + 3;
	}
	return NULL;
}

/*
 * Where credentials may start in a log text, or NULL if it has none: just
 * after the scheme of a Redis URL, or, for a value given to
 * wtcache.redis_url without a scheme (a refused one), just after the
 * setting's name.  What is masked runs from there to the last '@' of the
 * text: a password may hold '@', quotes (doubled in SQL) or spaces, so
 * nothing short of the last '@' is known to end it.  Masking too much of a
 * log line is harmless; too little is a leak.
 */
static const char *
credentials_start(const char *s)
{
	const char *scheme = find_redis_scheme(s);
	const char *name = find_word_ci(s, "redis_url");
	const char *start = scheme;

	if (name != NULL)
	{
		const char *after = name + strlen("redis_url");
		const char *at = strchr(after, '@');

		/*
		 * The value after the name starts at the scheme that follows, when
		 * no '@' comes before it; otherwise right after the name.
		 */
		if (scheme == NULL || scheme < after || (at != NULL && at < scheme))
			start = (scheme != NULL && scheme < after) ? scheme : after;
	}
	if (start == NULL || strchr(start, '@') == NULL)
		return NULL;
	return start;
}

/* s with the credentials of Redis URLs masked; s itself if it has none. */
static char *
redact_text(char *s)
{
	const char *start;
	const char *at;
	StringInfoData buf;

	if (s == NULL || (start = credentials_start(s)) == NULL)
		return s;
	at = strrchr(start, '@');
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, s, start - s);
	appendStringInfoString(&buf, "***");
	appendStringInfoString(&buf, at);
	return buf.data;
}

/*
 * No log line shows the password of a Redis URL: the postmaster logs
 * 'parameter "wtcache.redis_url" changed to "<the URL>"' on reload,
 * log_statement logs 'statement: ALTER SYSTEM SET wtcache.redis_url = ...',
 * and an error in such a statement (a refused URL, a lack of privilege)
 * is followed by a STATEMENT: line.  Every text of the message is masked;
 * the STATEMENT: line, which elog.c prints from debug_query_string that a
 * hook cannot rewrite, is left out (hide_stmt, as errhidestmt() does).
 * Runs in every process (the hook is set in the postmaster before it
 * forks), before any log destination, csvlog and jsonlog included.
 */
static void
redact_redis_credentials(ErrorData *edata)
{
	edata->message = redact_text(edata->message);
	edata->detail = redact_text(edata->detail);
	edata->detail_log = redact_text(edata->detail_log);
	edata->hint = redact_text(edata->hint);
	edata->context = redact_text(edata->context);
	edata->internalquery = redact_text(edata->internalquery);
	if (!edata->hide_stmt && debug_query_string != NULL &&
		credentials_start(debug_query_string) != NULL)
		edata->hide_stmt = true;
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Once per process, whether the library is preloaded or loaded later. */
void
wtcache_install_log_redaction(void)
{
	if (log_redaction_installed)
		return;
	log_redaction_installed = true;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = redact_redis_credentials;
}

/*
 * SHOW and current_setting() of wtcache.redis_url, with a password masked.
 * GUC_SUPERUSER_ONLY still lets members of pg_read_all_settings (and so of
 * pg_monitor) read a setting, and pg_settings shows reset_val and boot_val
 * without a show hook; so the setting is also GUC_NO_SHOW_ALL, left out of
 * pg_settings and SHOW ALL, and this is all anyone sees of it from SQL.
 */
static const char *
show_redis_url(void)
{
	static char *shown = NULL;
	const char *url = wtcache_redis_url ? wtcache_redis_url : "";
	const char *scheme_end = strstr(url, "://");
	const char *at = strrchr(url, '@');
	const char *colon;

	if (shown != NULL)
		pfree(shown);
	if (scheme_end == NULL || at == NULL || at < scheme_end)
	{
		shown = MemoryContextStrdup(TopMemoryContext, url);
		return shown;
	}
	/* keep the user name, if any: user:***@host, or ***@host */
	colon = memchr(scheme_end + 3, ':', at - (scheme_end + 3));
	shown = MemoryContextStrdup(TopMemoryContext,
								psprintf("%.*s***%s",
										 (int) ((colon ? colon + 1 : scheme_end + 3) - url), url, at));
	return shown;
}

/* less room for the other arguments of the script call that carries it */
static void
assign_max_value_size(int newval, void *extra)
{
	wtcache_max_value_bytes = (int64) newval * 1024 - 64 * 1024;
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
		GUC_check_errhint("Use redis://host:port[/db], for example redis://127.0.0.1:6379/0, or rediss:// for TLS, and keep the password in wtcache.redis_password_file.");
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

/*
 * The prefix may be empty (1.3): tables with key templates then have the
 * application's own key names (user:42), and every other key of wtcache
 * starts with "{" (README, What lands in Redis).
 */
static bool
check_key_prefix(char **newval, void **extra, GucSource source)
{
	const char *s = *newval;

	if (s == NULL)
		return false;
	if (strpbrk(s, WTC_KEY_PREFIX_FORBIDDEN) != NULL)
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

/* Where Redis is and how to log in: the servers, Sentinels and Cluster nodes. */
static void
define_server_settings(void)
{
	DefineCustomStringVariable("wtcache.redis_url",
							   "Redis server that wtcache keeps in step, as redis://[user:password@]host:port[/db] (rediss:// for TLS).",
							   "SHOW masks a password in it and pg_settings does not list it; keep the password in wtcache.redis_password_file all the same.",
							   &wtcache_redis_url,
							   "redis://127.0.0.1:6379",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   check_redis_url, NULL, show_redis_url);

	DefineCustomStringVariable("wtcache.redis_password_file",
							   "File whose first line is the Redis password; when set, it replaces a password in wtcache.redis_url.",
							   "It must be owned by the server's operating system user with permissions 0600 or less (or by root, 0640 or less), as ssl_key_file; it is read again at every reload and connection.",
							   &redis_password_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, assign_password_file, NULL);

	DefineCustomStringVariable("wtcache.redis_user",
							   "Redis ACL user that wtcache logs in as with the password of wtcache.redis_password_file; when set, it replaces a user in wtcache.redis_url.",
							   NULL,
							   &redis_user,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_acl_user, NULL, NULL);

	DefineCustomStringVariable("wtcache.redis_sentinel_password_file",
							   "File whose first line is the password the Redis Sentinels require (requirepass or an ACL user's).",
							   "Checked and read like wtcache.redis_password_file; sent to each Sentinel before asking it for the master.",
							   &redis_sentinel_password_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, assign_password_file, NULL);

	DefineCustomStringVariable("wtcache.redis_sentinel_user",
							   "Sentinel ACL user that wtcache logs in as with the password of wtcache.redis_sentinel_password_file.",
							   NULL,
							   &redis_sentinel_user,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_acl_user, NULL, NULL);


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
}

/* TLS to every server, Sentinel and Cluster node (tls.c). */
static void
define_tls_settings(void)
{
	DefineCustomStringVariable("wtcache.redis_tls_ca_file",
							   "File of CA certificates (PEM) that Redis servers' certificates must chain to, with a rediss:// URL.",
							   "Empty, with wtcache.redis_tls_ca_dir empty too: the operating system's trusted CAs.  Read at every connection.",
							   &redis_tls_ca_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_tls_path, assign_tls_file, NULL);

	DefineCustomStringVariable("wtcache.redis_tls_ca_dir",
							   "Directory of CA certificates, named by their hash (openssl rehash), that Redis servers' certificates may chain to.",
							   NULL,
							   &redis_tls_ca_dir,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_tls_path, assign_tls_file, NULL);

	DefineCustomStringVariable("wtcache.redis_tls_cert_file",
							   "Client certificate (PEM, with its chain) that wtcache presents to Redis servers that require one (tls-auth-clients).",
							   NULL,
							   &redis_tls_cert_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_tls_path, assign_tls_file, NULL);

	DefineCustomStringVariable("wtcache.redis_tls_key_file",
							   "Private key (PEM, unencrypted) of wtcache.redis_tls_cert_file.",
							   "It must be owned by the server's operating system user with permissions 0600 or less (or by root, 0640 or less), as ssl_key_file; it is read at every connection.",
							   &redis_tls_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   check_tls_path, assign_tls_file, NULL);

	DefineCustomStringVariable("wtcache.redis_tls_server_name",
							   "Name that Redis servers' certificates must have, and that is sent as SNI; empty: the host connected to.",
							   "Set it when the servers are reached by addresses their certificates do not name, such as the IP addresses a Cluster or Sentinel announces.",
							   &redis_tls_server_name,
							   "",
							   PGC_SIGHUP,
							   0,
							   check_tls_server_name, NULL, NULL);

	DefineCustomEnumVariable("wtcache.redis_tls_verify",
							 "What TLS verifies of Redis servers' certificates: full (a trusted CA and the name), ca (a trusted CA), none.",
							 "none encrypts without knowing who answers; the worker logs a warning.",
							 &redis_tls_verify,
							 WTC_TLS_VERIFY_FULL,
							 tls_verify_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("wtcache.redis_tls_min_protocol_version",
							 "Oldest TLS version wtcache accepts from Redis servers.",
							 NULL,
							 &redis_tls_min_version,
							 0x0303,
							 tls_version_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
}

/* What the worker writes to Redis, and how it paces itself. */
static void
define_delivery_settings(void)
{
	DefineCustomStringVariable("wtcache.key_prefix",
							   "Prefix of every Redis key wtcache writes.",
							   NULL,
							   &wtcache_key_prefix,
							   WTC_KEY_PREFIX_DEFAULT,
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

	/*
	 * What sizes shared memory can be defined only while the library is
	 * preloaded: PostgreSQL ends the session (FATAL) otherwise.  Loaded
	 * later (capture without the worker), these keep their defaults, which
	 * nothing then uses.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("wtcache.max_databases",
								"Most databases that can have a wtcache worker at once.",
								NULL,
								&wtcache_max_databases,
								16, 1, 1024,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
		DefineCustomIntVariable("wtcache.pending_slots",
								"Counters of the shared filter of keys whose changes are on their way to Redis (a power of two).",
								"More counters mean fewer reads sent to the table by a colliding key; each takes 4 bytes of shared memory.",
								&wtcache_pending_slots,
								1048576, 1024, 1 << 28,
								PGC_POSTMASTER, 0,
								check_power_of_two, NULL, NULL);
	}

	DefineCustomEnumVariable("wtcache.publish_events",
							 "Whether every change delivered to Redis is also published on the channel <key_prefix>events.",
							 "on: when someone subscribes on the Redis wtcache writes to (in a Cluster, always); always: also with no subscriber there, for subscribers on its replicas; off: never, and subscribers see a gap in the numbers.",
							 &wtcache_publish_events,
							 WTC_PUBLISH_ON, publish_events_options,
							 PGC_SIGHUP, 0,
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

	DefineCustomIntVariable("wtcache.audit_rate",
							"Keys per second the worker of each database compares between Redis and the tables (0: off).",
							"A live consistency audit: sampled row keys are compared with their committed rows between batches, keys with changes in flight skipped, differences confirmed before they count (wtcache.status audit_* columns).",
							&wtcache_audit_rate,
							0, 0, 100000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.bulk_rate",
							"Rows per second the worker delivers for long work (warm, resync, repairs, requeues after DDL); 0: no limit.",
							"Changes of rows are delivered ahead of that work whatever the limit; the limit bounds the load the work puts on Redis.",
							&wtcache_bulk_rate,
							0, 0, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.max_value_size",
							"Largest row value wtcache writes to Redis; match Redis's proto-max-bulk-len.",
							"A row above it is not written: its key is removed, as in invalidate mode, and reads of it go to the table.  Redis drops a connection that sends a larger value.",
							&wtcache_max_value_kb,
							512 * 1024, 1024, 512 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, assign_max_value_size, NULL);
}

/* Cached reads: all but the lease per session, tuned where the reads run. */
static void
define_read_settings(void)
{
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
}

/* Cached queries and tags. */
static void
define_query_settings(void)
{
	/*
	 * What any caller of query() and invalidate() can make Redis hold is the
	 * DBA's to bound: superuser-only (or GRANT SET ON PARAMETER), capped.
	 */
	DefineCustomIntVariable("wtcache.query_ttl",
							"How long a cached query result lives when wtcache.query() is given no ttl.",
							"Results are invalidated by changes; the TTL only bounds how long unused ones take space.  At most 7 days, as the ttl argument of wtcache.query().",
							&wtcache_query_ttl_s,
							3600, 1, WTCACHE_QUERY_TTL_MAX_S,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.query_max_size",
							"Largest query result (as JSON) that wtcache.query() caches; larger ones are returned but not cached.",
							"At most 64MB.",
							&wtcache_query_max_kb,
							1024, 1, WTCACHE_QUERY_MAX_SIZE_MAX_KB,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.max_tags_per_call",
							"Most tags that one call of wtcache.invalidate() or wtcache.query() may name.",
							"Each tag can become a Redis key that lives for days.",
							&wtcache_max_tags_per_call,
							100, 1, 10000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.max_tag_length",
							"Longest tag, in bytes, that wtcache.invalidate() or wtcache.query() accepts.",
							NULL,
							&wtcache_max_tag_length,
							256, 16, 8192,
							PGC_SUSET, 0,
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
}

/* Replica acknowledgements: when a batch counts as delivered (replicas.c). */
static void
define_replica_settings(void)
{
	DefineCustomIntVariable("wtcache.redis_wait_replicas",
							"Redis replicas that must acknowledge a batch (WAIT) before it counts as delivered; 0: none, no WAIT is sent.",
							"In a Cluster, replicas of every master; with Sentinel, of the master it names.",
							&wtcache_redis_wait_replicas,
							0, 0, 64,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("wtcache.redis_wait_timeout",
							"How long a batch waits for the replicas of wtcache.redis_wait_replicas.",
							"Then wtcache.redis_wait_timeout_action applies.  Delivery waits meanwhile; a shutdown or a reload does not.",
							&wtcache_redis_wait_timeout_ms,
							1000, 0, 60000,
							PGC_SIGHUP, GUC_UNIT_MS,
							check_wait_timeout, NULL, NULL);

	DefineCustomEnumVariable("wtcache.redis_wait_timeout_action",
							 "What a batch that too few replicas acknowledged in time does: retry (stays queued and is sent again) or accept (counts as delivered; logged and counted).",
							 "retry never calls delivered what a failover could lose, and stops delivery while the replicas are away; accept keeps delivering and leaves a failover to the generation marker's resync.",
							 &wtcache_redis_wait_timeout_action,
							 WTC_WAIT_RETRY, wait_timeout_action_options,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);
}

void
wtcache_define_settings(void)
{
	/* also when loaded without shared_preload_libraries */
	wtcache_install_log_redaction();

	define_server_settings();
	define_tls_settings();
	define_delivery_settings();
	define_read_settings();
	define_query_settings();
	define_replica_settings();

	MarkGUCPrefixReserved("wtcache");
}
