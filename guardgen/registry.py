"""Name -> class registries, used by the CLI and by the conformance tests.

>>> UNLEARN = Registry("unlearning method")
>>> @UNLEARN.register("sfd")
... class SFD: ...
>>> UNLEARN.get("sfd") is SFD
True
"""

from __future__ import annotations

from typing import Callable, TypeVar

from guardgen.errors import GuardgenError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry:
    """A named mapping from short lowercase keys to classes or factories."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, object] = {}

    def register(self, key: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if key in self._entries:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, key: str):
        if key not in self._entries:
            raise GuardgenError(
                f"unknown {self.kind} {key!r}; choose one of: {', '.join(self.names()) or '(none yet)'}"
            )
        return self._entries[key]

    def create(self, key: str, **kwargs):
        return self.get(key)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
