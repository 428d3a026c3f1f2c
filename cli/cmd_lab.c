/*
 * cmd_lab.c — `optiq lab --model DIR`: `optiq serve` (same options, same
 * server) that prints the Lab's URL on standard output once it listens and
 * opens it with xdg-open when a display is available ($DISPLAY or
 * $WAYLAND_DISPLAY set) and --no-browser was not given. The page itself is
 * web/lab/, embedded and served by src/server/lab.c; docs/lab.md.
 */
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"
#include "server/server.h"

extern char **environ;

static void usage(FILE *f) {
    fprintf(f,
            "Usage: optiq lab --model DIR [--host ADDR] [--port N] [--no-browser] [options]\n\n"
            "Start the server of 'optiq serve' and open the Lab, a web page served by it at\n"
            "/lab/: a chat with streaming, images, sampling settings and reasoning shown apart,\n"
            "and the model's and server's details. Prints the page's URL once the server\n"
            "listens; opens it with xdg-open only when $DISPLAY or $WAYLAND_DISPLAY is set.\n"
            "Runs until SIGINT or SIGTERM.\n\n"
            "Options:\n"
            "  --no-browser                print the URL only, do not open a browser\n%s",
            CLI_SERVE_OPTIONS_HELP);
}

typedef struct lab_state {
    int no_browser;
} lab_state;

/* The URL's host: a wildcard address is reached through loopback; IPv6 in brackets. */
static void url_host(const char *host, char *out, size_t size) {
    if (strcmp(host, "0.0.0.0") == 0) snprintf(out, size, "127.0.0.1");
    else if (strcmp(host, "::") == 0) snprintf(out, size, "[::1]");
    else if (strchr(host, ':')) snprintf(out, size, "[%s]", host);
    else snprintf(out, size, "%s", host);
}

static void *reap(void *arg) {
    pid_t pid = (pid_t)(intptr_t)arg;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
    }
    return NULL;
}

/* xdg-open URL in the background, its output discarded. The server blocks
 * SIGINT/SIGTERM in its threads; the child gets an empty mask back. */
static void open_browser(const char *url) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    sigemptyset(&none);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", 0, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", 1, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", 1, 0);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {"xdg-open", (char *)url, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "xdg-open", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        fprintf(stderr, "optiq lab: cannot run xdg-open (%s); open %s yourself\n", strerror(rc), url);
        return;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, reap, (void *)(intptr_t)pid) == 0) pthread_detach(t);
}

static void on_ready(void *user, const char *host, int port) {
    const lab_state *st = user;
    char h[300], url[400];
    url_host(host, h, sizeof h);
    snprintf(url, sizeof url, "http://%s:%d/lab/", h, port);
    printf("optiq lab: %s\n", url);
    fflush(stdout);
    const char *d = getenv("DISPLAY"), *w = getenv("WAYLAND_DISPLAY");
    int display = (d && *d) || (w && *w);
    if (!st->no_browser && display) open_browser(url);
    else if (!st->no_browser) fprintf(stderr, "optiq lab: no display ($DISPLAY, $WAYLAND_DISPLAY); open the URL in a browser\n");
}

int cmd_lab(int argc, char **argv) {
    server_config cfg;
    const char *hosts[CLI_MAX_IMAGE_HOSTS];
    lab_state st = {0};
    int rc = cli_serve_options("lab", argc, argv, usage, &cfg, hosts, &st.no_browser);
    if (rc) return rc == 1 ? 0 : rc;
    cfg.on_ready = on_ready;
    cfg.ready_user = &st;
    optiq_error err = {0};
    if (server_run(&cfg, &err) != OPTIQ_OK) return cli_fail("%s", err.message);
    return 0;
}
