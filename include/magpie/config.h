/* The runtime configuration: what translators produce from the Envoy v3 messages and what
 * workers read.  A mp_config_t snapshot is immutable once published; workers hold a reference
 * (mp_config_ref/unref, atomic) and an in-flight stream keeps the snapshot it started on.
 * The main thread builds snapshots (xds/translate_*.c) and publishes them (proxy/worker.c).
 * Everything reachable from a snapshot is owned by it and freed with it, except host sets,
 * which STRICT_DNS refreshes replace while the snapshot lives (see mp_cluster_t.hosts). */
#ifndef MAGPIE_CONFIG_H
#define MAGPIE_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "magpie/common.h"
#include "magpie/stats.h"

typedef struct mp_regex mp_regex_t;
typedef struct mp_tls_ctx mp_tls_ctx_t; /* include/magpie/tls.h */
typedef struct mp_http_filter mp_http_filter_t;
/* include/magpie/filter.h */ /* proxy/regex.c: PCRE2 with JIT and match limits */

typedef struct mp_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* "127.0.0.1:8080" or "[::1]:8080" */
} mp_addr_t;

/* ---- matchers (envoy.type.matcher.v3) ---- */

typedef enum mp_str_match_kind {
    MP_STR_EXACT,
    MP_STR_PREFIX,
    MP_STR_SUFFIX,
    MP_STR_CONTAINS,
    MP_STR_REGEX,
} mp_str_match_kind_t;

typedef struct mp_string_matcher {
    mp_str_match_kind_t kind;
    char *value; /* exact/prefix/suffix/contains; NULL for regex */
    uint32_t len;
    bool ignore_case;
    mp_regex_t *regex; /* MP_STR_REGEX */
} mp_string_matcher_t;

typedef enum mp_header_match_kind {
    MP_HDR_STRING,  /* string_match, or the deprecated exact_match/prefix_match/... */
    MP_HDR_PRESENT, /* present_match */
    MP_HDR_RANGE,   /* range_match: [start, end) on the integer value */
} mp_header_match_kind_t;

typedef struct mp_header_matcher {
    char *name; /* lower-case; ":path", ":method", ":authority" address the pseudo-headers */
    mp_header_match_kind_t kind;
    mp_string_matcher_t str;
    bool present; /* MP_HDR_PRESENT: true = must be present, false = must be absent */
    int64_t range_start, range_end;
    bool invert;
    bool treat_missing_as_empty;
} mp_header_matcher_t;

typedef struct mp_query_matcher {
    char *name;
    bool has_string; /* string_match given; otherwise present_match */
    mp_string_matcher_t str;
    bool present;
} mp_query_matcher_t;

/* ---- header mutation (HeaderValueOption, *_headers_to_remove) ---- */

typedef enum mp_header_append {
    MP_APPEND_IF_EXISTS_OR_ADD,
    MP_ADD_IF_ABSENT,
    MP_OVERWRITE_IF_EXISTS_OR_ADD,
    MP_OVERWRITE_IF_EXISTS,
} mp_header_append_t;

typedef struct mp_header_op {
    char *name; /* lower-case */
    char *value;
    mp_header_append_t action; /* `append: false` maps to OVERWRITE_IF_EXISTS_OR_ADD */
    bool keep_empty_value;
} mp_header_op_t;

typedef struct mp_header_mutation {
    mp_header_op_t *add;
    uint32_t n_add;
    char **remove; /* lower-case names */
    uint32_t n_remove;
} mp_header_mutation_t;

/* ---- protocol options (envoy.config.core.v3) ---- */

/* HTTP/2 protocol options (envoy.config.core.v3.Http2ProtocolOptions), downstream (the HCM's
 * http2_protocol_options) and upstream (a cluster's).  Translators range-check every field;
 * absent fields take the defaults of mp_h2_options_default, which differ from Envoy's where noted
 * in docs/http2.md ("Protocol options"). */
typedef struct mp_h2_options {
    uint32_t max_concurrent_streams;         /* default 1024; 1..2^31-1 */
    uint32_t initial_stream_window_size;     /* default 262144 (256 KiB); 65535..2^31-1 */
    uint32_t initial_connection_window_size; /* default 1048576 (1 MiB); 65535..2^31-1 */
    uint32_t hpack_table_size;               /* default 4096 */
    uint32_t max_outbound_frames;            /* default 10000; >= 1 */
    uint32_t max_outbound_control_frames;    /* default 1000; >= 1 */
    uint32_t max_consecutive_inbound_frames_with_empty_payload;    /* default 1 */
    uint32_t max_inbound_priority_frames_per_stream;               /* default 100 */
    uint32_t max_inbound_window_update_frames_per_data_frame_sent; /* default 10; >= 1 */
    bool allow_connect; /* RFC 8441 extended CONNECT; default false */
    /* default false: an invalid HTTP message ends the connection, not only its stream.  Taken
     * from override_stream_error_on_invalid_http_message, else (downstream) the HCM's
     * stream_error_on_invalid_http_message, else the deprecated
     * stream_error_on_invalid_http_messaging. */
    bool override_stream_error_on_invalid_http_message;
} mp_h2_options_t;

/* Fills o with the defaults above.  Any thread. */
void mp_h2_options_default(mp_h2_options_t *o);

/* One upgrade type a listener (HttpConnectionManager.upgrade_configs) or a route
 * (RouteAction.upgrade_configs) allows or forbids.  A route's entry overrides the listener's for
 * the same type; a type named by neither is refused. */
typedef struct mp_upgrade_config {
    char *upgrade_type; /* lower-case: "websocket", "connect", ... */
    bool enabled;       /* default true */
    /* route level only (RouteAction.UpgradeConfig.connect_config present, upgrade_type
     * "connect"): terminate CONNECT here and carry its payload as raw TCP to the upstream;
     * false: forward the CONNECT request itself.  Always false at HCM level. */
    bool connect_config;
} mp_upgrade_config_t;

/* ---- routes (envoy.config.route.v3) ---- */

typedef struct mp_cluster mp_cluster_t;

typedef enum mp_path_match_kind {
    MP_PATH_PREFIX,
    MP_PATH_EXACT,
    MP_PATH_REGEX,
    MP_PATH_SEPARATED_PREFIX,
} mp_path_match_kind_t;

typedef enum mp_route_action_kind {
    MP_ACTION_ROUTE,
    MP_ACTION_REDIRECT,
    MP_ACTION_DIRECT_RESPONSE,
} mp_route_action_kind_t;

typedef struct mp_weighted_cluster {
    char *name;
    mp_cluster_t *cluster; /* resolved at translation; NULL if the name is unknown (-> 503) */
    uint32_t weight;
    mp_header_mutation_t request_headers, response_headers;
} mp_weighted_cluster_t;

typedef struct mp_redirect {
    char *scheme;  /* NULL: keep; https_redirect sets "https" */
    char *host;    /* NULL: keep */
    uint32_t port; /* 0: keep */
    char *path;    /* path_redirect; NULL: keep */
    char *prefix_rewrite;
    int response_code; /* 301 (default), 302, 303, 307, 308 */
    bool strip_query;
} mp_redirect_t;

/* RetryPolicy.retry_on (and x-envoy-retry-on / x-envoy-retry-grpc-on), one bit per condition
 * (include/magpie/retry.h parses and evaluates them). */
enum {
    MP_RETRY_ON_5XX = 1u << 0,                      /* any 5xx, reset, connect failure, timeout */
    MP_RETRY_ON_GATEWAY_ERROR = 1u << 1,            /* 502/503/504, reset, connect failure */
    MP_RETRY_ON_RESET = 1u << 2,                    /* no response: reset, disconnect, timeout */
    MP_RETRY_ON_CONNECT_FAILURE = 1u << 3,          /* the connection could not be made */
    MP_RETRY_ON_RETRIABLE_4XX = 1u << 4,            /* 409 */
    MP_RETRY_ON_REFUSED_STREAM = 1u << 5,           /* HTTP/2 REFUSED_STREAM */
    MP_RETRY_ON_RETRIABLE_STATUS_CODES = 1u << 6,   /* retriable_status_codes + header */
    MP_RETRY_ON_RETRIABLE_HEADERS = 1u << 7,        /* a response header matches */
    MP_RETRY_ON_GRPC_CANCELLED = 1u << 8,           /* grpc-status 1 */
    MP_RETRY_ON_GRPC_DEADLINE_EXCEEDED = 1u << 9,   /* 4 */
    MP_RETRY_ON_GRPC_RESOURCE_EXHAUSTED = 1u << 10, /* 8 */
    MP_RETRY_ON_GRPC_UNAVAILABLE = 1u << 11,        /* 14 */
    MP_RETRY_ON_GRPC_INTERNAL = 1u << 12,           /* 13 */
};

/* RetryPolicy (route or virtual host; the route's replaces the virtual host's whole). */
typedef struct mp_retry_policy {
    uint32_t retry_on;                /* MP_RETRY_ON_* */
    uint32_t num_retries;             /* default 1 */
    uint64_t per_try_timeout_ms;      /* 0: none */
    uint64_t per_try_idle_timeout_ms; /* 0: none */
    uint32_t *retriable_status_codes;
    uint32_t n_retriable_status_codes;
    mp_header_matcher_t *retriable_headers; /* a response matching any is retried */
    uint32_t n_retriable_headers;
    mp_header_matcher_t *retriable_request_headers; /* the request must match one, if any */
    uint32_t n_retriable_request_headers;
    uint64_t backoff_base_ms;             /* retry_back_off.base_interval; default 25 */
    uint64_t backoff_max_ms;              /* retry_back_off.max_interval; default 10 x base */
    bool previous_hosts;                  /* envoy.retry_host_predicates.previous_hosts */
    uint32_t host_selection_max_attempts; /* host_selection_retry_max_attempts; default 1 */
} mp_retry_policy_t;

typedef struct mp_hash_policy mp_hash_policy_t; /* include/magpie/route_hash.h */

typedef struct mp_route {
    char *name;
    /* match */
    mp_path_match_kind_t path_kind;
    char *path; /* prefix / exact path / separated prefix */
    uint32_t path_len;
    mp_regex_t *path_regex;
    bool case_sensitive; /* default true */
    mp_header_matcher_t *headers;
    uint32_t n_headers;
    mp_query_matcher_t *query;
    uint32_t n_query;
    /* RouteMatch.grpc: only requests whose content-type is application/grpc, application/grpc+*
     * or application/grpc;* (mp_grpc_is_grpc_content_type) match. */
    bool match_grpc;
    /* RouteMatch.connect_matcher: the route matches CONNECT requests (method CONNECT without
     * :protocol) and nothing else, and a CONNECT request matches no other kind of route (Envoy:
     * only a connect_matcher route accepts a request without :path).  path_kind is then
     * MP_PATH_PREFIX with an empty path. */
    bool connect_matcher;
    /* action */
    mp_route_action_kind_t action;
    char *cluster_name;    /* "cluster" */
    mp_cluster_t *cluster; /* resolved; NULL when unknown */
    mp_weighted_cluster_t *weighted;
    uint32_t n_weighted;
    uint32_t total_weight;
    char *cluster_header; /* lower-case header naming the cluster */
    char *prefix_rewrite;
    char *host_rewrite_literal;
    bool auto_host_rewrite;
    bool has_timeout;
    uint64_t timeout_ms;           /* route timeout; default 15000; 0 disables */
    bool has_idle_timeout;         /* idle_timeout given: replaces the HCM's stream idle timeout */
    uint64_t idle_timeout_ms;      /* 0: none */
    mp_retry_policy_t *retry;      /* RouteAction.retry_policy, or NULL (the vhost's applies) */
    uint32_t buffer_limit;         /* per_request_buffer_limit_bytes; 0: the vhost's */
    mp_upgrade_config_t *upgrades; /* RouteAction.upgrade_configs; override the HCM's */
    uint32_t n_upgrades;
    uint8_t priority; /* RouteAction.priority (mp_routing_priority_t): which breaker limits */
    mp_hash_policy_t *hash_policies; /* RouteAction.hash_policy, in order */
    uint32_t n_hash_policies;
    /* RouteAction.max_stream_duration.  The message present at all (Envoy's "new timeouts"):
     * the route timeout no longer applies, and a gRPC request's grpc-timeout is lowered to the
     * stream's duration limit.  max_stream_duration absent (has_ = false): the HCM's
     * max_stream_duration_ms applies; present: this one replaces it, and 0 disables it. */
    bool uses_stream_duration;
    bool has_max_stream_duration;
    uint64_t max_stream_duration_ms;
    /* grpc_timeout_header_max: present -> a request's grpc-timeout header (minus the offset)
     * bounds the stream's duration, capped at grpc_timeout_header_max_ms unless that is 0 (no
     * cap).  Absent -> the grpc-timeout header is ignored. */
    bool has_grpc_timeout_header_max;
    uint64_t grpc_timeout_header_max_ms;
    uint64_t grpc_timeout_header_offset_ms; /* subtracted from grpc-timeout; default 0 */
    mp_redirect_t redirect;
    int direct_status;
    char *direct_body;
    uint32_t direct_body_len;
    mp_header_mutation_t request_headers, response_headers;
} mp_route_t;

typedef struct mp_vhost {
    char *name;
    char **domains; /* lower-case as configured: "a.com", "*.a.com", "a.*", "*" */
    uint32_t n_domains;
    mp_route_t *routes;
    uint32_t n_routes;
    mp_header_mutation_t request_headers, response_headers;
    mp_retry_policy_t *retry;               /* retry_policy, or NULL */
    uint32_t buffer_limit;                  /* per_request_buffer_limit_bytes; 0: the listener's */
    bool include_request_attempt_count;     /* x-envoy-attempt-count on upstream requests */
    bool include_attempt_count_in_response; /* ... and on the response downstream */
} mp_vhost_t;

typedef struct mp_route_table {
    char *name;
    mp_vhost_t *vhosts;
    uint32_t n_vhosts;
    mp_header_mutation_t request_headers, response_headers;
} mp_route_table_t;

/* ---- clusters and hosts ---- */

typedef enum mp_cluster_type {
    MP_CLUSTER_STATIC,
    MP_CLUSTER_STRICT_DNS,
    MP_CLUSTER_LOGICAL_DNS,
    MP_CLUSTER_EDS, /* hosts from a ClusterLoadAssignment (include/magpie/resource_store.h) */
} mp_cluster_type_t;

typedef enum mp_lb_policy {
    MP_LB_ROUND_ROBIN,
    MP_LB_LEAST_REQUEST,
    MP_LB_RANDOM,
    MP_LB_RING_HASH, /* consistent hashing on the request hash (include/magpie/lb_hash.h) */
    MP_LB_MAGLEV,
} mp_lb_policy_t;

typedef enum mp_hash_fn {
    MP_HASH_FN_XX,      /* XX_HASH (default) */
    MP_HASH_FN_MURMUR2, /* MURMUR_HASH_2 */
} mp_hash_fn_t;

/* Cluster.ring_hash_lb_config / maglev_lb_config (defaults in include/magpie/lb_hash.h). */
typedef struct mp_lb_hash_config {
    uint64_t min_ring_size; /* RING_HASH: minimum_ring_size, default 1024 */
    uint64_t max_ring_size; /* RING_HASH: maximum_ring_size, default 8388608 */
    mp_hash_fn_t hash_function;
    uint64_t table_size; /* MAGLEV: a prime, default 65537 */
    /* common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing: hash a host's DNS
     * name instead of its "ip:port" (hosts without a name still use their address). */
    bool use_hostname;
} mp_lb_hash_config_t;

typedef enum mp_dns_family {
    MP_DNS_AUTO, /* Envoy AUTO: prefer v6, fall back to v4 */
    MP_DNS_V4_ONLY,
    MP_DNS_V6_ONLY,
    MP_DNS_V4_PREFERRED,
    MP_DNS_ALL,
} mp_dns_family_t;

/* Why a host is not used (mp_host_health_t.flags), as Envoy's health_flags name them. */
enum {
    MP_HEALTH_FAILED_ACTIVE_HC = 1u << 0,     /* active health checking says unhealthy */
    MP_HEALTH_FAILED_OUTLIER_CHECK = 1u << 1, /* ejected by outlier detection */
    MP_HEALTH_PENDING_ACTIVE_HC = 1u << 2,    /* not checked yet (counts as unhealthy) */
    MP_HEALTH_DEGRADED_ACTIVE_HC = 1u << 3,   /* healthy but degraded (x-envoy-degraded) */
    MP_HEALTH_FAILED_EDS_HEALTH = 1u << 4,    /* health_status UNHEALTHY, DRAINING or TIMEOUT */
    MP_HEALTH_DEGRADED_EDS_HEALTH = 1u << 5,  /* health_status DEGRADED */
};
#define MP_HEALTH_UNUSABLE                                                                         \
    (MP_HEALTH_FAILED_ACTIVE_HC | MP_HEALTH_FAILED_OUTLIER_CHECK | MP_HEALTH_PENDING_ACTIVE_HC |   \
     MP_HEALTH_FAILED_EDS_HEALTH)
/* A usable host with one of these is degraded: used only when healthy hosts cannot take the load
 * (Envoy's degraded hosts, proxy/lb.c). */
#define MP_HEALTH_DEGRADED (MP_HEALTH_DEGRADED_ACTIVE_HC | MP_HEALTH_DEGRADED_EDS_HEALTH)

/* The health_status a control plane gave an endpoint, reduced to what the balancer needs. */
typedef enum mp_eds_health {
    MP_EDS_HEALTHY,   /* UNKNOWN or HEALTHY: health checking and outlier detection decide */
    MP_EDS_UNHEALTHY, /* UNHEALTHY, DRAINING, TIMEOUT: never used (not even in panic) */
    MP_EDS_DEGRADED,  /* DEGRADED */
} mp_eds_health_t;

/* A LocalityLbEndpoints.locality; the strings are owned by the cluster and never NULL. */
typedef struct mp_locality {
    char *region, *zone, *sub_zone;
} mp_locality_t;

/* The mutable health of one upstream host, shared by every host set that lists the host (a DNS
 * refresh that returns the same address keeps it) and read by every worker.  The main thread's
 * health checker and outlier detector set and clear their flags; workers read them on each pick.
 * Refcounted (atomic): each mp_host_t holding it owns one ref. */
/* Outlier detection's record of one host (proxy/outlier.c).  It lives in the health record so
 * that it follows the host across DNS refreshes, as the ejection flag does, and a worker's report
 * needs no lookup.  Workers write the atomics (relaxed); the rest is the main thread's. */
typedef struct mp_outlier_host {
    atomic_uint consecutive_5xx, consecutive_gateway, consecutive_local;
    atomic_uint ext_total, ext_success, local_total, local_success; /* this interval */
    atomic_uint pending; /* 1 << MP_OUTLIER_* type: a threshold was crossed, main to decide */
    uint32_t num_ejections, backoff;   /* times ejected; ejection time multiplier */
    uint64_t ejected_ms, unejected_ms; /* mp_now_ms() of the last of each; 0: never */
    uint32_t jitter_ms, last_type;
    double success_rate, local_success_rate; /* last interval's, -1 when not computed */
} mp_outlier_host_t;

typedef struct mp_host_health {
    atomic_uint refs;
    atomic_uint flags; /* MP_HEALTH_* */
    mp_outlier_host_t outlier;
} mp_host_health_t;

typedef struct mp_host {
    mp_addr_t addr;
    char *hostname;           /* the DNS name it came from, or NULL */
    uint32_t weight;          /* >= 1 */
    uint32_t priority;        /* its LocalityLbEndpoints.priority: 0 is the highest */
    uint32_t locality;        /* index in its cluster's localities[] */
    uint32_t locality_weight; /* its LocalityLbEndpoints.load_balancing_weight; 0 when unset */
    uint8_t eds_health;       /* mp_eds_health_t; mp_hostset_adopt_health mirrors it in flags */
    mp_host_health_t *health; /* owned ref; never NULL in a published set */
} mp_host_t;

/* The hosts of one (priority, locality) pair: hosts[first .. first + n) of the set. */
typedef struct mp_host_group {
    uint32_t priority, locality;
    uint32_t weight; /* the locality's load_balancing_weight; 0 when unset */
    uint32_t first, n;
} mp_host_group_t;

/* An immutable set of hosts with its own refcount (atomic: shared across threads).  The main
 * thread replaces a cluster's set on a DNS answer; a worker takes a ref for as long as it uses
 * one (mp_cluster_hosts_acquire).
 *
 * mp_hostset_finish orders hosts by priority, then locality (config order kept within each), and
 * describes the runs in groups[]; priority P's hosts are therefore contiguous.  A set that was
 * never finished (n_groups 0, as some tests build) is balanced as one group at priority 0. */
typedef struct mp_hostset {
    atomic_uint refs;
    uint32_t n;
    uint64_t total_weight;
    uint32_t n_priorities;   /* 1 + the highest priority present; 0 when empty or not finished */
    uint32_t n_groups;       /* (priority, locality) runs, in host order */
    mp_host_group_t *groups; /* owned */
    mp_host_t hosts[];
} mp_hostset_t;

/* One configured endpoint (load_assignment.endpoints[].lb_endpoints[]): an address to use as is
 * (STATIC) or a name to resolve (STRICT_DNS). */
typedef struct mp_endpoint_spec {
    char *address; /* IP literal or DNS name */
    uint16_t port;
    uint32_t weight;
    uint32_t priority;        /* of its LocalityLbEndpoints */
    uint32_t locality;        /* index in the cluster's localities[] */
    uint32_t locality_weight; /* LocalityLbEndpoints.load_balancing_weight; 0 when unset */
    uint8_t eds_health;       /* mp_eds_health_t */
} mp_endpoint_spec_t;

/* Envoy's limit is the size of an array indexed by priority; we refuse more than this many. */
#define MP_MAX_PRIORITIES 128

/* How the balancer chooses a locality inside a priority (common_lb_config). */
typedef enum mp_locality_lb {
    MP_LOCALITY_LB_NONE,       /* every healthy host of the priority, localities ignored */
    MP_LOCALITY_LB_WEIGHTED,   /* locality_weighted_lb_config */
    MP_LOCALITY_LB_ZONE_AWARE, /* zone_aware_lb_config, or cluster_manager.local_cluster_name */
} mp_locality_lb_t;

/* Route priority (RoutingPriority): circuit breakers keep separate limits and counts for each. */
typedef enum mp_routing_priority {
    MP_PRIORITY_DEFAULT,
    MP_PRIORITY_HIGH,
    MP_PRIORITY_COUNT,
} mp_routing_priority_t;

/* One CircuitBreakers.Thresholds entry (include/magpie/circuit.h). */
typedef struct mp_cb_limits {
    uint32_t max_connections;       /* default 1024 */
    uint32_t max_pending_requests;  /* default 1024 */
    uint32_t max_requests;          /* default 1024 */
    uint32_t max_retries;           /* default 3 */
    uint32_t max_connection_pools;  /* default UINT32_MAX: unlimited */
    bool has_retry_budget;          /* retry_budget set: it bounds retries instead of max_retries */
    double budget_percent;          /* of active + pending requests; default 20 */
    uint32_t min_retry_concurrency; /* default 3 */
    bool track_remaining;           /* also publish the remaining_* gauges */
    /* circuit_breakers.<priority>.{cx_open, rq_pending_open, rq_open, rq_retry_open,
     * cx_pool_open} and remaining_{cx, pending, rq, retries, cx_pools} (0 when not tracked), by
     * mp_cb_resource_t; set when stats are read (mp_cb_refresh_gauges). */
    mp_stat_id_t open_gauge[5], remaining_gauge[5];
    bool has_gauges; /* the ids above are registered (a translated cluster) */
} mp_cb_limits_t;

/* What is in use now, shared by all workers (one per priority, in mp_cluster_t). */
typedef struct mp_cb_counts {
    atomic_uint in_use[5]; /* by mp_cb_resource_t */
} mp_cb_counts_t;

/* Which protocol a cluster speaks to its hosts. */
typedef enum mp_upstream_protocol {
    MP_UPSTREAM_HTTP1,          /* HTTP/1.1 (default) */
    MP_UPSTREAM_HTTP2,          /* HTTP/2 with prior knowledge (h2c), or h2 over TLS */
    MP_UPSTREAM_USE_DOWNSTREAM, /* whatever the downstream request used: HTTP/1.x or HTTP/2 */
} mp_upstream_protocol_t;

typedef struct mp_cluster_stats {
    mp_stat_id_t upstream_rq_total, upstream_rq_2xx, upstream_rq_3xx, upstream_rq_4xx,
        upstream_rq_5xx, upstream_rq_timeout, upstream_rq_active, upstream_cx_total,
        upstream_cx_active, upstream_cx_connect_fail, upstream_cx_connect_timeout,
        upstream_cx_destroy, upstream_cx_rx_bytes_total, upstream_cx_tx_bytes_total,
        upstream_rq_pending_total, upstream_cx_idle_timeout, membership_total, membership_healthy,
        update_success, update_failure, update_rejected, upstream_cx_none_healthy,
        upstream_cx_http2_total, upstream_cx_protocol_error, upstream_rq_per_try_timeout,
        upstream_rq_per_try_idle_timeout, upstream_rq_retry, upstream_rq_retry_success,
        upstream_rq_retry_limit_exceeded, upstream_rq_retry_overflow,
        upstream_rq_retry_backoff_exponential;
    /* circuit breaking (include/magpie/circuit.h) */
    mp_stat_id_t upstream_rq_pending_overflow, upstream_cx_overflow, upstream_cx_pool_overflow;
} mp_cluster_stats_t;

/* A cluster is refcounted (atomic) and may be shared by consecutive snapshots: when a new
 * snapshot's Cluster message packs to the same bytes as the previous one's (pb, pb_len), the
 * translator takes a ref on the old object instead of building a new one, so its host set, host
 * health, DNS, health checks, outlier state, breaker counts and workers' pools carry over
 * (docs/dynamic-config.md).  Each snapshot listing it owns one ref. */
struct mp_cluster {
    atomic_uint refs;
    uint8_t *pb; /* the packed envoy.config.cluster.v3.Cluster it was translated from */
    size_t pb_len;
    char *name;
    /* position in the snapshot that created it; a worker's pools are found by it first
     * (mp_worker_pool), then by a search when a later snapshot moved the cluster */
    uint32_t index;
    mp_cluster_type_t type;
    mp_lb_policy_t lb_policy;
    uint32_t least_request_choices; /* default 2 */
    mp_lb_hash_config_t hash_lb;    /* RING_HASH and MAGLEV */
    uint64_t connect_timeout_ms;    /* default 5000 */
    uint64_t pool_idle_timeout_ms;  /* common_http_protocol_options.idle_timeout; default 1h */
    uint32_t per_connection_buffer_limit_bytes; /* default 1 MiB */
    uint32_t max_requests_per_connection;       /* 0: unlimited */
    /* From typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.
     * HttpProtocolOptions"], else the deprecated http2_protocol_options / protocol_selection.
     * auto_config is served as HTTP/1.1 until the protocol is chosen by ALPN. */
    mp_upstream_protocol_t protocol;
    mp_h2_options_t h2; /* used for HTTP/2 (and USE_DOWNSTREAM); defaults when not given */
    mp_tls_ctx_t *tls;  /* transport_socket (UpstreamTlsContext), or NULL: raw TCP */
    mp_dns_family_t dns_family;
    uint64_t dns_refresh_rate_ms; /* default 5000 */
    bool respect_dns_ttl;
    char *eds_name; /* EDS: the ClusterLoadAssignment's name (service_name, else the name) */
    char *eds_path; /* EDS: eds_config's file, or NULL when another source feeds it */
    mp_endpoint_spec_t *endpoints;
    uint32_t n_endpoints;
    mp_locality_t *localities; /* distinct localities of the endpoints, in order of appearance */
    uint32_t n_localities;
    /* Load balancing across priorities and localities (proxy/lb.c, docs/resilience.md). */
    uint32_t overprovisioning_factor; /* percent; load_assignment.policy; default 140 */
    uint32_t panic_threshold;         /* percent; common_lb_config.healthy_panic_threshold: 50 */
    mp_locality_lb_t locality_lb;
    uint32_t zone_routing_enabled;  /* zone_aware_lb_config.routing_enabled, in 1/100 % (10000) */
    uint64_t zone_min_cluster_size; /* zone_aware_lb_config.min_cluster_size; default 6 */
    bool fail_traffic_on_panic;     /* zone_aware_lb_config.fail_traffic_on_panic */
    int32_t local_locality;         /* index of node.locality in localities[], or -1 */
    /* cluster_manager.local_cluster_name's cluster in the same snapshot (borrowed), or NULL: zone
     * aware routing then takes this cluster's own hosts as the picture of where callers are. */
    struct mp_cluster *local_cluster;
    _Atomic(mp_hostset_t *) hosts;               /* never NULL after translation (may be empty) */
    mp_cb_limits_t cb_limits[MP_PRIORITY_COUNT]; /* circuit_breakers.thresholds */
    mp_cb_counts_t cb_counts[MP_PRIORITY_COUNT];
    /* Cluster.health_checks (include/magpie/health_check.h), or NULL when none; owned. */
    struct mp_health_checks *health_checks;
    mp_cluster_stats_t stats;
    struct mp_outlier *outlier; /* outlier_detection (include/magpie/outlier.h), or NULL: off */
};

/* ---- access logs ---- */

typedef struct mp_access_log_format mp_access_log_format_t; /* proxy/access_log.c */

typedef enum mp_access_log_sink {
    MP_ALOG_FILE,
    MP_ALOG_STDOUT,
    MP_ALOG_STDERR,
} mp_access_log_sink_t;

typedef struct mp_access_log {
    mp_access_log_sink_t sink;
    char *path;                     /* MP_ALOG_FILE */
    int fd;                         /* opened by the translator, closed with the snapshot */
    mp_access_log_format_t *format; /* compiled format string */
} mp_access_log_t;

/* ---- listeners and the HTTP connection manager ---- */

typedef enum mp_codec_type {
    MP_CODEC_AUTO,
    MP_CODEC_HTTP1,
    MP_CODEC_HTTP2,
} mp_codec_type_t;

typedef struct mp_http_stats {
    mp_stat_id_t downstream_rq_total, downstream_rq_1xx, downstream_rq_2xx, downstream_rq_3xx,
        downstream_rq_4xx, downstream_rq_5xx, downstream_cx_total, downstream_cx_active,
        downstream_cx_http1_total, downstream_cx_rx_bytes_total, downstream_cx_tx_bytes_total,
        downstream_rq_active, downstream_rq_timeout, downstream_rq_idle_timeout,
        downstream_cx_idle_timeout, downstream_cx_protocol_error, downstream_rq_completed, no_route,
        rq_direct_response, rq_redirect, downstream_rq_too_large, downstream_cx_destroy_remote,
        downstream_cx_destroy_local, downstream_rq_rx_reset, downstream_rq_tx_reset,
        downstream_cx_drain_close, downstream_cx_http2_total, downstream_cx_http2_active,
        downstream_cx_upgrades_total, downstream_cx_upgrades_active, h2_rx_messaging_error,
        h2_rx_reset, h2_tx_reset, h2_too_many_resets, h2_header_overflow, h2_continuation_flood,
        h2_inbound_empty_frames_flood, h2_outbound_flood, h2_outbound_control_flood,
        h2_inbound_priority_frames_flood, h2_inbound_window_update_frames_flood, h2_settings_flood,
        h2_ping_flood, h2_invalid_pseudo_header, h2_connection_specific_header, h2_stream_id_misuse,
        h2_hpack_error, h2_goaway_sent, downstream_rq_max_duration_reached;
} mp_http_stats_t;

typedef enum mp_escaped_slashes {
    MP_ESCAPED_SLASHES_REJECT,            /* 400 (our default) */
    MP_ESCAPED_SLASHES_KEEP,              /* forward %2F / %5C untouched */
    MP_ESCAPED_SLASHES_UNESCAPE_REDIRECT, /* 307 to the unescaped path */
    MP_ESCAPED_SLASHES_UNESCAPE_FORWARD,  /* unescape, then normalise and route */
} mp_escaped_slashes_t;

typedef enum mp_server_header {
    MP_SERVER_HEADER_OVERWRITE,        /* server: <server_name> on every response (default) */
    MP_SERVER_HEADER_APPEND_IF_ABSENT, /* only when the upstream sent none */
    MP_SERVER_HEADER_PASS_THROUGH,     /* untouched */
} mp_server_header_t;

/* forward_client_cert_details: what becomes of a request's x-forwarded-client-cert (XFCC) header
 * (proxy/xfcc.c).  "mTLS" means the client presented a certificate on a TLS connection. */
typedef enum mp_xfcc_mode {
    MP_XFCC_SANITIZE,            /* always removed (Envoy's default) */
    MP_XFCC_FORWARD_ONLY,        /* mTLS: passed on unchanged; otherwise removed */
    MP_XFCC_APPEND_FORWARD,      /* mTLS: this hop's element appended; otherwise removed */
    MP_XFCC_SANITIZE_SET,        /* mTLS: replaced by this hop's element; otherwise removed */
    MP_XFCC_ALWAYS_FORWARD_ONLY, /* always passed on unchanged, TLS or not */
} mp_xfcc_mode_t;

/* set_current_client_cert_details, one bit each: the optional fields of this hop's element
 * (By and Hash are always in it). */
enum {
    MP_XFCC_SUBJECT = 1u << 0,
    MP_XFCC_URI = 1u << 1,
    MP_XFCC_CERT = 1u << 2,
    MP_XFCC_CHAIN = 1u << 3,
    MP_XFCC_DNS = 1u << 4,
};

typedef struct mp_hcm_config {
    char *stat_prefix;
    mp_codec_type_t codec_type;
    mp_route_table_t *routes;       /* inline route_config */
    mp_http_filter_t *http_filters; /* in order; the last is terminal (the router) */
    uint32_t n_http_filters;
    uint32_t max_request_headers_kb;      /* default 60 */
    uint32_t max_headers_count;           /* default 100 */
    uint64_t stream_idle_timeout_ms;      /* default 300000 (5 min); 0 disables */
    uint64_t request_timeout_ms;          /* default 0 (disabled) */
    uint64_t request_headers_timeout_ms;  /* default 0 (disabled) */
    uint64_t idle_timeout_ms;             /* connection idle; default 3600000 (1 h); 0 disables */
    uint64_t drain_timeout_ms;            /* default 5000 */
    bool normalize_path;                  /* default false (Envoy's default without runtime) */
    bool merge_slashes;                   /* default false */
    mp_escaped_slashes_t escaped_slashes; /* path_with_escaped_slashes_action */
    bool use_remote_address;              /* default false */
    uint32_t xff_num_trusted_hops;
    bool generate_request_id; /* default true */
    bool preserve_external_request_id;
    char *server_name;                /* default "magpie" */
    mp_server_header_t server_header; /* server_header_transformation */
    bool proxy_100_continue;
    mp_xfcc_mode_t xfcc_mode;      /* forward_client_cert_details */
    uint32_t xfcc_details;         /* set_current_client_cert_details: MP_XFCC_* bits */
    mp_h2_options_t h2;            /* http2_protocol_options; defaults when absent */
    mp_upgrade_config_t *upgrades; /* upgrade_configs (connect_config always false) */
    uint32_t n_upgrades;
    uint64_t max_stream_duration_ms; /* common_http_protocol_options.max_stream_duration; 0: none */
    mp_access_log_t *access_logs;
    uint32_t n_access_logs;
    mp_http_stats_t stats;
} mp_hcm_config_t;

typedef struct mp_listener_stats {
    mp_stat_id_t downstream_cx_total, downstream_cx_active, downstream_cx_destroy,
        no_filter_chain_match, downstream_pre_cx_timeout;
} mp_listener_stats_t;

/* The listener filters' counters.  Envoy roots them at tls_inspector. and http_inspector.,
 * without a listener prefix: every listener with the filter counts into the same ones. */
typedef struct mp_inspector_stats {
    mp_stat_id_t client_hello_too_large, tls_found, tls_not_found, alpn_found, alpn_not_found,
        sni_found, sni_not_found;                                         /* tls_inspector. */
    mp_stat_id_t http10_found, http11_found, http2_found, http_not_found; /* http_inspector. */
} mp_inspector_stats_t;

/* ---- the TCP proxy network filter (envoy.filters.network.tcp_proxy) ---- */

typedef struct mp_tcp_proxy_stats {
    mp_stat_id_t downstream_cx_total, downstream_cx_no_route, downstream_cx_rx_bytes_total,
        downstream_cx_tx_bytes_total, downstream_flow_control_paused_reading_total,
        downstream_flow_control_resumed_reading_total, idle_timeout, upstream_flush_total;
} mp_tcp_proxy_stats_t;

typedef struct mp_tcp_cluster_weight {
    char *name;
    mp_cluster_t *cluster; /* resolved at translation; NULL if unknown (connections are closed
                              and counted in downstream_cx_no_route, as Envoy does) */
    uint32_t weight;       /* >= 1; 1 for the single `cluster` form */
} mp_tcp_cluster_weight_t;

typedef struct mp_tcp_proxy_config {
    char *stat_prefix;
    mp_tcp_cluster_weight_t *clusters; /* `cluster` gives exactly one entry */
    uint32_t n_clusters;
    uint64_t total_weight;
    uint64_t idle_timeout_ms;      /* default 3600000 (1 h); 0 disables */
    uint32_t max_connect_attempts; /* default 1 */
    mp_access_log_t *access_logs;
    uint32_t n_access_logs;
    mp_tcp_proxy_stats_t stats; /* tcp.<stat_prefix>. */
} mp_tcp_proxy_config_t;

/* ---- filter chains and their match (envoy.config.listener.v3.FilterChainMatch) ---- */

/* An IP address as the matcher compares it: IPv4 (4 bytes) or IPv6 (16); an IPv4-mapped IPv6
 * address is stored as IPv4. */
typedef struct mp_ip {
    uint8_t family; /* AF_INET, AF_INET6, or 0: unknown (never matches a range) */
    uint8_t b[16];
} mp_ip_t;

/* core.v3.CidrRange: address_prefix/prefix_len, host bits cleared at translation. */
typedef struct mp_cidr {
    mp_ip_t ip;
    uint8_t len;
} mp_cidr_t;

typedef enum mp_source_type {
    MP_SOURCE_ANY,      /* ANY (the default; matches every connection, as a fallback) */
    MP_SOURCE_LOCAL,    /* SAME_IP_OR_LOOPBACK: source is loopback or the destination IP */
    MP_SOURCE_EXTERNAL, /* EXTERNAL: anything else */
} mp_source_type_t;

/* One chain's criteria; an empty criterion (0, NULL, n == 0, MP_SOURCE_ANY) matches any
 * connection but loses to a chain that names a matching value (proxy/chain_match.c). */
typedef struct mp_chain_match {
    uint32_t destination_port; /* 0: any */
    mp_cidr_t *prefix_ranges;  /* destination IP */
    uint32_t n_prefix_ranges;
    char **server_names; /* lower case; exact, or "*.suffix" (the suffix stored with its dot) */
    uint32_t n_server_names;
    char *transport_protocol; /* "tls", "raw_buffer", ...; NULL: any */
    char **application_protocols;
    uint32_t n_application_protocols;
    mp_cidr_t *direct_source_prefix_ranges;
    uint32_t n_direct_source_prefix_ranges;
    mp_source_type_t source_type;
    mp_cidr_t *source_prefix_ranges;
    uint32_t n_source_prefix_ranges;
    uint32_t *source_ports;
    uint32_t n_source_ports;
} mp_chain_match_t;

/* One filter chain: its match, its terminal network filter (exactly one of hcm and tcp_proxy)
 * and its transport socket.  Owned by the listener (and so by the snapshot). */
typedef struct mp_filter_chain {
    char *name; /* FilterChain.name, or "" */
    mp_chain_match_t match;
    mp_hcm_config_t *hcm;             /* HTTP connection manager, or NULL */
    mp_tcp_proxy_config_t *tcp_proxy; /* TCP proxy, or NULL */
    mp_tls_ctx_t *tls;                /* transport_socket (DownstreamTlsContext), or NULL: raw */
    /* envoy.filters.network.rbac filters before the terminal one, in order (proxy/rbac_network.c):
     * checked when a plain connection is accepted, or right after the TLS handshake. */
    struct mp_rbac_filter_config *rbac_filters;
    uint32_t n_rbac_filters;
    /* envoy.filters.network.local_ratelimit filters (include/magpie/ratelimit.h): a token each
     * per accepted connection, before TLS and everything else. */
    struct mp_net_ratelimit *net_ratelimits;
    uint32_t n_net_ratelimits;
} mp_filter_chain_t;

/* What the listener filters and the chains need, decided at translation. */
enum {
    MP_CHAIN_USES_ADDRESSES = 1 << 0, /* some chain matches on an address or a port */
    MP_CHAIN_USES_TLS = 1 << 1,       /* server_names or transport_protocol */
    MP_CHAIN_USES_ALPN = 1 << 2,      /* application_protocols */
};

typedef struct mp_listener {
    char *name;
    mp_addr_t addr;
    /* the packed envoy.config.listener.v3.Listener: a worker keeps the sockets of a listener
     * whose name and bytes are unchanged in a new snapshot (proxy/worker.c) */
    uint8_t *pb;
    size_t pb_len;
    uint32_t per_connection_buffer_limit_bytes; /* default 1 MiB */
    mp_filter_chain_t *chains;                  /* filter_chains, in config order */
    uint32_t n_chains;
    mp_filter_chain_t *default_chain;     /* default_filter_chain, or NULL */
    bool tls_inspector;                   /* envoy.filters.listener.tls_inspector configured */
    bool http_inspector;                  /* envoy.filters.listener.http_inspector configured */
    uint64_t listener_filters_timeout_ms; /* default 15000; 0: no timeout */
    bool continue_on_listener_filters_timeout; /* default false: close on timeout */
    unsigned chain_uses;                       /* MP_CHAIN_USES_* over all chains */
    mp_listener_stats_t stats;                 /* listener.<addr>. */
    mp_inspector_stats_t inspector_stats;      /* registered for the inspectors configured */
} mp_listener_t;

/* ---- the snapshot ---- */

typedef struct mp_config {
    atomic_uint refs;
    uint64_t generation;
    mp_listener_t *listeners;
    uint32_t n_listeners;
    mp_cluster_t **clusters;
    uint32_t n_clusters;
    bool has_admin;
    mp_addr_t admin_addr;
    char *node_id;
    char *node_cluster;
    mp_locality_t node_locality; /* node.locality; strings never NULL */
    char *local_cluster_name;    /* cluster_manager.local_cluster_name, or NULL */
    void *bootstrap;             /* the validated Bootstrap message, for /config_dump (owned) */
    /* Every TLS context of this snapshot, in creation order: the SDS watcher and /certs find
     * them here.  The array is owned; the contexts belong to their listeners and clusters. */
    mp_tls_ctx_t **tls_ctxs;
    uint32_t n_tls_ctxs;
} mp_config_t;

/* Reference counting; any thread.  The last unref frees everything the snapshot owns. */
mp_config_t *mp_config_ref(mp_config_t *c);
void mp_config_unref(mp_config_t *c);

/* Frees l's strings.  Whether a and b are the same locality (all three fields equal). */
void mp_locality_clear(mp_locality_t *l);
bool mp_locality_equal(const mp_locality_t *a, const mp_locality_t *b);

/* Cluster refs; any thread.  The last unref frees the cluster (mp_config__cluster_free). */
mp_cluster_t *mp_cluster_ref(mp_cluster_t *c);
void mp_cluster_unref(mp_cluster_t *c);

/* Cluster lookup by name; NULL when absent. */
mp_cluster_t *mp_config_find_cluster(const mp_config_t *c, const char *name);

/* Host sets.  acquire returns the current set with a ref taken (worker or main); release drops
 * it.  publish (main thread) installs a new set, taking ownership of the caller's ref, and
 * releases the old. */
mp_hostset_t *mp_cluster_hosts_acquire(mp_cluster_t *c);
void mp_hostset_release(mp_hostset_t *hs);
void mp_cluster_hosts_publish(mp_cluster_t *c, mp_hostset_t *hs);
mp_hostset_t *mp_hostset_new(uint32_t n); /* refs = 1, hosts zeroed */
/* Gives each host of fresh without health the health of the host with the same address in old
 * (a ref), or a new healthy one; old may be NULL.  Main thread, before publishing fresh. */
void mp_hostset_adopt_health(mp_hostset_t *fresh, const mp_hostset_t *old);
/* The same, but a host that gets a new record starts with flags (MP_HEALTH_*): a cluster with
 * active health checks passes mp_hc_initial_flags(c) so that DNS never publishes an unchecked
 * host as usable.  Main thread. */
void mp_hostset_adopt_health_flags(mp_hostset_t *fresh, const mp_hostset_t *old, uint32_t flags);
/* Hosts of hs with no MP_HEALTH_UNUSABLE flag (the membership_healthy gauge).  Any thread. */
uint32_t mp_hostset_count_usable(const mp_hostset_t *hs);

/* Sorts fresh's hosts by (priority, locality), builds its groups and sums its weights.  Main
 * thread, once, before adopt_health and publish. */
void mp_hostset_finish(mp_hostset_t *hs);
/* Copies what a host inherits from its endpoint (weight, priority, locality, EDS health). */
void mp_host_from_spec(mp_host_t *h, const mp_endpoint_spec_t *ep);

/* Health state: new (refs 1, flags 0), ref, unref (frees at 0); any thread. */
mp_host_health_t *mp_host_health_new(void);
mp_host_health_t *mp_host_health_ref(mp_host_health_t *h);
void mp_host_health_unref(mp_host_health_t *h);
/* Sets or clears flag on h; returns the flags before.  Any thread (the main thread in practice).
 * A change bumps the health generation (below). */
uint32_t mp_host_health_set(mp_host_health_t *h, uint32_t flag, bool on);

/* Process-wide count of host health changes.  A worker's balancer caches per-priority healthy
 * counts and recounts only when this moved (proxy/lb.c says why one counter for all clusters
 * is enough).  Bumped with release after the flag changed, so a reader that loads it with
 * acquire and then reads flags sees flags at least that new. */
extern atomic_uint_fast64_t mp__health_generation;
static inline uint64_t mp_host_health_generation(void)
{
    return atomic_load_explicit(&mp__health_generation, memory_order_acquire);
}

/* Whether h is healthy but degraded (usable, with a MP_HEALTH_DEGRADED flag).  Worker. */
static inline bool mp_host_degraded(const mp_host_t *h)
{
    uint32_t f = atomic_load_explicit(&h->health->flags, memory_order_relaxed);
    return (f & MP_HEALTH_UNUSABLE) == 0 && (f & MP_HEALTH_DEGRADED) != 0;
}

/* Whether the load balancer may send a request to h: no MP_HEALTH_UNUSABLE flag.  Worker. */
static inline bool mp_host_usable(const mp_host_t *h)
{
    return (atomic_load_explicit(&h->health->flags, memory_order_relaxed) & MP_HEALTH_UNUSABLE) ==
           0;
}

/* Parses "ip:port" / "[v6]:port" or an IP and a port into addr.  Returns 0 or MP_ERROR. */
int mp_addr_parse(mp_addr_t *addr, const char *ip, uint16_t port);
void mp_addr_format(mp_addr_t *addr);

#endif
