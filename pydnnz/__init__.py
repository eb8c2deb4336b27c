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
from .encodings import EncodedMatrix, encode
from .runtime import cpu_path, get_num_threads, set_num_threads

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
    "encode",
    "EncodedMatrix",
    "cpu_path",
    "get_num_threads",
    "set_num_threads",
]
