"""CP-Δ and CP-k on discrete output spaces, exact (Vyas, Kakade & Barak, ICML 2023, Algorithms 1-2).

Distributions are tensors ``(..., V)`` of probabilities over V outputs (a categorical model per prompt,
or a next-token distribution). Everything here is closed form; ``sample_cp_k`` is the rejection
sampler itself, for Monte-Carlo checks against the exact ``cp_k``.

- CP-Δ, max-KL: p = min(q1, q2) / Z, Z = Σ min(q1, q2) = 1 - TV(q1, q2); then Δ_max(p‖q_i) <= -log2 Z.
- CP-Δ, KL:     p = sqrt(q1 q2) / Z, Z = Σ sqrt(q1 q2) = 1 - H²(q1, q2); then KL(p‖q_i) <= -2 log2 Z.
- CP-k:         p_k ∝ p · 1[log2 p - log2 q_i <= k for every i], acceptance ν_k = Σ p · 1[...];
                then Δ_max(p_k‖q_i) <= k + log2(1/ν_k).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guardgen.copyright.bounds import check_k
from guardgen.errors import GuardgenError

__all__ = ["CPDelta", "cp_delta", "cp_k", "log_ratios", "sample_cp_k"]


@dataclass(frozen=True)
class CPDelta:
    """The combined distribution ``p`` (..., V), its normaliser ``z`` (...) and its guarantee ``k`` (...) in bits."""

    p: torch.Tensor
    z: torch.Tensor
    k: torch.Tensor


def _check_dists(qs) -> torch.Tensor:
    q = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in qs])
    if len(q) < 2:
        raise GuardgenError("CP-Δ needs at least two shard models (q1, q2)")
    if (q < 0).any() or not torch.allclose(q.sum(-1), torch.ones((), dtype=q.dtype), atol=1e-6):
        raise GuardgenError("shard distributions must be non-negative and sum to 1 over the last axis")
    return q


def cp_delta(qs, divergence: str = "max_kl") -> CPDelta:
    """CP-Δ from shard distributions ``qs`` (n >= 2 tensors (..., V)); ``divergence``: "max_kl" or "kl".

    Several shards generalise the two-shard rule: min_i q_i / Z, or (Π_i q_i)^(1/n) / Z (geometric mean).
    """
    q = _check_dists(qs)
    if divergence == "max_kl":
        unnorm = q.min(0).values
        z = unnorm.sum(-1)
        k = -torch.log2(z)  # p/q_i <= 1/Z everywhere
    elif divergence == "kl":
        unnorm = torch.exp(torch.log(q).mean(0))  # sqrt(q1 q2) for two shards
        z = unnorm.sum(-1)
        k = -len(q) * torch.log2(z)  # Σ_i KL(p‖q_i) = -n log2 Z, so each KL <= that
    else:
        raise GuardgenError(f"unknown divergence {divergence!r}; use max_kl or kl")
    if (z <= 0).any():
        raise GuardgenError("the shard models have disjoint supports (Z = 0): no CP-Δ combination exists")
    return CPDelta(p=unnorm / z.unsqueeze(-1), z=z, k=k)


def log_ratios(p, qs) -> torch.Tensor:
    """log2 p(y) - log2 q_i(y), (n, ..., V); +inf where q_i(y) = 0 < p(y), -inf where p(y) = 0."""
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in qs])
    return torch.log2(p) - torch.log2(q)


def cp_k(p, qs, k: float) -> CPDelta:
    """Exact CP-k: p restricted to {y : log2 p/q_i <= k for all i}, renormalised; ``z`` is the acceptance ν_k."""
    k = check_k(k)
    p = torch.as_tensor(p, dtype=torch.float64)
    accept = (log_ratios(p, qs) <= k).all(0) & (p > 0)
    unnorm = p * accept
    z = unnorm.sum(-1)
    if (z <= 0).any():
        raise GuardgenError(f"k={k}: CP-k accepts nothing (acceptance 0); raise k")
    return CPDelta(p=unnorm / z.unsqueeze(-1), z=z, k=k + torch.log2(1.0 / z))


def sample_cp_k(p, qs, k: float, n: int, *, generator: torch.Generator | None = None,
                max_tries: int = 1_000_000) -> tuple[torch.Tensor, float]:
    """Rejection sampling from one categorical p (V,): draw y ~ p, keep it if log2 p(y)/q_i(y) <= k for all i.

    Returns ``n`` accepted samples (n,) and the empirical acceptance rate.
    """
    k = check_k(k)
    p = torch.as_tensor(p, dtype=torch.float64)
    ok = (log_ratios(p, qs) <= k).all(0)
    if generator is not None:  # multinomial draws on the generator's device
        p, ok = p.to(generator.device), ok.to(generator.device)
    out, tries = [], 0
    while sum(len(o) for o in out) < n:
        if tries >= max_tries:
            raise GuardgenError(f"k={k}: fewer than {n} samples accepted in {max_tries} draws; raise k")
        batch = max(n, 1024)
        y = torch.multinomial(p, batch, replacement=True, generator=generator)
        out.append(y[ok[y]])
        tries += batch
    return torch.cat(out)[:n], float(sum(len(o) for o in out) / tries)
