"""SLR: sparse low-rank factorization (Swaminathan et al. 2020, as used in the 2023 study)."""
from __future__ import annotations

import numbers

import numpy as np

from ._core import as_weights, check_fraction
from ._tensors import LowRankTensor
from ..errors import InvalidArgumentError, ShapeError

__all__ = ["slr"]


def slr(w, rank, *, sr=0.5, rr=0.5) -> LowRankTensor:
    """Sparse low-rank factorization of one weight (paper-methods.md §4).

    W (PyTorch layout (out, in); a conv weight as (out, in·prod(kernel))) = U Σ Vᵀ by thin
    SVD; the top ``rank`` = q triples are kept (all min(out, in) when q is larger). Node
    importance is the L1 norm of a node's weights: for each input node the column sum of |W|,
    for each output node the row sum. The nodes below the ⌊sr·n⌋-th smallest importance are
    "unimportant" (about a fraction sr of them) and keep only the first r = ⌊q·rr⌋ singular
    directions: their entries of the factors beyond r are set to exact zero (Vᵀ[r:, i] for an
    input node i, U[j, r:] for an output node j). The authors' code works on Keras (in, out)
    kernels; this is the same rule transposed. sr = 1 (their CLI default) indexes past the
    sorted array and crashes there; here it marks every node unimportant. Sparse factors are
    stored as exact zeros in ``u`` and ``vt`` so a sparse encoding can exploit them (the
    papers' size count ignores them).

    >>> import numpy as np
    >>> t = slr(np.random.default_rng(0).normal(size=(20, 30)).astype(np.float32), 4)
    >>> t.rank, t.u.shape, t.vt.shape, int(np.linalg.matrix_rank(t.to_dense()))
    (4, (20, 4), (4, 30), 4)
    """
    a = as_weights(w)
    if a.ndim < 2:
        raise ShapeError(f"SLR needs a weight with at least 2 dimensions, got shape {a.shape}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise InvalidArgumentError(f"rank must be an integer >= 1, got {rank!r}")
    sr = check_fraction(sr, "sr")
    rr = check_fraction(rr, "rr")
    m = a.reshape(a.shape[0], -1).astype(np.float64)
    U, S, Vt = np.linalg.svd(m, full_matrices=False)
    q = min(int(rank), S.size)
    U, S, Vt = U[:, :q].copy(), S[:q], Vt[:q].copy()
    r = int(np.floor(q * rr))
    absw = np.abs(m)

    def unimportant(imp):
        n = imp.size
        j = int(np.floor(n * sr))
        if j >= n:
            return np.ones(n, dtype=bool)
        return imp < np.sort(imp)[j]

    out_bad = unimportant(absw.sum(axis=1))
    in_bad = unimportant(absw.sum(axis=0))
    U[np.ix_(out_bad, np.arange(r, q))] = 0.0
    Vt[np.ix_(np.arange(r, q), in_bad)] = 0.0
    return LowRankTensor(U, S, Vt, a.shape, params={"method": "slr", "rank": q, "sr": sr, "rr": rr,
                                                     "r": r})
