/*-------------------------------------------------------------------------
 * tls.h
 *		TLS under wtcache's Redis connections (tls.c): what redis.c needs
 *		to put a TLS session on a connected socket and move bytes through
 *		it.  OpenSSL stays inside tls.c, as hiredis stays inside redis.c
 *		and cluster.c.
 *
 * Nothing here calls ereport: failures come back as a message in err, and
 * memory is malloc'd, so no longjmp ever crosses OpenSSL's state.
 *-------------------------------------------------------------------------
 */
#ifndef WTCACHE_TLS_H
#define WTCACHE_TLS_H

#include "wtcache.h"
#include "settings.h"

/* what every connection of one WtcRedis shares: an SSL_CTX and its settings */
typedef struct WtcTls WtcTls;

/* one TLS session on one socket */
typedef struct WtcTlsConn WtcTlsConn;

extern WtcTls *wtc_tls_new(const RedisTls *settings, char *err, size_t errlen);
extern void wtc_tls_free(WtcTls *tls);
extern WtcTlsConn *wtc_tls_connect(WtcTls *tls, int fd, const char *host,
								   int timeout_ms, char *err, size_t errlen);
extern void wtc_tls_close(WtcTlsConn *conn);
extern bool wtc_tls_write(WtcTlsConn *conn, const char *buf, size_t len,
						  int timeout_ms, char *err, size_t errlen);
extern ssize_t wtc_tls_read(WtcTlsConn *conn, char *buf, size_t len,
							int timeout_ms, char *err, size_t errlen);

#endif
