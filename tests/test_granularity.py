"""Per-channel / per-row-block quantization (granularity): quantizers, encode, files, torch."""
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz import errors
from pydnnz.compress import quantize
from pydnnz.container import load, save
from pydnnz.encodings import from_sections
from pydnnz.encodings.scaled import ScaledMatrix

EXAMPLE = Path(__file__).resolve().parent.parent / "spec" / "examples" / "row_scale.dnnz"


def spread_rows(rows=12, cols=20, seed=0):
    """Rows whose ranges differ by orders of magnitude (as in depthwise convs)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, cols)) * np.exp(rng.uniform(-4, 2, size=(rows, 1)))).astype(np.float32)


@pytest.mark.parametrize("method", ["cws", "uq", "ecsq", "pws"])
@pytest.mark.parametrize("granularity", ["channel", 3, 5])
def test_scaled_encode_decodes_exactly_and_multiplies_from_the_compressed_form(method, granularity):
    w = spread_rows()
    q = quantize(w, method, 8, granularity=granularity)
    block = 1 if granularity == "channel" else granularity
    assert q.scale_rows == block and q.row_scale.shape == (-(-12 // block),)
    assert q.params["granularity"] == granularity
    dense = np.asarray(q)
    s = np.repeat(q.row_scale, block)[:12]
    assert np.array_equal(dense, q.codebook[q.indices] * s[:, None])
    assert q.k <= 8 and np.abs(q.codebook).max() <= 1.0  # shared codebook of normalised values
    for encoding in ("auto", "im", "csc", "ham"):
        e = pydnnz.encode(q, encoding)
        assert isinstance(e, ScaledMatrix) and e.scale_rows == block
        assert np.array_equal(e.decode(), dense)
        assert e.nbytes == e.inner.nbytes + 4 * q.row_scale.size
        x = np.random.default_rng(1).normal(size=(7, 20)).astype(np.float32)
        np.testing.assert_allclose(e.matmul(x), x @ dense.T, rtol=1e-5, atol=1e-6 * np.abs(dense).max())
        np.testing.assert_allclose(e.matmul(x[0]), x[0] @ dense.T, rtol=1e-5, atol=1e-6 * np.abs(dense).max())


def test_per_channel_keeps_narrow_rows_that_a_per_tensor_codebook_flattens():
    w = spread_rows()
    per_row = {}
    for g in ("tensor", "channel"):
        d = np.asarray(quantize(w, "uq", 16, granularity=g))
        per_row[g] = np.linalg.norm(d - w, axis=1) / np.linalg.norm(w, axis=1)
    assert per_row["tensor"].max() > 0.5  # the narrowest rows collapse to zero
    assert per_row["channel"].max() < 0.2


def test_pruned_zeros_stay_exact_with_row_scales():
    w = spread_rows()
    q = quantize(w, "cws", 8, prune=60, granularity="channel")
    d = np.asarray(q)
    assert np.array_equal(d == 0, ~q.mask) and (d == 0).mean() >= 0.6


def test_granularity_is_validated():
    w = spread_rows()
    for bad in ("row", 0, -2, 1.5, True):
        with pytest.raises(errors.InvalidArgumentError, match="granularity"):
            quantize(w, "uq", 8, granularity=bad)
    with pytest.raises(errors.InvalidArgumentError, match="ndim >= 2"):
        quantize(w[0], "uq", 8, granularity="channel")


def test_file_round_trip_and_params():
    q = quantize(spread_rows(), "cws", 8, granularity=4)
    e = pydnnz.encode(q, "ham")
    assert e.params["row_scale_rows"] == 4 and "row_scale" in e.sections
    back = load(save({"w": e}))["w"]
    assert isinstance(back, ScaledMatrix) and back.encoding == "ham"
    assert np.array_equal(back.decode(), np.asarray(q))


def _parts(block=4):
    e = pydnnz.encode(quantize(spread_rows(), "uq", 8, granularity=block), "im")
    return e.encoding, e.shape, e.params, e.sections


@pytest.mark.parametrize("edit, message", [
    (lambda p, s: s.__setitem__("row_scale", s["row_scale"][:-1].copy()), "must hold 3 float32"),
    (lambda p, s: s.__setitem__("row_scale", np.full(3, np.inf, np.float32)), "non-finite"),
    (lambda p, s: s.__setitem__("row_scale", s["row_scale"].astype(np.float64)), "float32"),
    (lambda p, s: p.__setitem__("row_scale_rows", 0), "row_scale_rows"),
    (lambda p, s: p.__setitem__("row_scale_rows", 13), "row_scale_rows"),
    (lambda p, s: p.__setitem__("row_scale_rows", "4"), "row_scale_rows"),
    (lambda p, s: s.pop("row_scale"), "without a 'row_scale' section"),
])
def test_bad_row_scales_are_corrupt_data(edit, message):
    enc, shape, params, sections = _parts()
    edit(params, sections)
    with pytest.raises(errors.CorruptDataError, match=message):
        from_sections(enc, shape, params, sections)


def test_scale_section_without_param_is_rejected_by_the_encoding():
    enc, shape, params, sections = _parts()
    del params["row_scale_rows"]
    with pytest.raises(errors.CorruptDataError, match="sections must be exactly"):
        from_sections(enc, shape, params, sections)


# The spec's example (spec/encodings.md, "Row scales"): the worked-example matrix's normalised
# values in `im` with one scale per block of 2 rows.
EXAMPLE_Q = dict(codebook=np.array([0.0, 0.75, 1.0], np.float32),
                 indices=np.array([[0, 1, 0, 1], [2, 0, 0, 1], [0, 0, 2, 0]], np.uint8),
                 row_scale=np.array([2.0, 0.5], np.float32), scale_rows=2)


def example_tensor():
    from pydnnz.compress import QuantizedTensor

    q = EXAMPLE_Q
    return QuantizedTensor(q["codebook"], q["indices"], row_scale=q["row_scale"], scale_rows=q["scale_rows"])


def test_spec_example_is_what_the_writer_produces_and_loads_back():
    q = example_tensor()
    assert np.asarray(q).tolist() == [[0, 1.5, 0, 1.5], [2, 0, 0, 1.5], [0, 0, 0.5, 0]]
    data = save({"w": pydnnz.encode(q, "im")}, {"about": "im + row scales"})
    assert data == EXAMPLE.read_bytes()
    f = pydnnz.load_file(EXAMPLE)
    w = f["w"]
    assert isinstance(w, ScaledMatrix) and w.params == {"bits": 2, "k": 3, "row_scale_rows": 2}
    assert w.decode().tolist() == np.asarray(q).tolist()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 7), k=st.integers(2, 12), block=st.integers(1, 9),
       encoding=st.sampled_from(["auto", "dense", "csc", "im", "ham", "sham", "rlham"]), seed=st.integers(0, 2**16),
       prune=st.sampled_from([None, 50.0]))
def test_scaled_round_trip_is_bit_exact(rows, cols, k, block, encoding, seed, prune):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(rows, cols)) * np.exp(rng.uniform(-6, 6, size=(rows, 1)))).astype(np.float32)
    q = quantize(w, "uq", k, prune=prune, granularity=block)
    dense = np.asarray(q)
    e = pydnnz.encode(q, encoding)
    back = load(save({"w": e}))["w"]
    for m in (e, back):
        assert np.array_equal(m.decode().view(np.uint32), dense.view(np.uint32))


def test_doctests():
    import doctest

    from pydnnz.encodings import scaled

    res = doctest.testmod(scaled, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


@pytest.mark.parametrize("groups, in_ch, out_ch", [(4, 4, 8), (2, 6, 4)])  # depthwise (mult 2), grouped
@pytest.mark.parametrize("granularity", ["channel", 2])
def test_grouped_and_depthwise_convs_with_row_scales_run_from_the_compressed_form(groups, in_ch, out_ch,
                                                                                  granularity, monkeypatch):
    """Issue 16: a per-channel (ScaledMatrix) weight of a grouped or depthwise conv used to fall back to
    decoding each group's rows; it now runs the inner encoding's grouped/depthwise kernel, then the scales."""
    torch = pytest.importorskip("torch")
    import pydnnz.torch as pt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(in_ch, out_ch, 3, padding=1, groups=groups))
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-3, 1, out_ch).view(-1, 1, 1, 1))  # rows of very different ranges
    small = pt.compress_model(model, {"method": "uq", "k": 16, "granularity": granularity})
    assert isinstance(small[0].encoded, ScaledMatrix)
    x = torch.randn(2, in_ch, 7, 9)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x, small[0].weight, small[0].bias, padding=1, groups=groups)

        def no_decode(*a, **k):
            raise AssertionError("decoded rows in forward")
        monkeypatch.setattr(ScaledMatrix, "decode_rows", no_decode)
        monkeypatch.setattr(ScaledMatrix, "decode", no_decode)
        out = small(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
