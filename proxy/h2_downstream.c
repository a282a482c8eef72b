/* placeholder */
#include "http_internal.h"
#include <unistd.h>
void mp_h2_accept(mp_worker_t *w, const mp_listener_t *l, int fd)
{
    close(fd);
}
void mp_h2_takeover(mp_hconn_t *from, mp_buf_t *in, mp_http_msg_t *upgrade_req,
                    const char *settings)
{
    close(from->fd);
    mp_http_msg_free(upgrade_req);
}
