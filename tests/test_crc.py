"""csrc/crc.c against zlib.crc32: every length around the 16/64-byte folding boundaries, every
alignment, chained updates, and both the carry-less multiplication and the table paths."""
import os
import zlib

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pydnnz import container
from pydnnz._native import bytes_ptr, lib

BUF = os.urandom(4096)


def c_crc(data, seed=0):
    return lib.dnnz_crc_update(seed, bytes_ptr(data), len(data))


def test_check_value():
    assert c_crc(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")
    assert c_crc(b"") == 0 and c_crc(b"", 0x1234) == 0x1234


def portable(data, seed=0):
    return lib.dnnz_crc_update_portable(seed, bytes_ptr(data), len(data))


def test_every_length_and_alignment_near_the_fold_sizes():
    for n in list(range(0, 200)) + [255, 256, 257, 1023, 1024, 1025, 4000]:
        for off in range(0, 16):
            d = BUF[off:off + n]
            assert c_crc(d) == portable(d) == zlib.crc32(d), (n, off)


@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.integers(0, 3000))
def test_matches_zlib_with_seed_and_split(data, seed, cut):
    assert c_crc(data, seed) == portable(data, seed) == zlib.crc32(data, seed)
    cut = min(cut, len(data))
    assert c_crc(data[cut:], c_crc(data[:cut])) == zlib.crc32(data)


def test_container_crc_on_views_and_arrays():
    a = np.arange(1000, dtype=np.float32)
    assert container._crc32(a.view(np.uint8)) == zlib.crc32(a.tobytes())
    mv = memoryview(BUF)[3:1003]
    assert container._crc32(mv) == zlib.crc32(BUF[3:1003])
    assert container._crc32(b"") == 0


def test_accelerated_flag_is_boolean():
    assert lib.dnnz_crc_accelerated() in (0, 1)
