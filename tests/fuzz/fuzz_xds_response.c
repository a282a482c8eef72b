/* libFuzzer target: the xDS client state machine (include/magpie/xds_session.h) fed one
 * control-plane message.  The first input byte picks SotW or delta and whether the applier
 * rejects; the rest is the DiscoveryResponse / DeltaDiscoveryResponse.  Beyond "no crash, no
 * leak", it checks the contract: on_message returns 0 or MP_ERROR (with a message); the applier
 * sees only resources with names and, unless told it is complete, no more than the response
 * held; every request the session then produces, and the reconnect requests after a reset,
 * decode as the request type with the session's type URL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "magpie/xds_session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const types[] = {MP_XDS_TYPE_CLUSTER, MP_XDS_TYPE_LISTENER, MP_XDS_TYPE_ENDPOINT,
                                    MP_XDS_TYPE_ROUTE, MP_XDS_TYPE_SECRET};

static int on_apply(void *ctx, const char *type_url, const mp_xds_update_t *u, mp_err_t *err)
{
    const uint8_t *flags = ctx;
    for (size_t i = 0; i < u->n_resources; i++) {
        const mp_xds_resource_t *r = &u->resources[i];
        if (r->name == NULL || r->name[0] == '\0' || (r->value == NULL && r->len != 0))
            abort();
    }
    for (size_t i = 0; i < u->n_removed; i++)
        if (u->removed[i] == NULL)
            abort();
    if (u->mode == MP_XDS_SOTW && !u->complete && u->n_removed != 0)
        abort(); /* absence means nothing for RDS/EDS/SDS */
    return (*flags & 2) ? mp_err_set(err, "rejected by the fuzzer") : 0;
}

static void check_requests(mp_xds_session_t *s, mp_xds_mode_t mode)
{
    mp_xds_request_t r;
    for (int i = 0; i < 16 && mp_xds_session_next_request(s, &r) == 1; i++) {
        ProtobufCMessage *m =
            mode == MP_XDS_DELTA
                ? protobuf_c_message_unpack(
                      &envoy__service__discovery__v3__delta_discovery_request__descriptor, NULL,
                      r.len, r.data)
                : protobuf_c_message_unpack(
                      &envoy__service__discovery__v3__discovery_request__descriptor, NULL, r.len,
                      r.data);
        if (m == NULL || r.type_url == NULL)
            abort();
        protobuf_c_message_free_unpacked(m, NULL);
        mp_xds_request_clear(&r);
    }
    if (mp_xds_session_next_request(s, &r) == 1)
        abort(); /* five types: never more than a handful of requests pending */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    mp_xds_mode_t mode = (flags & 1) ? MP_XDS_DELTA : MP_XDS_SOTW;
    mp_xds_node_t node = {.id = "fuzz", .cluster = "fuzz"};
    mp_xds_session_t *s = mp_xds_session_new(mode, &node, on_apply, &flags);
    const char *names[] = {"a", "b", "c"};
    mp_xds_session_subscribe(s, types[0], NULL, 0);
    mp_xds_session_subscribe(s, types[1], NULL, 0);
    for (size_t i = 2; i < 5; i++)
        mp_xds_session_subscribe(s, types[i], names, 3);
    check_requests(s, mode);

    mp_err_t err;
    err.msg[0] = '\0';
    int rc = mp_xds_session_on_message(s, data + 1, size - 1, 0, &err);
    if (rc != 0 && (rc != MP_ERROR || err.msg[0] == '\0'))
        abort();
    check_requests(s, mode);
    /* A second copy exercises the path where state already exists. */
    rc = mp_xds_session_on_message(s, data + 1, size - 1, 0, &err);
    check_requests(s, mode);
    mp_xds_session_reset(s);
    check_requests(s, mode);
    mp_xds_session_free(s);
    return 0;
}
