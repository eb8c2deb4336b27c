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
    # 3.7 k weights: the float32 biases and the header are a third of the file
    assert report.psi < 0.6 and report.weight_bytes < 0.25 * 4 * sum(w.numel() for w in model.parameters())
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
    for bad in (0, -3, 2.5, True, "60"):
        with pytest.raises(InvalidArgumentError, match="max_evals"):
            pt.auto_compress(model, acc, 0.1, max_evals=bad)


def test_auto_max_evals_caps_the_measured_allocations():
    # evaluate runs for the baseline, at most max_evals measured allocations, and the final model
    model, acc = _model_and_metric()
    calls = []
    counted = lambda m: calls.append(1) or acc(m)  # noqa: E731
    rep2 = pt.auto_compress(model, counted, 0.05, higher_is_better=True, progress=False, max_evals=3, **FAST)[1]
    assert len(calls) <= 3 + 2 and rep2.met


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


def test_auto_confirm_checks_the_result_on_held_out_data(tmp_path):
    model, acc = _model_and_metric()
    torch.manual_seed(1)
    xb = torch.randn(300, 24)
    with torch.no_grad():
        yb = model(xb).argmax(1)
    held = lambda m: float((m(xb).argmax(1) == yb).double().mean())  # noqa: E731
    small, rep = pt.auto_compress(model, acc, 0.02, higher_is_better=True, confirm=held, progress=False, **FAST)
    assert rep.met and rep.metric >= rep.limit
    assert rep.confirm["baseline"] == 1.0 and rep.confirm["metric"] >= rep.confirm["limit"] == pytest.approx(0.98)
    assert held(small) == rep.confirm["metric"] and rep.confirm["checks"]
    replay = pt.compress_model(model, rep.recipe)
    a, b = _weights(small), _weights(replay)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a held-out metric that nothing compressed passes: every layer stays dense, within both budgets
    orig = {k: v.clone() for k, v in model.state_dict().items()}
    strict = lambda m: float(all(torch.equal(v, orig[k]) for k, v in pt.decompress_model(m).state_dict().items()))  # noqa: E731
    small2, rep2 = pt.auto_compress(model, acc, 0.02, higher_is_better=True, confirm=strict, progress=False, **FAST)
    assert "nothing passed" in rep2.hypothesis and rep2.met and rep2.confirm["metric"] == 1.0
    assert all(c["ok"] is False for c in rep2.confirm["checks"])
    for bad in ({"confirm": 1.0}, {"confirm": held, "retrain": lambda m: None}):
        with pytest.raises(InvalidArgumentError, match="confirm"):
            pt.auto_compress(model, acc, 0.02, higher_is_better=True, **bad)
    with pytest.raises(InvalidArgumentError, match="confirm"):
        pt.auto_compress(model, None, 0.02, confirm=held)


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


def test_rdq_balance_keeps_row_sums_within_half_a_step():
    w = _w((40, 300), 4) + np.float32(0.01)  # rows with a common offset: plain rounding errors add up
    step = 0.05
    plain, bal = rdq(w, step=step), rdq(w, step=step, balance=True)
    rows = lambda q: np.asarray(q, dtype=np.float64).reshape(w.shape).sum(1)  # noqa: E731
    target = w.astype(np.float64).sum(1)
    assert np.all(np.abs(rows(bal) - target) <= step / 2 + 1e-6)
    assert np.max(np.abs(rows(plain) - target)) > step / 2  # the plain sums do drift
    # only entries near a rounding boundary move, by one level: a little more squared error
    d_plain = np.sum((np.asarray(plain, np.float64).reshape(w.shape) - w) ** 2)
    d_bal = np.sum((np.asarray(bal, np.float64).reshape(w.shape) - w) ** 2)
    assert d_plain <= d_bal <= 1.2 * d_plain
    moved = np.asarray(bal).reshape(w.shape) != np.asarray(plain).reshape(w.shape)
    assert np.all(np.abs(np.asarray(bal, np.float64) - np.asarray(plain, np.float64)).reshape(w.shape)[moved]
                  <= step * 1.0001)
    again = rdq(w, step=step, balance=True)
    np.testing.assert_array_equal(again.indices, bal.indices)
    with pytest.raises(InvalidArgumentError):
        rdq(w, step=step, balance="yes")


def test_descent_keeps_only_measured_passing_moves_and_is_deterministic():
    from pydnnz.torch._auto_search import descend, ladder, uniform_start

    w = {"a": _w((64, 32), 5), "b": _w((32, 16), 6)}
    table = candidate_table(w, steps=(0, 1, 2, 3, 4, 6, 8), rdos=(0.0,))
    for n, cands in table.items():
        lad = ladder(cands)
        assert [cands[i].nbytes for i in lad] == sorted((cands[i].nbytes for i in lad), reverse=True)
        assert all(cands[lad[j]].distortion > cands[lad[j - 1]].distortion for j in range(1, len(lad)))

    def fake(alloc, thr):  # a made-up metric: relative error, with layer "b" 10x as sensitive
        deg = sum((10.0 if n == "b" else 1.0) * table[n][i].distortion / np.sum(w[n].astype(np.float64) ** 2)
                  for n, i in alloc.items())
        seen.append((dict(alloc), deg, thr))
        return deg <= thr, deg

    seen = []
    start = {"a": 0, "b": 0}
    out1, d1 = descend(table, start, fake, start_deg=0.0, allowed=0.05, min_share=0.0)
    first = list(seen)
    seen.clear()
    out2, d2 = descend(table, start, fake, start_deg=0.0, allowed=0.05, min_share=0.0)
    assert out1 == out2 and d1 == d2 and [s[0] for s in seen] == [s[0] for s in first]
    assert d1 <= 0.05 and fake(out1, 0.05)[0]
    assert sum(table[n][i].nbytes for n, i in out1.items()) < sum(table[n][0].nbytes for n in w)
    assert max(thr for _, _, thr in first) == 0.05  # the thresholds never exceed the budget
    assert uniform_start([0, 1, 2, 3], lambda j: j >= 2) == 2
    assert uniform_start([0, 1, 2, 3], lambda j: False) is None


def test_recipe_bias_key_sets_the_layer_bias_and_is_checked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    new = [0.5, -0.25, 1.0, 2.0]
    small = pt.compress_model(model, [{"match": "0", "method": "uq", "k": 16, "bias": new},
                                      {"match": "2", "method": "none"}])
    assert torch.equal(pt.decompress_model(small).state_dict()["0.bias"], torch.tensor(new))
    assert torch.equal(model[0].bias, model[0].bias)  # the float model is untouched
    assert not torch.equal(model[0].bias.detach(), torch.tensor(new))
    meta = small.dnnz_metadata
    assert "bias" not in json.dumps(meta.get("pydnnz.recipe", ""))  # not copied into the file's recipe
    with pytest.raises(InvalidArgumentError):
        pt.compress_model(model, [{"match": "0", "method": "uq", "k": 16, "bias": [1.0, 2.0]}])  # wrong length
    with pytest.raises(InvalidArgumentError):
        pt.compress_model(model, [{"method": "uq", "k": 16, "bias": new}])  # no match
    with pytest.raises(InvalidArgumentError):
        pt.compress_model(model, [{"match": "*", "method": "uq", "k": 16, "bias": new}])  # two layers
    with pytest.raises(InvalidArgumentError):
        pt.compress_model(model, [{"match": "0", "method": "uq", "k": 16, "bias": [1.0, float("nan"), 0, 0]}])


def test_recipe_scale_key_scales_the_codebook_and_replays_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    base = [{"match": "0", "method": "rdq", "k": 15, "options": {"step": 0.05}}, {"match": "2", "method": "uq", "k": 8}]
    scaled = [dict(base[0], scale=0.8125, bias=[0.5, -0.25, 1.0, 2.0, 0.0, 0.125]), dict(base[1], scale=1.3)]
    plain, small = pt.compress_model(model, base), pt.compress_model(model, scaled)
    for i, c in ((0, 0.8125), (2, 1.3)):
        w0, w1 = pt.decompress_model(plain)[i].weight, pt.decompress_model(small)[i].weight
        assert torch.equal(w1, w0 * np.float32(c))  # the float32 product of every value, same indices
        assert len(torch.unique(w1)) == len(torch.unique(w0))  # no extra stored value
    assert json.loads(small.dnnz_metadata["pydnnz.recipe"])[1]["scale"] == 1.3
    # replays bit for bit: through compress_model again and through a save/load round trip
    again = pt.compress_model(model, json.loads(json.dumps(scaled)))
    path = tmp_path / "s.dnnz"
    pt.save_model(small, path)
    loaded = pt.load_model(path, torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)))
    x = torch.randn(5, 8)
    ref = _weights(small)
    for other in (again, loaded):
        got = _weights(other)
        assert ref.keys() == got.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), k
        with torch.no_grad():
            assert torch.equal(small(x), other(x))
    for bad in (0, -1.0, float("inf"), float("nan"), 1e300, True, "2", [1.0]):
        with pytest.raises(InvalidArgumentError):
            pt.compress_model(model, [dict(base[0], scale=bad)])
    with pytest.raises(InvalidArgumentError):
        pt.compress_model(model, [{"match": "0", "method": "prune", "scale": 2.0}])  # no codebook


def test_output_affine_fits_scale_and_bias_and_guards():
    from pydnnz.torch._auto_search import output_affine

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    w = rng.normal(size=(2, 6))
    b = np.array([0.3, -0.1])
    yq = x @ w.T + b
    yf = 1.25 * yq + np.array([0.5, 0.2]) + 0.01 * rng.normal(size=yq.shape)
    c, b2 = output_affine(x, w, b, yf)
    assert c == float(np.float32(c)) and abs(c - 1.25) < 0.01  # pooled over the outputs, float32
    fixed = c * (x @ w.T) + b2
    assert np.allclose(fixed.mean(0), yf.mean(0))  # the mean output stays the float one
    assert np.mean((fixed - yf) ** 2) < 0.01 * np.mean((yq - yf) ** 2)
    assert output_affine(x, w, b, yq) is None  # already exact: nothing to gain, rejected
    assert output_affine(x, w, b, 3.0 * yq) is None  # outside (0.5, 2): not a quantization error
    assert output_affine(x, w, b, rng.normal(size=yq.shape)) is None  # unrelated outputs: rejected
    assert output_affine(x[:3], w, b, yf[:3]) is None  # too few rows


def test_forward_memo_reuses_only_unchanged_layers_exactly():
    from pydnnz.torch._auto_search import ForwardMemo

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Conv1d(4, 2, 3))
    x = torch.randn(5, 3, 20)
    memo = ForwardMemo({"0": model[0], "2": model[2]})
    with torch.no_grad():
        ref = model(x)
        with memo({"0": 1, "2": 1}):
            a = model(x)
        with memo({"0": 1, "2": 1}):
            b = model(x)  # both layers reused (the in-place ReLU must not spoil the cached output)
        assert memo.hits == 2 and torch.equal(a, ref) and torch.equal(b, ref)
        model[2].weight.mul_(2.0)
        with memo({"0": 1, "2": 2}):  # a new state for layer 2: recomputed, layer 0 reused
            c = model(x)
        assert memo.hits == 3 and torch.equal(c, model[2](model[1](model[0](x))))
        with memo({"0": None, "2": 2}):  # None: layer 0 computed; layer 2's input is the same: reused
            model(x)
        assert memo.hits == 4
    assert "forward" not in model[0].__dict__  # unpatched after the pass


def test_auto_bias_correction_with_calibration_replays_bit_exact(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 1))
    x = torch.randn(400, 16)
    with torch.no_grad():
        y = model(x).squeeze(1) + 0.1 * torch.randn(400)

    def mse(m):
        with torch.no_grad():
            return float(torch.mean((m(x).squeeze(1) - y) ** 2))

    cal = [torch.randn(64, 16) for _ in range(2)]
    small, rep = pt.auto_compress(model, mse, 0.002, calibration=cal, progress=False, **FAST)
    assert rep.metric <= rep.limit and mse(small) == rep.metric
    corrected = [r for r in rep.recipe if "bias" in r]
    assert corrected  # the quantized Linear layers carry their corrected biases
    assert "scale" in rep.recipe[-1]  # the last layer's output correction (kept here), replayed below
    path = tmp_path / "recipe.json"
    rep.save(path)
    replay = pt.compress_model(model, json.loads(path.read_text()))
    a, b = _weights(small), _weights(replay)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the correction keeps each corrected layer's mean output on the calibration inputs (all
    # batches as one, through the quantized and corrected upstream layers) equal to the float one
    xin = torch.cat(cal)
    dec = pt.decompress_model(small)
    with torch.no_grad():
        for f, q in zip(model, dec):
            yf, yq = f(xin_f if f is not model[0] else xin), q(xin_q if f is not model[0] else xin)
            if isinstance(f, torch.nn.Linear) and any(r["match"] == str(list(model).index(f)) for r in corrected):
                assert torch.allclose(yf.mean(0), yq.mean(0), atol=1e-4)
            xin_f, xin_q = yf, yq


def test_auto_doctests():
    import doctest

    import pydnnz.compress.allocate as allocate
    import pydnnz.compress.rdq as rdq_mod
    import pydnnz.torch._auto_search as search

    for mod in (rdq_mod, allocate, search):
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__
