"""DeepDTA (Öztürk et al., Bioinformatics 2018): the regression CNN of the compression study.

The architecture matches the reference checkpoints in `shared/models/` (tensor names and
PyTorch layouts), and the data helpers read the DAVIS/KIBA folders of `shared/data/deepdta/`
or the DAVIS test fold bundled with pydnnz for the demo.

Example (needs torch):
    >>> from pydnnz.examples import deepdta
    >>> data = deepdta.load_bundled_davis()          # DAVIS test fold, shipped with pydnnz
    >>> model = deepdta.load_bundled_model()         # the float32 DAVIS baseline
    >>> pred = deepdta.predict(model, data)
    >>> round(deepdta.mse(data.y, pred), 3)
    0.233
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError

SMILES_LEN = 85
PROTEIN_LEN = 1200
# Character tables of shared/models/README.md (0 = padding).
PROTEIN_CHARS = "ACBEDGFIHKMLONQPSRUTWVYXZ"
SMILES_CHARS = ("( . 0 2 4 6 8 @ B D F H L N P R T V Z \\ b d f h l n r t "
                "# % ) + - / 1 3 5 7 9 = A C E G I K M O S U W Y [ ] a c e g i m o s u y").split()
PROTEIN_TABLE = {c: i + 1 for i, c in enumerate(PROTEIN_CHARS)}
SMILES_TABLE = {c: i + 1 for i, c in enumerate(SMILES_CHARS)}
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def encode_sequence(seq: str, table: dict, length: int) -> np.ndarray:
    """Characters → integer ids, truncated / zero-padded to `length` (unknown characters → 0)."""
    out = np.zeros(length, dtype=np.uint8)
    ids = [table.get(c, 0) for c in seq[:length]]
    out[: len(ids)] = ids
    return out


@dataclass
class DtaData:
    """Drug–target pairs: drugs and proteins as id matrices, pairs as row indices into them."""

    drugs: np.ndarray      # (n_drugs, 85) uint8
    proteins: np.ndarray   # (n_proteins, 1200) uint8
    drug_index: np.ndarray  # (n_pairs,) index into drugs
    protein_index: np.ndarray  # (n_pairs,) index into proteins
    y: np.ndarray          # (n_pairs,) float32 affinity (DAVIS: -log10(Kd/1e9); KIBA: score)

    def __len__(self):
        return len(self.y)

    def subset(self, idx) -> "DtaData":
        idx = np.asarray(idx)
        return DtaData(self.drugs, self.proteins, self.drug_index[idx], self.protein_index[idx], self.y[idx])


def load_dataset(dataset_dir, fold="test") -> DtaData:
    """Read a DeepDTA data folder (`shared/data/deepdta/davis` or `.../kiba`).

    fold: "test" (the test fold), "train" (the five training folds together) or an int 0..4.
    """
    d = Path(dataset_dir)
    if not (d / "Y_raw.npy").is_file():
        raise InvalidArgumentError(f"{d}: not a DeepDTA data folder (no Y_raw.npy)")
    ligands = json.loads((d / "ligands_can.txt").read_text())
    proteins = json.loads((d / "proteins.txt").read_text())
    y_raw = np.load(d / "Y_raw.npy", allow_pickle=False)
    rows, cols = np.where(~np.isnan(y_raw))
    if fold == "test":
        idx = json.loads((d / "folds" / "test_fold_setting1.txt").read_text())
    else:
        folds = json.loads((d / "folds" / "train_fold_setting1.txt").read_text())
        idx = sum(folds, []) if fold == "train" else folds[int(fold)]
    idx = np.asarray(idx, dtype=np.int64)
    y = y_raw[rows[idx], cols[idx]]
    if "davis" in d.name.lower() or np.nanmax(y_raw) > 1000:  # DAVIS holds Kd in nM
        y = -np.log10(y / 1e9)
    drugs = np.stack([encode_sequence(s, SMILES_TABLE, SMILES_LEN) for s in ligands.values()])
    prots = np.stack([encode_sequence(s, PROTEIN_TABLE, PROTEIN_LEN) for s in proteins.values()])
    return DtaData(drugs, prots, rows[idx].astype(np.int32), cols[idx].astype(np.int32), y.astype(np.float32))


def load_bundled_davis() -> DtaData:
    """The DAVIS test fold bundled with pydnnz (exact copy of the shared data's test pairs)."""
    with np.load(DATA_DIR / "davis_test.npz", allow_pickle=False) as z:
        return DtaData(z["drugs"], z["proteins"], z["drug_index"].astype(np.int32),
                       z["protein_index"].astype(np.int32), z["y"])


def bundled_model_path() -> Path:
    return DATA_DIR / "deepdta_davis.safetensors"


def build_model():
    """A freshly initialised DeepDTA (torch.nn.Module) with the reference tensor names."""
    import torch
    from torch import nn

    class DeepDTA(nn.Module):
        def __init__(self):
            super().__init__()
            self.smi_embed = nn.Embedding(65, 128)
            self.smi_conv = nn.ModuleList([nn.Conv1d(128, 32, 12), nn.Conv1d(32, 64, 12), nn.Conv1d(64, 96, 12)])
            self.prot_embed = nn.Embedding(26, 128)
            self.prot_conv = nn.ModuleList([nn.Conv1d(128, 32, 8), nn.Conv1d(32, 64, 8), nn.Conv1d(64, 96, 8)])
            self.fc1 = nn.Linear(192, 1024)
            self.fc2 = nn.Linear(1024, 1024)
            self.fc3 = nn.Linear(1024, 512)
            self.out = nn.Linear(512, 1)
            self.dropout = nn.Dropout(0.1)

        @staticmethod
        def _branch(embed, convs, ids):
            h = embed(ids.long()).transpose(1, 2)  # (B, 128, L)
            for conv in convs:
                h = torch.relu(conv(h))
            return h.amax(dim=2)

        def encode_drug(self, smiles_ids):
            return self._branch(self.smi_embed, self.smi_conv, smiles_ids)

        def encode_protein(self, protein_ids):
            return self._branch(self.prot_embed, self.prot_conv, protein_ids)

        def head(self, drug_features, protein_features):
            h = torch.cat([drug_features, protein_features], dim=1)
            h = self.dropout(torch.relu(self.fc1(h)))
            h = self.dropout(torch.relu(self.fc2(h)))
            h = torch.relu(self.fc3(h))
            return self.out(h).squeeze(1)

        def forward(self, smiles_ids, protein_ids):
            return self.head(self.encode_drug(smiles_ids), self.encode_protein(protein_ids))

    return DeepDTA()


def load_model(path=None):
    """DeepDTA with float32 weights from a .safetensors checkpoint (default: the bundled DAVIS one)."""
    from safetensors.numpy import load_file
    import torch

    model = build_model()
    state = {k: torch.from_numpy(v.copy()) for k, v in load_file(str(path or bundled_model_path())).items()}
    model.load_state_dict(state)
    return model.eval()


load_bundled_model = load_model


def predict(model, data: DtaData, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Predicted affinities for every pair of `data`.

    Each distinct drug and protein goes through its branch once (the branches only see their own
    input), then the dense head runs on the pairs: the same numbers as `model(smiles, protein)`
    pair by pair, at a fraction of the cost (DAVIS: 442 proteins for 5,010 test pairs).
    """
    import torch

    from .._progress import progress_bar

    model.eval()
    used_d, inv_d = np.unique(data.drug_index, return_inverse=True)
    used_p, inv_p = np.unique(data.protein_index, return_inverse=True)
    with torch.inference_mode():
        feats_d = torch.cat([model.encode_drug(torch.from_numpy(data.drugs[used_d[i:i + batch_size]]))
                             for i in range(0, len(used_d), batch_size)])
        chunks = range(0, len(used_p), 64)
        feats_p = torch.cat([model.encode_protein(torch.from_numpy(data.proteins[used_p[i:i + 64]]))
                             for i in progress_bar(chunks, desc="proteins", disable=not progress)])
        out = []
        for i in range(0, len(data), 1024):
            sl = slice(i, i + 1024)
            out.append(model.head(feats_d[torch.from_numpy(inv_d[sl])], feats_p[torch.from_numpy(inv_p[sl])]))
    return torch.cat(out).numpy().astype(np.float32)


def mse(y, pred) -> float:
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    return float(np.mean((y - pred) ** 2))


def concordance_index(y, pred) -> float:
    """DeepDTA's CI: over pairs with y_i > y_j, the fraction with pred_i > pred_j (ties in pred count 1/2).

    O(n log n): sort by y, sweep groups of equal y in increasing order, and count with a Fenwick
    tree over prediction ranks how many earlier (smaller-y) pairs have a smaller / equal prediction.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    n = len(y)
    if n < 2:
        raise InvalidArgumentError("concordance_index needs at least two pairs")
    ranks = np.unique(pred, return_inverse=True)[1].ravel() + 1  # 1-based dense ranks
    size = int(ranks.max())
    tree = np.zeros(size + 1, dtype=np.int64)

    def add(i):
        while i <= size:
            tree[i] += 1
            i += i & -i

    def prefix(i):
        s = 0
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    order = np.argsort(y, kind="stable")
    ys = y[order]
    rs = ranks[order]
    bounds = np.flatnonzero(np.diff(ys)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    concordant = 0.0
    comparable = 0
    seen = 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        group = rs[s:e].tolist()
        if seen:
            for r in group:
                less = prefix(r - 1)
                equal = prefix(r) - less
                concordant += less + 0.5 * equal
            comparable += seen * (e - s)
        for r in group:
            add(r)
        seen += e - s
    if comparable == 0:
        raise InvalidArgumentError("concordance_index: every target is equal, no comparable pair")
    return float(concordant / comparable)
