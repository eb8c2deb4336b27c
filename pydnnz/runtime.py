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
