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


def test_bad_settings(tmp_path, tiny_class_pipeline):
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--set", "samples=3", "--out", tmp_path / "r"), "unknown audit setting")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    _one_line_exit_2(invoke("audit", tiny_class_pipeline, "--config", bad, "--out", tmp_path / "r"), "not valid JSON")
