"""Whole models run from their .dnnz files vs torch dense: forward time, load time, peak memory.

    python -m bench.models [--quick] [--json] [--models mobilenetv2,bert6,deepdta]
                           [--encodings auto,im,smallest] [--repeats 3] [--threads 1]
    python -m bench.models --calibrate      # refit the encoding cost model (encodings/_speed.py)

Three architectures written from their public definitions (random weights: speed and memory do
not depend on the values, only on the encodings they lead to):

- MobileNetV2 (Sandler et al. 2018, width 1.0, 224x224, 1000 classes): depthwise 3x3 convs and
  1x1 convs in inverted residual blocks (BatchNorm left dense);
- a BERT-style encoder (Devlin et al. 2019 / the 6-layer "MiniLM" shape): 6 layers, hidden 384,
  12 heads, FFN 1536, vocabulary 30,522 (the word embedding is compressed), sequence 128;
- DeepDTA (Öztürk et al. 2018; pydnnz.examples.deepdta): SMILES length 85, protein length 1,200.

Every Linear / Conv / Embedding weight is quantized with `uq`, k = 32, then encoded with each
`--encodings` entry (a policy or an encoding name). The dense reference is the same quantized
model run by torch (so both compute on the same weights). Per model and encoding, measured in the
same run, interleaved, best of several calls, repeated `--repeats` times (the machine is shared:
ratios, median and range over the repeats):

- forward time at batch 1 and 32 of the model loaded from .dnnz (built under torch.device("meta"))
  over torch dense;
- load time of the .dnnz (pydnnz.torch.load_model into a meta-built model) over a safetensors load
  of the dense model (safetensors.torch.load_file + load_state_dict(assign=True) into a meta-built
  model);
- peak RSS of a fresh process (load + one batch-1 forward) over its RSS right after the imports,
  next to the file size; the dense model's activation peak is the dense process's peak minus its
  weight bytes.

Targets (issue 15): auto <= 1.3x dense, im <= 1.0x, load <= 2x safetensors, peak RSS over the
baseline <= file bytes + the dense activation peak + 20 %. The table says which are met.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pydnnz  # noqa: E402
import pydnnz.torch as pt  # noqa: E402

# ------------------------------------------------------------------------------------------------
# the architectures


def _make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = [ConvBNReLU(cin, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),  # depthwise
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 as in the paper's Table 2 (t, c, n, s) and torchvision's layout."""

    def __init__(self, num_classes=1000, width=1.0):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
        cin = _make_divisible(32 * width)
        self.last = _make_divisible(1280 * max(1.0, width))
        feats = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in cfg:
            cout = _make_divisible(c * width)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNReLU(cin, self.last, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last, num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, ffn)
        self.output = nn.Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, h, mask):
        b, s, d = h.shape

        def split(t):
            return t.view(b, s, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.query(h)), split(self.key(h)), split(self.value(h)),
                                           attn_mask=mask)
        h = self.attn_norm(h + self.attn_out(a.transpose(1, 2).reshape(b, s, d)))
        return self.out_norm(h + self.output(F.gelu(self.intermediate(h))))


class BertEncoder(nn.Module):
    """A BERT-style encoder (embeddings + post-LN transformer layers), sentence vector = [CLS]."""

    def __init__(self, vocab=30522, hidden=384, layers=6, heads=12, ffn=1536, max_pos=512):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        h = self.word_embeddings(ids) + self.position_embeddings(pos) + \
            self.token_type_embeddings(torch.zeros_like(ids))
        h = self.emb_norm(h)
        mask = (ids != 0)[:, None, None, :]
        for layer in self.layers:
            h = layer(h, mask)
        return torch.tanh(self.pooler(h[:, 0]))


def _deepdta():
    from pydnnz.examples import deepdta

    return deepdta.build_model()


MODELS = {
    # name: (builder, input maker (batch, rng) -> tuple of tensors)
    "mobilenetv2": (MobileNetV2, lambda b, g: (torch.randn(b, 3, 224, 224, generator=g),)),
    "bert6": (BertEncoder, lambda b, g: (torch.randint(1, 30522, (b, 128), generator=g),)),
    "deepdta": (_deepdta, lambda b, g: (torch.randint(1, 65, (b, 85), generator=g),
                                        torch.randint(1, 26, (b, 1200), generator=g))),
}
RECIPE = {"type": ["Linear", "Conv1d", "Conv2d", "Embedding"], "method": "uq", "k": 32}


# ------------------------------------------------------------------------------------------------
# measuring

def best_time(fn, min_runs=2, min_time=0.3):
    """Best of at least `min_runs` calls lasting `min_time` seconds together."""
    times, total = [], 0.0
    while len(times) < min_runs or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return min(times)


def build(name, seed=0):
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    return model.eval()


def meta_build(name):
    with torch.device("meta"):
        return MODELS[name][0]().eval()


def safetensors_load(path, name):
    from safetensors.torch import load_file

    model = meta_build(name)
    model.load_state_dict(load_file(str(path)), assign=True)
    return model.eval()


_RSS_CHILD = r"""
import json, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
import pydnnz
pydnnz.set_num_threads({threads})
from bench import models as M
def rss(field="VmRSS:"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
M.meta_build({name!r})  # lazy imports and the meta device's first use: not the model's cost
g = torch.Generator().manual_seed(1)
x = M.MODELS[{name!r}][1](1, g)
base = rss()
model = M.safetensors_load({path!r}, {name!r}) if {dense!r} else M.pt.load_model({path!r}, M.meta_build({name!r}))
loaded = rss()
with torch.inference_mode():
    model(*x)
print(json.dumps({{"base": base, "loaded": loaded - base, "peak": rss("VmHWM:") - base}}))
"""


def rss_child(name, path, dense, threads):
    code = _RSS_CHILD.format(root=str(ROOT), name=name, path=str(path), dense=dense, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def forward_ratios(dense, comp, inputs, repeats):
    """[comp time / dense time] per repeat, the two interleaved in each repeat."""
    out = []
    with torch.inference_mode():
        comp(*inputs)  # first call: lazy structs, page faults of the memory map
        dense(*inputs)
        for _ in range(repeats):
            td = best_time(lambda: dense(*inputs))
            tc = best_time(lambda: comp(*inputs))
            out.append((tc / td, td, tc))
    return out


def summarize(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_model(name, encodings, batches, repeats, threads, tmp, progress):
    g = torch.Generator().manual_seed(1)
    base = build(name)
    records = []
    comps = {enc: pt.compress_model(base, dict(RECIPE, encoding=enc), progress=False) for enc in encodings}
    dense = pt.decompress_model(next(iter(comps.values()))).eval()  # the same quantized weights
    from safetensors.torch import save_file

    st_path = Path(tmp) / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, str(st_path))
    dense_bytes = st_path.stat().st_size
    rss_dense = rss_child(name, st_path, True, threads)
    act_peak = max(0, rss_dense["peak"] - dense_bytes)
    inputs = {b: MODELS[name][1](b, g) for b in batches}
    for enc in encodings:
        path = Path(tmp) / f"{name}-{enc}.dnnz"
        pt.save_model(comps[enc], path)
        loaded = pt.load_model(path, meta_build(name))
        used = sorted({m.encoded.encoding for m in loaded.modules() if hasattr(m, "encoded")})
        with torch.inference_mode():
            for b in batches:
                assert torch.allclose(loaded(*inputs[b]), dense(*inputs[b]), rtol=1e-3, atol=1e-3), (name, enc, b)
        rec = {"model": name, "encoding": enc, "encodings_used": used, "file_bytes": path.stat().st_size,
               "dense_bytes": dense_bytes, "threads": threads}
        for b in batches:
            r = forward_ratios(dense, loaded, inputs[b], repeats)
            rec[f"fwd_b{b}"] = summarize([v[0] for v in r])
            rec[f"dense_ms_b{b}"] = 1e3 * statistics.median(v[1] for v in r)
        loads = []
        for _ in range(repeats):
            t_st = best_time(lambda: safetensors_load(st_path, name), min_runs=3, min_time=0.2)
            t_dz = best_time(lambda: pt.load_model(path, meta_build(name)), min_runs=3, min_time=0.2)
            loads.append(t_dz / t_st)
        rec["load"] = summarize(loads)
        rss = rss_child(name, path, False, threads)
        rec.update(rss_peak=rss["peak"], rss_loaded=rss["loaded"], dense_rss_peak=rss_dense["peak"],
                   dense_act_peak=act_peak, rss_limit=int(1.2 * (rec["file_bytes"] + act_peak)))
        records.append(rec)
        if progress:
            print(f"  {name} {enc}: " + ", ".join(f"b{b} {rec[f'fwd_b{b}']['median']:.2f}x" for b in batches) +
                  f", load {rec['load']['median']:.2f}x", file=sys.stderr, flush=True)
    return records


def targets(rec, batches):
    """{target: met?} for one record."""
    out = {}
    limit = 1.3 if rec["encoding"] == "auto" else 1.0 if rec["encoding"] == "im" else None
    if limit is not None:
        out[f"fwd <= {limit}x"] = all(rec[f"fwd_b{b}"]["median"] <= limit for b in batches)
    out["load <= 2x"] = rec["load"]["median"] <= 2.0
    out["rss <= limit"] = rec["rss_peak"] <= rec["rss_limit"]
    return out


def table(records, batches):
    head = ["model", "encoding", "layers in"] + [f"b{b} x dense" for b in batches] + \
        ["load x st", "file MB", "dense MB", "peak RSS MB", "limit MB", "targets"]
    rows = []
    for r in records:
        t = targets(r, batches)
        met = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in t.items())
        fmt = lambda s: f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"  # noqa: E731
        rows.append([r["model"], r["encoding"], "/".join(r["encodings_used"])] +
                    [fmt(r[f"fwd_b{b}"]) for b in batches] +
                    [fmt(r["load"]), f"{r['file_bytes'] / 1e6:.1f}", f"{r['dense_bytes'] / 1e6:.1f}",
                     f"{r['rss_peak'] / 1e6:.1f}", f"{r['rss_limit'] / 1e6:.1f}", met])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# calibration of the cost model behind encoding="auto"

def calibrate(shapes=((512, 512), (1024, 1024), (2048, 1024)), sparsities=(0.0, 0.5, 0.9, 0.99),
              ks=(4, 32, 256), seed=0):
    """Fit encodings/_speed.py's COST (a, b, c) per encoding: batch-1 matmul time over torch dense
    (one thread) times n ~ a * n + b * nnz + c * payload bits, relative least squares, a, b, c >= 0."""
    from scipy.optimize import nnls

    from pydnnz.encodings import MatrixInput, get_encoding
    from pydnnz.encodings._speed import im_extra

    pydnnz.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    rows = {}
    for (r, c) in shapes:
        for p in sparsities:
            for k in ks:
                cb = np.linspace(-3, 3, k).astype(np.float32)
                w = cb[np.clip(np.round((rng.standard_normal((r, c)) + 3) / 6 * (k - 1)), 0, k - 1).astype(int)]
                if p:
                    w[rng.random(w.shape) < p] = 0.0
                m = MatrixInput(w)
                n, nnz = r * c, int(np.count_nonzero(m.nonzero_mask))
                x = rng.standard_normal((1, c)).astype(np.float32)
                W, X = torch.from_numpy(w), torch.from_numpy(x)
                td = best_time(lambda: F.linear(X, W), min_runs=5, min_time=0.05)
                for name in pydnnz.encodings.encodings():
                    if not get_encoding(name).applicable(m):
                        continue
                    e = pydnnz.encode(m, name)
                    if im_extra(name, e.params.get("k"), e.params.get("bits")):
                        continue  # an im slow path: IM_SLOW_PATHS prices it, not the linear fit
                    t = best_time(lambda: e.matmul(x), min_runs=5, min_time=0.05)
                    rows.setdefault(name, []).append((n, nnz, 8 * e.nbytes, t / td * n))
    fit = {}
    for name, rs in rows.items():
        a = np.array([q[:3] for q in rs], float)
        b = np.array([q[3] for q in rs])
        wgt = 1 / np.maximum(b, 1e-9)
        coef, _ = nnls(a * wgt[:, None], b * wgt)
        err = np.abs(a @ coef / b - 1)
        fit[name] = {"cost": [round(float(v), 3) for v in coef], "median_rel_err": float(np.median(err)),
                     "max_rel_err": float(err.max())}
    return fit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--encodings", default="auto,im,smallest")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one repeat, batch 1 and 8")
    ap.add_argument("--json", action="store_true", help="print the records as JSON lines")
    ap.add_argument("--calibrate", action="store_true", help="refit the encoding cost model and exit")
    args = ap.parse_args(argv)
    if args.calibrate:
        for name, f in calibrate().items():
            print(f"    {name!r}: {tuple(f['cost'])},  # median error {100 * f['median_rel_err']:.0f} %, "
                  f"max {100 * f['max_rel_err']:.0f} %")
        return 0
    if args.quick:
        args.repeats, args.batches = 1, "1,8"
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    pydnnz.set_num_threads(args.threads)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            records += run_model(name, args.encodings.split(","), batches, args.repeats, args.threads, tmp,
                                 progress=True)
    if args.json:
        for r in records:
            print(json.dumps(r))
    print(f"threads={args.threads}, repeats={args.repeats}: median (min-max) of the ratios; "
          f"pydnnz {pydnnz.__version__}, torch {torch.__version__}, CPU path {pydnnz.runtime.cpu_path()}")
    print(table(records, batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
