"""Lossy, structure-preserving compression methods of Marinò et al. (ICPR 2020, Neurocomputing 2023).

Pruning (magnitude, per layer or global), weight sharing by 1-D k-means (CWS), probabilistic
quantization (PWS), uniform quantization (UQ), entropy-constrained scalar quantization (ECSQ),
pruning followed by each quantizer (Pr-X, zero kept exact), and sparse low-rank factorization
(SLR), in pure NumPy. Quantizers return :class:`QuantizedTensor` (codebook + indices, what the
encodings consume), SLR returns :class:`LowRankTensor`. :func:`compress_weights` applies a
method to a dict of named weights with per-layer or per-layer-type ("unified") codebooks.
Fine-tuning with PyTorch lives in :mod:`pydnnz.torch.finetune`; ``pydnnz.compress.finetune`` is the
same module, imported lazily (this package never imports torch itself).

>>> import numpy as np
>>> from pydnnz import compress
>>> w = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
>>> compress.pr_cws(w, 80, 8).k   # 8 shared values for the survivors, plus the exact zero
9
"""
from ._tensors import LowRankTensor, QuantizedTensor
from .api import compress_weights, infer_layer_type
from .lowrank import slr
from .pruning import prune, prune_global
from .quantize import (
    METHODS,
    cws,
    ecsq,
    ecsq_tune_lambda,
    pr_cws,
    pr_ecsq,
    pr_pws,
    pr_uq,
    pws,
    quantize,
    uq,
)

__all__ = [
    "QuantizedTensor",
    "LowRankTensor",
    "prune",
    "prune_global",
    "cws",
    "pws",
    "uq",
    "ecsq",
    "ecsq_tune_lambda",
    "slr",
    "pr_cws",
    "pr_pws",
    "pr_uq",
    "pr_ecsq",
    "quantize",
    "compress_weights",
    "infer_layer_type",
    "METHODS",
]


def __getattr__(name):
    if name == "finetune":  # torch is imported only when fine-tuning is asked for
        import importlib

        return importlib.import_module("pydnnz.torch.finetune")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
