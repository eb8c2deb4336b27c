/* conv.c: grouped products of an encoded weight (see conv.h). */
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "cpu.h"
#include "kern.h"

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

/* ---- depthwise, direct ------------------------------------------------------------------- */

/* Output rows are computed a strip at a time from a per-thread scratch copy of the input rows the
 * strip reads: zero padding in place (rows and columns outside the input are zero) and columns
 * split by residue modulo the column stride (plane c % sw holds padded column c at c / sw), so
 * every kernel tap reads a contiguous run of the scratch for consecutive output columns. Each
 * output value is bias + the sum of its taps in (u, v) order, accumulated in registers. */

#define DW_SCRATCH (1 << 14) /* floats of scratch per thread (64 KiB), one strip row at least */

struct dw_ctx {
    const struct dnnz_conv_geom *g;
    const float *w; /* decoded rows of output channels oc0 .. oc0 + nch - 1 */
    const float *x, *bias;
    float *y;
    float *scratch; /* DW per-thread blocks of scr_floats */
    const int64_t *toff; /* kh * kw: where tap (u, v) reads, relative to its output row's scratch row */
    int64_t oc0, nch, strip, rmax, wq, scr_floats;
    int path;
};

/* The strip geometry shared by the row kernels. */
struct dw_strip {
    const float *scr; /* plane ph, scratch row i: scr + (ph * rmax + i) * wq */
    const float *w;   /* kh * kw taps */
    const int64_t *toff; /* tap t of output row p reads scr + p * sh * wq + toff[t] + q */
    float *y;         /* first output row of the strip */
    float bias;
    int64_t np, taps, wq, ow, sh;
    int k3; /* kw = 3, dw = 1 and sw = 1: dw_tile3_avx512 (1); sw = 2: dw_tile3s2_avx512 (2); else 0 */
};

/* Scratch rows ih0 .. ih0 + rows - 1 of one input channel: plane ph, row i, column j holds
 * x[ih0 + i, j * sw + ph - pl], zero outside the input. */
static void dw_fill_ref(const struct dnnz_conv_geom *g, const float *xc, int64_t ih0, int64_t rows, int64_t rmax,
                        int64_t wq, float *scr)
{
    for (int64_t ph = 0; ph < g->sw; ph++) {
        /* valid columns: 0 <= j * sw + ph - pl < w */
        int64_t j0 = g->pl > ph ? (g->pl - ph + g->sw - 1) / g->sw : 0;
        int64_t j1 = (g->w + g->pl - ph + g->sw - 1) / g->sw;
        if (j0 > wq)
            j0 = wq;
        if (j1 > wq)
            j1 = wq;
        if (j1 < j0)
            j1 = j0;
        for (int64_t i = 0; i < rows; i++) {
            float *dst = scr + (ph * rmax + i) * wq;
            const int64_t ih = ih0 + i;
            if (ih < 0 || ih >= g->h) {
                memset(dst, 0, (size_t)wq * sizeof *dst);
                continue;
            }
            const float *src = xc + ih * g->w + ph - g->pl;
            for (int64_t j = 0; j < j0; j++)
                dst[j] = 0.0f;
            for (int64_t j = j0; j < j1; j++)
                dst[j] = src[j * g->sw];
            for (int64_t j = j1; j < wq; j++)
                dst[j] = 0.0f;
        }
    }
}

#if DNNZ_X86
/* Lanes l of 16 with lo <= l < hi (as a mask). */
static inline __mmask16 dw_range_mask(int64_t lo, int64_t hi)
{
    if (lo < 0)
        lo = 0;
    if (hi > 16)
        hi = 16;
    if (hi <= lo)
        return 0;
    return (__mmask16)((((uint32_t)1 << hi) - 1) & ~(((uint32_t)1 << lo) - 1));
}

/* dw_fill_ref with masked vector loads (no branch per column) for column strides 1 and 2;
 * wq is a multiple of 16. Masked-off lanes are never read. */
static DNNZ_T_AVX512 void dw_fill_avx512(const struct dnnz_conv_geom *g, const float *xc, int64_t ih0, int64_t rows,
                                         int64_t rmax, int64_t wq, float *scr)
{
    if (g->sw > 2) {
        dw_fill_ref(g, xc, ih0, rows, rmax, wq, scr);
        return;
    }
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t i = 0; i < rows; i++) {
        float *d0 = scr + i * wq, *d1 = scr + (rmax + i) * wq;
        const int64_t ih = ih0 + i;
        if (ih < 0 || ih >= g->h) {
            for (int64_t j = 0; j < wq; j += 16) {
                _mm512_storeu_ps(d0 + j, _mm512_setzero_ps());
                if (g->sw == 2)
                    _mm512_storeu_ps(d1 + j, _mm512_setzero_ps());
            }
            continue;
        }
        const uintptr_t row = (uintptr_t)(xc + ih * g->w);
        if (g->sw == 1) {
            for (int64_t j = 0; j < wq; j += 16) {
                const int64_t iw = j - g->pl; /* input column of lane 0 */
                const __mmask16 mk = dw_range_mask(-iw, g->w - iw);
                _mm512_storeu_ps(d0 + j, _mm512_maskz_loadu_ps(mk, (const void *)(row + (uintptr_t)iw * 4)));
            }
        } else {
            for (int64_t j = 0; j < wq; j += 16) {
                const int64_t iw = 2 * j - g->pl; /* input column of lane 0 of the 32 read */
                const __m512 a = _mm512_maskz_loadu_ps(dw_range_mask(-iw, g->w - iw),
                                                       (const void *)(row + (uintptr_t)iw * 4));
                const __m512 b = _mm512_maskz_loadu_ps(dw_range_mask(-iw - 16, g->w - iw - 16),
                                                       (const void *)(row + (uintptr_t)(iw + 16) * 4));
                _mm512_storeu_ps(d0 + j, _mm512_permutex2var_ps(a, even, b));
                _mm512_storeu_ps(d1 + j, _mm512_permutex2var_ps(a, odd, b));
            }
        }
    }
}
#endif

static void dw_rows_ref(const struct dw_strip *s)
{
    for (int64_t p = 0; p < s->np; p++) {
        float *yr = s->y + p * s->ow;
        const float *row = s->scr + p * s->sh * s->wq;
        for (int64_t q = 0; q < s->ow; q++) {
            float acc = s->bias;
            for (int64_t t = 0; t < s->taps; t++)
                acc += s->w[t] * row[s->toff[t] + q];
            yr[q] = acc;
        }
    }
}

#if DNNZ_X86
/* The depthwise tiles' start (RB x NV accumulators of vector type VT, each the bias) and end (each
 * accumulator stored at its row and column, W floats a vector, the last one of a row through the
 * `tail` mask); every tile below is RB output rows x NV vectors from column q0 of output row p. */
#define DW_TILE_START(VT, SET1)                                                                   \
    VT acc[4][4];                                                                                 \
    _Pragma("GCC unroll 4") for (int r = 0; r < RB; r++)                                          \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] = SET1(s->bias)
#define DW_TILE_STORE(W, STORE, MASK_STORE)                                                       \
    do {                                                                                          \
        _Pragma("GCC unroll 4") for (int r = 0; r < RB; r++) {                                    \
            float *yr = s->y + (p + r) * s->ow + q0;                                              \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV - 1; j++) STORE(yr + (W) * j, acc[r][j]); \
            MASK_STORE(yr + (W) * (NV - 1), tail, acc[r][NV - 1]);                                \
        }                                                                                         \
    } while (0)

/* RB output rows x NV vectors of 16 columns from column q0 (the last vector masked by `tail`). */
DNNZ_INLINE DNNZ_T_AVX512 void dw_tile_avx512(const struct dw_strip *s, int64_t p, int64_t q0, const int RB,
                                               const int NV, __mmask16 tail)
{
    DW_TILE_START(__m512, _mm512_set1_ps);
    const float *base = s->scr + p * s->sh * s->wq + q0;
    const int64_t rstep = s->sh * s->wq;
    for (int64_t t = 0; t < s->taps; t++) {
        const float *src = base + s->toff[t];
        const __m512 wv = _mm512_set1_ps(s->w[t]);
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                acc[r][j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(src + r * rstep + 16 * j), acc[r][j]);
    }
    DW_TILE_STORE(16, _mm512_storeu_ps, _mm512_mask_storeu_ps);
}

/* dw_tile_avx512 for kernel rows of three adjacent taps (kw = 3, column stride and dilation 1):
 * per kernel row, each 16-column vector of the input is loaded once and its two shifted copies
 * come from VALIGND with the next vector, instead of three unaligned loads (two of which cross a
 * cache line). Same sums in the same order as dw_tile_avx512. */
DNNZ_INLINE DNNZ_T_AVX512 void dw_tile3_avx512(const struct dw_strip *s, int64_t p, int64_t q0, const int RB,
                                                const int NV, __mmask16 tail)
{
    DW_TILE_START(__m512, _mm512_set1_ps);
    const float *base = s->scr + p * s->sh * s->wq + q0;
    const int64_t rstep = s->sh * s->wq;
    for (int64_t u = 0; u < s->taps / 3; u++) {
        const float *src = base + s->toff[3 * u];
        const __m512 w0 = _mm512_set1_ps(s->w[3 * u]), w1 = _mm512_set1_ps(s->w[3 * u + 1]),
                     w2 = _mm512_set1_ps(s->w[3 * u + 2]);
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) {
            const float *sr = src + r * rstep;
            __m512i a = _mm512_castps_si512(_mm512_loadu_ps(sr));
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) {
                const __m512i b = _mm512_castps_si512(_mm512_loadu_ps(sr + 16 * (j + 1)));
                acc[r][j] = _mm512_fmadd_ps(w0, _mm512_castsi512_ps(a), acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(w1, _mm512_castsi512_ps(_mm512_alignr_epi32(b, a, 1)), acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(w2, _mm512_castsi512_ps(_mm512_alignr_epi32(b, a, 2)), acc[r][j]);
                a = b;
            }
        }
    }
    DW_TILE_STORE(16, _mm512_storeu_ps, _mm512_mask_storeu_ps);
}

/* The same for kw = 3 at column stride 2 (dilation 1): taps 0 and 2 read plane 0 at columns q and
 * q + 1, tap 1 plane 1 at column q; tap 2's vector is VALIGND of tap 0's and the next one. */
DNNZ_INLINE DNNZ_T_AVX512 void dw_tile3s2_avx512(const struct dw_strip *s, int64_t p, int64_t q0, const int RB,
                                                  const int NV, __mmask16 tail)
{
    DW_TILE_START(__m512, _mm512_set1_ps);
    const float *base = s->scr + p * s->sh * s->wq + q0;
    const int64_t rstep = s->sh * s->wq;
    for (int64_t u = 0; u < s->taps / 3; u++) {
        const float *src0 = base + s->toff[3 * u], *src1 = base + s->toff[3 * u + 1];
        const __m512 w0 = _mm512_set1_ps(s->w[3 * u]), w1 = _mm512_set1_ps(s->w[3 * u + 1]),
                     w2 = _mm512_set1_ps(s->w[3 * u + 2]);
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++) {
            const float *sr0 = src0 + r * rstep, *sr1 = src1 + r * rstep;
            __m512i a = _mm512_castps_si512(_mm512_loadu_ps(sr0));
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) {
                const __m512i b = _mm512_castps_si512(_mm512_loadu_ps(sr0 + 16 * (j + 1)));
                acc[r][j] = _mm512_fmadd_ps(w0, _mm512_castsi512_ps(a), acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(sr1 + 16 * j), acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(w2, _mm512_castsi512_ps(_mm512_alignr_epi32(b, a, 1)), acc[r][j]);
                a = b;
            }
        }
    }
    DW_TILE_STORE(16, _mm512_storeu_ps, _mm512_mask_storeu_ps);
}

#define DW_TILE_AVX512(RB, NV, M)                          \
    do {                                                   \
        if (k3 == 1)                                       \
            dw_tile3_avx512(s, p, q0, RB, NV, M);          \
        else if (k3 == 2)                                  \
            dw_tile3s2_avx512(s, p, q0, RB, NV, M);        \
        else                                               \
            dw_tile_avx512(s, p, q0, RB, NV, M);           \
    } while (0)

static DNNZ_T_AVX512 void dw_rows_avx512(const struct dw_strip *s)
{
    const int64_t nvec = (s->ow + 15) / 16;
    const int rem = (int)(s->ow - 16 * (nvec - 1));
    const __mmask16 tail = (__mmask16)((1u << rem) - 1);
    const __mmask16 full = (__mmask16)0xffff;
    const int k3 = s->k3;
    for (int64_t p = 0; p < s->np;) {
        int64_t q0 = 0;
        if (nvec == 1) { /* narrow rows: up to four rows at once for independent sums */
            switch (s->np - p < 4 ? s->np - p : 4) {
            case 4: DW_TILE_AVX512(4, 1, tail); p += 4; break;
            case 3: DW_TILE_AVX512(3, 1, tail); p += 3; break;
            case 2: DW_TILE_AVX512(2, 1, tail); p += 2; break;
            default: DW_TILE_AVX512(1, 1, tail); p += 1; break;
            }
            continue;
        }
        if (nvec == 2 && s->np - p >= 2) {
            DW_TILE_AVX512(2, 2, tail);
            p += 2;
            continue;
        }
        int64_t left = nvec;
        for (; left > 4; left -= 4, q0 += 64)
            DW_TILE_AVX512(1, 4, full);
        switch (left) {
        case 4: DW_TILE_AVX512(1, 4, tail); break;
        case 3: DW_TILE_AVX512(1, 3, tail); break;
        case 2: DW_TILE_AVX512(1, 2, tail); break;
        default: DW_TILE_AVX512(1, 1, tail); break;
        }
        p++;
    }
}

/* AVX2: the same with 8 columns a vector; the last vector is stored through a lane mask. */
DNNZ_INLINE DNNZ_T_AVX2 void dw_tile_avx2(const struct dw_strip *s, int64_t p, int64_t q0, const int RB,
                                           const int NV, __m256i tail)
{
    DW_TILE_START(__m256, _mm256_set1_ps);
    const float *base = s->scr + p * s->sh * s->wq + q0;
    const int64_t rstep = s->sh * s->wq;
    for (int64_t t = 0; t < s->taps; t++) {
        const float *src = base + s->toff[t];
        const __m256 wv = _mm256_set1_ps(s->w[t]);
#pragma GCC unroll 4
        for (int r = 0; r < RB; r++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++)
                acc[r][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(src + r * rstep + 8 * j), acc[r][j]);
    }
    DW_TILE_STORE(8, _mm256_storeu_ps, _mm256_maskstore_ps);
}

static DNNZ_T_AVX2 void dw_rows_avx2(const struct dw_strip *s)
{
    const int64_t nvec = (s->ow + 7) / 8;
    const int rem = (int)(s->ow - 8 * (nvec - 1));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane);
    const __m256i full = _mm256_set1_epi32(-1);
    for (int64_t p = 0; p < s->np;) {
        if (nvec == 1 && s->np - p >= 4) {
            dw_tile_avx2(s, p, 0, 4, 1, tail);
            p += 4;
            continue;
        }
        if (nvec == 2 && s->np - p >= 2) {
            dw_tile_avx2(s, p, 0, 2, 2, tail);
            p += 2;
            continue;
        }
        int64_t q0 = 0, left = nvec;
        for (; left > 4; left -= 4, q0 += 32)
            dw_tile_avx2(s, p, q0, 1, 4, full);
        switch (left) {
        case 4: dw_tile_avx2(s, p, q0, 1, 4, tail); break;
        case 3: dw_tile_avx2(s, p, q0, 1, 3, tail); break;
        case 2: dw_tile_avx2(s, p, q0, 1, 2, tail); break;
        default: dw_tile_avx2(s, p, q0, 1, 1, tail); break;
        }
        p++;
    }
}
#undef DW_TILE_START
#undef DW_TILE_STORE
#endif

/* Task t: sample t / nch, output channel oc0 + t % nch, every strip of its output rows. */
static void dw_task(void *vc, int64_t task, int worker)
{
    const struct dw_ctx *c = vc;
    const struct dnnz_conv_geom *g = c->g;
    const int64_t b = task / c->nch, i = task % c->nch;
    const int64_t oc = c->oc0 + i, ic = oc / g->mult, outc = g->channels * g->mult;
    float *scr = c->scratch + (int64_t)worker * c->scr_floats;
    const float *xc = c->x + (b * g->channels + ic) * g->h * g->w;
    struct dw_strip s = {scr, c->w + i * g->kh * g->kw, c->toff, NULL, c->bias ? c->bias[oc] : 0.0f, 0,
                         g->kh * g->kw, c->wq, g->ow, g->sh,
                         g->kw == 3 && g->dw == 1 && g->sw <= 2 ? (int)g->sw : 0};
    void (*rows)(const struct dw_strip *) = dw_rows_ref;
    void (*fill)(const struct dnnz_conv_geom *, const float *, int64_t, int64_t, int64_t, int64_t, float *) =
        dw_fill_ref;
#if DNNZ_X86
    if (c->path == DNNZ_CPU_AVX512) {
        rows = dw_rows_avx512;
        fill = dw_fill_avx512;
    } else if (c->path == DNNZ_CPU_AVX2) {
        rows = dw_rows_avx2;
    }
#endif
    for (int64_t p0 = 0; p0 < g->oh; p0 += c->strip) {
        s.np = g->oh - p0 < c->strip ? g->oh - p0 : c->strip;
        fill(g, xc, p0 * g->sh - g->pt, (s.np - 1) * g->sh + (g->kh - 1) * g->dh + 1, c->rmax, c->wq, scr);
        s.y = c->y + ((b * outc + oc) * g->oh + p0) * g->ow;
        rows(&s);
    }
}

/* Rows r0 .. r0 + n - 1 of m, decoded into w. Short `im` rows (a whole row in one 8-byte word:
 * depthwise kernels) are unpacked here, else the encoding's own decoder runs on the row view. */
static int dw_decode(int kind, const void *m, int64_t r0, int64_t n, float *w)
{
    if (kind == DNNZ_ROWS_IM) {
        const struct dnnz_im *im = m;
        const int64_t rb = dnnz_enc_im_row_bytes(im->cols, im->bits);
        if (im->bits > 0 && rb > 0 && rb <= 8) {
            for (int64_t r = 0; r < n; r++) {
                const uint8_t *row = im->indices + (r0 + r) * rb;
                uint64_t word = 0;
                for (int64_t b = 0; b < rb; b++)
                    word |= (uint64_t)row[b] << (56 - 8 * b);
                for (int64_t j = 0; j < im->cols; j++)
                    w[r * im->cols + j] = im->codebook[(word << (j * im->bits)) >> (64 - im->bits)];
            }
            return DNNZ_OK;
        }
    }
    union dnnz_rows_any v;
    DNNZ_CHECK(dnnz_rows_view(kind, m, r0, n, &v));
    return dnnz_rows_decode_all(kind, &v, w);
}

#define DW_MAX_GEOM (1LL << 30)

int dnnz_conv_depthwise(int kind, const void *m, const struct dnnz_conv_geom *g, const float *x, const float *bias,
                        float *y)
{
    int64_t rows, cols;
    DNNZ_CHECK(dnnz_rows_shape(kind, m, &rows, &cols));
    if (!g || g->batch < 0 || g->channels < 1 || g->mult < 1 || g->kh < 1 || g->kw < 1 || g->sh < 1 ||
        g->sw < 1 || g->dh < 1 || g->dw < 1 || g->oh < 0 || g->ow < 0 || g->h < 0 || g->w < 0 || g->pt < 0 ||
        g->pl < 0)
        return DNNZ_E_ARGUMENT;
    const int64_t dims[] = {g->batch, g->channels, g->mult, g->h, g->w, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw,
                            g->oh, g->ow, g->pt, g->pl};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i] > DW_MAX_GEOM)
            return DNNZ_E_LIMIT;
    int64_t outc, t;
    if (!dnnz_mul_ok(g->channels, g->mult, &outc) || rows != outc || !dnnz_mul_ok(g->kh, g->kw, &t) || cols != t)
        return DNNZ_E_ARGUMENT;
    /* the sizes of x and y, in floats, fit int64 */
    if (!dnnz_mul_ok(g->h, g->w, &t) || !dnnz_mul_ok(t, g->channels, &t) || !dnnz_mul_ok(t, g->batch, &t) ||
        !dnnz_mul_ok(g->oh, g->ow, &t) || !dnnz_mul_ok(t, outc, &t) || !dnnz_mul_ok(t, g->batch, &t))
        return DNNZ_E_LIMIT;
    if (g->batch == 0 || g->oh == 0 || g->ow == 0)
        return DNNZ_OK;
    if (!x || !y)
        return DNNZ_E_ARGUMENT;
    const int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    /* scratch: sw planes of rmax rows of wq columns (whole vectors past ow: tiles read them) */
    const int64_t span = (g->kw - 1) * g->dw / g->sw;
    const int64_t wq = ((g->ow + 15) / 16 * 16 + span + 15) / 16 * 16;
    const int64_t per_row = g->sw * wq, extra = (g->kh - 1) * g->dh + 1;
    int64_t strip = (DW_SCRATCH / per_row - extra) / g->sh + 1;
    if (strip < 1 || DW_SCRATCH / per_row < extra)
        strip = 1;
    if (strip > g->oh)
        strip = g->oh;
    const int64_t rmax = (strip - 1) * g->sh + extra;
    int64_t scr_floats;
    if (!dnnz_mul_ok(rmax, per_row, &scr_floats) || scr_floats > DW_MAX_GEOM)
        return DNNZ_E_LIMIT;
    int64_t block = DNNZ_CONV_WBUF / cols; /* output channels per decoded block */
    if (block < 1)
        return DNNZ_E_LIMIT;
    if (block > rows)
        block = rows;
    const int threads = dnnz_cpu_get_threads();
    float *w = malloc((size_t)(block * cols) * sizeof *w);
    float *scratch = NULL; /* 64-byte aligned: rows start on cache lines (wq is a multiple of 16) */
    if (posix_memalign((void **)&scratch, 64, (size_t)(scr_floats * threads) * sizeof *scratch))
        scratch = NULL;
    int64_t *toff = malloc((size_t)cols * sizeof *toff);
    int st = w && scratch && toff ? DNNZ_OK : DNNZ_E_ALLOC;
    for (int64_t u = 0; st == DNNZ_OK && u < g->kh; u++)
        for (int64_t v = 0; v < g->kw; v++) {
            const int64_t off = v * g->dw;
            toff[u * g->kw + v] = ((off % g->sw) * rmax + u * g->dh) * wq + off / g->sw;
        }
    for (int64_t oc0 = 0; oc0 < rows && st == DNNZ_OK; oc0 += block) {
        int64_t n = rows - oc0 < block ? rows - oc0 : block;
        st = dw_decode(kind, m, oc0, n, w);
        if (st == DNNZ_OK) {
            struct dw_ctx c = {g, w, x, bias, y, scratch, toff, oc0, n, strip, rmax, wq, scr_floats, path};
            dnnz_cpu_parallel(n * g->batch, dw_task, &c);
        }
    }
    free(w);
    free(scratch);
    free(toff);
    return st;
}
