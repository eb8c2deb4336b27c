"""The registry of the more compressed layers, and the names other modules import from here.

Same contract as pydnnz/torch/_modules.py: every weight matrix stays an EncodedMatrix and the
products run from it (EncodedMatrix.matmul, in C); biases stay float32; inference only. The
file keeps each weight under the dense layer's key and in PyTorch's layout, so a .dnnz of a
compressed model matches the dense state dict key for key.

The layers live in one module per concern:
- _conv_transpose.py: CompressedConvTranspose1d/2d;
- _recurrent.py: CompressedLSTM / CompressedGRU and CompressedLSTMCell / CompressedGRUCell;
- _attention.py: CompressedMultiheadAttention;
- _multi.py: _MultiBase, the base of the modules holding several EncodedMatrix objects.
This module maps the dense types to them (COMPRESSED_FOR, TYPE_NAMES, MULTI) and says which
parameters a layer compresses (weight_params, file_params) and why one cannot be (unsupported_reason).
"""
from __future__ import annotations

from torch import nn

from ._attention import CompressedMultiheadAttention, mha_unsupported
from ._conv_transpose import CompressedConvTranspose1d, CompressedConvTranspose2d
from ._modules import _CompressedBase
from ._multi import _MultiBase
from ._recurrent import CompressedGRU, CompressedGRUCell, CompressedLSTM, CompressedLSTMCell, rnn_unsupported

__all__ = ["COMPRESSED_FOR", "MULTI", "TYPE_NAMES", "CompressedConvTranspose1d", "CompressedConvTranspose2d",
           "CompressedGRU", "CompressedGRUCell", "CompressedLSTM", "CompressedLSTMCell",
           "CompressedMultiheadAttention", "file_params", "mha_unsupported", "rnn_unsupported",
           "unsupported_reason", "weight_params"]


COMPRESSED_FOR = {
    nn.ConvTranspose1d: CompressedConvTranspose1d, nn.ConvTranspose2d: CompressedConvTranspose2d,
    nn.LSTM: CompressedLSTM, nn.GRU: CompressedGRU, nn.LSTMCell: CompressedLSTMCell, nn.GRUCell: CompressedGRUCell,
    nn.MultiheadAttention: CompressedMultiheadAttention,
}
TYPE_NAMES = {nn.ConvTranspose1d: "ConvTranspose1d", nn.ConvTranspose2d: "ConvTranspose2d", nn.LSTM: "LSTM",
              nn.GRU: "GRU", nn.LSTMCell: "LSTMCell", nn.GRUCell: "GRUCell",
              nn.MultiheadAttention: "MultiheadAttention"}
MULTI = (CompressedLSTM, CompressedGRU, CompressedLSTMCell, CompressedGRUCell, CompressedMultiheadAttention)


def weight_params(module):
    """Names of the parameters of a dense layer that compress_model compresses."""
    if isinstance(module, (nn.LSTM, nn.GRU)):
        return [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
    if isinstance(module, (nn.LSTMCell, nn.GRUCell)):
        return ["weight_ih", "weight_hh"]
    if isinstance(module, nn.MultiheadAttention):
        return ["in_proj_weight", "out_proj.weight"]
    return ["weight"]


def unsupported_reason(module):
    """Why this (registered type of) dense layer cannot be compressed, or None."""
    if isinstance(module, (nn.LSTM, nn.GRU)):
        return rnn_unsupported(module)
    if isinstance(module, nn.MultiheadAttention):
        return mha_unsupported(module)
    return None


def file_params(module):
    """Parameter names (relative to `module`) that a .dnnz may hold compressed for this module."""
    if isinstance(module, CompressedMultiheadAttention):
        return ["in_proj_weight", "out_proj.weight"]
    if isinstance(module, _MultiBase):
        return list(module._encoded)
    if isinstance(module, _CompressedBase):
        return ["weight"]
    return weight_params(module)
