/*
 * error.h — error values used throughout the library.
 *
 * Internal functions that can fail take an `optiq_error *err` (may be NULL)
 * and return an optiq_status. err_set() formats the message and returns the
 * status so a failure reads as one line:
 *     return err_set(err, OPTIQ_ERR_FORMAT, "%s: header length %llu past end of file", path, n);
 * Messages name the file or key and say what was expected and what was found.
 */
#ifndef OPTIQ_BASE_ERROR_H
#define OPTIQ_BASE_ERROR_H

#include "optiq.h"

#if defined(__GNUC__)
#define OPTIQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define OPTIQ_PRINTF(a, b)
#endif

optiq_status err_set(optiq_error *err, optiq_status status, const char *fmt, ...) OPTIQ_PRINTF(3, 4);

/* Prefix an existing message with context ("model.safetensors: " + old). */
optiq_status err_prefix(optiq_error *err, const char *fmt, ...) OPTIQ_PRINTF(2, 3);

static inline void err_clear(optiq_error *err) {
    if (err) { err->status = OPTIQ_OK; err->message[0] = 0; }
}

#endif
