"""Fine-tuning keeps the compression structure: masks, shared values, accumulation."""
import copy
import doctest
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pydnnz import compress as C  # noqa: E402
from pydnnz.compress import finetune as ft  # noqa: E402
from pydnnz.errors import InvalidArgumentError  # noqa: E402



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread avoids oversubscription on the shared 2-core CI machine
    (10-50x slower otherwise when the other core is busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_finetune_doctests():
    res = doctest.testmod(ft, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_gradient_of_shared_value_is_sum_and_updates_accumulate():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    q = C.cws(lin.weight.detach().numpy(), 3)
    idx = torch.as_tensor(q.indices.astype(np.int64))
    c0 = torch.as_tensor(q.codebook).double()
    sw = ft.SharedWeights(lin, q)
    opt = torch.optim.SGD([sw.codebook], lr=0.1)
    x, y = torch.randn(16, 6), torch.randn(16, 4)
    sums = []
    for _ in range(2):
        # the dense gradient at the current shared values, summed per value
        w = sw.codebook.detach().clone()[idx].requires_grad_(True)
        ((x @ w.T + lin.bias.detach() - y) ** 2).mean().backward()
        sums.append(torch.zeros(3, dtype=torch.float64).index_add_(0, idx.reshape(-1), w.grad.reshape(-1).double()))
        opt.zero_grad()
        ((lin(x) - y) ** 2).mean().backward()
        np.testing.assert_allclose(sw.codebook.grad.double().numpy(), sums[-1].numpy(), rtol=1e-5, atol=1e-7)
        opt.step()
    after = sw.codebook.detach().double()
    np.testing.assert_allclose(after.numpy(), (c0 - 0.1 * (sums[0] + sums[1])).numpy(), rtol=1e-5, atol=1e-7)
    # the authors' code would restart every step from c0 (no accumulation)
    assert not torch.allclose(after, c0 - 0.1 * sums[1], atol=1e-6)
    out = sw.export()
    np.testing.assert_array_equal(out.indices, q.indices)
    assert out.k == 3 and np.all(np.diff(out.codebook) > 0)
    sw.remove()
    assert isinstance(lin.weight, nn.Parameter)
    np.testing.assert_array_equal(lin.weight.detach().numpy(), out.to_dense())


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 5)
        self.fc1 = nn.Linear(8 * 12, 32)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def regression_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, generator=g)
    y = torch.sin(x[:, 0, :4].sum(1, keepdim=True)) + 0.5 * x[:, 1, 8:10].prod(1, keepdim=True)
    return x, y


def mse(model, x, y):
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


_PRETRAINED = {}


def pretrained_tiny():
    """A small conv + dense regressor trained once per session (a fresh copy per call)."""
    x, y = regression_data()
    if not _PRETRAINED:
        torch.manual_seed(0)
        net = TinyNet()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(150):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
        _PRETRAINED.update({k: v.detach().clone() for k, v in net.state_dict().items()})
    net = TinyNet()
    net.load_state_dict(_PRETRAINED)
    return net, x, y


def state(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def test_masked_training_keeps_pruned_weights_zero_with_any_optimizer():
    net, x, y = pretrained_tiny()
    comp = C.compress_weights(state(net), "prune", prune=80)
    masks = {n: comp[n] != 0 for n in ["conv.weight", "fc1.weight", "fc2.weight"]}
    hooks = ft.attach(net, comp)
    assert set(hooks.hooks) == set(masks)  # the biases were left alone
    before = mse(net, x, y)
    # a user loop: AdamW with weight decay, then SGD with momentum, both registered
    for opt in (torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.1),
                torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-3)):
        hooks.attach_optimizer(opt)
        for _ in range(40):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
            for n, m in masks.items():
                w = net.get_parameter(n).detach().numpy()
                assert np.all(w[~m] == 0) and np.count_nonzero(w[m]) == m.sum()
    assert mse(net, x, y) < before
    out = hooks.export()
    for n, m in masks.items():
        np.testing.assert_array_equal(out[n] != 0, m)
    hooks.remove()


def test_mask_holds_even_without_registering_the_optimizer():
    lin = nn.Linear(4, 4)
    mask = np.eye(4, dtype=bool)
    ft.MaskedWeight(lin, mask)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, weight_decay=0.5)
    # Adam moments seeded on all entries before masking could revive them; the pre-hook re-masks
    opt.state[lin.weight] = {"step": torch.tensor(1.0), "exp_avg": torch.ones(4, 4),
                             "exp_avg_sq": torch.ones(4, 4)}
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        lin(x).sum().backward()
        opt.step()
        lin(x)  # the forward pass re-applies the mask before using the weight
        assert np.all(lin.weight.detach().numpy()[~mask] == 0)


@pytest.mark.parametrize("method", ["cws", "uq", "pws", "ecsq"])
def test_finetune_pruned_shared_values_keeps_structure_and_lowers_loss(method):
    net, x, y = pretrained_tiny()
    comp = C.compress_weights(state(net), method, k=4, prune=70, seed=0)
    names = ["conv.weight", "fc1.weight", "fc2.weight"]
    ft.attach(net, comp).remove()  # compressed weights into the model (dense again after remove)
    start = mse(net, x, y)
    res = ft.finetune(net, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), [(x, y)] * 60,
                      compressed=comp, lr=3e-3, optimizer="adam")
    assert len(res.losses) == 60 and mse(net, x, y) < start
    for n in names:
        q0, q1 = comp[n], res.weights[n]
        assert isinstance(q1, C.QuantizedTensor) and q1.shape == q0.shape
        assert q1.k <= q0.k and np.unique(q1.to_dense()).size == q1.k
        d = q1.to_dense()
        assert np.all(d[~q0.mask] == 0)  # pruned weights stayed exactly zero
        np.testing.assert_array_equal(q1.mask, q0.mask)
        if q1.k == q0.k:  # same cells: only the shared values moved
            np.testing.assert_array_equal(q1.indices, q0.indices)
        # the model ends with the fine-tuned compressed values
        np.testing.assert_array_equal(net.get_parameter(n).detach().numpy(), d)
    assert not np.array_equal(res.weights["fc1.weight"].codebook, comp["fc1.weight"].codebook)
    # the two dense layers still draw from one shared codebook
    union = np.union1d(res.weights["fc1.weight"].codebook, res.weights["fc2.weight"].codebook)
    assert union.size <= comp["fc1.weight"].params["group_k"]


def test_finetune_arguments():
    net, x, y = pretrained_tiny()
    comp = C.compress_weights(state(net), "cws", k=4)
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
    with pytest.raises(InvalidArgumentError):
        ft.finetune(net, loss, [(x, y)])
    with pytest.raises(InvalidArgumentError):
        ft.finetune(net, loss, [(x, y)], compressed=comp, optimizer="lbfgs-ish")
    with pytest.raises(InvalidArgumentError):
        ft.attach(net, {"nope.weight": comp["fc1.weight"]})
    with pytest.raises(InvalidArgumentError):
        ft.SharedWeights(net.fc1, comp["fc2.weight"])
    res = ft.finetune(net, loss, [(x, y)] * 10, compressed=comp, steps=3, optimizer="sgd", lr=1e-3)
    assert len(res.losses) == 3


def test_finetune_steps_the_scheduler_after_every_step():
    """A scheduler that sets the rate to 0 after the first step: five steps end where one does."""
    net, x, y = pretrained_tiny()
    comp = C.compress_weights(state(net), "cws", k=4)
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
    once = ft.finetune(copy.deepcopy(net), loss, [(x, y)] * 5, compressed=comp, steps=1, optimizer="sgd", lr=0.05)
    stop = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s == 0 else 0.0)
    five = ft.finetune(copy.deepcopy(net), loss, [(x, y)] * 5, compressed=comp, steps=5, optimizer="sgd", lr=0.05,
                       scheduler=stop)
    assert len(five.losses) == 5 and five.losses[1] != five.losses[0]  # the first step moved
    assert five.losses[1:] == [five.losses[1]] * 4
    for name, q in once.weights.items():
        np.testing.assert_array_equal(getattr(five.weights[name], "codebook", five.weights[name]), getattr(q, "codebook", q))
    with pytest.raises(InvalidArgumentError, match="scheduler"):
        ft.finetune(net, loss, [(x, y)], compressed=comp, scheduler="linear")


# ------------------------------------------------------------------------------------------------
# a real task: the DeepDTA DAVIS model's dense head, Pr-CWS 90 % / k = 4 then fine-tuning

PROT = "ACBEDGFIHKMLONQPSRUTWVYXZ"
SMI = ["(", ".", "0", "2", "4", "6", "8", "@", "B", "D", "F", "H", "L", "N", "P", "R", "T", "V",
       "Z", "\\", "b", "d", "f", "h", "l", "n", "r", "t", "#", "%", ")", "+", "-", "/", "1", "3",
       "5", "7", "9", "=", "A", "C", "E", "G", "I", "K", "M", "O", "S", "U", "W", "Y", "[", "]",
       "a", "c", "e", "g", "i", "m", "o", "s", "u", "y"]


def encode(seq, table, length):
    ids = np.zeros(length, np.int64)
    for i, ch in enumerate(seq[:length]):
        ids[i] = table.get(ch, 0)
    return ids


@pytest.fixture(scope="module")
def davis_head(shared_dir):
    from safetensors.numpy import load_file

    w = load_file(str(shared_dir / "models" / "deepdta_davis.safetensors"))
    d = shared_dir / "data" / "deepdta" / "davis"
    ligands = list(json.loads((d / "ligands_can.txt").read_text()).values())
    proteins = list(json.loads((d / "proteins.txt").read_text()).values())
    Y = np.load(d / "Y_raw.npy")
    rows, cols = np.where(~np.isnan(Y))
    train = np.array(sorted(i for f in json.loads((d / "folds" / "train_fold_setting1.txt").read_text()) for i in f))
    # a slice: pairs of the first 24 proteins (all 68 drugs), drawn from the training folds
    sel = train[cols[train] < 24][:768]
    t = lambda n: torch.as_tensor(w[n])

    def branch(ids, prefix, emb):
        h = nn.functional.embedding(torch.as_tensor(ids), t(emb)).transpose(1, 2)
        for i in range(3):
            h = torch.relu(nn.functional.conv1d(h, t(f"{prefix}.{i}.weight"), t(f"{prefix}.{i}.bias")))
        return h.amax(dim=2)

    ptab = {c: i + 1 for i, c in enumerate(PROT)}
    stab = {c: i + 1 for i, c in enumerate(SMI)}
    with torch.no_grad():
        pf = branch(np.stack([encode(proteins[j], ptab, 1200) for j in range(24)]), "prot_conv", "prot_embed.weight")
        sf = branch(np.stack([encode(s, stab, 85) for s in ligands]), "smi_conv", "smi_embed.weight")
    feats = torch.cat([sf[rows[sel]], pf[cols[sel]]], dim=1)
    target = torch.as_tensor(-np.log10(Y[rows[sel], cols[sel]] / 1e9), dtype=torch.float32)[:, None]
    head = nn.Sequential()
    head.fc1, head.fc2, head.fc3, head.out = nn.Linear(192, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 512), nn.Linear(512, 1)
    head_w = {k: v for k, v in w.items() if k.split(".")[0] in ("fc1", "fc2", "fc3", "out")}
    return head_w, feats, target


class Head(nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(192, 1024), nn.Linear(1024, 1024)
        self.fc3, self.out = nn.Linear(1024, 512), nn.Linear(512, 1)
        self.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})

    def forward(self, x):
        for f in (self.fc1, self.fc2, self.fc3):
            x = torch.relu(f(x))
        return self.out(x)


def test_davis_head_finetune_after_pruned_cws(davis_head):
    weights, feats, target = davis_head
    base = mse(Head(weights), feats, target)
    assert base < 1.0  # the trained model fits these training pairs
    comp = C.compress_weights(weights, "cws", k=4, prune=90, seed=0)
    kernels = ["fc1.weight", "fc2.weight", "fc3.weight", "out.weight"]
    assert all(comp[n].k <= 5 for n in kernels)
    model = Head({k: np.asarray(v) for k, v in comp.items()})
    compressed = mse(model, feats, target)
    assert compressed > base  # k = 4 after 90 % pruning costs accuracy ...
    g = torch.Generator().manual_seed(0)
    batches = [(feats[i], target[i]) for _ in range(4) for i in torch.randperm(len(feats), generator=g).split(128)]
    res = ft.finetune(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), batches, compressed=comp, lr=1e-3)
    tuned = mse(model, feats, target)
    assert tuned < compressed  # ... and fine-tuning wins part of it back
    for n in kernels:
        q0, q1 = comp[n], res.weights[n]
        np.testing.assert_array_equal(q1.to_dense() == 0, q0.to_dense() == 0)
        assert q1.k == q0.k
        np.testing.assert_array_equal(q1.indices, q0.indices)
