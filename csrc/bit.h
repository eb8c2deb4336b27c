/* bit.h: 64-bit buffered bit writer and reader, MSB-first (spec/encodings.md, "Bit order").
 *
 * Bit order: the first bit of a stream is the most significant bit of its first byte
 * (bitarray's "big" endianness). A value of n bits is written most significant bit first, so
 * writing 0b101 (3 bits) then 0b01 (2 bits) into an empty stream gives the byte 0b10101000.
 * Bit positions count from the most significant bit of byte 0: bit p lives in byte p >> 3, at
 * mask 0x80 >> (p & 7).
 *
 * These are small functions that must inline for speed (zstd's bitstream.h habit), so they are
 * static inline here, outside the cffi block: other C modules (Huffman, encodings, fused dot
 * kernels) include this header. Safe and fast variants are named side by side: the *_fast ones
 * skip the buffer checks and are only correct where the caller has proved the room (see each).
 *
 * Writer: bits gather in the low end of a 64-bit accumulator; a flush stores whole bytes.
 *   Contract: at most 56 bits may be added between two flushes (after a flush at most 7 bits are
 *   pending, and 7 + 56 < 64). dnnz_bit_flush_fast stores 8 bytes at the current byte position,
 *   so it needs 8 bytes of room there; it writes zero bits after the pending ones, which later
 *   writes overwrite. dnnz_bit_flush checks the room and never writes past `end`.
 * Reader: the next bit is bit 63 of a 64-bit accumulator that holds `avail` valid bits (the bits
 *   below them are zero). It never reads a byte at or after `end`: past the end it shifts in
 *   zero bits and counts them in `pad_bits`, so a caller detects a truncated stream by comparing
 *   dnnz_bit_reader_tell() with the stream's end after the fact, without any read out of bounds.
 */
#ifndef DNNZ_BIT_H
#define DNNZ_BIT_H

#include <string.h>

#include "common.h"

/* cffi:begin */
/* Number of bytes needed to hold n_bits bits (rounded up). */
uint64_t dnnz_bit_bytes(uint64_t n_bits);
/* cffi:end */

/* ------------------------------------------------------------------------------------------ */
/* Byte helpers                                                                                */
/* ------------------------------------------------------------------------------------------ */

DNNZ_INLINE uint64_t dnnz_bit_load_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return v;
#else
    return __builtin_bswap64(v);
#endif
}

DNNZ_INLINE void dnnz_bit_store_be64(uint8_t *p, uint64_t v)
{
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint64_t acc;    /* pending bits in the low `nbits` bits (bits above them are garbage) */
    unsigned nbits;  /* pending bits not yet stored as whole bytes */
    int overflow;    /* set by the safe flush when the stream does not fit */
    uint8_t *start;  /* byte 0 of the buffer (bit positions count from here) */
    uint8_t *ptr;    /* byte that receives the next pending bits */
    uint8_t *end;    /* one past the last writable byte */
} dnnz_bit_writer;

/* Start writing at bit position bit_offset of dst[0..cap). The bits of the first byte before the
 * offset are kept (so streams can be packed back to back at any bit position); everything from
 * the offset on is overwritten. bit_offset must be <= 8 * cap (checked: returns DNNZ_E_ARGUMENT). */
DNNZ_INLINE int dnnz_bit_writer_init(dnnz_bit_writer *w, uint8_t *dst, size_t cap, uint64_t bit_offset)
{
    if (bit_offset > (uint64_t)cap * 8)
        return DNNZ_E_ARGUMENT;
    w->start = dst;
    w->ptr = dst + (bit_offset >> 3);
    w->end = dst + cap;
    w->nbits = (unsigned)(bit_offset & 7);
    w->acc = w->nbits ? (uint64_t)(*w->ptr >> (8 - w->nbits)) : 0;
    w->overflow = 0;
    return DNNZ_OK;
}

/* Append the low n bits of value (n <= 32; the bits of value above n must be zero). */
DNNZ_INLINE void dnnz_bit_add(dnnz_bit_writer *w, uint64_t value, unsigned n)
{
    w->acc = (w->acc << n) | value;
    w->nbits += n;
}

/* Store the whole pending bytes; needs w->end - w->ptr >= 8 (unchecked). */
DNNZ_INLINE void dnnz_bit_flush_fast(dnnz_bit_writer *w)
{
    /* (acc << 1) << (63 - nbits) left-aligns the pending bits without a shift by 64 at nbits == 0. */
    dnnz_bit_store_be64(w->ptr, (w->acc << 1) << (63 - w->nbits));
    w->ptr += w->nbits >> 3;
    w->nbits &= 7;
}

/* Store the whole pending bytes, never past w->end (sets w->overflow instead). */
DNNZ_INLINE void dnnz_bit_flush(dnnz_bit_writer *w)
{
    if (DNNZ_LIKELY(w->end - w->ptr >= 8)) {
        dnnz_bit_flush_fast(w);
        return;
    }
    while (w->nbits >= 8) {
        if (w->ptr >= w->end) {
            w->overflow = 1;
            w->nbits &= 7;
            return;
        }
        *w->ptr++ = (uint8_t)(w->acc >> (w->nbits - 8));
        w->nbits -= 8;
    }
}

/* Bit position of the end of what was written so far (from the start of the buffer). */
DNNZ_INLINE uint64_t dnnz_bit_writer_tell(const dnnz_bit_writer *w)
{
    return (uint64_t)(w->ptr - w->start) * 8 + w->nbits;
}

/* Flush everything and pad the last partial byte with zero bits. Returns the bit position of the
 * end of the stream through *bit_end; DNNZ_E_DST_TOO_SMALL when the stream did not fit. */
DNNZ_INLINE int dnnz_bit_writer_finish(dnnz_bit_writer *w, uint64_t *bit_end)
{
    dnnz_bit_flush(w);
    if (w->overflow)
        return DNNZ_E_DST_TOO_SMALL;
    if (w->nbits) {
        if (w->ptr >= w->end)
            return DNNZ_E_DST_TOO_SMALL;
        *w->ptr = (uint8_t)(w->acc << (8 - w->nbits));
    }
    *bit_end = dnnz_bit_writer_tell(w);
    return DNNZ_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint64_t acc;          /* next bit at bit 63; the bits below the `avail` valid ones are zero */
    unsigned avail;        /* valid bits in acc (0..64) */
    const uint8_t *ptr;    /* next byte to load */
    const uint8_t *start;  /* byte 0 of the buffer */
    const uint8_t *end;    /* one past the last readable byte: never read */
    uint64_t pad_bits;     /* zero bits shifted in past `end` */
} dnnz_bit_reader;

/* Bit position of the next bit to read, from the start of the buffer (it may pass 8 * size when
 * the reader went past the end: that is how truncation shows). */
DNNZ_INLINE uint64_t dnnz_bit_reader_tell(const dnnz_bit_reader *r)
{
    return (uint64_t)(r->ptr - r->start) * 8 + r->pad_bits - r->avail;
}

/* Refill to at least 56 valid bits; needs r->end - r->ptr >= 8 (unchecked). Branch-free refill
 * (Giesen's "variant 4"): load 8 bytes, keep the whole bytes that fit. */
DNNZ_INLINE void dnnz_bit_refill_fast(dnnz_bit_reader *r)
{
    r->acc |= dnnz_bit_load_be64(r->ptr) >> r->avail;
    r->ptr += (63 - r->avail) >> 3;
    r->avail |= 56;
}

/* Refill to at least 56 valid bits, never reading at or past r->end (zero bits past it). */
DNNZ_INLINE void dnnz_bit_refill(dnnz_bit_reader *r)
{
    if (DNNZ_LIKELY(r->end - r->ptr >= 8)) {
        dnnz_bit_refill_fast(r);
        return;
    }
    while (r->avail <= 55) { /* ends with 56..63 valid bits, as the fast refill does */
        if (r->ptr < r->end)
            r->acc |= (uint64_t)*r->ptr++ << (56 - r->avail);
        else
            r->pad_bits += 8;
        r->avail += 8;
    }
}

/* Is the fast refill allowed now? */
DNNZ_INLINE int dnnz_bit_reader_can_refill_fast(const dnnz_bit_reader *r)
{
    return r->end - r->ptr >= 8;
}

/* The next n bits (1 <= n <= 32) without consuming them; needs avail >= n. */
DNNZ_INLINE uint32_t dnnz_bit_peek(const dnnz_bit_reader *r, unsigned n)
{
    return (uint32_t)(r->acc >> (64 - n));
}

/* Consume n bits (n <= avail). */
DNNZ_INLINE void dnnz_bit_skip(dnnz_bit_reader *r, unsigned n)
{
    r->acc <<= n;
    r->avail -= n;
}

/* Read n bits (1 <= n <= 32); needs avail >= n. */
DNNZ_INLINE uint32_t dnnz_bit_read(dnnz_bit_reader *r, unsigned n)
{
    uint32_t v = dnnz_bit_peek(r, n);
    dnnz_bit_skip(r, n);
    return v;
}

/* Start reading src[0..size) at bit position bit_offset. DNNZ_E_TRUNCATED when the offset lies
 * past the end of the buffer. */
DNNZ_INLINE int dnnz_bit_reader_init(dnnz_bit_reader *r, const uint8_t *src, size_t size, uint64_t bit_offset)
{
    r->start = src;
    r->end = src + size;
    r->acc = 0;
    r->avail = 0;
    r->pad_bits = 0;
    if (bit_offset > (uint64_t)size * 8) {
        r->ptr = r->end; /* a defined, empty reader */
        return DNNZ_E_TRUNCATED;
    }
    r->ptr = src + (bit_offset >> 3);
    dnnz_bit_refill(r);
    dnnz_bit_skip(r, (unsigned)(bit_offset & 7));
    return DNNZ_OK;
}

#endif /* DNNZ_BIT_H */
