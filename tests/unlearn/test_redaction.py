import json

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app
from guardgen.errors import GuardgenError
from guardgen.models import load_model
from guardgen.models.conditioning import conditioning_for
from guardgen.models.diffusion import sample_images, save_pipeline
from unlearn import UNLEARN
from unlearn.redaction import Redaction, apply_rules, _has_key, _layer_list


def _embed(pipe, prompts):
    return conditioning_for(pipe).embed(prompts)["encoder_hidden_states"].flatten(1)


def test_class_redaction_is_an_exact_remap(tiny_class_pipeline):
    pipe = load_model(str(tiny_class_pipeline))
    red = Redaction().fit(pipe, forget=[3], override=[5])
    new = red.to_pipeline(pipe)
    w0, w1 = pipe.unet.class_embedding.weight, new.unet.class_embedding.weight
    assert torch.equal(w1[3], w0[5]) and not torch.equal(w1[3], w0[3])
    keep = [i for i in range(w0.shape[0]) if i != 3]
    assert torch.equal(w1[keep], w0[keep])
    a = sample_images(new, [3, 3], num_inference_steps=2, seed=1)
    b = sample_images(pipe, [5, 5], num_inference_steps=2, seed=1)
    assert torch.allclose(a, b, atol=1e-5)


def test_text_redaction_moves_redacted_prompts_and_keeps_the_others(tiny_sd_pipeline):
    pipe = load_model(str(tiny_sd_pipeline))
    forget, ref, keep = ["a red bird"], ["a blue car"], ["a green tree", "a small house"]
    red = Redaction(iterations=40, lr=1e-3, batch_size=8, random_prompts=16, device="cpu")
    red.fit(pipe, forget=forget, override=ref, retain=keep)
    new = red.to_pipeline(pipe)
    with torch.no_grad():
        target = _embed(pipe, ref)
        before, after = _embed(pipe, forget), _embed(new, forget)
        kept_before, kept_after = _embed(pipe, keep), _embed(new, keep)
    assert (after - target).norm() < 0.5 * (before - target).norm()
    assert (kept_after - kept_before).norm(dim=1).mean() < 0.7 * (after - before).norm()
    assert new.unet is pipe.unet  # the generator is untouched and shared
    assert red.history_[-1]["loss_redact"] < red.history_[0]["loss_redact"]


@pytest.mark.parametrize("variant", ["last_layers", "lora"])
def test_variants_train_only_their_part(tiny_sd_pipeline, variant):
    pipe = load_model(str(tiny_sd_pipeline))
    red = Redaction(variant=variant, last_layers=1, iterations=3, lr=1e-2, batch_size=4, random_prompts=4, device="cpu")
    red.fit(pipe, forget=["a red bird"], override=["a blue car"])
    a, b = pipe.text_encoder.state_dict(), red.text_encoder_.state_dict()
    assert set(a) == set(b)  # LoRA is merged back: a plain CLIP text encoder
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed
    if variant == "last_layers":
        n = len(_layer_list(pipe.text_encoder))
        assert all(f"layers.{n - 1}." in k or "final_layer_norm" in k for k in changed)
    else:
        assert all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_redacted_sd_pipeline_saves_and_loads(tmp_path, tiny_sd_pipeline):
    pipe = load_model(str(tiny_sd_pipeline))
    red = Redaction(iterations=2, batch_size=4, random_prompts=4, device="cpu").fit(pipe, forget=["a red bird"], override=["a cat"])
    folder = save_pipeline(red.to_pipeline(pipe), tmp_path / "redacted")
    loaded = load_model(str(folder))
    for k, v in red.text_encoder_.state_dict().items():
        assert torch.equal(loaded.text_encoder.state_dict()[k], v)


def test_sentence_encoder_redaction_round_trip(tmp_path):
    pipe = load_model("zoo:mnist-t2i")
    red = Redaction(iterations=3, lr=1e-4, batch_size=4, random_prompts=4, keyword_prompts=4, replace={"seven": "one"},
                    device="cpu").fit(pipe, forget=["a handwritten digit seven"], override=["a handwritten digit one"])
    new = red.to_pipeline(pipe)
    probe = ["a handwritten digit seven", "a scribbled seven"]
    target = pipe.encode_text(["a handwritten digit one", "a scribbled one"])
    assert (new.encode_text(probe) - target).norm() < (pipe.encode_text(probe) - target).norm()
    folder = save_pipeline(new, tmp_path / "t2i-redacted")
    assert (folder / "text_encoder" / "model.safetensors").is_file()
    loaded = load_model(str(folder))
    assert torch.allclose(loaded.encode_text(probe), new.encode_text(probe), atol=1e-5)
    assert not torch.allclose(load_model("zoo:mnist-t2i").encode_text(probe), new.encode_text(probe), atol=1e-3)


def test_keyword_rules():
    assert _has_key("A scribbled Seven.", {"seven": "one"}) and not _has_key("sevenfold", {"seven": "one"})
    assert apply_rules("a Seven and 7", {"seven": "one", "7": "1"}) == "a one and 1"


@pytest.mark.parametrize("kwargs,fit,message", [
    ({}, {"forget": [], "override": ["a cat"]}, "redaction set is empty"),
    ({}, {"forget": ["a cat"], "override": []}, "needs a reference"),
    ({}, {"forget": ["a cat"], "override": ["a cat"]}, "is itself redacted"),
    ({}, {"forget": ["a cat " * 40], "override": ["a dog"]}, "reads at most 77 and would ignore the rest"),
    ({"replace": {"cat": "dog"}}, {"forget": ["a cat"], "override": ["a cat sitting"]}, "contains a redacted keyword"),
    ({"variant": "half"}, {"forget": ["a cat"], "override": ["a dog"]}, "variant='half': must be one of full, last_layers, lora"),
])
def test_bad_input(tiny_sd_pipeline, kwargs, fit, message):
    pipe = load_model(str(tiny_sd_pipeline))
    with pytest.raises(GuardgenError, match=message):
        Redaction(iterations=1, **kwargs).fit(pipe, **fit)


def test_registered():
    assert UNLEARN.get("redaction") is Redaction


def test_cli_redact_a_class_model(tmp_path, tiny_class_pipeline):
    runner = CliRunner()
    out = tmp_path / "red"
    result = runner.invoke(app, ["unlearn", "redact", "--model", str(tiny_class_pipeline), "--prompts", "3",
                                 "--reference", "5", "--no-evaluate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "redaction" and run["redacted"] == [3] and run["reference"] == [5]
    assert torch.equal(load_model(str(out)).unet.class_embedding.weight[3], load_model(str(tiny_class_pipeline)).unet.class_embedding.weight[5])


def test_cli_redact_resumes_an_interrupted_distillation(tmp_path, tiny_sd_pipeline, monkeypatch):
    """A user's Stable Diffusion folder (no prompt table: this used to stop at "pass --retain", an option redact did not
    have). Ctrl-C after step 2 of 4 (state saved at 2): exit 130 with the hint; --resume runs steps 3-4 only and saves."""
    from unlearn._resume import LoopState

    args = ["unlearn", "redact", "--model", str(tiny_sd_pipeline), "--prompts", "a red bird", "--reference", "a cat",
            "--retain", "a blue car", "--iterations", "4", "--set", "checkpoint_every=2", "--set", "random_prompts=4", "--set", "batch_size=4",
            "--no-evaluate", "--device", "cpu", "--out", str(tmp_path / "red")]
    save = LoopState.save

    def save_then_stop(self, step, *a, **kw):
        save(self, step, *a, **kw)
        if step == 2 and not self.resume:
            raise KeyboardInterrupt

    monkeypatch.setattr(LoopState, "save", save_then_stop)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 130 and "--resume" in result.output, result.output
    assert (tmp_path / "red" / "training_state" / "state.json").is_file()
    starts = []
    start = LoopState.start
    monkeypatch.setattr(LoopState, "start", lambda self, *a, **kw: starts.append(start(self, *a, **kw)) or starts[-1])
    result = CliRunner().invoke(app, args + ["--resume"])
    assert result.exit_code == 0, result.output
    assert starts == [3] and (tmp_path / "red" / "run.json").is_file()
    assert not (tmp_path / "red" / "training_state").exists()


@pytest.mark.parametrize("args,message", [
    (["--prompts", "3", "--reference", "3"], "equals the forgotten concept"),
    (["--prompts", "3", "--reference", "5", "--replace", "seven"], "expected KEY=VALUE"),
])
def test_cli_bad_input(tmp_path, tiny_class_pipeline, args, message):
    result = CliRunner().invoke(app, ["unlearn", "redact", "--model", str(tiny_class_pipeline), *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and message in result.output, result.output


def test_evaluate_redaction_samples_both_models_on_the_same_seeds(tiny_sd_pipeline):
    from unlearn.evaluate import evaluate_redaction

    pipe = load_model(str(tiny_sd_pipeline))
    # a random oracle that sees each sample's pattern, not its overall level
    oracle = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                 torch.nn.LayerNorm(48, elementwise_affine=False), torch.nn.Linear(48, 10))
    kwargs = dict(redacted_prompts={"a red bird": 0}, reference_class=1, paraphrases={"a crimson bird": 0},
                  retained_prompts=["a green tree", "a small house"], per_prompt=8, steps=2, guidance_scale=2.0)
    cache, other = {}, {}
    scores = evaluate_redaction(pipe, pipe, oracle, cache=cache, **kwargs)
    evaluate_redaction(pipe, pipe, oracle, cache=other, seed=1, **kwargs)
    assert scores["guidance_scale"] == 2.0 and scores["retained_agreement"] == 1.0
    assert torch.equal(cache["original", "retained"], cache["redacted", "retained"])
    assert not torch.equal(cache["original", "retained"], other["original", "retained"])  # the oracle does tell samples apart
    for group in ("redacted", "paraphrase"):
        assert scores[f"{group}_reference_rate_original"] == scores[f"{group}_reference_rate_redacted"]


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_an_interrupted_redaction_resumes_exactly(tiny_sd_pipeline, tmp_path, variant, stop_at):
    pipe = load_model(str(tiny_sd_pipeline))
    kw = dict(variant=variant, iterations=5, lr=1e-3, batch_size=4, random_prompts=4, checkpoint_every=2, device="cpu")
    fit = dict(forget=["a red bird"], override=["a cat"])
    ref = Redaction(**kw).fit(pipe, **fit)

    with pytest.raises(stop_at.error):
        Redaction(**kw).fit(pipe, **fit, out=tmp_path, callback=stop_at(4))
    steps = []
    run = Redaction(**kw).fit(pipe, **fit, out=tmp_path, resume=True, callback=lambda step, logs: steps.append(step))
    assert steps == [3, 4, 5] and all(a == pytest.approx(b) for a, b in zip(run.history_, ref.history_))
    for a, b in zip(ref.text_encoder_.state_dict().values(), run.text_encoder_.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not (tmp_path / "training_state").exists()
