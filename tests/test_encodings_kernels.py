"""The shared C kernels (csrc/kern.c) and each encoding's fast paths, on every CPU path: the tile
driver with the Huffman row tiles (ham; rlham whose runs are all 0, end-of-row mark included),
rlham's fast and multi-pair walks (and their exact fallbacks: long codes, extra bits, rows that
end early), sham and csc batch lanes. Odd shapes, k = 1 and 4096, empty rows, slices crossing
the 2048-column tile, batch 1 / 7 / 8 / 129; results compared with float64 NumPy and across
thread counts."""
import numpy as np
import pytest

import pydnnz
from pydnnz import runtime
from pydnnz.encodings import encode
from pydnnz.encodings import ham as ham_module

PATHS = runtime.supported_cpu_paths()
BATCHES = (1, 7, 8, 129)


@pytest.fixture(params=PATHS)
def cpu_path(request):
    runtime.set_cpu_path(request.param)
    yield request.param
    runtime.set_cpu_path(None)


def assert_matmul(e, w, batches=BATCHES, seed=0):
    rng = np.random.default_rng(seed)
    for batch in batches:
        x = rng.standard_normal((batch, w.shape[1])).astype(np.float32)
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        scale = np.abs(x).astype(np.float64) @ np.abs(w.T).astype(np.float64) + 1e-30
        y = e.matmul(x)
        assert y.shape == (batch, w.shape[0])
        err = np.abs(y - ref) / (scale + 1e-6)
        assert np.all(np.abs(y - ref) <= 1e-5 * scale + 1e-6), (e.encoding, batch, float(err.max()))


def levels(k):
    """k non-zero float32 levels."""
    return ((np.arange(k) - k // 2 + 0.5) / 4).astype(np.float32)


def skewed_indices(rng, shape, k):
    """Geometric-ish index distribution: some codes far longer than the 11-bit decode table."""
    idx = np.minimum(rng.geometric(0.35, shape) - 1, k - 1)
    return (idx + rng.integers(0, k, shape) * (rng.random(shape) < 0.02)) % k


def lane_indices(rng, dist, shape):
    """(indices, k) of the lane kernels' test distributions: "gauss32" (bell-shaped), "uniform32",
    "skewed32" (skewed_indices) or "kN" (uniform over N values)."""
    if dist == "gauss32":
        return np.clip(np.rint((rng.standard_normal(shape) + 3) / 6 * 31), 0, 31).astype(np.int64), 32
    if dist == "uniform32":
        return rng.integers(0, 32, shape), 32
    if dist == "skewed32":
        return skewed_indices(rng, shape, 32), 32
    k = int(dist[1:])
    return rng.integers(0, k, shape), k


@pytest.mark.parametrize("k", [1, 2, 32, 255, 256, 300, 4096])
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 5), (13, 2049), (6, 4100)])
def test_rlham_all_runs_zero_uses_row_tiles(k, rows, cols, cpu_path):
    """No zeros but trailing ones: the encoder picks one run class with one direct run, and
    matmul goes through the Huffman row tiles with the end-of-row mark."""
    rng = np.random.default_rng(k * 7 + rows)
    w = levels(k)[skewed_indices(rng, (rows, cols), k)]
    if rows > 1:
        w[0, :] = 0.0                          # an empty row
        w[-1, cols // 2:] = 0.0                # a row that ends early
    if rows > 2:
        w[1, cols - 1:] = 0.0                  # one entry short
    e = encode(w, "rlham")
    assert e.params["run_classes"] == 1 and e.params["direct_runs"] == 1, e.params
    assert np.array_equal(e.decode(), w)
    assert_matmul(e, w)


@pytest.mark.parametrize("k", [1, 3, 32, 256, 257, 4096])
@pytest.mark.parametrize("sparsity", [0.3, 0.9, 0.999])
def test_rlham_pair_walk(k, sparsity, cpu_path):
    """Runs with and without extra bits, long codes, the multi-pair table (k <= 256) and the
    one-pair fast table (k > 256), rows of different lengths in one group of four."""
    rng = np.random.default_rng(k + int(sparsity * 1000))
    rows, cols = 11, 3001
    w = levels(k)[skewed_indices(rng, (rows, cols), k)]
    w[rng.random((rows, cols)) < sparsity] = 0.0
    w[2] = 0.0
    w[5, : cols - 3] = 0.0                     # one long run, then a few entries
    e = encode(w, "rlham")
    assert (e.params["run_classes"], e.params["direct_runs"]) != (1, 1)
    assert np.array_equal(e.decode(), w)
    assert_matmul(e, w)


@pytest.mark.parametrize("k", [1, 2, 32, 256, 257, 4096])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 17), (9, 2048), (5, 2049), (4, 4097)])
def test_ham_row_tiles(k, rows, cols, cpu_path):
    rng = np.random.default_rng(k + cols)
    w = levels(k)[skewed_indices(rng, (rows, cols), k)]
    e = encode(w, "ham")
    assert np.array_equal(e.decode(), w)
    assert_matmul(e, w)


@pytest.mark.parametrize("dist", ["gauss32", "uniform32", "skewed32", "k2", "k5", "long32", "k40"])
@pytest.mark.parametrize("rows,cols", [(32, 1), (70, 17), (64, 129), (97, 300), (40, 2049), (20, 65)])
def test_ham_row_lanes(dist, rows, cols, cpu_path, monkeypatch):
    """AVX-512 rows in lanes (32 rows at a time, at most 32 used symbols and 15-bit codes): codes
    all of one length, short (k = 2, 5) and past the 7-bit prefix table (gauss, skewed), codes
    longer than 15 bits and 40 used symbols (the eight-row decoders instead), the last group of
    the payload (its loads would pass the end: eight-row decoders), rows left over after the
    groups, tiles of 128 columns at batch > 1 and batch blocks of 8."""
    rng = np.random.default_rng(rows * 7 + cols)
    shape = (rows, cols)
    if dist == "long32":  # Fibonacci counts: codes as long as the number of symbols used
        monkeypatch.setattr(ham_module, "FAST_MAX_LEN", 32)  # as another writer may
        n, k, counts = rows * cols, 32, [1, 1]
        while len(counts) < 32 and sum(counts) + counts[-1] + counts[-2] <= n:
            counts.append(counts[-1] + counts[-2])
        idx = np.repeat(np.arange(len(counts))[::-1], counts)
        idx = rng.permutation(np.concatenate([idx, np.zeros(n - idx.size, np.int64)])).reshape(shape)
    else:
        idx, k = lane_indices(rng, dist, shape)
    w = levels(k)[idx]
    e = encode(w, "ham")
    assert np.array_equal(e.decode(), w)
    assert_matmul(e, w, batches=(1, 2, 7, 8, 9, 17, 129), seed=rows + cols)


@pytest.mark.parametrize("dist", ["gauss32", "uniform32", "skewed32", "k2", "k31", "k33"])
@pytest.mark.parametrize("rows,cols", [(32, 1), (70, 17), (64, 129), (97, 300), (40, 2049), (150, 2100)])
def test_rlham_all_runs_zero_row_lanes(dist, rows, cols, cpu_path):
    """rlham rows whose runs are all 0 run ham's fast paths with the end-of-row symbol: the
    AVX-512 lanes (at most 32 used values besides it; a lane stays at its end-of-row code, its
    weights 0 from there on) and the eight-row decoders (k = 33; from a row's end-of-row symbol
    on its index buffer holds that symbol, the extended codebook's 0). Without zeros every row is
    full and the sums are ham's, bit for bit (same weights, same order); then rows that end
    early: empty rows, rows ending in the first column, around the 128-column tiles and the
    2048-column slices, one short, and the last rows of the payload."""
    rng = np.random.default_rng(rows * 11 + cols)
    shape = (rows, cols)
    idx, k = lane_indices(rng, dist, shape)
    w = levels(k)[idx]
    batches = (1, 2, 7, 8, 9, 17)
    e, h = encode(w, "rlham"), encode(w, "ham")
    assert e.params["run_classes"] == 1 and e.params["direct_runs"] == 1, e.params
    assert np.array_equal(e.decode(), w)
    for batch in batches:
        x = rng.standard_normal((batch, cols)).astype(np.float32)
        assert np.array_equal(e.matmul(x).view(np.uint32), h.matmul(x).view(np.uint32)), batch
    assert_matmul(e, w, batches=batches, seed=rows)
    ends = rng.integers(0, cols + 1, rows)
    for r, end in zip(range(0, rows, 3), (0, 1, 127, 128, 129, 2047, 2048, 2049, cols - 1, cols, cols // 2)):
        ends[r] = min(end, cols)
    ends[-1] = ends[-1] // 2
    w[np.arange(cols)[None, :] >= ends[:, None]] = 0.0
    e = encode(w, "rlham")
    assert e.params["run_classes"] == 1 and e.params["direct_runs"] == 1, e.params
    assert np.array_equal(e.decode(), w)
    assert_matmul(e, w, batches=batches, seed=rows + 1)


@pytest.mark.parametrize("k", [1, 33, 4096])
def test_sham_lanes_and_gathers(k, cpu_path):
    rng = np.random.default_rng(k)
    rows, cols = 10, 777
    w = levels(k)[skewed_indices(rng, (rows, cols), k)]
    w[rng.random((rows, cols)) < 0.8] = 0.0
    w[3] = 0.0                                 # an empty row
    e = encode(w, "sham")
    assert np.array_equal(e.decode(), w)
    assert_matmul(e, w)


@pytest.mark.parametrize("codes", ["short", "long"])
@pytest.mark.parametrize("rows", [16, 48, 53])
def test_sham_row_lanes(codes, rows, cpu_path):
    """sham batch 1 on AVX-512 + VBMI2 with 2-byte column indices and at most 32 used symbols:
    16 rows in vector lanes. Codes of at most 7 bits (one byte table) and codes up to 15 bits;
    rows of very different lengths in one group (empty, one entry, shorter than the 8-step
    column blocks, full), the last group at the end of the payload (rows a multiple of 16),
    leftover rows, infinite values (masked lanes must not turn them into NaN)."""
    rng = np.random.default_rng(rows + len(codes))
    cols = 700
    k = 6 if codes == "short" else 31  # the infinite value is one more symbol
    idx = rng.integers(0, k, (rows, cols)) if codes == "short" else skewed_indices(rng, (rows, cols), k)
    w = levels(k)[idx]
    keep = rng.random((rows, cols)) < rng.choice([0.02, 0.1, 0.5, 0.9], rows)[:, None]
    w[~keep] = 0.0
    w[1] = 0.0                      # an empty row
    w[2] = 0.0
    w[2, 699] = levels(k)[0]        # one entry, at the last column
    w[3] = 0.0
    w[3, :5] = levels(k)[:5]        # five entries
    w[rows - 1] = levels(k)[idx[rows - 1]]  # a full row, last in the payload
    w[6, 10] = np.inf
    e = encode(w, "sham")
    lengths = e.sections["lengths"]
    assert (lengths.max() <= 7) == (codes == "short") and lengths.max() <= 15 and lengths.size <= 32
    assert np.array_equal(e.decode(), w)
    rest = [r for r in range(rows) if r != 6]
    for seed in range(3):
        x = (np.abs(np.random.default_rng(seed).standard_normal((1, cols))) + 0.5).astype(np.float32)
        y = e.matmul(x)
        assert y[0, 6] == np.inf
        ref = x.astype(np.float64) @ w[rest].T.astype(np.float64)
        scale = np.abs(x).astype(np.float64) @ np.abs(w[rest].T).astype(np.float64)
        assert np.all(np.abs(y[:, rest] - ref) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize("density", [0.05, 0.2, 0.6])
@pytest.mark.parametrize("k", [None, 17, 300])
def test_csc_lanes_gathers_and_tiles(density, k, cpu_path):
    """csc: gathers (batch 1, few non-zeros), batch lanes in chunks of 64 (129 = 3 chunks) with
    1-, 2- and 4-byte column indices, and dense-enough tiles."""
    rng = np.random.default_rng(int(density * 100) + (k or 0))
    for rows, cols in ((9, 200), (5, 70000)):
        if k is None:
            w = rng.standard_normal((rows, cols)).astype(np.float32)
        else:
            w = levels(k)[rng.integers(0, k, (rows, cols))]
        w[rng.random((rows, cols)) >= density] = 0.0
        w[0] = 0.0
        e = encode(w, "csc")
        assert np.array_equal(e.decode(), w)
        assert_matmul(e, w, batches=(1, 7, 129))


@pytest.mark.parametrize("name", ["ham", "rlham", "sham", "csc", "im", "dense"])
def test_thread_count_does_not_change_results(name, cpu_path):
    rng = np.random.default_rng(1)
    w = levels(16)[rng.integers(0, 16, (200, 333))]
    if name in ("sham", "csc"):
        w[rng.random(w.shape) < 0.7] = 0.0
    e = encode(w, name)
    x = rng.standard_normal((9, 333)).astype(np.float32)
    old = pydnnz.get_num_threads()
    try:
        pydnnz.set_num_threads(1)
        y1 = e.matmul(x)
        y1b = e.matmul(x[:1])
        pydnnz.set_num_threads(3)
        assert np.array_equal(e.matmul(x), y1)
        assert np.array_equal(e.matmul(x[:1]), y1b)
    finally:
        pydnnz.set_num_threads(old)
