/* quant_config.c — see quant_config.h. */
#include "io/quant_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"

/* ---- parsing ------------------------------------------------------------ */

/* Optional positive integer field; absent, null or 0 mean "use the default"
 * (to_quantized's `group_size or default`). */
static optiq_status opt_int_field(const cJSON *obj, const char *key, const char *label, const char *where, int *out,
                                  int *given, optiq_error *err) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    int64_t v;
    *given = 0;
    if (!j || cJSON_IsNull(j)) return OPTIQ_OK;
    if (!json_as_int(j, &v) || v < 0 || v > 4096)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s%s%s is %s, expected a positive integer", label, where,
                       *where ? "." : "", key, cJSON_IsNumber(j) ? "out of range" : json_type_name(j));
    if (v == 0) return OPTIQ_OK;
    *out = (int)v;
    *given = 1;
    return OPTIQ_OK;
}

/* Format of an object (top level or per-module entry). Missing fields: mode
 * affine, bits / group size from the mode's defaults. */
static optiq_status parse_format(const cJSON *obj, const char *label, const char *where, qformat *out, unsigned *has,
                                 optiq_error *err) {
    qmode mode = QMODE_AFFINE;
    *has = 0;
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(obj, "mode");
    if (jm && !cJSON_IsNull(jm)) {
        int m = cJSON_IsString(jm) ? qmode_from_name(jm->valuestring) : -1;
        if (m < 0)
            return err_set(err, OPTIQ_ERR_FORMAT,
                           "%s: %s%smode is %s%.32s%s, expected one of \"affine\", \"mxfp4\", \"mxfp8\", \"nvfp4\"",
                           label, where, *where ? "." : "", cJSON_IsString(jm) ? "\"" : json_type_name(jm),
                           cJSON_IsString(jm) ? jm->valuestring : "", cJSON_IsString(jm) ? "\"" : "");
        mode = (qmode)m;
        *has |= QC_HAS_MODE;
    }
    qformat f = qformat_default(mode);
    int given;
    optiq_status st;
    if ((st = opt_int_field(obj, "bits", label, where, &f.bits, &given, err)) != OPTIQ_OK) return st;
    if (given) *has |= QC_HAS_BITS;
    if ((st = opt_int_field(obj, "group_size", label, where, &f.group_size, &given, err)) != OPTIQ_OK) return st;
    if (given) *has |= QC_HAS_GROUP_SIZE;
    *out = f;
    return OPTIQ_OK;
}

static optiq_status check_format(qformat f, const char *label, const char *what, optiq_error *err) {
    if (qformat_valid(f)) return OPTIQ_OK;
    if (f.mode == QMODE_AFFINE && f.bits == 1)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                       "%s: %s: 1-bit affine (mlx-vlm's own format) is not supported; MLX supports 2, 3, 4, 5, 6, 8 bits",
                       label, what);
    return err_set(err, OPTIQ_ERR_FORMAT,
                   "%s: %s: %s with %d bits and group size %d is not a format MLX supports "
                   "(affine: 2/3/4/5/6/8 bits, groups 32/64/128; mxfp4 4/32; mxfp8 8/32; nvfp4 4/16)",
                   label, what, qmode_name(f.mode), f.bits, f.group_size);
}

static int is_format_key(const char *k) {
    return strcmp(k, "bits") == 0 || strcmp(k, "group_size") == 0 || strcmp(k, "mode") == 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const qc_entry *)a)->module, ((const qc_entry *)b)->module);
}

optiq_status quant_config_parse(const cJSON *config, const char *label, quant_config *qc, optiq_error *err) {
    memset(qc, 0, sizeof *qc);
    qc->dflt = qformat_default(QMODE_AFFINE);
    if (!label) label = "config.json";
    optiq_status st;
    if ((st = json_get_bool_or(config, label, "quantize_activations", 0, &qc->quantize_activations, err)) != OPTIQ_OK)
        return st;

    const cJSON *q = cJSON_GetObjectItemCaseSensitive(config, "quantization");
    const char *src = "quantization";
    if (!q || cJSON_IsNull(q)) {
        q = cJSON_GetObjectItemCaseSensitive(config, "quantization_config");
        src = "quantization_config";
        if (!q || cJSON_IsNull(q)) {
            q = json_path(config, "text_config.quantization_config");
            src = "text_config.quantization_config";
        }
        if (!q || cJSON_IsNull(q)) return OPTIQ_OK; /* not quantized */
        const cJSON *qm = cJSON_IsObject(q) ? cJSON_GetObjectItemCaseSensitive(q, "quant_method") : NULL;
        if (qm)
            return err_set(err, OPTIQ_ERR_UNSUPPORTED,
                           "%s: %s.quant_method is %s%.40s%s: a non-MLX quantization that needs its tensors converted "
                           "(quantize the original model with mlx_lm.convert instead)",
                           label, src, cJSON_IsString(qm) ? "\"" : json_type_name(qm),
                           cJSON_IsString(qm) ? qm->valuestring : "", cJSON_IsString(qm) ? "\"" : "");
    }
    if (!cJSON_IsObject(q))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s is %s, expected an object", label, src, json_type_name(q));
    qc->present = 1;
    qc->source = src;
    unsigned has;
    if ((st = parse_format(q, label, src, &qc->dflt, &has, err)) != OPTIQ_OK) return st;
    if ((st = check_format(qc->dflt, label, src, err)) != OPTIQ_OK) return st;

    size_t n = 0;
    for (const cJSON *e = q->child; e; e = e->next)
        if (!is_format_key(e->string) && (cJSON_IsObject(e) || cJSON_IsBool(e))) n++;
    qc->entries = calloc(n ? n : 1, sizeof *qc->entries);
    if (!qc->entries) return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", label);
    char where[512];
    for (const cJSON *e = q->child; e; e = e->next) {
        if (is_format_key(e->string) || !(cJSON_IsObject(e) || cJSON_IsBool(e))) continue;
        qc_entry *en = &qc->entries[qc->n_entries];
        snprintf(where, sizeof where, "%s.%s", src, e->string);
        if (cJSON_IsObject(e)) {
            en->quantize = 1;
            if ((st = parse_format(e, label, where, &en->fmt, &en->has, err)) != OPTIQ_OK) goto fail;
            /* A complete entry is final; one that leaves bits or group size out
             * depends on the weight's rank and is checked at resolution. */
            if ((en->has & QC_HAS_BITS) && (en->has & QC_HAS_GROUP_SIZE) &&
                (st = check_format(en->fmt, label, where, err)) != OPTIQ_OK)
                goto fail;
        } else if (cJSON_IsTrue(e)) {
            en->quantize = 1;
            en->fmt = qc->dflt;
            en->has = QC_HAS_BITS | QC_HAS_GROUP_SIZE | QC_HAS_MODE;
        } else {
            qc->n_false++;
        }
        if (!(en->module = strdup(e->string))) {
            st = err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory", label);
            goto fail;
        }
        qc->n_entries++;
    }
    qsort(qc->entries, qc->n_entries, sizeof *qc->entries, cmp_entry);
    for (size_t i = 1; i < qc->n_entries; i++)
        if (strcmp(qc->entries[i - 1].module, qc->entries[i].module) == 0) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: %s has two entries for '%s'", label, src, qc->entries[i].module);
            goto fail;
        }
    return OPTIQ_OK;
fail:
    quant_config_free(qc);
    return st;
}

void quant_config_free(quant_config *qc) {
    if (!qc) return;
    for (size_t i = 0; i < qc->n_entries; i++) free(qc->entries[i].module);
    free(qc->entries);
    memset(qc, 0, sizeof *qc);
}

const qc_entry *quant_config_find(const quant_config *qc, const char *module) {
    size_t lo = 0, hi = qc->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(qc->entries[mid].module, module);
        if (c == 0) return &qc->entries[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- resolution --------------------------------------------------------- */

static int is_float(dtype d) { return d == DT_BF16 || d == DT_F16 || d == DT_F32 || d == DT_F64; }

static const char *shape_str(char *buf, size_t cap, const st_tensor *t) {
    size_t k = 0;
    buf[k++] = '[';
    for (int i = 0; i < t->ndim && k + 24 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    snprintf(buf + k, cap - k, "]");
    return buf;
}

/* tensor "X.<suffix>" */
static const st_tensor *member(const model_dir *md, const char *module, const char *suffix) {
    char name[1024];
    if ((size_t)snprintf(name, sizeof name, "%s.%s", module, suffix) >= sizeof name) return NULL;
    return model_dir_find(md, name, NULL);
}

static optiq_status check_module(const char *L, qmodule *m, optiq_error *err) {
    const st_tensor *w = m->weight, *s = m->scales;
    const char *X = m->name;
    qformat f = m->q.fmt;
    char a[128], b[128];
    if (w->ndim != 2 && w->ndim != 3)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.weight' has shape %s, expected 2-D [O, K*bits/32] or 3-D experts",
                       L, X, shape_str(a, sizeof a, w));
    if (s->ndim != w->ndim)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.scales' has shape %s but '%s.weight' has shape %s", L, X,
                       shape_str(a, sizeof a, s), X, shape_str(b, sizeof b, w));
    for (int i = 0; i < w->ndim - 1; i++)
        if (s->shape[i] != w->shape[i])
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.scales' has shape %s but '%s.weight' has shape %s", L, X,
                           shape_str(a, sizeof a, s), X, shape_str(b, sizeof b, w));
    int64_t kp = w->shape[w->ndim - 1], g = s->shape[s->ndim - 1];
    if ((kp * 32) % f.bits != 0 || kp * 32 / f.bits != g * f.group_size)
        return err_set(err, OPTIQ_ERR_FORMAT,
                       "%s: '%s': weight %s holds %lld %d-bit values per row but scales %s with group size %d cover "
                       "%lld (%s %d-bit, group %d)",
                       L, X, shape_str(a, sizeof a, w), (long long)(kp * 32 / f.bits), f.bits,
                       shape_str(b, sizeof b, s), f.group_size, (long long)(g * f.group_size), qmode_name(f.mode),
                       f.bits, f.group_size);
    if (f.mode == QMODE_AFFINE) {
        if (s->dtype != DT_BF16 && s->dtype != DT_F16 && s->dtype != DT_F32)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.scales' is %s, expected BF16, F16 or F32 for affine", L, X,
                           dtype_name(s->dtype));
        if (!m->biases)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s' is affine-quantized but '%s.biases' is missing", L, X, X);
        if (m->biases->dtype != s->dtype || m->biases->ndim != s->ndim ||
            memcmp(m->biases->shape, s->shape, (size_t)s->ndim * sizeof *s->shape) != 0)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.biases' is %s %s but '%s.scales' is %s %s", L, X,
                           dtype_name(m->biases->dtype), shape_str(a, sizeof a, m->biases), X, dtype_name(s->dtype),
                           shape_str(b, sizeof b, s));
    } else {
        if (s->dtype != DT_U8)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.scales' is %s, expected U8 for %s", L, X,
                           dtype_name(s->dtype), qmode_name(f.mode));
        if (m->biases)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s' is %s-quantized, which has no biases, but '%s.biases' exists",
                           L, X, qmode_name(f.mode), X);
    }
    if (m->bias) {
        const st_tensor *bt = m->bias;
        int ok = is_float(bt->dtype) && bt->ndim == w->ndim - 1;
        for (int i = 0; ok && i < bt->ndim; i++) ok = bt->shape[i] == w->shape[i];
        if (!ok)
            return err_set(err, OPTIQ_ERR_FORMAT, "%s: '%s.bias' is %s %s, expected a float vector of shape %s minus its last axis",
                           L, X, dtype_name(bt->dtype), shape_str(a, sizeof a, bt), shape_str(b, sizeof b, w));
    }
    qweight *q = &m->q;
    q->n_mats = w->ndim == 3 ? w->shape[0] : 1;
    q->rows = w->shape[w->ndim - 2];
    q->cols = kp * 32 / f.bits;
    q->w = w->data;
    q->scales = s->data;
    q->biases = m->biases ? m->biases->data : NULL;
    q->scale_dtype = s->dtype;
    m->params = w->nelem * 32 / (uint64_t)f.bits + (m->bias ? m->bias->nelem : 0);
    return OPTIQ_OK;
}

static int cmp_qmodule(const void *a, const void *b) {
    return strcmp(((const qmodule *)a)->name, ((const qmodule *)b)->name);
}

/* Module path of a tensor name ending in "." suffix: copy into buf, or 0. */
static int module_of(const char *name, const char *suffix, char *buf, size_t cap) {
    size_t n = strlen(name), s = strlen(suffix);
    if (n <= s + 1 || name[n - s - 1] != '.' || strcmp(name + n - s, suffix) != 0 || n - s - 1 >= cap) return 0;
    memcpy(buf, name, n - s - 1);
    buf[n - s - 1] = 0;
    return 1;
}

optiq_status quant_resolve(const model_dir *md, const quant_config *qc, quant_modules *out, optiq_error *err) {
    memset(out, 0, sizeof *out);
    const char *L = model_dir_config_path(md);
    size_t nt = model_dir_tensor_count(md);
    size_t cap_m = 16, cap_u = 16;
    out->mods = calloc(cap_m, sizeof *out->mods);
    out->unquantized = calloc(cap_u, sizeof *out->unquantized);
    if (!out->mods || !out->unquantized) goto nomem;
    char X[1024];
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < nt && st == OPTIQ_OK; i++) {
        const st_tensor *t = model_dir_tensor_at(md, i, NULL);
        if (module_of(t->name, "weight", X, sizeof X) && is_float(t->dtype) && !member(md, X, "scales")) {
            const qc_entry *e = qc ? quant_config_find(qc, X) : NULL;
            if (e && e->quantize) {
                st = err_set(err, OPTIQ_ERR_FORMAT,
                             "%s: %s.%s asks for %d-bit %s but '%s.weight' is %s and '%s.scales' is missing", L,
                             qc->source, X, e->fmt.bits, qmode_name(e->fmt.mode), X, dtype_name(t->dtype), X);
                break;
            }
            if (out->n_unquantized == cap_u) {
                char **nu = realloc(out->unquantized, 2 * cap_u * sizeof *nu);
                if (!nu) goto nomem;
                out->unquantized = nu, cap_u *= 2;
            }
            if (!(out->unquantized[out->n_unquantized] = strdup(X))) goto nomem;
            out->n_unquantized++;
            continue;
        }
        if (!module_of(t->name, "scales", X, sizeof X)) continue;
        const st_tensor *w = member(md, X, "weight");
        const qc_entry *e = qc ? quant_config_find(qc, X) : NULL;
        if (!w) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: tensor '%s' has no '%s.weight' beside it", model_dir_path(md),
                         t->name, X);
            break;
        }
        if (w->dtype != DT_U32) {
            if (e && e->quantize)
                st = err_set(err, OPTIQ_ERR_FORMAT, "%s: %s.%s asks for %d-bit %s but '%s.weight' is %s, expected U32", L,
                             qc->source, X, e->fmt.bits, qmode_name(e->fmt.mode), X, dtype_name(w->dtype));
            continue; /* a module with a parameter of its own named "scales" */
        }
        if (e && !e->quantize) {
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: %s.%s is false (not quantized) but '%s.scales' exists", L,
                         qc ? qc->source : "quantization", X, X);
            break;
        }
        if (!qc || !qc->present) {
            st = err_set(err, OPTIQ_ERR_FORMAT,
                         "%s: '%s' is quantized ('%s.scales', U32 weight) but config.json has no quantization object",
                         L, X, X);
            break;
        }
        if (out->n == cap_m) {
            qmodule *nm = realloc(out->mods, 2 * cap_m * sizeof *nm);
            if (!nm) goto nomem;
            out->mods = nm, cap_m *= 2;
        }
        qmodule *m = &out->mods[out->n];
        memset(m, 0, sizeof *m);
        if (!(m->name = strdup(X))) goto nomem;
        out->n++;
        m->weight = w;
        m->scales = t;
        m->biases = member(md, X, "biases");
        m->bias = member(md, X, "bias");
        qformat f = qc->dflt;
        if (e) {
            f = e->fmt;
            m->from_entry = 1;
            if (w->ndim == 3) { /* SwitchLinear.to_quantized(group_size=64, bits=4, mode) */
                if (!(e->has & QC_HAS_BITS)) f.bits = 4;
                if (!(e->has & QC_HAS_GROUP_SIZE)) f.group_size = 64;
            }
        }
        m->q.fmt = f;
        char what[1100];
        snprintf(what, sizeof what, "module '%s'", X);
        if ((st = check_format(f, L, what, err)) != OPTIQ_OK) break;
        st = check_module(L, m, err);
    }
    /* an entry that asks for quantization of a packed weight without scales */
    for (size_t i = 0; qc && st == OPTIQ_OK && i < qc->n_entries; i++) {
        const qc_entry *e = &qc->entries[i];
        const st_tensor *w;
        if (e->quantize && (w = member(md, e->module, "weight")) && w->dtype == DT_U32 && !member(md, e->module, "scales"))
            st = err_set(err, OPTIQ_ERR_FORMAT, "%s: %s.%s is quantized but '%s.scales' is missing", L, qc->source,
                         e->module, e->module);
    }
    if (st != OPTIQ_OK) {
        quant_modules_free(out);
        return st;
    }
    qsort(out->mods, out->n, sizeof *out->mods, cmp_qmodule);
    return OPTIQ_OK;
nomem:
    quant_modules_free(out);
    return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory resolving quantized modules", model_dir_path(md));
}

void quant_modules_free(quant_modules *qm) {
    if (!qm) return;
    for (size_t i = 0; i < qm->n; i++) free(qm->mods[i].name);
    for (size_t i = 0; i < qm->n_unquantized; i++) free(qm->unquantized[i]);
    free(qm->mods);
    free(qm->unquantized);
    memset(qm, 0, sizeof *qm);
}

const qmodule *quant_modules_find(const quant_modules *qm, const char *name) {
    size_t lo = 0, hi = qm->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(qm->mods[mid].name, name);
        if (c == 0) return &qm->mods[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- parameter count ---------------------------------------------------- */

/* Set of module paths, as (pointer, length) into tensor names. */
typedef struct pset { const char **p; size_t *n; size_t cap; } pset;

static uint64_t hash_span(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void pset_add(pset *s, const char *p, size_t n) {
    size_t h = (size_t)hash_span(p, n) & (s->cap - 1);
    while (s->p[h]) {
        if (s->n[h] == n && memcmp(s->p[h], p, n) == 0) return;
        h = (h + 1) & (s->cap - 1);
    }
    s->p[h] = p, s->n[h] = n;
}

static int pset_has(const pset *s, const char *p, size_t n) {
    size_t h = (size_t)hash_span(p, n) & (s->cap - 1);
    while (s->p[h]) {
        if (s->n[h] == n && memcmp(s->p[h], p, n) == 0) return 1;
        h = (h + 1) & (s->cap - 1);
    }
    return 0;
}

optiq_status quant_parameter_count(const model_dir *md, const quant_modules *qm, uint64_t *out, optiq_error *err) {
    size_t nt = model_dir_tensor_count(md);
    /* every strict ancestor of every module is a non-leaf; "" is the root */
    size_t dots = 1, cap = 64; /* distinct ancestors <= number of '.' in all names, + the root */
    for (size_t i = 0; i < nt; i++)
        for (const char *p = model_dir_tensor_at(md, i, NULL)->name; *p; p++) dots += *p == '.';
    while (cap < 2 * dots) cap *= 2;
    static const char root[] = "";
    pset s = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(size_t)), cap};
    *out = 0;
    if (!s.p || !s.n) {
        free(s.p), free(s.n);
        return err_set(err, OPTIQ_ERR_NOMEM, "%s: out of memory counting parameters", model_dir_path(md));
    }
    for (size_t i = 0; i < nt; i++) {
        const char *name = model_dir_tensor_at(md, i, NULL)->name;
        const char *last = strrchr(name, '.');
        if (!last) continue;
        pset_add(&s, root, 0);
        for (const char *p = name; p < last; p++)
            if (*p == '.') pset_add(&s, name, (size_t)(p - name));
    }
    uint64_t total = 0;
    char X[1024];
    for (size_t i = 0; i < nt; i++) {
        const st_tensor *t = model_dir_tensor_at(md, i, NULL);
        const char *last = strrchr(t->name, '.');
        size_t mlen = last ? (size_t)(last - t->name) : 0;
        if (pset_has(&s, last ? t->name : root, mlen)) continue; /* held by a non-leaf module */
        if (qm && mlen < sizeof X) {
            memcpy(X, t->name, mlen);
            X[mlen] = 0;
            const qmodule *m = quant_modules_find(qm, X);
            if (m) {
                if (strcmp(last + 1, "weight") == 0) total += m->params; /* once per module */
                continue;
            }
        }
        total += t->nelem;
    }
    free(s.p);
    free(s.n);
    *out = total;
    return OPTIQ_OK;
}
