/* proxy/xfcc.c: the x-forwarded-client-cert policy table, the element's format and quoting, and
 * the URL encoding of PEM. */
#include <stdlib.h>

#include "magpie/xfcc.h"
#include "unit.h"

#define SPIFFE_CLIENT "spiffe://cluster.local/ns/default/sa/frontend"
#define SPIFFE_SERVER "spiffe://cluster.local/ns/default/sa/backend"
#define HASH "6f1ae2c7a2f4e1ec0b4b1a8cfa4b7a1ee6c1a7b1e4f2d3c4b5a69788796a5b4c"

static char *client_uris[] = {SPIFFE_CLIENT};
static char *server_uris[] = {SPIFFE_SERVER};
static char *client_dns[] = {"frontend.default.svc", "frontend"};

/* A client certificate with one URI SAN, two DNS SANs and a subject, seen by a listener whose
 * own certificate carries one URI SAN. */
static mp_tls_ident_t client(void)
{
    mp_tls_ident_t id = {
        .loaded = true,
        .peer_cert = true,
        .peer_uri_sans = client_uris,
        .n_peer_uri_sans = 1,
        .peer_dns_sans = client_dns,
        .n_peer_dns_sans = 2,
        .peer_subject = "CN=frontend,O=acme\\, inc.",
        .local_uri_sans = server_uris,
        .n_local_uri_sans = 1,
    };
    memcpy(id.peer_sha256, HASH, sizeof(HASH));
    return id;
}

static void test_decide(void)
{
    /* SANITIZE drops, mTLS or not. */
    CHECK_INT(mp_xfcc_decide(MP_XFCC_SANITIZE, true), MP_XFCC_REMOVE);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_SANITIZE, false), MP_XFCC_REMOVE);
    /* Without mutual TLS only ALWAYS_FORWARD_ONLY lets a client's header through. */
    CHECK_INT(mp_xfcc_decide(MP_XFCC_FORWARD_ONLY, false), MP_XFCC_REMOVE);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_APPEND_FORWARD, false), MP_XFCC_REMOVE);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_SANITIZE_SET, false), MP_XFCC_REMOVE);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_ALWAYS_FORWARD_ONLY, false), MP_XFCC_KEEP);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_ALWAYS_FORWARD_ONLY, true), MP_XFCC_KEEP);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_FORWARD_ONLY, true), MP_XFCC_KEEP);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_APPEND_FORWARD, true), MP_XFCC_APPEND);
    CHECK_INT(mp_xfcc_decide(MP_XFCC_SANITIZE_SET, true), MP_XFCC_SET);
}

#define CHECK_ELEMENT(id, details, want)                                                           \
    do {                                                                                           \
        char *got_ = mp_xfcc_element(id, details);                                                 \
        CHECK_STR(got_, want);                                                                     \
        free(got_);                                                                                \
    } while (0)

static void test_element(void)
{
    mp_tls_ident_t id = client();
    /* By and Hash only: Envoy's minimum. */
    CHECK_ELEMENT(&id, 0, "By=" SPIFFE_SERVER ";Hash=" HASH);
    /* Every detail, in Envoy's order whatever the bits' order; the subject keeps OpenSSL's
     * RFC 2253 escaping inside the quotes. */
    CHECK_ELEMENT(&id, MP_XFCC_DNS | MP_XFCC_URI | MP_XFCC_SUBJECT,
                  "By=" SPIFFE_SERVER ";Hash=" HASH ";Subject=\"CN=frontend,O=acme\\, inc.\""
                  ";URI=" SPIFFE_CLIENT ";DNS=frontend.default.svc;DNS=frontend");
    id.peer_cert_url = "-----BEGIN%20CERTIFICATE-----%0AMII%3D%0A";
    id.peer_chain_url = "A%0AB";
    CHECK_ELEMENT(&id, MP_XFCC_CERT | MP_XFCC_CHAIN,
                  "By=" SPIFFE_SERVER ";Hash=" HASH
                  ";Cert=\"-----BEGIN%20CERTIFICATE-----%0AMII%3D%0A\";Chain=\"A%0AB\"");
    /* No URI SAN: URI stays, empty (Envoy); no DNS SAN: no DNS; no subject: Subject="". */
    id.n_peer_uri_sans = 0;
    id.n_peer_dns_sans = 0;
    id.peer_subject = NULL;
    id.n_local_uri_sans = 0; /* our certificate without a URI SAN: no By */
    CHECK_ELEMENT(&id, MP_XFCC_SUBJECT | MP_XFCC_URI | MP_XFCC_DNS,
                  "Hash=" HASH ";Subject=\"\";URI=");
}

/* A SAN holding the format's separators is quoted, so it cannot forge a pair or an element. */
static void test_quoting(void)
{
    mp_tls_ident_t id = client();
    char *evil[] = {"spiffe://td/x;By=spiffe://td/admin,Hash=\"0\\"};
    id.peer_uri_sans = evil;
    CHECK_ELEMENT(&id, MP_XFCC_URI,
                  "By=" SPIFFE_SERVER ";Hash=" HASH
                  ";URI=\"spiffe://td/x;By=spiffe://td/admin,Hash=\\\"0\\\\\"");
}

static const char *xfcc_of(const mp_headers_t *h)
{
    const mp_header_t *f = mp_headers_get(h, "x-forwarded-client-cert");
    return f ? f->value : NULL;
}

static void test_apply(void)
{
    mp_tls_ident_t id = client();
    mp_tls_ident_t plain_tls = {.loaded = true}; /* TLS, no client certificate */
    static const char spoof[] = "By=spiffe://evil;Hash=00";
    for (int mode = MP_XFCC_SANITIZE; mode <= MP_XFCC_ALWAYS_FORWARD_ONLY; mode++) {
        for (int conn = 0; conn < 3; conn++) {
            const mp_tls_ident_t *who = conn == 0 ? NULL : conn == 1 ? &plain_tls : &id;
            mp_headers_t h;
            mp_headers_init(&h);
            mp_headers_add_cstr(&h, "x-forwarded-client-cert", spoof);
            mp_headers_add_cstr(&h, "x-forwarded-client-cert", "By=b;Hash=01");
            mp_xfcc_apply(&h, (mp_xfcc_mode_t)mode, 0, who);
            mp_xfcc_action_t act = mp_xfcc_decide((mp_xfcc_mode_t)mode, conn == 2);
            if (act == MP_XFCC_REMOVE) {
                CHECK(xfcc_of(&h) == NULL);
            } else if (act == MP_XFCC_KEEP) {
                CHECK_INT(mp_headers_count(&h, "x-forwarded-client-cert"), 2);
                CHECK_STR(xfcc_of(&h), spoof);
            } else if (act == MP_XFCC_APPEND) {
                /* One field: the client's two, then ours. */
                CHECK_INT(mp_headers_count(&h, "x-forwarded-client-cert"), 1);
                CHECK_STR(xfcc_of(&h),
                          "By=spiffe://evil;Hash=00,By=b;Hash=01,By=" SPIFFE_SERVER ";Hash=" HASH);
            } else {
                CHECK_INT(mp_headers_count(&h, "x-forwarded-client-cert"), 1);
                CHECK_STR(xfcc_of(&h), "By=" SPIFFE_SERVER ";Hash=" HASH);
            }
            mp_headers_free(&h);
        }
    }
    /* APPEND_FORWARD without a client header: just ours, no leading comma. */
    mp_headers_t h;
    mp_headers_init(&h);
    mp_xfcc_apply(&h, MP_XFCC_APPEND_FORWARD, 0, &id);
    CHECK_STR(xfcc_of(&h), "By=" SPIFFE_SERVER ";Hash=" HASH);
    mp_headers_free(&h);
}

static void test_url_encode(void)
{
    char *s = mp_xfcc_url_encode("-----BEGIN CERT-----\nab+/=~_.\n", 30);
    CHECK_STR(s, "-----BEGIN%20CERT-----%0Aab%2B%2F%3D~_.%0A");
    free(s);
    s = mp_xfcc_url_encode("\"\xff", 2);
    CHECK_STR(s, "%22%FF");
    free(s);
}

static void test_principal(void)
{
    mp_tls_ident_t id = client();
    CHECK_STR(mp_tls_ident_principal(&id), SPIFFE_CLIENT);
    id.n_peer_uri_sans = 0;
    CHECK_STR(mp_tls_ident_principal(&id), "frontend.default.svc");
    id.n_peer_dns_sans = 0;
    CHECK_STR(mp_tls_ident_principal(&id), "CN=frontend,O=acme\\, inc.");
    id.peer_cert = false;
    CHECK(mp_tls_ident_principal(&id) == NULL);
    CHECK(mp_tls_ident_get(NULL) == NULL);
}

int main(void)
{
    RUN(test_decide);
    RUN(test_element);
    RUN(test_quoting);
    RUN(test_apply);
    RUN(test_url_encode);
    RUN(test_principal);
    UNIT_DONE();
}
