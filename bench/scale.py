"""Scale benchmark: a synthetic sharded bf16 checkpoint compressed tensor by tensor (pydnnz.shards).

    python -m bench.scale                    # default 0.5 GB checkpoint (the issue's target is 12 GB)
    python -m bench.scale --size-gb 12       # the target size (needs ~2x that of disk, and time)
    python -m bench.scale --quick            # 0.1 GB, fewer repeats: a smoke run

It generates an LLM-shaped checkpoint (per layer: q/k/v/o H x H, gate/up I x H, down H x I, two
norms; bf16; Hugging Face shards + model.safetensors.index.json) in a temporary folder, then,
each in a fresh process whose whole process tree is sampled for RSS:

1. `uq` k=16 + encoding auto with 1 worker and with 2 workers (process pool): wall time,
   weights/s, weights/s per core, peak RSS (sum over the tree, and the largest process), and the
   1 -> 2 scaling; the two outputs are compared byte for byte;
2. the same through a local Ray instance with 2 CPUs (when Ray is installed; Ray's start-up is
   timed apart), compared with the pool, bytes compared too;
3. loading the compressed output into a model built on torch.device("meta"): peak RSS against
   the compressed bytes;
4. weights/s of each method (UQ, ECSQ, CWS, Pr-UQ, Pr-ECSQ) on 16 M weights, next to `np.sort` of the
   same array in the same run, and of `encode(..., "auto")` on the UQ result (the other half of
   each compressed tensor's cost);
5. an estimate, stated as one, of the wall time for a 70 B-parameter checkpoint on one 64-core
   machine and on a 4-node Ray cluster.

Times are only comparable within one run (the machine is shared); `--json` prints the records.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- the checkpoint
def layer_shapes(hidden, inter):
    return [("self_attn.q_proj.weight", (hidden, hidden)), ("self_attn.k_proj.weight", (hidden, hidden)),
            ("self_attn.v_proj.weight", (hidden, hidden)), ("self_attn.o_proj.weight", (hidden, hidden)),
            ("mlp.gate_proj.weight", (inter, hidden)), ("mlp.up_proj.weight", (inter, hidden)),
            ("mlp.down_proj.weight", (hidden, inter)),
            ("input_layernorm.weight", (hidden,)), ("post_attention_layernorm.weight", (hidden,))]


def make_checkpoint(folder: Path, size_gb: float, hidden: int, shard_gb: float, seed=0):
    """Write the synthetic checkpoint; returns (n_layers, n_weights in matrices, bytes)."""
    from pydnnz.shards import write_index_safetensors, write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    inter = int(hidden * 2.75) // 64 * 64
    shapes = layer_shapes(hidden, inter)
    per_layer = sum(math.prod(s) for _, s in shapes) * 2
    n_layers = max(2, round(size_gb * 2**30 / per_layer))
    per_shard = max(1, min(n_layers // 2, round(shard_gb * 2**30 / per_layer)))
    n_shards = math.ceil(n_layers / per_shard)
    rng = np.random.default_rng(seed)
    weight_map, total, n_w = {}, 0, 0
    for s in range(n_shards):
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        tensors = {}
        for layer in range(s * per_shard, min(n_layers, (s + 1) * per_shard)):
            for name, shape in shapes:
                if len(shape) == 1:
                    a = (1 + 0.05 * rng.standard_normal(shape, dtype=np.float32))
                else:  # weights ~ N(0, 1/sqrt(fan_in)), a few outliers as in trained LLMs
                    a = rng.standard_normal(shape, dtype=np.float32)
                    a *= np.float32(1 / math.sqrt(shape[1]))
                    n_w += a.size
                bits = (a.view(np.uint32) + 0x7FFF + ((a.view(np.uint32) >> 16) & 1)) >> 16
                tensors[f"model.layers.{layer}.{name}"] = ("bfloat16", bits.astype(np.uint16))
                del a, bits
        write_safetensors(folder / fname, tensors, {"format": "pt"})
        weight_map.update({k: fname for k in tensors})
        total += sum(v[1].nbytes for v in tensors.values())
        del tensors
    write_index_safetensors(folder, weight_map, total)
    return n_layers, n_w, total, n_shards, (hidden, inter)


# ----------------------------------------------------------------------------- measuring a process tree
def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(cmd, env=None):
    """Run `cmd`, sampling the RSS of its whole process tree; returns (stdout, peak sum, peak max)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    peak_sum = peak_one = 0
    stop = threading.Event()

    def sample():
        nonlocal peak_sum, peak_one
        while not stop.is_set():
            pids, todo = [], [p.pid]
            while todo:
                q = todo.pop()
                pids.append(q)
                todo.extend(_children(q))
            rss = [_rss(q) for q in pids]
            peak_sum, peak_one = max(peak_sum, sum(rss)), max(peak_one, max(rss))
            stop.wait(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = p.communicate()
    stop.set()
    t.join()
    if p.returncode:
        raise RuntimeError(f"{cmd} failed with status {p.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak_sum, peak_one


# ----------------------------------------------------------------------------- inner runs (fresh processes)
def inner_compress(src, out, workers, ray):
    from pydnnz.shards import Recipe, compress_checkpoint

    start = 0.0
    if ray:
        import ray as _ray

        t = time.perf_counter()
        _ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                  runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        start = time.perf_counter() - t
    s = compress_checkpoint(src, out, Recipe(quantize="uq", k=16, encoding="auto"),
                            workers=workers, ray=None if ray else False, progress=False)
    s["ray_start_s"] = start
    print(json.dumps(s))


def inner_load(out, hidden, inter, n_layers):
    import torch
    from torch import nn

    import pydnnz.torch as pt

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = nn.Module()
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(self.self_attn, n, nn.Linear(hidden, hidden, bias=False))
            self.mlp = nn.Module()
            self.mlp.gate_proj = nn.Linear(hidden, inter, bias=False)
            self.mlp.up_proj = nn.Linear(hidden, inter, bias=False)
            self.mlp.down_proj = nn.Linear(inter, hidden, bias=False)
            self.input_layernorm = nn.LayerNorm(hidden, bias=False)
            self.post_attention_layernorm = nn.LayerNorm(hidden, bias=False)

    base = _rss(os.getpid())
    with torch.device("meta"):
        model = nn.Module()
        model.model = nn.Module()
        model.model.layers = nn.ModuleList(Layer() for _ in range(n_layers))
    t = time.perf_counter()
    pt.load_model(out, model)
    secs = time.perf_counter() - t
    x = torch.randn(1, hidden)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj(model.model.layers[0].mlp.up_proj(x))
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": secs, "rss_before": base, "rss_after": _rss(os.getpid()), "peak": peak}))


# ----------------------------------------------------------------------------- per-method speed
def method_speeds(n=16 * 2**20, repeats=1):
    from pydnnz import compress

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((n // 4096, 4096), dtype=np.float32) / 64).astype(np.float32)
    import pydnnz

    q16 = compress.uq(w, 16)
    runs = {"np.sort": lambda: np.sort(w, axis=None),
            "UQ k=16": lambda: compress.uq(w, 16),
            "ECSQ k=16": lambda: compress.ecsq(w, 16),
            "CWS k=16": lambda: compress.cws(w, 16),
            "Pr-UQ p=50 k=16": lambda: compress.pr_uq(w, 50, 16),
            "Pr-ECSQ p=50 k=16": lambda: compress.pr_ecsq(w, 50, 16),
            "encode auto (of the UQ k=16 result)": lambda: pydnnz.encode(q16, "auto")}
    out = {}
    for name, fn in runs.items():
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[name] = {"seconds": best, "weights_per_s": n / best}
    for rec in out.values():
        rec["x_sort"] = rec["seconds"] / out["np.sort"]["seconds"]
    return out


# ----------------------------------------------------------------------------- main
def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def _load_average():
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return (float("nan"),) * 3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=0.5, help="checkpoint size in GB (default 0.5; target 12)")
    ap.add_argument("--hidden", type=int, default=2048, help="hidden size H (default 2048; intermediate 2.75 H)")
    ap.add_argument("--shard-gb", type=float, default=2.0, help="about this much per shard (default 2)")
    ap.add_argument("--quick", action="store_true", help="0.1 GB, one repeat: a smoke run")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    ap.add_argument("--skip-methods", action="store_true", help="skip the per-method speeds at 16 M weights")
    ap.add_argument("--workdir", help="folder for the checkpoint (default: a temporary one, deleted)")
    ap.add_argument("--json", action="store_true", help="print the records as JSON")
    ap.add_argument("--_inner", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._inner:
        kind, *rest = args._inner
        if kind == "compress":
            inner_compress(rest[0], rest[1], int(rest[2]), rest[3] == "ray")
        elif kind == "load":
            inner_load(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
        return 0
    if args.quick:
        args.size_gb, args.hidden = min(args.size_gb, 0.1), min(args.hidden, 1024)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dnnz-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    py = [sys.executable, "-m", "bench.scale", "--_inner"]
    from bench._common import machine

    rec = {"machine": {**machine(), "cpus": os.cpu_count(), "load_before": _load_average()}}
    try:
        t = time.perf_counter()
        n_layers, n_w, total, n_shards, (hidden, inter) = make_checkpoint(work / "ckpt", args.size_gb, args.hidden,
                                                                         args.shard_gb)
        rec["checkpoint"] = {"bytes": total, "matrix_weights": n_w, "layers": n_layers, "shards": n_shards,
                             "hidden": hidden, "intermediate": inter, "generate_s": time.perf_counter() - t}
        print(f"checkpoint: {total / 2**30:.2f} GiB bf16, {n_layers} layers (H={hidden}, I={inter}), "
              f"{n_shards} shards, {n_w / 1e6:.0f} M matrix weights", file=sys.stderr)
        runs = {}
        for label, workers, engine in (("pool x1", 1, "pool"), ("pool x2", 2, "pool"), ("ray x2", 2, "ray")):
            if engine == "ray":
                try:
                    import ray  # noqa: F401
                except ImportError:
                    rec["ray"] = "not installed (pip install 'pydnnz[ray]')"
                    continue
                if args.no_ray:
                    continue
            out = work / f"out-{engine}{workers}"
            shutil.rmtree(out, ignore_errors=True)
            s, peak_sum, peak_one = run_measured(py + ["compress", str(work / "ckpt"), str(out), str(workers), engine],
                                                 env)
            s.update(peak_rss_tree=peak_sum, peak_rss_process=peak_one, weights_per_s=n_w / s["seconds"],
                     weights_per_s_per_core=n_w / s["seconds"] / workers, load=_load_average())
            runs[label] = s
            print(f"{label}: {s['seconds']:.1f} s, {n_w / s['seconds'] / 1e6:.2f} M weights/s "
                  f"({n_w / s['seconds'] / workers / 1e6:.2f} M/s per core), peak RSS tree "
                  f"{peak_sum / 2**20:.0f} MiB (largest process {peak_one / 2**20:.0f} MiB), "
                  f"{s['bytes_out'] / 2**20:.1f} MiB out", file=sys.stderr)
        rec["runs"] = runs
        ref = _files(work / "out-pool1")
        rec["identical_bytes"] = {k: _files(work / f"out-{'ray' if 'ray' in k else 'pool'}{k[-1]}") == ref
                                  for k in runs}
        comp = work / "out-pool1"
        s, peak_sum, _ = run_measured(py + ["load", str(comp), str(hidden), str(inter), str(n_layers)], env)
        compressed = runs["pool x1"]["bytes_out"]
        rec["load_meta"] = {**s, "compressed_bytes": compressed,
                            "rss_delta": s["rss_after"] - s["rss_before"]}
        if not args.skip_methods:
            rec["methods_16M"] = method_speeds(repeats=1 if args.quick else 2)
        report(rec)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rec, indent=1, default=float))
    return 0


def report(rec):
    runs = rec["runs"]
    one, two = runs["pool x1"], runs["pool x2"]
    scaling = one["seconds"] / two["seconds"]
    ck = rec["checkpoint"]
    print(f"\n## bench.scale: {ck['bytes'] / 2**30:.2f} GiB bf16 checkpoint, uq k=16 + encoding auto")
    from bench._common import machine_text

    print(machine_text(rec["machine"]))
    print(f"load average before: {rec['machine']['load_before'][0]:.2f} on {rec['machine']['cpus']} cores "
          "(other work on the machine distorts every time below)\n")
    print("| run | seconds | M weights/s | M weights/s per core | peak RSS tree MiB | largest process MiB | same bytes as x1 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for k, s in runs.items():
        print(f"| {k} | {s['seconds']:.1f} | {s['weights_per_s'] / 1e6:.2f} | {s['weights_per_s_per_core'] / 1e6:.2f} "
              f"| {s['peak_rss_tree'] / 2**20:.0f} | {s['peak_rss_process'] / 2**20:.0f} | {rec['identical_bytes'][k]} |")
    print()
    peak = max(s["peak_rss_tree"] for k, s in runs.items() if k.startswith("pool"))
    print(f"- peak RSS (pool runs, whole tree) {peak / 2**30:.2f} GiB: target <= 2 GiB "
          f"{'met' if peak <= 2 * 2**30 else 'NOT met'}")
    print(f"- scaling 1 -> 2 workers: {scaling:.2f}x (target >= 1.8x: {'met' if scaling >= 1.8 else 'NOT met'}; "
          f"load average during the x2 run {two['load'][0]:.1f} on {rec['machine']['cpus']} cores)")
    if "ray x2" in runs:
        r = runs["ray x2"]["seconds"] / two["seconds"]
        print(f"- Ray x2 / pool x2 time: {r:.2f} (target within 15 %: {'met' if r <= 1.15 else 'NOT met'}); "
              f"Ray start-up {runs['ray x2']['ray_start_s']:.1f} s not counted")
    else:
        print(f"- Ray: {rec.get('ray', 'skipped')}")
    lm = rec["load_meta"]
    limit = lm["compressed_bytes"] * 1.1
    print(f"- load into a meta-device model: {lm['seconds']:.2f} s, RSS grew by {lm['rss_delta'] / 2**20:.0f} MiB "
          f"for {lm['compressed_bytes'] / 2**20:.0f} MiB compressed (target <= +10 %: "
          f"{'met' if lm['rss_delta'] <= limit else 'NOT met'})")
    if "methods_16M" in rec:
        print("\n| method, 16 M weights | seconds | M weights/s | time / np.sort |")
        print("|---|---:|---:|---:|")
        for k, m in rec["methods_16M"].items():
            print(f"| {k} | {m['seconds']:.2f} | {m['weights_per_s'] / 1e6:.1f} | {m['x_sort']:.1f} |")
    per_core = one["weights_per_s_per_core"]
    eff = min(1.0, scaling / 2)
    t64 = 70e9 / (per_core * 64 * eff)
    bf16_bytes = 140e9
    t_ray = max(70e9 / (per_core * 256 * eff), bf16_bytes / 1.25e9)
    print(f"\nEstimate (not a measurement): 70 B parameters at {per_core / 1e6:.2f} M weights/s per core "
          f"(this run, 1 worker) and the measured 2-worker efficiency {eff:.2f} extrapolated: "
          f"one 64-core machine ≈ {_duration(t64)}; a 4-node Ray cluster of 64 cores each ≈ {_duration(t_ray)} "
          f"(compute {_duration(70e9 / (per_core * 256 * eff))}, or the driver shipping 140 GB of bf16 over a "
          f"10 Gb/s link, {_duration(bf16_bytes / 1.25e9)}, whichever is longer; reading the 140 GB from disk "
          "is not counted).")


def _duration(seconds):
    """Seconds as minutes below two hours, hours above (a 0.0 h estimate says nothing)."""
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    sys.exit(main())
