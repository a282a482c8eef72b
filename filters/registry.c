/* Every built-in HTTP filter, one line each. */
#include <string.h>

#include "magpie/filter.h"

extern const mp_http_filter_ops_t mp_filter_router_ops;
extern const mp_http_filter_ops_t mp_filter_rbac_ops;
extern const mp_http_filter_ops_t mp_filter_fault_ops;
extern const mp_http_filter_ops_t mp_filter_local_ratelimit_ops;

static const mp_http_filter_ops_t *const http_filters[] = {
    &mp_filter_router_ops,
    &mp_filter_rbac_ops,
    &mp_filter_fault_ops,
    &mp_filter_local_ratelimit_ops,
};

const mp_http_filter_ops_t *mp_http_filter_lookup(const char *name, const char *type_name)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(http_filters); i++) {
        const mp_http_filter_ops_t *ops = http_filters[i];
        if (name != NULL && strcmp(name, ops->name) == 0)
            return ops;
        if (type_name != NULL && strcmp(type_name, ops->type_name) == 0)
            return ops;
    }
    return NULL;
}
