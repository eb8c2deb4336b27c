"""The compression methods of the study, applied through pydnnz.compress, and the retraining loop.

`compress_type(method, weights, p, k, q, seed)` compresses every kernel of ONE layer type
(dense or conv) with one method, with a unified codebook (one per layer type: the 2023 paper's
"u" variants), and returns a `LayerState` per kernel: what the encodings consume (codebook +
indices, or pruned floats, or low-rank factors) in a form the retraining loop can update.

`finetune(task, state, layers, steps, seed)` is the papers' retraining (paper-methods.md §2, §5),
for a short fixed budget:
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
from torch.func import functional_call

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
    codebook = np.asarray(codebook, dtype=np.float32)
    dtype = np.uint8 if len(codebook) <= 256 else np.uint16 if len(codebook) <= 65536 else np.uint32
    return pc.QuantizedTensor(codebook, np.asarray(indices).astype(dtype))


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


class _SharedGather(torch.autograd.Function):
    """W = book[idx] whose backward is the per-value gradient SUM (scatter-add).

    Same result as autograd through `book[idx]`, whose backward (index_put with accumulate)
    costs ~40 ms per million weights on CPU and dominated every retraining step."""

    @staticmethod
    def forward(ctx, book, idx):
        ctx.save_for_backward(idx)
        ctx.k = book.shape[0]
        return torch.take(book, idx)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        g = torch.zeros(ctx.k, dtype=grad.dtype).scatter_add_(0, idx.reshape(-1), grad.reshape(-1))
        return g, None


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


def finetune(task, state: dict, layers: dict, steps: int, seed: int = 0, key=lambda n: f"m.{n}", lr=None):
    """Retrain for `steps` minibatches; returns (new state dict, updated layers). See module doc.
    `lr` overrides the task's learning rate."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = task.module
    module.train()
    named = dict(module.named_parameters())
    for p_ in named.values():
        p_.requires_grad_(False)
    free = [named[n] for n in task.trainable if n in named and n[2:] not in layers]
    for p_ in free:
        p_.requires_grad_(True)

    groups = {}   # group → (codebook parameter, frozen-zero mask)
    pruned = {}   # name → (values parameter, mask)
    idx_t = {}
    for name, st in layers.items():
        if st.kind == "quantized":
            if (st.book or st.group) not in groups:
                book = torch.tensor(st.codebook, dtype=torch.float32, requires_grad=True)
                groups[st.book or st.group] = (book, torch.from_numpy(st.codebook == 0))
            idx_t[name] = torch.from_numpy(st.indices.astype(np.int64))
        elif st.kind == "pruned":
            vals = torch.tensor(st.values, dtype=torch.float32, requires_grad=True)
            pruned[name] = (vals, torch.from_numpy(st.values != 0))
    trainable = free + [b for b, _ in groups.values()] + [v for v, _ in pruned.values()]
    opt = _optimizer(task, trainable, lr)
    # Linear decay to 0: a short budget needs a large first step and a quiet end.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(steps, 1))

    def weights_now():
        out = {}
        for name, st in layers.items():
            if st.kind == "quantized":
                book, zero = groups[st.book or st.group]
                out[key(name)] = _SharedGather.apply(torch.where(zero, 0.0, book), idx_t[name])
            elif st.kind == "pruned":
                vals, mask = pruned[name]
                out[key(name)] = vals * mask
            else:
                out[key(name)] = torch.from_numpy(st.dense())
        return out

    losses = []
    for step in range(steps):
        inputs, target = task.sample(step, rng)
        out = functional_call(module, weights_now(), inputs)
        loss = task.loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    module.eval()

    new_state = dict(state)
    for n, p_ in named.items():
        if p_.requires_grad:
            new_state[n[2:]] = p_.detach().numpy().astype(np.float32, copy=True)
    by_group = {}
    for name, st in layers.items():
        if st.kind == "quantized":
            by_group.setdefault(st.book or st.group, []).append(st)
        elif st.kind == "pruned":
            vals, mask = pruned[name]
            st.values = (vals * mask).detach().numpy().astype(np.float32).reshape(st.shape)
    for g, sts in by_group.items():
        book, zero = groups[g]
        _canonical(torch.where(zero, 0.0, book).detach().numpy(), sts)
    return new_state, layers, losses
