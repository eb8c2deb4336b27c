"""Convolutions of compressed layers through torch on the weight decoded a bounded block at a time.

A convolution whose weight meets many input windows (batch x output positions >= MIN_WINDOWS)
decodes the weight exactly (EncodedMatrix.decode_rows, in C) a block of output channels (whole
groups) of at most BLOCK floats at a time and lets torch convolve with it: the decode costs about
as much as a few windows, and torch's convolution beats im2col + the small-matrix C product by
2-6x on such layers (MobileNetV2's 1x1 and depthwise convs at 112x112). Nothing decoded is kept.
Linear layers do the same from MIN_LINEAR_ROWS input rows (decoded_linear). A single block is
decoded into a per-thread buffer (scratch) reused call after call: no allocation, page faults or
cold cache lines per layer; the buffer grows to the largest single block asked for.
"""
import math
import threading

import numpy as np
import torch
import torch.nn.functional as F

from .. import runtime

MIN_WINDOWS = 32  # batch x output positions from which a conv runs here
MIN_LINEAR_ROWS = 128  # input rows from which a linear layer runs here (below, the C kernels are
# about as fast: they decode each tile once per call and reuse it for the whole batch; at 128 rows
# BERT's 384x384 and 384x1536 layers ran 1.05-1.13x dense decoded, 1.18-1.24x in the C kernel)
BLOCK = 1 << 19   # floats of decoded conv weight held at once (2 MiB)
LINEAR_BLOCK = 1 << 22  # floats of decoded linear weight held at once (16 MiB; with >= 256 input
# rows the activations are of that order, and splitting a GEMM by output blocks cost 1.5x here)


_SCRATCH = threading.local()
SCRATCH_MAX = 1 << 20  # floats: the per-thread scratch never grows past this (4 MiB); bigger
# single blocks are allocated per call, as before


def scratch(n):
    """n floats of this thread's buffer for one decoded weight block, reused call after call (a
    fresh allocation per layer costs page faults and cold cache lines, and only one decoded block
    is alive at a time anyway). It grows to the largest block asked for, at most SCRATCH_MAX
    floats (callers allocate bigger blocks per call)."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.numel() < n:
        buf = _SCRATCH.buf = torch.empty(n)
    return buf[:n]


def _block(em, o0, o1):
    """Rows o0..o1-1 of em, exact float32, shaped (o1 - o0, *shape[1:]): the whole matrix through
    the encoding's decoder directly (no id checks: the per-layer cost of a small conv counts),
    else decode_rows."""
    rows = em.matrix_shape[0]
    if o0 == 0 and o1 == rows and hasattr(em, "_c_decode"):
        runtime.check_decoded_size(em.decoded_nbytes, em._what())  # as decode() and decode_rows()
        out = np.empty(em.matrix_shape, np.float32)
        if out.size:
            em._c_decode(out)
        return torch.from_numpy(out.reshape(tuple(em.shape)))
    return torch.from_numpy(em.decode_rows(np.arange(o0, o1)))


def use_decoded_conv(em, windows):
    """Whether a conv of weight `em` over `windows` input windows runs here (plain encodings only:
    a row-scaled weight runs its inner encoding's grouped/depthwise kernel, then the scales)."""
    return windows >= MIN_WINDOWS and hasattr(em, "_c_decode")


def decoded_conv(self, t, padding, bias):  # self: a _CompressedConvNd
    """The convolution of t (zero `padding` each side, then `bias`) by torch, the weight
    decoded (exactly, from its own rows: decode_rows) a block of output channels (whole groups)
    at a time, at most BLOCK floats (one group at least): bounded temporary
    memory whatever the layer size."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[self._nd - 1]
    G, em = self.groups, self.encoded
    per_out, per_in = self.out_channels // G, self.in_channels // G
    per_row = per_in * math.prod(self.kernel_size)
    if G == 1:  # blocks of output channels
        ob = max(1, min(self.out_channels, BLOCK // max(1, per_row)))
        blocks = [(o0, min(self.out_channels, o0 + ob), t, 1) for o0 in range(0, self.out_channels, ob)]
    else:  # blocks of whole groups
        gb = max(1, min(G, BLOCK // max(1, per_out * per_row)))
        blocks = [(g0 * per_out, min(G, g0 + gb) * per_out, t[:, g0 * per_in:min(G, g0 + gb) * per_in],
                   min(G, g0 + gb) - g0) for g0 in range(0, G, gb)]
    outs = [conv(x, _block(em, o0, o1),
                 None if bias is None else bias[o0:o1].float(), self.stride, padding, self.dilation, g)
            for o0, o1, x, g in blocks]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def use_decoded_linear(em, rows):
    """Whether a linear layer of weight `em` over `rows` input rows runs here (plain encodings)."""
    return rows >= MIN_LINEAR_ROWS and hasattr(em, "_c_decode")


def decoded_linear(em, x2d, bias):
    """x2d @ W.T (+ bias) by torch, W decoded exactly a block of at most LINEAR_BLOCK floats (one
    row at least) at a time."""
    out, inn = em.matrix_shape
    ob = max(1, min(out, LINEAR_BLOCK // max(1, inn)))
    if ob == out and out * inn <= SCRATCH_MAX and hasattr(em, "_c_decode"):  # one block, into the scratch
        runtime.check_decoded_size(em.decoded_nbytes, em._what())
        w = scratch(out * inn).view(out, inn)
        if w.numel():
            em._c_decode(w.numpy())
        return F.linear(x2d, w, bias)
    if ob == out:
        return F.linear(x2d, _block(em, 0, out).reshape(out, inn), bias)
    y = torch.empty((x2d.shape[0], out), dtype=torch.float32)
    for o0 in range(0, out, ob):
        o1 = min(out, o0 + ob)
        w = _block(em, o0, o1).reshape(o1 - o0, inn)
        y[:, o0:o1] = F.linear(x2d, w, None if bias is None else bias[o0:o1])
    return y
