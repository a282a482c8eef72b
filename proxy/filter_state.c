/* Per-stream and per-connection state of HTTP filters (include/magpie/filter.h). */
#include <stddef.h>

#include "http_internal.h"
#include "magpie/filter.h"

static mp_filter_state_t *find(mp_filter_state_t *list, const void *owner)
{
    for (; list != NULL; list = list->next)
        if (list->owner == owner)
            return list;
    return NULL;
}

void mp_stream_filter_state_add(mp_stream_t *s, mp_filter_state_t *st)
{
    st->next = s->filter_states;
    s->filter_states = st;
}

mp_filter_state_t *mp_stream_filter_state_get(mp_stream_t *s, const void *owner)
{
    return find(s->filter_states, owner);
}

void mp_conn_filter_state_add(mp_stream_t *s, mp_filter_state_t *st)
{
    st->next = s->conn->filter_states;
    s->conn->filter_states = st;
}

mp_filter_state_t *mp_conn_filter_state_get(mp_stream_t *s, const void *owner)
{
    return find(s->conn->filter_states, owner);
}

void mp_filter_states_destroy(mp_filter_state_t **list)
{
    while (*list != NULL) {
        mp_filter_state_t *st = *list;
        *list = st->next;
        st->destroy(st);
    }
}
