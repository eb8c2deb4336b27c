"""The `rlham` encoding: exact round trips (hypothesis), matmul against float64 NumPy on every CPU
path and thread count, the layout the spec describes, one corruption per field, and random
mutations (only a correct decode or a DnnzError)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pydnnz
from pydnnz import errors, runtime
from pydnnz.encodings import encode, from_sections
from pydnnz.encodings.rlham import n_classes, run_classes

PATHS = runtime.supported_cpu_paths()


@pytest.fixture(params=PATHS)
def cpu_path(request):
    runtime.set_cpu_path(request.param)
    yield request.param
    runtime.set_cpu_path(None)


def sparse_matrix(rng, rows, cols, k, sparsity):
    """k-level Laplacian-ish weights without 0.0 among the levels, then pruned to `sparsity`."""
    levels = (np.arange(1, k + 1) - (k + 1) // 2 - 0.5).astype(np.float32) / 8
    idx = np.clip(np.rint(rng.laplace(k / 2, max(k / 8, 0.3), (rows, cols))).astype(int), 0, k - 1)
    w = levels[idx]
    if sparsity:
        w[rng.random((rows, cols)) < sparsity] = 0
    return w.astype(np.float32)


def check(w, batch=3, seed=0):
    e = encode(w, "rlham")
    assert e.encoding == "rlham" and e.shape == w.shape
    d = e.decode()
    assert d.dtype == np.float32 and d.shape == w.shape
    assert np.array_equal(d.view(np.uint32), w.view(np.uint32))
    assert e.nbytes == sum(s.nbytes for s in e.sections.values())
    assert e.nbytes == type(e).encoded_nbytes(pydnnz.encodings.MatrixInput(w))
    f = from_sections(e.encoding, e.shape, e.params, e.sections)
    assert np.array_equal(f.decode().view(np.uint32), w.view(np.uint32))
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
    cols = draw(st.integers(0, 400))
    k = draw(st.sampled_from([1, 2, 3, 4, 7, 16, 17, 32, 33, 64, 255, 256, 257, 1000, 4096]))
    sparsity = draw(st.sampled_from([0.0, 0.3, 0.9, 0.99, 0.999, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return sparse_matrix(rng, rows, cols, k, sparsity)


@given(matrices(), st.integers(1, 20))
def test_round_trip_and_matmul(w, batch):
    check(w, batch)


def test_edge_cases():
    for shape in [(0, 0), (0, 5), (5, 0), (1, 1), (3, 4, 2, 2), (2, 1000), (1, 3000)]:
        rng = np.random.default_rng(sum(shape))
        check(sparse_matrix(rng, shape[0], int(np.prod(shape[1:])), 5, 0.5).reshape(shape))
    e = check(np.zeros((7, 9), np.float32))  # every row is the end-of-row code alone
    assert e.params["k"] == 0 and e.sections["payload"].tobytes() == b"\x00" and e.nbytes == 1 + 8 + 1
    check(np.zeros((1, 1), np.float32))
    check(np.full((1, 1), 3.0, np.float32))
    check(np.full((7, 9), -2.5, np.float32))  # one value, no zeros
    w = np.array([[0.0, -0.0, np.inf, 1.0], [-np.inf, 1e-45, 3.4e38, 0.0]], np.float32)
    e = encode(w, "rlham")  # -0.0 is a stored value, +0.0 a run
    assert np.array_equal(e.decode().view(np.uint32), w.view(np.uint32)) and e.params["k"] == 6


def test_dense_rows_cost_about_the_value_entropy():
    """No zeros: every run is 0, so the joint symbol is the value (no 1-bit run tax)."""
    w = sparse_matrix(np.random.default_rng(1), 64, 512, 16, 0.0)
    e = check(w)
    assert e.params["run_classes"] == e.params["direct_runs"] == 1
    assert e.nbytes <= encode(w, "ham").nbytes + 64 * 2


@pytest.mark.parametrize("sparsity", [0.9, 0.99, 0.999])
def test_sparse_goes_below_one_bit_per_entry(sparsity):
    w = sparse_matrix(np.random.default_rng(2), 128, 1024, 32, sparsity)
    e = check(w)
    assert e.nbytes < encode(w, "ham").nbytes and e.nbytes < encode(w, "sham").nbytes
    assert pydnnz.encode(w, "smallest").encoding in ("rlham", "csc")
    if sparsity == 0.9:
        assert e.nbytes * 8 < w.size  # below ham's floor of 1 bit per entry
        assert pydnnz.encode(w, "smallest").encoding == "rlham"


def test_long_runs_over_the_bucket_limits():
    cols = 300_000
    for cs in ([cols - 1], [0, cols - 1], [1, 2**16, 2**16 + 1, 2**17 + 5, cols - 2], [2**18 - 1]):
        w = np.zeros((3, cols), np.float32)
        w[1, cs] = 1.5
        w[2, cs[0]] = -1.0
        for batch in (1, 5):
            check(w, batch)
    # every run length 0..600 once, then a row of maximal runs for each direct_runs the writer tries
    runs = np.arange(600)
    cols = int(runs.sum() + runs.size)
    w = np.zeros((2, cols), np.float32)
    w[0, np.cumsum(runs + 1) - 1] = 0.25
    w[1, -1] = 0.5
    check(w, 4)


def test_run_classes_match_spec():
    cls, nb, ex = run_classes(np.array([0, 1, 2, 3, 4, 5, 6, 10, 2**31 - 2]), 3)
    # D = 3: runs 0..2 direct; class 3 + j covers 2 + 2^j .. 1 + 2^(j+1) with j extra bits
    assert cls.tolist() == [0, 1, 2, 3, 4, 4, 5, 6, 3 + 30]
    assert nb.tolist() == [0, 0, 0, 0, 1, 1, 2, 3, 30]
    assert ex.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 2**31 - 2 - 2 - 2**30]
    assert n_classes(-1, 3) == 3 and n_classes(2, 3) == 3 and n_classes(3, 3) == 4 and n_classes(5, 3) == 5


@pytest.mark.parametrize("k", [2, 3, 16, 32, 64, 256, 4096])
def test_codebook_sizes_every_path(k, cpu_path):
    rng = np.random.default_rng(k)
    w = sparse_matrix(rng, 37, 1100, k, 0.8)
    for batch in (1, 2, 3, 4, 5, 8, 16, 17, 64, 65, 130):
        check(w, batch, seed=batch)


def test_larger_matrix_every_path(cpu_path):
    rng = np.random.default_rng(3)
    for sparsity in (0.0, 0.9, 0.99):
        w = sparse_matrix(rng, 150, 3000, 32, sparsity)
        for batch in (1, 3, 8, 128):
            check(w, batch)


def test_rows_of_very_different_lengths_every_path(cpu_path):
    """The matmul walks eight rows at once and a lane takes the next row when its row ends: empty
    rows, full rows, one long row among short ones, rows ending in the same step, fewer rows than
    lanes, and the last rows of the payload (walked the careful way) all sum their own pairs."""
    rng = np.random.default_rng(11)
    for rows, cols in ((1, 50), (3, 700), (8, 64), (9, 300), (70, 1000), (130, 257)):
        w = sparse_matrix(rng, rows, cols, 9, 0.97)
        w[::5] = 0  # empty rows
        w[1::7] = sparse_matrix(rng, len(w[1::7]), cols, 9, 0.0)  # full rows
        w[rows // 2, :] = sparse_matrix(rng, 1, cols, 9, 0.3)
        for batch in (1, 2, 8, 16, 17, 40):
            check(w, batch, seed=batch)


def test_long_codes_and_wide_alphabets_every_path(cpu_path):
    """Codes longer than the walker's 12-bit table (its second level) and value indices past 16
    bits (every pair through the exact decoder, as the payload's last bytes always are)."""
    rng = np.random.default_rng(12)
    # heavy-tailed use of 3000 values: codes of 2..20+ bits
    levels = (np.arange(1, 3001) * 0.001).astype(np.float32)
    p = 1.0 / np.arange(1, 3001) ** 1.6
    w = rng.choice(levels, (300, 1200), p=p / p.sum()).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    e = check(w, 1)
    assert int(e.sections["lengths"].max()) > 12
    for batch in (3, 16, 33):
        check(w, batch, seed=batch)
    # 70000 distinct values: indices of 17 bits
    w = np.zeros((40, 2000), np.float32)
    vals = (np.arange(1, 70001) * 1e-3).astype(np.float32)
    mask = rng.random(w.shape) < 0.9
    w[mask] = rng.permutation(np.resize(vals, mask.sum()))
    e = check(w, 1)
    assert e.params["k"] == 70000
    check(w, 8)


@pytest.mark.parametrize("batch", [1, 3, 8, 70])
def test_threads_do_not_change_results(batch):
    rng = np.random.default_rng(4)
    w = sparse_matrix(rng, 300, 700, 20, 0.7)
    e = encode(w, "rlham")
    x = rng.standard_normal((batch, 700)).astype(np.float32)
    old = pydnnz.get_num_threads()
    try:
        ys = []
        for n in (1, 2, 3, 7):
            pydnnz.set_num_threads(n)
            ys.append(e.matmul(x))
    finally:
        pydnnz.set_num_threads(old)
    for y in ys[1:]:
        assert np.array_equal(ys[0], y)


def test_quantized_tensor_input():
    class Q:
        codebook = np.array([0.5, -1.0, 0.0, 2.0], np.float32)  # unsorted, with the zero
        indices = np.random.default_rng(5).integers(0, 4, (6, 50))
    e = encode(Q(), "rlham")
    assert np.array_equal(e.decode(), Q.codebook[Q.indices])
    assert e.sections["codebook"].tolist() == [-1.0, 0.5, 2.0]


def test_layout_matches_spec():
    """spec/encodings.md, rlham worked example."""
    w = np.array([[0.0, 0.5, 0.0, 0.5], [-1.0, 0.0, 0.0, 0.5]], np.float32)
    e = encode(w, "rlham")
    assert e.params == {"k": 2, "direct_runs": 1, "run_classes": 3, "offset_bytes": 1}
    s = e.sections
    assert s["codebook"].tobytes() == bytes.fromhex("000080bf 0000003f")
    # symbols c * 2 + v, end-of-row = 6; counts s0: 1, s3: 2, s5: 1, s6: 2 -> all length 2
    assert s["lengths"].tolist() == [2, 0, 0, 2, 0, 2, 2]
    # codes s0 00, s3 01, s5 10, s6 11; row 0: 01 01 11; row 1: 00 10+extra 0 11
    assert s["offsets"].tobytes() == bytes([0, 6, 13])
    assert s["payload"].tobytes() == bytes([0b01011100, 0b10011000])
    assert e.nbytes == 8 + 7 + 3 + 2


def test_smallest_considers_rlham():
    w = sparse_matrix(np.random.default_rng(6), 256, 1024, 32, 0.95)
    e = pydnnz.encode(w, "smallest")
    sizes = {n: encode(w, n).nbytes for n in ("csc", "im", "ham", "sham", "rlham")}
    assert e.encoding == "rlham" and e.nbytes == min(sizes.values())


# --------------------------------------------------------------------------------------------
# corruption: one handcrafted change per field, each rejected by from_sections
# --------------------------------------------------------------------------------------------

def parts(w=None):
    if w is None:
        w = sparse_matrix(np.random.default_rng(7), 9, 80, 6, 0.6)
    e = encode(w, "rlham")
    return e.encoding, e.shape, dict(e.params), {k: v.copy() for k, v in e.sections.items()}


def rejects(shape, params, sections, cls=errors.CorruptDataError, match=None):
    with pytest.raises(cls, match=match):
        from_sections("rlham", shape, params, sections)


def test_corrupted_codebook():
    _, shape, params, sec = parts()
    for bad_value in (np.nan, 0.0):
        bad = dict(sec, codebook=sec["codebook"].copy())
        bad["codebook"][1] = bad_value
        rejects(shape, params, bad, errors.CorruptDataError, "codebook")
    rejects(shape, params, dict(sec, codebook=sec["codebook"][:-1].copy()), errors.CorruptDataError, "codebook")


def test_corrupted_lengths():
    _, shape, params, sec = parts()
    used = np.flatnonzero(sec["lengths"])
    bad = dict(sec, lengths=sec["lengths"].copy())
    bad["lengths"][used[0]] += 1  # Kraft sum below 1
    rejects(shape, params, bad, errors.CodeLengthError, "section 'lengths'.*incomplete")
    bad["lengths"] = np.ones_like(sec["lengths"])
    rejects(shape, params, bad, errors.CodeLengthError, "over-subscribed")
    bad["lengths"] = sec["lengths"].copy()
    bad["lengths"][used[-1]] = 40
    rejects(shape, params, bad, errors.CodeLengthError, "above the maximum")
    rejects(shape, params, dict(sec, lengths=sec["lengths"][:-1].copy()), errors.CorruptDataError, "lengths")
    # a valid code without the end-of-row symbol: no row can end
    w = np.array([[0, 1.0, 0, 1.0]], np.float32)
    _, shape1, params1, sec1 = parts(w)
    bad = dict(sec1, lengths=sec1["lengths"].copy())
    bad["lengths"][:] = 0
    bad["lengths"][0] = 1
    rejects(shape1, params1, bad, errors.CorruptDataError, "lengths")


def test_corrupted_offsets():
    _, shape, params, sec = parts()
    ob = params["offset_bytes"]
    offs = sec["offsets"].reshape(-1, ob)
    rows = offs.shape[0] - 1

    def with_offset(i, v):
        o = offs.copy()
        o[i] = np.frombuffer(int(v).to_bytes(8, "little")[:ob], np.uint8)
        return dict(sec, offsets=o.reshape(-1))

    def get(i):
        return int.from_bytes(offs[i].tobytes(), "little")
    rejects(shape, params, with_offset(0, 1), errors.CorruptDataError, "offsets")
    rejects(shape, params, with_offset(3, get(2)), errors.CorruptDataError, "offsets")  # empty row
    rejects(shape, params, with_offset(3, get(4) + 1), errors.CorruptDataError, "offsets")  # not monotone
    rejects(shape, params, with_offset(3, get(3) - 1), errors.CorruptDataError, "payload")  # row 2 ends early
    rejects(shape, params, with_offset(rows, get(rows) + 8), errors.TruncatedError, "payload")
    rejects(shape, params, dict(sec, offsets=sec["offsets"][:-1].copy()), errors.CorruptDataError, "offsets")
    rejects(shape, params, dict(sec, offsets=np.append(sec["offsets"], np.uint8(0))), errors.CorruptDataError,
            "offsets")


def test_corrupted_payload():
    _, shape, params, sec = parts()
    rejects(shape, params, dict(sec, payload=sec["payload"][:-1].copy()), errors.TruncatedError, "payload")
    rejects(shape, params, dict(sec, payload=np.append(sec["payload"], np.uint8(0))),
            errors.CorruptDataError, "after the end")
    end = int.from_bytes(sec["offsets"][-params["offset_bytes"]:].tobytes(), "little")
    if end % 8:
        bad = dict(sec, payload=sec["payload"].copy())
        bad["payload"][-1] |= 1  # a padding bit
        rejects(shape, params, bad, errors.CorruptDataError, "after the end")


def test_run_passing_the_row_end():
    w = np.zeros((2, 10), np.float32)
    w[0, 9] = 1.0
    w[1, 3] = 2.0
    _, shape, params, sec = parts(w)
    # the same streams read as rows of 9 columns: row 0's run of 9 leaves the row
    rejects((2, 9), params, sec, errors.CorruptDataError, "payload' at element 0")


def test_corrupted_params():
    _, shape, params, sec = parts()
    rejects(shape, dict(params, k=params["k"] + 1), sec, errors.CorruptDataError)
    rejects(shape, dict(params, direct_runs=0), sec, errors.CorruptDataError, "direct_runs")
    rejects(shape, dict(params, run_classes=params["direct_runs"] - 1), sec, errors.CorruptDataError, "run_classes")
    rejects(shape, dict(params, run_classes=params["direct_runs"] + 32), sec, errors.CorruptDataError, "run_classes")
    rejects(shape, dict(params, direct_runs=params["direct_runs"] + 1, run_classes=params["run_classes"] + 1), sec,
            errors.CorruptDataError)
    rejects(shape, dict(params, k=4096, run_classes=300, direct_runs=290), sec, errors.CorruptDataError, "alphabet")
    rejects(shape, dict(params, offset_bytes=params["offset_bytes"] + 1), sec, errors.CorruptDataError)
    rejects(shape, dict(params, offset_bytes=9), sec, errors.CorruptDataError, "offset_bytes")
    rejects(shape, dict(params, offset_bytes=True), sec, errors.CorruptDataError, "offset_bytes")
    rejects((shape[0] + 1, shape[1]), params, sec, errors.CorruptDataError)
    rejects(shape, dict(params, spare=1), sec, errors.CorruptDataError, "keys")
    rejects(shape, params, dict(sec, offsets=sec["offsets"].view("<u1").astype("<u2")), errors.CorruptDataError)


def _consistent(e, shape):
    d = e.decode()
    assert d.shape == shape
    m = d.reshape(shape[0], -1).astype(np.float64)
    x = np.ones((5, m.shape[1]), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = x.astype(np.float64) @ m.T
        # outputs whose float32 partial sums may overflow (a mutated codebook near FLT_MAX, inf)
        # have no float32 reference: compare the others
        ok = np.isfinite(ref) & ((np.abs(x) @ np.abs(m.T)) < 1e37)
        y = e.matmul(x)
        y1 = e.matmul(x[0])
    assert np.allclose(y[ok], ref[ok], rtol=1e-4, atol=1e-3)
    assert np.allclose(y1[ok[0]], ref[0][ok[0]], rtol=1e-4, atol=1e-3)


def test_payload_bit_flips_decode_or_raise():
    _, shape, params, sec = parts()
    rng = np.random.default_rng(8)
    for _ in range(300):
        bad = dict(sec, payload=sec["payload"].copy())
        i = int(rng.integers(0, bad["payload"].size))
        bad["payload"][i] ^= np.uint8(1 << int(rng.integers(0, 8)))
        try:
            e = from_sections("rlham", shape, params, bad)
        except errors.DnnzError:
            continue
        _consistent(e, shape)


@settings(max_examples=100)
@given(st.data())
def test_random_mutations_decode_or_raise(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = sparse_matrix(rng, data.draw(st.integers(1, 8)), data.draw(st.integers(1, 70)),
                      data.draw(st.sampled_from([1, 3, 9, 40])), data.draw(st.sampled_from([0.0, 0.5, 0.9])))
    _, shape, params, sec = parts(w)
    key = data.draw(st.sampled_from(sorted(sec)))
    raw = bytearray(sec[key].tobytes())
    how = data.draw(st.sampled_from(["flip", "byte", "truncate", "extend"]))
    if how in ("flip", "byte") and raw:
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] = raw[pos] ^ (1 << data.draw(st.integers(0, 7))) if how == "flip" else \
                data.draw(st.integers(0, 255))
    elif how == "truncate" and raw:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw += bytes([data.draw(st.integers(0, 255))]) * sec[key].dtype.itemsize
    size = sec[key].dtype.itemsize
    raw = raw[: len(raw) // size * size]
    mutated = {**sec, key: np.frombuffer(bytes(raw), sec[key].dtype).copy()}
    try:
        e = from_sections("rlham", shape, params, mutated)
    except errors.DnnzError:
        return
    _consistent(e, shape)


def test_read_only_sections_used_in_place():
    _, shape, params, sec = parts()
    ro = {}
    for k, v in sec.items():
        v = v.copy()
        v.flags.writeable = False
        ro[k] = v
    e = from_sections("rlham", shape, params, ro)
    assert np.shares_memory(e.sections["payload"], ro["payload"])


def test_more_than_64_run_classes_round_trip():
    """Regression: the run-class tables were sized for 64 classes, but direct_runs (up to 64 from
    the writer, any value from a file) plus up to 31 buckets can exceed that (DeepDTA DAVIS fc3
    after Pr-CWS p=99 k=2 wrote past a stack array)."""
    rng = np.random.default_rng(7)
    w = np.zeros((64, 4096), np.float32)
    for row in w[:-1]:  # runs spread evenly over 0..63: the writer codes them all directly (D = 64)
        pos = np.cumsum(rng.integers(0, 64, 200) + 1) - 1
        row[pos[pos < 4096]] = rng.choice(np.array([-0.25, 0.25], np.float32), (pos < 4096).sum())
    w[-1, -1] = 0.25  # and one run of 4095 zeros needs bucket classes on top of them
    e = encode(w, "rlham")
    again = from_sections("rlham", e.shape, e.params, e.sections)
    assert (again.decode() == w).all()
    x = rng.standard_normal((3, 4096)).astype(np.float32)
    np.testing.assert_allclose(again.matmul(x), x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    # More than 64 classes (the old table size): a file may announce them; decode consistently or
    # raise, never write past a table (this part is what ASan caught).
    for direct in (65, 100, 5000):
        params = dict(e.params, direct_runs=direct, run_classes=direct + 3)
        try:
            from_sections("rlham", e.shape, params, e.sections).decode()
        except errors.DnnzError:
            pass


def test_deepdta_fc3_pruned_99_k2_regression(shared_dir):
    """The matrix that found the 64-entry run-class tables (direct_runs 64 + 10 bucket classes)."""
    from safetensors.numpy import load_file

    from pydnnz.compress import compress_weights

    w = load_file(str(shared_dir / "models" / "deepdta_davis.safetensors"))
    dense = {k: w[k] for k in ("fc1.weight", "fc2.weight", "fc3.weight", "out.weight")}
    q = compress_weights(dense, "cws", k=2, prune=99, unified=True)["fc3.weight"]
    e = encode(q, "rlham")
    again = from_sections("rlham", e.shape, e.params, e.sections)
    assert (again.decode() == q.to_dense()).all()


@pytest.mark.parametrize("rows", [16, 37, 64, 131])
@pytest.mark.parametrize("kind", ["p90", "p50"])
def test_row_lanes_batch1_every_path(rows, kind, cpu_path):
    """Batch 1 on AVX-512 + VBMI2 with k <= 32 and codes of at most 24 bits: groups of 16 rows
    decoded in vector lanes when their rows fill at least 65 % of the group's steps (the other
    paths, sparser groups and the leftover rows: the eight-lane walker). Rows of different
    lengths in one group (empty: only the end-of-row code; one entry at the last column; a few
    entries with long runs; a longer row), runs long enough to need extra bits (the lanes' refill
    branch), rows not a multiple of 16, the last rows ending at the payload's end, infinite values
    (a masked lane must not turn them into NaN), the same results on 1, 2 and 3 threads."""
    rng = np.random.default_rng(rows + len(kind))
    cols = 900
    w = sparse_matrix(rng, rows, cols, 12, 0.0)
    lv = np.unique(w[w != 0])
    keep = rng.random((rows, cols)) < (0.1 if kind == "p90" else 0.5)
    keep[5] = rng.random(cols) < (0.13 if kind == "p90" else 0.6)  # a longer row
    w[~keep] = 0.0
    w[1] = 0.0                      # an empty row: only its end-of-row code
    w[2] = 0.0
    w[2, cols - 1] = lv[0]          # one entry at the last column (run cols - 1: extra bits)
    w[3] = 0.0
    w[3, [0, 1, 2, 400, 899]] = lv[:5]  # long runs between short ones
    w[rows - 1, cols - 1] = lv[-1]  # the last row ends at the last column, at the payload's end
    w[6, 10] = np.inf
    w[7, 20] = -np.inf
    e = encode(w, "rlham")
    p, lengths = e.params, e.sections["lengths"]
    assert p["k"] <= 32 and 2 <= int((lengths > 0).sum()) and 8 < lengths.max() <= 24  # the lanes' code
    assert p["run_classes"] > p["direct_runs"]  # classes with extra bits are used
    assert np.array_equal(e.decode(), w)
    fin = [r for r in range(rows) if r not in (6, 7)]
    old = pydnnz.get_num_threads()
    try:
        for seed in range(3):
            x = (np.abs(np.random.default_rng(seed).standard_normal((1, cols))) + 0.5).astype(np.float32)
            ys = []
            for n in (1, 2, 3):
                pydnnz.set_num_threads(n)
                ys.append(e.matmul(x))
            for y in ys[1:]:
                assert np.array_equal(ys[0], y)
            y = ys[0]
            assert y[0, 6] == np.inf and y[0, 7] == -np.inf
            ref = x.astype(np.float64) @ w[fin].T.astype(np.float64)
            scale = np.abs(x).astype(np.float64) @ np.abs(w[fin].T).astype(np.float64) + 1e-30
            assert np.all(np.abs(y[:, fin] - ref) <= 1e-5 * scale + 1e-6)
            # the same through the 1-D entry point
            assert np.array_equal(e.matmul(x[0]), y[0])
    finally:
        pydnnz.set_num_threads(old)
