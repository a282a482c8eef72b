/* Access logs with Envoy's format strings (%START_TIME%, %REQ(X)%, %RESP(X)%, %PROTOCOL%,
 * %RESPONSE_CODE%, %RESPONSE_FLAGS%, %BYTES_RECEIVED%, %BYTES_SENT%, %DURATION%,
 * %UPSTREAM_HOST%, %UPSTREAM_CLUSTER%, %DOWNSTREAM_REMOTE_ADDRESS%, ..., and the downstream TLS
 * facts %DOWNSTREAM_PEER_URI_SAN%, %DOWNSTREAM_TLS_VERSION%, ... read from the stream info's
 * downstream_tls, "-" when that is NULL or the fact is absent).
 * A format is compiled once at translation (main thread) and is immutable afterwards, so any
 * worker can render with it. */
#ifndef MAGPIE_ACCESS_LOG_H
#define MAGPIE_ACCESS_LOG_H

#include <stddef.h>

#include "magpie/buf.h"
#include "magpie/common.h"
#include "magpie/config.h"
#include "magpie/stream_info.h"

/* Envoy's default format (used when a logger gives none). */
extern const char mp_access_log_default_format[];

/* Compiles fmt; NULL with err set on an unknown command or bad syntax. */
mp_access_log_format_t *mp_access_log_format_compile(const char *fmt, mp_err_t *err);
void mp_access_log_format_free(mp_access_log_format_t *f);

/* Renders one entry for info into out (appends; the format's own newline included). */
void mp_access_log_format_render(const mp_access_log_format_t *f, const mp_stream_info_t *info,
                                 mp_buf_t *out);

/* Renders and writes one line to the log's fd with a single write(2); worker. */
void mp_access_log_write(const mp_access_log_t *log, const mp_stream_info_t *info);

#endif
