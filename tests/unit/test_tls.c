/* TLS contexts (proxy/tls_ctx.c, tls_verify.c, xds/translate_tls.c): a CA and SPIFFE-style leaf
 * certificates are made here with OpenSSL's X509 API and written to a temp dir; then the SAN
 * matchers, the translation of whole bootstraps (and its errors, each naming the field), and
 * in-memory handshakes between contexts built from config over a BIO pair. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "magpie/bootstrap.h"
#include "magpie/config.h"
#include "magpie/regex.h"
#include "magpie/stats.h"
#include "magpie/tls.h"
#include "unit.h"

#define SPIFFE_FOO "spiffe://cluster.local/ns/default/sa/foo"

static char dir[64];
static EVP_PKEY *ca_key;
static X509 *ca_cert, *foo_cert;

static X509 *make_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, const char *cn,
                       const char *sans, bool ca)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    static long serial = 1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e =
        X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (sans != NULL) {
        e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, sans);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
    return x;
}

static void write_pem(const char *name, X509 *x, EVP_PKEY *k)
{
    char *path = mp_xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (x != NULL)
        PEM_write_X509(f, x);
    if (k != NULL)
        PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    free(path);
}

/* ca.pem; server.pem/key (DNS server.local); foo.pem/key (URI SPIFFE foo, DNS foo.local);
 * bar.pem/key (URI .../sa/bar); other.key (a key that matches no certificate). */
static void make_pki(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mp_tls_XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    ca_key = EVP_EC_gen("P-256");
    ca_cert = make_cert(ca_key, NULL, NULL, "magpie test CA", NULL, true);
    write_pem("ca.pem", ca_cert, NULL);
    const struct {
        const char *name, *sans;
    } leaves[] = {
        {"server", "DNS:server.local,DNS:*.mesh.local"},
        {"foo", "URI:" SPIFFE_FOO ",DNS:foo.local,IP:10.0.0.7"},
        {"bar", "URI:spiffe://cluster.local/ns/default/sa/bar"},
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(leaves); i++) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        X509 *x = make_cert(k, ca_cert, ca_key, leaves[i].name, leaves[i].sans, false);
        char *n = mp_xasprintf("%s.pem", leaves[i].name);
        write_pem(n, x, NULL);
        free(n);
        n = mp_xasprintf("%s.key", leaves[i].name);
        write_pem(n, NULL, k);
        free(n);
        if (i == 1)
            foo_cert = x;
        else
            X509_free(x);
        EVP_PKEY_free(k);
    }
    EVP_PKEY *other = EVP_EC_gen("P-256");
    write_pem("other.key", NULL, other);
    EVP_PKEY_free(other);
}

static void remove_pki(void)
{
    const char *files[] = {"ca.pem",  "server.pem", "server.key", "foo.pem", "foo.key",
                           "bar.pem", "bar.key",    "other.key",  "sds.yaml"};
    for (size_t i = 0; i < MP_ARRAY_SIZE(files); i++) {
        char *p = mp_xasprintf("%s/%s", dir, files[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
    X509_free(ca_cert);
    X509_free(foo_cert);
    EVP_PKEY_free(ca_key);
}

/* ---- SAN matchers ---- */

static mp_san_matcher_t san(mp_san_type_t type, bool any, mp_str_match_kind_t kind, const char *v)
{
    mp_san_matcher_t m = {.type = type, .any_type = any};
    m.match.kind = kind;
    if (kind == MP_STR_REGEX) {
        m.match.regex = mp_regex_compile(v, NULL);
    } else {
        m.match.value = mp_xstrdup(v);
        m.match.len = (uint32_t)strlen(v);
    }
    return m;
}

/* One matcher against foo's certificate. */
static bool one(mp_san_matcher_t m)
{
    mp_tls_ctx_t ctx = {.sans = &m, .n_sans = 1};
    bool ok = mp_tls_peer_san_ok(&ctx, foo_cert);
    free(m.match.value);
    mp_regex_free(m.match.regex);
    return ok;
}

static void test_san_matchers(void)
{
    mp_tls_ctx_t none = {0};
    CHECK(mp_tls_peer_san_ok(&none, foo_cert)); /* no matchers: any certificate */
    CHECK(one(san(MP_SAN_URI, false, MP_STR_EXACT, SPIFFE_FOO)));
    CHECK(!one(san(MP_SAN_URI, false, MP_STR_EXACT, "spiffe://cluster.local/ns/default/sa/bar")));
    CHECK(one(san(MP_SAN_URI, false, MP_STR_PREFIX, "spiffe://cluster.local/ns/default/")));
    CHECK(one(san(MP_SAN_URI, false, MP_STR_SUFFIX, "/sa/foo")));
    CHECK(one(san(MP_SAN_URI, false, MP_STR_REGEX, "spiffe://cluster\\.local/ns/[a-z]+/sa/foo")));
    CHECK(!one(san(MP_SAN_URI, false, MP_STR_REGEX, "spiffe://cluster\\.local/ns/kube/.*")));
    /* the type matters for typed matchers: the URI is not a DNS name */
    CHECK(!one(san(MP_SAN_DNS, false, MP_STR_EXACT, SPIFFE_FOO)));
    CHECK(one(san(MP_SAN_DNS, false, MP_STR_EXACT, "foo.local")));
    CHECK(one(san(MP_SAN_DNS, false, MP_STR_SUFFIX, ".local")));
    CHECK(!one(san(MP_SAN_URI, false, MP_STR_EXACT, "foo.local")));
    CHECK(one(san(MP_SAN_IP, false, MP_STR_EXACT, "10.0.0.7")));
    /* the deprecated untyped form matches DNS and URI alike, but not IP */
    CHECK(one(san(MP_SAN_DNS, true, MP_STR_EXACT, SPIFFE_FOO)));
    CHECK(one(san(MP_SAN_DNS, true, MP_STR_PREFIX, "foo.")));
    CHECK(!one(san(MP_SAN_DNS, true, MP_STR_EXACT, "10.0.0.7")));
    CHECK(!mp_tls_peer_san_ok(&(mp_tls_ctx_t){.n_sans = 1}, NULL));
}

static void test_dns_wildcard_san(void)
{
    char *path = mp_xasprintf("%s/server.pem", dir);
    FILE *f = fopen(path, "r");
    X509 *server = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    free(path);
    mp_san_matcher_t m = san(MP_SAN_DNS, false, MP_STR_EXACT, "api.mesh.local");
    mp_tls_ctx_t ctx = {.sans = &m, .n_sans = 1};
    CHECK(mp_tls_peer_san_ok(&ctx, server)); /* "*.mesh.local" covers one label */
    free(m.match.value);
    m = san(MP_SAN_DNS, false, MP_STR_EXACT, "a.b.mesh.local");
    ctx.sans = &m;
    CHECK(!mp_tls_peer_san_ok(&ctx, server));
    free(m.match.value);
    X509_free(server);
}

/* ---- translation ---- */

static mp_config_t *load_yaml(const char *yaml, mp_err_t *err)
{
    char path[] = "/tmp/mp_tls_cfg_XXXXXX";
    int fd = mkstemp(path);
    if (write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml))
        abort();
    close(fd);
    mp_options_t opts = {.config_path = path};
    bool dflt = false;
    mp_config_t *c = mp_bootstrap_load(&opts, &dflt, err);
    unlink(path);
    return c;
}

/* A listener with DownstreamTlsContext DOWN and a cluster with UpstreamTlsContext UP (both
 * YAML flow maps, %1$s the fragments' %1$s is the PKI dir). */
static const char cfg_fmt[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: in\n"
    "    address: { socket_address: { address: 127.0.0.1, port_value: 15443 } }\n"
    "    filter_chains:\n"
    "    - transport_socket:\n"
    "        name: envoy.transport_sockets.tls\n"
    "        typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets."
    "tls.v3.DownstreamTlsContext, %s }\n"
    "      filters:\n"
    "      - name: envoy.filters.network.tcp_proxy\n"
    "        typed_config:\n"
    "          '@type': "
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
    "          stat_prefix: t\n"
    "          cluster: up\n"
    "  clusters:\n"
    "  - name: up\n"
    "    load_assignment:\n"
    "      cluster_name: up\n"
    "      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "
    "127.0.0.1, port_value: 8443 } } } }] }]\n"
    "    transport_socket:\n"
    "      name: envoy.transport_sockets.tls\n"
    "      typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls."
    "v3.UpstreamTlsContext, %s }\n";

#define CERT(n)                                                                                    \
    "{ certificate_chain: { filename: %1$s/" n ".pem }, private_key: { filename: %1$s/" n ".key "  \
    "} }"
#define DOWN_OK                                                                                    \
    "common_tls_context: { tls_certificates: [" CERT(                                              \
        "server") "], alpn_protocols: [h2, "                                                       \
                  "http/1.1], validation_context: { trusted_ca: { filename: %1$s/ca.pem }, "       \
                  "match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: "            \
                  "'" SPIFFE_FOO "' } }] } "                                                       \
                  "}, require_client_certificate: true"
#define UP_OK                                                                                      \
    "sni: server.local, common_tls_context: { tls_certificates: [" CERT(                           \
        "foo") "], "                                                                               \
               "alpn_protocols: [h2, http/1.1], validation_context: { trusted_ca: { filename: "    \
               "%1$s/ca.pem }, match_subject_alt_names: [{ exact: server.local }] } }"

static mp_config_t *load(const char *down, const char *up, mp_err_t *err)
{
    /* the fragments reference %1$s themselves: format them with the dir first */
    char *d = mp_xasprintf(down, dir), *u = mp_xasprintf(up, dir);
    char *yaml = mp_xasprintf(cfg_fmt, d, u);
    mp_config_t *c = load_yaml(yaml, err);
    free(yaml);
    free(d);
    free(u);
    return c;
}

static const char *load_err(const char *down, const char *up, mp_err_t *err)
{
    mp_config_t *c = load(down, up, err);
    if (c != NULL) {
        mp_config_unref(c);
        return "(loaded)";
    }
    return err->msg;
}

static void test_translate_ok(void)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load(DOWN_OK, UP_OK, &err);
    CHECK(c != NULL);
    if (c == NULL) {
        fprintf(stderr, "load: %s\n", err.msg);
        return;
    }
    const mp_tls_ctx_t *s = c->listeners[0].chains[0].tls;
    CHECK(s != NULL && s->server && s->require_client_cert && s->verify_peer);
    CHECK_INT(s->n_sans, 1);
    CHECK(s->sans[0].type == MP_SAN_URI && !s->sans[0].any_type);
    CHECK_INT(s->alpn_len, 12);
    CHECK(memcmp(s->alpn, "\x02h2\x08http/1.1", 12) == 0);
    char *want = mp_xasprintf("%s/server.pem", dir);
    CHECK_STR(s->cert_desc, want);
    free(want);
    CHECK(s->cert_not_after > 0);
    const mp_tls_ctx_t *u = c->clusters[0]->tls;
    CHECK(u != NULL && !u->server && u->verify_peer);
    CHECK_STR(u->sni, "server.local");
    CHECK(u->n_sans == 1 && u->sans[0].any_type);
    /* Envoy's defaults: TLS 1.2 minimum; 1.3 maximum for servers, 1.2 for clients */
    CHECK_INT(SSL_CTX_get_min_proto_version(s->ssl), TLS1_2_VERSION);
    CHECK_INT(SSL_CTX_get_max_proto_version(s->ssl), TLS1_3_VERSION);
    CHECK_INT(SSL_CTX_get_max_proto_version(u->ssl), TLS1_2_VERSION);
    mp_stat_id_t id;
    CHECK(mp_stats_find("listener.127.0.0.1_15443.ssl.fail_verify_san", &id));
    CHECK(mp_stats_find("cluster.up.ssl.no_certificate", &id));
    mp_config_unref(c);
}

static void test_translate_errors(void)
{
    mp_err_t err = {{0}};
    const char *m = load_err("common_tls_context: { tls_certificates: [{ certificate_chain: { "
                             "filename: /nonexistent/x.pem }, private_key: { filename: "
                             "%1$s/server.key } }] }",
                             UP_OK, &err);
    CHECK(strstr(m, "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config."
                    "common_tls_context.tls_certificates[0].certificate_chain.filename") != NULL);
    CHECK(strstr(m, "/nonexistent/x.pem") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [{ certificate_chain: { filename: "
                 "%1$s/server.pem }, private_key: { filename: %1$s/other.key } }] }",
                 UP_OK, &err);
    CHECK(strstr(m, "tls_certificates[0].private_key: ") != NULL);
    CHECK(strstr(m, "other.key does not match the certificate") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [" CERT(
                     "server") "], tls_params: { "
                               "cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER] } }",
                 UP_OK, &err);
    CHECK(strstr(m, "tls_params.cipher_suites[1]: unknown cipher suite \"NOT-A-CIPHER\"") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [" CERT(
                     "server") "] }, "
                               "require_client_certificate: true",
                 UP_OK, &err);
    CHECK(strstr(m, "typed_config.require_client_certificate: needs") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [" CERT(
                     "server") "], tls_params: { "
                               "tls_minimum_protocol_version: TLSv1_3, "
                               "tls_maximum_protocol_version: TLSv1_2 } }",
                 UP_OK, &err);
    CHECK(strstr(m, "tls_params.tls_minimum_protocol_version: above") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [" CERT(
                     "server") "], tls_params: { "
                               "ecdh_curves: [X25519, P-999] } }",
                 UP_OK, &err);
    CHECK(strstr(m, "tls_params.ecdh_curves[1]: unknown ECDH curve \"P-999\"") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [" CERT(
                     "server") "], "
                               "validation_context: { match_typed_subject_alt_names: [{ san_type: "
                               "DNS, matcher: "
                               "{ exact: a } }] } }",
                 UP_OK, &err);
    CHECK(strstr(m, "SAN matching without a trusted_ca") != NULL);
    m = load_err("common_tls_context: { tls_certificates: [" CERT(
                     "server") "], "
                               "validation_context: { trusted_ca: { filename: %1$s/ca.pem }, "
                               "verify_certificate_spki: [x] } }",
                 UP_OK, &err);
    CHECK(strstr(m, "validation_context.verify_certificate_spki: not supported yet") != NULL);
    m = load_err(
        "common_tls_context: { tls_certificates: [" CERT(
            "server") "], "
                      "validation_context: { trusted_ca: { filename: %1$s/ca.pem }, crl: { "
                      "inline_string: x } } }",
        UP_OK, &err);
    CHECK(strstr(m, "validation_context.crl: not supported yet") != NULL);
    m = load_err(DOWN_OK, "common_tls_context: { tls_params: { cipher_suites: [BOGUS] } }", &err);
    CHECK(strstr(m, "static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
                    "tls_params.cipher_suites[0]: unknown cipher suite") != NULL);
    m = load_err("common_tls_context: {}", UP_OK, &err);
    CHECK(strstr(m, "a server needs a certificate") != NULL);
}

/* Secrets from a file-based SDS DiscoveryResponse; an unknown name is an error naming it. */
static void test_translate_sds(void)
{
    char *path = mp_xasprintf("%s/sds.yaml", dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "resources:\n"
            "- '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n"
            "  name: server_cert\n"
            "  tls_certificate: { certificate_chain: { filename: %1$s/server.pem }, private_key: "
            "{ filename: %1$s/server.key } }\n"
            "- '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n"
            "  name: ca\n"
            "  validation_context: { trusted_ca: { filename: %1$s/ca.pem } }\n",
            dir);
    fclose(f);
    free(path);
    mp_err_t err = {{0}};
    mp_config_t *c = load(
        "common_tls_context: { tls_certificate_sds_secret_configs: [{ name: server_cert, "
        "sds_config: { path_config_source: { path: %1$s/sds.yaml } } }], "
        "combined_validation_context: { default_validation_context: { "
        "match_typed_subject_alt_names: [{ san_type: URI, matcher: { prefix: 'spiffe://' } }] }, "
        "validation_context_sds_secret_config: { name: ca, sds_config: { path: %1$s/sds.yaml } } "
        "} }, require_client_certificate: true",
        UP_OK, &err);
    CHECK(c != NULL);
    if (c == NULL)
        fprintf(stderr, "load: %s\n", err.msg);
    CHECK(c && c->listeners[0].chains[0].tls->verify_peer &&
          c->listeners[0].chains[0].tls->n_sans == 1);
    mp_config_unref(c);
    const char *m = load_err("common_tls_context: { tls_certificate_sds_secret_configs: [{ name: "
                             "nope, sds_config: { path: %1$s/sds.yaml } }] }",
                             UP_OK, &err);
    CHECK(strstr(m, "tls_certificate_sds_secret_configs[0].sds_config: no secret named \"nope\"") !=
          NULL);
    m = load_err("common_tls_context: { tls_certificate_sds_secret_configs: [{ name: x, "
                 "sds_config: { ads: {} } }] }",
                 UP_OK, &err);
    CHECK(strstr(m, "sds_config: only a file") != NULL);
}

/* ---- handshakes over a BIO pair ---- */

typedef struct pair {
    SSL *srv, *cli;
    int srv_rc, cli_rc;
} pair_t;

/* Drives both ends until both finish or one fails; bounded. */
static void handshake(pair_t *p, SSL_CTX *s, SSL_CTX *c, const char *sni)
{
    BIO *bs, *bc;
    BIO_new_bio_pair(&bs, 0, &bc, 0);
    p->srv = SSL_new(s);
    p->cli = SSL_new(c);
    SSL_set_bio(p->srv, bs, bs);
    SSL_set_bio(p->cli, bc, bc);
    SSL_set_accept_state(p->srv);
    SSL_set_connect_state(p->cli);
    if (sni)
        SSL_set_tlsext_host_name(p->cli, sni);
    p->srv_rc = p->cli_rc = 0;
    for (int i = 0; i < 50 && (p->srv_rc != 1 || p->cli_rc != 1); i++) {
        if (p->cli_rc != 1)
            p->cli_rc = SSL_do_handshake(p->cli);
        if (p->srv_rc != 1)
            p->srv_rc = SSL_do_handshake(p->srv);
        bool cli_failed = p->cli_rc <= 0 && SSL_get_error(p->cli, p->cli_rc) == SSL_ERROR_SSL;
        bool srv_failed = p->srv_rc <= 0 && SSL_get_error(p->srv, p->srv_rc) == SSL_ERROR_SSL;
        if (cli_failed || srv_failed)
            break;
    }
    ERR_clear_error();
}

static void pair_free(pair_t *p)
{
    SSL_free(p->srv);
    SSL_free(p->cli);
}

/* A client context for CERT name (or none) trusting ca.pem, offering h2 and http/1.1. */
static SSL_CTX *client_ctx(const char *name)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    char *p = mp_xasprintf("%s/ca.pem", dir);
    SSL_CTX_load_verify_locations(c, p, NULL);
    free(p);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_alpn_protos(c, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    if (name != NULL) {
        p = mp_xasprintf("%s/%s.pem", dir, name);
        SSL_CTX_use_certificate_chain_file(c, p);
        free(p);
        p = mp_xasprintf("%s/%s.key", dir, name);
        SSL_CTX_use_PrivateKey_file(c, p, SSL_FILETYPE_PEM);
        free(p);
    }
    return c;
}

static void test_handshakes(void)
{
    mp_err_t err = {{0}};
    mp_config_t *c = load(DOWN_OK, UP_OK, &err);
    CHECK(c != NULL);
    if (c == NULL)
        return;
    const mp_tls_ctx_t *s = c->listeners[0].chains[0].tls;
    /* magpie's client context (foo's certificate) against magpie's server context: mutual TLS,
     * the client's SPIFFE SAN accepted, the server's DNS SAN accepted, h2 chosen by ALPN */
    pair_t p;
    handshake(&p, s->ssl, c->clusters[0]->tls->ssl, "server.local");
    CHECK_INT(p.srv_rc, 1);
    CHECK_INT(p.cli_rc, 1);
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(p.srv, &proto, &len);
    CHECK(len == 2 && memcmp(proto, "h2", 2) == 0);
    X509 *peer = SSL_get1_peer_certificate(p.srv);
    CHECK(peer != NULL && SSL_get_verify_result(p.srv) == X509_V_OK);
    X509_free(peer);
    pair_free(&p);

    /* a client whose SPIFFE ID is bar: chain fine, SAN wrong -> refused and counted */
    int64_t san0 = mp_stats_value(s->stats.fail_verify_san);
    SSL_CTX *bar = client_ctx("bar");
    handshake(&p, s->ssl, bar, NULL);
    CHECK(p.srv_rc != 1);
    CHECK_INT(mp_stats_value(s->stats.fail_verify_san), san0 + 1);
    pair_free(&p);
    SSL_CTX_free(bar);

    /* no client certificate while require_client_certificate -> refused, no_certificate */
    int64_t nc0 = mp_stats_value(s->stats.no_certificate);
    SSL_CTX *anon = client_ctx(NULL);
    handshake(&p, s->ssl, anon, NULL);
    CHECK(p.srv_rc != 1);
    CHECK_INT(mp_stats_value(s->stats.no_certificate), nc0 + 1);
    pair_free(&p);
    SSL_CTX_free(anon);

    /* a client certificate from another CA -> fail_verify_error */
    EVP_PKEY *k2 = EVP_EC_gen("P-256");
    X509 *rogue_ca = make_cert(k2, NULL, NULL, "rogue", NULL, true);
    EVP_PKEY *k3 = EVP_EC_gen("P-256");
    X509 *rogue = make_cert(k3, rogue_ca, k2, "rogue", "URI:" SPIFFE_FOO, false);
    SSL_CTX *rc = client_ctx(NULL);
    SSL_CTX_use_certificate(rc, rogue);
    SSL_CTX_use_PrivateKey(rc, k3);
    int64_t fe0 = mp_stats_value(s->stats.fail_verify_error);
    handshake(&p, s->ssl, rc, NULL);
    CHECK(p.srv_rc != 1);
    CHECK_INT(mp_stats_value(s->stats.fail_verify_error), fe0 + 1);
    pair_free(&p);
    SSL_CTX_free(rc);
    X509_free(rogue);
    X509_free(rogue_ca);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k3);
    mp_config_unref(c);
}

int main(void)
{
    mp_stats_thread_init();
    make_pki();
    RUN(test_san_matchers);
    RUN(test_dns_wildcard_san);
    RUN(test_translate_ok);
    RUN(test_translate_errors);
    RUN(test_translate_sds);
    RUN(test_handshakes);
    remove_pki();
    UNIT_DONE();
}
