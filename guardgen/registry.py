"""Name -> class registries, used by the CLI and by the conformance tests.

>>> UNLEARN = Registry("unlearning method")
>>> @UNLEARN.register("sfd")
... class SFD: ...
>>> UNLEARN.get("sfd") is SFD
True
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Annotated, Callable, TypeVar

from guardgen.errors import GuardgenError

__all__ = ["Registry", "configure", "check_settings", "Range", "PositiveInt", "NonNegInt", "PositiveFloat",
           "NonNegFloat", "UnitFloat", "OpenUnitFloat", "SubUnitFloat", "SEED_MAX", "Seed", "saved_seed"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take, ``low <= x <= high`` (``<`` where open), attached to a field's type
    with ``typing.Annotated`` (as scikit-learn's ``Interval`` constraints) and checked by :func:`configure`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x) -> bool:
        if isinstance(x, float) and not math.isfinite(x):
            return False
        above = self.low is None or (x > self.low if self.low_open else x >= self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def __str__(self) -> str:
        def num(v) -> str:
            return str(v) if isinstance(v, int) else f"{v:g}"

        if self.high is None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}"
        return f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"


SEED_MAX = 2**32 - 1  # torch's CPU generator keeps a seed's low 32 bits: a larger seed would repeat a smaller one
Seed = Annotated[int, Range(0, SEED_MAX)]


def saved_seed(value):
    """A seed read from a model saved before seeds were bounded: its low 32 bits, the ones torch used."""
    return value % (SEED_MAX + 1) if isinstance(value, int) and not isinstance(value, bool) and value > SEED_MAX else value


PositiveInt = Annotated[int, Range(1)]  # counts: iterations, epochs, batch sizes, sampler steps
NonNegInt = Annotated[int, Range(0)]  # counts where 0 means "none" or "off"
PositiveFloat = Annotated[float, Range(0, low_open=True)]  # learning rates, clipping thresholds
NonNegFloat = Annotated[float, Range(0)]  # loss weights, guidance strengths
UnitFloat = Annotated[float, Range(0, 1)]  # shares, probabilities, decays
OpenUnitFloat = Annotated[float, Range(0, 1, low_open=True, high_open=True)]  # decision thresholds on a probability
SubUnitFloat = Annotated[float, Range(0, 1, high_open=True)]  # momentum, dropout, label smoothing, held-out splits


class _OutOfRange(ValueError):
    pass


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
    value of the wrong type (``--set alpha=abc``) or outside its field's :class:`Range` (``--set batch_size=0``), is a
    one-line :class:`GuardgenError`. Whole numbers are taken for float fields, numbers for text fields and lists for
    tuple fields. Fields ending in ``_`` are not settings."""
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.endswith("_")}
    unknown = set(settings) - known
    prefix = f"{name}: " if name else ""
    if unknown:
        raise GuardgenError(f"{prefix}unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    checked = {}
    for key, value in settings.items():
        try:
            checked[key] = _coerce(value, hints.get(key, typing.Any))
        except _OutOfRange as err:
            raise GuardgenError(f"{prefix}setting {key}={value!r}: must be {err}") from None
        except (TypeError, ValueError):
            raise GuardgenError(f"{prefix}setting {key}={value!r}: expected {_type_name(hints[key])}") from None
    return cls(**checked)


def check_settings(obj, *, name: str = "") -> None:
    """Check every setting of a dataclass instance against its field's :class:`Range` or ``Literal`` choices (for
    objects built directly, not through :func:`configure`; a method's ``fit`` calls it); a value out of range is a
    one-line :class:`GuardgenError` that starts with ``name`` (the class's name by default)."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        if f.init and not f.name.endswith("_"):
            try:
                _check_ranges(getattr(obj, f.name), hints.get(f.name, typing.Any))
            except _OutOfRange as err:
                raise GuardgenError(f"{name or type(obj).__name__}: setting {f.name}={getattr(obj, f.name)!r}: "
                                    f"must be {err}") from None


def _check_ranges(value, hint) -> None:
    """Raise _OutOfRange if ``value`` lies outside a Range or a Literal's choices of ``hint`` (looking inside X of
    X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        for bound in (m for m in args[1:] if isinstance(m, Range)):
            if value not in bound:
                raise _OutOfRange(str(bound))
    elif origin is typing.Literal:
        if value not in args:
            raise _OutOfRange(_type_name(hint))
    elif origin in (typing.Union, types.UnionType) and value is not None:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # X | None: X's range or choices (a wider union is checked by its type alone)
            _check_ranges(value, members[0])


def _coerce(value, hint):
    """``value`` as type ``hint`` (bool, int, float, str, tuple[...], list, dict, unions, Optional); TypeError if not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or (origin is None and not isinstance(hint, type)):
        return value
    if origin is Annotated:
        value = _coerce(value, args[0])
        _check_ranges(value, hint)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except _OutOfRange:
                raise
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
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _type_name(typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if hint in names:
        return names[hint]
    return str(hint).replace("typing.", "")
