"""compress_weights: apply one method to a dict of named weights (per layer or unified)."""
from __future__ import annotations

import fnmatch
import warnings
import zlib

import numpy as np

from ._core import as_weights, check_k, check_p, make_rng
from .lowrank import slr
from .pruning import prune as _prune, prune_global
from .quantize import EXTRA_METHODS, METHODS, k_not_smaller_effect, quantize
from ..errors import InvalidArgumentError, KNotSmallerWarning

__all__ = ["compress_weights", "infer_layer_type"]

_TYPES = ("dense", "conv", "embedding", "other")


def infer_layer_type(name: str, array) -> str:
    """Guess a weight's layer type from its name and rank.

    "embedding" when the name contains "embed"; otherwise "conv" for ndim >= 3, "dense" for
    ndim == 2, "other" (biases, norm parameters, scalars) for ndim <= 1.

    >>> import numpy as np
    >>> infer_layer_type("fc1.weight", np.zeros((4, 3))), infer_layer_type("fc1.bias", np.zeros(4))
    ('dense', 'other')
    """
    nd = np.ndim(array)
    if "embed" in name.lower():
        return "embedding"
    if nd >= 3:
        return "conv"
    if nd == 2:
        return "dense"
    return "other"


def _per_type(value, ltype, what, check):
    if isinstance(value, dict):
        unknown = set(value) - set(_TYPES)
        if unknown:
            raise InvalidArgumentError(f"{what} keys must be layer types {_TYPES}, got {sorted(unknown)}")
        value = value.get(ltype)
    return None if value is None else check(value)


def compress_weights(weights, method="cws", k=32, prune=None, *, unified=True, layer_types=None,
                     types=("dense", "conv"), include=None, exclude=None, prune_scope="layer",
                     seed=0, **method_kwargs):
    """Compress a dict of named weights with one method (the 2023 study's pipeline).

    - ``method``: "cws", "pws", "uq", "ecsq" (quantizers, optionally after pruning), "slr",
      or "prune"/None (pruning alone).
    - ``k``: levels per codebook; ``prune``: percentile p (pruning before a quantizer gives
      Pr-X: k levels for the non-zeros plus an exact 0). Both may be a dict per layer type,
      e.g. ``k={"dense": 32, "conv": 256}`` (the papers use one p and one k per type).
    - ``unified=True``: one codebook for all selected weights of a layer type (the 2023 paper's
      "u" methods: one for dense kernels, one for conv kernels); False: one per tensor.
    - ``layer_types``: name -> "dense"/"conv"/"embedding"/"other"; missing names are inferred by
      :func:`infer_layer_type`. ``types``: which types are compressed (biases, norms and
      embeddings are left alone by default). ``include``: glob patterns; when given, exactly the
      matching names are compressed, whatever their type. ``exclude``: glob patterns removed.
    - ``prune_scope``: "layer" (a threshold per tensor, the paper) or "global" (one threshold over
      all selected tensors of a type).
    - ``method_kwargs`` go to the method (e.g. ``lam=`` for ECSQ, ``mode=`` for UQ,
      ``rank=``/``sr=``/``rr=`` for SLR, ``include_zeros=True`` for the code's Pr-X variant).
    - ``seed``: each group gets its own generator from (seed, crc32 of the group name), so the
      result does not depend on dict order.

    A tensor (or, with ``unified``, a group) of at most k weights gains nothing from a quantizer:
    it comes back exact, and a ``pydnnz.errors.KNotSmallerWarning`` says so.

    Returns a dict with the same keys: QuantizedTensor (quantizers; with ``unified`` the members
    of a type draw their values from one codebook of at most k entries, each keeping the subset
    it uses, and ``params["group"]`` names the group), LowRankTensor (SLR),
    float32 ndarray with exact zeros (pruning alone), or the input array untouched.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = {"fc1.weight": rng.normal(size=(16, 8)).astype(np.float32), "fc1.bias": np.zeros(16, np.float32),
    ...      "fc2.weight": rng.normal(size=(4, 16)).astype(np.float32)}
    >>> out = compress_weights(w, "cws", k=4)
    >>> out["fc1.weight"].params["group"], out["fc1.bias"] is w["fc1.bias"]
    ('dense', True)
    >>> len(np.union1d(out["fc1.weight"].codebook, out["fc2.weight"].codebook))  # one shared codebook
    4
    """
    if not isinstance(weights, dict):
        raise InvalidArgumentError(f"weights must be a dict of name -> array, got {type(weights).__name__}")
    if method is None:
        method = "prune"
    if method not in METHODS + EXTRA_METHODS + ("slr", "prune"):
        raise InvalidArgumentError(
            f"unknown method {method!r} (expected one of {METHODS + EXTRA_METHODS + ('slr', 'prune')})")
    if prune_scope not in ("layer", "global"):
        raise InvalidArgumentError(f"prune_scope must be 'layer' or 'global', got {prune_scope!r}")
    if method == "prune" and prune is None:
        raise InvalidArgumentError("method='prune' needs a percentile: prune=p")
    if isinstance(include, str):
        include = [include]
    if isinstance(exclude, str):
        exclude = [exclude]
    for t in types:
        if t not in _TYPES:
            raise InvalidArgumentError(f"types must be among {_TYPES}, got {t!r}")
    layer_types = dict(layer_types or {})

    groups: dict[str, list[str]] = {}
    for name, value in weights.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"weight names must be strings, got {name!r}")
        ltype = layer_types.get(name) or infer_layer_type(name, value)
        if ltype not in _TYPES:
            raise InvalidArgumentError(f"layer type of {name!r} must be one of {_TYPES}, got {ltype!r}")
        selected = (any(fnmatch.fnmatchcase(name, pat) for pat in include) if include is not None
                    else ltype in types)
        if exclude and any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
            selected = False
        if selected:
            groups.setdefault(ltype, []).append(name)

    out = dict(weights)
    for ltype, names in sorted(groups.items()):
        names = sorted(names)  # random draws (PWS) then do not depend on the dict's order
        arrays = {n: as_weights(weights[n], f"weights[{n!r}]") for n in names}
        p = _per_type(prune, ltype, "prune", check_p)
        if method == "slr":
            for n, a in arrays.items():
                if p is not None:
                    a = _prune(a, p)[0]
                out[n] = slr(a, **method_kwargs)
            continue
        kk = None if method == "prune" else _per_type(k, ltype, "k", lambda v: v if v is None else check_k(v))
        masks = None
        if p is not None:
            if prune_scope == "global":
                res = prune_global(arrays, p)
            else:
                res = {n: _prune(a, p) for n, a in arrays.items()}
            if method == "prune":
                for n, (pw, _) in res.items():
                    out[n] = pw
                continue
            masks = {n: m for n, (_, m) in res.items()}
        elif method == "prune":
            continue
        seq = [[n] for n in names] if not unified else [names]
        for members in seq:
            gname = ltype if unified else members[0]
            count = sum(arrays[n].size for n in members)
            if kk is not None and kk >= count:
                what = f"{members[0]!r}" if len(members) == 1 else f"the unified {gname!r} group ({len(members)} tensors)"
                warnings.warn(KNotSmallerWarning(
                    f"{what}: k={kk} is not smaller than its {count} weights, so {k_not_smaller_effect(method)}; "
                    "lower k or leave it out"), stacklevel=2)
            rng = make_rng([int(seed), zlib.crc32(gname.encode())])
            with warnings.catch_warnings():  # warned above, with the names
                warnings.simplefilter("ignore", KNotSmallerWarning)
                qs = quantize([arrays[n] for n in members], method, kk,
                              masks=None if masks is None else [masks[n] for n in members],
                              seed=rng, **method_kwargs)
            for n, q in zip(members, qs):
                q.params["group"] = gname
                q.params["prune"] = p
                q.params["prune_scope"] = prune_scope if p is not None else None
                out[n] = q
    return out
