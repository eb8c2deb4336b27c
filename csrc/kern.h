/* kern.h: the kernel toolkit every encoding's C file shares (C only: nothing here is for Python).
 *
 *  - CPU-path macros: DNNZ_X86 (1 when the x86 SIMD paths are compiled in; a build with
 *    -DDNNZ_NO_SIMD keeps only the portable `_ref` kernels, which checks the non-x86 code) and
 *    the per-function target attributes DNNZ_T_AVX2 / DNNZ_T_AVX512 (cpu.h picks the path at
 *    run time);
 *  - little-endian integer reads and writes of 1..8 bytes (sections may sit at any offset);
 *  - the validation error helper, the NaN test and the argument checks every encoding repeats;
 *  - the shared compute kernels of kern.c, one family each, parameterised by CPU path and index
 *    width: codebook lookup, gather dot, batch lanes, and the tile driver (decode an RT x KC
 *    tile of W once into an L1 buffer, multiply it with every batch row in a register-blocked
 *    micro-kernel).
 */
#ifndef DNNZ_KERN_H
#define DNNZ_KERN_H

#include "common.h"
#include "cpu.h"
#include "enc.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && !defined(DNNZ_NO_SIMD)
#define DNNZ_X86 1
#include <immintrin.h>
#else
#define DNNZ_X86 0
#endif

#define DNNZ_T_AVX2 __attribute__((target("avx2,fma")))
#define DNNZ_T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,fma,avx2")))

/* ---- little-endian integers ------------------------------------------------------------- */

/* Unsigned integer i of an array of `width`-byte (1..8) little-endian integers. */
static inline uint64_t dnnz_rd_le(const uint8_t *p, int width, int64_t i)
{
    const uint8_t *q = p + i * width;
    uint64_t v = 0;
    for (int b = width - 1; b >= 0; b--)
        v = (v << 8) | q[b];
    return v;
}

static inline void dnnz_wr_le(uint8_t *p, int width, int64_t i, uint64_t v)
{
    for (int b = 0; b < width; b++)
        p[i * width + b] = (uint8_t)(v >> (8 * b));
}

/* ---- checks ----------------------------------------------------------------------------- */

/* Record where validation failed and return `status` (err may be NULL). */
static inline int dnnz_fail(struct dnnz_enc_err *err, int field, int64_t where, int status)
{
    if (err) {
        err->field = field;
        err->where = where;
    }
    return status;
}

static inline int dnnz_is_nan(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x7fffffffu) > 0x7f800000u;
}

/* Index of the first value of v[0..n) a section may not hold, or -1: NaN always; +0.0 too when
 * `no_zero` (sparse encodings store only non-zeros: +0.0 is the entry left out; -0.0 is kept). */
static inline int64_t dnnz_find_bad_value(const float *v, int64_t n, int no_zero)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        if ((u & 0x7fffffffu) > 0x7f800000u || (no_zero && u == 0))
            return i;
    }
    return -1;
}

/* a * b into *out when both are >= 0 and the product fits an int64; else 0. */
/* The row structure shared by csc and sham (spec/encodings.md): rowptr[0] = 0, row pointers
 * non-decreasing, each row at most `cols` long, rowptr[rows] = nnz, and within each row column
 * indices strictly increasing and below `cols`. The caller has checked that rowptr holds rows + 1
 * entries and colidx nnz entries: every read below is inside them (all row pointers are checked
 * first, so the colidx runs are in range), and the work is bounded by rows + nnz. */
static inline int dnnz_check_rows(const uint8_t *rowptr, int pb, const uint8_t *colidx, int ib, int64_t rows,
                                  int64_t cols, int64_t nnz, struct dnnz_enc_err *err)
{
    if (dnnz_rd_le(rowptr, pb, 0) != 0)
        return dnnz_fail(err, DNNZ_FIELD_ROWPTR, 0, DNNZ_E_CORRUPT);
    uint64_t prev = 0;
    for (int64_t r = 0; r < rows; r++) {
        uint64_t next = dnnz_rd_le(rowptr, pb, r + 1);
        if (next < prev || next > (uint64_t)nnz || next - prev > (uint64_t)cols)
            return dnnz_fail(err, DNNZ_FIELD_ROWPTR, r + 1, DNNZ_E_CORRUPT);
        prev = next;
    }
    if (prev != (uint64_t)nnz)
        return dnnz_fail(err, DNNZ_FIELD_ROWPTR, rows, DNNZ_E_CORRUPT);
    prev = 0;
    for (int64_t r = 0; r < rows; r++) {
        uint64_t next = dnnz_rd_le(rowptr, pb, r + 1);
        int64_t last = -1;
        for (uint64_t p = prev; p < next; p++) {
            int64_t c = (int64_t)dnnz_rd_le(colidx, ib, (int64_t)p);
            if (c <= last || c >= cols)
                return dnnz_fail(err, DNNZ_FIELD_COLIDX, (int64_t)p, DNNZ_E_CORRUPT);
            last = c;
        }
        prev = next;
    }
    return DNNZ_OK;
}

static inline int dnnz_mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return 0;
    if (a != 0 && b > INT64_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* Matrix dimensions: both >= 0 (else DNNZ_E_ARGUMENT), below DNNZ_ENC_MAX_DIM and with a
 * product that fits an int64 (else DNNZ_E_LIMIT); err gets DNNZ_FIELD_PARAMS. */
static inline int dnnz_check_dims(int64_t rows, int64_t cols, struct dnnz_enc_err *err)
{
    int64_t n;
    if (rows < 0 || cols < 0)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_ARGUMENT);
    if (rows > DNNZ_ENC_MAX_DIM || cols > DNNZ_ENC_MAX_DIM || !dnnz_mul_ok(rows, cols, &n))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    return DNNZ_OK;
}

/* ---- shared kernels (kern.c) -------------------------------------------------------------- */

/* w[j] = cb[idx[j]] for j < n (idx of width 1, 2 or 4 bytes); cb holds k values. */
void dnnz_kern_lookup(int path, const void *idx, int width, int n, const float *cb, int64_t k, float *w);

/* sum_j w[j] * x[col[j]] (col: n little-endian indices of col_width 1, 2 or 4 bytes). */
float dnnz_kern_gather_dot(int path, const float *w, const void *col, int col_width, int n, const float *x);

/* Batch lanes: acc[l] += sum_j w[j] * xt[col[j] * xs + l] for l < nl (nl = 16, 32, 48 or 64),
 * xt = a block of x transposed, xs >= nl floats per column; col as in dnnz_kern_gather_dot. */
void dnnz_kern_lanes(int path, const float *w, const void *col, int col_width, int n, const float *xt, int64_t xs,
                     int nl, float *acc);

/* Tile driver. A task is DNNZ_KERN_TASK_ROWS output rows; for each slice of DNNZ_KERN_KC input
 * columns, `tile` decodes DNNZ_KERN_RT rows into wbuf (RT rows of kcp floats, zeros past nr
 * rows and kc columns; kcp = kc rounded up to 16) or returns a pointer into the matrix itself
 * (*stride = its row stride), and the micro-kernel multiplies it with every batch row. `cursor`
 * (one int64 per row of the group) is the encoding's per-row stream position, started by
 * `row_start` and advanced by `tile` as slices go. `gemv`, when set, replaces the tiles at batch
 * 1 for the whole task (a fused decode-and-dot). x is padded with zeros to a multiple of 16
 * columns (so tiles need no tail handling); `xperm64` asks for xp, x reordered per 64-block
 * (element 64q + 16s + i = x[64q + 4i + s], for the AVX-512 VBMI im kernels). */
#define DNNZ_KERN_RT 4
#define DNNZ_KERN_KC 512      /* default slice width */
#define DNNZ_KERN_KC_MAX 2048 /* widest slice an encoding may ask for (kc_max) */
#define DNNZ_KERN_TASK_ROWS 64

struct dnnz_tiles;
typedef const float *(*dnnz_tile_fn)(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                     int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride);
typedef void (*dnnz_gemv_fn)(const struct dnnz_tiles *c, int64_t task);
typedef int64_t (*dnnz_row_start_fn)(const struct dnnz_tiles *c, int64_t r);

struct dnnz_tiles {
    const void *m;            /* the encoding's matrix */
    const void *aux;          /* the encoding's decoding state (a Huffman table...) */
    int64_t rows, cols, batch, xstride, row_bytes;
    const float *x;           /* batch rows of xstride floats (set by dnnz_tiles_run) */
    const float *xp;          /* see xperm64 */
    float *y;
    float cbpad[64];          /* the codebook padded with zeros (first 64 entries) */
    dnnz_tile_fn tile;
    dnnz_gemv_fn gemv;        /* optional */
    dnnz_row_start_fn row_start; /* optional */
    int xperm64;
    int path;
    int64_t kc_max;           /* slice width (multiple of 16, <= DNNZ_KERN_KC_MAX); 0: DNNZ_KERN_KC */
    int gemv_all;             /* 1: `gemv` runs the task at every batch size, not only batch 1 */
    int rows_outer;           /* 1: each group of RT rows goes through every slice before the next
                               * group (stream decoders: long decode runs, one group's state);
                               * 0: each slice goes through every group (x slice stays in cache) */
};

/* The bytes that vector-lane Huffman decoders (ham, sham) read for n rows whose streams start at
 * bit pos[0..n) of payload (pos[0] the smallest) and end before bit `end`, with 8-byte loads at
 * any position before a row's end: the payload itself, or, where such a load could pass
 * payload_len, a zero-padded copy from pos[0]'s byte (*copy, freed by the caller; pos[] and
 * *shift then move by that many bits). NULL when the rows span 2^31 bits or more or the copy
 * cannot be allocated (the caller takes its other path). */
const uint8_t *dnnz_kern_lane_bytes(const uint8_t *payload, int64_t payload_len, uint64_t *pos, int n, uint64_t end,
                                    uint64_t *shift, uint8_t **copy);

/* The byte permutation of the lane decoders' window refill (ham, sham, rlham): two gathers load 8
 * qwords each, and this index vector (vpermi2b over the pair) puts each qword's first four bytes,
 * big-endian, in the 32-bit lane of its row (add 4 to every byte for the next four bytes): the
 * high and low 32 bits of each lane's 64-bit window. 64-byte aligned for a vector load. */
extern const uint8_t dnnz_kern_window_perm[64];

/* The micro-kernel of the tile driver on its own: y[b * ys + i] += w[i] . x[b] for the nr <= RT
 * rows of an RT x kcp tile w (row stride ws, zeros past nr rows) and every batch row b of x
 * (stride xs, kcp readable floats each), register-blocked over the batch. */
void dnnz_kern_micro(int path, const float *w, int64_t ws, int64_t kcp, const float *x, int64_t xs, int64_t batch,
                     float *y, int64_t ys, int nr);

/* Run c (m, aux, rows, cols, batch, y, cbpad, tile, gemv, row_start, xperm64, path set). */
int dnnz_tiles_run(struct dnnz_tiles *c, const float *x);

/* The arguments every encoding's matmul shares: a matrix, batch >= 0, batch * rows and
 * batch * cols without overflow, and x / y present whenever they are read or written.
 * DNNZ_OK or DNNZ_E_ARGUMENT. */
int dnnz_enc_check_matmul_args(const void *m, const float *x, int64_t batch, const float *y, int64_t rows,
                               int64_t cols);

/* ---- vector helpers (x86) ----------------------------------------------------------------- */

#if DNNZ_X86
typedef float dnnz_v16f __attribute__((vector_size(64), aligned(4), may_alias));
typedef float dnnz_v8f __attribute__((vector_size(32), aligned(4), may_alias));

/* horizontal sums in a fixed order: halves added until one lane is left */
static DNNZ_T_AVX512 inline float dnnz_hsum_avx512(__m512 z)
{
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

static DNNZ_T_AVX2 inline float dnnz_hsum_avx2(__m256 s)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
#endif

#endif /* DNNZ_KERN_H */
