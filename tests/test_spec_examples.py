"""spec/examples/ are part of the specification: the writer must reproduce them byte for byte, the
reader must load them to the arrays the spec gives, and the spec's hex dump must be the file."""
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz.container import load, save

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "dnnz-format.md"
EXAMPLES = ROOT / "spec" / "examples"

EXAMPLE_TENSORS = {
    "fc.weight": np.array([[0.5, -1, 0], [0, 2, 0.25]], np.float32),
    "fc.bias": np.array([0.5, -0.25], np.float16),
}
EXAMPLE_METADATA = {"model": "example"}

# The small matrix each encoding's example stores: the worked example of spec/encodings.md
# (3x4, two shared non-zero values), so that its section bytes can be found in the files.
ENCODING_MATRIX = np.array([[0, 1.5, 0, 1.5], [2, 0, 0, 1.5], [0, 0, 2, 0]], np.float32)
ENCODINGS = ["dense", "csc", "im", "im8", "im4", "ham", "sham"]


def test_example_file_is_what_the_writer_produces():
    assert save(EXAMPLE_TENSORS, EXAMPLE_METADATA) == (EXAMPLES / "example.dnnz").read_bytes()


def test_example_file_loads_to_the_spec_arrays():
    f = pydnnz.load_file(EXAMPLES / "example.dnnz")
    assert f.metadata == EXAMPLE_METADATA
    assert list(f) == ["fc.weight", "fc.bias"]
    assert f["fc.weight"].dtype == np.float32 and f["fc.weight"].tolist() == [[0.5, -1, 0], [0, 2, 0.25]]
    assert f["fc.bias"].dtype == np.float16 and f["fc.bias"].tolist() == [0.5, -0.25]


def _dump_bytes(text):
    """The bytes of the spec's xxd-style dump (offset, up to 16 hex pairs; notes ignored)."""
    out = bytearray()
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]{8})  ((?:[0-9a-f]{2} {1,2}){0,15}[0-9a-f]{2})", line)
        if m:
            assert int(m.group(1), 16) == len(out), f"dump line out of order: {line}"
            out += bytes.fromhex(m.group(2))
    return bytes(out)


def test_spec_hex_dump_is_the_example_file():
    text = SPEC.read_text(encoding="utf-8")
    data = (EXAMPLES / "example.dnnz").read_bytes()
    assert _dump_bytes(text) == data
    assert f"({len(data)} bytes)" in text


def test_spec_shows_the_im_example_entry():
    path = EXAMPLES / "im.dnnz"
    if not path.exists():
        pytest.skip("im.dnnz not written")
    import json
    data = path.read_bytes()
    hlen = int.from_bytes(data[16:24], "little")
    entry = json.loads(data[32:32 + hlen])["tensors"][0]
    text = SPEC.read_text(encoding="utf-8")
    assert f"(`im.dnnz`, {len(data)} bytes)" in text
    for s in entry["sections"]:
        assert f'"offset": {s["offset"]}, "length": {s["length"]}, "crc32": {s["crc32"]}' in text
    assert json.dumps(entry["params"]) in text


def test_spec_numbers_match_the_example():
    text = SPEC.read_text(encoding="utf-8")
    data = (EXAMPLES / "example.dnnz").read_bytes()
    header_crc = int.from_bytes(data[28:32], "little")
    assert f"0X{header_crc:08X}" in text.upper()
    assert zlib.crc32(b"123456789") == 0xCBF43926 and "0xCBF43926" in text
    crcs = {int(c) for c in re.findall(r'"crc32": (\d+)', text)}
    assert {zlib.crc32(data[448:472]), zlib.crc32(data[512:516])} <= crcs
    assert b"\x89DNNZ\r\n\x1a" == bytes.fromhex("89 44 4E 4E 5A 0D 0A 1A") == pydnnz.container.MAGIC


def _encoder(name):
    try:
        from pydnnz import encodings
    except ImportError:
        pytest.skip("pydnnz.encodings is not available")
    try:
        return encodings.encode(ENCODING_MATRIX, encoding=name)
    except pydnnz.DnnzError as exc:
        pytest.skip(f"encoding {name!r} is not registered ({exc})")


@pytest.mark.parametrize("name", ENCODINGS)
def test_encoding_example_files(name):
    em = _encoder(name)
    path = EXAMPLES / f"{name}.dnnz"
    if not path.exists():
        pytest.skip(f"{path.name} not written yet: write it with save_file({{'w': encode(M, {name!r})}})")
    assert save({"w": em}, {"example": name}) == path.read_bytes()
    got = load(path.read_bytes())["w"]
    assert got.encoding == name and tuple(got.shape) == ENCODING_MATRIX.shape
    np.testing.assert_array_equal(got.decode(), ENCODING_MATRIX)


# ham and sham have their own worked example (another matrix) in spec/encodings.md.
@pytest.mark.parametrize("name", ["dense", "csc", "im", "im8", "im4"])
def test_encoding_examples_hold_the_bytes_of_encodings_md(name):
    """The container stores an encoding's sections unchanged: the short sections of each example
    file appear, byte for byte, in the worked example of spec/encodings.md."""
    doc = ROOT / "spec" / "encodings.md"
    path = EXAMPLES / f"{name}.dnnz"
    if not doc.exists() or not path.exists():
        pytest.skip("spec/encodings.md or the example file is missing")
    text = " ".join(doc.read_text(encoding="utf-8").split())
    data = path.read_bytes()
    hlen = int.from_bytes(data[16:24], "little")
    import json
    for s in json.loads(data[32:32 + hlen])["tensors"][0]["sections"]:
        if s["length"] <= 16:
            start = 32 + hlen + s["offset"]
            assert data[start:start + s["length"]].hex(" ") in text, (name, s["name"])
