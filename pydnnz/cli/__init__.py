"""The `dnnz` command line: compress, info, verify, convert, bench, demo.

Exit codes: 0 success, 1 bad data (a corrupt, inconsistent or uncompressible file, a failed
verification), 2 a usage error (bad option or recipe, missing or unsupported file, refusing to
overwrite). Errors are one line on stderr that names the file and what is wrong. Outputs are written atomically: a failed
run leaves no partial output file, and nothing is overwritten without --force.

Here: `main` and the mapping of errors to exit codes. The parser is in _parser.py, each command in
its own module (_compress, _inspect for info and verify, _convert, _bench for bench and demo), what
they share in _common.py. The names below stay importable from `pydnnz.cli` as before the split.
"""
from __future__ import annotations

import errno
import os
import sys

from .._format import human_size as _human, table as _table, value_entropy_bits as _entropy_bits
from ..errors import CorruptDataError, DnnzError, InvalidArgumentError, UnsupportedError
from ._bench import _quick_matrices, cmd_bench, cmd_demo
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, _check_input, _check_output, _note_skipped
from ._compress import (EMBEDDING_OR_NORM, _is_float, _layer_name, _layer_type, _lossy_by_rule, _recipe_rules,
                        _rule_option, _source_dtype, cmd_compress, default_layer_selection, load_recipe_file)
from ._convert import cmd_convert
from ._inspect import _ITEMSIZE, _file_reports, _speed_class, cmd_info, cmd_verify, tensor_report
from ._parser import _limit_option, _Parser, build_parser

_ENV_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EFBIG: "file too large for this file system; write to another file system",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system; write elsewhere",
}


def environment_error(exc: OSError) -> str:
    """One line for an error of the environment, naming the file (outputs are atomic: nothing
    was changed at the destination)."""
    what = _ENV_HINTS.get(exc.errno) or (exc.strerror or str(exc))
    code = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{what}{f' ({code})' if code else ''}"


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    prefix = f"dnnz {args.command}"
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, FileExistsError) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the environment: disk full, file too large, permission, read-only folder
        print(f"{prefix}: {environment_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except InvalidArgumentError as exc:  # unsupported file types are usage errors; the rest is data
        print(f"{prefix}: {exc}", file=sys.stderr)
        from ..convert import FileFormatError

        return EXIT_USAGE if isinstance(exc, FileFormatError) else EXIT_FAILED
    except DnnzError as exc:  # corrupt files, unsupported versions or contents, failed checks
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in pydnnz: still one line, the traceback on request
        if os.environ.get("DNNZ_DEBUG"):
            raise
        print(f"{prefix}: internal error ({type(exc).__name__}: {exc}); "
              "rerun with DNNZ_DEBUG=1 for the traceback and please report it", file=sys.stderr)
        return EXIT_FAILED

