"""Golden .dnnz files (zstd style): tests/golden/valid/ must load to the arrays below, and the writer
must still produce them byte for byte; tests/golden/invalid/ must raise the recorded exception class
with the recorded message. These files are never regenerated: a format change adds new ones."""
import json
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz import container, errors
from pydnnz.container import BFloat16Tensor, save

import _container_edit as E
import _container_fake as fake

GOLDEN = Path(__file__).resolve().parent / "golden"


def all_dtypes():
    out = {}
    for dt in ["int8", "int16", "int32", "int64", "float16", "float32", "float64"]:
        out[dt] = np.arange(-3, 3).astype(dt).reshape(2, 3)
    for dt in ["uint8", "uint16", "uint32", "uint64"]:
        out[dt] = (np.arange(6).astype(dt) * np.array(np.iinfo(dt).max // 5, dt)).reshape(3, 2)
    out["bool"] = np.array([[True, False, True], [False, False, True]])
    out["bfloat16"] = BFloat16Tensor(np.array([0x3F80, 0xC000, 0x0000, 0x7F80, 0xFF80, 0x7FC0], np.uint16))
    out["scalar"] = np.array(2.5)
    out["empty"] = np.zeros((0, 4), np.float32)
    out["from_big_endian"] = np.array([1, 256, -1], ">i4")
    return out


def fake_q():
    return fake.FakeEncoded((2, 3), np.array([-1, 0, 2.5], np.float32), np.array([0, 1, 2, 2, 1, 0], np.uint8))


def source_dtypes():
    """Format 1.1: encoded layers that decode back to float16, bfloat16 and float64."""
    import ml_dtypes

    w = np.array([[0, 1.5, -0.25], [2, 0, 0]])
    return {"h": pydnnz.encode(w.astype(np.float16), "im"),
            "b": pydnnz.encode(w.astype(ml_dtypes.bfloat16), "csc"),
            "d": pydnnz.encode(w, "dense")}


VALID = {
    "empty.dnnz": ({}, {}),
    "metadata_only.dnnz": ({}, {"model": "DeepDTA", "recipe": "prune 0.9 + cws k=32", "ünï": "cødé ✓"}),
    "all_dtypes.dnnz": (all_dtypes(), {"about": "one tensor per dtype"}),
    "fake_encoded.dnnz": ({"q": fake_q(), "bias": np.array([0.5, -0.5], np.float32)}, {}),
    "future_minor.dnnz": ({"w": np.array([1.5, -2.0], np.float32)}, {}),  # format 1.3, unknown keys
    "source_dtype.dnnz": (source_dtypes(), {"format": "1.1"}),
}


def test_every_golden_file_is_listed():
    assert sorted(p.name for p in (GOLDEN / "valid").glob("*.dnnz")) == sorted(VALID)
    expected = json.loads((GOLDEN / "invalid" / "expected.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in (GOLDEN / "invalid").glob("*.dnnz")) == sorted(expected)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_golden_loads_to_known_arrays(name):
    path = GOLDEN / "valid" / name
    tensors, metadata = VALID[name]
    with fake.registered():
        f = pydnnz.load_file(path)
        assert list(f) == list(tensors) and f.metadata == metadata
        for key, want in tensors.items():
            got = f[key]
            if isinstance(want, BFloat16Tensor):
                assert got == want
                assert np.asarray(got)[:2].tolist() == [1.0, -2.0]
            elif hasattr(want, "source_dtype"):  # a real encoding, format 1.1
                assert got.source_dtype == want.source_dtype and got.encoding == want.encoding
                assert got.decode().dtype == want.decode().dtype
                assert got.decode().tobytes() == want.decode().tobytes()
            elif isinstance(want, fake.FakeEncoded):
                np.testing.assert_array_equal(got.decode(), want.decode())
                assert got.params == want.params
            else:
                assert got.dtype == want.dtype.newbyteorder("<") and got.shape == want.shape
                assert got.tobytes() == want.astype(want.dtype.newbyteorder("<")).tobytes()
        assert container.verify(path).tensors == len(tensors)


@pytest.mark.parametrize("name", sorted(set(VALID) - {"future_minor.dnnz"}))
def test_writer_reproduces_valid_golden_bytes(name):
    tensors, metadata = VALID[name]
    assert save(tensors, metadata) == (GOLDEN / "valid" / name).read_bytes()


def test_all_dtypes_golden_values():
    f = pydnnz.load_file(GOLDEN / "valid" / "all_dtypes.dnnz")
    assert f["int8"].tolist() == [[-3, -2, -1], [0, 1, 2]]
    assert f["uint64"].tolist() == [[0, 3689348814741910323], [7378697629483820646, 11068046444225730969],
                                    [14757395258967641292, 18446744073709551615]]
    assert f["float16"].dtype == np.float16 and f["float16"][0, 0] == -3
    assert f["bool"].dtype == np.bool_
    assert f["scalar"].shape == () and float(f["scalar"]) == 2.5
    assert f["from_big_endian"].tolist() == [1, 256, -1]


_INVALID = json.loads((GOLDEN / "invalid" / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(_INVALID))
def test_invalid_golden_raises_recorded_error(name):
    path = GOLDEN / "invalid" / name
    cls = getattr(errors, _INVALID[name]["error"])
    with fake.registered(), E.deadline(20):  # rlham_row_past_end once cost minutes (issue 17)
        with pytest.raises(errors.DnnzError) as info:
            f = pydnnz.load_file(path)
            for key in f:
                f[key]
        assert type(info.value) is cls
        assert str(info.value) == _INVALID[name]["message"].replace("{path}", str(path))
        with pytest.raises(cls):
            container.verify(path)
