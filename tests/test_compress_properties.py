"""Hypothesis: every quantizer honours the QuantizedTensor contract (spec/compress.md) on arbitrary small inputs (ties, constants,
tiny and huge k, pruning) and never raises anything but InvalidArgumentError."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from pydnnz import compress as C

values = st.one_of(
    st.floats(-4, 4, allow_nan=False, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, -1e-30, 3.4e38, -3.4e38]),
)
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=12), elements=values)


@given(w=arrays, method=st.sampled_from(C.METHODS), k=st.integers(1, 40),
       p=st.one_of(st.none(), st.floats(0, 100)), seed=st.integers(0, 2**32 - 1))
def test_quantizers_contract(w, method, k, p, seed):
    q = C.quantize(w, method, k, prune=p, seed=seed)
    cb = q.codebook
    assert cb.dtype == np.float32 and np.all(cb[1:] > cb[:-1]) and np.all(np.isfinite(cb))
    assert q.indices.shape == w.shape and q.indices.dtype == np.uint8
    d = q.to_dense()
    assert np.array_equal(np.unique(d), cb)
    assert (0.0 in cb) == bool(np.any(d == 0))
    n_nonzero_levels = int(np.count_nonzero(cb))
    assert n_nonzero_levels <= k + (0 if p is not None else 1)
    if p is not None:
        assert abs(int((~q.mask).sum()) - p * w.size / 100) <= 0.5 + 1e-6
        assert np.all(d[~q.mask] == 0)
    if method != "uq" and np.unique(w[q.mask] if p is not None else w).size <= k:
        if p is None:
            np.testing.assert_array_equal(d, w + np.float32(0))


@given(w=arrays, p=st.floats(0, 100))
def test_prune_exact_count(w, p):
    pw, m = C.prune(w, p)
    assert abs(int((~m).sum()) - p * w.size / 100) <= 0.5 + 1e-6
    assert np.all(pw[~m] == 0) and np.array_equal(pw[m], w[m])
