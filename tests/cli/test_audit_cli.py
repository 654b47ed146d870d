"""`guardgen audit` end to end: an unlearned run beside its original, a GAN, and bad input (one line, exit 2)."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app

runner = CliRunner()
TINY = ["--set", "samples_per_class=2", "--set", "num_inference_steps=2", "--set", "concept_samples=6",
        "--set", "mia_members=30", "--set", "mia_timesteps=[100]", "--set", "mia_noise_draws=1", "--set", "nn_neighbours=10"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared CPU, a second OpenMP thread mostly waits (10x slower backward passes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_exit_2(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unlearned_run_is_audited_beside_its_original(tmp_path, tiny_class_pipeline):
    run = tmp_path / "<img src=x onerror=alert(1)>"  # hostile text in the spec, too
    result = invoke("unlearn", "concept", "--model", tiny_class_pipeline, "--forget", 7, "--override", 1, "--iterations", 2,
                    "--set", "batch_size=4", "--no-evaluate", "--device", "cpu", "--out", run)
    assert result.exit_code == 0, result.output
    result = invoke("audit", run, "--out", tmp_path / "report", "--train-data", "mnist", *TINY)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    lineage = report["sections"]["provenance"]["figures"]["lineage"]
    assert lineage["method"] == "sfd" and lineage["forgotten"] == [7] and lineage["original_found"]
    (concept,) = report["sections"]["leakage"]["figures"]["concepts"]  # the run's forgotten concept by default
    assert concept["forgotten_by_run"] and {"audited", "original", "fisher_p"} <= set(concept)
    assert any(c["section"] == "leakage" and c["status"] in ("pass", "warn", "fail") for c in report["verdicts"]["checks"])
    assert "white_box" in report["sections"]["membership"]["figures"]  # one-step generator: black-box only, says why
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_gan_audit_uses_the_discriminator(tmp_path):
    result = invoke("audit", "zoo:mnist-gan", "--out", tmp_path, "--concept", 7, "--set", "unconditional_samples=60", *TINY)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["sections"]["membership"]["figures"]["attacks"]) == {"discriminator", "gan_leaks_blackbox"}
    assert report["sections"]["quality"]["figures"]["samples"] == 60


def test_pickled_weight_files_are_refused(tmp_path, tiny_class_pipeline):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    _one_line_exit_2(invoke("audit", tmp_path / "model.pt", "--out", tmp_path / "r"), "never unpickles")
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_class_pipeline, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save({"w": torch.zeros(2)}, weights.with_suffix(".bin"))
    weights.unlink()
    _one_line_exit_2(invoke("audit", folder, "--out", tmp_path / "r"), "only pickle weights")
    assert not (tmp_path / "r").exists()  # nothing written


def test_truncated_weights_are_refused(tmp_path, tiny_class_pipeline):
    folder = tmp_path / "truncated"
    shutil.copytree(tiny_class_pipeline, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _one_line_exit_2(invoke("audit", folder, "--out", tmp_path / "r"), "truncated")


@pytest.mark.parametrize("make,message", [
    (lambda p: (p / "notes.txt").write_text("hello"), "not a model folder"),
    (None, "holds a classifier"),
])
def test_a_checkpoint_that_is_not_a_generative_model(tmp_path, make, message):
    spec = "zoo:mnist-oracle"
    if make is not None:
        spec = tmp_path / "junk"
        spec.mkdir()
        make(spec)
    _one_line_exit_2(invoke("audit", spec, "--out", tmp_path / "r"), message)


def test_concepts_the_model_cannot_be_asked_for(tmp_path, tiny_class_pipeline):
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--concept", 12, "--out", tmp_path / "r"), "unknown class '12'")
    _one_line_exit_2(invoke("audit", "zoo:mnist-gan", "--concept", "a cat", "--out", tmp_path / "r"), "has no conditioning")


def test_training_data_of_another_resolution(tmp_path, tiny_class_pipeline):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("L", (28, 28), color=i * 40).save(data / f"{i}.png")
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--train-data", data, "--out", tmp_path / "r"),
                     "images are 28x28 but the model makes 8x8")


def test_training_data_of_mixed_sizes_names_no_option_the_audit_lacks(tmp_path, tiny_class_pipeline):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("L", (8, 8)).save(data / "0.png")
    Image.new("L", (12, 12)).save(data / "1.png")
    result = invoke("audit", tiny_class_pipeline, "--train-data", data, "--out", tmp_path / "r")
    _one_line_exit_2(result, "images of different sizes")
    assert "1.png is 12x12, the first 8x8" in " ".join(result.output.split())
    assert "pass a resolution" not in result.output  # the audit has no such option


def test_a_real_fake_folder_is_not_taken_as_training_data(tmp_path, tiny_class_pipeline):
    from PIL import Image

    for part in ("0_real", "1_fake"):
        (tmp_path / "data" / part).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "data" / part / "0.png")
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--train-data", tmp_path / "data", "--out", tmp_path / "r"),
                     "a real/fake folder (0_real, 1_fake)")


def test_bad_settings(tmp_path, tiny_class_pipeline):
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--set", "samples=3", "--out", tmp_path / "r"), "unknown audit setting")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--config", bad, "--out", tmp_path / "r"), "not valid JSON")


SECTIONS = {"provenance": "provenance_section", "quality": "quality_section", "leakage": "leakage_section",
            "memorization": "memorization_section", "membership": "membership_section",
            "copyright": "copyright_section", "forensics": "forensics_section"}


@pytest.fixture
def no_sections(monkeypatch):
    """Every section function replaced by one that records its call and stops the audit: bad input must be
    refused before any of them runs."""
    import importlib

    ran = []
    for module, fn in SECTIONS.items():
        def section(*args, _name=module, **kwargs):
            ran.append(_name)
            raise RuntimeError(f"section {_name} ran")

        monkeypatch.setattr(importlib.import_module(f"guardgen.audit.{module}"), fn, section)
    return ran


def _refused_up_front(result, message, ran):
    _one_line_exit_2(result, message)
    assert ran == [], f"sections ran before the error: {ran}"
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, repr(result.output)  # no blank line above


@pytest.mark.parametrize("spec,concept", [("zoo:mnist-gan", "99"), ("zoo:mnist-t2i", "foo=99")])
def test_a_concept_outside_the_oracle_classes(tmp_path, no_sections, spec, concept):
    _refused_up_front(invoke("audit", spec, "--concept", concept, "--out", tmp_path / "r"),
                      "oracle class 99 is out of range; the oracle zoo:mnist-oracle has 10 classes", no_sections)


def _fake_checkpoint(folder, config, weights=("model",)):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    for name in weights:
        (folder / f"{name}.safetensors").write_bytes(b"")  # the cheap checks read no weights
    return folder


@pytest.mark.parametrize("flag,make,message", [
    ("--detector", lambda p: p / "missing", "no such folder"),
    ("--detector", lambda p: _fake_checkpoint(p / "junk", {"hello": 1}), "not a guardgen detector folder"),
    ("--detector", lambda p: _fake_checkpoint(p / "noweights", {"detector": {}, "preprocessing": {}}, ()),
     "no model.safetensors beside config.json"),
    ("--attribution", lambda p: _fake_checkpoint(p / "det", {"detector": {}, "preprocessing": {}}),
     "not a guardgen attribution model folder"),
    ("--attribution", lambda p: (p / "attr.pt").write_bytes(b"x") and p / "attr.pt", "a pickle file"),
])
def test_bad_forensics_inputs_are_refused_before_any_section(tmp_path, no_sections, flag, make, message):
    result = invoke("audit", "zoo:mnist-gan", "--concept", 7, flag, make(tmp_path), "--out", tmp_path / "r")
    _refused_up_front(result, message, no_sections)
    assert f"error: {flag} " in result.output


@pytest.mark.parametrize("spec,shards,message", [
    (None, ["/no/such/shard", "zoo:mnist-ddpm"], "--shards /no/such/shard: no such file or folder"),
    (None, ["zoo:mnist-gan", "zoo:mnist-ddpm"], "--shards zoo:mnist-gan: holds a gan, not a diffusion pipeline"),
    (None, ["zoo:mnist-ddpm", "zoo:mnist-ddim-b"], "samples in another space than"),  # 16x16 shards, an 8x8 model
    ("zoo:mnist-gan", ["zoo:mnist-ddpm", "zoo:mnist-ddim-b"], "and zoo:mnist-gan is a GAN"),
])
def test_bad_shards_are_refused_before_any_section(tmp_path, no_sections, tiny_class_pipeline, spec, shards, message):
    result = invoke("audit", spec or tiny_class_pipeline, "--shards", *shards, "--out", tmp_path / "r")
    _refused_up_front(result, message, no_sections)


@pytest.mark.parametrize("args,message", [
    (["--set", "mia_timesteps=abc"], "mia_timesteps needs a number, got 'abc'"),  # was a ValueError traceback
    (["--set", "mia_timesteps=[1.5]"], "mia_timesteps needs whole numbers"),  # was truncated to 1
    (["--set", "batch_size=true"], "batch_size needs a number, got True"),  # was batch size 1
    (["--set", "thresholds.membership.auroc.fail=NaN"], "needs a number, got nan"),  # a check that never fires
    ({"thresholds": {"membership": 0.8}}, "thresholds.membership must be an object"),  # was an AttributeError traceback
    ({"thresholds": {"membership": {"auroc": 0.8}}}, "thresholds.membership.auroc must be an object"),
])
def test_bad_settings_without_a_traceback(tmp_path, no_sections, args, message):
    if isinstance(args, dict):
        (tmp_path / "audit.json").write_text(json.dumps(args))
        args = ["--config", tmp_path / "audit.json"]
    _refused_up_front(invoke("audit", "zoo:mnist-gan", *args, "--out", tmp_path / "r"), message, no_sections)


def test_an_out_folder_that_cannot_be_made_is_refused_before_any_section(tmp_path, no_sections):
    (tmp_path / "file").write_text("x")
    _refused_up_front(invoke("audit", "zoo:mnist-gan", "--out", tmp_path / "file" / "report"),
                      "file is a file, not a folder", no_sections)  # was: all sections, then NotADirectoryError
    (tmp_path / "data" / "0").mkdir(parents=True)
    _refused_up_front(invoke("audit", "zoo:mnist-ddpm", "--train-data", tmp_path / "data", "--out", tmp_path / "data" / "r"),
                      "inside --train-data", no_sections)  # its report's images would be read as members next time


def test_holdout_data_is_checked_and_not_ignored(tmp_path, no_sections, tiny_class_pipeline):
    _refused_up_front(invoke("audit", "zoo:mnist-gan", "--holdout-data", tmp_path / "nope", "--out", tmp_path / "r"),
                      "--holdout-data", no_sections)  # the message named --train-data
    _refused_up_front(invoke("audit", tiny_class_pipeline, "--holdout-data", "mnist", "--out", tmp_path / "r"),
                      "pass --train-data too", no_sections)  # was silently ignored without --train-data


def test_a_text_model_without_prompts_needs_concepts_before_any_section(tmp_path, no_sections, tiny_sd_pipeline):
    _refused_up_front(invoke("audit", tiny_sd_pipeline, "--oracle", "", "--out", tmp_path / "r"),
                      "pass the prompts to sample with --concept", no_sections)  # was raised after provenance ran
