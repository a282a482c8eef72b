/* Private to the config module (proxy/config.c and the translators in xds/translate_*.c):
 * freeing the parts of a snapshot one at a time, so that a translator that fails half way can
 * drop what it built.  Each accepts NULL and a partly built object whose unset members are zero.
 * Main thread. */
#ifndef MAGPIE_CONFIG_INTERNAL_H
#define MAGPIE_CONFIG_INTERNAL_H

#include "magpie/config.h"

/* Frees c and everything it owns, and releases its host set. */
void mp_config__cluster_free(mp_cluster_t *c);

/* Frees h (route table, filter names, access logs) and h itself. */
void mp_config__hcm_free(mp_hcm_config_t *h);

/* Frees t (cluster names, access logs) and t itself. */
void mp_config__tcp_proxy_free(mp_tcp_proxy_config_t *t);

/* Frees the contents of an embedded listener (l itself is an array element). */
void mp_config__listener_clear(mp_listener_t *l);
/* Frees what one filter chain owns (not the struct) and zeroes it. */
void mp_config__chain_clear(mp_filter_chain_t *fc);

/* Closes the log's file (not stdout/stderr) and frees its path and format. */
void mp_config__access_log_clear(mp_access_log_t *log);

/* Frees an array of n upgrade configs (HCM or route level) and their strings. */
void mp_config__upgrades_free(mp_upgrade_config_t *u, uint32_t n);

#endif
