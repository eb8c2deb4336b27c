"""auto_compress: the smallest file whose metric stays within a budget, found automatically.

The steps (each with a tqdm bar; `time_limit` stops the search early with the best verified result):

1. candidates: for every Linear / Conv1d / Conv2d / Embedding weight, RDQ settings (uniform step
   Δ = rms·2^(-j/2) on a quarter-octave grid, plain or dead-zone rate-distortion-optimised
   rounding with balanced row sums, pydnnz.compress.rdq), optional UQ k-levels, and "dense"; each
   with its real encoded size (and the encoding that gave it, which the recipe then names) and
   its squared error (pydnnz.compress.allocate).
2. start (with a metric): every layer at the same step relative to its rms, the coarsest such
   step whose measured degradation is within half the budget (_auto_search.uniform_start: a
   failure leaps finer by its size, degradation ∝ Δ²). With calibration batches this is done
   with the output correction (step 4) and then, at coarser steps only, without it; the search
   goes on in the mode whose start is coarser (ties: with the correction).
3. descent: layers take turns moving to their next cheaper candidate (a bigger move after a
   pass); a move is kept only when the measured metric of the whole allocation stays within a
   threshold that rises over three rounds to the budget (_auto_search.descend). No per-layer
   sensitivity probes: on the models measured the metric's response to one layer is far from
   additive or monotone, so the prediction mis-ordered the allocations while costing
   evaluations. With evaluations left after the descent, the Lagrangian allocations (relative
   weight-space error, one λ) smaller than the descent's result are bisected on the metric and
   the smallest passing one is kept.
4. bias correction (when `calibration` is given, without retraining): each quantized Linear
   layer's bias is re-set so that its mean output on the calibration inputs equals the float
   model's, in forward order on the quantized model (_auto_search.sequential_bias_correction).
   The corrected biases travel in the recipe (a rule's "bias"). Then the last Linear layer's
   outputs get an affine correction: the least-squares scale c and offset mapping its quantized
   outputs onto the float model's on the calibration inputs (the scale multiplies the layer's
   codebook: rule key "scale", exact and free in bytes), kept only when it lowers the two-fold
   cross-validated calibration error (_auto_search.output_affine). The search measures every
   allocation with both corrections applied.
5. the result: compress_model with the recipe of the chosen allocation (one rule per layer,
   replayable bit for bit), the final metric measured on the compressed model itself, and the file
   size measured by save_model.

Data-free (no metric, no calibration): one Lagrange multiplier λ, every layer independently takes
argmin s·D + λ·bytes with s = 1 / (L·||W||²) (relative weight-space error), the largest λ whose
mean relative squared error is within the budget.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .._progress import progress_bar
from ..errors import InvalidArgumentError

__all__ = ["auto_compress", "AutoReport"]

# The step grid with a metric (j: Δ = rms·2^(-j/2)): the data-free one (DEFAULT_STEPS) from
# Δ = 2·rms down to rms/64 only: no uniform start needed finer steps and those cost the most
# candidate time (DeepDTA KIBA: 5 of 51 s). Steps down to 4·rms changed the DAVIS descent's
# path and ended larger (ψ 0.0649 against 0.0546).
METRIC_STEPS = tuple(x / 2 for x in range(-4, 25))

_TYPES = {nn.Linear: "Linear", nn.Conv1d: "Conv1d", nn.Conv2d: "Conv2d", nn.Embedding: "Embedding"}


@dataclass
class AutoReport:
    """What auto_compress chose and measured. ``save(path)`` writes the recipe file (a JSON list
    of compress_model rules, replayable with ``compress_model(model, json.load(f))``);
    ``save_report(path)`` writes everything below as JSON."""

    recipe: list
    layers: list
    mode: str                 # "metric", "calibration" (relative output error as the metric) or "data-free"
    baseline: float | None
    metric: float | None      # measured on the compressed model (None in data-free mode)
    limit: float | None       # the metric the result must not cross
    higher_is_better: bool
    met: bool                 # the final metric is within the budget (data-free: prediction)
    file_bytes: int
    float32_bytes: int
    psi: float                # file bytes / float32 bytes of every parameter and buffer
    weight_bytes: int         # encoded bytes of the compressed layers
    lam: float
    hypothesis: str           # which sensitivities gave the chosen allocation
    seconds: float
    evaluations: int
    seed: int
    history: list = field(default_factory=list)
    phases: dict = field(default_factory=dict)
    retrain: dict = field(default_factory=dict)   # retraining mode: settings, chosen level and k, its history
    confirm: dict = field(default_factory=dict)   # with `confirm`: its baseline, limit, final metric, checks

    def base_model(self, model: nn.Module) -> nn.Module:
        """The float model the recipe applies to: a copy of `model`, with the retrained weights
        when auto_compress retrained (``compress_model(report.base_model(model), report.recipe)``
        rebuilds the compressed model bit for bit; training is not in the recipe)."""
        from ._compress import _copy_model

        base = _copy_model(model)
        state = getattr(self, "_base_state", None)
        if state is not None:
            base.load_state_dict(state)
        return base.eval()

    def save(self, path) -> None:
        """Write the recipe file (what `dnnz compress --recipe` and compress_model read)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.recipe, f, indent=1, sort_keys=True)
            f.write("\n")

    def save_report(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=1, sort_keys=True)
            f.write("\n")

    def summary(self) -> str:
        m = "" if self.metric is None else f", metric {self.metric:.4f} (baseline {self.baseline:.4f}, limit {self.limit:.4f})"
        return (f"auto_compress [{self.mode}]: {self.file_bytes} bytes, psi {self.psi:.4f}{m}, "
                f"{self.evaluations} evaluations, {self.seconds:.1f} s")


def _glob_literal(name: str) -> str:
    """A fnmatch pattern matching exactly `name` ([, ], *, ? escaped)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in name)


def _parse_budget(budget, baseline, higher_is_better):
    if isinstance(budget, str):
        s = budget.strip()
        if not s.endswith("%"):
            raise InvalidArgumentError(f"budget {budget!r}: a number (absolute) or a string like '1%' (relative)")
        try:
            allowed = float(s[:-1]) / 100.0 * abs(baseline)
        except ValueError:
            raise InvalidArgumentError(f"budget {budget!r}: not a percentage") from None
    elif isinstance(budget, (int, float)) and not isinstance(budget, bool):
        allowed = float(budget)
    else:
        raise InvalidArgumentError(f"budget must be a number or a string like '1%', got {budget!r}")
    if not (allowed >= 0 and math.isfinite(allowed)):
        raise InvalidArgumentError(f"budget must be >= 0 and finite, got {budget!r}")
    return allowed


def _layers(model, include_embeddings):
    out = []
    for name, m in model.named_modules():
        t = _TYPES.get(type(m))
        if t is None or (t == "Embedding" and (not include_embeddings or m.max_norm is not None)):
            continue
        out.append((name, m, t))
    return out


def _output_error(model, calibration, reference):
    """Relative squared error of the model's outputs on the calibration batches."""
    num = den = 0.0
    with torch.inference_mode():
        for batch, ref in zip(calibration, reference):
            out = model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
            out = out[0] if isinstance(out, (tuple, list)) else out
            num += float(torch.sum((out.float() - ref) ** 2))
            den += float(torch.sum(ref ** 2))
    return num / max(den, 1e-30)


def auto_compress(model: nn.Module, evaluate=None, budget=None, *, higher_is_better: bool = False,
                  calibration=None, retrain=None, time_limit: float | None = None, seed: int = 0,
                  include_embeddings: bool = True, steps=None, rdos=None, uq_ks=None, max_evals: int | None = None,
                  confirm=None, progress: bool | None = None, _exclude=()):
    """Compress `model` into the fewest file bytes whose metric stays within `budget`.

    Args:
        model: the float model (not modified).
        evaluate: ``evaluate(model) -> float``, the metric on your held-out data. By default LOWER
            is better (a loss, an MSE); pass ``higher_is_better=True`` for accuracy-like metrics.
            None: the metric is the relative output error on `calibration` (if given), or the
            data-free heuristic (weights only, see below).
        budget: the allowed degradation of the metric from the uncompressed model's value: a number
            is ABSOLUTE (0.003 = MSE may grow by 0.003; 0.001 = accuracy may drop by 0.1 point),
            a string "x%" is RELATIVE to the baseline metric ("1%"). Data-free: the allowed mean
            relative squared error of the layers' weights, ||W - Q(W)||² / ||W||² (e.g. 0.002).
        calibration: optional list of input batches (a tensor or a tuple of model arguments each;
            all of them go through the model as ONE batch for each measured allocation, so keep
            it small: ~100 samples). When given (and no `retrain`), the quantized Linear layers get
            bias correction (see above). Without `evaluate` the metric is the relative output
            error on them. Take them from training data, not from the data `evaluate` scores.
        retrain: retraining allowed, as a dict (the retraining mode, pydnnz.torch._auto_retrain):
            ``{"loss": loss(model, batch) -> scalar tensor, "data": batches, "steps": 1000}``.
            `data` is an iterable of batches re-iterated as needed (a DataLoader) or a callable
            ``data(step) -> batch``; the training loop (Adam) is auto_compress's own. The layers
            the loss reaches are pruned gradually (one global threshold; the last of them, the
            output layer, is quantized unpruned) through the levels `levels` (default 50, 75, 82,
            87.5, 91, 94, 95.5, 97, 98 %), ``steps · log2(density before / after)`` training
            steps a stage (`steps` is the cost of halving the density, default 1000; `lr` 1e-3);
            at each level UQ at k in `ks` (default 8, 16, 32) with `finetune_steps` (default
            steps/2) steps of shared-value fine-tuning at `finetune_lr` (default lr/10); the
            smallest verified file wins, then per-layer k is lowered where the metric holds.
            Optional keys `layers` / `exclude`: glob patterns of the layers to prune / to keep
            unpruned. The other layers (those the loss does not reach, embeddings) then go
            through the no-retraining search with what is left of the budget (the retraining
            stage takes at most half of it when such layers exist). The recipe applies to the
            retrained weights: ``compress_model(report.base_model(model), report.recipe)``.
            A callable ``retrain(model)`` instead: the no-retraining search, each verification
            fine-tuning the shared values with it (compress_model's ``finetune``); that recipe
            replays bit-exact only together with the same retraining.
        time_limit: seconds; the search stops at the limit with the best verified allocation.
        seed: recorded in the rules (the RD quantizer and the search draw no random numbers, so the
            result is deterministic for a given model, metric and seed, unless `time_limit` cuts
            the search at a point that depends on the machine's speed).
        include_embeddings: compress nn.Embedding tables too (they count in the file).
        steps, rdos, uq_ks: the candidate grid (see pydnnz.compress.allocate; steps default to
            METRIC_STEPS with a metric or calibration, DEFAULT_STEPS data-free).
        confirm: optional ``confirm(model) -> float``: the same metric on held-out data that the
            search never sees (same direction; the budget applies against its own baseline, a
            relative budget relative to it). The allocations the search verified are then checked
            on it, smallest first by bisection (about log2 of their number calls), and the smallest
            that also passes it is the result (every layer dense if none does). Why: the search
            keeps allocations whose error happens to line up with `evaluate`'s data; on DeepDTA
            DAVIS a result at +0.0026 MSE on the half of the test fold searched was +0.011 on the
            other half (``python -m bench.auto --holdout``). Not with `retrain` or without `evaluate`.
        max_evals: at most this many measured allocations (each one call of `evaluate`). None
            (default): 60, or with a `time_limit` up to 400 (the time limit then ends the search;
            DeepDTA KIBA on 2 cores: 109 evaluations in 83 s, converged at ψ 0.0735, where 60 stopped
            at 0.0797).

    Returns:
        (compressed model, AutoReport). ``report.save("recipe.json")`` writes the recipe;
        ``compress_model(model, report.recipe)`` rebuilds the same compressed model bit for bit
        (with a `retrain` dict: ``compress_model(report.base_model(model), report.recipe)``, the
        recipe applying to the retrained weights; ``report.retrain`` holds the chosen pruning
        level and k per layer, ``report.history`` every measured candidate).

    Example:
        >>> import torch, pydnnz.torch as pt
        >>> _ = torch.manual_seed(0); model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
        >>> x = torch.randn(256, 32); y = model(x).detach()
        >>> mse = lambda m: float(torch.mean((m(x).detach() - y) ** 2))
        >>> small, report = pt.auto_compress(model, mse, 1e-3)
        >>> report.metric <= report.limit, report.psi < 0.5
        (True, True)
    """
    from ..compress.allocate import materialize
    from ..compress.allocate import DEFAULT_RDOS, DEFAULT_STEPS, candidate_table, choose, lambda_grid, rule_for
    from ._auto_search import (ForwardMemo, concat_batches, descend, lagrangian_polish, layer_outputs, mean_outputs,
                               output_affine, sequential_bias_correction, uniform_alloc, uniform_start)
    from ._compress import _copy_model, compress_model
    from ._io import save_model

    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"auto_compress: expected an nn.Module, got {type(model).__name__}")
    if evaluate is not None and not callable(evaluate):
        raise InvalidArgumentError("auto_compress: evaluate must be a callable model -> float")
    if retrain is not None and not callable(retrain) and not isinstance(retrain, dict):
        raise InvalidArgumentError("auto_compress: retrain must be a dict (loss, data, ...) or a callable "
                                   "taking the model")
    if isinstance(retrain, dict):
        from ._auto_retrain import parse_retrain

        spec = parse_retrain(retrain)
        if evaluate is None:
            raise InvalidArgumentError("auto_compress: retraining needs an evaluate function (the metric)")
    if budget is None:
        raise InvalidArgumentError("auto_compress: give a budget (allowed metric degradation)")
    if time_limit is not None and not (time_limit > 0):
        raise InvalidArgumentError(f"auto_compress: time_limit must be > 0 seconds, got {time_limit!r}")
    if confirm is not None and (not callable(confirm) or evaluate is None or retrain is not None):
        raise InvalidArgumentError("auto_compress: confirm must be a callable model -> float, given with evaluate "
                                   "and without retrain")
    if max_evals is None:
        max_evals = 60 if time_limit is None else 400
    if isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 1:
        raise InvalidArgumentError(f"auto_compress: max_evals must be an int >= 1, got {max_evals!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError(f"auto_compress: seed must be an int >= 0, got {seed!r}")
    torch.manual_seed(seed)
    quiet = None if progress is None else not progress
    work = _copy_model(model).eval()
    layers = [e for e in _layers(work, include_embeddings) if e[0] not in set(_exclude)]
    if not layers:
        raise InvalidArgumentError("auto_compress: the model has no Linear/Conv1d/Conv2d/Embedding layer")
    originals = {name: m.weight.detach().to("cpu", torch.float32).numpy().copy() for name, m, _ in layers}
    modules = {name: m for name, m, _ in layers}
    phases = {}
    evals = [0]

    def over_time():
        return time_limit is not None and time.perf_counter() - t0 > time_limit

    # --- the metric and its direction -----------------------------------------------------------
    if calibration is not None:
        calibration = list(calibration)
        if not calibration:
            raise InvalidArgumentError("auto_compress: calibration holds no batch")
        with torch.inference_mode():
            reference = []
            for b in calibration:
                out = work(*b) if isinstance(b, (tuple, list)) else work(b)
                reference.append((out[0] if isinstance(out, (tuple, list)) else out).float().clone())
    mode = "metric" if evaluate is not None else ("calibration" if calibration is not None else "data-free")

    def measure(m):
        evals[0] += 1
        if evaluate is not None:
            v = evaluate(m)
        else:
            v = _output_error(m, calibration, reference)
        v = float(v)
        if not math.isfinite(v):
            return math.inf if not higher_is_better else -math.inf
        return v

    def degradation(v, base):
        return (base - v) if higher_is_better else (v - base)

    def set_weights(values):
        with torch.no_grad():
            for name, v in values.items():
                modules[name].weight.copy_(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))

    # Bias correction (with calibration batches, without retraining): the Linear layers' biases
    # are re-set so that each one's mean output on the calibration inputs equals the float
    # model's, in forward order on the quantized model (sequential_bias_correction: one pass,
    # upstream errors included). On a regression head the mean output shift moves every
    # prediction (DeepDTA DAVIS fc3 at Δ = 0.055: +0.047 test MSE, +0.0007 with the shift taken
    # out), so without it the metric's response to a layer is erratic and the search keeps lucky
    # points rather than good ones. The corrected biases travel in the recipe ("bias").
    biases = {n: m.bias.detach().to("cpu", torch.float32).numpy().copy() for n, m in modules.items()
              if getattr(m, "bias", None) is not None}
    linear = {n: m for n, m in modules.items() if isinstance(m, nn.Linear) and m.bias is not None}
    if calibration is not None and retrain is None and linear:
        cal_batch = concat_batches(calibration)
        targets = mean_outputs(work, linear, cal_batch)
        last = list(linear)[-1]  # the output correction's layer (see corrections below)
        last_outputs = layer_outputs(work, linear[last], cal_batch)
        # the calibration pass reuses the outputs of layers whose candidate and input did not change
        memo = ForwardMemo({n: m for n, m in modules.items() if n not in linear})
    else:
        cal_batch, targets, last, last_outputs, memo = None, {}, None, None, None

    def set_biases(values):
        with torch.no_grad():
            for name, v in values.items():
                modules[name].bias.copy_(torch.from_numpy(v).reshape(modules[name].bias.shape))

    if mode == "data-free":
        baseline = None
        hib = False
        allowed = _parse_budget(budget, 1.0, False)
    else:
        t = time.perf_counter()
        baseline = measure(work)
        hib = higher_is_better if evaluate is not None else False
        allowed = _parse_budget(budget, baseline, hib)
        phases["baseline"] = round(time.perf_counter() - t, 3)
    limit = None if baseline is None else (baseline - allowed if hib else baseline + allowed)
    if isinstance(retrain, dict):
        return _auto_retrained(model, work, spec, measure, lambda v: degradation(v, baseline), baseline, allowed,
                               limit, hib, evaluate=evaluate, seed=seed, time_limit=time_limit, t0=t0,
                               calibration=calibration, include_embeddings=include_embeddings, quiet=quiet,
                               phases=phases, grid=dict(steps=steps, rdos=rdos, uq_ks=uq_ks, max_evals=max_evals))

    # --- 1. candidates on real encoded sizes ----------------------------------------------------
    t = time.perf_counter()
    if steps is None:
        steps = DEFAULT_STEPS if mode == "data-free" else METRIC_STEPS
    table = candidate_table(originals, steps=steps,
                            rdos=DEFAULT_RDOS if rdos is None else rdos,
                            uq_ks=() if uq_ks is None else uq_ks, progress=progress)
    phases["candidates"] = round(time.perf_counter() - t, 3)

    # --- 2. sensitivities ------------------------------------------------------------------------
    # Data-free: relative weight-space error, s = 1 / (L·||W||²). With a metric no per-layer
    # probes: on the models measured the metric's response to one layer is not monotone in that
    # layer's squared error (see _auto_search), so probes mis-predicted and cost evaluations; the
    # search below measures every allocation it keeps instead.
    energy = {n: float(np.sum(w.astype(np.float64) ** 2)) for n, w in originals.items()}
    sens = {n: (1.0 / (len(originals) * e) if e > 0 else 0.0) for n, e in energy.items()}

    # --- 3/4. allocation and verification -------------------------------------------------------
    # The sensitivities predict a start (the largest λ whose predicted degradation is half the
    # budget), verified on the real metric and backed off to smaller λ if it fails; then the
    # coordinate descent of _auto_search moves one layer at a time to cheaper candidates, each
    # move measured together with all the others (the metric, not the prediction, decides).
    t = time.perf_counter()
    hyp = "relative" if mode == "data-free" else "uniform start"
    s_h = sens

    def nbytes(alloc):
        return sum(table[n][i].nbytes for n, i in alloc.items())

    history = []
    cache = {}

    mat_cache, bias_cache = {}, {}

    def values_of(n, i):  # the float values of candidate i of layer n (kept: the descent reuses them)
        if (n, i) not in mat_cache:
            mat_cache[(n, i)] = materialize(originals[n], table[n][i])
        return mat_cache[(n, i)]

    alloc_bias = {}  # allocation key -> {layer: corrected float32 bias}
    alloc_scale = {}  # allocation key -> {layer: codebook scale} (the output correction, when accepted)
    affine = [last is not None]  # the search's mode: with the output correction or without

    def akey(alloc):  # an allocation's cache key: the mode is part of what was measured
        return (affine[0], tuple(sorted(alloc.items())))

    def corrections(alloc):  # with the allocation's weights set in `work`; returns (biases, scales)
        quantized = {n: linear[n] for n, i in alloc.items() if n in linear and table[n][i].method != "dense"}
        if cal_batch is None or not quantized:
            return {}, {}
        inputs = {last: None} if last in quantized else {}
        with memo({n: alloc.get(n) for n in memo.modules}):
            out = sequential_bias_correction(work, quantized, cal_batch, {n: targets[n] for n in quantized}, inputs)
        # Output correction of the last Linear layer: with the upstream error in its input, the
        # least-squares affine map of its quantized outputs onto the float model's on the
        # calibration inputs (a codebook scale, exact and free in bytes, plus the bias), kept
        # only when it lowers the cross-validated calibration error (_auto_search.output_affine).
        # On a regression head the quantization's chance scale change of the predictions moves
        # the metric by as much as the budget (bench/results/auto_noise_kiba_scale.md).
        fit = output_affine(inputs[last], modules[last].weight.detach().numpy(), out[last],
                            last_outputs) if affine[0] and inputs.get(last) is not None else None
        if fit is None:
            return out, {}
        c, b = fit
        set_weights({last: values_of(last, alloc[last]) * np.float32(c)})
        out[last] = b.astype(np.float32)
        set_biases({last: out[last]})
        return out, {last: c}

    def recipe_of(alloc):
        rules = []
        for n, i in sorted(alloc.items()):
            r = rule_for(_glob_literal(n), table[n][i])
            if r["method"] != "none":
                r["seed"] = seed
                b = alloc_bias.get(akey(alloc), {}).get(n)
                if b is not None:
                    r["bias"] = [float(x) for x in b]
                c = alloc_scale.get(akey(alloc), {}).get(n)
                if c is not None:
                    r["scale"] = c
            rules.append(r)
        return rules

    def measured(alloc, fn):
        """fn(model) with the allocation's weights and corrections in `work` (restored after)."""
        key = akey(alloc)
        set_weights({n: values_of(n, i) for n, i in alloc.items()})
        alloc_bias[key], alloc_scale[key] = corrections(alloc)
        try:
            return fn(work)
        finally:
            set_weights(originals)
            set_biases({n: biases[n] for n in alloc_bias[key]})

    def check(alloc, threshold, lam=None, pred=None):
        key = akey(alloc)
        if key not in cache:
            if len(cache) >= max_evals:
                return False, math.inf
            if retrain is not None:
                v = measure(compress_model(work, recipe_of(alloc), finetune=retrain, progress=False))
            else:
                v = measured(alloc, measure)
            cache[key] = degradation(v, baseline)
            history.append({"lam": lam, "bytes": nbytes(alloc), "predicted": pred, "metric": v,
                            "threshold": threshold, "ok": cache[key] <= threshold,
                            "scale": alloc_scale.get(key, {}).get(last)})
        d = cache[key]
        return d <= threshold, d

    conf = {}

    def measure_confirm(m):
        v = float(confirm(m))
        return v if math.isfinite(v) else (-math.inf if hib else math.inf)

    def confirmed(alloc, hyp):
        """The smallest allocation the search verified that also passes `confirm` (bisection over
        them by bytes, assuming the held-out degradation falls as bytes grow; every answer is
        measured), or every layer dense."""
        c_base = measure_confirm(work)
        c_allowed = _parse_budget(budget, c_base, hib)
        passed = {}
        for key, d in cache.items():
            if key[0] == affine[0] and d <= allowed:
                a = dict(key[1])
                passed.setdefault(nbytes(a), a)
        order = [passed[b] for b in sorted(passed)]
        lo, hi, found, checks = -1, len(order), None, []
        while hi - lo > 1:
            mid = (lo + hi) // 2
            v = measure_confirm_of(order[mid])
            ok = degradation(v, c_base) <= c_allowed
            checks.append({"bytes": nbytes(order[mid]), "metric": v, "ok": ok})
            if ok:
                hi, found = mid, order[mid]
            else:
                lo = mid
        conf.update({"baseline": c_base, "allowed": c_allowed,
                     "limit": c_base - c_allowed if hib else c_base + c_allowed, "checks": checks})
        if found is None:
            return {n: 0 for n in originals}, hyp + " + confirm: nothing passed, dense"
        return found, hyp + (" + confirm" if found == alloc else " + confirm backed off")

    def measure_confirm_of(alloc):
        return measured(alloc, measure_confirm)

    grid = lambda_grid(table, s_h, n=160)
    allocs = [choose(table, s_h, float(lam)) for lam in grid]
    preds = [sum(s_h[n] * table[n][i].distortion for n, i in a.items()) for a in allocs]
    if mode == "data-free":
        ok_idx = [i for i, p in enumerate(preds) if p <= allowed]
        best = max(ok_idx) if ok_idx else 0
        chosen = (allocs[best], float(grid[best]), hyp, preds[best] <= allowed)
    else:
        bar = progress_bar(total=max_evals, desc="verify", disable=quiet)
        rms = {n: math.sqrt(e / max(originals[n].size, 1)) for n, e in energy.items()}
        js = [float(j) for j in steps]

        def test_uniform(j):
            ok, deg = check(uniform_alloc(table, rms, j), allowed / 2, lam=None, pred=f"uniform j={j:g}")
            bar.update(1)
            # the j where this failure's size predicts a pass (degradation ∝ Δ² ∝ 2^(-j))
            hint = j + math.log2(deg / (allowed / 2)) if not ok and allowed > 0 and 0 < deg < math.inf else None
            return ok, hint

        # The mode: the output correction keeps the quantized outputs closest to the float
        # model's, but a metric may prefer the uncorrected ones (DeepDTA KIBA: the float
        # predictions are spread too wide for the test labels, so a quantization that happens to
        # shrink them scores better, bench/results/auto_noise_kiba_scale.md). Both modes get a
        # uniform start; the uncorrected one is tried only at steps coarser than the corrected
        # start (one evaluation when it cannot beat it) and kept only when it starts coarser.
        j0 = uniform_start(js, test_uniform, max_tries=10) if js else None
        if affine[0] and js:
            affine[0] = False
            coarser = [j for j in js if j0 is None or j < j0]
            j1 = uniform_start(coarser, test_uniform, first=max(coarser) if j0 is not None else 1.0,
                               max_tries=10) if coarser else None
            if j1 is not None:
                j0 = j1
            else:
                affine[0] = True
        lam = 0.0
        if j0 is None:
            start, start_deg, hyp = {n: 0 for n in originals}, 0.0, "dense start"
        else:
            start = uniform_alloc(table, rms, j0)
            start_deg = check(start, allowed)[1]
            hyp = f"uniform start j={j0:g}" + (", output correction" if affine[0] else "")
        stop = lambda: over_time() or len(cache) >= max_evals  # noqa: E731
        alloc, _ = descend(table, start, lambda a, thr: check(a, thr), start_deg=start_deg, allowed=allowed,
                           stop=stop, bar=bar)
        # evaluations left: the Lagrangian allocations (relative weight-space error) smaller than
        # the descent's, bisected on the metric (MNIST: the descent stops early, this goes on)
        polished = lagrangian_polish(allocs, nbytes, check, nbytes(alloc), allowed, stop=stop)
        hyp += " + descent"
        if polished is not None:
            alloc, hyp = polished, hyp + " + Lagrangian"
        bar.close()
        if confirm is not None:
            alloc, hyp = confirmed(alloc, hyp)
        chosen = (alloc, lam, hyp, True)
    phases["search"] = round(time.perf_counter() - t, 3)

    # --- 5. the compressed model, its metric and its file ---------------------------------------
    t = time.perf_counter()
    alloc, lam, hyp, met = chosen
    recipe = recipe_of(alloc)
    if all(r["method"] == "none" for r in recipe):
        recipe = recipe[:1]
    final = compress_model(model, recipe, finetune=retrain, progress=progress)
    metric = None
    if mode != "data-free":
        metric = measure(final)
        met = degradation(metric, baseline) <= allowed
        if confirm is not None:
            conf["metric"] = measure_confirm(final)
            met = met and degradation(conf["metric"], conf["baseline"]) <= conf["allowed"]
    fd, path = tempfile.mkstemp(suffix=".dnnz")
    os.close(fd)
    try:
        save_model(final, path)
        file_bytes = os.path.getsize(path)
    finally:
        os.unlink(path)
    f32 = 4 * (sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()
                                                                 if b.is_floating_point()))
    stats = {s["layer"]: s for s in json.loads(final.dnnz_metadata["pydnnz.layers"])}
    rows = []
    for n, i in sorted(alloc.items()):
        c = table[n][i]
        st = stats.get(n, {})
        rows.append({"layer": n, "type": _TYPES[type(modules[n])], "choice": c.describe(), "method": c.method,
                     "k": c.k, "options": c.options, "encoding": st.get("encoding", "dense"),
                     "nbytes": st.get("nbytes", c.nbytes), "float32_bytes": 4 * int(originals[n].size),
                     "sq_error": c.distortion, "sensitivity": sens.get(n),
                     "predicted": sens.get(n, 0.0) * c.distortion})
    phases["final"] = round(time.perf_counter() - t, 3)
    report = AutoReport(recipe=recipe, layers=rows, mode=mode, baseline=baseline, metric=metric, limit=limit,
                        higher_is_better=hib, met=bool(met), file_bytes=int(file_bytes), float32_bytes=int(f32),
                        psi=file_bytes / f32 if f32 else 0.0, weight_bytes=int(sum(r["nbytes"] for r in rows)),
                        lam=float(lam), hypothesis=hyp, seconds=time.perf_counter() - t0, evaluations=evals[0],
                        seed=seed, history=history, phases=phases, confirm=conf)
    final.dnnz_metadata["pydnnz.auto"] = json.dumps({"mode": mode, "baseline": baseline, "metric": metric,
                                                     "limit": limit, "lam": report.lam, "hypothesis": hyp,
                                                     "seed": seed})
    return final, report


def _auto_retrained(model, work, spec, measure, degradation, baseline, allowed, limit, hib, *, evaluate, seed,
                    time_limit, t0, calibration, include_embeddings, quiet, phases, grid):
    """auto_compress's retraining mode (pydnnz.torch._auto_retrain) and its report."""
    from . import _auto_retrain

    def rest_search(dense, budget, exclude, time_left):
        return auto_compress(dense, evaluate, budget, higher_is_better=hib, calibration=calibration, retrain=None,
                             time_limit=time_left, seed=seed, include_embeddings=include_embeddings,
                             progress=None if quiet is None else not quiet, _exclude=tuple(sorted(exclude)), **grid)

    final, base, recipe, info = _auto_retrain.run(
        model, work, measure, degradation, baseline, allowed, limit, spec, seed=seed, time_limit=time_limit, t0=t0,
        calibration=calibration, include_embeddings=include_embeddings, quiet=quiet, rest_search=rest_search)
    t = time.perf_counter()
    metric = measure(final)
    file_bytes = _auto_retrain.file_size(final)
    f32 = 4 * (sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()
                                                                 if b.is_floating_point()))
    stats = json.loads(final.dnnz_metadata["pydnnz.layers"])
    rows = [{"layer": s["layer"], "type": s["type"], "choice": s["method"], "method": s["method"], "k": s["k"],
             "options": {}, "encoding": s["encoding"], "nbytes": s["nbytes"], "float32_bytes": s["float32_bytes"],
             "sq_error": None, "sensitivity": None, "predicted": None} for s in stats]
    phases.update(info["phases"])
    phases["final"] = round(time.perf_counter() - t, 3)
    chosen = info["chosen"]
    hyp = ("retrain: nothing within the threshold" if chosen["prune"] is None else
           f"retrain: gradual pruning {chosen['prune']:g}% + UQ k={sorted(set(chosen['ks'].values()))}")
    if info["rest"]:
        hyp += f"; other layers: {info['rest']}"
    report = AutoReport(recipe=recipe, layers=rows, mode="metric+retrain", baseline=baseline, metric=metric,
                        limit=limit, higher_is_better=hib, met=degradation(metric) <= allowed,
                        file_bytes=int(file_bytes), float32_bytes=int(f32), psi=file_bytes / f32 if f32 else 0.0,
                        weight_bytes=int(sum(r["nbytes"] for r in rows)), lam=0.0, hypothesis=hyp,
                        seconds=time.perf_counter() - t0, evaluations=info["evaluations"] + 2, seed=seed,
                        history=info["history"], phases=phases,
                        retrain={"settings": spec.describe(), "chosen": chosen, "threshold": info["threshold"],
                                 "other_layers": info["others"]})
    report._base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    final.dnnz_metadata["pydnnz.auto"] = json.dumps({"mode": report.mode, "baseline": baseline, "metric": metric,
                                                     "limit": limit, "hypothesis": hyp, "seed": seed,
                                                     "retrain": report.retrain["chosen"]})
    return final, report
