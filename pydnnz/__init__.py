"""pydnnz: compressed neural-network layers.

Lossy, structure-preserving compression (pruning, weight sharing, quantization, low rank),
lossless compact encodings of each layer with dot products computed straight from the
compressed form (C kernels), and the .dnnz container that stores them.

    >>> import numpy as np, pydnnz
    >>> w = np.repeat(np.array([[0.5, -0.25, 0.0, 0.5]], dtype=np.float32), 3, axis=0)
    >>> em = pydnnz.encode(w)                      # the smallest lossless encoding
    >>> bool((em.decode() == w).all())
    True
    >>> em.matmul(np.ones((1, 4), np.float32)).tolist()
    [[0.75, 0.75, 0.75]]
"""
from ._version import __version__
from . import compress
from .errors import (
    ChecksumError,
    CodeLengthError,
    CorruptDataError,
    CorruptFileError,
    DnnzError,
    DnnzMemoryError,
    InvalidArgumentError,
    KNotSmallerWarning,
    ShapeError,
    TruncatedError,
    UnsupportedError,
    UnsupportedVersionError,
)
from . import huffman
from .runtime import (DEFAULT_MAX_DECODED_BYTES, cpu_path, get_max_decoded_bytes, get_num_threads,
                      set_max_decoded_bytes, set_num_threads)
from .encodings import EncodedMatrix, encode
from .container import load_file, safe_open, save_file

__all__ = [
    "__version__",
    "huffman",
    "compress",
    "encode",
    "EncodedMatrix",
    "save_file",
    "load_file",
    "safe_open",
    "cpu_path",
    "get_num_threads",
    "set_num_threads",
    "get_max_decoded_bytes",
    "set_max_decoded_bytes",
    "DEFAULT_MAX_DECODED_BYTES",
    "DnnzError",
    "InvalidArgumentError",
    "ShapeError",
    "CorruptDataError",
    "CorruptFileError",
    "TruncatedError",
    "CodeLengthError",
    "ChecksumError",
    "UnsupportedError",
    "UnsupportedVersionError",
    "DnnzMemoryError",
    "KNotSmallerWarning",
]
