"""`csc`: the non-zeros of each output row, contiguous (spec/encodings.md, "csc")."""
import numpy as np

from .. import errors
from .. import _native as C
from .._native import bytes_ptr, ptr
from ._base import EncodedMatrix, check_param_keys, int_param, register

VALUE_KINDS = ("f32", "u8", "u16")


def index_bytes(cols):
    """Bytes per column index: the fewest that hold every index < cols."""
    return 1 if cols <= 256 else 2 if cols <= 65536 else 4


def ptr_bytes(nnz):
    """Bytes per row pointer: the fewest that hold nnz."""
    return 1 if nnz < 256 else 2 if nnz < 65536 else 4 if nnz < 2**32 else 8


def _plan(m):
    """(nnz, value kind, nonzero codebook or None, codebook index per non-zero or None)."""
    # Distinct non-zero values from the codebook every encoding shares (one np.unique per matrix):
    # past 65536 the values are stored as float32 and the per-non-zero value indices are not needed.
    cb_all = m.codebook
    if cb_all.size - np.count_nonzero(cb_all.view(np.uint32) == 0) > 65536:
        return int(np.count_nonzero(m.nonzero_mask)), "f32", None, None
    nnz, cb, vi = m.nonzero_values()
    if nnz == 0:
        return nnz, "f32", None, None
    kv = cb.size
    sizes = {"f32": 4 * nnz}
    if kv <= 256:
        sizes["u8"] = 4 * kv + nnz
    if kv <= 65536:
        sizes["u16"] = 4 * kv + 2 * nnz
    kind = min(sizes, key=lambda n: (sizes[n], VALUE_KINDS.index(n)))
    if kind == "f32":
        return nnz, kind, None, None
    return nnz, kind, cb, vi


@register
class CSC(EncodedMatrix):
    """Row pointers, column indices (1/2/4 bytes) and values (float32, or a codebook + uint8/16).

    "csc" as in the papers (compressed sparse columns of the (in, out) matrix W.T): one output
    unit's non-zeros form one contiguous run, which is CSR of PyTorch's (out, in) W.
    """

    name = "csc"
    id = 2

    @classmethod
    def encoded_nbytes(cls, m):
        nnz, kind, cb, _ = _plan(m)
        per = {"f32": 4, "u8": 1, "u16": 2}[kind]
        return (m.rows + 1) * ptr_bytes(nnz) + nnz * (index_bytes(m.cols) + per) + \
            (4 * cb.size if cb is not None else 0)

    @classmethod
    def _encode(cls, m):
        nnz, kind, cb, vi = _plan(m)
        pb, ib = ptr_bytes(nnz), index_bytes(m.cols)
        rowptr, cols = m.csr()
        sections = {"rowptr": rowptr.astype(f"<u{pb}"), "colidx": cols.astype(f"<u{ib}")}
        if kind == "f32":
            sections["values"] = np.ascontiguousarray(m.dense[m.nonzero_mask], dtype="<f4")
        else:
            sections["codebook"] = np.ascontiguousarray(cb, dtype="<f4")
            sections["vindex"] = vi.astype("<u1" if kind == "u8" else "<u2")
        params = {"nnz": nnz, "ptr_bytes": pb, "index_bytes": ib, "values": kind,
                  "k": 0 if cb is None else int(cb.size)}
        return params, sections

    @classmethod
    def _check_params(cls, params):
        check_param_keys(cls, params, ("nnz", "ptr_bytes", "index_bytes", "values", "k"))
        out = {"nnz": int_param(cls, params, "nnz"),
               "ptr_bytes": int_param(cls, params, "ptr_bytes", 1, 8),
               "index_bytes": int_param(cls, params, "index_bytes", 1, 4),
               "values": params["values"],
               "k": int_param(cls, params, "k", 0, 65536)}
        if out["ptr_bytes"] not in (1, 2, 4, 8) or out["index_bytes"] not in (1, 2, 4):
            raise errors.CorruptDataError(f"csc: params ptr_bytes/index_bytes must be 1, 2, 4 (or 8), got {params}")
        if out["values"] not in VALUE_KINDS:
            raise errors.CorruptDataError(f"csc: params['values'] must be one of {VALUE_KINDS}, got {out['values']!r}")
        return out

    @classmethod
    def _section_dtypes(cls, params):
        d = {"rowptr": np.dtype(f"<u{params['ptr_bytes']}"), "colidx": np.dtype(f"<u{params['index_bytes']}")}
        if params["values"] == "f32":
            d["values"] = np.dtype("<f4")
        else:
            d["codebook"] = np.dtype("<f4")
            d["vindex"] = np.dtype("<u1" if params["values"] == "u8" else "<u2")
        return d

    def _c_struct(self):
        rows, cols = self._matrix_shape
        p, sec = self._params, self._sections
        s = C.new("struct dnnz_csc *")
        s.rows, s.cols, s.nnz, s.k = rows, cols, p["nnz"], p["k"]
        s.ptr_bytes, s.idx_bytes = p["ptr_bytes"], p["index_bytes"]
        s.value_kind = VALUE_KINDS.index(p["values"])
        keep = [bytes_ptr(sec["rowptr"]), bytes_ptr(sec["colidx"])]
        s.rowptr, s.rowptr_len = keep[0], sec["rowptr"].size
        s.colidx, s.colidx_len = keep[1], sec["colidx"].size
        vals = sec["values"] if p["values"] == "f32" else sec["codebook"]
        keep.append(ptr(vals))
        s.values, s.values_len = keep[-1], vals.size
        if p["values"] != "f32":
            keep.append(bytes_ptr(sec["vindex"]))
            s.vindex, s.vindex_len = keep[-1], sec["vindex"].size
        else:
            s.vindex, s.vindex_len = C.NULL, 0
        return s, keep

    _c_validate = staticmethod(C.dnnz_enc_csc_validate)
    _c_decode_fn = staticmethod(C.dnnz_enc_csc_decode)
    _c_matmul = staticmethod(C.dnnz_enc_csc_matmul)
