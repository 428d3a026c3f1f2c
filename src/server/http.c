/*
 * http.c — the HTTP layer over libmicrohttpd (see http.h for the contract).
 *
 * Life of a request (all on the connection's own thread):
 *   uri_log_cb      request line parsed: allocate http_request, split path/query,
 *                   count it in flight (MHD guarantees on_completed afterwards);
 *   on_request #1   headers complete: reject early on Content-Length > max_body
 *                   (413) or a body method without any length (411);
 *   on_request #k   body bytes: append, bounded;
 *   on_request end  call the handler, queue its response;
 *   on_completed    log line, drop the request's stream reference, free.
 *
 * Header and body deadlines: every connection has a conn_state (MHD's socket
 * context, made in on_connection) on the server's list. While it waits for a
 * request's headers (from accept, or from the end of the previous response on
 * a keep-alive connection, until on_request #1) and then for its body (until
 * the request is complete) it carries an absolute deadline; the watchdog
 * thread shuts down the socket of a connection past it, so MHD's own thread
 * sees the peer gone and closes it. Each deadline is set once and never moved
 * by incoming bytes, so trickling a byte at a time cannot extend it (MHD's
 * idle timeout alone would let it). While the handler runs and the response
 * goes out there is none (a long generation is not cut).
 *
 * A stream has three owners, counted in `refs`: the producer (until
 * http_stream_close), the MHD response (until stream_free_cb) and the request
 * (until on_completed, which reads the byte count for the log). Lock order:
 * server->mu before stream->mu; no path holds a stream lock while taking the
 * server lock.
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM_BLOCK 16384       // most bytes MHD asks the content reader for at once
#define STREAM_POLL_MS 100       // how often an idle stream checks for a vanished client
#define MAX_EXTRA_HEADERS 16

typedef struct conn_state conn_state;

struct http_server {
    struct MHD_Daemon *d;
    http_config cfg;
    http_handler handler;
    void *user;
    int port;
    pthread_mutex_t mu;          // guards inflight, streams
    pthread_cond_t cv;           // signalled when inflight drops
    int inflight;                // requests between uri_log_cb and on_completed
    http_stream *streams;        // streams whose MHD response still exists
    atomic_int cancel;           // set by http_server_stop after the drain time
    conn_state *conns;           // every open connection (guarded by mu)
    pthread_cond_t wd_cv;        // wakes the watchdog: a deadline was set, or quit
    pthread_t watchdog;
    int wd_started, wd_quit;
};

/* One per connection, from MHD_CONNECTION_NOTIFY_STARTED to _CLOSED. */
struct conn_state {
    int fd;
    int waiting;                 // receiving a request's headers or body: deadline applies
    struct timespec deadline;    // CLOCK_MONOTONIC
    conn_state *prev, *next;
};

struct http_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;           // data queued, space freed, or state change
    char *buf;                   // (cap) queued bytes, the first `used` valid
    size_t used, cap;
    int closed;                  // producer called http_stream_close
    int cancelled;               // client gone or server stopping
    int refs;
    uint64_t bytes_sent;
    int fd;                      // connection socket, polled for peer close
    pthread_t handler_thread;
    int handler_returned;
    http_server *srv;
    http_stream *prev, *next;    // in srv->streams while the MHD response lives
    int listed;
    char note[128];              // http_stream_note text, added to the request's log line
};

enum { RESP_NONE, RESP_FULL, RESP_STREAM };

struct http_request {
    http_server *srv;
    struct MHD_Connection *conn;
    int fd;                      // connection socket, polled by http_request_cancelled
    char *method;                // copied at the first on_request call
    char *uri;                   // path and query, split by a NUL
    const char *query;
    struct timespec t0;
    int started, queued, too_large;
    char *body;                  // (len + 1) bytes, NUL-terminated
    size_t len, cap;
    char note[256];
    // response chosen by the handler
    int kind;
    int status;
    char *ctype;
    char *rbody;
    size_t rlen;
    char *hname[MAX_EXTRA_HEADERS], *hval[MAX_EXTRA_HEADERS];
    int nh;
    http_stream *stream;
    int sent_status;
    uint64_t sent_bytes;
};

http_config http_config_default(void) {
    http_config c;
    memset(&c, 0, sizeof c);
    c.host = "127.0.0.1";
    c.port = 0;
    c.max_body = (size_t)32 << 20;
    c.max_connections = 64;
    c.timeout_s = 30;
    c.header_timeout_s = 10;
    c.body_timeout_s = 60;
    c.stream_queue = (size_t)64 << 10;
    return c;
}

/* ---- small helpers ---- */

static double ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void deadline_in(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
}

static int cond_init_monotonic(pthread_cond_t *cv) {
    pthread_condattr_t a;
    if (pthread_condattr_init(&a)) return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

/* JSON string body of the layer's own errors; message and type are escaped. */
static char *error_json(const char *type, const char *message, size_t *len) {
    size_t cap = 64 + 6 * (strlen(type) + strlen(message));
    char *out = malloc(cap), *p = out;
    if (!out) return NULL;
    const char *parts[2] = {message, type};
    p += sprintf(p, "{\"error\": {\"message\": \"");
    for (int k = 0; k < 2; k++) {
        for (const unsigned char *s = (const unsigned char *)parts[k]; *s; s++) {
            if (*s == '"' || *s == '\\') { *p++ = '\\'; *p++ = (char)*s; }
            else if (*s < 0x20) p += sprintf(p, "\\u%04x", *s);
            else *p++ = (char)*s;
        }
        p += sprintf(p, k == 0 ? "\", \"type\": \"" : "\"}}");
    }
    *len = (size_t)(p - out);
    return out;
}

/* ---- stream ---- */

static void stream_unref(http_stream *s) {
    pthread_mutex_lock(&s->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->buf);
    free(s);
}

static void stream_cancel(http_stream *s) {
    pthread_mutex_lock(&s->mu);
    s->cancelled = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The client closed its end (FIN or reset) while we had nothing to send. */
static int peer_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

optiq_status http_stream_write(http_stream *s, const void *data, size_t len) {
    const char *src = data;
    pthread_mutex_lock(&s->mu);
    while (len > 0) {
        if (s->cancelled || s->closed) break;
        size_t room = s->cap - s->used;
        if (room == 0) {
            if (!s->handler_returned && pthread_equal(s->handler_thread, pthread_self())) {
                pthread_mutex_unlock(&s->mu);
                return OPTIQ_ERR_INVALID_ARG;   // would wait for a response not yet queued
            }
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        size_t n = len < room ? len : room;
        memcpy(s->buf + s->used, src, n);
        s->used += n;
        src += n;
        len -= n;
        pthread_cond_broadcast(&s->cv);
    }
    optiq_status st = (s->cancelled || s->closed) ? OPTIQ_ERR_IO : OPTIQ_OK;
    pthread_mutex_unlock(&s->mu);
    return st;
}

void http_stream_note(http_stream *s, const char *fmt, ...) {
    pthread_mutex_lock(&s->mu);
    size_t used = strlen(s->note);
    if (used + 2 < sizeof s->note) {
        if (used) s->note[used++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->note + used, sizeof s->note - used, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&s->mu);
}

int http_stream_cancelled(http_stream *s) {
    pthread_mutex_lock(&s->mu);
    int c = s->cancelled;
    pthread_mutex_unlock(&s->mu);
    return c;
}

void http_stream_close(http_stream *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    stream_unref(s);
}

/* MHD's content reader: blocks (on the connection's own thread) until bytes
 * are queued, the producer closes, or the stream is cancelled. While idle it
 * checks every STREAM_POLL_MS whether the client went away, so a producer
 * stuck before its next token still learns about it. */
static ssize_t stream_read_cb(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->cancelled) break;
        if (s->used > 0) {
            size_t n = s->used < max ? s->used : max;
            memcpy(buf, s->buf, n);
            memmove(s->buf, s->buf + n, s->used - n);
            s->used -= n;
            s->bytes_sent += n;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)n;
        }
        if (s->closed) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        struct timespec ts;
        deadline_in(&ts, STREAM_POLL_MS);
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT && peer_gone(s->fd)) {
            s->cancelled = 1;
            pthread_cond_broadcast(&s->cv);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* The MHD response is gone (sent, failed, or daemon stopping). */
static void stream_free_cb(void *cls) {
    http_stream *s = cls;
    http_server *srv = s->srv;
    pthread_mutex_lock(&srv->mu);
    if (s->listed) {
        if (s->prev) s->prev->next = s->next; else srv->streams = s->next;
        if (s->next) s->next->prev = s->prev;
        s->listed = 0;
    }
    pthread_mutex_unlock(&srv->mu);
    stream_cancel(s);   // harmless after a normal end: the producer has closed
    stream_unref(s);
}

/* ---- request accessors ---- */

const char *http_request_method(const http_request *r) { return r->method; }
const char *http_request_path(const http_request *r) { return r->uri; }
const char *http_request_query(const http_request *r) { return r->query; }

const char *http_request_header(const http_request *r, const char *name) {
    // MHD compares header names case-insensitively.
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const http_request *r, size_t *len) {
    if (len) *len = r->len;
    return r->body ? r->body : "";
}

void http_request_note(http_request *r, const char *fmt, ...) {
    size_t used = strlen(r->note);
    if (used + 2 >= sizeof r->note) return;
    if (used) r->note[used++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + used, sizeof r->note - used, fmt, ap);
    va_end(ap);
}

int http_request_cancelled(const http_request *r) {
    return atomic_load(&r->srv->cancel) || peer_gone(r->fd);
}

/* ---- responses ---- */

optiq_status http_response_header(http_request *r, const char *name, const char *value) {
    if (r->nh >= MAX_EXTRA_HEADERS) return OPTIQ_ERR_INVALID_ARG;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) { free(n); free(v); return OPTIQ_ERR_NOMEM; }
    r->hname[r->nh] = n;
    r->hval[r->nh++] = v;
    return OPTIQ_OK;
}

optiq_status http_respond(http_request *r, int status, const char *content_type,
                          const void *body, size_t len) {
    if (r->kind != RESP_NONE) return OPTIQ_ERR_INVALID_ARG;
    char *ct = strdup(content_type ? content_type : "application/json");
    char *b = malloc(len ? len : 1);
    if (!ct || !b) { free(ct); free(b); return OPTIQ_ERR_NOMEM; }
    if (len) memcpy(b, body, len);
    r->kind = RESP_FULL;
    r->status = status;
    r->ctype = ct;
    r->rbody = b;
    r->rlen = len;
    return OPTIQ_OK;
}

optiq_status http_respond_error(http_request *r, int status, const char *type, const char *message) {
    size_t len;
    char *j = error_json(type, message, &len);
    if (!j) return OPTIQ_ERR_NOMEM;
    optiq_status st = http_respond(r, status, "application/json", j, len);
    free(j);
    return st;
}

http_stream *http_respond_stream(http_request *r, int status) {
    if (r->kind != RESP_NONE) return NULL;
    http_stream *s = calloc(1, sizeof *s);
    size_t cap = r->srv->cfg.stream_queue;
    if (!s || !(s->buf = malloc(cap))) { free(s); return NULL; }
    if (pthread_mutex_init(&s->mu, NULL)) { free(s->buf); free(s); return NULL; }
    if (cond_init_monotonic(&s->cv)) {
        pthread_mutex_destroy(&s->mu); free(s->buf); free(s); return NULL;
    }
    s->cap = cap;
    s->refs = 3;   // producer, MHD response, request
    s->srv = r->srv;
    s->handler_thread = pthread_self();
    s->cancelled = atomic_load(&r->srv->cancel);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    s->fd = ci ? ci->connect_fd : -1;
    r->kind = RESP_STREAM;
    r->status = status;
    r->stream = s;
    return s;
}

/* ---- header deadline ---- */

static conn_state *conn_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Start a deadline of c, seconds from now (server lock held). */
static void conn_deadline(http_server *srv, conn_state *c, unsigned seconds) {
    c->waiting = 1;
    deadline_in(&c->deadline, (long)seconds * 1000);
    pthread_cond_signal(&srv->wd_cv);
}

static void conn_wait_headers(http_server *srv, conn_state *c) { conn_deadline(srv, c, srv->cfg.header_timeout_s); }

/* No deadline while the handler runs and the response goes out (server lock not held). */
static void conn_no_deadline(http_server *srv, struct MHD_Connection *conn) {
    conn_state *c = conn_of(conn);
    if (!c) return;
    pthread_mutex_lock(&srv->mu);
    c->waiting = 0;
    pthread_mutex_unlock(&srv->mu);
}


static int ts_before(const struct timespec *a, const struct timespec *b) {
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Shuts down connections past their header deadline; sleeps until the
 * earliest deadline. The socket is shut down, not closed: MHD owns the fd
 * and closes it after MHD_CONNECTION_NOTIFY_CLOSED, which unlinks the state
 * under the same lock, so the fd used here is never a reused one. */
static void *watchdog_main(void *arg) {
    http_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    while (!srv->wd_quit) {
        struct timespec now, next = {0, 0};
        int have_next = 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        for (conn_state *c = srv->conns; c; c = c->next) {
            if (!c->waiting) continue;
            if (!ts_before(&now, &c->deadline)) {
                shutdown(c->fd, SHUT_RDWR);
                c->waiting = 0;
            } else if (!have_next || ts_before(&c->deadline, &next)) {
                next = c->deadline;
                have_next = 1;
            }
        }
        if (have_next) pthread_cond_timedwait(&srv->wd_cv, &srv->mu, &next);
        else pthread_cond_wait(&srv->wd_cv, &srv->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_state *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!c || !ci) {   // no deadline for this one; the idle timeout still applies
            free(c);
            *socket_context = NULL;
            return;
        }
        c->fd = ci->connect_fd;
        pthread_mutex_lock(&srv->mu);
        c->next = srv->conns;
        if (srv->conns) srv->conns->prev = c;
        srv->conns = c;
        conn_wait_headers(srv, c);
        pthread_mutex_unlock(&srv->mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn_state *c = *socket_context;
        if (!c) return;
        pthread_mutex_lock(&srv->mu);
        if (c->prev) c->prev->next = c->next;
        else srv->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        pthread_mutex_unlock(&srv->mu);
        free(c);
        *socket_context = NULL;
    }
}

/* ---- MHD callbacks ---- */

static void *uri_log_cb(void *cls, const char *uri, struct MHD_Connection *conn) {
    http_server *srv = cls;
    http_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = srv;
    r->conn = conn;
    r->fd = -1;
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    r->uri = strdup(uri ? uri : "");
    if (!r->uri) { free(r); return NULL; }
    char *q = strchr(r->uri, '?');
    if (q) { *q = 0; r->query = q + 1; } else r->query = "";
    pthread_mutex_lock(&srv->mu);
    srv->inflight++;
    pthread_mutex_unlock(&srv->mu);
    return r;
}

static void log_request(http_server *srv, http_request *r, int ok) {
    if (!srv->cfg.log_file && !srv->cfg.log_fn) return;
    http_log_entry e = {
        .method = r->method ? r->method : "-",
        .path = r->uri,
        .status = r->sent_status,
        .bytes = r->sent_bytes,
        .duration_ms = ms_since(&r->t0),
        .note = r->note,
        .completed_ok = ok,
    };
    if (srv->cfg.log_file) {
        char ts[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        // The path is client text: control bytes become '?' so a line stays one line.
        char path[512];
        size_t n = 0;
        for (const unsigned char *p = (const unsigned char *)e.path; *p && n < sizeof path - 1; p++)
            path[n++] = *p < 0x20 || *p == 0x7f ? '?' : (char)*p;
        path[n] = 0;
        fprintf(srv->cfg.log_file, "%s %s %s %d %llub %.0fms%s%s\n", ts, e.method, path, e.status,
                (unsigned long long)e.bytes, e.duration_ms, e.note[0] ? " " : "", e.note);
        fflush(srv->cfg.log_file);
    }
    if (srv->cfg.log_fn) srv->cfg.log_fn(srv->cfg.log_user, &e);
}

static void request_free(http_request *r) {
    free(r->method);
    free(r->uri);
    free(r->body);
    free(r->ctype);
    free(r->rbody);
    for (int i = 0; i < r->nh; i++) { free(r->hname[i]); free(r->hval[i]); }
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    http_server *srv = cls;
    http_request *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    int ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    if (r->stream) {
        http_stream *s = r->stream;
        pthread_mutex_lock(&s->mu);
        r->sent_bytes = s->bytes_sent;
        if (!ok) { s->cancelled = 1; pthread_cond_broadcast(&s->cv); }
        if (s->note[0]) http_request_note(r, "%s", s->note);
        pthread_mutex_unlock(&s->mu);
        stream_unref(s);
        r->stream = NULL;
    }
    log_request(srv, r, ok);
    request_free(r);
    conn_state *c = conn_of(conn);
    pthread_mutex_lock(&srv->mu);
    if (c) conn_wait_headers(srv, c);   // a keep-alive connection waits for the next request
    srv->inflight--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static int add_headers(struct MHD_Response *resp, http_request *r) {
    for (int i = 0; i < r->nh; i++)
        if (MHD_add_response_header(resp, r->hname[i], r->hval[i]) != MHD_YES) return -1;
    return 0;
}

/* Queue a layer error; close_after drops the connection (unread body left). */
static enum MHD_Result queue_error(http_request *r, int status, const char *type,
                                   const char *message, int close_after) {
    size_t len;
    http_config *cfg = &r->srv->cfg;
    char *j = cfg->error_body ? cfg->error_body(cfg->error_user, r->uri, status, type, message) : NULL;
    if (j) len = strlen(j);
    else j = error_json(type, message, &len);
    if (!j) return MHD_NO;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, j, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(j); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (close_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->queued = 1;
        r->sent_status = status;
        r->sent_bytes = len;
    }
    return ret;
}

static enum MHD_Result queue_full(http_request *r) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->rlen, r->rbody, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->ctype);
    if (add_headers(resp, r)) { MHD_destroy_response(resp); return MHD_NO; }
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->queued = 1;
        r->sent_status = r->status;
        r->sent_bytes = r->rlen;
    }
    return ret;
}

static enum MHD_Result queue_stream(http_request *r) {
    http_stream *s = r->stream;
    http_server *srv = r->srv;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read_cb, s, stream_free_cb);
    if (!resp) {
        stream_cancel(s);
        stream_unref(s);   // the reference the response would have held
        return MHD_NO;
    }
    // From here stream_free_cb owns the response's reference.
    pthread_mutex_lock(&srv->mu);
    s->next = srv->streams;
    s->prev = NULL;
    if (srv->streams) srv->streams->prev = s;
    srv->streams = s;
    s->listed = 1;
    if (atomic_load(&srv->cancel)) stream_cancel(s);
    pthread_mutex_unlock(&srv->mu);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result ret = add_headers(resp, r) ? MHD_NO
                                               : MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);   // runs stream_free_cb now if not queued
    if (ret == MHD_YES) {
        r->queued = 1;
        r->sent_status = r->status;
    }
    return ret;
}

static int method_has_body(const char *m) {
    return !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH");
}

static enum MHD_Result headers_done(http_request *r) {
    http_server *srv = r->srv;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    char msg[128];
    if (cl) {
        // MHD has already rejected a Content-Length that is not a number.
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > srv->cfg.max_body) {
            snprintf(msg, sizeof msg, "request body of %llu bytes is over the limit of %zu bytes", n,
                     srv->cfg.max_body);
            return queue_error(r, 413, "request_too_large", msg, 1);
        }
    } else if (!te && method_has_body(r->method)) {
        return queue_error(r, 411, "length_required",
                           "a request body needs Content-Length or chunked Transfer-Encoding", 1);
    }
    return MHD_YES;
}

/* MHD cannot queue a response in the middle of an upload, so a chunked body
 * that grows past max_body is discarded as it arrives and answered with 413
 * once it ends; past twice the cap the connection is simply dropped. A body
 * with a Content-Length never gets here oversized (headers_done). */
static enum MHD_Result body_chunk(http_request *r, const char *data, size_t n) {
    size_t max = r->srv->cfg.max_body;
    if (r->too_large || r->len + n > max) {
        if (!r->too_large) {
            free(r->body);
            r->body = NULL;
            r->cap = 0;
            r->too_large = 1;
        }
        r->len += n;   // counts discarded bytes from here on
        return r->len > 2 * max ? MHD_NO : MHD_YES;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return MHD_NO;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = 0;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls) {
    (void)url;
    (void)version;
    http_server *srv = cls;
    http_request *r = *con_cls;
    if (!r) return MHD_NO;   // out of memory in uri_log_cb
    r->conn = conn;
    if (!r->started) {
        r->started = 1;
        conn_state *c = conn_of(conn);
        if (c) {   // headers are in: the body has its own deadline, from now
            pthread_mutex_lock(&srv->mu);
            conn_deadline(srv, c, srv->cfg.body_timeout_s);
            pthread_mutex_unlock(&srv->mu);
        }
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        r->fd = ci ? ci->connect_fd : -1;
        r->method = strdup(method);
        if (!r->method) return MHD_NO;
        return headers_done(r);
    }
    if (r->queued) {   // an early error went out; discard whatever body follows
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        enum MHD_Result ret = body_chunk(r, upload_data, *upload_size);
        *upload_size = 0;
        return ret;
    }
    conn_no_deadline(srv, conn); /* the request is complete: the idle timeout governs from here */
    if (r->too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "request body is over the limit of %zu bytes", srv->cfg.max_body);
        return queue_error(r, 413, "request_too_large", msg, 1);
    }
    srv->handler(r, srv->user);
    if (r->stream) {
        pthread_mutex_lock(&r->stream->mu);
        r->stream->handler_returned = 1;
        pthread_cond_broadcast(&r->stream->cv);
        pthread_mutex_unlock(&r->stream->mu);
    }
    switch (r->kind) {
    case RESP_FULL: return queue_full(r);
    case RESP_STREAM: return queue_stream(r);
    default: return queue_error(r, 500, "server_error", "the handler sent no response", 0);
    }
}

/* ---- server ---- */

optiq_status http_server_start(const http_config *cfg_in, http_handler handler, void *user,
                               http_server **out, optiq_error *err) {
    *out = NULL;
    http_config cfg = cfg_in ? *cfg_in : http_config_default();
    http_config def = http_config_default();
    if (!cfg.host || !*cfg.host || !strcmp(cfg.host, "localhost")) cfg.host = def.host;
    if (!cfg.max_body) cfg.max_body = def.max_body;
    if (!cfg.max_connections) cfg.max_connections = def.max_connections;
    if (!cfg.timeout_s) cfg.timeout_s = def.timeout_s;
    if (!cfg.header_timeout_s) cfg.header_timeout_s = def.header_timeout_s;
    if (!cfg.body_timeout_s) cfg.body_timeout_s = def.body_timeout_s;
    if (!cfg.stream_queue) cfg.stream_queue = def.stream_queue;
    if (!handler) return err_set(err, OPTIQ_ERR_INVALID_ARG, "http: no handler");
    if (cfg.port < 0 || cfg.port > 65535)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "http: port %d outside 0..65535", cfg.port);

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ITC;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg.host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg.port);
    } else if (inet_pton(AF_INET6, cfg.host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg.port);
        flags |= MHD_USE_IPv6;
    } else {
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "http: host '%s' is not an IPv4 or IPv6 address (or 'localhost')", cfg.host);
    }

    http_server *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, OPTIQ_ERR_NOMEM, "http: out of memory");
    if (pthread_mutex_init(&s->mu, NULL)) { free(s); return err_set(err, OPTIQ_ERR_NOMEM, "http: mutex"); }
    if (cond_init_monotonic(&s->cv)) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return err_set(err, OPTIQ_ERR_NOMEM, "http: condition variable");
    }
    if (cond_init_monotonic(&s->wd_cv)) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return err_set(err, OPTIQ_ERR_NOMEM, "http: condition variable");
    }
    s->cfg = cfg;
    s->cfg.host = NULL;   // the caller's string need not outlive this call
    s->handler = handler;
    s->user = user;
    atomic_init(&s->cancel, 0);

    s->d = MHD_start_daemon(flags, (uint16_t)cfg.port, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, cfg.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, cfg.timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 << 10,
                            MHD_OPTION_URI_LOG_CALLBACK, uri_log_cb, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_END);
    int e = errno;
    if (s->d) {
        if (pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0) s->wd_started = 1;
        else {
            MHD_stop_daemon(s->d);
            s->d = NULL;
            e = EAGAIN;
        }
    }
    if (!s->d) {
        pthread_cond_destroy(&s->wd_cv);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return err_set(err, OPTIQ_ERR_IO, "http: cannot listen on %s port %d (%s)", cfg.host, cfg.port,
                       e ? strerror(e) : "libmicrohttpd refused the configuration");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : cfg.port;
    *out = s;
    return OPTIQ_OK;
}

int http_server_port(const http_server *s) { return s->port; }

void http_server_stop(http_server *s, int drain_ms) {
    if (!s) return;
    // Stop accepting: the listening socket leaves the poll set; we close it below.
    MHD_socket lfd = MHD_quiesce_daemon(s->d);
    struct timespec deadline;
    deadline_in(&deadline, drain_ms > 0 ? drain_ms : 0);
    pthread_mutex_lock(&s->mu);
    while (s->inflight > 0) {
        if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) break;
    }
    atomic_store(&s->cancel, 1);
    for (http_stream *st = s->streams; st; st = st->next) stream_cancel(st);
    pthread_mutex_unlock(&s->mu);
    // Closes every connection and joins their threads; stream readers see the
    // cancel within STREAM_POLL_MS.
    MHD_stop_daemon(s->d);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    pthread_mutex_lock(&s->mu);
    s->wd_quit = 1;
    pthread_cond_signal(&s->wd_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->wd_started) pthread_join(s->watchdog, NULL);
    pthread_cond_destroy(&s->wd_cv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
