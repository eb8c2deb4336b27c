"""Atomic writes under a killed writer and a hostile environment (issue 17 findings 3 and 4).

A child process is killed (SIGKILL, SIGTERM) in the middle of `save_file`; afterwards the old
file must be intact and, on Linux with O_TMPFILE, no temporary may be left. Without O_TMPFILE a
named temporary may stay, and the next write to the same target removes it. Errors of the
environment (disk full, file too large, permission, read-only folder) make the CLI print one line
naming the file and exit 1."""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz import _atomic, cli, container

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
linux_tmpfile = pytest.mark.skipif(not _atomic.UNNAMED_TEMPORARIES, reason="needs Linux O_TMPFILE and /proc")

CHILD = """
import os, sys, time
import numpy as np
import pydnnz
from pydnnz import _atomic, container
target, marker, unnamed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
_atomic.UNNAMED_TEMPORARIES = unnamed
real, calls = container._write_section, []
def slow(f, arr):  # write part of the file, then wait to be killed
    calls.append(1)
    real(f, arr)
    if len(calls) == 2:
        f.flush()
        open(marker, "w").close()
        time.sleep(120)
container._write_section = slow
pydnnz.save_file({"a": np.ones(1 << 18, np.float32), "b": np.ones(1 << 18, np.float32),
                  "c": np.ones(3, np.float32)}, target)
"""


def kill_mid_write(tmp_path, sig, unnamed):
    target, marker = tmp_path / "model.dnnz", tmp_path / "writing"
    pydnnz.save_file({"old": np.arange(10, dtype=np.float32)}, target)
    before = target.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(marker), "1" if unnamed else "0"],
                             env=ENV, cwd=ROOT)
    try:
        for _ in range(1200):  # up to 60 s for the child to start and reach the second section
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), "the writer never reached the middle of the file"
        child.send_signal(sig)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    marker.unlink()
    assert target.read_bytes() == before
    return sorted(p.name for p in tmp_path.iterdir())


@linux_tmpfile
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_writer_leaves_no_temporary(tmp_path, sig):
    assert kill_mid_write(tmp_path, sig, unnamed=True) == ["model.dnnz"]


def test_named_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    left = kill_mid_write(tmp_path, signal.SIGKILL, unnamed=False)
    stale = [n for n in left if n != "model.dnnz"]
    assert len(stale) == 1 and stale[0].startswith(".model.dnnz.") and stale[0].endswith(".tmp")
    pydnnz.save_file({"new": np.ones(2, np.float32)}, tmp_path / "model.dnnz")
    assert sorted(os.listdir(tmp_path)) == ["model.dnnz"]


def test_stale_cleanup_spares_live_writers_and_other_files(tmp_path):
    target = tmp_path / "m.dnnz"
    live = tmp_path / f".m.dnnz.{_atomic._host()}-{os.getppid()}.0123abcd.tmp"  # our parent: alive
    other_host = tmp_path / ".m.dnnz.elsewhere-999999.0123abcd.tmp"
    other_target = tmp_path / f".n.dnnz.{_atomic._host()}-999999.0123abcd.tmp"
    legacy_new, legacy_old = tmp_path / ".m.dnnz.abcd1234.tmp", tmp_path / ".m.dnnz.wxyz5678.tmp"
    for p in (live, other_host, other_target, legacy_new, legacy_old):
        p.write_bytes(b"x")
    day = 25 * 3600
    os.utime(legacy_old, (time.time() - day, time.time() - day))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = tmp_path / f".m.dnnz.{_atomic._host()}-{int(dead.stdout)}.0123abcd.tmp"
    dead_tmp.write_bytes(b"x")
    removed = _atomic.remove_stale_temporaries(target)
    assert sorted(removed) == sorted([dead_tmp, legacy_old])
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (live, other_host, other_target, legacy_new))


@linux_tmpfile
def test_unnamed_temporary_keeps_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        pydnnz.save_file({"a": np.ones(2)}, tmp_path / "p.dnnz")
    finally:
        os.umask(old)
    assert (tmp_path / "p.dnnz").stat().st_mode & 0o777 == 0o640


# --- environment errors in the CLI -----------------------------------------------------------------

@pytest.fixture
def npz(tmp_path):
    src = tmp_path / "model.npz"
    np.savez(src, w=np.ones((4, 4), np.float32))
    return src


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EFBIG, "file too large"),
                                         (errno.EDQUOT, "disk quota exceeded")])
def test_disk_full_is_one_line_exit_1(tmp_path, npz, monkeypatch, capsys, code, words):
    dst = tmp_path / "out.dnnz"

    def full(f, arr):  # what a write() on a full disk raises: no file name
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(container, "_write_section", full)
    assert cli.main(["convert", str(npz), str(dst)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err and "report" not in err
    assert err.startswith(f"dnnz convert: {dst}: {words}") and f"({errno.errorcode[code]})" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_unwritable_folder_is_one_line_exit_1(tmp_path, npz, monkeypatch, capsys, code, words):
    dst = tmp_path / "out" / "out.dnnz"
    dst.parent.mkdir()
    real_open = os.open

    def refuse(path, flags, *a, **k):  # creating anything in the folder fails
        if flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(_atomic.os, "open", refuse)
    assert cli.main(["convert", str(npz), str(dst)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dnnz convert: {dst}: {words}") and err.count("\n") == 1
    assert err.endswith(f"({errno.errorcode[code]})\n")
    assert os.listdir(dst.parent) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_real_read_only_folder(tmp_path, npz):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        out = subprocess.run([sys.executable, "-m", "pydnnz", "convert", str(npz), str(ro / "o.dnnz")],
                             env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        ro.chmod(0o700)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert str(ro / "o.dnnz") in out.stderr and "permission denied" in out.stderr
