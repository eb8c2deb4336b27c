"""Row access (EncodedMatrix.decode_rows, CompressedEmbedding) and grouped/depthwise convolutions
from the encoded weight in one C call (EncodedMatrix.matmul_grouped, CompressedConv1d/2d)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import pydnnz  # noqa: E402
from pydnnz.errors import DnnzError, InvalidArgumentError, ShapeError  # noqa: E402
from pydnnz.torch import CompressedConv1d, CompressedConv2d, CompressedEmbedding  # noqa: E402

ENCODINGS = pydnnz.encodings.encodings()


def quantized(shape, k=16, seed=0, zeros=0.5):
    rng = np.random.default_rng(seed)
    cb = np.sort(rng.normal(size=k)).astype(np.float32)
    w = cb[rng.integers(0, k, size=shape)]
    w[rng.random(shape) < zeros] = 0.0
    return w


def encodable(enc, w):
    cls = pydnnz.encodings.get_encoding(enc)
    return cls.applicable(pydnnz.encodings.MatrixInput(w))


# ------------------------------------------------------------------------------------------------
# decode_rows

@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("zeros", [0.0, 0.6, 1.0])
def test_decode_rows_exact_every_encoding(encoding, zeros):
    w = quantized((57, 33), k=12, seed=1, zeros=zeros)
    w[3, 5] = -0.0  # bit-exact: -0.0 stays -0.0
    if not encodable(encoding, w):
        pytest.skip(f"{encoding} cannot hold this matrix")
    e = pydnnz.encode(w, encoding)
    ids = np.array([0, 1, 2, 56, 3, 3, 40, 41, 7], np.int64)
    got = e.decode_rows(ids)
    assert got.dtype == np.float32 and got.shape == (ids.size, 33)
    assert np.array_equal(got.view(np.uint32), w[ids].view(np.uint32))
    assert e.decode_rows(np.zeros(0, np.int64)).shape == (0, 33)
    assert np.array_equal(e.decode_rows(np.arange(57)).view(np.uint32), w.view(np.uint32))


def test_decode_rows_keeps_the_tensor_shape_and_id_shape():
    w = quantized((10, 2, 3, 3), k=8)
    e = pydnnz.encode(w, "ham")
    got = e.decode_rows(np.array([[9, 0], [4, 4]], np.uint16))
    assert got.shape == (2, 2, 2, 3, 3)
    assert np.array_equal(got, w[np.array([[9, 0], [4, 4]])])


@given(st.data())
def test_decode_rows_property(data):
    encoding = data.draw(st.sampled_from(ENCODINGS))
    rows = data.draw(st.integers(1, 40))
    cols = data.draw(st.integers(0, 40))
    k = data.draw(st.integers(1, 20))
    seed = data.draw(st.integers(0, 2**32 - 1))
    zeros = data.draw(st.sampled_from([0.0, 0.5, 0.95]))
    w = quantized((rows, cols), k=k, seed=seed, zeros=zeros)
    if not encodable(encoding, w):
        return
    e = pydnnz.encode(w, encoding)
    ids = np.array(data.draw(st.lists(st.integers(0, rows - 1), max_size=30)), np.int64)
    assert np.array_equal(e.decode_rows(ids).view(np.uint32), w[ids].view(np.uint32))


@pytest.mark.parametrize("bad", [[-1], [5], [0, 2**40], [1, 2, 7]])
def test_decode_rows_rejects_bad_ids(bad):
    e = pydnnz.encode(quantized((5, 4)), "ham")
    with pytest.raises(InvalidArgumentError, match="out of range"):
        e.decode_rows(np.array(bad, np.int64))


@pytest.mark.parametrize("ids", [np.array([0.0]), np.array([True]), ["a"]])
def test_decode_rows_rejects_non_integer_ids(ids):
    with pytest.raises(DnnzError, match="integers"):
        pydnnz.encode(quantized((5, 4)), "im").decode_rows(ids)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_embedding_decodes_only_the_rows_asked(encoding, monkeypatch):
    table = quantized((300, 16), k=8, seed=3, zeros=0.3)
    if not encodable(encoding, table):
        pytest.skip(f"{encoding} cannot hold this table")
    dense = nn.Embedding(300, 16, padding_idx=2)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(table))
    emb = CompressedEmbedding.from_module(dense, pydnnz.encode(table, encoding))
    asked = []
    real = type(emb.encoded).decode_rows

    def spy(self, ids):
        asked.append(np.asarray(ids).size)
        return real(self, ids)

    monkeypatch.setattr(type(emb.encoded), "decode_rows", spy)
    monkeypatch.setattr(type(emb.encoded), "decode", lambda self: pytest.fail("the whole table was decoded"))
    ids = torch.tensor([[5, 299, 5, 0], [2, 17, 18, 19]])
    assert torch.equal(emb(ids), dense(ids))
    assert asked == [8]  # few ids: each id's row, no dedup
    from pydnnz.torch import _modules

    monkeypatch.setattr(_modules, "_EMBED_DIRECT_IDS", 4)
    assert torch.equal(emb(ids), dense(ids))
    assert asked == [8, 7]  # many ids: the unique ids, once each


@pytest.mark.parametrize("encoding", ["im", "ham", "csc", "rlham"])
@pytest.mark.parametrize("n_ids", [3, 40, 2000])
def test_embedding_every_lookup_path_matches_dense(encoding, n_ids):
    """Few ids (rows decoded directly), a table no bigger than the ids (decoded whole), many ids
    over a bigger table (unique rows): the same lookups as the dense table."""
    rng = np.random.default_rng(n_ids)
    for rows in (26, 3000):
        table = quantized((rows, 12), k=8, seed=rows, zeros=0.3)
        dense = nn.Embedding(rows, 12, padding_idx=0)
        with torch.no_grad():
            dense.weight.copy_(torch.from_numpy(table))
        emb = CompressedEmbedding.from_module(dense, pydnnz.encode(table, encoding))
        ids = torch.from_numpy(rng.integers(0, rows, size=(2, n_ids // 2 + 1)))
        assert torch.equal(emb(ids), dense(ids))


def test_embedding_bad_ids_raise():
    emb = CompressedEmbedding(pydnnz.encode(quantized((6, 3)), "ham"))
    with pytest.raises(InvalidArgumentError):
        emb(torch.tensor([6]))
    with pytest.raises(InvalidArgumentError):
        emb(torch.tensor([-7]))


# ------------------------------------------------------------------------------------------------
# grouped products and convolutions

@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("groups,per_out,per_in", [(1, 12, 20), (6, 1, 9), (4, 3, 8), (3, 10, 700), (2, 9, 5)])
def test_matmul_grouped_matches_per_group_products(encoding, groups, per_out, per_in):
    w = quantized((groups * per_out, per_in), k=10, seed=groups, zeros=0.4)
    if not encodable(encoding, w):
        pytest.skip(f"{encoding} cannot hold this matrix")
    e = pydnnz.encode(w, encoding)
    x = np.random.default_rng(0).standard_normal((groups, 11, per_in)).astype(np.float32)
    got = e.matmul_grouped(x, groups)
    for g in range(groups):
        want = e.decode_rows(np.arange(g * per_out, (g + 1) * per_out)) @ x[g].T
        np.testing.assert_allclose(got[g], want.T, rtol=1e-5, atol=1e-5)


def test_matmul_grouped_checks_its_arguments():
    e = pydnnz.encode(quantized((6, 4)), "im")
    with pytest.raises(ShapeError):
        e.matmul_grouped(np.zeros((4, 2, 4), np.float32), 4)  # 6 rows do not split into 4
    with pytest.raises(ShapeError):
        e.matmul_grouped(np.zeros((3, 2, 5), np.float32), 3)
    with pytest.raises(ShapeError):
        e.matmul_grouped(np.zeros((3, 2, 4), np.float64), 3)


CONV2D = [
    dict(in_channels=8, out_channels=12, kernel_size=3, groups=1, padding=1),
    dict(in_channels=16, out_channels=16, kernel_size=3, groups=16, padding=1),            # depthwise
    dict(in_channels=16, out_channels=32, kernel_size=3, groups=16, stride=2, padding=1),  # multiplier 2
    dict(in_channels=8, out_channels=12, kernel_size=(3, 2), groups=4, stride=(2, 1), padding=(1, 0),
         dilation=(1, 2)),
    dict(in_channels=12, out_channels=12, kernel_size=1, groups=4),
    dict(in_channels=8, out_channels=8, kernel_size=5, groups=8, padding="same", dilation=2,
         padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 4), padding="same"),  # zeros, asymmetric
    dict(in_channels=6, out_channels=6, kernel_size=4, groups=6, padding="same"),  # depthwise, asymmetric
    dict(in_channels=5, out_channels=10, kernel_size=(3, 2), groups=5, stride=(1, 3), padding=(2, 1),
         dilation=(2, 1), bias=False),                                             # depthwise, odd strides
]
CONV1D = [
    dict(in_channels=6, out_channels=6, kernel_size=4, groups=6, padding=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, stride=2, padding="valid"),
    dict(in_channels=8, out_channels=4, kernel_size=3, groups=4, stride=2, dilation=2),
    dict(in_channels=5, out_channels=7, kernel_size=3, groups=1),
]


def _same_weights(dense, seed):
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(quantized(tuple(dense.weight.shape), k=12, seed=seed, zeros=0.3)))
        if dense.bias is not None:
            dense.bias.normal_()


@pytest.fixture(params=["c", "decoded", "decoded-blocks"])
def conv_path(request, monkeypatch):
    """Which forward a compressed conv takes: the C kernels (im2col + grouped product, or
    depthwise), or torch on the weight decoded a block at a time (one block, or blocks of one
    group / a few output channels)."""
    from pydnnz.torch import _decoded

    if request.param == "c":
        monkeypatch.setattr(_decoded, "MIN_WINDOWS", 1 << 62)
    else:
        monkeypatch.setattr(_decoded, "MIN_WINDOWS", 1)
        if request.param == "decoded-blocks":
            monkeypatch.setattr(_decoded, "BLOCK", 20)
    return request.param


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("i", range(len(CONV2D)))
def test_conv2d_groups_match_torch(encoding, i, conv_path):
    torch.manual_seed(i)
    dense = nn.Conv2d(**CONV2D[i])
    _same_weights(dense, i)
    w = dense.weight.detach().numpy()
    if not encodable(encoding, w):
        pytest.skip(f"{encoding} cannot hold this weight")
    enc = pydnnz.encode(w, encoding)
    comp = CompressedConv2d.from_module(dense, enc)
    assert comp.encoded is enc
    for shape in [(2, dense.in_channels, 9, 11), (dense.in_channels, 7, 6)]:
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(comp(x), dense(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("encoding", ["im", "ham", "csc", "rlham"])
@pytest.mark.parametrize("i", range(len(CONV1D)))
def test_conv1d_groups_match_torch(encoding, i, conv_path):
    torch.manual_seed(i)
    dense = nn.Conv1d(**CONV1D[i])
    _same_weights(dense, 10 + i)
    comp = CompressedConv1d.from_module(dense, pydnnz.encode(dense.weight.detach().numpy(), encoding))
    x = torch.randn(3, dense.in_channels, 17)
    with torch.no_grad():
        torch.testing.assert_close(comp(x), dense(x), rtol=1e-4, atol=1e-4)


def test_depthwise_conv_large_batch_uses_bounded_slices():
    """A batch bigger than one im2col slice goes through several slices (and one C call each)."""
    dense = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    _same_weights(dense, 5)
    comp = CompressedConv2d.from_module(dense, pydnnz.encode(dense.weight.detach().numpy(), "ham"))
    x = torch.randn(9, 32, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(comp(x), dense(x), rtol=1e-4, atol=1e-4)


DEPTHWISE = [  # channels, mult, h, w, kernel, stride, dilation, padding (top, bottom, left, right)
    (3, 1, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (5, 2, 9, 11, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
    (4, 1, 56, 56, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),     # four vectors a row
    (2, 1, 113, 112, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),   # stride 2, several strips
    (2, 1, 20, 33, (5, 5), (1, 3), (2, 1), (4, 0, 2, 3)),     # column stride 3: the generic fill
    (3, 3, 13, 5, (2, 4), (3, 1), (1, 2), (0, 2, 3, 3)),
    (2, 1, 1, 70, (1, 3), (1, 1), (1, 1), (0, 0, 1, 1)),      # 1-D
    (2, 1, 300, 300, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),   # a row strip at a time
    (1, 1, 5, 5, (7, 7), (1, 1), (1, 1), (3, 3, 3, 3)),
    (2, 1, 9, 200, (3, 3), (1, 2), (1, 1), (1, 1, 1, 1)),
    (3, 1, 6, 6, (3, 3), (1, 1), (1, 1), (5, 5, 5, 5)),       # padding wider than the kernel
    (2, 1, 14, 14, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("path", pydnnz.runtime.supported_cpu_paths())
@pytest.mark.parametrize("encoding", ["im", "ham", "csc"])
@pytest.mark.parametrize("case", range(len(DEPTHWISE)))
def test_conv_depthwise_direct_matches_reference(path, encoding, case):
    """The direct depthwise kernel (padding and bias inside) on every CPU path and thread count
    against a float64 reference on the same decoded weights."""
    c, mult, h, w, k, s, d, pad = DEPTHWISE[case]
    rng = np.random.default_rng(case)
    wt = quantized((c * mult, 1) + k, k=12, seed=case, zeros=0.2)
    e = pydnnz.encode(wt, encoding)
    x = rng.normal(size=(3, c, h, w)).astype(np.float32)
    bias = rng.normal(size=c * mult).astype(np.float32)
    xp = torch.from_numpy(np.pad(x.astype(np.float64), ((0, 0), (0, 0), pad[:2], pad[2:])))
    ref = torch.nn.functional.conv2d(xp, torch.from_numpy(wt.astype(np.float64)), torch.from_numpy(bias.astype(np.float64)),
                                     s, 0, d, c).numpy()
    old = pydnnz.get_num_threads()
    try:
        pydnnz.runtime.set_cpu_path(path)
        for threads in (1, 3):
            pydnnz.set_num_threads(threads)
            got = e.conv_depthwise(x, k, s, d, pad, bias)
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
            out = np.full(ref[:1].shape, np.nan, np.float32)
            assert e.conv_depthwise(x[:1], k, s, d, pad, None, out) is out  # no bias, into `out`
            np.testing.assert_allclose(out, ref[:1] - bias[None, :, None, None], rtol=1e-5, atol=1e-5)
    finally:
        pydnnz.runtime.set_cpu_path(None)
        pydnnz.set_num_threads(old)


def test_conv_fast_forward_follows_the_weight_and_bias():
    """The per-shape fast forward is rebuilt when the encoded weight changes and reads the bias at
    every call; copies of the layer compute the same."""
    import copy

    dense = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    _same_weights(dense, 7)
    comp = CompressedConv2d.from_module(dense, pydnnz.encode(dense.weight.detach().numpy(), "im"))
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(comp(x), dense(x), rtol=1e-5, atol=1e-5)
        dense.bias.add_(1.0)
        comp.bias.add_(1.0)
        torch.testing.assert_close(comp(x), dense(x), rtol=1e-5, atol=1e-5)
        _same_weights(dense, 8)
        comp.load_state_dict(dense.state_dict())
        torch.testing.assert_close(comp(x), dense(x), rtol=1e-5, atol=1e-5)
        twin = copy.deepcopy(comp)
        twin.bias.zero_()
        dense.bias.zero_()
        torch.testing.assert_close(twin(x), dense(x), rtol=1e-5, atol=1e-5)


def test_conv_depthwise_checks_its_arguments():
    e = pydnnz.encode(quantized((8, 1, 3, 3)), "ham")
    x = np.zeros((1, 4, 5, 5), np.float32)
    assert e.conv_depthwise(x, (3, 3)).shape == (1, 8, 3, 3)  # channel multiplier 2
    with pytest.raises(ShapeError):
        e.conv_depthwise(np.zeros((1, 3, 5, 5), np.float32), (3, 3))  # 8 rows do not split over 3 channels
    with pytest.raises(ShapeError):
        e.conv_depthwise(x, (2, 2))
    with pytest.raises(ShapeError):
        e.conv_depthwise(np.zeros((1, 4, 2, 5), np.float32), (3, 3))  # smaller than the kernel
    with pytest.raises(ShapeError):
        e.conv_depthwise(x.astype(np.float64), (3, 3))
    with pytest.raises(ShapeError):
        e.conv_depthwise(x, (3, 3), padding=(1, -1))
    with pytest.raises(ShapeError):
        e.conv_depthwise(x, (3, 3), bias=np.zeros(3, np.float32))
    with pytest.raises(ShapeError):
        e.conv_depthwise(x, (3, 3), out=np.zeros((1, 8, 3, 2), np.float32))
    assert e.conv_depthwise(x, (3, 3), padding=(1, 1, 0, 2)).shape == (1, 8, 5, 5)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("block", [1 << 22, 40, 1])
def test_linear_decoded_path_matches_dense(encoding, block, monkeypatch):
    """Enough input rows: the weight is decoded (whole, or a few rows at a time) and torch runs
    the product; the result matches the dense layer and the C kernels' result."""
    from pydnnz.torch import CompressedLinear, _decoded

    dense = nn.Linear(24, 13)
    _same_weights(dense, 3)
    w = dense.weight.detach().numpy()
    if not encodable(encoding, w):
        pytest.skip(f"{encoding} cannot hold this weight")
    comp = CompressedLinear.from_module(dense, pydnnz.encode(w, encoding))
    x = torch.randn(5, 7, 24)
    with torch.no_grad():
        monkeypatch.setattr(_decoded, "MIN_LINEAR_ROWS", 1 << 62)
        via_c = comp(x)
        monkeypatch.setattr(_decoded, "MIN_LINEAR_ROWS", 1)
        monkeypatch.setattr(_decoded, "LINEAR_BLOCK", block)
        via_torch = comp(x)
        torch.testing.assert_close(via_torch, dense(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(via_torch, via_c, rtol=1e-4, atol=1e-4)
