"""Atomic file output: write a sibling temporary file, fsync it, rename it over the target.

A crash or an exception mid-write never leaves a half-written or truncated file at `path`:
readers see either the old file or the complete new one.
"""
import contextlib
import os
import tempfile
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); target = os.path.join(d, "out.bin")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "wb").write(b"done")
    >>> open(target, "rb").read()
    b'done'
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        # mkstemp creates 0600; a finished file gets the permissions a plain open() would give.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
