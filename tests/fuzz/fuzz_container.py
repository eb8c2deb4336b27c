"""Long-running coverage-guided fuzzing of the .dnnz reader with atheris (optional; not run by CI).

    pip install atheris
    python tests/fuzz/fuzz_container.py -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 \
        tests/fuzz/corpus

Every input must end in a correct load or a pydnnz DnnzError; anything else (another exception,
a crash, a hang past -timeout) is a bug, and libFuzzer saves the input as crash-*/timeout-*.
The corpus folder is seeded from the golden files and the spec examples on the first run.
See tests/README.md.
"""
import os
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

with atheris.instrument_imports():
    import numpy as np
    from pydnnz import container
    from pydnnz.errors import DnnzError
    try:
        import pydnnz.encodings  # noqa: F401  (instrumented too: their validation is fuzzed)
    except ImportError:
        pass

import pydnnz  # noqa: E402

# A mutated header can claim a huge shape: decoding past this limit raises DnnzMemoryError (a
# DnnzError, so an allowed outcome) instead of tripping -rss_limit_mb.
pydnnz.set_max_decoded_bytes(int(os.environ.get("DNNZ_FUZZ_MAX_DECODED", 64 << 20)))

import _container_edit as E  # noqa: E402
import _container_fake as fake  # noqa: E402

SEEDS = [p.read_bytes() for p in sorted((ROOT / "tests" / "golden" / "valid").glob("*.dnnz")) +
         sorted((ROOT / "spec" / "examples").glob("*.dnnz"))]


def with_repaired_crcs(data):
    """Recompute every section CRC and the header CRC, so the checks behind them are reached."""
    import json
    import zlib
    try:
        doc = json.loads(E.split(data)[1].rstrip(b" "))
        start = E.data_start(data)
        for t in doc["tensors"]:
            for s in t["sections"]:
                s["crc32"] = zlib.crc32(data[start + s["offset"]: start + s["offset"] + s["length"]])
        return E.with_header(data, lambda d: doc)
    except Exception:
        return E.fix_header_crc(data) if len(data) >= 32 else data


def seed_corpus(folder):
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    for src in list((ROOT / "tests" / "golden" / "valid").glob("*.dnnz")) + \
            list((ROOT / "spec" / "examples").glob("*.dnnz")):
        data = src.read_bytes()
        (folder / src.name).write_bytes(b"\x00" + data)
        (folder / ("crc-" + src.name)).write_bytes(b"\x03" + data)
        (folder / ("json-" + src.name)).write_bytes(b"\x02\x00" + E.split(data)[1].rstrip(b" "))


def test_one_input(raw):
    # The first byte picks a mode: 0-1 the input is the file; 2 the input is a header JSON text put
    # in front of a seed's data area, CRC repaired; 3 the input is the file with CRCs repaired.
    mode, body = (raw[0] % 4, raw[1:]) if raw else (0, raw)
    if mode == 2 and SEEDS and len(body) > 1:
        seed = SEEDS[body[0] % len(SEEDS)]
        data = E.with_header_text(seed, bytes(body[1:]))
    elif mode == 3:
        data = with_repaired_crcs(bytes(body))
    else:
        data = bytes(body)
    with fake.registered():
        try:
            f = container.load(data)
            for name in f:
                t = f[name]
                if hasattr(t, "decode"):
                    t.decode()
                if hasattr(t, "matmul") and hasattr(t, "matrix_shape") and max(t.matrix_shape) <= 1 << 16:
                    t.matmul(np.ones((2, t.matrix_shape[1]), np.float32))
            container.verify(data)
        except DnnzError:
            pass


def main():
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    for folder in corpus:
        seed_corpus(Path(folder))
    if not corpus:
        default = HERE / "corpus"
        seed_corpus(default)
        sys.argv.append(str(default))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
