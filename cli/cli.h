/*
 * cli.h — shared pieces of the `optiq` command-line program.
 *
 * Each subcommand is `int cmd_NAME(int argc, char **argv)` with argv[0] the
 * subcommand name; it returns the process exit code (0 ok, 1 failure, 2 usage).
 * Conventions: every command has --help; commands that print results have
 * --json (stable keys, docs/cli.md); errors go to stderr.
 */
#ifndef OPTIQ_CLI_H
#define OPTIQ_CLI_H

#include <getopt.h>
#include <stdio.h>

#include "optiq.h"

int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_sidecar(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_lab(int argc, char **argv);

/* Print "optiq: message" to stderr; returns 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print a usage error and the hint to run --help; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse all of s as a decimal integer in [min, max] / a finite number in
 * [min, max]; 0 when it is one, else a usage error naming the flag (returns 2). */
int cli_parse_int(const char *cmd, const char *flag, const char *s, long long min, long long max, long long *out);
int cli_parse_double(const char *cmd, const char *flag, const char *s, double min, double max, double *out);
/* The whole of a stream, NUL-terminated (caller frees); NULL when out of memory or unreadable. */
char *cli_read_stream(FILE *f, size_t *len);

/* ---- options shared by serve and lab (cmd_serve.c) ---- */

struct server_config;
enum { CLI_MAX_IMAGE_HOSTS = 64 };
/* Help text of the shared options (after "Options:"). */
extern const char CLI_SERVE_OPTIONS_HELP[];
/* Parse serve's options into *cfg (defaults first); hosts has room for
 * CLI_MAX_IMAGE_HOSTS --allow-image-host values and must outlive cfg.
 * no_browser: NULL for serve; for lab, set to 1 by --no-browser. help prints
 * the command's --help text. Returns 0 to run, 1 after --help was printed
 * (exit 0), 2 after a usage error was printed. */
int cli_serve_options(const char *cmd, int argc, char **argv, void (*help)(FILE *), struct server_config *cfg,
                      const char **hosts, int *no_browser);

/* ---- options shared by generate and chat (cmd_generate.c) ---- */

enum {
    CLI_O_MODEL = 1000, CLI_O_SYSTEM, CLI_O_MAX_TOKENS, CLI_O_TEMP, CLI_O_TOP_P, CLI_O_TOP_K, CLI_O_MIN_P,
    CLI_O_REP, CLI_O_SEED, CLI_O_STOP, CLI_O_CTX, CLI_O_THREADS, CLI_O_IGNORE_EOS, CLI_O_EXACT, CLI_O_TMPL_KWARGS
};

/* getopt_long entries of the shared options. */
#define CLI_GEN_OPTIONS                                                                                        \
    {"model", required_argument, 0, CLI_O_MODEL}, {"system", required_argument, 0, CLI_O_SYSTEM},           \
        {"max-tokens", required_argument, 0, CLI_O_MAX_TOKENS}, {"temp", required_argument, 0, CLI_O_TEMP}, \
        {"top-p", required_argument, 0, CLI_O_TOP_P}, {"top-k", required_argument, 0, CLI_O_TOP_K},         \
        {"min-p", required_argument, 0, CLI_O_MIN_P}, {"repetition-penalty", required_argument, 0, CLI_O_REP}, \
        {"seed", required_argument, 0, CLI_O_SEED}, {"stop", required_argument, 0, CLI_O_STOP},             \
        {"ctx", required_argument, 0, CLI_O_CTX}, {"threads", required_argument, 0, CLI_O_THREADS},         \
        {"ignore-eos", no_argument, 0, CLI_O_IGNORE_EOS}, {"exact", no_argument, 0, CLI_O_EXACT},             \
        {"chat-template-kwargs", required_argument, 0, CLI_O_TMPL_KWARGS}

/* Help text of the shared options (after "Options:"). */
extern const char CLI_GEN_OPTIONS_HELP[];

typedef struct cli_gen_opts {
    const char *model;
    const char *system;       /* or NULL */
    const char *template_kwargs; /* --chat-template-kwargs: a JSON object, or NULL */
    optiq_engine_params engine;
    optiq_generate_params gen; /* gen.stop points at stop[] */
    const char **stop;        /* (room for argc) --stop values */
    size_t n_stop;
} cli_gen_opts;

/* Defaults; 1 when out of memory. */
int cli_gen_opts_init(cli_gen_opts *o, int argc);
void cli_gen_opts_free(cli_gen_opts *o);
/* Apply one getopt_long result: 0 done, 2 usage error (printed), -1 not a shared option. */
int cli_gen_option(const char *cmd, int code, const char *arg, cli_gen_opts *o);

/* The token ids of a one-turn prompt: rendered with the engine's chat
 * template (optional system message, then the user's text, generation
 * prompt added) and encoded without special tokens, as mlx_lm generate
 * does; with use_template 0 or no template in the folder, the text is
 * encoded as is with the tokenizer's special tokens (mlx_lm's
 * --ignore-chat-template). n_images image parts go before the text of the
 * user message (the template writes its placeholders). Template variables:
 * cli_template_options. 0 or 1 (failure printed). */
int cli_prompt_ids(const optiq_engine *e, const char *system, const char *text, size_t len, int use_template,
                   size_t n_images, const char *template_kwargs, int32_t **ids, size_t *n);

/* The variables a chat template is rendered with, as JSON (caller frees):
 * add_generation_prompt true; enable_thinking as mlx-lm sets it (true when
 * the vocabulary has thinking markers), false with images (as mlx-vlm
 * renders image prompts); then the entries of template_kwargs (a JSON
 * object, or NULL), which win. NULL with the failure printed. */
char *cli_template_options(const optiq_engine *e, const char *template_kwargs, size_t n_images);
/* 0 when arg is a JSON object; else the usage error is printed and 2 returned. */
int cli_check_template_kwargs(const char *cmd, const char *arg);

#endif
