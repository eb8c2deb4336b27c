"""PyTorch integration: compress a model, save it, load it and run it from the compressed layers.

    compress_model(model, recipe, *, inplace=False, finetune=None)  layers -> Compressed* modules
    auto_compress(model, evaluate, budget, ...)                     the smallest file within a metric
                                                                    budget, and its replayable recipe
                                                                    (retrain={loss, data}: with gradual
                                                                    pruning and fine-tuning)
    save_model(model, path, metadata=None)                          .dnnz with every param and buffer
    load_model(path, model, strict=True)                            weights from the file, architecture
                                                                    from `model`; compressed layers run
                                                                    from the memory-mapped bytes
    CompressedLinear, CompressedConv1d, CompressedConv2d, CompressedEmbedding,
    CompressedConvTranspose1d/2d, CompressedLSTM, CompressedGRU, CompressedLSTMCell,
    CompressedGRUCell, CompressedMultiheadAttention
    decompress_model(model)                                         Compressed* -> dense nn modules (exact)
    compression_summary(model)                                      compressed layers, and every layer left
                                                                    dense with the reason
    prune_gradually(model, p, steps, train_step, ...)               gradual magnitude pruning around your
                                                                    training step (before compress_model)

The recipe format is described in `pydnnz.torch._recipe` (and `help(compress_model)`).
PyTorch is optional for pydnnz: `import pydnnz` never imports it; `import pydnnz.torch` does.

Example:
    >>> import os, tempfile, torch, pydnnz.torch as pt
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    >>> small = pt.compress_model(model, {"method": "cws", "k": 8, "prune": 50})
    >>> path = os.path.join(tempfile.mkdtemp(), "model.dnnz")
    >>> pt.save_model(small, path)
    >>> fresh = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    >>> loaded = pt.load_model(path, fresh)
    >>> type(loaded[0]).__name__, loaded(torch.ones(1, 16)).shape
    ('CompressedLinear', torch.Size([1, 1]))
"""
try:
    import torch  # noqa: F401  (absolute import: the real PyTorch, not this module)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pydnnz.torch needs PyTorch, which is not installed (pip install torch); "
        "the rest of pydnnz works without it") from exc

from ._auto import AutoReport, auto_compress
from ._compress import compress_model, decompress_model
from ._gradual import prune_gradually
from ._io import ModelMismatchError, load_model, model_tensors, read_metadata, save_model
from ._layers import (CompressedConvTranspose1d, CompressedConvTranspose2d, CompressedGRU, CompressedGRUCell,
                      CompressedLSTM, CompressedLSTMCell, CompressedMultiheadAttention)
from ._modules import CompressedConv1d, CompressedConv2d, CompressedEmbedding, CompressedLinear
from ._recipe import parse_recipe
from ._report import compression_summary

__all__ = [
    "compress_model",
    "auto_compress",
    "AutoReport",
    "decompress_model",
    "prune_gradually",
    "save_model",
    "load_model",
    "read_metadata",
    "model_tensors",
    "parse_recipe",
    "compression_summary",
    "ModelMismatchError",
    "CompressedLinear",
    "CompressedConv1d",
    "CompressedConv2d",
    "CompressedEmbedding",
    "CompressedConvTranspose1d",
    "CompressedConvTranspose2d",
    "CompressedLSTM",
    "CompressedGRU",
    "CompressedLSTMCell",
    "CompressedGRUCell",
    "CompressedMultiheadAttention",
]
