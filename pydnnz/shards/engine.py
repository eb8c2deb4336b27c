"""The engine: compress_checkpoint plans the output shards, resumes from shards an earlier run
finished, schedules tasks within a memory budget, and writes results in a fixed order, the index last.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, DnnzError, InvalidArgumentError
from .executors import _Inline, make_executor
from .index import INDEX_NAME, SHARD_NAME, _write_index
from .recipe import Recipe, _encoded_from_parts, compress_tensor
from .sources import TensorRef, open_source
from .writer import ShardWriter


# --------------------------------------------------------------------------- the engine
def _shard_is_done(path: Path, names, metadata) -> bool:
    """A shard written by an earlier run of the same plan: same tensors, same metadata, and every
    structure rule and CRC-32 of the file passing ``verify``."""
    from ..container import verify, load_file

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
    from .._progress import progress_bar

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
                    from ..container import load_file

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
