"""`ham`: Huffman address map (spec/encodings.md, "ham").

The canonical Huffman code of the codebook indices of every entry (zeros included), one
independent bit stream per output row with a bit-offset table, so rows decode independently
(in parallel, or only the rows one needs). matmul decodes four rows' streams at a time,
interleaved, and multiplies as it goes: the dense matrix never exists.
"""
import numpy as np

from .. import errors, huffman
from .. import _native as C
from .._native import bytes_ptr, check, ptr
from ._base import _FIELD_NAMES, EncodedMatrix, check_param_keys, int_param, register

_FIELD_NAMES.update({C.DNNZ_FIELD_LENGTHS: "lengths", C.DNNZ_FIELD_OFFSETS: "offsets",
                     C.DNNZ_FIELD_PAYLOAD: "payload"})

MAX_K = huffman.MAX_SYMBOLS


#: Writers limit codes to the decoder's table width when the alphabet allows it: every table
#: lookup then yields at least one symbol and the decoder's inner loop has no slow path (the
#: optimal length-limited code costs at most a few hundredths of a percent more here).
FAST_MAX_LEN = int(C.DNNZ_HUF_TABLE_BITS)


def code_for(counts):
    """(lengths uint8[k], total bits) of the optimal code for the symbol counts, no code longer
    than FAST_MAX_LEN bits when at most 2**FAST_MAX_LEN symbols are used."""
    counts = np.asarray(counts, np.int64)
    if counts.size == 0:
        return np.zeros(0, np.uint8), 0
    max_len = FAST_MAX_LEN if np.count_nonzero(counts) <= 2**FAST_MAX_LEN else None
    lengths = huffman.code_lengths(counts, max_len=max_len)
    return lengths, int(np.dot(counts, lengths.astype(np.int64)))


def offset_bytes(total_bits):
    """Bytes per stored bit offset: 4 while the payload stays under 2^32 bits, else 8."""
    return 4 if total_bits < 2**32 else 8


def as_symbols(a):
    """Indices as the unsigned array C reads (int32 indices of large codebooks are >= 0)."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.int32:
        return a.view(np.uint32)
    if a.dtype not in (np.uint8, np.uint16, np.uint32):
        return a.astype(np.uint32)
    return a


def c_section_ptrs(keep, codebook, lengths, offsets, payload):
    keep += [ptr(codebook), bytes_ptr(lengths), bytes_ptr(offsets), bytes_ptr(payload)]
    return keep[-4:]


@register
class HuffmanAddressMap(EncodedMatrix):
    """Codebook + canonical Huffman code lengths + per-row bit offsets + the row streams."""

    name = "ham"
    id = 6

    @classmethod
    def applicable(cls, m):
        return m.k <= MAX_K

    @classmethod
    def limits_text(cls):
        return f"at most {MAX_K} distinct values"

    @classmethod
    def min_nbytes(cls, m):
        return 5 * m.k  # codebook (4 bytes) + code length (1 byte) per distinct value

    @classmethod
    def _plan(cls, m):
        counts = np.bincount(m.indices.reshape(-1), minlength=m.k) if m.indices.size else np.zeros(m.k, np.int64)
        if m.rows * m.cols == 0:
            counts = np.zeros(0, np.int64)
        lengths, bits = code_for(counts)
        return lengths, bits

    @classmethod
    def encoded_nbytes(cls, m):
        lengths, bits = cls._plan(m)
        return 5 * lengths.size + (m.rows + 1) * offset_bytes(bits) + (bits + 7) // 8

    @classmethod
    def _encode(cls, m):
        lengths, bits = cls._plan(m)
        k = lengths.size
        ob = offset_bytes(bits)
        codebook = np.ascontiguousarray(m.codebook if k else np.zeros(0, np.float32), dtype="<f4")
        offsets = np.zeros((m.rows + 1) * ob, np.uint8)
        payload = np.zeros((bits + 7) // 8 + 8, np.uint8)
        idx = as_symbols(m.indices) if k else np.zeros(0, np.uint8)
        status = C.dnnz_ham_encode(bytes_ptr(lengths), k, C.cast("void *", ptr(idx)), idx.dtype.itemsize,
                                     m.rows, m.cols, C.cast("uint8_t *", ptr(offsets, writable=True)), ob,
                                     C.cast("uint8_t *", ptr(payload, writable=True)), payload.size)
        check(status, "ham: encoding")
        params = {"k": k, "offset_bytes": ob}
        sections = {"codebook": codebook, "lengths": lengths, "offsets": offsets.view(f"<u{ob}"),
                    "payload": payload[: (bits + 7) // 8]}
        return params, sections

    @classmethod
    def _check_params(cls, params):
        check_param_keys(cls, params, ("k", "offset_bytes"))
        out = {"k": int_param(cls, params, "k", 0, MAX_K),
               "offset_bytes": int_param(cls, params, "offset_bytes", 4, 8)}
        if out["offset_bytes"] not in (4, 8):
            raise errors.CorruptDataError(f"ham: params['offset_bytes'] must be 4 or 8, got {out['offset_bytes']}")
        return out

    @classmethod
    def _section_dtypes(cls, params):
        return {"codebook": np.dtype("<f4"), "lengths": np.dtype("u1"),
                "offsets": np.dtype(f"<u{params['offset_bytes']}"), "payload": np.dtype("u1")}

    def _c_struct(self):
        rows, cols = self._matrix_shape
        p, sec = self._params, self._sections
        s = C.new("struct dnnz_ham *")
        keep = []
        cb, ln, of, pl = c_section_ptrs(keep, sec["codebook"], sec["lengths"], sec["offsets"], sec["payload"])
        s.rows, s.cols, s.k, s.off_bytes = rows, cols, p["k"], p["offset_bytes"]
        s.codebook, s.codebook_len = cb, sec["codebook"].size
        s.lengths, s.lengths_len = ln, sec["lengths"].size
        s.offsets, s.offsets_len = of, sec["offsets"].size
        s.payload, s.payload_len = pl, sec["payload"].size
        return s, keep

    _c_validate = staticmethod(C.dnnz_ham_validate)
    _c_decode_fn = staticmethod(C.dnnz_ham_decode)
    _c_matmul = staticmethod(C.dnnz_ham_matmul)
