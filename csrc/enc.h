/* enc.h: the encodings' shared declarations (validation fields and errors, limits) and the API
 * of the plain lossless encodings dense, im and csc (their code: dense.c, im.c, csc.c; the
 * shared kernels: kern.h): section validation, decoding, and y = x @ W.T computed from the
 * encoded form (spec/encodings.md describes every byte).
 *
 * W is (rows = out_features, cols = in_features), x is (batch, cols) row-major float32,
 * y is (batch, rows) row-major float32. Validation runs once (from_sections / encode); the
 * decode and matmul functions trust a structure that passed its *_validate function and only
 * check their own arguments. Lengths in the structs are element counts of each section.
 */
#ifndef DNNZ_ENC_H
#define DNNZ_ENC_H

#include "common.h"

/* cffi:begin */
/* Which section or parameter a validation failure is about (reported through dnnz_enc_err). */
enum dnnz_enc_field {
    DNNZ_FIELD_NONE = 0,
    DNNZ_FIELD_PARAMS = 1,
    DNNZ_FIELD_VALUES = 2,
    DNNZ_FIELD_CODEBOOK = 3,
    DNNZ_FIELD_INDICES = 4,
    DNNZ_FIELD_ROWPTR = 5,
    DNNZ_FIELD_COLIDX = 6,
    DNNZ_FIELD_VINDEX = 7
};

struct dnnz_enc_err {
    int32_t field;  /* a dnnz_enc_field */
    int64_t where;  /* element (or row, for padding) where the problem is; -1 when not positional */
};

/* dense: values = W row-major. */
struct dnnz_dense {
    int64_t rows, cols;
    const float *values; int64_t values_len;
};

/* im: codebook[k] + per-row, byte-aligned, MSB-first packed `bits`-bit indices. */
struct dnnz_im {
    int64_t rows, cols, k;
    int32_t bits;
    const float *codebook; int64_t codebook_len;
    const uint8_t *indices; int64_t indices_len;
};

/* csc: per output row, the ascending column positions of its non-zeros and their values.
 * value_kind 0: `values` holds nnz float32; 1 / 2: `values` is the codebook (k float32) and
 * `vindex` holds nnz uint8 / uint16 codebook indices. rowptr/colidx/vindex point to
 * little-endian integers of ptr_bytes / idx_bytes / value_kind bytes. */
struct dnnz_csc {
    int64_t rows, cols, nnz, k;
    int32_t ptr_bytes, idx_bytes, value_kind;
    const uint8_t *rowptr; int64_t rowptr_len;
    const uint8_t *colidx; int64_t colidx_len;
    const float *values; int64_t values_len;
    const uint8_t *vindex; int64_t vindex_len;
};

int dnnz_enc_dense_validate(const struct dnnz_dense *m, struct dnnz_enc_err *err);
int dnnz_enc_dense_matmul(const struct dnnz_dense *m, const float *x, int64_t batch, float *y);

/* Bytes per row of the packed index stream: ceil(cols * bits / 8). */
int64_t dnnz_enc_im_row_bytes(int64_t cols, int32_t bits);
int dnnz_enc_im_validate(const struct dnnz_im *m, struct dnnz_enc_err *err);
int dnnz_enc_im_decode(const struct dnnz_im *m, float *dst);
int dnnz_enc_im_matmul(const struct dnnz_im *m, const float *x, int64_t batch, float *y);

int dnnz_enc_csc_validate(const struct dnnz_csc *m, struct dnnz_enc_err *err);
int dnnz_enc_csc_decode(const struct dnnz_csc *m, float *dst);
int dnnz_enc_csc_matmul(const struct dnnz_csc *m, const float *x, int64_t batch, float *y);
/* cffi:end */

/* Limits (DNNZ_E_LIMIT above them): each dimension below 2^31 (kernels index with int32),
 * at most 2^24 codebook entries, at most 24 bits per im index. */
#define DNNZ_ENC_MAX_DIM 0x7fffffffLL
#define DNNZ_ENC_MAX_K (1LL << 24)
#define DNNZ_ENC_MAX_BITS 24

#endif /* DNNZ_ENC_H */
