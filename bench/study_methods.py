"""The compression methods of the study, applied through pydnnz.compress, and the retraining loop.

`compress_type(method, weights, p, k, q, seed)` compresses every kernel of ONE layer type
(dense or conv) with one method, with a unified codebook (one per layer type: the 2023 paper's
"u" variants), and returns a `LayerState` per kernel: what the encodings consume (codebook +
indices, or pruned floats, or low-rank factors) in a form the retraining loop can update.

`finetune(task, state, layers, steps, seed)` is the papers' retraining (paper-methods.md §2, §5),
for a short fixed budget, run by the library's own pydnnz.torch.finetune (attach + finetune):
- pruned weights: masked training (the pruned entries get no gradient and stay exactly 0);
- shared weights: the weights are parametrised as W = c[I] with c a trainable codebook per
  layer type, so the gradient of each shared value is the sum of the gradients at its positions
  over every layer that shares it, and the updates accumulate across steps (the [ICPR]
  semantics; the [NC23] code's non-accumulating update is a bug, §11.1). A zero centroid is
  held at exactly 0 so pruned entries stay pruned.
- everything else the family marks trainable (biases, uncompressed layers) trains normally.
SLR is applied post-training with no retraining, as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

import pydnnz.compress as pc

# Method name → (pruning?, quantizer name or None, low rank?)
METHODS = {
    "Pr": (True, None, False),
    "CWS": (False, "cws", False),
    "PWS": (False, "pws", False),
    "UQ": (False, "uq", False),
    "ECSQ": (False, "ecsq", False),
    "Pr-CWS": (True, "cws", False),
    "Pr-PWS": (True, "pws", False),
    "Pr-UQ": (True, "uq", False),
    "Pr-ECSQ": (True, "ecsq", False),
    "SLR": (False, None, True),
}


@dataclass
class LayerState:
    """One compressed kernel. kind: "pruned" (values with exact zeros), "quantized" (codebook of
    its layer type's group + indices), or "lowrank" (the LowRankTensor)."""

    name: str
    shape: tuple
    kind: str
    values: np.ndarray | None = None
    codebook: np.ndarray | None = None
    indices: np.ndarray | None = None
    lowrank: object | None = None
    group: str = ""       # layer type ("dense"/"conv"): what ψ is counted over
    book: str = ""        # codebook-sharing key in retraining (default: the group)
    info: dict = field(default_factory=dict)

    def dense(self) -> np.ndarray:
        if self.kind == "pruned":
            return self.values
        if self.kind == "quantized":
            return self.codebook[self.indices].astype(np.float32)
        return np.asarray(self.lowrank.to_dense(), dtype=np.float32).reshape(self.shape)

    @property
    def lowrank_factors(self):
        """(u·s, vt): x @ W.T = (x @ vt.T) @ (u·s).T, each factor encoded on its own."""
        lr = self.lowrank
        return (lr.u * lr.s).astype(np.float32), np.ascontiguousarray(lr.vt, dtype=np.float32)

    def to_encodable(self):
        """The object handed to pydnnz.encode: a QuantizedTensor, a float array, or factors."""
        if self.kind == "quantized":
            used = np.unique(self.indices)
            # A per-layer codebook of the values it uses (the file stores one per tensor).
            remap = np.zeros(len(self.codebook), dtype=np.int64)
            remap[used] = np.arange(len(used))
            return make_quantized(self.codebook[used], remap[self.indices])
        if self.kind == "pruned":
            return self.values
        return None


def make_quantized(codebook, indices):
    """A pydnnz.compress.QuantizedTensor from a sorted unique codebook and indices."""
    return pc.QuantizedTensor(np.asarray(codebook, dtype=np.float32), np.asarray(indices))  # narrowest index dtype


def _quantized_states(names, weights, qts, group):
    out = {}
    # The unified codebook: the union of the per-layer codebooks (identical in the "u" methods).
    book = np.unique(np.concatenate([np.asarray(qt.codebook, dtype=np.float32) for qt in qts]))
    for name, qt in zip(names, qts):
        idx = np.searchsorted(book, np.asarray(qt.codebook, dtype=np.float32))[np.asarray(qt.indices)]
        out[name] = LayerState(name, weights[name].shape, "quantized", codebook=book,
                               indices=idx.astype(np.int64), group=group)
    return out


def compress_type(method: str, weights: dict, p=None, k=None, q=None, seed: int = 0, group: str = "",
                  prune_scope: str = "layer") -> dict:
    """Compress all kernels of one layer type (name → float32 array) with `method`, through
    `pydnnz.compress.compress_weights` (unified codebook: one for all the given kernels)."""
    prune, quant, lowrank = METHODS[method]
    names = list(weights)
    types = {n: group or ("conv" if weights[n].ndim > 2 else "dense") for n in names}
    common = dict(unified=True, layer_types=types, types=tuple(set(types.values())), seed=seed,
                  prune_scope=prune_scope)
    if lowrank:
        result = pc.compress_weights(weights, "slr", rank=int(q), **common)
        return {n: LayerState(n, weights[n].shape, "lowrank", lowrank=result[n], group=group) for n in names}
    if quant is None:
        result = pc.compress_weights(weights, "prune", prune=p, **common)
        return {n: LayerState(n, weights[n].shape, "pruned", values=np.asarray(result[n], np.float32),
                              group=group) for n in names}
    result = pc.compress_weights(weights, quant, k=int(k), prune=p if prune else None, **common)
    return _quantized_states(names, weights, [result[n] for n in names], group)


# ----------------------------------------------------------------------------------------------
# retraining


def _canonical(book: np.ndarray, layers: list):
    """Sort and merge the codebook after training (the encodings want sorted unique values)."""
    uniq, inv = np.unique(book.astype(np.float32), return_inverse=True)
    for st in layers:
        st.codebook = uniq
        st.indices = inv.reshape(-1)[st.indices]


def _optimizer(task, params, lr=None):
    lr = task.lr if lr is None else lr
    if task.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    return torch.optim.Adam(params, lr=lr)


def gradual_prune(task, state: dict, names, p: float, steps: int, scope: str = "global", seed: int = 0,
                  key=lambda n: f"m.{n}") -> dict:
    """The study's "GPr" pruning stage: `pydnnz.torch.prune_gradually` around the family's
    retraining step.

    The kernels `names` are pruned to `p` % along the cubic schedule (p reached at 70 % of
    `steps`, masks recomputed 30 times) while everything in `task.trainable` trains with the
    task's optimizer; the last 30 % retrain the survivors with a learning rate decaying linearly
    to 0. scope "global": one magnitude threshold over all of `names`; "layer": p % of each.
    Returns the new state (float32 arrays; the pruned entries are exact +0.0)."""
    from pydnnz.torch import prune_gradually

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = task.module
    module.train()
    named = dict(module.named_parameters())
    params = [named[n] for n in task.trainable if n in named]
    for p_ in named.values():
        p_.requires_grad_(False)
    for p_ in params:
        p_.requires_grad_(True)
    opt = _optimizer(task, params)
    ramp = max(1, int(0.7 * steps))

    def train_step(model, step):
        for g in opt.param_groups:
            g["lr"] = task.lr * (1 - (step - ramp) / max(1, steps - ramp)) if step > ramp else task.lr
        inputs, target = task.sample(step, rng)
        loss = task.loss(model(*inputs), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    modules = [key(n)[:-len(".weight")] for n in names]
    prune_gradually(module, p, steps, train_step, layers=modules, scope=scope, ramp=0.7, updates=30)
    module.eval()
    new_state = dict(state)
    for n, p_ in named.items():
        if p_.requires_grad:
            new_state[n[2:]] = p_.detach().numpy().astype(np.float32, copy=True)
    for p_ in params:
        p_.requires_grad_(False)
    return new_state


def _trainable_form(st: LayerState):
    """What pydnnz.torch.finetune.attach takes for one kernel: the layer type's whole codebook
    (a group: one shared trainable parameter), pruned values (masked), or the low-rank factors."""
    if st.kind == "quantized":
        return pc.QuantizedTensor(st.codebook, st.indices, params={"group": st.book or st.group})
    return st.values if st.kind == "pruned" else st.lowrank


def finetune(task, state: dict, layers: dict, steps: int, seed: int = 0, key=lambda n: f"m.{n}", lr=None):
    """Retrain for `steps` minibatches with pydnnz.torch.finetune (attach + finetune): returns
    (new state dict, updated layers, losses). See module doc. `lr` overrides the task's rate."""
    from pydnnz.torch.finetune import attach, finetune as retrain

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = task.module
    named = dict(module.named_parameters())
    for p_ in named.values():
        p_.requires_grad_(False)
    free = [n for n in task.trainable if n in named and n[2:] not in layers]
    masks = {key(n): st.values != 0 for n, st in layers.items() if st.kind == "pruned"}
    for n in free + list(masks):
        named[n].requires_grad_(True)
    # A zero shared value stays exactly 0 (pruned entries stay pruned); pruned kernels train masked.
    hooks = attach(module, {key(n): _trainable_form(st) for n, st in layers.items()},
                   masks=masks, freeze_zero=True)
    params = [named[n] for n in free] + hooks.codebooks() + [named[n] for n in masks]
    try:
        result = retrain(module, lambda m, batch: task.loss(m(*batch[0]), batch[1]),
                         (task.sample(step, rng) for step in range(steps)), hooks=hooks, steps=max(steps, 1),
                         optimizer=_optimizer(task, params, lr),
                         # linear decay to 0: a short budget needs a large first step and a quiet end
                         scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(steps, 1)),
                         progress=False)
        books = {st.book or st.group: hooks.hooks[key(n)].codebook.detach().numpy().copy()
                 for n, st in layers.items() if st.kind == "quantized"}
    finally:
        hooks.remove()
    module.eval()

    new_state = dict(state)
    for n in free:
        new_state[n[2:]] = named[n].detach().numpy().astype(np.float32, copy=True)
    by_group = {}
    for name, st in layers.items():
        if st.kind == "quantized":
            by_group.setdefault(st.book or st.group, []).append(st)
        elif st.kind == "pruned":
            st.values = result.weights[key(name)].reshape(st.shape)
    for g, sts in by_group.items():
        _canonical(books[g], sts)
    return new_state, layers, result.losses
