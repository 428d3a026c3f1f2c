/*
 * cmd_generate.c — `optiq generate --model DIR --prompt TEXT`: one reply to
 * one prompt, streamed to stdout as it is generated (or one JSON object at
 * the end with --json).
 *
 * The prompt goes through the folder's chat template (optional --system
 * message, then the user's text, generation prompt opened) and is encoded
 * without adding special tokens, as mlx_lm generate does; --no-chat-template
 * (or a folder without a template) encodes the text as is, with the
 * tokenizer's special tokens, as mlx_lm generate --ignore-chat-template does.
 * Also home of the options generate and chat share (cli.h).
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- options shared with chat -------------------------------------------- */

const char CLI_GEN_OPTIONS_HELP[] =
    "  --model DIR                 model folder (config.json, model*.safetensors, tokenizer files)\n"
    "  --system TEXT               system message (chat template only)\n"
    "  --max-tokens N              most tokens to generate (default 256; 0: until EOS or the context is full)\n"
    "  --temp T                    sampling temperature (default 0: greedy)\n"
    "  --top-p P                   nucleus sampling threshold (0 or 1: off)\n"
    "  --top-k K                   keep the K most likely tokens (0: off)\n"
    "  --min-p P                   drop tokens below P x the top probability (0: off)\n"
    "  --repetition-penalty R      penalize the last 20 tokens (0 or 1: off)\n"
    "  --seed S                    random seed (default 0); the same seed gives the same tokens\n"
    "  --stop STR                  stop before this text (may be repeated)\n"
    "  --ctx N                     context length in tokens (default: the model's maximum)\n"
    "  --threads N                 threads (default: physical cores)\n"
    "  --ignore-eos                keep generating past end-of-sequence tokens\n"
    "  --exact                     f32 activations in every product (default: the fast path, docs/parity.md)\n"
    "  --chat-template-kwargs JSON template variables, e.g. '{\"enable_thinking\": false}' (default: thinking\n"
    "                              on when the model has thinking markers, off with images)\n";

int cli_gen_opts_init(cli_gen_opts *o, int argc) {
    memset(o, 0, sizeof *o);
    o->engine = optiq_engine_default();
    o->gen = optiq_generate_default();
    o->stop = calloc((size_t)argc + 1, sizeof *o->stop);
    return o->stop == NULL;
}

void cli_gen_opts_free(cli_gen_opts *o) {
    free(o->stop);
    o->stop = NULL;
}

int cli_gen_option(const char *cmd, int code, const char *arg, cli_gen_opts *o) {
    long long i;
    double d;
    optiq_sampling *s = &o->gen.sampling;
    switch (code) {
    case CLI_O_MODEL: o->model = arg; return 0;
    case CLI_O_SYSTEM: o->system = arg; return 0;
    case CLI_O_MAX_TOKENS:
        if (cli_parse_int(cmd, "--max-tokens", arg, 0, 1 << 30, &i)) return 2;
        o->gen.max_tokens = (int)i;
        return 0;
    case CLI_O_TEMP:
        if (cli_parse_double(cmd, "--temp", arg, 0, 1e6, &d)) return 2;
        s->temperature = (float)d;
        return 0;
    case CLI_O_TOP_P:
        if (cli_parse_double(cmd, "--top-p", arg, 0, 1, &d)) return 2;
        s->top_p = (float)d;
        return 0;
    case CLI_O_TOP_K:
        if (cli_parse_int(cmd, "--top-k", arg, 0, 1 << 30, &i)) return 2;
        s->top_k = (int)i;
        return 0;
    case CLI_O_MIN_P:
        if (cli_parse_double(cmd, "--min-p", arg, 0, 1, &d)) return 2;
        s->min_p = (float)d;
        return 0;
    case CLI_O_REP:
        if (cli_parse_double(cmd, "--repetition-penalty", arg, 0, 1e6, &d)) return 2;
        s->repetition_penalty = (float)d;
        return 0;
    case CLI_O_SEED:
        if (cli_parse_int(cmd, "--seed", arg, 0, INT64_MAX, &i)) return 2;
        s->seed = (uint64_t)i;
        return 0;
    case CLI_O_STOP:
        if (!*arg) return cli_usage_error(cmd, "--stop takes a non-empty string");
        o->stop[o->n_stop++] = arg;
        o->gen.stop = o->stop;
        o->gen.n_stop = o->n_stop;
        return 0;
    case CLI_O_CTX:
        if (cli_parse_int(cmd, "--ctx", arg, 1, INT64_MAX, &i)) return 2;
        o->engine.context = i;
        return 0;
    case CLI_O_THREADS:
        if (cli_parse_int(cmd, "--threads", arg, 1, 4096, &i)) return 2;
        o->engine.n_threads = (int)i;
        return 0;
    case CLI_O_IGNORE_EOS: o->gen.ignore_eos = 1; return 0;
    case CLI_O_EXACT: o->engine.exact = 1; return 0;
    case CLI_O_TMPL_KWARGS:
        if (cli_check_template_kwargs(cmd, arg)) return 2;
        o->template_kwargs = arg;
        return 0;
    }
    return -1;
}

int cli_check_template_kwargs(const char *cmd, const char *arg) {
    cJSON *kw = cJSON_Parse(arg);
    int ok = cJSON_IsObject(kw);
    cJSON_Delete(kw);
    if (ok) return 0;
    return cli_usage_error(cmd, "--chat-template-kwargs must be a JSON object, got: %s", arg);
}

char *cli_template_options(const optiq_engine *e, const char *template_kwargs, size_t n_images) {
    cJSON *o = cJSON_CreateObject(), *kw = template_kwargs ? cJSON_Parse(template_kwargs) : NULL;
    char *text = NULL;
    if (o && cJSON_AddBoolToObject(o, "add_generation_prompt", 1) &&
        cJSON_AddBoolToObject(o, "enable_thinking", !n_images && optiq_engine_has_thinking(e))) {
        int ok = 1;
        for (cJSON *it = cJSON_IsObject(kw) ? kw->child : NULL; it && ok; it = it->next) {
            cJSON *dup = cJSON_Duplicate(it, 1);
            ok = dup != NULL;
            if (ok && cJSON_HasObjectItem(o, it->string)) cJSON_ReplaceItemInObjectCaseSensitive(o, it->string, dup);
            else if (ok) cJSON_AddItemToObject(o, it->string, dup);
        }
        if (ok) text = cJSON_PrintUnformatted(o);
    }
    cJSON_Delete(o);
    cJSON_Delete(kw);
    if (!text) cli_fail("out of memory");
    return text;
}

int cli_prompt_ids(const optiq_engine *e, const char *system, const char *text, size_t len, int use_template,
                   size_t n_images, const char *template_kwargs, int32_t **ids, size_t *n) {
    const optiq_chat_template *t = optiq_engine_chat_template(e);
    const optiq_tokenizer *tok = optiq_engine_tokenizer(e);
    optiq_error err;
    if (!use_template || !t) {
        if (optiq_tokenizer_encode(tok, text, len, OPTIQ_ENCODE_ADD_SPECIAL, ids, n, &err) != OPTIQ_OK)
            return cli_fail("%s", err.message);
        return 0;
    }
    cJSON *msgs = cJSON_CreateArray(), *m;
    if (system && (m = cJSON_CreateObject())) {
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    if ((m = cJSON_CreateObject())) {
        cJSON_AddStringToObject(m, "role", "user");
        if (n_images) {
            /* images first, then the text: how mlx-vlm builds a Qwen3.5 / Gemma-4 user turn */
            cJSON *parts = cJSON_AddArrayToObject(m, "content"), *part;
            for (size_t i = 0; i < n_images; i++)
                if ((part = cJSON_CreateObject())) {
                    cJSON_AddStringToObject(part, "type", "image");
                    cJSON_AddItemToArray(parts, part);
                }
            if ((part = cJSON_CreateObject())) {
                cJSON_AddStringToObject(part, "type", "text");
                cJSON_AddItemToObject(part, "text", cJSON_CreateString(text));
                cJSON_AddItemToArray(parts, part);
            }
        } else
            cJSON_AddItemToObject(m, "content", cJSON_CreateString(text));
        cJSON_AddItemToArray(msgs, m);
    }
    char *json = msgs ? cJSON_PrintUnformatted(msgs) : NULL;
    cJSON_Delete(msgs);
    if (!json) return cli_fail("out of memory");
    char *prompt = NULL;
    size_t plen = 0;
    int rc = 0;
    char *opts = cli_template_options(e, template_kwargs, n_images);
    if (!opts) rc = 1;
    else if (optiq_chat_template_render(t, json, strlen(json), opts, &prompt, &plen, &err) != OPTIQ_OK ||
             optiq_tokenizer_encode(tok, prompt, plen, 0, ids, n, &err) != OPTIQ_OK)
        rc = cli_fail("%s", err.message);
    optiq_free(prompt);
    free(opts);
    free(json);
    return rc;
}

/* ---- generate ------------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq generate --model DIR --prompt TEXT [--image PATH_OR_URL ...] [options]\n\n"
            "Generate a reply to TEXT and stream it to standard output. The prompt goes through\n"
            "the model's chat template (as a user message, its images first) unless\n"
            "--no-chat-template is given or the folder has no template. Speed figures go to\n"
            "standard error.\n\n"
            "Options:\n"
            "  --prompt TEXT               the prompt; - reads it from standard input\n"
            "  --image PATH_OR_URL         an image (file or data: URL; repeat for several); needs a\n"
            "                              folder with the vision sidecar. Without the chat template\n"
            "                              the prompt must hold one image placeholder per image\n"
            "  --image-tokens N            Gemma-4: soft tokens per image (70, 140, 280, 560 or 1120;\n"
            "                              default: the folder's processor setting)\n"
            "%s"
            "  --no-chat-template          tokenize the prompt as is (with the tokenizer's special tokens)\n"
            "  --json                      print one JSON object at the end instead of streaming\n"
            "                              (keys: docs/cli.md)\n"
            "  --help                      show this help\n",
            CLI_GEN_OPTIONS_HELP);
}

static int stream_token(void *user, int32_t id, const char *text, size_t len) {
    (void)user;
    (void)id;
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

static double rate(double n, double seconds) { return seconds > 0 ? n / seconds : 0.0; }

static int print_json(const optiq_generation *g) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "prompt_tokens", (double)g->prompt_tokens);
    cJSON *toks = cJSON_AddArrayToObject(doc, "tokens");
    for (size_t i = 0; toks && i < g->n_tokens; i++) cJSON_AddItemToArray(toks, cJSON_CreateNumber(g->tokens[i]));
    cJSON_AddStringToObject(doc, "text", g->answer ? g->answer : g->text);
    if (g->reasoning) cJSON_AddStringToObject(doc, "reasoning", g->reasoning);
    else cJSON_AddNullToObject(doc, "reasoning");
    cJSON_AddStringToObject(doc, "finish_reason", g->finish_reason);
    cJSON *tm = cJSON_AddObjectToObject(doc, "timings");
    cJSON_AddNumberToObject(tm, "prefill_seconds", g->prefill_seconds);
    cJSON_AddNumberToObject(tm, "decode_seconds", g->decode_seconds);
    cJSON_AddNumberToObject(tm, "prefill_tokens_per_second", rate((double)g->prompt_tokens, g->prefill_seconds));
    cJSON_AddNumberToObject(tm, "decode_tokens_per_second", rate((double)g->n_tokens, g->decode_seconds));
    char *s = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!s) return cli_fail("out of memory");
    printf("%s\n", s);
    free(s);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    enum { O_PROMPT = 1, O_NO_TEMPLATE, O_JSON, O_IMAGE, O_IMAGE_TOKENS };
    static const struct option opts[] = {CLI_GEN_OPTIONS,
                                         {"prompt", required_argument, 0, O_PROMPT},
                                         {"image", required_argument, 0, O_IMAGE},
                                         {"image-tokens", required_argument, 0, O_IMAGE_TOKENS},
                                         {"no-chat-template", no_argument, 0, O_NO_TEMPLATE},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    cli_gen_opts o;
    if (cli_gen_opts_init(&o, argc)) return cli_fail("out of memory");
    const char *prompt = NULL;
    int use_template = 1, json = 0, c, rc = 0;
    long long image_tokens = 0;
    optiq_image *images = calloc((size_t)argc + 1, sizeof *images); /* at most one per argument */
    size_t n_images = 0;
    if (!images) {
        cli_gen_opts_free(&o);
        return cli_fail("out of memory");
    }
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_PROMPT: prompt = optarg; break;
        case O_IMAGE: images[n_images++].source = optarg; break;
        case O_IMAGE_TOKENS: rc = cli_parse_int("generate", "--image-tokens", optarg, 1, 1 << 20, &image_tokens); break;
        case O_NO_TEMPLATE: use_template = 0; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); cli_gen_opts_free(&o); free(images); return 0;
        case ':': rc = cli_usage_error("generate", "option '%s' needs a value", argv[optind - 1]); break;
        case '?': rc = cli_usage_error("generate", "unknown option '%s'", argv[optind - 1]); break;
        default: rc = cli_gen_option("generate", c, optarg, &o); break;
        }
        if (rc) {
            cli_gen_opts_free(&o);
            free(images);
            return rc;
        }
    }
    for (size_t i = 0; i < n_images; i++) images[i].max_soft_tokens = (int)image_tokens;
    if (optind != argc) rc = cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    else if (!o.model) rc = cli_usage_error("generate", "--model DIR is required");
    else if (!prompt) rc = cli_usage_error("generate", "--prompt TEXT is required (- reads standard input)");
    if (rc) {
        cli_gen_opts_free(&o);
        free(images);
        return rc;
    }

    char *owned = NULL;
    size_t plen;
    if (strcmp(prompt, "-") == 0) {
        if (!(owned = cli_read_stream(stdin, &plen))) {
            cli_gen_opts_free(&o);
            free(images);
            return cli_fail("cannot read the prompt from standard input");
        }
        prompt = owned;
    } else {
        plen = strlen(prompt);
    }

    optiq_error err;
    optiq_engine *e = NULL;
    optiq_session *s = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    optiq_generation g = {0};
    if (optiq_engine_load(o.model, &o.engine, &e, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    if (n_images && !optiq_engine_has_vision(e)) {
        rc = cli_fail("%s is a text-only model folder (no optiq_vision.safetensors sidecar): it cannot take --image",
                      o.model);
        goto done;
    }
    if ((rc = cli_prompt_ids(e, o.system, prompt, plen, use_template, n_images, o.template_kwargs, &ids, &n)) != 0)
        goto done;
    o.gen.images = images;
    o.gen.n_images = n_images;
    if (n == 0) {
        rc = cli_fail("the prompt encodes to no tokens");
        goto done;
    }
    if (optiq_session_new(e, &s, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    if (!json) o.gen.on_token = stream_token;
    if (optiq_generate(s, ids, n, &o.gen, &g, &err) != OPTIQ_OK) {
        if (!json) printf("\n");
        rc = cli_fail("%s", err.message);
        goto done;
    }
    if (json) {
        rc = print_json(&g);
    } else {
        printf("\n");
        fflush(stdout);
        fprintf(stderr, "prompt: %lld tokens, %.2f tok/s | generation: %zu tokens, %.2f tok/s (%s)\n",
                (long long)g.prompt_tokens, rate((double)g.prompt_tokens, g.prefill_seconds), g.n_tokens,
                rate((double)g.n_tokens, g.decode_seconds), g.finish_reason);
    }
done:
    optiq_generation_free(&g);
    optiq_free(ids);
    optiq_session_free(s);
    optiq_engine_free(e);
    free(owned);
    free(images);
    cli_gen_opts_free(&o);
    return rc;
}
