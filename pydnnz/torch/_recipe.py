"""Compression recipes: which layers get which lossy method, parameters and encoding.

A recipe is one rule (a dict), a list of rules, or a method name as a shorthand for one rule
with every default. For each layer the FIRST rule that matches it decides; layers that no rule
matches keep their dense weights. Keys of a rule (every one optional):

    match     glob pattern(s) on the qualified module name ("fc*", ["smi_conv.*", "prot_conv.*"]);
              alias "layers". fnmatch syntax: `*` also crosses dots.
    type      layer type(s): "Linear" (alias "dense"), "Conv1d", "Conv2d", "conv" (= both convs),
              "Embedding", "ConvTranspose1d", "ConvTranspose2d", "convtranspose" (both), "LSTM",
              "GRU", "LSTMCell", "GRUCell", "rnn" (those four), "MultiheadAttention" (alias
              "attention"); case-insensitive; torch classes are accepted too.
              A rule with neither match nor type applies to every supported type but Embedding;
              embeddings are compressed only when a rule names them (by type or by name).
    method    "cws" (k-means weight sharing), "pws" (probabilistic quantization), "uq" (uniform),
              "ecsq" (entropy-constrained), "rdq" (uniform step + rate-distortion-optimised
              rounding, options {"step": Δ, "rdo": c}; see pydnnz.compress.rdq),
              "prune" (magnitude pruning alone), "pr_cws", "pr_pws",
              "pr_uq", "pr_ecsq", "pr_rdq" (pruning, then the quantizer), or "none" (leave the layer dense;
              useful to exclude a layer before a broader rule). Default "cws".
              "pr-cws", "prcws" and "pruCWS" spell "pr_cws" too.
    k         number of shared values (codebook size), an int >= 2. Default 32.
    prune     pruning percentile p in [0, 100): the p% smallest |w| of each layer become exactly 0.
              Giving `prune` with a plain quantizer ("cws" + prune=90) means "pr_cws".
              Default 90 for "prune" and "pr_*" methods.
    unified   True: one codebook shared by every layer of the same kind (dense, conv, embedding)
              that this rule matches ("uCWS" of the 2023 paper); False (default): one per layer.
    encoding  the lossless encoding: a policy ("auto", the default: the smallest encoding within 1.5x of
              the fastest one's estimated speed; "smallest"; "fastest") or a name pydnnz.encode knows
              ("dense", "csc", "im", "ham", "sham", ...).
    seed      random seed of the lossy method (k-means initialisation, stochastic rounding). Default 0.
    lam       ECSQ's rate-distortion trade-off λ (alias "lambda"); only for ecsq / pr_ecsq.
    granularity  "tensor" (default: one codebook of weight values per tensor, or per kind with
              unified), "channel" (a float32 scale per output row, max |w| of the row, and a shared
              codebook of row-normalised values) or an int B (one scale per block of B rows).
              For cws, pws, uq, ecsq and their pr_ variants. See spec/torch.md, "Per-channel".
    options   a dict of further keyword arguments passed as they are to the pydnnz.compress method.
    bias      a list of numbers: the layer's new bias (float32), set before compressing; the rule
              must then name exactly one layer that has a bias of that length. What
              auto_compress's bias correction writes (the quantization error's mean effect on the
              layer's output, taken out of the bias); stored as the layer's bias, not in the
              file's copy of the recipe.
    scale     a number > 0: every shared value of the layer's codebook is multiplied by it
              (float32 product) after the lossy step, so the layer computes scale·(W_q x) from
              the same indices and the same number of stored values; quantizers only. What
              auto_compress's output correction of the last Linear layer writes (with "bias").
              Fine-tuning, if any, starts from the scaled values.

Example:
    >>> rules = parse_recipe([{"match": "out", "method": "none"},
    ...                       {"type": "Linear", "method": "cws", "prune": 90, "k": 32, "unified": True},
    ...                       {"type": "conv", "method": "uq", "k": 256}])
    >>> [r.method for r in rules], rules[1].prune, rules[2].types
    (['none', 'pr_cws', 'uq'], 90.0, ('Conv1d', 'Conv2d'))
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidArgumentError

_NEW_TYPES = ("ConvTranspose1d", "ConvTranspose2d", "LSTM", "GRU", "LSTMCell", "GRUCell", "MultiheadAttention")
LAYER_TYPES = ("Linear", "Conv1d", "Conv2d", "Embedding") + _NEW_TYPES
DEFAULT_TYPES = ("Linear", "Conv1d", "Conv2d") + _NEW_TYPES
# The kind decides which layers share a unified codebook (the paper: one per layer type).
KIND = {"Linear": "dense", "Conv1d": "conv", "Conv2d": "conv", "Embedding": "embedding",
        "ConvTranspose1d": "conv", "ConvTranspose2d": "conv", "LSTM": "dense", "GRU": "dense",
        "LSTMCell": "dense", "GRUCell": "dense", "MultiheadAttention": "dense"}
_TYPE_ALIASES = {
    "linear": ("Linear",), "dense": ("Linear",), "conv1d": ("Conv1d",), "conv2d": ("Conv2d",),
    "conv": ("Conv1d", "Conv2d"), "embedding": ("Embedding",),
    "convtranspose1d": ("ConvTranspose1d",), "convtranspose2d": ("ConvTranspose2d",),
    "convtranspose": ("ConvTranspose1d", "ConvTranspose2d"), "lstm": ("LSTM",), "gru": ("GRU",),
    "lstmcell": ("LSTMCell",), "grucell": ("GRUCell",), "rnn": ("LSTM", "GRU", "LSTMCell", "GRUCell"),
    "multiheadattention": ("MultiheadAttention",), "attention": ("MultiheadAttention",),
}
QUANTIZERS = ("cws", "pws", "uq", "ecsq", "rdq")
METHODS = ("none", "prune") + QUANTIZERS + tuple(f"pr_{q}" for q in QUANTIZERS)
KEYS = ("match", "layers", "type", "method", "k", "prune", "unified", "encoding", "seed",
        "lam", "lambda", "granularity", "options", "bias", "scale")
DEFAULT_K = 32
DEFAULT_PRUNE = 90.0


@dataclass(frozen=True)
class Rule:
    """One validated recipe rule (see the module docstring for the meaning of each field)."""

    index: int
    patterns: tuple = ()
    types: tuple = ()
    method: str = "cws"
    k: int | None = DEFAULT_K
    prune: float | None = None
    unified: bool = False
    encoding: str = "auto"
    seed: int = 0
    lam: float | None = None
    options: dict = field(default_factory=dict)
    granularity: object = "tensor"
    bias: tuple | None = None
    scale: float | None = None

    def matches(self, name: str, type_name: str) -> bool:
        types = self.types or (DEFAULT_TYPES if not self.patterns else LAYER_TYPES)
        if type_name not in types:
            return False
        return not self.patterns or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def describe(self) -> str:
        what = []
        if self.patterns:
            what.append("match " + ",".join(self.patterns))
        if self.types:
            what.append("type " + ",".join(self.types))
        return f"rule {self.index} ({'; '.join(what) or 'default layers'})"

    def to_json(self) -> dict:
        """The rule as plain JSON values (what travels in a .dnnz file's metadata)."""
        out = {"method": self.method}
        if self.patterns:
            out["match"] = list(self.patterns)
        if self.types:
            out["type"] = list(self.types)
        if self.method != "none":
            if self.k is not None:
                out["k"] = self.k
            if self.prune is not None:
                out["prune"] = self.prune
            out.update(unified=self.unified, encoding=self.encoding, seed=self.seed)
            if self.lam is not None:
                out["lam"] = self.lam
            if self.granularity != "tensor":
                out["granularity"] = self.granularity
            if self.options:
                out["options"] = self.options
            if self.scale is not None:
                out["scale"] = self.scale
        return out


def _method_name(value, where):
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{where}: 'method' must be a string, got {type(value).__name__}")
    m = value.strip().lower().replace("-", "_")
    if m in ("pr", "pruning"):
        m = "prune"
    if m.startswith("pru") and m != "prune":  # the paper's pruCWS / pruUQ spelling
        m = "pr_" + m[3:].lstrip("_")
    elif m.startswith("pr") and not m.startswith("pr_") and m != "prune":
        m = "pr_" + m[2:]
    if m not in METHODS:
        raise InvalidArgumentError(f"{where}: unknown method {value!r} (known: {', '.join(METHODS)})")
    return m


def _str_list(value, key, where):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidArgumentError(f"{where}: {key!r} must be a string or a non-empty list of strings")
    return value


def _types(value, where):
    out = []
    for t in _str_list(value, "type", where) if not isinstance(value, type) else [value]:
        if isinstance(t, type):
            t = t.__name__
        if not isinstance(t, str) or t.lower() not in _TYPE_ALIASES:
            raise InvalidArgumentError(
                f"{where}: unknown layer type {t!r} (known: Linear, dense, Conv1d, Conv2d, conv, Embedding, "
                "ConvTranspose1d, ConvTranspose2d, convtranspose, LSTM, GRU, LSTMCell, GRUCell, rnn, "
                "MultiheadAttention, attention)")
        out.extend(x for x in _TYPE_ALIASES[t.lower()] if x not in out)
    return tuple(out)


def _number(value, key, where, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise InvalidArgumentError(f"{where}: {key!r} must be {'an int' if kind is int else 'a number'}, "
                                   f"got {value!r}")
    return kind(value)


def _rule(raw, index, encodings):
    where = f"recipe rule {index}"
    if isinstance(raw, str):
        raw = {"method": raw}
    if not isinstance(raw, dict):
        raise InvalidArgumentError(f"{where}: a rule must be a dict or a method name, got {type(raw).__name__}")
    for key in raw:
        if key not in KEYS:
            raise InvalidArgumentError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)})")
    for a, b in (("match", "layers"), ("lam", "lambda")):
        if a in raw and b in raw:
            raise InvalidArgumentError(f"{where}: give {a!r} or its alias {b!r}, not both")
    patterns = raw.get("match", raw.get("layers"))
    patterns = tuple(_str_list(patterns, "match", where)) if patterns is not None else ()
    if any(not isinstance(p, str) for p in patterns):
        raise InvalidArgumentError(f"{where}: 'match' patterns must be strings")
    types = _types(raw["type"], where) if raw.get("type") is not None else ()

    method = _method_name(raw.get("method", "cws"), where)
    prune = raw.get("prune")
    if prune is not None:
        prune = _number(prune, "prune", where)
        if not 0.0 <= prune < 100.0:
            raise InvalidArgumentError(f"{where}: 'prune' is a percentile in [0, 100), got {prune}")
        if method in QUANTIZERS:
            method = "pr_" + method
        elif method == "none":
            raise InvalidArgumentError(f"{where}: 'prune' given with method 'none'")
    elif method == "prune" or method.startswith("pr_"):
        prune = DEFAULT_PRUNE

    k = raw.get("k")
    if k is not None:
        k = _number(k, "k", where, int)
        if k < 2:
            raise InvalidArgumentError(f"{where}: 'k' must be >= 2, got {k}")
        if method in ("none", "prune"):
            raise InvalidArgumentError(f"{where}: 'k' makes no sense with method {method!r}")
    elif method not in ("none", "prune"):
        k = DEFAULT_K

    lam = raw.get("lam", raw.get("lambda"))
    if lam is not None:
        lam = _number(lam, "lam", where)
        if not method.endswith("ecsq"):
            raise InvalidArgumentError(f"{where}: 'lam' is ECSQ's parameter, not {method!r}'s")
        if lam < 0:
            raise InvalidArgumentError(f"{where}: 'lam' must be >= 0, got {lam}")

    unified = raw.get("unified", False)
    if not isinstance(unified, bool):
        raise InvalidArgumentError(f"{where}: 'unified' must be True or False, got {unified!r}")
    encoding = raw.get("encoding", "auto")
    if not isinstance(encoding, str) or (encodings is not None and encoding not in encodings):
        known = ", ".join(encodings) if encodings is not None else \
            "auto, smallest, fastest, dense, csc, im, ham, sham"
        raise InvalidArgumentError(f"{where}: unknown encoding {encoding!r} (known: {known})")
    seed = _number(raw.get("seed", 0), "seed", where, int)
    if seed < 0:
        raise InvalidArgumentError(f"{where}: 'seed' must be >= 0, got {seed}")
    options = raw.get("options", {})
    if not isinstance(options, dict) or any(not isinstance(o, str) for o in options):
        raise InvalidArgumentError(f"{where}: 'options' must be a dict of keyword arguments")
    try:
        json.dumps(options)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{where}: 'options' must hold JSON values (it travels in the file)") from None
    granularity = raw.get("granularity", "tensor")
    if granularity not in ("tensor", "channel") and (
            isinstance(granularity, bool) or not isinstance(granularity, int) or granularity < 1):
        raise InvalidArgumentError(f"{where}: 'granularity' must be 'tensor', 'channel' or a positive int "
                                   f"(rows per scale), got {granularity!r}")
    if granularity != "tensor" and method in ("none", "prune"):
        raise InvalidArgumentError(f"{where}: 'granularity' needs a quantizer, not method {method!r}")
    if "granularity" in options:
        raise InvalidArgumentError(f"{where}: give 'granularity' as a rule key, not in 'options'")
    bias = raw.get("bias")
    if bias is not None:
        if (not isinstance(bias, (list, tuple)) or not bias
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) for b in bias)):
            raise InvalidArgumentError(f"{where}: 'bias' must be a non-empty list of finite numbers")
        if not patterns:
            raise InvalidArgumentError(f"{where}: 'bias' needs 'match' naming the one layer it belongs to")
        bias = tuple(float(b) for b in bias)
    scale = raw.get("scale")
    if scale is not None:
        scale = _number(scale, "scale", where)
        if not (0 < scale <= float(np.finfo(np.float32).max) and float(np.float32(scale)) > 0):
            raise InvalidArgumentError(f"{where}: 'scale' must be a finite number > 0 (as float32), got {scale!r}")
        if method in ("none", "prune"):
            raise InvalidArgumentError(f"{where}: 'scale' multiplies a codebook: it needs a quantizer, "
                                       f"not method {method!r}")
    return Rule(index, patterns, types, method, k, prune, unified, encoding, seed, lam, dict(options),
                granularity, bias, scale)


def parse_recipe(recipe, encodings=None) -> list:
    """Validate a recipe (dict, list of dicts, or method name) into a list of `Rule`s.

    `encodings`: the encoding names to accept (None: accept any string; the encoder checks later).
    Raises InvalidArgumentError naming the rule and the key at fault.
    """
    if isinstance(recipe, (dict, str)):
        raws = [recipe]
    elif isinstance(recipe, (list, tuple)):
        raws = list(recipe)
    else:
        raise InvalidArgumentError(f"a recipe is a dict, a list of dicts or a method name, got {type(recipe).__name__}")
    if not raws:
        raise InvalidArgumentError("the recipe has no rule")
    return [_rule(raw, i, encodings) for i, raw in enumerate(raws)]


def recipe_json(rules) -> str:
    """The normalised recipe as a JSON string (stored in the .dnnz metadata under "pydnnz.recipe")."""
    return json.dumps([r.to_json() for r in rules], sort_keys=True)
