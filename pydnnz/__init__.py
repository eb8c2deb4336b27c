"""pydnnz: compressed neural-network layers.

Lossy, structure-preserving compression (pruning, weight sharing, quantization, low rank),
lossless compact encodings of each layer with dot products computed straight from the
compressed form (C kernels), and the .dnnz container that stores them.
"""
from ._version import __version__
from . import compress
from .errors import (
    ChecksumError,
    CodeLengthError,
    CorruptDataError,
    DnnzError,
    DnnzMemoryError,
    InvalidArgumentError,
    ShapeError,
    TruncatedError,
    UnsupportedError,
)
from .errors import CorruptFileError, UnsupportedVersionError
from .container import load_file, safe_open, save_file
from .encodings import EncodedMatrix, encode
from .runtime import cpu_path, get_num_threads, set_num_threads

__all__ = [
    "__version__",
    "DnnzError",
    "InvalidArgumentError",
    "ShapeError",
    "CorruptDataError",
    "TruncatedError",
    "CodeLengthError",
    "ChecksumError",
    "UnsupportedError",
    "DnnzMemoryError",
    "CorruptFileError",
    "UnsupportedVersionError",
    "save_file",
    "load_file",
    "safe_open",
    "encode",
    "EncodedMatrix",
    "cpu_path",
    "get_num_threads",
    "set_num_threads",
]
