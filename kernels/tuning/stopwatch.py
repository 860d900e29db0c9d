"""Seconds a process spends in some calls: how `alexspec bench --cold-start` splits a first step."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class Stopwatch:
    """Adds up the wall time of the calls run through it."""

    def __init__(self):
        self.seconds = 0.0

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs), its wall time added to `seconds` (also when it raises)."""
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
