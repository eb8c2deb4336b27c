"""A catalogue of hand-made corruptions (ggml test-gguf style): each case is one targeted edit of a
valid file and must raise exactly the named DnnzError subclass, with a message naming the field."""
import json
import struct
import sys

import numpy as np
import pytest

from pydnnz import container
from pydnnz.container import MAX_HEADER_SIZE, load, save
from pydnnz.errors import (
    ChecksumError,
    CorruptDataError,
    CorruptFileError,
    TruncatedError,
    UnsupportedError,
    UnsupportedVersionError,
)

import _container_edit as E
import _container_fake as fake


def base_tensors():
    return {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4) / 4,
        "b": np.array([1, -2, 3], np.int16),
        "m": np.array([True, False, True, True, False]),
        "q": fake.FakeEncoded((2, 3), np.array([-1, 0, 2.5], np.float32),
                              np.array([0, 1, 2, 2, 1, 0], np.uint8)),
    }


BASE = save(base_tensors(), {"model": "catalogue"})


def read_all(data):
    """Everything a user can do with a file: open, read every tensor, verify."""
    with fake.registered():
        f = load(data)
        out = {k: f[k] for k in f}
        container.verify(data)
    return out


def test_base_file_is_valid():
    out = read_all(BASE)
    np.testing.assert_array_equal(out["w"], base_tensors()["w"])
    np.testing.assert_array_equal(out["q"].decode(), [[-1, 0, 2.5], [2.5, 0, -1]])


def _tensor(doc, name):
    return next(t for t in doc["tensors"] if t["name"] == name)


def _sec(doc, tname, sname):
    return next(s for s in _tensor(doc, tname)["sections"] if s["name"] == sname)


def _set(tname, key, value, sname=None):
    def edit(doc):
        target = _sec(doc, tname, sname) if sname else _tensor(doc, tname)
        target[key] = value
    return lambda d: E.with_header(d, edit)


def _insert_zeros_before(tname, sname, n):
    """A hole: n extra zero bytes before a section, every later offset moved by n."""
    def apply(data):
        doc = E.header_doc(data)
        s = _sec(doc, tname, sname)
        start = E.data_start(data) + s["offset"]
        seen = False
        for sec in E.sections_of(doc):
            seen = seen or sec is s
            if seen:
                sec["offset"] += n
        text = json.dumps(doc, separators=(",", ":")).encode()
        out = data[:start] + bytes(n) + data[start:]
        return E.with_header_text(out, text)
    return apply


def _nested(depth):
    def edit(doc):
        _tensor(doc, "q")["params"]["deep"] = None
        return doc
    def apply(data):
        d = E.with_header(data, edit)
        text = E.split(d)[1].rstrip(b" ").replace(b'"deep":null', b'"deep":' + b"[" * depth + b"]" * depth)
        return E.with_header_text(d, text)
    return apply


CATALOGUE = [
    # -- preamble
    ("bad_magic", lambda d: b"\x88" + d[1:], CorruptFileError, "not a .dnnz file: bad magic [88 44 4e"),
    ("text_mode_newlines", lambda d: d.replace(b"\r\n", b"\n", 1), CorruptFileError, "bad magic"),
    ("shorter_than_magic", lambda d: d[:5], CorruptFileError, "bad magic [89 44 4e 4e 5a]"),
    ("shorter_than_preamble", lambda d: d[:20], TruncatedError, "shorter than the 32-byte preamble"),
    ("future_major", lambda d: E.set_u(d, 8, "<H", 2), UnsupportedVersionError,
     "format version 2.0: this reader supports major version 1 only"),
    ("major_zero", lambda d: E.set_u(d, 8, "<H", 0), UnsupportedVersionError, "format version 0.0"),
    ("reserved_flag_bit0", lambda d: E.set_u(d, 12, "<I", 1, fix_crc=True), CorruptFileError,
     "field 'Header_Flags': reserved header flag bits 0x00000001 are set"),
    ("reserved_flag_bit31", lambda d: E.set_u(d, 12, "<I", 1 << 31, fix_crc=True), CorruptFileError,
     "0x80000000"),
    ("reserved_field", lambda d: E.set_u(d, 24, "<I", 7, fix_crc=True), CorruptFileError,
     "field 'Reserved': reserved field is 0x00000007"),
    ("header_length_past_eof", lambda d: E.set_u(d, 16, "<Q", len(d) + 32), TruncatedError,
     "field 'Header_Length': header length"),
    ("header_too_large", lambda d: E.set_u(d, 16, "<Q", MAX_HEADER_SIZE + 32), CorruptFileError,
     "exceeds the limit of 67108864 bytes"),
    ("header_length_huge", lambda d: E.set_u(d, 16, "<Q", 2**64 - 1), CorruptFileError, "exceeds the limit"),
    ("header_length_unaligned", lambda d: E.set_u(d, 16, "<Q", struct.unpack_from("<Q", d, 16)[0] + 1),
     CorruptFileError, "on a 64-byte boundary"),
    ("header_crc_field", lambda d: E.set_u(d, 28, "<I", struct.unpack_from("<I", d, 28)[0] ^ 1),
     ChecksumError, "field 'Header_CRC32': header CRC-32 mismatch"),
    ("header_byte_flipped", lambda d: d[:40] + bytes([d[40] ^ 0x20]) + d[41:], ChecksumError,
     "header CRC-32 mismatch"),
    ("header_padding_changed", lambda d: d[:E.data_start(d) - 1] + b"\t" + d[E.data_start(d):], ChecksumError,
     "header CRC-32 mismatch"),
    # -- header JSON
    ("bad_json", lambda d: E.with_header_text(d, b'{"metadata":{},"tensors":[}'), CorruptFileError,
     "header is not valid UTF-8 JSON (JSONDecodeError"),
    ("header_not_object", lambda d: E.with_header_text(d, b'[]'), CorruptFileError,
     "header does not start with '{'"),
    ("header_bad_utf8", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ").replace(b"catalogue", b"catal\xffgue")), CorruptFileError,
     "UnicodeDecodeError"),
    ("header_nul_padding", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ") + b"\x00" * 5), CorruptFileError, "not valid UTF-8 JSON"),
    ("header_nan_param", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ").replace(b'"scale":0.5', b'"scale":NaN')), CorruptFileError,
     "non-finite number NaN"),
    ("header_huge_float_param", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ").replace(b'"scale":0.5', b'"scale":1e400')), CorruptFileError,
     "number 1e400 is out of the range of a double"),
    ("header_huge_int", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ").replace(b'"shape":[3]', b'"shape":[' + b"9" * 5000 + b"]")),
     CorruptFileError,
     # Python >= 3.11 (and 3.10.7, 3.9.14) refuses to parse such ints; older ones reject the value.
     "Exceeds the limit" if hasattr(sys, "set_int_max_str_digits") else "is not an integer in [0, 2^63)"),
    ("header_excess_padding", lambda d: E.with_header_text(d, E.split(d)[1] + b" " * 64, pad=False),
     CorruptFileError, "bytes of padding (a writer pads with fewer than 64)"),
    ("header_deep_nesting", _nested(200000), CorruptFileError, "RecursionError"),
    ("duplicate_json_key", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ").replace(b'{"metadata":{', b'{"metadata":{},"metadata":{')),
     CorruptFileError, "duplicate key 'metadata'"),
    ("missing_tensors_key", lambda d: E.with_header(d, lambda doc: {"metadata": {}}), CorruptFileError,
     "header lacks required key 'tensors'"),
    ("unknown_top_key_same_minor", lambda d: E.with_header(d, lambda doc: doc.update(extra=1)),
     CorruptFileError, "header has unknown key 'extra'"),
    ("tensors_not_list", lambda d: E.with_header(d, lambda doc: doc.update(tensors={})), CorruptFileError,
     "'tensors' is not a list"),
    ("metadata_not_string", lambda d: E.with_header(d, lambda doc: doc["metadata"].update(model=3)),
     CorruptFileError, "metadata value of 'model' is not a string"),
    ("metadata_lone_surrogate", lambda d: E.with_header_text(
        d, E.split(d)[1].rstrip(b" ").replace(b"catalogue", b"\\ud800")), CorruptFileError,
     "metadata value is not valid Unicode"),
    # -- tensor entries
    ("duplicate_tensor_name", _set("b", "name", "w"), CorruptFileError,
     "tensor 'w': field 'name': duplicate tensor name"),
    ("empty_name", _set("b", "name", ""), CorruptFileError, "name is 0 bytes long (must be 1..1024)"),
    ("name_too_long", _set("b", "name", "n" * 1025), CorruptFileError, "name is 1025 bytes long"),
    ("tensor_unknown_key", _set("b", "extra", 1), CorruptFileError,
     "tensor 'b': field 'extra': tensor entry has unknown key 'extra'"),
    ("tensor_missing_shape", lambda d: E.with_header(d, lambda doc: _tensor(doc, "b").pop("shape")),
     CorruptFileError, "tensor entry lacks required key 'shape'"),
    ("bad_dtype", _set("b", "dtype", "float8_e4m3"), UnsupportedError,
     "tensor 'b': field 'dtype': unknown dtype 'float8_e4m3'"),
    ("dtype_not_string", _set("b", "dtype", 4), CorruptFileError, "dtype is not a string"),
    ("negative_dim", _set("b", "shape", [-3]), CorruptFileError,
     "tensor 'b': field 'shape': dimension -3 is not an integer in [0, 2^63)"),
    ("float_dim", _set("b", "shape", [3.0]), CorruptFileError, "dimension 3.0 is not an integer"),
    ("bool_dim", _set("b", "shape", [True]), CorruptFileError, "dimension True is not an integer"),
    ("huge_dim", _set("b", "shape", [2**63]), CorruptFileError, "is not an integer in [0, 2^63)"),
    ("overflowing_shape", _set("b", "shape", [2**40, 2**40]), CorruptFileError,
     "has a byte size that overflows u64"),
    ("too_many_dims", _set("b", "shape", [1] * 9), CorruptFileError, "9 dimensions exceed the limit of 8"),
    ("shape_not_list", _set("b", "shape", 3), CorruptFileError, "shape is not a list"),
    ("length_not_shape_times_dtype", _set("b", "shape", [4]), CorruptFileError,
     "tensor 'b': section 'data': field 'length': length 6 is not 8 (shape [4] x 2 bytes of int16)"),
    ("raw_section_dtype_differs", _set("b", "dtype", "uint16", sname="data"), CorruptFileError,
     "section dtype 'uint16' differs from the tensor's 'int16'"),
    ("raw_with_params", _set("b", "params", {"k": 1}), CorruptFileError, "a raw tensor must have empty params"),
    ("raw_section_renamed", _set("b", "name", "payload", sname="data"), CorruptFileError,
     "exactly one section, named 'data'"),
    ("encoded_not_float32", _set("q", "dtype", "float64"), CorruptFileError,
     "an encoded tensor must have dtype 'float32'"),
    ("encoding_name_invalid", _set("q", "encoding", "no spaces"), CorruptFileError,
     "is not a valid encoding name"),
    ("param_not_scalar", _set("q", "params", {"k": [3]}), CorruptFileError, "param 'k' is not a JSON scalar"),
    ("too_many_sections", _set("q", "sections", [{}] * 65), CorruptFileError, "65 sections exceed the limit"),
    # -- sections
    ("section_unknown_dtype", _set("q", "dtype", "int128", sname="indices"), UnsupportedError,
     "unknown dtype 'int128'"),
    ("encoded_section_bool", _set("q", "dtype", "bool", sname="indices"), CorruptFileError,
     "dtype 'bool' is not allowed in an encoded section"),
    ("section_length_not_multiple", _set("q", "length", 10, sname="codebook"), CorruptFileError,
     "length 10 is not a multiple of the float32 size 4"),
    ("duplicate_section_name", _set("q", "name", "codebook", sname="indices"), CorruptFileError,
     "duplicate section name"),
    ("negative_offset", _set("b", "offset", -64, sname="data"), CorruptFileError,
     "field 'offset': -64 is not an integer in"),
    ("bool_offset", _set("w", "offset", False, sname="data"), CorruptFileError,
     "field 'offset': False is not an integer"),
    ("crc_out_of_range", _set("b", "crc32", 2**32, sname="data"), CorruptFileError,
     "field 'crc32': 4294967296 is not an integer in [0, 4294967295]"),
    ("offset_past_end", _set("q", "offset", 2**40, sname="indices"), TruncatedError,
     "tensor 'q': section 'indices': field 'offset': section [1099511627776, 1099511627782) runs past"),
    ("length_past_end", _set("q", "length", 64, sname="indices"), TruncatedError, "runs past the end"),
    ("misaligned_offset", _set("b", "offset", 72, sname="data"), CorruptFileError,
     "tensor 'b': section 'data': field 'offset': offset 72 is not a multiple of 64"),
    ("overlapping_sections", _set("b", "offset", 0, sname="data"), CorruptFileError,
     "offset 0 overlaps the previous section, which ends at 48"),
    ("hole_between_sections", _insert_zeros_before("m", "data", 64), CorruptFileError,
     "tensor 'm': section 'data': field 'offset': offset 192 leaves a hole after the previous section "
     "(expected 128)"),
    ("trailing_byte", lambda d: d + b"\x00", CorruptFileError,
     "field 'file length': 1 trailing bytes after the last section"),
    ("trailing_block", lambda d: d + bytes(64), CorruptFileError, "64 trailing bytes"),
    ("truncated_last_section", lambda d: d[:-1], TruncatedError, "runs past the end of the data area"),
    ("truncated_to_header", lambda d: d[:E.data_start(d)], TruncatedError, "runs past the end"),
    ("nonzero_padding", lambda d: d[:E.data_start(d) + 60] + b"\x01" + d[E.data_start(d) + 61:],
     CorruptFileError, "tensor 'b': section 'data': field 'padding': padding bytes before offset 64"),
    ("section_crc_mismatch", lambda d: d[:-1] + bytes([d[-1] ^ 0x01]), ChecksumError,
     "tensor 'q': section 'indices': field 'crc32': CRC-32 mismatch"),
    ("section_crc_field", _set("w", "crc32", 12345, sname="data"), ChecksumError,
     "tensor 'w': section 'data': field 'crc32': CRC-32 mismatch (stored 0x00003039"),
    ("bool_byte_not_0_or_1", lambda d: E.edit_section_bytes(d, "m", "data", 1, 2), CorruptFileError,
     "tensor 'm': section 'data': bool tensor holds a byte other than 0 or 1"),
    ("encoded_index_out_of_range", lambda d: E.edit_section_bytes(d, "q", "indices", 0, 3), CorruptDataError,
     "tensor 'q': field 'encoding': fake_codebook: index 3 >= k=3"),
    ("encoded_params_inconsistent", _set("q", "params", {"k": 4}), CorruptDataError,
     "fake_codebook: k=4 but the codebook has 3 entries"),
    ("unknown_encoding", _set("q", "encoding", "zzz_unknown"), UnsupportedError,
     "tensor 'q': field 'encoding': "),
]


@pytest.mark.parametrize("name, edit, cls, message", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_corruption_raises_exactly(name, edit, cls, message):
    bad = edit(BASE)
    assert bad != BASE
    with pytest.raises(cls) as info:
        read_all(bad)
    assert type(info.value) is cls, f"{name}: {type(info.value).__name__}: {info.value}"
    assert message in str(info.value)
    assert str(info.value).startswith("<bytes>: ")
    if name == "unknown_encoding":  # the wording is the encodings registry's; the name must be there
        assert "encoding 'zzz_unknown'" in str(info.value)


def test_catalogue_covers_every_rule_once():
    names = [c[0] for c in CATALOGUE]
    assert len(names) == len(set(names)) >= 60


def test_file_errors_name_the_path(tmp_path):
    p = tmp_path / "bad.dnnz"
    p.write_bytes(E.set_u(BASE, 8, "<H", 9))
    with pytest.raises(UnsupportedVersionError, match=f"^{p}: field 'Format_Major': format version 9.0"):
        container.load_file(p)
    p.write_bytes(b"")
    with pytest.raises(CorruptFileError, match=f"^{p}: field 'Magic': not a .dnnz file"):
        container.load_file(p)
    p.write_bytes(BASE[:31])
    with pytest.raises(TruncatedError, match="31 bytes"):
        container.safe_open(p)


def test_newer_minor_version_skips_unknown_keys():
    def future(doc):
        doc["future_index"] = {"anything": [1, 2]}
        _tensor(doc, "w")["future_hint"] = "x"
        _sec(doc, "w", "data")["future_codec"] = None
    data = E.set_u(E.with_header(BASE, future), 10, "<H", 3, fix_crc=True)
    out = read_all(data)
    np.testing.assert_array_equal(out["w"], base_tensors()["w"])
    assert container.load(data).format_version == (1, 3)
    # ... but still rejects what breaks a rule of the major version
    with pytest.raises(UnsupportedVersionError):
        read_all(E.set_u(data, 8, "<H", 2))
    with pytest.raises(CorruptFileError, match="lacks required key 'crc32'"):
        read_all(E.set_u(E.with_header(BASE, lambda d: _sec(d, "w", "data").pop("crc32")), 10, "<H", 3,
                         fix_crc=True))


def test_pathological_headers_are_rejected_in_linear_time():
    """Headers built to make a naive reader slow: many duplicate keys, many tensors, long
    numbers. Each must be rejected quickly (a quadratic duplicate search would take hours)."""
    many_keys = b'{"metadata":{' + b",".join(b'"k%d":"v"' % (i % 50000) for i in range(100000)) + \
        b'},"tensors":[]}'
    many_tensors = b'{"metadata":{},"tensors":[' + b",".join([b'{"name":"t"}'] * 200000) + b"]}"
    for text, message in [(many_keys, "duplicate key 'k0'"), (many_tensors, "lacks required key")]:
        with E.deadline(20), pytest.raises(CorruptFileError, match=message):
            read_all(E.with_header_text(BASE, text))
