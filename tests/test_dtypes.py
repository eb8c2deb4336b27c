"""Dtypes end to end: raw tensors keep dtype and shape through every format (bool, all integers,
float16, bfloat16 via ml_dtypes, float32, float64, 0-d, empty); a compressed layer remembers the
dtype it came from (format 1.1 `source_dtype`) and decodes back to it bit for bit."""
import os

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pydnnz
from pydnnz import container, errors
from pydnnz.container import BFloat16Tensor, load, save
from pydnnz.convert import read_tensors, write_tensors

import _container_edit as edit
from pydnnz.cli import main


def run(*args, check_rc=None):
    """The CLI in-process (a subprocess per call costs seconds; test_cli.py covers the entry point)."""
    rc = main([str(a) for a in args])
    if check_rc is not None:
        assert rc == check_rc
    return rc

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(d) for d in ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                                "uint64", "float16", "float32", "float64")] + [BF16]
FORMATS = ("npz", "safetensors", "pt", "dnnz")


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@st.composite
def tensors(draw):
    dt = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if dt == BF16:  # any 16-bit pattern is a bfloat16 (NaNs and infinities included)
        return draw(hnp.arrays(np.uint16, shape)).view(BF16)
    return draw(hnp.arrays(dt, shape))


@settings(max_examples=30)
@given(st.dictionaries(st.sampled_from(["a", "b.weight", "c.num_batches_tracked"]), tensors(), min_size=1))
def test_every_format_round_trips_every_dtype_bit_exact(tmp_path_factory, ts):
    d = tmp_path_factory.mktemp("rt")
    for fmt in FORMATS:
        p = d / f"m.{fmt}"
        write_tensors(ts, p)
        back, _ = read_tensors(p)
        assert list(back) == list(ts) if fmt != "safetensors" else sorted(back) == sorted(ts)
        for k, v in ts.items():
            assert same(back[k], v), (fmt, k, v.dtype, v.shape, back[k].dtype, back[k].shape)


def test_zero_d_stays_zero_d_through_convert(tmp_path):
    src = tmp_path / "m.pt"
    torch.save({"bn.num_batches_tracked": torch.tensor(7), "w": torch.ones(2, 2, dtype=torch.bfloat16)}, src)
    chain = [src] + [tmp_path / f"m.{ext}" for ext in ("safetensors", "npz", "dnnz", "pth")]
    for a, b in zip(chain, chain[1:]):
        run("convert", a, b, check_rc=0)
    back = torch.load(chain[-1], weights_only=True)
    assert back["bn.num_batches_tracked"].shape == () and back["bn.num_batches_tracked"].item() == 7
    assert back["w"].dtype == torch.bfloat16 and torch.equal(back["w"], torch.ones(2, 2, dtype=torch.bfloat16))


def test_cli_info_convert_compress_accept_the_all_dtypes_golden_file(tmp_path):
    golden = os.path.join(os.path.dirname(__file__), "golden", "valid", "all_dtypes.dnnz")
    run("info", golden, check_rc=0)
    run("convert", golden, tmp_path / "a.safetensors", check_rc=0)
    run("convert", tmp_path / "a.safetensors", tmp_path / "a.pt", check_rc=0)
    run("convert", tmp_path / "a.pt", tmp_path / "a.npz", check_rc=0)
    run("compress", golden, "-o", tmp_path / "c.dnnz", check_rc=0)
    run("compress", tmp_path / "a.npz", "-o", tmp_path / "q.dnnz", "--quantize", "uq", "--k", "4", check_rc=0)
    run("info", tmp_path / "q.dnnz", check_rc=0)
    ref = pydnnz.load_file(golden)
    for out in ("a.safetensors", "a.pt", "a.npz", "c.dnnz"):
        got, _ = read_tensors(tmp_path / out)
        for k in ref:
            want = ref[k].bits.view(BF16) if isinstance(ref[k], BFloat16Tensor) else ref[k]
            assert same(got[k], want.astype(want.dtype.newbyteorder("<"))), (out, k)


@pytest.mark.parametrize("dt", ["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("enc", ["dense", "csc", "im", "ham", "sham", "rlham"])
def test_encoded_layer_decodes_to_its_source_dtype(dt, enc):
    rng = np.random.default_rng(1)
    w = (rng.integers(-4, 5, (9, 13)) * 0.375).astype(BF16 if dt == "bfloat16" else dt)
    e = pydnnz.encode(w, enc)
    assert e.source_dtype == dt
    assert same(e.decode(), w)
    assert e.decode(dtype=np.float32).dtype == np.float32
    f = load(save({"w": e}))
    assert f.format_version == (1, 1) and f["w"].source_dtype == dt and same(f["w"].decode(), w)
    np.testing.assert_array_equal(f["w"].matmul(np.ones(13, np.float32)), w.astype(np.float32).sum(1))
    # codebooks and values stay <f4 on disk (spec/encodings.md, "Common rules"): a 1.1 reader reads them
    assert all(s["dtype"] in ("float32", "uint8", "uint16", "uint32", "uint64")
               for s in f.info("w")["sections"]), f.info("w")["sections"]


def test_float32_files_stay_format_1_0():
    e = pydnnz.encode(np.eye(3, dtype=np.float32))
    assert e.source_dtype == "float32" and e.decode().dtype == np.float32
    assert load(save({"w": e})).format_version == (1, 0)


def test_explicit_source_dtype_must_be_exact():
    q = pydnnz.compress.QuantizedTensor(np.array([-0.5, 0.1], np.float32), np.array([[0, 1]], np.uint8))
    with pytest.raises(errors.InvalidArgumentError, match="float16 cannot represent"):
        pydnnz.encode(q, source_dtype="float16")
    q2 = q.with_codebook(q.codebook.astype(np.float16).astype(np.float32))
    assert pydnnz.encode(q2, source_dtype="float16").decode().dtype == np.float16
    with pytest.raises(errors.InvalidArgumentError, match="source_dtype must be one of"):
        pydnnz.encode(q2, source_dtype="int8")


def _with_source_dtype(value, minor=1, raw=False):
    tensors = {"w": np.ones((2, 2), np.float32) if raw else pydnnz.encode(np.eye(2, dtype=np.float16))}
    data = save(tensors)

    def change(doc):
        doc["tensors"][0]["source_dtype"] = value
    data = edit.with_header(data, change)
    return edit.set_u(data, 10, "<H", minor, fix_crc=True)


def test_reader_checks_source_dtype():
    assert load(_with_source_dtype("bfloat16"))["w"].decode().dtype == BF16
    with pytest.raises(errors.CorruptFileError, match="unknown key 'source_dtype'"):
        load(_with_source_dtype("float16", minor=0))
    with pytest.raises(errors.CorruptFileError, match="source_dtype 'int8' is not one of"):
        load(_with_source_dtype("int8"))
    with pytest.raises(errors.CorruptFileError, match="raw tensor has no source_dtype"):
        load(_with_source_dtype("float16", raw=True))


def test_cli_compress_keeps_a_bfloat16_checkpoint_bfloat16(tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(BF16)
    src = tmp_path / "m.safetensors"
    save_file({"fc.weight": w, "fc.bias": np.ones(64, BF16)}, src)
    run("compress", src, "-o", tmp_path / "m.dnnz", "--quantize", "cws", "--k", "16", check_rc=0)
    e = pydnnz.load_file(tmp_path / "m.dnnz")["fc.weight"]
    assert e.source_dtype == "bfloat16" and e.decode().dtype == BF16
    assert np.unique(e.decode().astype(np.float32)).size <= 16
    run("convert", tmp_path / "m.dnnz", tmp_path / "back.safetensors", check_rc=0)
    back = load_file(tmp_path / "back.safetensors")
    assert back["fc.weight"].dtype == BF16 and same(back["fc.weight"], e.decode())
    assert same(back["fc.bias"], np.ones(64, BF16))
    run("info", tmp_path / "m.dnnz", check_rc=0)


@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16])
def test_compress_model_remembers_the_layer_dtype(tmp_path, dt):
    import pydnnz.torch as pt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Conv1d(8, 4, 3)).to(dt)
    small = pt.compress_model(model, {"method": "cws", "k": 8}, progress=False)
    name = "float16" if dt == torch.float16 else "bfloat16"
    assert small[0].encoded.source_dtype == name and small[2].encoded.source_dtype == name
    dense = pt.decompress_model(small)
    assert dense[0].weight.dtype == dt and dense[2].weight.dtype == dt and dense[0].bias.dtype == dt
    w = small[0].encoded.decode()
    assert torch.equal(dense[0].weight, pt_tensor(w, dt))
    assert torch.equal(dense[0].bias, model[0].bias)


def pt_tensor(a, dt):
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy()).to(dt)
