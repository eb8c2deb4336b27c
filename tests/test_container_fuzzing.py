"""Mutation fuzzing of the reader (bitarray / safetensors style): flipped, truncated, extended and
spliced files, and header or section edits with their checksums repaired so that the checks
behind the CRCs are reached too. The only outcomes allowed are a correct load (every tensor
readable, and equal to the original when no checksum was repaired) or a DnnzError: no other
exception, no crash, no hang."""
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydnnz import container
from pydnnz.container import BFloat16Tensor, load, save
from pydnnz.errors import DnnzError

import _container_edit as E
import _container_fake as fake

ROOT = Path(__file__).resolve().parent.parent


def _corpus():
    files = [p.read_bytes() for p in sorted((ROOT / "tests" / "golden" / "valid").glob("*.dnnz"))]
    files.append((ROOT / "spec" / "examples" / "example.dnnz").read_bytes())
    files.append(save({
        "w": np.linspace(-1, 1, 40, dtype=np.float32).reshape(5, 8),
        "q": fake.FakeEncoded((3, 4), np.array([0, 1.5, 2], np.float32),
                              np.array([0, 1, 0, 1, 2, 0, 0, 0, 0, 0, 1, 2], np.uint8)),
        "m": np.array([True, False]),
        "z": np.zeros((0,), np.int64),
    }, {"k": "v"}))
    try:  # one small file per real encoding, when pydnnz.encodings is there
        import pydnnz
        from pydnnz.encodings import encodings
    except ImportError:
        return files
    m = np.array([[0, 1.5, 0, 1.5, 0], [2, 0, 0, 0, -1], [0, 0, 1.5, 2, 0]], np.float32)
    for name in encodings():
        files.append(save({"w": pydnnz.encode(m, name), "b": np.ones(3, np.float32)}))
    return files


CORPUS = _corpus()


def snapshot(f):
    """A comparable picture of every tensor in a loaded file."""
    out = {}
    for name in f:
        t = f[name]
        if isinstance(t, BFloat16Tensor):
            out[name] = ("bf16", t.bits.shape, t.bits.tobytes())
        elif isinstance(t, np.ndarray):
            out[name] = (t.dtype.str, t.shape, t.tobytes())
        else:
            out[name] = (t.encoding, tuple(t.shape), t.decode().tobytes(), sorted(t.params.items(), key=str))
    return out


with fake.registered():
    ORIGINALS = [(load(d).metadata, snapshot(load(d))) for d in CORPUS]


# Per input: 10 s (SIGALRM), and the process ends after 30 s even inside a C call (a hang fails CI).
# A mutated header can claim a huge shape: decoding is capped well below the default 4 GiB limit,
# so such an input ends in DnnzMemoryError instead of exhausting the CI machine.
INPUT_SECONDS = 10
MAX_DECODED = 64 << 20


def outcome(data):
    """None on a DnnzError, else (metadata, snapshot) after reading everything and verifying."""
    import pydnnz
    old = pydnnz.get_max_decoded_bytes()
    pydnnz.set_max_decoded_bytes(MAX_DECODED)
    try:
        return _outcome(data)
    finally:
        pydnnz.set_max_decoded_bytes(old)


def _outcome(data):
    with E.deadline(INPUT_SECONDS), fake.registered():
        try:
            f = load(data)
            snap = snapshot(f)
            container.verify(data)
            return f.metadata, snap
        except DnnzError:
            return None


def mutate(rng, data, donors):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "flip", "set", "truncate", "extend", "splice", "insert", "delete"])
        if kind == "flip" and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif kind == "set" and data:
            i = rng.randrange(len(data))
            data[i:i + 8] = rng.randbytes(min(8, len(data) - i))
        elif kind == "truncate":
            del data[rng.randrange(len(data) + 1):]
        elif kind == "extend":
            data += rng.choice([bytes(rng.randrange(1, 130)), rng.randbytes(rng.randrange(1, 70))])
        elif kind == "splice":
            donor = rng.choice(donors)
            a = rng.randrange(len(donor) + 1)
            chunk = donor[a:a + rng.randrange(1, 200)]
            i = rng.randrange(len(data) + 1)
            data[i:i + len(chunk)] = chunk
        elif kind == "insert":
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif kind == "delete" and data:
            i = rng.randrange(len(data))
            del data[i:i + rng.randrange(1, 16)]
    return bytes(data)


def check_blind_mutation(index, mutated):
    got = outcome(mutated)
    if got is not None:
        # Every byte is under a CRC or checked to be zero: a load that succeeds is the original.
        assert got == ORIGINALS[index], "mutated file loaded to different contents"


@settings(max_examples=600)
@given(st.integers(0, len(CORPUS) - 1), st.randoms(use_true_random=False))
def test_blind_mutations_load_correctly_or_raise(index, rnd):
    check_blind_mutation(index, mutate(rnd, CORPUS[index], CORPUS))


@settings(max_examples=400)
@given(st.integers(0, len(CORPUS) - 1), st.randoms(use_true_random=False))
def test_header_mutations_with_repaired_crc(index, rnd):
    """Edit the JSON text itself, then repair padding, length and CRC: the JSON checks must hold."""
    data = CORPUS[index]
    text = bytearray(E.split(data)[1].rstrip(b" "))
    for _ in range(rnd.randint(1, 3)):
        i = rnd.randrange(len(text))
        choice = rnd.random()
        if choice < 0.4:
            text[i] = rnd.choice(b'0123456789-{}[]":,.eE truefalsnul\\x')
        elif choice < 0.6:
            del text[i:i + rnd.randrange(1, 6)]
        elif choice < 0.8:
            text[i:i] = rnd.choice([b"9", b"0", b"-1", b"99999999999999999999", b'"', b"{}", b"[]", b",", b"1e400"])
        else:
            text[i] ^= 1 << rnd.randrange(8)
    outcome(E.with_header_text(data, bytes(text)))


@settings(max_examples=300)
@given(st.integers(0, len(CORPUS) - 1), st.randoms(use_true_random=False))
def test_structured_header_edits(index, rnd):
    """Change one JSON value to a hostile one, keeping the JSON valid and the CRC right."""
    data = CORPUS[index]
    doc = E.header_doc(data)
    hostile = [None, True, -1, 0, 1, 63, 64, 2**31, 2**63, 2**64, 2**64 + 1, 1.5, "", "x" * 2000,
               "float32", "bool", "raw", "fake_codebook", [], [0], [2**40, 2**40], {}, {"a": 1}]
    targets = [doc]
    for t in doc["tensors"]:
        targets.append(t)
        targets.extend(t["sections"])
    target = rnd.choice(targets)
    keys = list(target) + ["extra"]
    target[rnd.choice(keys)] = rnd.choice(hostile)
    outcome(E.with_header(data, lambda d: doc))


@settings(max_examples=300)
@given(st.integers(0, len(CORPUS) - 1), st.randoms(use_true_random=False))
def test_section_mutations_with_repaired_crc(index, rnd):
    """Change section bytes and repair their CRC: the dtype and encoding checks must hold."""
    data = CORPUS[index]
    secs = [(t["name"], s["name"], s["length"]) for t in E.header_doc(data)["tensors"]
            for s in t["sections"] if s["length"]]
    if not secs:
        return
    tname, sname, length = rnd.choice(secs)
    for _ in range(rnd.randint(1, 3)):
        data = E.edit_section_bytes(data, tname, sname, rnd.randrange(length), rnd.randrange(256))
    outcome(data)


def test_seeded_blind_mutations():
    """Thousands of cheap blind mutations with a fixed seed (reproducible, no shrinking needed)."""
    rng = random.Random(20261125)
    for n in range(3000):
        index = rng.randrange(len(CORPUS))
        mutated = mutate(rng, CORPUS[index], CORPUS)
        try:
            check_blind_mutation(index, mutated)
        except AssertionError:
            raise
        except Exception as exc:  # pragma: no cover - shows the failing input
            pytest.fail(f"case {n}: {type(exc).__name__}: {exc}; input {mutated!r}")


def test_every_prefix_and_every_single_bit_flip_of_the_example():
    data = (ROOT / "spec" / "examples" / "example.dnnz").read_bytes()
    index = CORPUS.index(data)
    for n in range(len(data)):
        assert outcome(data[:n]) is None
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            assert outcome(bytes(flipped)) is None, (i, bit)
    assert outcome(data) == ORIGINALS[index]
