"""The .dnnz writer and reader: round trips, laziness, lifetimes, atomic writes, argument errors."""
import doctest
import json
import os
import stat
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pydnnz
from pydnnz import container
from pydnnz.container import BFloat16Tensor, load, save
from pydnnz.errors import (
    ChecksumError,
    CorruptDataError,
    DnnzError,
    InvalidArgumentError,
    UnsupportedError,
)

import _container_fake as fake

NUMPY_DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                "float16", "float32", "float64"]


def same(a, b):
    """Bit-exact equality of two tensors as the reader returns them."""
    if isinstance(a, BFloat16Tensor) or isinstance(b, BFloat16Tensor):
        return isinstance(a, BFloat16Tensor) and isinstance(b, BFloat16Tensor) and \
            a.bits.shape == b.bits.shape and a.bits.tobytes() == b.bits.tobytes()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(NUMPY_DTYPES + ["bfloat16", ">f4", ">i8"]))
    shape = draw(shapes)
    if dtype == "bfloat16":
        return BFloat16Tensor(draw(hnp.arrays(np.uint16, shape)))
    return draw(hnp.arrays(np.dtype(dtype), shape))


names = st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s and
                                                 all(not 0xD800 <= ord(c) <= 0xDFFF for c in s))


@given(st.dictionaries(names, tensors(), max_size=6),
       st.dictionaries(st.text(max_size=8).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s)),
                       st.text(max_size=20).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s)),
                       max_size=3))
def test_round_trip_every_dtype(tensors, metadata):
    data = save(tensors, metadata)
    loaded = load(data)
    assert list(loaded) == list(tensors)
    assert loaded.metadata == metadata
    for name, value in tensors.items():
        got = loaded[name]
        want = value if isinstance(value, BFloat16Tensor) else value.astype(value.dtype.newbyteorder("<"))
        if isinstance(got, np.ndarray):
            assert not got.flags.writeable
        assert same(got, want), name
    assert container.verify(data).tensors == len(tensors)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_file_round_trip_each_dtype(tmp_path, dtype):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, size=(3, 5)).astype(dtype) if dtype == "bool" else \
        (rng.standard_normal((3, 5)) * 50).astype(dtype)
    p = tmp_path / "t.dnnz"
    pydnnz.save_file({"a": a, "scalar": a[0, :1].reshape(()), "empty": a[:0]}, p)
    f = pydnnz.load_file(p)
    for k, v in {"a": a, "scalar": a[0, :1].reshape(()), "empty": a[:0]}.items():
        assert same(f[k], v)
    # raw tensors are views of the map, aligned for in-place use
    assert f["a"].ctypes.data % container.ALIGNMENT == 0
    assert not f["a"].flags.writeable and not f["a"].flags.owndata


def test_empty_file_and_metadata(tmp_path):
    p = tmp_path / "e.dnnz"
    pydnnz.save_file({}, p, metadata={"model": "DeepDTA", "recipe": "pr 0.9 + cws k=32", "é": "ü\n"})
    assert os.path.getsize(p) == 64 + 64 * ((len(p.read_bytes()) - 64) // 64)
    f = pydnnz.load_file(p)
    assert len(f) == 0 and dict(f) == {}
    assert f.metadata == {"model": "DeepDTA", "recipe": "pr 0.9 + cws k=32", "é": "ü\n"}
    assert f.format_version == (1, 0)
    assert container.verify(p).tensors == 0
    pydnnz.save_file({}, p)
    assert pydnnz.load_file(p).metadata == {}


def test_zero_size_tensors_share_offsets():
    data = save({"a": np.zeros((0,), np.float32), "b": np.zeros((2, 0, 3), np.int8),
                 "c": np.ones(1, np.uint8)})
    f = load(data)
    assert f["a"].shape == (0,) and f["b"].shape == (2, 0, 3) and f["c"].tolist() == [1]
    assert len(data) == 64 * ((len(data) - 1) // 64) + 1  # ends right after c's single byte


def test_fake_encoding_round_trip(tmp_path):
    m = np.array([[0, 1.5, 0, 1.5], [2, 0, 0, 0], [0, 0, 1.5, 2]], np.float32)
    em = fake.FakeEncoded.from_dense(m)
    p = tmp_path / "enc.dnnz"
    pydnnz.save_file({"fc.weight": em, "fc.bias": np.arange(3, dtype=np.float32)}, p, {"k": "v"})
    with fake.registered():
        f = pydnnz.load_file(p)
        got = f["fc.weight"]
        assert isinstance(got, fake.FakeEncoded)
        assert got.shape == (3, 4) and got.params == em.params
        np.testing.assert_array_equal(got.decode(), m)
        assert not got.sections["indices"].flags.writeable
        report = container.verify(p)
        assert report.encodings == {"fake_codebook": 1, "raw": 1}
        assert report.sections == 3
    # without the encoding registered: the file still opens, lists and reads its raw tensors
    f = pydnnz.load_file(p)
    assert list(f) == ["fc.weight", "fc.bias"]
    assert f["fc.bias"].tolist() == [0, 1, 2]
    with pytest.raises(UnsupportedError):
        f["fc.weight"]


def test_encoded_tensor_rejected_by_its_encoding_names_file_and_tensor(tmp_path):
    em = fake.FakeEncoded((2, 2), np.array([0, 1], np.float32), np.array([0, 1, 1, 0], np.uint8))
    em.params["k"] = 3  # inconsistent with the codebook; the encoding must refuse it
    p = tmp_path / "bad.dnnz"
    pydnnz.save_file({"w": em}, p)
    with fake.registered():
        with pytest.raises(CorruptDataError) as info:
            pydnnz.load_file(p)["w"]
    assert type(info.value) is CorruptDataError
    assert str(info.value).startswith(f"{p}: tensor 'w': field 'encoding': fake_codebook: k=3")


def test_checksum_verified_lazily_on_first_access(tmp_path):
    p = tmp_path / "c.dnnz"
    pydnnz.save_file({"good": np.arange(4, dtype=np.int32), "bad": np.arange(4, dtype=np.int32)}, p)
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF  # last byte of "bad"'s data
    p.write_bytes(bytes(raw))
    f = pydnnz.load_file(p)  # opening checks structure only
    assert f["good"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ChecksumError, match=r"tensor 'bad': section 'data': field 'crc32': CRC-32 mismatch"):
        f["bad"]
    with pytest.raises(ChecksumError):
        container.verify(p)


def test_lifetime_arrays_outlive_handles_and_replacement(tmp_path):
    p = tmp_path / "l.dnnz"
    pydnnz.save_file({"w": np.full((64, 64), 7, np.float32)}, p)
    with pydnnz.safe_open(p) as f:
        w = f.get("w")
    with pytest.raises(InvalidArgumentError, match="closed"):
        f.keys()
    # Overwriting the file while a view is alive: the view keeps the old contents (new inode).
    pydnnz.save_file({"w": np.zeros((2,), np.float32)}, p)
    assert w.shape == (64, 64) and float(w.sum()) == 7 * 64 * 64
    assert pydnnz.load_file(p)["w"].tolist() == [0, 0]
    del w


def test_safe_open_api(tmp_path):
    p = tmp_path / "s.dnnz"
    pydnnz.save_file({"b": np.ones(2), "a": np.zeros(1, np.int8)}, p, {"x": "y"})
    with pydnnz.safe_open(p) as f:
        assert f.keys() == ["b", "a"]  # file order, which is the writer's dict order
        assert f.metadata() == {"x": "y"}
        assert "a" in f and "zz" not in f
        assert f.get("a").tolist() == [0]
        assert f.get_tensor("b").tolist() == [1.0, 1.0]
        with pytest.raises(KeyError, match="no tensor named 'zz'"):
            f.get("zz")


def test_load_file_mapping_behaviour(tmp_path):
    p = tmp_path / "m.dnnz"
    pydnnz.save_file({"a": np.ones(3)}, p)
    f = pydnnz.load_file(p)
    assert f["a"] is f["a"]  # cached after the first (verified) access
    assert f.get("nope") is None and "nope" not in f
    with pytest.raises(KeyError):
        f["nope"]
    assert dict(f)["a"].tolist() == [1, 1, 1]
    assert "1 tensors" in repr(f)


def test_save_over_mapped_file_and_bytes_load(tmp_path):
    p = tmp_path / "x.dnnz"
    pydnnz.save_file({"a": np.arange(10)}, p)
    f = pydnnz.load_file(p)
    a = f["a"]
    pydnnz.save_file(dict(f), p)  # rewrite from its own lazy views
    assert pydnnz.load_file(p)["a"].tolist() == list(range(10)) == a.tolist()
    assert load(bytearray(p.read_bytes()))["a"].tolist() == list(range(10))
    assert load(memoryview(p.read_bytes()))["a"].tolist() == list(range(10))
    assert p.read_bytes() == save({"a": np.arange(10)})


def test_writer_is_deterministic_and_header_aligned():
    t = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], np.int16)}
    a, b = save(t, {"m": "1"}), save(t, {"m": "1"})
    assert a == b
    hlen = int.from_bytes(a[16:24], "little")
    assert (32 + hlen) % 64 == 0 and a[32:33] == b"{"


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "model.dnnz"
    pydnnz.save_file({"old": np.arange(100, dtype=np.float32)}, p, {"v": "1"})
    before = p.read_bytes()
    calls = []

    def failing(f, arr):
        calls.append(arr.nbytes)
        if len(calls) == 2:
            f.write(b"partial garbage")
            raise OSError("disk full (injected)")
        return real(f, arr)

    real = container._write_section
    monkeypatch.setattr(container, "_write_section", failing)
    with pytest.raises(OSError, match="injected"):
        pydnnz.save_file({"a": np.ones(1000), "b": np.ones(1000), "c": np.ones(3)}, p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.dnnz"]
    # and a KeyboardInterrupt is handled the same way
    calls.clear()
    monkeypatch.setattr(container, "_write_section",
                        lambda f, arr: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        pydnnz.save_file({"a": np.ones(10)}, tmp_path / "new.dnnz")
    assert sorted(os.listdir(tmp_path)) == ["model.dnnz"]


def test_failed_fsync_leaves_no_file(tmp_path, monkeypatch):
    p = tmp_path / "n.dnnz"

    def bad_fsync(fd):
        raise OSError("fsync failed (injected)")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    with pytest.raises(OSError, match="injected"):
        pydnnz.save_file({"a": np.ones(10)}, p)
    assert os.listdir(tmp_path) == []


def test_new_file_permissions_follow_umask(tmp_path):
    p = tmp_path / "perm.dnnz"
    old = os.umask(0o027)
    try:
        pydnnz.save_file({}, p)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


@pytest.mark.parametrize("tensors, metadata, message", [
    ([1, 2], None, "tensors must be a dict"),
    ({1: np.ones(1)}, None, "tensor names must be str"),
    ({"": np.ones(1)}, None, "must be 1..1024 UTF-8 bytes"),
    ({"a\x00": np.ones(1)}, None, "without NUL"),
    ({"x" * 1025: np.ones(1)}, None, "must be 1..1024"),
    ({"\ud800": np.ones(1)}, None, "not valid Unicode"),
    ({"c": np.ones(2, np.complex64)}, None, "dtype complex64 cannot be stored raw"),
    ({"o": np.array(["s"], object)}, None, "cannot be stored raw"),
    ({"l": [1.0, 2.0]}, None, "expected a numpy array or an EncodedMatrix, got list"),
    ({"d": np.ones((1,) * 9)}, None, "9 dimensions exceed the limit of 8"),
    ({}, {"k": 1}, "metadata must map str to str"),
    ({}, [("k", "v")], "metadata must be a dict"),
    ({}, {"k": "\udcff"}, "not valid Unicode"),
])
def test_writer_rejects_bad_arguments(tmp_path, tensors, metadata, message):
    with pytest.raises(InvalidArgumentError, match=message):
        pydnnz.save_file(tensors, tmp_path / "x.dnnz", metadata)
    assert os.listdir(tmp_path) == []


def test_writer_rejects_bad_encoded_objects():
    def em(**kw):
        e = fake.FakeEncoded((1, 2), np.array([1], np.float32), np.array([0, 0], np.uint8))
        for k, v in kw.items():
            setattr(e, k, v)
        return e

    cases = [
        (em(encoding="raw"), "invalid encoding name 'raw'"),
        (em(encoding="bad name"), "invalid encoding name"),
        (em(shape=(2, -1)), "bad dimension -1"),
        (em(params={"a": [1]}), "is not a finite JSON scalar"),
        (em(params={"a": float("nan")}), "is not a finite JSON scalar"),
        (em(params={1: 2}), "param names must be str"),
        (em(sections={"s": np.ones((2, 2), np.uint8)}), "must be a 1-D numpy array"),
        (em(sections={"s": np.ones(2, bool)}), "has dtype bool"),
        (em(sections={"bad/name": np.ones(2, np.uint8)}), "invalid section name"),
    ]
    for value, message in cases:
        with pytest.raises(InvalidArgumentError, match=message):
            save({"w": value})


def test_big_endian_section_is_stored_little_endian():
    e = fake.FakeEncoded((1, 2), np.array([1, 2], ">f4"), np.array([0, 1], np.uint8))
    with fake.registered():
        got = load(save({"w": e}))["w"]
    assert got.codebook.dtype == np.dtype("<f4") and got.codebook.tolist() == [1, 2]


def test_unknown_dtype_and_load_argument_errors():
    with pytest.raises(InvalidArgumentError, match="takes bytes"):
        load("not bytes")
    with pytest.raises(DnnzError):
        load(b"")


def test_bfloat16_helpers():
    x = np.array([1.0, -2.5, 3.14159, 1e-40, np.inf, -np.inf, np.nan], np.float32)
    b = BFloat16Tensor.from_float32(x)
    back = np.asarray(b)
    assert back.dtype == np.float32
    assert back[:2].tolist() == [1.0, -2.5] and abs(back[2] - 3.14159) < 0.02
    assert np.isinf(back[4:6]).all() and np.isnan(back[6])
    assert b == BFloat16Tensor(b.bits.copy()) and b.dtype == "bfloat16"
    with pytest.raises(InvalidArgumentError):
        BFloat16Tensor(np.ones(2, np.float32))


def test_public_names():
    assert pydnnz.save_file is container.save_file
    assert pydnnz.load_file is container.load_file
    assert pydnnz.safe_open is container.safe_open


def test_docstring_examples():
    # the examples live in the package's modules (doctest only looks at a module's own functions,
    # not at names it re-exports); they run with the package's names, as a user would
    results = [doctest.testmod(mod, extraglobs=vars(container), optionflags=doctest.ELLIPSIS)
               for mod in (container._format, container._reader, container._writer)]
    assert sum(r.attempted for r in results) >= 6 and sum(r.failed for r in results) == 0


@st.composite
def fake_matrices(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=6))
    values = draw(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=5, unique=True))
    codebook = np.array(sorted(values), np.float32)
    n = int(np.prod(shape))
    indices = np.array(draw(st.lists(st.integers(0, len(values) - 1), min_size=n, max_size=n)), np.uint8)
    return fake.FakeEncoded(shape, codebook, indices, note=draw(st.text(max_size=5).filter(
        lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s))))


@given(st.lists(st.one_of(fake_matrices(), tensors()), max_size=5))
def test_round_trip_mixed_encoded_and_raw(values):
    items = {f"t{i}": v for i, v in enumerate(values)}
    with fake.registered():
        loaded = load(save(items))
        for name, v in items.items():
            got = loaded[name]
            if isinstance(v, fake.FakeEncoded):
                assert got.shape == v.shape and got.params == v.params
                assert got.decode().tobytes() == v.decode().tobytes()
            elif isinstance(v, np.ndarray):
                assert same(got, v.astype(v.dtype.newbyteorder("<")))
            else:
                assert same(got, v)


def test_open_reads_no_section_until_asked(tmp_path, monkeypatch):
    p = tmp_path / "lazy.dnnz"
    pydnnz.save_file({f"l{i}": np.full((256, 256), i, np.float32) for i in range(8)}, p)
    calls = []
    real = container._crc32
    monkeypatch.setattr(container, "_crc32", lambda data: calls.append(len(data)) or real(data))
    f = pydnnz.load_file(p)
    assert calls == [] and len(f) == 8
    f["l3"]
    f["l3"]
    assert calls == [256 * 256 * 4]


def test_argument_errors_of_an_encoding_become_corrupt_file_errors(monkeypatch):
    from pydnnz.errors import CorruptFileError, ShapeError

    def picky(encoding, shape, params, sections):
        raise ShapeError("from_sections: shape must have ndim >= 2")

    data = save({"w": fake.FakeEncoded((4,), np.array([1], np.float32), np.zeros(4, np.uint8))})
    monkeypatch.setattr(container, "_from_sections", picky)
    with pytest.raises(CorruptFileError, match=r"<bytes>: tensor 'w': field 'encoding': ShapeError: from_sections"):
        load(data)["w"]


def test_writer_normalises_bool_bytes_and_numpy_params():
    odd = np.array([0, 1, 2, 255], np.uint8).view(np.bool_)
    assert load(save({"m": odd}))["m"].tolist() == [False, True, True, True]
    e = fake.FakeEncoded((1, 2), np.array([1], np.float32), np.array([0, 0], np.uint8))
    e.params = {"k": np.int64(1), "scale": np.float32(0.5), "flag": np.bool_(True)}
    entry = json.loads(save({"w": e})[32:].split(b"\x00")[0].rstrip(b" ").decode())["tensors"][0]
    assert entry["params"] == {"k": 1, "scale": 0.5, "flag": True}
    assert entry["sections"][-1]["offset"] == 64


def test_empty_last_section_still_padded():
    data = save({"c": np.ones(1, np.uint8), "z": np.zeros(0, np.int64)})
    hlen = int.from_bytes(data[16:24], "little")
    assert len(data) == 32 + hlen + 64
    assert load(data)["z"].shape == (0,)


def test_info_reads_the_header_only(tmp_path):
    p = tmp_path / "i.dnnz"
    e = fake.FakeEncoded((2, 2), np.array([0, 1], np.float32), np.array([0, 1, 1, 0], np.uint8))
    pydnnz.save_file({"b": np.ones(3, np.float16), "w": e}, p)
    f = pydnnz.load_file(p)
    assert f.info("b") == {"dtype": "float16", "shape": (3,), "encoding": "raw", "params": {}, "nbytes": 6,
                           "sections": [{"name": "data", "dtype": "float16", "offset": 0, "length": 6,
                                         "crc32": zlib.crc32(np.ones(3, np.float16).tobytes())}]}
    info = f.info("w")  # no encoding registered: info still works
    assert info["encoding"] == "fake_codebook" and info["nbytes"] == 12
    assert [s["offset"] for s in info["sections"]] == [64, 128]
    with pydnnz.safe_open(p) as g:
        assert g.info("w") == info
        with pytest.raises(KeyError):
            g.info("nope")


@pytest.mark.slow
def test_offsets_beyond_4_gib(tmp_path):
    """A 4 GiB + tensor followed by another: offsets and lengths above 2^32 in the header, a
    sparse file on disk (zeros), the second tensor read through the map at offset > 4 GiB."""
    big = (1 << 32) + 100
    crc_zero = 0
    chunk = bytes(1 << 24)
    left = big
    while left:
        n = min(left, len(chunk))
        crc_zero = zlib.crc32(chunk[:n], crc_zero)
        left -= n
    tail = np.arange(5, dtype=np.int32)
    doc = {"metadata": {}, "tensors": [
        {"name": "big", "dtype": "uint8", "shape": [big], "encoding": "raw", "params": {},
         "sections": [{"name": "data", "dtype": "uint8", "offset": 0, "length": big, "crc32": crc_zero}]},
        {"name": "tail", "dtype": "int32", "shape": [5], "encoding": "raw", "params": {},
         "sections": [{"name": "data", "dtype": "int32", "offset": container._align(big), "length": 20,
                       "crc32": zlib.crc32(tail.tobytes())}]}]}
    text = json.dumps(doc, separators=(",", ":")).encode()
    import _container_edit as E
    head = E.with_header_text(save({}), text)  # preamble + header, data area empty
    p = tmp_path / "big.dnnz"
    with open(p, "wb") as f:
        f.write(head)
        f.seek(len(head) + container._align(big))
        f.write(tail.tobytes())
    f = pydnnz.load_file(p)
    assert f.info("tail")["sections"][0]["offset"] == container._align(big) > 2**32
    assert f["tail"].tolist() == [0, 1, 2, 3, 4]
    assert f["big"].shape == (big,) and int(f["big"][-1]) == 0
