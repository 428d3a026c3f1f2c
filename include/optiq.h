/*
 * optiq.h — the public C API of liboptiq.
 *
 * optiq runs MLX / OptIQ-format quantized vision-language models on Linux.
 * This header is the only one the CLI, the server and the language bindings
 * use; everything behind it is private. Conventions:
 *   - every fallible call returns an optiq_status (OPTIQ_OK == 0);
 *   - the message of the last failure is kept per handle (or, for calls that
 *     create a handle, in the optiq_error the caller passes in);
 *   - the library never exits the process and never prints unless asked.
 */
#ifndef OPTIQ_H
#define OPTIQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPTIQ_VERSION_MAJOR 0
#define OPTIQ_VERSION_MINOR 1
#define OPTIQ_VERSION_PATCH 0
#define OPTIQ_VERSION_STRING "0.1.0"

typedef enum optiq_status {
    OPTIQ_OK = 0,
    OPTIQ_ERR_IO = 1,          /* a file could not be opened, read or written */
    OPTIQ_ERR_FORMAT = 2,      /* a file is corrupt or not what it claims to be */
    OPTIQ_ERR_INVALID_ARG = 3, /* the caller passed something unusable */
    OPTIQ_ERR_NOMEM = 4,       /* an allocation failed */
    OPTIQ_ERR_UNSUPPORTED = 5, /* valid input this build cannot handle */
    OPTIQ_ERR_CONTEXT = 6      /* the tokens do not fit in the context window */
} optiq_status;

/* Room for one error message; filled by calls that fail before a handle exists. */
typedef struct optiq_error {
    optiq_status status;
    char message[512];
} optiq_error;

/* Library version string, e.g. "0.1.0". */
const char *optiq_version(void);

/* Short name of a status code ("format error", ...). */
const char *optiq_status_name(optiq_status status);

/* ---- model folders ---------------------------------------------------- */

/* A model folder opened for inspection: config.json, the language-tower
 * safetensors (model*.safetensors, as stock mlx-lm globs them, cross-checked
 * against model.safetensors.index.json when present), the optional vision
 * sidecar optiq_vision.safetensors, and the tokenizer / template files.
 * Opening validates every safetensors header and resolves which modules are
 * quantized with which (mode, bits, group size); a folder that fails any
 * check is refused with a message naming the file and what is wrong.
 * Weight files are read once into memory on transparent huge pages when they
 * fit in half of the available memory, else memory-mapped (OPTIQ_MMAP=1 always
 * maps, OPTIQ_MMAP=0 always reads). */
typedef struct optiq_model_info optiq_model_info;

optiq_status optiq_model_info_open(const char *dir, optiq_model_info **out, optiq_error *err);
void optiq_model_info_free(optiq_model_info *info);

/* Language-tower parameter count as mlx-lm's get_total_parameters reports it
 * (quantized weights counted unpacked; scales and biases not counted). */
uint64_t optiq_model_info_parameters(const optiq_model_info *info);

/* Effective bits per weight of the language tower as mlx-lm's
 * compute_bits_per_weight: 8 * tensor bytes / parameters. */
double optiq_model_info_bits_per_weight(const optiq_model_info *info);

/* A JSON document (UTF-8, NUL-terminated, caller frees with optiq_free) that
 * describes the folder: model_type, parameter counts, quantization summary
 * (bits histogram, effective bits per weight, unquantized modules), the
 * vision sidecar and the tokenizer files. Keys are documented in
 * docs/model-folder.md. NULL only when out of memory. */
char *optiq_model_info_json(const optiq_model_info *info);

/* ---- vision sidecar ------------------------------------------------------ */

/* Build OptIQ's vision sidecar as mlx-optiq's build_vision_sidecar(base=...,
 * quant_dir=...) does: extract the vision / audio towers of the bf16 base
 * folder (a local Hugging Face checkpoint) into QUANT/optiq_vision.safetensors
 * at bf16 (keys "vision_tower.*" for Qwen's "model.visual.*", convs made
 * channel-last), list them in the quant's model.safetensors.index.json when it
 * has one, restore the multimodal keys of config.json (plus "optiq_vision")
 * and copy the image processor files the quant lacks; nothing else changes.
 * An existing sidecar is refused unless force; a second run with force gives
 * the same bytes. *summary_json (may be NULL; free with optiq_free): {"sidecar",
 * "n_tensors", "bytes", "dtype", "base", "index_updated", "config_keys", "copied"}. */
optiq_status optiq_sidecar_build(const char *base_dir, const char *quant_dir, int force, char **summary_json,
                                 optiq_error *err);

/* ---- benchmarks --------------------------------------------------------- */

typedef struct optiq_bench_params {
    int max_threads;       /* run with 1..max_threads threads; 0: physical cores */
    double seconds;        /* minimum timing per case */
    const char *cpu_level; /* NULL: best available; "portable", "avx2", "avx512" caps it */
    const char *model_dir; /* when set: also time its tokenizer's encoding */
    const char *text_file; /* text to encode (UTF-8); NULL: 1 MB of generated word-like text */
    const char *synthetic; /* when set: a model of the synthetic table ("qwen3_5-0.8b") instead of the
                              mat-vec cases: random weights of its exact shapes, built in memory */
    int prefill_tokens;    /* synthetic: prompt length (default 512; 0: the default) */
    int decode_tokens;     /* synthetic: greedy decode steps timed (default 128; 0: the default) */
    int serving;           /* synthetic: instead, the serving figures at max_threads threads: decode of
                              `sequences` sequences batched against one (decode_tokens steps, 0: 32),
                              and time to first token of a conversation's second turn with the prefix
                              cache against its first turn of prefill_tokens tokens (0: 2000) */
    int sequences;         /* serving: sequences decoded at once (0: 8) */
    const char *mask_tokenizer; /* synthetic: a tokenizer folder; each thread count's decode then runs
                              again with a JSON-schema token mask built over that vocabulary (the cost
                              of constrained decoding, docs/structured-output.md) */
} optiq_bench_params;

optiq_bench_params optiq_bench_default(void);

/* Run the built-in benchmarks and return their results as JSON (caller frees
 * with optiq_free; keys in docs/cli.md): memory read bandwidth per thread
 * count, and quantized matrix-vector throughput (4- and 8-bit affine, group
 * 64, 1024x3584 and 3584x1024) streamed from DRAM and from cache; with
 * model_dir, the tokenizer's encoding speed on one core. With synthetic, the
 * mat-vec cases are replaced by the model's prefill and decode speed, peak
 * RSS and decode roofline at 1, 2, 4, ... up to max_threads threads (0: 1 and
 * 2, then doubling up to the physical cores); an unknown name fails with
 * OPTIQ_ERR_INVALID_ARG listing the known ones. */
optiq_status optiq_bench_run(const optiq_bench_params *params, char **json_out, optiq_error *err);

/* Free memory returned by the library. */
void optiq_free(void *p);

/* ---- tokenizer ---------------------------------------------------------- */

/* A Hugging Face tokenizer (tokenizer.json) with the BOS/EOS facts of its folder. Encoding
 * and decoding give exactly what the reference `tokenizers` library gives (docs/tokenizer.md
 * lists the supported models, normalizers, pre-tokenizers and decoders). A loaded tokenizer
 * is immutable: any number of threads may encode and decode with it at once, which is why
 * these calls report failures in the optiq_error the caller passes (may be NULL) rather than
 * in the handle. */
typedef struct optiq_tokenizer optiq_tokenizer;

/* Load DIR/tokenizer.json, plus tokenizer_config.json, special_tokens_map.json and
 * generation_config.json when present. */
optiq_status optiq_tokenizer_load(const char *dir, optiq_tokenizer **out, optiq_error *err);

/* The same from explicit paths; only tokenizer_json is required. */
typedef struct optiq_tokenizer_files {
    const char *tokenizer_json;
    const char *tokenizer_config;   /* or NULL */
    const char *special_tokens_map; /* or NULL */
    const char *generation_config;  /* or NULL */
} optiq_tokenizer_files;
optiq_status optiq_tokenizer_load_files(const optiq_tokenizer_files *files, optiq_tokenizer **out, optiq_error *err);

void optiq_tokenizer_free(optiq_tokenizer *tok);

/* Encoding flags. */
#define OPTIQ_ENCODE_ADD_SPECIAL 1u   /* add the post-processor's tokens (the reference's add_special_tokens=True;
                                         Gemma's <bos>, nothing for Qwen) */
#define OPTIQ_ENCODE_SPLIT_SPECIAL 2u /* special-token text in the input is encoded as plain text (the
                                         reference's encode_special_tokens); other added tokens still match */

/* Encode len bytes of text (UTF-8; ill-formed sequences are read as U+FFFD, one per maximal
 * ill-formed subpart). *ids receives a new array (free with optiq_free; NULL when empty). */
optiq_status optiq_tokenizer_encode(const optiq_tokenizer *tok, const char *text, size_t len, unsigned flags,
                                    int32_t **ids, size_t *n_ids, optiq_error *err);

/* Decoding flags. */
#define OPTIQ_DECODE_SKIP_SPECIAL 1u /* leave out special tokens */

/* Decode ids to text; *text receives a new NUL-terminated string (free with optiq_free),
 * *len (may be NULL) its length. Ids with no token are left out, as the reference does. */
optiq_status optiq_tokenizer_decode(const optiq_tokenizer *tok, const int32_t *ids, size_t n_ids, unsigned flags,
                                    char **text, size_t *len, optiq_error *err);

/* Streaming detokenizer: push ids one at a time and get back the text that is final so far.
 * Every piece is whole UTF-8 (never part of a character), and the pieces returned by the
 * pushes and the closing finish concatenate to exactly optiq_tokenizer_decode of the same ids.
 * Text can lag behind the ids while it may still change (bytes of an unfinished character, a
 * byte-fallback run, a trailing character a Strip decoder may remove). A piece stays valid
 * until the next call on the same detokenizer. One detokenizer per sequence; it borrows the
 * tokenizer, which must outlive it. */
typedef struct optiq_detokenizer optiq_detokenizer;

optiq_status optiq_detokenizer_new(const optiq_tokenizer *tok, unsigned flags, optiq_detokenizer **out,
                                   optiq_error *err);
optiq_status optiq_detokenizer_push(optiq_detokenizer *d, int32_t id, const char **piece, size_t *len,
                                    optiq_error *err);
/* End of the sequence: the rest of the text. The detokenizer is then reset. */
optiq_status optiq_detokenizer_finish(optiq_detokenizer *d, const char **piece, size_t *len, optiq_error *err);
/* Start a new sequence, dropping anything held back. */
void optiq_detokenizer_reset(optiq_detokenizer *d);
void optiq_detokenizer_free(optiq_detokenizer *d);

/* One past the largest token id (model vocabulary and added tokens). */
size_t optiq_tokenizer_vocab_size(const optiq_tokenizer *tok);
/* Id of a token string (added tokens first, then the model's vocabulary), or -1. */
int32_t optiq_tokenizer_token_to_id(const optiq_tokenizer *tok, const char *token, size_t len);
/* Token string of an id (e.g. "Ġthe", "▁the", "<|im_start|>"), NULL when the id has none;
 * *len (may be NULL) receives its length. Owned by the tokenizer. */
const char *optiq_tokenizer_id_to_token(const optiq_tokenizer *tok, int32_t id, size_t *len);
/* 1 when the id is a special token (left out by OPTIQ_DECODE_SKIP_SPECIAL). */
int optiq_tokenizer_is_special(const optiq_tokenizer *tok, int32_t id);
/* BOS id from tokenizer_config.json / special_tokens_map.json / generation_config.json, or -1. */
int32_t optiq_tokenizer_bos_id(const optiq_tokenizer *tok);
/* End-of-sequence ids: tokenizer_config.json's eos_token, then generation_config.json's
 * eos_token_id entries (one id or a list). Returns the count; *ids points into the tokenizer. */
size_t optiq_tokenizer_eos_ids(const optiq_tokenizer *tok, const int32_t **ids);
/* tokenizer_config.json's add_bos_token (0 when absent). Informational: encoding adds what
 * tokenizer.json's post-processor says, as the reference does. */
int optiq_tokenizer_add_bos_token(const optiq_tokenizer *tok);

/* ---- chat templates ----------------------------------------------------- */

/* A model folder's chat template (chat_template.jinja, chat_template.json or
 * tokenizer_config.json's chat_template, in transformers' order) with the
 * special tokens of its tokenizer_config.json and the model family of its
 * config.json. Rendering gives, byte for byte, the prompt text transformers'
 * apply_chat_template gives (docs/templates.md: the supported Jinja, how
 * messages are prepared, where images go). Immutable once loaded: threads may
 * render with it at once; failures go to the optiq_error the caller passes. */
typedef struct optiq_chat_template optiq_chat_template;

/* Only the tokenizer files and config.json are read (no weights needed). A
 * template that does not parse fails here, its message naming the file and
 * line ("chat_template.jinja: line 12: ..."). */
optiq_status optiq_chat_template_load(const char *dir, optiq_chat_template **out, optiq_error *err);

/* A template from text. model_type (or NULL) picks the image placeholder for
 * templates with no image syntax; tokens_json (or NULL) is an object of
 * special tokens, e.g. {"bos_token": "<bos>", "eos_token": "<eos>"}. */
optiq_status optiq_chat_template_from_string(const char *source, size_t len, const char *model_type,
                                             const char *tokens_json, optiq_chat_template **out, optiq_error *err);
void optiq_chat_template_free(optiq_chat_template *t);

/* Where the template came from: "chat_template.jinja", "chat_template.json",
 * "tokenizer_config.json" or "string". */
const char *optiq_chat_template_source(const optiq_chat_template *t);

/* Render messages to the prompt text. messages_json: an OpenAI-style array of
 * messages (content a string or a list of text / image_url / image parts;
 * tool_calls with arguments as a JSON string or object; role "tool"), or a
 * request body object holding "messages" (its "tools" and
 * "chat_template_kwargs" are used too). options_json (may be NULL): an object
 *   "add_generation_prompt": bool (default true)
 *   "tools": [...]                 tool definitions (JSON schemas)
 *   "chat_template_kwargs": {...}  template variables, e.g. {"enable_thinking": false}
 *   "image_placeholder": "..."     text for an image when the template has no image syntax
 *   "now": seconds                 the instant strftime_now formats (UTC); default: the clock
 * and any other key is a template variable too (e.g. "enable_thinking": true).
 * *prompt is NUL-terminated (free with optiq_free); *prompt_len may be NULL.
 * A template's raise_exception (e.g. roles that do not alternate) fails with
 * OPTIQ_ERR_INVALID_ARG and the template's own message. */
optiq_status optiq_chat_template_render(const optiq_chat_template *t, const char *messages_json, size_t messages_len,
                                        const char *options_json, char **prompt, size_t *prompt_len,
                                        optiq_error *err);

/* ---- engine, sessions, generation ------------------------------------- */
/*
 * An engine is a loaded model folder: the language model (weights loaded
 * once, quantized ones kept packed), its tokenizer, chat template and stop
 * tokens, the vision front-end when the folder has one, and a thread pool. Immutable once loaded,
 * but for its prefix and vision caches (locked inside, so sessions on other threads may share
 * them). A session is one
 * timeline on an engine: it owns the per-sequence caches (KV caches of the
 * attention layers, conv and recurrent states of the linear-attention
 * layers) and its position. Calls on one session must not overlap.
 */
typedef struct optiq_engine optiq_engine;
typedef struct optiq_session optiq_session;

typedef struct optiq_engine_params {
    int n_threads;        /* 0: physical cores */
    int64_t context;      /* tokens a session may hold; 0: the model's max_position_embeddings */
    int64_t prefill_chunk;/* tokens per prefill call; 0: 512 */
    int exact;            /* 1: f32 activations in every product (the path held to the
                           * reference's f32 run); 0: the fast path, which writes the
                           * activations of 4/8-bit quantized products as two int8 codes
                           * (about 16 bits; docs/parity.md) where the CPU has VNNI */
    /* Prefix reuse (docs/architecture.md, "Prefix cache"): the states of finished
     * generations are kept, up to prefix_cache_mb MiB, keyed by their tokens (images
     * by a hash of their pixels); a generation on an empty session whose prompt starts
     * like one of them restores that state and runs only the rest, with the same
     * result bit for bit. optiq_engine_default: 1024; 0: off. */
    int64_t prefix_cache_mb;
    int64_t prefix_block; /* tokens between the state checkpoints of a prompt
                           * (linear-attention states cannot be cut); 0: 256 */
    int64_t vision_cache_mb; /* soft tokens of images seen before, so an image sent
                              * again is not encoded again; optiq_engine_default: 256; 0: off */
} optiq_engine_params;

optiq_engine_params optiq_engine_default(void);

/* What the engine's caches did so far (all counters since load). */
typedef struct optiq_cache_stats {
    uint64_t prefix_hits;          /* generations that resumed from a cached prefix */
    uint64_t prefix_misses;        /* generations on an empty session that found none */
    uint64_t prefix_tokens_reused; /* prompt tokens restored instead of computed */
    uint64_t prefix_evictions;
    uint64_t prefix_bytes, prefix_entries, prefix_max_bytes; /* now */
    uint64_t vision_hits, vision_misses; /* images found / not found in the vision cache */
    uint64_t vision_encoded;             /* images that went through the vision tower */
    uint64_t vision_bytes, vision_entries, vision_max_bytes;
} optiq_cache_stats;

/* Unknown model_type, a config missing a required key, a tensor missing or
 * with the wrong shape: a message naming the key or tensor, no engine. */
optiq_status optiq_engine_load(const char *dir, const optiq_engine_params *params, optiq_engine **out,
                               optiq_error *err);
void optiq_engine_free(optiq_engine *e);

const optiq_tokenizer *optiq_engine_tokenizer(const optiq_engine *e);
/* NULL when the folder carries no chat template. */
const optiq_chat_template *optiq_engine_chat_template(const optiq_engine *e);
const char *optiq_engine_model_type(const optiq_engine *e);
int64_t optiq_engine_vocab_size(const optiq_engine *e);
int64_t optiq_engine_context(const optiq_engine *e);
/* Counters of the prefix and vision caches (zeros for a cache that is off).
 * Thread-safe. */
void optiq_engine_cache_stats(const optiq_engine *e, optiq_cache_stats *out);
/* Token ids that end generation: generation_config.json's eos_token_id when
 * present, else config.json's, else the tokenizer's eos (mlx-lm's rule;
 * config.json's text_config.eos_token_id is also looked at before falling
 * back to the tokenizer). */
size_t optiq_engine_eos_ids(const optiq_engine *e, const int32_t **ids);

/* ---- images ----
 * An image given to a prompt: a file path or a data: URL ("data:image/png;base64,...")
 * in source, or the encoded bytes (JPEG, PNG, WebP, GIF, BMP) in data/size. */
typedef struct optiq_image {
    const char *source; /* path or data: URL, or NULL when data is set */
    const void *data;   /* encoded bytes, or NULL */
    size_t size;
    int max_soft_tokens; /* Gemma-4: this image's soft-token budget, one of 70, 140, 280, 560, 1120
                            (0: the folder's processor setting, 280 by default); must be 0 for
                            models without a budget (Qwen3.5: the processor's pixel limits) */
} optiq_image;

/* The tokens an image's placeholder becomes in a prompt of this model (the
 * soft tokens, plus Gemma-4's begin / end-of-image tokens), computed from
 * the decoded image's size without running the tower. */
optiq_status optiq_engine_image_tokens(const optiq_engine *e, const optiq_image *image, int64_t *tokens,
                                       optiq_error *err);

/* 1 when the folder carries a vision front-end (the optiq_vision.safetensors
 * sidecar and a vision_config): prompts may then hold images. */
int optiq_engine_has_vision(const optiq_engine *e);
/* 1 when the vocabulary has thinking markers ("<think>"/"</think>", or Gemma-4's "<|channel>" /
 * "<channel|>"): mlx-lm then renders chat templates with enable_thinking=true unless told otherwise,
 * and optiq_generation.reasoning receives the thinking block. */
int optiq_engine_has_thinking(const optiq_engine *e);

optiq_status optiq_session_new(optiq_engine *e, optiq_session **out, optiq_error *err);
void optiq_session_free(optiq_session *s);
/* Forget every token: the session is as new. */
void optiq_session_reset(optiq_session *s);
/* Tokens processed so far. */
int64_t optiq_session_position(const optiq_session *s);

/* Feed tokens at the session's position (prefill in chunks of the engine's
 * prefill_chunk). logits (may be NULL) receives the last token's
 * vocab_size logits (n may be 0 to read them again). A prompt that does not
 * fit the context fails with OPTIQ_ERR_CONTEXT, and a token id outside the
 * vocabulary with OPTIQ_ERR_INVALID_ARG, leaving the session unchanged; a
 * failure inside the model resets the session (its message says so). */
optiq_status optiq_session_eval(optiq_session *s, const int32_t *ids, size_t n, float *logits, optiq_error *err);

/* The same with images: ids hold one image placeholder (the model's
 * image_token_id, e.g. <|image_pad|>, as the chat template writes it) per
 * image, in order; each is expanded to that image's number of soft tokens,
 * which replace the placeholders' embeddings, and positions follow the
 * model's multimodal rule (docs/vision.md). More placeholders than images:
 * the surplus ones are dropped (with their vision start/end tokens); fewer:
 * OPTIQ_ERR_INVALID_ARG. A folder without a vision front-end fails with
 * OPTIQ_ERR_UNSUPPORTED; an image that does not decode, with its message.
 * optiq_session_position counts the expanded tokens. */
optiq_status optiq_session_eval_images(optiq_session *s, const int32_t *ids, size_t n, const optiq_image *images,
                                       size_t n_images, float *logits, optiq_error *err);

/* Sampling, with mlx-lm's semantics (sample_utils.make_sampler and
 * make_logits_processors): temperature 0 is greedy (argmax, first index on
 * ties); otherwise top_p, min_p and top_k filter the log-probabilities in that
 * order and a token is drawn from softmax(logprobs / temperature). The
 * penalties look at the last 20 tokens (prompt included). */
typedef struct optiq_sampling {
    float temperature;        /* 0: greedy */
    float top_p;              /* 0 or 1: off */
    int top_k;                /* 0: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 0 or 1: off; logit / p when positive, * p when negative */
    float presence_penalty;   /* 0: off; subtracted once from every token seen */
    float frequency_penalty;  /* 0: off; subtracted per occurrence */
    int penalty_context;      /* tokens the penalties look back at; 0: 20 */
    uint64_t seed;            /* the same seed gives the same tokens */
} optiq_sampling;

optiq_sampling optiq_sampling_default(void); /* greedy */

/* Called for every generated token with the text it completes (possibly
 * empty while a UTF-8 sequence or a possible stop string is pending). Return
 * non-zero to stop (finish reason "abort"). When generation ends on an EOS
 * token while text is still pending, one last call with id -1 delivers it.
 * The pieces concatenate to optiq_generation.text (unless aborted). */
typedef int (*optiq_token_fn)(void *user, int32_t id, const char *text, size_t len);

#define OPTIQ_MAX_TOP_LOGPROBS 20 /* most alternatives a token's logprobs list */

/* A generated token's log-probability: the log-softmax of the model's raw logits at that
 * step (before penalties, process_logits and temperature: what `optiq dump` writes), and the
 * n_top most likely tokens, most likely first (ties: lower id first). */
typedef struct optiq_token_logprobs {
    float logprob;
    int n_top;
    const int32_t *top_ids;     /* (n_top) */
    const float *top_logprobs;  /* (n_top) */
} optiq_token_logprobs;

typedef struct optiq_generate_params {
    optiq_sampling sampling;
    int max_tokens;             /* 0: until a stop condition or the context is full */
    const char *const *stop;    /* stop strings (not included in the output) */
    size_t n_stop;
    int ignore_eos;             /* 1: EOS tokens do not stop */
    optiq_token_fn on_token;    /* may be NULL */
    void *user;
    /* Polled (with user) before each prefill call of the prompt, or NULL. Non-zero stops:
     * the result has no tokens and finish reason "abort", and the session is reset (empty).
     * (Once tokens are generated, on_token's return value stops.) */
    int (*should_stop)(void *user);
    /* Batches only (optiq_batch_add): called with user when the generation is over, with its
     * status (OPTIQ_OK: the optiq_generation is filled) and the error message otherwise. */
    void (*on_done)(void *user, optiq_status status, const char *message);
    const optiq_image *images;  /* images of the prompt (see optiq_session_eval_images), or NULL */
    size_t n_images;
    /* Constrained decoding (e.g. a JSON-schema grammar), or NULL: called with user before
     * every sample with the row of vocab logits the sampler is about to see (after the
     * log-probabilities below were taken from it); it may set entries to -INFINITY to forbid
     * tokens. Non-zero fails the generation ("no token may follow"). */
    int (*process_logits)(void *user, float *logits, int64_t vocab);
    /* Called with user for every sampled token, the EOS that stops generation included,
     * before it is kept or streamed, or NULL; lp is NULL unless logprobs is set. */
    void (*on_sampled)(void *user, int32_t id, const optiq_token_logprobs *lp);
    int logprobs;               /* 1: record each generated token's log-probability */
    int top_logprobs;           /* with logprobs: also the 0..20 most likely tokens of each step */
} optiq_generate_params;

optiq_generate_params optiq_generate_default(void);

typedef struct optiq_generation {
    int32_t *tokens;            /* generated ids (an EOS that stopped generation is not included) */
    size_t n_tokens;
    char *text;                 /* their text, cut before a stop string; NUL-terminated */
    size_t text_len;
    char *reasoning;            /* the text of the model's thinking block, markers left out ("<think>" ...
                                   "</think>", Gemma-4's "<|channel>thought" ... "<channel|>", as mlx-lm's
                                   server splits it); NULL when no block was opened */
    char *answer;               /* the text outside the thinking block (all of it when there is none) */
    const char *finish_reason;  /* "stop" (EOS or stop string), "length" (max_tokens or context), "abort" */
    int64_t prompt_tokens;      /* after image placeholders were expanded */
    int64_t cached_tokens;      /* of those, restored from the prefix cache instead of computed */
    float *logprobs;            /* with params.logprobs: (n_tokens) each token's log-probability, else NULL */
    int32_t *top_ids;           /* (n_tokens, n_top) the most likely tokens of each step, or NULL */
    float *top_logprobs;        /* (n_tokens, n_top) their log-probabilities */
    int n_top;
    double prefill_seconds;     /* time to first token (image encoding included) */
    double decode_seconds;      /* the rest */
} optiq_generation;

/* Append prompt to the session (prefill), then sample until a stop
 * condition. The prompt may be empty to continue from the session's state
 * only when the session already holds tokens. The prompt must leave room in
 * the context for one generated token (else OPTIQ_ERR_CONTEXT, session
 * unchanged). Afterwards the session holds the prompt and every token of
 * out->tokens (a stopping EOS is not kept; tokens that produced a stop
 * string are); the last one is run through the model by the next call.
 * Free the result with optiq_generation_free. */
optiq_status optiq_generate(optiq_session *s, const int32_t *prompt, size_t n_prompt, const optiq_generate_params *p,
                            optiq_generation *out, optiq_error *err);
void optiq_generation_free(optiq_generation *g);

/* Many generations at once (continuous batching). Each has its own session;
 * optiq_batch_step advances all of them by one step: one prefill chunk of the
 * oldest generation still reading its prompt, then one sampled token for
 * every other, whose forward calls run as one (every weight read once for
 * all). A generation added between steps joins at the next step. Per
 * generation: its own sampling, stops, callbacks (on_token, should_stop,
 * on_done) and result, as optiq_generate's. Not thread-safe: one thread
 * owns a batch and its sessions. */
typedef struct optiq_batch optiq_batch;
optiq_status optiq_batch_new(optiq_engine *e, size_t max_sequences, optiq_batch **out, optiq_error *err);
void optiq_batch_free(optiq_batch *b); /* generations still running are dropped (no on_done) */
/* Start a generation (checks and image encoding happen here; errors return
 * at once). out must stay valid until on_done; it is filled as optiq_generate fills it. */
optiq_status optiq_batch_add(optiq_batch *b, optiq_session *s, const int32_t *prompt, size_t n_prompt,
                             const optiq_generate_params *p, optiq_generation *out, optiq_error *err);
optiq_status optiq_batch_step(optiq_batch *b, optiq_error *err);
size_t optiq_batch_size(const optiq_batch *b); /* generations not yet done */

/* Run the tokens through a fresh sequence and write a safetensors file with
 * "tokens" (I32 [n]), "hidden" (F32 [n_layers + 2, n, hidden]: after the
 * embedding, after every layer, after the final norm) and "logits"
 * (F32 [n, vocab]), for comparison with a reference run. */
optiq_status optiq_dump(optiq_engine *e, const int32_t *ids, size_t n, const char *path, optiq_error *err);

/* The same with images (ids hold their placeholders, as for
 * optiq_session_eval_images): "tokens" are the expanded ids, and the file
 * also holds "pixel_values" (F32 [n_patches, patch_dim], the processor's
 * output), "grid_thw" (I32 [n_images, 3]), "vision" (F32 [n_soft, hidden],
 * the tower's soft tokens), "embeds" (F32 [n, hidden], the merged input
 * embeddings) and "positions" (I32 [3, n], the multimodal position ids). */
optiq_status optiq_dump_images(optiq_engine *e, const int32_t *ids, size_t n, const optiq_image *images,
                               size_t n_images, const char *path, optiq_error *err);

/* ---- prompts from chat messages (language bindings) ------------------- */
/*
 * What `optiq generate` and `optiq serve` do to messages before
 * optiq_generate, as one call for bindings (python/optiq): render them with
 * the engine's chat template and encode the text (no special tokens added:
 * the template writes them). Template options start from
 * {"add_generation_prompt": true, "enable_thinking": <no images and
 * optiq_engine_has_thinking>}; the keys of options_json (an object, may be
 * NULL; keys as optiq_chat_template_render takes them, e.g.
 * "chat_template_kwargs", "tools", "enable_thinking") replace them. Renders
 * made through this call are serialized inside the library (the template
 * evaluator shares values between renders), so any thread may call it.
 */
typedef struct optiq_prompt {
    int32_t *ids;     /* prompt ids, one placeholder per image (optiq_generate expands it) */
    size_t n_ids;
    char *text;       /* the rendered prompt text, NUL-terminated */
    char **images;    /* per image part of the messages, in order: its source (an "image_url" part's
                         url, an "image" part's "image" or "url" string), or NULL for a bare
                         {"type": "image"} part whose image the caller supplies */
    size_t n_images;
} optiq_prompt;

/* messages_json: an OpenAI-style array of messages (as optiq_chat_template_render
 * takes it) or an object holding "messages". Fails with OPTIQ_ERR_UNSUPPORTED
 * when the folder has no chat template or the messages hold images and it has no
 * vision front-end, OPTIQ_ERR_INVALID_ARG for malformed messages, options or an
 * empty prompt; the template's own errors pass through. Free with optiq_prompt_free. */
optiq_status optiq_engine_render_prompt(const optiq_engine *e, const char *messages_json, size_t messages_len,
                                        const char *options_json, optiq_prompt *out, optiq_error *err);
void optiq_prompt_free(optiq_prompt *p);

/* sizeof of a public structure named by its type name ("optiq_engine_params",
 * "optiq_generate_params", "optiq_generation", "optiq_image", "optiq_sampling",
 * "optiq_error", "optiq_prompt"), 0 for another name: bindings that declare the
 * structures themselves check their layout against the library they load
 * (a change to one of them must be mirrored in python/optiq/_native.py). */
size_t optiq_struct_size(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* OPTIQ_H */
