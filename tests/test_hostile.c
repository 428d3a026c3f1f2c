/*
 * test_hostile.c — malformed and hostile requests against a real `optiq serve`
 * on the tiny fixture models, over raw sockets.
 *
 * Three servers run as child processes (found next to this program:
 * BUILD/tests/test_hostile -> BUILD/optiq), each on an ephemeral port read
 * from its "listening on" line:
 *   A  qwen35-vl-mixed, --ctx 128, --api-key, --allow-remote-images with
 *      127.0.0.1 allowed (the image host below), --timeout 2, --header-timeout 2
 *   B  qwen35-vl-mixed with the defaults (remote images off, full context)
 *   C  qwen35-vl-base: config with a vision_config but no vision sidecar
 * plus a small image host on a thread of this program: it serves a fixture
 * image and redirects to private, loopback, link-local and file: targets.
 *
 * Each case checks the status AND that the body is the route's API error JSON
 * (OpenAI {"error":{"message","type",...}}, Anthropic {"type":"error",
 * "error":{"type","message"}}). /health and a small generation are checked in
 * the middle and at the end, so a request that breaks the server shows up.
 */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "test.h"

#define KEY "hostile-key"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* ---- growable text ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *data, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void buf_str(buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    buf b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_add(&b, tmp, n);
    fclose(f);
    *len = b.len;
    return b.p;
}

static char *base64(const unsigned char *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(n / 3 * 4 + 8), *p = o;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *p++ = tab[v >> 18 & 63];
        *p++ = tab[v >> 12 & 63];
        *p++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *p = 0;
    return o;
}

/* ---- the servers under test ---- */

typedef struct server {
    pid_t pid;
    int port;
    char log[256];
} server;

static char g_optiq[1024];

static int start_server(server *s, const char *name, const char *const *args) {
    snprintf(s->log, sizeof s->log, "/tmp/optiq_hostile_%d_%s.log", (int)getpid(), name);
    const char *argv[32];
    int n = 0;
    argv[n++] = g_optiq;
    argv[n++] = "serve";
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; args[i] && n < 30; i++) argv[n++] = args[i];
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
        if (!freopen(s->log, "w", stderr)) _exit(127);
        if (!freopen("/dev/null", "w", stdout)) _exit(127);
        execv(g_optiq, (char *const *)argv);
        _exit(127);
    }
    s->port = 0;
    for (int i = 0; i < 400 && !s->port; i++) {
        size_t len;
        char *t = read_file(s->log, &len);
        char *l = t ? strstr(t, "listening on http://") : NULL;
        if (l) {
            char *colon = strchr(l + 20, ' ');
            while (colon && colon > l && colon[-1] != ':') colon--;
            if (colon) s->port = atoi(colon);
        }
        free(t);
        if (!s->port) {
            if (waitpid(s->pid, NULL, WNOHANG) == s->pid) break;
            sleep_ms(25);
        }
    }
    return s->port > 0;
}

static int stop_server(server *s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 150; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        }
        sleep_ms(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
    return 124;
}

/* ---- raw HTTP client ---- */

static int conn_open(int port, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

typedef struct response {
    int status;
    char *head;   // status line and headers
    char *body;
    size_t len;
} response;

static void response_free(response *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Read one response until the peer closes (requests send Connection: close);
 * chunked bodies are decoded. -1 when nothing parseable came. */
static int read_response(int fd, response *r) {
    memset(r, 0, sizeof *r);
    buf b = {0};
    char tmp[65536];
    ssize_t n;
    while ((n = recv(fd, tmp, sizeof tmp, 0)) > 0) buf_add(&b, tmp, (size_t)n);
    if (!b.p) return -1;
    char *e = strstr(b.p, "\r\n\r\n");
    if (strncmp(b.p, "HTTP/1.", 7) || !e) {
        free(b.p);
        return -1;
    }
    r->status = atoi(b.p + 9);
    r->head = strndup(b.p, (size_t)(e - b.p));
    const char *body = e + 4;
    size_t blen = b.len - (size_t)(body - b.p);
    buf out = {0};
    if (strcasestr(r->head, "transfer-encoding: chunked")) {
        const char *p = body, *end = body + blen;
        while (p < end) {
            size_t k = strtoul(p, NULL, 16);
            const char *d = strstr(p, "\r\n");
            if (!d || k == 0) break;
            d += 2;
            if ((size_t)(end - d) < k) k = (size_t)(end - d);
            buf_add(&out, d, k);
            p = d + k + 2;
        }
    } else {
        buf_add(&out, body, blen);
    }
    if (!out.p) buf_add(&out, "", 0);
    r->body = out.p;
    r->len = out.len;
    free(b.p);
    return 0;
}

/* One request on a fresh connection. extra: more header lines ("A: b\r\n"). */
static int request(int port, const char *method, const char *path, const char *extra, const void *body,
                   size_t len, response *r) {
    int fd = conn_open(port, 30000);
    if (fd < 0) return -1;
    char head[2048];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n", method,
                      path, extra ? extra : "", len);
    int rc = send_all(fd, head, (size_t)hn);
    if (!rc && len) rc = send_all(fd, body, len);
    rc = read_response(fd, r);
    close(fd);
    return rc ? -1 : r->status;
}

#define AUTH "Authorization: Bearer " KEY "\r\n"
#define JSON_CT "Content-Type: application/json\r\n"

static int post(int port, const char *path, const char *body, response *r) {
    return request(port, "POST", path, AUTH JSON_CT, body, strlen(body), r);
}

/* The body is the OpenAI error JSON; the message contains want (NULL: any). */
static int openai_error(const response *r, const char *want) {
    cJSON *j = cJSON_Parse(r->body);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
    int ok = cJSON_IsObject(j) && cJSON_IsString(m) && cJSON_IsString(t) && *t->valuestring &&
             !cJSON_GetObjectItemCaseSensitive(j, "type") && (!want || strstr(m->valuestring, want));
    cJSON_Delete(j);
    return ok;
}

static int anthropic_error(const response *r, const char *want) {
    cJSON *j = cJSON_Parse(r->body);
    cJSON *ty = cJSON_GetObjectItemCaseSensitive(j, "type");
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
    int ok = cJSON_IsString(ty) && !strcmp(ty->valuestring, "error") && cJSON_IsString(m) && cJSON_IsString(t) &&
             *t->valuestring && (!want || strstr(m->valuestring, want));
    cJSON_Delete(j);
    return ok;
}

static int is_anthropic_path(const char *path) { return strncmp(path, "/v1/messages", 12) == 0; }

/* A request that must fail with status in the route's error format. */
static void expect_error(int port, const char *method, const char *path, const char *extra, const void *body,
                         size_t len, int status, const char *want) {
    response r;
    int st = request(port, method, path, extra, body, len, &r);
    int fmt = st < 0 ? 0 : is_anthropic_path(path) ? anthropic_error(&r, want) : openai_error(&r, want);
    CHECKF(st == status && fmt, "%s %s: status %d (want %d), body %.300s", method, path, st, status,
           st < 0 ? "(none)" : r.body);
    if (st >= 0) response_free(&r);
}

static void expect_post_error(int port, const char *path, const char *body, int status, const char *want) {
    expect_error(port, "POST", path, AUTH JSON_CT, body, strlen(body), status, want);
}

/* GET /health answers 200 {"status":"ok"}. */
static int health_ok(int port) {
    response r;
    int st = request(port, "GET", "/health", NULL, NULL, 0, &r);
    int ok = st == 200 && r.body && !strcmp(r.body, "{\"status\":\"ok\"}");
    if (st >= 0) response_free(&r);
    return ok;
}

/* A small chat generation answers 200 with 4 completion tokens. */
static int generation_ok(int port, const char *extra) {
    const char *b = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}],\"max_tokens\":4}";
    response r;
    int st = request(port, "POST", "/v1/chat/completions", extra, b, strlen(b), &r);
    int ok = 0;
    if (st == 200) {
        cJSON *j = cJSON_Parse(r.body);
        cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
        cJSON *c = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
        ok = cJSON_IsNumber(c) && c->valuedouble == 4;
        cJSON_Delete(j);
    }
    if (st >= 0) response_free(&r);
    return ok;
}

/* ---- the image host: a tiny HTTP server on a thread ---- */

static int g_img_listen = -1, g_img_port;
static char *g_png;
static size_t g_png_len;
static atomic_int g_img_quit;

static void img_reply(int fd, const char *path) {
    char head[512];
    const char *loc = NULL;
    char locbuf[256];
    if (!strcmp(path, "/to-private")) loc = "http://10.0.0.1/x.png";
    else if (!strcmp(path, "/to-meta")) loc = "http://169.254.169.254/latest/meta-data/";
    else if (!strcmp(path, "/to-v6")) {
        snprintf(locbuf, sizeof locbuf, "http://[::1]:%d/img0.png", g_img_port);
        loc = locbuf;
    } else if (!strcmp(path, "/to-loopback2")) {
        snprintf(locbuf, sizeof locbuf, "http://127.0.0.2:%d/img0.png", g_img_port);
        loc = locbuf;
    } else if (!strcmp(path, "/to-decimal")) {
        snprintf(locbuf, sizeof locbuf, "http://2130706434:%d/img0.png", g_img_port);
        loc = locbuf;
    } else if (!strcmp(path, "/to-file")) loc = "file:///etc/passwd";
    else if (!strcmp(path, "/to-img0")) {
        snprintf(locbuf, sizeof locbuf, "http://127.0.0.1:%d/img0.png", g_img_port);
        loc = locbuf;
    }
    if (loc) {
        int n = snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", loc);
        send_all(fd, head, (size_t)n);
    } else if (!strcmp(path, "/img0.png")) {
        int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", g_png_len);
        send_all(fd, head, (size_t)n);
        send_all(fd, g_png, g_png_len);
    } else {
        const char *nf = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(fd, nf, strlen(nf));
    }
}

static void *img_main(void *arg) {
    (void)arg;
    while (!atomic_load(&g_img_quit)) {
        struct pollfd p = {.fd = g_img_listen, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        int fd = accept(g_img_listen, NULL, NULL);
        if (fd < 0) continue;
        struct timeval tv = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char req[4096];
        size_t have = 0;
        ssize_t n;
        while (have < sizeof req - 1 && (n = recv(fd, req + have, sizeof req - 1 - have, 0)) > 0) {
            have += (size_t)n;
            req[have] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        req[have] = 0;
        char path[256] = "";
        sscanf(req, "GET %255s", path);
        img_reply(fd, path);
        close(fd);
    }
    return NULL;
}

static int img_host_start(pthread_t *t) {
    g_img_listen = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(g_img_listen, (struct sockaddr *)&a, sizeof a) || listen(g_img_listen, 16) ||
        getsockname(g_img_listen, (struct sockaddr *)&a, &al))
        return -1;
    g_img_port = ntohs(a.sin_port);
    return pthread_create(t, NULL, img_main, NULL);
}

/* ---- request bodies ---- */

/* A chat request with one image_url part holding url. */
static char *chat_with_image(const char *url, int n_images) {
    buf b = {0};
    buf_str(&b, "{\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":[");
    for (int i = 0; i < n_images; i++) {
        buf_str(&b, "{\"type\":\"image_url\",\"image_url\":{\"url\":\"");
        buf_str(&b, url);
        buf_str(&b, "\"}},");
    }
    buf_str(&b, "{\"type\":\"text\",\"text\":\"What is in the picture? Describe it.\"}]}]}");
    return b.p;
}

/* An Anthropic messages request with n base64 image blocks; max_tokens < 0: none. */
static char *messages_with_image(const char *media, const char *b64, int n_images, int max_tokens) {
    buf b = {0};
    char mt[64] = "";
    if (max_tokens >= 0) snprintf(mt, sizeof mt, "\"max_tokens\":%d,", max_tokens);
    buf_str(&b, "{\"model\":\"m\",");
    buf_str(&b, mt);
    buf_str(&b, "\"messages\":[{\"role\":\"user\",\"content\":[");
    for (int i = 0; i < n_images; i++) {
        buf_str(&b, "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"");
        buf_str(&b, media);
        buf_str(&b, "\",\"data\":\"");
        buf_str(&b, b64);
        buf_str(&b, "\"}},");
    }
    buf_str(&b, "{\"type\":\"text\",\"text\":\"What is in the picture? Describe it.\"}]}]}");
    return b.p;
}

/* A PNG whose IHDR declares w x h (valid CRC) and no image data. */
static char *png_declaring(uint32_t w, uint32_t h, size_t *len) {
    static unsigned char png[8 + 25 + 12];
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    memcpy(png, sig, 8);
    unsigned char *c = png + 8;
    c[0] = 0, c[1] = 0, c[2] = 0, c[3] = 13;
    memcpy(c + 4, "IHDR", 4);
    unsigned char *d = c + 8;
    d[0] = (unsigned char)(w >> 24), d[1] = (unsigned char)(w >> 16), d[2] = (unsigned char)(w >> 8), d[3] = (unsigned char)w;
    d[4] = (unsigned char)(h >> 24), d[5] = (unsigned char)(h >> 16), d[6] = (unsigned char)(h >> 8), d[7] = (unsigned char)h;
    d[8] = 8, d[9] = 2, d[10] = 0, d[11] = 0, d[12] = 0;
    uLong crc = crc32(0L, c + 4, 17);
    c[21] = (unsigned char)(crc >> 24), c[22] = (unsigned char)(crc >> 16), c[23] = (unsigned char)(crc >> 8), c[24] = (unsigned char)crc;
    unsigned char *iend = c + 25;
    static const unsigned char end[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    memcpy(iend, end, 12);
    *len = sizeof png;
    return base64(png, sizeof png);
}

static int64_t json_int(const char *body, const char *k1, const char *k2) {
    cJSON *j = cJSON_Parse(body);
    cJSON *a = cJSON_GetObjectItemCaseSensitive(j, k1);
    if (k2) a = cJSON_GetObjectItemCaseSensitive(a, k2);
    int64_t v = cJSON_IsNumber(a) ? (int64_t)a->valuedouble : -1;
    cJSON_Delete(j);
    return v;
}

/* ---- main ---- */

int main(int argc, char **argv) {
    (void)argc;
    signal(SIGPIPE, SIG_IGN);
    char dir[900];
    snprintf(dir, sizeof dir, "%s", argv[0]);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    snprintf(g_optiq, sizeof g_optiq, "%s/../optiq", dir);
    if (access(g_optiq, X_OK) != 0) {
        printf("FAIL optiq binary not found at %s\n0 passed, 1 failed\n", g_optiq);
        return 1;
    }
    char vl[1024], base[1024], imgpath[1100];
    snprintf(vl, sizeof vl, "%s", test_path("tests/fixtures/models/qwen35-vl-mixed"));
    snprintf(base, sizeof base, "%s", test_path("tests/fixtures/models/qwen35-vl-base"));
    snprintf(imgpath, sizeof imgpath, "%s/images/img0.png", vl);
    g_png = read_file(imgpath, &g_png_len);
    size_t img1_len = 0;
    char img1path[1100];
    snprintf(img1path, sizeof img1path, "%s/images/img1.png", vl);
    char *img1 = read_file(img1path, &img1_len);
    if (!g_png || !img1) {
        printf("FAIL fixture images missing\n0 passed, 1 failed\n");
        return 1;
    }
    char *b64_0 = base64((unsigned char *)g_png, g_png_len), *b64_1 = base64((unsigned char *)img1, img1_len);
    buf u0 = {0}, u1 = {0};
    buf_str(&u0, "data:image/png;base64,");
    buf_str(&u0, b64_0);
    buf_str(&u1, "data:image/png;base64,");
    buf_str(&u1, b64_1);

    pthread_t img_thread;
    int img_up = img_host_start(&img_thread) == 0;
    char imgport[16];
    snprintf(imgport, sizeof imgport, "%d", g_img_port);

    server A = {0}, B = {0}, C = {0};
    const char *args_a[] = {"--model", vl, "--ctx", "128", "--api-key", KEY, "--allow-remote-images",
                            "--allow-image-host", "127.0.0.1", "--max-image-bytes", "200000", "--timeout", "2",
                            "--header-timeout", "2", NULL};
    const char *args_b[] = {"--model", vl, NULL};
    const char *args_c[] = {"--model", base, NULL};
    int up_a = start_server(&A, "a", args_a), up_b = start_server(&B, "b", args_b),
        up_c = start_server(&C, "c", args_c);
    for (TEST_CASE("three servers and the image host start")) {
        CHECKF(up_a && up_b && up_c && img_up, "A %d B %d C %d image host %d", up_a, up_b, up_c, img_up);
    }
    if (!up_a || !up_b || !up_c || !img_up) {
        stop_server(&A), stop_server(&B), stop_server(&C);
        return test_finish();
    }
    int pa = A.port;
    const char *chat = "/v1/chat/completions", *cmpl = "/v1/completions", *msgs = "/v1/messages",
               *count = "/v1/messages/count_tokens";

    for (TEST_CASE("baseline: /health and a small generation")) {
        CHECK(health_ok(pa));
        CHECK(generation_ok(pa, AUTH JSON_CT));
    }

    /* ---- broken JSON ---- */
    for (TEST_CASE("truncated JSON -> 400 (OpenAI)")) expect_post_error(pa, chat, "{\"messages\": [", 400, NULL);
    for (TEST_CASE("truncated JSON -> 400 (Anthropic)")) expect_post_error(pa, msgs, "{\"max_tokens\":4,\"messages\":[{", 400, NULL);
    for (TEST_CASE("trailing garbage after the document -> 400")) {
        expect_post_error(pa, chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]} xyz", 400, NULL);
    }
    for (TEST_CASE("invalid UTF-8 in a string -> 400")) {
        expect_post_error(pa, chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\xfe\xc3\"}]}", 400, NULL);
    }
    for (TEST_CASE("NUL byte inside the body -> 400")) {
        const char b[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}],\"max_tokens\":2}";
        expect_error(pa, "POST", chat, AUTH JSON_CT, b, sizeof b - 1, 400, NULL);
        expect_error(pa, "POST", msgs, AUTH JSON_CT, b, sizeof b - 1, 400, NULL);
    }
    for (TEST_CASE("lone surrogate escape -> 400")) {
        expect_post_error(pa, chat, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}", 400, NULL);
    }
    for (TEST_CASE("empty body -> 400 on every model route")) {
        expect_post_error(pa, chat, "", 400, NULL);
        expect_post_error(pa, cmpl, "", 400, NULL);
        expect_post_error(pa, msgs, "", 400, NULL);
        expect_post_error(pa, count, "", 400, NULL);
    }
    for (TEST_CASE("top level not an object -> 400")) {
        expect_post_error(pa, chat, "[]", 400, NULL);
        expect_post_error(pa, msgs, "\"text\"", 400, NULL);
        expect_post_error(pa, cmpl, "null", 400, NULL);
    }
    for (TEST_CASE("100000 nested '[' -> 400, both APIs")) {
        size_t n = 100000;
        char *b = malloc(n + 1);
        memset(b, '[', n);
        b[n] = 0;
        expect_post_error(pa, chat, b, 400, NULL);
        expect_post_error(pa, count, b, 400, NULL);
        memset(b, '{', n);
        expect_post_error(pa, cmpl, b, 400, NULL);
        free(b);
    }
    for (TEST_CASE("deep nesting inside a valid field -> 400")) {
        buf b = {0};
        buf_str(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"chat_template_kwargs\":{\"x\":");
        for (int i = 0; i < 5000; i++) buf_str(&b, "[");
        for (int i = 0; i < 5000; i++) buf_str(&b, "]");
        buf_str(&b, "}}");
        expect_post_error(pa, chat, b.p, 400, NULL);
        free(b.p);
    }

    /* ---- wrong types ---- */
    static const struct {
        const char *name, *path, *body;
    } types[] = {
        {"messages not an array", "/v1/chat/completions", "{\"messages\":\"hi\"}"},
        {"messages empty", "/v1/chat/completions", "{\"messages\":[]}"},
        {"messages missing", "/v1/chat/completions", "{\"max_tokens\":3}"},
        {"message not an object", "/v1/chat/completions", "{\"messages\":[1]}"},
        {"content a number", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":42}]}"},
        {"content part without type", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}]}"},
        {"unknown role", "/v1/chat/completions", "{\"messages\":[{\"role\":\"wizard\",\"content\":\"hi\"}]}"},
        {"role missing", "/v1/chat/completions", "{\"messages\":[{\"content\":\"hi\"}]}"},
        {"max_tokens negative", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":-5}"},
        {"max_tokens a string", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":\"10\"}"},
        {"max_tokens huge", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":1e300}"},
        {"max_tokens fractional", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2.5}"},
        {"temperature a string", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":\"hot\"}"},
        {"temperature out of range", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":-1}"},
        {"stop a number", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":5}"},
        {"stop list with a number", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[\"a\",1]}"},
        {"stream not a bool", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":\"yes\"}"},
        {"n = 2", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2}"},
        {"completions: prompt missing", "/v1/completions", "{\"max_tokens\":2}"},
        {"completions: prompt a number", "/v1/completions", "{\"prompt\":7}"},
        {"completions: two prompts", "/v1/completions", "{\"prompt\":[\"a\",\"b\"]}"},
        {"completions: max_tokens zero", "/v1/completions", "{\"prompt\":\"a\",\"max_tokens\":0}"},
        {"messages: max_tokens missing", "/v1/messages", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"messages: max_tokens a string", "/v1/messages", "{\"max_tokens\":\"4\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"messages: messages an object", "/v1/messages", "{\"max_tokens\":4,\"messages\":{}}"},
        {"messages: content a number", "/v1/messages", "{\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":1}]}"},
        {"messages: role system in messages", "/v1/messages", "{\"max_tokens\":4,\"messages\":[{\"role\":\"system\",\"content\":\"hi\"}]}"},
        {"messages: tool_use block", "/v1/messages", "{\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_use\",\"id\":\"x\",\"name\":\"f\",\"input\":{}}]}]}"},
        {"messages: system a number", "/v1/messages", "{\"max_tokens\":4,\"system\":3,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"messages: stop_sequences a string", "/v1/messages", "{\"max_tokens\":4,\"stop_sequences\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"messages: temperature 5", "/v1/messages", "{\"max_tokens\":4,\"temperature\":5,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"messages: stream a number", "/v1/messages", "{\"max_tokens\":4,\"stream\":1,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"count_tokens: messages missing", "/v1/messages/count_tokens", "{\"model\":\"m\"}"},
        {"count_tokens: empty messages", "/v1/messages/count_tokens", "{\"messages\":[]}"},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s -> 400", types[i].name);
        for (TEST_CASE(name)) expect_post_error(pa, types[i].path, types[i].body, 400, NULL);
    }

    for (TEST_CASE("middle of the suite: /health and a generation still work")) {
        CHECK(health_ok(pa));
        CHECK(generation_ok(pa, AUTH JSON_CT));
    }

    /* ---- sizes and context ---- */
    for (TEST_CASE("1 MB string in an ignored key -> 200 (read and dropped)")) {
        buf b = {0};
        buf_str(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,\"user\":\"");
        char *big = malloc(1 << 20);
        memset(big, 'u', 1 << 20);
        buf_add(&b, big, 1 << 20);
        buf_str(&b, "\"}");
        response r;
        int st = post(pa, chat, b.p, &r);
        CHECKF(st == 200, "status %d %.200s", st, st >= 0 ? r.body : "");
        if (st >= 0) response_free(&r);
        free(big);
        free(b.p);
    }
    for (TEST_CASE("prompt longer than the context (--ctx 128) -> 400, both APIs")) {
        buf text = {0};
        for (int i = 0; i < 400; i++) buf_str(&text, "hello world ");
        buf b = {0};
        buf_str(&b, "{\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":\"");
        buf_str(&b, text.p);
        buf_str(&b, "\"}]}");
        expect_post_error(pa, chat, b.p, 400, "context");
        expect_post_error(pa, msgs, b.p, 400, "context");
        free(b.p);
        b = (buf){0};
        buf_str(&b, "{\"max_tokens\":4,\"prompt\":\"");
        buf_str(&b, text.p);
        buf_str(&b, "\"}");
        expect_post_error(pa, cmpl, b.p, 400, "context");
        free(b.p);
        free(text.p);
    }
    for (TEST_CASE("body over 32 MiB -> 413 in each API's format, before the body is sent")) {
        expect_error(pa, "POST", chat, AUTH JSON_CT "X-Pad: 1\r\n", "", 0, 400, NULL);   // sanity: short body
        for (int k = 0; k < 2; k++) {
            const char *path = k ? msgs : chat;
            int fd = conn_open(pa, 5000);
            char head[512];
            int hn = snprintf(head, sizeof head,
                              "POST %s HTTP/1.1\r\nHost: t\r\n" AUTH JSON_CT "Content-Length: 40000000\r\n\r\n", path);
            send_all(fd, head, (size_t)hn);
            response r;
            int rc = read_response(fd, &r);
            close(fd);
            int fmt = rc == 0 && (k ? anthropic_error(&r, "over the limit") : openai_error(&r, "over the limit"));
            CHECKF(rc == 0 && r.status == 413 && fmt, "%s: status %d body %.200s", path, r.status, rc ? "" : r.body);
            if (rc == 0) response_free(&r);
        }
    }

    /* ---- images ---- */
    for (TEST_CASE("invalid base64 in a data: URL -> 400, both APIs")) {
        char *b = chat_with_image("data:image/png;base64,!!!notbase64!!!", 1);
        expect_post_error(pa, chat, b, 400, NULL);
        free(b);
        b = messages_with_image("image/png", "@@@@", 1, 4);
        expect_post_error(pa, msgs, b, 400, NULL);
        free(b);
    }
    for (TEST_CASE("bad data: URLs (not base64, no comma, not an image type) -> 400")) {
        const char *urls[] = {"data:text/plain,hello", "data:image/png;base64", "data:,", "data:image/png;base64,"};
        for (size_t i = 0; i < 4; i++) {
            char *b = chat_with_image(urls[i], 1);
            expect_post_error(pa, chat, b, 400, NULL);
            free(b);
        }
    }
    for (TEST_CASE("an image that is not an image -> 400, both APIs")) {
        char *t = base64((const unsigned char *)"this is plain text, not a picture", 33);
        buf u = {0};
        buf_str(&u, "data:image/png;base64,");
        buf_str(&u, t);
        char *b = chat_with_image(u.p, 1);
        expect_post_error(pa, chat, b, 400, NULL);
        free(b);
        b = messages_with_image("image/jpeg", t, 1, 4);
        expect_post_error(pa, msgs, b, 400, NULL);
        free(b);
        b = messages_with_image("image/jpeg", t, 1, -1);
        expect_post_error(pa, count, b, 400, NULL);
        free(b);
        free(u.p);
        free(t);
    }
    for (TEST_CASE("an image declaring 100000 x 100000 pixels -> 400, nothing allocated")) {
        size_t n;
        char *t = png_declaring(100000, 100000, &n);
        buf u = {0};
        buf_str(&u, "data:image/png;base64,");
        buf_str(&u, t);
        char *b = chat_with_image(u.p, 1);
        expect_post_error(pa, chat, b, 400, NULL);
        free(b);
        b = messages_with_image("image/png", t, 1, -1);
        expect_post_error(pa, count, b, 400, NULL);
        free(b);
        free(u.p);
        free(t);
        CHECK(health_ok(pa));
    }
    for (TEST_CASE("image in an assistant message -> 400")) {
        buf b = {0};
        buf_str(&b, "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"");
        buf_str(&b, u0.p);
        buf_str(&b, "\"}}]},{\"role\":\"user\",\"content\":\"hi\"}]}");
        expect_post_error(pa, chat, b.p, 400, NULL);
        free(b.p);
    }
    for (TEST_CASE("file:// and other schemes -> 400")) {
        const char *urls[] = {"file:///etc/passwd", "ftp://8.8.8.8/x.png", "gopher://x/", "/etc/passwd", "javascript:alert(1)"};
        for (size_t i = 0; i < 5; i++) {
            char *b = chat_with_image(urls[i], 1);
            expect_post_error(pa, chat, b, 400, NULL);
            free(b);
        }
    }
    for (TEST_CASE("an image to the folder without a vision sidecar -> 400 naming the sidecar")) {
        char *b = chat_with_image(u0.p, 1);
        expect_error(C.port, "POST", chat, JSON_CT, b, strlen(b), 400, "vision sidecar");
        free(b);
        b = messages_with_image("image/png", b64_0, 1, 4);
        expect_error(C.port, "POST", msgs, JSON_CT, b, strlen(b), 400, "vision sidecar");
        free(b);
        CHECK(health_ok(C.port) && generation_ok(C.port, JSON_CT));
    }
    for (TEST_CASE("http image URL without --allow-remote-images -> 400")) {
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/img0.png", g_img_port);
        char *b = chat_with_image(url, 1);
        expect_error(B.port, "POST", chat, JSON_CT, b, strlen(b), 400, "remote image URLs are disabled");
        free(b);
    }

    /* ---- SSRF with --allow-remote-images (127.0.0.1 allowed) ---- */
    for (TEST_CASE("allowed image host: the remote image works (control case)")) {
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/img0.png", g_img_port);
        char *b = chat_with_image(url, 1);
        response r;
        int st = post(pa, chat, b, &r);
        CHECKF(st == 200 && json_int(r.body, "usage", "prompt_tokens") == 53, "status %d %.200s", st,
               st >= 0 ? r.body : "");
        if (st >= 0) response_free(&r);
        free(b);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/to-img0", g_img_port);
        b = chat_with_image(url, 1);
        st = post(pa, chat, b, &r);
        CHECKF(st == 200, "redirect to the allowed host: status %d", st);
        if (st >= 0) response_free(&r);
        free(b);
    }
    static const struct {
        const char *url, *want;   // url: %d is the image host's port
    } ssrf[] = {
        {"http://10.0.0.1/x.png", "private address 10.0.0.1"},
        {"http://192.168.1.1/x.png", "private address 192.168.1.1"},
        {"http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"},
        {"http://[::1]:%d/img0.png", "loopback address ::1"},
        {"http://[::ffff:127.0.0.1]:%d/img0.png", "loopback address ::ffff:127.0.0.1"},
        {"http://[::ffff:a9fe:a9fe]/", "link-local"},
        {"http://127.0.0.2:%d/img0.png", "loopback address 127.0.0.2"},
        {"http://2130706434:%d/img0.png", "loopback address 127.0.0.2"},
        {"http://0177.0.0.2:%d/img0.png", "loopback address 127.0.0.2"},
        {"http://0x7f000002:%d/img0.png", "loopback address 127.0.0.2"},
        {"http://167772161/x.png", "private address 10.0.0.1"},
        {"http://0251.0376.0251.0376/", "link-local address 169.254.169.254"},
        {"http://0.0.0.0:%d/img0.png", "unspecified"},
        {"http://[fe80::1]/", "link-local"},
        {"http://user:pw@127.0.0.1:%d/img0.png", "credentials"},
        {"http://127.0.0.1:%d/to-private", "private address 10.0.0.1"},
        {"http://127.0.0.1:%d/to-meta", "link-local address 169.254.169.254"},
        {"http://127.0.0.1:%d/to-v6", "loopback address ::1"},
        {"http://127.0.0.1:%d/to-loopback2", "loopback address 127.0.0.2"},
        {"http://127.0.0.1:%d/to-decimal", "loopback address 127.0.0.2"},
        {"http://127.0.0.1:%d/to-file", "scheme file is not allowed"},
        {"http://127.0.0.1:%d/missing.png", "HTTP 404"},
    };
    for (size_t i = 0; i < sizeof ssrf / sizeof ssrf[0]; i++) {
        char url[256], name[300];
        snprintf(url, sizeof url, ssrf[i].url, g_img_port);
        snprintf(name, sizeof name, "remote image %s -> 400 (%s)", url, ssrf[i].want);
        for (TEST_CASE(name)) {
            char *b = chat_with_image(url, 1);
            expect_post_error(pa, chat, b, 400, ssrf[i].want);
            free(b);
        }
    }
    for (TEST_CASE("Anthropic url image source to a private address -> 400 Anthropic error")) {
        const char *b = "{\"max_tokens\":4,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
                        "\"source\":{\"type\":\"url\",\"url\":\"http://10.1.2.3/x.png\"}}]}]}";
        expect_post_error(pa, msgs, b, 400, "private address 10.1.2.3");
    }

    /* ---- HTTP-level misuse ---- */
    for (TEST_CASE("wrong method -> 405 with Allow, each API's format")) {
        expect_error(pa, "GET", chat, AUTH, "", 0, 405, "not allowed");
        expect_error(pa, "DELETE", msgs, AUTH, "", 0, 405, "not allowed");
        expect_error(pa, "PUT", count, AUTH JSON_CT, "{}", 2, 405, "not allowed");
        response r;
        int st = request(pa, "GET", cmpl, AUTH, "", 0, &r);
        CHECK(st == 405 && strcasestr(r.head, "\r\nallow: POST"));
        if (st >= 0) response_free(&r);
    }
    for (TEST_CASE("unknown path -> 404, each API's format")) {
        expect_error(pa, "GET", "/v1/nothing", AUTH, "", 0, 404, "no route");
        expect_error(pa, "POST", "/v1/messages/nothing", AUTH JSON_CT, "{}", 2, 404, "no route");
        expect_error(pa, "GET", "/../../etc/passwd", AUTH, "", 0, 404, NULL);
        expect_error(pa, "GET", "/v1/models%00x", AUTH, "", 0, 404, NULL);
    }
    for (TEST_CASE("missing or wrong API key -> 401, /health stays open")) {
        const char *ok = "{\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
        expect_error(pa, "POST", chat, JSON_CT, ok, strlen(ok), 401, NULL);
        expect_error(pa, "POST", chat, JSON_CT "Authorization: Bearer nope\r\n", ok, strlen(ok), 401, NULL);
        expect_error(pa, "POST", msgs, JSON_CT "x-api-key: nope\r\n", ok, strlen(ok), 401, NULL);
        expect_error(pa, "POST", count, JSON_CT "x-api-key: " KEY "x\r\n", ok, strlen(ok), 401, NULL);
        expect_error(pa, "POST", msgs, JSON_CT "Authorization: Basic " KEY "\r\n", ok, strlen(ok), 401, NULL);
        expect_error(pa, "GET", "/v1/models", NULL, "", 0, 401, NULL);
        CHECK(health_ok(pa));
    }
    for (TEST_CASE("wrong Content-Type: JSON is still read; a form body -> 400")) {
        const char *ok = "{\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
        response r;
        int st = request(pa, "POST", chat, AUTH "Content-Type: text/plain\r\n", ok, strlen(ok), &r);
        CHECKF(st == 200, "text/plain JSON: status %d", st);
        if (st >= 0) response_free(&r);
        const char *form = "messages=hi&max_tokens=2";
        expect_error(pa, "POST", chat, AUTH "Content-Type: application/x-www-form-urlencoded\r\n", form,
                     strlen(form), 400, NULL);
        expect_error(pa, "POST", msgs, AUTH "Content-Type: multipart/form-data; boundary=x\r\n", form,
                     strlen(form), 400, NULL);
    }
    for (TEST_CASE("POST without Content-Length -> 411 in the API's format")) {
        for (int k = 0; k < 2; k++) {
            int fd = conn_open(pa, 5000);
            char head[512];
            int hn = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\n" AUTH JSON_CT "\r\n{}",
                              k ? msgs : chat);
            send_all(fd, head, (size_t)hn);
            response r;
            int rc = read_response(fd, &r);
            close(fd);
            int fmt = rc == 0 && (k ? anthropic_error(&r, NULL) : openai_error(&r, NULL));
            CHECKF(rc == 0 && r.status == 411 && fmt, "status %d %.200s", r.status, rc ? "" : r.body);
            if (rc == 0) response_free(&r);
        }
    }
    for (TEST_CASE("Content-Length shorter than the body: the cut body is a JSON error")) {
        const char *b = "{\"max_tokens\":2,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
        int fd = conn_open(pa, 5000);
        char head[512];
        int hn = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: t\r\n" AUTH JSON_CT "Content-Length: 20\r\n\r\n", chat);
        send_all(fd, head, (size_t)hn);
        send_all(fd, b, strlen(b));
        char got[4096];
        ssize_t n = recv(fd, got, sizeof got - 1, 0);
        close(fd);
        got[n > 0 ? n : 0] = 0;
        char *body = strstr(got, "\r\n\r\n");
        response r = {.status = n > 12 ? atoi(got + 9) : -1, .body = body ? body + 4 : got};
        CHECKF(r.status == 400 && openai_error(&r, NULL), "got %.300s", got);
    }
    for (TEST_CASE("Content-Length longer than the body: closed after the idle timeout, no answer")) {
        int fd = conn_open(pa, 6000);
        char head[512];
        int hn = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: t\r\n" AUTH JSON_CT "Content-Length: 5000\r\n\r\n{\"messages\":", chat);
        send_all(fd, head, (size_t)hn);
        double t0 = now_ms();
        char got[256];
        ssize_t n = recv(fd, got, sizeof got, 0);
        double dt = now_ms() - t0;
        close(fd);
        CHECKF(n == 0 && dt > 1500 && dt < 5000, "recv %zd after %.0f ms", n, dt);
    }
    for (TEST_CASE("slowloris headers: one byte every 300 ms is cut at the 2 s header deadline")) {
        int fd = conn_open(pa, 300);
        const char *req = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        double t0 = now_ms();
        int closed = 0;
        for (size_t i = 0; req[i] && now_ms() - t0 < 8000 && !closed; i++) {
            if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) closed = 1;
            char b[64];
            ssize_t n = recv(fd, b, sizeof b, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) closed = 1;
        }
        double dt = now_ms() - t0;
        close(fd);
        CHECKF(closed && dt > 1700 && dt < 4000, "closed %d after %.0f ms", closed, dt);
    }
    for (TEST_CASE("slowloris body: a body that stops is closed after the idle timeout")) {
        int fd = conn_open(pa, 300);
        char head[512];
        int hn = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: t\r\n" AUTH JSON_CT "Content-Length: 1000\r\n\r\n", chat);
        send_all(fd, head, (size_t)hn);
        double t0 = now_ms();
        int closed = 0;
        for (int i = 0; i < 5 && !closed; i++) {   // a few bytes, then silence
            if (send(fd, "{", 1, MSG_NOSIGNAL) != 1) closed = 1;
            sleep_ms(100);
        }
        char b[64];
        for (int i = 0; i < 30 && !closed; i++) {
            ssize_t n = recv(fd, b, sizeof b, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) closed = 1;
        }
        double dt = now_ms() - t0;
        close(fd);
        CHECKF(closed && dt < 5000, "closed %d after %.0f ms", closed, dt);
    }
    for (TEST_CASE("garbage request lines and a bad Content-Length: connection ends, server lives")) {
        const char *bad[] = {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "GET\r\n\r\n",
                             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
                             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\nab"};
        for (size_t i = 0; i < 4; i++) {
            int fd = conn_open(pa, 3000);
            send_all(fd, bad[i], strlen(bad[i]));
            response r;
            int rc = read_response(fd, &r);
            close(fd);
            CHECKF(rc != 0 || (r.status >= 400 && r.status < 500), "case %zu: status %d", i, r.status);
            if (rc == 0) response_free(&r);
        }
        CHECK(health_ok(pa));
    }

    /* ---- count_tokens equals generation's usage with images ---- */
    for (TEST_CASE("count_tokens counts expanded image tokens: 1 and 2 images equal usage.input_tokens")) {
        for (int n = 1; n <= 2; n++) {
            char *b = messages_with_image("image/png", n == 1 ? b64_0 : b64_1, n, 1);
            response r;
            int st = post(pa, msgs, b, &r);
            int64_t used = st == 200 ? json_int(r.body, "usage", "input_tokens") : -1;
            if (st >= 0) response_free(&r);
            st = post(pa, count, b, &r);
            int64_t counted = st == 200 ? json_int(r.body, "input_tokens", NULL) : -2;
            if (st >= 0) response_free(&r);
            CHECKF(used > 20 && used == counted, "%d image(s): usage %lld, count_tokens %lld", n, (long long)used,
                   (long long)counted);
            free(b);
        }
        // mixed sizes: img0 (200x120) and img1 (100x150)
        buf b = {0};
        buf_str(&b, "{\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":[");
        const char *datas[2] = {b64_0, b64_1};
        for (int i = 0; i < 2; i++) {
            buf_str(&b, "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"");
            buf_str(&b, datas[i]);
            buf_str(&b, "\"}},");
        }
        buf_str(&b, "{\"type\":\"text\",\"text\":\"Compare them.\"}]}]}");
        response r;
        int st = post(pa, msgs, b.p, &r);
        int64_t used = st == 200 ? json_int(r.body, "usage", "input_tokens") : -1;
        if (st >= 0) response_free(&r);
        st = post(pa, count, b.p, &r);
        int64_t counted = st == 200 ? json_int(r.body, "input_tokens", NULL) : -2;
        if (st >= 0) response_free(&r);
        CHECKF(used > 20 && used == counted, "two sizes: usage %lld, count_tokens %lld", (long long)used,
               (long long)counted);
        free(b.p);
    }

    /* ---- a client that leaves does not hold the worker ---- */
    for (TEST_CASE("abandoned non-stream generations are dropped: the next request is served promptly")) {
        // 40 greedy requests that run to 480 tokens each (80-120 ms apiece)
        // whose clients hang up after 150 ms; without cancellation they would
        // hold the worker for seconds. The server decodes --parallel (default
        // 4) of them at once, so up to 4 may finish before their clients
        // leave on a fast machine; the other 36 must be dropped.
        const char *b = "{\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}],\"max_tokens\":480}";
        int fds[40];
        char head[512];
        int hn = snprintf(head, sizeof head,
                          "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n" JSON_CT "Content-Length: %zu\r\n\r\n",
                          strlen(b));
        for (int i = 0; i < 40; i++) {
            fds[i] = conn_open(B.port, 3000);
            send_all(fds[i], head, (size_t)hn);
            send_all(fds[i], b, strlen(b));
        }
        sleep_ms(150);
        for (int i = 0; i < 40; i++) close(fds[i]);
        double t0 = now_ms();
        int ok = generation_ok(B.port, JSON_CT);
        double dt = now_ms() - t0;
        CHECKF(ok && dt < 1500, "generation ok %d after %.0f ms", ok, dt);
        sleep_ms(300);
        size_t len;
        char *log = read_file(B.log, &len);
        int full = 0;
        for (char *p = log; p && (p = strstr(p, "completion=480")); p++) full++;
        CHECKF(full <= 4, "%d abandoned generations ran to the end", full);
        free(log);
    }

    for (TEST_CASE("end of the suite: /health and a generation still work on every server")) {
        CHECK(health_ok(pa) && generation_ok(pa, AUTH JSON_CT));
        CHECK(health_ok(B.port) && generation_ok(B.port, JSON_CT));
        CHECK(health_ok(C.port));
    }
    for (TEST_CASE("SIGTERM: every server exits with status 0")) {
        int a = stop_server(&A), b = stop_server(&B), c = stop_server(&C);
        CHECKF(a == 0 && b == 0 && c == 0, "exit A %d B %d C %d", a, b, c);
    }
    atomic_store(&g_img_quit, 1);
    pthread_join(img_thread, NULL);
    close(g_img_listen);
    if (!t_failed) {
        unlink(A.log);
        unlink(B.log);
        unlink(C.log);
    } else {
        printf("     server logs: %s %s %s\n", A.log, B.log, C.log);
    }
    free(g_png), free(img1), free(b64_0), free(b64_1), free(u0.p), free(u1.p);
    return test_finish();
}
