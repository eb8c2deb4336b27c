"""Targeted edits of .dnnz bytes for the corruption catalogue, the golden files and the fuzzers.

Each helper changes one thing and, unless told otherwise, keeps everything else consistent
(header length, padding, header CRC), so that a test hits exactly the check it names.
"""
import json
import signal
import struct
import zlib
from contextlib import contextmanager

PREAMBLE = 32


def split(data):
    hlen = struct.unpack_from("<Q", data, 16)[0]
    return data[:PREAMBLE], data[PREAMBLE:PREAMBLE + hlen], data[PREAMBLE + hlen:]


def header_doc(data):
    _, header, _ = split(data)
    return json.loads(header.rstrip(b" "))


def with_header_text(data, text, fix_crc=True, pad=True):
    """Replace the header with `text` (bytes), padded to the 64-byte boundary and re-checksummed."""
    pre, _, body = split(data)
    if pad:
        text = text + b" " * ((-(PREAMBLE + len(text))) % 64)
    pre = bytearray(pre)
    struct.pack_into("<Q", pre, 16, len(text))
    if fix_crc:
        struct.pack_into("<I", pre, 28, zlib.crc32(text, zlib.crc32(bytes(pre[:28]))) & 0xFFFFFFFF)
    return bytes(pre) + text + body


def with_header(data, edit, fix_crc=True):
    """Apply `edit(doc)` (in place, or returning a new dict) to the parsed header and rewrite it."""
    doc = header_doc(data)
    new = edit(doc)
    doc = new if isinstance(new, dict) else doc
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return with_header_text(data, text, fix_crc=fix_crc)


def fix_header_crc(data):
    pre, header, body = split(data)
    pre = bytearray(pre)
    struct.pack_into("<I", pre, 28, zlib.crc32(header, zlib.crc32(bytes(pre[:28]))) & 0xFFFFFFFF)
    return bytes(pre) + header + body


def set_u(data, offset, fmt, value, fix_crc=False):
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return fix_header_crc(bytes(out)) if fix_crc else bytes(out)


def data_start(data):
    return PREAMBLE + struct.unpack_from("<Q", data, 16)[0]


def section(data, tensor, name):
    for t in header_doc(data)["tensors"]:
        if t["name"] == tensor:
            for s in t["sections"]:
                if s["name"] == name:
                    return s
    raise KeyError((tensor, name))


def edit_section_bytes(data, tensor, name, index, value, fix_crc=True):
    """Set byte `index` of a section to `value`; with fix_crc the stored CRC-32 is updated."""
    s = section(data, tensor, name)
    pos = data_start(data) + s["offset"] + index
    out = bytearray(data)
    out[pos] = value
    out = bytes(out)
    if fix_crc:
        new_crc = zlib.crc32(out[data_start(out) + s["offset"]: data_start(out) + s["offset"] + s["length"]])

        def edit(doc):
            for t in doc["tensors"]:
                for sec in t["sections"]:
                    if t["name"] == tensor and sec["name"] == name:
                        sec["crc32"] = new_crc & 0xFFFFFFFF
        out = with_header(out, edit)
    return out


def sections_of(doc):
    return [s for t in doc["tensors"] for s in t["sections"]]


WATCHDOG_FILE = None  # where the watchdog writes (set by conftest: the terminal, past pytest's capture)
TEST_DEADLINE = None  # time.monotonic() when conftest's per-test limit runs out (None: no limit)


@contextmanager
def deadline(seconds, hard_factor=None):
    """Fail instead of hanging: the per-input time limit of the fuzzers and corruption tests.

    Two layers: SIGALRM raises TimeoutError in the main thread once `seconds` pass, but a Python
    signal handler only runs between bytecodes, so it cannot stop a loop inside one C call (a
    validator walking 2**31 steps). A faulthandler watchdog thread therefore ends the whole
    process after `seconds * hard_factor` (default 3, or DNNZ_TEST_HARD_TIMEOUT_FACTOR), printing
    every thread's traceback: a hang fails CI loudly instead of stalling it.
    """
    import faulthandler
    import os
    import sys
    if hard_factor is None:
        hard_factor = float(os.environ.get("DNNZ_TEST_HARD_TIMEOUT_FACTOR", "3"))

    def boom(signum, frame):
        raise TimeoutError(f"reader took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds * hard_factor, exit=True, file=WATCHDOG_FILE or sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()  # faulthandler has one timer: hand it back
        if TEST_DEADLINE is not None:  # to conftest's per-test limit, for the rest of the test
            import time
            faulthandler.dump_traceback_later(max(1.0, TEST_DEADLINE - time.monotonic()), exit=True,
                                              file=WATCHDOG_FILE or sys.__stderr__)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
