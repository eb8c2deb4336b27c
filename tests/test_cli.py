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
    one_line_error(run("convert", src, tmp_path / "out.onnx", check_rc=2), "out.onnx", "unsupported file type")


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
