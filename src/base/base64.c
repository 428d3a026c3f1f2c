/* base64.c — see base64.h. */
#include "base/base64.h"

static int sym(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int base64_decode(const char *src, size_t n, uint8_t *dst, size_t *out_n, size_t *bad_at) {
    uint32_t acc = 0;
    int k = 0;   /* symbols in the current quantum */
    int pad = 0; /* '=' seen in the current quantum */
    int done = 0; /* a padded quantum ended the data */
    size_t o = 0, last = n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (is_space(c)) continue;
        if (done) { *bad_at = i; return -1; }
        if (c == '=') {
            if (k < 2) { *bad_at = i; return -1; }
            pad++;
            k++;
            last = i;
        } else {
            int v = sym(c);
            if (v < 0 || pad) { *bad_at = i; return -1; }
            acc = acc << 6 | (uint32_t)v;
            k++;
            last = i;
        }
        if (k == 4) {
            if (pad == 0) {
                dst[o++] = (uint8_t)(acc >> 16);
                dst[o++] = (uint8_t)(acc >> 8);
                dst[o++] = (uint8_t)acc;
            } else if (pad == 1) { /* 3 symbols = 18 bits, 2 unused */
                if (acc & 3) { *bad_at = last; return -1; }
                dst[o++] = (uint8_t)(acc >> 10);
                dst[o++] = (uint8_t)(acc >> 2);
                done = 1;
            } else { /* 2 symbols = 12 bits, 4 unused */
                if (acc & 15) { *bad_at = last; return -1; }
                dst[o++] = (uint8_t)(acc >> 4);
                done = 1;
            }
            acc = 0;
            k = 0;
            pad = 0;
        }
    }
    if (k != 0) { *bad_at = n; return -1; }
    *out_n = o;
    return 0;
}
