"""TensorFlow Lite models (issue 16: MediaPipe's .tflite files were 'unsupported file type'): the constant
tensors of a .tflite FlatBuffer come into .dnnz with their dtype, shape and bytes; the fp16 kernels that
feed a convolution through DEQUANTIZE are the ones compressed; int8 kernels keep their scale and zero
point; garbage and crafted files give one CorruptDataError line, bounded by the file size."""
import json
import struct

import numpy as np
import pytest

import pydnnz
from pydnnz.cli import main
from pydnnz.convert import convert, read_tensors

tflite = pytest.importorskip("tflite")
flatbuffers = pytest.importorskip("flatbuffers")

CONV_2D, DEQUANTIZE, FULLY_CONNECTED = 3, 6, 9


def build_tflite(tensors, ops, codes=(CONV_2D, DEQUANTIZE, FULLY_CONNECTED)):
    """A one-subgraph model. tensors: [(name, type, shape, data bytes or None, (scale, zero) or None)];
    ops: [(code index, inputs, outputs)]."""
    m, b = tflite, flatbuffers.Builder(1024)

    def vec(start, items, kind):
        start(b, len(items))
        for x in reversed(items):
            getattr(b, "Prepend" + kind)(x)
        return b.EndVector()

    buffers = []
    for data in [b""] + [t[3] for t in tensors if t[3] is not None]:
        d = b.CreateByteVector(data) if data else None
        m.BufferStart(b)
        if d is not None:
            m.BufferAddData(b, d)
        buffers.append(m.BufferEnd(b))
    tens, next_buffer = [], 1
    for name, ttype, shape, data, quant in tensors:
        n, s = b.CreateString(name), vec(m.TensorStartShapeVector, list(shape), "Int32")
        q = sp = None
        if isinstance(quant, dict):  # sparsity: {"order": [...], "block_map": [...], "levels": [...]}
            sp = _sparsity(b, quant, vec)
        elif quant is not None:
            sc = vec(m.QuantizationParametersStartScaleVector, [quant[0]], "Float32")
            zp = vec(m.QuantizationParametersStartZeroPointVector, [quant[1]], "Int64")
            m.QuantizationParametersStart(b)
            m.QuantizationParametersAddScale(b, sc)
            m.QuantizationParametersAddZeroPoint(b, zp)
            q = m.QuantizationParametersEnd(b)
        m.TensorStart(b)
        m.TensorAddShape(b, s)
        m.TensorAddType(b, ttype)
        m.TensorAddName(b, n)
        if data is not None:
            m.TensorAddBuffer(b, next_buffer)
            next_buffer += 1
        if q is not None:
            m.TensorAddQuantization(b, q)
        if sp is not None:
            m.TensorAddSparsity(b, sp)
        tens.append(m.TensorEnd(b))
    operators = []
    for code, ins, outs in ops:
        iv, ov = vec(m.OperatorStartInputsVector, ins, "Int32"), vec(m.OperatorStartOutputsVector, outs, "Int32")
        m.OperatorStart(b)
        m.OperatorAddOpcodeIndex(b, code)
        m.OperatorAddInputs(b, iv)
        m.OperatorAddOutputs(b, ov)
        operators.append(m.OperatorEnd(b))
    tv = vec(m.SubGraphStartTensorsVector, tens, "UOffsetTRelative")
    ov = vec(m.SubGraphStartOperatorsVector, operators, "UOffsetTRelative")
    m.SubGraphStart(b)
    m.SubGraphAddTensors(b, tv)
    m.SubGraphAddOperators(b, ov)
    sg = m.SubGraphEnd(b)
    oc = []
    for c in codes:
        m.OperatorCodeStart(b)
        m.OperatorCodeAddDeprecatedBuiltinCode(b, c)
        m.OperatorCodeAddBuiltinCode(b, c)
        oc.append(m.OperatorCodeEnd(b))
    ocv = vec(m.ModelStartOperatorCodesVector, oc, "UOffsetTRelative")
    sgv = vec(m.ModelStartSubgraphsVector, [sg], "UOffsetTRelative")
    bv = vec(m.ModelStartBuffersVector, buffers, "UOffsetTRelative")
    m.ModelStart(b)
    m.ModelAddVersion(b, 3)
    m.ModelAddOperatorCodes(b, ocv)
    m.ModelAddSubgraphs(b, sgv)
    m.ModelAddBuffers(b, bv)
    b.Finish(m.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _sparsity(b, sp, vec):
    """levels: ("dense", size) or ("csr", segments, indices) (int32 vectors)."""
    m = tflite
    dims = []
    for level in sp["levels"]:
        if level[0] == "csr":
            vs = []
            for values in level[1:]:
                v = vec(m.Int32VectorStartValuesVector, list(values), "Int32")
                m.Int32VectorStart(b)
                m.Int32VectorAddValues(b, v)
                vs.append(m.Int32VectorEnd(b))
        m.DimensionMetadataStart(b)
        if level[0] == "dense":
            m.DimensionMetadataAddFormat(b, 0)
            m.DimensionMetadataAddDenseSize(b, level[1])
        else:
            m.DimensionMetadataAddFormat(b, 1)
            m.DimensionMetadataAddArraySegmentsType(b, 1)
            m.DimensionMetadataAddArraySegments(b, vs[0])
            m.DimensionMetadataAddArrayIndicesType(b, 1)
            m.DimensionMetadataAddArrayIndices(b, vs[1])
        dims.append(m.DimensionMetadataEnd(b))
    order = vec(m.SparsityParametersStartTraversalOrderVector, sp["order"], "Int32")
    bmap = vec(m.SparsityParametersStartBlockMapVector, sp["block_map"], "Int32") if sp["block_map"] else None
    dv = vec(m.SparsityParametersStartDimMetadataVector, dims, "UOffsetTRelative")
    m.SparsityParametersStart(b)
    m.SparsityParametersAddTraversalOrder(b, order)
    if bmap is not None:
        m.SparsityParametersAddBlockMap(b, bmap)
    m.SparsityParametersAddDimMetadata(b, dv)
    return m.SparsityParametersEnd(b)


#: The schema's block-sparse example: a 4x4 matrix in 2x2 blocks, block (1, 0) all zero.
SPARSE_DENSE = np.array([[1, 0, 2, 3], [0, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 6]], np.float32)
SPARSE_BLOCKS = {"order": [0, 1, 2, 3], "block_map": [0, 1],
                 "levels": [("dense", 2), ("csr", [0, 2, 3], [0, 1, 1]), ("dense", 2), ("dense", 2)]}
SPARSE_VALUES = np.array([1, 0, 0, 4, 2, 3, 0, 0, 5, 0, 0, 6], np.float32)
#: The same matrix in plain CSR (rows dense, columns compressed): values in row order.
SPARSE_CSR = {"order": [0, 1], "block_map": [],
              "levels": [("dense", 4), ("csr", [0, 3, 4, 5, 6], [0, 2, 3, 1, 2, 3])]}
SPARSE_CSR_VALUES = np.array([1, 2, 3, 4, 5, 6], np.float32)


@pytest.fixture
def small_model(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((16, 3, 3, 8)).astype(np.float16)  # OHWI, as TFLite stores conv kernels
    bias = rng.standard_normal(16).astype(np.float32)
    fc = rng.integers(-128, 128, (4, 16), dtype=np.int8)
    tensors = [("input", 0, (1, 8, 8, 8), None, None),
               ("conv/kernel_fp16", 1, kernel.shape, kernel.tobytes(), None),
               ("conv/kernel", 0, kernel.shape, None, None),  # DEQUANTIZE's output: an activation
               ("conv/bias", 0, bias.shape, bias.tobytes(), None),
               ("conv/out", 0, (1, 6, 6, 16), None, None),
               ("fc/weights", 9, fc.shape, fc.tobytes(), (0.02, 0)),
               ("out", 0, (1, 4), None, None)]
    ops = [(1, [1], [2]), (0, [0, 2, 3], [4]), (2, [4, 5], [6])]
    path = tmp_path / "m.tflite"
    path.write_bytes(build_tflite(tensors, ops))
    return path, {"conv/kernel_fp16": kernel, "conv/bias": bias, "fc/weights": fc}


def test_tflite_constants_read_with_dtype_shape_and_bytes(small_model, tmp_path):
    path, want = small_model
    got, meta = read_tensors(path)
    assert set(got) == set(want) | {"fc/weights::scale", "fc/weights::zero_point"}
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].tobytes() == v.tobytes()
    assert got["fc/weights::scale"].tolist() == [np.float32(0.02)] and got["fc/weights::zero_point"].tolist() == [0]
    # the fp16 kernel reaches CONV_2D through DEQUANTIZE; the int8 FC kernel is already quantized
    assert json.loads(meta["pydnnz.tflite_weights"]) == ["conv/kernel_fp16"]
    convert(path, tmp_path / "m.safetensors")
    back, _ = read_tensors(tmp_path / "m.safetensors")
    assert all(back[k].tobytes() == v.tobytes() and back[k].dtype == v.dtype for k, v in want.items())


def test_dnnz_compress_tflite_defaults_and_lossy(small_model, tmp_path):
    path, want = small_model
    assert main(["compress", str(path), "-o", str(tmp_path / "l.dnnz")]) == 0  # defaults: lossless
    back, _ = read_tensors(tmp_path / "l.dnnz")
    assert all(back[k].tobytes() == v.tobytes() and back[k].dtype == v.dtype for k, v in want.items())
    assert main(["compress", str(path), "-o", str(tmp_path / "q.dnnz"), "--quantize", "cws", "--k", "8"]) == 0
    f = pydnnz.load_file(tmp_path / "q.dnnz")
    q = f["conv/kernel_fp16"]
    assert not isinstance(q, np.ndarray) and q.source_dtype == "float16"
    assert np.unique(q.decode()).size <= 8 and q.decode().dtype == np.float16
    assert np.array_equal(f["fc/weights"], want["fc/weights"])  # int8: not a float weight, kept
    assert main(["convert", str(tmp_path / "q.dnnz"), str(tmp_path / "back.tflite")]) == 1  # read only


@pytest.mark.parametrize("sparsity, values", [(SPARSE_BLOCKS, SPARSE_VALUES), (SPARSE_CSR, SPARSE_CSR_VALUES)])
def test_tflite_sparse_tensors_are_densified(tmp_path, sparsity, values):
    """MediaPipe's *_sparse models store kernels in TFLite's sparse format (traversal order, block
    map, DENSE/CSR levels): they come back dense, bit for bit, and are compressed like the rest."""
    path = tmp_path / "s.tflite"
    DENSIFY = 124  # the kernel reaches FULLY_CONNECTED through DENSIFY, as in MediaPipe's sparse models
    path.write_bytes(build_tflite([("w", 0, (4, 4), values.tobytes(), sparsity), ("x", 0, (1, 4), None, None),
                                   ("y", 0, (1, 4), None, None), ("w_dense", 0, (4, 4), None, None)],
                                  [(1, [0], [3]), (2, [1, 3], [2])], codes=(CONV_2D, DENSIFY, FULLY_CONNECTED)))
    got, meta = read_tensors(path)
    assert np.array_equal(got["w"], SPARSE_DENSE) and got["w"].dtype == np.float32
    assert json.loads(meta["pydnnz.tflite_weights"]) == ["w"]
    bad = dict(sparsity, levels=[sparsity["levels"][0], ("csr", [0, 2, 9], [0, 1, 1])] + sparsity["levels"][2:]) \
        if sparsity is SPARSE_BLOCKS else dict(sparsity, levels=[("dense", 4), ("csr", [0, 3, 4, 5, 6], [0, 2, 7, 1, 2, 3])])
    path.write_bytes(build_tflite([("w", 0, (4, 4), values.tobytes(), bad)], []))
    with pytest.raises(pydnnz.errors.CorruptDataError, match="sparse tensor 'w'"):
        read_tensors(path)


def _garbage_cases(good):
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    yield "random bytes", noise
    yield "random bytes with the identifier", noise[:4] + b"TFL3" + noise[8:]
    for cut in (12, len(good) // 3, len(good) // 2, len(good) - 5):
        yield f"cut at {cut}", good[:cut]
    for pos in range(8, len(good) - 4, max(1, len(good) // 60)):  # one 32-bit field set to a huge value
        yield f"0xffffff7f at {pos}", good[:pos] + struct.pack("<I", 0x7FFFFFFF) + good[pos + 4:]


def test_garbage_and_crafted_tflite_files_are_one_clear_error(small_model, tmp_path, capsys):
    path, _ = small_model
    good = path.read_bytes()
    bad = tmp_path / "bad.tflite"
    for what, data in _garbage_cases(good):
        bad.write_bytes(data)
        try:
            tensors, _ = read_tensors(bad)
        except pydnnz.errors.CorruptDataError as exc:
            assert "bad.tflite" in str(exc), what
            continue
        # a flipped field may still leave a readable model: then it is bounded by the file
        assert sum(a.nbytes for a in tensors.values()) <= 2 * len(data), what
    bad.write_bytes(b"\x00" * 4 + b"TFL3" + b"\xff" * 64)
    assert main(["compress", str(bad), "-o", str(tmp_path / "o.dnnz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.tflite" in err[-1] and not (tmp_path / "o.dnnz").exists()
