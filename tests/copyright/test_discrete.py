"""Exact CP-Δ and CP-k on categorical models: closed forms, guarantees, and the rejection sampler."""

import math

import pytest
import torch

from guardgen.copyright import cp_delta, cp_k, hellinger2, k_from_hellinger, k_from_tv, kl, max_kl, sample_cp_k, tv
from guardgen.errors import GuardgenError

Q1 = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
Q2 = torch.tensor([0.1, 0.3, 0.2, 0.4], dtype=torch.float64)


def test_cp_delta_max_kl_matches_the_closed_form():
    out = cp_delta([Q1, Q2], "max_kl")
    z = 0.6  # Σ min(q1, q2) = 0.1 + 0.3 + 0.2 = 1 - TV (TV = 0.4)
    assert out.z.item() == pytest.approx(z, abs=1e-12) and 1 - tv(Q1, Q2) == pytest.approx(z)
    assert torch.allclose(out.p, torch.tensor([0.1, 0.3, 0.2, 0.0], dtype=torch.float64) / z, atol=1e-12)
    assert out.k.item() == pytest.approx(-math.log2(z)) == pytest.approx(k_from_tv(0.4))
    assert max(max_kl(out.p, Q1), max_kl(out.p, Q2)) == pytest.approx(out.k.item(), abs=1e-9)  # tight


def test_cp_delta_kl_matches_the_closed_form():
    out = cp_delta([Q1, Q2], "kl")
    z = math.sqrt(0.05) + 0.3 + 0.2
    assert out.z.item() == pytest.approx(z, abs=1e-12) and 1 - hellinger2(Q1, Q2) == pytest.approx(z)
    expected = torch.tensor([math.sqrt(0.05), 0.3, 0.2, 0.0], dtype=torch.float64) / z
    assert torch.allclose(out.p, expected, atol=1e-12)
    # KL(p‖q1) + KL(p‖q2) = -2 log2 Z exactly, so each is at most k
    assert kl(out.p, Q1) + kl(out.p, Q2) == pytest.approx(-2 * math.log2(z), abs=1e-9)
    assert out.k.item() == pytest.approx(k_from_hellinger(1 - z))


def test_cp_delta_guarantees_hold_on_random_batches():
    g = torch.Generator().manual_seed(0)
    q1 = torch.softmax(3 * torch.randn(64, 12, generator=g), -1)
    q2 = torch.softmax(3 * torch.randn(64, 12, generator=g), -1)
    m = cp_delta([q1, q2], "max_kl")
    worst = torch.maximum(torch.as_tensor(max_kl(m.p, q1)), torch.as_tensor(max_kl(m.p, q2)))
    assert torch.allclose(worst, m.k, atol=1e-9)
    h = cp_delta([q1, q2], "kl")
    assert (torch.as_tensor(kl(h.p, q1)) <= h.k + 1e-9).all() and (torch.as_tensor(kl(h.p, q2)) <= h.k + 1e-9).all()
    assert torch.allclose(h.p.sum(-1), torch.ones(64, dtype=torch.float64))


def test_cp_k_exact_and_by_rejection_sampling():
    p = torch.tensor([0.5, 0.25, 0.25])
    q1 = torch.tensor([0.05, 0.5, 0.45])  # log2 p/q1 = [3.32, -1, -0.85]
    q2 = p.clone()
    out = cp_k(p, [q1, q2], k=1.0)
    assert out.z.item() == pytest.approx(0.5)  # y = 0 rejected
    assert torch.allclose(out.p, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))
    assert out.k.item() == pytest.approx(2.0)  # k + log2(1/ν) = 1 + 1
    assert max(max_kl(out.p, q1), max_kl(out.p, q2)) <= out.k.item()
    samples, rate = sample_cp_k(p, [q1, q2], k=1.0, n=20_000, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(samples, minlength=3).double() / len(samples)
    assert torch.allclose(freq, out.p, atol=0.02) and rate == pytest.approx(0.5, abs=0.02)


def test_bad_input():
    with pytest.raises(GuardgenError, match="out of range"):
        cp_k(Q2, [Q1, Q2], k=-0.5)
    with pytest.raises(GuardgenError, match="disjoint supports"):
        cp_delta([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])
    with pytest.raises(GuardgenError, match="at least two"):
        cp_delta([Q1])
    with pytest.raises(GuardgenError, match="sum to 1"):
        cp_delta([Q1, Q2 * 2])
    with pytest.raises(GuardgenError, match="accepts nothing"):
        cp_k(torch.tensor([1.0, 0.0]), [torch.tensor([0.1, 0.9])], k=0.5)
