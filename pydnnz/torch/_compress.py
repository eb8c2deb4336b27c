"""compress_model: apply a recipe to a PyTorch model (lossy step, optional fine-tuning, encoding)."""
from __future__ import annotations

import copy
import fnmatch
import json
import warnings

import numpy as np
import torch
from torch import nn

from .._progress import progress_bar
from ..compress._tensors import in_source_dtype
from ..errors import DnnzError, InvalidArgumentError, KNotSmallerWarning
from ._layers import COMPRESSED_FOR as _MORE_LAYERS, MULTI, TYPE_NAMES as _MORE_NAMES, unsupported_reason, weight_params
from ._modules import COMPRESSED_FOR as _BASE_LAYERS, _CompressedBase
from ._recipe import KIND, parse_recipe, recipe_json
from ._report import record

_TYPE_NAMES = {nn.Linear: "Linear", nn.Conv1d: "Conv1d", nn.Conv2d: "Conv2d", nn.Embedding: "Embedding",
               **_MORE_NAMES}
COMPRESSED_FOR = {**_BASE_LAYERS, **_MORE_LAYERS}


def _encoding_names():
    """The names `encoding` may take: the policies ("auto", "smallest", "fastest") and every
    registered encoding."""
    from .. import encodings
    from ..encodings._speed import POLICIES

    return POLICIES + encodings.encodings()


def _layers(model, rules, skipped=None):
    """[(name, module, type name, rule)] for every layer a rule claims (method 'none' excluded).
    Claimed layers whose configuration has no compressed module go to `skipped` (name -> reason)."""
    claimed = [0] * len(rules)
    out = []
    seen = []
    skipped = {} if skipped is None else skipped
    for name, m in model.named_modules():
        tname = _TYPE_NAMES.get(type(m))  # exact types: subclasses may use .weight in their own way
        if tname is None:
            continue
        seen.append(name)
        for r in rules:
            if r.matches(name, tname):
                claimed[r.index] += 1
                if r.method != "none":
                    if tname == "Embedding" and m.max_norm is not None:
                        raise InvalidArgumentError(f"layer {name!r}: an Embedding with max_norm cannot be "
                                                   "compressed (it renormalizes its table at every lookup)")
                    reason = unsupported_reason(m)
                    if reason:
                        skipped[name] = (reason, r)
                    else:
                        out.append((name, m, tname, r))
                break
    for r, n in zip(rules, claimed):
        if n == 0:
            named = [f"{name!r} ({type(m).__name__})" for name, m in model.named_modules()
                     if name and r.patterns and _TYPE_NAMES.get(type(m)) is None
                     and any(fnmatch.fnmatchcase(name, p) for p in r.patterns)
                     and any(p.dim() >= 2 for p in m.parameters(recurse=False))]
            also = (f"; it names {', '.join(named[:5])}, which pydnnz.torch cannot compress"
                    if named else "")
            raise InvalidArgumentError(
                f"{r.describe()} matches no layer{also}; the model's {'/'.join(dict.fromkeys(_TYPE_NAMES.values()))} "
                f"layers are: {', '.join(seen[:30]) or '(none)'}{' ...' if len(seen) > 30 else ''}")
    return out


def _lossy(rule, members):
    """Run pydnnz.compress on the weights of `members` (all claimed by `rule`).

    Returns {"<layer>.<param>": QuantizedTensor | pruned float32 ndarray}, one entry per weight
    matrix of each layer (weight_params: "weight", or e.g. LSTM's weight_ih_l0 / weight_hh_l0).
    Unified codebooks are shared by the members of one kind (dense / conv / embedding), as in
    the 2023 paper.
    """
    from ..compress import compress_weights

    weights = {}
    kinds = {}
    for name, m, tname, _ in members:
        for pname in weight_params(m):
            key = f"{name}.{pname}"
            weights[key] = m.get_parameter(pname).detach().to("cpu", torch.float32).numpy().copy()
            kinds[key] = KIND[tname]
    method = rule.method[3:] if rule.method.startswith("pr_") else rule.method
    kwargs = dict(rule.options)
    if rule.lam is not None:
        kwargs["lam"] = rule.lam
    if rule.granularity != "tensor":
        kwargs["granularity"] = rule.granularity
    with warnings.catch_warnings():  # compress_model reports k >= weight count per layer itself
        warnings.simplefilter("ignore", KNotSmallerWarning)
        out = compress_weights(weights, method, k=rule.k, prune=rule.prune, unified=rule.unified,
                               layer_types=kinds, types=tuple(sorted(set(kinds.values()))),
                               seed=rule.seed, **kwargs)
    out = {key: out[key] for key in weights}
    if rule.scale is not None:
        out = {key: _scaled(value, rule, key) for key, value in out.items()}
    return out


def _scaled(q, rule, key):
    """QuantizedTensor `q` with every codebook value multiplied by rule.scale (a float32 product;
    same indices, mask and row scales). A new object: unified codebooks may share one array."""
    from ..compress._tensors import QuantizedTensor

    if not isinstance(q, QuantizedTensor):
        raise InvalidArgumentError(f"{rule.describe()}: 'scale' needs a quantized layer, {key!r} is not one")
    codebook = q.codebook * np.float32(rule.scale)
    if not np.all(np.isfinite(codebook)) or (codebook.size > 1 and not np.all(codebook[1:] > codebook[:-1])):
        raise InvalidArgumentError(f"{rule.describe()}: 'scale' {rule.scale!r} makes the codebook of {key!r} "
                                   "overflow or merges two of its values")
    return QuantizedTensor(codebook, q.indices, q.mask, method=q.method, params=q.params,
                           row_scale=q.row_scale, scale_rows=q.scale_rows)


def _set_biases(rules, layers):
    """A rule's 'bias' (auto_compress's bias correction) becomes its one layer's bias."""
    for rule in rules:
        if rule.bias is None:
            continue
        members = [entry for entry in layers if entry[3] is rule]
        b = getattr(members[0][1], "bias", None) if len(members) == 1 else None
        if not isinstance(b, torch.Tensor) or b.numel() != len(rule.bias):
            raise InvalidArgumentError(f"{rule.describe()}: 'bias' needs exactly one matched layer with a bias of "
                                       f"{len(rule.bias)} values (matched: {[e[0] for e in members][:5]})")
        with torch.no_grad():
            b.copy_(torch.tensor(rule.bias, dtype=torch.float32).reshape(b.shape))


def _copy_model(model):
    """deepcopy that shares the (immutable) EncodedMatrix objects of compressed layers: they may
    hold read-only views of a memory map and C-side pointers, which must not be copied."""
    memo = {}
    for m in model.modules():
        if isinstance(m, _CompressedBase):
            for em in getattr(m, "encoded_params", lambda: {"weight": m.encoded})().values():
                memo[id(em)] = em
    return copy.deepcopy(model, memo)


def _set_module(model, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _load_dense(module, value):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(np.asarray(value, dtype=np.float32))))


def compress_model(model: nn.Module, recipe, *, inplace: bool = False, finetune=None,
                   finetune_options: dict | None = None, progress: bool | None = None) -> nn.Module:
    """Compress the Linear, Conv1d, Conv2d and Embedding layers of `model` as `recipe` says.

    Each claimed layer's weight goes through the lossy method (pydnnz.compress: pruning, CWS,
    PWS, UQ, ECSQ and Pr-X, per-layer or unified codebooks), then the lossless encoding
    (pydnnz.encode), and the layer is replaced by CompressedLinear / CompressedConv1d /
    CompressedConv2d / CompressedEmbedding, which run from the encoded form. Biases stay float32.
    Other layers (norms, ...) and unclaimed layers are left as they are.

    Args:
        model: the float model (not modified unless inplace=True; otherwise deep-copied).
        recipe: a dict (one rule), a list of rules or a method name; see `pydnnz.torch._recipe`
            for every key. For each layer the first matching rule decides. Examples:
            ``{"method": "cws", "k": 32, "prune": 90, "unified": True, "layers": "fc*"}``;
            ``[{"match": "out", "method": "none"}, {"type": "Linear", "method": "pr_cws", "prune": 90,
            "k": 32}, {"type": "conv", "method": "uq", "k": 256}]``.
        finetune: optional callable ``finetune(model)`` running the user's training loop. It gets
            the model with the claimed layers still dense but carrying the compression structure
            (pydnnz.torch.finetune: pruned weights stay exactly zero, shared values move by the
            cumulative gradient of their positions); afterwards the layers are re-quantized with the
            tuned shared values (same indices and mask) and encoded.
        finetune_options: keyword arguments for the fine-tuning machinery (e.g. ``lr_cumulative``).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        The compressed model. ``model.dnnz_metadata`` holds the recipe and per-layer statistics
        (method, k, encoding, bytes, ψ) as JSON strings, and under ``pydnnz.dense`` every layer
        left dense with the reason; save_model writes them into the file.
        ``compression_summary(model)`` prints them (also logged at INFO on the "pydnnz" logger).
        A layer that a rule's glob names but whose type has no compressed module, and a layer
        whose k is not smaller than its weight count, raise a UserWarning.

    Raises:
        InvalidArgumentError naming the rule and key for a bad recipe, or a rule matching no layer.

    Example:
        >>> import torch, pydnnz.torch as pt
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10))
        >>> small = pt.compress_model(model, [{"type": "conv", "method": "uq", "k": 16},
        ...                                    {"type": "Linear", "method": "cws", "k": 8, "prune": 90}])
        >>> [type(m).__name__ for m in small]
        ['CompressedConv2d', 'Flatten', 'CompressedLinear']
        >>> small(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    from ..encodings import encode

    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"compress_model: expected an nn.Module, got {type(model).__name__}")
    if finetune is not None and not callable(finetune):
        raise InvalidArgumentError("compress_model: finetune must be a callable taking the model")
    if finetune_options is not None and not isinstance(finetune_options, dict):
        raise InvalidArgumentError("compress_model: finetune_options must be a dict")
    rules = parse_recipe(recipe, _encoding_names())
    if not inplace:
        model = _copy_model(model)
    if isinstance(model, _CompressedBase) or _TYPE_NAMES.get(type(model)) is not None:
        raise InvalidArgumentError("compress_model: the model is a single layer; wrap it in a container "
                                   "(e.g. nn.Sequential) so that the layer can be replaced")
    skipped = {}
    layers = _layers(model, rules, skipped)
    if finetune is not None:
        multi = [name for name, m, *_ in layers if COMPRESSED_FOR[type(m)] in MULTI]
        if multi:
            from ..errors import UnsupportedError

            raise UnsupportedError(f"compress_model: fine-tuning does not reach the weights of {multi[:5]} "
                                   "(LSTM/GRU/MultiheadAttention do not read .weight in forward); exclude them "
                                   "(method 'none') or compress without finetune=")

    _set_biases(rules, layers)

    # Lossy step, one call per rule (unified codebooks never cross rules).
    lossy = {}
    for rule in rules:
        members = [entry for entry in layers if entry[3] is rule]
        if members:
            lossy.update(_lossy(rule, members))

    if finetune is not None:
        from .finetune import run_finetune

        lossy = run_finetune(model, layers, lossy, finetune, finetune_options or {})

    stats = []
    bar = progress_bar(layers, desc="encoding", disable=None if progress is None else not progress)
    for name, module, tname, rule in bar:
        cls = COMPRESSED_FOR[type(module)]
        ems = {}
        for pname in weight_params(module):
            source = _SOURCE_DTYPES.get(module.get_parameter(pname).dtype, "float32")
            value = in_source_dtype(lossy[f"{name}.{pname}"], source)  # a float16/bfloat16 layer stays one
            try:
                em = ems[pname] = encode(value, encoding=rule.encoding, source_dtype=source)
            except DnnzError as exc:  # name the layer: a model has hundreds of them
                raise type(exc)(f"compress_model: layer {name!r}: {exc}") from exc
            n = int(np.prod(em.shape))
            stats.append({"layer": name if pname == "weight" else f"{name}.{pname}", "type": tname,
                          "method": rule.method, "rule": rule.index,
                          "k": int(value.k) if hasattr(value, "k") else int(np.unique(value).size),
                          "rule_k": rule.k, "granularity": rule.granularity,
                          "prune": rule.prune, "encoding": em.encoding, "shape": list(em.shape),
                          "nbytes": int(em.nbytes), "float32_bytes": 4 * n,
                          "psi": round(em.nbytes / (4 * n), 6) if n else None,
                          "nonzero": float(np.count_nonzero(np.asarray(value)) / n) if n else None})
        new = cls.from_module(module, ems) if cls in MULTI else cls.from_module(module, ems["weight"])
        _set_module(model, name, new)
    model.dnnz_metadata = _metadata(rules, stats)
    record(model, rules, stats, {name for name, *_ in layers}, tuple(dict.fromkeys(_TYPE_NAMES.values())),
           lambda m: _TYPE_NAMES.get(type(m)), skipped)
    return model


def _metadata(rules, stats):
    summary = {}
    for kind in ("dense", "conv", "embedding"):
        rows = [s for s in stats if KIND[s["type"]] == kind]
        if rows:
            nb, fb = sum(s["nbytes"] for s in rows), sum(s["float32_bytes"] for s in rows)
            summary[kind] = {"layers": len(rows), "nbytes": nb, "float32_bytes": fb, "psi": round(nb / fb, 6)}
    if stats:
        nb, fb = sum(s["nbytes"] for s in stats), sum(s["float32_bytes"] for s in stats)
        summary["all"] = {"layers": len(stats), "nbytes": nb, "float32_bytes": fb, "psi": round(nb / fb, 6)}
    return {"pydnnz.recipe": recipe_json(rules), "pydnnz.layers": json.dumps(stats),
            "pydnnz.summary": json.dumps(summary)}


def decompress_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every Compressed* layer by the equivalent dense PyTorch layer (exact decoded weights).

    Useful as the dense reference of a compressed model (the same quantized weights run by
    PyTorch), or to fine-tune / export it again.

    Example:
        >>> import torch, pydnnz.torch as pt
        >>> small = pt.compress_model(torch.nn.Sequential(torch.nn.Linear(4, 2)), {"method": "uq", "k": 4})
        >>> dense = pt.decompress_model(small)
        >>> type(dense[0]).__name__, len(torch.unique(dense[0].weight))
        ('Linear', 4)
    """
    if isinstance(model, _CompressedBase):
        return _decompressed(model)
    if not inplace:
        model = _copy_model(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, _CompressedBase):
            _set_module(model, name, _decompressed(m))
    return model


_SOURCE_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64"}
_TORCH_DTYPES = {v: k for k, v in _SOURCE_DTYPES.items()}


def _decompressed(layer):
    """The dense layer, in the dtype the compressed layer came from (exact: its values were kept
    representable in that dtype, see ``EncodedMatrix.source_dtype``)."""
    dense = layer.decompress()
    encoded = getattr(layer, "encoded", None)
    dtype = _TORCH_DTYPES.get(getattr(encoded, "source_dtype", "float32"))
    return dense.to(dtype) if dtype is not None else dense
