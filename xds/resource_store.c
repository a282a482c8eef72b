/* Resources looked up by name (include/magpie/resource_store.h).  A few hundred entries at
 * most in a sidecar, so a flat array searched linearly is enough. */
#include <stdlib.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/resource_store.h"

typedef struct entry {
    const ProtobufCMessageDescriptor *type;
    char *name;
    ProtobufCMessage *msg;
} entry_t;

static struct {
    entry_t *e;
    size_t n, cap;
} st;

static entry_t *find(const ProtobufCMessageDescriptor *type, const char *name)
{
    for (size_t i = 0; i < st.n; i++)
        if (st.e[i].type == type && strcmp(st.e[i].name, name) == 0)
            return &st.e[i];
    return NULL;
}

static void drop(entry_t *e)
{
    protobuf_c_message_free_unpacked(e->msg, NULL);
    free(e->name);
    *e = st.e[--st.n];
}

void mp_rstore_set(const ProtobufCMessageDescriptor *type, const char *name, ProtobufCMessage *m)
{
    entry_t *e = find(type, name);
    if (m == NULL) {
        if (e != NULL)
            drop(e);
        return;
    }
    if (e != NULL) {
        protobuf_c_message_free_unpacked(e->msg, NULL);
        e->msg = m;
        return;
    }
    if (st.n == st.cap) {
        st.cap = st.cap ? st.cap * 2 : 16;
        st.e = mp_xrealloc(st.e, st.cap * sizeof(*st.e));
    }
    st.e[st.n++] = (entry_t){.type = type, .name = mp_xstrdup(name), .msg = m};
}

const ProtobufCMessage *mp_rstore_get(const ProtobufCMessageDescriptor *type, const char *name)
{
    entry_t *e = name != NULL ? find(type, name) : NULL;
    return e != NULL ? e->msg : NULL;
}

void mp_rstore_clear(void)
{
    while (st.n > 0)
        drop(&st.e[st.n - 1]);
    free(st.e);
    memset(&st, 0, sizeof(st));
}
