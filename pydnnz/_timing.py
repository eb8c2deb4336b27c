"""A careful timer for benchmarks: best of N runs, with a minimum run count and wall time."""
import time


def best_time(fn, min_runs: int = 3, min_seconds: float = 0.2, max_runs: int = 1000) -> float:
    """Seconds of the fastest call of `fn()` over at least `min_runs` calls and `min_seconds` of wall time."""
    fn()  # warm-up: page faults, lazy tables, thread-pool start
    best = float("inf")
    runs = 0
    start = time.perf_counter()
    while runs < min_runs or (time.perf_counter() - start < min_seconds and runs < max_runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best
