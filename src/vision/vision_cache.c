/* vision_cache.c — see vision_cache.h. */
#include "vision/vision_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct vc_entry {
    struct vc_entry *prev, *next; /* most recently used first */
    vision_key key;
    int32_t grid[3];
    int64_t n_tokens, hidden;
    float *feats;
    size_t bytes;
} vc_entry;

struct vision_cache {
    pthread_mutex_t mu;
    vc_entry *head, *tail;
    vision_cache_stats st;
};

/* ---- hashing ----
 * Two 64-bit lanes over 8-byte words (a multiply-rotate mix per word, the
 * murmur3 finalizer at the end of each add). Not cryptographic: a cache key
 * over pixels the caller sent. */

vision_key vision_key_init(void) {
    vision_key k = {{0x243F6A8885A308D3ull, 0x13198A2E03707344ull}};
    return k;
}

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t fmix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
}

void vision_key_add(vision_key *k, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t a = k->h[0], b = k->h[1];
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = rotl(a ^ (w * 0x87C37B91114253D5ull), 31) * 0x4CF5AD432745937Full;
        b = rotl(b ^ (w * 0x52DCE729ull + 0x38495AB5ull), 27) * 0x9E3779B97F4A7C15ull + a;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, n - i);
    a = rotl(a ^ (w * 0x87C37B91114253D5ull), 31) * 0x4CF5AD432745937Full ^ (uint64_t)n;
    b = rotl(b ^ (w * 0x52DCE729ull + 0x38495AB5ull), 27) * 0x9E3779B97F4A7C15ull + a;
    k->h[0] = fmix(a + b);
    k->h[1] = fmix(b + k->h[0]);
}

/* ---- the cache ---- */

vision_cache *vision_cache_new(size_t max_bytes) {
    if (!max_bytes) return NULL;
    vision_cache *vc = calloc(1, sizeof *vc);
    if (!vc) return NULL;
    pthread_mutex_init(&vc->mu, NULL);
    vc->st.max_bytes = max_bytes;
    return vc;
}

static void unlink_entry(vision_cache *vc, vc_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else vc->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else vc->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(vision_cache *vc, vc_entry *e) {
    e->next = vc->head;
    if (vc->head) vc->head->prev = e;
    vc->head = e;
    if (!vc->tail) vc->tail = e;
}

static void drop_entry(vision_cache *vc, vc_entry *e) {
    unlink_entry(vc, e);
    vc->st.bytes -= e->bytes;
    vc->st.entries--;
    free(e->feats);
    free(e);
}

static vc_entry *find(vision_cache *vc, const vision_key *key, int64_t hidden) {
    for (vc_entry *e = vc->head; e; e = e->next)
        if (e->key.h[0] == key->h[0] && e->key.h[1] == key->h[1] && e->hidden == hidden) return e;
    return NULL;
}

int vision_cache_get(vision_cache *vc, const vision_key *key, int64_t hidden, float **feats, int64_t *n_tokens,
                     int32_t grid[3]) {
    if (!vc) return 0;
    pthread_mutex_lock(&vc->mu);
    vc_entry *e = find(vc, key, hidden);
    float *f = e ? malloc((size_t)(e->n_tokens * hidden) * sizeof *f + 1) : NULL;
    if (!f) {
        vc->st.misses++;
        pthread_mutex_unlock(&vc->mu);
        return 0;
    }
    memcpy(f, e->feats, (size_t)(e->n_tokens * hidden) * sizeof *f);
    *feats = f;
    *n_tokens = e->n_tokens;
    memcpy(grid, e->grid, sizeof e->grid);
    unlink_entry(vc, e);
    push_front(vc, e);
    vc->st.hits++;
    pthread_mutex_unlock(&vc->mu);
    return 1;
}

void vision_cache_put(vision_cache *vc, const vision_key *key, const float *feats, int64_t n_tokens, int64_t hidden,
                      const int32_t grid[3]) {
    if (!vc) return;
    size_t bytes = sizeof(vc_entry) + (size_t)(n_tokens * hidden) * sizeof *feats;
    if (bytes > vc->st.max_bytes) return;
    vc_entry *e = calloc(1, sizeof *e);
    float *f = malloc((size_t)(n_tokens * hidden) * sizeof *f + 1);
    if (!e || !f) {
        free(e), free(f);
        return;
    }
    memcpy(f, feats, (size_t)(n_tokens * hidden) * sizeof *f);
    e->key = *key;
    memcpy(e->grid, grid, sizeof e->grid);
    e->n_tokens = n_tokens;
    e->hidden = hidden;
    e->feats = f;
    e->bytes = bytes;
    pthread_mutex_lock(&vc->mu);
    vc_entry *old = find(vc, key, hidden);
    if (old) drop_entry(vc, old);
    while (vc->tail && vc->st.bytes + bytes > vc->st.max_bytes) drop_entry(vc, vc->tail);
    push_front(vc, e);
    vc->st.bytes += bytes;
    vc->st.entries++;
    pthread_mutex_unlock(&vc->mu);
}

void vision_cache_count_encoded(vision_cache *vc, uint64_t n) {
    if (!vc) return;
    pthread_mutex_lock(&vc->mu);
    vc->st.encoded += n;
    pthread_mutex_unlock(&vc->mu);
}

void vision_cache_get_stats(vision_cache *vc, vision_cache_stats *out) {
    if (!vc) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&vc->mu);
    *out = vc->st;
    pthread_mutex_unlock(&vc->mu);
}

void vision_cache_free(vision_cache *vc) {
    if (!vc) return;
    while (vc->head) drop_entry(vc, vc->head);
    pthread_mutex_destroy(&vc->mu);
    free(vc);
}
