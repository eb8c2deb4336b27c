"""auto_compress's search on the real metric: a verified start (every layer at the same step
relative to its rms, the coarsest such step within half the budget), then a coordinate descent that moves one layer at a time to a cheaper candidate
and keeps the move only when the measured metric stays within a threshold.

Why a descent and not only the Lagrangian prediction: on small regression heads the metric's
response to one layer's quantization is far from additive or monotone in the squared error
(DeepDTA DAVIS, fc3 alone, balanced rounding: +0.047 test MSE at Δ = 0.055, -0.001 at Δ = 0.065),
so the prediction only orders the moves; every kept move is measured together with the others.
The thresholds rise over the rounds (a third of the remaining budget, two thirds, all of it) so
the first layer visited does not take the whole budget. Layers worth less than `min_share` of
the current bytes are left where the start put them (a move there saves little and costs an
evaluation, often the expensive kind: early layers invalidate any feature cache of `evaluate`).
"""
from __future__ import annotations

import math


def ladder(cands) -> list:
    """Indices of the candidates on the (bytes, squared error) Pareto front, most bytes first.

    >>> from pydnnz.compress.allocate import Candidate
    >>> ladder([Candidate("dense", nbytes=400), Candidate("rdq", nbytes=90, distortion=2.0),
    ...         Candidate("rdq", nbytes=100, distortion=3.0), Candidate("rdq", nbytes=50, distortion=5.0)])
    [0, 1, 3]
    """
    order = sorted(range(len(cands)), key=lambda i: (cands[i].nbytes, cands[i].distortion, i))
    front, best_d = [], math.inf
    for i in order:  # fewest bytes first: keep a candidate only if it lowers the error
        if cands[i].distortion < best_d:
            front.append(i)
            best_d = cands[i].distortion
    return front[::-1]


def uniform_alloc(table, rms, j) -> dict:
    """Every layer at RDQ step rms·2^(-j/2) with plain (balanced) rounding: the candidate of that
    kind whose step is nearest; a layer without one stays dense (index 0)."""
    out = {}
    for n, cands in table.items():
        best, dist = 0, math.inf
        target = rms[n] * 2.0 ** (-j / 2.0)
        for i, c in enumerate(cands):
            if c.method == "rdq" and c.options.get("rdo", 0.0) == 0.0 and target > 0:
                d = abs(math.log(c.options["step"] / target))
                if d < dist - 1e-12:
                    best, dist = i, d
        out[n] = best
    return out


def uniform_start(js, test, *, first=1.0, max_tries=6):
    """The coarsest j of the grid `js` (larger j: finer) whose uniform allocation passes
    test(j), walking from the j nearest `first`: coarser while it passes; while it fails, finer by
    two grid steps, or further when test(j) returns (False, j_hint) with a finer j_hint (the j at
    which the failure's size predicts a pass: a degradation d over a threshold t scales with the
    squared step, Δ² ∝ 2^(-j), so j + log2(d / t)); after the first pass coming from a failure,
    coarser again while it passes and stays finer than the last failure. test(j) returns a bool
    or (bool, j_hint). None when nothing passed within max_tries."""
    js = sorted(set(js))
    tries = [0]

    def run(i):
        tries[0] += 1
        r = test(js[i])
        return (bool(r[0]), r[1]) if isinstance(r, tuple) else (bool(r), None)

    p = min(range(len(js)), key=lambda i: (abs(js[i] - first), i))
    ok, hint = run(p)
    if ok:
        best = js[p]
        while p > 0 and tries[0] < max_tries:
            p -= 1
            if not run(p)[0]:
                break
            best = js[p]
        return best
    failed = p
    while tries[0] < max_tries and p < len(js) - 1:
        nxt = min(p + 2, len(js) - 1)
        if hint is not None and math.isfinite(hint):
            nxt = max(nxt, min([i for i in range(len(js)) if js[i] >= hint - 1e-9], default=len(js) - 1))
        p = nxt
        ok, hint = run(p)
        if ok:
            best = js[p]
            while p - 1 > failed and tries[0] < max_tries:  # coarser again, down to the last failure
                p -= 1
                if not run(p)[0]:
                    break
                best = js[p]
            return best
        failed = p
    return None


def descend(table, alloc, check, *, start_deg, allowed, rounds=3, patience=3, min_share=0.03, jump=0.08,
            accel=2.0, max_jump=0.32, stop=lambda: False, bar=None):
    """Coordinate descent from `alloc` ({name: candidate index}); returns (alloc, degradation).

    check(alloc, threshold) -> (ok, degradation): the measured degradation of the allocation and
    whether it is <= threshold (the caller caches and counts evaluations). Per round r of
    `rounds` the threshold is start + (allowed - start)·r/rounds. Within a round the layers take
    turns (round robin, largest first): each turn one layer tries its next cheaper candidate on
    its ladder, at least a fraction `jump` below the last one tried (a dense ladder would spend
    evaluations on 1 % moves), and keeps it if it passes; after `patience` consecutive failures
    a layer sits out the rest of the round. Turns, not one layer at a time, so that the budget
    is shared: the first layer visited does not take all of it. A layer whose move passed tries
    a bigger one on its next turn (the fraction times `accel`, up to `max_jump`); when such a
    bigger move fails, the layer retries from where it is with `jump` (that failure does not
    count towards `patience`). Deterministic: the order depends only on the table and the start.
    """
    alloc = dict(alloc)
    cur = max(0.0, start_deg)
    ladders = {n: ladder(c) for n, c in table.items()}

    def next_trial(n, after, frac):
        """The ladder position of the next candidate to try below position `after`."""
        lad = ladders[n]
        last = table[n][lad[after]].nbytes if after >= 0 else math.inf
        j = after + 1
        while j < len(lad) - 1 and table[n][lad[j]].nbytes > (1.0 - frac) * last:
            j += 1
        return j if j < len(lad) else None

    def position(n):
        lad = ladders[n]
        if alloc[n] in lad:
            return lad.index(alloc[n])
        # the start chose a candidate off the front: the last front entry with at least its bytes
        return max([j for j, i in enumerate(lad) if table[n][i].nbytes >= table[n][alloc[n]].nbytes], default=-1)

    start = cur
    for r in range(1, rounds + 1):
        thr = start + (allowed - start) * r / rounds if r < rounds else allowed
        total = sum(table[n][i].nbytes for n, i in alloc.items())
        names = sorted(alloc, key=lambda n: (-table[n][alloc[n]].nbytes, n))
        active = {n: [position(n), 0, jump] for n in names if table[n][alloc[n]].nbytes >= min_share * total}
        while active:
            for n in [n for n in names if n in active]:
                if stop():
                    return alloc, cur
                pos, fails, frac = active[n]
                j = next_trial(n, pos, frac)
                if j is None:
                    del active[n]
                    continue
                trial = dict(alloc)
                trial[n] = ladders[n][j]
                ok, deg = check(trial, thr)
                if bar is not None:
                    bar.update(1)
                if ok:
                    alloc, cur = trial, deg
                    active[n] = [j, 0, min(frac * accel, max(max_jump, jump))]
                elif frac > jump:  # the bigger move failed: the usual one from where the layer is
                    active[n] = [pos, fails, jump]
                elif fails + 1 >= patience:
                    del active[n]
                else:
                    active[n] = [j, fails + 1, jump]
    return alloc, cur


def concat_batches(calibration):
    """The calibration batches as ONE batch (tensors, or tuples of tensors, joined on dim 0)."""
    import torch

    first = calibration[0]
    if isinstance(first, (tuple, list)):
        return tuple(torch.cat([b[i] for b in calibration]) for i in range(len(first)))
    return torch.cat(list(calibration))


def mean_outputs(model, modules: dict, batch) -> dict:
    """{name: float64 mean pre-activation output W·μ + b} of the given Linear layers on `batch`."""
    import numpy as np
    import torch

    out, hooks = {}, []

    def hook(name):
        def post(mod, args, y):
            y = y.detach().to(torch.float64)
            out[name] = y.reshape(-1, y.shape[-1]).mean(0).numpy().copy()
        return post

    for name, m in modules.items():
        hooks.append(m.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode():
            model(*batch) if isinstance(batch, tuple) else model(batch)
    finally:
        for h in hooks:
            h.remove()
    return {n: np.asarray(v) for n, v in out.items()}


def sequential_bias_correction(model, modules: dict, batch, targets: dict, inputs: dict | None = None) -> dict:
    """Empirical bias correction in one forward pass over `batch`: just before each Linear layer of
    `modules` runs, its bias becomes targets[name] - W_q·μ_q, with μ_q the mean of the input it
    actually receives (upstream layers quantized AND already corrected, since the pass is in
    order), so every corrected layer's mean output on the batch equals the float model's. The
    biases are left set in the model and returned as float32 arrays. `inputs`: a dict whose keys
    name layers of `modules` whose input (float64, flattened to rows) is stored into it."""
    import numpy as np
    import torch

    out, hooks = {}, []

    def hook(name):
        def pre(mod, args):
            x = args[0].detach().to(torch.float64)
            mu = x.reshape(-1, x.shape[-1]).mean(0)
            if inputs is not None and name in inputs:
                inputs[name] = x.reshape(-1, x.shape[-1]).clone()
            b = (torch.from_numpy(targets[name]) - mod.weight.detach().to(torch.float64) @ mu).to(torch.float32)
            with torch.no_grad():
                mod.bias.copy_(b.reshape(mod.bias.shape))
            out[name] = b.numpy().astype(np.float32).copy()
        return pre

    for name, m in modules.items():
        hooks.append(m.register_forward_pre_hook(hook(name)))
    try:
        with torch.no_grad():
            model(*batch) if isinstance(batch, tuple) else model(batch)
    finally:
        for h in hooks:
            h.remove()
    return out


class ForwardMemo:
    """Reuse a layer's output in the calibration passes of auto_compress when its weights and
    its input are those of an earlier pass: inside ``with memo(states)`` each module of
    `modules` (name -> module) whose state key (states[name]: the allocation's candidate index,
    which fixes its weights; None: do not reuse) and input tensors equal (torch.equal) one of its
    last `keep` calls returns a copy of that call's output instead of computing it. Exact (same
    weights, same input, same output). Only for modules whose parameters the pass does not change
    (not the bias-corrected Linear layers). DeepDTA: a move of a head layer no longer recomputes
    the protein convolutions on the calibration inputs (~60 % of an evaluation)."""

    def __init__(self, modules: dict, keep: int = 2):
        self.modules, self.keep = dict(modules), int(keep)
        self.cache = {n: [] for n in self.modules}  # name -> [(state, inputs, output)], newest last
        self.states = {}
        self.hits = 0

    def __call__(self, states: dict):
        self.states = dict(states)
        return self

    def _wrap(self, name, module):
        import torch

        forward = module.forward

        def run(*args, **kwargs):
            state = self.states.get(name)
            plain = not kwargs and all(isinstance(a, torch.Tensor) for a in args)
            if state is None or not plain:
                return forward(*args, **kwargs)
            for st, ins, out in self.cache[name]:
                if st == state and len(ins) == len(args) and all(
                        a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(args, ins)):
                    self.hits += 1
                    return out.clone()
            out = forward(*args)
            if isinstance(out, torch.Tensor):
                entries = self.cache[name]
                entries.append((state, tuple(a.detach().clone() for a in args), out.detach().clone()))
                del entries[:-self.keep]
            return out

        return run

    def __enter__(self):
        for name, m in self.modules.items():
            m.forward = self._wrap(name, m)
        return self

    def __exit__(self, *exc):
        for m in self.modules.values():
            if "forward" in m.__dict__:
                del m.forward
        return False


def layer_outputs(model, module, batch):
    """The float64 output rows of `module` (flattened to (rows, features)) on `batch`."""
    import torch

    out = {}

    def post(mod, args, y):
        y = y.detach().to(torch.float64)
        out["y"] = y.reshape(-1, y.shape[-1]).clone()

    h = module.register_forward_hook(post)
    try:
        with torch.inference_mode():
            model(*batch) if isinstance(batch, tuple) else model(batch)
    finally:
        h.remove()
    return out["y"]


def output_affine(x, weight, bias, y_float):
    """The output correction of a quantized Linear layer (auto_compress, after bias correction):
    with y_q = x·W_qᵀ + b its outputs on the calibration rows `x` and `y_float` the float model's,
    the least-squares c (one for the layer: Σ_u cov(y_f,u, y_q,u) / Σ_u var(y_q,u), pooled over
    output units) and the bias c·b + mean(y_f) − c·mean(y_q) such that c·W_q x + bias' fits y_f.
    Regressing the float outputs on the quantized ones shrinks them by about
    var(y_f) / (var(y_f) + var(noise)), the mean-squared-error optimal answer to independent
    quantization noise; on KIBA it also takes out the rounding's chance scale change of the
    predictions (bench/results/auto_noise_kiba_scale.md). Returns (c, new bias float64) or None
    when the fit is not accepted: c not finite or not in (0.5, 2), or its two-fold
    cross-validated squared error on the calibration rows (fit on the even rows, scored on the
    odd ones, and the reverse) not below that of the uncorrected layer."""
    import numpy as np

    x = np.asarray(x, np.float64)
    w = np.asarray(weight, np.float64)
    b = np.asarray(bias, np.float64).reshape(-1)
    yf = np.asarray(y_float, np.float64)
    yq = x @ w.T + b
    if yq.shape != yf.shape or yq.shape[0] < 4:
        return None

    def fit(rows):
        q, f = yq[rows], yf[rows]
        dq = q - q.mean(0)
        var = float(np.sum(dq * dq))
        if not var > 0:
            return None
        c = float(np.sum(dq * (f - f.mean(0)))) / var
        return c, f.mean(0) - c * q.mean(0)

    full = fit(slice(None))
    if full is None or not (math.isfinite(full[0]) and 0.5 < full[0] < 2.0):
        return None
    cv = plain = 0.0
    for a, z in ((slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2))):
        part = fit(a)
        if part is None:
            return None
        cv += float(np.sum((part[0] * yq[z] + part[1] - yf[z]) ** 2))
        plain += float(np.sum((yq[z] - yf[z]) ** 2))
    if not cv < plain:
        return None
    c = float(np.float32(full[0]))  # what the recipe's float32 scale applies
    return c, c * b + yf.mean(0) - c * yq.mean(0)


def lagrangian_polish(allocs, nbytes, check, best_bytes, allowed, stop=lambda: False):
    """After the descent, with evaluations left: the Lagrangian allocations (one per λ, fewer
    bytes as λ grows) that are smaller than `best_bytes`, bisected on the measured metric for the
    smallest one within the budget (the response is assumed roughly monotone in λ; every answer
    is still measured). Returns that allocation, or None."""
    idx = [i for i in range(len(allocs)) if nbytes(allocs[i]) < best_bytes]
    lo, hi, found = -1, len(idx), None
    while hi - lo > 1 and not stop():
        mid = (lo + hi) // 2
        ok, _ = check(allocs[idx[mid]], allowed)
        if ok:
            lo, found = mid, allocs[idx[mid]]
        else:
            hi = mid
    return found
