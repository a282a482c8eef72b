/* Private to the HTTP/1 codec files (h1_parse.c, h1_check.c): the field and target checks that
 * llhttp 8.1 in strict mode does not make itself. */
#ifndef MAGPIE_H1_INTERNAL_H
#define MAGPIE_H1_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "magpie/http.h"

/* True when s is a non-empty RFC 9110 token (a valid field name). */
bool mp_h1__token_ok(const char *s, size_t len);

/* Transfer-Encoding seen so far in one message; the fields are folded in, in order. */
typedef struct mp_h1_te {
    bool seen;
    bool chunked_last; /* the last coding seen is "chunked" */
    bool bad;          /* a shape that is a smuggling attempt: empty element, chunked not final */
    bool unknown;      /* a coding we do not know */
    bool other;        /* a known coding other than chunked (gzip...), which we do not decode */
} mp_h1_te_t;

/* Folds one Transfer-Encoding field value into te. */
void mp_h1__te_add(mp_h1_te_t *te, const char *v, size_t len);

/* Verdict on a request's Transfer-Encoding: 0 when absent or exactly a final "chunked", else the
 * status to answer (400 smuggling shape, 501 coding we do not implement). */
int mp_h1__te_request_status(const mp_h1_te_t *te);

/* Splits a request target into msg->path / authority / scheme.  Returns 0 or sets *reason and
 * returns MP_ERROR.  is_connect: the target is authority-form; is_options: "*" is allowed. */
int mp_h1__target_split(mp_http_msg_t *msg, const char *t, size_t len, bool is_connect,
                        bool is_options, const char **reason);

/* True when v is an acceptable Host / authority value (reg-name or IP literal, optional port, no
 * userinfo, no whitespace). */
bool mp_h1__authority_ok(const char *v, size_t len);

/* True for fields that must not arrive in trailers (RFC 9110 §6.5.1): framing, routing,
 * authentication and hop-by-hop fields, and underscore spellings of the framing ones.  The name
 * is compared case-insensitively. */
bool mp_h1__trailer_forbidden(const char *name, size_t len);

#endif
