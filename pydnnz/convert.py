"""Read and write tensor files of the formats pydnnz converts between.

| extension            | format                                   | metadata kept |
|----------------------|------------------------------------------|---------------|
| `.dnnz`              | pydnnz container (compressed or raw)     | yes           |
| `.safetensors`       | safetensors                              | yes           |
| `.pt`, `.pth`, `.bin`, `.ckpt` | PyTorch state dict or checkpoint, read with `weights_only=True` (never plain pickle) | no |
| `.npz`               | NumPy archive, read with `allow_pickle=False` | no       |
| `.onnx`              | ONNX model: its initializers (write: `template=` the original model) | no |
| `.h5`, `.hdf5`       | Keras HDF5 weights (`.h5`, `.weights.h5`), read only | no |
| `.tflite`            | TensorFlow Lite model: its constant tensors, read only (pydnnz.convert_tflite) | no |

Uncompressed tensors convert bit for bit, with their dtype and shape (0-d included): bool, every
integer type, float16, bfloat16 (as ``ml_dtypes.bfloat16`` arrays), float32, float64. Compressed
`.dnnz` tensors become their exact decoded values, in the dtype they were compressed from
(``EncodedMatrix.source_dtype``). Writes are atomic (see `pydnnz._atomic`).

Example:
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_tensors({"w": np.eye(2, dtype=np.float32)}, os.path.join(d, "m.npz"))
    >>> convert(os.path.join(d, "m.npz"), os.path.join(d, "m.safetensors"))
    >>> read_tensors(os.path.join(d, "m.safetensors"))[0]["w"].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .errors import CorruptDataError, DnnzError, InvalidArgumentError, UnsupportedError

FORMATS = {
    ".dnnz": "dnnz",
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".ckpt": "torch",   # Lightning checkpoints: read like .pt, weights_only=True (see UNTRUSTED_PICKLE)
    ".npz": "npz",
    ".onnx": "onnx",    # initializers of an ONNX model (pydnnz.convert_foreign); writing needs a template
    ".h5": "keras",     # Keras HDF5 weights (.h5, .weights.h5), read only
    ".hdf5": "keras",
    ".tflite": "tflite",  # constant tensors of a TensorFlow Lite model, read only
}


#: Metadata key read_tensors sets when a PyTorch checkpoint held entries that are not tensors
#: (a JSON list of their dotted names, at most 1000); they are not converted.
SKIPPED_KEY = "pydnnz.skipped_entries"


#: What a PyTorch file that only full pickle can load gets told. pydnnz never runs pickle code
#: (weights_only=False executes whatever the file names): a checkpoint that stores objects of other
#: libraries (omegaconf configs, Lightning callbacks, ...) is refused, and the user who trusts it
#: extracts the state dict once, in a throwaway process, as torch itself advises.
UNTRUSTED_PICKLE = ("{path}: the checkpoint holds Python objects that only full pickle can load ({what}); "
                    "pydnnz reads PyTorch files with weights_only=True and never runs pickle code. If you trust "
                    "the file, extract its tensors once in a separate process: python -c \"import torch; sd = "
                    "torch.load('{path}', weights_only=False); torch.save(sd.get('state_dict', sd), 'state_dict.pt')\""
                    " and compress state_dict.pt")


class FileFormatError(InvalidArgumentError):
    """A path whose extension names no format pydnnz reads or writes."""


def format_of(path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise FileFormatError(f"{path}: unsupported file type {ext or '(no extension)'!r} (known: {known})")
    return FORMATS[ext]


def _bfloat16():
    """NumPy's bfloat16 (ml_dtypes); importing it also lets safetensors' NumPy API read BF16."""
    try:
        import ml_dtypes
    except ImportError as exc:  # pragma: no cover - a dependency of pydnnz
        raise UnsupportedError("bfloat16 tensors need the ml_dtypes package (pip install ml_dtypes)") from exc
    return np.dtype(ml_dtypes.bfloat16)


def _plain(t):
    """An ndarray of the tensor's own dtype and shape: BFloat16Tensor -> ml_dtypes.bfloat16,
    EncodedMatrix -> its exact decoded values in its source dtype (0-d arrays stay 0-d)."""
    if isinstance(t, np.ndarray):
        return np.asarray(t, order="C")
    bits = getattr(t, "bits", None)
    if bits is not None and getattr(t, "dtype", None) == "bfloat16":
        return np.asarray(bits, order="C").view(_bfloat16())
    return np.asarray(t.decode(), order="C")


def _from_npz(a):
    """NumPy saves an ml_dtypes.bfloat16 array with the descriptor '|V2' (2-byte void, the only
    way .npy can describe it): read such an entry back as bfloat16, bit for bit."""
    if a.dtype.kind == "V" and a.dtype.itemsize == 2 and a.dtype.names is None:
        return a.view(_bfloat16())
    return a


def _to_numpy(name, tensor, path):
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise CorruptDataError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_bfloat16())
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:  # complex32, float8, quantized ...: name it
        raise UnsupportedError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which pydnnz "
                               f"does not convert ({exc})") from exc


def _to_torch(array):
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def _flatten_state_dict(obj, path, prefix="", skipped=None):
    """A checkpoint may nest its tensors ({"state_dict": {...}}, {"model_state": ..., "optimizer_state":
    ...}, lists of tensors): flatten with dots ("a.b.0"). Entries that are not tensors (step
    counters, learning rates, strings, None) are no weights: their names go to `skipped`."""
    import torch

    out = {}
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    items = list(obj.items())
    while items:
        key, value = items.pop(0)
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_state_dict(value, path, name + ".", skipped))
        elif isinstance(value, (list, tuple)):
            items[:0] = [(f"{key}.{i}", v) for i, v in enumerate(value)]
        elif isinstance(value, torch.Tensor):
            out[name] = _to_numpy(name, value, path)
        elif skipped is not None:
            skipped.append(name)
        else:
            out[name] = _to_numpy(name, value, path)  # raises, naming the entry
    return out


def read_tensors(path, decode=True):
    """Load every tensor of `path` → (dict name → ndarray or EncodedMatrix, metadata dict).

    With decode=True, compressed tensors of a .dnnz file come back as their exact decoded values.
    """
    path = Path(path)
    kind = format_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if kind == "dnnz":
        from .container import safe_open

        from ._progress import progress_bar

        with safe_open(path) as f:
            tensors = {}
            for name in progress_bar(f.keys(), desc="reading", unit="tensor"):
                t = f.get(name)
                tensors[name] = _plain(t) if decode else t
            return tensors, dict(f.metadata() or {})
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open as st_open

        _bfloat16()  # registers "bfloat16" with NumPy, which safetensors' BF16 needs
        try:
            with st_open(str(path), framework="numpy") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        except (SafetensorError, ValueError, TypeError) as exc:
            raise CorruptDataError(f"{path}: not a valid safetensors file ({exc})") from exc
    if kind == "tflite":
        from .convert_tflite import read_tflite

        return read_tflite(path)
    if kind in ("onnx", "keras"):
        from . import convert_foreign

        return convert_foreign.read_onnx(path) if kind == "onnx" else convert_foreign.read_keras_h5(path)
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: _from_npz(z[k]) for k in z.files}, {}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise CorruptDataError(f"{path}: not a valid .npz archive ({exc})") from exc
    # torch
    try:
        import torch
    except ImportError as exc:  # pragma: no cover
        raise UnsupportedError(f"{path}: reading PyTorch files needs torch installed") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        import pickle
        import re

        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
            # a valid pickle that names globals weights_only does not allow: unsupported, not corrupt
            needs = re.search(r"GLOBAL (\S+)", str(exc))
            what = f"first: {needs.group(1)}" if needs else "see torch.load's weights_only"
            raise UnsupportedError(UNTRUSTED_PICKLE.format(path=path, what=what)) from exc
        raise CorruptDataError(f"{path}: not a PyTorch state dict loadable with weights_only=True "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    skipped = []
    tensors = _flatten_state_dict(obj, path, skipped=skipped)
    if not tensors and skipped:
        raise CorruptDataError(f"{path}: holds no tensor (only {len(skipped)} other entries, e.g. {skipped[0]!r})")
    return tensors, ({SKIPPED_KEY: json.dumps(skipped[:1000])} if skipped else {})


def write_tensors(tensors: dict, path, metadata: dict | None = None, template=None) -> None:
    """Write `tensors` (ndarray or, for .dnnz only, EncodedMatrix) to `path`, atomically.

    ONNX: `template` is the original model, whose graph is kept (see pydnnz.convert_foreign)."""
    path = Path(path)
    kind = format_of(path)
    if kind in ("keras", "tflite"):
        what = "Keras .h5 weights" if kind == "keras" else "TensorFlow Lite models"
        raise UnsupportedError(f"{path}: pydnnz reads {what} but does not write them "
                               "(write .npz, .safetensors or .dnnz)")
    if template is not None and kind != "onnx":
        raise InvalidArgumentError(f"{path}: a template is only used when writing ONNX")
    if kind == "dnnz":
        from .container import save_file

        save_file(tensors, path, metadata=metadata)
        return
    arrays = {name: _plain(t) for name, t in tensors.items()}  # np.ascontiguousarray would make 0-d 1-d
    with atomic_path(path) as tmp:
        if kind == "safetensors":
            # safetensors' save_file writes its own named temporary beside `tmp` (which may be an
            # unnamed /proc/self/fd file, see _atomic): serialise to bytes and write them instead.
            from safetensors.numpy import save as st_save

            if any(a.dtype.name == "bfloat16" for a in arrays.values()):
                _bfloat16()  # registers "bfloat16" with NumPy, which safetensors' BF16 needs
            data = st_save(arrays, metadata={str(k): str(v) for k, v in (metadata or {}).items()} or None)
            with open(tmp, "wb") as fh:
                fh.write(data)
        elif kind == "npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        elif kind == "onnx":
            from .convert_foreign import write_onnx

            write_onnx(arrays, tmp, template)
        else:
            import torch

            torch.save({k: _to_torch(v) for k, v in arrays.items()}, str(tmp))


def convert(src, dst, force=False, template=None) -> dict:
    """Convert `src` to `dst` (formats from the extensions). Returns a small summary dict.

    Writing ONNX needs `template`, the original .onnx model (its graph, with the decoded weights)."""
    src, dst = Path(src), Path(dst)
    format_of(dst)
    if dst.exists() and not force:
        raise FileExistsError(f"{dst}: already exists (use --force to overwrite)")
    if src.resolve() == dst.resolve() if dst.exists() else False:
        raise InvalidArgumentError(f"{dst}: source and destination are the same file")
    tensors, meta = read_tensors(src, decode=format_of(dst) != "dnnz")
    if format_of(dst) == "onnx" and template is None:
        raise InvalidArgumentError(f"{dst}: writing ONNX needs the original model as a template "
                                   "(template=... / --template original.onnx)")
    write_tensors(tensors, dst, meta, template=template)
    return {"tensors": len(tensors), "bytes_in": os.path.getsize(src), "bytes_out": os.path.getsize(dst),
            "skipped": json.loads(meta.get(SKIPPED_KEY, "[]"))}


__all__ = ["read_tensors", "write_tensors", "convert", "format_of", "FORMATS", "FileFormatError", "DnnzError",
           "SKIPPED_KEY", "UNTRUSTED_PICKLE"]
