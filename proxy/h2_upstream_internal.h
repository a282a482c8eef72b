/* Private to the HTTP/2 upstream (h2_upstream.c: connections, I/O and nghttp2's callbacks;
 * h2_upstream_request.c: what a stream asks of its request, and the pools). */
#ifndef MAGPIE_H2_UPSTREAM_INTERNAL_H
#define MAGPIE_H2_UPSTREAM_INTERNAL_H

#include <nghttp2/nghttp2.h>

#include "http_internal.h"

typedef enum h2_state {
    H2_CONNECTING, /* TCP connect (and TLS handshake) in progress */
    H2_HANDSHAKE,  /* preface sent, waiting for the server's SETTINGS (its stream limit) */
    H2_READY,      /* streams may be submitted */
} h2_state_t;

typedef struct h2_ureq h2_ureq_t;

struct h2_ureq {
    mp_ustream_t us;
    mp_h2_uconn_t *hc;
    h2_ureq_t *prev, *next;
    int32_t stream_id;           /* 0 until submitted */
    mp_buf_t body;               /* request bytes not yet framed (by reference) */
    mp_headers_t *trailers;      /* request trailers, sent after the body */
    mp_http_msg_t *resp;         /* response head being received */
    mp_headers_t *resp_trailers; /* response trailers being received */
    const char *fail_details;    /* a failure to deliver once nghttp2 has returned */
    uint32_t fail_flag;
    size_t unconsumed; /* response bytes not yet returned to the stream window */
    bool eof;          /* the request body is complete */
    bool blocked;      /* the downstream asked us to stop (block_read) */
    bool got_final;    /* a final (non-1xx) response head arrived */
    bool complete;     /* the response ended cleanly */
    bool closed;       /* nghttp2 is done with the stream (or never had it) */
    bool above_mark;   /* request bytes passed the downstream's buffer limit */
};

struct mp_h2_uconn {
    mp_grave_t grave;
    mp_worker_t *w;
    mp_pool_t *pool;     /* NULL once orphaned or draining: never reused */
    mp_config_t *config; /* ref: the snapshot `cluster` belongs to */
    mp_cluster_t *cluster;
    mp_h2_uconn_t *prev, *next; /* in pool->h2 */
    mp_tport_t tp; /* the socket, and its TLS when the cluster has a transport_socket */
    char *sni;     /* the host's name (owned), for TLS on connections made for rehomed streams */
    ev_io rio, wio;
    ev_timer timer; /* connect (and SETTINGS) timeout, or pool idle timeout */
    mp_addr_t addr;
    h2_state_t state;
    nghttp2_session *session;
    mp_buf_t in, out;
    mp_deferred_t deferred;
    h2_ureq_t *reqs;       /* every request not yet freed (doubly linked) */
    uint32_t n_live;       /* requests not closed: what counts against the stream limit */
    mp_slice_t *cur_slice; /* the input slice nghttp2 is reading from */
    mp_hconn_t **touched;  /* downstream connections given something this pass */
    uint32_t n_touched, cap_touched;
    int32_t goaway_last_id;
    unsigned busy;      /* inside nghttp2 or a pass over the requests: no closing */
    bool goaway;        /* the server sent GOAWAY: streams above goaway_last_id refused */
    bool settings_seen; /* the server's first SETTINGS arrived during this read */
    bool dead;
    bool handshaking; /* connected, TLS handshake under way (state still H2_CONNECTING) */
    bool cb_cx_held;  /* counted against the cluster's max_connections at cb_priority */
    uint8_t cb_priority;
};

static inline h2_ureq_t *ureq_of(const mp_ustream_t *us)
{
    return (h2_ureq_t *)((char *)us - offsetof(h2_ureq_t, us));
}

extern const mp_up_ops_t mp_h2u__ops;

bool mp_h2u__any_attached(const mp_h2_uconn_t *hc);
uint32_t mp_h2u__capacity(const mp_h2_uconn_t *hc);
void mp_h2u__close_gracefully(mp_h2_uconn_t *hc);
ssize_t mp_h2u__read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data);
mp_h2_uconn_t *mp_h2u__hc_new(mp_worker_t *w, mp_pool_t *pool, mp_stream_t *s,
                              const mp_addr_t *addr, int fd, const char *sni);
void mp_h2u__pool_unlink(mp_h2_uconn_t *hc);
void mp_h2u__schedule(mp_h2_uconn_t *hc);
void mp_h2u__ureq_fail_later(h2_ureq_t *r, uint32_t flag, const char *details);
void mp_h2u__ureq_mark_closed(h2_ureq_t *r);
/* sni: the host's name for TLS (NULL: none). */
void mp_h2u__attach_addr(mp_stream_t *s, mp_pool_t *pool, const mp_addr_t *addr, const char *sni);

#endif
