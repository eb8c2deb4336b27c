"""The study harness (python -m bench.study): the papers' ψ formulas, and the --smoke path end to end."""
import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

from bench import study_psi  # noqa: E402


def test_huffman_lengths_are_optimal():
    # counts 1, 1, 2, 4: the optimal code has lengths 3, 3, 2, 1 (cost 1·3 + 1·3 + 2·2 + 4·1 = 14)
    lengths = study_psi.huffman_lengths([1, 1, 2, 4])
    assert lengths.tolist() == [3, 3, 2, 1]
    assert study_psi.huffman_lengths([7]).tolist() == [0]
    # Kraft equality for a random alphabet
    counts = np.random.default_rng(0).integers(1, 1000, 300)
    lengths = study_psi.huffman_lengths(counts)
    assert math.isclose(float(np.sum(2.0 ** -lengths)), 1.0)


def test_ham_of_a_binary_matrix_is_one_bit_per_entry_plus_dictionary():
    rng = np.random.default_rng(1)
    w = np.where(rng.random((512, 1024)) < 0.5, -0.1, 0.1).astype(np.float32)
    b = study_psi.ham_bytes([w])
    assert b == 2 * (1 + 13) + 8 * math.ceil(w.size / 64)
    assert study_psi.paper_psi([w], "quantized")[0] == pytest.approx(1 / 32, rel=1e-3)


def test_sham_counts_indices_counts_and_nonzero_codes():
    w = np.zeros((4, 300), np.float32)      # fan-in 300 -> 2-byte indices
    w[0, 0] = 1.0
    w[3, 299] = 2.0
    # 2 symbols of 1 bit -> 2 bits -> one 8-byte word; 2 bytes × (4 columns-as-outputs + 2 non-zeros)
    assert study_psi.sham_bytes([w]) == 2 * (1 + 13) + 8 + 2 * (4 + 2)


def test_im_slr_and_csc_formulas():
    w = np.repeat(np.arange(16, dtype=np.float32), 64).reshape(32, 32)
    assert study_psi.im_bytes([w]) == (32 * 16 + 4 * 1024) / 8
    assert study_psi.slr_bytes([(1024, 192)], 128) == (192 * 128 + 128 + 128 * 1024) * 4
    assert study_psi.paper_psi([np.zeros((1024, 192))], "lowrank", q=128)[0] == pytest.approx(0.7923, abs=1e-4)
    p = np.zeros((10, 10), np.float32)
    p[0, :5] = 1
    assert study_psi.csc_bytes([p]) == 4 * (2 * 5 + 10 + 1)


def _study_available():
    import pydnnz

    return (importlib.util.find_spec("pydnnz.compress") is not None and hasattr(pydnnz, "encode")
            and hasattr(pydnnz, "save_file") and importlib.util.find_spec("torch") is not None)


@pytest.mark.parametrize("method", ["Pr", "CWS", "PWS", "UQ", "ECSQ", "Pr-CWS", "Pr-PWS", "Pr-UQ", "Pr-ECSQ", "SLR"])
def test_every_method_goes_through_a_dnnz_file_exactly(method, tmp_path):
    """compress_type → the study's encodable form → .dnnz file → decode: what was compressed."""
    if not _study_available():
        pytest.skip("the study needs pydnnz.compress, pydnnz.encode, pydnnz.save_file and torch")
    import pydnnz
    from bench import study
    from bench.study_methods import compress_type

    rng = np.random.default_rng(0)
    weights = {"a.weight": rng.normal(0, 0.05, (48, 40)).astype(np.float32),
               "b.weight": rng.normal(0, 0.05, (8, 48)).astype(np.float32)}
    layers = compress_type(method, weights, p=90, k=8, q=4, seed=0, group="dense")
    state = dict(weights, **{"a.bias": np.zeros(48, np.float32)})
    path = tmp_path / "m.dnnz"
    pydnnz.save_file(study._encode_all(state, layers), str(path))
    loaded = pydnnz.load_file(str(path))
    np.testing.assert_array_equal(np.asarray(loaded["a.bias"]), state["a.bias"])
    for name, st in layers.items():
        if st.kind == "lowrank":
            dec = loaded[name + ".lr_u"].decode() @ loaded[name + ".lr_v"].decode()
            np.testing.assert_allclose(dec, st.dense(), atol=1e-6)
            assert np.linalg.matrix_rank(dec) <= 4
            continue
        np.testing.assert_array_equal(loaded[name].decode(), st.dense())
        distinct = np.unique(st.dense())
        if method == "Pr":
            assert np.mean(st.dense() == 0) == pytest.approx(0.9, abs=0.01)
        elif method.startswith("Pr-"):
            assert 0.0 in distinct and len(distinct) <= 9
        else:
            assert len(distinct) <= 8
    if layers["a.weight"].kind == "quantized":   # one unified codebook for the layer type
        assert layers["a.weight"].codebook is layers["b.weight"].codebook


def test_smoke_grid_end_to_end(shared_dir, tmp_path):
    if not _study_available():
        pytest.skip("the study needs pydnnz.compress, pydnnz.encode, pydnnz.save_file and torch")
    env = dict(os.environ, DNNZ_SHARED=str(shared_dir))
    proc = subprocess.run([sys.executable, "-m", "bench.study", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert not [r["error"] for r in rows if r["error"]]
    for r in rows:
        psi = float(r["psi"])
        assert 0 < psi < 1.2, r
        assert r["exact"] == "1", r                       # the file decodes to what was compressed
        assert float(r["mse"]) > 0 and 0.5 < float(r["ci"]) <= 1
        assert r["encodings"], r
        assert float(r["time_ratio"]) > 0
        assert float(r["torch_check"]) < 1e-3, r   # pydnnz.torch.load_model + forward, compressed layers
    scopes = {r["scope"] for r in rows}
    assert scopes == {"dense", "conv", "both"}
    # pruning 90% then 16 levels must store the dense kernels in far less than float32
    pr = next(r for r in rows if r["method"] == "Pr-CWS" and r["ft"] == "0")
    assert float(pr["psi_dense"]) < 0.2
    gpr = next(r for r in rows if r["method"] == "GPr-UQ")   # gradual pruning, then Pr-UQ
    assert gpr["config"] == "90-16" and float(gpr["psi_dense"]) < 0.2
    report = (tmp_path / "study.md").read_text()
    assert "Table II" in report and "Table III" in report and "Recommendations" in report
    assert (tmp_path / "pareto_deepdta-davis.png").stat().st_size > 1000
    assert (tmp_path / "recommendations.md").exists()
    # resumable: a second pass finds every run done
    proc = subprocess.run([sys.executable, "-m", "bench.study", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "0 to run now" in proc.stdout, proc.stdout + proc.stderr


def test_gradual_prune_reaches_p_globally_and_keeps_pruned_weights_at_zero():
    """study_methods.gradual_prune (the GPr protocol): exact global sparsity on the hidden kernels,
    masked updates, the other parameters trained, and the loss still goes down."""
    torch = pytest.importorskip("torch")
    from bench.study_methods import gradual_prune

    class Task:
        pass

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 1))
    module = torch.nn.Module()
    module.m = net
    module.forward = lambda x: net(x)
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(512, 20)).astype(np.float32))
    y = x[:, :3].sum(1, keepdim=True)
    task = Task()
    task.module, task.lr, task.optimizer, task.loss = module, 1e-2, "adam", torch.nn.functional.mse_loss
    task.trainable = [f"m.{k}" for k in state]

    def sample(step, rng_):
        idx = rng_.integers(0, 512, 64)
        return (x[idx],), y[idx]

    task.sample = sample
    hidden = ["0.weight", "2.weight"]
    with torch.no_grad():
        loss_before = float(torch.nn.functional.mse_loss(net(x), y))
    new = gradual_prune(task, state, hidden, 75, steps=300, scope="global", seed=0, key=lambda n: f"m.{n}")
    zeros = sum(int((new[n] == 0).sum()) for n in hidden)
    total = sum(new[n].size for n in hidden)
    assert zeros == round(0.75 * total)
    assert not any(np.signbit(new[n][new[n] == 0]).any() for n in hidden)   # +0.0, never -0.0
    assert (new["0.weight"] == 0).mean() != (new["2.weight"] == 0).mean()   # one threshold, not per layer
    assert (new["4.weight"] != 0).all()                                       # the output layer: never pruned
    assert not np.array_equal(new["4.weight"], state["4.weight"])             # but trained
    with torch.no_grad():
        assert float(torch.nn.functional.mse_loss(net(x), y)) < loss_before   # trained while pruning
    per_layer = gradual_prune(task, new, hidden, 50, steps=0, scope="layer", key=lambda n: f"m.{n}")
    for n in hidden:
        assert (per_layer[n] == 0).mean() == pytest.approx(max(0.5, (new[n] == 0).mean()), abs=1e-3)
    with pytest.raises(ValueError, match="scope"):
        gradual_prune(task, state, hidden, 50, steps=0, scope="row")
