/*
 * fuzz_safetensors.c — libFuzzer harness for the safetensors reader.
 *
 * Every input is validated by st_open_memory; when it is accepted, every
 * tensor's bytes and every metadata entry are read back, so an offset check
 * that let a tensor reach past the buffer shows up under AddressSanitizer.
 *
 * Built with -fsanitize=fuzzer by `make fuzz`. Compiled with
 * -DFUZZ_REPLAY_MAIN (and no libFuzzer) it is a plain program that runs the
 * files named on its command line through the same function.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    optiq_error err;
    optiq_status st = st_open_memory(data, size, "fuzz.safetensors", &f, &err);
    if (st != OPTIQ_OK) {
        /* a rejected file never yields a handle, and always explains itself */
        if (f || err.message[0] == 0 || strncmp(err.message, "fuzz.safetensors: ", 18) != 0) abort();
        return 0;
    }
    unsigned sum = 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const uint8_t *p = t->data;
        if (t->offset + t->nbytes > size || st_find(f, t->name) != t) abort();
        for (uint64_t k = 0; k < t->nbytes; k++) sum += p[k];
    }
    const char *k, *v;
    for (size_t i = 0; st_metadata_at(f, i, &k, &v); i++) {
        if (st_metadata(f, k) != v) abort();
        sum += (unsigned)strlen(v);
    }
    st_close(f);
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
