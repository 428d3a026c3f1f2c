/*
 * json.h — small helpers over cJSON for configuration files.
 *
 * Lookups take a dotted key path ("text_config.num_hidden_layers"; an
 * all-digit component indexes an array: "architectures.0") and a label that
 * names the document in messages, so every failure reads like
 *     config.json: text_config.num_hidden_layers missing
 *     config.json: text_config.num_hidden_layers is a string, expected an integer
 * Keys that themselves contain dots (quantization module paths) are looked up
 * with cJSON_GetObjectItemCaseSensitive on their parent instead.
 *
 * The *_or variants return the default when the key is absent or null, and
 * still fail when it is present with the wrong type.
 */
#ifndef OPTIQ_IO_JSON_H
#define OPTIQ_IO_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define JSON_DEFAULT_CAP (64u << 20) /* largest JSON file read by default: 64 MiB */

/* Read a whole file into a NUL-terminated buffer (caller frees). Fails with
 * OPTIQ_ERR_IO when it cannot be read and OPTIQ_ERR_FORMAT when it is larger
 * than cap bytes. len may be NULL. */
optiq_status json_read_file(const char *path, size_t cap, char **out, size_t *len, optiq_error *err);

/* Read and parse a JSON file (cap as above; 0 means JSON_DEFAULT_CAP). label
 * names it in messages (NULL: the path). Caller frees with cJSON_Delete. */
optiq_status json_load_file(const char *path, const char *label, size_t cap, cJSON **out, optiq_error *err);

/* Parse text of length len; messages name label and the line/column of a syntax error. */
optiq_status json_parse(const char *text, size_t len, const char *label, cJSON **out, optiq_error *err);

/* "an object", "a string", "a number", ... for messages. */
const char *json_type_name(const cJSON *j);

/* Item at a dotted path, or NULL when any component is missing. */
const cJSON *json_path(const cJSON *root, const char *path);

/* Typed getters. Integers must be integral numbers within int64 range. */
optiq_status json_get_int(const cJSON *root, const char *label, const char *path, int64_t *out, optiq_error *err);
optiq_status json_get_int_or(const cJSON *root, const char *label, const char *path, int64_t def, int64_t *out,
                             optiq_error *err);
optiq_status json_get_double(const cJSON *root, const char *label, const char *path, double *out, optiq_error *err);
optiq_status json_get_double_or(const cJSON *root, const char *label, const char *path, double def, double *out,
                                optiq_error *err);
optiq_status json_get_bool(const cJSON *root, const char *label, const char *path, int *out, optiq_error *err);
optiq_status json_get_bool_or(const cJSON *root, const char *label, const char *path, int def, int *out,
                              optiq_error *err);
/* The string stays owned by the tree. */
optiq_status json_get_string(const cJSON *root, const char *label, const char *path, const char **out,
                             optiq_error *err);
optiq_status json_get_string_or(const cJSON *root, const char *label, const char *path, const char *def,
                                const char **out, optiq_error *err);
/* An object or array at path (NULL with OPTIQ_OK in *out for the _opt forms when absent or null). */
optiq_status json_get_object(const cJSON *root, const char *label, const char *path, const cJSON **out,
                             optiq_error *err);
optiq_status json_get_object_opt(const cJSON *root, const char *label, const char *path, const cJSON **out,
                                 optiq_error *err);
optiq_status json_get_array(const cJSON *root, const char *label, const char *path, const cJSON **out,
                            optiq_error *err);
optiq_status json_get_array_opt(const cJSON *root, const char *label, const char *path, const cJSON **out,
                                optiq_error *err);

/* Integer value of a number item (1 when integral and within int64 range). */
int json_as_int(const cJSON *j, int64_t *out);

/* The tree as Python's json.dumps(j, indent=indent) writes it (ensure_ascii:
 * non-ASCII as \uXXXX escapes; ", " / ": " separators become "," + newline and
 * ": "; no trailing newline), for files the Python tools also write (config.json,
 * model.safetensors.index.json). Numbers: cJSON keeps only a double, so an
 * integral value below 2^53 is written as an integer (a Python float 2.0 comes
 * back as 2) and others with the shortest repr that reads back exactly. NULL
 * when out of memory. Caller frees. */
char *json_print_python(const cJSON *j, int indent);

#endif
