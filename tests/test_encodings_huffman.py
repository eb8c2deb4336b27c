"""The Huffman encodings `ham` and `sham`: exact round trips, matmul against float64 NumPy on
every CPU path, the layout the spec describes, and rejection of corrupted sections."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pydnnz
from pydnnz import errors, huffman, runtime
from pydnnz.encodings import encode, from_sections

PATHS = runtime.supported_cpu_paths()
HUF = ("ham", "sham")


@pytest.fixture(params=PATHS)
def cpu_path(request):
    runtime.set_cpu_path(request.param)
    yield request.param
    runtime.set_cpu_path(None)


def laplace_matrix(rng, rows, cols, k, sparsity=0.0):
    """k-level quantized Laplacian weights (0.0 among the levels), optionally pruned."""
    levels = (np.arange(k) - k // 2).astype(np.float32) / 8
    w = levels[np.clip(np.rint(rng.laplace(k // 2, max(k / 8, 0.3), (rows, cols))).astype(int), 0, k - 1)]
    if sparsity:
        w[rng.random((rows, cols)) < sparsity] = 0
    return w.astype(np.float32)


def check(w, enc, batch=3, seed=0):
    e = encode(w, enc)
    assert e.encoding == enc and e.shape == w.shape
    d = e.decode()
    assert d.dtype == np.float32 and d.shape == w.shape
    assert np.array_equal(d.view(np.uint32), w.view(np.uint32))
    assert e.nbytes == sum(s.nbytes for s in e.sections.values())
    f = from_sections(e.encoding, e.shape, e.params, e.sections)
    assert np.array_equal(f.decode(), w)
    m = w.reshape(w.shape[0], int(np.prod(w.shape[1:])))
    x = np.random.default_rng(seed).standard_normal((batch, m.shape[1])).astype(np.float32)
    ref = x.astype(np.float64) @ m.T.astype(np.float64)
    scale = np.abs(x).astype(np.float64) @ np.abs(m.T).astype(np.float64) + 1e-30
    y = e.matmul(x)
    assert y.shape == (batch, m.shape[0])
    assert np.all(np.abs(y - ref) <= 1e-5 * scale + 1e-6), np.max(np.abs(y - ref) / scale)
    return e


@st.composite
def matrices(draw):
    rows = draw(st.integers(0, 40))
    cols = draw(st.integers(0, 300))
    k = draw(st.sampled_from([1, 2, 3, 7, 16, 17, 32, 33, 64, 65, 255, 256, 257, 1000]))
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.9, 0.999]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return laplace_matrix(rng, rows, cols, k, sparsity)


@given(matrices(), st.sampled_from(HUF), st.integers(1, 6))
def test_round_trip_and_matmul(w, enc, batch):
    check(w, enc, batch)


@pytest.mark.parametrize("enc", HUF)
@pytest.mark.parametrize("k", [1, 2, 16, 32, 64, 200, 4096, 70000])
def test_codebook_sizes_every_path(enc, k, cpu_path):
    rng = np.random.default_rng(k)
    if k > 4096:
        w = rng.standard_normal((9, k // 9 + 3)).astype(np.float32)  # ~k distinct values
    else:
        w = laplace_matrix(rng, 37, 1100, k, 0.5 if enc == "sham" else 0.0)
    for batch in (1, 2, 3, 5, 9):
        check(w, enc, batch, seed=batch)


@pytest.mark.parametrize("k", [5, 20, 40, 100])
def test_batch_one_infinite_codebook_values_stay_in_their_rows(k, cpu_path):
    """Batch 1 (the fused decode-and-dot kernel) with infinities among the codebook values and a
    column count that is not a multiple of the vector width or the slice: the padding columns
    must not turn an infinite weight into NaN, and the other rows stay exact."""
    rng = np.random.default_rng(k)
    w = laplace_matrix(rng, 13, 2061, k)
    w[3, 5], w[7, 2060] = -np.inf, np.inf
    x = np.abs(rng.standard_normal((1, 2061))).astype(np.float32) + 0.5
    y = encode(w, "ham").matmul(x)[0]
    assert y[3] == -np.inf and y[7] == np.inf
    rest = [r for r in range(13) if r not in (3, 7)]
    ref = (x.astype(np.float64) @ w[rest].T.astype(np.float64))[0]
    scale = (np.abs(x).astype(np.float64) @ np.abs(w[rest].T).astype(np.float64))[0]
    assert np.all(np.abs(y[rest] - ref) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize("k", [1, 5, 16, 17, 33, 64, 65, 200])
@pytest.mark.parametrize("cols", [250, 2061])
def test_sham_row_groups(k, cols, cpu_path):
    """sham with eight rows decoded together (batch 1: fused with the gathers; batch > 1: then
    the batch lanes): rows of very different lengths in one group (empty, a few entries, more
    than a 1024-entry chunk), a row count that is not a multiple of eight, 1- and 2-byte column
    indices, infinite codebook values (masked lanes must not turn them into NaN)."""
    rng = np.random.default_rng(k + cols)
    rows = 29
    w = laplace_matrix(rng, rows, cols, max(k, 2))
    keep = rng.random((rows, cols)) < rng.choice([0.0, 0.01, 0.1, 0.5, 1.0], rows)[:, None]
    w[~keep] = 0
    w[w == 0] = 0.0
    if k == 1:
        w[w != 0] = 0.75
    w[4, :] = np.float32(0.125)  # a full row
    w[5, 3], w[12, cols - 1] = -np.inf, np.inf
    e = encode(w, "sham")
    assert np.array_equal(e.decode(), w)
    rest = [r for r in range(rows) if r not in (5, 12)]
    for batch in (1, 3, 17):  # 17: two chunks of batch lanes
        x = (np.abs(rng.standard_normal((batch, cols))) + 0.5).astype(np.float32)
        y = e.matmul(x)
        assert np.all(y[:, 5] == -np.inf) and np.all(y[:, 12] == np.inf)
        ref = x.astype(np.float64) @ w[rest].T.astype(np.float64)
        scale = np.abs(x).astype(np.float64) @ np.abs(w[rest].T).astype(np.float64)
        assert np.all(np.abs(y[:, rest] - ref) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize("spread", [0.02, 0.0035])
def test_large_alphabet_long_codes_every_path(spread, cpu_path):
    """Skewed large alphabets: most codes longer than the primary table (second-level tables,
    the four-stream wide decoder), rows not a multiple of four and crossing the 2048-column
    slices."""
    rng = np.random.default_rng(int(spread * 1e4))
    k = 3000
    levels = (np.arange(k) - k // 2).astype(np.float32) / 64
    i = np.clip(np.rint(rng.geometric(spread, (23, 4500)) - 1), 0, k - 1).astype(int)
    w = levels[i]
    w[0, :k] = levels  # every level used: the rare ones get the longest codes
    e = check(w, "ham", batch=1)
    assert e.sections["lengths"].max() > 11
    check(w, "ham", batch=9, seed=9)


@pytest.mark.parametrize("enc", HUF)
def test_larger_matrix_long_rows(enc, cpu_path):
    rng = np.random.default_rng(1)
    w = laplace_matrix(rng, 70, 5000, 32, 0.9 if enc == "sham" else 0.0)
    check(w, enc, batch=1)
    check(w, enc, batch=4)


@pytest.mark.parametrize("enc", HUF)
def test_threads_do_not_change_results(enc):
    rng = np.random.default_rng(2)
    w = laplace_matrix(rng, 300, 700, 20, 0.7)
    e = encode(w, enc)
    x = rng.standard_normal((5, 700)).astype(np.float32)
    old = pydnnz.get_num_threads()
    try:
        pydnnz.set_num_threads(1)
        y1 = e.matmul(x)
        pydnnz.set_num_threads(2)
        y2 = e.matmul(x)
    finally:
        pydnnz.set_num_threads(old)
    assert np.array_equal(y1, y2)


@pytest.mark.parametrize("enc", HUF)
def test_edge_shapes_and_values(enc):
    for shape in [(0, 5), (5, 0), (1, 1), (3, 4, 2, 2), (2, 1000)]:
        rng = np.random.default_rng(sum(shape))
        check(laplace_matrix(rng, shape[0], int(np.prod(shape[1:])), 5).reshape(shape), enc)
    check(np.zeros((7, 9), np.float32), enc)
    check(np.full((7, 9), -2.5, np.float32), enc)
    w = np.array([[0.0, -0.0, np.inf, 1.0], [-np.inf, 1e-45, 3.4e38, 0.0]], np.float32)
    e = encode(w, enc)
    assert np.array_equal(e.decode().view(np.uint32), w.view(np.uint32))


def test_quantized_tensor_input():
    class Q:
        codebook = np.array([0.5, -1.0, 0.0, 2.0], np.float32)  # unsorted on purpose
        indices = np.random.default_rng(3).integers(0, 4, (6, 50))
    for enc in HUF:
        e = encode(Q(), enc)
        assert np.array_equal(e.decode(), Q.codebook[Q.indices])


def test_ham_layout_matches_spec():
    """spec/encodings.md, ham worked example: the bytes of a 2x3 matrix."""
    w = np.array([[0.0, 0.5, 0.0], [0.0, 0.0, -1.0]], np.float32)
    e = encode(w, "ham")
    assert e.params == {"k": 3, "offset_bytes": 4}
    s = e.sections
    assert s["codebook"].tolist() == [-1.0, 0.0, 0.5]
    # counts [1, 4, 1] -> lengths [2, 1, 2]; codes: 0 -> '10', 1 -> '0', 2 -> '11'
    assert s["lengths"].tolist() == [2, 1, 2]
    # row 0: 0 11 0 (4 bits), row 1: 0 0 10 (4 bits) -> 0110 0010 = 0x62
    assert s["offsets"].tolist() == [0, 4, 8]
    assert s["payload"].tobytes() == b"\x62"
    assert e.nbytes == 12 + 3 + 12 + 1


def test_sham_layout_matches_spec():
    w = np.array([[0.0, 0.5, 0.0, 0.5], [-1.0, 0.0, 0.0, 0.5]], np.float32)
    e = encode(w, "sham")
    assert e.params == {"nnz": 4, "ptr_bytes": 1, "index_bytes": 1, "k": 2, "offset_bytes": 4}
    s = e.sections
    assert s["rowptr"].tolist() == [0, 2, 4]
    assert s["colidx"].tolist() == [1, 3, 0, 3]
    assert s["codebook"].tolist() == [-1.0, 0.5]
    assert s["lengths"].tolist() == [1, 1]
    # values 0.5 0.5 | -1.0 0.5 -> symbols 1 1 | 0 1 -> bits 11 01 -> 1101 0000 = 0xd0
    assert s["offsets"].tolist() == [0, 2, 4]
    assert s["payload"].tobytes() == b"\xd0"


def test_smallest_picks_huffman_when_smallest():
    rng = np.random.default_rng(4)
    w = laplace_matrix(rng, 256, 512, 32)  # skewed values: Huffman beats ceil(log2 k) bits
    e = pydnnz.encode(w, "smallest")
    assert e.encoding == "ham"
    assert e.nbytes < encode(w, "im").nbytes


# --------------------------------------------------------------------------------------------
# corruption: one handcrafted change per field, each rejected by from_sections
# --------------------------------------------------------------------------------------------

def parts(enc, w=None):
    if w is None:
        w = laplace_matrix(np.random.default_rng(5), 9, 40, 6, 0.4)
    e = encode(w, enc)
    return e.encoding, e.shape, dict(e.params), {k: v.copy() for k, v in e.sections.items()}


def rejects(enc, shape, params, sections, cls=errors.CorruptDataError, match=None):
    with pytest.raises(cls, match=match):
        from_sections(enc, shape, params, sections)


@pytest.mark.parametrize("enc", HUF)
def test_corrupted_lengths(enc):
    name, shape, params, sec = parts(enc)
    bad = dict(sec, lengths=sec["lengths"].copy())
    bad["lengths"][0] += 1  # Kraft sum below 1
    rejects(name, shape, params, bad, errors.CodeLengthError, "section 'lengths'.*incomplete")
    bad["lengths"] = np.ones_like(sec["lengths"])  # over-subscribed (k > 2)
    rejects(name, shape, params, bad, errors.CodeLengthError, "over-subscribed")
    bad["lengths"] = sec["lengths"].copy()
    bad["lengths"][-1] = 40
    rejects(name, shape, params, bad, errors.CodeLengthError, "above the maximum")
    bad["lengths"] = sec["lengths"][:-1].copy()
    rejects(name, shape, params, bad, errors.CorruptDataError, "lengths")


@pytest.mark.parametrize("enc", HUF)
def test_corrupted_offsets(enc):
    name, shape, params, sec = parts(enc)
    for i, delta in [(0, 1), (3, 1), (3, -1), (len(sec["offsets"]) - 1, 8)]:
        bad = dict(sec, offsets=sec["offsets"].copy())
        bad["offsets"][i] = int(bad["offsets"][i]) + delta
        rejects(name, shape, params, bad, errors.CorruptDataError)
    bad = dict(sec, offsets=sec["offsets"][::-1].copy())
    rejects(name, shape, params, bad, errors.CorruptDataError, "offsets")
    bad = dict(sec, offsets=sec["offsets"][:-1].copy())
    rejects(name, shape, params, bad, errors.CorruptDataError, "offsets")


@pytest.mark.parametrize("enc", HUF)
def test_corrupted_payload(enc):
    name, shape, params, sec = parts(enc)
    rejects(name, shape, params, dict(sec, payload=sec["payload"][:-1].copy()), errors.TruncatedError, "payload")
    rejects(name, shape, params, dict(sec, payload=np.append(sec["payload"], np.uint8(0))),
            errors.CorruptDataError, "after the end")
    end = int(sec["offsets"][-1])
    if end % 8:
        bad = dict(sec, payload=sec["payload"].copy())
        bad["payload"][-1] |= 1  # a padding bit
        rejects(name, shape, params, bad, errors.CorruptDataError, "after the end")
    # every single-bit flip is either rejected or decodes to a consistent matrix
    rng = np.random.default_rng(6)
    for _ in range(200):
        bad = dict(sec, payload=sec["payload"].copy())
        i = int(rng.integers(0, bad["payload"].size))
        bad["payload"][i] ^= np.uint8(1 << int(rng.integers(0, 8)))
        try:
            e = from_sections(name, shape, params, bad)
        except errors.DnnzError:
            continue
        d = e.decode()
        x = np.ones((1, d.shape[1]), np.float32)
        assert np.allclose(e.matmul(x), x.astype(np.float64) @ d.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_ham_row_streams_must_end_exactly():
    # move one bit from row 0's stream to row 1's: offsets stay monotone but row 0 decodes short
    w = laplace_matrix(np.random.default_rng(7), 4, 30, 4)
    name, shape, params, sec = parts("ham", w)
    bad = dict(sec, offsets=sec["offsets"].copy())
    bad["offsets"][1] -= 1
    rejects(name, shape, params, bad, errors.CorruptDataError, "section 'payload' at element 0")


@pytest.mark.parametrize("enc", HUF)
def test_corrupted_codebook_and_params(enc):
    name, shape, params, sec = parts(enc)
    bad = dict(sec, codebook=sec["codebook"].copy())
    bad["codebook"][0] = np.nan
    rejects(name, shape, params, bad, errors.CorruptDataError, "codebook")
    rejects(name, shape, dict(params, k=params["k"] + 1), sec, errors.CorruptDataError)
    rejects(name, shape, dict(params, offset_bytes=8), sec, errors.CorruptDataError)
    rejects(name, shape, dict(params, offset_bytes=5), sec, errors.CorruptDataError, "offset_bytes")
    rejects(name, (shape[0] + 1, shape[1]), params, sec, errors.CorruptDataError)
    extra = dict(params, spare=1)
    rejects(name, shape, extra, sec, errors.CorruptDataError, "keys")


def test_sham_structure_errors():
    name, shape, params, sec = parts("sham")
    bad = dict(sec, colidx=sec["colidx"].copy())
    bad["colidx"][1] = bad["colidx"][0]  # not ascending
    rejects(name, shape, params, bad, errors.CorruptDataError, "colidx")
    bad = dict(sec, codebook=sec["codebook"].copy())
    bad["codebook"][0] = 0.0  # zeros are never stored
    rejects(name, shape, params, bad, errors.CorruptDataError, "codebook")
    bad = dict(sec, rowptr=sec["rowptr"].copy())
    bad["rowptr"][2] += 1
    rejects(name, shape, params, bad, errors.CorruptDataError)


@settings(max_examples=60)
@given(st.data())
def test_mutated_sections_decode_or_raise(data):
    enc = data.draw(st.sampled_from(HUF))
    w = laplace_matrix(np.random.default_rng(data.draw(st.integers(0, 1000))), 5, 33, 9, 0.5)
    name, shape, params, sec = parts(enc, w)
    key = data.draw(st.sampled_from(sorted(sec)))
    raw = bytearray(sec[key].tobytes())
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    mutated = dict(sec, **{key: np.frombuffer(bytes(raw), sec[key].dtype).copy()})
    try:
        e = from_sections(name, shape, params, mutated)
    except errors.DnnzError:
        return
    d = e.decode()
    x = np.ones((2, d.shape[1]), np.float32)
    y = e.matmul(x)
    ref = x.astype(np.float64) @ d.T.astype(np.float64)
    # a flipped exponent bit can make a value huge: float32 sums may then overflow (or round
    # far from the float64 result), which is IEEE behaviour, not a decoding error
    huge = np.abs(d).max(initial=0) > 1e30
    assert huge or np.allclose(y, ref, rtol=1e-4, atol=1e-3, equal_nan=True)


def test_read_only_sections_used_in_place():
    name, shape, params, sec = parts("ham")
    ro = {}
    for k, v in sec.items():
        v = v.copy()
        v.flags.writeable = False
        ro[k] = v
    e = from_sections(name, shape, params, ro)
    assert np.shares_memory(e.sections["payload"], ro["payload"])
    assert np.array_equal(e.decode(), encode(np.asarray(e.decode()), "ham").decode())


def test_lengths_are_the_huffman_module_code():
    w = laplace_matrix(np.random.default_rng(8), 20, 64, 12)
    e = encode(w, "ham")
    idx = np.searchsorted(e.sections["codebook"], w.ravel())
    assert e.sections["lengths"].tolist() == huffman.code_lengths(np.bincount(idx, minlength=12), max_len=11).tolist()


def test_writers_limit_codes_to_the_table_width():
    # Fibonacci-like counts would give 20-bit codes; ham keeps them within 11 bits at a tiny cost
    rng = np.random.default_rng(9)
    fib = [1, 1]
    while len(fib) < 21:
        fib.append(fib[-1] + fib[-2])
    idx = rng.permutation(np.repeat(np.arange(21), fib))[: 28 * 1000]
    counts = np.bincount(idx, minlength=21)
    cb = np.arange(21, dtype=np.float32) + 1
    w = cb[idx.reshape(28, 1000)]
    e = encode(w, "ham")
    assert e.sections["lengths"].max() <= 11
    free = huffman.code_lengths(counts[counts > 0])
    assert int(e.sections["offsets"][-1]) <= 1.01 * int(np.dot(counts[counts > 0], free))
    check(w, "ham")
