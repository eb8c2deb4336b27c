"""`dnnz info` and `dnnz verify`: per-tensor facts from the headers, and the checksum check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._format import human_size as _human, table as _table, value_entropy_bits as _entropy_bits
from ._common import EXIT_OK, UsageError, _check_input


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
    from .._progress import progress_bar
    from ..container import safe_open

    with safe_open(path) as f:  # --entropy decodes every tensor: long work, a progress bar on a terminal
        reports = [tensor_report(k, f.info(k), f.get(k) if entropy else None)
                   for k in progress_bar(list(f.keys()), desc="info", unit="tensor", disable=None if entropy else True)]
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
    from ..encodings._speed import header_ratio, speed_class

    return speed_class(header_ratio(info["encoding"], info["shape"], info.get("params") or {}, int(info["nbytes"])))


def cmd_info(args) -> int:
    paths = [Path(p) for p in args.file]
    for path in paths:
        _check_input(path)
    if args.max_decoded_bytes is not None:
        from ..runtime import set_max_decoded_bytes
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
    from ..container import verify

    path = Path(args.file)
    _check_input(path)
    verify(path, max_decoded_bytes=args.max_decoded_bytes)
    print(f"{path}: OK")
    return EXIT_OK

