/*
 * prefix_cache.h — states of past sequences, kept so that a new prompt that
 * starts like one of them only runs its new tokens (prefix reuse).
 *
 * A sequence is named by its keys, one per token: the token id for text
 * (< 2^31), and for an image's soft tokens a key made from a hash of the
 * image's pixels and preprocessing settings (vision/vision_cache.h) and the
 * token's index in the image (top bit set, so it never equals a text id).
 * Two prompts share a prefix of keys exactly when they share the tokens and
 * the images up to there.
 *
 * What a model's state is made of (models/model.h, lm_ops.state_*): rows
 * that can be cut at any length (full-attention K/V), and a tail valid at
 * one position only (Gated DeltaNet conv and recurrent states, the
 * sliding-window rows of Gemma-4). So an entry holds the rows of all its
 * positions and checkpoints of the tail: at block boundaries of the prompt
 * (every `block` tokens, which prefill chunks are made to end at), at the
 * end of the prompt, and at the end of the sequence. A new prompt resumes
 * from the last checkpoint at or before the length it shares with an entry,
 * and runs the rest; the model's forward pass does not depend on how a
 * sequence is split into calls, so the result is bit for bit that of a
 * fresh prefill (tests/test_prefix_cache.c).
 *
 * Checkpoints are reference counted: a session that resumed from an entry
 * shares the entry's earlier checkpoints, and the entry it adds at its end
 * holds them too. The byte budget counts the keys, the rows and every
 * checkpoint an entry holds (a checkpoint shared by two entries counts
 * twice: the budget is an upper bound). Entries are evicted least recently
 * used first; an entry that is a prefix of a new one is dropped when the new
 * one comes (the new one restores everything it could).
 *
 * Thread safety: every call takes the cache's lock; restores copy under it.
 */
#ifndef OPTIQ_RUNTIME_PREFIX_CACHE_H
#define OPTIQ_RUNTIME_PREFIX_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "models/model.h"

/* The key of soft token j of an image whose hash is h. */
static inline uint64_t pc_image_key(uint64_t h, int64_t j) {
    uint64_t x = h ^ ((uint64_t)j * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return x | (1ull << 63);
}

typedef struct prefix_cache prefix_cache;

/* A saved tail at one position (refcounted; pc_ckpt_ref / pc_ckpt_unref). */
typedef struct pc_ckpt {
    int64_t pos;
    int refs;          /* guarded by the cache's lock */
    unsigned char *tail;
} pc_ckpt;

typedef struct prefix_cache_stats {
    uint64_t hits, misses;   /* lookups that restored something / found nothing usable */
    uint64_t tokens_reused;  /* positions restored instead of computed */
    uint64_t inserts, evictions;
    uint64_t bytes, entries; /* now */
    uint64_t max_bytes;
} prefix_cache_stats;

/* NULL when max_bytes is 0 or the model cannot save its state (also when
 * out of memory: the cache is an optimisation). block: tokens between the
 * prompt's checkpoints (>= 1). */
prefix_cache *prefix_cache_new(const lm_model *m, size_t max_bytes, int64_t block);
void prefix_cache_free(prefix_cache *pc);
int64_t prefix_cache_block(const prefix_cache *pc);
/* Bytes of one checkpoint's tail. */
size_t prefix_cache_tail_bytes(const prefix_cache *pc);

/* A new checkpoint of c's tail at its position (1 reference), or NULL when
 * out of memory. */
pc_ckpt *prefix_cache_checkpoint(prefix_cache *pc, const lm_cache *c);
void pc_ckpt_ref(prefix_cache *pc, pc_ckpt *k);
void pc_ckpt_unref(prefix_cache *pc, pc_ckpt *k);

/* Offer a sequence: keys (c's position of them) and its checkpoints (in
 * increasing position, all <= c's position; the call takes its own
 * references). A checkpoint at c's position is taken when none is given.
 * An entry larger than the whole budget keeps only its latest checkpoints
 * (down to the one at its end); silently not kept when even that does not
 * fit, or memory is short. */
void prefix_cache_insert(prefix_cache *pc, const lm_cache *c, const uint64_t *keys, pc_ckpt *const *ckpts,
                         size_t n_ckpts);

/* The longest usable prefix of keys[0..n) that some entry holds, restored
 * into c, at most `limit` positions (the prompt's last token must still run
 * to give logits). Returns the restored position (0: nothing usable, c
 * untouched), and *inherited (malloc'd, *n_inherited of them, the caller
 * holds one reference each) the entry's checkpoints at or before it, for the
 * session to pass on. A failed restore leaves c reset and returns 0. */
int64_t prefix_cache_restore(prefix_cache *pc, lm_cache *c, const uint64_t *keys, int64_t n, int64_t limit,
                             pc_ckpt ***inherited, size_t *n_inherited);

void prefix_cache_get_stats(prefix_cache *pc, prefix_cache_stats *out);

#endif
