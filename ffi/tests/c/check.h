/* Tiny check helpers shared by the C test programs: one line per check ("ok N - ..." or
 * "FAIL N - ..."), and the exit code says whether all passed. */
#ifndef PLORA_TEST_CHECK_H
#define PLORA_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "pocketlora.h"

static int checks_run = 0;
static int checks_failed = 0;

/* A status and the last error must agree: "" after PLORA_OK, a message after an error. */
static void expect_status(plora_status got, plora_status want, const char *what, int line) {
    const char *msg = plora_last_error();
    int msg_ok = (got == PLORA_OK) ? msg[0] == '\0' : msg[0] != '\0';
    checks_run++;
    if (got == want && msg_ok) {
        printf("ok %d - %s -> %s%s%s\n", checks_run, what, plora_status_name(got),
               got == PLORA_OK ? "" : ": ", msg);
    } else {
        checks_failed++;
        printf("FAIL %d - line %d: %s -> %s, expected %s (last error: \"%s\")\n", checks_run,
               line, what, plora_status_name(got), plora_status_name(want), msg);
    }
    fflush(stdout);
}

static void expect_true(int cond, const char *what, int line) {
    checks_run++;
    if (cond) {
        printf("ok %d - %s\n", checks_run, what);
    } else {
        checks_failed++;
        printf("FAIL %d - line %d: %s\n", checks_run, line, what);
    }
    fflush(stdout);
}

#define EXPECT(call, want) expect_status((call), (want), #call, __LINE__)
#define EXPECT_OK(call) expect_status((call), PLORA_OK, #call, __LINE__)
#define EXPECT_TRUE(cond) expect_true((cond) ? 1 : 0, #cond, __LINE__)

/* Writes `text` to the file `path` (a test's input data). */
static inline void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int check_summary(void) {
    printf("# %d checks, %d failed\n", checks_run, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

#endif
