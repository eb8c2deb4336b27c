"""Input normalisation: MatrixInput and the helpers every encoding shares to read a matrix.

MatrixInput turns a float array or a quantized tensor into one checked float32 matrix with its
codebook, indices, non-zero values and CSR structure computed once (and cached) for all
candidate encodings. Here too: IEEE totalOrder ranking of float32 bit patterns, the one
index-width rule (`index_dtype`) and the source dtypes an encoded tensor may decode to.
"""
import math

import numpy as np

from .. import errors


def _total_order_key(bits):
    """uint32 keys that sort float32 bit patterns in IEEE totalOrder (-0.0 before +0.0)."""
    bits = bits.astype(np.uint32, copy=False)
    return np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))


def total_order_rank(bits):
    """(order, rank) of distinct float32 bit patterns in IEEE totalOrder (-0.0 before +0.0):
    ``bits[order]`` is sorted, ``rank[i]`` is the place of ``bits[i]`` (int64)."""
    order = np.argsort(_total_order_key(bits), kind="stable")
    rank = np.empty(bits.size, np.int64)
    rank[order] = np.arange(bits.size)
    return order, rank


def index_dtype(k):
    """The narrowest index dtype for a codebook of k entries (uint8, uint16, else int32): the one
    rule for MatrixInput.indices, QuantizedTensor.indices and the sparse encodings' value indices."""
    return np.dtype(np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int32)


#: Dtypes an encoded tensor may be decoded to (spec/dnnz-format.md §7.4, "source_dtype"): every
#: encoding stores exact float32 values; float16 and bfloat16 hold a subset of them, float64 all.
SOURCE_DTYPES = ("float32", "float16", "bfloat16", "float64")


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError as exc:  # pragma: no cover - ml_dtypes is a dependency
        raise errors.UnsupportedError("bfloat16 needs the ml_dtypes package (pip install ml_dtypes)") from exc
    return np.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name):
    """The NumPy dtype of a source dtype name ("float32", "float16", "bfloat16" via ml_dtypes)."""
    return _bfloat16() if name == "bfloat16" else np.dtype(name)


def exact_in(values, name):
    """Whether every float32 in `values` survives a round trip through dtype `name` bit for bit."""
    if name == "float32":
        return True
    v = np.asarray(values, np.float32)
    return bool(np.array_equal(v.astype(numpy_dtype(name)).astype(np.float32).view(np.uint32), v.view(np.uint32)))


class MatrixInput:
    """A matrix to encode, normalised once and shared by every candidate encoding.

    Rules (the same for every encoding):
    - a float ndarray (float16/32/64) with ndim >= 2, or an object with `.codebook` and
      `.indices` (a QuantizedTensor); ndim > 2 is the matrix (shape[0], prod(shape[1:]));
    - float64 values must be exactly representable in float32 (else InvalidArgumentError);
    - NaN is rejected (it has many bit patterns and no meaningful dot product); +-inf are kept;
    - values are compared bit for bit: -0.0 and +0.0 are distinct values, and only +0.0 counts as
      a zero (a sparse encoding stores -0.0 explicitly), so every decode is bit-exact.

    What several encodings derive from the matrix (`nonzero_values`, `csr`, and each encoding's
    plan through `cached`) is computed once per input and kept in an explicit cache, so that
    auto's trial of every encoding (applicable, encoded_nbytes, _encode) does the work once.
    """

    def __init__(self, obj):
        self._dense = self._codebook = self._indices = self._nzmask = None
        self._cache = {}
        self.source_dtype = "float32"  # the dtype decode() gives back (float16/bfloat16 when the input was)
        if hasattr(obj, "codebook") and hasattr(obj, "indices") and not isinstance(obj, np.ndarray):
            self._from_quantized(obj)
        else:
            self._from_array(obj)
        shape = self.shape
        if len(shape) < 2:
            raise errors.ShapeError(f"encode: expected a matrix (ndim >= 2), got shape {shape}")
        self.rows = int(shape[0])
        self.cols = int(math.prod(shape[1:]))
        if self.rows >= 2**31 or self.cols >= 2**31:
            raise errors.ShapeError(f"encode: matrix {self.rows}x{self.cols} has a dimension >= 2**31")

    def _from_array(self, obj):
        if hasattr(obj, "bits") and getattr(obj, "dtype", None) == "bfloat16":  # container.BFloat16Tensor
            obj = np.asarray(obj.bits).view(_bfloat16())
        a = np.asarray(obj)
        if a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: every value is exact in float32
            self.source_dtype = "bfloat16"
            a = a.astype(np.float32)
        elif a.dtype in (np.float16, np.float64):
            self.source_dtype = a.dtype.name  # float64: checked exact in float32 below
        if a.dtype.kind != "f":
            raise errors.InvalidArgumentError(
                f"encode: expected a float array or a quantized tensor, got dtype {a.dtype}")
        if np.isnan(a).any():
            raise errors.InvalidArgumentError("encode: the matrix contains NaN, which no encoding stores")
        f = a.astype(np.float32)
        if a.dtype.itemsize > 4 and not np.array_equal(f.astype(a.dtype), a):
            raise errors.InvalidArgumentError(
                f"encode: {a.dtype} values that float32 cannot represent exactly (encodings are "
                "lossless float32; convert explicitly with .astype(np.float32) if rounding is intended)")
        self.shape = tuple(int(s) for s in a.shape)
        if len(self.shape) >= 2:
            f = np.ascontiguousarray(f).reshape(self.shape[0], int(math.prod(self.shape[1:])))
        self._dense = f

    def _from_quantized(self, obj):
        cb = np.asarray(obj.codebook)
        idx = np.asarray(obj.indices)
        if cb.ndim != 1 or cb.dtype.kind != "f":
            raise errors.InvalidArgumentError("encode: quantized tensor's codebook must be a 1-D float array")
        if idx.dtype.kind not in "iu":
            raise errors.InvalidArgumentError("encode: quantized tensor's indices must be integers")
        if np.isnan(cb).any():
            raise errors.InvalidArgumentError("encode: quantized tensor's codebook contains NaN")
        if cb.dtype == np.float16:
            self.source_dtype = "float16"
        cb32 = cb.astype(np.float32)
        if cb.dtype.itemsize > 4 and not np.array_equal(cb32.astype(cb.dtype), cb):
            raise errors.InvalidArgumentError("encode: codebook values not exactly representable in float32")
        self.shape = tuple(int(s) for s in idx.shape)
        k = cb32.size
        if idx.size and (idx.min() < 0 or idx.max() >= k):
            raise errors.InvalidArgumentError(f"encode: quantized tensor's indices must lie in [0, {k})")
        bits = cb32.view(np.uint32)
        if np.unique(bits).size != k:
            raise errors.InvalidArgumentError("encode: quantized tensor's codebook has repeated values")
        order, rank = total_order_rank(bits)
        if len(self.shape) < 2:
            self._codebook, self._indices = cb32, idx
            return
        idx2 = idx.reshape(self.shape[0], int(math.prod(self.shape[1:])))
        if not np.array_equal(order, np.arange(k)):
            cb32, idx2 = cb32[order], rank[idx2]
        self._codebook = np.ascontiguousarray(cb32)
        self._indices = np.ascontiguousarray(idx2.astype(index_dtype(k), copy=False))

    @property
    def dense(self):
        """The matrix as a C-contiguous float32 (rows, cols) array."""
        if self._dense is None:
            self._dense = self._codebook[self._indices] if self._indices.size else \
                np.zeros((self.rows, self.cols), np.float32)
        return self._dense

    @property
    def codebook(self):
        """Distinct values (float32, IEEE totalOrder); indices() maps every entry into it."""
        if self._codebook is None:
            self._unique()
        return self._codebook

    @property
    def indices(self):
        if self._indices is None:
            self._unique()
        return self._indices

    @property
    def k(self):
        return int(self.codebook.size)

    def _unique(self):
        bits = self.dense.view(np.uint32)
        vals, inv = np.unique(bits.ravel(), return_inverse=True)  # sorted as uint32
        order, rank = total_order_rank(vals)
        self._codebook = np.ascontiguousarray(vals[order].view(np.float32))
        self._indices = rank[inv].astype(index_dtype(vals.size)).reshape(self.rows, self.cols)

    @property
    def nonzero_mask(self):
        """Entries whose bit pattern is not +0.0 (what sparse encodings store)."""
        if self._nzmask is None:
            if self._dense is None:
                zero = np.flatnonzero(self._codebook.view(np.uint32) == 0)
                self._nzmask = (self._indices != zero[0]) if zero.size else \
                    np.ones(self._indices.shape, bool)
            else:
                self._nzmask = self._dense.view(np.uint32) != 0
        return self._nzmask

    def cached(self, key, build):
        """``build()`` computed once per `key` for this input (an encoding's plan, shared by its
        applicable, encoded_nbytes and _encode, and by auto's trials)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def nonzero_values(self):
        """(nnz, codebook of the distinct non-zero values in totalOrder, int64 index of each
        non-zero into it, in row-major order): the values of every sparse encoding."""
        return self.cached("nonzero_values", self._nonzero_values)

    def _nonzero_values(self):
        mask = self.nonzero_mask
        nnz = int(np.count_nonzero(mask))
        if nnz == 0:
            return 0, np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self._codebook is not None:
            used_idx = self.indices[mask]
            used = np.unique(used_idx)
            remap = np.zeros(self.k, np.int64)
            remap[used] = np.arange(used.size)
            return nnz, self.codebook[used], remap[used_idx]
        ub, inv = np.unique(self.dense[mask].view(np.uint32), return_inverse=True)
        order, rank = total_order_rank(ub)
        return nnz, ub[order].view(np.float32), rank[inv]

    def csr(self):
        """(rowptr, colidx) of the non-zeros, both int64: row r's non-zeros are the entries
        rowptr[r]:rowptr[r + 1] of colidx (CSR of the (out, in) matrix, the papers' csc of W.T)."""
        return self.cached("csr", self._csr)

    def _csr(self):
        mask = self.nonzero_mask.reshape(self.rows, self.cols)
        rowptr = np.zeros(self.rows + 1, np.int64)
        np.cumsum(np.count_nonzero(mask, axis=1), out=rowptr[1:])
        return rowptr, np.nonzero(mask)[1].astype(np.int64)
