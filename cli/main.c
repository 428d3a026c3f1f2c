/*
 * main.c — `optiq` entry point: global flags and subcommand dispatch.
 */
#include <stdarg.h>
#include <stdio.h>
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
    {"bench", cmd_bench, "measure kernel throughput against this machine's memory bandwidth"},
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
