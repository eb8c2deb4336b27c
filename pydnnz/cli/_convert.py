"""`dnnz convert`: between .dnnz, .safetensors, .pt/.pth, .npz, .onnx (and from Keras .h5)."""
from __future__ import annotations

from pathlib import Path

from .._format import human_size as _human
from ._common import EXIT_OK, UsageError, _check_input, _check_output, _note_skipped


def cmd_convert(args) -> int:
    from ..convert import convert, format_of

    from ..shards import cmd_convert_sharded, wants_streaming

    if wants_streaming(args):  # a sharded checkpoint in or out: tensor by tensor (pydnnz.shards)
        return cmd_convert_sharded(args)
    src, dst = Path(args.input), Path(args.output)
    _check_input(src)
    format_of(src)
    format_of(dst)
    _check_output(dst, args.force)
    if format_of(dst) == "onnx" and args.template is None:
        raise UsageError(f"{dst}: writing ONNX needs the original model: --template ORIGINAL.onnx")
    if args.max_decoded_bytes is not None:
        from ..runtime import set_max_decoded_bytes
        set_max_decoded_bytes(args.max_decoded_bytes)
    if args.template is not None:
        _check_input(Path(args.template))
    summary = convert(src, dst, force=True, template=args.template)
    _note_skipped(src, summary["skipped"])
    print(f"{src} -> {dst}: {summary['tensors']} tensors, {_human(summary['bytes_in'])} -> {_human(summary['bytes_out'])}")
    return EXIT_OK

