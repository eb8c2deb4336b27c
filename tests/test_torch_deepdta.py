"""pydnnz.torch on the DeepDTA DAVIS baseline (bundled model and test fold).

compress (Pr 90% + CWS k=32, and unpruned CWS k=32, on the dense layers) -> save_model ->
load_model into a freshly built DeepDTA -> predict, against the dequantized dense model: the
baseline with the SAME quantized weights (QuantizedTensor.to_dense() from pydnnz.compress) run by
PyTorch. Tolerances: predictions within 1e-4 absolute (float32 summation order only; values are
O(5)), MSE within 1e-5 and CI within 5e-4 (a pair whose two predictions lie within 1e-4 may flip).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

import pydnnz  # noqa: E402
import pydnnz.torch as pt  # noqa: E402
from pydnnz.compress import compress_weights  # noqa: E402
from pydnnz.examples import deepdta  # noqa: E402

DENSE = ("fc1", "fc2", "fc3", "out")
RECIPES = {
    "pr90_cws32": {"type": "Linear", "method": "cws", "k": 32, "prune": 90},
    "cws32": {"type": "Linear", "method": "cws", "k": 32},
}
PRED_ATOL, MSE_ATOL, CI_ATOL = 1e-4, 1e-5, 5e-4


@pytest.fixture(scope="module")
def data():
    return deepdta.load_bundled_davis()


@pytest.fixture(scope="module")
def sub(data):
    """Every test pair of 12 proteins (the protein branch dominates the cost of predict)."""
    proteins = np.unique(data.protein_index)[::37][:12]
    return data.subset(np.flatnonzero(np.isin(data.protein_index, proteins)))


@pytest.fixture(scope="module")
def baseline():
    return deepdta.load_model()


_CASES = {}


def build_case(name, baseline, tmp_path_factory):
    """(name, compressed model loaded from its .dnnz, dequantized dense reference, file path,
    the lossy results), built once per recipe."""
    if name not in _CASES:
        _CASES[name] = _build_case(name, baseline, tmp_path_factory)
    return _CASES[name]


@pytest.fixture(scope="module", params=sorted(RECIPES))
def case(request, baseline, tmp_path_factory):
    return build_case(request.param, baseline, tmp_path_factory)


def _build_case(name, baseline, tmp_path_factory):
    rule = RECIPES[name]
    compressed = pt.compress_model(baseline, rule)
    path = tmp_path_factory.mktemp("deepdta") / f"{name}.dnnz"
    pt.save_model(compressed, path, metadata={"model": "DeepDTA DAVIS"})
    loaded = pt.load_model(path, deepdta.build_model()).eval()

    # The reference: the same lossy step through pydnnz.compress, dequantized, run dense.
    weights = {f"{n}.weight": getattr(baseline, n).weight.detach().numpy() for n in DENSE}
    q = compress_weights(weights, "cws", k=32, prune=rule.get("prune"), unified=False,
                         layer_types={k: "dense" for k in weights}, types=("dense",), seed=0)
    reference = deepdta.load_model()
    with torch.no_grad():
        for key, value in q.items():
            reference.get_submodule(key[:-len(".weight")]).weight.copy_(torch.from_numpy(value.to_dense()))
    return name, loaded, reference.eval(), path, q


def test_loaded_layers_are_compressed_and_hold_the_quantized_weights(case, baseline):
    name, loaded, reference, path, q = case
    for n in DENSE:
        layer = getattr(loaded, n)
        assert isinstance(layer, pt.CompressedLinear)
        np.testing.assert_array_equal(layer.encoded.decode(), q[f"{n}.weight"].to_dense())
        assert torch.equal(layer.bias, getattr(baseline, n).bias)  # biases stay float32, untouched
        assert len(np.unique(layer.encoded.decode())) <= 33
    assert isinstance(loaded.smi_conv[0], torch.nn.Conv1d)  # conv layers were not in the recipe
    assert torch.equal(loaded.prot_embed.weight, baseline.prot_embed.weight)
    meta = pt.read_metadata(path)
    assert meta["model"] == "DeepDTA DAVIS"
    assert meta["pydnnz.summary"]["dense"]["psi"] < (0.1 if name == "pr90_cws32" else 0.2)


def test_predictions_match_the_dequantized_dense_model_on_a_subset(case, sub, baseline):
    name, loaded, reference, _, _ = case
    got = deepdta.predict(loaded, sub)
    want = deepdta.predict(reference, sub)
    np.testing.assert_allclose(got, want, rtol=0, atol=PRED_ATOL)
    assert deepdta.mse(sub.y, got) == pytest.approx(deepdta.mse(sub.y, want), abs=MSE_ATOL)
    assert deepdta.concordance_index(sub.y, got) == pytest.approx(deepdta.concordance_index(sub.y, want),
                                                                   abs=CI_ATOL)
    if name == "cws32":  # 32 shared values per layer cost little accuracy even without fine-tuning
        assert deepdta.mse(sub.y, got) < deepdta.mse(sub.y, deepdta.predict(baseline, sub)) + 0.02


def test_whole_test_fold_pr90_cws32(data, baseline, tmp_path_factory):
    """All 5,010 test pairs through the model loaded from the .dnnz (pruning without fine-tuning
    costs accuracy: this compares with the same quantized weights run dense, not the baseline)."""
    _, loaded, reference, _, _ = build_case("pr90_cws32", baseline, tmp_path_factory)
    got = deepdta.predict(loaded, data)
    want = deepdta.predict(reference, data)
    assert got.shape == (len(data),)
    np.testing.assert_allclose(got, want, rtol=0, atol=PRED_ATOL)
    assert deepdta.mse(data.y, got) == pytest.approx(deepdta.mse(data.y, want), abs=MSE_ATOL)
    assert deepdta.concordance_index(data.y, got) == pytest.approx(deepdta.concordance_index(data.y, want),
                                                                   abs=CI_ATOL)


def test_conv_layers_compressed_too(sub, baseline, tmp_path):
    """Conv layers compressed as well (UQ k = 256), run from the file: im2col + C matmul."""
    recipe = [{"type": "Linear", "method": "cws", "k": 32},
              {"type": "conv", "method": "uq", "k": 256}]
    compressed = pt.compress_model(baseline, recipe)
    reference = pt.decompress_model(compressed)  # exact decoded weights, run by PyTorch
    pt.save_model(compressed, tmp_path / "m.dnnz")
    loaded = pt.load_model(tmp_path / "m.dnnz", deepdta.build_model())
    assert isinstance(loaded.prot_conv[2], pt.CompressedConv1d) and isinstance(loaded.fc1, pt.CompressedLinear)
    got = deepdta.predict(loaded, sub)
    want = deepdta.predict(reference, sub)
    np.testing.assert_allclose(got, want, rtol=0, atol=PRED_ATOL)
    assert deepdta.mse(sub.y, got) == pytest.approx(deepdta.mse(sub.y, want), abs=MSE_ATOL)
    assert deepdta.concordance_index(sub.y, got) == pytest.approx(deepdta.concordance_index(sub.y, want),
                                                                   abs=CI_ATOL)
    assert deepdta.mse(sub.y, got) < deepdta.mse(sub.y, deepdta.predict(baseline, sub)) + 0.02
    # the file is much smaller than the float32 safetensors checkpoint
    assert (tmp_path / "m.dnnz").stat().st_size < 0.25 * deepdta.bundled_model_path().stat().st_size
