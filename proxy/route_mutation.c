/* Header mutations (HeaderValueOption lists and *_headers_to_remove), applied the way Envoy's
 * HeaderParser::evaluateHeaders does: removals first; then every add decides, against the
 * headers as they stand after the removals, whether it overwrites, appends or does nothing;
 * then all overwrites are applied, then all appends.  So two ops on one name never see each
 * other's result, and their order in the list only matters between overwrites (last wins). */
#include <stdlib.h>
#include <string.h>

#include "magpie/route.h"

enum op_effect {
    EFFECT_NONE,
    EFFECT_SET,
    EFFECT_ADD,
};

static bool has_header(const mp_headers_t *h, const char *name)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (strcmp(h->v[i].name, name) == 0)
            return true;
    return false;
}

static enum op_effect decide(const mp_header_op_t *op, const mp_headers_t *h)
{
    /* An empty value is only sent when keep_empty_value asks for it. */
    if ((op->value == NULL || op->value[0] == '\0') && !op->keep_empty_value)
        return EFFECT_NONE;
    switch (op->action) {
    case MP_APPEND_IF_EXISTS_OR_ADD:
        return EFFECT_ADD;
    case MP_ADD_IF_ABSENT:
        return has_header(h, op->name) ? EFFECT_NONE : EFFECT_ADD;
    case MP_OVERWRITE_IF_EXISTS_OR_ADD:
        return EFFECT_SET;
    case MP_OVERWRITE_IF_EXISTS:
        return has_header(h, op->name) ? EFFECT_SET : EFFECT_NONE;
    default:
        return EFFECT_NONE;
    }
}

static void apply_ops(const mp_header_mutation_t *m, mp_headers_t *h, const uint8_t *effect)
{
    for (uint32_t i = 0; i < m->n_add; i++) {
        const mp_header_op_t *op = &m->add[i];
        const char *v = op->value != NULL ? op->value : "";
        if (effect[i] == EFFECT_SET)
            mp_headers_set(h, op->name, v, strlen(v));
    }
    for (uint32_t i = 0; i < m->n_add; i++) {
        const mp_header_op_t *op = &m->add[i];
        const char *v = op->value != NULL ? op->value : "";
        if (effect[i] == EFFECT_ADD)
            mp_headers_add(h, op->name, strlen(op->name), v, strlen(v));
    }
}

void mp_header_mutation_apply(const mp_header_mutation_t *m, mp_headers_t *h)
{
    if (m == NULL)
        return;
    for (uint32_t i = 0; i < m->n_remove; i++)
        mp_headers_remove(h, m->remove[i]);
    if (m->n_add == 0)
        return;
    uint8_t small[32];
    uint8_t *effect = m->n_add <= sizeof(small) ? small : mp_xmalloc(m->n_add);
    for (uint32_t i = 0; i < m->n_add; i++)
        effect[i] = (uint8_t)decide(&m->add[i], h);
    apply_ops(m, h, effect);
    if (effect != small)
        free(effect);
}
