"""PyTorch state-dict semantics of the compressed layers.

- ``state_dict()`` holds every compressed weight DECODED (a float32 tensor under the dense
  layer's key, e.g. ``fc.weight``), so ``torch.save(model.state_dict())`` keeps the weights and
  the file loads into the dense architecture. The decode happens when state_dict() is called
  (one transient dense copy per compressed weight, in the returned dict only).
  save_model / load_model / model_tensors skip that decode (they store the encoded form).
- ``load_state_dict(sd)``: a compressed weight whose value in `sd` is bit for bit the decoded
  weight keeps its compressed form unchanged (the round trip state_dict -> load_state_dict is
  free and exact). Any other value is loaded EXACTLY as given: it is re-encoded losslessly
  (the layer's encoding when it can represent the values, else "auto", else "dense") and a
  UserWarning says so, since the layer may grow (run compress_model again to quantize it).
  A missing key is reported in ``missing_keys`` like any parameter (strict=True raises).
- ``.weight`` (and the other compressed parameters' names) is a read-only property decoding the
  weight on each access: nothing dense is cached on the module.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings

import numpy as np
import torch

_SKIP_DECODE = contextvars.ContextVar("pydnnz_skip_decode", default=False)


@contextlib.contextmanager
def encoded_state():
    """Within this block, state_dict() leaves compressed weights out (no decode)."""
    token = _SKIP_DECODE.set(True)
    try:
        yield
    finally:
        _SKIP_DECODE.reset(token)


def encoded_params(module) -> dict:
    """{parameter name: EncodedMatrix} of a compressed module."""
    fn = getattr(module, "encoded_params", None)
    return dict(fn()) if callable(fn) else {"weight": module.encoded}


def decoded(em) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(em.decode(), dtype=np.float32))


def _state_dict_hook(module, state_dict, prefix, local_metadata):
    if _SKIP_DECODE.get():
        return
    for pname, em in encoded_params(module).items():
        state_dict[prefix + pname] = decoded(em)


def reencode(em, values, what):
    """A lossless EncodedMatrix of `values` (float32, em's shape): em's encoding when it applies."""
    from ..encodings import encode
    from ..errors import DnnzError

    for encoding in dict.fromkeys((em.encoding, "auto", "dense")):
        try:
            return encode(values, encoding)
        except DnnzError:
            continue
    raise AssertionError(f"{what}: the dense encoding failed")  # pragma: no cover - dense always applies


def _load_hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
    from ..errors import ShapeError

    for pname, em in encoded_params(module).items():
        key = prefix + pname
        if key not in state_dict:
            missing_keys.append(key)  # as PyTorch does: load_state_dict raises on it when strict
            continue
        value = state_dict.pop(key)
        if not isinstance(value, torch.Tensor):
            error_msgs.append(f"{key}: expected a tensor, got {type(value).__name__}")
            continue
        if tuple(value.shape) != tuple(em.shape):
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, "
                              f"the compressed layer has {tuple(em.shape)}")
            continue
        new = value.detach().to("cpu", torch.float32).contiguous().numpy()
        if np.array_equal(new.view(np.uint32), np.asarray(em.decode(), np.float32).view(np.uint32)):
            continue  # the decoded weight itself: keep the compressed form
        if np.isnan(new).any():
            error_msgs.append(f"{key}: NaN values cannot be loaded into a compressed layer")
            continue
        try:
            module._set_encoded(pname, reencode(em, new, key))
        except ShapeError as exc:  # pragma: no cover - shapes checked above
            error_msgs.append(f"{key}: {exc}")
            continue
        warnings.warn(f"load_state_dict: {key} differs from the compressed weight; it was encoded "
                      "losslessly as given (the layer may be larger; compress the model again to quantize it)",
                      stacklevel=4)


def install(module):
    """Register the state-dict hooks on a compressed module (called by its constructor)."""
    module.register_state_dict_post_hook(_state_dict_hook)
    module.register_load_state_dict_pre_hook(_load_hook)


def check_not_tracing(name):
    """torch.jit.trace would record the C computation as a constant: refuse it clearly."""
    if torch.jit.is_tracing():
        from ..errors import UnsupportedError

        raise UnsupportedError(
            f"{name}: torch.jit.trace cannot see inside the compressed kernels (they run in C on the "
            "encoded bytes) and would record a constant. Trace pydnnz.torch.decompress_model(model) "
            "instead, or use torch.compile (compressed layers run eagerly between compiled graphs).")
