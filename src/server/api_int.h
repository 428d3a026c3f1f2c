/*
 * api_int.h — helpers shared by the OpenAI and Anthropic halves of api.c.
 *
 * Every helper returns 0 on success or the HTTP status it set in the error.
 * Optional keys that are absent or JSON null count as not given.
 */
#ifndef OPTIQ_SERVER_API_INT_H
#define OPTIQ_SERVER_API_INT_H

#include <cjson/cJSON.h>

#include "server/api.h"

typedef struct api_ctx {
    const api_limits *lim;
    api_request *req;
    api_error *err;
    size_t cap_images;
} api_ctx;

/* The item for key, or NULL when absent or null. */
const cJSON *api_opt(const cJSON *obj, const char *key);
/* A content part / block of a message: an object with a string "type" (*type); 0 or the error status. */
int api_content_part(api_ctx *c, const cJSON *part, const char *param, const char **type);

int api_get_string(api_ctx *c, const cJSON *obj, const char *key, int required, const char **out);
int api_get_bool(api_ctx *c, const cJSON *obj, const char *key, int *out);
/* A finite number in [lo, hi]; *out unchanged when absent. */
int api_get_number(api_ctx *c, const cJSON *obj, const char *key, double lo, double hi, double *out);
/* An integer in [lo, hi]; *out unchanged when absent. */
int api_get_int(api_ctx *c, const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out);

/* key: a string or a list of strings (Anthropic: list only). */
int api_get_stop(api_ctx *c, const cJSON *obj, const char *key, int allow_string);

/* Validate an image URL (data:<type>;base64,<valid base64> or http(s)://)
 * and append it to the request's images. param names it in errors. */
int api_add_image(api_ctx *c, const char *url, const char *param);

/* Out of memory as an error (500). */
int api_nomem(api_ctx *c);

/* {"type":"text","text":s} appended to parts; 0 or 500. */
int api_add_text_part(api_ctx *c, cJSON *parts, const char *s);

int api_parse_openai(api_ctx *c, const cJSON *body);
int api_parse_anthropic(api_ctx *c, const cJSON *body);

/* Shared response plumbing. */
char *api_print(cJSON *j); /* prints and deletes j; NULL on failure */
char *api_sse(const char *event, cJSON *j); /* "event: E\ndata: J\n\n" (no event line when NULL); deletes j */

/* Build a chat message object {"role", "content"} into out_msgs. */
int api_push_message(api_ctx *c, cJSON *msgs, const char *role, cJSON *content);

/* Streaming halves (api_stream_* dispatch on the kind). */
char *api_openai_stream_begin(api_stream *s);
char *api_openai_stream_delta(api_stream *s, const char *r, size_t rn, const char *t, size_t tn);
char *api_openai_stream_end(api_stream *s, const char *finish_reason, int64_t completion_tokens);
char *api_anthropic_stream_begin(api_stream *s);
char *api_anthropic_stream_delta(api_stream *s, const char *r, size_t rn, const char *t, size_t tn);
char *api_anthropic_stream_end(api_stream *s, const char *finish_reason, const char *stop_sequence,
                               int64_t completion_tokens);

char *api_openai_stream_tool_calls(api_stream *s, const char *calls_json);
char *api_anthropic_stream_tool_calls(api_stream *s, const char *calls_json);

/* A string joined from pieces (concatenation of a+b, etc.). */
char *api_concat(char *acc, const char *s, size_t n);

#endif
