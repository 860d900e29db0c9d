"""What to say about command-line arguments a command does not take: the option meant, where a
close one exists (`--batch-size` -> `--batch`), or the `--set training.KEY=VALUE` that changes a
spec's training key given as an option (`--lr 0.1`)."""
from __future__ import annotations

import argparse
import difflib

_SYNONYMS = {"learning_rate": "lr", "batch_size": "batch", "wd": "weight_decay", "epoch": "epochs"}


def explain(extras: list[str], argv: list[str], parser: argparse.ArgumentParser, command: str) -> str:
    """One sentence per argument in `extras` that `parser` (the `command`'s) did not take; `argv`,
    the whole command line, gives an unknown option the value written after it."""
    said, values, unexpected = [], set(), []
    for token in extras:
        if token in values or token == "--":
            continue
        if token.startswith("-") and token != "-":
            option, equals, value = token.partition("=")
            if not equals and token in argv:  # its value, if the next word is not an option
                after = (argv[argv.index(token) + 1:] or [""])[0]
                value = "" if after.startswith("-") else after
                values.add(value)
            said.append(_unknown_option(option, value, parser, command))
        else:
            unexpected.append(f"'{token}'")
    if unexpected:
        said.append(f"unexpected argument{'s' if len(unexpected) > 1 else ''} {' '.join(unexpected)} "
                    f"(see `alexspec {command} --help`)")
    return "; ".join(said)


def _unknown_option(option: str, value: str, parser: argparse.ArgumentParser, command: str) -> str:
    options = [name for name in parser._option_string_actions
               if name.startswith("--") and name not in ("--help", "--version")]
    key = option.lstrip("-").replace("-", "_").lower()
    key = _SYNONYMS.get(key, key)
    if "--" + key.replace("_", "-") in options:
        return f"unknown option {option}; did you mean --{key.replace('_', '-')}?"
    if "--set" in options and key in _training_keys():
        return (f"{option} is not an option; the spec's training.{key} is changed by "
                f"--set training.{key}={value or 'VALUE'}")
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
    if close:
        return f"unknown option {option}; did you mean {close[0]}?"
    return f"unknown option {option} (see `alexspec {command} --help`)"


def _training_keys() -> set[str]:
    from alexspec.spec.schema import schema  # not imported before an argument needs it

    return set(schema()["properties"]["training"]["properties"])
