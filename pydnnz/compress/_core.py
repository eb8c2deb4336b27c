"""Shared machinery: argument checks and the sorted-data view every 1-D method works on.

All scalar quantizers here are one-dimensional: a cell of the quantizer is an interval of the
value axis. Once the data is sorted (one np.sort), the distinct values ``u``, their counts and
prefix sums of count, value and value² give the size, sum and squared error of any cell
[u[i], u[j]) in O(1), and the cell holding a value in O(log n). An iteration of Lloyd or ECSQ
then costs O(k log n) instead of O(n k).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["as_weights", "check_k", "check_p", "make_rng", "SortedData"]


def as_weights(w, what: str = "weights") -> np.ndarray:
    """``w`` as a float32 ndarray (no copy when it already is one); rejects bad input."""
    if isinstance(w, (str, bytes, dict, set)) or w is None:
        raise InvalidArgumentError(f"{what} must be a numeric array, got {type(w).__name__}")
    try:
        a = np.asarray(w)
    except Exception as exc:  # objects numpy cannot convert
        raise InvalidArgumentError(f"{what} must be a numeric array: {exc}") from None
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InvalidArgumentError(f"{what} must be a numeric array, got dtype {a.dtype}")
    if a.size == 0:
        raise InvalidArgumentError(f"{what} is empty (shape {a.shape})")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InvalidArgumentError(f"{what} holds non-finite values (NaN or inf)")
    return a


def check_k(k, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be an integer >= 1, got {k!r}")
    if k < 1:
        raise InvalidArgumentError(f"{what} must be >= 1, got {k}")
    return int(k)


def check_p(p, what: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise InvalidArgumentError(f"{what} must be a percentile in [0, 100], got {p!r}")
    p = float(p)
    if not (0.0 <= p <= 100.0):
        raise InvalidArgumentError(f"{what} must be a percentile in [0, 100], got {p}")
    return p


def check_fraction(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not (0.0 <= float(x) <= 1.0):
        raise InvalidArgumentError(f"{what} must be a number in [0, 1], got {x!r}")
    return float(x)


def make_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    if isinstance(seed, (list, tuple)) and all(isinstance(s, numbers.Integral) and s >= 0 for s in seed):
        return np.random.default_rng(list(seed))
    raise InvalidArgumentError(f"seed must be a non-negative integer, a Generator or None, got {seed!r}")


class SortedData:
    """Sorted distinct values of a 1-D float32 sample with weighted prefix sums.

    ``xs``: the sorted sample (float32, n); ``u``: its distinct values; ``cnt``: their counts;
    ``W``, ``S1``, ``S2``: prefix sums (length len(u)+1, float64) of count, count·(u - shift) and
    count·(u - shift)². The shift (the sample mean) keeps the S2 differences well conditioned.
    """

    __slots__ = ("xs", "_new", "_n_u", "_u", "_W", "_u64", "_cnt", "_S1", "_S2", "shift", "n")

    def __init__(self, x: np.ndarray):
        xs = np.sort(np.asarray(x, dtype=np.float32).ravel())
        n = xs.size
        new = np.empty(n, dtype=bool)
        new[:1] = True
        np.not_equal(xs[1:], xs[:-1], out=new[1:])
        self._new = new
        self._n_u = int(np.count_nonzero(new))
        self.xs, self.n = xs, n
        self.shift = float(np.mean(xs, dtype=np.float64)) if n else 0.0
        self._u = self._W = self._cnt = self._u64 = self._S1 = self._S2 = None  # built on first use

    def _uniq(self):
        xs, n = self.xs, self.n
        if self._n_u == n:  # all distinct (typical for trained float weights): unit counts
            self._u = xs
            self._W = np.arange(n + 1, dtype=np.int64)
        else:
            starts = np.flatnonzero(self._new)
            self._u = xs[starts]
            W = np.empty(self._n_u + 1, dtype=np.int64)
            W[:-1] = starts
            W[-1] = n
            self._W = W
            self._cnt = np.diff(W)

    @property
    def u(self) -> np.ndarray:
        if self._u is None:
            self._uniq()
        return self._u

    @property
    def W(self) -> np.ndarray:
        if self._W is None:
            self._uniq()
        return self._W

    def _prefix(self):
        d = self.u64 - self.shift
        wd = d if self._cnt is None else d * self._cnt  # (u64 built u, W and _cnt)
        S1 = np.empty(d.size + 1)
        S1[0] = 0.0
        np.cumsum(wd, out=S1[1:])
        wd = wd * d  # count·(u - shift)²
        S2 = np.empty(d.size + 1)
        S2[0] = 0.0
        np.cumsum(wd, out=S2[1:])
        self._S1, self._S2 = S1, S2

    @property
    def u64(self) -> np.ndarray:
        """u as float64: searchsorted with float64 keys would convert a float32 u on every call."""
        if self._u64 is None:
            self._u64 = self.u.astype(np.float64)
        return self._u64

    @property
    def S1(self) -> np.ndarray:
        if self._S1 is None:
            self._prefix()
        return self._S1

    @property
    def S2(self) -> np.ndarray:
        if self._S2 is None:
            self._prefix()
        return self._S2

    @property
    def cnt(self) -> np.ndarray:
        w = self.W
        return np.diff(w) if self._cnt is None else self._cnt

    @property
    def n_distinct(self) -> int:
        return self._n_u

    def cells(self, bounds: np.ndarray) -> np.ndarray:
        """Unique-value positions of the cell edges: value v is in cell j iff b[j-1] < v <= b[j].

        Returns an int array e of length len(bounds)+2 with e[0] = 0, e[-1] = len(u); cell j
        covers u[e[j]:e[j+1]].
        """
        e = np.empty(bounds.size + 2, dtype=np.int64)
        e[0], e[-1] = 0, self.u.size
        e[1:-1] = np.searchsorted(self.u64, bounds, side="right")
        return e

    def cell_stats(self, e: np.ndarray):
        """Count, mean (unshifted) and sum of squared deviations from the mean of each cell."""
        w = (self.W[e[1:]] - self.W[e[:-1]]).astype(np.float64)
        s1 = self.S1[e[1:]] - self.S1[e[:-1]]
        s2 = self.S2[e[1:]] - self.S2[e[:-1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(w > 0, s1 / np.where(w > 0, w, 1), 0.0)
        sse = np.maximum(s2 - m * s1, 0.0)
        return w, m + self.shift, sse

    def sse_about(self, e: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Squared error of each cell about the given (unshifted) centres c."""
        w = (self.W[e[1:]] - self.W[e[:-1]]).astype(np.float64)
        s1 = self.S1[e[1:]] - self.S1[e[:-1]]
        s2 = self.S2[e[1:]] - self.S2[e[:-1]]
        cs = c - self.shift
        return np.maximum(s2 - 2 * cs * s1 + cs * cs * w, 0.0)

    def quantile(self, q: np.ndarray) -> np.ndarray:
        """np.quantile(x, q) with the default 'linear' method, from the sorted sample."""
        pos = np.asarray(q, dtype=np.float64) * (self.n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, self.n - 1)
        t = pos - lo
        a = self.xs[lo].astype(np.float64)
        b = self.xs[hi].astype(np.float64)
        return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
