/* Envoy format strings compiled into a list of parts (include/magpie/access_log.h).
 *
 * A compiled format is an array of literal and command parts; rendering walks it once into a
 * string builder that lives on the stack for ordinary lines, so a worker allocates nothing per
 * request unless a line passes the inline size.  The line leaves with a single write(2), which
 * keeps lines whole when several workers append to one O_APPEND file. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "magpie/access_log.h"
#include "magpie/common.h"
#include "magpie/tls_ident.h"

const char mp_access_log_default_format[] =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

#define DEFAULT_TIME_FORMAT "%Y-%m-%dT%H:%M:%E3SZ"
#define MAX_TIME_FORMAT 128
#define SB_INLINE 2048

typedef enum part_kind {
    PART_LITERAL,
    PART_START_TIME,
    PART_REQ,
    PART_RESP,
    PART_PROTOCOL,
    PART_RESPONSE_CODE,
    PART_RESPONSE_FLAGS,
    PART_RESPONSE_CODE_DETAILS,
    PART_BYTES_RECEIVED,
    PART_BYTES_SENT,
    PART_DURATION,
    PART_UPSTREAM_HOST,
    PART_UPSTREAM_ATTEMPTS,
    PART_UPSTREAM_CLUSTER,
    PART_REMOTE_ADDRESS,
    PART_REMOTE_ADDRESS_NO_PORT,
    PART_LOCAL_ADDRESS,
    PART_LOCAL_ADDRESS_NO_PORT,
    PART_ROUTE_NAME,
    PART_HOSTNAME,
    PART_PEER_URI_SAN,
    PART_LOCAL_URI_SAN,
    PART_PEER_SUBJECT,
    PART_LOCAL_SUBJECT,
    PART_TLS_VERSION,
    PART_TLS_CIPHER,
    PART_PEER_FINGERPRINT_256,
    PART_PEER_SERIAL,
    PART_TLS_SESSION_ID,
    PART_UNAVAILABLE, /* a command Envoy knows whose fact magpie does not record: always "-" */
} part_kind_t;

typedef enum arg_rule {
    ARG_NONE,
    ARG_OPTIONAL,
    ARG_REQUIRED,
} arg_rule_t;

typedef struct command {
    const char *name;
    part_kind_t kind;
    arg_rule_t arg;
} command_t;

static const command_t commands[] = {
    {"START_TIME", PART_START_TIME, ARG_OPTIONAL},
    {"REQ", PART_REQ, ARG_REQUIRED},
    {"RESP", PART_RESP, ARG_REQUIRED},
    {"PROTOCOL", PART_PROTOCOL, ARG_NONE},
    {"RESPONSE_CODE", PART_RESPONSE_CODE, ARG_NONE},
    {"RESPONSE_FLAGS", PART_RESPONSE_FLAGS, ARG_NONE},
    {"RESPONSE_CODE_DETAILS", PART_RESPONSE_CODE_DETAILS, ARG_NONE},
    {"BYTES_RECEIVED", PART_BYTES_RECEIVED, ARG_NONE},
    {"BYTES_SENT", PART_BYTES_SENT, ARG_NONE},
    {"DURATION", PART_DURATION, ARG_NONE},
    {"UPSTREAM_HOST", PART_UPSTREAM_HOST, ARG_NONE},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", PART_UPSTREAM_ATTEMPTS, ARG_NONE},
    {"UPSTREAM_CLUSTER", PART_UPSTREAM_CLUSTER, ARG_NONE},
    {"DOWNSTREAM_REMOTE_ADDRESS", PART_REMOTE_ADDRESS, ARG_NONE},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", PART_REMOTE_ADDRESS_NO_PORT, ARG_NONE},
    /* Without PROXY protocol support the direct peer is the remote peer. */
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", PART_REMOTE_ADDRESS, ARG_NONE},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", PART_REMOTE_ADDRESS_NO_PORT, ARG_NONE},
    {"DOWNSTREAM_LOCAL_ADDRESS", PART_LOCAL_ADDRESS, ARG_NONE},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", PART_LOCAL_ADDRESS_NO_PORT, ARG_NONE},
    {"ROUTE_NAME", PART_ROUTE_NAME, ARG_NONE},
    {"HOSTNAME", PART_HOSTNAME, ARG_NONE},
    {"DOWNSTREAM_PEER_URI_SAN", PART_PEER_URI_SAN, ARG_NONE},
    {"DOWNSTREAM_LOCAL_URI_SAN", PART_LOCAL_URI_SAN, ARG_NONE},
    {"DOWNSTREAM_PEER_SUBJECT", PART_PEER_SUBJECT, ARG_NONE},
    {"DOWNSTREAM_LOCAL_SUBJECT", PART_LOCAL_SUBJECT, ARG_NONE},
    {"DOWNSTREAM_TLS_VERSION", PART_TLS_VERSION, ARG_NONE},
    {"DOWNSTREAM_TLS_CIPHER", PART_TLS_CIPHER, ARG_NONE},
    {"DOWNSTREAM_PEER_FINGERPRINT_256", PART_PEER_FINGERPRINT_256, ARG_NONE},
    {"DOWNSTREAM_PEER_SERIAL", PART_PEER_SERIAL, ARG_NONE},
    {"DOWNSTREAM_TLS_SESSION_ID", PART_TLS_SESSION_ID, ARG_NONE},
    {"REQUEST_DURATION", PART_UNAVAILABLE, ARG_NONE},
    {"RESPONSE_DURATION", PART_UNAVAILABLE, ARG_NONE},
    {"RESPONSE_TX_DURATION", PART_UNAVAILABLE, ARG_NONE},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", PART_UNAVAILABLE, ARG_NONE},
    {"UPSTREAM_LOCAL_ADDRESS", PART_UNAVAILABLE, ARG_NONE},
    {"REQUESTED_SERVER_NAME", PART_UNAVAILABLE, ARG_NONE},
    {"CONNECTION_TERMINATION_DETAILS", PART_UNAVAILABLE, ARG_NONE},
};

typedef struct part {
    part_kind_t kind;
    char *text;     /* literal, strftime format, or the lower-cased header name */
    size_t len;     /* of text */
    char *alt;      /* REQ/RESP fallback header after '?', lower-cased; or NULL */
    size_t max_len; /* ":N" suffix; 0 = unlimited */
} part_t;

struct mp_access_log_format {
    part_t *parts;
    uint32_t n;
};

/* ---- string builder ---- */

typedef struct sb {
    char *p;
    size_t len, cap;
    char inline_buf[SB_INLINE];
} sb_t;

static void sb_init(sb_t *sb)
{
    sb->p = sb->inline_buf;
    sb->len = 0;
    sb->cap = sizeof(sb->inline_buf);
}

static void sb_free(sb_t *sb)
{
    if (sb->p != sb->inline_buf)
        free(sb->p);
}

static void sb_add(sb_t *sb, const char *s, size_t n)
{
    if (sb->len + n > sb->cap) {
        size_t cap = MP_MAX(sb->cap * 2, sb->len + n);
        if (sb->p == sb->inline_buf) {
            sb->p = mp_xmalloc(cap);
            memcpy(sb->p, sb->inline_buf, sb->len);
        } else {
            sb->p = mp_xrealloc(sb->p, cap);
        }
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
}

/* ---- compiling ---- */

static void add_part(mp_access_log_format_t *f, part_t p)
{
    f->parts = mp_xrealloc(f->parts, (f->n + 1) * sizeof(*f->parts));
    f->parts[f->n++] = p;
}

static void add_literal(mp_access_log_format_t *f, const char *s, size_t n)
{
    /* Adjacent literals ("%%" splits one) are merged so rendering stays one copy per run. */
    if (f->n > 0 && f->parts[f->n - 1].kind == PART_LITERAL) {
        part_t *last = &f->parts[f->n - 1];
        last->text = mp_xrealloc(last->text, last->len + n + 1);
        memcpy(last->text + last->len, s, n);
        last->len += n;
        last->text[last->len] = '\0';
        return;
    }
    add_part(f, (part_t){.kind = PART_LITERAL, .text = mp_xstrndup(s, n), .len = n});
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = mp_xstrndup(s, n);
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)d[i]);
    return d;
}

static const command_t *find_command(const char *name, size_t n)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(commands); i++) {
        if (strlen(commands[i].name) == n && memcmp(commands[i].name, name, n) == 0)
            return &commands[i];
    }
    return NULL;
}

/* Fills p's text/alt from the "(...)" argument of cmd. */
static int set_argument(part_t *p, const command_t *cmd, const char *arg, size_t n, mp_err_t *err)
{
    if (p->kind == PART_START_TIME) {
        if (n >= MAX_TIME_FORMAT)
            return mp_err_set(err, "START_TIME format longer than %d bytes", MAX_TIME_FORMAT);
        p->text = n ? mp_xstrndup(arg, n) : mp_xstrdup(DEFAULT_TIME_FORMAT);
        p->len = strlen(p->text);
        return 0;
    }
    /* REQ and RESP: "X" or "X?Y". */
    const char *q = memchr(arg, '?', n);
    size_t first = q ? (size_t)(q - arg) : n;
    if (first == 0 || (q && q + 1 == arg + n))
        return mp_err_set(err, "%s() needs a header name", cmd->name);
    p->text = lower_dup(arg, first);
    p->len = first;
    if (q)
        p->alt = lower_dup(q + 1, n - first - 1);
    return 0;
}

/* Parses one "%COMMAND(arg):N%" at s (s[0] == '%'); sets *end past the closing '%'. */
static int parse_command(mp_access_log_format_t *f, const char *s, const char **end, mp_err_t *err)
{
    const char *p = s + 1, *name = p;
    while (isupper((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_')
        p++;
    const command_t *cmd = find_command(name, (size_t)(p - name));
    if (cmd == NULL)
        return mp_err_set(err, "unknown access log command \"%.*s\" at offset %zu", (int)(p - name),
                          name, (size_t)(s - name) + 1);
    part_t part = {.kind = cmd->kind};
    const char *arg = NULL;
    size_t arg_len = 0;
    if (*p == '(') {
        arg = ++p;
        while (*p && *p != ')')
            p++;
        if (*p != ')')
            return mp_err_set(err, "%s: missing ')'", cmd->name);
        arg_len = (size_t)(p++ - arg);
    }
    if (arg && cmd->arg == ARG_NONE)
        return mp_err_set(err, "%s takes no argument", cmd->name);
    if (!arg && cmd->arg == ARG_REQUIRED)
        return mp_err_set(err, "%s needs an argument", cmd->name);
    if (*p == ':') {
        char *num_end;
        if (!isdigit((unsigned char)p[1]))
            return mp_err_set(err, "%s: bad length after ':'", cmd->name);
        part.max_len = strtoul(p + 1, &num_end, 10);
        p = num_end;
    }
    if (*p != '%')
        return mp_err_set(err, "%s: missing closing '%%'", cmd->name);
    if ((arg || cmd->kind == PART_START_TIME) &&
        set_argument(&part, cmd, arg ? arg : "", arg_len, err))
        return MP_ERROR;
    if (cmd->kind == PART_HOSTNAME) {
        char host[256] = "-";
        gethostname(host, sizeof(host) - 1);
        part.text = mp_xstrdup(host);
        part.len = strlen(host);
    }
    add_part(f, part);
    *end = p + 1;
    return 0;
}

mp_access_log_format_t *mp_access_log_format_compile(const char *fmt, mp_err_t *err)
{
    mp_access_log_format_t *f = mp_xcalloc(1, sizeof(*f));
    const char *s = fmt;
    while (*s) {
        if (*s != '%') {
            size_t n = strcspn(s, "%");
            add_literal(f, s, n);
            s += n;
        } else if (s[1] == '%') {
            add_literal(f, "%", 1);
            s += 2;
        } else if (parse_command(f, s, &s, err) != 0) {
            goto fail_free;
        }
    }
    return f;

fail_free:
    mp_access_log_format_free(f);
    return NULL;
}

void mp_access_log_format_free(mp_access_log_format_t *f)
{
    if (f == NULL)
        return;
    for (uint32_t i = 0; i < f->n; i++) {
        free(f->parts[i].text);
        free(f->parts[i].alt);
    }
    free(f->parts);
    free(f);
}

/* ---- rendering ---- */

/* Expands magpie's extra time specifiers (%E<n>S: seconds with n fraction digits; %f and %<n>f:
 * fraction digits, 9 by default as Envoy) into literal digits, then lets strftime do the rest
 * on the UTC time. */
static size_t format_time(const char *fmt, struct timeval tv, char *out, size_t cap)
{
    char ex[MAX_TIME_FORMAT * 4];
    size_t n = 0;
    uint64_t frac9 = (uint64_t)tv.tv_usec * 1000u;
    for (const char *p = fmt; *p && n + 16 < sizeof(ex); p++) {
        int digits = -1;
        const char *q = p + 1;
        if (p[0] == '%' && p[1] == 'E' && isdigit((unsigned char)p[2]) && p[3] == 'S') {
            digits = p[2] - '0';
            memcpy(ex + n, "%S.", 3);
            n += digits ? 3 : 2;
            q = p + 3;
        } else if (p[0] == '%' && isdigit((unsigned char)p[1]) && p[2] == 'f') {
            digits = p[1] - '0';
            q = p + 2;
        } else if (p[0] == '%' && p[1] == 'f') {
            digits = 9;
            q = p + 1;
        } else if (p[0] == '%' && p[1] != '\0') {
            ex[n++] = *p++; /* copy the specifier whole so "%%f" stays a literal "%f" */
            ex[n++] = *p;
            continue;
        }
        if (digits < 0) {
            ex[n++] = *p;
            continue;
        }
        uint64_t div = 1;
        for (int i = digits; i < 9; i++)
            div *= 10;
        if (digits > 0)
            n += (size_t)snprintf(ex + n, sizeof(ex) - n, "%0*" PRIu64, digits, frac9 / div);
        p = q;
    }
    ex[n] = '\0';
    struct tm tm;
    time_t secs = tv.tv_sec;
    gmtime_r(&secs, &tm);
    return strftime(out, cap, ex, &tm);
}

static const char *request_header(const mp_http_msg_t *m, const char *name)
{
    if (m == NULL)
        return NULL;
    if (name[0] == ':' || strcmp(name, "host") == 0) {
        if (strcmp(name, ":path") == 0)
            return m->path;
        if (strcmp(name, ":method") == 0)
            return m->method;
        if (strcmp(name, ":scheme") == 0)
            return m->scheme;
        if ((strcmp(name, ":authority") == 0 || strcmp(name, "host") == 0) && m->authority)
            return m->authority;
    }
    mp_header_t *h = mp_headers_get(&m->headers, name);
    return h ? h->value : NULL;
}

static const char *response_header(const mp_http_msg_t *m, const char *name, char *scratch,
                                   size_t cap)
{
    if (m == NULL)
        return NULL;
    if (strcmp(name, ":status") == 0) {
        snprintf(scratch, cap, "%d", m->status);
        return scratch;
    }
    mp_header_t *h = mp_headers_get(&m->headers, name);
    return h ? h->value : NULL;
}

static const char *header_part(const part_t *p, const mp_stream_info_t *info, char *scratch,
                               size_t cap)
{
    if (p->kind == PART_REQ) {
        const char *v = request_header(info->request, p->text);
        return v || !p->alt ? v : request_header(info->request, p->alt);
    }
    const char *v = response_header(info->response, p->text, scratch, cap);
    return v || !p->alt ? v : response_header(info->response, p->alt, scratch, cap);
}

static const char *protocol_name(mp_http_version_t v)
{
    switch (v) {
    case MP_HTTP_10:
        return "HTTP/1.0";
    case MP_HTTP_11:
        return "HTTP/1.1";
    case MP_HTTP_2:
        return "HTTP/2";
    }
    return NULL;
}

/* "1.2.3.4:80" -> "1.2.3.4"; "[::1]:80" -> "::1" (Envoy prints v6 without brackets here). */
static const char *strip_port(const char *addr, char *scratch, size_t cap)
{
    if (addr == NULL)
        return NULL;
    const char *colon = strrchr(addr, ':');
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL)
            return addr;
        snprintf(scratch, cap, "%.*s", (int)(close - addr - 1), addr + 1);
        return scratch;
    }
    if (colon == NULL || strchr(addr, ':') != colon)
        return addr; /* no port, or a bare v6 literal */
    snprintf(scratch, cap, "%.*s", (int)(colon - addr), addr);
    return scratch;
}

static const char *number(uint64_t v, char *scratch, size_t cap)
{
    snprintf(scratch, cap, "%" PRIu64, v);
    return scratch;
}

/* The downstream TLS facts, loaded on the connection's first log line that asks (once per
 * connection); NULL for plain connections, so every TLS command prints "-" there. */
static const char *tls_value(part_kind_t kind, const mp_stream_info_t *info)
{
    const mp_tls_ident_t *id = mp_tls_ident_get(info->downstream_tls);
    if (id == NULL)
        return NULL;
    switch (kind) {
    case PART_PEER_URI_SAN:
        return id->peer_uri_joined;
    case PART_LOCAL_URI_SAN:
        return id->local_uri_joined;
    case PART_PEER_SUBJECT:
        return id->peer_subject;
    case PART_LOCAL_SUBJECT:
        return id->local_subject;
    case PART_TLS_VERSION:
        return id->version;
    case PART_TLS_CIPHER:
        return id->cipher;
    case PART_PEER_FINGERPRINT_256:
        return id->peer_sha256[0] ? id->peer_sha256 : NULL;
    case PART_PEER_SERIAL:
        return id->peer_serial;
    case PART_TLS_SESSION_ID:
        return id->session_id;
    default:
        return NULL;
    }
}

/* Value of a command part, or NULL when the fact is missing (rendered "-"). */
static const char *part_value(const part_t *p, const mp_stream_info_t *info, char *scratch,
                              size_t cap)
{
    switch (p->kind) {
    case PART_START_TIME:
        return format_time(p->text, info->start_time, scratch, cap) ? scratch : "";
    case PART_REQ:
    case PART_RESP:
        return header_part(p, info, scratch, cap);
    case PART_PROTOCOL:
        return protocol_name(info->protocol);
    case PART_RESPONSE_CODE:
        return number((uint64_t)(info->response_code > 0 ? info->response_code : 0), scratch, cap);
    case PART_RESPONSE_FLAGS:
        mp_response_flags_format(info->response_flags, scratch, cap);
        return scratch;
    case PART_RESPONSE_CODE_DETAILS:
        return info->response_code_details;
    case PART_BYTES_RECEIVED:
        return number(info->bytes_received, scratch, cap);
    case PART_BYTES_SENT:
        return number(info->bytes_sent, scratch, cap);
    case PART_DURATION:
        return info->end_ns >= info->start_ns && info->end_ns != 0
                   ? number((info->end_ns - info->start_ns) / 1000000u, scratch, cap)
                   : NULL;
    case PART_UPSTREAM_HOST:
        return info->upstream_host;
    case PART_UPSTREAM_ATTEMPTS:
        return number(info->attempt_count, scratch, cap);
    case PART_UPSTREAM_CLUSTER:
        return info->upstream_cluster;
    case PART_REMOTE_ADDRESS:
        return info->downstream_remote_address;
    case PART_REMOTE_ADDRESS_NO_PORT:
        return strip_port(info->downstream_remote_address, scratch, cap);
    case PART_LOCAL_ADDRESS:
        return info->downstream_local_address;
    case PART_LOCAL_ADDRESS_NO_PORT:
        return strip_port(info->downstream_local_address, scratch, cap);
    case PART_ROUTE_NAME:
        return info->route_name;
    case PART_HOSTNAME:
        return p->text;
    case PART_PEER_URI_SAN:
    case PART_LOCAL_URI_SAN:
    case PART_PEER_SUBJECT:
    case PART_LOCAL_SUBJECT:
    case PART_TLS_VERSION:
    case PART_TLS_CIPHER:
    case PART_PEER_FINGERPRINT_256:
    case PART_PEER_SERIAL:
    case PART_TLS_SESSION_ID:
        return tls_value(p->kind, info);
    case PART_LITERAL:
    case PART_UNAVAILABLE:
        break;
    }
    return NULL;
}

static void render_to(const mp_access_log_format_t *f, const mp_stream_info_t *info, sb_t *sb)
{
    char scratch[256];
    for (uint32_t i = 0; i < f->n; i++) {
        const part_t *p = &f->parts[i];
        if (p->kind == PART_LITERAL) {
            sb_add(sb, p->text, p->len);
            continue;
        }
        const char *v = part_value(p, info, scratch, sizeof(scratch));
        if (v == NULL) {
            sb_add(sb, "-", 1);
            continue;
        }
        size_t n = strlen(v);
        if (p->max_len && n > p->max_len)
            n = p->max_len;
        sb_add(sb, v, n);
    }
}

void mp_access_log_format_render(const mp_access_log_format_t *f, const mp_stream_info_t *info,
                                 mp_buf_t *out)
{
    sb_t sb;
    sb_init(&sb);
    render_to(f, info, &sb);
    mp_buf_append(out, sb.p, sb.len);
    sb_free(&sb);
}

static int sink_fd(const mp_access_log_t *log)
{
    if (log->fd >= 0)
        return log->fd;
    if (log->sink == MP_ALOG_STDOUT)
        return STDOUT_FILENO;
    if (log->sink == MP_ALOG_STDERR)
        return STDERR_FILENO;
    return -1;
}

void mp_access_log_write(const mp_access_log_t *log, const mp_stream_info_t *info)
{
    int fd = sink_fd(log);
    if (fd < 0 || log->format == NULL)
        return;
    sb_t sb;
    sb_init(&sb);
    render_to(log->format, info, &sb);
    /* One write keeps the line whole among workers; a short write (disk full, a pipe) loses the
     * rest rather than blocking the worker. */
    ssize_t w;
    do {
        w = write(fd, sb.p, sb.len);
    } while (w < 0 && errno == EINTR);
    sb_free(&sb);
}
