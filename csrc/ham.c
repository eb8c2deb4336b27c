/* ham.c: the `ham` encoding and the kernels it shares with `sham` (see ham.h).
 *
 * matmul: a task is a block of DNNZ_HAM_TASK_ROWS output rows. Four rows at a time, for each
 * chunk of DNNZ_HAM_KC input columns, the four row streams are decoded together (interleaved:
 * four independent dependency chains, dnnz_huf_decode4_u8_at) into small L1-resident index
 * buffers, the indices become weights by a codebook lookup held in vector registers (a
 * permute for k <= 64 on AVX-512, k <= 16 on AVX2; a gather above), and the 4-row tile is
 * multiplied with up to 4 batch rows at a time, 16 accumulators in registers. The dense matrix
 * never exists. Every output is summed by one task in a fixed order: results do not depend on
 * the thread count (they do between CPU paths: FMA contraction and lane order).
 */
#include "ham.h"

#include "cpu.h"

#include <stdlib.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(DNNZ_NO_SIMD) /* DNNZ_NO_SIMD: portable-only build */
#define DNNZ_X86 1
#include <immintrin.h>
#else
#define DNNZ_X86 0
#endif

#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,fma,avx2")))

#define KC DNNZ_HAM_KC
#define TR DNNZ_HAM_TASK_ROWS

static int fail(struct dnnz_enc_err *err, int field, int64_t where, int status)
{
    if (err) {
        err->field = field;
        err->where = where;
    }
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* codebook lookup                                                                             */
/* ------------------------------------------------------------------------------------------ */

static void lookup_ref(const void *idx, int width, int n, const float *cb, float *w)
{
    if (width == 1) {
        const uint8_t *p = idx;
        for (int j = 0; j < n; j++)
            w[j] = cb[p[j]];
    } else if (width == 2) {
        const uint16_t *p = idx;
        for (int j = 0; j < n; j++)
            w[j] = cb[p[j]];
    } else {
        const uint32_t *p = idx;
        for (int j = 0; j < n; j++)
            w[j] = cb[p[j]];
    }
}

#if DNNZ_X86
static T_AVX2 void lookup_avx2(const void *idx, int width, int n, const float *cb, int64_t k, float *w)
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

static T_AVX512 void lookup_avx512(const void *idx, int width, int n, const float *cb, int64_t k, float *w)
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

void dnnz_ham_lookup(int path, const void *idx, int width, int n, const float *cb, int64_t k, float *w)
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
/* gather dot (sham, batch 1)                                                                  */
/* ------------------------------------------------------------------------------------------ */

static float gdot_ref(const float *w, const uint8_t *col, int cb, int n, const float *x)
{
    float s[4] = {0, 0, 0, 0};
    int j = 0;
    for (; j + 4 <= n; j += 4)
        for (int l = 0; l < 4; l++)
            s[l] += w[j + l] * x[dnnz_ham_rd(col, cb, j + l)];
    for (; j < n; j++)
        s[0] += w[j] * x[dnnz_ham_rd(col, cb, j)];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

#if DNNZ_X86
static T_AVX2 float gdot_avx2(const float *w, const uint8_t *col, int cb, int n, const float *x)
{
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i iv;
        if (cb == 1)
            iv = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(col + j)));
        else if (cb == 2)
            iv = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(col + 2 * j)));
        else
            iv = _mm256_loadu_si256((const __m256i *)(col + 4 * j));
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_i32gather_ps(x, iv, 4), acc);
    }
    float t[8];
    _mm256_storeu_ps(t, acc);
    float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; j < n; j++)
        s += w[j] * x[dnnz_ham_rd(col, cb, j)];
    return s;
}

static T_AVX512 float gdot_avx512(const float *w, const uint8_t *col, int cb, int n, const float *x)
{
    __m512 acc = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i iv;
        if (cb == 1)
            iv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(col + j)));
        else if (cb == 2)
            iv = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(col + 2 * j)));
        else
            iv = _mm512_loadu_si512((const void *)(col + 4 * j));
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_i32gather_ps(iv, x, 4), acc);
    }
    float s = _mm512_reduce_add_ps(acc);
    for (; j < n; j++)
        s += w[j] * x[dnnz_ham_rd(col, cb, j)];
    return s;
}
#endif

float dnnz_ham_gather_dot(int path, const float *w, const uint8_t *col, int col_bytes, int n, const float *x)
{
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512)
        return gdot_avx512(w, col, col_bytes, n, x);
    if (path == DNNZ_CPU_AVX2)
        return gdot_avx2(w, col, col_bytes, n, x);
#endif
    (void)path;
    return gdot_ref(w, col, col_bytes, n, x);
}

#define LN DNNZ_HAM_LANES

static void lanes_ref(const float *w, const uint8_t *col, int cb, int n, const float *xt, float *acc)
{
    for (int j = 0; j < n; j++) {
        const float *xr = xt + dnnz_ham_rd(col, cb, j) * LN;
        for (int l = 0; l < LN; l++)
            acc[l] += w[j] * xr[l];
    }
}

#if DNNZ_X86
typedef float v8f_l __attribute__((vector_size(32)));
typedef float v16f_l __attribute__((vector_size(64)));

/* One kernel per column-index width so the index load is a plain load (through 1-byte-aligned
 * types: a section may sit at any offset of a memory map). */
typedef uint16_t u16_ua __attribute__((aligned(1)));
typedef uint32_t u32_ua __attribute__((aligned(1)));
#define DEFINE_LANES(NAME, TGT, V, NV, IT)                                                      \
    static TGT void NAME(const float *w, const IT *col, int n, const float *xt, float *acc)     \
    {                                                                                           \
        V a[NV];                                                                                \
        memcpy(a, acc, sizeof a);                                                               \
        for (int j = 0; j < n; j++) {                                                           \
            const V *xr = (const V *)(xt + (size_t)col[j] * LN); /* 64-byte aligned rows */     \
            for (int v = 0; v < NV; v++)                                                        \
                a[v] += w[j] * xr[v];                                                           \
        }                                                                                       \
        memcpy(acc, a, sizeof a);                                                               \
    }
DEFINE_LANES(lanes_avx2_1, T_AVX2, v8f_l, 2, uint8_t)
DEFINE_LANES(lanes_avx2_2, T_AVX2, v8f_l, 2, u16_ua)
DEFINE_LANES(lanes_avx2_4, T_AVX2, v8f_l, 2, u32_ua)
DEFINE_LANES(lanes_avx512_1, T_AVX512, v16f_l, 1, uint8_t)
DEFINE_LANES(lanes_avx512_2, T_AVX512, v16f_l, 1, u16_ua)
DEFINE_LANES(lanes_avx512_4, T_AVX512, v16f_l, 1, u32_ua)
#endif

void dnnz_ham_lanes(int path, const float *w, const uint8_t *col, int col_bytes, int n, const float *xt, float *acc)
{
#if DNNZ_X86
    /* colidx sections are little-endian; so are the x86 hosts these kernels run on */
    if (path == DNNZ_CPU_AVX512) {
        if (col_bytes == 1)
            return lanes_avx512_1(w, col, n, xt, acc);
        if (col_bytes == 2)
            return lanes_avx512_2(w, (const u16_ua *)(const void *)col, n, xt, acc);
        return lanes_avx512_4(w, (const u32_ua *)(const void *)col, n, xt, acc);
    }
    if (path == DNNZ_CPU_AVX2) {
        if (col_bytes == 1)
            return lanes_avx2_1(w, col, n, xt, acc);
        if (col_bytes == 2)
            return lanes_avx2_2(w, (const u16_ua *)(const void *)col, n, xt, acc);
        return lanes_avx2_4(w, (const u32_ua *)(const void *)col, n, xt, acc);
    }
#endif
    (void)path;
    lanes_ref(w, col, col_bytes, n, xt, acc);
}

/* ------------------------------------------------------------------------------------------ */
/* 4-row tile times up to 4 batch rows                                                         */
/* ------------------------------------------------------------------------------------------ */

/* out[i * 4 + b] = sum_j w[i * KC + j] * x[b * xs + j] for i < 4, b < BT, j < n. */
typedef void (*tile_fn)(const float *w, const float *x, int64_t xs, int n, float *out);

#define DEFINE_TILE_REF(BT)                                                                     \
    static void tile_ref_##BT(const float *w, const float *x, int64_t xs, int n, float *out)    \
    {                                                                                           \
        for (int i = 0; i < 4; i++)                                                             \
            for (int b = 0; b < BT; b++) {                                                      \
                float s[4] = {0, 0, 0, 0};                                                      \
                int j = 0;                                                                      \
                for (; j + 4 <= n; j += 4)                                                      \
                    for (int l = 0; l < 4; l++)                                                 \
                        s[l] += w[i * KC + j + l] * x[b * xs + j + l];                          \
                for (; j < n; j++)                                                              \
                    s[0] += w[i * KC + j] * x[b * xs + j];                                      \
                out[i * 4 + b] = (s[0] + s[1]) + (s[2] + s[3]);                                 \
            }                                                                                   \
    }
DEFINE_TILE_REF(1)
DEFINE_TILE_REF(2)
DEFINE_TILE_REF(3)
DEFINE_TILE_REF(4)

#if DNNZ_X86
typedef float v8f __attribute__((vector_size(32)));
typedef float v8fu __attribute__((vector_size(32), aligned(4)));
typedef float v16f __attribute__((vector_size(64)));
typedef float v16fu __attribute__((vector_size(64), aligned(4)));

#define DEFINE_TILE_VEC(NAME, TGT, V, VU, VW, BT)                                                 \
    static TGT void NAME(const float *w, const float *x, int64_t xs, int n, float *out)          \
    {                                                                                             \
        V acc[4][BT];                                                                             \
        for (int i = 0; i < 4; i++)                                                               \
            for (int b = 0; b < BT; b++)                                                          \
                acc[i][b] = (V){0};                                                               \
        int j = 0;                                                                                \
        for (; j + VW <= n; j += VW) {                                                            \
            V w0 = *(const VU *)(w + j), w1 = *(const VU *)(w + KC + j);                          \
            V w2 = *(const VU *)(w + 2 * KC + j), w3 = *(const VU *)(w + 3 * KC + j);             \
            for (int b = 0; b < BT; b++) {                                                        \
                V xv = *(const VU *)(x + b * xs + j);                                             \
                acc[0][b] += w0 * xv;                                                             \
                acc[1][b] += w1 * xv;                                                             \
                acc[2][b] += w2 * xv;                                                             \
                acc[3][b] += w3 * xv;                                                             \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < 4; i++)                                                               \
            for (int b = 0; b < BT; b++) {                                                        \
                float s = 0;                                                                      \
                for (int l = 0; l < VW; l++)                                                      \
                    s += acc[i][b][l];                                                            \
                for (int jj = j; jj < n; jj++)                                                    \
                    s += w[i * KC + jj] * x[b * xs + jj];                                         \
                out[i * 4 + b] = s;                                                               \
            }                                                                                     \
    }
DEFINE_TILE_VEC(tile_avx2_1, T_AVX2, v8f, v8fu, 8, 1)
DEFINE_TILE_VEC(tile_avx2_2, T_AVX2, v8f, v8fu, 8, 2)
DEFINE_TILE_VEC(tile_avx2_3, T_AVX2, v8f, v8fu, 8, 3)
DEFINE_TILE_VEC(tile_avx512_1, T_AVX512, v16f, v16fu, 16, 1)
DEFINE_TILE_VEC(tile_avx512_2, T_AVX512, v16f, v16fu, 16, 2)
DEFINE_TILE_VEC(tile_avx512_3, T_AVX512, v16f, v16fu, 16, 3)
DEFINE_TILE_VEC(tile_avx512_4, T_AVX512, v16f, v16fu, 16, 4)
#endif

/* The tile kernel for `path` and a batch block of bt rows; *max_bt = the block it handles best
 * (AVX2 has 16 vector registers: 4 x 3 accumulators is its largest tile). */
static tile_fn pick_tile(int path, int bt)
{
#if DNNZ_X86
    if (path == DNNZ_CPU_AVX512) {
        static const tile_fn f[4] = {tile_avx512_1, tile_avx512_2, tile_avx512_3, tile_avx512_4};
        return f[bt - 1];
    }
    if (path == DNNZ_CPU_AVX2) {
        static const tile_fn f[3] = {tile_avx2_1, tile_avx2_2, tile_avx2_3};
        return f[(bt > 3 ? 3 : bt) - 1];
    }
#endif
    (void)path;
    static const tile_fn f[4] = {tile_ref_1, tile_ref_2, tile_ref_3, tile_ref_4};
    return f[bt - 1];
}

static int max_bt(int path)
{
    return path == DNNZ_CPU_AVX2 ? 3 : 4;
}

/* ------------------------------------------------------------------------------------------ */
/* stream validation (ham and sham)                                                            */
/* ------------------------------------------------------------------------------------------ */

static inline int64_t stream_count(const struct dnnz_ham_streams *s, int64_t r)
{
    if (!s->count_ptr)
        return s->per_stream;
    return (int64_t)(dnnz_ham_rd(s->count_ptr, s->count_bytes, r + 1) - dnnz_ham_rd(s->count_ptr, s->count_bytes, r));
}

struct check_ctx {
    const struct dnnz_ham_streams *s;
    const dnnz_huf_dtable *t;
    int64_t per_task;
    int32_t *status; /* per task */
    int64_t *where;  /* per task: first bad stream */
};

static void check_task(void *vc, int64_t task, int worker)
{
    struct check_ctx *c = vc;
    const struct dnnz_ham_streams *s = c->s;
    uint32_t buf[KC + 16];
    (void)worker;
    int64_t r0 = task * c->per_task, r1 = r0 + c->per_task < s->n_streams ? r0 + c->per_task : s->n_streams;
    c->status[task] = DNNZ_OK;
    for (int64_t r = r0; r < r1; r++) {
        uint64_t start = dnnz_ham_rd(s->offsets, s->off_bytes, r), end = dnnz_ham_rd(s->offsets, s->off_bytes, r + 1);
        int64_t n = stream_count(s, r);
        dnnz_bit_reader rd;
        uint32_t flags = 0;
        dnnz_bit_reader_init(&rd, s->payload, (size_t)dnnz_bit_bytes(end), start);
        for (int64_t done = 0; done < n; done += KC) {
            int64_t m = n - done < KC ? n - done : KC;
            flags |= dnnz_huf_decode_reader(c->t, &rd, buf, (size_t)m);
        }
        if ((flags & DNNZ_HUF_INVALID) || dnnz_bit_reader_tell(&rd) != end) {
            c->status[task] = DNNZ_E_CORRUPT;
            c->where[task] = r;
            return;
        }
    }
}

int dnnz_ham_check_streams(const uint8_t *lengths, int64_t k, const struct dnnz_ham_streams *s,
                           struct dnnz_enc_err *err)
{
    uint32_t max_len = 0;
    int64_t total_syms = 0;
    if (k > 0) {
        int st = dnnz_huf_check_lengths(lengths, (size_t)k, NULL, &max_len);
        if (st != DNNZ_OK)
            return fail(err, DNNZ_FIELD_LENGTHS, -1, st);
    }
    if (dnnz_ham_rd(s->offsets, s->off_bytes, 0) != 0)
        return fail(err, DNNZ_FIELD_OFFSETS, 0, DNNZ_E_CORRUPT);
    for (int64_t r = 0; r < s->n_streams; r++) {
        uint64_t a = dnnz_ham_rd(s->offsets, s->off_bytes, r), b = dnnz_ham_rd(s->offsets, s->off_bytes, r + 1);
        int64_t n = stream_count(s, r);
        /* every code has 1..max_len bits */
        if (b < a || b - a < (uint64_t)n || (uint64_t)n * (max_len ? max_len : 1) < b - a)
            return fail(err, DNNZ_FIELD_OFFSETS, r + 1, DNNZ_E_CORRUPT);
        total_syms += n;
    }
    if (total_syms > 0 && k == 0)
        return fail(err, DNNZ_FIELD_LENGTHS, -1, DNNZ_E_TRUNCATED);
    uint64_t end = dnnz_ham_rd(s->offsets, s->off_bytes, s->n_streams);
    if (end > (uint64_t)s->payload_len * 8)
        return fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRUNCATED);
    if (dnnz_bit_bytes(end) != (uint64_t)s->payload_len)
        return fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRAILING);
    if ((end & 7) && (s->payload[s->payload_len - 1] & (0xFFu >> (end & 7))))
        return fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRAILING);
    if (total_syms == 0)
        return DNNZ_OK;

    dnnz_huf_dtable t;
    DNNZ_CHECK(dnnz_huf_dtable_init(&t, lengths, (size_t)k));
    int64_t per_task = 256;
    int64_t n_tasks = (s->n_streams + per_task - 1) / per_task;
    int32_t *status = malloc((size_t)n_tasks * sizeof *status);
    int64_t *where = malloc((size_t)n_tasks * sizeof *where);
    int st = DNNZ_OK;
    if (!status || !where) {
        st = DNNZ_E_ALLOC;
    } else {
        struct check_ctx c = {s, &t, per_task, status, where};
        dnnz_cpu_parallel(n_tasks, check_task, &c);
        for (int64_t i = 0; i < n_tasks; i++)
            if (status[i] != DNNZ_OK) {
                st = fail(err, DNNZ_FIELD_PAYLOAD, where[i], status[i]);
                break;
            }
    }
    free(status);
    free(where);
    dnnz_huf_dtable_free(&t);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* ham                                                                                         */
/* ------------------------------------------------------------------------------------------ */

static void wr_le(uint8_t *p, int width, int64_t i, uint64_t v)
{
    for (int b = 0; b < width; b++)
        p[i * width + b] = (uint8_t)(v >> (8 * b));
}

int dnnz_ham_encode(const uint8_t *lengths, int64_t k, const void *indices, int32_t idx_bytes,
                    int64_t rows, int64_t cols, uint8_t *offsets, int32_t off_bytes,
                    uint8_t *payload, int64_t payload_cap)
{
    if (rows < 0 || cols < 0 || k < 0 || payload_cap < 0 || (off_bytes != 4 && off_bytes != 8) ||
        (idx_bytes != 1 && idx_bytes != 2 && idx_bytes != 4))
        return DNNZ_E_ARGUMENT;
    if (rows * cols == 0 || k == 0) {
        if (rows * cols != 0)
            return DNNZ_E_ARGUMENT;
        for (int64_t r = 0; r <= rows; r++)
            wr_le(offsets, off_bytes, r, 0);
        return DNNZ_OK;
    }
    dnnz_huf_ctable ct;
    dnnz_bit_writer w;
    DNNZ_CHECK(dnnz_huf_ctable_init(&ct, lengths, (size_t)k));
    int st = dnnz_bit_writer_init(&w, payload, (size_t)payload_cap, 0);
    const uint64_t lim = off_bytes == 4 ? UINT32_MAX : UINT64_MAX;
    for (int64_t r = 0; r < rows && st == DNNZ_OK; r++) {
        uint64_t pos = dnnz_bit_writer_tell(&w);
        if (pos > lim) {
            st = DNNZ_E_LIMIT;
            break;
        }
        wr_le(offsets, off_bytes, r, pos);
        st = dnnz_huf_encode(&ct, &w, (const uint8_t *)indices + (size_t)(r * cols) * idx_bytes, (unsigned)idx_bytes,
                             (size_t)cols, NULL);
    }
    uint64_t end = 0;
    if (st == DNNZ_OK)
        st = dnnz_bit_writer_finish(&w, &end);
    if (st == DNNZ_OK && end > lim)
        st = DNNZ_E_LIMIT;
    if (st == DNNZ_OK)
        wr_le(offsets, off_bytes, rows, end);
    dnnz_huf_ctable_free(&ct);
    return st;
}

int dnnz_ham_validate(const struct dnnz_ham *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    if (m->rows < 0 || m->cols < 0 || m->k < 0)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rows > DNNZ_ENC_MAX_DIM || m->cols > DNNZ_ENC_MAX_DIM || m->k > DNNZ_HUF_MAX_SYMBOLS)
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if ((m->off_bytes != 4 && m->off_bytes != 8) || (m->rows * m->cols > 0 && m->k < 1))
        return fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->codebook_len != m->k || (m->k && !m->codebook))
        return fail(err, DNNZ_FIELD_CODEBOOK, -1, m->codebook_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    for (int64_t i = 0; i < m->k; i++) {
        uint32_t u;
        memcpy(&u, &m->codebook[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN */
            return fail(err, DNNZ_FIELD_CODEBOOK, i, DNNZ_E_CORRUPT);
    }
    if (m->lengths_len != m->k || (m->k && !m->lengths))
        return fail(err, DNNZ_FIELD_LENGTHS, -1, m->lengths_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->offsets_len != m->rows + 1 || !m->offsets)
        return fail(err, DNNZ_FIELD_OFFSETS, -1, m->offsets_len < m->rows + 1 ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->payload_len < 0 || (m->payload_len && !m->payload))
        return fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_CORRUPT);
    struct dnnz_ham_streams s = {m->rows, m->cols, NULL, 0, m->offsets, m->off_bytes, m->payload, m->payload_len};
    return dnnz_ham_check_streams(m->lengths, m->k, &s, err);
}

struct ham_ctx {
    const struct dnnz_ham *m;
    const dnnz_huf_dtable *t;
    const float *x;
    int64_t batch;
    float *y;    /* matmul: (batch, rows); decode: (rows, cols) */
    int path;
};

#define DKC 4096 /* 1-byte symbols decoded per stream at a time (4 x 4 KiB stay in L1) */

static void ham_matmul_task(void *vc, int64_t task, int worker)
{
    const struct ham_ctx *c = vc;
    const struct dnnz_ham *m = c->m;
    const int width = (int)c->t->out_width;
    /* 1-byte symbols: DKC per stream; wider ones: KC per stream (same buffer) */
    const int dkc = width == 1 ? DKC : KC;
    const size_t stride = (size_t)(dkc + 64) * width;
    uint8_t ib[4 * (KC + 64) * 4] __attribute__((aligned(64)));
    float wb[4 * KC] __attribute__((aligned(64)));
    float out[16];
    const int mbt = max_bt(c->path);
    (void)worker;
    _Static_assert(DKC + 64 <= (KC + 64) * 4, "index buffer holds DKC 1-byte symbols per stream");
    memset(wb, 0, sizeof wb);
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        uint64_t pos[4];
        dnnz_bit_reader rd[4];
        for (int i = 0; i < 4; i++) {
            /* missing rows of the last group decode row r again (discarded) */
            pos[i] = dnnz_ham_rd(m->offsets, m->off_bytes, r + (i < nr ? i : 0));
            if (width > 1 && i < nr)
                dnnz_bit_reader_init(&rd[i], m->payload, (size_t)m->payload_len, pos[i]);
        }
        for (int64_t b = 0; b < c->batch; b++)
            for (int i = 0; i < nr; i++)
                c->y[b * m->rows + r + i] = 0.0f;
        for (int64_t d0 = 0; d0 < m->cols; d0 += dkc) {
            int dk = m->cols - d0 < dkc ? (int)(m->cols - d0) : dkc;
            if (width == 1) {
                uint8_t *const o[4] = {ib, ib + stride, ib + 2 * stride, ib + 3 * stride};
                dnnz_huf_decode4_u8_at(c->t, m->payload, (size_t)m->payload_len, pos, o, (size_t)dk);
            } else {
                for (int i = 0; i < nr; i++)
                    dnnz_huf_decode_reader(c->t, &rd[i], ib + i * stride, (size_t)dk);
            }
            for (int s0 = 0; s0 < dk; s0 += KC) {
                int kc = dk - s0 < KC ? dk - s0 : KC;
                int64_t k0 = d0 + s0;
                for (int i = 0; i < nr; i++)
                    dnnz_ham_lookup(c->path, ib + i * stride + (size_t)s0 * width, width, kc, m->codebook, m->k,
                                    wb + i * KC);
                for (int64_t b = 0; b < c->batch; b += mbt) {
                    int bt = c->batch - b < mbt ? (int)(c->batch - b) : mbt;
                    pick_tile(c->path, bt)(wb, c->x + b * m->cols + k0, m->cols, kc, out);
                    for (int bb = 0; bb < bt; bb++)
                        for (int i = 0; i < nr; i++)
                            c->y[(b + bb) * m->rows + r + i] += out[i * 4 + bb];
                }
            }
        }
    }
}

static void ham_decode_task(void *vc, int64_t task, int worker)
{
    const struct ham_ctx *c = vc;
    const struct dnnz_ham *m = c->m;
    const int width = (int)c->t->out_width;
    uint8_t ib[(KC + 64) * 4] __attribute__((aligned(64)));
    (void)worker;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    for (int64_t r = r0; r < r1; r++) {
        dnnz_bit_reader rd;
        dnnz_bit_reader_init(&rd, m->payload, (size_t)m->payload_len, dnnz_ham_rd(m->offsets, m->off_bytes, r));
        for (int64_t k0 = 0; k0 < m->cols; k0 += KC) {
            int kc = m->cols - k0 < KC ? (int)(m->cols - k0) : KC;
            dnnz_huf_decode_reader(c->t, &rd, ib, (size_t)kc);
            dnnz_ham_lookup(c->path, ib, width, kc, m->codebook, m->k, c->y + r * m->cols + k0);
        }
    }
}

int dnnz_ham_decode(const struct dnnz_ham *m, float *dst)
{
    if (!m || !dst)
        return DNNZ_E_ARGUMENT;
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    if (m->rows * m->cols == 0)
        return DNNZ_OK;
    dnnz_huf_dtable t;
    DNNZ_CHECK(dnnz_huf_dtable_init(&t, m->lengths, (size_t)m->k));
    struct ham_ctx c = {m, &t, NULL, 0, dst, path};
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, ham_decode_task, &c);
    dnnz_huf_dtable_free(&t);
    return DNNZ_OK;
}

int dnnz_ham_matmul(const struct dnnz_ham *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    if (m->rows == 0 || batch == 0)
        return DNNZ_OK;
    if (m->cols == 0) {
        memset(y, 0, (size_t)(batch * m->rows) * sizeof *y);
        return DNNZ_OK;
    }
    dnnz_huf_dtable t;
    DNNZ_CHECK(dnnz_huf_dtable_init(&t, m->lengths, (size_t)m->k));
    struct ham_ctx c = {m, &t, x, batch, y, path};
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, ham_matmul_task, &c);
    dnnz_huf_dtable_free(&t);
    return DNNZ_OK;
}
