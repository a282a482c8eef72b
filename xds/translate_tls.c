/* A transport_socket -> mp_tls_ctx_t: envoy.transport_sockets.tls with DownstreamTlsContext (a
 * filter chain, server side) or UpstreamTlsContext (a cluster, client side); raw_buffer -> no
 * TLS.  The OpenSSL side is proxy/tls_ctx.c and tls_verify.c; this file reads the messages,
 * checks what magpie refuses, and names the field in every error (docs/configuration.md). */
#include <stdlib.h>
#include <string.h>

#include "translate_tls_internal.h"

#include "magpie/json_pb.h"
#include "magpie/route.h"
#include "magpie/stats.h"
#include "magpie/tls.h"

#define TLS_NAME "envoy.transport_sockets.tls"
#define RAW_NAME "envoy.transport_sockets.raw_buffer"
#define DOWN_TYPE "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define UP_TYPE "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define RAW_TYPE "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
#define PEM_MAX (1u << 20)

typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext pb_down_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext pb_up_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext pb_common_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsParameters pb_params_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate pb_cert_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext pb_valid_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher pb_san_t;
typedef Envoy__Config__Core__V3__TransportSocket pb_socket_t;

/* ---- tls_params ---- */

static const int tls_versions[] = {0, TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};

static int version_of(int v, int def, int *out, const char *field, mp_err_t *err)
{
    if (v < 0 || (size_t)v >= MP_ARRAY_SIZE(tls_versions))
        return mp_err_set(err, "%s: unknown version %d", field, v);
    *out = v == 0 ? def : tls_versions[v];
    return 0;
}

/* TLS_AUTO: TLS 1.2 minimum on both sides; maximum TLS 1.3 for servers and TLS 1.2 for
 * clients, Envoy's documented defaults. */
static int translate_params(const pb_params_t *p, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    int min = TLS1_2_VERSION, max = ctx->server ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (p != NULL && (version_of(p->tls_minimum_protocol_version, min, &min,
                                 "tls_minimum_protocol_version", err) != 0 ||
                      version_of(p->tls_maximum_protocol_version, max, &max,
                                 "tls_maximum_protocol_version", err) != 0))
        return MP_ERROR;
    if (p != NULL && p->tls_minimum_protocol_version != 0 && p->tls_maximum_protocol_version == 0 &&
        min > max)
        max = min; /* an explicit TLSv1_3 minimum lifts the client's default maximum */
    if (min > max)
        return mp_err_set(err, "tls_minimum_protocol_version: above tls_maximum_protocol_version");
    if (mp_tls_ctx_set_versions(ctx, min, max, err) != 0)
        return mp_err_prefix(err, "tls_maximum_protocol_version: ");
    if (p == NULL)
        return 0;
    if (mp_tls_ctx_set_ciphers(ctx, p->cipher_suites, p->n_cipher_suites, err) != 0)
        return mp_err_prefix(err, "cipher_suites");
    if (mp_tls_ctx_set_curves(ctx, p->ecdh_curves, p->n_ecdh_curves, err) != 0)
        return mp_err_prefix(err, "ecdh_curves");
    if (mp_tls_ctx_set_sigalgs(ctx, p->signature_algorithms, p->n_signature_algorithms, err) != 0)
        return mp_err_prefix(err, "signature_algorithms");
    return 0;
}

/* ---- certificates ---- */

static const char *source_desc(const mp_pb_data_source_t *ds)
{
    return ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME
               ? ds->filename
               : "<inline>";
}

/* A required DataSource's bytes; errors are "<field>.<specifier>: ...". */
static char *read_source(const mp_pb_data_source_t *ds, const char *field, uint32_t *len,
                         mp_err_t *err)
{
    if (ds == NULL ||
        ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER__NOT_SET) {
        mp_err_set(err, "%s: required", field);
        return NULL;
    }
    char *p = mp_translate__data_source(ds, PEM_MAX, len, err);
    if (p == NULL)
        mp_err_prefix(err, "%s.", field);
    return p;
}

static int check_cert_unsupported(const pb_cert_t *c, mp_err_t *err)
{
    if (c->pkcs12 != NULL)
        return mp_err_set(err, "pkcs12: not supported yet");
    if (c->private_key_provider != NULL)
        return mp_err_set(err, "private_key_provider: not supported");
    if (c->ocsp_staple != NULL)
        return mp_err_set(err, "ocsp_staple: not supported yet");
    if (c->n_signed_certificate_timestamp > 0)
        return mp_err_set(err, "signed_certificate_timestamp: not supported");
    return 0;
}

static int translate_cert(const pb_cert_t *c, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (check_cert_unsupported(c, err) != 0)
        return MP_ERROR;
    uint32_t chain_len = 0, key_len = 0, pw_len = 0;
    char *pw = NULL, *key = NULL,
         *chain = read_source(c->certificate_chain, "certificate_chain", &chain_len, err);
    if (chain == NULL)
        return MP_ERROR;
    int rc = MP_ERROR;
    key = read_source(c->private_key, "private_key", &key_len, err);
    if (key == NULL)
        goto out;
    if (c->password != NULL && (pw = read_source(c->password, "password", &pw_len, err)) == NULL)
        goto out;
    rc = mp_tls_ctx_use_cert(ctx, chain, chain_len, source_desc(c->certificate_chain), key, key_len,
                             source_desc(c->private_key), pw, err);
out:
    free(pw);
    if (key != NULL)
        memset(key, 0, key_len); /* do not leave key material in freed heap */
    free(key);
    free(chain);
    return rc;
}

/* A file a secret names changes the secret as much as the SDS file does (cert-manager rewrites
 * the PEM files and leaves the DiscoveryResponse alone), so it is a source too. */
static void add_file_source(mp_tls_ctx_t *ctx, const mp_pb_data_source_t *ds, const char *secret)
{
    if (ds != NULL &&
        ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME &&
        ds->filename != NULL && ds->filename[0] != '\0')
        mp_tls_ctx_add_source(ctx, ds->filename, secret);
}

static int translate_sds_cert(const pb_sds_config_t *sc, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    pb_secret_t *s = mp_translate__sds_secret(sc, ctx, err);
    if (s == NULL)
        return MP_ERROR;
    int rc = 0;
    if (s->type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE) {
        add_file_source(ctx, s->tls_certificate->certificate_chain, sc->name);
        add_file_source(ctx, s->tls_certificate->private_key, sc->name);
        add_file_source(ctx, s->tls_certificate->password, sc->name);
    }
    if (s->type_case != ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE)
        rc = mp_err_set(err, "secret \"%s\" holds no tls_certificate", sc->name);
    else if (translate_cert(s->tls_certificate, ctx, err) != 0)
        rc = mp_err_prefix(err, "secret \"%s\".tls_certificate.", sc->name);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return rc;
}

/* Envoy reads tls_certificate_sds_secret_configs only when tls_certificates is empty. */
static int translate_certs(const pb_common_t *c, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (c->tls_certificate_provider_instance != NULL || c->custom_tls_certificate_selector ||
        c->tls_certificate_certificate_provider || c->tls_certificate_certificate_provider_instance)
        return mp_err_set(err, "certificate providers and selectors are not supported");
    if (c->n_tls_certificates > 1)
        return mp_err_set(err, "tls_certificates: only one certificate is supported yet");
    if (c->n_tls_certificates == 1)
        return translate_cert(c->tls_certificates[0], ctx, err) != 0
                   ? mp_err_prefix(err, "tls_certificates[0].")
                   : 0;
    if (c->n_tls_certificate_sds_secret_configs > 1)
        return mp_err_set(err, "tls_certificate_sds_secret_configs: only one certificate is "
                               "supported yet");
    if (c->n_tls_certificate_sds_secret_configs == 1 &&
        translate_sds_cert(c->tls_certificate_sds_secret_configs[0], ctx, err) != 0)
        return mp_err_prefix(err, "tls_certificate_sds_secret_configs[0].");
    return 0;
}

/* ---- validation ---- */

static int translate_san(const pb_san_t *pb, mp_san_matcher_t *m, mp_err_t *err)
{
    switch (pb->san_type) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS:
        m->type = MP_SAN_DNS;
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI:
        m->type = MP_SAN_URI;
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__EMAIL:
        m->type = MP_SAN_EMAIL;
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__IP_ADDRESS:
        m->type = MP_SAN_IP;
        break;
    default:
        return mp_err_set(err, "san_type: one of DNS, URI, EMAIL, IP_ADDRESS is required");
    }
    if (pb->matcher == NULL)
        return mp_err_set(err, "matcher: required");
    if (mp_translate__string_matcher(pb->matcher, &m->match, err) != 0)
        return mp_err_prefix(err, "matcher.");
    return 0;
}

static void free_sans(mp_san_matcher_t *sans, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        mp_string_matcher_free(&sans[i].match);
    free(sans);
}

/* Typed matchers win; the deprecated ones are read only when there are no typed ones. */
static int translate_sans(const pb_valid_t *v, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    bool typed = v->n_match_typed_subject_alt_names > 0;
    size_t n = typed ? v->n_match_typed_subject_alt_names : v->n_match_subject_alt_names;
    mp_san_matcher_t *sans = mp_xcalloc(n ? n : 1, sizeof(*sans));
    for (size_t i = 0; i < n; i++) {
        int rc = typed ? translate_san(v->match_typed_subject_alt_names[i], &sans[i], err)
                       : mp_translate__string_matcher(v->match_subject_alt_names[i], &sans[i].match,
                                                      err);
        sans[i].any_type = !typed;
        if (rc != 0) {
            free_sans(sans, (uint32_t)i + 1);
            return mp_err_prefix(
                err, "%s[%zu].",
                typed ? "match_typed_subject_alt_names" : "match_subject_alt_names", i);
        }
    }
    mp_tls_ctx_add_sans(ctx, sans, (uint32_t)n);
    return 0;
}

static int check_valid_unsupported(const pb_valid_t *v, mp_err_t *err)
{
    if (v->n_verify_certificate_spki > 0)
        return mp_err_set(err, "verify_certificate_spki: not supported yet");
    if (v->n_verify_certificate_hash > 0)
        return mp_err_set(err, "verify_certificate_hash: not supported yet");
    if (v->crl != NULL)
        return mp_err_set(err, "crl: not supported yet");
    if (v->custom_validator_config != NULL)
        return mp_err_set(err, "custom_validator_config: not supported");
    if (v->ca_certificate_provider_instance != NULL)
        return mp_err_set(err, "ca_certificate_provider_instance: not supported");
    if (mp_translate__bool(v->require_signed_certificate_timestamp, false))
        return mp_err_set(err, "require_signed_certificate_timestamp: not supported");
    return 0;
}

/* One CertificateValidationContext into ctx.  with_ca false skips trusted_ca (a combined
 * context whose SDS part brings its own: the dynamic singular field wins, as MergeFrom does). */
static int apply_validation(const pb_valid_t *v, bool with_ca, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (check_valid_unsupported(v, err) != 0)
        return MP_ERROR;
    if (with_ca && v->trusted_ca != NULL) {
        uint32_t len = 0;
        char *pem = read_source(v->trusted_ca, "trusted_ca", &len, err);
        if (pem == NULL)
            return MP_ERROR;
        int rc = mp_tls_ctx_set_trusted_ca(ctx, pem, len, source_desc(v->trusted_ca), err);
        free(pem);
        if (rc != 0)
            return mp_err_prefix(err, "trusted_ca: ");
    }
    if (translate_sans(v, ctx, err) != 0)
        return MP_ERROR;
    ctx->allow_expired |= v->allow_expired_certificate;
    ctx->accept_untrusted |=
        v->trust_chain_verification ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED;
    if (v->max_verify_depth != NULL)
        SSL_CTX_set_verify_depth(ctx->ssl, (int)v->max_verify_depth->value);
    return 0;
}

/* The validation context an SdsSecretConfig names (caller frees *secret). */
static const pb_valid_t *sds_validation(const pb_sds_config_t *sc, pb_secret_t **secret,
                                        mp_tls_ctx_t *ctx, mp_err_t *err)
{
    *secret = mp_translate__sds_secret(sc, ctx, err);
    if (*secret == NULL)
        return NULL;
    if ((*secret)->type_case ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT) {
        add_file_source(ctx, (*secret)->validation_context->trusted_ca, sc->name);
        return (*secret)->validation_context;
    }
    mp_err_set(err, "secret \"%s\" holds no validation_context", sc->name);
    protobuf_c_message_free_unpacked(&(*secret)->base, NULL);
    *secret = NULL;
    return NULL;
}

static int apply_sds_validation(const pb_sds_config_t *sc, const pb_valid_t *dflt,
                                mp_tls_ctx_t *ctx, mp_err_t *err)
{
    pb_secret_t *secret = NULL;
    const pb_valid_t *v = sds_validation(sc, &secret, ctx, err);
    if (v == NULL)
        return mp_err_prefix(err, "validation_context_sds_secret_config.");
    int rc = 0;
    if (dflt != NULL && apply_validation(dflt, v->trusted_ca == NULL, ctx, err) != 0)
        rc = mp_err_prefix(err, "default_validation_context.");
    else if (apply_validation(v, true, ctx, err) != 0)
        rc = mp_err_prefix(err, "validation_context_sds_secret_config.secret \"%s\".", sc->name);
    protobuf_c_message_free_unpacked(&secret->base, NULL);
    return rc;
}

static int translate_validation(const pb_common_t *c, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    switch (c->validation_context_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE__NOT_SET:
        return 0;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT:
        return apply_validation(c->validation_context, true, ctx, err) != 0
                   ? mp_err_prefix(err, "validation_context.")
                   : 0;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG:
        return apply_sds_validation(c->validation_context_sds_secret_config, NULL, ctx, err);
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT: {
        const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
            *cc = c->combined_validation_context;
        if (cc->default_validation_context == NULL ||
            cc->validation_context_sds_secret_config == NULL)
            return mp_err_set(err, "combined_validation_context: default_validation_context and "
                                   "validation_context_sds_secret_config are required");
        if (apply_sds_validation(cc->validation_context_sds_secret_config,
                                 cc->default_validation_context, ctx, err) != 0)
            return mp_err_prefix(err, "combined_validation_context.");
        return 0;
    }
    default:
        return mp_err_set(err, "validation_context_certificate_provider: not supported");
    }
}

/* ---- the common context and the two sides ---- */

static int translate_common(const pb_common_t *c, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (c == NULL)
        return 0;
    if (c->custom_handshaker != NULL)
        return mp_err_set(err, "custom_handshaker: not supported");
    if (c->key_log != NULL)
        return mp_err_set(err, "key_log: not supported");
    if (translate_params(c->tls_params, ctx, err) != 0)
        return mp_err_prefix(err, "tls_params.");
    if (translate_certs(c, ctx, err) != 0 || translate_validation(c, ctx, err) != 0)
        return MP_ERROR;
    if (mp_tls_ctx_set_alpn(ctx, c->alpn_protocols, c->n_alpn_protocols, err) != 0)
        return mp_err_prefix(err, "alpn_protocols");
    return 0;
}

static int translate_session(const pb_down_t *d, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    switch (d->session_ticket_keys_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS:
        return mp_err_set(err, "session_ticket_keys: not supported yet (tickets use keys "
                               "magpie generates)");
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS_SDS_SECRET_CONFIG:
        return mp_err_set(err, "session_ticket_keys_sds_secret_config: not supported yet");
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_DISABLE_STATELESS_SESSION_RESUMPTION:
        if (d->disable_stateless_session_resumption)
            SSL_CTX_set_options(ctx->ssl, SSL_OP_NO_TICKET);
        break;
    default:
        break;
    }
    if (d->disable_stateful_session_resumption)
        SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
    if (d->session_timeout != NULL) {
        if (d->session_timeout->seconds < 0 || d->session_timeout->seconds > 0xffffffffLL)
            return mp_err_set(err, "session_timeout: must be between 0s and 4294967295s");
        SSL_CTX_set_timeout(ctx->ssl, (long)d->session_timeout->seconds);
    }
    return 0;
}

static int translate_down(const pb_down_t *d, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (mp_translate__bool(d->require_sni, false))
        return mp_err_set(err, "require_sni: not supported");
    if (d->ocsp_staple_policy !=
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__OCSP_STAPLE_POLICY__LENIENT_STAPLING)
        return mp_err_set(err, "ocsp_staple_policy: only LENIENT_STAPLING is supported");
    ctx->require_client_cert = mp_translate__bool(d->require_client_certificate, false);
    if (!d->prefer_client_ciphers)
        SSL_CTX_set_options(ctx->ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (translate_session(d, ctx, err) != 0)
        return MP_ERROR;
    if (translate_common(d->common_tls_context, ctx, err) != 0)
        return mp_err_prefix(err, "common_tls_context.");
    return 0;
}

static int translate_up(const pb_up_t *u, mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (u->auto_host_sni)
        return mp_err_set(err, "auto_host_sni: not supported yet");
    if (u->auto_sni_san_validation)
        return mp_err_set(err, "auto_sni_san_validation: not supported yet");
    if (u->sni != NULL && strlen(u->sni) > 255)
        return mp_err_set(err, "sni: longer than 255 bytes");
    if (u->sni != NULL && u->sni[0] != '\0')
        ctx->sni = mp_xstrdup(u->sni);
    if (!u->allow_renegotiation)
        SSL_CTX_set_options(ctx->ssl, SSL_OP_NO_RENEGOTIATION);
    ctx->max_session_keys = mp_translate__u32(u->max_session_keys, 1);
    if (translate_common(u->common_tls_context, ctx, err) != 0)
        return mp_err_prefix(err, "common_tls_context.");
    return 0;
}

/* ---- the transport socket ---- */

static const char *any_type(const pb_socket_t *pb)
{
    if (pb->config_type_case !=
            ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG ||
        pb->typed_config == NULL || pb->typed_config->type_url == NULL)
        return "";
    const char *slash = strrchr(pb->typed_config->type_url, '/');
    return slash != NULL ? slash + 1 : pb->typed_config->type_url;
}

/* The context message, unpacked, or an empty one when the socket has no typed_config. */
static ProtobufCMessage *unpack_context(const pb_socket_t *pb, bool server, mp_err_t *err)
{
    const ProtobufCMessageDescriptor *desc =
        server ? &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
               : &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor;
    const char *type = any_type(pb);
    if (type[0] == '\0') {
        ProtobufCMessage *m = mp_xcalloc(1, desc->sizeof_message);
        protobuf_c_message_init(desc, m);
        return m;
    }
    if (strcmp(type, server ? DOWN_TYPE : UP_TYPE) != 0) {
        mp_err_set(err, "typed_config: a %s needs %s, not \"%s\"",
                   server ? "filter chain" : "cluster", server ? DOWN_TYPE : UP_TYPE, type);
        return NULL;
    }
    ProtobufCMessage *m = mp_pb_any_unpack(&pb->typed_config->base, desc, err);
    if (m == NULL)
        mp_err_prefix(err, "typed_config: ");
    return m;
}

static void free_context(ProtobufCMessage *m, const pb_socket_t *pb)
{
    if (any_type(pb)[0] == '\0')
        free(m); /* the empty stand-in owns nothing */
    else
        protobuf_c_message_free_unpacked(m, NULL);
}

static mp_tls_ctx_t *build(const pb_socket_t *pb, bool server, mp_err_t *err)
{
    ProtobufCMessage *m = unpack_context(pb, server, err);
    if (m == NULL)
        return NULL;
    mp_tls_ctx_t *ctx = mp_tls_ctx_new(server, err);
    int rc = ctx == NULL ? MP_ERROR
             : server    ? translate_down((const pb_down_t *)m, ctx, err)
                         : translate_up((const pb_up_t *)m, ctx, err);
    if (rc == 0 && mp_tls_ctx_finish(ctx, err) != 0)
        rc = MP_ERROR;
    free_context(m, pb);
    if (rc != 0) {
        if (ctx != NULL && any_type(pb)[0] != '\0')
            mp_err_prefix(err, "typed_config.");
        mp_tls_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- rotation: the recipe and the registry ---- */

/* The snapshot being translated (mp_translate__tls_register_into); main thread only. */
static mp_config_t *registry;

void mp_translate__tls_register_into(mp_config_t *cfg)
{
    registry = cfg;
}

/* A context fed by SDS files keeps its TransportSocket (packed: the bootstrap message it points
 * into is not ours to keep) so that the watcher can translate it again; its sds.<name>.* stats
 * exist from the start, as Envoy's do. */
static void keep_recipe(const pb_socket_t *pb, const char *stat_prefix, mp_tls_ctx_t *ctx)
{
    ctx->stat_prefix = mp_xstrdup(stat_prefix);
    ctx->recipe_len = protobuf_c_message_get_packed_size(&pb->base);
    ctx->recipe = mp_xmalloc(ctx->recipe_len ? ctx->recipe_len : 1);
    protobuf_c_message_pack(&pb->base, ctx->recipe);
    for (uint32_t i = 0; i < ctx->n_sources; i++) {
        const char *name = ctx->sources[i].secret;
        mp_stats_counterf("sds.%s.update_attempt", name);
        mp_stats_counterf("sds.%s.update_success", name);
        mp_stats_counterf("sds.%s.update_rejected", name);
    }
    mp_sds__digest_sources(ctx);
}

static void register_ctx(mp_tls_ctx_t *ctx)
{
    if (registry == NULL)
        return;
    registry->tls_ctxs =
        mp_xrealloc(registry->tls_ctxs, (registry->n_tls_ctxs + 1) * sizeof(*registry->tls_ctxs));
    registry->tls_ctxs[registry->n_tls_ctxs++] = ctx;
}

mp_tls_ctx_t *mp_translate__tls_rebuild(const mp_tls_ctx_t *ctx, mp_err_t *err)
{
    if (ctx->recipe == NULL) {
        mp_err_set(err, "not built from SDS files");
        return NULL;
    }
    pb_socket_t *pb = (pb_socket_t *)protobuf_c_message_unpack(
        &envoy__config__core__v3__transport_socket__descriptor, NULL, ctx->recipe_len, ctx->recipe);
    if (pb == NULL) {
        mp_err_set(err, "cannot unpack the kept TransportSocket");
        return NULL;
    }
    mp_tls_ctx_t *fresh = build(pb, ctx->server, err);
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    if (fresh != NULL)
        fresh->stats = ctx->stats;
    return fresh;
}

int mp_translate__transport_socket(const pb_socket_t *pb, bool server, const char *stat_prefix,
                                   mp_tls_ctx_t **out, mp_err_t *err)
{
    *out = NULL;
    if (pb == NULL)
        return 0;
    const char *type = any_type(pb);
    const char *name = pb->name ? pb->name : "";
    if (strcmp(type, RAW_TYPE) == 0 || (type[0] == '\0' && strcmp(name, RAW_NAME) == 0))
        return 0;
    if (type[0] == '\0' && strcmp(name, TLS_NAME) != 0)
        return mp_err_set(err,
                          "name: only " TLS_NAME " and " RAW_NAME " are supported, not "
                          "\"%s\"",
                          name);
    if (type[0] != '\0' && strcmp(type, DOWN_TYPE) != 0 && strcmp(type, UP_TYPE) != 0)
        return mp_err_set(err, "typed_config: unsupported transport socket type \"%s\"", type);
    *out = build(pb, server, err);
    if (*out == NULL)
        return MP_ERROR;
    mp_tls_stats_register(&(*out)->stats, stat_prefix);
    if ((*out)->n_sources > 0)
        keep_recipe(pb, stat_prefix, *out);
    register_ctx(*out);
    return 0;
}
