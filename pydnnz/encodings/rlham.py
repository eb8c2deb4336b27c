"""`rlham`: run-length Huffman address map (spec/encodings.md, "rlham").

Per output row, the (zero run before the next non-zero, codebook index of that non-zero) pairs,
each pair one symbol of a joint (run class, value) alphabet coded with a canonical Huffman code:
runs below `direct_runs` have a class each, longer runs fall into log2 buckets whose offset
follows the code as raw bits, and an end-of-row symbol ends each row (trailing zeros cost
nothing). Dense rows cost about the entropy of their values (every run is 0, so the joint
symbol is the value), sparse rows about the entropy of runs and values together, with no
1-bit-per-entry floor. One independent stream per row with a bit-offset table, like ham.
"""
import numpy as np

from .. import errors, huffman
from .. import _native as C
from .._native import bytes_ptr, check, ptr
from ._base import EncodedMatrix, check_param_keys, int_param, register
from .ham import MAX_K, c_section_ptrs
from .sham import n_nonzero_values

MAX_SYMBOLS = huffman.MAX_SYMBOLS
MAX_BUCKETS = 31  # classes above direct_runs: runs stay below 2**31
# direct-run counts the writer tries (the smallest encoding wins, ties to the smaller count)
DIRECT_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def offset_bytes(total_bits):
    """Bytes per stored bit offset: the fewest (1..8) that hold the payload's bit count.

    >>> offset_bytes(0), offset_bytes(255), offset_bytes(256), offset_bytes(2**32)
    (1, 1, 2, 5)
    """
    return max(1, (int(total_bits).bit_length() + 7) // 8)


def run_classes(runs, direct):
    """(class, extra bit count, extra value) of each run for `direct` directly coded runs.

    Runs below `direct` are their own class; class direct + j holds the runs
    direct - 1 + 2**j + e for the j-bit extra value e (spec/encodings.md, "rlham").

    >>> [a.tolist() for a in run_classes([0, 1, 2, 3, 4, 5, 9], 2)]
    [[0, 1, 2, 3, 3, 4, 5], [0, 0, 0, 1, 1, 2, 3], [0, 0, 0, 0, 1, 0, 0]]
    """
    runs = np.asarray(runs, np.int64)
    t = np.maximum(runs - direct + 1, 1)
    j = np.frexp(t.astype(np.float64))[1].astype(np.int64) - 1  # floor(log2 t), exact below 2**53
    long = runs >= direct
    cls = np.where(long, direct + j, runs)
    nbits = np.where(long, j, 0)
    extra = np.where(long, t - (np.int64(1) << j), 0)
    return cls, nbits, extra


def n_classes(max_run, direct):
    """Classes needed for runs up to max_run (-1: no non-zero at all).

    >>> n_classes(-1, 4), n_classes(3, 4), n_classes(4, 4), n_classes(1000, 4)
    (4, 4, 5, 14)
    """
    if max_run < direct:
        return direct
    return direct + int(max_run - direct + 1).bit_length()


def _pairs(m):
    """(nnz, codebook, vindex, rowptr, colidx, runs) in row-major order of the non-zeros."""
    nnz, cb, vi = m.nonzero_values()
    rowptr, cols = m.csr()
    prev = np.empty(nnz, np.int64)
    if nnz:
        prev[1:] = cols[:-1]
        starts = rowptr[:-1][rowptr[1:] > rowptr[:-1]]
        prev[starts] = -1
    runs = cols - prev - 1
    return nnz, cb, vi, rowptr, cols, runs


def _cost(m, k, runs, vi, direct):
    """(nbytes, lengths, run_classes, payload bits) for one choice of direct_runs, or None."""
    max_run = int(runs.max()) if runs.size else -1
    nc = n_classes(max_run, direct)
    n_alpha = nc * k + 1
    if n_alpha > MAX_SYMBOLS:
        return None
    cls, nbits, _ = run_classes(runs, direct)
    counts = np.bincount(cls * k + vi, minlength=n_alpha) if runs.size else np.zeros(n_alpha, np.int64)
    counts[-1] = m.rows
    if m.rows == 0:
        lengths = np.zeros(n_alpha, np.uint8)
    else:
        lengths = huffman.code_lengths(counts)
    bits = int(np.dot(counts, lengths.astype(np.int64))) + int(nbits.sum())
    nbytes = 4 * k + n_alpha + (m.rows + 1) * offset_bytes(bits) + (bits + 7) // 8
    return nbytes, lengths, nc, bits


@register
class RunLengthHuffmanAddressMap(EncodedMatrix):
    """Codebook of the non-zero values + canonical code of joint (run class, value) symbols per row.

    >>> import numpy as np, pydnnz
    >>> w = np.zeros((64, 1024), np.float32); w[:, ::37] = 0.5; w[::3, 5::41] = -1.0
    >>> e = pydnnz.encode(w, "rlham")
    >>> e.nbytes * 8 < w.size  # under 1 bit per entry, which ham cannot reach
    True
    >>> bool((e.decode() == w).all())
    True
    >>> bool(np.allclose(e.matmul(np.ones(1024, np.float32)), w.sum(1)))
    True
    """

    name = "rlham"
    id = 8

    @classmethod
    def _plan(cls, m):
        return m.cached("rlham", lambda: cls._search(m))

    @classmethod
    def _search(cls, m):
        """(codebook, vindex, rowptr, colidx, (direct runs, cost) of the cheapest code or None)."""
        nnz, cb, vi, rowptr, cols, runs = _pairs(m)
        k = int(cb.size)
        best = None
        if k <= MAX_K:
            for d in DIRECT_CANDIDATES if nnz else (1,):
                c = _cost(m, k, runs, vi, d)
                if c is not None and (best is None or c[0] < best[1][0]):
                    best = (d, c)
        return cb, vi, rowptr, cols, best

    @classmethod
    def applicable(cls, m):
        # The cheap bound first: too many distinct non-zero values never fit the joint alphabet.
        return n_nonzero_values(m) < MAX_SYMBOLS and cls._plan(m)[4] is not None

    @classmethod
    def limits_text(cls):
        return f"at most {MAX_K} distinct non-zero values and (run classes x values + 1) <= {MAX_SYMBOLS}"

    @classmethod
    def min_nbytes(cls, m):
        return 5 * n_nonzero_values(m)  # codebook (4 bytes) + at least one code length per value

    @classmethod
    def encoded_nbytes(cls, m):
        return cls._plan(m)[4][1][0]

    @classmethod
    def _encode(cls, m):
        cb, vi, rowptr, cols, (direct, (_, lengths, nc, bits)) = cls._plan(m)
        k = int(cb.size)
        ob = offset_bytes(bits)
        offsets = np.zeros((m.rows + 1) * ob, np.uint8)
        payload = np.zeros((bits + 7) // 8 + 9, np.uint8)
        colidx = np.ascontiguousarray(cols, np.uint32)
        vindex = np.ascontiguousarray(vi, np.uint32)
        rp = np.ascontiguousarray(rowptr, np.int64)
        check(C.dnnz_rlham_encode(bytes_ptr(lengths), k, direct, nc, C.cast("int64_t *", ptr(rp)),
                                    C.cast("uint32_t *", ptr(colidx)), C.cast("uint32_t *", ptr(vindex)),
                                    m.rows, m.cols, C.cast("uint8_t *", ptr(offsets, writable=True)), ob,
                                    C.cast("uint8_t *", ptr(payload, writable=True)), payload.size),
              "rlham: encoding")
        params = {"k": k, "direct_runs": direct, "run_classes": nc, "offset_bytes": ob}
        sections = {"codebook": np.ascontiguousarray(cb, dtype="<f4"), "lengths": lengths,
                    "offsets": offsets, "payload": payload[: (bits + 7) // 8]}
        return params, sections

    @classmethod
    def _check_params(cls, params):
        check_param_keys(cls, params, ("k", "direct_runs", "run_classes", "offset_bytes"))
        out = {"k": int_param(cls, params, "k", 0, MAX_K),
               "direct_runs": int_param(cls, params, "direct_runs", 1, MAX_SYMBOLS),
               "run_classes": int_param(cls, params, "run_classes", 1, MAX_SYMBOLS + MAX_BUCKETS),
               "offset_bytes": int_param(cls, params, "offset_bytes", 1, 8)}
        if not out["direct_runs"] <= out["run_classes"] <= out["direct_runs"] + MAX_BUCKETS:
            raise errors.CorruptDataError(
                f"rlham: params run_classes must lie in [direct_runs, direct_runs + {MAX_BUCKETS}], got {params}")
        if out["run_classes"] * out["k"] + 1 > MAX_SYMBOLS:
            raise errors.CorruptDataError(
                f"rlham: params give an alphabet of run_classes * k + 1 > {MAX_SYMBOLS} symbols: {params}")
        return out

    @classmethod
    def _section_dtypes(cls, params):
        return {"codebook": np.dtype("<f4"), "lengths": np.dtype("u1"),
                "offsets": np.dtype("u1"), "payload": np.dtype("u1")}

    def _c_struct(self):
        rows, cols = self._matrix_shape
        p, sec = self._params, self._sections
        s = C.new("struct dnnz_rlham *")
        keep = []
        cb, ln, of, pl = c_section_ptrs(keep, sec["codebook"], sec["lengths"], sec["offsets"], sec["payload"])
        s.rows, s.cols, s.k, s.off_bytes = rows, cols, p["k"], p["offset_bytes"]
        s.direct_runs, s.run_classes = p["direct_runs"], p["run_classes"]
        s.codebook, s.codebook_len = cb, sec["codebook"].size
        s.lengths, s.lengths_len = ln, sec["lengths"].size
        s.offsets, s.offsets_len = of, sec["offsets"].size
        s.payload, s.payload_len = pl, sec["payload"].size
        return s, keep

    _c_validate = staticmethod(C.dnnz_rlham_validate)
    _c_decode_fn = staticmethod(C.dnnz_rlham_decode)
    _c_matmul = staticmethod(C.dnnz_rlham_matmul)
