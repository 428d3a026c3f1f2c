/*
 * optiq.h — the public C API of liboptiq.
 *
 * optiq runs MLX / OptIQ-format quantized vision-language models on Linux.
 * This header is the only one the CLI, the server and the language bindings
 * use; everything behind it is private. Conventions:
 *   - every fallible call returns an optiq_status (OPTIQ_OK == 0);
 *   - the message of the last failure is kept per handle (or, for calls that
 *     create a handle, in the optiq_error the caller passes in);
 *   - the library never exits the process and never prints unless asked.
 */
#ifndef OPTIQ_H
#define OPTIQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPTIQ_VERSION_MAJOR 0
#define OPTIQ_VERSION_MINOR 1
#define OPTIQ_VERSION_PATCH 0
#define OPTIQ_VERSION_STRING "0.1.0"

typedef enum optiq_status {
    OPTIQ_OK = 0,
    OPTIQ_ERR_IO = 1,          /* a file could not be opened, read or written */
    OPTIQ_ERR_FORMAT = 2,      /* a file is corrupt or not what it claims to be */
    OPTIQ_ERR_INVALID_ARG = 3, /* the caller passed something unusable */
    OPTIQ_ERR_NOMEM = 4,       /* an allocation failed */
    OPTIQ_ERR_UNSUPPORTED = 5  /* valid input this build cannot handle */
} optiq_status;

/* Room for one error message; filled by calls that fail before a handle exists. */
typedef struct optiq_error {
    optiq_status status;
    char message[512];
} optiq_error;

/* Library version string, e.g. "0.1.0". */
const char *optiq_version(void);

/* Short name of a status code ("format error", ...). */
const char *optiq_status_name(optiq_status status);

/* ---- model folders ---------------------------------------------------- */

/* A model folder opened for inspection: config.json, the language-tower
 * safetensors (model*.safetensors, cross-checked against the index), the
 * optional vision sidecar and the tokenizer / template files. Weights are
 * memory-mapped, never copied. */
typedef struct optiq_model_info optiq_model_info;

optiq_status optiq_model_info_open(const char *dir, optiq_model_info **out, optiq_error *err);
void optiq_model_info_free(optiq_model_info *info);

/* A JSON document (UTF-8, NUL-terminated, caller frees with optiq_free) that
 * describes the folder: model_type, parameter counts, quantization summary
 * (bits histogram, effective bits per weight, unquantized modules), the
 * vision sidecar and the tokenizer files. Keys are documented in docs/cli.md. */
char *optiq_model_info_json(const optiq_model_info *info);

/* Free memory returned by the library. */
void optiq_free(void *p);

#ifdef __cplusplus
}
#endif
#endif /* OPTIQ_H */
