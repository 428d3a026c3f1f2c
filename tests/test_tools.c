/*
 * test_tools.c — tool calls in the Qwen3.5 and Gemma-4 syntaxes
 * (server/tools.h): parsing into name + JSON arguments with the content
 * around them, what streaming may show before a call, the grammar of a
 * forced call (every document it accepts parses back into a call with
 * arguments of the declared types), Gemma's folding of tool results, and
 * the request keys and response shapes of the API layer (server/api.h):
 * response_format, tools, tool_choice, logprobs, tool_use / tool_result.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/tools.h"
#include "test.h"

/* Parse a request body; returns the HTTP status (0: ok) and fills r (freed by the caller). */
static int parse(api_kind kind, const char *body, api_request *r, api_error *e) {
    return api_parse_request(kind, body, strlen(body), NULL, r, e);
}

static const char *TOOLS =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"},\"hourly\":{\"type\":\"boolean\"},"
    "\"zip\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{\"type\":\"object\",\"properties\":{}}}}]";

static int args_equal(const char *got, const char *want) {
    cJSON *a = cJSON_Parse(got), *b = cJSON_Parse(want);
    int eq = a && b && cJSON_Compare(a, b, 1);
    cJSON_Delete(a), cJSON_Delete(b);
    return eq;
}

int main(void) {
    cJSON *tools = cJSON_Parse(TOOLS);
    for (TEST_CASE("qwen: XML call with typed parameters and content before it")) {
        const char *t = "Let me check.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
                        "<parameter=days>\n3\n</parameter>\n<parameter=zip>\n10001\n</parameter>\n"
                        "<parameter=hourly>\ntrue\n</parameter>\n</function>\n</tool_call>";
        tool_parse p;
        CHECK(tools_parse(TOOLS_QWEN, t, strlen(t), tools, "call_x", &p) == 0);
        CHECK(p.n_calls == 1);
        if (p.n_calls == 1) {
            CHECK(!strcmp(p.calls[0].name, "get_weather"));
            CHECK(!strcmp(p.calls[0].id, "call_x_0"));
            CHECKF(args_equal(p.calls[0].arguments, "{\"city\":\"New York\",\"days\":3,\"zip\":\"10001\",\"hourly\":true}"),
                   "%s", p.calls[0].arguments);
        }
        CHECKF(!strcmp(p.content, "Let me check.\n\n"), "%s", p.content);
        tools_parse_free(&p);
    }
    for (TEST_CASE("qwen: JSON form, two calls, text that is not a call stays")) {
        const char *t = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n"
                        "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>"
                        " and <tool_call>oops</tool_call>";
        tool_parse p;
        CHECK(tools_parse(TOOLS_QWEN, t, strlen(t), tools, "call_y", &p) == 0);
        CHECK(p.n_calls == 2);
        if (p.n_calls == 2) {
            CHECK(!strcmp(p.calls[0].name, "get_time") && args_equal(p.calls[0].arguments, "{}"));
            CHECK(!strcmp(p.calls[1].name, "get_weather") && args_equal(p.calls[1].arguments, "{\"city\":\"Oslo\"}"));
            CHECK(!strcmp(p.calls[1].id, "call_y_1"));
        }
        CHECKF(!strcmp(p.content, "\n and <tool_call>oops</tool_call>"), "%s", p.content);
        tools_parse_free(&p);
    }
    for (TEST_CASE("gemma: call with <|\"|> strings, numbers, nested values")) {
        const char *t = "<|tool_call>call:get_weather{city:<|\"|>Paris, \"FR\"<|\"|>,days:2,opts:{a:[1,true,null]}}"
                        "<tool_call|>done";
        tool_parse p;
        CHECK(tools_parse(TOOLS_GEMMA, t, strlen(t), tools, "call_z", &p) == 0);
        CHECK(p.n_calls == 1);
        if (p.n_calls == 1)
            CHECKF(args_equal(p.calls[0].arguments,
                              "{\"city\":\"Paris, \\\"FR\\\"\",\"days\":2,\"opts\":{\"a\":[1,true,null]}}"),
                   "%s", p.calls[0].arguments);
        CHECKF(!strcmp(p.content, "done"), "%s", p.content);
        tools_parse_free(&p);
        const char *bad = "<|tool_call>call:get_weather{city:Paris}<tool_call|>";
        CHECK(tools_parse(TOOLS_GEMMA, bad, strlen(bad), tools, "call_z", &p) == 0);
        CHECK(p.n_calls == 0 && !strcmp(p.content, bad));
        tools_parse_free(&p);
    }
    for (TEST_CASE("streaming holds back a possible call start")) {
        CHECK(tools_safe_prefix(TOOLS_QWEN, "Hello <tool", 11) == 6);
        CHECK(tools_safe_prefix(TOOLS_QWEN, "Hello <tool_call>\n<f", 20) == 6);
        CHECK(tools_safe_prefix(TOOLS_QWEN, "Hello world", 11) == 11);
        CHECK(tools_safe_prefix(TOOLS_GEMMA, "ok <|", 5) == 3);
        CHECK(tools_safe_prefix(TOOLS_GEMMA, "a < b", 5) == 5);
    }
    for (TEST_CASE("forced-call grammar: accepted documents parse back")) {
        for (int syn = 0; syn < 2; syn++) {
            grammar *g = grammar_new();
            optiq_error err = {0};
            CHECKF(tools_grammar((tool_syntax)syn, tools, NULL, g, &err) == OPTIQ_OK, "%s", err.message);
            const char *doc = syn == TOOLS_QWEN
                                  ? "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n"
                                    "<parameter=days>\n12\n</parameter>\n</function>\n</tool_call>"
                                  : "<|tool_call>call:get_weather{city:<|\"|>Rome<|\"|>,days:12}<tool_call|>";
            grammar_state st;
            grammar_start(g, &st);
            CHECKF(grammar_feed(g, &st, (const uint8_t *)doc, strlen(doc)) && grammar_complete(g, &st), "syntax %d", syn);
            tool_parse p;
            CHECK(tools_parse((tool_syntax)syn, doc, strlen(doc), tools, "call_g", &p) == 0);
            CHECK(p.n_calls == 1 && p.n_calls && args_equal(p.calls[0].arguments, "{\"city\":\"Rome\",\"days\":12}"));
            CHECK(p.content && !p.content[0]);
            tools_parse_free(&p);
            grammar_free(g);
            g = grammar_new();
            CHECK(tools_grammar((tool_syntax)syn, tools, "get_time", g, &err) == OPTIQ_OK);
            grammar_start(g, &st);
            CHECK(!grammar_feed(g, &st, (const uint8_t *)doc, strlen(doc)));
            grammar_free(g);
            g = grammar_new();
            CHECK(tools_grammar((tool_syntax)syn, tools, "nope", g, &err) == OPTIQ_ERR_INVALID_ARG &&
                  strstr(err.message, "nope"));
            grammar_free(g);
        }
    }
    for (TEST_CASE("gemma: tool messages fold into the assistant's tool_responses")) {
        const char *m = "[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":"
                        "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{}\"}}]},"
                        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"{\\\"temp\\\": 20}\"},"
                        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"plain\"}]";
        char *out = tools_fold_results_gemma(m);
        cJSON *j = out ? cJSON_Parse(out) : NULL;
        CHECK(cJSON_GetArraySize(j) == 2);
        cJSON *tr = cJSON_GetObjectItem(cJSON_GetArrayItem(j, 1), "tool_responses");
        CHECK(cJSON_GetArraySize(tr) == 2);
        char *trs = cJSON_PrintUnformatted(tr);
        CHECKF(trs && args_equal(trs, "[{\"name\":\"get_weather\",\"response\":{\"temp\":20}},"
                                      "{\"name\":\"get_weather\",\"response\":\"plain\"}]"),
               "%s", out);
        free(trs);
        cJSON_Delete(j);
        free(out);
    }
    for (TEST_CASE("api: response_format, tool_choice and logprobs keys")) {
        api_request r;
        api_error e;
        CHECK(parse(API_OPENAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                    "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"schema\":{\"type\":\"object\"}}},"
                    "\"logprobs\":true,\"top_logprobs\":4}", &r, &e) == 0);
        CHECK(r.response_format == API_FORMAT_JSON_SCHEMA && r.schema_json && strstr(r.schema_json, "object"));
        CHECK(r.logprobs == 1 && r.top_logprobs == 4);
        api_request_free(&r);
        CHECK(parse(API_OPENAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":2}", &r, &e) == 0);
        CHECK(r.logprobs == 1 && r.top_logprobs == 2);
        api_request_free(&r);
        CHECK(parse(API_OPENAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[],"
                    "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}", &r, &e) == 0);
        CHECK(r.tool_choice == API_TOOLS_NAMED && !strcmp(r.tool_choice_name, "f"));
        api_request_free(&r);
        const char *bad[][2] = {
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"xml\"}}",
             "response_format.type"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\"}}",
             "response_format.json_schema"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}", "top_logprobs"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}",
             "top_logprobs"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"always\"}", "tool_choice"},
            {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", "tool_choice"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            int st = parse(API_OPENAI_CHAT, bad[i][0], &r, &e);
            CHECKF(st == 400 && !strcmp(e.param, bad[i][1]), "%s: %d %s (%s)", bad[i][0], st, e.param, e.message);
            api_request_free(&r);
        }
    }
    for (TEST_CASE("api: anthropic tools, tool_use and tool_result become OpenAI messages")) {
        api_request r;
        api_error e;
        const char *body =
            "{\"max_tokens\":9,\"tools\":[{\"name\":\"w\",\"input_schema\":{\"type\":\"object\"}}],"
            "\"tool_choice\":{\"type\":\"tool\",\"name\":\"w\"},\"messages\":["
            "{\"role\":\"user\",\"content\":\"hi\"},"
            "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"},"
            "{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"w\",\"input\":{\"c\":1}}]},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":"
            "[{\"type\":\"text\",\"text\":\"20\"}]},{\"type\":\"text\",\"text\":\"and?\"}]}]}";
        CHECK(parse(API_ANTHROPIC_MESSAGES, body, &r, &e) == 0);
        CHECK(r.tool_choice == API_TOOLS_NAMED && r.tools_json && strstr(r.tools_json, "\"parameters\""));
        cJSON *m = cJSON_Parse(r.messages_json);
        CHECKF(cJSON_GetArraySize(m) == 4, "%s", r.messages_json);
        cJSON *a = cJSON_GetArrayItem(m, 1), *t = cJSON_GetArrayItem(m, 2), *u = cJSON_GetArrayItem(m, 3);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(a, "tool_calls")) == 1);
        CHECK(!strcmp(cJSON_GetObjectItem(t, "role")->valuestring, "tool") &&
              !strcmp(cJSON_GetObjectItem(t, "tool_call_id")->valuestring, "t1") &&
              !strcmp(cJSON_GetObjectItem(t, "content")->valuestring, "20"));
        CHECK(!strcmp(cJSON_GetObjectItem(u, "role")->valuestring, "user"));
        cJSON_Delete(m);
        api_request_free(&r);
        CHECK(parse(API_ANTHROPIC_MESSAGES, "{\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"tool_choice\":{\"type\":\"any\"}}", &r, &e) == 400);
        api_request_free(&r);
    }
    for (TEST_CASE("api: responses carry tool calls and logprobs")) {
        const char *calls = "[{\"id\":\"call_1\",\"name\":\"w\",\"arguments\":\"{\\\"c\\\":1}\"}]";
        api_result res = {.id = "x", .model = "m", .text = "", .finish_reason = "tool_calls", .tool_calls_json = calls,
                          .logprobs_json = "[{\"token\":\"a\",\"logprob\":-0.5,\"bytes\":[97],\"top_logprobs\":[]}]"};
        char *o = api_openai_chat_response(&res);
        cJSON *j = cJSON_Parse(o);
        cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), *msg = cJSON_GetObjectItem(ch, "message");
        CHECKF(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")), "%s", o);
        cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0);
        CHECK(tc && !strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "arguments")->valuestring, "{\"c\":1}"));
        CHECK(!strcmp(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "tool_calls"));
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "content")) == 1);
        cJSON_Delete(j);
        free(o);
        o = api_anthropic_message_response(&res);
        j = cJSON_Parse(o);
        cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "content"), 0);
        CHECKF(!strcmp(cJSON_GetObjectItem(c0, "type")->valuestring, "tool_use") &&
                   cJSON_GetObjectItem(cJSON_GetObjectItem(c0, "input"), "c"),
               "%s", o);
        CHECK(!strcmp(cJSON_GetObjectItem(j, "stop_reason")->valuestring, "tool_use"));
        cJSON_Delete(j);
        free(o);
        api_stream s;
        api_stream_init(&s, API_ANTHROPIC_MESSAGES, "x", 0, "m", 1, 0);
        free(api_stream_begin(&s));
        o = api_stream_tool_calls(&s, calls);
        CHECKF(o && strstr(o, "input_json_delta") && strstr(o, "\"tool_use\""), "%s", o);
        free(o);
        o = api_stream_end(&s, "tool_calls", NULL, 3);
        CHECKF(o && strstr(o, "\"tool_use\"") && !strstr(o, "text_delta") && !strstr(o, "\"type\":\"text\""), "%s", o);
        free(o);
    }
    cJSON_Delete(tools);
    return test_finish();
}
