/*
 * gdn.h — the Gated DeltaNet recurrence for one head and one token, as
 * mlx-lm's gated_delta_update (qwen3_5 / qwen3_next linear attention):
 *
 *   S ← g·S;  for each row i:  δ_i = (v_i − S_i·k)·β;  S_i ← S_i + δ_i·k;  y_i = S_i·q
 *
 *   S (Dv, Dk)  f32 recurrent state, updated in place
 *   q, k (Dk)   normalized query and key; v, y (Dv)
 *
 * Each row of S is read once from memory and written once per token (the
 * state is the largest per-token traffic after the weights). The level is
 * cpu_level(): AVX-512 when Dk is a multiple of 16, else portable C; levels
 * differ only in f32 summation order (the decay is applied to the dot product,
 * g·(S_i·k), instead of to each term, in the AVX-512 twin).
 */
#ifndef OPTIQ_KERNELS_GDN_H
#define OPTIQ_KERNELS_GDN_H

#include <stdint.h>

void gdn_step(float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv, int64_t Dk,
              float *y);

/* The twins, exposed for the kernel tests. */
void gdn_step_portable(float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv,
                       int64_t Dk, float *y);
void gdn_step_avx512(float *S, const float *q, const float *k, const float *v, float g, float beta, int64_t Dv,
                     int64_t Dk, float *y);

#endif
