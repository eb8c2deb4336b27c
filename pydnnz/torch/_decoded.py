"""Convolutions of compressed layers through torch on the weight decoded a bounded block at a time.

A convolution whose weight meets many input windows (batch x output positions >= MIN_WINDOWS)
decodes the weight exactly (EncodedMatrix.decode_rows, in C) a block of output channels (whole
groups) of at most BLOCK floats at a time and lets torch convolve with it: the decode costs about
as much as a few windows, and torch's convolution beats im2col + the small-matrix C product by
2-6x on such layers (MobileNetV2's 1x1 and depthwise convs at 112x112). Nothing decoded is kept.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

MIN_WINDOWS = 32  # batch x output positions from which a conv runs here
BLOCK = 1 << 18   # floats of decoded weight held at once (1 MiB)


def use_decoded_conv(em, windows):
    """Whether a conv of weight `em` over `windows` input windows runs here."""
    return windows >= MIN_WINDOWS and hasattr(em, "decode_rows")


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
    outs = [conv(x, torch.from_numpy(em.decode_rows(np.arange(o0, o1))),
                 None if bias is None else bias[o0:o1].float(), self.stride, padding, self.dilation, g)
            for o0, o1, x, g in blocks]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)
