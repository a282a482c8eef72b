/* proxy/regex.c: whole-string matching, compile errors, and the backtracking limit. */
#include <pthread.h>
#include <string.h>

#include "magpie/common.h"
#include "magpie/regex.h"
#include "unit.h"

static bool m(const mp_regex_t *re, const char *s)
{
    return mp_regex_match(re, s, strlen(s));
}

static void test_whole_string(void)
{
    mp_err_t err;
    mp_regex_t *re = mp_regex_compile("/api/v[0-9]+", &err);
    CHECK(re != NULL);
    CHECK(m(re, "/api/v1"));
    CHECK(m(re, "/api/v12"));
    CHECK(!m(re, "/api/v1/x")); /* not a search: the end is anchored */
    CHECK(!m(re, "x/api/v1"));  /* nor the start */
    CHECK(!m(re, "/api/v"));
    CHECK_STR(mp_regex_pattern(re), "/api/v[0-9]+");
    mp_regex_free(re);
}

static void test_alternation_is_anchored_as_a_whole(void)
{
    /* "a|ab" must match "ab" as a whole string, like RE2::FullMatch, not stop after "a". */
    mp_regex_t *re = mp_regex_compile("a|ab", NULL);
    CHECK(m(re, "a"));
    CHECK(m(re, "ab"));
    CHECK(!m(re, "abc"));
    mp_regex_free(re);
}

static void test_length_counted_subject(void)
{
    mp_regex_t *re = mp_regex_compile("/a", NULL);
    CHECK(mp_regex_match(re, "/a?x=1", 2)); /* only the first len bytes are the subject */
    CHECK(!mp_regex_match(re, "/a?x=1", 6));
    mp_regex_free(re);
    re = mp_regex_compile(".*", NULL);
    CHECK(mp_regex_match(re, NULL, 0));
    CHECK(mp_regex_match(re, "\xff\xfe", 2)); /* invalid UTF-8 is matched, not an error */
    mp_regex_free(re);
}

static void test_compile_error(void)
{
    mp_err_t err = {{0}};
    CHECK(mp_regex_compile("a(b", &err) == NULL);
    CHECK(strstr(err.msg, "a(b") != NULL);
    CHECK(strstr(err.msg, "offset") != NULL);
    CHECK(mp_regex_compile("[z-a]", NULL) == NULL);
}

static void test_catastrophic_backtracking_is_bounded(void)
{
    mp_regex_t *re = mp_regex_compile("(a+)+$", NULL);
    CHECK(re != NULL);
    const char *s = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!";
    uint64_t t0 = mp_now_ms();
    CHECK(!m(re, s));
    CHECK(!m(re, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"));
    uint64_t dt = mp_now_ms() - t0;
    CHECK(dt < 1000); /* unbounded, 2^32 steps would take minutes */
    CHECK(m(re, "aaaa"));
    mp_regex_free(re);

    re = mp_regex_compile("(x+x+)+y", NULL);
    char buf[4096];
    memset(buf, 'x', sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    t0 = mp_now_ms();
    CHECK(!m(re, buf));
    CHECK(mp_now_ms() - t0 < 1000);
    mp_regex_free(re);
}

static void *match_in_thread(void *arg)
{
    const mp_regex_t *re = arg;
    int ok = 0;
    for (int i = 0; i < 1000; i++)
        ok += mp_regex_match(re, "/users/42", 9) && !mp_regex_match(re, "/users/x", 8);
    return (void *)(intptr_t)ok;
}

static void test_threads_share_a_regex(void)
{
    mp_regex_t *re = mp_regex_compile("/users/[0-9]+", NULL);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, match_in_thread, re);
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        CHECK_INT((intptr_t)ret, 1000);
    }
    mp_regex_free(re);
}

int main(void)
{
    RUN(test_whole_string);
    RUN(test_alternation_is_anchored_as_a_whole);
    RUN(test_length_counted_subject);
    RUN(test_compile_error);
    RUN(test_catastrophic_backtracking_is_bounded);
    RUN(test_threads_share_a_regex);
    UNIT_DONE();
}
