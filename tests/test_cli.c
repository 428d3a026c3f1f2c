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
#include <unistd.h>

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

/* A temporary file holding text; the path is static. */
static const char *temp_file(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/optiq_test_cli_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return "/nonexistent";
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* generate, chat and dump on a tiny Qwen3.5 folder (random weights: the text
 * is noise, but greedy decoding makes it reproducible). */
static void check_generation_commands(void) {
    char model[1024], args[2048];
    snprintf(model, sizeof model, "%s/tests/fixtures/models/qwen35-dense-bf16", test_path(""));
    char *stream = NULL, *js = NULL, *chat = NULL, *out = NULL;

    snprintf(args, sizeof args, "generate --model %s --prompt Hello --max-tokens 8 --ignore-eos", model);
    CHECKF(run(args, &stream) == 0, "optiq %s", args);
    snprintf(args, sizeof args, "generate --model %s --prompt Hello --max-tokens 8 --ignore-eos --json", model);
    CHECKF(run(args, &js) == 0, "optiq %s", args);
    cJSON *j = cJSON_Parse(js);
    CHECKF(j != NULL, "generate --json printed no JSON: %s", js);
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "timings");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "tokens")) == 8);
    CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "prompt_tokens")));
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "finish_reason")) &&
          strcmp(cJSON_GetObjectItemCaseSensitive(j, "finish_reason")->valuestring, "length") == 0);
    CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(tm, "prefill_seconds")) &&
          cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(tm, "decode_seconds")) &&
          cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(tm, "prefill_tokens_per_second")) &&
          cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(tm, "decode_tokens_per_second")));
    /* the streamed text holds the JSON's reasoning and text (the generation
     * prompt of this thinking model leaves a <think> block open, so the
     * random continuation is reasoning), then a newline */
    const cJSON *reasoning = cJSON_GetObjectItemCaseSensitive(j, "reasoning");
    CHECK(cJSON_IsString(text) && (cJSON_IsString(reasoning) || cJSON_IsNull(reasoning)));
    if (cJSON_IsString(text) && stream) {
        const char *r = cJSON_IsString(reasoning) ? reasoning->valuestring : "";
        size_t sl = strlen(stream);
        CHECKF(sl > 0 && stream[sl - 1] == '\n' && strstr(stream, text->valuestring) && strstr(stream, r) &&
                   strlen(r) + strlen(text->valuestring) < sl,
               "streamed \"%s\", JSON reasoning \"%s\" text \"%s\"", stream, r, text->valuestring);
    }

    /* --prompt - reads standard input */
    char in[64];
    snprintf(in, sizeof in, "%s", temp_file("Hello"));
    snprintf(args, sizeof args, "generate --model %s --prompt - --max-tokens 8 --ignore-eos < %s", model, in);
    CHECK(run(args, &out) == 0 && stream && strcmp(out, stream) == 0);
    unlink(in);
    free(out);
    snprintf(args, sizeof args, "generate --model %s --prompt Hello --no-chat-template --max-tokens 4 --json", model);
    CHECK(run(args, &out) == 0 && strstr(out, "\"finish_reason\"") != NULL);
    free(out);

    /* chat: the first turn is what generate gives; /reset starts over */
    snprintf(in, sizeof in, "%s", temp_file("Hello\n/reset\nHello\nAgain\n"));
    snprintf(args, sizeof args, "chat --model %s --max-tokens 8 --ignore-eos < %s", model, in);
    CHECKF(run(args, &chat) == 0, "optiq %s", args);
    unlink(in);
    if (chat && stream) {
        size_t sl = strlen(stream);
        CHECKF(strncmp(chat, stream, sl) == 0 && strncmp(chat + sl, stream, sl) == 0 && strlen(chat) > 2 * sl,
               "chat printed \"%s\"", chat);
    }

    /* dump */
    char dump_path[64];
    snprintf(dump_path, sizeof dump_path, "%s", temp_file(""));
    snprintf(args, sizeof args, "dump --model %s --prompt Hello --out %s --json", model, dump_path);
    CHECKF(run(args, &out) == 0, "optiq %s", args);
    cJSON *d = cJSON_Parse(out);
    CHECK(d != NULL);
    CHECK(cJSON_GetObjectItemCaseSensitive(d, "n_layers") &&
          cJSON_GetObjectItemCaseSensitive(d, "n_layers")->valuedouble == 8);
    CHECK(cJSON_GetObjectItemCaseSensitive(d, "hidden_size") &&
          cJSON_GetObjectItemCaseSensitive(d, "hidden_size")->valuedouble == 64);
    CHECK(cJSON_GetObjectItemCaseSensitive(d, "vocab_size") &&
          cJSON_GetObjectItemCaseSensitive(d, "vocab_size")->valuedouble == 512);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(d, "tokens")) > 0);
    unlink(dump_path);
    cJSON_Delete(d);
    cJSON_Delete(j);
    free(out);
    free(chat);
    free(js);
    free(stream);
}

/* Same ids in a JSON array and a reference array. */
static int same_ids(const cJSON *a, const cJSON *b) {
    if (!cJSON_IsArray(a) || !cJSON_IsArray(b) || cJSON_GetArraySize(a) != cJSON_GetArraySize(b)) return 0;
    for (int i = 0; i < cJSON_GetArraySize(a); i++)
        if (cJSON_GetArrayItem(a, i)->valuedouble != cJSON_GetArrayItem(b, i)->valuedouble) return 0;
    return 1;
}

/* End to end against mlx-lm: the prompt of reference.json's first prompt
 * (one user turn under the chat template) gives mlx-lm's prompt ids and,
 * greedily, its f32 run's 32 tokens (tools/reference/gen_qwen35.py). */
static void check_golden(const char *name, const char *extra) {
    char rel[256], args[2048];
    snprintf(rel, sizeof rel, "tests/fixtures/models/%s/reference.json", name);
    cJSON *ref = load_json(test_path(rel));
    CHECKF(ref != NULL, "cannot read %s", rel);
    const cJSON *p0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ref, "prompts"), 0);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(p0, "messages");
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(msgs, 0), "content");
    CHECK(cJSON_GetArraySize(msgs) == 1 && cJSON_IsString(user));
    if (!ref || !cJSON_IsString(user) || strchr(user->valuestring, '\'') != NULL) {
        cJSON_Delete(ref);
        return;
    }
    char *out = NULL;
    snprintf(args, sizeof args, "generate --model %s/tests/fixtures/models/%s --prompt '%s' --max-tokens 32 "
             "--ignore-eos --json %s", test_path(""), name, user->valuestring, extra);
    CHECKF(run(args, &out) == 0, "optiq %s", args);
    cJSON *got = cJSON_Parse(out);
    const cJSON *want_prompt = cJSON_GetObjectItemCaseSensitive(p0, "tokens");
    CHECK(cJSON_GetObjectItemCaseSensitive(got, "prompt_tokens") &&
          cJSON_GetObjectItemCaseSensitive(got, "prompt_tokens")->valuedouble == cJSON_GetArraySize(want_prompt));
    CHECKF(same_ids(cJSON_GetObjectItemCaseSensitive(got, "tokens"), cJSON_GetObjectItemCaseSensitive(p0, "greedy_f32")),
           "generated tokens differ from mlx-lm's f32 greedy run: %s", out);
    free(out);
    cJSON_Delete(got);
    /* the prompt ids themselves, from dump --json */
    char path[64];
    snprintf(path, sizeof path, "%s", temp_file(""));
    snprintf(args, sizeof args, "dump --model %s/tests/fixtures/models/%s --prompt '%s' --out %s --json %s",
             test_path(""), name, user->valuestring, path, extra);
    CHECKF(run(args, &out) == 0, "optiq %s", args);
    unlink(path);
    got = cJSON_Parse(out);
    CHECKF(same_ids(cJSON_GetObjectItemCaseSensitive(got, "tokens"), want_prompt), "prompt ids differ from mlx-lm's: %s",
           out);
    free(out);
    cJSON_Delete(got);
    cJSON_Delete(ref);
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
        CHECK(strstr(out, "generate") != NULL && strstr(out, "chat") != NULL && strstr(out, "dump") != NULL);
        free(out);
    }
    for (TEST_CASE("every command has --help")) {
        const char *cmds[] = {"inspect", "bench", "tokenize", "template", "generate",
                              "chat", "dump", "sidecar", "serve"};
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
    for (TEST_CASE("bench --synthetic with an unknown model exits 1 naming the known ones")) {
        const char *build = getenv("BUILD");
        char cmd[1200], msg[512];
        snprintf(cmd, sizeof cmd, "%s/%s/optiq bench --synthetic nosuch 2>&1", test_path(""),
                 build && *build ? build : "build");
        FILE *p = popen(cmd, "r");
        size_t n = p ? fread(msg, 1, sizeof msg - 1, p) : 0;
        msg[n] = 0;
        int st = p ? pclose(p) : -1;
        CHECKF(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
        CHECKF(strstr(msg, "unknown synthetic model 'nosuch'") && strstr(msg, "qwen3_5-0.8b"), "message: %s", msg);
    }
    for (TEST_CASE("generate, chat and dump: bad usage exits 2, a missing folder 1")) {
        CHECK(run("generate --prompt hi", NULL) == 2);                                  /* no --model */
        CHECK(run("generate --model /nonexistent/folder", NULL) == 2);                  /* no --prompt */
        CHECK(run("generate --model /nonexistent/folder --prompt hi", NULL) == 1);
        CHECK(run("generate --model /nonexistent/folder --prompt hi --max-tokens ten", NULL) == 2);
        CHECK(run("generate --model /nonexistent/folder --prompt hi --temp -1", NULL) == 2);
        CHECK(run("generate --model /nonexistent/folder --prompt hi --top-p 1.5", NULL) == 2);
        CHECK(run("generate --model /nonexistent/folder --prompt hi --seed 1x", NULL) == 2);
        CHECK(run("generate --model /nonexistent/folder --prompt hi --bogus", NULL) == 2);
        CHECK(run("generate --model /nonexistent/folder --prompt hi extra", NULL) == 2);
        CHECK(run("chat", NULL) == 2);
        CHECK(run("chat --model /nonexistent/folder --top-k -3 </dev/null", NULL) == 2);
        CHECK(run("chat --model /nonexistent/folder </dev/null", NULL) == 1);
        CHECK(run("dump --prompt hi --out /tmp/x.safetensors", NULL) == 2);
        CHECK(run("dump --model /nonexistent/folder --prompt hi", NULL) == 2);          /* no --out */
        CHECK(run("dump --model /nonexistent/folder --prompt hi --out /tmp/x.safetensors", NULL) == 1);
        CHECK(run("dump --model /nonexistent/folder --prompt hi --out /tmp/x.safetensors --threads 0", NULL) == 2);
    }
    for (TEST_CASE("generate (stream, --json, stdin), chat and dump on qwen35-dense-bf16"))
        check_generation_commands();
    for (TEST_CASE("generate: mlx-lm's prompt ids and greedy tokens, end to end (qwen35-dense-mixed, qwen35-moe-mixed)")) {
        check_golden("qwen35-dense-mixed", "");
        check_golden("qwen35-moe-mixed", "");
    }
    /* gen_gemma4.py renders p0 with thinking off; mlx-lm's own default is on */
    for (TEST_CASE("generate: mlx-lm's prompt ids and greedy tokens, end to end (gemma4-e2b-mixed, gemma4-moe-mixed)")) {
        check_golden("gemma4-e2b-mixed", "--chat-template-kwargs '{\"enable_thinking\": false}'");
        check_golden("gemma4-moe-mixed", "--chat-template-kwargs '{\"enable_thinking\": false}'");
    }
    for (TEST_CASE("generate --json: the thinking block goes to \"reasoning\", the rest to \"text\" (gemma4)")) {
        char a[2048];
        const char *dir = test_path("tests/fixtures/models/gemma4-e2b-bf16");
        /* a prompt left inside an opened thinking block: what follows is reasoning until <channel|> */
        snprintf(a, sizeof a, "generate --model %s --no-chat-template --max-tokens 6 --ignore-eos --json "
                 "--prompt '<|turn>user\nHi<turn|>\n<|turn>model\n<|channel>thought\n'", dir);
        CHECKF(run(a, &out) == 0, "optiq %s", a);
        cJSON *j = cJSON_Parse(out);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "reasoning"), *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        CHECKF(cJSON_IsString(r) && cJSON_IsString(t) && strlen(r->valuestring) > 0, "%s", out);
        CHECKF(cJSON_IsString(t) && !strstr(t->valuestring, "<channel|>") && !strstr(t->valuestring, "<|channel>"),
               "%s", out);
        cJSON_Delete(j);
        free(out);
        /* no block opened: reasoning is null and text is all of it */
        snprintf(a, sizeof a, "generate --model %s --max-tokens 6 --ignore-eos --json --prompt Hi "
                 "--chat-template-kwargs '{\"enable_thinking\": false}'", dir);
        CHECKF(run(a, &out) == 0, "optiq %s", a);
        j = cJSON_Parse(out);
        CHECKF(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "reasoning")), "%s", out);
        cJSON_Delete(j);
        free(out);
        snprintf(a, sizeof a, "generate --model %s --prompt Hi --chat-template-kwargs '[1]'", dir);
        CHECK(run(a, NULL) == 2);
    }
    for (TEST_CASE("inspect names the Gemma-4 variant and its features")) {
        char a[1024];
        snprintf(a, sizeof a, "inspect %s --json", test_path("tests/fixtures/models/gemma4-e2b-mixed"));
        CHECK(run(a, &out) == 0);
        cJSON *j = cJSON_Parse(out);
        const cJSON *ar = cJSON_GetObjectItemCaseSensitive(j, "architecture");
        const cJSON *fam = cJSON_GetObjectItemCaseSensitive(ar, "family"), *var = cJSON_GetObjectItemCaseSensitive(ar, "variant");
        CHECK(cJSON_IsString(fam) && !strcmp(fam->valuestring, "gemma4"));
        CHECK(cJSON_IsString(var) && strstr(var->valuestring, "E2B") != NULL);
        char *feats = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(ar, "features"));
        CHECKF(feats && strstr(feats, "per-layer input") && strstr(feats, "KV sharing") && strstr(feats, "sliding"),
               "%s", feats ? feats : "");
        free(feats);
        cJSON_Delete(j);
        free(out);
        snprintf(a, sizeof a, "inspect %s --json", test_path("tests/fixtures/models/gemma4-moe-mixed"));
        CHECK(run(a, &out) == 0 && strstr(out, "MoE (26B-A4B-style)") && strstr(out, "K-eq-V"));
        free(out);
        snprintf(a, sizeof a, "inspect %s", test_path("tests/fixtures/models/gemma4-keqv-mixed"));
        CHECK(run(a, &out) == 0 && strstr(out, "architecture") && strstr(out, "31B-style"));
        free(out);
    }
    for (TEST_CASE("generate --image: mlx-vlm's greedy tokens from the PNG file (qwen35-vl-mixed p0, p1)")) {
        char *ref_path = NULL, a[2048];
        cJSON *ref = NULL;
        if (asprintf(&ref_path, "%s", test_path("tests/fixtures/models/qwen35-vl-mixed/reference_vl.json")) > 0)
            ref = load_json(ref_path);
        free(ref_path);
        CHECK(ref != NULL);
        const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(ref, "prompts");
        for (int p = 0; p < 2 && prompts; p++) {
            const cJSON *pr = cJSON_GetArrayItem(prompts, p);
            const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(pr, "images");
            const char *dir = test_path("tests/fixtures/models/qwen35-vl-mixed");
            int k = snprintf(a, sizeof a, "generate --model %s --exact --json --max-tokens 32 --ignore-eos", dir);
            for (const cJSON *x = imgs ? imgs->child : NULL; x; x = x->next)
                k += snprintf(a + k, sizeof a - (size_t)k, " --image %s/%s", dir, x->valuestring);
            snprintf(a + k, sizeof a - (size_t)k, " --prompt '%s'",
                     cJSON_GetObjectItemCaseSensitive(pr, "question")->valuestring);
            CHECKF(run(a, &out) == 0, "optiq %s", a);
            cJSON *j = cJSON_Parse(out);
            free(out);
            const cJSON *want = cJSON_GetObjectItemCaseSensitive(pr, "greedy_f32");
            CHECKF(j && cJSON_Compare(cJSON_GetObjectItemCaseSensitive(j, "tokens"), want, 1), "p%d: tokens differ", p);
            const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "prompt_tokens");
            CHECK(cJSON_IsNumber(pt) && pt->valuedouble == cJSON_GetObjectItemCaseSensitive(pr, "num_tokens")->valuedouble);
            cJSON_Delete(j);
        }
        cJSON_Delete(ref);
        snprintf(a, sizeof a, "generate --model %s --image %s --prompt hi",
                 test_path("tests/fixtures/models/qwen35-dense-mixed"),
                 test_path("tests/fixtures/models/qwen35-vl-mixed/images/img0.png"));
        CHECK(run(a, NULL) == 1); /* a text-only folder refuses images */
        snprintf(a, sizeof a, "generate --model %s --image /nonexistent.png --prompt hi",
                 test_path("tests/fixtures/models/qwen35-vl-mixed"));
        CHECK(run(a, NULL) == 1);
        CHECK(run("sidecar --base /nonexistent --quant-dir /nonexistent", NULL) == 1);
        CHECK(run("sidecar --base x", NULL) == 2);
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
