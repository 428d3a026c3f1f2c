/* test_chat.c — chat rendering against transformers: every conversation of
 * tests/fixtures/templates/<template>/conversations.jsonl (made by
 * tools/reference/gen_templates.py with transformers' own renderer) must give
 * the reference prompt byte for byte, or fail where the reference failed (a
 * template's raise_exception). Each fixture folder is loaded the way a model
 * folder is (optiq_chat_template_load). Then malformed templates, messages
 * and options: each gives a clear error. */
#include "optiq.h"
#include "test.h"
#include "text/chat.h"
#include "text/jinja.h"

#include <ftw.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const TEMPLATES[] = {"gemma4", "gemma4_31b", "gemma3", "qwen3", "qwen3_5",
                                        "chatml", "llama3", "llama3_2", NULL};

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    if (b) b[got] = 0;
    if (len) *len = got;
    return b;
}

/* First byte where a and b differ, for messages. */
static size_t first_diff(const char *a, const char *b) {
    size_t i = 0;
    while (a[i] && a[i] == b[i]) i++;
    return i;
}

static void conversations(const char *name) {
    char dir[512], path[600], label[200];
    snprintf(dir, sizeof dir, "%s", test_path("tests/fixtures/templates"));
    snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/%s", name);
    snprintf(path, sizeof path, "%s/conversations.jsonl", dir);
    optiq_error e = {0};
    optiq_chat_template *t = NULL;
    snprintf(label, sizeof label, "chat %s: template loads", name);
    for (TEST_CASE(label)) CHECKF(optiq_chat_template_load(dir, &t, &e) == OPTIQ_OK, "%s", e.message);
    char *text = slurp(path, NULL);
    if (!t || !text) {
        optiq_chat_template_free(t);
        free(text);
        return;
    }
    int total = 0, ok = 0, rendered = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!*line) continue;
        jval *rec = NULL;
        if (jv_from_json(line, strlen(line), "conversation", &rec, &e) != OPTIQ_OK) continue;
        const char *id = jv_str_data(jv_dict_get(rec, "id"), NULL);
        size_t mlen, elen = 0;
        char *msgs = jv_to_json(jv_dict_get(rec, "messages"), &mlen);
        char *opts = jv_to_json(jv_dict_get(rec, "options"), NULL);
        const char *expected = jv_str_data(jv_dict_get(rec, "expected"), &elen);
        const char *ref_error = jv_str_data(jv_dict_get(rec, "error"), NULL);
        char *prompt = NULL;
        size_t plen = 0;
        optiq_error re = {0};
        optiq_status st = optiq_chat_template_render(t, msgs, mlen, opts, &prompt, &plen, &re);
        total++;
        snprintf(label, sizeof label, "chat %s/%s", name, id ? id : "?");
        for (TEST_CASE(label)) {
            if (expected) {
                CHECKF(st == OPTIQ_OK, "failed: %s", re.message);
                if (st == OPTIQ_OK) {
                    size_t d = first_diff(prompt, expected);
                    CHECKF(plen == elen && memcmp(prompt, expected, elen) == 0,
                           "differs at byte %zu: got [%.60s] want [%.60s]", d, prompt + d, expected + d);
                }
            } else {
                CHECKF(st != OPTIQ_OK, "rendered, the reference failed with: %s", ref_error ? ref_error : "?");
                /* the template's own raise_exception text comes through */
                const char *msg = ref_error ? strstr(ref_error, "TemplateError: ") : NULL;
                if (st != OPTIQ_OK && msg) CHECKF(strstr(re.message, msg + 15) != NULL, "message [%s] lacks [%s]", re.message, msg + 15);
            }
            if (!t_case_failed) ok++;
        }
        rendered += expected != NULL;
        free(prompt);
        free(msgs);
        free(opts);
        jv_unref(rec);
    }
    snprintf(label, sizeof label, "chat %s: all conversations match transformers", name);
    for (TEST_CASE(label)) CHECKF(ok == total && rendered >= 50, "%d of %d match; %d rendered by the reference", ok, total, rendered);
    printf("chat %s: %d/%d conversations match (%d rendered, %d expected failures)\n", name, ok, total, rendered,
           total - rendered);
    optiq_chat_template_free(t);
    free(text);
}

/* ---- malformed input ---- */

static char root[256];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static const char *folder(const char *name, const char *file, const char *content) {
    static char dir[400];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    mkdir(dir, 0755);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
    return dir;
}

static void expect_load_error(const char *label, const char *dir, const char *want) {
    optiq_error e = {0};
    optiq_chat_template *t = NULL;
    optiq_status st = optiq_chat_template_load(dir, &t, &e);
    for (TEST_CASE(label)) {
        CHECK(st != OPTIQ_OK && t == NULL);
        CHECKF(strstr(e.message, want) != NULL, "message [%s] lacks [%s]", e.message, want);
    }
    optiq_chat_template_free(t);
}

static void expect_render_error(const char *label, const optiq_chat_template *t, const char *msgs, const char *opts,
                                const char *want) {
    optiq_error e = {0};
    char *prompt = NULL;
    optiq_status st = optiq_chat_template_render(t, msgs, strlen(msgs), opts, &prompt, NULL, &e);
    for (TEST_CASE(label)) {
        CHECK(st != OPTIQ_OK && prompt == NULL);
        CHECKF(strstr(e.message, want) != NULL, "message [%s] lacks [%s]", e.message, want);
    }
    free(prompt);
}

static void malformed(void) {
    snprintf(root, sizeof root, "/tmp/optiq_test_chat_%d", (int)getpid());
    mkdir(root, 0755);
    expect_load_error("malformed template: line number in the message",
                      folder("bad1", "chat_template.jinja", "{% for m in messages %}\n{{ m.content }\n{% endfor %}\n"),
                      "chat_template.jinja: line 2");
    expect_load_error("malformed template: unclosed block",
                      folder("bad2", "chat_template.jinja", "{% if messages %}\nhello\n"), "expected 'endif'");
    expect_load_error("malformed tokenizer_config.json",
                      folder("bad3", "tokenizer_config.json", "{\"chat_template\": \"{{ x }}\",}"),
                      "tokenizer_config.json: line 1");
    expect_load_error("folder without a template", folder("bad4", "config.json", "{\"model_type\": \"qwen3\"}"),
                      "no chat template");

    /* named templates: tool_use picked when tools are given */
    const char *dir = folder("named", "tokenizer_config.json",
                             "{\"bos_token\": {\"content\": \"<s>\"}, \"chat_template\": ["
                             "{\"name\": \"default\", \"template\": \"{{ bos_token }}D{{ messages|length }}\"},"
                             "{\"name\": \"tool_use\", \"template\": \"{{ bos_token }}T{{ tools|length }}\"}]}");
    optiq_error e = {0};
    optiq_chat_template *t = NULL;
    for (TEST_CASE("named templates: default and tool_use")) {
        CHECKF(optiq_chat_template_load(dir, &t, &e) == OPTIQ_OK, "%s", e.message);
        if (!t) break;
        CHECK(strcmp(optiq_chat_template_source(t), "tokenizer_config.json") == 0);
        const char *m = "[{\"role\": \"user\", \"content\": \"hi\"}]";
        char *p = NULL;
        CHECK(optiq_chat_template_render(t, m, strlen(m), NULL, &p, NULL, &e) == OPTIQ_OK && p && strcmp(p, "<s>D1") == 0);
        free(p);
        p = NULL;
        CHECK(optiq_chat_template_render(t, m, strlen(m), "{\"tools\": [{\"a\": 1}, {\"b\": 2}]}", &p, NULL, &e) == OPTIQ_OK &&
              p && strcmp(p, "<s>T2") == 0);
        free(p);
    }
    optiq_chat_template_free(t);

    t = NULL;
    const char *chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";
    optiq_chat_template_from_string(chatml, strlen(chatml), "somefamily", NULL, &t, &e);
    for (TEST_CASE("template from a string")) CHECK(t != NULL && strcmp(optiq_chat_template_source(t), "string") == 0);
    if (t) {
        expect_render_error("malformed messages JSON: line and column", t, "[{\"role\": \"user\", \"content\": \"hi\"", NULL,
                            "messages: line 1 column");
        expect_render_error("messages not an array", t, "\"hello\"", NULL, "messages must be a JSON array");
        expect_render_error("empty conversation", t, "[]", NULL, "empty conversation");
        expect_render_error("message not an object", t, "[\"hi\"]", NULL, "messages[0] is not an object");
        expect_render_error("request body without messages", t, "{\"model\": \"x\"}", NULL, "without a \"messages\"");
        expect_render_error("malformed options", t, "[{\"role\": \"user\", \"content\": \"hi\"}]", "{\"tools\": ", "options: line 1");
        expect_render_error("options not an object", t, "[{\"role\": \"user\", \"content\": \"hi\"}]", "[1]", "options: expected a JSON object");
        expect_render_error("tools not an array", t, "[{\"role\": \"user\", \"content\": \"hi\"}]", "{\"tools\": 5}", "tools: expected an array");
        expect_render_error("image with no placeholder known", t,
                            "[{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}]}]",
                            NULL, "no image placeholder");
        expect_render_error("unsupported content part", t,
                            "[{\"role\": \"user\", \"content\": [{\"type\": \"input_audio\"}]}]", NULL,
                            "unsupported part type 'input_audio'");
        for (TEST_CASE("image placeholder option and request body form")) {
            const char *m = "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a \"}, "
                            "{\"type\": \"image_url\", \"image_url\": {\"url\": \"x\"}}, {\"type\": \"text\", \"text\": \" b\"}]}]}";
            char *p = NULL;
            CHECKF(optiq_chat_template_render(t, m, strlen(m), "{\"image_placeholder\": \"<IMG>\"}", &p, NULL, &e) == OPTIQ_OK,
                   "%s", e.message);
            CHECKF(p && strcmp(p, "<|im_start|>user\na <IMG> b<|im_end|>\n") == 0, "got %s", p ? p : "(null)");
            free(p);
        }
    }
    optiq_chat_template_free(t);
    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void preparation(void) {
    for (TEST_CASE("prepare: nulls, image_url, string arguments, reasoning aliases")) {
        const char *src =
            "[{\"role\": \"assistant\", \"content\": null, \"name\": null, \"reasoning\": \"r\","
            " \"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1.0}\"}},"
            " {\"function\": {\"name\": \"g\", \"arguments\": \"not json\"}}]},"
            " {\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"u\"}}, {\"type\": \"image\"}]}]";
        jval *in = NULL, *out = NULL;
        optiq_error e = {0};
        CHECK(jv_from_json(src, strlen(src), "t", &in, &e) == OPTIQ_OK);
        CHECKF(chat_prepare_messages(in, 0, NULL, &out, &e) == OPTIQ_OK, "%s", e.message);
        char *s = out ? jv_to_json(out, NULL) : NULL;
        const char *want =
            "[{\"thinking\": \"r\", \"role\": \"assistant\", \"content\": \"\", \"reasoning\": \"r\", \"tool_calls\": "
            "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"x\": 1.0}}}, "
            "{\"function\": {\"name\": \"g\", \"arguments\": \"not json\"}}], \"reasoning_content\": \"r\"}, "
            "{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"url\": \"u\"}, {\"type\": \"image\"}]}]";
        CHECKF(s && strcmp(s, want) == 0, "got %s", s ? s : "(null)");
        free(s);
        jv_unref(in);
        jv_unref(out);
    }
    for (TEST_CASE("family placeholders")) {
        CHECK(strcmp(chat_family_placeholder("qwen3_5_moe"), "<|vision_start|><|image_pad|><|vision_end|>") == 0);
        CHECK(strcmp(chat_family_placeholder("gemma3"), "<start_of_image>") == 0);
        CHECK(strcmp(chat_family_placeholder("gemma4"), "<|image|>") == 0);
        CHECK(chat_family_placeholder("phi3") == NULL);
    }
}

/* ---- one template rendered by several threads at once ---- */

typedef struct render_job {
    const optiq_chat_template *t;
    const char *want;
    int bad;
} render_job;

static void *render_many(void *arg) {
    render_job *j = arg;
    static const char MSGS[] = "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                               "[{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"Hi?\"}]}]";
    for (int i = 0; i < 300; i++) {
        char *p = NULL;
        optiq_error e;
        if (optiq_chat_template_render(j->t, MSGS, strlen(MSGS), "{\"add_generation_prompt\": true}", &p, NULL, &e) ||
            strcmp(p, j->want) != 0)
            j->bad++;
        optiq_free(p);
    }
    return NULL;
}

static void concurrent(void) {
    for (TEST_CASE("one loaded template rendered by 4 threads at once gives the same text every time")) {
        optiq_chat_template *t = NULL;
        optiq_error e;
        CHECKF(optiq_chat_template_load(test_path("tests/fixtures/models/qwen35-vl-mixed"), &t, &e) == OPTIQ_OK, "%s",
               e.message);
        if (!t) continue;
        render_job jobs[4];
        char *want = NULL;
        static const char MSGS[] = "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                                   "[{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"Hi?\"}]}]";
        CHECK(optiq_chat_template_render(t, MSGS, strlen(MSGS), "{\"add_generation_prompt\": true}", &want, NULL, &e) ==
              OPTIQ_OK);
        pthread_t th[4];
        for (int i = 0; i < 4 && want; i++) {
            jobs[i] = (render_job){t, want, 0};
            pthread_create(&th[i], NULL, render_many, &jobs[i]);
        }
        for (int i = 0; i < 4 && want; i++) {
            pthread_join(th[i], NULL);
            CHECKF(jobs[i].bad == 0, "thread %d: %d renders differ or fail", i, jobs[i].bad);
        }
        optiq_free(want);
        optiq_chat_template_free(t);
    }
}

int main(void) {
    for (int i = 0; TEMPLATES[i]; i++) conversations(TEMPLATES[i]);
    malformed();
    preparation();
    concurrent();
    return test_finish();
}
