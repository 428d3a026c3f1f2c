/* prefix_cache.c — see prefix_cache.h. */
#include "runtime/prefix_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct pc_entry {
    struct pc_entry *prev, *next; /* most recently used first */
    uint64_t *keys;               /* (n) */
    int64_t n;
    unsigned char *rows;          /* (n, row_bytes) position-major */
    pc_ckpt **ckpts;              /* (n_ckpts) increasing positions, the last at n */
    size_t n_ckpts;
    size_t bytes;
} pc_entry;

struct prefix_cache {
    pthread_mutex_t mu;
    size_t max_bytes, row_bytes, tail_bytes;
    int64_t block;
    pc_entry *head, *tail;
    prefix_cache_stats st;
};

prefix_cache *prefix_cache_new(const lm_model *m, size_t max_bytes, int64_t block) {
    size_t row = 0, tail = 0;
    lm_state_layout(m, &row, &tail);
    if (!max_bytes || (!row && !tail) || block < 1) return NULL;
    prefix_cache *pc = calloc(1, sizeof *pc);
    if (!pc) return NULL;
    pthread_mutex_init(&pc->mu, NULL);
    pc->max_bytes = max_bytes;
    pc->row_bytes = row;
    pc->tail_bytes = tail;
    pc->block = block;
    pc->st.max_bytes = max_bytes;
    return pc;
}

int64_t prefix_cache_block(const prefix_cache *pc) { return pc->block; }
size_t prefix_cache_tail_bytes(const prefix_cache *pc) { return pc->tail_bytes; }

/* ---- checkpoints ---- */

pc_ckpt *prefix_cache_checkpoint(prefix_cache *pc, const lm_cache *c) {
    pc_ckpt *k = malloc(sizeof *k);
    unsigned char *t = malloc(pc->tail_bytes ? pc->tail_bytes : 1);
    if (!k || !t) {
        free(k), free(t);
        return NULL;
    }
    if (pc->tail_bytes) lm_state_save_tail(c, t);
    k->pos = lm_cache_pos(c);
    k->refs = 1;
    k->tail = t;
    return k;
}

static void ckpt_unref_locked(pc_ckpt *k) {
    if (k && --k->refs == 0) {
        free(k->tail);
        free(k);
    }
}

void pc_ckpt_ref(prefix_cache *pc, pc_ckpt *k) {
    pthread_mutex_lock(&pc->mu);
    k->refs++;
    pthread_mutex_unlock(&pc->mu);
}

void pc_ckpt_unref(prefix_cache *pc, pc_ckpt *k) {
    if (!k) return;
    pthread_mutex_lock(&pc->mu);
    ckpt_unref_locked(k);
    pthread_mutex_unlock(&pc->mu);
}

/* ---- entries (under the lock) ---- */

static void unlink_entry(prefix_cache *pc, pc_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else pc->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else pc->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(prefix_cache *pc, pc_entry *e) {
    e->prev = NULL;
    e->next = pc->head;
    if (pc->head) pc->head->prev = e;
    pc->head = e;
    if (!pc->tail) pc->tail = e;
}

static void free_entry(pc_entry *e) {
    for (size_t i = 0; i < e->n_ckpts; i++) ckpt_unref_locked(e->ckpts[i]);
    free(e->ckpts), free(e->keys), free(e->rows);
    free(e);
}

static void drop_entry(prefix_cache *pc, pc_entry *e) {
    unlink_entry(pc, e);
    pc->st.bytes -= e->bytes;
    pc->st.entries--;
    free_entry(e);
}

static int has_ckpt_at(const pc_entry *e, int64_t pos) {
    for (size_t i = 0; i < e->n_ckpts; i++)
        if (e->ckpts[i]->pos == pos) return 1;
    return 0;
}

/* a is redundant next to b: b starts with a's keys and can resume wherever a can. */
static int covered_by(const pc_entry *a, const pc_entry *b) {
    if (a->n > b->n || memcmp(a->keys, b->keys, (size_t)a->n * sizeof *a->keys)) return 0;
    for (size_t i = 0; i < a->n_ckpts; i++)
        if (!has_ckpt_at(b, a->ckpts[i]->pos)) return 0;
    return 1;
}

void prefix_cache_insert(prefix_cache *pc, const lm_cache *c, const uint64_t *keys, pc_ckpt *const *ckpts,
                         size_t n_ckpts) {
    int64_t n = lm_cache_pos(c);
    if (!pc || n < 1) return;
    int end_given = n_ckpts && ckpts[n_ckpts - 1]->pos == n;
    size_t base = sizeof(pc_entry) + (size_t)n * (sizeof *keys + pc->row_bytes), per = sizeof(pc_ckpt) + pc->tail_bytes;
    /* too large for the budget: the earliest checkpoints go first (the later ones
     * are where the next turn resumes); without even the last one, nothing is kept */
    while (n_ckpts && base + (n_ckpts + !end_given) * per > pc->max_bytes) ckpts++, n_ckpts--;
    end_given = n_ckpts && ckpts[n_ckpts - 1]->pos == n;
    size_t nk = n_ckpts + !end_given, bytes = base + nk * per;
    if (bytes > pc->max_bytes) return;
    pc_entry *e = calloc(1, sizeof *e);
    pc_ckpt *end = end_given ? NULL : prefix_cache_checkpoint(pc, c);
    if (e) {
        e->keys = malloc((size_t)n * sizeof *e->keys);
        e->rows = malloc((size_t)n * pc->row_bytes + 1);
        e->ckpts = malloc(nk * sizeof *e->ckpts);
    }
    if (!e || !e->keys || !e->rows || !e->ckpts || (!end_given && !end)) {
        if (e) free(e->keys), free(e->rows), free(e->ckpts);
        free(e);
        pc_ckpt_unref(pc, end);
        return;
    }
    memcpy(e->keys, keys, (size_t)n * sizeof *keys);
    lm_state_save_rows(c, 0, n, e->rows);
    e->n = n;
    e->bytes = bytes;
    pthread_mutex_lock(&pc->mu);
    for (size_t i = 0; i < n_ckpts; i++) {
        ckpts[i]->refs++;
        e->ckpts[e->n_ckpts++] = ckpts[i];
    }
    if (end) e->ckpts[e->n_ckpts++] = end;
    /* an entry this one covers goes; one that covers this one makes it pointless */
    for (pc_entry *o = pc->head, *next; o; o = next) {
        next = o->next;
        if (covered_by(o, e)) drop_entry(pc, o);
        else if (covered_by(e, o)) {
            unlink_entry(pc, o);
            push_front(pc, o);
            free_entry(e);
            pthread_mutex_unlock(&pc->mu);
            return;
        }
    }
    while (pc->tail && pc->st.bytes + bytes > pc->max_bytes) {
        drop_entry(pc, pc->tail);
        pc->st.evictions++;
    }
    push_front(pc, e);
    pc->st.bytes += bytes;
    pc->st.entries++;
    pc->st.inserts++;
    pthread_mutex_unlock(&pc->mu);
}

int64_t prefix_cache_restore(prefix_cache *pc, lm_cache *c, const uint64_t *keys, int64_t n, int64_t limit,
                             pc_ckpt ***inherited, size_t *n_inherited) {
    *inherited = NULL, *n_inherited = 0;
    if (!pc) return 0;
    if (limit > n) limit = n;
    pthread_mutex_lock(&pc->mu);
    pc_entry *best = NULL;
    size_t best_k = 0;
    int64_t best_pos = 0;
    for (pc_entry *e = pc->head; e; e = e->next) {
        int64_t m = e->n < limit ? e->n : limit, l = 0;
        while (l < m && e->keys[l] == keys[l]) l++;
        /* the last checkpoint at or before l */
        for (size_t k = e->n_ckpts; k-- > 0;)
            if (e->ckpts[k]->pos <= l) {
                if (e->ckpts[k]->pos > best_pos) best = e, best_k = k, best_pos = e->ckpts[k]->pos;
                break;
            }
    }
    if (!best) {
        pc->st.misses++;
        pthread_mutex_unlock(&pc->mu);
        return 0;
    }
    pc_ckpt **inh = malloc((best_k + 1) * sizeof *inh);
    optiq_status st =
        inh ? lm_state_restore(c, best_pos, best->rows, best->ckpts[best_k]->tail, NULL) : OPTIQ_ERR_NOMEM;
    if (st) {
        pc->st.misses++;
        pthread_mutex_unlock(&pc->mu);
        free(inh);
        return 0;
    }
    for (size_t k = 0; k <= best_k; k++) {
        best->ckpts[k]->refs++;
        inh[k] = best->ckpts[k];
    }
    unlink_entry(pc, best);
    push_front(pc, best);
    pc->st.hits++;
    pc->st.tokens_reused += (uint64_t)best_pos;
    pthread_mutex_unlock(&pc->mu);
    *inherited = inh;
    *n_inherited = best_k + 1;
    return best_pos;
}

void prefix_cache_get_stats(prefix_cache *pc, prefix_cache_stats *out) {
    if (!pc) {
        memset(out, 0, sizeof *out);
        return;
    }
    pthread_mutex_lock(&pc->mu);
    *out = pc->st;
    pthread_mutex_unlock(&pc->mu);
}

void prefix_cache_free(prefix_cache *pc) {
    if (!pc) return;
    while (pc->head) drop_entry(pc, pc->head);
    pthread_mutex_destroy(&pc->mu);
    free(pc);
}
