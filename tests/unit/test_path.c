/* mp_path_normalize: RFC 3986 §6.2.2 / §5.2.4 as Envoy's normalize_path and merge_slashes. */
#include <stdlib.h>
#include <string.h>

#include "magpie/h1.h"
#include "unit.h"

static char *norm(const char *in, bool normalize, bool merge)
{
    const char *reason = NULL;
    char *out = mp_path_normalize(in, normalize, merge, &reason);
    if (out == NULL)
        CHECK(reason != NULL);
    return out;
}

#define EXPECT(in, n, m, want)                                                                     \
    do {                                                                                           \
        char *o_ = norm(in, n, m);                                                                 \
        CHECK_STR(o_, want);                                                                       \
        free(o_);                                                                                  \
    } while (0)

#define EXPECT_INVALID(in)                                                                         \
    do {                                                                                           \
        char *o_ = norm(in, true, true);                                                           \
        CHECK(o_ == NULL);                                                                         \
        free(o_);                                                                                  \
    } while (0)

static void test_dot_segments(void)
{
    EXPECT("/a/b/../c", true, false, "/a/c");
    EXPECT("/a/./b/.", true, false, "/a/b/");
    EXPECT("/a/b/..", true, false, "/a/");
    EXPECT("/../../x", true, false, "/x");
    EXPECT("/..", true, false, "/");
    EXPECT("/.", true, false, "/");
    EXPECT("/a/..b/c", true, false, "/a/..b/c");
    EXPECT("/a/.b", true, false, "/a/.b");
    EXPECT("/a/b/../../../c/./d", true, false, "/c/d");
    EXPECT("/", true, false, "/");
}

static void test_percent(void)
{
    EXPECT("/%2e%2e/admin", true, false, "/admin");
    EXPECT("/a/%2E/b", true, false, "/a/b");
    EXPECT("/%7euser/%41%62", true, false, "/~user/Ab");
    EXPECT("/a%2fb", true, false, "/a%2Fb");
    EXPECT("/a%2Fb/../c", true, false, "/c"); /* %2F is not a separator */
    EXPECT("/a%5cb", true, false, "/a%5Cb");
    EXPECT("/a\\b", true, false, "/a\\b");
    EXPECT("/%e2%82%ac", true, false, "/%E2%82%AC");
    EXPECT("/a;p=1/b", true, false, "/a;p=1/b");
    EXPECT_INVALID("/a%2");
    EXPECT_INVALID("/a%zz");
    EXPECT_INVALID("/a%");
}

static void test_query_untouched(void)
{
    EXPECT("/a/../b?x=/../%2e&y=%7e", true, true, "/b?x=/../%2e&y=%7e");
    EXPECT("/a//b?c//d", false, true, "/a/b?c//d");
    EXPECT("/?", true, true, "/?");
}

static void test_merge_slashes(void)
{
    EXPECT("//a///b/", false, true, "/a/b/");
    EXPECT("//a///b/", false, false, "//a///b/");
    EXPECT("//x/../y", true, true, "/y");
    EXPECT("/a/..//b", true, true, "/b");
    EXPECT("/a/%2e%2e//b", true, false, "//b");
}

static void test_invalid_and_asterisk(void)
{
    EXPECT("*", true, true, "*");
    EXPECT_INVALID("a/b");
    EXPECT_INVALID("");
    EXPECT_INVALID("?x");
    EXPECT_INVALID("http://a/b");
    const char *reason = NULL;
    CHECK(mp_path_normalize("x", false, false, &reason) == NULL);
    CHECK(reason != NULL);
}

int main(void)
{
    RUN(test_dot_segments);
    RUN(test_percent);
    RUN(test_query_untouched);
    RUN(test_merge_slashes);
    RUN(test_invalid_and_asterisk);
    UNIT_DONE();
}
