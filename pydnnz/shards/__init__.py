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

The package mirrors that flow, one concern per module: ``index`` (index files), ``sources``
(reading inputs tensor by tensor), ``recipe`` (the per-tensor task), ``executors`` (inline, pool,
Ray), ``writer`` (ShardWriter), ``engine`` (compress_checkpoint, resume), ``load`` (reading the
output back) and ``commands`` (the CLI's streaming path).
"""
from .commands import cmd_compress_sharded, cmd_convert_sharded, wants_streaming
from .engine import TASK_BYTES_PER_WEIGHT, compress_checkpoint, default_memory_budget, parse_size, task_bytes
from .executors import default_workers, make_executor
from .index import (INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, MAX_INDEX_BYTES, SHARD_NAME, is_sharded,
                    read_index)
from .load import ShardedTensors, index_path_of, load_sharded, verify_sharded
from .recipe import EMBEDDING_OR_NORM, Recipe, compress_tensor
from .sources import (MAX_SAFETENSORS_HEADER, Source, TensorRef, as_float32, open_source, read_ref,
                      read_safetensors_header, write_index_safetensors, write_safetensors)
from .writer import ShardWriter

__all__ = ["INDEX_NAME", "Recipe", "TensorRef", "Source", "ShardWriter", "ShardedTensors",
           "compress_checkpoint", "compress_tensor", "open_source", "read_index", "read_ref",
           "read_safetensors_header", "load_sharded", "verify_sharded", "is_sharded", "default_workers"]
