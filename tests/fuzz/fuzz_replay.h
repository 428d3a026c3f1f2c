/*
 * fuzz_replay.h — the replay driver shared by the fuzz harnesses when they are
 * built without libFuzzer (-DFUZZ_REPLAY_MAIN): every file named on the
 * command line is fed once to LLVMFuzzerTestOneInput.
 */
#ifndef OPTIQ_FUZZ_REPLAY_H
#define OPTIQ_FUZZ_REPLAY_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns 0 when every file was read and run, 1 otherwise. */
static inline int fuzz_replay_files(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        if (!fp) {
            perror(argv[i]);
            return 1;
        }
        fseek(fp, 0, SEEK_END);
        long n = ftell(fp);
        fseek(fp, 0, SEEK_SET);
        uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
        size_t got = b ? fread(b, 1, (size_t)(n > 0 ? n : 0), fp) : 0;
        fclose(fp);
        if (!b || got != (size_t)(n > 0 ? n : 0)) {
            free(b);
            return 1;
        }
        LLVMFuzzerTestOneInput(b, got);
        free(b);
    }
    return 0;
}

#endif
