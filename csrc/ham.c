/* ham.c: the `ham` encoding (pydnnz/encodings/ham.py) and the stream machinery it shares with
 * `sham` and `rlham` (see ham.h).
 *
 * matmul: a task is a block of DNNZ_KERN_TASK_ROWS output rows. On AVX-512 with VBMI2, for at
 * most 32 used symbols (besides an end-of-row symbol) and codes of at most 15 bits, the rows
 * decode in vector lanes, 16 rows per vector and four vectors interleaved (ham_lanes_run below),
 * fused with the multiply-add at batch 1, into 128-column float tiles for blocks of 8 batch rows
 * above. Otherwise, on the AVX2 / AVX-512 paths, for 1- and 2-byte symbols, eight rows are
 * decoded together, 2048 columns at a time (eight interleaved dependency chains, multi-symbol table,
 * dnnz_huf_decode8_u8_at; for large alphabets two four-stream decodes through the 14-bit wide
 * table, dnnz_huf_decode4_wide_at) into L1 index buffers. At batch 1 the indices go straight
 * into the multiply-add (codebook in registers: a permute for k <= 64 on AVX-512, k <= 16 on
 * AVX2; a gather above); at batch > 1 each slice is looked up once into an 8-row float tile
 * that the register-blocked micro-kernel multiplies with every batch row. rlham's rows whose runs
 * are all 0 (an end-of-row symbol, rows that may end early) take the same paths: the lanes first
 * decode as for ham and check that every lane ended at its row's end-of-row code (all rows full),
 * else decode again with lanes that stop there; the eight-row decoders fill a row's index buffer
 * with the end-of-row symbol (the extended codebook's 0) from its first one on. Everything else
 * (scalar path, 4-byte symbols) runs the kern.h tile driver with four rows per
 * tile (dnnz_ham_tile). The dense matrix never exists. Every output is summed by one task in a
 * fixed order: results do not depend on the thread count (they do between CPU paths: FMA
 * contraction and lane order).
 */
#include "ham.h"

#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define KC DNNZ_HAM_KC
#define TR DNNZ_HAM_TASK_ROWS

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

#define HAM_TILE_KC 2048 /* symbols per stream and tile: long decode runs, 4 x 8 KiB of weights */
_Static_assert(HAM_TILE_KC <= DNNZ_KERN_KC_MAX && HAM_TILE_KC % 16 == 0, "a kern.h slice width");

/* Tiles of rows that hold every entry of W (ham; rlham whose runs are all 0): see ham.h. */
const float *dnnz_ham_tile(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0, int64_t kc, int64_t kcp,
                           float *wbuf, int64_t *cursor, int64_t *stride)
{
    const struct dnnz_ham_rows *h = c->aux;
    const dnnz_huf_dtable *t = h->t;
    const int width = (int)t->out_width;
    const size_t bstride = (size_t)(HAM_TILE_KC + 64) * 4; /* bytes per row buffer */
    uint8_t ib[4 * (HAM_TILE_KC + 64) * 4] __attribute__((aligned(64)));
    (void)r;
    (void)k0;
    *stride = kcp;
    uint64_t pos[4];
    int64_t any = -1;
    for (int i = 0; i < nr; i++)
        if (cursor[i] >= 0)
            any = cursor[i];
    for (int i = 0; i < 4; i++) /* ended and missing rows decode a discarded copy */
        pos[i] = (uint64_t)(i < nr && cursor[i] >= 0 ? cursor[i] : any >= 0 ? any : 0);
    if (any >= 0) {
        if (width == 1) {
            uint8_t *const o[4] = {ib, ib + bstride, ib + 2 * bstride, ib + 3 * bstride};
            dnnz_huf_decode4_u8_at(t, h->payload, (size_t)h->payload_len, pos, o, (size_t)kc);
        } else {
            void *const o[4] = {ib, ib + bstride, ib + 2 * bstride, ib + 3 * bstride};
            const size_t n[4] = {(size_t)kc, (size_t)kc, (size_t)kc, (size_t)kc};
            dnnz_huf_decode4_wide_at(t, h->payload, (size_t)h->payload_len, pos, o, n);
        }
    }
    for (int i = 0; i < nr; i++)
        if (cursor[i] >= 0)
            cursor[i] = (int64_t)pos[i];
    for (int i = 0; i < 4; i++) {
        float *dst = wbuf + i * kcp;
        if (i >= nr || cursor[i] < 0) {
            memset(dst, 0, (size_t)kcp * 4);
            continue;
        }
        uint8_t *idx = ib + i * bstride;
        if (h->eor >= 0) {
            /* the row ends at its first end-of-row symbol: it and everything decoded after it
             * (the next row's bits) become the zero the extended codebook holds at index eor */
            int64_t j = 0;
            if (width == 1) {
                const uint8_t *e = memchr(idx, (int)h->eor, (size_t)kc);
                j = e ? e - idx : kc;
            } else {
                while (j < kc && dnnz_rd_le(idx, width, j) != (uint64_t)h->eor)
                    j++;
            }
            if (j < kc) {
                for (int64_t q = j; q < kc; q++)
                    dnnz_wr_le(idx, width, q, (uint64_t)h->eor);
                cursor[i] = -1;
            }
        }
        dnnz_kern_lookup(c->path, idx, width, (int)kc, h->codebook, h->k, dst);
        memset(dst + kc, 0, (size_t)(kcp - kc) * 4);
    }
    return wbuf;
}

/* ---- batch 1: eight rows decoded together, the decode fused with the multiply-add --------- */

#define GEMV_ROWS 8
#define GEMV_KC 2048 /* symbols per row and slice: 8 x 2 KiB of indices stay in L1 with x's slice */
#define GEMV_BS (GEMV_KC + 64) /* bytes per row buffer: the decoders store up to 8 bytes past n */

#if DNNZ_X86
/* The next kc symbols of the group's rows (positions pos[8]; rows past nr decode a copy of a
 * live row) into buf (GEMV_BS symbols of the table's width, 1 or 2 bytes, per row), with zero
 * indices past kc for the last vector's loads. Rows with an end-of-row symbol (rlham, h->eor >=
 * 0; ended[8] then flags the rows that met theirs): from a row's first end-of-row symbol on its
 * buffer holds that symbol (the extended codebook's 0: everything decoded after it is the next
 * row's bits) and an ended row decodes a copy of a live row. Returns 1 when the slice holds an
 * end-of-row symbol (the lookups must then cover index eor), else 0. */
static int gemv_decode(const struct dnnz_ham_rows *h, uint64_t pos[GEMV_ROWS], void *buf, int64_t kc,
                       uint8_t ended[GEMV_ROWS])
{
    const int width = (int)h->t->out_width;
    uint8_t *o[GEMV_ROWS];
    int live = -1, has_eor = 0;
    for (int i = 0; i < GEMV_ROWS; i++) {
        o[i] = (uint8_t *)buf + (size_t)i * GEMV_BS * width;
        if (!ended || !ended[i])
            live = i;
    }
    if (live >= 0) {
        for (int i = 0; ended && i < GEMV_ROWS; i++)
            if (ended[i])
                pos[i] = pos[live];
        if (width == 1) {
            dnnz_huf_decode8_u8_at(h->t, h->payload, (size_t)h->payload_len, pos, o, (size_t)kc);
        } else {
            const size_t n[4] = {(size_t)kc, (size_t)kc, (size_t)kc, (size_t)kc};
            void *const o0[4] = {o[0], o[1], o[2], o[3]}, *const o1[4] = {o[4], o[5], o[6], o[7]};
            dnnz_huf_decode4_wide_at(h->t, h->payload, (size_t)h->payload_len, pos, o0, n);
            dnnz_huf_decode4_wide_at(h->t, h->payload, (size_t)h->payload_len, pos + 4, o1, n);
        }
    }
    for (int i = 0; ended && i < GEMV_ROWS; i++) {
        int64_t j = 0;
        if (!ended[i]) {
            if (width == 1) {
                const uint8_t *e = memchr(o[i], (int)h->eor, (size_t)kc);
                j = e ? e - o[i] : kc;
            } else {
                const uint16_t *o16 = (const uint16_t *)(const void *)o[i];
                while (j < kc && o16[j] != (uint16_t)h->eor)
                    j++;
            }
            if (j == kc)
                continue;
            ended[i] = 1;
        }
        has_eor = 1;
        if (width == 1) {
            memset(o[i] + j, (int)h->eor, (size_t)(kc - j));
        } else {
            uint16_t *o16 = (uint16_t *)(void *)o[i];
            for (; j < kc; j++)
                o16[j] = (uint16_t)h->eor;
        }
    }
    for (int i = 0; i < GEMV_ROWS; i++)
        memset(o[i] + kc * width, 0, 16 * (size_t)width);
    return has_eor;
}

static void gemv_start(const struct dnnz_tiles *c, int64_t r, int nr, uint64_t pos[GEMV_ROWS])
{
    const struct dnnz_ham_rows *h = c->aux;
    for (int i = 0; i < GEMV_ROWS; i++)
        pos[i] = dnnz_rd_le(h->offsets, h->off_bytes, r + (i < nr ? i : 0));
}

/* Batch > 1: the same eight-row decode, each slice looked up once into a float tile (8 x 2048,
 * in L2) that the register-blocked micro-kernel multiplies with every batch row (four rows of
 * the tile at a time, as the tile driver would: same slices, same sums). */
static void ham_batch_rows(const struct dnnz_tiles *c, int64_t r0, int64_t r1)
{
    const struct dnnz_ham_rows *h = c->aux;
    const int width = (int)h->t->out_width;
    uint16_t ib16[GEMV_ROWS * GEMV_BS] __attribute__((aligned(64)));
    float wbuf[GEMV_ROWS * GEMV_KC] __attribute__((aligned(64)));
    for (int64_t b = 0; b < c->batch; b++)
        memset(c->y + b * c->rows + r0, 0, (size_t)(r1 - r0) * 4);
    for (int64_t r = r0; r < r1; r += GEMV_ROWS) {
        int nr = r1 - r < GEMV_ROWS ? (int)(r1 - r) : GEMV_ROWS;
        uint64_t pos[GEMV_ROWS];
        uint8_t ended[GEMV_ROWS] = {0};
        gemv_start(c, r, nr, pos);
        for (int64_t k0 = 0; k0 < c->cols; k0 += GEMV_KC) {
            const int64_t kc = c->cols - k0 < GEMV_KC ? c->cols - k0 : GEMV_KC, kcp = (kc + 15) & ~(int64_t)15;
            gemv_decode(h, pos, ib16, kc, h->eor >= 0 ? ended : NULL);
            for (int i = 0; i < GEMV_ROWS; i++) {
                float *dst = wbuf + i * kcp;
                if (i >= nr) {
                    memset(dst, 0, (size_t)kcp * 4);
                    continue;
                }
                dnnz_kern_lookup(c->path, (const uint8_t *)ib16 + (size_t)i * GEMV_BS * width, width, (int)kc,
                                 h->codebook, h->k, dst);
                memset(dst + kc, 0, (size_t)(kcp - kc) * 4);
            }
            for (int half = 0; half * DNNZ_KERN_RT < nr; half++)
                dnnz_kern_micro(c->path, wbuf + half * DNNZ_KERN_RT * kcp, kcp, kcp, c->x + k0, c->xstride,
                                c->batch, c->y + r + half * DNNZ_KERN_RT, c->rows,
                                nr - half * DNNZ_KERN_RT < DNNZ_KERN_RT ? nr - half * DNNZ_KERN_RT : DNNZ_KERN_RT);
        }
    }
}
_Static_assert(GEMV_ROWS == 2 * DNNZ_KERN_RT, "two micro-kernel tiles per group of rows");

/* One slice of eight rows: acc[i] += W[i, k0:k0+kc] . x[k0:k0+kc], the weights looked up from
 * the decoded indices in registers (LOOKUP of a vector of 32-bit indices), the last partial
 * vector masked (x is zero-padded, but a codebook value may be infinite). */
#define GEMV_DOT_512(LOOKUP)                                                                      \
    do {                                                                                          \
        int64_t j = 0;                                                                            \
        for (; j + 16 <= kc; j += 16) {                                                           \
            const __m512 xv = _mm512_loadu_ps(x + j);                                             \
            for (int i = 0; i < GEMV_ROWS; i++) {                                                 \
                __m512i iv = IDX512(i, j);                                                        \
                acc[i] = _mm512_fmadd_ps(LOOKUP(iv), xv, acc[i]);                                 \
            }                                                                                     \
        }                                                                                         \
        if (j < kc) {                                                                             \
            const __mmask16 mk = (__mmask16)((1u << (kc - j)) - 1);                               \
            const __m512 xv = _mm512_loadu_ps(x + j);                                             \
            for (int i = 0; i < GEMV_ROWS; i++) {                                                 \
                __m512i iv = IDX512(i, j);                                                        \
                acc[i] = _mm512_mask3_fmadd_ps(LOOKUP(iv), xv, acc[i], mk);                       \
            }                                                                                     \
        }                                                                                         \
    } while (0)
/* indices i..i+VW of row i's buffer: 1-byte (ib) or 2-byte (ib16) symbols */
#define IDX512(i, j) (wide2 ? _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(ib16 + (i) * GEMV_BS + (j)))) \
                            : _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ib + (i) * GEMV_BS + (j)))))
#define IDX256(i, j) (wide2 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(ib16 + (i) * GEMV_BS + (j)))) \
                            : _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ib + (i) * GEMV_BS + (j)))))
#define LK16(iv) _mm512_permutexvar_ps(iv, c0)
#define LK32(iv) _mm512_permutex2var_ps(c0, iv, c1)
#define LK64(iv)                                                                                  \
    _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, b5), _mm512_permutex2var_ps(c0, iv, c1),      \
                         _mm512_permutex2var_ps(c2, iv, c3))
#define LKG(iv) _mm512_i32gather_ps(iv, cb, 4)

static DNNZ_T_AVX512 void ham_gemv_avx512(const struct dnnz_tiles *c, int64_t r0, int64_t r1)
{
    const struct dnnz_ham_rows *h = c->aux;
    const float *cb = h->codebook;
    const __m512 c0 = _mm512_loadu_ps(c->cbpad), c1 = _mm512_loadu_ps(c->cbpad + 16);
    const __m512 c2 = _mm512_loadu_ps(c->cbpad + 32), c3 = _mm512_loadu_ps(c->cbpad + 48);
    const __m512i b5 = _mm512_set1_epi32(32);
    uint16_t ib16[GEMV_ROWS * GEMV_BS] __attribute__((aligned(64))); /* 1- or 2-byte symbols */
    const uint8_t *ib = (const uint8_t *)ib16;
    const int wide2 = h->t->out_width == 2;
    for (int64_t r = r0; r < r1; r += GEMV_ROWS) {
        int nr = r1 - r < GEMV_ROWS ? (int)(r1 - r) : GEMV_ROWS;
        uint64_t pos[GEMV_ROWS];
        uint8_t ended[GEMV_ROWS] = {0};
        __m512 acc[GEMV_ROWS];
        gemv_start(c, r, nr, pos);
        for (int i = 0; i < GEMV_ROWS; i++)
            acc[i] = _mm512_setzero_ps();
        for (int64_t k0 = 0; k0 < c->cols; k0 += GEMV_KC) {
            const int64_t kc = c->cols - k0 < GEMV_KC ? c->cols - k0 : GEMV_KC;
            const float *x = c->x + k0;
            /* a slice without an end-of-row symbol (rlham's eor = k - 1) needs k - 1 values */
            const int64_t k = gemv_decode(h, pos, ib16, kc, h->eor >= 0 ? ended : NULL) || h->eor != h->k - 1
                                  ? h->k : h->k - 1;
            if (wide2)
                GEMV_DOT_512(LKG);
            else if (k <= 16)
                GEMV_DOT_512(LK16);
            else if (k <= 32)
                GEMV_DOT_512(LK32);
            else if (k <= 64)
                GEMV_DOT_512(LK64);
            else
                GEMV_DOT_512(LKG);
        }
        for (int i = 0; i < nr; i++)
            c->y[r + i] = dnnz_hsum_avx512(acc[i]);
    }
}
#undef LK16
#undef LK32
#undef LK64
#undef LKG

#define GEMV_DOT_256(LOOKUP)                                                                      \
    do {                                                                                          \
        int64_t j = 0;                                                                            \
        for (; j + 8 <= kc; j += 8) {                                                             \
            const __m256 xv = _mm256_loadu_ps(x + j);                                             \
            for (int i = 0; i < GEMV_ROWS; i++) {                                                 \
                __m256i iv = IDX256(i, j);                                                        \
                acc[i] = _mm256_fmadd_ps(LOOKUP(iv), xv, acc[i]);                                 \
            }                                                                                     \
        }                                                                                         \
        if (j < kc) {                                                                             \
            const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(                           \
                _mm256_set1_epi32((int)(kc - j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));    \
            const __m256 xv = _mm256_loadu_ps(x + j);                                             \
            for (int i = 0; i < GEMV_ROWS; i++) {                                                 \
                __m256i iv = IDX256(i, j);                                                        \
                acc[i] = _mm256_fmadd_ps(_mm256_and_ps(LOOKUP(iv), keep), xv, acc[i]);            \
            }                                                                                     \
        }                                                                                         \
    } while (0)
#define LK8(iv) _mm256_permutevar8x32_ps(c0, iv)
#define LK16(iv)                                                                                  \
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(c0, iv), _mm256_permutevar8x32_ps(c1, iv),          \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(iv, seven)))
#define LKG(iv) _mm256_i32gather_ps(cb, iv, 4)

static DNNZ_T_AVX2 void ham_gemv_avx2(const struct dnnz_tiles *c, int64_t r0, int64_t r1)
{
    const struct dnnz_ham_rows *h = c->aux;
    const float *cb = h->codebook;
    const __m256 c0 = _mm256_loadu_ps(c->cbpad), c1 = _mm256_loadu_ps(c->cbpad + 8);
    const __m256i seven = _mm256_set1_epi32(7);
    uint16_t ib16[GEMV_ROWS * GEMV_BS] __attribute__((aligned(64))); /* 1- or 2-byte symbols */
    const uint8_t *ib = (const uint8_t *)ib16;
    const int wide2 = h->t->out_width == 2;
    for (int64_t r = r0; r < r1; r += GEMV_ROWS) {
        int nr = r1 - r < GEMV_ROWS ? (int)(r1 - r) : GEMV_ROWS;
        uint64_t pos[GEMV_ROWS];
        uint8_t ended[GEMV_ROWS] = {0};
        __m256 acc[GEMV_ROWS];
        gemv_start(c, r, nr, pos);
        for (int i = 0; i < GEMV_ROWS; i++)
            acc[i] = _mm256_setzero_ps();
        for (int64_t k0 = 0; k0 < c->cols; k0 += GEMV_KC) {
            const int64_t kc = c->cols - k0 < GEMV_KC ? c->cols - k0 : GEMV_KC;
            const float *x = c->x + k0;
            /* a slice without an end-of-row symbol (rlham's eor = k - 1) needs k - 1 values */
            const int64_t k = gemv_decode(h, pos, ib16, kc, h->eor >= 0 ? ended : NULL) || h->eor != h->k - 1
                                  ? h->k : h->k - 1;
            if (wide2)
                GEMV_DOT_256(LKG);
            else if (k <= 8)
                GEMV_DOT_256(LK8);
            else if (k <= 16)
                GEMV_DOT_256(LK16);
            else
                GEMV_DOT_256(LKG);
        }
        for (int i = 0; i < nr; i++)
            c->y[r + i] = dnnz_hsum_avx2(acc[i]);
    }
}
#undef LK8
#undef LK16
#undef LKG

/* ---- AVX-512: rows in the lanes of up to four vectors, the decode fused with the multiply-add */

/* For small alphabets (at most 32 used symbols, codes of at most 15 bits, 1-byte symbols) each
 * of 16 lanes decodes one row, one symbol per step: the code length from a 128-entry byte table
 * of the 7-bit prefix (vpermi2b) plus one compare per longer length, the canonical position from
 * the code bits and the length, and the weight from the codebook in canonical order (two
 * registers, a permute). Every row holds one symbol per column, so after step j every lane is at
 * column j + 1 and the multiply-add takes x[j] broadcast: y's rows are the lanes, no index buffer,
 * no horizontal sum. A lane's bits are a 64-bit window (two 32-bit halves, big-endian bit order),
 * refilled every 57 / max_len steps by a gather of 8 bytes at its bit position. Up to four groups
 * of 16 rows run interleaved; at batch > 1 each 128-column slice is decoded once into a float
 * tile that blocks of LANES_NB batch rows multiply in registers. */
#define LANES_G 4 /* groups of 16 rows at most */
/* the AVX-512 path's extensions and VBMI2 (vpshldvd: a lane's 64-bit window shifts in one step) */
#define LANES_T __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vbmi2,fma,avx2")))
#define LANES_NB 8
#define LANES_KC 128 /* columns per decoded tile at batch > 1: 32 KiB for 64 rows */

struct ham_lanes {
    uint8_t t7[128];   /* length of the code a 7-bit prefix starts, 8 for a longer one */
    uint32_t lim[8];   /* lengths 8 .. max_len - 1: end of their codes, left-aligned on 32 bits */
    uint32_t offs[16]; /* position in canonical order of code 0 of each length: index - first */
    float cbs[32];     /* the codebook in canonical order (without the end-of-row symbol) */
    uint32_t eor_mask, eor_code; /* the end-of-row code's bits, left-aligned on 32 bits */
    int eor;           /* 1 when the rows have an end-of-row symbol */
    unsigned eor_len;  /* its code's length */
    int n_long;
    int spr;           /* steps per refill */
};

/* 1 when the table suits the lanes (else the eight-row decoders). An end-of-row symbol (rlham's
 * rows, h->eor >= 0) must be the last code of its length (it is the largest symbol: canonical
 * order puts it there); it takes no place in cbs[] (the positions after it move down by one, the
 * lanes never use its weight) and at most 32 other symbols are used. */
static int ham_lanes_prepare(const struct dnnz_ham_rows *h, struct ham_lanes *L)
{
    const dnnz_huf_dtable *t = h->t;
    if (t->out_width != 1 || t->n_used < 2 || t->max_len > 15)
        return 0;
    int64_t epos = -1; /* the end-of-row symbol's canonical position */
    unsigned elen = 0;
    if (h->eor >= 0) {
        for (uint32_t i = 0; i < t->n_used; i++)
            if (t->sorted[i] == (uint32_t)h->eor)
                epos = i;
        if (epos < 0)
            return 0;
        for (unsigned l = 1; l <= t->max_len; l++)
            if (t->index[l] <= epos && (uint64_t)(epos - t->index[l] + t->first[l]) < (t->limit[l] >> (32 - l)))
                elen = l;
        /* the last code of its length */
        if (!elen || (uint64_t)(epos - t->index[elen] + t->first[elen] + 1) != (t->limit[elen] >> (32 - elen)))
            return 0;
    }
    if (t->n_used - (epos >= 0) > 32)
        return 0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vbmi2"))
        return 0;
    memset(L, 0, sizeof *L);
    for (int p = 0; p < 128; p++) {
        unsigned l = t->single[p << (DNNZ_HUF_TABLE_BITS - 7)] & 63; /* 0: longer than the table */
        L->t7[p] = (uint8_t)(l >= 1 && l <= 7 ? l : 8);
    }
    for (unsigned l = 8; l < t->max_len; l++)
        L->lim[L->n_long++] = (uint32_t)t->limit[l];
    for (unsigned l = 1; l <= t->max_len; l++)
        L->offs[l] = t->index[l] - t->first[l] - (epos >= 0 && l > elen);
    for (uint32_t i = 0, o = 0; i < t->n_used; i++)
        if ((int64_t)i != epos)
            L->cbs[o++] = h->codebook[t->sorted[i]];
    if (epos >= 0) {
        L->eor = 1;
        L->eor_len = elen;
        L->eor_mask = ~(uint32_t)0 << (32 - elen);
        L->eor_code = (uint32_t)(epos - t->index[elen] + t->first[elen]) << (32 - elen);
    }
    L->spr = (int)(57 / t->max_len);
    return 1;
}

/* The next cols symbols of the 16 * G rows whose streams are at bit pos[i] of src (updated),
 * G = 1, 2 or 4 groups of 16 lanes run interleaved (more independent work while the gathers
 * and permutes of one group wait): y[i] = W[row i, those columns] . x[0:cols] when x is not
 * NULL, and the weights into wt[j * 16 * G + i] when wt is not NULL. pos[0] is the smallest
 * position; the caller has checked that every 8-byte load (at a position before the end of a
 * row) stays within src's bytes and that the rows span less than 2^31 bits. */
DNNZ_INLINE LANES_T void ham_lanes_run(const struct ham_lanes *L, const uint8_t *src, uint64_t *pos, const int G,
                                       const int E, uint64_t pend, int64_t cols, const float *x, float *y,
                                       float *wt)
{
    const uint64_t pos0 = pos[0] & ~(uint64_t)7;
    const uint8_t *base = src + (pos0 >> 3);
    uint32_t prel[16 * LANES_G];
    for (int i = 0; i < 16 * G; i++)
        prel[i] = (uint32_t)(pos[i] - pos0);
    const __m512i T0 = _mm512_loadu_si512(L->t7), T1 = _mm512_loadu_si512(L->t7 + 64);
    const __m512i offs = _mm512_loadu_si512(L->offs);
    const __m512 cb0 = _mm512_loadu_ps(L->cbs), cb1 = _mm512_loadu_ps(L->cbs + 16);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), seven = _mm512_set1_epi32(7);
    const __mmask64 lowb = 0x1111111111111111ull; /* byte 0 of each 32-bit lane */
    const __m512i emask = _mm512_set1_epi32((int)L->eor_mask), ecode = _mm512_set1_epi32((int)L->eor_code);
    const __m512i vend = _mm512_set1_epi32((int)(uint32_t)(E == 2 ? pend - pos0 : 0));
    const int nl = L->n_long, spr = L->spr;
    __m512i lim[8];
    for (int q = 0; q < 8; q++)
        lim[q] = _mm512_set1_epi32((int)L->lim[q]);
    const __m512i IH = _mm512_load_si512(dnnz_kern_window_perm);
    const __m512i IL = _mm512_add_epi8(IH, _mm512_set1_epi8(4));
    __m512i P[LANES_G], H[LANES_G], LO[LANES_G];
    __m512 acc[LANES_G];
    for (int g = 0; g < G; g++) {
        P[g] = _mm512_loadu_si512(prel + 16 * g);
        acc[g] = _mm512_setzero_ps();
    }
    int64_t j = 0;
    while (j < cols) {
        for (int g = 0; g < G; g++) { /* 8 bytes at each lane's byte, shifted to its bit */
            if (E == 2) /* a lane past its row's end (decoding the bits after it) stays in the group's */
                P[g] = _mm512_min_epu32(P[g], vend);
            const __m512i by = _mm512_srli_epi32(P[g], 3);
            const __m512i g0 = _mm512_i32gather_epi64(_mm512_castsi512_si256(by), (const void *)base, 1);
            const __m512i g1 = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(by, 1), (const void *)base, 1);
            const __m512i hh = _mm512_permutex2var_epi8(g0, IH, g1), ll = _mm512_permutex2var_epi8(g0, IL, g1);
            const __m512i s = _mm512_and_si512(P[g], seven);
            H[g] = _mm512_shldv_epi32(hh, ll, s);
            LO[g] = _mm512_sllv_epi32(ll, s);
        }
        const int64_t stop = cols - j < spr ? cols : j + spr;
        for (; j < stop; j++) {
            for (int g = 0; g < G; g++) {
                /* E: a lane at its row's end-of-row code stays there (its weights are 0 from
                 * there on and its loads stay within the row) */
                const __mmask16 live = E == 1 ? _mm512_cmpneq_epi32_mask(_mm512_and_si512(H[g], emask), ecode) : 0xFFFF;
                __m512i len = _mm512_maskz_permutex2var_epi8(lowb, T0, _mm512_srli_epi32(H[g], 25), T1);
                for (int q = 0; q < nl; q++)
                    len = _mm512_mask_add_epi32(len, _mm512_cmp_epu32_mask(H[g], lim[q], _MM_CMPINT_NLT), len, one);
                const __m512i sp = _mm512_add_epi32(_mm512_shldv_epi32(zero, H[g], len),
                                                    _mm512_permutexvar_epi32(len, offs));
                const __m512 w = _mm512_permutex2var_ps(cb0, sp, cb1);
                if (E == 1) {
                    H[g] = _mm512_mask_shldv_epi32(H[g], live, LO[g], len);
                    LO[g] = _mm512_mask_sllv_epi32(LO[g], live, LO[g], len);
                    P[g] = _mm512_mask_add_epi32(P[g], live, P[g], len);
                    if (wt)
                        _mm512_store_ps(wt + (j * G + g) * 16, _mm512_maskz_mov_ps(live, w));
                    if (x)
                        acc[g] = _mm512_mask3_fmadd_ps(w, _mm512_set1_ps(x[j]), acc[g], live);
                } else {
                    H[g] = _mm512_shldv_epi32(H[g], LO[g], len);
                    LO[g] = _mm512_sllv_epi32(LO[g], len);
                    P[g] = _mm512_add_epi32(P[g], len);
                    if (wt)
                        _mm512_store_ps(wt + (j * G + g) * 16, w);
                    if (x)
                        acc[g] = _mm512_fmadd_ps(w, _mm512_set1_ps(x[j]), acc[g]);
                }
            }
        }
    }
    for (int g = 0; g < G; g++) {
        _mm512_storeu_si512(prel + 16 * g, P[g]);
        if (x)
            _mm512_storeu_ps(y + 16 * g, acc[g]);
    }
    for (int i = 0; i < 16 * G; i++)
        pos[i] = pos0 + prel[i];
}

/* The instantiations: batch 1 (fused) and tile decodes, for 1, 2 and 4 groups, rows with and
 * without an end-of-row symbol. */
#define LANES_CASES(ARGS)                                                                         \
    do {                                                                                          \
        if (E == 2) {                                                                             \
            if (G == 4) ham_lanes_run(L, src, pos, 4, 2, pend, ARGS);                             \
            else if (G == 2) ham_lanes_run(L, src, pos, 2, 2, pend, ARGS);                        \
            else ham_lanes_run(L, src, pos, 1, 2, pend, ARGS);                                    \
        } else if (E == 1) {                                                                      \
            if (G == 4) ham_lanes_run(L, src, pos, 4, 1, 0, ARGS);                                \
            else if (G == 2) ham_lanes_run(L, src, pos, 2, 1, 0, ARGS);                           \
            else ham_lanes_run(L, src, pos, 1, 1, 0, ARGS);                                       \
        } else {                                                                                  \
            if (G == 4) ham_lanes_run(L, src, pos, 4, 0, 0, ARGS);                                \
            else if (G == 2) ham_lanes_run(L, src, pos, 2, 0, 0, ARGS);                           \
            else ham_lanes_run(L, src, pos, 1, 0, 0, ARGS);                                       \
        }                                                                                         \
    } while (0)

static LANES_T void ham_lanes_gemv(const struct ham_lanes *L, const uint8_t *src, uint64_t *pos, int G, int E,
                                   uint64_t pend, int64_t cols, const float *x, float *y)
{
#define GEMV_ARGS cols, x, y, NULL
    LANES_CASES(GEMV_ARGS);
#undef GEMV_ARGS
}

static LANES_T void ham_lanes_decode(const struct ham_lanes *L, const uint8_t *src, uint64_t *pos, int G, int E,
                                     uint64_t pend, int64_t cols, float *wt)
{
#define DEC_ARGS cols, NULL, NULL, wt
    LANES_CASES(DEC_ARGS);
#undef DEC_ARGS
}
#undef LANES_CASES

/* y[b * ys + i] += wt[j * ws + i] . x[b, 0:kc] summed over j, for the 16 * NV rows i of a decoded
 * tile (row stride ws) and nb batch rows (stride xs). */
DNNZ_INLINE DNNZ_T_AVX512 void ham_lanes_micro(const float *wt, int64_t ws, const int NV, int64_t kc, const float *x,
                                               int64_t xs, const int nb, float *y, int64_t ys)
{
    __m512 acc[2][LANES_NB];
    for (int b = 0; b < nb; b++)
        acc[0][b] = acc[1][b] = _mm512_setzero_ps();
    for (int64_t j = 0; j < kc; j++) {
        const __m512 w0 = _mm512_load_ps(wt + j * ws), w1 = NV > 1 ? _mm512_load_ps(wt + j * ws + 16) : w0;
        for (int b = 0; b < nb; b++) {
            const __m512 xv = _mm512_set1_ps(x[b * xs + j]);
            acc[0][b] = _mm512_fmadd_ps(w0, xv, acc[0][b]);
            if (NV > 1)
                acc[1][b] = _mm512_fmadd_ps(w1, xv, acc[1][b]);
        }
    }
    for (int b = 0; b < nb; b++)
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(y + b * ys + 16 * v, _mm512_add_ps(_mm512_loadu_ps(y + b * ys + 16 * v), acc[v][b]));
}

#define LANES_MICRO_CASES(NV)                                                                     \
    switch (nb) {                                                                                 \
    case 1: ham_lanes_micro(wt, ws, NV, kc, x, xs, 1, y, ys); break;                              \
    case 2: ham_lanes_micro(wt, ws, NV, kc, x, xs, 2, y, ys); break;                              \
    case 3: ham_lanes_micro(wt, ws, NV, kc, x, xs, 3, y, ys); break;                              \
    case 4: ham_lanes_micro(wt, ws, NV, kc, x, xs, 4, y, ys); break;                              \
    case 5: ham_lanes_micro(wt, ws, NV, kc, x, xs, 5, y, ys); break;                              \
    case 6: ham_lanes_micro(wt, ws, NV, kc, x, xs, 6, y, ys); break;                              \
    case 7: ham_lanes_micro(wt, ws, NV, kc, x, xs, 7, y, ys); break;                              \
    default: ham_lanes_micro(wt, ws, NV, kc, x, xs, 8, y, ys); break;                             \
    }

static DNNZ_T_AVX512 void ham_lanes_micro_nb(const float *wt, int64_t ws, int nv, int64_t kc, const float *x,
                                             int64_t xs, int nb, float *y, int64_t ys)
{
    if (nv == 2) {
        LANES_MICRO_CASES(2)
    } else {
        LANES_MICRO_CASES(1)
    }
}
#undef LANES_MICRO_CASES

/* Rows r0..r1 of the task through the lanes, 64, 32 or 16 at a time, when the table suits them;
 * returns the first row left to the other kernels (fewer than 16). The last group of a payload
 * (whose loads would pass its end) decodes from a copy of its bytes with 8 bytes of zeros. */
static DNNZ_T_AVX512 int64_t ham_lanes_rows(const struct dnnz_tiles *c, int64_t r0, int64_t r1)
{
    const struct dnnz_ham_rows *h = c->aux;
    struct ham_lanes L;
    float wt[LANES_KC * 16 * LANES_G] __attribute__((aligned(64)));
    if (!ham_lanes_prepare(h, &L))
        return r0;
    while (r1 - r0 >= 16) {
        const int G = r1 - r0 >= 64 ? 4 : r1 - r0 >= 32 ? 2 : 1, n = 16 * G;
        uint64_t pos[16 * LANES_G];
        for (int i = 0; i < n; i++)
            pos[i] = dnnz_rd_le(h->offsets, h->off_bytes, r0 + i);
        const uint64_t end = dnnz_rd_le(h->offsets, h->off_bytes, r0 + n);
        uint64_t shift;
        uint8_t *copy;
        const uint8_t *src = dnnz_kern_lane_bytes(h->payload, h->payload_len, pos, n, end, &shift, &copy);
        if (!src)
            break;
        /* Rows with an end-of-row symbol: first the plain decode (positions kept within the
         * group's bits), which is right when every row holds all its columns, that is when each
         * lane ends at its row's end-of-row code; else again with the lanes that stop there. */
        for (int E = L.eor ? 2 : 0; E >= 0; E = E == 2 ? 1 : -1) {
            for (int i = 0; E == 1 && i < n; i++)
                pos[i] = dnnz_rd_le(h->offsets, h->off_bytes, r0 + i) - shift;
            const uint64_t pend = end - shift;
            if (c->batch == 1) {
                ham_lanes_gemv(&L, src, pos, G, E, pend, c->cols, c->x, c->y + r0);
            } else {
                /* slices of LANES_KC columns decoded once into an L1 tile for every batch row */
                for (int64_t b = 0; b < c->batch; b++)
                    memset(c->y + b * c->rows + r0, 0, (size_t)n * sizeof(float));
                for (int64_t k0 = 0; k0 < c->cols; k0 += LANES_KC) {
                    const int64_t kc = c->cols - k0 < LANES_KC ? c->cols - k0 : LANES_KC;
                    ham_lanes_decode(&L, src, pos, G, E, pend, kc, wt);
                    for (int v = 0; v < n; v += 32)
                        for (int64_t b = 0; b < c->batch; b += LANES_NB)
                            ham_lanes_micro_nb(wt + v, n, n - v < 32 ? 1 : 2, kc, c->x + b * c->xstride + k0,
                                               c->xstride, c->batch - b < LANES_NB ? (int)(c->batch - b) : LANES_NB,
                                               c->y + b * c->rows + r0 + v, c->rows);
                }
            }
            if (E != 2)
                break;
            int full = 1;
            for (int i = 0; i < n; i++)
                full &= pos[i] + shift + L.eor_len ==
                        dnnz_rd_le(h->offsets, h->off_bytes, r0 + i + 1);
            if (full)
                break;
        }
        free(copy);
        r0 += n;
    }
    return r0;
}

static DNNZ_T_AVX512 void ham_task_avx512(const struct dnnz_tiles *c, int64_t task)
{
    int64_t r0 = task * TR, r1 = r0 + TR < c->rows ? r0 + TR : c->rows;
    r0 = ham_lanes_rows(c, r0, r1);
    if (r0 >= r1)
        return;
    if (c->batch == 1)
        ham_gemv_avx512(c, r0, r1);
    else
        ham_batch_rows(c, r0, r1);
}

static DNNZ_T_AVX2 void ham_task_avx2(const struct dnnz_tiles *c, int64_t task)
{
    int64_t r0 = task * TR, r1 = r0 + TR < c->rows ? r0 + TR : c->rows;
    if (c->batch == 1)
        ham_gemv_avx2(c, r0, r1);
    else
        ham_batch_rows(c, r0, r1);
}
#endif

static int64_t ham_row_start(const struct dnnz_tiles *c, int64_t r)
{
    const struct dnnz_ham_rows *h = c->aux;
    return (int64_t)dnnz_rd_le(h->offsets, h->off_bytes, r);
}

int dnnz_ham_rows_matmul(const struct dnnz_ham_rows *h, int64_t rows, int64_t cols, const float *x, int64_t batch,
                         float *y, int path)
{
    struct dnnz_tiles c;
    memset(&c, 0, sizeof c);
    c.aux = h;
    c.rows = rows;
    c.cols = cols;
    c.batch = batch;
    c.y = y;
    c.tile = dnnz_ham_tile;
    c.row_start = ham_row_start;
    c.path = path;
    c.kc_max = HAM_TILE_KC;
    c.rows_outer = 1;
#if DNNZ_X86
    /* 1- or 2-byte symbols (rows with or without an end-of-row symbol): eight rows decoded
     * together, fused with the dot product at batch 1 */
    if (h->t->out_width <= 2 && (path == DNNZ_CPU_AVX512 || path == DNNZ_CPU_AVX2)) {
        memcpy(c.cbpad, h->codebook, (size_t)(h->k < 64 ? h->k : 64) * 4);
        c.gemv = path == DNNZ_CPU_AVX512 ? ham_task_avx512 : ham_task_avx2;
        c.gemv_all = 1;
    }
#endif
    return dnnz_tiles_run(&c, x);
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
    struct dnnz_ham_rows h = {&t, m->codebook, m->k, -1, m->offsets, m->off_bytes, m->payload, m->payload_len};
    int st = dnnz_ham_rows_matmul(&h, m->rows, m->cols, x, batch, y, path);
    dnnz_huf_dtable_free(&t);
    return st;
}
