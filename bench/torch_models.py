"""DeepDTA DAVIS through pydnnz.torch: file size, accuracy, inference time and peak memory.

For each recipe: compress the bundled float32 DAVIS baseline, save the .dnnz, load it into a
fresh model (built on the meta device, so no dense weight is ever allocated) and predict the
test fold. Printed per recipe, all measured in the same run:

- file bytes and the ratio to the float32 safetensors checkpoint;
- test MSE and CI of the float32 model and of the compressed one;
- inference time per 1,000 pairs, dense torch vs pydnnz, both for the whole model (branches
  over the distinct drugs/proteins, then the head, as deepdta.predict does) and for the dense
  head alone (features precomputed), with the ratio pydnnz / torch;
- RSS in separate fresh subprocesses (import, load, predict): the memory held after loading and
  the peak after inference, above the same process's RSS right after `import torch, pydnnz`
  (and the peak again with glibc's mmap threshold pinned at 1 MiB, see rss_child).

Usage: python -m bench.torch_models [--quick] [--json] [--threads N]
(--quick: 1,000 test pairs, fewer repeats; the machine is shared: compare ratios, not times.)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import torch

import pydnnz
import pydnnz.torch as pt
from pydnnz.examples import deepdta

from ._common import best_time as _best_time, emit

ROOT = Path(__file__).resolve().parent.parent

RECIPES = {
    "dense: cws k=32": [{"type": "Linear", "method": "cws", "k": 32}],
    "dense: pr60+cws k=32": [{"type": "Linear", "method": "cws", "k": 32, "prune": 60}],
    "dense: pr90+cws k=32": [{"type": "Linear", "method": "cws", "k": 32, "prune": 90}],
    "dense: pr90+cws k=32, conv: uq k=256": [{"type": "Linear", "method": "cws", "k": 32, "prune": 90},
                                             {"type": "conv", "method": "uq", "k": 256}],
    "dense: pr90+cws k=32, conv: cws k=256": [{"type": "Linear", "method": "cws", "k": 32, "prune": 90},
                                              {"type": "conv", "method": "cws", "k": 256}],
}

SHARED = Path(os.environ.get("DNNZ_SHARED", ROOT.parent / "shared"))
if not (SHARED / "data").is_dir() and Path("/work/shared/data").is_dir():
    SHARED = Path("/work/shared")
# Pr 90% without retraining ruins DeepDTA (the papers retrain): the same recipe again with the
# fine-tuning hook, training the dense head on the DAVIS training folds (features of the frozen
# conv branches precomputed), when the shared data is there.
FINETUNED = ("dense: pr90+cws k=32 + fine-tune", [{"type": "Linear", "method": "cws", "k": 32, "prune": 90}])


def head_trainer(baseline, epochs, seed=0, lr=1e-3):
    """A fine-tuning callable for compress_model: Adam (lr 1e-3) on the head, MSE, DAVIS training folds."""
    train = deepdta.load_dataset(SHARED / "data" / "deepdta" / "davis", "train")
    used_p, inv_p = np.unique(train.protein_index, return_inverse=True)
    with torch.inference_mode():
        fd = baseline.encode_drug(torch.from_numpy(train.drugs))
        fp = torch.cat([baseline.encode_protein(torch.from_numpy(train.proteins[used_p[i:i + 64]]))
                        for i in range(0, len(used_p), 64)])
    fd, fp = fd.clone(), fp.clone()
    di, pi = torch.from_numpy(train.drug_index.astype(np.int64)), torch.from_numpy(inv_p.astype(np.int64))
    y = torch.from_numpy(train.y)

    def train_head(model):
        gen = torch.Generator().manual_seed(seed)
        head = [p for n, p in model.named_parameters() if n.startswith(("fc", "out"))]
        opt = torch.optim.Adam(head, lr=lr)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), 256):
                b = order[i:i + 256]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model.head(fd[di[b]], fp[pi[b]]), y[b])
                loss.backward()
                opt.step()
        model.eval()

    return train_head


# Run in a fresh interpreter: RSS after imports, after loading, and peak after inference (kB).
# The peak is VmHWM (this process's own high-water mark), not ru_maxrss: Linux carries the
# parent's RSS into the child's ru_maxrss when the child is spawned with vfork (as subprocess
# does), which made every child "peak" at least the size of this (growing) parent.
_RSS_CHILD = r"""
import json
import numpy as np, torch, pydnnz, pydnnz.torch as pt
from pydnnz.examples import deepdta
torch.set_num_threads({threads})
def rss(field="VmRSS:"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
data = deepdta.load_bundled_davis().subset(np.arange({n_pairs}))
with torch.device("meta"):  # first use of the meta device and of nn's lazy imports: not the model's cost
    deepdta.build_model()
base = rss()
if {compressed!r}:
    with torch.device("meta"):
        model = deepdta.build_model()
    model = pt.load_model({path!r}, model)
else:
    model = deepdta.load_model({path!r})
loaded = rss()
pred = deepdta.predict(model, data)
print(json.dumps({{"base_kb": base, "loaded_kb": loaded, "peak_kb": rss("VmHWM:"),
                  "sum": float(np.sum(pred))}}))
"""


def rss_child(path, compressed, n_pairs, threads, mmap_threshold=None):
    """RSS figures of a fresh interpreter that loads `path` and predicts. `mmap_threshold` pins
    glibc's mmap threshold (MALLOC_MMAP_THRESHOLD_): by default glibc raises it after freeing
    big blocks, so freed activations stay in the heap and the peak depends on allocation order."""
    code = _RSS_CHILD.format(path=str(path), compressed=compressed, n_pairs=n_pairs,
                             threads=threads)
    env = dict(os.environ)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=ROOT)  # the child imports the pydnnz of this checkout
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_time(fn, repeats, min_time=0.2):
    """Best of `repeats` runs (at least `min_time` seconds in all, at most 50 runs), in seconds."""
    return _best_time(fn, min_runs=repeats, min_seconds=min_time, max_runs=50, warmup=False)


def head_features(model, data):
    with torch.inference_mode():
        d = model.encode_drug(torch.from_numpy(data.drugs[data.drug_index]))
        p = torch.cat([model.encode_protein(torch.from_numpy(data.proteins[data.protein_index[i:i + 64]]))
                       for i in range(0, len(data), 64)])
    return d, p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 test pairs, fewer repeats")
    ap.add_argument("--json", action="store_true", help="print one JSON record per recipe")
    ap.add_argument("--threads", type=int, default=None, help="threads for torch and pydnnz (default: all)")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 3, --quick 1)")
    args = ap.parse_args(argv)

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    if hasattr(pydnnz, "set_num_threads"):
        pydnnz.set_num_threads(threads)
    data = deepdta.load_bundled_davis()
    n_pairs = 1000 if args.quick else len(data)
    data = data.subset(np.arange(n_pairs))
    repeats = 2 if args.quick else 5
    baseline = deepdta.load_model()
    st_path = deepdta.bundled_model_path()
    st_bytes = st_path.stat().st_size

    base_pred = deepdta.predict(baseline, data)
    base_mse, base_ci = deepdta.mse(data.y, base_pred), deepdta.concordance_index(data.y, base_pred)
    t_dense = best_time(lambda: deepdta.predict(baseline, data), repeats)
    head_data = data.subset(np.arange(min(1000, n_pairs)))
    fd, fp = head_features(baseline, head_data)
    with torch.inference_mode():
        t_head_dense = best_time(lambda: baseline.head(fd, fp), repeats * 4)
    rss_dense = rss_child(st_path, False, n_pairs, threads)
    rss_dense_1m = rss_child(st_path, False, n_pairs, threads, 1 << 20)

    records = []
    tmp = Path(tempfile.mkdtemp(prefix="dnnz-bench-"))
    runs = [(name, recipe, None) for name, recipe in RECIPES.items()]
    if (SHARED / "data" / "deepdta" / "davis").is_dir():
        epochs = args.epochs or (1 if args.quick else 3)
        runs.append((f"{FINETUNED[0]} ({epochs} epoch{'s' * (epochs > 1)})", FINETUNED[1],
                     head_trainer(baseline, epochs)))
    for name, recipe, finetune in runs:
        out = []
        t_compress = _best_time(lambda: out.append(pt.compress_model(baseline, recipe, finetune=finetune)),
                                min_runs=1, min_seconds=0, warmup=False)
        compressed = out[0]
        path = tmp / "model.dnnz"
        pt.save_model(compressed, path)
        with torch.device("meta"):
            fresh = deepdta.build_model()
        model = pt.load_model(path, fresh)
        pred = deepdta.predict(model, data)
        t_comp = best_time(lambda: deepdta.predict(model, data), repeats)
        with torch.inference_mode():
            t_head_comp = best_time(lambda: model.head(fd, fp), repeats * 4)
        rss = rss_child(path, True, n_pairs, threads)
        rss_1m = rss_child(path, True, n_pairs, threads, 1 << 20)
        summary = json.loads(compressed.dnnz_metadata["pydnnz.summary"])
        encodings = sorted({row["encoding"] for row in json.loads(compressed.dnnz_metadata["pydnnz.layers"])})
        rec = {
            "recipe": name, "pairs": n_pairs, "threads": threads,
            "file_bytes": path.stat().st_size, "safetensors_bytes": st_bytes,
            "ratio": path.stat().st_size / st_bytes,
            "psi_dense": summary.get("dense", {}).get("psi"), "psi_conv": summary.get("conv", {}).get("psi"),
            "encodings": encodings,
            "mse_before": base_mse, "mse_after": deepdta.mse(data.y, pred),
            "ci_before": base_ci, "ci_after": deepdta.concordance_index(data.y, pred),
            "ms_per_1000_dense": 1e3 * t_dense / n_pairs * 1000, "ms_per_1000_pydnnz": 1e3 * t_comp / n_pairs * 1000,
            "time_ratio": t_comp / t_dense,
            "head_ms_per_1000_dense": 1e3 * t_head_dense / len(head_data) * 1000,
            "head_ms_per_1000_pydnnz": 1e3 * t_head_comp / len(head_data) * 1000,
            "head_time_ratio": t_head_comp / t_head_dense,
            "rss_loaded_mb_dense": (rss_dense["loaded_kb"] - rss_dense["base_kb"]) / 1024,
            "rss_loaded_mb_pydnnz": (rss["loaded_kb"] - rss["base_kb"]) / 1024,
            "rss_peak_mb_dense": (rss_dense["peak_kb"] - rss_dense["base_kb"]) / 1024,
            "rss_peak_mb_pydnnz": (rss["peak_kb"] - rss["base_kb"]) / 1024,
            "rss_peak_mb_dense_mmap1m": (rss_dense_1m["peak_kb"] - rss_dense_1m["base_kb"]) / 1024,
            "rss_peak_mb_pydnnz_mmap1m": (rss_1m["peak_kb"] - rss_1m["base_kb"]) / 1024,
            "compress_s": t_compress,
        }
        records.append(rec)
        if args.json:
            emit(rec)
    if not args.json:
        print(f"DeepDTA DAVIS, {n_pairs} test pairs, {threads} thread(s), torch {torch.__version__}; "
              f"float32 safetensors: {st_bytes:,} B; RSS in MB above the imports, separate processes")
        cols = ("recipe", "file B", "ratio", "MSE before→after", "CI before→after", "ms/1k pairs torch|pydnnz",
                "head ms/1k torch|pydnnz", "RSS loaded torch|pydnnz", "RSS peak torch|pydnnz", "peak, mmap threshold 1 MiB")
        print(" | ".join(cols))
        for r in records:
            print(f"{r['recipe']} | {r['file_bytes']:,} | {r['ratio']:.4f} | {r['mse_before']:.4f}→{r['mse_after']:.4f}"
                  f" | {r['ci_before']:.4f}→{r['ci_after']:.4f}"
                  f" | {r['ms_per_1000_dense']:.1f}|{r['ms_per_1000_pydnnz']:.1f} ({r['time_ratio']:.2f}×)"
                  f" | {r['head_ms_per_1000_dense']:.2f}|{r['head_ms_per_1000_pydnnz']:.2f} ({r['head_time_ratio']:.2f}×)"
                  f" | {r['rss_loaded_mb_dense']:.1f}|{r['rss_loaded_mb_pydnnz']:.1f}"
                  f" | {r['rss_peak_mb_dense']:.1f}|{r['rss_peak_mb_pydnnz']:.1f}"
                  f" | {r['rss_peak_mb_dense_mmap1m']:.1f}|{r['rss_peak_mb_pydnnz_mmap1m']:.1f}")
    return records


if __name__ == "__main__":
    main()
