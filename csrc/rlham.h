/* rlham.h: the `rlham` encoding (run-length Huffman address map): per output row, the sequence
 * of (zero run before the next non-zero, codebook index of that non-zero) pairs, each pair one
 * symbol of a joint (run class, value) alphabet coded with a canonical Huffman code (huf.h),
 * long runs as log2 buckets followed by raw extra bits, and an end-of-row symbol after the last
 * non-zero (trailing zeros cost nothing). One stream per row with a bit-offset table, as ham.
 * Byte layout: spec/encodings.md, section "rlham".
 *
 * Alphabet (k non-zero codebook values, D = direct_runs >= 1, C = run_classes in D..D+31):
 * symbol c * k + v for run class c < C and value index v < k, and the end-of-row symbol C * k.
 * Class c < D is the run c; class D + j (j = 0..30) is the run D - 1 + 2^j + e, e the j raw
 * extra bits that follow the code (MSB first).
 */
#ifndef DNNZ_RLHAM_H
#define DNNZ_RLHAM_H

#include "common.h"
#include "enc.h"
#include "ham.h"

/* cffi:begin */
/* codebook[k] float32 (never NaN or +0.0), lengths[run_classes * k + 1] uint8, offsets: rows + 1
 * little-endian off_bytes-byte (1..8) bit positions of each row's stream in payload
 * (offsets_len counts bytes: (rows + 1) * off_bytes). */
struct dnnz_rlham {
    int64_t rows, cols, k;
    int32_t direct_runs, run_classes, off_bytes;
    const float *codebook; int64_t codebook_len;
    const uint8_t *lengths; int64_t lengths_len;
    const uint8_t *offsets; int64_t offsets_len;
    const uint8_t *payload; int64_t payload_len;
};

/* Encode the non-zeros given as rowptr[rows + 1] (int64), colidx[nnz] (uint32, ascending in each
 * row, < cols) and vindex[nnz] (uint32, < k) with the code of lengths[run_classes * k + 1]:
 * writes the rows + 1 offsets (off_bytes each, 1..8) and the payload into payload[0..payload_cap) (size
 * it with the exact bit count / 8 + 9 bytes). DNNZ_E_ARGUMENT for inconsistent input (a run
 * that its class range cannot hold, a symbol without a code). */
int dnnz_rlham_encode(const uint8_t *lengths, int64_t k, int32_t direct_runs, int32_t run_classes,
                      const int64_t *rowptr, const uint32_t *colidx, const uint32_t *vindex,
                      int64_t rows, int64_t cols, uint8_t *offsets, int32_t off_bytes,
                      uint8_t *payload, int64_t payload_cap);
int dnnz_rlham_validate(const struct dnnz_rlham *m, struct dnnz_enc_err *err);
int dnnz_rlham_decode(const struct dnnz_rlham *m, float *dst);
int dnnz_rlham_matmul(const struct dnnz_rlham *m, const float *x, int64_t batch, float *y);
/* cffi:end */

#endif /* DNNZ_RLHAM_H */
