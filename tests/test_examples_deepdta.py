"""The bundled DeepDTA example: data exactness, metrics, reference accuracy."""
import numpy as np
import pytest

from pydnnz.errors import InvalidArgumentError
from pydnnz.examples import deepdta


def brute_ci(y, p):
    num = den = 0.0
    for i in range(len(y)):
        m = y[i] > y
        den += m.sum()
        num += (p[i] > p[m]).sum() + 0.5 * (p[i] == p[m]).sum()
    return num / den


def test_concordance_index_matches_the_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, 300).astype(float)   # many ties in y
    p = rng.integers(0, 30, 300).astype(float)   # many ties in p
    assert deepdta.concordance_index(y, p) == pytest.approx(brute_ci(y, p), abs=1e-12)
    assert deepdta.concordance_index(y, y) == 1.0
    assert deepdta.concordance_index(y, -y) == 0.0
    with pytest.raises(InvalidArgumentError):
        deepdta.concordance_index(np.ones(5), np.arange(5.0))


def test_bundled_davis_is_the_shared_test_fold(shared_dir):
    bundled = deepdta.load_bundled_davis()
    ref = deepdta.load_dataset(shared_dir / "data" / "deepdta" / "davis", "test")
    for field in ("drugs", "proteins", "drug_index", "protein_index", "y"):
        np.testing.assert_array_equal(getattr(bundled, field), getattr(ref, field))
    assert (deepdta.bundled_model_path().read_bytes()
            == (shared_dir / "models" / "deepdta_davis.safetensors").read_bytes())


def test_bundled_model_reproduces_its_reference_metrics():
    pytest.importorskip("torch")
    data = deepdta.load_bundled_davis()
    pred = deepdta.predict(deepdta.load_model(), data)
    # shared/models/README.md: test MSE 0.2327, CI 0.8905
    assert deepdta.mse(data.y, pred) == pytest.approx(0.2327, abs=5e-4)
    assert deepdta.concordance_index(data.y, pred) == pytest.approx(0.8905, abs=5e-4)


def test_branch_caching_predict_equals_plain_forward():
    torch = pytest.importorskip("torch")
    data = deepdta.load_bundled_davis().subset(np.arange(0, 5010, 250))
    model = deepdta.load_model()
    fast = deepdta.predict(model, data)
    with torch.inference_mode():
        plain = model(torch.from_numpy(data.drugs[data.drug_index]),
                      torch.from_numpy(data.proteins[data.protein_index])).numpy()
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
