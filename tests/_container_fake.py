"""A test-only encoding that follows the EncodedMatrix contract (pydnnz/encodings/_matrix.py), so the container is tested as generic
over encodings without depending on pydnnz.encodings.

"fake_codebook" stores a float32 codebook and one uint8 index per entry: decode() is
codebook[indices].reshape(shape). `fake_from_sections` validates like a real encoding must.
`registered()` routes that name to the fake and every other name to the real registry.
"""
import contextlib
from unittest import mock

import numpy as np

from pydnnz import container
from pydnnz.errors import CorruptDataError

NAME = "fake_codebook"


class FakeEncoded:
    encoding = NAME

    def __init__(self, shape, codebook, indices, note="x"):
        self.shape = tuple(shape)
        self.codebook = codebook
        self.indices = indices
        self.params = {"k": int(codebook.size), "note": note, "scale": 0.5, "signed": True, "none": None}
        self.sections = {"codebook": codebook, "indices": indices}

    @classmethod
    def from_dense(cls, matrix):
        matrix = np.asarray(matrix, dtype=np.float32)
        codebook, inverse = np.unique(matrix, return_inverse=True)
        return cls(matrix.shape, codebook.astype(np.float32), inverse.reshape(-1).astype(np.uint8))

    @property
    def matrix_shape(self):
        return (self.shape[0], int(np.prod(self.shape[1:]))) if self.shape else (1, 1)

    @property
    def nbytes(self):
        return sum(s.nbytes for s in self.sections.values())

    def decode(self):
        return self.codebook[self.indices].reshape(self.shape)


def fake_from_sections(encoding, shape, params, sections):
    if encoding != NAME:
        raise AssertionError("routed wrongly")
    if set(sections) != {"codebook", "indices"}:
        raise CorruptDataError(f"{NAME}: sections must be codebook and indices, got {sorted(sections)}")
    cb, idx = sections["codebook"], sections["indices"]
    if cb.dtype != np.float32 or idx.dtype != np.uint8:
        raise CorruptDataError(f"{NAME}: wrong section dtypes")
    if params.get("k") != cb.size:
        raise CorruptDataError(f"{NAME}: k={params.get('k')} but the codebook has {cb.size} entries")
    if idx.size != int(np.prod(shape)):
        raise CorruptDataError(f"{NAME}: {idx.size} indices for shape {tuple(shape)}")
    if idx.size and int(idx.max()) >= cb.size:
        raise CorruptDataError(f"{NAME}: index {int(idx.max())} >= k={cb.size}")
    em = FakeEncoded(shape, cb, idx, note=params.get("note"))
    return em


@contextlib.contextmanager
def registered():
    real = container._from_sections

    def route(encoding, shape, params, sections, *source_dtype):
        if encoding == NAME:
            return fake_from_sections(encoding, shape, params, sections)
        return real(encoding, shape, params, sections, *source_dtype)

    with mock.patch.object(container, "_from_sections", route):
        yield
