"""Gradual magnitude pruning during the user's training loop (the study's GPr protocol).

One-shot pruning at high p (the papers' protocol) collapsed DeepDTA under short retraining
budgets; pruning gradually while training did not (bench/results/study.md: DAVIS dense layers at
95 % with one global threshold, then Pr-ECSQ k = 16, lose no MSE at ψ 0.014). `prune_gradually`
runs that schedule around any training step; `compress_model` with a ``pr_*`` rule at the same
`prune` (and ``options={"prune_scope": "global"}`` for a global threshold) then quantizes the
survivors and keeps the zeros.
"""
from __future__ import annotations

import fnmatch
import math
import numbers

import torch
from torch import nn

from .._progress import progress_bar
from ..errors import InvalidArgumentError

_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _patterns(value, what):
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be a glob pattern or a list of them, not {type(value).__name__}") from None
    if not all(isinstance(p, str) for p in out):
        raise InvalidArgumentError(f"{what} must hold glob patterns (str)")
    return out


def _select(model, layers, exclude):
    include, skip = _patterns(layers, "layers"), _patterns(exclude, "exclude")
    chosen, seen = {}, []
    for name, m in model.named_modules():
        if type(m) not in _PRUNABLE:
            continue
        seen.append(name)
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in skip):
            continue
        chosen[name] = m.weight
    if not chosen:
        raise InvalidArgumentError(
            f"prune_gradually: no layer to prune (layers={list(include) or 'all'}, exclude={list(skip)}); "
            f"the model's Linear/Conv1d/Conv2d layers are: {', '.join(seen[:30]) or '(none)'}")
    return chosen


def _check_args(p, steps, train_step, scope, ramp, updates):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or not 0 <= p < 100:
        raise InvalidArgumentError(f"prune_gradually: p must be a percentage in [0, 100), got {p!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise InvalidArgumentError(f"prune_gradually: steps must be an int >= 0, got {steps!r}")
    if not callable(train_step):
        raise InvalidArgumentError("prune_gradually: train_step must be callable as train_step(model, step)")
    if scope not in ("global", "layer"):
        raise InvalidArgumentError(f"prune_gradually: scope must be 'global' or 'layer', got {scope!r}")
    if isinstance(ramp, bool) or not isinstance(ramp, numbers.Real) or not 0 < ramp <= 1:
        raise InvalidArgumentError(f"prune_gradually: ramp must be in (0, 1], got {ramp!r}")
    if isinstance(updates, bool) or not isinstance(updates, numbers.Integral) or updates < 1:
        raise InvalidArgumentError(f"prune_gradually: updates must be an int >= 1, got {updates!r}")


def prune_gradually(model: nn.Module, p: float, steps: int, train_step, *, layers=None, exclude=None,
                    scope: str = "global", ramp: float = 0.7, updates: int = 30,
                    progress: bool | None = None) -> dict:
    """Prune `model`'s Linear/Conv1d/Conv2d weights to `p` % zeros gradually while it trains.

    The fraction of pruned weights follows the cubic schedule of Zhu & Gupta (2017),
    ``p · (1 − (1 − t / T)³)``, reaching `p` after ``T = ramp · steps`` steps; the masks are
    recomputed `updates` times on the way (the smallest |w| go), and the remaining steps train
    the survivors. Between updates the pruned weights get no gradient (a hook masks it before
    your optimizer sees it) and are reset to exactly +0.0 after every step, so they stay pruned
    whatever the optimizer's momentum does. The model is modified in place and stays a plain
    float model: compress it afterwards with `compress_model` and a ``pr_*`` rule at the same
    `prune` (with ``options={"prune_scope": "global"}`` when `scope` is "global"), which keeps
    these zeros and quantizes the rest.

    Args:
        model: the float model; its selected weights are pruned in place.
        p: the final percentage of zeros in [0, 100).
        steps: how many times to call `train_step` (0: prune to `p` at once, no training).
        train_step: ``train_step(model, step)`` runs ONE optimization step of your training loop
            (forward, backward, ``optimizer.step()``) and may return the loss, shown in the
            progress bar.
        layers: glob pattern(s) on module names to prune (default: every Linear/Conv1d/Conv2d).
        exclude: glob pattern(s) to leave unpruned, e.g. the output layer (the study never prunes
            it: a pruned 512-weight DeepDTA output layer alone raised the MSE thirtyfold).
        scope: "global" (default): one magnitude threshold over all selected weights, so layers
            with more redundancy give up more; "layer": `p` % of each layer.
        ramp: the fraction of `steps` over which the sparsity grows (default 0.7).
        updates: how many times the masks are recomputed during the ramp (default 30).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        {module name: bool tensor, True where the weight is kept}. With scope "global",
        round(p % of all selected weights) are zero (more only if |w| ties at the threshold);
        with "layer", that many of each layer.

    Raises:
        InvalidArgumentError for a bad argument or when no layer is selected.

    Example:
        >>> import torch, pydnnz.torch as pt
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        >>> opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        >>> x, y = torch.randn(256, 8), torch.randn(256, 1)
        >>> def step(model, i):
        ...     opt.zero_grad(); loss = torch.nn.functional.mse_loss(model(x), y); loss.backward(); opt.step()
        ...     return loss
        >>> masks = pt.prune_gradually(net, 90, 100, step, exclude="2")
        >>> round(float((net[0].weight == 0).float().mean()), 2), bool((net[2].weight != 0).all())
        (0.9, True)
    """
    _check_args(p, steps, train_step, scope, ramp, updates)
    weights = _select(model, layers, exclude)
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())

    def prune_to(frac):
        with torch.no_grad():
            if scope == "global":
                n_cut = int(round(frac * total))
                if n_cut:
                    allw = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights.values()])
                    thr = allw.kthvalue(n_cut).values
                    for n, w in weights.items():
                        masks[n] = w.abs() > thr.to(w.device, w.dtype)
            else:
                for n, w in weights.items():
                    n_cut = int(round(frac * w.numel()))
                    if n_cut:
                        masks[n] = w.abs() > w.detach().abs().flatten().kthvalue(n_cut).values
            for n, w in weights.items():
                w.masked_fill_(~masks[n], 0.0)   # +0.0: the lossless encodings count -0.0 as a value

    hooks = [w.register_hook(lambda g, n=n: g.masked_fill(~masks[n], 0.0)) for n, w in weights.items()]
    ramp_steps = max(1, int(ramp * steps))
    every = max(1, ramp_steps // updates)
    target = p / 100.0
    try:
        bar = progress_bar(range(steps), disable=None if progress is None else not progress,
                           desc=f"pruning to {p:g}%")
        for step in bar:
            if step <= ramp_steps and step % every == 0:
                prune_to(target * (1 - (1 - min(step + every, ramp_steps) / ramp_steps) ** 3))
            loss = train_step(model, step)
            with torch.no_grad():
                for n, w in weights.items():
                    w.masked_fill_(~masks[n], 0.0)
            if loss is not None and not getattr(bar, "disable", True):
                try:
                    value = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                except (TypeError, ValueError, RuntimeError):
                    pass   # a loss that is not a number is only not shown
        prune_to(target)   # exactly p at the end (a no-op when the schedule already got there)
    finally:
        for h in hooks:
            h.remove()
    return {n: m.clone() for n, m in masks.items()}
