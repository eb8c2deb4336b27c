"""The runtime form of loaded layers: re-encoding into a faster lossless encoding at load.

A file is encoded for its size ("auto" keeps layers within a speed budget, "smallest" ignores
speed). A device where a layer's encoding is too slow can ask `load_model(...,
runtime_encoding=...)` to re-encode the layers in memory: each layer is decoded once
(transiently: one layer's dense weight at a time) and encoded again, exactly, into the target.
The re-encoded bytes live in RAM (the file's bytes stay memory-mapped and unused), so the total
is capped by `runtime_memory` bytes: layers are taken in the order of the estimated time they
save (pydnnz/encodings/_speed.py) and a layer whose new form does not fit is left as it is.
"""
import numpy as np

from ..encodings import MatrixInput, encode, get_encoding
from ..encodings._speed import POLICIES, estimated_ratio, header_ratio
from ..errors import InvalidArgumentError

#: Default cap on the bytes that re-encoded layers may hold in memory.
DEFAULT_RUNTIME_MEMORY = 512 << 20


def check_target(target):
    if target is None:
        return
    if target in POLICIES:
        if target != "fastest":
            raise InvalidArgumentError(f"runtime_encoding={target!r}: only 'fastest' or an encoding name "
                                       "make sense at load (the file already holds the smallest form)")
        return
    get_encoding(target)  # UnsupportedError naming the known encodings


def reencode(layers, target, budget):
    """{name: new EncodedMatrix} for the layers {name: EncodedMatrix} worth re-encoding into
    `target` ("fastest" or an encoding name) within `budget` bytes, plus the report rows."""
    budget = DEFAULT_RUNTIME_MEMORY if budget is None else int(budget)
    if budget < 0:
        raise InvalidArgumentError(f"runtime_memory must be >= 0 bytes, got {budget}")
    # Largest estimated saving first: time (relative units) of the current form minus a fast one.
    order = sorted(layers.items(), key=lambda kv: -header_ratio(kv[1].encoding, kv[1].shape, kv[1].params,
                                                                kv[1].nbytes) * int(np.prod(kv[1].shape)))
    out, report, used = {}, [], 0
    for name, em in order:
        if target != "fastest" and em.encoding == target:
            continue
        m = MatrixInput(em.decode())
        n, nnz = m.rows * m.cols, int(np.count_nonzero(m.nonzero_mask))
        if target == "fastest":
            new = encode(m, "fastest")
            if new.encoding == em.encoding or \
                    header_ratio(new.encoding, new.shape, new.params, new.nbytes) >= \
                    header_ratio(em.encoding, em.shape, em.params, em.nbytes):
                continue
        else:
            if not get_encoding(target).applicable(m):
                continue
            new = encode(m, target)
        if used + new.nbytes > budget:
            report.append((name, em.encoding, em.encoding, em.nbytes, "over runtime_memory: kept"))
            continue
        used += new.nbytes
        out[name] = new
        report.append((name, em.encoding, new.encoding, new.nbytes, "re-encoded"))
    return out, report
