/* safe_regex on PCRE2 (8-bit).  Envoy uses RE2, whose matching time is linear; PCRE2 backtracks,
 * so every match runs under a match limit, a depth limit and a heap limit: a pattern such as
 * "(a+)+$" against a long run of 'a' followed by a non-match gives up after a bounded amount of
 * work and counts as "no match" instead of pinning a worker. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "magpie/log.h"
#include "magpie/regex.h"

/* Backtracking budget per match.  A legitimate route regex over a path of a few KiB needs far
 * fewer steps; with JIT one million steps cost a few milliseconds at worst. */
#define MP_REGEX_MATCH_LIMIT 1000000u
/* Nesting of backtracking frames (interpreter only; JIT is bounded by its stack instead). */
#define MP_REGEX_DEPTH_LIMIT 10000u
/* KiB of heap the interpreter may use for backtracking frames. */
#define MP_REGEX_HEAP_LIMIT 4096u

struct mp_regex {
    pcre2_code *code;
    pcre2_match_context *mctx;
    bool jit;
    char *pattern;
};

/* Match data is mutable, so each thread has its own.  Captures are never read: one ovector pair
 * is enough for any pattern (pcre2_match returns 0 instead of the count when it overflows). */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static _Thread_local pcre2_match_data *tls_md;

static void on_thread_exit(void *md)
{
    pcre2_match_data_free(md);
}

static void make_md_key(void)
{
    pthread_key_create(&md_key, on_thread_exit);
}

static pcre2_match_data *thread_match_data(void)
{
    if (tls_md != NULL)
        return tls_md;
    pthread_once(&md_once, make_md_key);
    tls_md = pcre2_match_data_create(1, NULL);
    if (tls_md == NULL)
        abort(); /* out of memory, as mp_xmalloc would */
    pthread_setspecific(md_key, tls_md);
    return tls_md;
}

static pcre2_match_context *make_match_context(void)
{
    pcre2_match_context *mctx = pcre2_match_context_create(NULL);
    if (mctx == NULL)
        abort();
    pcre2_set_match_limit(mctx, MP_REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(mctx, MP_REGEX_DEPTH_LIMIT);
    pcre2_set_heap_limit(mctx, MP_REGEX_HEAP_LIMIT);
    return mctx;
}

mp_regex_t *mp_regex_compile(const char *pattern, mp_err_t *err)
{
    /* ANCHORED + ENDANCHORED: the whole subject must match, as RE2::FullMatch does in Envoy.
     * Byte mode, not UTF: paths and header values are bytes (obs-text included) and must never
     * make a match fail with an encoding error; in UTF mode PCRE2 cannot match invalid
     * sequences at all.  The cost is that '.' is one byte, not one UTF-8 character as in RE2. */
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_NEVER_UTF;
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &code, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        mp_err_set(err, "invalid regex \"%s\": %s at offset %zu", pattern, (const char *)msg,
                   (size_t)off);
        return NULL;
    }
    mp_regex_t *r = mp_xcalloc(1, sizeof(*r));
    r->code = re;
    /* JIT is optional: without it (unsupported CPU, JIT memory refused) the interpreter runs
     * under the same limits. */
    r->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    r->mctx = make_match_context();
    r->pattern = mp_xstrdup(pattern);
    return r;
}

void mp_regex_free(mp_regex_t *re)
{
    if (re == NULL)
        return;
    pcre2_code_free(re->code);
    pcre2_match_context_free(re->mctx);
    free(re->pattern);
    free(re);
}

bool mp_regex_match(const mp_regex_t *re, const char *subject, size_t len)
{
    if (re == NULL)
        return false;
    if (subject == NULL)
        subject = "";
    pcre2_match_data *md = thread_match_data();
    /* Any negative result (no match, match/depth/heap limit, JIT stack limit) is "no match". */
    int rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, 0, 0, md, re->mctx);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
        mp_log_debug("regex \"%s\" gave up on a %zu-byte subject (pcre2 error %d)", re->pattern,
                     len, rc);
    return rc >= 0;
}

const char *mp_regex_pattern(const mp_regex_t *re)
{
    return re != NULL ? re->pattern : NULL;
}
