"""ONNX models and Keras .h5 weights: compress the weights that feed Conv/Gemm/MatMul, convert back
to ONNX through the original model as a template (untouched initializers bit-exact, the model runs in
onnxruntime), and Keras HDF5 weights into .dnnz and back to .npz/.safetensors bit-exact."""
import json

import numpy as np
import pytest

import pydnnz
from pydnnz.cli import main
from pydnnz.convert import convert, read_tensors

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def small_onnx(path, dtype=np.float32):
    """x[1,4,10] -> Conv(8,4,3) -> Relu -> Flatten -> MatMul W1[64,16] -> Add b1 -> Gemm(W2[3,16], transB)."""
    rng = np.random.default_rng(0)
    init = {"conv.w": rng.standard_normal((8, 4, 3)), "conv.b": rng.standard_normal(8),
            "W1": rng.standard_normal((64, 16)), "b1": rng.standard_normal(16),
            "W2": rng.standard_normal((3, 16)), "b2": rng.standard_normal(3)}
    init = {k: v.astype(dtype) for k, v in init.items()}
    init["shape"] = np.array([1, 64], np.int64)
    ft = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "W1"], ["m"]),
             helper.make_node("Add", ["m", "b1"], ["h"]),
             helper.make_node("Gemm", ["h", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", ft, [1, 4, 10])],
                              [helper.make_tensor_value_info("y", ft, [1, 3])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return init


def run_onnx(path, x):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_onnx_compress_and_back_through_the_template(tmp_path, dtype):
    src = tmp_path / "m.onnx"
    init = small_onnx(src, dtype)
    back, meta = read_tensors(src)
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in init.items())

    assert main(["compress", str(src), "-o", str(tmp_path / "m.dnnz")]) == 0  # defaults: lossless
    f = pydnnz.load_file(tmp_path / "m.dnnz")
    assert {k for k in f if not isinstance(f[k], np.ndarray)} <= {"conv.w", "W1", "W2"}
    assert isinstance(f["b1"], np.ndarray) and isinstance(f["shape"], np.ndarray)
    assert main(["convert", str(tmp_path / "m.dnnz"), str(tmp_path / "same.onnx"), "--template", str(src)]) == 0
    original = onnx.load(str(src))
    same = onnx.load(str(tmp_path / "same.onnx"))
    assert [t.SerializeToString() for t in same.graph.initializer] == \
        [t.SerializeToString() for t in original.graph.initializer]
    x = np.random.default_rng(1).standard_normal((1, 4, 10)).astype(dtype)
    assert np.array_equal(run_onnx(tmp_path / "same.onnx", x), run_onnx(src, x))

    assert main(["compress", str(src), "-o", str(tmp_path / "q.dnnz"), "--quantize", "uq", "--k", "64"]) == 0
    assert main(["convert", str(tmp_path / "q.dnnz"), str(tmp_path / "q.onnx"), "--template", str(src)]) == 0
    q = onnx.load(str(tmp_path / "q.onnx"))
    qi = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert np.unique(qi["W1"]).size <= 64 and qi["W1"].dtype == dtype
    assert np.array_equal(qi["b1"], init["b1"])  # untouched: bit-exact
    y, yq = run_onnx(src, x).astype(np.float32), run_onnx(tmp_path / "q.onnx", x).astype(np.float32)
    assert np.linalg.norm(y - yq) < 0.2 * np.linalg.norm(y)


def test_onnx_needs_a_matching_template(tmp_path):
    src = tmp_path / "m.onnx"
    small_onnx(src)
    convert(src, tmp_path / "m.npz")
    assert main(["convert", str(tmp_path / "m.npz"), str(tmp_path / "x.onnx")]) == 2  # usage: no template
    other = tmp_path / "o.onnx"
    small_onnx(other, np.float16)
    assert main(["convert", str(tmp_path / "m.npz"), str(tmp_path / "x.onnx"), "--template", str(other)]) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_keras_h5_into_dnnz_and_back_bit_exact(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    layout = {"model_weights/dense/dense/kernel:0": rng.standard_normal((16, 8)).astype(np.float32),
              "model_weights/dense/dense/bias:0": rng.standard_normal(8).astype(np.float32),
              "model_weights/conv2d/conv2d/kernel:0": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
              "model_weights/bn/bn/moving_mean:0": np.zeros(4, np.float16),
              "optimizer_weights/iter:0": np.array(7, np.int64)}
    src = tmp_path / "model.weights.h5"
    with h5py.File(src, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.create_dataset("model_weights/layer_names", data=np.array([b"dense", b"conv2d"]))
        for k, v in layout.items():
            f.create_dataset(k, data=v)
    assert main(["compress", str(src), "-o", str(tmp_path / "k.dnnz"), "--quantize", "cws", "--k", "8",
                 "--keep", "*conv2d*"]) == 0
    dn, _ = read_tensors(tmp_path / "k.dnnz")
    assert np.unique(dn["model_weights.dense.dense.kernel:0"]).size <= 8
    for ext in ("npz", "safetensors"):
        convert(src, tmp_path / f"plain.{ext}")
        back, _ = read_tensors(tmp_path / f"plain.{ext}")
        assert set(back) == {k.replace("/", ".") for k in layout}
        for k, v in layout.items():
            got = back[k.replace("/", ".")]
            assert got.dtype == v.dtype and got.shape == v.shape and got.tobytes() == v.tobytes()
    assert main(["convert", str(tmp_path / "k.dnnz"), str(tmp_path / "back.h5")]) == 1  # read only


def subgraph_onnx(path):
    """y = If(c, then: x @ Wt (initializer of the branch), else: x @ Transpose(Concat(Slice(Wc)))
    (a Constant node, sliced and re-concatenated as exporters do with LSTM gates)) @ Wo, where Wo is
    an initializer of the main graph used from inside both branches (outer scope)."""
    rng = np.random.default_rng(0)
    wt, wc, wo = (rng.standard_normal(s).astype(np.float32) for s in ((8, 6), (6, 8), (6, 3)))
    ints = lambda name, v: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(  # noqa: E731
        np.array(v, np.int64), name))
    f = TensorProto.FLOAT
    then = helper.make_graph([helper.make_node("MatMul", ["x", "Wt"], ["t1"]),
                              helper.make_node("MatMul", ["t1", "Wo"], ["t_out"])], "then", [],
                             [helper.make_tensor_value_info("t_out", f, [2, 3])], [numpy_helper.from_array(wt, "Wt")])
    other = helper.make_graph([
        helper.make_node("Constant", [], ["Wc"], value=numpy_helper.from_array(wc, "Wc")),
        ints("s0", [0]), ints("s3", [3]), ints("s6", [6]), ints("ax", [0]),
        helper.make_node("Slice", ["Wc", "s0", "s3", "ax"], ["lo"]),
        helper.make_node("Slice", ["Wc", "s3", "s6", "ax"], ["hi"]),
        helper.make_node("Concat", ["hi", "lo"], ["cat"], axis=0),
        helper.make_node("Transpose", ["cat"], ["wct"]),
        helper.make_node("MatMul", ["x", "wct"], ["e1"]),
        helper.make_node("MatMul", ["e1", "Wo"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", f, [2, 3])])
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", f, [2, 8])],
                              [helper.make_tensor_value_info("y", f, [2, 3])], [numpy_helper.from_array(wo, "Wo")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"Wt": wt, "Wc": wc, "Wo": wo}


def test_onnx_weights_inside_if_subgraphs_and_constants_compress_and_go_back(tmp_path):
    """Issue 16: silero_vad.onnx keeps every weight in Constant nodes inside If branches, and
    silero_vad_op18_ifless uses main-graph initializers from inside the branches: both were refused
    or left whole. Subgraph initializers, float Constants and outer-scope uses are all found."""
    ort = pytest.importorskip("onnxruntime")
    src = tmp_path / "sub.onnx"
    weights = subgraph_onnx(src)
    back, meta = read_tensors(src)
    assert set(back) == {"Wt", "Wc", "Wo"}  # the int64 Slice bounds are graph plumbing, not tensors
    assert all(back[k].tobytes() == v.tobytes() for k, v in weights.items())
    assert set(json.loads(meta["pydnnz.onnx_weights"])) == {"Wt", "Wc", "Wo"}

    assert main(["compress", str(src), "-o", str(tmp_path / "l.dnnz")]) == 0  # defaults: lossless
    assert main(["convert", str(tmp_path / "l.dnnz"), str(tmp_path / "l.onnx"), "--template", str(src)]) == 0
    assert (tmp_path / "l.onnx").read_bytes() == onnx.load(str(src)).SerializeToString()  # bit-exact

    assert main(["compress", str(src), "-o", str(tmp_path / "q.dnnz"), "--quantize", "uq", "--k", "4",
                 "--keep", "Wo"]) == 0
    assert main(["convert", str(tmp_path / "q.dnnz"), str(tmp_path / "q.onnx"), "--template", str(src)]) == 0
    q = onnx.load(str(tmp_path / "q.onnx"))
    assert numpy_helper.to_array(q.graph.initializer[0]).tobytes() == weights["Wo"].tobytes()  # kept whole
    qt, _ = read_tensors(tmp_path / "q.onnx")
    assert np.unique(qt["Wt"]).size <= 4 and np.unique(qt["Wc"]).size <= 4
    assert not np.array_equal(qt["Wt"], weights["Wt"]) and not np.array_equal(qt["Wc"], weights["Wc"])
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    gates = lambda w: np.concatenate([w[3:], w[:3]]).T  # noqa: E731 - the else branch's Slice/Concat/Transpose
    for cond, w, wq in ((True, weights["Wt"], qt["Wt"]), (False, gates(weights["Wc"]), gates(qt["Wc"]))):
        feeds = {"c": np.array(cond), "x": x}
        y = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        yq = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert np.allclose(y, x @ w @ weights["Wo"], atol=1e-4)
        assert np.allclose(yq, x @ wq @ weights["Wo"], atol=1e-4)  # the branch runs the decoded weights


def test_onnx_same_name_in_two_branches_gets_a_path_key(tmp_path):
    """Two If branches may each hold an initializer called "w": keys stay unique (path-qualified)
    and the round trip writes each back to its own branch."""
    def branch(tag, value):
        w = numpy_helper.from_array(np.full((2, 2), value, np.float32), "w")
        return helper.make_graph([helper.make_node("MatMul", ["x", "w"], [f"o{tag}"])], tag, [],
                                 [helper.make_tensor_value_info(f"o{tag}", TensorProto.FLOAT, [1, 2])], [w])
    node = helper.make_node("If", ["c"], ["y"], name="if0", then_branch=branch("a", 1.0), else_branch=branch("b", 2.0))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    path = tmp_path / "dup.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    t, meta = read_tensors(path)
    assert set(t) == {"if0.then_branch/w", "if0.else_branch/w"} == set(json.loads(meta["pydnnz.onnx_weights"]))
    t["if0.else_branch/w"] = np.full((2, 2), 3.0, np.float32)
    pydnnz.convert.write_tensors(t, tmp_path / "out.onnx", template=path)
    back, _ = read_tensors(tmp_path / "out.onnx")
    assert back["if0.then_branch/w"][0, 0] == 1.0 and back["if0.else_branch/w"][0, 0] == 3.0


@pytest.mark.parametrize("name, message", [("bad.onnx", "not a readable ONNX model"),
                                           ("bad.h5", "not a readable HDF5 file")])
def test_garbage_foreign_files_are_one_line_exit_1(tmp_path, capsys, name, message):
    pytest.importorskip("h5py")
    src = tmp_path / name
    src.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    out = tmp_path / "out.dnnz"
    assert main(["compress", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and message in err[0]
    assert not out.exists()
    with pytest.raises(pydnnz.errors.DnnzError, match=message):
        read_tensors(src)


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled with full pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_ckpt_that_needs_full_pickle_is_refused_without_running_it(tmp_path, capsys):
    """Issue 16 (pesto-pitch's mir-1k_g7.ckpt needs weights_only=False): a Lightning-style .ckpt is
    read like .pt with weights_only=True; one holding objects only full pickle can build is refused
    with exit 1 and one line that says how to extract the state dict, and its code never runs."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "ran"
    sd = {"net.weight": torch.randn(8, 4), "net.bias": torch.randn(8)}
    torch.save({"state_dict": sd, "hyper_parameters": _RunsCode(marker)}, tmp_path / "bad.ckpt")
    out = tmp_path / "o.dnnz"
    assert main(["compress", str(tmp_path / "bad.ckpt"), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights_only=True" in err[0] and "state_dict.pt" in err[0] and "system" in err[0]
    assert not marker.exists() and not out.exists()
    with pytest.raises(pydnnz.errors.UnsupportedError, match="never runs pickle code"):
        read_tensors(tmp_path / "bad.ckpt")

    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "good.ckpt")  # plain data: reads like .pt
    assert main(["compress", str(tmp_path / "good.ckpt"), "-o", str(out)]) == 0
    back, meta = read_tensors(out)
    assert np.array_equal(back["state_dict.net.weight"], sd["net.weight"].numpy())
    assert json.loads(meta[pydnnz.convert.SKIPPED_KEY]) == ["epoch"]


def test_onnx_round_trips_every_dtype_and_shape_bit_exact(tmp_path):
    """Issue 16, 'Done when': conversion round trips are bit-exact for every dtype and shape, 0-d
    included, ONNX too: initializers of every dtype ONNX and pydnnz share go to .dnnz/.npz/
    .safetensors/.pt and back into the template, byte for byte; changed values land exactly."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    dtypes = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16",
              "float32", "float64", ml_dtypes.bfloat16]
    shapes = [(), (0,), (3,), (2, 3), (2, 1, 3)]
    init = {}
    for i, dt in enumerate(dtypes):
        dt = np.dtype(dt)
        shape = shapes[i % len(shapes)]
        bits = rng.integers(0, 256, int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
        a = bits.view(np.uint16).view(dt) if dt.name == "bfloat16" else \
            (bits % 2).astype(bool) if dt == bool else bits.view(dt)
        if dt.kind == "f":  # finite values (ONNX keeps NaN payloads, but compare values, not NaN bits)
            a = np.where(np.isfinite(a.astype(np.float64)), a, np.zeros((), dt)).astype(dt)
        init[f"t_{dt.name}"] = a.reshape(shape)
    init["w"] = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src = tmp_path / "all.onnx"
    onnx.save(model, str(src))
    back, _ = read_tensors(src)
    for k, v in init.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tobytes() == v.tobytes(), k
    original = onnx.load(str(src)).SerializeToString()
    for ext in ("dnnz", "npz", "safetensors", "pt"):
        convert(src, tmp_path / f"all.{ext}")
        convert(tmp_path / f"all.{ext}", tmp_path / f"from_{ext}.onnx", template=src)
        assert (tmp_path / f"from_{ext}.onnx").read_bytes() == original, ext
    changed = dict(back)
    changed["t_float16"] = (back["t_float16"].astype(np.float32) + 1).astype(np.float16)
    changed["t_bfloat16"] = np.zeros_like(back["t_bfloat16"])
    pydnnz.convert.write_tensors(changed, tmp_path / "changed.onnx", template=src)
    again, _ = read_tensors(tmp_path / "changed.onnx")
    for k, v in changed.items():
        assert again[k].dtype == v.dtype and again[k].shape == v.shape and again[k].tobytes() == v.tobytes(), k
