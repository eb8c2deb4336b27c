"""The `dnnz` command line: compress, info, verify, convert, bench, demo.

Exit codes: 0 success, 1 bad data (a corrupt, inconsistent or uncompressible file, a failed
verification), 2 a usage error (bad option or recipe, missing or unsupported file, refusing to
overwrite). Errors are one line on stderr that names the file and what is wrong. Outputs are written atomically: a failed
run leaves no partial output file, and nothing is overwritten without --force.
"""
from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._format import human_size as _human, table as _table, value_entropy_bits as _entropy_bits
from .errors import CorruptDataError, DnnzError, InvalidArgumentError, UnsupportedError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command-line mistake: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse prints usage too; keep it short)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------- helpers
def _note_skipped(src, names) -> None:
    """One stderr line when a checkpoint held entries that are not tensors (not converted)."""
    if names:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        print(f"note: {src}: {len(names)} entries that are not tensors were left out ({shown})", file=sys.stderr)


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory")


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")


# --------------------------------------------------------------------------- compress
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
    from .compress import compress_weights

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
    from ._progress import progress_bar
    from .compress._tensors import in_source_dtype
    from .container import save_file
    from .convert import SKIPPED_KEY, format_of, read_tensors
    from .encodings import encode, encodings
    from .encodings._speed import POLICIES

    from .shards import cmd_compress_sharded, wants_streaming

    if getattr(args, "max_memory", None) is not None:  # an option value: a usage error (exit 2), not data
        from .shards import parse_size

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
    if args.prune is not None and not 0 <= args.prune < 100:
        raise UsageError(f"--prune {args.prune}: must be a percentage in [0, 100)")
    if args.k < 2:
        raise UsageError(f"--k {args.k}: must be at least 2")
    if args.encoding not in POLICIES and args.encoding not in encodings():
        raise UsageError(f"--encoding {args.encoding}: unknown (choose a policy: {', '.join(POLICIES)}; "
                         f"or an encoding: {', '.join(encodings())})")
    raw_rules = _recipe_rules(args)
    rules = None
    if raw_rules is not None:
        try:
            from .torch._recipe import parse_recipe
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
    elif "pydnnz.onnx_weights" in metadata:  # ONNX: the initializers feeding Conv/Gemm/MatMul
        weights = set(json.loads(metadata.pop("pydnnz.onnx_weights")))
        chosen = [k for k in tensors if k in weights and k in candidates]
        candidates = {k: v for k, v in candidates.items() if k in weights}
    elif args.auto:  # the embedding tables count in the file too
        chosen = [k for k, v in candidates.items()
                  if not any(fnmatch.fnmatch(k.lower(), pat) for pat in EMBEDDING_OR_NORM[1:])]
    else:
        chosen = [k for k, v in tensors.items() if default_layer_selection(k, v)]
    metadata.pop("pydnnz.onnx_weights", None)
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
    lossy = _lossy_by_rule(rules, layers, tensors) if rules is not None else {}
    auto = None
    if args.auto:  # data-free: weight-space error only, a heuristic (see pydnnz.compress.allocate)
        if rules is not None:
            raise UsageError("--auto chooses the method and its parameters: drop --quantize/--prune/--rule/--recipe")
        if args.budget is None or not args.budget >= 0:
            raise UsageError("--auto needs --budget B >= 0: the mean relative squared error of the weights "
                             "(e.g. 0.002)")
        from .compress.allocate import data_free_lossy

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


# --------------------------------------------------------------------------- info
_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
             "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8}


def tensor_report(name, info, tensor=None) -> dict:
    """Per-tensor facts for `dnnz info` from the header (`info`: ``safe_open(...).info(name)``):
    shape, dtype, encoding, stored bytes, decoded bytes, bits/weight, psi. Nothing is decoded;
    with `tensor` (the loaded tensor) the order-0 entropy bound is added, which needs the values."""
    shape = [int(d) for d in info["shape"]]
    n = int(np.prod(shape, dtype=object))
    dtype = info.get("source_dtype", info["dtype"])  # an encoded float16/bfloat16 layer decodes to it
    nbytes = int(info["nbytes"])
    dense = n * _ITEMSIZE.get(dtype, 4)
    rep = {
        "name": name,
        "shape": shape,
        "dtype": dtype,
        "encoding": info["encoding"],
        "bytes": nbytes,
        "decoded_bytes": dense,
        "bits_per_weight": (8 * nbytes / n) if n else 0.0,
        "psi": nbytes / dense if dense else 0.0,
        "speed": _speed_class(info),
    }
    if tensor is not None:
        values = np.asarray(tensor) if isinstance(tensor, np.ndarray) or not hasattr(tensor, "decode") \
            else tensor.decode()
        h = _entropy_bits(values)
        rep["entropy_bits_per_weight"] = h
        rep["entropy_bound_bytes"] = n * h / 8
    return rep


def _file_reports(path: Path, entropy: bool):
    from .container import safe_open

    with safe_open(path) as f:
        reports = [tensor_report(k, f.info(k), f.get(k) if entropy else None) for k in f.keys()]
        metadata = dict(f.metadata() or {})
    total = sum(r["bytes"] for r in reports)
    dense = sum(r["decoded_bytes"] for r in reports)
    summary = {"file": str(path), "file_bytes": path.stat().st_size, "tensors": len(reports),
               "encoded_tensors": sum(r["encoding"] != "raw" for r in reports),
               "payload_bytes": int(total), "dense_bytes": int(dense),
               "largest_decoded_bytes": max((r["decoded_bytes"] for r in reports), default=0),
               "psi": float(total / dense) if dense else 0.0}
    return summary, metadata, reports


def _speed_class(info):
    """Expected batch-1 dot product speed class of a stored tensor, from its header
    (pydnnz/encodings/_speed.py); "-" for a raw tensor."""
    if info["encoding"] == "raw":
        return "-"
    from .encodings._speed import header_ratio, speed_class

    return speed_class(header_ratio(info["encoding"], info["shape"], info.get("params") or {}, int(info["nbytes"])))


def cmd_info(args) -> int:
    paths = [Path(p) for p in args.file]
    for path in paths:
        _check_input(path)
    if args.max_decoded_bytes is not None:
        from .runtime import set_max_decoded_bytes
        set_max_decoded_bytes(args.max_decoded_bytes)
    if args.summary:  # one line per file, from the headers alone
        out = [_file_reports(p, False)[0] for p in paths]
        if args.json:
            print(json.dumps(out, indent=2))
            return EXIT_OK
        rows = [[s["file"], s["tensors"], s["encoded_tensors"], _human(s["file_bytes"]), _human(s["payload_bytes"]),
                 _human(s["dense_bytes"]), _human(s["largest_decoded_bytes"]), f"{s['psi']:.4f}"] for s in out]
        print(_table(rows, ["file", "tensors", "encoded", "size", "payload", "decoded", "largest", "psi"]))
        return EXIT_OK
    if len(paths) != 1:
        raise UsageError("give one FILE, or several with --summary")
    path = paths[0]
    summary, metadata, reports = _file_reports(path, args.entropy)
    if args.json:
        print(json.dumps({"summary": summary, "metadata": metadata, "tensors": reports}, indent=2))
        return EXIT_OK
    headers = ["tensor", "shape", "dtype", "encoding", "bytes", "decoded", "bits/w", "psi"]
    rows = [[r["name"], "x".join(map(str, r["shape"])), r["dtype"], r["encoding"], r["bytes"],
             _human(r["decoded_bytes"]), f"{r['bits_per_weight']:.3f}", f"{r['psi']:.4f}", r["speed"]]
            for r in reports]
    headers.append("speed")
    if args.entropy:
        headers.insert(7, "entropy B")
        for row, r in zip(rows, reports):
            row.insert(7, f"{r['entropy_bound_bytes']:.0f}")
    print(_table(rows, headers))
    print(f"\n{path}: {len(reports)} tensors, file {_human(summary['file_bytes'])}, "
          f"payload {_human(summary['payload_bytes'])} vs dense {_human(summary['dense_bytes'])} "
          f"(psi {summary['psi']:.4f})")
    for k, v in metadata.items():
        print(f"  {k}: {v if len(v) < 120 else v[:117] + '...'}")
    return EXIT_OK


# --------------------------------------------------------------------------- verify
def cmd_verify(args) -> int:
    from .container import verify

    path = Path(args.file)
    _check_input(path)
    verify(path, max_decoded_bytes=args.max_decoded_bytes)
    print(f"{path}: OK")
    return EXIT_OK


# --------------------------------------------------------------------------- convert
def cmd_convert(args) -> int:
    from .convert import convert, format_of

    from .shards import cmd_convert_sharded, wants_streaming

    if wants_streaming(args):  # a sharded checkpoint in or out: tensor by tensor (pydnnz.shards)
        return cmd_convert_sharded(args)
    src, dst = Path(args.input), Path(args.output)
    _check_input(src)
    format_of(src)
    format_of(dst)
    _check_output(dst, args.force)
    if format_of(dst) == "onnx" and args.template is None:
        raise UsageError(f"{dst}: writing ONNX needs the original model: --template ORIGINAL.onnx")
    if args.max_decoded_bytes is not None:
        from .runtime import set_max_decoded_bytes
        set_max_decoded_bytes(args.max_decoded_bytes)
    if args.template is not None:
        _check_input(Path(args.template))
    summary = convert(src, dst, force=True, template=args.template)
    _note_skipped(src, summary["skipped"])
    print(f"{src} -> {dst}: {summary['tensors']} tensors, {_human(summary['bytes_in'])} -> {_human(summary['bytes_out'])}")
    return EXIT_OK


# --------------------------------------------------------------------------- bench
def _quick_matrices(seed=0):
    """Synthetic layers for `dnnz bench --quick`: 1024x1024, k=32 Laplacian codebook; 90% pruned variant."""
    from .encodings import encode, encodings

    rng = np.random.default_rng(seed)
    codebook = np.sort(rng.laplace(0, 0.05, 32).astype(np.float32))
    idx = np.clip(np.round(rng.laplace(16, 4, (1024, 1024))), 0, 31).astype(np.int64)
    w = codebook[idx]
    pruned = w.copy()
    pruned[rng.random(w.shape) < 0.9] = 0.0
    out = {}
    for label, m in (("1024x1024 k=32", w), ("1024x1024 p=90% k=32", pruned)):
        for name in encodings():
            try:
                out[f"{label} [{name}]"] = encode(m, encoding=name)
            except DnnzError:  # an encoding that cannot hold this matrix (e.g. im4 with k > 16)
                continue
    return out


def cmd_bench(args) -> int:
    from ._timing import best_time

    if args.quick == bool(args.file):
        raise UsageError("give either FILE or --quick")
    if args.quick:
        layers = _quick_matrices()
    else:
        from .container import safe_open

        path = Path(args.file)
        _check_input(path)
        with safe_open(path) as f:
            layers = {k: f.get(k) for k in f.keys()}
        layers = {k: v for k, v in layers.items() if not isinstance(v, np.ndarray)}
        if not layers:
            raise UsageError(f"{path}: holds no compressed tensor to benchmark")
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    from . import cpu_path

    batches = args.batch or [1, 8, 128]
    records = []
    rng = np.random.default_rng(1)
    from ._progress import progress_bar

    for name, em in progress_bar(list(layers.items()), desc="bench", unit="layer"):
        dense = em.decode(dtype=np.float32).reshape(em.matrix_shape)
        n_in = dense.shape[1]
        for b in batches:
            x = rng.standard_normal((b, n_in), dtype=np.float32)
            t_dnnz = best_time(lambda: em.matmul(x))
            t_np = best_time(lambda: x @ dense.T)
            rec = {"tensor": name, "encoding": em.encoding, "shape": list(em.matrix_shape), "batch": b,
                   "bytes": int(em.nbytes), "dense_bytes": int(dense.nbytes), "cpu_path": cpu_path(),
                   "pydnnz_s": t_dnnz, "numpy_s": t_np, "ratio_numpy": t_dnnz / t_np}
            if torch is not None:
                wt, xt = torch.from_numpy(dense), torch.from_numpy(x)
                with torch.inference_mode():
                    rec["torch_s"] = best_time(lambda: torch.nn.functional.linear(xt, wt))
                rec["ratio_torch"] = t_dnnz / rec["torch_s"]
            records.append(rec)
    if args.json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    rows = [[r["tensor"], r["encoding"], r["batch"], r["bytes"], f"{r['pydnnz_s'] * 1e6:.1f}",
             f"{r['numpy_s'] * 1e6:.1f}", f"{r['ratio_numpy']:.2f}x",
             f"{r['ratio_torch']:.2f}x" if "ratio_torch" in r else "-"] for r in records]
    print(_table(rows, ["tensor", "encoding", "batch", "bytes", "pydnnz us", "numpy us", "vs numpy", "vs torch"]))
    print(f"\ncpu path: {cpu_path()}; times are best-of-N in this run; ratio < 1 means pydnnz is faster")
    return EXIT_OK


# --------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(as_json=args.json, keep=args.keep)


# --------------------------------------------------------------------------- parser
def _limit_option(p) -> None:
    p.add_argument("--max-decoded-bytes", metavar="SIZE",
                   help="largest tensor to decode, e.g. 16G (default 4G or $DNNZ_MAX_DECODED_BYTES); "
                        "a larger one fails with a one-line error")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dnnz", description="Compress, inspect, verify and convert neural-network weight files.")
    p.add_argument("--version", action="version", version=f"pydnnz {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from .encodings import encodings

    c = sub.add_parser(
        "compress", help="compress a weight file into a .dnnz file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress the weights of a checkpoint: an optional lossy step (pruning, quantization), "
                    "then a lossless encoding per tensor with dot products computed from it.",
        epilog="methods (--quantize, --rule, recipes):\n"
               "  cws   k-means weight sharing          pws   probabilistic quantization\n"
               "  uq    uniform quantization            ecsq  entropy-constrained quantization\n"
               "  prune magnitude pruning alone         pr_X  pruning, then X;  none  leave the layer as is\n"
               f"encodings (--encoding): policies auto (default: the smallest within 1.5x of the fastest's estimated speed), smallest, fastest; or one of {', '.join(encodings())}\n"
               "  (spec/encodings.md; `dnnz bench` measures their dot-product speed)\n"
               "recipe files (--recipe): JSON or TOML, the rules of pydnnz.torch.compress_model, e.g.\n"
               '  [{"match": "head*", "method": "none"}, {"type": "conv", "method": "uq", "k": 256},\n'
               '   {"method": "cws", "prune": 90, "k": 32}]\n'
               "layer types for tensor files: 2-D -> Linear ('embed' in the name -> Embedding), 3-D -> Conv1d, "
               "4-D+ -> Conv2d")
    c.add_argument("input", metavar="IN", help=".safetensors, PyTorch state dict (.pt/.pth/.bin), .npz, .onnx "
                   "or Keras .h5/.weights.h5; or a sharded checkpoint (its folder or *.index.json), read tensor "
                   "by tensor")
    c.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the .dnnz file to write, or a folder for sharded output (+ model.dnnz.index.json)")
    c.add_argument("--prune", type=float, metavar="P", help="prune the P%% smallest-magnitude weights (per layer, "
                                                            "or over all of them with --prune-scope global)")
    c.add_argument("--prune-scope", choices=["layer", "global"], default="layer",
                   help="one pruning threshold per layer (default) or one over every selected layer")
    c.add_argument("--quantize", choices=["cws", "pws", "uq", "ecsq"], help="weight sharing / quantization method")
    c.add_argument("--k", type=int, default=32, help="codebook size for --quantize (default 32)")
    c.add_argument("--encoding", default="auto",
                   help="lossless encoding of each layer, or a policy: auto (default: the smallest within "
                        f"1.5x of the fastest's estimated speed), smallest, fastest; encodings: {', '.join(encodings())}")
    c.add_argument("--layers", metavar="GLOB", action="append",
                   help="compress only tensors whose name matches (repeatable), embeddings included; default: "
                        "every float tensor with 2+ dimensions except embeddings and norms")
    c.add_argument("--keep", metavar="GLOB", action="append",
                   help="leave matching layers out of the lossy step (e.g. the output layer; repeatable)")
    c.add_argument("--rule", metavar="GLOB=METHOD[,k=N][,prune=P][,encoding=E][,unified]", action="append",
                   help="a per-glob rule, tried before the --quantize/--prune one (repeatable; first match wins)")
    c.add_argument("--recipe", metavar="FILE", help="the rules from a JSON or TOML file (see below)")
    c.add_argument("--unified", action="store_true", help="one codebook per layer type instead of per layer")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--auto", action="store_true",
                   help="data-free automatic choice per tensor (RD quantizer, UQ or dense) of the fewest "
                        "bytes within --budget; a weight-space heuristic, for a metric budget use "
                        "pydnnz.torch.auto_compress")
    c.add_argument("--budget", type=float, metavar="B",
                   help="with --auto: the mean relative squared error of the weights, ||W-Q(W)||^2/||W||^2 "
                        "averaged over tensors (e.g. 0.002)")
    c.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    c.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    c.add_argument("--workers", type=int, metavar="N", help="compress N tensors at once in N processes "
                   "(default: all cores when streaming); the output bytes do not depend on N")
    c.add_argument("--ray", nargs="?", const="local", default=False, metavar="ADDRESS",
                   help="run the tensors on a Ray cluster (ADDRESS, e.g. auto or ray://host:10001; "
                        "none: a local Ray instance); needs pydnnz[ray]")
    c.add_argument("--max-memory", metavar="SIZE", help="memory the tensors in flight may use together "
                   "when streaming, e.g. 2G (default: half the RAM); fewer big tensors run at once")
    c.set_defaults(func=cmd_compress)

    i = sub.add_parser("info", help="per-tensor shape, encoding, bytes, decoded size, bits/weight, psi "
                                    "(from the header: nothing is decoded)")
    i.add_argument("file", metavar="FILE", nargs="+")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--summary", action="store_true", help="one line per FILE (several allowed), from the headers")
    i.add_argument("--entropy", action="store_true",
                   help="also the order-0 entropy bound of each tensor (decodes every tensor)")
    _limit_option(i)
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="check every checksum and structure; exit 0 when all pass, 1 otherwise")
    v.add_argument("file", metavar="FILE")
    _limit_option(v)
    v.set_defaults(func=cmd_verify)

    cv = sub.add_parser("convert", help="convert between .dnnz, .safetensors, .pt/.pth, .npz, .onnx "
                                         "(and from Keras .h5)")
    cv.add_argument("input", metavar="IN")
    cv.add_argument("output", metavar="OUT")
    cv.add_argument("--template", metavar="MODEL.onnx",
                    help="writing .onnx: the original model, whose graph gets the decoded weights")
    cv.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    _limit_option(cv)
    cv.set_defaults(func=cmd_convert)

    b = sub.add_parser("bench", help="dot-product speed from the compressed form vs dense, same run")
    b.add_argument("file", metavar="FILE", nargs="?")
    b.add_argument("--quick", action="store_true", help="synthetic matrices instead of a file")
    b.add_argument("--json", action="store_true")
    b.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 8, 128)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="compress the bundled DeepDTA/DAVIS model and print the table")
    d.add_argument("--json", action="store_true")
    d.add_argument("--keep", metavar="DIR", help="keep the .dnnz files in DIR")
    d.set_defaults(func=cmd_demo)
    return p


_ENV_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EFBIG: "file too large for this file system; write to another file system",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system; write elsewhere",
}


def environment_error(exc: OSError) -> str:
    """One line for an error of the environment, naming the file (outputs are atomic: nothing
    was changed at the destination)."""
    what = _ENV_HINTS.get(exc.errno) or (exc.strerror or str(exc))
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{what}{f' ({code})' if code else ''}"


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    prefix = f"dnnz {args.command}"
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, FileExistsError) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the environment: disk full, file too large, permission, read-only folder
        print(f"{prefix}: {environment_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except InvalidArgumentError as exc:  # unsupported file types are usage errors; the rest is data
        print(f"{prefix}: {exc}", file=sys.stderr)
        from .convert import FileFormatError

        return EXIT_USAGE if isinstance(exc, FileFormatError) else EXIT_FAILED
    except DnnzError as exc:  # corrupt files, unsupported versions or contents, failed checks
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in pydnnz: still one line, the traceback on request
        if os.environ.get("DNNZ_DEBUG"):
            raise
        print(f"{prefix}: internal error ({type(exc).__name__}: {exc}); "
              "rerun with DNNZ_DEBUG=1 for the traceback and please report it", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
