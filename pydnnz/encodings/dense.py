"""`dense`: the float32 baseline (spec/encodings.md, "dense")."""
import numpy as np

from .. import _native as C
from .._native import ptr
from ._base import EncodedMatrix, check_param_keys, register


@register
class Dense(EncodedMatrix):
    """Row-major float32 values; matmul through the same tiled C kernels as `im`."""

    name = "dense"
    id = 1

    @classmethod
    def _encode(cls, m):
        return {}, {"values": np.ascontiguousarray(m.dense).reshape(-1)}

    @classmethod
    def encoded_nbytes(cls, m):
        return 4 * m.rows * m.cols

    @classmethod
    def _check_params(cls, params):
        check_param_keys(cls, params, ())
        return {}

    @classmethod
    def _section_dtypes(cls, params):
        return {"values": np.dtype("<f4")}

    def _c_struct(self):
        rows, cols = self._matrix_shape
        s = C.new("struct dnnz_dense *")
        v = self._sections["values"]
        keep = [ptr(v)]
        s.rows, s.cols, s.values, s.values_len = rows, cols, keep[0], v.size
        return s, keep

    _c_validate = staticmethod(C.dnnz_enc_dense_validate)
    _c_matmul = staticmethod(C.dnnz_enc_dense_matmul)

    def _c_decode(self, out):
        out.reshape(-1)[:] = self._sections["values"]
