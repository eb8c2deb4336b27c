/* csc.c: the `csc` encoding (pydnnz/encodings/csc.py; declarations in enc.h): validation,
 * decoding and y = x @ W.T. Batch 1 gathers x at the non-zero positions (AVX-512: straight from
 * the sections, indices widened in registers); larger batches transpose x once so that each
 * non-zero is one broadcast multiply-add over a contiguous run of batch lanes (kern.h lanes).
 * A matrix dense enough (CSC_TILE_DENSITY) goes through the shared tile driver instead, its
 * rows scattered into zeroed tiles.
 */
#include "enc.h"
#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define RT DNNZ_KERN_RT
#define TR DNNZ_KERN_TASK_ROWS
#define CSC_CHUNK 256  /* non-zeros converted at a time */
#define CSC_TILE_DENSITY 0.3 /* above this fraction of non-zeros, csc matmul uses dense tiles */
#define BC 64          /* batch lanes per transposed chunk of x */

int dnnz_enc_csc_validate(const struct dnnz_csc *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    DNNZ_CHECK(dnnz_check_dims(m->rows, m->cols, err));
    int64_t n = m->rows * m->cols;
    int pb = m->ptr_bytes, ib = m->idx_bytes, vk = m->value_kind;
    if (!(pb == 1 || pb == 2 || pb == 4 || pb == 8) || !(ib == 1 || ib == 2 || ib == 4) || vk < 0 || vk > 2)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->nnz < 0 || m->nnz > n || (pb < 8 && (uint64_t)m->nnz >> (8 * pb)))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (ib < 4 && m->cols > ((int64_t)1 << (8 * ib)))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    int64_t kmax = vk == 1 ? 256 : vk == 2 ? 65536 : 0;
    if (vk ? (m->k < 1 || m->k > kmax) : m->k != 0)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rowptr_len != m->rows + 1 || !m->rowptr)
        return dnnz_fail(err, DNNZ_FIELD_ROWPTR, -1, m->rowptr_len < m->rows + 1 ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->colidx_len != m->nnz || (m->nnz && !m->colidx))
        return dnnz_fail(err, DNNZ_FIELD_COLIDX, -1, m->colidx_len < m->nnz ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t nvals = vk ? m->k : m->nnz;
    if (m->values_len != nvals || (nvals && !m->values))
        return dnnz_fail(err, vk ? DNNZ_FIELD_CODEBOOK : DNNZ_FIELD_VALUES, -1,
                    m->values_len < nvals ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t nvi = vk ? m->nnz : 0;
    if (m->vindex_len != nvi || (nvi && !m->vindex))
        return dnnz_fail(err, DNNZ_FIELD_VINDEX, -1, m->vindex_len < nvi ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    /* stored values: never NaN, never +0.0 (zeros are the entries left out) */
    int64_t bad = dnnz_find_bad_value(m->values, nvals, 1);
    if (bad >= 0)
        return dnnz_fail(err, vk ? DNNZ_FIELD_CODEBOOK : DNNZ_FIELD_VALUES, bad, DNNZ_E_CORRUPT);
    DNNZ_CHECK(dnnz_check_rows(m->rowptr, pb, m->colidx, ib, m->rows, m->cols, m->nnz, err));
    for (int64_t i = 0; i < nvi; i++)
        if ((int64_t)dnnz_rd_le(m->vindex, vk, i) >= m->k)
            return dnnz_fail(err, DNNZ_FIELD_VINDEX, i, DNNZ_E_CORRUPT);
    return DNNZ_OK;
}

static inline float csc_value(const struct dnnz_csc *m, int64_t p)
{
    if (m->value_kind == 0)
        return m->values[p];
    return m->values[dnnz_rd_le(m->vindex, m->value_kind, p)];
}

int dnnz_enc_csc_decode(const struct dnnz_csc *m, float *dst)
{
    if (!m || (!dst && m->rows * m->cols != 0))
        return DNNZ_E_ARGUMENT;
    if (m->rows * m->cols != 0)
        memset(dst, 0, (size_t)(m->rows * m->cols) * 4);
    for (int64_t r = 0; r < m->rows; r++) {
        int64_t p0 = (int64_t)dnnz_rd_le(m->rowptr, m->ptr_bytes, r), p1 = (int64_t)dnnz_rd_le(m->rowptr, m->ptr_bytes, r + 1);
        for (int64_t p = p0; p < p1; p++)
            dst[r * m->cols + (int64_t)dnnz_rd_le(m->colidx, m->idx_bytes, p)] = csc_value(m, p);
    }
    return DNNZ_OK;
}


struct csc_ctx {
    const struct dnnz_csc *m;
    int64_t batch;
    const float *x;  /* batch 1 (or gather): x itself; else x transposed per chunk of BC lanes */
    float *y;
    int gather;      /* batch > 1 done as `batch` batch-1 products (few non-zeros, see csc_matmul) */
    int path;
};

/* non-zeros p0..p0+n of a row, as int32 columns and float values */
static inline void csc_convert(const struct dnnz_csc *m, int64_t p0, int n, int32_t *col, float *val)
{
    switch (m->idx_bytes) {
    case 1: for (int i = 0; i < n; i++) col[i] = m->colidx[p0 + i]; break;
    case 2: { const uint16_t *q = (const uint16_t *)(const void *)m->colidx + p0;
              for (int i = 0; i < n; i++) col[i] = q[i]; } break;
    default: memcpy(col, m->colidx + 4 * p0, (size_t)n * 4); break;
    }
    switch (m->value_kind) {
    case 0: memcpy(val, m->values + p0, (size_t)n * 4); break;
    case 1: for (int i = 0; i < n; i++) val[i] = m->values[m->vindex[p0 + i]]; break;
    default: { const uint16_t *q = (const uint16_t *)(const void *)m->vindex + p0;
               for (int i = 0; i < n; i++) val[i] = m->values[q[i]]; } break;
    }
}

static inline int64_t csc_ptr(const struct dnnz_csc *m, int64_t r)
{
    return (int64_t)dnnz_rd_le(m->rowptr, m->ptr_bytes, r);
}



/* csc rows scattered into a zeroed tile (used when the matrix is dense enough, see csc_matmul) */
static const float *decode_csc_tile(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                    int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride)
{
    const struct dnnz_csc *m = c->m;
    memset(wbuf, 0, (size_t)(RT * kcp) * 4);
    for (int rr = 0; rr < nr; rr++) {
        int64_t p = cursor[rr], p1 = csc_ptr(m, r + rr + 1);
        float *dst = wbuf + rr * kcp - k0;
        int32_t col[CSC_CHUNK];
        float val[CSC_CHUNK];
        while (p < p1) {
            int n = p1 - p < CSC_CHUNK ? (int)(p1 - p) : CSC_CHUNK, i = 0;
            csc_convert(m, p, n, col, val);
            for (; i < n && col[i] < k0 + kc; i++)
                dst[col[i]] = val[i];
            p += i;
            if (i < n)
                break;
        }
        cursor[rr] = p;
    }
    *stride = kcp;
    return wbuf;
}

#if DNNZ_X86
static DNNZ_T_AVX512 inline __m512i load_u32x16(const uint8_t *base, int width, int64_t p, __mmask16 mk)
{
    switch (width) {
    case 1: return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, base + p));
    case 2: return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, base + 2 * p));
    default: return _mm512_maskz_loadu_epi32(mk, base + 4 * p);
    }
}

/* csc rows scattered into a zeroed tile, 16 entries per step (vpscatterdd after widening the
 * column indices and looking values up in the register codebook) */
static DNNZ_T_AVX512 const float *decode_csc_tile_avx512(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0,
                                                    int64_t kc, int64_t kcp, float *wbuf, int64_t *cursor,
                                                    int64_t *stride)
{
    const struct dnnz_csc *m = c->m;
    int vk = m->value_kind, ib = m->idx_bytes;
    int regcb = vk != 0 && m->k <= 32;
    const __m512 cb0 = _mm512_loadu_ps(c->cbpad), cb1 = _mm512_loadu_ps(c->cbpad + 16);
    const __m512i lim = _mm512_set1_epi32((int)(k0 + kc)), base = _mm512_set1_epi32((int)k0);
    for (int64_t i = 0; i < RT * kcp; i += 16)
        _mm512_store_ps(wbuf + i, _mm512_setzero_ps());
    for (int rr = 0; rr < nr; rr++) {
        int64_t p = cursor[rr], p1 = csc_ptr(m, r + rr + 1);
        float *dst = wbuf + rr * kcp;
        while (p < p1) {
            __mmask16 mk = p1 - p >= 16 ? 0xffff : (__mmask16)((1u << (p1 - p)) - 1);
            __m512i col = load_u32x16(m->colidx, ib, p, mk);
            mk = _mm512_mask_cmplt_epi32_mask(mk, col, lim); /* columns ascend: a prefix */
            __m512 v;
            if (vk == 0) {
                v = _mm512_maskz_loadu_ps(mk, m->values + p);
            } else {
                __m512i vi = load_u32x16(m->vindex, vk, p, mk);
                v = regcb ? _mm512_permutex2var_ps(cb0, vi, cb1)
                          : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, vi, m->values, 4);
            }
            _mm512_mask_i32scatter_ps(dst, mk, _mm512_sub_epi32(col, base), v, 4);
            int n = __builtin_popcount((unsigned)mk);
            p += n;
            if (n < 16)
                break;
        }
        cursor[rr] = p;
    }
    *stride = kcp;
    return wbuf;
}

/* Batch 1: straight from the sections, 16 entries per step: column indices widened in
 * registers, x gathered, values loaded or looked up (codebook in registers when k <= 32). */
static DNNZ_T_AVX512 void csc_gemv_avx512(struct csc_ctx *c, int64_t task)
{
    const struct dnnz_csc *m = c->m;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    float cbpad[32] = {0};
    int vk = m->value_kind, ib = m->idx_bytes;
    int regcb = vk != 0 && m->k <= 32;
    if (regcb)
        memcpy(cbpad, m->values, (size_t)m->k * 4);
    const __m512 cb0 = _mm512_loadu_ps(cbpad), cb1 = _mm512_loadu_ps(cbpad + 16);
    for (int64_t b = 0; b < c->batch; b++) {
    const float *x = c->x + b * m->cols;
    float *y = c->y + b * m->rows;
    int64_t p = csc_ptr(m, r0);
    for (int64_t r = r0; r < r1; r++) {
        int64_t p1 = csc_ptr(m, r + 1);
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (; p < p1; p += 32) {
            __mmask16 m0 = p1 - p >= 16 ? 0xffff : (__mmask16)((1u << (p1 - p)) - 1);
            __mmask16 m1 = p1 - p >= 32 ? 0xffff : p1 - p <= 16 ? 0 : (__mmask16)((1u << (p1 - p - 16)) - 1);
            __m512i c0 = load_u32x16(m->colidx, ib, p, m0), c1 = load_u32x16(m->colidx, ib, p + 16, m1);
            __m512 v0, v1;
            if (vk == 0) {
                v0 = _mm512_maskz_loadu_ps(m0, m->values + p);
                v1 = _mm512_maskz_loadu_ps(m1, m->values + p + 16);
            } else {
                __m512i i0 = load_u32x16(m->vindex, vk, p, m0), i1 = load_u32x16(m->vindex, vk, p + 16, m1);
                if (regcb) {
                    v0 = _mm512_maskz_permutex2var_ps(m0, cb0, i0, cb1);
                    v1 = _mm512_maskz_permutex2var_ps(m1, cb0, i1, cb1);
                } else {
                    v0 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, i0, m->values, 4);
                    v1 = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, i1, m->values, 4);
                }
            }
            a0 = _mm512_fmadd_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, c0, x, 4), v0, a0);
            a1 = _mm512_fmadd_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, c1, x, 4), v1, a1);
        }
        p = p1;
        dnnz_v16f t = (dnnz_v16f)_mm512_add_ps(a0, a1);
        y[r] = dnnz_hsum_avx512((__m512)t);
    }
    }
}
#endif

static void csc_task(void *ctx, int64_t task, int worker)
{
    struct csc_ctx *c = ctx;
    const struct dnnz_csc *m = c->m;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    int32_t col[CSC_CHUNK] __attribute__((aligned(64)));
    float val[CSC_CHUNK] __attribute__((aligned(64)));
    (void)worker;
    if (c->batch == 1 || c->gather) {
#if DNNZ_X86
        if (c->path == DNNZ_CPU_AVX512) {
            csc_gemv_avx512(c, task);
            return;
        }
#endif
        for (int64_t b = 0; b < c->batch; b++)
            for (int64_t r = r0; r < r1; r++) {
                int64_t p1 = csc_ptr(m, r + 1);
                float s = 0.0f;
                for (int64_t p = csc_ptr(m, r); p < p1; p += CSC_CHUNK) {
                    int n = p1 - p < CSC_CHUNK ? (int)(p1 - p) : CSC_CHUNK;
                    csc_convert(m, p, n, col, val);
                    s += dnnz_kern_gather_dot(c->path, val, col, 4, n, c->x + b * m->cols);
                }
                c->y[b * m->rows + r] = s;
            }
        return;
    }
    for (int64_t b0 = 0; b0 < c->batch; b0 += BC) {
        int lanes = c->batch - b0 < BC ? (int)(c->batch - b0) : BC, nl = (lanes + 15) & ~15;
        const float *xt = c->x + b0 * m->cols;
        for (int64_t r = r0; r < r1; r++) {
            float acc[BC] __attribute__((aligned(64)));
            int64_t p1 = csc_ptr(m, r + 1);
            memset(acc, 0, sizeof acc);
            for (int64_t p = csc_ptr(m, r); p < p1; p += CSC_CHUNK) {
                int n = p1 - p < CSC_CHUNK ? (int)(p1 - p) : CSC_CHUNK;
                csc_convert(m, p, n, col, val);
                dnnz_kern_lanes(c->path, val, col, 4, n, xt, BC, nl, acc);
            }
            for (int l = 0; l < lanes; l++)
                c->y[(b0 + l) * m->rows + r] = acc[l];
        }
    }
}

static int64_t csc_row_start(const struct dnnz_tiles *c, int64_t r)
{
    return csc_ptr(c->m, r);
}

int dnnz_enc_csc_matmul(const struct dnnz_csc *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    if (m->rows == 0 || batch == 0)
        return DNNZ_OK;
    if ((double)m->nnz > CSC_TILE_DENSITY * (double)m->rows * (double)m->cols) {
        /* Dense enough that one multiply-add per stored entry (below) costs more than the dense
         * tile kernel over every entry: scatter rows into tiles instead. */
        struct dnnz_tiles pc;
        memset(&pc, 0, sizeof pc);
        pc.path = path;
        pc.m = m;
        for (int64_t i = 0; m->value_kind && i < m->k && i < 32; i++)
            pc.cbpad[i] = m->values[i];
        pc.rows = m->rows;
        pc.cols = m->cols;
        pc.batch = batch;
        pc.y = y;
        pc.row_start = csc_row_start;
        pc.tile = decode_csc_tile;
#if DNNZ_X86
        if (path == DNNZ_CPU_AVX512)
            pc.tile = decode_csc_tile_avx512;
#endif
        return dnnz_tiles_run(&pc, x);
    }
    struct csc_ctx c = {m, batch, x, y, 0, path};
    float *xt = NULL;
    /* Transposing x costs batch * cols; with fewer non-zeros than about two per column the
     * gathers of the batch-1 kernel, repeated per batch row, are cheaper. */
    c.gather = batch > 1 && (double)m->nnz < 2.0 * (double)m->cols;
    if (batch > 1 && m->cols > 0 && !c.gather) {
        /* x transposed in chunks of BC batch lanes: chunk q holds xt[col][lane], rows of BC
         * floats (zero past the last lane), so a non-zero at `col` reads one contiguous run */
        int64_t nchunks = (batch + BC - 1) / BC, n;
        if (!dnnz_mul_ok(nchunks * BC, m->cols, &n) || (uint64_t)n > SIZE_MAX / 4)
            return DNNZ_E_LIMIT;
        xt = aligned_alloc(64, ((size_t)n * 4 + 63) & ~(size_t)63);
        if (!xt)
            return DNNZ_E_ALLOC;
        memset(xt, 0, (size_t)n * 4);
        for (int64_t q = 0; q < nchunks; q++) {
            float *dst = xt + q * BC * m->cols;
            int64_t lanes = batch - q * BC < BC ? batch - q * BC : BC;
            for (int64_t l = 0; l < lanes; l++) {
                const float *src = x + (q * BC + l) * m->cols;
                for (int64_t j = 0; j < m->cols; j++)
                    dst[j * BC + l] = src[j];
            }
        }
        c.x = xt;
    } else if (m->cols == 0) {
        memset(y, 0, (size_t)(batch * m->rows) * 4);
        return DNNZ_OK;
    }
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, csc_task, &c);
    free(xt);
    return DNNZ_OK;
}
