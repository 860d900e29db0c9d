"""No spec text runs as code: every free-text field and the spec's file name reach the generated
module only as Python literals, and names must match their patterns in full."""
from __future__ import annotations

import ast
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from alexspec.codegen import generate, literal
from alexspec.errors import SpecError
from alexspec.spec import analyse, load_text
from conftest import HEADER, run_cli, spec_text

HOSTILE = ['x"""\nimport os; os.system(\'touch CANARY\')\n"""', "\\N", "\\x", "\\u12", "\x00", "'''", '"', "\\",
           "a\rb", "\u2028", "\x85", "# comment\nraise SystemExit", "{__import__('os')}"]
TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
                 st.lists(st.sampled_from(HOSTILE + ["x", " ", "\n"]), max_size=6).map("".join))


def source_for(follows: str, description: str, note: str, file: str) -> str:
    """The generated source of a spec whose every free-text field (follows, description, a layer's
    note) and file name are the given texts."""
    spec = {"alexspec": 1, "name": "net", "follows": follows, "description": description,
            "input": {"channels": 1, "height": 8, "width": 8},
            "layers": [{"name": "flatten", "type": "flatten", "note": note}, {"name": "fc", "type": "linear", "out": 10}]}
    return generate(analyse(load_text(yaml_text(spec), file))).source


def yaml_text(data) -> str:
    """JSON is YAML; with every character outside ASCII escaped, astral ones as YAML's \\U escape."""
    def astral(match: re.Match) -> str:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"
    return re.sub(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", astral, json.dumps(data))


def run_source(source: str) -> dict:
    """Execute generated source with the imports it may use and nothing else; its namespace."""
    namespace: dict = {"__name__": "generated"}
    exec(compile(source, "<generated>", "exec"), namespace)  # noqa: S102 (the point of the test)
    return namespace


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(follows=TEXT.map(lambda t: t[:200]), description=TEXT, note=TEXT,
       file=TEXT.filter(lambda t: "/" not in t and t != "."))  # "." names a folder, never a spec file
def test_free_text_and_file_names_never_become_code(follows, description, note, file):
    pytest.importorskip("torch")
    source = source_for(follows, description, note, file or "x.yaml")
    tree = ast.parse(source)  # always parses
    # the module is a docstring, imports, two constants and the class: no statement the spec wrote
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds[0] == "Expr" and kinds[-1] == "ClassDef"
    assert set(kinds[1:-1]) <= {"Import", "ImportFrom", "Assign"}
    constants = {node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)}
    assert set(constants) <= {"SPEC_FILE", "FOLLOWS"}
    assert all(isinstance(value, ast.Constant) and isinstance(value.value, str) for value in constants.values())
    namespace = run_source(source)
    assert namespace.get("FOLLOWS", "") == follows  # the text round-trips, escaped, never interpreted
    assert namespace["SPEC_FILE"] == (file or "x.yaml")


def test_the_reported_injection_neither_runs_on_import_nor_in_train(tmp_path):
    pytest.importorskip("torch")
    spec = tmp_path / "evil.yaml"
    spec.write_text(HEADER.replace("name: tiny", "name: evil\nfollows: \"x\\\"\\\"\\\"\\nimport os; "
                                   "os.system('touch CANARY')\\n\\\"\\\"\\\"\"").replace("height: 32, width: 32",
                                                                                        "height: 8, width: 8")
                    .replace("channels: 3", "channels: 1") + "  - {name: f, type: flatten}\n"
                    "  - {name: fc, type: linear, out: 10}\n")
    result = run_cli("compile", str(spec), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module_file = tmp_path / "out" / "evil.py"
    namespace = run_source(module_file.read_text())
    assert "import os" in namespace["FOLLOWS"]
    assert not (tmp_path / "CANARY").exists() and not (tmp_path / "out" / "CANARY").exists()
    result = run_cli("train", str(spec), "--epochs", "1", "--max-steps", "1", "--out", str(tmp_path / "run"),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("CANARY"))


def test_a_file_name_with_escapes_compiles_to_source_that_parses(tmp_path):
    pytest.importorskip("torch")
    spec = tmp_path / "y\\N.yaml"
    spec.write_text(spec_text("{name: f, type: flatten}"))
    result = run_cli("compile", str(spec), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    namespace = run_source((tmp_path / "out" / "tiny.py").read_text())
    assert namespace["SPEC_FILE"] == "y\\N.yaml"


@pytest.mark.parametrize("where, text", [
    ("network name", HEADER.replace("name: tiny", 'name: "tiny\\n"') + "  - {name: r, type: relu}\n"),
    ("layer name", spec_text('{name: "conv1\\n", type: relu}')),
    ("device", HEADER.replace("layers:", 'placement: ["cpu\\n"]\nlayers:') + "  - {name: r, type: relu}\n"),
])
def test_names_and_devices_must_match_their_pattern_in_full(where, text):
    with pytest.raises(SpecError) as error:
        analyse(load_text(text, "t.yaml"))
    assert any("is not a valid name" in p.message or "is not a device" in p.message
               for p in error.value.problems), (where, str(error.value))


def test_literal_quotes_every_text_back_to_itself():
    for text in HOSTILE + ["\ud800"]:  # a lone surrogate too, which no spec can hold
        assert ast.literal_eval(literal(text)) == text
    with pytest.raises(TypeError):
        literal(3)
