/*-------------------------------------------------------------------------
 * tls.c
 *		TLS to Redis with OpenSSL, under hiredis's protocol code.
 *
 * The packaged hiredis (0.14) is built without TLS, but its command
 * formatter and reply parser work on buffers, not sockets.  So redis.c
 * keeps hiredis for the protocol and, on a rediss:// connection, moves the
 * bytes through the functions here instead of hiredis's read() and
 * write(): a TLS session on the socket hiredis connected.
 *
 * What is verified (wtcache.redis_tls_verify):
 *	full	the server's certificate chains to a trusted CA
 *			(wtcache.redis_tls_ca_file / _ca_dir, else the system's), is
 *			within its validity period, and names the host connected to, or
 *			wtcache.redis_tls_server_name (a DNS name against its DNS
 *			subjectAltNames, or its CN when it has none; an IP address
 *			against its IP subjectAltNames);
 *	ca		all of that but the name;
 *	none	nothing (the worker logs a warning, settings.c).
 * SNI carries the same name, when it is a DNS name (RFC 6066 forbids IP
 * addresses there).  A client certificate and key are presented when set;
 * the key file is refused unless only the server's user can read it, the
 * rule of PostgreSQL's ssl_key_file, and an encrypted key is refused
 * rather than prompting for a passphrase on the postmaster's terminal.
 *
 * Every socket wait is a poll() with a limit: the handshake has what is
 * left of wtcache.connect_timeout, each read or write the command timeout,
 * as hiredis's own reads and writes have on plain TCP.  The socket is
 * non-blocking, so OpenSSL never waits by itself.
 *
 * Nothing here calls ereport or palloc: OpenSSL allocates with malloc, and
 * a longjmp out of the middle of a handshake would leak or corrupt it.
 * Failures come back as one message naming the reason (OpenSSL's words,
 * e.g. "certificate has expired"); wtc_redis_error_hint() turns the
 * reason into what to do about it, for the worker's log line.
 *-------------------------------------------------------------------------
 */
#include "tls.h"
#include "redis.h"
#include "settings.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* no real key file is anywhere near this large */
#define KEY_FILE_READ_MAX (1024 * 1024)

struct WtcTls
{
	SSL_CTX    *ctx;
	WtcTlsVerify verify;
	char		server_name[256];
};

struct WtcTlsConn
{
	SSL		   *ssl;
	int			fd;
	bool		failed;			/* no close_notify on a broken session */
	char		name[256];		/* the name verified, for messages */
};

/* ---------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------
 */

static int64
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait until the socket is ready for events, for at most timeout_ms.
 * 1: ready (or in error: the next SSL call says which), 0: timed out,
 * -1: poll failed (errno).
 */
static int
wait_socket(int fd, bool for_write, int64 timeout_ms)
{
	struct pollfd pfd;
	int64		deadline = now_ms() + timeout_ms;

	pfd.fd = fd;
	pfd.events = for_write ? POLLOUT : POLLIN;
	for (;;)
	{
		int64		left = Max(deadline - now_ms(), 0);
		int			rc;

		pfd.revents = 0;
		rc = poll(&pfd, 1, (int) Min(left, INT_MAX));
		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/* OpenSSL's words for an error code, never NULL */
static const char *
openssl_reason(unsigned long e)
{
	static char buf[256];
	const char *reason = ERR_reason_error_string(e);

	if (reason != NULL)
		return reason;
	if (e == 0)
		return "unknown TLS error";
	ERR_error_string_n(e, buf, sizeof(buf));
	return buf;
}

/*
 * The message for an SSL call that failed with SSL_get_error() code
 * sslerr: what was being done, then the reason.  A certificate the
 * verification refused is named by its verification result, the precise
 * reason ("certificate has expired"), not by the handshake's generic
 * "certificate verify failed".  Empties OpenSSL's error queue.
 */
static void
tls_failure(WtcTlsConn *c, int sslerr, int sys_errno, const char *what,
			char *err, size_t errlen)
{
	unsigned long e = ERR_peek_error();
	long		vr = SSL_get_verify_result(c->ssl);

	c->failed = true;
	if (sslerr == SSL_ERROR_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
		vr != X509_V_OK)
	{
		if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
			snprintf(err, errlen, "%s: the server's certificate was refused: %s (it is not for \"%s\")",
					 what, X509_verify_cert_error_string(vr), c->name);
		else
			snprintf(err, errlen, "%s: the server's certificate was refused: %s",
					 what, X509_verify_cert_error_string(vr));
	}
	else if (sslerr == SSL_ERROR_SSL)
		snprintf(err, errlen, "%s: %s", what, openssl_reason(e));
	else if (sslerr == SSL_ERROR_ZERO_RETURN)
		snprintf(err, errlen, "%s: the server closed the TLS connection", what);
	else if (sslerr == SSL_ERROR_SYSCALL && sys_errno != 0)
		snprintf(err, errlen, "%s: %s", what, strerror(sys_errno));
	else if (sslerr == SSL_ERROR_SYSCALL)
		snprintf(err, errlen, "%s: the server closed the connection", what);
	else
		snprintf(err, errlen, "%s: TLS error %d", what, sslerr);
	ERR_clear_error();
}

/*
 * After an SSL call that could not finish, wait for what it wants.  True
 * to try again; false with err set when the call failed or time ran out.
 */
static bool
tls_retry(WtcTlsConn *c, int rc, int64 timeout_ms, const char *what,
		  char *err, size_t errlen)
{
	int			sslerr = SSL_get_error(c->ssl, rc);
	int			sys_errno = errno;
	int			ready;

	if (sslerr != SSL_ERROR_WANT_READ && sslerr != SSL_ERROR_WANT_WRITE)
	{
		tls_failure(c, sslerr, sys_errno, what, err, errlen);
		return false;
	}
	ERR_clear_error();
	ready = timeout_ms > 0 ? wait_socket(c->fd, sslerr == SSL_ERROR_WANT_WRITE, timeout_ms) : 0;
	if (ready > 0)
		return true;
	c->failed = true;
	if (ready == 0)
		snprintf(err, errlen, "%s: timed out", what);
	else
		snprintf(err, errlen, "%s: %s", what, strerror(errno));
	return false;
}

/* OpenSSL asks for a key's passphrase: there is none, and nobody to ask. */
static int
refuse_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	return -1;
}

/* Is name an IPv4 or IPv6 address (which certificates name in IP SANs)? */
static bool
is_ip_address(const char *name)
{
	unsigned char addr[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* ---------------------------------------------------------------------
 * Context: the settings' files, loaded once per WtcRedis
 * ---------------------------------------------------------------------
 */

/*
 * The client's private key, from a file only the server's user may read.
 * The file is checked as opened (not by name) and read into memory, so
 * the key checked is the key used; the copy is wiped.
 */
static bool
load_client_key(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
	struct stat st;
	const char *unusable;
	char	   *buf = NULL;
	size_t		n = 0;
	int			fd;
	BIO		   *bio;
	EVP_PKEY   *pkey;
	bool		ok = false;

	fd = open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
	{
		snprintf(err, errlen, "could not open TLS key file \"%s\" (wtcache.redis_tls_key_file): %s",
				 path, strerror(errno));
		return false;
	}
	if (fstat(fd, &st) != 0)
		snprintf(err, errlen, "could not stat TLS key file \"%s\" (wtcache.redis_tls_key_file): %s",
				 path, strerror(errno));
	else if ((unusable = wtcache_secret_file_problem(&st)) != NULL)
		snprintf(err, errlen, "TLS key file \"%s\" (wtcache.redis_tls_key_file) %s", path, unusable);
	else if (st.st_size > KEY_FILE_READ_MAX)
		snprintf(err, errlen, "TLS key file \"%s\" (wtcache.redis_tls_key_file) is larger than %d bytes",
				 path, KEY_FILE_READ_MAX);
	else if ((buf = malloc(st.st_size + 1)) == NULL)
		snprintf(err, errlen, "out of memory");
	else
	{
		for (;;)
		{
			ssize_t		got = read(fd, buf + n, st.st_size + 1 - n);

			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
			{
				snprintf(err, errlen, "could not read TLS key file \"%s\" (wtcache.redis_tls_key_file): %s",
						 path, strerror(errno));
				break;
			}
			n += got;
			if (got == 0 || n > (size_t) st.st_size)
			{
				ok = n <= (size_t) st.st_size;
				if (!ok)
					snprintf(err, errlen, "TLS key file \"%s\" (wtcache.redis_tls_key_file) grew while it was read",
							 path);
				break;
			}
		}
	}
	close(fd);
	if (!ok)
	{
		if (buf != NULL)
		{
			explicit_bzero(buf, st.st_size + 1);
			free(buf);
		}
		return false;
	}

	ERR_clear_error();
	ok = false;
	bio = BIO_new_mem_buf(buf, (int) n);
	pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, NULL) : NULL;
	if (pkey == NULL)
		snprintf(err, errlen, "could not read a private key from \"%s\" (wtcache.redis_tls_key_file): %s; it must be in PEM form, not encrypted",
				 path, openssl_reason(ERR_peek_last_error()));
	else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1)
		snprintf(err, errlen, "could not use the private key of \"%s\" (wtcache.redis_tls_key_file): %s",
				 path, openssl_reason(ERR_peek_last_error()));
	else if (SSL_CTX_check_private_key(ctx) != 1)
		snprintf(err, errlen, "the private key in \"%s\" (wtcache.redis_tls_key_file) does not match the certificate of wtcache.redis_tls_cert_file",
				 path);
	else
		ok = true;
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	explicit_bzero(buf, n);
	free(buf);
	ERR_clear_error();
	return ok;
}

/* A file or directory a setting names must exist and be readable. */
static bool
check_readable(const char *path, bool want_dir, const char *what, const char *setting,
			   char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) != 0 || access(path, R_OK) != 0)
	{
		snprintf(err, errlen, "could not read %s \"%s\" (%s): %s", what, path, setting,
				 strerror(errno));
		return false;
	}
	if (want_dir ? !S_ISDIR(st.st_mode) : S_ISDIR(st.st_mode))
	{
		snprintf(err, errlen, "%s \"%s\" (%s) is %s", what, path, setting,
				 want_dir ? "not a directory" : "a directory");
		return false;
	}
	return true;
}

/*
 * What every connection of one WtcRedis shares: the CA certificates, the
 * client certificate and key, the protocol floor.  The files are read now,
 * so a connection uses what they hold when it is made.
 */
WtcTls *
wtc_tls_new(const RedisTls *s, char *err, size_t errlen)
{
	WtcTls	   *t = calloc(1, sizeof(WtcTls));
	SSL_CTX    *ctx;

	if (t == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->verify = s->verify;
	strlcpy(t->server_name, s->server_name, sizeof(t->server_name));

	ERR_clear_error();
	ctx = t->ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
	{
		snprintf(err, errlen, "could not create a TLS context: %s", openssl_reason(ERR_peek_last_error()));
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx, s->min_version) != 1)
	{
		snprintf(err, errlen, "could not set the oldest TLS version: %s", openssl_reason(ERR_peek_last_error()));
		goto fail;
	}
	/*
	 * Partial writes: a large pipeline goes out as the socket takes it.
	 * Renegotiation and compression are for nothing here, and compression
	 * would let an observer learn row contents from sizes (CRIME).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);

	if (s->verify == WTC_TLS_VERIFY_NONE)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	else
	{
		if (s->ca_file[0] == '\0' && s->ca_dir[0] == '\0')
		{
			if (SSL_CTX_set_default_verify_paths(ctx) != 1)
			{
				snprintf(err, errlen, "could not load the system's trusted CA certificates: %s",
						 openssl_reason(ERR_peek_last_error()));
				goto fail;
			}
		}
		if (s->ca_file[0] != '\0')
		{
			if (!check_readable(s->ca_file, false, "CA file", "wtcache.redis_tls_ca_file", err, errlen))
				goto fail;
			if (SSL_CTX_load_verify_locations(ctx, s->ca_file, NULL) != 1)
			{
				snprintf(err, errlen, "could not load the CA certificates of \"%s\" (wtcache.redis_tls_ca_file): %s",
						 s->ca_file, openssl_reason(ERR_peek_last_error()));
				goto fail;
			}
		}
		if (s->ca_dir[0] != '\0')
		{
			if (!check_readable(s->ca_dir, true, "CA directory", "wtcache.redis_tls_ca_dir", err, errlen))
				goto fail;
			if (SSL_CTX_load_verify_locations(ctx, NULL, s->ca_dir) != 1)
			{
				snprintf(err, errlen, "could not use the CA directory \"%s\" (wtcache.redis_tls_ca_dir): %s",
						 s->ca_dir, openssl_reason(ERR_peek_last_error()));
				goto fail;
			}
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}

	if (s->cert_file[0] != '\0')
	{
		if (!check_readable(s->cert_file, false, "certificate file", "wtcache.redis_tls_cert_file", err, errlen))
			goto fail;
		if (SSL_CTX_use_certificate_chain_file(ctx, s->cert_file) != 1)
		{
			snprintf(err, errlen, "could not load the client certificate of \"%s\" (wtcache.redis_tls_cert_file): %s",
					 s->cert_file, openssl_reason(ERR_peek_last_error()));
			goto fail;
		}
		if (!load_client_key(ctx, s->key_file, err, errlen))
			goto fail;
	}
	ERR_clear_error();
	return t;

fail:
	ERR_clear_error();
	wtc_tls_free(t);
	return NULL;
}

void
wtc_tls_free(WtcTls *t)
{
	if (t == NULL)
		return;
	if (t->ctx)
		SSL_CTX_free(t->ctx);
	free(t);
}

/* ---------------------------------------------------------------------
 * Sessions
 * ---------------------------------------------------------------------
 */

/*
 * A TLS session on fd, a socket connected to host: the handshake, within
 * timeout_ms.  The socket is made non-blocking.  NULL with err set if the
 * handshake fails or the certificate is refused.
 */
WtcTlsConn *
wtc_tls_connect(WtcTls *t, int fd, const char *host, int timeout_ms,
				char *err, size_t errlen)
{
	WtcTlsConn *c;
	int64		deadline = now_ms() + timeout_ms;
	int			flags = fcntl(fd, F_GETFL, 0);
	bool		ip;

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
	{
		snprintf(err, errlen, "TLS handshake failed: could not make the socket non-blocking: %s",
				 strerror(errno));
		return NULL;
	}
	c = calloc(1, sizeof(WtcTlsConn));
	if (c == NULL)
	{
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->fd = fd;
	strlcpy(c->name, t->server_name[0] ? t->server_name : host, sizeof(c->name));
	ip = is_ip_address(c->name);

	ERR_clear_error();
	c->ssl = SSL_new(t->ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1 ||
		(!ip && SSL_set_tlsext_host_name(c->ssl, c->name) != 1))
	{
		snprintf(err, errlen, "TLS handshake failed: %s", openssl_reason(ERR_peek_last_error()));
		c->failed = true;
		wtc_tls_close(c);
		return NULL;
	}
	if (t->verify == WTC_TLS_VERIFY_FULL)
	{
		bool		set;

		if (ip)
			set = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->name) == 1;
		else
		{
			/* "*.example.com" matches "a.example.com", not "xa.example.com" */
			SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			set = SSL_set1_host(c->ssl, c->name) == 1;
		}
		if (!set)
		{
			snprintf(err, errlen, "TLS handshake failed: cannot verify the name \"%s\": %s",
					 c->name, openssl_reason(ERR_peek_last_error()));
			c->failed = true;
			wtc_tls_close(c);
			return NULL;
		}
	}

	for (;;)
	{
		int			rc;

		ERR_clear_error();
		errno = 0;
		rc = SSL_connect(c->ssl);
		if (rc == 1)
			break;
		if (!tls_retry(c, rc, deadline - now_ms(), "TLS handshake failed", err, errlen))
		{
			wtc_tls_close(c);
			return NULL;
		}
	}
	ERR_clear_error();
	return c;
}

/*
 * End a session.  A healthy one says so to the server (close_notify), in
 * one non-blocking try; a broken one is just dropped.  The socket is the
 * caller's to close.
 */
void
wtc_tls_close(WtcTlsConn *c)
{
	if (c == NULL)
		return;
	if (c->ssl != NULL)
	{
		ERR_clear_error();
		if (!c->failed && SSL_is_init_finished(c->ssl))
			(void) SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		ERR_clear_error();
	}
	free(c);
}

/*
 * A write failed, typically with "connection reset": the server may have
 * said why just before it closed, in an alert that is waiting to be read.
 * That happens at once in TLS 1.3 with a server that wants a client
 * certificate: the client's handshake ends before the server has judged
 * it, and the first write meets a closed connection.  If the alert is
 * there, it replaces the message; nothing is waited for.
 */
static void
read_parting_alert(WtcTlsConn *c, char *err, size_t errlen)
{
	char		buf[512];
	size_t		got;

	ERR_clear_error();
	if (SSL_read_ex(c->ssl, buf, sizeof(buf), &got) != 1 &&
		SSL_get_error(c->ssl, 0) == SSL_ERROR_SSL && ERR_peek_error() != 0)
		tls_failure(c, SSL_ERROR_SSL, 0, "TLS connection refused by the server", err, errlen);
	ERR_clear_error();
}

/* Write all of buf; each wait for the socket at most timeout_ms. */
bool
wtc_tls_write(WtcTlsConn *c, const char *buf, size_t len, int timeout_ms,
			  char *err, size_t errlen)
{
	size_t		off = 0;

	if (c->failed)
	{
		snprintf(err, errlen, "TLS write failed: the connection is broken");
		return false;
	}
	while (off < len)
	{
		size_t		written = 0;
		int			rc;

		ERR_clear_error();
		errno = 0;
		rc = SSL_write_ex(c->ssl, buf + off, len - off, &written);
		if (rc == 1)
		{
			off += written;
			continue;
		}
		if (!tls_retry(c, rc, timeout_ms, "TLS write failed", err, errlen))
		{
			read_parting_alert(c, err, errlen);
			return false;
		}
	}
	return true;
}

/*
 * Read what is there, up to len bytes, waiting at most timeout_ms for
 * something to come.  The count read (> 0), or -1 with err set.
 */
ssize_t
wtc_tls_read(WtcTlsConn *c, char *buf, size_t len, int timeout_ms,
			 char *err, size_t errlen)
{
	if (c->failed)
	{
		snprintf(err, errlen, "TLS read failed: the connection is broken");
		return -1;
	}
	for (;;)
	{
		size_t		got = 0;
		int			rc;

		ERR_clear_error();
		errno = 0;
		rc = SSL_read_ex(c->ssl, buf, len, &got);
		if (rc == 1)
			return (ssize_t) got;
		if (!tls_retry(c, rc, timeout_ms, "TLS read failed", err, errlen))
			return -1;
	}
}

/* ---------------------------------------------------------------------
 * Hints
 * ---------------------------------------------------------------------
 */

#define HINT_CA "The Redis server's certificate is not signed by a CA wtcache trusts: set wtcache.redis_tls_ca_file to the CA certificate that signed it (for a managed Redis, the bundle its provider publishes), then SELECT pg_reload_conf()."
#define HINT_NAME "The Redis server's certificate does not name the address wtcache connects to: use a name it has (see its subjectAltName), or set wtcache.redis_tls_server_name to one, then SELECT pg_reload_conf()."
#define HINT_CLIENT_CERT "The Redis server requires a client certificate (tls-auth-clients): set wtcache.redis_tls_cert_file and wtcache.redis_tls_key_file, then SELECT pg_reload_conf()."
#define HINT_CLIENT_REFUSED "The Redis server refused wtcache's client certificate: it must be signed by a CA in the server's tls-ca-cert-file, and be within its validity period."
#define HINT_NOT_TLS "The server at that address does not speak TLS: use its tls-port, or a redis:// URL if it has no TLS."
#define HINT_VERSION "The Redis server and wtcache.redis_tls_min_protocol_version have no TLS version in common."
#define HINT_FILE "Fix the file the setting names (it is read at every connection), then SELECT pg_reload_conf()."

static const struct
{
	const char *reason;
	const char *hint;
}			tls_hints[] =
{
	{"certificate has expired", "The Redis server's certificate has expired: renew it (the server's tls-cert-file), or check the clocks of both hosts."},
	{"certificate is not yet valid", "The Redis server's certificate is not valid yet: check the clocks of both hosts."},
	{"unable to get local issuer certificate", HINT_CA},
	{"unable to get issuer certificate", HINT_CA},
	{"unable to verify the first certificate", HINT_CA},
	{"self-signed certificate", HINT_CA},
	{"self signed certificate", HINT_CA},
	{"certificate signature failure", HINT_CA},
	{"hostname mismatch", HINT_NAME},
	{"IP address mismatch", HINT_NAME},
	{"certificate required", HINT_CLIENT_CERT},
	{"alert handshake failure", "The Redis server ended the handshake: it may require a client certificate (wtcache.redis_tls_cert_file), or share no cipher with wtcache."},
	{"alert unknown ca", HINT_CLIENT_REFUSED},
	{"alert bad certificate", HINT_CLIENT_REFUSED},
	{"alert certificate expired", HINT_CLIENT_REFUSED},
	{"alert certificate unknown", HINT_CLIENT_REFUSED},
	{"alert certificate revoked", HINT_CLIENT_REFUSED},
	{"wrong version number", HINT_NOT_TLS},
	{"packet length too long", HINT_NOT_TLS},
	{"record layer failure", HINT_NOT_TLS},
	{"unsupported protocol", HINT_VERSION},
	{"alert protocol version", HINT_VERSION},
	{"no protocols available", HINT_VERSION},
	{"TLS handshake failed: timed out", "The server did not complete the TLS handshake within wtcache.connect_timeout: check that the address is Redis's tls-port and that it is reachable and not overloaded."},
	{"wtcache.redis_tls_key_file", "The key file must hold the unencrypted PEM key of wtcache.redis_tls_cert_file and belong to the operating system user the server runs as, readable by it alone (chmod 0600); then SELECT pg_reload_conf()."},
	{"wtcache.redis_tls_", HINT_FILE},
};

/*
 * What to do about a failure to reach Redis, for the HINT of the log line
 * that reports it; NULL when the message is not one of TLS's.
 */
const char *
wtc_redis_error_hint(const char *err)
{
	if (err == NULL || (strstr(err, "TLS") == NULL && strstr(err, "wtcache.redis_tls_") == NULL))
		return NULL;
	for (int i = 0; i < lengthof(tls_hints); i++)
		if (strstr(err, tls_hints[i].reason) != NULL)
			return tls_hints[i].hint;
	if (strstr(err, "TLS handshake failed") != NULL)
		return "Check the TLS settings (wtcache.redis_tls_*) against the Redis server's (tls-port, tls-cert-file, tls-auth-clients).";
	return NULL;
}
