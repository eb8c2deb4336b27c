"""Real third-party checkpoints through `dnnz compress`, as a user would run it.

    python -m bench.checkpoints                 # every checkpoint whose wheel is installed
    python -m bench.checkpoints --models resemblyzer ccexam-svhn --recipes default pr_cws

The checkpoints are the wheels of ../shared/reference/checkpoints.md (install them with
`pip install --no-deps NAME==VER`; their packages are never imported, only their weight files are
found with importlib.util.find_spec). For each model and recipe this prints: input and output file
size, the compress time, how many float weight tensors (2+ dims) stayed raw, and a metric before /
after compression:

- resemblyzer: the speaker encoder rebuilt from its state dict (3-layer LSTM 40->256 + Linear 256,
  as in resemblyzer/voice_encoder.py); metric = mean cosine between the dense and the compressed
  model's embeddings of 16 random 160-frame mel inputs (before: 1 by definition).
- ONNX models: the .dnnz converted back through the original as template (`dnnz convert
  x.dnnz y.onnx --template x.onnx`) and both run in onnxruntime on the same random input; metric =
  cosine of their outputs, all concatenated (before: 1 by definition).
- TensorFlow Lite models (MediaPipe, basic-pitch): read only, no runtime here: SNR only.
- pesto's .ckpt needs full pickle: dnnz compress refuses it (exit 1, one line); the bench then does
  what that line says, extracting the state dict in a throwaway process, and compresses that.
- every model: the weight-level output SNR in dB of the compressed layers, 10*log10(|XW|^2 /
  |X(W - W')|^2) for Gaussian X, worst layer (lossless: inf).

Times are one run on this machine (compare recipes within a run, not across machines).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # python bench/checkpoints.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHECKPOINTS = {  # name -> (package, file inside it)
    "silero-vad": ("silero_vad", "data/silero_vad_16k.safetensors"),
    "resemblyzer": ("resemblyzer", "pretrained.pt"),
    "torchfcpe": ("torchfcpe", "assets/fcpe_c_v001.pt"),
    "ccexam-svhn": ("ccexam", "weights/svhn.pth"),
    "ccexam-usps": ("ccexam", "weights/usps.pth"),
    "basic-pitch-onnx": ("basic_pitch", "saved_models/icassp_2022/nmp.onnx"),
    "swift-f0-onnx": ("swift_f0", "model.onnx"),
    "silero-vad-half-onnx": ("silero_vad", "data/silero_vad_half.onnx"),
    "silero-vad-onnx": ("silero_vad", "data/silero_vad.onnx"),  # every weight a Constant inside If branches
    "silero-vad-ifless-onnx": ("silero_vad", "data/silero_vad_op18_ifless.onnx"),  # outer-scope initializers
    "silero-vad-openvino-onnx": ("silero_vad", "data/silero_vad_openvino_16k.onnx"),  # Constants, no initializer
    "silero-vad-op15-onnx": ("silero_vad", "data/silero_vad_16k_op15.onnx"),
    "silero-vad-sequence-onnx": ("silero_vad", "data/silero_vad_16k_sequence.onnx"),
    "pesto-ckpt": ("pesto", "weights/mir-1k_g7.ckpt"),  # needs full pickle: refused, then via a state dict
    "basic-pitch-tflite": ("basic_pitch", "saved_models/icassp_2022/nmp.tflite"),
}
CHECKPOINTS.update({f"mediapipe-{Path(rel).stem.replace('_', '-')}": ("mediapipe", f"modules/{rel}") for rel in (
    "face_detection/face_detection_short_range.tflite", "face_detection/face_detection_full_range_sparse.tflite",
    "face_landmark/face_landmark.tflite", "face_landmark/face_landmark_with_attention.tflite",
    "hand_landmark/hand_landmark_lite.tflite", "hand_landmark/hand_landmark_full.tflite",
    "holistic_landmark/hand_recrop.tflite", "iris_landmark/iris_landmark.tflite",
    "palm_detection/palm_detection_lite.tflite", "palm_detection/palm_detection_full.tflite",
    "pose_detection/pose_detection.tflite", "pose_landmark/pose_landmark_full.tflite",
    "selfie_segmentation/selfie_segmentation.tflite", "selfie_segmentation/selfie_segmentation_landscape.tflite")})

#: A checkpoint that only full pickle loads is refused by dnnz compress (pydnnz.convert.UNTRUSTED_PICKLE);
#: the user who trusts it extracts the state dict once, in a throwaway process, as the refusal says.
EXTRACT = ("import sys, torch; sd = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
           "torch.save(sd.get('state_dict', sd), sys.argv[2])")

RECIPES = {
    "default": [],
    "cws": ["--quantize", "cws", "--k", "32"],
    "pr_cws": ["--quantize", "cws", "--k", "32", "--prune", "90"],
    "uq256": ["--quantize", "uq", "--k", "256"],
}


def find(name):
    pkg, rel = CHECKPOINTS[name]
    spec = importlib.util.find_spec(pkg)  # locates the package without executing it
    if spec is None or spec.origin is None:
        return None
    path = Path(os.path.dirname(spec.origin)) / rel
    return path if path.is_file() else None


def layer_snr(dense: dict, compressed: dict, names, seed=0):
    """Worst output SNR (dB) over `names`: X @ W.T against X @ W'.T for Gaussian X."""
    rng = np.random.default_rng(seed)
    worst = math.inf
    for n in names:
        w = np.asarray(dense[n], np.float32).reshape(dense[n].shape[0], -1)
        q = np.asarray(compressed[n], np.float32).reshape(w.shape)
        x = rng.standard_normal((64, w.shape[1])).astype(np.float32)
        sig, err = float(np.sum((x @ w.T) ** 2)), float(np.sum((x @ (w - q).T) ** 2))
        if err > 0:
            worst = min(worst, 10 * math.log10(sig / err) if sig > 0 else -math.inf)
    return worst


def resemblyzer_cosine(dense: dict, compressed: dict):
    """Mean cosine of the speaker embeddings, dense vs compressed weights (same architecture)."""
    import torch

    def build(sd):
        lstm, lin = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
        pre = "model_state."
        lstm.load_state_dict({k[len(pre) + 5:]: torch.from_numpy(np.array(v, np.float32))
                              for k, v in sd.items() if k.startswith(pre + "lstm.")})
        lin.load_state_dict({k[len(pre) + 7:]: torch.from_numpy(np.array(v, np.float32))
                             for k, v in sd.items() if k.startswith(pre + "linear.")})

        def embed(mels):
            _, (h, _) = lstm(mels)
            e = torch.relu(lin(h[-1]))
            return e / torch.norm(e, dim=1, keepdim=True)
        return embed

    mels = torch.from_numpy(np.random.default_rng(0).random((16, 160, 40), dtype=np.float32))
    with torch.no_grad():
        a, b = build(dense)(mels), build(compressed)(mels)
    return float(torch.nn.functional.cosine_similarity(a, b).mean())


def onnx_cosine(original, rebuilt, seed=0):
    """Cosine between the outputs (all of them, concatenated) of two ONNX models on one random input."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
    outs = []
    for path in (original, rebuilt):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {}
        rng = np.random.default_rng(seed)
        for i in sess.get_inputs():
            # symbolic sizes: 1 (batch, states), except 512 samples along the last axis of a 2-D (audio) input
            shape = [d if isinstance(d, int) else (512 if a == len(i.shape) - 1 == 1 else 1)
                     for a, d in enumerate(i.shape)]
            dt = types[i.type]
            # an int64 input is a sample rate in these models; floats are audio or states
            feeds[i.name] = np.full(shape, 16000, dt) if dt == np.int64 else rng.standard_normal(shape).astype(dt)
        # every output (silero's first is one probability, whose cosine is 1 for any positive value)
        outs.append(np.concatenate([np.asarray(o, np.float64).ravel() for o in sess.run(None, feeds)]))
    a, b = outs
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def run_one(name, recipe, workdir):
    from pydnnz.cli import main
    from pydnnz.convert import read_tensors

    src = find(name)
    dst = Path(workdir) / f"{name}-{recipe}.dnnz"
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(["compress", str(src), "-o", str(dst), "--force", *RECIPES[recipe]])
    seconds = time.perf_counter() - t0
    rec = {"model": name, "recipe": recipe, "rc": rc, "input_bytes": src.stat().st_size, "seconds": seconds}
    if rc != 0 and src.suffix == ".ckpt" and "never runs pickle code" in err.getvalue():
        import subprocess

        # the documented way out: the user trusts the file and extracts its state dict in a throwaway process
        rec["refused"] = err.getvalue().strip().splitlines()[0][:160] + " ..."
        extracted = Path(workdir) / f"{name}-state_dict.pt"
        subprocess.run([sys.executable, "-c", EXTRACT, str(src), str(extracted)], check=True, timeout=300)
        src = extracted
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
            rc = main(["compress", str(src), "-o", str(dst), "--force", *RECIPES[recipe]])
        rec.update(rc=rc, seconds=time.perf_counter() - t0, via="state dict extracted in a throwaway process")
    if rc != 0:
        rec["error"] = err.getvalue().strip()
        return rec
    dense, _ = read_tensors(src)
    comp, meta = read_tensors(dst)
    chosen = json.loads(meta["pydnnz.recipe"])["layers"]
    weights = [k for k, v in dense.items() if v.ndim >= 2 and v.dtype.kind == "f" and v.size]
    rec.update(output_bytes=dst.stat().st_size, compressed=len(chosen),
               left_raw=sorted(set(weights) - set(chosen)), snr_db=layer_snr(dense, comp, chosen))
    if src.suffix == ".onnx":
        rebuilt = Path(workdir) / f"{name}-{recipe}.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            main(["convert", str(dst), str(rebuilt), "--template", str(src), "--force"])
        rec["metric"] = "output cosine (onnxruntime)"
        try:
            rec["before"], rec["after"] = 1.0, onnx_cosine(src, rebuilt)
        except Exception as exc:  # a model whose inputs this generic driver cannot guess
            rec["metric"] += f" not run: {type(exc).__name__}"
            rec["before"] = rec["after"] = float("nan")
    if name == "resemblyzer":
        rec["metric"] = "embedding cosine"
        rec["before"], rec["after"] = 1.0, resemblyzer_cosine(dense, comp)
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(CHECKPOINTS), choices=list(CHECKPOINTS))
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines")
    args = p.parse_args(argv)
    records = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            if find(name) is None:
                print(f"{name}: wheel not installed (see ../shared/reference/checkpoints.md), skipped")
                continue
            for recipe in args.recipes:
                rec = run_one(name, recipe, work)
                records.append(rec)
                if rec["rc"]:
                    print(f"{name:12s} {recipe:8s} FAILED (exit {rec['rc']}): {rec['error']}")
                    continue
                if "refused" in rec:
                    print(f"{name:12s} {recipe:8s} refused as expected ({rec['refused']}); {rec['via']}:")
                metric = (f"{rec['metric']} {rec['before']:.4f} -> {rec['after']:.4f}; " if "metric" in rec else "")
                print(f"{name:12s} {recipe:8s} {rec['input_bytes'] / 2**20:7.2f} MiB -> "
                      f"{rec['output_bytes'] / 2**20:7.2f} MiB ({rec['input_bytes'] / rec['output_bytes']:5.2f}x) "
                      f"{rec['seconds']:6.1f} s  {metric}worst layer SNR {rec['snr_db']:.1f} dB; "
                      f"{rec['compressed']} compressed, {len(rec['left_raw'])} weights left raw"
                      f"{' (' + ', '.join(rec['left_raw'][:4]) + (' ...' if len(rec['left_raw']) > 4 else '') + ')' if rec['left_raw'] else ''}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            for r in records:
                fh.write(json.dumps(r) + "\n")
    return 1 if any(r["rc"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
