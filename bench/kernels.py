"""Dot products from the compressed form vs dense baselines, measured in the same run.

    python -m bench.kernels [--quick] [--json] [--paths best|all] [--shapes NAME,...] [--threads 1,all]
    python -m bench.kernels --targets     # issue 15's targets: the runs they need, then a summary

One record per (matrix, encoding, batch, threads, CPU path): encoded bytes, the order-0 entropy
bound of the index stream (bits/weight H0, bound = H0 * n / 8 + 4 k codebook bytes) and the gap
to it, the time of pydnnz's matmul and of numpy dense float32 (`x @ W.T`), scipy.sparse CSR and
CSC (`W @ x.T`, single-threaded by design), torch dense (`torch.nn.functional.linear`), and
ratios (pydnnz time / baseline time: below 1 means pydnnz is faster).

Each thread setting runs in a child process whose environment fixes the BLAS/OpenMP thread
counts before numpy and torch load (OPENBLAS/OMP/MKL_NUM_THREADS, torch.set_num_threads,
pydnnz.set_num_threads). OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the children's
environment (they can force a slower OpenBLAS kernel on this machine); the BLAS kernel in use is
reported (threadpoolctl when installed). Timer: best of at least MIN_RUNS runs lasting at least
MIN_TIME seconds together. Compare ratios within one run only: the machine is shared.

Matrices: PyTorch layout (out, in) of the papers' layers (listed in x out as the papers do):
VGG19 512x4096, 4096x4096, 4096x10; DeepDTA 192x1024, 1024x1024, 1024x512. Weights ~ N(0, 1)
quantized to k levels (uniform grid over +-3 sigma, so the index stream is bell-shaped and its
entropy is below log2 k); the pruned ones zero the 90 % / 99 % smallest-magnitude weights and
quantize the rest to 32 non-zero levels (k = 33 with the zero).
"""
import argparse
import json
import os
import subprocess
import sys

SHAPES = {  # name: (out, in)
    "vgg19-512x4096": (4096, 512),
    "vgg19-4096x4096": (4096, 4096),
    "vgg19-4096x10": (10, 4096),
    "deepdta-192x1024": (1024, 192),
    "deepdta-1024x1024": (1024, 1024),
    "deepdta-1024x512": (512, 1024),
}
VARIANTS = [("k2", 2, 0.0), ("k16", 16, 0.0), ("k32", 32, 0.0), ("k256", 256, 0.0),
            ("p90-k32", 32, 0.9), ("p99-k32", 32, 0.99), ("k4096", 4096, 0.0)]
DEFAULT_VARIANTS = ("k2", "k16", "k32", "k256", "p90-k32", "p99-k32")
# Targets (issue 15), ratios of pydnnz to torch dense in the same run, one thread unless stated:
# (label, encoding, variant, batch, threads, limit); "ham" rows of the ratio rlham / ham below.
TARGET_MATRIX = "vgg19-4096x4096"
TARGETS = [("ham batch 1", "ham", "k32", 1, 1, 1.5), ("ham batch 8", "ham", "k32", 8, 1, 0.5),
           ("ham batch 128", "ham", "k32", 128, 1, 1.2),
           ("sham 90% pruned batch 1", "sham", "p90-k32", 1, 1, 0.3),
           ("rlham 90% pruned batch 1", "rlham", "p90-k32", 1, 1, 0.3),
           ("ham batch 1, all cores", "ham", "k32", 1, "all", 1.0)]
HUFFMAN_TARGETS = [("k32", 1.5e9), ("k4096", 5e8)]  # symbols/s of the ham batch-1 kernel
BATCHES = (1, 8, 128)
QUICK_SHAPES = ("deepdta-1024x1024", "vgg19-4096x4096")
QUICK_VARIANTS = ("k32", "p90-k32")
QUICK_BATCHES = (1, 8, 128)


def child_env(threads):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    n = str(threads if threads != "all" else (os.cpu_count() or 1))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "DNNZ_NUM_THREADS"):
        env[var] = n
    env["DNNZ_BENCH_CHILD"] = n
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="a small subset (< 1 minute)")
    ap.add_argument("--json", action="store_true", help="print the records as JSON lines")
    ap.add_argument("--paths", default="best", help="'best' or 'all' (every CPU path this machine has)")
    ap.add_argument("--shapes", default=None, help="comma-separated matrix names")
    ap.add_argument("--variants", default=None, help="comma-separated variants (k2,k16,k32,k256,p90-k32,p99-k32)")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--threads", default="1,all", help="thread settings to run, e.g. 1,all")
    ap.add_argument("--targets", action="store_true",
                    help=f"run {TARGET_MATRIX} k32/k4096/p90-k32 at batch 1, 8, 128 on 1 and all threads "
                         "and print issue 15's targets against the measured ratios")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return run_child(args)
    if args.targets:
        args.shapes, args.variants, args.batches, args.threads = TARGET_MATRIX, "k32,k4096,p90-k32", "1,8,128", "1,all"
    records = []
    for threads in args.threads.split(","):
        # the child runs as a module from the repository root, so that the in-place pydnnz imports
        cmd = [sys.executable, "-m", "bench.kernels", "--child", "--paths", args.paths]
        for opt in ("shapes", "variants", "batches"):
            if getattr(args, opt):
                cmd += [f"--{opt}", getattr(args, opt)]
        if args.quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, env=child_env(threads), stdout=subprocess.PIPE, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        for line in out.stdout.decode().splitlines():
            rec = json.loads(line)
            records.append(rec)
            if args.json:
                print(line, flush=True)
            else:
                print_record(rec, header=len(records) == 1)
    if args.targets:
        print_targets(records)
    return 0


def print_targets(records):
    """Issue 15's targets against this run's ratios (pass / MISS), from the records of one run."""
    import os as _os
    def find(enc, variant, batch, threads):
        for r in records:
            if (r["matrix"], r["encoding"], r["variant"], r["batch"]) == (TARGET_MATRIX, enc, variant, batch) and \
                    r["threads"] == (threads if threads != "all" else (_os.cpu_count() or 1)):
                return r
        return None
    print(f"\n# Targets (issue 15), {TARGET_MATRIX}, ratio pydnnz / torch dense measured in this run")
    print(f"{'target':34} {'limit':>7} {'ratio':>7}  result")
    for label, enc, variant, batch, threads, limit in TARGETS:
        r = find(enc, variant, batch, threads)
        v = r["ratio_torch"] if r else None
        print(f"{label:34} {limit:7.2f} " + (f"{v:7.2f}  {'pass' if v <= limit else 'MISS'}" if r else "      -  not run"))
    for variant in ("k32", "k4096", "p90-k32"):
        for batch in (1, 8, 128):
            a, b = find("rlham", variant, batch, 1), find("ham", variant, batch, 1)
            if a and b:
                v = a["t_pydnnz"] / b["t_pydnnz"]
                print(f"{f'rlham / ham {variant} batch {batch}':34} {1.2:7.2f} {v:7.2f}  {'pass' if v <= 1.2 else 'MISS'}")
    for variant, limit in HUFFMAN_TARGETS:
        r = find("ham", variant, 1, 1)
        if r:
            rate = r["shape"][0] * r["shape"][1] / r["t_pydnnz"]
            print(f"{f'Huffman symbols/s, ham {variant} b1':34} {limit / 1e9:6.2f}G {rate / 1e9:6.2f}G  "
                  f"{'pass' if rate >= limit else 'MISS'} (decode + lookup + multiply-add)")


def print_record(r, header=False):
    if header:
        print(f"# BLAS: {r['blas']}")
        print(f"{'matrix':20} {'var':8} {'enc':5} {'b':>4} {'thr':>3} {'path':6} {'bytes':>9} "
              f"{'H0b':>5} {'gap%':>6} {'pydnnz':>9} {'numpy':>9} {'torch':>9} {'csr':>9} "
              f"{'/np':>6} {'/torch':>6} {'/csr':>6}")
    def t(v):
        return f"{v * 1e3:8.3f}m" if v is not None else "        -"
    def q(a, b):
        return f"{a / b:6.2f}" if a is not None and b else "     -"
    print(f"{r['matrix']:20} {r['variant']:8} {r['encoding']:5} {r['batch']:4d} {r['threads']:3d} "
          f"{r['cpu_path']:6} {r['nbytes']:9d} {r['h0_bits']:5.2f} {r['gap_pct']:6.1f} {t(r['t_pydnnz'])} "
          f"{t(r['t_numpy'])} {t(r['t_torch'])} {t(r['t_scipy_csr'])} {q(r['t_pydnnz'], r['t_numpy'])} "
          f"{q(r['t_pydnnz'], r['t_torch'])} {q(r['t_pydnnz'], r['t_scipy_csr'])}", flush=True)


def best_time(fn, quick):
    from pydnnz._timing import best_time  # the one timer (warm-up, then best of N and a time floor)

    return best_time(fn, *((3, 0.03) if quick else (5, 0.15)), max_runs=200)


def make_matrix(rng, out, inn, k, prune):
    import numpy as np
    w = rng.standard_normal((out, inn)).astype(np.float32)
    if prune:
        thr = np.quantile(np.abs(w), prune)
        keep = np.abs(w) > thr
        # 32 non-zero levels on +-3 sigma of the kept weights, zero kept as its own symbol
        levels = np.linspace(-3.0, 3.0, k).astype(np.float32)
        idx = np.clip(np.rint((w + 3.0) / 6.0 * (k - 1)), 0, k - 1).astype(np.int64)
        cb = np.concatenate([[0.0], levels]).astype(np.float32)
        idx = np.where(keep, idx + 1, 0)
    else:
        cb = np.linspace(-3.0, 3.0, k).astype(np.float32)
        idx = np.clip(np.rint((w + 3.0) / 6.0 * (k - 1)), 0, k - 1).astype(np.int64)
    return cb, idx


class QT:
    def __init__(self, codebook, indices):
        self.codebook, self.indices, self.shape = codebook, indices, indices.shape


def run_child(args):
    import numpy as np
    import scipy.sparse as sp
    import torch
    import pydnnz
    from pydnnz import runtime
    from pydnnz._format import entropy_bits

    threads = int(os.environ["DNNZ_BENCH_CHILD"])
    torch.set_num_threads(threads)
    pydnnz.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_info
        blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                         f"threads={i.get('num_threads')}" for i in threadpool_info() if i.get("user_api") == "blas")
    except ImportError:
        cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
        blas = str(cfg.get("Build Dependencies", {}).get("blas", {}).get("name", "unknown")) + \
            f" (threadpoolctl not installed: kernel not reported; OPENBLAS_NUM_THREADS={threads})"
    shapes = args.shapes.split(",") if args.shapes else (QUICK_SHAPES if args.quick else list(SHAPES))
    variants = args.variants.split(",") if args.variants else \
        (QUICK_VARIANTS if args.quick else list(DEFAULT_VARIANTS))
    batches = [int(b) for b in args.batches.split(",")] if args.batches else \
        (QUICK_BATCHES if args.quick else BATCHES)
    paths = runtime.supported_cpu_paths()[::-1]
    paths = [p for p in paths if p != "scalar"] if args.paths == "all" else paths[:1]
    rng = np.random.default_rng(0)
    from tqdm import tqdm
    todo = [(n, v) for n in shapes for v in VARIANTS if v[0] in variants]
    progress = tqdm(total=len(todo), desc=f"kernels ({threads} thread{'s' if threads > 1 else ''})",
                    file=sys.stderr, disable=not sys.stderr.isatty())
    for name in shapes:
        out, inn = SHAPES[name]
        for vname, k, prune in VARIANTS:
            if vname not in variants:
                continue
            progress.set_postfix_str(f"{name} {vname}")
            cb, idx = make_matrix(rng, out, inn, k, prune)
            w = cb[idx]
            h0 = entropy_bits(np.bincount(idx.ravel(), minlength=cb.size))
            bound = h0 * idx.size / 8 + 4 * cb.size
            qt = QT(cb, idx)
            wt = torch.from_numpy(w)
            csr, csc = sp.csr_matrix(w), sp.csc_matrix(w)
            encs = ["dense", "csc", "im"] + (["im8"] if cb.size <= 256 else []) + (["im4"] if cb.size <= 16 else [])
            encs += [e for e in ("ham", "sham", "rlham") if e in pydnnz.encodings.encodings()]
            encoded = {e: pydnnz.encode(qt, e) for e in encs}
            auto = pydnnz.encode(qt).encoding
            for batch in batches:
                if args.quick and batch > 8 and out * inn > 2**21:
                    continue  # --quick: batch 128 only on the smaller matrix (keeps it < 1 min)
                x = rng.standard_normal((batch, inn)).astype(np.float32)
                xt = torch.from_numpy(x)
                xT = np.ascontiguousarray(x.T)
                with torch.inference_mode():
                    t_torch = best_time(lambda: torch.nn.functional.linear(xt, wt), args.quick)
                t_np = best_time(lambda: x @ w.T, args.quick)
                t_csr = best_time(lambda: csr @ xT, args.quick)
                t_csc = best_time(lambda: csc @ xT, args.quick)
                for path in paths:
                    runtime.set_cpu_path(path)
                    for e, m in encoded.items():
                        t = best_time(lambda: m.matmul(x), args.quick)
                        rec = dict(matrix=name, shape=[out, inn], variant=vname, k=int(cb.size),
                                   prune=prune, encoding=e, auto=e == auto, batch=batch,
                                   threads=threads, cpu_path=path, nbytes=m.nbytes,
                                   dense_bytes=w.nbytes, h0_bits=h0, bound_bytes=bound,
                                   gap_pct=100.0 * (m.nbytes / bound - 1.0),
                                   t_pydnnz=t, t_numpy=t_np, t_torch=t_torch, t_scipy_csr=t_csr,
                                   t_scipy_csc=t_csc, ratio_numpy=t / t_np, ratio_torch=t / t_torch,
                                   ratio_scipy_csr=t / t_csr, ratio_scipy_csc=t / t_csc, blas=blas)
                        print(json.dumps(rec), flush=True)
                    runtime.set_cpu_path(None)
            progress.update()
    progress.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
