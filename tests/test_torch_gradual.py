"""pydnnz.torch.prune_gradually: the study's gradual pruning (GPr) with the public API, and the
pipeline that follows it (compress_model with a pr_* rule at the same p keeps its zeros)."""
import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pydnnz  # noqa: E402
import pydnnz.torch as pt  # noqa: E402
from pydnnz.errors import InvalidArgumentError  # noqa: E402
from pydnnz.torch import _gradual  # noqa: E402


def _task(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(12, 64), torch.nn.ReLU(), torch.nn.Linear(64, 48), torch.nn.ReLU(),
                              torch.nn.Linear(48, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 12, generator=g)
    y = x[:, :3].sum(1, keepdim=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []

    def step(model, i):
        idx = torch.randint(0, 512, (64,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        return loss

    return net, step, losses, x, y


def test_docstring_example_runs():
    res = doctest.testmod(_gradual, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 1 and res.failed == 0


def test_global_scope_prunes_exactly_p_of_all_selected_weights_and_trains():
    net, step, losses, _, _ = _task()
    before_out = net[4].weight.detach().clone()
    masks = pt.prune_gradually(net, 80, 300, step, exclude="4", progress=False)
    assert set(masks) == {"0", "2"}
    ws = {"0": net[0].weight.detach(), "2": net[2].weight.detach()}
    zeros = sum(int((w == 0).sum()) for w in ws.values())
    total = sum(w.numel() for w in ws.values())
    assert zeros == round(0.8 * total)
    for n, w in ws.items():
        assert torch.equal(masks[n], w != 0)                 # the returned masks are the zero pattern
        assert not torch.signbit(w[w == 0]).any()             # +0.0, never -0.0
    assert (ws["0"] == 0).float().mean() != (ws["2"] == 0).float().mean()   # one threshold, not per layer
    assert (net[4].weight != 0).all() and not torch.equal(net[4].weight, before_out)   # excluded, trained
    assert np.mean(losses[-30:]) < np.mean(losses[:30])
    # the hooks are gone: a plain backward no longer masks gradients
    net.zero_grad()
    net(torch.randn(4, 12)).sum().backward()
    assert (net[0].weight.grad[net[0].weight == 0] != 0).any()


def test_layer_scope_prunes_p_of_each_layer():
    net, step, _, _, _ = _task(1)
    pt.prune_gradually(net, 60, 50, step, layers=["0", "2"], scope="layer", updates=5, progress=False)
    for i in (0, 2):
        w = net[i].weight
        assert int((w == 0).sum()) == round(0.6 * w.numel())
    assert (net[4].weight != 0).all()   # not selected


def test_zero_steps_is_one_shot_pruning_and_p_zero_prunes_nothing():
    net, step, losses, _, _ = _task(2)
    pt.prune_gradually(net, 50, 0, step, scope="layer", progress=False)
    assert not losses
    assert int((net[0].weight == 0).sum()) == round(0.5 * net[0].weight.numel())
    net, step, _, _, _ = _task(3)
    pt.prune_gradually(net, 0, 5, step, progress=False)
    assert (net[0].weight != 0).all()


def test_pruned_weights_stay_zero_under_momentum():
    """SGD with momentum keeps moving a weight after its gradient vanishes; the reset after
    every step keeps it pruned."""
    torch.manual_seed(0)
    net = torch.nn.Linear(32, 32)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.99)
    x = torch.randn(64, 32)

    def step(model, i):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    masks = pt.prune_gradually(net, 75, 40, step, progress=False)
    assert torch.equal(masks[""], net.weight != 0)
    assert int((net.weight == 0).sum()) == 768


def test_then_compress_model_keeps_the_zeros_and_matches_dense_inference(tmp_path):
    net, step, _, x, _ = _task(4)
    pt.prune_gradually(net, 90, 200, step, exclude="4", progress=False)
    zeros = {i: (net[i].weight == 0).clone() for i in (0, 2)}
    recipe = [{"match": "4", "method": "uq", "k": 16},
              {"type": "Linear", "method": "pr_uq", "prune": 90, "k": 16, "unified": True,
               "options": {"prune_scope": "global"}}]
    small = pt.compress_model(net, recipe)
    for i in (0, 2):
        w = torch.from_numpy(small[i].encoded.decode().reshape(net[i].weight.shape))
        assert torch.equal(w == 0, zeros[i])                  # the same zero pattern, no extra pruning
    path = tmp_path / "m.dnnz"
    pt.save_model(small, str(path))
    loaded = pt.load_model(str(path), torch.nn.Sequential(torch.nn.Linear(12, 64), torch.nn.ReLU(),
                                                          torch.nn.Linear(64, 48), torch.nn.ReLU(),
                                                          torch.nn.Linear(48, 1)))
    dense = pt.decompress_model(small)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), dense(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=100), "p must be"), (dict(p=-1), "p must be"), (dict(p=float("nan")), "p must be"),
    (dict(p=True), "p must be"), (dict(steps=-1), "steps"), (dict(steps=2.5), "steps"),
    (dict(train_step=3), "callable"), (dict(scope="row"), "scope"), (dict(ramp=0), "ramp"),
    (dict(ramp=1.5), "ramp"), (dict(updates=0), "updates"), (dict(layers="nothing*"), "no layer"),
    (dict(exclude=["0", "2", "4"]), "no layer"), (dict(layers=3), "glob"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    net, step, _, _, _ = _task()
    args = dict(p=50, steps=2, train_step=step)
    args.update(kwargs)
    p, steps, fn = args.pop("p"), args.pop("steps"), args.pop("train_step")
    with pytest.raises(InvalidArgumentError, match=match):
        pt.prune_gradually(net, p, steps, fn, progress=False, **args)
    assert (net[0].weight != 0).all()   # nothing pruned on a refused call


def test_is_a_dnnz_error():
    assert issubclass(InvalidArgumentError, pydnnz.DnnzError)
