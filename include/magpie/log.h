/* Logging to stderr, with a level settable at start (--log-level) and from the admin /logging
 * endpoint.  Any thread; each line is written with one write(2) so lines never interleave. */
#ifndef MAGPIE_LOG_H
#define MAGPIE_LOG_H

#include <stdarg.h>

typedef enum mp_log_level {
    MP_LOG_TRACE,
    MP_LOG_DEBUG,
    MP_LOG_INFO,
    MP_LOG_WARN,
    MP_LOG_ERROR,
    MP_LOG_CRITICAL,
    MP_LOG_OFF,
} mp_log_level_t;

extern mp_log_level_t mp_log_current_level;

/* Parses "trace", "debug", "info", "warning"/"warn", "error", "critical", "off".
 * Returns 0 and sets *out, or MP_ERROR for an unknown name. */
int mp_log_level_parse(const char *name, mp_log_level_t *out);
const char *mp_log_level_name(mp_log_level_t level);
void mp_log_set_level(mp_log_level_t level);

void mp_log(mp_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mp_vlog(mp_log_level_t level, const char *fmt, va_list ap);

#define mp_log_enabled(lvl) ((lvl) >= mp_log_current_level)
#define MP_LOG(lvl, ...)                                                                           \
    do {                                                                                           \
        if (mp_log_enabled(lvl))                                                                   \
            mp_log(lvl, __VA_ARGS__);                                                              \
    } while (0)
#define mp_log_trace(...) MP_LOG(MP_LOG_TRACE, __VA_ARGS__)
#define mp_log_debug(...) MP_LOG(MP_LOG_DEBUG, __VA_ARGS__)
#define mp_log_info(...) MP_LOG(MP_LOG_INFO, __VA_ARGS__)
#define mp_log_warn(...) MP_LOG(MP_LOG_WARN, __VA_ARGS__)
#define mp_log_error(...) MP_LOG(MP_LOG_ERROR, __VA_ARGS__)

#endif
