"""Magnitude pruning (Marinò et al., §2 of paper-methods.md), per layer or global."""
from __future__ import annotations

import numpy as np

from ._core import as_weights, check_p
from ..errors import InvalidArgumentError

__all__ = ["prune", "prune_global", "pruned_count"]


def pruned_count(n: int, p: float) -> int:
    """How many of n entries a percentile p prunes: round(p·n/100), halves rounded up."""
    return min(n, int(np.floor(p * n / 100.0 + 0.5)))


def _smallest_mask(a: np.ndarray, n_prune: int) -> np.ndarray:
    """Keep-mask that drops exactly the n_prune smallest entries of a (1-D, >= 0).

    Ties at the threshold are broken by position: among entries equal to the threshold, the
    ones with the lowest (C-order) index are pruned first.
    """
    n = a.size
    if n_prune <= 0:
        return np.ones(n, dtype=bool)
    if n_prune >= n:
        return np.zeros(n, dtype=bool)
    t = np.partition(a, n_prune - 1)[n_prune - 1]
    keep = a > t
    extra = (n - int(np.count_nonzero(keep))) - n_prune  # entries == t that must survive
    if extra > 0:
        tied = np.flatnonzero(a == t)
        keep[tied[tied.size - extra:]] = True
    return keep


def prune(w, p):
    """Magnitude pruning of one tensor at percentile p: returns ``(pruned, mask)``.

    The paper (``sHAM/pruning.py``) uses ``t = np.percentile(|w|, p)`` and keeps ``|w| > t``,
    so ties at t are all pruned and the achieved sparsity can overshoot the target by a lot
    (e.g. a tensor with many equal magnitudes); with p = 0 it even prunes the minimum-magnitude
    entries. Here the number of pruned entries is exactly ``round(p·n/100)`` (within half an
    element of the target p·n/100): the smallest magnitudes go first, and among entries whose
    magnitude equals the threshold the ones with the lowest C-order index are pruned first.
    Without ties this is the paper's strict rule at the threshold that realises that count.
    p = 0 prunes nothing, p = 100 prunes everything.

    ``pruned`` is float32 with exact (+0.0) zeros where ``mask`` (bool, True = kept) is False.

    >>> import numpy as np
    >>> w, m = prune(np.array([[0.5, -0.1], [0.2, -0.9]], np.float32), 50)
    >>> w.tolist(), m.tolist()
    ([[0.5, 0.0], [0.0, -0.8999999761581421]], [[True, False], [False, True]])
    """
    a = as_weights(w)
    p = check_p(p)
    mag = np.abs(a).ravel()
    keep = _smallest_mask(mag, pruned_count(mag.size, p)).reshape(a.shape)
    return np.where(keep, a, np.float32(0.0)), keep


def prune_global(weights, p):
    """Magnitude pruning with one threshold across several tensors (a dict or a list).

    Exactly ``round(p·N/100)`` of the N entries of all tensors together are pruned, smallest
    magnitudes first; ties break by position in the concatenation (dict/list order, then C
    order). Returns the same container type holding ``(pruned, mask)`` pairs.

    >>> import numpy as np
    >>> out = prune_global({"a": np.array([1.0, 2.0], np.float32), "b": np.array([3.0, 4.0], np.float32)}, 50)
    >>> out["a"][1].tolist(), out["b"][1].tolist()
    ([False, False], [True, True])
    """
    p = check_p(p)
    if isinstance(weights, dict):
        names, arrays = list(weights), [as_weights(v, f"weights[{n!r}]") for n, v in weights.items()]
    elif isinstance(weights, (list, tuple)):
        names, arrays = None, [as_weights(v, f"weights[{i}]") for i, v in enumerate(weights)]
    else:
        raise InvalidArgumentError(f"prune_global takes a dict or a list of arrays, got {type(weights).__name__}")
    if not arrays:
        raise InvalidArgumentError("prune_global needs at least one tensor")
    mag = np.concatenate([np.abs(a).ravel() for a in arrays])
    keep = _smallest_mask(mag, pruned_count(mag.size, p))
    out, off = [], 0
    for a in arrays:
        m = keep[off:off + a.size].reshape(a.shape)
        off += a.size
        out.append((np.where(m, a, np.float32(0.0)), m))
    return dict(zip(names, out)) if names is not None else out
