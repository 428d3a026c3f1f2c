/*
 * model_info.c — optiq_model_info_*: open a model folder, resolve its
 * quantization, and describe it as JSON. The keys are listed in
 * docs/model-folder.md; keep the two in step.
 *
 * Counting follows mlx-lm (mlx_lm/utils.py) so the numbers can be compared
 * with what `mlx_lm.convert` prints:
 *   parameters      = get_total_parameters: leaf modules only, a quantized
 *                     module counts weight.size * 32 / bits (+ layer bias),
 *                     scales and biases are not parameters;
 *   bits_per_weight = compute_bits_per_weight: 8 * bytes of every tower
 *                     tensor (scales and biases included) / parameters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "io/model_dir.h"
#include "io/quant_config.h"
#include "models/model.h"
#include "optiq.h"

struct optiq_model_info {
    model_dir *md;
    quant_config qc;
    quant_modules qm;
    uint64_t parameters;
};

optiq_status optiq_model_info_open(const char *dir, optiq_model_info **out, optiq_error *err) {
    if (!dir || !out) return err_set(err, OPTIQ_ERR_INVALID_ARG, "optiq_model_info_open: NULL argument");
    *out = NULL;
    optiq_model_info *info = calloc(1, sizeof *info);
    if (!info) return err_set(err, OPTIQ_ERR_NOMEM, "out of memory");
    optiq_status st = model_dir_open(dir, &info->md, err);
    if (st == OPTIQ_OK)
        st = quant_config_parse(model_dir_config(info->md), model_dir_config_path(info->md), &info->qc, err);
    if (st == OPTIQ_OK) st = quant_resolve(info->md, &info->qc, &info->qm, err);
    if (st == OPTIQ_OK) st = quant_parameter_count(info->md, &info->qm, &info->parameters, err);
    if (st != OPTIQ_OK) {
        optiq_model_info_free(info);
        return st;
    }
    *out = info;
    return OPTIQ_OK;
}

void optiq_model_info_free(optiq_model_info *info) {
    if (!info) return;
    quant_modules_free(&info->qm);
    quant_config_free(&info->qc);
    model_dir_close(info->md);
    free(info);
}

void optiq_free(void *p) { free(p); }

uint64_t optiq_model_info_parameters(const optiq_model_info *info) { return info->parameters; }

double optiq_model_info_bits_per_weight(const optiq_model_info *info) {
    return info->parameters ? 8.0 * (double)model_dir_tower_tensor_bytes(info->md) / (double)info->parameters : 0.0;
}

/* ---- JSON --------------------------------------------------------------- */

static cJSON *num(uint64_t v) { return cJSON_CreateNumber((double)v); }
static cJSON *str_or_null(const char *s) { return s ? cJSON_CreateString(s) : cJSON_CreateNull(); }

static cJSON *shape_json(const st_tensor *t) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < t->ndim; i++) cJSON_AddItemToArray(a, num((uint64_t)t->shape[i]));
    return a;
}

static cJSON *format_json(qformat f) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "bits", f.bits);
    cJSON_AddNumberToObject(o, "group_size", f.group_size);
    cJSON_AddStringToObject(o, "mode", qmode_name(f.mode));
    return o;
}

/* Add n to the counter named key in object o (created at 0). */
static void bump(cJSON *o, const char *key, uint64_t n) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(o, key);
    if (c) cJSON_SetNumberValue(c, c->valuedouble + (double)n);
    else cJSON_AddItemToObject(o, key, num(n));
}

static cJSON *language_json(const optiq_model_info *info) {
    const model_dir *md = info->md;
    cJSON *o = cJSON_CreateObject(), *files = cJSON_AddArrayToObject(o, "files");
    for (size_t i = 0; i < model_dir_shard_count(md); i++)
        cJSON_AddItemToArray(files, cJSON_CreateString(model_dir_shard_name(md, i)));
    cJSON_AddItemToObject(o, "tensors", num(model_dir_tensor_count(md)));
    cJSON_AddItemToObject(o, "file_bytes", num(model_dir_tower_file_bytes(md)));
    cJSON_AddItemToObject(o, "tensor_bytes", num(model_dir_tower_tensor_bytes(md)));
    cJSON_AddItemToObject(o, "parameters", num(info->parameters));
    cJSON_AddNumberToObject(o, "bits_per_weight", optiq_model_info_bits_per_weight(info));
    const cJSON *index = model_dir_index(md);
    if (index) {
        cJSON *ix = cJSON_AddObjectToObject(o, "index");
        cJSON_AddStringToObject(ix, "file", MD_INDEX_NAME);
        const cJSON *ts = json_path(index, "metadata.total_size"), *tp = json_path(index, "metadata.total_parameters");
        int64_t v;
        cJSON_AddItemToObject(ix, "total_size", json_as_int(ts, &v) ? num((uint64_t)v) : cJSON_CreateNull());
        cJSON_AddItemToObject(ix, "total_parameters", json_as_int(tp, &v) ? num((uint64_t)v) : cJSON_CreateNull());
    } else {
        cJSON_AddNullToObject(o, "index");
    }
    return o;
}

static cJSON *quant_json(const optiq_model_info *info) {
    const quant_config *qc = &info->qc;
    const quant_modules *qm = &info->qm;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "present", qc->present);
    cJSON_AddItemToObject(o, "source", str_or_null(qc->source));
    cJSON_AddItemToObject(o, "default", qc->present ? format_json(qc->dflt) : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "quantize_activations", qc->quantize_activations);
    cJSON_AddItemToObject(o, "overrides", num(qc->n_entries - qc->n_false));
    cJSON_AddItemToObject(o, "disabled", num(qc->n_false));
    cJSON_AddItemToObject(o, "quantized_modules", num(qm->n));

    /* histograms keyed by bits ("2".."8"), and the distinct formats */
    cJSON *hm = cJSON_CreateObject(), *hw = cJSON_CreateObject(), *fm = cJSON_CreateArray();
    for (int b = 1; b <= 8; b++) {
        char key[12];
        snprintf(key, sizeof key, "%d", b);
        for (size_t i = 0; i < qm->n; i++)
            if (qm->mods[i].q.fmt.bits == b) {
                uint64_t w = qm->mods[i].weight->nelem * 32 / (uint64_t)b;
                bump(hm, key, 1);
                bump(hw, key, w);
            }
    }
    for (int mode = 0; mode < QMODE_COUNT; mode++)
        for (int b = 1; b <= 8; b++)
            for (int gs = 16; gs <= 128; gs *= 2) {
                uint64_t mods = 0, w = 0;
                for (size_t i = 0; i < qm->n; i++) {
                    qformat f = qm->mods[i].q.fmt;
                    if ((int)f.mode == mode && f.bits == b && f.group_size == gs) {
                        mods++;
                        w += qm->mods[i].weight->nelem * 32 / (uint64_t)b;
                    }
                }
                if (!mods) continue;
                cJSON *e = format_json((qformat){(qmode)mode, b, gs});
                cJSON_AddItemToObject(e, "modules", num(mods));
                cJSON_AddItemToObject(e, "weights", num(w));
                cJSON_AddItemToArray(fm, e);
            }
    cJSON_AddItemToObject(o, "histogram_bits_to_module_count", hm);
    cJSON_AddItemToObject(o, "histogram_bits_to_weight_count", hw);
    cJSON_AddItemToObject(o, "formats", fm);

    cJSON *un = cJSON_AddArrayToObject(o, "unquantized_modules");
    char name[1100];
    for (size_t i = 0; i < qm->n_unquantized; i++) {
        snprintf(name, sizeof name, "%s.weight", qm->unquantized[i]);
        const st_tensor *t = model_dir_find(info->md, name, NULL);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "module", qm->unquantized[i]);
        cJSON_AddStringToObject(e, "dtype", t ? dtype_name(t->dtype) : "?");
        cJSON_AddItemToObject(e, "shape", t ? shape_json(t) : cJSON_CreateArray());
        cJSON_AddItemToArray(un, e);
    }
    return o;
}

/* Component of a sidecar tensor: its first name component, or the first two
 * when the first is a generic wrapper ("model.visual.blocks..." -> "model.visual"). */
static void component_of(const char *name, char *buf, size_t cap) {
    const char *dot = strchr(name, '.');
    size_t n = dot ? (size_t)(dot - name) : strlen(name);
    if (dot && ((n == 5 && memcmp(name, "model", 5) == 0) || (n == 14 && memcmp(name, "language_model", 14) == 0))) {
        const char *d2 = strchr(dot + 1, '.');
        n = d2 ? (size_t)(d2 - name) : strlen(name);
    }
    if (n >= cap) n = cap - 1;
    memcpy(buf, name, n);
    buf[n] = 0;
}

static cJSON *vision_json(const model_dir *md) {
    const st_file *f = model_dir_sidecar(md);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "present", f != NULL);
    if (!f) return o;
    cJSON_AddStringToObject(o, "file", model_dir_sidecar_rel(md));
    cJSON_AddItemToObject(o, "tensors", num(st_count(f)));
    cJSON_AddItemToObject(o, "file_bytes", num(st_file_size(f)));
    uint64_t bytes = 0, params = 0;
    int seen[DT_COUNT] = {0};
    cJSON *comp = cJSON_CreateObject();
    char c[256];
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        bytes += t->nbytes;
        params += t->nelem;
        seen[t->dtype] = 1;
        component_of(t->name, c, sizeof c);
        bump(comp, c, 1);
    }
    cJSON_AddItemToObject(o, "tensor_bytes", num(bytes));
    cJSON_AddItemToObject(o, "parameters", num(params));
    cJSON *dts = cJSON_AddArrayToObject(o, "dtypes");
    for (int d = 1; d < DT_COUNT; d++)
        if (seen[d]) cJSON_AddItemToArray(dts, cJSON_CreateString(dtype_name((dtype)d)));
    cJSON_AddItemToObject(o, "components", comp);
    const char *fmt = st_metadata(f, "format");
    cJSON_AddItemToObject(o, "format", str_or_null(fmt));
    return o;
}

char *optiq_model_info_json(const optiq_model_info *info) {
    if (!info) return NULL;
    const model_dir *md = info->md;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", model_dir_path(md));
    cJSON_AddStringToObject(o, "model_type", model_dir_model_type(md));
    cJSON_AddItemToObject(o, "text_model_type", str_or_null(model_dir_text_model_type(md)));
    const cJSON *arch = model_dir_architectures(md);
    cJSON_AddItemToObject(o, "architectures", arch ? cJSON_Duplicate(arch, 1) : cJSON_CreateArray());
    cJSON_AddBoolToObject(o, "has_vision_config", model_dir_vision_config(md) != NULL);
    optiq_error aerr = {0};
    cJSON *arch_desc = lm_describe(md, &aerr);
    if (!arch_desc) {
        arch_desc = cJSON_CreateObject();
        cJSON_AddNullToObject(arch_desc, "family");
        cJSON_AddStringToObject(arch_desc, "error", aerr.message);
    }
    cJSON_AddItemToObject(o, "architecture", arch_desc);
    cJSON_AddItemToObject(o, "language", language_json(info));
    cJSON_AddItemToObject(o, "quantization", quant_json(info));
    cJSON_AddItemToObject(o, "vision", vision_json(md));
    cJSON *others = cJSON_AddArrayToObject(o, "other_safetensors");
    for (size_t i = 0; i < model_dir_other_count(md); i++)
        cJSON_AddItemToArray(others, cJSON_CreateString(model_dir_other(md, i)));
    cJSON *files = cJSON_AddObjectToObject(o, "tokenizer_files");
    for (int k = 0; k < MD_FILE_COUNT; k++)
        cJSON_AddBoolToObject(files, md_file_name((md_file)k), model_dir_file(md, (md_file)k) != NULL);
    cJSON_AddItemToObject(o, "chat_template", str_or_null(model_dir_chat_template_source(md)));

    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return NULL;
    /* cJSON indents with tabs and writes ":\t"; a raw tab is never inside a JSON
     * string (it is escaped there), so each one is layout: two spaces, or one
     * after a colon. The copy is ours to free with optiq_free. */
    size_t n = 0;
    for (const char *p = text; *p; p++) n += *p == '\t' ? 2 : 1;
    char *out = malloc(n + 1), *q = out;
    if (out) {
        for (const char *p = text; *p; p++) {
            if (*p != '\t') *q++ = *p;
            else if (p > text && p[-1] == ':') *q++ = ' ';
            else *q++ = ' ', *q++ = ' ';
        }
        *q = 0;
    }
    cJSON_free(text);
    return out;
}
