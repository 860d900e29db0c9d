"""Property-based tests of the compiler: random valid specs infer what the formula and torch say;
random broken specs only ever raise SpecError."""
from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from alexspec.errors import SpecError
from alexspec.spec import analyse, load_file, load_text
from conftest import SPECS, has_torch
from strategies import JUNK, block_specs, mutated, valid_specs, value_paths

PROFILE = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def analyse_dict(spec: dict):
    return analyse(load_text(yaml.safe_dump(spec, sort_keys=False), "random.yaml"))


@PROFILE
@given(valid_specs())
def test_random_valid_specs_infer_the_formula(case):
    spec, shapes = case
    info = analyse_dict(spec)
    assert [li.output_shape for li in info.layers] == shapes


@pytest.mark.skipif(not has_torch(), reason="torch is not installed")
@PROFILE
@given(valid_specs())
def test_random_valid_specs_match_a_plain_torch_build(case):
    from torch_build import torch_shapes_and_params

    spec, _ = case
    info = analyse_dict(spec)
    assert torch_shapes_and_params(info) == [(li.output_shape, li.params) for li in info.layers]


@pytest.mark.skipif(not has_torch(), reason="torch is not installed")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_specs())
def test_random_specs_with_blocks_infer_what_the_formula_and_torch_say(case):
    from torch_build import torch_shapes_and_params

    spec, shapes = case
    info = analyse_dict(spec)
    assert [li.output_shape for li in info.layers] == shapes
    assert torch_shapes_and_params(info) == [(li.output_shape, li.params) for li in info.layers]
    assert [use.name for use in info.network.block_uses] == [layer["name"] for layer in spec["layers"][1:-1]]
    assert sum(t.params for t in info.block_totals()) == info.total_params - info.layers[0].params


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_specs().flatmap(lambda case: mutated(case[0])))
def test_mutated_specs_with_blocks_raise_only_spec_errors(spec):
    _check_only_spec_errors(yaml.safe_dump(spec, sort_keys=False))


def _check_only_spec_errors(text: str) -> None:
    _check_only_located_problems(lambda: load_text(text, "fuzz.yaml"))


def _check_only_located_problems(document) -> None:
    """Loading `document()` and analysing it succeeds or raises a SpecError of located one-line problems."""
    try:
        analyse(document())
    except SpecError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.loc.line >= 1 and problem.loc.col >= 1 and problem.message
            assert "\n" not in str(problem)


SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted(SPECS.glob("*.yaml"))]
SHIPPED_DOCS = [(p, yaml.safe_load(p.read_text())) for p in sorted(SPECS.glob("*.yaml"))]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SHIPPED).flatmap(mutated))
def test_mutated_shipped_specs_raise_only_spec_errors(spec):
    _check_only_spec_errors(yaml.safe_dump(spec, sort_keys=False))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs().flatmap(lambda case: mutated(case[0])))
def test_mutated_random_specs_raise_only_spec_errors(spec):
    _check_only_spec_errors(yaml.safe_dump(spec, sort_keys=False))


@st.composite
def set_assignments(draw, spec: dict) -> list[str]:
    """One to three `--set KEY=VALUE` of a spec: a real path (a list item by its name or its index), maybe
    with a step that is not there, and a value written as YAML or as raw text."""
    assignments = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in value_paths(spec) if p]))
        parts, node = [], spec
        for step in path:
            named = isinstance(node, list) and isinstance(node[step], dict) and isinstance(node[step].get("name"), str)
            parts.append(node[step]["name"] if named and draw(st.booleans()) else str(step))
            node = node[step]
        if draw(st.integers(0, 3)) == 0:
            parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(["x", "99", "conv1", "", "-1"])))
        value = draw(st.one_of(JUNK.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix(
            "\n...")), st.text(max_size=8)))
        assignments.append(".".join(parts) + "=" + value)
    return assignments


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SHIPPED_DOCS).flatmap(lambda doc: st.tuples(st.just(doc), set_assignments(doc[1]))))
def test_random_set_values_on_shipped_specs_raise_only_spec_errors(case):
    from alexspec.spec.overrides import apply_overrides

    (file, _), assignments = case
    _check_only_located_problems(lambda: apply_overrides(load_file(file), assignments))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([p.read_text() for p in sorted(SPECS.glob("*.yaml"))]),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.text(max_size=6)), min_size=1, max_size=4))
def test_text_edits_raise_only_spec_errors(text, edits):
    for position, length, insert in edits:
        position %= len(text) + 1
        text = text[:position] + insert + text[position + length:]
    _check_only_spec_errors(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_spec_errors(text):
    _check_only_spec_errors(text)


HOSTILE = ["!!bool x", "!!timestamp x", "!!int x", "!!float x", "!!timestamp 2001-13-45", "9" * 4400,
           "0x" + "f" * 4000, "&a ", "*a", "<<: {a: 1}", "\t", "\x00", "\n---\n", "? [a]\n", "!!python/name:os.system ",
           "{", "]", '"\\N"', "'", "\n  - ", ": ", "1e400", ".nan", '"conv1\\n"', "!!binary aGk=", "!!set {a}",
           "18446744073709551616", "\ufeff", "\u2028", "- [" * 40]


@st.composite
def hostile_texts(draw):
    """A shipped spec's text with one to four YAML-level edits: tags, odd scalars, anchors, aliases,
    merge keys, control characters, extra documents, unbalanced brackets, huge numbers."""
    text = draw(st.sampled_from(SHIPPED_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        removed = draw(st.integers(0, 6))
        text = text[:position] + draw(st.sampled_from(HOSTILE)) + text[position + removed:]
    return text


SHIPPED_TEXTS = [p.read_text() for p in sorted(SPECS.glob("*.yaml"))]


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(10))  # 10 x 1,000: ten thousand mutated specs, in CI-sized batches
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_texts(), st.sampled_from(SHIPPED).flatmap(mutated).map(
    lambda spec: yaml.safe_dump(spec, sort_keys=False))))
def test_ten_thousand_mutated_specs_raise_only_spec_errors(batch, text):
    _check_only_spec_errors(text)
