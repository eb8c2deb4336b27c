"""Compressed ConvTranspose1d/2d (registered in _layers.py; same contract as _modules.py).

- CompressedConvTranspose1d/2d: a transposed conv is the conv of the input with zeros
  inserted between its samples (stride), padded by dilation*(k-1)-padding (+output_padding
  on the far side), with the kernel transposed (in <-> out per group) and flipped. At
  construction the module decodes the weight once (transient) and re-encodes that permuted
  copy with the same encoding (lossless: the values are the same; a layout no encoding can hold
  falls back to "auto", then "dense"), which a CompressedConvNd then runs. The zero-inserted
  input costs stride^d times the products of a direct col2im; exactness against
  F.conv_transpose on the decoded weight is tested.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError, ShapeError, UnsupportedError
from . import _state
from ._modules import (CompressedConv1d, CompressedConv2d, _bias_param, _check_encoded, _CompressedBase,
                       _encoded_repr, _tuple)


class _CompressedConvTransposeNd(_CompressedBase):
    _nd = 0
    _dense = None
    _conv = None

    def __init__(self, encoded, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                 padding_mode="zeros"):
        super().__init__()
        name = type(self).__name__
        _check_encoded(encoded, name)
        nd = self._nd
        if len(encoded.shape) != nd + 2:
            raise ShapeError(f"{name}: the weight must be {nd + 2}-D (in, out/groups, *kernel), "
                             f"got shape {tuple(encoded.shape)}")
        if padding_mode != "zeros":
            raise UnsupportedError(f"{name}: padding_mode {padding_mode!r} (PyTorch only allows 'zeros')")
        self.encoded = encoded
        self.groups = int(groups)
        self.in_channels = int(encoded.shape[0])
        if self.groups < 1 or self.in_channels % self.groups:
            raise ShapeError(f"{name}: {self.in_channels} input channels do not split into {groups} groups")
        self.out_channels = int(encoded.shape[1]) * self.groups
        self.kernel_size = tuple(int(s) for s in encoded.shape[2:])
        self.stride = _tuple(stride, nd, "stride")
        self.padding = _tuple(padding, nd, "padding")
        self.output_padding = _tuple(output_padding, nd, "output_padding")
        self.dilation = _tuple(dilation, nd, "dilation")
        self.padding_mode = padding_mode
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if not 0 <= op < max(s, d):
                raise InvalidArgumentError(f"{name}: output_padding must be smaller than stride or dilation")
        self.bias = _bias_param(bias, self.out_channels, name)
        self.__dict__["_inner"] = self._build_inner()  # not a child: no state-dict entries

    def _build_inner(self):
        w = np.asarray(self.encoded.decode(), dtype=np.float32)
        g, k = self.groups, self.kernel_size
        w = w.reshape(g, self.in_channels // g, self.out_channels // g, *k).swapaxes(1, 2)
        w = np.flip(w, axis=tuple(range(3, 3 + self._nd))).reshape(self.out_channels, self.in_channels // g, *k)
        em = _state.reencode(self.encoded, np.ascontiguousarray(w), type(self).__name__)
        return self._conv(em, None, stride=1, padding=0, dilation=self.dilation, groups=g)

    def _set_encoded(self, pname, em):
        super()._set_encoded(pname, em)
        self.__dict__["_inner"] = self._build_inner()

    @classmethod
    def from_module(cls, module, encoded, bias="module"):
        current = module.encoded if isinstance(module, _CompressedBase) else module.weight
        if tuple(encoded.shape) != tuple(current.shape):
            raise ShapeError(f"weight shape {tuple(encoded.shape)} does not fit {module}")
        return cls(encoded, module.bias if isinstance(bias, str) else bias, stride=module.stride,
                   padding=module.padding, output_padding=module.output_padding, groups=module.groups,
                   dilation=module.dilation, padding_mode=module.padding_mode)

    def forward(self, x, output_size=None):
        nd, name = self._nd, type(self).__name__
        unbatched = x.dim() == nd + 1
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != nd + 2 or x.shape[1] != self.in_channels:
            raise ShapeError(f"{name}: expected input (batch, {self.in_channels}, <{nd} spatial dims>), "
                             f"got {tuple(x.shape)}")
        size = x.shape[2:]
        base = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                zip(size, self.stride, self.padding, self.dilation, self.kernel_size)]
        extra = list(self.output_padding)
        if output_size is not None:
            want = [int(v) for v in list(output_size)[-nd:]]
            extra = [w - b for w, b in zip(want, base)]
            if any(not 0 <= e < max(s, d) for e, s, d in zip(extra, self.stride, self.dilation)):
                raise ShapeError(f"{name}: output_size {want} is not reachable from input {tuple(size)} "
                                 f"(valid sizes: {base} + [0, stride or dilation))")
        t = x
        if any(s > 1 for s in self.stride):  # zeros between the input samples
            up = t.new_zeros((*t.shape[:2], *[(n - 1) * s + 1 for n, s in zip(size, self.stride)]))
            up[(..., *[slice(None, None, s) for s in self.stride])] = t
            t = up
        pads = []
        for k, d, p, e in zip(reversed(self.kernel_size), reversed(self.dilation), reversed(self.padding),
                              reversed(extra)):
            edge = d * (k - 1) - p
            pads += [edge, edge + e]
        if any(pads):
            t = F.pad(t, pads)  # negative values crop
        out = self.__dict__["_inner"](t)
        return self._conv_output(out, nd, unbatched)

    def decompress(self):
        m = self._dense(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                        padding=self.padding, output_padding=self.output_padding, groups=self.groups,
                        bias=self.bias is not None, dilation=self.dilation)
        return self._filled(m)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, {_encoded_repr(self.encoded)}")


class CompressedConvTranspose1d(_CompressedConvTransposeNd):
    """nn.ConvTranspose1d computed from a compressed weight (see the module docstring)."""

    _nd, _dense, _conv = 1, nn.ConvTranspose1d, CompressedConv1d


class CompressedConvTranspose2d(_CompressedConvTransposeNd):
    """nn.ConvTranspose2d computed from a compressed weight (see the module docstring)."""

    _nd, _dense, _conv = 2, nn.ConvTranspose2d, CompressedConv2d
