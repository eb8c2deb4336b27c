"""Canonical Huffman codes over integer alphabets (C kernels in csrc/huf.c).

A code is described by its code lengths alone: one length per symbol, 0 for a symbol the code
does not use. Codes are canonical (shortest first, ties by symbol value, as DEFLATE), bits are
written most significant bit first, and the last byte is padded with zero bits. The exact format
is in spec/huffman.md.

>>> import numpy as np
>>> from pydnnz import huffman
>>> lengths = huffman.code_lengths([5, 2, 1, 1])
>>> lengths.tolist()
[1, 2, 3, 3]
>>> payload, n_bits = huffman.encode(np.array([0, 1, 0, 3], dtype=np.uint8), lengths)
>>> payload.hex(), n_bits
('4e', 7)
>>> huffman.decode(payload, 4, lengths).tolist()
[0, 1, 0, 3]
"""
import operator

import numpy as np

from . import _native as C
from ._native import bytes_ptr, check, contiguous, ptr
from .errors import CodeLengthError, InvalidArgumentError, TruncatedError

__all__ = ["code_lengths", "encode", "decode", "MAX_CODE_LEN", "MAX_SYMBOLS"]

#: Longest code length the format allows, in bits.
MAX_CODE_LEN = int(C.DNNZ_HUF_MAX_CODE_LEN)
#: Largest alphabet (number of symbols, used or not).
MAX_SYMBOLS = int(C.DNNZ_HUF_MAX_SYMBOLS)


def _int_array(values, what):
    """`values` as a 1-D integer ndarray (a list, a tuple or any integer ndarray)."""
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind not in "iub":
        if arr.size == 0 and arr.dtype.kind == "f":
            arr = arr.astype(np.int64)  # np.asarray([]) is float64
        else:
            raise InvalidArgumentError(f"{what} must be an array of integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def _alphabet_size(n, what):
    if n < 1:
        raise InvalidArgumentError(f"{what} is empty: an alphabet has at least one symbol")
    if n > MAX_SYMBOLS:
        raise InvalidArgumentError(f"{what} has {n} symbols, above the limit of {MAX_SYMBOLS}")


def _lengths_array(lengths):
    arr = _int_array(lengths, "lengths")
    _alphabet_size(arr.size, "lengths")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.size and arr.min() < 0:
        raise InvalidArgumentError(f"lengths must be non-negative, got {int(arr.min())} "
                                   f"for symbol {int(np.argmin(arr))}")
    if arr.size and arr.max() > MAX_CODE_LEN:
        raise CodeLengthError(f"code length {int(arr.max())} of symbol {int(np.argmax(arr))} "
                              f"is above the maximum of {MAX_CODE_LEN}")
    return contiguous(arr, np.uint8)


def code_lengths(counts, max_len=None):
    """Optimal code lengths (uint8 array) for the symbol counts, no code longer than `max_len`.

    `counts[s]` is how often symbol `s` occurs (non-negative integers; the sum must stay below
    2**58). When the plain Huffman code fits in `max_len` bits (default and cap: MAX_CODE_LEN =
    32) it is returned as is; otherwise the optimal length-limited code (package-merge). Unused
    symbols get length 0 and a lone used symbol gets length 1.

    >>> code_lengths([10, 1, 1, 1, 0]).tolist()
    [1, 3, 3, 2, 0]
    >>> code_lengths([8, 4, 2, 1, 1], max_len=3).tolist()
    [1, 3, 3, 3, 3]
    """
    arr = _int_array(counts, "counts")
    _alphabet_size(arr.size, "counts")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise InvalidArgumentError(f"counts must be non-negative, got {int(arr.min())} "
                                   f"for symbol {int(np.argmin(arr))}")
    if max_len is None:
        max_len = MAX_CODE_LEN
    try:
        max_len = operator.index(max_len)
    except TypeError:
        raise InvalidArgumentError(f"max_len must be an integer, got {max_len!r}") from None
    if not 1 <= max_len <= MAX_CODE_LEN:
        raise InvalidArgumentError(f"max_len must be in [1, {MAX_CODE_LEN}], got {max_len}")
    n_used = int(np.count_nonzero(arr))
    if n_used > (1 << max_len):
        raise InvalidArgumentError(f"{n_used} used symbols cannot have codes of at most "
                                   f"{max_len} bits (2**{max_len} < {n_used})")
    c = contiguous(arr, np.uint64)
    out = np.zeros(arr.size, dtype=np.uint8)
    check(C.dnnz_huf_code_lengths(ptr(c), c.size, max_len, ptr(out, writable=True)),
          "computing Huffman code lengths")
    return out


_SYM_TYPES = {np.dtype(np.uint8): 1, np.dtype(np.uint16): 2, np.dtype(np.uint32): 4}


def encode(symbols, lengths):
    """Encode `symbols` with the canonical code of `lengths`: returns (payload bytes, bit count).

    The payload is the codes back to back, most significant bit first, the last byte padded with
    zero bits; `n_bits` is the number of code bits (len(payload) == ceil(n_bits / 8)).

    >>> encode([2, 2, 0], [1, 2, 2])
    (b'\\xf0', 5)
    """
    lens = _lengths_array(lengths)
    sym = _int_array(symbols, "symbols")
    if sym.dtype not in _SYM_TYPES:
        if sym.size and sym.min() < 0:
            i = int(np.argmin(sym))
            raise InvalidArgumentError(f"symbols must be non-negative, got {int(sym[i])} at position {i}")
        if sym.size and sym.max() >= lens.size:
            i = int(np.argmax(sym))
            raise InvalidArgumentError(f"symbol {int(sym[i])} at position {i} is outside the "
                                       f"alphabet of {lens.size} symbols")
        sym = sym.astype(np.uint32)
    sym = np.ascontiguousarray(sym)
    max_len = int(lens.max())
    cap = int(C.dnnz_huf_encode_bound(sym.size, max_len))
    dst = np.empty(cap, dtype=np.uint8)
    n_bits = C.new("uint64_t *")
    status = C.dnnz_huf_encode_stream(ptr(lens), lens.size, ptr(sym), _SYM_TYPES[sym.dtype], sym.size,
                                        ptr(dst, writable=True), cap, n_bits)
    if status == C.DNNZ_E_ARGUMENT:
        i = int(n_bits[0])
        s = int(sym[i])
        why = (f"is outside the alphabet of {lens.size} symbols" if s >= lens.size
               else "has code length 0 (not in the code)")
        raise InvalidArgumentError(f"Huffman encoding: symbol {s} at position {i} {why}")
    check(status, "Huffman encoding")
    nb = int(n_bits[0])
    return dst[: (nb + 7) // 8].tobytes(), nb


def decode(payload, n_symbols, lengths):
    """Decode `n_symbols` symbols from `payload` (as made by `encode`) with the code of `lengths`.

    Returns uint8 for alphabets of at most 256 symbols, uint16 up to 65,536, uint32 above.
    Validates everything: bad length sets raise CodeLengthError; a payload that ends early raises
    TruncatedError; bytes after the last code, non-zero padding bits or a code that decodes to
    nothing raise CorruptDataError.

    >>> decode(b'\\xf0', 3, [1, 2, 2]).tolist()
    [2, 2, 0]
    """
    lens = _lengths_array(lengths)
    try:
        n = operator.index(n_symbols)
    except TypeError:
        raise InvalidArgumentError(f"n_symbols must be an integer, got {n_symbols!r}") from None
    if n < 0:
        raise InvalidArgumentError(f"n_symbols must be non-negative, got {n}")
    mv = memoryview(payload).cast("B") if not isinstance(payload, np.ndarray) else payload
    size = mv.nbytes
    if n > 8 * size:
        # every code takes at least one bit: refuse before allocating the output
        raise TruncatedError(f"Huffman decoding: {n} symbols need at least {n} bits, "
                             f"the payload has {8 * size}")
    width = int(C.dnnz_huf_out_width(lens.size))
    out = np.empty(n, dtype={1: np.uint8, 2: np.uint16, 4: np.uint32}[width])
    check(C.dnnz_huf_decode_stream(ptr(lens), lens.size, bytes_ptr(payload), size, n,
                                     C.cast("void *", ptr(out, writable=True))),
          f"Huffman decoding of {n} symbols from {size} bytes")
    return out
