"""Scalar quantizers of the papers: CWS (k-means), PWS (probabilistic), UQ (uniform), ECSQ.

Every quantizer is fitted on a 1-D sample (one tensor, or all tensors of a layer type for a
"unified" codebook) through :class:`~pydnnz.compress._core.SortedData`, then assigns each
weight a codebook index. Pruning followed by quantization (Pr-X) quantizes only the surviving
non-zeros and keeps zero as an exact codebook entry, as the ICPR 2020 paper describes.

This module is the public surface and the driver (method dispatch, pruning, granularity,
codebook merging into :class:`~pydnnz.compress.QuantizedTensor`). The fitters live in
:mod:`._sharing` (CWS, PWS), :mod:`._uq` (UQ) and :mod:`._ecsq` (ECSQ), on the fit type of
:mod:`._fit`.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._core import SortedData, as_weights, check_k, check_p, make_rng
from ._ecsq import _fit_ecsq, _tune_lambda
from ._sharing import _fit_cws, _fit_pws
from ._tensors import QuantizedTensor, index_dtype
from ._uq import PAPER_DELTAS, _fit_uq  # noqa: F401  (PAPER_DELTAS: kept importable from here)
from .pruning import prune as _prune
from ..errors import InvalidArgumentError, KNotSmallerWarning

__all__ = ["cws", "pws", "uq", "ecsq", "ecsq_tune_lambda", "pr_cws", "pr_pws", "pr_uq", "pr_ecsq",
           "quantize", "METHODS"]


# ----------------------------------------------------------------------------------------------
# driver: fit on a group of tensors (one layer, or all layers of a type), emit QuantizedTensors

def _fit(method, sd, k, rng, opts):
    if method == "cws":
        return _fit_cws(sd, k, rng, **opts)
    if method == "pws":
        return _fit_pws(sd, k, rng, **opts)
    if method == "uq":
        return _fit_uq(sd, k, rng, **opts)
    if method == "ecsq":
        return _fit_ecsq(sd, k, rng, **opts)
    if method == "rdq":  # rate-distortion-optimised rounding on a uniform grid (compress/rdq.py)
        from .rdq import fit_rdq

        return fit_rdq(sd, k, rng, **opts)
    raise InvalidArgumentError(f"unknown quantizer {method!r} (expected one of {METHODS})")


METHODS = ("cws", "pws", "uq", "ecsq")
# Quantizers that take their step from options rather than from k alone (not in METHODS, whose
# members all work from k alone): "rdq" (pydnnz.compress.rdq).
EXTRA_METHODS = ("rdq",)


def k_not_smaller_effect(method):
    """What k >= weight count means for `method`, for KNotSmallerWarning's message: the sharing
    methods give every value its own level; the grid methods still round to their grid."""
    if method in ("uq", "rdq"):
        return (f"{method}'s codebook is as large as the weights themselves and nothing is gained "
                "(the values are still rounded to its grid)")
    return f"{method} keeps every value and nothing is gained"


def quantize(weights, method: str = "cws", k=32, *, prune=None, masks=None, include_zeros=False,
             seed=0, granularity="tensor", **opts):
    """Quantize one tensor, or several with ONE shared ("unified") codebook.

    ``weights`` is an array (returns a QuantizedTensor) or a list of arrays (returns a list of
    QuantizedTensors whose values come from ONE shared codebook of at most k entries; each
    tensor's ``codebook`` holds the entries it uses, so it contains 0.0 exactly when the tensor
    has a zero, and ``params["group_k"]`` is the size of the shared codebook). ``method`` is "cws", "pws", "uq" or
    "ecsq"; ``k`` the number of levels (for UQ with ``delta=`` it may be None). ``prune=p``
    first prunes each tensor at percentile p (or pass precomputed boolean ``masks``), then
    quantizes only the surviving non-zeros with k levels and keeps 0.0 as an extra exact
    codebook entry (the paper's Pr-X, at most k+1 values in all); ``include_zeros=True``
    quantizes the pruned tensors zeros included and forces pruned positions back to zero
    afterwards (what the authors' code does). The codebook holds exactly the values used.

    ``granularity``: "tensor" (default: the codebook's values are the weights), "channel" (each
    output row r, dimension 0, gets a float32 scale s_r = max |w| of the row after pruning; the
    codebook is fitted on the normalised values w / s_r, shared by all rows, and the tensor is
    ``codebook[indices] * s_r``) or an int B (one scale per block of B consecutive rows). The
    scales travel in ``row_scale`` / ``scale_rows``; pruned zeros stay exact zeros. Use it when
    rows have very different ranges (depthwise convs, the first conv of a CNN): one per-tensor
    codebook then spends its levels on the widest rows and flattens the narrow ones.

    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    >>> q = quantize(w, "cws", 8, seed=0)
    >>> q.k, len(np.unique(np.asarray(q)))
    (8, 8)
    """
    single = not isinstance(weights, (list, tuple))
    arrays = [as_weights(weights)] if single else [as_weights(w, f"weights[{i}]") for i, w in enumerate(weights)]
    if not arrays:
        raise InvalidArgumentError("quantize needs at least one tensor")
    if not isinstance(method, str) or method not in METHODS + EXTRA_METHODS:
        raise InvalidArgumentError(f"unknown quantizer {method!r} (expected one of {METHODS + EXTRA_METHODS})")
    if not ((method == "uq" and opts.get("delta") is not None or method == "rdq") and k is None):
        k = check_k(k)
    count = sum(a.size for a in arrays)
    if k is not None and k >= count:
        warnings.warn(KNotSmallerWarning(f"quantize: k={k} is not smaller than the {count} weights, so "
                                         f"{k_not_smaller_effect(method)}"), stacklevel=2)
    rng = make_rng(seed)
    if masks is not None:
        masks = [masks] if single else list(masks)
        if len(masks) != len(arrays):
            raise InvalidArgumentError("masks must match the tensors one for one")
        for a, m in zip(arrays, masks):
            if np.asarray(m).shape != a.shape or np.asarray(m).dtype != np.bool_:
                raise InvalidArgumentError(f"a mask must be a bool array of shape {a.shape}")
        arrays = [np.where(m, a, np.float32(0.0)) for a, m in zip(arrays, masks)]
        masks = [np.asarray(m) for m in masks]
    elif prune is not None:
        prune = check_p(prune)
        arrays, masks = map(list, zip(*(_prune(a, prune) for a in arrays)))
    pruned = masks is not None
    scales = None
    if granularity is not None and granularity != "tensor":
        from ..encodings.scaled import block_scales, granularity_block

        if any(a.ndim < 2 for a in arrays):
            raise InvalidArgumentError("granularity='channel' or a row block needs tensors with ndim >= 2 "
                                       "(rows = dimension 0)")
        blocks = [granularity_block(granularity, a.shape[0]) for a in arrays]
        scales = [block_scales(a, b) for a, b in zip(arrays, blocks)]
        arrays = [(a.reshape(a.shape[0], -1) / np.repeat(s, b)[:a.shape[0], None]).astype(np.float32)
                  .reshape(a.shape) for a, s, b in zip(arrays, scales, blocks)]
    if pruned and not include_zeros:
        parts = [a[m & (a != 0)] for a, m in zip(arrays, masks)]
    else:
        parts = [a.ravel() for a in arrays]
    values = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if values.size:
        fit = _fit(method, SortedData(values), k, rng, opts)
        if getattr(fit, "balance", False) and not (pruned and not include_zeros):
            # rdq balance=True: row sums balanced, rows = dimension 0 (a 1-D tensor is one row)
            sub = [fit.assign_rows(v, a.shape[0] if a.ndim >= 2 else 1) for v, a in zip(parts, arrays)]
        else:
            sub = [fit.assign(v, rng) for v in parts]
        cb = fit.codebook
        info = fit.info
    else:  # everything was pruned
        sub, cb, info = [np.zeros(0, np.int64) for _ in parts], np.zeros(0, np.float32), {}
    # merge in the exact zero of pruned positions, then keep only the entries in use
    full = np.unique(np.append(cb, np.float32(0.0)) if pruned else cb) + np.float32(0.0)
    to_full = np.searchsorted(full, cb)
    zero = int(np.searchsorted(full, np.float32(0.0))) if pruned else -1
    idx = []
    for a, v, m in zip(arrays, sub, masks if pruned else [None] * len(arrays)):
        v = to_full[v] if v.size else v
        if pruned and not include_zeros:
            out = np.full(a.shape, zero, dtype=np.int64)
            out[m & (a != 0)] = v
        else:
            out = v.reshape(a.shape)
            if pruned:
                out = np.where(m, out, zero)
        idx.append(out)
    used = np.zeros(full.size, dtype=bool)
    for i in idx:
        if i.size:
            used |= np.bincount(i.ravel(), minlength=full.size) > 0
    remap = np.cumsum(used) - 1
    codebook = full[used] + np.float32(0.0)
    params = {"method": method, "k": k, "prune": prune, "include_zeros": bool(include_zeros),
              "group_k": int(codebook.size), **info}
    name = ("pr_" if pruned else "") + method
    if scales is not None:
        params["granularity"] = "channel" if granularity == "channel" else int(granularity)
    out = []
    for j, (i, m) in enumerate(zip(idx, masks if pruned else [None] * len(idx))):
        i = remap[i]
        if len(idx) > 1:
            # each tensor keeps the entries of the shared codebook it uses (spec/compress.md: the
            # codebook holds 0.0 exactly when the tensor has a zero); the values stay shared
            own = np.zeros(codebook.size, dtype=bool)
            own[np.bincount(i.ravel(), minlength=codebook.size) > 0] = True
            cb_t, i = codebook[own], (np.cumsum(own) - 1)[i]
        else:
            cb_t = codebook
        out.append(QuantizedTensor(cb_t, i.astype(index_dtype(cb_t.size)), m, method=name,
                                   params=dict(params), validate=False,
                                   row_scale=None if scales is None else scales[j],
                                   scale_rows=None if scales is None else blocks[j]))
    return out[0] if single else out


def cws(w, k=32, *, seed=0, prune=None, n_init=5, max_iter=10000, include_zeros=False, init=None,
        granularity="tensor"):
    """CWS: weight sharing by 1-D k-means (the k shared values minimise the squared error).

    The paper fits sklearn ``MiniBatchKMeans`` (k-means++ seeded on only 3k sampled weights).
    Here Lloyd's algorithm runs on ALL weights through sorted data and prefix sums, O(k log n)
    per iteration, until the cells stop changing (a fixed point: every centre is the mean of
    its cell, every weight goes to its nearest centre). ``n_init`` seedings are tried: the
    quantile seeding ((i+½)/k quantiles) and n_init-1 exact k-means++ seedings drawn from
    ``seed``; the lowest squared error wins, so the result is never worse than quantile-seeded
    Lloyd and is deterministic given the seed. Empty cells are re-seeded at the farthest value
    of the worst cell, so the result has exactly min(k, #distinct values) levels; with
    k >= #distinct the tensor comes back exactly. ``prune=p`` gives Pr-CWS.

    >>> import numpy as np
    >>> w = np.random.default_rng(1).laplace(size=1000).astype(np.float32)
    >>> cws(w, 4).k
    4
    """
    return quantize(w, "cws", k, granularity=granularity,
                    seed=seed, prune=prune, include_zeros=include_zeros,
                    n_init=n_init, max_iter=max_iter, init=init)


def pws(w, k=32, *, seed=0, prune=None, include_zeros=False, granularity="tensor"):
    """PWS: probabilistic quantization (unbiased stochastic rounding between quantiles).

    The representatives are the quantiles of the weights at levels i/(k-1), i = 0..k-1 (numpy's
    linear interpolation), min and max included. Each weight w in [v, V) between neighbouring
    representatives rounds up to V with probability (w - v)/(V - v), else down to v, so
    E[q(w)] = w. Drawn vectorised from ``np.random.default_rng(seed)`` (the authors' code
    uses the global numpy seed and a per-element Python loop). Duplicate quantiles (many equal
    weights) merge, so the effective k can be smaller than k, as in the paper; the codebook
    holds only the representatives actually drawn. k = 1 gives the single level mean(w); with
    k >= the number of distinct values every value is its own representative and the tensor
    comes back exactly.

    >>> import numpy as np
    >>> q = pws(np.linspace(-1, 1, 101, dtype=np.float32), 5, seed=0)
    >>> q.codebook.tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    return quantize(w, "pws", k, granularity=granularity, seed=seed, prune=prune,
                    include_zeros=include_zeros)


def uq(w, k=32, *, mode="search", delta=None, deltas=None, prune=None, include_zeros=False, seed=0,
       granularity="tensor"):
    """UQ: uniform quantization q = δ·rint(w/δ) (round half to even), 0 always on the grid.

    Step rules (the codebook is the set of levels actually used, <= k):

    - ``mode="search"`` (default): the paper's rule, the smallest δ giving at most k distinct
      values, searched on a scale-free grid δ_r·t, t = 0.05..1 (400 points), where δ_r is the
      "range" step below; so δ <= δ_r and the search always succeeds.
    - ``mode="paper"``: the paper's literal grid δ = 1e-4, 6e-4, ..., ≈1 (``uUQ.py``). When no
      grid step gives <= k levels the paper falls back to δ = 1 (which can still give more than k
      levels); here it falls back to δ_r. Weights much smaller than 1e-4 collapse to zero.
    - ``mode="range"``: δ_r, the smallest step whose grid through 0 spans [min(w,0), max(w,0)]
      with at most k levels: k evenly spaced levels when there are no gaps.
    - ``delta=``: a given step (k may be None); the paper's k = -1 branch, which crashes there.

    The number of distinct values is not monotone in δ, so the search scans the grid in
    increasing order (vectorised: each step costs O(levels·log n) via the sorted data) rather
    than bisecting.

    >>> import numpy as np
    >>> q = uq(np.array([-0.31, 0.02, 0.29, 0.61, 0.45], np.float32), 4, mode="range")
    >>> [round(float(v), 3) for v in q.codebook]
    [-0.244, 0.0, 0.244, 0.488]
    """
    return quantize(w, "uq", k, granularity=granularity,
                    seed=seed, prune=prune, include_zeros=include_zeros, mode=mode,
                    delta=delta, deltas=deltas)


def ecsq(w, k=32, *, lam=None, n_clusters=None, max_iter=50, tol=0.0, distortion="squared",
         stop_at_k=True, prune=None, include_zeros=False, seed=0, granularity="tensor"):
    """ECSQ: entropy-constrained scalar quantization (Chou, Lookabaugh and Gray 1989).

    Starts from ``n_clusters`` (default 3k) equal-count chunks of the sorted weights (centre =
    chunk mean, p = chunk share), then alternates: assign each weight to
    argmin_j (w - c_j)² - λ·log p_j, and set c_j, p_j to the mean and share of cluster j. It stops
    when the cells stop changing, when the cost J falls by <= ``tol``, after ``max_iter``
    iterations (50 as in the 2023 code) or, with ``stop_at_k`` (the paper's rule), once at most k
    clusters remain non-empty. A larger λ spends fewer bits (lower entropy of the indices) for
    more distortion. Clusters that catch no weight die (log 0 = -inf).

    ``lam=None`` tunes λ (bisection in log λ) to the smallest value giving at most k levels, so
    the result has <= k values (the paper scans a fixed descending λ list and can end with up
    to 3k). With an explicit ``lam`` the count is whatever ECSQ reaches (<= n_clusters).
    ``distortion="absolute"`` reproduces the authors' 2022+ code, which dropped the square by
    accident (commit b90d468); the method, and the default here, is the squared error.
    Vectorised through the sorted data: with a convex (squared) or V-shaped (absolute) cost each
    cluster wins one interval, found by a lower-envelope pass over the k clusters.

    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    >>> ecsq(w, 8).k <= 8
    True
    """
    return quantize(w, "ecsq", k, granularity=granularity,
                    seed=seed, prune=prune, include_zeros=include_zeros, lam=lam,
                    n_clusters=n_clusters, max_iter=max_iter, tol=tol, distortion=distortion,
                    stop_at_k=stop_at_k)


def ecsq_tune_lambda(w, k, *, n_clusters=None, max_iter=50, tol=0.0, distortion="squared",
                     stop_at_k=True) -> float:
    """The smallest λ (within 1 %) for which :func:`ecsq` yields at most k levels.

    >>> import numpy as np
    >>> w = np.random.default_rng(0).normal(size=4000).astype(np.float32)
    >>> lam = ecsq_tune_lambda(w, 8)
    >>> ecsq(w, 8, lam=lam).k <= 8
    True
    """
    a = as_weights(w).ravel()
    k = check_k(k)
    sd = SortedData(a)
    if k >= sd.n_distinct:
        return 0.0
    return _tune_lambda(sd, k, n_clusters=n_clusters, max_iter=max_iter, tol=tol,
                        distortion=distortion, stop_at_k=stop_at_k)


def pr_cws(w, p, k=32, **kw):
    """Pr-CWS: prune at percentile p, then CWS on the surviving non-zeros (see :func:`cws`).

    >>> import numpy as np
    >>> q = pr_cws(np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32), 90, 4)
    >>> q.k, int((np.asarray(q) == 0).sum())
    (5, 900)
    """
    return cws(w, k, prune=p, **kw)


def pr_pws(w, p, k=32, **kw):
    """Pr-PWS: prune at percentile p, then PWS on the surviving non-zeros (see :func:`pws`).

    >>> import numpy as np
    >>> q = pr_pws(np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32), 90, 4)
    >>> int((np.asarray(q) == 0).sum())
    900
    """
    return pws(w, k, prune=p, **kw)


def pr_uq(w, p, k=32, **kw):
    """Pr-UQ: prune at percentile p, then UQ on the surviving non-zeros (see :func:`uq`).

    >>> import numpy as np
    >>> q = pr_uq(np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32), 90, 4)
    >>> int((np.asarray(q) == 0).sum()) >= 900
    True
    """
    return uq(w, k, prune=p, **kw)


def pr_ecsq(w, p, k=32, **kw):
    """Pr-ECSQ: prune at percentile p, then ECSQ on the surviving non-zeros (see :func:`ecsq`).

    >>> import numpy as np
    >>> q = pr_ecsq(np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32), 90, 4)
    >>> int((np.asarray(q) == 0).sum())
    900
    """
    return ecsq(w, k, prune=p, **kw)
