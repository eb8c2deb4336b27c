"""`sham`: sparse Huffman address map (spec/encodings.md, "sham").

The csc structure (per output row, the ascending column positions of its non-zeros, row
pointers and column indices in the fewest bytes that hold them) with the non-zero values as
canonical-Huffman-coded indices into a codebook of the distinct non-zero values: one stream per
output row and a bit-offset table, so rows decode independently.
"""
import numpy as np

from .. import errors
from .. import _native as C
from .._native import bytes_ptr, check, ptr
from ._base import EncodedMatrix, check_param_keys, index_dtype, int_param, register
from .csc import index_bytes, ptr_bytes
from .ham import MAX_K, as_symbols, c_section_ptrs, code_for, offset_bytes


def n_nonzero_values(m):
    """How many distinct non-zero values `m` holds, from its codebook alone (no Huffman work)."""
    cb = m.codebook
    return int(cb.size - np.count_nonzero(cb.view(np.uint32) == 0))


@register
class SparseHuffmanAddressMap(EncodedMatrix):
    """csc row pointers and column indices + Huffman-coded non-zero value indices per row."""

    name = "sham"
    id = 7

    @classmethod
    def _plan(cls, m):
        def plan():
            nnz, cb, vi = m.nonzero_values()
            counts = np.bincount(vi, minlength=cb.size) if nnz else np.zeros(0, np.int64)
            lengths, bits = code_for(counts)
            return nnz, cb, vi, lengths, bits

        return m.cached("sham", plan)

    @classmethod
    def applicable(cls, m):
        # Decided from the distinct-value count before any Huffman work: a matrix of 10^6 distinct
        # floats must step aside here, not fail inside the code-length builder.
        return n_nonzero_values(m) <= MAX_K

    @classmethod
    def limits_text(cls):
        return f"at most {MAX_K} distinct non-zero values"

    @classmethod
    def min_nbytes(cls, m):
        return 5 * n_nonzero_values(m)  # codebook + code length per distinct non-zero value

    @classmethod
    def encoded_nbytes(cls, m):
        nnz, cb, _, lengths, bits = cls._plan(m)
        return ((m.rows + 1) * (ptr_bytes(nnz) + offset_bytes(bits)) + nnz * index_bytes(m.cols) +
                5 * cb.size + (bits + 7) // 8)

    @classmethod
    def _encode(cls, m):
        nnz, cb, vi, lengths, bits = cls._plan(m)
        k = cb.size
        pb, ib, ob = ptr_bytes(nnz), index_bytes(m.cols), offset_bytes(bits)
        rowptr, cols = m.csr()
        rowptr, cols = rowptr.astype(f"<u{pb}"), cols.astype(f"<u{ib}")
        offsets = np.zeros((m.rows + 1) * ob, np.uint8)
        payload = np.zeros((bits + 7) // 8 + 8, np.uint8)
        sym = as_symbols(vi.astype(index_dtype(k)))
        check(C.dnnz_sham_encode(bytes_ptr(lengths), k, C.cast("void *", ptr(sym)), sym.dtype.itemsize,
                                   bytes_ptr(rowptr), pb, m.rows, C.cast("uint8_t *", ptr(offsets, writable=True)),
                                   ob, C.cast("uint8_t *", ptr(payload, writable=True)), payload.size),
              "sham: encoding")
        params = {"nnz": nnz, "ptr_bytes": pb, "index_bytes": ib, "k": k, "offset_bytes": ob}
        sections = {"rowptr": rowptr, "colidx": cols, "codebook": np.ascontiguousarray(cb, dtype="<f4"),
                    "lengths": lengths, "offsets": offsets.view(f"<u{ob}"), "payload": payload[: (bits + 7) // 8]}
        return params, sections

    @classmethod
    def _check_params(cls, params):
        check_param_keys(cls, params, ("nnz", "ptr_bytes", "index_bytes", "k", "offset_bytes"))
        out = {"nnz": int_param(cls, params, "nnz"),
               "ptr_bytes": int_param(cls, params, "ptr_bytes", 1, 8),
               "index_bytes": int_param(cls, params, "index_bytes", 1, 4),
               "k": int_param(cls, params, "k", 0, MAX_K),
               "offset_bytes": int_param(cls, params, "offset_bytes", 4, 8)}
        if out["ptr_bytes"] not in (1, 2, 4, 8) or out["index_bytes"] not in (1, 2, 4) or \
                out["offset_bytes"] not in (4, 8):
            raise errors.CorruptDataError(
                f"sham: params ptr_bytes (1, 2, 4, 8), index_bytes (1, 2, 4) or offset_bytes (4, 8) out of range: {params}")
        return out

    @classmethod
    def _section_dtypes(cls, params):
        return {"rowptr": np.dtype(f"<u{params['ptr_bytes']}"), "colidx": np.dtype(f"<u{params['index_bytes']}"),
                "codebook": np.dtype("<f4"), "lengths": np.dtype("u1"),
                "offsets": np.dtype(f"<u{params['offset_bytes']}"), "payload": np.dtype("u1")}

    def _c_struct(self):
        rows, cols = self._matrix_shape
        p, sec = self._params, self._sections
        s = C.new("struct dnnz_sham *")
        keep = [bytes_ptr(sec["rowptr"]), bytes_ptr(sec["colidx"])]
        s.rows, s.cols, s.nnz, s.k = rows, cols, p["nnz"], p["k"]
        s.ptr_bytes, s.idx_bytes, s.off_bytes = p["ptr_bytes"], p["index_bytes"], p["offset_bytes"]
        s.rowptr, s.rowptr_len = keep[0], sec["rowptr"].size
        s.colidx, s.colidx_len = keep[1], sec["colidx"].size
        cb, ln, of, pl = c_section_ptrs(keep, sec["codebook"], sec["lengths"], sec["offsets"], sec["payload"])
        s.codebook, s.codebook_len = cb, sec["codebook"].size
        s.lengths, s.lengths_len = ln, sec["lengths"].size
        s.offsets, s.offsets_len = of, sec["offsets"].size
        s.payload, s.payload_len = pl, sec["payload"].size
        return s, keep

    _c_validate = staticmethod(C.dnnz_sham_validate)
    _c_decode_fn = staticmethod(C.dnnz_sham_decode)
    _c_matmul = staticmethod(C.dnnz_sham_matmul)
