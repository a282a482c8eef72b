/* Field helpers shared by the translators: durations, wrappers, addresses, data sources. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "translate_internal.h"

int mp_translate__duration_ms(const Google__Protobuf__Duration *d, uint64_t def, uint64_t *out,
                              mp_err_t *err)
{
    if (d == NULL) {
        *out = def;
        return 0;
    }
    if (d->seconds < 0 || d->nanos < 0)
        return mp_err_set(err, ": negative duration");
    *out = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
    return 0;
}

static int translate_socket_address(const Envoy__Config__Core__V3__SocketAddress *sa,
                                    mp_addr_t *out, mp_err_t *err)
{
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
        return mp_err_set(err, ".protocol: only TCP is supported");
    if (sa->port_specifier_case ==
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT)
        return mp_err_set(err, ".named_port: named ports are not supported yet");
    if (sa->port_value > 65535)
        return mp_err_set(err, ".port_value: %u is not a port", sa->port_value);
    if (sa->resolver_name != NULL && sa->resolver_name[0] != '\0')
        return mp_err_set(err, ".resolver_name: custom resolvers are not supported yet");
    /* Envoy wants a bare IP literal; "1.2.3.4:80" or "[::1]:80" would let mp_addr_parse take the
     * port from the string instead of port_value.  One colon means "host:port"; IPv6 has two. */
    const char *a = sa->address ? sa->address : "";
    const char *colon = strchr(a, ':');
    bool one_colon = colon != NULL && strchr(colon + 1, ':') == NULL;
    if (a[0] == '[' || one_colon || mp_addr_parse(out, a, (uint16_t)sa->port_value) != 0)
        return mp_err_set(err, ".address: \"%s\" is not an IP address",
                          sa->address ? sa->address : "");
    return 0;
}

int mp_translate__address(const mp_pb_address_t *a, mp_addr_t *out, mp_err_t *err)
{
    switch (a->address_case) {
    case ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS:
        if (translate_socket_address(a->socket_address, out, err) != 0)
            return mp_err_prefix(err, "socket_address");
        return 0;
    case ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE:
        return mp_err_set(err, "pipe: unix domain sockets are not supported yet");
    case ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_ENVOY_INTERNAL_ADDRESS:
        return mp_err_set(err, "envoy_internal_address: internal addresses are not supported");
    default:
        return mp_err_set(err, "socket_address: required");
    }
}

char *mp_translate__lower_dup(const char *s)
{
    char *p = mp_xstrdup(s ? s : "");
    for (char *q = p; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return p;
}

/* Reads at most cap bytes; one more than cap tells "too large" apart from "exactly cap". */
static char *read_file_capped(const char *path, size_t cap, uint32_t *len, mp_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mp_err_set(err, "filename: cannot open \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    char *buf = mp_xmalloc(cap + 2);
    size_t got = 0;
    ssize_t n;
    while (got <= cap && (n = read(fd, buf + got, cap + 1 - got)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            mp_err_set(err, "filename: cannot read \"%s\": %s", path, strerror(errno));
            goto out_free;
        }
        got += (size_t)n;
    }
    if (got > cap) {
        mp_err_set(err, "filename: \"%s\" is larger than %zu bytes", path, cap);
        goto out_free;
    }
    close(fd);
    buf[got] = '\0';
    *len = (uint32_t)got;
    return buf;
out_free:
    free(buf);
    close(fd);
    return NULL;
}

char *mp_translate__data_source(const mp_pb_data_source_t *ds, size_t cap, uint32_t *len,
                                mp_err_t *err)
{
    const char *p = NULL;
    size_t n = 0;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        return read_file_capped(ds->filename, cap, len, err);
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        p = ds->inline_string;
        n = strlen(p);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        p = (const char *)ds->inline_bytes.data;
        n = ds->inline_bytes.len;
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
        mp_err_set(err, "environment_variable: not supported yet");
        return NULL;
    default:
        n = 0;
        p = "";
        break;
    }
    if (n > cap) {
        mp_err_set(err, "%s: %zu bytes is more than the limit of %zu",
                   ds->specifier_case ==
                           ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES
                       ? "inline_bytes"
                       : "inline_string",
                   n, cap);
        return NULL;
    }
    *len = (uint32_t)n;
    return mp_xstrndup(p ? p : "", n);
}
