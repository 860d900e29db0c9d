"""Counted nouns in messages."""
from alexspec.words import count


def test_one_is_singular_and_every_other_number_plural():
    assert [count(n, "epoch") for n in (0, 1, 2, 1000)] == ["0 epochs", "1 epoch", "2 epochs", "1,000 epochs"]
    assert count(3, "CUDA device") == "3 CUDA devices" and count(2, "index", "indices") == "2 indices"
