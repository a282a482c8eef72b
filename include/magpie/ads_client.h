/* The gRPC ADS client (docs/dynamic-config.md "ADS"): the bootstrap's
 * dynamic_resources.ads_config (api_type GRPC or DELTA_GRPC, envoy_grpc naming a static cluster)
 * opens one HTTP/2 cleartext connection to that cluster's first host carrying one
 * StreamAggregatedResources (or DeltaAggregatedResources) call, drives the xDS session
 * (include/magpie/xds_session.h) with it, and hands accepted Listener and Cluster resources to
 * the rebuild the file source uses (mp_file_source_offer).  A stream that ends is replaced after
 * the session's jittered back-off; the configuration keeps serving meanwhile.
 *
 * The HTTP/2 client is a compact nghttp2 session of its own (xds/ads_client.c), not the data
 * path's upstream codec.  Main thread. */
#ifndef MAGPIE_ADS_CLIENT_H
#define MAGPIE_ADS_CLIENT_H

#include "magpie/common.h"
#include "magpie/server.h"

/* Reads s's bootstrap; nothing to do (0) without ads_config.  Returns MP_ERROR with err set for
 * an ads_config it cannot serve.  Connects at once; after mp_file_source_start. */
int mp_ads_start(mp_server_t *s, mp_err_t *err);

/* Closes the stream and frees everything; safe without a start. */
void mp_ads_stop(void);

#endif
