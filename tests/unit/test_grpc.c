/* proxy/grpc.c: grpc-timeout parsing (units, rounding, the digit limit, everything malformed),
 * the HTTP-to-gRPC status mapping and the gRPC content-type test. */
#include <stdint.h>

#include "magpie/common.h"
#include "magpie/grpc.h"
#include "unit.h"

/* Parses v and checks the result; want_ms is ignored when ok is false. */
static void expect_timeout(const char *v, bool ok, uint64_t want_ms)
{
    uint64_t ms = 777;
    int rc = mp_grpc_timeout_parse(v, &ms);
    if (ok) {
        CHECK_INT(rc, 0);
        if (ms != want_ms)
            fprintf(stderr, "  %s -> %llu, want %llu\n", v, (unsigned long long)ms,
                    (unsigned long long)want_ms);
        CHECK(ms == want_ms);
    } else {
        CHECK_INT(rc, MP_ERROR);
        CHECK_INT(ms, 777); /* untouched on error */
    }
}

static void test_timeout_units(void)
{
    expect_timeout("1H", true, 3600000);
    expect_timeout("2M", true, 120000);
    expect_timeout("3S", true, 3000);
    expect_timeout("250m", true, 250);
    expect_timeout("1500u", true, 2); /* 1.5 ms rounds up */
    expect_timeout("1000u", true, 1);
    expect_timeout("1u", true, 1);
    expect_timeout("1n", true, 1);
    expect_timeout("1000000n", true, 1);
    expect_timeout("1000001n", true, 2);
    expect_timeout("0n", true, 0);
    expect_timeout("0S", true, 0);
    expect_timeout("00000005S", true, 5000); /* leading zeros count as digits */
}

static void test_timeout_limits(void)
{
    expect_timeout("99999999H", true, 99999999ULL * 3600000ULL); /* the largest value */
    expect_timeout("99999999n", true, 100);
    expect_timeout("123456789S", false, 0); /* nine digits */
    expect_timeout("000000001S", false, 0);
}

static void test_timeout_malformed(void)
{
    static const char *const bad[] = {
        "",     "S",    "10",   "10s", "10 S", " 10S", "10S ",  "+10S",
        "-10S", "1.5S", "10SS", "10x", "1e3m", "0x1S", "10\tS", "1h",
    };
    for (size_t i = 0; i < MP_ARRAY_SIZE(bad); i++)
        expect_timeout(bad[i], false, 0);
    uint64_t ms = 5;
    CHECK_INT(mp_grpc_timeout_parse(NULL, &ms), MP_ERROR);
    CHECK_INT(ms, 5);
}

/* Formats ms and parses it back: the value must fit the header's 8 digits and never exceed ms. */
static void expect_format(uint64_t ms, const char *want)
{
    char out[MP_GRPC_TIMEOUT_BUF];
    size_t n = mp_grpc_timeout_format(ms, out);
    CHECK_INT(n, strlen(want));
    CHECK_STR(out, want);
    uint64_t back = 0;
    CHECK_INT(mp_grpc_timeout_parse(out, &back), 0);
    CHECK(back <= ms);
}

static void test_timeout_format(void)
{
    expect_format(0, "0m");
    expect_format(400, "400m");
    expect_format(99999999, "99999999m");
    expect_format(100000000, "100000S");
    expect_format(100000999, "100000S"); /* rounded down */
    expect_format(99999999ULL * 1000 + 999, "99999999S");
    expect_format(100000000ULL * 1000, "1666666M");
    expect_format(UINT64_MAX, "99999999H");
}

static void test_status_from_http(void)
{
    CHECK_INT(mp_grpc_status_from_http(400), MP_GRPC_INTERNAL);
    CHECK_INT(mp_grpc_status_from_http(401), MP_GRPC_UNAUTHENTICATED);
    CHECK_INT(mp_grpc_status_from_http(403), MP_GRPC_PERMISSION_DENIED);
    CHECK_INT(mp_grpc_status_from_http(404), MP_GRPC_UNIMPLEMENTED);
    CHECK_INT(mp_grpc_status_from_http(429), MP_GRPC_UNAVAILABLE);
    CHECK_INT(mp_grpc_status_from_http(502), MP_GRPC_UNAVAILABLE);
    CHECK_INT(mp_grpc_status_from_http(503), MP_GRPC_UNAVAILABLE);
    CHECK_INT(mp_grpc_status_from_http(504), MP_GRPC_UNAVAILABLE);
    CHECK_INT(mp_grpc_status_from_http(500), MP_GRPC_UNKNOWN);
    CHECK_INT(mp_grpc_status_from_http(405), MP_GRPC_UNKNOWN);
    CHECK_INT(mp_grpc_status_from_http(200), MP_GRPC_UNKNOWN);
    CHECK_INT(mp_grpc_status_from_http(0), MP_GRPC_UNKNOWN);
    /* The numbers are the wire values a client sees in grpc-status. */
    CHECK_INT(MP_GRPC_INTERNAL, 13);
    CHECK_INT(MP_GRPC_UNAVAILABLE, 14);
    CHECK_INT(MP_GRPC_UNIMPLEMENTED, 12);
    CHECK_INT(MP_GRPC_UNAUTHENTICATED, 16);
    CHECK_INT(MP_GRPC_PERMISSION_DENIED, 7);
    CHECK_INT(MP_GRPC_UNKNOWN, 2);
}

static void test_content_type(void)
{
    CHECK(mp_grpc_is_grpc_content_type("application/grpc"));
    CHECK(mp_grpc_is_grpc_content_type("application/grpc+proto"));
    CHECK(mp_grpc_is_grpc_content_type("application/grpc+json"));
    CHECK(mp_grpc_is_grpc_content_type("application/grpc;charset=utf-8"));
    CHECK(mp_grpc_is_grpc_content_type("Application/GRPC"));
    CHECK(!mp_grpc_is_grpc_content_type("application/grpc-web"));
    CHECK(!mp_grpc_is_grpc_content_type("application/grpc-web+proto"));
    CHECK(!mp_grpc_is_grpc_content_type("application/grpcx"));
    CHECK(!mp_grpc_is_grpc_content_type("application/grp"));
    CHECK(!mp_grpc_is_grpc_content_type("application/json"));
    CHECK(!mp_grpc_is_grpc_content_type(" application/grpc"));
    CHECK(!mp_grpc_is_grpc_content_type(""));
    CHECK(!mp_grpc_is_grpc_content_type(NULL));
}

int main(void)
{
    RUN(test_timeout_units);
    RUN(test_timeout_limits);
    RUN(test_timeout_malformed);
    RUN(test_timeout_format);
    RUN(test_status_from_http);
    RUN(test_content_type);
    UNIT_DONE();
}
