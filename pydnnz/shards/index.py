"""Index files of sharded checkpoints (spec/sharded.md): finding, reading and checking one
(ours, `model.dnnz.index.json`, or Hugging Face's `model.safetensors.index.json`), and writing ours.
"""
from __future__ import annotations

import json
from pathlib import Path

from .._atomic import atomic_path
from ..errors import CorruptFileError, UnsupportedVersionError

INDEX_NAME = "model.dnnz.index.json"
INDEX_FORMAT = "dnnz-index"
INDEX_VERSION = 1
SHARD_NAME = "model-{:05d}-of-{:05d}.dnnz"
MAX_INDEX_BYTES = 64 * 1024 * 1024          # same limit as a .dnnz header


def _no_duplicate_keys(source):
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise CorruptFileError(f"{source}: duplicate key {k!r} in JSON")
            out[k] = v
        return out
    return hook


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


def _write_index(folder: Path, index_name: str, shards, weight_map, metadata):
    doc = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "metadata": metadata,
           "total_size": sum(s["size"] for s in shards), "shards": shards, "weight_map": weight_map}
    with atomic_path(folder / index_name) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
