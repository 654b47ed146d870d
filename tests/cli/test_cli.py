import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guardgen.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_every_group():
    result = invoke("--help")
    assert result.exit_code == 0
    for group in ("zoo", "unlearn", "detect", "attack", "attribute", "copyright", "audit"):
        assert group in result.output


@pytest.mark.parametrize("command,shown", [(("attack", "worst-case-forget"), "one pass over the data"),
                                           (("unlearn", "evaluate"), "30, the zoo oracle's"),
                                           (("copyright", "sample"), "calibrated on --clean")])
def test_help_shows_described_defaults(command, shown):
    """Defaults described in words reach the help (text in square brackets would be eaten as Rich markup)."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and f"[default: ({shown})]" in result.output


def test_audit_command_is_mounted():
    result = invoke("audit", "--help")
    assert result.exit_code == 0
    assert "--train-data" in result.output and "--out" in result.output


def test_zoo_list_shows_shipped_models():
    result = invoke("zoo", "list")
    assert result.exit_code == 0
    assert "mnist-oracle" in result.output and "shipped" in result.output


def test_zoo_show_oracle_writes_grid_and_results(tmp_path):
    result = invoke("zoo", "show", "mnist-oracle", "--out", tmp_path, "--per-class", 3)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_accuracy"] >= 0.97
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_zoo_show_samples_a_pipeline_folder(tmp_path, tiny_class_pipeline):
    result = invoke("zoo", "show", tiny_class_pipeline, "--out", tmp_path / "s", "--per-class", 1, "--steps", 2)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert set(results["per_class"]) == {str(c) for c in range(10)}
    assert 0.0 <= results["conditional_accuracy"] <= 1.0


def test_zoo_build_from_the_cli(tmp_path):
    result = invoke("zoo", "build", "mnist-oracle", "--epochs", 1, "--out", tmp_path / "o", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "model.safetensors").is_file()
    assert "test_accuracy" in result.output


@pytest.mark.parametrize("args,message", [
    (("zoo", "build", "nope"), "unknown zoo model 'nope'"),
    (("zoo", "show", "/no/such/folder"), "no such file or folder"),
    (("zoo", "build", "mnist-oracle", "--set", "epochs"), "expected KEY=VALUE"),
    (("zoo", "build", "mnist-oracle", "--exclude", "12"), "class ids are 0..9"),
    (("zoo", "show", "zoo:mnist-oracle", "--oracle", "zoo:mnist-ddpm"), "holds a pipeline"),
    (("zoo", "build", "mnist-ddpm", "--set", "lr=-1"), "mnist-ddpm: setting lr=-1: must be > 0"),
    (("zoo", "show", "mnist-ddpm", "--steps", 0), "Invalid value for '--steps'"),  # counts are bounded at the option
    (("zoo", "show", "mnist-ddpm", "--guidance-scale", -3), "Invalid value for '--guidance-scale'"),
    (("zoo", "build", "mnist-oracle", "--device", "tpu"), "unknown device 'tpu'"),
    (("zoo", "build", "mnist-oracle", "--mixed-precision", "fp8"), "unknown mixed precision 'fp8'"),
    (("zoo", "build", "mnist-ddpm", "--set", "block_out_channels=[]"), "block_out_channels needs at least one block"),
    (("zoo", "build", "mnist-oracle", "--exclude", "0,1,2,3,4,5,6,7,8,9"), "exclude leaves no class"),
    (("zoo", "build", ":smile:"), "unknown zoo model ':smile:'"),  # user text is not turned into emoji
    (("zoo", "show", "mnist-oracle", "--seed", -1), "Invalid value for '--seed'"),
    (("detect", "train", "--fake", "zoo:mnist-gan", "--seed", 2**32), "Invalid value for '--seed'"),  # would repeat seed 0
    (("detect", "eval", "--detector", "d", "--fake", "zoo:mnist-gan", "--n-boot", 1), "Invalid value for '--n-boot'"),
    (("unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", 7, "--set", f"seed={2**32}"),
     "setting seed=4294967296: must be in [0, 4294967295]"),
    (("audit", "zoo:mnist-ddpm", "--set", f"seed={2**63}"), "seed must be an integer in [0, 4294967295]"),
    (("unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", 7, "--retain", 7), "7 is both forgotten and retained"),
    (("detect", "train", "--real", "mnist", "--fake", "zoo:mnist-ddpm", "--generator", "zoo:mnist-gan"), "add --omat"),
    (("copyright", "sample", "--model", "zoo:mnist-ddpm", "--safe", "zoo:mnist-ddpm", "--condition", 3), "its own safe model"),
    (("copyright", "sample", "--model", "zoo:mnist-ddpm", "--safe", "zoo:mnist-t2i", "--condition", 3), "text-conditional"),
    (("audit", "zoo:mnist-ddpm", "--set", "mia_timesteps=[]"), "mia_timesteps needs timesteps"),
    (("attribute", "fit", "--source", "a=", "--source", "b=mnist"), "both NAME and SPEC are needed"),
    (("attribute", "fit", "--source", "a=mnist", "--source", "a=mnist"), "given twice"),
    (("attack", "worst-case-forget", "--model", "zoo:mnist-oracle", "--size", 5, "--max-samples", 50, "--resolution", 3,
      "--no-evaluate"), "cannot take 3x3 images"),
    (("detect", "train", "--real", "mnist", "--fake", "zoo:mnist-ddpm", "--resolution", 0), "Invalid value for '--resolution'"),
    (("unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", 7, "--eval-per-class", 0), "Invalid value for '--eval-per-class'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default --out folders land here
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_console_script_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "guardgen.cli", "zoo", "show", "zoo:nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_zoo_show_text_model_uses_its_prompts(tmp_path):
    result = invoke("zoo", "show", "mnist-t2i", "--out", tmp_path, "--per-class", 1, "--steps", 10)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["conditional_accuracy"] >= 0.5  # 10 samples, 10-step DDIM: most are the prompted digit


def test_a_path_the_system_refuses_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    result = invoke("zoo", "show", "mnist-ddpm", "--per-class", 1, "--steps", 2, "--out", tmp_path / "file" / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{tmp_path / 'file'}" in " ".join(result.output.split()), result.output


def test_ctrl_c_hints_at_resume_only_where_the_command_has_it(capsys):
    import typer

    from guardgen.cli._common import guarded

    @guarded
    def resumable(resume: bool = False):
        raise KeyboardInterrupt

    @guarded
    def one_shot(n: int = 1):
        raise KeyboardInterrupt

    for fn, hint in ((resumable, True), (one_shot, False)):
        with pytest.raises(typer.Exit) as exit_info:
            fn()
        assert exit_info.value.exit_code == 130
        err = " ".join(capsys.readouterr().err.split())
        assert "interrupted: finished files are kept" in err and ("--resume" in err) == hint


def test_convert_turns_a_pickle_into_safetensors_that_then_loads(tmp_path):
    """A classifier folder with only model.pt is refused, naming `guardgen convert`; after converting, it loads with the
    same weights. A pickle holding code is refused, and nothing is overwritten."""
    import os

    import torch

    from guardgen.models import load_model
    from guardgen.models.classifier import create_classifier

    net = create_classifier("guardgen_digitnet", num_classes=10)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "guardgen_digitnet", "num_classes": 10}))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    result = invoke("zoo", "show", tmp_path, "--out", tmp_path / "show")
    assert result.exit_code == 2 and "guardgen convert" in result.output and "Traceback" not in result.output
    result = invoke("convert", tmp_path / "model.pt")
    assert result.exit_code == 0, result.output
    loaded = load_model(str(tmp_path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    result = invoke("convert", tmp_path / "model.pt")
    assert result.exit_code == 2 and "exists" in result.output

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    result = invoke("convert", tmp_path / "evil.pt")
    assert result.exit_code == 2 and "cannot be read safely" in result.output and not (tmp_path / "evil.safetensors").exists()
    for bad in ("model.safetensors", "nope.pt"):
        result = invoke("convert", tmp_path / bad)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output


def test_out_is_refused_when_it_holds_files_guardgen_did_not_write(tmp_path):
    """A run's result replaces its --out, so a folder with someone's files in it is refused, and left as it was; a new or
    empty folder is taken, marked as guardgen's, and a second run into it goes ahead."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    result = invoke("zoo", "show", "mnist-oracle", "--out", mine, "--per-class", 1)
    assert result.exit_code == 2 and "did not write" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new", tmp_path / "new"):
        result = invoke("zoo", "show", "mnist-oracle", "--out", out, "--per-class", 1)
        assert result.exit_code == 0, result.output
        assert (out / ".guardgen").is_file() and (out / "results.json").is_file()


def test_a_float_option_that_is_not_finite_is_one_line(tmp_path):
    """Typer takes "inf" as a float that passes min=0 (and "nan" where there is no bound: see the detect tests)."""
    result = invoke("zoo", "show", "mnist-ddpm", "--guidance-scale", "inf", "--out", tmp_path / "show")
    assert result.exit_code == 2 and "must be a finite number" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "show").exists()


@pytest.mark.parametrize("argv, message", [
    (["zoo", "show", "mnist-ddpm", "--per-class", "0"], "error: Invalid value for '--per-class'"),
    (["zoo", "show", "mnist-ddpm", "--bogus"], "error: No such option: --bogus"),
    (["no-such-command"], "error: No such command 'no-such-command'."),
])
def test_the_script_reports_a_usage_error_in_one_line(monkeypatch, capsys, argv, message):
    """The `guardgen` script prints Typer's usage errors as one line, exit code 2, like guardgen's own errors."""
    from guardgen.cli import main

    monkeypatch.setattr("sys.argv", ["guardgen", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert "--help" in err


def test_the_script_keeps_help_and_exit_codes(monkeypatch, capsys):
    from guardgen import __version__
    from guardgen.cli import main

    for argv, code in ((["version"], 0), (["zoo", "list", "--help"], 0), (["zoo"], 2)):
        monkeypatch.setattr("sys.argv", ["guardgen", *argv])
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == code, argv
    out = capsys.readouterr().out
    assert out.startswith(__version__) and out.count("Usage:") == 2


def test_zoo_show_and_build_refuse_an_out_they_cannot_use(tmp_path, tiny_class_pipeline):
    (tiny_class_pipeline / ".guardgen").touch()
    result = invoke("zoo", "show", tiny_class_pipeline, "--out", tiny_class_pipeline)
    assert result.exit_code == 2 and "the same folder as the model" in result.output, result.output
    (tmp_path / "file").write_text("x")
    result = invoke("zoo", "build", "mnist-oracle", "--out", tmp_path / "file" / "o")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    result = invoke("zoo", "build", "mnist-oracle", "--set", "exclude=[11]", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "exclude names class 11" in result.output, result.output


def test_convert_refuses_what_safetensors_cannot_hold_in_one_line(tmp_path):
    import torch

    torch.save({1: torch.ones(2)}, tmp_path / "intkey.pt")
    torch.save({"s": torch.ones(2, 2).to_sparse()}, tmp_path / "sparse.pt")
    torch.save({"m": torch.empty(2, device="meta")}, tmp_path / "meta.pt")
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "file").write_text("x")
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    for args, message in [(["intkey.pt"], "keys are parameter names"), (["sparse.pt"], "is a torch.sparse_coo tensor"),
                          (["meta.pt"], "is a meta tensor"), (["dir.pt"], "a folder, not a weight file"),
                          (["ok.pt", "--to", tmp_path / "file" / "x.safetensors"], "is a file, not a folder")]:
        result = invoke("convert", tmp_path / args[0], *args[1:])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert "Warning" not in result.output


def test_an_error_before_the_first_step_is_the_only_line():
    """A run refused inside a progress bar before its first step prints the error alone; after a step, the bar stays."""
    import typer

    from guardgen.cli._common import guarded, progress_callback
    from guardgen.errors import GuardgenError

    tiny = typer.Typer()

    @tiny.command()
    @guarded
    def go(steps: int = 0) -> None:
        with progress_callback("work") as callback:
            for step in range(steps):
                callback(step + 1, {"loss": 0.5})
            raise GuardgenError("bad thing")

    @tiny.command()
    def other() -> None:
        pass

    result = runner.invoke(tiny, ["go"])
    assert result.exit_code == 2 and result.output == "error: bad thing\n"
    result = runner.invoke(tiny, ["go", "--steps", "1"])
    assert result.exit_code == 2 and result.output.startswith("work") and result.output.endswith("error: bad thing\n")


def test_an_out_under_a_file_is_refused_by_every_command_before_it_runs(tmp_path):
    """``guarded`` itself checks --out: a command with no check of its own never runs."""
    import typer

    from guardgen.cli._common import guarded

    tiny, ran = typer.Typer(), []

    @tiny.command()
    @guarded
    def go(out: Path = Path("runs/x")) -> None:
        ran.append(out)

    @tiny.command()
    def other() -> None:
        pass

    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(tiny, ["go", "--out", str(tmp_path / "notes.txt" / "eval")])
    assert result.exit_code == 2 and "notes.txt is a file, not a folder" in " ".join(result.output.split())
    assert ran == [] and (tmp_path / "notes.txt").read_text() == "mine"
    result = runner.invoke(tiny, ["go", "--out", str(tmp_path / "new")])
    assert result.exit_code == 0 and ran == [tmp_path / "new"], result.output
    result = invoke("detect", "eval", "--detector", tmp_path / "no-detector", "--fake", "zoo:mnist-gan",
                    "--out", tmp_path / "notes.txt" / "eval")
    assert result.exit_code == 2 and "notes.txt is a file, not a folder" in " ".join(result.output.split())


def test_note_fresh_refuses_another_runs_state_but_not_a_save_cut_off_by_a_kill(tmp_path):
    from guardgen.cli._common import note_fresh
    from guardgen.errors import GuardgenError

    (tmp_path / "training_state" / ".detector.k.tmp").mkdir(parents=True)  # atomic_dir's temp folder, left by SIGKILL
    note_fresh(tmp_path, True, "training_state/detector")  # a fresh start, not a refusal
    (tmp_path / "training_state" / "adapt").mkdir()  # a GAN unlearning run's stage
    with pytest.raises(GuardgenError, match=r"holds another run's interrupted state \(training_state/\)"):
        note_fresh(tmp_path, True, "training_state/detector")
    note_fresh(tmp_path, True, "training_state/detector", replaces=False)  # written beside it: nothing is lost
    note_fresh(tmp_path, False, "training_state/detector")  # no --resume: a fresh run was asked for
    note_fresh(tmp_path, True, "training_state/adapt")  # its own state
