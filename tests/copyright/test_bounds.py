"""The NAF bound functions against hand-computed values."""

import math

import pytest

from guardgen.copyright import (event_bound_kl, event_bound_max_kl, hellinger2, k_effective, k_from_hellinger, k_from_tv,
                                kl, max_kl, tv)
from guardgen.errors import GuardgenError


def test_divergences_match_hand_computed_values():
    assert tv([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4)
    assert hellinger2([0.5, 0.5], [0.9, 0.1]) == pytest.approx(1 - (math.sqrt(0.45) + math.sqrt(0.05)))  # 0.10557
    assert kl([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * 1 + 0.5 * math.log2(2 / 3))  # 0.20752 bits
    assert max_kl([0.5, 0.5], [0.25, 0.75]) == pytest.approx(1.0)
    assert max_kl([0.5, 0.5, 0.0], [0.5, 0.0, 0.5]) == math.inf
    assert kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(1.0)  # 0 log 0 = 0


def test_event_bounds_match_hand_computed_values():
    assert event_bound_max_kl(0.01, 3) == pytest.approx(0.08)  # 2^3 * 0.01
    assert event_bound_max_kl(0.5, 3) == 1.0  # clipped
    assert event_bound_max_kl(0.2, 0) == pytest.approx(0.2)  # k = 0: p = q on events
    assert event_bound_kl(2.0**-10, 1) == pytest.approx(0.2)  # (1 + 1) / 10
    assert event_bound_kl(2.0**-20, 0) == pytest.approx(0.05)
    assert event_bound_kl(0.0, 5) == 0.0


def test_k_from_tv_hellinger_and_acceptance():
    assert k_from_tv(0.5) == pytest.approx(1.0)  # -log2(1/2)
    assert k_from_tv(0.0) == 0.0
    assert k_from_hellinger(0.75) == pytest.approx(4.0)  # -2 log2(1/4)
    assert k_effective(2.0, 0.25) == pytest.approx(4.0)  # 2 + log2 4
    assert k_effective(3.0, 1.0) == pytest.approx(3.0)


@pytest.mark.parametrize("call", [
    lambda: event_bound_max_kl(0.1, -1.0),
    lambda: event_bound_max_kl(0.1, float("nan")),
    lambda: event_bound_kl(0.1, float("inf")),
    lambda: event_bound_max_kl(1.5, 1.0),
    lambda: k_from_tv(1.0),
    lambda: k_from_hellinger(-0.1),
    lambda: k_effective(1.0, 0.0),
])
def test_out_of_range_inputs_are_refused_in_one_line(call):
    with pytest.raises(GuardgenError) as err:
        call()
    assert "out of range" in str(err.value) and "\n" not in str(err.value)
