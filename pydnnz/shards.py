"""Sharded checkpoints: read them tensor by tensor, compress on all cores, write sharded .dnnz.

A checkpoint bigger than memory is a folder of shards plus an index, in the manner of Hugging
Face (`model-00001-of-00003.safetensors` ... + `model.safetensors.index.json`). This module

- reads such a source (sharded or single `.safetensors`, sharded or single `.dnnz`) **one tensor at
  a time**: each tensor's bytes are read from its file at its offset, so peak memory is a few
  tensors, never the model (:func:`open_source`);
- compresses the selected tensors in a **process pool** (``workers``, default all cores) or on a
  **Ray cluster** (``ray=``), with one seed per tensor name, and writes the results **in a fixed
  order**: the bytes of the output do not depend on the worker count, the engine or the order in
  which tasks finish (:func:`compress_checkpoint`);
- writes each output shard atomically and last of all the index `model.dnnz.index.json`
  (spec/sharded.md), so an interrupted run leaves complete shards or none, and the same command
  run again keeps the shards already written (each checked against the plan and verified) and
  computes only the rest;
- reads the result back transparently: ``pydnnz.load_file``, ``pydnnz.safe_open`` and
  ``pydnnz.torch.load_model`` accept the index file (or its folder) and return one mapping over
  all shards (:func:`load_sharded`).

Example:
    >>> import os, tempfile, numpy as np, pydnnz
    >>> from pydnnz.shards import compress_checkpoint, Recipe
    >>> d = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> from safetensors.numpy import save_file
    >>> save_file({"a.weight": rng.normal(size=(16, 8)).astype(np.float32)}, os.path.join(d, "m.safetensors"))
    >>> out = os.path.join(d, "out")
    >>> s = compress_checkpoint(os.path.join(d, "m.safetensors"), out, Recipe(quantize="uq", k=4), workers=1)
    >>> f = pydnnz.load_file(out)
    >>> f["a.weight"].encoding in pydnnz.encodings.encodings(), len(f)
    (True, 1)
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._atomic import atomic_path
from .errors import (
    ChecksumError,
    CorruptFileError,
    DnnzError,
    InvalidArgumentError,
    TruncatedError,
    UnsupportedError,
    UnsupportedVersionError,
)

INDEX_NAME = "model.dnnz.index.json"
INDEX_FORMAT = "dnnz-index"
INDEX_VERSION = 1
SHARD_NAME = "model-{:05d}-of-{:05d}.dnnz"
MAX_INDEX_BYTES = 64 * 1024 * 1024          # same limit as a .dnnz header
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_CHUNK = 8 * 1024 * 1024                    # raw tensors are copied in pieces of this size

# safetensors dtype names -> the .dnnz dtype names (spec/dnnz-format.md §7.4)
_ST_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
              "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
              "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_FLOATS = ("float16", "bfloat16", "float32", "float64")


# --------------------------------------------------------------------------- where tensors lie
class TensorRef(NamedTuple):
    """Where the bytes of one raw tensor lie: `nbytes` bytes at absolute `offset` of `path`.

    ``dtype`` is a .dnnz dtype name; ``crc32`` is the stored CRC-32 to check (a .dnnz source) or
    None (safetensors has none). ``encoding`` is "raw", or the encoding of a tensor a .dnnz source
    already holds compressed (then offset/nbytes are unused and the writer copies it as it is).
    """
    name: str
    path: str
    offset: int
    nbytes: int
    dtype: str
    shape: tuple
    crc32: int | None = None
    encoding: str = "raw"


def _np_dtype(dname):
    from .container import _DTYPES

    return _DTYPES[dname][0]


def read_safetensors_header(path):
    """(list of TensorRef in file order, metadata) of a .safetensors file, from its header only.

    Every length and offset is checked against the file before it is trusted; a bad header
    raises CorruptFileError (TruncatedError when the file is shorter than the header says).
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise TruncatedError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER:
            raise CorruptFileError(f"{path}: safetensors header of {n} bytes exceeds {MAX_SAFETENSORS_HEADER}")
        if 8 + n > size:
            raise TruncatedError(f"{path}: safetensors header of {n} bytes runs past the end of the file")
        raw = f.read(n)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys(path))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{path}: safetensors header is not a JSON object")
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CorruptFileError(f"{path}: safetensors __metadata__ must map str to str")
    data_start = 8 + n
    refs = []
    for name, e in doc.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise CorruptFileError(f"{where}: entry must have exactly dtype, shape and data_offsets")
        dname = _ST_DTYPES.get(e["dtype"]) if isinstance(e["dtype"], str) else None
        if dname is None:
            raise UnsupportedError(f"{where}: dtype {e['dtype']!r} is not supported "
                                   f"(known: {', '.join(_ST_DTYPES)})")
        shape, offs = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CorruptFileError(f"{where}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise CorruptFileError(f"{where}: bad data_offsets {offs!r}")
        nbytes = offs[1] - offs[0]
        want = int(np.prod(shape, dtype=object)) * _np_dtype(dname).itemsize
        if nbytes != want:
            raise CorruptFileError(f"{where}: data_offsets span {nbytes} bytes, shape and dtype need {want}")
        if data_start + offs[1] > size:
            raise TruncatedError(f"{where}: data runs past the end of the file")
        refs.append(TensorRef(name, path, data_start + offs[0], nbytes, dname, tuple(shape)))
    refs.sort(key=lambda r: (r.offset, r.name))
    return refs, dict(meta)


def _no_duplicate_keys(source):
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise CorruptFileError(f"{source}: duplicate key {k!r} in JSON")
            out[k] = v
        return out
    return hook


def _dnnz_refs(path):
    """TensorRefs of a single .dnnz file, from its header (raw tensors: where their data lie)."""
    from .container import RAW, _open_reader

    reader = _open_reader(path)
    try:
        refs = []
        for t in reader.header.tensors.values():
            if t.encoding == RAW:
                s = t.sections[0]
                refs.append(TensorRef(t.name, os.fspath(path), reader.header.data_start + s.offset, s.length,
                                      t.dtype, tuple(t.shape), s.crc32))
            else:
                refs.append(TensorRef(t.name, os.fspath(path), 0, sum(s.length for s in t.sections),
                                      t.dtype, tuple(t.shape), None, t.encoding))
        return refs, dict(reader.header.metadata)
    finally:
        try:
            reader.buf.close()
        except (BufferError, AttributeError):
            pass


_DNNZ_TO_ST = {v: k for k, v in _ST_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    """Write a .safetensors file from name -> (dnnz dtype name, ndarray); bfloat16 is given as
    uint16 bit patterns (or ml_dtypes.bfloat16). Atomic. Used by tests and bench/scale.py to
    build sharded checkpoints, which safetensors.numpy cannot write in bfloat16."""
    header, offset, arrays = {}, 0, []
    for name, (dname, arr) in tensors.items():
        a = np.ascontiguousarray(arr)
        if a.nbytes != int(np.prod(a.shape, dtype=object)) * _np_dtype(dname).itemsize:
            raise InvalidArgumentError(f"tensor {name!r}: {a.dtype} data does not fit dtype {dname}")
        header[name] = {"dtype": _DNNZ_TO_ST[dname], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in arrays:
            f.write(memoryview(a.reshape(-1).view(np.uint8)))


def write_index_safetensors(folder, weight_map, total_size):
    """Write a Hugging Face style model.safetensors.index.json (for tests and benchmarks)."""
    with atomic_path(Path(folder) / "model.safetensors.index.json") as tmp:
        tmp.write_text(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=1))


# --------------------------------------------------------------------------- index files
def is_sharded(path) -> bool:
    """True when `path` names a sharded checkpoint: a folder, or an `*.index.json` file."""
    p = Path(path)
    return p.is_dir() or p.name.endswith(".index.json")


def _find_index(folder: Path) -> Path | None:
    for name in (INDEX_NAME, "model.safetensors.index.json"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.index.json"))
    return found[0] if len(found) == 1 else None


def _read_json(path, limit=MAX_INDEX_BYTES):
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise CorruptFileError(f"{path}: index file of {size} bytes exceeds the limit of {limit}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys(path),
                          parse_constant=_reject_constant(path))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: not a valid JSON index file ({exc})") from None


def _reject_constant(path):
    def f(name):
        raise CorruptFileError(f"{path}: {name} is not JSON")
    return f


def _check_shard_name(index_path, name):
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
            or "\x00" in name:
        raise CorruptFileError(f"{index_path}: shard file name {name!r} must be a plain file name "
                               "in the index's folder")
    return name


def read_index(path) -> dict:
    """Parse and check an index file (ours, or Hugging Face's model.safetensors.index.json).

    Returns {"folder", "weight_map" (name -> shard file), "shards" (file names in order),
    "metadata", "sizes" (file -> size, ours only), "format" ("dnnz" or "safetensors")}.
    Raises CorruptFileError on anything malformed (UnsupportedVersionError for a newer version).
    """
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise CorruptFileError(f"{path}: an index file must hold a JSON object")
    wm = doc.get("weight_map")
    if not isinstance(wm, dict) or not wm:
        raise CorruptFileError(f"{path}: 'weight_map' must be a non-empty object tensor name -> shard file")
    for name, shard in wm.items():
        _check_shard_name(path, shard)
    ours = doc.get("format") == INDEX_FORMAT
    sizes = {}
    metadata = {}
    if ours:
        version = doc.get("version")
        if type(version) is not int or version < 1:
            raise CorruptFileError(f"{path}: 'version' must be a positive integer, got {version!r}")
        if version > INDEX_VERSION:
            raise UnsupportedVersionError(f"{path}: index version {version} is newer than this reader "
                                          f"({INDEX_VERSION}); upgrade pydnnz")
        known = {"format", "version", "metadata", "total_size", "shards", "weight_map"}
        extra = set(doc) - known
        if extra:
            raise CorruptFileError(f"{path}: index has unknown key(s) {sorted(extra)}")
        metadata = doc.get("metadata", {})
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise CorruptFileError(f"{path}: 'metadata' must map str to str")
        shards = doc.get("shards")
        if not isinstance(shards, list) or not shards:
            raise CorruptFileError(f"{path}: 'shards' must be a non-empty list")
        for s in shards:
            if not isinstance(s, dict) or set(s) != {"file", "size", "tensors"}:
                raise CorruptFileError(f"{path}: each shard entry must have exactly file, size and tensors")
            f = _check_shard_name(path, s["file"])
            if f in sizes:
                raise CorruptFileError(f"{path}: shard {f!r} is listed twice")
            if type(s["size"]) is not int or s["size"] < 0 or type(s["tensors"]) is not int or s["tensors"] < 0:
                raise CorruptFileError(f"{path}: shard {f!r}: size and tensors must be non-negative integers")
            sizes[f] = (s["size"], s["tensors"])
        order = [s["file"] for s in shards]
        counts = {}
        for shard in wm.values():
            if shard not in sizes:
                raise CorruptFileError(f"{path}: weight_map names shard {shard!r}, which 'shards' does not list")
            counts[shard] = counts.get(shard, 0) + 1
        for f, (_, n) in sizes.items():
            if counts.get(f, 0) != n:
                raise CorruptFileError(f"{path}: shard {f!r} should hold {n} tensors, weight_map gives it "
                                       f"{counts.get(f, 0)}")
        total = doc.get("total_size")
        if type(total) is not int or total != sum(v[0] for v in sizes.values()):
            raise CorruptFileError(f"{path}: 'total_size' must be the sum of the shard sizes")
    else:
        md = doc.get("metadata", {})
        if isinstance(md, dict):
            metadata = {k: str(v) for k, v in md.items() if isinstance(k, str) and k != "total_size"}
        order = sorted(set(wm.values()))
    kinds = {Path(f).suffix for f in order}
    if len(kinds) != 1 or kinds.pop() not in (".dnnz", ".safetensors"):
        raise CorruptFileError(f"{path}: shards must all be .dnnz or all .safetensors files")
    fmt = "dnnz" if order[0].endswith(".dnnz") else "safetensors"
    if ours and fmt != "dnnz":
        raise CorruptFileError(f"{path}: a {INDEX_FORMAT} index lists .dnnz shards only")
    for f in order:
        p = path.parent / f
        if not p.is_file():
            raise CorruptFileError(f"{path}: shard {f!r} is missing")
        if f in sizes and p.stat().st_size != sizes[f][0]:
            raise CorruptFileError(f"{path}: shard {f!r} is {p.stat().st_size} bytes, the index says {sizes[f][0]}")
    return {"folder": path.parent, "path": path, "weight_map": dict(wm), "shards": order,
            "metadata": dict(metadata), "sizes": sizes, "format": fmt}


def _check_against_index(index, shard, names):
    listed = [n for n, s in index["weight_map"].items() if s == shard]
    if set(listed) != set(names):
        missing = sorted(set(listed) - set(names))
        extra = sorted(set(names) - set(listed))
        raise CorruptFileError(f"{index['path']}: shard {shard!r} does not match the weight_map "
                               f"(listed but absent: {missing[:5]}; present but not listed: {extra[:5]})")


# --------------------------------------------------------------------------- sources
@dataclasses.dataclass
class Source:
    """A checkpoint to read: its shards, each a list of TensorRef, and its metadata."""
    path: Path
    shards: list          # [(file name, [TensorRef, ...])]
    metadata: dict

    @property
    def tensors(self):
        return [r for _, refs in self.shards for r in refs]


def open_source(path) -> Source:
    """Open a checkpoint (folder, index file, or single .safetensors/.dnnz file) from headers only."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        index = _find_index(p)
        if index is None:
            files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.dnnz"))
            if len(files) != 1:
                raise InvalidArgumentError(f"{p}: a checkpoint folder needs an *.index.json file "
                                           f"(or exactly one .safetensors/.dnnz file); found {len(files)} files")
            return open_source(files[0])
        p = index
    if p.name.endswith(".index.json"):
        index = read_index(p)
        shards = []
        seen = set()
        for f in index["shards"]:
            fp = index["folder"] / f
            refs, _ = (_dnnz_refs(fp) if index["format"] == "dnnz" else read_safetensors_header(fp))
            _check_against_index(index, f, [r.name for r in refs])
            for r in refs:
                if r.name in seen:
                    raise CorruptFileError(f"{p}: tensor {r.name!r} is held by two shards")
                seen.add(r.name)
            shards.append((f, refs))
        return Source(p, shards, dict(index["metadata"]))
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        refs, meta = read_safetensors_header(p)
    elif suffix == ".dnnz":
        refs, meta = _dnnz_refs(p)
    else:
        raise InvalidArgumentError(f"{p}: streaming reads .safetensors and .dnnz files (and their "
                                   "sharded folders); convert other formats first")
    return Source(p, [(p.name, refs)], meta)


def read_ref(ref: TensorRef) -> np.ndarray:
    """The tensor's elements (bfloat16 as uint16 bit patterns), read from its file at its offset:
    only these bytes are read, into memory of their own (nothing else of the file is mapped)."""
    buf = bytearray(ref.nbytes)
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        got = f.readinto(buf)
    if got != ref.nbytes:
        raise TruncatedError(f"{ref.path}: tensor {ref.name!r} ends early ({got} of {ref.nbytes} bytes)")
    if ref.crc32 is not None and (zlib.crc32(buf) & 0xFFFFFFFF) != ref.crc32:
        raise ChecksumError(f"{ref.path}: tensor {ref.name!r}: CRC-32 mismatch")
    arr = np.frombuffer(buf, dtype=_np_dtype(ref.dtype))
    if ref.dtype == "bool":
        arr = arr.view(np.uint8) != 0
    return arr.reshape(ref.shape)


def as_float32(arr, dtype: str) -> np.ndarray:
    """float32 values of a tensor read by read_ref (bfloat16 bits widened exactly)."""
    if dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(arr, dtype=np.float32)


# --------------------------------------------------------------------------- what to do per tensor
EMBEDDING_OR_NORM = ("*embed*", "*norm*", "*bn*", "*.ln*", "*layernorm*")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What happens to each selected tensor: optional pruning and quantization, then an encoding.

    ``layers``: glob patterns choosing the tensors (default: float tensors of 2+ dimensions that
    are not embeddings or norms, as `dnnz compress`). ``encoding=None`` stores every tensor raw
    (a plain format conversion). Each tensor's random generator is seeded from (seed, CRC-32 of
    its name), so results do not depend on which worker runs it, or when.
    """
    quantize: str | None = None
    k: int = 32
    prune: float | None = None
    encoding: str | None = "auto"
    seed: int = 0
    layers: tuple | None = None

    def selects(self, ref: TensorRef) -> bool:
        if self.encoding is None or ref.encoding != "raw":
            return False
        if self.layers:
            return any(fnmatch.fnmatchcase(ref.name, g) for g in self.layers)
        return (len(ref.shape) >= 2 and ref.dtype in _FLOATS
                and not any(fnmatch.fnmatch(ref.name.lower(), pat) for pat in EMBEDDING_OR_NORM))

    def to_json(self) -> str:
        d = {"prune": self.prune, "quantize": self.quantize, "k": self.k if self.quantize else None,
             "encoding": self.encoding, "unified": False, "seed": self.seed,
             "layers": list(self.layers) if self.layers else None}
        return json.dumps(d, sort_keys=False, separators=(",", ":"))


_CRASH_ENV = "DNNZ_TEST_CRASH_ONCE"  # test hook: the first task to claim this marker file crashes


def _maybe_crash():
    marker = os.environ.get(_CRASH_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(17)  # a worker that dies mid-task, as a lost node would


def compress_tensor(name: str, data, dtype: str, recipe: Recipe):
    """Run `recipe` on one tensor: `data` is a TensorRef (read here) or its array.

    Returns (encoding, shape, params, sections): plain, picklable parts of the EncodedMatrix.
    """
    _maybe_crash()
    from .encodings import encode

    arr = read_ref(data) if isinstance(data, TensorRef) else np.asarray(data)
    if dtype not in _FLOATS:
        raise InvalidArgumentError(f"tensor {name!r}: dtype {dtype} is not floating point; "
                                   "only float tensors can be compressed (use --layers to leave it out)")
    w = as_float32(arr, dtype)
    del arr
    if recipe.quantize or recipe.prune:
        from .compress import compress_weights

        pattern = "".join(f"[{c}]" if c in "[]*?" else c for c in name)  # the name itself, as a glob
        w = compress_weights({name: w}, method=recipe.quantize, k=recipe.k, prune=recipe.prune,
                             unified=False, include=[pattern], seed=recipe.seed)[name]
    try:
        em = encode(w, encoding=recipe.encoding)
    except DnnzError as exc:
        raise type(exc)(f"tensor {name!r}: {exc}") from exc
    return (em.encoding, tuple(em.shape), dict(em.params),
            {k: np.ascontiguousarray(v) for k, v in em.sections.items()})


def _encoded_from_parts(parts):
    from .encodings import from_sections

    encoding, shape, params, sections = parts
    return from_sections(encoding, shape, params, sections)


# --------------------------------------------------------------------------- executors
class _Inline:
    """Runs each task in this process when its result is asked for (workers=1)."""
    name = "inline"
    workers = 1

    def submit(self, fn, *args):
        return _Deferred(fn, args)

    def close(self, abort=False):
        pass


class _Deferred:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def result(self):
        return self.fn(*self.args)


def _pool_init():
    from .runtime import set_num_threads

    set_num_threads(1)  # one process per core: the C kernels' own threads would oversubscribe


class _Pool:
    """A local process pool; tasks read their tensor from its file themselves."""
    name = "pool"

    def __init__(self, workers):
        import concurrent.futures
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.workers = workers
        self._ex = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context(method), initializer=_pool_init)

    def submit(self, fn, *args):
        return self._ex.submit(fn, *args)

    def close(self, abort=False):
        if abort:  # interrupted or failed: do not wait minutes for tasks nobody will collect
            for p in list(getattr(self._ex, "_processes", {}).values()):
                p.terminate()
        self._ex.shutdown(wait=True, cancel_futures=True)


class _Ray:
    """Tasks on a Ray cluster. The driver reads each tensor and ships its bytes through Ray's
    object store (workers need no shared filesystem); a task whose worker dies is retried."""
    name = "ray"
    MAX_RETRIES = 3

    def __init__(self, address=None, num_cpus=None):
        try:
            import ray
        except ImportError:
            raise UnsupportedError("--ray needs Ray installed: pip install 'pydnnz[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address in (None, "", "local"):
                kwargs["num_cpus"] = num_cpus
                env = {k: os.environ[k] for k in ("PYTHONPATH", _CRASH_ENV) if k in os.environ}
                if env:
                    kwargs["runtime_env"] = {"env_vars": env}
            else:
                kwargs["address"] = address
            ray.init(**kwargs)
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._task = ray.remote(num_cpus=1, max_retries=self.MAX_RETRIES,
                                retry_exceptions=[OSError])(_ray_task)

    def submit(self, fn, *args):
        name, data, dtype, recipe = args
        if isinstance(data, TensorRef):
            data = read_ref(data)
        return _RayFuture(self._ray, self._task.remote(name, data, dtype, recipe))

    def close(self, abort=False):
        if self._owns:
            self._ray.shutdown()


def _ray_task(name, data, dtype, recipe):
    _pool_init()
    return compress_tensor(name, data, dtype, recipe)


class _RayFuture:
    def __init__(self, ray, ref):
        self._ray, self._ref = ray, ref

    def result(self):
        try:
            return self._ray.get(self._ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, DnnzError):
                raise cause from None
            raise


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_executor(workers=None, ray=False):
    """workers: processes (None = all cores, 1 = this process); ray: False, or an address
    (None / "local" starts a local Ray instance)."""
    if ray is not False:
        return _Ray(ray)
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidArgumentError(f"workers must be a positive integer, got {workers!r}")
    return _Inline() if workers == 1 else _Pool(workers)


# --------------------------------------------------------------------------- the shard writer
class ShardWriter:
    """Writes one .dnnz file tensor by tensor, holding only the tensor being written.

    The sections go to an anonymous temporary file as they come (their offsets and CRC-32s
    computed on the way); ``finish`` then writes preamble + header and copies the data area
    behind them, atomically. The bytes equal what ``pydnnz.save_file`` writes for the same tensors.
    """

    def __init__(self, path, metadata=None):
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        self.entries = []
        self.end = 0
        self._data = tempfile.TemporaryFile(dir=self.path.parent or ".")

    def _pad_to_next(self):
        from .container import _align

        offset = _align(self.end)
        if offset > self.end:
            self._data.write(bytes(offset - self.end))
        return offset

    def add(self, name, value):
        """Add an ndarray, BFloat16Tensor or EncodedMatrix (all in memory)."""
        from .container import _crc32, _plan_tensor

        entry, arrays = _plan_tensor(name, value)
        for sec, arr in zip(entry["sections"], arrays):
            offset = self._pad_to_next()
            sec["offset"], sec["length"] = offset, arr.nbytes
            sec["crc32"] = _crc32(arr.view(np.uint8)) if arr.nbytes else 0
            if arr.nbytes:
                self._data.write(memoryview(arr.view(np.uint8)))
            self.end = offset + arr.nbytes
        self.entries.append(entry)

    def add_raw_ref(self, ref: TensorRef):
        """Copy a raw tensor from its file in pieces (never all of it in memory)."""
        from .container import _check_shape

        shape = _check_shape(ref.name, ref.shape)
        if ref.dtype == "bool":  # store canonical 0/1 bytes, as save_file does
            self.add(ref.name, read_ref(ref))
            return
        offset = self._pad_to_next()
        crc = 0
        left = ref.nbytes
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            while left:
                piece = f.read(min(_CHUNK, left))
                if not piece:
                    raise TruncatedError(f"{ref.path}: tensor {ref.name!r} ends early")
                crc = zlib.crc32(piece, crc)
                self._data.write(piece)
                left -= len(piece)
        crc &= 0xFFFFFFFF
        if ref.crc32 is not None and crc != ref.crc32:
            raise ChecksumError(f"{ref.path}: tensor {ref.name!r}: CRC-32 mismatch")
        self.entries.append({"name": ref.name, "dtype": ref.dtype, "shape": shape, "encoding": "raw",
                             "params": {}, "sections": [{"name": "data", "dtype": ref.dtype, "offset": offset,
                                                         "length": ref.nbytes, "crc32": crc}]})
        self.end = offset + ref.nbytes

    def header(self) -> bytes:
        from .container import (FORMAT_MAJOR, MAGIC, MAX_HEADER_SIZE, PREAMBLE_SIZE, _align, minor_version)

        for k, v in self.metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidArgumentError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        doc = {"metadata": self.metadata, "tensors": self.entries}
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        hlen = _align(PREAMBLE_SIZE + len(text)) - PREAMBLE_SIZE
        if hlen > MAX_HEADER_SIZE:
            raise InvalidArgumentError(f"{self.path}: the header would be {hlen} bytes, over {MAX_HEADER_SIZE}")
        body = text + b" " * (hlen - len(text))
        head = struct.pack("<8sHHIQI", MAGIC, FORMAT_MAJOR, minor_version(self.entries), 0, hlen, 0)
        crc = zlib.crc32(body, zlib.crc32(head)) & 0xFFFFFFFF
        return head + struct.pack("<I", crc) + body

    def finish(self):
        head = self.header()
        try:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as out:
                out.write(head)
                self._data.seek(0)
                shutil.copyfileobj(self._data, out, _CHUNK)
        finally:
            self.close()

    def close(self):
        if self._data is not None:
            self._data.close()
            self._data = None


# --------------------------------------------------------------------------- reading sharded output
class ShardedTensors(Mapping):
    """What ``load_file`` returns for a sharded .dnnz checkpoint: one read-only mapping over the
    tensors of every shard (each shard opened lazily through its own memory map), with the
    index's ``.metadata``, and ``.info(name)`` / ``.shard_of(name)``."""

    def __init__(self, index_path):
        from .container import load_file

        index = read_index(index_path)
        if index["format"] != "dnnz":
            raise InvalidArgumentError(f"{index_path}: lists .safetensors shards; "
                                       "convert it first (dnnz convert IN OUT)")
        self.path = index["path"]
        self.metadata = dict(index["metadata"])
        self._files = {}
        self._where = {}
        for f in index["shards"]:
            lt = load_file(index["folder"] / f)
            _check_against_index(index, f, list(lt))
            self._files[f] = lt
        for name, f in index["weight_map"].items():
            self._where[name] = f
        order = [n for f in index["shards"] for n in self._files[f]]
        self._order = order
        self.format_version = next(iter(self._files.values())).format_version

    def shard_of(self, name):
        return self._where[name]

    def __getitem__(self, name):
        return self._files[self._where[name]][name]

    def info(self, name):
        return {**self._files[self._where[name]].info(name), "shard": self._where[name]}

    def __iter__(self):
        return iter(self._order)

    def __len__(self):
        return len(self._order)

    def __contains__(self, name):
        return name in self._where

    def __repr__(self):
        return f"ShardedTensors({self.path!s}, {len(self)} tensors in {len(self._files)} shards)"


def index_path_of(path) -> Path:
    """The index file of a sharded .dnnz checkpoint given as its folder or its index file."""
    p = Path(path)
    if p.is_dir():
        q = p / INDEX_NAME
        if not q.is_file():
            raise FileNotFoundError(f"{p}: no {INDEX_NAME} in this folder")
        return q
    return p


def load_sharded(path) -> ShardedTensors:
    """Open a sharded .dnnz checkpoint (its folder or its index file) lazily."""
    return ShardedTensors(index_path_of(path))


def verify_sharded(path):
    """Verify every shard completely (``pydnnz.container.verify``) and the index against them."""
    from .container import verify

    st = load_sharded(path)
    reports = [verify(st.path.parent / f) for f in st._files]
    return reports


# --------------------------------------------------------------------------- the engine
def _write_index(folder: Path, index_name: str, shards, weight_map, metadata):
    doc = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "metadata": metadata,
           "total_size": sum(s["size"] for s in shards), "shards": shards, "weight_map": weight_map}
    with atomic_path(folder / index_name) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _shard_is_done(path: Path, names, metadata) -> bool:
    """A shard written by an earlier run of the same plan: same tensors, same metadata, and every
    structure rule and CRC-32 of the file passing ``verify``."""
    from .container import verify, load_file

    if not path.is_file():
        return False
    try:
        lt = load_file(path)
        if list(lt) != list(names) or dict(lt.metadata) != metadata:
            return False
        del lt
        verify(path)
        return True
    except DnnzError:
        return False


# Peak memory of one compression task per weight of its tensor: quantization + encode("auto")
# measured with tracemalloc (about 48 bytes/weight for uq, 60 for encode auto picking rlham, on
# float32 Gaussian matrices, 2026-12-07); the scheduler's estimate of what a task in flight costs.
TASK_BYTES_PER_WEIGHT = 64


def task_bytes(ref: TensorRef) -> int:
    """Estimated peak memory of compressing `ref` (TASK_BYTES_PER_WEIGHT per element)."""
    return int(np.prod(ref.shape, dtype=object)) * TASK_BYTES_PER_WEIGHT


def default_memory_budget() -> int:
    """Half of the machine's physical memory (what tasks in flight may use together)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


def parse_size(text) -> int:
    """'2G', '512M', '1.5GB', '1000000' -> bytes (binary units)."""
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t)
    except ValueError:
        raise InvalidArgumentError(f"{text!r} is not a size (e.g. 2G, 512M)") from None
    if not value > 0 or not math.isfinite(value):
        raise InvalidArgumentError(f"{text!r}: a size must be positive")
    return int(value * mult)


def compress_checkpoint(src, dst, recipe: Recipe | None = None, *, workers=None, ray=False,
                        progress=None, resume=True, force=False, on_shard=None,
                        max_memory=None) -> dict:
    """Compress (or, with ``Recipe(encoding=None)``, convert) a checkpoint tensor by tensor.

    - ``src``: a folder, an ``*.index.json`` file, or a single .safetensors/.dnnz file.
    - ``dst``: a path ending in ``.dnnz`` gives one file (small models); otherwise a folder that
      receives one .dnnz shard per source shard (``model-0000i-of-0000n.dnnz``) and, last, the
      index ``model.dnnz.index.json`` (a ``dst`` ending in ``.index.json`` names the index).
    - ``workers``: processes (default all cores); ``ray``: False, or a Ray address (None/"local":
      a local Ray instance). The output bytes are the same for every choice.
    - ``resume`` (folders only): shards already in ``dst`` that match the plan and verify are kept;
      the others are computed. ``force``: overwrite a finished output (an index already there).
    - ``on_shard(i, path)``: called after shard i is written (progress reporting, tests).
    - ``max_memory``: bytes the tasks in flight may use together (estimated with
      ``task_bytes``; default half the machine's memory). Large tensors then run fewer at a time;
      one task always runs, whatever its size. It changes the schedule, never the bytes.

    Returns a summary dict (tensors, compressed, shards, written, reused, bytes_in, bytes_out, seconds).
    """
    from ._progress import progress_bar

    t0 = time.perf_counter()
    recipe = recipe or Recipe()
    source = open_source(src)
    dst = Path(dst)
    single = dst.suffix.lower() == ".dnnz"
    if single:
        folder, index_name = dst.parent, None
        plan = [(dst.name, source.tensors, source.path.name)]
        if dst.exists() and not force:
            raise FileExistsError(f"{dst}: already exists (use --force to overwrite)")
    else:
        if dst.name.endswith(".index.json"):
            folder, index_name = dst.parent, dst.name
        else:
            folder, index_name = dst, INDEX_NAME
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder}: exists and is not a folder")
        if (folder / index_name).exists() and not force:
            raise FileExistsError(f"{folder / index_name}: already exists (use --force to overwrite)")
        n = len(source.shards)
        plan = [(SHARD_NAME.format(i + 1, n), refs, name) for i, (name, refs) in enumerate(source.shards)]
        if folder.resolve() == Path(source.path).resolve().parent and any(
                (folder / p[0]).resolve() == Path(r.path).resolve() for p in plan for r in p[1]):
            raise InvalidArgumentError(f"{folder}: the output would overwrite the source's own shards")
        folder.mkdir(parents=True, exist_ok=True)
        for fname, _, _ in plan:  # temporary files of a run killed without a chance to clean up
            for stale in folder.glob(f".{fname}.*.tmp"):
                stale.unlink()
    names_seen = set()
    for _, refs, _ in plan:
        for r in refs:
            if r.name in names_seen:
                raise CorruptFileError(f"{src}: tensor {r.name!r} appears twice")
            names_seen.add(r.name)

    base_meta = dict(source.metadata)
    base_meta.update({"pydnnz.recipe": recipe.to_json(), "pydnnz.source": Path(source.path).name})

    def shard_meta(i, source_name):
        if single:
            return dict(base_meta)
        return {**base_meta, "pydnnz.shard": f"{i + 1}/{len(plan)}", "pydnnz.source_shard": source_name}

    todo, reused = [], []
    for i, (fname, refs, sname) in enumerate(plan):
        if not single and resume and not force and _shard_is_done(folder / fname, [r.name for r in refs],
                                                                  shard_meta(i, sname)):
            reused.append(fname)
        else:
            todo.append(i)
    jobs = [(i, r) for i in todo for r in plan[i][1]]
    total_bytes = sum(r.nbytes for _, r in jobs)
    n_compressed = sum(1 for _, r in jobs if recipe.selects(r))
    bar = progress_bar(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                       desc="dnnz", disable=None if progress is None else not progress)
    executor = make_executor(workers, ray) if n_compressed and workers != 1 or ray is not False else _Inline()
    window = max(2, 2 * executor.workers)
    budget = default_memory_budget() if max_memory is None else max_memory
    futures = {}
    in_flight = 0
    scan = 0
    writer = None
    written = []
    dnnz_sources = {}
    ok = False
    try:
        for j, (i, ref) in enumerate(jobs):
            while scan < len(jobs) and len(futures) < window:
                r = jobs[scan][1]
                if recipe.selects(r):
                    need = task_bytes(r)
                    if futures and in_flight + need > budget:
                        break  # wait for earlier tasks to finish first
                    futures[scan] = (executor.submit(compress_tensor, r.name, r, r.dtype, recipe), need)
                    in_flight += need
                scan += 1
            if writer is None or writer_shard != i:
                if writer is not None:
                    writer.finish()
                    written.append(plan[writer_shard][0])
                    if on_shard:
                        on_shard(writer_shard, writer.path)
                writer = ShardWriter(folder / plan[i][0], shard_meta(i, plan[i][2]))
                writer_shard = i
            if j in futures:
                fut, need = futures.pop(j)
                in_flight -= need
                writer.add(ref.name, _encoded_from_parts(fut.result()))
            elif ref.encoding != "raw":  # already compressed in a .dnnz source: copied as it is
                if ref.path not in dnnz_sources:
                    from .container import load_file

                    dnnz_sources.clear()
                    dnnz_sources[ref.path] = load_file(ref.path)
                writer.add(ref.name, dnnz_sources[ref.path][ref.name])
            else:
                writer.add_raw_ref(ref)
            bar.update(ref.nbytes)
            bar.set_postfix_str(f"{j + 1}/{len(jobs)} tensors", refresh=False)
        if writer is not None:
            writer.finish()
            written.append(plan[writer_shard][0])
            if on_shard:
                on_shard(writer_shard, writer.path)
            writer = None
        if single and not jobs:  # a source with no tensor at all
            ShardWriter(dst, shard_meta(0, plan[0][2])).finish()
            written.append(dst.name)
        ok = True
    finally:
        if writer is not None:
            writer.close()
        for fut, _ in futures.values():
            cancel = getattr(fut, "cancel", None)
            if cancel:
                cancel()
        executor.close(abort=not ok)
        bar.close()
    if single:
        bytes_out = dst.stat().st_size
    else:
        shards, weight_map = [], {}
        for fname, refs, _ in plan:
            shards.append({"file": fname, "size": (folder / fname).stat().st_size, "tensors": len(refs)})
            for r in refs:
                weight_map[r.name] = fname
        _write_index(folder, index_name, shards, weight_map, base_meta)
        bytes_out = sum(s["size"] for s in shards)
    bytes_in = sum(r.nbytes for _, refs, _ in plan for r in refs)
    return {"tensors": sum(len(p[1]) for p in plan),
            "compressed": sum(1 for p in plan for r in p[1] if recipe.selects(r)),
            "shards": len(plan), "written": written, "reused": reused, "bytes_in": bytes_in,
            "bytes_out": bytes_out, "engine": executor.name, "workers": executor.workers,
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- command line
def wants_streaming(args) -> bool:
    """`dnnz compress`/`convert` take this path for sharded inputs or outputs, --workers or --ray."""
    return (is_sharded(args.input) or not Path(args.output).suffix
            or Path(args.output).name.endswith(".index.json")
            or getattr(args, "workers", None) is not None or getattr(args, "ray", False) is not False
            or getattr(args, "max_memory", None) is not None)


def _summary_line(src, dst, s):
    from .cli import _human

    what = f"{s['shards']} shard(s)" + (f", {len(s['reused'])} kept from an earlier run" if s["reused"] else "")
    return (f"{src} ({_human(s['bytes_in'])}) -> {dst} ({_human(s['bytes_out'])}): {s['tensors']} tensors, "
            f"{s['compressed']} compressed, {what}, {s['engine']} x{s['workers']}, {s['seconds']:.1f} s")


def cmd_compress_sharded(args) -> int:
    """`dnnz compress` for sharded checkpoints and --workers/--ray (see compress_checkpoint)."""
    from .cli import UsageError

    if args.unified:
        raise UsageError("--unified needs every tensor at once; it is not available when streaming "
                         "a checkpoint (sharded input, --workers or --ray)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    if args.prune is not None and not 0 <= args.prune <= 100:
        raise UsageError(f"--prune {args.prune}: must be a percentage in [0, 100]")
    if args.k < 1:
        raise UsageError(f"--k {args.k}: must be at least 1")
    from .encodings import encodings
    from .encodings._speed import POLICIES

    if args.encoding not in POLICIES and args.encoding not in encodings():
        raise UsageError(f"--encoding {args.encoding}: unknown (choose a policy: {', '.join(POLICIES)}; "
                         f"or an encoding: {', '.join(encodings())})")
    recipe = Recipe(quantize=args.quantize, k=args.k, prune=args.prune, encoding=args.encoding,
                    seed=args.seed, layers=tuple(args.layers) if args.layers else None)
    src = Path(args.input)
    source = open_source(src)
    if args.layers and not any(recipe.selects(r) for r in source.tensors):
        raise UsageError(f"--layers {' '.join(args.layers)}: matches no raw tensor of {src}")
    s = compress_checkpoint(src, args.output, recipe, workers=args.workers,
                            ray=False if args.ray is False else args.ray, force=args.force,
                            max_memory=None if args.max_memory is None else parse_size(args.max_memory))
    print(_summary_line(src, args.output, s))
    return 0


def cmd_convert_sharded(args) -> int:
    """`dnnz convert` with a sharded input or output: every tensor copied raw, tensor by tensor."""
    dst = Path(args.output)
    if dst.suffix and dst.suffix.lower() != ".dnnz" and not dst.name.endswith(".index.json"):
        from .cli import UsageError

        raise UsageError(f"{dst}: a sharded checkpoint converts to .dnnz (a folder, an index path or "
                         "one .dnnz file)")
    s = compress_checkpoint(args.input, dst, Recipe(encoding=None), workers=1, force=args.force)
    print(_summary_line(args.input, dst, s))
    return 0


__all__ = ["INDEX_NAME", "Recipe", "TensorRef", "Source", "ShardWriter", "ShardedTensors",
           "compress_checkpoint", "compress_tensor", "open_source", "read_index", "read_ref",
           "read_safetensors_header", "load_sharded", "verify_sharded", "is_sharded", "default_workers"]
