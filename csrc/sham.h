/* sham.h: the `sham` encoding: per output row, the ascending column positions of its non-zeros
 * (as csc: row pointers and column indices in the fewest bytes that hold them) and their values
 * as canonical-Huffman-coded indices into a codebook of the non-zero values, one stream per row
 * with a bit-offset table (spec/encodings.md, "sham"; shared machinery in ham.h).
 */
#ifndef DNNZ_SHAM_H
#define DNNZ_SHAM_H

#include "common.h"
#include "enc.h"
#include "ham.h"

/* cffi:begin */
/* rowptr[rows + 1] (ptr_bytes), colidx[nnz] (idx_bytes), codebook[k] float32 (never NaN or
 * +0.0), lengths[k] uint8, offsets[rows + 1] (off_bytes, 4 or 8) bit positions of each row's
 * value stream in payload. */
struct dnnz_sham {
    int64_t rows, cols, nnz, k;
    int32_t ptr_bytes, idx_bytes, off_bytes;
    const uint8_t *rowptr; int64_t rowptr_len;
    const uint8_t *colidx; int64_t colidx_len;
    const float *codebook; int64_t codebook_len;
    const uint8_t *lengths; int64_t lengths_len;
    const uint8_t *offsets; int64_t offsets_len;
    const uint8_t *payload; int64_t payload_len;
};

/* Encode the value indices vindex[nnz] (v_bytes 1, 2 or 4 each), row r holding
 * vindex[rowptr[r] .. rowptr[r + 1]), with the code of lengths[k]: writes offsets[rows + 1]
 * and the payload (payload_cap: the exact bit count / 8 + 9 bytes is enough). */
int dnnz_sham_encode(const uint8_t *lengths, int64_t k, const void *vindex, int32_t v_bytes,
                     const uint8_t *rowptr, int32_t ptr_bytes, int64_t rows, uint8_t *offsets,
                     int32_t off_bytes, uint8_t *payload, int64_t payload_cap);
int dnnz_sham_validate(const struct dnnz_sham *m, struct dnnz_enc_err *err);
int dnnz_sham_decode(const struct dnnz_sham *m, float *dst);
int dnnz_sham_matmul(const struct dnnz_sham *m, const float *x, int64_t batch, float *y);
/* cffi:end */

#endif /* DNNZ_SHAM_H */
