/*
 * http.h — the HTTP layer of `optiq serve`: libmicrohttpd underneath, no API
 * semantics on top. It delivers complete, size-bounded requests to one handler
 * and sends back either a full response or a chunked text/event-stream.
 *
 * Threads: one thread per connection (MHD_USE_THREAD_PER_CONNECTION) plus MHD's
 * listening thread, with a cap on connections. A handler therefore blocks only
 * its own connection: a slow generation on one connection does not delay
 * /health on another. The handler runs on the connection's thread and must
 * call exactly one of http_respond / http_respond_error / http_respond_stream
 * before returning; if it calls none, the layer answers 500.
 *
 * Streaming: http_respond_stream returns a stream that is fed by a producer
 * on ANOTHER thread (e.g. the generation worker) with http_stream_write and
 * finished with http_stream_close. The response is only handed to the client
 * after the handler returns, so writing more than the queue capacity from
 * inside the handler would block forever (such a write, from the handler's own
 * thread before it returns, fails with OPTIQ_ERR_INVALID_ARG instead). The
 * queue between the producer and the connection is bounded; a write blocks
 * while it is full and fails once the client went away or the server is
 * stopping, so the producer learns to cancel its work. The producer must always call
 * http_stream_close exactly once, also after a failed write.
 *
 * Deadlines: MHD's idle timeout (timeout_s) closes a connection without
 * traffic; header_timeout_s bounds the total time a request's headers may
 * take and body_timeout_s the total time its body may take after them, so a
 * client trickling one byte per period is still cut off (the connection is
 * closed without a response, as for the idle timeout). An idle keep-alive
 * connection counts as waiting for headers.
 *
 * Errors raised by this layer carry the JSON body
 *     {"error": {"message": "...", "type": "..."}}
 * (413 request_too_large, 411 length_required, 500 server_error), or the
 * body cfg->error_body makes for the request's path (the server uses it to
 * answer in each API's own error format). Errors that
 * libmicrohttpd raises itself before a request reaches this layer (a malformed
 * request line, header fields over the per-connection memory limit) use MHD's
 * own short bodies; they are not logged.
 *
 * Log: one line per request that reached this layer, to cfg->log_file
 * ("UTC-TIME METHOD PATH STATUS BYTESb DURATIONms[ NOTE]"), e.g.
 *     2026-12-07T21:09:54Z POST /v1/chat/completions 200 5123b 812ms tokens=12
 * and/or as a struct to cfg->log_fn. STATUS 0 means no response went out.
 */
#ifndef OPTIQ_SERVER_HTTP_H
#define OPTIQ_SERVER_HTTP_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "base/error.h"

typedef struct http_server http_server;
typedef struct http_request http_request;
typedef struct http_stream http_stream;

typedef struct http_log_entry {
    const char *method;
    const char *path;
    int status;              // 0 when no response was sent (client went away first)
    uint64_t bytes;          // response body bytes handed to the connection
    double duration_ms;      // from request line to end of response
    const char *note;        // http_request_note text, "" if none
    int completed_ok;        // 0 when the connection ended with an error
} http_log_entry;

typedef void (*http_log_fn)(void *user, const http_log_entry *e);

typedef struct http_config {
    const char *host;         // IPv4 or IPv6 literal, or "localhost"; default "127.0.0.1"
    int port;                 // 0 = ephemeral (see http_server_port)
    size_t max_body;          // request body cap in bytes; default 32 MiB; over it: 413
    unsigned max_connections; // concurrent connections; default 64
    unsigned timeout_s;       // idle / partial-request timeout per connection; default 30
    unsigned header_timeout_s;// total time for a request's headers, counted from accept or the end
                              // of the previous response, not extended by bytes; default 10
    unsigned body_timeout_s;  // total time for a request's body, counted from the end of its headers,
                              // not extended by bytes; default 60
    size_t stream_queue;      // bytes buffered per stream before writes block; default 64 KiB
    // Body of this layer's own errors (413, 411, 500) for a request path, malloc'd;
    // NULL (or no function): the layer's {"error": {"message", "type"}} body.
    char *(*error_body)(void *user, const char *path, int status, const char *type, const char *message);
    void *error_user;
    FILE *log_file;           // request log lines (NULL: none)
    http_log_fn log_fn;       // called per request after log_file (NULL: none)
    void *log_user;
} http_config;

http_config http_config_default(void);

/* Called once per complete request on the connection's thread. */
typedef void (*http_handler)(http_request *req, void *user);

optiq_status http_server_start(const http_config *cfg, http_handler handler, void *user,
                               http_server **out, optiq_error *err);
/* The bound port (useful with port 0). */
int http_server_port(const http_server *s);
/* Stop accepting; let in-flight requests finish for up to drain_ms; then cancel
 * streams (their producers' writes fail) and close every connection; free s.
 * Blocks until every connection thread has ended, so a full-response handler
 * still running must return on its own (see http_request_cancelled). Call from
 * a normal thread (e.g. main after a signal handler set a flag), never from a
 * handler or a signal handler. NULL is a no-op. */
void http_server_stop(http_server *s, int drain_ms);

/* ---- request (valid until the handler returns) ---- */
const char *http_request_method(const http_request *r);
const char *http_request_path(const http_request *r);   // raw path, no query
const char *http_request_query(const http_request *r);  // raw query without '?', "" if none
/* Header value by case-insensitive name, NULL if absent. */
const char *http_request_header(const http_request *r, const char *name);
/* Body bytes (NUL-terminated for convenience, *len excludes the NUL). */
const char *http_request_body(const http_request *r, size_t *len);
/* Text appended to the request's log line (e.g. "tokens=12"); later calls append. */
void http_request_note(http_request *r, const char *fmt, ...) OPTIQ_PRINTF(2, 3);
/* True once the server is stopping past its drain time, or once the client
 * has closed its connection (checked on the socket at each call, so another
 * thread working for the handler may poll it while the handler waits). */
int http_request_cancelled(const http_request *r);

/* ---- responses (call one of the three from the handler) ---- */
/* Extra response header, before http_respond*; copied. */
optiq_status http_response_header(http_request *r, const char *name, const char *value);
/* content_type NULL = "application/json"; body copied. */
optiq_status http_respond(http_request *r, int status, const char *content_type,
                          const void *body, size_t len);
/* {"error": {"message": message, "type": type}} with the given status. */
optiq_status http_respond_error(http_request *r, int status, const char *type, const char *message);
/* Chunked text/event-stream response; NULL when out of memory. The returned
 * stream belongs to the producer until http_stream_close. */
http_stream *http_respond_stream(http_request *r, int status);

/* ---- stream (any thread) ---- */
/* Queue len bytes; blocks while the queue is full. OPTIQ_ERR_IO when the
 * client went away or the server is stopping (and nothing more will be sent). */
optiq_status http_stream_write(http_stream *s, const void *data, size_t len);
/* Nonzero once writes can no longer reach the client. */
int http_stream_cancelled(http_stream *s);
/* Text for the request's log line from the producer (the handler has returned
 * by then); it appears when noted before the stream ends, e.g. just before
 * http_stream_close. Later calls append. */
void http_stream_note(http_stream *s, const char *fmt, ...) OPTIQ_PRINTF(2, 3);
/* End of the stream: queued bytes are still sent; s is invalid afterwards. */
void http_stream_close(http_stream *s);

#endif
