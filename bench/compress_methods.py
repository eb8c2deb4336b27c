"""Speed of the lossy methods (pydnnz.compress) on 1 M, 4 M and 16 M weights, one core.

Each method runs on synthetic Laplacian and Gaussian weights (the shapes of trained layers'
weight distributions); ``np.sort`` of the same data is timed in the same run and every method's
time is printed as a ratio to it (the machine is shared: compare ratios, not seconds). SLR is an
SVD, so its ratio is to ``np.linalg.svd`` of the same matrix instead, and it runs on 1 M and 4 M
only (a 4096 x 4096 SVD on one core takes minutes).

    python -m bench.compress_methods --quick        # < 1 min: 1 M and 4 M Laplacian
    python -m bench.compress_methods [--json]       # 1 M, 4 M, 16 M x Laplacian, Gaussian
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # one core, before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from pydnnz import compress as C  # noqa: E402

from ._common import best_time, machine  # noqa: E402

K = 32
P = 90

METHODS = {
    "prune p=90": lambda w: C.prune(w, P),
    "cws k=32": lambda w: C.cws(w, K, seed=0),
    "cws k=256": lambda w: C.cws(w, 256, seed=0),
    "pws k=32": lambda w: C.pws(w, K, seed=0),
    "uq k=32": lambda w: C.uq(w, K),
    "ecsq k=32 (λ tuned)": lambda w: C.ecsq(w, K),
    "pr-cws 90/32": lambda w: C.pr_cws(w, P, K, seed=0),
    "pr-pws 90/32": lambda w: C.pr_pws(w, P, K, seed=0),
    "pr-uq 90/32": lambda w: C.pr_uq(w, P, K),
    "pr-ecsq 90/32": lambda w: C.pr_ecsq(w, P, K),
}


def timed(fn, repeat):
    """(best seconds of `repeat` calls, no warm-up: each call is long, the last result)."""
    out = []
    return best_time(lambda: out.append(fn()), min_runs=repeat, min_seconds=0, warmup=False), out[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 M and 4 M Laplacian weights only")
    ap.add_argument("--json", action="store_true", help="print the records as JSON")
    ap.add_argument("--no-slr", action="store_true", help="skip SLR")
    ap.add_argument("--markdown", action="store_true", help="also print a method x size table")
    args = ap.parse_args(argv)
    sizes = [1 << 20, 1 << 22] if args.quick else [1 << 20, 1 << 22, 1 << 24]
    dists = ["laplace"] if args.quick else ["laplace", "gauss"]
    records = []
    for dist in dists:
        for n in sizes:
            rng = np.random.default_rng(n)
            w = (rng.laplace(scale=0.02, size=n) if dist == "laplace" else rng.normal(scale=0.03, size=n))
            side = int(np.sqrt(n))
            w = w.astype(np.float32).reshape(side, n // side)  # a square layer
            rep = 3 if n <= (1 << 22) else 1
            t_sort, _ = timed(lambda: np.sort(w, axis=None), 3)
            for name, fn in METHODS.items():
                t, q = timed(lambda: fn(w), rep if name.startswith("prune") else 1)
                rec = {"method": name, "dist": dist, "n": n, "seconds": t, "np_sort_seconds": t_sort,
                       "ratio": t / t_sort, "baseline": "np.sort"}
                if isinstance(q, C.QuantizedTensor):
                    rec["k"] = q.k
                    rec["iterations"] = q.params.get("iterations")
                records.append(rec)
                if not args.json:
                    print(f"{dist:8s} {n:>9,d}  {name:22s} {t:8.3f} s   x{t / t_sort:7.1f} np.sort"
                          f"  ({t_sort:.3f} s)  k={rec.get('k', '-')}", flush=True)
            if not args.no_slr and n <= (1 << 22):
                t_svd, _ = timed(lambda: np.linalg.svd(w.astype(np.float64), full_matrices=False), 1)
                t, q = timed(lambda: C.slr(w, 64), 1)
                records.append({"method": "slr q=64", "dist": dist, "n": n, "seconds": t,
                                "svd_seconds": t_svd, "ratio": t / t_svd, "baseline": "np.linalg.svd",
                                "rank": q.rank})
                if not args.json:
                    print(f"{dist:8s} {n:>9,d}  {'slr q=64':22s} {t:8.3f} s   x{t / t_svd:7.2f} np.linalg.svd"
                          f"  ({t_svd:.3f} s)", flush=True)
    meta = {**machine(), "threads": 1}
    if args.json:
        print(json.dumps({"meta": meta, "records": records}, indent=1))
    else:
        print(f"# numpy {meta['numpy']}, one thread; ratios are to np.sort of the same data, same run")
    if args.markdown:
        print(markdown(records, sizes))


def markdown(records, sizes):
    """method x size table: seconds and ratio to the baseline (np.sort; SVD for SLR)."""
    head = "| data | method | " + " | ".join(f"{n / 2**20:.0f} M: s (x base)" for n in sizes) + " |"
    lines = [head, "|---|---|" + "---|" * len(sizes)]
    keys = list(dict.fromkeys((r["dist"], r["method"]) for r in records))
    for dist, method in keys:
        cells = []
        for n in sizes:
            r = next((r for r in records if (r["dist"], r["method"], r["n"]) == (dist, method, n)), None)
            cells.append("-" if r is None else f"{r['seconds']:.3f} (x{r['ratio']:.1f})")
        lines.append(f"| {dist} | {method} | " + " | ".join(cells) + " |")
    base = {n: next(r["np_sort_seconds"] for r in records if r["n"] == n and "np_sort_seconds" in r)
            for n in sizes if any(r["n"] == n and "np_sort_seconds" in r for r in records)}
    lines.append("| | np.sort (last data set) | " + " | ".join(f"{base.get(n, float('nan')):.3f}" for n in sizes) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
