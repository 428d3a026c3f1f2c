/* mm_prompt.c — see mm_prompt.h. */
#include "vision/mm_prompt.h"

#include <stdlib.h>
#include <string.h>

optiq_status mm_expand(const mm_tokens *t, const int32_t *ids, size_t n, const int64_t *n_per_image, size_t n_images,
                       int32_t **out, size_t *n_out, optiq_error *err) {
    *out = NULL, *n_out = 0;
    size_t markers = 0;
    for (size_t i = 0; i < n; i++) markers += ids[i] == t->image_pad;
    if (markers < n_images)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "the prompt has %zu image placeholders for %zu images", markers,
                       n_images);
    if (t->wrap && markers > n_images)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "the prompt has %zu image placeholders for %zu images", markers,
                       n_images);
    /* which markers stay: the first n_images; the others go with their wrapper */
    char *drop = calloc(n ? n : 1, 1);
    if (!drop) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] != t->image_pad) continue;
        if (seen++ < n_images) continue;
        drop[i] = 1;
        if (i > 0 && ids[i - 1] == t->vision_start && t->vision_start >= 0) drop[i - 1] = 1;
        if (i + 1 < n && ids[i + 1] == t->vision_end && t->vision_end >= 0) drop[i + 1] = 1;
    }
    size_t total = 0;
    seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (drop[i]) continue;
        if (ids[i] == t->image_pad) {
            int64_t k = n_per_image[seen++];
            if (k <= 0 || (uint64_t)k > (uint64_t)1 << 30) {
                free(drop);
                return err_set(err, OPTIQ_ERR_INVALID_ARG, "image %zu: %lld tokens", seen, (long long)k);
            }
            total += (size_t)k + (t->wrap ? 2 : 0);
        } else
            total++;
    }
    int32_t *o = malloc((total ? total : 1) * sizeof *o);
    if (!o) {
        free(drop);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    size_t w = 0;
    seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (drop[i]) continue;
        if (ids[i] == t->image_pad) {
            if (t->wrap) o[w++] = t->boi;
            for (int64_t k = n_per_image[seen++]; k > 0; k--) o[w++] = t->image_pad;
            if (t->wrap) o[w++] = t->eoi;
        } else
            o[w++] = ids[i];
    }
    free(drop);
    *out = o, *n_out = total;
    return OPTIQ_OK;
}

optiq_status mm_positions(const mm_tokens *t, const int32_t *ids, size_t n, const int32_t *grid_thw, size_t n_images,
                          int64_t start, int32_t *pos, int64_t *next, optiq_error *err) {
    int32_t *pt = pos, *ph = pos + n, *pw = pos + 2 * n;
    int64_t p = start;
    size_t img = 0;
    if (!t->mrope) { /* one position per token; each run of image tokens is one image */
        if (start + (int64_t)n > INT32_MAX) return err_set(err, OPTIQ_ERR_CONTEXT, "positions out of range");
        for (size_t i = 0; i < n; i++) {
            pt[i] = ph[i] = pw[i] = (int32_t)(start + (int64_t)i);
            img += ids[i] == t->image_pad && (i == 0 || ids[i - 1] != t->image_pad);
        }
        if (img != n_images)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "%zu images given, the prompt places %zu", n_images, img);
        (void)grid_thw;
        *next = start + (int64_t)n;
        return OPTIQ_OK;
    }
    for (size_t i = 0; i < n;) {
        if (ids[i] != t->image_pad && ids[i] != t->video_pad) {
            if (p > INT32_MAX) return err_set(err, OPTIQ_ERR_CONTEXT, "position %lld out of range", (long long)p);
            pt[i] = ph[i] = pw[i] = (int32_t)p++;
            i++;
            continue;
        }
        if (img >= n_images)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "image tokens at %zu but only %zu images were given", i, n_images);
        const int32_t *g = grid_thw + 3 * img;
        if (t->merge <= 0 || g[0] <= 0 || g[1] <= 0 || g[2] <= 0 || g[1] % t->merge || g[2] % t->merge)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "image %zu: grid %d x %d x %d does not fit merge size %d", img,
                           g[0], g[1], g[2], t->merge);
        int64_t gt = g[0], gh = g[1] / t->merge, gw = g[2] / t->merge, len = gt * gh * gw;
        if ((int64_t)(n - i) < len)
            return err_set(err, OPTIQ_ERR_INVALID_ARG, "image %zu needs %lld tokens, the prompt has %zu left", img,
                           (long long)len, n - i);
        for (int64_t k = 0; k < len; k++)
            if (ids[i + (size_t)k] != ids[i])
                return err_set(err, OPTIQ_ERR_INVALID_ARG,
                               "image %zu: %lld placeholder tokens expected from index %zu, found a break after %lld",
                               img, (long long)len, i, (long long)k);
        int64_t big = gt > gh ? gt : gh;
        big = big > gw ? big : gw;
        if (p + big > INT32_MAX) return err_set(err, OPTIQ_ERR_CONTEXT, "position %lld out of range", (long long)p);
        size_t k = i;
        for (int64_t a = 0; a < gt; a++)
            for (int64_t b = 0; b < gh; b++)
                for (int64_t c = 0; c < gw; c++, k++) {
                    pt[k] = (int32_t)(p + a);
                    ph[k] = (int32_t)(p + b);
                    pw[k] = (int32_t)(p + c);
                }
        p += big;
        i += (size_t)len;
        img++;
    }
    if (img != n_images)
        return err_set(err, OPTIQ_ERR_INVALID_ARG, "%zu images given, the prompt places %zu", n_images, img);
    *next = p;
    return OPTIQ_OK;
}
