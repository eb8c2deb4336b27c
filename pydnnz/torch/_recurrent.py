"""Compressed recurrent layers: LSTM/GRU and their cells (registered in _layers.py; same
contract as _modules.py, the shared base in _multi.py).

- CompressedLSTM / CompressedGRU (num_layers, bidirectional, batch_first, bias; not proj_size
  or PackedSequence): per layer and direction, the input projection x_t @ W_ih.T is ONE matmul
  over all time steps (batched over time and batch), and the recurrent product h @ W_hh.T one
  matmul per step, both from the compressed form; gate arithmetic in PyTorch. Dropout between
  layers is not applied (inference, as in eval()).
- CompressedLSTMCell / CompressedGRUCell: one step, the same two products.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgumentError, ShapeError, UnsupportedError
from . import _state
from ._modules import _bias_param, _check_encoded
from ._multi import _f32, _mm, _MultiBase


_GATES = {"LSTM": 4, "GRU": 3}


def _lstm_step(gx, gh, h, c):
    i, f, g, o = (gx + gh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(gx, gh, h):
    rx, zx, nx = gx.chunk(3, dim=-1)
    rh, zh, nh = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(rx + rh), torch.sigmoid(zx + zh)
    n = torch.tanh(nx + r * nh)
    return (1 - z) * n + z * h


def rnn_unsupported(module):
    """Why a dense LSTM/GRU cannot be compressed, or None."""
    if getattr(module, "proj_size", 0):
        return "LSTM with proj_size > 0 is not supported"
    return None


def _take_encoded(module, encoded, shapes):
    """Keep `encoded` ({parameter name: EncodedMatrix}) on `module` after checking it holds exactly
    the parameters of `shapes` ({name: shape}), each an EncodedMatrix of that shape."""
    name = type(module).__name__
    if not isinstance(encoded, dict) or set(encoded) != set(shapes):
        raise InvalidArgumentError(f"{name}: expected EncodedMatrix objects for {sorted(shapes)}")
    for pname, em in encoded.items():
        _check_encoded(em, f"{name}.{pname}")
        if tuple(em.shape) != shapes[pname]:
            raise ShapeError(f"{name}: {pname} has shape {tuple(em.shape)}, expected {shapes[pname]}")
    module.__dict__["_encoded"] = {k: encoded[k] for k in shapes}


class _CompressedRNN(_MultiBase):
    _mode = ""
    _dense = None

    def __init__(self, encoded, biases, *, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, dropout=0.0):
        super().__init__()
        name = type(self).__name__
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self.proj_size = 0
        G, H = _GATES[self._mode], self.hidden_size
        dirs = 2 if self.bidirectional else 1
        shapes = {}
        for layer in range(self.num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                in_size = self.input_size if layer == 0 else H * dirs
                shapes[f"weight_ih{sfx}"] = (G * H, in_size)
                shapes[f"weight_hh{sfx}"] = (G * H, H)
        _take_encoded(self, encoded, shapes)
        for pname in shapes:
            bname = pname.replace("weight", "bias")
            if self.bias:
                b = biases.get(bname) if biases else None
                self.register_parameter(bname, _bias_param(b if b is not None else np.zeros(G * H, np.float32),
                                                           G * H, f"{name}.{bname}"))

    @classmethod
    def from_module(cls, module, encoded, biases="module"):
        if isinstance(biases, str):
            biases = {n: p for n, p in module.named_parameters(recurse=False) if n.startswith("bias")}
            biases = {n: (np.zeros(p.shape, np.float32) if p.is_meta else p) for n, p in biases.items()}
        return cls(encoded, biases, input_size=module.input_size, hidden_size=module.hidden_size,
                   num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                   bidirectional=module.bidirectional, dropout=module.dropout)

    def _run_direction(self, layer, reverse, x, h, c):
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
        T, B = x.shape[0], x.shape[1]
        gx = _mm(self._encoded[f"weight_ih{sfx}"], x.reshape(T * B, -1)).view(T, B, -1)
        if self.bias:
            gx = gx + getattr(self, f"bias_ih{sfx}")
        bh = getattr(self, f"bias_hh{sfx}") if self.bias else None
        whh = self._encoded[f"weight_hh{sfx}"]
        out = torch.empty((T, B, self.hidden_size))
        steps = range(T - 1, -1, -1) if reverse else range(T)
        for t in steps:
            gh = _mm(whh, h)
            if bh is not None:
                gh = gh + bh
            if self._mode == "LSTM":
                h, c = _lstm_step(gx[t], gh, h, c)
            else:
                h = _gru_step(gx[t], gh, h)
            out[t] = h
        return out, h, c

    def forward(self, input, hx=None):
        name = type(self).__name__
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise UnsupportedError(f"{name}: PackedSequence input is not supported; pad the batch "
                                   "(nn.utils.rnn.pad_packed_sequence) or decompress the layer")
        unbatched = input.dim() == 2
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: expected input (L, N, {self.input_size}) (or batch_first, or unbatched "
                             f"(L, {self.input_size})), got {tuple(input.shape)}")
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        dirs = 2 if self.bidirectional else 1
        B, H, n = x.shape[1], self.hidden_size, self.num_layers * dirs
        lstm = self._mode == "LSTM"
        if hx is None:
            h0 = torch.zeros((n, B, H))
            c0 = torch.zeros((n, B, H)) if lstm else None
        else:
            h0, c0 = (hx if lstm else (hx, None))
            if unbatched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if c0 is not None else None
            for t in (h0, c0) if lstm else (h0,):
                if tuple(t.shape) != (n, B, H):
                    raise ShapeError(f"{name}: hidden state must have shape {(n, B, H)}, got {tuple(t.shape)}")
            h0, c0 = _f32(h0), (_f32(c0) if c0 is not None else None)
        finals = {}

        def op(t):
            t = _f32(t)
            hs, cs = [], []
            for layer in range(self.num_layers):
                outs = []
                for d in range(dirs):
                    i = layer * dirs + d
                    o, h, c = self._run_direction(layer, bool(d), t, h0[i], c0[i] if lstm else None)
                    outs.append(o)
                    hs.append(h)
                    cs.append(c)
                t = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
            finals["h"] = torch.stack(hs)
            finals["c"] = torch.stack(cs) if lstm else None
            return t

        out = self._run(x, op)
        h_n, c_n = finals["h"].to(out.dtype), (finals["c"].to(out.dtype) if lstm else None)
        if unbatched:
            out, h_n = out.squeeze(1), h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        elif self.batch_first:
            out = out.transpose(0, 1)
        return (out, (h_n, c_n)) if lstm else (out, h_n)

    def decompress(self):
        m = self._dense(self.input_size, self.hidden_size, num_layers=self.num_layers, bias=self.bias,
                        batch_first=self.batch_first, dropout=self.dropout, bidirectional=self.bidirectional)
        with torch.no_grad():
            for pname, em in self._encoded.items():
                getattr(m, pname).copy_(_state.decoded(em))
                if self.bias:
                    bname = pname.replace("weight", "bias")
                    getattr(m, bname).copy_(getattr(self, bname))
        return m

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        nb = self.nbytes
        return s + f", nbytes={nb}, psi={self.psi:.4f}"


class CompressedLSTM(_CompressedRNN):
    """nn.LSTM computed from compressed weights (see the module docstring)."""

    _mode, _dense = "LSTM", nn.LSTM


class CompressedGRU(_CompressedRNN):
    """nn.GRU computed from compressed weights (see the module docstring)."""

    _mode, _dense = "GRU", nn.GRU


class _CompressedCell(_MultiBase):
    _mode = ""
    _dense = None

    def __init__(self, encoded, biases, *, input_size, hidden_size, bias=True):
        super().__init__()
        name = type(self).__name__
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        G, H = _GATES[self._mode], self.hidden_size
        shapes = {"weight_ih": (G * H, self.input_size), "weight_hh": (G * H, H)}
        _take_encoded(self, encoded, shapes)
        for bname in ("bias_ih", "bias_hh"):
            b = (biases or {}).get(bname)
            self.register_parameter(bname, _bias_param(b if b is not None else np.zeros(G * H, np.float32),
                                                       G * H, f"{name}.{bname}") if self.bias else None)

    @classmethod
    def from_module(cls, module, encoded, biases="module"):
        if isinstance(biases, str):
            biases = {n: (np.zeros(p.shape, np.float32) if p.is_meta else p)
                      for n, p in module.named_parameters(recurse=False) if n.startswith("bias")}
        return cls(encoded, biases, input_size=module.input_size, hidden_size=module.hidden_size, bias=module.bias)

    def forward(self, input, hx=None):
        name = type(self).__name__
        unbatched = input.dim() == 1
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: expected input (N, {self.input_size}) or ({self.input_size},), "
                             f"got {tuple(input.shape)}")
        x = input.unsqueeze(0) if unbatched else input
        B, H = x.shape[0], self.hidden_size
        lstm = self._mode == "LSTM"
        if hx is None:
            h, c = torch.zeros((B, H)), (torch.zeros((B, H)) if lstm else None)
        else:
            h, c = hx if lstm else (hx, None)
            h = _f32(h.unsqueeze(0) if unbatched else h)
            c = _f32(c.unsqueeze(0) if unbatched else c) if lstm else None
            for t in (h, c) if lstm else (h,):
                if tuple(t.shape) != (B, H):
                    raise ShapeError(f"{name}: hidden state must have shape {(B, H)}, got {tuple(t.shape)}")
        finals = {}

        def op(t):
            t = _f32(t)
            gx = _mm(self._encoded["weight_ih"], t)
            gh = _mm(self._encoded["weight_hh"], h)
            if self.bias:
                gx, gh = gx + self.bias_ih, gh + self.bias_hh
            if lstm:
                h1, finals["c"] = _lstm_step(gx, gh, h, c)
                return h1
            return _gru_step(gx, gh, h)

        h1 = self._run(x, op)
        if lstm:
            c1 = finals["c"].to(h1.dtype)
            return (h1.squeeze(0), c1.squeeze(0)) if unbatched else (h1, c1)
        return h1.squeeze(0) if unbatched else h1

    def decompress(self):
        m = self._dense(self.input_size, self.hidden_size, bias=self.bias)
        with torch.no_grad():
            for pname, em in self._encoded.items():
                getattr(m, pname).copy_(_state.decoded(em))
            if self.bias:
                m.bias_ih.copy_(self.bias_ih)
                m.bias_hh.copy_(self.bias_hh)
        return m

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}, nbytes={self.nbytes}, psi={self.psi:.4f}"


class CompressedLSTMCell(_CompressedCell):
    """nn.LSTMCell computed from compressed weights."""

    _mode, _dense = "LSTM", nn.LSTMCell


class CompressedGRUCell(_CompressedCell):
    """nn.GRUCell computed from compressed weights."""

    _mode, _dense = "GRU", nn.GRUCell

