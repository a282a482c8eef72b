/* Protocol options shared by listeners and clusters: envoy.config.core.v3.Http2ProtocolOptions
 * -> mp_h2_options_t with Envoy's range checks, and upgrade type names. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "translate_internal.h"

#include "magpie/log.h"

#define H2_MAX_31 2147483647u
#define H2_MIN_WINDOW 65535u /* RFC 9113 §6.9.2: the initial window a peer must allow */

typedef Envoy__Config__Core__V3__Http2ProtocolOptions pb_h2_t;

/* One UInt32Value with its default and inclusive range, written to out. */
typedef struct h2_u32_field {
    size_t pb_off, out_off;
    uint32_t min, max;
    const char *name;
} h2_u32_field_t;

#define F(f, lo, hi)                                                                               \
    {                                                                                              \
        offsetof(pb_h2_t, f), offsetof(mp_h2_options_t, f), lo, hi, #f                             \
    }
static const h2_u32_field_t h2_u32_fields[] = {
    F(max_concurrent_streams, 1, H2_MAX_31),
    F(initial_stream_window_size, H2_MIN_WINDOW, H2_MAX_31),
    F(initial_connection_window_size, H2_MIN_WINDOW, H2_MAX_31),
    F(hpack_table_size, 0, UINT32_MAX),
    F(max_outbound_frames, 1, UINT32_MAX),
    F(max_outbound_control_frames, 1, UINT32_MAX),
    F(max_consecutive_inbound_frames_with_empty_payload, 0, UINT32_MAX),
    F(max_inbound_priority_frames_per_stream, 0, UINT32_MAX),
    F(max_inbound_window_update_frames_per_data_frame_sent, 1, UINT32_MAX),
};
#undef F

static int read_u32_fields(const pb_h2_t *pb, mp_h2_options_t *out, mp_err_t *err)
{
    for (size_t i = 0; i < MP_ARRAY_SIZE(h2_u32_fields); i++) {
        const h2_u32_field_t *f = &h2_u32_fields[i];
        const Google__Protobuf__UInt32Value *w =
            *(Google__Protobuf__UInt32Value *const *)((const char *)pb + f->pb_off);
        if (w == NULL)
            continue; /* keeps the default */
        if (w->value < f->min || w->value > f->max) {
            if (f->max == UINT32_MAX)
                return mp_err_set(err, "%s: must be at least %u", f->name, f->min);
            return mp_err_set(err, "%s: must be between %u and %u", f->name, f->min, f->max);
        }
        *(uint32_t *)((char *)out + f->out_off) = w->value;
    }
    return 0;
}

/* What magpie's HTTP/2 codec has no use for is refused when it would change behaviour. */
static int check_h2_unsupported(const pb_h2_t *pb, mp_err_t *err)
{
    if (pb->allow_metadata)
        return mp_err_set(err, "allow_metadata: METADATA frames are not supported");
    if (pb->n_custom_settings_parameters > 0)
        return mp_err_set(err, "custom_settings_parameters: not supported");
    /* Keepalive PINGs only detect a dead peer sooner; without them the idle timeouts still do. */
    if (pb->connection_keepalive != NULL)
        mp_log_warn("http2_protocol_options.connection_keepalive is not implemented; ignored");
    return 0;
}

int mp_translate__h2_options(const Envoy__Config__Core__V3__Http2ProtocolOptions *pb,
                             const Google__Protobuf__BoolValue *hcm_stream_error,
                             mp_h2_options_t *out, mp_err_t *err)
{
    mp_h2_options_default(out);
    if (pb == NULL) {
        out->override_stream_error_on_invalid_http_message =
            mp_translate__bool(hcm_stream_error, false);
        return 0;
    }
    if (check_h2_unsupported(pb, err) != 0 || read_u32_fields(pb, out, err) != 0)
        return MP_ERROR;
    out->allow_connect = pb->allow_connect;
    /* Envoy's precedence: the override, then the HCM's setting, then the deprecated field. */
    bool fallback =
        mp_translate__bool(hcm_stream_error, pb->stream_error_on_invalid_http_messaging);
    out->override_stream_error_on_invalid_http_message =
        mp_translate__bool(pb->override_stream_error_on_invalid_http_message, fallback);
    return 0;
}

int mp_translate__upgrade_type(const char *type, const mp_upgrade_config_t *prev, uint32_t n_prev,
                               char **out, mp_err_t *err)
{
    if (type == NULL || type[0] == '\0')
        return mp_err_set(err, "upgrade_type: required");
    char *lower = mp_translate__lower_dup(type);
    for (uint32_t i = 0; i < n_prev; i++) {
        if (strcmp(prev[i].upgrade_type, lower) == 0) {
            mp_err_set(err, "upgrade_type: duplicate upgrade type \"%s\"", type);
            free(lower);
            return MP_ERROR;
        }
    }
    *out = lower;
    return 0;
}
