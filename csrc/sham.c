/* sham.c: the `sham` encoding (see sham.h).
 *
 * matmul: a task is a block of output rows. On the AVX2 / AVX-512 paths with 1-byte symbols,
 * eight rows are decoded together (dnnz_huf_decode8_u8_atleast when the chunk ends every row:
 * the eight-stream rounds run to the longest row, the symbols past a shorter row's end are
 * never read; exact chunks of at most DNNZ_HAM_KC non-zeros otherwise). At batch 1 the indices
 * go straight into the codebook lookup in registers (permutes for k <= 64 on AVX-512, k <= 16 on
 * AVX2, a gather above), the gather of x at the column positions and the FMA, the eight rows
 * interleaved so that eight gathers are in flight; at batch > 1 each row's weights meet the
 * batch lanes (x transposed by chunks of LN). Everything else (scalar path, 2-/4-byte symbols,
 * the last rows of a task that do not fill a group of eight) decodes four rows at a time
 * (dnnz_huf_decode4_u8_at_n). Before all that, at batch 1 on AVX-512 with VBMI2 (2-byte column
 * indices, at most 32 used symbols, codes of at most 15 bits), groups of 16 rows decode in vector
 * lanes, fused with the gather of x and the multiply-add (sham_lanes_rows below). Each output is
 * summed by one task in a fixed order, so results do not depend on the thread count. */
#include "sham.h"

#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define KC DNNZ_HAM_KC
#define TR DNNZ_HAM_TASK_ROWS
#define RD dnnz_rd_le

int dnnz_sham_encode(const uint8_t *lengths, int64_t k, const void *vindex, int32_t v_bytes,
                     const uint8_t *rowptr, int32_t ptr_bytes, int64_t rows, uint8_t *offsets,
                     int32_t off_bytes, uint8_t *payload, int64_t payload_cap)
{
    if (rows < 0 || k < 0 || payload_cap < 0 || (off_bytes != 4 && off_bytes != 8) ||
        (v_bytes != 1 && v_bytes != 2 && v_bytes != 4) ||
        (ptr_bytes != 1 && ptr_bytes != 2 && ptr_bytes != 4 && ptr_bytes != 8))
        return DNNZ_E_ARGUMENT;
    const uint64_t lim = off_bytes == 4 ? UINT32_MAX : UINT64_MAX;
    uint64_t nnz = RD(rowptr, ptr_bytes, rows);
    if (nnz == 0 || k == 0) {
        if (nnz != 0)
            return DNNZ_E_ARGUMENT;
        memset(offsets, 0, (size_t)(rows + 1) * (size_t)off_bytes);
        return DNNZ_OK;
    }
    dnnz_huf_ctable ct;
    dnnz_bit_writer w;
    DNNZ_CHECK(dnnz_huf_ctable_init(&ct, lengths, (size_t)k));
    int st = dnnz_bit_writer_init(&w, payload, (size_t)payload_cap, 0);
    for (int64_t r = 0; r <= rows && st == DNNZ_OK; r++) {
        uint64_t pos;
        if (r < rows) {
            pos = dnnz_bit_writer_tell(&w);
        } else {
            st = dnnz_bit_writer_finish(&w, &pos);
            if (st != DNNZ_OK)
                break;
        }
        if (pos > lim) {
            st = DNNZ_E_LIMIT;
            break;
        }
        for (int b = 0; b < off_bytes; b++)
            offsets[r * off_bytes + b] = (uint8_t)(pos >> (8 * b));
        if (r == rows)
            break;
        uint64_t p0 = RD(rowptr, ptr_bytes, r), p1 = RD(rowptr, ptr_bytes, r + 1);
        if (p1 < p0 || p1 > nnz) {
            st = DNNZ_E_ARGUMENT;
            break;
        }
        st = dnnz_huf_encode(&ct, &w, (const uint8_t *)vindex + p0 * (uint64_t)v_bytes, (unsigned)v_bytes,
                             (size_t)(p1 - p0), NULL);
    }
    dnnz_huf_ctable_free(&ct);
    return st;
}

int dnnz_sham_validate(const struct dnnz_sham *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    if (m->rows < 0 || m->cols < 0 || m->k < 0 || m->nnz < 0)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rows > DNNZ_ENC_MAX_DIM || m->cols > DNNZ_ENC_MAX_DIM || m->k > DNNZ_HUF_MAX_SYMBOLS)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    int pb = m->ptr_bytes, ib = m->idx_bytes;
    if (!(pb == 1 || pb == 2 || pb == 4 || pb == 8) || !(ib == 1 || ib == 2 || ib == 4) ||
        (m->off_bytes != 4 && m->off_bytes != 8))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->nnz > m->rows * m->cols || (pb < 8 && (uint64_t)m->nnz >> (8 * pb)) ||
        (ib < 4 && m->cols > ((int64_t)1 << (8 * ib))) || (m->nnz > 0 && m->k < 1))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rowptr_len != m->rows + 1 || !m->rowptr)
        return dnnz_fail(err, DNNZ_FIELD_ROWPTR, -1, m->rowptr_len < m->rows + 1 ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->colidx_len != m->nnz || (m->nnz && !m->colidx))
        return dnnz_fail(err, DNNZ_FIELD_COLIDX, -1, m->colidx_len < m->nnz ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->codebook_len != m->k || (m->k && !m->codebook))
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, -1, m->codebook_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t bad = dnnz_find_bad_value(m->codebook, m->k, 1); /* NaN, or +0.0 (zeros are left out) */
    if (bad >= 0)
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, bad, DNNZ_E_CORRUPT);
    if (m->lengths_len != m->k || (m->k && !m->lengths))
        return dnnz_fail(err, DNNZ_FIELD_LENGTHS, -1, m->lengths_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->offsets_len != m->rows + 1 || !m->offsets)
        return dnnz_fail(err, DNNZ_FIELD_OFFSETS, -1, m->offsets_len < m->rows + 1 ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->payload_len < 0 || (m->payload_len && !m->payload))
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_CORRUPT);
    DNNZ_CHECK(dnnz_check_rows(m->rowptr, pb, m->colidx, ib, m->rows, m->cols, m->nnz, err));
    struct dnnz_ham_streams s = {m->rows, 0, m->rowptr, pb, m->offsets, m->off_bytes, m->payload, m->payload_len};
    return dnnz_ham_check_streams(m->lengths, m->k, &s, err);
}

struct sham_ctx {
    const struct dnnz_sham *m;
    const dnnz_huf_dtable *t;
    const float *x;  /* batch 1: x; larger batches: xt (x transposed by chunks of LN lanes) */
    int64_t batch;
    float *y;
    int path;
};

#define LN 16 /* batch lanes per transposed chunk of x */

/* ------------------------------------------------------------------------------------------ */
/* batch 1, AVX2 / AVX-512, 1-byte symbols: eight rows decoded together and fused with the dot  */
/* ------------------------------------------------------------------------------------------ */

#define GR 8              /* rows decoded together */
#define GS (KC + 64)      /* bytes per row buffer: the decoders store up to 8 bytes past n */

/* Decode the next chunk of each of the eight rows (n[i] <= KC symbols, 1-byte) into ib + i * GS:
 * the common part through the eight-stream decoder, what is left of the longer rows through the
 * four-stream one (both bounded by the payload; the streams were validated). When the chunk
 * ends every row, the rows need only at least their n[i] symbols (dnnz_huf_decode8_u8_atleast:
 * the eight-stream rounds run to the longest row; the symbols past a row's end are not used). */
static void group_decode(const struct sham_ctx *c, uint64_t pos[GR], const uint64_t p[GR], const uint64_t pe[GR],
                         const size_t n[GR], uint8_t *ib)
{
    const struct dnnz_sham *m = c->m;
    size_t mn = n[0];
    for (int i = 1; i < GR; i++)
        mn = n[i] < mn ? n[i] : mn;
    uint8_t *o[GR];
    for (int i = 0; i < GR; i++)
        o[i] = ib + (size_t)i * GS;
    int last = 1; /* every row ends in this chunk: no position is needed after it */
    for (int i = 0; i < GR; i++)
        last &= p[i] + n[i] == pe[i];
    if (last) {
        dnnz_huf_decode8_u8_atleast(c->t, m->payload, (size_t)m->payload_len, pos, o, n, GS, NULL);
        return;
    }
    if (mn)
        dnnz_huf_decode8_u8_at(c->t, m->payload, (size_t)m->payload_len, pos, o, mn);
    for (int g = 0; g < GR; g += 4) {
        uint8_t *const og[4] = {o[g] + mn, o[g + 1] + mn, o[g + 2] + mn, o[g + 3] + mn};
        const size_t ng[4] = {n[g] - mn, n[g + 1] - mn, n[g + 2] - mn, n[g + 3] - mn};
        if (ng[0] | ng[1] | ng[2] | ng[3])
            dnnz_huf_decode4_u8_at_n(c->t, m->payload, (size_t)m->payload_len, pos + g, og, ng);
    }
}

/* set up a group of eight rows r..r+7: stream positions and entry ranges */
static void group_start(const struct dnnz_sham *m, int64_t r, uint64_t pos[GR], uint64_t p[GR], uint64_t pe[GR])
{
    for (int i = 0; i < GR; i++) {
        pos[i] = RD(m->offsets, m->off_bytes, r + i);
        p[i] = RD(m->rowptr, m->ptr_bytes, r + i);
        pe[i] = RD(m->rowptr, m->ptr_bytes, r + i + 1);
    }
}

/* returns 1 when any row has entries left; n[i]: this chunk's count for row i */
static int group_chunk(const uint64_t p[GR], const uint64_t pe[GR], size_t n[GR], size_t *mn)
{
    int any = 0;
    *mn = KC;
    for (int i = 0; i < GR; i++) {
        uint64_t left = pe[i] - p[i];
        n[i] = left < KC ? (size_t)left : KC;
        *mn = n[i] < *mn ? n[i] : *mn;
        any |= n[i] != 0;
    }
    return any;
}

#if DNNZ_X86

/* column indices j..j+VW of a row (1-, 2- or 4-byte, any alignment), masked */
#define COL512(cp, j, mk)                                                                          \
    (xb == 1   ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, (const uint8_t *)(cp) + (j)))       \
     : xb == 2 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint8_t *)(cp) + 2 * (j))) \
               : _mm512_maskz_loadu_epi32(mk, (const uint8_t *)(cp) + 4 * (j)))
#define IDX512(i, j, mk) _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, ib + (i) * GS + (j)))

/* x at 16 column positions as two 8-lane gathers: on this AMD EPYC about 3 % faster than one
 * 16-lane gather in the full-vector loop (bench.kernels p90-k32 batch 1: 1.52 -> 1.48 ms) */
static DNNZ_T_AVX512 inline __m512 gx2x256(const float *x, __m512i iv)
{
    __m256 lo = _mm256_i32gather_ps(x, _mm512_castsi512_si256(iv), 4);
    __m256 hi = _mm256_i32gather_ps(x, _mm512_extracti64x4_epi64(iv, 1), 4);
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

/* the eight rows' dot products over this chunk: the common full vectors interleaved across the
 * rows (eight gathers in flight), then each row's rest, the last vector masked (a codebook
 * value may be infinite: masked lanes must not meet a zero) */
#define GROUP_DOT_512(LOOKUP)                                                                     \
    do {                                                                                          \
        const size_t full = mn & ~(size_t)15;                                                     \
        for (size_t j = 0; j < full; j += 16) {                                                   \
            for (int i = 0; i < GR; i++) {                                                        \
                __m512i iv = IDX512(i, j, 0xffff);                                                \
                __m512 g = gx2x256(x, COL512(colp[i], j, 0xffff));                                \
                acc[i] = _mm512_fmadd_ps(LOOKUP(iv), g, acc[i]);                                  \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < GR; i++) {                                                            \
            for (size_t j = full; j < n[i]; j += 16) {                                            \
                const __mmask16 mk = n[i] - j >= 16 ? 0xffff : (__mmask16)((1u << (n[i] - j)) - 1); \
                __m512i iv = IDX512(i, j, mk);                                                    \
                __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, COL512(colp[i], j, mk), x, 4); \
                tacc[i] = _mm512_mask3_fmadd_ps(LOOKUP(iv), g, tacc[i], mk);                      \
            }                                                                                     \
        }                                                                                         \
    } while (0)
#define LK16(iv) _mm512_permutexvar_ps(iv, c0)
#define LK32(iv) _mm512_permutex2var_ps(c0, iv, c1)
#define LK64(iv)                                                                                  \
    _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, b5), _mm512_permutex2var_ps(c0, iv, c1),      \
                         _mm512_permutex2var_ps(c2, iv, c3))
#define LKG(iv) _mm512_i32gather_ps(iv, cb, 4)

static DNNZ_T_AVX512 void sham_group_avx512(const struct sham_ctx *c, int64_t r, const float *cbpad)
{
    const struct dnnz_sham *m = c->m;
    const float *cb = m->codebook, *x = c->x;
    const int64_t k = m->k;
    const int xb = m->idx_bytes;
    const __m512 c0 = _mm512_loadu_ps(cbpad), c1 = _mm512_loadu_ps(cbpad + 16);
    const __m512 c2 = _mm512_loadu_ps(cbpad + 32), c3 = _mm512_loadu_ps(cbpad + 48);
    const __m512i b5 = _mm512_set1_epi32(32);
    uint8_t ib[GR * GS] __attribute__((aligned(64)));
    uint64_t pos[GR], p[GR], pe[GR];
    size_t n[GR], mn;
    __m512 acc[GR], tacc[GR]; /* full vectors (kept in registers) and rows' last vectors */
    group_start(m, r, pos, p, pe);
    for (int i = 0; i < GR; i++)
        acc[i] = tacc[i] = _mm512_setzero_ps();
    while (group_chunk(p, pe, n, &mn)) {
        group_decode(c, pos, p, pe, n, ib);
        const uint8_t *colp[GR];
        for (int i = 0; i < GR; i++)
            colp[i] = m->colidx + p[i] * (uint64_t)xb;
        if (k <= 16)
            GROUP_DOT_512(LK16);
        else if (k <= 32)
            GROUP_DOT_512(LK32);
        else if (k <= 64)
            GROUP_DOT_512(LK64);
        else
            GROUP_DOT_512(LKG);
        for (int i = 0; i < GR; i++)
            p[i] += n[i];
    }
    for (int i = 0; i < GR; i++)
        c->y[r + i] = dnnz_hsum_avx512(_mm512_add_ps(acc[i], tacc[i]));
}
#undef LK16
#undef LK32
#undef LK64
#undef LKG

/* AVX2: eight lanes; the last partial vector of a row goes entry by entry */
#define COL256(cp, j)                                                                              \
    (xb == 1   ? _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)(cp) + (j)))) \
     : xb == 2 ? _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint8_t *)(cp) + 2 * (j)))) \
               : _mm256_loadu_si256((const __m256i *)((const uint8_t *)(cp) + 4 * (j))))
#define IDX256(i, j) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ib + (i) * GS + (j))))
#define GROUP_DOT_256(LOOKUP)                                                                     \
    do {                                                                                          \
        const size_t full = mn & ~(size_t)7;                                                      \
        for (size_t j = 0; j < full; j += 8) {                                                    \
            for (int i = 0; i < GR; i++) {                                                        \
                __m256i iv = IDX256(i, j);                                                        \
                __m256 g = _mm256_i32gather_ps(x, COL256(colp[i], j), 4);                         \
                acc[i] = _mm256_fmadd_ps(LOOKUP(iv), g, acc[i]);                                  \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < GR; i++) {                                                            \
            size_t j = full;                                                                      \
            for (; j + 8 <= n[i]; j += 8) {                                                       \
                __m256i iv = IDX256(i, j);                                                        \
                __m256 g = _mm256_i32gather_ps(x, COL256(colp[i], j), 4);                         \
                tacc[i] = _mm256_fmadd_ps(LOOKUP(iv), g, tacc[i]);                                \
            }                                                                                     \
            for (; j < n[i]; j++)                                                                 \
                tail[i] += cb[ib[i * GS + j]] * x[RD(colp[i], xb, (int64_t)j)];                   \
        }                                                                                         \
    } while (0)
#define LK8(iv) _mm256_permutevar8x32_ps(c0, iv)
#define LK16(iv)                                                                                  \
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(c0, iv), _mm256_permutevar8x32_ps(c1, iv),          \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(iv, seven)))
#define LKG(iv) _mm256_i32gather_ps(cb, iv, 4)

static DNNZ_T_AVX2 void sham_group_avx2(const struct sham_ctx *c, int64_t r, const float *cbpad)
{
    const struct dnnz_sham *m = c->m;
    const float *cb = m->codebook, *x = c->x;
    const int64_t k = m->k;
    const int xb = m->idx_bytes;
    const __m256 c0 = _mm256_loadu_ps(cbpad), c1 = _mm256_loadu_ps(cbpad + 8);
    const __m256i seven = _mm256_set1_epi32(7);
    uint8_t ib[GR * GS] __attribute__((aligned(64)));
    uint64_t pos[GR], p[GR], pe[GR];
    size_t n[GR], mn;
    __m256 acc[GR], tacc[GR]; /* full vectors (kept in registers) and rows' last vectors */
    float tail[GR] = {0};
    group_start(m, r, pos, p, pe);
    for (int i = 0; i < GR; i++)
        acc[i] = tacc[i] = _mm256_setzero_ps();
    while (group_chunk(p, pe, n, &mn)) {
        group_decode(c, pos, p, pe, n, ib);
        const uint8_t *colp[GR];
        for (int i = 0; i < GR; i++)
            colp[i] = m->colidx + p[i] * (uint64_t)xb;
        if (k <= 8)
            GROUP_DOT_256(LK8);
        else if (k <= 16)
            GROUP_DOT_256(LK16);
        else
            GROUP_DOT_256(LKG);
        for (int i = 0; i < GR; i++)
            p[i] += n[i];
    }
    for (int i = 0; i < GR; i++)
        c->y[r + i] = dnnz_hsum_avx2(_mm256_add_ps(acc[i], tacc[i])) + tail[i];
}
#undef LK8
#undef LK16
#undef LKG

/* ---- batch 1, AVX-512 with VBMI2: 16 rows in the lanes of a vector ----------------------- */

/* For at most 32 used symbols, codes of at most 15 bits, 1-byte symbols and 2-byte column
 * indices, each lane decodes one row's value stream, one non-zero per step, as ham's row lanes
 * do (ham.c: the code length from a 128-entry byte table of the 7-bit prefix plus one compare
 * per longer length, the canonical position, the weight from the codebook in canonical order
 * held in two registers; a 64-bit window of bits per lane refilled by a gather every
 * 57 / max_len steps). When every code fits the 7-bit prefix, one byte table gives both the
 * length and the canonical position. The same step gathers x at the lane's column and adds the
 * product into the lane: y's rows are the lanes, no index buffer, no horizontal sum. The column
 * indices of the next eight steps are loaded per row and transposed into eight vectors of 16
 * lanes (two rounds of word permutes). Rows differ in length: the steps run to the longest row
 * of the group; past the shortest one a lane past its row's end is masked (its stream position
 * stays at the row's end, its loads, gather and multiply-add are off, so an infinite weight never
 * meets a zero). The decoded symbols and the sum order of each row are fixed by the layout:
 * results do not depend on the thread count. Interleaving two or four groups of 16 rows was
 * slower on the AMD EPYC measured (more row streams, more registers), so one group runs. */
#define SL_T __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vbmi2,fma,avx2")))

struct sham_lanes {
    uint8_t t7[128];   /* length of the code a 7-bit prefix starts, 8 for a longer one */
    uint8_t e7[128];   /* codes of at most 7 bits: length << 5 | canonical position */
    uint32_t lim[8];   /* lengths 8 .. max_len - 1: end of their codes, left-aligned on 32 bits */
    uint32_t offs[16]; /* position in canonical order of code 0 of each length: index - first */
    float cbs[32];     /* the codebook in canonical order */
    int n_long;
    int spr;           /* steps per refill */
};

/* 1 when the table suits the lanes (and the CPU has VBMI2) */
static int sham_lanes_prepare(const dnnz_huf_dtable *t, const float *codebook, struct sham_lanes *L)
{
    if (t->out_width != 1 || t->n_used < 2 || t->n_used > 32 || t->max_len > 15)
        return 0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vbmi2"))
        return 0;
    memset(L, 0, sizeof *L);
    for (unsigned l = 1; l <= t->max_len; l++)
        L->offs[l] = t->index[l] - t->first[l];
    for (int p = 0; p < 128; p++) {
        unsigned l = t->single[p << (DNNZ_HUF_TABLE_BITS - 7)] & 63; /* 0: longer than the table */
        L->t7[p] = (uint8_t)(l >= 1 && l <= 7 ? l : 8);
        if (l >= 1 && l <= 7)
            L->e7[p] = (uint8_t)(l << 5 | (L->offs[l] + ((unsigned)p >> (7 - l))));
    }
    for (unsigned l = 8; l < t->max_len; l++)
        L->lim[L->n_long++] = (uint32_t)t->limit[l];
    for (uint32_t i = 0; i < t->n_used; i++)
        L->cbs[i] = codebook[t->sorted[i]];
    L->spr = (int)(57 / t->max_len);
    return 1;
}

/* y[0:16] = rows . x for the 16 rows whose value streams are at bit pos[i] of src (pos[0] the
 * smallest) and whose cnt[i] 2-byte column indices start at entry q[i] of col (steps: the
 * largest count, minc the smallest). SHORT: every code has at most 7 bits. The caller has checked
 * that every 8-byte load of src (at a position up to a row's end) stays within src and that the
 * rows span less than 2^31 bits. */
DNNZ_INLINE SL_T void sham_lanes_run(const struct sham_lanes *L, const int SHORT, const uint8_t *src,
                                     const uint64_t *pos, const uint8_t *col, const uint64_t *q,
                                     const uint32_t *cnt, int64_t steps, int64_t minc, const float *x, float *y)
{
    const uint64_t pos0 = pos[0] & ~(uint64_t)7;
    const uint8_t *base = src + (pos0 >> 3);
    uint32_t prel[16];
    __m512i cix[8];
    for (int i = 0; i < 16; i++)
        prel[i] = (uint32_t)(pos[i] - pos0);
    const __m512i T0 = _mm512_loadu_si512(SHORT ? L->e7 : L->t7), T1 = _mm512_loadu_si512((SHORT ? L->e7 : L->t7) + 64);
    const __m512i offs = _mm512_loadu_si512(L->offs);
    const __m512 cb0 = _mm512_loadu_ps(L->cbs), cb1 = _mm512_loadu_ps(L->cbs + 16);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), seven = _mm512_set1_epi32(7);
    const __mmask64 lowb = 0x1111111111111111ull; /* byte 0 of each 32-bit lane */
    const int nl = L->n_long, spr = L->spr;
    __m512i lim[8];
    for (int i = 0; i < 8; i++)
        lim[i] = _mm512_set1_epi32((int)L->lim[i]);
    /* transpose: a[k] holds rows 4k..4k+3, eight words each (word 8t + s: row 4k + t, step s);
     * round 1 gives word 8s + l = row l (of eight), step s (0..3, or 4..7 with +4); round 2
     * widens step s of both halves into 16 dword lanes */
    uint16_t t1[32], t2[4][32];
    for (int s = 0; s < 4; s++)
        for (int l = 0; l < 8; l++)
            t1[8 * s + l] = (uint16_t)(8 * l + s);
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < 16; i++) {
            t2[s][2 * i] = (uint16_t)(i < 8 ? 8 * s + i : 32 + 8 * s + i - 8);
            t2[s][2 * i + 1] = 0;
        }
    const __m512i X1 = _mm512_loadu_si512(t1), X1b = _mm512_add_epi16(X1, _mm512_set1_epi16(4));
    const __m512i IH = _mm512_load_si512(dnnz_kern_window_perm);
    const __m512i IL = _mm512_add_epi8(IH, _mm512_set1_epi8(4));
    const __m512i C = _mm512_loadu_si512(cnt);
    __m512i P = _mm512_loadu_si512(prel), H = zero, LO = zero;
    __m512 acc = _mm512_setzero_ps();
    int64_t j = 0;
    while (j < steps) {
        { /* 8 bytes at each lane's byte, shifted to its bit */
            const __m512i by = _mm512_srli_epi32(P, 3);
            const __m512i g0 = _mm512_i32gather_epi64(_mm512_castsi512_si256(by), (const void *)base, 1);
            const __m512i g1 = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(by, 1), (const void *)base, 1);
            const __m512i hh = _mm512_permutex2var_epi8(g0, IH, g1), ll = _mm512_permutex2var_epi8(g0, IL, g1);
            const __m512i s = _mm512_and_si512(P, seven);
            H = _mm512_shldv_epi32(hh, ll, s);
            LO = _mm512_sllv_epi32(ll, s);
        }
        const int64_t stop = steps - j < spr ? steps : j + spr;
        for (; j < stop; j++) {
            if (!(j & 7)) { /* the next eight steps' column indices (masked past a row's end) */
                __m512i a[4];
                for (int k = 0; k < 4; k++) {
                    __m128i l4[4];
                    for (int t = 0; t < 4; t++) {
                        const int i = 4 * k + t;
                        const int64_t rem = (int64_t)cnt[i] - j;
                        const uint8_t *cp = col + 2 * (q[i] + (uint64_t)j);
                        l4[t] = rem >= 8 ? _mm_loadu_si128((const __m128i *)cp)
                                         : _mm_maskz_loadu_epi16(rem <= 0 ? 0 : (__mmask8)((1u << rem) - 1), cp);
                    }
                    a[k] = _mm512_inserti32x4(
                        _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(l4[0]), l4[1], 1), l4[2], 2),
                        l4[3], 3);
                }
                const __m512i x01 = _mm512_permutex2var_epi16(a[0], X1, a[1]);
                const __m512i x23 = _mm512_permutex2var_epi16(a[2], X1, a[3]);
                const __m512i y01 = _mm512_permutex2var_epi16(a[0], X1b, a[1]);
                const __m512i y23 = _mm512_permutex2var_epi16(a[2], X1b, a[3]);
                for (int s = 0; s < 4; s++) {
                    const __m512i i2 = _mm512_loadu_si512(t2[s]);
                    cix[s] = _mm512_maskz_permutex2var_epi16(0x55555555u, x01, i2, x23);
                    cix[s + 4] = _mm512_maskz_permutex2var_epi16(0x55555555u, y01, i2, y23);
                }
            }
            __m512i len;
            __m512 w;
            if (SHORT) {
                const __m512i e = _mm512_maskz_permutex2var_epi8(lowb, T0, _mm512_srli_epi32(H, 25), T1);
                len = _mm512_srli_epi32(e, 5);
                w = _mm512_permutex2var_ps(cb0, e, cb1); /* the index's bits 0..4 */
            } else {
                len = _mm512_maskz_permutex2var_epi8(lowb, T0, _mm512_srli_epi32(H, 25), T1);
                for (int i = 0; i < nl; i++)
                    len = _mm512_mask_add_epi32(len, _mm512_cmp_epu32_mask(H, lim[i], _MM_CMPINT_NLT), len, one);
                const __m512i sp = _mm512_add_epi32(_mm512_shldv_epi32(zero, H, len), _mm512_permutexvar_epi32(len, offs));
                w = _mm512_permutex2var_ps(cb0, sp, cb1);
            }
            H = _mm512_shldv_epi32(H, LO, len);
            LO = _mm512_sllv_epi32(LO, len);
            if (j < minc) { /* every row has this entry */
                P = _mm512_add_epi32(P, len);
                acc = _mm512_fmadd_ps(w, gx2x256(x, cix[j & 7]), acc);
            } else {
                const __mmask16 act = _mm512_cmpgt_epu32_mask(C, _mm512_set1_epi32((int)j));
                P = _mm512_mask_add_epi32(P, act, P, len);
                const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), act, cix[j & 7], x, 4);
                acc = _mm512_mask3_fmadd_ps(w, xv, acc, act);
            }
        }
    }
    _mm512_storeu_ps(y, acc);
}

static SL_T void sham_lanes_gemv(const struct sham_lanes *L, const uint8_t *src, const uint64_t *pos,
                                 const uint8_t *col, const uint64_t *q, const uint32_t *cnt, int64_t steps,
                                 int64_t minc, const float *x, float *y)
{
    if (L->n_long == 0 && L->spr >= 8) /* max_len <= 7 */
        sham_lanes_run(L, 1, src, pos, col, q, cnt, steps, minc, x, y);
    else
        sham_lanes_run(L, 0, src, pos, col, q, cnt, steps, minc, x, y);
}

/* Rows r0..r1 of the task through the lanes, 16 at a time; returns the first row left to the
 * other kernels (fewer than 16, or all of them when the code or the column indices do not suit
 * the lanes). A group whose loads would pass the end of the payload reads from a copy of its
 * bytes followed by 8 bytes of zeros. */
static int64_t sham_lanes_rows(const struct sham_ctx *c, int64_t r0, int64_t r1)
{
    const struct dnnz_sham *m = c->m;
    struct sham_lanes L;
    if (r1 - r0 < 16 || m->idx_bytes != 2 || !sham_lanes_prepare(c->t, m->codebook, &L))
        return r0;
    for (; r1 - r0 >= 16; r0 += 16) {
        uint64_t pos[16], q[16];
        uint32_t cnt[16];
        int64_t steps = 0, minc = INT64_MAX;
        for (int i = 0; i < 16; i++) {
            q[i] = RD(m->rowptr, m->ptr_bytes, r0 + i);
            const uint64_t n = RD(m->rowptr, m->ptr_bytes, r0 + i + 1) - q[i];
            pos[i] = RD(m->offsets, m->off_bytes, r0 + i);
            cnt[i] = (uint32_t)n; /* at most cols entries */
            steps = (int64_t)n > steps ? (int64_t)n : steps;
            minc = (int64_t)n < minc ? (int64_t)n : minc;
        }
        uint64_t shift;
        uint8_t *copy;
        const uint8_t *src = dnnz_kern_lane_bytes(m->payload, m->payload_len, pos, 16,
                                                  RD(m->offsets, m->off_bytes, r0 + 16), &shift, &copy);
        if (!src)
            break;
        sham_lanes_gemv(&L, src, pos, m->colidx, q, cnt, steps, minc, c->x, c->y + r0);
        free(copy);
    }
    return r0;
}
#endif

static void sham_matmul_task(void *vc, int64_t task, int worker)
{
    const struct sham_ctx *c = vc;
    const struct dnnz_sham *m = c->m;
    const int width = (int)c->t->out_width;
    const size_t stride = (size_t)(KC + 64) * width;
    uint8_t ib[4 * (KC + 64) * 4] __attribute__((aligned(64)));
    float wb[KC] __attribute__((aligned(64)));
    const int pb = m->ptr_bytes, xb = m->idx_bytes;
    (void)worker;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
#if DNNZ_X86
    if (c->batch == 1 && width == 1 && c->path == DNNZ_CPU_AVX512)
        r0 = sham_lanes_rows(c, r0, r1);
    if (c->batch == 1 && width == 1 && (c->path == DNNZ_CPU_AVX512 || c->path == DNNZ_CPU_AVX2)) {
        float cbpad[64] = {0};
        memcpy(cbpad, m->codebook, (size_t)(m->k < 64 ? m->k : 64) * sizeof(float));
        for (; r0 + GR <= r1; r0 += GR) {
            if (c->path == DNNZ_CPU_AVX512)
                sham_group_avx512(c, r0, cbpad);
            else
                sham_group_avx2(c, r0, cbpad);
        }
    }
#endif
    if (c->batch > 1 && width == 1 && (c->path == DNNZ_CPU_AVX512 || c->path == DNNZ_CPU_AVX2)) {
        /* the eight-row decode, then per row: lookup and the batch lanes (as the 4-row loop) */
        uint8_t gb[GR * GS] __attribute__((aligned(64)));
        for (; r0 + GR <= r1; r0 += GR) {
            uint64_t pos[GR], p[GR], pe[GR];
            size_t n[GR], mn;
            group_start(m, r0, pos, p, pe);
            for (int64_t b = 0; b < c->batch; b++)
                memset(c->y + b * m->rows + r0, 0, GR * sizeof(float));
            while (group_chunk(p, pe, n, &mn)) {
                group_decode(c, pos, p, pe, n, gb);
                for (int i = 0; i < GR; i++) {
                    if (!n[i])
                        continue;
                    dnnz_kern_lookup(c->path, gb + i * GS, 1, (int)n[i], m->codebook, m->k, wb);
                    const uint8_t *col = m->colidx + p[i] * (uint64_t)xb;
                    for (int64_t b0 = 0; b0 < c->batch; b0 += LN) {
                        float acc[LN] __attribute__((aligned(64))) = {0};
                        dnnz_kern_lanes(c->path, wb, col, xb, (int)n[i], c->x + b0 * m->cols, LN, LN, acc);
                        int64_t lanes = c->batch - b0 < LN ? c->batch - b0 : LN;
                        for (int64_t l = 0; l < lanes; l++)
                            c->y[(b0 + l) * m->rows + r0 + i] += acc[l];
                    }
                    p[i] += n[i];
                }
            }
        }
    }
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4;
        uint64_t pos[4], p[4], pend[4];
        dnnz_bit_reader rd[4];
        for (int i = 0; i < 4; i++) {
            int64_t rr = r + (i < nr ? i : 0); /* missing rows of the last group: a discarded copy */
            pos[i] = RD(m->offsets, m->off_bytes, rr);
            p[i] = RD(m->rowptr, pb, rr);
            pend[i] = i < nr ? RD(m->rowptr, pb, rr + 1) : p[i];
            if (width > 1 && i < nr)
                dnnz_bit_reader_init(&rd[i], m->payload, (size_t)m->payload_len, pos[i]);
        }
        for (int64_t b = 0; b < c->batch; b++)
            for (int i = 0; i < nr; i++)
                c->y[b * m->rows + r + i] = 0.0f;
        for (;;) {
            size_t n[4];
            int any = 0;
            for (int i = 0; i < 4; i++) {
                uint64_t left = pend[i] - p[i];
                n[i] = left < KC ? (size_t)left : KC;
                any |= n[i] != 0;
            }
            if (!any)
                break;
            if (width == 1) {
                uint8_t *const o[4] = {ib, ib + stride, ib + 2 * stride, ib + 3 * stride};
                dnnz_huf_decode4_u8_at_n(c->t, m->payload, (size_t)m->payload_len, pos, o, n);
            } else {
                for (int i = 0; i < nr; i++)
                    dnnz_huf_decode_reader(c->t, &rd[i], ib + i * stride, n[i]);
            }
            for (int i = 0; i < nr; i++) {
                if (!n[i])
                    continue;
                dnnz_kern_lookup(c->path, ib + i * stride, width, (int)n[i], m->codebook, m->k, wb);
                const uint8_t *col = m->colidx + p[i] * (uint64_t)xb;
                if (c->batch == 1) {
                    c->y[r + i] += dnnz_kern_gather_dot(c->path, wb, col, xb, (int)n[i], c->x);
                } else {
                    /* each non-zero: one multiply-add over LN contiguous batch lanes */
                    for (int64_t b0 = 0; b0 < c->batch; b0 += LN) {
                        float acc[LN] __attribute__((aligned(64))) = {0};
                        dnnz_kern_lanes(c->path, wb, col, xb, (int)n[i], c->x + b0 * m->cols, LN, LN, acc);
                        int64_t lanes = c->batch - b0 < LN ? c->batch - b0 : LN;
                        for (int64_t l = 0; l < lanes; l++)
                            c->y[(b0 + l) * m->rows + r + i] += acc[l];
                    }
                }
                p[i] += n[i];
            }
        }
    }
}

static void sham_decode_task(void *vc, int64_t task, int worker)
{
    const struct sham_ctx *c = vc;
    const struct dnnz_sham *m = c->m;
    const int width = (int)c->t->out_width;
    uint8_t ib[(KC + 64) * 4] __attribute__((aligned(64)));
    float wb[KC];
    (void)worker;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    for (int64_t r = r0; r < r1; r++) {
        float *row = c->y + r * m->cols;
        memset(row, 0, (size_t)m->cols * sizeof *row);
        uint64_t p = RD(m->rowptr, m->ptr_bytes, r), pe = RD(m->rowptr, m->ptr_bytes, r + 1);
        dnnz_bit_reader rd;
        dnnz_bit_reader_init(&rd, m->payload, (size_t)m->payload_len, RD(m->offsets, m->off_bytes, r));
        while (p < pe) {
            int n = pe - p < KC ? (int)(pe - p) : KC;
            dnnz_huf_decode_reader(c->t, &rd, ib, (size_t)n);
            dnnz_kern_lookup(c->path, ib, width, n, m->codebook, m->k, wb);
            for (int j = 0; j < n; j++)
                row[RD(m->colidx, m->idx_bytes, (int64_t)p + j)] = wb[j];
            p += (uint64_t)n;
        }
    }
}

int dnnz_sham_decode(const struct dnnz_sham *m, float *dst)
{
    if (!m || !dst)
        return DNNZ_E_ARGUMENT;
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    if (m->rows * m->cols == 0)
        return DNNZ_OK;
    if (m->nnz == 0) {
        memset(dst, 0, (size_t)(m->rows * m->cols) * sizeof *dst);
        return DNNZ_OK;
    }
    dnnz_huf_dtable t;
    DNNZ_CHECK(dnnz_huf_dtable_init(&t, m->lengths, (size_t)m->k));
    struct sham_ctx c = {m, &t, NULL, 0, dst, path};
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, sham_decode_task, &c);
    dnnz_huf_dtable_free(&t);
    return DNNZ_OK;
}

int dnnz_sham_matmul(const struct dnnz_sham *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    if (m->rows == 0 || batch == 0)
        return DNNZ_OK;
    if (m->nnz == 0) {
        memset(y, 0, (size_t)(batch * m->rows) * sizeof *y);
        return DNNZ_OK;
    }
    float *xt = NULL;
    if (batch > 1) {
        /* chunk q of LN batch rows, transposed: xt[q * cols * LN + col * LN + lane], zero past
         * the last lane; 64-byte aligned so a lane row is one aligned vector */
        int64_t nq = (batch + LN - 1) / LN;
        if ((uint64_t)nq * (uint64_t)m->cols > SIZE_MAX / (LN * sizeof(float)))
            return DNNZ_E_LIMIT;
        size_t bytes = (size_t)nq * (size_t)m->cols * LN * sizeof(float);
        xt = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!xt)
            return DNNZ_E_ALLOC;
        memset(xt, 0, bytes);
        for (int64_t b = 0; b < batch; b++) {
            float *dst = xt + (b / LN) * m->cols * LN + b % LN;
            const float *src = x + b * m->cols;
            for (int64_t j = 0; j < m->cols; j++)
                dst[j * LN] = src[j];
        }
    }
    dnnz_huf_dtable t;
    int st = dnnz_huf_dtable_init(&t, m->lengths, (size_t)m->k);
    if (st == DNNZ_OK) {
        struct sham_ctx c = {m, &t, xt ? xt : x, batch, y, path};
        dnnz_cpu_parallel((m->rows + TR - 1) / TR, sham_matmul_task, &c);
        dnnz_huf_dtable_free(&t);
    }
    free(xt);
    return st;
}
