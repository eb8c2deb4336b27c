"""Encoding registry, input normalisation and the EncodedMatrix base class.

An encoding is a subclass of EncodedMatrix registered with @register. It declares a unique
`name` and `id` (both permanent: a retired name or id is never given to another encoding),
says which inputs it can represent (`applicable`), builds its params and sections from a
normalised input (`_encode`), lists the sections a params dict implies (`_section_dtypes`), and
calls its C validator, decoder and matmul kernel through a cffi struct (`_c_struct`).
"""
import math

import numpy as np

from .. import errors, runtime
from .. import _native as C
from . import _speed

# Permanent name <-> id assignments (spec/encodings.md). Ids are never reused; the Huffman encodings
# `ham`, `sham` and `rlham` (ham.py, sham.py, rlham.py) register themselves with these ids.
RESERVED_IDS = {"dense": 1, "csc": 2, "im": 3, "im8": 4, "im4": 5, "ham": 6, "sham": 7, "rlham": 8}

_REGISTRY = {}  # name -> class, in registration order (auto breaks ties by this order)

_FIELD_NAMES = {
    C.DNNZ_FIELD_NONE: None,
    C.DNNZ_FIELD_PARAMS: "params",
    C.DNNZ_FIELD_VALUES: "values",
    C.DNNZ_FIELD_CODEBOOK: "codebook",
    C.DNNZ_FIELD_INDICES: "indices",
    C.DNNZ_FIELD_ROWPTR: "rowptr",
    C.DNNZ_FIELD_COLIDX: "colidx",
    C.DNNZ_FIELD_VINDEX: "vindex",
}


def register(cls):
    """Class decorator adding an encoding to the registry (names and ids must be new).

    A bad name or id raises InvalidArgumentError (a DnnzError and a ValueError)."""
    name, ident = cls.name, cls.id
    if not isinstance(name, str) or not name or name in _speed.POLICIES:
        raise errors.InvalidArgumentError(f"encoding name {name!r} is not allowed")
    if name in _REGISTRY:
        raise errors.InvalidArgumentError(f"encoding {name!r} is already registered")
    if RESERVED_IDS.get(name, ident) != ident:
        raise errors.InvalidArgumentError(f"encoding {name!r} must use its reserved id {RESERVED_IDS[name]}")
    taken = {c.id: n for n, c in _REGISTRY.items()}
    taken.update({i: n for n, i in RESERVED_IDS.items() if n != name})
    if ident in taken:
        raise errors.InvalidArgumentError(f"encoding id {ident} already belongs to {taken[ident]!r}")
    _REGISTRY[name] = cls
    return cls


def encodings():
    """Names of the registered encodings, in registration order."""
    return tuple(_REGISTRY)


def get_encoding(name):
    """The EncodedMatrix subclass registered as `name` (UnsupportedError if none)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise errors.UnsupportedError(
            f"unknown encoding {name!r} (this build has: {', '.join(_REGISTRY)})") from None


# ---------------------------------------------------------------------------------------------
# input normalisation

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


# ---------------------------------------------------------------------------------------------
# the base class

# The C struct each encoding describes itself with -> its kind for csrc/rows.h and csrc/conv.h.
_ROWS_KINDS = {"struct dnnz_dense": C.DNNZ_ROWS_DENSE, "struct dnnz_csc": C.DNNZ_ROWS_CSC,
               "struct dnnz_im": C.DNNZ_ROWS_IM, "struct dnnz_ham": C.DNNZ_ROWS_HAM,
               "struct dnnz_sham": C.DNNZ_ROWS_SHAM, "struct dnnz_rlham": C.DNNZ_ROWS_RLHAM}


def _readonly(a):
    v = a.view()
    v.flags.writeable = False
    return v


class EncodedMatrix:
    """A matrix in a lossless encoding, with dot products computed from the encoded form.

    Attributes (what the container and every caller rely on): ``encoding`` (name), ``shape`` (original tensor shape),
    ``matrix_shape`` ((out, in)), ``params`` (JSON-serializable dict), ``sections`` (dict of 1-D
    little-endian arrays: exactly the bytes a file stores), ``nbytes`` (sum of the sections'
    sizes). Build one with :func:`pydnnz.encode` or :func:`pydnnz.encodings.from_sections`.

    >>> import numpy as np, pydnnz
    >>> w = np.array([[0, 1.5, 0, 1.5], [2, 0, 0, 1.5], [0, 0, 2, 0]], np.float32)
    >>> e = pydnnz.encode(w, "im")
    >>> e.encoding, e.matrix_shape, e.nbytes
    ('im', (3, 4), 15)
    >>> bool((e.decode() == w).all())
    True
    >>> e.matmul(np.ones(4, np.float32)).tolist()
    [3.0, 3.5, 2.0]
    """

    name = None  # registry name (str), set by each encoding
    id = None    # permanent numeric id

    def __init__(self, shape, params, sections):
        # Internal: `params` and `sections` must already be checked (encode / from_sections).
        self._shape = tuple(shape)
        self._matrix_shape = (self._shape[0], int(math.prod(self._shape[1:])))
        self._params = dict(params)
        self._sections = {k: _readonly(v) for k, v in sections.items()}
        self._struct = None
        self._source_dtype = "float32"

    def __getstate__(self):
        # The cached C struct points into this object's sections: never copy it, rebuild it.
        state = dict(self.__dict__)
        state["_struct"] = None
        return state

    # --- what callers use -------------------------------------------------------------------------
    @property
    def encoding(self):
        return self.name

    @property
    def shape(self):
        return self._shape

    @property
    def matrix_shape(self):
        return self._matrix_shape

    @property
    def params(self):
        return dict(self._params)

    @property
    def sections(self):
        return dict(self._sections)

    @property
    def nbytes(self):
        return int(sum(s.nbytes for s in self._sections.values()))

    @property
    def source_dtype(self):
        """The dtype the tensor had before encoding and that ``decode()`` gives back: "float32",
        "float16" or "bfloat16" (stored in the file; every value is exact in it)."""
        return self._source_dtype

    @property
    def decoded_nbytes(self):
        """Bytes the decoded float32 tensor takes (from the shape alone: nothing is decoded)."""
        rows, cols = self._matrix_shape
        return 4 * rows * cols

    def decode(self, max_bytes=None, *, dtype=None):
        """The exact tensor, of shape ``.shape``, in ``.source_dtype`` (float32 unless the layer was
        encoded from float16, bfloat16 or float64), or in `dtype` (e.g. ``dtype=np.float32``).

        bfloat16 comes back as an ``ml_dtypes.bfloat16`` array. Encodings compute in float32; a
        float16 or bfloat16 source's values are exact in float32, so the round trip is bit-exact.

        Refuses (DnnzMemoryError naming the tensor) when the result would take more than
        `max_bytes` bytes; None means :func:`pydnnz.get_max_decoded_bytes` (default 4 GiB, the
        environment variable ``DNNZ_MAX_DECODED_BYTES`` raises it). A small file can describe a
        huge tensor, so the shape alone is not trusted with memory.
        """
        rows, cols = self._matrix_shape
        runtime.check_decoded_size(self.decoded_nbytes, getattr(self, "_origin", None) or
                                   f"{self.name} tensor of shape {list(self._shape)}", max_bytes)
        out = np.empty((rows, cols), np.float32)
        if out.size:
            self._c_decode(out)
        out = out.reshape(self._shape)
        want = numpy_dtype(self._source_dtype) if dtype is None else np.dtype(dtype)
        if want == np.float32:
            return out
        with np.errstate(over="ignore"):  # IEEE rounding: a value past the dtype's range becomes inf
            return out.astype(want)

    def matmul(self, x):
        """``x @ W.T`` for float32 `x` of shape (batch, in) or (in,), computed in C.

        The dense matrix is never built; multithreaded (see pydnnz.set_num_threads) with results
        that do not depend on the thread count.
        """
        rows, cols = self._matrix_shape
        x = np.asarray(x)
        if x.dtype == np.float16:
            x = x.astype(np.float32)
        if x.dtype != np.float32:
            raise errors.InvalidArgumentError(f"{self.name}.matmul: x must be float32, got {x.dtype}")
        one = x.ndim == 1
        if one:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != cols:
            raise errors.ShapeError(
                f"{self.name}.matmul: x must have shape (batch, {cols}) or ({cols},), got {x.shape}")
        x = np.ascontiguousarray(x)
        y = np.empty((x.shape[0], rows), np.float32)
        runtime._require_path()
        if y.size:
            C.check(self._c_matmul(self._get_struct(), C.ptr(x), x.shape[0], C.ptr(y, writable=True)),
                    f"{self.name}.matmul")
        return y[0] if one else y

    def decode_rows(self, ids):
        """Rows `ids` of the matrix, exactly: float32 of shape ``ids.shape + shape[1:]``.

        Decoded in C from the rows' own bytes (runs of consecutive ids as one block): the cost is
        proportional to the rows asked for, never to the matrix. Ids may repeat and come in any
        order; an id outside [0, rows) raises InvalidArgumentError.

        >>> import numpy as np, pydnnz
        >>> w = np.arange(12, dtype=np.float32).reshape(4, 3)
        >>> pydnnz.encode(w, "ham").decode_rows([3, 0]).tolist()
        [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]]
        """
        rows, cols = self._matrix_shape
        a = np.asarray(ids)
        if a.dtype.kind not in "iu" or a.dtype == np.bool_:
            raise errors.InvalidArgumentError(f"{self.name}.decode_rows: ids must be integers, got dtype {a.dtype}")
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= rows:
                bad = lo if lo < 0 else hi
                raise errors.InvalidArgumentError(
                    f"{self.name}.decode_rows: row id {bad} is out of range [0, {rows})")
        flat = np.ascontiguousarray(a.reshape(-1), dtype=np.int64)
        out = np.empty((flat.size, cols), np.float32)
        if out.size:
            bad = C.new("int64_t *", -1)
            C.check(C.dnnz_rows_decode(self._rows_kind(), self._get_struct(), C.ptr(flat), flat.size,
                                       C.ptr(out, writable=True), bad), f"{self.name}.decode_rows")
        return out.reshape(a.shape + tuple(self._shape[1:]))

    def matmul_grouped(self, cols, groups):
        """Grouped product: ``y[g] = cols[g] @ W_g.T`` for the `groups` row blocks W_g of W.

        `cols` is float32 (groups, n, in); the result is (groups, n, out // groups). One C call
        for all groups, from the encoded weight (no per-group re-encoding); groups with few output
        rows (depthwise) decode a bounded block of the weight at a time (csrc/conv.h).
        """
        rows, cols_in = self._matrix_shape
        groups = int(groups)
        if groups < 1 or rows % groups:
            raise errors.ShapeError(f"{self.name}.matmul_grouped: {rows} rows do not split into {groups} groups")
        x = np.asarray(cols)
        if x.dtype != np.float32 or x.ndim != 3 or x.shape[0] != groups or x.shape[2] != cols_in:
            raise errors.ShapeError(f"{self.name}.matmul_grouped: cols must be float32 ({groups}, n, {cols_in}), "
                                    f"got {x.dtype} {x.shape}")
        x = np.ascontiguousarray(x)
        y = np.empty((groups, x.shape[1], rows // groups), np.float32)
        runtime._require_path()
        if y.size:
            C.check(C.dnnz_conv_grouped(self._rows_kind(), self._get_struct(), C.ptr(x), groups, x.shape[1],
                                        C.ptr(y, writable=True)), f"{self.name}.matmul_grouped")
        return y

    def conv_depthwise(self, x, kernel_size, stride=(1, 1), dilation=(1, 1)):
        """Depthwise convolution of the (already padded) float32 input x (batch, C, H, W) by this
        weight of shape (C * mult, 1, kh, kw): output (batch, C * mult, OH, OW), computed in C
        straight from the input (no im2col), the weight decoded a bounded block at a time."""
        rows, cols = self._matrix_shape
        x = np.ascontiguousarray(x)
        kh, kw = (int(v) for v in kernel_size)
        sh, sw = (int(v) for v in stride)
        dh, dw = (int(v) for v in dilation)
        if x.dtype != np.float32 or x.ndim != 4 or x.shape[1] < 1 or rows % x.shape[1] or cols != kh * kw:
            raise errors.ShapeError(f"{self.name}.conv_depthwise: input {x.dtype} {x.shape} does not fit a "
                                    f"({rows}, 1, {kh}, {kw}) depthwise weight")
        n, c, h, w = x.shape
        oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            raise errors.ShapeError(f"{self.name}.conv_depthwise: input {x.shape} is smaller than the kernel")
        y = np.empty((n, rows, oh, ow), np.float32)
        runtime._require_path()
        if y.size:
            g = C.new("struct dnnz_conv_geom *")
            g.batch, g.channels, g.mult, g.h, g.w = n, c, rows // c, h, w
            g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow = kh, kw, sh, sw, dh, dw, oh, ow
            C.check(C.dnnz_conv_depthwise(self._rows_kind(), self._get_struct(), g, C.ptr(x), C.ptr(y, writable=True)),
                  f"{self.name}.conv_depthwise")
        return y

    def _rows_kind(self):
        return _ROWS_KINDS[C.struct_name(self._get_struct())]

    def __repr__(self):
        return (f"<EncodedMatrix {self.name} shape={self._shape} params={self._params} "
                f"nbytes={self.nbytes}>")

    # --- what each encoding provides ----------------------------------------------------------
    @classmethod
    def applicable(cls, m):
        """Whether this encoding can represent the MatrixInput `m` (auto only tries these)."""
        return True

    @classmethod
    def limits_text(cls):
        """What inputs the encoding accepts, for error messages."""
        return "no limits"

    @classmethod
    def min_nbytes(cls, m):
        """A cheap lower bound of ``encoded_nbytes(m)`` (no planning): auto skips an encoding whose
        bound already loses to the best size found, before any Huffman or run-length work."""
        return 0

    @classmethod
    def _encode(cls, m):
        """(params, sections) for the MatrixInput `m`."""
        raise NotImplementedError

    @classmethod
    def encoded_nbytes(cls, m):
        """Exact `.nbytes` this encoding would give `m` (used by auto; override when cheaper)."""
        return int(sum(s.nbytes for s in cls._encode(m)[1].values()))

    @classmethod
    def _check_params(cls, params):
        """Validated copy of `params` (types and keys only; C checks consistency)."""
        raise NotImplementedError

    @classmethod
    def _section_dtypes(cls, params):
        """{section name: dtype} that `params` implies, in file order."""
        raise NotImplementedError

    def _c_struct(self):
        """(cffi struct pointer, keep-alive list) describing this matrix for C."""
        raise NotImplementedError

    _c_validate = _c_decode_fn = _c_matmul = None

    def _c_decode(self, out):
        C.check(self._c_decode_fn(self._get_struct(), C.ptr(out, writable=True)), f"{self.name}.decode")

    # --- shared machinery ------------------------------------------------------------------------
    def _get_struct(self):
        if self._struct is None:
            self._struct = self._c_struct()
        return self._struct[0]

    def _validate(self):
        status, field, where = C.validate(self._c_validate, self._get_struct())
        if status != C.DNNZ_OK:
            field = _FIELD_NAMES.get(field)
            what = f"{self.name}: " + (f"params {self._params}" if field == "params" else
                                       f"section {field!r}" if field else "encoded matrix")
            if where >= 0 and field != "params":
                what += f" at {'row' if status == C.DNNZ_E_TRAILING and field == 'indices' else 'element'} {where}"
            cls = C.error_class(status)
            if not issubclass(cls, errors.CorruptDataError) and cls is not errors.UnsupportedError:
                cls = errors.CorruptDataError
            raise cls(f"{what}: {C.status_name(status)}")


def _check_shape(shape):
    try:
        shape = tuple(operator_index(s) for s in shape)
    except TypeError:
        raise errors.ShapeError(f"from_sections: shape must be a tuple of ints, got {shape!r}") from None
    if len(shape) < 2 or any(s < 0 for s in shape):
        raise errors.ShapeError(f"from_sections: shape must have ndim >= 2 and no negative size, got {shape}")
    if shape[0] >= 2**31 or math.prod(shape[1:]) >= 2**31:
        raise errors.ShapeError(f"from_sections: shape {shape} has a matrix dimension >= 2**31")
    return shape


def operator_index(v):
    import operator
    if isinstance(v, bool):
        raise TypeError
    return operator.index(v)


def int_param(cls, params, key, lo=0, hi=2**63 - 1):
    v = params.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise errors.CorruptDataError(f"{cls.name}: params[{key!r}] must be an int in [{lo}, {hi}], got {v!r}")
    return int(v)


def check_param_keys(cls, params, keys):
    if not isinstance(params, dict):
        raise errors.CorruptDataError(f"{cls.name}: params must be a dict, got {type(params).__name__}")
    if set(params) != set(keys):
        raise errors.CorruptDataError(
            f"{cls.name}: params must have exactly the keys {sorted(keys)}, got {sorted(params)}")


def _source_dtype(m, source_dtype):
    if source_dtype is None:
        return m.source_dtype
    if source_dtype not in SOURCE_DTYPES:
        raise errors.InvalidArgumentError(
            f"encode: source_dtype must be one of {', '.join(SOURCE_DTYPES)}, got {source_dtype!r}")
    if source_dtype != m.source_dtype and not exact_in(m.codebook, source_dtype):
        raise errors.InvalidArgumentError(
            f"encode: source_dtype {source_dtype!r}: the matrix holds values that {source_dtype} "
            "cannot represent exactly (round the codebook first)")
    return source_dtype


def encode(matrix, encoding="auto", *, source_dtype=None):
    """Encode a float matrix or quantized tensor losslessly; `encoding` is a name or a policy.

    float16 and bfloat16 (``ml_dtypes.bfloat16``) inputs are encoded as their exact float32
    values and remember their dtype: ``decode()`` gives it back. `source_dtype` sets it
    explicitly (e.g. for a quantized tensor whose codebook is exact in float16).

    Policies (pydnnz/encodings/_speed.py): ``"auto"`` (default) picks the smallest encoding whose
    estimated dot product time is within SPEED_BUDGET (1.5x) of the fastest one for this matrix;
    ``"smallest"`` the fewest bytes whatever the speed; ``"fastest"`` the lowest estimated time.
    Ties go to the encoding registered first (dense, csc, im, ...).

    >>> import numpy as np, pydnnz
    >>> w = np.zeros((64, 64), np.float32); w[::8, ::8] = 0.5
    >>> e = pydnnz.encode(w)
    >>> e.encoding, e.nbytes < w.nbytes
    ('csc', True)
    >>> pydnnz.encode(w, "smallest").encoding
    'rlham'
    >>> bool((e.decode() == w).all())
    True
    """
    if getattr(matrix, "row_scale", None) is not None:  # per-channel scales (see .scaled)
        from .scaled import encode_scaled
        return encode_scaled(matrix, encoding)
    m = matrix if isinstance(matrix, MatrixInput) else MatrixInput(matrix)
    source_dtype = _source_dtype(m, source_dtype)
    if encoding in _speed.POLICIES:
        cls = _speed.choose(m, encoding, list(_REGISTRY.values()))
    else:
        cls = get_encoding(encoding)
        if not cls.applicable(m):
            raise errors.InvalidArgumentError(
                f"encode: encoding {encoding!r} cannot represent this matrix ({cls.limits_text()})")
    params, sections = cls._encode(m)
    obj = cls(m.shape, params, sections)
    obj._validate()  # cheap next to encoding, and the kernels rely on it
    obj._source_dtype = source_dtype
    return obj


def from_sections(encoding, shape, params, sections, *, source_dtype="float32"):
    """Rebuild an EncodedMatrix from stored parts, validating every byte (in C).

    Sections must be 1-D C-contiguous arrays of exactly the dtypes the spec gives. Read-only
    arrays (a memory map) are used in place; writable ones are copied so that later writes by
    the caller cannot invalidate what was checked. Any inconsistency raises a DnnzError subclass.

    >>> import numpy as np, pydnnz
    >>> from pydnnz.encodings import from_sections
    >>> e = pydnnz.encode(np.eye(3, dtype=np.float32), "csc")
    >>> f = from_sections(e.encoding, e.shape, e.params, e.sections)
    >>> bool((f.decode() == np.eye(3)).all())
    True
    """
    cls = get_encoding(encoding)
    if source_dtype not in SOURCE_DTYPES:
        raise errors.CorruptDataError(f"{encoding}: source_dtype must be one of {SOURCE_DTYPES}, got {source_dtype!r}")
    if isinstance(params, dict) and "row_scale_rows" in params:  # per-channel scales (see .scaled)
        from .scaled import scaled_from_sections
        return scaled_from_sections(encoding, shape, params, sections)
    shape = _check_shape(shape)
    params = cls._check_params(params)
    expected = cls._section_dtypes(params)
    if not isinstance(sections, dict) or set(sections) != set(expected):
        got = sorted(sections) if isinstance(sections, dict) else type(sections).__name__
        raise errors.CorruptDataError(
            f"{cls.name}: sections must be exactly {sorted(expected)}, got {got}")
    checked = {}
    for key, dtype in expected.items():
        a = sections[key]
        if not isinstance(a, np.ndarray) or a.ndim != 1 or np.dtype(a.dtype) != np.dtype(dtype) \
                or not a.flags.c_contiguous:
            desc = f"{a.dtype}{list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
            raise errors.CorruptDataError(
                f"{cls.name}: section {key!r} must be a 1-D contiguous {np.dtype(dtype).str} array, got {desc}")
        checked[key] = a.copy() if a.flags.writeable else a
    obj = cls(shape, params, checked)
    obj._validate()
    obj._source_dtype = source_dtype
    return obj
