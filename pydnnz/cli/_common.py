"""What every `dnnz` command shares: the exit codes, the usage error, checks of input and output paths."""
from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command-line mistake: exit status 2."""


def _note_skipped(src, names) -> None:
    """One stderr line when a checkpoint held entries that are not tensors (not converted)."""
    if names:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        print(f"note: {src}: {len(names)} entries that are not tensors were left out ({shown})", file=sys.stderr)


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory")


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")



def check_lossy_options(args) -> None:
    """The --prune, --k and --encoding values of `dnnz compress` (single-file and streaming paths):
    the same bounds as pydnnz.compress (a percentage in [0, 100], k >= 1) and a registered encoding
    or policy name."""
    from ..encodings import encodings
    from ..encodings._speed import POLICIES

    if args.prune is not None and not 0 <= args.prune <= 100:
        raise UsageError(f"--prune {args.prune}: must be a percentage in [0, 100]")
    if args.k < 1:
        raise UsageError(f"--k {args.k}: must be at least 1")
    if args.encoding not in POLICIES and args.encoding not in encodings():
        raise UsageError(f"--encoding {args.encoding}: unknown (choose a policy: {', '.join(POLICIES)}; "
                         f"or an encoding: {', '.join(encodings())})")
