"""save_model / load_model: a PyTorch model to and from a .dnnz file (safetensors.torch's verbs)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgumentError, ShapeError
from ._compress import COMPRESSED_FOR
from ._layers import MULTI, file_params
from ._modules import _CompressedBase
from ._state import encoded_params, encoded_state


class ModelMismatchError(InvalidArgumentError):
    """A .dnnz file does not fit the model it is loaded into (missing or unexpected keys, or a
    compressed tensor stored for a layer that cannot hold one). `.missing` and `.unexpected` list
    the keys at fault."""

    def __init__(self, message, missing=(), unexpected=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)


def _is_encoded(v):
    return hasattr(v, "encoding") and hasattr(v, "matmul") and hasattr(v, "decode")


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _compressed_modules(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, _CompressedBase)}


def model_tensors(model: nn.Module) -> dict:
    """What save_model writes: every state-dict entry as a numpy array, and the weight of every
    compressed layer as its EncodedMatrix (key `<layer>.weight`)."""
    out = {}
    with encoded_state():  # compressed weights are written encoded, not decoded
        state = model.state_dict()
    for key, t in state.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            from ..container import BFloat16Tensor

            out[key] = BFloat16Tensor(t.contiguous().view(torch.int16).numpy().view(np.uint16).copy())
        else:
            out[key] = t.contiguous().numpy()
    for name, m in _compressed_modules(model).items():
        for pname, em in encoded_params(m).items():
            out[_join(name, pname)] = em
    return out


def _string_metadata(metadata, what):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or any(not isinstance(k, str) or not isinstance(v, str)
                                             for k, v in metadata.items()):
        raise InvalidArgumentError(f"{what}: metadata must be a dict of str to str")
    return dict(metadata)


def save_model(model: nn.Module, path, metadata: dict | None = None):
    """Write every parameter and buffer of `model` to a .dnnz file.

    Compressed layers (from compress_model or load_model) are stored as their EncodedMatrix, the
    rest raw (biases, norms, uncompressed layers). The recipe and per-layer statistics that
    compress_model recorded travel in the file metadata ("pydnnz.recipe", "pydnnz.layers",
    "pydnnz.summary"), next to the user's `metadata` (str -> str; the user's keys win).

    Example:
        >>> import os, tempfile, torch, pydnnz.torch as pt
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4))
        >>> small = pt.compress_model(model, {"method": "uq", "k": 4})
        >>> path = os.path.join(tempfile.mkdtemp(), "m.dnnz")
        >>> pt.save_model(small, path, metadata={"note": "demo"})
        >>> type(pt.load_model(path, torch.nn.Sequential(torch.nn.Linear(8, 4)))[0]).__name__
        'CompressedLinear'
    """
    from ..container import save_file

    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"save_model: expected an nn.Module, got {type(model).__name__}")
    meta = dict(getattr(model, "dnnz_metadata", None) or {})
    meta.update(_string_metadata(metadata, "save_model"))
    save_file(model_tensors(model), str(path), metadata=meta)


def _holder(model, modules, key):
    """(module name, module, param name) for a state-dict key, or None when no module owns it."""
    prefix, _, pname = key.rpartition(".")
    m = modules.get(prefix)
    return (prefix, m, pname) if m is not None else None


def _compressible_owner(modules, key):
    """(layer name, module, param name) of the layer that can hold `key` compressed, or None.
    The outermost such module wins: `attn.out_proj.weight` belongs to the MultiheadAttention."""
    parts = key.split(".")
    for i in range(len(parts)):
        name, pname = ".".join(parts[:i]), ".".join(parts[i:])
        m = modules.get(name)
        if m is None or not (type(m) in COMPRESSED_FOR or isinstance(m, _CompressedBase)):
            continue
        if pname in file_params(m):
            return name, m, pname
    return None


def _to_torch(value):
    """A writable torch tensor with the file's values (raw tensors are read-only map views)."""
    bits = getattr(value, "bits", None)
    if bits is not None:  # BFloat16Tensor
        return torch.from_numpy(np.array(bits).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(value))


def _set_module(model, name, new):
    if not name:
        raise InvalidArgumentError("load_model: the model itself is a single layer; wrap it in a container "
                                   "(e.g. nn.Sequential) to load a compressed weight into it")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def load_model(path, model: nn.Module, strict: bool = True, device=None, runtime_encoding=None,
               runtime_memory=None) -> nn.Module:
    """Load a .dnnz file into `model` (the architecture) and return it.

    Same contract as safetensors.torch.load_model: the weights and buffers come from the file,
    the architecture from `model`, which is modified in place. A layer whose weight the file
    stores compressed is replaced by the matching Compressed* module (CompressedLinear,
    CompressedConv1d/2d, CompressedEmbedding) that computes from the memory-mapped compressed
    bytes: the dense weight is never built. Everything is checked before the model is touched:

    - keys the model has but the file lacks, and keys the file has but the model lacks, raise
      ModelMismatchError (listing them) when strict=True (the default); with strict=False they
      are skipped with a warning;
    - a compressed tensor for a parameter that no Compressed* module can hold (a bias, a norm
      layer) raises ModelMismatchError; shapes that differ raise ShapeError.

    A model built on the meta device (`with torch.device("meta"): model = build()`) works too:
    it then never allocates its dense weights at all (parameters are assigned from the file).

    Runtime form (off by default): ``runtime_encoding="fastest"`` (or an encoding name such as
    ``"im"``) re-encodes compressed layers in memory, exactly, into the encoding whose dot product
    is estimated fastest (or into that encoding), for devices where the file's encoding is too
    slow. Re-encoded layers hold their new bytes in RAM: at most ``runtime_memory`` bytes in all
    (default 512 MiB), the layers saving the most time first; the others keep the file's form.
    ``model.dnnz_runtime`` lists (layer, from, to, bytes, what happened).

    Example:
        >>> import os, tempfile, torch, pydnnz.torch as pt
        >>> path = os.path.join(tempfile.mkdtemp(), "m.dnnz")
        >>> pt.save_model(pt.compress_model(torch.nn.Sequential(torch.nn.Linear(8, 4)), "cws"), path)
        >>> model = pt.load_model(path, torch.nn.Sequential(torch.nn.Linear(8, 4)))
        >>> model(torch.ones(2, 8)).shape
        torch.Size([2, 4])
    """
    from ..container import load_file

    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"load_model: expected an nn.Module, got {type(model).__name__}")
    if device is not None and torch.device(device).type != "cpu":
        raise InvalidArgumentError("load_model: compressed layers run on the CPU (device='cpu' or None)")
    from ._runtime import check_target, reencode

    check_target(runtime_encoding)
    tensors = load_file(str(path))
    file_meta = dict(tensors.metadata or {})

    modules = dict(model.named_modules())
    with encoded_state():
        expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    for name, m in _compressed_modules(model).items():
        for pname, em in encoded_params(m).items():
            expected[_join(name, pname)] = tuple(em.shape)

    missing = sorted(k for k in expected if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in expected)
    if (missing or unexpected) and strict:
        parts = []
        if missing:
            parts.append(f"missing from the file: {', '.join(missing)}")
        if unexpected:
            parts.append(f"not in the model: {', '.join(unexpected)}")
        raise ModelMismatchError(f"{path}: the file does not fit the model ({'; '.join(parts)})",
                                 missing, unexpected)
    if missing or unexpected:
        warnings.warn(f"load_model({path}): {len(missing)} missing key(s) {missing[:5]}, "
                      f"{len(unexpected)} unexpected key(s) {unexpected[:5]} skipped (strict=False)",
                      stacklevel=2)

    replace = {}  # module name -> (module, {param name: EncodedMatrix})
    raw = {}
    for key, value in tensors.items():
        if key not in expected:
            continue
        shape = tuple(value.shape)
        if shape != expected[key]:
            raise ShapeError(f"{path}: '{key}' has shape {shape} in the file, the model expects {expected[key]}")
        owner = _holder(model, modules, key)
        if _is_encoded(value):
            layer = _compressible_owner(modules, key)
            if layer is None:
                what = "no module" if owner is None else f"a {type(owner[1]).__name__}'s {owner[2]!r}"
                raise ModelMismatchError(
                    f"{path}: '{key}' is stored compressed ({value.encoding}) but belongs to {what}; "
                    "only the weights of Linear, Conv1d, Conv2d, ConvTranspose1d/2d, Embedding, LSTM, GRU, "
                    "LSTMCell, GRUCell and MultiheadAttention layers can be held compressed",
                    unexpected=[key])
            replace.setdefault(layer[0], (layer[1], {}))[1][layer[2]] = value
        else:
            if owner is not None and isinstance(owner[1], _CompressedBase) and owner[2] in file_params(owner[1]):
                raise ModelMismatchError(f"{path}: '{key}' is stored dense but the model's layer is a "
                                         f"{type(owner[1]).__name__}; load into a dense model instead")
            raw[key] = value
    for name, (module, ems) in replace.items():
        need = set(file_params(module))
        if set(ems) != need:
            raise ModelMismatchError(f"{path}: layer '{name}' ({type(module).__name__}) has only "
                                     f"{sorted(ems)} stored compressed; a compressed {type(module).__name__} "
                                     f"needs all of {sorted(need)} compressed",
                                     unexpected=sorted(_join(name, p) for p in ems))

    runtime = []
    if runtime_encoding is not None and replace:
        from ..encodings import EncodedMatrix

        weights = {name: ems["weight"] for name, (_, ems) in replace.items()
                   if isinstance(ems.get("weight"), EncodedMatrix)}  # plain encodings (not per-channel scaled)
        fresh, runtime = reencode(weights, runtime_encoding, runtime_memory)
        for name, em in fresh.items():
            replace[name][1]["weight"] = em
    # Everything checked: now build the compressed layers and copy the raw tensors.
    for name, (module, ems) in replace.items():
        cls = type(module) if isinstance(module, _CompressedBase) else COMPRESSED_FOR[type(module)]
        if cls in MULTI:
            biases = {}
            for bname, b in module.named_parameters():
                if bname.rpartition(".")[2].startswith("bias") or bname.endswith("_bias"):
                    key = _join(name, bname)
                    biases[bname] = raw.pop(key) if key in raw else (
                        np.zeros(b.shape, np.float32) if b.is_meta else b)
            _set_module(model, name, cls.from_module(module, ems, biases))
            continue
        bias = None
        if getattr(module, "bias", None) is not None:
            bias_key = _join(name, "bias")
            if bias_key in raw:
                bias = raw.pop(bias_key)
            elif not module.bias.is_meta:  # strict=False and the file lacks it: keep the model's
                bias = module.bias
            else:
                bias = np.zeros(module.bias.shape, dtype=np.float32)
        _set_module(model, name, cls.from_module(module, ems["weight"], bias=bias))
    if raw:
        state = {k: _to_torch(v) for k, v in raw.items()}
        with encoded_state():
            meta = any(t.is_meta for t in model.state_dict(keep_vars=True).values())
        model.load_state_dict(state, strict=False, assign=meta)
    model.dnnz_metadata = file_meta
    if runtime_encoding is not None:
        model.dnnz_runtime = runtime
    return model


def read_metadata(path) -> dict:
    """The string metadata of a .dnnz file, with the JSON values pydnnz wrote decoded."""
    from ..container import safe_open

    with safe_open(str(path)) as f:
        meta = dict(f.metadata() or {})
    for key in ("pydnnz.recipe", "pydnnz.layers", "pydnnz.summary", "pydnnz.dense"):
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except ValueError:
                pass
    return meta
