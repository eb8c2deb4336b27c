"""Where compression tasks run: in this process (workers=1), in a local process pool, or on a
Ray cluster; all three behind the same submit/result/close interface (make_executor).
"""
from __future__ import annotations

import os

from ..errors import DnnzError, InvalidArgumentError, UnsupportedError
from .recipe import _CRASH_ENV, compress_tensor
from .sources import TensorRef, read_ref


# --------------------------------------------------------------------------- executors
class _Inline:
    """Runs each task in this process when its result is asked for (workers=1)."""
    name = "inline"
    workers = 1

    def submit(self, fn, *args):
        return _Deferred(fn, args)

    def close(self, abort=False):
        pass


class _Deferred:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


def _pool_init():
    from ..runtime import set_num_threads

    set_num_threads(1)  # one process per core: the C kernels' own threads would oversubscribe


class _Pool:
    """A local process pool; tasks read their tensor from its file themselves."""
    name = "pool"

    def __init__(self, workers):
        import concurrent.futures
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.workers = workers
        self._ex = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method), initializer=_pool_init)

    def submit(self, fn, *args):
        return self._ex.submit(fn, *args)

    def close(self, abort=False):
        if abort:  # interrupted or failed: do not wait minutes for tasks nobody will collect
            for p in list(getattr(self._ex, "_processes", {}).values()):
                p.terminate()
        self._ex.shutdown(wait=True, cancel_futures=True)


class _Ray:
    """Tasks on a Ray cluster. The driver reads each tensor and ships its bytes through Ray's
    object store (workers need no shared filesystem); a task whose worker dies is retried."""
    name = "ray"
    MAX_RETRIES = 3

    def __init__(self, address=None, num_cpus=None):
        try:
            import ray
        except ImportError:
            raise UnsupportedError("--ray needs Ray installed: pip install 'pydnnz[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address in (None, "", "local"):
                kwargs["num_cpus"] = num_cpus
                env = {k: os.environ[k] for k in ("PYTHONPATH", _CRASH_ENV) if k in os.environ}
                if env:
                    kwargs["runtime_env"] = {"env_vars": env}
            else:
                kwargs["address"] = address
            ray.init(**kwargs)
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._task = ray.remote(num_cpus=1, max_retries=self.MAX_RETRIES,
                                retry_exceptions=[OSError])(_ray_task)

    def submit(self, fn, *args):
        name, data, dtype, recipe = args
        if isinstance(data, TensorRef):
            data = read_ref(data)
        return _RayFuture(self._ray, self._task.remote(name, data, dtype, recipe))

    def close(self, abort=False):
        if self._owns:
            self._ray.shutdown()


def _ray_task(name, data, dtype, recipe):
    _pool_init()
    return compress_tensor(name, data, dtype, recipe)


class _RayFuture:
    def __init__(self, ray, ref):
        self._ray, self._ref = ray, ref

    def result(self):
        try:
            return self._ray.get(self._ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, DnnzError):
                raise cause from None
            raise


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_executor(workers=None, ray=False):
    """workers: processes (None = all cores, 1 = this process); ray: False, or an address
    (None / "local" starts a local Ray instance)."""
    if ray is not False:
        return _Ray(ray)
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidArgumentError(f"workers must be a positive integer, got {workers!r}")
    return _Inline() if workers == 1 else _Pool(workers)
