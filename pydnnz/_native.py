"""The one module that talks to the compiled library (pydnnz._dnnz).

Everything else calls the helpers here: `check` turns a C status into the right DnnzError
subclass with a message that names the operation, and the `*_ptr` helpers pass NumPy arrays
to C without copies after making them contiguous and of the exact C type.
"""
import numpy as np

from . import errors

try:
    from ._dnnz import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "pydnnz's compiled library pydnnz._dnnz is missing or does not load "
        f"({exc}). Rebuild it: `pip install -e .` (or `python csrc/build_ffi.py`) from the source tree."
    ) from exc

_STATUS_ERRORS = {
    lib.DNNZ_E_ARGUMENT: errors.InvalidArgumentError,
    lib.DNNZ_E_ALLOC: errors.DnnzMemoryError,
    lib.DNNZ_E_DST_TOO_SMALL: errors.InvalidArgumentError,
    lib.DNNZ_E_TRUNCATED: errors.TruncatedError,
    lib.DNNZ_E_CORRUPT: errors.CorruptDataError,
    lib.DNNZ_E_TRAILING: errors.CorruptDataError,
    lib.DNNZ_E_OVERSUBSCRIBED: errors.CodeLengthError,
    lib.DNNZ_E_INCOMPLETE: errors.CodeLengthError,
    lib.DNNZ_E_CODE_TOO_LONG: errors.CodeLengthError,
    lib.DNNZ_E_LIMIT: errors.InvalidArgumentError,
    lib.DNNZ_E_UNSUPPORTED: errors.UnsupportedError,
}


def status_name(status):
    return ffi.string(lib.dnnz_status_name(status)).decode()


def check(status, what):
    """Raise the DnnzError subclass for a non-zero C status; `what` says what we were doing."""
    if status != lib.DNNZ_OK:
        cls = _STATUS_ERRORS.get(status, errors.DnnzError)
        raise cls(f"{what}: {status_name(status)}")


def c_version():
    return ffi.string(lib.dnnz_version()).decode()


def contiguous(array, dtype):
    """`array` as a C-contiguous ndarray of exactly `dtype` (no copy when it already is one)."""
    return np.ascontiguousarray(array, dtype=dtype)


_CTYPES = {
    np.dtype(np.uint8): "uint8_t[]",
    np.dtype(np.int8): "int8_t[]",
    np.dtype(np.uint16): "uint16_t[]",
    np.dtype(np.int16): "int16_t[]",
    np.dtype(np.uint32): "uint32_t[]",
    np.dtype(np.int32): "int32_t[]",
    np.dtype(np.uint64): "uint64_t[]",
    np.dtype(np.int64): "int64_t[]",
    np.dtype(np.float32): "float[]",
    np.dtype(np.float64): "double[]",
}


def ptr(array, writable=False):
    """A cffi pointer to a C-contiguous ndarray's data (its dtype picks the C type)."""
    if not array.flags.c_contiguous:
        raise errors.InvalidArgumentError("internal: array passed to C must be C-contiguous")
    ctype = _CTYPES[array.dtype]
    if array.size == 0:
        # from_buffer refuses nothing, but give C a valid non-NULL pointer anyway.
        return ffi.new(ctype, 1)
    return ffi.from_buffer(ctype, array, require_writable=writable)


def bytes_ptr(data):
    """A read-only `const uint8_t *` over any bytes-like object (bytes, memoryview, mmap slice, ndarray)."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).view(np.uint8)
    mv = memoryview(data)
    if mv.nbytes == 0:
        return ffi.new("uint8_t[]", 1)
    return ffi.from_buffer("uint8_t[]", mv)
