"""Compressed MultiheadAttention (registered in _layers.py; same contract as _modules.py, the
shared base in _multi.py).

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
from torch import nn

from ..errors import InvalidArgumentError, ShapeError, UnsupportedError
from . import _state
from ._modules import CompressedLinear, _bias_param, _check_encoded, _encoded_repr
from ._multi import _f32, _mm, _MultiBase


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

