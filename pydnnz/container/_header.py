"""Header parse and validate: the preamble, the JSON header, every tensor and section entry.

Nothing is allocated and no section is touched before all of it has passed (spec §2-§10)."""
import json
import math

from .._native import crc32
from ..errors import (
    ChecksumError,
    CorruptFileError,
    TruncatedError,
    UnsupportedError,
    UnsupportedVersionError,
)
from ._format import (
    _DTYPES, _IDENT, _PREAMBLE, _SECTION_DTYPES, _SECTION_KEYS, _SOURCE_DTYPES, _TENSOR_KEYS,
    _TENSOR_OPTIONAL, _TOP_KEYS, _ZEROS, ALIGNMENT, FORMAT_MAJOR, FORMAT_MINOR, MAGIC, MAX_DIM,
    MAX_HEADER_SIZE, MAX_JSON_DEPTH, MAX_METADATA_ITEMS, MAX_NAME_BYTES, MAX_NDIM, MAX_PARAMS,
    MAX_SECTIONS, MAX_TENSORS, PREAMBLE_SIZE, RAW, U64_MAX, _align, _Header, _Section, _Tensor,
)


def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()  # linear: a 64 MiB object of repeated keys must not take quadratic time
        for k, _ in pairs:
            if k in seen:
                raise _JsonDuplicate(k)
            seen.add(k)
    return d


class _JsonDuplicate(ValueError):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} is not JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"number {text} is out of the range of a double")
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_preamble(pre, size, where):
    """Check the fixed 32 bytes; returns (major, minor, header length, stored crc)."""
    if size < len(MAGIC) or pre[: len(MAGIC)] != MAGIC:
        got = " ".join(f"{b:02x}" for b in pre[: len(MAGIC)])
        raise CorruptFileError(where(f"not a .dnnz file: bad magic [{got}]", field="Magic"))
    if size < PREAMBLE_SIZE:
        raise TruncatedError(where(f"file is {size} bytes, shorter than the {PREAMBLE_SIZE}-byte preamble"))
    _, major, minor, flags, hlen, reserved, crc = _PREAMBLE.unpack(pre)
    if major != FORMAT_MAJOR:
        raise UnsupportedVersionError(where(
            f"format version {major}.{minor}: this reader supports major version {FORMAT_MAJOR} only",
            field="Format_Major"))
    if flags:
        raise CorruptFileError(where(f"reserved header flag bits 0x{flags:08x} are set (must be 0)",
                                     field="Header_Flags"))
    if reserved:
        raise CorruptFileError(where(f"reserved field is 0x{reserved:08x} (must be 0)", field="Reserved"))
    if hlen > MAX_HEADER_SIZE:
        raise CorruptFileError(where(f"header length {hlen} exceeds the limit of {MAX_HEADER_SIZE} bytes",
                                     field="Header_Length"))
    if PREAMBLE_SIZE + hlen > size:
        raise TruncatedError(where(f"header length {hlen} runs past the end of the {size}-byte file",
                                   field="Header_Length"))
    if (PREAMBLE_SIZE + hlen) % ALIGNMENT:
        raise CorruptFileError(where(
            f"header length {hlen} does not end the header on a {ALIGNMENT}-byte boundary",
            field="Header_Length"))
    return major, minor, hlen, crc


def _json_depth(doc):
    """Nesting depth of a parsed JSON value (a scalar is 0, {} or [] is 1), without recursion."""
    depth, stack = 0, [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d)
            if d <= MAX_JSON_DEPTH:  # deeper is rejected anyway: stop descending
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def _parse_header(pre, header_bytes, size, where):
    """Validate the preamble and the JSON header against a file of `size` bytes (spec §11)."""
    major, minor, hlen, stored = _parse_preamble(pre, size, where)
    header_bytes = bytes(header_bytes)
    # The header CRC covers the preamble's first 28 bytes and then the header (spec §9).
    computed = crc32(header_bytes, crc32(pre[:28]))
    if computed != stored:
        raise ChecksumError(where(f"header CRC-32 mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})",
                                  field="Header_CRC32"))
    if not header_bytes.startswith(b"{"):
        raise CorruptFileError(where("header does not start with '{'", field="Header"))
    try:
        stripped = header_bytes.rstrip(b" ")
        text = stripped.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                         parse_float=_finite_float)
    except _JsonDuplicate as exc:
        raise CorruptFileError(where(f"header JSON has a duplicate key {exc.key!r}", field="Header")) from None
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError and json.JSONDecodeError are ValueErrors; deep nesting is a RecursionError.
        raise CorruptFileError(where(f"header is not valid UTF-8 JSON ({type(exc).__name__}: {exc})",
                                     field="Header")) from None
    if _json_depth(doc) > MAX_JSON_DEPTH:
        raise CorruptFileError(where(f"header JSON is nested deeper than {MAX_JSON_DEPTH} levels", field="Header"))
    if len(header_bytes) - len(stripped) >= ALIGNMENT:
        raise CorruptFileError(where(f"header has {len(header_bytes) - len(stripped)} bytes of padding "
                                     f"(a writer pads with fewer than {ALIGNMENT})", field="Header"))
    strict = minor <= FORMAT_MINOR  # a newer minor may add keys; an older or equal one may not
    if not isinstance(doc, dict):
        raise CorruptFileError(where("header JSON is not an object", field="Header"))
    _check_keys(doc, _TOP_KEYS, strict, where, "header")
    metadata = _parse_metadata(doc["metadata"], where)
    raw_tensors = doc["tensors"]
    if not isinstance(raw_tensors, list):
        raise CorruptFileError(where("'tensors' is not a list", field="tensors"))
    if len(raw_tensors) > MAX_TENSORS:
        raise CorruptFileError(where(f"{len(raw_tensors)} tensors exceed the limit of {MAX_TENSORS}",
                                     field="tensors"))
    data_start = PREAMBLE_SIZE + hlen
    tensors = {}
    end = 0  # end of the last section, relative to the data area
    for index, entry in enumerate(raw_tensors):
        t = _parse_tensor(entry, index, strict, where, minor)
        if t.name in tensors:
            raise CorruptFileError(where("duplicate tensor name", tensor=t.name, field="name"))
        for s in t.sections:
            expected = _align(end)
            if s.offset < end:
                raise CorruptFileError(where(
                    f"offset {s.offset} overlaps the previous section, which ends at {end}",
                    tensor=t.name, section=s.name, field="offset"))
            if s.offset % ALIGNMENT:
                raise CorruptFileError(where(f"offset {s.offset} is not a multiple of {ALIGNMENT}",
                                             tensor=t.name, section=s.name, field="offset"))
            if data_start + s.offset + s.length > size:
                raise TruncatedError(where(
                    f"section [{s.offset}, {s.offset + s.length}) runs past the end of the data area "
                    f"({size - data_start} bytes)", tensor=t.name, section=s.name, field="offset"))
            if s.offset != expected:
                raise CorruptFileError(where(
                    f"offset {s.offset} leaves a hole after the previous section "
                    f"(expected {expected})", tensor=t.name, section=s.name, field="offset"))
            end = s.offset + s.length
        tensors[t.name] = t
    if data_start + end != size:
        raise CorruptFileError(where(
            f"{size - data_start - end} trailing bytes after the last section (file is {size} bytes, "
            f"sections end at {data_start + end})", field="file length"))
    return _Header(major, minor, data_start, metadata, tensors)


def _check_keys(obj, known, strict, where, what, tensor=None, section=None):
    if len(obj) == len(known) and all(k in obj for k in known):
        return  # the usual case, checked in one pass
    missing = [k for k in known if k not in obj]
    if missing:
        raise CorruptFileError(where(f"{what} lacks required key {missing[0]!r}", tensor=tensor,
                                     section=section, field=missing[0]))
    if strict:
        extra = [k for k in obj if k not in known]
        if extra:
            raise CorruptFileError(where(f"{what} has unknown key {extra[0]!r}", tensor=tensor,
                                         section=section, field=extra[0]))


def _parse_metadata(md, where):
    if not isinstance(md, dict):
        raise CorruptFileError(where("'metadata' is not an object", field="metadata"))
    if len(md) > MAX_METADATA_ITEMS:
        raise CorruptFileError(where(f"{len(md)} metadata items exceed the limit of {MAX_METADATA_ITEMS}",
                                     field="metadata"))
    for k, v in md.items():
        if not isinstance(v, str):
            raise CorruptFileError(where(f"metadata value of {k!r} is not a string", field="metadata"))
        _check_text(k, where, "metadata key", field="metadata")
        _check_text(v, where, "metadata value", field="metadata")
    return md


def _check_text(s, where, what, tensor=None, field=None, limit=None):
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError:
        raise CorruptFileError(where(f"{what} is not valid Unicode (lone surrogate)", tensor=tensor,
                                     field=field)) from None
    if limit is not None and not 0 < n <= limit:
        raise CorruptFileError(where(f"{what} is {n} bytes long (must be 1..{limit})", tensor=tensor,
                                     field=field))


def _parse_tensor(entry, index, strict, where, minor=FORMAT_MINOR):
    if not isinstance(entry, dict):
        raise CorruptFileError(where(f"tensors[{index}] is not an object", field="tensors"))
    name = entry.get("name")
    if not isinstance(name, str):
        raise CorruptFileError(where(f"tensors[{index}] has no string 'name'", field="name"))
    _check_text(name, where, "name", tensor=name, field="name", limit=MAX_NAME_BYTES)
    if "\x00" in name:
        raise CorruptFileError(where("name contains U+0000", tensor=name, field="name"))
    optional = {k: entry[k] for k, since in _TENSOR_OPTIONAL.items() if k in entry and minor >= since}
    _check_keys({k: v for k, v in entry.items() if k not in optional}, _TENSOR_KEYS, strict, where,
                "tensor entry", tensor=name)
    source_dtype = optional.get("source_dtype", "float32")
    dtype = entry["dtype"]
    if not isinstance(dtype, str):
        raise CorruptFileError(where("dtype is not a string", tensor=name, field="dtype"))
    if dtype not in _DTYPES:
        raise UnsupportedError(where(f"unknown dtype {dtype!r}", tensor=name, field="dtype"))
    shape = entry["shape"]
    if not isinstance(shape, list):
        raise CorruptFileError(where("shape is not a list", tensor=name, field="shape"))
    if len(shape) > MAX_NDIM:
        raise CorruptFileError(where(f"{len(shape)} dimensions exceed the limit of {MAX_NDIM}",
                                     tensor=name, field="shape"))
    count = 1
    for d in shape:
        if not _is_int(d) or not 0 <= d <= MAX_DIM:
            raise CorruptFileError(where(f"dimension {d!r} is not an integer in [0, 2^63)", tensor=name,
                                         field="shape"))
        count *= d
    if count * _DTYPES[dtype][1] > U64_MAX:
        raise CorruptFileError(where(f"shape {shape} has a byte size that overflows u64", tensor=name,
                                     field="shape"))
    encoding = entry["encoding"]
    if not isinstance(encoding, str) or not _IDENT.match(encoding):
        raise CorruptFileError(where(f"encoding {encoding!r} is not a valid encoding name", tensor=name,
                                     field="encoding"))
    params = entry["params"]
    if not isinstance(params, dict):
        raise CorruptFileError(where("params is not an object", tensor=name, field="params"))
    if len(params) > MAX_PARAMS:
        raise CorruptFileError(where(f"{len(params)} params exceed the limit of {MAX_PARAMS}", tensor=name,
                                     field="params"))
    for k, v in params.items():
        _check_text(k, where, "params key", tensor=name, field="params")
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise CorruptFileError(where(f"param {k!r} is not a JSON scalar", tensor=name, field="params"))
        if isinstance(v, str):
            _check_text(v, where, f"param {k!r}", tensor=name, field="params")
    raw_sections = entry["sections"]
    if not isinstance(raw_sections, list):
        raise CorruptFileError(where("sections is not a list", tensor=name, field="sections"))
    if len(raw_sections) > MAX_SECTIONS:
        raise CorruptFileError(where(f"{len(raw_sections)} sections exceed the limit of {MAX_SECTIONS}",
                                     tensor=name, field="sections"))
    sections = tuple(_parse_section(s, i, name, strict, where) for i, s in enumerate(raw_sections))
    if len({s.name for s in sections}) != len(sections):
        raise CorruptFileError(where("duplicate section name", tensor=name, field="sections"))
    if encoding == RAW:
        if params:
            raise CorruptFileError(where("a raw tensor must have empty params", tensor=name, field="params"))
        if len(sections) != 1 or sections[0].name != "data":
            raise CorruptFileError(where("a raw tensor must have exactly one section, named 'data'",
                                         tensor=name, field="sections"))
        s = sections[0]
        if s.dtype != dtype:
            raise CorruptFileError(where(f"section dtype {s.dtype!r} differs from the tensor's {dtype!r}",
                                         tensor=name, section="data", field="dtype"))
        want = count * _DTYPES[dtype][1]
        if s.length != want:
            raise CorruptFileError(where(
                f"length {s.length} is not {want} (shape {shape} x {_DTYPES[dtype][1]} bytes of {dtype})",
                tensor=name, section="data", field="length"))
    else:
        if dtype != "float32":
            raise CorruptFileError(where(f"an encoded tensor must have dtype 'float32', not {dtype!r}",
                                         tensor=name, field="dtype"))
        for s in sections:
            if s.dtype not in _SECTION_DTYPES:
                raise CorruptFileError(where(f"dtype {s.dtype!r} is not allowed in an encoded section",
                                             tensor=name, section=s.name, field="dtype"))
        if "source_dtype" in optional and source_dtype not in _SOURCE_DTYPES:
            raise CorruptFileError(where(f"source_dtype {source_dtype!r} is not one of {list(_SOURCE_DTYPES)}",
                                         tensor=name, field="source_dtype"))
    if encoding == RAW and "source_dtype" in optional:
        raise CorruptFileError(where("a raw tensor has no source_dtype (its dtype says it)", tensor=name,
                                     field="source_dtype"))
    return _Tensor(name, dtype, tuple(shape), encoding, params, sections, source_dtype)


def _parse_section(s, index, tname, strict, where):
    if not isinstance(s, dict):
        raise CorruptFileError(where(f"sections[{index}] is not an object", tensor=tname, field="sections"))
    sname = s.get("name")
    if not isinstance(sname, str) or not _IDENT.match(sname):
        raise CorruptFileError(where(f"sections[{index}] has an invalid name {sname!r}", tensor=tname,
                                     field="name"))
    _check_keys(s, _SECTION_KEYS, strict, where, "section entry", tensor=tname, section=sname)
    dtype = s["dtype"]
    if not isinstance(dtype, str):
        raise CorruptFileError(where("dtype is not a string", tensor=tname, section=sname, field="dtype"))
    if dtype not in _DTYPES:
        raise UnsupportedError(where(f"unknown dtype {dtype!r}", tensor=tname, section=sname, field="dtype"))
    for key, top in (("offset", U64_MAX), ("length", U64_MAX), ("crc32", 0xFFFFFFFF)):
        v = s[key]
        if not _is_int(v) or not 0 <= v <= top:
            raise CorruptFileError(where(f"{v!r} is not an integer in [0, {top}]", tensor=tname,
                                         section=sname, field=key))
    if s["length"] % _DTYPES[dtype][1]:
        raise CorruptFileError(where(f"length {s['length']} is not a multiple of the {dtype} size "
                                     f"{_DTYPES[dtype][1]}", tensor=tname, section=sname, field="length"))
    return _Section(sname, dtype, s["offset"], s["length"], s["crc32"])


def _check_padding(buf, header, where):
    """Every byte between sections is zero (spec §8); at most 63 bytes per section are read."""
    end = 0
    with memoryview(buf) as mv:
        for t in header.tensors.values():
            for s in t.sections:
                if s.offset > end:
                    with mv[header.data_start + end: header.data_start + s.offset] as gap:
                        clean = gap == _ZEROS[: len(gap)]
                    if not clean:
                        raise CorruptFileError(where(
                            f"padding bytes before offset {s.offset} are not zero", tensor=t.name,
                            section=s.name, field="padding"))
                end = s.offset + s.length
