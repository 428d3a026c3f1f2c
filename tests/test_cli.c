/*
 * test_cli.c — the `optiq` program as a user runs it: exit codes, --help and
 * --version, and `optiq inspect --json` on the mlx-lm converted fixture
 * folders compared with what mlx-lm itself reported (reference.json, written
 * by tools/reference/gen_model.py).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test.h"

/* Run the optiq binary with args; stdout into *out (malloc'd), returns exit code. */
static int run(const char *args, char **out) {
    const char *build = getenv("BUILD");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/%s/optiq %s 2>/dev/null", test_path(""), build && *build ? build : "build", args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}

/* Every key of histogram a equals the same key of b, and sizes agree. */
static int same_histogram(const cJSON *a, const cJSON *b) {
    if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(b, e->string);
        if (!cJSON_IsNumber(o) || o->valuedouble != e->valuedouble) return 0;
    }
    return 1;
}

static void check_folder(const char *name) {
    char rel[256], args[512];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s/reference.json", name);
    cJSON *ref = load_json(test_path(rel));
    CHECKF(ref != NULL, "cannot read %s", rel);
    snprintf(args, sizeof args, "inspect --json %s/tests/fixtures/models/%s", test_path(""), name);
    char *out = NULL;
    int rc = run(args, &out);
    CHECKF(rc == 0, "optiq %s exited %d", args, rc);
    cJSON *got = cJSON_Parse(out);
    CHECKF(got != NULL, "inspect --json printed no JSON");
    if (ref && got) {
        const cJSON *lang = cJSON_GetObjectItemCaseSensitive(got, "language");
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(got, "quantization");
        double bpw = cJSON_GetObjectItemCaseSensitive(lang, "bits_per_weight")->valuedouble;
        double ref_bpw = cJSON_GetObjectItemCaseSensitive(ref, "mlx_lm_bits_per_weight")->valuedouble;
        CHECKF(fabs(bpw - ref_bpw) < 1e-9, "bits per weight %.12f, mlx-lm says %.12f", bpw, ref_bpw);
        double params = cJSON_GetObjectItemCaseSensitive(lang, "parameters")->valuedouble;
        double ref_params = cJSON_GetObjectItemCaseSensitive(ref, "mlx_lm_total_parameters_unpacked")->valuedouble;
        CHECKF(params == ref_params, "parameters %.0f, mlx-lm says %.0f", params, ref_params);
        CHECK(same_histogram(cJSON_GetObjectItemCaseSensitive(q, "histogram_bits_to_module_count"),
                             cJSON_GetObjectItemCaseSensitive(ref, "histogram_bits_to_module_count")));
        CHECK(same_histogram(cJSON_GetObjectItemCaseSensitive(q, "histogram_bits_to_weight_count"),
                             cJSON_GetObjectItemCaseSensitive(ref, "histogram_bits_to_weight_count")));
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(q, "unquantized_modules")) ==
              cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ref, "unquantized_modules")));
    }
    cJSON_Delete(got);
    cJSON_Delete(ref);
    free(out);
}

int main(void) {
    char *out = NULL;
    for (TEST_CASE("--version prints the version")) {
        CHECK(run("--version", &out) == 0);
        CHECK(strstr(out, "optiq 0.") == out);
        free(out);
    }
    for (TEST_CASE("--help lists the commands")) {
        CHECK(run("--help", &out) == 0);
        CHECK(strstr(out, "inspect") != NULL && strstr(out, "bench") != NULL);
        free(out);
    }
    for (TEST_CASE("every command has --help")) {
        const char *cmds[] = {"inspect", "bench", "tokenize", "template"};
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
            char a[64];
            snprintf(a, sizeof a, "%s --help", cmds[i]);
            CHECKF(run(a, &out) == 0 && strstr(out, "Usage: optiq") != NULL, "optiq %s", a);
            free(out);
        }
    }
    for (TEST_CASE("unknown command and bad usage exit non-zero")) {
        CHECK(run("frobnicate", NULL) == 2);
        CHECK(run("inspect", NULL) == 2);
        CHECK(run("inspect --bogus x", NULL) == 2);
        CHECK(run("inspect /nonexistent/folder", NULL) == 1);
        CHECK(run("tokenize --text hi", NULL) == 2);
        CHECK(run("tokenize --model /nonexistent/folder --text hi", NULL) == 1);
        CHECK(run("template --model /nonexistent/folder --messages /nonexistent.json", NULL) == 1);
    }
    for (TEST_CASE("inspect tiny-mixed matches mlx-lm (bpw, parameters, bits histograms)")) check_folder("tiny-mixed");
    for (TEST_CASE("inspect tiny-q4 matches mlx-lm (tied embeddings, sidecar)")) {
        check_folder("tiny-q4");
        char args[512];
        snprintf(args, sizeof args, "inspect --json %s/tests/fixtures/models/tiny-q4", test_path(""));
        CHECK(run(args, &out) == 0);
        cJSON *j = cJSON_Parse(out);
        const cJSON *vis = cJSON_GetObjectItemCaseSensitive(j, "vision");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(vis, "present")));
        cJSON_Delete(j);
        free(out);
    }
    for (TEST_CASE("inspect human summary names the bits and bits per weight")) {
        char args[512];
        snprintf(args, sizeof args, "inspect %s/tests/fixtures/models/tiny-mixed", test_path(""));
        CHECK(run(args, &out) == 0);
        CHECK(strstr(out, "4.230") != NULL);
        CHECK(strstr(out, "3-bit") != NULL && strstr(out, "6-bit") != NULL);
        free(out);
    }
    return test_finish();
}
