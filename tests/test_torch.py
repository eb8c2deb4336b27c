"""pydnnz.torch: recipes, compressed layers against dense PyTorch, save/load contract and errors.

Tolerance: a compressed layer and the dense PyTorch layer on the SAME (decoded, exact) weights
differ only by float32 summation order: |diff| <= 1e-5 * (1 + |reference|) per output here
(fan-in <= 256, values O(1)).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")
from torch import nn  # noqa: E402

import pydnnz  # noqa: E402
import pydnnz.torch as pt  # noqa: E402
from pydnnz.errors import DnnzError, InvalidArgumentError, ShapeError, UnsupportedError  # noqa: E402
from pydnnz.torch import (CompressedConv1d, CompressedConv2d, CompressedEmbedding,  # noqa: E402
                          CompressedLinear)

RTOL = ATOL = 1e-5


def assert_close(got, want):
    got, want = got.detach().numpy(), want.detach().numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def quantized(shape, k=16, seed=0, zeros=0.5):
    """A float32 weight with k shared values and about `zeros` of exact zeros."""
    rng = np.random.default_rng(seed)
    cb = np.sort(rng.normal(size=k)).astype(np.float32)
    w = cb[rng.integers(0, k, size=shape)]
    w[rng.random(shape) < zeros] = 0.0
    return w


class Small(nn.Module):
    """Every supported layer kind and the conv variants: grouped, depthwise, strides, padding
    (ints, 'same', 'valid', reflect), dilation; plus an embedding and a norm layer (stays dense)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6, padding_idx=0)
        self.conv1d = nn.Conv1d(6, 8, 3, padding="same")
        self.conv_a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv_g = nn.Conv2d(8, 8, 3, padding=(2, 1), dilation=(2, 1), groups=2)
        self.conv_dw = nn.Conv2d(8, 8, 3, padding="same", groups=8, padding_mode="reflect", bias=False)
        self.conv_v = nn.Conv2d(8, 4, (2, 3), stride=(1, 2), padding="valid")
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 + 8, 5)
        self.norm.running_mean.uniform_(-0.1, 0.1)

    def forward(self, img, ids):
        h = torch.relu(self.conv_a(img))
        h = torch.relu(self.conv_g(h))
        h = torch.relu(self.conv_dw(h))
        h = self.norm(self.conv_v(h))
        s = self.conv1d(self.embed(ids).transpose(1, 2)).amax(dim=2)
        return self.fc(torch.cat([h.flatten(1)[:, : 4 * 6], s], dim=1))


def small_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 12, 14, generator=g), torch.randint(0, 20, (3, 9), generator=g)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return Small().eval()


ALL_UQ = [{"type": ["Linear", "conv", "Embedding"], "method": "uq", "k": 16}]


# ---- compressed modules against dense PyTorch ------------------------------------------------

CONV2D = [
    dict(), dict(stride=2), dict(padding=1), dict(padding="same"), dict(padding="valid"),
    dict(padding="same", dilation=2), dict(padding=(1, 2), stride=(2, 1), dilation=(1, 2)),
    dict(groups=2), dict(groups=4, padding=1, stride=2), dict(groups=8, padding="same"),
    dict(padding=1, padding_mode="reflect"), dict(padding=2, stride=2, padding_mode="circular"),
    dict(padding="same", padding_mode="replicate", bias=False),
]


@pytest.mark.parametrize("kw", CONV2D, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
@pytest.mark.parametrize("kernel", [3, (2, 3)])
def test_conv2d_matches_dense(kw, kernel):
    torch.manual_seed(1)
    dense = nn.Conv2d(8, 8, kernel, **kw)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(quantized(tuple(dense.weight.shape))))
    comp = CompressedConv2d.from_module(dense, pydnnz.encode(dense.weight.detach().numpy()))
    x = torch.randn(2, 8, 11, 9)
    with torch.no_grad():
        assert_close(comp(x), dense(x))
        assert_close(comp(x[0]), dense(x[0]))  # unbatched input


CONV1D = [dict(), dict(stride=3), dict(padding=2), dict(padding="same"), dict(padding="same", dilation=3),
          dict(groups=4), dict(groups=8, dilation=2, padding="same"), dict(padding=3, padding_mode="circular")]


@pytest.mark.parametrize("kw", CONV1D, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
@pytest.mark.parametrize("kernel", [4, 5])
def test_conv1d_matches_dense(kw, kernel):
    torch.manual_seed(2)
    dense = nn.Conv1d(8, 16, kernel, **kw)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(quantized(tuple(dense.weight.shape), seed=3)))
    comp = CompressedConv1d.from_module(dense, pydnnz.encode(dense.weight.detach().numpy()))
    x = torch.randn(3, 8, 30)
    with torch.no_grad():
        assert_close(comp(x), dense(x))
        assert_close(comp(x[1]), dense(x[1]))


def test_conv_im2col_is_sliced_for_big_batches(monkeypatch):
    from pydnnz.torch import _modules

    monkeypatch.setattr(_modules, "_IM2COL_BYTES", 4096)  # forces one slice per sample
    dense = nn.Conv1d(4, 6, 3, padding=1)
    comp = CompressedConv1d.from_module(dense, pydnnz.encode(dense.weight.detach().numpy()))
    x = torch.randn(5, 4, 40)
    with torch.no_grad():
        assert_close(comp(x), dense(x))


def test_linear_and_embedding_match_dense():
    torch.manual_seed(3)
    lin = nn.Linear(24, 7)
    emb = nn.Embedding(30, 5, padding_idx=2)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(quantized((7, 24))))
        emb.weight.copy_(torch.from_numpy(quantized((30, 5), zeros=0.2)))
    cl = CompressedLinear.from_module(lin, pydnnz.encode(lin.weight.detach().numpy()))
    ce = CompressedEmbedding.from_module(emb, pydnnz.encode(emb.weight.detach().numpy()))
    x = torch.randn(2, 3, 24)
    ids = torch.tensor([[1, 29, 2, 1], [0, 0, 5, 29]])
    with torch.no_grad():
        assert_close(cl(x), lin(x))
        assert_close(cl(x[0, 0]), lin(x[0, 0]))
        assert torch.equal(ce(ids), emb(ids))  # rows are decoded exactly
        assert cl(torch.zeros(0, 24)).shape == (0, 7)
    with pytest.raises(InvalidArgumentError, match=r"ids must be in \[0, 30\)"):
        ce(torch.tensor([30]))
    with pytest.raises(ShapeError):
        cl(torch.zeros(2, 23))


def test_backward_through_a_compressed_layer_is_a_clear_error():
    lin = nn.Linear(4, 3)
    cl = CompressedLinear.from_module(lin, pydnnz.encode(lin.weight.detach().numpy()))
    x = torch.randn(2, 4, requires_grad=True)
    y = cl(x)  # forward works with autograd on
    with pytest.raises(UnsupportedError, match="inference-only"):
        y.sum().backward()
    with torch.no_grad():
        assert not cl(x).requires_grad


def test_unsupported_options():
    w = pydnnz.encode(quantized((2, 2, 3)))
    with pytest.raises(UnsupportedError, match="padding_mode"):
        CompressedConv1d(w, padding_mode="mirror")
    with pytest.raises(UnsupportedError, match="max_norm"):
        CompressedEmbedding.from_module(nn.Embedding(4, 3, max_norm=1.0), pydnnz.encode(quantized((4, 3))))
    with pytest.raises(ShapeError, match="does not fit"):
        CompressedLinear.from_module(nn.Linear(3, 4), pydnnz.encode(quantized((3, 4))))
    with pytest.raises(ShapeError):
        CompressedConv2d(w)  # a 3-D weight is not a Conv2d weight


def test_extra_repr_shows_the_encoding():
    lin = nn.Linear(64, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(quantized((32, 64), k=8)))
    cl = CompressedLinear.from_module(lin, pydnnz.encode(lin.weight.detach().numpy(), encoding="im"))
    text = repr(cl)
    assert "encoding=im" in text and f"nbytes={cl.nbytes}" in text and "psi=" in text
    assert cl.psi == cl.nbytes / (4 * 32 * 64) < 0.25


# ---- compress_model ----------------------------------------------------------------------------

def test_compress_model_replaces_the_claimed_layers(small):
    comp = pt.compress_model(small, ALL_UQ)
    kinds = {n: type(m).__name__ for n, m in comp.named_children()}
    assert kinds == {"embed": "CompressedEmbedding", "conv1d": "CompressedConv1d", "conv_a": "CompressedConv2d",
                     "conv_g": "CompressedConv2d", "conv_dw": "CompressedConv2d", "conv_v": "CompressedConv2d",
                     "norm": "BatchNorm2d", "fc": "CompressedLinear"}
    assert isinstance(small.fc, nn.Linear)  # not inplace: the original is untouched
    for m in comp.modules():
        if hasattr(m, "encoded"):
            assert len(np.unique(m.encoded.decode())) <= 16
            if getattr(m, "bias", None) is not None:
                assert m.bias.dtype == torch.float32
    # biases are not compressed: they equal the original ones bit for bit
    assert torch.equal(comp.fc.bias, small.fc.bias)


def test_compressed_model_equals_dense_model_on_the_same_quantized_weights(small):
    comp = pt.compress_model(small, ALL_UQ)
    dense = pt.decompress_model(comp)
    assert isinstance(dense.conv_dw, nn.Conv2d) and dense.conv_dw.groups == 8
    img, ids = small_inputs()
    with torch.no_grad():
        assert_close(comp(img, ids), dense(img, ids))
        assert not torch.allclose(dense(img, ids), small(img, ids))  # quantization did something


def test_lossy_step_is_pydnnz_compress(small):
    """The encoded weights are exactly what pydnnz.compress.compress_weights returns."""
    from pydnnz.compress import compress_weights

    comp = pt.compress_model(small, {"type": "Linear", "method": "cws", "k": 4, "prune": 50, "seed": 3})
    ref = compress_weights({"fc.weight": small.fc.weight.detach().numpy()}, "cws", k=4, prune=50,
                           unified=False, layer_types={"fc.weight": "dense"}, types=("dense",), seed=3)
    np.testing.assert_array_equal(comp.fc.encoded.decode(), ref["fc.weight"].to_dense())
    assert np.mean(comp.fc.encoded.decode() == 0) == pytest.approx(0.5, abs=1 / comp.fc.encoded.decode().size)


def test_unified_codebook_is_shared_per_layer_kind(small):
    comp = pt.compress_model(small, {"type": "conv", "method": "cws", "k": 8, "unified": True})
    values = [set(np.unique(getattr(comp, n).encoded.decode()).tolist())
              for n in ("conv1d", "conv_a", "conv_g", "conv_dw", "conv_v")]
    union = set().union(*values)
    assert len(union) <= 8  # one codebook of 8 values over all conv layers
    per_layer = pt.compress_model(small, {"type": "conv", "method": "cws", "k": 8})
    union2 = set().union(*[set(np.unique(getattr(per_layer, n).encoded.decode()).tolist())
                           for n in ("conv1d", "conv_a", "conv_g", "conv_dw", "conv_v")])
    assert len(union2) > 8


def test_rules_first_match_wins_and_defaults(small):
    comp = pt.compress_model(small, [{"match": "conv_dw", "method": "none"},
                                     {"match": "conv_*", "method": "cws", "k": 4, "encoding": "im"},
                                     {"method": "pr_cws", "k": 8}])
    assert isinstance(comp.conv_dw, nn.Conv2d) and isinstance(comp.embed, nn.Embedding)  # none / default types
    assert comp.conv_a.encoded.encoding == "im" and len(np.unique(comp.conv_a.encoded.decode())) <= 4
    assert isinstance(comp.fc, CompressedLinear) and isinstance(comp.conv1d, CompressedConv1d)
    meta = comp.dnnz_metadata
    import json

    layers = {row["layer"]: row for row in json.loads(meta["pydnnz.layers"])}
    assert layers["fc"]["method"] == "pr_cws" and layers["fc"]["prune"] == 90.0
    assert layers["conv_a"]["rule"] == 1 and "conv_dw" not in layers
    assert json.loads(meta["pydnnz.recipe"])[2]["method"] == "pr_cws"
    summary = json.loads(meta["pydnnz.summary"])
    assert 0 < summary["all"]["psi"] < 1


def test_compress_model_inplace(small):
    import copy

    model = copy.deepcopy(small)
    out = pt.compress_model(model, "uq", inplace=True)
    assert out is model and isinstance(model.fc, CompressedLinear)


# ---- recipe validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("recipe, message", [
    ({"method": "cws", "kk": 3}, r"rule 0: unknown key 'kk'"),
    ([{"method": "uq"}, {"methd": "uq"}], r"rule 1: unknown key 'methd'"),
    ({"method": "kmeans"}, r"unknown method 'kmeans'"),
    ({"method": "cws", "k": 1}, r"'k' must be >= 2"),
    ({"method": "cws", "k": 2.5}, r"'k' must be an int"),
    ({"method": "cws", "prune": 100}, r"'prune' is a percentile"),
    ({"method": "none", "prune": 50}, r"'prune' given with method 'none'"),
    ({"method": "prune", "k": 4}, r"'k' makes no sense"),
    ({"method": "cws", "lam": 0.1}, r"'lam' is ECSQ's parameter"),
    ({"match": "a", "layers": "b"}, r"not both"),
    ({"type": "Conv3d"}, r"unknown layer type 'Conv3d'"),
    ({"unified": "yes"}, r"'unified' must be True or False"),
    ({"encoding": "zip"}, r"unknown encoding 'zip'"),
    ({"seed": -1}, r"'seed' must be >= 0"),
    ({"options": {"x": object()}}, r"JSON values"),
    ([], r"no rule"),
    (42, r"a recipe is a dict"),
    ([{"match": "conv_*"}, {"match": "nothing*"}], r"rule 1 \(match nothing\*\) matches no layer"),
])
def test_recipe_errors_name_the_rule_and_key(small, recipe, message):
    with pytest.raises(InvalidArgumentError, match=message):
        pt.compress_model(small, recipe)


def test_recipe_spellings():
    rules = pt.parse_recipe([{"method": "pruCWS"}, {"method": "pr-uq", "prune": 60}, {"method": "ecsq", "prune": 30,
                             "lambda": 0.01}, {"type": nn.Conv2d, "method": "PWS"}, "prune"])
    assert [r.method for r in rules] == ["pr_cws", "pr_uq", "pr_ecsq", "pws", "prune"]
    assert rules[0].prune == 90.0 and rules[1].prune == 60.0 and rules[2].lam == 0.01
    assert rules[3].types == ("Conv2d",) and rules[4].k is None


# ---- save_model / load_model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    comp = pt.compress_model(small, ALL_UQ)
    path = tmp_path_factory.mktemp("torch") / "small.dnnz"
    pt.save_model(comp, path, metadata={"test_mse": "0.5"})
    return comp, path


def test_save_load_roundtrip(saved, small):
    comp, path = saved
    torch.manual_seed(99)
    fresh = Small().eval()
    loaded = pt.load_model(path, fresh)
    assert loaded is fresh
    assert {n: type(m) for n, m in loaded.named_children()} == {n: type(m) for n, m in comp.named_children()}
    img, ids = small_inputs(1)
    with torch.no_grad():
        assert torch.equal(loaded(img, ids), comp(img, ids))  # same encoded bytes, same kernels
    assert torch.equal(loaded.norm.running_mean, small.norm.running_mean)  # buffers travel raw
    meta = pt.read_metadata(path)
    assert meta["test_mse"] == "0.5" and meta["pydnnz.recipe"][0]["method"] == "uq"
    assert loaded.dnnz_metadata["test_mse"] == "0.5"
    # the file stores the compressed weights as encoded tensors and the rest raw
    f = pydnnz.load_file(path)
    assert hasattr(f["conv_g.weight"], "encoding") and isinstance(f["conv_g.bias"], np.ndarray)
    assert isinstance(f["norm.weight"], np.ndarray)


def test_load_into_an_already_compressed_model_and_a_meta_model(saved):
    comp, path = saved
    again = pt.load_model(path, pt.compress_model(Small(), ALL_UQ)).eval()
    with torch.device("meta"):
        meta_model = Small()
    from_meta = pt.load_model(path, meta_model).eval()
    img, ids = small_inputs(2)
    with torch.no_grad():
        ref = comp(img, ids)
        assert torch.equal(again(img, ids), ref)
        assert torch.equal(from_meta(img, ids), ref)
    assert not any(t.is_meta for t in from_meta.state_dict().values())


def test_dense_model_roundtrip(tmp_path, small):
    pt.save_model(small, tmp_path / "dense.dnnz")
    loaded = pt.load_model(tmp_path / "dense.dnnz", Small().eval())
    for (k, a), (_, b) in zip(small.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


class Other(nn.Module):
    def __init__(self, fc_in=32, extra=False):
        super().__init__()
        self.fc = nn.Linear(fc_in, 5)
        if extra:
            self.head = nn.Linear(5, 2)


def test_missing_and_unexpected_keys(saved):
    _, path = saved
    with pytest.raises(pt.ModelMismatchError) as info:
        pt.load_model(path, Other(extra=True))
    err = info.value
    assert "head.weight" in err.missing and "head.bias" in err.missing
    assert "conv_a.weight" in err.unexpected and "fc.weight" not in err.unexpected
    assert "missing from the file: head.bias, head.weight" in str(err)
    assert isinstance(err, DnnzError)
    with pytest.warns(UserWarning, match="missing key"):
        model = pt.load_model(path, Other(extra=True), strict=False)
    assert isinstance(model.fc, CompressedLinear) and isinstance(model.head, nn.Linear)


def test_shape_mismatch(saved):
    _, path = saved
    model = Other(fc_in=33)
    before = model.fc.weight.clone()
    with pytest.raises(ShapeError, match=r"'fc.weight' has shape \(5, 32\) in the file, the model expects \(5, 33\)"), \
            pytest.warns(UserWarning, match="unexpected key"):
        pt.load_model(path, model, strict=False)
    assert isinstance(model.fc, nn.Linear) and torch.equal(model.fc.weight, before)  # untouched


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(3, 4))


def test_encoded_tensor_that_the_module_cannot_hold(tmp_path):
    for model, key, shape, owner in [
            (nn.Sequential(nn.Linear(4, 4), nn.Bilinear(3, 4, 2)), "1.weight", (2, 3, 4), "a Bilinear's 'weight'"),
            (nn.Sequential(nn.Linear(4, 4), Holder()), "1.table", (3, 4), "a Holder's 'table'")]:
        tensors = pt.model_tensors(model)
        tensors[key] = pydnnz.encode(quantized(shape))
        pydnnz.save_file(tensors, tmp_path / "bad.dnnz")
        with pytest.raises(pt.ModelMismatchError, match=rf"'{key}' is stored compressed .* belongs to {owner}"):
            pt.load_model(tmp_path / "bad.dnnz", model)
    # the right module type but a compressed weight of another shape
    model = nn.Sequential(nn.Linear(4, 4))
    pydnnz.save_file({"0.weight": pydnnz.encode(quantized((4, 5))), "0.bias": np.zeros(4, np.float32)},
                     tmp_path / "shape.dnnz")
    with pytest.raises(ShapeError, match=r"'0.weight' has shape \(4, 5\)"):
        pt.load_model(tmp_path / "shape.dnnz", model)


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError):
        pt.save_model({"a": 1}, tmp_path / "x.dnnz")
    with pytest.raises(InvalidArgumentError, match="metadata"):
        pt.save_model(nn.Linear(2, 2), tmp_path / "x.dnnz", metadata={"a": 1})
    with pytest.raises(InvalidArgumentError, match="single layer"):
        pt.compress_model(nn.Linear(2, 2), "uq")
    with pytest.raises(FileNotFoundError):
        pt.load_model(tmp_path / "missing.dnnz", nn.Linear(2, 2))
    (tmp_path / "junk.dnnz").write_bytes(b"not a dnnz file at all, just bytes" * 4)
    with pytest.raises(DnnzError):
        pt.load_model(tmp_path / "junk.dnnz", nn.Sequential(nn.Linear(2, 2)))


# ---- fine-tuning hook ----------------------------------------------------------------------------

def test_finetune_keeps_the_structure_and_lowers_the_loss():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    x = torch.randn(256, 8)
    with torch.no_grad():
        y = teacher(x)
    student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    student.load_state_dict(teacher.state_dict())
    recipe = {"method": "cws", "k": 4, "prune": 50}
    losses = []

    def train(model):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(60):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())

    tuned = pt.compress_model(student, recipe, finetune=train)
    plain = pt.compress_model(student, recipe)
    assert losses and losses[-1] < losses[0]
    for name in ("0", "2"):
        a, b = getattr(tuned, name).encoded.decode(), getattr(plain, name).encoded.decode()
        np.testing.assert_array_equal(a == 0, b == 0)  # the pruning mask is kept
        assert len(np.unique(a)) <= len(np.unique(b))  # still at most k values + 0
    with torch.no_grad():
        assert (nn.functional.mse_loss(tuned(x), y) < nn.functional.mse_loss(plain(x), y))


# ---- optional torch -------------------------------------------------------------------------------

def test_pydnnz_does_not_import_torch_and_says_when_it_is_missing():
    code = ("import sys, pydnnz; assert 'torch' not in sys.modules, 'pydnnz imported torch';"
            "sys.modules['torch'] = None\n"
            "try:\n import pydnnz.torch\nexcept ImportError as e:\n print(e)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pydnnz.torch needs PyTorch" in out.stdout


@pytest.mark.parametrize("encoding", pydnnz.encodings.encodings())
def test_every_encoding_runs_the_layers(encoding):
    """Linear, grouped Conv2d and Embedding from each encoding equal the dense modules."""
    torch.manual_seed(4)
    lin, conv, emb = nn.Linear(40, 6), nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Embedding(12, 5)
    for m in (lin, conv, emb):
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(quantized(tuple(m.weight.shape), k=8, zeros=0.7)))
    enc = {m: pydnnz.encode(m.weight.detach().numpy(), encoding=encoding) for m in (lin, conv, emb)}
    x, img, ids = torch.randn(3, 40), torch.randn(2, 4, 5, 6), torch.tensor([[0, 11, 3]])
    with torch.no_grad():
        assert_close(CompressedLinear.from_module(lin, enc[lin])(x), lin(x))
        comp = CompressedConv2d.from_module(conv, enc[conv])
        assert comp.encoded is enc[conv]  # grouped convs run from the file's matrix, never re-encoded
        assert_close(comp(img), conv(img))
        assert torch.equal(CompressedEmbedding.from_module(emb, enc[emb])(ids), emb(ids))


def test_models_with_used_compressed_layers_can_be_copied(small):
    """EncodedMatrix objects cannot be deep-copied once used (they cache a cffi struct): the
    copies made by compress_model / decompress_model share them instead."""
    comp = pt.compress_model(small, {"type": "conv", "method": "uq", "k": 8})
    img, ids = small_inputs()
    with torch.no_grad():
        ref = comp(img, ids)
        again = pt.compress_model(comp, {"type": "Linear", "method": "cws", "k": 4})  # copies comp
        assert again.conv_a.encoded is comp.conv_a.encoded and isinstance(again.fc, CompressedLinear)
        assert_close(pt.decompress_model(comp)(img, ids), ref)
