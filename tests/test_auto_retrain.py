"""auto_compress with retraining (retrain={...}): gradual pruning + UQ with fine-tuning, then the
no-retraining search on the layers training does not reach, on a tiny synthetic model."""
import json

import pytest

from pydnnz.errors import InvalidArgumentError

torch = pytest.importorskip("torch")
import pydnnz.torch as pt  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls: torch's thread pool only adds contention on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Net(torch.nn.Module):
    """An embedding (the loss below does not train it) feeding a 3-layer MLP."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 16)
        self.fc1 = torch.nn.Linear(32, 96)
        self.fc2 = torch.nn.Linear(96, 96)
        self.out = torch.nn.Linear(96, 1)

    def features(self, ids):
        return self.embed(ids).flatten(1)

    def head(self, f):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(f))))).squeeze(1)

    def forward(self, ids):
        return self.head(self.features(ids))


def _setup():
    torch.manual_seed(0)
    ids = torch.randint(0, 12, (1200, 2))
    teacher = _Net()
    with torch.no_grad():
        y = teacher(ids) + 0.05 * torch.randn(1200)
    model = _Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(250):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(ids[:1000]), y[:1000]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        feats = model.features(ids[:1000]).clone()   # the user's cached features: training reaches the head only
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(feats, y[:1000]), batch_size=64,
                                         shuffle=True)

    def evaluate(m):
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(m(ids[1000:]), y[1000:]))

    spec = {"loss": lambda m, b: torch.nn.functional.mse_loss(m.head(b[0]), b[1]), "data": loader, "steps": 40,
            "levels": [50, 75], "ks": [8, 16], "finetune_steps": 15}
    return model, evaluate, spec


def _state(m):
    return pt.decompress_model(m).state_dict()


def test_retrain_prunes_within_budget_and_replays(tmp_path):
    model, evaluate, spec = _setup()
    small, rep = pt.auto_compress(model, evaluate, "10%", retrain=spec, max_evals=8, progress=False)
    assert rep.mode == "metric+retrain" and rep.met
    assert rep.metric <= rep.limit and evaluate(small) == rep.metric
    chosen = rep.retrain["chosen"]
    assert chosen["pruned"] == ["fc1", "fc2"] and chosen["quantized_only"] == ["out"]
    assert chosen["prune"] in (50.0, 75.0) and rep.retrain["other_layers"] == ["embed"]
    dense = pt.decompress_model(small)
    zeros = sum(int((getattr(dense, n).weight == 0).sum()) for n in ("fc1", "fc2"))
    total = sum(getattr(dense, n).weight.numel() for n in ("fc1", "fc2"))
    assert zeros >= round(chosen["prune"] / 100 * total)
    assert len(torch.unique(dense.fc2.weight)) <= max(spec["ks"]) + 1   # k levels (+ the pruned zero)
    assert rep.recipe[-1]["match"] == "embed" and rep.recipe[-1]["method"] != "none"   # the rest search
    assert rep.file_bytes < 0.5 * rep.float32_bytes
    # the recipe file replays bit for bit on the retrained weights
    rep.save(tmp_path / "recipe.json")
    again = pt.compress_model(rep.base_model(model), json.loads((tmp_path / "recipe.json").read_text()))
    a, b = _state(small), _state(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rep.save_report(tmp_path / "report.json")   # JSON-serialisable (the retrained weights are not in it)
    assert json.loads((tmp_path / "report.json").read_text())["retrain"]["chosen"]["prune"] == chosen["prune"]
    # deterministic for a seed
    small2, rep2 = pt.auto_compress(model, evaluate, "10%", retrain=spec, max_evals=8, progress=False)
    c = _state(small2)
    assert rep2.file_bytes == rep.file_bytes and all(torch.equal(a[k], c[k]) for k in a)


def test_retrain_spec_errors():
    model, evaluate, spec = _setup()
    bad = [{**spec, "epochs": 3}, {k: v for k, v in spec.items() if k != "loss"}, {**spec, "levels": [90, 50]},
           {**spec, "ks": [1]}, {**spec, "steps": 0}, {**spec, "loss": 3}, {**spec, "data": 5},
           {**spec, "layers": "nothing*"}]
    for s in bad:
        with pytest.raises(InvalidArgumentError):
            pt.auto_compress(model, evaluate, 0.01, retrain=s, progress=False)
    with pytest.raises(InvalidArgumentError):
        pt.auto_compress(model, None, 0.01, retrain=spec, progress=False)
    with pytest.raises(InvalidArgumentError):
        pt.auto_compress(model, evaluate, 0.01, retrain=[1, 2], progress=False)


def test_retrain_time_limit_returns_a_verified_model():
    model, evaluate, spec = _setup()
    small, rep = pt.auto_compress(model, evaluate, "10%", retrain=spec, time_limit=0.01, max_evals=4, progress=False)
    assert rep.met and rep.metric <= rep.limit
    assert len(rep.retrain["settings"]["levels"]) == 2 and len([h for h in rep.history if h["ks"] is None]) <= 1


def test_retrain_one_trained_layer_is_quantized_not_pruned():
    model, evaluate, spec = _setup()
    small, rep = pt.auto_compress(model, evaluate, "10%", retrain={**spec, "layers": "out"}, max_evals=4,
                                  progress=False)
    chosen = rep.retrain["chosen"]
    assert rep.met and chosen["pruned"] == [] and chosen["quantized_only"] == ["out"] and chosen["prune"] == 0
    assert set(rep.retrain["other_layers"]) == {"embed", "fc1", "fc2"}
