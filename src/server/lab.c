/*
 * lab.c — the Lab's files (web/lab/) embedded with the assembler's .incbin
 * and served from a fixed table (see lab.h).
 *
 * The Makefile makes this object depend on the files in web/lab/, so editing a page
 * file rebuilds it; paths in .incbin are relative to the repository root,
 * where make runs the compiler. Each blob is followed by a NUL byte that is
 * not counted in its size.
 */
#include "server/lab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"

/* sym: the bytes of file; sym_end: one past them. Hidden symbols, so the
 * shared library references them PC-relative without a GOT entry. */
#define LAB_EMBED(sym, file)                                                                   \
    __asm__(".pushsection .rodata\n"                                                          \
            ".balign 16\n"                                                                    \
            ".globl " #sym "\n"                                                               \
            ".hidden " #sym "\n"                                                              \
            #sym ":\n"                                                                        \
            ".incbin \"" file "\"\n"                                                          \
            ".globl " #sym "_end\n"                                                           \
            ".hidden " #sym "_end\n"                                                          \
            #sym "_end:\n"                                                                    \
            ".byte 0\n"                                                                       \
            ".popsection\n");                                                                 \
    extern const char sym[] __attribute__((visibility("hidden")));                            \
    extern const char sym##_end[] __attribute__((visibility("hidden")))

LAB_EMBED(lab_index_html, "web/lab/index.html");
LAB_EMBED(lab_lab_css, "web/lab/lab.css");
LAB_EMBED(lab_lab_js, "web/lab/lab.js");
LAB_EMBED(lab_markdown_js, "web/lab/markdown.js");
LAB_EMBED(lab_icon_svg, "web/lab/icon.svg");

#define HTML "text/html; charset=utf-8"
#define CSS "text/css; charset=utf-8"
#define JS "text/javascript; charset=utf-8"
#define SVG "image/svg+xml"

static lab_asset assets[] = {
    {"/lab/", HTML, lab_index_html, 0},
    {"/lab/index.html", HTML, lab_index_html, 0},
    {"/lab/lab.css", CSS, lab_lab_css, 0},
    {"/lab/lab.js", JS, lab_lab_js, 0},
    {"/lab/markdown.js", JS, lab_markdown_js, 0},
    {"/lab/icon.svg", SVG, lab_icon_svg, 0},
};
#define N_ASSETS (sizeof assets / sizeof assets[0])

/* Sizes from the end symbols (not constant expressions, so set on first use;
 * every thread computes the same values, so a race only rewrites equal data). */
static void set_sizes(void) {
    const char *ends[] = {lab_index_html_end, lab_index_html_end, lab_lab_css_end,
                          lab_lab_js_end, lab_markdown_js_end, lab_icon_svg_end};
    for (size_t i = 0; i < N_ASSETS; i++) assets[i].size = (size_t)(ends[i] - assets[i].data);
}

const lab_asset *lab_asset_find(const char *path) {
    if (!path) return NULL;
    if (!assets[0].size) set_sizes();
    for (size_t i = 0; i < N_ASSETS; i++)
        if (strcmp(path, assets[i].path) == 0) return &assets[i];
    return NULL;
}

int lab_owns_path(const char *path) {
    return path && (strcmp(path, "/") == 0 || strcmp(path, "/lab") == 0 || strncmp(path, "/lab/", 5) == 0);
}

static void respond_error(http_request *r, int status, const char *message) {
    api_error e;
    api_error_set(&e, status, NULL, "%s", message);
    char *body = api_error_json(0, &e);
    if (!body) {
        http_respond_error(r, 500, "server_error", "out of memory");
        return;
    }
    http_respond(r, status, NULL, body, strlen(body));
    free(body);
}

/* Scripts, styles, fetches: this origin only; images also data:/blob:
 * (attachment thumbnails); no plugins, frames, <base> or form posts. Model
 * output is rendered as DOM text nodes (web/lab/markdown.js), and even an
 * injected inline script or event handler would not run under this policy. */
static const char CSP[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                          "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'; object-src 'none'";

void lab_respond(http_request *r) {
    const char *method = http_request_method(r), *path = http_request_path(r);
    char msg[256];
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        http_response_header(r, "Allow", "GET, HEAD");
        snprintf(msg, sizeof msg, "method %.32s is not allowed on %.160s (use GET)", method, path);
        respond_error(r, 405, msg);
        return;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/lab") == 0) {
        static const char body[] = "The Lab is at /lab/\n";
        http_response_header(r, "Location", "/lab/");
        http_respond(r, 302, "text/plain; charset=utf-8", body, sizeof body - 1);
        return;
    }
    const lab_asset *a = lab_asset_find(path);
    if (!a) {
        snprintf(msg, sizeof msg, "no Lab file %.200s", path);
        respond_error(r, 404, msg);
        return;
    }
    http_response_header(r, "Content-Security-Policy", CSP);
    http_response_header(r, "X-Content-Type-Options", "nosniff");
    http_response_header(r, "Referrer-Policy", "no-referrer");
    http_response_header(r, "X-Frame-Options", "DENY");
    /* the files change with the binary: revalidation is cheap and avoids a
     * stale page against a newer server */
    http_response_header(r, "Cache-Control", "no-cache");
    http_respond(r, 200, a->content_type, a->data, a->size);
}
