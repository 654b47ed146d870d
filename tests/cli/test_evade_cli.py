"""`guardgen attack evade` end to end on the zoo GAN with tiny detectors; OMAT against latent attacks from the
CLI; bad input (no differentiable latent path, unknown attribute, both guidances) exits 2 with one line."""

import json

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models run faster than with two on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def text(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def dets(tmp_path_factory):
    """Two tiny digitnet detectors on zoo:mnist-gan fakes: one at 16 px, one at 8 px (resized for the attack)."""
    from detectors.detector import Detector
    from guardgen.data import load_mnist
    from guardgen.models import load_model
    from guardgen.models.gan import sample_gan

    root = tmp_path_factory.mktemp("evade")
    real = load_mnist("train", 16).images[:48]
    fake = sample_gan(load_model("zoo:mnist-gan")[0], 48, generator_rng=torch.Generator().manual_seed(0))
    for name, size in (("d16", 0), ("d8", 8)):
        det = Detector(backbone="guardgen_digitnet", model_args={"width": 4}, epochs=1, input_size=size, device="cpu")
        det.fit(real, fake).save_pretrained(root / name)
    return root


def test_evade_meta_with_black_box(dets, tmp_path):
    out = tmp_path / "run"
    result = invoke("attack", "evade", "--generator", "zoo:mnist-gan", "--detector", dets / "d16", "--detector", dets / "d8",
                    "--black-box", dets / "d16", "--attribute", "digit 3", "--mode", "meta", "--n", 4, "--steps", 3,
                    "--candidates", 4, "--out", out)
    assert result.exit_code == 0, result.output
    assert "resized" in text(result) and "attribute fidelity" in text(result)
    res = json.loads((out / "results.json").read_text())
    assert res["target_class"] == 3 and res["mode"] == "meta" and res["latent_space"] == "z"
    roles = {r["role"] for r in res["detectors"].values()}
    assert roles == {"white-box", "black-box"} and 0 <= res["attribute_fidelity"] <= 1
    assert (out / "gallery.png").is_file() and len(list((out / "adversarial").rglob("*.png"))) == 4


def test_evade_reference_image(dets, tmp_path):
    from guardgen.data.generated import write_image_set

    write_image_set(torch.rand(1, 1, 16, 16), tmp_path / "ref")
    ref = next((tmp_path / "ref").rglob("*.png"))
    result = invoke("attack", "evade", "--generator", "zoo:mnist-gan", "--detector", dets / "d16", "--reference", ref,
                    "--mode", "single", "--n", 2, "--steps", 2, "--candidates", 2, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "results.json").read_text())["feature_distance"] is not None


@pytest.mark.parametrize("args, message", [
    (["--generator", "zoo:mnist-gan", "--attribute", "digit 12"], "unknown attribute 'digit 12'"),
    (["--generator", "zoo:mnist-oracle"], "no differentiable latent path"),
    (["--generator", "zoo:mnist-gan", "--attribute", "4", "--reference", "x.png"], "not both"),
    (["--generator", "zoo:mnist-gan", "--mode", "maml"], "one of single, ensemble, meta"),
])
def test_evade_bad_input_is_one_line(dets, tmp_path, args, message):
    result = invoke("attack", "evade", "--detector", dets / "d16", "--n", 2, "--steps", 1, "--out", tmp_path / "x", *args)
    assert result.exit_code == 2, result.output
    assert message in text(result) and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_evade_refuses_a_diffusion_pipeline(dets, tiny_class_pipeline, tmp_path):
    result = invoke("attack", "evade", "--generator", tiny_class_pipeline, "--detector", dets / "d16", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "guardgen detect attack" in text(result)


def test_detect_train_omat_against_latent_attacks(tmp_path):
    from guardgen.data.generated import write_image_set

    write_image_set(torch.rand(24, 1, 16, 16), tmp_path / "real")
    out = tmp_path / "det"
    result = invoke("detect", "train", "--real", tmp_path / "real", "--fake", "zoo:mnist-gan", "--n", 24, "--omat",
                    "--pool-size", 2, "--refresh-size", 0, "--omat-epochs", 1, "--attack-steps", 1, "--out", out,
                    "--backbone", "guardgen_digitnet", "--model-arg", "width=4", "--epochs", 1, "--device", "cpu")
    assert result.exit_code == 0, result.output
    log = json.loads((out / "config.json").read_text())["omat"]["attack_log"]
    assert [entry["source"] for entry in log] == ["gan 0"]


def test_evade_refuses_a_detector_twice_meta_with_one_and_a_detector_as_classifier(dets, tmp_path):
    base = ("attack", "evade", "--generator", "zoo:mnist-gan", "--n", 2, "--steps", 1, "--candidates", 2, "--out", tmp_path / "r")
    for extra, message in [(("--detector", dets / "d16", "--detector", f"{dets}/./d16", "--mode", "meta"), "given twice"),
                           (("--detector", dets / "d16", "--mode", "meta"), "--mode meta needs at least 2 --detector"),
                           (("--detector", dets / "d16", "--classifier", dets / "d8"), "a guardgen detector, not a model")]:
        result = invoke(*base, *extra)
        assert result.exit_code == 2 and message in text(result) and "Traceback" not in result.output, result.output
        assert "latent evasion" not in result.output  # before any work
