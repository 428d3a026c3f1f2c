/*
 * tools.h — tool calls in each model family's own syntax: parsing a reply
 * into OpenAI tool_calls / Anthropic tool_use blocks, the grammar that forces
 * a call (tool_choice "required" or a named function), and the message
 * rewriting a family's template needs to read tool results back.
 *
 * Syntaxes (as the families' chat templates write them and mlx-lm's tool
 * parsers read them):
 *   TOOLS_QWEN   <tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n...
 *                </function>\n</tool_call>  (Qwen3.5; a VALUE is raw text for a
 *                string parameter, JSON otherwise); the JSON form
 *                <tool_call>{"name": ..., "arguments": {...}}</tool_call> of
 *                Qwen3 is read too
 *   TOOLS_GEMMA  <|tool_call>call:NAME{key:VALUE,...}<tool_call|>  (Gemma-4;
 *                strings between <|"|> markers, bare keys)
 * A call that does not parse stays in the content as text. The module also
 * writes generated tokens' log-probabilities in the OpenAI formats.
 */
#ifndef OPTIQ_SERVER_TOOLS_H
#define OPTIQ_SERVER_TOOLS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "optiq.h"
#include "text/grammar.h"

typedef enum tool_syntax { TOOLS_QWEN = 0, TOOLS_GEMMA = 1 } tool_syntax;

/* The syntax of a model_type (gemma4* -> TOOLS_GEMMA, else TOOLS_QWEN). */
tool_syntax tools_syntax_for(const char *model_type);

typedef struct tool_call {
    char *id;        /* "call_<prefix>_<n>" */
    char *name;
    char *arguments; /* a JSON object, printed */
} tool_call;

typedef struct tool_parse {
    char *content;   /* the text outside the calls (NUL-terminated) */
    tool_call *calls;
    size_t n_calls;
} tool_parse;

/* Split text into content and calls. tools (may be NULL): the OpenAI tools
 * array, whose parameter types decide how Qwen's raw values are read.
 * The calls' ids are id_prefix "_" index (id_prefix NULL: "call"). 0, or -1
 * when out of memory. */
int tools_parse(tool_syntax syn, const char *text, size_t len, const cJSON *tools, const char *id_prefix,
                tool_parse *out);
void tools_parse_free(tool_parse *p);

/* Bytes of text that may be streamed as content now: up to the first start
 * of a call, less a tail that could be the beginning of one. */
size_t tools_safe_prefix(tool_syntax syn, const char *text, size_t len);

/* Append to g the syntax of exactly one call to one of the tools (only the
 * one named only_name when it is not NULL), its arguments constrained by
 * the tool's parameters schema. OPTIQ_ERR_INVALID_ARG: no such tool, or a
 * schema the grammar cannot enforce (the message says which). */
optiq_status tools_grammar(tool_syntax syn, const cJSON *tools, const char *only_name, grammar *g, optiq_error *err);

/* Gemma-4's template reads a tool result from the "tool_responses" of the
 * message that made the call ({"name", "response"}), not from a "tool"
 * message: each "tool" message is folded into the assistant message before
 * it. Returns the new messages array (printed; caller frees), or NULL when
 * out of memory. Other messages pass unchanged. */
char *tools_fold_results_gemma(const char *messages_json);

/* Log-probabilities of generated tokens (lps: (n); top_ids / top_lps:
 * (n, n_top), -1 ids unused) as OpenAI writes them: chat's
 * choices[].logprobs.content array [{"token", "logprob", "bytes",
 * "top_logprobs"}] and the completions endpoint's legacy object {"tokens",
 * "token_logprobs", "top_logprobs" (token -> logprob), "text_offset"
 * (from offset)}. Printed; NULL when out of memory. */
char *tools_logprobs_chat(const optiq_tokenizer *tok, const grammar_vocab *v, const int32_t *ids, size_t n,
                          const float *lps, const int32_t *top_ids, const float *top_lps, int n_top);
char *tools_logprobs_completion(const optiq_tokenizer *tok, const int32_t *ids, size_t n, const float *lps,
                                const int32_t *top_ids, const float *top_lps, int n_top, size_t offset);

#endif
