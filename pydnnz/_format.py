"""Text formatting shared by the CLI, the demo and bench/: byte sizes, aligned tables, entropy.

One home so that `cli` and `demo` do not import each other. Byte sizes are written here rather
than with tqdm.format_sizeof because that one prints bare SI-style suffixes ("1.21M") and the CLI
prints units ("1.21 MiB").
"""
from __future__ import annotations

import numpy as np


def human_size(n: float) -> str:
    """A byte count with a binary unit, named as such: '512 B', '1.50 KiB', '3.25 MiB', '1.00 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"  # pragma: no cover


def table(rows, headers) -> str:
    """Rows as aligned text columns under `headers` (first column left-aligned, the rest right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(r):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def entropy_bits(counts) -> float:
    """Order-0 entropy of a histogram, in bits per symbol (0 for an empty one).

    >>> entropy_bits([2, 2, 0, 4])
    1.5
    """
    counts = np.asarray(counts, np.float64)
    counts = counts[counts > 0]
    n = counts.sum()
    return float(-(counts / n * np.log2(counts / n)).sum()) if n else 0.0


def value_entropy_bits(values: np.ndarray) -> float:
    """Order-0 empirical entropy of an array's entries, in bits per entry."""
    if values.size == 0:
        return 0.0
    return entropy_bits(np.unique(values.ravel(), return_counts=True)[1])
