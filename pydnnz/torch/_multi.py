"""Shared helpers of the compressed layers in _conv_transpose.py, _recurrent.py and _attention.py.

Same contract as pydnnz/torch/_modules.py: every weight matrix stays an EncodedMatrix and the
products run from it (EncodedMatrix.matmul, in C); biases stay float32; inference only. The
file keeps each weight under the dense layer's key and in PyTorch's layout, so a .dnnz of a
compressed model matches the dense state dict key for key.

_MultiBase is the base of a compressed module holding several EncodedMatrix objects (one per
dense parameter: LSTM/GRU and their cells, MultiheadAttention); _f32 and _mm are the float32 CPU
conversion and the product from the compressed form those modules use.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ShapeError
from . import _state
from ._modules import _CompressedBase, _matmul


def _f32(t):
    t = t.detach()
    return t.to("cpu", torch.float32) if (t.dtype != torch.float32 or t.device.type != "cpu") else t


def _mm(em, x2d):
    """x2d (rows, in) @ W.T from the compressed form, float32 CPU tensors."""
    return _matmul(em, x2d.contiguous())


class _MultiBase(_CompressedBase):
    """A compressed module holding several EncodedMatrix objects (one per dense parameter)."""

    _encoded: dict

    def encoded_params(self):
        """{parameter name (as in the dense module's state dict): EncodedMatrix}."""
        return dict(self._encoded)

    @property
    def encoded(self):  # the first one, for code that expects one
        return next(iter(self._encoded.values()))

    @property
    def weight(self):
        raise AttributeError(f"{type(self).__name__} has no single .weight; its compressed parameters "
                             f"are {list(self._encoded)} (decoded on access as attributes)")

    def __getattr__(self, name):
        enc = self.__dict__.get("_encoded")
        if enc is not None and name in enc:
            return _state.decoded(enc[name])
        return super().__getattr__(name)

    def _set_encoded(self, pname, em):
        if tuple(em.shape) != tuple(self._encoded[pname].shape):
            raise ShapeError(f"{pname}: shape {tuple(em.shape)} does not fit {tuple(self._encoded[pname].shape)}")
        self._encoded[pname] = em

    @property
    def nbytes(self):
        return int(sum(em.nbytes for em in self._encoded.values()))

    @property
    def psi(self):
        return self.nbytes / (4 * sum(int(np.prod(em.shape)) for em in self._encoded.values()))
