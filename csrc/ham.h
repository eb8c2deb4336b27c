/* ham.h: the Huffman encodings `ham` (Huffman address map: every entry of the index matrix,
 * zeros included, one canonical Huffman stream per output row) and the shared machinery of
 * `sham` (sham.h): per-row bit-offset tables, stream validation, and the decode-and-dot kernels.
 * Byte layouts: spec/encodings.md, sections "ham" and "sham"; the code: spec/huffman.md.
 *
 * Like enc.h: W is (rows = out_features, cols = in_features), x is (batch, cols) row-major
 * float32, y is (batch, rows). dnnz_ham_validate checks every byte once (it decodes every row);
 * decode and matmul trust a structure that passed it and only check their own arguments.
 */
#ifndef DNNZ_HAM_H
#define DNNZ_HAM_H

#include "common.h"
#include "enc.h"
#include "huf.h"
#include "kern.h"

/* cffi:begin */
/* Validation fields of the Huffman encodings (beside enc.h's dnnz_enc_field values). */
enum dnnz_ham_field {
    DNNZ_FIELD_LENGTHS = 64,  /* the code-lengths section */
    DNNZ_FIELD_OFFSETS = 65,  /* the per-row bit offsets */
    DNNZ_FIELD_PAYLOAD = 66   /* the Huffman streams */
};

/* ham: codebook[k] float32, lengths[k] uint8 code lengths, offsets[rows + 1] little-endian
 * off_bytes-byte (4 or 8) bit positions of each row's stream in payload (offsets[0] = 0,
 * offsets[rows] = total bits), payload = the row streams back to back, zero-padded to a byte. */
struct dnnz_ham {
    int64_t rows, cols, k;
    int32_t off_bytes;
    const float *codebook; int64_t codebook_len;
    const uint8_t *lengths; int64_t lengths_len;
    const uint8_t *offsets; int64_t offsets_len;
    const uint8_t *payload; int64_t payload_len;
};

/* Encode the (rows, cols) index matrix `indices` (idx_bytes 1, 2 or 4 per index, row-major)
 * with the code of lengths[k]: writes offsets[rows + 1] (off_bytes each) and the payload into
 * payload[0..payload_cap) (size it with the exact bit count + 8 bytes of room). */
int dnnz_ham_encode(const uint8_t *lengths, int64_t k, const void *indices, int32_t idx_bytes,
                    int64_t rows, int64_t cols, uint8_t *offsets, int32_t off_bytes,
                    uint8_t *payload, int64_t payload_cap);
int dnnz_ham_validate(const struct dnnz_ham *m, struct dnnz_enc_err *err);
int dnnz_ham_decode(const struct dnnz_ham *m, float *dst);
int dnnz_ham_matmul(const struct dnnz_ham *m, const float *x, int64_t batch, float *y);
/* cffi:end */

/* ---- shared with sham.c (C only) ---------------------------------------------------------- */

#define DNNZ_HAM_KC 1024      /* symbols decoded per stream and chunk */
#define DNNZ_HAM_TASK_ROWS 64 /* output rows per parallel task (multiple of 4) */

/* Symbols in stream r: a constant (count_ptr NULL) or count_ptr[r + 1] - count_ptr[r]. */
struct dnnz_ham_streams {
    int64_t n_streams;
    int64_t per_stream;          /* when count_ptr is NULL */
    const uint8_t *count_ptr;    /* n_streams + 1 entries of count_bytes (sham's rowptr) */
    int32_t count_bytes;
    const uint8_t *offsets;      /* n_streams + 1 bit offsets of off_bytes */
    int32_t off_bytes;
    const uint8_t *payload;
    int64_t payload_len;
};

/* Validate lengths[k], the offsets and every stream (decodes them all, in parallel): offsets
 * start at 0 and grow by at least one bit per symbol, the payload ends with the last stream
 * (zero padding to the byte), each stream decodes to its symbol count and ends exactly at the
 * next offset. Sets err (DNNZ_FIELD_LENGTHS / OFFSETS / PAYLOAD, where = stream). */
int dnnz_ham_check_streams(const uint8_t *lengths, int64_t k, const struct dnnz_ham_streams *s,
                           struct dnnz_enc_err *err);

/* Rows that hold every entry of W as one Huffman stream each (ham; rlham whose runs are all 0,
 * eor = its end-of-row symbol, else -1): the symbols index codebook[k] (k > eor when eor >= 0,
 * codebook[eor] = 0.0: a row ends at its first end-of-row symbol, the entries after it are 0). */
struct dnnz_ham_rows {
    const dnnz_huf_dtable *t;
    const float *codebook;
    int64_t k;
    int64_t eor;
    const uint8_t *offsets;
    int32_t off_bytes;
    const uint8_t *payload;
    int64_t payload_len;
};

/* The kern.h tile decoder of such rows: the four rows' streams decoded together (interleaved,
 * multi-symbol table: dnnz_huf_decode4_u8_at) into L1 index buffers, looked up into the tile.
 * The cursor is a row's bit position (-1 once its end-of-row symbol was seen). */
const float *dnnz_ham_tile(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0, int64_t kc, int64_t kcp,
                           float *wbuf, int64_t *cursor, int64_t *stride);

/* y = x @ W.T for such rows through the tile driver (matrix already validated). */
int dnnz_ham_rows_matmul(const struct dnnz_ham_rows *h, int64_t rows, int64_t cols, const float *x, int64_t batch,
                         float *y, int path);

#endif /* DNNZ_HAM_H */
