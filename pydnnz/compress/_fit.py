"""Fitted scalar quantizers: the common result type of every fitter.

A fit holds a float32 codebook (sorted, unique) and a rule mapping values to codebook indices;
the fitters of :mod:`._sharing` (CWS, PWS), :mod:`._uq` and :mod:`._ecsq` return one, and the
driver in :mod:`.quantize` calls its ``assign``.
"""
from __future__ import annotations

import numpy as np

from ._core import SortedData


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
