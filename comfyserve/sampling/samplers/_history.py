"""The memory of a multistep method: the last few values it computed, the oldest dropped first."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class History(Generic[T]):
    """Up to `size` past values; `back(1)` is the newest, `back(k)` the k-th newest."""

    def __init__(self, size: int):
        self._values: deque[T] = deque(maxlen=max(size, 0))

    def push(self, value: T) -> None:
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def back(self, k: int) -> T:
        if not 1 <= k <= len(self._values):
            raise IndexError(f"history holds {len(self._values)} values, asked for the {k}-th newest")
        return self._values[-k]

    def newest_first(self) -> list[T]:
        return list(reversed(self._values))
