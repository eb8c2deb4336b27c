"""The `dnnz compress` / `dnnz convert` commands on the streaming path (sharded input or output,
--workers, --ray, --max-memory).
"""
from __future__ import annotations

from pathlib import Path

from .engine import compress_checkpoint, parse_size
from .index import is_sharded
from .recipe import Recipe
from .sources import open_source


# --------------------------------------------------------------------------- command line
def wants_streaming(args) -> bool:
    """`dnnz compress`/`convert` take this path for sharded inputs or outputs, --workers or --ray."""
    return (is_sharded(args.input) or not Path(args.output).suffix
            or Path(args.output).name.endswith(".index.json")
            or getattr(args, "workers", None) is not None or getattr(args, "ray", False) is not False
            or getattr(args, "max_memory", None) is not None)


def _summary_line(src, dst, s):
    from ..cli import _human

    what = f"{s['shards']} shard(s)" + (f", {len(s['reused'])} kept from an earlier run" if s["reused"] else "")
    return (f"{src} ({_human(s['bytes_in'])}) -> {dst} ({_human(s['bytes_out'])}): {s['tensors']} tensors, "
            f"{s['compressed']} compressed, {what}, {s['engine']} x{s['workers']}, {s['seconds']:.1f} s")


def cmd_compress_sharded(args) -> int:
    """`dnnz compress` for sharded checkpoints and --workers/--ray (see compress_checkpoint)."""
    from ..cli._common import UsageError, check_lossy_options

    if args.unified:
        raise UsageError("--unified needs every tensor at once; it is not available when streaming "
                         "a checkpoint (sharded input, --workers or --ray)")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: must be at least 1")
    check_lossy_options(args)
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
        from ..cli import UsageError

        raise UsageError(f"{dst}: a sharded checkpoint converts to .dnnz (a folder, an index path or "
                         "one .dnnz file)")
    s = compress_checkpoint(args.input, dst, Recipe(encoding=None), workers=1, force=args.force)
    print(_summary_line(args.input, dst, s))
    return 0
