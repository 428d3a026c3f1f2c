/*
 * lab.h — the Lab's static files (web/lab/), embedded in the binary at build
 * time and served by `optiq serve` / `optiq lab` under /lab/.
 *
 * The page is plain HTML/CSS/JS that talks to the server only through its
 * public API (/v1/chat/completions, /v1/models, /info, /metrics), like any
 * other client. Assets are looked up by exact path in a fixed table, so no
 * request path ever reaches the file system (no directory traversal). Each
 * answer carries a Content-Security-Policy that allows scripts, styles and
 * connections from the server's own origin only (no inline scripts, no
 * external origins) and images from data:/blob: URLs (attachment thumbnails).
 */
#ifndef OPTIQ_SERVER_LAB_H
#define OPTIQ_SERVER_LAB_H

#include <stddef.h>

#include "server/http.h"

typedef struct lab_asset {
    const char *path;         /* "/lab/lab.js" */
    const char *content_type; /* with charset for text */
    const char *data;
    size_t size;
} lab_asset;

/* The asset served at an exact path ("/lab/" is index.html), or NULL. */
const lab_asset *lab_asset_find(const char *path);

/* 1 when path belongs to the Lab: "/", "/lab" or anything under "/lab/". */
int lab_owns_path(const char *path);

/* Answer a GET/HEAD of a Lab path: the asset with its headers, a redirect
 * ("/" and "/lab" to "/lab/"), or 404 (405 for other methods). The error
 * bodies are the OpenAI-style JSON the server's other routes use. */
void lab_respond(http_request *r);

#endif
