"""Every `alexspec ...` command the README and docs/ show is one the command line takes, and
the README's report is what the tool prints."""
from __future__ import annotations

import re
import shlex

import pytest

from alexspec.cli import build_parser
from conftest import ROOT, run_cli

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands(text: str) -> list[str]:
    """Commands in code blocks (`$ alexspec ...` or a line that starts `alexspec `) and in inline code,
    leaving out synopses ([OPTIONAL], a|b, ...)."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ").split("  #")[0].strip()
            if line.startswith("alexspec "):
                found.append(line)
    found += re.findall(r"`(alexspec [^`]+)`", text)
    return [c for c in found if not re.search(r"\[|\||\.\.\.|<|NAME|SPEC\b|CKPT\b|RUN\b|FILE\b|DIR\b", c)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_a_page_shows_parses(page):
    commands = shown_commands(page.read_text())
    parser = build_parser()
    names = next(a for a in parser._actions if a.dest == "command").choices  # the subcommands
    for command in commands:
        words = shlex.split(command)[1:]
        if len(words) == 1 and not words[0].startswith("-"):  # a command named in prose: `alexspec diff`
            assert words[0] in names, f"{page.name}: alexspec has no command {words[0]!r}"
            continue
        try:
            parser.parse_args(words)
        except SystemExit as exit_:
            raise AssertionError(f"{page.name}: `{command}` is not a command alexspec takes") from exit_


def test_the_pages_show_commands_at_all():
    assert len(shown_commands((ROOT / "README.md").read_text())) >= 5
    assert len(shown_commands((ROOT / "docs" / "training.md").read_text())) >= 1


def test_the_readme_report_is_what_the_tool_prints():
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"\$ alexspec report lenet5\n(.*?)```", readme, flags=re.S).group(1)
    printed = run_cli("report", "specs/lenet5.yaml").stdout
    assert shown == printed
