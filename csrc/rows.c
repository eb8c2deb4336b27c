/* rows.c: row blocks of an encoded matrix as matrices of their own (see rows.h). */
#include <string.h>

#include "rows.h"

int dnnz_rows_shape(int kind, const void *m, int64_t *rows, int64_t *cols)
{
    if (!m || !rows || !cols)
        return DNNZ_E_ARGUMENT;
    switch (kind) {
    case DNNZ_ROWS_DENSE: *rows = ((const struct dnnz_dense *)m)->rows; *cols = ((const struct dnnz_dense *)m)->cols; break;
    case DNNZ_ROWS_CSC: *rows = ((const struct dnnz_csc *)m)->rows; *cols = ((const struct dnnz_csc *)m)->cols; break;
    case DNNZ_ROWS_IM: *rows = ((const struct dnnz_im *)m)->rows; *cols = ((const struct dnnz_im *)m)->cols; break;
    case DNNZ_ROWS_HAM: *rows = ((const struct dnnz_ham *)m)->rows; *cols = ((const struct dnnz_ham *)m)->cols; break;
    case DNNZ_ROWS_SHAM: *rows = ((const struct dnnz_sham *)m)->rows; *cols = ((const struct dnnz_sham *)m)->cols; break;
    case DNNZ_ROWS_RLHAM: *rows = ((const struct dnnz_rlham *)m)->rows; *cols = ((const struct dnnz_rlham *)m)->cols; break;
    default: return DNNZ_E_ARGUMENT;
    }
    return DNNZ_OK;
}

int dnnz_rows_view(int kind, const void *m, int64_t r0, int64_t n, union dnnz_rows_any *out)
{
    int64_t rows, cols;
    DNNZ_CHECK(dnnz_rows_shape(kind, m, &rows, &cols));
    if (!out || r0 < 0 || n < 0 || r0 > rows || n > rows - r0)
        return DNNZ_E_ARGUMENT;
    switch (kind) {
    case DNNZ_ROWS_DENSE:
        out->dense = *(const struct dnnz_dense *)m;
        out->dense.values += r0 * cols;
        out->dense.values_len = n * cols;
        out->dense.rows = n;
        break;
    case DNNZ_ROWS_CSC: /* row pointers are absolute positions in colidx / vindex / values */
        out->csc = *(const struct dnnz_csc *)m;
        out->csc.rowptr += r0 * out->csc.ptr_bytes;
        out->csc.rowptr_len = n + 1;
        out->csc.rows = n;
        break;
    case DNNZ_ROWS_IM: {
        int64_t stride = dnnz_enc_im_row_bytes(cols, ((const struct dnnz_im *)m)->bits);
        out->im = *(const struct dnnz_im *)m;
        out->im.indices += r0 * stride;
        out->im.indices_len = n * stride;
        out->im.rows = n;
        break;
    }
    case DNNZ_ROWS_HAM: /* bit offsets are absolute positions in the payload */
        out->ham = *(const struct dnnz_ham *)m;
        out->ham.offsets += r0 * out->ham.off_bytes;
        out->ham.offsets_len = n + 1;
        out->ham.rows = n;
        break;
    case DNNZ_ROWS_SHAM:
        out->sham = *(const struct dnnz_sham *)m;
        out->sham.rowptr += r0 * out->sham.ptr_bytes;
        out->sham.rowptr_len = n + 1;
        out->sham.offsets += r0 * out->sham.off_bytes;
        out->sham.offsets_len = n + 1;
        out->sham.rows = n;
        break;
    case DNNZ_ROWS_RLHAM: /* offsets_len counts bytes here */
        out->rlham = *(const struct dnnz_rlham *)m;
        out->rlham.offsets += r0 * out->rlham.off_bytes;
        out->rlham.offsets_len = (n + 1) * out->rlham.off_bytes;
        out->rlham.rows = n;
        break;
    }
    return DNNZ_OK;
}

int dnnz_rows_decode_all(int kind, const void *m, float *dst)
{
    switch (kind) {
    case DNNZ_ROWS_DENSE: {
        const struct dnnz_dense *d = m;
        if (d->rows > 0 && d->cols > 0)
            memcpy(dst, d->values, (size_t)(d->rows * d->cols) * sizeof *dst);
        return DNNZ_OK;
    }
    case DNNZ_ROWS_CSC: return dnnz_enc_csc_decode(m, dst);
    case DNNZ_ROWS_IM: return dnnz_enc_im_decode(m, dst);
    case DNNZ_ROWS_HAM: return dnnz_ham_decode(m, dst);
    case DNNZ_ROWS_SHAM: return dnnz_sham_decode(m, dst);
    case DNNZ_ROWS_RLHAM: return dnnz_rlham_decode(m, dst);
    }
    return DNNZ_E_ARGUMENT;
}

int dnnz_rows_matmul(int kind, const void *m, const float *x, int64_t batch, float *y)
{
    switch (kind) {
    case DNNZ_ROWS_DENSE: return dnnz_enc_dense_matmul(m, x, batch, y);
    case DNNZ_ROWS_CSC: return dnnz_enc_csc_matmul(m, x, batch, y);
    case DNNZ_ROWS_IM: return dnnz_enc_im_matmul(m, x, batch, y);
    case DNNZ_ROWS_HAM: return dnnz_ham_matmul(m, x, batch, y);
    case DNNZ_ROWS_SHAM: return dnnz_sham_matmul(m, x, batch, y);
    case DNNZ_ROWS_RLHAM: return dnnz_rlham_matmul(m, x, batch, y);
    }
    return DNNZ_E_ARGUMENT;
}

int dnnz_rows_decode(int kind, const void *m, const int64_t *ids, int64_t n, float *dst, int64_t *bad)
{
    int64_t rows, cols;
    DNNZ_CHECK(dnnz_rows_shape(kind, m, &rows, &cols));
    if (n < 0 || (n > 0 && (!ids || (!dst && cols > 0))))
        return DNNZ_E_ARGUMENT;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= rows) {
            if (bad)
                *bad = i;
            return DNNZ_E_ARGUMENT;
        }
    if (cols == 0)
        return DNNZ_OK;
    for (int64_t i = 0; i < n;) {
        int64_t j = i + 1;
        while (j < n && ids[j] == ids[j - 1] + 1)
            j++;
        union dnnz_rows_any v;
        DNNZ_CHECK(dnnz_rows_view(kind, m, ids[i], j - i, &v));
        DNNZ_CHECK(dnnz_rows_decode_all(kind, &v, dst + i * cols));
        i = j;
    }
    return DNNZ_OK;
}
