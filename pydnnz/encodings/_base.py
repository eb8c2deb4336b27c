"""Encoding registry, `encode` and `from_sections`.

An encoding is a subclass of EncodedMatrix registered with @register. It declares a unique
`name` and `id` (both permanent: a retired name or id is never given to another encoding),
says which inputs it can represent (`applicable`), builds its params and sections from a
normalised input (`_encode`), lists the sections a params dict implies (`_section_dtypes`), and
calls its C validator, decoder and matmul kernel through a cffi struct (`_c_struct`).

The base class lives in _matrix.py and input normalisation (MatrixInput) in _input.py; their
names are re-exported here, the path the encodings and callers import them from.
"""
import math

import numpy as np

from .. import errors
from . import _speed
# Re-exported: callers and the encodings import these names from here.
from ._input import (SOURCE_DTYPES, MatrixInput, _bfloat16, _total_order_key,  # noqa: F401
                     exact_in, index_dtype, numpy_dtype, total_order_rank)
from ._matrix import (_FIELD_NAMES, _ROWS_KINDS, EncodedMatrix, _readonly,  # noqa: F401
                      check_param_keys, int_param)

# Permanent name <-> id assignments (spec/encodings.md). Ids are never reused; the Huffman encodings
# `ham`, `sham` and `rlham` (ham.py, sham.py, rlham.py) register themselves with these ids.
RESERVED_IDS = {"dense": 1, "csc": 2, "im": 3, "im8": 4, "im4": 5, "ham": 6, "sham": 7, "rlham": 8}

_REGISTRY = {}  # name -> class, in registration order (auto breaks ties by this order)


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
