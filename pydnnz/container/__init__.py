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

The package mirrors the data flow: ``_format`` (format constants, the section CRC, BFloat16Tensor,
the parsed-header model), ``_header`` (preamble and header parse + validate), ``_reader`` (load_file,
load, safe_open, verify) and ``_writer`` (save, save_file). The names below are the package's
interface; the private ones are what pydnnz.shards and the tests use. ``_crc32``,
``_from_sections`` and ``_write_section`` are looked up here at call time, so patching them on
``pydnnz.container`` still takes effect.
"""
from ._format import (
    _DTYPES, ALIGNMENT, FORMAT_MAJOR, FORMAT_MINOR, MAGIC, MAX_HEADER_SIZE, MAX_JSON_DEPTH,
    MAX_METADATA_ITEMS, MAX_NAME_BYTES, MAX_NDIM, MAX_PARAMS, MAX_SECTIONS, MAX_TENSORS,
    PREAMBLE_SIZE, RAW, BFloat16Tensor, _align, _crc32,
)
from ._reader import (
    LazyTensors, VerifyReport, _from_sections, _open_reader, load, load_file, safe_open, verify,
)
from ._writer import _check_shape, _plan_tensor, _write_section, minor_version, save, save_file

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

