/*
 * fuzz_image.c — libFuzzer harness for image_decode (every format).
 *
 * Limits are small (1 Mi pixels, the input size) so that a header declaring a
 * large image is refused quickly and runs stay fast. Invariants checked:
 * success yields a w x h buffer inside the pixel limit (every byte is read,
 * so a short buffer shows up under AddressSanitizer, and uninitialised output
 * would be caught by MemorySanitizer builds); failure yields a cleared image,
 * a non-empty message and the same status in the error.
 *
 * Built with -fsanitize=fuzzer by `make fuzz`. Compiled with
 * -DFUZZ_REPLAY_MAIN (and no libFuzzer) it is a plain program that runs the
 * files named on its command line through the same function.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "io/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    image_limits lim = {1u << 20, 1u << 20};
    image_u8 im;
    optiq_error err;
    optiq_status st = image_decode(data, size, &lim, &im, &err);
    if (st != OPTIQ_OK) {
        if (im.rgb || im.w || im.h || err.message[0] == 0 || err.status != st) abort();
        return 0;
    }
    if (!im.rgb || im.w <= 0 || im.h <= 0 || (uint64_t)im.w * (uint64_t)im.h > lim.max_pixels) abort();
    unsigned sum = 0;
    size_t n = (size_t)im.w * (size_t)im.h * 3;
    for (size_t i = 0; i < n; i++) sum += im.rgb[i];
    image_free(&im);
    return (int)(sum & 0);
}

#ifdef FUZZ_REPLAY_MAIN
#include "fuzz_replay.h"

int main(int argc, char **argv) {
    if (fuzz_replay_files(argc, argv)) return 1;
    printf("%d passed, 0 failed\n", argc - 1);
    return 0;
}
#endif
