"""OMAT: the offline pool and the refreshes are mixed into the fake class."""

import pytest
import torch

from detectors import DETECTORS
from detectors.detector import Detector
from detectors.omat import OMAT
from guardgen.errors import GuardgenError


def test_omat_mixes_pool_into_fakes(tiny_class_pipeline, monkeypatch):
    from guardgen.models import load_model

    pipe = load_model(str(tiny_class_pipeline))
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(16, 1, 8, 8, generator=g), torch.rand(16, 1, 8, 8, generator=g)
    seen = []
    original = Detector.fit

    def spy(self, real, fake, **kw):
        seen.append(len(fake))
        return original(self, real, fake, **kw)

    monkeypatch.setattr(Detector, "fit", spy)
    runner = OMAT(detector={"backbone": "guardgen_digitnet", "model_args": {"width": 4}, "epochs": 1, "device": "cpu"},
                  attack={"steps": 1, "num_inference_steps": 2}, pool_size=4, refresh_every=1, refresh_size=2,
                  pool_repeat=2, epochs=2)
    assert DETECTORS.get("omat") is OMAT
    out = runner.fit(real, fake, pipe=pipe)
    assert out is runner
    # base (16 fakes), round 1: fakes + 2 x offline pool of 4, round 2: fakes + 2 x (4 + 2 refreshed)
    assert seen == [16, 16 + 8, 16 + 12]
    assert len(runner.pool_) == 6 and isinstance(runner.detector_, Detector)
    assert [log["stage"] for log in runner.attack_log_] == ["offline pool", "refresh 1"]
    assert runner.predict_proba(real).shape == (16,)


def test_omat_needs_a_diffusion_latent():
    with pytest.raises(GuardgenError, match="no diffusion latent"):
        OMAT().fit(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), pipe=torch.nn.Linear(2, 2))
