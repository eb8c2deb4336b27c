"""Read and write tensor files of the formats pydnnz converts between.

| extension            | format                                   | metadata kept |
|----------------------|------------------------------------------|---------------|
| `.dnnz`              | pydnnz container (compressed or raw)     | yes           |
| `.safetensors`       | safetensors                              | yes           |
| `.pt`, `.pth`, `.bin`| PyTorch state dict, read with `weights_only=True` (never plain pickle) | no |
| `.npz`               | NumPy archive, read with `allow_pickle=False` | no       |

Uncompressed tensors convert bit for bit; compressed `.dnnz` tensors become their exact decoded
values in the other formats. Writes are atomic (see `pydnnz._atomic`).

Example:
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> write_tensors({"w": np.eye(2, dtype=np.float32)}, os.path.join(d, "m.npz"))
    >>> convert(os.path.join(d, "m.npz"), os.path.join(d, "m.safetensors"))
    >>> read_tensors(os.path.join(d, "m.safetensors"))[0]["w"].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
"""
from __future__ import annotations

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
    ".npz": "npz",
}


class FileFormatError(InvalidArgumentError):
    """A path whose extension names no format pydnnz reads or writes."""


def format_of(path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise FileFormatError(f"{path}: unsupported file type {ext or '(no extension)'!r} (known: {known})")
    return FORMATS[ext]


def _to_numpy(name, tensor, path):
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise CorruptDataError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        raise UnsupportedError(f"{path}: tensor {name!r} is bfloat16, which NumPy cannot hold; "
                               "convert it to float32 first")
    return tensor.contiguous().numpy()


def _flatten_state_dict(obj, path, prefix=""):
    """A state dict may be nested ({"state_dict": {...}} or module-like dicts): flatten with dots."""
    out = {}
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{path}: expected a state dict (a dict of tensors), got {type(obj).__name__}")
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_state_dict(value, path, name + "."))
        else:
            out[name] = _to_numpy(name, value, path)
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

        with safe_open(path) as f:
            tensors = {}
            for name in f.keys():
                t = f.get(name)
                tensors[name] = t.decode() if (decode and not isinstance(t, np.ndarray)) else t
            return tensors, dict(f.metadata() or {})
    if kind == "safetensors":
        from safetensors import SafetensorError, safe_open as st_open

        try:
            with st_open(str(path), framework="numpy") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta
        except (SafetensorError, ValueError, TypeError) as exc:
            raise CorruptDataError(f"{path}: not a valid safetensors file ({exc})") from exc
    if kind == "npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, {}
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
        raise CorruptDataError(f"{path}: not a PyTorch state dict loadable with weights_only=True "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return _flatten_state_dict(obj, path), {}


def write_tensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write `tensors` (ndarray or, for .dnnz only, EncodedMatrix) to `path`, atomically."""
    path = Path(path)
    kind = format_of(path)
    if kind == "dnnz":
        from .container import save_file

        save_file(tensors, path, metadata=metadata)
        return
    arrays = {}
    for name, t in tensors.items():
        arrays[name] = np.ascontiguousarray(t if isinstance(t, np.ndarray) else t.decode())
    with atomic_path(path) as tmp:
        if kind == "safetensors":
            # safetensors' save_file writes its own named temporary beside `tmp` (which may be an
            # unnamed /proc/self/fd file, see _atomic): serialise to bytes and write them instead.
            from safetensors.numpy import save as st_save

            data = st_save(arrays, metadata={str(k): str(v) for k, v in (metadata or {}).items()} or None)
            with open(tmp, "wb") as fh:
                fh.write(data)
        elif kind == "npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        else:
            import torch

            torch.save({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, str(tmp))


def convert(src, dst, force=False) -> dict:
    """Convert `src` to `dst` (formats from the extensions). Returns a small summary dict."""
    src, dst = Path(src), Path(dst)
    format_of(dst)
    if dst.exists() and not force:
        raise FileExistsError(f"{dst}: already exists (use --force to overwrite)")
    if src.resolve() == dst.resolve() if dst.exists() else False:
        raise InvalidArgumentError(f"{dst}: source and destination are the same file")
    tensors, meta = read_tensors(src, decode=format_of(dst) != "dnnz")
    write_tensors(tensors, dst, meta)
    return {"tensors": len(tensors), "bytes_in": os.path.getsize(src), "bytes_out": os.path.getsize(dst)}


__all__ = ["read_tensors", "write_tensors", "convert", "format_of", "FORMATS", "FileFormatError", "DnnzError"]
