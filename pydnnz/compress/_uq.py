"""UQ fitter: uniform quantization q = δ·rint(w/δ) and its step rules (search, paper, range).
Used by :func:`pydnnz.compress.quantize.quantize`.
"""
from __future__ import annotations

import math

import numpy as np

from ._core import SortedData
from ._fit import _Fit
from ..errors import InvalidArgumentError


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
