"""Encodings (dense, csc, im, im8, im4): exact round trips, matmul on every CPU path, validation.

Tolerance of matmul: every path may sum in any order and contract into FMA, so we check the
classic worst-case bound for a float32 sum of n products in any order (Higham, Accuracy and
Stability, eq. 3.5): |y - y_exact| <= gamma_n * sum_j |w_j x_j|, gamma_n = n u / (1 - n u),
u = 2**-24, against the float64 product of the decoded matrix. Deterministic, never flaky.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import pydnnz
from pydnnz import errors, runtime
from pydnnz.encodings import encode, encodings, from_sections, get_encoding, register, EncodedMatrix

ENCODINGS = ("dense", "csc", "im", "im8", "im4", "ham", "sham", "rlham")
PATHS = runtime.supported_cpu_paths()
U32 = 2.0 ** -24


class QT:
    """A minimal QuantizedTensor stand-in: .codebook and .indices."""

    def __init__(self, codebook, indices):
        self.codebook = np.asarray(codebook, np.float32)
        self.indices = np.asarray(indices)
        self.shape = self.indices.shape


def random_codebook(rng, k, with_zero=True):
    vals = set()
    cb = []
    if with_zero:
        cb.append(0.0)
        vals.add(np.float32(0.0).view(np.uint32).item())
    while len(cb) < k:
        v = np.float32(rng.standard_normal() * 10.0 ** rng.integers(-3, 3))
        b = v.view(np.uint32).item()
        if b not in vals:
            vals.add(b)
            cb.append(v)
    return np.array(cb, np.float32)


def random_matrix(rng, rows, cols, k, sparsity=0.0):
    cb = random_codebook(rng, max(k, 1))
    idx = rng.integers(1 if k > 1 else 0, max(k, 1), size=(rows, cols))
    idx[rng.random((rows, cols)) < sparsity] = 0
    return cb[idx]


def tolerance(w, x):
    n = w.shape[1]
    s = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
    gamma = n * U32 / (1 - n * U32) if n else 0.0
    return gamma * s * 1.0001 + 1e-30


@pytest.fixture(params=PATHS)
def cpu_path(request):
    runtime.set_cpu_path(request.param)
    yield request.param
    runtime.set_cpu_path(None)


def applicable(w):
    m = pydnnz.encodings.MatrixInput(w)
    return [e for e in ENCODINGS if get_encoding(e).applicable(m)]


def check_roundtrip(w, enc):
    e = encode(w, enc)
    assert e.encoding == enc and e.shape == w.shape
    d = e.decode()
    assert d.dtype == np.float32 and d.shape == w.shape
    assert np.array_equal(d.view(np.uint32), np.asarray(w, np.float32).view(np.uint32))
    assert e.nbytes == sum(s.nbytes for s in e.sections.values())
    for s in e.sections.values():
        assert s.ndim == 1 and s.flags.c_contiguous and not s.flags.writeable
    f = from_sections(e.encoding, e.shape, e.params, e.sections)
    assert np.array_equal(f.decode().view(np.uint32), d.view(np.uint32))
    return e


def check_matmul(e, w, x):
    w2 = np.asarray(w, np.float32).reshape(w.shape[0], int(np.prod(w.shape[1:])))
    y = e.matmul(x)
    ref = x.astype(np.float64) @ w2.astype(np.float64).T
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.all(np.abs(y - ref) <= tolerance(w2, x)), (e, np.max(np.abs(y - ref)))
    return y


# ---------------------------------------------------------------------------------------------
# round trips

matrices = st.builds(
    lambda seed, rows, cols, k, sparsity: random_matrix(np.random.default_rng(seed), rows, cols, k, sparsity),
    st.integers(0, 2**32 - 1), st.integers(0, 37), st.integers(0, 70), st.integers(1, 40),
    st.sampled_from([0.0, 0.3, 0.9, 0.999, 1.0]))


@given(matrices)
def test_roundtrip_every_encoding(w):
    for enc in applicable(w):
        check_roundtrip(w, enc)
    a = encode(w, "smallest")
    assert a.nbytes == min(encode(w, e).nbytes for e in applicable(w))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (1, 1), (1, 17), (17, 1), (3, 4, 2, 2)])
@pytest.mark.parametrize("enc", ENCODINGS)
def test_edge_shapes(shape, enc):
    rng = np.random.default_rng(1)
    w = random_matrix(rng, shape[0], int(np.prod(shape[1:])), 3, 0.5).reshape(shape)
    e = check_roundtrip(w, enc)
    x = rng.standard_normal((3, e.matrix_shape[1])).astype(np.float32)
    check_matmul(e, w, x)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 16, 17, 31, 32, 33, 64, 65, 255, 256, 257, 4096])
def test_codebook_sizes(k, cpu_path):
    rng = np.random.default_rng(k)
    cb = random_codebook(rng, k)
    idx = rng.integers(0, k, size=(21, 197))
    idx.flat[:k] = np.arange(k)[: idx.size]  # every value used at least once where it fits
    qt = QT(cb, idx)
    w = cb[idx]
    x = rng.standard_normal((5, 197)).astype(np.float32)
    for enc in ENCODINGS:
        if get_encoding(enc).applicable(pydnnz.encodings.MatrixInput(qt)):
            e = check_roundtrip(w, enc)
            e2 = encode(qt, enc)
            assert np.array_equal(e2.decode(), w) and e2.nbytes == e.nbytes
            check_matmul(e, w, x)
            check_matmul(e, w, x[0])


def test_special_values_are_bit_exact():
    w = np.array([[0.0, -0.0, np.inf, -np.inf], [1e-45, -1e-45, 3.4e38, 0.0]], np.float32)
    for enc in ENCODINGS:
        check_roundtrip(w, enc)
    assert encode(w, "csc").params["nnz"] == 6  # -0.0 is stored, +0.0 is not


def test_all_zero_and_one_value():
    for w in (np.zeros((7, 33), np.float32), np.full((7, 33), -2.5, np.float32)):
        for enc in ENCODINGS:
            e = check_roundtrip(w, enc)
            check_matmul(e, w, np.ones((2, 33), np.float32))
    assert encode(np.zeros((7, 33), np.float32), "im").nbytes == 4  # k=1: zero bits per index
    assert encode(np.zeros((7, 33), np.float32), "smallest").encoding == "im"  # 4 bytes beat 8 row pointers


# ---------------------------------------------------------------------------------------------
# matmul

@given(matrices, st.sampled_from([1, 2, 3, 8, 17, 70]), st.integers(0, 2**32 - 1))
def test_matmul_every_path(w, batch, seed):
    rng = np.random.default_rng(seed)
    assume(np.isfinite(w).all())
    x = rng.standard_normal((batch, w.shape[1])).astype(np.float32)
    for enc in applicable(w):
        e = encode(w, enc)
        for path in PATHS:
            runtime.set_cpu_path(path)
            try:
                check_matmul(e, w, x)
            finally:
                runtime.set_cpu_path(None)


@pytest.mark.parametrize("batch", [1, 5, 16, 64, 65, 130])
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.99])
def test_matmul_larger(batch, sparsity, cpu_path):
    rng = np.random.default_rng(batch)
    w = random_matrix(rng, 133, 1061, 32, sparsity)
    x = rng.standard_normal((batch, 1061)).astype(np.float32)
    for enc in ("dense", "csc", "im", "im8"):
        check_matmul(encode(w, enc), w, x)


def test_matmul_batch_1024(cpu_path):
    rng = np.random.default_rng(11)
    w = random_matrix(rng, 37, 75, 9, 0.6)
    x = rng.standard_normal((1024, 75)).astype(np.float32)
    for enc in ENCODINGS:
        check_matmul(encode(w, enc), w, x)
        check_matmul(encode(w, enc), w, np.asfortranarray(x[:, ::1]))


def test_threads_do_not_change_results(cpu_path):
    rng = np.random.default_rng(7)
    w = random_matrix(rng, 300, 700, 15, 0.5)
    x = rng.standard_normal((9, 700)).astype(np.float32)
    old = pydnnz.get_num_threads()
    try:
        for enc in ENCODINGS:
            e = encode(w, enc)
            outs = []
            for n in (1, 2, 3, 8):
                pydnnz.set_num_threads(n)
                outs.append(e.matmul(x))
                outs.append(e.matmul(x[:1]))
            for a, b in zip(outs[0::2], outs[2::2]):
                assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
            for a, b in zip(outs[1::2], outs[3::2]):
                assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    finally:
        pydnnz.set_num_threads(old)


def test_matmul_with_infinities_follows_ieee():
    w = np.array([[np.inf, 0.0, 1.0], [2.0, 3.0, 0.0]], np.float32)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    for enc in ENCODINGS:
        y = encode(w, enc).matmul(x)
        assert y[0, 0] == np.inf and y[0, 1] == 8.0


def test_matmul_argument_errors():
    e = encode(np.ones((3, 4), np.float32), "im")
    with pytest.raises(errors.ShapeError):
        e.matmul(np.ones((2, 5), np.float32))
    with pytest.raises(errors.InvalidArgumentError):
        e.matmul(np.ones((2, 4), np.float64))
    with pytest.raises(errors.ShapeError):
        e.matmul(np.ones((2, 2, 4), np.float32))
    assert e.matmul(np.ones((0, 4), np.float32)).shape == (0, 3)
    assert e.matmul(np.ones(4, np.float16)).tolist() == [4.0, 4.0, 4.0]
    assert e.matmul(np.ones((8, 2), np.float32)[:, :1].repeat(4, 1)).shape == (8, 3)


# ---------------------------------------------------------------------------------------------
# input rules

def test_input_rules():
    with pytest.raises(errors.ShapeError):
        encode(np.ones(4, np.float32))
    with pytest.raises(errors.InvalidArgumentError, match="NaN"):
        encode(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(errors.InvalidArgumentError, match="float32"):
        encode(np.array([[0.1]], np.float64))
    with pytest.raises(errors.InvalidArgumentError):
        encode(np.array([[1, 2]], np.int32))
    assert np.array_equal(encode(np.array([[0.5, 2.0]], np.float64)).decode(), [[0.5, 2.0]])
    with pytest.raises(errors.UnsupportedError):
        encode(np.ones((2, 2), np.float32), "nope")
    with pytest.raises(errors.InvalidArgumentError):
        encode(random_matrix(np.random.default_rng(0), 10, 10, 40), "im4")
    with pytest.raises(errors.InvalidArgumentError):
        encode(QT([0.0, 1.0], [[0, 2]]))
    with pytest.raises(errors.InvalidArgumentError):
        encode(QT([1.0, 1.0], [[0, 1]]))
    with pytest.raises(errors.InvalidArgumentError):
        encode(QT([np.nan, 1.0], [[0, 1]]))


def test_quantized_input_unsorted_codebook():
    qt = QT([3.0, -1.0, 0.0], [[0, 1, 2], [2, 2, 1]])
    for enc in ENCODINGS:
        e = encode(qt, enc)
        assert np.array_equal(e.decode(), [[3.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    assert encode(qt, "im").sections["codebook"].tolist() == [-1.0, 0.0, 3.0]


def test_conv_shape_kept():
    w = random_matrix(np.random.default_rng(3), 6, 3 * 3 * 3, 5).reshape(6, 3, 3, 3)
    e = encode(w)
    assert e.shape == (6, 3, 3, 3) and e.matrix_shape == (6, 27) and e.decode().shape == w.shape


def test_registry():
    assert set(ENCODINGS) <= set(encodings())
    assert pydnnz.encode is encode and pydnnz.EncodedMatrix is EncodedMatrix

    class Fake(EncodedMatrix):
        name, id = "dense", 99
    with pytest.raises(ValueError):
        register(Fake)

    class Fake2(EncodedMatrix):
        name, id = "fake2", 6  # reserved for ham
    with pytest.raises(ValueError):
        register(Fake2)

    class Fake3(EncodedMatrix):
        name, id = "ham", 3
    with pytest.raises(ValueError):
        register(Fake3)


def test_repr_and_params_are_json():
    import json
    e = encode(random_matrix(np.random.default_rng(0), 5, 9, 3, 0.5), "csc")
    json.dumps(e.params)
    assert "csc" in repr(e) and "nbytes" in repr(e)


# ---------------------------------------------------------------------------------------------
# cpu paths and threads

def test_cpu_path_api():
    assert pydnnz.cpu_path() in PATHS
    assert "scalar" in PATHS
    with pytest.raises(errors.InvalidArgumentError):
        runtime.set_cpu_path("sse9")
    with pytest.raises(errors.InvalidArgumentError):
        pydnnz.set_num_threads(0)
    with pytest.raises(errors.InvalidArgumentError):
        pydnnz.set_num_threads(2.0)


def _run(env, code):
    env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_env_forces_path_and_threads():
    code = ("import numpy as np, pydnnz; print(pydnnz.cpu_path(), pydnnz.get_num_threads());"
            "print(pydnnz.encode(np.eye(3, dtype=np.float32), 'im').matmul(np.ones(3, np.float32)))")
    r = _run({"DNNZ_CPU_PATH": "scalar", "DNNZ_NUM_THREADS": "3"}, code)
    assert r.returncode == 0 and r.stdout.startswith("scalar 3"), r.stderr
    r = _run({"DNNZ_CPU_PATH": "bogus"}, code)
    assert r.returncode != 0 and "UnsupportedError" in r.stderr and "DNNZ_CPU_PATH" in r.stderr
    if "avx512" not in PATHS:
        r = _run({"DNNZ_CPU_PATH": "avx512"}, code)
        assert r.returncode != 0 and "UnsupportedError" in r.stderr


def test_docstring_examples_run():
    import doctest
    from pydnnz.encodings import _base, _matrix
    for mod in (_base, _matrix, runtime):
        result = doctest.testmod(mod)
        assert result.failed == 0 and result.attempted > 0


def test_encoded_matrices_copy_after_matmul():
    """copy/deepcopy/pickle drop the cached C struct (it points into the original's sections)."""
    import copy
    import pickle

    w = np.repeat(np.array([[0.5, -0.25, 0.0, 0.5]], np.float32), 3, axis=0)
    x = np.ones((2, 4), np.float32)
    for name in pydnnz.encodings.encodings():
        try:
            e = pydnnz.encode(w, name)
        except pydnnz.DnnzError:
            continue
        y = e.matmul(x)
        for twin in (copy.copy(e), copy.deepcopy(e), pickle.loads(pickle.dumps(e))):
            assert twin.encoding == name and (twin.decode() == w).all()
            np.testing.assert_array_equal(twin.matmul(x), y)
