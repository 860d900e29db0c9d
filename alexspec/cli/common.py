"""What the commands share: finding a spec, printing tables and problems, argument types."""
from __future__ import annotations

import argparse
import sys

from alexspec.errors import SpecError

EXIT_INTERNAL = 1      # a bug: the traceback is printed
EXIT_BAD_INPUT = 2     # SpecError, BadInput
EXIT_DIVERGED = 3      # TrainingError

SPEC_HELP = ("a spec file, a run folder of `alexspec train` (the spec it ran) or one of its checkpoints (that run's "
             "spec), or the name of a bundled spec (alexnet, alexnet-1gpu, lenet5, ...)")

_ASCII_LINES = str.maketrans({"─": "-", "│": "|", **{corner: "+" for corner in "┌┐└┘├┤┬┴┼"}})


def check_output_kind(path: str, suffixes: tuple[str, ...], what: str, label: str | None = None) -> None:
    """BadInput unless `path` ends with one of `suffixes`: a file of another kind named there by
    mistake (a model's source, a spec) is never replaced. `label` names it in the message (default
    `path`)."""
    from pathlib import Path

    from alexspec.errors import BadInput

    if Path(path).suffix.lower() not in suffixes:
        raise BadInput(f"{label or path}: {what}; name it {' or '.join(suffixes)} (a file of another kind there "
                       "would be replaced)")


def write_out(text: str) -> None:
    """Write `text` to standard output in its encoding: where that cannot show the table's
    box-drawing characters (a cp1252 console, say), they become ASCII, and anything else it
    cannot show becomes '?'."""
    encoding = sys.stdout.encoding or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.translate(_ASCII_LINES).encode(encoding, "replace").decode(encoding)
    sys.stdout.write(text)


def resolve_spec(name: str) -> str:
    """A spec path as given, or the file of a bundled spec named `name` (e.g. `alexnet`): for the
    commands that record the file (bench). Reading a spec resolves names by itself."""
    from alexspec.spec.bundled import resolve  # imported when needed: alexspec.spec is not free to import

    return resolve(name)


def spec_document(spec: str, overrides: list[str]):
    """The loaded spec (a path, a bundled name or a run folder) with each --set KEY=VALUE applied."""
    from alexspec.spec import load_file
    from alexspec.spec.overrides import apply_overrides

    doc = load_file(spec)
    return apply_overrides(doc, overrides) if overrides else doc


def add_set_option(parser) -> None:
    """--set KEY=VALUE, repeatable: a spec key changed before the spec is checked."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a key of the spec before it is checked, e.g. training.lr=0.02 or "
                             "layers.conv1.stride=2 (a layer by its name or index; repeatable)")


def print_problems(error: SpecError) -> None:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    files = sorted({p.loc.file for p in error.problems})
    count = len(error.problems)
    print(f"{count} problem{'s' if count != 1 else ''} in {', '.join(files)}", file=sys.stderr)


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more (an hour at most)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0 to 3600 seconds, got {text}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not least <= value <= 1 << 24:
        raise argparse.ArgumentTypeError(f"must be from {least} to {1 << 24}, got {value}")
    return value


def device_list(text: str) -> list[str] | None:
    """--devices: comma-separated device names (cpu, cuda, cuda:N, mps, auto); None where empty
    (the spec's placement)."""
    import re

    from alexspec.spec.schema import DEVICE_PATTERN  # the spec's `placement` takes the same names

    devices = [d.strip() for d in text.split(",") if d.strip()]
    wrong = [d for d in devices if not re.fullmatch(DEVICE_PATTERN, d)]
    if wrong:
        raise argparse.ArgumentTypeError(f"{', '.join(repr(d) for d in wrong)} {'is' if len(wrong) == 1 else 'are'} "
                                         "not a device; name cpu, cuda, cuda:N (N from 0), mps or auto, "
                                         "comma-separated (one per tower, or one)")
    return devices or None
