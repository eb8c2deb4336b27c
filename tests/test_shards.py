"""Sharded checkpoints (pydnnz.shards): streaming compress/convert, identical bytes for any worker
count (and Ray when installed), resume after an interruption, the index file, bad inputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pydnnz
from pydnnz import shards
from pydnnz.container import BFloat16Tensor, save_file, verify
from pydnnz.errors import ChecksumError, CorruptFileError, DnnzError, UnsupportedVersionError

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(folder, n_shards=2, per_shard=3, dtype="bfloat16", seed=0):
    """A tiny Hugging Face style sharded checkpoint: LLM-like names, bf16 matrices and norms."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map, expected = {}, {}
    for s in range(n_shards):
        tensors = {}
        for j in range(per_shard):
            layer = s * per_shard + j
            w = rng.normal(0, 0.02, (24 + 8 * j, 16)).astype(np.float32)
            norm = (1 + rng.normal(0, 0.1, 16)).astype(np.float32)
            for name, a in ((f"model.layers.{layer}.mlp.up_proj.weight", w),
                            (f"model.layers.{layer}.input_layernorm.weight", norm)):
                if dtype == "bfloat16":
                    bits = BFloat16Tensor.from_float32(a).bits
                    tensors[name] = ("bfloat16", bits)
                    expected[name] = BFloat16Tensor(bits)
                else:
                    tensors[name] = ("float32", a)
                    expected[name] = a
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        shards.write_safetensors(folder / fname, tensors, {"format": "pt"})
        weight_map.update({k: fname for k in tensors})
    shards.write_index_safetensors(folder, weight_map, sum(np.asarray(v[1]).nbytes for v in tensors.values()))
    return folder, expected


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


UQ16 = shards.Recipe(quantize="uq", k=16)


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "ckpt")


def test_identical_bytes_for_1_and_2_workers(ckpt, tmp_path):
    src, _ = ckpt
    a = shards.compress_checkpoint(src, tmp_path / "w1", UQ16, workers=1)
    b = shards.compress_checkpoint(src, tmp_path / "w2", UQ16, workers=2)
    assert a["compressed"] == b["compressed"] == 6 and a["shards"] == 2
    assert b["engine"] == "pool" and b["workers"] == 2
    shards.compress_checkpoint(src, tmp_path / "m", UQ16, workers=2, max_memory=1)  # one task at a time
    fa, fb = files_of(tmp_path / "w1"), files_of(tmp_path / "w2")
    assert sorted(fa) == ["model-00001-of-00002.dnnz", "model-00002-of-00002.dnnz", shards.INDEX_NAME]
    assert fa == fb == files_of(tmp_path / "m")


def test_parse_size():
    assert shards.parse_size("2G") == 2 << 30 and shards.parse_size("512MiB") == 512 << 20
    assert shards.parse_size("1.5gb") == 3 << 29 and shards.parse_size(1000) == 1000
    for bad in ("", "x", "-1G", "0", "nanM"):
        with pytest.raises(pydnnz.InvalidArgumentError):
            shards.parse_size(bad)


def test_sharded_output_reads_back(ckpt, tmp_path):
    src, expected = ckpt
    out = tmp_path / "out"
    shards.compress_checkpoint(src, out, UQ16, workers=1)
    for path in (out, out / shards.INDEX_NAME):  # the folder or its index file
        f = pydnnz.load_file(path)
        assert list(f) == list(expected)
        assert f.shard_of("model.layers.4.mlp.up_proj.weight") == "model-00002-of-00002.dnnz"
        for name, want in expected.items():
            got = f[name]
            if "layernorm" in name:  # left raw, bit for bit (bf16 stays bf16)
                assert got == want
            else:  # quantized with k=16 levels, from the bf16 values
                dec = got.decode()
                assert dec.shape == want.shape and len(np.unique(dec)) <= 16
                assert np.abs(dec - np.asarray(want)).max() <= np.abs(np.asarray(want)).max() / 8
    with pydnnz.safe_open(out / shards.INDEX_NAME) as f:
        assert len(f.keys()) == 12 and "pydnnz.recipe" in f.metadata()
        assert f.info("model.layers.0.mlp.up_proj.weight")["shard"] == "model-00001-of-00002.dnnz"
    assert verify(out).tensors == 12


def test_same_tensors_as_single_file_compress(tmp_path):
    """Streaming gives each tensor exactly what `dnnz compress` (in memory, per layer) gives it."""
    src, _ = make_checkpoint(tmp_path / "f32", n_shards=1, dtype="float32")
    single = src / "model-00001-of-00001.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "pydnnz", "compress", str(single), "-o", str(tmp_path / "a.dnnz"),
                        "--quantize", "uq", "--k", "16"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    shards.compress_checkpoint(src, tmp_path / "b", UQ16, workers=1)
    a, b = pydnnz.load_file(tmp_path / "a.dnnz"), pydnnz.load_file(tmp_path / "b")
    assert sorted(a) == sorted(b)  # safetensors reads in name order, the stream in file order
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y)
        else:
            assert (x.encoding, x.params) == (y.encoding, y.params)
            assert all(np.array_equal(x.sections[k], y.sections[k]) for k in x.sections)


def test_shard_writer_matches_save_file(tmp_path):
    rng = np.random.default_rng(3)
    q = pydnnz.compress.uq(rng.normal(size=(20, 12)).astype(np.float32), 8)
    tensors = {"a": rng.normal(size=(3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int16),
               "c": pydnnz.encode(q), "d": BFloat16Tensor(np.arange(6, dtype=np.uint16)),
               "e": np.array([True, False, True])}
    save_file(tensors, tmp_path / "ref.dnnz", {"m": "v"})
    w = shards.ShardWriter(tmp_path / "s.dnnz", {"m": "v"})
    for k, v in tensors.items():
        w.add(k, v)
    w.finish()
    assert (tmp_path / "s.dnnz").read_bytes() == (tmp_path / "ref.dnnz").read_bytes()
    # and streamed raw copies from a file: same bytes again
    refs, _ = shards.open_source(tmp_path / "ref.dnnz").shards[0][1], None
    w = shards.ShardWriter(tmp_path / "t.dnnz", {"m": "v"})
    for r in refs:
        if r.encoding == "raw":
            w.add_raw_ref(r)
        else:
            w.add(r.name, pydnnz.load_file(tmp_path / "ref.dnnz")[r.name])
    w.finish()
    assert (tmp_path / "t.dnnz").read_bytes() == (tmp_path / "ref.dnnz").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_interruption(ckpt, tmp_path):
    src, _ = ckpt
    shards.compress_checkpoint(src, tmp_path / "ref", UQ16, workers=1)
    out = tmp_path / "out"

    def stop(i, path):  # the run is killed right after its first shard
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shards.compress_checkpoint(src, out, UQ16, workers=2, on_shard=stop)
    left = sorted(p.name for p in out.iterdir())
    assert left == ["model-00001-of-00002.dnnz"]  # complete shard, no index, no temporary file
    first = (out / left[0]).stat().st_mtime_ns
    (out / ".model-00002-of-00002.dnnz.x1y2.tmp").write_bytes(b"half")  # left by a kill -9
    s = shards.compress_checkpoint(src, out, UQ16, workers=2)
    assert s["reused"] == ["model-00001-of-00002.dnnz"] and s["written"] == ["model-00002-of-00002.dnnz"]
    assert (out / left[0]).stat().st_mtime_ns == first
    assert files_of(out) == files_of(tmp_path / "ref")


def test_resume_redoes_damaged_or_stale_shards(ckpt, tmp_path):
    src, _ = ckpt
    out = tmp_path / "out"
    shards.compress_checkpoint(src, out, UQ16, workers=1)
    ref = files_of(out)
    (out / shards.INDEX_NAME).unlink()  # as if interrupted before the index
    shard = out / "model-00002-of-00002.dnnz"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40  # a flipped bit in the last section: fails its CRC-32
    shard.write_bytes(bytes(data))
    s = shards.compress_checkpoint(src, out, UQ16, workers=1)
    assert s["reused"] == ["model-00001-of-00002.dnnz"] and s["written"] == ["model-00002-of-00002.dnnz"]
    assert files_of(out) == ref
    # a different recipe does not reuse shards made by another
    (out / shards.INDEX_NAME).unlink()
    s = shards.compress_checkpoint(src, out, shards.Recipe(quantize="uq", k=8), workers=1)
    assert s["reused"] == [] and len(s["written"]) == 2
    with pytest.raises(FileExistsError):
        shards.compress_checkpoint(src, out, UQ16, workers=1)


def test_cli_compress_convert_verify(ckpt, tmp_path):
    src, expected = ckpt
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def dnnz(*args):
        return subprocess.run([sys.executable, "-m", "pydnnz", *map(str, args)], capture_output=True,
                              text=True, env=env)

    r = dnnz("compress", src / "model.safetensors.index.json", "-o", tmp_path / "c", "--quantize", "uq",
             "--k", "16", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "12 tensors, 6 compressed, 2 shard(s)" in r.stdout
    assert files_of(tmp_path / "c") == files_of(_api(src, tmp_path / "api", UQ16))
    assert dnnz("verify", tmp_path / "c" / shards.INDEX_NAME).returncode == 0
    r = dnnz("compress", src, "-o", tmp_path / "c", "--quantize", "uq")
    assert r.returncode == 2 and "already exists" in r.stderr
    for bad in (["--unified"], ["--workers", "0"], ["--layers", "nothing*"], ["--max-memory", "lots"]):
        r = dnnz("compress", src, "-o", tmp_path / "d", "--quantize", "uq", *bad)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # convert: sharded safetensors -> sharded raw .dnnz -> one .dnnz file, bits unchanged
    assert dnnz("convert", src, tmp_path / "raw").returncode == 0
    assert dnnz("convert", tmp_path / "raw", tmp_path / "one.dnnz").returncode == 0
    one = pydnnz.load_file(tmp_path / "one.dnnz")
    assert list(one) == list(expected) and all(one[k] == v for k, v in expected.items())
    r = dnnz("convert", src, tmp_path / "x.npz")
    assert r.returncode == 2 and "converts to .dnnz" in r.stderr


def _api(src, out, recipe):
    shards.compress_checkpoint(src, out, recipe, workers=1)
    return out


def test_load_model_from_sharded_output(tmp_path):
    torch = pytest.importorskip("torch")
    import pydnnz.torch as pt

    torch.manual_seed(0)

    def build():
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8))

    model = build()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    folder = tmp_path / "ck"
    folder.mkdir()
    halves = [["0.weight", "0.bias", "1.weight"], ["1.bias", "2.weight", "2.bias"]]
    wm = {}
    for i, names in enumerate(halves):
        f = f"model-{i + 1:05d}-of-00002.safetensors"
        shards.write_safetensors(folder / f, {n: ("float32", sd[n]) for n in names})
        wm.update({n: f for n in names})
    shards.write_index_safetensors(folder, wm, 0)
    shards.compress_checkpoint(folder, tmp_path / "out", shards.Recipe(quantize="cws", k=8), workers=1)
    loaded = pt.load_model(tmp_path / "out", build())
    assert type(loaded[0]).__name__ == "CompressedLinear" and type(loaded[2]).__name__ == "CompressedLinear"
    f = pydnnz.load_file(tmp_path / "out")
    dense = build()
    dense.load_state_dict({k: torch.from_numpy(np.array(f[k].decode() if hasattr(f[k], "decode") else f[k]))
                           for k in sd})
    x = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), dense(x), atol=1e-5)
    with torch.device("meta"):
        skeleton = build()
    meta_loaded = pt.load_model(tmp_path / "out" / shards.INDEX_NAME, skeleton)
    with torch.no_grad():
        assert torch.allclose(meta_loaded(x), dense(x), atol=1e-5)


# ---------------------------------------------------------------------------------- bad inputs
def _finished(ckpt, tmp_path):
    src, _ = ckpt
    out = tmp_path / "out"
    shards.compress_checkpoint(src, out, UQ16, workers=1)
    return out, out / shards.INDEX_NAME


def _edit(index, fn):
    doc = json.loads(index.read_text())
    fn(doc)
    index.write_text(json.dumps(doc))


@pytest.mark.parametrize("damage, match", [
    (lambda d: d["weight_map"].update({"ghost": "model-00001-of-00002.dnnz"}), "should hold|does not match"),
    (lambda d: d["weight_map"].update({"model.layers.0.mlp.up_proj.weight": "../../etc/passwd"}), "plain file name"),
    (lambda d: d["shards"][1].update({"size": 5}), "the index says|total_size"),
    (lambda d: d.update({"total_size": 1}), "total_size"),
    (lambda d: d.pop("weight_map"), "weight_map"),
    (lambda d: d["shards"][0].update({"file": "model-00002-of-00002.dnnz"}), "listed twice"),
    (lambda d: d.update({"extra": 1}), "unknown key"),
    (lambda d: d.update({"version": "1"}), "version"),
])
def test_bad_index_is_a_clear_error(ckpt, tmp_path, damage, match):
    _, index = _finished(ckpt, tmp_path)
    _edit(index, damage)
    with pytest.raises(CorruptFileError, match=match):
        pydnnz.load_file(index)


def test_bad_index_other_cases(ckpt, tmp_path):
    out, index = _finished(ckpt, tmp_path)
    good = index.read_text()
    _edit(index, lambda d: d.update({"version": 2}))
    with pytest.raises(UnsupportedVersionError):
        pydnnz.load_file(out)
    for text in ("{not json", "[]", '{"a": 1, "a": 2}', '{"weight_map": {"x": "a.dnnz"}, "w": NaN}'):
        index.write_text(text)
        with pytest.raises(CorruptFileError):
            pydnnz.load_file(index)
    index.write_text(good)
    (out / "model-00002-of-00002.dnnz").unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        pydnnz.load_file(index)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "pydnnz", "verify", str(index)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_sources(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(DnnzError, match="past the end"):
        shards.open_source(p)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}).encode()
    p.write_bytes(len(header).to_bytes(8, "little") + header + bytes(32))
    with pytest.raises(CorruptFileError, match="need 16"):
        shards.open_source(p)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    p.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(DnnzError, match="past the end"):
        shards.open_source(p)
    # a .dnnz source whose raw tensor was damaged: the copy checks the CRC-32
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, tmp_path / "m.dnnz")
    data = bytearray((tmp_path / "m.dnnz").read_bytes())
    data[-1] ^= 1
    (tmp_path / "m.dnnz").write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        shards.compress_checkpoint(tmp_path / "m.dnnz", tmp_path / "o", shards.Recipe(encoding=None), workers=1)
    with pytest.raises(ChecksumError):
        shards.compress_checkpoint(tmp_path / "m.dnnz", tmp_path / "o2", UQ16, workers=1)
    assert not (tmp_path / "o" / shards.INDEX_NAME).exists()


# ---------------------------------------------------------------------------------- Ray
@pytest.mark.slow  # starting a local Ray instance takes ~15 s; DNNZ_SLOW_TESTS=1 runs it
def test_ray_same_bytes_and_retry(ckpt, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    src, _ = ckpt
    shards.compress_checkpoint(src, tmp_path / "pool", UQ16, workers=2)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("DNNZ_TEST_CRASH_ONCE", str(tmp_path / "crashed"))  # the first task's worker dies
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "DNNZ_TEST_CRASH_ONCE": str(tmp_path / "crashed")}})
    try:
        s = shards.compress_checkpoint(src, tmp_path / "ray", UQ16, ray=None)
    finally:
        ray.shutdown()
    assert s["engine"] == "ray"
    assert (tmp_path / "crashed").exists()  # a task did die, and was retried
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "pool")
