/*
 * test_json.c — json_print_python against what Python's json.dumps(indent=2)
 * writes for the same document (tests/fixtures/json, tools/reference/gen_json.py).
 */
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "test.h"

int main(void) {
    optiq_error e;
    for (TEST_CASE("json_print_python(indent=2) == json.dumps(indent=2), byte for byte")) {
        cJSON *doc = NULL;
        char *want = NULL;
        size_t wlen = 0;
        CHECKF(json_load_file(test_path("tests/fixtures/json/sample.json"), NULL, 0, &doc, &e) == OPTIQ_OK, "%s",
               e.message);
        CHECKF(json_read_file(test_path("tests/fixtures/json/sample.indent2.json"), 1 << 20, &want, &wlen, &e) ==
                   OPTIQ_OK,
               "%s", e.message);
        char *got = doc ? json_print_python(doc, 2) : NULL;
        CHECK(got != NULL);
        if (got && want) {
            size_t i = 0;
            while (got[i] && got[i] == want[i]) i++;
            CHECKF(strlen(got) == wlen && i == wlen, "differs at byte %zu: got ...%.40s... want ...%.40s...", i,
                   got + (i > 20 ? i - 20 : 0), want + (i > 20 ? i - 20 : 0));
        }
        free(got), free(want);
        cJSON_Delete(doc);
    }
    for (TEST_CASE("json_print_python: empty containers and scalars at the top level")) {
        cJSON *a = cJSON_CreateArray(), *o = cJSON_CreateObject(), *n = cJSON_CreateNumber(2.5);
        char *pa = json_print_python(a, 2), *po = json_print_python(o, 2), *pn = json_print_python(n, 2);
        CHECK(pa && strcmp(pa, "[]") == 0);
        CHECK(po && strcmp(po, "{}") == 0);
        CHECK(pn && strcmp(pn, "2.5") == 0);
        free(pa), free(po), free(pn);
        cJSON_Delete(a), cJSON_Delete(o), cJSON_Delete(n);
    }
    return test_finish();
}
