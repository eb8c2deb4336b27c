/* huf.c: canonical Huffman codes (see huf.h and spec/huffman.md). */
#include "huf.h"

#include <stdlib.h>
#include <string.h>

#define TB DNNZ_HUF_TABLE_BITS
#define MAXL DNNZ_HUF_MAX_CODE_LEN
/* Counts must sum to at most 2^58: package-merge weights count a leaf at most once per level,
 * so they stay below 32 * 2^58 = 2^63. */
#define MAX_TOTAL_COUNT (1ull << 58)

/* ------------------------------------------------------------------------------------------ */
/* Code lengths                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint64_t w;
    uint32_t s;
} huf_item;

static int item_cmp(const void *a, const void *b)
{
    const huf_item *x = a, *y = b;
    if (x->w != y->w)
        return x->w < y->w ? -1 : 1;
    return x->s < y->s ? -1 : (x->s > y->s);
}

/* Plain Huffman (two-queue method on sorted weights) -> depth of each sorted leaf. Returns the
 * largest depth. parent has room for 2m - 1 entries, iw for m - 1. */
static unsigned huffman_depths(const huf_item *it, uint32_t m, uint64_t *iw, uint32_t *parent, uint8_t *depth)
{
    uint32_t li = 0, ii = 0, ni = 0;
    for (uint32_t k = 0; k + 1 < m; k++) {
        uint32_t pick[2];
        uint64_t sum = 0;
        for (int t = 0; t < 2; t++) {
            /* ties go to the leaf: any choice gives an optimal code */
            if (li < m && (ii >= ni || it[li].w <= iw[ii])) {
                pick[t] = li;
                sum += it[li++].w;
            } else {
                pick[t] = m + ii;
                sum += iw[ii++];
            }
        }
        iw[ni] = sum;
        parent[pick[0]] = parent[pick[1]] = m + ni;
        ni++;
    }
    /* internal nodes were created in increasing order, parents after children: walk backwards */
    uint32_t root = 2 * m - 2;
    uint8_t *nd = (uint8_t *)(parent + 2 * m - 1); /* scratch: depth of internal nodes, m - 1 bytes */
    nd[root - m] = 0;
    for (uint32_t v = root; v-- > m;)
        nd[v - m] = (uint8_t)(nd[parent[v] - m] + 1 > 255 ? 255 : nd[parent[v] - m] + 1);
    unsigned maxd = 0;
    for (uint32_t i = 0; i < m; i++) {
        unsigned d = nd[parent[i] - m] + 1u;
        if (d > 255)
            d = 255;
        depth[i] = (uint8_t)d;
        if (d > maxd)
            maxd = d;
    }
    return maxd;
}

/* Package-merge (Larmore & Hirschberg), optimal lengths of at most L bits for the m sorted
 * weights. Works level by level from the deepest, keeping only the 2m - 2 smallest items of each
 * list and one bit per item (package or leaf); the lengths follow from the leaf counts selected
 * at each level. */
static int package_merge(const huf_item *it, uint32_t m, unsigned L, uint8_t *depth)
{
    size_t cap = 2 * (size_t)m - 2;
    size_t words = (cap + 63) / 64;
    uint64_t *a = malloc(cap * sizeof *a);
    uint64_t *b = malloc(cap * sizeof *b);
    uint64_t *isp = calloc((size_t)L * words, sizeof *isp);
    int32_t *diff = calloc((size_t)m + 1, sizeof *diff);
    size_t *len = malloc(((size_t)L + 1) * sizeof *len);
    int status = DNNZ_E_ALLOC;
    if (!a || !b || !isp || !diff || !len)
        goto done;

    /* level L: the leaves */
    size_t n_prev = m < cap ? m : cap;
    for (size_t i = 0; i < n_prev; i++)
        a[i] = it[i].w;
    len[L] = n_prev;
    for (unsigned j = L - 1; j >= 1; j--) {
        size_t np = n_prev / 2, li = 0, pi = 0, n = 0;
        uint64_t *flags = isp + (size_t)j * words;
        while (n < cap && (li < m || pi < np)) {
            uint64_t pw = pi < np ? a[2 * pi] + a[2 * pi + 1] : UINT64_MAX;
            if (li < m && (pi >= np || it[li].w <= pw)) {
                b[n++] = it[li++].w;
            } else {
                flags[n >> 6] |= 1ull << (n & 63);
                b[n++] = pw;
                pi++;
            }
        }
        len[j] = n;
        n_prev = n;
        uint64_t *t = a;
        a = b;
        b = t;
    }
    /* backtrack: select the first 2m - 2 items of level 1 */
    size_t sel = cap;
    for (unsigned j = 1; j <= L; j++) {
        size_t pk = 0;
        if (j < L) {
            const uint64_t *flags = isp + (size_t)j * words;
            for (size_t w = 0; w < sel / 64; w++)
                pk += (size_t)__builtin_popcountll(flags[w]);
            if (sel & 63)
                pk += (size_t)__builtin_popcountll(flags[sel / 64] & ((1ull << (sel & 63)) - 1));
        }
        size_t leaves = sel - pk;
        if (leaves > m || sel > len[j]) { /* cannot happen when 2^L >= m */
            status = DNNZ_E_ARGUMENT;
            goto done;
        }
        diff[0] += 1;
        diff[leaves] -= 1;
        sel = 2 * pk;
    }
    int32_t d = 0;
    for (uint32_t i = 0; i < m; i++) {
        d += diff[i];
        depth[i] = (uint8_t)d;
    }
    status = DNNZ_OK;
done:
    free(a);
    free(b);
    free(isp);
    free(diff);
    free(len);
    return status;
}

int dnnz_huf_code_lengths(const uint64_t *counts, size_t n_alphabet, unsigned max_len, uint8_t *lengths)
{
    if (n_alphabet == 0 || max_len < 1 || max_len > MAXL)
        return DNNZ_E_ARGUMENT;
    if (n_alphabet > DNNZ_HUF_MAX_SYMBOLS)
        return DNNZ_E_LIMIT;
    uint64_t total = 0;
    uint32_t m = 0;
    for (size_t s = 0; s < n_alphabet; s++) {
        if (counts[s] > MAX_TOTAL_COUNT || (total += counts[s]) > MAX_TOTAL_COUNT)
            return DNNZ_E_LIMIT;
        m += counts[s] != 0;
    }
    memset(lengths, 0, n_alphabet);
    if (m == 0)
        return DNNZ_OK;
    if (max_len < 32 && (1ull << max_len) < m)
        return DNNZ_E_ARGUMENT;
    if (m == 1) {
        for (size_t s = 0; s < n_alphabet; s++)
            if (counts[s])
                lengths[s] = 1;
        return DNNZ_OK;
    }
    huf_item *it = malloc(m * sizeof *it);
    uint64_t *iw = malloc(m * sizeof *iw);
    /* parent[2m - 1] then m - 1 bytes of internal depths */
    uint32_t *parent = malloc((2 * (size_t)m - 1) * sizeof *parent + m);
    uint8_t *depth = malloc(m);
    int status = DNNZ_E_ALLOC;
    if (!it || !iw || !parent || !depth)
        goto done;
    for (size_t s = 0, k = 0; s < n_alphabet; s++)
        if (counts[s]) {
            it[k].w = counts[s];
            it[k++].s = (uint32_t)s;
        }
    qsort(it, m, sizeof *it, item_cmp);
    if (huffman_depths(it, m, iw, parent, depth) > max_len) {
        status = package_merge(it, m, max_len, depth);
        if (status != DNNZ_OK)
            goto done;
    }
    for (uint32_t k = 0; k < m; k++)
        lengths[it[k].s] = depth[k];
    status = DNNZ_OK;
done:
    free(it);
    free(iw);
    free(parent);
    free(depth);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Length validation and canonical codes                                                       */
/* ------------------------------------------------------------------------------------------ */

/* count[l] = symbols of length l; validates the set. */
static int length_counts(const uint8_t *lengths, size_t n_alphabet, uint32_t count[MAXL + 1],
                         uint32_t *n_used, uint32_t *max_len)
{
    if (n_alphabet == 0)
        return DNNZ_E_ARGUMENT;
    if (n_alphabet > DNNZ_HUF_MAX_SYMBOLS)
        return DNNZ_E_LIMIT;
    uint32_t hist[256] = {0};
    for (size_t s = 0; s < n_alphabet; s++)
        hist[lengths[s]]++;
    for (unsigned l = MAXL + 1; l < 256; l++)
        if (hist[l])
            return DNNZ_E_CODE_TOO_LONG;
    uint64_t kraft = 0; /* in units of 2^-32 */
    uint32_t used = 0, ml = 0;
    count[0] = 0;
    for (unsigned l = 1; l <= MAXL; l++) {
        count[l] = hist[l];
        kraft += (uint64_t)hist[l] << (MAXL - l);
        used += hist[l];
        if (hist[l])
            ml = l;
    }
    if (n_used)
        *n_used = used;
    if (max_len)
        *max_len = ml;
    if (kraft > (1ull << MAXL))
        return DNNZ_E_OVERSUBSCRIBED;
    if (kraft < (1ull << MAXL) && !(used == 0 || (used == 1 && count[1] == 1)))
        return DNNZ_E_INCOMPLETE;
    return DNNZ_OK;
}

int dnnz_huf_check_lengths(const uint8_t *lengths, size_t n_alphabet, uint32_t *n_used, uint32_t *max_len)
{
    uint32_t count[MAXL + 1];
    return length_counts(lengths, n_alphabet, count, n_used, max_len);
}

/* first[l]: the first canonical code of length l (DEFLATE's next_code). */
static void first_codes(const uint32_t count[MAXL + 1], uint32_t first[MAXL + 1])
{
    uint64_t code = 0;
    first[0] = 0;
    for (unsigned l = 1; l <= MAXL; l++) {
        code = (code + count[l - 1]) << 1;
        first[l] = (uint32_t)code; /* fits: the lengths passed the Kraft check */
    }
}

int dnnz_huf_canonical_codes(const uint8_t *lengths, size_t n_alphabet, uint32_t *codes)
{
    uint32_t count[MAXL + 1], next[MAXL + 1];
    DNNZ_CHECK(length_counts(lengths, n_alphabet, count, NULL, NULL));
    first_codes(count, next);
    for (size_t s = 0; s < n_alphabet; s++)
        codes[s] = lengths[s] ? next[lengths[s]]++ : 0;
    return DNNZ_OK;
}

unsigned dnnz_huf_out_width(size_t n_alphabet)
{
    return n_alphabet <= 256 ? 1 : n_alphabet <= 65536 ? 2 : 4;
}

uint64_t dnnz_huf_encode_bound(uint64_t n_symbols, unsigned max_len)
{
    if (max_len > MAXL)
        max_len = MAXL;
    return (n_symbols * max_len + 7) / 8 + 8;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder                                                                                     */
/* ------------------------------------------------------------------------------------------ */

int dnnz_huf_ctable_init(dnnz_huf_ctable *t, const uint8_t *lengths, size_t n_alphabet)
{
    uint32_t count[MAXL + 1], next[MAXL + 1], used, ml;
    t->entry = NULL;
    DNNZ_CHECK(length_counts(lengths, n_alphabet, count, &used, &ml));
    t->entry = malloc(n_alphabet * sizeof *t->entry);
    if (!t->entry)
        return DNNZ_E_ALLOC;
    first_codes(count, next);
    for (size_t s = 0; s < n_alphabet; s++) {
        unsigned l = lengths[s];
        t->entry[s] = l ? ((uint64_t)next[l]++ << 8) | l : 0;
    }
    t->n_alphabet = (uint32_t)n_alphabet;
    t->max_len = ml;
    t->n_used = used;
    return DNNZ_OK;
}

void dnnz_huf_ctable_free(dnnz_huf_ctable *t)
{
    free(t->entry);
    t->entry = NULL;
}

#define DEFINE_ENCODED_BITS(NAME, T)                                                          \
    static int NAME(const dnnz_huf_ctable *t, const T *sym, size_t n, uint64_t *n_bits)       \
    {                                                                                         \
        uint64_t bits = 0;                                                                    \
        for (size_t i = 0; i < n; i++) {                                                      \
            uint64_t e = sym[i] < t->n_alphabet ? t->entry[sym[i]] : 0;                       \
            if (DNNZ_UNLIKELY(!(e & 0xff))) {                                                 \
                *n_bits = i;                                                                  \
                return DNNZ_E_ARGUMENT;                                                       \
            }                                                                                 \
            bits += e & 0xff;                                                                 \
        }                                                                                     \
        *n_bits = bits;                                                                       \
        return DNNZ_OK;                                                                       \
    }
DEFINE_ENCODED_BITS(encoded_bits_u8, uint8_t)
DEFINE_ENCODED_BITS(encoded_bits_u16, uint16_t)
DEFINE_ENCODED_BITS(encoded_bits_u32, uint32_t)

int dnnz_huf_encoded_bits(const dnnz_huf_ctable *t, const void *symbols, unsigned sym_width,
                          size_t n, uint64_t *n_bits)
{
    switch (sym_width) {
    case 1: return encoded_bits_u8(t, symbols, n, n_bits);
    case 2: return encoded_bits_u16(t, symbols, n, n_bits);
    case 4: return encoded_bits_u32(t, symbols, n, n_bits);
    default: return DNNZ_E_ARGUMENT;
    }
}

/* Groups of g = 56 / max_len codes go into the accumulator between two flushes. */
#define DEFINE_ENCODE(NAME, T)                                                                \
    static int NAME(const dnnz_huf_ctable *t, dnnz_bit_writer *w, const T *sym, size_t n,     \
                    uint64_t *bad_pos)                                                        \
    {                                                                                         \
        const uint64_t *entry = t->entry;                                                     \
        const uint32_t na = t->n_alphabet;                                                    \
        const size_t g = t->max_len ? 56 / t->max_len : 1;                                    \
        uint64_t acc = w->acc;                                                                \
        unsigned nbits = w->nbits;                                                            \
        size_t i = 0;                                                                         \
        while (i < n) {                                                                       \
            size_t stop = n - i < g ? n : i + g;                                              \
            for (; i < stop; i++) {                                                           \
                uint64_t e = sym[i] < na ? entry[sym[i]] : 0;                                 \
                unsigned l = (unsigned)(e & 0xff);                                            \
                if (DNNZ_UNLIKELY(l == 0)) {                                                  \
                    if (bad_pos)                                                              \
                        *bad_pos = i;                                                         \
                    w->acc = acc;                                                             \
                    w->nbits = nbits;                                                         \
                    return DNNZ_E_ARGUMENT;                                                   \
                }                                                                             \
                acc = (acc << l) | (e >> 8);                                                  \
                nbits += l;                                                                   \
            }                                                                                 \
            w->acc = acc;                                                                     \
            w->nbits = nbits;                                                                 \
            if (DNNZ_LIKELY(w->end - w->ptr >= 8)) {                                          \
                dnnz_bit_flush_fast(w);                                                       \
            } else {                                                                          \
                dnnz_bit_flush(w);                                                            \
                if (w->overflow)                                                              \
                    return DNNZ_E_DST_TOO_SMALL;                                              \
            }                                                                                 \
            nbits = w->nbits;                                                                 \
        }                                                                                     \
        w->acc = acc;                                                                         \
        w->nbits = nbits;                                                                     \
        return DNNZ_OK;                                                                       \
    }
DEFINE_ENCODE(encode_u8, uint8_t)
DEFINE_ENCODE(encode_u16, uint16_t)
DEFINE_ENCODE(encode_u32, uint32_t)

int dnnz_huf_encode(const dnnz_huf_ctable *t, dnnz_bit_writer *w, const void *symbols,
                    unsigned sym_width, size_t n, uint64_t *bad_pos)
{
    switch (sym_width) {
    case 1: return encode_u8(t, w, symbols, n, bad_pos);
    case 2: return encode_u16(t, w, symbols, n, bad_pos);
    case 4: return encode_u32(t, w, symbols, n, bad_pos);
    default: return DNNZ_E_ARGUMENT;
    }
}

int dnnz_huf_encode_stream(const uint8_t *lengths, size_t n_alphabet, const void *symbols,
                           unsigned sym_width, size_t n, uint8_t *dst, size_t cap, uint64_t *n_bits)
{
    return dnnz_huf_encode_at(lengths, n_alphabet, symbols, sym_width, n, dst, cap, 0, n_bits);
}

int dnnz_huf_encode_at(const uint8_t *lengths, size_t n_alphabet, const void *symbols,
                       unsigned sym_width, size_t n, uint8_t *dst, size_t cap, uint64_t bit_offset,
                       uint64_t *n_bits)
{
    dnnz_huf_ctable t;
    dnnz_bit_writer w;
    uint64_t bad = 0;
    DNNZ_CHECK(dnnz_huf_ctable_init(&t, lengths, n_alphabet));
    int status = dnnz_bit_writer_init(&w, dst, cap, bit_offset);
    if (status == DNNZ_OK)
        status = dnnz_huf_encode(&t, &w, symbols, sym_width, n, &bad);
    if (status == DNNZ_OK)
        status = dnnz_bit_writer_finish(&w, n_bits);
    else if (status == DNNZ_E_ARGUMENT)
        *n_bits = bad;
    dnnz_huf_ctable_free(&t);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoder                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Byte 6 (symbol count) and byte 7 (bits) of a multi[] entry, whatever the host byte order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define MULTI_COUNT(e) ((unsigned)((e) >> 8) & 0xff)
#define MULTI_BITS(e) ((unsigned)(e) & 0xff)
#else
#define MULTI_COUNT(e) ((unsigned)((e) >> 48) & 0xff)
#define MULTI_BITS(e) ((unsigned)((e) >> 56))
#endif

void dnnz_huf_dtable_free(dnnz_huf_dtable *t)
{
    free(t->wide);
    t->wide = NULL;
    free(t->single);
    free(t->sub);
    free(t->sub_off);
    free(t->sub_bits);
    t->sub = NULL;
    t->sub_off = NULL;
    t->sub_bits = NULL;
    t->single = NULL;
    t->multi = NULL;
    t->sorted = NULL;
}

/* Second-level tables (see huf.h): a primary prefix's table resolves as many bits as its longest
 * code needs beyond TB; a complete code covers every entry. Work and memory are bounded by the
 * number of used symbols and DNNZ_HUF_SUB_MAX_ENTRIES. */
static void build_sub_tables(dnnz_huf_dtable *t, const uint32_t count[MAXL + 1])
{
    const size_t tsize = (size_t)1 << TB;
    uint8_t *bits = calloc(tsize, 1);
    uint32_t *off = malloc(tsize * sizeof *off);
    if (!bits || !off)
        goto fail;
    for (unsigned l = TB + 1; l <= t->max_len; l++)
        for (uint32_t i = 0; i < count[l]; i++) {
            uint32_t p = (t->first[l] + i) >> (l - TB);
            if (bits[p] < l - TB)
                bits[p] = (uint8_t)(l - TB);
        }
    size_t total = 0;
    for (size_t p = 0; p < tsize; p++) {
        off[p] = (uint32_t)total;
        total += bits[p] ? (size_t)1 << bits[p] : 0;
        if (total > DNNZ_HUF_SUB_MAX_ENTRIES)
            goto fail;
    }
    /* one spare entry: the branch-free decoder reads sub[off] for short prefixes too */
    uint32_t *sub = malloc((total + 1) * sizeof *sub);
    if (!sub)
        goto fail;
    for (size_t j = 0; j <= total; j++)
        sub[j] = DNNZ_HUF_INVALID | 1; /* unreachable in a complete code */
    for (unsigned l = TB + 1; l <= t->max_len; l++)
        for (uint32_t i = 0; i < count[l]; i++) {
            uint32_t code = t->first[l] + i, p = code >> (l - TB), rem = l - TB;
            uint32_t span = 1u << (bits[p] - rem), base = off[p] + ((code & ((1u << rem) - 1)) << (bits[p] - rem));
            uint32_t e = (t->sorted[t->index[l] + i] << 8) | l;
            for (uint32_t j = 0; j < span; j++)
                sub[base + j] = e;
        }
    for (size_t p = 0; p < tsize; p++) /* offset << 5 | bits: one load per lookup */
        off[p] = off[p] << 5 | bits[p];
    t->sub = sub;
    t->sub_off = off;
    t->sub_bits = bits;
    return;
fail:
    free(bits);
    free(off);
}

int dnnz_huf_dtable_init(dnnz_huf_dtable *t, const uint8_t *lengths, size_t n_alphabet)
{
    uint32_t count[MAXL + 1], used, ml;
    memset(t, 0, sizeof *t);
    DNNZ_CHECK(length_counts(lengths, n_alphabet, count, &used, &ml));
    unsigned width = dnnz_huf_out_width(n_alphabet);
    size_t tsize = (size_t)1 << TB;
    size_t bytes = tsize * sizeof(uint64_t) + tsize * sizeof(uint32_t) + ((size_t)used + 1) * sizeof(uint32_t);
    uint8_t *mem = malloc(bytes);
    if (!mem)
        return DNNZ_E_ALLOC;
    /* one block owned by t->single: single[tsize] (4 * 2^TB bytes keep what follows 8-byte
     * aligned), multi[tsize], sorted[used] */
    t->single = (uint32_t *)mem;
    uint64_t *multi = (uint64_t *)(mem + tsize * sizeof(uint32_t));
    t->sorted = (uint32_t *)(mem + tsize * sizeof(uint32_t) + tsize * sizeof(uint64_t));
    t->multi = width < 4 ? multi : NULL;
    t->n_alphabet = (uint32_t)n_alphabet;
    t->n_used = used;
    t->max_len = ml;
    t->out_width = width;
    t->syms_per_refill = 56 / (ml ? ml : 1);

    first_codes(count, t->first);
    uint32_t idx = 0;
    for (unsigned l = 0; l <= MAXL; l++) {
        t->index[l] = idx;
        idx += l ? count[l] : 0;
        t->limit[l] = l ? (uint64_t)(t->first[l] + (uint64_t)count[l]) << (MAXL - l) : 0;
    }
    {
        uint32_t pos[MAXL + 1];
        memcpy(pos, t->index, sizeof pos);
        for (size_t s = 0; s < n_alphabet; s++)
            if (lengths[s])
                t->sorted[pos[lengths[s]]++] = (uint32_t)s;
    }
    /* primary table: for each TB-bit prefix, the shortest length whose codes cover it */
    for (uint32_t p = 0; p < tsize; p++) {
        uint64_t v = (uint64_t)p << (MAXL - TB);
        uint32_t e = DNNZ_HUF_INVALID | 1; /* no code starts with this prefix */
        for (unsigned l = 1; l <= ml; l++) {
            if (v < t->limit[l]) {
                if (l <= TB) {
                    uint32_t code = (uint32_t)(v >> (MAXL - l));
                    e = (t->sorted[t->index[l] + code - t->first[l]] << 8) | l;
                } else {
                    e = 0; /* long code: dnnz_huf_decode_long */
                }
                break;
            }
        }
        t->single[p] = e;
    }
    if (ml > TB && ml <= TB + DNNZ_HUF_SUB_MAX_BITS)
        build_sub_tables(t, count); /* best effort: without them, the canonical search */
    if (width > 1 && ml > TB && t->sub) {
        /* best effort too: the wide table (huf.h); each code of length l <= wb fills its
         * 2^(wb - l) prefixes, so the work is bounded by the table size */
        unsigned wb = ml < DNNZ_HUF_WIDE_BITS ? ml : DNNZ_HUF_WIDE_BITS;
        uint32_t *wide = calloc((size_t)1 << wb, sizeof *wide);
        if (wide) {
            for (unsigned l = 1; l <= wb; l++)
                for (uint32_t i = 0; i < count[l]; i++) {
                    uint32_t base = (t->first[l] + i) << (wb - l), span = 1u << (wb - l);
                    uint32_t e = (t->sorted[t->index[l] + i] << 8) | l;
                    for (uint32_t j = 0; j < span; j++)
                        wide[base + j] = e;
                }
            t->wide = wide;
            t->wide_bits = wb;
        }
    }
    if (t->multi) {
        const unsigned maxsyms = 6 / width;
        uint32_t full = 1;
        for (uint32_t p = 0; p < tsize; p++) {
            union {
                uint8_t b[8];
                uint16_t h[4];
                uint64_t u;
            } buf = {.u = 0};
            unsigned used_bits = 0, c = 0;
            while (c < maxsyms) {
                uint32_t e = t->single[(p << used_bits) & (tsize - 1)];
                unsigned l = e & 63;
                if (l == 0 || (e & DNNZ_HUF_INVALID) || used_bits + l > TB)
                    break;
                uint32_t s = e >> 8;
                if (width == 1)
                    buf.b[c & 7] = (uint8_t)s;
                else
                    buf.h[c & 3] = (uint16_t)s;
                c++;
                used_bits += l;
            }
            buf.b[6] = (uint8_t)c;
            buf.b[7] = (uint8_t)used_bits;
            multi[p] = buf.u;
            full &= c != 0;
        }
        t->multi_full = full;
    }
    return DNNZ_OK;
}

uint32_t dnnz_huf_decode_long(const dnnz_huf_dtable *t, dnnz_bit_reader *r, uint32_t *flags)
{
    if (t->sub) {
        uint32_t p = (uint32_t)(r->acc >> (64 - TB));
        unsigned b = t->sub_bits[p];
        if (DNNZ_LIKELY(b)) {
            uint32_t e = t->sub[(t->sub_off[p] >> 5) + (uint32_t)((r->acc << TB) >> (64 - b))];
            dnnz_bit_skip(r, e & 63);
            *flags |= e & DNNZ_HUF_INVALID;
            return e >> 8;
        }
    }
    uint64_t v = r->acc >> (64 - MAXL);
    for (unsigned l = TB + 1; l <= t->max_len; l++) {
        if (v < t->limit[l]) {
            dnnz_bit_skip(r, l);
            return t->sorted[t->index[l] + (uint32_t)(v >> (MAXL - l)) - t->first[l]];
        }
    }
    /* unreachable for validated tables (a long code exists only in complete codes) */
    dnnz_bit_skip(r, 1);
    *flags |= DNNZ_HUF_INVALID;
    return 0;
}

/* The hot loops keep the reader state in locals (acc, avail, ptr): the symbol stores go through
 * a byte pointer, which may alias a struct in memory and would force a reload per lookup. The
 * state goes back into the struct around the (rare) single-symbol slow path. */
#define RD_LOCALS(S, R)                \
    uint64_t S##acc = (R)->acc;        \
    unsigned S##av = (R)->avail;       \
    const uint8_t *S##p = (R)->ptr;    \
    const uint8_t *const S##lim = (R)->end - 8
#define RD_SAVE(S, R)       \
    do {                    \
        (R)->acc = S##acc;  \
        (R)->avail = S##av; \
        (R)->ptr = S##p;    \
    } while (0)
#define RD_LOAD(S, R)       \
    do {                    \
        S##acc = (R)->acc;  \
        S##av = (R)->avail; \
        S##p = (R)->ptr;    \
    } while (0)
#define RD_CAN_REFILL(S, R) ((R)->end - S##p >= 8)
#define RD_REFILL_FAST(S)                              \
    do {                                               \
        S##acc |= dnnz_bit_load_be64(S##p) >> S##av;   \
        S##p += (63 - S##av) >> 3;                     \
        S##av |= 56;                                   \
    } while (0)
/* One multi-symbol lookup for stream S (reader R) writing to O of type T; the slow path
 * decodes one symbol through the struct. */
#define MULTI_STEP(S, R, O, T)                                          \
    do {                                                                \
        uint64_t e_ = multi[S##acc >> (64 - TB)];                       \
        unsigned c_ = MULTI_COUNT(e_);                                  \
        if (DNNZ_LIKELY(c_ != 0)) {                                     \
            unsigned b_ = MULTI_BITS(e_);                               \
            memcpy(O, &e_, 8);                                          \
            O += c_;                                                    \
            S##acc <<= b_;                                              \
            S##av -= b_;                                                \
        } else {                                                        \
            RD_SAVE(S, R);                                              \
            dnnz_bit_refill(R);                                         \
            *O++ = (T)dnnz_huf_decode_symbol(t, R, &flags);             \
            dnnz_bit_refill(R); /* a long code may have taken 32 bits */ \
            RD_LOAD(S, R);                                              \
        }                                                               \
    } while (0)

/* Bulk decoders, one per output width. The fast loop needs 8 readable input bytes (branch-free
 * refill) and room for 4 multi-symbol stores of 8 bytes; the tail decodes one symbol at a time
 * with the safe refill. */
#define DEFINE_DECODE(NAME, T)                                                                \
    static uint32_t NAME(const dnnz_huf_dtable *t, dnnz_bit_reader *r, T *o, size_t n)        \
    {                                                                                         \
        T *const oend = o + n;                                                                \
        uint32_t flags = 0;                                                                   \
        const uint64_t *multi = t->multi;                                                     \
        if (t->sub && !t->multi_full && t->syms_per_refill >= 2) {                            \
            /* large alphabets (most codes past the primary table): both levels inline and    \
             * branch-free, the reader state in registers, 2+ symbols per refill */            \
            const uint32_t *single = t->single, *sub = t->sub, *sob = t->sub_off;              \
            const uint32_t spr2 = t->syms_per_refill;                                         \
            RD_LOCALS(a, r);                                                                  \
            (void)alim;                                                                       \
            while ((size_t)(oend - o) >= spr2 && RD_CAN_REFILL(a, r)) {                       \
                RD_REFILL_FAST(a);                                                            \
                for (uint32_t s_ = 0; s_ < spr2; s_++) {                                      \
                    uint32_t p_ = (uint32_t)(aacc >> (64 - TB)), so_ = sob[p_];               \
                    uint32_t e1_ = single[p_];                                                \
                    uint32_t e2_ = sub[(so_ >> 5) + (uint32_t)(((aacc << TB) >> 1) >> (63 - (so_ & 31)))]; \
                    uint32_t e_ = (e1_ & 63) ? e1_ : e2_;                                     \
                    *o++ = (T)(e_ >> 8);                                                      \
                    flags |= e_ & DNNZ_HUF_INVALID;                                           \
                    aacc <<= (e_ & 63);                                                       \
                    aav -= (e_ & 63);                                                         \
                }                                                                             \
            }                                                                                 \
            RD_SAVE(a, r);                                                                    \
        } else if (multi && sizeof(T) < 4) {                                                  \
            const ptrdiff_t room = 4 * (6 / (ptrdiff_t)sizeof(T)) + 8 / (ptrdiff_t)sizeof(T); \
            RD_LOCALS(a, r);                                                                  \
            (void)alim;                                                                       \
            /* every entry emits a symbol: whole batches of rounds with no test at all */     \
            const ptrdiff_t per_round = 4 * (6 / (ptrdiff_t)sizeof(T));                       \
            while (t->multi_full) {                                                           \
                ptrdiff_t n_out = (oend - o - 8 / (ptrdiff_t)sizeof(T)) / per_round;          \
                ptrdiff_t n_in = (r->end - ap - 8) / 7 + 1; /* a refill advances <= 7 bytes */ \
                ptrdiff_t nr = r->end - ap < 8 ? 0 : n_out < n_in ? n_out : n_in;             \
                if (nr < 2)                                                                   \
                    break;                                                                    \
                for (; nr > 0; nr--) {                                                        \
                    RD_REFILL_FAST(a);                                                        \
                    for (int s_ = 0; s_ < 4; s_++) {                                          \
                        uint64_t e_ = multi[aacc >> (64 - TB)];                               \
                        unsigned b_ = MULTI_BITS(e_);                                         \
                        memcpy(o, &e_, 8);                                                    \
                        o += MULTI_COUNT(e_);                                                 \
                        aacc <<= b_;                                                          \
                        aav -= b_;                                                            \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
            while (oend - o >= room && RD_CAN_REFILL(a, r)) {                                 \
                RD_REFILL_FAST(a);                                                            \
                /* 4 lookups of at most TB = 11 bits fit in the >= 56 refilled bits, and a    \
                 * slow step refills before it decodes */                                     \
                MULTI_STEP(a, r, o, T);                                                       \
                MULTI_STEP(a, r, o, T);                                                       \
                MULTI_STEP(a, r, o, T);                                                       \
                MULTI_STEP(a, r, o, T);                                                       \
            }                                                                                 \
            RD_SAVE(a, r);                                                                    \
        }                                                                                     \
        const uint32_t spr = t->syms_per_refill;                                              \
        while (o < oend) {                                                                    \
            dnnz_bit_refill(r);                                                               \
            size_t k = (size_t)(oend - o) < spr ? (size_t)(oend - o) : spr;                   \
            for (size_t j = 0; j < k; j++)                                                    \
                *o++ = (T)dnnz_huf_decode_symbol(t, r, &flags);                               \
        }                                                                                     \
        return flags;                                                                         \
    }
DEFINE_DECODE(decode_u8, uint8_t)
DEFINE_DECODE(decode_u16, uint16_t)
DEFINE_DECODE(decode_u32, uint32_t)
_Static_assert(4 * DNNZ_HUF_TABLE_BITS <= 56, "refill budget of the multi-symbol loops");

uint32_t dnnz_huf_decode_reader(const dnnz_huf_dtable *t, dnnz_bit_reader *r, void *out, size_t n)
{
    switch (t->out_width) {
    case 1: return decode_u8(t, r, out, n);
    case 2: return decode_u16(t, r, out, n);
    default: return decode_u32(t, r, out, n);
    }
}

uint32_t dnnz_huf_decode4_u8(const dnnz_huf_dtable *t, dnnz_bit_reader r[4], uint8_t *const out[4], size_t n)
{
    uint32_t flags = 0;
    const uint64_t *multi = t->multi;
    uint8_t *o0 = out[0], *o1 = out[1], *o2 = out[2], *o3 = out[3];
    if (multi && t->out_width == 1) {
        /* every stream emits at most 24 symbols per round (+ an 8-byte store) */
        uint8_t *const e0 = out[0] + n - 32, *const e1 = out[1] + n - 32;
        uint8_t *const e2 = out[2] + n - 32, *const e3 = out[3] + n - 32;
        RD_LOCALS(a, &r[0]);
        RD_LOCALS(b, &r[1]);
        RD_LOCALS(c, &r[2]);
        RD_LOCALS(d, &r[3]);
        if (n >= 32) {
            while (o0 <= e0 && o1 <= e1 && o2 <= e2 && o3 <= e3 &&
                   ap <= alim && bp <= blim && cp <= clim && dp <= dlim) {
                RD_REFILL_FAST(a);
                RD_REFILL_FAST(b);
                RD_REFILL_FAST(c);
                RD_REFILL_FAST(d);
                for (int k = 0; k < 4; k++) {
                    MULTI_STEP(a, &r[0], o0, uint8_t);
                    MULTI_STEP(b, &r[1], o1, uint8_t);
                    MULTI_STEP(c, &r[2], o2, uint8_t);
                    MULTI_STEP(d, &r[3], o3, uint8_t);
                }
            }
        }
        RD_SAVE(a, &r[0]);
        RD_SAVE(b, &r[1]);
        RD_SAVE(c, &r[2]);
        RD_SAVE(d, &r[3]);
    }
    flags |= decode_u8(t, &r[0], o0, (size_t)(out[0] + n - o0));
    flags |= decode_u8(t, &r[1], o1, (size_t)(out[1] + n - o1));
    flags |= decode_u8(t, &r[2], o2, (size_t)(out[2] + n - o2));
    flags |= decode_u8(t, &r[3], o3, (size_t)(out[3] + n - o3));
    return flags;
}

/* Four streams of one buffer: the state of a stream is its bit position and a refilled
 * accumulator (no `avail`, no pointer): 3 registers per stream with the output pointer, so the
 * four streams and the table stay in registers. A round loads 8 bytes at pos >> 3 (>= 57 valid
 * bits after the shift) and makes 4 lookups of at most 11 bits. */
uint32_t dnnz_huf_decode4_u8_at(const dnnz_huf_dtable *t, const uint8_t *src, size_t size,
                                uint64_t pos[4], uint8_t *const out[4], size_t n)
{
    const size_t ns[4] = {n, n, n, n};
    return dnnz_huf_decode4_u8_at_n(t, src, size, pos, out, ns);
}

uint32_t dnnz_huf_decode4_u8_at_n(const dnnz_huf_dtable *t, const uint8_t *src, size_t size,
                                  uint64_t pos[4], uint8_t *const out[4], const size_t n[4])
{
    uint32_t flags = 0;
    const uint64_t *multi = t->multi;
    uint8_t *o[4] = {out[0], out[1], out[2], out[3]};
    if (multi && t->out_width == 1 && n[0] >= 32 && n[1] >= 32 && n[2] >= 32 && n[3] >= 32 && size >= 8) {
        const uint64_t plim = ((uint64_t)size - 8) * 8; /* a round may start at or below this bit */
        uint64_t p0 = pos[0], p1 = pos[1], p2 = pos[2], p3 = pos[3];
        uint8_t *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3];
        uint8_t *const e0 = out[0] + n[0] - 32, *const e1 = out[1] + n[1] - 32;
        uint8_t *const e2 = out[2] + n[2] - 32, *const e3 = out[3] + n[3] - 32;
        /* every entry emits >= 1 symbol: run the rounds that surely stay in bounds (<= 24
         * symbols and <= 44 bits per stream and round) with no test at all, then the checked
         * loop below finishes */
#define ROUNDS_LEFT(O, E, P) ((O) > (E) || (P) > plim ? 0 : (size_t)(((E) - (O)) / 24 + 1) < ((plim - (P)) / 44 + 1) ? (size_t)(((E) - (O)) / 24 + 1) : (size_t)((plim - (P)) / 44 + 1))
        while (t->multi_full) {
            size_t nr = ROUNDS_LEFT(o0, e0, p0), q;
            q = ROUNDS_LEFT(o1, e1, p1);
            nr = q < nr ? q : nr;
            q = ROUNDS_LEFT(o2, e2, p2);
            nr = q < nr ? q : nr;
            q = ROUNDS_LEFT(o3, e3, p3);
            nr = q < nr ? q : nr;
            if (nr < 4)
                break;
            for (; nr; nr--) {
                __builtin_prefetch(src + (p0 >> 3) + 512);
                __builtin_prefetch(src + (p1 >> 3) + 512);
                __builtin_prefetch(src + (p2 >> 3) + 512);
                __builtin_prefetch(src + (p3 >> 3) + 512);
                uint64_t a0 = dnnz_bit_load_be64(src + (p0 >> 3)) << (p0 & 7);
                uint64_t a1 = dnnz_bit_load_be64(src + (p1 >> 3)) << (p1 & 7);
                uint64_t a2 = dnnz_bit_load_be64(src + (p2 >> 3)) << (p2 & 7);
                uint64_t a3 = dnnz_bit_load_be64(src + (p3 >> 3)) << (p3 & 7);
#define STEP_FULL(A, P, O)                          \
    do {                                            \
        uint64_t e_ = multi[A >> (64 - TB)];        \
        unsigned b_ = MULTI_BITS(e_);               \
        memcpy(O, &e_, 8);                          \
        O += MULTI_COUNT(e_);                       \
        A <<= b_;                                   \
        P += b_;                                    \
    } while (0)
                for (int k = 0; k < 4; k++) {
                    STEP_FULL(a0, p0, o0);
                    STEP_FULL(a1, p1, o1);
                    STEP_FULL(a2, p2, o2);
                    STEP_FULL(a3, p3, o3);
                }
#undef STEP_FULL
            }
        }
#undef ROUNDS_LEFT
        while (o0 <= e0 && o1 <= e1 && o2 <= e2 && o3 <= e3 &&
               p0 <= plim && p1 <= plim && p2 <= plim && p3 <= plim) {
            /* the streams are far apart (one row each): prefetch ahead of all four */
            __builtin_prefetch(src + (p0 >> 3) + 512);
            __builtin_prefetch(src + (p1 >> 3) + 512);
            __builtin_prefetch(src + (p2 >> 3) + 512);
            __builtin_prefetch(src + (p3 >> 3) + 512);
            uint64_t a0 = dnnz_bit_load_be64(src + (p0 >> 3)) << (p0 & 7);
            uint64_t a1 = dnnz_bit_load_be64(src + (p1 >> 3)) << (p1 & 7);
            uint64_t a2 = dnnz_bit_load_be64(src + (p2 >> 3)) << (p2 & 7);
            uint64_t a3 = dnnz_bit_load_be64(src + (p3 >> 3)) << (p3 & 7);
#define STEP_AT(A, P, O, I)                                                      \
    do {                                                                         \
        uint64_t e_ = multi[A >> (64 - TB)];                                     \
        unsigned c_ = MULTI_COUNT(e_);                                           \
        if (DNNZ_LIKELY(c_ != 0)) {                                              \
            unsigned b_ = MULTI_BITS(e_);                                        \
            memcpy(O, &e_, 8);                                                   \
            O += c_;                                                             \
            A <<= b_;                                                            \
            P += b_;                                                             \
        } else {                                                                 \
            dnnz_bit_reader r_;                                                  \
            dnnz_bit_reader_init(&r_, src, size, P);                             \
            *O++ = (uint8_t)dnnz_huf_decode_symbol(t, &r_, &flags);              \
            P = dnnz_bit_reader_tell(&r_);                                       \
            A = P <= plim ? dnnz_bit_load_be64(src + (P >> 3)) << (P & 7) : 0;   \
            if (P > plim)                                                        \
                goto tail;                                                       \
        }                                                                        \
    } while (0)
            for (int k = 0; k < 4; k++) {
                STEP_AT(a0, p0, o0, 0);
                STEP_AT(a1, p1, o1, 1);
                STEP_AT(a2, p2, o2, 2);
                STEP_AT(a3, p3, o3, 3);
            }
#undef STEP_AT
        }
    tail:
        pos[0] = p0, pos[1] = p1, pos[2] = p2, pos[3] = p3;
        o[0] = o0, o[1] = o1, o[2] = o2, o[3] = o3;
    }
    for (int i = 0; i < 4; i++) {
        dnnz_bit_reader r;
        if (pos[i] > (uint64_t)size * 8) {
            continue; /* already past the end: the caller sees the position */
        }
        /* tail of one stream: multi-symbol lookups while a whole entry surely fits (at most
         * 6 symbols), then the one-symbol decoder for the last few */
        if (multi && t->out_width == 1 && size >= 8) {
            const uint64_t plim = ((uint64_t)size - 8) * 8;
            uint64_t p = pos[i];
            uint8_t *oi = o[i], *const oend = out[i] + n[i];
            while (oend - oi >= 6 && p <= plim) {
                uint64_t a = dnnz_bit_load_be64(src + (p >> 3)) << (p & 7);
                uint64_t e = multi[a >> (64 - TB)];
                unsigned c = MULTI_COUNT(e);
                if (!c)
                    break;
                memcpy(oi, &e, c); /* the entry's first c bytes are its symbols */
                oi += c;
                p += MULTI_BITS(e);
            }
            pos[i] = p;
            o[i] = oi;
        }
        dnnz_bit_reader_init(&r, src, size, pos[i]);
        flags |= decode_u8(t, &r, o[i], (size_t)(out[i] + n[i] - o[i]));
        pos[i] = dnnz_bit_reader_tell(&r);
    }
    return flags;
}

/* Eight streams of one buffer, 1-byte outputs: with four streams the decoder waits on its
 * dependency chains (load 8 bytes -> lookup -> shift -> lookup ...); eight chains fill the
 * core. Needs a multi[] table where every entry holds a symbol (multi_full): the rounds that
 * surely stay in bounds (<= 24 symbols and <= 44 bits per stream and round) run with no test;
 * the bits a round took follow from a marker bit set below the loaded bits (its trailing-zero
 * count after the shifts), so the loop keeps no bit position. The rest (the last symbols of
 * each stream, tables with escapes) goes to dnnz_huf_decode4_u8_at_n, four streams at a time. */
#ifndef PREFETCH8
#define PREFETCH8(a) __builtin_prefetch(a)
#endif
/* nr untested rounds of the eight streams: each loads 8 bytes per stream and takes 4 multi[]
 * lookups (<= 24 symbols, <= 44 bits); the caller has checked that every round stays within the
 * source and every output's room. Positions and outputs live in locals: the symbol stores
 * (bytes) could alias pos[]. */
DNNZ_INLINE void huf_rounds8(const uint64_t *multi, const uint8_t *src, uint8_t *o[8], uint64_t pos[8], size_t nr)
{
    uint8_t *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3], *o4 = o[4], *o5 = o[5], *o6 = o[6], *o7 = o[7];
    uint64_t p0 = pos[0], p1 = pos[1], p2 = pos[2], p3 = pos[3], p4 = pos[4], p5 = pos[5], p6 = pos[6], p7 = pos[7];
    for (; nr; nr--) {
#define LOAD8(I)                                                                        \
    const unsigned s##I = (unsigned)(p##I & 7);                                         \
    PREFETCH8(src + (p##I >> 3) + 512);                                                 \
    uint64_t a##I = (dnnz_bit_load_be64(src + (p##I >> 3)) | 1) << s##I
        LOAD8(0); LOAD8(1); LOAD8(2); LOAD8(3); LOAD8(4); LOAD8(5); LOAD8(6); LOAD8(7);
#undef LOAD8
#define STEP8(A, O)                                      \
    do {                                                 \
        uint64_t e_ = multi[A >> (64 - TB)];             \
        memcpy(O, &e_, 8);                               \
        O += MULTI_COUNT(e_);                            \
        A <<= MULTI_BITS(e_);                            \
    } while (0)
        for (int k = 0; k < 4; k++) {
            STEP8(a0, o0); STEP8(a1, o1); STEP8(a2, o2); STEP8(a3, o3);
            STEP8(a4, o4); STEP8(a5, o5); STEP8(a6, o6); STEP8(a7, o7);
        }
#undef STEP8
        /* <= 44 bits were taken: the marker (bit s of the loaded word) is still in */
#define ADVANCE8(I) p##I += (uint64_t)__builtin_ctzll(a##I) - s##I
        ADVANCE8(0); ADVANCE8(1); ADVANCE8(2); ADVANCE8(3);
        ADVANCE8(4); ADVANCE8(5); ADVANCE8(6); ADVANCE8(7);
#undef ADVANCE8
    }
    o[0] = o0, o[1] = o1, o[2] = o2, o[3] = o3, o[4] = o4, o[5] = o5, o[6] = o6, o[7] = o7;
    pos[0] = p0, pos[1] = p1, pos[2] = p2, pos[3] = p3, pos[4] = p4, pos[5] = p5, pos[6] = p6, pos[7] = p7;
}

uint32_t dnnz_huf_decode8_u8_at(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[8],
                                uint8_t *const out[8], size_t n)
{
    const uint64_t *multi = t->multi;
    uint8_t *o[8];
    for (int i = 0; i < 8; i++)
        o[i] = out[i];
    if (multi && t->multi_full && t->out_width == 1 && n >= 32 && size >= 8) {
        const uint64_t plim = ((uint64_t)size - 8) * 8; /* a round may start at or below this bit */
        for (;;) {
            size_t nr = SIZE_MAX;
            for (int i = 0; i < 8; i++) {
                uint8_t *const e = out[i] + n - 32;
                size_t a = o[i] > e ? 0 : (size_t)(e - o[i]) / 24 + 1;
                size_t b = pos[i] > plim ? 0 : (size_t)((plim - pos[i]) / 44) + 1;
                a = a < b ? a : b;
                nr = a < nr ? a : nr;
            }
            if (nr == 0)
                break;
            huf_rounds8(multi, src, o, pos, nr);
        }
    }
    uint32_t flags = 0;
    for (int g = 0; g < 8; g += 4) {
        uint8_t *const og[4] = {o[g], o[g + 1], o[g + 2], o[g + 3]};
        const size_t ng[4] = {(size_t)(out[g] + n - o[g]), (size_t)(out[g + 1] + n - o[g + 1]),
                              (size_t)(out[g + 2] + n - o[g + 2]), (size_t)(out[g + 3] + n - o[g + 3])};
        flags |= dnnz_huf_decode4_u8_at_n(t, src, size, pos + g, og, ng);
    }
    return flags;
}

/* Eight streams, at least n[i] symbols each (sham's rows, whose lengths differ): the same
 * untested rounds as dnnz_huf_decode8_u8_at, run until every stream has its n[i] symbols, so a
 * stream that is done goes on decoding (whatever follows it in the buffer) while the others catch
 * up, into its buffer's room of cap bytes. A round runs only while every buffer has room for it
 * and every stream's load stays below src + size; what is then still missing goes to
 * dnnz_huf_decode4_u8_at_n exactly. pos[i] is exact on return only for a stream that got
 * exactly n[i] symbols: *got[i] (when got) receives the count decoded. */
uint32_t dnnz_huf_decode8_u8_atleast(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[8],
                                     uint8_t *const out[8], const size_t n[8], size_t cap, size_t got[8])
{
    const uint64_t *multi = t->multi;
    uint8_t *o[8];
    for (int i = 0; i < 8; i++)
        o[i] = out[i];
    if (multi && t->multi_full && t->out_width == 1 && size >= 8 && cap >= 64) {
        const uint64_t plim = ((uint64_t)size - 8) * 8; /* a round may start at or below this bit */
        for (;;) {
            size_t nr = SIZE_MAX, need = SIZE_MAX;
            for (int i = 0; i < 8; i++) {
                uint8_t *const e = out[i] + cap - 32; /* a round stores <= 32 bytes from o */
                size_t a = o[i] > e ? 0 : (size_t)(e - o[i]) / 24 + 1;
                size_t b = pos[i] > plim ? 0 : (size_t)((plim - pos[i]) / 44) + 1;
                a = a < b ? a : b;
                nr = a < nr ? a : nr;
                if (o[i] < out[i] + n[i]) {
                    size_t q = (size_t)(out[i] + n[i] - o[i] + 23) / 24; /* rounds it surely needs */
                    need = q < need ? q : need;
                }
            }
            if (need == SIZE_MAX || nr == 0)
                break;
            nr = need < nr ? need : nr;
            huf_rounds8(multi, src, o, pos, nr);
        }
    }
    uint32_t flags = 0;
    for (int g = 0; g < 8; g += 4) {
        size_t ng[4];
        uint8_t *og[4];
        int any = 0;
        for (int i = 0; i < 4; i++) {
            og[i] = o[g + i];
            ng[i] = o[g + i] < out[g + i] + n[g + i] ? (size_t)(out[g + i] + n[g + i] - o[g + i]) : 0;
            any |= ng[i] != 0;
        }
        if (any) {
            uint8_t *const oc[4] = {og[0], og[1], og[2], og[3]};
            flags |= dnnz_huf_decode4_u8_at_n(t, src, size, pos + g, oc, ng);
            for (int i = 0; i < 4; i++)
                o[g + i] += ng[i];
        }
    }
    if (got)
        for (int i = 0; i < 8; i++)
            got[i] = (size_t)(o[i] - out[i]);
    return flags;
}

/* Four streams of one buffer, 2- or 4-byte outputs (large alphabets): each symbol resolves in
 * the primary table or, for a code longer than DNNZ_HUF_TABLE_BITS, in its second-level table,
 * both looked up branch-free (the primary entry wins when it holds a length). The four streams'
 * dependency chains (load -> lookup -> shift) run interleaved, so the second-level lookup's
 * latency overlaps with the other streams' work. A round loads 8 bytes per stream at pos >> 3
 * (>= 57 valid bits after the shift) and decodes syms_per_refill symbols (<= 56 bits). */
#define DEFINE_DECODE4_WIDE(NAME, T)                                                              \
    static uint32_t NAME(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[4], \
                         T *const out[4], const size_t n[4])                                      \
    {                                                                                             \
        uint32_t flags = 0;                                                                       \
        T *o[4] = {out[0], out[1], out[2], out[3]};                                               \
        const uint32_t spr = t->syms_per_refill;                                                  \
        if ((t->sub || t->max_len <= TB) && spr >= 1 && spr <= 56 && size >= 8) {                 \
            const uint32_t *single = t->single;                                                   \
            const uint32_t *sub = t->sub ? t->sub : t->single;                                    \
            const uint32_t *sob = t->sub_off;                                                     \
            const int two = t->sub != NULL;                                                       \
            const uint32_t *wide = t->wide;                                                       \
            const unsigned wshift = 64 - t->wide_bits;                                            \
            const uint64_t plim = ((uint64_t)size - 8) * 8;                                       \
            uint64_t p0 = pos[0], p1 = pos[1], p2 = pos[2], p3 = pos[3];                          \
            T *o0 = o[0], *o1 = o[1], *o2 = o[2], *o3 = o[3];                                     \
            T *const e0 = out[0] + n[0], *const e1 = out[1] + n[1];                               \
            T *const e2 = out[2] + n[2], *const e3 = out[3] + n[3];                               \
            while ((size_t)(e0 - o0) >= spr && (size_t)(e1 - o1) >= spr &&                        \
                   (size_t)(e2 - o2) >= spr && (size_t)(e3 - o3) >= spr &&                        \
                   p0 <= plim && p1 <= plim && p2 <= plim && p3 <= plim) {                        \
                uint64_t a0 = dnnz_bit_load_be64(src + (p0 >> 3)) << (p0 & 7);                    \
                uint64_t a1 = dnnz_bit_load_be64(src + (p1 >> 3)) << (p1 & 7);                    \
                uint64_t a2 = dnnz_bit_load_be64(src + (p2 >> 3)) << (p2 & 7);                    \
                uint64_t a3 = dnnz_bit_load_be64(src + (p3 >> 3)) << (p3 & 7);                    \
                for (uint32_t s_ = 0; s_ < spr; s_++) {                                           \
                    WIDE_STEP(a0, p0, o0, T);                                                     \
                    WIDE_STEP(a1, p1, o1, T);                                                     \
                    WIDE_STEP(a2, p2, o2, T);                                                     \
                    WIDE_STEP(a3, p3, o3, T);                                                     \
                }                                                                                 \
            }                                                                                     \
            pos[0] = p0, pos[1] = p1, pos[2] = p2, pos[3] = p3;                                   \
            o[0] = o0, o[1] = o1, o[2] = o2, o[3] = o3;                                           \
        }                                                                                         \
        for (int i = 0; i < 4; i++) {                                                             \
            dnnz_bit_reader r;                                                                    \
            if (pos[i] > (uint64_t)size * 8)                                                      \
                continue; /* already past the end: the caller sees the position */                \
            dnnz_bit_reader_init(&r, src, size, pos[i]);                                          \
            flags |= dnnz_huf_decode_reader(t, &r, o[i], (size_t)(out[i] + n[i] - o[i]));         \
            pos[i] = dnnz_bit_reader_tell(&r);                                                    \
        }                                                                                         \
        return flags;                                                                             \
    }
/* One symbol of stream A (bit position P, output O): primary entry e1, second-level entry e2
 * (for a prefix without long codes sub_off is 0 bits and the read stays in the table: see
 * build_sub_tables' spare entry). */
#define WIDE_STEP(A, P, O, T)                                                                     \
    do {                                                                                          \
        uint32_t e_;                                                                              \
        if (wide) {                                                                               \
            e_ = wide[A >> wshift];                                                               \
            if (DNNZ_UNLIKELY(!(e_ & 63))) { /* longer than wide_bits: both levels */             \
                uint32_t q_ = (uint32_t)(A >> (64 - TB)), so_ = sob[q_];                          \
                e_ = sub[(so_ >> 5) + (uint32_t)(((A << TB) >> 1) >> (63 - (so_ & 31)))];         \
            }                                                                                     \
        } else {                                                                                  \
            WIDE_TWO_LEVEL(A);                                                                    \
        }                                                                                         \
        *O++ = (T)(e_ >> 8);                                                                      \
        flags |= e_;                                                                              \
        A <<= (e_ & 63);                                                                          \
        P += (e_ & 63);                                                                           \
    } while (0)
#define WIDE_TWO_LEVEL(A)                                                                         \
    do {                                                                                          \
        uint32_t p_ = (uint32_t)(A >> (64 - TB));                                                 \
        e_ = single[p_];                                                                          \
        if (two) {                                                                                \
            uint32_t so_ = sob[p_];                                                               \
            uint32_t e2_ = sub[(so_ >> 5) + (uint32_t)(((A << TB) >> 1) >> (63 - (so_ & 31)))];  \
            e_ = (e_ & 63) ? e_ : e2_;                                                            \
        }                                                                                         \
    } while (0)
DEFINE_DECODE4_WIDE(decode4_u16_at, uint16_t)
DEFINE_DECODE4_WIDE(decode4_u32_at, uint32_t)
#undef WIDE_STEP
#undef WIDE_TWO_LEVEL

uint32_t dnnz_huf_decode4_wide_at(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[4],
                                  void *const out[4], const size_t n[4])
{
    if (t->out_width == 2) {
        uint16_t *const o[4] = {out[0], out[1], out[2], out[3]};
        return decode4_u16_at(t, src, size, pos, o, n);
    }
    if (t->out_width == 4) {
        uint32_t *const o[4] = {out[0], out[1], out[2], out[3]};
        return decode4_u32_at(t, src, size, pos, o, n);
    }
    uint8_t *const o[4] = {out[0], out[1], out[2], out[3]};
    return dnnz_huf_decode4_u8_at_n(t, src, size, pos, o, n);
}

int dnnz_huf_decode(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t bit_start,
                    uint64_t bit_end, size_t n, void *out, uint64_t *bit_pos)
{
    dnnz_bit_reader r;
    if (bit_end > (uint64_t)size * 8 || bit_start > bit_end)
        return DNNZ_E_TRUNCATED;
    /* every code takes at least one bit: a stream too short for n codes is truncated, and saying
     * so before decoding bounds the work by the input size */
    if (n > bit_end - bit_start)
        return DNNZ_E_TRUNCATED;
    if (n == 0) {
        *bit_pos = bit_start;
        return DNNZ_OK;
    }
    DNNZ_CHECK(dnnz_bit_reader_init(&r, src, (size_t)dnnz_bit_bytes(bit_end), bit_start));
    uint32_t flags;
    switch (t->out_width) {
    case 1: flags = decode_u8(t, &r, out, n); break;
    case 2: flags = decode_u16(t, &r, out, n); break;
    default: flags = decode_u32(t, &r, out, n); break;
    }
    *bit_pos = dnnz_bit_reader_tell(&r);
    if (*bit_pos > bit_end)
        return DNNZ_E_TRUNCATED;
    if (flags & DNNZ_HUF_INVALID)
        return DNNZ_E_CORRUPT;
    return DNNZ_OK;
}

int dnnz_huf_decode_at(const uint8_t *lengths, size_t n_alphabet, const uint8_t *src, size_t size,
                       uint64_t bit_start, uint64_t bit_end, size_t n, void *out, uint64_t *bit_pos)
{
    dnnz_huf_dtable t;
    DNNZ_CHECK(dnnz_huf_dtable_init(&t, lengths, n_alphabet));
    int status = dnnz_huf_decode(&t, src, size, bit_start, bit_end, n, out, bit_pos);
    dnnz_huf_dtable_free(&t);
    return status;
}

int dnnz_huf_decode_stream(const uint8_t *lengths, size_t n_alphabet, const uint8_t *src,
                           size_t size, size_t n, void *out)
{
    dnnz_huf_dtable t;
    uint64_t pos = 0;
    DNNZ_CHECK(dnnz_huf_dtable_init(&t, lengths, n_alphabet));
    int status = dnnz_huf_decode(&t, src, size, 0, (uint64_t)size * 8, n, out, &pos);
    dnnz_huf_dtable_free(&t);
    if (status != DNNZ_OK)
        return status;
    if (dnnz_bit_bytes(pos) != size)
        return DNNZ_E_TRAILING;
    if ((pos & 7) && (src[size - 1] & (0xFFu >> (pos & 7))))
        return DNNZ_E_TRAILING;
    return DNNZ_OK;
}
