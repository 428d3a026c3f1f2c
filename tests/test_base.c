/* test_base.c — dtype conversions and error helpers. */
#include "base/dtype.h"
#include "base/error.h"
#include "test.h"

#include <math.h>

int main(void) {
    for (TEST_CASE("bf16 round-to-nearest-even")) {
        CHECK(f32_to_bf16(1.0f) == 0x3f80);
        CHECK(f32_to_bf16(f32_from_bits(0x3f808000u)) == 0x3f80); /* tie -> even */
        CHECK(f32_to_bf16(f32_from_bits(0x3f818000u)) == 0x3f82); /* tie -> even (up) */
        CHECK(f32_to_bf16(f32_from_bits(0x3f808001u)) == 0x3f81);
        CHECK(f32_to_bf16(NAN) == 0x7fc0);
        CHECK(bf16_to_f32(0xbf80) == -1.0f);
    }
    for (TEST_CASE("f16 round trip of every finite half")) {
        int bad = 0;
        for (uint32_t h = 0; h < 0x10000u; h++) {
            if ((h & 0x7c00u) == 0x7c00u) continue;
            if (f32_to_f16(f16_to_f32((uint16_t)h)) != h) bad++;
        }
        CHECKF(bad == 0, "%d halves did not round-trip", bad);
        CHECK(f32_to_f16(65520.0f) == 0x7c00);
        CHECK(f32_to_f16(65519.0f) == 0x7bff);
    }
    for (TEST_CASE("e4m3 decode and encode (MLX flavour)")) {
        CHECK(e4m3_to_f32(0x01) == ldexpf(1, -9));
        CHECK(e4m3_to_f32(0x08) == ldexpf(1, -6));
        CHECK(e4m3_to_f32(0x38) == 1.0f);
        CHECK(e4m3_to_f32(0x7e) == 448.0f);
        CHECK(isnan(e4m3_to_f32(0x7f)) && isnan(e4m3_to_f32(0xff)));
        CHECK(e4m3_to_f32(0xfe) == -448.0f);
        int bad = 0;
        for (int b = 0; b < 256; b++) {
            if ((b & 0x7f) == 0x7f) continue;
            if (f32_to_e4m3(e4m3_to_f32((uint8_t)b)) != b) bad++;
        }
        CHECKF(bad == 0, "%d bytes did not round-trip", bad);
        CHECK(f32_to_e4m3(1000.0f) == 0x7e);
        CHECK(f32_to_e4m3(-1000.0f) == 0xfe);
        CHECK(f32_to_e4m3(NAN) == 0x7e);
        CHECK(f32_to_e4m3(1.0625f) == 0x38); /* tie between 1.0 and 1.125 -> even */
        CHECK(f32_to_e4m3(1.1875f) == 0x3a); /* tie between 1.125 and 1.25 -> even */
    }
    for (TEST_CASE("e8m0")) {
        CHECK(e8m0_to_f32(127) == 1.0f);
        CHECK(e8m0_to_f32(125) == 0.25f);
        CHECK(e8m0_to_f32(0) == ldexpf(1, -127));
        CHECK(isinf(e8m0_to_f32(255)));
    }
    for (TEST_CASE("dtype names")) {
        CHECK(dtype_from_name("BF16", 4) == DT_BF16);
        CHECK(dtype_from_name("F8_E4M3", 7) == DT_F8_E4M3);
        CHECK(dtype_from_name("F33", 3) == DT_INVALID);
        CHECK(dtype_size(DT_U32) == 4);
    }
    for (TEST_CASE("err_set formats and returns the status")) {
        optiq_error e;
        CHECK(err_set(&e, OPTIQ_ERR_FORMAT, "%s: bad %d", "x.json", 3) == OPTIQ_ERR_FORMAT);
        CHECK(strcmp(e.message, "x.json: bad 3") == 0);
        err_prefix(&e, "%s: ", "dir");
        CHECK(strcmp(e.message, "dir: x.json: bad 3") == 0);
        CHECK(err_set(NULL, OPTIQ_ERR_IO, "ignored") == OPTIQ_ERR_IO);
    }
    return test_finish();
}
