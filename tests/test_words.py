"""Counted nouns and durations in messages."""
from alexspec.words import count, duration


def test_one_is_singular_and_every_other_number_plural():
    assert [count(n, "epoch") for n in (0, 1, 2, 1000)] == ["0 epochs", "1 epoch", "2 epochs", "1,000 epochs"]
    assert count(3, "CUDA device") == "3 CUDA devices" and count(2, "index", "indices") == "2 indices"


def test_a_duration_is_said_in_seconds_minutes_or_hours_and_minutes():
    assert [duration(s) for s in (-1, 0.4, 40, 59.4, 90, 22 * 60, 59 * 60 + 40, 3 * 3600 + 10 * 60)] == \
        ["0 s", "0 s", "40 s", "59 s", "2 min", "22 min", "1 h 0 min", "3 h 10 min"]
