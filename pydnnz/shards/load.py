"""Reading sharded .dnnz output back: one lazy mapping over every shard (ShardedTensors), what
load_file/safe_open return for an index file or its folder, and verify_sharded.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import InvalidArgumentError
from .index import INDEX_NAME, _check_against_index, read_index


# --------------------------------------------------------------------------- reading sharded output
class ShardedTensors(Mapping):
    """What ``load_file`` returns for a sharded .dnnz checkpoint: one read-only mapping over the
    tensors of every shard (each shard opened lazily through its own memory map), with the
    index's ``.metadata``, and ``.info(name)`` / ``.shard_of(name)``."""

    def __init__(self, index_path):
        from ..container import load_file

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
    from ..container import verify

    st = load_sharded(path)
    reports = [verify(st.path.parent / f) for f in st._files]
    return reports
