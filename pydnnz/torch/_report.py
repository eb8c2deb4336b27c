"""What compress_model left dense, and why (the summary users read after compressing).

Every module holding a floating-point parameter of 2 or more dimensions (a weight matrix or
kernel; biases and norm scales are 1-D and always stay raw) that is not a compressed layer
afterwards gets one row: its name, type, the parameter names, and the reason:

- ``no rule matches`` (embeddings: only when a rule names them);
- ``rule i: method 'none'``;
- the configuration a supported type cannot be compressed in (LSTM with proj_size,
  MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn), always WARNED;
- ``type T is not supported`` (a layer type, or a subclass of one, that pydnnz.torch has no
  compressed module for) -- also WARNED when a rule's glob matched the layer's name, since the
  user asked for it;
- ``part of <parent>`` for parameters held by a sub-module the parent's compressed layer owns.

Layers that were compressed but whose k is at least their number of weights are listed under
``k_not_smaller`` with a warning: quantization then keeps every value (no size gain), which
would otherwise pass silently.

``compress_model`` stores the rows as JSON under ``pydnnz.dense`` in ``model.dnnz_metadata``
(save_model writes it into the file) and logs :func:`format_summary` on the ``pydnnz`` logger
(INFO); :func:`compression_summary` rebuilds the same text from a model or a metadata dict.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import warnings

import torch

log = logging.getLogger("pydnnz")


def _weights(module):
    return [n for n, p in module.named_parameters(recurse=False)
            if p is not None and p.dtype.is_floating_point and p.dim() >= 2]


def dense_layers(model, rules, compressed_names, supported_types, type_name_of, skipped=None):
    """Rows {layer, type, params, reason} for every weight-holding module left dense, and the
    list of warnings to raise (name-matched layers of unsupported types)."""
    rows, warn = [], []
    for name, m in model.named_modules():
        if name in compressed_names or not name:
            continue
        params = _weights(m)
        if not params:
            continue
        tname = type_name_of(m)
        row = {"layer": name, "type": type(m).__name__, "params": params}
        parent = next((c for c in compressed_names if name.startswith(c + ".")), None)
        if parent is not None:
            continue  # owned by a compressed layer (e.g. out_proj of a MultiheadAttention)
        if skipped and name in skipped:
            reason, rule = skipped[name]
            row["reason"] = reason
            warn.append(f"layer {name!r} ({type(m).__name__}) matches {rule.describe()} but stays dense: {reason}")
        elif tname is None:
            row["reason"] = f"type {type(m).__name__} is not supported"
            hit = [r for r in rules if r.patterns and r.method != "none"
                   and any(fnmatch.fnmatchcase(name, p) for p in r.patterns)]
            if hit:
                warn.append(f"layer {name!r} ({type(m).__name__}) matches {hit[0].describe()} but stays dense: "
                            f"pydnnz.torch has no compressed {type(m).__name__} "
                            f"(supported: {', '.join(supported_types)})")
        else:
            rule = next((r for r in rules if r.matches(name, tname)), None)
            if rule is None:
                row["reason"] = "no rule matches" + (" (embeddings need a rule naming them)"
                                                     if tname == "Embedding" else "")
            elif rule.method == "none":
                row["reason"] = f"rule {rule.index}: method 'none'"
            else:  # pragma: no cover - every claimed layer is compressed
                row["reason"] = "not compressed"
        rows.append(row)
    return rows, warn


def k_not_smaller(stats):
    """Compressed layers whose rule's k is >= their weight count (nothing gained)."""
    out = []
    for s in stats:
        n = 1
        for d in s["shape"]:
            n *= d
        k = s.get("rule_k")
        if k is not None and k >= n:
            out.append({"layer": s["layer"], "k": k, "weights": n})
    return out


def record(model, rules, stats, compressed_names, supported_types, type_name_of, skipped=None):
    """Fill model.dnnz_metadata['pydnnz.dense'], warn and log (called by compress_model)."""
    rows, warn = dense_layers(model, rules, compressed_names, supported_types, type_name_of, skipped)
    small = k_not_smaller(stats)
    for s in small:
        warn.append(f"layer {s['layer']!r}: k={s['k']} is not smaller than its {s['weights']} weights, so "
                    "its codebook is as large as the weights and the layer gains nothing; lower k or exclude the "
                    "layer (method 'none')")
    for w in warn:
        warnings.warn(w, UserWarning, stacklevel=3)
    report = {"dense": rows, "k_not_smaller": small}
    model.dnnz_metadata["pydnnz.dense"] = json.dumps(report)
    if log.isEnabledFor(logging.INFO):
        log.info("%s", format_summary(model.dnnz_metadata))
    return report


def format_summary(metadata) -> str:
    """A plain-text table: compressed layers (encoding, ψ) then every layer left dense and why."""
    def load(key):
        v = metadata.get(key)
        return json.loads(v) if isinstance(v, str) else v

    layers = load("pydnnz.layers") or []
    dense = load("pydnnz.dense") or {}
    lines = [f"compressed layers: {len(layers)}"]
    for s in layers:
        psi = s.get("psi")
        lines.append(f"  {s['layer']:<32} {s['type']:<20} {s['method']:<8} k={s['k']:<5} "
                     f"{s['encoding']:<6} psi={psi if psi is not None else '-'}")
    rows = dense.get("dense", [])
    lines.append(f"left dense: {len(rows)}")
    for r in rows:
        lines.append(f"  {r['layer']:<32} {r['type']:<20} {','.join(r['params'])}: {r['reason']}")
    for s in dense.get("k_not_smaller", []):
        lines.append(f"  warning: {s['layer']}: k={s['k']} >= {s['weights']} weights (no gain)")
    return "\n".join(lines)


def compression_summary(model_or_metadata) -> str:
    """The summary text of a compressed model (or of ``read_metadata(path)`` / its metadata dict).

    Example:
        >>> import torch, pydnnz.torch as pt
        >>> m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 2))
        >>> small = pt.compress_model(m, [{"match": "2", "method": "none"}, {"method": "uq", "k": 8}])
        >>> print(pt.compression_summary(small).splitlines()[-1])
          2                                Linear               weight: rule 0: method 'none'
    """
    if isinstance(model_or_metadata, torch.nn.Module):
        meta = getattr(model_or_metadata, "dnnz_metadata", None) or {}
    else:
        meta = dict(model_or_metadata)
    return format_summary(meta)
