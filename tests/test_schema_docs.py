"""The JSON Schema is a valid schema, accepts the shipped specs, and docs/ is generated from it."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from alexspec.spec.schema import LAYER_TYPES, schema
from alexspec.spec.schema_doc import markdown
from conftest import ROOT, SPECS, run_cli


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(schema())


def test_cli_prints_the_schema():
    result = run_cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == schema()


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
def test_shipped_specs_conform_for_an_editor(spec):
    # What a YAML language server does: plain jsonschema over safe_load's data.
    jsonschema.validate(yaml.safe_load((SPECS / spec).read_text()), schema())


def test_schema_rejects_what_an_editor_should_flag():
    bad = {"alexspec": 1, "name": "x", "input": {"channels": 1, "height": 8, "width": 8},
           "layers": [{"name": "c", "type": "conv", "out": 4}]}  # conv without kernel
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_committed_docs_are_generated_from_the_schema():
    assert (ROOT / "docs" / "spec-language.md").read_text() == markdown(), \
        "run: alexspec schema --format markdown > docs/spec-language.md"
    assert json.loads((ROOT / "docs" / "alexspec.schema.json").read_text()) == schema(), \
        "run: alexspec schema > docs/alexspec.schema.json"


def test_reference_documents_every_layer_type_and_key():
    text = markdown()
    for type_name, spec in LAYER_TYPES.items():
        assert f"### `{type_name}`" in text
        for key in spec["properties"]:
            assert f"| `{key}` |" in text
