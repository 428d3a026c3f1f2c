/*
 * server.h — `optiq serve`: the HTTP layer (http.h) and the API layer (api.h)
 * wired to one engine.
 *
 * One worker thread owns the engine's batch (optiq_batch) and one session
 * per slot: up to `parallel` generations run at once, each decode step of
 * all of them one forward call; further requests wait in a FIFO queue (at
 * most max_queue, then 429). Quick routes (/health, /v1/models, errors,
 * count_tokens) are answered on the connection's own thread, so the server
 * stays responsive while generations run. GET /info describes the model
 * and the server's settings (JSON); the Lab's page is served under /lab/
 * (server/lab.h). Routes and options: docs/cli.md ("optiq serve"),
 * docs/lab.md.
 */
#ifndef OPTIQ_SERVER_SERVER_H
#define OPTIQ_SERVER_SERVER_H

#include "optiq.h"

typedef struct server_config {
    const char *model_dir;        /* required */
    const char *host;             /* NULL: 127.0.0.1 */
    int port;                     /* 0: ephemeral (the bound port is printed) */
    const char *api_key;          /* NULL: no authentication */
    optiq_engine_params engine;
    int drain_ms;                 /* on SIGINT/SIGTERM, time for requests in flight; 0: 3000 */
    unsigned timeout_s;           /* idle connection timeout; 0: the HTTP layer's 30 s */
    unsigned header_timeout_s;    /* total time for a request's headers; 0: the HTTP layer's 10 s */
    unsigned body_timeout_s;      /* total time for a request's body; 0: the HTTP layer's 60 s */
    int allow_remote_images;      /* fetch http(s) image URLs (src/server/fetch.h); 0: refuse them */
    const char *const *allow_image_hosts; /* IP literals exempt from the address rules */
    size_t n_allow_image_hosts;
    size_t max_image_bytes;       /* per fetched image; 0: 20 MiB */
    size_t parallel;              /* generations run at once (batched); 0: 4 */
    size_t max_queue;             /* requests waiting beyond those; more get 429; 0: 64 */
    /* Called once on the main thread when the server accepts connections
     * (after the "listening on" line), with the address it listens on and the
     * bound port; `optiq lab` prints the Lab's URL and opens a browser there.
     * NULL: nothing. */
    void (*on_ready)(void *user, const char *host, int port);
    void *ready_user;
} server_config;

/* Load the engine, serve until SIGINT or SIGTERM, free everything. Prints
 * "optiq serve: listening on http://HOST:PORT (model NAME, vision on|off)" to
 * stderr once ready and one log line per request. OPTIQ_OK after a clean stop. */
optiq_status server_run(const server_config *cfg, optiq_error *err);

#endif
