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

#include "optiq.h"

int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_template(int argc, char **argv);

/* Print "optiq: message" to stderr; returns 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print a usage error and the hint to run --help; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
