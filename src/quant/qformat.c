/* qformat.c — see qformat.h. */
#include "quant/qformat.h"

#include <string.h>

static const char *const NAMES[QMODE_COUNT] = {"affine", "mxfp4", "mxfp8", "nvfp4"};

const char *qmode_name(qmode m) { return (m >= 0 && m < QMODE_COUNT) ? NAMES[m] : "unknown"; }

int qmode_from_name(const char *s) {
    for (int m = 0; m < QMODE_COUNT; m++)
        if (strcmp(s, NAMES[m]) == 0) return m;
    return -1;
}

qformat qformat_default(qmode m) {
    switch (m) {
    case QMODE_MXFP4: return (qformat){QMODE_MXFP4, 4, 32};
    case QMODE_MXFP8: return (qformat){QMODE_MXFP8, 8, 32};
    case QMODE_NVFP4: return (qformat){QMODE_NVFP4, 4, 16};
    default: return (qformat){QMODE_AFFINE, 4, 64};
    }
}

int qformat_valid(qformat f) {
    switch (f.mode) {
    case QMODE_AFFINE:
        return (f.bits == 2 || f.bits == 3 || f.bits == 4 || f.bits == 5 || f.bits == 6 || f.bits == 8) &&
               (f.group_size == 32 || f.group_size == 64 || f.group_size == 128);
    case QMODE_MXFP4: return f.bits == 4 && f.group_size == 32;
    case QMODE_MXFP8: return f.bits == 8 && f.group_size == 32;
    case QMODE_NVFP4: return f.bits == 4 && f.group_size == 16;
    default: return 0;
    }
}

double qformat_bits_per_weight(qformat f, int scale_bytes) {
    if (f.mode == QMODE_AFFINE) return f.bits + 2.0 * 8.0 * scale_bytes / f.group_size;
    return f.bits + 8.0 / f.group_size; /* one u8 scale per group */
}
