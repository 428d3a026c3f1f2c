/* sidecar.c — see sidecar.h. */
#include "vision/sidecar.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "optiq.h"

#include "base/dtype.h"
#include "io/json.h"
#include "io/safetensors.h"

#define SIDECAR_NAME "optiq_vision.safetensors"
#define INDEX_NAME "model.safetensors.index.json"

/* First components of multimodal tensor names (after "model." / "encoder."). */
static const char *const MM_PREFIXES[] = {"vision_tower.",   "audio_tower.",    "multi_modal_projector.",
                                          "embed_vision.",   "embed_audio.",    "vision_embedder.",
                                          "audio_embedder.", "visual.",         "vision_adapter.",
                                          "vision_projection.", "merger."};

/* config.json keys a tower needs to be rebuilt (copied from the base when present). */
static const char *const MM_CONFIG_KEYS[] = {
    "vision_config",        "audio_config",      "image_token_id",   "audio_token_id",
    "video_token_id",       "vision_start_token_id", "vision_end_token_id", "boi_token_id",
    "eoi_token_id",         "boa_token_id",      "eoa_token_index",  "eoa_token_id",
    "image_token_index",    "spatial_merge_size", "vision_feature_layer", "multimodal_projector_bias",
    "image_start_id",       "image_end_id",      "slice_start_id",   "slice_end_id",
    "newline_id",           "insert_layer_id",   "downsample_mode",  "mrope_mode"};

static const char *const PROCESSOR_FILES[] = {"preprocessor_config.json", "processor_config.json",
                                              "video_preprocessor_config.json"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- names ---------------------------------------------------------------- */

static const char *strip_containers(const char *k) {
    if (strncmp(k, "model.", 6) == 0) k += 6;
    if (strncmp(k, "encoder.", 8) == 0) k += 8;
    return k;
}

int sidecar_is_mm_key(const char *name) {
    const char *k = strip_containers(name);
    for (size_t i = 0; i < COUNT(MM_PREFIXES); i++)
        if (strncmp(k, MM_PREFIXES[i], strlen(MM_PREFIXES[i])) == 0) return 1;
    return 0;
}

/* The name inside the sidecar (malloc'd). */
static char *store_key(const char *name) {
    const char *k = strip_containers(name);
    if (strncmp(k, "visual.", 7) == 0) {
        size_t n = strlen(k + 7);
        char *s = malloc(13 + n + 1);
        if (s) memcpy(s, "vision_tower.", 13), memcpy(s + 13, k + 7, n + 1);
        return s;
    }
    return strdup(k);
}

/* ---- files ---------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}
static int is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Write data to path through a temporary file renamed over it. */
static optiq_status write_file(const char *path, const void *data, size_t n, optiq_error *err) {
    size_t l = strlen(path);
    char *tmp = malloc(l + 16);
    if (!tmp) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    snprintf(tmp, l + 16, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    optiq_status st = OPTIQ_OK;
    if (!f)
        st = err_set(err, OPTIQ_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    else {
        int bad = fwrite(data, 1, n, f) != n;
        bad |= fclose(f) != 0;
        if (bad || rename(tmp, path) != 0) {
            st = err_set(err, OPTIQ_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    free(tmp);
    return st;
}

/* ---- JSON as Python reads and writes it ------------------------------------
 * json.load keeps 10000.0 a float and json.dump writes it back as "10000.0";
 * cJSON keeps only a double and json_print_python writes an integral double
 * as an integer ("10000"). So that config.json comes out byte for byte as the
 * original builder writes it, the number items the source text writes as float
 * literals (with '.', 'e' or 'E') are marked with a private type bit while the
 * file is read (cJSON tests types on the low byte, and cJSON_Duplicate keeps
 * the bit), and ".0" is put back after the integral ones when the tree is
 * printed. Number tokens of a text and number items of its tree in pre-order
 * pair up one to one: both are in document order. */

#define FLOAT_LITERAL (1 << 13)

/* Number items of j in pre-order (document order), appended to *v. */
static int number_items(cJSON *j, cJSON ***v, size_t *n, size_t *cap) {
    if (cJSON_IsNumber(j)) {
        if (*n == *cap) {
            *cap = *cap ? 2 * *cap : 64;
            cJSON **q = realloc(*v, *cap * sizeof *q);
            if (!q) return -1;
            *v = q;
        }
        (*v)[(*n)++] = j;
    }
    for (cJSON *c = j->child; c; c = c->next)
        if (number_items(c, v, n, cap)) return -1;
    return 0;
}

/* Next number token of JSON text at or after *pos (strings skipped): its start
 * and length, or 0 at the end. */
static int next_number(const char *s, size_t len, size_t *pos, size_t *start, size_t *n) {
    size_t i = *pos;
    while (i < len) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\') i++;
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t b = i;
            while (i < len && s[i] && strchr("+-.eE0123456789", s[i])) i++;
            *start = b, *n = i - b, *pos = i;
            return 1;
        } else
            i++;
    }
    *pos = len;
    return 0;
}

static int is_float_token(const char *t, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (t[i] == '.' || t[i] == 'e' || t[i] == 'E') return 1;
    return 0;
}

/* Read and parse a JSON file, marking its float literals. */
static optiq_status load_json(const char *path, cJSON **out, optiq_error *err) {
    char *text = NULL;
    size_t len = 0;
    cJSON **items = NULL;
    size_t n = 0, cap = 0;
    *out = NULL;
    optiq_status st = json_read_file(path, JSON_DEFAULT_CAP, &text, &len, err);
    if (!st) st = json_parse(text, len, path, out, err);
    if (!st && number_items(*out, &items, &n, &cap)) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    size_t pos = 0, b, l;
    for (size_t k = 0; !st && k < n && next_number(text, len, &pos, &b, &l); k++)
        if (is_float_token(text + b, l)) items[k]->type |= FLOAT_LITERAL;
    if (st) cJSON_Delete(*out), *out = NULL;
    free(items), free(text);
    return st;
}

/* The tree as Python's json.dump(indent=2) writes it, float literals included. */
static char *print_python(cJSON *j) {
    char *text = json_print_python(j, 2);
    cJSON **items = NULL;
    size_t n = 0, cap = 0;
    if (!text || number_items(j, &items, &n, &cap)) {
        free(text), free(items);
        return NULL;
    }
    size_t len = strlen(text), extra = 0;
    for (size_t k = 0; k < n; k++) extra += (items[k]->type & FLOAT_LITERAL) ? 3 : 0;
    char *o = malloc(len + extra + 1);
    size_t pos = 0, from = 0, w = 0, b, l;
    for (size_t k = 0; o && k < n && next_number(text, len, &pos, &b, &l); k++) {
        if (!(items[k]->type & FLOAT_LITERAL) || is_float_token(text + b, l)) continue;
        memcpy(o + w, text + from, b + l - from), w += b + l - from, from = b + l;
        if (signbit(items[k]->valuedouble) && items[k]->valuedouble == 0 && text[b] != '-') {
            memcpy(o + w - l, "-0", 2), w += 1; /* Python writes -0.0; the printer wrote 0 */
        }
        memcpy(o + w, ".0", 2), w += 2;
    }
    if (o) memcpy(o + w, text + from, len - from + 1);
    free(text), free(items);
    return o;
}

static optiq_status write_json(const char *path, cJSON *j, optiq_error *err) {
    char *text = print_python(j);
    if (!text) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = write_file(path, text, strlen(text), err);
    free(text);
    return st;
}

/* ---- conversion ----------------------------------------------------------- */

/* The permutation (into perm, returns ndim) that makes a channel-first conv
 * weight channel-last, or 0 when the tensor stays as it is. Same cases and
 * guards as mlx-optiq's _sanitize_conv (idempotent on converted weights). */
static int conv_perm(const char *key, const st_tensor *t, int perm[ST_MAX_DIMS]) {
    const int64_t *s = t->shape;
    static const int P4[] = {0, 2, 3, 1}, P3[] = {0, 2, 1}, P5[] = {0, 2, 3, 4, 1};
    const int *p = NULL;
    if (strstr(key, "subsample_conv_projection") && strstr(key, "conv.weight") && t->ndim == 4 && s[2] == s[3])
        p = P4;
    else if (strstr(key, "depthwise_conv1d.weight") && t->ndim == 3 && s[1] == 1)
        p = P3;
    else if (strstr(key, "patch_embed.proj.weight") && t->ndim == 5 && s[4] != 3)
        p = P5;
    else if (strstr(key, "patch_conv.weight") && t->ndim == 4 && s[2] == s[3] && s[1] != s[2])
        p = P4;
    if (!p) return 0;
    for (int i = 0; i < t->ndim; i++) perm[i] = p[i];
    return t->ndim;
}

/* bf16 bytes of tensor t, permuted by perm (nperm == 0: none); shape out. */
static optiq_status convert(const st_tensor *t, const int *perm, int nperm, int64_t *shape, uint16_t **out,
                            optiq_error *err) {
    *out = NULL;
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
        return err_set(err, OPTIQ_ERR_UNSUPPORTED, "tensor %s is %s; the sidecar takes float tensors (bf16, f16, f32)",
                       t->name, dtype_name(t->dtype));
    uint16_t *o = malloc(t->nelem ? t->nelem * 2 : 1);
    if (!o) return err_set(err, OPTIQ_ERR_NOMEM, "tensor %s: out of memory", t->name);
    int64_t in_stride[ST_MAX_DIMS], idx[ST_MAX_DIMS] = {0};
    int nd = t->ndim;
    for (int i = 0; i < nd; i++) shape[i] = nperm ? t->shape[perm[i]] : t->shape[i];
    int64_t acc = 1;
    for (int i = nd - 1; i >= 0; i--) in_stride[i] = acc, acc *= t->shape[i];
    const uint8_t *src = t->data;
    for (uint64_t e = 0; e < t->nelem; e++) {
        /* output element e at index idx (over the output shape) reads input offset Σ idx[i]·stride[perm[i]] */
        int64_t off = 0;
        for (int i = 0; i < nd; i++) off += idx[i] * in_stride[nperm ? perm[i] : i];
        uint16_t h;
        if (t->dtype == DT_BF16)
            memcpy(&h, src + 2 * off, 2);
        else if (t->dtype == DT_F16) {
            memcpy(&h, src + 2 * off, 2);
            h = f32_to_bf16(f16_to_f32(h));
        } else {
            float f;
            memcpy(&f, src + 4 * off, 4);
            h = f32_to_bf16(f);
        }
        o[e] = h;
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < shape[i]) break;
            idx[i] = 0;
        }
    }
    *out = o;
    return OPTIQ_OK;
}

/* ---- the base's shards ---------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Shard file names (sorted, unique) holding multimodal tensors. */
static optiq_status base_shards(const char *base, char ***names, size_t *n, optiq_error *err) {
    *names = NULL, *n = 0;
    char *ip = path_join(base, INDEX_NAME);
    if (!ip) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = OPTIQ_OK;
    if (is_file(ip)) {
        cJSON *idx = NULL;
        const cJSON *wm = NULL;
        st = json_load_file(ip, NULL, 0, &idx, err);
        if (!st) st = json_get_object(idx, INDEX_NAME, "weight_map", &wm, err);
        size_t cap = 0;
        for (const cJSON *e = wm ? wm->child : NULL; e && !st; e = e->next) {
            if (!sidecar_is_mm_key(e->string)) continue;
            if (!cJSON_IsString(e)) {
                st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name", ip, e->string);
                break;
            }
            int seen = 0;
            for (size_t i = 0; i < *n && !seen; i++) seen = strcmp((*names)[i], e->valuestring) == 0;
            if (seen) continue;
            if (*n == cap) {
                cap = cap ? 2 * cap : 8;
                char **q = realloc(*names, cap * sizeof *q);
                if (!q) {
                    st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
                    break;
                }
                *names = q;
            }
            if (!((*names)[*n] = strdup(e->valuestring))) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
            else (*n)++;
        }
        cJSON_Delete(idx);
    } else {
        /* no index: the first model*.safetensors, as the original */
        DIR *d = opendir(base);
        if (!d) st = err_set(err, OPTIQ_ERR_IO, "%s: cannot list: %s", base, strerror(errno));
        char *best = NULL;
        for (struct dirent *de; d && (de = readdir(d));) {
            size_t l = strlen(de->d_name);
            if (strncmp(de->d_name, "model", 5) || l < 17 || strcmp(de->d_name + l - 12, ".safetensors")) continue;
            if (!best || strcmp(de->d_name, best) < 0) {
                free(best);
                best = strdup(de->d_name);
            }
        }
        if (d) closedir(d);
        if (best) {
            *names = malloc(sizeof **names);
            if (*names) (*names)[0] = best, *n = 1;
            else free(best), st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        }
    }
    free(ip);
    if (*n) qsort(*names, *n, sizeof **names, cmp_str);
    return st;
}

/* ---- the build ------------------------------------------------------------ */

typedef struct mm_tensor {
    char *key;
    dtype dt;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint16_t *data;
} mm_tensor;

static int cmp_key(const void *a, const void *b) { return strcmp(((const mm_tensor *)a)->key, ((const mm_tensor *)b)->key); }

/* Collect and convert the multimodal tensors of the base's shards. */
static optiq_status collect(const char *base, mm_tensor **out, size_t *n_out, optiq_error *err) {
    char **shards = NULL;
    size_t n_shards = 0, n = 0, cap = 0;
    mm_tensor *t = NULL;
    optiq_status st = base_shards(base, &shards, &n_shards, err);
    for (size_t s = 0; s < n_shards && !st; s++) {
        char *p = path_join(base, shards[s]);
        st_file *f = NULL;
        st = p ? st_open(p, &f, err) : err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        free(p);
        for (size_t i = 0; f && i < st_count(f) && !st; i++) {
            const st_tensor *x = st_at(f, i);
            if (!sidecar_is_mm_key(x->name)) continue;
            char *key = store_key(x->name);
            if (!key) {
                st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
                break;
            }
            size_t slot = n;
            for (size_t j = 0; j < n; j++)
                if (strcmp(t[j].key, key) == 0) slot = j; /* a later shard wins, as a dict update */
            if (slot == n) {
                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    mm_tensor *q = realloc(t, cap * sizeof *q);
                    if (!q) {
                        free(key);
                        st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
                        break;
                    }
                    t = q;
                }
                memset(&t[n++], 0, sizeof *t);
            } else {
                free(t[slot].key), free(t[slot].data);
            }
            mm_tensor *m = &t[slot];
            m->key = key;
            m->dt = DT_BF16;
            m->ndim = x->ndim;
            int perm[ST_MAX_DIMS];
            int np = conv_perm(key, x, perm);
            st = convert(x, perm, np, m->shape, &m->data, err);
        }
        st_close(f);
    }
    for (size_t s = 0; s < n_shards; s++) free(shards[s]);
    free(shards);
    if (!st && n == 0) st = err_set(err, OPTIQ_ERR_INVALID_ARG, "no vision/audio tower weights found in %s; is it a multimodal base?", base);
    if (st) {
        for (size_t i = 0; i < n; i++) free(t[i].key), free(t[i].data);
        free(t);
        return st;
    }
    qsort(t, n, sizeof *t, cmp_key);
    *out = t, *n_out = n;
    return OPTIQ_OK;
}

/* Set obj[key] = v (replacing in place, else appended), taking v. */
static void set_item(cJSON *obj, const char *key, cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static optiq_status update_index(const char *quant, const mm_tensor *t, size_t n, int *updated, optiq_error *err) {
    *updated = 0;
    char *ip = path_join(quant, INDEX_NAME);
    if (!ip) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (!is_file(ip)) {
        free(ip);
        return OPTIQ_OK;
    }
    cJSON *idx = NULL;
    optiq_status st = load_json(ip, &idx, err);
    if (!st && !cJSON_IsObject(idx)) st = err_set(err, OPTIQ_ERR_FORMAT, "%s: not a JSON object", ip);
    if (!st) {
        cJSON *wm = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
        if (!wm) wm = cJSON_AddObjectToObject(idx, "weight_map");
        if (!cJSON_IsObject(wm)) st = err_set(err, OPTIQ_ERR_FORMAT, "%s: weight_map is not an object", ip);
        for (size_t i = 0; i < n && !st; i++) set_item(wm, t[i].key, cJSON_CreateString(SIDECAR_NAME));
        if (!st) st = write_json(ip, idx, err);
        if (!st) *updated = 1;
    }
    cJSON_Delete(idx);
    free(ip);
    return st;
}

static optiq_status update_config(const char *base, const char *quant, size_t n, cJSON *keys, optiq_error *err) {
    char *bp = path_join(base, "config.json"), *qp = path_join(quant, "config.json");
    cJSON *bc = NULL, *qc = NULL;
    optiq_status st = bp && qp ? OPTIQ_OK : err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    if (!st) st = load_json(bp, &bc, err);
    if (!st && is_file(qp)) st = load_json(qp, &qc, err);
    if (!st && !qc) qc = cJSON_CreateObject();
    if (!st && (!cJSON_IsObject(bc) || !cJSON_IsObject(qc)))
        st = err_set(err, OPTIQ_ERR_FORMAT, "config.json: not a JSON object (%s or %s)", bp, qp);
    for (size_t i = 0; i < COUNT(MM_CONFIG_KEYS) && !st; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(bc, MM_CONFIG_KEYS[i]);
        if (!v) continue;
        set_item(qc, MM_CONFIG_KEYS[i], cJSON_Duplicate(v, 1));
        cJSON_AddItemToArray(keys, cJSON_CreateString(MM_CONFIG_KEYS[i]));
    }
    if (!st) {
        cJSON *ov = cJSON_CreateObject();
        cJSON_AddStringToObject(ov, "sidecar", SIDECAR_NAME);
        cJSON_AddStringToObject(ov, "dtype", "bfloat16");
        cJSON_AddNumberToObject(ov, "n_tensors", (double)n);
        cJSON_AddStringToObject(ov, "base_model", base);
        set_item(qc, "optiq_vision", ov);
        st = write_json(qp, qc, err);
    }
    cJSON_Delete(bc), cJSON_Delete(qc);
    free(bp), free(qp);
    return st;
}

static optiq_status copy_processor_files(const char *base, const char *quant, cJSON *copied, optiq_error *err) {
    optiq_status st = OPTIQ_OK;
    for (size_t i = 0; i < COUNT(PROCESSOR_FILES) && !st; i++) {
        char *src = path_join(base, PROCESSOR_FILES[i]), *dst = path_join(quant, PROCESSOR_FILES[i]);
        if (!src || !dst) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        else if (!is_file(dst) && is_file(src)) {
            char *data = NULL;
            size_t len = 0;
            st = json_read_file(src, JSON_DEFAULT_CAP, &data, &len, err);
            if (!st) st = write_file(dst, data, len, err);
            if (!st) cJSON_AddItemToArray(copied, cJSON_CreateString(PROCESSOR_FILES[i]));
            free(data);
        }
        free(src), free(dst);
    }
    return st;
}

optiq_status sidecar_build(const char *base, const char *quant, int force, cJSON **summary, optiq_error *err) {
    if (summary) *summary = NULL;
    if (!base || !quant) return err_set(err, OPTIQ_ERR_INVALID_ARG, "sidecar: base and quant folders are required");
    if (!is_dir(base))
        return err_set(err, OPTIQ_ERR_INVALID_ARG,
                       "%s: not a folder (the base must be a local bf16 checkpoint; Hub downloads are not supported)",
                       base);
    if (!is_dir(quant)) return err_set(err, OPTIQ_ERR_INVALID_ARG, "%s: not a folder", quant);
    char *out = path_join(quant, SIDECAR_NAME), *sub = path_join(quant, "optiq/" SIDECAR_NAME);
    if (!out || !sub) {
        free(out), free(sub);
        return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    optiq_status st = OPTIQ_OK;
    if (is_file(sub))
        st = err_set(err, OPTIQ_ERR_INVALID_ARG,
                     "%s exists and takes precedence over %s; remove it first", sub, SIDECAR_NAME);
    else if (is_file(out) && !force)
        st = err_set(err, OPTIQ_ERR_INVALID_ARG, "%s exists; pass --force to overwrite", out);
    mm_tensor *t = NULL;
    size_t n = 0;
    uint64_t bytes = 0;
    if (!st) st = collect(base, &t, &n, err);
    if (!st) {
        st_writer *w = st_writer_new();
        if (!w) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n && !st; i++) {
            st = st_writer_add(w, t[i].key, t[i].dt, t[i].ndim, t[i].shape, t[i].data, err);
            int64_t e = 1;
            for (int d = 0; d < t[i].ndim; d++) e *= t[i].shape[d];
            bytes += (uint64_t)e * 2;
        }
        if (!st) st = st_writer_metadata(w, "format", "mlx", err);
        if (!st) st = st_writer_save(w, out, err);
        st_writer_free(w);
    }
    cJSON *sum = cJSON_CreateObject(), *keys = cJSON_CreateArray(), *copied = cJSON_CreateArray();
    int index_updated = 0;
    if (!st) st = update_index(quant, t, n, &index_updated, err);
    if (!st) st = update_config(base, quant, n, keys, err);
    if (!st) st = copy_processor_files(base, quant, copied, err);
    for (size_t i = 0; i < n; i++) free(t[i].key), free(t[i].data);
    free(t);
    if (!st && summary) {
        cJSON_AddStringToObject(sum, "sidecar", out);
        cJSON_AddNumberToObject(sum, "n_tensors", (double)n);
        cJSON_AddNumberToObject(sum, "bytes", (double)bytes);
        cJSON_AddStringToObject(sum, "dtype", "bfloat16");
        cJSON_AddStringToObject(sum, "base", base);
        cJSON_AddBoolToObject(sum, "index_updated", index_updated);
        cJSON_AddItemToObject(sum, "config_keys", keys);
        cJSON_AddItemToObject(sum, "copied", copied);
        keys = copied = NULL;
        *summary = sum;
        sum = NULL;
    }
    cJSON_Delete(sum), cJSON_Delete(keys), cJSON_Delete(copied);
    free(out), free(sub);
    return st;
}

/* ---- public API ----------------------------------------------------------- */

optiq_status optiq_sidecar_build(const char *base_dir, const char *quant_dir, int force, char **summary_json,
                                 optiq_error *err) {
    if (summary_json) *summary_json = NULL;
    cJSON *sum = NULL;
    optiq_status st = sidecar_build(base_dir, quant_dir, force, summary_json ? &sum : NULL, err);
    if (!st && summary_json) {
        *summary_json = cJSON_PrintUnformatted(sum);
        if (!*summary_json) st = err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    }
    cJSON_Delete(sum);
    return st;
}
