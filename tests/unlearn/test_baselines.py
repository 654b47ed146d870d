import pytest
import torch

from guardgen.errors import GuardgenError
from guardgen.models import load_model
from guardgen.models.diffusion import load_diffusion, sample_images
from unlearn import UNLEARN
from unlearn.esd import ESD
from unlearn.ga import GA
from unlearn.retrain import Retrain


def _changed(before, after, names=None):
    a, b = before.state_dict(), after.state_dict()
    return {k for k in a if not torch.equal(a[k], b[k]) and (names is None or names(k))}


def test_registry_has_the_issue_methods():
    assert {"sfd", "esd", "ga", "retrain"} <= set(UNLEARN.names())


def test_esd_moves_the_forgotten_prediction_toward_negative_guidance(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    esd = ESD(iterations=6, batch_size=4, ddim_steps=3, lr=1e-3, device="cpu").fit(pipe, forget=[7])
    x, t = torch.randn(8, 1, 8, 8), torch.full((8,), 50)
    c, null = torch.full((8,), 7), torch.full((8,), 10)
    with torch.no_grad():
        e0, ec = pipe.unet(x, t, class_labels=null).sample, pipe.unet(x, t, class_labels=c).sample
        target = e0 - (ec - e0)
        before = (ec - target).pow(2).mean()
        after = (esd.unet_(x, t, class_labels=c).sample - target).pow(2).mean()
    assert after < before
    assert esd.to_pipeline(pipe).unet is esd.unet_


def test_esd_x_only_touches_cross_attention(tiny_sd_pipeline):
    pipe = load_model(str(tiny_sd_pipeline))
    esd = ESD(iterations=1, batch_size=2, ddim_steps=2, train="cross_attn", device="cpu").fit(pipe, forget=["a cat"])
    changed = _changed(pipe.unet, esd.unet_)
    assert changed and all("attn2" in k for k in changed)


def test_ga_raises_the_forget_loss(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    ga = GA(iterations=5, batch_size=8, samples_per_condition=8, sample_steps=2, lr=1e-3, device="cpu")
    ga.fit(pipe, forget=[7], retain=[1, 2])
    assert ga.history_[-1]["loss_forget"] > ga.history_[0]["loss_forget"]
    assert sample_images(ga.to_pipeline(pipe), [7], num_inference_steps=2).shape == (1, 1, 8, 8)


def test_retrain_needs_a_zoo_recipe(tiny_class_pipeline, tmp_path):
    with pytest.raises(GuardgenError, match="zoo"):
        Retrain().fit(load_diffusion(tiny_class_pipeline), forget=[7], out=tmp_path)


def test_retrain_rebuilds_without_the_class(monkeypatch, tmp_path, tiny_class_pipeline):
    from guardgen import zoo

    calls = {}

    def fake_build(name, out, **kw):
        calls.update(name=name, **kw)
        import shutil

        shutil.copytree(tiny_class_pipeline, out)
        return {"train_seconds": 1.0}

    monkeypatch.setattr(zoo, "build", fake_build)
    r = Retrain(zoo_name="mnist-ddpm", steps=7).fit(None, forget=[7], out=tmp_path)
    assert calls["name"] == "mnist-ddpm" and calls["exclude"] == (7,) and calls["steps"] == 7
    assert type(r.to_pipeline(None)).__name__ == "ClassConditionalPipeline"


def test_retrain_maps_text_concepts_to_their_class(monkeypatch, tmp_path, tiny_class_pipeline):
    from guardgen import zoo

    calls = {}

    def fake_build(name, out, **kw):
        import shutil

        calls.update(name=name, **kw)
        shutil.copytree(tiny_class_pipeline, out)
        return {}

    class TextZooModel:  # what the zoo's text pipeline offers: the digit each known phrasing names
        @staticmethod
        def concept_class(prompt):
            return {"a handwritten digit seven": 7, "a seven": 7, "a handwritten digit one": 1}.get(prompt)

    monkeypatch.setattr(zoo, "build", fake_build)
    Retrain(zoo_name="mnist-t2i").fit(TextZooModel(), forget=["a handwritten digit seven", "a seven"], out=tmp_path / "a")
    assert calls["name"] == "mnist-t2i" and calls["exclude"] == (7,)
    with pytest.raises(GuardgenError, match="neither a class id nor a phrasing"):
        Retrain(zoo_name="mnist-t2i").fit(TextZooModel(), forget=["a purple cow"], out=tmp_path / "b")


@pytest.mark.parametrize("make,fit", [
    (lambda: ESD(iterations=7, batch_size=4, ddim_steps=3, lr=1e-3, checkpoint_every=2, device="cpu"), {"forget": [7]}),
    (lambda: GA(iterations=7, batch_size=8, samples_per_condition=8, sample_steps=2, lr=1e-3, checkpoint_every=2, device="cpu"),
     {"forget": [7], "retain": [1, 2]}),
])
def test_an_interrupted_baseline_resumes_to_the_same_unet(tiny_class_pipeline, tmp_path, make, fit, stop_at):
    """Stopped in iteration 6 (last saved: 4), resumed: iterations 5-7 only, and the weights of an uninterrupted run."""
    pipe = load_diffusion(tiny_class_pipeline)
    ref = make().fit(pipe, **fit)

    with pytest.raises(stop_at.error):
        make().fit(pipe, **fit, out=tmp_path, callback=stop_at(6))
    assert (tmp_path / "training_state" / "state.json").is_file()
    with pytest.raises(GuardgenError, match="used other settings \\(lr\\)"):
        method = make()
        method.lr = 5e-4
        method.fit(pipe, **fit, out=tmp_path, resume=True)
    steps = []
    run = make().fit(pipe, **fit, out=tmp_path, resume=True, callback=lambda step, logs: steps.append(step))
    assert steps == [5, 6, 7] and [h["step"] for h in run.history_] == list(range(1, 8))
    assert all(a == pytest.approx(b) for a, b in zip(run.history_, ref.history_))  # the same losses, step for step
    for a, b in zip(ref.unet_.state_dict().values(), run.unet_.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not (tmp_path / "training_state").exists()
