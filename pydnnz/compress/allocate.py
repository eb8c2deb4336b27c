"""Rate allocation across layers: candidate settings per tensor on real encoded sizes, and a
Lagrangian choice from one global multiplier (used by pydnnz.torch.auto_compress and by the
data-free `dnnz compress --auto`).

For a tensor W the candidates are RDQ settings (pydnnz.compress.rdq: step Δ = rms(W)·2^(-j/2) on a
grid, each with a few dead-zone strengths `rdo`), optionally UQ with k levels, and "dense" (no
loss, 4 bytes a weight). Each candidate carries its REAL encoded size (pydnnz.encode with the
fast entropy-coded encodings: ham, plus rlham when most entries are zero) and its squared error
D = ||W - Q(W)||². Given per-tensor sensitivities s (metric change per unit of D), the choice for
a multiplier λ is, independently per tensor, argmin s·D + λ·bytes: the solution of the knapsack
"fewest bytes for a predicted metric change Σ s·D" on the lower convex hull of each tensor's
(bytes, D) points. Larger λ, fewer bytes.

>>> import numpy as np
>>> w = {"a": np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)}
>>> table = candidate_table(w)
>>> pick = choose(table, {"a": 1.0}, lam=1e-3)
>>> 0 < table["a"][pick["a"]].nbytes < w["a"].nbytes
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._core import SortedData
from ._tensors import QuantizedTensor, index_dtype
from .rdq import MAX_LEVELS, fit_rdq

__all__ = ["Candidate", "candidate_table", "choose", "data_free", "lambda_grid", "materialize", "rule_for",
           "DEFAULT_STEPS", "DEFAULT_RDOS", "DEFAULT_UQ_KS"]

DEFAULT_STEPS = tuple(x / 2 for x in range(-4, 29))  # Δ = rms · 2^(-j/2), quarter-octave: 2·rms .. rms/128
DEFAULT_RDOS = (0.0, 0.15)             # plain rounding and a mild dead zone
DEFAULT_UQ_KS = (16, 32, 64)           # the paper's UQ at a few k (range-searched step)


@dataclass
class Candidate:
    """One setting of one tensor: method + parameters, real encoded bytes, squared error."""

    method: str            # "rdq", "uq" or "dense"
    k: int | None = None
    options: dict = field(default_factory=dict)
    nbytes: int = 0
    encoding: str = ""
    distortion: float = 0.0

    def describe(self) -> str:
        if self.method == "dense":
            return "dense"
        if self.method == "rdq":
            return f"rdq step={self.options['step']:.3g} rdo={self.options['rdo']:g}"
        return f"{self.method} k={self.k}"


def _encoded_size(q: QuantizedTensor):
    from ..encodings import encode

    best = None
    names = ["ham"]
    if q.indices.ndim >= 1 and q.indices.size:
        zero = np.flatnonzero(q.codebook == 0)
        if zero.size and np.count_nonzero(q.indices == zero[0]) > 0.5 * q.indices.size:
            names.append("rlham")
    for name in names:
        try:
            em = encode(q, encoding=name)
        except Exception:  # an encoding that cannot take this tensor steps aside
            continue
        if best is None or em.nbytes < best[0]:
            best = (int(em.nbytes), em.encoding)
    if best is None:
        em = encode(q, encoding="auto")
        best = (int(em.nbytes), em.encoding)
    return best


def _rdq_levels(w64, sd, step, rdo, k, balance=False, rows=1):
    fit = fit_rdq(sd, k, None, step=step, rdo=rdo, balance=balance)
    return fit, fit.assign_rows(w64, rows) + fit.m_lo


def _as_matrix(w):
    """The shape the encodings see: compress_model encodes the weight as it is (ndim >= 2)."""
    return w if w.ndim >= 2 else w.reshape(1, -1)


def rdq_k(w, step) -> int:
    """The level cap k that leaves every weight of w unclipped at this step (odd, symmetric)."""
    amax = float(np.max(np.abs(w))) if w.size else 0.0
    return 2 * int(np.rint(amax / step)) + 3


def candidate_table(weights: dict, *, steps=DEFAULT_STEPS, rdos=DEFAULT_RDOS, uq_ks=(), dense=True,
                    balance=True, progress=None) -> dict:
    """{name: [Candidate, ...]} for each float tensor of `weights` (name -> ndarray).

    balance: RDQ candidates balance each row's sum (pydnnz.compress.rdq, ``balance=True``)."""
    from .._progress import progress_bar

    table = {}
    bar = progress_bar(sorted(weights), desc="candidates", disable=None if progress is None else not progress)
    for name in bar:
        w = np.ascontiguousarray(np.asarray(weights[name], dtype=np.float32))
        w64 = w.astype(np.float64).ravel()
        rms = float(np.sqrt(np.mean(w64 * w64))) if w.size else 0.0
        cands = []
        if dense:
            cands.append(Candidate("dense", nbytes=4 * w.size, encoding="dense", distortion=0.0))
        if rms == 0.0 or not np.all(np.isfinite(w64)):
            table[name] = cands
            continue
        sd = SortedData(w64.astype(np.float32))
        seen = set()
        for j in steps:
            step = float(rms * 2.0 ** (-j / 2.0))
            k = rdq_k(w, step)
            if k > MAX_LEVELS:
                continue
            for rdo in rdos:
                fit, m = _rdq_levels(w64, sd, step, float(rdo), k, balance, w.shape[0] if w.ndim >= 2 else 1)
                key = m.tobytes()
                if key in seen:  # same levels as a cheaper-to-describe candidate
                    continue
                seen.add(key)
                q = _quantized(fit.codebook.astype(np.float64), m - fit.m_lo, w.shape)
                nb, enc = _encoded_size(q)
                d = float(np.sum((w64 - fit.codebook[m - fit.m_lo].astype(np.float64)) ** 2))
                opts = {"step": step, "rdo": float(rdo)}
                if balance:
                    opts["balance"] = True
                cands.append(Candidate("rdq", k, opts, nb, enc, d))
        for kk in uq_ks:
            q = _quantize(w, "uq", int(kk))
            nb, enc = _encoded_size(q)
            d = float(np.sum((w64 - np.asarray(q, dtype=np.float64).ravel()) ** 2))
            cands.append(Candidate("uq", int(kk), {}, nb, enc, d))
        table[name] = cands
    return table


def _quantized(codebook64, idx, shape) -> QuantizedTensor:
    used = np.bincount(idx, minlength=codebook64.size) > 0
    remap = np.cumsum(used) - 1
    cb = codebook64[used].astype(np.float32) + np.float32(0.0)
    return QuantizedTensor(cb, remap[idx].reshape(shape).astype(index_dtype(cb.size)), validate=False)


def choose(table: dict, sens: dict, lam: float) -> dict:
    """{name: index into table[name]} minimising s·D + λ·bytes per tensor (ties: fewer bytes)."""
    out = {}
    for name, cands in table.items():
        s = float(sens.get(name, 0.0))
        best, best_j = 0, None
        for i, c in enumerate(cands):
            j = s * c.distortion + lam * c.nbytes
            if best_j is None or j < best_j or (j == best_j and c.nbytes < cands[best].nbytes):
                best, best_j = i, j
        out[name] = best
    return out


def lambda_grid(table: dict, sens: dict, n: int = 400) -> np.ndarray:
    """Multipliers spanning 'everything dense' to 'everything at its smallest candidate'."""
    slopes = []
    for name, cands in table.items():
        s = float(sens.get(name, 0.0))
        for a in cands:
            for b in cands:
                if a.nbytes > b.nbytes and b.distortion > a.distortion:
                    slopes.append(s * (b.distortion - a.distortion) / (a.nbytes - b.nbytes))
    slopes = [x for x in slopes if x > 0 and math.isfinite(x)]
    if not slopes:
        return np.array([0.0])
    lo, hi = min(slopes) / 2, max(slopes) * 2
    return np.geomspace(lo, hi, n)


def _quantize(w, method, k, **options):
    """quantize() without KNotSmallerWarning: rdq's k is only a cap on the levels (rdq_k leaves
    every weight unclipped), so k >= the weight count of a small layer is expected there."""
    import warnings

    from ..errors import KNotSmallerWarning
    from .quantize import quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KNotSmallerWarning)
        return quantize(w, method, k, **options)


def materialize(w, cand: Candidate):
    """The float32 values a candidate gives w (what compress_model's replay will store)."""
    if cand.method == "dense":
        return np.asarray(w, dtype=np.float32)
    q = _quantize(np.asarray(w, dtype=np.float32), cand.method, cand.k, **cand.options)
    return np.asarray(q, dtype=np.float32).reshape(np.shape(w))


def rule_for(pattern: str, cand: Candidate, encoding: str | None = None) -> dict:
    """The compress_model recipe rule that replays `cand` on the layer named by `pattern`, with
    the encoding whose size the candidate measured (None; "auto" would pick by speed and could
    store a larger file than the allocation counted)."""
    if cand.method == "dense":
        return {"match": pattern, "method": "none"}
    encoding = encoding or cand.encoding or "auto"
    rule = {"match": pattern, "method": cand.method, "k": int(cand.k), "encoding": encoding}
    if cand.options:
        rule["options"] = dict(cand.options)
    return rule


def data_free(weights: dict, budget: float, *, progress=None, **grid):
    """The data-free choice (a heuristic: no data, no metric): for each tensor the candidate of
    the largest multiplier λ whose mean relative squared error over the tensors,
    mean_l ||W_l - Q(W_l)||² / ||W_l||², stays <= budget.

    Returns ({name: Candidate}, the mean relative error reached).

    >>> import numpy as np
    >>> w = {"a": np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)}
    >>> pick, err = data_free(w, 1e-3)
    >>> err <= 1e-3, pick["a"].method
    (True, 'rdq')
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not (budget >= 0 and math.isfinite(budget)):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(f"budget must be a finite number >= 0 (a mean relative squared error), got {budget!r}")
    table = candidate_table(weights, progress=progress, **grid)
    energy = {n: float(np.sum(np.asarray(w, dtype=np.float64) ** 2)) for n, w in weights.items()}
    sens = {n: (1.0 / (len(weights) * e) if e > 0 else 0.0) for n, e in energy.items()}
    best, best_err = {n: 0 for n in table}, 0.0
    for lam in lambda_grid(table, sens, n=400):
        alloc = choose(table, sens, float(lam))
        err = sum(sens[n] * table[n][i].distortion for n, i in alloc.items())
        if err <= budget:
            best, best_err = alloc, err
    return {n: table[n][i] for n, i in best.items()}, best_err


def data_free_lossy(weights: dict, budget: float, *, progress=None, **grid):
    """data_free, applied: ({name: QuantizedTensor or the float32 array}, recipe rules, error).

    The rules are compress_model rules (one per tensor, matched by its module name, i.e. the
    tensor name without ".weight"), so the same choice replays on a PyTorch model.
    """
    pick, err = data_free(weights, budget, progress=progress, **grid)
    lossy, rules = {}, []
    for name in sorted(pick):
        c = pick[name]
        w = np.asarray(weights[name], dtype=np.float32)
        lossy[name] = w if c.method == "dense" else _quantize(w, c.method, c.k, **c.options)
        module = name[:-len(".weight")] if name.endswith(".weight") else name
        rules.append(rule_for("".join(f"[{ch}]" if ch in "[]*?" else ch for ch in module), c))
    return lossy, rules, err
