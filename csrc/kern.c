/* kern.c: the compute kernels the encodings share (see kern.h): codebook lookup, gather dot,
 * batch lanes, and the tile driver with its register-blocked micro-kernels.
 *
 * Every kernel exists as a portable `_ref` version and, unless the build has DNNZ_NO_SIMD, an
 * AVX2+FMA and an AVX-512 version (per-function target attributes; cpu.h picks one at run
 * time). Every output element is computed by one task in a fixed order, so results are
 * identical for any thread count (they differ between CPU paths: FMA contraction, lane order).
 */
#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define RT DNNZ_KERN_RT
#define KC DNNZ_KERN_KC
#define TR DNNZ_KERN_TASK_ROWS

/* ------------------------------------------------------------------------------------------ */
/* codebook lookup                                                                             */
/* ------------------------------------------------------------------------------------------ */

static void lookup_ref(const void *idx, int width, int n, const float *cb, float *w)
{
    if (width == 1) {
        const uint8_t *p = idx;
        for (int j = 0; j < n; j++)
            w[j] = cb[p[j]];
    } else {
        for (int j = 0; j < n; j++)
            w[j] = cb[dnnz_rd_le(idx, width, j)];
    }
}

#if DNNZ_X86
static DNNZ_T_AVX2 void lookup_avx2(const void *idx, int width, int n, const float *cb, int64_t k, float *w)
{
    int j = 0;
    if (width == 1 && k <= 16) {
        float cbp[16] __attribute__((aligned(32))) = {0};
        memcpy(cbp, cb, (size_t)k * 4);
        const __m256 c0 = _mm256_load_ps(cbp), c1 = _mm256_load_ps(cbp + 8);
        const __m256i seven = _mm256_set1_epi32(7);
        for (; j + 8 <= n; j += 8) {
            __m256i iv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)idx + j)));
            __m256 lo = _mm256_permutevar8x32_ps(c0, iv), hi = _mm256_permutevar8x32_ps(c1, iv);
            _mm256_storeu_ps(w + j, _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(iv, seven))));
        }
    } else {
        for (; j + 8 <= n; j += 8) {
            __m256i iv;
            if (width == 1)
                iv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)idx + j)));
            else if (width == 2)
                iv = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)idx + j)));
            else
                iv = _mm256_loadu_si256((const __m256i *)((const uint32_t *)idx + j));
            _mm256_storeu_ps(w + j, _mm256_i32gather_ps(cb, iv, 4));
        }
    }
    if (j < n)
        lookup_ref((const uint8_t *)idx + (size_t)j * width, width, n - j, cb, w + j);
}

static DNNZ_T_AVX512 void lookup_avx512(const void *idx, int width, int n, const float *cb, int64_t k, float *w)
{
    int j = 0;
    if (width == 1 && k <= 64) {
        float cbp[64] __attribute__((aligned(64))) = {0};
        memcpy(cbp, cb, (size_t)k * 4);
        const __m512 c0 = _mm512_load_ps(cbp), c1 = _mm512_load_ps(cbp + 16);
        const __m512 c2 = _mm512_load_ps(cbp + 32), c3 = _mm512_load_ps(cbp + 48);
        const uint8_t *p = idx;
        if (k <= 16) {
            for (; j + 16 <= n; j += 16) {
                __m512i iv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + j)));
                _mm512_storeu_ps(w + j, _mm512_permutexvar_ps(iv, c0));
            }
        } else if (k <= 32) {
            for (; j + 16 <= n; j += 16) {
                __m512i iv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + j)));
                _mm512_storeu_ps(w + j, _mm512_permutex2var_ps(c0, iv, c1));
            }
        } else {
            const __m512i b5 = _mm512_set1_epi32(32);
            for (; j + 16 <= n; j += 16) {
                __m512i iv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + j)));
                __m512 lo = _mm512_permutex2var_ps(c0, iv, c1), hi = _mm512_permutex2var_ps(c2, iv, c3);
                _mm512_storeu_ps(w + j, _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, b5), lo, hi));
            }
        }
    } else {
        for (; j + 16 <= n; j += 16) {
            __m512i iv;
            if (width == 1)
                iv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((const uint8_t *)idx + j)));
            else if (width == 2)
                iv = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)idx + j)));
            else
                iv = _mm512_loadu_si512((const void *)((const uint32_t *)idx + j));
            _mm512_storeu_ps(w + j, _mm512_i32gather_ps(iv, cb, 4));
        }
    }
    if (j < n)
        lookup_ref((const uint8_t *)idx + (size_t)j * width, width, n - j, cb, w + j);
}
#endif

void dnnz_kern_lookup(int path, const void *idx, int width, int n, const float *cb, int64_t k, float *w)
{
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512)
        return lookup_avx512(idx, width, n, cb, k, w);
    if (path == DNNZ_CPU_AVX2)
        return lookup_avx2(idx, width, n, cb, k, w);
#endif
    (void)path;
    (void)k;
    lookup_ref(idx, width, n, cb, w);
}

/* ------------------------------------------------------------------------------------------ */
/* gather dot                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static float gdot_ref(const float *w, const uint8_t *col, int cb, int n, const float *x)
{
    float s[4] = {0, 0, 0, 0};
    int j = 0;
    for (; j + 4 <= n; j += 4)
        for (int l = 0; l < 4; l++)
            s[l] += w[j + l] * x[dnnz_rd_le(col, cb, j + l)];
    for (; j < n; j++)
        s[0] += w[j] * x[dnnz_rd_le(col, cb, j)];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

#if DNNZ_X86
static DNNZ_T_AVX2 float gdot_avx2(const float *w, const uint8_t *col, int cb, int n, const float *x)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256i i0, i1;
        if (cb == 1) {
            i0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(col + j)));
            i1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(col + j + 8)));
        } else if (cb == 2) {
            i0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(col + 2 * j)));
            i1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(col + 2 * j + 16)));
        } else {
            i0 = _mm256_loadu_si256((const __m256i *)(col + 4 * j));
            i1 = _mm256_loadu_si256((const __m256i *)(col + 4 * j + 32));
        }
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_i32gather_ps(x, i0, 4), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_i32gather_ps(x, i1, 4), a1);
    }
    float s = dnnz_hsum_avx2(_mm256_add_ps(a0, a1));
    for (; j < n; j++)
        s += w[j] * x[dnnz_rd_le(col, cb, j)];
    return s;
}

static DNNZ_T_AVX512 float gdot_avx512(const float *w, const uint8_t *col, int cb, int n, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j < n; j += 16) {
        __mmask16 mk = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
        __m512i iv;
        if (cb == 1)
            iv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, col + j));
        else if (cb == 2)
            iv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, col + 2 * j));
        else
            iv = _mm512_maskz_loadu_epi32(mk, col + 4 * j);
        __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, iv, x, 4);
        if (j & 16)
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, w + j), g, a1);
        else
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, w + j), g, a0);
    }
    return dnnz_hsum_avx512(_mm512_add_ps(a0, a1));
}
#endif

float dnnz_kern_gather_dot(int path, const float *w, const void *col, int col_width, int n, const float *x)
{
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512)
        return gdot_avx512(w, col, col_width, n, x);
    if (path == DNNZ_CPU_AVX2)
        return gdot_avx2(w, col, col_width, n, x);
#endif
    (void)path;
    return gdot_ref(w, col, col_width, n, x);
}

/* ------------------------------------------------------------------------------------------ */
/* batch lanes                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static void lanes_ref(const float *w, const uint8_t *col, int cb, int n, const float *xt, int64_t xs, int nl,
                      float *acc)
{
    for (int j = 0; j < n; j++) {
        const float *xr = xt + (int64_t)dnnz_rd_le(col, cb, j) * xs;
        for (int l = 0; l < nl; l++)
            acc[l] += w[j] * xr[l];
    }
}

#if DNNZ_X86
/* Column indices through 1-byte-aligned types: a section may sit at any offset of a memory map
 * (little-endian, as the x86 hosts these kernels run on). */
typedef uint16_t u16_ua __attribute__((aligned(1)));
typedef uint32_t u32_ua __attribute__((aligned(1)));

/* One instantiation per (path, vectors of lanes, index type): the NV accumulators stay in
 * registers while the entries stream past. */
#define DEFINE_LANES(NAME, TGT, V, VW, NV, IT)                                                    \
    static TGT void NAME(const float *w, const IT *col, int n, const float *xt, int64_t xs,       \
                         float *acc)                                                              \
    {                                                                                             \
        V a[NV];                                                                                  \
        for (int v = 0; v < NV; v++)                                                              \
            a[v] = *(const V *)(acc + v * VW);                                                    \
        for (int j = 0; j < n; j++) {                                                             \
            const float *xr = xt + (int64_t)col[j] * xs;                                          \
            const float wj = w[j];                                                                \
            for (int v = 0; v < NV; v++)                                                          \
                a[v] += wj * *(const V *)(xr + v * VW);                                           \
        }                                                                                         \
        for (int v = 0; v < NV; v++)                                                              \
            *(V *)(acc + v * VW) = a[v];                                                          \
    }
#define DEFINE_LANES_W(P, TGT, V, VW, NV, Q)                                                      \
    DEFINE_LANES(lanes_##P##_##Q##_1, TGT, V, VW, NV, uint8_t)                                    \
    DEFINE_LANES(lanes_##P##_##Q##_2, TGT, V, VW, NV, u16_ua)                                     \
    DEFINE_LANES(lanes_##P##_##Q##_4, TGT, V, VW, NV, u32_ua)
DEFINE_LANES_W(avx2, DNNZ_T_AVX2, dnnz_v8f, 8, 2, 16)
DEFINE_LANES_W(avx2, DNNZ_T_AVX2, dnnz_v8f, 8, 4, 32)
DEFINE_LANES_W(avx2, DNNZ_T_AVX2, dnnz_v8f, 8, 6, 48)
DEFINE_LANES_W(avx2, DNNZ_T_AVX2, dnnz_v8f, 8, 8, 64)
DEFINE_LANES_W(avx512, DNNZ_T_AVX512, dnnz_v16f, 16, 1, 16)
DEFINE_LANES_W(avx512, DNNZ_T_AVX512, dnnz_v16f, 16, 2, 32)
DEFINE_LANES_W(avx512, DNNZ_T_AVX512, dnnz_v16f, 16, 3, 48)
DEFINE_LANES_W(avx512, DNNZ_T_AVX512, dnnz_v16f, 16, 4, 64)

typedef void (*lanes1_fn)(const float *, const uint8_t *, int, const float *, int64_t, float *);
typedef void (*lanes2_fn)(const float *, const u16_ua *, int, const float *, int64_t, float *);
typedef void (*lanes4_fn)(const float *, const u32_ua *, int, const float *, int64_t, float *);
#define LANES_TABLE(P)                                                                            \
    static const lanes1_fn P##_w1[4] = {lanes_##P##_16_1, lanes_##P##_32_1, lanes_##P##_48_1,      \
                                        lanes_##P##_64_1};                                        \
    static const lanes2_fn P##_w2[4] = {lanes_##P##_16_2, lanes_##P##_32_2, lanes_##P##_48_2,      \
                                        lanes_##P##_64_2};                                        \
    static const lanes4_fn P##_w4[4] = {lanes_##P##_16_4, lanes_##P##_32_4, lanes_##P##_48_4,      \
                                        lanes_##P##_64_4};
LANES_TABLE(avx2)
LANES_TABLE(avx512)
#endif

void dnnz_kern_lanes(int path, const float *w, const void *col, int col_width, int n, const float *xt, int64_t xs,
                     int nl, float *acc)
{
#if DNNZ_X86
    int q = nl / 16 - 1;
    if (path == DNNZ_CPU_AVX512 || path == DNNZ_CPU_AVX2) {
        const int p5 = path == DNNZ_CPU_AVX512;
        if (col_width == 1)
            return (p5 ? avx512_w1 : avx2_w1)[q](w, col, n, xt, xs, acc);
        if (col_width == 2)
            return (p5 ? avx512_w2 : avx2_w2)[q](w, col, n, xt, xs, acc);
        return (p5 ? avx512_w4 : avx2_w4)[q](w, col, n, xt, xs, acc);
    }
#endif
    (void)path;
    lanes_ref(w, col, col_width, n, xt, xs, nl, acc);
}

/* ------------------------------------------------------------------------------------------ */
/* tile driver and micro-kernels                                                               */
/* ------------------------------------------------------------------------------------------ */

/* The RT x kcp tile (row stride ws) times bt batch rows (stride xs): y[b * ys + r] += w[r] . x[b]. */
typedef void (*micro_fn)(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int bt,
                         float *y, int64_t ys, int nr);

static void micro_ref(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int bt, float *y,
                      int64_t ys, int nr)
{
    for (int b = 0; b < bt; b++)
        for (int rr = 0; rr < nr; rr++) {
            float s = 0.0f;
            const float *wr = w + rr * ws, *xb = x + b * xs;
            for (int64_t j = 0; j < kcp; j++)
                s += wr[j] * xb[j];
            y[b * ys + rr] += s;
        }
}

#if DNNZ_X86
/* One instantiation per batch-tile width BT so the RT x BT accumulators stay in registers. */
#define DEFINE_MICRO(NAME, TGT, V, VW, HSUM, VN, BT)                                             \
    static TGT void NAME(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs,  \
                         float *y, int64_t ys, int nr)                                         \
    {                                                                                          \
        V acc[RT][BT];                                                                         \
        for (int rr = 0; rr < RT; rr++)                                                        \
            for (int b = 0; b < BT; b++)                                                       \
                acc[rr][b] = (V){0};                                                           \
        for (int64_t j = 0; j < kcp; j += VW) {                                                \
            V w0 = *(const V *)(w + j), w1 = *(const V *)(w + ws + j);                         \
            V w2 = *(const V *)(w + 2 * ws + j), w3 = *(const V *)(w + 3 * ws + j);            \
            for (int b = 0; b < BT; b++) {                                                     \
                V xv = *(const V *)(x + b * xs + j);                                           \
                acc[0][b] += w0 * xv;                                                          \
                acc[1][b] += w1 * xv;                                                          \
                acc[2][b] += w2 * xv;                                                          \
                acc[3][b] += w3 * xv;                                                          \
            }                                                                                  \
        }                                                                                      \
        for (int b = 0; b < BT; b++)                                                           \
            for (int rr = 0; rr < nr; rr++)                                                    \
                y[b * ys + rr] += HSUM((VN)acc[rr][b]);                                        \
    }

DEFINE_MICRO(micro_avx512_1, DNNZ_T_AVX512, dnnz_v16f, 16, dnnz_hsum_avx512, __m512, 1)
DEFINE_MICRO(micro_avx512_2, DNNZ_T_AVX512, dnnz_v16f, 16, dnnz_hsum_avx512, __m512, 2)
DEFINE_MICRO(micro_avx512_3, DNNZ_T_AVX512, dnnz_v16f, 16, dnnz_hsum_avx512, __m512, 3)
DEFINE_MICRO(micro_avx512_4, DNNZ_T_AVX512, dnnz_v16f, 16, dnnz_hsum_avx512, __m512, 4)
DEFINE_MICRO(micro_avx2_1, DNNZ_T_AVX2, dnnz_v8f, 8, dnnz_hsum_avx2, __m256, 1)
DEFINE_MICRO(micro_avx2_2, DNNZ_T_AVX2, dnnz_v8f, 8, dnnz_hsum_avx2, __m256, 2)

static DNNZ_T_AVX512 void micro_avx512(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs,
                                       int bt, float *y, int64_t ys, int nr)
{
    switch (bt) {
    case 1: micro_avx512_1(w, ws, kcp, x, xs, y, ys, nr); break;
    case 2: micro_avx512_2(w, ws, kcp, x, xs, y, ys, nr); break;
    case 3: micro_avx512_3(w, ws, kcp, x, xs, y, ys, nr); break;
    default: micro_avx512_4(w, ws, kcp, x, xs, y, ys, nr); break;
    }
}

static DNNZ_T_AVX2 void micro_avx2(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int bt,
                                   float *y, int64_t ys, int nr)
{
    if (bt == 1)
        micro_avx2_1(w, ws, kcp, x, xs, y, ys, nr);
    else
        micro_avx2_2(w, ws, kcp, x, xs, y, ys, nr);
}
#endif

void dnnz_kern_micro(int path, const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int64_t batch,
                     float *y, int64_t ys, int nr)
{
    micro_fn micro = micro_ref;
    int bt_max = 1;
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512) {
        micro = micro_avx512;
        bt_max = 4;
    } else if (path == DNNZ_CPU_AVX2) {
        micro = micro_avx2;
        bt_max = 2;
    }
#endif
    (void)path;
    for (int64_t b = 0; b < batch; b += bt_max) {
        int bt = batch - b < bt_max ? (int)(batch - b) : bt_max;
        micro(w, ws, kcp, x + b * xs, xs, bt, y + b * ys, ys, nr);
    }
}

static void tiles_task(void *ctx, int64_t task, int worker)
{
    const struct dnnz_tiles *c = ctx;
    (void)worker;
    if (c->gemv && (c->batch == 1 || c->gemv_all)) {
        c->gemv(c, task);
        return;
    }
    micro_fn micro = micro_ref;
    int bt_max = 1;
#if DNNZ_X86
    if (c->path == DNNZ_CPU_AVX512) {
        micro = micro_avx512;
        bt_max = 4;
    } else if (c->path == DNNZ_CPU_AVX2) {
        micro = micro_avx2;
        bt_max = 2;
    }
#endif
    int64_t r0 = task * TR, r1 = r0 + TR < c->rows ? r0 + TR : c->rows;
    const int64_t kcm = c->kc_max ? c->kc_max : KC;
    float wbuf[RT * DNNZ_KERN_KC_MAX] __attribute__((aligned(64)));
    int64_t cursor[TR];
    for (int64_t b = 0; b < c->batch; b++)
        memset(c->y + b * c->rows + r0, 0, (size_t)(r1 - r0) * 4);
    if (c->row_start)
        for (int64_t r = r0; r < r1; r++)
            cursor[r - r0] = c->row_start(c, r);
    const int64_t n_k = (c->cols + kcm - 1) / kcm, n_r = (r1 - r0 + RT - 1) / RT;
    for (int64_t outer = 0; outer < (c->rows_outer ? n_r : n_k); outer++)
        for (int64_t inner = 0; inner < (c->rows_outer ? n_k : n_r); inner++) {
            int64_t k0 = (c->rows_outer ? inner : outer) * kcm, r = r0 + (c->rows_outer ? outer : inner) * RT;
            int64_t kc = c->cols - k0 < kcm ? c->cols - k0 : kcm, kcp = (kc + 15) & ~(int64_t)15;
            int nr = r1 - r < RT ? (int)(r1 - r) : RT;
            int64_t ws;
            const float *w = c->tile(c, r, nr, k0, kc, kcp, wbuf, cursor + (r - r0), &ws);
            for (int64_t b = 0; b < c->batch; b += bt_max) {
                int bt = c->batch - b < bt_max ? (int)(c->batch - b) : bt_max;
                micro(w, ws, kcp, c->x + b * c->xstride + k0, c->xstride, bt, c->y + b * c->rows + r, c->rows, nr);
            }
        }
}

int dnnz_tiles_run(struct dnnz_tiles *c, const float *x)
{
    if (c->kc_max < 0 || c->kc_max > DNNZ_KERN_KC_MAX || c->kc_max % 16)
        return DNNZ_E_ARGUMENT;
    if (c->rows == 0 || c->batch == 0)
        return DNNZ_OK;
    if (c->cols == 0) {
        memset(c->y, 0, (size_t)(c->rows * c->batch) * 4);
        return DNNZ_OK;
    }
    /* x padded with zeros to a multiple of 16 columns so tiles need no tail handling */
    int64_t colsp = (c->cols + 15) & ~(int64_t)15;
    float *xpad = NULL;
    if (colsp != c->cols) {
        int64_t n;
        if (!dnnz_mul_ok(colsp, c->batch, &n) || (uint64_t)n > SIZE_MAX / 4)
            return DNNZ_E_LIMIT;
        xpad = calloc((size_t)n, 4);
        if (!xpad)
            return DNNZ_E_ALLOC;
        for (int64_t b = 0; b < c->batch; b++)
            memcpy(xpad + b * colsp, x + b * c->cols, (size_t)c->cols * 4);
        c->x = xpad;
        c->xstride = colsp;
    } else {
        c->x = x;
        c->xstride = c->cols;
    }
    float *xperm = NULL;
    if (c->xperm64 && c->batch == 1) {
        /* per 64-block, element 16s + i = x[4i + s] (blocks of 64 only; the tail reads x as is) */
        xperm = malloc((size_t)c->cols * 4 + 64);
        if (!xperm) {
            free(xpad);
            return DNNZ_E_ALLOC;
        }
        for (int64_t b0 = 0; b0 + 64 <= c->cols; b0 += 64)
            for (int s = 0; s < 4; s++)
                for (int i = 0; i < 16; i++)
                    xperm[b0 + 16 * s + i] = x[b0 + 4 * i + s];
        c->xp = xperm;
    }
    dnnz_cpu_parallel((c->rows + TR - 1) / TR, tiles_task, c);
    free(xpad);
    free(xperm);
    return DNNZ_OK;
}

int dnnz_enc_check_matmul_args(const void *m, const float *x, int64_t batch, const float *y, int64_t rows,
                               int64_t cols)
{
    int64_t n;
    if (!m || batch < 0 || !dnnz_mul_ok(batch, rows, &n) || !dnnz_mul_ok(batch, cols, &n))
        return DNNZ_E_ARGUMENT;
    if (batch && ((rows && !y) || (cols && !x)))
        return DNNZ_E_ARGUMENT;
    return DNNZ_OK;
}

const uint8_t dnnz_kern_window_perm[64] __attribute__((aligned(64))) = {
    3, 2, 1, 0, 11, 10, 9, 8, 19, 18, 17, 16, 27, 26, 25, 24,
    35, 34, 33, 32, 43, 42, 41, 40, 51, 50, 49, 48, 59, 58, 57, 56,
    67, 66, 65, 64, 75, 74, 73, 72, 83, 82, 81, 80, 91, 90, 89, 88,
    99, 98, 97, 96, 107, 106, 105, 104, 115, 114, 113, 112, 123, 122, 121, 120};

const uint8_t *dnnz_kern_lane_bytes(const uint8_t *payload, int64_t payload_len, uint64_t *pos, int n, uint64_t end,
                                    uint64_t *shift, uint8_t **copy)
{
    const uint64_t first = pos[0] >> 3;
    *copy = NULL;
    *shift = 0;
    if (end - 8 * first >= ((uint64_t)1 << 31))
        return NULL;
    if ((end >> 3) + 8 <= (uint64_t)payload_len)
        return payload;
    const size_t len = (size_t)((uint64_t)payload_len - first);
    uint8_t *buf = malloc(len + 8);
    if (!buf)
        return NULL;
    memcpy(buf, payload + first, len);
    memset(buf + len, 0, 8);
    for (int i = 0; i < n; i++)
        pos[i] -= 8 * first;
    *shift = 8 * first;
    *copy = buf;
    return buf;
}
