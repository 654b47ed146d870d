"""On-manifold attack: lowers the detector score through the sampler, keeps ||z_T|| = sqrt(d)."""

import pytest
import torch

from attacks import ATTACKS
from attacks.on_manifold import OnManifoldAttack
from guardgen.errors import GuardgenError
from guardgen.models import load_model


class BrightnessDetector(torch.nn.Module):
    """Fake logit = 40 * (mean pixel - 0.3): brighter images look more generated."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

    def forward(self, x):
        return self.scale * (x.flatten(1).mean(1) - 0.3)


def test_attack_lowers_score_and_stays_on_the_shell(tiny_class_pipeline):
    pipe = load_model(str(tiny_class_pipeline))
    assert ATTACKS.get("on_manifold") is OnManifoldAttack
    attack = OnManifoldAttack(steps=4, lr=0.2, num_inference_steps=2, threshold=1e-6)  # never stops early
    res = attack.attack(pipe, BrightnessDetector(), [1, 2, 3, 4])
    assert res.images.shape == res.clean.shape == (4, 1, 8, 8)
    assert (res.score_after < res.score_before).all()
    assert torch.allclose(res.norm_ratio, torch.ones(4), atol=1e-4)
    assert (res.drift > 0).all() and (res.steps == 4).all() and not res.success.any()
    # the kept image is the generator's own output for the kept latent (on-manifold)
    again = OnManifoldAttack(steps=0, num_inference_steps=2).attack(pipe, BrightnessDetector(), [1, 2, 3, 4], latents=res.latents)
    assert torch.allclose(again.clean, res.images, atol=1e-5)


def test_attack_stops_per_image_at_the_threshold(tiny_class_pipeline):
    pipe = load_model(str(tiny_class_pipeline))
    res = OnManifoldAttack(steps=3, num_inference_steps=2, threshold=0.999999).attack(pipe, BrightnessDetector(), [0, 1])
    assert res.success.all() and (res.steps == 0).all() and torch.equal(res.images, res.clean)


def test_attack_through_a_latent_diffusion_vae(tiny_sd_pipeline):
    pipe = load_model(str(tiny_sd_pipeline))
    res = OnManifoldAttack(steps=1, num_inference_steps=2, threshold=1e-6).attack(pipe, BrightnessDetector(), ["a cat", "a dog"])
    assert res.images.shape[0] == 2 and res.latents.shape[1] == 4
    assert torch.allclose(res.norm_ratio, torch.ones(2), atol=1e-4)


def test_attack_on_a_pipeline_in_another_precision(tiny_sd_pipeline):
    """float32 latents through a pipeline held in another dtype (float16 on a GPU; float64 here, which the CPU runs)."""
    pipe = load_model(str(tiny_sd_pipeline)).to(torch.float64)
    res = OnManifoldAttack(steps=1, num_inference_steps=2, threshold=1e-6).attack(pipe, BrightnessDetector(), ["a cat", "a dog"])
    assert res.images.dtype == torch.float32 and torch.isfinite(res.images).all()
    assert torch.allclose(res.norm_ratio, torch.ones(2), atol=1e-4)


@pytest.mark.parametrize("model", [torch.nn.Linear(2, 2), (torch.nn.Linear(2, 2), None)])
def test_no_latent_to_optimise(model):
    with pytest.raises(GuardgenError, match="no diffusion latent"):
        OnManifoldAttack().attack(model, BrightnessDetector(), [0])
