/* tests/harness.h: a minimal unit-test harness (no dependencies): CHECK records a failure with
 * file/line and keeps going; main returns non-zero when anything failed. */
#ifndef SL_TEST_HARNESS_H
#define SL_TEST_HARNESS_H

#include <stdio.h>

static int g_checks = 0, g_failures = 0;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        g_checks++;                                                                          \
        if (!(cond)) {                                                                       \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                                       \
    do {                                                                                     \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                \
        g_checks++;                                                                          \
        if (va_ != vb_) {                                                                    \
            g_failures++;                                                                    \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", __FILE__,      \
                    __LINE__, #a, va_, #b, vb_);                                             \
        }                                                                                    \
    } while (0)

#define RUN_TEST(fn)                                                                         \
    do {                                                                                     \
        int before_ = g_failures;                                                            \
        fn();                                                                                \
        printf("%-40s %s\n", #fn, g_failures == before_ ? "ok" : "FAILED");                  \
    } while (0)

#endif
