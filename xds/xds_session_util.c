/* The xDS session's small pieces: sorted name sets, the two readers of untrusted wire bytes
 * (a resource's name, a nesting-depth bound) and the reconnect back-off arithmetic. */
#include <stdlib.h>
#include <string.h>

#include "xds_session_internal.h"

/* Binary search: the index of name, or -(insertion point) - 1. */
static ssize_t search_names(const mp_xds_names_t *set, const char *name)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(set->v[mid].name, name);
        if (c == 0)
            return (ssize_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(ssize_t)lo - 1;
}

ssize_t mp_xds__names_find(const mp_xds_names_t *set, const char *name)
{
    ssize_t i = search_names(set, name);
    return i >= 0 ? i : -1;
}

bool mp_xds__names_put(mp_xds_names_t *set, const char *name, const char *version)
{
    ssize_t i = search_names(set, name);
    if (i >= 0) {
        free(set->v[i].version);
        set->v[i].version = version ? mp_xstrdup(version) : NULL;
        return false;
    }
    size_t at = (size_t)(-i - 1);
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 8;
        set->v = mp_xrealloc(set->v, set->cap * sizeof(*set->v));
    }
    memmove(&set->v[at + 1], &set->v[at], (set->n - at) * sizeof(*set->v));
    set->v[at].name = mp_xstrdup(name);
    set->v[at].version = version ? mp_xstrdup(version) : NULL;
    set->n++;
    return true;
}

bool mp_xds__names_del(mp_xds_names_t *set, const char *name)
{
    ssize_t i = search_names(set, name);
    if (i < 0)
        return false;
    free(set->v[i].name);
    free(set->v[i].version);
    memmove(&set->v[i], &set->v[i + 1], (set->n - (size_t)i - 1) * sizeof(*set->v));
    set->n--;
    return true;
}

void mp_xds__names_clear(mp_xds_names_t *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->v[i].name);
        free(set->v[i].version);
    }
    free(set->v);
    memset(set, 0, sizeof(*set));
}

/* A varint of at most 10 bytes.  Returns bytes read, 0 when truncated or overlong. */
static size_t read_varint(const uint8_t *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

/* One field: its number, wire type and, for length-delimited ones, the payload.  Returns the
 * bytes the field takes, 0 when malformed.  Groups (wire types 3, 4) are refused: no xDS
 * message uses them, and protobuf-c does not either. */
typedef struct wire_field {
    uint32_t number;
    int type;
    const uint8_t *data;
    size_t len;
} wire_field_t;

static size_t read_field(const uint8_t *p, size_t len, wire_field_t *f)
{
    uint64_t key, v;
    size_t k = read_varint(p, len, &key);
    if (k == 0 || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return 0;
    f->number = (uint32_t)(key >> 3);
    f->type = (int)(key & 7);
    size_t n = 0;
    switch (f->type) {
    case 0:
        n = read_varint(p + k, len - k, &v);
        return n ? k + n : 0;
    case 1:
        return len - k >= 8 ? k + 8 : 0;
    case 5:
        return len - k >= 4 ? k + 4 : 0;
    case 2:
        n = read_varint(p + k, len - k, &v);
        if (n == 0 || v > len - k - n)
            return 0;
        f->data = p + k + n;
        f->len = (size_t)v;
        return k + n + (size_t)v;
    default:
        return 0;
    }
}

char *mp_xds__scan_name(const uint8_t *p, size_t len)
{
    const uint8_t *name = NULL;
    size_t name_len = 0;
    size_t off = 0;
    while (off < len) {
        wire_field_t f = {0};
        size_t n = read_field(p + off, len - off, &f);
        if (n == 0)
            return NULL;
        /* Proto3: the last occurrence of a singular field wins. */
        if (f.number == 1 && f.type == 2) {
            name = f.data;
            name_len = f.len;
        }
        off += n;
    }
    if (name == NULL || memchr(name, 0, name_len) != NULL)
        return NULL;
    return mp_xstrndup((const char *)name, name_len);
}

int mp_xds__check_depth(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                        int max_depth)
{
    if (max_depth <= 0)
        return MP_ERROR;
    size_t off = 0;
    while (off < len) {
        wire_field_t f = {0};
        size_t n = read_field(p + off, len - off, &f);
        if (n == 0)
            return MP_ERROR;
        off += n;
        const ProtobufCFieldDescriptor *fd =
            desc ? protobuf_c_message_descriptor_get_field(desc, f.number) : NULL;
        if (fd == NULL || fd->type != PROTOBUF_C_TYPE_MESSAGE || f.type != 2)
            continue;
        if (mp_xds__check_depth(fd->descriptor, f.data, f.len, max_depth - 1) != 0)
            return MP_ERROR;
    }
    return 0;
}

uint64_t mp_xds_backoff_ms(unsigned attempt, uint64_t base_ms, uint64_t max_ms, uint64_t random)
{
    if (base_ms == 0)
        base_ms = 1;
    if (max_ms < base_ms)
        max_ms = base_ms;
    /* Doubling stops at the cap, so large attempt numbers neither overflow nor shift past 63. */
    uint64_t interval = base_ms;
    for (unsigned i = 0; i < attempt && interval < max_ms; i++)
        interval = interval > max_ms / 2 ? max_ms : interval * 2;
    if (interval > max_ms)
        interval = max_ms;
    return random % interval;
}
