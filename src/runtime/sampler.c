/*
 * sampler.c — next-token selection with mlx-lm's semantics (see sampler.h).
 *
 * Reference: mlx_lm/sample_utils.py and generate.py::generate_step (mlx-lm
 * 0.32). Every deterministic step reproduces mlx-lm's arithmetic in float32
 * where it matters (the penalties, logit - logsumexp, the min_p threshold,
 * logprob * (1 / temp)); sums of probabilities are taken in double, so a
 * top_p boundary can differ from mlx only when a cumulative mass lies within
 * float32 rounding of top_p.
 *
 * Cost per call is O(V) (V = vocabulary, up to 262,144) with no sort and
 * one exp() pass over the vocabulary (plus one over the tokens that survive
 * the filters):
 *   - top_k finds the k-th largest log-probability by an MSD radix select
 *     over the order-preserving 32-bit key of each float (digits of 16, 8
 *     and 8 bits, or 4 x 8 on small vocabularies, the candidate list
 *     shrinking to one bucket per digit);
 *   - top_p does the same walk with the probability mass of each bucket, so
 *     it lands on the boundary token of the descending cumulative sum
 *     without sorting the vocabulary.
 * Scratch (probabilities, an index list, a mark per token) is allocated once
 * in sampler_new. Unless top_p or min_p is on, the logsumexp is skipped:
 * top_k and softmax(x / temp) do not depend on a shift of x.
 *
 * Inputs mlx-lm rejects or turns into NaN are given a defined meaning here
 * (documented at each step): NaN logits count as -inf and are never chosen;
 * a row with no finite-or-+inf logit yields token 0; +inf logits win outright.
 */
#include "runtime/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_PENALTY_CONTEXT 20

struct sampler {
    optiq_sampling p;  /* copy of the caller's parameters */
    int64_t vocab;     /* V */
    uint64_t rng[4];   /* xoshiro256** state */
    float *prob;       /* (V) unnormalised probabilities for top_p, weights for the draw */
    int32_t *idx;      /* (V) candidate list of the radix walks */
    uint32_t *count;   /* (bins of the first digit) bucket sizes of a radix walk */
    double *mass;      /* (bins of the first digit) bucket masses of the top_p walk */
    uint8_t *seen;     /* (V) per-token marks; all zero between calls */
};

/* ---- defaults ---------------------------------------------------------- */

optiq_sampling optiq_sampling_default(void) {
    optiq_sampling p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;        /* greedy */
    p.top_p = 1.0f;              /* off */
    p.top_k = 0;                 /* off */
    p.min_p = 0.0f;              /* off */
    p.repetition_penalty = 1.0f; /* off (the neutral factor) */
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.penalty_context = DEFAULT_PENALTY_CONTEXT;
    p.seed = 0;
    return p;
}

/* ---- random stream: xoshiro256** seeded by splitmix64 ------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rng_seed(uint64_t s[4], uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s[i] = splitmix64(&x); /* never all zero: splitmix64 is a bijection */
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* ---- helpers ------------------------------------------------------------ */

/* Order-preserving key: a < b (as floats, NaN excluded) iff key(a) < key(b).
 * -0 is folded onto +0 so that equal floats have equal keys. */
static uint32_t order_key(float v) {
    v += 0.0f; /* -0 + 0 = +0; every other value is unchanged */
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u ^ ((0u - (u >> 31)) | 0x80000000u); /* negative: ~u; otherwise: set the sign bit. Branch-free. */
}

/* First index of the largest value; NaN never wins; all -inf/NaN -> 0. */
static int64_t argmax_first(const float *x, int64_t n) {
    int64_t best = 0;
    float bv = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > bv) { bv = x[i]; best = i; }
    return best;
}

/* ---- step 1: logits processors (make_logits_processors) ----------------- */

/* mlx-lm order: repetition, presence, frequency, each over the last
 * penalty_context tokens of the history (0 or less: 20). Repetition and
 * presence write logits[:, tokens] once, so a token repeated in the window is
 * penalised once; frequency uses .at[].subtract and counts every occurrence.
 * Off values: repetition 0, 1 or negative (mlx-lm rejects negative; the
 * factor 1 is a no-op there too), presence 0, frequency 0, and any
 * non-finite value. Ids outside [0, V) are ignored. */
static void apply_penalties(const optiq_sampling *p, int64_t vocab, float *logits, const int32_t *hist,
                            size_t n_hist, uint8_t *seen) {
    if (!hist || n_hist == 0) return;
    size_t ctx = p->penalty_context > 0 ? (size_t)p->penalty_context : DEFAULT_PENALTY_CONTEXT;
    if (n_hist > ctx) {
        hist += n_hist - ctx;
        n_hist = ctx;
    }
    float rp = p->repetition_penalty, pp = p->presence_penalty, fp = p->frequency_penalty;
    if (rp > 0.0f && rp != 1.0f && isfinite(rp)) {
        for (size_t j = 0; j < n_hist; j++) {
            int32_t t = hist[j];
            if (t < 0 || t >= vocab || seen[t]) continue;
            seen[t] = 1;
            float x = logits[t];
            logits[t] = x < 0.0f ? x * rp : x / rp; /* same float32 ops as mlx-lm's mx.where */
        }
        for (size_t j = 0; j < n_hist; j++)
            if (hist[j] >= 0 && hist[j] < vocab) seen[hist[j]] = 0;
    }
    if (pp != 0.0f && isfinite(pp)) {
        for (size_t j = 0; j < n_hist; j++) {
            int32_t t = hist[j];
            if (t < 0 || t >= vocab || seen[t]) continue;
            seen[t] = 1;
            logits[t] -= pp;
        }
        for (size_t j = 0; j < n_hist; j++)
            if (hist[j] >= 0 && hist[j] < vocab) seen[hist[j]] = 0;
    }
    if (fp != 0.0f && isfinite(fp)) {
        for (size_t j = 0; j < n_hist; j++) {
            int32_t t = hist[j];
            if (t >= 0 && t < vocab) logits[t] -= fp;
        }
    }
}

/* ---- step 2: log-probabilities ------------------------------------------ */

/* x <- x - logsumexp(x) in float32, as generate_step does. The sum runs in
 * double around the maximum. When e is not NULL it receives exp(x - max),
 * the probabilities up to one common factor, for filter_top_p. Expects no
 * NaN and a finite maximum. */
static void to_logprobs(float *x, int64_t vocab, float *e) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; i++) {
        float w = expf(x[i] - mx);
        if (e) e[i] = w;
        sum += w;
    }
    float lse = (float)((double)mx + log(sum));
    for (int64_t i = 0; i < vocab; i++) x[i] -= lse;
}

/* ---- step 3: filters (apply_top_p, apply_min_p, apply_top_k) ------------- */

/* The radix walks read the 32-bit key most significant digit first. On a
 * large vocabulary the first digit is the top 16 bits (sign, exponent, 7
 * mantissa bits), which leaves few candidates for the two 8-bit digits that
 * follow; a small one (where clearing 2^16 bins would dominate) uses four
 * 8-bit digits. */
enum { TOP_BINS = 1 << 16, WIDE_MIN_VOCAB = 1 << 14 };

typedef struct {
    int n;
    int shift[4];
    uint32_t mask[4];
} digit_plan;

static digit_plan plan_for(int64_t vocab) {
    if (vocab >= WIDE_MIN_VOCAB) return (digit_plan){3, {16, 8, 0, 0}, {0xffffu, 0xffu, 0xffu, 0}};
    return (digit_plan){4, {24, 16, 8, 0}, {0xffu, 0xffu, 0xffu, 0xffu}};
}

static uint32_t digit_of(float v, int shift, uint32_t mask) { return (order_key(v) >> shift) & mask; }

/* Keep in idx only the candidates whose digit is b (first: scan all V). */
static int64_t narrow(const float *lp, int64_t vocab, int32_t *idx, int64_t n, int first, int shift, uint32_t mask,
                      uint32_t b) {
    int64_t m = 0;
    if (first) {
        for (int64_t i = 0; i < vocab; i++)
            if (digit_of(lp[i], shift, mask) == b) idx[m++] = (int32_t)i;
    } else {
        for (int64_t j = 0; j < n; j++)
            if (digit_of(lp[idx[j]], shift, mask) == b) idx[m++] = idx[j];
    }
    return m;
}

/* mlx-lm's apply_top_p sorts ascending, takes for every position the mass
 * strictly above it (exclusive reverse cumsum) and keeps every log-prob >=
 * the one at the last descending rank whose mass above is < top_p * total.
 * So the boundary token that crosses top_p is kept, and so is every token
 * tied with it. Here the same boundary is found by an MSD radix walk: per
 * digit of the key, the bucket holding the boundary is the last non-empty
 * one (going down) whose mass above is still < target.
 * lp: (V) log-probs, no NaN; sc->prob: (V) exp(lp) up to a common factor,
 * filled here unless have_prob; sc: scratch for at least V tokens. */
static void filter_top_p(float *lp, int64_t vocab, float top_p, int have_prob, sampler *sc) {
    float *prob = sc->prob;
    int32_t *idx = sc->idx;
    uint32_t *count = sc->count;
    double *mass = sc->mass;
    if (!have_prob)
        for (int64_t i = 0; i < vocab; i++) prob[i] = expf(lp[i]);
    double target = 0.0;
    double above = 0.0; /* mass of the tokens whose key is above the current bucket range */
    uint32_t prefix = 0;
    int64_t n = 0;
    digit_plan pl = plan_for(vocab);
    for (int d = 0; d < pl.n; d++) {
        int shift = pl.shift[d];
        uint32_t mask = pl.mask[d];
        int nb = (int)mask + 1;
        memset(count, 0, (size_t)nb * sizeof *count);
        memset(mass, 0, (size_t)nb * sizeof *mass);
        if (d == 0) {
            for (int64_t i = 0; i < vocab; i++) {
                uint32_t b = digit_of(lp[i], shift, mask);
                count[b]++;
                mass[b] += prob[i];
            }
            double total = 0.0;
            for (int b = 0; b < nb; b++) total += mass[b];
            if (!(total > 0.0)) return;
            target = (double)top_p * total;
        } else {
            for (int64_t j = 0; j < n; j++) {
                uint32_t b = digit_of(lp[idx[j]], shift, mask);
                count[b]++;
                mass[b] += prob[idx[j]];
            }
        }
        /* Invariant: above < target, so the first non-empty bucket qualifies. */
        int cand = -1;
        double cand_above = above;
        for (int b = nb - 1; b >= 0; b--) {
            if (!count[b]) continue;
            if (cand >= 0 && above >= target) break;
            cand = b;
            cand_above = above;
            above += mass[b];
        }
        prefix |= (uint32_t)cand << shift;
        above = cand_above;
        if (d < pl.n - 1) n = narrow(lp, vocab, idx, n, d == 0, shift, mask, (uint32_t)cand);
    }
    for (int64_t i = 0; i < vocab; i++)
        if (order_key(lp[i]) < prefix) lp[i] = -INFINITY;
}

/* mlx-lm's apply_min_p with min_tokens_to_keep = 1 (make_sampler's default):
 * drop log-probs < max + log(min_p), that sum taken in float32 as mlx adds a
 * Python scalar to a float32 array. The maximum always survives. min_p is
 * clamped to at most 1 (mlx-lm rejects larger values). */
static void filter_min_p(float *lp, int64_t vocab, float min_p) {
    if (min_p > 1.0f) min_p = 1.0f;
    float top = -INFINITY;
    for (int64_t i = 0; i < vocab; i++)
        if (lp[i] > top) top = lp[i];
    if (top == -INFINITY) return;
    float thr = top + (float)log((double)min_p);
    for (int64_t i = 0; i < vocab; i++)
        if (lp[i] < thr) lp[i] = -INFINITY;
}

/* mlx-lm's apply_top_k keeps exactly k entries (argpartition; -inf ones
 * included if fewer than k are finite). Among entries tied at the k-th value
 * mlx keeps an unspecified subset; here the lowest indices. The k-th largest
 * key is found by an MSD radix select (the digits of plan_for).
 * Requires 0 < k < V; lp without NaN; sc: scratch for at least V tokens. */
static void filter_top_k(float *lp, int64_t vocab, int64_t k, sampler *sc) {
    uint32_t *count = sc->count;
    uint32_t prefix = 0;
    int64_t kk = k; /* rank still wanted inside the current bucket range, 1-based */
    int64_t n = 0;
    digit_plan pl = plan_for(vocab);
    for (int d = 0; d < pl.n; d++) {
        int shift = pl.shift[d];
        uint32_t mask = pl.mask[d];
        int nb = (int)mask + 1;
        memset(count, 0, (size_t)nb * sizeof *count);
        if (d == 0) {
            for (int64_t i = 0; i < vocab; i++) count[digit_of(lp[i], shift, mask)]++;
        } else {
            for (int64_t j = 0; j < n; j++) count[digit_of(lp[sc->idx[j]], shift, mask)]++;
        }
        int cand = nb - 1;
        for (int b = nb - 1; b >= 0; b--) {
            if (kk <= (int64_t)count[b]) { cand = b; break; }
            kk -= count[b];
        }
        prefix |= (uint32_t)cand << shift;
        if (d < pl.n - 1) n = narrow(lp, vocab, sc->idx, n, d == 0, shift, mask, (uint32_t)cand);
    }
    /* prefix is the k-th largest key; kk of the entries equal to it are kept. */
    for (int64_t i = 0; i < vocab; i++) {
        uint32_t key = order_key(lp[i]);
        if (key > prefix) continue;
        if (key == prefix && kk > 0) { kk--; continue; }
        lp[i] = -INFINITY;
    }
}

static int top_p_on(const optiq_sampling *p) { return p->top_p > 0.0f && p->top_p < 1.0f; }

/* The three filters in make_sampler's order, each only when on:
 * top_p in (0, 1), min_p > 0, top_k in (0, V). have_prob: s->prob holds
 * exp(lp) up to a common factor (from to_logprobs) when top_p is on. */
static void apply_filters(sampler *s, float *lp, int have_prob) {
    const optiq_sampling *p = &s->p;
    if (top_p_on(p)) filter_top_p(lp, s->vocab, p->top_p, have_prob, s);
    if (p->min_p > 0.0f) filter_min_p(lp, s->vocab, p->min_p);
    if (p->top_k > 0 && (int64_t)p->top_k < s->vocab) filter_top_k(lp, s->vocab, p->top_k, s);
}

/* ---- step 4: the draw (categorical_sampling) ---------------------------- */

/* Draw from softmax(lp * (1 / temp)), the factor rounded to float32 as in
 * mlx-lm. mlx draws by Gumbel-max with its own key; this inverts the CDF with
 * one uniform from the sampler's stream. Filtered (-inf) entries have weight
 * 0, cost no exp() and are never returned; if the scaled maximum overflows (a
 * tiny temperature) the draw degenerates to the argmax, its limit. */
static int64_t draw(sampler *s, float *lp, float temp) {
    int64_t vocab = s->vocab;
    float inv = (float)(1.0 / (double)temp);
    if (!isfinite(inv)) return argmax_first(lp, vocab);
    float mx = -INFINITY;
    int64_t first_max = 0;
    for (int64_t i = 0; i < vocab; i++) {
        if (lp[i] == -INFINITY) continue;
        lp[i] *= inv;
        if (lp[i] > mx) { mx = lp[i]; first_max = i; }
    }
    if (mx == -INFINITY || !isfinite(mx)) return first_max;
    double total = 0.0;
    for (int64_t i = 0; i < vocab; i++) {
        float w = lp[i] == -INFINITY ? 0.0f : expf(lp[i] - mx);
        s->prob[i] = w;
        total += w;
    }
    double r = rng_uniform(s->rng) * total;
    double cum = 0.0;
    int64_t last = first_max;
    for (int64_t i = 0; i < vocab; i++) {
        if (s->prob[i] <= 0.0f) continue;
        cum += s->prob[i];
        last = i;
        if (r < cum) return i;
    }
    return last; /* r within rounding of total */
}

/* ---- public ------------------------------------------------------------- */

sampler *sampler_new(const optiq_sampling *params, int64_t vocab_size) {
    if (vocab_size <= 0 || vocab_size > INT32_MAX) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = params ? *params : optiq_sampling_default();
    s->vocab = vocab_size;
    s->prob = malloc((size_t)vocab_size * sizeof *s->prob);
    s->idx = malloc((size_t)vocab_size * sizeof *s->idx);
    s->seen = calloc((size_t)vocab_size, 1);
    size_t bins = (size_t)plan_for(vocab_size).mask[0] + 1;
    s->count = malloc(bins * sizeof *s->count);
    s->mass = malloc(bins * sizeof *s->mass);
    if (!s->prob || !s->idx || !s->seen || !s->count || !s->mass) {
        sampler_free(s);
        return NULL;
    }
    sampler_reset(s);
    return s;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->prob);
    free(s->idx);
    free(s->seen);
    free(s->count);
    free(s->mass);
    free(s);
}

void sampler_reset(sampler *s) { rng_seed(s->rng, s->p.seed); }

int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, size_t n_history) {
    int64_t vocab = s->vocab;
    apply_penalties(&s->p, vocab, logits, history, n_history, s->seen);

    /* NaN (from the model or from a penalty) counts as -inf from here on. */
    for (int64_t i = 0; i < vocab; i++)
        if (isnan(logits[i])) logits[i] = -INFINITY;
    int64_t first_max = argmax_first(logits, vocab);
    float mx = logits[first_max];
    /* Greedy (temperature 0; also negative or NaN, which mlx-lm does not
     * define usefully): the argmax of the logits is the argmax of the
     * log-probs, taken before the shift so rounding cannot merge neighbours.
     * An all -inf row gives 0; a +inf logit wins outright in every mode. */
    float temp = s->p.temperature;
    if (!(temp > 0.0f) || mx == -INFINITY || mx == INFINITY) return (int32_t)first_max;

    /* top_p and min_p read log-probabilities (and top_p the probabilities
     * to_logprobs leaves in s->prob). top_k alone and the draw do not depend
     * on a shift of the row, so without those two the logsumexp is skipped. */
    const optiq_sampling *p = &s->p;
    if (top_p_on(p) || p->min_p > 0.0f) to_logprobs(logits, vocab, s->prob);
    apply_filters(s, logits, 1);
    return (int32_t)draw(s, logits, temp);
}
