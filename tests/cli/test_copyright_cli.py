"""`guardgen copyright shard|train|sample|bound` end to end into a temp folder, and its one-line errors."""

import json

import pytest
import torch
from typer.testing import CliRunner

from guardgen.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, message):
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def test_bound_prints_hand_checkable_values():
    result = invoke("copyright", "bound", "--k", 3, "--q-event", 0.01)
    assert result.exit_code == 0, result.output
    assert "0.08" in result.output  # 2^3 * 0.01
    result = invoke("copyright", "bound", "--tv", 0.5, "--hellinger2", 0.75)
    assert result.exit_code == 0 and "│     1 │" in result.output and "│     4 │" in result.output, result.output


@pytest.mark.parametrize("args,message", [
    (["--k", -1, "--q-event", 0.1], "k=-1.0: out of range"),
    (["--k", "inf", "--q-event", 0.1], "--k inf: must be a finite number"),
    (["--tv", 1.0], "tv=1.0: out of range"),
    (["--k", 2, "--acceptance", 0], "acceptance=0.0: out of range"),
    (["--q-event", 0.1], "need --k"),
])
def test_bound_rejects_bad_input_in_one_line(args, message):
    assert_one_line_error(invoke("copyright", "bound", *args), message)


def test_shard_train_sample_end_to_end(tmp_path):
    shards = tmp_path / "shards"
    result = invoke("copyright", "shard", "--protected", "mnist-test:364", "--protected", "mnist-test:856", "--copies", 5,
                    "--resolution", 8, "--out", shards)
    assert result.exit_code == 0, result.output
    meta = json.loads((shards / "shards.json").read_text())
    assert [p["shard"] for p in meta["protected"]] == [0, 1] and [p["copies_in_data"] for p in meta["protected"]] == [5, 5]
    assert sum(meta["shard_sizes"]) == 4010 and "shard-1" in result.output  # the safe model of work 0

    models = tmp_path / "models"
    result = invoke("copyright", "train", "--shards", shards, "--out", models, "--steps", 1, "--device", "cpu",
                    "--set", "block_out_channels=[8,16]", "--set", "batch_size=4")
    assert result.exit_code == 0, result.output
    assert all((models / m / "model_index.json").is_file() for m in ("full", "shard-0", "shard-1"))

    out = tmp_path / "sample"
    result = invoke("copyright", "sample", "--model", models / "full", "--safe", models / "shard-0", "--safe", models / "shard-1",
                    "--condition", 3, "--n", 2, "--clean", 1, "--calibration-samples", 4, "--quantile", 0.9,
                    "--steps", 2, "--shards", shards, "--out", out)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["calibration"]["samples"] == 4 and res["k"] == res["calibration"]["k"] >= 0
    assert 0 < res["acceptance_rate"] <= 1 and res["k_effective"] >= res["k"]
    assert {"full", "cp_k", "delta"} <= set(res["reproduction"]) and "proxy" in res["note"]
    assert (out / "grid.png").is_file() and (out / "grid_full.png").is_file()

    assert_one_line_error(invoke("copyright", "sample", "--model", models / "full", "--safe", models / "shard-0",
                                 "--condition", 3, "--k", -2), "out of range")
    other = _tiny_shards(tmp_path / "other", resolution=4)  # shards of another resolution: refused before sampling
    assert_one_line_error(invoke("copyright", "sample", "--model", models / "full", "--safe", models / "shard-0",
                                 "--condition", 3, "--k", 1, "--shards", other, "--out", tmp_path / "o"),
                          "but the model samples (1, 8, 8)")
    assert not (tmp_path / "o").exists()


def _folders(tmp_path, a, b):
    from guardgen.data import write_image_set

    digits = [str(c) for c in range(10)]  # classes 0..9, as the protected works' labels need
    write_image_set(a, tmp_path / "a", labels=torch.zeros(len(a), dtype=torch.long), class_names=digits)
    write_image_set(b, tmp_path / "b", labels=torch.zeros(len(b), dtype=torch.long), class_names=digits)
    return tmp_path / "a", tmp_path / "b"


def test_shard_refuses_non_disjoint_given_shards(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 8, 8, generator=g).mul(255).round().div(255)
    a, b = _folders(tmp_path, images[:4], images[3:])  # image 3 in both
    result = invoke("copyright", "shard", "--from-shard", a, "--from-shard", b, "--protected", "mnist-test:364",
                    "--resolution", 8, "--out", tmp_path / "s")
    assert_one_line_error(result, "shards are not disjoint")
    assert not (tmp_path / "s").exists()


def test_shard_refuses_a_protected_work_in_both_given_shards(tmp_path):
    from guardgen.data.generated import to_pil

    g = torch.Generator().manual_seed(0)
    work = torch.rand(1, 1, 8, 8, generator=g).mul(255).round().div(255)
    to_pil(work[0]).save(tmp_path / "work.png")
    other = torch.rand(4, 1, 8, 8, generator=g)
    a, b = _folders(tmp_path, torch.cat([other[:2], work]), torch.cat([other[2:], (work + 0.004).clamp(0, 1)]))
    result = invoke("copyright", "shard", "--from-shard", a, "--from-shard", b, "--protected", f"{tmp_path / 'work.png'}@3",
                    "--resolution", 8, "--out", tmp_path / "s")
    assert_one_line_error(result, "protected work 0 has (near-)duplicates in 2 shards")
    assert "images 2" in result.output  # the copies are named


@pytest.mark.parametrize("args,message", [
    (["shard", "--protected", "nothing.png@3"], "nothing.png: no such image file"),
    (["shard", "--protected", "work.png"], "expected PATH@LABEL"),
    (["shard", "--protected", "mnist-test:1", "--shards", 1], "at least 2 shards"),
    (["train", "--shards", "no-such-folder"], "not a shards folder"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    assert_one_line_error(invoke("copyright", *args, *([] if args[0] == "train" else ["--out", tmp_path / "s"])), message)


def _tiny_shards(folder, resolution=8):
    """A shards folder from two tiny given shards (classes 0 and 1 in each), made in well under a second."""
    from guardgen.data import write_image_set
    from guardgen.data.generated import to_pil

    g = torch.Generator().manual_seed(0)
    images = torch.rand(9, 1, resolution, resolution, generator=g).mul(255).round().div(255)
    labels = torch.tensor([0, 1, 0, 1])
    write_image_set(images[:4], folder / "a", labels=labels)
    write_image_set(images[4:8], folder / "b", labels=labels)
    to_pil(images[8]).save(folder / "work.png")
    result = invoke("copyright", "shard", "--from-shard", folder / "a", "--from-shard", folder / "b", "--protected",
                    f"{folder / 'work.png'}@1", "--resolution", resolution, "--out", folder / "shards")
    assert result.exit_code == 0, result.output
    return folder / "shards"


@pytest.mark.parametrize("spec", ["mnist-test:-1", "mnist-test:1000", "mnist-test:1_0", "mnist-test:+3"])
def test_shard_refuses_a_negative_or_out_of_range_test_index(tmp_path, spec):
    result = invoke("copyright", "shard", "--protected", spec, "--out", tmp_path / "s")
    assert_one_line_error(result, f"{spec}: expected mnist-test:INDEX with INDEX in 0..999")
    assert not (tmp_path / "s").exists()


def test_shard_refuses_a_label_outside_the_data_classes(tmp_path):
    from guardgen.data import write_image_set
    from guardgen.data.generated import to_pil

    to_pil(torch.rand(1, 8, 8)).save(tmp_path / "work.png")
    result = invoke("copyright", "shard", "--protected", f"{tmp_path / 'work.png'}@42", "--out", tmp_path / "s")
    assert_one_line_error(result, "work.png@42: label 42 out of range; the data has classes 0..9")
    result = invoke("copyright", "shard", "--protected", f"{tmp_path / 'work.png'}@²", "--out", tmp_path / "s")
    assert_one_line_error(result, "expected PATH@LABEL")  # was a ValueError traceback
    write_image_set(torch.rand(6, 1, 8, 8), tmp_path / "data", labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    result = invoke("copyright", "shard", "--protected", f"{tmp_path / 'work.png'}@3", "--data", tmp_path / "data",
                    "--resolution", 8, "--out", tmp_path / "s")
    assert_one_line_error(result, "label 3 out of range; the data has classes 0..2")
    assert not (tmp_path / "s").exists()


def test_shard_refuses_given_shards_with_other_classes_or_other_options(tmp_path):
    from guardgen.data import write_image_set

    write_image_set(torch.rand(2, 1, 8, 8), tmp_path / "a", labels=torch.tensor([0, 1]))
    write_image_set(torch.rand(2, 1, 8, 8), tmp_path / "b", labels=torch.tensor([0, 0]))
    args = ["copyright", "shard", "--from-shard", tmp_path / "a", "--from-shard", tmp_path / "b", "--protected",
            "mnist-test:3", "--resolution", 8, "--out", tmp_path / "s"]
    assert_one_line_error(invoke(*args), "classes ['0'], but")
    assert_one_line_error(invoke(*args, "--copies", 5), "does not go with --copies, --data or --shards")
    assert_one_line_error(invoke(*args, "--shards", 3), "does not go with --copies, --data or --shards")


def test_shard_refuses_a_negative_threshold(tmp_path):
    result = invoke("copyright", "shard", "--protected", "mnist-test:3", "--threshold", -0.1, "--out", tmp_path / "s")
    assert result.exit_code == 2 and "--threshold" in result.output and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("args,message", [
    (["--set", "steps=abc"], "setting steps='abc': expected a whole number"),
    (["--set", "steps=abc", "--steps", 2], "setting steps='abc': expected a whole number"),
    (["--set", "steps=3", "--steps", 2], "--steps 2 and --set steps=3 disagree"),
    (["--set", "seed=3"], "--set seed=3: use --seed"),
    (["--set", "device=cpu"], "--set device=cpu: use --device"),
    (["--set", "mixed_precision=fp8"], "unknown mixed precision 'fp8'"),
])
def test_train_refuses_bad_sets_before_loading(tmp_path, args, message):
    # no such shards folder: the settings are refused first
    assert_one_line_error(invoke("copyright", "train", "--shards", tmp_path / "none", *args), message)


def test_train_refuses_a_resolution_the_shards_do_not_have(tmp_path):
    shards = _tiny_shards(tmp_path)
    result = invoke("copyright", "train", "--shards", shards, "--set", "resolution=16", "--out", tmp_path / "m")
    assert_one_line_error(result, "setting resolution=16: the shards' images are 8x8")
    assert not (tmp_path / "m" / "full").exists()


def test_train_resume_notes_a_fresh_start_and_keeps_what_else_out_holds(tmp_path):
    shards = _tiny_shards(tmp_path)
    (tmp_path / "m" / "training_state").mkdir(parents=True)  # an unlearning run's interrupted state
    (tmp_path / "m" / "training_state" / "state.json").write_text("{}")
    (tmp_path / "m" / ".guardgen").touch()
    result = invoke("copyright", "train", "--shards", shards, "--out", tmp_path / "m", "--model", "shard-0", "--steps", 1,
                    "--device", "cpu", "--set", "block_out_channels=[8,16]", "--set", "batch_size=4", "--resume")
    assert result.exit_code == 0 and "nothing to resume" in result.output, result.output
    assert (tmp_path / "m" / "training_state" / "state.json").read_text() == "{}"  # the models are written beside it
    assert (tmp_path / "m" / "shard-0" / "model_index.json").is_file()


@pytest.mark.parametrize("args,message", [
    (["--shards", "no-such-folder"], "no-such-folder: not a shards folder"),
    (["--quantile", 1], "--quantile 1.0: out of range"),
    (["--quantile", 0], "--quantile 0.0: out of range"),
    (["--k", 1, "--clean", 2], "give --clean or --k, not both"),
])
def test_sample_refuses_bad_input_before_loading_models(tmp_path, args, message):
    # no such models: the cheap checks come first
    result = invoke("copyright", "sample", "--model", tmp_path / "p", "--safe", tmp_path / "q", "--condition", 3, *args,
                    "--out", tmp_path / "o")
    assert_one_line_error(result, message)


def test_shard_reads_a_data_folder_of_mixed_sizes_at_resolution_and_refuses_out_inside_it(tmp_path):
    from PIL import Image

    for c in range(2):
        (tmp_path / "data" / str(c)).mkdir(parents=True)
        for i in range(6):
            size = 16 if i % 2 else 20  # two sizes: --resolution reads both at 16
            Image.new("L", (size, size), 20 * i + 100 * c).save(tmp_path / "data" / str(c) / f"{i}.png")
    result = invoke("copyright", "shard", "--protected", f"{tmp_path / 'data' / '0' / '1.png'}@0", "--data",
                    tmp_path / "data", "--resolution", 16, "--out", tmp_path / "shards")
    assert result.exit_code == 0, result.output
    assert_one_line_error(invoke("copyright", "shard", "--protected", "mnist-test:3", "--data", tmp_path / "data",
                                 "--out", tmp_path / "data" / "shards"), "inside --data")
