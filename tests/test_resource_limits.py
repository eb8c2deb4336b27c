"""Resource bounds (issue 17, spec/dnnz-format.md "Resource bounds"): work and memory stay bounded
by the input. Timing-free: a reproducer that used to cost minutes or hours runs in a subprocess
(or under the tests' watchdog) with a limit hundreds of times above what the fixed reader needs,
so a regression shows as a failure, never as a slow pass."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz import container, errors
from pydnnz.encodings import from_sections, get_encoding

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GOLDEN = TESTS / "golden"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))


def run_py(code, timeout):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# --- finding 1: rlham validation walked 2**31 columns per row, whatever the payload ------------

def rlham_rows_without_end(rows, cols):
    """An rlham matrix whose rows are one zero byte each: code '0' is (run 0, value 0), so the
    zero bits a reader feeds past a row's end decode as valid pairs, and the end-of-row code
    ('1') never comes."""
    secs = {"codebook": np.array([0.5], "<f4"), "lengths": np.array([1, 1], np.uint8),
            "offsets": np.frombuffer((np.arange(rows + 1, dtype=np.uint64) * 8).astype("<u4").tobytes(), np.uint8),
            "payload": np.zeros(rows, np.uint8)}
    return secs, {"k": 1, "direct_runs": 1, "run_classes": 1, "offset_bytes": 4}


def test_rlham_validation_stops_at_each_rows_end():
    # 256 rows of one byte claiming 2**31 - 1 columns: the old walk took ~15 s per row (about an
    # hour here); stopping at the stored row end makes it a few hundred steps. The subprocess
    # limit only turns a hang into a failure.
    code = """
        import numpy as np
        from pydnnz import container, errors
        from pydnnz.encodings import from_sections
        from test_resource_limits import rlham_rows_without_end
        secs, params = rlham_rows_without_end(256, 2**31 - 1)
        try:
            from_sections("rlham", (256, 2**31 - 1), params, secs)
        except errors.CorruptDataError as exc:
            print("rejected:", exc)
    """
    out = run_py(code, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rejected: rlham: section 'payload' at element 0: input is corrupt" in out.stdout


@pytest.mark.parametrize("rows, cols", [(1, 2**31 - 1), (3, 2**20), (64, 2**31 - 1)])
def test_rlham_rows_without_end_code_are_corrupt(rows, cols):
    secs, params = rlham_rows_without_end(rows, cols)
    with pytest.raises(errors.CorruptDataError, match="payload' at element 0"):
        from_sections("rlham", (rows, cols), params, secs)


def test_rlham_past_end_golden_fails_in_every_reader_path():
    path = GOLDEN / "invalid" / "rlham_row_past_end.dnnz"
    with pytest.raises(errors.CorruptDataError, match="payload"):
        pydnnz.load_file(path)["w"]
    with pydnnz.safe_open(path) as f, pytest.raises(errors.CorruptDataError):
        f.get("w")
    with pytest.raises(errors.CorruptDataError):
        container.verify(path)


def test_deadline_watchdog_ends_a_hang_that_signals_cannot_interrupt():
    # A loop inside one C call never returns to the interpreter, so SIGALRM's Python handler
    # cannot stop it; blocking SIGALRM stands in for that here. The watchdog must end the process.
    code = """
        import signal, time
        import _container_edit as E
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        with E.deadline(0.2, hard_factor=5):
            time.sleep(60)
        print("not stopped")
    """
    out = run_py(code, timeout=50)
    assert out.returncode != 0 and "not stopped" not in out.stdout
    assert "Timeout (0:00:01)!" in out.stderr, out.stderr


# --- finding 2: decompression bombs --------------------------------------------------------------

LIMITS = json.loads((GOLDEN / "limits" / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    monkeypatch.delenv("DNNZ_MAX_DECODED_BYTES", raising=False)
    pydnnz.set_max_decoded_bytes(None)
    yield
    pydnnz.set_max_decoded_bytes(None)


def test_every_limits_file_is_listed():
    assert sorted(p.name for p in (GOLDEN / "limits").glob("*.dnnz")) == sorted(LIMITS)


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_bomb_decode_is_refused_naming_the_tensor(name):
    path, exp = GOLDEN / "limits" / name, LIMITS[name]
    em = pydnnz.load_file(path)[exp["tensor"]]  # reading (and inference from the encoded form) is fine
    assert em.decoded_nbytes == exp["decoded_bytes"] > pydnnz.DEFAULT_MAX_DECODED_BYTES
    with pytest.raises(errors.DnnzMemoryError) as info:
        em.decode()
    msg = str(info.value)
    assert msg.startswith(f"{path}: tensor {exp['tensor']!r}: decoding needs ")
    assert f"({exp['decoded_bytes']} bytes)" in msg and "DNNZ_MAX_DECODED_BYTES" in msg
    assert isinstance(info.value, MemoryError) and isinstance(info.value, errors.DnnzError)
    with pytest.raises(errors.DnnzMemoryError, match=repr(exp["tensor"])):
        container.verify(path)
    # a limit below the size is refused the same way through each knob; nothing is allocated
    with pytest.raises(errors.DnnzMemoryError):
        em.decode(max_bytes=exp["decoded_bytes"] - 1)
    pydnnz.set_max_decoded_bytes("1G")
    with pytest.raises(errors.DnnzMemoryError, match="limit of 1.0 GiB"):
        em.decode()


def test_limit_knobs_parameter_function_environment(monkeypatch):
    w = pydnnz.encode(np.eye(64, dtype=np.float32), "csc")  # decodes to 16 KiB
    assert w.decoded_nbytes == 16384
    assert (w.decode(max_bytes=16384) == np.eye(64)).all()
    with pytest.raises(errors.DnnzMemoryError, match="csc tensor of shape \\[64, 64\\]"):
        w.decode(max_bytes=16383)
    monkeypatch.setenv("DNNZ_MAX_DECODED_BYTES", "16K")
    assert pydnnz.get_max_decoded_bytes() == 16384 and w.decode().shape == (64, 64)
    monkeypatch.setenv("DNNZ_MAX_DECODED_BYTES", "15k")
    with pytest.raises(errors.DnnzMemoryError):
        w.decode()
    pydnnz.set_max_decoded_bytes(1 << 20)  # the function wins over the environment
    assert w.decode().shape == (64, 64)
    monkeypatch.setenv("DNNZ_MAX_DECODED_BYTES", "lots")
    pydnnz.set_max_decoded_bytes(None)
    with pytest.raises(errors.InvalidArgumentError, match="DNNZ_MAX_DECODED_BYTES"):
        w.decode()
    with pytest.raises(errors.InvalidArgumentError):
        pydnnz.set_max_decoded_bytes(-1)


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pydnnz", *map(str, args)], env=dict(ENV, **(env or {})),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_reports_bombs_from_the_header_and_refuses_to_decode_them(tmp_path):
    path = GOLDEN / "limits" / "im_one_value_8GiB.dnnz"
    info = cli("info", path, "--json")
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    t = {r["name"]: r for r in doc["tensors"]}
    assert t["embed.weight"]["decoded_bytes"] == 2**33 and t["embed.weight"]["bytes"] == 4
    assert doc["summary"]["largest_decoded_bytes"] == 2**33
    summary = cli("info", "--summary", *(GOLDEN / "limits").glob("*.dnnz"), GOLDEN / "valid" / "all_dtypes.dnnz")
    assert summary.returncode == 0 and len(summary.stdout.strip().splitlines()) == 2 + 3, summary.stderr
    for args in (["verify", path], ["info", "--entropy", path], ["convert", path, tmp_path / "out.npz"]):
        out = cli(*args)
        assert out.returncode == 1 and out.stdout == "", out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "tensor 'embed.weight': decoding needs 8.0 GiB" in lines[0], out.stderr
    assert not (tmp_path / "out.npz").exists() and os.listdir(tmp_path) == []
    # raising the limit lets verify through (it builds nothing of that size)
    assert cli("verify", path, "--max-decoded-bytes", "8G").returncode == 0
    assert cli("verify", path, env={"DNNZ_MAX_DECODED_BYTES": "9G"}).returncode == 0


def test_load_model_checks_shapes_before_anything_is_decoded():
    torch = pytest.importorskip("torch")
    from pydnnz.torch import load_model

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.bias = torch.nn.Parameter(torch.zeros(4))

    with pytest.raises(errors.ShapeError, match="'embed.weight' has shape \\(65536, 32768\\)"):
        load_model(GOLDEN / "limits" / "im_one_value_8GiB.dnnz", M())


# --- header nesting limit (spec §10.1) -------------------------------------------------------------

@pytest.mark.parametrize("depth, ok", [(64, True), (65, False), (900, False), (100_000, False)])
def test_header_nesting_limit_is_64_levels(depth, ok):
    import _container_edit as E
    base = container.save({"w": np.ones(2, np.float32)})
    # a newer minor version may carry unknown keys; their values count towards the depth
    inner = "[" * (depth - 1) + "]" * (depth - 1)  # the top-level object is level 1
    text = E.split(base)[1].rstrip(b" ")[:-1] + b',"future":' + inner.encode() + b"}"
    data = E.set_u(E.with_header_text(base, text), 10, "<H", 3, fix_crc=True)
    if ok:
        assert container.load(data)["w"].tolist() == [1.0, 1.0]
    else:
        with pytest.raises(errors.CorruptFileError, match="field 'Header'"):
            container.load(data)


def test_per_test_watchdog_fails_a_hanging_test(tmp_path):
    # conftest's per-test limit (DNNZ_TEST_TIMEOUT): a test stuck where signals cannot reach ends
    # the run with a traceback naming it, instead of stalling CI.
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "test_hang.py").write_text(textwrap.dedent("""
        import signal, time
        def test_hangs():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
            time.sleep(60)
    """), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         env=dict(ENV, DNNZ_TEST_TIMEOUT="1"), cwd=tmp_path, capture_output=True, text=True,
                         timeout=50)
    assert out.returncode != 0 and "passed" not in out.stdout
    assert "Timeout (0:00:01)!" in out.stderr and "test_hangs" in out.stderr, out.stderr


# --- the product's output: rows come from the file, so one output row must fit the limit ------

def im_one_value(rows, cols):
    return from_sections("im", (rows, cols), {"k": 1, "bits": 0},
                         {"codebook": np.array([0.5], "<f4"), "indices": np.zeros(0, np.uint8)})


def test_matmul_output_row_is_checked_against_the_limit():
    # A few hundred bytes describe 2**31 - 1 rows: without the check, matmul asked for 8 GiB per
    # input row before computing anything.
    em = im_one_value(2**31 - 1, 2)
    with pytest.raises(errors.DnnzMemoryError, match=r"one row of the product's output needs 8\.0 GiB"):
        em.matmul(np.ones((1, 2), np.float32))
    small = im_one_value(3, 2)
    pydnnz.set_max_decoded_bytes(8)  # 3 rows * 4 bytes = 12 bytes per output row
    try:
        with pytest.raises(errors.DnnzMemoryError, match="tensor of shape"):
            small.matmul(np.ones(2, np.float32))
        with pytest.raises(errors.DnnzMemoryError, match="decoding 3 rows"):
            small.decode_rows([0, 1, 2])
        assert small.decode_rows([1]).tolist() == [[0.5, 0.5]]  # 8 bytes: within the limit
    finally:
        pydnnz.set_max_decoded_bytes(None)
    assert small.matmul(np.ones(2, np.float32)).tolist() == [1.0, 1.0, 1.0]
