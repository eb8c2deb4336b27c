"""cffi build script (out-of-line API mode) for pydnnz._dnnz.

Compiles every csrc/*.c into one extension. The cdef is collected from the
`/* cffi:begin */ ... /* cffi:end */` blocks of every csrc/*.h, so the compiler checks the
declarations Python sees against the real headers, and adding a module needs no edit here.

Run directly (`python csrc/build_ffi.py`) to build pydnnz/_dnnz*.so in place; setup.py uses
`ffibuilder` through `cffi_modules`. Switches: DNNZ_NATIVE, DNNZ_SANITIZE, DNNZ_WARNINGS_AS_ERRORS,
DNNZ_DEBUG (see setup.py).
"""
import os
import re
import sys
from glob import glob
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent
ROOT = CSRC.parent
# setuptools wants source paths relative to setup.py's folder; a direct build (below) compiles
# in a temporary folder and needs them absolute.
REL = "csrc" if __name__ != "__main__" and Path(os.getcwd()).resolve() == ROOT else str(CSRC)

VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "pydnnz" / "_version.py").read_text()).group(1)
_CDEF_BLOCK = re.compile(r"/\* cffi:begin \*/(.*?)/\* cffi:end \*/", re.S)


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def collect_cdef():
    parts = []
    headers = sorted(CSRC.glob("*.h"))
    # common.h first: every other header's declarations use its types.
    headers.sort(key=lambda p: p.name != "common.h")
    for header in headers:
        for block in _CDEF_BLOCK.findall(header.read_text()):
            parts.append(f"/* from {header.name} */\n{block}")
    return "\n".join(parts)


def build_flags():
    compile_args = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-fvisibility=hidden",
                    f'-DDNNZ_VERSION_STRING="{VERSION}"']
    link_args = []
    if _flag("DNNZ_NATIVE"):
        compile_args.append("-march=native")
    if _flag("DNNZ_WARNINGS_AS_ERRORS"):
        compile_args.append("-Werror")
    if _flag("DNNZ_DEBUG"):
        compile_args += ["-O1", "-g"]
    if _flag("DNNZ_SANITIZE"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-g"]
        compile_args += san
        link_args += ["-fsanitize=address,undefined"]
    compile_args.append("-pthread")
    link_args.append("-pthread")
    return compile_args, link_args


ffibuilder = FFI()
ffibuilder.cdef(collect_cdef())
_headers = sorted(p.name for p in CSRC.glob("*.h"))
_headers.sort(key=lambda n: n != "common.h")
_compile_args, _link_args = build_flags()
ffibuilder.set_source(
    "pydnnz._dnnz",
    "\n".join(f'#include "{h}"' for h in _headers),
    sources=sorted(os.path.join(REL, os.path.basename(p)) for p in glob(str(CSRC / "*.c"))),
    include_dirs=[REL],
    extra_compile_args=_compile_args,
    extra_link_args=_link_args,
)

if __name__ == "__main__":
    os.chdir(ROOT)
    ffibuilder.compile(tmpdir=str(ROOT / "build" / "cffi"), verbose="-v" in sys.argv)
    # ffibuilder.compile puts the module at tmpdir/pydnnz/_dnnz*.so: move it next to the sources.
    for so in glob(str(ROOT / "build" / "cffi" / "pydnnz" / "_dnnz*.so")):
        os.replace(so, ROOT / "pydnnz" / os.path.basename(so))
        print("built", ROOT / "pydnnz" / os.path.basename(so))
