/* im.c: the `im` encoding (pydnnz/encodings/im.py; declarations in enc.h): validation, decoding
 * and y = x @ W.T through the shared tile driver (kern.h). Tiles unpack the MSB-first packed
 * indices and look values up in a register codebook (AVX2: vpshufb + variable shifts; AVX-512:
 * VBMI vpermb + vpmultishiftqb); at batch 1 with at most 8 bits per index the unpacking, lookup
 * and multiply-add are fused and the decoded row is never stored.
 */
#include "enc.h"
#include "kern.h"

#include <stdlib.h>
#include <string.h>

#define RT DNNZ_KERN_RT
#define KC DNNZ_KERN_KC
#define TR DNNZ_KERN_TASK_ROWS

static int ceil_log2(int64_t k)
{
    int b = 0;
    while (b < 63 && ((int64_t)1 << b) < k)
        b++;
    return b;
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
    DNNZ_CHECK(dnnz_check_dims(m->rows, m->cols, err));
    int64_t n = m->rows * m->cols;
    if (m->bits < 0 || m->k < 0)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->bits > DNNZ_ENC_MAX_BITS || m->k > DNNZ_ENC_MAX_K)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if ((n > 0 && m->k < 1) || ceil_log2(m->k) > m->bits)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->codebook_len != m->k || (m->k && !m->codebook))
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, -1, m->codebook_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t bad = dnnz_find_bad_value(m->codebook, m->k, 0);
    if (bad >= 0)
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, bad, DNNZ_E_CORRUPT);
    int64_t stride = dnnz_enc_im_row_bytes(m->cols, m->bits), total;
    if (!dnnz_mul_ok(stride, m->rows, &total))
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if (m->indices_len != total || (total && !m->indices))
        return dnnz_fail(err, DNNZ_FIELD_INDICES, -1, m->indices_len < total ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (total == 0)
        return DNNZ_OK;
    const uint8_t *end = m->indices + total;
    int pad = (int)(stride * 8 - m->cols * m->bits); /* 0..7 zero bits closing each row */
    int check_range = m->k < ((int64_t)1 << m->bits);
    uint32_t buf[256];
    for (int64_t r = 0; r < m->rows; r++) {
        const uint8_t *row = m->indices + r * stride;
        if (pad && (row[stride - 1] & ((1u << pad) - 1)))
            return dnnz_fail(err, DNNZ_FIELD_INDICES, r, DNNZ_E_TRAILING);
        if (!check_range)
            continue;
        for (int64_t j0 = 0; j0 < m->cols; j0 += 256) {
            int64_t nn = m->cols - j0 < 256 ? m->cols - j0 : 256;
            unpack_row(row, end, m->bits, j0, nn, buf);
            for (int64_t j = 0; j < nn; j++)
                if (buf[j] >= (uint64_t)m->k)
                    return dnnz_fail(err, DNNZ_FIELD_INDICES, r * m->cols + j0 + j, DNNZ_E_CORRUPT);
        }
    }
    return DNNZ_OK;
}

static const float *decode_im_tile_ref(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0, int64_t kc,
                                       int64_t kcp, float *wbuf, int64_t *cursor, int64_t *stride)
{
    const struct dnnz_im *m = c->m;
    const uint8_t *end = m->indices + m->indices_len;
    uint32_t idx[KC];
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        int64_t done = 0;
        if (rr < nr) {
            unpack_row(m->indices + (r + rr) * c->row_bytes, end, m->bits, k0, kc, idx);
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

#if DNNZ_X86
/* AVX2 unpacking of 8 packed indices (bits <= 8: exactly `bits` bytes, starting on a byte):
 * the 8 bytes are broadcast to both lanes, vpshufb puts the (at most two) bytes holding index j
 * at the top of dword j, a variable shift and a mask leave the index at the bottom. */
struct im_avx2 {
    __m256i ctl, shr, mask;
    __m256 cb[4];
    int64_t k;
    const float *codebook;
};

static DNNZ_T_AVX2 void im_avx2_init(struct im_avx2 *u, int bits, const float *cbpad, int64_t k, const float *codebook)
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

static DNNZ_T_AVX2 inline __m256i im_avx2_unpack8(const struct im_avx2 *u, const uint8_t *p, const uint8_t *end)
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
static DNNZ_T_AVX2 inline __m256 im_avx2_lookup(const struct im_avx2 *u, __m256i iv)
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

static DNNZ_T_AVX2 const float *decode_im_tile_avx2_fast(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0,
                                                    int64_t kc, int64_t kcp, float *wbuf)
{
    const struct dnnz_im *m = c->m;
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
        const uint8_t *row = m->indices + (r + rr) * c->row_bytes + (k0 * m->bits) / 8;
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
static DNNZ_T_AVX2 void im_gemv_avx2(const struct dnnz_tiles *c, int64_t task)
{
    const struct dnnz_im *m = c->m;
    const uint8_t *end = m->indices + m->indices_len;
    int64_t r0 = task * TR, r1 = r0 + TR < c->rows ? r0 + TR : c->rows, cols = c->cols;
    struct im_avx2 u;
    im_avx2_init(&u, m->bits, c->cbpad, m->k, m->codebook);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const float *x = c->x;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = m->indices + r * c->row_bytes;
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
        dnnz_v8f t = (dnnz_v8f)_mm256_add_ps(a0, a1);
        c->y[r] = dnnz_hsum_avx2((__m256)t);
    }
}

/* im tile, AVX2: indices unpacked by the portable reader, values by vpermps (k <= 8) or gather. */
static DNNZ_T_AVX2 const float *decode_im_tile_avx2(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0,
                                               int64_t kc, int64_t kcp, float *wbuf, int64_t *cursor,
                                               int64_t *stride)
{
    (void)cursor;
    *stride = kcp;
    if (((const struct dnnz_im *)c->m)->bits >= 1 && ((const struct dnnz_im *)c->m)->bits <= 8)
        return decode_im_tile_avx2_fast(c, r, nr, k0, kc, kcp, wbuf);
    const struct dnnz_im *m = c->m;
    const uint8_t *end = m->indices + m->indices_len;
    uint32_t idx[KC];
    __m256 cb8 = _mm256_loadu_ps(c->cbpad);
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        if (rr >= nr) {
            memset(dst, 0, (size_t)kcp * 4);
            continue;
        }
        unpack_row(m->indices + (r + rr) * c->row_bytes, end, m->bits, k0, kc, idx);
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
/* AVX-512 VBMI unpack of 1..8-bit indices: 64 indices, one per byte, from the bytes at p (fewer
 * than 64 bytes left before end: the rest read as zeros) */
struct im512_unpack {
    __m512i perm, shift, mask;
};

static DNNZ_T_AVX512 inline struct im512_unpack im512_unpack_init(int bits)
{
    uint8_t perm[64], shift[64];
    for (int q = 0; q < 8; q++)
        for (int p = 0; p < 8; p++) {
            perm[8 * q + p] = (uint8_t)(q * bits + 7 - p);
            shift[8 * q + p] = (uint8_t)((64 - (p + 1) * bits) & 63);
        }
    struct im512_unpack u = {_mm512_loadu_si512(perm), _mm512_loadu_si512(shift),
                             _mm512_set1_epi8((char)((1u << bits) - 1))};
    return u;
}

static DNNZ_T_AVX512 inline __m512i im512_unpack64(const struct im512_unpack *u, const uint8_t *p, const uint8_t *end)
{
    __m512i raw;
    if (DNNZ_LIKELY(end - p >= 64)) {
        raw = _mm512_loadu_si512(p);
    } else {
        uint8_t tmp[64] = {0};
        if (end > p)
            memcpy(tmp, p, (size_t)(end - p));
        raw = _mm512_loadu_si512(tmp);
    }
    return _mm512_and_si512(_mm512_multishift_epi64_epi8(u->shift, _mm512_permutexvar_epi8(u->perm, raw)), u->mask);
}

static DNNZ_T_AVX512 const float *decode_im_tile_avx512(const struct dnnz_tiles *c, int64_t r, int nr, int64_t k0,
                                                   int64_t kc, int64_t kcp, float *wbuf, int64_t *cursor,
                                                   int64_t *stride)
{
    (void)cursor;
    *stride = kcp;
    const struct dnnz_im *m = c->m;
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
            unpack_row(m->indices + (r + rr) * c->row_bytes, end, bits, k0, kc, idx);
            for (int64_t j = 0; j < kcp; j += 16) {
                __mmask16 valid = j + 16 <= kc ? 0xffff : (__mmask16)((1u << (kc - j)) - 1);
                __m512i iv = _mm512_maskz_loadu_epi32(valid, idx + j);
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, iv, m->codebook, 4);
                _mm512_storeu_ps(dst + j, v);
            }
        }
        return wbuf;
    }
    const struct im512_unpack u = im512_unpack_init(bits);
    const __m512 cb0 = _mm512_loadu_ps(c->cbpad), cb1 = _mm512_loadu_ps(c->cbpad + 16);
    const __m512 cb2 = _mm512_loadu_ps(c->cbpad + 32), cb3 = _mm512_loadu_ps(c->cbpad + 48);
    for (int rr = 0; rr < RT; rr++) {
        float *dst = wbuf + rr * kcp;
        if (rr >= nr) {
            memset(dst, 0, (size_t)kcp * 4);
            continue;
        }
        const uint8_t *row = m->indices + (r + rr) * c->row_bytes + (k0 * bits) / 8;
        for (int64_t j = 0; j < kcp; j += 64) {
            const uint8_t *p = row + (j * bits) / 8;
            __m512i iv8 = im512_unpack64(&u, p, end);
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


/* Batch 1, im with bits <= 8: unpack, look up and multiply-add in registers, never storing the
 * decoded row (the VBMI unpack and register codebook of decode_im_tile_avx512, fused). Two rows
 * at a time share the x loads. */
static DNNZ_T_AVX512 void im_gemv_avx512(const struct dnnz_tiles *c, int64_t task)
{
    const struct dnnz_im *m = c->m;
    const uint8_t *end = m->indices + m->indices_len;
    int bits = m->bits;
    int64_t k = m->k, cols = c->cols;
    int64_t r0 = task * TR, r1 = r0 + TR < c->rows ? r0 + TR : c->rows;
    const struct im512_unpack u = im512_unpack_init(bits);
    const __m512 cb0 = _mm512_loadu_ps(c->cbpad), cb1 = _mm512_loadu_ps(c->cbpad + 16);
    const __m512 cb2 = _mm512_loadu_ps(c->cbpad + 32), cb3 = _mm512_loadu_ps(c->cbpad + 48);
    const __m512i v32 = _mm512_set1_epi32(32);
    const float *x = c->x, *xp = c->xp;
    const __m512i vff = _mm512_set1_epi32(0xff);
#define IM_LOOKUP(iv) (k <= 16 ? _mm512_permutexvar_ps(iv, cb0)                                      \
                       : k <= 32 ? _mm512_permutex2var_ps(cb0, iv, cb1)                              \
                       : k <= 64 ? _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, v32),             \
                                                        _mm512_permutex2var_ps(cb0, iv, cb1),        \
                                                        _mm512_permutex2var_ps(cb2, iv, cb3))        \
                                 : _mm512_i32gather_ps(iv, m->codebook, 4))
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = m->indices + r * c->row_bytes;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t j = 0;
        for (; j + 64 <= cols; j += 64) {
            const uint8_t *p = row + (j * bits) / 8;
            /* byte 4i+s of iv8 is index 4i+s; shifting dwords right by 8s brings it to the low
             * byte of dword i, which is all the register permutes look at (x was permuted to
             * match, see dnnz_tiles_run); no widening shuffles on the busy permute port */
            __m512i iv8 = bits == 8 && DNNZ_LIKELY(end - p >= 64) ? _mm512_loadu_si512(p) /* im8: bytes are the indices */
                        : im512_unpack64(&u, p, end);
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
            int64_t left = cols - j;
            __m512i iv8 = im512_unpack64(&u, p, end);
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
        dnnz_v16f t = (dnnz_v16f)_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        c->y[r] = dnnz_hsum_avx512((__m512)t);
    }
#undef IM_LOOKUP
}
#endif

#if DNNZ_X86
/* decode, AVX-512, 1..8 bits and k <= 64: each row unpacked (VBMI, as decode_im_tile_avx512) and
 * looked up in the register codebook straight into dst, 64 values a step (no tile buffer, no
 * copy); the row's last vector is stored through a mask. */
static DNNZ_T_AVX512 void im_decode_rows_avx512(const struct dnnz_im *m, const float *cbpad, int64_t row_bytes,
                                                float *dst)
{
    const int bits = m->bits;
    const int64_t k = m->k, cols = m->cols;
    const uint8_t *end = m->indices + m->indices_len;
    const struct im512_unpack u = im512_unpack_init(bits);
    const __m512 cb0 = _mm512_loadu_ps(cbpad), cb1 = _mm512_loadu_ps(cbpad + 16);
    const __m512 cb2 = _mm512_loadu_ps(cbpad + 32), cb3 = _mm512_loadu_ps(cbpad + 48);
    for (int64_t r = 0; r < m->rows; r++) {
        const uint8_t *row = m->indices + r * row_bytes;
        float *out = dst + r * cols;
        for (int64_t j = 0; j < cols; j += 64) {
            const uint8_t *p = row + (j * bits) / 8;
            const __m512i iv8 = im512_unpack64(&u, p, end);
            for (int s = 0; s < 4 && j + 16 * s < cols; s++) {
                const __m128i part = s == 0 ? _mm512_castsi512_si128(iv8)
                                   : s == 1 ? _mm512_extracti32x4_epi32(iv8, 1)
                                   : s == 2 ? _mm512_extracti32x4_epi32(iv8, 2)
                                            : _mm512_extracti32x4_epi32(iv8, 3);
                const __m512i iv = _mm512_cvtepu8_epi32(part);
                __m512 v;
                if (k <= 16)
                    v = _mm512_permutexvar_ps(iv, cb0);
                else if (k <= 32)
                    v = _mm512_permutex2var_ps(cb0, iv, cb1);
                else
                    v = _mm512_mask_blend_ps(_mm512_test_epi32_mask(iv, _mm512_set1_epi32(32)),
                                             _mm512_permutex2var_ps(cb0, iv, cb1),
                                             _mm512_permutex2var_ps(cb2, iv, cb3));
                const int64_t l16 = cols - (j + 16 * s);
                if (l16 >= 16)
                    _mm512_storeu_ps(out + j + 16 * s, v);
                else
                    _mm512_mask_storeu_ps(out + j + 16 * s, (__mmask16)((1u << l16) - 1), v);
            }
        }
    }
}
#endif

/* decode: the matmul's tile decoders (SIMD unpack + codebook lookup), RT rows x KC columns at a
 * time through an L1 buffer into dst; the scalar path (or DNNZ_NO_SIMD) is decode_im_tile_ref. */
int dnnz_enc_im_decode(const struct dnnz_im *m, float *dst)
{
    if (!m || (!dst && m->rows * m->cols != 0))
        return DNNZ_E_ARGUMENT;
    if (m->rows * m->cols == 0)
        return DNNZ_OK;
    struct dnnz_tiles c;
    memset(&c, 0, sizeof c);
    c.path = dnnz_cpu_get_path();
    if (c.path < 0)
        return DNNZ_E_UNSUPPORTED;
    c.m = m;
    c.rows = m->rows;
    c.cols = m->cols;
    c.row_bytes = dnnz_enc_im_row_bytes(m->cols, m->bits);
    for (int64_t i = 0; i < m->k && i < 64; i++)
        c.cbpad[i] = m->codebook[i];
    dnnz_tile_fn tile = decode_im_tile_ref;
#if DNNZ_X86
    if (c.path == DNNZ_CPU_AVX512 && m->bits >= 1 && m->bits <= 8 && m->k <= 64) {
        im_decode_rows_avx512(m, c.cbpad, c.row_bytes, dst);
        return DNNZ_OK;
    }
    if (c.path == DNNZ_CPU_AVX512)
        tile = decode_im_tile_avx512;
    else if (c.path == DNNZ_CPU_AVX2)
        tile = decode_im_tile_avx2;
#endif
    float wbuf[RT * KC] __attribute__((aligned(64)));
    for (int64_t r = 0; r < m->rows; r += RT) {
        int nr = m->rows - r < RT ? (int)(m->rows - r) : RT;
        for (int64_t k0 = 0; k0 < m->cols; k0 += KC) {
            int64_t kc = m->cols - k0 < KC ? m->cols - k0 : KC, kcp = (kc + 15) & ~(int64_t)15, st = kcp;
            const float *t = tile(&c, r, nr, k0, kc, kcp, wbuf, NULL, &st);
            for (int i = 0; i < nr; i++)
                memcpy(dst + (r + i) * m->cols + k0, t + i * st, (size_t)kc * sizeof *dst);
        }
    }
    return DNNZ_OK;
}

int dnnz_enc_im_matmul(const struct dnnz_im *m, const float *x, int64_t batch, float *y)
{
    DNNZ_CHECK(dnnz_enc_check_matmul_args(m, x, batch, y, m ? m->rows : 0, m ? m->cols : 0));
    struct dnnz_tiles c;
    memset(&c, 0, sizeof c);
    c.path = dnnz_cpu_get_path();
    if (c.path < 0)
        return DNNZ_E_UNSUPPORTED;
    c.m = m;
    c.rows = m->rows;
    c.cols = m->cols;
    c.batch = batch;
    c.y = y;
    c.row_bytes = dnnz_enc_im_row_bytes(m->cols, m->bits);
    for (int64_t i = 0; i < m->k && i < 64; i++)
        c.cbpad[i] = m->codebook[i];
    const int small = m->bits >= 1 && m->bits <= 8; /* the fused batch-1 kernels' range */
    c.tile = decode_im_tile_ref;
#if DNNZ_X86
    if (c.path == DNNZ_CPU_AVX512) {
        c.tile = decode_im_tile_avx512;
        c.gemv = small ? im_gemv_avx512 : NULL;
        c.xperm64 = small;
    } else if (c.path == DNNZ_CPU_AVX2) {
        c.tile = decode_im_tile_avx2;
        c.gemv = small ? im_gemv_avx2 : NULL;
    }
#endif
    (void)small;
    return dnnz_tiles_run(&c, x);
}
