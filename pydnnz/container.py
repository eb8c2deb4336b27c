"""The .dnnz container: writer, lazy memory-mapped reader and verifier (implements spec/dnnz-format.md).

A file is a 32-byte preamble (magic, version, flags, header length, header CRC), a JSON header
that lists every tensor and every byte section, and the sections themselves, each starting on a
64-byte boundary so that it can be used in place from a memory map.

The reader trusts nothing: the whole header is validated (structure, names, dtypes, shapes,
offsets in order, aligned, without holes or overlaps, padding zero, file length exactly
accounted for) before anything is allocated or any section is touched, and each section's
CRC-32 is checked when its tensor is first read. Every failure is a DnnzError subclass naming
the file, the tensor and the field.

Lifetime of what the reader returns: raw tensors are read-only NumPy views of the memory map
(``np.frombuffer``), and encoded tensors hold read-only views as their sections. The map stays
open as long as any of those arrays is alive, even after the ``load_file`` result or the
``safe_open`` handle is gone; copy an array (``np.array(t)``) to detach it. Replacing the file on
disk is safe (writes go to a new inode, then ``os.replace``); truncating it in place while it is
mapped is not (SIGBUS on access, as with any memory map).
"""
import json
import math
import mmap
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ._atomic import atomic_path
from ._native import crc32
from .errors import (
    ChecksumError,
    CorruptFileError,
    DnnzError,
    InvalidArgumentError,
    TruncatedError,
    UnsupportedError,
    UnsupportedVersionError,
)

__all__ = [
    "save_file",
    "load_file",
    "safe_open",
    "save",
    "load",
    "verify",
    "BFloat16Tensor",
    "VerifyReport",
    "MAGIC",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "ALIGNMENT",
    "MAX_HEADER_SIZE",
    "MAX_TENSORS",
    "MAX_NDIM",
    "MAX_NAME_BYTES",
    "MAX_SECTIONS",
    "MAX_PARAMS",
    "MAX_METADATA_ITEMS",
    "MAX_JSON_DEPTH",
]

# ---- format constants (spec §3-§9) -------------------------------------------------------------

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


def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()  # linear: a 64 MiB object of repeated keys must not take quadratic time
        for k, _ in pairs:
            if k in seen:
                raise _JsonDuplicate(k)
            seen.add(k)
    return d


class _JsonDuplicate(ValueError):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} is not JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"number {text} is out of the range of a double")
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_preamble(pre, size, where):
    """Check the fixed 32 bytes; returns (major, minor, header length, stored crc)."""
    if size < len(MAGIC) or pre[: len(MAGIC)] != MAGIC:
        got = " ".join(f"{b:02x}" for b in pre[: len(MAGIC)])
        raise CorruptFileError(where(f"not a .dnnz file: bad magic [{got}]", field="Magic"))
    if size < PREAMBLE_SIZE:
        raise TruncatedError(where(f"file is {size} bytes, shorter than the {PREAMBLE_SIZE}-byte preamble"))
    _, major, minor, flags, hlen, reserved, crc = _PREAMBLE.unpack(pre)
    if major != FORMAT_MAJOR:
        raise UnsupportedVersionError(where(
            f"format version {major}.{minor}: this reader supports major version {FORMAT_MAJOR} only",
            field="Format_Major"))
    if flags:
        raise CorruptFileError(where(f"reserved header flag bits 0x{flags:08x} are set (must be 0)",
                                     field="Header_Flags"))
    if reserved:
        raise CorruptFileError(where(f"reserved field is 0x{reserved:08x} (must be 0)", field="Reserved"))
    if hlen > MAX_HEADER_SIZE:
        raise CorruptFileError(where(f"header length {hlen} exceeds the limit of {MAX_HEADER_SIZE} bytes",
                                     field="Header_Length"))
    if PREAMBLE_SIZE + hlen > size:
        raise TruncatedError(where(f"header length {hlen} runs past the end of the {size}-byte file",
                                   field="Header_Length"))
    if (PREAMBLE_SIZE + hlen) % ALIGNMENT:
        raise CorruptFileError(where(
            f"header length {hlen} does not end the header on a {ALIGNMENT}-byte boundary",
            field="Header_Length"))
    return major, minor, hlen, crc


def _json_depth(doc):
    """Nesting depth of a parsed JSON value (a scalar is 0, {} or [] is 1), without recursion."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d)
            if d <= MAX_JSON_DEPTH:  # deeper is rejected anyway: stop descending
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def _parse_header(pre, header_bytes, size, where):
    """Validate the preamble and the JSON header against a file of `size` bytes (spec §11)."""
    major, minor, hlen, stored = _parse_preamble(pre, size, where)
    header_bytes = bytes(header_bytes)
    # The header CRC covers the preamble's first 28 bytes and then the header (spec §9).
    computed = crc32(header_bytes, crc32(pre[:28]))
    if computed != stored:
        raise ChecksumError(where(f"header CRC-32 mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})",
                                  field="Header_CRC32"))
    if not header_bytes.startswith(b"{"):
        raise CorruptFileError(where("header does not start with '{'", field="Header"))
    try:
        stripped = header_bytes.rstrip(b" ")
        text = stripped.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                         parse_float=_finite_float)
    except _JsonDuplicate as exc:
        raise CorruptFileError(where(f"header JSON has a duplicate key {exc.key!r}", field="Header")) from None
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError and json.JSONDecodeError are ValueErrors; deep nesting is a RecursionError.
        raise CorruptFileError(where(f"header is not valid UTF-8 JSON ({type(exc).__name__}: {exc})",
                                     field="Header")) from None
    if _json_depth(doc) > MAX_JSON_DEPTH:
        raise CorruptFileError(where(f"header JSON is nested deeper than {MAX_JSON_DEPTH} levels", field="Header"))
    if len(header_bytes) - len(stripped) >= ALIGNMENT:
        raise CorruptFileError(where(f"header has {len(header_bytes) - len(stripped)} bytes of padding "
                                     f"(a writer pads with fewer than {ALIGNMENT})", field="Header"))
    strict = minor <= FORMAT_MINOR  # a newer minor may add keys; an older or equal one may not
    if not isinstance(doc, dict):
        raise CorruptFileError(where("header JSON is not an object", field="Header"))
    _check_keys(doc, _TOP_KEYS, strict, where, "header")
    metadata = _parse_metadata(doc["metadata"], where)
    raw_tensors = doc["tensors"]
    if not isinstance(raw_tensors, list):
        raise CorruptFileError(where("'tensors' is not a list", field="tensors"))
    if len(raw_tensors) > MAX_TENSORS:
        raise CorruptFileError(where(f"{len(raw_tensors)} tensors exceed the limit of {MAX_TENSORS}",
                                     field="tensors"))
    data_start = PREAMBLE_SIZE + hlen
    tensors = {}
    end = 0  # end of the last section, relative to the data area
    for index, entry in enumerate(raw_tensors):
        t = _parse_tensor(entry, index, strict, where, minor)
        if t.name in tensors:
            raise CorruptFileError(where("duplicate tensor name", tensor=t.name, field="name"))
        for s in t.sections:
            expected = _align(end)
            if s.offset < end:
                raise CorruptFileError(where(
                    f"offset {s.offset} overlaps the previous section, which ends at {end}",
                    tensor=t.name, section=s.name, field="offset"))
            if s.offset % ALIGNMENT:
                raise CorruptFileError(where(f"offset {s.offset} is not a multiple of {ALIGNMENT}",
                                             tensor=t.name, section=s.name, field="offset"))
            if data_start + s.offset + s.length > size:
                raise TruncatedError(where(
                    f"section [{s.offset}, {s.offset + s.length}) runs past the end of the data area "
                    f"({size - data_start} bytes)", tensor=t.name, section=s.name, field="offset"))
            if s.offset != expected:
                raise CorruptFileError(where(
                    f"offset {s.offset} leaves a hole after the previous section "
                    f"(expected {expected})", tensor=t.name, section=s.name, field="offset"))
            end = s.offset + s.length
        tensors[t.name] = t
    if data_start + end != size:
        raise CorruptFileError(where(
            f"{size - data_start - end} trailing bytes after the last section (file is {size} bytes, "
            f"sections end at {data_start + end})", field="file length"))
    return _Header(major, minor, data_start, metadata, tensors)


def _check_keys(obj, known, strict, where, what, tensor=None, section=None):
    if len(obj) == len(known) and all(k in obj for k in known):
        return  # the usual case, checked in one pass
    missing = [k for k in known if k not in obj]
    if missing:
        raise CorruptFileError(where(f"{what} lacks required key {missing[0]!r}", tensor=tensor,
                                     section=section, field=missing[0]))
    if strict:
        extra = [k for k in obj if k not in known]
        if extra:
            raise CorruptFileError(where(f"{what} has unknown key {extra[0]!r}", tensor=tensor,
                                         section=section, field=extra[0]))


def _parse_metadata(md, where):
    if not isinstance(md, dict):
        raise CorruptFileError(where("'metadata' is not an object", field="metadata"))
    if len(md) > MAX_METADATA_ITEMS:
        raise CorruptFileError(where(f"{len(md)} metadata items exceed the limit of {MAX_METADATA_ITEMS}",
                                     field="metadata"))
    for k, v in md.items():
        if not isinstance(v, str):
            raise CorruptFileError(where(f"metadata value of {k!r} is not a string", field="metadata"))
        _check_text(k, where, "metadata key", field="metadata")
        _check_text(v, where, "metadata value", field="metadata")
    return md


def _check_text(s, where, what, tensor=None, field=None, limit=None):
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError:
        raise CorruptFileError(where(f"{what} is not valid Unicode (lone surrogate)", tensor=tensor,
                                     field=field)) from None
    if limit is not None and not 0 < n <= limit:
        raise CorruptFileError(where(f"{what} is {n} bytes long (must be 1..{limit})", tensor=tensor,
                                     field=field))


def _parse_tensor(entry, index, strict, where, minor=FORMAT_MINOR):
    if not isinstance(entry, dict):
        raise CorruptFileError(where(f"tensors[{index}] is not an object", field="tensors"))
    name = entry.get("name")
    if not isinstance(name, str):
        raise CorruptFileError(where(f"tensors[{index}] has no string 'name'", field="name"))
    _check_text(name, where, "name", tensor=name, field="name", limit=MAX_NAME_BYTES)
    if "\x00" in name:
        raise CorruptFileError(where("name contains U+0000", tensor=name, field="name"))
    optional = {k: entry[k] for k, since in _TENSOR_OPTIONAL.items() if k in entry and minor >= since}
    _check_keys({k: v for k, v in entry.items() if k not in optional}, _TENSOR_KEYS, strict, where,
                "tensor entry", tensor=name)
    source_dtype = optional.get("source_dtype", "float32")
    dtype = entry["dtype"]
    if not isinstance(dtype, str):
        raise CorruptFileError(where("dtype is not a string", tensor=name, field="dtype"))
    if dtype not in _DTYPES:
        raise UnsupportedError(where(f"unknown dtype {dtype!r}", tensor=name, field="dtype"))
    shape = entry["shape"]
    if not isinstance(shape, list):
        raise CorruptFileError(where("shape is not a list", tensor=name, field="shape"))
    if len(shape) > MAX_NDIM:
        raise CorruptFileError(where(f"{len(shape)} dimensions exceed the limit of {MAX_NDIM}",
                                     tensor=name, field="shape"))
    count = 1
    for d in shape:
        if not _is_int(d) or not 0 <= d <= MAX_DIM:
            raise CorruptFileError(where(f"dimension {d!r} is not an integer in [0, 2^63)", tensor=name,
                                         field="shape"))
        count *= d
    if count * _DTYPES[dtype][1] > U64_MAX:
        raise CorruptFileError(where(f"shape {shape} has a byte size that overflows u64", tensor=name,
                                     field="shape"))
    encoding = entry["encoding"]
    if not isinstance(encoding, str) or not _IDENT.match(encoding):
        raise CorruptFileError(where(f"encoding {encoding!r} is not a valid encoding name", tensor=name,
                                     field="encoding"))
    params = entry["params"]
    if not isinstance(params, dict):
        raise CorruptFileError(where("params is not an object", tensor=name, field="params"))
    if len(params) > MAX_PARAMS:
        raise CorruptFileError(where(f"{len(params)} params exceed the limit of {MAX_PARAMS}", tensor=name,
                                     field="params"))
    for k, v in params.items():
        _check_text(k, where, "params key", tensor=name, field="params")
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise CorruptFileError(where(f"param {k!r} is not a JSON scalar", tensor=name, field="params"))
        if isinstance(v, str):
            _check_text(v, where, f"param {k!r}", tensor=name, field="params")
    raw_sections = entry["sections"]
    if not isinstance(raw_sections, list):
        raise CorruptFileError(where("sections is not a list", tensor=name, field="sections"))
    if len(raw_sections) > MAX_SECTIONS:
        raise CorruptFileError(where(f"{len(raw_sections)} sections exceed the limit of {MAX_SECTIONS}",
                                     tensor=name, field="sections"))
    sections = tuple(_parse_section(s, i, name, strict, where) for i, s in enumerate(raw_sections))
    if len({s.name for s in sections}) != len(sections):
        raise CorruptFileError(where("duplicate section name", tensor=name, field="sections"))
    if encoding == RAW:
        if params:
            raise CorruptFileError(where("a raw tensor must have empty params", tensor=name, field="params"))
        if len(sections) != 1 or sections[0].name != "data":
            raise CorruptFileError(where("a raw tensor must have exactly one section, named 'data'",
                                         tensor=name, field="sections"))
        s = sections[0]
        if s.dtype != dtype:
            raise CorruptFileError(where(f"section dtype {s.dtype!r} differs from the tensor's {dtype!r}",
                                         tensor=name, section="data", field="dtype"))
        want = count * _DTYPES[dtype][1]
        if s.length != want:
            raise CorruptFileError(where(
                f"length {s.length} is not {want} (shape {shape} x {_DTYPES[dtype][1]} bytes of {dtype})",
                tensor=name, section="data", field="length"))
    else:
        if dtype != "float32":
            raise CorruptFileError(where(f"an encoded tensor must have dtype 'float32', not {dtype!r}",
                                         tensor=name, field="dtype"))
        for s in sections:
            if s.dtype not in _SECTION_DTYPES:
                raise CorruptFileError(where(f"dtype {s.dtype!r} is not allowed in an encoded section",
                                             tensor=name, section=s.name, field="dtype"))
        if "source_dtype" in optional and source_dtype not in _SOURCE_DTYPES:
            raise CorruptFileError(where(f"source_dtype {source_dtype!r} is not one of {list(_SOURCE_DTYPES)}",
                                         tensor=name, field="source_dtype"))
    if encoding == RAW and "source_dtype" in optional:
        raise CorruptFileError(where("a raw tensor has no source_dtype (its dtype says it)", tensor=name,
                                     field="source_dtype"))
    return _Tensor(name, dtype, tuple(shape), encoding, params, sections, source_dtype)


def _parse_section(s, index, tname, strict, where):
    if not isinstance(s, dict):
        raise CorruptFileError(where(f"sections[{index}] is not an object", tensor=tname, field="sections"))
    sname = s.get("name")
    if not isinstance(sname, str) or not _IDENT.match(sname):
        raise CorruptFileError(where(f"sections[{index}] has an invalid name {sname!r}", tensor=tname,
                                     field="name"))
    _check_keys(s, _SECTION_KEYS, strict, where, "section entry", tensor=tname, section=sname)
    dtype = s["dtype"]
    if not isinstance(dtype, str):
        raise CorruptFileError(where("dtype is not a string", tensor=tname, section=sname, field="dtype"))
    if dtype not in _DTYPES:
        raise UnsupportedError(where(f"unknown dtype {dtype!r}", tensor=tname, section=sname, field="dtype"))
    for key, top in (("offset", U64_MAX), ("length", U64_MAX), ("crc32", 0xFFFFFFFF)):
        v = s[key]
        if not _is_int(v) or not 0 <= v <= top:
            raise CorruptFileError(where(f"{v!r} is not an integer in [0, {top}]", tensor=tname,
                                         section=sname, field=key))
    if s["length"] % _DTYPES[dtype][1]:
        raise CorruptFileError(where(f"length {s['length']} is not a multiple of the {dtype} size "
                                     f"{_DTYPES[dtype][1]}", tensor=tname, section=sname, field="length"))
    return _Section(sname, dtype, s["offset"], s["length"], s["crc32"])


def _check_padding(buf, header, where):
    """Every byte between sections is zero (spec §8); at most 63 bytes per section are read."""
    end = 0
    with memoryview(buf) as mv:
        for t in header.tensors.values():
            for s in t.sections:
                if s.offset > end:
                    with mv[header.data_start + end: header.data_start + s.offset] as gap:
                        clean = gap == _ZEROS[: len(gap)]
                    if not clean:
                        raise CorruptFileError(where(
                            f"padding bytes before offset {s.offset} are not zero", tensor=t.name,
                            section=s.name, field="padding"))
                end = s.offset + s.length


# ---- the reader --------------------------------------------------------------------------------

def _from_sections(encoding, shape, params, sections, source_dtype="float32"):
    """Rebuild an EncodedMatrix through the encodings registry (``pydnnz.encodings.from_sections``)."""
    try:
        from . import encodings
    except ImportError as exc:
        raise UnsupportedError(f"encoding {encoding!r} needs pydnnz.encodings, which is not available "
                               f"({exc})") from exc
    if source_dtype == "float32":
        return encodings.from_sections(encoding, shape, params, sections)
    return encodings.from_sections(encoding, shape, params, sections, source_dtype=source_dtype)


class _Reader:
    """Validated header + the buffer (a memory map or bytes) the sections live in."""

    def __init__(self, buf, size, where):
        self.buf = buf
        self.where = where
        pre = bytes(buf[:PREAMBLE_SIZE])
        _, _, hlen, _ = _parse_preamble(pre, size, where)
        self.header = _parse_header(pre, buf[PREAMBLE_SIZE: PREAMBLE_SIZE + hlen], size, where)
        _check_padding(buf, self.header, where)

    def _section_array(self, t, s, np_dtype):
        """A read-only view of one section, after its CRC-32 is checked (spec §9)."""
        start = self.header.data_start + s.offset
        with memoryview(self.buf) as mv, mv[start: start + s.length] as view:
            computed = _crc32(view)
        if computed != s.crc32:
            raise ChecksumError(self.where(
                f"CRC-32 mismatch (stored 0x{s.crc32:08x}, computed 0x{computed:08x})",
                tensor=t.name, section=s.name, field="crc32"))
        return np.frombuffer(self.buf, dtype=np_dtype, count=s.length // np_dtype.itemsize, offset=start)

    def tensor(self, name):
        t = self.header.tensors[name]
        if t.encoding == RAW:
            s = t.sections[0]
            arr = self._section_array(t, s, _DTYPES[t.dtype][0])
            if t.dtype == "bool":
                if arr.size and arr.max() > 1:
                    raise CorruptFileError(self.where("bool tensor holds a byte other than 0 or 1",
                                                      tensor=name, section="data"))
                arr = arr.view(np.bool_)
            arr = arr.reshape(t.shape)
            return BFloat16Tensor(arr) if t.dtype == "bfloat16" else arr
        sections = {s.name: self._section_array(t, s, _DTYPES[s.dtype][0]) for s in t.sections}
        try:
            if t.source_dtype == "float32":
                em = _from_sections(t.encoding, t.shape, dict(t.params), sections)
            else:
                em = _from_sections(t.encoding, t.shape, dict(t.params), sections, t.source_dtype)
            em._origin = f"{self.where.source}: tensor {name!r}"  # decode() errors name the tensor
            return em
        except InvalidArgumentError as exc:
            # An argument the file supplied (shape, params): in a file that is corruption.
            raise CorruptFileError(self.where(f"{type(exc).__name__}: {exc}", tensor=name,
                                              field="encoding")) from exc
        except DnnzError as exc:
            # Same class, with the file and tensor named.
            raise type(exc)(self.where(str(exc), tensor=name, field="encoding")) from exc


class LazyTensors(Mapping):
    """What ``load_file`` returns: a read-only mapping name -> tensor, in file order.

    Nothing is read until a tensor is first looked up; then its sections' CRC-32s are checked,
    it is built (a zero-copy view of the memory map for raw tensors) and cached. ``.metadata`` is
    the file's string metadata; ``.format_version`` is ``(major, minor)``.
    """

    def __init__(self, reader):
        self._reader = reader
        self._cache = {}
        self.metadata = dict(reader.header.metadata)
        self.format_version = (reader.header.major, reader.header.minor)

    def __getitem__(self, name):
        try:
            return self._cache[name]
        except KeyError:
            pass
        if name not in self._reader.header.tensors:
            raise KeyError(name)
        value = self._cache[name] = self._reader.tensor(name)
        return value

    def info(self, name):
        """What the header says about tensor `name`, without reading it: dtype, shape, encoding,
        params, nbytes (its sections' bytes) and sections (name, dtype, offset from the data area,
        length, crc32). For tools such as ``dnnz info``."""
        t = self._reader.header.tensors[name]
        out = {"dtype": t.dtype, "shape": t.shape, "encoding": t.encoding, "params": dict(t.params),
               "nbytes": sum(s.length for s in t.sections),
               "sections": [s._asdict() for s in t.sections]}
        if t.source_dtype != "float32":  # format 1.1: what decoding gives back
            out["source_dtype"] = t.source_dtype
        return out

    def __iter__(self):
        return iter(self._reader.header.tensors)

    def __len__(self):
        return len(self._reader.header.tensors)

    def __contains__(self, name):
        return name in self._reader.header.tensors

    def __repr__(self):
        return f"LazyTensors({self._reader.where.source!s}, {len(self)} tensors)"


def _open_reader(path):
    where = _Where(os.fspath(path))
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pre = f.read(PREAMBLE_SIZE)
        # Everything that can be checked from the preamble is checked before mapping anything.
        _parse_preamble(pre, size, where)
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _Reader(buf, len(buf), where)  # the map's size, should the file have changed since
    except BaseException:
        try:
            buf.close()
        except BufferError:  # a view still alive somewhere: the map goes with it
            pass
        raise


def load_file(path):
    """Open a .dnnz file lazily: only the header is read now; tensors are mapped on first use.

    Returns a read-only Mapping name -> ``np.ndarray`` (raw tensors, read-only views of the
    memory map), ``BFloat16Tensor`` or ``EncodedMatrix``, with ``.metadata``. Each tensor's
    CRC-32 is verified the first time it is looked up. Raises a DnnzError subclass on a bad file.

    >>> import tempfile, os, numpy as np, pydnnz
    >>> p = os.path.join(tempfile.mkdtemp(), "m.dnnz")
    >>> pydnnz.save_file({"w": np.eye(2, dtype=np.float32)}, p, metadata={"model": "toy"})
    >>> f = pydnnz.load_file(p)
    >>> f["w"].tolist(), f.metadata
    ([[1.0, 0.0], [0.0, 1.0]], {'model': 'toy'})

    A sharded checkpoint (its folder or its ``model.dnnz.index.json``) opens the same way: one
    mapping over every shard (``pydnnz.shards.ShardedTensors``).
    """
    if _is_sharded(path):
        from .shards import load_sharded

        return load_sharded(path)
    return LazyTensors(_open_reader(path))


def _is_sharded(path):
    return isinstance(path, (str, os.PathLike)) and (
        os.fspath(path).endswith(".index.json") or os.path.isdir(path))


def load(data):
    """Read a .dnnz file held in memory (bytes-like); tensors are views of `data`.

    >>> import numpy as np
    >>> load(save({"x": np.arange(3, dtype=np.int8)}))["x"].tolist()
    [0, 1, 2]
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidArgumentError(f"load() takes bytes, not {type(data).__name__}")
    data = bytes(data) if not isinstance(data, bytes) else data
    return LazyTensors(_Reader(data, len(data), _Where("<bytes>")))


class safe_open:
    """Context manager over a .dnnz file, in the manner of safetensors' ``safe_open``.

    >>> import tempfile, os, numpy as np, pydnnz
    >>> p = os.path.join(tempfile.mkdtemp(), "m.dnnz")
    >>> pydnnz.save_file({"a": np.zeros(3, np.uint8), "b": np.ones(2)}, p, {"k": "v"})
    >>> with pydnnz.safe_open(p) as f:
    ...     list(f.keys()), f.metadata(), f.get("b").tolist()
    (['a', 'b'], {'k': 'v'}, [1.0, 1.0])

    Arrays obtained from ``get`` stay valid after the ``with`` block (they keep the map alive).
    """

    def __init__(self, path):
        self._tensors = load_file(path)  # a sharded checkpoint too (folder or index file)
        self._path = os.fspath(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        # The map itself is released when the last array viewing it is gone (closing it
        # under live views would be an error, or a crash in code holding raw pointers).
        self._tensors = None

    def _open(self):
        if self._tensors is None:
            raise InvalidArgumentError(f"{self._path}: safe_open handle is closed")
        return self._tensors

    def keys(self):
        return list(self._open())

    def metadata(self):
        return dict(self._open().metadata)

    def get(self, name):
        """The tensor `name` (CRC-checked on first access); KeyError if the file has none."""
        tensors = self._open()
        if name not in tensors:
            raise KeyError(f"{self._path}: no tensor named {name!r}")
        return tensors[name]

    get_tensor = get

    def info(self, name):
        """Header facts about tensor `name` without reading it (see ``LazyTensors.info``)."""
        tensors = self._open()
        if name not in tensors:
            raise KeyError(f"{self._path}: no tensor named {name!r}")
        return tensors.info(name)

    def __contains__(self, name):
        return name in self._open()


@dataclass
class VerifyReport:
    """What ``verify`` checked: every structure rule and every section's CRC-32."""
    path: str
    format_version: tuple
    tensors: int
    sections: int
    data_bytes: int
    file_bytes: int
    encodings: dict = field(default_factory=dict)  # encoding name -> number of tensors


def verify(path, max_decoded_bytes=None):
    """Check a whole file (a path, or the file's contents as bytes): header, layout, every CRC-32, and every tensor rebuilt (encoded ones
    through their encoding's own validation). Returns a VerifyReport or raises a DnnzError.

    An encoded tensor whose decoded size passes the decoded-size limit (`max_decoded_bytes`, or
    ``pydnnz.get_max_decoded_bytes()``: 4 GiB unless ``DNNZ_MAX_DECODED_BYTES`` says otherwise)
    fails with DnnzMemoryError naming it, so that a file that verifies can also be decoded.

    >>> import tempfile, os, numpy as np, pydnnz
    >>> p = os.path.join(tempfile.mkdtemp(), "m.dnnz")
    >>> pydnnz.save_file({"a": np.zeros(3)}, p)
    >>> verify(p).tensors
    1
    """
    if _is_sharded(path):  # every shard, and the index against them
        from .shards import verify_sharded

        reports = verify_sharded(path)
        return VerifyReport(os.fspath(path), reports[0].format_version, sum(r.tensors for r in reports),
                            sum(r.sections for r in reports), sum(r.data_bytes for r in reports),
                            sum(r.file_bytes for r in reports),
                            {k: sum(r.encodings.get(k, 0) for r in reports)
                             for k in sorted({k for r in reports for k in r.encodings})})
    if isinstance(path, (bytes, bytearray, memoryview)):  # file contents, as for load()
        data = bytes(path)
        reader = _Reader(data, len(data), _Where("<bytes>"))
    else:
        reader = _open_reader(path)
    h = reader.header
    counts = {}
    n_sections = 0
    data_bytes = 0
    from . import runtime
    for name, t in h.tensors.items():
        reader.tensor(name)  # validation costs O(stored bytes), whatever the shape claims
        if t.encoding != RAW:  # then the decoded size, from the shape (nothing is decoded)
            runtime.check_decoded_size(4 * math.prod(t.shape), reader.where("", tensor=name)[:-2],
                                       max_decoded_bytes)
        counts[t.encoding] = counts.get(t.encoding, 0) + 1
        n_sections += len(t.sections)
        data_bytes += sum(s.length for s in t.sections)
    return VerifyReport(str(reader.where.source), (h.major, h.minor), len(h.tensors), n_sections,
                        data_bytes, len(reader.buf), counts)


# ---- the writer --------------------------------------------------------------------------------

def _dtype_name(dt):
    if dt.name == "bfloat16":  # ml_dtypes' bfloat16, if the caller has it
        return "bfloat16"
    if dt.kind == "b":
        return "bool"
    if dt.kind in "iuf":
        name = f"{'int' if dt.kind == 'i' else 'uint' if dt.kind == 'u' else 'float'}{dt.itemsize * 8}"
        if name in _DTYPES:
            return name
    return None


def _plan_tensor(name, value):
    """(entry without offsets/crc, [section byte arrays]) for one tensor; validates the input."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"tensor names must be str, got {type(name).__name__}")
    try:
        nbytes = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"tensor name {name!r} is not valid Unicode") from None
    if not 0 < nbytes <= MAX_NAME_BYTES or "\x00" in name:
        raise InvalidArgumentError(f"tensor name {name!r} must be 1..{MAX_NAME_BYTES} UTF-8 bytes without NUL")
    if isinstance(value, BFloat16Tensor):
        return _plan_raw(name, "bfloat16", value.bits)
    if isinstance(value, np.generic):  # a NumPy scalar is a 0-d tensor
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        dname = _dtype_name(value.dtype)
        if dname is None:
            raise InvalidArgumentError(f"tensor {name!r}: dtype {value.dtype} cannot be stored raw "
                                       f"(supported: {', '.join(_DTYPES)})")
        if dname == "bfloat16":
            return _plan_raw(name, dname, value.view(np.uint16))
        return _plan_raw(name, dname, value)
    if all(hasattr(value, a) for a in ("encoding", "shape", "params", "sections")):
        return _plan_encoded(name, value)
    raise InvalidArgumentError(
        f"tensor {name!r}: expected a numpy array or an EncodedMatrix, got {type(value).__name__} "
        "(encode quantized tensors with pydnnz.encode, or pass np.asarray(x))")


def _check_shape(name, shape):
    shape = tuple(shape)
    if len(shape) > MAX_NDIM:
        raise InvalidArgumentError(f"tensor {name!r}: {len(shape)} dimensions exceed the limit of {MAX_NDIM}")
    out = []
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or not 0 <= d <= MAX_DIM:
            raise InvalidArgumentError(f"tensor {name!r}: bad dimension {d!r} in shape {shape}")
        out.append(int(d))
    return out


def _plan_raw(name, dname, array):
    np_dtype = _DTYPES[dname][0]
    shape = _check_shape(name, array.shape)
    data = np.ascontiguousarray(array)
    if dname == "bool":
        data = data.view(np.uint8)
        if data.size and data.max() > 1:  # a bool view of other bytes: store canonical 0/1
            data = (data != 0).view(np.uint8)
    elif data.dtype != np_dtype:
        data = data.astype(np_dtype)  # only byte order changes here
    entry = {"name": name, "dtype": dname, "shape": shape, "encoding": RAW, "params": {},
             "sections": [{"name": "data", "dtype": dname}]}
    return entry, [data.reshape(-1)]


def _plan_encoded(name, em):
    encoding = em.encoding
    if not isinstance(encoding, str) or not _IDENT.match(encoding) or encoding == RAW:
        raise InvalidArgumentError(f"tensor {name!r}: invalid encoding name {encoding!r}")
    shape = _check_shape(name, em.shape)
    params = em.params
    if not isinstance(params, dict) or len(params) > MAX_PARAMS:
        raise InvalidArgumentError(f"tensor {name!r}: params must be a dict of at most {MAX_PARAMS} items")
    params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
    for k, v in params.items():
        if not isinstance(k, str):
            raise InvalidArgumentError(f"tensor {name!r}: param names must be str, got {k!r}")
        if not (v is None or isinstance(v, (bool, int, float, str))) or \
                (isinstance(v, float) and not math.isfinite(v)):
            raise InvalidArgumentError(f"tensor {name!r}: param {k!r}={v!r} is not a finite JSON scalar")
    sections = em.sections
    if not isinstance(sections, dict) or len(sections) > MAX_SECTIONS:
        raise InvalidArgumentError(f"tensor {name!r}: sections must be a dict of at most {MAX_SECTIONS}")
    entries, arrays = [], []
    for sname, arr in sections.items():
        if not isinstance(sname, str) or not _IDENT.match(sname):
            raise InvalidArgumentError(f"tensor {name!r}: invalid section name {sname!r}")
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            raise InvalidArgumentError(f"tensor {name!r}: section {sname!r} must be a 1-D numpy array")
        dname = _dtype_name(arr.dtype)
        if dname not in _SECTION_DTYPES:
            raise InvalidArgumentError(f"tensor {name!r}: section {sname!r} has dtype {arr.dtype}, "
                                       f"not one of {sorted(_SECTION_DTYPES)}")
        entries.append({"name": sname, "dtype": dname})
        arrays.append(np.ascontiguousarray(arr, dtype=_DTYPES[dname][0]))
    entry = {"name": name, "dtype": "float32", "shape": shape, "encoding": encoding,
             "params": dict(params), "sections": entries}
    source_dtype = getattr(em, "source_dtype", "float32")
    if source_dtype != "float32":  # format 1.1: what decoding gives back
        if source_dtype not in _SOURCE_DTYPES:
            raise InvalidArgumentError(f"tensor {name!r}: source_dtype {source_dtype!r} is not one of "
                                       f"float32, {', '.join(_SOURCE_DTYPES)}")
        entry["source_dtype"] = source_dtype
    return entry, arrays


def _plan(tensors, metadata):
    """The complete header bytes (preamble included) and the list of (padding, array) to write."""
    if not isinstance(tensors, Mapping):
        raise InvalidArgumentError(f"tensors must be a dict name -> array, got {type(tensors).__name__}")
    if len(tensors) > MAX_TENSORS:
        raise InvalidArgumentError(f"{len(tensors)} tensors exceed the limit of {MAX_TENSORS}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_METADATA_ITEMS:
        raise InvalidArgumentError("metadata must be a dict str -> str")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
    entries, chunks = [], []
    end = 0
    for name, value in tensors.items():
        entry, arrays = _plan_tensor(name, value)
        for sec, arr in zip(entry["sections"], arrays):
            offset = _align(end)
            sec["offset"] = offset
            sec["length"] = arr.nbytes
            sec["crc32"] = _crc32(arr.view(np.uint8)) if arr.nbytes else 0
            chunks.append((offset - end, arr))
            end = offset + arr.nbytes
        entries.append(entry)
    doc = {"metadata": dict(metadata), "tensors": entries}
    try:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"metadata or a name is not valid Unicode: {exc}") from None
    hlen = _align(PREAMBLE_SIZE + len(text)) - PREAMBLE_SIZE
    if hlen > MAX_HEADER_SIZE:
        raise InvalidArgumentError(f"the header would be {hlen} bytes, over the limit of {MAX_HEADER_SIZE}")
    header = text + b" " * (hlen - len(text))
    head = struct.pack("<8sHHIQI", MAGIC, FORMAT_MAJOR, minor_version(entries), 0, hlen, 0)
    crc = crc32(header, crc32(head))
    return head + struct.pack("<I", crc) + header, chunks


def minor_version(entries):
    """The minor version a writer puts in the preamble: the oldest one that holds every optional key
    the tensor entries use (a file without 1.1 keys stays 1.0, byte for byte as before)."""
    return max([0] + [_TENSOR_OPTIONAL[k] for e in entries for k in _TENSOR_OPTIONAL if k in e])


def _write_chunks(f, head, chunks):
    f.write(head)
    for pad, arr in chunks:
        if pad:
            f.write(_ZEROS[:pad])
        _write_section(f, arr)


def _write_section(f, arr):
    if arr.nbytes:
        f.write(memoryview(arr.view(np.uint8)))


def save(tensors, metadata=None):
    """The bytes of a .dnnz file holding `tensors` (same rules as ``save_file``).

    >>> import numpy as np
    >>> save({}, {"a": "b"})[:8]
    b'\\x89DNNZ\\r\\n\\x1a'
    """
    import io
    head, chunks = _plan(tensors, metadata)
    out = io.BytesIO()
    _write_chunks(out, head, chunks)
    return out.getvalue()


def save_file(tensors, path, metadata=None):
    """Write `tensors` (name -> ndarray, BFloat16Tensor or EncodedMatrix) and string `metadata`
    to `path` atomically.

    The data goes to a temporary file in the same folder, is fsynced, then renamed over `path`
    (and the folder fsynced): an exception or a killed process (SIGKILL, SIGTERM, power loss)
    leaves either the old file or the new one, never a partial one. On Linux (O_TMPFILE: ext4,
    xfs, btrfs, tmpfs) the temporary is unnamed, so nothing is left behind by a crash either;
    elsewhere a killed writer may leave ``.NAME.HOST-PID.RANDOM.tmp``, which the next write to
    `path` removes (see ``pydnnz._atomic``). Errors of the environment (disk full, permission,
    read-only folder) raise OSError naming `path`. Readers holding the old file's memory map keep
    seeing the old contents. Raw arrays keep their dtype and shape; sections are
    aligned to 64 bytes.

    >>> import tempfile, os, numpy as np, pydnnz
    >>> p = os.path.join(tempfile.mkdtemp(), "m.dnnz")
    >>> pydnnz.save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, p, {"recipe": "none"})
    >>> pydnnz.load_file(p)["w"].shape
    (2, 3)
    """
    head, chunks = _plan(tensors, metadata)  # validate everything before touching the disk
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _write_chunks(f, head, chunks)
