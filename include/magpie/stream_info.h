/* What happened to one request: the facts the access log, stats and response flags read.
 * Lives inside the stream that it describes; worker thread. */
#ifndef MAGPIE_STREAM_INFO_H
#define MAGPIE_STREAM_INFO_H

#include <stdint.h>
#include <sys/time.h>

#include "magpie/http.h"

/* Envoy's response flags, one bit each; mp_response_flags_format writes the short letters. */
typedef enum mp_response_flag {
    MP_RF_NO_HEALTHY_UPSTREAM = 1u << 0,        /* UH */
    MP_RF_UPSTREAM_CONNECT_FAIL = 1u << 1,      /* UF */
    MP_RF_UPSTREAM_OVERFLOW = 1u << 2,          /* UO */
    MP_RF_NO_ROUTE = 1u << 3,                   /* NR */
    MP_RF_UPSTREAM_RETRY_LIMIT = 1u << 4,       /* URX */
    MP_RF_NO_CLUSTER = 1u << 5,                 /* NC */
    MP_RF_DOWNSTREAM_CONN_TERM = 1u << 6,       /* DC */
    MP_RF_UPSTREAM_CONN_TERM = 1u << 7,         /* UC */
    MP_RF_UPSTREAM_RESET = 1u << 8,             /* UR */
    MP_RF_UPSTREAM_TIMEOUT = 1u << 9,           /* UT */
    MP_RF_STREAM_IDLE_TIMEOUT = 1u << 10,       /* SI */
    MP_RF_DOWNSTREAM_PROTOCOL_ERROR = 1u << 11, /* DPE */
    MP_RF_UPSTREAM_PROTOCOL_ERROR = 1u << 12,   /* UPE */
    MP_RF_LOCAL_RESET = 1u << 13,               /* LR */
    MP_RF_DURATION_TIMEOUT = 1u << 14,          /* DT */
    MP_RF_DOWNSTREAM_REMOTE_RESET = 1u << 15,   /* DR */
    MP_RF_DELAY_INJECTED = 1u << 16,            /* DI */
    MP_RF_FAULT_INJECTED = 1u << 17,            /* FI */
    MP_RF_RATE_LIMITED = 1u << 18,              /* RL */
} mp_response_flag_t;

/* Writes flags as Envoy does ("UF,URX"; "-" when none) into out (NUL-terminated); returns the
 * length written. */
size_t mp_response_flags_format(uint32_t flags, char *out, size_t cap);

struct mp_tls_ident;

typedef struct mp_stream_info {
    struct timeval start_time;     /* wall clock, for %START_TIME% */
    uint64_t start_ns;             /* monotonic */
    uint64_t end_ns;               /* monotonic; 0 while running */
    const mp_http_msg_t *request;  /* as received (after normalisation); may be NULL */
    const mp_http_msg_t *response; /* as sent downstream; may be NULL */
    mp_http_version_t protocol;
    int response_code; /* 0 when none was sent */
    uint32_t response_flags;
    uint64_t bytes_received;               /* request body bytes */
    uint64_t bytes_sent;                   /* response body bytes */
    const char *upstream_host;             /* "ip:port" or NULL */
    const char *upstream_cluster;          /* or NULL */
    const char *downstream_remote_address; /* "ip:port" */
    const char *downstream_local_address;
    const char *route_name;
    const char *response_code_details;
    uint32_t attempt_count; /* upstream attempts (1 + retries); 0 when none was made */
    /* The downstream connection's TLS identity cache (include/magpie/tls_ident.h), owned by the
     * connection, which outlives the log line; NULL when the connection is not TLS.  The
     * access log loads it on first use (%DOWNSTREAM_PEER_URI_SAN%, %DOWNSTREAM_TLS_VERSION%...). */
    struct mp_tls_ident *downstream_tls;
} mp_stream_info_t;

#endif
