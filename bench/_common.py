"""What every benchmark shares: one timer, one entropy helper, one machine description, one results writer.

The timer is pydnnz._timing (best of N with a wall-time floor, functions interleaved) and the
entropy helper pydnnz._format.entropy_bits, re-exported here so that bench scripts import all of
it from one place.
"""
from __future__ import annotations

import json
import os
import platform
import sys

from pydnnz._format import entropy_bits
from pydnnz._timing import best_time, best_times

__all__ = ["best_time", "best_times", "entropy_bits", "machine", "machine_text", "emit"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What a benchmark ran on: CPU model and cores, versions, pydnnz's kernel path and threads
    (and torch's, when the benchmark imported torch)."""
    import numpy as np

    import pydnnz

    info = {"cpu": _cpu_model(), "logical_cores": os.cpu_count(), "arch": platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "pydnnz": pydnnz.__version__,
            "pydnnz_cpu_path": pydnnz.cpu_path(), "pydnnz_threads": pydnnz.get_num_threads()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def machine_text(info: dict | None = None) -> str:
    """`machine()` as one line for a report."""
    m = info or machine()
    torch = f", torch {m['torch']} ({m['torch_threads']} threads)" if "torch" in m else ""
    return (f"{m['cpu']}, {m['logical_cores']} logical cores (shared with other jobs){torch}, "
            f"pydnnz kernels: {m['pydnnz_cpu_path']} path, {m['pydnnz_threads']} threads")


def emit(record: dict, path=None) -> None:
    """Print one result as a JSON line (flushed: a run cut short keeps what it measured) and, with
    `path`, append it to that .jsonl file too."""
    line = json.dumps(record)
    print(line, flush=True)
    if path is not None:
        with open(path, "a") as f:
            f.write(line + "\n")
