/*
 * test_api.c — the server's request/response layer (src/server/api*.c):
 * valid requests of every kind, malformed and hostile bodies with their
 * status and error JSON, the response objects' exact keys, the SSE event
 * order and the reasoning splitter across every piece boundary.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "test.h"

/* ---- helpers ---- */

static int parse(api_kind k, const char *body, api_request *r, api_error *e) {
    return api_parse_request(k, body, strlen(body), NULL, r, e);
}

/* 1 when obj has exactly the comma-separated keys, in any order. */
static int keys_are(const cJSON *obj, const char *list) {
    if (!cJSON_IsObject(obj)) return 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    int n = 0;
    for (char *save = NULL, *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save), n++)
        if (!cJSON_GetObjectItemCaseSensitive(obj, k)) return 0;
    return cJSON_GetArraySize(obj) == n;
}

static const char *str_at(const cJSON *root, const char *a, const char *b) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, a);
    if (b) j = cJSON_GetObjectItemCaseSensitive(j, b);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static double num_at(const cJSON *root, const char *a, const char *b) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, a);
    if (b) j = cJSON_GetObjectItemCaseSensitive(j, b);
    return cJSON_IsNumber(j) ? j->valuedouble : -12345;
}

/* messages_json equals the expected JSON text. */
static int same_json(const char *got, const char *want) {
    cJSON *a = cJSON_Parse(got), *b = cJSON_Parse(want);
    int same = a && b && cJSON_Compare(a, b, 1);
    if (!same) fprintf(stderr, "got  %s\nwant %s\n", got ? got : "(null)", want);
    cJSON_Delete(a);
    cJSON_Delete(b);
    return same;
}

/* The error body of e in the kind's format has the right shape and fields;
 * returns NULL when it does or a reason. */
static const char *check_error_body(api_kind k, const api_error *e) {
    static char why[256];
    char *s = api_error_json(api_kind_is_anthropic(k), e);
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    const char *bad = NULL;
    if (!j) bad = "error body does not parse";
    else if (api_kind_is_anthropic(k)) {
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "error");
        const char *want_type = e->http_status == 413 ? "request_too_large" : "invalid_request_error";
        if (!keys_are(j, "type,error") || !keys_are(in, "type,message")) bad = "anthropic error keys";
        else if (strcmp(str_at(j, "type", NULL), "error") != 0) bad = "anthropic type != error";
        else if (!str_at(in, "type", NULL) || strcmp(str_at(in, "type", NULL), want_type) != 0) bad = "anthropic error.type";
        else if (strcmp(str_at(in, "message", NULL), e->message) != 0) bad = "anthropic message differs";
    } else {
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *param = cJSON_GetObjectItemCaseSensitive(in, "param");
        if (!keys_are(j, "error") || !keys_are(in, "message,type,param,code")) bad = "openai error keys";
        else if (!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(in, "code"))) bad = "openai code not null";
        else if (strcmp(str_at(in, "type", NULL), "invalid_request_error") != 0) bad = "openai type";
        else if (strcmp(str_at(in, "message", NULL), e->message) != 0) bad = "openai message differs";
        else if (e->param[0] ? !cJSON_IsString(param) || strcmp(param->valuestring, e->param) != 0 : !cJSON_IsNull(param))
            bad = "openai param";
    }
    cJSON_Delete(j);
    free(s);
    if (bad) snprintf(why, sizeof why, "%s", bad);
    return bad ? why : NULL;
}

/* ---- valid requests ---- */

static void test_openai_chat(void) {
    for (TEST_CASE("openai chat: every key parsed")) {
        const char *body =
            "{\"model\":\"m1\",\"messages\":["
            "{\"role\":\"developer\",\"content\":\"be brief\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0KGgo=\"}},"
            "{\"type\":\"image_url\",\"image_url\":\"HTTPS://example.com/a.jpg\"}]},"
            "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
            "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}],"
            "\"max_tokens\":10,\"max_completion_tokens\":20,\"temperature\":0.7,\"top_p\":0.9,\"top_k\":40,"
            "\"min_p\":0.05,\"seed\":7,\"stop\":[\"END\",\"###\"],\"presence_penalty\":0.5,"
            "\"frequency_penalty\":-0.5,\"repetition_penalty\":1.1,\"stream\":true,"
            "\"stream_options\":{\"include_usage\":true},\"chat_template_kwargs\":{\"enable_thinking\":false},"
            "\"n\":1,\"user\":\"ignored\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}";
        api_request r;
        api_error e;
        int rc = parse(API_OPENAI_CHAT, body, &r, &e);
        CHECKF(rc == 0, "rc %d: %s", rc, e.message);
        if (rc) break;
        CHECK(r.model && !strcmp(r.model, "m1"));
        CHECK(same_json(r.messages_json,
                        "[{\"role\":\"system\",\"content\":\"be brief\"},"
                        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},{\"type\":\"image\"},"
                        "{\"type\":\"image\"}]},"
                        "{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
                        "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                        "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"}]"));
        CHECK(r.n_images == 2 && !strcmp(r.images[0], "data:image/png;base64,iVBORw0KGgo=") &&
              !strcmp(r.images[1], "https://example.com/a.jpg"));
        CHECK(r.max_tokens == 20);
        CHECK(r.sampling.temperature == 0.7f && r.sampling.top_p == 0.9f && r.sampling.top_k == 40);
        CHECK(r.sampling.min_p == 0.05f && r.sampling.seed == 7);
        CHECK(r.sampling.presence_penalty == 0.5f && r.sampling.frequency_penalty == -0.5f);
        CHECK(r.sampling.repetition_penalty == 1.1f);
        CHECK(r.n_stop == 2 && !strcmp(r.stop[0], "END") && !strcmp(r.stop[1], "###"));
        CHECK(r.stream == 1 && r.include_usage == 1);
        CHECK(r.chat_template_kwargs_json && same_json(r.chat_template_kwargs_json, "{\"enable_thinking\":false}"));
        CHECK(r.tools_json && same_json(r.tools_json, "[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]"));
        CHECK(r.prompt == NULL);
        api_request_free(&r);
    }
    for (TEST_CASE("openai chat: minimal request gets greedy defaults")) {
        api_request r;
        api_error e;
        int rc = parse(API_OPENAI_CHAT, " {\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n", &r, &e);
        CHECKF(rc == 0, "%s", e.message);
        if (rc) break;
        optiq_sampling d = optiq_sampling_default();
        CHECK(!memcmp(&r.sampling, &d, sizeof d));
        CHECK(r.model == NULL && r.max_tokens == 0 && r.n_stop == 0 && r.stream == 0 && r.n_images == 0);
        CHECK(r.chat_template_kwargs_json == NULL && r.tools_json == NULL);
        CHECK(same_json(r.messages_json, "[{\"role\":\"user\",\"content\":\"hi\"}]"));
        api_request_free(&r);
    }
    for (TEST_CASE("openai chat: stop as a string, nulls are absent, top_k -1 is off")) {
        api_request r;
        api_error e;
        int rc = parse(API_OPENAI_CHAT,
                       "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":\"bob\"}],\"stop\":\"\\n\","
                       "\"temperature\":null,\"top_k\":-1,\"stream_options\":null,\"seed\":-1}",
                       &r, &e);
        CHECKF(rc == 0, "%s", e.message);
        if (rc) break;
        CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "\n"));
        CHECK(r.sampling.temperature == 0 && r.sampling.top_k == 0 && r.sampling.seed == UINT64_MAX);
        CHECK(same_json(r.messages_json, "[{\"role\":\"user\",\"content\":\"x\",\"name\":\"bob\"}]"));
        api_request_free(&r);
    }
}

static void test_openai_completion(void) {
    for (TEST_CASE("openai completions: prompt string and one-string list")) {
        api_request r;
        api_error e;
        int rc = parse(API_OPENAI_COMPLETION,
                       "{\"model\":\"m\",\"prompt\":\"Once upon\",\"max_tokens\":5,\"temperature\":1.5,\"stop\":[\".\"],"
                       "\"stream\":true}",
                       &r, &e);
        CHECKF(rc == 0, "%s", e.message);
        if (rc) break;
        CHECK(r.prompt && !strcmp(r.prompt, "Once upon") && r.messages_json == NULL);
        CHECK(r.max_tokens == 5 && r.sampling.temperature == 1.5f && r.n_stop == 1 && r.stream == 1);
        api_request_free(&r);
        rc = parse(API_OPENAI_COMPLETION, "{\"prompt\":[\"abc\"]}", &r, &e);
        CHECK(rc == 0 && r.prompt && !strcmp(r.prompt, "abc"));
        api_request_free(&r);
    }
}

static void test_anthropic(void) {
    for (TEST_CASE("anthropic messages: every key parsed")) {
        const char *body =
            "{\"model\":\"claude-x\",\"max_tokens\":64,\"system\":[{\"type\":\"text\",\"text\":\"A\"},"
            "{\"type\":\"text\",\"text\":\"B\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
            "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\","
            "\"media_type\":\"image/jpeg\",\"data\":\"/9j/4AAQ\"}},{\"type\":\"text\",\"text\":\"what?\"},"
            "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"http://127.0.0.1:9/x.png\"}}]},"
            "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\",\"signature\":\"s\"},"
            "{\"type\":\"text\",\"text\":\"a cat\"}]},"
            "{\"role\":\"user\",\"content\":\"sure?\"}],"
            "\"stop_sequences\":[\"\\n\\nHuman:\"],\"temperature\":0.5,\"top_p\":0.8,\"top_k\":5,\"stream\":true,"
            "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048},\"metadata\":{\"user_id\":\"u\"}}";
        api_request r;
        api_error e;
        int rc = parse(API_ANTHROPIC_MESSAGES, body, &r, &e);
        CHECKF(rc == 0, "rc %d: %s", rc, e.message);
        if (rc) break;
        CHECK(r.model && !strcmp(r.model, "claude-x") && r.max_tokens == 64);
        CHECK(same_json(r.messages_json,
                        "[{\"role\":\"system\",\"content\":\"A\\nB\"},"
                        "{\"role\":\"user\",\"content\":[{\"type\":\"image\"},{\"type\":\"text\",\"text\":\"what?\"},"
                        "{\"type\":\"image\"}]},"
                        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a cat\"}],"
                        "\"reasoning_content\":\"hmm\"},"
                        "{\"role\":\"user\",\"content\":\"sure?\"}]"));
        CHECK(r.n_images == 2 && !strcmp(r.images[0], "data:image/jpeg;base64,/9j/4AAQ") &&
              !strcmp(r.images[1], "http://127.0.0.1:9/x.png"));
        CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "\n\nHuman:"));
        CHECK(r.sampling.temperature == 0.5f && r.sampling.top_p == 0.8f && r.sampling.top_k == 5);
        CHECK(r.stream == 1 && r.include_usage == 1);
        CHECK(r.chat_template_kwargs_json && same_json(r.chat_template_kwargs_json, "{\"enable_thinking\":true}"));
        api_request_free(&r);
    }
    for (TEST_CASE("anthropic: string system, thinking disabled, count_tokens without max_tokens")) {
        api_request r;
        api_error e;
        int rc = parse(API_ANTHROPIC_MESSAGES,
                       "{\"max_tokens\":1,\"system\":\"S\",\"thinking\":{\"type\":\"disabled\"},"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                       &r, &e);
        CHECKF(rc == 0, "%s", e.message);
        if (rc) break;
        CHECK(same_json(r.messages_json,
                        "[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"hi\"}]"));
        CHECK(same_json(r.chat_template_kwargs_json, "{\"enable_thinking\":false}"));
        CHECK(r.stream == 0 && r.max_tokens == 1);
        api_request_free(&r);
        rc = parse(API_ANTHROPIC_COUNT_TOKENS, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                   &r, &e);
        CHECKF(rc == 0, "%s", e.message);
        CHECK(r.max_tokens == 0 && r.messages_json != NULL);
        api_request_free(&r);
    }
}

/* ---- malformed and hostile bodies ---- */

typedef struct bad_case {
    api_kind kind;
    const char *body;
    int status;
    const char *param; /* expected param ("" none) */
} bad_case;

#define OC API_OPENAI_CHAT
#define OP API_OPENAI_COMPLETION
#define AM API_ANTHROPIC_MESSAGES
#define AC API_ANTHROPIC_COUNT_TOKENS
#define U1 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define AU "\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":"

static const bad_case BAD[] = {
    {OC, "", 400, ""},
    {OC, "{", 400, ""},
    {OC, "{\"messages\":[}", 400, ""},
    {OC, "{\"messages\":[]} trailing", 400, ""},
    {OC, "[1,2]", 400, ""},
    {OC, "\"just a string\"", 400, ""},
    {OC, "{\"messages\":\"hi\"}", 400, "messages"},
    {OC, "{}", 400, "messages"},
    {OC, "{\"messages\":[]}", 400, "messages"},
    {OC, "{\"messages\":[42]}", 400, "messages[0]"},
    {OC, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OC, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OC, "{\"messages\":[{\"role\":7,\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OC, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[]}]}", 400, "messages[0].content"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[\"x\"]}]}", 400, "messages[0].content[0]"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}", 400, "messages[0].content[0]"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":3}]}]}", 400,
     "messages[0].content[0]"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
     "messages[0].content[0].image_url"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":1}}]}]}", 400,
     "messages[0].content[0].image_url.url"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"file:///etc/passwd\"}}]}]}",
     400, "messages[0].content[0].image_url.url"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"data:image/png;base64,@@@@\"}]}]}",
     400, "messages[0].content[0].image_url"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"data:image/png,rawbytes\"}]}]}",
     400, "messages[0].content[0].image_url"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"data:text/html;base64,QUJD\"}]}]}",
     400, "messages[0].content[0].image_url"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"http:///nohost\"}]}]}",
     400, "messages[0].content[0].image_url"},
    {OC, "{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"https://a.b/c.png\"}]}]}",
     400, "messages[0].content[0]"},
    {OC, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":{}}]}", 400, "messages[0].tool_calls"},
    {OC, "{" U1 ",\"n\":2}", 400, "n"},
    {OC, "{" U1 ",\"n\":\"1\"}", 400, "n"},
    {OC, "{" U1 ",\"max_tokens\":-1}", 400, "max_tokens"},
    {OC, "{" U1 ",\"max_tokens\":0}", 400, "max_tokens"},
    {OC, "{" U1 ",\"max_tokens\":1.5}", 400, "max_tokens"},
    {OC, "{" U1 ",\"max_tokens\":1e300}", 400, "max_tokens"},
    {OC, "{" U1 ",\"max_completion_tokens\":\"10\"}", 400, "max_completion_tokens"},
    {OC, "{" U1 ",\"temperature\":-0.1}", 400, "temperature"},
    {OC, "{" U1 ",\"temperature\":\"hot\"}", 400, "temperature"},
    {OC, "{" U1 ",\"top_p\":1.5}", 400, "top_p"},
    {OC, "{" U1 ",\"top_p\":-0.01}", 400, "top_p"},
    {OC, "{" U1 ",\"top_k\":-2}", 400, "top_k"},
    {OC, "{" U1 ",\"min_p\":2}", 400, "min_p"},
    {OC, "{" U1 ",\"presence_penalty\":3}", 400, "presence_penalty"},
    {OC, "{" U1 ",\"frequency_penalty\":[]}", 400, "frequency_penalty"},
    {OC, "{" U1 ",\"repetition_penalty\":-1}", 400, "repetition_penalty"},
    {OC, "{" U1 ",\"seed\":0.5}", 400, "seed"},
    {OC, "{" U1 ",\"stop\":[\"a\",3]}", 400, "stop"},
    {OC, "{" U1 ",\"stop\":[\"\"]}", 400, "stop"},
    {OC, "{" U1 ",\"stop\":7}", 400, "stop"},
    {OC, "{" U1 ",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
     400, "stop"},
    {OC, "{" U1 ",\"stream\":\"yes\"}", 400, "stream"},
    {OC, "{" U1 ",\"stream_options\":true}", 400, "stream_options"},
    {OC, "{" U1 ",\"stream_options\":{\"include_usage\":1}}", 400, "stream_options.include_usage"},
    {OC, "{" U1 ",\"chat_template_kwargs\":\"enable_thinking\"}", 400, "chat_template_kwargs"},
    {OC, "{" U1 ",\"tools\":{}}", 400, "tools"},
    {OC, "{" U1 ",\"model\":42}", 400, "model"},
    {OC, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}", 400, ""},
    {OP, "{}", 400, "prompt"},
    {OP, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt"},
    {OP, "{\"prompt\":[1,2,3]}", 400, "prompt"},
    {OP, "{\"prompt\":{}}", 400, "prompt"},
    {OP, "{\"prompt\":\"x\",\"n\":3}", 400, "n"},
    {AM, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400, "max_tokens"},
    {AM, "{\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400, "max_tokens"},
    {AM, "{\"max_tokens\":5}", 400, "messages"},
    {AM, "{\"max_tokens\":5,\"messages\":[]}", 400, "messages"},
    {AM, "{\"max_tokens\":5,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", 400, "messages[0].role"},
    {AM, "{" AU "[]}]}", 400, "messages[0].content"},
    {AM, "{" AU "null}]}", 400, "messages[0].content"},
    {AM, "{" AU "[{\"type\":\"tool_use\",\"id\":\"x\"}]}]}", 400, "messages[0].content[0]"},
    {AM, "{" AU "[{\"type\":\"image\"}]}]}", 400, "messages[0].content[0].source"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"not base64!\"}}]}]}",
     400, "messages[0].content[0].source.data"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"QUJ\"}}]}]}",
     400, "messages[0].content[0].source.data"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"-_-_\"}}]}]}",
     400, "messages[0].content[0].source.data"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"\"}}]}]}",
     400, "messages[0].content[0].source.data"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/tiff\",\"data\":\"QUJD\"}}]}]}",
     400, "messages[0].content[0].source"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"file:///etc/passwd\"}}]}]}", 400,
     "messages[0].content[0].source.url"},
    {AM, "{" AU "[{\"type\":\"image\",\"source\":{\"type\":\"file\",\"file_id\":\"f\"}}]}]}", 400,
     "messages[0].content[0].source"},
    {AM, "{\"max_tokens\":5,\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://a/b\"}}]}]}",
     400, "messages[0].content[0]"},
    {AM, "{\"max_tokens\":5,\"system\":[{\"type\":\"image\",\"source\":{}}]," U1 "}", 400, "system[0]"},
    {AM, "{\"max_tokens\":5,\"system\":7," U1 "}", 400, "system"},
    {AM, "{\"max_tokens\":5,\"stop_sequences\":\"x\"," U1 "}", 400, "stop_sequences"},
    {AM, "{\"max_tokens\":5,\"stop_sequences\":[null]," U1 "}", 400, "stop_sequences"},
    {AM, "{\"max_tokens\":5,\"temperature\":1.5," U1 "}", 400, "temperature"},
    {AM, "{\"max_tokens\":5,\"top_k\":-1," U1 "}", 400, "top_k"},
    {AM, "{\"max_tokens\":5,\"thinking\":true," U1 "}", 400, "thinking"},
    {AM, "{\"max_tokens\":5,\"thinking\":{\"type\":\"maybe\"}," U1 "}", 400, "thinking.type"},
    {AM, "{\"max_tokens\":5,\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":\"x\"}," U1 "}", 400,
     "thinking.budget_tokens"},
    {AC, "{\"messages\":{}}", 400, "messages"},
    {AC, "nul", 400, ""},
};

static void test_bad_bodies(void) {
    for (TEST_CASE("malformed and hostile bodies: status, param and error JSON")) {
        size_t n = sizeof BAD / sizeof BAD[0];
        CHECKF(n >= 40, "only %zu cases", n);
        for (size_t i = 0; i < n; i++) {
            api_request r;
            api_error e;
            int rc = parse(BAD[i].kind, BAD[i].body, &r, &e);
            CHECKF(rc == BAD[i].status && e.http_status == rc, "case %zu (%s): rc %d (%s)", i, BAD[i].body, rc,
                   rc ? e.message : "accepted");
            CHECKF(!strcmp(e.param, BAD[i].param), "case %zu: param \"%s\", want \"%s\" (%s)", i, e.param,
                   BAD[i].param, e.message);
            CHECKF(e.message[0] != 0, "case %zu: empty message", i);
            CHECKF(r.messages_json == NULL && r.images == NULL && r.stop == NULL && r.model == NULL,
                   "case %zu: request not left empty", i);
            const char *why = check_error_body(BAD[i].kind, &e);
            CHECKF(!why, "case %zu: %s", i, why);
            if (rc == 0) api_request_free(&r);
        }
        printf("     (%zu bad bodies)\n", n);
    }
    for (TEST_CASE("audio input: a clear \"audio input is not supported\" 400 in both APIs")) {
        static const struct { api_kind kind; const char *body; } AUDIO[] = {
            {OC, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":"
                 "{\"data\":\"AAAA\",\"format\":\"wav\"}}]}]}"},
            {AM, "{" AU "[{\"type\":\"audio\",\"source\":{\"type\":\"base64\",\"data\":\"AAAA\"}}]}]}"},
        };
        for (size_t i = 0; i < 2; i++) {
            api_request r;
            api_error e;
            CHECK(parse(AUDIO[i].kind, AUDIO[i].body, &r, &e) == 400);
            CHECKF(strstr(e.message, "audio input is not supported") != NULL, "%s", e.message);
            CHECK(!strcmp(e.param, "messages[0].content[0]"));
        }
    }
}

/* Builds a body with `depth` nested arrays inside a message's content. */
static char *deep_body(int depth) {
    size_t n = (size_t)depth * 2 + 128;
    char *b = malloc(n), *p = b;
    p += sprintf(p, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"extra\":");
    for (int i = 0; i < depth; i++) *p++ = '[';
    for (int i = 0; i < depth; i++) *p++ = ']';
    sprintf(p, "}]}");
    return b;
}

static void test_limits(void) {
    for (TEST_CASE("limits: nesting depth, body size, image count, invalid UTF-8")) {
        api_request r;
        api_error e;
        char *b = deep_body(60);
        int rc = parse(OC, b, &r, &e);
        CHECKF(rc == 0, "60 levels (+3) rejected: %s", e.message);
        api_request_free(&r);
        free(b);
        b = deep_body(100000);
        rc = parse(OC, b, &r, &e);
        CHECK(rc == 400 && strstr(e.message, "deeper than 64"));
        CHECK(!check_error_body(OC, &e));
        free(b);
        /* brackets inside strings do not count */
        rc = parse(OC, "{\"messages\":[{\"role\":\"user\",\"content\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                       "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"{{{{{\"}]}",
                   &r, &e);
        CHECKF(rc == 0, "brackets in a string: %s", e.message);
        api_request_free(&r);

        api_limits lim = api_limits_default();
        CHECK(lim.max_body == 32u << 20 && lim.max_depth == 64 && lim.max_images == 32);
        lim.max_body = 64;
        const char *big = "{\"messages\":[{\"role\":\"user\",\"content\":\"0123456789012345678901234567890123456789\"}]}";
        rc = api_parse_request(AM, big, strlen(big), &lim, &r, &e);
        CHECK(rc == 413 && e.http_status == 413);
        CHECK(!check_error_body(AM, &e));
        CHECK(!check_error_body(OC, &e));
        char *s = api_error_json(1, &e);
        CHECK(s && strstr(s, "\"request_too_large\""));
        free(s);

        /* a huge string within the limit parses */
        size_t hn = 4u << 20;
        char *huge = malloc(hn + 64);
        int k = sprintf(huge, "{\"prompt\":\"");
        memset(huge + k, 'a', hn);
        strcpy(huge + k + hn, "\"}");
        rc = api_parse_request(OP, huge, strlen(huge), NULL, &r, &e);
        CHECK(rc == 0 && r.prompt && strlen(r.prompt) == hn);
        api_request_free(&r);
        lim = api_limits_default();
        lim.max_body = 1u << 20;
        rc = api_parse_request(OP, huge, strlen(huge), &lim, &r, &e);
        CHECK(rc == 413);
        free(huge);

        /* 33 images */
        char *many = malloc(33 * 80 + 128), *p = many;
        p += sprintf(p, "{\"messages\":[{\"role\":\"user\",\"content\":[");
        for (int i = 0; i < 33; i++)
            p += sprintf(p, "%s{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://h/%d.png\"}}", i ? "," : "", i);
        sprintf(p, "]}]}");
        rc = parse(OC, many, &r, &e);
        CHECK(rc == 400 && strstr(e.message, "too many images"));
        lim = api_limits_default();
        lim.max_images = 40;
        rc = api_parse_request(OC, many, strlen(many), &lim, &r, &e);
        CHECK(rc == 0 && r.n_images == 33 && !strcmp(r.images[32], "https://h/32.png"));
        api_request_free(&r);
        free(many);

        const char bad_utf8[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}";
        rc = parse(OC, bad_utf8, &r, &e);
        CHECK(rc == 400 && strstr(e.message, "UTF-8"));
        /* a quoted value cut inside a UTF-8 sequence leaves the message well-formed */
        rc = parse(OC, "{\"messages\":[{\"role\":\"012345678901234567890123456789012345678\xc3\xa9\",\"content\":\"x\"}]}",
                   &r, &e);
        CHECK(rc == 400 && strstr(e.message, "unknown role \"012345678901234567890123456789012345678\"") &&
              !strchr(e.message, '\xc3'));
        const char overlong[] = "{\"prompt\":\"\xc0\xaf\"}";
        rc = parse(OP, overlong, &r, &e);
        CHECK(rc == 400);
        /* a NUL inside the body ends nothing early: the JSON is incomplete */
        rc = api_parse_request(OC, "{\"messages\":[]}\0xx", 18, NULL, &r, &e);
        CHECK(rc == 400);
        rc = api_parse_request(OC, NULL, 0, NULL, &r, &e);
        CHECK(rc == 400);
    }
}

/* ---- responses ---- */

static void test_responses(void) {
    api_result res = {.id = "chatcmpl-1", .created = 1700000000, .model = "tiny", .text = "Hello",
                      .reasoning = "think", .finish_reason = "length", .prompt_tokens = 12, .completion_tokens = 3};
    for (TEST_CASE("raw control bytes inside strings (NUL, newline) are refused; escaped ones pass")) {
        api_request r;
        api_error e;
        const char nul[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}]}";
        int rc = api_parse_request(OC, nul, sizeof nul - 1, NULL, &r, &e);
        CHECKF(rc == 400 && strstr(e.message, "control character 0x00"), "%d %s", rc, e.message);
        rc = parse(AM, "{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"a\nb\"}]}", &r, &e);
        CHECKF(rc == 400 && strstr(e.message, "control character 0x0a"), "%d %s", rc, e.message);
        rc = parse(OC, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\\n\"}]}\n", &r, &e);
        CHECKF(rc == 0, "escaped: %s", e.message);
        api_request_free(&r);
    }

    for (TEST_CASE("openai chat.completion object")) {
        char *s = api_openai_chat_response(&res);
        cJSON *j = cJSON_Parse(s);
        CHECK(keys_are(j, "id,object,created,model,choices,usage"));
        CHECK(!strcmp(str_at(j, "object", NULL), "chat.completion") && num_at(j, "created", NULL) == 1700000000);
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK(keys_are(ch, "index,message,logprobs,finish_reason"));
        CHECK(!strcmp(str_at(ch, "finish_reason", NULL), "length"));
        const cJSON *m = cJSON_GetObjectItem(ch, "message");
        CHECK(keys_are(m, "role,content,reasoning_content"));
        CHECK(!strcmp(str_at(m, "content", NULL), "Hello") && !strcmp(str_at(m, "reasoning_content", NULL), "think"));
        const cJSON *u = cJSON_GetObjectItem(j, "usage");
        CHECK(keys_are(u, "prompt_tokens,completion_tokens,total_tokens") && num_at(u, "total_tokens", NULL) == 15);
        cJSON_Delete(j);
        free(s);
        api_result r2 = res;
        r2.reasoning = NULL;
        r2.finish_reason = "abort";
        s = api_openai_chat_response(&r2);
        j = cJSON_Parse(s);
        ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK(keys_are(cJSON_GetObjectItem(ch, "message"), "role,content"));
        CHECK(!strcmp(str_at(ch, "finish_reason", NULL), "stop"));
        cJSON_Delete(j);
        free(s);
        r2.cached_tokens = 4; /* reused from the prefix cache: OpenAI's prompt_tokens_details */
        s = api_openai_chat_response(&r2);
        j = cJSON_Parse(s);
        const cJSON *u2 = cJSON_GetObjectItem(j, "usage");
        CHECK(keys_are(u2, "prompt_tokens,completion_tokens,total_tokens,prompt_tokens_details") &&
              num_at(u2, "prompt_tokens_details", "cached_tokens") == 4 && num_at(u2, "total_tokens", NULL) == 15);
        cJSON_Delete(j);
        free(s);
    }
    for (TEST_CASE("openai text_completion object")) {
        char *s = api_openai_completion_response(&res);
        cJSON *j = cJSON_Parse(s);
        CHECK(keys_are(j, "id,object,created,model,choices,usage"));
        CHECK(!strcmp(str_at(j, "object", NULL), "text_completion"));
        const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK(keys_are(ch, "text,index,logprobs,finish_reason") && !strcmp(str_at(ch, "text", NULL), "Hello"));
        cJSON_Delete(j);
        free(s);
    }
    for (TEST_CASE("anthropic message object and stop reasons")) {
        api_result r = res;
        r.id = "msg_1";
        r.finish_reason = "stop";
        r.stop_sequence = "END";
        char *s = api_anthropic_message_response(&r);
        cJSON *j = cJSON_Parse(s);
        CHECK(keys_are(j, "id,type,role,model,content,stop_reason,stop_sequence,usage"));
        CHECK(!strcmp(str_at(j, "type", NULL), "message") && !strcmp(str_at(j, "role", NULL), "assistant"));
        CHECK(!strcmp(str_at(j, "stop_reason", NULL), "stop_sequence") && !strcmp(str_at(j, "stop_sequence", NULL), "END"));
        const cJSON *c = cJSON_GetObjectItem(j, "content");
        CHECK(cJSON_GetArraySize(c) == 2);
        CHECK(keys_are(cJSON_GetArrayItem(c, 0), "type,thinking,signature"));
        CHECK(!strcmp(str_at(cJSON_GetArrayItem(c, 0), "thinking", NULL), "think"));
        CHECK(keys_are(cJSON_GetArrayItem(c, 1), "type,text") && !strcmp(str_at(cJSON_GetArrayItem(c, 1), "text", NULL), "Hello"));
        const cJSON *u = cJSON_GetObjectItem(j, "usage");
        CHECK(keys_are(u, "input_tokens,output_tokens") && num_at(u, "input_tokens", NULL) == 12 &&
              num_at(u, "output_tokens", NULL) == 3);
        cJSON_Delete(j);
        free(s);
        CHECK(!strcmp(api_anthropic_stop_reason("length", NULL), "max_tokens"));
        CHECK(!strcmp(api_anthropic_stop_reason("stop", NULL), "end_turn"));
        CHECK(!strcmp(api_anthropic_stop_reason("abort", NULL), "end_turn"));
        r.reasoning = NULL;
        r.stop_sequence = NULL;
        s = api_anthropic_message_response(&r);
        j = cJSON_Parse(s);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "content")) == 1);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "stop_sequence")) && !strcmp(str_at(j, "stop_reason", NULL), "end_turn"));
        cJSON_Delete(j);
        free(s);
        s = api_anthropic_count_tokens_response(99);
        j = cJSON_Parse(s);
        CHECK(keys_are(j, "input_tokens") && num_at(j, "input_tokens", NULL) == 99);
        cJSON_Delete(j);
        free(s);
    }
    for (TEST_CASE("models list with input_modalities")) {
        for (int vision = 0; vision < 2; vision++) {
            char *s = api_models_response("tiny", 5, vision);
            cJSON *j = cJSON_Parse(s);
            CHECK(keys_are(j, "object,data") && !strcmp(str_at(j, "object", NULL), "list"));
            const cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0);
            CHECK(keys_are(m, "id,object,created,owned_by,input_modalities") && !strcmp(str_at(m, "id", NULL), "tiny"));
            const cJSON *mods = cJSON_GetObjectItem(m, "input_modalities");
            CHECK(cJSON_GetArraySize(mods) == 1 + vision && !strcmp(cJSON_GetArrayItem(mods, 0)->valuestring, "text"));
            if (vision) CHECK(!strcmp(cJSON_GetArrayItem(mods, 1)->valuestring, "image"));
            cJSON_Delete(j);
            free(s);
        }
    }
    for (TEST_CASE("error bodies for non-400 statuses")) {
        api_error e;
        api_error_set(&e, 401, NULL, "bad key");
        char *s = api_error_json(1, &e);
        cJSON *j = cJSON_Parse(s);
        CHECK(!strcmp(str_at(j, "error", "type"), "authentication_error"));
        cJSON_Delete(j);
        free(s);
        api_error_set(&e, 500, NULL, "boom %d", 1);
        s = api_error_json(0, &e);
        j = cJSON_Parse(s);
        CHECK(!strcmp(str_at(j, "error", "type"), "server_error") && !strcmp(str_at(j, "error", "message"), "boom 1"));
        cJSON_Delete(j);
        free(s);
        s = api_error_json(1, &e);
        j = cJSON_Parse(s);
        CHECK(!strcmp(str_at(j, "error", "type"), "api_error"));
        cJSON_Delete(j);
        free(s);
    }
}

/* ---- SSE sequences ---- */

/* Splits SSE text into events; returns the count, names[] (event: lines or
 * "") and data[] parsed (NULL for [DONE]). */
typedef struct sse_ev {
    char name[32];
    cJSON *data;
    int done;
} sse_ev;

static int sse_split(const char *text, sse_ev *ev, int max) {
    int n = 0;
    const char *p = text;
    while (*p && n < max) {
        const char *end = strstr(p, "\n\n");
        if (!end) return -1;
        sse_ev *e = &ev[n++];
        memset(e, 0, sizeof *e);
        if (!strncmp(p, "event: ", 7)) {
            const char *nl = strchr(p, '\n');
            snprintf(e->name, sizeof e->name, "%.*s", (int)(nl - p - 7), p + 7);
            p = nl + 1;
        }
        if (strncmp(p, "data: ", 6) != 0) return -1;
        p += 6;
        if (!strncmp(p, "[DONE]", 6) && p + 6 == end) e->done = 1;
        else if (!(e->data = cJSON_ParseWithLength(p, (size_t)(end - p)))) return -1;
        p = end + 2;
    }
    return n;
}

static char *collect(char *acc, char *piece) {
    size_t a = acc ? strlen(acc) : 0, b = strlen(piece);
    acc = realloc(acc, a + b + 1);
    memcpy(acc + a, piece, b + 1);
    free(piece);
    return acc;
}

static void test_streams(void) {
    for (TEST_CASE("openai chat stream: role, reasoning, content, finish, usage, [DONE]")) {
        api_stream s;
        api_stream_init(&s, OC, "chatcmpl-9", 77, "tiny", 10, 1);
        char *all = collect(NULL, api_stream_begin(&s));
        all = collect(all, api_stream_delta(&s, "hm", 2, NULL, 0));
        all = collect(all, api_stream_delta(&s, NULL, 0, "Hi", 2));
        all = collect(all, api_stream_delta(&s, NULL, 0, NULL, 0));
        all = collect(all, api_stream_end(&s, "stop", NULL, 4));
        sse_ev ev[16];
        int n = sse_split(all, ev, 16);
        CHECKF(n == 6, "%d events:\n%s", n, all);
        if (n == 6) {
            for (int i = 0; i < 5; i++) {
                CHECK(keys_are(ev[i].data, i < 4 ? "id,object,created,model,choices,usage" : "id,object,created,model,choices,usage"));
                CHECK(!strcmp(str_at(ev[i].data, "object", NULL), "chat.completion.chunk"));
                CHECK(!strcmp(str_at(ev[i].data, "id", NULL), "chatcmpl-9") && ev[i].name[0] == 0);
            }
            const cJSON *d0 = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ev[0].data, "choices"), 0), "delta");
            CHECK(!strcmp(str_at(d0, "role", NULL), "assistant"));
            const cJSON *c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[1].data, "choices"), 0);
            CHECK(!strcmp(str_at(c1, "delta", "reasoning_content"), "hm") && cJSON_IsNull(cJSON_GetObjectItem(c1, "finish_reason")));
            const cJSON *c2 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[2].data, "choices"), 0);
            CHECK(!strcmp(str_at(c2, "delta", "content"), "Hi"));
            CHECK(cJSON_IsNull(cJSON_GetObjectItem(ev[2].data, "usage")));
            const cJSON *c3 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[3].data, "choices"), 0);
            CHECK(!strcmp(str_at(c3, "finish_reason", NULL), "stop") && keys_are(cJSON_GetObjectItem(c3, "delta"), ""));
            CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(ev[4].data, "choices")) == 0);
            CHECK(num_at(ev[4].data, "usage", "total_tokens") == 14);
            CHECK(ev[5].done);
        }
        for (int i = 0; i < (n > 0 ? n : 0); i++) cJSON_Delete(ev[i].data);
        free(all);
    }
    for (TEST_CASE("openai chat stream without usage; completions stream")) {
        api_stream s;
        api_stream_init(&s, OC, "c", 1, "m", 1, 0);
        char *all = collect(NULL, api_stream_begin(&s));
        all = collect(all, api_stream_delta(&s, NULL, 0, "x", 1));
        all = collect(all, api_stream_end(&s, "length", NULL, 1));
        sse_ev ev[8];
        int n = sse_split(all, ev, 8);
        CHECKF(n == 4 && ev[3].done, "%d events", n);
        for (int i = 0; i < 3 && n == 4; i++) CHECK(keys_are(ev[i].data, "id,object,created,model,choices"));
        for (int i = 0; i < (n > 0 ? n : 0); i++) cJSON_Delete(ev[i].data);
        free(all);

        api_stream_init(&s, OP, "cmpl-1", 1, "m", 2, 1);
        all = collect(NULL, api_stream_begin(&s));
        CHECK(all[0] == 0);
        all = collect(all, api_stream_delta(&s, NULL, 0, "ab", 2));
        all = collect(all, api_stream_end(&s, "stop", NULL, 1));
        n = sse_split(all, ev, 8);
        CHECKF(n == 4, "%d events", n);
        if (n == 4) {
            CHECK(!strcmp(str_at(ev[0].data, "object", NULL), "text_completion"));
            const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[0].data, "choices"), 0);
            CHECK(keys_are(c0, "text,index,logprobs,finish_reason") && !strcmp(str_at(c0, "text", NULL), "ab"));
            const cJSON *c1 = cJSON_GetArrayItem(cJSON_GetObjectItem(ev[1].data, "choices"), 0);
            CHECK(!strcmp(str_at(c1, "finish_reason", NULL), "stop"));
            CHECK(num_at(ev[2].data, "usage", "completion_tokens") == 1 && ev[3].done);
        }
        for (int i = 0; i < (n > 0 ? n : 0); i++) cJSON_Delete(ev[i].data);
        free(all);
    }
    for (TEST_CASE("anthropic stream: the SDK's event order with thinking and text blocks")) {
        api_stream s;
        api_stream_init(&s, AM, "msg_1", 0, "tiny", 8, 0);
        char *all = collect(NULL, api_stream_begin(&s));
        all = collect(all, api_stream_delta(&s, "a", 1, NULL, 0));
        all = collect(all, api_stream_delta(&s, "b", 1, "c", 1));
        all = collect(all, api_stream_delta(&s, NULL, 0, "d", 1));
        all = collect(all, api_stream_end(&s, "length", NULL, 5));
        static const char *want[] = {"message_start", "content_block_start", "content_block_delta",
                                     "content_block_delta", "content_block_stop", "content_block_start",
                                     "content_block_delta", "content_block_delta", "content_block_stop",
                                     "message_delta", "message_stop"};
        sse_ev ev[16];
        int n = sse_split(all, ev, 16);
        CHECKF(n == 11, "%d events:\n%s", n, all);
        for (int i = 0; i < n && n == 11; i++) {
            CHECKF(!strcmp(ev[i].name, want[i]), "event %d is %s, want %s", i, ev[i].name, want[i]);
            CHECKF(!strcmp(str_at(ev[i].data, "type", NULL), want[i]), "event %d data type", i);
        }
        if (n == 11) {
            const cJSON *m = cJSON_GetObjectItem(ev[0].data, "message");
            CHECK(keys_are(m, "id,type,role,model,content,stop_reason,stop_sequence,usage"));
            CHECK(num_at(m, "usage", "input_tokens") == 8 && cJSON_GetArraySize(cJSON_GetObjectItem(m, "content")) == 0);
            CHECK(num_at(ev[1].data, "index", NULL) == 0 && !strcmp(str_at(ev[1].data, "content_block", "type"), "thinking"));
            CHECK(!strcmp(str_at(ev[2].data, "delta", "type"), "thinking_delta") &&
                  !strcmp(str_at(ev[2].data, "delta", "thinking"), "a"));
            CHECK(num_at(ev[4].data, "index", NULL) == 0);
            CHECK(num_at(ev[5].data, "index", NULL) == 1 && !strcmp(str_at(ev[5].data, "content_block", "type"), "text"));
            CHECK(!strcmp(str_at(ev[6].data, "delta", "type"), "text_delta") && !strcmp(str_at(ev[6].data, "delta", "text"), "c"));
            CHECK(!strcmp(str_at(ev[7].data, "delta", "text"), "d") && num_at(ev[8].data, "index", NULL) == 1);
            CHECK(!strcmp(str_at(ev[9].data, "delta", "stop_reason"), "max_tokens"));
            CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(ev[9].data, "delta"), "stop_sequence")));
            CHECK(num_at(ev[9].data, "usage", "output_tokens") == 5);
        }
        for (int i = 0; i < (n > 0 ? n : 0); i++) cJSON_Delete(ev[i].data);
        free(all);
    }
    for (TEST_CASE("anthropic stream with no text still has one text block")) {
        api_stream s;
        api_stream_init(&s, AM, "msg_2", 0, "tiny", 1, 0);
        char *all = collect(NULL, api_stream_begin(&s));
        all = collect(all, api_stream_end(&s, "stop", "END", 0));
        sse_ev ev[8];
        int n = sse_split(all, ev, 8);
        CHECKF(n == 5, "%d events", n);
        if (n == 5) {
            CHECK(!strcmp(ev[1].name, "content_block_start") && !strcmp(ev[2].name, "content_block_stop"));
            CHECK(!strcmp(str_at(ev[3].data, "delta", "stop_reason"), "stop_sequence"));
            CHECK(!strcmp(str_at(ev[3].data, "delta", "stop_sequence"), "END"));
        }
        for (int i = 0; i < (n > 0 ? n : 0); i++) cJSON_Delete(ev[i].data);
        free(all);
    }
}


int main(void) {
    test_openai_chat();
    test_openai_completion();
    test_anthropic();
    test_bad_bodies();
    test_limits();
    test_responses();
    test_streams();
    return test_finish();
}
