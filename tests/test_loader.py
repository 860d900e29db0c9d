"""The YAML loader: safe constructs only, locations kept, YAML 1.2 numbers, bounded input."""
from __future__ import annotations

import pytest

from alexspec.errors import SpecError
from alexspec.spec import loader
from alexspec.spec.loader import load_text
from conftest import locate


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "t.yaml")
    return [str(p) for p in info.value.problems]


def test_locations_of_values_and_keys():
    text = "a: 1\nlayers:\n  - {name: conv1, kernel: 11}\n  - name: pool1\n    stride: 2\n"
    doc = load_text(text, "t.yaml")
    assert doc.data == {"a": 1, "layers": [{"name": "conv1", "kernel": 11}, {"name": "pool1", "stride": 2}]}
    loc = doc.loc(("layers", 0, "kernel"))
    assert (loc.line, loc.col) == locate(text, "11")
    loc = doc.loc(("layers", 1, "stride"), key=True)
    assert (loc.line, loc.col) == locate(text, "stride")
    # a path that is not there falls back to its nearest parent
    loc = doc.loc(("layers", 1, "missing"))
    assert (loc.line, loc.col) == locate(text, "name: pool1")


def test_yaml_12_floats_are_numbers_not_strings():
    doc = load_text("a: 5e-4\nb: 1e12\nc: 1.0e-4\nd: '5e-4'\n")
    assert doc.data == {"a": 5e-4, "b": 1e12, "c": 1e-4, "d": "5e-4"}


def test_alias_bomb_is_refused_without_expanding():
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
    (message,) = problems(bomb)
    assert message.startswith("t.yaml:2:")
    assert "aliases" in message


def test_merge_keys_are_refused():
    (message,) = problems("base: {a: 1}\nx:\n  <<: {a: 2}\n")
    assert "merge keys" in message and message.startswith("t.yaml:3:3")


def test_duplicate_keys_are_all_reported():
    text = "a: 1\nb: 2\na: 3\nc: {x: 1, x: 2}\n"
    found = problems(text)
    assert len(found) == 2
    assert found[0].startswith("t.yaml:%d:%d" % locate(text, "a", 2)) and "duplicate key 'a'" in found[0]
    assert "duplicate key 'x'" in found[1]


def test_tabs_get_a_plain_message():
    (message,) = problems("alexspec: 1\nname: x\n\tinput: 3\n")
    assert message.startswith("t.yaml:3:1")
    assert "tab" in message and "spaces" in message


def test_empty_and_comment_only_files():
    assert "empty" in problems("")[0]
    assert "empty" in problems("# just a comment\n")[0]


def test_syntax_error_points_at_the_line():
    (message,) = problems("a: 1\nb: [1, 2\nc: 3\n")
    assert message.startswith("t.yaml:3:") or message.startswith("t.yaml:2:")
    assert "not valid YAML" in message


def test_python_tags_are_refused():
    (message,) = problems("a: !!python/object/apply:os.system ['echo hacked']\n")
    assert "tag" in message and message.startswith("t.yaml:1:4")
    (message,) = problems("a: !!python/name:os.system x\n")
    assert "tag" in message


def test_size_and_depth_limits(monkeypatch):
    monkeypatch.setattr(loader, "MAX_NODES", 50)
    assert "too large" in problems("a: [" + ",".join(["1"] * 100) + "]\n")[0]
    deep = "a: " + "[" * 40 + "]" * 40 + "\n"
    assert "nested" in problems(deep)[0]


def test_very_long_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("# x\n" * (loader.MAX_BYTES // 4 + 10))
    with pytest.raises(SpecError) as info:
        loader.load_file(path)
    assert "limited" in str(info.value)


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        loader.load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        loader.load_file(bad)


def test_non_text_keys_keep_the_written_text():
    doc = load_text("1: a\nyes: b\n")
    assert doc.data == {"1": "a", "yes": "b"}


def test_nan_and_infinity_are_refused():
    assert "not a usable number" in problems("lr: .nan\n")[0]
    assert "not a usable number" in problems("lr: -.inf\n")[0]
