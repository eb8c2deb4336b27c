"""More compressed layers: ConvTranspose1d/2d, LSTM/GRU (and their cells), MultiheadAttention.

Same contract as pydnnz/torch/_modules.py: every weight matrix stays an EncodedMatrix and the
products run from it (EncodedMatrix.matmul, in C); biases stay float32; inference only. The
file keeps each weight under the dense layer's key and in PyTorch's layout, so a .dnnz of a
compressed model matches the dense state dict key for key.

- CompressedConvTranspose1d/2d: a transposed conv is the conv of the input with zeros
  inserted between its samples (stride), padded by dilation*(k-1)-padding (+output_padding
  on the far side), with the kernel transposed (in <-> out per group) and flipped. At
  construction the module decodes the weight once (transient) and re-encodes that permuted
  copy with the same encoding (lossless: the values are the same; a layout no encoding can hold
  falls back to "auto", then "dense"), which a CompressedConvNd then runs. The zero-inserted
  input costs stride^d times the products of a direct col2im; exactness against
  F.conv_transpose on the decoded weight is tested.
- CompressedLSTM / CompressedGRU (num_layers, bidirectional, batch_first, bias; not proj_size
  or PackedSequence): per layer and direction, the input projection x_t @ W_ih.T is ONE matmul
  over all time steps (batched over time and batch), and the recurrent product h @ W_hh.T one
  matmul per step, both from the compressed form; gate arithmetic in PyTorch. Dropout between
  layers is not applied (inference, as in eval()).
- CompressedLSTMCell / CompressedGRUCell: one step, the same two products.
- CompressedMultiheadAttention (embed_dim = kdim = vdim, no bias_k/bias_v/add_zero_attn):
  in_proj_weight is one EncodedMatrix (3E, E); self-attention (query is key is value) costs one
  matmul, cross-attention one per distinct input (keeping the rows it needs). out_proj is a
  CompressedLinear child (keys `out_proj.weight`, `out_proj.bias`, as in PyTorch). Masks
  (attn_mask bool/float 2-D or 3-D, key_padding_mask bool/float, is_causal), need_weights and
  average_attn_weights behave as nn.MultiheadAttention in eval mode.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError, ShapeError, UnsupportedError
from . import _state
from ._modules import (CompressedConv1d, CompressedConv2d, CompressedLinear, _bias_param, _check_encoded,
                       _CompressedBase, _encoded_repr, _matmul, _tuple)


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


# ---- ConvTranspose ------------------------------------------------------------------------------

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
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).reshape(-1, *([1] * nd))
        return out.squeeze(0) if unbatched else out

    def decompress(self):
        m = self._dense(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                        padding=self.padding, output_padding=self.output_padding, groups=self.groups,
                        bias=self.bias is not None, dilation=self.dilation)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.array(self.encoded.decode(), dtype=np.float32)))
            if self.bias is not None:
                m.bias.copy_(self.bias)
        return m

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


# ---- recurrent layers -----------------------------------------------------------------------------

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
        if not isinstance(encoded, dict) or set(encoded) != set(shapes):
            raise InvalidArgumentError(f"{name}: expected EncodedMatrix objects for {sorted(shapes)}")
        for pname, em in encoded.items():
            _check_encoded(em, f"{name}.{pname}")
            if tuple(em.shape) != shapes[pname]:
                raise ShapeError(f"{name}: {pname} has shape {tuple(em.shape)}, expected {shapes[pname]}")
        self.__dict__["_encoded"] = {k: encoded[k] for k in shapes}
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
        if not isinstance(encoded, dict) or set(encoded) != set(shapes):
            raise InvalidArgumentError(f"{name}: expected EncodedMatrix objects for {sorted(shapes)}")
        for pname, em in encoded.items():
            _check_encoded(em, f"{name}.{pname}")
            if tuple(em.shape) != shapes[pname]:
                raise ShapeError(f"{name}: {pname} has shape {tuple(em.shape)}, expected {shapes[pname]}")
        self.__dict__["_encoded"] = {k: encoded[k] for k in shapes}
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


# ---- MultiheadAttention ----------------------------------------------------------------------------

def mha_unsupported(module):
    """Why a dense MultiheadAttention cannot be compressed, or None."""
    if not module._qkv_same_embed_dim:
        return "MultiheadAttention with kdim/vdim != embed_dim is not supported"
    if module.bias_k is not None:
        return "MultiheadAttention with add_bias_kv is not supported"
    if module.add_zero_attn:
        return "MultiheadAttention with add_zero_attn is not supported"
    return None


class CompressedMultiheadAttention(_MultiBase):
    """nn.MultiheadAttention computed from compressed projections (see the module docstring)."""

    def __init__(self, in_proj, out_proj, *, embed_dim, num_heads, in_proj_bias=None, batch_first=False,
                 dropout=0.0):
        super().__init__()
        name = type(self).__name__
        _check_encoded(in_proj, f"{name}.in_proj_weight")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.batch_first, self.dropout = bool(batch_first), float(dropout)
        if self.embed_dim % self.num_heads:
            raise ShapeError(f"{name}: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.head_dim = self.embed_dim // self.num_heads
        if tuple(in_proj.shape) != (3 * self.embed_dim, self.embed_dim):
            raise ShapeError(f"{name}: in_proj_weight has shape {tuple(in_proj.shape)}, "
                             f"expected {(3 * self.embed_dim, self.embed_dim)}")
        if not isinstance(out_proj, CompressedLinear) or (out_proj.in_features, out_proj.out_features) != \
                (self.embed_dim, self.embed_dim):
            raise ShapeError(f"{name}: out_proj must be a CompressedLinear {self.embed_dim} -> {self.embed_dim}")
        self.__dict__["_encoded"] = {"in_proj_weight": in_proj}
        self.in_proj_bias = _bias_param(in_proj_bias, 3 * self.embed_dim, f"{name}.in_proj_bias")
        self.out_proj = out_proj
        # False keeps nn.TransformerEncoderLayer / nn.TransformerEncoder off their fused "fast
        # path", which would read .in_proj_weight (decoding it) and run dense; they then call this
        # module's forward, which computes from the compressed form.
        self._qkv_same_embed_dim = False
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False

    @classmethod
    def from_module(cls, module, encoded, biases="module"):
        reason = mha_unsupported(module) if isinstance(module, nn.MultiheadAttention) else None
        if reason:
            raise UnsupportedError(reason)
        in_bias = getattr(module, "in_proj_bias", None)
        out_bias = module.out_proj.bias
        if isinstance(biases, dict):
            in_bias, out_bias = biases.get("in_proj_bias", in_bias), biases.get("out_proj.bias", out_bias)
        if isinstance(in_bias, torch.Tensor) and in_bias.is_meta:
            in_bias = np.zeros(in_bias.shape, np.float32)
        if isinstance(out_bias, torch.Tensor) and out_bias.is_meta:
            out_bias = np.zeros(out_bias.shape, np.float32)
        out = CompressedLinear(encoded["out_proj.weight"], bias=out_bias)
        return cls(encoded["in_proj_weight"], out, embed_dim=module.embed_dim, num_heads=module.num_heads,
                   in_proj_bias=in_bias, batch_first=module.batch_first, dropout=module.dropout)

    def encoded_params(self):
        return {"in_proj_weight": self._encoded["in_proj_weight"]}

    def _project(self, inputs):
        """q, k, v (each (rows, E)) from the compressed in_proj: one matmul per distinct input."""
        em = self._encoded["in_proj_weight"]
        E = self.embed_dim
        done = {}
        out = []
        for j, t in enumerate(inputs):
            key = id(t)
            if key not in done:
                y = _mm(em, t)
                if self.in_proj_bias is not None:
                    y = y + self.in_proj_bias
                done[key] = y
            out.append(done[key][:, j * E:(j + 1) * E])
        return out

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        name = type(self).__name__
        unbatched = query.dim() == 2
        E, Hn, D = self.embed_dim, self.num_heads, self.head_dim
        for t, what in ((query, "query"), (key, "key"), (value, "value")):
            if t.dim() != query.dim() or t.shape[-1] != E:
                raise ShapeError(f"{name}: {what} must be {query.dim()}-D with {E} features, got {tuple(t.shape)}")
        same_kv = key is value
        same_qk = query is key

        def seq_first(t):
            t = t.unsqueeze(1) if unbatched else (t.transpose(0, 1) if self.batch_first else t)
            return t

        q_in = seq_first(query)
        k_in = q_in if same_qk else seq_first(key)
        v_in = k_in if same_kv else seq_first(value)
        L, N = q_in.shape[0], q_in.shape[1]
        S = k_in.shape[0]
        if key_padding_mask is not None and unbatched:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        result = {}

        def op(qt):
            q2 = _f32(qt).reshape(L * N, E)
            k2 = q2 if same_qk else _f32(k_in).reshape(S * N, E)
            v2 = k2 if same_kv else _f32(v_in).reshape(S * N, E)
            q, k, v = self._project([q2, k2, v2])
            q = q.reshape(L, N * Hn, D).transpose(0, 1)  # (N*H, L, D)
            k = k.reshape(S, N * Hn, D).transpose(0, 1)
            v = v.reshape(S, N * Hn, D).transpose(0, 1)
            scores = torch.bmm(q / math.sqrt(D), k.transpose(1, 2))  # (N*H, L, S)
            mask = _merge_masks(attn_mask, key_padding_mask, is_causal, N, Hn, L, S, name)
            if mask is not None:
                scores = scores + mask
            w = torch.softmax(scores, dim=-1)
            o = torch.bmm(w, v).transpose(0, 1).reshape(L * N, E)
            result["w"] = w
            return self.out_proj(o).view(L, N, E)

        out = self._run(q_in, op)
        weights = None
        if need_weights:
            w = result["w"].view(N, Hn, L, S)
            weights = w.mean(dim=1) if average_attn_weights else w
            if unbatched:
                weights = weights.squeeze(0)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def decompress(self):
        m = nn.MultiheadAttention(self.embed_dim, self.num_heads, dropout=self.dropout,
                                  bias=self.in_proj_bias is not None, batch_first=self.batch_first)
        with torch.no_grad():
            m.in_proj_weight.copy_(_state.decoded(self._encoded["in_proj_weight"]))
            if self.in_proj_bias is not None:
                m.in_proj_bias.copy_(self.in_proj_bias)
            m.out_proj.weight.copy_(self.out_proj.weight)
            if self.out_proj.bias is not None:
                m.out_proj.bias.copy_(self.out_proj.bias)
        return m.eval()

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}, "
                f"in_proj: {_encoded_repr(self._encoded['in_proj_weight'])}")


def _as_additive(mask, what, name):
    mask = mask.detach().cpu()
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape).masked_fill(mask, float("-inf"))
    if not mask.dtype.is_floating_point:
        raise InvalidArgumentError(f"{name}: {what} must be bool or float, got {mask.dtype}")
    return mask.float()


def _merge_masks(attn_mask, key_padding_mask, is_causal, N, Hn, L, S, name):
    out = None
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool).triu(1)
    if attn_mask is not None:
        m = _as_additive(attn_mask, "attn_mask", name)
        if m.shape == (L, S):
            m = m.unsqueeze(0)
        elif m.shape != (N * Hn, L, S):
            raise ShapeError(f"{name}: attn_mask must have shape {(L, S)} or {(N * Hn, L, S)}, got {tuple(m.shape)}")
        out = m
    if key_padding_mask is not None:
        k = _as_additive(key_padding_mask, "key_padding_mask", name)
        if k.shape != (N, S):
            raise ShapeError(f"{name}: key_padding_mask must have shape {(N, S)}, got {tuple(k.shape)}")
        k = k.view(N, 1, 1, S).expand(N, Hn, 1, S).reshape(N * Hn, 1, S)
        out = k if out is None else out + k
    return out


# ---- registry ------------------------------------------------------------------------------------

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
