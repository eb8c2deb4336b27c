"""The one module that talks to the compiled library (pydnnz._dnnz).

No other module of pydnnz imports `ffi` or `lib`. They import this module (``from .. import
_native as C``) and reach the library through it: ``C.dnnz_ham_matmul(...)`` and ``C.DNNZ_OK``
are the C library's own functions and constants (names starting ``dnnz_``/``DNNZ_`` only),
``C.new``/``C.cast``/``C.NULL`` build arguments. `check` and `error_class` turn a C status into
the right DnnzError subclass, `validate` runs an encoding's validator, `crc32` is csrc/crc.c, and
the `*ptr` helpers pass NumPy arrays to C without copies after making them contiguous and of
the exact C type.
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


NULL = ffi.NULL


# The compiled library's functions and constants, as attributes of this module
# (``_native.dnnz_crc_update``, ``_native.DNNZ_OK``): looked up once here, not on every call.
globals().update({name: getattr(lib, name) for name in dir(lib) if name.startswith(("dnnz_", "DNNZ_"))})


def new(ctype, init=None):
    """A new C object of `ctype` owned by Python (``new("struct dnnz_ham *")``, ``new("uint64_t *")``)."""
    return ffi.new(ctype, init)


def cast(ctype, value):
    """`value` (a pointer from `ptr`) seen as `ctype` (``cast("uint8_t *", ptr(out, writable=True))``)."""
    return ffi.cast(ctype, value)


def struct_name(pointer):
    """The C struct a cffi pointer points to, e.g. "struct dnnz_ham"."""
    return ffi.typeof(pointer).item.cname


def error_class(status, default=errors.DnnzError):
    """The DnnzError subclass for a C status (`default` for an unknown one)."""
    return _STATUS_ERRORS.get(status, default)


def status_name(status):
    return ffi.string(lib.dnnz_status_name(status)).decode()


def check(status, what):
    """Raise the DnnzError subclass for a non-zero C status; `what` says what we were doing."""
    if status != lib.DNNZ_OK:
        raise error_class(status)(f"{what}: {status_name(status)}")


def validate(validator, struct):
    """Run an encoding's C validator; (status, field code, element index or -1) of the first problem."""
    err = ffi.new("struct dnnz_enc_err *")
    err.field, err.where = lib.DNNZ_FIELD_NONE, -1
    status = validator(struct, err)
    return status, err.field, err.where


def crc32(data, crc=0):
    """CRC-32/ISO-HDLC of a bytes-like object continuing `crc`: zlib.crc32(data, crc), computed by
    csrc/crc.c, which folds with carry-less multiplication where the CPU has it."""
    n = memoryview(data).nbytes
    return int(lib.dnnz_crc_update(crc, bytes_ptr(data), n)) if n else crc


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
