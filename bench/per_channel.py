"""Per-tensor vs per-channel quantization (recipe key "granularity"): agreement with the dense model.

    python -m bench.per_channel [--samples 256] [--fcpe PATH] [--resemblyzer PATH]

1. A depthwise-separable CNN (MobileNet-style conv/BN/ReLU blocks, 100 classes) whose conv rows
   have ranges spread over e^6 and batch norms calibrated on the input distribution (what a
   trained network with unfolded BNs looks like to a quantizer): top-1 agreement with the
   dense model and relative output error, CWS and UQ at k=32, per tensor vs per channel.
2. Real weights, when the wheels' files are found (see ../shared/reference/checkpoints.md):
   torchfcpe's depthwise convs (1024x1x31): per-row relative error of the quantized kernel
   (median and worst row); Resemblyzer's 3-layer LSTM speaker encoder run as CompressedLSTM:
   cosine of the speaker embeddings with the dense model's on random mel frames.
Sizes are the encoded bytes of the compressed weights (row scales included).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pydnnz.torch as pt  # noqa: E402
from pydnnz.compress import quantize  # noqa: E402

RECIPES = [(m, g) for m in ("cws", "uq") for g in ("tensor", "channel")]


def separable_cnn(seed=0, classes=100):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32, momentum=None), nn.ReLU()]
    ch = 32
    for out in (64, 128, 128):
        layers += [nn.Conv2d(ch, ch, 3, padding=1, groups=ch), nn.BatchNorm2d(ch, momentum=None), nn.ReLU(),
                   nn.Conv2d(ch, out, 1), nn.BatchNorm2d(out, momentum=None), nn.ReLU()]
        ch = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, classes)]
    m = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, nn.Conv2d):
                scale = torch.exp(torch.rand(layer.out_channels, generator=g) * 6 - 4)
                layer.weight.mul_(scale.reshape(-1, 1, 1, 1))
                layer.bias.mul_(scale)
        m.train()(torch.randn(256, 3, 32, 32, generator=g))
    return m.eval()


def nbytes(model):
    from pydnnz.torch._modules import _CompressedBase

    return sum(m.nbytes for m in model.modules() if isinstance(m, _CompressedBase))


def cnn_rows(samples):
    model = separable_cnn()
    x = torch.randn(samples, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    rows = []
    for method, g in RECIPES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            small = pt.compress_model(model, {"method": method, "k": 32, "granularity": g})
        with torch.no_grad():
            out = small(x)
        rows.append((f"{method} k=32 {g}", float((out.argmax(1) == ref.argmax(1)).float().mean()),
                     float((out - ref).norm() / ref.norm()), nbytes(small)))
    return rows


def find(pkg, rel, given):
    if given:
        return given if os.path.exists(given) else None
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), rel)
    return path if os.path.exists(path) else None


def fcpe_rows(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)["model"]
    dw = [v.numpy() for k, v in sd.items() if v.dim() == 3 and v.shape[1] == 1]
    rows = []
    for method, g in RECIPES:
        errs, size = [], 0
        for w in dw:
            q = quantize(w, method, 32, granularity=g)
            d = np.asarray(q)
            errs.append(np.linalg.norm((d - w).reshape(len(w), -1), axis=1) /
                        np.maximum(np.linalg.norm(w.reshape(len(w), -1), axis=1), 1e-30))
            import pydnnz
            size += pydnnz.encode(q).nbytes
        e = np.concatenate(errs)
        rows.append((f"{method} k=32 {g}", float(np.median(e)), float(e.max()), size))
    return len(dw), rows


class SpeakerEncoder(nn.Module):
    """Resemblyzer's VoiceEncoder architecture (3-layer LSTM 40->256, Linear 256->256, ReLU, L2 norm)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels):
        _, (h, _) = self.lstm(mels)
        e = torch.relu(self.linear(h[-1]))
        return e / e.norm(dim=1, keepdim=True)


def resemblyzer_rows(path, samples):
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    model = SpeakerEncoder()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
    model.eval()
    mels = torch.rand(samples, 160, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(mels)
    rows = []
    for method, g in RECIPES:
        small = pt.compress_model(model, {"method": method, "k": 32, "granularity": g})
        with torch.no_grad():
            cos = (small(mels) * ref).sum(1)
        rows.append((f"{method} k=32 {g}", float(cos.mean()), float(cos.min()), nbytes(small)))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--fcpe", help="torchfcpe/assets/fcpe_c_v001.pt (default: the installed wheel's)")
    ap.add_argument("--resemblyzer", help="resemblyzer/pretrained.pt (default: the installed wheel's)")
    args = ap.parse_args(argv)
    from bench._common import machine_text

    print(machine_text())
    print(f"depthwise-separable CNN (synthetic, BN, 100 classes), {args.samples} inputs")
    print(f"  {'recipe':<22} {'top-1 agree':>11} {'rel. error':>10} {'bytes':>8}")
    for name, agree, err, size in cnn_rows(args.samples):
        print(f"  {name:<22} {agree:>11.3f} {err:>10.4f} {size:>8}")

    path = find("torchfcpe", "assets/fcpe_c_v001.pt", args.fcpe)
    if path:
        n, rows = fcpe_rows(path)
        print(f"torchfcpe fcpe_c_v001: {n} depthwise convs (1024x1x31), per-row relative error of the kernel")
        print(f"  {'recipe':<22} {'median row':>11} {'worst row':>10} {'bytes':>8}")
        for name, med, worst, size in rows:
            print(f"  {name:<22} {med:>11.4f} {worst:>10.4f} {size:>8}")
    else:
        print("torchfcpe not found (pip install --no-deps torchfcpe==0.0.4, or --fcpe PATH): skipped")

    path = find("resemblyzer", "pretrained.pt", args.resemblyzer)
    if path:
        rows = resemblyzer_rows(path, min(args.samples, 64))
        print("Resemblyzer speaker encoder (3-layer LSTM run as CompressedLSTM): cosine with the dense embedding")
        print(f"  {'recipe':<22} {'mean cos':>11} {'min cos':>10} {'bytes':>8}")
        for name, mean, worst, size in rows:
            print(f"  {name:<22} {mean:>11.4f} {worst:>10.4f} {size:>8}")
    else:
        print("Resemblyzer not found (pip install --no-deps Resemblyzer==0.1.4, or --resemblyzer PATH): skipped")


if __name__ == "__main__":
    main()
