/*
 * api.h — the request/response layer of `optiq serve`: no HTTP, no model.
 *
 * Request bodies of the OpenAI (/v1/chat/completions, /v1/completions) and
 * Anthropic (/v1/messages, /v1/messages/count_tokens) APIs are parsed into one
 * api_request: the messages as the OpenAI-style JSON array the chat template
 * takes (images as {"type":"image"} parts in place), the image URLs in order,
 * the sampling parameters, max_tokens, stop strings and stream flags. Every
 * failure fills an api_error (HTTP status, type, param, message) that
 * api_error_json writes in the API's own error format. The response builders
 * are pure functions of an api_result; the streaming ones (api_stream_*)
 * produce the SSE text in the order each SDK expects. The split of
 * generated text into reasoning and content is text/reasoning.h's.
 *
 * Accepted keys, limits and the error mapping: docs/server-api.md.
 * Every returned string is malloc'd and NUL-terminated; the caller frees it
 * with free(). NULL means out of memory.
 */
#ifndef OPTIQ_SERVER_API_H
#define OPTIQ_SERVER_API_H

#include <stddef.h>
#include <stdint.h>

#include "optiq.h"

typedef enum api_kind {
    API_OPENAI_CHAT = 0,        /* POST /v1/chat/completions */
    API_OPENAI_COMPLETION,      /* POST /v1/completions */
    API_ANTHROPIC_MESSAGES,     /* POST /v1/messages */
    API_ANTHROPIC_COUNT_TOKENS  /* POST /v1/messages/count_tokens */
} api_kind;

/* 1 for the two Anthropic kinds: their errors use Anthropic's format. */
static inline int api_kind_is_anthropic(api_kind k) {
    return k == API_ANTHROPIC_MESSAGES || k == API_ANTHROPIC_COUNT_TOKENS;
}

typedef struct api_limits {
    size_t max_body;   /* bytes of a request body (413 beyond); default 32 MiB */
    int max_depth;     /* nesting of JSON arrays/objects; default 64 */
    size_t max_images; /* images in one request; default 32 */
    size_t max_stop;   /* stop strings; default 16 */
} api_limits;

api_limits api_limits_default(void);

typedef struct api_error {
    int http_status;   /* 400, 413, ... */
    char type[32];     /* "invalid_request_error", ... (OpenAI's names) */
    char param[96];    /* the offending key path ("messages[1].content[0].image_url.url"), or "" */
    char message[384];
} api_error;

/* Fill e (status, param may be NULL). type follows from the status:
 * 400/413/422 invalid_request_error, 401 authentication_error,
 * 403 permission_error, 404 not_found_error, 429 rate_limit_error,
 * 503 overloaded_error, else api_error. Returns the status. */
int api_error_set(api_error *e, int http_status, const char *param, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The error body:
 *   OpenAI:    {"error":{"message":...,"type":...,"param":...|null,"code":null}}
 *   Anthropic: {"type":"error","error":{"type":...,"message":...}}
 * (Anthropic names 413 "request_too_large" and 5xx "api_error"). */
char *api_error_json(int anthropic, const api_error *e);

typedef struct api_request {
    api_kind kind;
    char *model;            /* NULL when not given */
    char *messages_json;    /* chat kinds: normalized OpenAI-style messages array; NULL for completions */
    char *prompt;           /* API_OPENAI_COMPLETION: the prompt text; NULL otherwise */
    char **images;          /* data: or http(s) URLs, in the order of the image parts */
    size_t n_images;
    optiq_sampling sampling;
    int max_tokens;         /* 0 when not given */
    int image_tokens;       /* "image_tokens" (optiq extension): every image's soft-token budget
                               (Gemma-4: 70, 140, 280, 560, 1120); 0 when not given */
    char **stop;            /* stop strings (Anthropic: stop_sequences) */
    size_t n_stop;
    int stream;             /* 1: SSE response */
    int include_usage;      /* OpenAI stream_options.include_usage */
    char *chat_template_kwargs_json; /* an object, or NULL; Anthropic thinking -> {"enable_thinking":bool} */
    char *tools_json;       /* OpenAI "tools" array as given (Anthropic's tools converted to it), or NULL */
    int tool_choice;        /* API_TOOLS_AUTO, _NONE, _REQUIRED, _NAMED */
    char *tool_choice_name; /* API_TOOLS_NAMED: the function */
    int response_format;    /* API_FORMAT_TEXT, _JSON_OBJECT, _JSON_SCHEMA */
    char *schema_json;      /* API_FORMAT_JSON_SCHEMA: the schema, printed */
    int logprobs;           /* 1: log-probabilities of the generated tokens */
    int top_logprobs;       /* 0..20 alternatives per token */
} api_request;

enum { API_TOOLS_AUTO = 0, API_TOOLS_NONE, API_TOOLS_REQUIRED, API_TOOLS_NAMED };
enum { API_FORMAT_TEXT = 0, API_FORMAT_JSON_OBJECT, API_FORMAT_JSON_SCHEMA };

/* Parse a request body of len bytes (it need not be NUL-terminated). On
 * success returns 0 and fills *out (free with api_request_free); otherwise
 * returns the HTTP status, fills *err and leaves *out empty. lim NULL: the
 * defaults. */
int api_parse_request(api_kind kind, const char *body, size_t len, const api_limits *lim, api_request *out,
                      api_error *err);
void api_request_free(api_request *r);

/* ---- responses ---- */

typedef struct api_result {
    const char *id;             /* "chatcmpl-...", "cmpl-...", "msg_..." */
    int64_t created;            /* seconds since the epoch (OpenAI) */
    const char *model;
    const char *text;           /* content (NULL: empty) */
    const char *reasoning;      /* text before </think>, or NULL */
    const char *finish_reason;  /* optiq's: "stop", "length", "abort" (NULL: "stop") */
    const char *stop_sequence;  /* the stop string that ended generation, or NULL */
    int64_t prompt_tokens;
    int64_t cached_tokens;      /* of prompt_tokens, restored from the prefix cache (OpenAI
                                   usage.prompt_tokens_details.cached_tokens when > 0) */
    int64_t completion_tokens;
    const char *tool_calls_json; /* [{"id","name","arguments"}] printed, or NULL: none */
    const char *logprobs_json;   /* chat: the "content" array; completions: the legacy object; or NULL */
} api_result;

/* Anthropic stop_reason for optiq's finish reason: "end_turn", "max_tokens", "stop_sequence". */
const char *api_anthropic_stop_reason(const char *finish_reason, const char *stop_sequence);

char *api_openai_chat_response(const api_result *r);       /* chat.completion */
char *api_openai_completion_response(const api_result *r); /* text_completion */
char *api_anthropic_message_response(const api_result *r); /* message */
char *api_anthropic_count_tokens_response(int64_t input_tokens);
/* {"object":"list","data":[{"id","object":"model","created","owned_by":"optiq","input_modalities"}]} */
char *api_models_response(const char *model_id, int64_t created, int vision);

/* A streamed response: begin once, delta per generated piece, end once; each
 * call returns the SSE text to send now (possibly ""):
 *   OpenAI chat:  role chunk; content / reasoning_content chunks; the
 *                 finish_reason chunk; the usage chunk when include_usage;
 *                 data: [DONE]
 *   completions:  (nothing); text chunks; the finish_reason chunk; usage; [DONE]
 *   Anthropic:    message_start; content_block_start / _delta / _stop per
 *                 block (a "thinking" block, then a "text" block); message_delta
 *                 (stop_reason, usage.output_tokens); message_stop */
typedef struct api_stream {
    api_kind kind;
    api_result meta;   /* id, created, model, prompt_tokens; strings borrowed */
    int include_usage;
    int block;         /* Anthropic: index of the open block, -1 none */
    int block_type;    /* 0 none, 1 thinking, 2 text */
    int n_tool_blocks; /* tool calls sent (api_stream_tool_calls) */
    char *logprobs_json; /* attached to the next content chunk (OpenAI), then freed; or NULL */
} api_stream;

void api_stream_init(api_stream *s, api_kind kind, const char *id, int64_t created, const char *model,
                     int64_t prompt_tokens, int include_usage);
char *api_stream_begin(api_stream *s);
char *api_stream_delta(api_stream *s, const char *reasoning, size_t reasoning_len, const char *text,
                       size_t text_len);
char *api_stream_end(api_stream *s, const char *finish_reason, const char *stop_sequence,
                     int64_t completion_tokens);
/* Tool calls ([{"id","name","arguments"}] printed), after the content: OpenAI
 * tool_calls deltas (one chunk per call, arguments whole); Anthropic
 * tool_use blocks (content_block_start, one input_json_delta, stop). */
char *api_stream_tool_calls(api_stream *s, const char *calls_json);

#endif
