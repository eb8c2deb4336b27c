"""Resource bounds (issue 17, spec/dnnz-format.md "Resource bounds"): work and memory stay bounded
by the input. Timing-free: a reproducer that used to cost minutes or hours runs in a subprocess
(or under the tests' watchdog) with a limit hundreds of times above what the fixed reader needs,
so a regression shows as a failure, never as a slow pass."""
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
