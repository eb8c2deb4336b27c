/* conv.c: grouped products of an encoded weight (see conv.h). */
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "cpu.h"

struct conv_ctx {
    const float *w;    /* decoded rows of groups g0 .. g0 + ng - 1 */
    const float *cols; /* (groups, n, per_in) */
    float *y;          /* (groups, n, per_out) */
    int64_t g0, n, per_in, per_out;
};

/* One group of the decoded block: y_g[i, o] = sum_j cols_g[i, j] * w_g[o, j] (a fixed order). */
static void conv_group_task(void *vc, int64_t task, int worker)
{
    const struct conv_ctx *c = vc;
    const int64_t g = c->g0 + task, pin = c->per_in, pout = c->per_out;
    const float *w = c->w + task * pout * pin;
    const float *x = c->cols + g * c->n * pin;
    float *y = c->y + g * c->n * pout;
    (void)worker;
    for (int64_t i = 0; i < c->n; i++) {
        const float *xi = x + i * pin;
        for (int64_t o = 0; o < pout; o++) {
            const float *wo = w + o * pin;
            float s = 0.0f;
            for (int64_t j = 0; j < pin; j++)
                s += xi[j] * wo[j];
            y[i * pout + o] = s;
        }
    }
}

int dnnz_conv_grouped(int kind, const void *m, const float *cols, int64_t groups, int64_t n, float *y)
{
    int64_t rows, pin;
    DNNZ_CHECK(dnnz_rows_shape(kind, m, &rows, &pin));
    if (groups < 1 || rows % groups || n < 0)
        return DNNZ_E_ARGUMENT;
    const int64_t pout = rows / groups;
    if (rows == 0 || n == 0)
        return DNNZ_OK;
    if (!y || (pin > 0 && !cols))
        return DNNZ_E_ARGUMENT;
    if (pin == 0) {
        memset(y, 0, (size_t)(groups * n * pout) * sizeof *y);
        return DNNZ_OK;
    }
    const int64_t per_group = pout * pin;
    if (pout < DNNZ_CONV_SMALL_OUT && per_group <= DNNZ_CONV_WBUF) {
        int64_t block = DNNZ_CONV_WBUF / per_group; /* groups per decoded block */
        if (block > groups)
            block = groups;
        float *w = malloc((size_t)(block * per_group) * sizeof *w);
        if (!w)
            return DNNZ_E_ALLOC;
        int st = DNNZ_OK;
        for (int64_t g0 = 0; g0 < groups && st == DNNZ_OK; g0 += block) {
            int64_t ng = groups - g0 < block ? groups - g0 : block;
            union dnnz_rows_any v;
            st = dnnz_rows_view(kind, m, g0 * pout, ng * pout, &v);
            if (st == DNNZ_OK)
                st = dnnz_rows_decode_all(kind, &v, w);
            if (st == DNNZ_OK) {
                struct conv_ctx c = {w, cols, y, g0, n, pin, pout};
                dnnz_cpu_parallel(ng, conv_group_task, &c);
            }
        }
        free(w);
        return st;
    }
    for (int64_t g = 0; g < groups; g++) {
        union dnnz_rows_any v;
        DNNZ_CHECK(dnnz_rows_view(kind, m, g * pout, pout, &v));
        DNNZ_CHECK(dnnz_rows_matmul(kind, &v, cols + g * n * pin, n, y + g * n * pout));
    }
    return DNNZ_OK;
}
