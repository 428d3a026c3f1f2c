/*
 * safetensors.h — reading and writing safetensors files.
 *
 * File layout (as MLX writes it, mlx/io/safetensors.cpp):
 *   bytes 0..7      N, the header length, uint64 little-endian
 *   bytes 8..8+N-1  JSON object: {"__metadata__": {str: str}?,
 *                     name: {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...}
 *   bytes 8+N..     tensor data; data_offsets are relative to byte 8+N.
 * MLX does not pad the header, so tensor data may start at any byte: readers
 * must use unaligned loads (memcpy) on the mapping. Tensors are C-contiguous,
 * little-endian, and may appear in any order.
 *
 * The reader maps the file read-only and validates before handing out any
 * tensor: header length bounds (0 < N < 100 MB, 8+N <= file size), known dtype
 * names, shape entries non-negative and their product free of overflow,
 * end - begin == prod(shape) * itemsize, begin <= end, 8+N+end <= file size,
 * and no two tensors overlapping. Every error names the file and the tensor.
 * Also: the header must parse as a JSON object (trailing spaces allowed, as
 * the Rust crate pads with them), no tensor name may appear twice, and
 * __metadata__ must be an object of strings or null (MLX writes null when a
 * file has no metadata). Gaps between tensors are allowed; empty tensors
 * ([b, b]) occupy no bytes. Failures return OPTIQ_ERR_FORMAT (OPTIQ_ERR_IO
 * when the file cannot be opened or mapped).
 *
 * What MLX writes (checked against mx.save_safetensors, mlx 0.32 on Linux):
 * the header is nlohmann::json::dump() of a std::map, so every object's keys
 * are in bytewise order ("__metadata__" sorts after upper-case names and
 * before lower-case ones), no whitespace, UTF-8 unescaped, control
 * characters as \u00xx; tensor data is back to back in the iteration order
 * of a std::unordered_map (hash order: neither name nor insertion order).
 */
#ifndef OPTIQ_IO_SAFETENSORS_H
#define OPTIQ_IO_SAFETENSORS_H

#include "base/dtype.h"
#include "base/error.h"

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    const char *name;          /* NUL-terminated, owned by the st_file */
    dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t nelem;            /* prod(shape) */
    uint64_t nbytes;           /* nelem * dtype_size */
    uint64_t offset;           /* absolute byte offset in the file */
    const void *data;          /* inside the mapping; may be unaligned */
} st_tensor;

typedef struct st_file st_file;

/* Load and validate a file. The label in messages is the path. Files of 32 MB
 * or more that fit in half of MemAvailable are read into anonymous memory on
 * transparent huge pages (faster decoding), others are mapped (mmap); the
 * environment variable OPTIQ_MMAP=1 always maps, OPTIQ_MMAP=0 always reads. */
optiq_status st_open(const char *path, st_file **out, optiq_error *err);

/* Validate an in-memory image of a file (not copied: buf must outlive the
 * st_file). label names it in messages. Used by tests and the fuzzer. */
optiq_status st_open_memory(const void *buf, size_t len, const char *label, st_file **out, optiq_error *err);

void st_close(st_file *f);

const char *st_path(const st_file *f);
size_t st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, size_t i);        /* sorted by name */
const st_tensor *st_find(const st_file *f, const char *name);
/* __metadata__ value for key, or NULL. */
const char *st_metadata(const st_file *f, const char *key);
/* Number of __metadata__ entries, and entry i (sorted by key); 0 past the end. */
size_t st_metadata_count(const st_file *f);
int st_metadata_at(const st_file *f, size_t i, const char **key, const char **value);
/* 1 when the header had "__metadata__": null. */
int st_metadata_is_null(const st_file *f);
uint64_t st_file_size(const st_file *f);
/* N: tensor data starts at byte 8 + N. */
uint64_t st_header_length(const st_file *f);

/* ---- writer ---------------------------------------------------------------
 * Collects tensors (data is referenced, not copied, until st_writer_save) and
 * writes a file the way MLX does: compact JSON header with sorted keys
 * (byte-identical to MLX's for the same tensors and data layout), no padding,
 * data back to back; "__metadata__" is always present, null when no metadata
 * was given. The data goes in name order by default (deterministic; MLX's own
 * hash order cannot be reproduced portably), or in the order the tensors were
 * added (ST_ORDER_ADDED: rewriting a file's tensors in their file order gives
 * back the same bytes). The file is written to a temporary name beside the
 * target and renamed over it. Names must be valid UTF-8 and not
 * "__metadata__"; adding a name twice is an error; replacing a metadata key
 * keeps the last value. */
typedef struct st_writer st_writer;

typedef enum st_write_order { ST_ORDER_NAME = 0, ST_ORDER_ADDED = 1 } st_write_order;

st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);
void st_writer_set_order(st_writer *w, st_write_order order);
optiq_status st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                           const void *data, optiq_error *err);
optiq_status st_writer_metadata(st_writer *w, const char *key, const char *value, optiq_error *err);
/* The JSON header the writer would produce (malloc'd, NUL-terminated; *len its length). */
optiq_status st_writer_header(const st_writer *w, char **out, size_t *len, optiq_error *err);
optiq_status st_writer_save(const st_writer *w, const char *path, optiq_error *err);

#endif
