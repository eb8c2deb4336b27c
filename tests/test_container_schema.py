"""spec/dnnz-header.schema.json against the reader: every valid header the tests know satisfies
it, and the structural corruptions of the catalogue that a schema can express violate it."""
import json
from pathlib import Path

import pytest

import _container_edit as E
import test_container_corruptions as C

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "spec" / "dnnz-header.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def valid_files():
    files = sorted((ROOT / "tests" / "golden" / "valid").glob("*.dnnz")) + sorted((ROOT / "spec" / "examples").glob("*.dnnz"))
    return [p for p in files if p.name != "future_minor.dnnz"]


def test_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", valid_files(), ids=lambda p: p.name)
def test_valid_headers_satisfy_the_schema(path):
    VALIDATOR.validate(E.header_doc(path.read_bytes()))


SCHEMA_EXPRESSIBLE = [
    "missing_tensors_key", "unknown_top_key_same_minor", "tensors_not_list", "metadata_not_string",
    "empty_name", "name_too_long", "tensor_unknown_key", "tensor_missing_shape", "bad_dtype",
    "dtype_not_string", "negative_dim", "bool_dim", "huge_dim", "too_many_dims",
    "shape_not_list", "raw_with_params", "raw_section_renamed", "encoded_not_float32",
    "encoding_name_invalid", "param_not_scalar", "too_many_sections", "section_unknown_dtype",
    "encoded_section_bool", "negative_offset", "bool_offset", "crc_out_of_range", "misaligned_offset",
]


@pytest.mark.parametrize("name", SCHEMA_EXPRESSIBLE)
def test_structural_corruptions_violate_the_schema(name):
    edit = {c[0]: c[1] for c in C.CATALOGUE}[name]
    doc = E.header_doc(edit(C.BASE))
    assert not VALIDATOR.is_valid(doc), name
    assert VALIDATOR.is_valid(E.header_doc(C.BASE))
