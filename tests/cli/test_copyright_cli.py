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
    (["--k", "inf", "--q-event", 0.1], "out of range"),
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


def _folders(tmp_path, a, b):
    from guardgen.data import write_image_set

    write_image_set(a, tmp_path / "a", labels=torch.zeros(len(a), dtype=torch.long))
    write_image_set(b, tmp_path / "b", labels=torch.zeros(len(b), dtype=torch.long))
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
