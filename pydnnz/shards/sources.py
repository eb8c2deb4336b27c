"""Sharded inputs, read one tensor at a time: where each tensor's bytes lie in a .safetensors or
.dnnz file (TensorRef, from headers only), a checkpoint opened as a list of shards (open_source),
one tensor read from its file at its offset (read_ref), and small .safetensors writers for tests.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._atomic import atomic_path
from ..errors import ChecksumError, CorruptFileError, InvalidArgumentError, TruncatedError, UnsupportedError
from .index import _check_against_index, _find_index, _no_duplicate_keys, read_index

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_CHUNK = 8 * 1024 * 1024                    # raw tensors are copied in pieces of this size

# safetensors dtype names -> the .dnnz dtype names (spec/dnnz-format.md §7.4)
_ST_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
              "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
              "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_FLOATS = ("float16", "bfloat16", "float32", "float64")


# --------------------------------------------------------------------------- where tensors lie
class TensorRef(NamedTuple):
    """Where the bytes of one raw tensor lie: `nbytes` bytes at absolute `offset` of `path`.

    ``dtype`` is a .dnnz dtype name; ``crc32`` is the stored CRC-32 to check (a .dnnz source) or
    None (safetensors has none). ``encoding`` is "raw", or the encoding of a tensor a .dnnz source
    already holds compressed (then offset/nbytes are unused and the writer copies it as it is).
    """
    name: str
    path: str
    offset: int
    nbytes: int
    dtype: str
    shape: tuple
    crc32: int | None = None
    encoding: str = "raw"


def _np_dtype(dname):
    from ..container import _DTYPES

    return _DTYPES[dname][0]


def read_safetensors_header(path):
    """(list of TensorRef in file order, metadata) of a .safetensors file, from its header only.

    Every length and offset is checked against the file before it is trusted; a bad header
    raises CorruptFileError (TruncatedError when the file is shorter than the header says).
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise TruncatedError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER:
            raise CorruptFileError(f"{path}: safetensors header of {n} bytes exceeds {MAX_SAFETENSORS_HEADER}")
        if 8 + n > size:
            raise TruncatedError(f"{path}: safetensors header of {n} bytes runs past the end of the file")
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys(path))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{path}: safetensors header is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CorruptFileError(f"{path}: safetensors __metadata__ must map str to str")
    data_start = 8 + n
    refs = []
    for name, e in doc.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise CorruptFileError(f"{where}: entry must have exactly dtype, shape and data_offsets")
        dname = _ST_DTYPES.get(e["dtype"]) if isinstance(e["dtype"], str) else None
        if dname is None:
            raise UnsupportedError(f"{where}: dtype {e['dtype']!r} is not supported "
                                   f"(known: {', '.join(_ST_DTYPES)})")
        shape, offs = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CorruptFileError(f"{where}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise CorruptFileError(f"{where}: bad data_offsets {offs!r}")
        nbytes = offs[1] - offs[0]
        want = int(np.prod(shape, dtype=object)) * _np_dtype(dname).itemsize
        if nbytes != want:
            raise CorruptFileError(f"{where}: data_offsets span {nbytes} bytes, shape and dtype need {want}")
        if data_start + offs[1] > size:
            raise TruncatedError(f"{where}: data runs past the end of the file")
        refs.append(TensorRef(name, path, data_start + offs[0], nbytes, dname, tuple(shape)))
    refs.sort(key=lambda r: (r.offset, r.name))
    return refs, dict(meta)


def _dnnz_refs(path):
    """TensorRefs of a single .dnnz file, from its header (raw tensors: where their data lie)."""
    from ..container import RAW, _open_reader

    reader = _open_reader(path)
    try:
        refs = []
        for t in reader.header.tensors.values():
            if t.encoding == RAW:
                s = t.sections[0]
                refs.append(TensorRef(t.name, os.fspath(path), reader.header.data_start + s.offset, s.length,
                                      t.dtype, tuple(t.shape), s.crc32))
            else:
                refs.append(TensorRef(t.name, os.fspath(path), 0, sum(s.length for s in t.sections),
                                      t.dtype, tuple(t.shape), None, t.encoding))
        return refs, dict(reader.header.metadata)
    finally:
        try:
            reader.buf.close()
        except (BufferError, AttributeError):
            pass


_DNNZ_TO_ST = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    """Write a .safetensors file from name -> (dnnz dtype name, ndarray); bfloat16 is given as
    uint16 bit patterns (or ml_dtypes.bfloat16). Atomic. Used by tests and bench/scale.py to
    build sharded checkpoints, which safetensors.numpy cannot write in bfloat16."""
    header, offset, arrays = {}, 0, []
    for name, (dname, arr) in tensors.items():
        a = np.ascontiguousarray(arr)
        if a.nbytes != int(np.prod(a.shape, dtype=object)) * _np_dtype(dname).itemsize:
            raise InvalidArgumentError(f"tensor {name!r}: {a.dtype} data does not fit dtype {dname}")
        header[name] = {"dtype": _DNNZ_TO_ST[dname], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in arrays:
            f.write(memoryview(a.reshape(-1).view(np.uint8)))


def write_index_safetensors(folder, weight_map, total_size):
    """Write a Hugging Face style model.safetensors.index.json (for tests and benchmarks)."""
    with atomic_path(Path(folder) / "model.safetensors.index.json") as tmp:
        tmp.write_text(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=1))


@dataclasses.dataclass
class Source:
    """A checkpoint to read: its shards, each a list of TensorRef, and its metadata."""
    path: Path
    shards: list          # [(file name, [TensorRef, ...])]
    metadata: dict

    @property
    def tensors(self):
        return [r for _, refs in self.shards for r in refs]


def open_source(path) -> Source:
    """Open a checkpoint (folder, index file, or single .safetensors/.dnnz file) from headers only."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        index = _find_index(p)
        if index is None:
            files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.dnnz"))
            if len(files) != 1:
                raise InvalidArgumentError(f"{p}: a checkpoint folder needs an *.index.json file "
                                           f"(or exactly one .safetensors/.dnnz file); found {len(files)} files")
            return open_source(files[0])
        p = index
    if p.name.endswith(".index.json"):
        index = read_index(p)
        shards = []
        seen = set()
        for f in index["shards"]:
            fp = index["folder"] / f
            refs, _ = (_dnnz_refs(fp) if index["format"] == "dnnz" else read_safetensors_header(fp))
            _check_against_index(index, f, [r.name for r in refs])
            for r in refs:
                if r.name in seen:
                    raise CorruptFileError(f"{p}: tensor {r.name!r} is held by two shards")
                seen.add(r.name)
            shards.append((f, refs))
        return Source(p, shards, dict(index["metadata"]))
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        refs, meta = read_safetensors_header(p)
    elif suffix == ".dnnz":
        refs, meta = _dnnz_refs(p)
    else:
        raise InvalidArgumentError(f"{p}: streaming reads .safetensors and .dnnz files (and their "
                                   "sharded folders); convert other formats first")
    return Source(p, [(p.name, refs)], meta)


def read_ref(ref: TensorRef) -> np.ndarray:
    """The tensor's elements (bfloat16 as uint16 bit patterns), read from its file at its offset:
    only these bytes are read, into memory of their own (nothing else of the file is mapped)."""
    buf = bytearray(ref.nbytes)
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        got = f.readinto(buf)
    if got != ref.nbytes:
        raise TruncatedError(f"{ref.path}: tensor {ref.name!r} ends early ({got} of {ref.nbytes} bytes)")
    if ref.crc32 is not None and (zlib.crc32(buf) & 0xFFFFFFFF) != ref.crc32:
        raise ChecksumError(f"{ref.path}: tensor {ref.name!r}: CRC-32 mismatch")
    arr = np.frombuffer(buf, dtype=_np_dtype(ref.dtype))
    if ref.dtype == "bool":
        arr = arr.view(np.uint8) != 0
    return arr.reshape(ref.shape)


def as_float32(arr, dtype: str) -> np.ndarray:
    """float32 values of a tensor read by read_ref (bfloat16 bits widened exactly)."""
    if dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(arr, dtype=np.float32)
