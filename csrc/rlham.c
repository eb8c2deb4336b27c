/* rlham.c: the `rlham` encoding (see rlham.h).
 *
 * Every kernel walks a row the same way (rl_chunk): refill, decode one joint symbol with the
 * shared table decoder (dnnz_huf_decode_symbol), map it to (run class, value index) through a
 * per-call table, read the class's extra bits, and emit (column, weight) pairs into a small
 * L1 chunk. The walk itself checks that no run passes the row end, so even a stream that was
 * not validated cannot make it write outside a row; validation adds the end-of-row and
 * exact-end checks.
 *
 * matmul: a task is a block of DNNZ_HAM_TASK_ROWS output rows, each summed by one task in a
 * fixed order (results do not depend on the thread count). Batch < 4: each chunk of pairs is a
 * gather dot product per batch row (dnnz_ham_gather_dot: vgatherdps on AVX2/AVX-512). Batch >=
 * 4: x is transposed once into xt (cols, bp) with the batch padded to 16 lanes, so a stored
 * entry is one broadcast multiply-add over contiguous lanes; lanes go in tiles of 64 held in
 * registers while a chunk of pairs streams past.
 */
#include "rlham.h"

#include "kern.h"

#include <stdlib.h>
#include <string.h>


#define KC DNNZ_HAM_KC
#define TR DNNZ_HAM_TASK_ROWS
#define RD dnnz_rd_le
#define LANES 16   /* batch padding of the transposed x */
#define TILE 64    /* batch lanes per register tile */
#define RS (KC + 4) /* row stride of rl_chunk4's pair buffers: a multi-pair step may pass KC */
#define MAX_EXTRA 30 /* extra bits of the largest bucket: runs stay below 2^31 */

/* ------------------------------------------------------------------------------------------ */
/* the code: decode table + symbol map                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Symbol map entry: everything a symbol means in one load (it sits on the bit reader's
 * dependency chain): bits 0..20 the value index, 21..52 the smallest run of its class, 55 the
 * end-of-row flag, 56..61 the number of extra bits. */
#define MAP_V(e) ((uint32_t)(e) & 0x1FFFFFu)
#define MAP_BASE(e) ((uint32_t)((e) >> 21))
#define MAP_EOR ((uint64_t)1 << 55)
#define MAP_EXTRA(e) ((unsigned)((e) >> 56))

/* Fast table entry, indexed by the next DNNZ_HUF_TABLE_BITS bits of a row: the code that
 * prefix starts with, resolved down to what the walk needs in one load (the code length folded
 * in takes the Huffman table and the symbol map off the dependency chain): bits 0..20 the value
 * index, 21..52 the smallest run of the class, 53..57 the extra bits, 58..61 the code length
 * (0: a code longer than the table, or a prefix no code starts with: take the exact path),
 * 62 end of row. */
#define FAST_LEN(f) ((unsigned)((f) >> 58) & 15u)
#define FAST_EXTRA(f) ((unsigned)((f) >> 53) & 31u)
#define FAST_EOR ((uint64_t)1 << 62)

/* Step entry, indexed by the same prefix: everything one step of rl_chunk4 needs, so that the
 * common step is one load and no data-dependent branch. The pairs of as many whole codes as fit
 * in the prefix (at most 3; runs and value indices below 256; no end of row; only a lone code may
 * have extra bits): bits 0..23 the runs of pairs 0..2 (a byte each; the run of a code with extra
 * bits is its class's smallest run), 24..47 their value indices, 48..49 the count (0: take the
 * fast path), 50..54 the extra bits after the codes (count 1 only), 55..59 the code bits. With
 * bit 63 set (count 0) the prefix starts only codes longer than the table: bits 0..31 are the
 * offset of its second-level table in `sub`, bits 32..36 that table's index bits (the bits after
 * the prefix); second-level entries have the same layout, one pair each (or count 0). */
#define MULTI_MAX 3
#define STEP_CNT(e) ((unsigned)((e) >> 48) & 3u)
#define STEP_EXTRA(e) ((unsigned)((e) >> 50) & 31u)
#define STEP_BITS(e) ((unsigned)((e) >> 55) & 31u)
#define STEP_SUB ((uint64_t)1 << 63)
#define SUB_MAX_BITS 8 /* second-level index bits: codes up to DNNZ_HUF_TABLE_BITS + 8 bits */

struct rl_code {
    dnnz_huf_dtable t;
    uint64_t *map;      /* symbol -> MAP_* entry */
    uint64_t *fast;     /* prefix -> FAST_* entry (1 << DNNZ_HUF_TABLE_BITS entries) */
    uint64_t *multi;    /* prefix -> step entry, or NULL (k > 256) */
    uint64_t *sub;      /* second-level step entries (NULL: none) */
    int refill2;        /* a code and its extra bits may need more than one refill's 56 bits */
};

static void rl_code_free(struct rl_code *c)
{
    dnnz_huf_dtable_free(&c->t);
    free(c->map);
    free(c->fast);
    free(c->multi);
    free(c->sub);
    c->sub = NULL;
    c->map = NULL;
    c->fast = NULL;
    c->multi = NULL;
}

/* Run class c: the smallest run it codes and its number of extra bits (spec: rlham, run classes).
 * direct_runs (D) may be large (up to the alphabet limit), so nothing here is sized by the class
 * count. */
static uint32_t rl_class_base(int64_t d, int64_t c)
{
    return c < d ? (uint32_t)c : (uint32_t)(d - 1) + (1u << (c - d));
}

static unsigned rl_class_extra(int64_t d, int64_t c)
{
    return c < d ? 0u : (unsigned)(c - d);
}

/* Second-level step tables for the prefixes that only start codes longer than the table (a
 * large alphabet: rlham's joint symbols at high sparsity have codes of 12-20 bits): one load more
 * instead of the exact decoder. Codes longer than DNNZ_HUF_TABLE_BITS + SUB_MAX_BITS, and pairs
 * the entry cannot hold, keep count 0 (the exact path). Memory: at most 2^SUB_MAX_BITS entries
 * per prefix, and only prefixes some code starts with. */
static int rl_sub_init(struct rl_code *c, const struct dnnz_rlham *m)
{
    const unsigned tb = DNNZ_HUF_TABLE_BITS;
    const size_t np = (size_t)1 << tb, n = (size_t)(m->run_classes * m->k + 1);
    if (c->t.max_len <= tb)
        return DNNZ_OK;
    dnnz_huf_ctable ct;
    DNNZ_CHECK(dnnz_huf_ctable_init(&ct, m->lengths, n));
    uint8_t *sb = calloc(np, 1); /* per prefix: longest code it starts, minus tb, capped */
    if (!sb) {
        dnnz_huf_ctable_free(&ct);
        return DNNZ_E_ALLOC;
    }
    for (size_t s = 0; s < n; s++) {
        unsigned l = (unsigned)(ct.entry[s] & 0xff);
        if (l > tb) {
            size_t pre = (size_t)((ct.entry[s] >> 8) >> (l - tb));
            unsigned x = l - tb < SUB_MAX_BITS ? l - tb : SUB_MAX_BITS;
            sb[pre] = sb[pre] > x ? sb[pre] : (uint8_t)x;
        }
    }
    size_t total = 0;
    for (size_t p = 0; p < np; p++)
        if (sb[p] && c->multi[p] == 0) {
            c->multi[p] = STEP_SUB | (uint64_t)sb[p] << 32 | (uint64_t)total;
            total += (size_t)1 << sb[p];
        }
    int st = DNNZ_OK;
    if (total) {
        c->sub = calloc(total, sizeof *c->sub);
        if (!c->sub)
            st = DNNZ_E_ALLOC;
    }
    for (size_t s = 0; s < n && c->sub; s++) {
        unsigned l = (unsigned)(ct.entry[s] & 0xff);
        uint64_t code = ct.entry[s] >> 8, me = c->map[s];
        if (l <= tb || (me & MAP_EOR) || MAP_BASE(me) > 255 || MAP_V(me) > 255)
            continue;
        uint64_t h = c->multi[code >> (l - tb)];
        unsigned b = (unsigned)(h >> 32) & 31u;
        if (!(h & STEP_SUB) || l - tb > b)
            continue; /* longer than the second level: the exact path */
        uint64_t e = (uint64_t)MAP_BASE(me) | (uint64_t)MAP_V(me) << 24 | (uint64_t)1 << 48 |
                     (uint64_t)MAP_EXTRA(me) << 50 | (uint64_t)l << 55;
        uint64_t lo = (code & (((uint64_t)1 << (l - tb)) - 1)) << (b - (l - tb));
        uint64_t *t = c->sub + (uint32_t)h;
        for (uint64_t j = 0; j < ((uint64_t)1 << (b - (l - tb))); j++)
            t[lo + j] = e;
    }
    free(sb);
    dnnz_huf_ctable_free(&ct);
    if (st != DNNZ_OK)
        rl_code_free(c);
    return st;
}

/* Params already checked (k <= 2^20, 1 <= D <= C <= D + 31, C * k + 1 <= DNNZ_HUF_MAX_SYMBOLS). */
static int rl_code_init(struct rl_code *c, const struct dnnz_rlham *m)
{
    memset(c, 0, sizeof *c);
    size_t n = (size_t)(m->run_classes * m->k + 1);
    DNNZ_CHECK(dnnz_huf_dtable_init(&c->t, m->lengths, n));
    c->map = malloc(n * sizeof *c->map);
    c->fast = malloc(((size_t)1 << DNNZ_HUF_TABLE_BITS) * sizeof *c->fast);
    if (!c->map || !c->fast) {
        rl_code_free(c);
        return DNNZ_E_ALLOC;
    }
    for (int64_t cl = 0, s = 0; cl < m->run_classes; cl++) {
        uint64_t head = (uint64_t)rl_class_extra(m->direct_runs, cl) << 56 |
                        (uint64_t)rl_class_base(m->direct_runs, cl) << 21;
        for (int64_t v = 0; v < m->k; v++, s++)
            c->map[s] = head | (uint64_t)v;
    }
    c->map[n - 1] = MAP_EOR;
    c->refill2 = c->t.max_len + rl_class_extra(m->direct_runs, m->run_classes - 1) > 56;
    _Static_assert(DNNZ_HUF_TABLE_BITS <= 15 && MAX_EXTRA <= 31 && DNNZ_HUF_TABLE_BITS + MAX_EXTRA <= 56,
                   "fast entry fields, and a code with its extra bits fits one refill");
    for (size_t p = 0; p < ((size_t)1 << DNNZ_HUF_TABLE_BITS); p++) {
        uint32_t e = c->t.single[p];
        unsigned len = e & 63;
        if (len == 0 || (e & DNNZ_HUF_INVALID)) {
            c->fast[p] = 0;
            continue;
        }
        uint64_t me = c->map[e >> 8];
        c->fast[p] = (uint64_t)len << 58 |
                     ((me & MAP_EOR) ? FAST_EOR : ((uint64_t)MAP_EXTRA(me) << 53 | (me & (((uint64_t)1 << 53) - 1))));
    }
    if (m->k > 256)
        return DNNZ_OK;
    c->multi = malloc(((size_t)1 << DNNZ_HUF_TABLE_BITS) * sizeof *c->multi);
    if (!c->multi) {
        rl_code_free(c);
        return DNNZ_E_ALLOC;
    }
    const unsigned tb = DNNZ_HUF_TABLE_BITS, tmask = (1u << tb) - 1;
    for (uint32_t p = 0; p <= tmask; p++) {
        uint64_t e = 0;
        unsigned used = 0, cnt = 0, nb = 0;
        while (cnt < MULTI_MAX && nb == 0) {
            uint64_t f = c->fast[(p << used) & tmask];
            unsigned len = FAST_LEN(f);
            if (len == 0 || used + len > tb || (f & FAST_EOR) || MAP_BASE(f) > 255 || MAP_V(f) > 255 ||
                (FAST_EXTRA(f) && cnt))
                break;
            e |= (uint64_t)MAP_BASE(f) << (8 * cnt) | (uint64_t)MAP_V(f) << (8 * (3 + cnt));
            nb = FAST_EXTRA(f);
            used += len;
            cnt++;
        }
        c->multi[p] = cnt ? e | (uint64_t)cnt << 48 | (uint64_t)nb << 50 | (uint64_t)used << 55 : 0;
    }
    return rl_sub_init(c, m);
}

/* A row being walked. */
struct rl_row {
    dnnz_bit_reader r;
    uint64_t pos;    /* next column */
    uint32_t flags;  /* OR of decode flags: DNNZ_HUF_INVALID = a code that decodes to nothing */
    int state;       /* 0 going, 1 end-of-row read, -1 a run passed the row end */
};

/* rl_pair for a code longer than the fast table (or a prefix no code starts with). */
static int rl_pair_exact(const struct rl_code *c, const float *cb, uint64_t cols, struct rl_row *s, uint32_t *col,
                         float *w)
{
    dnnz_bit_reader *r = &s->r;
    uint64_t e = c->map[dnnz_huf_decode_symbol(&c->t, r, &s->flags)];
    if (e & MAP_EOR) {
        s->state = 1;
        return 0;
    }
    unsigned nb = MAP_EXTRA(e);
    if (DNNZ_UNLIKELY(c->refill2) && r->avail < nb)
        dnnz_bit_refill(r);
    /* branch-free extra bits (whether a run has them is data, not a predictable pattern):
     * (acc >> 1) >> (63 - nb) is the top nb bits, and 0 for nb = 0 */
    uint64_t p = s->pos + MAP_BASE(e) + ((r->acc >> 1) >> (63 - nb));
    dnnz_bit_skip(r, nb);
    if (DNNZ_UNLIKELY(p >= cols)) {
        s->state = -1;
        return 0;
    }
    *col = (uint32_t)p;
    *w = cb[MAP_V(e)];
    s->pos = p + 1;
    return 1;
}

/* One pair of row s into *col / *w (w = codebook value); 0 when the row ended (state set). */
DNNZ_INLINE int rl_pair(const struct rl_code *c, const float *cb, uint64_t cols, struct rl_row *s, uint32_t *col,
                        float *w)
{
    dnnz_bit_reader *r = &s->r;
    dnnz_bit_refill(r);
    uint64_t f = c->fast[r->acc >> (64 - DNNZ_HUF_TABLE_BITS)];
    unsigned len = FAST_LEN(f);
    if (DNNZ_UNLIKELY(len == 0))
        return rl_pair_exact(c, cb, cols, s, col, w);
    if (DNNZ_UNLIKELY(f & FAST_EOR)) {
        dnnz_bit_skip(r, len);
        s->state = 1;
        return 0;
    }
    /* code and extra bits (<= 11 + 30) are within the >= 56 refilled bits; branch-free extra
     * bits: (a >> 1) >> (63 - nb) is the top nb bits of a, and 0 for nb = 0 */
    unsigned nb = FAST_EXTRA(f);
    uint64_t p = s->pos + MAP_BASE(f) + (((r->acc << len) >> 1) >> (63 - nb));
    dnnz_bit_skip(r, len + nb);
    if (DNNZ_UNLIKELY(p >= cols)) {
        s->state = -1;
        return 0;
    }
    *col = (uint32_t)p;
    *w = cb[MAP_V(f)];
    s->pos = p + 1;
    return 1;
}

/* Up to KC pairs of row s into col[] / w[]; returns how many. */
static int rl_chunk(const struct rl_code *c, const float *cb, uint64_t cols, struct rl_row *s, uint32_t *col, float *w)
{
    int n = 0;
    while (n < KC && rl_pair(c, cb, cols, s, col + n, w + n))
        n++;
    return n;
}

/* Four rows at once, round robin (four independent dependency chains for the out-of-order core
 * to overlap): pairs of row i go to col[i * RS ..] / w[i * RS ..], n[i] of them (at most
 * KC + MULTI_MAX - 1). Returns when a row's buffer is full or every row has ended. The rows'
 * readers all read src[0..size).
 *
 * The common pair takes the fast path: a row's whole state is its bit position and next column
 * (locals, in registers), one unaligned 8-byte load at the position gives >= 57 bits, one fast
 * table load resolves the code and its class, and the extra bits come from the same register.
 * Everything else (a code longer than the table, end of row, a run past the row end, a prefix no
 * code starts with, the last 8 bytes of src) goes through rl_pair on the row's reader, exactly as
 * the one-row walk does; results are the same pair for pair. */
static void rl_chunk4(const struct rl_code *c, const float *cb, uint64_t cols, const uint8_t *src, size_t size,
                      struct rl_row s[4], uint32_t *col, float *w, int n[4])
{
    const uint64_t *const fast = c->fast;
    const uint64_t plim = size >= 8 ? ((uint64_t)size - 8) * 8 : 0;
    const int can = size >= 8;
    uint64_t p0 = dnnz_bit_reader_tell(&s[0].r), p1 = dnnz_bit_reader_tell(&s[1].r);
    uint64_t p2 = dnnz_bit_reader_tell(&s[2].r), p3 = dnnz_bit_reader_tell(&s[3].r);
    uint64_t c0 = s[0].pos, c1 = s[1].pos, c2 = s[2].pos, c3 = s[3].pos;
    int g0 = s[0].state == 0, g1 = s[1].state == 0, g2 = s[2].state == 0, g3 = s[3].state == 0;
    int n0 = 0, n1 = 0, n2 = 0, n3 = 0;
    const uint64_t *const multi = c->multi, *const sub = c->sub;
#define RL_STEP(I)                                                                                 \
    if (g##I) {                                                                                    \
        if (DNNZ_LIKELY(can && p##I <= plim)) {                                                    \
            uint64_t a_ = dnnz_bit_load_be64(src + (p##I >> 3)) << (p##I & 7);                     \
            if (multi) {                                                                           \
                uint64_t e_ = multi[a_ >> (64 - DNNZ_HUF_TABLE_BITS)];                             \
                if (DNNZ_UNLIKELY(e_ & STEP_SUB))                                                  \
                    e_ = sub[(uint32_t)e_ + ((a_ << DNNZ_HUF_TABLE_BITS) >> (64 - ((e_ >> 32) & 31)))]; \
                unsigned k_ = STEP_CNT(e_), cb_ = STEP_BITS(e_), nb_ = STEP_EXTRA(e_);             \
                uint64_t q0_ = c##I + (e_ & 0xff) + (((a_ << cb_) >> 1) >> (63 - nb_));            \
                uint64_t d1_ = 1 + ((e_ >> 8) & 0xff), d2_ = 1 + ((e_ >> 16) & 0xff);              \
                uint64_t q1_ = q0_ + d1_, q2_ = q1_ + d2_;                                         \
                /* the last pair's column without a branch on the count (it is data) */            \
                uint64_t ql_ = q0_ + (d1_ & (0 - (uint64_t)(k_ >= 2))) + (d2_ & (0 - (uint64_t)(k_ >= 3))); \
                if (DNNZ_LIKELY(k_ != 0 && ql_ < cols)) {                                          \
                    uint32_t *co_ = col + I * RS + n##I;                                           \
                    float *wo_ = w + I * RS + n##I;                                                \
                    co_[0] = (uint32_t)q0_, co_[1] = (uint32_t)q1_, co_[2] = (uint32_t)q2_;        \
                    wo_[0] = cb[(e_ >> 24) & 0xff], wo_[1] = cb[(e_ >> 32) & 0xff];                \
                    wo_[2] = cb[(e_ >> 40) & 0xff];                                                \
                    n##I += (int)k_;                                                               \
                    c##I = ql_ + 1;                                                                \
                    p##I += cb_ + nb_;                                                             \
                    goto done##I;                                                                  \
                }                                                                                  \
            }                                                                                      \
            uint64_t f_ = fast[a_ >> (64 - DNNZ_HUF_TABLE_BITS)];                                  \
            unsigned len_ = FAST_LEN(f_), nb_ = FAST_EXTRA(f_);                                    \
            uint64_t q_ = c##I + MAP_BASE(f_) + (((a_ << len_) >> 1) >> (63 - nb_));               \
            if (DNNZ_LIKELY(len_ != 0 && !(f_ & FAST_EOR) && q_ < cols)) {                         \
                col[I * RS + n##I] = (uint32_t)q_;                                                 \
                w[I * RS + n##I] = cb[MAP_V(f_)];                                                  \
                n##I++;                                                                            \
                c##I = q_ + 1;                                                                     \
                p##I += len_ + nb_;                                                                \
                goto done##I;                                                                      \
            }                                                                                      \
        }                                                                                          \
        dnnz_bit_reader_init(&s[I].r, src, size, p##I);                                            \
        s[I].pos = c##I;                                                                           \
        n##I += rl_pair(c, cb, cols, &s[I], col + I * RS + n##I, w + I * RS + n##I);                \
        p##I = dnnz_bit_reader_tell(&s[I].r);                                                      \
        c##I = s[I].pos;                                                                           \
        g##I = s[I].state == 0;                                                                    \
    }                                                                                              \
    done##I:
    while ((g0 | g1 | g2 | g3) && (n0 | n1 | n2 | n3) < KC) {
        RL_STEP(0)
        RL_STEP(1)
        RL_STEP(2)
        RL_STEP(3)
        ;
    }
#undef RL_STEP
    const uint64_t pe[4] = {p0, p1, p2, p3}, ce[4] = {c0, c1, c2, c3};
    for (int i = 0; i < 4; i++) {
        if (s[i].state == 0) { /* ended rows keep their reader where rl_pair left it */
            dnnz_bit_reader_init(&s[i].r, src, size, pe[i]);
            s[i].pos = ce[i];
        }
    }
    n[0] = n0, n[1] = n1, n[2] = n2, n[3] = n3;
}

/* ------------------------------------------------------------------------------------------ */
/* encode                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static int rl_class_of(uint64_t run, int32_t d, unsigned *extra_bits, uint32_t *extra)
{
    if (run < (uint64_t)d) {
        *extra_bits = 0;
        *extra = 0;
        return (int)run;
    }
    uint64_t t = run - (uint64_t)d + 1; /* >= 1 */
    unsigned j = 63u - (unsigned)__builtin_clzll(t);
    *extra_bits = j;
    *extra = (uint32_t)(t - ((uint64_t)1 << j));
    return d + (int)j;
}

int dnnz_rlham_encode(const uint8_t *lengths, int64_t k, int32_t direct_runs, int32_t run_classes,
                      const int64_t *rowptr, const uint32_t *colidx, const uint32_t *vindex,
                      int64_t rows, int64_t cols, uint8_t *offsets, int32_t off_bytes,
                      uint8_t *payload, int64_t payload_cap)
{
    if (rows < 0 || cols < 0 || k < 0 || payload_cap < 0 || off_bytes < 1 || off_bytes > 8 ||
        direct_runs < 1 || run_classes < direct_runs || run_classes - direct_runs > MAX_EXTRA + 1 ||
        run_classes * k + 1 > DNNZ_HUF_MAX_SYMBOLS)
        return DNNZ_E_ARGUMENT;
    if (rows == 0) {
        dnnz_wr_le(offsets, off_bytes, 0, 0);
        return DNNZ_OK;
    }
    const uint32_t eob = (uint32_t)(run_classes * k);
    const uint64_t lim = off_bytes == 8 ? UINT64_MAX : ((uint64_t)1 << (8 * off_bytes)) - 1;
    dnnz_huf_ctable ct;
    dnnz_bit_writer w;
    DNNZ_CHECK(dnnz_huf_ctable_init(&ct, lengths, (size_t)eob + 1));
    int st = dnnz_bit_writer_init(&w, payload, (size_t)payload_cap, 0);
    for (int64_t r = 0; r < rows && st == DNNZ_OK; r++) {
        uint64_t at = dnnz_bit_writer_tell(&w);
        if (at > lim) {
            st = DNNZ_E_LIMIT;
            break;
        }
        dnnz_wr_le(offsets, off_bytes, r, at);
        int64_t p0 = rowptr[r], p1 = rowptr[r + 1];
        if (p0 < 0 || p1 < p0 || p1 - p0 > cols) {
            st = DNNZ_E_ARGUMENT;
            break;
        }
        int64_t next = 0;
        for (int64_t p = p0; p <= p1; p++) {
            uint32_t sym;
            unsigned nb = 0;
            uint32_t ex = 0;
            if (p < p1) {
                if ((int64_t)colidx[p] < next || (int64_t)colidx[p] >= cols || (int64_t)vindex[p] >= k) {
                    st = DNNZ_E_ARGUMENT;
                    break;
                }
                int cl = rl_class_of((uint64_t)colidx[p] - (uint64_t)next, direct_runs, &nb, &ex);
                if (cl >= run_classes) {
                    st = DNNZ_E_ARGUMENT;
                    break;
                }
                sym = (uint32_t)cl * (uint32_t)k + vindex[p];
                next = (int64_t)colidx[p] + 1;
            } else {
                sym = eob;
            }
            uint64_t e = ct.entry[sym];
            if (!(e & 0xFF)) {
                st = DNNZ_E_ARGUMENT;
                break;
            }
            dnnz_bit_add(&w, e >> 8, (unsigned)(e & 0xFF));
            dnnz_bit_flush(&w);
            if (nb) {
                dnnz_bit_add(&w, ex, nb);
                dnnz_bit_flush(&w);
            }
            if (w.overflow) {
                st = DNNZ_E_DST_TOO_SMALL;
                break;
            }
        }
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

/* ------------------------------------------------------------------------------------------ */
/* validate                                                                                    */
/* ------------------------------------------------------------------------------------------ */

struct check_ctx {
    const struct dnnz_rlham *m;
    const struct rl_code *c;
    int32_t *status; /* per task */
    int64_t *where;  /* per task: first bad row */
};

static void check_task(void *vc, int64_t task, int worker)
{
    struct check_ctx *x = vc;
    const struct dnnz_rlham *m = x->m;
    uint32_t col; /* the pair itself is not needed, only its checks */
    float w;
    (void)worker;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    x->status[task] = DNNZ_OK;
    for (int64_t r = r0; r < r1; r++) {
        uint64_t start = RD(m->offsets, m->off_bytes, r), end = RD(m->offsets, m->off_bytes, r + 1);
        struct rl_row s = {.pos = 0, .flags = 0, .state = 0};
        /* the reader stops at the row's last byte: a row never reads its neighbour's bits */
        dnnz_bit_reader_init(&s.r, m->payload, (size_t)dnnz_bit_bytes(end), start);
        /* Stop at the row's end: past it the reader feeds zero bits, which may decode as valid
         * symbols, so a walk driven by the column count alone would cost up to `cols` steps
         * whatever the payload (2^31 for a 1-byte row). Every symbol consumes >= 1 bit, so a row
         * costs at most (its bits + 1) pairs and the whole check O(payload bits + rows). */
        while (s.state == 0 && rl_pair(x->c, m->codebook, (uint64_t)m->cols, &s, &col, &w))
            if (dnnz_bit_reader_tell(&s.r) > end || (s.flags & DNNZ_HUF_INVALID))
                break;
        if (s.state != 1 || (s.flags & DNNZ_HUF_INVALID) || dnnz_bit_reader_tell(&s.r) != end) {
            x->status[task] = DNNZ_E_CORRUPT;
            x->where[task] = r;
            return;
        }
    }
}

int dnnz_rlham_validate(const struct dnnz_rlham *m, struct dnnz_enc_err *err)
{
    if (!m)
        return DNNZ_E_ARGUMENT;
    if (m->rows < 0 || m->cols < 0 || m->k < 0)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if (m->rows > DNNZ_ENC_MAX_DIM || m->cols > DNNZ_ENC_MAX_DIM || m->k > DNNZ_HUF_MAX_SYMBOLS)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    if (m->off_bytes < 1 || m->off_bytes > 8 || m->direct_runs < 1 || m->run_classes < m->direct_runs ||
        m->run_classes - m->direct_runs > MAX_EXTRA + 1)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_CORRUPT);
    if ((int64_t)m->run_classes * m->k + 1 > DNNZ_HUF_MAX_SYMBOLS)
        return dnnz_fail(err, DNNZ_FIELD_PARAMS, -1, DNNZ_E_LIMIT);
    const int64_t n_alpha = (int64_t)m->run_classes * m->k + 1;
    if (m->codebook_len != m->k || (m->k && !m->codebook))
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, -1, m->codebook_len < m->k ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    int64_t bad = dnnz_find_bad_value(m->codebook, m->k, 1); /* NaN, or +0.0 (zeros are the runs) */
    if (bad >= 0)
        return dnnz_fail(err, DNNZ_FIELD_CODEBOOK, bad, DNNZ_E_CORRUPT);
    if (m->lengths_len != n_alpha || !m->lengths)
        return dnnz_fail(err, DNNZ_FIELD_LENGTHS, -1, m->lengths_len < n_alpha ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    uint32_t n_used = 0;
    int st = dnnz_huf_check_lengths(m->lengths, (size_t)n_alpha, &n_used, NULL);
    if (st != DNNZ_OK)
        return dnnz_fail(err, DNNZ_FIELD_LENGTHS, -1, st);
    if (m->rows > 0 && m->lengths[n_alpha - 1] == 0) /* every row ends with the end-of-row code */
        return dnnz_fail(err, DNNZ_FIELD_LENGTHS, n_alpha - 1, DNNZ_E_CORRUPT);
    const int64_t off_len = (m->rows + 1) * m->off_bytes;
    if (m->offsets_len != off_len || !m->offsets)
        return dnnz_fail(err, DNNZ_FIELD_OFFSETS, -1, m->offsets_len < off_len ? DNNZ_E_TRUNCATED : DNNZ_E_TRAILING);
    if (m->payload_len < 0 || (m->payload_len && !m->payload))
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_CORRUPT);
    if (RD(m->offsets, m->off_bytes, 0) != 0)
        return dnnz_fail(err, DNNZ_FIELD_OFFSETS, 0, DNNZ_E_CORRUPT);
    for (int64_t r = 0; r < m->rows; r++) /* each row holds at least its end-of-row code */
        if (RD(m->offsets, m->off_bytes, r + 1) <= RD(m->offsets, m->off_bytes, r))
            return dnnz_fail(err, DNNZ_FIELD_OFFSETS, r + 1, DNNZ_E_CORRUPT);
    uint64_t end = RD(m->offsets, m->off_bytes, m->rows);
    if (end > (uint64_t)m->payload_len * 8)
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRUNCATED);
    if (dnnz_bit_bytes(end) != (uint64_t)m->payload_len)
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRAILING);
    if ((end & 7) && (m->payload[m->payload_len - 1] & (0xFFu >> (end & 7))))
        return dnnz_fail(err, DNNZ_FIELD_PAYLOAD, -1, DNNZ_E_TRAILING);
    if (m->rows == 0)
        return DNNZ_OK;

    struct rl_code c;
    DNNZ_CHECK(rl_code_init(&c, m));
    int64_t n_tasks = (m->rows + TR - 1) / TR;
    int32_t *status = malloc((size_t)n_tasks * sizeof *status);
    int64_t *where = malloc((size_t)n_tasks * sizeof *where);
    if (!status || !where) {
        st = DNNZ_E_ALLOC;
    } else {
        struct check_ctx x = {m, &c, status, where};
        dnnz_cpu_parallel(n_tasks, check_task, &x);
        for (int64_t i = 0; i < n_tasks; i++)
            if (status[i] != DNNZ_OK) {
                st = dnnz_fail(err, DNNZ_FIELD_PAYLOAD, where[i], status[i]);
                break;
            }
    }
    free(status);
    free(where);
    rl_code_free(&c);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* decode and matmul                                                                           */
/* ------------------------------------------------------------------------------------------ */

#define GATHER_MAX_BATCH 3 /* batches up to this use gathers from x; above, the transposed x */

struct rl_ctx {
    const struct dnnz_rlham *m;
    const struct rl_code *c;
    const float *x;   /* (batch, cols) */
    const float *xt;  /* (cols, bp), batch > GATHER_MAX_BATCH */
    int64_t batch, bp;
    float *y;         /* matmul: (batch, rows); decode: (rows, cols) */
    float *acc;       /* per task: 4 rows x bp floats */
    int path;
};

static void rl_row_start(const struct dnnz_rlham *m, int64_t r, struct rl_row *s)
{
    s->pos = 0;
    s->flags = 0;
    s->state = 0;
    dnnz_bit_reader_init(&s->r, m->payload, (size_t)m->payload_len, RD(m->offsets, m->off_bytes, r));
}

static void rl_matmul_task(void *vc, int64_t task, int worker)
{
    const struct rl_ctx *x = vc;
    const struct dnnz_rlham *m = x->m;
    uint32_t col[4 * RS] __attribute__((aligned(64)));
    float w[4 * RS] __attribute__((aligned(64)));
    const int64_t batch = x->batch, bp = x->bp;
    (void)worker;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = r1 - r < 4 ? (int)(r1 - r) : 4, n[4];
        struct rl_row s[4];
        for (int i = 0; i < 4; i++) {
            if (i < nr) {
                rl_row_start(m, r + i, &s[i]);
            } else {
                memset(&s[i], 0, sizeof s[i]);
                s[i].state = 1; /* missing rows of the last group: already ended */
            }
        }
        if (batch <= GATHER_MAX_BATCH) {
            float sum[4][GATHER_MAX_BATCH] = {{0}};
            do {
                rl_chunk4(x->c, m->codebook, (uint64_t)m->cols, m->payload, (size_t)m->payload_len, s, col, w, n);
                for (int i = 0; i < nr; i++)
                    for (int64_t b = 0; b < batch; b++)
                        sum[i][b] += dnnz_kern_gather_dot(x->path, w + i * RS, col + i * RS, 4,
                                                         n[i], x->x + b * m->cols);
            } while (!(s[0].state && s[1].state && s[2].state && s[3].state));
            for (int i = 0; i < nr; i++)
                for (int64_t b = 0; b < batch; b++)
                    x->y[b * m->rows + r + i] = sum[i][b];
        } else {
            float *acc = x->acc + (size_t)(task * 4) * (size_t)bp;
            memset(acc, 0, (size_t)(4 * bp) * sizeof *acc);
            do {
                rl_chunk4(x->c, m->codebook, (uint64_t)m->cols, m->payload, (size_t)m->payload_len, s, col, w, n);
                for (int i = 0; i < nr; i++) {
                    if (!n[i])
                        continue;
                    for (int64_t b0 = 0; b0 < bp; b0 += TILE) {
                        int tw = bp - b0 < TILE ? (int)(bp - b0) : TILE;
                        dnnz_kern_lanes(x->path, w + i * RS, col + i * RS, 4, n[i], x->xt + b0, bp, tw,
                                        acc + i * bp + b0);
                    }
                }
            } while (!(s[0].state && s[1].state && s[2].state && s[3].state));
            for (int i = 0; i < nr; i++)
                for (int64_t b = 0; b < batch; b++)
                    x->y[b * m->rows + r + i] = acc[i * bp + b];
        }
    }
}

static void rl_decode_task(void *vc, int64_t task, int worker)
{
    const struct rl_ctx *x = vc;
    const struct dnnz_rlham *m = x->m;
    uint32_t col[KC];
    float w[KC];
    (void)worker;
    int64_t r0 = task * TR, r1 = r0 + TR < m->rows ? r0 + TR : m->rows;
    for (int64_t r = r0; r < r1; r++) {
        float *row = x->y + r * m->cols;
        memset(row, 0, (size_t)m->cols * sizeof *row);
        struct rl_row s;
        rl_row_start(m, r, &s);
        while (s.state == 0) {
            int n = rl_chunk(x->c, m->codebook, (uint64_t)m->cols, &s, col, w);
            for (int j = 0; j < n; j++)
                row[col[j]] = w[j];
        }
    }
}

int dnnz_rlham_decode(const struct dnnz_rlham *m, float *dst)
{
    if (!m || !dst)
        return DNNZ_E_ARGUMENT;
    int path = dnnz_cpu_get_path();
    if (path < 0)
        return DNNZ_E_UNSUPPORTED;
    if (m->rows * m->cols == 0)
        return DNNZ_OK;
    struct rl_code c;
    DNNZ_CHECK(rl_code_init(&c, m));
    struct rl_ctx x = {m, &c, NULL, NULL, 0, 0, dst, NULL, path};
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, rl_decode_task, &x);
    rl_code_free(&c);
    return DNNZ_OK;
}

int dnnz_rlham_matmul(const struct dnnz_rlham *m, const float *x, int64_t batch, float *y)
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
    struct rl_code c;
    DNNZ_CHECK(rl_code_init(&c, m));
    if (m->run_classes == 1 && m->direct_runs == 1) {
        /* Every run is 0: a row is its first n <= cols entries (zeros after them), each one
         * symbol (its value index), then the end-of-row symbol k: ham's rows with an end-of-row
         * mark, so the same tile decoder (multi-symbol, four interleaved streams) runs it. */
        float *cbx = malloc((size_t)(m->k + 1) * sizeof *cbx);
        if (!cbx) {
            rl_code_free(&c);
            return DNNZ_E_ALLOC;
        }
        memcpy(cbx, m->codebook, (size_t)m->k * sizeof *cbx);
        cbx[m->k] = 0.0f;
        struct dnnz_ham_rows h = {&c.t, cbx, m->k + 1, m->k, m->offsets, m->off_bytes, m->payload, m->payload_len};
        int st = dnnz_ham_rows_matmul(&h, m->rows, m->cols, x, batch, y, path);
        free(cbx);
        rl_code_free(&c);
        return st;
    }
    struct rl_ctx ctx = {m, &c, x, NULL, batch, 0, y, NULL, path};
    float *xt = NULL, *acc = NULL;
    int st = DNNZ_OK;
    if (batch > GATHER_MAX_BATCH) {
        int64_t bp = (batch + LANES - 1) / LANES * LANES;
        xt = malloc((size_t)(m->cols * bp) * sizeof *xt);
        acc = malloc((size_t)((m->rows + TR - 1) / TR) * 4 * (size_t)bp * sizeof *acc);
        if (!xt || !acc) {
            st = DNNZ_E_ALLOC;
            goto done;
        }
        /* transpose in blocks of 64 columns: both sides stay in cache */
        for (int64_t j0 = 0; j0 < m->cols; j0 += 64) {
            int64_t j1 = j0 + 64 < m->cols ? j0 + 64 : m->cols;
            for (int64_t b = 0; b < bp; b++)
                for (int64_t j = j0; j < j1; j++)
                    xt[j * bp + b] = b < batch ? x[b * m->cols + j] : 0.0f;
        }
        ctx.xt = xt;
        ctx.bp = bp;
        ctx.acc = acc;
    }
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, rl_matmul_task, &ctx);
done:
    free(xt);
    free(acc);
    rl_code_free(&c);
    return st;
}
