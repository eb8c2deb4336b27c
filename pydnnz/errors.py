"""The exceptions pydnnz raises. Every failure a user can cause is a DnnzError subclass.

    DnnzError
    ├── InvalidArgumentError (also a ValueError)  a bad argument: value out of range, wrong type
    │   └── ShapeError                            a shape that does not fit
    ├── CorruptDataError                          an encoded stream or file that fails a check
    │   ├── TruncatedError                        the data ends before what it announces
    │   ├── CodeLengthError                       Huffman code lengths that form no valid prefix code
    │   ├── ChecksumError                         a CRC-32 mismatch
    │   └── CorruptFileError                      a .dnnz file whose structure breaks the format
    ├── UnsupportedError                          a version, encoding or CPU path this build lacks
    │   └── UnsupportedVersionError               a .dnnz file of a format major version this reader lacks
    └── DnnzMemoryError (also a MemoryError)      an allocation failed, or a tensor to decode is over
                                                  the decoded-size limit (pydnnz.get_max_decoded_bytes)
"""


class DnnzError(Exception):
    """Base class of every error pydnnz raises on purpose."""


class InvalidArgumentError(DnnzError, ValueError):
    """An argument is out of its documented range or of the wrong type."""


class ShapeError(InvalidArgumentError):
    """An array or tensor shape does not fit the operation."""


class CorruptDataError(DnnzError):
    """Encoded data (a stream, a section, a file) is inconsistent."""


class TruncatedError(CorruptDataError):
    """Encoded data ends before the data it announces."""


class CodeLengthError(CorruptDataError):
    """A set of Huffman code lengths that no complete prefix code can have."""


class ChecksumError(CorruptDataError):
    """Stored and computed checksums differ."""


class UnsupportedError(DnnzError):
    """A format version, encoding, feature or CPU path that this build does not support."""


class DnnzMemoryError(DnnzError, MemoryError):
    """Memory refused: the C library could not allocate, or decoding a tensor would pass the
    decoded-size limit (see ``pydnnz.set_max_decoded_bytes``; the message names the tensor)."""


class CorruptFileError(CorruptDataError):
    """A .dnnz file whose structure breaks the format (bad magic, bad header, bad layout)."""


class UnsupportedVersionError(UnsupportedError):
    """A .dnnz file written in a format major version that this reader does not know."""


class KNotSmallerWarning(UserWarning):
    """A quantizer was asked for k levels for a tensor (or a unified group) of at most k weights:
    the codebook is as large as the weights, so nothing is gained (CWS, PWS and ECSQ give every
    value its own level; UQ still rounds the values to its grid)."""


__all__ = [
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
    "KNotSmallerWarning",
]
