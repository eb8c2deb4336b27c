"""pydnnz: compressed neural-network layers.

Lossy, structure-preserving compression (pruning, weight sharing, quantization, low rank),
lossless compact encodings of each layer with dot products computed straight from the
compressed form (C kernels), and the .dnnz container that stores them.
"""
from . import huffman
from ._version import __version__
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

__all__ = [
    "__version__",
    "huffman",
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
]
