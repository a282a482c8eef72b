/* Shared between proxy/outlier.c (reports, decisions, event log) and proxy/outlier_sweep.c (the
 * interval sweep, start and stop).  Main thread unless noted. */
#ifndef MAGPIE_OUTLIER_INTERNAL_H
#define MAGPIE_OUTLIER_INTERNAL_H

#include "magpie/outlier.h"

bool mp_outlier__is_ejected(const mp_host_t *h); /* any thread */
void mp_outlier__detected(mp_outlier_t *od, mp_outlier_type_t type);
/* Ejects h (of hs) for type if max_ejection_percent and the enforcing draw allow.  host_rate,
 * average and threshold go to the event log of a success-rate (or, host_rate alone, a
 * failure-percentage) ejection; -1 when not one. */
void mp_outlier__eject(mp_outlier_t *od, const mp_hostset_t *hs, const mp_host_t *h,
                       mp_outlier_type_t type, double host_rate, double average, double threshold);
void mp_outlier__check_uneject(mp_outlier_t *od, const mp_host_t *h, uint64_t now);
void mp_outlier__set_active_gauge(mp_outlier_t *od, const mp_hostset_t *hs);
void mp_outlier__on_wake(struct ev_loop *loop, ev_async *w, int revents);
int mp_outlier__event_fd(void);
void mp_outlier__set_event_fd(int fd);

#endif
