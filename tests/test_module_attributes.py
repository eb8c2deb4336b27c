"""The package's public surface and its link to the C library."""
import pytest

import pydnnz
from pydnnz import _native, errors


def test_version_is_single_sourced():
    assert _native.c_version() == pydnnz.__version__


def test_every_status_has_a_name_and_an_exception():
    lib = _native.lib
    codes = [getattr(lib, n) for n in dir(lib) if n.startswith("DNNZ_E_")]
    assert len(codes) == len(set(codes)) >= 10
    for code in codes:
        assert _native.status_name(code) not in ("ok", "unknown status")
        with pytest.raises(errors.DnnzError) as info:
            _native.check(code, "doing something")
        assert str(info.value).startswith("doing something: ")
    _native.check(lib.DNNZ_OK, "nothing")  # no exception
    assert _native.status_name(12345) == "unknown status"


def test_error_hierarchy():
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.ShapeError, errors.InvalidArgumentError)
    assert issubclass(errors.ChecksumError, errors.CorruptDataError)
    assert issubclass(errors.DnnzMemoryError, MemoryError)
    for name in errors.__all__:
        assert getattr(pydnnz, name) is getattr(errors, name)
