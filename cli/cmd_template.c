/*
 * cmd_template.c — `optiq template --model DIR --messages FILE`: render a
 * conversation with the model's chat template, to see exactly what the model
 * is given.
 *
 * The messages file holds an OpenAI-style messages array (or a request body
 * with "messages"); "-" reads standard input. Without --json the prompt is
 * printed as is, with nothing added; with --json a document
 *   {"prompt": ..., "template_source": ..., "ids": [...], "n_tokens": N}
 * where the ids (the prompt encoded without adding special tokens, as
 * apply_chat_template(tokenize=True) does) are there when the folder has a
 * tokenizer.json.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq template --model DIR --messages FILE [options]\n\n"
            "Render a conversation with the model's chat template (chat_template.jinja,\n"
            "chat_template.json or tokenizer_config.json), byte for byte as transformers'\n"
            "apply_chat_template does, and print the prompt.\n\n"
            "Options:\n"
            "  --model DIR               model folder (only the tokenizer files and config.json are read)\n"
            "  --messages FILE           JSON array of messages, or a request body with \"messages\"; - for stdin\n"
            "  --tools FILE              JSON array of tool definitions\n"
            "  --no-generation-prompt    do not open an assistant turn at the end\n"
            "  --enable-thinking BOOL    pass enable_thinking=true|false to the template\n"
            "  --kwargs JSON             more template variables, e.g. '{\"add_vision_id\": true}'\n"
            "  --json                    print {\"prompt\", \"template_source\", \"ids\", \"n_tokens\"}\n"
            "  --help                    show this help\n");
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n - 1, f);
        if (got == 0) break;
        n += got;
    }
    if (f != stdin) fclose(f);
    if (b) b[n] = 0;
    *len = n;
    return b;
}

/* Options JSON for the library from the flags. The tools and kwargs texts go
 * in as written (only checked here), so numbers keep their exact form: the
 * template may print them back, and 1.0 must stay 1.0. */
static char *build_options(int gen_prompt, const char *thinking, const char *tools_text, const char *kwargs_text,
                           const char **bad) {
    *bad = NULL;
    if (tools_text) {
        cJSON *t = cJSON_Parse(tools_text);
        int ok = cJSON_IsArray(t);
        cJSON_Delete(t);
        if (!ok) *bad = "--tools: expected a JSON array of tool definitions";
    }
    if (kwargs_text) {
        cJSON *k = cJSON_Parse(kwargs_text);
        int ok = cJSON_IsObject(k);
        cJSON_Delete(k);
        if (!ok) *bad = "--kwargs: expected a JSON object";
    }
    if (*bad) return NULL;
    size_t n = 128 + (tools_text ? strlen(tools_text) : 0) + (kwargs_text ? strlen(kwargs_text) : 0);
    char *o = malloc(n);
    if (!o) return NULL;
    int k = snprintf(o, n, "{\"add_generation_prompt\": %s", gen_prompt ? "true" : "false");
    if (thinking) k += snprintf(o + k, n - (size_t)k, ", \"enable_thinking\": %s", thinking);
    if (tools_text) k += snprintf(o + k, n - (size_t)k, ", \"tools\": %s", tools_text);
    if (kwargs_text) k += snprintf(o + k, n - (size_t)k, ", \"chat_template_kwargs\": %s", kwargs_text);
    snprintf(o + k, n - (size_t)k, "}");
    return o;
}

static int add_ids(cJSON *doc, const char *dir, const char *prompt, size_t len) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (stat(path, &sb) != 0) return 0;
    optiq_error err;
    optiq_tokenizer *tok = NULL;
    if (optiq_tokenizer_load(dir, &tok, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    if (optiq_tokenizer_encode(tok, prompt, len, 0, &ids, &n, &err) != OPTIQ_OK) rc = cli_fail("%s", err.message);
    else {
        cJSON *arr = cJSON_AddArrayToObject(doc, "ids");
        for (size_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        cJSON_AddNumberToObject(doc, "n_tokens", (double)n);
    }
    optiq_free(ids);
    optiq_tokenizer_free(tok);
    return rc;
}

int cmd_template(int argc, char **argv) {
    enum { O_MODEL = 1, O_MESSAGES, O_TOOLS, O_NOGEN, O_THINK, O_KWARGS, O_JSON };
    static const struct option opts[] = {{"model", required_argument, 0, O_MODEL},
                                         {"messages", required_argument, 0, O_MESSAGES},
                                         {"tools", required_argument, 0, O_TOOLS},
                                         {"no-generation-prompt", no_argument, 0, O_NOGEN},
                                         {"enable-thinking", required_argument, 0, O_THINK},
                                         {"kwargs", required_argument, 0, O_KWARGS},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *messages = NULL, *tools = NULL, *thinking = NULL, *kwargs = NULL;
    int gen_prompt = 1, json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_MESSAGES: messages = optarg; break;
        case O_TOOLS: tools = optarg; break;
        case O_NOGEN: gen_prompt = 0; break;
        case O_THINK:
            if (strcmp(optarg, "true") != 0 && strcmp(optarg, "false") != 0)
                return cli_usage_error("template", "--enable-thinking takes true or false, not '%s'", optarg);
            thinking = optarg;
            break;
        case O_KWARGS: kwargs = optarg; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_usage_error("template", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) return cli_usage_error("template", "unexpected argument '%s'", argv[optind]);
    if (!model || !messages) return cli_usage_error("template", "--model and --messages are required");

    size_t mlen = 0, tlen = 0;
    char *mtext = read_all(messages, &mlen);
    if (!mtext) return cli_fail("%s: cannot read", messages);
    char *ttext = tools ? read_all(tools, &tlen) : NULL;
    if (tools && !ttext) {
        free(mtext);
        return cli_fail("%s: cannot read", tools);
    }
    const char *bad = NULL;
    char *options = build_options(gen_prompt, thinking, ttext, kwargs, &bad);
    free(ttext);
    if (!options) {
        free(mtext);
        return bad ? cli_usage_error("template", "%s", bad) : cli_fail("out of memory");
    }

    optiq_error err;
    optiq_chat_template *t = NULL;
    char *prompt = NULL;
    size_t plen = 0;
    int rc = 0;
    if (optiq_chat_template_load(model, &t, &err) != OPTIQ_OK ||
        optiq_chat_template_render(t, mtext, mlen, options, &prompt, &plen, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
    } else if (!json) {
        fwrite(prompt, 1, plen, stdout);
    } else {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "prompt", prompt);
        cJSON_AddStringToObject(doc, "template_source", optiq_chat_template_source(t));
        rc = add_ids(doc, model, prompt, plen);
        char *s = rc ? NULL : cJSON_PrintUnformatted(doc);
        if (s) printf("%s\n", s);
        else if (!rc) rc = cli_fail("out of memory");
        free(s);
        cJSON_Delete(doc);
    }
    optiq_free(prompt);
    optiq_chat_template_free(t);
    free(options);
    free(mtext);
    return rc;
}
