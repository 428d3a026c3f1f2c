/*
 * fuzz_config.c — libFuzzer harness for config.json as the loader reads it.
 *
 * The input is the text of config.json; the weights are always those of the
 * tiny mixed-precision Qwen3.5 fixture (read once). Each input goes through
 * model_dir_open_memory and lm_load_dir, so every key the family reads —
 * layer counts, widths, head counts, rope parameters, the quantization table
 * — is checked against the tensors: a hostile value must end in an error
 * with a message, never in a crash, an out-of-bounds read or a huge
 * allocation. When the config is accepted, one token is run through a fresh
 * cache.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_dir.h"
#include "io/safetensors.h"
#include "models/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SHARD "tests/fixtures/models/qwen35-dense-mixed/model.safetensors"

static uint8_t *shard_bytes;
static size_t shard_len;

static void load_shard(void) {
    FILE *f = fopen(SHARD, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_config: run from the repository root (%s)\n", SHARD);
        abort();
    }
    fseek(f, 0, SEEK_END);
    shard_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    shard_bytes = malloc(shard_len);
    if (!shard_bytes || fread(shard_bytes, 1, shard_len, f) != shard_len) abort();
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!shard_bytes) load_shard();
    if (size > (1u << 16)) return 0;
    char *cfg = malloc(size + 1);
    if (!cfg) return 0;
    memcpy(cfg, data, size);
    cfg[size] = 0;
    optiq_error err;
    st_file *shard = NULL;
    if (st_open_memory(shard_bytes, shard_len, "model.safetensors", &shard, &err)) abort();
    model_dir *md = NULL;
    lm_model *m = NULL;
    if (model_dir_open_memory(cfg, shard, NULL, &md, &err) == OPTIQ_OK) {
        if (lm_load_dir(md, &m, &err) == OPTIQ_OK) {
            const lm_info *info = lm_get_info(m);
            lm_cache *c = NULL;
            float *logits = malloc((size_t)info->vocab_size * sizeof *logits);
            if (logits && info->vocab_size > 0 && lm_cache_new(m, 8, &c, &err) == OPTIQ_OK) {
                int32_t tok = 0;
                lm_forward_args a = {.tokens = &tok, .n = 1, .logits = logits};
                (void)lm_forward(m, c, NULL, &a, &err);
            }
            lm_cache_free(c);
            free(logits);
            lm_free(m);
        } else if (err.message[0] == 0) {
            abort(); /* a refusal always explains itself */
        }
    } else if (err.message[0] == 0) {
        abort();
    }
    free(cfg);
    return 0;
}

#ifdef FUZZ_REPLAY_MAIN
#include "fuzz_replay.h"

int main(int argc, char **argv) {
    if (fuzz_replay_files(argc, argv)) return 1;
    printf("%d passed, 0 failed\n", argc - 1);
    return 0;
}
#endif
