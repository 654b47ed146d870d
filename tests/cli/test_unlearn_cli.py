import json

import pytest
from typer.testing import CliRunner

from guardgen.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_methods_lists_every_method():
    result = invoke("unlearn", "methods")
    assert result.exit_code == 0
    for name in ("sfd", "esd", "ga", "retrain"):
        assert name in result.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines()
            if line.count("│") > 3 and line.split("│")[1].strip()}
    assert (rows["sfd"], rows["adapt_then_unlearn"], rows["salun"]) == ("diffusion", "gan", "classifier")


def test_every_method_has_its_own_one_line_summary():
    from guardgen.cli._common import results_table
    from unlearn import UNLEARN

    summaries = [UNLEARN.get(name).summary for name in UNLEARN.names()]
    assert all(isinstance(s, str) and s and "\n" not in s for s in summaries)
    assert len(set(summaries)) == len(summaries)  # not a module docstring shared by several methods
    table = results_table("t", [{"method": "sfd", "description": "text", "n": 3, "x": 0.5, "ci": "0.97 (0.95-0.99)"},
                                {"method": "esd", "description": "7 digits", "n": 4, "x": "", "ci": "nan"}])
    assert [c.justify for c in table.columns] == ["left", "left", "right", "right", "right"]  # text left, numbers right


def test_unlearn_concept_end_to_end_on_the_zoo(tmp_path):
    out = tmp_path / "run"
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", 7, "--override", 1,
                    "--iterations", 2, "--eval-per-class", 2, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert {"before", "after"} <= set(results)
    assert {"forget_rate", "retain_accuracy", "fd_retained", "samples_per_second"} <= set(results["after"])
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "sfd" and run["forget"] == [7] and run["override"] == [1]
    assert (out / "grid.png").is_file() and (out / "model_index.json").is_file()
    assert "forget_rate" in result.output


def test_unlearn_concept_without_evaluation_on_a_folder(tmp_path, tiny_class_pipeline):
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 3, "--method", "esd",
                    "--iterations", 1, "--no-evaluate", "--out", tmp_path / "esd", "--set", "ddim_steps=2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "esd" / "run.json").read_text())["method"] == "esd"


def test_sfd_without_override_maps_to_random_retained_classes(tmp_path, tiny_class_pipeline):
    out = tmp_path / "sfd"
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 3, "--iterations", 1,
                    "--no-evaluate", "--out", out, "--set", "batch_size=4")
    assert result.exit_code == 0, result.output
    assert "random retained" in result.output
    assert json.loads((out / "run.json").read_text())["hyperparameters"]["override"] == "random"


@pytest.mark.parametrize("args,message", [
    (("--forget", 12, "--override", 1), "unknown class '12'"),
    (("--forget", 7, "--override", 7), "equals the forgotten concept"),
    (("--forget", 7, "--method", "nope"), "unknown unlearning method 'nope'; choose one of:"),
    (("--forget", 7, "--override", 1, "--set", "bogus=1"), "unknown setting(s) bogus"),
    (("--forget", 7, "--override", 1, "--set", "alpha=abc"), "setting alpha='abc': expected a number"),
    (("--forget", 7, "--override", 1, "--set", "batch_size=2.5"), "setting batch_size=2.5: expected a whole number"),
    (("--forget", 7, "--override", 1, "--set", "batch_size=1"), "setting batch_size=1: must be >= 2"),
    (("--forget", 7, "--override", 1, "--set", "lr_generator=-1"), "setting lr_generator=-1: must be > 0"),
    (("--forget", 7, "--method", "ga_classifier"), "ga_classifier unlearns classifiers; for a diffusion model use --method"),
    (("--forget", 7, "--method", "gan_finetune"), "gan_finetune unlearns GANs; for a diffusion model use --method"),
])
def test_bad_input(tmp_path, args, message):
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-ddpm", *args, "--out", tmp_path / "r", "--iterations", 1)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("args,message", [
    (("--method", "esd", "--set", "train=xx"), "setting train='xx': expected one of all, cross_attn, non_cross_attn"),
    (("--override-mode", "xx"), "setting override='xx': expected one of fixed, random, oracle"),
    (("--method", "esd", "--set", "lr=0"), "setting lr=0: must be > 0"),
])
def test_a_bad_setting_is_refused_before_the_model_loads(tmp_path, monkeypatch, args, message):
    import guardgen.models

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(guardgen.models, "load_model", loaded)
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", 7, *args, "--out", tmp_path / "r")
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "r").write_text("keep me")
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", 7, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "a file, not a folder" in result.output, result.output
    assert (tmp_path / "r").read_text() == "keep me"


def test_a_gan_refuses_a_diffusion_method(tmp_path):
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-gan", "--forget", 7, "--method", "esd", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "esd unlearns diffusion models; for a GAN use --method adapt_then_unlearn" in result.output


def test_model_without_conditioning(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "uncond")
    result = invoke("unlearn", "concept", "--model", tmp_path / "uncond", "--forget", 7, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "no class or text conditioning" in result.output


def test_divergence_is_reported_and_nothing_is_written(tmp_path, tiny_class_pipeline):
    out = tmp_path / "r"
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 7, "--override", 1, "--iterations", 2,
                    "--set", "lr_fake=1e30", "--set", "lr_generator=1e30", "--set", "batch_size=4", "--no-evaluate", "--out", out)
    assert result.exit_code == 2 and "diverged" in result.output
    assert not (out / "model_index.json").exists()


def _text_run(tmp_path, *extra):
    out = tmp_path / "t2i"
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-t2i", "--forget", "a handwritten digit seven",
                    "--override", "a handwritten digit one", "--iterations", 1, "--out", out,
                    "--device", "cpu", "--set", "batch_size=8", *extra)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert "digit 7" in run["forget"] and "a scribbled seven" not in run["forget"]  # expanded, held-out kept out
    assert all("seven" not in p and " 7" not in p for p in run["retain"])
    return out


def test_unlearn_a_text_concept(tmp_path):
    out = _text_run(tmp_path, "--no-evaluate")
    assert type(__import__("guardgen.models", fromlist=["x"]).load_model(str(out))).__name__ == "OneStepPipeline"


@pytest.mark.slow
def test_unlearn_a_text_concept_with_evaluation(tmp_path):
    out = _text_run(tmp_path, "--eval-per-class", 1)
    results = json.loads((out / "results.json").read_text())
    assert "paraphrase_forget_rate" in results["after"] and "override_rate" in results["after"]


def test_unknown_text_concept(tmp_path):
    result = invoke("unlearn", "concept", "--model", "zoo:mnist-t2i", "--forget", "a photo of a cat", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "unknown concept 'a photo of a cat'" in result.output


def test_out_that_overlaps_the_model_is_refused_before_any_work(tmp_path, tiny_class_pipeline):
    (tmp_path / "file").write_text("keep me")
    (tiny_class_pipeline / ".guardgen").touch()  # a folder guardgen wrote (an earlier run's result)
    for out, message in [(tiny_class_pipeline, "the same folder as --model"), (tiny_class_pipeline / "run", "inside --model"),
                         (tmp_path / "file" / "run", "is a file, not a folder")]:
        result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 7, "--override", 1,
                        "--no-evaluate", "--out", out)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output and "sfd" not in result.output  # before the progress bar
    prompts = tmp_path / "r" / "prompts.txt"
    prompts.parent.mkdir()
    (tmp_path / "r" / ".guardgen").touch()
    prompts.write_text("7\n")
    result = invoke("unlearn", "redact", "--model", tiny_class_pipeline, "--prompts", prompts, "--reference", 1,
                    "--no-evaluate", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "holds a --prompts file" in result.output, result.output
    assert prompts.read_text() == "7\n"


def test_a_one_step_result_is_not_unlearned_again(tmp_path, tiny_class_pipeline):
    out = tmp_path / "sfd"
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 3, "--forget", "03", "--override", 1,
                    "--iterations", 1, "--no-evaluate", "--out", out, "--set", "batch_size=4")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["forget"] == [3]  # given twice, forgotten once
    result = invoke("unlearn", "concept", "--model", out, "--forget", 7, "--override", 1, "--method", "esd",
                    "--no-evaluate", "--out", tmp_path / "again")
    assert result.exit_code == 2 and "a one-step generator distilled by SFD" in result.output, result.output
    assert str(tiny_class_pipeline) in result.output  # the original to unlearn instead


def test_a_class_that_is_a_digit_only_to_unicode_is_one_line(tmp_path, tiny_class_pipeline):
    result = invoke("unlearn", "redact", "--model", tiny_class_pipeline, "--prompts", "\u00b2", "--reference", 1,
                    "--no-evaluate", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "unknown class" in result.output and "Traceback" not in result.output, result.output


def test_redact_without_evaluation_says_so(tmp_path, tiny_class_pipeline):
    result = invoke("unlearn", "redact", "--model", tiny_class_pipeline, "--prompts", 7, "--reference", 1,
                    "--no-evaluate", "--out", tmp_path / "r")
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "(not evaluated)" in text and "no oracle mapping" not in text, result.output


def test_resume_of_a_state_that_forgot_another_concept_is_refused(tmp_path, tiny_class_pipeline):
    from guardgen.models import load_model
    from unlearn import UNLEARN

    out = tmp_path / "r"
    pipe = load_model(str(tiny_class_pipeline))

    def stop(step, logs):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        UNLEARN.create("sfd", iterations=4, checkpoint_every=1, batch_size=4, device="cpu").fit(
            pipe, forget=[7], retain=[0, 1, 2], override=[1], callback=stop, out=out)
    (out / ".guardgen").touch()
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 3, "--override", 1, "--iterations", 4,
                    "--set", "checkpoint_every=1", "--set", "batch_size=4", "--no-evaluate", "--device", "cpu", "--out", out,
                    "--resume")
    assert result.exit_code == 2 and "the interrupted run used other settings (forget, retain)" in result.output, result.output
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 7, "--override", 1, "--method", "esd",
                    "--iterations", 4, "--no-evaluate", "--device", "cpu", "--out", out, "--resume")
    assert result.exit_code == 2 and "was another method's" in result.output, result.output
    assert (out / "training_state" / "state.json").is_file()  # SFD's state is kept


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(model_args=[1, 2]), "'model_args' must be an object"),
    (lambda c: c["model_args"].update(foo=1), "model_args do not build guardgen_digitnet"),
    (lambda c: c["model_args"].update(num_classes=-1), "model_args do not build guardgen_digitnet"),
    (lambda c: c.update(architecture=5), "'architecture' must be a timm model name"),
    (lambda c: c["model_args"].update(num_classes=3), "size mismatch for head.weight"),
])
def test_a_damaged_classifier_config_is_one_line(tmp_path, change, message):
    import shutil

    from guardgen.zoo import zoo_path

    folder = tmp_path / "oracle"
    shutil.copytree(zoo_path("mnist-oracle"), folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    (tmp_path / "fs.json").write_text("[0, 1, 2]")
    result = invoke("unlearn", "evaluate", "--model", folder, "--method", "ft", "--forget-set", tmp_path / "fs.json",
                    "--no-retrain", "--epochs", 1, "--max-samples", 50, "--device", "cpu")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_a_gan_without_discriminator_is_refused_before_training(tmp_path):
    import shutil

    from guardgen.zoo import zoo_path

    folder = tmp_path / "gan"
    shutil.copytree(zoo_path("mnist-gan"), folder)
    (folder / "discriminator.safetensors").unlink()
    result = invoke("unlearn", "concept", "--model", folder, "--forget", 7, "--no-evaluate", "--out", tmp_path / "r",
                    "--device", "cpu")
    assert result.exit_code == 2 and "holds no discriminator" in result.output, result.output
    assert "adapt_then_unlearn ━" not in result.output
