"""Lossless layer encodings with dot products computed from the encoded form.

`encode(matrix, encoding="auto")` returns an EncodedMatrix (the contract is EncodedMatrix's docstring);
`from_sections(...)` rebuilds one from stored parts, validating everything in C. The byte
layouts are specified in spec/encodings.md. Registered here: dense, csc, im, im8, im4
(the Huffman encodings ham, sham and rlham register themselves the same way with `register`).
"""
from ._base import (
    RESERVED_IDS,
    EncodedMatrix,
    MatrixInput,
    encode,
    encodings,
    from_sections,
    get_encoding,
    register,
)
from . import dense as _dense  # noqa: F401  (registration order = auto's tie-break order)
from . import csc as _csc  # noqa: F401
from . import im as _im  # noqa: F401
from . import ham as _ham  # noqa: F401
from . import sham as _sham  # noqa: F401
from . import rlham as _rlham  # noqa: F401

__all__ = ["EncodedMatrix", "MatrixInput", "encode", "encodings", "from_sections", "get_encoding",
           "register", "RESERVED_IDS"]
