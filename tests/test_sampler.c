/* test_sampler.c — the token sampler: filters and penalties against mlx-lm's
 * own functions (tests/fixtures/sampler/filters.json, from
 * tools/reference/gen_sampler.py), the radix-walk filters against sort-based
 * references on full-size vocabularies, greedy edge cases (ties, NaN, -inf),
 * and the random draw (reproducibility, frequencies, greedy limits).
 *
 * The static filter steps are reached by including sampler.c. */
#include "runtime/sampler.c"

#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>

/* ---- fixture loading ---------------------------------------------------- */

static cJSON *load_fixture(void) {
    const char *path = test_path("tests/fixtures/sampler/filters.json");
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) { free(buf); return NULL; }
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

/* A JSON array of numbers (null = -inf) into out[cap]; returns the length. */
static int read_floats(const cJSON *arr, float *out, int cap) {
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (n >= cap) return -1;
        out[n++] = cJSON_IsNull(e) ? -INFINITY : (float)e->valuedouble;
    }
    return n;
}

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Values agree when both are -inf or within 1e-5 relative (float32 rounding
 * of a logsumexp or a division done in a different order). */
static int close_enough(float a, float b) {
    if (a == -INFINITY || b == -INFINITY) return a == b;
    return fabsf(a - b) <= 1e-5f * fmaxf(1.0f, fabsf(b));
}

enum { MAXV = 64 };

static const cJSON *find_vector(const cJSON *fx, const char *name) {
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(fx, "logprobs"))
        if (!strcmp(str(v, "name"), name)) return v;
    return NULL;
}

/* Runs the fixture's filter cases of one kind ("top_p", "min_p", "top_k",
 * "chain") through apply_filters, starting from mlx's own log-probs so the
 * filters alone are compared. Returns the number of cases run. */
static int check_filter_cases(const cJSON *fx, const char *kind) {
    int ran = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "filters")) {
        double top_p = num(c, "top_p"), min_p = num(c, "min_p");
        int top_k = (int)num(c, "top_k");
        int on = (top_p < 1.0) + (min_p > 0.0) + (top_k > 0);
        const char *k = on > 1 ? "chain" : top_p < 1.0 ? "top_p" : min_p > 0.0 ? "min_p" : "top_k";
        if (strcmp(k, kind)) continue;
        const char *vname = str(c, "vector");
        const cJSON *vec = find_vector(fx, vname);
        float lp[MAXV], want[MAXV], in[MAXV];
        int n = vec ? read_floats(cJSON_GetObjectItemCaseSensitive(vec, "logprobs"), lp, MAXV) : -1;
        int m = read_floats(cJSON_GetObjectItemCaseSensitive(c, "expected"), want, MAXV);
        CHECKF(n > 0 && n == m, "%s: bad fixture case", vname);
        if (n <= 0 || n != m) continue;
        memcpy(in, lp, sizeof lp);

        optiq_sampling p = optiq_sampling_default();
        p.temperature = 1.0f;
        p.top_p = (float)top_p;
        p.min_p = (float)min_p;
        p.top_k = top_k;
        sampler *s = sampler_new(&p, n);
        CHECK(s != NULL);
        if (!s) continue;
        apply_filters(s, lp, 0);
        sampler_free(s);

        /* mlx's argpartition keeps an unspecified subset of the entries tied
         * at the k-th value; the kept count must still agree. The k-th value
         * is the smallest one mlx kept. */
        float kth = INFINITY;
        int n_want = 0, n_got = 0;
        for (int i = 0; i < n; i++) {
            if (want[i] != -INFINITY) { n_want++; kth = fminf(kth, want[i]); }
            if (lp[i] != -INFINITY) n_got++;
        }
        CHECKF(n_want == n_got, "%s top_p=%g min_p=%g top_k=%d: kept %d, mlx-lm kept %d", vname, top_p, min_p,
               top_k, n_got, n_want);
        for (int i = 0; i < n; i++) {
            int same_set = (lp[i] == -INFINITY) == (want[i] == -INFINITY);
            if (!same_set && top_k > 0 && in[i] == kth) continue; /* a tie at the k-th value */
            CHECKF(same_set && close_enough(lp[i], want[i]),
                   "%s top_p=%g min_p=%g top_k=%d: token %d is %g, mlx-lm %g", vname, top_p, min_p, top_k, i,
                   (double)lp[i], (double)want[i]);
        }
        ran++;
    }
    return ran;
}

/* ---- sort-based references for the radix walks -------------------------- */

typedef struct {
    float v;
    int32_t i;
} vi;

/* Descending by value, ascending by index among ties. */
static int cmp_vi_desc(const void *a, const void *b) {
    const vi *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* mlx-lm's apply_top_p read literally: full sort, mass above each rank. */
static void ref_top_p(float *lp, int64_t n, float top_p, vi *tmp) {
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        tmp[i] = (vi){lp[i], (int32_t)i};
        total += exp((double)lp[i]);
    }
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_vi_desc);
    double target = (double)top_p * total, above = 0.0;
    float thr = tmp[n - 1].v;
    for (int64_t r = 0; r < n; r++) {
        if (above >= target) break;
        thr = tmp[r].v; /* the last rank whose mass above is < target */
        above += exp((double)tmp[r].v);
    }
    for (int64_t i = 0; i < n; i++)
        if (lp[i] < thr) lp[i] = -INFINITY;
}

static void ref_top_k(float *lp, int64_t n, int64_t k, vi *tmp) {
    for (int64_t i = 0; i < n; i++) tmp[i] = (vi){lp[i], (int32_t)i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_vi_desc);
    for (int64_t r = k; r < n; r++) lp[tmp[r].i] = -INFINITY;
}

/* Deterministic test data: xoshiro from the sampler itself. */
static float gauss(uint64_t st[4]) {
    double u1 = rng_uniform(st), u2 = rng_uniform(st);
    return (float)(sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
}

/* V logits of one of several shapes; mode 2 quantizes so that many values
 * tie (and share long key prefixes), mode 3 has a long flat tail. */
static void make_logits(float *x, int64_t n, int mode, uint64_t seed) {
    uint64_t st[4];
    rng_seed(st, seed);
    for (int64_t i = 0; i < n; i++) {
        float g = gauss(st);
        switch (mode) {
        case 0: x[i] = 3.0f * g; break;
        case 1: x[i] = 0.3f * g; break;
        case 2: x[i] = roundf(4.0f * g) * 0.5f; break;
        default: x[i] = i < 50 ? 8.0f + g : -2.0f; break;
        }
    }
}

static int same_rows(const float *a, const float *b, int64_t n, int64_t *where) {
    for (int64_t i = 0; i < n; i++)
        if (!(a[i] == b[i] || (isinf(a[i]) && isinf(b[i]) && a[i] == b[i]))) {
            *where = i;
            return 0;
        }
    return 1;
}

/* ---- sampling helpers ---------------------------------------------------- */

static int32_t sample_copy(sampler *s, const float *logits, int64_t n, float *work) {
    memcpy(work, logits, (size_t)n * sizeof *work);
    return sampler_sample(s, work, NULL, 0);
}

int main(void) {
    cJSON *fx = load_fixture();

    for (TEST_CASE("optiq_sampling_default is greedy with everything off")) {
        optiq_sampling p = optiq_sampling_default();
        CHECK(p.temperature == 0.0f);
        CHECK(p.top_p == 1.0f);
        CHECK(p.top_k == 0);
        CHECK(p.min_p == 0.0f);
        CHECK(p.repetition_penalty == 1.0f || p.repetition_penalty == 0.0f);
        CHECK(p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f);
        CHECK(p.penalty_context == 20);
        CHECK(p.seed == 0);
    }

    for (TEST_CASE("fixture tests/fixtures/sampler/filters.json loads")) {
        CHECKF(fx != NULL, "cannot read or parse %s", test_path("tests/fixtures/sampler/filters.json"));
    }

    if (fx) {
        for (TEST_CASE("logits - logsumexp matches mlx-lm (1e-5)")) {
            int ran = 0;
            const cJSON *v;
            cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(fx, "logprobs")) {
                float x[MAXV], want[MAXV];
                int n = read_floats(cJSON_GetObjectItemCaseSensitive(v, "logits"), x, MAXV);
                int m = read_floats(cJSON_GetObjectItemCaseSensitive(v, "logprobs"), want, MAXV);
                CHECK(n > 0 && n == m);
                if (n <= 0 || n != m) continue;
                to_logprobs(x, n, NULL);
                for (int i = 0; i < n; i++)
                    CHECKF(close_enough(x[i], want[i]), "%s[%d]: %g, mlx-lm %g", str(v, "name"), i, (double)x[i],
                           (double)want[i]);
                ran++;
            }
            CHECKF(ran >= 5, "only %d vectors", ran);
        }

        const char *kinds[] = {"top_p", "min_p", "top_k", "chain"};
        for (int k = 0; k < 4; k++) {
            char name[96];
            snprintf(name, sizeof name, "%s filter matches mlx-lm's (kept set, values to 1e-5)", kinds[k]);
            for (TEST_CASE(name)) {
                int ran = check_filter_cases(fx, kinds[k]);
                CHECKF(ran >= 4, "only %d cases of %s", ran, kinds[k]);
            }
        }

        for (TEST_CASE("penalties match mlx-lm's logits processors; greedy token agrees")) {
            int ran = 0;
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "penalties")) {
                float x[MAXV], want[MAXV];
                int n = read_floats(cJSON_GetObjectItemCaseSensitive(c, "logits"), x, MAXV);
                int m = read_floats(cJSON_GetObjectItemCaseSensitive(c, "expected"), want, MAXV);
                int32_t hist[256];
                size_t nh = 0;
                const cJSON *h;
                cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(c, "history")) if (nh < 256) hist[nh++] =
                    (int32_t)h->valueint;
                CHECK(n > 0 && n == m);
                if (n <= 0 || n != m) continue;
                optiq_sampling p = optiq_sampling_default();
                p.repetition_penalty = (float)num(c, "repetition_penalty");
                p.presence_penalty = (float)num(c, "presence_penalty");
                p.frequency_penalty = (float)num(c, "frequency_penalty");
                p.penalty_context = (int)num(c, "context");
                sampler *s = sampler_new(&p, n);
                CHECK(s != NULL);
                if (!s) continue;
                float y[MAXV];
                memcpy(y, x, sizeof x);
                apply_penalties(&s->p, n, y, hist, nh, s->seen);
                for (int i = 0; i < n; i++)
                    CHECKF(close_enough(y[i], want[i]), "%s[%d]: %g, mlx-lm %g", str(c, "name"), i, (double)y[i],
                           (double)want[i]);
                int clean = 1;
                for (int i = 0; i < n; i++) clean &= s->seen[i] == 0;
                CHECKF(clean, "%s: marks left behind", str(c, "name"));
                int32_t tok = sampler_sample(s, x, hist, nh); /* temperature 0 */
                CHECKF(tok == (int32_t)num(c, "argmax"), "%s: greedy %d, mlx-lm %d", str(c, "name"), tok,
                       (int)num(c, "argmax"));
                sampler_free(s);
                ran++;
            }
            CHECKF(ran >= 8, "only %d cases", ran);
        }
    }

    for (TEST_CASE("penalties: ids outside the vocabulary are ignored; empty history is a no-op")) {
        optiq_sampling p = optiq_sampling_default();
        p.repetition_penalty = 2.0f;
        p.presence_penalty = 1.0f;
        p.frequency_penalty = 1.0f;
        float x[4] = {1, 2, 3, 4};
        int32_t hist[] = {-1, 4, 1000, 2};
        uint8_t seen[4] = {0};
        apply_penalties(&p, 4, x, hist, 4, seen);
        CHECK(x[0] == 1 && x[1] == 2 && x[3] == 4);
        CHECK(x[2] == 3.0f / 2.0f - 1.0f - 1.0f);
        apply_penalties(&p, 4, x, NULL, 0, seen);
        CHECK(x[2] == -0.5f);
    }

    /* ---- radix walks against sorting ---- */

    enum { BIG = 262144 };
    float *a = malloc(BIG * sizeof *a), *b = malloc(BIG * sizeof *b);
    vi *tmp = malloc(BIG * sizeof *tmp);
    sampler *big = sampler_new(NULL, BIG);
    if (!a || !b || !tmp || !big) {
        printf("out of memory\n");
        return 1;
    }

    for (TEST_CASE("top_k by radix select equals a full sort (lowest index among ties), V up to 262144")) {
        const int64_t sizes[] = {BIG, 1000, 7};
        const int64_t ks[] = {1, 2, 40, 999, 6};
        for (int si = 0; si < 3; si++)
            for (int mode = 0; mode < 4; mode++)
                for (int ki = 0; ki < 5; ki++) {
                    int64_t n = sizes[si], k = ks[ki];
                    if (k >= n) continue;
                    make_logits(a, n, mode, 100 + (uint64_t)(si * 16 + mode));
                    to_logprobs(a, n, NULL);
                    memcpy(b, a, (size_t)n * sizeof *a);
                    filter_top_k(a, n, k, big);
                    ref_top_k(b, n, k, tmp);
                    int64_t at = -1;
                    CHECKF(same_rows(a, b, n, &at), "V=%lld mode %d k=%lld: differs at %lld", (long long)n, mode,
                           (long long)k, (long long)at);
                }
        /* fewer finite entries than k: the -inf ones fill up the k slots */
        float x[6] = {-INFINITY, 1.0f, -INFINITY, 0.5f, -INFINITY, -INFINITY};
        filter_top_k(x, 6, 4, big);
        CHECK(x[1] == 1.0f && x[3] == 0.5f && x[0] == -INFINITY);
    }

    for (TEST_CASE("top_p by radix walk equals mlx-lm's sorted definition, V up to 262144")) {
        const int64_t sizes[] = {BIG, 5000, 3};
        const float ps[] = {0.05f, 0.5f, 0.9f, 0.95f, 0.999f};
        for (int si = 0; si < 3; si++)
            for (int mode = 0; mode < 4; mode++)
                for (int pi = 0; pi < 5; pi++) {
                    int64_t n = sizes[si];
                    make_logits(a, n, mode, 200 + (uint64_t)(si * 16 + mode));
                    /* odd cases take the probabilities from to_logprobs, as sampler_sample does */
                    to_logprobs(a, n, pi % 2 ? big->prob : NULL);
                    memcpy(b, a, (size_t)n * sizeof *a);
                    filter_top_p(a, n, ps[pi], pi % 2, big);
                    ref_top_p(b, n, ps[pi], tmp);
                    int64_t at = -1;
                    CHECKF(same_rows(a, b, n, &at), "V=%lld mode %d top_p=%g: differs at %lld", (long long)n, mode,
                           (double)ps[pi], (long long)at);
                }
    }

    for (TEST_CASE("top_p keeps the boundary token and every token tied with it")) {
        /* probabilities 0.5, 0.29, 0.21: mass above the third is 0.79 */
        float x[3] = {logf(0.5f), logf(0.29f), logf(0.21f)};
        float y[3];
        memcpy(y, x, sizeof x);
        filter_top_p(y, 3, 0.8f, 0, big);
        CHECK(y[2] != -INFINITY); /* crosses 0.8: kept */
        memcpy(y, x, sizeof x);
        filter_top_p(y, 3, 0.75f, 0, big);
        CHECK(y[1] != -INFINITY && y[2] == -INFINITY);
        memcpy(y, x, sizeof x);
        filter_top_p(y, 3, 0.1f, 0, big);
        CHECK(y[0] != -INFINITY && y[1] == -INFINITY); /* the top token always survives */
        float t[5] = {-1.0f, -2.0f, -1.0f, -2.0f, -1.0f};
        to_logprobs(t, 5, NULL);
        filter_top_p(t, 5, 0.2f, 0, big);
        CHECK(t[0] != -INFINITY && t[2] != -INFINITY && t[4] != -INFINITY);
        CHECK(t[1] == -INFINITY && t[3] == -INFINITY);
    }

    /* ---- greedy ---- */

    for (TEST_CASE("greedy: argmax, first index among equal maxima")) {
        sampler *s = sampler_new(NULL, 6);
        CHECK(s != NULL);
        if (s) {
            float x[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 3.0f};
            CHECK(sampler_sample(s, x, NULL, 0) == 1);
            float y[6] = {-5, -4, -3, -2, -1, -0.5f};
            CHECK(sampler_sample(s, y, NULL, 0) == 5);
            sampler_free(s);
        }
    }

    for (TEST_CASE("greedy: NaN is never chosen; all -inf (or NaN) gives token 0; +inf wins")) {
        sampler *s = sampler_new(NULL, 5);
        CHECK(s != NULL);
        if (s) {
            float x[5] = {NAN, -INFINITY, 1.0f, NAN, 0.5f};
            CHECK(sampler_sample(s, x, NULL, 0) == 2);
            float y[5] = {-INFINITY, -INFINITY, NAN, -INFINITY, NAN};
            CHECK(sampler_sample(s, y, NULL, 0) == 0);
            float z[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
            CHECK(sampler_sample(s, z, NULL, 0) == 0);
            float w[5] = {1.0f, INFINITY, NAN, INFINITY, 2.0f};
            CHECK(sampler_sample(s, w, NULL, 0) == 1);
            float v[5] = {NAN, NAN, NAN, -3.0f, NAN};
            CHECK(sampler_sample(s, v, NULL, 0) == 3);
            sampler_free(s);
        }
        /* the same rules when sampling */
        optiq_sampling p = optiq_sampling_default();
        p.temperature = 1.0f;
        p.top_p = 0.9f;
        p.top_k = 3;
        p.min_p = 0.05f;
        s = sampler_new(&p, 5);
        CHECK(s != NULL);
        if (s) {
            for (int r = 0; r < 200; r++) {
                float x[5] = {NAN, -INFINITY, 1.0f, NAN, 0.5f};
                int32_t t = sampler_sample(s, x, NULL, 0);
                CHECKF(t == 2 || t == 4, "drew %d", t);
                float z[5] = {-INFINITY, NAN, -INFINITY, -INFINITY, -INFINITY};
                CHECK(sampler_sample(s, z, NULL, 0) == 0);
                float w[5] = {1.0f, 5.0f, NAN, INFINITY, INFINITY};
                CHECK(sampler_sample(s, w, NULL, 0) == 3);
            }
            sampler_free(s);
        }
    }

    /* ---- the draw ---- */

    enum { NV = 16 };
    float base[NV], work[NV];
    make_logits(base, NV, 0, 7);

    for (TEST_CASE("sampling: a seed gives the same sequence twice (new sampler and sampler_reset)")) {
        optiq_sampling p = optiq_sampling_default();
        p.temperature = 0.8f;
        p.seed = 12345;
        sampler *s1 = sampler_new(&p, NV), *s2 = sampler_new(&p, NV);
        CHECK(s1 && s2);
        if (s1 && s2) {
            int32_t seq[500];
            int same = 1;
            for (int i = 0; i < 500; i++) seq[i] = sample_copy(s1, base, NV, work);
            for (int i = 0; i < 500; i++) same &= sample_copy(s2, base, NV, work) == seq[i];
            CHECK(same);
            sampler_reset(s1);
            same = 1;
            for (int i = 0; i < 500; i++) same &= sample_copy(s1, base, NV, work) == seq[i];
            CHECK(same);
        }
        sampler_free(s1);
        sampler_free(s2);
    }

    for (TEST_CASE("sampling: different seeds give different sequences")) {
        optiq_sampling p = optiq_sampling_default();
        p.temperature = 1.0f;
        float flat[NV] = {0};
        int32_t seqs[4][100];
        for (int k = 0; k < 4; k++) {
            p.seed = (uint64_t)k;
            sampler *s = sampler_new(&p, NV);
            CHECK(s != NULL);
            if (!s) break;
            for (int i = 0; i < 100; i++) seqs[k][i] = sample_copy(s, flat, NV, work);
            sampler_free(s);
        }
        for (int x = 0; x < 4; x++)
            for (int y = x + 1; y < 4; y++)
                CHECKF(memcmp(seqs[x], seqs[y], sizeof seqs[x]) != 0, "seeds %d and %d agree", x, y);
    }

    /* Frequencies: with N draws each count is binomial, sd sqrt(N p (1-p)).
     * The tolerance is 5 sd per token (plus one count); the seed is fixed so
     * the result is deterministic, and 5 sd leaves a wide margin for any
     * seed (two-sided tail ~6e-7 per token). Excluded tokens must never appear. */
    for (TEST_CASE("sampling: frequencies over 20000 draws match softmax(logprobs / temp) within 5 sd")) {
        const struct {
            float temp, top_p, min_p;
            int top_k;
        } cfg[] = {{1.0f, 1.0f, 0.0f, 0}, {0.7f, 1.0f, 0.0f, 0}, {1.6f, 1.0f, 0.0f, 0},
                   {0.9f, 0.8f, 0.0f, 0}, {1.0f, 1.0f, 0.0f, 5},  {1.2f, 0.95f, 0.05f, 6}};
        for (int c = 0; c < 6; c++) {
            optiq_sampling p = optiq_sampling_default();
            p.temperature = cfg[c].temp;
            p.top_p = cfg[c].top_p;
            p.min_p = cfg[c].min_p;
            p.top_k = cfg[c].top_k;
            p.seed = 99 + (uint64_t)c;
            sampler *s = sampler_new(&p, NV);
            CHECK(s != NULL);
            if (!s) continue;
            /* expected distribution: the filters on the log-probs, then softmax(lp / temp) in double */
            float lp[NV];
            memcpy(lp, base, sizeof lp);
            to_logprobs(lp, NV, NULL);
            apply_filters(s, lp, 0);
            double pr[NV], z = 0;
            for (int i = 0; i < NV; i++) z += pr[i] = lp[i] == -INFINITY ? 0.0 : exp((double)lp[i] / cfg[c].temp);
            int counts[NV] = {0};
            const int N = 20000;
            for (int r = 0; r < N; r++) counts[sample_copy(s, base, NV, work)]++;
            for (int i = 0; i < NV; i++) {
                double q = pr[i] / z, sd = sqrt(N * q * (1 - q));
                if (q == 0.0)
                    CHECKF(counts[i] == 0, "config %d: filtered token %d drawn %d times", c, i, counts[i]);
                else
                    CHECKF(fabs(counts[i] - N * q) <= 5 * sd + 1, "config %d token %d: %d draws, expected %.1f (sd %.1f)",
                           c, i, counts[i], N * q, sd);
            }
            sampler_free(s);
        }
    }

    for (TEST_CASE("sampling: top_k = 1 and a tiny temperature behave like greedy")) {
        optiq_sampling g = optiq_sampling_default();
        optiq_sampling k1 = g, cold = g, colder = g;
        k1.temperature = 1.5f;
        k1.top_k = 1;
        cold.temperature = 1e-3f;
        colder.temperature = 1e-30f; /* 1 / temp overflows float32: the argmax, the limit */
        sampler *sg = sampler_new(&g, 1000), *sk = sampler_new(&k1, 1000), *sc = sampler_new(&cold, 1000),
                *sz = sampler_new(&colder, 1000);
        float *x = malloc(1000 * sizeof *x), *y = malloc(1000 * sizeof *y);
        CHECK(sg && sk && sc && sz && x && y);
        if (sg && sk && sc && sz && x && y) {
            int agree_k = 1, agree_c = 1, agree_z = 1;
            for (int r = 0; r < 200; r++) {
                make_logits(x, 1000, r % 3, 5000 + (uint64_t)r);
                /* a maximum 0.05 above the rest: at temp 1e-3 the runner-up weighs exp(-50) */
                int j = (r * 37) % 1000;
                x[j] = x[argmax_first(x, 1000)] + 0.05f;
                memcpy(y, x, 1000 * sizeof *x);
                int32_t want = sampler_sample(sg, y, NULL, 0);
                memcpy(y, x, 1000 * sizeof *x);
                agree_k &= sampler_sample(sk, y, NULL, 0) == want;
                memcpy(y, x, 1000 * sizeof *x);
                agree_c &= sampler_sample(sc, y, NULL, 0) == want;
                memcpy(y, x, 1000 * sizeof *x);
                agree_z &= sampler_sample(sz, y, NULL, 0) == want;
            }
            CHECK(agree_k);
            CHECK(agree_c);
            CHECK(agree_z);
        }
        free(x);
        free(y);
        sampler_free(sg);
        sampler_free(sk);
        sampler_free(sc);
        sampler_free(sz);
    }

    for (TEST_CASE("sampling on a 262144 vocabulary stays inside the filtered set")) {
        optiq_sampling p = optiq_sampling_default();
        p.temperature = 0.9f;
        p.top_p = 0.9f;
        p.top_k = 50;
        p.min_p = 0.02f;
        p.repetition_penalty = 1.1f;
        p.seed = 7;
        sampler *s = sampler_new(&p, BIG);
        CHECK(s != NULL);
        if (s) {
            int32_t hist[64];
            for (int i = 0; i < 64; i++) hist[i] = (int32_t)(i * 4099 % BIG);
            for (int r = 0; r < 20; r++) {
                make_logits(a, BIG, r % 4, 900 + (uint64_t)r);
                memcpy(b, a, BIG * sizeof *a);
                apply_penalties(&s->p, BIG, b, hist, 64, s->seen);
                to_logprobs(b, BIG, NULL);
                apply_filters(s, b, 0);
                int32_t t = sampler_sample(s, a, hist, 64);
                CHECKF(t >= 0 && t < BIG && b[t] != -INFINITY, "round %d drew %d outside the kept set", r, t);
            }
            sampler_free(s);
        }
    }

    for (TEST_CASE("sampler_new rejects a vocabulary size <= 0; a vocabulary of one gives 0")) {
        CHECK(sampler_new(NULL, 0) == NULL);
        CHECK(sampler_new(NULL, -3) == NULL);
        optiq_sampling p = optiq_sampling_default();
        p.temperature = 1.0f;
        p.top_p = 0.5f;
        p.top_k = 1;
        p.min_p = 0.5f;
        sampler *s = sampler_new(&p, 1);
        CHECK(s != NULL);
        if (s) {
            for (int r = 0; r < 10; r++) {
                float x = (float)r - 5.0f;
                int32_t h = 0;
                CHECK(sampler_sample(s, &x, &h, 1) == 0);
            }
            sampler_free(s);
        }
    }

    sampler_free(big);
    free(a);
    free(b);
    free(tmp);
    cJSON_Delete(fx);
    return test_finish();
}
