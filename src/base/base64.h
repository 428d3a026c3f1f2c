/*
 * base64.h — strict standard base64 (RFC 4648 §4: A-Z a-z 0-9 + /, '=' padding).
 *
 * The input length, not counting ASCII whitespace (space, \t, \r, \n, which is
 * skipped), must be a multiple of 4; '=' may only appear as the last one or
 * two characters; the unused bits of the last symbol must be zero. Anything
 * else (URL-safe '-' '_', stray characters, missing padding) is an error.
 * Python's base64.b64decode, which the reference uses for data: URLs, accepts
 * the same well-formed inputs (it also silently drops characters outside the
 * alphabet; this decoder refuses them instead).
 */
#ifndef OPTIQ_BASE_BASE64_H
#define OPTIQ_BASE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Upper bound of the decoded size of n input characters. */
static inline size_t base64_decoded_max(size_t n) { return n / 4 * 3 + 3; }

/* Decodes src[0..n) into dst (room for base64_decoded_max(n) bytes). Returns 0
 * and sets *out_n on success; on error returns -1 and sets *bad_at to the
 * offset of the offending character (n when the input ends too early). */
int base64_decode(const char *src, size_t n, uint8_t *dst, size_t *out_n, size_t *bad_at);

#endif
