"""Fine-tuning of compressed weights with PyTorch: masked training and shared-value training.

Two mechanisms, attachable to any ``nn.Module`` parameter (``nn.Linear``, ``nn.Conv*d``, ...)
and usable from any training loop with any optimizer:

- :class:`MaskedWeight` (after pruning): the gradient is multiplied by the mask, and the mask is
  re-applied to the weight before every forward pass and after every optimizer step registered
  through :meth:`CompressionHooks.attach_optimizer` (so momentum, Adam moments or weight decay
  cannot revive a pruned weight even if the optimizer had state for it).
- :class:`SharedWeights` (after weight sharing): the module's weight becomes
  ``codebook[indices]`` recomputed at each forward; the codebook is the ``nn.Parameter`` the
  optimizer trains. Autograd of the gather is a scatter-add, so the gradient of each shared
  value is the SUM of the gradients at its positions (the ICPR 2020 rule
  ∂L/∂c_l = Σ_ij ∂L/∂w_ij·1(I_ij = l)), and updates accumulate across steps because the
  optimizer updates the codebook in place. The authors' 2021/2023 code (``uCWS.train_ws``)
  rebinds a local variable and never stores the updated centres, so its updates do NOT
  accumulate (each step restarts from the post-quantization codebook); that is a bug, and this
  module follows the paper. Their code also feeds the optimizer's per-weight update ΔW times a
  second learning rate into the centres; here the optimizer sees the summed gradient directly.
  With a pruning mask the exact-zero codebook entry is frozen (zero gradient, reset to 0 after
  each step), so pruned weights stay exactly zero.

:func:`attach` sets both up from the output of :func:`pydnnz.compress.compress_weights`, and
:func:`finetune` is a small training loop around them. :func:`run_finetune` is the hook behind
``pydnnz.torch.compress_model(..., finetune=fn)``. ``pydnnz.compress.finetune`` is this module
(an alias kept for existing code: the NumPy package never imports torch itself).
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from ..compress._tensors import LowRankTensor, QuantizedTensor
from ..errors import InvalidArgumentError, ShapeError

__all__ = ["MaskedWeight", "SharedWeights", "CompressionHooks", "attach", "finetune", "FinetuneResult"]


def _param(module: nn.Module, name: str) -> nn.Parameter:
    p = getattr(module, name, None)
    if not isinstance(p, nn.Parameter):
        raise InvalidArgumentError(f"{type(module).__name__} has no parameter {name!r}")
    return p


class MaskedWeight:
    """Keep pruned entries of ``module.<name>`` exactly zero during training.

    >>> import torch, numpy as np
    >>> lin = torch.nn.Linear(3, 2)
    >>> h = MaskedWeight(lin, np.array([[True, False, True], [False, True, True]]))
    >>> float(lin.weight.detach()[0, 1]), float(lin.weight.detach()[1, 0])
    (0.0, 0.0)
    """

    def __init__(self, module: nn.Module, mask, name: str = "weight", values=None):
        p = _param(module, name)
        mask = torch.as_tensor(np.asarray(mask), device=p.device)
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(p.shape):
            raise ShapeError(f"mask must be a bool array of shape {tuple(p.shape)}")
        self.module, self.name, self.mask = module, name, mask
        self._pruned = ~mask
        with torch.no_grad():
            if values is not None:
                v = torch.as_tensor(np.asarray(values, dtype=np.float32), device=p.device, dtype=p.dtype)
                if v.shape != p.shape:
                    raise ShapeError(f"values have shape {tuple(v.shape)}, expected {tuple(p.shape)}")
                p.copy_(v)
            p.masked_fill_(self._pruned, 0.0)  # +0.0 (a multiply would leave -0.0)
        self._handles = [p.register_hook(lambda g: g.masked_fill(self._pruned, 0.0)),
                         module.register_forward_pre_hook(lambda m, a: self.enforce())]

    def enforce(self):
        with torch.no_grad():
            _param(self.module, self.name).masked_fill_(self._pruned, 0.0)

    def export(self) -> np.ndarray:
        """The current weight as a float32 array with exact zeros where pruned."""
        self.enforce()
        return _param(self.module, self.name).detach().cpu().numpy().astype(np.float32) + np.float32(0.0)

    def remove(self):
        self.enforce()
        for h in self._handles:
            h.remove()
        self._handles = []


class _Codebook:
    """One trainable codebook, possibly shared by several modules (a unified codebook)."""

    def __init__(self, values: np.ndarray, device, dtype, freeze_zero: bool):
        self.values = np.asarray(values, dtype=np.float32)
        self.param = nn.Parameter(torch.as_tensor(values, dtype=dtype, device=device).clone())
        zero = np.flatnonzero(values == 0)
        self.zero = int(zero[0]) if freeze_zero and zero.size else None
        if self.zero is not None:
            z = self.zero

            def hook(g):
                g = g.clone()
                g[z] = 0
                return g

            self.param.register_hook(hook)

    def enforce(self):
        if self.zero is not None:
            with torch.no_grad():
                self.param[self.zero] = 0.0


class SharedWeights:
    """Train the shared values of a quantized ``module.<name>`` (weight sharing fine-tuning).

    The parameter is replaced by ``<name>_codebook`` (an ``nn.Parameter``, shared between
    modules when ``codebook=`` passes the same :class:`_Codebook`) and a buffer
    ``<name>_indices``; a forward pre-hook sets ``module.<name> = codebook[indices]``.
    :meth:`export` returns the updated QuantizedTensor (same indices; the codebook is re-sorted
    and indices remapped if training reordered two values, merged if two became equal).
    :meth:`remove` restores an ordinary dense parameter holding the current values.

    >>> import torch, numpy as np
    >>> from pydnnz.compress import cws
    >>> lin = torch.nn.Linear(8, 4)
    >>> q = cws(lin.weight.detach().numpy(), 3)
    >>> sw = SharedWeights(lin, q)
    >>> out = lin(torch.ones(1, 8))      # the forward pass uses codebook[indices]
    >>> sw.codebook.shape, len(torch.unique(lin.weight.detach()))
    (torch.Size([3]), 3)
    """

    def __init__(self, module: nn.Module, qt: QuantizedTensor, name: str = "weight", codebook=None,
                 freeze_zero=None):
        if not isinstance(qt, QuantizedTensor):
            raise InvalidArgumentError(f"SharedWeights needs a QuantizedTensor, got {type(qt).__name__}")
        p = _param(module, name)
        if tuple(p.shape) != qt.shape:
            raise ShapeError(f"{name} has shape {tuple(p.shape)}, the QuantizedTensor {qt.shape}")
        if freeze_zero is None:
            freeze_zero = qt.mask is not None
        if codebook is None:
            codebook = _Codebook(qt.codebook, p.device, p.dtype, bool(freeze_zero))
        # the tensor's own codebook is a subset of the (possibly shared) trainable one
        shared = codebook.values
        self._map = np.searchsorted(shared, qt.codebook)
        if np.any(self._map >= shared.size) or not np.array_equal(shared[np.minimum(self._map, shared.size - 1)], qt.codebook):
            raise InvalidArgumentError("the shared codebook does not hold this tensor's values")
        self.module, self.name, self.qt, self._cb = module, name, qt, codebook
        self._requires_grad = p.requires_grad
        del module._parameters[name]
        module.register_parameter(name + "_codebook", codebook.param)
        module.register_buffer(name + "_indices",
                               torch.as_tensor(self._map[qt.indices], device=p.device),
                               persistent=False)
        self._handle = module.register_forward_pre_hook(lambda m, a: self._recompose())
        self._recompose()

    @property
    def codebook(self) -> nn.Parameter:
        return self._cb.param

    def _recompose(self):
        idx = getattr(self.module, self.name + "_indices")
        # index_select's backward is index_add: the scatter-add (sum) over each value's positions
        w = self._cb.param.index_select(0, idx.reshape(-1)).view(idx.shape)
        setattr(self.module, self.name, w)

    def enforce(self):
        self._cb.enforce()

    def export(self) -> QuantizedTensor:
        self.enforce()
        cb = self._cb.param.detach().cpu().numpy().astype(np.float32)
        return self.qt.with_codebook(cb[self._map])

    def remove(self):
        if self._handle is None:
            return
        self.enforce()
        self._handle.remove()
        self._handle = None
        with torch.no_grad():
            idx = getattr(self.module, self.name + "_indices")
            dense = self._cb.param.detach()[idx].clone()
        delattr(self.module, self.name)
        del self.module._parameters[self.name + "_codebook"]
        del self.module._buffers[self.name + "_indices"]
        self.module.register_parameter(self.name, nn.Parameter(dense, requires_grad=self._requires_grad))


class CompressionHooks:
    """The hooks :func:`attach` installed; ``export()`` reads the compressed weights back."""

    def __init__(self):
        self.hooks: dict[str, object] = {}
        self._opt_handles = []

    def enforce(self):
        for h in self.hooks.values():
            h.enforce()

    def attach_optimizer(self, optimizer: torch.optim.Optimizer):
        """Re-apply masks and frozen zeros after each ``optimizer.step()``."""
        self._opt_handles.append(optimizer.register_step_post_hook(lambda *a, **k: self.enforce()))
        return self

    def codebooks(self) -> list:
        seen, out = set(), []
        for h in self.hooks.values():
            if isinstance(h, SharedWeights) and id(h.codebook) not in seen:
                seen.add(id(h.codebook))
                out.append(h.codebook)
        return out

    def export(self) -> dict:
        """name -> updated QuantizedTensor (shared values) or float32 ndarray (masked)."""
        return {n: h.export() for n, h in self.hooks.items()}

    def remove(self):
        for h in self.hooks.values():
            h.remove()
        for h in self._opt_handles:
            h.remove()
        self._opt_handles = []


def _split(model: nn.Module, name: str):
    mod_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(mod_name) if mod_name else model
    except AttributeError:
        raise InvalidArgumentError(f"model has no submodule {mod_name!r} (for {name!r})") from None
    return module, attr


def attach(model: nn.Module, compressed: dict, *, masks=None, freeze_zero=None) -> CompressionHooks:
    """Load compressed weights into ``model`` and make them trainable with their structure kept.

    ``compressed`` maps parameter names (``"fc1.weight"``) to QuantizedTensor (shared-value
    training; tensors quantized with one unified codebook, i.e. with the same
    ``params["group"]``, share one ``nn.Parameter``), float32 arrays (pruned: masked training), or LowRankTensor (loaded dense
    and frozen: SLR has no retraining in the paper). A plain array is trained masked when
    ``masks`` (name -> bool array, True = kept) names it; with ``masks=None`` every array of
    ndim >= 2 holding an exact zero is taken as pruned with mask ``array != 0`` (biases and
    other 1-D arrays are left alone; pass ``masks={}`` to train no array masked). Names that are
    not parameters of the model raise for compressed values.

    >>> import torch, numpy as np
    >>> from pydnnz.compress import compress_weights
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> comp = compress_weights({k: v.detach().numpy() for k, v in net.state_dict().items()}, "cws", k=4, prune=50)
    >>> hooks = attach(net, comp)
    >>> len(hooks.codebooks())   # one unified codebook for both dense layers
    1
    """
    if not isinstance(compressed, dict):
        raise InvalidArgumentError("compressed must be a dict name -> compressed weight")
    hooks = CompressionHooks()
    # tensors quantized together (params["group"], set by compress_weights) share one
    # trainable codebook: the union of their values
    groups: dict = {}
    for name, v in compressed.items():
        if isinstance(v, QuantizedTensor):
            groups.setdefault(v.params.get("group") or ("tensor", name), []).append(name)
    shared: dict[str, _Codebook] = {}
    for key, names in groups.items():
        qts = [compressed[n] for n in names]
        fz = any(q.mask is not None for q in qts) if freeze_zero is None else bool(freeze_zero)
        union = np.unique(np.concatenate([q.codebook for q in qts]))
        p = _param(*_split(model, names[0]))
        cb = _Codebook(union, p.device, p.dtype, fz)
        for n in names:
            shared[n] = cb
    for name, v in compressed.items():
        if isinstance(v, QuantizedTensor):
            module, attr = _split(model, name)
            hooks.hooks[name] = SharedWeights(module, v, attr, codebook=shared[name])
        elif isinstance(v, LowRankTensor):
            module, attr = _split(model, name)
            p = _param(module, attr)
            with torch.no_grad():
                p.copy_(torch.as_tensor(v.to_dense(), dtype=p.dtype))
            p.requires_grad_(False)
        elif isinstance(v, np.ndarray):
            if masks is not None:
                if name not in masks:
                    continue
                m = np.asarray(masks[name])
            elif v.ndim >= 2 and np.issubdtype(v.dtype, np.floating) and not np.all(v):
                m = v != 0
            else:
                continue
            module, attr = _split(model, name)
            hooks.hooks[name] = MaskedWeight(module, m, attr, values=v)
    return hooks


class FinetuneResult:
    """What :func:`finetune` returns: per-step ``losses`` and the updated compressed ``weights``."""

    def __init__(self, losses, weights):
        self.losses = losses
        self.weights = weights

    def __repr__(self):
        return f"FinetuneResult(steps={len(self.losses)}, weights={len(self.weights)})"


def finetune(model: nn.Module, loss_fn, data, *, compressed=None, hooks=None, epochs: int = 1,
             steps=None, lr: float = 1e-3, optimizer="adam", scheduler=None, progress=None) -> FinetuneResult:
    """Fine-tune a compressed model; the compression structure is kept throughout.

    ``loss_fn(model, batch)`` returns a scalar loss tensor; ``data`` is an iterable of batches
    (re-iterated each epoch; a DataLoader works). Either pass ``compressed`` (the dict from
    ``compress_weights``; hooks are attached, and removed at the end leaving the model with the
    fine-tuned dense values) or ``hooks`` you attached yourself (left attached). ``optimizer``
    is "adam", "sgd" (momentum 0.9), an optimizer instance, or a callable params -> optimizer.
    ``scheduler`` is an optional callable optimizer -> LR scheduler (e.g. ``lambda opt:
    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / 100)``), stepped after every step.
    Stops after ``epochs`` epochs or ``steps`` steps, whichever comes first. A tqdm bar is shown
    when stderr is a terminal (``progress`` forces it on or off).

    >>> import torch, numpy as np
    >>> from pydnnz.compress import compress_weights
    >>> torch.manual_seed(0); net = torch.nn.Linear(4, 1)   # doctest: +ELLIPSIS
    <...>
    >>> x = torch.randn(64, 4); y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    >>> comp = compress_weights({"weight": net.weight.detach().numpy()}, "cws", k=3)
    >>> res = finetune(net, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), [(x, y)] * 50, compressed=comp, lr=0.05)
    >>> res.losses[-1] < res.losses[0], res.weights["weight"].k
    (True, 3)
    """
    from tqdm.auto import tqdm

    if (compressed is None) == (hooks is None):
        raise InvalidArgumentError("pass exactly one of compressed= (a dict) or hooks= (from attach)")
    if not (isinstance(optimizer, torch.optim.Optimizer) or optimizer in ("adam", "sgd") or callable(optimizer)):
        raise InvalidArgumentError(f"optimizer must be 'adam', 'sgd', an Optimizer or a callable, got {optimizer!r}")
    if scheduler is not None and not callable(scheduler):
        raise InvalidArgumentError(f"scheduler must be a callable optimizer -> LR scheduler, got {scheduler!r}")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise InvalidArgumentError(f"steps must be a positive integer, got {steps!r}")
    own = compressed is not None
    if own:
        hooks = attach(model, compressed)
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        opt = optimizer(params)
    hooks.attach_optimizer(opt)
    sched = scheduler(opt) if scheduler is not None else None
    show = sys.stderr.isatty() if progress is None else bool(progress)
    losses = []
    try:
        model.train()
        bar = tqdm(total=steps, disable=not show, desc="fine-tuning")
        for _ in range(epochs):
            for batch in data:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
                if steps is not None and len(losses) >= steps:
                    break
            if steps is not None and len(losses) >= steps:
                break
        bar.close()
        weights = hooks.export()
    finally:
        for h in hooks._opt_handles:
            h.remove()
        hooks._opt_handles = []
        if own:
            hooks.remove()
    return FinetuneResult(losses, weights)


def run_finetune(model, layers, lossy, fn, options):
    """Call the user's `fn(model)` with the compression structure attached; return the tuned values.

    The hook behind ``compress_model(..., finetune=fn)``: :func:`attach` loads the lossy results
    into the (still dense) layers and keeps their structure while `fn` trains (a quantized weight
    becomes ``codebook[indices]`` with the codebook as the trainable parameter, a pruned weight
    keeps its zeros). `fn` must build its optimizer from ``model.parameters()`` inside the call
    (the codebooks are new parameters). Afterwards the hooks are removed and the exported values
    (same indices and masks, tuned shared values) are what gets encoded.
    """
    allowed = {"masks", "freeze_zero"}
    unknown = set(options) - allowed
    if unknown:
        raise InvalidArgumentError(f"finetune_options: unknown key(s) {sorted(unknown)} (known: {sorted(allowed)})")
    keys = [f"{name}.weight" for name, *_ in layers]  # lossy is keyed "<layer>.weight"
    scaled = [key for key in keys if getattr(lossy[key], "row_scale", None) is not None]
    if scaled:
        from ..errors import UnsupportedError

        raise UnsupportedError(f"fine-tuning with per-channel scales is not supported ({scaled[:5]}); "
                               "fine-tune with granularity 'tensor', or compress without finetune=")
    compressed = {key: lossy[key] for key in keys}
    was_training = model.training
    hooks = attach(model, compressed, **options)
    try:
        fn(model)
        tuned = hooks.export()
    finally:
        hooks.remove()
        model.train(was_training)
    return {key: tuned.get(key, lossy[key]) for key in keys}
