"""ONNX models and Keras .h5 weights: compress the weights that feed Conv/Gemm/MatMul, convert back
to ONNX through the original model as a template (untouched initializers bit-exact, the model runs in
onnxruntime), and Keras HDF5 weights into .dnnz and back to .npz/.safetensors bit-exact."""
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


def test_onnx_weights_inside_subgraphs_are_refused_clearly(tmp_path):
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    branch = helper.make_graph([helper.make_node("Identity", ["w"], ["o"])], "b", [],
                               [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 2])], [w])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    path = tmp_path / "sub.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert main(["compress", str(path), "-o", str(tmp_path / "s.dnnz")]) == 1
    assert not (tmp_path / "s.dnnz").exists()


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
