"""Compressed layers: nn.Module subclasses whose forward runs on the compressed weight.

Each holds an EncodedMatrix (`.encoded`, the weight in PyTorch layout) and a float32 bias, and
computes with `EncodedMatrix.matmul` (x @ W.T in C, decoding as it goes): the dense weight is
never built in forward.

- CompressedLinear: leading dims flattened, one matmul (from _decoded.MIN_LINEAR_ROWS input rows:
  the weight decoded into a reused block and torch's product, see _decoded.py). A float32 CPU
  input without autograd calls the C kernel on the tensors' memory directly.
- CompressedConv1d / CompressedConv2d: the INPUT is unfolded (im2col: Tensor.unfold gives a
  strided view of every window, the same columns as torch.nn.functional.unfold, copied once
  into a reused buffer) into rows of in/groups * prod(kernel) values, which the matmul turns
  into output channels. stride, padding (ints, tuples, "same", "valid"), every
  padding_mode (zeros, reflect, replicate, circular: applied to the input with F.pad, as
  PyTorch itself does) and dilation are honoured. The im2col buffer holds a slice of the
  batch (about 8 MiB, one sample at least) and is reused slice after slice, so activations stay
  bounded.
  Groups (grouped and depthwise convs): the file keeps ONE EncodedMatrix per weight (the
  PyTorch tensor, so a .dnnz matches the state dict key for key) and forward makes ONE C call
  for all groups (EncodedMatrix.matmul_grouped, csrc/conv.h): each group's rows of the encoded
  weight are addressed in place (no re-encoding at load); narrow groups decode a bounded block of
  the weight at a time, wider ones run the encoding's own kernel. Depthwise convs (one input
  channel per group) skip im2col: csrc/conv.c convolves straight from the input, zero padding and
  bias inside, at every size (it beats torch's depthwise convolution on MobileNetV2's layers:
  about 0.65-0.9x its time at batch 1, one thread).
  Fast forward: a float32 CPU input without autograd runs a plan built once per input shape and
  weight (_CompressedConvNd._plan: the direct depthwise kernel on the tensors' memory, or the
  decoded path below with the weight decoded into a reused per-thread block), skipping the
  general path's wrapping; the plans live outside the module (_PLANS), so copies and pickles
  never carry them.
  A convolution whose weight meets many input windows (batch x output positions >=
  _decoded.MIN_WINDOWS) instead decodes its weight exactly (decode_rows, in C) a block of
  output channels (whole groups) of at most _decoded.BLOCK floats at a time and lets torch
  convolve with it: the decode costs about as much as a few windows, and torch's convolution
  beats im2col + a small-matrix product by 2-6x on such layers (MobileNetV2's 1x1 and depthwise
  convs at 112x112). Temporary memory stays bounded (one block, in a per-thread buffer reused
  call after call); no weight is kept decoded.
- CompressedEmbedding: only the looked-up rows are decoded (EncodedMatrix.decode_rows), so a
  lookup costs in proportion to the rows asked for, never the table: up to _EMBED_DIRECT_IDS ids
  each id's row, more the unique ids' rows; a table with no more rows than ids is decoded whole
  (one C call, no bigger than the output) and gathered.

Inference only: forward works with or without autograd, but backward through a compressed
layer raises UnsupportedError (the gradient w.r.t. the input needs W, i.e. the transposed
product, which the encodings do not provide). Fine-tune before compressing
(`compress_model(..., finetune=...)`). Computation is float32 on the CPU; inputs on another
device or of another float dtype are converted and the output converted back.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from ..errors import InvalidArgumentError, ShapeError, UnsupportedError
from . import _state
from . import _decoded
from ._decoded import decoded_conv, decoded_linear, use_decoded_conv, use_decoded_linear

_IM2COL_BYTES = 8 << 20
# _CompressedConvNd._plan's cache: module -> (encoded weight, decoded-path limits, {input shape: fast
# forward}); outside the module so that copies and pickles of a module never carry it, and the
# forwards take the module as an argument so that an entry never keeps its module alive.
_PLANS = weakref.WeakKeyDictionary()
_EMBED_DIRECT_IDS = 1024  # up to this many ids, an embedding lookup decodes each id's row directly


class _InferenceOnly(torch.autograd.Function):
    """Runs `op(x)` without autograd; a backward pass through it raises a clear error."""

    @staticmethod
    def forward(ctx, x, op, name):
        ctx.layer_name = name
        return op(x)

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - message checked in the tests
        raise UnsupportedError(
            f"{ctx.layer_name} is inference-only: pydnnz computes x @ W.T from the compressed form but "
            "not the gradient w.r.t. x. Fine-tune before compressing (compress_model(..., finetune=fn)) "
            "or run under torch.no_grad()/torch.inference_mode().")


def _as_f32_numpy(x):
    """A float32, C-contiguous CPU view (or copy) of a tensor, as numpy."""
    x = x.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    if x.dtype != torch.float32:
        x = x.float()
    return x.contiguous().numpy()


def _matmul(em, x2d):
    """em.matmul on a (rows, in) float32 tensor; returns a float32 tensor (rows, out)."""
    if x2d.shape[0] == 0:
        return torch.zeros((0, em.matrix_shape[0]), dtype=torch.float32)
    return torch.from_numpy(np.ascontiguousarray(em.matmul(_as_f32_numpy(x2d)), dtype=np.float32))


def _encoded_repr(em):
    n = int(np.prod(em.shape))
    psi = em.nbytes / (4 * n) if n else float("nan")
    k = (getattr(em, "params", None) or {}).get("k")  # every codebook encoding stores its k
    return f"encoding={em.encoding}, " + (f"k={k}, " if k is not None else "") + f"nbytes={em.nbytes}, psi={psi:.4f}"


def _check_encoded(em, what):
    for attr in ("matmul", "shape", "matrix_shape", "encoding", "nbytes", "decode"):
        if not hasattr(em, attr):
            raise InvalidArgumentError(f"{what}: expected an EncodedMatrix (pydnnz.encode), got {type(em).__name__}")


def _weight_shape(module):
    """The weight shape of a dense layer or of a compressed one."""
    em = getattr(module, "encoded", None)
    return tuple(em.shape) if em is not None else tuple(module.weight.shape)


def _check_fits(module, encoded):
    if tuple(encoded.shape) != _weight_shape(module):
        raise ShapeError(f"weight shape {tuple(encoded.shape)} does not fit {module} "
                         f"(expects {_weight_shape(module)})")


def _bias_param(bias, out, what):
    if bias is None:
        return None
    b = bias if isinstance(bias, torch.Tensor) else torch.from_numpy(np.array(bias, dtype=np.float32))
    b = b.detach().to(torch.float32).reshape(-1).clone()
    if b.numel() != out:
        raise ShapeError(f"{what}: bias has {b.numel()} values, the weight has {out} outputs")
    return nn.Parameter(b, requires_grad=False)


class _CompressedBase(nn.Module):
    def __init__(self):
        super().__init__()
        _state.install(self)  # state_dict() decodes, load_state_dict() keeps or re-encodes (_state.py)

    @property
    def weight(self):
        """The dense weight, decoded on each access (float32, not kept): see pydnnz/torch/_state.py."""
        return _state.decoded(self.encoded)

    def _set_encoded(self, pname, em):
        """Replace the encoded weight (load_state_dict with new values)."""
        _check_fits(self, em)
        self.encoded = em

    @torch.compiler.disable
    def _conv_output(self, out, nd, unbatched):
        """A conv output (N, C, *spatial) with the per-channel bias added, and without the batch
        axis when the input had none."""
        if self.bias is not None:
            out = out + self.bias.to(out.dtype).reshape(-1, *([1] * nd))
        return out.squeeze(0) if unbatched else out

    def _filled(self, m):
        """`m`, a fresh dense module of the same shape, holding the decoded weight (float32) and the
        bias: what every compressed layer's decompress() returns."""
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.array(self.encoded.decode(), dtype=np.float32)))
            if getattr(self, "bias", None) is not None:
                m.bias.copy_(self.bias)
        return m

    def _run(self, x, op):
        _state.check_not_tracing(type(self).__name__)
        if x.requires_grad and torch.is_grad_enabled():  # a graph is being built: refuse backward clearly
            out = _InferenceOnly.apply(x, op, type(self).__name__)
        else:  # no graph (inference_mode, no_grad, or an input without grad): skip the Function's cost
            out = op(x)
        if x.dtype.is_floating_point and x.dtype != torch.float32:
            out = out.to(x.dtype)
        if x.device.type != "cpu":
            out = out.to(x.device)
        return out

    @property
    def nbytes(self):
        """Bytes of the compressed weight (what a .dnnz file stores for it)."""
        return self.encoded.nbytes

    @property
    def psi(self):
        """Occupancy ratio: compressed bytes / float32 bytes of the weight."""
        return self.encoded.nbytes / (4 * int(np.prod(self.encoded.shape)))

    def decompress(self) -> nn.Module:
        """The equivalent dense PyTorch module (materializes the exact decoded weight)."""
        raise NotImplementedError


class CompressedLinear(_CompressedBase):
    """nn.Linear computed from a compressed weight.

    Example:
        >>> import numpy as np, torch, pydnnz
        >>> from pydnnz.torch import CompressedLinear
        >>> w = np.array([[0.5, 0.0, -1.0], [2.0, 0.5, 0.0]], dtype=np.float32)
        >>> layer = CompressedLinear(pydnnz.encode(w), bias=np.zeros(2, np.float32))
        >>> layer(torch.ones(1, 3))
        tensor([[-0.5000,  2.5000]])
    """

    def __init__(self, encoded, bias=None):
        super().__init__()
        _check_encoded(encoded, "CompressedLinear")
        if len(encoded.shape) != 2:
            raise ShapeError(f"CompressedLinear: the weight must be 2-D (out, in), got shape {tuple(encoded.shape)}")
        self.encoded = encoded
        self.out_features, self.in_features = (int(s) for s in encoded.shape)
        self.bias = _bias_param(bias, self.out_features, "CompressedLinear")

    @classmethod
    def from_module(cls, module: nn.Linear, encoded, bias="module"):
        _check_fits(module, encoded)
        return cls(encoded, module.bias if isinstance(bias, str) else bias)

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"CompressedLinear: input has {x.shape[-1]} features, expected {self.in_features}")
        lead = x.shape[:-1]
        if (x.dtype == torch.float32 and x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())
                and not torch.jit.is_tracing()):  # the common case, without the general path's wrapping
            x2 = x.reshape(-1, self.in_features)
            rows, b = x2.shape[0], self.bias
            if 0 < rows and b is not None and b.dtype != torch.float32:
                b = b.float()
            if use_decoded_linear(self.encoded, rows):
                return decoded_linear(self.encoded, x2, b).reshape(*lead, self.out_features)
            run = self._matmul_runner() if rows > 0 and self.in_features > 0 and self.out_features > 0 else None
            if run is not None:
                y = run(x2)
                if b is not None:
                    y += b
                return y.view(*lead, self.out_features)

        biased = []  # set when op already added the bias
        def op(t):  # noqa: E306
            t2 = t.reshape(-1, self.in_features)
            if use_decoded_linear(self.encoded, t2.shape[0]):
                biased.append(True)
                t2 = t2.float() if t2.dtype != torch.float32 else t2
                b = None if self.bias is None else self.bias.float()
                return decoded_linear(self.encoded, t2.cpu(), b).reshape(*lead, self.out_features)
            return _matmul(self.encoded, t2).reshape(*lead, self.out_features)

        out = self._run(x, op)
        return out + self.bias.to(out.dtype) if self.bias is not None and not biased else out

    def _matmul_runner(self):
        """x2d (float32, CPU) -> x2d @ W.T as a new tensor through the encoding's C kernel, with the
        C function and struct looked up once per weight (None: a wrapper encoding, em.matmul)."""
        em = self.encoded
        entry = _PLANS.get(self)
        if entry is None or entry[0] is not em:
            entry = _PLANS[self] = (em, None, {"matmul": em._matmul_plan() if hasattr(em, "_matmul_plan") else None})
        return entry[2]["matmul"]

    def decompress(self):
        m = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        return self._filled(m)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {_encoded_repr(self.encoded)}")


def _tuple(v, n, name):
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(a) for a in v)
    if len(v) == 1 and n > 1:
        v = v * n
    if len(v) != n:
        raise InvalidArgumentError(f"{name} must have {n} values, got {v}")
    return v


class _CompressedConvNd(_CompressedBase):
    _nd = 0
    _dense = None

    def __init__(self, encoded, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
        super().__init__()
        name = type(self).__name__
        _check_encoded(encoded, name)
        nd = self._nd
        if len(encoded.shape) != nd + 2:
            raise ShapeError(f"{name}: the weight must be {nd + 2}-D (out, in/groups, *kernel), "
                             f"got shape {tuple(encoded.shape)}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise UnsupportedError(f"{name}: padding_mode {padding_mode!r} is not supported "
                                   "(zeros, reflect, replicate, circular)")
        self.encoded = encoded
        self.out_channels = int(encoded.shape[0])
        self.kernel_size = tuple(int(s) for s in encoded.shape[2:])
        self.groups = int(groups)
        if self.groups < 1 or self.out_channels % self.groups:
            raise ShapeError(f"{name}: {self.out_channels} output channels do not split into {groups} groups")
        self.in_channels = int(encoded.shape[1]) * self.groups
        self.stride = _tuple(stride, nd, "stride")
        self.dilation = _tuple(dilation, nd, "dilation")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise InvalidArgumentError(f"{name}: padding {padding!r} is not 'same', 'valid' or ints")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise InvalidArgumentError(f"{name}: padding='same' needs stride 1 (as in PyTorch)")
            self.padding = padding
            pads = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1) if padding == "same" else 0
                pads.append((total // 2, total - total // 2))
        else:
            self.padding = _tuple(padding, nd, "padding")
            pads = [(p, p) for p in self.padding]
        # F.pad order: last dimension first.
        self._pad = tuple(v for pair in reversed(pads) for v in pair)
        self.bias = _bias_param(bias, self.out_channels, name)

    @classmethod
    def from_module(cls, module, encoded, bias="module"):
        _check_fits(module, encoded)
        return cls(encoded, module.bias if isinstance(bias, str) else bias, stride=module.stride,
                   padding=module.padding, dilation=module.dilation, groups=module.groups,
                   padding_mode=module.padding_mode)

    def _out_size(self, size):
        return [(s - d * (k - 1) - 1) // st + 1
                for s, k, d, st in zip(size, self.kernel_size, self.dilation, self.stride)]

    def _patches(self, x):
        """The im2col of x as a strided VIEW (no copy): (n, C, *out_size, *kernel_size)."""
        v = x
        for dim, (k, d, st) in enumerate(zip(self.kernel_size, self.dilation, self.stride)):
            v = v.unfold(2 + dim, d * (k - 1) + 1, st)  # appends the window as the last dim
        if any(d > 1 for d in self.dilation):
            v = v[(...,) + tuple(slice(None, None, d) for d in self.dilation)]
        return v

    def _plan(self, x):
        """The per-shape fast forward for a float32 CPU input (batch, C, *spatial) run without
        autograd, or None (the general forward below). Built once per input shape and weight:
        - depthwise convs with zero padding run csrc/conv.c's direct kernel (padding and bias
          inside, no padded copy, no im2col) on the tensors' memory;
        - convs that meet many windows decode the weight (one block) into a fresh tensor and let
          torch convolve (as decoded_conv, without its per-call bookkeeping)."""
        em, limits = self.encoded, (_decoded.MIN_WINDOWS, _decoded.BLOCK)
        entry = _PLANS.get(self)
        if entry is None or entry[0] is not em or entry[1] != limits:
            entry = _PLANS[self] = (em, limits, {})
        plans, key = entry[2], tuple(x.shape)
        if key not in plans:
            plans[key] = self._make_plan(key)
        return plans[key]

    def _make_plan(self, shape):
        nd, em, G = self._nd, self.encoded, self.groups
        if len(shape) != nd + 2 or shape[1] != self.in_channels or self.padding_mode != "zeros":
            return None
        pads = [(self._pad[2 * (nd - 1 - i)], self._pad[2 * (nd - 1 - i) + 1]) for i in range(nd)]
        out_size = self._out_size([s + a + b for s, (a, b) in zip(shape[2:], pads)])
        if any(s <= 0 for s in out_size):
            return None
        batch, out_c = shape[0], self.out_channels
        if G > 1 and G == self.in_channels and hasattr(em, "_conv_depthwise_plan"):
            one = (1,) if nd == 1 else ()
            run = em._conv_depthwise_plan(G, one + tuple(shape[2:]), one + self.kernel_size, one + self.stride,
                                          one + self.dilation, ((0,) if nd == 1 else (pads[0][0],)) + (pads[-1][0],),
                                          one + tuple(out_size))
            y_shape = (batch, out_c, *out_size)

            def depthwise(mod, x):
                x = x.contiguous()
                y = torch.empty(y_shape)
                b = mod.bias
                if b is not None and (b.dtype != torch.float32 or not b.is_contiguous()):
                    b = b.detach().float().contiguous()
                run(batch, x.data_ptr(), 0 if b is None else b.data_ptr(), y.data_ptr())
                return y
            return depthwise
        if not (use_decoded_conv(em, batch * math.prod(out_size)) and all(a == b for a, b in pads)):
            return None
        per_row = self.in_channels // G * math.prod(self.kernel_size)
        if out_c * per_row > min(_decoded.BLOCK, _decoded.SCRATCH_MAX):
            return None  # several blocks: decoded_conv
        runtime.check_decoded_size(em.decoded_nbytes, em._what())  # as decode()
        conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        w_shape, m_shape = tuple(em.shape), tuple(em.matrix_shape)
        stride, padding, dilation = self.stride, tuple(a for a, _ in pads), self.dilation

        n_w = math.prod(w_shape)

        def decoded(mod, x):
            w = _decoded.scratch(n_w).view(w_shape)
            em._c_decode(w.numpy().reshape(m_shape))
            return conv(x, w, mod.bias, stride, padding, dilation, G)
        return decoded

    def forward(self, x):
        nd = self._nd
        name = type(self).__name__
        if (x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == nd + 2
                and not (x.requires_grad and torch.is_grad_enabled()) and not torch.jit.is_tracing()):
            plan = self._plan(x)
            if plan is not None:
                return plan(self, x)
        unbatched = x.dim() == nd + 1
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != nd + 2 or x.shape[1] != self.in_channels:
            raise ShapeError(f"{name}: expected input (batch, {self.in_channels}, <{nd} spatial dims>), "
                             f"got {tuple(x.shape)}")

        biased = []  # set when op already added the bias
        def op(t):  # noqa: E306
            t = t.float() if t.dtype != torch.float32 else t
            t = t.cpu() if t.device.type != "cpu" else t
            em = self.encoded
            # per spatial dim in order (self._pad is in F.pad order, last dim first), when symmetric
            pads = self._pad[::-2] if self._pad[0::2] == self._pad[1::2] else None
            if pads is not None and self.padding_mode == "zeros":
                out_size = self._out_size([s + 2 * p for s, p in zip(t.shape[2:], pads)])
                if all(s > 0 for s in out_size) and use_decoded_conv(em, t.shape[0] * math.prod(out_size)):
                    biased.append(True)  # torch pads with zeros and adds the bias itself
                    return decoded_conv(self, t, pads, self.bias)
            if any(self._pad):
                mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
                t = F.pad(t, self._pad, mode=mode)
            out_size = self._out_size(t.shape[2:])
            if any(s <= 0 for s in out_size):
                raise ShapeError(f"{name}: input {tuple(x.shape)} is smaller than the (dilated) kernel")
            if use_decoded_conv(em, t.shape[0] * math.prod(out_size)):
                return decoded_conv(self, t, 0, None)
            if self.groups > 1 and self.groups == self.in_channels and hasattr(em, "conv_depthwise"):
                # depthwise: straight from the input
                x4 = t if nd == 2 else t.unsqueeze(2)
                one = (1,) if nd == 1 else ()
                y = em.conv_depthwise(_as_f32_numpy(x4), one + self.kernel_size, one + self.stride,
                                                one + self.dilation)
                return torch.from_numpy(y).view(t.shape[0], self.out_channels, *out_size)
            batch, n_pos, G = t.shape[0], math.prod(out_size), self.groups
            per_in = self.in_channels // G * math.prod(self.kernel_size)
            per_out = self.out_channels // G
            step = min(batch, max(1, _IM2COL_BYTES // max(1, 4 * G * per_in * n_pos)))
            # One im2col buffer, reused by every slice of the batch (allocation churn of big
            # temporaries is what drives the RSS up), laid out (group, sample, position, row)
            # so that each group's rows are one contiguous (n*positions, in/groups*K) matrix.
            buf = torch.empty((G, step, *out_size, self.in_channels // G, *self.kernel_size))
            result = torch.empty((batch, self.out_channels, n_pos))
            perm = (1, 0) + tuple(range(3, 3 + nd)) + (2,) + tuple(range(3 + nd, 3 + 2 * nd))
            for i in range(0, batch, step):
                v = self._patches(t[i:i + step])  # (n, C, *out, *k), a view
                n = v.shape[0]
                cols = buf[:, :n]
                cols.copy_(v.unflatten(1, (G, -1)).permute(perm))  # the only copy of the input
                if G == 1:
                    y = _matmul(self.encoded, cols[0].reshape(n * n_pos, per_in)).view(1, n, n_pos, per_out)
                elif hasattr(em, "matmul_grouped"):  # one C call for every group: (G, n*pos, in) -> (G, n*pos, out)
                    y = torch.from_numpy(em.matmul_grouped(
                        _as_f32_numpy(cols.reshape(G, n * n_pos, per_in)), G)).view(G, n, n_pos, per_out)
                else:  # a wrapper without grouped products: each group's rows, decoded
                    y = torch.stack([cols[g].reshape(n * n_pos, per_in) @ torch.from_numpy(
                        em.decode_rows(np.arange(g * per_out, (g + 1) * per_out)).reshape(per_out, per_in)).T
                        for g in range(G)]).view(G, n, n_pos, per_out)
                result[i:i + n].view(n, G, per_out, n_pos).copy_(y.permute(1, 0, 3, 2))
            return result.view(batch, self.out_channels, *out_size)

        out = self._run(x, op)
        if biased:
            return out.squeeze(0) if unbatched else out
        return self._conv_output(out, nd, unbatched)

    def decompress(self):
        m = self._dense(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                        padding=self.padding, dilation=self.dilation, groups=self.groups,
                        bias=self.bias is not None, padding_mode=self.padding_mode)
        return self._filled(m)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}")
        if self.padding not in ((0,) * self._nd, "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.bias is None:
            s += ", bias=False"
        return s + ", " + _encoded_repr(self.encoded)


class CompressedConv1d(_CompressedConvNd):
    """nn.Conv1d computed from a compressed weight (im2col of the input, then EncodedMatrix.matmul).

    Example:
        >>> import numpy as np, torch, pydnnz
        >>> from pydnnz.torch import CompressedConv1d
        >>> w = np.array([[[1.0, -1.0]]], dtype=np.float32)      # (out=1, in=1, kernel=2)
        >>> conv = CompressedConv1d(pydnnz.encode(w))
        >>> conv(torch.tensor([[[1.0, 3.0, 2.0]]]))
        tensor([[[-2.,  1.]]])
    """

    _nd = 1
    _dense = nn.Conv1d


class CompressedConv2d(_CompressedConvNd):
    """nn.Conv2d computed from a compressed weight (im2col of the input, then EncodedMatrix.matmul).

    Example:
        >>> import numpy as np, torch, pydnnz
        >>> from pydnnz.torch import CompressedConv2d
        >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
        >>> conv = CompressedConv2d(pydnnz.encode(w), padding="same")
        >>> conv(torch.ones(1, 1, 2, 2))
        tensor([[[[4., 2.],
                  [2., 1.]]]])
    """

    _nd = 2
    _dense = nn.Conv2d


class CompressedEmbedding(_CompressedBase):
    """nn.Embedding whose table is a compressed matrix; looked-up rows are decoded exactly.

    Example:
        >>> import numpy as np, torch, pydnnz
        >>> from pydnnz.torch import CompressedEmbedding
        >>> table = np.array([[0.0, 0.0], [1.5, -2.0], [1.5, 0.0]], dtype=np.float32)
        >>> emb = CompressedEmbedding(pydnnz.encode(table), padding_idx=0)
        >>> emb(torch.tensor([[2, 1]]))
        tensor([[[ 1.5000,  0.0000],
                 [ 1.5000, -2.0000]]])
    """

    def __init__(self, encoded, padding_idx=None):
        super().__init__()
        _check_encoded(encoded, "CompressedEmbedding")
        if len(encoded.shape) != 2:
            raise ShapeError(f"CompressedEmbedding: the table must be 2-D, got shape {tuple(encoded.shape)}")
        self.encoded = encoded
        self.num_embeddings, self.embedding_dim = (int(s) for s in encoded.shape)
        if padding_idx is not None and padding_idx < 0:
            padding_idx += self.num_embeddings
        self.padding_idx = padding_idx

    @classmethod
    def from_module(cls, module: nn.Embedding, encoded, bias=None):
        if getattr(module, "max_norm", None) is not None:
            raise UnsupportedError(f"{module}: max_norm renormalizes the table in place at every lookup, "
                                   "which a compressed table cannot do")
        _check_fits(module, encoded)
        return cls(encoded, padding_idx=module.padding_idx)

    def _rows(self, ids):
        """Exact rows `ids` (unique, sorted int64 ndarray) of the table, float32 (len(ids), dim)."""
        return self.encoded.decode_rows(ids)

    @torch.compiler.disable
    def forward(self, ids):
        _state.check_not_tracing("CompressedEmbedding")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InvalidArgumentError(f"CompressedEmbedding: ids must be integers, got {ids.dtype}")
        flat = ids.detach().cpu().reshape(-1).to(torch.int64).numpy()
        if flat.size and (flat.min() < 0 or flat.max() >= self.num_embeddings):
            raise InvalidArgumentError(f"CompressedEmbedding: ids must be in [0, {self.num_embeddings}), "
                                       f"got values in [{flat.min()}, {flat.max()}]")
        if 0 < self.num_embeddings <= flat.size and hasattr(self.encoded, "_c_decode"):
            # a table no bigger than the lookup's output: decode it whole (one C call) and gather
            runtime.check_decoded_size(self.encoded.decoded_nbytes, self.encoded._what())
            table = torch.empty((self.num_embeddings, self.embedding_dim))
            if table.numel():
                self.encoded._c_decode(table.numpy())
            out = F.embedding(torch.from_numpy(flat).view(ids.shape), table)
            return out.to(ids.device) if ids.device.type != "cpu" else out
        if 0 < flat.size <= _EMBED_DIRECT_IDS:  # few ids: their rows (repeats included), no dedup
            rows = torch.from_numpy(self._rows(flat)).view(*ids.shape, self.embedding_dim)
            return rows.to(ids.device) if ids.device.type != "cpu" else rows
        if flat.size and self.num_embeddings <= max(4096, 4 * flat.size):  # a table no bigger than the ids
            present = np.zeros(self.num_embeddings, np.bool_)  # O(ids + table), no sort
            present[flat] = True
            uniq = np.flatnonzero(present)
            pos = np.empty(self.num_embeddings, np.int64)
            pos[uniq] = np.arange(uniq.size)
            inv = pos[flat]
        else:
            uniq, inv = np.unique(flat, return_inverse=True)
        rows = torch.from_numpy(self._rows(uniq)) if uniq.size else torch.zeros((0, self.embedding_dim))
        out = F.embedding(torch.from_numpy(inv.reshape(ids.shape)), rows)
        return out.to(ids.device) if ids.device.type != "cpu" else out

    def decompress(self):
        m = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)
        return self._filled(m)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s + ", " + _encoded_repr(self.encoded)


COMPRESSED_FOR = {nn.Linear: CompressedLinear, nn.Conv1d: CompressedConv1d, nn.Conv2d: CompressedConv2d,
                  nn.Embedding: CompressedEmbedding}
