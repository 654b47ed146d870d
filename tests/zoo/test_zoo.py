import json

import pytest
import torch

from guardgen import zoo
from guardgen.errors import GuardgenError
from guardgen.models.classifier import load_classifier


def test_zoo_lists_the_issue_models():
    assert {"mnist-oracle", "mnist-ddpm"} <= set(zoo.zoo_names())


def test_unknown_setting_is_refused(tmp_path):
    with pytest.raises(GuardgenError, match="unknown setting"):
        zoo.build("mnist-oracle", tmp_path / "o", epochs=1, nonsense=3)


def _weights(folder):
    from guardgen.checkpoint import load_safetensors

    return load_safetensors(folder / "model.safetensors")


def test_oracle_build_is_seeded_and_loads(tmp_path):
    a = zoo.build("mnist-oracle", tmp_path / "a", epochs=1, device="cpu")
    b = zoo.build("mnist-oracle", tmp_path / "b", epochs=1, device="cpu")
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test_accuracy"] == b["test_accuracy"] > 0.3  # one epoch already learns something
    model = load_classifier(tmp_path / "a")
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    assert (tmp_path / "a" / "README.md").read_text().startswith("# mnist-oracle")


def test_interrupted_build_resumes_to_the_same_model(tmp_path):
    straight = tmp_path / "straight"
    zoo.build("mnist-oracle", straight, epochs=1, device="cpu", checkpoint_every=10)

    out = tmp_path / "interrupted"

    def stop_at_15(step, logs):
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoo.build("mnist-oracle", out, epochs=1, device="cpu", checkpoint_every=10, callback=stop_at_15)
    assert (out / "training_state" / "state.json").is_file()
    assert not (out / "model.safetensors").exists()  # no half model where none stood
    with pytest.raises(GuardgenError, match="used other settings \\(lr\\)"):
        zoo.build("mnist-oracle", out, epochs=1, lr=0.01, device="cpu", checkpoint_every=10, resume=True)
    meta = json.loads((out / "training_state" / "state.json").read_text())
    assert meta["extra"]["seconds"] > 0
    meta["extra"]["seconds"] = 1000.0  # far more than the resumed part takes: seen in the result only if it is added
    (out / "training_state" / "state.json").write_text(json.dumps(meta))
    metrics = zoo.build("mnist-oracle", out, epochs=1, device="cpu", checkpoint_every=10, resume=True)
    assert 1000 < metrics["train_seconds"] < 1100  # the time counts the interrupted run's
    w1, w2 = _weights(straight), _weights(out)
    assert all(torch.allclose(w1[k].float(), w2[k].float(), atol=1e-5) for k in w1)
    assert not (out / "training_state").exists()


def test_interrupted_rebuild_keeps_the_good_model(tmp_path):
    out = tmp_path / "o"
    zoo.build("mnist-oracle", out, epochs=1, device="cpu")
    good = _weights(out)

    def stop(step, logs):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoo.build("mnist-oracle", out, epochs=1, device="cpu", seed=3, callback=stop)
    kept = _weights(out)
    assert all(torch.equal(good[k], kept[k]) for k in good)
    load_classifier(out)


def test_tiny_ddpm_build_writes_a_loadable_pipeline(tmp_path):
    from guardgen.models import load_model

    oracle = load_classifier(zoo.zoo_path("mnist-oracle"))
    from guardgen.zoo.ddpm import DDPMConfig, build_ddpm

    config = DDPMConfig(steps=4, batch_size=8, block_out_channels=(8, 16), device="cpu", eval_samples_per_class=1, checkpoint_every=2)
    metrics = build_ddpm(config, tmp_path / "d", oracle=oracle)
    assert {"conditional_accuracy", "fd_oracle", "per_class_accuracy"} <= set(metrics)
    assert 0.0 <= metrics["conditional_accuracy"] <= 1.0 and metrics["fd_oracle"] > 0
    pipe = load_model(str(tmp_path / "d"))
    assert pipe([3], num_inference_steps=2).images.shape == (1, 1, 16, 16)


def test_ddpm_exclude_removes_classes_from_training(monkeypatch, tmp_path):
    from guardgen.zoo import ddpm

    seen = []
    real = ddpm.load_mnist

    def spy(split, resolution, exclude=()):
        out = real(split, resolution, exclude=exclude)
        seen.append((split, set(out.labels.tolist())))
        return out

    monkeypatch.setattr(ddpm, "load_mnist", spy)
    ddpm.build_ddpm(ddpm.DDPMConfig(steps=1, batch_size=4, block_out_channels=(8, 16), device="cpu", exclude=(7,)), tmp_path / "d")
    assert seen[0] == ("train", set(range(10)) - {7})


def test_shipped_zoo_quality_records_meet_the_issue_targets():
    oracle = json.loads((zoo.zoo_path("mnist-oracle") / "results.json").read_text())
    ddpm = json.loads((zoo.zoo_path("mnist-ddpm") / "guardgen.json").read_text())["metrics"]
    t2i = json.loads((zoo.zoo_path("mnist-t2i") / "guardgen.json").read_text())["metrics"]
    assert oracle["test_accuracy"] >= 0.97
    assert ddpm["conditional_accuracy"] >= 0.90
    assert t2i["prompt_accuracy_train"] >= 0.90 and t2i["prompt_accuracy_heldout"] >= 0.85


def test_shipped_oracle_really_is_accurate():
    from guardgen.data import load_mnist
    from guardgen.metrics import accuracy
    from guardgen.utils import predict_logits

    test = load_mnist("test")
    assert accuracy(predict_logits(load_classifier(zoo.zoo_path("mnist-oracle")), test.images), test.labels) >= 0.97


def test_t2i_knows_its_phrasings():
    from guardgen.models import load_model

    pipe = load_model("zoo:mnist-t2i")
    assert pipe.concept_class("a handwritten digit seven") == 7
    assert pipe.concept_class("a scribbled seven") == 7  # held out, still known for evaluation
    assert pipe.concept_class("a photo of a cat") is None


@pytest.mark.parametrize("name,condition", [("mnist-ddpm", 1), ("mnist-t2i", "a handwritten digit one")])
def test_shipped_diffusion_models_sample_the_asked_digit_under_guidance(name, condition):
    """Guided DDIM sampling works (the samplers ship with clip_sample off: clipping x_0 but not eps broke it)."""
    from guardgen.models import load_model
    from guardgen.models.diffusion import sample_images
    from guardgen.utils import predict_logits

    pipe, oracle = load_model(f"zoo:{name}"), load_classifier(zoo.zoo_path("mnist-oracle"))
    assert pipe.scheduler.config.clip_sample is False
    images = sample_images(pipe, [condition] * 16, num_inference_steps=20, guidance_scale=2.0, seed=0)
    assert (predict_logits(oracle, images).argmax(1) == 1).float().mean().item() >= 0.9


def test_interrupted_t2i_build_resumes_to_the_same_unet(tmp_path):
    """The diffusion models' shared loop (guardgen.zoo._loop.train_diffusion): an interrupted text-model build resumed
    from its last checkpoint ends on the weights of a straight build (its phrasing and prompt-dropout draws included)."""
    from guardgen.checkpoint import load_safetensors
    from guardgen.zoo.t2i import T2IConfig, build_t2i

    kw = dict(steps=7, batch_size=8, block_out_channels=(8, 16), device="cpu", eval_samples_per_class=0, checkpoint_every=3,
              embeddings_file=str(zoo.zoo_path("mnist-t2i") / "prompt_embeddings.safetensors"))
    build_t2i(T2IConfig(**kw), tmp_path / "straight")

    def stop_at_5(step, logs):
        if step == 5:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        build_t2i(T2IConfig(**kw), out, callback=stop_at_5)
    with pytest.raises(GuardgenError, match="used other settings \\(steps\\)"):
        build_t2i(T2IConfig(**{**kw, "steps": 9}), out, resume=True)
    build_t2i(T2IConfig(**kw), out, resume=True)
    unet = "unet/diffusion_pytorch_model.safetensors"
    w1, w2 = load_safetensors(tmp_path / "straight" / unet), load_safetensors(out / unet)
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6) for k in w1)
    build_t2i(T2IConfig(**{**kw, "seed": 1}), tmp_path / "other")
    other = load_safetensors(tmp_path / "other" / unet)
    assert not all(torch.allclose(w1[k], other[k], atol=1e-6) for k in w1)  # the check can tell builds apart


@pytest.mark.parametrize("overrides,message", [
    ({"exclude": (11,)}, "exclude names class 11"),
    ({"exclude": (-1,)}, "exclude names class -1"),
    ({"batch_size": 100_000}, "batch_size 100000 is more than the 4000 training images"),
    ({"exclude": tuple(range(9)), "batch_size": 401}, "more than the 400 training images left by exclude"),
])
def test_settings_a_build_cannot_use_are_refused_before_training(overrides, message):
    with pytest.raises(GuardgenError, match=message):
        zoo.settings("mnist-oracle", overrides)
