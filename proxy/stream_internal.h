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

#endif
