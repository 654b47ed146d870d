"""Divergences and the near access-freeness bounds, as pure functions (Vyas, Kakade & Barak, ICML 2023).

All logarithms are base 2: k is measured in **bits**. Distributions are arrays ``(..., V)`` over a
discrete output space (probabilities summing to 1 on the last axis).

- ``max_kl(p, q)``: Δ_max(p‖q) = max_{y in supp p} log2 p(y)/q(y)  (Rényi order ∞).
- ``kl(p, q)``: Σ p log2 p/q.
- ``event_bound_max_kl(q_event, k)``: p(E) <= 2^k q(E)               (p is k-NAF under max-KL).
- ``event_bound_kl(q_event, k)``: p(E) <= (k + 1) / log2(1 / q(E))    (p is k-NAF under KL; data processing
  on the indicator of E plus binary entropy <= 1 bit).
- ``k_from_tv(tv)``: CP-Δ (max-KL) gives k <= -log2(1 - TV(q1, q2)).
- ``k_from_hellinger(h2)``: CP-Δ (KL) gives k <= -2 log2(1 - H²(q1, q2)), H² = 1 - Σ sqrt(q1 q2).
- ``k_effective(k, acceptance)``: CP-k's output p_k satisfies Δ_max(p_k‖q_i) <= k + log2(1/ν_k).
"""

from __future__ import annotations

import math

import numpy as np

from guardgen.errors import GuardgenError

__all__ = ["tv", "hellinger2", "kl", "max_kl", "event_bound_max_kl", "event_bound_kl", "k_from_tv", "k_from_hellinger",
           "k_effective", "check_k"]


def _np(x) -> np.ndarray:
    return np.asarray(x.detach().cpu().double().numpy() if hasattr(x, "detach") else x, dtype=np.float64)


def _scalar(x):
    return float(x) if np.ndim(x) == 0 else x


def tv(p, q):
    """Total variation ½ Σ |p - q| over the last axis; p, q: (..., V) -> (...)."""
    return _scalar(0.5 * np.abs(_np(p) - _np(q)).sum(-1))


def hellinger2(p, q):
    """Squared Hellinger distance H² = 1 - Σ sqrt(p q) (= ½ Σ (√p - √q)²); p, q: (..., V) -> (...)."""
    return _scalar(1.0 - np.sqrt(_np(p) * _np(q)).sum(-1))


def kl(p, q):
    """KL(p‖q) in bits over the last axis; +inf where p puts mass on a zero of q."""
    p, q = np.broadcast_arrays(_np(p), _np(q))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log2(p) - np.log2(q)), 0.0)
    return _scalar(terms.sum(-1))


def max_kl(p, q):
    """Δ_max(p‖q) = max over supp(p) of log2 p/q, in bits; +inf where q is 0 on supp(p)."""
    p, q = np.broadcast_arrays(_np(p), _np(q))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p > 0, np.log2(p) - np.log2(q), -np.inf)
    return _scalar(ratio.max(-1))


def check_k(k: float, name: str = "k") -> float:
    """k is a divergence in bits: finite and >= 0; anything else is bad input (one-line error)."""
    if not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
        raise GuardgenError(f"{name}={k}: out of range; k is a divergence in bits, a finite number >= 0")
    return float(k)


def _check_prob(x: float, name: str, *, open_low: bool = False, open_high: bool = False) -> float:
    x = float(x)
    low_ok = x > 0 if open_low else x >= 0
    high_ok = x < 1 if open_high else x <= 1
    if not (math.isfinite(x) and low_ok and high_ok):
        rng = f"{'(' if open_low else '['}0, 1{')' if open_high else ']'}"
        raise GuardgenError(f"{name}={x}: out of range; expected a number in {rng}")
    return x


def event_bound_max_kl(q_event: float, k: float) -> float:
    """Upper bound on p(E) given safe_C(E) = ``q_event`` and Δ_max(p‖safe_C) <= k: min(1, 2^k q(E))."""
    q_event, k = _check_prob(q_event, "q_event"), check_k(k)
    return min(1.0, 2.0**k * q_event)


def event_bound_kl(q_event: float, k: float) -> float:
    """Upper bound on p(E) given safe_C(E) = ``q_event`` and KL(p‖safe_C) <= k: min(1, (k + 1) / log2(1/q(E)))."""
    q_event, k = _check_prob(q_event, "q_event"), check_k(k)
    if q_event == 0:  # finite KL needs p << q, so p(E) = 0 too
        return 0.0
    if q_event == 1:
        return 1.0
    return min(1.0, (k + 1.0) / math.log2(1.0 / q_event))


def k_from_tv(tv_value: float) -> float:
    """k of CP-Δ (max-KL combiner min(q1, q2)/(1 - TV)): -log2(1 - TV), TV in [0, 1)."""
    return -math.log2(1.0 - _check_prob(tv_value, "tv", open_high=True))


def k_from_hellinger(h2: float) -> float:
    """k of CP-Δ (KL combiner sqrt(q1 q2)/Z, Z = 1 - H²): -2 log2(1 - H²), H² in [0, 1)."""
    return -2.0 * math.log2(1.0 - _check_prob(h2, "hellinger2", open_high=True))


def k_effective(k: float, acceptance: float) -> float:
    """CP-k's max-KL guarantee k + log2(1/ν_k) from threshold k and acceptance rate ν_k in (0, 1]."""
    return check_k(k) + math.log2(1.0 / _check_prob(acceptance, "acceptance", open_low=True))
