"""auto_compress, the RD quantizer (rdq) and the allocation on small synthetic models."""
import json

import numpy as np
import pytest

from pydnnz import compress as C
from pydnnz.compress.allocate import candidate_table, choose
from pydnnz.compress.rdq import rdq
from pydnnz.errors import InvalidArgumentError

torch = pytest.importorskip("torch")
import pydnnz.torch as pt  # noqa: E402


def _w(shape=(48, 40), seed=0):
    return np.random.default_rng(seed).normal(0, 0.1, size=shape).astype(np.float32)


def test_rdq_plain_is_rounding_and_dead_zone_grows_with_rdo():
    w = _w()
    plain = np.asarray(rdq(w, step=0.03))
    np.testing.assert_array_equal(plain, (np.rint(w.astype(np.float64) / 0.03) * 0.03).astype(np.float32))
    zeros = [float(np.mean(np.asarray(rdq(w, step=0.1, rdo=r)) == 0)) for r in (0.0, 0.5, 2.0)]
    assert zeros[0] < zeros[1] < zeros[2]
    q = rdq(w, step=0.03, rdo=0.3)
    s = float(np.min(np.diff(q.codebook)))  # still a uniform grid (rare tail levels may go unused)
    assert np.allclose(q.codebook / s, np.rint(q.codebook / s), atol=1e-3)
    again = rdq(w, step=0.03, rdo=0.3)
    np.testing.assert_array_equal(q.indices, again.indices)
    np.testing.assert_array_equal(q.codebook, again.codebook)


def test_rdq_k_caps_levels_and_bad_arguments():
    w = _w()
    assert rdq(w, step=0.01, k=5).k <= 5
    with pytest.raises(InvalidArgumentError):
        rdq(w, step=-1.0)
    with pytest.raises(InvalidArgumentError):
        rdq(w, step=0.01, rdo=-0.5)
    with pytest.raises(InvalidArgumentError):
        rdq(w, step=1e-9)  # far more levels than an index can name
    with pytest.raises(InvalidArgumentError):
        C.quantize(w, "rdq", None)  # neither a step nor k


def test_candidate_sizes_are_real_and_choice_moves_with_lambda():
    w = {"a": _w(), "b": _w((16, 8, 3), 1)}
    table = candidate_table(w, steps=(0, 2, 4, 6), rdos=(0.0, 0.3), uq_ks=(16,))
    from pydnnz.encodings import encode
    for name, cands in table.items():
        for c in cands[1:]:
            if c.method == "rdq":
                q = C.quantize(w[name], "rdq", c.k, **c.options)
                assert encode(q, encoding=c.encoding).nbytes == c.nbytes
    small = choose(table, {"a": 1.0, "b": 1.0}, lam=1.0)
    big = choose(table, {"a": 1.0, "b": 1.0}, lam=1e-9)
    for n in w:
        assert table[n][small[n]].nbytes <= table[n][big[n]].nbytes
        assert table[n][big[n]].distortion <= table[n][small[n]].distortion


def _model_and_metric(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(24, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 3))
    x = torch.randn(300, 24)
    with torch.no_grad():
        y = model(x).argmax(1)

    def acc(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == y).double().mean())
    return model, acc


FAST = {"steps": (0, 2, 4, 6, 8, 10), "rdos": (0.0, 0.3), "uq_ks": (16,)}  # a small grid keeps tests fast


def _weights(m):
    return {k: v.detach().clone() for k, v in pt.decompress_model(m).state_dict().items()}


def test_auto_respects_budget_and_replays_bit_exact(tmp_path):
    model, acc = _model_and_metric()
    small, report = pt.auto_compress(model, acc, 0.02, higher_is_better=True, progress=False, **FAST)
    assert report.mode == "metric" and report.baseline == 1.0
    assert report.metric >= report.limit == pytest.approx(0.98) and report.met
    assert acc(small) == report.metric
    assert report.psi < 0.5 and report.file_bytes > 0
    path = tmp_path / "recipe.json"
    report.save(path)
    replay = pt.compress_model(model, json.loads(path.read_text()))
    a, b = _weights(small), _weights(replay)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    report.save_report(tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text())["recipe"] == report.recipe


def test_auto_deterministic_and_tighter_budget_costs_bytes():
    model, acc = _model_and_metric()
    r1 = pt.auto_compress(model, acc, 0.05, higher_is_better=True, progress=False, **FAST)[1]
    r2 = pt.auto_compress(model, acc, 0.05, higher_is_better=True, progress=False, **FAST)[1]
    assert r1.recipe == r2.recipe and r1.file_bytes == r2.file_bytes
    r0 = pt.auto_compress(model, acc, 0.0, higher_is_better=True, progress=False, **FAST)[1]
    assert r0.metric == 1.0 and r0.weight_bytes >= r1.weight_bytes


def test_auto_relative_budget_calibration_and_data_free():
    model, _ = _model_and_metric()
    x = torch.randn(64, 24)
    with torch.no_grad():
        y = model(x)
    mse = lambda m: float(torch.mean((m(x).detach() - y) ** 2)) + 1.0  # noqa: E731 (baseline 1.0)
    small, rep = pt.auto_compress(model, mse, "1%", calibration=[x[:32], x[32:]], progress=False, **FAST)
    assert rep.limit == pytest.approx(1.01) and rep.metric <= rep.limit
    small, rep = pt.auto_compress(model, None, 1e-3, calibration=[x], progress=False, **FAST)
    assert rep.mode == "calibration" and rep.metric <= 1e-3
    small, rep = pt.auto_compress(model, None, 1e-3, progress=False, **FAST)
    assert rep.mode == "data-free" and rep.metric is None and rep.met
    err = [float(np.sum((a.numpy().astype(np.float64) - b.numpy()) ** 2) / np.sum(b.numpy().astype(np.float64) ** 2))
           for (ka, a), (kb, b) in zip(_weights(small).items(), model.state_dict().items()) if ka.endswith("weight")]
    assert np.mean(err) <= 1e-3 + 1e-12


def test_auto_bad_arguments():
    model, acc = _model_and_metric()
    with pytest.raises(InvalidArgumentError):
        pt.auto_compress(model, acc, None)
    with pytest.raises(InvalidArgumentError):
        pt.auto_compress(model, acc, "lots")
    with pytest.raises(InvalidArgumentError):
        pt.auto_compress(model, acc, -1.0)
    with pytest.raises(InvalidArgumentError):
        pt.auto_compress(torch.nn.ReLU(), acc, 0.1)


def test_cli_auto_data_free(tmp_path):
    from safetensors.numpy import save_file

    from pydnnz import cli
    from pydnnz.container import safe_open

    rng = np.random.default_rng(3)
    tensors = {"fc.weight": rng.normal(0, 0.05, (64, 48)).astype(np.float32), "fc.bias": np.zeros(64, np.float32),
               "embed.weight": rng.normal(0, 1.0, (20, 16)).astype(np.float32)}
    src, dst = tmp_path / "m.safetensors", tmp_path / "m.dnnz"
    save_file(tensors, str(src))
    assert cli.main(["compress", str(src), "-o", str(dst), "--auto", "--budget", "0.01"]) == 0
    with safe_open(dst) as f:
        meta = json.loads(f.metadata()["pydnnz.recipe"])["auto"]
        errs = []
        for k in ("fc.weight", "embed.weight"):
            d = np.asarray(f.get(k).decode(), dtype=np.float64)
            errs.append(np.sum((d - tensors[k]) ** 2) / np.sum(tensors[k].astype(np.float64) ** 2))
        assert np.array_equal(np.asarray(f.get("fc.bias")), tensors["fc.bias"])
    assert np.mean(errs) <= 0.01 and meta["mean_relative_sq_error"] == pytest.approx(np.mean(errs), rel=1e-6)
    assert [r["match"] for r in meta["rules"]] == ["embed", "fc"]
    assert cli.main(["compress", str(src), "-o", str(dst), "--force", "--auto"]) != 0  # no budget
    assert cli.main(["compress", str(src), "-o", str(dst), "--force", "--budget", "0.1"]) != 0  # no --auto


def test_auto_with_retraining_stays_within_budget():
    model, acc = _model_and_metric()
    x = torch.randn(128, 24)
    with torch.no_grad():
        target = model(x)
    calls = []

    def retrain(m):  # a few steps of the user's own loop (here: distil the float model's outputs)
        calls.append(1)
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-3)
        for _ in range(3):
            opt.zero_grad()
            torch.mean((m(x) - target) ** 2).backward()
            opt.step()

    small, rep = pt.auto_compress(model, acc, 0.03, higher_is_better=True, retrain=retrain, max_evals=6,
                                  progress=False, **FAST)
    assert calls and rep.met and acc(small) == rep.metric >= rep.limit
