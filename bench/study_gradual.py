"""Gradual magnitude pruning of DeepDTA's dense head, then Pr-X quantization and codebook retraining.

An experiment beside the grid of bench/study.py (not yet part of it): the one-shot pruning of the
papers collapses DeepDTA at p >= 90 under our budgets, so here the dense kernels fc1-fc3 are
pruned gradually (cubic schedule to p over 70 % of the steps, Zhu & Gupta 2017; masked Adam),
per layer or with one global threshold (GLOBAL=1), the 512-weight output layer is quantized but
never pruned; the survivors are then quantized (unified codebook, k levels) and the codebook is
retrained with the summed gradient (bench/study_methods.finetune). psi is counted from the
encoded bytes (encoding="auto", rlham included).

    GLOBAL=1 python bench/study_gradual.py davis Pr-CWS 95 16 4000 500
    # args: model method p k gradual_steps codebook_steps; env LR, DROP (dropout), GLOBAL

Stage-1 weights are cached in $DNNZ_GRADUAL_CACHE (default /tmp) so several quantizers can reuse them.
Results measured so far are in bench/study_notes.md ("Gradual pruning").
"""
import sys, time, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent)); sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np, torch
import pydnnz
from study_families import FAMILIES
from study_methods import compress_type, finetune
torch.set_num_threads(1)
model, method, p, k, gsteps, qsteps = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
lr = float(os.environ.get("LR", "1e-3"))
GLOBAL = os.environ.get("GLOBAL") == "1"
DROP = float(os.environ.get("DROP", "0.1"))
fam = FAMILIES[model]()
base = fam.baseline
names = [n for n in fam.kernels["dense"] if n != "out.weight"]
# stage 1: gradual pruning on float weights
task = fam.finetune_task(base, "dense"); task.lr = lr
module = task.module; module.train(); module.m.dropout.p = DROP
named = dict(module.named_parameters())
params = [named[n] for n in task.trainable]
opt = torch.optim.Adam(params, lr=lr)
rng = np.random.default_rng(0)
masks = {n: torch.ones_like(named["m." + n]) for n in names}
S = gsteps; ramp = int(0.7 * S); every = max(1, ramp // 30)
t = time.time()
cache = os.environ.get("DNNZ_GRADUAL_CACHE", "/tmp") + f"/stage1-{model}-{p:g}-{S}-{int(GLOBAL)}-{lr:g}-{DROP:g}.npz"
cached = os.path.exists(cache)
if cached:   # stage 1 already done for these arguments: skip its loop, reuse its weights
    S = 0
for step in range(S):
    if step % every == 0 and step <= ramp:
        frac = p / 100 * (1 - (1 - min(step + every, ramp) / ramp) ** 3)
        with torch.no_grad():
            if GLOBAL:
                allw = torch.cat([named["m." + n].abs().flatten() for n in names])
                kg = int(round(frac * allw.numel()))
                gthr = allw.kthvalue(max(kg, 1)).values
            for n in names:
                w = named["m." + n]
                kk = int(round(frac * w.numel()))
                if GLOBAL and kk:
                    masks[n] = (w.abs() > gthr).float()
                elif kk:
                    thr = w.abs().flatten().kthvalue(kk).values
                    masks[n] = (w.abs() > thr).float()
                w.mul_(masks[n])
    for g in opt.param_groups: g["lr"] = lr * (1 - step / S) if step > ramp else lr
    inputs, target = task.sample(step, rng)
    loss = task.loss(module(*inputs), target)
    opt.zero_grad(); loss.backward()
    for n in names: named["m." + n].grad.mul_(masks[n])
    opt.step()
    with torch.no_grad():
        for n in names: named["m." + n].mul_(masks[n])
module.eval()
state = {**base, **{k_[2:]: v.detach().numpy().copy() for k_, v in named.items()}}
if cached:
    with np.load(cache) as z:
        state = {**base, **{k_: z[k_] for k_ in z.files}}
else:
    np.savez(cache, **{k_[2:]: v.detach().numpy() for k_, v in named.items()})
print("gradual", gsteps, time.time() - t, "s", fam.evaluate(state), {n: float((state[n]==0).mean()) for n in names}, flush=True)
if method == "Pr":
    sys.exit()
layers = compress_type(method, {n: state[n] for n in names}, p=p, k=k, seed=0, group="dense", prune_scope="global" if GLOBAL else "layer")
layers.update(compress_type(method.split("-")[1], {"out.weight": state["out.weight"]}, k=k, seed=0, group="other"))
state = {**state, **{n: st.dense() for n, st in layers.items()}}
print("quantized", fam.evaluate(state), flush=True)
task = fam.finetune_task(state, "dense")
state, layers, losses = finetune(task, state, layers, qsteps, seed=1, key=fam.module_key)
state = {**state, **{n: st.dense() for n, st in layers.items()}}
print("ft", fam.evaluate(state), flush=True)
tot = ent = 0
for n, st in layers.items():
    e = pydnnz.encode(st.to_encodable(), encoding="auto"); tot += e.nbytes; ent += st.indices.size
    print(n, e.encoding, e.nbytes)
print("psi", tot / (4 * ent))
