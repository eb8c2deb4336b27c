"""from_sections rejects every inconsistent encoded matrix with a DnnzError naming the field."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from pydnnz import errors
from pydnnz.encodings import encode, from_sections

W = np.array([[0.0, 1.5, 0.0, 1.5, 0.0],
              [2.0, 0.0, 0.0, 1.5, -1.0],
              [0.0, 0.0, 2.0, 0.0, 0.0]], np.float32)


def parts(enc, w=W):
    e = encode(w, enc)
    return e.encoding, e.shape, e.params, {k: v.copy() for k, v in e.sections.items()}


def rejects(enc, shape, params, sections, field=None, cls=errors.DnnzError):
    with pytest.raises(cls) as info:
        from_sections(enc, shape, params, sections)
    msg = str(info.value)
    assert msg.startswith(enc + ":"), msg
    if field:
        assert field in msg, msg
    return msg


def test_valid_parts_accepted():
    for enc in ("dense", "csc", "im", "im8", "im4"):
        e = from_sections(*parts(enc))
        assert np.array_equal(e.decode(), W)


def test_structure_errors():
    for enc in ("dense", "csc", "im", "im8", "im4"):
        name, shape, params, sec = parts(enc)
        rejects(name, shape, params, {**sec, "extra": np.zeros(1, np.uint8)}, "sections")
        rejects(name, shape, params, dict(list(sec.items())[1:]), "sections")
        key = next(iter(sec))
        rejects(name, shape, params, {**sec, key: sec[key].astype(np.float64)}, key)
        rejects(name, shape, params, {**sec, key: sec[key].reshape(1, -1)}, key)
        rejects(name, shape, params, {**sec, key: list(sec[key])}, key)
        rejects(name, shape, {**params, "bogus": 1}, sec, "params")
        with pytest.raises(errors.ShapeError):
            from_sections(name, (3,), params, sec)
        with pytest.raises(errors.ShapeError):
            from_sections(name, (3, -5), params, sec)
        with pytest.raises(errors.ShapeError):
            from_sections(name, "3x5", params, sec)
        # a shape that disagrees with the section lengths (csc and im at (3, 6) stay valid: an
        # extra all-zero column, resp. index 0 in former padding bits)
        rejects(name, (4, 5), params, sec)
        if enc in ("dense", "im8"):
            rejects(name, (3, 6), params, sec)
    with pytest.raises(errors.UnsupportedError):
        from_sections("nope", (3, 5), {}, {})


def test_dense_fields():
    name, shape, params, sec = parts("dense")
    v = sec["values"]
    rejects(name, shape, params, {"values": v[:-1]}, "values", errors.TruncatedError)
    rejects(name, shape, params, {"values": np.append(v, np.float32(1))}, "values")
    bad = v.copy(); bad[4] = np.nan
    assert "element 4" in rejects(name, shape, params, {"values": bad}, "values")


def test_im_fields():
    name, shape, params, sec = parts("im")  # k=4 (-1, 0, 1.5, 2), bits=2, 2 bytes per row
    assert params == {"k": 4, "bits": 2}
    rejects(name, shape, {**params, "bits": 3}, sec, "bits")
    rejects(name, shape, {**params, "k": 5}, sec, "bits")
    rejects(name, shape, {**params, "k": 3}, sec, "codebook")
    rejects(name, shape, {**params, "k": "4"}, sec, "k")
    rejects(name, shape, {**params, "k": True}, sec, "k")
    rejects(name, shape, {**params, "k": -1}, sec, "k")
    rejects(name, shape, params, {**sec, "codebook": sec["codebook"][:3]}, "codebook")
    cb = sec["codebook"].copy(); cb[1] = np.nan
    rejects(name, shape, params, {**sec, "codebook": cb}, "codebook")
    rejects(name, shape, params, {**sec, "indices": sec["indices"][:-1]}, "indices", errors.TruncatedError)
    rejects(name, shape, params, {**sec, "indices": np.append(sec["indices"], np.uint8(0))}, "indices")
    ix = sec["indices"].copy(); ix[1] |= 0x01  # 5 indices x 2 bits = 10 bits: low 6 bits are padding
    assert "row 0" in rejects(name, shape, params, {**sec, "indices": ix}, "indices")
    # index >= k with k = 3: drop the codebook's last value and point at it
    name3, shape3, params3, sec3 = parts("im", np.where(W == 2.0, 1.5, W).astype(np.float32))
    assert params3["k"] == 2 or params3["k"] == 3
    w3 = W.copy(); w3[w3 == -1.0] = 1.5
    name3, shape3, params3, sec3 = parts("im", w3)  # k=3: 0, 1.5, 2 -> bits=2, index 3 invalid
    assert params3 == {"k": 3, "bits": 2}
    ix = sec3["indices"].copy(); ix[0] |= 0xC0  # first index := 3
    assert "element 0" in rejects(name3, shape3, params3, {**sec3, "indices": ix}, "indices")


def test_im_variants_fix_the_width():
    name, shape, params, sec = parts("im8")
    assert params["bits"] == 8
    rejects(name, shape, {**params, "bits": 2}, sec, "bits")
    ix = sec["indices"].copy(); ix[3] = 200
    rejects(name, shape, params, {**sec, "indices": ix}, "indices")
    name, shape, params, sec = parts("im4")
    ix = sec["indices"].copy(); ix[0] = 0xF0
    rejects(name, shape, params, {**sec, "indices": ix}, "indices")


def test_csc_fields():
    name, shape, params, sec = parts("csc")
    assert params["values"] == "u8" and params["nnz"] == 6
    rp, ci, cb, vi = sec["rowptr"], sec["colidx"], sec["codebook"], sec["vindex"]
    def with_(**kw):
        return {**sec, **kw}
    bad = rp.copy(); bad[0] = 1
    rejects(name, shape, params, with_(rowptr=bad), "rowptr")
    bad = rp.copy(); bad[1], bad[2] = bad[2], bad[1]  # not monotone
    rejects(name, shape, params, with_(rowptr=bad), "rowptr")
    bad = rp.copy(); bad[-1] -= 1  # does not end at nnz
    rejects(name, shape, params, with_(rowptr=bad), "rowptr")
    rejects(name, shape, params, with_(rowptr=rp[:-1]), "rowptr", errors.TruncatedError)
    bad = ci.copy(); bad[0] = 5  # column >= in_features
    rejects(name, shape, params, with_(colidx=bad), "colidx")
    bad = ci.copy(); bad[2], bad[3] = bad[3], bad[2]  # row 1's columns not ascending
    rejects(name, shape, params, with_(colidx=bad), "colidx")
    bad = ci.copy(); bad[3] = bad[2]  # repeated column
    rejects(name, shape, params, with_(colidx=bad), "colidx")
    rejects(name, shape, params, with_(colidx=ci[:-1]), "colidx", errors.TruncatedError)
    bad = vi.copy(); bad[0] = cb.size  # codebook index >= k
    rejects(name, shape, params, with_(vindex=bad), "vindex")
    bad = cb.copy(); bad[0] = 0.0  # explicit zero
    rejects(name, shape, params, with_(codebook=bad), "codebook")
    bad = cb.copy(); bad[0] = np.nan
    rejects(name, shape, params, with_(codebook=bad), "codebook")
    rejects(name, shape, {**params, "nnz": 7}, sec)
    rejects(name, shape, {**params, "nnz": 10**6}, sec)
    rejects(name, shape, {**params, "ptr_bytes": 3}, sec, "ptr_bytes")
    rejects(name, shape, {**params, "values": "f16"}, sec, "values")
    rejects(name, shape, {**params, "k": 0}, sec)
    rejects(name, shape, {**params, "index_bytes": 2}, sec, "colidx")  # dtype no longer matches
    # f32 variant
    w = np.arange(1, 16, dtype=np.float32).reshape(3, 5) * (np.arange(15).reshape(3, 5) % 3 == 0)
    name, shape, params, sec = parts("csc", w)
    assert params["values"] == "f32"
    bad = sec["values"].copy(); bad[1] = 0.0
    rejects(name, shape, params, {**sec, "values": bad}, "values")
    bad = sec["values"].copy(); bad[1] = np.nan
    rejects(name, shape, params, {**sec, "values": bad}, "values")
    # an index width too narrow for in_features
    wide = np.zeros((2, 300), np.float32); wide[1, 299] = 1.0
    name, shape, params, sec = parts("csc", wide)
    assert params["index_bytes"] == 2
    rejects(name, shape, {**params, "index_bytes": 1},
            {**sec, "colidx": sec["colidx"].astype(np.uint8)}, "params")


def test_writable_sections_are_copied_readonly_used_in_place():
    name, shape, params, sec = parts("im")
    e = from_sections(name, shape, params, sec)
    sec["indices"][:] = 0xFF  # the caller's later writes cannot reach the validated copy
    assert np.array_equal(e.decode(), W)
    ro = {k: v.copy() for k, v in parts("im")[3].items()}
    for v in ro.values():
        v.flags.writeable = False
    e = from_sections(name, shape, params, ro)
    assert np.shares_memory(e.sections["indices"], ro["indices"])


@pytest.mark.parametrize("enc", ["dense", "csc", "im", "im8", "im4", "ham", "sham", "rlham"])
@given(data=st.data())
def test_random_mutations_never_crash(enc, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = np.where(rng.random((6, 21)) < 0.5, 0, rng.integers(1, 9, (6, 21)) / 4).astype(np.float32)
    name, shape, params, sec = parts(enc, w)
    key = data.draw(st.sampled_from(sorted(sec)))
    raw = bytearray(sec[key].tobytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip" and raw:
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate" and raw:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw += bytes([data.draw(st.integers(0, 255))]) * sec[key].dtype.itemsize
    size = sec[key].dtype.itemsize
    raw = raw[: len(raw) // size * size]
    mutated = {**sec, key: np.frombuffer(bytes(raw), sec[key].dtype).copy()}
    try:
        e = from_sections(name, shape, params, mutated)
    except errors.DnnzError:
        return
    d = e.decode()  # accepted: still a consistent matrix, so decode and matmul must work
    x = np.ones((2, w.shape[1]), np.float32)
    y = e.matmul(x)
    assert d.shape == w.shape and y.shape == (2, w.shape[0])
    d64 = d.astype(np.float64)
    ref = x.astype(np.float64) @ d64.T
    small = np.abs(x.astype(np.float64)) @ np.abs(d64).T < 1e37  # else float32 may overflow
    assert np.allclose(y[small], ref[small], rtol=1e-4, atol=1e-3, equal_nan=True)
