"""CPU path and thread count used by the C kernels.

The library picks the best SIMD path this CPU supports (``avx512`` > ``avx2`` > ``scalar``)
at run time; the environment variable ``DNNZ_CPU_PATH`` forces one (an unavailable forced path
makes every kernel call raise :class:`~pydnnz.errors.UnsupportedError`). Kernels use all online
CPUs unless ``DNNZ_NUM_THREADS`` or :func:`set_num_threads` say otherwise. Results never depend
on the thread count.

>>> import pydnnz
>>> pydnnz.cpu_path() in ("avx512", "avx2", "scalar")
True
>>> old = pydnnz.get_num_threads(); pydnnz.set_num_threads(1); pydnnz.get_num_threads()
1
>>> pydnnz.set_num_threads(old)
"""
import os

from . import errors
from . import _native as C
from ._native import check

PATHS = ("scalar", "avx2", "avx512")


def cpu_path():
    """Name of the active kernel path: ``"avx512"``, ``"avx2"`` or ``"scalar"``.

    Raises UnsupportedError when ``DNNZ_CPU_PATH`` forces a path this CPU lacks.
    """
    path = C.dnnz_cpu_get_path()
    if path < 0:
        raise errors.UnsupportedError(
            f"DNNZ_CPU_PATH={os.environ.get('DNNZ_CPU_PATH', '')!r} is not a kernel path this CPU "
            f"supports (supported: {', '.join(supported_cpu_paths())})")
    return PATHS[path]


def supported_cpu_paths():
    """The kernel paths this CPU can run, best last (e.g. ``('scalar', 'avx2', 'avx512')``)."""
    return tuple(name for i, name in enumerate(PATHS) if C.dnnz_cpu_supported(i))


def set_cpu_path(path):
    """Force a kernel path by name; ``None`` restores the automatic (best) choice."""
    if path is None:
        check(C.dnnz_cpu_set_path(-1), "set_cpu_path")
        return
    if path not in PATHS:
        raise errors.InvalidArgumentError(f"set_cpu_path: unknown path {path!r} (one of {PATHS})")
    check(C.dnnz_cpu_set_path(PATHS.index(path)), f"set_cpu_path({path!r})")


def get_num_threads():
    """Threads the kernels use (the calling thread included)."""
    return int(C.dnnz_cpu_get_threads())


def set_num_threads(n):
    """Use `n` threads (1..1024) in the kernels."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise errors.InvalidArgumentError(f"set_num_threads: expected an int, got {n!r}")
    check(C.dnnz_cpu_set_threads(n), f"set_num_threads({n})")


def _require_path():
    cpu_path()  # raises the explicit UnsupportedError for a bad DNNZ_CPU_PATH


# ---------------------------------------------------------------------------------------------
# decoded-size guard (spec/dnnz-format.md, "Resource bounds")

#: Largest tensor (in bytes) that readers materialise by default: 4 GiB. A file of a few hundred
#: bytes can describe a tensor of terabytes (an ``rlham`` row with no entries costs one bit, an
#: ``im`` matrix with one codebook value stores no indices), so a reader must not trust the shape
#: alone. Raise the limit with ``decode(max_bytes=...)``, :func:`set_max_decoded_bytes` or the
#: environment variable ``DNNZ_MAX_DECODED_BYTES`` (bytes, or with a K/M/G/T suffix: ``16G``).
DEFAULT_MAX_DECODED_BYTES = 4 << 30

_max_decoded = None  # set by set_max_decoded_bytes; None: the environment or the default
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def _parse_bytes(text, what):
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _SUFFIXES and t[-1:] else ""
    try:
        n = int(t[:-1] if unit else t) * _SUFFIXES[unit]
    except ValueError:
        n = -1
    if n < 0:
        raise errors.InvalidArgumentError(f"{what}: expected a byte count such as 8589934592 or 8G, got {text!r}")
    return n


def get_max_decoded_bytes():
    """The decoded-size limit now in force, in bytes (see :data:`DEFAULT_MAX_DECODED_BYTES`).

    >>> import pydnnz
    >>> pydnnz.set_max_decoded_bytes(1 << 20); pydnnz.get_max_decoded_bytes()
    1048576
    >>> pydnnz.set_max_decoded_bytes(None)  # back to DNNZ_MAX_DECODED_BYTES or the default
    """
    if _max_decoded is not None:
        return _max_decoded
    env = os.environ.get("DNNZ_MAX_DECODED_BYTES", "").strip()
    return _parse_bytes(env, "DNNZ_MAX_DECODED_BYTES") if env else DEFAULT_MAX_DECODED_BYTES


def set_max_decoded_bytes(n):
    """Set the process-wide decoded-size limit (an int >= 0, or a string such as ``"16G"``);
    ``None`` goes back to ``DNNZ_MAX_DECODED_BYTES`` or the default."""
    global _max_decoded
    if n is None:
        _max_decoded = None
        return
    if isinstance(n, bool) or not isinstance(n, (int, str)):
        raise errors.InvalidArgumentError(f"set_max_decoded_bytes: expected an int or a string, got {n!r}")
    _max_decoded = _parse_bytes(n, "set_max_decoded_bytes")


def _human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check_decoded_size(nbytes, what, max_bytes=None, action="decoding"):
    """Raise DnnzMemoryError when materialising `nbytes` would pass the limit (`max_bytes`, or
    :func:`get_max_decoded_bytes` when None). `what` names the tensor in the message, `action`
    what would take the memory ("decoding", "the product's output", ...)."""
    limit = get_max_decoded_bytes() if max_bytes is None else _parse_bytes(max_bytes, "max_bytes")
    if nbytes > limit:
        raise errors.DnnzMemoryError(
            f"{what}: {action} needs {_human_bytes(nbytes)} ({nbytes} bytes), over the decoded-size limit of "
            f"{_human_bytes(limit)}; if this tensor is expected, raise the limit (decode(max_bytes=...), "
            f"pydnnz.set_max_decoded_bytes(), DNNZ_MAX_DECODED_BYTES or dnnz --max-decoded-bytes)")
