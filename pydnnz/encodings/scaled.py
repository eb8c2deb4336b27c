"""Per-channel (per-row-block) scales on top of any encoding: ``W[r, :] = s[r // B] * Wn[r, :]``.

A quantizer run with ``granularity="channel"`` (or a block of B rows) divides each row block of
the weight by its own scale, fits ONE shared codebook on the normalised values, and returns a
QuantizedTensor carrying ``row_scale`` (float32, one value per block of ``scale_rows`` rows).
:func:`encode` stores the normalised matrix ``Wn`` with an ordinary encoding and keeps the
scales next to it: a :class:`ScaledMatrix`. Dot products stay on the compressed form,

    x @ W.T = (x @ Wn.T) * s_row          (s_row[r] = row_scale[r // scale_rows])

with the encoding's own C kernel, followed by one multiply per output. In a file the tensor is
an encoded tensor of the inner encoding with one extra param ``row_scale_rows`` (B, an int >= 1)
and one extra section ``row_scale`` (``<f4``, ``ceil(rows / B)`` finite values), see
spec/encodings.md, "Row scales".
"""
from __future__ import annotations

import numpy as np

from .. import errors

SCALE_PARAM = "row_scale_rows"
SCALE_SECTION = "row_scale"


def _expand(row_scale, block, rows):
    return np.repeat(row_scale, block)[:rows] if block > 1 else row_scale[:rows]


def check_row_scale(row_scale, block, rows, error=errors.CorruptDataError):
    """Validated float32 row scales (1-D, ceil(rows / block) finite values) and the block."""
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or int(block) < 1 \
            or int(block) > max(rows, 1):
        raise error(f"row scales: {SCALE_PARAM} must be an int in [1, {max(rows, 1)}], got {block!r}")
    block = int(block)
    s = np.asarray(row_scale)
    want = -(-rows // block)
    if s.ndim != 1 or s.dtype != np.float32 or s.size != want:
        raise error(f"row scales: section {SCALE_SECTION!r} must hold {want} float32 values "
                    f"(ceil({rows} rows / {block})), got {s.dtype}{list(s.shape)}")
    if not np.all(np.isfinite(s)):
        raise error(f"row scales: section {SCALE_SECTION!r} holds a non-finite value")
    return s, block


class ScaledMatrix:
    """An EncodedMatrix of row-normalised values plus one float32 scale per block of rows.

    Same interface as an EncodedMatrix (contract 3): ``encoding`` (the inner encoding's name),
    ``shape``, ``matrix_shape``, ``params`` and ``sections`` (the inner ones plus the scale's),
    ``nbytes``, ``decode()``, ``matmul(x)``, and the conv products ``matmul_grouped`` and
    ``conv_depthwise`` (the inner kernel, then the scales). ``inner`` is the encoded normalised matrix,
    ``row_scale`` the scales and ``scale_rows`` the rows per scale (1: per output channel).

    >>> import numpy as np, pydnnz
    >>> from pydnnz.compress import quantize
    >>> w = np.array([[0.01, -0.02, 0.02], [3.0, -1.0, 2.0]], np.float32)
    >>> q = quantize(w, "uq", 5, granularity="channel")
    >>> e = pydnnz.encode(q)
    >>> type(e).__name__, e.scale_rows, bool((e.decode() == np.asarray(q)).all())
    ('ScaledMatrix', 1, True)
    """

    def __init__(self, inner, row_scale, scale_rows):
        rows = inner.matrix_shape[0]
        self.row_scale, self.scale_rows = check_row_scale(row_scale, scale_rows, rows,
                                                          errors.InvalidArgumentError)
        self.row_scale = self.row_scale.view()
        self.row_scale.flags.writeable = False
        self.inner = inner
        self._s = np.ascontiguousarray(_expand(self.row_scale, self.scale_rows, rows))

    # --- contract 3 ---------------------------------------------------------------------------
    @property
    def encoding(self):
        return self.inner.encoding

    @property
    def shape(self):
        return self.inner.shape

    @property
    def matrix_shape(self):
        return self.inner.matrix_shape

    @property
    def params(self):
        p = self.inner.params
        p[SCALE_PARAM] = self.scale_rows
        return p

    @property
    def sections(self):
        s = self.inner.sections
        s[SCALE_SECTION] = self.row_scale
        return s

    @property
    def nbytes(self):
        return int(self.inner.nbytes + self.row_scale.nbytes)

    def decode(self):
        """The exact float32 tensor: ``float32(s_row[r] * Wn[r, c])``, of shape ``.shape``."""
        wn = np.asarray(self.inner.decode(), dtype=np.float32).reshape(self.matrix_shape)
        return (wn * self._s[:, None]).reshape(self.shape)

    def decode_rows(self, ids):
        """Rows `ids` of the matrix view (needs the inner encoding's decode_rows)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        rows = np.asarray(self.inner.decode_rows(ids), dtype=np.float32).reshape(ids.size, -1)
        return (rows * self._s[ids][:, None]).reshape((ids.size,) + tuple(self.shape[1:]))

    def matmul(self, x):
        """``x @ W.T`` = ``(x @ Wn.T) * s_row``: the inner encoding's kernel, then one multiply per output."""
        y = self.inner.matmul(x)
        y *= self._s
        return y

    def matmul_grouped(self, cols, groups):
        """Grouped product (EncodedMatrix.matmul_grouped) of the inner encoding, each output row
        then times its scale: grouped and depthwise convs run from the compressed form."""
        y = self.inner.matmul_grouped(cols, groups)  # (groups, n, rows // groups); checks the shapes
        y *= self._s.reshape(int(groups), 1, -1)
        return y

    def conv_depthwise(self, x, kernel_size, stride=(1, 1), dilation=(1, 1), padding=(0, 0), bias=None, out=None):
        """Depthwise convolution (EncodedMatrix.conv_depthwise) of the inner encoding, each output
        channel then times its scale, then the bias."""
        y = self.inner.conv_depthwise(x, kernel_size, stride, dilation, padding, None, out)  # (batch, rows, oh, ow)
        y *= self._s[None, :, None, None]
        if bias is not None:
            y += np.asarray(bias, dtype=np.float32).reshape(1, -1, 1, 1)
        return y

    def __repr__(self):
        return (f"<ScaledMatrix {self.encoding} shape={self.shape} scale_rows={self.scale_rows} "
                f"nbytes={self.nbytes}>")


def encode_scaled(qt, encoding):
    """Encode a QuantizedTensor that carries ``row_scale``: its normalised values with `encoding`
    (or "auto"), wrapped with the scales."""
    from ._base import encode

    inner = encode(qt.normalized(), encoding)
    return ScaledMatrix(inner, np.ascontiguousarray(qt.row_scale, dtype=np.float32), qt.scale_rows)


def scaled_from_sections(encoding, shape, params, sections):
    """Rebuild a ScaledMatrix from stored parts (the inverse of its params/sections)."""
    from ._base import _check_shape, from_sections

    shape = _check_shape(shape)
    params = dict(params)
    block = params.pop(SCALE_PARAM)
    if not isinstance(sections, dict) or SCALE_SECTION not in sections:
        raise errors.CorruptDataError(f"{encoding}: param {SCALE_PARAM!r} given without a "
                                      f"{SCALE_SECTION!r} section")
    sections = dict(sections)
    scale = sections.pop(SCALE_SECTION)
    if not isinstance(scale, np.ndarray) or not scale.flags.c_contiguous:
        raise errors.CorruptDataError(f"{encoding}: section {SCALE_SECTION!r} must be a contiguous array")
    scale, block = check_row_scale(scale, block, int(shape[0]))
    inner = from_sections(encoding, shape, params, sections)
    return ScaledMatrix(inner, scale.copy() if scale.flags.writeable else scale, block)


def block_scales(a, block):
    """Max-|w| of each block of `block` rows of `a` (matrix view), 1.0 where a block is all zero."""
    rows = a.shape[0]
    m = np.abs(a.reshape(rows, -1)) if a.size else np.zeros((rows, 1), np.float32)
    per_row = m.max(axis=1) if m.shape[1] else np.zeros(rows, np.float32)
    n = -(-rows // block)
    pad = np.zeros(n * block, np.float32)
    pad[:rows] = per_row
    s = pad.reshape(n, block).max(axis=1).astype(np.float32)
    s[~(s > 0)] = 1.0
    return s


def granularity_block(granularity, rows):
    """Rows per scale for a `granularity` ("tensor" -> None, "channel" -> 1, int B -> B)."""
    if granularity is None or granularity == "tensor":
        return None
    if granularity == "channel":
        return 1
    if isinstance(granularity, bool) or not isinstance(granularity, (int, np.integer)) or granularity < 1:
        raise errors.InvalidArgumentError(
            f"granularity must be 'tensor', 'channel' or a positive int (rows per block), got {granularity!r}")
    return min(int(granularity), max(rows, 1))


__all__ = ["ScaledMatrix", "SCALE_PARAM", "SCALE_SECTION", "encode_scaled", "scaled_from_sections",
           "block_scales", "granularity_block"]
