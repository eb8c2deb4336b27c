/* rlham.c: the `rlham` encoding (see rlham.h).
 *
 * Validation walks each row one pair at a time (rl_pair): refill, decode one joint symbol with
 * the shared table decoder (dnnz_huf_decode_symbol), map it to (run class, value index), read
 * the class's extra bits; the walk checks that no run passes the row end, and validation adds
 * the end-of-row and exact-end checks.
 *
 * decode and matmul (rows with runs; rows whose runs are all 0 go to ham's kernels): a task is
 * a block of DNNZ_HAM_TASK_ROWS output rows, walked by eight lanes (rl_walk), each lane one row,
 * a lane taking the task's next row when its row ends (rows of any lengths keep the lanes busy).
 * A walk step is one 8-byte payload load and one load in a table indexed by the next 12 bits
 * that gives the code's and extra bits' length, the column delta and the value index, with no
 * data-dependent branch (codes up to 20 bits through a second-level table, the rest and the
 * payload's last bytes through rl_pair); the eight lanes' steps are independent dependency
 * chains. A walk stops when a lane's row ends (columns are biased so that this is one OR and one
 * test per round) and leaves its pairs round by round in small L1 buffers, which the consumer
 * then reads: decode scatters them into the rows; batch 1 takes a round's eight pairs as one
 * vector (x gathered at the eight columns, the weights looked up from the codebook in
 * registers, one FMA into the eight lanes' sums); batch > 1 has x transposed once into (cols,
 * batch padded to 16) and each pair is a broadcast multiply-add over contiguous batch lanes
 * (read straight from the walk buffers at batch <= 16, through dnnz_kern_lanes above). Each
 * output is summed by one lane in pair order, so results do not depend on the thread count.
 *
 * Before the walker, at batch 1 on AVX-512 with VBMI2 (k <= 32, codes of at most 24 bits, at most
 * 2^16 used symbols, cols < 2^22 - 1), a task's groups of 16 rows decode in the 32-bit lanes of a
 * vector, one row per lane and one pair per step, fused with the gather of x and the multiply-add
 * (rl_lanes_rows): the code length from a 128-byte table of the 7-bit prefix (vpermi2b) plus one
 * compare per longer length, the canonical position (code >> (32 - len)) + offs[len], one gather
 * of the symbol's (value index, extra bits, run + 1) from a table in canonical order; the weight
 * from the codebook in registers, x gathered at the lane's column (col += run + 1 + extra, from
 * -1). A lane's 64-bit window is refilled by gathers when a lane may have fewer bits left than
 * the longest code; a lane's window advances by its code length only, so the symbol gather stays
 * off that dependency chain, and the rare step in which a lane's symbol has extra bits (a long run)
 * takes a branch that refills every lane after its code and reads the extra bits from the fresh
 * window. A lane whose next code ends at its row's end (its end-of-row code: validation checks
 * that a row ends exactly there) stays there, masked (no load past its row, no multiply-add: an
 * infinite weight never meets a masked zero); the group ends when no lane has a pair, after at
 * most its longest row's bits steps. A group runs as long as its longest row, so one whose rows
 * fill less than RLL_FILL % of that leaves the rest of its task to the walker, as do the last
 * rows of a task that do not fill a group. Each row is still summed by one lane in pair order.
 * Measured (4096x4096 p90-k32, 1 thread, AMD EPYC): the lanes take 0.67 of the walker's time;
 * a step costs about 90 cycles, half of it the two 16-lane gathers (symbol and x); interleaving
 * two groups (32 rows), 16-bit compares for the lengths, a branch-free extra-bits path (the
 * symbol gather on the window's chain) and x gathered in two halves were not faster.
 */
#include "rlham.h"

#include "kern.h"

#include <stdlib.h>
#include <string.h>


#define TR DNNZ_HAM_TASK_ROWS
#define RD dnnz_rd_le
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

/* Walk entry (the eight-lane walker's table, indexed by the next `pb` <= WALK_BITS bits of a row):
 * one load resolves a pair to what the step needs, branch-free: bits 0..5 sh = 64 - tot, tot
 * the bits the code and its extra bits take (so that a >> sh is those bits as an integer, a the
 * row's bits from the code on; a hardware shift takes the count from the entry as it is), 6..21
 * the value index, 22..27 tot (0 for end of row, which leaves the lane where it is), 28
 * WALK_SLOW (a code longer than the table, a code with its extra bits over WALK_TOT_MAX bits, a
 * value index over 16 bits, or a prefix no code starts with: take rl_slow), 29..63 a signed delta
 * d such that the pair's column is col + d + (a >> sh) (d = the class's smallest run -
 * (code << extra bits); end of row: d = WALK_EOR, past any column). A WALK_SLOW entry of a prefix
 * that starts longer codes may name a second-level table: bits 29..33 its index bits sb (the
 * bits after the prefix; 0: none), 34..63 its offset in `wsub`; second-level entries have the
 * same layout (tot counting the whole code). */
#define WALK_BITS 12
#define WALK_SUB_BITS 8            /* second-level index bits: codes up to WALK_BITS + 8 bits */
#define WALK_SUB_MAX (1u << 16)    /* second-level entries in all (512 KiB) */
#define WALK_TOT_MAX 34            /* d >= -2^34 */
#define WALK_SLOW ((uint64_t)1 << 28)
#define WALK_EOR ((int64_t)1 << 33)
#define WALK_SH(e) ((unsigned)(e) & 63u)
#define WALK_V(e) ((uint32_t)((e) >> 6) & 0xFFFFu)
/* The walker stores (uint32_t)(e >> 6) for a fast entry (the value index and, above it, tot) and
 * the value index itself for a slow one; with more than 2^16 values every step is slow. */
#define WALK_VMASK(k) ((k) > 0x10000 ? 0xFFFFFu : 0xFFFFu)
#define WALK_TOT(e) ((unsigned)((e) >> 22) & 63u)
#define WALK_D(e) ((uint64_t)((int64_t)(e) >> 29))
#define WALK_SB(e) ((unsigned)((e) >> 29) & 31u)
#define WALK_OFF(e) ((e) >> 34)
#define WALK_ENTRY(d, v, tot) ((uint64_t)(d) << 29 | (uint64_t)(tot) << 22 | (uint64_t)(v) << 6 | (64u - (tot)))

struct rl_code {
    dnnz_huf_dtable t;
    uint64_t *map;      /* symbol -> MAP_* entry */
    uint64_t *fast;     /* prefix -> FAST_* entry (1 << DNNZ_HUF_TABLE_BITS entries) */
    uint64_t *walk;     /* prefix -> walk entry (1 << pb entries) */
    uint64_t *wsub;     /* second-level walk entries (NULL: none) */
    unsigned pb;        /* bits of the walk table's index */
    int refill2;        /* a code and its extra bits may need more than one refill's 56 bits */
};

static void rl_code_free(struct rl_code *c)
{
    dnnz_huf_dtable_free(&c->t);
    free(c->map);
    free(c->fast);
    free(c->walk);
    free(c->wsub);
    c->wsub = NULL;
    c->map = NULL;
    c->fast = NULL;
    c->walk = NULL;
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

/* The walk table: every code of at most pb = min(longest code, WALK_BITS) bits fills the prefixes
 * it starts (canonical codes from the lengths), everything else is WALK_SLOW. Called by
 * rl_code_init once map[] is set. */
static int rl_walk_init(struct rl_code *c, const struct dnnz_rlham *m)
{
    const size_t n = (size_t)(m->run_classes * m->k + 1);
    unsigned pb = c->t.max_len < WALK_BITS ? c->t.max_len : WALK_BITS;
    pb = pb ? pb : 1;
    c->pb = pb;
    c->walk = malloc(((size_t)1 << pb) * sizeof *c->walk);
    if (!c->walk) {
        rl_code_free(c);
        return DNNZ_E_ALLOC;
    }
    for (size_t p = 0; p < ((size_t)1 << pb); p++)
        c->walk[p] = WALK_SLOW;
    if (m->k > 0x10000)
        return DNNZ_OK; /* value indices past 16 bits: every step the exact way (see WALK_VMASK) */
    dnnz_huf_ctable ct;
    int st = dnnz_huf_ctable_init(&ct, m->lengths, n);
    if (st != DNNZ_OK) {
        rl_code_free(c);
        return st;
    }
    /* second-level index bits per prefix: the longest code it starts, less pb, capped */
    uint8_t *sb = calloc((size_t)1 << pb, 1);
    if (!sb) {
        dnnz_huf_ctable_free(&ct);
        rl_code_free(c);
        return DNNZ_E_ALLOC;
    }
    for (size_t s = 0; s < n; s++) {
        unsigned l = (unsigned)(ct.entry[s] & 0xff);
        if (l > pb) {
            size_t pre = (size_t)((ct.entry[s] >> 8) >> (l - pb));
            unsigned b = l - pb < WALK_SUB_BITS ? l - pb : WALK_SUB_BITS;
            sb[pre] = sb[pre] > b ? sb[pre] : (uint8_t)b;
        }
    }
    size_t total = 0;
    for (size_t p = 0; p < ((size_t)1 << pb); p++) {
        if (sb[p] && total + ((size_t)1 << sb[p]) <= WALK_SUB_MAX) {
            c->walk[p] = WALK_SLOW | (uint64_t)sb[p] << 29 | (uint64_t)total << 34;
            total += (size_t)1 << sb[p];
        }
    }
    if (total) {
        c->wsub = malloc(total * sizeof *c->wsub);
        if (!c->wsub) {
            free(sb);
            dnnz_huf_ctable_free(&ct);
            rl_code_free(c);
            return DNNZ_E_ALLOC;
        }
        for (size_t j = 0; j < total; j++)
            c->wsub[j] = WALK_SLOW;
    }
    for (size_t s = 0; s < n; s++) {
        unsigned l = (unsigned)(ct.entry[s] & 0xff);
        if (l == 0)
            continue;
        uint64_t code = ct.entry[s] >> 8, me = c->map[s], e;
        if (me & MAP_EOR) {
            e = (uint64_t)WALK_EOR << 29 | 63u; /* tot 0, sh 63 (the bit shifted in does not matter) */
        } else {
            unsigned tot = l + MAP_EXTRA(me);
            if (tot > WALK_TOT_MAX || MAP_V(me) > 0xFFFFu)
                continue; /* WALK_SLOW */
            e = WALK_ENTRY((int64_t)MAP_BASE(me) - (int64_t)(code << MAP_EXTRA(me)), MAP_V(me), tot);
        }
        uint64_t *t = c->walk, lo = code, span = 1;
        if (l <= pb) {
            lo = code << (pb - l), span = (uint64_t)1 << (pb - l);
        } else {
            uint64_t h = c->walk[code >> (l - pb)];
            unsigned b = WALK_SB(h);
            if (!b || l - pb > b)
                continue; /* no second level, or longer than it: WALK_SLOW */
            t = c->wsub + WALK_OFF(h);
            lo = (code & (((uint64_t)1 << (l - pb)) - 1)) << (b - (l - pb));
            span = (uint64_t)1 << (b - (l - pb));
        }
        for (uint64_t j = 0; j < span; j++)
            t[lo + j] = e;
    }
    free(sb);
    dnnz_huf_ctable_free(&ct);
    return DNNZ_OK;
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
    return rl_walk_init(c, m);
}

/* A row being walked. */
struct rl_row {
    dnnz_bit_reader r;
    uint64_t pos;    /* next column */
    uint32_t flags;  /* OR of decode flags: DNNZ_HUF_INVALID = a code that decodes to nothing */
    int state;       /* 0 going, 1 end-of-row read, -1 a run passed the row end */
};

/* rl_pair for a code longer than the fast table (or a prefix no code starts with). */
static int rl_pair_exact(const struct rl_code *c, uint64_t cols, struct rl_row *s, uint32_t *col, uint32_t *v)
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
    *v = MAP_V(e);
    s->pos = p + 1;
    return 1;
}

/* One pair of row s into *col / *v (v = value index); 0 when the row ended (state set). */
DNNZ_INLINE int rl_pair(const struct rl_code *c, uint64_t cols, struct rl_row *s, uint32_t *col, uint32_t *v)
{
    dnnz_bit_reader *r = &s->r;
    dnnz_bit_refill(r);
    uint64_t f = c->fast[r->acc >> (64 - DNNZ_HUF_TABLE_BITS)];
    unsigned len = FAST_LEN(f);
    if (DNNZ_UNLIKELY(len == 0))
        return rl_pair_exact(c, cols, s, col, v);
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
    *v = MAP_V(f);
    s->pos = p + 1;
    return 1;
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
    uint32_t col, v; /* the pair itself is not needed, only its checks */
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
        while (s.state == 0 && rl_pair(x->c, (uint64_t)m->cols, &s, &col, &v))
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
/* decode and matmul: the eight-lane walker                                                    */
/* ------------------------------------------------------------------------------------------ */

#define LANES 8          /* rows walked together */
#define RMAX 256         /* rounds per walk: RMAX x LANES pairs buffered (24 KiB) */
#define BL 16            /* batch padding of the transposed x */
#define TILE 64          /* batch lanes per dnnz_kern_lanes call */
#define STEP_BITS 64     /* a step takes at most 62 bits (a 32-bit code and 30 extra bits) */
#define FROZEN ((uint64_t)1 << 40) /* added to the column of a lane whose row ended: past any column */

enum { RL_DECODE, RL_GEMV, RL_LANES };

struct rl_ctx {
    const struct dnnz_rlham *m;
    const struct rl_code *c;
    const float *x;   /* (batch, cols) */
    const float *xt;  /* (cols, bp), batch > 1 */
    int64_t batch, bp;
    float *y;         /* matmul: (batch, rows); decode: (rows, cols) */
    float *acc;       /* batch > 1: per task, LANES rows x bp floats */
    int path, mode;
    int bmi2;         /* rl_walk_bmi2 may run */
    const struct rl_lanes *lanes; /* batch 1 on AVX-512 with VBMI2, when the code suits them */
};

/* Columns in the walk are biased: column + 2^32 - cols, so that a pair past the row end (the
 * end-of-row code, or a run past it) is the one whose biased column reaches 2^32. */

#define BIAS(cols) (((uint64_t)1 << 32) - (cols))

/* One step the slow way (a code longer than the walk table, a code with many extra bits, a prefix
 * no code starts with, the payload's last bytes): rl_pair from bit p and column c0. Returns the
 * new bit position; *q the pair's column (c0 + FROZEN when the row ends there, or a run passes
 * its end, or the code is invalid), *v its value index. */
static uint64_t rl_slow(const struct rl_code *c, const uint8_t *src, size_t size, uint64_t cols, uint64_t p,
                        uint64_t c0, uint64_t *q, uint32_t *v)
{
    struct rl_row s = {.pos = c0, .flags = 0, .state = 0};
    uint32_t col = 0;
    *v = 0;
    *q = c0 + FROZEN;
    if (c0 >= cols)
        return p;
    dnnz_bit_reader_init(&s.r, src, size, p);
    if (rl_pair(c, cols, &s, &col, v) && !(s.flags & DNNZ_HUF_INVALID))
        *q = col;
    return dnnz_bit_reader_tell(&s.r);
}

/* Up to `rounds` rounds of one step per lane: round j's pairs go to col[(j + 1) * LANES + i] (the
 * biased column) and val[j * LANES + i] (bits 0..15 the value index); row 0 of col holds each
 * lane's biased column before the first round, less one, and row j + 1 is where a lane's next
 * step takes its column from (the lanes' state is only their bit positions: eight registers).
 * A step is one load of 8 payload bytes, one walk-table load and a few integer operations, no
 * data-dependent branch but the rare slow step; the eight lanes are independent dependency
 * chains. Stops after the first round in which a lane ended its row (lanes without a row must
 * copy a live lane's state: they end with it); returns the rounds done, *ended = the lanes of
 * `live` that ended (their pair of that round is not one). `safe`: every step through rl_slow
 * (the payload's end); otherwise the caller has checked that no lane's load passes src + size
 * within `rounds` rounds. */
DNNZ_INLINE int rl_walk(const struct rl_code *c, const uint8_t *src, size_t size, uint64_t cols, uint64_t *P,
                        unsigned live, int rounds, const int safe, uint64_t *col, uint32_t *val, unsigned *ended)
{
    const uint64_t *const walk = c->walk, *const wsub = c->wsub, bias = BIAS(cols);
    const unsigned pb = c->pb, ps = 64 - pb;
    uint64_t p0 = P[0], p1 = P[1], p2 = P[2], p3 = P[3], p4 = P[4], p5 = P[5], p6 = P[6], p7 = P[7];
    int j = 0;
    while (j < rounds) {
        const uint64_t *ci = col + j * LANES;
        uint64_t *co = col + (j + 1) * LANES;
        uint32_t *vo = val + j * LANES;
        uint64_t any = 0; /* bit 32 and up: a lane passed its row end */
#define RL_STEP(I)                                                                                 \
    do {                                                                                           \
        uint64_t q_, a_ = 0, e_ = WALK_SLOW;                                                       \
        if (!safe) {                                                                               \
            a_ = dnnz_bit_load_be64(src + (p##I >> 3)) << (p##I & 7);                              \
            e_ = walk[a_ >> ps];                                                                   \
        }                                                                                          \
        if (DNNZ_UNLIKELY(e_ & WALK_SLOW) && WALK_SB(e_))                                          \
            e_ = wsub[WALK_OFF(e_) + ((a_ << pb) >> (64 - WALK_SB(e_)))];                           \
        if (DNNZ_LIKELY(!(e_ & WALK_SLOW))) {                                                      \
            q_ = ci[I] + 1 + WALK_D(e_) + (a_ >> WALK_SH(e_));                                     \
            p##I += WALK_TOT(e_);                                                                  \
            vo[I] = (uint32_t)(e_ >> 6);                                                           \
        } else {                                                                                   \
            uint32_t v_;                                                                           \
            p##I = rl_slow(c, src, size, cols, p##I, ci[I] + 1 - bias, &q_, &v_);                  \
            q_ += bias;                                                                            \
            vo[I] = v_;                                                                            \
        }                                                                                          \
        any |= q_;                                                                                 \
        co[I] = q_;                                                                                \
    } while (0)
        RL_STEP(0);
        RL_STEP(1);
        RL_STEP(2);
        RL_STEP(3);
        RL_STEP(4);
        RL_STEP(5);
        RL_STEP(6);
        RL_STEP(7);
#undef RL_STEP
        j++;
        if (DNNZ_UNLIKELY(any >> 32))
            break;
    }
    P[0] = p0, P[1] = p1, P[2] = p2, P[3] = p3, P[4] = p4, P[5] = p5, P[6] = p6, P[7] = p7;
    unsigned e = 0;
    for (int i = 0; i < LANES; i++)
        e |= (unsigned)(col[j * LANES + i] >= ((uint64_t)1 << 32)) << i;
    *ended = e & live;
    return j;
}

static int rl_walk_fast(const struct rl_code *c, const uint8_t *src, size_t size, uint64_t cols, uint64_t *P,
                        unsigned live, int rounds, uint64_t *col, uint32_t *val, unsigned *ended)
{
    return rl_walk(c, src, size, cols, P, live, rounds, 0, col, val, ended);
}

#if DNNZ_X86
/* The same walk compiled for BMI2 (shifts by a register without the count in cl, fewer moves on
 * the lanes' dependency chains); every AVX2 / AVX-512 CPU has it, checked at run time anyway. */
static __attribute__((target("bmi2"))) int rl_walk_bmi2(const struct rl_code *c, const uint8_t *src, size_t size,
                                                        uint64_t cols, uint64_t *P, unsigned live, int rounds,
                                                        uint64_t *col, uint32_t *val, unsigned *ended)
{
    return rl_walk(c, src, size, cols, P, live, rounds, 0, col, val, ended);
}
#endif

static int rl_walk_safe(const struct rl_code *c, const uint8_t *src, size_t size, uint64_t cols, uint64_t *P,
                        unsigned live, int rounds, uint64_t *col, uint32_t *val, unsigned *ended)
{
    return rl_walk(c, src, size, cols, P, live, rounds, 1, col, val, ended);
}

/* ---- batch 1: the eight lanes' dot products, one vector per round -------------------------- */

/* acc[i] += w * x[col] over lane i's first cnt[i] rounds (col, val as rl_walk stores them) */
static void rl_dot8_ref(const uint64_t *col, const uint32_t *val, int n, const int32_t cnt[LANES], const float *x,
                        const float *cb, int64_t k, uint64_t cols, float acc[LANES])
{
    const uint32_t vm = WALK_VMASK(k);
    (void)n;
    for (int i = 0; i < LANES; i++)
        for (int j = 0; j < cnt[i]; j++)
            acc[i] += cb[val[j * LANES + i] & vm] * x[col[j * LANES + i] - BIAS(cols)];
}

#if DNNZ_X86
/* the eight lanes' columns of a round are one gather of x (lanes past their count masked off),
 * the values a codebook lookup in registers (permutes for small codebooks, else a gather) */
#define DOT8_256(LOOKUP)                                                                          \
    for (int j = 0; j < n; j++) {                                                                 \
        const __m256i c0_ = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(col + j * LANES)), vbias); \
        const __m256i c1_ = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(col + j * LANES + 4)), vbias); \
        const __m256i vv = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(val + j * LANES)), vmask); \
        const __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(vcnt, _mm256_set1_epi32(j)));  \
        const __m128 g0 = _mm256_mask_i64gather_ps(_mm_setzero_ps(), x, c0_, _mm256_castps256_ps128(live), 4); \
        const __m128 g1 = _mm256_mask_i64gather_ps(_mm_setzero_ps(), x, c1_, _mm256_extractf128_ps(live, 1), 4); \
        const __m256 g = _mm256_insertf128_ps(_mm256_castps128_ps256(g0), g1, 1);                 \
        a = _mm256_fmadd_ps(_mm256_and_ps(LOOKUP(vv), live), g, a);                               \
    }
#define LK8(vv) _mm256_permutevar8x32_ps(c0, vv)
#define LK16(vv)                                                                                  \
    _mm256_blendv_ps(_mm256_permutevar8x32_ps(c0, vv), _mm256_permutevar8x32_ps(c1, vv),          \
                     _mm256_castsi256_ps(_mm256_cmpgt_epi32(vv, seven)))
#define LKG(vv) _mm256_mask_i32gather_ps(_mm256_setzero_ps(), cb, vv, live, 4)

static DNNZ_T_AVX2 void rl_dot8_avx2(const uint64_t *col, const uint32_t *val, int n, const int32_t cnt[LANES],
                                     const float *x, const float *cb, int64_t k, const float *cbpad, uint64_t cols,
                                     float acc[LANES])
{
    const __m256i vbias = _mm256_set1_epi64x((long long)BIAS(cols)), seven = _mm256_set1_epi32(7);
    const __m256i vmask = _mm256_set1_epi32((int)WALK_VMASK(k)), vcnt = _mm256_loadu_si256((const __m256i *)cnt);
    const __m256 c0 = _mm256_loadu_ps(cbpad), c1 = _mm256_loadu_ps(cbpad + 8);
    __m256 a = _mm256_loadu_ps(acc);
    if (k <= 8) {
        DOT8_256(LK8)
    } else if (k <= 16) {
        DOT8_256(LK16)
    } else {
        DOT8_256(LKG)
    }
    _mm256_storeu_ps(acc, a);
}
#undef LK8
#undef LK16
#undef LKG

/* AVX-512 (VL): the same eight lanes with mask registers, codebooks up to 32 values permuted */
#define DOT8_512(LOOKUP)                                                                          \
    for (int j = 0; j < n; j++) {                                                                 \
        const __m256i cv = _mm512_cvtepi64_epi32(_mm512_sub_epi64(_mm512_loadu_si512(col + j * LANES), vbias)); \
        const __m256i vv = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(val + j * LANES)), vmask); \
        const __mmask8 live = _mm256_cmpgt_epi32_mask(vcnt, _mm256_set1_epi32(j));                \
        const __m256 g = _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), live, cv, x, 4);          \
        a = _mm256_mask3_fmadd_ps(LOOKUP(vv), g, a, live);                                        \
    }
#define LK16(vv) _mm512_castps512_ps256(_mm512_permutexvar_ps(_mm512_castsi256_si512(vv), c0))
#define LK32(vv) _mm512_castps512_ps256(_mm512_permutex2var_ps(c0, _mm512_castsi256_si512(vv), c1))
#define LKG(vv) _mm256_mmask_i32gather_ps(_mm256_setzero_ps(), live, vv, cb, 4)

static DNNZ_T_AVX512 void rl_dot8_avx512(const uint64_t *col, const uint32_t *val, int n, const int32_t cnt[LANES],
                                         const float *x, const float *cb, int64_t k, const float *cbpad,
                                         uint64_t cols, float acc[LANES])
{
    const __m512i vbias = _mm512_set1_epi64((long long)BIAS(cols));
    const __m256i vmask = _mm256_set1_epi32((int)WALK_VMASK(k));
    const __m256i vcnt = _mm256_loadu_si256((const __m256i *)cnt);
    const __m512 c0 = _mm512_loadu_ps(cbpad), c1 = _mm512_loadu_ps(cbpad + 16);
    __m256 a = _mm256_loadu_ps(acc);
    if (k <= 16) {
        DOT8_512(LK16)
    } else if (k <= 32) {
        DOT8_512(LK32)
    } else {
        DOT8_512(LKG)
    }
    _mm256_storeu_ps(acc, a);
}
#undef LK16
#undef LK32
#undef LKG
#endif

/* ---- batch 2..16: one lane's pairs straight from the walk buffers (stride LANES) into its 16
 * batch lanes (x transposed to 16 floats per column): acc[l] += w * xt[col * 16 + l] ----------- */

static void rl_lanes16_ref(const uint64_t *pc, const uint32_t *val, int cnt, const float *cb, const float *xt,
                           uint64_t bias, uint32_t vm, float *acc)
{
    for (int j = 0; j < cnt; j++) {
        const float w = cb[val[j * LANES] & vm], *xr = xt + (pc[j * LANES] - bias) * BL;
        for (int l = 0; l < BL; l++)
            acc[l] += w * xr[l];
    }
}

#if DNNZ_X86
/* two sums (pairs alternate) so that the multiply-adds do not wait on each other */
static DNNZ_T_AVX512 void rl_lanes16_avx512(const uint64_t *pc, const uint32_t *val, int cnt, const float *cb,
                                            const float *xt, uint64_t bias, uint32_t vm, float *acc)
{
    __m512 a0 = _mm512_loadu_ps(acc), a1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 2 <= cnt; j += 2) {
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(cb[val[j * LANES] & vm]),
                             _mm512_loadu_ps(xt + (pc[j * LANES] - bias) * BL), a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(cb[val[(j + 1) * LANES] & vm]),
                             _mm512_loadu_ps(xt + (pc[(j + 1) * LANES] - bias) * BL), a1);
    }
    if (j < cnt)
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(cb[val[j * LANES] & vm]),
                             _mm512_loadu_ps(xt + (pc[j * LANES] - bias) * BL), a0);
    _mm512_storeu_ps(acc, _mm512_add_ps(a0, a1));
}

static DNNZ_T_AVX2 void rl_lanes16_avx2(const uint64_t *pc, const uint32_t *val, int cnt, const float *cb,
                                        const float *xt, uint64_t bias, uint32_t vm, float *acc)
{
    __m256 a0 = _mm256_loadu_ps(acc), b0 = _mm256_loadu_ps(acc + 8);
    __m256 a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 2 <= cnt; j += 2) {
        const __m256 w0 = _mm256_set1_ps(cb[val[j * LANES] & vm]);
        const __m256 w1 = _mm256_set1_ps(cb[val[(j + 1) * LANES] & vm]);
        const float *x0 = xt + (pc[j * LANES] - bias) * BL, *x1 = xt + (pc[(j + 1) * LANES] - bias) * BL;
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0), a0);
        b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8), b0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1), a1);
        b1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x1 + 8), b1);
    }
    if (j < cnt) {
        const __m256 w0 = _mm256_set1_ps(cb[val[j * LANES] & vm]);
        const float *x0 = xt + (pc[j * LANES] - bias) * BL;
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0), a0);
        b0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x0 + 8), b0);
    }
    _mm256_storeu_ps(acc, _mm256_add_ps(a0, a1));
    _mm256_storeu_ps(acc + 8, _mm256_add_ps(b0, b1));
}
#endif

/* ---- batch 1, AVX-512 with VBMI2: 16 rows in the lanes of a vector (rl_lanes_rows) ---------- */

#if DNNZ_X86
/* Each 32-bit lane decodes one row, one pair per step, fused with the gather of x and the
 * multiply-add: the code length from a byte table of the 7-bit prefix (vpermi2b over 128 bytes)
 * plus one compare per longer length, the canonical position (code >> (32 - len)) + offs[len],
 * then one gather from a table in canonical order (RLL_* below: value index, extra bits, run + 1)
 * that is off the bit position's dependency chain (a lane's window advances by the code length
 * alone; the rare step in which a lane's symbol has extra bits is a branch that refills every lane
 * after its code and takes the extra bits from the fresh window). A lane's column starts at -1 and
 * adds run + 1 + extra per pair; the weight is the codebook (k <= 32) in registers. A lane whose
 * next code ends at its row's end (the end-of-row code: a row ends exactly there) stays where it
 * is, masked; the group ends when no lane has a pair (at most its longest row's bits steps). */
#define RLL_T __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vbmi2,fma,avx2")))
#define RLL_NB_SHIFT 5
#define RLL_BASE_SHIFT 10
#define RLL_BASE_MAX ((1u << 22) - 1) /* run + 1 clamped here: cols < RLL_BASE_MAX (a clamped run passes the row) */
#define RLL_MAX_LEN 24                /* codes up to 24 bits: 16 compares at most */
#define RLL_MAX_USED 65536
#define RLL_FILL 65                   /* percent: lanes when a group's rows fill this much of its steps */

struct rl_lanes {
    uint8_t t7[128];     /* length of the code a 7-bit prefix starts, 8 for a longer one */
    uint32_t lim[16];    /* lengths 8 .. max_len - 1: end of their codes, left-aligned on 32 bits */
    uint32_t offs[32];   /* position in canonical order of code 0 of each length: index - first */
    float cbs[32];       /* the codebook, zero-padded */
    uint32_t *sym;       /* canonical position -> value index | extra bits << 5 | (run + 1) << 10 */
    int n_long, max_len, k32;
    uint32_t last;       /* n_used - 1: positions are clamped to it */
};

/* 1 when the code and the matrix suit the lanes (and the CPU has VBMI2); L->sym then allocated */
static int rl_lanes_prepare(const struct dnnz_rlham *m, const dnnz_huf_dtable *t, struct rl_lanes *L)
{
    memset(L, 0, sizeof *L);
    if (m->k < 1 || m->k > 32 || m->cols >= RLL_BASE_MAX || m->rows < 16 || t->n_used < 2 ||
        t->n_used > RLL_MAX_USED || t->max_len > RLL_MAX_LEN)
        return 0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vbmi2"))
        return 0;
    L->sym = malloc((size_t)t->n_used * sizeof *L->sym);
    if (!L->sym)
        return 0;
    for (unsigned l = 1; l <= t->max_len; l++)
        L->offs[l] = t->index[l] - t->first[l];
    for (int p = 0; p < 128; p++) {
        unsigned l = t->single[p << (DNNZ_HUF_TABLE_BITS - 7)] & 63; /* 0: longer than the table */
        L->t7[p] = (uint8_t)(l >= 1 && l <= 7 ? l : 8);
    }
    for (unsigned l = 8; l < t->max_len; l++)
        L->lim[L->n_long++] = (uint32_t)t->limit[l];
    const uint32_t eor = (uint32_t)(m->run_classes * m->k);
    for (uint32_t i = 0; i < t->n_used; i++) {
        const uint32_t s = t->sorted[i];
        if (s >= eor) {
            L->sym[i] = 0; /* end of row: its lane is masked off */
            continue;
        }
        const int64_t c = s / (uint32_t)m->k;
        const uint64_t b1 = (uint64_t)rl_class_base(m->direct_runs, c) + 1;
        L->sym[i] = (uint32_t)(s % (uint32_t)m->k) | rl_class_extra(m->direct_runs, c) << RLL_NB_SHIFT |
                    (uint32_t)(b1 < RLL_BASE_MAX ? b1 : RLL_BASE_MAX) << RLL_BASE_SHIFT;
    }
    memcpy(L->cbs, m->codebook, (size_t)m->k * sizeof *L->cbs);
    L->max_len = (int)t->max_len;
    L->k32 = m->k > 16;
    L->last = t->n_used - 1;
    return 1;
}

/* y[0:16] = the 16 rows whose streams are bits [pos[i], end[i]) of src (pos[0] the smallest,
 * every span < 2^31 bits from pos[0]'s byte; 8-byte loads at any position before a row's end
 * stay within src) . x. steps: the most bits a row has (a pair takes at least one). */
DNNZ_INLINE RLL_T void rl_lanes_run(const struct rl_lanes *L, const int K32, const uint8_t *src,
                                    const uint64_t *pos, const uint64_t *end, uint64_t steps, uint32_t cols,
                                    const float *x, float *y)
{
    const uint64_t pos0 = pos[0] & ~(uint64_t)7;
    const uint8_t *base = src + (pos0 >> 3);
    uint32_t prel[16], erel[16];
    for (int i = 0; i < 16; i++) {
        prel[i] = (uint32_t)(pos[i] - pos0);
        erel[i] = (uint32_t)(end[i] - pos0);
    }
    const __m512i T0 = _mm512_loadu_si512(L->t7), T1 = _mm512_loadu_si512(L->t7 + 64);
    const __m512i of0 = _mm512_loadu_si512(L->offs), of1 = _mm512_loadu_si512(L->offs + 16);
    const __m512 cb0 = _mm512_loadu_ps(L->cbs), cb1 = _mm512_loadu_ps(L->cbs + 16);
    const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1), seven = _mm512_set1_epi32(7);
    const __m512i n32 = _mm512_set1_epi32(32), nbm = _mm512_set1_epi32(31 << RLL_NB_SHIFT);
    const __m512i last = _mm512_set1_epi32((int)L->last), vcols = _mm512_set1_epi32((int)cols);
    const __m512i refill_at = _mm512_set1_epi32(64 - L->max_len);
    const __mmask64 lowb = 0x1111111111111111ull; /* byte 0 of each 32-bit lane */
    const int nl = L->n_long;
    __m512i lim[16];
    for (int i = 0; i < 16; i++)
        lim[i] = _mm512_set1_epi32((int)L->lim[i]);
    const __m512i IH = _mm512_load_si512(dnnz_kern_window_perm);
    const __m512i IL = _mm512_add_epi8(IH, _mm512_set1_epi8(4));
    const __m512i E = _mm512_loadu_si512(erel);
    __m512i P = _mm512_loadu_si512(prel), H = zero, LO = zero, B = zero;
    __m512i col = _mm512_set1_epi32(-1);
    __m512 acc = _mm512_setzero_ps();
    /* window refill: 8 bytes at each lane's byte of Q, shifted to its bit */
#define RLL_REFILL(Q)                                                                              \
    do {                                                                                           \
        const __m512i by_ = _mm512_srli_epi32(Q, 3);                                               \
        const __m512i g0_ = _mm512_i32gather_epi64(_mm512_castsi512_si256(by_), (const void *)base, 1); \
        const __m512i g1_ = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(by_, 1), (const void *)base, 1); \
        const __m512i hh_ = _mm512_permutex2var_epi8(g0_, IH, g1_), ll_ = _mm512_permutex2var_epi8(g0_, IL, g1_); \
        const __m512i s_ = _mm512_and_si512(Q, seven);                                             \
        H = _mm512_shldv_epi32(hh_, ll_, s_);                                                      \
        LO = _mm512_sllv_epi32(ll_, s_);                                                           \
        B = _mm512_andnot_si512(seven, Q);                                                         \
    } while (0)
    RLL_REFILL(P);
    for (uint64_t j = 0; j <= steps; j++) {
        if (_mm512_cmpgt_epu32_mask(_mm512_sub_epi32(P, B), refill_at))
            RLL_REFILL(P);
        __m512i len = _mm512_maskz_permutex2var_epi8(lowb, T0, _mm512_srli_epi32(H, 25), T1), len2 = zero;
        for (int i = 0; i + 1 < nl; i += 2) {
            len = _mm512_mask_add_epi32(len, _mm512_cmp_epu32_mask(H, lim[i], _MM_CMPINT_NLT), len, one);
            len2 = _mm512_mask_add_epi32(len2, _mm512_cmp_epu32_mask(H, lim[i + 1], _MM_CMPINT_NLT), len2, one);
        }
        if (nl & 1)
            len = _mm512_mask_add_epi32(len, _mm512_cmp_epu32_mask(H, lim[nl - 1], _MM_CMPINT_NLT), len, one);
        len = _mm512_add_epi32(len, len2);
        __m512i sp = _mm512_add_epi32(_mm512_shldv_epi32(zero, H, len), _mm512_permutex2var_epi32(of0, len, of1));
        sp = _mm512_min_epu32(sp, last);
        const __m512i pk = _mm512_i32gather_epi32(sp, (const void *)L->sym, 4);
        __m512i sh = len, tot = len, extra = zero;
        const __mmask16 xb = _mm512_test_epi32_mask(pk, nbm);
        if (DNNZ_UNLIKELY(xb)) { /* extra bits: every lane's window refilled after its code */
            const __m512i nb = _mm512_srli_epi32(_mm512_and_si512(pk, nbm), RLL_NB_SHIFT);
            const __m512i pc = _mm512_mask_add_epi32(P, xb, P, len);
            RLL_REFILL(pc);
            extra = _mm512_srlv_epi32(H, _mm512_sub_epi32(n32, nb)); /* 0 for nb = 0 */
            sh = _mm512_mask_mov_epi32(len, xb, nb);
            tot = _mm512_add_epi32(len, nb);
        }
        const __m512i pn = _mm512_add_epi32(P, tot);
        const __mmask16 act = _mm512_cmplt_epu32_mask(pn, E); /* a pair (not the end-of-row code) */
        if (!act)
            break;
        P = _mm512_mask_mov_epi32(P, act, pn);
        H = _mm512_mask_shldv_epi32(H, act, LO, sh);
        LO = _mm512_mask_sllv_epi32(LO, act, LO, sh);
        col = _mm512_mask_add_epi32(col, act, col, _mm512_add_epi32(_mm512_srli_epi32(pk, RLL_BASE_SHIFT), extra));
        const __mmask16 ok = _mm512_mask_cmplt_epu32_mask(act, col, vcols);
        const __m512 w = K32 ? _mm512_permutex2var_ps(cb0, pk, cb1) : _mm512_permutexvar_ps(pk, cb0);
        const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), ok, col, x, 4);
        acc = _mm512_mask3_fmadd_ps(w, xv, acc, ok);
    }
#undef RLL_REFILL
    _mm512_storeu_ps(y, acc);
}

static RLL_T void rl_lanes_gemv(const struct rl_lanes *L, const uint8_t *src, const uint64_t *pos,
                                const uint64_t *end, uint64_t steps, uint32_t cols, const float *x, float *y)
{
    if (L->k32)
        rl_lanes_run(L, 1, src, pos, end, steps, cols, x, y);
    else
        rl_lanes_run(L, 0, src, pos, end, steps, cols, x, y);
}

/* Rows r0..r1 of a task through the lanes, 16 at a time; returns the first row left to the walker
 * (fewer than 16, or all of them when the code does not suit the lanes). A group whose loads could
 * pass the end of the payload reads from a zero-padded copy of its bytes. */
static int64_t rl_lanes_rows(const struct rl_lanes *L, const struct dnnz_rlham *m, const float *x, float *y,
                             int64_t r0, int64_t r1)
{
    for (; r1 - r0 >= 16; r0 += 16) {
        uint64_t pos[16], end[16], steps = 0, shift;
        for (int i = 0; i < 16; i++) {
            pos[i] = RD(m->offsets, m->off_bytes, r0 + i);
            end[i] = RD(m->offsets, m->off_bytes, r0 + i + 1);
            steps = end[i] - pos[i] > steps ? end[i] - pos[i] : steps;
        }
        /* the group runs as many steps as its longest row: with its bits (a proxy for its pairs)
         * below RLL_FILL % of 16 times the longest row's, the walker (whose lanes take the next
         * row when theirs ends) is faster (measured break-even about 60 %: 4096x4096 p90-k32,
         * about 90 % full, runs in 0.67 of the walker's time), so it takes the rest of the task */
        if (100 * (end[15] - pos[0]) < (uint64_t)RLL_FILL * 16 * steps)
            break;
        uint8_t *copy;
        const uint8_t *src = dnnz_kern_lane_bytes(m->payload, m->payload_len, pos, 16, end[15], &shift, &copy);
        if (!src)
            break;
        for (int i = 0; i < 16; i++)
            end[i] -= shift;
        rl_lanes_gemv(L, src, pos, end, steps, (uint32_t)m->cols, x, y + r0);
        free(copy);
    }
    return r0;
}
#endif

/* ---- the task: rows [r0, r1) through the eight lanes, a lane taking the next row when its row
 * ends (rows of any lengths keep all lanes busy) ---------------------------------------------- */

static void rl_task(void *vc, int64_t task, int worker)
{
    const struct rl_ctx *x = vc;
    const struct dnnz_rlham *m = x->m;
    const struct rl_code *c = x->c;
    const uint64_t cols = (uint64_t)m->cols;
    const uint8_t *src = m->payload;
    const size_t size = (size_t)m->payload_len;
    const uint64_t plim = size >= 8 ? ((uint64_t)size - 8) * 8 : 0; /* a fast load may start here */
    const float *cb = m->codebook;
    const int64_t bp = x->bp;
    const uint32_t vm = WALK_VMASK(m->k);
    uint64_t col[(RMAX + 1) * LANES] __attribute__((aligned(64)));
    uint32_t val[RMAX * LANES] __attribute__((aligned(64)));
    float wl[RMAX] __attribute__((aligned(64)));
    uint32_t cl[RMAX] __attribute__((aligned(64)));
    float cbpad[32] = {0}, acc1[LANES] = {0};
    float *acc = x->mode == RL_LANES ? x->acc + (size_t)task * LANES * (size_t)bp : NULL;
    (void)worker;
    memcpy(cbpad, cb, (size_t)(m->k < 32 ? m->k : 32) * sizeof *cbpad);
    int64_t next = task * TR, r1 = next + TR < m->rows ? next + TR : m->rows;
#if DNNZ_X86
    if (x->lanes && x->mode == RL_GEMV) {
        next = rl_lanes_rows(x->lanes, m, x->x, x->y, next, r1);
        if (next == r1)
            return;
    }
#endif
    /* lane i: bit position P[i], row[i] (-1: none), column before the next pair col[i] (biased) */
    uint64_t P[LANES];
    int64_t row[LANES];
    unsigned live = 0;
    for (int i = 0; i < LANES; i++) {
        row[i] = -1;
        if (next < r1) {
            row[i] = next++;
            P[i] = RD(m->offsets, m->off_bytes, row[i]);
            col[i] = BIAS(cols) - 1;
            live |= 1u << i;
        }
    }
    if (acc)
        memset(acc, 0, (size_t)LANES * (size_t)bp * sizeof *acc);
    if (x->mode == RL_DECODE)
        for (int64_t r = task * TR; r < r1; r++)
            memset(x->y + r * m->cols, 0, (size_t)m->cols * sizeof *x->y);
    while (live) {
        /* lanes without a row copy a live one (same loads, same end) */
        const int any = __builtin_ctz(live);
        uint64_t pmax = 0;
        int32_t cnt[LANES];
        for (int i = 0; i < LANES; i++) {
            if (!(live >> i & 1)) {
                P[i] = P[any];
                col[i] = col[any];
            }
            pmax = P[i] > pmax ? P[i] : pmax;
        }
        uint64_t fit = size >= 8 && pmax <= plim ? (plim - pmax) / STEP_BITS + 1 : 0;
        unsigned ended;
        int n;
        if (fit >= 16) {
            const int nr = fit < RMAX ? (int)fit : RMAX;
#if DNNZ_X86
            if (x->bmi2)
                n = rl_walk_bmi2(c, src, size, cols, P, live, nr, col, val, &ended);
            else
#endif
                n = rl_walk_fast(c, src, size, cols, P, live, nr, col, val, &ended);
        } else {
            n = rl_walk_safe(c, src, size, cols, P, live, RMAX, col, val, &ended);
        }
        /* a lane's pairs: the rounds before its row's end (none for a lane without a row) */
        for (int i = 0; i < LANES; i++)
            cnt[i] = live >> i & 1 ? n - (int)(ended >> i & 1) : 0;
        const uint64_t *pc = col + LANES; /* round j's columns at pc[j * LANES + i] */
        if (x->mode == RL_GEMV) {
#if DNNZ_X86
            if (x->path == DNNZ_CPU_AVX512)
                rl_dot8_avx512(pc, val, n, cnt, x->x, cb, m->k, cbpad, cols, acc1);
            else if (x->path == DNNZ_CPU_AVX2)
                rl_dot8_avx2(pc, val, n, cnt, x->x, cb, m->k, cbpad, cols, acc1);
            else
#endif
                rl_dot8_ref(pc, val, n, cnt, x->x, cb, m->k, cols, acc1);
        } else {
            for (int i = 0; i < LANES; i++) {
                if (!cnt[i])
                    continue;
                if (x->mode == RL_DECODE) {
                    float *out = x->y + row[i] * m->cols;
                    for (int j = 0; j < cnt[i]; j++)
                        out[pc[j * LANES + i] - BIAS(cols)] = cb[val[j * LANES + i] & vm];
                    continue;
                }
                if (bp == BL) {
#if DNNZ_X86
                    if (x->path == DNNZ_CPU_AVX512)
                        rl_lanes16_avx512(pc + i, val + i, cnt[i], cb, x->xt, BIAS(cols), vm, acc + i * bp);
                    else if (x->path == DNNZ_CPU_AVX2)
                        rl_lanes16_avx2(pc + i, val + i, cnt[i], cb, x->xt, BIAS(cols), vm, acc + i * bp);
                    else
#endif
                        rl_lanes16_ref(pc + i, val + i, cnt[i], cb, x->xt, BIAS(cols), vm, acc + i * bp);
                    continue;
                }
                for (int j = 0; j < cnt[i]; j++) {
                    cl[j] = (uint32_t)(pc[j * LANES + i] - BIAS(cols));
                    wl[j] = cb[val[j * LANES + i] & vm];
                }
                for (int64_t b0 = 0; b0 < bp; b0 += TILE) {
                    int tw = bp - b0 < TILE ? (int)(bp - b0) : TILE;
                    dnnz_kern_lanes(x->path, wl, cl, 4, cnt[i], x->xt + b0, bp, tw, acc + i * bp + b0);
                }
            }
        }
        memcpy(col, col + n * LANES, LANES * sizeof *col); /* the lanes' columns carry on */
        for (int i = 0; i < LANES; i++) {
            if (!(ended >> i & 1))
                continue;
            int64_t r = row[i];
            if (x->mode == RL_GEMV) {
                x->y[r] = acc1[i];
                acc1[i] = 0.0f;
            } else if (x->mode == RL_LANES) {
                for (int64_t b = 0; b < x->batch; b++)
                    x->y[b * m->rows + r] = acc[i * bp + b];
                memset(acc + i * bp, 0, (size_t)bp * sizeof *acc);
            }
            live &= ~(1u << i);
            row[i] = -1;
            if (next < r1) {
                row[i] = next++;
                P[i] = RD(m->offsets, m->off_bytes, row[i]);
                col[i] = BIAS(cols) - 1;
                live |= 1u << i;
            }
        }
    }
}

static int rl_bmi2(int path)
{
#if DNNZ_X86
    return path != DNNZ_CPU_SCALAR && __builtin_cpu_supports("bmi2");
#else
    (void)path;
    return 0;
#endif
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
    struct rl_ctx x = {m, &c, NULL, NULL, 0, 0, dst, NULL, path, RL_DECODE, rl_bmi2(path), NULL};
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, rl_task, &x);
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
         * mark, so ham's kernels (lanes, eight-row decoders, tiles) run it. */
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
    struct rl_ctx ctx = {m, &c, x, NULL, batch, 0, y, NULL, path, batch == 1 ? RL_GEMV : RL_LANES, rl_bmi2(path), NULL};
    float *xt = NULL, *acc = NULL;
    int st = DNNZ_OK;
#if DNNZ_X86
    struct rl_lanes lanes = {.sym = NULL};
    if (batch == 1 && path == DNNZ_CPU_AVX512 && rl_lanes_prepare(m, &c.t, &lanes))
        ctx.lanes = &lanes;
#endif
    if (batch > 1) {
        int64_t bp = (batch + BL - 1) / BL * BL;
        xt = malloc((size_t)(m->cols * bp) * sizeof *xt);
        acc = malloc((size_t)((m->rows + TR - 1) / TR) * LANES * (size_t)bp * sizeof *acc);
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
    dnnz_cpu_parallel((m->rows + TR - 1) / TR, rl_task, &ctx);
done:
#if DNNZ_X86
    free(lanes.sym);
#endif
    free(xt);
    free(acc);
    rl_code_free(&c);
    return st;
}
