"""Atomic file output: the new contents replace `path` in one rename, or not at all.

What is promised (spec/dnnz-format.md, "Writing a file"):

- Readers of `path` see either the old file or the complete new one, never a partial file, even
  when the writer is killed (SIGKILL, SIGTERM, power loss): the data is fsynced before the
  rename and the folder after it.
- No temporary file survives on Linux on a file system with ``O_TMPFILE`` (ext4, xfs, btrfs,
  tmpfs, ...): the data goes to an unnamed file that the kernel frees when its process dies; it
  gets a name (``.NAME.HOST-PID.RANDOM.tmp``) only for the instant between ``linkat`` and the
  rename over `path`.
- Elsewhere (another OS, or a file system without ``O_TMPFILE``) the data goes to a named
  ``.NAME.HOST-PID.RANDOM.tmp`` beside `path`, removed on any exception. A process killed
  before it can clean up leaves it behind; the next write to the same `path` removes every such
  temporary whose writer (same host, that PID) is no longer running, and temporaries of the
  pre-0.x naming (``.NAME.RANDOM.tmp``) older than a day.
- Errors of the environment (no space, permission, read-only folder) raise OSError naming
  `path` (not the temporary).
"""
import contextlib
import errno
import os
import re
import secrets
import socket
import time
from pathlib import Path

# Set to False to force the named-temporary path (tests; platforms without /proc).
UNNAMED_TEMPORARIES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
_LEGACY_MAX_AGE_S = 24 * 3600


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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"


def _temp_name(target: str) -> str:
    return f".{target}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_temporaries(path) -> list:
    """Remove the temporaries that killed writers of `path` left beside it; returns their paths.

    Only ``.NAME.HOST-PID.RANDOM.tmp`` files of this host whose PID is not running, and legacy
    ``.NAME.RANDOM.tmp`` files older than a day, are touched: a live writer's file never is.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    ours = re.compile(re.escape(prefix) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp\Z")
    legacy = re.compile(re.escape(prefix) + r"[A-Za-z0-9_]{8}\.tmp\Z")  # tempfile.mkstemp's names
    removed = []
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    host, now = _host(), time.time()
    for name in names:
        full = directory / name
        m = ours.match(name)
        try:
            if m:
                pid = int(m["pid"])
                stale = m["host"] == host and pid != os.getpid() and not _alive(pid)
            else:
                stale = bool(legacy.match(name)) and now - full.lstat().st_mtime > _LEGACY_MAX_AGE_S
            if stale:
                full.unlink()
                removed.append(full)
        except OSError:
            continue
    return removed


def _renamed(exc: OSError, path: Path, tmp=()) -> OSError:
    """The same error naming the target `path` when it named nothing or a temporary (in `tmp`)."""
    fn = exc.filename
    if isinstance(fn, os.PathLike):
        fn = os.fspath(fn)
    if exc.errno is None or (fn is not None and fn not in {os.fspath(t) for t in tmp if t is not None}):
        return exc
    out = OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    out.__cause__ = exc
    return out


def _reraise(exc, path, tmp=()):
    new = _renamed(exc, path, tmp)
    if new is exc:
        raise exc
    raise new from exc


@contextlib.contextmanager
def atomic_path(path):
    """Yield a path to write the new contents to; on success they replace `path` atomically.

    The yielded path may be ``/proc/self/fd/N`` (an unnamed file): open it, write, close; do not
    rename or delete it. See the module docstring for exactly what survives a crash.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); target = os.path.join(d, "out.bin")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "wb").write(b"done")
    >>> open(target, "rb").read(), os.listdir(d)
    (b'done', ['out.bin'])
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    remove_stale_temporaries(path)
    if UNNAMED_TEMPORARIES:
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666)  # umask applies
        except IsADirectoryError:  # EISDIR: a kernel or file system without O_TMPFILE
            fd = None
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                _reraise(exc, path, (directory,))
            fd = None
        if fd is not None:
            with _unnamed(fd, path, directory) as tmp:
                yield tmp
            return
    with _named_temporary(path, directory) as tmp:
        yield tmp


@contextlib.contextmanager
def _unnamed(fd, path, directory):
    dir_fd = None
    name = None
    try:
        try:
            yield Path(f"/proc/self/fd/{fd}")
            os.fsync(fd)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            for _ in range(8):
                name = _temp_name(path.name)
                try:
                    # linkat(AT_SYMLINK_FOLLOW) through /proc names the unnamed file; the dir fd makes
                    # os.link use linkat rather than link(), which would not follow the /proc link.
                    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - 8 random collisions
                raise FileExistsError(errno.EEXIST, "could not name the temporary file", str(path))
            try:
                os.replace(name, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=dir_fd)
                raise
            os.fsync(dir_fd)
        except OSError as exc:
            _reraise(exc, path, (f"/proc/self/fd/{fd}", name))
    finally:
        os.close(fd)  # an unnamed file that was never linked is freed here
        if dir_fd is not None:
            os.close(dir_fd)


@contextlib.contextmanager
def _named_temporary(path, directory):
    tmp = directory / _temp_name(path.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        _reraise(exc, path, (tmp,))
    os.close(fd)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(directory)
        except OSError as exc:
            _reraise(exc, path, (tmp,))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

