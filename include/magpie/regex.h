/* safe_regex: PCRE2 with JIT and a match limit so that a hostile pattern or subject cannot burn
 * a worker (hostile-inputs.md 86).  A compiled regex is immutable and may be used from any
 * thread (each call uses a per-thread match-data block). */
#ifndef MAGPIE_REGEX_H
#define MAGPIE_REGEX_H

#include <stdbool.h>
#include <stddef.h>

#include "magpie/common.h"

typedef struct mp_regex mp_regex_t;

/* Compiles pattern anchored at both ends (Envoy's safe_regex matches the whole string).
 * NULL with err set (the PCRE2 message and offset) when it does not compile. */
mp_regex_t *mp_regex_compile(const char *pattern, mp_err_t *err);
void mp_regex_free(mp_regex_t *re);
/* Whole-subject match.  A subject that hits the match limit does not match. */
bool mp_regex_match(const mp_regex_t *re, const char *subject, size_t len);
const char *mp_regex_pattern(const mp_regex_t *re);

#endif
