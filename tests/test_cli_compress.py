"""`dnnz compress` says what compress_model says: --recipe (JSON/TOML), --keep, --prune-scope,
per-glob --rule, --layers reaching the lossy step (embeddings too), --help listing methods and
encodings, binary units, exit codes (usage 2, data 1). In-process (main()) to stay fast."""
import json

import numpy as np
import pytest

import pydnnz
from pydnnz.cli import _human, main
from pydnnz.convert import read_tensors


@pytest.fixture
def ckpt(tmp_path):
    rng = np.random.default_rng(0)
    t = {"embed.weight": rng.standard_normal((50, 16)).astype(np.float32),
         "fc1.weight": rng.standard_normal((32, 16)).astype(np.float32),
         "fc1.bias": rng.standard_normal(32).astype(np.float32),
         "conv.weight": rng.standard_normal((8, 4, 3)).astype(np.float32),
         "head.weight": (rng.standard_normal((4, 32)) * 10).astype(np.float32)}
    p = tmp_path / "m.npz"
    np.savez(p, **t)
    return p, t


def compress(src, dst, *opts):
    return main(["compress", str(src), "-o", str(dst), *map(str, opts)])


def distinct(a):
    return np.unique(np.asarray(a, np.float32)).size


def test_keep_leaves_the_output_layer_whole(tmp_path, ckpt):
    src, t = ckpt
    assert compress(src, tmp_path / "o.dnnz", "--quantize", "cws", "--k", "4", "--keep", "head*") == 0
    back, meta = read_tensors(tmp_path / "o.dnnz")
    assert distinct(back["fc1.weight"]) <= 4 and distinct(back["conv.weight"]) <= 4
    assert np.array_equal(back["head.weight"], t["head.weight"])  # exact, losslessly encoded
    assert np.array_equal(back["embed.weight"], t["embed.weight"])  # embeddings only when named
    assert json.loads(meta["pydnnz.recipe"])["rules"][0] == {"match": ["head*"], "method": "none"}


def test_layers_naming_an_embedding_reaches_the_lossy_step(tmp_path, ckpt):
    src, t = ckpt
    assert compress(src, tmp_path / "o.dnnz", "--quantize", "uq", "--k", "8", "--layers", "embed*") == 0
    back, _ = read_tensors(tmp_path / "o.dnnz")
    assert distinct(back["embed.weight"]) <= 8
    assert np.array_equal(back["fc1.weight"], t["fc1.weight"])


def test_per_glob_rules_and_global_prune_scope(tmp_path, ckpt):
    src, t = ckpt
    rc = compress(src, tmp_path / "o.dnnz", "--rule", "conv*=uq,k=16", "--prune", "50", "--prune-scope", "global")
    assert rc == 0
    back, _ = read_tensors(tmp_path / "o.dnnz")
    assert 4 < distinct(back["conv.weight"]) <= 16
    # one threshold over fc1 and head: head's large weights survive, fc1 loses more than half
    zeros = {n: float(np.mean(back[n] == 0)) for n in ("fc1.weight", "head.weight")}
    assert zeros["fc1.weight"] > 0.5 > zeros["head.weight"]
    total = (np.sum(back["fc1.weight"] == 0) + np.sum(back["head.weight"] == 0)) / (32 * 16 + 4 * 32)
    assert abs(total - 0.5) < 0.01


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_recipe_file_same_rules_as_the_python_api(tmp_path, ckpt, fmt):
    src, t = ckpt
    rules = [{"match": "head", "method": "none"}, {"type": "conv", "method": "uq", "k": 8},
             {"method": "cws", "k": 4, "encoding": "im"}]
    path = tmp_path / f"r.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rules))
    else:
        path.write_text('[[rules]]\nmatch = "head"\nmethod = "none"\n\n[[rules]]\ntype = "conv"\nmethod = "uq"\n'
                        'k = 8\n\n[[rules]]\nmethod = "cws"\nk = 4\nencoding = "im"\n')
    assert compress(src, tmp_path / "o.dnnz", "--recipe", path) == 0
    f = pydnnz.load_file(tmp_path / "o.dnnz")
    assert f["fc1.weight"].encoding == "im" and distinct(f["fc1.weight"].decode()) <= 4
    assert distinct(f["conv.weight"].decode()) <= 8
    back, _ = read_tensors(tmp_path / "o.dnnz")
    assert np.array_equal(back["head.weight"], t["head.weight"])


def test_usage_errors_exit_2_data_errors_exit_1(tmp_path, ckpt, capsys):
    src, _ = ckpt
    bad = tmp_path / "bad.json"
    bad.write_text('[{"method": "cws", "k": 1}]')
    assert compress(src, tmp_path / "a.dnnz", "--recipe", bad) == 2
    assert "'k' must be >= 2" in capsys.readouterr().err
    assert compress(src, tmp_path / "a.dnnz", "--rule", "nothing*=uq") == 2
    assert "matches no weight" in capsys.readouterr().err
    assert compress(src, tmp_path / "a.dnnz", "--rule", "fc1") == 2
    assert "expected GLOB=METHOD" in capsys.readouterr().err
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    assert compress(broken, tmp_path / "b.dnnz") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0]
    assert not (tmp_path / "a.dnnz").exists() and not (tmp_path / "b.dnnz").exists()


def test_help_lists_methods_and_encodings(capsys):
    with pytest.raises(SystemExit):
        from pydnnz.cli import build_parser
        build_parser().parse_args(["compress", "--help"])
    out = capsys.readouterr().out
    for word in ("cws", "ecsq", "pr_X", "auto", "ham", "sham", "rlham", "csc", "--recipe", "--keep", "--prune-scope"):
        assert word in out


def test_sizes_use_binary_units():
    assert _human(1536) == "1.50 KiB" and _human(3 * 2**20) == "3.00 MiB" and _human(12) == "12 B"


def test_rules_are_refused_on_the_streaming_path_not_ignored(tmp_path, ckpt, capsys):
    src, _ = ckpt
    assert compress(src, tmp_path / "o.dnnz", "--workers", "2", "--keep", "head*") == 2
    assert "single-file compress only" in capsys.readouterr().err


def test_k_not_smaller_than_the_weight_count_warns_on_the_numpy_and_cli_paths(tmp_path, ckpt, capsys):
    """Issue 16: k larger than a layer's weight count silently stored it as it was (psi 1.0). The torch
    path warned; compress_weights, quantize and dnnz compress now say so too, naming the tensor."""
    import warnings

    from pydnnz.compress import compress_weights, cws, quantize
    from pydnnz.errors import KNotSmallerWarning

    w = {"small.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
         "big.weight": np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)}
    with pytest.warns(KNotSmallerWarning, match=r"'small.weight': k=8 is not smaller than its 6 weights") as rec:
        out = compress_weights(w, "cws", k=8, unified=False)
    assert len(rec) == 1  # big.weight (64 weights) is fine, and quantize's own warning is not repeated
    assert np.array_equal(np.asarray(out["small.weight"]), w["small.weight"])  # came back exact
    with pytest.warns(KNotSmallerWarning, match="k=6 is not smaller than the 6 weights"):
        cws(w["small.weight"], 6)
    # UQ still rounds to its grid, so its message must not claim the values come back unchanged
    with pytest.warns(KNotSmallerWarning, match=r"k=4 is not smaller than the 4 weights, so uq's codebook is as large as the weights themselves and "
                      r"nothing is gained \(the values are still rounded to its grid\)") as rec:
        uneven = np.float32([-0.31, 0.02, 0.29, 0.61])
        q = quantize(uneven, "uq", 4)
    assert "keeps every value" not in str(rec[0].message)
    assert not np.array_equal(np.asarray(q), uneven)  # rounded: k >= n is lossy for UQ
    with warnings.catch_warnings():
        warnings.simplefilter("error", KNotSmallerWarning)
        quantize(w["big.weight"], "uq", 16)  # k < weight count: silent
        compress_weights(w, "cws", k=8, unified=True)  # one shared codebook over 70 weights: useful

    src, _ = ckpt
    assert compress(src, tmp_path / "o.dnnz", "--quantize", "cws", "--k", "100", "--layers", "conv.weight") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: {src}: 'conv.weight': k=100 is not smaller than its 96 weights, so cws keeps every "
                   "value and nothing is gained; lower k or leave it out"]
    assert compress(src, tmp_path / "p.dnnz", "--quantize", "cws", "--k", "64", "--layers", "conv.weight") == 0
    assert "warning" not in capsys.readouterr().err


def test_long_commands_show_a_progress_bar_on_a_terminal(tmp_path, ckpt, capsys, monkeypatch):
    """Issue 16: only `demo` showed progress. compress, convert, bench and info --entropy draw a tqdm bar
    on stderr when it is a terminal (and compress --progress forces one); a pipe stays quiet."""
    import sys

    src, _ = ckpt
    out = tmp_path / "m.dnnz"
    assert compress(src, out, "--quantize", "uq", "--k", "16") == 0
    assert "encoding" not in capsys.readouterr().err  # not a terminal: no bar
    assert compress(src, tmp_path / "p.dnnz", "--quantize", "uq", "--k", "16", "--progress") == 0
    assert "encoding" in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    for argv, desc in ((["convert", str(out), str(tmp_path / "back.npz")], "reading"),
                       (["bench", str(out), "--batch", "1"], "bench"),
                       (["info", str(out), "--entropy"], "info"),
                       (["compress", str(src), "-o", str(tmp_path / "t.dnnz")], "encoding")):
        assert main(argv) == 0, argv
        assert desc in capsys.readouterr().err, argv
