/* Private to the HTTP/2 downstream codec (h2_downstream.c: streams and nghttp2 callbacks;
 * h2_conn.c: the socket, the session, the abuse limits; h2_frames.c: header blocks). */
#ifndef MAGPIE_H2_INTERNAL_H
#define MAGPIE_H2_INTERNAL_H

#include <nghttp2/nghttp2.h>

#include "http_internal.h"

/* Client resets before any answer tolerated before the ratio test (rapid reset) applies. */
#define H2_RESET_FLOOD_MIN 100
/* Streams past max_concurrent_streams that we refuse ourselves before nghttp2 would end the
 * connection for them (h2_conn.c, advertise_stream_limit). */
#define H2_STREAM_SLACK 100
/* PING and SETTINGS frames a client may send in one second. */
#define H2_CONTROL_FLOOD_WINDOW_S 1.0

typedef struct h2_conn h2_conn_t;

typedef struct h2_dstream {
    h2_conn_t *h;
    struct h2_dstream *prev, *next;
    int32_t id;
    mp_stream_t *stream;    /* NULL once the exchange ended or before it began */
    mp_http_msg_t *req;     /* the request head being assembled */
    mp_headers_t *trailers; /* request trailers being assembled */
    uint32_t header_bytes;  /* of the header block being received */
    uint32_t header_count;
    mp_buf_t out;                /* response body waiting for flow-control window */
    mp_headers_t *resp_trailers; /* sent when `out` has drained */
    size_t unconsumed;           /* request bytes taken while blocked: window not granted yet */
    bool blocked;                /* the upstream is not keeping up: grant no window */
    bool out_eof;                /* the response body is all in `out` */
    bool deferred;               /* nghttp2 waits for resume_data */
    bool responded;              /* a response head went out */
    bool rst_after_end;          /* request abandoned: RST_STREAM(NO_ERROR) after the response */
    bool refused;                /* over max_concurrent_streams: reset, never started */
} h2_dstream_t;

struct h2_conn {
    mp_hconn_t c;
    nghttp2_session *session;
    mp_h2_options_t opt; /* the listener's options, defaults filled in */
    mp_buf_t in, out;
    mp_slice_t *cur_slice; /* the input slice nghttp2 is reading */
    ev_io rio, wio;
    ev_timer timer; /* idle timeout, or the grace for a closing connection */
    mp_deferred_t flusher;
    h2_dstream_t *streams;
    uint32_t n_streams;
    uint64_t streams_total, streams_reset_early;
    uint32_t empty_frames;  /* consecutive frames without payload */
    uint32_t continuations; /* CONTINUATION frames of the current header block */
    int32_t last_client_id;
    uint64_t priority_frames, window_updates, data_frames_sent;
    uint32_t control_frames; /* PING/SETTINGS in the current window */
    ev_tstamp control_window_start;
    bool peer_closed;
    bool goaway_sent;
    bool closing;             /* fatal: write what can go, then close */
    bool settings_patched;    /* the first SETTINGS went out with the real stream limit */
    int32_t malformed_stream; /* the last stream a bad field was counted for */
    /* The frame scanner (h2_conn.c) that checks frames before nghttp2 reads them. */
    uint32_t scan_preface; /* preface bytes still to skip */
    uint8_t scan_hd[9];
    uint32_t scan_hd_len;
    uint32_t scan_payload; /* payload bytes of the current frame still to skip */
    int32_t recent_ids[8]; /* streams opened in input nghttp2 has not read yet */
    uint32_t n_recent;
    bool read_blocked; /* output over the limit: stop reading the client */
    size_t out_queued; /* response bytes waiting in all streams' `out` (the watermark's measure) */
};

/* h2_downstream.c */
nghttp2_session_callbacks *h2_server_callbacks(void);
const mp_down_ops_t *h2_conn_ops(void);
void h2_conn_close(h2_conn_t *h, const char *why);

/* h2_conn.c */
/* Checks the frames in data (about to be given to nghttp2) against the abuse limits. */
void h2_scan_frames(h2_conn_t *h, const uint8_t *data, size_t len);
/* An abuse limit tripped: count it, GOAWAY(ENHANCE_YOUR_CALM), stop reading, close soon. */
void h2_flood(h2_conn_t *h, mp_stat_id_t counter, const char *what);
/* GOAWAY with code; NO_ERROR drains (open streams finish), others end the connection. */
void h2_goaway(h2_conn_t *h, uint32_t code);
/* The last stream closed: close if draining, else arm the idle timeout. */
void h2_conn_idle(h2_conn_t *h);
void h2_flush(mp_deferred_t *d);

/* h2_frames.c */
/* Submits a response head (:status, fields, content-length) with an optional body provider. */
int h2_submit_response(nghttp2_session *ss, int32_t id, const mp_http_msg_t *resp,
                       const nghttp2_data_provider *body);
/* HEADERS on a stream: a 1xx (msg given) or trailers (msg NULL, end_stream). */
int h2_submit_headers(nghttp2_session *ss, int32_t id, const mp_http_msg_t *msg,
                      const mp_headers_t *fields, bool end_stream);
/* Decodes an HTTP2-Settings value (base64url, no padding); returns the length or -1. */
int h2_decode_settings(const char *b64, uint8_t *out, size_t cap);

#endif
