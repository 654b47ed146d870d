from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from guardgen.errors import GuardgenError
from guardgen.registry import (NonNegInt, OpenUnitFloat, PositiveFloat, PositiveInt, Range, Registry, UnitFloat,
                               check_settings, configure)


@dataclass(kw_only=True)
class _Settings:
    lr: float = 1e-3
    steps: int = 10
    name: str = "a"
    amp: bool = False
    channels: tuple[int, ...] = (8, 16)
    betas: tuple[float, float] = (0.9, 0.999)
    limit: float | None = None
    history_: list = field(default_factory=list, init=False)


def test_configure_takes_values_of_the_fields_types():
    s = configure(_Settings, {"lr": 1, "steps": 20.0, "name": 7, "amp": True, "channels": [4, 8, 8],
                              "betas": [0, 1], "limit": 2})
    assert (s.lr, s.steps, s.name, s.amp, s.channels, s.betas, s.limit) == (1.0, 20, "7", True, (4, 8, 8), (0.0, 1.0), 2.0)
    assert type(s.lr) is float and type(s.steps) is int
    assert configure(_Settings, {"limit": None}).limit is None


@pytest.mark.parametrize("settings,message", [
    ({"lr": "fast"}, "setting lr='fast': expected a number"),
    ({"steps": 2.5}, "setting steps=2.5: expected a whole number"),
    ({"steps": True}, "expected a whole number"),
    ({"amp": 1}, "expected true or false"),
    ({"channels": 8}, "setting channels=8"),
    ({"betas": [0.9]}, "setting betas=[0.9]"),
    ({"history_": []}, "unknown setting(s) history_"),
    ({"bogus": 1, "other": 2}, "run: unknown setting(s) bogus, other; known: amp, betas"),
])
def test_configure_refuses_bad_settings_in_one_line(settings, message):
    with pytest.raises(GuardgenError) as err:
        configure(_Settings, settings, name="run")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_registry_create_checks_a_dataclass_settings():
    reg = Registry("thing")
    reg.register("s")(_Settings)
    assert reg.create("s", steps=3).steps == 3
    with pytest.raises(GuardgenError, match="s: setting lr='x'"):
        reg.create("s", lr="x")


@dataclass(kw_only=True)
class _Bounded:
    steps: PositiveInt = 10
    warmup: NonNegInt = 0
    lr: PositiveFloat = 1e-3
    share: UnitFloat = 0.5
    threshold: OpenUnitFloat = 0.5
    folds: Annotated[int, Range(2)] = 2
    limit: PositiveInt | None = None
    mode: Literal["fast", "slow"] = "fast"
    fallback: Literal["fast", "slow"] | None = None


@pytest.mark.parametrize("settings,message", [
    ({"steps": 0}, "setting steps=0: must be >= 1"),
    ({"warmup": -1}, "setting warmup=-1: must be >= 0"),
    ({"lr": 0}, "setting lr=0: must be > 0"),
    ({"lr": float("nan")}, "setting lr=nan: must be > 0"),
    ({"lr": float("inf")}, "setting lr=inf: must be > 0"),
    ({"share": 1.5}, "setting share=1.5: must be in [0, 1]"),
    ({"threshold": 1}, "setting threshold=1: must be in (0, 1)"),
    ({"folds": 1}, "setting folds=1: must be >= 2"),
    ({"limit": 0}, "setting limit=0: must be >= 1"),
    ({"limit": "x"}, "setting limit='x': expected a whole number or null"),
    ({"mode": "medium"}, "setting mode='medium': expected one of fast, slow"),
    ({"fallback": "medium"}, "setting fallback='medium': expected one of fast, slow or null"),
])
def test_configure_refuses_values_out_of_range(settings, message):
    with pytest.raises(GuardgenError) as err:
        configure(_Bounded, settings, name="run")
    assert str(err.value) == f"run: {message}"


def test_ranges_take_their_edges_and_none():
    s = configure(_Bounded, {"steps": 1, "warmup": 0, "lr": 1e-9, "share": 1, "threshold": 0.999, "folds": 2, "limit": None})
    assert (s.steps, s.share, s.limit) == (1, 1.0, None)
    assert configure(_Bounded, {"limit": 3}).limit == 3


def test_check_settings_catches_an_object_built_directly():
    check_settings(_Bounded())
    with pytest.raises(GuardgenError, match=r"^sfd-like: setting share=-0.1: must be in \[0, 1\]$"):
        check_settings(_Bounded(share=-0.1), name="sfd-like")
    with pytest.raises(GuardgenError, match=r"^sfd-like: setting mode='medium': must be one of fast, slow$"):
        check_settings(_Bounded(mode="medium"), name="sfd-like")
    check_settings(_Bounded(fallback="slow"))
    with pytest.raises(GuardgenError, match=r"^sfd-like: setting fallback='medium': must be one of fast, slow$"):
        check_settings(_Bounded(fallback="medium"), name="sfd-like")


def test_every_registered_method_and_zoo_config_keeps_its_own_ranges():
    """The shipped defaults satisfy the declared ranges (a default out of its range would refuse every run)."""
    import guardgen.zoo as zoo
    from unlearn import UNLEARN

    for name in UNLEARN.names():
        check_settings(UNLEARN.get(name)(), name=name)
    for name in zoo.zoo_names():
        check_settings(zoo.config_class(name)(), name=name)
