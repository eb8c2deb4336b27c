/* enc.c: validation, decoding and compressed-domain matmul for dense, csc and im (see enc.h).
 *
 * Kernels come in three versions chosen at run time (cpu.h): `_ref` (portable C), `_avx2`
 * (AVX2+FMA) and `_avx512` (AVX-512 F/BW/DQ/VL/VBMI), each compiled with a target attribute.
 *
 * dense and im share one driver: a thread's task is a block of TASK_ROWS output rows; for each
 * slice of KC input columns it decodes RT rows at a time into a small buffer (L1-resident),
 * then multiplies that RT x KC tile with every batch row, RT x BT outputs held in registers.
 * The whole dense matrix never exists. csc has its own driver: batch 1 gathers x at the
 * non-zero positions; larger batches transpose x once so that each non-zero is one
 * broadcast-multiply-add over a contiguous run of batch lanes.
 *
 * Every output element is computed by one task in a fixed order, so results are identical for
 * any thread count (they do differ between CPU paths: FMA contraction and lane order).
 */
#include "enc.h"
#include "cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(DNNZ_NO_SIMD) /* DNNZ_NO_SIMD: portable-only build (checks the non-x86 code) */
#define DNNZ_X86 1
#include <immintrin.h>
#else
#define DNNZ_X86 0
#endif

#define RT 4           /* rows decoded and multiplied together */
#define KC 512         /* input columns per decoded tile (multiple of 64): 8 KiB for RT rows */
#define TASK_ROWS 64   /* output rows per parallel task (multiple of RT) */
#define CSC_CHUNK 256  /* non-zeros converted at a time */
#define CSC_TILE_DENSITY 0.3 /* above this fraction of non-zeros, csc matmul uses dense tiles */

#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,fma,avx2")))

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                    */

static inline uint64_t rd_uint(const uint8_t *p, int width, int64_t i)
{
    const uint8_t *q = p + i * width;
    uint64_t v = 0;
    for (int b = width - 1; b >= 0; b--)
        v = (v << 8) | q[b];
    return v;
}

static inline int is_nan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int ceil_log2(int64_t k)
{
    int b = 0;
    while (b < 63 && ((int64_t)1 << b) < k)
        b++;
    return b;
}

static int mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return 0;
    if (a != 0 && b > INT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

static int fail(struct dnnz_enc_err *err, int field, int64_t where, int status)
{
    if (err) {
        err->field = field;
        err->where = where;
    }
    return status;
}

static int check_dims(int64_t rows, int64_t cols, struct dnnz_enc_err *err)
{
    int64_t n;
    if (rows < 0 || cols < 0)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_ARGUMENT);
    if (rows > DNNZ_ENC_MAX_DIM || cols > DNNZ_ENC_MAX_DIM || !mul_ok(rows, cols, &n))
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    return DNNZ_OK;
}

/* index j of a packed row (MSB-first, `bits` wide); `end` bounds the readable bytes */
static inline uint32_t get_idx(const uint8_t *row, const uint8_t *end, int bits, int64_t j)
{
    uint64_t bitpos = (uint64_t)j * (uint64_t)bits;
    const uint8_t *p = row + (bitpos >> 3);
    uint64_t w = 0;
    if (end - p >= 8) {
        for (int b = 0; b < 8; b++)
            w = (w << 8) | p[b];
    } else {
        for (int b = 0; b < 8; b++)
            w = (w << 8) | (p + b < end ? p[b] : 0);
    }
    return (uint32_t)((w << (bitpos & 7)) >> (64 - bits));
}

static void unpack_row(const uint8_t *row, const uint8_t *end, int bits, int64_t j0, int64_t n, uint32_t *out)
{
    if (bits == 0) {
        memset(out, 0, (size_t)n * 4);
        return;
    }
    for (int64_t j = 0; j < n; j++)
        out[j] = get_idx(row, end, bits, j0 + j);
}

/* ------------------------------------------------------------------------------------------ */
/* validation                                                                                 */

int dnnz_enc_dense_validate(const struct dnnz_dense *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    DNNZ_CHECK(check_dims(m->rows, m->cols, err));
    int64_t n = m->rows * m->cols;
    if (m->values_len != n || (n && !m->values))
        return fail(err, DNNZ_FIELD_VALUES, -1, m->values_len < n ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    for (int64_t i = 0; i < n; i++)
        if (is_nan_bits(f2u(m->values[i])))
            return fail(err, DNNZ_FIELD_VALUES, i, DNNZ_E_CORRUPT);
    return DNNZ_OK;
}

int64_t dnnz_enc_im_row_bytes(int64_t cols, int32_t bits)
{
    if (cols < 0 || bits < 0 || bits > DNNZ_ENC_MAX_BITS || cols > DNNZ_ENC_MAX_DIM)
        return -1;
    return (cols * bits + 7) / 8;
}

int dnnz_enc_im_validate(const struct dnnz_im *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    DNNZ_CHECK(check_dims(m->rows, m->cols, err));
    int64_t n = m->rows * m->cols;
    if (m->bits < 0 || m->k < 0)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->bits > DNNZ_ENC_MAX_BITS || m->k > DNNZ_ENC_MAX_K)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if ((n > 0 && m->k < 1) || ceil_log2(m->k) > m->bits)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->codebook_len != m->k || (m->k && !m->codebook))
        return fail(err, DNNZ_FIELD_CODEBOOK, -1, m->codebook_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    for (int64_t i = 0; i < m->k; i++)
        if (is_nan_bits(f2u(m->codebook[i])))
            return fail(err, DNNZ_FIELD_CODEBOOK, i, DNNZ_E_CORRUPT);
    int64_t stride = dnnz_enc_im_row_bytes(m->cols, m->bits), total;
    if (!mul_ok(stride, m->rows, &total))
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if (m->indices_len != total || (total && !m->indices))
        return fail(err, DNNZ_FIELD_INDICES, -1, m->indices_len < total ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (total == 0)
        return DNNZ_OK;
    const uint8_t *end = m->indices + total;
    int pad = (int)(stride * 8 - m->cols * m->bits); /* 0..7 zero bits closing each row */
    int check_range = m->k < ((int64_t)1 << m->bits);
    uint32_t buf[256];
    for (int64_t r = 0; r < m->rows; r++) {
        const uint8_t *row = m->indices + r * stride;
        if (pad && (row[stride - 1] & ((1u << pad) - 1)))
            return fail(err, DNNZ_FIELD_INDICES, r, DNNZ_E_TRAILING);
        if (!check_range)
            continue;
        for (int64_t j0 = 0; j0 < m->cols; j0 += 256) {
            int64_t nn = m->cols - j0 < 256 ? m->cols - j0 : 256;
            unpack_row(row, end, m->bits, j0, nn, buf);
            for (int64_t j = 0; j < nn; j++)
                if (buf[j] >= (uint64_t)m->k)
                    return fail(err, DNNZ_FIELD_INDICES, r * m->cols + j0 + j, DNNZ_E_CORRUPT);
        }
    }
    return DNNZ_OK;
}

int dnnz_enc_csc_validate(const struct dnnz_csc *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    DNNZ_CHECK(check_dims(m->rows, m->cols, err));
    int64_t n = m->rows * m->cols;
    int pb = m->ptr_bytes, ib = m->idx_bytes, vk = m->value_kind;
    if (!(pb == 1 || pb == 2 || pb == 4 || pb == 8) || !(ib == 1 || ib == 2 || ib == 4) || vk < 0 || vk > 2)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->nnz < 0 || m->nnz > n || (pb < 8 && (uint64_t)m->nnz >> (8 * pb)))
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (ib < 4 && m->cols > ((int64_t)1 << (8 * ib)))
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    int64_t kmax = vk == 1 ? 256 : vk == 2 ? 65536 : 0;
    if (vk ? (m->k < 1 || m->k > kmax) : m->k != 0)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rowptr_len != m->rows + 1 || !m->rowptr)
        return fail(err, DNNZ_FIELD_ROWPTR, -1, m->rowptr_len < m->rows + 1 ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->colidx_len != m->nnz || (m->nnz && !m->colidx))
        return fail(err, DNNZ_FIELD_COLIDX, -1, m->colidx_len < m->nnz ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t nvals = vk ? m->k : m->nnz;
    if (m->values_len != nvals || (nvals && !m->values))
        return fail(err, vk ? DNNZ_FIELD_CODEBOOK : DNNZ_FIELD_VALUES, -1,
                    m->values_len < nvals ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t nvi = vk ? m->nnz : 0;
    if (m->vindex_len != nvi || (nvi && !m->vindex))
        return fail(err, DNNZ_FIELD_VINDEX, -1, m->vindex_len < nvi ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    /* stored values: never NaN, never +0.0 (zeros are the entries left out) */
    for (int64_t i = 0; i < nvals; i++) {
        uint32_t u = f2u(m->values[i]);
        if (is_nan_bits(u) || u == 0)
            return fail(err, vk ? DNNZ_FIELD_CODEBOOK : DNNZ_FIELD_VALUES, i, DNNZ_E_CORRUPT);
    }
    if (rd_uint(m->rowptr, pb, 0) != 0)
        return fail(err, DNNZ_FIELD_ROWPTR, 0, DNNZ_E_CORRUPT);
    uint64_t prev = 0;
    for (int64_t r = 0; r < m->rows; r++) { /* all row pointers first: then colidx runs are in range */
        uint64_t next = rd_uint(m->rowptr, pb, r + 1);
        if (next < prev || next > (uint64_t)m->nnz || next - prev > (uint64_t)m->cols)
            return fail(err, DNNZ_FIELD_ROWPTR, r + 1, DNNZ_E_CORRUPT);
        prev = next;
    }
    if (prev != (uint64_t)m->nnz)
        return fail(err, DNNZ_FIELD_ROWPTR, m->rows, DNNZ_E_CORRUPT);
    prev = 0;
    for (int64_t r = 0; r < m->rows; r++) {
        uint64_t next = rd_uint(m->rowptr, pb, r + 1);
        int64_t last = -1;
        for (uint64_t p = prev; p < next; p++) {
            int64_t c = (int64_t)rd_uint(m->colidx, ib, (int64_t)p);
            if (c <= last || c >= m->cols)
                return fail(err, DNNZ_FIELD_COLIDX, (int64_t)p, DNNZ_E_CORRUPT);
            last = c;
        }
        prev = next;
    }
    if (prev != (uint64_t)m->nnz)
        return fail(err, DNNZ_FIELD_ROWPTR, m->rows, DNNZ_E_CORRUPT);
    for (int64_t i = 0; i < nvi; i++)
        if ((int64_t)rd_uint(m->vindex, vk, i) >= m->k)
            return fail(err, DNNZ_FIELD_VINDEX, i, DNNZ_E_CORRUPT);
    return DNNZ_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* decoding (whole matrix; for .decode(), not used by matmul)                                 */

int dnnz_enc_im_decode(const struct dnnz_im *m, float *dst)
{
    if (!m || (!dst && m->rows * m->cols != 0))
        return DNNZ_E_ARGUMENT;
    int64_t stride = dnnz_enc_im_row_bytes(m->cols, m->bits);
    const uint8_t *end = m->indices + m->indices_len;
    uint32_t buf[256];
    for (int64_t r = 0; r < m->rows; r++) {
        const uint8_t *row = m->indices + r * stride;
        for (int64_t j0 = 0; j0 < m->cols; j0 += 256) {
            int64_t nn = m->cols - j0 < 256 ? m->cols - j0 : 256;
            unpack_row(row, end, m->bits, j0, nn, buf);
            float *d = dst + r * m->cols + j0;
            for (int64_t j = 0; j < nn; j++)
                d[j] = m->codebook[buf[j]];
        }
    }
    return DNNZ_OK;
}

static inline float csc_value(const struct dnnz_csc *m, int64_t p)
{
    if (m->value_kind == 0)
        return m->values[p];
    return m->values[rd_uint(m->vindex, m->value_kind, p)];
}

int dnnz_enc_csc_decode(const struct dnnz_csc *m, float *dst)
{
    if (!m || (!dst && m->rows * m->cols != 0))
        return DNNZ_E_ARGUMENT;
    if (m->rows * m->cols != 0)
        memset(dst, 0, (size_t)(m->rows * m->cols) * 4);
    for (int64_t r = 0; r < m->rows; r++) {
        int64_t p0 = (int64_t)rd_uint(m->rowptr, m->ptr_bytes, r), p1 = (int64_t)rd_uint(m->rowptr, m->ptr_bytes, r + 1);
        for (int64_t p = p0; p < p1; p++)
            dst[r * m->cols + (int64_t)rd_uint(m->colidx, m->idx_bytes, p)] = csc_value(m, p);
    }
    return DNNZ_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* dense / im driver                                                                          */

struct panel_ctx {
    int kind; /* 0 dense, 1 im, 2 csc (dense enough to be worth tiles) */
    const struct dnnz_dense *d;
    const struct dnnz_im *im;
    const struct dnnz_csc *csc;
    int64_t rows, cols, batch, xstride, im_stride;
    const float *x; /* batch rows of xstride floats, zero-padded to a multiple of 16 columns */
    float *y;
    float cbpad[64]; /* im codebook padded with zeros (k <= 64) */
    const float *xperm; /* batch-1 AVX-512 im: x reordered per 64-block (see panel_run) */
};

/* Decode rows r..r+nr-1, columns k0..k0+kc-1 into wbuf (RT rows of kcp floats, zeros past nr
 * rows and kc columns) or return a pointer into the matrix itself (dense); *stride gets the
 * tile's row stride. `cursor` holds per-row stream positions (csc), advanced as tiles go. */
typedef const float *(*panel_decode_fn)(const struct panel_ctx *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                        int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride);

static const float *decode_dense_tile(const struct panel_ctx *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                      int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride)
{
    (void)cursor;
    if (nr == RT && kc == kcp) { /* whole tile inside the matrix: read it in place */
        *stride = c->cols;
        return c->d->values + r * c->cols + k0;
    }
    *stride = kcp;
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        int64_t done = 0;
        if (rr < nr) {
            memcpy(dst, c->d->values + (r + rr) * c->cols + k0, (size_t)kc * 4);
            done = kc;
        }
        memset(dst + done, 0, (size_t)(kcp - done) * 4);
    }
    return wbuf;
}

static inline int64_t csc_ptr(const struct dnnz_csc *m, int64_t r);
static inline void csc_convert(const struct dnnz_csc *m, int64_t p0, int n, int32_t *col, float *val);

/* csc rows scattered into a zeroed tile (used when the matrix is dense enough, see csc_matmul) */
static const float *decode_csc_tile(const struct panel_ctx *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                    int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride)
{
    const struct dnnz_csc *m = c->csc;
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

static const float *decode_im_tile_ref(const struct panel_ctx *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                       int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride)
{
    const struct dnnz_im *m = c->im;
    const uint8_t *end = m->indices + m->indices_len;
    uint32_t idx[KC];
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        int64_t done = 0;
        if (rr < nr) {
            unpack_row(m->indices + (r + rr) * c->im_stride, end, m->bits, k0, kc, idx);
            for (int64_t j = 0; j < kc; j++)
                dst[j] = m->codebook[idx[j]];
            done = kc;
        }
        memset(dst + done, 0, (size_t)(kcp - done) * 4);
    }
    (void)cursor;
    *stride = kcp;
    return wbuf;
}

/* The RT x KC tile times BT batch rows: y[b][r] += sum_j w[r][j] * x[b][j]. */
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

#define HSUM16(v) ((((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))) + \
                   (((v[8] + v[9]) + (v[10] + v[11])) + ((v[12] + v[13]) + (v[14] + v[15]))))
#define HSUM8(v) (((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])))

#if DNNZ_X86
typedef float v16f __attribute__((vector_size(64), aligned(4), may_alias));
typedef float v8f __attribute__((vector_size(32), aligned(4), may_alias));

/* horizontal sums in a fixed order: halves added until one lane is left (8 instructions
 * instead of 15 scalar adds with lane extractions) */
static T_AVX512 inline float hsum_avx512(v16f v)
{
    __m512 z = (__m512)v;
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

static T_AVX2 inline float hsum_avx2(v8f v)
{
    __m256 s = (__m256)v;
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* One instantiation per batch-tile width BT so the RT x BT accumulators stay in registers. */
#define DEFINE_MICRO(NAME, TGT, V, VW, HSUM, BT)                                                 \
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
                y[b * ys + rr] += HSUM(acc[rr][b]);                                            \
    }

DEFINE_MICRO(micro_avx512_1, T_AVX512, v16f, 16, hsum_avx512, 1)
DEFINE_MICRO(micro_avx512_2, T_AVX512, v16f, 16, hsum_avx512, 2)
DEFINE_MICRO(micro_avx512_3, T_AVX512, v16f, 16, hsum_avx512, 3)
DEFINE_MICRO(micro_avx512_4, T_AVX512, v16f, 16, hsum_avx512, 4)
DEFINE_MICRO(micro_avx2_1, T_AVX2, v8f, 8, hsum_avx2, 1)
DEFINE_MICRO(micro_avx2_2, T_AVX2, v8f, 8, hsum_avx2, 2)

static T_AVX512 void micro_avx512(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs,
                                  int bt, float *y, int64_t ys, int nr)
{
    switch (bt) {
    case 1: micro_avx512_1(w, ws, kcp, x, xs, y, ys, nr); break;
    case 2: micro_avx512_2(w, ws, kcp, x, xs, y, ys, nr); break;
    case 3: micro_avx512_3(w, ws, kcp, x, xs, y, ys, nr); break;
    default: micro_avx512_4(w, ws, kcp, x, xs, y, ys, nr); break;
    }
}

static T_AVX2 void micro_avx2(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int bt,
                              float *y, int64_t ys, int nr)
{
    if (bt == 1)
        micro_avx2_1(w, ws, kcp, x, xs, y, ys, nr);
    else
        micro_avx2_2(w, ws, kcp, x, xs, y, ys, nr);
}

/* AVX2 unpacking of 8 packed indices (bits <= 8: exactly `bits` bytes, starting on a byte):
 * the 8 bytes are broadcast to both lanes, vpshufb puts the (at most two) bytes holding index j
 * at the top of dword j, a variable shift and a mask leave the index at the bottom. */
struct im_avx2 {
    __m256i ctl, shr, mask;
    __m256 cb[4];
    int64_t k;
    const float *codebook;
};

static T_AVX2 void im_avx2_init(struct im_avx2 *u, int bits, const float *cbpad, int64_t k, const float *codebook)
{
    uint8_t ctl[32];
    uint32_t shr[8];
    for (int j = 0; j < 8; j++) {
        int b = (j * bits) / 8, o = (j * bits) % 8;
        uint8_t *d = ctl + 4 * j; /* in-lane: both lanes hold the same 8 bytes */
        d[0] = d[1] = 0x80;
        d[2] = b + 1 < 8 ? (uint8_t)(b + 1) : 0x80;
        d[3] = (uint8_t)b;
        shr[j] = (uint32_t)(32 - bits - o);
    }
    u->ctl = _mm256_loadu_si256((const __m256i *)ctl);
    u->shr = _mm256_loadu_si256((const __m256i *)shr);
    u->mask = _mm256_set1_epi32((1 << bits) - 1);
    for (int i = 0; i < 4; i++)
        u->cb[i] = _mm256_loadu_ps(cbpad + 8 * i);
    u->k = k;
    u->codebook = codebook;
}

static T_AVX2 inline __m256i im_avx2_unpack8(const struct im_avx2 *u, const uint8_t *p, const uint8_t *end)
{
    int64_t w = 0;
    if (DNNZ_LIKELY(end - p >= 8))
        memcpy(&w, p, 8);
    else if (end > p)
        memcpy(&w, p, (size_t)(end - p));
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi64x(w), u->ctl);
    return _mm256_and_si256(_mm256_srlv_epi32(v, u->shr), u->mask);
}

/* codebook[iv]: register permutes up to k = 32 (blends on index bits 3 and 4), gather above */
static T_AVX2 inline __m256 im_avx2_lookup(const struct im_avx2 *u, __m256i iv)
{
    if (u->k <= 8)
        return _mm256_permutevar8x32_ps(u->cb[0], iv);
    if (u->k <= 32) {
        __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(iv, 28));
        __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(u->cb[0], iv), _mm256_permutevar8x32_ps(u->cb[1], iv), b3);
        if (u->k <= 16)
            return lo;
        __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(u->cb[2], iv), _mm256_permutevar8x32_ps(u->cb[3], iv), b3);
        return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(iv, 27)));
    }
    return _mm256_i32gather_ps(u->codebook, iv, 4);
}

static T_AVX2 const float *decode_im_tile_avx2_fast(const struct panel_ctx *c, int64_t r, int nr, int64_t k0,
                                                    int64_t kc, int64_t kcp, float *wbuf)
{
    const struct dnnz_im *m = c->im;
    const uint8_t *end = m->indices + m->indices_len;
    struct im_avx2 u;
    im_avx2_init(&u, m->bits, c->cbpad, m->k, m->codebook);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        if (rr >= nr) {
            memset(dst, 0, (size_t)kcp * 4);
            continue;
        }
        const uint8_t *row = m->indices + (r + rr) * c->im_stride + (k0 * m->bits) / 8;
        for (int64_t j = 0; j < kcp; j += 8) {
            __m256i iv = im_avx2_unpack8(&u, row + (j / 8) * m->bits, end);
            if (j + 8 > kc) { /* past the row: index 0, value 0 */
                __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(kc - j)), lane);
                iv = _mm256_and_si256(iv, keep);
                _mm256_storeu_ps(dst + j, _mm256_and_ps(im_avx2_lookup(&u, iv), _mm256_castsi256_ps(keep)));
            } else {
                _mm256_storeu_ps(dst + j, im_avx2_lookup(&u, iv));
            }
        }
    }
    return wbuf;
}

/* Batch 1, bits <= 8, AVX2: unpack, look up, multiply-add in registers (x is zero-padded). */
static T_AVX2 void im_gemv_avx2(const struct panel_ctx *c, int64_t task)
{
    const struct dnnz_im *m = c->im;
    const uint8_t *end = m->indices + m->indices_len;
    int64_t r0 = task * TASK_ROWS, r1 = r0 + TASK_ROWS < c->rows ? r0 + TASK_ROWS : c->rows, cols = c->cols;
    struct im_avx2 u;
    im_avx2_init(&u, m->bits, c->cbpad, m->k, m->codebook);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const float *x = c->x;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = m->indices + r * c->im_stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t j = 0;
        for (; j + 16 <= cols; j += 16) {
            const uint8_t *p = row + (j / 8) * m->bits;
            a0 = _mm256_fmadd_ps(im_avx2_lookup(&u, im_avx2_unpack8(&u, p, end)), _mm256_loadu_ps(x + j), a0);
            a1 = _mm256_fmadd_ps(im_avx2_lookup(&u, im_avx2_unpack8(&u, p + m->bits, end)), _mm256_loadu_ps(x + j + 8), a1);
        }
        for (; j < cols; j += 8) {
            __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(cols - j)), lane);
            __m256i iv = _mm256_and_si256(im_avx2_unpack8(&u, row + (j / 8) * m->bits, end), keep);
            __m256 v = _mm256_and_ps(im_avx2_lookup(&u, iv), _mm256_castsi256_ps(keep));
            a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + j), a0); /* x is padded to 16 columns */
        }
        v8f t = (v8f)_mm256_add_ps(a0, a1);
        c->y[r] = hsum_avx2(t);
    }
}

/* im tile, AVX2: indices unpacked by the portable reader, values by vpermps (k <= 8) or gather. */
static T_AVX2 const float *decode_im_tile_avx2(const struct panel_ctx *c, int64_t r, int nr, int64_t k0,
                                               int64_t kc, int64_t kcp, float *wbuf, int64_t *cursor,
                                               int64_t *stride)
{
    (void)cursor;
    *stride = kcp;
    if (c->im->bits >= 1 && c->im->bits <= 8)
        return decode_im_tile_avx2_fast(c, r, nr, k0, kc, kcp, wbuf);
    const struct dnnz_im *m = c->im;
    const uint8_t *end = m->indices + m->indices_len;
    uint32_t idx[KC];
    __m256 cb8 = _mm256_loadu_ps(c->cbpad);
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        if (rr >= nr) {
            memset(dst, 0, (size_t)kcp * 4);
            continue;
        }
        unpack_row(m->indices + (r + rr) * c->im_stride, end, m->bits, k0, kc, idx);
        memset(idx + kc, 0, (size_t)(kcp - kc) * 4);
        for (int64_t j = 0; j < kcp; j += 8) {
            __m256i iv = _mm256_loadu_si256((const __m256i *)(idx + j));
            __m256 v = m->k <= 8 ? _mm256_permutevar8x32_ps(cb8, iv) : _mm256_i32gather_ps(m->codebook, iv, 4);
            if (j + 8 > kc) {
                __m256i lane = _mm256_add_epi32(_mm256_set1_epi32((int)j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)kc), lane));
                v = _mm256_and_ps(v, keep);
            }
            _mm256_storeu_ps(dst + j, v);
        }
    }
    return wbuf;
}

/* im tile, AVX-512 + VBMI: for bits <= 8, 64 indices per step: vpermb gathers each group of
 * 8 indices (`bits` bytes) into one qword, byte-reversed so the stream's first bit is the
 * qword's MSB; vpmultishiftqb then pulls every index's bits to the bottom of its byte. Values
 * come from the codebook held in registers (vpermps for k <= 16, vpermt2ps for k <= 32, two
 * of them and a blend for k <= 64) or from a gather for larger codebooks. */
static T_AVX512 const float *decode_im_tile_avx512(const struct panel_ctx *c, int64_t r, int nr, int64_t k0,
                                                   int64_t kc, int64_t kcp, float *wbuf, int64_t *cursor,
                                                   int64_t *stride)
{
    (void)cursor;
    *stride = kcp;
    const struct dnnz_im *m = c->im;
    const uint8_t *end = m->indices + m->indices_len;
    int bits = m->bits;
    int64_t k = m->k;
    if (bits == 0 || bits > 8) {
        uint32_t idx[KC];
        for (int rr = 0; rr < RT; rr++) {
            float *dst = wbuf + rr * kcp;
            if (rr >= nr) {
                memset(dst, 0, (size_t)kcp * 4);
                continue;
            }
            unpack_row(m->indices + (r + rr) * c->im_stride, end, bits, k0, kc, idx);
            for (int64_t j = 0; j < kcp; j += 16) {
                __mmask16 valid = j + 16 <= kc ? 0xffff : (__mmask16)((1u << (kc - j)) - 1);
                __m512i iv = _mm512_maskz_loadu_epi32(valid, idx + j);
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, iv, m->codebook, 4);
                _mm512_storeu_ps(dst + j, v);
            }
        }
        return wbuf;
    }
    uint8_t perm[64], shift[64];
    for (int q = 0; q < 8; q++)
        for (int p = 0; p < 8; p++) {
            perm[8 * q + p] = (uint8_t)(q * bits + 7 - p);
            shift[8 * q + p] = (uint8_t)((64 - (p + 1) * bits) & 63);
        }
    const __m512i vperm = _mm512_loadu_si512(perm), vshift = _mm512_loadu_si512(shift);
    const __m512i vmask = _mm512_set1_epi8((char)((1u << bits) - 1));
    const __m512 cb0 = _mm512_loadu_ps(c->cbpad), cb1 = _mm512_loadu_ps(c->cbpad + 16);
    const __m512 cb2 = _mm512_loadu_ps(c->cbpad + 32), cb3 = _mm512_loadu_ps(c->cbpad + 48);
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        if (rr >= nr) {
            memset(dst, 0, (size_t)kcp * 4);
            continue;
        }
        const uint8_t *row = m->indices + (r + rr) * c->im_stride + (k0 * bits) / 8;
        for (int64_t j = 0; j < kcp; j += 64) {
            const uint8_t *p = row + (j * bits) / 8;
            __m512i raw;
            if (end - p >= 64) {
                raw = _mm512_loadu_si512(p);
            } else {
                uint8_t tmp[64] = {0};
                memcpy(tmp, p, (size_t)(end - p));
                raw = _mm512_loadu_si512(tmp);
            }
            __m512i iv8 = _mm512_and_si512(_mm512_multishift_epi64_epi8(vshift, _mm512_permutexvar_epi8(vperm, raw)), vmask);
            int64_t left = kc - j; /* valid indices in this step */
            if (left < 64)
                iv8 = _mm512_maskz_mov_epi8(left <= 0 ? 0 : (((__mmask64)1 << left) - 1), iv8);
            for (int s = 0; s < 4 && j + 16 * s < kcp; s++) {
                __m128i part = s == 0 ? _mm512_castsi512_si128(iv8)
                             : s == 1 ? _mm512_extracti32x4_epi32(iv8, 1)
                             : s == 2 ? _mm512_extracti32x4_epi32(iv8, 2)
                                      : _mm512_extracti32x4_epi32(iv8, 3);
                __m512i iv = _mm512_cvtepu8_epi32(part);
                __m512 v;
                if (k <= 16)
                    v = _mm512_permutexvar_ps(iv, cb0);
                else if (k <= 32)
                    v = _mm512_permutex2var_ps(cb0, iv, cb1);
                else if (k <= 64)
                    v = _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, _mm512_set1_epi32(32)),
                                             _mm512_permutex2var_ps(cb0, iv, cb1),
                                             _mm512_permutex2var_ps(cb2, iv, cb3));
                else
                    v = _mm512_i32gather_ps(iv, m->codebook, 4);
                int64_t l16 = kc - (j + 16 * s);
                __mmask16 keep = l16 >= 16 ? 0xffff : l16 <= 0 ? 0 : (__mmask16)((1u << l16) - 1);
                _mm512_storeu_ps(dst + j + 16 * s, _mm512_maskz_mov_ps(keep, v));
            }
        }
    }
    return wbuf;
}
#endif /* DNNZ_X86 */

typedef void (*micro_fn)(const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int bt,
                         float *y, int64_t ys, int nr);

static void panel_task_generic(struct panel_ctx *c, int64_t task, panel_decode_fn decode, micro_fn micro,
                               int bt_max)
{
    int64_t r0 = task * TASK_ROWS, r1 = r0 + TASK_ROWS < c->rows ? r0 + TASK_ROWS : c->rows;
    float wbuf[RT * KC] __attribute__((aligned(64)));
    int64_t cursor[TASK_ROWS];
    for (int64_t b = 0; b < c->batch; b++)
        memset(c->y + b * c->rows + r0, 0, (size_t)(r1 - r0) * 4);
    if (c->kind == 2)
        for (int64_t r = r0; r < r1; r++)
            cursor[r - r0] = csc_ptr(c->csc, r);
    for (int64_t k0 = 0; k0 < c->cols; k0 += KC) {
        int64_t kc = c->cols - k0 < KC ? c->cols - k0 : KC, kcp = (kc + 15) & ~(int64_t)15;
        for (int64_t r = r0; r < r1; r += RT) {
            int nr = r1 - r < RT ? (int)(r1 - r) : RT;
            int64_t ws;
            const float *w = decode(c, r, nr, k0, kc, kcp, wbuf, cursor + (r - r0), &ws);
            for (int64_t b = 0; b < c->batch; b += bt_max) {
                int bt = c->batch - b < bt_max ? (int)(c->batch - b) : bt_max;
                micro(w, ws, kcp, c->x + b * c->xstride + k0, c->xstride, bt, c->y + b * c->rows + r, c->rows, nr);
            }
        }
    }
}

static void panel_task_ref(void *ctx, int64_t task, int worker)
{
    struct panel_ctx *c = ctx;
    (void)worker;
    panel_task_generic(c, task, c->kind == 1 ? decode_im_tile_ref : c->kind == 2 ? decode_csc_tile : decode_dense_tile, micro_ref, 1);
}

#if DNNZ_X86
static void panel_task_avx2(void *ctx, int64_t task, int worker)
{
    struct panel_ctx *c = ctx;
    (void)worker;
    if (c->kind == 1 && c->batch == 1 && c->im->bits >= 1 && c->im->bits <= 8) {
        im_gemv_avx2(c, task);
        return;
    }
    panel_task_generic(c, task, c->kind == 1 ? decode_im_tile_avx2 : c->kind == 2 ? decode_csc_tile : decode_dense_tile, micro_avx2, 2);
}

static T_AVX512 inline __m512i load_u32x16(const uint8_t *base, int width, int64_t p, __mmask16 mk);

/* csc rows scattered into a zeroed tile, 16 entries per step (vpscatterdd after widening the
 * column indices and looking values up in the register codebook) */
static T_AVX512 const float *decode_csc_tile_avx512(const struct panel_ctx *c, int64_t r, int nr, int64_t k0,
                                                    int64_t kc, int64_t kcp, float *wbuf, int64_t *cursor,
                                                    int64_t *stride)
{
    const struct dnnz_csc *m = c->csc;
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

/* Batch 1, im with bits <= 8: unpack, look up and multiply-add in registers, never storing the
 * decoded row (the VBMI unpack and register codebook of decode_im_tile_avx512, fused). Two rows
 * at a time share the x loads. */
static T_AVX512 void im_gemv_avx512(const struct panel_ctx *c, int64_t task)
{
    const struct dnnz_im *m = c->im;
    const uint8_t *end = m->indices + m->indices_len;
    int bits = m->bits;
    int64_t k = m->k, cols = c->cols;
    int64_t r0 = task * TASK_ROWS, r1 = r0 + TASK_ROWS < c->rows ? r0 + TASK_ROWS : c->rows;
    uint8_t perm[64], shift[64];
    for (int q = 0; q < 8; q++)
        for (int p = 0; p < 8; p++) {
            perm[8 * q + p] = (uint8_t)(q * bits + 7 - p);
            shift[8 * q + p] = (uint8_t)((64 - (p + 1) * bits) & 63);
        }
    const __m512i vperm = _mm512_loadu_si512(perm), vshift = _mm512_loadu_si512(shift);
    const __m512i vmask = _mm512_set1_epi8((char)((1u << bits) - 1));
    const __m512 cb0 = _mm512_loadu_ps(c->cbpad), cb1 = _mm512_loadu_ps(c->cbpad + 16);
    const __m512 cb2 = _mm512_loadu_ps(c->cbpad + 32), cb3 = _mm512_loadu_ps(c->cbpad + 48);
    const __m512i v32 = _mm512_set1_epi32(32);
    const float *x = c->x, *xp = c->xperm;
    const __m512i vff = _mm512_set1_epi32(0xff);
#define IM_LOOKUP(iv) (k <= 16 ? _mm512_permutexvar_ps(iv, cb0)                                      \
                       : k <= 32 ? _mm512_permutex2var_ps(cb0, iv, cb1)                              \
                       : k <= 64 ? _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, v32),             \
                                                        _mm512_permutex2var_ps(cb0, iv, cb1),        \
                                                        _mm512_permutex2var_ps(cb2, iv, cb3))        \
                                 : _mm512_i32gather_ps(iv, m->codebook, 4))
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = m->indices + r * c->im_stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            const uint8_t *p = row + (j * bits) / 8;
            __m512i raw;
            if (DNNZ_LIKELY(end - p >= 64)) {
                raw = _mm512_loadu_si512(p);
            } else {
                uint8_t tmp[64] = {0};
                memcpy(tmp, p, (size_t)(end - p));
                raw = _mm512_loadu_si512(tmp);
            }
            /* byte 4i+s of iv8 is index 4i+s; shifting dwords right by 8s brings it to the low
             * byte of dword i, which is all the register permutes look at (x was permuted to
             * match, see panel_run); no widening shuffles on the busy permute port */
            __m512i iv8 = bits == 8 ? raw /* im8: bytes are the indices */
                        : _mm512_and_si512(_mm512_multishift_epi64_epi8(vshift, _mm512_permutexvar_epi8(vperm, raw)), vmask);
            __m512i i0 = iv8, i1 = _mm512_srli_epi32(iv8, 8), i2 = _mm512_srli_epi32(iv8, 16), i3 = _mm512_srli_epi32(iv8, 24);
            if (k > 64) {
                i0 = _mm512_and_si512(i0, vff);
                i1 = _mm512_and_si512(i1, vff);
                i2 = _mm512_and_si512(i2, vff);
            }
            a0 = _mm512_fmadd_ps(IM_LOOKUP(i0), _mm512_loadu_ps(xp + j), a0);
            a1 = _mm512_fmadd_ps(IM_LOOKUP(i1), _mm512_loadu_ps(xp + j + 16), a1);
            a2 = _mm512_fmadd_ps(IM_LOOKUP(i2), _mm512_loadu_ps(xp + j + 32), a2);
            a3 = _mm512_fmadd_ps(IM_LOOKUP(i3), _mm512_loadu_ps(xp + j + 48), a3);
        }
        if (j < cols) { /* tail: fewer than 64 indices; lanes past the row are zeroed */
            const uint8_t *p = row + (j * bits) / 8;
            uint8_t tmp[64] = {0};
            int64_t nb = end - p < 64 ? end - p : 64;
            memcpy(tmp, p, (size_t)nb);
            int64_t left = cols - j;
            __m512i iv8 = _mm512_and_si512(_mm512_multishift_epi64_epi8(vshift, _mm512_permutexvar_epi8(vperm, _mm512_loadu_si512(tmp))), vmask);
            iv8 = _mm512_maskz_mov_epi8(((__mmask64)1 << left) - 1, iv8);
            for (int s = 0; s < 4 && 16 * s < left; s++) {
                __m128i part = s == 0 ? _mm512_castsi512_si128(iv8)
                             : s == 1 ? _mm512_extracti32x4_epi32(iv8, 1)
                             : s == 2 ? _mm512_extracti32x4_epi32(iv8, 2)
                                      : _mm512_extracti32x4_epi32(iv8, 3);
                __m512i iv = _mm512_cvtepu8_epi32(part);
                int64_t l16 = left - 16 * s;
                __mmask16 mk = l16 >= 16 ? 0xffff : (__mmask16)((1u << l16) - 1);
                __m512 xv = _mm512_maskz_loadu_ps(mk, x + j + 16 * s);
                a0 = _mm512_fmadd_ps(_mm512_maskz_mov_ps(mk, IM_LOOKUP(iv)), xv, a0);
            }
        }
        v16f t = (v16f)_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        c->y[r] = hsum_avx512(t);
    }
#undef IM_LOOKUP
}

static void panel_task_avx512(void *ctx, int64_t task, int worker)
{
    struct panel_ctx *c = ctx;
    (void)worker;
    if (c->kind == 1 && c->batch == 1 && c->im->bits >= 1 && c->im->bits <= 8) {
        im_gemv_avx512(c, task);
        return;
    }
    panel_task_generic(c, task, c->kind == 1 ? decode_im_tile_avx512 : c->kind == 2 ? decode_csc_tile_avx512 : decode_dense_tile, micro_avx512, 4);
}
#endif

static int panel_run(struct panel_ctx *c, const float *x)
{
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
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
        if (!mul_ok(colsp, c->batch, &n) || (uint64_t)n > SIZE_MAX / 4)
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
    if (path == DNNZ_CPU_AVX512 && c->kind == 1 && c->batch == 1 && c->im->bits >= 1 && c->im->bits <= 8) {
        /* im_gemv_avx512 produces, per 64-block, indices 4i+s in lane i of vector s: give it x
         * in that order (blocks of 64 only; the tail reads x as is) */
        xperm = malloc((size_t)c->cols * 4 + 64);
        if (!xperm) {
            free(xpad);
            return DNNZ_E_ALLOC;
        }
        for (int64_t b0 = 0; b0 + 64 <= c->cols; b0 += 64)
            for (int s = 0; s < 4; s++)
                for (int i = 0; i < 16; i++)
                    xperm[b0 + 16 * s + i] = x[b0 + 4 * i + s];
        c->xperm = xperm;
    }
    dnnz_cpu_task_fn fn = panel_task_ref;
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512)
        fn = panel_task_avx512;
    else if (path == DNNZ_CPU_AVX2)
        fn = panel_task_avx2;
#endif
    dnnz_cpu_parallel((c->rows + TASK_ROWS - 1) / TASK_ROWS, fn, c);
    free(xpad);
    free(xperm);
    return DNNZ_OK;
}

int dnnz_enc_check_matmul_args(const void *m, const float *x, int64_t batch, const float *y, int64_t rows,
                                int64_t cols)
{
    int64_t n;
    if (!m || batch < 0 || !mul_ok(batch, rows, &n) || !mul_ok(batch, cols, &n))
        return DNNZ_E_ARGUMENT;
    if (batch && ((rows && !y) || (cols && !x)))
        return DNNZ_E_ARGUMENT;
    return DNNZ_OK;
}

int dnnz_enc_dense_matmul(const struct dnnz_dense *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    struct panel_ctx c;
    memset(&c, 0, sizeof c);
    c.kind = 0;
    c.d = m;
    c.rows = m->rows;
    c.cols = m->cols;
    c.batch = batch;
    c.y = y;
    return panel_run(&c, x);
}

int dnnz_enc_im_matmul(const struct dnnz_im *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    struct panel_ctx c;
    memset(&c, 0, sizeof c);
    c.kind = 1;
    c.im = m;
    c.rows = m->rows;
    c.cols = m->cols;
    c.batch = batch;
    c.y = y;
    c.im_stride = dnnz_enc_im_row_bytes(m->cols, m->bits);
    for (int64_t i = 0; i < m->k && i < 64; i++)
        c.cbpad[i] = m->codebook[i];
    return panel_run(&c, x);
}

/* ------------------------------------------------------------------------------------------ */
/* csc                                                                                        */

struct csc_ctx {
    const struct dnnz_csc *m;
    int64_t batch;
    const float *x;  /* batch 1: x itself; else x transposed per lane chunk (see csc_run) */
    int64_t chunk;   /* lanes per chunk */
    float *y;
    int gather;      /* batch > 1 done as `batch` batch-1 products (few non-zeros, see csc_matmul) */
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
    return (int64_t)rd_uint(m->rowptr, m->ptr_bytes, r);
}

/* Generic csc task: `dot1` handles batch 1 (one row), `lanes` handles a batch-lane chunk. */
#define CSC_TASK(NAME, TGT, DOT1, LANES, BC)                                                      \
    static TGT void NAME(void *ctx, int64_t task, int worker)                                     \
    {                                                                                             \
        struct csc_ctx *c = ctx;                                                                  \
        const struct dnnz_csc *m = c->m;                                                          \
        int64_t r0 = task * TASK_ROWS, r1 = r0 + TASK_ROWS < m->rows ? r0 + TASK_ROWS : m->rows;  \
        int32_t col[CSC_CHUNK] __attribute__((aligned(64)));                                      \
        float val[CSC_CHUNK] __attribute__((aligned(64)));                                        \
        (void)worker;                                                                             \
        if (c->batch == 1 || c->gather) {                                                         \
            for (int64_t b = 0; b < c->batch; b++)                                                \
                for (int64_t r = r0; r < r1; r++) {                                               \
                    int64_t p1 = csc_ptr(m, r + 1);                                               \
                    float s = 0.0f;                                                               \
                    for (int64_t p = csc_ptr(m, r); p < p1; p += CSC_CHUNK) {                     \
                        int n = p1 - p < CSC_CHUNK ? (int)(p1 - p) : CSC_CHUNK;                   \
                        csc_convert(m, p, n, col, val);                                           \
                        s += DOT1(col, val, n, c->x + b * m->cols);                               \
                    }                                                                             \
                    c->y[b * m->rows + r] = s;                                                    \
                }                                                                                 \
            return;                                                                               \
        }                                                                                         \
        for (int64_t b0 = 0; b0 < c->batch; b0 += BC) {                                           \
            int lanes = c->batch - b0 < BC ? (int)(c->batch - b0) : BC;                           \
            const float *xt = c->x + b0 * m->cols;                                                \
            for (int64_t r = r0; r < r1; r++) {                                                   \
                float acc[BC] __attribute__((aligned(64)));                                       \
                int64_t p1 = csc_ptr(m, r + 1);                                                   \
                memset(acc, 0, sizeof acc);                                                       \
                for (int64_t p = csc_ptr(m, r); p < p1; p += CSC_CHUNK) {                         \
                    int n = p1 - p < CSC_CHUNK ? (int)(p1 - p) : CSC_CHUNK;                       \
                    csc_convert(m, p, n, col, val);                                               \
                    LANES(col, val, n, xt, lanes, acc);                                           \
                }                                                                                 \
                for (int l = 0; l < lanes; l++)                                                   \
                    c->y[(b0 + l) * m->rows + r] = acc[l];                                        \
            }                                                                                     \
        }                                                                                         \
    }

#define CSC_BC_REF 16
static inline float dot1_ref(const int32_t *col, const float *val, int n, const float *x)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += val[i] * x[col[i]];
    return s;
}

/* xt rows are `lanes` wide, padded to the chunk width stride (see csc_run) */
static inline void lanes_ref(const int32_t *col, const float *val, int n, const float *xt, int lanes, float *acc)
{
    for (int i = 0; i < n; i++) {
        const float *xr = xt + (int64_t)col[i] * CSC_BC_REF;
        float v = val[i];
        for (int l = 0; l < CSC_BC_REF; l++)
            acc[l] += v * xr[l];
    }
    (void)lanes;
}
CSC_TASK(csc_task_ref, , dot1_ref, lanes_ref, CSC_BC_REF)

#if DNNZ_X86
#define CSC_BC_AVX2 32
static T_AVX2 inline float dot1_avx2(const int32_t *col, const float *val, int n, const float *x)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 g0 = _mm256_i32gather_ps(x, _mm256_load_si256((const __m256i *)(col + i)), 4);
        __m256 g1 = _mm256_i32gather_ps(x, _mm256_load_si256((const __m256i *)(col + i + 8)), 4);
        a0 = _mm256_fmadd_ps(g0, _mm256_load_ps(val + i), a0);
        a1 = _mm256_fmadd_ps(g1, _mm256_load_ps(val + i + 8), a1);
    }
    v8f t = (v8f)_mm256_add_ps(a0, a1);
    float s = hsum_avx2(t);
    for (; i < n; i++)
        s += val[i] * x[col[i]];
    return s;
}

static T_AVX2 inline void lanes_avx2(const int32_t *col, const float *val, int n, const float *xt, int lanes, float *acc)
{
    v8f a[4];
    int nv = (lanes + 7) / 8;
    for (int v = 0; v < 4; v++)
        a[v] = *(v8f *)(acc + 8 * v);
    if (nv == 1) {
        for (int i = 0; i < n; i++)
            a[0] += val[i] * *(const v8f *)(xt + (int64_t)col[i] * CSC_BC_AVX2);
    } else if (nv == 2) {
        for (int i = 0; i < n; i++) {
            const float *xr = xt + (int64_t)col[i] * CSC_BC_AVX2;
            a[0] += val[i] * *(const v8f *)xr;
            a[1] += val[i] * *(const v8f *)(xr + 8);
        }
    } else {
        for (int i = 0; i < n; i++) {
            const float *xr = xt + (int64_t)col[i] * CSC_BC_AVX2;
            float v = val[i];
            a[0] += v * *(const v8f *)xr;
            a[1] += v * *(const v8f *)(xr + 8);
            a[2] += v * *(const v8f *)(xr + 16);
            a[3] += v * *(const v8f *)(xr + 24);
        }
    }
    for (int v = 0; v < 4; v++)
        *(v8f *)(acc + 8 * v) = a[v];
}
CSC_TASK(csc_task_avx2, T_AVX2, dot1_avx2, lanes_avx2, CSC_BC_AVX2)

#define CSC_BC_AVX512 64
static T_AVX512 inline float dot1_avx512(const int32_t *col, const float *val, int n, const float *x)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 g0 = _mm512_i32gather_ps(_mm512_load_si512(col + i), x, 4);
        __m512 g1 = _mm512_i32gather_ps(_mm512_load_si512(col + i + 16), x, 4);
        a0 = _mm512_fmadd_ps(g0, _mm512_load_ps(val + i), a0);
        a1 = _mm512_fmadd_ps(g1, _mm512_load_ps(val + i + 16), a1);
    }
    for (; i < n; i += 16) {
        __mmask16 mk = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i iv = _mm512_maskz_loadu_epi32(mk, col + i);
        __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, iv, x, 4);
        a0 = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(mk, val + i), a0);
    }
    v16f t = (v16f)_mm512_add_ps(a0, a1);
    return hsum_avx512(t);
}

static T_AVX512 inline void lanes_avx512(const int32_t *col, const float *val, int n, const float *xt, int lanes, float *acc)
{
    v16f a[4];
    int nv = (lanes + 15) / 16;
    for (int v = 0; v < 4; v++)
        a[v] = *(v16f *)(acc + 16 * v);
    if (nv == 1) {
        for (int i = 0; i < n; i++)
            a[0] += val[i] * *(const v16f *)(xt + (int64_t)col[i] * CSC_BC_AVX512);
    } else if (nv == 2) {
        for (int i = 0; i < n; i++) {
            const float *xr = xt + (int64_t)col[i] * CSC_BC_AVX512;
            a[0] += val[i] * *(const v16f *)xr;
            a[1] += val[i] * *(const v16f *)(xr + 16);
        }
    } else {
        for (int i = 0; i < n; i++) {
            const float *xr = xt + (int64_t)col[i] * CSC_BC_AVX512;
            float v = val[i];
            a[0] += v * *(const v16f *)xr;
            a[1] += v * *(const v16f *)(xr + 16);
            a[2] += v * *(const v16f *)(xr + 32);
            a[3] += v * *(const v16f *)(xr + 48);
        }
    }
    for (int v = 0; v < 4; v++)
        *(v16f *)(acc + 16 * v) = a[v];
}
CSC_TASK(csc_task_avx512_generic, T_AVX512, dot1_avx512, lanes_avx512, CSC_BC_AVX512)

/* 16 little-endian indices of `width` bytes starting at element p, zero-extended (masked tail) */
static T_AVX512 inline __m512i load_u32x16(const uint8_t *base, int width, int64_t p, __mmask16 mk)
{
    switch (width) {
    case 1: return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, base + p));
    case 2: return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, base + 2 * p));
    default: return _mm512_maskz_loadu_epi32(mk, base + 4 * p);
    }
}

/* Batch 1: straight from the sections, 16 entries per step: column indices widened in
 * registers, x gathered, values loaded or looked up (codebook in registers when k <= 32). */
static T_AVX512 void csc_task_avx512(void *ctx, int64_t task, int worker)
{
    struct csc_ctx *c = ctx;
    const struct dnnz_csc *m = c->m;
    if (c->batch != 1 && !c->gather) {
        csc_task_avx512_generic(ctx, task, worker);
        return;
    }
    int64_t r0 = task * TASK_ROWS, r1 = r0 + TASK_ROWS < m->rows ? r0 + TASK_ROWS : m->rows;
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
        v16f t = (v16f)_mm512_add_ps(a0, a1);
        y[r] = hsum_avx512(t);
    }
    }
}
#endif

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
        struct panel_ctx pc;
        memset(&pc, 0, sizeof pc);
        pc.kind = 2;
        pc.csc = m;
        for (int64_t i = 0; m->value_kind && i < m->k && i < 32; i++)
            pc.cbpad[i] = m->values[i];
        pc.rows = m->rows;
        pc.cols = m->cols;
        pc.batch = batch;
        pc.y = y;
        return panel_run(&pc, x);
    }
    int bc = CSC_BC_REF;
    dnnz_cpu_task_fn fn = csc_task_ref;
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512) {
        bc = CSC_BC_AVX512;
        fn = csc_task_avx512;
    } else if (path == DNNZ_CPU_AVX2) {
        bc = CSC_BC_AVX2;
        fn = csc_task_avx2;
    }
#endif
    struct csc_ctx c = {m, batch, x, bc, y, 0};
    float *xt = NULL;
    /* Transposing x costs batch * cols; with fewer non-zeros than about two per column the
     * gathers of the batch-1 kernel, repeated per batch row, are cheaper. */
    c.gather = batch > 1 && (double)m->nnz < 2.0 * (double)m->cols;
    if (batch > 1 && m->cols > 0 && !c.gather) {
        /* x transposed in chunks of bc batch lanes: chunk q holds xt[col][lane], rows of bc
         * floats (zero past the last lane), so a non-zero at `col` reads one contiguous run */
        int64_t nchunks = (batch + bc - 1) / bc, n;
        if (!mul_ok(nchunks * bc, m->cols, &n) || (uint64_t)n > SIZE_MAX / 4)
            return DNNZ_E_LIMIT;
        xt = aligned_alloc(64, ((size_t)n * 4 + 63) & ~(size_t)63);
        if (!xt)
            return DNNZ_E_ALLOC;
        memset(xt, 0, (size_t)n * 4);
        for (int64_t q = 0; q < nchunks; q++) {
            float *dst = xt + q * bc * m->cols;
            int64_t lanes = batch - q * bc < bc ? batch - q * bc : bc;
            for (int64_t l = 0; l < lanes; l++) {
                const float *src = x + (q * bc + l) * m->cols;
                for (int64_t j = 0; j < m->cols; j++)
                    dst[j * bc + l] = src[j];
            }
        }
        c.x = xt;
    } else if (m->cols == 0) {
        memset(y, 0, (size_t)(batch * m->rows) * 4);
        return DNNZ_OK;
    }
    dnnz_cpu_parallel((m->rows + TASK_ROWS - 1) / TASK_ROWS, fn, &c);
    free(xt);
    return DNNZ_OK;
}
