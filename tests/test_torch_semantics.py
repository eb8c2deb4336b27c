"""PyTorch semantics of compressed models: state_dict / load_state_dict, .weight, jit.trace and
torch.compile, the summary of layers left dense, per-channel recipes."""
import io
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pydnnz.torch as pt  # noqa: E402
from pydnnz import errors  # noqa: E402


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def small_mlp():
    return pt.compress_model(mlp(), {"method": "cws", "k": 4})


def test_state_dict_has_decoded_weights_and_torch_save_loads_into_a_dense_model():
    small = small_mlp()
    sd = small.state_dict()
    assert sorted(sd) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert torch.equal(sd["0.weight"], torch.from_numpy(small[0].encoded.decode()))
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    dense = mlp()
    dense.load_state_dict(torch.load(buf))  # strict: every key matches
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), small(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(dense[0].weight, sd["0.weight"]) and len(torch.unique(dense[0].weight)) <= 4


def test_load_state_dict_of_the_decoded_weights_keeps_the_compressed_form():
    small = small_mlp()
    other = pt.compress_model(mlp(), {"method": "uq", "k": 8})
    before = other[0].encoded
    with pytest.warns(UserWarning, match="encoded losslessly as given"):
        other.load_state_dict(small.state_dict())
    assert other[0].encoded is not before  # uq -> cws values: re-encoded
    again = other[0].encoded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other.load_state_dict(other.state_dict())  # the decoded weights: nothing changes, no warning
    assert other[0].encoded is again
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(other(x), small(x))


def test_load_state_dict_of_other_values_loads_them_exactly_with_a_warning():
    small = small_mlp()
    dense = mlp()
    with pytest.warns(UserWarning, match="0.weight differs from the compressed weight"):
        small.load_state_dict(dense.state_dict())
    assert torch.equal(small[0].weight, dense[0].weight)
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), dense(x), rtol=1e-5, atol=1e-6)


def test_load_state_dict_strictness_and_shapes():
    small = small_mlp()
    sd = small.state_dict()
    del sd["2.weight"]
    with pytest.raises(RuntimeError, match="Missing key.*2.weight"):
        small.load_state_dict(sd)
    assert small.load_state_dict(sd, strict=False).missing_keys == ["2.weight"]
    sd = small.state_dict()
    sd["0.weight"] = torch.zeros(3, 3)
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        small.load_state_dict(sd)


def test_weight_is_decoded_lazily_and_not_kept():
    small = small_mlp()
    w = small[0].weight
    assert w.shape == (16, 8) and w.dtype == torch.float32
    assert torch.equal(w, torch.from_numpy(small[0].encoded.decode()))
    assert "weight" not in dict(small[0].named_parameters()) and "weight" not in small[0].__dict__
    with pytest.raises((AttributeError, KeyError)):  # read-only: load_state_dict replaces it
        small[0].weight = nn.Parameter(w)


def test_save_model_does_not_decode_and_round_trips(tmp_path, monkeypatch):
    small = small_mlp()
    calls = []
    em = small[0].encoded
    monkeypatch.setattr(type(em), "decode", lambda self: calls.append(1) or np.zeros(self.shape, np.float32))
    pt.save_model(small, tmp_path / "m.dnnz")
    pt.load_model(tmp_path / "m.dnnz", mlp())
    assert calls == []


def test_jit_trace_fails_clearly():
    small = small_mlp()
    with pytest.raises(errors.UnsupportedError, match="torch.jit.trace cannot see inside"):
        torch.jit.trace(small, torch.randn(2, 8))
    emb = pt.compress_model(nn.Sequential(nn.Embedding(10, 4)), {"type": "Embedding", "method": "uq", "k": 4})
    with pytest.raises(errors.UnsupportedError, match="torch.jit.trace"):
        torch.jit.trace(emb, torch.tensor([[1, 2]]))


def test_torch_compile_runs_the_compressed_layers_eagerly():
    small = small_mlp()
    compiled = torch.compile(small, backend="eager")
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(compiled(x), small(x))


def _warned(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(a.message) for a in w]


def test_summary_lists_every_layer_left_dense_and_warns_for_named_ones():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64), nn.Linear(64, 2), nn.Conv3d(2, 2, 2),
                          nn.Embedding(5, 64))
    small, msgs = _warned(lambda: pt.compress_model(model, [{"match": "2", "method": "none"},
                                                            {"match": "*", "method": "uq", "k": 4}]))
    assert any("'3' (Conv3d) matches rule 1 (match *) but stays dense" in m for m in msgs)
    rows = {r["layer"]: r for r in json.loads(small.dnnz_metadata["pydnnz.dense"])["dense"]}
    assert rows["2"]["reason"] == "rule 0: method 'none'"
    assert rows["3"]["reason"] == "type Conv3d is not supported" and rows["3"]["params"] == ["weight"]
    assert "1" not in rows  # LayerNorm: 1-D parameters only
    assert type(small[4]).__name__ == "CompressedEmbedding"  # named by the glob
    text = pt.compression_summary(small)
    assert "left dense: 2" in text and "rule 0: method 'none'" in text and "Conv3d" in text
    unnamed, _ = _warned(lambda: pt.compress_model(model, {"method": "uq", "k": 4}))
    rows = {r["layer"]: r["reason"] for r in json.loads(unnamed.dnnz_metadata["pydnnz.dense"])["dense"]}
    assert rows["4"].startswith("no rule matches (embeddings")


def test_summary_travels_in_the_file(tmp_path):
    small, _ = _warned(lambda: pt.compress_model(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)),
                                                 [{"match": "1", "method": "none"}, {"method": "uq", "k": 4}]))
    pt.save_model(small, tmp_path / "m.dnnz")
    meta = pt.read_metadata(tmp_path / "m.dnnz")
    assert meta["pydnnz.dense"]["dense"][0]["layer"] == "1"
    assert "left dense: 1" in pt.compression_summary(meta)


def test_k_not_smaller_than_the_weight_count_warns():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 2, bias=False), nn.Linear(2, 3))
    small, msgs = _warned(lambda: pt.compress_model(model, {"method": "cws", "k": 8}))
    assert any("layer '2': k=8 is not smaller than its 6 weights" in m for m in msgs)
    assert not any("layer '0'" in m or "layer '1'" in m for m in msgs)
    assert sum("not smaller" in m for m in msgs) == 1  # compress_weights' own warning is not repeated
    report = json.loads(small.dnnz_metadata["pydnnz.dense"])
    assert report["k_not_smaller"] == [{"layer": "2", "k": 8, "weights": 6}]


def test_rule_naming_only_unsupported_layers_says_so():
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv3d(2, 2, 2))
    with pytest.raises(errors.InvalidArgumentError, match=r"it names '1' \(Conv3d\), which pydnnz.torch cannot"):
        pt.compress_model(model, {"match": "1", "method": "uq"})


def depthwise_cnn(seed=0):
    """A small depthwise-separable CNN (conv, BN, ReLU blocks, as in MobileNet) whose conv rows
    have ranges spread over e^6, calibrated batch norms scaling every channel back to unit size:
    a per-tensor codebook flattens the narrow rows and the norms amplify the error."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=None), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16, momentum=None), nn.ReLU(),
                      nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24, momentum=None), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in (0, 3, 6):
            out = m[i].weight.shape[0]
            scale = torch.exp(torch.rand(out, generator=g) * 6 - 4)
            m[i].weight.mul_(scale.reshape(-1, 1, 1, 1)), m[i].bias.mul_(scale)
        m.train()(torch.randn(64, 3, 12, 12, generator=g))  # running statistics of this data
    return m.eval()


@pytest.mark.parametrize("granularity", ["channel", 4])
def test_per_channel_recipe_runs_from_the_compressed_form_and_round_trips(tmp_path, granularity):
    model = depthwise_cnn()
    small = pt.compress_model(model, {"method": "uq", "k": 16, "granularity": granularity})
    assert json.loads(small.dnnz_metadata["pydnnz.recipe"])[0]["granularity"] == granularity
    assert all(s["granularity"] == granularity for s in json.loads(small.dnnz_metadata["pydnnz.layers"]))
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        ref = pt.decompress_model(small)(x)
        torch.testing.assert_close(small(x), ref, rtol=1e-4, atol=1e-5)
        pt.save_model(small, tmp_path / "m.dnnz")
        loaded = pt.load_model(tmp_path / "m.dnnz", depthwise_cnn(1))
        assert type(loaded[3].encoded).__name__ == "ScaledMatrix"
        assert torch.equal(loaded(x), small(x))


def test_per_channel_is_closer_to_the_dense_model_than_per_tensor():
    model = depthwise_cnn()
    x = torch.randn(16, 3, 12, 12)
    err = {}
    with torch.no_grad():
        ref = model(x)
        for g in ("tensor", "channel"):
            out = pt.compress_model(model, {"method": "uq", "k": 16, "granularity": g})(x)
            err[g] = float((out - ref).norm() / ref.norm())
    assert err["channel"] < err["tensor"] / 2


def test_granularity_recipe_errors():
    for bad, msg in ((0, "positive int"), ("rows", "'granularity' must be"), (True, "'granularity' must be")):
        with pytest.raises(errors.InvalidArgumentError, match=msg):
            pt.parse_recipe({"method": "uq", "granularity": bad})
    with pytest.raises(errors.InvalidArgumentError, match="needs a quantizer"):
        pt.parse_recipe({"method": "prune", "granularity": "channel"})
    with pytest.raises(errors.UnsupportedError, match="per-channel scales"):
        pt.compress_model(mlp(), {"method": "uq", "granularity": "channel"}, finetune=lambda m: None)


def test_doctests():
    import doctest

    from pydnnz.torch import _report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = doctest.testmod(_report, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0
