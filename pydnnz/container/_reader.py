"""The lazy memory-mapped reader: load_file, load, safe_open, LazyTensors and verify."""
import math
import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import container as _pkg  # _crc32 and _from_sections are looked up there: tests patch them
from ..errors import ChecksumError, CorruptFileError, DnnzError, InvalidArgumentError, UnsupportedError
from ._format import _DTYPES, PREAMBLE_SIZE, RAW, BFloat16Tensor, _Where
from ._header import _check_padding, _parse_header, _parse_preamble


def _from_sections(encoding, shape, params, sections, source_dtype="float32"):
    """Rebuild an EncodedMatrix through the encodings registry (``pydnnz.encodings.from_sections``)."""
    try:
        from .. import encodings
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
            computed = _pkg._crc32(view)
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
                em = _pkg._from_sections(t.encoding, t.shape, dict(t.params), sections)
            else:
                em = _pkg._from_sections(t.encoding, t.shape, dict(t.params), sections, t.source_dtype)
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
        from ..shards import load_sharded

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
        from ..shards import verify_sharded

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
    from .. import runtime
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
