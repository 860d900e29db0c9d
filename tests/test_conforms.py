"""The fast yes/no schema check agrees with jsonschema, and valid specs never import jsonschema."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from alexspec.spec.conforms import UnknownKeyword, conforms, supported
from alexspec.spec.schema import schema
from alexspec.spec.schema_check import _validator_class
from conftest import SPECS
from strategies import mutated, valid_specs

SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted(SPECS.glob("*.yaml"))]


def jsonschema_says(data) -> bool:
    return _validator_class()(schema()).is_valid(data)


def test_the_spec_schema_uses_only_keywords_the_fast_check_implements():
    assert supported(schema())
    with pytest.raises(UnknownKeyword, match="uniqueItems"):
        supported({"properties": {"x": {"uniqueItems": True}}})


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda s: s["name"])
def test_shipped_specs_conform(spec):
    assert conforms(spec, schema()) and jsonschema_says(spec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.sampled_from(SHIPPED).flatmap(mutated), valid_specs().flatmap(lambda case: mutated(case[0])),
                 valid_specs().map(lambda case: case[0])))
def test_fast_check_agrees_with_jsonschema(spec):
    assert conforms(spec, schema()) == jsonschema_says(spec)


@pytest.mark.parametrize("value, expected", [(True, False), (1.0, False), (3, True)])
def test_integers_are_strict_like_the_full_check(value, expected):
    sch = {"type": "integer"}
    assert conforms(value, sch) is expected
    assert _validator_class()(sch).is_valid(value) is expected


def test_enum_and_const_tell_booleans_from_numbers():
    assert not conforms(True, {"enum": [1, 10]}) and conforms(1.0, {"enum": [1, 10]})
    assert not conforms(0, {"const": False}) and conforms(False, {"const": False})


def test_reporting_a_valid_spec_does_not_import_jsonschema():
    code = ("import sys, io, contextlib; from alexspec.cli import main; sys.argv = ['alexspec', 'report', 'alexnet']\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main()\n"
            "    except SystemExit: pass\n"
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
