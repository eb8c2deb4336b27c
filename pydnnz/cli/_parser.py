"""The `dnnz` argument parser: every command, its options and help text."""
from __future__ import annotations

import argparse

from .. import __version__
from ._bench import cmd_bench, cmd_demo
from ._common import EXIT_USAGE
from ._compress import cmd_compress
from ._convert import cmd_convert
from ._inspect import cmd_info, cmd_verify


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2 (argparse prints usage too; keep it short)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")



def _limit_option(p) -> None:
    p.add_argument("--max-decoded-bytes", metavar="SIZE",
                   help="largest tensor to decode, e.g. 16G (default 4G or $DNNZ_MAX_DECODED_BYTES); "
                        "a larger one fails with a one-line error")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dnnz", description="Compress, inspect, verify and convert neural-network weight files.")
    p.add_argument("--version", action="version", version=f"pydnnz {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from ..encodings import encodings

    c = sub.add_parser(
        "compress", help="compress a weight file into a .dnnz file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compress the weights of a checkpoint: an optional lossy step (pruning, quantization), "
                    "then a lossless encoding per tensor with dot products computed from it.",
        epilog="methods (--quantize, --rule, recipes):\n"
               "  cws   k-means weight sharing          pws   probabilistic quantization\n"
               "  uq    uniform quantization            ecsq  entropy-constrained quantization\n"
               "  prune magnitude pruning alone         pr_X  pruning, then X;  none  leave the layer as is\n"
               f"encodings (--encoding): policies auto (default: the smallest within 1.5x of the fastest's estimated speed), smallest, fastest; or one of {', '.join(encodings())}\n"
               "  (spec/encodings.md; `dnnz bench` measures their dot-product speed)\n"
               "recipe files (--recipe): JSON or TOML, the rules of pydnnz.torch.compress_model, e.g.\n"
               '  [{"match": "head*", "method": "none"}, {"type": "conv", "method": "uq", "k": 256},\n'
               '   {"method": "cws", "prune": 90, "k": 32}]\n'
               "layer types for tensor files: 2-D -> Linear ('embed' in the name -> Embedding), 3-D -> Conv1d, "
               "4-D+ -> Conv2d")
    c.add_argument("input", metavar="IN", help=".safetensors, PyTorch state dict (.pt/.pth/.bin/.ckpt, read "
                   "weights_only), .npz, .onnx, Keras .h5/.weights.h5 or TensorFlow Lite .tflite; or a sharded checkpoint (its folder or *.index.json), read tensor "
                   "by tensor")
    c.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the .dnnz file to write, or a folder for sharded output (+ model.dnnz.index.json)")
    c.add_argument("--prune", type=float, metavar="P", help="prune the P%% smallest-magnitude weights (per layer, "
                                                            "or over all of them with --prune-scope global)")
    c.add_argument("--prune-scope", choices=["layer", "global"], default="layer",
                   help="one pruning threshold per layer (default) or one over every selected layer")
    c.add_argument("--quantize", choices=["cws", "pws", "uq", "ecsq"], help="weight sharing / quantization method")
    c.add_argument("--k", type=int, default=32, help="codebook size for --quantize (default 32)")
    c.add_argument("--encoding", default="auto",
                   help="lossless encoding of each layer, or a policy: auto (default: the smallest within "
                        f"1.5x of the fastest's estimated speed), smallest, fastest; encodings: {', '.join(encodings())}")
    c.add_argument("--layers", metavar="GLOB", action="append",
                   help="compress only tensors whose name matches (repeatable), embeddings included; default: "
                        "every float tensor with 2+ dimensions except embeddings and norms")
    c.add_argument("--keep", metavar="GLOB", action="append",
                   help="leave matching layers out of the lossy step (e.g. the output layer; repeatable)")
    c.add_argument("--rule", metavar="GLOB=METHOD[,k=N][,prune=P][,encoding=E][,unified]", action="append",
                   help="a per-glob rule, tried before the --quantize/--prune one (repeatable; first match wins)")
    c.add_argument("--recipe", metavar="FILE", help="the rules from a JSON or TOML file (see below)")
    c.add_argument("--unified", action="store_true", help="one codebook per layer type instead of per layer")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--auto", action="store_true",
                   help="data-free automatic choice per tensor (RD quantizer, UQ or dense) of the fewest "
                        "bytes within --budget; a weight-space heuristic, for a metric budget use "
                        "pydnnz.torch.auto_compress")
    c.add_argument("--budget", type=float, metavar="B",
                   help="with --auto: the mean relative squared error of the weights, ||W-Q(W)||^2/||W||^2 "
                        "averaged over tensors (e.g. 0.002)")
    c.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a terminal")
    c.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    c.add_argument("--workers", type=int, metavar="N", help="compress N tensors at once in N processes "
                   "(default: all cores when streaming); the output bytes do not depend on N")
    c.add_argument("--ray", nargs="?", const="local", default=False, metavar="ADDRESS",
                   help="run the tensors on a Ray cluster (ADDRESS, e.g. auto or ray://host:10001; "
                        "none: a local Ray instance); needs pydnnz[ray]")
    c.add_argument("--max-memory", metavar="SIZE", help="memory the tensors in flight may use together "
                   "when streaming, e.g. 2G (default: half the RAM); fewer big tensors run at once")
    c.set_defaults(func=cmd_compress)

    i = sub.add_parser("info", help="per-tensor shape, encoding, bytes, decoded size, bits/weight, psi "
                                    "(from the header: nothing is decoded)")
    i.add_argument("file", metavar="FILE", nargs="+")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--summary", action="store_true", help="one line per FILE (several allowed), from the headers")
    i.add_argument("--entropy", action="store_true",
                   help="also the order-0 entropy bound of each tensor (decodes every tensor)")
    _limit_option(i)
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="check every checksum and structure; exit 0 when all pass, 1 otherwise")
    v.add_argument("file", metavar="FILE")
    _limit_option(v)
    v.set_defaults(func=cmd_verify)

    cv = sub.add_parser("convert", help="convert between .dnnz, .safetensors, .pt/.pth, .npz, .onnx "
                                         "(and from Keras .h5 and TensorFlow Lite .tflite)")
    cv.add_argument("input", metavar="IN")
    cv.add_argument("output", metavar="OUT")
    cv.add_argument("--template", metavar="MODEL.onnx",
                    help="writing .onnx: the original model, whose graph gets the decoded weights")
    cv.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    _limit_option(cv)
    cv.set_defaults(func=cmd_convert)

    b = sub.add_parser("bench", help="dot-product speed from the compressed form vs dense, same run")
    b.add_argument("file", metavar="FILE", nargs="?")
    b.add_argument("--quick", action="store_true", help="synthetic matrices instead of a file")
    b.add_argument("--json", action="store_true")
    b.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 8, 128)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="compress the bundled DeepDTA/DAVIS model and print the table")
    d.add_argument("--json", action="store_true")
    d.add_argument("--keep", metavar="DIR", help="keep the .dnnz files in DIR")
    d.set_defaults(func=cmd_demo)
    return p
