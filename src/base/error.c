/* error.c — see error.h. */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

optiq_status err_set(optiq_error *err, optiq_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

optiq_status err_prefix(optiq_error *err, const char *fmt, ...) {
    if (!err) return OPTIQ_OK;
    char head[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    size_t n = strnlen(head, sizeof head - 1);
    if (n >= sizeof err->message) n = sizeof err->message - 1;
    memcpy(err->message, head, n);
    size_t m = strnlen(old, sizeof old - 1);
    if (m > sizeof err->message - 1 - n) m = sizeof err->message - 1 - n;
    memcpy(err->message + n, old, m);
    err->message[n + m] = 0;
    return err->status;
}

const char *optiq_version(void) { return OPTIQ_VERSION_STRING; }

const char *optiq_status_name(optiq_status s) {
    switch (s) {
    case OPTIQ_OK: return "ok";
    case OPTIQ_ERR_IO: return "i/o error";
    case OPTIQ_ERR_FORMAT: return "format error";
    case OPTIQ_ERR_INVALID_ARG: return "invalid argument";
    case OPTIQ_ERR_NOMEM: return "out of memory";
    case OPTIQ_ERR_UNSUPPORTED: return "unsupported";
    case OPTIQ_ERR_CONTEXT: return "context length exceeded";
    }
    return "unknown error";
}
