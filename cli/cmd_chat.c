/*
 * cmd_chat.c — `optiq chat --model DIR`: a conversation, one user line per
 * turn on standard input (a terminal or a pipe), the assistant's replies
 * streamed to standard output, one per line.
 *
 * Every turn re-renders the whole conversation with the chat template. When
 * the new prompt's tokens extend the tokens the session already holds (the
 * previous prompt and reply), only the new suffix is evaluated; otherwise (a
 * template that rewrites earlier turns, e.g. dropping the thinking part of
 * a reply) the session starts over with the full prompt: the linear-attention
 * layers keep a running state that cannot be rewound to a shorter prefix.
 *
 * Lines "/reset" (forget the conversation) and "/exit" (or end of input) are
 * commands. The banner and the hints go to standard error. A turn that fails
 * is reported and dropped from the conversation, which goes on; the exit
 * status is then 1.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq chat --model DIR [options]\n\n"
            "Talk with a model: each line read from standard input is a user turn; the reply is\n"
            "streamed to standard output. The conversation is kept (and rendered with the model's\n"
            "chat template) until /reset. /exit or end of input quits.\n\n"
            "Options:\n"
            "%s"
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

/* The tokens the session holds, as this program tracks them. */
typedef struct held {
    int32_t *ids;
    size_t n, cap;
} held;

static int held_append(held *h, const int32_t *ids, size_t n) {
    if (h->n + n > h->cap) {
        size_t cap = h->cap * 2 > h->n + n ? h->cap * 2 : h->n + n + 256;
        int32_t *p = realloc(h->ids, cap * sizeof *p);
        if (!p) return 1;
        h->ids = p;
        h->cap = cap;
    }
    if (n) memcpy(h->ids + h->n, ids, n * sizeof *ids);
    h->n += n;
    return 0;
}

static cJSON *new_history(const char *system) {
    cJSON *msgs = cJSON_CreateArray();
    if (msgs && system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    return msgs;
}

static void add_message(cJSON *msgs, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
}

/* One turn: render, evaluate what the session lacks, generate. Returns 0,
 * or 1 after printing why the turn failed (the conversation goes on). */
static int turn(optiq_engine *e, optiq_session *s, held *h, cJSON *msgs, const optiq_generate_params *gp,
                const char *template_kwargs) {
    const optiq_chat_template *t = optiq_engine_chat_template(e);
    optiq_error err;
    char *json = cJSON_PrintUnformatted(msgs), *prompt = NULL;
    int32_t *ids = NULL;
    size_t plen = 0, n = 0;
    optiq_generation g = {0};
    int rc = 0;
    if (!json) return cli_fail("out of memory");
    char *opts = cli_template_options(e, template_kwargs, 0);
    if (!opts) {
        free(json);
        return 1;
    }
    optiq_status rst = optiq_chat_template_render(t, json, strlen(json), opts, &prompt, &plen, &err);
    free(opts);
    if (rst != OPTIQ_OK || optiq_tokenizer_encode(optiq_engine_tokenizer(e), prompt, plen, 0, &ids, &n, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    size_t keep = h->n <= n && (h->n == 0 || memcmp(h->ids, ids, h->n * sizeof *ids) == 0) ? h->n : 0;
    if (keep == 0 && h->n) {
        optiq_session_reset(s);
        h->n = 0;
    }
    if (optiq_generate(s, ids + keep, n - keep, gp, &g, &err) != OPTIQ_OK) {
        printf("\n");
        /* The session is as before the call (or reset): track it. */
        if (optiq_session_position(s) != (int64_t)h->n) h->n = 0;
        rc = cli_fail("%s", err.message);
        goto done;
    }
    printf("\n");
    fflush(stdout);
    if (held_append(h, ids + keep, n - keep) || held_append(h, g.tokens, g.n_tokens)) {
        optiq_session_reset(s);
        h->n = 0;
    }
    add_message(msgs, "assistant", g.text);
    if (strcmp(g.finish_reason, "length") == 0 && optiq_session_position(s) >= optiq_engine_context(e))
        fprintf(stderr, "(the context is full: /reset to start over)\n");
done:
    optiq_generation_free(&g);
    optiq_free(ids);
    optiq_free(prompt);
    free(json);
    return rc;
}

int cmd_chat(int argc, char **argv) {
    static const struct option opts[] = {CLI_GEN_OPTIONS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_gen_opts o;
    if (cli_gen_opts_init(&o, argc)) return cli_fail("out of memory");
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': usage(stdout); cli_gen_opts_free(&o); return 0;
        case ':': rc = cli_usage_error("chat", "option '%s' needs a value", argv[optind - 1]); break;
        case '?': rc = cli_usage_error("chat", "unknown option '%s'", argv[optind - 1]); break;
        default: rc = cli_gen_option("chat", c, optarg, &o); break;
        }
        if (rc) {
            cli_gen_opts_free(&o);
            return rc;
        }
    }
    if (optind != argc) rc = cli_usage_error("chat", "unexpected argument '%s'", argv[optind]);
    else if (!o.model) rc = cli_usage_error("chat", "--model DIR is required");
    if (rc) {
        cli_gen_opts_free(&o);
        return rc;
    }

    optiq_error err;
    optiq_engine *e = NULL;
    optiq_session *s = NULL;
    cJSON *msgs = NULL;
    held h = {0};
    char *line = NULL;
    size_t line_cap = 0;
    if (optiq_engine_load(o.model, &o.engine, &e, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    if (!optiq_engine_chat_template(e)) {
        rc = cli_fail("%s: the folder has no chat template; use optiq generate --no-chat-template", o.model);
        goto done;
    }
    if (optiq_session_new(e, &s, &err) != OPTIQ_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    if (!(msgs = new_history(o.system))) {
        rc = cli_fail("out of memory");
        goto done;
    }
    o.gen.on_token = stream_token;
    int tty = isatty(STDIN_FILENO);
    fprintf(stderr, "optiq chat: %s (%s, context %lld tokens). /reset clears the conversation, /exit quits.\n",
            o.model, optiq_engine_model_type(e), (long long)optiq_engine_context(e));
    for (;;) {
        if (tty) {
            fprintf(stderr, "> ");
            fflush(stderr);
        }
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            cJSON_Delete(msgs);
            if (!(msgs = new_history(o.system))) {
                rc = cli_fail("out of memory");
                goto done;
            }
            optiq_session_reset(s);
            h.n = 0;
            fprintf(stderr, "(conversation cleared)\n");
            continue;
        }
        add_message(msgs, "user", line);
        if (turn(e, s, &h, msgs, &o.gen, o.template_kwargs)) {
            rc = 1; /* reported in the exit status; the conversation goes on */
            /* Forget the turn that failed so the next one starts from a consistent history. */
            cJSON_DeleteItemFromArray(msgs, cJSON_GetArraySize(msgs) - 1);
        }
    }
done:
    free(line);
    free(h.ids);
    cJSON_Delete(msgs);
    optiq_session_free(s);
    optiq_engine_free(e);
    cli_gen_opts_free(&o);
    return rc;
}
