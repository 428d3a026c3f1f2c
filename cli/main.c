/*
 * main.c — `optiq` entry point: global flags and subcommand dispatch.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"inspect", cmd_inspect, "describe a model folder: architecture, parameters, quantization, sidecar"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"template", cmd_template, "render a conversation with the model's chat template"},
    {"generate", cmd_generate, "generate text from a prompt (chat template applied), streamed to stdout"},
    {"chat", cmd_chat, "talk with a model, one line per turn, on standard input"},
    {"dump", cmd_dump, "write the hidden states and logits of a prompt to a safetensors file"},
    {"sidecar", cmd_sidecar, "give a quantized folder the bf16 vision sidecar of its base (optiq_vision.safetensors)"},
    {"serve", cmd_serve, "serve the model over HTTP (OpenAI and Anthropic compatible routes)"},
    {"lab", cmd_lab, "serve the model and open the Lab, a chat and server page in the browser"},
    {"bench", cmd_bench, "measure kernel throughput against memory bandwidth, or a model's speed (--synthetic)"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("optiq: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "optiq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'optiq %s --help'.\n", cmd);
    va_end(ap);
    return 2;
}

int cli_parse_int(const char *cmd, const char *flag, const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return cli_usage_error(cmd, "%s takes an integer from %lld to %lld, not '%s'", flag, min, max, s);
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *flag, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < min || v > max)
        return cli_usage_error(cmd, "%s takes a number from %g to %g, not '%s'", flag, min, max, s);
    *out = v;
    return 0;
}

char *cli_read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t k = fread(b + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
    }
    if (!b || ferror(f)) {
        free(b);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
}

static void print_help(FILE *f) {
    fprintf(f,
            "optiq %s — run MLX / OptIQ quantized vision-language models on Linux\n\n"
            "Usage: optiq COMMAND [OPTIONS]\n\nCommands:\n",
            optiq_version());
    for (size_t i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f,
            "\nOptions:\n"
            "  --help     show this help\n"
            "  --version  print the version\n\n"
            "Run 'optiq COMMAND --help' for the options of a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return 2;
    }
    const char *a = argv[1];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
        printf("optiq %s\n", optiq_version());
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(a, COMMANDS[i].name) == 0) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "optiq: unknown command '%s'\nTry 'optiq --help'.\n", a);
    return 2;
}
