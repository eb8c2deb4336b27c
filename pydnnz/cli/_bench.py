"""`dnnz bench` (dot-product speed from the compressed form vs dense, same run) and `dnnz demo`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._format import table as _table
from ..errors import DnnzError
from ._common import EXIT_OK, UsageError, _check_input


def _quick_matrices(seed=0):
    """Synthetic layers for `dnnz bench --quick`: 1024x1024, k=32 Laplacian codebook; 90% pruned variant."""
    from ..encodings import encode, encodings

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
    from .._timing import best_time

    if args.quick == bool(args.file):
        raise UsageError("give either FILE or --quick")
    if args.quick:
        layers = _quick_matrices()
    else:
        from ..container import safe_open

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
    from .. import cpu_path

    batches = args.batch or [1, 8, 128]
    records = []
    rng = np.random.default_rng(1)
    from .._progress import progress_bar

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
    from ..demo import run_demo

    return run_demo(as_json=args.json, keep=args.keep)

