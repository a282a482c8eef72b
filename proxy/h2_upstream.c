/* placeholder */
#include "http_internal.h"
void mp_h2_upstream_attach(mp_stream_t *s, mp_pool_t *pool, const mp_host_t *host)
{
    mp_stream_on_upstream_failure(s, MP_RF_UPSTREAM_CONNECT_FAIL, "h2");
}
void mp_h2_pool_release(mp_pool_t *pool)
{
}
