/* Consistent hashing for the RING_HASH and MAGLEV load balancers (proxy/lb_hash.c): the two hash
 * functions Envoy uses (xxHash64, and MurmurHash2-64 as libstdc++'s std::hash computes it), the
 * ring and Maglev lookup tables built from (host index, weight, key) triples, and the per-worker
 * state that rebuilds a table when the host set or host health changes (proxy/lb_hash_state.c).
 *
 * A table maps a 64-bit request hash to a host so that a given hash keeps reaching the same host
 * while the host set is stable, and removing one of N hosts moves only about 1/N of the hashes.
 * Tables are immutable once built and owned by whoever built them; one worker builds and reads
 * its own (no locks). */
#ifndef MAGPIE_LB_HASH_H
#define MAGPIE_LB_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "magpie/config.h"

/* ---- hash functions ---- */

/* xxHash64 of len bytes at data with seed, as specified by the xxHash project (XXH64). */
uint64_t mp_hash_xx64(const void *data, size_t len, uint64_t seed);

/* MurmurHash2, 64-bit, in the variant libstdc++ uses for std::hash<std::string>
 * (std::_Hash_bytes); with MP_HASH_MURMUR_SEED it gives what Envoy's MURMUR_HASH_2 ring gives. */
uint64_t mp_hash_murmur2_64(const void *data, size_t len, uint64_t seed);
#define MP_HASH_MURMUR_SEED 0xc70f6907ull

/* ---- configuration: mp_lb_hash_config_t (include/magpie/config.h) ---- */

#define MP_RING_MIN_DEFAULT 1024u
#define MP_RING_MAX_DEFAULT 8388608u /* also the largest ring either bound may ask for */
#define MP_MAGLEV_SIZE_DEFAULT 65537u
#define MP_MAGLEV_SIZE_MAX 5000011u /* Envoy's bound on maglev_lb_config.table_size */

/* Fills c with the defaults above.  Any thread. */
void mp_lb_hash_config_default(mp_lb_hash_config_t *c);

/* Whether n is prime (Maglev's table size must be, so that every skip visits every slot). */
bool mp_hash_is_prime(uint64_t n);

/* ---- tables ---- */

typedef enum mp_hash_table_kind {
    MP_HASH_TABLE_RING,
    MP_HASH_TABLE_MAGLEV,
} mp_hash_table_kind_t;

/* One host as a table sees it.  key is what is hashed to place it ("ip:port" or a host name);
 * index is what a pick returns (its position in the caller's host set). */
typedef struct mp_hash_host {
    const char *key;
    uint32_t index;
    uint32_t weight; /* >= 1; 0 is taken as 1 */
} mp_hash_host_t;

typedef struct mp_hash_table mp_hash_table_t;

/* Builds a table over hosts[0..n) (n >= 1; keys are copied as needed, hosts may go after the
 * call).  The ring gets ceil(scale) entries where scale = min(ceil(min_share * min_ring_size) /
 * min_share, max_ring_size) and min_share is the smallest host's share of the total weight; host
 * i places scale * share_i entries at the hashes of "<key>_0", "<key>_1", ...  Maglev fills
 * table_size slots by the paper's permutations (offset = xxHash64(key, 0) % size, skip =
 * xxHash64(key, 1) % (size - 1) + 1), each host taking turns in proportion to its weight.
 * Returns NULL (err filled) when n is 0 or a size is out of range.  Any thread. */
mp_hash_table_t *mp_hash_table_new(mp_hash_table_kind_t kind, const mp_hash_host_t *hosts,
                                   uint32_t n, const mp_lb_hash_config_t *cfg, mp_err_t *err);
void mp_hash_table_free(mp_hash_table_t *t);

/* The host index for hash.  attempt 0 is the host that owns the hash; attempt k > 0 walks on
 * from there (clockwise on the ring, slot by slot in Maglev) to the k-th host different from the
 * ones before it, modulo the number of distinct hosts, so a retry lands on another host whenever
 * there is one.  Never fails for a built table.  Any thread (the table is read only). */
uint32_t mp_hash_table_pick(const mp_hash_table_t *t, uint64_t hash, uint32_t attempt);

/* Entries (ring) or slots (Maglev) in t, for tests and /clusters. */
uint64_t mp_hash_table_size(const mp_hash_table_t *t);

/* ---- per-worker state for one hashing cluster (proxy/lb_hash_state.c) ---- */

typedef struct mp_lb_hash mp_lb_hash_t;

/* State for cluster c, whose lb_policy must be MP_LB_RING_HASH or MP_LB_MAGLEV.  Worker. */
mp_lb_hash_t *mp_lb_hash_new(const mp_cluster_t *c);
void mp_lb_hash_free(mp_lb_hash_t *h);

/* Picks the host of hs for the request hash: the table is (re)built when hs or the set of
 * usable hosts changed since the last pick.  Unusable hosts stay out of the table unless fewer
 * than half of the hosts are usable (panic: every host is used, as in mp_lb_pick).  exclude (-1
 * for none) is a host a retry wants to avoid: the next distinct host on the table is taken
 * instead when there is one.  Returns an index into hs, or -1 when hs is empty.  Worker. */
int mp_lb_hash_pick(mp_lb_hash_t *h, const mp_hostset_t *hs, int exclude, uint64_t hash);

#endif
