"""pydnnz.huffman and the C codec behind it (csrc/huf.c, csrc/bit.h): round trips, optimality
against bitarray's Huffman utilities, length-limited optimality against brute force, the spec's
worked example, and every error path."""
import itertools
import os

import numpy as np
import pytest
from bitarray import bitarray
from bitarray.util import canonical_decode, huffman_code

from pydnnz import errors, huffman
from pydnnz._native import ffi, lib, ptr


def laplace_symbols(rng, n, k, scale):
    """Laplacian-quantized symbols in [0, k): what a quantized weight matrix looks like."""
    v = np.rint(rng.laplace(0.0, scale, n)).astype(np.int64) + k // 2
    return np.clip(v, 0, k - 1)


def cost(counts, lengths):
    return int(np.dot(np.asarray(counts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))


def kraft(lengths):
    from fractions import Fraction
    return sum(Fraction(1, 2 ** int(l)) for l in lengths if l)


def reference_canonical(lengths):
    """DEFLATE's canonical code assignment, written independently of the C code."""
    codes = {}
    code = 0
    order = sorted((l, s) for s, l in enumerate(lengths) if l)
    prev = 0
    for l, s in order:
        code <<= l - prev
        prev = l
        codes[s] = format(code, f"0{l}b")
        code += 1
    return codes


def round_trip(symbols, lengths):
    payload, n_bits = huffman.encode(symbols, lengths)
    assert len(payload) == (n_bits + 7) // 8
    out = huffman.decode(payload, len(symbols), lengths)
    np.testing.assert_array_equal(out.astype(np.int64), np.asarray(symbols, dtype=np.int64))
    return payload, n_bits, out


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 17, 32, 255, 256, 257, 4096, 65536, 65537])
@pytest.mark.parametrize("n", [0, 1, 2, 9, 63, 1000, 20000])
def test_round_trip_laplacian(k, n):
    rng = np.random.default_rng(k * 1000 + n)
    sym = laplace_symbols(rng, n, k, max(k / 10, 0.3))
    counts = np.bincount(sym, minlength=k)
    lengths = huffman.code_lengths(counts) if n else np.eye(1, k, dtype=np.uint8)[0]
    payload, n_bits, out = round_trip(sym, lengths)
    assert n_bits == cost(counts, lengths)
    assert out.dtype == (np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.uint32)


def test_round_trip_million_symbols():
    rng = np.random.default_rng(1)
    for k, scale in [(2, 0.4), (32, 3.0), (4096, 200.0)]:
        sym = laplace_symbols(rng, 10**6, k, scale)
        lengths = huffman.code_lengths(np.bincount(sym, minlength=k))
        round_trip(sym.astype(np.uint16), lengths)


def test_uniform_counts_give_fixed_length_codes():
    for k in [2, 4, 256, 1024]:
        lengths = huffman.code_lengths(np.full(k, 7))
        assert (lengths == int(np.log2(k))).all()
        round_trip(np.arange(k), lengths)
    lengths = huffman.code_lengths(np.full(65536, 3))
    assert (lengths == 16).all()
    rng = np.random.default_rng(2)
    round_trip(rng.integers(0, 65536, 50000, dtype=np.uint16), lengths)


def test_skewed_counts():
    counts = np.array([10**9, 1, 1, 1, 1, 0, 1])
    lengths = huffman.code_lengths(counts)
    assert lengths[0] == 1 and lengths[5] == 0
    sym = np.array([0] * 100 + [1, 2, 3, 4, 6] * 3)
    round_trip(sym, lengths)


def test_one_symbol_alphabets():
    for k, s in [(1, 0), (5, 3), (300, 299), (70000, 12345)]:
        counts = np.zeros(k, np.int64)
        counts[s] = 42
        lengths = huffman.code_lengths(counts)
        assert lengths[s] == 1 and lengths.sum() == 1
        payload, n_bits, _ = round_trip(np.full(42, s), lengths)
        assert n_bits == 42 and payload == bytes(6)  # 42 zero bits
    # the unused code '1' decodes to nothing
    with pytest.raises(errors.CorruptDataError, match="corrupt"):
        huffman.decode(b"\x40", 2, [1])


def test_empty_input_and_empty_code():
    assert huffman.encode(np.array([], np.uint8), [1, 1]) == (b"", 0)
    assert huffman.decode(b"", 0, [1, 1]).size == 0
    zero = huffman.code_lengths([0, 0, 0])
    assert zero.tolist() == [0, 0, 0]
    assert huffman.encode([], zero) == (b"", 0)
    assert huffman.decode(b"", 0, zero).size == 0
    with pytest.raises(errors.CorruptDataError):
        huffman.decode(b"\x00", 1, zero)
    with pytest.raises(errors.InvalidArgumentError, match="length 0"):
        huffman.encode([1], zero)


def test_longest_codes():
    # Fibonacci counts make the plain Huffman code as deep as possible
    fib = [1, 1]
    while len(fib) < 33:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(fib)  # 33 symbols, a 32-bit code, limit does not bind
    assert lengths.max() == 32 and kraft(lengths) == 1
    ref = huffman_code({i: c for i, c in enumerate(fib)})
    assert cost(fib, lengths) == sum(c * len(ref[i]) for i, c in enumerate(fib))
    rng = np.random.default_rng(3)
    sym = rng.integers(0, 33, 5000)
    sym[:3] = [0, 1, 0]  # the two 32-bit codes first
    round_trip(sym, lengths)
    # the cap binds for 40 Fibonacci symbols: package-merge keeps the code at 32 bits
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(fib)
    assert lengths.max() == 32 and kraft(lengths) == 1
    round_trip(rng.integers(0, 40, 5000), lengths)


def test_large_alphabet_long_codes():
    rng = np.random.default_rng(4)
    k = 200000
    counts = rng.zipf(1.3, k).astype(np.int64) % 10**9
    lengths = huffman.code_lengths(counts, max_len=24)
    assert lengths.max() <= 24 and kraft(lengths) == 1
    sym = rng.choice(np.flatnonzero(counts), 30000)
    round_trip(sym, lengths)


# --------------------------------------------------------------------------------------------
# Optimality
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_cost_equals_bitarray_huffman(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 600))
    kind = seed % 3
    if kind == 0:
        counts = rng.integers(0, 1000, k)
    elif kind == 1:
        counts = np.bincount(laplace_symbols(rng, 5000, k, k / 20 + 0.5), minlength=k)
    else:
        counts = (rng.pareto(1.0, k) * 100).astype(np.int64)
    if np.count_nonzero(counts) < 2:
        counts[:2] += 1
    lengths = huffman.code_lengths(counts)
    ref = huffman_code({i: int(c) for i, c in enumerate(counts) if c})
    assert cost(counts, lengths) == sum(int(counts[i]) * len(code) for i, code in ref.items())
    assert kraft(lengths) == 1
    assert ((lengths == 0) == (counts == 0)).all()


def brute_force_cost(counts, max_len):
    """Smallest cost over every complete length set with lengths in [1, max_len]."""
    best = None
    for ls in itertools.product(range(1, max_len + 1), repeat=len(counts)):
        if kraft(ls) == 1:
            c = cost(counts, ls)
            best = c if best is None else min(best, c)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_length_limited_is_optimal_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 7))
    counts = (rng.pareto(0.7, n) * 10 + 1).astype(np.int64)
    max_len = int(rng.integers(int(np.ceil(np.log2(n))), 5))
    lengths = huffman.code_lengths(counts, max_len=max_len)
    assert lengths.max() <= max_len and kraft(lengths) == 1
    assert cost(counts, lengths) == brute_force_cost(counts, max_len)


def test_length_limited_large():
    rng = np.random.default_rng(5)
    counts = (rng.pareto(0.5, 3000) * 10).astype(np.int64) + 1
    free = huffman.code_lengths(counts)
    prev = cost(counts, free)
    for max_len in range(int(free.max()) - 1, 11, -1):
        lengths = huffman.code_lengths(counts, max_len=max_len)
        assert lengths.max() <= max_len and kraft(lengths) == 1
        c = cost(counts, lengths)
        assert c >= prev  # a tighter limit never helps
        prev = c
    round_trip(rng.choice(3000, 10000), lengths)


def test_limit_that_does_not_bind_changes_nothing():
    counts = [50, 20, 10, 5, 5, 1]
    assert huffman.code_lengths(counts, max_len=12).tolist() == huffman.code_lengths(counts).tolist()


# --------------------------------------------------------------------------------------------
# Canonical rule, bit order and the spec's worked example
# --------------------------------------------------------------------------------------------

def test_canonical_codes_match_deflate_rule_and_bitarray_decoder():
    rng = np.random.default_rng(6)
    for _ in range(20):
        k = int(rng.integers(2, 300))
        counts = rng.integers(0, 50, k)
        counts[:2] += 1
        lengths = huffman.code_lengths(counts)
        ref = reference_canonical(lengths.tolist())
        sym = rng.choice(np.flatnonzero(counts), 500)
        payload, n_bits = huffman.encode(sym, lengths)
        expected = "".join(ref[int(s)] for s in sym)
        bits = bitarray(endian="big")
        bits.frombytes(payload)
        assert bits.to01()[:n_bits] == expected
        assert not bits[n_bits:].any()
        # bitarray's canonical decoder reads our payload
        count = [int((lengths == l).sum()) for l in range(int(lengths.max()) + 1)]
        symbol = [s for _, s in sorted((int(l), s) for s, l in enumerate(lengths) if l)]
        assert list(canonical_decode(bits[:n_bits], count, symbol)) == sym.tolist()


def test_spec_worked_example():
    # spec/huffman.md, "Worked example": these bytes are in the spec; keep both in step
    text = "abracadabra"
    sym = np.array(["abcdr".index(c) for c in text])
    counts = np.bincount(sym, minlength=5)
    assert counts.tolist() == [5, 2, 1, 1, 2]
    lengths = huffman.code_lengths(counts)
    assert lengths.tolist() == [1, 3, 3, 3, 3]
    assert reference_canonical(lengths.tolist()) == {0: "0", 1: "100", 2: "101", 3: "110", 4: "111"}
    payload, n_bits = huffman.encode(sym, lengths)
    assert (payload.hex(), n_bits) == ("4eac9c", 23)
    assert huffman.decode(bytes.fromhex("4eac9c"), 11, lengths).tolist() == sym.tolist()
    for bad in ["4eac9d", "4eac9c00"]:
        with pytest.raises(errors.CorruptDataError, match="after the end"):
            huffman.decode(bytes.fromhex(bad), 11, lengths)
    with pytest.raises(errors.TruncatedError):
        huffman.decode(bytes.fromhex("4eac"), 11, lengths)
    assert huffman.encode([1, 1, 1], [0, 1]) == (b"\x00", 3)
    with pytest.raises(errors.CorruptDataError, match="corrupt"):
        huffman.decode(b"\x20", 3, [0, 1])


def test_ranged_streams_at_odd_bit_offsets():
    """Several streams packed back to back at arbitrary bit positions (how encodings use it)."""
    rng = np.random.default_rng(7)
    lengths = huffman.code_lengths(np.bincount(laplace_symbols(rng, 5000, 64, 6), minlength=64) + 1)
    streams = [laplace_symbols(rng, int(n), 64, 6).astype(np.uint8) for n in rng.integers(0, 300, 40)]
    buf = np.zeros(40 * 300 * 4 + 64, np.uint8)
    pos = [3]
    end = ffi.new("uint64_t *")
    for s in streams:
        st = lib.dnnz_huf_encode_at(ptr(lengths), lengths.size, ptr(s), 1, s.size,
                                    ptr(buf, writable=True), buf.size, pos[-1], end)
        assert st == lib.DNNZ_OK
        pos.append(int(end[0]))
    size = (pos[-1] + 7) // 8
    data = buf[:size].copy()  # exact-size buffer: a read past it would show under ASan
    for i in rng.permutation(len(streams)):
        out = np.empty(streams[i].size, np.uint8)
        st = lib.dnnz_huf_decode_at(ptr(lengths), lengths.size, ptr(data), data.size, pos[i],
                                    pos[i + 1], out.size, ffi.cast("void *", ptr(out, writable=True)), end)
        assert st == lib.DNNZ_OK and int(end[0]) == pos[i + 1]
        np.testing.assert_array_equal(out, streams[i])
    # a stream bounded one bit short is truncated
    i = int(np.argmax([s.size for s in streams]))
    out = np.empty(streams[i].size, np.uint8)
    st = lib.dnnz_huf_decode_at(ptr(lengths), lengths.size, ptr(data), data.size, pos[i],
                                pos[i + 1] - 1, out.size, ffi.cast("void *", ptr(out, writable=True)), end)
    assert st == lib.DNNZ_E_TRUNCATED


# --------------------------------------------------------------------------------------------
# Validation and errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lengths, exc, match", [
    ([1, 1, 1], errors.CodeLengthError, "over-subscribed"),
    ([1, 2, 2, 3], errors.CodeLengthError, "over-subscribed"),
    ([1, 2], errors.CodeLengthError, "incomplete"),
    ([2], errors.CodeLengthError, "incomplete"),
    ([0, 3, 0], errors.CodeLengthError, "incomplete"),
    ([1, 33], errors.CodeLengthError, "above the maximum"),
    ([1, 1, 200], errors.CodeLengthError, "above the maximum"),
    ([1, -1], errors.InvalidArgumentError, "non-negative"),
    ([], errors.InvalidArgumentError, "empty"),
    ([[1, 1]], errors.InvalidArgumentError, "one-dimensional"),
    ([1.0, 1.0], errors.InvalidArgumentError, "integers"),
])
def test_bad_length_sets(lengths, exc, match):
    with pytest.raises(exc, match=match):
        huffman.decode(b"\x00", 1, lengths)
    with pytest.raises(exc, match=match):
        huffman.encode([0], lengths)


def test_bad_length_sets_in_c_directly():
    for arr, status in [([1, 1, 1], lib.DNNZ_E_OVERSUBSCRIBED), ([1, 2], lib.DNNZ_E_INCOMPLETE),
                        ([1, 40], lib.DNNZ_E_CODE_TOO_LONG), ([2, 2, 2, 2], lib.DNNZ_OK),
                        ([0, 1], lib.DNNZ_OK), ([0, 0], lib.DNNZ_OK)]:
        a = np.array(arr, np.uint8)
        assert lib.dnnz_huf_check_lengths(ptr(a), a.size, ffi.NULL, ffi.NULL) == status


def test_bad_code_length_arguments():
    with pytest.raises(errors.InvalidArgumentError, match="non-negative"):
        huffman.code_lengths([3, -1])
    with pytest.raises(errors.InvalidArgumentError, match="empty"):
        huffman.code_lengths([])
    with pytest.raises(errors.InvalidArgumentError, match="integers"):
        huffman.code_lengths([1.5, 2])
    with pytest.raises(errors.InvalidArgumentError, match="integers"):
        huffman.code_lengths(["a", "b"])
    for bad in [0, 33, -1]:
        with pytest.raises(errors.InvalidArgumentError, match="max_len"):
            huffman.code_lengths([1, 2], max_len=bad)
    with pytest.raises(errors.InvalidArgumentError, match="max_len must be an integer"):
        huffman.code_lengths([1, 2], max_len=2.5)
    with pytest.raises(errors.InvalidArgumentError, match="cannot have codes of at most 2 bits"):
        huffman.code_lengths([1, 1, 1, 1, 1], max_len=2)
    with pytest.raises(errors.InvalidArgumentError, match="limit"):
        huffman.code_lengths(np.ones(huffman.MAX_SYMBOLS + 1, np.uint8))
    with pytest.raises(errors.InvalidArgumentError, match="size above a documented limit"):
        huffman.code_lengths(np.array([2**62, 1], np.uint64))
    # max_len exactly log2(n) is a fixed-length code
    assert huffman.code_lengths([1, 9, 1, 1], max_len=2).tolist() == [2, 2, 2, 2]


def test_bad_encode_arguments():
    lengths = [1, 2, 2, 0]
    with pytest.raises(errors.InvalidArgumentError, match="symbol 4 at position 1 is outside the alphabet"):
        huffman.encode([0, 4], lengths)
    with pytest.raises(errors.InvalidArgumentError, match="symbol 7 at position 2 is outside"):
        huffman.encode(np.array([0, 1, 7], np.uint8), lengths)
    with pytest.raises(errors.InvalidArgumentError, match="symbol 3 at position 0 has code length 0"):
        huffman.encode(np.array([3], np.uint16), lengths)
    with pytest.raises(errors.InvalidArgumentError, match="non-negative"):
        huffman.encode([0, -2], lengths)
    with pytest.raises(errors.InvalidArgumentError, match="integers"):
        huffman.encode([0.0, 1.0], lengths)
    with pytest.raises(errors.InvalidArgumentError, match="one-dimensional"):
        huffman.encode(np.zeros((2, 2), np.uint8), lengths)


def test_bad_decode_arguments():
    with pytest.raises(errors.InvalidArgumentError, match="n_symbols must be non-negative"):
        huffman.decode(b"\x00", -1, [1, 1])
    with pytest.raises(errors.InvalidArgumentError, match="n_symbols must be an integer"):
        huffman.decode(b"\x00", 1.0, [1, 1])
    with pytest.raises(TypeError):
        huffman.decode("text", 1, [1, 1])
    with pytest.raises(errors.TruncatedError, match="at least 9 bits"):
        huffman.decode(b"\x00", 9, [1, 1])


def test_truncated_and_trailing_payloads():
    rng = np.random.default_rng(8)
    sym = laplace_symbols(rng, 999, 40, 4)
    lengths = huffman.code_lengths(np.bincount(sym, minlength=40))
    payload, n_bits = huffman.encode(sym, lengths)
    for cut in [1, 2, 7, len(payload) // 2, len(payload) - 1]:
        with pytest.raises(errors.TruncatedError):
            huffman.decode(payload[:len(payload) - cut], sym.size, lengths)
    for extra in [b"\x00", b"\x01", b"\x00" * 9]:
        with pytest.raises(errors.CorruptDataError, match="after the end"):
            huffman.decode(payload + extra, sym.size, lengths)
    # fewer symbols asked than the payload holds: the rest is trailing data
    with pytest.raises(errors.CorruptDataError, match="after the end"):
        huffman.decode(payload, sym.size - 20, lengths)
    if n_bits % 8:
        bad = bytearray(payload)
        bad[-1] |= 1  # a padding bit set
        with pytest.raises(errors.CorruptDataError, match="after the end"):
            huffman.decode(bytes(bad), sym.size, lengths)
    # more symbols asked than the payload holds
    with pytest.raises(errors.TruncatedError):
        huffman.decode(payload, sym.size + 30, lengths)


def test_decode_accepts_buffers():
    lengths = [1, 2, 2]
    payload, _ = huffman.encode([2, 0, 1, 1], lengths)
    for buf in [payload, bytearray(payload), memoryview(payload), np.frombuffer(payload, np.uint8)]:
        assert huffman.decode(buf, 4, lengths).tolist() == [2, 0, 1, 1]


def test_mutated_payloads_decode_or_raise():
    """Mutation fuzzing: a flipped, truncated or extended payload gives a correct decode (when the
    change is harmless) or a DnnzError, never anything else."""
    rng = np.random.default_rng(9)
    n_trials = int(os.environ.get("DNNZ_FUZZ_TRIALS", "3000"))
    cases = []
    for k, scale, n in [(2, 0.5, 300), (32, 3, 400), (300, 30, 300), (5000, 800, 200)]:
        sym = laplace_symbols(rng, n, k, scale)
        lengths = huffman.code_lengths(np.bincount(sym, minlength=k), max_len=int(rng.integers(12, 20)))
        cases.append((sym, lengths, huffman.encode(sym, lengths)[0]))
    one = huffman.code_lengths([0, 5])
    ones = np.ones(30, np.int64)
    cases.append((ones, one, huffman.encode(ones, one)[0]))
    outcomes = {"ok": 0, "error": 0}
    for t in range(n_trials):
        sym, lengths, payload = cases[t % len(cases)]
        data = bytearray(payload)
        op = rng.integers(0, 4)
        if op == 0 and data:
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            del data[int(rng.integers(0, len(data) + 1)):]
        elif op == 2:
            data += rng.integers(0, 256, int(rng.integers(1, 10)), dtype=np.uint8).tobytes()
        else:
            data = bytearray(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
        n = sym.size + int(rng.integers(-2, 3)) if rng.random() < 0.2 else sym.size
        n = max(n, 0)
        try:
            out = huffman.decode(bytes(data), n, lengths)
        except errors.DnnzError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1
        # a successful decode must be the exact inverse of an encode
        again, _ = huffman.encode(out, lengths)
        assert again == bytes(data)
    assert outcomes["error"] > 0 and outcomes["ok"] > 0
