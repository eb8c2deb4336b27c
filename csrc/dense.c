/* dense.c: the `dense` encoding (pydnnz/encodings/dense.py; declarations in enc.h): validation
 * and y = x @ W.T through the shared tile driver (kern.h), W tiles read in place.
 */
#include "enc.h"
#include "kern.h"

#include <string.h>

#define RT DNNZ_KERN_RT

int dnnz_enc_dense_validate(const struct dnnz_dense *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    DNNZ_CHECK(dnnz_check_dims(m->rows, m->cols, err));
    int64_t n = m->rows * m->cols;
    if (m->values_len != n || (n && !m->values))
        return dnnz_fail(err, DNNZ_FIELD_VALUES, -1, m->values_len < n ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t bad = dnnz_find_bad_value(m->values, n, 0);
    if (bad >= 0)
        return dnnz_fail(err, DNNZ_FIELD_VALUES, bad, DNNZ_E_CORRUPT);
    return DNNZ_OK;
}

/* A tile of W: read in place when it lies inside the matrix, else copied and zero-padded. */
static const float *decode_dense_tile(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                      int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride)
{
    (void)cursor;
    if (nr == RT && kc == kcp) { /* whole tile inside the matrix: read it in place */
        *stride = c->cols;
        return ((const struct dnnz_dense *)c->m)->values + r * c->cols + k0;
    }
    *stride = kcp;
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        int64_t done = 0;
        if (rr < nr) {
            memcpy(dst, ((const struct dnnz_dense *)c->m)->values + (r + rr) * c->cols + k0, (size_t)kc * 4);
            done = kc;
        }
        memset(dst + done, 0, (size_t)(kcp - done) * 4);
    }
    return wbuf;
}

int dnnz_enc_dense_matmul(const struct dnnz_dense *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    struct dnnz_tiles c;
    memset(&c, 0, sizeof c);
    c.path = dnnz_cpu_get_path();
    if (c.path < 0)
        return DNNZ_E_UNSUPPORTED;
    c.m = m;
    c.tile = decode_dense_tile;
    c.rows = m->rows;
    c.cols = m->cols;
    c.batch = batch;
    c.y = y;
    return dnnz_tiles_run(&c, x);
}
