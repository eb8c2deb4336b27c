"""The lossy methods' output types: QuantizedTensor (what the encodings consume, spec/compress.md) and LowRankTensor (SLR)."""
from __future__ import annotations

import numpy as np

from ..encodings._base import index_dtype  # the one index-width rule, shared with the encodings
from ..errors import InvalidArgumentError, ShapeError

__all__ = ["QuantizedTensor", "LowRankTensor", "index_dtype", "in_source_dtype"]


class QuantizedTensor:
    """A weight tensor that takes only the values of a small codebook.

    ``codebook`` is float32 of shape (k,), sorted ascending with unique values; it holds exactly
    the values the tensor uses (so it contains 0.0 exactly when some entry is zero).
    ``indices`` has the weight's shape and values in [0, k) (uint8 for k <= 256, uint16 for
    k <= 65536, int32 beyond). ``mask`` is the boolean pruning mask (True = kept) when the tensor
    was pruned before quantization, else None. ``method`` and ``params`` record how it was made.

    Per-channel quantization (``granularity="channel"`` or a block of rows) adds ``row_scale``:
    float32, one value per block of ``scale_rows`` consecutive rows (dimension 0); the tensor is
    then ``codebook[indices] * row_scale[r // scale_rows]`` for row r, the codebook holding the
    shared row-normalised values. Both are None for a per-tensor codebook.

    >>> import numpy as np
    >>> q = QuantizedTensor(np.array([-1.0, 0.0, 2.0], np.float32), np.array([[0, 2], [1, 1]], np.uint8))
    >>> q.k, q.shape, np.asarray(q).tolist()
    (3, (2, 2), [[-1.0, 2.0], [0.0, 0.0]])
    """

    __slots__ = ("codebook", "indices", "mask", "method", "params", "row_scale", "scale_rows")

    def __init__(self, codebook, indices, mask=None, *, method: str = "", params=None,
                 validate: bool = True, row_scale=None, scale_rows=None):
        codebook = np.asarray(codebook)
        indices = np.asarray(indices)
        if validate:
            if codebook.ndim != 1 or codebook.size == 0:
                raise ShapeError(f"codebook must be a non-empty 1-D array, got shape {codebook.shape}")
            if not np.issubdtype(codebook.dtype, np.floating):
                raise InvalidArgumentError(f"codebook must be floating point, got {codebook.dtype}")
            codebook = np.ascontiguousarray(codebook, dtype=np.float32)
            if not np.all(np.isfinite(codebook)):
                raise InvalidArgumentError("codebook holds non-finite values")
            if codebook.size > 1 and not np.all(codebook[1:] > codebook[:-1]):
                raise InvalidArgumentError("codebook must be sorted ascending with unique values")
            if not np.issubdtype(indices.dtype, np.integer):
                raise InvalidArgumentError(f"indices must be integers, got {indices.dtype}")
            if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= codebook.size):
                raise InvalidArgumentError(
                    f"indices must lie in [0, {codebook.size}), got [{int(indices.min())}, "
                    f"{int(indices.max())}]")
            want = index_dtype(codebook.size)
            if indices.dtype != want:
                indices = indices.astype(want)
            if mask is not None:
                mask = np.asarray(mask)
                if mask.dtype != np.bool_ or mask.shape != indices.shape:
                    raise ShapeError(f"mask must be a bool array of shape {indices.shape}")
            codebook = codebook + np.float32(0.0)  # -0.0 -> +0.0: one zero, the positive one
        if row_scale is not None:
            from ..encodings.scaled import check_row_scale

            rows = int(indices.shape[0]) if indices.ndim else 1
            row_scale, scale_rows = check_row_scale(np.ascontiguousarray(row_scale, dtype=np.float32),
                                                    scale_rows, rows, InvalidArgumentError)
        elif scale_rows is not None:
            raise InvalidArgumentError("scale_rows given without row_scale")
        self.codebook = codebook
        self.indices = indices
        self.mask = mask
        self.method = method
        self.params = dict(params or {})
        self.row_scale = row_scale
        self.scale_rows = scale_rows

    @property
    def shape(self) -> tuple:
        return tuple(self.indices.shape)

    @property
    def k(self) -> int:
        """Number of codebook entries (= number of distinct values)."""
        return int(self.codebook.size)

    @property
    def ndim(self) -> int:
        return self.indices.ndim

    @property
    def size(self) -> int:
        return int(self.indices.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def to_dense(self) -> np.ndarray:
        """The float32 tensor ``codebook[indices]`` (times the row scales, when present)."""
        out = self.codebook[self.indices]
        if self.row_scale is None:
            return out
        rows = out.shape[0]
        s = np.repeat(self.row_scale, self.scale_rows)[:rows]
        return (out.reshape(rows, -1) * s[:, None]).reshape(out.shape)

    def normalized(self) -> "QuantizedTensor":
        """The same indices and codebook without the row scales (what an encoding stores)."""
        return QuantizedTensor(self.codebook, self.indices, self.mask, method=self.method,
                               params=self.params, validate=False)

    def __array__(self, dtype=None, copy=None):
        out = self.to_dense()
        return out if dtype is None else out.astype(dtype, copy=False)

    def with_codebook(self, codebook) -> "QuantizedTensor":
        """Same indices and mask with a new codebook (sorted and merged if needed)."""
        codebook = np.asarray(codebook, dtype=np.float32)
        if codebook.shape != self.codebook.shape:
            raise ShapeError(f"new codebook has shape {codebook.shape}, expected {self.codebook.shape}")
        if not np.all(np.isfinite(codebook)):
            raise InvalidArgumentError("codebook holds non-finite values")
        uniq, remap = np.unique(codebook + np.float32(0.0), return_inverse=True)
        return QuantizedTensor(uniq, remap.reshape(-1)[self.indices], self.mask, method=self.method,
                               params=self.params, row_scale=self.row_scale, scale_rows=self.scale_rows)

    def __repr__(self) -> str:
        extra = f", pruned={1 - self.mask.mean():.3f}" if self.mask is not None and self.mask.size else ""
        if self.row_scale is not None:
            extra += f", scale_rows={self.scale_rows}"
        return f"QuantizedTensor(shape={self.shape}, k={self.k}, method={self.method!r}{extra})"


class LowRankTensor:
    """A weight as the product of (possibly sparsified) thin SVD factors: ``(u * s) @ vt``.

    For a weight of shape (out, in, *kernel) the factors describe its matrix view
    (out, in*prod(kernel)) (the matrix view every method and encoding uses); ``to_dense`` reshapes back. ``u`` is (out, q), ``s`` (q,),
    ``vt`` (q, in*prod(kernel)), all float32; the sparse-low-rank step writes exact zeros into
    ``u`` and ``vt`` so an encoding such as CSC can store each factor compactly
    (``factors()`` gives them by name). ``rank`` is q.

    >>> import numpy as np
    >>> t = LowRankTensor(np.eye(2, 1, dtype=np.float32), np.ones(1, np.float32), np.ones((1, 3), np.float32), (2, 3))
    >>> t.rank, t.to_dense().tolist()
    (1, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    """

    __slots__ = ("u", "s", "vt", "_shape", "params")

    def __init__(self, u, s, vt, shape, *, params=None):
        u = np.ascontiguousarray(u, dtype=np.float32)
        s = np.ascontiguousarray(s, dtype=np.float32)
        vt = np.ascontiguousarray(vt, dtype=np.float32)
        shape = tuple(int(d) for d in shape)
        if u.ndim != 2 or s.ndim != 1 or vt.ndim != 2 or u.shape[1] != s.size or vt.shape[0] != s.size:
            raise ShapeError(f"inconsistent factor shapes u{u.shape} s{s.shape} vt{vt.shape}")
        if len(shape) < 2 or shape[0] != u.shape[0] or int(np.prod(shape[1:])) != vt.shape[1]:
            raise ShapeError(f"factors {u.shape[0]}x{vt.shape[1]} do not match shape {shape}")
        self.u, self.s, self.vt, self._shape = u, s, vt, shape
        self.params = dict(params or {})

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def rank(self) -> int:
        return int(self.s.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def factors(self) -> dict:
        """The factors by name: ``{"u": (out, q), "s": (q,), "vt": (q, in)}``."""
        return {"u": self.u, "s": self.s, "vt": self.vt}

    def to_dense(self) -> np.ndarray:
        return ((self.u * self.s) @ self.vt).astype(np.float32, copy=False).reshape(self._shape)

    def matmul(self, x) -> np.ndarray:
        """``x @ W.T`` for x of shape (batch, in) without forming W."""
        x = np.asarray(x, dtype=np.float32)
        return ((x @ self.vt.T) * self.s) @ self.u.T

    def __array__(self, dtype=None, copy=None):
        out = self.to_dense()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LowRankTensor(shape={self.shape}, rank={self.rank})"


def in_source_dtype(value, source: str):
    """A lossy result with its values rounded to the layer's source dtype ("float16", "bfloat16";
    "float32" and "float64" hold float32 values exactly and return `value` unchanged).

    A float16 or bfloat16 layer stays one: its codebook is rounded (round to nearest even, equal
    entries merged) so that every value is exact in that dtype, the encoded layer records the dtype
    (``source_dtype``) and decoding gives it back bit for bit.
    """
    if source in ("float32", "float64"):
        return value
    from ..encodings._base import numpy_dtype

    dt = numpy_dtype(source)
    if isinstance(value, QuantizedTensor):
        return value.with_codebook(value.codebook.astype(dt).astype(np.float32))
    return np.asarray(value, dtype=np.float32).astype(dt)
