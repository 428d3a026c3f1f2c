/*
 * server.c — `optiq serve`: routes, the generation queue and its worker.
 *
 * Threads: MHD's connection threads run handle(); the worker thread runs
 * every generation on the one session, in arrival order; the main thread
 * waits for SIGINT/SIGTERM (sigwait, the signals are blocked in every other
 * thread) and then stops the HTTP layer and the worker.
 *
 * A request that needs the model is prepared on its connection thread
 * (template rendering and tokenization only read the immutable engine), then
 * queued as a job; the connection thread waits for it. Non-stream jobs are
 * answered when generation ends. Stream jobs answer as soon as generation
 * has produced its first token (or ended): until then an error (context,
 * image decoding) can still become a proper error response; afterwards the
 * handler returns (the events reach the client only then) and the worker
 * owns the job: it writes SSE events through the http stream, aborts
 * generation when the client has gone away, and frees the job at the end.
 * Requests with response_format or a required tool call carry a grammar
 * whose mask the worker applies before every sample (server/tools.h,
 * text/grammar.h, over the token trie built at start); replies of requests
 * with tools are parsed into tool calls, streams holding back text that may
 * start one. Non-stream jobs poll the client's socket (http_request_cancelled) before
 * they start and after every token, so a client that leaves does not hold
 * the worker. Besides the API routes: GET /info (the model and the server's
 * settings) and the Lab's static files (server/lab.h).
 */
#include "server/server.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant/qmatmul.h"
#include "server/api.h"
#include "server/fetch.h"
#include "server/http.h"
#include "server/tools.h"
#include "server/lab.h"
#include "base/cpu.h"
#include "text/reasoning.h"

typedef struct job job;

typedef struct server {
    const server_config *cfg;
    optiq_engine *engine;
    optiq_batch *batch;        /* the worker's: the generations running now */
    optiq_session **sessions;  /* (parallel) one per batch slot */
    job **slot_job;            /* (parallel) the job in each slot, or NULL */
    size_t parallel;
    size_t queued;             /* jobs waiting in the FIFO (guarded by mu) */
    size_t max_queue;
    struct {                   /* /metrics (guarded by mu) */
        uint64_t ok, failed, rejected;
        uint64_t prompt_tokens, generated_tokens;
        double ttft_sum, decode_seconds;
        uint64_t ttft_count;
        uint64_t steps, step_rows; /* batch steps, and the generations they advanced */
        size_t active;
    } m;
    char model_name[256];
    char *folder_json;         /* optiq_model_info_json of the folder without "path", or NULL */
    int port;                  /* the bound port, once listening (guarded by mu) */
    long token_delay_us;       /* OPTIQ_SERVE_TOKEN_DELAY_MS (a testing aid), in microseconds */
    int vision;
    reasoning_tags think_tags; /* the vocabulary's thinking markers */
    grammar_vocab *gvocab;     /* token trie for response_format / forced tool calls (worker thread) */
    tool_syntax tool_syn;      /* the family's tool-call syntax */
    int64_t started;
    pthread_mutex_t mu;
    pthread_mutex_t prep_mu; /* one template render at a time (see prepare_prompt) */
    pthread_cond_t work_cv;  /* worker: a job was queued, or quit */
    pthread_cond_t done_cv;  /* connection threads: a job changed phase */
    job *head, *tail;
    int quit;
    unsigned long counter;
} server;

enum { PHASE_QUEUED = 0, PHASE_STARTED, PHASE_DONE };

struct job {
    server *srv;
    http_request *hreq;
    const api_request *req;
    int32_t *ids;
    size_t n_ids;
    optiq_image *images;
    int in_reasoning;
    size_t slot;             /* the batch slot (session) while it runs */
    optiq_generate_params params;
    char id[48];
    int64_t created;
    /* worker -> connection thread */
    int phase;
    optiq_status status;
    char message[512];
    optiq_generation gen;
    /* stream handshake */
    int stream_set;          /* the connection thread answered: stream below (NULL: could not) */
    http_stream *stream;
    api_stream sse;
    reasoning_split think;
    int write_failed;
    size_t seen_tokens;
    /* structured output, tools and log-probabilities (server/tools.h, text/grammar.h) */
    grammar *gram;           /* constrains the reply (response_format, a required tool call), or NULL */
    grammar_state gst;
    int tools_on;            /* tool calls are parsed out of the reply */
    char *abuf;              /* stream with tools: the content so far; abuf[0 .. asent) was sent */
    size_t alen, asent;
    cJSON *lp_pending;       /* stream with logprobs: entries of tokens not sent yet */
    api_request req_own;     /* the parsed request (req points here) */
    int detached;            /* a stream whose handler returned: the worker frees the job */
    job *next;
};

/* ---- small helpers ----------------------------------------------------- */

static void respond_api_error(http_request *r, int anthropic, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void respond_api_error(http_request *r, int anthropic, int status, const char *fmt, ...) {
    api_error e;
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    api_error_set(&e, status, NULL, "%s", msg);
    char *body = api_error_json(anthropic, &e);
    if (!body) {
        http_respond_error(r, 500, "server_error", "out of memory");
        return;
    }
    http_respond(r, status, NULL, body, strlen(body));
    free(body);
}

static void respond_parse_error(http_request *r, int anthropic, const api_error *e) {
    char *body = api_error_json(anthropic, e);
    if (!body) {
        http_respond_error(r, 500, "server_error", "out of memory");
        return;
    }
    http_respond(r, e->http_status, NULL, body, strlen(body));
    free(body);
}

static void respond_json(http_request *r, char *body) {
    if (!body) {
        http_respond_error(r, 500, "server_error", "out of memory");
        return;
    }
    http_respond(r, 200, NULL, body, strlen(body));
    free(body);
}

static int authorized(const server *sv, http_request *r) {
    const char *key = sv->cfg->api_key;
    if (!key || !*key) return 1;
    const char *h = http_request_header(r, "x-api-key");
    if (h && strcmp(h, key) == 0) return 1;
    h = http_request_header(r, "authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ') h++;
        if (strcmp(h, key) == 0) return 1;
    }
    return 0;
}

/* ---- prompt preparation (connection thread) ------------------------------ */

/* j->images and the bytes of fetched images (those without a source). */
static void free_images(job *j, size_t n) {
    if (!j->images) return;
    for (size_t i = 0; i < n; i++)
        if (!j->images[i].source) free((void *)j->images[i].data);
    free(j->images);
    j->images = NULL;
}

/* Free a job and what it owns: the handler's last act on it, or, for a
 * stream whose handler has returned (detached), the worker's in job_finish. */
static void job_release(job *j) {
    optiq_generation_free(&j->gen);
    grammar_free(j->gram);
    optiq_free(j->ids);
    free_images(j, j->req_own.n_images);
    api_request_free(&j->req_own);
    free(j);
}

/* ---- structured output, tools, log-probabilities ------------------------- */

/* The grammar of a constrained reply (response_format json_object /
 * json_schema, tool_choice required / named) and whether tool calls are
 * parsed; 0 or an HTTP status with the message in msg. */
static int prepare_structured(server *sv, const api_request *req, job *j, char *msg, size_t msg_size) {
    j->tools_on = req->kind != API_OPENAI_COMPLETION && req->tools_json && req->tool_choice != API_TOOLS_NONE;
    int forced = req->tool_choice >= API_TOOLS_REQUIRED;
    if (req->response_format == API_FORMAT_TEXT && !forced) return 0;
    if (!sv->gvocab) {
        snprintf(msg, msg_size, "out of memory (token trie)");
        return 500;
    }
    optiq_error err = {0};
    optiq_status st;
    if (!(j->gram = grammar_new())) {
        snprintf(msg, msg_size, "out of memory");
        return 500;
    }
    if (forced) {
        cJSON *tools = cJSON_Parse(req->tools_json);
        st = tools_grammar(sv->tool_syn, tools, req->tool_choice == API_TOOLS_NAMED ? req->tool_choice_name : NULL,
                           j->gram, &err);
        cJSON_Delete(tools);
    } else {
        cJSON *schema = req->schema_json ? cJSON_Parse(req->schema_json) : NULL;
        st = grammar_add_schema(j->gram, schema, GRAMMAR_JSON, &err);
        cJSON_Delete(schema);
    }
    if (st != OPTIQ_OK) {
        snprintf(msg, msg_size, "%s: %.400s", forced ? "tool_choice" : "response_format", err.message);
        return st == OPTIQ_ERR_NOMEM ? 500 : 400;
    }
    grammar_start(j->gram, &j->gst);
    return 0;
}

static int job_process_logits(void *user, float *logits, int64_t vocab) {
    job *j = user;
    (void)vocab;
    return grammar_mask_logits(j->gram, &j->gst, j->srv->gvocab, logits) > 0 ? 0 : 1;
}

static int is_eos_id(const server *sv, int32_t id) {
    const int32_t *e;
    size_t n = optiq_engine_eos_ids(sv->engine, &e);
    for (size_t i = 0; i < n; i++)
        if (e[i] == id) return 1;
    return 0;
}

/* Every sampled token: the grammar follows it; a stream with logprobs queues its entry. */
static void job_on_sampled(void *user, int32_t id, const optiq_token_logprobs *lp) {
    job *j = user;
    server *sv = j->srv;
    if (j->gram && !is_eos_id(sv, id)) grammar_accept(j->gram, &j->gst, sv->gvocab, id);
    if (!lp || !j->req->stream || is_eos_id(sv, id)) return;
    if (!j->lp_pending) j->lp_pending = cJSON_CreateArray();
    char *e = j->req->kind == API_OPENAI_COMPLETION
                  ? tools_logprobs_completion(optiq_engine_tokenizer(sv->engine), &id, 1, &lp->logprob, lp->top_ids,
                                              lp->top_logprobs, lp->n_top, 0)
                  : tools_logprobs_chat(optiq_engine_tokenizer(sv->engine), sv->gvocab, &id, 1, &lp->logprob,
                                        lp->top_ids, lp->top_logprobs, lp->n_top);
    cJSON *parsed = e ? cJSON_Parse(e) : NULL;
    free(e);
    if (!parsed || !j->lp_pending) {
        cJSON_Delete(parsed);
        return;
    }
    if (cJSON_IsArray(parsed)) { /* chat: one entry */
        cJSON_AddItemToArray(j->lp_pending, cJSON_DetachItemFromArray(parsed, 0));
        cJSON_Delete(parsed);
    } else {
        cJSON_AddItemToArray(j->lp_pending, parsed);
    }
}

/* Queued logprob entries for the next chunk: chat's "content" list, or the
 * legacy object of the completions endpoint (its fields concatenated). The
 * entries stay queued until a chunk has carried them (logprobs_sent). */
static void attach_logprobs(job *j) {
    if (!j->lp_pending || !j->lp_pending->child) return;
    cJSON *out;
    if (j->req->kind == API_OPENAI_COMPLETION) {
        out = cJSON_CreateObject();
        static const char *const keys[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
        for (int k = 0; k < 4 && out; k++) {
            cJSON *a = cJSON_AddArrayToObject(out, keys[k]);
            for (cJSON *e = j->lp_pending->child; e && a; e = e->next) {
                cJSON *v = cJSON_GetObjectItem(e, keys[k]);
                if (v && v->child) cJSON_AddItemToArray(a, cJSON_Duplicate(v->child, 1));
            }
        }
    } else {
        out = cJSON_Duplicate(j->lp_pending, 1);
    }
    free(j->sse.logprobs_json);
    j->sse.logprobs_json = out ? cJSON_PrintUnformatted(out) : NULL;
    cJSON_Delete(out);
}

/* After a send: a chunk took the queued entries (it cleared sse.logprobs_json). */
static void logprobs_sent(job *j) {
    if (j->lp_pending && !j->sse.logprobs_json) {
        cJSON_Delete(j->lp_pending);
        j->lp_pending = NULL;
    }
}

/* Fill j->ids (and j->images); 0 or an HTTP status with the message in msg. */
static int prepare_prompt(server *sv, const api_request *req, job *j, char *msg, size_t msg_size) {
    const optiq_tokenizer *tok = optiq_engine_tokenizer(sv->engine);
    optiq_error err;
    if (req->n_images) {
        if (!sv->vision) {
            snprintf(msg, msg_size,
                     "the model folder %s has no vision sidecar (optiq_vision.safetensors): it cannot take images",
                     sv->model_name);
            return 400;
        }
        if (!sv->cfg->allow_remote_images)
            for (size_t i = 0; i < req->n_images; i++)
                if (strncasecmp(req->images[i], "data:", 5) != 0) {
                    snprintf(msg, msg_size,
                             "remote image URLs are disabled (start the server with --allow-remote-images)");
                    return 400;
                }
        j->images = calloc(req->n_images, sizeof *j->images);
        if (!j->images) {
            snprintf(msg, msg_size, "out of memory");
            return 500;
        }
        for (size_t i = 0; i < req->n_images; i++) {
            j->images[i].source = req->images[i];
            j->images[i].max_soft_tokens = req->image_tokens;
        }
        /* http(s) images are fetched here, before queueing (count_tokens does
         * not fetch: see count_prompt_tokens) */
        if (sv->cfg->allow_remote_images && req->kind != API_ANTHROPIC_COUNT_TOKENS) {
            fetch_policy fp = fetch_policy_default();
            fp.allow = sv->cfg->allow_image_hosts;
            fp.n_allow = sv->cfg->n_allow_image_hosts;
            if (sv->cfg->max_image_bytes) fp.max_bytes = sv->cfg->max_image_bytes;
            for (size_t i = 0; i < req->n_images; i++) {
                if (strncasecmp(req->images[i], "data:", 5) == 0) continue;
                uint8_t *data = NULL;
                size_t size = 0;
                if (fetch_image(req->images[i], &fp, &data, &size, &err) != OPTIQ_OK) {
                    snprintf(msg, msg_size, "image %zu: %.400s", i + 1, err.message);
                    return err.status == OPTIQ_ERR_NOMEM ? 500 : 400;
                }
                j->images[i].source = NULL;
                j->images[i].data = data;
                j->images[i].size = size;
            }
        }
    }
    if (req->kind == API_OPENAI_COMPLETION) {
        const char *p = req->prompt ? req->prompt : "";
        if (optiq_tokenizer_encode(tok, p, strlen(p), OPTIQ_ENCODE_ADD_SPECIAL, &j->ids, &j->n_ids, &err)) {
            snprintf(msg, msg_size, "%s", err.message);
            return 400;
        }
    } else {
        const optiq_chat_template *t = optiq_engine_chat_template(sv->engine);
        if (!t) {
            snprintf(msg, msg_size, "the model folder %s has no chat template", sv->model_name);
            return 400;
        }
        /* options: the generation prompt; enable_thinking as mlx-lm's server
         * sets it (on when the vocabulary has thinking markers), off with
         * images (as mlx-vlm renders image prompts and optiq generate does);
         * then the request's template variables, which win */
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            snprintf(msg, msg_size, "out of memory");
            return 500;
        }
        cJSON_AddBoolToObject(o, "add_generation_prompt", 1);
        cJSON_AddBoolToObject(o, "enable_thinking", !req->n_images && optiq_engine_has_thinking(sv->engine));
        if (req->chat_template_kwargs_json) {
            cJSON *kw = cJSON_Parse(req->chat_template_kwargs_json);
            if (cJSON_IsObject(kw)) {
                for (cJSON *it = kw->child; it; it = it->next) {
                    cJSON *dup = cJSON_Duplicate(it, 1);
                    if (!dup) continue;
                    if (cJSON_HasObjectItem(o, it->string)) cJSON_ReplaceItemInObjectCaseSensitive(o, it->string, dup);
                    else cJSON_AddItemToObject(o, it->string, dup);
                }
            }
            cJSON_Delete(kw);
        }
        if (req->tools_json && req->tool_choice != API_TOOLS_NONE) { /* "none": the tools are not offered */
            cJSON *tools = cJSON_Parse(req->tools_json);
            if (tools) cJSON_AddItemToObject(o, "tools", tools);
        }
        /* a constrained reply starts at once: no thinking block before it */
        if (req->response_format != API_FORMAT_TEXT || req->tool_choice >= API_TOOLS_REQUIRED)
            cJSON_ReplaceItemInObjectCaseSensitive(o, "enable_thinking", cJSON_CreateFalse());
        char *opts = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!opts) {
            snprintf(msg, msg_size, "out of memory");
            return 500;
        }
        char *prompt = NULL;
        size_t plen = 0;
        /* One render at a time: the template evaluator shares reference-counted
         * values of the parsed template between renders without atomics, so two
         * concurrent renders of the same template race (seen under ASan). */
        pthread_mutex_lock(&sv->prep_mu);
        /* Gemma-4 reads tool results from the calling message's tool_responses */
        char *folded = sv->tool_syn == TOOLS_GEMMA ? tools_fold_results_gemma(req->messages_json) : NULL;
        const char *msgs = folded ? folded : req->messages_json;
        optiq_status st = optiq_chat_template_render(t, msgs, strlen(msgs), opts, &prompt, &plen, &err);
        free(folded);
        pthread_mutex_unlock(&sv->prep_mu);
        free(opts);
        if (st == OPTIQ_OK) st = optiq_tokenizer_encode(tok, prompt, plen, 0, &j->ids, &j->n_ids, &err);
        optiq_free(prompt);
        if (st != OPTIQ_OK) {
            snprintf(msg, msg_size, "%s", err.message);
            return st == OPTIQ_ERR_NOMEM ? 500 : 400;
        }
    }
    if (j->n_ids == 0) {
        snprintf(msg, msg_size, "the prompt encodes to no tokens");
        return 400;
    }
    j->in_reasoning = reasoning_ids_open(&sv->think_tags, j->ids, j->n_ids);
    int rc = prepare_structured(sv, req, j, msg, msg_size);
    if (rc) return rc;
    int64_t ctx = optiq_engine_context(sv->engine);
    if ((int64_t)j->n_ids >= ctx) {
        snprintf(msg, msg_size,
                 "prompt of %zu tokens does not fit the context of %lld tokens (1 needed for the reply)", j->n_ids,
                 (long long)ctx);
        return 400;
    }
    return 0;
}

/* Prompt tokens as generation's usage counts them: each image's placeholder
 * replaced by the tokens it expands to (optiq_engine_image_tokens: from the
 * decoded size, without running the tower). data: images are decoded for
 * their size; http(s) images are not fetched here and count as their one
 * placeholder token. 0 or an HTTP status with the message in msg. */
static int count_prompt_tokens(server *sv, const api_request *req, const job *j, int64_t *out, char *msg,
                               size_t msg_size) {
    int64_t n = (int64_t)j->n_ids;
    for (size_t i = 0; i < req->n_images && sv->vision; i++) {
        if (strncasecmp(req->images[i], "data:", 5) != 0) continue;
        optiq_image im = {.source = req->images[i], .max_soft_tokens = req->image_tokens};
        optiq_error err = {0};
        int64_t k = 0;
        optiq_status st = optiq_engine_image_tokens(sv->engine, &im, &k, &err);
        if (st != OPTIQ_OK) {
            const char *m = strncmp(err.message, "image 1: ", 9) ? err.message : err.message + 9;
            snprintf(msg, msg_size, "image %zu: %.400s", i + 1, m);
            return st == OPTIQ_ERR_NOMEM ? 500 : 400;
        }
        n += k - 1;
    }
    *out = n;
    return 0;
}

/* ---- worker -------------------------------------------------------------- */

/* The stop string that ended generation, or NULL. */
static const char *find_stop(server *sv, const api_request *req, const optiq_generation *g) {
    if (!req->n_stop || !g->finish_reason || strcmp(g->finish_reason, "stop") != 0 || !g->n_tokens) return NULL;
    char *all = NULL;
    size_t len = 0;
    const char *hit = NULL;
    if (optiq_tokenizer_decode(optiq_engine_tokenizer(sv->engine), g->tokens, g->n_tokens, 0, &all, &len, NULL))
        return NULL;
    if (len > g->text_len && memcmp(all, g->text, g->text_len) == 0)
        for (size_t i = 0; i < req->n_stop && !hit; i++)
            if (strncmp(all + g->text_len, req->stop[i], strlen(req->stop[i])) == 0) hit = req->stop[i];
    optiq_free(all);
    return hit;
}

static int stream_send(job *j, char *text) {
    if (!text) return -1;
    int rc = 0;
    if (*text && !j->write_failed && http_stream_write(j->stream, text, strlen(text)) != OPTIQ_OK) {
        j->write_failed = 1;
        rc = -1;
    }
    free(text);
    return rc;
}

/* Stream jobs: tell the connection thread to answer, wait until it has. */
static void stream_handshake(job *j, int64_t prompt_tokens) {
    server *sv = j->srv;
    pthread_mutex_lock(&sv->mu);
    j->phase = PHASE_STARTED;
    pthread_cond_broadcast(&sv->done_cv);
    while (!j->stream_set) pthread_cond_wait(&sv->done_cv, &sv->mu);
    pthread_mutex_unlock(&sv->mu);
    if (!j->stream) {
        j->write_failed = 1;
        return;
    }
    api_stream_init(&j->sse, j->req->kind, j->id, j->created, sv->model_name, prompt_tokens, j->req->include_usage);
    stream_send(j, api_stream_begin(&j->sse));
}

static int stream_think_out(job *j) {
    attach_logprobs(j);
    if (!j->tools_on) {
        int rc = stream_send(j, api_stream_delta(&j->sse, j->think.reasoning, j->think.reasoning_len,
                                                 j->think.content, j->think.content_len));
        logprobs_sent(j);
        return rc;
    }
    /* content that may start a tool call is held back until the reply ends */
    if (j->think.content_len) {
        char *b = realloc(j->abuf, j->alen + j->think.content_len + 1);
        if (!b) return -1;
        memcpy(b + j->alen, j->think.content, j->think.content_len);
        j->alen += j->think.content_len;
        b[j->alen] = 0;
        j->abuf = b;
    }
    size_t safe = tools_safe_prefix(j->srv->tool_syn, j->abuf ? j->abuf : "", j->alen);
    if (safe < j->asent) safe = j->asent;
    int rc = stream_send(j, api_stream_delta(&j->sse, j->think.reasoning, j->think.reasoning_len,
                                             j->abuf ? j->abuf + j->asent : "", safe - j->asent));
    logprobs_sent(j);
    j->asent = safe;
    return rc;
}

/* The tool calls of a finished reply: printed [{"id","name","arguments"}]
 * (NULL when none) and the content outside them (*content, caller frees). */
static char *reply_tool_calls(server *sv, job *j, const char *answer, char **content) {
    *content = NULL;
    if (!j->tools_on || !answer) return NULL;
    cJSON *tools = cJSON_Parse(j->req->tools_json);
    tool_parse tp;
    char *out = NULL;
    /* ids as each API writes them: OpenAI "call_...", Anthropic "toolu_..." */
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s_%s", api_kind_is_anthropic(j->req->kind) ? "toolu" : "call", j->id);
    if (tools_parse(sv->tool_syn, answer, strlen(answer), tools, prefix, &tp) == 0 && tp.n_calls) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; arr && i < tp.n_calls; i++) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "id", tp.calls[i].id);
            cJSON_AddStringToObject(c, "name", tp.calls[i].name);
            cJSON_AddStringToObject(c, "arguments", tp.calls[i].arguments);
            cJSON_AddItemToArray(arr, c);
        }
        out = cJSON_PrintUnformatted(arr);
        cJSON_Delete(arr);
        *content = tp.content;
        tp.content = NULL;
    }
    tools_parse_free(&tp);
    cJSON_Delete(tools);
    return out;
}

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    job *j = user;
    if (id >= 0) j->seen_tokens++;
    if (id >= 0 && j->srv->token_delay_us) {
        struct timespec ts = {j->srv->token_delay_us / 1000000, (j->srv->token_delay_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    if (!j->req->stream) return http_request_cancelled(j->hreq);
    if (j->phase == PHASE_QUEUED)
        stream_handshake(j, optiq_session_position(j->srv->sessions[j->slot]) - (int64_t)j->seen_tokens);
    if (j->write_failed) return 1;
    if (len) {
        if (reasoning_split_feed(&j->think, text, len) < 0) return 1;
        if (stream_think_out(j)) return 1;
    }
    return http_stream_cancelled(j->stream);
}

/* Polled between prefill calls: a client that left (or a stopping server) ends its job early. */
static int job_stop(void *user) {
    job *j = user;
    /* a detached stream's request is gone; its stream tells whether the client is */
    return j->hreq ? http_request_cancelled(j->hreq) : http_stream_cancelled(j->stream);
}

/* The end of a job (on the worker thread): the stream finished, the
 * connection thread woken, the slot freed. */
static void job_finish(server *sv, job *j, optiq_status st, const char *message) {
    j->status = st;
    if (st != OPTIQ_OK) snprintf(j->message, sizeof j->message, "%s", message ? message : "generation failed");
    if (j->req->stream) {
        if (j->phase == PHASE_QUEUED && st == OPTIQ_OK) stream_handshake(j, j->gen.prompt_tokens);
        if (j->phase == PHASE_STARTED) {
            /* the stream is open: finish it (an error mid-way just ends it) */
            if (!j->write_failed) {
                if (reasoning_split_finish(&j->think) == 0) stream_think_out(j);
                j->sse.meta.prompt_tokens = j->gen.prompt_tokens;
                j->sse.meta.cached_tokens = j->gen.cached_tokens;
                const char *fr = st == OPTIQ_OK ? j->gen.finish_reason : "abort";
                if (j->tools_on && !j->write_failed) { /* the held-back content, then the calls */
                    char *content = NULL, *calls = st == OPTIQ_OK ? reply_tool_calls(sv, j, j->abuf, &content) : NULL;
                    const char *c = calls ? content : j->abuf ? j->abuf : "";
                    size_t cl = strlen(c);
                    if (cl > j->asent) stream_send(j, api_stream_delta(&j->sse, NULL, 0, c + j->asent, cl - j->asent));
                    if (calls) {
                        stream_send(j, api_stream_tool_calls(&j->sse, calls));
                        if (!strcmp(fr, "stop")) fr = "tool_calls";
                    }
                    free(calls), free(content);
                }
                stream_send(j, api_stream_end(&j->sse, fr, st == OPTIQ_OK ? find_stop(sv, j->req, &j->gen) : NULL,
                                              (int64_t)(st == OPTIQ_OK ? j->gen.n_tokens : j->seen_tokens)));
            }
            if (j->stream && j->detached) { /* the handler has returned: the log note goes with the stream */
                if (st == OPTIQ_OK)
                    http_stream_note(j->stream, "prompt=%lld completion=%zu cached=%lld", (long long)j->gen.prompt_tokens,
                                     j->gen.n_tokens, (long long)j->gen.cached_tokens);
                else
                    http_stream_note(j->stream, "error=%s", optiq_status_name(st));
            }
            if (j->stream) http_stream_close(j->stream);
            j->stream = NULL;
        }
    }
    reasoning_split_free(&j->think);
    free(j->abuf), j->abuf = NULL;
    cJSON_Delete(j->lp_pending), j->lp_pending = NULL;
    sv->slot_job[j->slot] = NULL;
    pthread_mutex_lock(&sv->mu);
    if (st == OPTIQ_OK) {
        sv->m.ok++;
        sv->m.prompt_tokens += (uint64_t)j->gen.prompt_tokens;
        sv->m.generated_tokens += j->gen.n_tokens;
        if (j->gen.n_tokens) sv->m.ttft_sum += j->gen.prefill_seconds, sv->m.ttft_count++;
        sv->m.decode_seconds += j->gen.decode_seconds;
    } else {
        sv->m.failed++;
    }
    j->phase = PHASE_DONE;
    int detached = j->detached;
    pthread_cond_broadcast(&sv->done_cv);
    pthread_mutex_unlock(&sv->mu);
    if (detached) job_release(j); /* no one else holds it (the batch is done with it too) */
}

static void job_done(void *user, optiq_status st, const char *message) {
    job *j = user;
    job_finish(j->srv, j, st, message);
}

/* A queued job joins the batch in a free slot (its session starts empty). */
static void job_start(server *sv, job *j, size_t slot) {
    optiq_error err = {0};
    optiq_generate_params *p = &j->params;
    *p = optiq_generate_default();
    p->sampling = j->req->sampling;
    p->max_tokens = j->req->max_tokens;
    p->stop = (const char *const *)j->req->stop;
    p->n_stop = j->req->n_stop;
    p->images = j->images;
    p->n_images = j->req->n_images;
    p->on_token = on_token;
    p->should_stop = job_stop;
    p->on_done = job_done;
    p->user = j;
    if (j->gram) p->process_logits = job_process_logits;
    p->on_sampled = job_on_sampled;
    p->logprobs = j->req->logprobs;
    p->top_logprobs = j->req->top_logprobs;
    j->slot = slot;
    sv->slot_job[slot] = j;
    reasoning_split_init(&j->think, &sv->think_tags, j->in_reasoning);
    optiq_session_reset(sv->sessions[slot]);
    if (http_request_cancelled(j->hreq)) {
        job_finish(sv, j, OPTIQ_ERR_IO, "the client left or the server is stopping");
        return;
    }
    optiq_status st = optiq_batch_add(sv->batch, sv->sessions[slot], j->ids, j->n_ids, p, &j->gen, &err);
    if (st) job_finish(sv, j, st, err.message);
}

/* The worker owns the batch: it admits queued jobs into free slots, then
 * advances every running generation by one step (new prompts prefill one
 * chunk per step while the others decode together). */
static void *worker_main(void *arg) {
    server *sv = arg;
    optiq_error err = {0};
    pthread_mutex_lock(&sv->mu);
    for (;;) {
        while (!sv->head && optiq_batch_size(sv->batch) == 0 && !sv->quit) pthread_cond_wait(&sv->work_cv, &sv->mu);
        if (sv->quit && !sv->head && optiq_batch_size(sv->batch) == 0) break;
        for (size_t slot = 0; sv->head && slot < sv->parallel; slot++) {
            if (sv->slot_job[slot]) continue;
            job *j = sv->head;
            sv->head = j->next;
            if (!sv->head) sv->tail = NULL;
            sv->queued--;
            pthread_mutex_unlock(&sv->mu);
            job_start(sv, j, slot);
            pthread_mutex_lock(&sv->mu);
        }
        size_t active = optiq_batch_size(sv->batch);
        sv->m.active = active;
        if (active) sv->m.steps++, sv->m.step_rows += active;
        pthread_mutex_unlock(&sv->mu);
        if (active) optiq_batch_step(sv->batch, &err);
        pthread_mutex_lock(&sv->mu);
        sv->m.active = optiq_batch_size(sv->batch);
    }
    pthread_mutex_unlock(&sv->mu);
    qmatmul_release_scratch(); /* this thread's matmul scratch (thread-local) */
    return NULL;
}

/* ---- model routes (connection thread) ------------------------------------ */

static void answer_full(server *sv, http_request *r, job *j) {
    const api_request *req = j->req;
    /* the engine split the reasoning off the text (text/reasoning.h) */
    const char *content = j->gen.answer ? j->gen.answer : j->gen.text;
    const char *reasoning = j->gen.reasoning && *j->gen.reasoning ? j->gen.reasoning : NULL;
    char *tool_content = NULL, *calls = reply_tool_calls(sv, j, content, &tool_content);
    if (calls) content = tool_content;
    char *lp = NULL;
    if (j->gen.logprobs) {
        const optiq_tokenizer *tok = optiq_engine_tokenizer(sv->engine);
        lp = req->kind == API_OPENAI_COMPLETION
                 ? tools_logprobs_completion(tok, j->gen.tokens, j->gen.n_tokens, j->gen.logprobs, j->gen.top_ids,
                                             j->gen.top_logprobs, j->gen.n_top, 0)
                 : tools_logprobs_chat(tok, sv->gvocab, j->gen.tokens, j->gen.n_tokens, j->gen.logprobs,
                                       j->gen.top_ids, j->gen.top_logprobs, j->gen.n_top);
    }
    api_result res = {
        .id = j->id,
        .created = j->created,
        .model = sv->model_name,
        .text = content,
        .reasoning = reasoning,
        .finish_reason = j->gen.finish_reason,
        .stop_sequence = find_stop(sv, req, &j->gen),
        .prompt_tokens = j->gen.prompt_tokens,
        .cached_tokens = j->gen.cached_tokens,
        .completion_tokens = (int64_t)j->gen.n_tokens,
        .tool_calls_json = calls,
        .logprobs_json = lp,
    };
    if (calls && !strcmp(res.finish_reason ? res.finish_reason : "stop", "stop")) res.finish_reason = "tool_calls";
    char *body = NULL;
    if (req->kind == API_OPENAI_CHAT) body = api_openai_chat_response(&res);
    else if (req->kind == API_OPENAI_COMPLETION) body = api_openai_completion_response(&res);
    else body = api_anthropic_message_response(&res);
    free(calls), free(tool_content), free(lp);
    respond_json(r, body);
}

static void handle_model(server *sv, http_request *r, api_kind kind) {
    int anthropic = api_kind_is_anthropic(kind);
    size_t len;
    const char *body = http_request_body(r, &len);
    api_error aerr;
    /* on the heap: a stream job outlives this handler (see job_release) */
    job *j = calloc(1, sizeof *j);
    if (!j) {
        http_respond_error(r, 500, "server_error", "out of memory");
        return;
    }
    api_request *req = &j->req_own;
    if (api_parse_request(kind, body, len, NULL, req, &aerr) != 0) {
        respond_parse_error(r, anthropic, &aerr);
        free(j);
        return;
    }
    j->srv = sv;
    j->hreq = r;
    j->req = req;
    char msg[512];
    int status = prepare_prompt(sv, req, j, msg, sizeof msg);
    if (status) {
        respond_api_error(r, anthropic, status, "%s", msg);
        goto done;
    }
    if (kind == API_ANTHROPIC_COUNT_TOKENS) {
        int64_t n = 0;
        status = count_prompt_tokens(sv, req, j, &n, msg, sizeof msg);
        if (status) respond_api_error(r, anthropic, status, "%s", msg);
        else respond_json(r, api_anthropic_count_tokens_response(n));
        goto done;
    }
    j->created = (int64_t)time(NULL);
    pthread_mutex_lock(&sv->mu);
    if (sv->queued >= sv->max_queue) {
        sv->m.rejected++;
        pthread_mutex_unlock(&sv->mu);
        respond_api_error(r, anthropic, 429, "too many requests waiting (%zu queued); try again later",
                          sv->max_queue);
        http_request_note(r, "error=queue_full");
        goto done;
    }
    sv->queued++;
    unsigned long n = ++sv->counter;
    snprintf(j->id, sizeof j->id, "%s%lu",
             kind == API_OPENAI_CHAT ? "chatcmpl-" : kind == API_OPENAI_COMPLETION ? "cmpl-" : "msg_", n);
    if (sv->tail) sv->tail->next = j;
    else sv->head = j;
    sv->tail = j;
    pthread_cond_signal(&sv->work_cv);
    while (j->phase == PHASE_QUEUED) pthread_cond_wait(&sv->done_cv, &sv->mu);
    if (j->phase == PHASE_STARTED) {
        /* stream: answer now; the worker writes the events. They reach the
         * client only once this handler returns (http.h), so it returns now
         * and the worker finishes and frees the job (job_finish); its log
         * note goes through the stream (http_stream_note). */
        http_stream *stream = j->stream = http_respond_stream(r, 200);
        j->stream_set = 1;
        if (stream) {
            j->detached = 1;
            j->hreq = NULL;
            pthread_cond_broadcast(&sv->done_cv);
            pthread_mutex_unlock(&sv->mu);
            return;
        }
        pthread_cond_broadcast(&sv->done_cv);
        while (j->phase != PHASE_DONE) pthread_cond_wait(&sv->done_cv, &sv->mu);
        pthread_mutex_unlock(&sv->mu);
        http_respond_error(r, 500, "server_error", "out of memory");
    } else {
        pthread_mutex_unlock(&sv->mu);
        if (j->status != OPTIQ_OK) {
            int st = j->status == OPTIQ_ERR_NOMEM ? 500 : j->status == OPTIQ_ERR_IO ? 503 : 400;
            respond_api_error(r, anthropic, st, "%s", j->message);
        } else {
            answer_full(sv, r, j);
        }
    }
    if (j->status == OPTIQ_OK)
        http_request_note(r, "prompt=%lld completion=%zu cached=%lld", (long long)j->gen.prompt_tokens,
                          j->gen.n_tokens, (long long)j->gen.cached_tokens);
    else
        http_request_note(r, "error=%s", optiq_status_name(j->status));
done:
    job_release(j);
}

/* ---- metrics ---------------------------------------------------------------- */

/* Prometheus text format (version 0.0.4). */
static void respond_metrics(server *sv, http_request *r) {
    char buf[8192];
    pthread_mutex_lock(&sv->mu);
    int n = snprintf(buf, sizeof buf,
        "# HELP optiq_requests_total Generation requests by outcome.\n"
        "# TYPE optiq_requests_total counter\n"
        "optiq_requests_total{outcome=\"ok\"} %llu\n"
        "optiq_requests_total{outcome=\"error\"} %llu\n"
        "optiq_requests_total{outcome=\"rejected\"} %llu\n"
        "# HELP optiq_prompt_tokens_total Prompt tokens of finished requests (images expanded).\n"
        "# TYPE optiq_prompt_tokens_total counter\n"
        "optiq_prompt_tokens_total %llu\n"
        "# HELP optiq_generated_tokens_total Tokens generated by finished requests.\n"
        "# TYPE optiq_generated_tokens_total counter\n"
        "optiq_generated_tokens_total %llu\n"
        "# HELP optiq_decode_seconds_total Time finished requests spent decoding after their first token.\n"
        "# TYPE optiq_decode_seconds_total counter\n"
        "optiq_decode_seconds_total %.6f\n"
        "# HELP optiq_time_to_first_token_seconds From a request's start in the batch to its first token.\n"
        "# TYPE optiq_time_to_first_token_seconds summary\n"
        "optiq_time_to_first_token_seconds_sum %.6f\n"
        "optiq_time_to_first_token_seconds_count %llu\n"
        "# HELP optiq_queue_depth Requests waiting for a free slot.\n"
        "# TYPE optiq_queue_depth gauge\n"
        "optiq_queue_depth %zu\n"
        "# HELP optiq_active_generations Generations in the batch now.\n"
        "# TYPE optiq_active_generations gauge\n"
        "optiq_active_generations %zu\n"
        "# HELP optiq_parallel_slots Generations the server runs at once at most.\n"
        "# TYPE optiq_parallel_slots gauge\n"
        "optiq_parallel_slots %zu\n"
        "# HELP optiq_batch_steps_total Batch steps run; optiq_batch_rows_total / this is the mean batch size.\n"
        "# TYPE optiq_batch_steps_total counter\n"
        "optiq_batch_steps_total %llu\n"
        "# TYPE optiq_batch_rows_total counter\n"
        "optiq_batch_rows_total %llu\n",
        (unsigned long long)sv->m.ok, (unsigned long long)sv->m.failed, (unsigned long long)sv->m.rejected,
        (unsigned long long)sv->m.prompt_tokens, (unsigned long long)sv->m.generated_tokens, sv->m.decode_seconds,
        sv->m.ttft_sum, (unsigned long long)sv->m.ttft_count, sv->queued, sv->m.active, sv->parallel,
        (unsigned long long)sv->m.steps, (unsigned long long)sv->m.step_rows);
    pthread_mutex_unlock(&sv->mu);
    optiq_cache_stats cs;
    optiq_engine_cache_stats(sv->engine, &cs);
    if (n > 0 && n < (int)sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n,
        "# HELP optiq_prefix_cache_lookups_total Requests that looked for a cached prefix, by outcome.\n"
        "# TYPE optiq_prefix_cache_lookups_total counter\n"
        "optiq_prefix_cache_lookups_total{outcome=\"hit\"} %llu\n"
        "optiq_prefix_cache_lookups_total{outcome=\"miss\"} %llu\n"
        "# HELP optiq_prefix_cache_tokens_reused_total Prompt tokens restored from the prefix cache instead of computed.\n"
        "# TYPE optiq_prefix_cache_tokens_reused_total counter\n"
        "optiq_prefix_cache_tokens_reused_total %llu\n"
        "# TYPE optiq_prefix_cache_evictions_total counter\n"
        "optiq_prefix_cache_evictions_total %llu\n"
        "# HELP optiq_prefix_cache_bytes Bytes the prefix cache holds (optiq_prefix_cache_max_bytes: at most).\n"
        "# TYPE optiq_prefix_cache_bytes gauge\n"
        "optiq_prefix_cache_bytes %llu\n"
        "# TYPE optiq_prefix_cache_max_bytes gauge\n"
        "optiq_prefix_cache_max_bytes %llu\n"
        "# TYPE optiq_prefix_cache_entries gauge\n"
        "optiq_prefix_cache_entries %llu\n"
        "# HELP optiq_vision_cache_lookups_total Images looked up in the vision-feature cache, by outcome.\n"
        "# TYPE optiq_vision_cache_lookups_total counter\n"
        "optiq_vision_cache_lookups_total{outcome=\"hit\"} %llu\n"
        "optiq_vision_cache_lookups_total{outcome=\"miss\"} %llu\n"
        "# HELP optiq_vision_images_encoded_total Images that went through the vision tower.\n"
        "# TYPE optiq_vision_images_encoded_total counter\n"
        "optiq_vision_images_encoded_total %llu\n"
        "# TYPE optiq_vision_cache_bytes gauge\n"
        "optiq_vision_cache_bytes %llu\n",
        (unsigned long long)cs.prefix_hits, (unsigned long long)cs.prefix_misses,
        (unsigned long long)cs.prefix_tokens_reused, (unsigned long long)cs.prefix_evictions,
        (unsigned long long)cs.prefix_bytes, (unsigned long long)cs.prefix_max_bytes,
        (unsigned long long)cs.prefix_entries, (unsigned long long)cs.vision_hits, (unsigned long long)cs.vision_misses,
        (unsigned long long)cs.vision_encoded, (unsigned long long)cs.vision_bytes);
    http_respond(r, 200, "text/plain; version=0.0.4", buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
}

/* ---- info ------------------------------------------------------------------ */

/* The folder's description (optiq inspect --json) without its "path": a
 * client learns the model, not where the server keeps it. NULL when the
 * folder cannot be described (the engine loaded it, so only out of memory). */
static char *folder_json(const char *dir) {
    optiq_model_info *mi = NULL;
    if (optiq_model_info_open(dir, &mi, NULL) != OPTIQ_OK) return NULL;
    char *text = optiq_model_info_json(mi);
    optiq_model_info_free(mi);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    optiq_free(text);
    if (!doc) return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(doc, "path");
    char *out = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    return out; /* cJSON's allocator is malloc here */
}

/* GET /info: the model (architecture, quantization, vision) and the
 * server's settings and queue state, as one JSON object (docs/server-api.md). */
static char *info_json(server *sv) {
    const server_config *c = sv->cfg;
    cJSON *o = cJSON_CreateObject(), *m = cJSON_AddObjectToObject(o, "model"),
          *s = cJSON_AddObjectToObject(o, "server");
    if (!m || !s) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(o, "object", "optiq.info");
    cJSON_AddStringToObject(m, "id", sv->model_name);
    cJSON_AddStringToObject(m, "model_type", optiq_engine_model_type(sv->engine));
    cJSON_AddBoolToObject(m, "vision", sv->vision);
    cJSON_AddBoolToObject(m, "thinking", optiq_engine_has_thinking(sv->engine));
    cJSON_AddNumberToObject(m, "context", (double)optiq_engine_context(sv->engine));
    cJSON_AddNumberToObject(m, "vocab_size", (double)optiq_engine_vocab_size(sv->engine));
    cJSON *folder = sv->folder_json ? cJSON_Parse(sv->folder_json) : NULL;
    if (folder) cJSON_AddItemToObject(m, "folder", folder);
    else cJSON_AddNullToObject(m, "folder");
    cJSON_AddStringToObject(s, "version", optiq_version());
    cJSON_AddStringToObject(s, "host", c->host ? c->host : "127.0.0.1");
    pthread_mutex_lock(&sv->mu);
    cJSON_AddNumberToObject(s, "port", sv->port);
    cJSON_AddNumberToObject(s, "active_generations", (double)sv->m.active);
    cJSON_AddNumberToObject(s, "queue_depth", (double)sv->queued);
    pthread_mutex_unlock(&sv->mu);
    cJSON_AddNumberToObject(s, "started", (double)sv->started);
    cJSON_AddNumberToObject(s, "threads", c->engine.n_threads > 0 ? c->engine.n_threads : cpu_physical_cores());
    cJSON_AddBoolToObject(s, "exact", c->engine.exact);
    cJSON_AddNumberToObject(s, "parallel", (double)sv->parallel);
    cJSON_AddNumberToObject(s, "max_queue", (double)sv->max_queue);
    cJSON_AddNumberToObject(s, "prefix_cache_mb", (double)c->engine.prefix_cache_mb);
    cJSON_AddNumberToObject(s, "vision_cache_mb", (double)c->engine.vision_cache_mb);
    cJSON_AddBoolToObject(s, "api_key_required", c->api_key && *c->api_key);
    cJSON_AddBoolToObject(s, "allow_remote_images", c->allow_remote_images);
    cJSON_AddNumberToObject(s, "max_image_bytes",
                            c->allow_remote_images
                                ? (double)(c->max_image_bytes ? c->max_image_bytes : fetch_policy_default().max_bytes)
                                : 0);
    http_config hd = http_config_default();
    cJSON_AddNumberToObject(s, "max_body_bytes", (double)hd.max_body);
    cJSON_AddNumberToObject(s, "timeout_s", c->timeout_s ? c->timeout_s : hd.timeout_s);
    cJSON_AddNumberToObject(s, "header_timeout_s", c->header_timeout_s ? c->header_timeout_s : hd.header_timeout_s);
    cJSON_AddNumberToObject(s, "body_timeout_s", c->body_timeout_s ? c->body_timeout_s : hd.body_timeout_s);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

/* ---- routing --------------------------------------------------------------- */

static void handle(http_request *r, void *user) {
    server *sv = user;
    const char *method = http_request_method(r), *path = http_request_path(r);
    static const struct {
        const char *path;
        const char *method;
        int kind; /* -1 health, -2 models, -3 metrics, -4 info, else api_kind */
    } routes[] = {
        {"/health", "GET", -1},
        {"/v1/models", "GET", -2},
        {"/metrics", "GET", -3},
        {"/info", "GET", -4},
        {"/v1/chat/completions", "POST", API_OPENAI_CHAT},
        {"/v1/completions", "POST", API_OPENAI_COMPLETION},
        {"/v1/messages", "POST", API_ANTHROPIC_MESSAGES},
        {"/v1/messages/count_tokens", "POST", API_ANTHROPIC_COUNT_TOKENS},
    };
    if (lab_owns_path(path)) {
        lab_respond(r); /* static files: no API key needed to load the page */
        return;
    }
    int anthropic = strncmp(path, "/v1/messages", 12) == 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path) != 0) continue;
        if (strcmp(method, routes[i].method) != 0 &&
            !(strcmp(routes[i].method, "GET") == 0 && strcmp(method, "HEAD") == 0)) {
            http_response_header(r, "Allow", routes[i].method);
            respond_api_error(r, anthropic, 405, "method %s is not allowed on %s (use %s)", method, path,
                              routes[i].method);
            return;
        }
        if (routes[i].kind == -1) {
            const char ok[] = "{\"status\":\"ok\"}";
            http_respond(r, 200, NULL, ok, sizeof ok - 1);
            return;
        }
        if (!authorized(sv, r)) {
            respond_api_error(r, anthropic, 401, "invalid or missing API key");
            return;
        }
        if (routes[i].kind == -2) {
            respond_json(r, api_models_response(sv->model_name, sv->started, sv->vision));
            return;
        }
        if (routes[i].kind == -3) {
            respond_metrics(sv, r);
            return;
        }
        if (routes[i].kind == -4) {
            respond_json(r, info_json(sv));
            return;
        }
        handle_model(sv, r, (api_kind)routes[i].kind);
        return;
    }
    respond_api_error(r, anthropic, 404, "no route for %s %s", method, path);
}

/* The HTTP layer's own errors (413, 411, 500) in the format of the path's API. */
static char *layer_error_body(void *user, const char *path, int status, const char *type, const char *message) {
    (void)user;
    (void)type;
    api_error e;
    api_error_set(&e, status, NULL, "%s", message);
    return api_error_json(path && strncmp(path, "/v1/messages", 12) == 0, &e);
}

/* ---- run ----------------------------------------------------------------- */

static void set_model_name(server *sv, const char *dir) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *b = strrchr(buf, '/');
    const char *name = b && b[1] ? b + 1 : buf;
    size_t len = strlen(name);
    if (len >= sizeof sv->model_name) len = sizeof sv->model_name - 1;
    memcpy(sv->model_name, name, len);
    sv->model_name[len] = 0;
}

optiq_status server_run(const server_config *cfg, optiq_error *err) {
    server sv;
    memset(&sv, 0, sizeof sv);
    sv.cfg = cfg;
    if (!cfg || !cfg->model_dir) {
        if (err) {
            err->status = OPTIQ_ERR_INVALID_ARG;
            snprintf(err->message, sizeof err->message, "no model folder");
        }
        return OPTIQ_ERR_INVALID_ARG;
    }
    set_model_name(&sv, cfg->model_dir);
    /* SIGINT/SIGTERM go to sigwait below: block them before any thread starts
     * (the engine's thread pool included), so that no other thread takes them */
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    signal(SIGPIPE, SIG_IGN);
    optiq_status st = optiq_engine_load(cfg->model_dir, &cfg->engine, &sv.engine, err);
    sv.parallel = cfg->parallel ? cfg->parallel : 4;
    sv.max_queue = cfg->max_queue ? cfg->max_queue : 64;
    if (st == OPTIQ_OK) st = optiq_batch_new(sv.engine, sv.parallel, &sv.batch, err);
    if (st == OPTIQ_OK) {
        sv.sessions = calloc(sv.parallel, sizeof *sv.sessions);
        sv.slot_job = calloc(sv.parallel, sizeof *sv.slot_job);
        if (!sv.sessions || !sv.slot_job) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; st == OPTIQ_OK && i < sv.parallel; i++) st = optiq_session_new(sv.engine, &sv.sessions[i], err);
    if (st != OPTIQ_OK) {
        for (size_t i = 0; sv.sessions && i < sv.parallel; i++) optiq_session_free(sv.sessions[i]);
        free(sv.sessions), free(sv.slot_job);
        optiq_batch_free(sv.batch);
        optiq_engine_free(sv.engine);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return st;
    }
    sv.vision = optiq_engine_has_vision(sv.engine);
    reasoning_tags_infer(optiq_engine_tokenizer(sv.engine), &sv.think_tags);
    sv.tool_syn = tools_syntax_for(optiq_engine_model_type(sv.engine));
    {
        const int32_t *eos;
        size_t n_eos = optiq_engine_eos_ids(sv.engine, &eos);
        sv.gvocab = grammar_vocab_new(optiq_engine_tokenizer(sv.engine), optiq_engine_vocab_size(sv.engine), eos, n_eos);
    }
    sv.started = (int64_t)time(NULL);
    sv.folder_json = folder_json(cfg->model_dir);
    const char *delay = getenv("OPTIQ_SERVE_TOKEN_DELAY_MS");
    if (delay && atoi(delay) > 0) sv.token_delay_us = (long)(atoi(delay) < 10000 ? atoi(delay) : 10000) * 1000;
    pthread_mutex_init(&sv.mu, NULL);
    pthread_mutex_init(&sv.prep_mu, NULL);
    pthread_cond_init(&sv.work_cv, NULL);
    pthread_cond_init(&sv.done_cv, NULL);

    pthread_t worker;
    http_server *hs = NULL;
    int worker_started = 0;
    if (pthread_create(&worker, NULL, worker_main, &sv) != 0) {
        st = OPTIQ_ERR_NOMEM;
        if (err) {
            err->status = st;
            snprintf(err->message, sizeof err->message, "cannot start the worker thread");
        }
        goto done;
    }
    worker_started = 1;
    http_config hc = http_config_default();
    if (cfg->host) hc.host = cfg->host;
    hc.port = cfg->port;
    hc.timeout_s = cfg->timeout_s;
    hc.header_timeout_s = cfg->header_timeout_s;
    hc.body_timeout_s = cfg->body_timeout_s;
    hc.error_body = layer_error_body;
    hc.log_file = stderr;
    if ((st = http_server_start(&hc, handle, &sv, &hs, err)) != OPTIQ_OK) goto done;
    fprintf(stderr, "optiq serve: listening on http://%s:%d (model %s, vision %s, %zu at once)\n", hc.host,
            http_server_port(hs), sv.model_name, sv.vision ? "on" : "off", sv.parallel);
    fflush(stderr);
    pthread_mutex_lock(&sv.mu);
    sv.port = http_server_port(hs);
    pthread_mutex_unlock(&sv.mu);
    if (cfg->on_ready) cfg->on_ready(cfg->ready_user, hc.host, http_server_port(hs));

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "optiq serve: %s received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    http_server_stop(hs, cfg->drain_ms > 0 ? cfg->drain_ms : 3000);
    hs = NULL;
done:
    if (worker_started) {
        pthread_mutex_lock(&sv.mu);
        sv.quit = 1;
        pthread_cond_broadcast(&sv.work_cv);
        pthread_mutex_unlock(&sv.mu);
        pthread_join(worker, NULL);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_cond_destroy(&sv.done_cv);
    pthread_cond_destroy(&sv.work_cv);
    pthread_mutex_destroy(&sv.prep_mu);
    pthread_mutex_destroy(&sv.mu);
    optiq_batch_free(sv.batch);
    for (size_t i = 0; i < sv.parallel; i++) optiq_session_free(sv.sessions[i]);
    free(sv.sessions), free(sv.slot_job);
    free(sv.folder_json);
    grammar_vocab_free(sv.gvocab);
    optiq_engine_free(sv.engine);
    return st;
}
