/* The xDS client state machine (include/magpie/xds_session.h), scripted message by message:
 * each test plays the control plane, encoding responses with the protoc-c generated types, and
 * decodes every request the session produces to check version_info, response_nonce,
 * resource_names / subscribe lists, node and error_detail. */
#include <stdlib.h>
#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include "magpie/xds_session.h"
#include "unit.h"

typedef Envoy__Service__Discovery__V3__DiscoveryRequest pb_req_t;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse pb_resp_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest pb_dreq_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse pb_dresp_t;
typedef Envoy__Service__Discovery__V3__Resource pb_resource_t;

#define LDS MP_XDS_TYPE_LISTENER
#define CDS MP_XDS_TYPE_CLUSTER
#define EDS MP_XDS_TYPE_ENDPOINT
#define RDS MP_XDS_TYPE_ROUTE

/* ---- the applier: records the last update it saw ---- */

typedef struct rec {
    int calls;
    char type_url[128];
    bool complete;
    mp_xds_mode_t mode;
    char names[16][32];
    char versions[16][32];
    int64_t ttl[16];
    bool heartbeat[16];
    size_t n;
    char removed[16][32];
    size_t n_removed;
    const char *reject; /* when set, the next update is rejected with this text */
    /* Called inside apply, as an applier following CDS would set the EDS names. */
    mp_xds_session_t *s;
    const char *eds_names[4];
    size_t n_eds_names;
} rec_t;

static int on_apply(void *ctx, const char *type_url, const mp_xds_update_t *u, mp_err_t *err)
{
    rec_t *r = ctx;
    r->calls++;
    snprintf(r->type_url, sizeof(r->type_url), "%s", type_url);
    r->complete = u->complete;
    r->mode = u->mode;
    r->n = u->n_resources < 16 ? u->n_resources : 16;
    for (size_t i = 0; i < r->n; i++) {
        snprintf(r->names[i], sizeof(r->names[i]), "%s", u->resources[i].name);
        snprintf(r->versions[i], sizeof(r->versions[i]), "%s", u->resources[i].version);
        r->ttl[i] = u->resources[i].ttl_ms;
        r->heartbeat[i] = u->resources[i].value == NULL;
    }
    r->n_removed = u->n_removed < 16 ? u->n_removed : 16;
    for (size_t i = 0; i < r->n_removed; i++)
        snprintf(r->removed[i], sizeof(r->removed[i]), "%s", u->removed[i]);
    if (r->reject != NULL) {
        const char *msg = r->reject;
        r->reject = NULL;
        return mp_err_set(err, "%s", msg);
    }
    if (r->s != NULL && strcmp(type_url, CDS) == 0)
        mp_xds_session_set_names(r->s, EDS, r->eds_names, r->n_eds_names);
    return 0;
}

/* ---- encoding what a control plane sends ---- */

static ProtobufCBinaryData pack_msg(const ProtobufCMessage *m)
{
    ProtobufCBinaryData b;
    b.len = protobuf_c_message_get_packed_size(m);
    b.data = malloc(b.len + 1);
    protobuf_c_message_pack(m, b.data);
    return b;
}

/* A resource of type_url named `name`, serialised. */
static ProtobufCBinaryData resource_bytes(const char *type_url, const char *name)
{
    if (strcmp(type_url, LDS) == 0) {
        Envoy__Config__Listener__V3__Listener l = ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT;
        l.name = (char *)name;
        return pack_msg(&l.base);
    }
    if (strcmp(type_url, CDS) == 0) {
        Envoy__Config__Cluster__V3__Cluster c = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT;
        c.name = (char *)name;
        return pack_msg(&c.base);
    }
    if (strcmp(type_url, RDS) == 0) {
        Envoy__Config__Route__V3__RouteConfiguration rc =
            ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
        rc.name = (char *)name;
        return pack_msg(&rc.base);
    }
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla =
        ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT;
    cla.cluster_name = (char *)name;
    return pack_msg(&cla.base);
}

typedef struct msg {
    uint8_t *data;
    size_t len;
} msg_t;

/* A DiscoveryResponse whose resources are "type_url:name" specs; a spec starting with "W" is
 * wrapped in a Resource with a 5 s TTL; "H:name" is a wrapped TTL heartbeat (no resource). */
static msg_t sotw_response(const char *type_url, const char *version, const char *nonce,
                           const char *const *specs, size_t n)
{
    pb_resp_t resp = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    Google__Protobuf__Any anys[8], *ptrs[8];
    resp.type_url = (char *)type_url;
    resp.version_info = (char *)version;
    resp.nonce = (char *)nonce;
    resp.n_resources = n;
    resp.resources = ptrs;
    for (size_t i = 0; i < n; i++) {
        const char *spec = specs[i];
        const char *colon = strrchr(spec, ':');
        char type[128];
        bool wrap = spec[0] == 'W' || spec[0] == 'H';
        const char *t0 = wrap ? spec + 1 : spec;
        snprintf(type, sizeof(type), "%.*s", (int)(colon - t0), t0);
        google__protobuf__any__init(&anys[i]);
        ptrs[i] = &anys[i];
        if (!wrap) {
            anys[i].type_url = strdup(type);
            anys[i].value = resource_bytes(type, colon + 1);
            continue;
        }
        pb_resource_t w = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
        Google__Protobuf__Duration ttl = GOOGLE__PROTOBUF__DURATION__INIT;
        Google__Protobuf__Any inner = GOOGLE__PROTOBUF__ANY__INIT;
        ttl.seconds = 5;
        w.ttl = &ttl;
        w.name = (char *)colon + 1;
        if (spec[0] == 'W') {
            inner.type_url = type;
            inner.value = resource_bytes(type, colon + 1);
            w.resource = &inner;
        }
        anys[i].type_url = strdup(MP_XDS_TYPE_RESOURCE);
        anys[i].value = pack_msg(&w.base);
        free(inner.value.data);
    }
    ProtobufCBinaryData b = pack_msg(&resp.base);
    for (size_t i = 0; i < n; i++) {
        free(anys[i].type_url);
        free(anys[i].value.data);
    }
    return (msg_t){b.data, b.len};
}

/* A DeltaDiscoveryResponse: added "name@version" resources of type_url, and removed names. */
static msg_t delta_response(const char *type_url, const char *nonce, const char *const *added,
                            size_t n_added, const char *const *removed, size_t n_removed)
{
    pb_dresp_t resp = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    pb_resource_t res[8], *ptrs[8];
    Google__Protobuf__Any anys[8];
    char names[8][32];
    resp.type_url = (char *)type_url;
    resp.nonce = (char *)nonce;
    resp.n_resources = n_added;
    resp.resources = ptrs;
    for (size_t i = 0; i < n_added; i++) {
        const char *at = strchr(added[i], '@');
        snprintf(names[i], sizeof(names[i]), "%.*s", (int)(at - added[i]), added[i]);
        envoy__service__discovery__v3__resource__init(&res[i]);
        google__protobuf__any__init(&anys[i]);
        anys[i].type_url = (char *)type_url;
        anys[i].value = resource_bytes(type_url, names[i]);
        res[i].name = names[i];
        res[i].version = (char *)at + 1;
        res[i].resource = &anys[i];
        ptrs[i] = &res[i];
    }
    resp.n_removed_resources = n_removed;
    resp.removed_resources = (char **)removed;
    ProtobufCBinaryData b = pack_msg(&resp.base);
    for (size_t i = 0; i < n_added; i++)
        free(anys[i].value.data);
    return (msg_t){b.data, b.len};
}

static int feed(mp_xds_session_t *s, msg_t m)
{
    mp_err_t err;
    int rc = mp_xds_session_on_message(s, m.data, m.len, 0, &err);
    free(m.data);
    return rc;
}

/* The next SotW request, decoded; NULL when the session has nothing to send. */
static pb_req_t *next_sotw(mp_xds_session_t *s)
{
    mp_xds_request_t r;
    if (mp_xds_session_next_request(s, &r) != 1)
        return NULL;
    pb_req_t *req = envoy__service__discovery__v3__discovery_request__unpack(NULL, r.len, r.data);
    if (req != NULL && strcmp(req->type_url, r.type_url) != 0)
        req = NULL;
    mp_xds_request_clear(&r);
    return req;
}

static pb_dreq_t *next_delta(mp_xds_session_t *s)
{
    mp_xds_request_t r;
    if (mp_xds_session_next_request(s, &r) != 1)
        return NULL;
    pb_dreq_t *req =
        envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, r.len, r.data);
    mp_xds_request_clear(&r);
    return req;
}

static void free_req(void *m)
{
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
}

/* The names of a request joined by ',' for compact checks. */
static const char *joined(char **v, size_t n)
{
    static char buf[256];
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(buf, ",");
        strcat(buf, v[i]);
    }
    return buf;
}

static mp_xds_session_t *new_session(mp_xds_mode_t mode, rec_t *r)
{
    static const char *features[] = {"envoy.lb.does_not_support_overprovisioning"};
    cJSON *md = cJSON_Parse("{\"ISTIO_VERSION\":\"1.20\",\"LABELS\":{\"app\":\"a\"}}");
    mp_xds_node_t node = {.id = "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
                          .cluster = "a.ns",
                          .metadata = md,
                          .region = "eu",
                          .zone = "eu-1a",
                          .user_agent_version = "0.6",
                          .client_features = features,
                          .n_client_features = 1};
    memset(r, 0, sizeof(*r));
    mp_xds_session_t *s = mp_xds_session_new(mode, &node, on_apply, r);
    cJSON_Delete(md);
    return s;
}

/* ---- SotW ---- */

/* The first request of a stream: node in full, the type, empty version and nonce, wildcard as
 * the empty list; later requests carry no node. */
static void test_first_request_shape(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    CHECK_INT(mp_xds_session_subscribe(s, CDS, NULL, 0), 0);
    CHECK_INT(mp_xds_session_subscribe(s, LDS, NULL, 0), 0);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL);
    if (q != NULL) {
        CHECK_STR(q->type_url, CDS);
        CHECK_STR(q->version_info, "");
        CHECK_STR(q->response_nonce, "");
        CHECK_INT(q->n_resource_names, 0);
        CHECK(q->error_detail == NULL);
        CHECK(q->node != NULL);
        if (q->node != NULL) {
            CHECK_STR(q->node->id, "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local");
            CHECK_STR(q->node->cluster, "a.ns");
            CHECK_STR(q->node->user_agent_name, "magpie");
            CHECK_STR(q->node->user_agent_version, "0.6");
            CHECK(q->node->locality != NULL && strcmp(q->node->locality->zone, "eu-1a") == 0);
            CHECK_INT(q->node->n_client_features, 1);
            CHECK(q->node->metadata != NULL && q->node->metadata->n_fields == 2);
        }
    }
    free_req(q);
    q = next_sotw(s);
    CHECK(q != NULL && strcmp(q->type_url, LDS) == 0 && q->node == NULL);
    free_req(q);
    CHECK(next_sotw(s) == NULL);
    mp_xds_session_free(s);
}

/* ACK carries the new version and the nonce; NACK the old version, the nonce and the applier's
 * text, and the version stays; the error is sent once. */
static void test_ack_nack(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    free_req(next_sotw(s));
    const char *v1[] = {CDS ":a", CDS ":b"};
    CHECK_INT(feed(s, sotw_response(CDS, "v1", "n1", v1, 2)), 0);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.n, 2);
    CHECK(r.complete);
    CHECK_STR(r.names[0], "a");
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && q->error_detail == NULL);
    if (q != NULL) {
        CHECK_STR(q->version_info, "v1");
        CHECK_STR(q->response_nonce, "n1");
    }
    free_req(q);
    CHECK_STR(mp_xds_session_version(s, CDS), "v1");

    r.reject = "clusters[0].connect_timeout: invalid duration";
    const char *v2[] = {CDS ":a"};
    CHECK_INT(feed(s, sotw_response(CDS, "v2", "n2", v2, 1)), 0);
    CHECK_INT(r.calls, 2);
    q = next_sotw(s);
    CHECK(q != NULL && q->error_detail != NULL);
    if (q != NULL && q->error_detail != NULL) {
        CHECK_STR(q->version_info, "v1");
        CHECK_STR(q->response_nonce, "n2");
        CHECK_INT(q->error_detail->code, MP_XDS_NACK_CODE);
        CHECK_STR(q->error_detail->message, "clusters[0].connect_timeout: invalid duration");
    }
    free_req(q);
    CHECK_STR(mp_xds_session_version(s, CDS), "v1");
    CHECK_STR(mp_xds_session_resource_version(s, CDS, "b"), "v1"); /* b was not removed */
    /* A later subscription change repeats version and nonce, not the error. */
    const char *x[] = {"x"};
    mp_xds_session_subscribe(s, CDS, x, 1);
    q = next_sotw(s);
    CHECK(q != NULL && q->error_detail == NULL);
    if (q != NULL) {
        CHECK_STR(q->response_nonce, "n2");
        CHECK_STR(joined(q->resource_names, q->n_resource_names), "*,x");
    }
    free_req(q);
    mp_xds_session_free(s);
}

/* A resource whose Any type differs from the response's, duplicate names and a nameless
 * resource are NACKed without calling the applier. */
static void test_invalid_responses_nack(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    free_req(next_sotw(s));
    const char *wrong[] = {CDS ":a", LDS ":l"};
    CHECK_INT(feed(s, sotw_response(CDS, "v1", "n1", wrong, 2)), 0);
    CHECK_INT(r.calls, 0);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && q->error_detail != NULL);
    if (q != NULL && q->error_detail != NULL) {
        CHECK(strstr(q->error_detail->message, "resources[1]") != NULL);
        CHECK(strstr(q->error_detail->message, "does not match") != NULL);
        CHECK_STR(q->version_info, "");
    }
    free_req(q);
    const char *dup[] = {CDS ":a", CDS ":a"};
    feed(s, sotw_response(CDS, "v1", "n2", dup, 2));
    q = next_sotw(s);
    CHECK(q != NULL && q->error_detail != NULL &&
          strstr(q->error_detail->message, "duplicate") != NULL);
    free_req(q);
    const char *noname[] = {CDS ":"};
    feed(s, sotw_response(CDS, "v1", "n3", noname, 1));
    q = next_sotw(s);
    CHECK(q != NULL && q->error_detail != NULL &&
          strstr(q->error_detail->message, "no name") != NULL);
    free_req(q);
    CHECK_INT(r.calls, 0);
    CHECK_STR(mp_xds_session_version(s, CDS), "");
    mp_xds_session_free(s);
}

/* Two responses before the client writes: one request, echoing only the newest nonce (a reply to
 * the older one would be stale and ignored by the plane).  A response for a type nobody
 * subscribed to is ignored without an ACK, as Envoy does. */
static void test_latest_nonce_and_unknown_type(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    free_req(next_sotw(s));
    const char *a[] = {CDS ":a"};
    feed(s, sotw_response(CDS, "v1", "n1", a, 1));
    feed(s, sotw_response(CDS, "v2", "n2", a, 1));
    CHECK_INT(r.calls, 2);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && strcmp(q->response_nonce, "n2") == 0 && strcmp(q->version_info, "v2") == 0);
    free_req(q);
    CHECK(next_sotw(s) == NULL);
    const char *l[] = {LDS ":l"};
    CHECK_INT(feed(s, sotw_response(LDS, "v1", "x1", l, 1)), 0);
    CHECK_INT(r.calls, 2);
    CHECK(next_sotw(s) == NULL);
    mp_xds_session_free(s);
}

/* LDS is full state: a listener missing from the next response is removed.  EDS is not: a
 * missing assignment stays, and the update says absence means nothing. */
static void test_removal_lds_vs_eds(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, LDS, NULL, 0);
    const char *names[] = {"c1", "c2"};
    mp_xds_session_subscribe(s, EDS, names, 2);
    free_req(next_sotw(s));
    free_req(next_sotw(s));
    const char *l12[] = {LDS ":l1", LDS ":l2"}, *l1[] = {LDS ":l1"};
    feed(s, sotw_response(LDS, "1", "a", l12, 2));
    free_req(next_sotw(s));
    feed(s, sotw_response(LDS, "2", "b", l1, 1));
    CHECK(r.complete);
    CHECK_INT(r.n_removed, 1);
    CHECK_STR(r.removed[0], "l2");
    CHECK(mp_xds_session_resource_version(s, LDS, "l2") == NULL);
    free_req(next_sotw(s));
    feed(s, sotw_response(LDS, "3", "c", NULL, 0)); /* empty LDS: every listener goes */
    CHECK_INT(r.n_removed, 1);
    CHECK_STR(r.removed[0], "l1");
    free_req(next_sotw(s));

    const char *e12[] = {EDS ":c1", EDS ":c2"}, *e1[] = {EDS ":c1"};
    feed(s, sotw_response(EDS, "1", "d", e12, 2));
    free_req(next_sotw(s));
    feed(s, sotw_response(EDS, "2", "e", e1, 1));
    CHECK(!r.complete);
    CHECK_INT(r.n_removed, 0);
    CHECK_INT(r.n, 1);
    CHECK_STR(mp_xds_session_resource_version(s, EDS, "c2"), "1");
    CHECK_STR(mp_xds_session_resource_version(s, EDS, "c1"), "2");
    free_req(next_sotw(s));
    mp_xds_session_free(s);
}

/* Named RDS: each change re-sends the full set with the last version and nonce; a resource not
 * asked for is dropped before the applier sees it. */
static void test_named_rds_growth(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, RDS, NULL, 0);
    CHECK(next_sotw(s) == NULL); /* a named type without names asks for nothing */
    const char *r1[] = {"r1"}, *r2[] = {"r2"}, *r23[] = {"r2", "r3"};
    mp_xds_session_subscribe(s, RDS, r1, 1);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && strcmp(joined(q->resource_names, q->n_resource_names), "r1") == 0);
    free_req(q);
    const char *resp[] = {RDS ":r1", RDS ":r9"};
    feed(s, sotw_response(RDS, "7", "n7", resp, 2));
    CHECK_INT(r.n, 1);
    CHECK_STR(r.names[0], "r1");
    free_req(next_sotw(s));
    mp_xds_session_subscribe(s, RDS, r2, 1);
    q = next_sotw(s);
    CHECK(q != NULL);
    if (q != NULL) {
        CHECK_STR(joined(q->resource_names, q->n_resource_names), "r1,r2");
        CHECK_STR(q->version_info, "7");
        CHECK_STR(q->response_nonce, "n7");
    }
    free_req(q);
    mp_xds_session_set_names(s, RDS, r23, 2);
    q = next_sotw(s);
    CHECK(q != NULL && strcmp(joined(q->resource_names, q->n_resource_names), "r2,r3") == 0);
    free_req(q);
    mp_xds_session_set_names(s, RDS, r23, 2); /* no change, no request */
    CHECK(next_sotw(s) == NULL);
    mp_xds_session_set_names(s, RDS, NULL, 0); /* empty list: unsubscribe all (istiod) */
    q = next_sotw(s);
    CHECK(q != NULL && q->n_resource_names == 0);
    free_req(q);
    mp_xds_session_free(s);
}

/* Once explicit names were sent on a wildcard type, the wildcard is spelled "*". */
static void test_wildcard_spelling(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, LDS, NULL, 0);
    free_req(next_sotw(s));
    const char *x[] = {"x"};
    mp_xds_session_subscribe(s, LDS, x, 1);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && strcmp(joined(q->resource_names, q->n_resource_names), "*,x") == 0);
    free_req(q);
    mp_xds_session_unsubscribe(s, LDS, x, 1);
    q = next_sotw(s);
    CHECK(q != NULL && strcmp(joined(q->resource_names, q->n_resource_names), "*") == 0);
    free_req(q);
    mp_xds_session_free(s);
}

/* Resources wrapped in envoy.service.discovery.v3.Resource are unwrapped, with their TTL; a
 * wrapper without a resource is a heartbeat; a wrapper holding the wrong type is NACKed. */
static void test_resource_wrapper(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    free_req(next_sotw(s));
    const char *mixed[] = {"W" CDS ":a", CDS ":b", "H" CDS ":c"};
    feed(s, sotw_response(CDS, "v1", "n1", mixed, 3));
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.n, 3);
    CHECK_STR(r.names[0], "a");
    CHECK_INT(r.ttl[0], 5000);
    CHECK(!r.heartbeat[0]);
    CHECK_STR(r.names[1], "b");
    CHECK_INT(r.ttl[1], -1);
    CHECK(r.heartbeat[2]);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && q->error_detail == NULL);
    free_req(q);
    const char *bad[] = {"W" LDS ":l"};
    feed(s, sotw_response(CDS, "v2", "n2", bad, 1));
    CHECK_INT(r.calls, 1);
    q = next_sotw(s);
    CHECK(q != NULL && q->error_detail != NULL && strcmp(q->version_info, "v1") == 0);
    free_req(q);
    mp_xds_session_free(s);
}

/* ADS ordering: the EDS names an applier sets while applying CDS go out after the CDS ACK. */
static void test_ads_ack_before_children(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, EDS, NULL, 0);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    r.s = s;
    r.eds_names[0] = "a";
    r.eds_names[1] = "b";
    r.n_eds_names = 2;
    free_req(next_sotw(s));
    CHECK(next_sotw(s) == NULL);
    const char *ab[] = {CDS ":a", CDS ":b"};
    feed(s, sotw_response(CDS, "1", "n1", ab, 2));
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL && strcmp(q->type_url, CDS) == 0);
    free_req(q);
    q = next_sotw(s);
    CHECK(q != NULL && strcmp(q->type_url, EDS) == 0 &&
          strcmp(joined(q->resource_names, q->n_resource_names), "a,b") == 0);
    free_req(q);
    mp_xds_session_free(s);
}

/* Reconnect: the node again, every subscription with the last accepted version, no nonce. */
static void test_sotw_reset(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    const char *r1[] = {"r1"};
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    mp_xds_session_subscribe(s, RDS, r1, 1);
    free_req(next_sotw(s));
    free_req(next_sotw(s));
    const char *a[] = {CDS ":a"};
    feed(s, sotw_response(CDS, "v9", "n9", a, 1));
    free_req(next_sotw(s));
    mp_xds_session_reset(s);
    pb_req_t *q = next_sotw(s);
    CHECK(q != NULL);
    if (q != NULL) {
        CHECK_STR(q->type_url, CDS);
        CHECK(q->node != NULL);
        CHECK_STR(q->version_info, "v9");
        CHECK_STR(q->response_nonce, "");
    }
    free_req(q);
    q = next_sotw(s);
    CHECK(q != NULL && q->node == NULL && strcmp(q->version_info, "") == 0 &&
          strcmp(joined(q->resource_names, q->n_resource_names), "r1") == 0);
    free_req(q);
    CHECK(next_sotw(s) == NULL);
    mp_xds_session_free(s);
}

/* tag + varint(len) + payload, into out; returns the new length. */
static size_t wrap_field(uint8_t tag, const uint8_t *payload, size_t len, uint8_t *out)
{
    size_t k = 0;
    out[k++] = tag;
    size_t v = len;
    do {
        out[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memmove(out + k, payload, len);
    return k + len;
}

/* A DeltaDiscoveryResponse nesting `depth` DynamicParameterConstraints, built inside out. */
static size_t nested_constraints(int depth, uint8_t *buf)
{
    uint8_t tmp[4096];
    size_t len = 0;
    for (int i = 0; i < depth + 2; i++) {
        /* not_constraints (4) ..., ResourceName.dynamic_parameter_constraints (2),
         * DeltaDiscoveryResponse.removed_resource_names (8) */
        uint8_t tag = i < depth ? 0x22 : i == depth ? 0x12 : 0x42;
        len = wrap_field(tag, buf, len, tmp);
        memcpy(buf, tmp, len);
    }
    return len;
}

/* Bytes that are not a message: a stream error (as Envoy's gRPC client fails the stream on an
 * undecodable message), nothing queued, nothing changed.  Nesting deeper than the bound is
 * refused before protobuf-c's recursive unpacker sees it. */
static void test_garbage(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    free_req(next_sotw(s));
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x22, 0x80};
    mp_err_t err;
    CHECK_INT(mp_xds_session_on_message(s, junk, sizeof(junk), 0, &err), MP_ERROR);
    CHECK(strstr(err.msg, "undecodable") != NULL);
    static const uint8_t truncated[] = {0x0a, 0x05, 'v', '1'};
    CHECK_INT(mp_xds_session_on_message(s, truncated, sizeof(truncated), 0, &err), MP_ERROR);
    CHECK(next_sotw(s) == NULL);
    CHECK_INT(r.calls, 0);
    mp_xds_session_free(s);

    /* DeltaDiscoveryResponse.removed_resource_names[0].dynamic_parameter_constraints
     * .not_constraints.not_constraints...: refused at 200 levels, decoded at 20. */
    s = new_session(MP_XDS_DELTA, &r);
    uint8_t buf[4096];
    size_t len = nested_constraints(200, buf);
    CHECK_INT(mp_xds_session_on_message(s, buf, len, 0, &err), MP_ERROR);
    len = nested_constraints(20, buf);
    CHECK_INT(mp_xds_session_on_message(s, buf, len, 0, &err), 0);
    mp_xds_session_free(s);
}

/* initial_fetch_timeout: pending until the first response or the deadline; 0 waits forever. */
static void test_fetch_timeout(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_SOTW, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    mp_xds_session_subscribe(s, LDS, NULL, 0);
    CHECK_INT(mp_xds_session_set_fetch_timeout(s, CDS, 1000, 100), 0);
    CHECK_INT(mp_xds_session_set_fetch_timeout(s, LDS, 0, 100), 0);
    CHECK_INT(mp_xds_session_set_fetch_timeout(s, EDS, 10, 100), MP_ERROR);
    CHECK(mp_xds_session_fetch_pending(s, CDS, 500));
    CHECK(!mp_xds_session_fetch_pending(s, CDS, 1100));
    CHECK(mp_xds_session_fetch_pending(s, LDS, 1000000));
    CHECK_INT(mp_xds_session_next_deadline(s), 1100);
    const char *a[] = {CDS ":a"};
    r.reject = "no"; /* a rejected response also ends the wait */
    feed(s, sotw_response(CDS, "1", "n", a, 1));
    CHECK(!mp_xds_session_fetch_pending(s, CDS, 500));
    CHECK(mp_xds_session_next_deadline(s) == UINT64_MAX);
    mp_xds_session_free(s);
}

/* ---- delta ---- */

static void test_delta_conversation(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_DELTA, &r);
    mp_xds_session_subscribe(s, CDS, NULL, 0);
    pb_dreq_t *q = next_delta(s);
    CHECK(q != NULL);
    if (q != NULL) {
        CHECK_STR(q->type_url, CDS);
        CHECK(q->node != NULL && strcmp(q->node->user_agent_name, "magpie") == 0);
        CHECK_INT(q->n_resource_names_subscribe, 0); /* legacy wildcard */
        CHECK_INT(q->n_initial_resource_versions, 0);
        CHECK_STR(q->response_nonce, "");
    }
    free_req(q);
    const char *add[] = {"a@1", "b@1"};
    feed(s, delta_response(CDS, "d1", add, 2, NULL, 0));
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.mode, MP_XDS_DELTA);
    CHECK(!r.complete);
    CHECK_INT(r.n, 2);
    q = next_delta(s);
    CHECK(q != NULL && strcmp(q->response_nonce, "d1") == 0 && q->error_detail == NULL &&
          q->node == NULL && q->n_resource_names_subscribe == 0);
    free_req(q);
    const char *change[] = {"a@2"}, *gone[] = {"b"};
    feed(s, delta_response(CDS, "d2", change, 1, gone, 1));
    CHECK_INT(r.n, 1);
    CHECK_STR(r.versions[0], "2");
    CHECK_INT(r.n_removed, 1);
    CHECK_STR(r.removed[0], "b");
    CHECK_STR(mp_xds_session_resource_version(s, CDS, "a"), "2");
    CHECK(mp_xds_session_resource_version(s, CDS, "b") == NULL);
    free_req(next_delta(s));
    /* NACK: versions unchanged, error_detail with the nonce. */
    r.reject = "bad a";
    const char *bad[] = {"a@3"};
    feed(s, delta_response(CDS, "d3", bad, 1, NULL, 0));
    q = next_delta(s);
    CHECK(q != NULL && q->error_detail != NULL && strcmp(q->response_nonce, "d3") == 0);
    if (q != NULL && q->error_detail != NULL)
        CHECK_STR(q->error_detail->message, "bad a");
    free_req(q);
    CHECK_STR(mp_xds_session_resource_version(s, CDS, "a"), "2");
    /* A name both updated and removed is NACKed. */
    const char *both[] = {"a"};
    feed(s, delta_response(CDS, "d4", bad, 1, both, 1));
    q = next_delta(s);
    CHECK(q != NULL && q->error_detail != NULL);
    free_req(q);

    /* Reconnect: node, wildcard, the versions held, no nonce. */
    mp_xds_session_reset(s);
    q = next_delta(s);
    CHECK(q != NULL);
    if (q != NULL) {
        CHECK(q->node != NULL);
        CHECK_STR(q->response_nonce, "");
        CHECK_INT(q->n_initial_resource_versions, 1);
        if (q->n_initial_resource_versions == 1) {
            CHECK_STR(q->initial_resource_versions[0]->key, "a");
            CHECK_STR(q->initial_resource_versions[0]->value, "2");
        }
    }
    free_req(q);
    mp_xds_session_free(s);
}

/* Named delta subscriptions: spontaneous (un)subscribe requests carry only the change and no
 * nonce; the reconnect request lists the whole interest. */
static void test_delta_named(void)
{
    rec_t r;
    mp_xds_session_t *s = new_session(MP_XDS_DELTA, &r);
    const char *e1[] = {"e1"}, *e2[] = {"e2"};
    mp_xds_session_subscribe(s, EDS, e1, 1);
    pb_dreq_t *q = next_delta(s);
    CHECK(q != NULL &&
          strcmp(joined(q->resource_names_subscribe, q->n_resource_names_subscribe), "e1") == 0);
    free_req(q);
    const char *add[] = {"e1@5", "e7@1"};
    feed(s, delta_response(EDS, "x1", add, 2, NULL, 0));
    CHECK_INT(r.n, 1); /* e7 was not asked for */
    free_req(next_delta(s));
    mp_xds_session_subscribe(s, EDS, e2, 1);
    q = next_delta(s);
    CHECK(q != NULL && strcmp(q->response_nonce, "") == 0 &&
          strcmp(joined(q->resource_names_subscribe, q->n_resource_names_subscribe), "e2") == 0 &&
          q->n_resource_names_unsubscribe == 0);
    free_req(q);
    mp_xds_session_unsubscribe(s, EDS, e1, 1);
    q = next_delta(s);
    CHECK(q != NULL && q->n_resource_names_subscribe == 0 &&
          strcmp(joined(q->resource_names_unsubscribe, q->n_resource_names_unsubscribe), "e1") ==
              0);
    free_req(q);
    CHECK(mp_xds_session_resource_version(s, EDS, "e1") == NULL);
    /* Subscribe then unsubscribe before writing: nothing to say about e3. */
    const char *e3[] = {"e3"};
    mp_xds_session_subscribe(s, EDS, e3, 1);
    mp_xds_session_unsubscribe(s, EDS, e3, 1);
    q = next_delta(s);
    CHECK(q != NULL && q->n_resource_names_subscribe == 0);
    free_req(q);
    mp_xds_session_reset(s);
    q = next_delta(s);
    CHECK(q != NULL &&
          strcmp(joined(q->resource_names_subscribe, q->n_resource_names_subscribe), "e2") == 0);
    free_req(q);
    mp_xds_session_free(s);
}

/* ---- back-off ---- */

static void test_backoff(void)
{
    CHECK_INT(mp_xds_backoff_ms(0, 500, 30000, 499), 499);
    CHECK_INT(mp_xds_backoff_ms(0, 500, 30000, 500), 0);
    CHECK_INT(mp_xds_backoff_ms(1, 500, 30000, 999), 999);
    CHECK_INT(mp_xds_backoff_ms(1, 500, 30000, 1000), 0);
    CHECK_INT(mp_xds_backoff_ms(5, 500, 30000, 15999), 15999);
    CHECK_INT(mp_xds_backoff_ms(6, 500, 30000, 29999), 29999);
    CHECK_INT(mp_xds_backoff_ms(6, 500, 30000, 30000), 0);
    CHECK_INT(mp_xds_backoff_ms(1000, 500, 30000, UINT64_MAX) < 30000, 1);
    CHECK_INT(mp_xds_backoff_ms(3, 0, 0, 7), 0);
    uint64_t seed = 88172645463325252ull, worst = 0;
    for (unsigned a = 0; a < 64; a++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        uint64_t d = mp_xds_backoff_ms(a, MP_XDS_BACKOFF_BASE_MS, MP_XDS_BACKOFF_MAX_MS, seed);
        worst = d > worst ? d : worst;
    }
    CHECK(worst < MP_XDS_BACKOFF_MAX_MS);
}

int main(void)
{
    RUN(test_first_request_shape);
    RUN(test_ack_nack);
    RUN(test_invalid_responses_nack);
    RUN(test_latest_nonce_and_unknown_type);
    RUN(test_removal_lds_vs_eds);
    RUN(test_named_rds_growth);
    RUN(test_wildcard_spelling);
    RUN(test_resource_wrapper);
    RUN(test_ads_ack_before_children);
    RUN(test_sotw_reset);
    RUN(test_garbage);
    RUN(test_fetch_timeout);
    RUN(test_delta_conversation);
    RUN(test_delta_named);
    RUN(test_backoff);
    UNIT_DONE();
}
