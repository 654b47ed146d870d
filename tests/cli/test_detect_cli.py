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
                    "--n-boot", 100, "--robustness", "--out", folders / "ev")
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
    result = invoke("detect", "eval", "--detector", det, "--real", data, "--fake", data, "--resolution", 16, "--n-boot", 100)
    assert result.exit_code == 2 and "expects 8x8" in text(result)
    assert invoke("detect", "eval", "--detector", folders / "nothing", "--fake", data).exit_code == 2
    assert invoke("detect", "score", folders / "missing.png", "--detector", det).exit_code == 2
    (folders / "list.txt").write_text("a.png\n")
    result = invoke("detect", "train", "--real", folders / "list.txt", "--out", folders / "d6", *TINY)
    assert result.exit_code == 2 and "a file; the real images are mnist" in text(result)


@pytest.mark.parametrize("bad,message", [
    (["--attack-lr", "-1"], "attack: on_manifold: setting lr=-1"),
    (["--lr", "inf"], "--lr inf: must be a finite number"),
    (["--lr", "nan"], "--lr nan: must be a finite number"),
    (["--backbone", "no_such_net"], "unknown classifier architecture 'no_such_net'"),
])
def test_bad_settings_are_refused_before_any_image_is_sampled(folders, tiny_class_pipeline, monkeypatch, bad, message):
    import guardgen.cli.detect as detect_cli

    def loaded(*args, **kwargs):
        raise AssertionError("images were loaded before the settings were checked")

    monkeypatch.setattr(detect_cli, "_load_many", loaded)
    result = invoke("detect", "train", "--real", folders / "data", "--fake", tiny_class_pipeline, "--omat",
                    "--out", folders / "d", *TINY, *bad)
    assert result.exit_code == 2 and message in text(result), result.output


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
    result = invoke(*args, "--lr", 0.5, "--out", folders / "run", "--resume")  # the finished base is another detector's
    assert result.exit_code == 2 and "used other settings (lr)" in text(result), result.output
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


def _det(folders, name="det"):
    """A tiny detector trained on the 8x8 gray folders."""
    data = folders / "data"
    result = invoke("detect", "train", "--real", data, "--fake", data, "--resolution", 8, "--out", folders / name,
                    *TINY[:-4], "--epochs", 1, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return folders / name


def test_an_almost_binary_folder_is_not_read_as_reals(folders):
    """`0_real` beside `1_fakes` (a typo), or beside another folder: its fakes were read as real images."""
    g = torch.Generator().manual_seed(1)
    write_image_set(torch.rand(8, 1, 8, 8, generator=g), folders / "typo" / "0_real")
    write_image_set(torch.rand(8, 1, 8, 8, generator=g), folders / "typo" / "1_fakes")
    result = invoke("detect", "train", "--real", folders / "typo", "--fake", folders / "typo", "--resolution", 8,
                    "--out", folders / "d", *TINY)
    assert result.exit_code == 2 and "no 1_fake folder" in text(result) and "Traceback" not in result.output
    write_image_set(torch.rand(8, 1, 8, 8, generator=g), folders / "data" / "extra")  # 0_real, 1_fake and extra
    result = invoke("detect", "train", "--real", folders / "data", "--fake", folders / "data", "--resolution", 8,
                    "--out", folders / "d", *TINY)
    assert result.exit_code == 2 and "folder(s) extra beside 0_real and 1_fake" in text(result)


def test_gray_reals_and_rgb_fakes_are_refused_in_one_line(folders):
    write_image_set(torch.rand(8, 3, 8, 8), folders / "rgb")
    result = invoke("detect", "train", "--real", folders / "data", "--fake", folders / "rgb", "--resolution", 8,
                    "--out", folders / "d", *TINY)
    assert result.exit_code == 2 and "1 channel(s), the fakes of rgb 3" in text(result)
    assert "training a" not in text(result) and "Traceback" not in result.output


def test_out_inside_an_input_folder_is_refused(folders):
    result = invoke("detect", "train", "--real", folders / "data", "--fake", folders / "gens", "--resolution", 8,
                    "--out", folders / "gens" / "det", *TINY)
    assert result.exit_code == 2 and "inside --fake" in text(result)
    assert not (folders / "gens" / "det").exists()


def test_stray_images_are_named_and_resume_without_state_says_so(folders):
    from PIL import Image

    for i in range(3):  # images beside the generator folders
        Image.new("L", (8, 8), 40 * i).save(folders / "gens" / f"loose{i}.png")
    result = invoke("detect", "train", "--real", folders / "data", "--fake", folders / "gens", "--resolution", 8,
                    "--out", folders / "d", *TINY, "--resume")
    assert result.exit_code == 0, result.output
    assert "3 image(s) directly in the folder (beside its subfolders) are not read" in text(result)
    assert "nothing to resume" in text(result)


def test_a_damaged_training_state_is_one_line(folders):
    state = folders / "d" / "training_state" / "detector"
    state.mkdir(parents=True)
    (folders / "d" / ".guardgen").touch()
    (state / "state.json").write_text("[1]")
    result = invoke("detect", "train", "--real", folders / "data", "--fake", folders / "data", "--resolution", 8,
                    "--out", folders / "d", *TINY, "--resume")
    assert result.exit_code == 2 and "not a training state this run can continue" in text(result) and "Traceback" not in result.output


def test_a_resume_into_another_commands_interrupted_state_is_refused_and_keeps_it(folders, monkeypatch):
    import guardgen.cli.detect as detect_cli

    def loaded(*args, **kwargs):
        raise AssertionError("images were loaded before the state was checked")

    state = folders / "d" / "training_state"
    state.mkdir(parents=True)
    (folders / "d" / ".guardgen").touch()
    (state / "state.json").write_text('{"step": 40}')  # an unlearning run's, which detect train keeps elsewhere
    monkeypatch.setattr(detect_cli, "_load_many", loaded)
    result = invoke("detect", "train", "--real", folders / "data", "--fake", folders / "data", "--out", folders / "d",
                    *TINY, "--resume")
    assert result.exit_code == 2 and "holds another run's interrupted state (training_state/)" in text(result), result.output
    assert (state / "state.json").read_text() == '{"step": 40}'
    zoo = invoke("zoo", "build", "mnist-oracle", "--out", folders / "d", "--resume")  # its state is training_state/state.json
    assert zoo.exit_code == 2 and "was another method's or command's" in text(zoo), zoo.output
    (state / "state.json").unlink()
    (state / "detector").mkdir()
    (state / "detector" / "state.json").write_text("{}")
    zoo = invoke("zoo", "build", "mnist-oracle", "--out", folders / "d", "--resume")
    assert zoo.exit_code == 2 and "holds another run's interrupted state" in text(zoo), zoo.output
    assert (state / "detector" / "state.json").is_file()


def test_score_says_why_no_file_was_read(folders):
    det = _det(folders)
    (folders / "anim.gif").write_bytes(b"GIF89a")
    (folders / "zero.png").write_bytes(b"")
    result = invoke("detect", "score", folders / "anim.gif", "--detector", det)
    assert result.exit_code == 2 and "without an image suffix" in text(result)
    result = invoke("detect", "score", folders / "zero.png", "--detector", det)
    assert result.exit_code == 2 and "zero.png: empty file" in text(result)
    assert len(result.output.strip().splitlines()) == 1  # the error alone, no note above it


def test_eval_needs_two_reals_and_takes_fakes_of_both_colour_formats(folders):
    det = _det(folders)
    write_image_set(torch.rand(1, 1, 8, 8), folders / "one")
    write_image_set(torch.rand(6, 3, 8, 8), folders / "rgb")
    result = invoke("detect", "eval", "--detector", det, "--real", folders / "one", "--fake", folders / "gens",
                    "--resolution", 8, "--n-boot", 100)
    assert result.exit_code == 2 and "at least 2" in text(result)
    result = invoke("detect", "eval", "--detector", det, "--real", folders / "data", "--fake", folders / "gens",
                    "--fake", folders / "rgb", "--resolution", 8, "--n-boot", 100, "--robustness")  # gray and RGB fakes
    assert result.exit_code == 0, result.output
    assert "robustness" in text(result)
