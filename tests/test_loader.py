"""The YAML loader: safe constructs only, locations kept, YAML 1.2 numbers, bounded input."""
from __future__ import annotations

import zipfile

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


def test_a_misspelt_bundled_name_gets_the_name_meant_and_an_archive_is_named_as_no_spec(tmp_path):
    with pytest.raises(SpecError) as typo:
        loader.load_file("alexnt")
    assert str(typo.value.problems[0]) == "alexnt:1:1: no such file; did you mean 'alexnet'? (a bundled spec)"
    with pytest.raises(SpecError) as far:
        loader.load_file("nothing-like-a-name")
    assert "name a bundled spec: alexnet, alexnet-1gpu," in str(far.value.problems[0])
    archive = tmp_path / "weights.pt"
    with zipfile.ZipFile(archive, "w") as zipped:  # what torch.save writes
        zipped.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(SpecError, match=r"weights.pt:1:1: a zip archive \(a checkpoint\? a .pt2 export\?\), not a "
                                        r"spec; give the spec it was made from"):
        loader.load_file(archive)


def test_non_text_keys_keep_the_written_text():
    doc = load_text("1: a\nyes: b\n")
    assert doc.data == {"1": "a", "yes": "b"}


def test_nan_and_infinity_are_refused():
    assert "not a usable number" in problems("lr: .nan\n")[0]
    assert "not a usable number" in problems("lr: -.inf\n")[0]


ODD_SCALARS = {
    "a: !!bool x\n": "'x' is not a valid !!bool",
    "a: !!int x\n": "'x' is not a valid !!int",
    "a: !!float x\n": "'x' is not a valid !!float",
    "a: !!timestamp x\n": "the YAML tag '!!timestamp' is not supported",
    "a: !!timestamp 2001-13-45\n": "the YAML tag '!!timestamp' is not supported",
    "a: !!binary aGVsbG8=\n": "the YAML tag '!!binary' is not supported",
    "a: " + "9" * 4400 + "\n": "is too large",
    "a: 0x" + "f" * 4000 + "\n": "is too large",
    "a: 18446744073709551616\n": "is too large",  # 2**64
    "a: 1\n---\nb: 2\n": "one YAML document",
}


@pytest.mark.parametrize("text", sorted(ODD_SCALARS))
def test_tags_and_odd_scalars_are_located_problems(text):
    (message,) = problems(text)
    expected_line = 2 if text.startswith("a: 1\n---") else 1  # the second document starts at its ---
    assert message.startswith(f"t.yaml:{expected_line}:") and ODD_SCALARS[text] in message, message


def test_dates_are_text_and_plain_tags_work():
    doc = load_text("a: 2001-12-14\nb: !!str 12\nc: !!int 0x10\nd: !!float 1\ne: 18446744073709551615\n")
    assert doc.data == {"a": "2001-12-14", "b": "12", "c": 16, "d": 1.0, "e": 2 ** 64 - 1}


def test_validate_checks_every_file_after_a_bad_one(tmp_path):
    from conftest import run_cli, spec_text

    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text(spec_text("{name: r, type: relu}").replace("name: tiny", "name: !!bool x"))
    good.write_text(spec_text("{name: r, type: relu}"))
    result = run_cli("validate", str(bad), str(good))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line, col = locate(bad.read_text(), "!!bool")
    assert result.stderr.startswith(f"{bad}:{line}:{col}: ")
    assert f"{good}: ok" in result.stdout


def test_validate_of_a_folder_checks_each_spec_file_in_it(tmp_path):
    from conftest import run_cli, spec_text

    (tmp_path / "a.yaml").write_text(spec_text("{name: r, type: relu}"))
    (tmp_path / "b.yml").write_text(spec_text("{name: r, type: relu}").replace("type: relu", "type: rleu"))
    (tmp_path / "notes.txt").write_text("not a spec\n")
    (tmp_path / "empty").mkdir()
    result = run_cli("validate", str(tmp_path), str(tmp_path / "empty"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout == f"{tmp_path / 'a.yaml'}: ok: tiny, 1 layer, 0 params, output 3x32x32\n", result.stdout
    assert f"{tmp_path / 'b.yml'}:" in result.stderr and "rleu" in result.stderr and "notes.txt" not in result.stderr
    assert f"{tmp_path / 'empty'}:1:1: is a folder, not a spec file" in result.stderr


def test_an_oversized_file_is_refused_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:
        handle.truncate(50_000_000)  # sparse: 50 MB that were never written
    opened = []
    monkeypatch.setattr(loader, "open", lambda *args, **kwargs: opened.append(args), raising=False)
    with pytest.raises(SpecError, match="the file is 50,000,000 bytes; specs are limited to 4,000,000"):
        loader.load_file(path)
    assert not opened  # refused by stat() alone


def test_a_100000_layer_spec_is_refused_while_it_is_read(tmp_path):
    import tracemalloc

    path = tmp_path / "layers.yaml"
    path.write_text("alexspec: 1\nname: big\ninput: {channels: 1, height: 8, width: 8}\nlayers:\n"
                    + "".join(f"  - {{name: r{i}, type: relu}}\n" for i in range(100_000)))
    tracemalloc.start()
    try:
        with pytest.raises(SpecError) as info:
            loader.load_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (problem,) = info.value.problems
    assert (problem.loc.line, problem.loc.col) == (5, 3) and "more than 10,000 items" in problem.message
    assert peak < 50_000_000, f"refusing it took {peak / 1e6:.0f} MB"


def test_a_spec_of_too_many_values_is_refused_at_the_value_past_the_limit():
    text = "a:\n" + "".join(f"  k{i}: [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" for i in range(20_000))
    (message,) = problems(text)
    values_per_line = 1 + 1 + 9  # key, list, items
    line = 2 + (loader.MAX_NODES - 2) // values_per_line
    assert message.startswith(f"t.yaml:{line}:") and f"more than {loader.MAX_NODES:,} values" in message


def test_bundled_specs_are_found_by_name_by_the_library_too():
    import alexspec

    assert alexspec.analyse("digits").network.name == "digits"
    assert loader.load_file("lenet5").file.endswith("lenet5.yaml")
    with pytest.raises(SpecError, match="name a bundled spec: .*alexnet.*digits"):
        loader.load_file("nosuch")
    with pytest.raises(SpecError, match="cannot read the file"):  # too long to be a path: no OSError escapes
        loader.load_file("a" * 300)


def test_a_folder_is_read_as_the_spec_it_holds_or_refused_with_a_hint(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "spec.yaml").write_text("alexspec: 1\nname: held\n")
    doc = loader.load_file(tmp_path / "run")
    assert doc.file == str(tmp_path / "run" / "spec.yaml") and doc.data["name"] == "held"
    with pytest.raises(SpecError) as info:
        loader.load_file(tmp_path)
    (message,) = [str(p) for p in info.value.problems]
    assert message.startswith(f"{tmp_path}:1:1: is a folder, not a spec file") and "spec.yaml" in message
