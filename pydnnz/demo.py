"""`dnnz demo`: compress the bundled DeepDTA model (DAVIS) and print what it costs and keeps.

For each recipe: compress the float32 baseline (lossy step + lossless encoding), save the .dnnz
file, load it into a freshly built model (compressed layers run from the memory-mapped bytes),
predict the DAVIS test fold and compare with the baseline: file size, ratio, MSE, CI, time.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

# Recipes that keep DAVIS accuracy without retraining (pruning the dense layers by 60 % or more
# without fine-tuning costs DAVIS several times its MSE; see bench/study.py for retrained runs).
CONV_CWS32 = {"type": "conv", "method": "cws", "k": 32, "unified": True}

#: The recipe pydnnz.torch.auto_compress found for this model under a test-MSE budget of +0.003
#: (`python -m bench.auto`, bench/results/auto_recipe_davis.json): per-layer RDQ steps and the
#: bias-corrected biases. Replayed here with compress_model, bit for bit.
AUTO_RECIPE_FILE = Path(__file__).resolve().parent / "data" / "deepdta_davis_auto_recipe.json"


def _auto_recipe():
    with open(AUTO_RECIPE_FILE, encoding="utf-8") as f:
        return json.load(f)


RECIPES = [
    ("auto_compress recipe (MSE budget +0.003), replayed", _auto_recipe),
    ("uECSQ k=32 (dense) + uCWS k=32 (conv)",
     [{"type": "Linear", "method": "ecsq", "k": 32, "unified": True}, CONV_CWS32]),
    ("uCWS k=32 (dense, conv)",
     [{"type": "Linear", "method": "cws", "k": 32, "unified": True}, CONV_CWS32]),
    ("Pr-uECSQ p=50 k=32 (dense but out) + uCWS k=32 (conv)",
     [{"match": "out", "method": "ecsq", "k": 32},
      {"type": "Linear", "method": "pr_ecsq", "prune": 50, "k": 32, "unified": True}, CONV_CWS32]),
]


def _row(label, path, t0, data, pred, base_bytes, deepdta):
    size = os.path.getsize(path)
    return {"method": label, "file_bytes": size, "ratio": base_bytes / size,
            "mse": deepdta.mse(data.y, pred), "ci": deepdta.concordance_index(data.y, pred),
            "seconds": time.perf_counter() - t0}


def run_demo(as_json=False, keep=None, recipes=RECIPES, out=print) -> int:
    import torch

    from . import torch as pt
    from ._progress import progress_bar
    from .examples import deepdta

    torch.manual_seed(0)
    data = deepdta.load_bundled_davis()
    base_path = deepdta.bundled_model_path()
    base_bytes = os.path.getsize(base_path)
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="dnnz-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    baseline = deepdta.load_model(base_path)
    rows.append(_row("float32 baseline (.safetensors)", base_path, t0, data,
                     deepdta.predict(baseline, data), base_bytes, deepdta))
    try:
        for i, (label, recipe) in enumerate(progress_bar(recipes, desc="recipes")):
            t0 = time.perf_counter()
            # a recipe read from a file is named, not copied, in the metadata: the auto recipe's
            # 2,561 corrected biases would add tens of KiB of JSON to a 430 KiB file
            meta = {"recipe": AUTO_RECIPE_FILE.name if callable(recipe) else json.dumps(recipe), "demo": label}
            if callable(recipe):
                recipe = recipe()
            small = pt.compress_model(baseline, recipe)
            path = workdir / f"deepdta_davis_{i + 1}.dnnz"
            pt.save_model(small, path, metadata=meta)
            loaded = pt.load_model(path, deepdta.build_model())
            rows.append(_row(label, path, t0, data, deepdta.predict(loaded, data), base_bytes, deepdta))
    finally:
        if not keep:
            for p in workdir.glob("*.dnnz"):
                p.unlink()
            workdir.rmdir()
    base = rows[0]
    for r in rows:
        r["delta_mse"] = r["mse"] - base["mse"]
        r["delta_ci"] = r["ci"] - base["ci"]
    if as_json:
        out(json.dumps(rows, indent=2))
        return 0
    from ._format import human_size as _human, table as _table

    table = [[r["method"], _human(r["file_bytes"]), f"{r['ratio']:.1f}x", f"{r['mse']:.4f}",
              f"{r['delta_mse']:+.4f}", f"{r['ci']:.4f}", f"{r['delta_ci']:+.4f}", f"{r['seconds']:.1f}"]
             for r in rows]
    out("DeepDTA on DAVIS, test fold (5,010 pairs), bundled with pydnnz\n")
    out(_table(table, ["method", "file", "vs float32", "MSE", "dMSE", "CI", "dCI", "time s"]))
    out("\ntime = compress + save + load + predict the test fold from the compressed layers")
    return 0
