"""compress_weights: unified vs per-layer codebooks, layer selection, per-type parameters."""
import numpy as np
import pytest

from pydnnz import compress as C
from pydnnz.errors import InvalidArgumentError


def model_weights(seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s, sc=0.05: rng.laplace(scale=sc, size=s).astype(np.float32)
    return {
        "embed.weight": f(20, 8),
        "conv1.weight": f(16, 8, 5), "conv1.bias": f(16),
        "conv2.weight": f(8, 16, 3, 3, sc=0.1), "conv2.bias": f(8),
        "bn.weight": f(8), "bn.bias": f(8),
        "fc1.weight": f(64, 72), "fc1.bias": f(64),
        "fc2.weight": f(10, 64, sc=0.2), "fc2.bias": f(10),
    }


DENSE = ["fc1.weight", "fc2.weight"]
CONV = ["conv1.weight", "conv2.weight"]


@pytest.mark.parametrize("method", ["cws", "pws", "uq", "ecsq"])
def test_unified_codebook_per_layer_type(method):
    w = model_weights()
    out = C.compress_weights(w, method, k=16, seed=1)
    assert set(out) == set(w)
    for n in DENSE + CONV:
        assert isinstance(out[n], C.QuantizedTensor) and out[n].shape == w[n].shape
    # one codebook for the dense kernels, another for the conv kernels
    for group, names in (("dense", DENSE), ("conv", CONV)):
        vals = np.unique(np.concatenate([out[n].to_dense().ravel() for n in names]))
        assert vals.size <= 16 and vals.size == out[names[0]].params["group_k"]
        assert all(out[n].params["group"] == group for n in names)
        for n in names:  # each member keeps exactly the shared entries it uses
            assert np.array_equal(out[n].codebook, np.unique(out[n].to_dense()))
    if method in ("cws", "ecsq", "uq"):
        assert out["fc1.weight"].params["group_k"] >= 12
    # biases, norms and embeddings untouched (the very same objects)
    for n in ["embed.weight", "conv1.bias", "bn.weight", "bn.bias", "fc1.bias"]:
        assert out[n] is w[n]


def test_per_layer_codebooks():
    w = model_weights()
    out = C.compress_weights(w, "cws", k=8, unified=False)
    for n in DENSE + CONV:
        assert out[n].k == 8
        assert out[n].params["group"] == n
    # a per-layer codebook fits its own layer better than the shared one
    uni = C.compress_weights(w, "cws", k=8)
    err = lambda o, n: float(((o[n].to_dense() - w[n]) ** 2).sum())
    assert sum(err(out, n) for n in DENSE) <= sum(err(uni, n) for n in DENSE)


def test_unified_equals_quantize_on_a_list():
    w = model_weights()
    out = C.compress_weights(w, "cws", k=8, types=("dense",), seed=0)
    assert all(not isinstance(out[n], C.QuantizedTensor) for n in CONV)
    direct = C.quantize([w[n] for n in DENSE], "cws", 8, seed=0)
    # same method on the same concatenated sample gives the same codebook (seeding may differ)
    assert out["fc1.weight"].params["group_k"] == direct[0].params["group_k"] == 8


def test_include_exclude_and_layer_types():
    w = model_weights()
    out = C.compress_weights(w, "uq", k=4, include=["*.bias", "embed.*"])
    assert isinstance(out["fc1.bias"], C.QuantizedTensor) and isinstance(out["embed.weight"], C.QuantizedTensor)
    assert out["fc1.weight"] is w["fc1.weight"]
    assert out["fc1.bias"].params["group"] == out["conv1.bias"].params["group"] == "other"
    out = C.compress_weights(w, "cws", k=4, exclude="fc2.*")
    assert out["fc2.weight"] is w["fc2.weight"] and isinstance(out["fc1.weight"], C.QuantizedTensor)
    out = C.compress_weights(w, "cws", k=4, layer_types={"embed.weight": "dense"})
    assert out["embed.weight"].params["group"] == "dense"
    out = C.compress_weights(w, "cws", k=4, types=("dense", "conv", "embedding"))
    assert isinstance(out["embed.weight"], C.QuantizedTensor)


def test_per_type_k_and_p_and_prune_only():
    w = model_weights()
    out = C.compress_weights(w, "cws", k={"dense": 4, "conv": 32}, prune={"dense": 90})
    assert out["fc1.weight"].k == 5 and out["fc1.weight"].mask is not None  # 4 + exact zero
    assert out["conv1.weight"].params["group_k"] == 32 and out["conv1.weight"].mask is None
    frac = (out["fc1.weight"].to_dense() == 0).mean()
    assert abs(frac - 0.9) <= 1 / w["fc1.weight"].size
    pr = C.compress_weights(w, "prune", prune=80)
    for n in DENSE + CONV:
        assert isinstance(pr[n], np.ndarray) and pr[n].dtype == np.float32
        assert abs((pr[n] == 0).sum() - 0.8 * w[n].size) <= 0.5
    with pytest.raises(InvalidArgumentError):
        C.compress_weights(w, "prune")


def test_global_pruning_scope():
    w = model_weights()
    out = C.compress_weights(w, "prune", prune=75, prune_scope="global")
    zeros = sum(int((out[n] == 0).sum()) for n in DENSE)
    total = sum(w[n].size for n in DENSE)
    assert abs(zeros - 0.75 * total) <= 0.5
    # fc2 has larger weights, so it keeps a larger share than fc1
    assert (out["fc2.weight"] == 0).mean() < (out["fc1.weight"] == 0).mean()
    q = C.compress_weights(w, "cws", k=8, prune=75, prune_scope="global")
    assert sum(int((~q[n].mask).sum()) for n in DENSE) == zeros


def test_slr_through_compress_weights():
    w = model_weights()
    out = C.compress_weights(w, "slr", types=("dense",), rank=8)
    assert isinstance(out["fc1.weight"], C.LowRankTensor) and out["fc1.weight"].rank == 8
    assert out["conv1.weight"] is w["conv1.weight"]


def test_determinism_and_order_independence():
    w = model_weights()
    a = C.compress_weights(w, "pws", k=8, seed=5)
    b = C.compress_weights(dict(reversed(list(w.items()))), "pws", k=8, seed=5)
    for n in DENSE + CONV:
        np.testing.assert_array_equal(a[n].indices, b[n].indices)
        np.testing.assert_array_equal(a[n].codebook, b[n].codebook)


def test_compress_weights_bad_arguments():
    w = model_weights()
    for kw in [dict(method="nope"), dict(k=0), dict(prune=120), dict(prune_scope="model"),
               dict(layer_types={"fc1.weight": "lstm"}), dict(types=("dense", "rnn")),
               dict(k={"rnn": 3})]:
        with pytest.raises(InvalidArgumentError):
            C.compress_weights(w, **{"method": "cws", **kw})
    with pytest.raises(InvalidArgumentError):
        C.compress_weights([w["fc1.weight"]])
    with pytest.raises(InvalidArgumentError):
        C.compress_weights({"fc1.weight": np.full((3, 3), np.nan, np.float32)})
