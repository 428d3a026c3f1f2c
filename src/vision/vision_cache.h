/*
 * vision_cache.h — soft tokens of images seen before, so that an image sent
 * again (the next turn of a conversation re-sends every earlier image) is
 * not encoded again.
 *
 * Key: a 128-bit hash of the decoded image (width, height, RGB bytes), the
 * request's soft-token budget (Gemma-4's max_soft_tokens) and a hash of the
 * folder's preprocessing settings (preprocessor_config.json and
 * processor_config.json as read). The decoded pixels rather than the file's
 * bytes: the same picture sent as a path, as a data: URL or re-encoded
 * losslessly is one entry, and the hash is also what names the image's soft
 * tokens in the prefix cache (runtime/prefix_cache.h). Value: the soft
 * tokens (n, hidden) and the image's grid (t, h, w in patches), which is all
 * the prompt needs (positions, placeholder expansion).
 *
 * Bounded by bytes (the soft tokens and the bookkeeping), least recently
 * used evicted first. Thread safety: every call takes the cache's lock.
 */
#ifndef OPTIQ_VISION_VISION_CACHE_H
#define OPTIQ_VISION_VISION_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct vision_cache vision_cache;

typedef struct vision_key {
    uint64_t h[2];
} vision_key;

typedef struct vision_cache_stats {
    uint64_t hits, misses;   /* lookups */
    uint64_t encoded;        /* images that went through the tower (cached or not) */
    uint64_t bytes, entries; /* now */
    uint64_t max_bytes;
} vision_cache_stats;

/* 128-bit hash of n bytes, continuing from seed (vision_key_init()). */
vision_key vision_key_init(void);
void vision_key_add(vision_key *k, const void *data, size_t n);

/* NULL when max_bytes is 0 (or out of memory): callers treat a NULL cache as
 * "always miss" and may still count encodes with vision_cache_count_encoded. */
vision_cache *vision_cache_new(size_t max_bytes);
void vision_cache_free(vision_cache *vc);

/* 1 on a hit: *feats (malloc'd copy, (n_tokens, hidden)), *n_tokens, grid. */
int vision_cache_get(vision_cache *vc, const vision_key *key, int64_t hidden, float **feats, int64_t *n_tokens,
                     int32_t grid[3]);
/* Keep a copy (silently not, when larger than the budget or out of memory). */
void vision_cache_put(vision_cache *vc, const vision_key *key, const float *feats, int64_t n_tokens, int64_t hidden,
                      const int32_t grid[3]);
void vision_cache_count_encoded(vision_cache *vc, uint64_t n);
void vision_cache_get_stats(vision_cache *vc, vision_cache_stats *out);

#endif
