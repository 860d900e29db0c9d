"""A value that holds for the length of a with-block: state one module sets and others read."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class Scoped(Generic[T]):
    """`with scoped.set(value): ...` makes `value` current inside the block (blocks nest, the
    innermost wins); `scoped.get()` reads it, None outside any block; `bool(scoped)` says
    whether a block is open."""

    def __init__(self) -> None:
        self._values: list[T] = []

    @contextmanager
    def set(self, value: T) -> Iterator[T]:
        self._values.append(value)
        try:
            yield value
        finally:
            self._values.pop()

    def get(self) -> Optional[T]:
        return self._values[-1] if self._values else None

    def __bool__(self) -> bool:
        return bool(self._values)
