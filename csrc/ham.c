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

#include "kern.h"

#include <stdlib.h>
#include <string.h>


#define KC DNNZ_HAM_KC
#define TR DNNZ_HAM_TASK_ROWS

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
DEFINE_TILE_VEC(tile_avx2_1, DNNZ_T_AVX2, v8f, v8fu, 8, 1)
DEFINE_TILE_VEC(tile_avx2_2, DNNZ_T_AVX2, v8f, v8fu, 8, 2)
DEFINE_TILE_VEC(tile_avx2_3, DNNZ_T_AVX2, v8f, v8fu, 8, 3)
DEFINE_TILE_VEC(tile_avx512_1, DNNZ_T_AVX512, v16f, v16fu, 16, 1)
DEFINE_TILE_VEC(tile_avx512_2, DNNZ_T_AVX512, v16f, v16fu, 16, 2)
DEFINE_TILE_VEC(tile_avx512_3, DNNZ_T_AVX512, v16f, v16fu, 16, 3)
DEFINE_TILE_VEC(tile_avx512_4, DNNZ_T_AVX512, v16f, v16fu, 16, 4)
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
    return (int64_t)(dnnz_rd_le(s->count_ptr, s->count_bytes, r + 1) - dnnz_rd_le(s->count_ptr, s->count_bytes, r));
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
        uint64_t start = dnnz_rd_le(s->offsets, s->off_bytes, r), end = dnnz_rd_le(s->offsets, s->off_bytes, r + 1);
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
            return dnnz_fail(err, DNNZ_FIELD_LENGTHS, -1, st);
    }
    if (dnnz_rd_le(s->offsets, s->off_bytes, 0) != 0)
        return dnnz_fail(err, DNNZ_FIELD_OFFSETS, 0, DNNZ_E_CORRUPT);
    for (int64_t r = 0; r < s->n_streams; r++) {
        uint64_t a = dnnz_rd_le(s->offsets, s->off_bytes, r), b = dnnz_rd_le(s->offsets, s->off_bytes, r + 1);
        int64_t n = stream_count(s, r);
        /* every code has 1..max_len bits */
        if (b < a || b - a < (uint64_t)n || (uint64_t)n * (max_len ? max_len : 1) < b - a)
            return dnnz_fail(err, DNNZ_FIELD_OFFSETS, r + 1, DNNZ_E_CORRUPT);
        total_syms += n;
    }
    if (total_syms > 0 && k == 0)
        return dnnz_fail(err, DNNZ_FIELD_LENGTHS, -1, DNNZ_E_TRUNCATED);
    uint64_t end = dnnz_rd_le(s->offsets, s->off_bytes, s->n_streams);
    if (end > (uint64_t)s->payload_len * 8)
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRUNCATED);
    if (dnnz_bit_bytes(end) != (uint64_t)s->payload_len)
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRAILING);
    if ((end & 7) && (s->payload[s->payload_len - 1] & (0xFFu >> (end & 7))))
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRAILING);
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
                st = dnnz_fail(err, DNNZ_FIELD_PAYLOAD, where[i], status[i]);
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
            dnnz_wr_le(offsets, off_bytes, r, 0);
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
        dnnz_wr_le(offsets, off_bytes, r, pos);
        st = dnnz_huf_encode(&ct, &w, (const uint8_t *)indices + (size_t)(r * cols) * idx_bytes, (unsigned)idx_bytes,
                             (size_t)cols, NULL);
    }
    uint64_t end = 0;
    if (st == DNNZ_OK)
        st = dnnz_bit_writer_finish(&w, &end);
    if (st == DNNZ_OK && end > lim)
        st = DNNZ_E_LIMIT;
    if (st == DNNZ_OK)
        dnnz_wr_le(offsets, off_bytes, rows, end);
    dnnz_huf_ctable_free(&ct);
    return st;
}

int dnnz_ham_validate(const struct dnnz_ham *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    if (m->rows < 0 || m->cols < 0 || m->k < 0)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rows > DNNZ_ENC_MAX_DIM || m->cols > DNNZ_ENC_MAX_DIM || m->k > DNNZ_HUF_MAX_SYMBOLS)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if ((m->off_bytes != 4 && m->off_bytes != 8) || (m->rows * m->cols > 0 && m->k < 1))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->codebook_len != m->k || (m->k && !m->codebook))
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, -1, m->codebook_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t nan = dnnz_find_bad_value(m->codebook, m->k, 0);
    if (nan >= 0)
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, nan, DNNZ_E_CORRUPT);
    if (m->lengths_len != m->k || (m->k && !m->lengths))
        return dnnz_fail(err, DNNZ_FIELD_LENGTHS, -1, m->lengths_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->offsets_len != m->rows + 1 || !m->offsets)
        return dnnz_fail(err, DNNZ_FIELD_OFFSETS, -1, m->offsets_len < m->rows + 1 ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->payload_len < 0 || (m->payload_len && !m->payload))
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_CORRUPT);
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
            pos[i] = dnnz_rd_le(m->offsets, m->off_bytes, r + (i < nr ? i : 0));
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
                    dnnz_kern_lookup(c->path, ib + i * stride + (size_t)s0 * width, width, kc, m->codebook, m->k,
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
        dnnz_bit_reader_init(&rd, m->payload, (size_t)m->payload_len, dnnz_rd_le(m->offsets, m->off_bytes, r));
        for (int64_t k0 = 0; k0 < m->cols; k0 += KC) {
            int kc = m->cols - k0 < KC ? (int)(m->cols - k0) : KC;
            dnnz_huf_decode_reader(c->t, &rd, ib, (size_t)kc);
            dnnz_kern_lookup(c->path, ib, width, kc, m->codebook, m->k, c->y + r * m->cols + k0);
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
