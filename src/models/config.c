/*
 * config.c — config.json readers shared by the families (see config.h).
 */
#include "models/config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

const cJSON *cfg_get(const cfg_reader *r, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

optiq_status cfg_int(const cfg_reader *r, const char *key, int req, int64_t def, int64_t lo, int64_t *out,
                     optiq_error *err) {
    const cJSON *v = cfg_get(r, key);
    if (!v) {
        if (req) return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s%s missing", r->path, r->where, key);
        *out = def;
        return OPTIQ_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > 1e12)
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s%s must be an integer >= %lld", r->path, r->where, key,
                       (long long)lo);
    *out = (int64_t)v->valuedouble;
    return OPTIQ_OK;
}

optiq_status cfg_num(const cfg_reader *r, const cJSON *obj, const char *key, double def, double *out,
                     optiq_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return OPTIQ_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return err_set(err, OPTIQ_ERR_FORMAT, "%s: %s%s must be a number", r->path, r->where, key);
    *out = v->valuedouble;
    return OPTIQ_OK;
}

int cfg_bool(const cfg_reader *r, const char *key, int def) {
    const cJSON *v = cfg_get(r, key);
    if (!v) return def;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    return def;
}

void cfg_add_feature(cJSON *a, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cJSON_AddItemToArray(a, cJSON_CreateString(buf));
}
