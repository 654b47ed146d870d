"""Name -> class registries, used by the CLI and by the conformance tests.

>>> UNLEARN = Registry("unlearning method")
>>> @UNLEARN.register("sfd")
... class SFD: ...
>>> UNLEARN.get("sfd") is SFD
True
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Callable, TypeVar

from guardgen.errors import GuardgenError

__all__ = ["Registry", "configure"]

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
        """An instance of ``key``; a dataclass's settings are checked first (:func:`configure`)."""
        obj = self.get(key)
        return configure(obj, kwargs, name=key) if dataclasses.is_dataclass(obj) else obj(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def configure(cls: type[T], settings: dict, *, name: str = "") -> T:
    """``cls(**settings)`` for a dataclass of settings, each checked against its field first: an unknown key, or a
    value of the wrong type (``--set alpha=abc``), is a one-line :class:`GuardgenError`. Whole numbers are taken
    for float fields, numbers for text fields and lists for tuple fields. Fields ending in ``_`` are not settings."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.endswith("_")}
    unknown = set(settings) - known
    prefix = f"{name}: " if name else ""
    if unknown:
        raise GuardgenError(f"{prefix}unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    checked = {}
    for key, value in settings.items():
        try:
            checked[key] = _coerce(value, hints.get(key, typing.Any))
        except (TypeError, ValueError):
            raise GuardgenError(f"{prefix}setting {key}={value!r}: expected {_type_name(hints[key])}") from None
    return cls(**checked)


def _coerce(value, hint):
    """``value`` as type ``hint`` (bool, int, float, str, tuple[...], list, dict, unions, Optional); TypeError if not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or (origin is None and not isinstance(hint, type)):
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError(value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise TypeError(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if number and float(value).is_integer():
            return int(value)
    elif hint is float:
        if number:
            return float(value)
    elif hint is str:
        if isinstance(value, str) or number:
            return str(value)
    elif origin in (tuple, list) or hint in (tuple, list):
        if isinstance(value, (list, tuple)):
            kind = origin or hint
            if len(args) == 2 and args[1] is Ellipsis:
                return kind(_coerce(v, args[0]) for v in value)
            if args and len(args) != len(value):
                raise TypeError(value)
            return kind(_coerce(v, a) for v, a in zip(value, args)) if args else kind(value)
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    elif isinstance(value, hint):
        return value
    raise TypeError(value)


def _type_name(hint) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if hint in names:
        return names[hint]
    return str(hint).replace("typing.", "")
