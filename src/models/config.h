/*
 * config.h — reading a family's hyperparameters from config.json.
 *
 * A cfg_reader names the JSON object the keys live in (the text_config
 * object, or the whole config for flat configs) and how to name it in
 * messages. Readers distinguish "absent or null" (the default applies, as
 * the reference dataclasses do) from "present with a wrong type or value"
 * (an error naming the file and the key).
 */
#ifndef OPTIQ_MODELS_CONFIG_H
#define OPTIQ_MODELS_CONFIG_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/error.h"

typedef struct cfg_reader {
    const cJSON *obj;
    const char *where; /* "text_config." or "" */
    const char *path;  /* config.json path */
} cfg_reader;

/* The value of key, or NULL when absent or null. */
const cJSON *cfg_get(const cfg_reader *r, const char *key);
/* An integer >= lo (and <= 1e12); required (req) or def when absent. */
optiq_status cfg_int(const cfg_reader *r, const char *key, int req, int64_t def, int64_t lo, int64_t *out,
                     optiq_error *err);
/* A finite number from obj (r or a nested object of it), def when absent. */
optiq_status cfg_num(const cfg_reader *r, const cJSON *obj, const char *key, double def, double *out,
                     optiq_error *err);
/* A boolean (true/false or a number), def when absent or of another type. */
int cfg_bool(const cfg_reader *r, const char *key, int def);
/* Append a formatted sentence (at most 255 bytes) to a JSON array: a
 * family's description lines (lm_ops.describe). */
void cfg_add_feature(cJSON *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
