"""encode(..., "auto") never fails on a valid matrix: encodings whose alphabet cannot hold the
matrix step aside before any Huffman work, and errors name the layer (API) or file and tensor (CLI)."""
import numpy as np
import pytest
import torch

import pydnnz
from pydnnz import errors
from pydnnz.huffman import MAX_SYMBOLS

from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def many_values():
    """More distinct non-zero floats than any Huffman alphabet holds (MAX_SYMBOLS = 2**20)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1000, 1100)).astype(np.float32)
    assert np.unique(w).size > MAX_SYMBOLS
    return w


def test_auto_steps_past_encodings_whose_alphabet_overflows(many_values):
    e = pydnnz.encode(many_values)
    assert e.encoding == "dense"
    assert np.array_equal(e.decode(), many_values)


@pytest.mark.parametrize("name", ["ham", "sham", "rlham", "im8"])
def test_naming_an_encoding_that_cannot_apply_says_why(many_values, name):
    with pytest.raises(errors.InvalidArgumentError, match=f"encoding '{name}' cannot represent.*distinct"):
        pydnnz.encode(many_values, name)


def test_sham_applicability_is_decided_before_any_huffman_work(many_values, monkeypatch):
    from pydnnz.encodings import sham

    m = pydnnz.encodings.MatrixInput(many_values)
    monkeypatch.setattr(sham, "code_for", lambda counts: pytest.fail("sham built a code it cannot use"))
    assert not sham.SparseHuffmanAddressMap.applicable(m)
    from pydnnz.encodings import rlham
    monkeypatch.setattr(rlham, "_pairs", lambda m: pytest.fail("rlham planned runs it cannot use"))
    assert not rlham.RunLengthHuffmanAddressMap.applicable(m)


def test_compress_model_error_names_the_layer(many_values):
    import pydnnz.torch as pt

    model = torch.nn.Sequential(torch.nn.Linear(1100, 1000))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(many_values))
    with pytest.raises(errors.InvalidArgumentError, match="layer '0'.*sham"):
        pt.compress_model(model, {"method": "prune", "prune": 1, "encoding": "sham"}, progress=False)


def test_cli_error_names_file_and_tensor(tmp_path, many_values):
    src = tmp_path / "big.npz"
    np.savez(src, **{"head.weight": many_values})
    proc = run("compress", src, "-o", tmp_path / "out.dnnz", "--encoding", "sham")
    assert proc.returncode != 0
    one_line_error(proc, str(src), "'head.weight'", "sham")
    assert not (tmp_path / "out.dnnz").exists()
    # The default (auto) succeeds on the same file and keeps the values exactly.
    run("compress", src, "-o", tmp_path / "ok.dnnz", check_rc=0)
    from pydnnz.convert import read_tensors

    assert np.array_equal(read_tensors(tmp_path / "ok.dnnz")[0]["head.weight"], many_values)


def test_auto_skips_encodings_whose_lower_bound_already_loses(monkeypatch):
    """A random float layer (every value distinct, within the Huffman alphabet): ham/sham/rlham's
    tables alone outweigh dense, so auto never plans a code for them."""
    from pydnnz.encodings import ham, rlham, sham

    w = np.random.default_rng(1).standard_normal((300, 300)).astype(np.float32)
    for mod, cls in ((ham, "HuffmanAddressMap"), (sham, "SparseHuffmanAddressMap"),
                     (rlham, "RunLengthHuffmanAddressMap")):
        monkeypatch.setattr(getattr(mod, cls), "_plan", classmethod(lambda c, m: pytest.fail(f"{c.name} planned")))
    e = pydnnz.encode(w)
    assert e.encoding == "dense" and np.array_equal(e.decode(), w)
