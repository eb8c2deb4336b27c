"""A careful timer for benchmarks: best of N runs, with a minimum run count and wall time.

timeit.Timer.repeat would do the timing loop, but not the wall-time floor, the warm-up call or
the interleaving of the functions compared (so that load from other processes on a shared
machine hits all of them alike); this is the one timer of pydnnz (`dnnz bench`) and bench/.
"""
import time


def best_times(fns, min_runs: int = 3, min_seconds: float = 0.2, max_runs: int = 1000, warmup: bool = True):
    """Seconds of the fastest call of each function in `fns`, the calls interleaved round by round,
    over at least `min_runs` rounds and `min_seconds` of wall time (at most `max_runs` rounds)."""
    if warmup:
        for fn in fns:
            fn()  # page faults, lazy tables, thread-pool start
    best = [float("inf")] * len(fns)
    runs = 0
    start = time.perf_counter()
    while runs < min_runs or (time.perf_counter() - start < min_seconds and runs < max_runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        runs += 1
    return best


def best_time(fn, min_runs: int = 3, min_seconds: float = 0.2, max_runs: int = 1000, warmup: bool = True) -> float:
    """Seconds of the fastest call of `fn()` over at least `min_runs` calls and `min_seconds` of wall time."""
    return best_times([fn], min_runs, min_seconds, max_runs, warmup)[0]
