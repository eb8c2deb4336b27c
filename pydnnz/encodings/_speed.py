"""How fast each encoding's dot product is expected to run, and the encoding policies.

`encode(matrix, encoding=POLICY)` picks an encoding by one of three named policies:

- ``"auto"`` (the default): the SMALLEST encoding whose estimated dot product time is within
  ``SPEED_BUDGET`` (1.5x) of the FASTEST lossless encoding that can hold this matrix. A layer
  thus never gets an encoding that makes it more than 1.5x slower than it could be, and among
  those it gets the fewest bytes.
- ``"smallest"``: the fewest bytes, whatever the speed (what "auto" used to mean).
- ``"fastest"``: the lowest estimated time (ties: fewer bytes).

For "auto" and "fastest" an encoding whose payload is larger than the dense float32 one is not a
candidate: a batch-1 product is memory-bound, so reading more bytes than dense never beats dense.

The estimate is a cost model, not a timing at encode time, so the choice is deterministic (the
same matrix gives the same file on every machine). For an (out, in) matrix with n = out * in
entries, nnz non-zeros (+0.0 is the only zero) and a payload of `bits` encoded bits, the time of
a batch-1 product relative to a dense float32 one (torch.nn.functional.linear, one thread) is

    (a * n + b * nnz + c * bits) / n

with per-encoding coefficients (a, b, c) in COST, fitted by least squares on measurements
(`python -m bench.models --calibrate` prints a fresh fit for the machine it runs on; the table
below came from that on an Intel Xeon with AVX-512). Dense products of larger batches are
compute-bound and the encodings' tile kernels close the gap, so the batch-1 ratio is the one
the choice is made on.
"""
import numpy as np

#: "auto" accepts an encoding whose estimated time is at most this multiple of the fastest one's.
SPEED_BUDGET = 1.5

#: The policies `encode` accepts in place of an encoding name.
POLICIES = ("auto", "smallest", "fastest")

#: encoding -> (a: per entry, b: per non-zero, c: per stored payload bit), in units of one entry of
#: a dense float32 batch-1 product. Calibrated with `python -m bench.models --calibrate`.
COST = {
    "dense": (1.0, 0.0, 0.0),
    "csc": (0.0, 7.0, 0.0),
    "im": (0.6, 0.0, 0.0),
    "im8": (0.55, 0.0, 0.0),
    "im4": (0.5, 0.0, 0.0),
    "ham": (2.5, 0.0, 1.3),
    "sham": (0.8, 12.5, 0.0),
    "rlham": (3.0, 60.0, 0.0),
}
_UNKNOWN = (4.0, 60.0, 0.0)  # an encoding registered without a calibration: assume it is slow

#: Extra cost per entry of the `im` family's slow path, added to COST's `a`: indices wider than
#: 8 bits (k > 256) are unpacked by scalar code, measured 7.6-17.7x torch dense at batch 1 (AMD
#: EPYC, AVX-512, 1024x1024 and 4096x1024, k = 257) against 0.4-0.7x at k = 32. The linear model
#: above cannot see it (its bits term grows by one bit), so without this term "auto" took `im`
#: there. (A codebook of 65-256 values is looked up with a gather instead of registers: 3.8-5.1x
#: dense on that machine, but not priced here: it would make every 8-bit layer dense, 4x larger,
#: and the gather's cost differs widely between CPUs while the choice must not depend on one.)
IM_SLOW_PATHS = {"wide": 13.0}
_IM_FAMILY = ("im", "im8", "im4")


def im_extra(name, k, bits):
    """The extra per-entry cost of `im`-family encoding `name` for k codebook values in `bits`-bit
    indices (0 for every other encoding, or when k is unknown)."""
    if name not in _IM_FAMILY or k is None:
        return 0.0
    return IM_SLOW_PATHS["wide"] if (bits or 0) > 8 else 0.0

#: Speed classes (`dnnz info`): the estimated time relative to dense float32 at batch 1.
SPEED_CLASSES = (("fast", 1.3), ("medium", 3.0), ("slow", float("inf")))


def estimated_ratio(name, n, nnz, nbytes, k=None, bits=None):
    """Estimated batch-1 dot product time of encoding `name` relative to dense float32 (k, bits:
    the `im` family's codebook size and index width, see IM_SLOW_PATHS)."""
    if n <= 0:
        return 0.0
    a, b, c = COST.get(name, _UNKNOWN)
    return (a * n + b * nnz + c * 8 * nbytes) / n + im_extra(name, k, bits)


def speed_class(ratio):
    """"fast", "medium" or "slow" for an estimated time ratio to dense (see SPEED_CLASSES)."""
    for label, limit in SPEED_CLASSES:
        if ratio <= limit:
            return label
    return SPEED_CLASSES[-1][0]


def header_ratio(name, shape, params, nbytes):
    """estimated_ratio from what a file's header says (no decoding): nnz comes from params where
    the encoding stores it; otherwise every entry counts as a non-zero except for `rlham`, whose
    non-zeros are estimated from its payload (about log2(k) + 2 bits per non-zero)."""
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    nnz = params.get("nnz") if isinstance(params, dict) else None
    if not isinstance(nnz, int):
        nnz = n
        if name == "rlham":
            k = max(int(params.get("k", 2)) if isinstance(params, dict) else 2, 2)
            nnz = min(n, int(8 * nbytes / (np.log2(k) + 2)))
    k = params.get("k") if isinstance(params, dict) else None
    bits = params.get("bits") if isinstance(params, dict) else None
    return estimated_ratio(name, n, nnz, nbytes, k if isinstance(k, int) else None,
                           bits if isinstance(bits, int) else None)


def choose(m, policy, classes):
    """The encoding class `policy` picks for the MatrixInput `m` among `classes` (registration
    order). Applicability and sizes are computed only for encodings the cost model leaves in the
    running (an encoding's applicability check can cost as much as encoding: rlham plans its code)."""
    classes = list(classes)
    order = {cls: i for i, cls in enumerate(classes)}
    checked, sizes = {}, {}

    def usable(cls):
        if cls not in checked:
            checked[cls] = bool(cls.applicable(m))
        return checked[cls]

    def size(cls):
        if cls not in sizes:
            sizes[cls] = cls.encoded_nbytes(m)
        return sizes[cls]

    if policy != "smallest":
        # An encoding larger than dense float32 is never faster than it: a batch-1 product is
        # memory-bound and every encoding reads its bytes plus decoding work (e.g. `im` over a
        # random float matrix: 1.1 M codebook entries, 21-bit indices, a cache-missing gather).
        dense = next((cls for cls in classes if cls.name == "dense"), None)
        if dense is not None:
            plain = usable

            def usable(cls):  # noqa: F811 - the same check, plus the size rule above
                return plain(cls) and (cls is dense or size(cls) <= size(dense))

    if policy == "smallest":
        best = None
        for cls in classes:  # registration order: ties go to the first
            if best is not None and cls.min_nbytes(m) >= size(best):
                continue  # cannot win: step aside before planning (rlham/sham plan a code)
            if usable(cls) and (best is None or size(cls) < size(best)):
                best = cls
        return best
    n = m.rows * m.cols
    nnz = int(np.count_nonzero(m.nonzero_mask)) if n else 0
    coef = {cls: COST.get(cls.name, _UNKNOWN) for cls in classes}
    for cls in classes:
        if cls.name in _IM_FAMILY:
            bits = cls._bits_for(m.k) if hasattr(cls, "_bits_for") else None
            a, b, c = coef[cls]
            coef[cls] = (a + im_extra(cls.name, m.k, bits), b, c)
    lower = {cls: coef[cls][0] * n + coef[cls][1] * nnz for cls in classes}  # without the bits term

    def cost(cls):
        return lower[cls] + coef[cls][2] * 8 * size(cls) if coef[cls][2] else lower[cls]

    by_lower = sorted(classes, key=lambda cls: (lower[cls], order[cls]))
    fastest = None
    for cls in by_lower:
        if fastest is not None and lower[cls] > cost(fastest):
            break
        if not usable(cls):
            continue
        if fastest is None or (cost(cls), size(cls)) < (cost(fastest), size(fastest)):
            fastest = cls
    if fastest is None or policy == "fastest":
        return fastest
    limit = SPEED_BUDGET * cost(fastest)
    within = [cls for cls in by_lower if lower[cls] <= limit and usable(cls) and cost(cls) <= limit]
    return min(within, key=lambda cls: (size(cls), order[cls]))
