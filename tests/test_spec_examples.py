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
ENCODINGS = ["dense", "csc", "im", "im8", "im4", "ham", "sham", "rlham"]


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
        pytest.fail(f"{path.name} is missing: write it with save({{'w': encode(M, {name!r})}}, {{'example': {name!r}}})")
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


def test_every_registered_encoding_has_an_example_file():
    from pydnnz.encodings import encodings
    assert set(encodings()) <= set(ENCODINGS)
    # example.dnnz is the container's worked example; row_scale.dnnz the "Row scales" example
    # (an `im` tensor with per-row scales, checked in test_granularity.py)
    assert sorted(p.stem for p in EXAMPLES.glob("*.dnnz") if p.stem not in ("example", "row_scale")) == \
        sorted(ENCODINGS)


def _table_names(text, heading):
    """The backquoted names in the first column of the first table after `heading`."""
    part = text[text.index(heading):]
    names, started = [], False
    for line in part.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            m = re.match(r"^\|\s*(?:\d+\s*\|\s*)?`?([A-Za-z0-9_]+)`?\s*\|", line)
            if m and m.group(1) not in ("Name", "id", "name"):
                names.append(m.group(1))
        elif started:
            break
    return names


def test_spec_encoding_tables_list_every_encoding_the_code_accepts():
    """A reader written from spec/ alone must know every encoding the reference reader accepts."""
    from pydnnz.encodings import encodings
    from pydnnz.encodings._base import RESERVED_IDS
    accepted = set(encodings())
    fmt = SPEC.read_text(encoding="utf-8")
    assert set(_table_names(fmt, "Encoding names (payloads")) == accepted | {"raw"}
    enc = (ROOT / "spec" / "encodings.md").read_text(encoding="utf-8")
    assert set(_table_names(enc, "Encodings are registered under")) == accepted == set(RESERVED_IDS)
    huf = (ROOT / "spec" / "huffman.md").read_text(encoding="utf-8")
    overview = huf[:huf.index("## 2.")]
    for name in ("ham", "sham", "rlham"):
        assert f"`{name}`" in overview
    for doc in ("dnnz-format.md", "encodings.md", "huffman.md", "compress.md", "torch.md"):
        assert "TEAM.md" not in (ROOT / "spec" / doc).read_text(encoding="utf-8"), doc


def test_every_encoding_states_its_section_order():
    enc = (ROOT / "spec" / "encodings.md").read_text(encoding="utf-8")
    from pydnnz.encodings import encodings
    im = "## im, im8, im4 (index map)"
    heading = {"im": im, "im8": im, "im4": im,
               "ham": "### ham", "sham": "### sham"}
    for name in encodings():
        start = enc.index(heading.get(name, f"## {name}") + "\n")
        nxt = [k for k in (enc.find("\n## ", start + 1), enc.find("\n### ", start + 1)) if k > 0]
        part = enc[start:min(nxt) if nxt else len(enc)]
        assert "in this order" in " ".join(part.split()), name


def test_rlham_example_holds_the_bytes_of_its_sections_in_encodings_md():
    """rlham.dnnz stores the sections pydnnz.encode produces for the 3x4 matrix; the worked
    example of encodings.md (another matrix) is reproduced by the encoder too."""
    em = _encoder("rlham")
    got = load((EXAMPLES / "rlham.dnnz").read_bytes())["w"]
    assert got.params == em.params
    for key, arr in em.sections.items():
        assert got.sections[key].tobytes() == arr.tobytes()
    w = np.array([[0, 0.5, 0, 0.5], [-1, 0, 0, 0.5]], np.float32)
    doc = pydnnz.encode(w, "rlham")
    text = " ".join((ROOT / "spec" / "encodings.md").read_text(encoding="utf-8").split())
    assert doc.sections["lengths"].tobytes().hex(" ") in text and doc.sections["payload"].tobytes().hex(" ") in text
