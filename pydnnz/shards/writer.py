"""The shard writer: one .dnnz file written tensor by tensor, holding only the tensor being
written, with the same bytes as pydnnz.save_file.
"""
from __future__ import annotations

import json
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..errors import ChecksumError, InvalidArgumentError, TruncatedError
from .sources import _CHUNK, TensorRef, read_ref


# --------------------------------------------------------------------------- the shard writer
class ShardWriter:
    """Writes one .dnnz file tensor by tensor, holding only the tensor being written.

    The sections go to an anonymous temporary file as they come (their offsets and CRC-32s
    computed on the way); ``finish`` then writes preamble + header and copies the data area
    behind them, atomically. The bytes equal what ``pydnnz.save_file`` writes for the same tensors.
    """

    def __init__(self, path, metadata=None):
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.entries = []
        self.end = 0
        self._data = tempfile.TemporaryFile(dir=self.path.parent or ".")

    def _pad_to_next(self):
        from ..container import _align

        offset = _align(self.end)
        if offset > self.end:
            self._data.write(bytes(offset - self.end))
        return offset

    def add(self, name, value):
        """Add an ndarray, BFloat16Tensor or EncodedMatrix (all in memory)."""
        from ..container import _crc32, _plan_tensor

        entry, arrays = _plan_tensor(name, value)
        for sec, arr in zip(entry["sections"], arrays):
            offset = self._pad_to_next()
            sec["offset"], sec["length"] = offset, arr.nbytes
            sec["crc32"] = _crc32(arr.view(np.uint8)) if arr.nbytes else 0
            if arr.nbytes:
                self._data.write(memoryview(arr.view(np.uint8)))
            self.end = offset + arr.nbytes
        self.entries.append(entry)

    def add_raw_ref(self, ref: TensorRef):
        """Copy a raw tensor from its file in pieces (never all of it in memory)."""
        from ..container import _check_shape

        shape = _check_shape(ref.name, ref.shape)
        if ref.dtype == "bool":  # store canonical 0/1 bytes, as save_file does
            self.add(ref.name, read_ref(ref))
            return
        offset = self._pad_to_next()
        crc = 0
        left = ref.nbytes
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            while left:
                piece = f.read(min(_CHUNK, left))
                if not piece:
                    raise TruncatedError(f"{ref.path}: tensor {ref.name!r} ends early")
                crc = zlib.crc32(piece, crc)
                self._data.write(piece)
                left -= len(piece)
        crc &= 0xFFFFFFFF
        if ref.crc32 is not None and crc != ref.crc32:
            raise ChecksumError(f"{ref.path}: tensor {ref.name!r}: CRC-32 mismatch")
        self.entries.append({"name": ref.name, "dtype": ref.dtype, "shape": shape, "encoding": "raw",
                             "params": {}, "sections": [{"name": "data", "dtype": ref.dtype, "offset": offset,
                                                         "length": ref.nbytes, "crc32": crc}]})
        self.end = offset + ref.nbytes

    def header(self) -> bytes:
        from ..container import (FORMAT_MAJOR, MAGIC, MAX_HEADER_SIZE, PREAMBLE_SIZE, _align, minor_version)

        for k, v in self.metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidArgumentError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        doc = {"metadata": self.metadata, "tensors": self.entries}
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        hlen = _align(PREAMBLE_SIZE + len(text)) - PREAMBLE_SIZE
        if hlen > MAX_HEADER_SIZE:
            raise InvalidArgumentError(f"{self.path}: the header would be {hlen} bytes, over {MAX_HEADER_SIZE}")
        body = text + b" " * (hlen - len(text))
        head = struct.pack("<8sHHIQI", MAGIC, FORMAT_MAJOR, minor_version(self.entries), 0, hlen, 0)
        crc = zlib.crc32(body, zlib.crc32(head)) & 0xFFFFFFFF
        return head + struct.pack("<I", crc) + body

    def finish(self):
        head = self.header()
        try:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as out:
                out.write(head)
                self._data.seek(0)
                shutil.copyfileobj(self._data, out, _CHUNK)
        finally:
            self.close()

    def close(self):
        if self._data is not None:
            self._data.close()
            self._data = None
