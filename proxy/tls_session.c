/* Upstream TLS session resumption (include/magpie/tls.h, "Session resumption"): a cache of
 * recent SSL_SESSIONs per upstream peer, owned by a client context and shared by the workers
 * under its own mutex.  Envoy keeps max_session_keys sessions per client context and treats a
 * TLS 1.3 session as single-use; magpie does the same, per peer, so that a session is only ever
 * offered to the host that issued it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/tls.h"

#include "tls_internal.h"

/* Peers remembered per context.  Hosts come and go with DNS; beyond this the peer whose
 * sessions were stored longest ago is forgotten. */
#define MP_TLS_SESSION_PEERS 128

typedef struct mp_tls_peer_sessions {
    char *peer;      /* the key: address text and server name */
    SSL_SESSION **s; /* newest last; max_keys slots */
    uint32_t n;      /* sessions held */
    uint64_t stored; /* the cache's clock at the last store, for eviction */
} mp_tls_peer_sessions_t;

/* Refcounted: the owning context holds one reference, every SSL tagged with it another, so a
 * ticket arriving on a connection after a rotation lands in the cache that connection came
 * from (and dies with it) instead of the new one. */
struct mp_tls_sessions {
    atomic_uint refs;
    pthread_mutex_t lock;
    uint32_t max_keys;
    uint32_t n_peers;
    uint64_t clock;
    mp_tls_peer_sessions_t peers[MP_TLS_SESSION_PEERS];
};

/* What an SSL carries (ex_data) so that its new sessions find their cache and key. */
typedef struct mp_tls_session_tag {
    mp_tls_sessions_t *cache;
    char peer[];
} mp_tls_session_tag_t;

static int tag_index = -1;
static pthread_once_t tag_once = PTHREAD_ONCE_INIT;

mp_tls_sessions_t *mp_tls__sessions_new(uint32_t max_keys)
{
    mp_tls_sessions_t *c = mp_xcalloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    c->max_keys = max_keys;
    return c;
}

static void forget_peer(mp_tls_peer_sessions_t *p)
{
    for (uint32_t i = 0; i < p->n; i++)
        SSL_SESSION_free(p->s[i]);
    free(p->s);
    free(p->peer);
    memset(p, 0, sizeof(*p));
}

void mp_tls__sessions_unref(mp_tls_sessions_t *c)
{
    if (c == NULL || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < c->n_peers; i++)
        forget_peer(&c->peers[i]);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* The SSL is being freed (before its SSL_CTX is released): its tag goes, and with the last tag
 * of a cache its owner already dropped, the cache and its sessions. */
static void on_tag_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    mp_tls_session_tag_t *tag = ptr;
    if (tag == NULL)
        return;
    mp_tls__sessions_unref(tag->cache);
    free(tag);
}

static void make_tag_index(void)
{
    tag_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, on_tag_free);
}

/* Under c->lock. */
static mp_tls_peer_sessions_t *find_peer(mp_tls_sessions_t *c, const char *peer)
{
    for (uint32_t i = 0; i < c->n_peers; i++)
        if (strcmp(c->peers[i].peer, peer) == 0)
            return &c->peers[i];
    return NULL;
}

/* Under c->lock: the peer's slot, made (evicting the stalest peer when full). */
static mp_tls_peer_sessions_t *peer_slot(mp_tls_sessions_t *c, const char *peer)
{
    mp_tls_peer_sessions_t *p = find_peer(c, peer);
    if (p != NULL)
        return p;
    if (c->n_peers < MP_TLS_SESSION_PEERS) {
        p = &c->peers[c->n_peers++];
    } else {
        p = &c->peers[0];
        for (uint32_t i = 1; i < c->n_peers; i++)
            if (c->peers[i].stored < p->stored)
                p = &c->peers[i];
        forget_peer(p);
    }
    p->peer = mp_xstrdup(peer);
    p->s = mp_xcalloc(c->max_keys, sizeof(*p->s));
    return p;
}

/* Under c->lock: the newest resumable session for peer with a reference for the caller, or
 * NULL.  A TLS 1.3 session leaves the cache (RFC 8446, appendix C.4: tickets are not reused, so
 * that connections cannot be linked); an older one stays for the next connection too. */
static SSL_SESSION *take_session(mp_tls_sessions_t *c, const char *peer)
{
    mp_tls_peer_sessions_t *p = find_peer(c, peer);
    while (p != NULL && p->n > 0) {
        SSL_SESSION *s = p->s[p->n - 1];
        bool single_use = SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION;
        if (single_use || !SSL_SESSION_is_resumable(s))
            p->n--; /* the cache's reference moves to the caller */
        else
            SSL_SESSION_up_ref(s);
        if (SSL_SESSION_is_resumable(s))
            return s;
        SSL_SESSION_free(s);
    }
    return NULL;
}

/* Tags ssl with cache (a reference of its own) and peer, and offers peer's newest session. */
static void offer_session(mp_tls_sessions_t *cache, SSL *ssl, const char *peer)
{
    pthread_once(&tag_once, make_tag_index);
    size_t len = strlen(peer);
    mp_tls_session_tag_t *tag = mp_xmalloc(sizeof(*tag) + len + 1);
    memcpy(tag->peer, peer, len + 1);
    atomic_fetch_add_explicit(&cache->refs, 1, memory_order_relaxed);
    tag->cache = cache;
    if (SSL_set_ex_data(ssl, tag_index, tag) != 1) {
        mp_tls__sessions_unref(cache);
        free(tag);
        return;
    }
    pthread_mutex_lock(&cache->lock);
    SSL_SESSION *s = take_session(cache, peer);
    pthread_mutex_unlock(&cache->lock);
    if (s != NULL) {
        SSL_set_session(ssl, s); /* takes its own reference */
        SSL_SESSION_free(s);
    }
}

SSL *mp_tls_client_ssl(const mp_tls_ctx_t *ctx, const char *peer)
{
    /* The SSL_CTX and the cache are taken together, so that a rotation cannot pair a new trust
     * setup with sessions verified under the old one. */
    pthread_mutex_t *lock = (pthread_mutex_t *)&ctx->lock; /* logically mutable */
    pthread_mutex_lock(lock);
    SSL_CTX *sc = ctx->ssl;
    SSL_CTX_up_ref(sc);
    mp_tls_sessions_t *cache = ctx->sessions;
    if (cache != NULL)
        atomic_fetch_add_explicit(&cache->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(lock);
    SSL *ssl = SSL_new(sc);
    SSL_CTX_free(sc);
    if (ssl != NULL && cache != NULL && peer != NULL)
        offer_session(cache, ssl, peer);
    mp_tls__sessions_unref(cache);
    return ssl;
}

/* OpenSSL's new-session callback (client contexts with max_session_keys > 0): at the end of a
 * TLS 1.2 handshake, or for each TLS 1.3 ticket, which arrives after the handshake on a read.
 * Returning 1 keeps OpenSSL's reference, which the cache then owns. */
int mp_tls__on_new_session(SSL *ssl, SSL_SESSION *s)
{
    mp_tls_session_tag_t *tag = tag_index >= 0 ? SSL_get_ex_data(ssl, tag_index) : NULL;
    if (tag == NULL || !SSL_SESSION_is_resumable(s))
        return 0;
    mp_tls_sessions_t *c = tag->cache;
    pthread_mutex_lock(&c->lock);
    mp_tls_peer_sessions_t *p = peer_slot(c, tag->peer);
    if (p->n == c->max_keys) {
        SSL_SESSION_free(p->s[0]);
        memmove(p->s, p->s + 1, (p->n - 1) * sizeof(*p->s));
        p->n--;
    }
    p->s[p->n++] = s;
    p->stored = ++c->clock;
    pthread_mutex_unlock(&c->lock);
    return 1;
}

uint32_t mp_tls_sessions_count(mp_tls_sessions_t *cache, const char *peer)
{
    if (cache == NULL)
        return 0;
    pthread_mutex_lock(&cache->lock);
    mp_tls_peer_sessions_t *p = find_peer(cache, peer);
    uint32_t n = p != NULL ? p->n : 0;
    pthread_mutex_unlock(&cache->lock);
    return n;
}
