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

/* Map and validate a file. The label in messages is the path. */
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
uint64_t st_file_size(const st_file *f);

/* ---- writer ---------------------------------------------------------------
 * Collects tensors (data is referenced, not copied, until st_writer_save) and
 * writes a file the way MLX does: compact JSON header with sorted keys,
 * no padding, data back to back in name order. */
typedef struct st_writer st_writer;

st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);
optiq_status st_writer_add(st_writer *w, const char *name, dtype dt, int ndim, const int64_t *shape,
                           const void *data, optiq_error *err);
optiq_status st_writer_metadata(st_writer *w, const char *key, const char *value, optiq_error *err);
optiq_status st_writer_save(const st_writer *w, const char *path, optiq_error *err);

#endif
