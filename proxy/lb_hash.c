/* Consistent-hashing tables (include/magpie/lb_hash.h): xxHash64, MurmurHash2-64, the ketama-style
 * ring and the Maglev table, built the way Envoy builds them so that a mesh mixing magpie and
 * Envoy sidecars sends a given key to the same host. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "magpie/lb_hash.h"

/* ---- xxHash64 (XXH64 as specified in xxHash's doc/xxhash_spec.md) ---- */

#define XX_P1 0x9E3779B185EBCA87ull
#define XX_P2 0xC2B2AE3D27D4EB4Full
#define XX_P3 0x165667B19E3779F9ull
#define XX_P4 0x85EBCA77C2B2AE63ull
#define XX_P5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian loads whatever the host order, as the spec reads its input. */
static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t xx_round(uint64_t acc, uint64_t lane)
{
    return rotl64(acc + lane * XX_P2, 31) * XX_P1;
}

static inline uint64_t xx_merge(uint64_t acc, uint64_t v)
{
    return (acc ^ xx_round(0, v)) * XX_P1 + XX_P4;
}

/* The four-lane loop over 32-byte stripes, for inputs of 32 bytes or more. */
static uint64_t xx_stripes(const uint8_t **pp, const uint8_t *end, uint64_t seed)
{
    const uint8_t *p = *pp;
    uint64_t v[4] = {seed + XX_P1 + XX_P2, seed + XX_P2, seed, seed - XX_P1};
    for (; end - p >= 32; p += 32)
        for (int i = 0; i < 4; i++)
            v[i] = xx_round(v[i], load_le64(p + 8 * i));
    uint64_t acc = rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) + rotl64(v[3], 18);
    for (int i = 0; i < 4; i++)
        acc = xx_merge(acc, v[i]);
    *pp = p;
    return acc;
}

uint64_t mp_hash_xx64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data, *end = p + len;
    uint64_t acc = len >= 32 ? xx_stripes(&p, end, seed) : seed + XX_P5;
    acc += (uint64_t)len;
    for (; end - p >= 8; p += 8)
        acc = rotl64(acc ^ xx_round(0, load_le64(p)), 27) * XX_P1 + XX_P4;
    if (end - p >= 4) {
        acc = rotl64(acc ^ (uint64_t)load_le32(p) * XX_P1, 23) * XX_P2 + XX_P3;
        p += 4;
    }
    for (; p < end; p++)
        acc = rotl64(acc ^ (uint64_t)*p * XX_P5, 11) * XX_P1;
    acc ^= acc >> 33;
    acc *= XX_P2;
    acc ^= acc >> 29;
    acc *= XX_P3;
    acc ^= acc >> 32;
    return acc;
}

/* ---- MurmurHash2-64 in libstdc++'s form (its _Hash_bytes for 64-bit size_t) ---- */

static inline uint64_t shift_mix(uint64_t v)
{
    return v ^ (v >> 47);
}

uint64_t mp_hash_murmur2_64(const void *data, size_t len, uint64_t seed)
{
    const uint64_t mul = (0xc6a4a793ull << 32) + 0x5bd1e995ull;
    const uint8_t *p = data;
    const uint8_t *end = p + (len & ~(size_t)7);
    uint64_t hash = seed ^ (len * mul);
    for (; p != end; p += 8) {
        hash ^= shift_mix(load_le64(p) * mul) * mul;
        hash *= mul;
    }
    size_t tail = len & 7;
    if (tail != 0) {
        uint64_t v = 0;
        for (size_t i = tail; i-- > 0;)
            v = (v << 8) | p[i];
        hash ^= v;
        hash *= mul;
    }
    hash = shift_mix(hash) * mul;
    return shift_mix(hash);
}

/* ---- configuration ---- */

void mp_lb_hash_config_default(mp_lb_hash_config_t *c)
{
    *c = (mp_lb_hash_config_t){
        .min_ring_size = MP_RING_MIN_DEFAULT,
        .max_ring_size = MP_RING_MAX_DEFAULT,
        .hash_function = MP_HASH_FN_XX,
        .table_size = MP_MAGLEV_SIZE_DEFAULT,
    };
}

bool mp_hash_is_prime(uint64_t n)
{
    if (n < 2)
        return false;
    for (uint64_t d = 2; d * d <= n; d++)
        if (n % d == 0)
            return false;
    return true;
}

/* ---- tables ---- */

typedef struct ring_entry {
    uint64_t hash;
    uint32_t host;
} ring_entry_t;

struct mp_hash_table {
    mp_hash_table_kind_t kind;
    uint64_t size;       /* ring entries or Maglev slots */
    uint32_t n_distinct; /* hosts that own at least one entry */
    ring_entry_t *ring;  /* RING: sorted by hash */
    uint32_t *slots;     /* MAGLEV: host index per slot */
};

static int cmp_entry(const void *a, const void *b)
{
    const ring_entry_t *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->host < y->host ? -1 : x->host > y->host;
}

static uint64_t hash_key(mp_hash_fn_t fn, const char *s, size_t len)
{
    return fn == MP_HASH_FN_MURMUR2 ? mp_hash_murmur2_64(s, len, MP_HASH_MURMUR_SEED)
                                    : mp_hash_xx64(s, len, 0);
}

static double total_weight(const mp_hash_host_t *hosts, uint32_t n, double *min_w, double *max_w)
{
    double sum = 0;
    *min_w = INFINITY;
    *max_w = 0;
    for (uint32_t i = 0; i < n; i++) {
        double w = hosts[i].weight ? hosts[i].weight : 1;
        sum += w;
        *min_w = fmin(*min_w, w);
        *max_w = fmax(*max_w, w);
    }
    return sum;
}

/* Envoy's ring: the smallest host gets at least min_ring_size * its share entries (so the ring
 * grows with skewed weights), bounded by max_ring_size; entries are given out by a running
 * target so that rounding never drifts by more than one entry over the whole ring. */
static int build_ring(mp_hash_table_t *t, const mp_hash_host_t *hosts, uint32_t n,
                      const mp_lb_hash_config_t *cfg, mp_err_t *err)
{
    double min_w, max_w, sum = total_weight(hosts, n, &min_w, &max_w);
    double min_share = min_w / sum;
    double scale =
        fmin(ceil(min_share * (double)cfg->min_ring_size) / min_share, (double)cfg->max_ring_size);
    uint64_t cap = (uint64_t)ceil(scale) + n;
    t->ring = mp_xmalloc(cap * sizeof(*t->ring));
    double current = 0, target = 0;
    for (uint32_t h = 0; h < n; h++) {
        size_t klen = strlen(hosts[h].key);
        char *buf = mp_xmalloc(klen + 24);
        memcpy(buf, hosts[h].key, klen);
        buf[klen] = '_';
        target += scale * (hosts[h].weight ? hosts[h].weight : 1) / sum;
        uint64_t before = t->size;
        for (uint64_t i = 0; current < target && t->size < cap; i++, current++) {
            int m = snprintf(buf + klen + 1, 22, "%llu", (unsigned long long)i);
            t->ring[t->size++] =
                (ring_entry_t){hash_key(cfg->hash_function, buf, klen + 1 + m), hosts[h].index};
        }
        t->n_distinct += t->size > before;
        free(buf);
    }
    if (t->size == 0)
        return mp_err_set(err, "ring hash: the ring is empty");
    qsort(t->ring, t->size, sizeof(*t->ring), cmp_entry);
    return 0;
}

typedef struct maglev_entry {
    uint64_t offset, skip, next, count;
    double weight, target;
    uint32_t host;
    const char *key;
} maglev_entry_t;

static int cmp_maglev_key(const void *a, const void *b)
{
    return strcmp(((const maglev_entry_t *)a)->key, ((const maglev_entry_t *)b)->key);
}

/* One turn of entry e: its next free preferred slot. */
static void maglev_place(mp_hash_table_t *t, maglev_entry_t *e, uint32_t empty)
{
    uint64_t c = (e->offset + e->skip * e->next) % t->size;
    while (t->slots[c] != empty) {
        e->next++;
        c = (e->offset + e->skip * e->next) % t->size;
    }
    t->slots[c] = e->host;
    e->next++;
    e->count++;
}

/* The Maglev paper's population (Eisenbud et al., NSDI 2016, section 3.4), weighted as Envoy
 * does: in round r a host of weight w takes a slot when r * w reaches its running target, which
 * grows by the largest weight each time it does, so the heaviest host takes one slot per round.
 * Hosts are ordered by key first, making the table independent of the host set's order. */
static int build_maglev(mp_hash_table_t *t, const mp_hash_host_t *hosts, uint32_t n,
                        const mp_lb_hash_config_t *cfg, mp_err_t *err)
{
    uint64_t m = cfg->table_size;
    if (m < 2 || m > MP_MAGLEV_SIZE_MAX || !mp_hash_is_prime(m))
        return mp_err_set(err, "maglev: table_size %llu is not a prime up to %u",
                          (unsigned long long)m, MP_MAGLEV_SIZE_MAX);
    double min_w, max_w, sum = total_weight(hosts, n, &min_w, &max_w);
    maglev_entry_t *e = mp_xcalloc(n, sizeof(*e));
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(hosts[i].key);
        e[i].key = hosts[i].key;
        e[i].host = hosts[i].index;
        e[i].offset = mp_hash_xx64(hosts[i].key, len, 0) % m;
        e[i].skip = mp_hash_xx64(hosts[i].key, len, 1) % (m - 1) + 1;
        e[i].weight = (hosts[i].weight ? hosts[i].weight : 1) / sum;
    }
    qsort(e, n, sizeof(*e), cmp_maglev_key);
    double max_share = max_w / sum;
    const uint32_t empty = UINT32_MAX;
    t->size = m;
    t->slots = mp_xmalloc(m * sizeof(*t->slots));
    memset(t->slots, 0xff, m * sizeof(*t->slots));
    uint64_t filled = 0;
    for (uint64_t round = 1; filled < m; round++) {
        for (uint32_t i = 0; i < n && filled < m; i++) {
            if ((double)round * e[i].weight < e[i].target)
                continue;
            e[i].target += max_share;
            maglev_place(t, &e[i], empty);
            filled++;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        t->n_distinct += e[i].count > 0;
    free(e);
    return 0;
}

mp_hash_table_t *mp_hash_table_new(mp_hash_table_kind_t kind, const mp_hash_host_t *hosts,
                                   uint32_t n, const mp_lb_hash_config_t *cfg, mp_err_t *err)
{
    if (n == 0) {
        mp_err_set(err, "consistent hashing: no hosts");
        return NULL;
    }
    mp_hash_table_t *t = mp_xcalloc(1, sizeof(*t));
    t->kind = kind;
    int rc = kind == MP_HASH_TABLE_RING ? build_ring(t, hosts, n, cfg, err)
                                        : build_maglev(t, hosts, n, cfg, err);
    if (rc != 0) {
        mp_hash_table_free(t);
        return NULL;
    }
    return t;
}

void mp_hash_table_free(mp_hash_table_t *t)
{
    if (t == NULL)
        return;
    free(t->ring);
    free(t->slots);
    free(t);
}

uint64_t mp_hash_table_size(const mp_hash_table_t *t)
{
    return t ? t->size : 0;
}

/* The first entry whose hash is >= hash, wrapping to the first entry past the largest. */
static uint64_t ring_position(const mp_hash_table_t *t, uint64_t hash)
{
    uint64_t lo = 0, hi = t->size;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (t->ring[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == t->size ? 0 : lo;
}

static inline uint32_t host_at(const mp_hash_table_t *t, uint64_t pos)
{
    return t->kind == MP_HASH_TABLE_RING ? t->ring[pos].host : t->slots[pos];
}

static bool seen_host(const uint32_t *seen, uint32_t n, uint32_t host)
{
    for (uint32_t i = 0; i < n; i++)
        if (seen[i] == host)
            return true;
    return false;
}

/* Retries are rare and attempts few, so a linear walk with a short seen-list is cheap; the walk
 * is bounded by one lap of the table. */
uint32_t mp_hash_table_pick(const mp_hash_table_t *t, uint64_t hash, uint32_t attempt)
{
    uint64_t pos = t->kind == MP_HASH_TABLE_RING ? ring_position(t, hash) : hash % t->size;
    uint32_t first = host_at(t, pos);
    attempt %= t->n_distinct;
    if (attempt == 0)
        return first;
    uint32_t seen_buf[16];
    uint32_t *seen = attempt < 16 ? seen_buf : mp_xmalloc((attempt + 1) * sizeof(*seen));
    uint32_t n_seen = 0, host = first;
    seen[n_seen++] = first;
    for (uint64_t k = 1; k < t->size && n_seen <= attempt; k++) {
        host = host_at(t, (pos + k) % t->size);
        if (!seen_host(seen, n_seen, host))
            seen[n_seen++] = host;
    }
    if (seen != seen_buf)
        free(seen);
    return n_seen > attempt ? host : first;
}
