"""`im` (index map) and its fixed-width variants `im8`, `im4` (spec/encodings.md, "im")."""
import numpy as np

from .. import errors
from .. import _native as C
from .._native import bytes_ptr, ptr
from ._base import EncodedMatrix, check_param_keys, int_param, register

MAX_K = 1 << 24


def min_bits(k):
    """ceil(log2(k)) (0 for k <= 1): the default index width."""
    return max(int(k) - 1, 0).bit_length()


def pack_indices(indices, bits):
    """Pack a (rows, cols) integer array into per-row byte-aligned MSB-first `bits`-bit fields."""
    rows, cols = indices.shape
    stride = (cols * bits + 7) // 8
    out = np.zeros((rows, stride), np.uint8)
    if bits == 0 or rows == 0 or cols == 0:
        return out.reshape(-1)
    step = max(1, (1 << 20) // max(cols, 1))  # rows per chunk: bounds the bit-array temporary
    for r0 in range(0, rows, step):
        chunk = np.ascontiguousarray(indices[r0:r0 + step], dtype=">u4")
        allbits = np.unpackbits(chunk.view(np.uint8).reshape(chunk.shape[0], cols, 4), axis=2)
        out[r0:r0 + step] = np.packbits(allbits[:, :, 32 - bits:].reshape(chunk.shape[0], -1), axis=1)
    return out.reshape(-1)


@register
class IndexMap(EncodedMatrix):
    """Codebook of the k distinct values + ceil(log2 k)-bit indices, each row byte-aligned."""

    name = "im"
    id = 3
    fixed_bits = None  # variants fix the width

    @classmethod
    def _bits_for(cls, k):
        return min_bits(k) if cls.fixed_bits is None else cls.fixed_bits

    @classmethod
    def applicable(cls, m):
        k = m.k
        return k <= MAX_K and (cls.fixed_bits is None or k <= (1 << cls.fixed_bits))

    @classmethod
    def limits_text(cls):
        return f"at most {MAX_K if cls.fixed_bits is None else 1 << cls.fixed_bits} distinct values"

    @classmethod
    def encoded_nbytes(cls, m):
        bits = cls._bits_for(m.k)
        return 4 * m.k + m.rows * ((m.cols * bits + 7) // 8)

    @classmethod
    def _encode(cls, m):
        bits = cls._bits_for(m.k)
        params = {"k": m.k, "bits": bits}
        return params, {"codebook": m.codebook.copy(), "indices": pack_indices(m.indices, bits)}

    @classmethod
    def _check_params(cls, params):
        check_param_keys(cls, params, ("k", "bits"))
        k = int_param(cls, params, "k", 0, MAX_K)
        bits = int_param(cls, params, "bits", 0, 24)
        if bits != cls._bits_for(k):
            raise errors.CorruptDataError(
                f"{cls.name}: params['bits'] must be {cls._bits_for(k)} for k={k}, got {bits}")
        return {"k": k, "bits": bits}

    @classmethod
    def _section_dtypes(cls, params):
        return {"codebook": np.dtype("<f4"), "indices": np.dtype("u1")}

    def _c_struct(self):
        rows, cols = self._matrix_shape
        s = C.new("struct dnnz_im *")
        cb, ix = self._sections["codebook"], self._sections["indices"]
        keep = [ptr(cb), bytes_ptr(ix)]
        s.rows, s.cols, s.k, s.bits = rows, cols, self._params["k"], self._params["bits"]
        s.codebook, s.codebook_len, s.indices, s.indices_len = keep[0], cb.size, keep[1], ix.size
        return s, keep

    _c_validate = staticmethod(C.dnnz_enc_im_validate)
    _c_decode_fn = staticmethod(C.dnnz_enc_im_decode)
    _c_matmul = staticmethod(C.dnnz_enc_im_matmul)


@register
class IndexMap8(IndexMap):
    """`im` with one byte per index (k <= 256): no bit unpacking."""

    name = "im8"
    id = 4
    fixed_bits = 8


@register
class IndexMap4(IndexMap):
    """`im` with one nibble per index (k <= 16)."""

    name = "im4"
    id = 5
    fixed_bits = 4
