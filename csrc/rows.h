/* rows.h: row access to an encoded matrix of any encoding, without decoding the rest of it.
 *
 * Every encoding stores its rows independently (spec/encodings.md): `dense` and `im` at a fixed
 * stride, `csc` / `sham` through row pointers, `ham` / `sham` / `rlham` through per-row bit
 * offsets that are absolute positions in the payload. A contiguous block of rows r0..r0+n-1 is
 * therefore itself a valid matrix of the same encoding that shares the original's codebook,
 * code and payload: the same struct with the row-indexed pointers advanced by r0 and `rows` = n
 * (dnnz_rows_view). The encodings' own decode and matmul kernels then run on the block unchanged,
 * so the cost of a row lookup is proportional to the rows asked for, never to the matrix.
 *
 * `kind` says which struct `m` points to (a validated one: *_validate passed).
 */
#ifndef DNNZ_ROWS_H
#define DNNZ_ROWS_H

#include "common.h"
#include "enc.h"
#include "ham.h"
#include "rlham.h"
#include "sham.h"

/* cffi:begin */
enum dnnz_rows_kind {
    DNNZ_ROWS_DENSE = 1,  /* struct dnnz_dense */
    DNNZ_ROWS_CSC = 2,    /* struct dnnz_csc */
    DNNZ_ROWS_IM = 3,     /* struct dnnz_im (im, im8, im4) */
    DNNZ_ROWS_HAM = 6,    /* struct dnnz_ham */
    DNNZ_ROWS_SHAM = 7,   /* struct dnnz_sham */
    DNNZ_ROWS_RLHAM = 8   /* struct dnnz_rlham */
};

/* dst[i, :] = row ids[i] of the (rows, cols) matrix, exactly, for i < n (dst: n * cols float32).
 * Ids may repeat and come in any order; runs of consecutive ids are decoded as one block.
 * DNNZ_E_ARGUMENT (and *bad = i) when ids[i] is not in [0, rows); nothing is written then. */
int dnnz_rows_decode(int kind, const void *m, const int64_t *ids, int64_t n, float *dst, int64_t *bad);
/* cffi:end */

/* Any of the six structs, by value. */
union dnnz_rows_any {
    struct dnnz_dense dense;
    struct dnnz_csc csc;
    struct dnnz_im im;
    struct dnnz_ham ham;
    struct dnnz_sham sham;
    struct dnnz_rlham rlham;
};

/* (rows, cols) of the matrix; DNNZ_E_ARGUMENT for an unknown kind or a NULL m. */
int dnnz_rows_shape(int kind, const void *m, int64_t *rows, int64_t *cols);
/* *out = rows r0 .. r0+n-1 of m as a matrix of the same kind (0 <= r0, n, r0 + n <= rows). */
int dnnz_rows_view(int kind, const void *m, int64_t r0, int64_t n, union dnnz_rows_any *out);
/* Decode / multiply a matrix of `kind` (dispatch to the encoding's own kernels). */
int dnnz_rows_decode_all(int kind, const void *m, float *dst);
int dnnz_rows_matmul(int kind, const void *m, const float *x, int64_t batch, float *y);

#endif /* DNNZ_ROWS_H */
