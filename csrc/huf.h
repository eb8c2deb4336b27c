/* huf.h: canonical Huffman codes: optimal (length-limited) code lengths, canonical code
 * assignment, a fast encoder and a table-driven decoder. Format: spec/huffman.md.
 *
 * Conventions:
 *  - An alphabet has n_alphabet symbols 0..n_alphabet-1, 1 <= n_alphabet <= DNNZ_HUF_MAX_SYMBOLS.
 *    A code is described by its code lengths alone (one uint8 per symbol, 0 = symbol not used).
 *  - Canonical rule (DEFLATE / puff): codes are assigned shortest length first, ties by increasing
 *    symbol value, each code the previous one plus one, shifted left when the length grows.
 *  - Valid length sets: every length <= DNNZ_HUF_MAX_CODE_LEN (else DNNZ_E_CODE_TOO_LONG), and
 *    either Kraft sum exactly 1 (else DNNZ_E_OVERSUBSCRIBED above 1, DNNZ_E_INCOMPLETE below), or
 *    exactly one used symbol with length 1 (its code is the bit 0; the bit 1 decodes to nothing
 *    and is DNNZ_E_CORRUPT), or no used symbol at all (the empty code: only zero symbols can be
 *    coded; decoding a symbol with it is DNNZ_E_CORRUPT).
 *  - Decoded symbols are written in the decode table's output width: uint8_t when
 *    n_alphabet <= 256, uint16_t when <= 65536, uint32_t above (dnnz_huf_out_width).
 *
 * The C-only part (below the cffi block) is the API other C modules build on: encode and decode
 * tables built once, and the per-symbol decode step inline for fused kernels.
 */
#ifndef DNNZ_HUF_H
#define DNNZ_HUF_H

#include "bit.h"
#include "common.h"

/* cffi:begin */
enum dnnz_huf_limits {
    DNNZ_HUF_MAX_CODE_LEN = 32,      /* format cap on a code length, in bits */
    DNNZ_HUF_MAX_SYMBOLS = 1048576,  /* largest alphabet (2^20 symbols) */
    DNNZ_HUF_TABLE_BITS = 11         /* bits resolved by one primary decode-table lookup */
};

/* Optimal code lengths for the symbol counts counts[0..n_alphabet) with no code longer than
 * max_len (1..DNNZ_HUF_MAX_CODE_LEN): plain Huffman when its longest code fits, package-merge
 * (optimal length-limited) otherwise. Zero counts get length 0; a single used symbol gets length 1.
 * Errors: DNNZ_E_ARGUMENT (n_alphabet 0, max_len out of range, or max_len too small for the
 * number of used symbols: 2^max_len < n_used), DNNZ_E_LIMIT (n_alphabet > DNNZ_HUF_MAX_SYMBOLS
 * or the counts sum above 2^58), DNNZ_E_ALLOC. */
int dnnz_huf_code_lengths(const uint64_t *counts, size_t n_alphabet, unsigned max_len, uint8_t *lengths);

/* Validate a length set (rules above). Outputs (may be NULL): number of used symbols, longest code. */
int dnnz_huf_check_lengths(const uint8_t *lengths, size_t n_alphabet, uint32_t *n_used, uint32_t *max_len);

/* The canonical code of each symbol (right-aligned in codes[s], 0 for unused symbols), after
 * validating the lengths. */
int dnnz_huf_canonical_codes(const uint8_t *lengths, size_t n_alphabet, uint32_t *codes);

/* Output width in bytes (1, 2 or 4) of decoded symbols for an alphabet of n_alphabet symbols. */
unsigned dnnz_huf_out_width(size_t n_alphabet);

/* Bytes an encoder may need for n_symbols codes of at most max_len bits, starting at bit 0:
 * the payload plus 8 bytes of room for the fast flushes. */
uint64_t dnnz_huf_encode_bound(uint64_t n_symbols, unsigned max_len);

/* One-shot encoder: encode symbols[0..n) (sym_width 1, 2 or 4 bytes per symbol: uint8/16/32)
 * with the canonical code of `lengths` into dst[0..cap), from bit 0, zero-padding the last byte.
 * *n_bits receives the payload length in bits (the payload is dnnz_bit_bytes(*n_bits) bytes).
 * Errors: the length-set errors, DNNZ_E_ARGUMENT (a symbol >= n_alphabet or with length 0; then
 * *n_bits receives the position of the first such symbol), DNNZ_E_DST_TOO_SMALL. */
int dnnz_huf_encode_stream(const uint8_t *lengths, size_t n_alphabet, const void *symbols,
                           unsigned sym_width, size_t n, uint8_t *dst, size_t cap, uint64_t *n_bits);

/* One-shot decoder of a stream made by dnnz_huf_encode_stream: n symbols from src[0..size) into
 * out (width dnnz_huf_out_width(n_alphabet)). The stream must end exactly: the code bits of the
 * n symbols, then fewer than 8 zero padding bits up to the end of src.
 * Errors: the length-set errors, DNNZ_E_CORRUPT (a code that decodes to nothing),
 * DNNZ_E_TRUNCATED (src ends before the n-th symbol), DNNZ_E_TRAILING (a whole byte after the
 * last symbol's byte, or a non-zero padding bit), DNNZ_E_ALLOC. */
int dnnz_huf_decode_stream(const uint8_t *lengths, size_t n_alphabet, const uint8_t *src,
                           size_t size, size_t n, void *out);

/* Ranged variants (what streams packed back to back inside a larger buffer use):
 * encode_at writes the codes of symbols[0..n) into dst[0..cap) starting at bit bit_offset (the
 * bits before it in the first byte are kept), zero-pads the last byte, and returns the end
 * position in *bit_end; decode_at decodes n symbols from bit bit_start, reading no byte at or
 * after ceil(bit_end / 8), and returns the position after the last code in *bit_pos (the caller
 * checks it against what it expects). Same errors as the one-shot versions, less the
 * trailing-data rule. */
int dnnz_huf_encode_at(const uint8_t *lengths, size_t n_alphabet, const void *symbols,
                       unsigned sym_width, size_t n, uint8_t *dst, size_t cap, uint64_t bit_offset,
                       uint64_t *bit_end);
int dnnz_huf_decode_at(const uint8_t *lengths, size_t n_alphabet, const uint8_t *src, size_t size,
                       uint64_t bit_start, uint64_t bit_end, size_t n, void *out, uint64_t *bit_pos);
/* cffi:end */

/* ========================================================================================== */
/* C API for other modules (encodings, fused kernels)                                         */
/* ========================================================================================== */

/* Encode table: entry[s] = code << 8 | length (length 0: symbol not in the code). */
typedef struct {
    uint64_t *entry;
    uint32_t n_alphabet;
    uint32_t max_len;    /* longest code (0 for the empty code) */
    uint32_t n_used;
} dnnz_huf_ctable;

/* Validate lengths and build the encode table (allocates; free with dnnz_huf_ctable_free). */
int dnnz_huf_ctable_init(dnnz_huf_ctable *t, const uint8_t *lengths, size_t n_alphabet);
void dnnz_huf_ctable_free(dnnz_huf_ctable *t);

/* Exact number of bits the codes of symbols[0..n) take; DNNZ_E_ARGUMENT for a symbol that has no
 * code (then *n_bits = its position). */
int dnnz_huf_encoded_bits(const dnnz_huf_ctable *t, const void *symbols, unsigned sym_width,
                          size_t n, uint64_t *n_bits);

/* Append the codes of symbols[0..n) to a bit writer (any position). Never writes past the
 * writer's end (DNNZ_E_DST_TOO_SMALL). DNNZ_E_ARGUMENT for a symbol with no code (*bad_pos = its
 * position; bad_pos may be NULL). Does not finish the writer: call dnnz_bit_writer_finish. */
int dnnz_huf_encode(const dnnz_huf_ctable *t, dnnz_bit_writer *w, const void *symbols,
                    unsigned sym_width, size_t n, uint64_t *bad_pos);

/* Decode table. single[] entries: bits 0..5 code length (0: longer than DNNZ_HUF_TABLE_BITS, take
 * the long path), bit 6 DNNZ_HUF_INVALID (a prefix no code starts with), bits 8..31 the symbol.
 * multi[] entries (NULL for 4-byte outputs): the symbols of as many whole codes as fit in the
 * DNNZ_HUF_TABLE_BITS-bit prefix, packed in bytes 0..5 (six 1-byte or three 2-byte symbols, in
 * host order as an array of the output type), byte 6 the number of symbols (0: take the
 * single-symbol path), byte 7 the bits they take. */
typedef struct {
    uint32_t *single;
    uint64_t *multi;
    uint32_t *sorted;       /* used symbols in canonical order */
    uint64_t limit[DNNZ_HUF_MAX_CODE_LEN + 1]; /* end of the length-l codes, left-aligned on 32 bits */
    uint32_t first[DNNZ_HUF_MAX_CODE_LEN + 1]; /* first length-l code */
    uint32_t index[DNNZ_HUF_MAX_CODE_LEN + 1]; /* its symbol's position in sorted[] */
    uint32_t n_alphabet;
    uint32_t n_used;
    uint32_t max_len;       /* longest code (0 for the empty code) */
    uint32_t out_width;     /* 1, 2 or 4 */
    uint32_t syms_per_refill; /* symbols decodable after one refill: 56 / max(max_len, 1) */
    uint32_t multi_full;    /* 1 when every multi[] entry holds at least one symbol (no code
                             * longer than DNNZ_HUF_TABLE_BITS, no prefix without a code) */
    /* Second level for codes longer than DNNZ_HUF_TABLE_BITS (large alphabets): the long codes
     * of a primary prefix p resolve in sub[(sub_off[p] >> 5) + the next sub_bits[p] bits]
     * (sub_off[p] & 31 == sub_bits[p], 0 for a prefix without long codes); entries as single[]
     * (length | symbol << 8, the length counting the primary bits). NULL when there is no long
     * code or a code is longer than DNNZ_HUF_TABLE_BITS + DNNZ_HUF_SUB_MAX_BITS (then the
     * canonical search of dnnz_huf_decode_long). */
    uint32_t *sub;
    uint32_t *sub_off;
    uint8_t *sub_bits;
    /* Large alphabets (2- and 4-byte outputs with codes longer than DNNZ_HUF_TABLE_BITS): one
     * wider table of wide_bits (<= DNNZ_HUF_WIDE_BITS) bits, entries as single[] (0: a longer
     * code, take the two levels), so that most symbols take one lookup (NULL otherwise). */
    uint32_t *wide;
    uint32_t wide_bits;
} dnnz_huf_dtable;

#define DNNZ_HUF_WIDE_BITS 14 /* 64 KiB: measured best of 12..15 at k = 4096 */

#define DNNZ_HUF_SUB_MAX_BITS 12      /* bits a second-level table resolves at most */
#define DNNZ_HUF_SUB_MAX_ENTRIES (1u << 20) /* all second-level tables together (4 MiB) */

#define DNNZ_HUF_INVALID 0x40u

/* Validate lengths and build the decode table (allocates; free with dnnz_huf_dtable_free, which
 * is safe on a zeroed or failed table). */
int dnnz_huf_dtable_init(dnnz_huf_dtable *t, const uint8_t *lengths, size_t n_alphabet);
void dnnz_huf_dtable_free(dnnz_huf_dtable *t);

/* Decode n symbols from bit position bit_start of src, reading no byte at or after
 * src + min(size, ceil(bit_end / 8)), into out (t->out_width bytes per symbol). *bit_pos receives
 * the position after the n-th code. DNNZ_E_TRUNCATED when that position passes bit_end (or
 * bit_start does), DNNZ_E_CORRUPT for a code that decodes to nothing. Exactness after the last
 * symbol (padding, next stream) is the caller's rule: compare *bit_pos with what it expects. */
int dnnz_huf_decode(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t bit_start,
                    uint64_t bit_end, size_t n, void *out, uint64_t *bit_pos);

/* Decode n symbols from each of four streams at once (interleaved: the four dependency chains
 * run in parallel, which is what makes row-parallel formats fast), for 1-byte outputs
 * (t->out_width == 1). r[i] are readers already positioned (dnnz_bit_reader_init), o[i] receive
 * n symbols each. The readers are left after the n-th code of each stream (so a caller may
 * continue with another chunk). Returns the OR of the decode flags: test DNNZ_HUF_INVALID. */
uint32_t dnnz_huf_decode4_u8(const dnnz_huf_dtable *t, dnnz_bit_reader r[4], uint8_t *const o[4], size_t n);

/* The same four-stream decode for streams in one buffer src[0..size) (ham's rows): pos[i] is
 * the bit position of stream i on entry and after its n-th code on return. Reads no byte at or
 * after src + size; a position past 8 * size on return means the buffer was too short. */
uint32_t dnnz_huf_decode4_u8_at(const dnnz_huf_dtable *t, const uint8_t *src, size_t size,
                                uint64_t pos[4], uint8_t *const o[4], size_t n);
/* The same with n[i] symbols for stream i. */
uint32_t dnnz_huf_decode4_u8_at_n(const dnnz_huf_dtable *t, const uint8_t *src, size_t size,
                                  uint64_t pos[4], uint8_t *const o[4], const size_t n[4]);

/* The same for eight streams (pos[8], out[8], n symbols each): more dependency chains in flight
 * when every multi[] entry holds a symbol (the others decode four streams at a time). */
uint32_t dnnz_huf_decode8_u8_at(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[8],
                                uint8_t *const out[8], size_t n);
/* Eight streams, at least n[i] symbols each into out[i] (cap bytes each, cap >= max n[i] + 64:
 * a stream that is done may go on past its n[i] while the others catch up). pos[i] stays exact
 * only where got[i] == n[i] (got: the counts decoded; may be NULL). Reads no byte at or after
 * src + size. */
uint32_t dnnz_huf_decode8_u8_atleast(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[8],
                                     uint8_t *const out[8], const size_t n[8], size_t cap, size_t got[8]);

/* The same four-stream decode, n[i] symbols for stream i, for any output width (out[i] of
 * t->out_width bytes per symbol): 1-byte outputs take dnnz_huf_decode4_u8_at_n; wider ones
 * (large alphabets) decode through both table levels, branch-free and interleaved. */
uint32_t dnnz_huf_decode4_wide_at(const dnnz_huf_dtable *t, const uint8_t *src, size_t size, uint64_t pos[4],
                                  void *const out[4], const size_t n[4]);

/* Same for one stream, any width (t->out_width bytes per symbol). */
uint32_t dnnz_huf_decode_reader(const dnnz_huf_dtable *t, dnnz_bit_reader *r, void *out, size_t n);

/* Slow path of dnnz_huf_decode_symbol for codes longer than DNNZ_HUF_TABLE_BITS. */
uint32_t dnnz_huf_decode_long(const dnnz_huf_dtable *t, dnnz_bit_reader *r, uint32_t *flags);

/* Decode one symbol. Needs r->avail >= t->max_len (a refill gives >= 56 bits, so up to
 * t->syms_per_refill calls between refills). A prefix that no code starts with (only possible in
 * the one-symbol and empty codes) consumes one bit, returns symbol 0 and ORs DNNZ_HUF_INVALID into
 * *flags: test the flags once at the end (branch-free error accumulation). */
DNNZ_INLINE uint32_t dnnz_huf_decode_symbol(const dnnz_huf_dtable *t, dnnz_bit_reader *r, uint32_t *flags)
{
    uint32_t e = t->single[r->acc >> (64 - DNNZ_HUF_TABLE_BITS)];
    unsigned len = e & 63;
    if (DNNZ_UNLIKELY(len == 0))
        return dnnz_huf_decode_long(t, r, flags);
    dnnz_bit_skip(r, len);
    *flags |= e;
    return e >> 8;
}

#endif /* DNNZ_HUF_H */
