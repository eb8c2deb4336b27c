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

/* ---- depthwise, direct -------------------------------------------------------------------- */

struct dw_ctx {
    const struct dnnz_conv_geom *g;
    const float *w; /* decoded rows of output channels oc0 .. */
    const float *x;
    float *y;
    int64_t oc0;
};

/* One output channel of every sample: accumulate kernel tap by tap over whole output rows, so the
 * inner loop runs along the output row (contiguous in y, strided by sw in x). */
static void dw_task(void *vc, int64_t task, int worker)
{
    const struct dw_ctx *c = vc;
    const struct dnnz_conv_geom *g = c->g;
    const int64_t oc = c->oc0 + task, ic = oc / g->mult, outc = g->channels * g->mult;
    const float *w = c->w + task * g->kh * g->kw;
    (void)worker;
    for (int64_t b = 0; b < g->batch; b++) {
        const float *xc = c->x + (b * g->channels + ic) * g->h * g->w;
        float *yc = c->y + (b * outc + oc) * g->oh * g->ow;
        for (int64_t p = 0; p < g->oh; p++) {
            float *yr = yc + p * g->ow;
            for (int64_t q = 0; q < g->ow; q++)
                yr[q] = 0.0f;
            for (int64_t u = 0; u < g->kh; u++) {
                const float *xr = xc + (p * g->sh + u * g->dh) * g->w;
                for (int64_t v = 0; v < g->kw; v++) {
                    const float wv = w[u * g->kw + v];
                    const float *xs = xr + v * g->dw;
                    if (g->sw == 1)
                        for (int64_t q = 0; q < g->ow; q++)
                            yr[q] += wv * xs[q];
                    else
                        for (int64_t q = 0; q < g->ow; q++)
                            yr[q] += wv * xs[q * g->sw];
                }
            }
        }
    }
}

int dnnz_conv_depthwise(int kind, const void *m, const struct dnnz_conv_geom *g, const float *x, float *y)
{
    int64_t rows, cols;
    DNNZ_CHECK(dnnz_rows_shape(kind, m, &rows, &cols));
    if (!g || g->batch < 0 || g->channels < 1 || g->mult < 1 || g->kh < 1 || g->kw < 1 || g->sh < 1 ||
        g->sw < 1 || g->dh < 1 || g->dw < 1 || g->oh < 0 || g->ow < 0 || g->h < 0 || g->w < 0)
        return DNNZ_E_ARGUMENT;
    if (rows != g->channels * g->mult || cols != g->kh * g->kw)
        return DNNZ_E_ARGUMENT;
    /* every tap read stays inside the input */
    if ((g->oh > 0 && (g->oh - 1) * g->sh + (g->kh - 1) * g->dh >= g->h) ||
        (g->ow > 0 && (g->ow - 1) * g->sw + (g->kw - 1) * g->dw >= g->w))
        return DNNZ_E_ARGUMENT;
    if (g->batch == 0 || g->oh == 0 || g->ow == 0)
        return DNNZ_OK;
    if (!x || !y)
        return DNNZ_E_ARGUMENT;
    int64_t block = DNNZ_CONV_WBUF / cols; /* output channels per decoded block */
    if (block < 1)
        return DNNZ_E_LIMIT;
    if (block > rows)
        block = rows;
    float *w = malloc((size_t)(block * cols) * sizeof *w);
    if (!w)
        return DNNZ_E_ALLOC;
    int st = DNNZ_OK;
    for (int64_t oc0 = 0; oc0 < rows && st == DNNZ_OK; oc0 += block) {
        int64_t n = rows - oc0 < block ? rows - oc0 : block;
        union dnnz_rows_any v;
        st = dnnz_rows_view(kind, m, oc0, n, &v);
        if (st == DNNZ_OK)
            st = dnnz_rows_decode_all(kind, &v, w);
        if (st == DNNZ_OK) {
            struct dw_ctx c = {g, w, x, y, oc0};
            dnnz_cpu_parallel(n, dw_task, &c);
        }
    }
    free(w);
    return st;
}
