"""ONNX models and Keras HDF5 weight files, for `pydnnz.convert` and `dnnz compress`.

ONNX (needs ``onnx``): the tensors of a model are its graph initializers, read with
``onnx.numpy_helper`` (dtype and shape kept, external data followed). The weights worth compressing
are the initializers that feed the weight input of a Conv, ConvTranspose, Gemm or MatMul node
(``onnx_weight_names``). Writing ONNX needs the original model as a template: its graph is kept and
each initializer is replaced by the tensor of the same name (the template's own bytes when the
values are unchanged, so untouched initializers stay bit-exact).

Keras HDF5 (needs ``h5py``): ``.h5`` (Keras 2 ``model.save``/``save_weights``) and ``.weights.h5``
(Keras 3): every dataset of the file, named by its HDF5 path with "/" turned into "." (for example
``model_weights.dense.dense.kernel:0`` or ``layers.dense.vars.0``). Reading only: convert to
``.dnnz``, ``.npz`` or ``.safetensors``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CorruptDataError, InvalidArgumentError, UnsupportedError

#: Node types whose second input is a weight matrix or kernel.
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


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


def onnx_weight_names(model) -> list:
    """Initializers that feed the weight input (input 1) of a Conv/ConvTranspose/Gemm/MatMul node.
    MatMul's A input counts too when it is the initializer (x @ W written as W-first)."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in WEIGHT_OPS:
            for i, name in enumerate(node.input[:2]):
                if name in inits and name not in out and (i == 1 or node.op_type == "MatMul"):
                    out.append(name)
    return out


def read_onnx(path):
    """(name -> ndarray of every initializer, metadata with the weight names as JSON)."""
    import json

    _, numpy_helper = _onnx()
    model = _load_onnx(path)
    tensors = {}
    for t in model.graph.initializer:
        try:
            tensors[t.name] = np.asarray(numpy_helper.to_array(t))
        except Exception as exc:
            raise CorruptDataError(f"{path}: initializer {t.name!r} cannot be read ({exc})") from exc
    if not tensors and any(a.type in (onnx_attr_graph(), onnx_attr_graphs())
                           for node in model.graph.node for a in node.attribute):
        raise UnsupportedError(f"{path}: the model keeps its weights inside If/Loop/Scan subgraphs, which "
                               "pydnnz does not read (only the main graph's initializers)")
    return tensors, {"pydnnz.onnx_weights": json.dumps(onnx_weight_names(model))}


def onnx_attr_graph():
    return _onnx()[0].AttributeProto.GRAPH


def onnx_attr_graphs():
    return _onnx()[0].AttributeProto.GRAPHS


def write_onnx(arrays: dict, path, template):
    """Write `template` (an ONNX model path) to `path` with its initializers replaced by `arrays`
    (same names, shapes and dtypes; every initializer must be given)."""
    if template is None:
        raise InvalidArgumentError(f"{path}: writing ONNX needs the original model (--template model.onnx): "
                                   "a weight file holds no graph")
    _, numpy_helper = _onnx()
    model = _load_onnx(template)
    names = [t.name for t in model.graph.initializer]
    missing = [n for n in names if n not in arrays]
    extra = [n for n in arrays if n not in set(names)]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the template does not"
        raise InvalidArgumentError(f"{path}: the tensors do not match the template {template}: the input {what} "
                                   f"({len(missing)} missing, {len(extra)} extra)")
    for i, t in enumerate(model.graph.initializer):
        old = np.asarray(numpy_helper.to_array(t))
        new = np.asarray(arrays[t.name])
        if new.shape != old.shape or new.dtype != old.dtype:
            raise InvalidArgumentError(f"{path}: initializer {t.name!r} is {new.dtype}{list(new.shape)} but the "
                                       f"template has {old.dtype}{list(old.shape)}")
        if new.tobytes() == old.tobytes():
            continue  # unchanged: keep the template's bytes (and encoding) as they are
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), t.name))
    onnx, _ = _onnx()
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
