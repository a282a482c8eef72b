/* Private to the connection manager's stream files (stream.c, stream_headers.c). */
#ifndef MAGPIE_STREAM_INTERNAL_H
#define MAGPIE_STREAM_INTERNAL_H

#include "http_internal.h"

/* Header policy (stream_headers.c). */
void mp_stream__prepare_request(mp_stream_t *s);
void mp_stream__prepare_response(mp_stream_t *s, mp_http_msg_t *resp);
void mp_stream__uuid4(char out[37]);
/* Sends resp (ownership taken) with body as a complete local response and ends the stream. */
void mp_stream__send_local(mp_stream_t *s, mp_http_msg_t *resp, const char *body, size_t len);

/* Timeouts and retries (stream_retry.c). */
/* Before the first attempt: the policy, timeouts and retry headers in force for s (the x-envoy-*
 * control headers are read, then removed from the request). */
void mp_stream__retry_init(mp_stream_t *s);
/* After an attempt ended with o: true when a retry is scheduled (backoff_timer then starts the
 * next attempt); false when o stands, with URX or UO noted in the stream's flags if a retry was
 * refused.  Counts the upstream_rq_retry* stats and takes or releases the circuit breaker's
 * retry unit. */
bool mp_stream__retry_decide(mp_stream_t *s, const mp_attempt_outcome_t *o);
/* Keeps request body bytes for a retry while they fit the buffer limit. */
void mp_stream__replay_keep(mp_stream_t *s, mp_slice_t *slice, const char *data, size_t len);
/* Whether request trailers and body must be kept for a retry. */
static inline bool mp_stream__replayable(const mp_stream_t *s)
{
    return s->retry != NULL && !s->replay_lost;
}
void mp_stream__retry_free(mp_stream_t *s);
/* Starts the next attempt: picks a host and attaches an upstream request (stream.c). */
void mp_stream__start_attempt(mp_stream_t *s);
/* Whether the request came from a trusted (internal) client, by Envoy's rule; call before
 * x-forwarded-for is appended to (stream_headers.c). */
bool mp_stream__is_internal(const mp_stream_t *s);

/* Upgrades and tunnels (stream_upgrade.c). */
/* Plain CONNECT (no :protocol). */
bool mp_stream__is_connect(const mp_http_msg_t *req);
/* Before header policy: notes the upgrade the request asks for (s->upgrade); an HTTP/2 extended
 * CONNECT becomes a GET asking for the upgrade its :protocol names. */
void mp_stream__upgrade_capture(mp_stream_t *s);
/* After routing: keeps the upgrade (Connection/Upgrade go upstream) when upgrade_configs allow
 * it, else drops it.  False when it answered the stream itself (a refused CONNECT: 403). */
bool mp_stream__upgrade_decide(mp_stream_t *s);
/* A response to an upgrade being tried: true when it opens the tunnel (s->tunnel set); a final
 * refusal ends the upgrade and releases what was held. */
bool mp_stream__upgrade_answer(mp_stream_t *s, const mp_http_msg_t *resp);
/* The tunnel's head went out: held request bytes follow it upstream. */
void mp_stream__tunnel_begin(mp_stream_t *s);
void mp_stream__upgrade_free(mp_stream_t *s);

#endif
