/* A minimal unit-test harness: each test file is one binary with TEST functions listed in
 * main via RUN.  A failed CHECK prints file:line and the expression and marks the test failed;
 * the binary prints "<file>: N passed, N failed" and exits non-zero on any failure. */
#ifndef MAGPIE_UNIT_H
#define MAGPIE_UNIT_H

#include <stdio.h>
#include <string.h>

static int unit_failed_checks;
static int unit_passed, unit_failed;

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        if (!(expr)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr);               \
            unit_failed_checks++;                                                                  \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s == %s\n  got:  %s\n  want: %s\n",         \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");           \
            unit_failed_checks++;                                                                  \
        }                                                                                          \
    } while (0)

#define CHECK_INT(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK_INT failed: %s == %s (%lld != %lld)\n", __FILE__,        \
                    __LINE__, #a, #b, a_, b_);                                                     \
            unit_failed_checks++;                                                                  \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int before_ = unit_failed_checks;                                                          \
        fn();                                                                                      \
        if (unit_failed_checks == before_) {                                                       \
            unit_passed++;                                                                         \
        } else {                                                                                   \
            unit_failed++;                                                                         \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
        }                                                                                          \
    } while (0)

#define UNIT_DONE()                                                                                \
    do {                                                                                           \
        printf("%s: %d passed, %d failed\n", __FILE__, unit_passed, unit_failed);                  \
        return unit_failed ? 1 : 0;                                                                \
    } while (0)

#endif
