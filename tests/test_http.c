/*
 * test_http.c — the HTTP layer (src/server/http.c) against raw sockets.
 *
 * A toy handler serves a few routes; the test speaks HTTP/1.1 by hand (with
 * its own chunked decoder) so that it can also misbehave: close mid-stream,
 * send half a request, send garbage. Timeouts are configured to 1 s so every
 * case stays fast.
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* ---- the toy handler ---- */

typedef struct producer {
    http_stream *s;
    int n;            // chunks to write; < 0: until a write fails
    int delay_ms;
    atomic_int done;
    atomic_int failed;
    atomic_int written;
    double fail_at;   // now_ms() of the failed write
} producer;

static producer g_prod;
static pthread_t g_prod_thread;
static atomic_int g_prod_running;

static void *producer_main(void *arg) {
    producer *p = arg;
    char line[64];
    for (int i = 0; p->n < 0 || i < p->n; i++) {
        int len = snprintf(line, sizeof line, "data: %d\n\n", i);
        if (http_stream_write(p->s, line, (size_t)len) != OPTIQ_OK) {
            p->fail_at = now_ms();
            atomic_store(&p->failed, 1);
            break;
        }
        atomic_fetch_add(&p->written, 1);
        if (p->delay_ms) sleep_ms(p->delay_ms);
    }
    http_stream_close(p->s);
    atomic_store(&p->done, 1);
    return NULL;
}

static void join_producer(void) {
    if (atomic_exchange(&g_prod_running, 0)) pthread_join(g_prod_thread, NULL);
}

static int query_int(const char *q, const char *key, int def) {
    size_t k = strlen(key);
    for (const char *p = q; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (!strncmp(p, key, k) && p[k] == '=') return atoi(p + k + 1);
    return def;
}

static void handler(http_request *r, void *user) {
    (void)user;
    const char *m = http_request_method(r), *path = http_request_path(r), *q = http_request_query(r);
    char buf[512];
    if (!strcmp(path, "/hello")) {
        const char *key = http_request_header(r, "x-api-key");
        int n = snprintf(buf, sizeof buf, "hello q=%s key=%s", q, key ? key : "(none)");
        http_response_header(r, "X-Test", "yes");
        http_respond(r, 200, "text/plain", buf, (size_t)n);
    } else if (!strcmp(path, "/echo") && !strcmp(m, "POST")) {
        size_t len;
        const char *b = http_request_body(r, &len);
        http_respond(r, 200, http_request_header(r, "Content-Type"), b, len);
    } else if (!strcmp(path, "/slow")) {
        sleep_ms(query_int(q, "ms", 1500));
        http_respond(r, 200, "text/plain", "slow", 4);
    } else if (!strcmp(path, "/note")) {
        http_request_note(r, "tokens=%d", 12);
        http_respond(r, 200, NULL, "{}", 2);
    } else if (!strcmp(path, "/none")) {
        // no response on purpose
    } else if (!strcmp(path, "/stream")) {
        http_stream *s = http_respond_stream(r, 200);
        if (!s) { http_respond_error(r, 500, "server_error", "no stream"); return; }
        memset(&g_prod, 0, sizeof g_prod);
        g_prod.s = s;
        g_prod.n = query_int(q, "n", 10);
        g_prod.delay_ms = query_int(q, "delay", 0);
        atomic_store(&g_prod_running, 1);
        pthread_create(&g_prod_thread, NULL, producer_main, &g_prod);
    } else {
        http_respond_error(r, 404, "not_found", "no such route");
    }
}

static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[64][256];   // ring of the latest entries; connections finish in any order
static int g_log_count;

static void log_fn(void *user, const http_log_entry *e) {
    (void)user;
    pthread_mutex_lock(&g_log_mu);
    snprintf(g_log[g_log_count % 64], sizeof g_log[0], "%s %s %d %llu %s", e->method, e->path, e->status,
             (unsigned long long)e->bytes, e->note);
    g_log_count++;
    pthread_mutex_unlock(&g_log_mu);
}

static int log_has(const char *line) {
    pthread_mutex_lock(&g_log_mu);
    int found = 0;
    for (int i = 0; i < 64 && i < g_log_count; i++) found |= !strcmp(g_log[i], line);
    pthread_mutex_unlock(&g_log_mu);
    return found;
}

/* ---- a raw HTTP/1.1 client ---- */

typedef struct conn {
    int fd;
    char buf[1 << 16];   // bytes read but not consumed
    size_t have;
} conn;

static conn *conn_open(int port) {
    conn *c = calloc(1, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {3, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) { close(c->fd); free(c); return NULL; }
    return c;
}

static void conn_close(conn *c) {
    if (!c) return;
    close(c->fd);
    free(c);
}

static void conn_timeout(conn *c, int ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static int send_all(conn *c, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
static int send_str(conn *c, const char *s) { return send_all(c, s, strlen(s)); }

/* Read more bytes; 0 on EOF, -1 on error/timeout. */
static int fill(conn *c) {
    if (c->have == sizeof c->buf) return -1;
    ssize_t n = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
    if (n <= 0) return n == 0 ? 0 : -1;
    c->have += (size_t)n;
    return 1;
}

static void consume(conn *c, size_t n) {
    memmove(c->buf, c->buf + n, c->have - n);
    c->have -= n;
}

/* One line ending in CRLF (without it) into out; -1 when the connection ends. */
static int read_line(conn *c, char *out, size_t cap) {
    for (;;) {
        char *e = memmem(c->buf, c->have, "\r\n", 2);
        if (e) {
            size_t n = (size_t)(e - c->buf);
            if (n >= cap) n = cap - 1;
            memcpy(out, c->buf, n);
            out[n] = 0;
            consume(c, (size_t)(e - c->buf) + 2);
            return 0;
        }
        if (fill(c) <= 0) return -1;
    }
}

typedef struct response {
    int status;
    char headers[8192];   // "name: value\n" lines, lower-cased names
    char *body;
    size_t len;
    int chunks;           // chunks seen (chunked responses)
} response;

static void response_free(response *r) { free(r->body); r->body = NULL; }

static void body_append(response *r, const char *p, size_t n) {
    r->body = realloc(r->body, r->len + n + 1);
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = 0;
}

static const char *resp_header(response *r, const char *name, char *out, size_t cap) {
    char key[128];
    snprintf(key, sizeof key, "\n%s: ", name);
    char *p = strstr(r->headers, key);
    if (!p) return NULL;
    p += strlen(key);
    size_t n = strcspn(p, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
    return out;
}

/* Read one response; -1 when the connection closed or timed out first. When
 * stop_after_chunks > 0, returns after that many chunks of a chunked body. */
static int read_response_n(conn *c, response *r, int stop_after_chunks) {
    memset(r, 0, sizeof *r);
    char line[8192];
    if (read_line(c, line, sizeof line)) return -1;
    if (strncmp(line, "HTTP/1.", 7) || strlen(line) < 12) return -1;
    r->status = atoi(line + 9);
    size_t hl = 1;
    r->headers[0] = '\n';
    for (;;) {
        if (read_line(c, line, sizeof line)) return -1;
        if (!line[0]) break;
        for (char *p = line; *p && *p != ':'; p++) *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        hl += (size_t)snprintf(r->headers + hl, sizeof r->headers - hl, "%s\n", line);
        if (hl >= sizeof r->headers) hl = sizeof r->headers - 1;
    }
    char v[64];
    if (r->status < 200) return 0;   // 100 Continue: no body
    if (resp_header(r, "transfer-encoding", v, sizeof v) && strstr(v, "chunked")) {
        for (;;) {
            if (read_line(c, line, sizeof line)) return -1;
            size_t n = strtoul(line, NULL, 16);
            if (n == 0) {
                while (!read_line(c, line, sizeof line) && line[0]) {}   // trailers
                break;
            }
            while (c->have < n + 2)
                if (fill(c) <= 0) return -1;
            body_append(r, c->buf, n);
            if (memcmp(c->buf + n, "\r\n", 2)) return -1;
            consume(c, n + 2);
            r->chunks++;
            if (stop_after_chunks > 0 && r->chunks >= stop_after_chunks) return 0;
        }
    } else if (resp_header(r, "content-length", v, sizeof v)) {
        size_t n = strtoul(v, NULL, 10);
        while (n > 0) {
            if (c->have == 0 && fill(c) <= 0) return -1;
            size_t k = c->have < n ? c->have : n;
            body_append(r, c->buf, k);
            consume(c, k);
            n -= k;
        }
    } else {
        int k;
        while ((k = fill(c)) > 0) {}
        body_append(r, c->buf, c->have);
        consume(c, c->have);
    }
    if (!r->body) body_append(r, "", 0);
    return 0;
}
static int read_response(conn *c, response *r) { return read_response_n(c, r, 0); }

/* GET path on a fresh connection; the status, or -1. */
static int get_status(int port, const char *path) {
    conn *c = conn_open(port);
    if (!c) return -1;
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    response r;
    int st = -1;
    if (!send_str(c, req) && !read_response(c, &r)) st = r.status;
    response_free(&r);
    conn_close(c);
    return st;
}

/* The peer closed (or reset) the connection within ms. */
static int wait_closed(conn *c, int ms) {
    conn_timeout(c, ms);
    char b[256];
    for (;;) {
        ssize_t n = recv(c->fd, b, sizeof b, 0);
        if (n == 0) return 1;
        if (n < 0) return errno == ECONNRESET;
    }
}

static http_server *start(http_config cfg) {
    http_server *s = NULL;
    optiq_error err = {0};
    if (http_server_start(&cfg, handler, NULL, &s, &err) != OPTIQ_OK) {
        fprintf(stderr, "start: %s\n", err.message);
        return NULL;
    }
    return s;
}

static http_config test_config(void) {
    http_config cfg = http_config_default();
    cfg.max_body = 1 << 20;
    cfg.timeout_s = 1;
    cfg.max_connections = 16;
    cfg.stream_queue = 256;
    cfg.log_fn = log_fn;
    return cfg;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    http_server *srv = start(test_config());
    if (!srv) { printf("FAIL start\n0 passed, 1 failed\n"); return 1; }
    int port = http_server_port(srv);

    for (TEST_CASE("bound an ephemeral port on 127.0.0.1")) {
        CHECKF(port > 0 && port < 65536, "port %d", port);
    }

    for (TEST_CASE("GET with query and case-insensitive header")) {
        conn *c = conn_open(port);
        CHECK(c);
        response r = {0};
        send_str(c, "GET /hello?a=1&b=2 HTTP/1.1\r\nHost: t\r\nX-API-KEY: k1\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        char v[64];
        CHECKF(r.status == 200, "status %d", r.status);
        CHECKF(r.body && !strcmp(r.body, "hello q=a=1&b=2 key=k1"), "body '%s'", r.body);
        CHECK(resp_header(&r, "x-test", v, sizeof v) && !strcmp(v, "yes"));
        CHECK(resp_header(&r, "content-type", v, sizeof v) && !strcmp(v, "text/plain"));
        response_free(&r);
        conn_close(c);
    }

    for (TEST_CASE("POST body echoed, keep-alive serves two requests on one connection")) {
        conn *c = conn_open(port);
        size_t n = 100000;
        char *body = malloc(n);
        for (size_t i = 0; i < n; i++) body[i] = (char)('a' + i % 26);
        char head[256];
        snprintf(head, sizeof head,
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-test\r\nContent-Length: %zu\r\n\r\n", n);
        response r = {0};
        send_str(c, head);
        send_all(c, body, n);
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 200 && r.len == n && !memcmp(r.body, body, n), "status %d len %zu", r.status, r.len);
        char v[64];
        CHECK(resp_header(&r, "content-type", v, sizeof v) && !strcmp(v, "application/x-test"));
        response_free(&r);
        send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0 && r.status == 200);
        response_free(&r);
        free(body);
        conn_close(c);
    }

    for (TEST_CASE("chunked request body is assembled")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 200 && r.body && !strcmp(r.body, "hello world"), "status %d '%s'", r.status, r.body);
        response_free(&r);
        conn_close(c);
    }

    for (TEST_CASE("body over the limit: 413 JSON before the body is read, server goes on")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2097152\r\n\r\n");
        CHECK(read_response(c, &r) == 0);   // answered without sending the 2 MiB
        CHECKF(r.status == 413, "status %d", r.status);
        CHECKF(r.body && strstr(r.body, "\"type\": \"request_too_large\"") && strstr(r.body, "{\"error\": {\"message\": "),
               "body '%s'", r.body);
        response_free(&r);
        conn_close(c);
        CHECK(get_status(port, "/hello") == 200);
    }

    for (TEST_CASE("Expect: 100-continue: Continue under the limit, 413 instead over it")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        CHECK(read_response(c, &r) == 0 && r.status == 100);
        response_free(&r);
        send_str(c, "hello");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 200 && r.body && !strcmp(r.body, "hello"), "status %d", r.status);
        response_free(&r);
        conn_close(c);
        c = conn_open(port);
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 413, "status %d", r.status);
        response_free(&r);
        conn_close(c);
    }

    for (TEST_CASE("chunked body over the limit: 413")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        char *chunk = malloc(65536 + 16);
        int n = sprintf(chunk, "10000\r\n");
        memset(chunk + n, 'x', 65536);
        memcpy(chunk + n + 65536, "\r\n", 2);
        int sent_ok = 1;
        for (int i = 0; i < 20 && sent_ok; i++) sent_ok = send_all(c, chunk, (size_t)n + 65536 + 2) == 0;
        free(chunk);
        send_str(c, "0\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 413, "status %d", r.status);
        response_free(&r);
        conn_close(c);
        // far past the cap the connection is dropped without reading on
        c = conn_open(port);
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        chunk = malloc(65536 + 16);
        n = sprintf(chunk, "10000\r\n");
        memset(chunk + n, 'x', 65536);
        memcpy(chunk + n + 65536, "\r\n", 2);
        for (int i = 0; i < 64 && send_all(c, chunk, (size_t)n + 65536 + 2) == 0; i++) {}
        free(chunk);
        CHECK(wait_closed(c, 3000));
        response_free(&r);
        conn_close(c);
        CHECK(get_status(port, "/hello") == 200);
    }

    for (TEST_CASE("streamed response: N chunks, SSE headers, chunked encoding")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "GET /stream?n=200 HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        join_producer();
        char v[64];
        CHECKF(r.status == 200, "status %d", r.status);
        CHECK(resp_header(&r, "content-type", v, sizeof v) && !strcmp(v, "text/event-stream"));
        CHECK(resp_header(&r, "cache-control", v, sizeof v) && !strcmp(v, "no-cache"));
        size_t want_len = 0;
        char *want = NULL;
        for (int i = 0; i < 200; i++) {
            char line[32];
            int n = snprintf(line, sizeof line, "data: %d\n\n", i);
            want = realloc(want, want_len + (size_t)n + 1);
            memcpy(want + want_len, line, (size_t)n + 1);
            want_len += (size_t)n;
        }
        CHECKF(r.len == want_len && !memcmp(r.body, want, want_len), "got %zu bytes, want %zu", r.len, want_len);
        CHECK(!atomic_load(&g_prod.failed));
        free(want);
        response_free(&r);
        // the connection stays usable after a stream
        send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0 && r.status == 200);
        response_free(&r);
        conn_close(c);
    }

    for (TEST_CASE("client disconnect mid-stream makes the producer's write fail")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "GET /stream?n=-1&delay=5 HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response_n(c, &r, 3) == 0 && r.chunks == 3);
        response_free(&r);
        double t0 = now_ms();
        conn_close(c);
        while (!atomic_load(&g_prod.done) && now_ms() - t0 < 3000) sleep_ms(5);
        CHECK(atomic_load(&g_prod.failed));
        CHECKF(atomic_load(&g_prod.done) && g_prod.fail_at - t0 < 2000, "failed after %.0f ms", g_prod.fail_at - t0);
        join_producer();
    }

    for (TEST_CASE("idle producer also learns of a disconnect")) {
        conn *c = conn_open(port);
        response r = {0};
        // one chunk, then a long pause: the reader notices the closed socket itself
        send_str(c, "GET /stream?n=-1&delay=1500 HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response_n(c, &r, 1) == 0);
        response_free(&r);
        conn_close(c);
        sleep_ms(400);
        CHECK(http_stream_cancelled(g_prod.s));
        join_producer();
        CHECK(atomic_load(&g_prod.failed));
    }

    for (TEST_CASE("a slow handler does not block a quick route")) {
        conn *a = conn_open(port);
        send_str(a, "GET /slow?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(50);
        double t0 = now_ms();
        CHECK(get_status(port, "/hello") == 200);
        double dt = now_ms() - t0;
        CHECKF(dt < 1000, "quick route took %.0f ms", dt);   // the slow one takes 1500
        response r = {0};
        CHECK(read_response(a, &r) == 0 && r.status == 200);
        response_free(&r);
        conn_close(a);
    }

    for (TEST_CASE("a quick route stays responsive while a stream runs")) {
        conn *a = conn_open(port);
        response r = {0};
        send_str(a, "GET /stream?n=100&delay=20 HTTP/1.1\r\nHost: t\r\n\r\n");   // 2 s
        CHECK(read_response_n(a, &r, 1) == 0);
        response_free(&r);
        double t0 = now_ms();
        CHECK(get_status(port, "/hello") == 200);
        CHECKF(now_ms() - t0 < 1000, "quick route took %.0f ms", now_ms() - t0);
        conn_close(a);
        join_producer();
    }

    for (TEST_CASE("a partial request is dropped after the timeout, others are served")) {
        conn *c = conn_open(port);
        send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n");   // headers never end
        double t0 = now_ms();
        CHECK(get_status(port, "/hello") == 200);
        CHECK(wait_closed(c, 4000));
        double dt = now_ms() - t0;
        CHECKF(dt > 500 && dt < 3500, "dropped after %.0f ms", dt);
        conn_close(c);
        // a connection that never sends anything is dropped too
        c = conn_open(port);
        CHECK(wait_closed(c, 4000));
        conn_close(c);
    }

    for (TEST_CASE("bad requests get an error and the server goes on")) {
        const char *bad[] = {
            "\x01\x02\x03GARBAGE\r\n\r\n",
            "GET\r\n\r\n",
            "GET / HTTP/9.9\r\nHost: t\r\n\r\n",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: banana\r\n\r\n",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            conn *c = conn_open(port);
            response r = {0};
            send_str(c, bad[i]);
            int rc = read_response(c, &r);
            CHECKF(rc != 0 || (r.status >= 400 && r.status < 600), "case %zu: status %d", i, r.status);
            response_free(&r);
            conn_close(c);
        }
        CHECK(get_status(port, "/hello") == 200);
    }

    for (TEST_CASE("POST body without Content-Length: 411 JSON")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\n\r\n{\"a\": 1}");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 411 && r.body && strstr(r.body, "length_required"), "status %d", r.status);
        response_free(&r);
        conn_close(c);
        CHECK(get_status(port, "/hello") == 200);
    }

    for (TEST_CASE("huge header: rejected, server goes on")) {
        conn *c = conn_open(port);
        size_t n = 200000;
        char *req = malloc(n + 128);
        int k = sprintf(req, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ");
        memset(req + k, 'b', n);
        strcpy(req + k + n, "\r\n\r\n");
        send_all(c, req, strlen(req));   // may fail half-way when the server closes
        response r = {0};
        int rc = read_response(c, &r);
        CHECKF(rc != 0 || r.status == 431 || r.status == 413 || r.status == 400, "status %d", r.status);
        response_free(&r);
        free(req);
        conn_close(c);
        CHECK(get_status(port, "/hello") == 200);
    }

    for (TEST_CASE("handler without a response: 500 JSON; 404 is the handler's")) {
        conn *c = conn_open(port);
        response r = {0};
        send_str(c, "GET /none HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 500 && r.body && strstr(r.body, "server_error"), "status %d", r.status);
        response_free(&r);
        send_str(c, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 404 && r.body && !strcmp(r.body, "{\"error\": {\"message\": \"no such route\", \"type\": \"not_found\"}}"),
               "status %d body %s", r.status, r.body);
        response_free(&r);
        conn_close(c);
    }

    for (TEST_CASE("request log line carries the note")) {
        CHECK(get_status(port, "/note?x=1") == 200);
        // the completion callback runs after the last byte went out
        for (int i = 0; i < 200 && !log_has("GET /note 200 2 tokens=12"); i++) sleep_ms(10);
        CHECK(log_has("GET /note 200 2 tokens=12"));
        CHECK(log_has("POST /echo 411 117 "));   // the layer's own errors are logged too
        pthread_mutex_lock(&g_log_mu);
        CHECK(g_log_count > 10);
        pthread_mutex_unlock(&g_log_mu);
    }

    http_server_stop(srv, 1000);

    for (TEST_CASE("connection limit: excess connections wait or are refused")) {
        http_config cfg = test_config();
        cfg.max_connections = 2;
        cfg.timeout_s = 3;
        http_server *s2 = start(cfg);
        CHECK(s2);
        int p2 = s2 ? http_server_port(s2) : 0;
        conn *a = conn_open(p2), *b = conn_open(p2);
        sleep_ms(100);
        conn *c = conn_open(p2);   // the kernel may still complete the handshake
        response r = {0};
        int answered = 0;
        if (c) {
            send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            conn_timeout(c, 400);
            answered = read_response(c, &r) == 0;
            response_free(&r);
        }
        CHECK(!answered);
        conn_close(c);
        conn_close(a);
        conn_close(b);
        int st = -1;
        double t0 = now_ms();
        while (st != 200 && now_ms() - t0 < 2000) { st = get_status(p2, "/hello"); if (st != 200) sleep_ms(50); }
        CHECKF(st == 200, "status after slots freed: %d", st);
        http_server_stop(s2, 500);
    }

    for (TEST_CASE("stop drains a short in-flight stream; log_file line format")) {
        http_config cfg = test_config();
        FILE *logf = tmpfile();
        cfg.log_file = logf;
        http_server *s3 = start(cfg);
        CHECK(s3);
        conn *c = conn_open(http_server_port(s3));
        response r = {0};
        send_str(c, "GET /stream?n=10&delay=30 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(50);
        http_server_stop(s3, 3000);
        CHECK(read_response(c, &r) == 0 && r.chunks >= 9);   // one write may merge two events
        CHECK(r.body && strstr(r.body, "data: 9\n\n"));
        response_free(&r);
        join_producer();
        CHECK(!atomic_load(&g_prod.failed));
        conn_close(c);
        char line[256] = {0}, ms[16] = {0};
        unsigned long long bytes = 0;
        rewind(logf);
        CHECK(fgets(line, sizeof line, logf) != NULL);
        // 2026-12-07T21:09:54Z GET /stream 200 90b 312ms (ten 9-byte events)
        CHECKF(strlen(line) > 21 && line[4] == '-' && line[10] == 'T' && line[19] == 'Z', "line '%s'", line);
        CHECKF(sscanf(line + 21, "GET /stream 200 %llub %15s", &bytes, ms) == 2 && bytes == 90 &&
               strstr(ms, "ms"), "line '%s'", line);
        fclose(logf);
    }

    for (TEST_CASE("stop waits for a slow full response within the drain time")) {
        http_server *s5 = start(test_config());
        CHECK(s5);
        conn *c = conn_open(http_server_port(s5));
        response r = {0};
        send_str(c, "GET /slow?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(50);
        http_server_stop(s5, 3000);
        CHECK(read_response(c, &r) == 0);
        CHECKF(r.status == 200 && r.body && !strcmp(r.body, "slow"), "status %d", r.status);
        response_free(&r);
        conn_close(c);
    }

    for (TEST_CASE("stop cancels an endless stream: producer sees the cancel")) {
        http_server *s4 = start(test_config());
        CHECK(s4);
        conn *c = conn_open(http_server_port(s4));
        conn *idle = conn_open(http_server_port(s4));   // keep-alive connection with nothing in flight
        response r = {0};
        send_str(c, "GET /stream?n=-1&delay=10 HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response_n(c, &r, 2) == 0);
        response_free(&r);
        double t0 = now_ms();
        http_server_stop(s4, 200);
        double dt = now_ms() - t0;
        CHECKF(dt < 2000, "stop took %.0f ms", dt);
        join_producer();
        CHECK(atomic_load(&g_prod.failed));
        CHECK(wait_closed(c, 2000));
        CHECK(wait_closed(idle, 2000));
        conn_close(c);
        conn_close(idle);
    }

    for (TEST_CASE("header deadline: trickled headers are cut off, not extended by each byte")) {
        http_config cfg = test_config();
        cfg.timeout_s = 3;          // idle timeout alone would keep a trickle going
        cfg.header_timeout_s = 1;
        http_server *s6 = start(cfg);
        CHECK(s6);
        int p6 = s6 ? http_server_port(s6) : 0;
        conn *c = conn_open(p6);
        const char *req = "GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        double t0 = now_ms();
        size_t i = 0;
        int closed = 0;
        while (i < strlen(req) && now_ms() - t0 < 5000) {
            if (send(c->fd, req + i, 1, MSG_NOSIGNAL) != 1) { closed = 1; break; }
            i++;
            conn_timeout(c, 250);
            char b[64];
            ssize_t n = recv(c->fd, b, sizeof b, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) { closed = 1; break; }
        }
        double dt = now_ms() - t0;
        CHECKF(closed && dt > 800 && dt < 2500, "closed %d after %.0f ms and %zu bytes", closed, dt, i);
        conn_close(c);
        // a keep-alive connection gets a fresh deadline for each request
        c = conn_open(p6);
        response r = {0};
        send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0 && r.status == 200);
        response_free(&r);
        sleep_ms(700);
        send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0 && r.status == 200);
        response_free(&r);
        sleep_ms(700);   // 1.4 s after the connection opened: only the current request's deadline counts
        send_str(c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(read_response(c, &r) == 0 && r.status == 200);
        response_free(&r);
        // an idle keep-alive connection is waiting for headers too
        CHECK(wait_closed(c, 2500));
        conn_close(c);
        CHECK(get_status(p6, "/hello") == 200);
        http_server_stop(s6, 500);
    }

    for (TEST_CASE("body deadline: a trickled body is cut off, not extended by each byte")) {
        http_config cfg = test_config();
        cfg.timeout_s = 3;          // idle timeout alone would keep a trickle going
        cfg.header_timeout_s = 5;
        cfg.body_timeout_s = 1;
        http_server *s7 = start(cfg);
        CHECK(s7);
        int p7 = s7 ? http_server_port(s7) : 0;
        conn *c = conn_open(p7);
        send_str(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n");
        double t0 = now_ms();
        int i = 0, closed = 0;
        while (i < 40 && now_ms() - t0 < 5000) {
            if (send(c->fd, "x", 1, MSG_NOSIGNAL) != 1) { closed = 1; break; }
            i++;
            conn_timeout(c, 250);
            char b[64];
            ssize_t n = recv(c->fd, b, sizeof b, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) { closed = 1; break; }
        }
        double dt = now_ms() - t0;
        CHECKF(closed && dt > 800 && dt < 2500, "closed %d after %.0f ms and %d bytes", closed, dt, i);
        conn_close(c);
        // a body sent at once is not affected, and the response may take longer than the deadline
        CHECK(get_status(p7, "/hello") == 200);
        http_server_stop(s7, 500);
    }

    for (TEST_CASE("bad host is refused; IPv6 loopback works")) {
        http_config cfg = test_config();
        cfg.host = "not-an-address";
        http_server *s = NULL;
        optiq_error err = {0};
        CHECK(http_server_start(&cfg, handler, NULL, &s, &err) == OPTIQ_ERR_INVALID_ARG && !s);
        CHECK(strstr(err.message, "not-an-address") != NULL);
        cfg.host = "::1";
        if (http_server_start(&cfg, handler, NULL, &s, &err) == OPTIQ_OK) {
            int fd = socket(AF_INET6, SOCK_STREAM, 0);
            struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)http_server_port(s))};
            inet_pton(AF_INET6, "::1", &a.sin6_addr);
            CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
            const char *req = "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            CHECK(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req));
            char buf[64] = {0};
            struct timeval tv = {3, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            CHECK(recv(fd, buf, sizeof buf - 1, 0) > 12 && !strncmp(buf, "HTTP/1.1 200", 12));
            close(fd);
            http_server_stop(s, 500);
        } else {
            printf("     (no IPv6 loopback here: %s)\n", err.message);
        }
    }

    return test_finish();
}
