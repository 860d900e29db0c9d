"""Counted nouns in messages: 1 epoch, 2 epochs (never "1 epoch(s)"); lists cut short; durations."""
from __future__ import annotations


def count(number: int, noun: str, plural: str | None = None) -> str:
    """`number` and `noun`, in the plural where `number` is not 1: count(3, "layer") -> '3 layers'."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def listed(names: list[str], most: int = 5) -> str:
    """The first `most` names, and how many more: listed(list("abcdefg")) -> 'a, b, c, d, e, ... (2 more)'."""
    return ", ".join(names[:most]) + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def duration(seconds: float) -> str:
    """A time left, as a person says it: '40 s', '22 min', '3 h 10 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
