"""What happens to each tensor: the Recipe (which tensors, pruning, quantization, encoding) and
compress_tensor, the task a worker runs on one tensor (seeded by its name, so any worker gives
the same bytes).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os

import numpy as np

from ..errors import DnnzError, InvalidArgumentError
from .sources import _FLOATS, TensorRef, as_float32, read_ref


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
    from ..encodings import encode

    arr = read_ref(data) if isinstance(data, TensorRef) else np.asarray(data)
    if dtype not in _FLOATS:
        raise InvalidArgumentError(f"tensor {name!r}: dtype {dtype} is not floating point; "
                                   "only float tensors can be compressed (use --layers to leave it out)")
    w = as_float32(arr, dtype)
    del arr
    if recipe.quantize or recipe.prune:
        from ..compress import compress_weights

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
    from ..encodings import from_sections

    encoding, shape, params, sections = parts
    return from_sections(encoding, shape, params, sections)
