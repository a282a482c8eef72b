/* Active health checking (Cluster.health_checks, envoy.config.core.v3.HealthCheck).
 *
 * The main thread runs one checker per host per configured health check on its libev loop:
 * HTTP/1.1 or HTTP/2 GETs, gRPC grpc.health.v1.Health/Check calls, or TCP connect with optional
 * send/receive payloads, over the cluster's transport (raw or TLS).  Results go to the host's
 * shared health record (mp_host_health_t): MP_HEALTH_FAILED_ACTIVE_HC after unhealthy_threshold
 * failures in a row, cleared after healthy_threshold successes (at once on the first check of a
 * host), MP_HEALTH_PENDING_ACTIVE_HC until a host's first check has an answer.  Workers read the
 * flags on every pick (mp_host_usable); nothing here runs on a worker. */
#ifndef MAGPIE_HEALTH_CHECK_H
#define MAGPIE_HEALTH_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "magpie/common.h"
#include "magpie/config.h"
#include "magpie/stats.h"

struct ev_loop;

typedef enum mp_hc_kind {
    MP_HC_HTTP, /* http_health_check */
    MP_HC_TCP,  /* tcp_health_check */
    MP_HC_GRPC, /* grpc_health_check */
} mp_hc_kind_t;

/* HealthCheck.Payload: text (hex, decoded at translation) or binary. */
typedef struct mp_hc_payload {
    uint8_t *data;
    uint32_t len;
} mp_hc_payload_t;

/* One HealthCheck, translated.  Owned by the cluster's mp_health_checks_t. */
typedef struct mp_health_check {
    mp_hc_kind_t kind;
    uint64_t timeout_ms;                     /* required, > 0 */
    uint64_t interval_ms;                    /* required, > 0 */
    uint64_t initial_jitter_ms;              /* default 0 */
    uint64_t interval_jitter_ms;             /* default 0 */
    uint32_t interval_jitter_percent;        /* default 0 */
    uint32_t unhealthy_threshold;            /* required, >= 1 */
    uint32_t healthy_threshold;              /* required, >= 1 */
    uint64_t no_traffic_interval_ms;         /* default 60000 */
    uint64_t no_traffic_healthy_interval_ms; /* default no_traffic_interval */
    uint64_t unhealthy_interval_ms;          /* default interval */
    uint64_t unhealthy_edge_interval_ms;     /* default unhealthy_interval */
    uint64_t healthy_edge_interval_ms;       /* default interval */
    bool reuse_connection;                   /* default true */
    bool always_log_failures;                /* always_log_health_check_failures */
    int event_log_fd;                        /* event_log_path opened for append, or -1 */
    /* HTTP: host (NULL: the cluster name), path, expected_statuses as [start, end) ranges
     * (default [200, 201)), request_headers_to_add / _to_remove, HTTP/2 (codec_client_type). */
    char *host;
    char *path;
    int64_t (*statuses)[2];
    uint32_t n_statuses;
    mp_header_mutation_t headers;
    bool http2;
    /* TCP: send (len 0: nothing) and receive blocks, each found in order in the response. */
    mp_hc_payload_t send;
    mp_hc_payload_t *receive;
    uint32_t n_receive;
    /* gRPC: service_name ("" checks the server as a whole) and authority (NULL: cluster name). */
    char *service_name;
    char *authority;
} mp_health_check_t;

/* cluster.<name>.health_check.* (Envoy's names); healthy and degraded are gauges. */
typedef struct mp_hc_stats {
    mp_stat_id_t attempt, success, failure, network_failure, passive_failure, verify_cluster,
        healthy, degraded;
} mp_hc_stats_t;

/* A cluster's health checks (mp_cluster_t.health_checks), owned by the cluster. */
typedef struct mp_health_checks {
    mp_health_check_t *v;
    uint32_t n;
    mp_hc_stats_t stats;
} mp_health_checks_t;

/* The flags a new host of c starts with: failed and pending when c has health checks (Envoy
 * does not send traffic to a host before its first check passes), else 0.  Any thread. */
static inline uint32_t mp_hc_initial_flags(const mp_cluster_t *c)
{
    return c->health_checks != NULL && c->health_checks->n > 0
               ? MP_HEALTH_FAILED_ACTIVE_HC | MP_HEALTH_PENDING_ACTIVE_HC
               : 0;
}

/* Frees hcs and everything in it (closes event log files); NULL is fine.  Main thread. */
void mp_health_checks_free(mp_health_checks_t *hcs);

/* Sets hc to Envoy's defaults for the optional fields (reuse_connection, intervals that default
 * to others are resolved by the translator).  Any thread. */
void mp_health_check_init(mp_health_check_t *hc);

/* ---- the checker ---- */

typedef struct mp_hc mp_hc_t;
typedef void (*mp_hc_initial_done_cb)(void *ctx);

/* Starts checking every host of every cluster among clusters that has health checks; main
 * thread.  Clusters must stay alive until mp_hc_free.  on_initial_done (may be NULL) runs once,
 * from the loop and never before this returns, when every host present now has had its first
 * check answered or timed out: the server opens listeners then, as Envoy finishes cluster
 * initialization after the first round.  Checkers follow each cluster's host set as DNS changes
 * it (a new host starts failed and pending; a removed host's checker stops). */
mp_hc_t *mp_hc_start(struct ev_loop *loop, mp_cluster_t **clusters, uint32_t n,
                     mp_hc_initial_done_cb on_initial_done, void *ctx);

/* Starts checking clusters added by a configuration update (their hosts start failed and
 * pending; the initial callback does not wait for them), and stops checking removed ones, whose
 * sessions and connections end now.  Main thread; hc may not be NULL for add. */
void mp_hc_add_clusters(mp_hc_t *hc, mp_cluster_t **clusters, uint32_t n);
void mp_hc_remove_clusters(mp_hc_t *hc, mp_cluster_t **clusters, uint32_t n);

/* Stops every checker, closes their connections and frees hc.  No callback runs.  Main thread;
 * NULL is fine. */
void mp_hc_free(mp_hc_t *hc);

/* ---- pieces with no I/O, for the checkers and the tests ---- */

/* Whether status falls in one of hc's expected ranges. */
bool mp_hc_status_expected(const mp_health_check_t *hc, int status);

/* Whether every receive block of hc occurs in buf[0..len), in order, not overlapping.  An empty
 * receive list matches anything. */
bool mp_hc_tcp_match(const mp_health_check_t *hc, const uint8_t *buf, size_t len);

/* Decodes a hex string (Payload.text) into a new buffer; NULL for odd length or a non-hex
 * character. */
uint8_t *mp_hc_hex_decode(const char *hex, uint32_t *len);

/* gRPC: the request message framed for the wire (5-byte prefix + HealthCheckRequest) appended
 * to a new heap buffer of *len bytes. */
uint8_t *mp_hc_grpc_request(const char *service, size_t *len);

/* gRPC: parses the framed response body (one length-prefixed HealthCheckResponse).  Returns 0
 * when complete (*serving: the status is SERVING), MP_AGAIN when more bytes are needed, MP_ERROR
 * when malformed (compressed, over 4 KiB, trailing bytes, bad protobuf). */
int mp_hc_grpc_response(const uint8_t *buf, size_t len, bool *serving);

#endif
