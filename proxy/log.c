#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "magpie/common.h"
#include "magpie/log.h"

mp_log_level_t mp_log_current_level = MP_LOG_INFO;

static const char *const level_names[] = {"trace", "debug",    "info", "warning",
                                          "error", "critical", "off"};

int mp_log_level_parse(const char *name, mp_log_level_t *out)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(level_names); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (mp_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warn") == 0) {
        *out = MP_LOG_WARN;
        return 0;
    }
    return MP_ERROR;
}

const char *mp_log_level_name(mp_log_level_t level)
{
    return level <= MP_LOG_OFF ? level_names[level] : "?";
}

void mp_log_set_level(mp_log_level_t level)
{
    mp_log_current_level = level;
}

void mp_vlog(mp_log_level_t level, const char *fmt, va_list ap)
{
    if (!mp_log_enabled(level) || level >= MP_LOG_OFF)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "[%04d-%02d-%02d %02d:%02d:%02d.%03ld][%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : MP_MIN((size_t)m, sizeof(line) - (size_t)n - 2));
    line[len++] = '\n';
    /* One write per line so that lines from different threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    MP_UNUSED(w);
}

void mp_log(mp_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mp_vlog(level, fmt, ap);
    va_end(ap);
}
