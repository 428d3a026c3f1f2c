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
 * worker writes SSE events through the http stream and aborts generation
 * when the client has gone away. Non-stream jobs poll the client's socket
 * (http_request_cancelled) before they start and after every token, so a
 * client that leaves does not hold the worker.
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
    int vision;
    reasoning_tags think_tags; /* the vocabulary's thinking markers */
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
        if (req->tools_json) {
            cJSON *tools = cJSON_Parse(req->tools_json);
            if (tools) cJSON_AddItemToObject(o, "tools", tools);
        }
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
        optiq_status st = optiq_chat_template_render(t, req->messages_json, strlen(req->messages_json), opts,
                                                     &prompt, &plen, &err);
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
    return stream_send(j, api_stream_delta(&j->sse, j->think.reasoning, j->think.reasoning_len, j->think.content,
                                           j->think.content_len));
}

static int on_token(void *user, int32_t id, const char *text, size_t len) {
    job *j = user;
    if (id >= 0) j->seen_tokens++;
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
    return http_request_cancelled(j->hreq);
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
                const char *fr = st == OPTIQ_OK ? j->gen.finish_reason : "abort";
                stream_send(j, api_stream_end(&j->sse, fr, st == OPTIQ_OK ? find_stop(sv, j->req, &j->gen) : NULL,
                                              (int64_t)(st == OPTIQ_OK ? j->gen.n_tokens : j->seen_tokens)));
            }
            if (j->stream) http_stream_close(j->stream);
            j->stream = NULL;
        }
    }
    reasoning_split_free(&j->think);
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
    pthread_cond_broadcast(&sv->done_cv);
    pthread_mutex_unlock(&sv->mu);
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
    api_result res = {
        .id = j->id,
        .created = j->created,
        .model = sv->model_name,
        .text = content,
        .reasoning = reasoning,
        .finish_reason = j->gen.finish_reason,
        .stop_sequence = find_stop(sv, req, &j->gen),
        .prompt_tokens = j->gen.prompt_tokens,
        .completion_tokens = (int64_t)j->gen.n_tokens,
    };
    char *body = NULL;
    if (req->kind == API_OPENAI_CHAT) body = api_openai_chat_response(&res);
    else if (req->kind == API_OPENAI_COMPLETION) body = api_openai_completion_response(&res);
    else body = api_anthropic_message_response(&res);
    respond_json(r, body);
}

static void handle_model(server *sv, http_request *r, api_kind kind) {
    int anthropic = api_kind_is_anthropic(kind);
    size_t len;
    const char *body = http_request_body(r, &len);
    api_request req;
    api_error aerr;
    if (api_parse_request(kind, body, len, NULL, &req, &aerr) != 0) {
        respond_parse_error(r, anthropic, &aerr);
        return;
    }
    job j;
    memset(&j, 0, sizeof j);
    j.srv = sv;
    j.hreq = r;
    j.req = &req;
    char msg[512];
    int status = prepare_prompt(sv, &req, &j, msg, sizeof msg);
    if (status) {
        respond_api_error(r, anthropic, status, "%s", msg);
        goto done;
    }
    if (kind == API_ANTHROPIC_COUNT_TOKENS) {
        int64_t n = 0;
        status = count_prompt_tokens(sv, &req, &j, &n, msg, sizeof msg);
        if (status) respond_api_error(r, anthropic, status, "%s", msg);
        else respond_json(r, api_anthropic_count_tokens_response(n));
        goto done;
    }
    j.created = (int64_t)time(NULL);
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
    snprintf(j.id, sizeof j.id, "%s%lu",
             kind == API_OPENAI_CHAT ? "chatcmpl-" : kind == API_OPENAI_COMPLETION ? "cmpl-" : "msg_", n);
    if (sv->tail) sv->tail->next = &j;
    else sv->head = &j;
    sv->tail = &j;
    pthread_cond_signal(&sv->work_cv);
    while (j.phase == PHASE_QUEUED) pthread_cond_wait(&sv->done_cv, &sv->mu);
    if (j.phase == PHASE_STARTED) {
        /* stream: answer now; the worker writes the events */
        http_stream *stream = j.stream = http_respond_stream(r, 200);
        j.stream_set = 1;
        pthread_cond_broadcast(&sv->done_cv);
        while (j.phase != PHASE_DONE) pthread_cond_wait(&sv->done_cv, &sv->mu);
        pthread_mutex_unlock(&sv->mu);
        if (!stream) http_respond_error(r, 500, "server_error", "out of memory");
    } else {
        pthread_mutex_unlock(&sv->mu);
        if (j.status != OPTIQ_OK) {
            int st = j.status == OPTIQ_ERR_NOMEM ? 500 : j.status == OPTIQ_ERR_IO ? 503 : 400;
            respond_api_error(r, anthropic, st, "%s", j.message);
        } else {
            answer_full(sv, r, &j);
        }
    }
    if (j.status == OPTIQ_OK)
        http_request_note(r, "prompt=%lld completion=%zu", (long long)j.gen.prompt_tokens, j.gen.n_tokens);
    else
        http_request_note(r, "error=%s", optiq_status_name(j.status));
done:
    optiq_generation_free(&j.gen);
    optiq_free(j.ids);
    free_images(&j, req.n_images);
    api_request_free(&req);
}

/* ---- metrics ---------------------------------------------------------------- */

/* Prometheus text format (version 0.0.4). */
static void respond_metrics(server *sv, http_request *r) {
    char buf[4096];
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
    http_respond(r, 200, "text/plain; version=0.0.4", buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
}

/* ---- routing --------------------------------------------------------------- */

static void handle(http_request *r, void *user) {
    server *sv = user;
    const char *method = http_request_method(r), *path = http_request_path(r);
    static const struct {
        const char *path;
        const char *method;
        int kind; /* -1 health, -2 models, -3 metrics, else api_kind */
    } routes[] = {
        {"/health", "GET", -1},
        {"/v1/models", "GET", -2},
        {"/metrics", "GET", -3},
        {"/v1/chat/completions", "POST", API_OPENAI_CHAT},
        {"/v1/completions", "POST", API_OPENAI_COMPLETION},
        {"/v1/messages", "POST", API_ANTHROPIC_MESSAGES},
        {"/v1/messages/count_tokens", "POST", API_ANTHROPIC_COUNT_TOKENS},
    };
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
    sv.started = (int64_t)time(NULL);
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
    optiq_engine_free(sv.engine);
    return st;
}
