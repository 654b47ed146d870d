"""`guardgen detect` end to end on tiny image folders and a tiny diffusion pipeline; bad input exits 2."""

import json

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app
from guardgen.data.generated import write_image_set

runner = CliRunner()
TINY = ["--backbone", "guardgen_digitnet", "--model-arg", "width=4", "--epochs", "2", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def folders(tmp_path):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(24, 1, 8, 8, generator=g) * 0.5
    fake = torch.rand(24, 1, 8, 8, generator=g) * 0.5 + 0.5
    write_image_set(real, tmp_path / "data" / "0_real")
    write_image_set(fake, tmp_path / "data" / "1_fake")
    (tmp_path / "data" / "1_fake" / "all" / "broken.png").write_bytes(b"not a png")
    write_image_set(fake[:6], tmp_path / "gens" / "gan_a")
    write_image_set(fake[6:12], tmp_path / "gens" / "gan_b")
    return tmp_path


def test_train_eval_score_from_folders(folders):
    data, det = folders / "data", folders / "det"
    result = invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--augment", 0.5, "--blur-max", 1,
                    "--out", det, *TINY)
    assert result.exit_code == 0, result.output
    assert "1 unreadable" in text(result)
    config = json.loads((det / "config.json").read_text())
    assert config["preprocessing"]["input_size"] == 8 and config["data"]["n_fake"] == 24
    assert config["detector"]["augment"] == 0.5 and config["detector"]["blur_sigma"] == [0.0, 1.0]
    result = invoke("detect", "eval", "--detector", det, "--real", data, "--fake", folders / "gens", "--resolution", 8,
                    "--n-boot", 10, "--robustness", "--out", folders / "ev")
    assert result.exit_code == 0, result.output
    res = json.loads((folders / "ev" / "results.json").read_text())
    assert set(res["generators"]) == {"gan_a", "gan_b"} and "robustness" in res and "format_control" in res
    result = invoke("detect", "score", folders / "gens" / "gan_a", "--detector", det)
    assert result.exit_code == 0, result.output
    assert "6 image(s)" in text(result)


def test_omat_and_attack_on_a_tiny_pipeline(folders, tiny_class_pipeline):
    data, det = folders / "data", folders / "det"
    result = invoke("detect", "train", "--real", data, "--fake", tiny_class_pipeline, "--n", 12, "--resolution", 8,
                    "--sample-steps", 2, "--omat", "--pool-size", 2, "--refresh-size", 0, "--omat-epochs", 1,
                    "--attack-steps", 1, "--out", det, *TINY)
    assert result.exit_code == 0, result.output
    omat = json.loads((det / "config.json").read_text())["omat"]
    assert omat["lr"] == 0.0 and omat["pool"] == 2  # 0: the adversarial epochs run at --lr / 4
    result = invoke("detect", "attack", "--detector", det, "--generator", tiny_class_pipeline, "--n", 2, "--steps", 1,
                    "--sample-steps", 2, "--out", folders / "att")
    assert result.exit_code == 0, result.output
    assert {"success_rate", "mean_drift"} <= set(json.loads((folders / "att" / "results.json").read_text()))


def test_bad_inputs_exit_2(folders):
    data, det = folders / "data", folders / "det"
    (folders / "empty" / "0_real").mkdir(parents=True)
    (folders / "empty" / "1_fake").mkdir(parents=True)
    result = invoke("detect", "train", "--real", data, "--fake", folders / "empty", "--out", det, *TINY)
    assert result.exit_code == 2 and "no readable images" in text(result)
    assert invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--resize", "none",
                  "--out", det, *TINY).exit_code == 0
    # a generator without a latent (an image folder) for OMAT, and for the attack
    result = invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--omat", "--generator",
                    folders / "gens", "--out", folders / "d2", *TINY)
    assert result.exit_code == 2 and "diffusion" in text(result)
    result = invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--lr-schedule", "step",
                    "--out", folders / "d3", *TINY)
    assert result.exit_code == 2 and "lr_schedule" in text(result)
    result = invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--augment", 2,
                    "--out", folders / "d4", *TINY)
    assert result.exit_code == 2 and "Invalid value for '--augment'" in text(result)
    result = invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--out", folders / "d5",
                    *TINY, "--model-arg", "width=-1")  # a value the backbone cannot be built with: one line, no traceback
    assert result.exit_code == 2 and "cannot be built with model args {'width': -1}" in text(result)
    result = invoke("detect", "attack", "--detector", det, "--generator", "zoo:mnist-oracle")
    assert result.exit_code == 2 and "not a generator" in text(result)
    # the detector's preprocessing refuses 16x16 input (trained at 8x8 with --resize none)
    result = invoke("detect", "eval", "--detector", det, "--real", data, "--fake", data, "--resolution", 16, "--n-boot", 5)
    assert result.exit_code == 2 and "expects 8x8" in text(result)
    assert invoke("detect", "eval", "--detector", folders / "nothing", "--fake", data).exit_code == 2
    assert invoke("detect", "score", folders / "missing.png", "--detector", det).exit_code == 2
    (folders / "list.txt").write_text("a.png\n")
    result = invoke("detect", "train", "--real", folders / "list.txt", "--out", folders / "d6", *TINY)
    assert result.exit_code == 2 and "a file; the real images are mnist" in text(result)


@pytest.mark.parametrize("bad", [["--attack-lr", "-1"], ["--lr", "inf"], ["--lr", "nan"], ["--backbone", "no_such_net"]])
def test_bad_settings_are_refused_before_any_image_is_sampled(folders, tiny_class_pipeline, monkeypatch, bad):
    import guardgen.cli.detect as detect_cli

    def loaded(*args, **kwargs):
        raise AssertionError("images were loaded before the settings were checked")

    monkeypatch.setattr(detect_cli, "_load_many", loaded)
    result = invoke("detect", "train", "--real", folders / "data", "--fake", tiny_class_pipeline, "--omat",
                    "--out", folders / "d", *TINY, *bad)
    assert result.exit_code == 2, result.output
    assert any(m in text(result) for m in (f"{bad[0]} {bad[1]}: must be a finite number", "attack: on_manifold: setting lr=-1",
                                           "unknown classifier architecture 'no_such_net'"))


def test_an_interrupted_omat_run_resumes_with_resume(folders, tiny_class_pipeline, monkeypatch):
    """Ctrl-C during OMAT's refresh attack: exit 130 with the hint; --resume finishes it without training the base
    detector again, to the same detector as an uninterrupted run."""
    from detectors.detector import Detector
    from detectors.omat import OMAT
    from guardgen.checkpoint import load_safetensors

    data = folders / "data"
    args = ["detect", "train", "--real", data, "--fake", tiny_class_pipeline, "--n", 12, "--resolution", 8,
            "--sample-steps", 2, "--omat", "--pool-size", 2, "--refresh-every", 1, "--refresh-size", 2, "--omat-epochs", 2,
            "--attack-steps", 1, *TINY]
    assert invoke(*args, "--out", folders / "ref").exit_code == 0
    attack, calls = OMAT._attack, []

    def interrupted(self, *a, **kw):
        calls.append(a[-1])  # the stage
        if a[-1] == "refresh 1" and calls.count("refresh 1") == 1:
            raise KeyboardInterrupt
        return attack(self, *a, **kw)

    monkeypatch.setattr(OMAT, "_attack", interrupted)
    result = invoke(*args, "--out", folders / "run")
    assert result.exit_code == 130 and "rerun with --resume" in text(result)
    assert (folders / "run" / "training_state" / "omat" / "round" / "state.json").is_file()
    fits = []
    fit = Detector.fit
    monkeypatch.setattr(Detector, "fit", lambda self, *a, **kw: fits.append(1) or fit(self, *a, **kw))
    result = invoke(*args, "--out", folders / "run", "--resume")
    assert result.exit_code == 0, result.output
    assert "the base detector had finished" in text(result) and len(fits) == 1  # round 2 only
    assert calls == ["offline pool", "refresh 1", "refresh 1"]
    assert not (folders / "run" / "training_state").exists()
    ref, run = load_safetensors(folders / "ref" / "model.safetensors"), load_safetensors(folders / "run" / "model.safetensors")
    assert all(torch.allclose(ref[k], run[k], atol=1e-6) for k in ref)
