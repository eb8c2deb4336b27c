"""Huffman codec throughput (pydnnz.huffman) on one core, against bitarray's canonical decoder
and a NumPy gather of the same length, all measured in the same run.

Data: Laplacian weights quantized uniformly to k levels over [-6b, 6b] (what uniform
quantization of a trained layer gives), k = 2, 32, 256, 4096. For each k it prints the encode and
decode rates in symbols/s, bits/symbol against the order-0 entropy, and the ratios:
decode / numpy gather (`codebook[indices]` of the same length, the cost of merely looking the
symbols up) and decode / bitarray.util.canonical_decode.

    python -m bench.huffman            # 10^7 symbols per alphabet
    python -m bench.huffman --quick    # 10^6 symbols, fewer repeats
    python -m bench.huffman --json     # one JSON record per alphabet on stdout

The machine is shared: compare the ratios within one run, not absolute rates across runs.
"""
import argparse

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode

from pydnnz import huffman

from ._common import best_time as _best_time, emit, entropy_bits, machine

ALPHABETS = (2, 32, 256, 4096)


def laplace_quantized(rng, n, k):
    w = rng.laplace(0.0, 1.0, n)
    idx = np.floor((w + 6.0) / 12.0 * k).astype(np.int64)
    return np.clip(idx, 0, k - 1)


def best_time(fn, repeats):
    """Best of `repeats` calls, no warm-up (the bitarray decoder takes seconds per call)."""
    return _best_time(fn, min_runs=repeats, min_seconds=0, warmup=False)


def bench_alphabet(k, n, n_bitarray, repeats, rng):
    sym = laplace_quantized(rng, n, k)
    sym = sym.astype(np.uint8 if k <= 256 else np.uint16)
    counts = np.bincount(sym, minlength=k)
    lengths = huffman.code_lengths(counts)
    payload, n_bits = huffman.encode(sym, lengths)
    out = huffman.decode(payload, n, lengths)
    assert np.array_equal(out, sym)

    t_enc = best_time(lambda: huffman.encode(sym, lengths), repeats)
    t_dec = best_time(lambda: huffman.decode(payload, n, lengths), repeats)
    codebook = np.linspace(-1, 1, k).astype(np.float32)
    t_gather = best_time(lambda: codebook[sym], repeats)

    # bitarray decodes one symbol per Python iteration: time a prefix of the same stream
    m = min(n, n_bitarray)
    count = [int((lengths == l).sum()) for l in range(int(lengths.max()) + 1)]
    symbol = [s for _, s in sorted((int(l), s) for s, l in enumerate(lengths) if l)]
    prefix_bits = int(np.dot(np.bincount(sym[:m], minlength=k), lengths.astype(np.int64)))
    bits = bitarray(endian="big")
    bits.frombytes(payload[: (prefix_bits + 7) // 8])
    del bits[prefix_bits:]
    ref = list(canonical_decode(bits, count, symbol))
    assert ref == sym[:m].tolist()
    t_ba = best_time(lambda: sum(1 for _ in canonical_decode(bits, count, symbol)), max(1, repeats // 2))

    rec = {
        "alphabet": k,
        "n_symbols": n,
        "max_code_len": int(lengths.max()),
        "bits_per_symbol": n_bits / n,
        "entropy_bits": entropy_bits(counts),
        "encode_sym_per_s": n / t_enc,
        "decode_sym_per_s": n / t_dec,
        "numpy_gather_sym_per_s": n / t_gather,
        "bitarray_decode_sym_per_s": m / t_ba,
        "bitarray_n_symbols": m,
    }
    rec["decode_vs_gather"] = rec["decode_sym_per_s"] / rec["numpy_gather_sym_per_s"]
    rec["decode_vs_bitarray"] = rec["decode_sym_per_s"] / rec["bitarray_decode_sym_per_s"]
    rec["encode_vs_gather"] = rec["encode_sym_per_s"] / rec["numpy_gather_sym_per_s"]
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10^6 symbols and fewer repeats")
    ap.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    ap.add_argument("-n", type=int, default=None, help="symbols per alphabet")
    args = ap.parse_args(argv)
    n = args.n or (10**6 if args.quick else 10**7)
    repeats = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    records = []
    for k in ALPHABETS:
        records.append(bench_alphabet(k, n, 200_000 if args.quick else 1_000_000, repeats, rng))
    if args.json:
        arch = machine()["arch"]
        for r in records:
            emit({**r, "machine": arch})
        return
    print(f"pydnnz.huffman, one core, {n:,} Laplacian-quantized symbols per alphabet "
          f"(M = 10^6 symbols/s; bitarray timed on its first {records[0]['bitarray_n_symbols']:,})")
    hdr = (f"{'k':>5} {'maxlen':>6} {'bits/sym':>8} {'entropy':>8} {'encode M/s':>10} {'decode M/s':>10} "
           f"{'gather M/s':>10} {'bitarray M/s':>12} {'dec/gather':>10} {'dec/bitarray':>12} {'enc/gather':>10}")
    print(hdr)
    for r in records:
        print(f"{r['alphabet']:>5} {r['max_code_len']:>6} {r['bits_per_symbol']:>8.3f} {r['entropy_bits']:>8.3f} "
              f"{r['encode_sym_per_s'] / 1e6:>10.0f} {r['decode_sym_per_s'] / 1e6:>10.0f} "
              f"{r['numpy_gather_sym_per_s'] / 1e6:>10.0f} {r['bitarray_decode_sym_per_s'] / 1e6:>12.2f} "
              f"{r['decode_vs_gather']:>10.2f} {r['decode_vs_bitarray']:>12.0f} {r['encode_vs_gather']:>10.2f}")


if __name__ == "__main__":
    main()
