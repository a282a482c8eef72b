/* Retry policy arithmetic: retry_on parsing, which outcomes each condition retries, and the
 * jittered exponential back-off bounds. */
#include "magpie/http.h"
#include "magpie/retry.h"
#include "unit.h"

static void test_parse_retry_on(void)
{
    uint32_t bits = 0;
    CHECK_INT(mp_retry_on_parse("5xx, connect-failure,refused-stream , unavailable", &bits), 0);
    CHECK_INT(bits, MP_RETRY_ON_5XX | MP_RETRY_ON_CONNECT_FAILURE | MP_RETRY_ON_REFUSED_STREAM |
                        MP_RETRY_ON_GRPC_UNAVAILABLE);
    bits = 0;
    CHECK_INT(mp_retry_on_parse("bogus,retriable-4xx,,x", &bits), 2); /* unknown names skipped */
    CHECK_INT(bits, MP_RETRY_ON_RETRIABLE_4XX);
    bits = 0;
    CHECK_INT(mp_retry_on_parse("", &bits), 0);
    CHECK_INT(bits, 0);
}

static bool retries_status(uint32_t on, int status, const char *grpc, const mp_retry_policy_t *p,
                           const mp_retry_extra_t *x)
{
    mp_http_msg_t *m = mp_http_msg_new();
    m->status = status;
    if (grpc != NULL)
        mp_headers_add_cstr(&m->headers, "grpc-status", grpc);
    mp_attempt_outcome_t o = {MP_ATTEMPT_RESPONSE, m, 0, NULL};
    bool r = mp_retry_would_retry(p, on, &o, x);
    mp_http_msg_free(m);
    return r;
}

static void test_would_retry_responses(void)
{
    mp_retry_policy_t p;
    mp_retry_policy_default(&p);
    uint32_t codes[] = {418};
    p.retriable_status_codes = codes;
    p.n_retriable_status_codes = 1;
    CHECK(retries_status(MP_RETRY_ON_5XX, 500, NULL, &p, NULL));
    CHECK(!retries_status(MP_RETRY_ON_GATEWAY_ERROR, 500, NULL, &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_GATEWAY_ERROR, 503, NULL, &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_RETRIABLE_4XX, 409, NULL, &p, NULL));
    CHECK(!retries_status(MP_RETRY_ON_RETRIABLE_4XX, 404, NULL, &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_RETRIABLE_STATUS_CODES, 418, NULL, &p, NULL));
    CHECK(!retries_status(MP_RETRY_ON_RETRIABLE_STATUS_CODES, 419, NULL, &p, NULL));
    mp_retry_extra_t x = {"419, 420", NULL};
    CHECK(retries_status(MP_RETRY_ON_RETRIABLE_STATUS_CODES, 420, NULL, &p, &x));
    CHECK(!retries_status(MP_RETRY_ON_5XX, 200, NULL, &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_GRPC_UNAVAILABLE, 200, "14", &p, NULL));
    CHECK(!retries_status(MP_RETRY_ON_GRPC_UNAVAILABLE, 200, "13", &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_GRPC_INTERNAL, 200, "13", &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_GRPC_CANCELLED, 200, "1", &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_GRPC_DEADLINE_EXCEEDED, 200, "4", &p, NULL));
    CHECK(retries_status(MP_RETRY_ON_GRPC_RESOURCE_EXHAUSTED, 200, "8", &p, NULL));
}

static bool retries_kind(uint32_t on, mp_attempt_kind_t k)
{
    mp_attempt_outcome_t o = {k, NULL, 0, "x"};
    return mp_retry_would_retry(NULL, on, &o, NULL);
}

static void test_would_retry_failures(void)
{
    CHECK(retries_kind(MP_RETRY_ON_5XX, MP_ATTEMPT_RESET));
    CHECK(retries_kind(MP_RETRY_ON_5XX, MP_ATTEMPT_CONNECT_FAILURE));
    CHECK(retries_kind(MP_RETRY_ON_GATEWAY_ERROR, MP_ATTEMPT_TIMEOUT));
    CHECK(retries_kind(MP_RETRY_ON_CONNECT_FAILURE, MP_ATTEMPT_CONNECT_FAILURE));
    CHECK(!retries_kind(MP_RETRY_ON_CONNECT_FAILURE, MP_ATTEMPT_RESET));
    CHECK(retries_kind(MP_RETRY_ON_REFUSED_STREAM, MP_ATTEMPT_REFUSED_STREAM));
    CHECK(!retries_kind(MP_RETRY_ON_REFUSED_STREAM, MP_ATTEMPT_RESET));
    CHECK(retries_kind(MP_RETRY_ON_RESET, MP_ATTEMPT_RESET));
    CHECK(!retries_kind(MP_RETRY_ON_RETRIABLE_4XX, MP_ATTEMPT_RESET));
}

static void test_backoff(void)
{
    /* Retry n draws from [0, (2^n - 1) * base), capped at max. */
    CHECK_INT(mp_retry_backoff_ms(25, 250, 1, 24), 24);
    CHECK_INT(mp_retry_backoff_ms(25, 250, 1, 25), 0);
    CHECK_INT(mp_retry_backoff_ms(25, 250, 2, 74), 74);
    CHECK_INT(mp_retry_backoff_ms(25, 250, 2, 75), 0);
    CHECK_INT(mp_retry_backoff_ms(25, 250, 4, 249), 249); /* 15 * 25 = 375, capped at 250 */
    CHECK_INT(mp_retry_backoff_ms(25, 250, 4, 250), 0);
    CHECK_INT(mp_retry_backoff_ms(25, 250, 200, 1000), 1000 % 250);
    CHECK_INT(mp_retry_backoff_ms(0, 250, 3, 7), 0);
    for (uint64_t r = 0; r < 1000; r += 7)
        CHECK(mp_retry_backoff_ms(10, 100, 3, r * 7919) < 70);
}

int main(void)
{
    RUN(test_parse_retry_on);
    RUN(test_would_retry_responses);
    RUN(test_would_retry_failures);
    RUN(test_backoff);
    UNIT_DONE();
}
