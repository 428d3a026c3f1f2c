/*
 * qkern_portable.c — the reference quantized-matmul kernel, one for every
 * format: unpack a group's codes through the table, turn them into values
 * (affine: the code itself; fp4: the e2m1 table; fp8: the e4m3 table), and
 * accumulate per group in f32:
 *     y += s_g * sum(x * v)  (+ b_g * xsum_g for affine)
 * The SIMD kernels are tested against this one.
 */
#include "quant/qkern.h"

void qmm_portable(const qmm_args *a) {
    const qtraits *t = a->t;
    const int gs = a->gs, mb = a->mb;
    const int64_t G = a->K / gs;
    const qmode mode = t->mode;
    uint8_t codes[128];
    float v[128];
    for (int64_t r = 0; r < a->n_rows; r++) {
        const uint8_t *w = a->w + (size_t)r * a->w_stride;
        const uint8_t *s = a->s + (size_t)r * a->s_stride;
        const uint8_t *b = mode == QMODE_AFFINE ? a->b + (size_t)r * a->s_stride : NULL;
        float acc[QMM_MB] = {0};
        for (int64_t g = 0; g < G; g++) {
            t->unpack(w, g * gs, gs, codes);
            float sc, bi = 0.0f;
            switch (mode) {
            case QMODE_AFFINE:
                for (int j = 0; j < gs; j++) v[j] = (float)codes[j];
                sc = qk_load_scale(s, a->sdt, g);
                bi = qk_load_scale(b, a->sdt, g);
                break;
            case QMODE_MXFP8:
                for (int j = 0; j < gs; j++) v[j] = QK_E4M3_LUT[codes[j]];
                sc = qk_e8m0(s[g]);
                break;
            case QMODE_NVFP4:
                for (int j = 0; j < gs; j++) v[j] = QFP4_VALUES[codes[j]];
                sc = QK_E4M3_LUT[s[g]];
                break;
            default:
                for (int j = 0; j < gs; j++) v[j] = QFP4_VALUES[codes[j]];
                sc = qk_e8m0(s[g]);
                break;
            }
            for (int i = 0; i < mb; i++) {
                const float *x = a->x[i] + g * gs;
                float d = 0.0f;
                for (int j = 0; j < gs; j++) d += x[j] * v[j];
                acc[i] += sc * d;
                if (mode == QMODE_AFFINE) acc[i] += bi * a->xsum[i][g];
            }
        }
        for (int i = 0; i < mb; i++) a->y[i][r] = acc[i];
    }
}
