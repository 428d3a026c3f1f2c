/*
 * dtype.h — element types as they appear in safetensors files, and scalar
 * conversions between them and float32.
 *
 * Rounding: f32 -> bf16 / f16 is round-to-nearest-even, as MLX does it
 * (bf16: u + 0x7FFF + ((u >> 16) & 1), NaN -> 0x7FC0). The F8 types are raw
 * bytes to the file layer; their decoders live here because both the quantized
 * formats (nvfp4 scales, mxfp8 elements) and plain tensors use them.
 */
#ifndef OPTIQ_BASE_DTYPE_H
#define OPTIQ_BASE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum dtype {
    DT_INVALID = 0,
    DT_F32, DT_F16, DT_BF16, DT_F64,
    DT_U8, DT_I8, DT_U16, DT_I16, DT_U32, DT_I32, DT_U64, DT_I64,
    DT_BOOL,
    DT_F8_E4M3, DT_F8_E5M2, DT_F8_E8M0,
    DT_COUNT
} dtype;

/* Bytes per element (0 for DT_INVALID). */
size_t dtype_size(dtype dt);
/* The safetensors spelling ("F32", "BF16", "F8_E4M3", ...). */
const char *dtype_name(dtype dt);
/* Parse a safetensors dtype string of length n; DT_INVALID when unknown. */
dtype dtype_from_name(const char *s, size_t n);

static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* fp8 e4m3 "fn" as MLX decodes it: no inf; 0x7F / 0xFF decode to NaN
 * (tests/fixtures/quant/spec_vectors.safetensors, e4m3_decode_f32). */
float e4m3_to_f32(uint8_t b);
/* Round-to-nearest-even with saturation to +-448 (0x7E/0xFE), as MLX's ToFP8. */
uint8_t f32_to_e4m3(float f);
/* e8m0 scale: 2^(b-127); MLX decodes byte 0 as 2^-127 and 255 as +inf. */
float e8m0_to_f32(uint8_t b);

/* Read element i of a buffer of the given float type as f32 (unaligned-safe). */
static inline float load_as_f32(const void *p, dtype dt, size_t i) {
    const uint8_t *b = (const uint8_t *)p;
    uint16_t h;
    float f;
    switch (dt) {
    case DT_F32: memcpy(&f, b + 4 * i, 4); return f;
    case DT_BF16: memcpy(&h, b + 2 * i, 2); return bf16_to_f32(h);
    case DT_F16: memcpy(&h, b + 2 * i, 2); return f16_to_f32(h);
    default: return 0.0f;
    }
}

#endif
