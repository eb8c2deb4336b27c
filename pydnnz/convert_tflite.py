"""TensorFlow Lite models (``.tflite``), read only, for `pydnnz.convert` and `dnnz compress`.

A ``.tflite`` file is a FlatBuffer (schema ``tflite/schema.fbs``, read with the ``tflite`` package,
the generated Python accessors of that schema; install ``pip install tflite``). Its constant
tensors (those whose buffer holds data: kernels, biases, lookup tables) become the tensors of the
conversion, each with its dtype and shape: float32, float16 (MediaPipe's fp16 kernels), int8/uint8
(quantized kernels, kept as integers: their ``scale`` and ``zero_point`` come along as the tensors
``NAME::scale`` and ``NAME::zero_point``), int16/int32/int64, float64 and bool. Activations,
strings and other types are not stored weights and are left out. Sparse tensors (TFLite's own
format: traversal order, block map, DENSE and SPARSE_CSR levels, as MediaPipe's "sparse" models
use) are densified, to at most ``MAX_EXPANSION`` times the file size.

The weights worth compressing (``pydnnz.tflite_weights`` in the metadata) are the float tensors
that reach the kernel input of a CONV_2D, CONV_3D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV,
FULLY_CONNECTED or BATCH_MATMUL operator (or MediaPipe's custom Convolution2DTransposeBias),
directly or through DEQUANTIZE/RESHAPE/TRANSPOSE/DENSIFY (fp16 kernels are dequantized, sparse
ones densified at run time). pydnnz does not write ``.tflite``: convert the ``.dnnz`` to ``.npz``
or ``.safetensors``, and rebuild the model with the TensorFlow tooling.

The reader is bounded by the file: every vector it walks must fit in the file (together, the
vectors it visits hold at most the file's bytes), and the tensors it returns hold at most
``MAX_EXPANSION`` times the file's size; anything else is a CorruptDataError naming the file.
"""
from __future__ import annotations

import json

import numpy as np

from .errors import CorruptDataError, UnsupportedError

#: TensorType -> NumPy dtype (little endian, as TFLite stores them).
DTYPES = {0: "<f4", 1: "<f2", 2: "<i4", 3: "u1", 4: "<i8", 6: "?", 7: "<i2", 9: "i1", 10: "<f8",
          12: "<u8", 15: "<u4", 16: "<u2"}
#: BuiltinOperator code -> the inputs that are kernels (BATCH_MATMUL: either side).
WEIGHT_INPUTS = {3: (1,), 132: (1,), 4: (1,), 67: (1,), 9: (1,), 126: (0, 1)}
#: Custom operators (BuiltinOperator CUSTOM, 32) whose kernel input is known: MediaPipe's transposed conv.
CUSTOM_WEIGHT_INPUTS = {"Convolution2DTransposeBias": (1,)}
#: DEQUANTIZE, RESHAPE, TRANSPOSE, DENSIFY: a kernel may pass through them (their first input is the data).
PASS_THROUGH = (6, 22, 39, 124)
IDENTIFIER = b"TFL3"


def _tflite():
    try:
        import tflite
    except ImportError as exc:
        raise UnsupportedError("TensorFlow Lite files need the tflite package (pip install tflite)") from exc
    return tflite


class _Budget:
    """Counts the bytes of the vectors the reader visits: in a valid file they do not overlap, so
    they add up to at most the file's size (a crafted file that points many tables at one vector
    runs out of budget instead of multiplying the work)."""

    def __init__(self, path, size):
        self.path, self.left = path, size + 64

    def take(self, n, what, itemsize=4):
        if n < 0 or n * itemsize > self.left:
            raise CorruptDataError(f"{self.path}: {what} lists {n} entries, more than the file can hold")
        self.left -= n * itemsize
        return n


def _array(path, model, data, t, budget, key):
    """The constant tensor `t` as an ndarray (a copy), or None when it has no data."""
    b = t.Buffer()
    if b == 0:  # buffer 0 is the empty sentinel: an activation
        return None
    if not 0 < b < model.BuffersLength():
        raise CorruptDataError(f"{path}: tensor {key!r} names buffer {b}, outside the {model.BuffersLength()} buffers")
    buf = model.Buffers(b)
    offset, size = buf.Offset(), buf.Size()
    if offset > 1:  # models over 2 GiB keep buffers after the FlatBuffer, at an absolute offset
        if offset + size > len(data):
            raise CorruptDataError(f"{path}: tensor {key!r}: its buffer [{offset}, +{size}) lies past the file end")
        raw = data[offset:offset + size]
    else:
        n = budget.take(buf.DataLength(), f"buffer {b}", 1)
        if n == 0:
            return None
        raw = buf.DataAsNumpy().tobytes()
        if len(raw) != n:
            raise CorruptDataError(f"{path}: tensor {key!r}: buffer {b} is cut short")
    dtype = DTYPES.get(t.Type())
    if dtype is None:
        return "skip"
    shape = [int(d) for d in (t.ShapeAsNumpy() if budget.take(t.ShapeLength(), "a shape") else [])]
    itemsize = np.dtype(dtype).itemsize
    count = 1
    for d in shape:
        if d < 0:
            raise CorruptDataError(f"{path}: tensor {key!r} has the negative dimension {d}")
        count *= d
    if t.Sparsity() is not None:
        if len(raw) % itemsize or count * itemsize > MAX_EXPANSION * len(data):
            raise CorruptDataError(f"{path}: sparse tensor {key!r} of shape {shape} is too large for its file")
        values = np.frombuffer(raw, dtype=dtype).astype(np.dtype(dtype).newbyteorder("="))
        return _densify(path, key, t, values, shape, budget)
    if count * itemsize != len(raw):
        raise CorruptDataError(f"{path}: tensor {key!r} of shape {shape} and {np.dtype(dtype).name} needs "
                               f"{count * itemsize} bytes, its buffer holds {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


#: A sparse tensor may expand to at most this many times the file's size (a 98 % sparse kernel
#: expands 50x); beyond it the file is treated as corrupt rather than allocating without bound.
MAX_EXPANSION = 64


def _index_vector(path, key, kind, table, budget):
    """A DimensionMetadata segments/indices union (Int32Vector, Uint16Vector, Uint8Vector) as int64."""
    tflite = _tflite()
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if cls is None or table is None:
        raise CorruptDataError(f"{path}: sparse tensor {key!r}: a CSR level has no index vector")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    budget.take(v.ValuesLength(), f"sparse tensor {key!r}'s index vector", {1: 4, 2: 2, 3: 1}[kind])
    return np.asarray(v.ValuesAsNumpy(), np.int64) if v.ValuesLength() else np.zeros(0, np.int64)


def _densify(path, key, t, values, shape, budget):
    """The dense array of a TFLite sparse tensor (schema's SparsityParameters: traversal order,
    block map, one DENSE or SPARSE_CSR level per traversed dimension), level by level with NumPy:
    each level expands the list of partial paths, so the work is bounded by the dense size."""
    sp = t.Sparsity()
    n = len(shape)
    order = [int(v) for v in (sp.TraversalOrderAsNumpy() if budget.take(sp.TraversalOrderLength(), "a traversal") else [])]
    bmap = [int(v) for v in (sp.BlockMapAsNumpy() if budget.take(sp.BlockMapLength(), "a block map") else [])]
    levels = budget.take(sp.DimMetadataLength(), "the sparsity levels")
    if sorted(order) != list(range(n + len(bmap))) or levels != len(order) or any(not 0 <= b < n for b in bmap):
        raise CorruptDataError(f"{path}: sparse tensor {key!r}: traversal order {order} and block map {bmap} do "
                               f"not describe its {n} dimensions")
    count = int(np.prod(shape, dtype=object))
    sizes = [0] * len(order)  # expanded dimension -> its size
    pos, cols = np.zeros(1, np.int64), []
    for level, dim in enumerate(order):
        md = sp.DimMetadata(level)
        if md.Format() == 0:  # DENSE
            d = int(md.DenseSize())
            if d < 0 or pos.size * d > count:
                raise CorruptDataError(f"{path}: sparse tensor {key!r}: level {level} expands past its {count} values")
            idx = np.tile(np.arange(d, dtype=np.int64), pos.size)
            cols = [np.repeat(c, d) for c in cols]
            pos = np.repeat(pos * d, d) + idx
        else:  # SPARSE_CSR: the paths of this level are seg[p] .. seg[p+1] for each previous path p
            seg = _index_vector(path, key, md.ArraySegmentsType(), md.ArraySegments(), budget)
            ind = _index_vector(path, key, md.ArrayIndicesType(), md.ArrayIndices(), budget)
            if seg.size < pos.size + 1 or pos.size and (pos.max() + 1 >= seg.size) or np.any(np.diff(seg) < 0) \
                    or seg.size and (seg[0] < 0 or seg[-1] > ind.size):
                raise CorruptDataError(f"{path}: sparse tensor {key!r}: level {level}'s segments are inconsistent")
            lo, hi = seg[pos], seg[pos + 1]
            counts = hi - lo
            if int(counts.sum()) > count:
                raise CorruptDataError(f"{path}: sparse tensor {key!r}: level {level} expands past its {count} values")
            cols = [np.repeat(c, counts) for c in cols]
            pos = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()), dtype=np.int64)
            idx = ind[pos]
            d = int(md.DenseSize()) or (int(ind.max()) + 1 if ind.size else 0)
        sizes[dim] = d
        cols.append(idx)
    if pos.size != values.size:
        raise CorruptDataError(f"{path}: sparse tensor {key!r} lists {pos.size} positions for {values.size} values")
    coord = {dim: c for dim, c in zip(order, cols)}
    full = [coord[d] for d in range(n)]
    for j, d in enumerate(bmap):  # blocked dimension: block number * block size + offset in the block
        full[d] = full[d] * sizes[n + j] + coord[n + j]
    if any(c.size and (c.min() < 0 or c.max() >= s) for c, s in zip(full, shape)):
        raise CorruptDataError(f"{path}: sparse tensor {key!r}: an index lies outside its shape {list(shape)}")
    dense = np.zeros(shape, values.dtype)
    if values.size:
        dense[tuple(full)] = values
    return dense


def read_tflite(path):
    """(key -> ndarray of every constant tensor, metadata with the weight keys as JSON)."""
    tflite = _tflite()
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        raise CorruptDataError(f"{path}: not a TensorFlow Lite model (no 'TFL3' identifier at byte 4)")
    try:
        return _read(path, data, tflite)
    except (CorruptDataError, UnsupportedError):
        raise
    except Exception as exc:  # struct.error, IndexError, ValueError, UnicodeError from garbage offsets
        raise CorruptDataError(f"{path}: not a readable TensorFlow Lite model ({type(exc).__name__}: {exc})") from exc


def _read(path, data, tflite):
    model = tflite.Model.GetRootAsModel(data, 0)
    budget = _Budget(path, len(data))
    budget.take(model.BuffersLength(), "the buffer table")
    codes = []
    for c in (model.OperatorCodes(i) for i in range(budget.take(model.OperatorCodesLength(), "the operator codes"))):
        code = max(c.BuiltinCode(), c.DeprecatedBuiltinCode())
        custom = (c.CustomCode() or b"").decode("utf-8", "replace") if code == 32 else ""
        codes.append(custom if custom in CUSTOM_WEIGHT_INPUTS else code)
    tensors, weights, total = {}, [], 0
    n_sub = budget.take(model.SubgraphsLength(), "the subgraph table")
    found = []  # (subgraph, index, name, tensor)
    for s in range(n_sub):
        g = model.Subgraphs(s)
        for i in range(budget.take(g.TensorsLength(), f"subgraph {s}'s tensor table")):
            t = g.Tensors(i)
            found.append((s, i, (t.Name() or b"").decode("utf-8", "replace") or f"tensor{i}", t))
    count = {}
    for _, _, name, _ in found:
        count[name] = count.get(name, 0) + 1
    key_of, by_buffer = {}, {}
    for s, i, name, t in found:
        key = name if count[name] == 1 else f"subgraph{s}/{i}/{name}"
        if t.Buffer() in by_buffer:  # shared constant: one copy, under its first name
            key_of[(s, i)] = by_buffer[t.Buffer()]
            continue
        a = _array(path, model, data, t, budget, key)
        if a is None or isinstance(a, str):
            continue
        total += a.nbytes
        if total > MAX_EXPANSION * len(data):
            raise CorruptDataError(f"{path}: the tensors add up to more bytes than the file holds")
        tensors[key] = a
        key_of[(s, i)] = by_buffer[t.Buffer()] = key
        q = t.Quantization()
        if q is not None and a.dtype.kind in "iu" and not q.ScaleIsNone():
            budget.take(q.ScaleLength() + 2 * q.ZeroPointLength(), f"tensor {key!r}'s quantization")
            tensors[f"{key}::scale"] = np.array(q.ScaleAsNumpy(), np.float32)
            if not q.ZeroPointIsNone():
                tensors[f"{key}::zero_point"] = np.array(q.ZeroPointAsNumpy(), np.int64)
    for s in range(n_sub):
        g = model.Subgraphs(s)
        ops = [g.Operators(j) for j in range(budget.take(g.OperatorsLength(), f"subgraph {s}'s operators"))]
        producer = {}
        for op in ops:
            code = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else -1
            if code in PASS_THROUGH and op.InputsLength() and op.OutputsLength():
                producer[int(op.Outputs(0))] = int(op.Inputs(0))
        for op in ops:
            code = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else -1
            wanted = WEIGHT_INPUTS.get(code, ()) or CUSTOM_WEIGHT_INPUTS.get(code, ())
            n_in = budget.take(op.InputsLength(), "an operator's inputs") if wanted else 0
            for k in wanted:
                ti = int(op.Inputs(k)) if k < n_in else -1
                for _ in range(len(ops) + 1):  # a chain of pass-through ops is at most every op long
                    key = key_of.get((s, ti))
                    if key is not None:
                        if tensors[key].dtype.kind == "f" and key not in weights:
                            weights.append(key)
                        break
                    if ti not in producer:
                        break
                    ti = producer[ti]
    if not tensors:
        raise CorruptDataError(f"{path}: the model holds no constant tensor pydnnz reads")
    return tensors, {"pydnnz.tflite_weights": json.dumps(weights)}
