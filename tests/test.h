/*
 * test.h — the tiny harness every test program uses.
 *
 * A test program is a main() that calls TEST_CASE blocks; each case prints one
 * line ("ok   name" / "FAIL name: why") and the program ends with
 * test_finish(), which prints "N passed, N failed" and returns the exit code.
 * Fixture paths are relative to the repository root (OPTIQ_ROOT, default ".").
 */
#ifndef OPTIQ_TEST_H
#define OPTIQ_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_passed, t_failed, t_case_failed;
static const char *t_case_name;
static char t_fail_msg[1024];

static inline void t_fail(const char *file, int line, const char *fmt, ...) {
    if (t_case_failed) return;
    t_case_failed = 1;
    int n = snprintf(t_fail_msg, sizeof t_fail_msg, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_fail_msg + n, sizeof t_fail_msg - (size_t)n, fmt, ap);
    va_end(ap);
}

static inline void t_begin(const char *name) { t_case_name = name; t_case_failed = 0; t_fail_msg[0] = 0; }
static inline void t_end(void) {
    if (t_case_failed) { t_failed++; printf("FAIL %s: %s\n", t_case_name, t_fail_msg); }
    else { t_passed++; printf("ok   %s\n", t_case_name); }
    fflush(stdout);
}

/* for (TEST_CASE("name")) { ... }  — runs the body once, reports it. */
#define TEST_CASE(name) int t_once_ = (t_begin(name), 1); t_once_; t_once_ = (t_end(), 0)

#define CHECK(cond) do { if (!(cond)) t_fail(__FILE__, __LINE__, "check failed: %s", #cond); } while (0)
#define CHECKF(cond, ...) do { if (!(cond)) t_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)

static inline int test_finish(void) {
    printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed ? 1 : 0;
}

/* Path of a file under the repository root; static buffer, copy before reuse. */
static inline const char *test_path(const char *rel) {
    static char buf[4][1024];
    static int k;
    const char *root = getenv("OPTIQ_ROOT");
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", root && *root ? root : ".", rel);
    return buf[k];
}

#endif
