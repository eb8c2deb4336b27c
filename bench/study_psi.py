"""The papers' occupancy formulas (ψ), computed beside the real .dnnz bytes in the study.

These reproduce the space accounting of Marinò et al. (paper-methods.md §6 and §12), so that
our real file bytes can be compared with what the papers' formulas give on the SAME weights:

- HAM: one global (canonical-length) Huffman code over all entries of the kernels, zeros
  included; each layer's bit stream padded to 64-bit words (8 bytes each); dictionary cost
  Σ (len(code) + 13) bytes ([NC23] counts 1 byte per code bit, +1 terminator, +4 value, +8 dict).
- sHAM: per layer CSC with per-column counts; the non-zeros Huffman coded with one global code
  over the non-zeros of all kernels; row indices and counts take w(m) bytes (m = fan-in).
  The papers' code takes the bit lengths from a per-layer code but counts the global
  dictionary; we use the global code for both (the consistent reading).
- IM: (32·K + ⌈log2 K⌉·N) / 8 bytes, K distinct values over all kernels of the type.
- SLR: (m·q + q + q·n) · 4 bytes (the zeros created by sr/rr are not exploited).
- CSC ([ICPR], pruning alone): (2·nnz + n + 1) 32-bit words.

All functions take matrices in PyTorch layout (out, in) (conv kernels flattened to
(out, in·prod(kernel))): fan-in m = shape[1], outputs n = shape[0].

Example:
    >>> import numpy as np

from pydnnz.encodings.csc import ptr_bytes  # the fewest bytes that hold a count: the papers' index width
    >>> w = np.zeros((4, 8), np.float32); w[0, :4] = 1.0
    >>> round(ham_bytes([w]) / (4 * w.size), 3)   # 2 symbols, 1 bit each, 1 word + dictionary
    0.281
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from pydnnz.encodings.csc import ptr_bytes  # the fewest bytes that hold a count: the papers' index width

DICT_ENTRY_OVERHEAD = 13  # bytes per dictionary entry besides the code bits ([NC23] space script)


def _as_matrix(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32)
    return w.reshape(w.shape[0], -1) if w.ndim != 2 else w


def huffman_lengths(counts) -> np.ndarray:
    """Optimal (unlimited) Huffman code lengths for positive counts; one symbol gets length 0.

    Not pydnnz.huffman.code_lengths on purpose: the papers' ψ counts the dictionary as the SUM of
    the code lengths, which differs between optimal codes with ties (counts 1, 1, 2, 2: lengths
    2, 2, 2, 2 or 3, 3, 2, 1, same stream cost), and gives a lone symbol length 0 where a real
    code needs 1 bit. This heapq build is the papers' tie-breaking; the C one would move the
    committed psi_paper values."""
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)  # the papers' single-symbol code is ""
    lengths = np.zeros(n, dtype=np.int64)
    heap = [(int(c), i, [i]) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    tie = n
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1] += 1
        lengths[s2] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def _global_code(values_list):
    """Global symbol → code length table over the concatenated values."""
    allv = np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in values_list])
    syms, counts = np.unique(allv, return_counts=True)
    return syms, huffman_lengths(counts)


def _dict_bytes(lengths) -> int:
    return int(np.sum(lengths + DICT_ENTRY_OVERHEAD))


def _stream_bytes(values, syms, lengths) -> int:
    if values.size == 0:
        return 0
    bits = int(lengths[np.searchsorted(syms, values.ravel())].sum())
    return 8 * math.ceil(bits / 64)


def ham_bytes(mats) -> int:
    """HAM bytes for a list of (quantized) matrices sharing one global Huffman dictionary."""
    mats = [_as_matrix(m) for m in mats]
    syms, lengths = _global_code(mats)
    return _dict_bytes(lengths) + sum(_stream_bytes(m, syms, lengths) for m in mats)


def sham_bytes(mats) -> int:
    """sHAM bytes: CSC per layer, non-zeros Huffman coded with one global dictionary."""
    mats = [_as_matrix(m) for m in mats]
    nzs = [m.T[m.T != 0] for m in mats]  # column-major non-zeros of the (in, out) kernel = rows of (out, in)
    if sum(v.size for v in nzs) == 0:
        syms, lengths = np.zeros(0, np.float32), np.zeros(0, np.int64)
    else:
        syms, lengths = _global_code(nzs)
    total = _dict_bytes(lengths)
    for m, nz in zip(mats, nzs):
        n_out, fan_in = m.shape
        total += _stream_bytes(nz, syms, lengths) + ptr_bytes(fan_in) * (n_out + nz.size)
    return total


def im_bytes(mats) -> int:
    """IM bytes: one float32 codebook of the K distinct values, ⌈log2 K⌉ bits per entry."""
    mats = [_as_matrix(m) for m in mats]
    n = sum(m.size for m in mats)
    k = len(np.unique(np.concatenate([m.ravel() for m in mats])))
    bits = math.ceil(math.log2(k)) if k > 1 else 0
    return (32 * k + bits * n) / 8


def slr_bytes(shapes, q: int) -> int:
    """SLR bytes (m·q + q + q·n)·4 per layer, q capped at min(m, n) as the SVD keeps at most that."""
    total = 0
    for shape in shapes:
        n_out = shape[0]
        fan_in = int(np.prod(shape[1:]))
        qq = min(q, n_out, fan_in)
        total += (fan_in * qq + qq + qq * n_out) * 4
    return total


def csc_bytes(mats) -> int:
    """[ICPR] CSC bound for pruned matrices: (2·nnz + n + 1) 32-bit words per layer."""
    total = 0
    for m in map(_as_matrix, mats):
        total += 4 * (2 * int(np.count_nonzero(m)) + m.shape[0] + 1)
    return total


def paper_psi(mats, kind: str, q: int | None = None) -> tuple[float, str]:
    """ψ as the papers would report it for the kernels of one layer type, and the format used.

    kind: "quantized" (dense: the smaller of HAM and sHAM; conv: IM, pass kind="conv-quantized"),
    "pruned" (CSC, as [ICPR] reports pruning alone), "lowrank" (SLR formula, needs q).
    """
    mats = [_as_matrix(m) for m in mats]
    base = 4 * sum(m.size for m in mats)
    if kind == "lowrank":
        return slr_bytes([m.shape for m in mats], q) / base, "SLR"
    if kind == "pruned":
        return csc_bytes(mats) / base, "CSC"
    if kind == "conv-quantized":
        return im_bytes(mats) / base, "IM"
    if kind == "quantized":
        h, s = ham_bytes(mats), sham_bytes(mats)
        return (h / base, "HAM") if h <= s else (s / base, "sHAM")
    raise ValueError(f"paper_psi: unknown kind {kind!r}")
