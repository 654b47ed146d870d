from dataclasses import dataclass, field

import pytest

from guardgen.errors import GuardgenError
from guardgen.registry import Registry, configure


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
