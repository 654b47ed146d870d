"""CP-k on diffusion pipelines with the per-step Gaussian path log-ratio (class-conditional and tiny SD)."""

import pytest
import torch

from guardgen.copyright import CPk, audit_naf, calibrate_k, sample_with_log_ratios
from guardgen.errors import GuardgenError
from guardgen.models.diffusion import load_diffusion


def _perturbed(pipe, scale=0.05, seed=1):
    import copy

    q = copy.deepcopy(pipe)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in q.unet.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return q


def test_log_ratio_is_zero_against_the_same_model_and_seeded(tiny_class_pipeline):
    p = load_diffusion(tiny_class_pipeline)
    q = _perturbed(p)
    x, lr = sample_with_log_ratios(p, [p, q], [3, 3, 5], num_inference_steps=4, seed=0)
    assert x.shape == (3, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert torch.allclose(lr[:, 0], torch.zeros(3, dtype=torch.float64), atol=1e-6)  # p vs p: ratio 0
    assert torch.isfinite(lr[:, 1]).all() and lr[:, 1].abs().max() > 0
    x2, lr2 = sample_with_log_ratios(p, [p, q], [3, 3, 5], num_inference_steps=4, seed=0)
    assert torch.equal(x, x2) and torch.equal(lr, lr2)
    with pytest.raises(GuardgenError, match="eta"):
        sample_with_log_ratios(p, [q], [3], num_inference_steps=2, eta=0.0)


def test_cp_k_rejects_what_exceeds_k_and_reports_the_acceptance(tiny_class_pipeline):
    p = load_diffusion(tiny_class_pipeline)
    q = _perturbed(p, scale=0.1)
    _, lr = sample_with_log_ratios(p, [q], [1] * 32, num_inference_steps=4, seed=5)
    k = calibrate_k(lr, 0.5)
    res = CPk(k=k, num_inference_steps=4, seed=0).sample(p, [q], [1] * 8)
    assert res.images.shape == (8, 1, 8, 8) and (res.log_ratios <= k).all()
    assert 0 < res.acceptance_rate < 1 and len(res.draw_log_ratios) == len(res.draw_conditions) > 8
    assert res.k_effective == pytest.approx(k + torch.log2(torch.tensor(1 / res.acceptance_rate)).item())
    assert res.per_condition["1"]["draws"] == len(res.draw_conditions)
    everything = CPk(k=1e9, num_inference_steps=4, seed=0).sample(p, [q], [1] * 4)
    assert everything.acceptance_rate == 1.0 and torch.equal(everything.images, everything.first_images)
    with pytest.raises(GuardgenError, match="out of range"):
        CPk(k=-1.0).sample(p, [q], [1])
    with pytest.raises(GuardgenError, match="acceptance"):
        CPk(k=0.0, num_inference_steps=4, max_draws_per_sample=2).sample(p, [q], [1] * 2)


def test_log_ratio_on_a_tiny_stable_diffusion_pipeline(tiny_sd_pipeline):
    p = load_diffusion(tiny_sd_pipeline)
    q = _perturbed(p, scale=0.02)
    x, lr = sample_with_log_ratios(p, [p, q], ["a red car", "a cat"], num_inference_steps=3, seed=0)
    assert x.shape[:2] == (2, 3) and lr.shape == (2, 2)
    assert torch.allclose(lr[:, 0], torch.zeros(2, dtype=torch.float64), atol=1e-4) and lr[:, 1].abs().max() > 0


def test_audit_naf_gives_the_audit_sections_figures(tiny_class_pipeline):
    p = load_diffusion(tiny_class_pipeline)
    q = _perturbed(p, scale=0.1)
    out = audit_naf(p, [q, p], conditions=[0, 1], samples=4, seed=0, num_inference_steps=3)
    assert len(out["k_values"]) == 2 and max(out["k_values"]) >= out["k_threshold"] >= 0
    assert 0 < out["acceptance"] <= 1
    assert out["effective_k"] == pytest.approx(out["k_threshold"] + torch.log2(torch.tensor(1 / out["acceptance"])).item())
