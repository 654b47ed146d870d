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


@pytest.mark.parametrize("stop_stage,stop_step", [("base", 2), ("train round 1", 1), ("train round 2", 3)])
def test_an_interrupted_omat_run_resumes_as_one_run(tiny_class_pipeline, tmp_path, stop_stage, stop_step, stop_at):
    """Cut short while training the base, in round 1 (after the offline pool) or mid round 2 (after a refresh),
    then resumed: pool, attack log, history and detector as one uninterrupted run, and the state is removed."""
    from guardgen.models import load_model

    pipe = load_model(str(tiny_class_pipeline))
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(16, 1, 8, 8, generator=g), torch.rand(16, 1, 8, 8, generator=g)

    def make():
        return OMAT(detector={"backbone": "guardgen_digitnet", "model_args": {"width": 4}, "epochs": 2, "batch_size": 8,
                              "device": "cpu", "checkpoint_every": 1},
                    attack={"steps": 1, "num_inference_steps": 2}, pool_size=4, refresh_every=1, refresh_size=2, epochs=2)

    ref = make().fit(real, fake, pipe=pipe)

    state = tmp_path / "omat-state"
    with pytest.raises(stop_at.error):
        make().fit(real, fake, pipe=pipe, state_dir=state, callback=stop_at(stop_step, stop_stage))
    stages = []
    run = make().fit(real, fake, pipe=pipe, state_dir=state, resume=True,
                     callback=lambda step, logs: stages.append(logs.get("stage")))
    if stop_stage != "base":
        assert "base" not in stages and "offline pool" not in stages  # neither is done again
    assert torch.equal(run.pool_, ref.pool_)
    assert [log["stage"] for log in run.attack_log_] == [log["stage"] for log in ref.attack_log_]
    assert [h["loss"] for h in run.detector_.history_] == pytest.approx([h["loss"] for h in ref.detector_.history_], rel=1e-5)
    assert torch.allclose(run.predict_proba(real), ref.predict_proba(real), atol=1e-6)
    assert not state.exists()


def test_resuming_omat_with_other_settings_is_one_line(tiny_class_pipeline, tmp_path, stop_at):
    from guardgen.models import load_model

    pipe = load_model(str(tiny_class_pipeline))
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(16, 1, 8, 8, generator=g), torch.rand(16, 1, 8, 8, generator=g)
    kw = dict(detector={"backbone": "guardgen_digitnet", "model_args": {"width": 4}, "epochs": 1, "batch_size": 8, "device": "cpu"},
              attack={"steps": 1, "num_inference_steps": 2}, pool_size=4, refresh_every=1, refresh_size=2, epochs=2)

    with pytest.raises(stop_at.error):
        OMAT(**kw).fit(real, fake, pipe=pipe, state_dir=tmp_path / "s", callback=stop_at(1, "train round 2"))
    with pytest.raises(GuardgenError, match="used other settings \\(refresh_size\\)"):
        OMAT(**{**kw, "refresh_size": 4}).fit(real, fake, pipe=pipe, state_dir=tmp_path / "s", resume=True)
