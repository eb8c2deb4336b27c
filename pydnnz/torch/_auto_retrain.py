"""auto_compress with retraining: gradual pruning, then Pr-UQ with shared-value fine-tuning.

What `auto_compress(..., retrain={...})` runs (the study's GPr protocol, searched instead of hand
picked; bench/results/study.md: DeepDTA DAVIS dense layers at 95 % + UQ k = 16, dense-layer ψ
0.0126 at no loss):

1. which layers: one probe step of the user's loss shows the Linear/Conv1d/Conv2d layers that
   training reaches; all of them are pruned but the last one in forward order (the output layer:
   a pruned DeepDTA output layer alone raised the MSE thirtyfold), which is quantized unpruned.
   Layers the loss does not reach (and embeddings) are left to step 4.
2. a pruning staircase: `prune_gradually` (one global magnitude threshold, cubic schedule) takes
   the model from level to level (default 50, 75, 82, 87.5, 91, 94, 95.5, 97, 98 %), each stage
   training ``steps · log2(density before / density after)`` steps, so that reaching 95 % costs
   about as many steps as the study's 4000 (DAVIS).
3. at every level, the pruned model is quantized (UQ per layer on the surviving weights, k from
   `ks`, smallest first) and its shared values fine-tuned (compress_model's `finetune`: the zeros
   stay zeros, each shared value moves by the summed gradient of its positions); the first k whose
   measured metric is within the threshold is the level's candidate, its real encoded bytes
   (encoding "smallest") decide between levels. The staircase stops after two levels without a
   candidate, or when the pruned float model alone is over the threshold. Then each layer of the
   best candidate tries the next smaller k (largest layer first), kept when the metric holds.
   The threshold is half the budget when step 4 has layers left, else the whole budget.
4. the rest: the no-retraining search of auto_compress (rdq / uq per layer, coordinate descent on
   the metric, bias correction with `calibration`) on the layers steps 2-3 did not compress, with
   what is left of the budget after step 3's measured metric.

The result replays bit for bit from the recipe applied to the RETRAINED weights
(``compress_model(report.base_model(model), report.recipe)``): training is not in the recipe. The
retrained layers' rules are ``{"method": "prune", "prune": 0, "encoding": ...}``: their weights are
already pruned and quantized, and are encoded as they are (exact). Deterministic for a seed: every
stage seeds torch (dropout, DataLoader shuffling) from it; a `time_limit` that cuts the search
depends on the machine's speed.
"""
from __future__ import annotations

import fnmatch
import json
import math
import numbers
import os
import tempfile
import time
from dataclasses import dataclass

import torch
from torch import nn

from .._progress import progress_bar
from ..errors import InvalidArgumentError
from ._gradual import _patterns as _gradual_patterns

DEFAULT_LEVELS = (50, 75, 82, 87.5, 91, 94, 95.5, 97, 98)
DEFAULT_KS = (8, 16, 32)
_KEYS = ("loss", "data", "steps", "lr", "levels", "ks", "finetune_steps", "finetune_lr", "layers", "exclude")
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class RetrainSpec:
    """The parsed ``retrain`` dict (see auto_compress)."""

    loss: object
    data: object
    steps: int = 1000
    lr: float = 1e-3
    levels: tuple = DEFAULT_LEVELS
    ks: tuple = DEFAULT_KS
    finetune_steps: int = 500
    finetune_lr: float = 1e-4
    layers: tuple = ()
    exclude: tuple | None = None

    def describe(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, "levels": list(self.levels), "ks": list(self.ks),
                "finetune_steps": self.finetune_steps, "finetune_lr": self.finetune_lr,
                "layers": list(self.layers), "exclude": None if self.exclude is None else list(self.exclude)}


def _patterns(v, what):
    """retrain[what] as a tuple of glob patterns (None when absent): prune_gradually's check."""
    return None if v is None else _gradual_patterns(v, f"retrain[{what!r}]")


def parse_retrain(spec) -> RetrainSpec:
    """Validate the ``retrain`` dict of auto_compress."""
    if not isinstance(spec, dict):
        raise InvalidArgumentError("retrain must be a dict {'loss': ..., 'data': ..., ...} or a callable")
    unknown = set(spec) - set(_KEYS)
    if unknown:
        raise InvalidArgumentError(f"retrain: unknown key(s) {sorted(unknown)} (known: {list(_KEYS)})")
    for key in ("loss", "data"):
        if key not in spec:
            raise InvalidArgumentError(f"retrain: {key!r} is required")
    if not callable(spec["loss"]):
        raise InvalidArgumentError("retrain['loss'] must be a callable loss(model, batch) -> scalar tensor")
    data = spec["data"]
    if not callable(data) and not hasattr(data, "__iter__"):
        raise InvalidArgumentError("retrain['data'] must be an iterable of batches (e.g. a DataLoader) or "
                                   "a callable data(step) -> batch")

    def pos_int(key, default, zero=False):
        v = spec.get(key, default)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < (0 if zero else 1):
            raise InvalidArgumentError(f"retrain[{key!r}] must be an int >= {0 if zero else 1}, got {v!r}")
        return int(v)

    def pos_float(key, default):
        v = spec.get(key, default)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0):
            raise InvalidArgumentError(f"retrain[{key!r}] must be a number > 0, got {v!r}")
        return float(v)

    steps = pos_int("steps", 1000)
    lr = pos_float("lr", 1e-3)
    levels = spec.get("levels", DEFAULT_LEVELS)
    try:
        levels = tuple(float(p) for p in levels)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"retrain['levels'] must be a list of percentages, got {levels!r}") from None
    if not levels or any(not (0 < p < 100) for p in levels) or list(levels) != sorted(set(levels)):
        raise InvalidArgumentError(f"retrain['levels'] must be increasing percentages in (0, 100), got {levels!r}")
    ks = spec.get("ks", DEFAULT_KS)
    try:
        ks = tuple(sorted({int(k) for k in ks}))
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"retrain['ks'] must be a list of ints >= 2, got {ks!r}") from None
    if not ks or ks[0] < 2:
        raise InvalidArgumentError(f"retrain['ks'] must be a list of ints >= 2, got {ks!r}")
    return RetrainSpec(loss=spec["loss"], data=data, steps=steps, lr=lr, levels=levels, ks=ks,
                       finetune_steps=pos_int("finetune_steps", max(1, steps // 2), zero=True),
                       finetune_lr=pos_float("finetune_lr", lr / 10),
                       layers=_patterns(spec.get("layers"), "layers") or (),
                       exclude=_patterns(spec.get("exclude"), "exclude"))


def _batches(data, seed):
    """An endless stream of batches: data(step) or the iterable re-iterated (torch seeded first, so
    a shuffling DataLoader gives the same order for the same seed)."""
    torch.manual_seed(seed)
    if callable(data) and not hasattr(data, "__iter__"):
        step = 0
        while True:
            yield data(step)
            step += 1
    while True:
        empty = True
        for b in data:
            empty = False
            yield b
        if empty:
            raise InvalidArgumentError("retrain['data'] yielded no batch")


def _glob_literal(name: str) -> str:
    return "".join(f"[{c}]" if c in "[]*?" else c for c in name)


def _probe(model, spec):
    """(names the loss reaches in forward order, all prunable names): one loss + backward on a batch."""
    order = []
    mods = {n: m for n, m in model.named_modules() if type(m) in _PRUNABLE}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: order.append(n) if n not in order else None)
             for n, m in mods.items()]
    was = model.training
    try:
        model.train()
        batch = next(_batches(spec.data, 0))
        loss = spec.loss(model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise InvalidArgumentError("retrain['loss'] must return a scalar tensor")
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    reached = [n for n in order if mods[n].weight.grad is not None and bool(torch.any(mods[n].weight.grad != 0))]
    for p in model.parameters():
        p.grad = None
    return reached, list(mods)


def _plan(model, spec):
    """(pruned layer names, quantized-only layer names) from the probe and the spec's patterns."""
    reached, prunable = _probe(model, spec)
    if spec.layers:
        chosen = [n for n in prunable if any(fnmatch.fnmatchcase(n, p) for p in spec.layers)]
        if not chosen:
            raise InvalidArgumentError(f"retrain['layers'] {list(spec.layers)} matches no Linear/Conv layer "
                                       f"(they are: {', '.join(prunable[:30])})")
        trained = [n for n in reached if n in chosen] + [n for n in chosen if n not in reached]
    else:
        trained = reached
    if not trained:
        raise InvalidArgumentError("retrain: the loss reaches no Linear/Conv1d/Conv2d weight (no gradient)")
    if spec.exclude is None:
        keep = trained[-1:]  # the output layer: quantized, never pruned
    else:
        keep = [n for n in trained if any(fnmatch.fnmatchcase(n, p) for p in spec.exclude)]
    pruned = [n for n in trained if n not in keep]
    return pruned, keep


def _density_halvings(p0, p1):
    return math.log2((100.0 - p0) / (100.0 - p1))


def run(model, work, evaluate_metric, degradation, baseline, allowed, limit, spec: RetrainSpec, *, seed,
        time_limit, t0, calibration, include_embeddings, quiet, rest_search):
    """The retraining mode of auto_compress (see the module doc). `work` is a float copy of
    `model` (trained in place); `rest_search(dense_model, budget, exclude, time_left)` runs the
    no-retraining search on the layers not in `exclude` and returns (compressed, report)."""
    from ._compress import _copy_model, compress_model, decompress_model
    from ._gradual import prune_gradually

    phases, history = {}, []
    evals = [0]

    def over_time():
        return time_limit is not None and time.perf_counter() - t0 > time_limit

    def measure(m):
        evals[0] += 1
        return evaluate_metric(m)

    t = time.perf_counter()
    pruned, keep = _plan(work, spec)
    trained = pruned + keep
    others = [n for n, m in work.named_modules()
              if n not in trained and (type(m) in _PRUNABLE or (isinstance(m, nn.Embedding) and include_embeddings))]
    threshold = allowed / 2 if others else allowed
    phases["plan"] = round(time.perf_counter() - t, 3)

    def quantized(base, ks, stage_seed):
        """compress_model of the trained layers at k per layer, shared values fine-tuned."""
        rules = []
        mods = dict(base.named_modules())
        for n in trained:
            w = mods[n].weight
            zeros = int(torch.count_nonzero(w == 0)) if n in pruned else 0
            rule = {"match": _glob_literal(n), "k": int(ks[n]), "encoding": "smallest", "seed": seed}
            if zeros:
                rule.update(method="pr_uq", prune=100.0 * zeros / w.numel())
            else:
                rule["method"] = "uq"
            rules.append(rule)

        def tune(m):
            if spec.finetune_steps == 0:
                return
            torch.manual_seed(stage_seed)
            params = [p for p in m.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=spec.finetune_lr)
            n_steps = spec.finetune_steps
            batches = _batches(spec.data, stage_seed)
            m.train()
            for i in range(n_steps):
                for g in opt.param_groups:
                    g["lr"] = spec.finetune_lr * (1.0 - i / n_steps)
                opt.zero_grad(set_to_none=True)
                loss = spec.loss(m, next(batches))
                loss.backward()
                opt.step()
            m.eval()

        small = compress_model(base, rules, finetune=tune, finetune_options={"freeze_zero": True}, progress=False)
        stats = {s["layer"]: s for s in json.loads(small.dnnz_metadata["pydnnz.layers"])}
        return small, stats

    def try_candidate(base, p, ks, stage_seed):
        small, stats = quantized(base, ks, stage_seed)
        v = measure(small)
        nb = sum(stats[n]["nbytes"] for n in trained)
        d = degradation(v)
        ok = d <= threshold
        history.append({"prune": p, "ks": dict(ks), "bytes": int(nb), "metric": v, "threshold": threshold,
                        "ok": bool(ok)})
        return ok, small, stats, nb, v

    # --- 2/3. the staircase ----------------------------------------------------------------------
    t = time.perf_counter()
    best = None          # (bytes, p, ks, small, stats, metric, float state at p)
    states = {}
    prev, misses = 0.0, 0
    levels = spec.levels if pruned else (0.0,)   # nothing to prune: quantize and fine-tune only
    bar = progress_bar(levels, desc="retrain: prune + quantize", disable=quiet)
    for li, p in enumerate(bar):
        if over_time():
            break
        steps = max(1, int(round(spec.steps * _density_halvings(prev, p)))) if pruned else 0
        stage_seed = seed * 1000 + li
        torch.manual_seed(stage_seed)
        params = [q for q in work.parameters() if q.requires_grad]
        opt = torch.optim.Adam(params, lr=spec.lr)
        ramp = max(1, int(0.7 * steps))
        batches = _batches(spec.data, stage_seed)

        def train_step(m, i, opt=opt, ramp=ramp, steps=steps, batches=batches):
            lr = spec.lr * (1 - (i - ramp) / max(1, steps - ramp)) if i > ramp else spec.lr
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss = spec.loss(m, next(batches))
            loss.backward()
            opt.step()
            return loss

        if pruned:
            work.train()
            prune_gradually(work, p, steps, train_step, layers=[_glob_literal(n) for n in pruned], scope="global",
                            progress=not quiet if quiet is not None else None)
            work.eval()
        prev = p
        float_metric = measure(work)
        history.append({"prune": p, "ks": None, "bytes": None, "metric": float_metric, "threshold": threshold,
                        "ok": degradation(float_metric) <= threshold, "steps": steps})
        states[p] = {k: v.detach().clone() for k, v in work.state_dict().items()}
        found = False
        for k in spec.ks:
            if over_time():
                break
            ok, small, stats, nb, v = try_candidate(work, p, {n: k for n in trained}, stage_seed + 500)
            if ok:
                found = True
                if best is None or nb < best[0]:
                    best = (nb, p, {n: k for n in trained}, small, stats, v)
                break
        bar.set_postfix(prune=p, best=None if best is None else best[0], refresh=False)
        misses = 0 if found else misses + 1
        if misses >= 2 or degradation(float_metric) > threshold:
            break
    bar.close()
    phases["staircase"] = round(time.perf_counter() - t, 3)

    # --- per-layer k: the largest layers first, one step down the k list -------------------------
    t = time.perf_counter()
    if best is not None:
        nb, p, ks, small, stats, v = best
        base = _copy_model(work)
        base.load_state_dict(states[p])
        for n in sorted(trained, key=lambda n: -stats[n]["nbytes"]):
            if over_time():
                break
            i = spec.ks.index(ks[n])
            if i == 0:
                continue
            trial = {**ks, n: spec.ks[i - 1]}
            ok, s2, st2, nb2, v2 = try_candidate(base, p, trial, seed * 1000 + 900 + len(history))
            if ok and nb2 < nb:
                nb, ks, small, stats, v = nb2, trial, s2, st2, v2
        best = (nb, p, ks, small, stats, v)
    phases["per_layer_k"] = round(time.perf_counter() - t, 3)

    if best is None:   # nothing within the threshold: the float model, every layer to step 4
        retrained_dense = _copy_model(model).eval()
        trained_rules, chosen = [], {"prune": None, "ks": None}
        rest_exclude, retrain_metric = set(), baseline
    else:
        nb, p, ks, small, stats, v = best
        retrained_dense = decompress_model(small).eval()
        trained_rules = [{"match": _glob_literal(n), "method": "prune", "prune": 0,
                          "encoding": stats[n]["encoding"]} for n in trained]
        chosen = {"prune": p, "ks": ks, "pruned": pruned, "quantized_only": keep, "bytes": int(nb), "metric": v}
        rest_exclude, retrain_metric = set(trained), v

    # --- 4. the other layers, with what is left of the budget ------------------------------------
    t = time.perf_counter()
    rest_rules, rest_report = [], None
    left = allowed - degradation(retrain_metric)
    time_left = None if time_limit is None else time_limit - (time.perf_counter() - t0)
    if others or best is None:
        if left >= 0 and (time_left is None or time_left > 1.0):
            _, rest_report = rest_search(retrained_dense, left, rest_exclude, time_left)
            rest_rules = [r for r in rest_report.recipe if r.get("method") != "none"]
            evals[0] += rest_report.evaluations
    phases["rest"] = round(time.perf_counter() - t, 3)

    recipe = trained_rules + rest_rules
    if not recipe:
        recipe = [{"method": "none"}]
    final = compress_model(retrained_dense, recipe, progress=not quiet if quiet is not None else None)
    return final, retrained_dense, recipe, {"phases": phases, "history": history, "chosen": chosen,
                                           "threshold": threshold, "others": others,
                                           "rest": None if rest_report is None else rest_report.hypothesis,
                                           "evaluations": evals[0]}


def file_size(model) -> int:
    from ._io import save_model

    fd, path = tempfile.mkstemp(suffix=".dnnz")
    os.close(fd)
    try:
        save_model(model, path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)
