"""`dnnz compress`: the layer selection, recipes (--recipe, --rule, --keep), the lossy step, then
a lossless encoding per tensor into one .dnnz file (sharded input goes to pydnnz.shards)."""
from __future__ import annotations

import fnmatch
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .._format import human_size as _human, table as _table
from ..errors import DnnzError, InvalidArgumentError, KNotSmallerWarning
from ._common import EXIT_OK, UsageError, _check_input, _check_output, _note_skipped, check_lossy_options


#: Metadata keys by which the ONNX and TFLite readers name the tensors that feed weight inputs.
FOREIGN_WEIGHTS = ("pydnnz.onnx_weights", "pydnnz.tflite_weights")
EMBEDDING_OR_NORM = ("*embed*", "*norm*", "*bn*", "*.ln*", "*layernorm*")


def _is_float(array) -> bool:
    """float16, bfloat16 (ml_dtypes), float32, and float64 whose values float32 holds exactly."""
    dt = array.dtype
    if dt.name == "bfloat16" or dt in (np.float16, np.float32):
        return True
    return dt == np.float64 and bool(np.array_equal(array.astype(np.float32), array))


def default_layer_selection(name: str, array: np.ndarray) -> bool:
    """Compress by default: float tensors with 2+ dimensions that are not embeddings or norms
    (float64 only when float32 holds it exactly: encodings store float32)."""
    return (array.ndim >= 2 and array.size > 0 and _is_float(array)
            and not any(fnmatch.fnmatch(name.lower(), pat) for pat in EMBEDDING_OR_NORM))


def _source_dtype(array) -> str:
    return array.dtype.name if array.dtype.name in ("float16", "bfloat16", "float64") else "float32"


def _layer_type(name: str, array) -> str:
    """The recipe layer type of a weight in a tensor file, from its name and rank."""
    if "embed" in name.lower():
        return "Embedding"
    return {2: "Linear", 3: "Conv1d"}.get(array.ndim, "Conv2d")


def _layer_name(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def load_recipe_file(path) -> object:
    """A recipe from a .json or .toml file: the same rules as ``pydnnz.torch.compress_model``.

    JSON: a rule (object), a list of rules, or a method name. TOML: ``[[rules]]`` tables (or
    ``rules = [...]``), or the keys of one rule at the top level.
    """
    path = Path(path)
    _check_input(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            try:
                import tomli as tomllib
            except ImportError:
                raise UsageError(f"--recipe {path}: reading TOML needs Python 3.11+ or the tomli "
                                 "package (pip install tomli); or write the recipe as JSON") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"--recipe {path}: not valid TOML ({exc})") from None
        return doc["rules"] if set(doc) == {"rules"} else doc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--recipe {path}: not valid JSON ({exc})") from None


def _rule_option(text: str) -> dict:
    """--rule 'GLOB=METHOD[,k=N][,prune=P][,encoding=E][,unified]' as a recipe rule."""
    glob, sep, spec = text.partition("=")
    if not sep or not glob or not spec:
        raise UsageError(f"--rule {text!r}: expected GLOB=METHOD[,k=N][,prune=P][,encoding=E][,unified]")
    method, *opts = spec.split(",")
    rule = {"match": glob, "method": method}
    for o in opts:
        key, sep, value = o.partition("=")
        if key == "unified" and not sep:
            rule["unified"] = True
        elif key in ("k", "seed") and sep:
            try:
                rule[key] = int(value)
            except ValueError:
                raise UsageError(f"--rule {text!r}: {key} must be an integer, got {value!r}") from None
        elif key in ("prune", "lam") and sep:
            try:
                rule[key] = float(value)
            except ValueError:
                raise UsageError(f"--rule {text!r}: {key} must be a number, got {value!r}") from None
        elif key == "encoding" and sep:
            rule[key] = value
        else:
            raise UsageError(f"--rule {text!r}: unknown option {o!r} (k=, prune=, encoding=, seed=, lam=, unified)")
    return rule


def _recipe_rules(args):
    """The recipe the options describe (a list of raw rules), or None for a lossless-only run."""
    keep = [{"match": g, "method": "none"} for g in (args.keep or [])]
    if args.recipe:
        if args.quantize or args.prune is not None or args.rule:
            raise UsageError("--recipe already says the methods: give it without --quantize, --prune or --rule")
        raw = load_recipe_file(args.recipe)
        raw = raw if isinstance(raw, list) else [raw]
        return keep + raw
    rules = [_rule_option(r) for r in (args.rule or [])]
    if args.quantize or args.prune:
        main = {"method": args.quantize or "prune", "unified": args.unified, "seed": args.seed,
                "encoding": args.encoding}
        if args.quantize:
            main["k"] = args.k
        if args.prune:
            main["prune"] = args.prune
        if args.layers:
            main["match"] = list(args.layers)
        rules.append(main)
    if not rules:
        return None
    if args.prune_scope == "global":
        for r in rules:
            if r.get("method") != "none" and (r.get("prune") or r.get("method", "").startswith(("pr", "prune"))):
                r.setdefault("options", {}).setdefault("prune_scope", "global")
    return keep + rules


def _lossy_by_rule(rules, layers, tensors):
    """{tensor: lossy result} with each rule's layers compressed together (unified codebooks and a
    global pruning threshold never cross rules), as compress_model does."""
    from ..compress import compress_weights

    out = {}
    for rule in rules:
        members = [n for n, (r, _) in layers.items() if r is rule and r.method != "none"]
        if not members:
            continue
        kinds = {n: {"Linear": "dense", "Embedding": "embedding"}.get(layers[n][1], "conv") for n in members}
        method = rule.method[3:] if rule.method.startswith("pr_") else rule.method
        kwargs = dict(rule.options)
        if rule.lam is not None:
            kwargs["lam"] = rule.lam
        result = compress_weights({n: np.asarray(tensors[n], np.float32) for n in members}, method,
                                  k=rule.k, prune=rule.prune, unified=rule.unified, layer_types=kinds,
                                  types=tuple(sorted(set(kinds.values()))), seed=rule.seed, **kwargs)
        out.update({n: (result[n], rule) for n in members})
    return out


def cmd_compress(args) -> int:
    from .._progress import progress_bar
    from ..compress._tensors import in_source_dtype
    from ..container import save_file
    from ..convert import SKIPPED_KEY, format_of, read_tensors
    from ..encodings import encode, encodings
    from ..encodings._speed import POLICIES

    from ..shards import cmd_compress_sharded, wants_streaming

    if getattr(args, "max_memory", None) is not None:  # an option value: a usage error (exit 2), not data
        from ..shards import parse_size

        try:
            parse_size(args.max_memory)
        except InvalidArgumentError as exc:
            raise UsageError(f"--max-memory: {exc}") from None
    if wants_streaming(args):  # sharded checkpoints, --workers, --ray: tensor by tensor (pydnnz.shards)
        if args.recipe or args.rule or args.keep or args.prune_scope == "global":
            raise UsageError("--recipe, --rule, --keep and --prune-scope global work on single-file compress "
                             "only (not with sharded input, --workers or --ray yet)")
        return cmd_compress_sharded(args)
    src, dst = Path(args.input), Path(args.output)
    _check_input(src)
    format_of(src)
    if format_of(dst) != "dnnz":
        raise UsageError(f"{dst}: the output of compress must be a .dnnz file")
    _check_output(dst, args.force)
    check_lossy_options(args)
    raw_rules = _recipe_rules(args)
    rules = None
    if raw_rules is not None:
        try:
            from ..torch._recipe import parse_recipe
        except ImportError as exc:
            raise UsageError(f"recipes need PyTorch installed ({exc})") from None
        try:
            rules = parse_recipe(raw_rules, tuple(POLICIES) + encodings())
        except InvalidArgumentError as exc:
            raise UsageError(str(exc)) from None
    t0 = time.perf_counter()
    tensors, metadata = read_tensors(src)
    _note_skipped(src, json.loads(metadata.get(SKIPPED_KEY, "[]")))
    candidates = {k: v for k, v in tensors.items() if v.ndim >= 2 and v.size and _is_float(v)}
    if args.layers:
        chosen = [k for k in tensors if any(fnmatch.fnmatchcase(k, g) for g in args.layers)]
        if not chosen:
            raise UsageError(f"--layers {' '.join(args.layers)}: matches no tensor of {src}")
        bad = [k for k in chosen if k not in candidates]
        if bad:
            raise UsageError(f"--layers selects {bad[0]!r}, which is not a non-empty float tensor with 2+ dimensions")
    elif any(k in metadata for k in FOREIGN_WEIGHTS):  # ONNX/TFLite: the tensors feeding Conv/Gemm/MatMul...
        weights = set(json.loads(metadata.pop(next(k for k in FOREIGN_WEIGHTS if k in metadata))))
        chosen = [k for k in tensors if k in weights and k in candidates]
        candidates = {k: v for k, v in candidates.items() if k in weights}
    elif args.auto:  # the embedding tables count in the file too
        chosen = [k for k, v in candidates.items()
                  if not any(fnmatch.fnmatch(k.lower(), pat) for pat in EMBEDDING_OR_NORM[1:])]
    else:
        chosen = [k for k, v in tensors.items() if default_layer_selection(k, v)]
    for k in FOREIGN_WEIGHTS:
        metadata.pop(k, None)
    layers = {}  # tensor -> (rule, layer type) for every tensor a rule claims
    if rules is not None:
        claimed = [0] * len(rules)
        for name, v in candidates.items():
            tname = _layer_type(name, v)
            for r in rules:
                if r.matches(_layer_name(name), tname) or r.matches(name, tname):
                    claimed[r.index] += 1
                    layers[name] = (r, tname)
                    break
        for r, n in zip(rules, claimed):
            if n == 0:
                raise UsageError(f"{r.describe()} matches no weight of {src} (float tensors with 2+ "
                                 f"dimensions: {', '.join(list(candidates)[:12]) or 'none'}"
                                 f"{' ...' if len(candidates) > 12 else ''})")
        chosen += [n for n, (r, _) in layers.items() if r.method != "none" and n not in chosen]
    keep = set()
    for g in args.keep or []:
        keep.update(k for k in tensors if fnmatch.fnmatchcase(k, g) or fnmatch.fnmatchcase(_layer_name(k), g))
    with warnings.catch_warnings(record=True) as caught:  # k >= a tensor's weight count: one line each
        warnings.simplefilter("always", KNotSmallerWarning)
        lossy = _lossy_by_rule(rules, layers, tensors) if rules is not None else {}
    for w in caught:
        if issubclass(w.category, KNotSmallerWarning):
            print(f"warning: {src}: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    auto = None
    if args.auto:  # data-free: weight-space error only, a heuristic (see pydnnz.compress.allocate)
        if rules is not None:
            raise UsageError("--auto chooses the method and its parameters: drop --quantize/--prune/--rule/--recipe")
        if args.budget is None or not args.budget >= 0:
            raise UsageError("--auto needs --budget B >= 0: the mean relative squared error of the weights "
                             "(e.g. 0.002)")
        from ..compress.allocate import data_free_lossy

        auto_lossy, auto_rules, err = data_free_lossy({k: np.asarray(tensors[k], np.float32) for k in chosen},
                                                      args.budget)
        lossy = {k: (v, None) for k, v in auto_lossy.items()}
        auto = {"budget": args.budget, "mean_relative_sq_error": err, "rules": auto_rules}
    elif args.budget is not None:
        raise UsageError("--budget goes with --auto")
    out = dict(tensors)
    rows = []
    for name in progress_bar(chosen, desc="encoding", unit="tensor", disable=False if args.progress else None):
        source = _source_dtype(tensors[name])
        value, rule = lossy.get(name, (tensors[name], None))
        if name in lossy:
            value = in_source_dtype(value, source)
        encoding = rule.encoding if rule is not None and rule.encoding != "auto" else args.encoding
        try:
            encoded = encode(value, encoding=encoding, source_dtype=source)
        except DnnzError as exc:  # name the file and the tensor: a checkpoint has hundreds
            raise type(exc)(f"{src}: tensor {name!r}: {exc}") from exc
        raw_bytes = tensors[name].nbytes
        method = rule.method if rule is not None else ("keep" if name in keep else "lossless")
        if encoding == "auto" and encoded.nbytes >= raw_bytes:
            # Encodings store float32: a small or float16/bfloat16 layer can be smaller raw. Keep
            # it raw in its own dtype (with the lossy step's values, if any).
            out[name] = np.asarray(encoded.decode())
            rows.append([name, "x".join(map(str, tensors[name].shape)), source, method, "raw (smallest)",
                         raw_bytes, "1.0000"])
            continue
        out[name] = encoded
        rows.append([name, "x".join(map(str, tensors[name].shape)), source, method, encoded.encoding,
                     encoded.nbytes, f"{encoded.nbytes / raw_bytes:.4f}"])
    recipe = {"prune": args.prune, "quantize": args.quantize, "k": args.k if args.quantize else None,
              "encoding": args.encoding, "unified": args.unified, "seed": args.seed, "layers": chosen}
    if rules is not None:
        recipe["rules"] = [r.to_json() for r in rules]
    if auto is not None:
        recipe = {"auto": auto, "encoding": args.encoding, "layers": chosen}
    metadata = dict(metadata)
    metadata.update({"pydnnz.recipe": json.dumps(recipe), "pydnnz.source": src.name})
    save_file(out, dst, metadata=metadata)
    print(_table(rows, ["tensor", "shape", "dtype", "method", "encoding", "bytes", "psi"]))
    dense_left = [k for k, v in tensors.items() if k in candidates and k not in chosen]
    if dense_left:
        print(f"\nleft raw (not selected): {len(dense_left)} float tensors with 2+ dimensions, e.g. "
              f"{', '.join(dense_left[:5])}{' ...' if len(dense_left) > 5 else ''}")
    print(f"\n{src} ({_human(src.stat().st_size)}) -> {dst} ({_human(dst.stat().st_size)}), "
          f"{len(chosen)} tensors compressed in {time.perf_counter() - t0:.1f} s")
    return EXIT_OK

