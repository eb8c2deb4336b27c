"""Scalar quantizers of the papers: CWS (k-means), PWS (probabilistic), UQ (uniform), ECSQ.

Every quantizer is fitted on a 1-D sample (one tensor, or all tensors of a layer type for a
"unified" codebook) through :class:`~pydnnz.compress._core.SortedData`, then assigns each
weight a codebook index. Pruning followed by quantization (Pr-X) quantizes only the surviving
non-zeros and keeps zero as an exact codebook entry, as the ICPR 2020 paper describes.
"""
from __future__ import annotations

import math

import numpy as np

from ._core import SortedData, as_weights, check_k, check_p, make_rng
from ._tensors import QuantizedTensor, index_dtype
from .pruning import prune as _prune
from ..errors import InvalidArgumentError

__all__ = ["cws", "pws", "uq", "ecsq", "ecsq_tune_lambda", "pr_cws", "pr_pws", "pr_uq", "pr_ecsq",
           "quantize", "METHODS"]


# ----------------------------------------------------------------------------------------------
# fitted quantizers: a float32 codebook (sorted, unique) and a rule mapping values to indices

class _Fit:
    """Threshold quantizer: value v gets index #{t in thresholds : t < v}."""

    def __init__(self, codebook, thresholds=None, info=None):
        self.codebook = np.asarray(codebook, dtype=np.float32)
        if thresholds is None:  # nearest codebook entry; exact midpoint ties go to the lower one
            c = self.codebook.astype(np.float64)
            thresholds = (c[:-1] + c[1:]) / 2
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.info = dict(info or {})

    def assign(self, x: np.ndarray, rng) -> np.ndarray:
        if self.thresholds.size == 0:
            return np.zeros(x.shape, dtype=np.int64)
        # float32 thresholds rounded down compare with float32 weights exactly as the float64
        # ones do (t < x  <=>  down32(t) < x), and spare numpy a float64 copy of x
        t32 = self.thresholds.astype(np.float32)
        up = t32.astype(np.float64) > self.thresholds
        t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
        return np.searchsorted(t32, x, side="left")


def _dedupe32(c64: np.ndarray, thresholds: np.ndarray):
    """Cast centres to float32; merge those that collide (adjacent cells join)."""
    c32 = c64.astype(np.float32)
    if c32.size > 1 and not np.all(c32[1:] > c32[:-1]):
        keep = np.ones(c32.size, dtype=bool)
        keep[1:] = c32[1:] > c32[:-1]
        thresholds = thresholds[keep[1:]]
        c32 = c32[keep]
    return c32, thresholds


def _exact_fit(sd: SortedData, method: str) -> _Fit:
    """k >= number of distinct values: every value is its own codebook entry (exact result)."""
    return _Fit(sd.u, info={"exact": True, "method": method})


# --- CWS: 1-D k-means ---------------------------------------------------------------------------

def _fill_centres(sd: SortedData, c: np.ndarray, k: int) -> np.ndarray:
    """Add centres until there are k: split the cell with the largest squared error by a new
    centre at its farthest distinct value (its end point away from the centre)."""
    c = np.unique(c)
    for _ in range(4 * k + 8):
        if c.size >= k:
            break
        e = sd.cells((c[:-1] + c[1:]) / 2)
        sse = sd.sse_about(e, c)
        order = np.argsort(-sse, kind="stable")
        added = False
        for j in order:
            if sse[j] <= 0:
                break
            lo, hi = sd.u[e[j]], sd.u[e[j + 1] - 1]
            cand = float(lo if abs(lo - c[j]) >= abs(hi - c[j]) else hi)
            if cand not in set(c.tolist()):
                c = np.unique(np.append(c, cand))
                added = True
                break
        if not added:
            break
    return c


def _lloyd(sd: SortedData, c: np.ndarray, k: int, max_iter: int):
    """Lloyd's algorithm on the sorted sample, O(k log n) per iteration. Returns the centres
    (each the mean of its cell), the cell edges and the iteration count; stops at a fixed point."""
    c = _fill_centres(sd, np.asarray(c, dtype=np.float64), k)
    prev = None
    it = 0
    for it in range(1, max_iter + 1):
        e = sd.cells((c[:-1] + c[1:]) / 2)
        if prev is not None and np.array_equal(e, prev):
            break
        w, m, _ = sd.cell_stats(e)
        if np.any(w == 0):
            c = _fill_centres(sd, m[w > 0], k)
            prev = None
        else:
            c, prev = m, e
    e = sd.cells((c[:-1] + c[1:]) / 2)
    w, m, sse = sd.cell_stats(e)
    if np.all(w > 0):
        c = m
    return c, float(sse.sum()), it


def _kmeanspp(sd: SortedData, k: int, rng: np.random.Generator) -> np.ndarray:
    """Exact k-means++ (D² sampling over all n weights) in O(k² + k log n) with prefix sums:
    a cell is chosen with probability proportional to its squared error, then a value inside it
    by binary search on the cumulative squared error, which is monotone inside the cell."""
    W, S1, S2, u = sd.W, sd.S1, sd.S2, sd.u
    j0 = int(np.searchsorted(W, rng.random() * sd.n, side="right")) - 1
    c = np.array([float(u[min(max(j0, 0), u.size - 1)])])
    for _ in range(k - 1):
        e = sd.cells((c[:-1] + c[1:]) / 2)
        # split each Voronoi cell at its centre so the nearest centre is fixed in each half
        split = np.searchsorted(sd.u64, c, side="left")
        edges = np.empty(2 * c.size + 1, dtype=np.int64)
        edges[0::2] = e
        edges[1::2] = np.clip(split, e[:-1], e[1:])
        cc = np.repeat(c, 2)
        costs = sd.sse_about(edges, cc)
        total = costs.sum()
        if not total > 0:
            break
        h = int(np.searchsorted(np.cumsum(costs), rng.random() * total, side="right"))
        h = min(h, costs.size - 1)
        a, b = int(edges[h]), int(edges[h + 1])
        cs = float(cc[h]) - sd.shift
        target = rng.random() * costs[h]
        lo, hi = a, b  # find the smallest i in (a, b] with cum(i) > target

        def cum(i):
            return (S2[i] - S2[a]) - 2 * cs * (S1[i] - S1[a]) + cs * cs * (W[i] - W[a])

        lo += 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cum(mid) > target:
                hi = mid
            else:
                lo = mid + 1
        cand = float(u[min(lo, b) - 1])
        if cand in set(c.tolist()):
            continue
        c = np.sort(np.append(c, cand))
    return c


def _fit_cws(sd: SortedData, k: int, rng, *, n_init: int = 5, max_iter: int = 10000, init=None) -> _Fit:
    if k >= sd.n_distinct:
        return _exact_fit(sd, "cws")
    inits = []
    if init is not None:
        init = np.unique(np.asarray(init, dtype=np.float64))
        if init.size != k or not np.all(np.isfinite(init)):
            raise InvalidArgumentError(f"init must hold {k} distinct finite centres")
        inits.append(("given", init))
    else:
        # quantile seeding (deterministic), then k-means++ seedings from the seeded generator
        inits.append(("quantile", sd.quantile((np.arange(k) + 0.5) / k)))
        for _ in range(max(0, n_init - 1)):
            inits.append(("k-means++", _kmeanspp(sd, k, rng)))
    best = None
    for name, c0 in inits:
        c, sse, iters = _lloyd(sd, c0, k, max_iter)
        if best is None or sse < best[1]:
            best = (c, sse, iters, name)
    c, sse, iters, name = best
    c32, _ = _dedupe32(c, (c[:-1] + c[1:]) / 2)
    return _Fit(c32, info={"init": name, "iterations": iters, "mse": sse / sd.n})


# --- PWS: probabilistic quantization --------------------------------------------------------------

class _PwsFit(_Fit):
    def assign(self, x: np.ndarray, rng) -> np.ndarray:
        if self.codebook.size == 1:
            return np.zeros(x.shape, dtype=np.int64)
        r = self.codebook.astype(np.float64)
        j = np.clip(np.searchsorted(self.codebook, x, side="right") - 1, 0, r.size - 2)
        lo, hi = r[j], r[j + 1]
        up = (x - lo) / (hi - lo)
        return j + (rng.random(x.shape) < up)


def _fit_pws(sd: SortedData, k: int, rng) -> _Fit:
    if k >= sd.n_distinct:  # every value is a representative: rounding is the identity
        return _exact_fit(sd, "pws")
    if k == 1:
        # one level cannot round unbiasedly per weight; the mean keeps the total unbiased
        return _Fit(np.array([sd.shift], dtype=np.float32), info={"requested_k": 1})
    reps = np.unique(sd.quantile(np.linspace(0.0, 1.0, k)).astype(np.float32))
    # the end points must be the exact min and max so every weight lies between two levels
    reps[0], reps[-1] = sd.xs[0], sd.xs[-1]
    reps = np.unique(reps)
    return _PwsFit(reps, np.empty(0), info={"requested_k": k, "effective_k": int(reps.size)})


# --- UQ: uniform quantization ---------------------------------------------------------------------

PAPER_DELTAS = (100.0 + 500.0 * np.arange(2000)) / 1e6  # 1e-4, 6e-4, ..., 0.9996 (uUQ.py)


def _range_delta(lo: float, hi: float, k: int) -> float:
    """Smallest step whose grid through 0 spans [min(lo,0), max(hi,0)] with <= k levels."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo == 0:
        return 1.0

    def levels(d):
        return np.rint(hi / d) - np.rint(lo / d) + 1

    a, b = (hi - lo) / (2 * k + 2), 2.0 * (hi - lo) + 1.0  # levels(a) > k >= levels(b)
    if levels(a) <= k:
        return a
    for _ in range(200):
        m = (a + b) / 2
        if m <= a or m >= b:
            break
        if levels(m) <= k:
            b = m
        else:
            a = m
    return b


def _occupied(sd: SortedData, d: float, cap: int) -> int:
    """Number of distinct values of rint(u/d), or cap+1 once it is known to exceed cap."""
    u = sd.u64  # float64: a float32 quotient would round differently from the final pass
    m_lo, m_hi = np.rint(u[0] / d), np.rint(u[-1] / d)
    span = int(m_hi - m_lo) + 1
    if span <= cap:
        return span  # an upper bound; the caller checks the exact count of the chosen step
    if span * 24 < u.size:
        bounds = (np.arange(m_lo, m_hi) + 0.5) * d
        e = sd.cells(bounds)
        return int(np.count_nonzero(e[1:] > e[:-1]))
    m = np.rint(u / d)
    return 1 + int(np.count_nonzero(m[1:] != m[:-1]))


def _exact_occupied(sd: SortedData, d: float) -> int:
    m = np.rint(sd.u64 / d)
    return 1 + int(np.count_nonzero(m[1:] != m[:-1]))


class _UqFit(_Fit):
    def __init__(self, levels_m, delta, info):
        self.m = np.asarray(levels_m, dtype=np.float64)
        self.delta = float(delta)
        super().__init__((self.m * self.delta).astype(np.float32), np.empty(0), info)

    def assign(self, x: np.ndarray, rng) -> np.ndarray:
        m = np.rint(x.astype(np.float64) / self.delta)
        span = self.m[-1] - self.m[0] + 1
        if span <= (1 << 24):  # lookup table over the level numbers
            lut = np.zeros(int(span), dtype=np.int64)
            lut[(self.m - self.m[0]).astype(np.int64)] = np.arange(self.m.size)
            return lut[np.clip(m - self.m[0], 0, span - 1).astype(np.int64)]
        return np.minimum(np.searchsorted(self.m, m), self.m.size - 1)


def _fit_uq(sd: SortedData, k, rng, *, mode: str = "search", delta=None, deltas=None) -> _Fit:
    if delta is not None:
        d = float(delta)
        if not (d > 0 and math.isfinite(d)):
            raise InvalidArgumentError(f"delta must be a positive finite step, got {delta!r}")
        chosen, how = d, "given"
    else:
        lo, hi = float(sd.u[0]), float(sd.u[-1])
        d_r = _range_delta(lo, hi, k)
        if mode == "range":
            chosen, how = d_r, "range"
        elif mode in ("search", "paper"):
            if deltas is not None:
                grid = np.sort(np.asarray(deltas, dtype=np.float64))
                if grid.size == 0 or not np.all(grid > 0) or not np.all(np.isfinite(grid)):
                    raise InvalidArgumentError("deltas must be positive finite steps")
            elif mode == "paper":
                grid = PAPER_DELTAS
            else:
                grid = d_r * np.linspace(0.05, 1.0, 400)
            chosen, how = None, mode
            for d in grid:
                if _occupied(sd, float(d), k) <= k and _exact_occupied(sd, float(d)) <= k:
                    chosen = float(d)
                    break
            if chosen is None:  # paper: falls back to δ = 1, which may exceed k; the range step cannot
                chosen, how = d_r, mode + "-fallback-range"
        else:
            raise InvalidArgumentError(f"mode must be 'search', 'paper' or 'range', got {mode!r}")
    m = np.unique(np.rint(sd.u64 / chosen))
    return _UqFit(m, chosen, info={"delta": chosen, "delta_rule": how})


# --- ECSQ: entropy-constrained scalar quantization ------------------------------------------------

def _envelope(c, a, absolute: bool):
    """Cells of argmin_j D(x, c_j) + a_j for sorted c: returns (active cluster ids, thresholds).

    Pairwise cost differences are monotone in x (squared and absolute distortion alike), so
    each cluster wins an interval and the lower envelope comes from one stack pass (the convex
    hull trick). Ties go to the lower cluster, like the paper's argmin."""
    ids, starts = [], []
    inf = math.inf

    def cross(i, j):  # j (c_j > c_i) beats i exactly for x > cross(i, j)
        ci, cj, da = c[i], c[j], a[j] - a[i]
        if absolute:
            dd = cj - ci
            if da >= dd:
                return inf
            if da < -dd:
                return -inf
            return (ci + cj + da) / 2
        if cj <= ci:  # centres equal to rounding (extreme ranges): the cheaper one wins everywhere
            return -inf if da < 0 else inf
        return (ci + cj) / 2 + da / (2 * (cj - ci))

    for j in range(len(c)):
        x = -inf
        while ids:
            x = cross(ids[-1], j)
            if x <= starts[-1]:
                ids.pop()
                starts.pop()
                x = -inf
            else:
                break
        if x == inf:
            continue
        ids.append(j)
        starts.append(x)
    return np.array(ids, dtype=np.int64), np.array(starts[1:], dtype=np.float64)


def _abs_error(sd: SortedData, e, c):
    split = np.clip(np.searchsorted(sd.u64, c, side="left"), e[:-1], e[1:])
    cs = c - sd.shift
    wl, sl = sd.W[split] - sd.W[e[:-1]], sd.S1[split] - sd.S1[e[:-1]]
    wr, sr = sd.W[e[1:]] - sd.W[split], sd.S1[e[1:]] - sd.S1[split]
    return (cs * wl - sl) + (sr - cs * wr)


def _ecsq_run(sd: SortedData, k: int, lam: float, *, n_clusters=None, max_iter=50, tol=0.0,
              distortion="squared", stop_at_k=True):
    absolute = distortion == "absolute"
    K0 = n_clusters if n_clusters is not None else 3 * k
    n = sd.n
    # equal-count chunks of the sorted sample (np.array_split sizes), chunk means as centres
    q, r = divmod(n, K0)
    sizes = np.full(K0, q, dtype=np.int64)
    sizes[:r] += 1
    pos = np.concatenate(([0], np.cumsum(sizes)))
    pos = np.unique(pos)

    def prefix_at(p):  # S1 over the first p sorted values (a run may be cut)
        j = np.searchsorted(sd.W, p, side="right") - 1
        j = np.minimum(j, sd.u.size - 1)
        return sd.S1[j] + (p - sd.W[j]) * (sd.u[j].astype(np.float64) - sd.shift)

    s1 = prefix_at(pos)
    cnt = np.diff(pos).astype(np.float64)
    c = np.diff(s1) / cnt + sd.shift
    # chunks of one repeated value give equal centres: merged (the paper's argmin empties all but one)
    c, inv = np.unique(c, return_inverse=True)
    p = np.bincount(inv, weights=cnt) / n
    J_prev = math.inf
    prev_e = None
    e = thr = None
    it = 0
    for it in range(1, max_iter + 1):
        a = -lam * np.log(p)
        ids, thr = _envelope(c.tolist(), a.tolist(), absolute)
        e = sd.cells(thr)
        w, m, _ = sd.cell_stats(e)
        cc, ac = c[ids], a[ids]
        dist = _abs_error(sd, e, cc) if absolute else sd.sse_about(e, cc)
        J = float((dist.sum() + (w * ac).sum()) / n)
        keep = w > 0  # clusters whose cell caught no weight die (p = 0, cost +inf)
        ends = e[1:][keep]
        # final cell edges: the last weight of each non-empty cell stays in it
        thr = sd.u[ends[:-1] - 1].astype(np.float64)
        c, p = m[keep], w[keep] / n
        if c.size > 1 and not np.all(c[1:] > c[:-1]):  # means equal to rounding: merge them
            thr = thr[c[1:] > c[:-1]]  # (means of ordered cells never decrease)
            c, inv = np.unique(c, return_inverse=True)
            p = np.bincount(inv, weights=p)
        if prev_e is not None and np.array_equal(ends, prev_e):
            break
        prev_e = ends
        if J_prev - J <= tol:
            break
        if stop_at_k and c.size <= k:
            break
        J_prev = J
    return c, thr, it


def _fit_ecsq(sd: SortedData, k: int, rng, *, lam=None, n_clusters=None, max_iter=50, tol=0.0,
              distortion="squared", stop_at_k=True) -> _Fit:
    if distortion not in ("squared", "absolute"):
        raise InvalidArgumentError(f"distortion must be 'squared' or 'absolute', got {distortion!r}")
    if k >= sd.n_distinct:
        return _exact_fit(sd, "ecsq")
    kw = dict(n_clusters=n_clusters, max_iter=max_iter, tol=tol, distortion=distortion,
              stop_at_k=stop_at_k)
    if lam is None:
        lam = _tune_lambda(sd, k, **kw)
        tuned = True
    else:
        lam = float(lam)
        if not (lam >= 0 and math.isfinite(lam)):
            raise InvalidArgumentError(f"lam must be a finite number >= 0, got {lam!r}")
        tuned = False
    c, thr, it = _ecsq_run(sd, k, lam, **kw)
    restart = False
    if tuned and c.size > k:
        # too few weights per starting cluster (e.g. 3k >= n): equal shares give every cluster the
        # same rate term, nothing ever merges, and no λ helps; start from k chunks instead
        kw = {**kw, "n_clusters": k}
        lam = _tune_lambda(sd, k, **kw)
        c, thr, it = _ecsq_run(sd, k, lam, **kw)
        restart = True
    c32, thr = _dedupe32(c, thr)
    return _Fit(c32, thr, info={"lambda": lam, "lambda_tuned": tuned, "iterations": it,
                                "restarted_from_k": restart})


def _tune_lambda(sd: SortedData, k: int, **kw) -> float:
    """Smallest λ (to ~1 % by bisection in log λ) whose ECSQ run gives at most k cells."""
    var = float(sd.S2[-1] / sd.n) or 1.0
    scale = var if kw.get("distortion", "squared") == "squared" else math.sqrt(var)

    def count(lam):
        return _ecsq_run(sd, k, lam, **kw)[0].size

    lo, hi = 0.0, scale * 1e-3
    for _ in range(20):
        if count(hi) <= k:
            break
        lo, hi = hi, hi * 4
    if lo == 0.0 and count(0.0) <= k:
        return 0.0
    lo = max(lo, hi * 1e-6)
    for _ in range(40):
        if hi / lo < 1.01:
            break
        mid = math.sqrt(lo * hi)
        if count(mid) <= k:
            hi = mid
        else:
            lo = mid
    return hi


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
    >>> q = uq(np.array([-0.31, 0.02, 0.29, 0.61], np.float32), 4, mode="range")
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
