"""Hypothesis properties of pydnnz.huffman: exact round trips, valid and optimal lengths, and
decoders that only ever return the right answer or raise a DnnzError."""
from fractions import Fraction

import numpy as np
from bitarray.util import huffman_code
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pydnnz import errors, huffman


def kraft(lengths):
    return sum(Fraction(1, 2 ** int(l)) for l in lengths if l)


@st.composite
def counts_and_symbols(draw):
    k = draw(st.integers(1, 3000))
    mode = draw(st.sampled_from(["uniform", "skewed", "sparse", "laplace"]))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, 3000))
    rng = np.random.default_rng(seed)
    if mode == "uniform":
        sym = rng.integers(0, k, n)
    elif mode == "skewed":
        sym = np.minimum(rng.geometric(draw(st.floats(0.05, 0.99)), n) - 1, k - 1)
    elif mode == "sparse":
        used = rng.choice(k, min(k, draw(st.integers(1, 5))), replace=False)
        sym = rng.choice(used, n)
    else:
        sym = np.clip(np.rint(rng.laplace(0, draw(st.floats(0.1, 100)), n)).astype(np.int64) + k // 2, 0, k - 1)
    return k, sym


@given(counts_and_symbols(), st.one_of(st.none(), st.integers(1, 32)))
def test_round_trip(case, max_len):
    k, sym = case
    counts = np.bincount(sym, minlength=k)
    n_used = int(np.count_nonzero(counts))
    if max_len is not None and n_used > 2**max_len:
        return
    lengths = huffman.code_lengths(counts, max_len=max_len)
    assert lengths.dtype == np.uint8 and lengths.size == k
    assert ((lengths == 0) == (counts == 0)).all()
    if n_used >= 2:
        assert kraft(lengths) == 1
    elif n_used == 1:
        assert lengths.max() == 1
    if max_len is not None:
        assert lengths.max() <= max_len
    payload, n_bits = huffman.encode(sym, lengths)
    assert n_bits == int(np.dot(counts, lengths.astype(np.int64)))
    out = huffman.decode(payload, sym.size, lengths)
    np.testing.assert_array_equal(out, sym)


@given(st.lists(st.integers(0, 10**12), min_size=2, max_size=200))
def test_cost_is_optimal(counts):
    assume(sum(1 for c in counts if c) >= 2)
    lengths = huffman.code_lengths(counts)
    ref = huffman_code({i: c for i, c in enumerate(counts) if c})
    assert sum(c * int(lengths[i]) for i, c in enumerate(counts)) == \
        sum(counts[i] * len(code) for i, code in ref.items())


@given(st.lists(st.integers(1, 1000), min_size=2, max_size=64), st.integers(1, 8))
def test_tighter_limit_costs_more_or_same(counts, max_len):
    assume(len(counts) <= 2**max_len)
    limited = huffman.code_lengths(counts, max_len=max_len)
    free = huffman.code_lengths(counts)
    c = np.asarray(counts, np.int64)
    assert limited.max() <= max_len and kraft(limited) == 1
    assert np.dot(c, limited) >= np.dot(c, free)
    if free.max() <= max_len:
        assert np.dot(c, limited) == np.dot(c, free)


@given(hnp.arrays(np.uint8, st.integers(1, 40), elements=st.integers(0, 34)))
def test_any_length_set_is_accepted_or_rejected_by_the_rules(lengths):
    used = lengths[lengths > 0]
    if (lengths > 32).any():
        expected = "above the maximum"
    elif used.size and kraft(used) > 1:
        expected = "over-subscribed"
    elif used.size and kraft(used) < 1 and not (used.size == 1 and used[0] == 1):
        expected = "incomplete"
    else:
        expected = None
    if expected is None:
        huffman.decode(b"", 0, lengths)
    else:
        try:
            huffman.decode(b"", 0, lengths)
        except errors.CodeLengthError as exc:
            assert expected in str(exc)
        else:
            raise AssertionError(f"lengths {lengths.tolist()} accepted, expected {expected}")


@given(st.binary(max_size=64), st.integers(0, 600), st.sampled_from([
    [1, 1], [1, 2, 2], [0, 1], [3] * 8, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 14],
    [2, 2, 3, 3, 3, 3] + [0] * 300, [1] + [0] * 70000 + [2, 2],
]))
def test_random_payloads_decode_or_raise(data, n, lengths):
    try:
        out = huffman.decode(data, n, lengths)
    except errors.DnnzError:
        return
    assert out.size == n
    assert huffman.encode(out, lengths)[0] == data
