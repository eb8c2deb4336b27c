"""Weight sharing fitters: CWS (1-D k-means on all weights) and PWS (probabilistic rounding
between quantiles). Used by :func:`pydnnz.compress.quantize.quantize`.
"""
from __future__ import annotations

import numpy as np

from ._core import SortedData
from ._fit import _dedupe32, _exact_fit, _Fit
from ..errors import InvalidArgumentError


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
