"""ONNX models and Keras HDF5 weight files, for `pydnnz.convert` and `dnnz compress`.

ONNX (needs ``onnx``): the tensors of a model are the ones it stores, read with
``onnx.numpy_helper`` (dtype and shape kept, external data followed): the initializers of the main
graph and of every If/Loop/Scan subgraph, and the floating-point values of Constant nodes (where
exporters that inline If branches keep the weights). The weights worth compressing are those that
reach a weight input of a Conv, ConvTranspose, Gemm, MatMul, LSTM, GRU or RNN node, directly or
through Identity/Transpose/Cast/Reshape/Slice-like nodes (``onnx_weight_names``). Writing ONNX
needs the original model as a template: its graph is kept and each stored tensor is replaced by
the tensor of the same key (the template's own bytes when the values are unchanged, so untouched
tensors stay bit-exact).

Keras HDF5 (needs ``h5py``): ``.h5`` (Keras 2 ``model.save``/``save_weights``) and ``.weights.h5``
(Keras 3): every dataset of the file, named by its HDF5 path with "/" turned into "." (for example
``model_weights.dense.dense.kernel:0`` or ``layers.dense.vars.0``). Reading only: convert to
``.dnnz``, ``.npz`` or ``.safetensors``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CorruptDataError, InvalidArgumentError, UnsupportedError

#: Node types and the inputs of theirs that are weight matrices or kernels (MatMul: either side).
WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (0, 1),
                 "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
WEIGHT_OPS = tuple(WEIGHT_INPUTS)
#: Nodes a weight may pass through on its way to a weight input (their first input is the data;
#: every input of a Concat): exporters slice and re-concatenate an LSTM's gates, transpose a
#: Linear's matrix, cast fp16 to fp32.
PASS_THROUGH = ("Identity", "Transpose", "Cast", "CastLike", "Reshape", "Squeeze", "Unsqueeze", "Slice",
                "Split", "Flatten", "Concat")


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise UnsupportedError("ONNX files need the onnx package (pip install onnx)") from exc
    return onnx, numpy_helper


def _load_onnx(path):
    onnx, _ = _onnx()
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError for missing external data, ...
        raise CorruptDataError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def _graphs(graph, path=""):
    """(path, graph) for `graph` and every subgraph of its If/Loop/Scan nodes, depth first, in file
    order. The path names the nodes and attributes leading to a subgraph ("" for the main graph)."""
    onnx, _ = _onnx()
    yield path, graph
    for node in graph.node:
        for a in node.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else \
                list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []
            for i, g in enumerate(subs):
                tag = f"{node.name or node.op_type}.{a.name}" + (f"[{i}]" if a.type != onnx.AttributeProto.GRAPH else "")
                yield from _graphs(g, f"{path}/{tag}" if path else tag)


def _sources(model):
    """[(key, TensorProto)] of every tensor the model stores: the initializers of the main graph and of
    every subgraph, and the floating-point `value` of Constant nodes (exporters such as
    torch.onnx's If-inlining keep weights there). Integer constants are graph plumbing (shapes,
    axes) and stay in the graph. The key is the tensor's name (a Constant's output name), made
    unique with its subgraph path ("then_branch.../name") when two graphs use the same name."""
    onnx, _ = _onnx()
    found = []
    for path, g in _graphs(model.graph):
        found += [(path, t.name, t) for t in g.initializer]
        for node in g.node:
            if node.op_type != "Constant" or len(node.output) != 1:
                continue
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR and \
                        a.t.data_type in _FLOAT_TYPES:
                    found.append((path, node.output[0], a.t))
    count = {}
    for _, name, _ in found:
        count[name] = count.get(name, 0) + 1
    return [(name if count[name] == 1 else f"{path}/{name}", name, t) for path, name, t in found]


_FLOAT_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def onnx_weight_names(model) -> list:
    """Keys (see `_sources`) of the stored tensors that reach a weight input of a Conv,
    ConvTranspose, Gemm, MatMul (either side), LSTM, GRU or RNN node, in the main graph or any
    subgraph, directly or through `PASS_THROUGH` nodes."""
    graphs = [g for _, g in _graphs(model.graph)]
    keys_of = {}
    for key, name, _ in _sources(model):
        keys_of.setdefault(name, []).append(key)
    producer = {}
    for g in graphs:
        for node in g.node:
            if node.op_type in PASS_THROUGH and node.input:
                data = list(node.input) if node.op_type == "Concat" else [node.input[0]]
                for o in node.output:
                    producer.setdefault(o, []).extend(data)
    out, seen = [], set()
    for g in graphs:
        for node in g.node:
            for i in WEIGHT_INPUTS.get(node.op_type, ()):
                todo = [node.input[i]] if i < len(node.input) and node.input[i] else []
                while todo:  # back through pass-through nodes; `seen` bounds the walk by the graph size
                    name = todo.pop()
                    if name in seen:
                        continue
                    seen.add(name)
                    out += [k for k in keys_of.get(name, ()) if k not in out]
                    todo += producer.get(name, [])
    order = {k: i for i, (k, _, _) in enumerate(_sources(model))}
    return sorted(out, key=order.__getitem__)


def read_onnx(path):
    """(key -> ndarray of every stored tensor (`_sources`), metadata with the weight keys as JSON)."""
    import json

    _, numpy_helper = _onnx()
    model = _load_onnx(path)
    tensors = {}
    for key, _, t in _sources(model):
        try:
            tensors[key] = np.asarray(numpy_helper.to_array(t))
        except Exception as exc:
            raise CorruptDataError(f"{path}: tensor {key!r} cannot be read ({exc})") from exc
    if not tensors:
        raise CorruptDataError(f"{path}: the model stores no tensor (no initializer and no floating-point "
                               "Constant in its graph or subgraphs)")
    return tensors, {"pydnnz.onnx_weights": json.dumps(onnx_weight_names(model))}


def write_onnx(arrays: dict, path, template):
    """Write `template` (an ONNX model path) to `path` with its stored tensors (`_sources`:
    initializers and floating-point Constants, subgraphs included) replaced by `arrays` (same keys,
    shapes and dtypes; every one must be given)."""
    if template is None:
        raise InvalidArgumentError(f"{path}: writing ONNX needs the original model (--template model.onnx): "
                                   "a weight file holds no graph")
    _, numpy_helper = _onnx()
    model = _load_onnx(template)
    sources = _sources(model)
    names = [k for k, _, _ in sources]
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in set(names)]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the template does not"
        raise InvalidArgumentError(f"{path}: the tensors do not match the template {template}: the input {what} "
                                   f"({len(missing)} missing, {len(extra)} extra)")
    for key, _, t in sources:
        old = np.asarray(numpy_helper.to_array(t))
        new = np.asarray(arrays[key])
        if new.shape != old.shape or new.dtype != old.dtype:
            raise InvalidArgumentError(f"{path}: tensor {key!r} is {new.dtype}{list(new.shape)} but the "
                                       f"template has {old.dtype}{list(old.shape)}")
        if new.tobytes() == old.tobytes():
            continue  # unchanged: keep the template's bytes (and encoding) as they are
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())


def read_keras_h5(path):
    """(name -> ndarray for every dataset of a Keras .h5 / .weights.h5 file, metadata {})."""
    try:
        import h5py
    except ImportError as exc:
        raise UnsupportedError("Keras .h5 files need the h5py package (pip install h5py)") from exc
    tensors = {}
    try:
        with h5py.File(str(path), "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if obj.dtype.kind not in "biuf":
                        return  # strings and other attributes-as-data are no weights
                    tensors[name.replace("/", ".")] = np.asarray(obj[()])
            f.visititems(visit)
    except OSError as exc:
        raise CorruptDataError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if not tensors:
        raise CorruptDataError(f"{path}: holds no numeric dataset (is it a Keras weights file?)")
    return tensors, {}


def suffix_format(path) -> str | None:
    ext = Path(path).suffix.lower()
    return {".onnx": "onnx", ".h5": "keras", ".hdf5": "keras"}.get(ext)
