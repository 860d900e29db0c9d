"""The tutorial's commands give the output it shows (so the docs cannot drift from the tool)."""
from __future__ import annotations

import re

from conftest import ROOT, run_cli

TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()


def blocks(language: str = "") -> list[str]:
    """The fenced code blocks of the tutorial with the given language tag, in order."""
    found, current, tag = [], None, None
    for line in TUTORIAL.splitlines():
        if line.startswith("```"):
            if current is None:
                current, tag = [], line[3:].strip()
            else:
                if tag == language:
                    found.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return found


def shown_output(command: str) -> list[str]:
    block = next(b for b in blocks() if b.startswith(f"$ {command}\n"))
    return block.splitlines()[1:]


def test_tutorial_walkthrough(tmp_path):
    spec = blocks("yaml")[0]
    (tmp_path / "smallnet.yaml").write_text(spec)
    result = run_cli("validate", "smallnet.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == shown_output("alexspec validate smallnet.yaml")

    fix = blocks("yaml")[1]
    fixed_lines = fix.strip("\n").splitlines()
    lines = spec.splitlines()
    for new in fixed_lines:
        name = re.search(r"name: (\w+)", new).group(1)
        lines = [new if f"name: {name}," in old else old for old in lines]
    (tmp_path / "smallnet.yaml").write_text("\n".join(lines) + "\n")
    result = run_cli("report", "smallnet.yaml", "--batch", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = [line.rstrip() for line in result.stdout.splitlines()]
    for line in shown_output("alexspec report smallnet.yaml --batch 64"):
        assert line.rstrip() in output, line


def test_readme_error_example_matches_the_tool(tmp_path):
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"\$ alexspec validate mynet.yaml\n(.*?)```", readme, flags=re.S).group(1).splitlines()
    spec = ("alexspec: 1\nname: mynet\ninput: {channels: 3, height: 224, width: 224}\nclasses: 100\nlayers:\n"
            "  - {name: conv1, type: conv, out: 64, kernel: 11, stride: 4, activation: relu}\n"
            "  - {name: pool1, type: maxpool, kernel: 3, stride: 2}\n"
            "  - {name: conv2, type: conv, out: 192, kernel: 5, padding: 2, groups: 2, activaton: relu}\n"
            "  - {name: flatten, type: flatten}\n  - {name: fc, type: linear, out: 100}\n")
    (tmp_path / "mynet.yaml").write_text(spec)
    result = run_cli("validate", "mynet.yaml", cwd=tmp_path)
    assert result.stderr.splitlines() == shown
