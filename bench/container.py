"""Open time, read time, verify time and peak memory of .dnnz files against safetensors.

    python -m bench.container            # 10 MB, 100 MB and 1 GB files
    python -m bench.container --quick    # 10 MB and 100 MB only
    python -m bench.container --json     # one JSON record per (size, library, operation)

For each size, the same float32 tensors (layers of 1024 columns plus a bias each) are written once
with pydnnz.save_file and once with safetensors.numpy.save_file, in a temporary folder that is
deleted afterwards. Each measurement runs in a fresh Python process, so that its peak memory is
its own: "peak RSS delta" is the process's high-water mark (VmHWM) minus its resident size just
before the operation, read from /proc/self/status. Memory-mapped file pages a process touches
count in its RSS (they are shared page cache, not private memory), so the delta of a read that
touches every byte of a mapped file is about the file size even though nothing was copied.

Operations:
  open      pydnnz.load_file / safetensors.safe_open(framework="numpy"), listing the keys
  read all  every tensor fetched and fully touched (pydnnz: CRC-checked views of the map;
            safetensors: get_tensor, a copy); the same reduction (sum) on both
  verify    pydnnz.container.verify (every CRC and structure check); safetensors has none, so its
            column shows the read-all time, the nearest thing it offers

Files are in the page cache (just written), the same for both libraries. Times are best of
--repeat runs (each in its own process for open; read and verify from one process); the machine
is shared, so compare the ratios of one run, not absolute times across runs.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ._common import best_time, best_times, emit

ROOT = Path(__file__).resolve().parent.parent

MB = 1024 * 1024


def rss_kb(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(lib, op, path, repeat):
    """Runs in a fresh process; prints one JSON object."""
    import pydnnz
    from pydnnz import container
    from safetensors import safe_open as st_open

    def do_open():
        if lib == "dnnz":
            f = pydnnz.load_file(path)
            return f, list(f)
        f = st_open(path, framework="numpy")
        return f, list(f.keys())

    def do_read():
        total = 0.0
        if lib == "dnnz":
            f = pydnnz.load_file(path)
            for k in f:
                total += float(np.asarray(f[k]).sum())
        else:
            with st_open(path, framework="numpy") as f:
                for k in f.keys():
                    total += float(f.get_tensor(k).sum())
        return total

    def do_verify():
        if lib == "dnnz":
            return container.verify(path).tensors
        return do_read()

    fn = {"open": do_open, "read": do_read, "verify": do_verify}[op]
    before = rss_kb()
    keep = []
    first = best_time(lambda: keep.append(fn()), min_runs=1, min_seconds=0, warmup=False)  # the cold call
    peak = rss_kb("VmHWM") - before
    rest = best_time(fn, min_runs=repeat - 1, min_seconds=0, warmup=False) if repeat > 1 else first
    del keep
    print(json.dumps({"seconds": min(first, rest), "first_seconds": first, "peak_rss_delta_kb": peak}))


def run_worker(lib, op, path, repeat):
    out = subprocess.run([sys.executable, "-m", "bench.container", "--worker", lib, op, str(path), str(repeat)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_tensors(nbytes, seed=0):
    rng = np.random.default_rng(seed)
    layer = 4 * MB  # 1024 x 1024 float32
    tensors = {}
    left = nbytes
    i = 0
    while left > 0:
        rows = max(1, min(1024, left // 4096))
        tensors[f"layer{i}.weight"] = rng.standard_normal((rows, 1024), dtype=np.float32)
        tensors[f"layer{i}.bias"] = rng.standard_normal(rows, dtype=np.float32)
        left -= rows * 4096 + rows * 4
        i += 1
    assert layer  # documented above
    return tensors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 MB and 100 MB only")
    ap.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        lib, op, path, repeat = args.worker
        worker(lib, op, path, int(repeat))
        return

    import pydnnz
    from safetensors.numpy import save_file as st_save

    from pydnnz._progress import progress_bar

    sizes = [10, 100] if args.quick else [10, 100, 1024]
    records = []
    with tempfile.TemporaryDirectory(prefix="dnnz-bench-") as tmp:
        steps = [(s, lib, op) for s in sizes for lib in ("dnnz", "safetensors") for op in ("open", "read", "verify")]
        bar = progress_bar(total=len(steps), desc="container bench")
        for size in sizes:
            tensors = make_tensors(size * MB)
            paths = {"dnnz": Path(tmp) / f"m{size}.dnnz", "safetensors": Path(tmp) / f"m{size}.safetensors"}
            write_dnnz, write_st = best_times([lambda: pydnnz.save_file(tensors, paths["dnnz"]),
                                               lambda: st_save(tensors, str(paths["safetensors"]))],
                                              min_runs=1, min_seconds=0, warmup=False)
            n = len(tensors)
            del tensors
            for lib in ("dnnz", "safetensors"):
                for op in ("open", "read", "verify"):
                    if op == "open":
                        runs = [run_worker(lib, op, paths[lib], 1) for _ in range(args.repeat)]
                        r = min(runs, key=lambda x: x["seconds"])
                        r["peak_rss_delta_kb"] = max(x["peak_rss_delta_kb"] for x in runs)
                    else:
                        r = run_worker(lib, op, paths[lib], args.repeat)
                    r.update(size_mb=size, library=lib, operation=op, tensors=n,
                             file_bytes=paths[lib].stat().st_size,
                             write_seconds=write_dnnz if lib == "dnnz" else write_st)
                    records.append(r)
                    bar.update(1)
            for p in paths.values():
                p.unlink()
        bar.close()

    if args.json:
        for r in records:
            emit(r)
        return
    print(f"pydnnz {pydnnz.__version__} container vs safetensors (numpy), {os.cpu_count()} CPUs, "
          f"best of {args.repeat}; files in page cache")
    print(f"{'size':>7} {'operation':<9} {'dnnz ms':>10} {'st ms':>10} {'dnnz/st':>8} "
          f"{'dnnz peak MB':>13} {'st peak MB':>11}")
    by = {(r["size_mb"], r["library"], r["operation"]): r for r in records}
    for size in sizes:
        for op in ("write", "open", "read", "verify"):
            if op == "write":
                d = by[(size, "dnnz", "open")]["write_seconds"]
                s = by[(size, "safetensors", "open")]["write_seconds"]
                dm = sm = float("nan")
            else:
                d, s = by[(size, "dnnz", op)]["seconds"], by[(size, "safetensors", op)]["seconds"]
                dm = by[(size, "dnnz", op)]["peak_rss_delta_kb"] / 1024
                sm = by[(size, "safetensors", op)]["peak_rss_delta_kb"] / 1024
            label = {"read": "read all", "verify": "verify*"}.get(op, op)
            print(f"{size:>5}MB {label:<9} {d * 1e3:>10.3f} {s * 1e3:>10.3f} {d / s:>8.2f} "
                  f"{dm:>13.1f} {sm:>11.1f}")
    print("* safetensors has no verify; its column repeats its read-all time")


if __name__ == "__main__":
    main()
