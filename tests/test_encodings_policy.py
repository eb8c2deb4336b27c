"""Encoding policies: "auto" (smallest within the speed budget of the fastest), "smallest",
"fastest"; in encode, recipes and the CLI; the speed class `dnnz info` shows."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz.encodings import _speed, get_encoding, MatrixInput
from pydnnz.errors import InvalidArgumentError

REPO = Path(__file__).resolve().parent.parent


def matrix(seed, rows=192, cols=160, k=32, zeros=0.0, skew=False):
    rng = np.random.default_rng(seed)
    cb = np.linspace(-1, 1, k).astype(np.float32)
    if skew:  # a peaked index distribution: entropy coding wins bytes
        idx = np.clip(np.round(rng.laplace(k / 2, k / 16, (rows, cols))), 0, k - 1).astype(int)
    else:
        idx = rng.integers(0, k, (rows, cols))
    w = cb[idx]
    w[rng.random(w.shape) < zeros] = 0.0
    return w


CASES = [dict(seed=0), dict(seed=1, skew=True), dict(seed=2, zeros=0.9), dict(seed=3, zeros=0.99),
         dict(seed=4, k=4), dict(seed=5, k=300, skew=True), dict(seed=6, zeros=0.5, skew=True)]


def ratio(e, w):
    m = MatrixInput(w)
    p = e.params
    return _speed.estimated_ratio(e.encoding, m.rows * m.cols, int(np.count_nonzero(m.nonzero_mask)), e.nbytes,
                                  p.get("k"), p.get("bits"))


def applicable(w):
    m = MatrixInput(w)
    return [n for n in pydnnz.encodings.encodings() if get_encoding(n).applicable(m)]


@pytest.mark.parametrize("case", CASES)
def test_policies_follow_their_definitions(case):
    w = matrix(**case)
    every = {n: pydnnz.encode(w, n) for n in applicable(w)}
    auto, small, fast = (pydnnz.encode(w, p) for p in ("auto", "smallest", "fastest"))
    for e in (auto, small, fast):
        assert np.array_equal(e.decode(), w)
    assert small.nbytes == min(e.nbytes for e in every.values())
    best = min(ratio(e, w) for e in every.values())
    assert ratio(fast, w) == pytest.approx(best)
    # auto: within the budget of the fastest, and no encoding within it is smaller
    assert ratio(auto, w) <= _speed.SPEED_BUDGET * best * (1 + 1e-9)
    within = [e for e in every.values() if ratio(e, w) <= _speed.SPEED_BUDGET * best * (1 + 1e-9)]
    assert auto.nbytes == min(e.nbytes for e in within)
    assert small.nbytes <= auto.nbytes


def test_auto_is_deterministic_and_never_picks_a_slow_encoding_for_an_unpruned_layer():
    w = matrix(1, skew=True)
    assert pydnnz.encode(w, "smallest").encoding in ("ham", "rlham")
    picks = {pydnnz.encode(w).encoding for _ in range(3)}
    assert len(picks) == 1
    assert _speed.speed_class(ratio(pydnnz.encode(w), w)) == "fast"


def test_auto_avoids_the_im_wide_index_path():
    """Indices wider than 8 bits (k > 256) are unpacked by scalar code, which makes `im` many times
    slower than dense at batch 1 (_speed.IM_SLOW_PATHS): auto must not take it there, while it
    still takes `im` at k = 32 and k = 256."""
    w = matrix(7, k=300)
    assert _speed.im_extra("im", 300, 9) == _speed.IM_SLOW_PATHS["wide"]
    assert _speed.im_extra("im", 256, 8) == 0.0 and _speed.im_extra("ham", 300, 9) == 0.0
    assert pydnnz.encode(w).encoding != "im"
    assert _speed.speed_class(ratio(pydnnz.encode(w), w)) == "fast"
    assert pydnnz.encode(matrix(7, k=32)).encoding == "im"
    assert pydnnz.encode(matrix(7, k=256)).encoding in ("im", "im8")
    im = pydnnz.encode(w, "im")  # dnnz info's class (from the header) knows the slow path too
    assert _speed.speed_class(_speed.header_ratio("im", im.shape, im.params, im.nbytes)) != "fast"


def test_policy_names_cannot_be_registered():
    for name in _speed.POLICIES:
        cls = type("X", (pydnnz.encodings.EncodedMatrix,), {"name": name, "id": 999})
        with pytest.raises(ValueError):
            pydnnz.encodings.register(cls)


def test_speed_classes():
    assert _speed.speed_class(0.6) == "fast"
    assert _speed.speed_class(2.0) == "medium"
    assert _speed.speed_class(40.0) == "slow"
    w = matrix(0)
    assert _speed.header_ratio("dense", w.shape, {}, w.nbytes) == pytest.approx(1.0)
    e = pydnnz.encode(w, "rlham")
    assert _speed.speed_class(_speed.header_ratio("rlham", e.shape, e.params, e.nbytes)) == "slow"


def test_recipes_accept_policies():
    torch = pytest.importorskip("torch")
    import pydnnz.torch as pt

    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 8))
    for policy in _speed.POLICIES:
        comp = pt.compress_model(model, {"method": "uq", "k": 16, "encoding": policy})
        assert all(m.encoded.encoding in pydnnz.encodings.encodings()
                   for m in comp.modules() if hasattr(m, "encoded"))
    with pytest.raises(InvalidArgumentError, match="unknown encoding"):
        pt.compress_model(model, {"method": "uq", "k": 16, "encoding": "quickest"})


def _dnnz(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pydnnz", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_encoding_policies_and_info_speed_column(tmp_path):
    src = tmp_path / "m.npz"
    np.savez(src, **{"fc.weight": matrix(1, skew=True), "fc.bias": np.zeros(192, np.float32)})
    sizes = {}
    for policy in ("smallest", "fastest", "auto"):
        out = tmp_path / f"{policy}.dnnz"
        proc = _dnnz("compress", src, "-o", out, "--encoding", policy)
        assert proc.returncode == 0, proc.stderr
        info = json.loads(_dnnz("info", out, "--json").stdout)
        t = {r["name"]: r for r in info["tensors"]}
        sizes[policy] = t["fc.weight"]["bytes"]
        assert t["fc.weight"]["speed"] in ("fast", "medium", "slow") and t["fc.bias"]["speed"] == "-"
    assert sizes["smallest"] <= sizes["auto"] <= sizes["fastest"]
    table = _dnnz("info", tmp_path / "auto.dnnz").stdout
    assert "speed" in table.splitlines()[0]
    bad = _dnnz("compress", src, "-o", tmp_path / "x.dnnz", "--encoding", "quickest")
    assert bad.returncode != 0 and "smallest" in bad.stderr


# ------------------------------------------------------------------------------------------------
# the runtime form chosen at load

def _saved_model(tmp_path, encoding="ham"):
    torch = pytest.importorskip("torch")
    import pydnnz.torch as pt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 24), torch.nn.Flatten(), torch.nn.Linear(24 * 3, 40),
                                torch.nn.ReLU(), torch.nn.Linear(40, 5))
    comp = pt.compress_model(model, {"method": "uq", "k": 16, "encoding": encoding, "type": ["Linear", "Embedding"]})
    path = tmp_path / "m.dnnz"
    pt.save_model(comp, path)
    return model, comp, path


def _build():
    import torch

    return torch.nn.Sequential(torch.nn.Embedding(50, 24), torch.nn.Flatten(), torch.nn.Linear(24 * 3, 40),
                               torch.nn.ReLU(), torch.nn.Linear(40, 5))


def test_load_model_runtime_encoding_is_exact(tmp_path):
    import torch
    import pydnnz.torch as pt

    _, comp, path = _saved_model(tmp_path)
    ids = torch.tensor([[1, 7, 49], [0, 0, 3]])
    with torch.no_grad():
        want = comp(ids)
    plain = pt.load_model(path, _build())
    assert not hasattr(plain, "dnnz_runtime")  # off by default
    assert {m.encoded.encoding for m in plain.modules() if hasattr(m, "encoded")} == {"ham"}
    for target in ("fastest", "im"):
        fast = pt.load_model(path, _build(), runtime_encoding=target)
        encs = {m.encoded.encoding for m in fast.modules() if hasattr(m, "encoded")}
        assert "ham" not in encs and fast.dnnz_runtime
        for (a, b) in zip(plain.modules(), fast.modules()):
            if hasattr(a, "encoded"):
                assert np.array_equal(a.encoded.decode().view(np.uint32), b.encoded.decode().view(np.uint32))
        with torch.no_grad():
            torch.testing.assert_close(fast(ids), want, rtol=1e-5, atol=1e-5)


def test_load_model_runtime_memory_budget(tmp_path):
    import pydnnz.torch as pt

    _, _, path = _saved_model(tmp_path)
    none = pt.load_model(path, _build(), runtime_encoding="im", runtime_memory=0)
    assert {m.encoded.encoding for m in none.modules() if hasattr(m, "encoded")} == {"ham"}
    assert all(r[4].startswith("over runtime_memory") for r in none.dnnz_runtime)
    some = pt.load_model(path, _build(), runtime_encoding="im", runtime_memory=1500)
    held = sum(r[3] for r in some.dnnz_runtime if r[4] == "re-encoded")
    assert 0 < held <= 1500


def test_load_model_runtime_encoding_rejects_bad_targets(tmp_path):
    import pydnnz.torch as pt
    from pydnnz.errors import UnsupportedError

    _, _, path = _saved_model(tmp_path)
    with pytest.raises(InvalidArgumentError, match="fastest"):
        pt.load_model(path, _build(), runtime_encoding="smallest")
    with pytest.raises(UnsupportedError):
        pt.load_model(path, _build(), runtime_encoding="zip")
    with pytest.raises(InvalidArgumentError):
        pt.load_model(path, _build(), runtime_encoding="im", runtime_memory=-1)
