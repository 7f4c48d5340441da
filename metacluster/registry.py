"""`Registry`: named things registered once each, looked up by name.

The library's extension points are registries of this kind: KAN families
(`metacluster.kan.families`), checkpoint formats (`metacluster.formats`) and
compression methods (`metacluster.compress.pipeline.registry`). A lookup of an unknown name
raises the caller's error class with the names that exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from metacluster.errors import MetaClusterError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """A read-only mapping, name -> item, that grows only by `add`."""

    def __init__(
        self,
        what: str,
        error: type[MetaClusterError],
        hint: Callable[[list[str]], str] = lambda names: f"expected one of {', '.join(names)}",
    ) -> None:
        self.what = what
        self.error = error
        self.hint = hint
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, *, same: Callable[[T, T], bool] | None = None) -> T:
        """Register `item` as `name`; a second, different item of that name is a bug.
        `same(old, new)` says when a repeat registration is the same thing (re-import)."""
        old = self._items.get(name)
        if old is not None and not (same(old, item) if same is not None else old is item):
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._items[name] = item
        return item

    def get_or_raise(self, name: object) -> T:
        item = self._items.get(name) if isinstance(name, str) else None
        if item is None:
            raise self.error(f"unknown {self.what} {name!r}; {self.hint(list(self._items))}")
        return item

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["Registry"]
