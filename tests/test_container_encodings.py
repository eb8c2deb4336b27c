"""The container with the real encodings of pydnnz.encodings (every registered one, so encodings
added later are covered without editing this file): round trips, matmul from the memory map,
and corrupted encoded sections with repaired CRCs, which the encoding's own validation must catch."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pydnnz
from pydnnz import container
from pydnnz.container import load, save
from pydnnz.errors import DnnzError

import _container_edit as E

encodings = pytest.importorskip("pydnnz.encodings")
NAMES = list(encodings.encodings())


def sparse_shared(rng, shape, k=4, density=0.3):
    values = rng.standard_normal(k).astype(np.float32)
    m = rng.choice(values, size=shape)
    m[rng.random(shape) > density] = 0
    return m.astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_through_a_file(tmp_path, name):
    rng = np.random.default_rng(7)
    m = sparse_shared(rng, (17, 33))
    conv = sparse_shared(rng, (4, 3, 3, 3))
    em, ec = pydnnz.encode(m, name), pydnnz.encode(conv, name)
    p = tmp_path / f"{name}.dnnz"
    pydnnz.save_file({"fc.weight": em, "conv.weight": ec, "fc.bias": np.ones(17, np.float32)}, p,
                     {"encoding": name})
    f = pydnnz.load_file(p)
    got = f["fc.weight"]
    assert got.encoding == name and tuple(got.shape) == (17, 33) and got.params == em.params
    np.testing.assert_array_equal(got.decode(), m)
    assert tuple(f["conv.weight"].shape) == (4, 3, 3, 3)
    np.testing.assert_array_equal(f["conv.weight"].decode(), conv)
    x = rng.standard_normal((5, 33)).astype(np.float32)
    np.testing.assert_array_equal(got.matmul(x), em.matmul(x))  # same kernel, same bytes
    for sec in got.sections.values():  # sections are the map, used in place
        assert not sec.flags.writeable
    report = container.verify(p)
    assert report.encodings == {name: 2, "raw": 1}
    assert got.nbytes == em.nbytes == sum(s["length"] for s in E.header_doc(p.read_bytes())["tensors"][0]["sections"])


@settings(max_examples=40)
@given(st.sampled_from(NAMES) if NAMES else st.nothing(),
       hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=9), st.integers(0, 2**32 - 1))
def test_round_trip_property(name, shape, seed):
    rng = np.random.default_rng(seed)
    m = sparse_shared(rng, shape, k=int(rng.integers(1, 6)), density=float(rng.random()))
    em = pydnnz.encode(m, name)
    got = load(save({"w": em}))["w"]
    assert got.decode().tobytes() == m.tobytes()


def _corpus():
    rng = np.random.default_rng(3)
    m = sparse_shared(rng, (7, 13))
    return [save({"w": pydnnz.encode(m, n), "b": np.ones(3, np.float32)}) for n in NAMES]


@pytest.mark.skipif(not NAMES, reason="no encoding registered")
def test_corrupted_encoded_sections_raise_dnnz_errors():
    """Section bytes changed and their CRC repaired, or a param changed: only a DnnzError or a
    load whose tensors all decode and multiply is allowed."""
    rng = random.Random(11)
    outcomes = {"ok": 0, "error": 0}
    for data in _corpus():
        doc = E.header_doc(data)
        secs = [(t["name"], s["name"], s["length"]) for t in doc["tensors"] for s in t["sections"] if s["length"]]
        params = doc["tensors"][0]["params"]
        for _ in range(150):
            if rng.random() < 0.7:
                tname, sname, length = rng.choice(secs)
                bad = E.edit_section_bytes(data, tname, sname, rng.randrange(length), rng.randrange(256))
            elif params:
                key = rng.choice(list(params))
                value = rng.choice([None, True, -1, 0, 1, 2, 3, 4, 8, 16, 255, 2**31, 2**63, 0.5, "", "u16"])
                bad = E.with_header(data, lambda d: d["tensors"][0]["params"].__setitem__(key, value))
            else:
                continue
            with E.deadline(10):
                try:
                    f = load(bad)
                    for k in f:
                        t = f[k]
                        if hasattr(t, "matmul"):
                            t.decode()
                            t.matmul(np.ones((2, t.matrix_shape[1]), np.float32))
                    outcomes["ok"] += 1
                except DnnzError:
                    outcomes["error"] += 1
    assert outcomes["error"] > 0


def test_deepdta_model_round_trip(shared_dir, tmp_path):
    """A real model: every tensor of the DeepDTA baseline, 2-D+ weights encoded (the smallest
    registered encoding), the rest raw; the file's metadata carried over."""
    from safetensors import safe_open as st_open

    src = shared_dir / "models" / "deepdta_davis.safetensors"
    with st_open(str(src), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata() or {}
    stored = {k: (pydnnz.encode(v, "auto") if v.ndim >= 2 and v.dtype == np.float32 else v)
              for k, v in tensors.items()}
    p = tmp_path / "deepdta.dnnz"
    pydnnz.save_file(stored, p, metadata)
    f = pydnnz.load_file(p)
    assert list(f) == list(tensors) and f.metadata == metadata
    for k, v in tensors.items():
        got = f[k]
        dense = got.decode() if hasattr(got, "decode") else got
        assert dense.dtype == v.dtype and dense.tobytes() == v.tobytes(), k
    assert container.verify(p).tensors == len(tensors)
