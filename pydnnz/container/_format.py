"""Format constants (spec §3-§9), the CRC-32 of sections, BFloat16Tensor and the parsed-header model."""
import re
import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._native import crc32
from ..errors import InvalidArgumentError


MAGIC = b"\x89DNNZ\r\n\x1a"
FORMAT_MAJOR = 1
FORMAT_MINOR = 1  # 1.1 adds the optional tensor key "source_dtype" (spec §4, §7.4)
PREAMBLE_SIZE = 32
ALIGNMENT = 64
MAX_HEADER_SIZE = 64 * 1024 * 1024
MAX_TENSORS = 1 << 20
MAX_NDIM = 8
MAX_NAME_BYTES = 1024
MAX_SECTIONS = 64
MAX_PARAMS = 256
MAX_METADATA_ITEMS = 1 << 16
MAX_JSON_DEPTH = 64  # a 1.0 header nests 5 levels; deeper values (future minor keys) up to 64 (spec §10.1)
MAX_DIM = (1 << 63) - 1
U64_MAX = (1 << 64) - 1
RAW = "raw"
_ZEROS = bytes(ALIGNMENT)

_PREAMBLE = struct.Struct("<8sHHIQII")  # magic, major, minor, flags, header length, reserved, crc
_IDENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}\Z")

# dtype name -> (NumPy dtype the bytes are viewed as, element size). Little-endian throughout.
# bool is one byte holding 0 or 1; bfloat16 is the upper half of a float32, kept as uint16 bits.
_DTYPES = {
    "bool": (np.dtype("u1"), 1),
    "int8": (np.dtype("i1"), 1),
    "uint8": (np.dtype("u1"), 1),
    "int16": (np.dtype("<i2"), 2),
    "uint16": (np.dtype("<u2"), 2),
    "int32": (np.dtype("<i4"), 4),
    "uint32": (np.dtype("<u4"), 4),
    "int64": (np.dtype("<i8"), 8),
    "uint64": (np.dtype("<u8"), 8),
    "float16": (np.dtype("<f2"), 2),
    "bfloat16": (np.dtype("<u2"), 2),
    "float32": (np.dtype("<f4"), 4),
    "float64": (np.dtype("<f8"), 8),
}
# Encoded tensors' sections are plain numbers (spec §7.3): no bool, no bfloat16.
_SECTION_DTYPES = frozenset(_DTYPES) - {"bool", "bfloat16"}
_TOP_KEYS = ("metadata", "tensors")
_TENSOR_KEYS = ("name", "dtype", "shape", "encoding", "params", "sections")
# Optional tensor keys and the minor version that introduced them (an older file may not hold them).
_TENSOR_OPTIONAL = {"source_dtype": 1}
_SOURCE_DTYPES = ("float16", "bfloat16", "float64")  # what an encoded tensor's source_dtype may say
_SECTION_KEYS = ("name", "dtype", "offset", "length", "crc32")


def _align(n):
    return -(-n // ALIGNMENT) * ALIGNMENT


def _crc32(data):
    """CRC-32/ISO-HDLC of a section (_native.crc32: csrc/crc.c, zlib's crc32 several times faster)."""
    return crc32(data)


class BFloat16Tensor:
    """A bfloat16 tensor kept as its raw 16-bit patterns (NumPy has no bfloat16 of its own).

    ``bits`` is a uint16 array of the tensor's shape; ``np.asarray(t)`` gives exact float32.
    Pass one to ``save_file`` to store bfloat16; the reader returns one for every bfloat16 tensor.

    >>> t = BFloat16Tensor(np.array([0x3F80, 0xC000], dtype=np.uint16))
    >>> np.asarray(t).tolist()
    [1.0, -2.0]
    """

    __slots__ = ("bits",)

    def __init__(self, bits):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise InvalidArgumentError(f"BFloat16Tensor bits must be uint16, got {bits.dtype}")
        self.bits = bits

    @property
    def shape(self):
        return self.bits.shape

    @property
    def dtype(self):
        return "bfloat16"

    @classmethod
    def from_float32(cls, array):
        """Round float32 values to bfloat16 (round to nearest even; NaN stays NaN)."""
        a = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
        rounded = ((a + 0x7FFF + ((a >> 16) & 1)) >> 16).astype(np.uint16)
        nan = np.isnan(np.asarray(array, dtype=np.float32))
        return cls(np.where(nan, (a >> 16).astype(np.uint16) | 0x40, rounded))

    def to_float32(self):
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    def __array__(self, dtype=None, copy=None):
        out = self.to_float32()
        return out if dtype is None else out.astype(dtype)

    def __eq__(self, other):
        return isinstance(other, BFloat16Tensor) and np.array_equal(self.bits, other.bits)

    __hash__ = None

    def __repr__(self):
        return f"BFloat16Tensor(shape={self.shape})"


# ---- header model ------------------------------------------------------------------------------

class _Section(NamedTuple):
    name: str
    dtype: str
    offset: int  # from the start of the data area
    length: int
    crc32: int


class _Tensor(NamedTuple):
    name: str
    dtype: str
    shape: tuple
    encoding: str
    params: dict
    sections: tuple
    source_dtype: str = "float32"  # encoded tensors: the dtype decoding gives back (minor 1)


@dataclass(frozen=True)
class _Header:
    major: int
    minor: int
    data_start: int
    metadata: dict
    tensors: dict  # name -> _Tensor, in file order


class _Where:
    """Builds error messages that name the file, the tensor and the field."""

    def __init__(self, source):
        self.source = source

    def __call__(self, msg, tensor=None, section=None, field=None):
        parts = [str(self.source)]
        if tensor is not None:
            parts.append(f"tensor {tensor!r}")
        if section is not None:
            parts.append(f"section {section!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        return ": ".join(parts) + ": " + msg
