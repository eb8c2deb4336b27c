"""The EncodedMatrix base class: what every encoding inherits and what every caller uses.

Shared machinery (decode, matmul, decode_rows, grouped and depthwise products through the C
kernels, validation errors), the hooks each encoding fills in (`applicable`, `_encode`,
`_check_params`, `_section_dtypes`, `_c_struct`, ...) and the params-checking helpers
(`int_param`, `check_param_keys`) the encodings' `_check_params` use.
"""
import math

import numpy as np

from .. import errors, runtime
from .. import _native as C
from ._input import numpy_dtype

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

    def _what(self):
        """The tensor as resource-limit messages name it (the file's tensor name when loaded)."""
        return getattr(self, "_origin", None) or f"{self.name} tensor of shape {list(self._shape)}"

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
        runtime.check_decoded_size(self.decoded_nbytes, self._what(), max_bytes)
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
        # rows comes from the file: one output row per input row must fit the decoded-size limit
        # (an `im` file with one codebook value can claim 2**31 rows in a few hundred bytes)
        runtime.check_decoded_size(4 * rows, self._what(), action="one row of the product's output")
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
        runtime.check_decoded_size(4 * flat.size * cols, self._what(), action=f"decoding {flat.size} rows")
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

    def conv_depthwise(self, x, kernel_size, stride=(1, 1), dilation=(1, 1), padding=(0, 0), bias=None, out=None):
        """Depthwise convolution of the float32 input x (batch, C, H, W) by this weight of shape
        (C * mult, 1, kh, kw): output (batch, C * mult, OH, OW), computed in C straight from the
        input (no im2col, no padded copy), the weight decoded a bounded block at a time.

        `padding`: zeros around the input, (ph, pw) on both sides or (top, bottom, left, right).
        `bias`: None or C * mult float32 values added to each output channel. `out`: None or a
        C-contiguous float32 array of the output's shape to write (returned)."""
        rows, cols = self._matrix_shape
        x = np.ascontiguousarray(x)
        kh, kw = (int(v) for v in kernel_size)
        sh, sw = (int(v) for v in stride)
        dh, dw = (int(v) for v in dilation)
        pad = tuple(int(v) for v in padding)
        if len(pad) == 2:
            pad = (pad[0], pad[0], pad[1], pad[1])
        if len(pad) != 4 or min(pad) < 0:
            raise errors.ShapeError(f"{self.name}.conv_depthwise: padding must be 2 or 4 values >= 0, got {padding}")
        if x.dtype != np.float32 or x.ndim != 4 or x.shape[1] < 1 or rows % x.shape[1] or cols != kh * kw:
            raise errors.ShapeError(f"{self.name}.conv_depthwise: input {x.dtype} {x.shape} does not fit a "
                                    f"({rows}, 1, {kh}, {kw}) depthwise weight")
        if min(sh, sw, dh, dw) < 1:
            raise errors.ShapeError(f"{self.name}.conv_depthwise: stride and dilation must be >= 1")
        n, c, h, w = x.shape
        oh = (h + pad[0] + pad[1] - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pad[2] + pad[3] - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            raise errors.ShapeError(f"{self.name}.conv_depthwise: input {x.shape} is smaller than the kernel")
        if bias is not None:
            bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
            if bias.size != rows:
                raise errors.ShapeError(f"{self.name}.conv_depthwise: bias has {bias.size} values, expected {rows}")
        if out is None:
            y = np.empty((n, rows, oh, ow), np.float32)
        else:
            y = out
            if (not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.shape != (n, rows, oh, ow)
                    or not y.flags.c_contiguous or not y.flags.writeable):
                raise errors.ShapeError(f"{self.name}.conv_depthwise: out must be a writable C-contiguous "
                                        f"float32 array of shape {(n, rows, oh, ow)}")
        runtime._require_path()
        if y.size:
            g = C.new("struct dnnz_conv_geom *")
            g.batch, g.channels, g.mult, g.h, g.w = n, c, rows // c, h, w
            g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.oh, g.ow = kh, kw, sh, sw, dh, dw, oh, ow
            g.pt, g.pl = pad[0], pad[2]
            C.check(C.dnnz_conv_depthwise(self._rows_kind(), self._get_struct(), g, C.ptr(x),
                                          C.NULL if bias is None else C.ptr(bias), C.ptr(y, writable=True)),
                    f"{self.name}.conv_depthwise")
        return y

    def _matmul_plan(self):
        """A callable ``run(x)`` for the torch layers' per-call fast path: x a float32 CPU torch
        tensor (batch, in) -> a new float32 tensor (batch, rows) = x @ W.T by the encoding's C
        kernel (matmul without its per-call checks and NumPy round trips); None when the encoding
        has no plain C kernel."""
        if self._c_matmul is None:
            return None
        import torch

        rows, cols = self._matrix_shape
        runtime.check_decoded_size(4 * rows, self._what(), action="one row of the product's output")
        runtime._require_path()
        fn, struct, cast, check = self._c_matmul, self._get_struct(), C.cast, C.check
        keep, what = self._struct, f"{self.name}.matmul"

        def run(x):
            assert keep is not None
            x = x.contiguous()
            y = torch.empty((x.shape[0], rows))
            st = fn(struct, cast("float *", x.data_ptr()), x.shape[0], cast("float *", y.data_ptr()))
            if st:
                check(st, what)
            return y
        return run

    def _conv_depthwise_plan(self, channels, size, kernel_size, stride, dilation, pad_tl, out_size):
        """A callable ``run(batch, x_addr, bias_addr, y_addr)`` running conv_depthwise on raw
        buffers, for the torch layers' per-call fast path (no array checks per call): x is a
        C-contiguous float32 (batch, channels, *size) buffer, y one of (batch, rows, *out_size), bias
        0 (none) or `rows` floats; the caller sized them from these values. The geometry is checked
        by C on every call (csrc/conv.c)."""
        rows, _ = self._matrix_shape
        g = C.new("struct dnnz_conv_geom *")
        g.channels, g.mult = channels, rows // channels
        g.h, g.w = size
        g.kh, g.kw = kernel_size
        g.sh, g.sw = stride
        g.dh, g.dw = dilation
        g.pt, g.pl = pad_tl
        g.oh, g.ow = out_size
        runtime._require_path()
        fn, kind, struct, cast, check, null = (C.dnnz_conv_depthwise, self._rows_kind(), self._get_struct(), C.cast,
                                               C.check, C.NULL)
        what = f"{self.name}.conv_depthwise"
        keep = self._struct  # the buffers `struct` points into

        def run(batch, x_addr, bias_addr, y_addr):
            assert keep is not None
            g.batch = batch
            st = fn(kind, struct, g, cast("float *", x_addr), cast("float *", bias_addr) if bias_addr else null,
                    cast("float *", y_addr))
            if st:
                check(st, what)
        return run

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
