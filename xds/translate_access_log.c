/* envoy.config.accesslog.v3.AccessLog (file, stdout and stderr loggers) -> mp_access_log_t.
 * The file is opened here, on the main thread, so that a bad path fails the config rather than
 * the first request; workers only write(2) to the fd. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "translate_internal.h"

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"

#include "../proxy/config_internal.h"
#include "magpie/access_log.h"
#include "magpie/json_pb.h"

#define FORMAT_SOURCE_MAX (64 * 1024)

typedef Envoy__Config__Accesslog__V3__AccessLog pb_access_log_t;
typedef Envoy__Config__Core__V3__SubstitutionFormatString pb_format_t;
typedef Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog pb_file_log_t;
typedef Envoy__Extensions__AccessLoggers__Stream__V3__StdoutAccessLog pb_stdout_log_t;

/* Compiles text, or the default format when text is NULL. */
static int compile_format(const char *text, mp_access_log_t *log, mp_err_t *err)
{
    log->format = mp_access_log_format_compile(text ? text : mp_access_log_default_format, err);
    return log->format != NULL ? 0 : mp_err_prefix(err, ": ");
}

static int translate_format_string(const pb_format_t *f, mp_access_log_t *log, mp_err_t *err)
{
    if (f->n_formatters > 0)
        return mp_err_set(err, "formatters: format extensions are not supported");
    switch (f->format_case) {
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT:
        return compile_format(f->text_format, log, err) != 0 ? mp_err_prefix(err, "text_format")
                                                             : 0;
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE: {
        uint32_t len;
        char *text = mp_translate__data_source(f->text_format_source, FORMAT_SOURCE_MAX, &len, err);
        if (text == NULL)
            return mp_err_prefix(err, "text_format_source.");
        int rc = compile_format(text, log, err);
        free(text);
        return rc != 0 ? mp_err_prefix(err, "text_format_source") : 0;
    }
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT:
        return mp_err_set(err, "json_format: JSON access logs are not supported yet");
    default:
        return compile_format(NULL, log, err);
    }
}

static int open_log_file(const char *path, mp_access_log_t *log, mp_err_t *err)
{
    if (path == NULL || path[0] == '\0')
        return mp_err_set(err, "path: required");
    log->sink = MP_ALOG_FILE;
    log->path = mp_xstrdup(path);
    log->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log->fd < 0)
        return mp_err_set(err, "path: cannot open \"%s\": %s", path, strerror(errno));
    return 0;
}

static int translate_file_log(const pb_file_log_t *pb, mp_access_log_t *log, mp_err_t *err)
{
    if (open_log_file(pb->path, log, err) != 0)
        return MP_ERROR;
    switch (pb->access_log_format_case) {
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_FORMAT:
        return compile_format(pb->format, log, err) != 0 ? mp_err_prefix(err, "format") : 0;
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT:
        return translate_format_string(pb->log_format, log, err) != 0
                   ? mp_err_prefix(err, "log_format.")
                   : 0;
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_JSON_FORMAT:
    case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_TYPED_JSON_FORMAT:
        return mp_err_set(err, "json_format: JSON access logs are not supported yet");
    default:
        return compile_format(NULL, log, err);
    }
}

/* Stdout and stderr loggers share one layout: a single optional log_format. */
static int translate_stream_log(const pb_stdout_log_t *pb, mp_access_log_sink_t sink,
                                mp_access_log_t *log, mp_err_t *err)
{
    log->sink = sink;
    log->fd = sink == MP_ALOG_STDOUT ? STDOUT_FILENO : STDERR_FILENO;
    if (pb->log_format == NULL)
        return compile_format(NULL, log, err);
    return translate_format_string(pb->log_format, log, err) != 0
               ? mp_err_prefix(err, "log_format.")
               : 0;
}

/* The logger kind comes from the type inside typed_config (as in Envoy, the type URL decides,
 * not the name); mp_pb_any_unpack also unwraps a TypedStruct. */
static int translate_logger(const ProtobufCMessage *m, mp_access_log_t *log, mp_err_t *err)
{
    if (m->descriptor == &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor)
        return translate_file_log((const pb_file_log_t *)m, log, err);
    if (m->descriptor ==
        &envoy__extensions__access_loggers__stream__v3__stdout_access_log__descriptor)
        return translate_stream_log((const pb_stdout_log_t *)m, MP_ALOG_STDOUT, log, err);
    if (m->descriptor ==
        &envoy__extensions__access_loggers__stream__v3__stderr_access_log__descriptor)
        return translate_stream_log((const pb_stdout_log_t *)m, MP_ALOG_STDERR, log, err);
    return mp_err_set(err, ": %s is not a supported access logger (file, stdout, stderr)",
                      m->descriptor->name);
}

static int translate_access_log(const pb_access_log_t *pb, mp_access_log_t *log, mp_err_t *err)
{
    if (pb->filter != NULL)
        return mp_err_set(err, "filter: access log filters are not supported yet");
    if (pb->typed_config == NULL)
        return mp_err_set(err, "typed_config: required");
    ProtobufCMessage *m = mp_pb_any_unpack(&pb->typed_config->base, NULL, err);
    if (m == NULL)
        return mp_err_prefix(err, "typed_config: ");
    int rc = translate_logger(m, log, err);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc != 0 ? mp_err_prefix(err, "typed_config.") : 0;
}

int mp_translate__access_logs(pb_access_log_t *const *pb, size_t n, mp_access_log_t **out,
                              uint32_t *n_out, mp_err_t *err)
{
    *out = mp_xcalloc(n, sizeof(**out));
    *n_out = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        (*out)[i].fd = -1;
    for (size_t i = 0; i < n; i++)
        if (translate_access_log(pb[i], &(*out)[i], err) != 0)
            return mp_err_prefix(err, "access_log[%zu].", i);
    return 0;
}
