"""rlham vs ham / sham on the DeepDTA DAVIS dense layers, and its matmul speed vs numpy dense.

    python -m bench.rlham_study [--quick] [--model PATH] [--prunes 60,90,95,97,99] [--threads=1]

For each pruning percentile p, `compress_weights(..., method="cws", k=32, prune=p,
unified=True)` on fc1/fc2/fc3, then per layer and for the three together: psi = nbytes /
(4 x entries) of ham, sham and rlham, and two order-0 entropy bounds (as psi, codebook bytes
not counted): `H(entries)` (every entry one symbol, ham's source) and `H(run, value)` (every
non-zero one (exact zero-run, value) symbol plus one end-of-row symbol per row, rlham's source).
`split` is what rlham would take with two separate Huffman codes (run classes incl. the
end-of-row symbol, and values) instead of its joint (class, value) alphabet: the design choice
recorded in spec/encodings.md. Then matmul times of fc2 (1024 x 1024) at batch 1, 8, 128 for
ham, sham, rlham and numpy dense float32 (`x @ W.T`) measured in the same run, as ratios
(pydnnz / numpy: below 1 means faster). Compare ratios only: the machine is shared.
"""
import argparse
import os
import sys

# One thread for numpy's BLAS and pydnnz unless told otherwise (set before numpy loads): the
# ratios compare one core with one core. --threads N raises both.
_THREADS = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = _THREADS
os.environ.pop("OPENBLAS_CORETYPE", None)
os.environ.pop("OPENBLAS_L2_SIZE", None)

import numpy as np  # noqa: E402

import pydnnz  # noqa: E402
from pydnnz import huffman  # noqa: E402
from pydnnz.compress import compress_weights  # noqa: E402
from pydnnz.encodings import MatrixInput, encode  # noqa: E402
from pydnnz.encodings.rlham import RunLengthHuffmanAddressMap as RL, offset_bytes, run_classes  # noqa: E402

from ._common import best_time as _best_time, entropy_bits as _entropy_per_symbol  # noqa: E402

LAYERS = ("fc1.weight", "fc2.weight", "fc3.weight")


def entropy_bits(counts):
    """Order-0 entropy of all the symbols a histogram counts, in bits (not per symbol)."""
    return _entropy_per_symbol(counts) * float(np.sum(counts))


def huffman_bits(counts):
    counts = np.asarray(counts, np.int64)
    if counts.sum() == 0:
        return 0
    return int(np.dot(counts, huffman.code_lengths(counts).astype(np.int64)))


def sources(qt):
    """(H(entries) bits, H(run, value) bits, split-alphabet encoding bytes with rlham's overheads)."""
    m = MatrixInput(qt)
    h_entries = entropy_bits(np.bincount(m.indices.ravel()))
    cb, vi, rowptr, cols, best = RL._plan(m)
    k = cb.size
    runs = cols - np.concatenate([[-1], cols[:-1]]) - 1
    starts = rowptr[:-1][rowptr[1:] > rowptr[:-1]]
    runs[starts] = cols[starts]
    eob = m.cols * k  # a symbol no (run, value) pair uses
    pairs = np.concatenate([runs * k + vi, np.full(m.rows, eob)])
    _, pc = np.unique(pairs, return_counts=True)
    h_pairs = entropy_bits(pc)
    d, nc = best[0], best[1][2]
    cls, nbits, _ = run_classes(runs, d)
    ccounts = np.bincount(np.concatenate([cls, np.full(m.rows, nc)]), minlength=nc + 1)
    split = huffman_bits(ccounts) + huffman_bits(np.bincount(vi, minlength=k)) + int(nbits.sum())
    # same codebook and offset table as rlham; two length tables (nc + 1 and k bytes)
    split_bytes = (split + 7) // 8 + (nc + 1 + k) + 4 * k + (m.rows + 1) * offset_bytes(split)
    return h_entries, h_pairs, split_bytes


def best_time(fn, quick):
    return _best_time(fn, *((3, 0.03) if quick else (7, 0.2)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=os.path.join(os.environ.get("DNNZ_SHARED", "/work/shared"),
                                                    "models", "deepdta_davis.safetensors"))
    ap.add_argument("--prunes", default="60,90,95,97,99")
    ap.add_argument("--batches", default="1,8,128")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--threads", default="1", help="numpy and pydnnz threads (--threads=N)")
    args = ap.parse_args(argv)
    pydnnz.set_num_threads(int(args.threads))
    from safetensors.numpy import load_file
    weights = load_file(args.model)
    dense = {n: weights[n] for n in LAYERS}
    print(f"cpu path {pydnnz.cpu_path()}, threads {pydnnz.get_num_threads()}")
    print(f"{'p':>3} {'layer':11} {'shape':>10} {'ham':>7} {'sham':>7} {'rlham':>7} {'split':>7} "
          f"{'H(ent)':>7} {'H(r,v)':>7}  rlham params")
    for p in [float(x) for x in args.prunes.split(",")]:
        comp = compress_weights(dense, method="cws", k=32, prune=p, unified=True)
        tot = dict(ham=0, sham=0, rlham=0, split=0, he=0.0, hp=0.0, n=0)
        timed = {}
        for name in LAYERS:
            qt = comp[name]
            n = int(np.prod(qt.shape))
            sizes = {e: encode(qt, e) for e in ("ham", "sham", "rlham")}
            he, hp, split_bytes = sources(qt)
            row = {e: sizes[e].nbytes for e in sizes}
            for e in row:
                tot[e] += row[e]
            tot["split"] += split_bytes
            tot["he"] += he / 8
            tot["hp"] += hp / 8
            tot["n"] += n
            psi = lambda b: b / (4 * n)  # noqa: E731
            print(f"{p:3.0f} {name:11} {'x'.join(map(str, qt.shape)):>10} {psi(row['ham']):7.4f} "
                  f"{psi(row['sham']):7.4f} {psi(row['rlham']):7.4f} "
                  f"{psi(split_bytes):7.4f} {psi(he / 8):7.4f} {psi(hp / 8):7.4f}  "
                  f"{sizes['rlham'].params}")
            if name == "fc2.weight":
                timed = sizes
                w2 = np.asarray(qt.to_dense(), np.float32)
        psi = lambda b: b / (4 * tot["n"])  # noqa: E731
        print(f"{p:3.0f} {'all three':11} {'':>10} {psi(tot['ham']):7.4f} {psi(tot['sham']):7.4f} "
              f"{psi(tot['rlham']):7.4f} {psi(tot['split']):7.4f} {psi(tot['he']):7.4f} {psi(tot['hp']):7.4f}")
        if args.no_timing:
            continue
        rng = np.random.default_rng(0)
        for batch in [int(b) for b in args.batches.split(",")]:
            x = rng.standard_normal((batch, w2.shape[1])).astype(np.float32)
            t_np = best_time(lambda: x @ w2.T, args.quick)
            parts = [f"numpy {t_np * 1e6:8.1f} us"]
            for e, m in timed.items():
                t = best_time(lambda: m.matmul(x), args.quick)
                parts.append(f"{e} {t / t_np:6.2f}x")
            print(f"    fc2 1024x1024 p={p:.0f} batch {batch:4d}: " + "  ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
