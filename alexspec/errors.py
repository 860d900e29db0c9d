"""The compiler's error types: a spec with problems (`SpecError`), and other bad input (`BadInput`).

Every stage (load, schema, validate, infer) collects *all* the problems it finds and
raises a single `SpecError` holding them, so a user fixes a spec in one pass. Each
problem knows where it is (file:line:col), which part of the spec it concerns
(`layers[3].conv2.groups`), what is wrong and, where one exists, how to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True, order=True, slots=True)  # a spec has one per value: keep them small
class Loc:
    """A place in a spec file; line and col are 1-based."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec."""

    loc: Loc
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.loc}: {self.path}: " if self.path else f"{self.loc}: "
        text = where + self.message + (f"; {self.hint}" if self.hint else "")
        return text.replace("\r", "\\r").replace("\n", "\\n")  # one problem, one line


class BadInput(ValueError):
    """Input a user can fix that is not a spec: an argument, a checkpoint, a data folder, a device,
    a model to import. The command line prints the message and exits 2. Every other exception is
    a bug in alexspec and keeps its traceback."""


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss); the last good checkpoint is kept. The CLI exits 3."""


class SpecError(Exception):
    """A spec could not be accepted. `problems` lists every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: tuple[Problem, ...] = tuple(sorted(problems, key=lambda p: p.loc))
        super().__init__("\n".join(str(p) for p in self.problems))


def raise_if_any(problems: Sequence[Problem]) -> None:
    """Raise a SpecError when `problems` is not empty."""
    if problems:
        raise SpecError(problems)


def first_line(exc: BaseException, limit: int) -> str:
    """The first line of an exception's message, at most `limit` characters (its type's name where
    the message is empty): another library's error, quoted in one of ours."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def quote(value: object, limit: int = 60) -> str:
    """A user's value, quoted and escaped for a one-line message, shortened when long."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """A 'did you mean ...?' hint for a misspelt name, or '' when nothing is close: within a typo or
    two (one per four letters; a swap of neighbours counts one), so that a word for another thing
    (`dilation`, `padding_mode`) is not taken for a near name (`activation`, `padding`)."""
    if not isinstance(word, str):
        return ""
    allowed = max(1, len(word) // 4)
    scored = sorted((_typos(word.lower(), choice.lower()), choice) for choice in choices)
    return f"did you mean '{scored[0][1]}'?" if scored and scored[0][0] <= allowed else ""


def _typos(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`."""
    previous, current = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        before, previous, current = previous, current, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
    return current[len(b)]
