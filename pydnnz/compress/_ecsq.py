"""ECSQ fitter: entropy-constrained scalar quantization and the tuning of its λ.
Used by :func:`pydnnz.compress.quantize.quantize` and :func:`~pydnnz.compress.quantize.ecsq_tune_lambda`.
"""
from __future__ import annotations

import math

import numpy as np

from ._core import SortedData
from ._fit import _dedupe32, _exact_fit, _Fit
from ..errors import InvalidArgumentError


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
