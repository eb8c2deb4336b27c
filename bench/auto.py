"""auto_compress against the study's hand-picked rows and the peers' no-loss points (issue 19).

    python -m bench.auto [--models davis kiba] [--budget 0.003] [--time-limit S] [--data-free 0.002 0.01]

For each DeepDTA model: pydnnz.torch.auto_compress with the test MSE as the metric (absolute budget:
MSE may grow by --budget over the baseline), the data-free choice (`dnnz compress --auto`) at a
few weight-space budgets measured with the same metric, the study's best rows without retraining
and its best no-loss row overall (bench/results/study.csv), and the peers' no-loss points measured
in issue 19 (NNCodec 2.1.3, GGUF Q3_K; DAVIS only). ψ is the whole file (file bytes / float32
bytes of every parameter) and, for the study's comparison, the dense layers' ψ.

Writes bench/results/auto.md (table), auto.jsonl (rows), auto_recipe_<model>.json (the recipe,
replayable with compress_model / `dnnz compress --recipe`) and pareto_auto_<model>.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/auto.py` as well as `python -m bench.auto`
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SHARED = Path(os.environ.get("DNNZ_SHARED", ROOT.parent.parent / "shared"))
if not (SHARED / "models").is_dir():
    SHARED = Path("/work/shared")

# Peers' no-loss points on DeepDTA DAVIS without retraining (issue 19's table, measured through
# the same file-size and test-MSE protocol).
PEERS = {"davis": [("NNCodec 2.1.3 (uniform + DeepCABAC)", 0.0789, 0.2342),
                   ("GGUF Q3_K (llama.cpp)", 0.1177, 0.2323)]}
TARGET_PSI = {"davis": 0.060, "kiba": 0.060}
TARGET_MSE = {"davis": 0.2357, "kiba": 0.1683}


def _file_psi(model, f32):
    import pydnnz.torch as pt

    fd, path = tempfile.mkstemp(suffix=".dnnz")
    os.close(fd)
    try:
        pt.save_model(model, path)
        size = os.path.getsize(path)
    finally:
        os.unlink(path)
    return size, size / f32


def _dense_psi(model):
    stats = json.loads(model.dnnz_metadata["pydnnz.summary"])
    return stats.get("dense", {}).get("psi")


def study_rows(name):
    path = RESULTS / "study.csv"
    if not path.is_file():
        return []
    rows = [r for r in csv.DictReader(path.open()) if r["model"] == name and not r["error"] and r["file_ratio"]]
    out = []
    limit = TARGET_MSE.get(name)
    within = [r for r in rows if r["ft"] == "0" and float(r["mse"]) <= limit]
    if within:
        r = min(within, key=lambda r: float(r["file_ratio"]))
        out.append({"system": f"study, best without retraining ({r['key']})", "psi_file": float(r["file_ratio"]),
                    "psi_dense": float(r["psi_dense"]) if r["psi_dense"] else None, "metric": float(r["mse"]),
                    "kind": "study"})
    noloss = [r for r in rows if r["no_loss"] == "1"]
    if noloss:
        r = min(noloss, key=lambda r: float(r["psi_dense"] or r["psi"]))
        out.append({"system": f"study, best no-loss with retraining ({r['key']})", "psi_file": float(r["file_ratio"]),
                    "psi_dense": float(r["psi_dense"]) if r["psi_dense"] else None, "metric": float(r["mse"]),
                    "kind": "study"})
    return out, rows


def run_model(name, budget, time_limit, data_free_budgets, threads):
    import torch

    import pydnnz.torch as pt
    from pydnnz.compress.allocate import data_free_lossy
    from pydnnz.examples import deepdta as dd

    torch.set_num_threads(threads)
    model = dd.load_model(SHARED / "models" / f"deepdta_{name}.safetensors")
    data = dd.load_dataset(SHARED / "data" / "deepdta" / name)

    def evaluate(m):
        return dd.mse(data.y, dd.predict(m, data))

    f32 = 4 * sum(p.numel() for p in model.parameters())
    rows = []
    t = time.perf_counter()
    small, report = pt.auto_compress(model, evaluate, budget, time_limit=time_limit, progress=None)
    wall = time.perf_counter() - t
    report.save(RESULTS / f"auto_recipe_{name}.json")
    report.save_report(RESULTS / f"auto_report_{name}.json")
    replay = pt.compress_model(model, json.loads((RESULTS / f"auto_recipe_{name}.json").read_text()))
    same = all(torch.equal(a, b) for a, b in zip(pt.decompress_model(small).state_dict().values(),
                                                   pt.decompress_model(replay).state_dict().values()))
    rows.append({"system": "pydnnz auto_compress (metric)", "psi_file": report.psi, "psi_dense": _dense_psi(small),
                 "metric": report.metric, "kind": "auto", "seconds": round(wall, 1),
                 "evaluations": report.evaluations, "hypothesis": report.hypothesis, "replays_bit_exact": same,
                 "phases": report.phases})
    for b in data_free_budgets:
        t = time.perf_counter()
        weights = {f"{n}.weight": m.weight.detach().numpy() for n, m in model.named_modules()
                   if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding))}
        _, rules, err = data_free_lossy(weights, b)
        dfm = pt.compress_model(model, rules)
        size, psi = _file_psi(dfm, f32)
        rows.append({"system": f"pydnnz data-free --auto --budget {b:g}", "psi_file": psi,
                     "psi_dense": _dense_psi(dfm), "metric": evaluate(dfm), "kind": "data-free",
                     "seconds": round(time.perf_counter() - t, 1)})
    for label, psi, mse in PEERS.get(name, []):
        rows.append({"system": label, "psi_file": psi, "psi_dense": None, "metric": mse, "kind": "peer"})
    srows, all_rows = study_rows(name)
    rows.extend(srows)
    return rows, report, all_rows


def plot(name, rows, study, report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [(float(r["file_ratio"]), float(r["mse"])) for r in study if r["ft"] == "0"]
    if pts:
        x, y = zip(*pts)
        ax.scatter(x, y, s=10, c="0.7", label="study rows, no retraining")
    marks = {"auto": ("*", "tab:red", 220), "data-free": ("D", "tab:orange", 60), "peer": ("s", "tab:blue", 70),
             "study": ("^", "tab:green", 70)}
    for r in rows:
        m, c, s = marks[r["kind"]]
        ax.scatter([r["psi_file"]], [r["metric"]], marker=m, c=c, s=s, label=r["system"], zorder=3)
    ax.axhline(report.baseline, color="k", lw=0.8, ls=":", label=f"baseline {report.baseline:.4f}")
    ax.axhline(report.limit, color="tab:red", lw=0.8, ls="--", label=f"budget {report.limit:.4f}")
    if name in TARGET_PSI:
        ax.axvline(TARGET_PSI[name], color="tab:red", lw=0.8, ls="-.", label=f"target ψ {TARGET_PSI[name]}")
    ax.set_xscale("log")
    ax.set_xlabel("ψ of the whole file (file bytes / float32 bytes)")
    ax.set_ylabel("test MSE")
    top = max(report.limit + 4 * (report.limit - report.baseline), max(r["metric"] for r in rows) * 1.01)
    ax.set_ylim(min(report.baseline, min(r["metric"] for r in rows)) - 0.005, min(top, report.baseline * 1.3))
    ax.set_title(f"DeepDTA {name.upper()}: auto_compress vs study and peers")
    ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["davis", "kiba"], choices=["davis", "kiba"])
    ap.add_argument("--budget", type=float, default=0.003, help="allowed MSE increase (default 0.003)")
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--data-free", type=float, nargs="*", default=[0.002, 0.01])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = ["# auto_compress (issue 19)", "",
             f"Load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
             "(the machine is shared; times are wall clock under that load).", ""]
    out = []
    for name in args.models:
        rows, report, study = run_model(name, args.budget, args.time_limit, args.data_free, args.threads)
        plot(name, rows, study, report, RESULTS / f"pareto_auto_{name}.png")
        lines += [f"## DeepDTA {name.upper()} (baseline MSE {report.baseline:.4f}, budget {report.limit:.4f})", "",
                  "| system | ψ whole file | ψ dense layers | test MSE | within budget | time |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            ok = r["metric"] <= report.limit + 1e-12
            dens = "" if r.get("psi_dense") is None else f"{r['psi_dense']:.4f}"
            tm = f"{r['seconds']:.0f} s" if "seconds" in r else ""
            lines.append(f"| {r['system']} | {r['psi_file']:.4f} | {dens} | {r['metric']:.4f} | "
                         f"{'yes' if ok else 'no'} | {tm} |")
        a = rows[0]
        met = a["psi_file"] <= TARGET_PSI[name] and a["metric"] <= TARGET_MSE[name]
        lines += ["", f"Target ψ ≤ {TARGET_PSI[name]} at MSE ≤ {TARGET_MSE[name]}: "
                  f"{'MET' if met else 'NOT MET'} (auto: ψ {a['psi_file']:.4f}, MSE {a['metric']:.4f}, "
                  f"{a['seconds']:.0f} s, {a['evaluations']} metric evaluations, sensitivities "
                  f"'{a['hypothesis']}', recipe replays bit-exact: {a['replays_bit_exact']}).",
                  f"Phases (s): {a['phases']}", ""]
        for r in rows:
            out.append({"model": name, **r})
        print("\n".join(lines[-len(rows) - 8:]), flush=True)
    (RESULTS / "auto.md").write_text("\n".join(lines) + "\n")
    with (RESULTS / "auto.jsonl").open("w") as f:
        for r in out:
            f.write(json.dumps(r, default=float) + "\n")
    print(f"wrote {RESULTS / 'auto.md'}")


if __name__ == "__main__":
    main()
