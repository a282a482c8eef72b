/* Shared between the files of the health checker (health_check.c: scheduling, thresholds and
 * host sets; health_check_conn.c: connections, HTTP/1.1 and TCP; health_check_h2.c: HTTP/2 and
 * gRPC).  Main thread only. */
#ifndef MAGPIE_HEALTH_CHECK_INTERNAL_H
#define MAGPIE_HEALTH_CHECK_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "magpie/buf.h"
#include "magpie/h1.h"
#include "magpie/health_check.h"
#include "transport.h"

typedef struct hc_cluster hc_cluster_t;

/* How one check ended. */
typedef enum mp_hc_result {
    MP_HC_PENDING,   /* no verdict yet */
    MP_HC_OK,        /* passed */
    MP_HC_FAIL,      /* answered, but wrong (status, payload, NOT_SERVING) */
    MP_HC_NET_FAIL,  /* connect refused, reset, protocol garbage, early close */
    MP_HC_TIMEOUT,   /* no verdict within timeout */
    MP_HC_IMMEDIATE, /* x-envoy-immediate-health-check-fail: unhealthy at once */
} mp_hc_result_t;

/* One host checked by one health check.  Owned by its hc_cluster_t's list. */
typedef struct mp_hc_session {
    hc_cluster_t *hcc;
    const mp_health_check_t *hc;
    mp_host_health_t *health; /* a ref: the session may outlive the host set it came from */
    mp_addr_t addr;
    char *sni;        /* the host's DNS name, for TLS; or NULL */
    ev_timer tick;    /* the next check */
    ev_timer timeout; /* the running check's deadline */
    ev_io rio, wio;
    mp_tport_t tp;
    bool open, connecting, handshaking, busy;
    mp_buf_t in, out;
    /* HTTP/1.1 */
    mp_h1_parser_t *h1;
    int status;          /* response status, 0 until the head */
    bool degraded;       /* x-envoy-degraded on the response */
    bool immediate_fail; /* x-envoy-immediate-health-check-fail on the response */
    bool close_after;    /* the server will not keep the connection */
    mp_hc_result_t verdict;
    /* HTTP/2 and gRPC */
    nghttp2_session *h2;
    int32_t stream_id;
    uint8_t *req_body;
    size_t req_len, req_off;
    uint8_t *resp_body;
    size_t resp_len;
    int grpc_status; /* grpc-status trailer; -1 until seen */
    /* thresholds (Envoy's HealthCheckerImplBase::ActiveHealthCheckSession) */
    uint32_t n_healthy, n_unhealthy;
    bool first_check; /* no verdict yet since the session started */
    bool initial;     /* part of the first round the server waits for */
    bool mark;        /* host-set sync: still present */
    struct mp_hc_session *next;
} mp_hc_session_t;

/* Starts a check on s: connects (or reuses the open connection) and sends the request.  Any
 * verdict, immediate ones included, arrives later through mp_hc__done.  (health_check_conn.c) */
void mp_hc__check(mp_hc_session_t *s);
/* Closes s's connection and frees the per-check state.  (health_check_conn.c) */
void mp_hc__close(mp_hc_session_t *s);
/* A check's verdict: updates thresholds, flags and stats, closes the connection when it must,
 * and schedules the next check.  (health_check.c) */
void mp_hc__done(mp_hc_session_t *s, mp_hc_result_t r, const char *why);
/* The loop the checker runs on.  (health_check.c) */
struct ev_loop *mp_hc__loop(const mp_hc_session_t *s);
/* The cluster a session checks.  (health_check.c) */
const mp_cluster_t *mp_hc__cluster(const mp_hc_session_t *s);

/* HTTP/2 and gRPC over an open connection: start (submit the request and flush), feed what was
 * read (in s->in), and free.  start/feed return 0 or MP_ERROR (the caller gives a network
 * failure); a verdict goes through mp_hc__done.  (health_check_h2.c) */
int mp_hc__h2_start(mp_hc_session_t *s);
int mp_hc__h2_feed(mp_hc_session_t *s);
void mp_hc__h2_free(mp_hc_session_t *s);
/* Writes what nghttp2 wants to send to s->out.  (health_check_h2.c) */
int mp_hc__h2_pump(mp_hc_session_t *s);
/* Flushes s->out to the socket and arms the write watcher if some is left.  0 or MP_ERROR.
 * (health_check_conn.c) */
int mp_hc__flush(mp_hc_session_t *s);

#endif
