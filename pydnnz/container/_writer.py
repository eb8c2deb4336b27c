"""The writer (save, save_file): plans the header from the tensors, then writes the preamble,
the header and the 64-byte-aligned sections."""
import json
import math
import struct
from collections.abc import Mapping

import numpy as np

from .. import container as _pkg  # _write_section is looked up there: tests patch it
from .._atomic import atomic_path
from .._native import crc32
from ..errors import InvalidArgumentError
from ._format import (
    _DTYPES, _IDENT, _SECTION_DTYPES, _SOURCE_DTYPES, _TENSOR_OPTIONAL, _ZEROS, FORMAT_MAJOR, MAGIC,
    MAX_DIM, MAX_HEADER_SIZE, MAX_METADATA_ITEMS, MAX_NAME_BYTES, MAX_NDIM, MAX_PARAMS, MAX_SECTIONS,
    MAX_TENSORS, PREAMBLE_SIZE, RAW, BFloat16Tensor, _align, _crc32,
)


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
        _pkg._write_section(f, arr)


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
