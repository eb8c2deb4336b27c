"""The `dnnz` command line, through its real entry point (a subprocess)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def dnnz_command():
    exe = shutil.which("dnnz")
    # Use the installed script only when it runs this checkout's package.
    if exe and os.environ.get("DNNZ_TEST_INSTALLED_CLI"):
        return [exe]
    return [sys.executable, "-m", "pydnnz"]


def run(*args, cwd=None, check_rc=None):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(dnnz_command() + [str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def one_line_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def weights(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "fc1.weight": rng.standard_normal((64, 48)).astype(np.float32) * 0.1,
        "fc1.bias": rng.standard_normal(64).astype(np.float32),
        "conv.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.1,
        "steps": np.arange(5, dtype=np.int64),
    }
    path = tmp_path / "model.npz"
    np.savez(path, **tensors)
    return path, tensors


def test_version_and_help():
    proc = run("--version", check_rc=0)
    assert proc.stdout.startswith("pydnnz ")
    assert "compress" in run("--help", check_rc=0).stdout


def test_usage_errors_exit_2_with_one_line(tmp_path):
    one_line_error(run("info", tmp_path / "missing.dnnz", check_rc=2), "missing.dnnz", "no such file")
    one_line_error(run("convert", tmp_path / "a.npz", tmp_path / "b.npz", check_rc=2), "a.npz")
    proc = run("frobnicate", check_rc=2)
    assert "invalid choice" in proc.stderr
    run(check_rc=2)


def test_convert_between_plain_formats_is_bit_exact(tmp_path, weights):
    src, tensors = weights
    chain = [src, tmp_path / "a.safetensors", tmp_path / "b.pt", tmp_path / "c.npz"]
    for a, b in zip(chain, chain[1:]):
        run("convert", a, b, check_rc=0)
    with np.load(chain[-1], allow_pickle=False) as z:
        assert sorted(z.files) == sorted(tensors)
        for k, v in tensors.items():
            assert z[k].dtype == v.dtype and z[k].tobytes() == v.tobytes()


def test_convert_refuses_to_overwrite_and_unknown_types(tmp_path, weights):
    src, _ = weights
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"precious")
    one_line_error(run("convert", src, dst, check_rc=2), "out.safetensors", "--force")
    assert dst.read_bytes() == b"precious"
    run("convert", src, dst, "--force", check_rc=0)
    one_line_error(run("convert", src, tmp_path / "out.caffemodel", check_rc=2), "out.caffemodel",
                   "unsupported file type")
    one_line_error(run("convert", src, tmp_path / "out.tflite", check_rc=1), "out.tflite", "does not write them")
    one_line_error(run("convert", src, tmp_path / "out.onnx", check_rc=2), "out.onnx", "--template")


def test_convert_rejects_corrupt_inputs_without_partial_output(tmp_path):
    for name, payload in (("bad.npz", b"PK\x03\x04garbage"), ("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}     "),
                          ("bad.pt", b"\x80\x02not a torch file")):
        src = tmp_path / name
        src.write_bytes(payload)
        dst = tmp_path / (name + ".out.npz")
        proc = run("convert", src, dst, check_rc=1)
        one_line_error(proc, name)
        assert not dst.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pickle_payload_is_never_executed(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle
    src = tmp_path / "evil.pt"
    src.write_bytes(pickle.dumps({"w": Evil()}))
    run("convert", src, tmp_path / "out.npz", check_rc=1)
    assert not marker.exists()
    del torch


def test_dnnz_round_trip_info_and_verify(tmp_path, weights):
    src, tensors = weights
    packed = tmp_path / "m.dnnz"
    run("convert", src, packed, check_rc=0)
    assert "OK" in run("verify", packed, check_rc=0).stdout
    info = json.loads(run("info", packed, "--json", check_rc=0).stdout)
    assert {t["name"] for t in info["tensors"]} == set(tensors)
    assert all(t["encoding"] == "raw" for t in info["tensors"])
    table = run("info", packed, check_rc=0).stdout
    assert "fc1.weight" in table and "psi" in table
    back = tmp_path / "back.npz"
    run("convert", packed, back, check_rc=0)
    with np.load(back, allow_pickle=False) as z:
        for k, v in tensors.items():
            assert z[k].tobytes() == v.tobytes()


def test_verify_fails_with_exit_1_on_a_corrupt_file(tmp_path, weights):
    src, _ = weights
    packed = tmp_path / "m.dnnz"
    run("convert", src, packed, check_rc=0)
    data = bytearray(packed.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's payload: its CRC no longer matches
    bad = tmp_path / "bad.dnnz"
    bad.write_bytes(bytes(data))
    one_line_error(run("verify", bad, check_rc=1), "bad.dnnz")
    (tmp_path / "trunc.dnnz").write_bytes(bytes(data[:40]))
    one_line_error(run("verify", tmp_path / "trunc.dnnz", check_rc=1), "trunc.dnnz")
    one_line_error(run("info", tmp_path / "trunc.dnnz", check_rc=1), "trunc.dnnz")


FORMATS = [".npz", ".safetensors", ".pt", ".dnnz"]


@pytest.mark.parametrize("src_ext", FORMATS)
@pytest.mark.parametrize("dst_ext", FORMATS)
def test_conversion_matrix_round_trips(tmp_path, src_ext, dst_ext):
    """Every source format to every target and back, in-process (the subprocess path is tested above)."""
    from pydnnz.convert import convert, read_tensors, write_tensors

    rng = np.random.default_rng(3)
    tensors = {"a.weight": rng.standard_normal((5, 7)).astype(np.float32),
               "a.bias": rng.standard_normal(5).astype(np.float64),
               "count": np.array([3], dtype=np.int32), "flags": np.array([True, False])}
    src = tmp_path / f"src{src_ext}"
    write_tensors(tensors, src, {"origin": "test"})
    mid = tmp_path / f"mid{dst_ext}"
    convert(src, mid)
    back = tmp_path / f"back{src_ext}"
    convert(mid, back)
    got, meta = read_tensors(back)
    assert sorted(got) == sorted(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].tobytes() == v.tobytes(), k
    if {src_ext, dst_ext} <= {".safetensors", ".dnnz"}:
        assert meta.get("origin") == "test"


def test_compress_command_end_to_end(tmp_path, weights):
    src, tensors = weights
    out = tmp_path / "small.dnnz"
    proc = run("compress", src, "-o", out, "--prune", 50, "--quantize", "cws", "--k", 8, check_rc=0)
    assert "fc1.weight" in proc.stdout and "conv.weight" in proc.stdout
    run("verify", out, check_rc=0)
    info = {t["name"]: t for t in json.loads(run("info", out, "--json", check_rc=0).stdout)["tensors"]}
    assert info["fc1.bias"]["encoding"] == "raw" and info["steps"]["encoding"] == "raw"
    assert info["fc1.weight"]["encoding"] != "raw" and info["fc1.weight"]["psi"] < 0.5
    back = tmp_path / "back.npz"
    run("convert", out, back, check_rc=0)
    with np.load(back, allow_pickle=False) as z:
        w = z["fc1.weight"]
        assert (w == 0).mean() >= 0.49 and len(np.unique(w[w != 0])) <= 8
        assert z["fc1.bias"].tobytes() == tensors["fc1.bias"].tobytes()
    # refusing to overwrite, bad options, layers that match nothing
    one_line_error(run("compress", src, "-o", out, check_rc=2), "small.dnnz", "--force")
    one_line_error(run("compress", src, "-o", tmp_path / "x.dnnz", "--prune", 150, check_rc=2), "--prune")
    one_line_error(run("compress", src, "-o", tmp_path / "x.dnnz", "--layers", "nope*", check_rc=2), "nope*")
    one_line_error(run("compress", src, "-o", tmp_path / "x.dnnz", "--encoding", "zip", check_rc=2), "zip")
    one_line_error(run("compress", src, "-o", tmp_path / "x.npz", check_rc=2), "x.npz")
    assert not (tmp_path / "x.dnnz").exists()


def test_bench_command(tmp_path, weights):
    src, _ = weights
    out = tmp_path / "small.dnnz"
    run("compress", src, "-o", out, "--quantize", "uq", "--k", 16, check_rc=0)
    records = json.loads(run("bench", out, "--json", "--batch", 1, "--batch", 4, check_rc=0).stdout)
    assert {r["batch"] for r in records} == {1, 4}
    assert all(r["pydnnz_s"] > 0 and r["numpy_s"] > 0 and r["cpu_path"] for r in records)
    one_line_error(run("bench", check_rc=2), "FILE")
    plain = tmp_path / "plain.dnnz"
    run("convert", src, plain, check_rc=0)
    one_line_error(run("bench", plain, check_rc=2), "no compressed tensor")


def test_interrupted_write_leaves_no_partial_output(tmp_path, weights, monkeypatch):
    """A failure in the middle of writing: the old file stays byte for byte, no temp file remains."""
    import safetensors.numpy

    from pydnnz import cli

    src, _ = weights
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"old contents")

    def interrupted(arrays, metadata=None):  # while the (possibly unnamed) temporary is open
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save", interrupted)
    assert cli.main(["convert", str(src), str(dst), "--force"]) == 130
    assert dst.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "out.safetensors"]


def test_demo_runs_and_prints_the_table():
    pytest.importorskip("torch")
    proc = run("demo", "--json", check_rc=0)
    rows = json.loads(proc.stdout)
    assert rows[0]["method"].startswith("float32") and len(rows) >= 3
    base = rows[0]
    assert base["mse"] == pytest.approx(0.2327, abs=5e-4)
    for r in rows[1:]:
        assert r["ratio"] > 5 and r["ci"] > 0.85 and r["mse"] < 0.35
    auto = rows[1]  # auto_compress's recipe, replayed: the smallest row, within its budget
    assert auto["method"].startswith("auto_compress")
    assert auto["ratio"] > 12 and auto["mse"] <= base["mse"] + 0.003
    assert auto["file_bytes"] == min(r["file_bytes"] for r in rows)
