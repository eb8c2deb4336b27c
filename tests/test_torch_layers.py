"""Compressed ConvTranspose1d/2d, LSTM/GRU (+cells) and MultiheadAttention: exact against dense
inference on the same (decoded) weights, through save_model/load_model and state_dict."""
import io
import json
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pydnnz.torch as pt  # noqa: E402
from pydnnz import errors  # noqa: E402
from pydnnz.torch._layers import (CompressedConvTranspose1d, CompressedConvTranspose2d, CompressedGRU,  # noqa: E402
                                  CompressedGRUCell, CompressedLSTM, CompressedLSTMCell,
                                  CompressedMultiheadAttention)

TOL = dict(rtol=1e-4, atol=1e-5)


class Wrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kw):
        return self.layer(*args, **kw)


def compress(layer, method="cws", k=8, **rule):
    torch.manual_seed(0)
    small = pt.compress_model(Wrap(layer), {"method": method, "k": k, **rule})
    return small, pt.decompress_model(small)


def close(a, b):
    if isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y)
    elif a is None:
        assert b is None
    else:
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("kw", [
    dict(), dict(stride=2), dict(stride=2, padding=1, output_padding=1), dict(stride=3, padding=2, dilation=2),
    dict(groups=2, stride=2), dict(padding=3, bias=False), dict(stride=2, dilation=2, output_padding=1)])
def test_conv_transpose_2d_matches_dense(kw):
    torch.manual_seed(1)
    layer = nn.ConvTranspose2d(4, 6, (3, 2), **kw)
    small, dense = compress(layer)
    assert isinstance(small.layer, CompressedConvTranspose2d)
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        close(small(x), dense(x))
        close(small(x[0]), dense(x[0]))  # unbatched
        assert torch.equal(dense.layer.weight, small.layer.weight)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, output_padding=1), dict(groups=3, dilation=2)])
def test_conv_transpose_1d_matches_dense_and_output_size(kw):
    torch.manual_seed(2)
    layer = nn.ConvTranspose1d(6, 3, 4, **kw)
    small, dense = compress(layer, "uq", 16, granularity="channel")
    assert isinstance(small.layer, CompressedConvTranspose1d)
    x = torch.randn(3, 6, 9)
    with torch.no_grad():
        close(small(x), dense(x))
    if kw.get("stride", 1) > 1:
        with torch.no_grad():
            size = dense(x).shape[-1] - 1  # output_padding 0 instead of 1
            close(small(x, output_size=[size]), dense(x, output_size=[size]))
            with pytest.raises(errors.ShapeError, match="output_size"):
                small(x, output_size=[size + 5])


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True), dict(batch_first=True, bias=False)])
def test_rnn_matches_dense(cls, kw):
    torch.manual_seed(3)
    layer = cls(5, 7, **kw)
    small, dense = compress(layer, "uq", 16)
    assert isinstance(small.layer, CompressedLSTM if cls is nn.LSTM else CompressedGRU)
    x = torch.randn(4, 6, 5)
    n = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    h0 = torch.randn(n, 4 if kw.get("batch_first") else 6, 7)
    hx = (h0, torch.randn_like(h0)) if cls is nn.LSTM else h0
    with torch.no_grad():
        close(small(x), dense(x))
        close(small(x, hx), dense(x, hx))
        unb = x[0] if not kw.get("batch_first") else x[:, 0]
        close(small(unb), dense(unb))


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell])
def test_cells_match_dense(cls):
    torch.manual_seed(4)
    small, dense = compress(cls(5, 6), "cws", 8)
    assert isinstance(small.layer, CompressedLSTMCell if cls is nn.LSTMCell else CompressedGRUCell)
    x = torch.randn(3, 5)
    h = torch.randn(3, 6)
    hx = (h, torch.randn(3, 6)) if cls is nn.LSTMCell else h
    with torch.no_grad():
        close(small(x), dense(x))
        close(small(x, hx), dense(x, hx))
        close(small(x[0]), dense(x[0]))


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_matches_dense(batch_first):
    torch.manual_seed(5)
    layer = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    small, dense = compress(layer, "uq", 32)
    dense.eval()
    assert isinstance(small.layer, CompressedMultiheadAttention)
    assert isinstance(small.layer.out_proj, pt.CompressedLinear)
    q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    kv = torch.randn(2, 7, 16) if batch_first else torch.randn(7, 2, 16)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, -2:] = True
    with torch.no_grad():
        close(small(q, q, q), dense(q, q, q))  # self-attention: one product
        close(small(q, kv, kv), dense(q, kv, kv))  # cross-attention
        close(small(q, kv, kv, key_padding_mask=pad), dense(q, kv, kv, key_padding_mask=pad))
        close(small(q, q, q, attn_mask=causal, average_attn_weights=False),
              dense(q, q, q, attn_mask=causal, average_attn_weights=False))
        close(small(q, q, q, attn_mask=causal.float() * -1e9, need_weights=False)[0],
              dense(q, q, q, attn_mask=causal.float() * -1e9, need_weights=False)[0])
        one = q[0] if batch_first else q[:, 0]
        close(small(one, one, one), dense(one, one, one))


def every_layer_model():
    torch.manual_seed(6)
    return nn.ModuleDict({"up": nn.ConvTranspose2d(3, 4, 3, stride=2), "lstm": nn.LSTM(4, 8, num_layers=2),
                          "gru": nn.GRU(4, 6, bidirectional=True), "cell": nn.LSTMCell(4, 5),
                          "gcell": nn.GRUCell(4, 5), "attn": nn.MultiheadAttention(8, 2), "fc": nn.Linear(8, 4)})


def run_all(m, seed=7):
    g = torch.Generator().manual_seed(seed)
    img, seq = torch.randn(2, 3, 5, 5, generator=g), torch.randn(6, 2, 4, generator=g)
    with torch.no_grad():
        out = [m["up"](img), *m["lstm"](seq)[1], m["gru"](seq)[0], m["cell"](seq[0])[0], m["gcell"](seq[0])]
        h = m["lstm"](seq)[0]
        out.append(m["attn"](h, h, h)[0])
        out.append(m["fc"](h))
    return out


def test_save_load_and_state_dict_round_trips_of_every_layer(tmp_path):
    model = every_layer_model().eval()
    small = pt.compress_model(model, {"method": "cws", "k": 16})
    assert {type(v).__name__ for v in small.values()} == {
        "CompressedConvTranspose2d", "CompressedLSTM", "CompressedGRU", "CompressedLSTMCell", "CompressedGRUCell",
        "CompressedMultiheadAttention", "CompressedLinear"}
    want = run_all(small)
    close(run_all(pt.decompress_model(small).eval()), want)
    layers = {s["layer"] for s in json.loads(small.dnnz_metadata["pydnnz.layers"])}
    assert {"lstm.weight_ih_l1", "gru.weight_hh_l0_reverse", "attn.in_proj_weight", "attn.out_proj.weight",
            "up", "cell.weight_ih"} <= layers
    assert json.loads(small.dnnz_metadata["pydnnz.dense"])["dense"] == []

    path = tmp_path / "m.dnnz"
    pt.save_model(small, path)
    loaded = pt.load_model(path, every_layer_model())
    assert [type(v).__name__ for v in loaded.values()] == [type(v).__name__ for v in small.values()]
    assert all(torch.equal(a, b) for a, b in zip(run_all(loaded), want))
    again = pt.load_model(path, loaded)  # into the compressed model itself
    assert all(torch.equal(a, b) for a, b in zip(run_all(again), want))
    with torch.device("meta"):
        meta = every_layer_model()
    assert all(torch.equal(a, b) for a, b in zip(run_all(pt.load_model(path, meta)), want))

    buf = io.BytesIO()
    torch.save(small.state_dict(), buf)
    buf.seek(0)
    dense = every_layer_model().eval()
    dense.load_state_dict(torch.load(buf))
    close(run_all(dense), want)
    assert sorted(small.state_dict()) == sorted(dense.state_dict())


def test_partly_compressed_lstm_in_a_file_is_refused(tmp_path):
    import pydnnz

    lstm = nn.LSTM(4, 8)
    tensors = {k: v.detach().numpy() for k, v in Wrap(lstm).state_dict().items()}
    tensors["layer.weight_ih_l0"] = pydnnz.encode(tensors["layer.weight_ih_l0"], "dense")
    pydnnz.save_file(tensors, tmp_path / "m.dnnz")
    with pytest.raises(pt.ModelMismatchError, match="needs all of"):
        pt.load_model(tmp_path / "m.dnnz", Wrap(nn.LSTM(4, 8)))


def test_unsupported_configurations_stay_dense_with_a_warning():
    model = nn.ModuleDict({"proj": nn.LSTM(4, 8, proj_size=3), "kv": nn.MultiheadAttention(8, 2, kdim=4, vdim=4),
                           "fc": nn.Linear(8, 8)})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        small = pt.compress_model(model, {"method": "uq", "k": 4})
    msgs = [str(a.message) for a in w]
    assert any("'proj' (LSTM)" in m and "proj_size > 0" in m for m in msgs)
    assert any("'kv' (MultiheadAttention)" in m and "kdim/vdim" in m for m in msgs)
    rows = {r["layer"]: r["reason"] for r in json.loads(small.dnnz_metadata["pydnnz.dense"])["dense"]}
    assert rows["proj"] == "LSTM with proj_size > 0 is not supported"
    assert type(small["proj"]) is nn.LSTM and type(small["fc"]).__name__ == "CompressedLinear"


def test_recurrent_errors_are_clear():
    small, _ = compress(nn.LSTM(4, 8))
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(errors.UnsupportedError, match="PackedSequence"):
        small(packed)
    with pytest.raises(errors.ShapeError, match="hidden state"):
        small(torch.randn(3, 2, 4), (torch.zeros(1, 5, 8), torch.zeros(1, 5, 8)))
    with pytest.raises(errors.UnsupportedError, match="fine-tuning does not reach"):
        pt.compress_model(Wrap(nn.GRU(4, 4)), {"method": "uq"}, finetune=lambda m: None)


def test_transformer_encoder_runs_the_compressed_attention_not_a_dense_fast_path(monkeypatch):
    torch.manual_seed(8)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0),
                                  num_layers=2, enable_nested_tensor=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = pt.compress_model(Wrap(model), {"method": "uq", "k": 32})
    dense = pt.decompress_model(small).eval()
    assert isinstance(small.layer.layers[0].self_attn, CompressedMultiheadAttention)
    x = torch.randn(2, 5, 16)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[0, -1] = True
    with torch.no_grad():
        want = dense(x, src_key_padding_mask=pad)
        from pydnnz.torch import _state

        monkeypatch.setattr(_state, "decoded", lambda em: pytest.fail("a weight was decoded in forward"))
        close(small(x, src_key_padding_mask=pad), want)


def test_load_state_dict_of_new_dense_weights_into_every_compressed_layer():
    small = pt.compress_model(every_layer_model().eval(), {"method": "cws", "k": 16})
    torch.manual_seed(9)
    other = every_layer_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    other.eval()
    with pytest.warns(UserWarning, match="differs from the compressed weight"):
        small.load_state_dict(other.state_dict())
    assert type(small["lstm"]).__name__ == "CompressedLSTM"
    close(run_all(small), run_all(other))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small.load_state_dict(small.state_dict())  # its own decoded weights: nothing re-encoded
